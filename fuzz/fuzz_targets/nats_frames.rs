//! Bytes off the NATS broker, read as the frames of a remote pool.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isolates::fuzz::nats_frames(data));

//! Bytes on a child process's channel, read as frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isolates::fuzz::frames(data));

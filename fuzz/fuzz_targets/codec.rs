//! Bytes a peer sent, decoded by a receiver as several shapes of message.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isolates::fuzz::codec(data));

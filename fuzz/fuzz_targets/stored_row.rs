//! A row of the work manager's store, as loading reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isolates::fuzz::stored_row(data));

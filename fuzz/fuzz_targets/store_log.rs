//! A log file of the work manager's store, as opening the store reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isolates::fuzz::store_log(data));

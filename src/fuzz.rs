//! Entry points for the fuzz targets in `fuzz/` (`cargo +nightly fuzz run
//! NAME`), one for each place where bytes from outside the process are
//! decoded. Not part of the API: hidden, and free to change.
//!
//! Each must return (an error is fine) for any input: never panic, abort,
//! hang, or allocate beyond the limits the docs promise.

use crate::codec::{Bincode, Codec};

/// A message decoded by the default codec under a small limit, as several
/// shapes of type: what a peer's bytes become in a receiver.
pub fn codec(bytes: &[u8]) {
    type Limited = Bincode<{ 1 << 16 }>;
    let codec = Limited::limited();
    let _ = codec.decode::<Vec<Option<[u64; 4]>>>(bytes);
    let _ = codec.decode::<Vec<()>>(bytes);
    let _ = codec.decode::<String>(bytes);
    let _ = codec.decode::<std::collections::HashMap<String, Vec<u8>>>(bytes);
    let _ = codec.decode::<Vec<Vec<Option<Box<u64>>>>>(bytes);
    let _ = codec.decode::<(crate::ExitReason, crate::Transfer, Option<char>)>(bytes);
    let _ = codec.decode::<std::collections::BTreeMap<u64, Vec<String>>>(bytes);
}

/// Frames from a child process (or a parent), read one after another
/// under a small limit, and what the child makes of a start frame.
#[cfg(target_os = "linux")]
pub fn frames(bytes: &[u8]) {
    use crate::backend::process::{child, decode_reason, frame};
    let mut input = bytes;
    while let Ok((kind, body)) = frame::read(&mut input, 1 << 16) {
        match kind {
            frame::Kind::Start => {
                let _ = child::split_start(&body);
            }
            frame::Kind::Exited => {
                let _ = decode_reason(&body);
            }
            _ => {}
        }
    }
}

/// A row of the work manager's store, as loading reads it: decoded (either
/// layout), checked, and turned into what a caller sees.
#[cfg(feature = "schedule")]
pub fn stored_row(bytes: &[u8]) {
    crate::schedule::fuzz_row(bytes);
}

/// A log file of the work manager's store, as opening the store reads it
/// (its header, then checksummed frames up to the first bad one).
#[cfg(feature = "schedule")]
pub fn store_log(bytes: &[u8]) {
    crate::schedule::fuzz_log(bytes);
}

/// The frames of a pool over NATS, as a worker (a task, a cancel) or a
/// client (a result, a progress value) reads them off the broker.
#[cfg(feature = "nats")]
pub fn nats_frames(bytes: &[u8]) {
    use crate::backend::nats::frame;
    let _ = frame::parse_tasks(bytes);
    let _ = frame::parse_results(bytes);
    let _ = frame::parse_progress(bytes);
    let _ = frame::parse_cancel(bytes);
}

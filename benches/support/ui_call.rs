//! What a UI thread pays to offload a call with a big payload: the time
//! inside `isolates::run` and inside each `try_take` poll until the result
//! is there, not the time between polls. Shared by `benches/core.rs` and the
//! `isolates-bench` harness (included by path).

#![allow(dead_code)] // each includer uses a part

use std::time::{Duration, Instant};

use isolates::{Pending, RunError};

/// How long the caller does something else between two polls (a UI thread
/// would draw a frame).
pub(crate) const POLL_GAP: Duration = Duration::from_micros(200);

/// Returns its argument: the result is as big as the payload.
pub(crate) fn same_bytes(v: Vec<u8>) -> Vec<u8> {
    v
}

/// Returns its argument: the result is as big as the payload.
pub(crate) fn same_floats(v: Vec<f32>) -> Vec<f32> {
    v
}

/// A `Vec<u8>` of `bytes` bytes.
pub(crate) fn byte_payload(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| i as u8).collect()
}

/// A `Vec<f32>` of `bytes` bytes.
pub(crate) fn float_payload(bytes: usize) -> Vec<f32> {
    (0..bytes / 4).map(|i| i as f32 * 0.5).collect()
}

/// Starts a call (`|| isolates::run(f, payload)`), then `try_take`s every
/// [`POLL_GAP`] until the result is there. Returns the caller's time inside
/// those calls and the result (dropped by the caller, outside the measure).
///
/// # Errors
///
/// The call's error.
///
/// # Panics
///
/// If no result comes within a minute.
pub(crate) fn caller_cost<T>(
    start: impl FnOnce() -> Pending<T, RunError>,
) -> Result<(Duration, T), RunError> {
    let give_up = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    let mut pending = start();
    let mut inside = started.elapsed();
    loop {
        let poll = Instant::now();
        let taken = pending.try_take();
        inside += poll.elapsed();
        if let Some(result) = taken {
            return result.map(|value| (inside, value));
        }
        assert!(
            Instant::now() < give_up,
            "the call gave no result in a minute"
        );
        std::thread::sleep(POLL_GAP);
    }
}

//! Helpers shared by the integration tests.

use std::time::{Duration, Instant};

/// Polls `cond` every millisecond until it holds or `timeout` passes; returns
/// whether it held.
pub(crate) fn wait_until(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

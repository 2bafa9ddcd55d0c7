//! Timeouts to deadlines without overflow.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, MutexGuard};

/// The instant `timeout` from now, or `None` when that is beyond what an
/// `Instant` can hold (`Duration::MAX` is the usual way to say "forever"):
/// callers treat `None` as no deadline instead of panicking on overflow.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Waits on `condvar` until notified, or until `deadline` if there is one;
/// returns whether the deadline passed.
pub(crate) fn wait<T>(
    condvar: &Condvar,
    guard: &mut MutexGuard<'_, T>,
    deadline: Option<Instant>,
) -> bool {
    match deadline {
        Some(deadline) => condvar.wait_until(guard, deadline).timed_out(),
        None => {
            condvar.wait(guard);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_have_no_deadline() {
        assert_eq!(deadline_after(Duration::MAX), None);
        assert!(deadline_after(Duration::from_secs(1)).is_some());
    }
}

//! How fast work may go: the floors that keep a request, a stored row or
//! a builder setting from making the scheduler spin (a zero time limit
//! with a zero backoff ran thousands of attempts a second, each written
//! to the store).
//!
//! Android WorkManager clamps silently: backoff to at least 10 s, periodic
//! intervals to at least 15 min (flex 5 min). Here a request under the
//! manager's minimums is refused with [`WorkError::Invalid`], which says
//! which setting to change; the minimums default to 1 s of backoff and
//! 1 min of interval and may be lowered (tests, demos) down to a floor of
//! [`FLOOR`], which builder durations are raised to.

use std::time::Duration;

use super::WorkError;
use super::request::WorkRequest;

/// The least any of the manager's durations may be (minimum interval,
/// minimum backoff, time limit, constraint poll): shorter ones are raised
/// to it.
pub(crate) const FLOOR: Duration = Duration::from_millis(10);

/// The default least delay before a retry.
pub(crate) const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(1);

/// `d`, raised to [`FLOOR`].
pub(crate) fn floor(d: Duration) -> Duration {
    d.max(FLOOR)
}

/// Refuses a request whose time limit is zero, whose backoff is under
/// `min_backoff`, or whose backoff has jitter (which the store does not
/// keep).
pub(crate) fn check_request(req: &WorkRequest, min_backoff: Duration) -> Result<(), WorkError> {
    if req.time_limit.is_some_and(|t| t.is_zero()) {
        return Err(WorkError::Invalid(
            "a time limit of zero lets no run finish: give WorkRequest::time_limit a positive \
             duration, or leave it unset for the manager's"
                .to_owned(),
        ));
    }
    if req.backoff.has_jitter() {
        return Err(WorkError::Invalid(
            "the work manager does not keep a backoff's jitter: give WorkRequest::backoff one \
             without Backoff::jitter"
                .to_owned(),
        ));
    }
    let first = req.backoff.delay_after(1);
    if first < min_backoff {
        return Err(WorkError::Invalid(format!(
            "the backoff waits {first:?} before a retry, under the minimum of {min_backoff:?} \
             (WorkManagerBuilder::min_backoff): lengthen the backoff's delay (and its max), \
             or lower the minimum"
        )));
    }
    Ok(())
}

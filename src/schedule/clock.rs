//! Where the work manager reads the time: the system clock, or a clock the
//! tests move by hand.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Called when a clock is moved by hand; returns whether it still wants
/// to be called (a stopped work manager says no).
pub type ClockWaker = Box<dyn Fn() -> bool + Send + Sync>;

/// The time source of a [`WorkManager`](super::WorkManager).
///
/// Schedules (delays, periods, backoff) are wall-clock times, stored as
/// such, so they mean the same after a restart. Run time limits are
/// measured on the monotonic clock instead: they bound real computation.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use isolates::schedule::{Clock, SystemClock};
///
/// let clock = SystemClock;
/// let later = clock.now() + Duration::from_secs(5);
/// let wait = clock.real_wait(later).unwrap();
/// assert!(wait <= Duration::from_secs(5));
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// How long to sleep in real time before `at` comes, or `None` if
    /// only a [`waker`](Self::subscribe) call can bring it (a manual clock).
    fn real_wait(&self, at: SystemTime) -> Option<Duration> {
        Some(at.duration_since(self.now()).unwrap_or(Duration::ZERO))
    }

    /// Registers `wake`, to be called whenever the time is moved by hand.
    /// The system clock never is, and ignores it.
    fn subscribe(&self, wake: ClockWaker) {
        drop(wake);
    }
}

/// The system's wall clock.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{Clock, SystemClock};
/// assert!(SystemClock.now() > std::time::UNIX_EPOCH);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told: tests of delays, periods and backoff
/// run at once and the same way every time. Clones share the time.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use isolates::schedule::{Clock, ManualClock};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_060));
/// assert_eq!(clock.real_wait(clock.now() + Duration::from_secs(1)), None);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(SystemTime, Vec<ClockWaker>)>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Default for ManualClock {
    /// A clock at 2025-01-01T00:00:00Z.
    fn default() -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(1_735_689_600))
    }
}

impl ManualClock {
    /// A clock reading `start`.
    ///
    /// # Examples
    ///
    /// See [`ManualClock`].
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new((start, Vec::new()))),
        }
    }

    /// Moves the time forward by `by` and wakes the work managers using it.
    ///
    /// # Examples
    ///
    /// See [`ManualClock`].
    pub fn advance(&self, by: Duration) {
        let mut inner = self.inner.lock();
        inner.0 += by;
        inner.1.retain(|wake| wake());
    }

    /// Sets the time (forward or back) and wakes the work managers using it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use isolates::schedule::{Clock, ManualClock};
    /// let clock = ManualClock::default();
    /// clock.set(UNIX_EPOCH + Duration::from_secs(5));
    /// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(5));
    /// ```
    pub fn set(&self, to: SystemTime) {
        let mut inner = self.inner.lock();
        inner.0 = to;
        inner.1.retain(|wake| wake());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.inner.lock().0
    }

    fn real_wait(&self, _at: SystemTime) -> Option<Duration> {
        None
    }

    fn subscribe(&self, wake: ClockWaker) {
        self.inner.lock().1.push(wake);
    }
}

/// Milliseconds since the Unix epoch (negative before it), as stored.
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// [`to_ms`], rounded up: a time that must not come early (an alarm) is
/// stored at the first millisecond not before it.
pub(crate) fn to_ms_ceil(t: SystemTime) -> i64 {
    let ms = to_ms(t);
    if from_ms(ms) < t {
        ms.saturating_add(1)
    } else {
        ms
    }
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

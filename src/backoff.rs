//! [`Backoff`]: how the wait before the next try grows, for a
//! supervisor's restarts and the work manager's retries alike.
//!
//! A pure policy, a leaf: nothing below it.

use std::time::Duration;

/// How the wait before the next try grows with the tries in a row: a
/// supervisor's restarts of a child
/// ([`SupervisorBuilder::backoff`](crate::supervisor::SupervisorBuilder::backoff),
/// beyond OTP, which restarts at once) and the work manager's retries of a
/// work (`WorkRequest::backoff`, Android's `BackoffPolicy`).
///
/// After the n-th try in a row (n ≥ 1) it waits: constant `delay`; linear
/// `delay × n`; exponential `delay × 2ⁿ⁻¹`; each capped at
/// [`max`](Self::max) (default [`DEFAULT_MAX`](Self::DEFAULT_MAX)). With
/// [`jitter`](Self::jitter), each wait is scaled by a random factor in
/// [0.5, 1], so a crowd of failing children does not restart in step.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::Backoff;
///
/// let b = Backoff::exponential(Duration::from_secs(10));
/// assert_eq!(b.delay_after(1), Duration::from_secs(10));
/// assert_eq!(b.delay_after(3), Duration::from_secs(40));
/// assert_eq!(b.delay_after(60), Duration::from_secs(5 * 3600)); // the cap
/// let l = Backoff::linear(Duration::from_secs(10)).max(Duration::from_secs(25));
/// assert_eq!(l.delay_after(2), Duration::from_secs(20));
/// assert_eq!(l.delay_after(3), Duration::from_secs(25));
/// assert_eq!(Backoff::constant(Duration::from_secs(2)).delay_after(9), Duration::from_secs(2));
/// assert_eq!(Backoff::none().delay_after(5), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    growth: Growth,
    delay: Duration,
    max: Duration,
    jitter: bool,
}

/// How the wait grows with the tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Growth {
    Constant,
    Linear,
    Exponential,
}

impl Backoff {
    /// The longest wait by default: 5 hours (Android's).
    pub const DEFAULT_MAX: Duration = Duration::from_secs(5 * 3600);

    /// No wait: try again at once (a supervisor's default, OTP's
    /// behaviour).
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn none() -> Self {
        Self::constant(Duration::ZERO)
    }

    /// Waits `delay` after every try.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn constant(delay: Duration) -> Self {
        Self::new(Growth::Constant, delay)
    }

    /// Waits `delay × n` after the n-th try in a row.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn linear(delay: Duration) -> Self {
        Self::new(Growth::Linear, delay)
    }

    /// Waits `delay × 2ⁿ⁻¹` after the n-th try in a row.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn exponential(delay: Duration) -> Self {
        Self::new(Growth::Exponential, delay)
    }

    const fn new(growth: Growth, delay: Duration) -> Self {
        Backoff {
            growth,
            delay,
            max: Self::DEFAULT_MAX,
            jitter: false,
        }
    }

    /// Caps the wait at `max` (default [`DEFAULT_MAX`](Self::DEFAULT_MAX)).
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Scales each wait by a random factor in [0.5, 1].
    ///
    /// The work manager stores no jitter: it refuses a request whose
    /// backoff has it ([`WorkError::Invalid`](crate::schedule::WorkError::Invalid)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::Backoff;
    /// let b = Backoff::exponential(Duration::from_millis(10)).max(Duration::from_secs(1)).jitter();
    /// assert!(b.has_jitter());
    /// // The wait without jitter, its upper bound.
    /// assert_eq!(b.delay_after(2), Duration::from_millis(20));
    /// ```
    pub const fn jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Whether waits are scaled at random ([`jitter`](Self::jitter)).
    ///
    /// # Examples
    ///
    /// See [`jitter`](Self::jitter).
    pub const fn has_jitter(&self) -> bool {
        self.jitter
    }

    /// The wait after the `attempt`-th try in a row (below 1 counts as
    /// 1), before jitter: with [`jitter`](Self::jitter) this is the
    /// longest the wait can be.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        let wait = match self.growth {
            Growth::Constant => Some(self.delay),
            Growth::Linear => self.delay.checked_mul(n),
            Growth::Exponential => self
                .delay
                .checked_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX)),
        };
        wait.unwrap_or(Duration::MAX).min(self.max)
    }

    /// The wait after the `attempt`-th try, with `random` in [0, 1)
    /// drawing the jitter (if any).
    pub(crate) fn delay_with(&self, attempt: u32, random: f64) -> Duration {
        let wait = self.delay_after(attempt);
        if self.jitter {
            wait.mul_f64(1.0 - 0.5 * random.clamp(0.0, 1.0))
        } else {
            wait
        }
    }

    /// Its parts, for a store to keep: growth, delay, max.
    #[cfg_attr(not(feature = "schedule"), allow(dead_code))]
    pub(crate) fn parts(&self) -> (Growth, Duration, Duration) {
        (self.growth, self.delay, self.max)
    }
}

impl Default for Backoff {
    /// No wait ([`none`](Self::none)).
    fn default() -> Self {
        Self::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_and_stop_at_the_cap() {
        let s = Duration::from_secs(1);
        let e = Backoff::exponential(s).max(s * 10);
        let got: Vec<_> = (0..6).map(|n| e.delay_after(n)).collect();
        assert_eq!(got, [s, s, s * 2, s * 4, s * 8, s * 10]);
        assert_eq!(e.delay_after(u32::MAX), s * 10, "no overflow");
        assert_eq!(
            Backoff::linear(Duration::MAX).delay_after(3),
            Backoff::DEFAULT_MAX
        );
    }

    #[test]
    fn jitter_scales_between_half_and_all() {
        let b = Backoff::constant(Duration::from_secs(10)).jitter();
        assert_eq!(b.delay_with(1, 0.0), Duration::from_secs(10));
        assert_eq!(b.delay_with(1, 1.0), Duration::from_secs(5));
        assert_eq!(b.delay_with(1, 7.0), Duration::from_secs(5), "clamped");
        let plain = Backoff::constant(Duration::from_secs(10));
        assert_eq!(plain.delay_with(1, 0.9), Duration::from_secs(10));
    }
}

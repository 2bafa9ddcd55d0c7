//! The delay between a child's exit and its restart.
//!
//! Kept on its own: it is a pure policy with no tie to the run loop.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Delay between a child's exit and its restart, growing with the child's
/// recent restarts (beyond OTP, which restarts at once).
///
/// The n-th restart within the intensity window waits
/// `min(max, min_delay · 2ⁿ⁻¹)`, scaled by a random factor in [0.5, 1] when
/// jitter is on, so a crowd of crashing children does not restart in step.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::supervisor::Backoff;
/// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1));
/// assert_eq!(b.delay(1, 0.0), Duration::from_millis(10));
/// assert_eq!(b.delay(3, 0.0), Duration::from_millis(40));
/// assert_eq!(b.delay(30, 0.0), Duration::from_secs(1));
/// assert_eq!(Backoff::none().delay(5, 0.7), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// Restart at once (OTP's behaviour, the default).
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn none() -> Self {
        Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
            jitter: false,
        }
    }

    /// Exponential backoff from `min` up to `max`, with jitter.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn exponential(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            jitter: true,
        }
    }

    /// The same backoff without jitter (deterministic delays).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::supervisor::Backoff;
    /// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)).without_jitter();
    /// assert_eq!(b.delay(2, 0.9), Duration::from_millis(20));
    /// ```
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay before restart number `attempt` (1 for the first), with
    /// `random` in [0, 1) used for the jitter.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        if self.max.is_zero() {
            return Duration::ZERO;
        }
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        let base = self.min.saturating_mul(doubling).min(self.max);
        if self.jitter {
            base.mul_f64(1.0 - 0.5 * random.clamp(0.0, 1.0))
        } else {
            base
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::none()
    }
}

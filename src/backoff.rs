//! The one short wait before parking, after crossbeam-utils' `Backoff`
//! (`crossbeam-utils/src/backoff.rs`): spin `2^step` times for the first
//! steps, then yield the core, then tell the caller to park.
//!
//! Why not spin for a fixed time: on a loaded machine (more runnable
//! threads than cores) a waiter that spins for microseconds holds the very
//! core the thread that would answer needs. Growing pauses, a few yields
//! and then a park give that core back quickly; the whole spin is a few
//! hundred pause instructions.

/// Spins for steps up to this one, `2^step` pause instructions each.
const SPIN_LIMIT: u32 = 6;
/// Yields for steps up to this one; after it, park.
const YIELD_LIMIT: u32 = 10;

/// One wait's backoff state.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff::default()
    }

    /// Pauses a little longer than last time: spins, or yields the core
    /// once the spins are spent.
    pub(crate) fn snooze(&mut self) {
        if self.step <= SPIN_LIMIT {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        if self.step <= YIELD_LIMIT {
            self.step += 1;
        }
    }

    /// Whether the caller should stop snoozing and park.
    pub(crate) fn is_completed(&self) -> bool {
        self.step > YIELD_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_after_spins_and_yields() {
        let mut backoff = Backoff::new();
        let mut snoozes = 0;
        while !backoff.is_completed() {
            backoff.snooze();
            snoozes += 1;
        }
        assert_eq!(snoozes, YIELD_LIMIT + 1);
    }
}

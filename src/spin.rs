//! Spinning before a blocking wait, with crossbeam's policy
//! (crossbeam-utils' `Backoff::snooze`): an exponential spin of 1, 2, 4 ...
//! 64 pauses, then a few yields of the thread, then the caller blocks.
//!
//! The spin catches a partner that answers within a microsecond or so
//! without the cost of a sleep and a wake-up. It stays short because while
//! it runs it holds a core: on a loaded machine that core may be the one
//! the partner needs to answer, which is why it ends in yields, which hand
//! the core over, rather than in more spinning.

/// Steps that spin (`2^step` pauses each).
const SPIN_LIMIT: u32 = 6;
/// Steps after which the caller should block.
const YIELD_LIMIT: u32 = 10;

/// One wait's spin; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Spin {
    step: u32,
}

impl Spin {
    /// Waits a little, longer at each call: spins, then yields the thread.
    pub(crate) fn snooze(&mut self) {
        if self.step <= SPIN_LIMIT {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        self.step += 1;
    }

    /// Whether spinning is over: the caller should block now.
    pub(crate) fn is_completed(&self) -> bool {
        self.step > YIELD_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_spins_and_four_yields_then_block() {
        let mut spin = Spin::default();
        let mut snoozes = 0;
        while !spin.is_completed() {
            spin.snooze();
            snoozes += 1;
        }
        assert_eq!(snoozes, YIELD_LIMIT + 1);
    }
}

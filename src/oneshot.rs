//! A one-shot reply slot: one value, one sender, one receiver.
//!
//! Every `ask` needs a fresh reply channel. A crossbeam `bounded(1)` costs
//! several allocations and its blocking path; this slot is one allocation, a
//! short spin (the reply often arrives within a microsecond), then a
//! parking_lot condvar. A sender dropped without sending closes the slot, so
//! the receiver always learns the outcome: every ask resolves exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

const EMPTY: u8 = 0;
const FULL: u8 = 1;
const CLOSED: u8 = 2;

struct Slot<T> {
    state: AtomicU8,
    value: Mutex<Option<T>>,
    filled: Condvar,
}

/// Makes a connected sender and receiver.
pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: AtomicU8::new(EMPTY),
        value: Mutex::new(None),
        filled: Condvar::new(),
    });
    (
        Sender {
            slot: Some(Arc::clone(&slot)),
        },
        Receiver { slot },
    )
}

/// The sending half; sending consumes it.
pub(crate) struct Sender<T> {
    slot: Option<Arc<Slot<T>>>,
}

/// The receiving half.
pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
}

/// Why no value was received.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Nothing yet.
    Empty,
    /// The sender is gone without sending.
    Closed,
}

impl<T> Sender<T> {
    /// Fills the slot. The value is dropped if the receiver is gone.
    pub(crate) fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            slot.close_with(FULL, Some(value));
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.close_with(CLOSED, None);
        }
    }
}

impl<T> Slot<T> {
    fn close_with(&self, state: u8, value: Option<T>) {
        {
            let mut guard = self.value.lock();
            *guard = value;
            self.state.store(state, Ordering::Release);
        }
        self.filled.notify_one();
    }

    fn take(&self) -> Result<T, Miss> {
        match self.state.load(Ordering::Acquire) {
            EMPTY => Err(Miss::Empty),
            _ => self.value.lock().take().ok_or(Miss::Closed),
        }
    }
}

impl<T> Receiver<T> {
    /// Takes the value if it is there; never blocks.
    pub(crate) fn try_recv(&self) -> Result<T, Miss> {
        self.slot.take()
    }

    /// Whether nothing has happened yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.slot.state.load(Ordering::Acquire) == EMPTY
    }

    /// Waits for the value until `deadline` (forever if `None`); `Empty`
    /// means the deadline passed.
    pub(crate) fn recv_until(&self, deadline: Option<Instant>) -> Result<T, Miss> {
        // Spin briefly, as crossbeam's Backoff does: most replies are fast.
        for step in 0..11u32 {
            if !self.is_empty() {
                return self.slot.take();
            }
            if step <= 6 {
                for _ in 0..1u32 << step {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
        }
        let mut guard = self.slot.value.lock();
        while self.slot.state.load(Ordering::Acquire) == EMPTY {
            match deadline {
                Some(deadline) => {
                    if self
                        .slot
                        .filled
                        .wait_until(&mut guard, deadline)
                        .timed_out()
                    {
                        break;
                    }
                }
                None => self.slot.filled.wait(&mut guard),
            }
        }
        match self.slot.state.load(Ordering::Acquire) {
            EMPTY => Err(Miss::Empty),
            _ => guard.take().ok_or(Miss::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn send_then_receive_once() {
        let (tx, rx) = oneshot();
        assert_eq!(rx.try_recv(), Err(Miss::Empty));
        tx.send(5);
        assert_eq!(rx.try_recv(), Ok(5));
        assert_eq!(rx.try_recv(), Err(Miss::Closed), "taken once");
    }

    #[test]
    fn dropped_sender_closes() {
        let (tx, rx) = oneshot::<u8>();
        let waiter = std::thread::spawn(move || rx.recv_until(None));
        drop(tx);
        assert_eq!(waiter.join().unwrap(), Err(Miss::Closed));
    }

    #[test]
    fn deadline_passes_then_value_arrives() {
        let (tx, rx) = oneshot();
        let soon = Instant::now() + Duration::from_millis(5);
        assert_eq!(rx.recv_until(Some(soon)), Err(Miss::Empty));
        let sender = std::thread::spawn(move || tx.send(9));
        assert_eq!(
            rx.recv_until(Some(Instant::now() + Duration::from_secs(10))),
            Ok(9)
        );
        sender.join().unwrap();
    }
}

//! A one-shot reply slot: one value, one sender, one receiver.
//!
//! Every `ask` needs a fresh reply channel. A crossbeam `bounded(1)` costs
//! several allocations and its blocking path; this slot is one allocation, a
//! short backoff (the reply often arrives within a microsecond), then a
//! parking_lot condvar. An async receiver registers a [`Waker`] instead of
//! parking. A sender dropped without sending closes the slot, so the
//! receiver always learns the outcome: every ask resolves exactly once.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::task::Waker;
#[cfg(test)]
use std::task::{Context, Poll};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::spin::Spin;

/// The slot is written once (by a send, or by the sender's drop) and the
/// write is published with a single atomic store, so a spinning receiver
/// and the sender share one cache line transfer, not one per step of a
/// lock. The inner mutex is only ever taken by the receiver.
struct Slot<T> {
    /// `Some(value)` when sent, `None` when closed without a value (or
    /// after the value was taken).
    cell: OnceLock<Mutex<Option<T>>>,
    /// A receiver is parked or has a waker registered (or is about to):
    /// the sender must notify.
    waiting: AtomicBool,
    park: Mutex<()>,
    filled: Condvar,
    /// The waker of the task awaiting the value, if one is.
    waker: Mutex<Option<Waker>>,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot {
            cell: OnceLock::new(),
            waiting: AtomicBool::new(false),
            park: Mutex::new(()),
            filled: Condvar::new(),
            waker: Mutex::new(None),
        }
    }
}

/// Keeps `waker` in `cell` unless the one there wakes the same task.
/// Cloning and dropping wakers runs their owner's code: never under our
/// lock.
pub(crate) fn store_waker(cell: &Mutex<Option<Waker>>, waker: &Waker) {
    let same = cell.lock().as_ref().is_some_and(|w| w.will_wake(waker));
    if !same {
        let fresh = waker.clone();
        let old = cell.lock().replace(fresh);
        drop(old);
    }
}

/// Makes a connected sender and receiver.
pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    connect(Arc::new(Slot::new()))
}

fn connect<T>(slot: Arc<Slot<T>>) -> (Sender<T>, Receiver<T>) {
    (
        Sender {
            slot: Some(Arc::clone(&slot)),
        },
        Receiver { slot },
    )
}

thread_local! {
    /// A used reply slot kept for this thread's next `ask`: a blocking ask
    /// waits for its slot, so one spare per thread saves an allocation and
    /// a free on every round trip. Any slot type: a thread that asks
    /// isolates of several types allocates when the type changes.
    static SPARE: std::cell::Cell<Option<Arc<dyn Any + Send + Sync>>> =
        const { std::cell::Cell::new(None) };
}

/// Like [`oneshot`], reusing this thread's spare slot if it has one of
/// this type.
pub(crate) fn reply_slot<T: Send + 'static>() -> (Sender<T>, Receiver<T>) {
    match SPARE.take().map(Arc::downcast::<Slot<T>>) {
        Some(Ok(slot)) => connect(slot),
        _ => oneshot(),
    }
}

impl<T: Send + 'static> Receiver<T> {
    /// Keeps the slot as this thread's spare if nobody else holds it.
    pub(crate) fn recycle(self) {
        let mut slot = self.slot;
        if let Some(fresh) = Arc::get_mut(&mut slot) {
            // Only what a use changes: the parking pair is left as it is.
            fresh.cell = OnceLock::new();
            *fresh.waiting.get_mut() = false;
            *fresh.waker.get_mut() = None;
            SPARE.set(Some(slot));
        }
    }
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
            slot.close_with(Some(value));
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.close_with(None);
        }
    }
}

impl<T> Slot<T> {
    fn close_with(&self, value: Option<T>) {
        // Only the one sender writes, once: `set` cannot find it full.
        let _ = self.cell.set(Mutex::new(value));
        // Pairs with the fence in `recv_until`: either the receiver sees the
        // value before it parks, or this sees `waiting` and wakes it.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) {
            {
                let _guard = self.park.lock();
                self.filled.notify_all();
            }
            // The waker is the awaiting task's code: run it outside our
            // locks and under `catch`, so a panicking waker cannot kill the
            // sending thread (a worker).
            let waker = self.waker.lock().take();
            if let Some(waker) = waker {
                let _ = crate::unwind::catch(|| waker.wake());
            }
        }
    }

    fn take(&self) -> Result<T, Miss> {
        match self.cell.get() {
            None => Err(Miss::Empty),
            Some(value) => value.lock().take().ok_or(Miss::Closed),
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
        self.slot.cell.get().is_none()
    }

    /// Ready once the slot is filled (or closed); until then `cx`'s waker
    /// is registered, and the sender wakes it once it sends or drops.
    /// Takes nothing: follow a ready poll with [`try_recv`](Self::try_recv).
    #[cfg(test)]
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_empty() {
            self.register(cx.waker());
            // Filled between the first look and the registration: the
            // sender may have missed the waker.
            if self.is_empty() {
                return Poll::Pending;
            }
            // Nothing will wake it now: drop it here, not on the sender.
            let _ = self.forget_waker();
        }
        Poll::Ready(())
    }

    /// Drops a registered waker that nothing will wake any more (the value
    /// was taken), here rather than on the sender. Returns whether it was
    /// still registered: if not, the sender took it and wakes it.
    pub(crate) fn forget_waker(&self) -> bool {
        let stale = self.slot.waker.lock().take();
        stale.is_some()
    }

    /// Has `waker` woken once the slot fills, replacing an earlier waker.
    pub(crate) fn register(&self, waker: &Waker) {
        let slot = &*self.slot;
        store_waker(&slot.waker, waker);
        // Pairs with the fence in `close_with`, as parking does: either the
        // caller's next look sees the value, or the sender sees `waiting`
        // and takes the waker.
        slot.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Waits for the value until `deadline` (forever if `None`); `Empty`
    /// means the deadline passed.
    pub(crate) fn recv_until(&self, deadline: Option<Instant>) -> Result<T, Miss> {
        // Most replies come within microseconds: look again after growing
        // pauses, then a few yields, then park. A fixed-time spin would
        // hold the core the answering thread needs when the machine is
        // busy; the spin gives it back within a few hundred pauses.
        let mut spin = Spin::default();
        while !spin.is_completed() {
            if !self.is_empty() {
                return self.slot.take();
            }
            spin.snooze();
        }
        let slot = &*self.slot;
        slot.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mut guard = slot.park.lock();
        while self.is_empty() {
            if crate::time::wait(&slot.filled, &mut guard, deadline) {
                break;
            }
        }
        drop(guard);
        self.slot.take()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// `forget_waker` says whether the waker was still there: a sender
    /// that came after the registration took it (and woke it); one that
    /// came before left it.
    #[test]
    fn forgetting_a_waker_says_whether_the_sender_took_it() {
        let (count, waker) = counter(false);
        let (tx, rx) = oneshot();
        rx.register(&waker);
        tx.send(1);
        assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
        assert!(!rx.forget_waker(), "the sender took it");
        let (tx, rx) = oneshot();
        tx.send(2);
        rx.register(&waker);
        assert!(rx.forget_waker(), "sent before: still here");
        assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
    }

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

    /// Counts its wakes; panics on each if asked to.
    pub(crate) struct Counter {
        pub(crate) wakes: std::sync::atomic::AtomicUsize,
        panics: bool,
    }

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            assert!(!self.panics, "a waker that panics");
        }
    }

    /// A [`Counter`] and a waker of it.
    pub(crate) fn counter(panics: bool) -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter {
            wakes: Default::default(),
            panics,
        });
        (Arc::clone(&counter), Waker::from(counter))
    }

    #[test]
    fn a_send_wakes_the_registered_waker_once() {
        let (tx, rx) = oneshot();
        let (count, waker) = counter(false);
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_ready(&mut cx).is_pending());
        assert!(rx.poll_ready(&mut cx).is_pending(), "registers again");
        tx.send(1);
        assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
        assert!(rx.poll_ready(&mut cx).is_ready());
        assert_eq!(rx.try_recv(), Ok(1));
    }

    #[test]
    fn a_dropped_sender_wakes_too() {
        let (tx, rx) = oneshot::<u8>();
        let (count, waker) = counter(false);
        assert!(rx.poll_ready(&mut Context::from_waker(&waker)).is_pending());
        drop(tx);
        assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv(), Err(Miss::Closed));
    }

    #[test]
    fn a_panicking_waker_stays_with_its_task() {
        let (tx, rx) = oneshot();
        let (count, waker) = counter(true);
        assert!(rx.poll_ready(&mut Context::from_waker(&waker)).is_pending());
        // The sender's thread goes on.
        std::thread::spawn(move || tx.send(3)).join().unwrap();
        assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv(), Ok(3));
    }
}

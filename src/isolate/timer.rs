//! An isolate's timers: a deadline heap that its own loop consults, so a
//! timer costs no thread and no poll. The loop parks until the earliest
//! deadline (or a message), as tokio's timer wheel feeds its driver's park
//! timeout; with no timer it parks without one.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// A timer is waiting for its deadline (or, an interval, for its next one).
const PENDING: u8 = 0;
/// A one-shot timer delivered its message.
const FIRED: u8 = 1;
/// Cancelled, by [`TimerRef::cancel`] or because the isolate exited.
const CANCELLED: u8 = 2;

/// A timer set with [`Context::send_after`](crate::Context::send_after) or
/// [`Context::send_interval`](crate::Context::send_interval): cancel it, or
/// ask whether it is still to fire. Cheap to clone and `Send`: an isolate
/// may keep it in its state or hand it to another thread.
///
/// Dropping it does not cancel the timer.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, Isolate, TimerRef};
///
/// /// Arms a reminder on `true`, disarms it on `false`.
/// struct Reminder { timer: Option<TimerRef>, fired: u32 }
/// impl Isolate for Reminder {
///     type Args = (); type Message = Option<bool>; type Reply = u32; type Error = String;
///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
///         Ok(Reminder { timer: None, fired: 0 })
///     }
///     fn handle(&mut self, m: Option<bool>, ctx: &mut Context<Self>) -> Result<u32, String> {
///         match m {
///             Some(true) => {
///                 let timer = ctx.send_after(Duration::from_secs(60), None).map_err(|e| e.to_string())?;
///                 self.timer = Some(timer);
///             }
///             Some(false) => {
///                 let timer = self.timer.take().ok_or("not armed")?;
///                 assert!(timer.is_pending());
///                 assert!(timer.cancel()); // it had not fired
///                 assert!(!timer.is_pending());
///             }
///             None => self.fired += 1, // the timer's own message
///         }
///         Ok(self.fired)
///     }
/// }
/// let r = Reminder::spawn(()).unwrap();
/// assert_eq!(r.ask_timeout(Some(true), Duration::from_secs(5)), Ok(0));
/// assert_eq!(r.ask_timeout(Some(false), Duration::from_secs(5)), Ok(0));
/// ```
#[derive(Clone)]
pub struct TimerRef {
    id: u64,
    state: Arc<AtomicU8>,
}

impl TimerRef {
    /// Cancels the timer: its message is not delivered again. Returns
    /// whether it was still to fire (`false` once a one-shot timer has
    /// delivered its message, or once cancelled, by this call or by the
    /// isolate's exit).
    ///
    /// Called from the isolate's own handler, no message is delivered
    /// after it. Called from another thread while the isolate is already
    /// handling a tick of an interval, that tick is not recalled.
    ///
    /// # Examples
    ///
    /// See [`TimerRef`].
    pub fn cancel(&self) -> bool {
        self.state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the timer is still to fire: neither delivered (a one-shot
    /// timer) nor cancelled.
    ///
    /// # Examples
    ///
    /// See [`TimerRef`].
    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }
}

impl fmt::Debug for TimerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state.load(Ordering::Acquire) {
            PENDING => "pending",
            FIRED => "fired",
            _ => "cancelled",
        };
        f.debug_struct("TimerRef")
            .field("id", &self.id)
            .field("state", &state)
            .finish()
    }
}

impl PartialEq for TimerRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for TimerRef {}

/// An interval's period, and how to copy its message for each tick.
pub(super) type Every<M> = (Duration, fn(&M) -> M);

/// One timer in the heap.
struct Entry<M> {
    deadline: Instant,
    /// Breaks ties between equal deadlines: first set, first fired.
    seq: u64,
    msg: M,
    /// An interval's period and how to copy its message for each tick.
    every: Option<Every<M>>,
    state: Arc<AtomicU8>,
}

impl<M> Entry<M> {
    fn key(&self) -> (Instant, u64) {
        (self.deadline, self.seq)
    }
}

impl<M> PartialEq for Entry<M> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<M> Eq for Entry<M> {}

impl<M> PartialOrd for Entry<M> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<M> Ord for Entry<M> {
    /// Reversed: `BinaryHeap` is a max-heap, the earliest deadline must top it.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.key().cmp(&self.key())
    }
}

/// What is due: a one-shot timer's message, or a copy of an interval's
/// (`Err` with the panic message if its `Clone` panicked).
pub(super) enum Due<M> {
    Once(M),
    Tick(Result<M, String>),
}

/// An isolate's timers, owned by its loop: no lock.
pub(super) struct Timers<M> {
    heap: BinaryHeap<Entry<M>>,
    next_seq: u64,
    /// Compact the heap when it grows past this: cancelled timers stay in
    /// it until their deadline, so a timer set and cancelled on every
    /// message (a debounce) must not grow it without bound.
    compact_at: usize,
}

/// Heaps smaller than this are never compacted.
const COMPACT_MIN: usize = 64;

static NEXT_TIMER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<M> Timers<M> {
    pub(super) fn new() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            next_seq: 0,
            compact_at: COMPACT_MIN,
        }
    }

    /// Sets a timer for `deadline`; an interval repeats every `period`.
    pub(super) fn insert(
        &mut self,
        deadline: Instant,
        msg: M,
        every: Option<Every<M>>,
    ) -> TimerRef {
        if self.heap.len() >= self.compact_at {
            let (live, cancelled): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
                .into_iter()
                .partition(|e| e.state.load(Ordering::Acquire) == PENDING);
            self.heap = live.into();
            discard(cancelled);
            self.compact_at = COMPACT_MIN.max(self.heap.len() * 2);
        }
        let state = Arc::new(AtomicU8::new(PENDING));
        self.heap.push(Entry {
            deadline,
            seq: self.next_seq,
            msg,
            every,
            state: Arc::clone(&state),
        });
        self.next_seq += 1;
        TimerRef {
            id: NEXT_TIMER.fetch_add(1, Ordering::Relaxed),
            state,
        }
    }

    /// Whether no timer is set: then the loop reads no clock for timers.
    pub(super) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline of a timer still to fire; cancelled timers at
    /// the top are dropped on the way.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(top) = self.heap.peek() {
            if top.state.load(Ordering::Acquire) == PENDING {
                return Some(top.deadline);
            }
            discard(self.heap.pop());
        }
        None
    }

    /// Takes the earliest timer due at `now`, if any. An interval is put
    /// back for its next tick: the next deadline after `now` on the
    /// interval's own schedule (`first + k × period`), so ticks do not
    /// drift and missed ones are skipped, not delivered in a burst (as
    /// tokio's `MissedTickBehavior::Skip`).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Due<M>> {
        loop {
            if self.next_deadline()? > now {
                return None;
            }
            let mut entry = self.heap.pop()?;
            match entry.every {
                None => {
                    // A cancel that came first wins: exactly one of the two.
                    if entry
                        .state
                        .compare_exchange(PENDING, FIRED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Some(Due::Once(entry.msg));
                    }
                    discard(entry);
                }
                Some((period, copy)) => {
                    let late = now.saturating_duration_since(entry.deadline);
                    let missed = late.as_nanos() / period.as_nanos().max(1);
                    let skip = u32::try_from(missed + 1).unwrap_or(u32::MAX);
                    let Some(next) = period
                        .checked_mul(skip)
                        .and_then(|step| entry.deadline.checked_add(step))
                    else {
                        // Beyond the clock: no further tick.
                        entry.state.store(CANCELLED, Ordering::Release);
                        discard(entry);
                        continue;
                    };
                    let tick =
                        crate::unwind::catch(|| copy(&entry.msg)).map_err(|caught| caught.message);
                    entry.deadline = next;
                    entry.seq = self.next_seq;
                    self.next_seq += 1;
                    self.heap.push(entry);
                    return Some(Due::Tick(tick));
                }
            }
        }
    }

    /// Cancels every timer: the isolate (or this incarnation) exited.
    pub(super) fn cancel_all(&mut self) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        for entry in &entries {
            let _ = entry.state.compare_exchange(
                PENDING,
                CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        discard(entries);
    }
}

/// Drops timers' messages: their `Drop` is user code, run under `catch`.
fn discard<T>(what: T) {
    let _ = crate::unwind::catch(move || drop(what));
}

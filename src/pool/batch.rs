//! Waiting for many tasks at once, woken once for the whole batch.
//!
//! Each task, as it resolves, counts a shared latch down; only the last one
//! wakes the waiter. Waiting on the handles one by one instead wakes the
//! waiting thread once per task, and on a machine with as many workers as
//! cores each of those wakes takes a core from a worker. The idea is
//! rayon-core's `CountLatch` (rayon-core/src/latch.rs), which ends a scope.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::task::TaskState;
use super::{TaskHandle, Worker};
use crate::error::TaskError;

/// Every task's result, in the order of the handles.
type Results<W> = Vec<Result<<W as Worker>::Output, TaskError<<W as Worker>::Error>>>;

/// Counts resolutions down; the one that reaches zero wakes the waiter.
#[derive(Default)]
struct Latch {
    remaining: AtomicUsize,
    lock: Mutex<()>,
    zero: Condvar,
    /// Returns from a wait on `zero` (tests check the waiter woke once).
    #[cfg(test)]
    wakes: AtomicUsize,
    /// Waits begun on `zero` (tests wait for the waiter to park).
    #[cfg(test)]
    parks: AtomicUsize,
}

impl Latch {
    fn count_down(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Taking the lock orders this wake after a waiter's check of
            // `remaining`: it is parked, or it will see zero.
            let _guard = self.lock.lock();
            self.zero.notify_all();
        }
    }

    fn is_zero(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Waits until zero or `until`; whether it reached zero.
    fn wait(&self, until: Option<Instant>) -> bool {
        let mut guard = self.lock.lock();
        while !self.is_zero() {
            #[cfg(test)]
            self.parks.fetch_add(1, Ordering::Relaxed);
            let timed_out = crate::time::wait(&self.zero, &mut guard, until);
            #[cfg(test)]
            self.wakes.fetch_add(1, Ordering::Relaxed);
            if timed_out {
                return self.is_zero();
            }
        }
        true
    }
}

/// Tasks waited for together: the waiting thread wakes once, when the last
/// of them resolves, and gets every result in the order the handles were
/// given.
///
/// Like a [`TaskHandle`], a batch has a form of each wait for a UI thread:
/// [`try_join`](Self::try_join) never blocks (poll it each frame),
/// [`join_timeout`](Self::join_timeout) and
/// [`join_deadline`](Self::join_deadline) wait at most so long, and
/// [`join`](Self::join) (or [`join_all`]) waits for all.
///
/// A handle whose result was already taken gives
/// [`TaskError::AlreadyTaken`] in its place; each task's error (a panic, a
/// cancel, a deadline) stays in its own place and does not end the batch
/// early.
///
/// # Examples
///
/// ```
/// use isolates::pool::{Batch, Pool, TaskContext, Worker};
///
/// struct Square;
/// impl Worker for Square {
///     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
///     fn start(_: ()) -> Result<Self, String> { Ok(Square) }
///     fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(n * n) }
/// }
///
/// let pool = Pool::<Square>::builder().spawn(()).unwrap();
/// let mut batch: Batch<Square> = (1..=4).map(|n| pool.submit(n)).collect();
/// // A UI thread polls, drawing frames in between:
/// let results = loop {
///     if let Some(results) = batch.try_join() {
///         break results;
///     }
///     std::thread::sleep(std::time::Duration::from_millis(1)); // a frame
/// };
/// assert_eq!(results, [Ok(1), Ok(4), Ok(9), Ok(16)]);
/// ```
pub struct Batch<W: Worker> {
    handles: Vec<TaskHandle<W>>,
    latch: Arc<Latch>,
    /// The earliest deadline of a task not resolved when last looked at: a
    /// queued task learns of its passed deadline when someone looks.
    next_deadline: Cell<Option<Instant>>,
    taken: bool,
}

impl<W: Worker> Batch<W> {
    /// Gathers `handles` into a batch (also possible with `collect`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Batch, Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// # }
    /// let pool = Pool::<W>::builder().spawn(()).unwrap();
    /// let batch = Batch::new([pool.submit(1), pool.submit(2)]);
    /// assert_eq!(batch.len(), 2);
    /// assert_eq!(batch.join(), [Ok(1), Ok(2)]);
    /// ```
    pub fn new(handles: impl IntoIterator<Item = TaskHandle<W>>) -> Self {
        let handles: Vec<TaskHandle<W>> = handles.into_iter().collect();
        // Counted before any task can count down, so it never passes zero
        // early.
        let latch = Arc::new(Latch {
            remaining: AtomicUsize::new(handles.len()),
            ..Latch::default()
        });
        for handle in &handles {
            if handle.is_taken() {
                // Nothing will resolve: its place says AlreadyTaken.
                latch.count_down();
            } else {
                let latch = Arc::clone(&latch);
                handle
                    .cell()
                    .on_resolve(Box::new(move |_| latch.count_down()));
            }
        }
        let batch = Batch {
            handles,
            latch,
            next_deadline: Cell::new(None),
            taken: false,
        };
        batch.next_deadline.set(batch.earliest_deadline());
        batch
    }

    /// How many tasks the batch holds.
    ///
    /// # Examples
    ///
    /// See [`Batch::new`].
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether the batch holds no task (it is done at once).
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Batch, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let mut batch = Batch::<W>::new([]);
    /// assert!(batch.is_empty());
    /// assert_eq!(batch.try_join(), Some(vec![]));
    /// ```
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// How many tasks have not resolved yet; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Batch, Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// # }
    /// let pool = Pool::<W>::builder().spawn(()).unwrap();
    /// let mut batch = Batch::new([pool.submit(1)]);
    /// assert!(batch.join_timeout(std::time::Duration::from_secs(10)).is_some());
    /// assert_eq!(batch.pending(), 0);
    /// ```
    pub fn pending(&self) -> usize {
        self.expire();
        if self.latch.remaining.load(Ordering::Acquire) == 0 {
            return 0;
        }
        // Each task's own state: a task resolved on another thread counts
        // the latch down just after its state changes, so a look right
        // after a `cancel` that found it resolved could see the latch
        // behind.
        self.handles.iter().filter(|h| !h.is_done()).count()
    }

    /// Whether every task has resolved (the results may have been taken);
    /// never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Batch, Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// # }
    /// let pool = Pool::<W>::builder().spawn(()).unwrap();
    /// let batch = Batch::new([pool.submit(1), pool.submit(2)]);
    /// batch.cancel();
    /// assert!(batch.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.pending() == 0
    }

    /// Takes every result, in the order the handles were given, if every
    /// task has resolved; never blocks. `None` while some task is not
    /// resolved, and after the results were taken once.
    ///
    /// # Examples
    ///
    /// See [`Batch`].
    pub fn try_join(&mut self) -> Option<Results<W>> {
        if self.taken || self.pending() > 0 {
            return None;
        }
        Some(self.take())
    }

    /// Waits at most `timeout` for every task to resolve, then takes the
    /// results as [`try_join`](Self::try_join) does; `None` if some task is
    /// not resolved by then (the batch stays usable), or the results were
    /// taken before.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # use isolates::pool::{Batch, Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// # }
    /// let pool = Pool::<W>::builder().spawn(()).unwrap();
    /// let mut batch = Batch::new([pool.submit(1), pool.submit(2)]);
    /// assert_eq!(batch.join_timeout(Duration::from_secs(10)), Some(vec![Ok(1), Ok(2)]));
    /// assert_eq!(batch.join_timeout(Duration::ZERO), None); // taken
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Option<Results<W>> {
        self.join_until(crate::time::deadline_after(timeout))
    }

    /// Waits until `deadline` at most for every task to resolve; as
    /// [`join_timeout`](Self::join_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use isolates::pool::{Batch, Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// # }
    /// let pool = Pool::<W>::builder().spawn(()).unwrap();
    /// let mut batch = Batch::new([pool.submit(7)]);
    /// let results = batch.join_deadline(Instant::now() + Duration::from_secs(10));
    /// assert_eq!(results, Some(vec![Ok(7)]));
    /// ```
    pub fn join_deadline(&mut self, deadline: Instant) -> Option<Results<W>> {
        self.join_until(Some(deadline))
    }

    /// Waits for every task to resolve and returns the results in the
    /// order the handles were given. If they were taken before (with
    /// [`try_join`](Self::try_join) or a timed join), every place says
    /// [`TaskError::AlreadyTaken`].
    ///
    /// # Examples
    ///
    /// See [`Batch::new`] and [`join_all`].
    pub fn join(mut self) -> Results<W> {
        match self.join_until(None) {
            Some(results) => results,
            None => self
                .handles
                .iter()
                .map(|_| Err(TaskError::AlreadyTaken))
                .collect(),
        }
    }

    /// Cancels every task not resolved yet (as [`TaskHandle::cancel`]);
    /// returns how many this cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use isolates::TaskError;
    /// use isolates::pool::{Batch, Pool, TaskContext, Worker};
    ///
    /// /// Works until cancelled.
    /// struct Endless;
    /// impl Worker for Endless {
    ///     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Endless) }
    ///     fn run(&mut self, _: (), task: &TaskContext<'_, Self>) -> Result<(), String> {
    ///         while !task.is_cancelled() {
    ///             std::thread::sleep(Duration::from_millis(1));
    ///         }
    ///         Err("stopped".into())
    ///     }
    /// }
    ///
    /// let pool = Pool::<Endless>::builder().workers(1).spawn(()).unwrap();
    /// let batch = Batch::new([pool.submit(()), pool.submit(())]);
    /// assert_eq!(batch.cancel(), 2);
    /// assert_eq!(batch.join(), [Err(TaskError::Cancelled), Err(TaskError::Cancelled)]);
    /// ```
    pub fn cancel(&self) -> usize {
        self.handles.iter().filter(|h| h.cancel()).count()
    }

    fn join_until(&mut self, until: Option<Instant>) -> Option<Results<W>> {
        if self.taken {
            return None;
        }
        loop {
            self.expire();
            // A queued task's deadline ends the wait too, so it resolves
            // on time even with nobody else looking.
            let wake = match (until, self.next_deadline.get()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if self.latch.wait(wake) {
                return Some(self.take());
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                self.expire();
                return (self.pending() == 0).then(|| self.take());
            }
        }
    }

    /// Resolves the tasks whose deadline passed, when one may have.
    fn expire(&self) {
        if self
            .next_deadline
            .get()
            .is_some_and(|d| Instant::now() >= d)
        {
            let now = Instant::now();
            for handle in &self.handles {
                if !handle.is_taken() && handle.cell().state() != TaskState::Done {
                    handle.cell().check_deadline(now);
                }
            }
            self.next_deadline.set(self.earliest_deadline());
        }
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.handles
            .iter()
            .filter(|h| !h.is_taken() && h.cell().state() != TaskState::Done)
            .filter_map(|h| h.cell().deadline)
            .min()
    }

    /// Every result; called once all tasks resolved.
    fn take(&mut self) -> Results<W> {
        self.taken = true;
        self.handles
            .iter_mut()
            .map(|h| h.try_take().unwrap_or(Err(TaskError::AlreadyTaken)))
            .collect()
    }
}

impl<W: Worker> FromIterator<TaskHandle<W>> for Batch<W> {
    /// Gathers handles into a batch, as [`Batch::new`].
    fn from_iter<I: IntoIterator<Item = TaskHandle<W>>>(handles: I) -> Self {
        Batch::new(handles)
    }
}

impl<W: Worker> fmt::Debug for Batch<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.handles.len())
            .field("pending", &self.latch.remaining.load(Ordering::Relaxed))
            .field("taken", &self.taken)
            .finish()
    }
}

/// Waits for every task in `handles` and returns their results in the
/// order given, waking the calling thread once, when the last resolves (as
/// the end of a rayon scope does). Shorthand for
/// [`Batch::new(handles).join()`](Batch::join); for a UI thread, poll a
/// [`Batch`] with [`try_join`](Batch::try_join) instead.
///
/// Each place holds its task's result or error; a handle whose result was
/// already taken gives [`TaskError::AlreadyTaken`] there.
///
/// # Examples
///
/// ```
/// use isolates::TaskError;
/// use isolates::pool::{join_all, Pool, TaskContext, Worker};
///
/// struct Halve;
/// impl Worker for Halve {
///     type Args = (); type Input = u32; type Output = u32; type Progress = (); type Error = String;
///     fn start(_: ()) -> Result<Self, String> { Ok(Halve) }
///     fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> {
///         if n % 2 == 0 { Ok(n / 2) } else { Err(format!("{n} is odd")) }
///     }
/// }
///
/// let pool = Pool::<Halve>::builder().spawn(()).unwrap();
/// let results = join_all((0..4).map(|n| pool.submit(n)));
/// assert_eq!(results, [
///     Ok(0),
///     Err(TaskError::Failed("1 is odd".into())),
///     Ok(1),
///     Err(TaskError::Failed("3 is odd".into())),
/// ]);
/// ```
pub fn join_all<W: Worker>(handles: impl IntoIterator<Item = TaskHandle<W>>) -> Results<W> {
    Batch::new(handles).join()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::pool::{Pool, TaskContext};

    /// Opened once the waiter is parked.
    static GATE: AtomicBool = AtomicBool::new(false);

    struct Gated;

    impl Worker for Gated {
        type Args = ();
        type Input = u32;
        type Output = u32;
        type Progress = ();
        type Error = String;

        fn start(_: ()) -> Result<Self, String> {
            Ok(Gated)
        }

        fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> {
            let until = Instant::now() + Duration::from_secs(30);
            while !GATE.load(Ordering::Acquire) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(n)
        }
    }

    fn wait_until(cond: impl Fn() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(30);
        while !cond() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The waiter parks once and wakes once for a batch of tasks that all
    /// resolve while it waits (waiting on the handles in turn would wake
    /// it up to once per task).
    #[test]
    fn the_waiter_wakes_once_for_the_batch() {
        let pool = Pool::<Gated>::builder().workers(2).spawn(()).unwrap();
        let batch: Batch<Gated> = (0..40).map(|n| pool.submit(n)).collect();
        let latch = Arc::clone(&batch.latch);
        let waiter = std::thread::spawn(move || batch.join());
        assert!(wait_until(|| latch.parks.load(Ordering::Relaxed) == 1));
        GATE.store(true, Ordering::Release);
        let results = waiter.join().unwrap();
        assert_eq!(results, (0..40).map(Ok).collect::<Vec<_>>());
        assert_eq!(latch.parks.load(Ordering::Relaxed), 1);
        assert_eq!(latch.wakes.load(Ordering::Relaxed), 1);
    }
}

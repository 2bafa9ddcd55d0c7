//! One task's shared record and the handle that resolves exactly once.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Worker;
use crate::codec::envelope::Envelope;
use crate::error::{CodecError, TaskError};
use crate::handle::{Handle, Source};
use crate::port::DynCodec;

/// Where a task is in its life.
///
/// # Examples
///
/// ```
/// use isolates::pool::TaskState;
/// assert_ne!(TaskState::Queued, TaskState::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// Resolved: a value or an error is waiting to be taken (or was).
    Done,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// How a task ended; its value is moved (or encoded, when copying).
pub(crate) enum Outcome {
    Value(Envelope),
    Failed(Envelope),
    Error(ErrorKind),
}

/// The errors that carry no user payload.
#[derive(Debug, Clone)]
pub(crate) enum ErrorKind {
    Panicked(String),
    Cancelled,
    TimedOut,
    WorkerLost(String),
    Rejected,
    Closed,
    Codec(CodecError),
}

/// How many unread progress values a task keeps (the latest ones).
pub(crate) const PROGRESS_KEEP: usize = 1024;

/// Told a task's id once it resolves.
pub(crate) type Notify = Box<dyn FnOnce(u64) + Send>;

/// What a task's submitter, its worker and the pool share.
pub(crate) struct TaskCell {
    pub(crate) id: u64,
    state: AtomicU8,
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
    /// Raised by cancel or deadline: the running task may check it.
    pub(crate) cancel: AtomicBool,
    pub(crate) deadline: Option<Instant>,
    progress: Mutex<VecDeque<Envelope>>,
    /// Called once when the task resolves, in the order they were set:
    /// the main-thread dispatcher, a batch's latch, the application's own
    /// ([`TaskHandle::on_resolve`]).
    notify: Mutex<Vec<Notify>>,
    /// Woken once when the task resolves (a task awaiting the handle).
    waker: Mutex<Option<Waker>>,
    /// How many workers may be executing the task's code: counted up when
    /// one starts it, down once its `run` returned. Unlike `state`, which
    /// is `DONE` as soon as the handle resolves (a deadline, a cancel, a
    /// kill), this says whether the code may still be running; a count,
    /// not a flag, because a retry after a kill runs on a new worker while
    /// the abandoned run may go on.
    execution: AtomicU32,
    /// Told each time a progress value arrives (the work manager's
    /// runs in child processes: their progress goes on to its watchers).
    progress_notify: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl TaskCell {
    pub(crate) fn new(id: u64, deadline: Option<Instant>) -> Self {
        TaskCell {
            id,
            state: AtomicU8::new(QUEUED),
            outcome: Mutex::new(None),
            done: Condvar::new(),
            cancel: AtomicBool::new(false),
            deadline,
            progress: Mutex::new(VecDeque::new()),
            notify: Mutex::new(Vec::new()),
            waker: Mutex::new(None),
            execution: AtomicU32::new(0),
            progress_notify: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn state(&self) -> TaskState {
        match self.state.load(Ordering::Acquire) {
            QUEUED => TaskState::Queued,
            RUNNING => TaskState::Running,
            _ => TaskState::Done,
        }
    }

    /// Marks the task running, unless it already resolved (cancelled or
    /// timed out while queued): then the worker skips it.
    ///
    /// Counts as executing from before the switch (so a deadline that
    /// resolves the task right after it never looks idle) until
    /// [`returned`](Self::returned).
    pub(crate) fn start_running(&self) -> bool {
        self.execution.fetch_add(1, Ordering::AcqRel);
        let started = self
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !started {
            self.returned();
        }
        started
    }

    /// The worker is done with the task: its `run` returned, or it will
    /// not run it.
    pub(crate) fn returned(&self) {
        // Never below zero: a remote task's end may be told twice.
        let _ = self
            .execution
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether a worker may still be executing the task's code (true from
    /// its start until its `run` returns, even after the handle resolved).
    pub(crate) fn executing(&self) -> bool {
        self.execution.load(Ordering::Acquire) > 0
    }

    /// Puts a running task back in the queue (a retry).
    pub(crate) fn requeue(&self) -> bool {
        self.state
            .compare_exchange(RUNNING, QUEUED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Resolves the task if nothing did before; returns whether this did.
    pub(crate) fn resolve(&self, outcome: Outcome) -> bool {
        {
            let mut slot = self.outcome.lock();
            // One swap, not a look then a store: a worker's
            // `start_running` (queued to running) between the two would be
            // lost, and it would run a task resolved as not started. Now it
            // either started first (and is seen executing) or finds the
            // task done and skips it.
            if self.state.swap(DONE, Ordering::AcqRel) == DONE {
                return false;
            }
            *slot = Some(outcome);
        }
        self.done.notify_all();
        // Both run the application's code (an event loop's waker, an async
        // task's waker): outside our locks, and under `catch` so a panic in
        // them cannot kill the worker that resolves the task.
        let notify = std::mem::take(&mut *self.notify.lock());
        for notify in notify {
            let _ = crate::unwind::catch(|| notify(self.id));
        }
        let waker = self.waker.lock().take();
        if let Some(waker) = waker {
            let _ = crate::unwind::catch(|| waker.wake());
        }
        true
    }

    /// Resolves with an error that carries no payload.
    pub(crate) fn fail(&self, kind: ErrorKind) -> bool {
        self.resolve(Outcome::Error(kind))
    }

    /// Cancels: the task resolves `Cancelled` now, and a running one sees
    /// the flag.
    pub(crate) fn cancel(&self) -> bool {
        self.cancel.store(true, Ordering::Release);
        self.fail(ErrorKind::Cancelled)
    }

    /// Whether the task's deadline has passed (whoever resolved it).
    #[cfg(any(target_os = "linux", feature = "nats"))]
    pub(crate) fn deadline_passed(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Resolves `TimedOut` if the deadline has passed.
    pub(crate) fn check_deadline(&self, now: Instant) -> bool {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                self.cancel.store(true, Ordering::Release);
                self.fail(ErrorKind::TimedOut)
            }
            _ => false,
        }
    }

    /// Keeps a progress value for the handle: the latest
    /// [`PROGRESS_KEEP`] unread ones, so a task that reports faster than
    /// anyone reads holds bounded memory. A value pushed out (or reported
    /// after the end) is dropped outside the lock: its `Drop` is user code.
    pub(crate) fn push_progress(&self, envelope: Envelope) {
        if self.state.load(Ordering::Acquire) == DONE {
            return;
        }
        let oldest = {
            let mut progress = self.progress.lock();
            progress.push_back(envelope);
            if progress.len() > PROGRESS_KEEP {
                progress.pop_front()
            } else {
                None
            }
        };
        drop(oldest);
        if let Some(notify) = self.progress_notify.get() {
            let _ = crate::unwind::catch(notify);
        }
    }

    /// Adds a function told when the task resolves; called at once (under
    /// `catch`) if it already has.
    pub(crate) fn on_resolve(&self, notify: Notify) {
        let mut slot = self.notify.lock();
        if self.state.load(Ordering::Acquire) == DONE {
            drop(slot);
            let _ = crate::unwind::catch(|| notify(self.id));
        } else {
            slot.push(notify);
        }
    }

    /// Has `waker` woken when the task resolves, replacing an earlier one.
    fn wake_on_resolve(&self, waker: &Waker) {
        crate::oneshot::store_waker(&self.waker, waker);
    }

    /// Forgets a registered waker (the result was taken: nothing will be
    /// woken for it), so it is dropped here, not on a worker. Returns
    /// whether it was still registered: if not, the resolver took it and
    /// wakes it.
    fn forget_waker(&self) -> bool {
        let old = self.waker.lock().take();
        old.is_some()
    }
}

/// The result of one task submitted to a [`Pool`](super::Pool): resolves
/// exactly once, to the worker's value or a [`TaskError`]. Poll it with
/// [`try_take`](Self::try_take) from a UI thread, wait on it, or `.await`
/// it (it is a [`Future`] on any executor, woken by the task's resolution).
///
/// Dropping a handle does not cancel the task; call
/// [`cancel`](Self::cancel).
///
/// # Examples
///
/// See [`Pool`](super::Pool).
pub struct TaskHandle<W: Worker> {
    handle: Handle<TaskSource<W>>,
}

/// Where a [`TaskHandle`]'s result comes from: the task's cell, decoded
/// with the pool's codecs by whoever takes it.
struct TaskSource<W: Worker> {
    cell: Arc<TaskCell>,
    codecs: Arc<CodecSet<W>>,
}

impl<W: Worker> TaskHandle<W> {
    pub(super) fn new(cell: Arc<TaskCell>, codecs: Arc<CodecSet<W>>) -> Self {
        TaskHandle {
            handle: Handle::new(TaskSource { cell, codecs }),
        }
    }

    /// The task's shared record.
    pub(super) fn cell(&self) -> &Arc<TaskCell> {
        &self.handle.source().cell
    }

    /// Whether the result was taken.
    pub(super) fn is_taken(&self) -> bool {
        self.handle.is_taken()
    }

    /// The task's id, unique within its pool (tasks of two pools may share
    /// one).
    ///
    /// # Examples
    ///
    /// See [`Pool`](super::Pool).
    pub fn id(&self) -> u64 {
        self.cell().id
    }

    /// Where the task is; never blocks.
    ///
    /// # Examples
    ///
    /// See [`Pool`](super::Pool).
    pub fn state(&self) -> TaskState {
        self.handle.source().expire();
        self.cell().state()
    }

    /// Whether the task has resolved (and stays true once its result was
    /// taken); never blocks.
    ///
    /// # Examples
    ///
    /// See [`Pool`](super::Pool).
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// Takes the result if the task has resolved; never blocks. `None`
    /// while it runs, and after the result was taken once.
    ///
    /// # Examples
    ///
    /// See [`Pool`](super::Pool).
    pub fn try_take(&mut self) -> Option<Result<W::Output, TaskError<W::Error>>> {
        self.handle.try_take()
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// The task's [`TaskError`]; [`TaskError::AlreadyTaken`] if it was
    /// taken before.
    ///
    /// # Examples
    ///
    /// See [`Pool`](super::Pool).
    pub fn wait(self) -> Result<W::Output, TaskError<W::Error>> {
        self.handle.wait()
    }

    /// Waits at most `timeout` for the result; `None` if it has not come
    /// (the handle stays usable) or was already taken.
    ///
    /// # Examples
    ///
    /// See [`Pool`](super::Pool).
    pub fn wait_timeout(
        &mut self,
        timeout: Duration,
    ) -> Option<Result<W::Output, TaskError<W::Error>>> {
        self.handle.wait_timeout(timeout)
    }

    /// Waits until `deadline` at most for the result; `None` if it has not
    /// come (the handle stays usable) or was already taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use isolates::pool::{Pool, TaskContext, Worker};
    ///
    /// struct Double;
    /// impl Worker for Double {
    ///     type Args = (); type Input = u32; type Output = u32; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Double) }
    ///     fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> { Ok(n * 2) }
    /// }
    ///
    /// let pool = Pool::<Double>::builder().workers(1).spawn(()).unwrap();
    /// let mut task = pool.submit(21);
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// assert_eq!(task.wait_deadline(deadline), Some(Ok(42)));
    /// assert_eq!(task.wait_deadline(deadline), None); // taken once
    /// ```
    pub fn wait_deadline(
        &mut self,
        deadline: Instant,
    ) -> Option<Result<W::Output, TaskError<W::Error>>> {
        self.handle.wait_deadline(deadline)
    }

    /// Cancels the task: a queued task never runs; a running one sees
    /// [`TaskContext::is_cancelled`](super::TaskContext::is_cancelled). The
    /// handle resolves [`TaskError::Cancelled`] at once, unless the task
    /// had already resolved (then this returns `false`).
    ///
    /// # Examples
    ///
    /// See [`Pool`](super::Pool).
    pub fn cancel(&self) -> bool {
        self.cell().cancel()
    }

    /// The progress values the task has reported since the last call,
    /// oldest first; never blocks. Values that cannot be decoded are
    /// skipped. Unread values are kept up to the latest 1,024: a task that
    /// reports faster than the handle reads loses the oldest, not memory.
    ///
    /// # Examples
    ///
    /// See [`TaskContext`](super::TaskContext).
    pub fn progress(&self) -> Vec<W::Progress> {
        let batch: Vec<Envelope> = self.cell().progress.lock().drain(..).collect();
        batch
            .into_iter()
            .filter_map(|e| {
                self.handle
                    .source()
                    .codecs
                    .progress
                    .unpack_erased(e, "progress")
                    .ok()
            })
            .collect()
    }

    /// Calls `f` with the task's id once the task resolves, however it
    /// does (a value, an error, a cancel, its deadline, a lost worker):
    /// to learn of the end without polling or holding a thread, e.g. to
    /// wake an event loop or a scheduler, which then takes the result.
    ///
    /// `f` runs on the thread that resolves the task (a worker, the
    /// pool's deadline timer, a thread calling [`cancel`](Self::cancel)),
    /// outside the pool's locks and under `catch`: a panic in it is
    /// caught and dropped. Keep it short; it holds up that thread. If the
    /// task has already resolved, `f` runs at once, on the calling thread.
    /// Each function set runs once; [`MainThread`](super::MainThread) and
    /// [`Batch`](super::Batch) set their own beside it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::pool::{Pool, TaskContext, Worker};
    ///
    /// struct Double;
    /// impl Worker for Double {
    ///     type Args = (); type Input = u32; type Output = u32; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Double) }
    ///     fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> { Ok(n * 2) }
    /// }
    ///
    /// let pool = Pool::<Double>::builder().workers(1).spawn(()).unwrap();
    /// let (done_tx, done) = std::sync::mpsc::channel();
    /// let mut task = pool.submit(21);
    /// task.on_resolve(move |id| { let _ = done_tx.send(id); });
    /// // Woken once, by the task's end: then the result is there to take.
    /// assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(task.id()));
    /// assert_eq!(task.try_take(), Some(Ok(42)));
    /// ```
    pub fn on_resolve(&self, f: impl FnOnce(u64) + Send + 'static) {
        self.cell().on_resolve(Box::new(f));
    }

    /// Calls `f` each time a progress value arrives for the handle (on the
    /// thread that delivers it; the work manager's runs in child
    /// processes). Set once: a second call is ignored. Called at once if
    /// progress is already waiting.
    #[cfg(feature = "schedule")]
    pub(crate) fn on_progress(&self, f: impl Fn() + Send + Sync + 'static) {
        let cell = self.cell();
        if cell.progress_notify.set(Box::new(f)).is_ok()
            && !cell.progress.lock().is_empty()
            && let Some(notify) = cell.progress_notify.get()
        {
            let _ = crate::unwind::catch(notify);
        }
    }

    /// A [`TaskWatch`] of this task: its id, state and whether its code
    /// still runs, for whoever must know without holding the handle.
    ///
    /// # Examples
    ///
    /// See [`TaskWatch`].
    pub fn watch(&self) -> TaskWatch {
        TaskWatch {
            cell: Arc::clone(self.cell()),
        }
    }
}

impl<W: Worker> TaskSource<W> {
    /// Resolves a passed deadline here, so a UI thread polling a task
    /// stuck in the queue sees `TimedOut` on time.
    fn expire(&self) {
        if self.cell.state() != TaskState::Done {
            self.cell.check_deadline(Instant::now());
        }
    }

    fn decode(&self, outcome: Outcome) -> Result<W::Output, TaskError<W::Error>> {
        match outcome {
            Outcome::Value(envelope) => self
                .codecs
                .output
                .unpack_erased(envelope, "value")
                .map_err(TaskError::Codec),
            Outcome::Failed(envelope) => match self.codecs.error.unpack_erased(envelope, "error") {
                Ok(error) => Err(TaskError::Failed(error)),
                Err(e) => Err(TaskError::Codec(e)),
            },
            Outcome::Error(kind) => Err(match kind {
                ErrorKind::Panicked(m) => TaskError::Panicked(m),
                ErrorKind::Cancelled => TaskError::Cancelled,
                ErrorKind::TimedOut => TaskError::TimedOut,
                ErrorKind::WorkerLost(m) => TaskError::WorkerLost(m),
                ErrorKind::Rejected => TaskError::Rejected,
                ErrorKind::Closed => TaskError::PoolClosed,
                ErrorKind::Codec(e) => TaskError::Codec(e),
            }),
        }
    }
}

impl<W: Worker> Source for TaskSource<W> {
    type Output = Result<W::Output, TaskError<W::Error>>;

    fn try_take(&mut self) -> Option<Self::Output> {
        self.expire();
        let outcome = self.cell.outcome.lock().take()?;
        Some(self.decode(outcome))
    }

    fn take_until(&mut self, until: Option<Instant>) -> Option<Self::Output> {
        let mut outcome = self.cell.outcome.lock();
        loop {
            if let Some(taken) = outcome.take() {
                drop(outcome);
                return Some(self.decode(taken));
            }
            // The task's own deadline ends the wait too.
            let wake = match (until, self.cell.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if crate::time::wait(&self.cell.done, &mut outcome, wake) {
                drop(outcome);
                self.expire();
                outcome = self.cell.outcome.lock();
                if outcome.is_none() && until.is_some_and(|u| Instant::now() >= u) {
                    return None;
                }
            }
        }
    }

    fn register(&mut self, waker: &Waker) {
        self.cell.wake_on_resolve(waker);
    }

    fn forget_waker(&mut self) -> bool {
        self.cell.forget_waker()
    }

    fn arrived(&self) -> bool {
        self.expire();
        self.cell.state() == TaskState::Done
    }

    fn already_taken(&self) -> Self::Output {
        Err(TaskError::AlreadyTaken)
    }
}

/// Awaiting a `TaskHandle` needs no particular runtime: the worker (or the
/// deadline timer, or a cancel) that resolves the task wakes the awaiting
/// task, and nothing polls in between. Dropping the future does not cancel
/// the task; it still runs and resolves once, and its result is dropped.
///
/// Awaiting it after its result was taken gives
/// [`TaskError::AlreadyTaken`].
///
/// # Examples
///
/// ```
/// use futures::executor::block_on;
/// use isolates::TaskError;
/// use isolates::pool::{Pool, TaskContext, Worker};
///
/// struct Double;
/// impl Worker for Double {
///     type Args = (); type Input = u32; type Output = u32; type Progress = (); type Error = String;
///     fn start(_: ()) -> Result<Self, String> { Ok(Double) }
///     fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> { Ok(n * 2) }
/// }
///
/// let pool = Pool::<Double>::builder().workers(2).spawn(()).unwrap();
/// let (a, mut b) = (pool.submit(20), pool.submit(1));
/// block_on(async {
///     assert_eq!(a.await, Ok(40));
///     assert_eq!((&mut b).await, Ok(2));
///     assert_eq!((&mut b).await, Err(TaskError::AlreadyTaken));
/// });
/// ```
impl<W: Worker> Future for TaskHandle<W> {
    type Output = Result<W::Output, TaskError<W::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().handle.poll_take(cx)
    }
}

impl<W: Worker> fmt::Debug for TaskHandle<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.cell().id)
            .field("state", &self.cell().state())
            .field("taken", &self.handle.is_taken())
            .finish()
    }
}

/// Watches one task: its id, its state, and whether a worker may still be
/// executing its code. Cheap to clone; it never takes the result, which
/// stays for the [`TaskHandle`].
///
/// A task resolves as soon as it is cancelled, times out or loses its
/// worker, while the worker's `run` may go on until it looks at
/// [`TaskContext::is_cancelled`](super::TaskContext::is_cancelled) (or
/// forever, for code that never does). [`is_executing`](Self::is_executing)
/// tells the two apart: wait for it to turn false before starting work
/// that must not overlap the old run.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use isolates::pool::{Pool, TaskContext, TaskState, Worker};
///
/// /// Spins until cancelled.
/// struct Spin;
/// impl Worker for Spin {
///     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
///     fn start(_: ()) -> Result<Self, String> { Ok(Spin) }
///     fn run(&mut self, _: (), task: &TaskContext<'_, Self>) -> Result<(), String> {
///         while !task.is_cancelled() { std::thread::yield_now(); }
///         Ok(())
///     }
/// }
///
/// let pool = Pool::<Spin>::builder().workers(1).spawn(()).unwrap();
/// let task = pool.submit(());
/// let watch = task.watch();
/// let until = Instant::now() + Duration::from_secs(5);
/// while watch.state() != TaskState::Running && Instant::now() < until {
///     std::thread::yield_now();
/// }
/// assert!(watch.is_executing());
/// task.cancel();
/// assert!(watch.is_done()); // resolved at once...
/// while watch.is_executing() && Instant::now() < until {
///     std::thread::yield_now(); // ...its run returns when it looks
/// }
/// assert!(!watch.is_executing());
/// assert_eq!(watch.id(), task.id());
/// ```
#[derive(Clone)]
pub struct TaskWatch {
    cell: Arc<TaskCell>,
}

impl TaskWatch {
    /// The task's id (as [`TaskHandle::id`]).
    ///
    /// # Examples
    ///
    /// See [`TaskWatch`].
    pub fn id(&self) -> u64 {
        self.cell.id
    }

    /// Where the task is (as [`TaskHandle::state`]); never blocks.
    ///
    /// # Examples
    ///
    /// See [`TaskWatch`].
    pub fn state(&self) -> TaskState {
        if self.cell.state() != TaskState::Done {
            self.cell.check_deadline(Instant::now());
        }
        self.cell.state()
    }

    /// Whether the task has resolved; never blocks.
    ///
    /// # Examples
    ///
    /// See [`TaskWatch`].
    pub fn is_done(&self) -> bool {
        self.state() == TaskState::Done
    }

    /// Whether a worker may still be executing the task's code: true from
    /// when a worker starts it until its `run` returns, even after the
    /// task resolved (cancelled, timed out, its worker killed); false
    /// before it starts and for a task that never runs.
    ///
    /// # Examples
    ///
    /// See [`TaskWatch`].
    pub fn is_executing(&self) -> bool {
        self.cell.executing()
    }
}

impl fmt::Debug for TaskWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskWatch")
            .field("id", &self.cell.id)
            .field("state", &self.cell.state())
            .field("executing", &self.cell.executing())
            .finish()
    }
}

/// The codecs of a pool's four types.
pub(crate) struct CodecSet<W: Worker> {
    pub(crate) input: DynCodec<W::Input>,
    pub(crate) output: DynCodec<W::Output>,
    pub(crate) progress: DynCodec<W::Progress>,
    pub(crate) error: DynCodec<W::Error>,
}

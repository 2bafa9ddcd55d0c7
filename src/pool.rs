//! Worker pools: computation-heavy work load-balanced over worker isolates,
//! off the main thread.
//!
//! A [`Pool`] runs workers of one kind ([`Worker`]), each with state built
//! on its own thread from its own clone of the start arguments.
//! [`Pool::submit`] moves the input into the queue and returns a
//! [`TaskHandle`] at once, whatever the input's size; the handle resolves
//! exactly once, to the output (moved back) or a typed
//! [`TaskError`](crate::TaskError). With
//! [`PoolBuilder::copy_messages`] inputs and outputs are encoded instead.
//!
//! - **Routing** ([`Routing`]): by default idle workers pull from one shared
//!   queue (best for uneven CPU tasks); or least-loaded, round-robin, or key
//!   affinity (same key, same worker, for stateful work).
//! - **Priorities** ([`TaskPriority`]): high is served first, but one pick
//!   in four goes to normal work and one in eight to low, so nothing starves.
//! - **Cancellation and deadlines**: a queued task never runs; a running one
//!   sees [`TaskContext::is_cancelled`]; the handle resolves at once.
//! - **Progress**: [`TaskContext::progress`] sends values the handle reads.
//! - **Bounded queue** with a [`FullPolicy`]: reject, or block with timeout.
//! - **Supervision**: a worker whose task panics is restarted with fresh
//!   state; [`Pool::kill_worker`] abandons a worker mid-task (its task
//!   resolves [`TaskError::WorkerLost`](crate::TaskError::WorkerLost) or is
//!   retried) and starts a replacement. Tasks can ask for retries.
//! - **Autoscaling** between a minimum and maximum, with idle reaping.
//! - **Fast by default, below the UI**: one worker per core, which on
//!   Linux run at nice 10, so heavy work runs as fast as on rayon yet does
//!   not take frames from the UI thread ([`Pool::builder`] says why).
//! - **Batch waits** ([`join_all`], [`Batch`]): the waiter wakes once, when
//!   the last task of the batch resolves, and gets results in order.
//!
//! [`MainThread`] delivers results and progress as callbacks run on the UI
//! thread when it calls [`MainThread::pump`] with a time budget per frame.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

mod batch;
mod builder;
mod deadline;
mod func;
mod main_thread;
#[cfg(feature = "nats")]
mod nats;
mod queue;
#[cfg(target_os = "linux")]
mod remote;
#[cfg(any(target_os = "linux", feature = "nats"))]
mod server;
mod shared;
#[cfg(any(target_os = "linux", feature = "nats"))]
mod wire;
// Crate-visible for the backends that carry a pool's tasks elsewhere (the
// NATS client and worker); the scheduler and other modules use the public
// API (`TaskHandle::on_resolve`, `TaskWatch`).
pub(crate) mod task;
mod worker;
#[cfg(target_os = "linux")]
pub(crate) use remote::{args_encoder, serve_worker};
#[cfg(any(target_os = "linux", feature = "nats"))]
pub(crate) use server::TaskServer;

pub use batch::{Batch, join_all};
pub use builder::{PoolBuilder, default_workers};
pub use func::FnWorker;
pub use main_thread::MainThread;
use queue::{Job, Slot, expire};
use shared::Inner;
pub use shared::{PoolStats, WorkerStats};
use task::{CodecSet, ErrorKind, TaskCell};
pub use task::{TaskHandle, TaskState, TaskWatch};
use worker::spawn_worker;

/// The code a pool runs: state built once per worker, then one task at a
/// time.
///
/// # Examples
///
/// ```
/// use isolates::pool::{Pool, TaskContext, Worker};
///
/// /// Sums squares; `scale` comes from the pool's start arguments.
/// struct Squares { scale: u64 }
///
/// impl Worker for Squares {
///     type Args = u64;
///     type Input = std::ops::Range<u64>;
///     type Output = u64;
///     type Progress = ();
///     type Error = String;
///
///     fn start(scale: u64) -> Result<Self, String> { Ok(Squares { scale }) }
///
///     fn run(&mut self, range: Self::Input, _: &TaskContext<'_, Self>) -> Result<u64, String> {
///         Ok(range.map(|i| i * i * self.scale).sum())
///     }
/// }
///
/// let pool = Pool::<Squares>::builder().workers(2).spawn(1).unwrap();
/// let task = pool.submit(0..10);
/// assert_eq!(task.wait(), Ok(285));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pool worker",
    label = "not a `pool::Worker`",
    note = "implement `isolates::pool::Worker` for `{Self}`, or make a pool from a function with `Pool::from_fn`"
)]
pub trait Worker: Sized + 'static {
    /// What each worker is started from; each worker gets its own clone.
    /// It need not be encodable: only a pool whose workers run in child
    /// processes ([`PoolBuilder::process`]) encodes it, and asks for
    /// `Serialize + DeserializeOwned` there.
    type Args: Clone + Send + Sync + 'static;
    /// A task's input; moved to the worker that runs it.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// A task's output; moved back to the handle.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// What a running task reports as progress (use `()` for none).
    type Progress: Serialize + DeserializeOwned + Send + 'static;
    /// A task's own error.
    type Error: Serialize + DeserializeOwned + fmt::Display + Send + 'static;

    /// Builds a worker's state, on its own thread.
    ///
    /// # Errors
    ///
    /// An error stops this worker; the pool runs with the others.
    fn start(args: Self::Args) -> Result<Self, Self::Error>;

    /// Runs one task.
    ///
    /// # Errors
    ///
    /// The task's error, delivered as [`TaskError::Failed`](crate::TaskError::Failed).
    fn run(
        &mut self,
        input: Self::Input,
        task: &TaskContext<'_, Self>,
    ) -> Result<Self::Output, Self::Error>;
}

/// What a running task can see and say: its cancellation, its progress.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::pool::{Pool, TaskContext, Worker};
///
/// struct Steps;
/// impl Worker for Steps {
///     type Args = ();
///     type Input = u32;
///     type Output = u32;
///     type Progress = u32;
///     type Error = String;
///     fn start(_: ()) -> Result<Self, String> { Ok(Steps) }
///     fn run(&mut self, n: u32, task: &TaskContext<'_, Self>) -> Result<u32, String> {
///         for i in 1..=n {
///             if task.is_cancelled() { return Err("cancelled".into()); }
///             task.progress(i);
///         }
///         Ok(n)
///     }
/// }
///
/// let pool = Pool::<Steps>::builder().workers(1).spawn(()).unwrap();
/// let mut task = pool.submit(3);
/// assert_eq!(task.wait_timeout(Duration::from_secs(5)), Some(Ok(3)));
/// assert_eq!(task.progress(), vec![1, 2, 3]);
/// ```
pub struct TaskContext<'a, W: Worker> {
    cell: &'a TaskCell,
    codecs: &'a CodecSet<W>,
    /// In a rayon pool: the pool, whose idle workers help with
    /// data-parallel work while [`par`](Self::par) runs.
    helpers: Option<&'a Inner<W>>,
    /// In a process worker's child: where progress goes (to the parent).
    sink: Option<&'a (dyn Fn(W::Progress) + Sync + 'a)>,
}

impl<'a, W: Worker> TaskContext<'a, W> {
    /// Whether the task was cancelled or its deadline passed: a long task
    /// should check this and return early (its result is dropped anyway).
    ///
    /// # Examples
    ///
    /// See [`TaskContext`].
    pub fn is_cancelled(&self) -> bool {
        self.cell.cancel.load(Ordering::Acquire) || self.cell.check_deadline(Instant::now())
    }

    /// Reports progress; the handle reads it with
    /// [`TaskHandle::progress`], which keeps the latest 1,024 unread
    /// values. The value moves; with
    /// [`PoolBuilder::copy_messages`] a value that cannot be encoded is
    /// dropped.
    ///
    /// # Examples
    ///
    /// See [`TaskContext`].
    pub fn progress(&self, value: W::Progress) {
        if let Some(sink) = self.sink {
            sink(value);
            return;
        }
        if let Ok(packed) = self.codecs.progress.pack(value, "progress") {
            self.cell.push_progress(packed.envelope.erase());
        }
    }

    /// Runs data-parallel work (`rayon`'s `par_iter`, `join`, `scope`) for
    /// this task.
    ///
    /// In a pool built with [`PoolBuilder::rayon`], the workers are the
    /// threads of the pool's own rayon pool: the work is split over the
    /// idle workers, which this call wakes to help until it returns, and
    /// never over extra threads, so the machine is not oversubscribed.
    /// Rayon work started outside `par` runs on this worker alone. In
    /// other pools `f` runs on rayon's global pool.
    ///
    /// # Examples
    ///
    /// ```
    /// use rayon::prelude::*;
    /// use isolates::pool::{Pool, TaskContext, Worker};
    ///
    /// struct Sum;
    /// impl Worker for Sum {
    ///     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Sum) }
    ///     fn run(&mut self, n: u64, task: &TaskContext<'_, Self>) -> Result<u64, String> {
    ///         Ok(task.par(|| (0..n).into_par_iter().map(|i| i * i).sum()))
    ///     }
    /// }
    /// let pool = Pool::<Sum>::builder().workers(2).rayon(true).spawn(()).unwrap();
    /// assert_eq!(pool.submit(1000).wait(), Ok(332_833_500));
    /// ```
    pub fn par<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let _section = self.helpers.map(|inner| inner.enter_par());
        f()
    }

    /// The task's id (as [`TaskHandle::id`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Pool, TaskContext, Worker};
    /// struct Id;
    /// impl Worker for Id {
    ///     type Args = (); type Input = (); type Output = u64; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Id) }
    ///     fn run(&mut self, _: (), task: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(task.id()) }
    /// }
    /// let pool = Pool::<Id>::builder().workers(1).spawn(()).unwrap();
    /// let task = pool.submit(());
    /// let id = task.id();
    /// assert_eq!(task.wait(), Ok(id));
    /// ```
    pub fn id(&self) -> u64 {
        self.cell.id
    }
}

impl<W: Worker> fmt::Debug for TaskContext<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.cell.id)
            .finish()
    }
}

/// How tasks find a worker.
///
/// # Examples
///
/// ```
/// use isolates::pool::Routing;
/// assert_eq!(Routing::default(), Routing::SharedQueue);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Idle workers pull from one queue: no worker idles while work waits.
    #[default]
    SharedQueue,
    /// Each task goes to the worker with the fewest queued and running.
    LeastLoaded,
    /// Tasks go to the workers in turn.
    RoundRobin,
    /// Tasks with the same [`key`](Task::key) go to the same worker (tasks
    /// without a key are shared). The pool keeps its size fixed (no
    /// autoscaling), so a key keeps its worker.
    KeyAffinity,
}

/// What [`Pool::submit`] does when a bounded queue is full.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::pool::FullPolicy;
/// let p = FullPolicy::Block(Duration::from_millis(100));
/// assert_ne!(p, FullPolicy::Reject);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// The task resolves [`TaskError::Rejected`](crate::TaskError::Rejected)
    /// at once.
    #[default]
    Reject,
    /// The submitter waits at most this long for room, then is rejected.
    Block(Duration),
}

/// A task's priority.
///
/// # Examples
///
/// ```
/// use isolates::pool::TaskPriority;
/// assert!(TaskPriority::High < TaskPriority::Low);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TaskPriority {
    /// Served first.
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Served when nothing else waits, and in one pick of eight.
    Low = 2,
}

/// A task with its options, for [`Pool::submit_task`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::pool::{Task, TaskPriority};
/// let t = Task::new(5u32)
///     .priority(TaskPriority::High)
///     .key("user-7")
///     .timeout(Duration::from_secs(2))
///     .retries(1);
/// # let _ = t;
/// ```
#[derive(Debug, Clone)]
pub struct Task<T> {
    input: T,
    priority: TaskPriority,
    key: Option<u64>,
    deadline: Option<Instant>,
    retries: u32,
}

impl<T> Task<T> {
    /// A normal-priority task with no key, deadline or retries.
    ///
    /// # Examples
    ///
    /// See [`Task`].
    pub fn new(input: T) -> Self {
        Task {
            input,
            priority: TaskPriority::Normal,
            key: None,
            deadline: None,
            retries: 0,
        }
    }

    /// Sets the priority.
    ///
    /// # Examples
    ///
    /// See [`Task`].
    pub fn priority(mut self, priority: TaskPriority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the affinity key (used by [`Routing::KeyAffinity`]).
    ///
    /// # Examples
    ///
    /// See [`Task`].
    pub fn key(mut self, key: impl Hash) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        self.key = Some(hasher.finish());
        self
    }

    /// Resolves [`TaskError::TimedOut`](crate::TaskError::TimedOut) if not
    /// finished within `timeout` from now.
    ///
    /// # Examples
    ///
    /// See [`Task`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadline = crate::time::deadline_after(timeout);
        self
    }

    /// Resolves `TimedOut` if not finished by `deadline`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let t = isolates::pool::Task::new(()).deadline(Instant::now() + Duration::from_secs(1));
    /// # let _ = t;
    /// ```
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Runs the task again, up to `retries` more times, if its worker
    /// panics or is lost while running it (not if it returns an error).
    /// The copy for a second run is the input encoded with the pool's
    /// codec, made on the worker before the first run (the submitter pays
    /// nothing for it). An input that cannot be encoded (over the codec's
    /// limit, a failing `Serialize`) or that holds
    /// [`Transfer`](crate::Transfer)s or [`SendPort`](crate::SendPort)s,
    /// which move and cannot be kept, gets no retry.
    ///
    /// # Examples
    ///
    /// See [`Task`].
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

/// A pool of worker isolates of kind `W`. Cheap to clone; the pool shuts
/// down when the last clone is dropped (queued tasks resolve
/// [`TaskError::PoolClosed`](crate::TaskError::PoolClosed); running ones
/// finish).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::TaskError;
/// use isolates::pool::{Pool, TaskContext, Worker};
///
/// struct Slow;
/// impl Worker for Slow {
///     type Args = ();
///     type Input = u64;
///     type Output = u64;
///     type Progress = ();
///     type Error = String;
///     fn start(_: ()) -> Result<Self, String> { Ok(Slow) }
///     fn run(&mut self, ms: u64, task: &TaskContext<'_, Self>) -> Result<u64, String> {
///         let until = std::time::Instant::now() + Duration::from_millis(ms);
///         while std::time::Instant::now() < until {
///             if task.is_cancelled() { return Err("stopped".into()); }
///             std::thread::sleep(Duration::from_millis(1));
///         }
///         Ok(ms)
///     }
/// }
///
/// let pool = Pool::<Slow>::builder().workers(1).spawn(()).unwrap();
/// let long = pool.submit(10_000);
/// let mut queued = pool.submit(1);
/// assert!(long.cancel());                        // resolves at once
/// assert_eq!(long.wait(), Err(TaskError::Cancelled));
/// assert_eq!(queued.wait_timeout(Duration::from_secs(5)), Some(Ok(1)));
/// ```
pub struct Pool<W: Worker> {
    inner: Arc<Inner<W>>,
}

impl<W: Worker> Clone for Pool<W> {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<W: Worker> Drop for Pool<W> {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.close();
        }
    }
}

impl<W: Worker> fmt::Debug for Pool<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<W: Worker> Pool<W> {
    /// A builder with the defaults: one worker per core
    /// ([`default_workers`]), shared queue, unbounded, nice 10 on Linux,
    /// the default codec.
    ///
    /// The defaults aim at a pool as fast as rayon whose work never takes
    /// frames from the UI thread. On a 2-core machine (figures in
    /// BENCHMARKS.md, 10,000 tasks of ~100 µs, beside rayon's default pool
    /// in the same run):
    ///
    /// - **One worker per core.** Keeping a core free for the UI thread
    ///   (cores − 1 workers) halves a 2-core machine: 0.50× rayon's
    ///   throughput, against 0.97–1.00× with one worker per core. The UI
    ///   thread does not need that core (next point).
    /// - **Nice 10.** A UI thread sharing its core with a busy worker still
    ///   gets it nearly whole: with both workers busy, a UI thread doing
    ///   8 ms of work per 60 Hz frame keeps its idle pace (median 8.3 ms,
    ///   no frame over 16.7 ms of 240), where at nice 5 its median frame
    ///   takes 12.1 ms and at nice 0 16.2 ms, 169 of 240 frames late. With
    ///   2 ms of work a frame the median does not move at any level. Nice
    ///   costs no throughput on a machine with nothing else to run
    ///   ([`nice`](PoolBuilder::nice) says when to turn it off).
    /// - **Wait for a batch, not for each task.** Waiting on the handles in
    ///   submission order wakes the waiting thread once per task, and on
    ///   2 cores each wake takes a core from a worker (0.84–0.88× rayon);
    ///   [`join_all`] and [`Batch`] wake it once (0.97–1.00×).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{join_all, Pool, TaskContext, Worker};
    ///
    /// struct Cube;
    /// impl Worker for Cube {
    ///     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Cube) }
    ///     fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(n * n * n) }
    /// }
    ///
    /// let pool = Pool::<Cube>::builder().spawn(()).unwrap();
    /// assert_eq!(pool.stats().workers, isolates::pool::default_workers());
    /// let cubes = join_all((1..=3).map(|n| pool.submit(n)));
    /// assert_eq!(cubes, [Ok(1), Ok(8), Ok(27)]);
    /// ```
    pub fn builder() -> PoolBuilder<W> {
        PoolBuilder::new()
    }

    /// Submits a normal-priority task; never blocks unless the queue is
    /// bounded with [`FullPolicy::Block`].
    ///
    /// # Examples
    ///
    /// See [`Worker`].
    pub fn submit(&self, input: W::Input) -> TaskHandle<W> {
        self.submit_task(Task::new(input))
    }

    /// Submits a task with its options.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{Pool, Task, TaskContext, TaskPriority, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// # }
    /// let pool = Pool::<W>::builder().workers(1).spawn(()).unwrap();
    /// let t = pool.submit_task(Task::new(9).priority(TaskPriority::High));
    /// assert_eq!(t.wait(), Ok(9));
    /// ```
    pub fn submit_task(&self, task: Task<W::Input>) -> TaskHandle<W> {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cell = Arc::new(TaskCell::new(id, task.deadline));
        let handle = TaskHandle::new(Arc::clone(&cell), Arc::clone(&inner.codecs));
        let input = match inner.codecs.input.pack(task.input, "input") {
            Ok(packed) => packed.envelope.erase(),
            Err((_, e)) => {
                cell.fail(ErrorKind::Codec(e));
                return handle;
            }
        };
        inner.deadlines.watch(&cell, &inner.name);
        let job = Job {
            cell,
            input,
            priority: task.priority,
            key: task.key,
            retries: task.retries,
        };
        if let Some((slot, generation)) = inner.enqueue(job)
            && spawn_worker(inner, slot, generation).is_err()
        {
            inner.retire(slot, generation, "no thread could be started".into());
        }
        handle
    }

    /// Abandons worker `index` (0-based among the pool's slots) as if it
    /// died mid-task: its running task resolves
    /// [`TaskError::WorkerLost`](crate::TaskError::WorkerLost) (or runs
    /// again if it has retries left), and a fresh worker takes the slot
    /// (none once the pool is [stopped](Self::stop) with nothing queued).
    /// The abandoned thread ends when its current `run` returns; its result
    /// is dropped. Returns whether a live worker was there.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// # }
    /// let pool = Pool::<W>::builder().workers(1).spawn(()).unwrap();
    /// assert!(pool.kill_worker(0));
    /// assert_eq!(pool.submit(1).wait(), Ok(1)); // the replacement works
    /// ```
    pub fn kill_worker(&self, index: usize) -> bool {
        self.kill_slot(|slot| slot.alive, Some(index))
    }

    /// Abandons the worker running task `task_id` (as
    /// [`kill_worker`](Self::kill_worker)); whether one ran it.
    #[cfg(feature = "schedule")] // used by the work manager only
    pub(crate) fn kill_task(&self, task_id: u64) -> bool {
        self.kill_slot(
            |slot| slot.alive && slot.running.as_ref().is_some_and(|r| r.cell.id == task_id),
            None,
        )
    }

    /// Kills the first slot (or slot `only`) that `pick` chooses, under
    /// the queue lock so the choice and the kill are one step.
    fn kill_slot(&self, pick: impl Fn(&Slot) -> bool, only: Option<usize>) -> bool {
        let inner = &self.inner;
        let lost = {
            let mut q = inner.queue.lock();
            let found = match only {
                Some(i) => q.slots.get(i).filter(|s| pick(s)).map(|_| i),
                None => q.slots.iter().position(&pick),
            };
            let Some(index) = found else {
                return false;
            };
            let running = q.slots[index].running.take();
            if q.slots[index].released {
                inner.recall(&mut q);
            }
            // A worker in a child process stops where it is.
            #[cfg(target_os = "linux")]
            if let Some(kill) = q.slots[index].child_kill.take() {
                kill.kill();
            }
            // A stopped pool with nothing queued needs no fresh worker
            // (in a child process, a child started only to end): the slot
            // ends with the old thread, which sees the new generation and
            // leaves.
            if q.closed && q.len == 0 && inner.rayon.is_none() {
                q.slots[index].generation += 1;
                q.slots[index].alive = false;
                q.alive -= 1;
                inner.left.notify_all();
                (running, None, index)
            } else {
                // The old thread sees the new generation and leaves; the
                // slot stays alive for the next one.
                (running, Some(q.occupy(index)), index)
            }
        };
        let (lost, generation, index) = lost;
        if let Some(running) = lost {
            inner.lost(running, "killed by Pool::kill_worker".into());
        }
        let Some(generation) = generation else {
            return true;
        };
        inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
        // In a rayon pool the slot's thread starts a fresh worker itself
        // once the abandoned run returns.
        let started = inner.rayon.is_some() || spawn_worker(inner, index, generation).is_ok();
        if !started {
            inner.retire(index, generation, "no thread could be started".into());
        }
        // A wake meant for the slot may have gone to the old thread.
        inner.work.notify_all();
        started
    }

    /// Per-worker figures, one entry per slot (up to the maximum size),
    /// as squadron and worker_manager report them.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let pool = Pool::<W>::builder().workers(1).spawn(()).unwrap();
    /// pool.submit(()).wait().unwrap();
    /// let w = &pool.worker_stats()[0];
    /// assert!(w.alive);
    /// assert_eq!(w.handled, 1);
    /// assert_eq!(w.workload, 0);
    /// assert_eq!(w.max_workload, 1);
    /// ```
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        let now = Instant::now();
        let q = self.inner.queue.lock();
        q.slots
            .iter()
            .enumerate()
            .map(|(index, s)| WorkerStats {
                index,
                alive: s.alive,
                workload: s.workload(),
                max_workload: s.max_workload,
                handled: s.handled,
                errors: s.errors,
                uptime: s
                    .started
                    .filter(|_| s.alive)
                    .map_or(Duration::ZERO, |t| now - t),
                idle: s
                    .idle_since
                    .filter(|_| s.alive && s.running.is_none())
                    .map_or(Duration::ZERO, |t| now - t),
            })
            .collect()
    }

    /// The pool's counters; never blocks for long.
    ///
    /// # Examples
    ///
    /// See [`PoolStats`].
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let (workers, busy, queued) = {
            let mut q = inner.queue.lock();
            let expired = q.purge_resolved();
            let busy = q.slots.iter().filter(|s| s.running.is_some()).count();
            let counts = (q.alive, busy, q.len);
            drop(q);
            expire(expired);
            counts
        };
        let c = &inner.counters;
        PoolStats {
            workers,
            busy,
            queued,
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// Stops the pool; returns at once (see [`join`](Self::join)): queued
    /// tasks resolve [`TaskError::PoolClosed`](crate::TaskError::PoolClosed),
    /// running ones finish, workers exit. Later submissions resolve
    /// `PoolClosed`. Dropping the last clone of the pool stops it the same
    /// way.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let pool = Pool::<W>::builder().workers(1).spawn(()).unwrap();
    /// pool.stop();
    /// assert_eq!(pool.submit(()).wait(), Err(isolates::TaskError::PoolClosed));
    /// ```
    pub fn stop(&self) {
        self.inner.close();
    }

    /// Waits at most `timeout` for the pool to end after a
    /// [`stop`](Self::stop): its running tasks finished and every worker
    /// gone from its loop. Returns whether it ended. `Duration::MAX` waits
    /// for good; called from one of the pool's own tasks it waits for
    /// itself, until `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// use std::time::Duration;
    /// let pool = Pool::<W>::builder().workers(2).spawn(()).unwrap();
    /// assert!(!pool.is_finished());
    /// pool.stop();
    /// assert!(pool.join(Duration::from_secs(10)));
    /// assert!(pool.is_finished());
    /// ```
    pub fn join(&self, timeout: Duration) -> bool {
        self.inner.wait_ended(crate::time::deadline_after(timeout))
    }

    /// Whether the pool has ended (stopped, no worker left); never blocks.
    ///
    /// # Examples
    ///
    /// See [`join`](Self::join).
    pub fn is_finished(&self) -> bool {
        self.inner.wait_ended(Some(Instant::now()))
    }
}

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

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::envelope::Envelope;
use crate::codec::{Bincode, Codec};
use crate::error::CodecError;
use crate::error::SpawnError;
use crate::port::{DynCodec, dyn_codec};
use crate::unwind;

mod batch;
mod deadline;
mod main_thread;

/// The stack of the thread that holds idle rayon workers' waits: it only
/// waits on a condition variable.
const IDLE_WAITS_STACK: usize = 128 * 1024;
#[cfg(target_os = "linux")]
mod remote;
pub(crate) mod task;
#[cfg(target_os = "linux")]
pub(crate) use remote::serve_worker;

pub use batch::{Batch, join_all};
pub use main_thread::MainThread;
use task::{CodecSet, ErrorKind, Outcome, TaskCell};
pub use task::{TaskHandle, TaskState};

pub(crate) type Codecs<W> = CodecSet<W>;

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
/// let pool = Pool::<Squares>::builder().workers(2).build(1).unwrap();
/// let task = pool.submit(0..10);
/// assert_eq!(task.wait(), Ok(285));
/// ```
pub trait Worker: Sized + 'static {
    /// What each worker is started from; each worker gets its own clone.
    type Args: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
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
/// let pool = Pool::<Steps>::builder().workers(1).build(()).unwrap();
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
    /// A remote worker's context: progress goes to `sink`.
    #[cfg(feature = "nats")]
    pub(crate) fn remote(
        cell: &'a TaskCell,
        codecs: &'a CodecSet<W>,
        sink: &'a (dyn Fn(W::Progress) + Sync + 'a),
    ) -> Self {
        TaskContext {
            cell,
            codecs,
            helpers: None,
            sink: Some(sink),
        }
    }

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
    /// let pool = Pool::<Sum>::builder().workers(2).rayon(true).build(()).unwrap();
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
    /// let pool = Pool::<Id>::builder().workers(1).build(()).unwrap();
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

/// Configures a [`Pool`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::pool::{FullPolicy, Pool, Routing, TaskContext, Worker};
/// # struct W;
/// # impl Worker for W {
/// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
/// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
/// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
/// # }
/// let pool = Pool::<W>::builder()
///     .name("thumbnails")
///     .autoscale(1, 4, Duration::from_secs(30))
///     .routing(Routing::SharedQueue)
///     .queue_bound(1000, FullPolicy::Block(Duration::from_millis(50)))
///     .build(())
///     .unwrap();
/// assert_eq!(pool.submit(3).wait(), Ok(3));
/// ```
pub struct PoolBuilder<W: Worker, C: Codec = Bincode> {
    name: String,
    min: usize,
    max: usize,
    idle: Duration,
    routing: Routing,
    bound: Option<(usize, FullPolicy)>,
    nice: Option<i32>,
    rayon: bool,
    copy_messages: bool,
    process: Option<crate::process::ProcessOptions>,
    #[cfg(feature = "nats")]
    nats: Option<(crate::remote::NatsOptions, String)>,
    codec: C,
    _worker: std::marker::PhantomData<fn() -> W>,
}

impl<W: Worker, C: Codec> fmt::Debug for PoolBuilder<W, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("name", &self.name)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("routing", &self.routing)
            .field("bound", &self.bound)
            .field("nice", &self.nice)
            .field("rayon", &self.rayon)
            .finish_non_exhaustive()
    }
}

/// The number of workers a pool starts with by default: one per core (as
/// [`std::thread::available_parallelism`] counts them), at least one. The
/// UI thread needs no core of its own: the workers run below its priority
/// (see [`Pool::builder`] for the figures).
///
/// # Examples
///
/// ```
/// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
/// assert_eq!(isolates::pool::default_workers(), cores);
/// ```
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<W: Worker, C: Codec> PoolBuilder<W, C> {
    /// Names the pool (its threads are `name-0`, `name-1`, ...).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A fixed number of workers (default [`default_workers`]).
    ///
    /// # Examples
    ///
    /// See [`Worker`].
    pub fn workers(mut self, n: usize) -> Self {
        self.min = n.max(1);
        self.max = n.max(1);
        self
    }

    /// Between `min` and `max` workers: one is added when work waits and
    /// none is idle; one idle for `idle` exits while more than `min` run.
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn autoscale(mut self, min: usize, max: usize, idle: Duration) -> Self {
        self.min = min;
        self.max = max.max(min).max(1);
        self.idle = idle;
        self
    }

    /// Sets the routing (default [`Routing::SharedQueue`]).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// Bounds the queued tasks (running ones not counted), with what to do
    /// when full (default: unbounded).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn queue_bound(mut self, bound: usize, policy: FullPolicy) -> Self {
        self.bound = Some((bound, policy));
        self
    }

    /// The nice level of worker threads on Linux (default 10: below the UI
    /// thread; [`Pool::builder`] says why); `None` leaves them as spawned,
    /// at the priority of the thread that builds the pool. A level below
    /// the threads' current one is ignored: a pool only ever lowers
    /// priority. Ignored on other systems.
    ///
    /// Nice orders only threads that compete for a core: on a machine with
    /// nothing else to run, niced workers are as fast as any. They do yield
    /// to every other process too, so batch work that must win over other
    /// programs (a build server, a benchmark against rayon on a busy
    /// machine) may want `None`.
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
    /// let b = Pool::<W>::builder().nice(None);
    /// # let _ = b;
    /// ```
    pub fn nice(mut self, nice: Option<i32>) -> Self {
        self.nice = nice;
        self
    }

    /// Runs the workers as the threads of a rayon pool of their own, so
    /// tasks can split data-parallel work ([`TaskContext::par`]) over the
    /// idle workers without starting more threads than the pool has. The
    /// pool then keeps a fixed size (the maximum; no autoscaling), idle
    /// workers help with a task's `par` work while it runs and sleep
    /// otherwise (one more thread, which computes nothing, holds their
    /// waits), and a killed worker's replacement starts on the same thread
    /// once the abandoned `run` returns.
    ///
    /// # Examples
    ///
    /// See [`TaskContext::par`].
    pub fn rayon(mut self, rayon: bool) -> Self {
        self.rayon = rayon;
        self
    }

    /// Dart's copy semantics: every input, output, progress value, error
    /// and the workers' start arguments are encoded with the
    /// [codec](Self::codec) by their sender and decoded by their receiver,
    /// under its limit. Default `false`: values move, so
    /// [`submit`](Pool::submit) and [`TaskHandle::try_take`] cost the same
    /// whatever a payload's size.
    ///
    /// Copy to enforce the codec's size limit on inputs and outputs, or to
    /// prove in tests that the worker's types survive encoding before the
    /// pool is moved to child processes or other machines. Then the
    /// submitter pays the input's encode and the taker the output's decode.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{Pool, TaskContext, Worker};
    /// use isolates::{Bincode, CodecError, TaskError};
    ///
    /// struct Len;
    /// impl Worker for Len {
    ///     type Args = (); type Input = Vec<u8>; type Output = usize; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Len) }
    ///     fn run(&mut self, v: Vec<u8>, _: &TaskContext<'_, Self>) -> Result<usize, String> { Ok(v.len()) }
    /// }
    ///
    /// let copied = Pool::<Len>::builder()
    ///     .workers(1)
    ///     .copy_messages(true)
    ///     .codec(Bincode::<1024>::limited())
    ///     .build(())
    ///     .unwrap();
    /// let err = copied.submit(vec![0; 4096]).wait().unwrap_err();
    /// assert!(matches!(err, TaskError::Codec(CodecError::TooLarge { .. })));
    ///
    /// let moved = Pool::<Len>::builder().workers(1).build(()).unwrap();
    /// assert_eq!(moved.submit(vec![0; 4096]).wait(), Ok(4096));
    /// ```
    pub fn copy_messages(mut self, copy: bool) -> Self {
        self.copy_messages = copy;
        self
    }

    /// Runs each worker in a child process of its own (see
    /// [`process`](crate::process)): a task's panic, abort, segfault or
    /// memory blow-up ends only that child, which the pool replaces; a
    /// task deadline or [`kill_worker`](Pool::kill_worker) kills the
    /// child, so the work really stops. Inputs, outputs, progress values
    /// and errors are encoded with the [codec](Self::codec). The worker
    /// type must be registered with
    /// [`Registry::worker`](crate::process::Registry::worker) first thing
    /// in `main`. Cancellation reaches a running task in the child within
    /// about 20 ms ([`TaskContext::is_cancelled`] turns true there).
    /// Not with [`rayon`](Self::rayon): its workers are rayon's threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{Pool, TaskContext, Worker};
    /// use isolates::process::{ProcessOptions, Registry};
    ///
    /// struct Pid;
    /// impl Worker for Pid {
    ///     type Args = (); type Input = (); type Output = u32; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Pid) }
    ///     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<u32, String> {
    ///         Ok(std::process::id())
    ///     }
    /// }
    ///
    /// fn main() {
    ///     Registry::new().worker::<Pid>().init();
    ///     # #[cfg(target_os = "linux")] {
    ///     let pool = Pool::<Pid>::builder()
    ///         .workers(2)
    ///         .process(ProcessOptions::new().max_memory(1 << 30))
    ///         .build(())
    ///         .unwrap();
    ///     assert_ne!(pool.submit(()).wait(), Ok(std::process::id()));
    ///     # }
    /// }
    /// ```
    pub fn process(mut self, options: crate::process::ProcessOptions) -> Self {
        self.process = Some(options);
        self
    }

    /// Runs the pool's tasks on workers on other machines, carried by NATS
    /// JetStream (see [`remote`](crate::remote); the `nats` feature):
    /// tasks go to the stream of pool `name` on the server in `options`,
    /// and worker processes started with
    /// [`remote::serve`](crate::remote::serve) for the same `name` run
    /// them. The handles behave as a local pool's. The pool's own slots
    /// become the [tasks on the wire](crate::remote::NatsOptions::in_flight);
    /// the start arguments given to [`build`](Self::build) are unused
    /// (the workers get theirs from `serve`). Inputs, outputs, progress
    /// and errors are encoded with the [codec](Self::codec), which the
    /// workers must share. Not with [`rayon`](Self::rayon) or
    /// [`process`](Self::process).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use isolates::pool::{Pool, TaskContext, Worker};
    /// use isolates::remote::NatsOptions;
    ///
    /// struct Square;
    /// impl Worker for Square {
    ///     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Square) }
    ///     fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(n * n) }
    /// }
    ///
    /// let pool = Pool::<Square>::builder()
    ///     .nats(NatsOptions::new("nats://127.0.0.1:4222").in_flight(32), "squares")
    ///     .build(())?;
    /// assert_eq!(pool.submit(9).wait(), Ok(81));
    /// # Ok::<(), isolates::SpawnError>(())
    /// ```
    #[cfg(feature = "nats")]
    pub fn nats(
        mut self,
        options: impl Into<crate::remote::NatsOptions>,
        name: impl Into<String>,
    ) -> Self {
        self.nats = Some((options.into(), name.into()));
        self
    }

    /// The codec for inputs, outputs, progress and errors where they are
    /// encoded: with [`copy_messages`](Self::copy_messages), for a retry's
    /// copy of an input, and wherever they cross a real boundary.
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
    /// let b = Pool::<W>::builder().codec(isolates::Bincode::<{ 1 << 20 }>::limited());
    /// # let _ = b;
    /// ```
    pub fn codec<C2: Codec>(self, codec: C2) -> PoolBuilder<W, C2> {
        PoolBuilder {
            name: self.name,
            min: self.min,
            max: self.max,
            idle: self.idle,
            routing: self.routing,
            bound: self.bound,
            nice: self.nice,
            rayon: self.rayon,
            copy_messages: self.copy_messages,
            process: self.process,
            #[cfg(feature = "nats")]
            nats: self.nats,
            codec,
            _worker: std::marker::PhantomData,
        }
    }

    /// Starts the pool's first workers (the minimum) with `args`.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Args`] if `args` cannot be encoded (only with
    /// [`copy_messages`](Self::copy_messages)),
    /// [`SpawnError::Thread`] if no worker thread can be started.
    ///
    /// # Examples
    ///
    /// See [`Worker`].
    pub fn build(#[allow(unused_mut)] mut self, args: W::Args) -> Result<Pool<W>, SpawnError> {
        #[cfg(target_os = "linux")]
        let process = match &self.process {
            Some(_) if self.rayon => {
                return Err(SpawnError::Unsupported(
                    "a rayon pool's workers are threads of its rayon pool: process workers need rayon(false)",
                ));
            }
            Some(options) => Some(remote::WorkerSpec::<W> {
                options: options.clone(),
                wire: Arc::new(crate::backend::CodecWire(self.codec.clone())),
                key: crate::process::worker_key::<W, C>(),
                test_entry: crate::process::lookup_worker::<W, C>()?,
            }),
            None => None,
        };
        #[cfg(not(target_os = "linux"))]
        if self.process.is_some() {
            crate::process::lookup_worker::<W, C>()?;
        }
        #[cfg(feature = "nats")]
        let nats = match &self.nats {
            Some(_) if self.rayon || self.process.is_some() => {
                return Err(SpawnError::Unsupported(
                    "a NATS pool's workers are remote: not with rayon(true) or process(..)",
                ));
            }
            Some((options, name)) => {
                self.min = options.in_flight;
                self.max = options.in_flight;
                let client = crate::backend::nats::client::Client::<W>::connect(
                    options,
                    name,
                    self.codec.clone(),
                )
                .map_err(SpawnError::Remote)?;
                Some(client)
            }
            None => None,
        };
        let copy = self.copy_messages;
        let codecs = Arc::new(CodecSet::<W> {
            input: dyn_codec(&self.codec, copy),
            output: dyn_codec(&self.codec, copy),
            progress: dyn_codec(&self.codec, copy),
            error: dyn_codec(&self.codec, copy),
        });
        let args_codec: DynCodec<W::Args> = dyn_codec(&self.codec, copy);
        if copy {
            // Every worker (and every restart) encodes them again: fail
            // here, not in a worker.
            args_codec
                .encode_copy(&args, "start argument")
                .map_err(SpawnError::Args)?;
        }
        let fixed = self.routing == Routing::KeyAffinity || self.rayon;
        let max = if self.routing == Routing::KeyAffinity {
            self.min.max(1)
        } else {
            self.max
        };
        let min = if fixed { max } else { self.min };
        let rayon = if self.rayon {
            let nice = self.nice;
            let name = self.name.clone();
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(max)
                    .thread_name(move |i| format!("{name}-{i}"))
                    .start_handler(move |_| lower_priority(nice))
                    .build()
                    .map_err(|e| SpawnError::Thread(e.to_string()))?,
            )
        } else {
            None
        };
        // Idle workers of a rayon pool wait for a task on this thread's
        // behalf while a `par` section runs: a rayon worker that waits on
        // another rayon pool steals its own pool's work meanwhile and
        // sleeps when there is none, woken by rayon when work appears.
        let idle_waits = if self.rayon {
            let name = self.name.clone();
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("{name}-idle"))
                .stack_size(IDLE_WAITS_STACK)
                .build();
            match built {
                Ok(pool) => Some(pool),
                // Workers then only run tasks: `par` runs on its caller.
                Err(e) => {
                    tracing::warn!(target: "isolates", error = %e,
                        "no thread for idle rayon workers: par work runs on its task's worker");
                    None
                }
            }
        } else {
            None
        };
        let inner = Arc::new(Inner {
            name: self.name,
            min,
            max,
            idle: self.idle,
            routing: self.routing,
            bound: self.bound,
            nice: self.nice,
            args,
            args_codec,
            codecs,
            queue: Mutex::new(Queues::new(max)),
            work: Condvar::new(),
            rejoin: Condvar::new(),
            room: Condvar::new(),
            next_id: AtomicU64::new(0),
            counters: PoolCounters::default(),
            handles: AtomicUsize::new(1),
            rayon,
            idle_waits,
            deadlines: Arc::default(),
            #[cfg(target_os = "linux")]
            process,
            #[cfg(feature = "nats")]
            nats,
        });
        if let Some(rayon) = &inner.rayon {
            {
                let mut q = inner.queue.lock();
                for slot in 0..max {
                    q.occupy(slot);
                }
            }
            let broadcast_inner = Arc::clone(&inner);
            rayon.spawn_broadcast(move |ctx| rayon_worker(&broadcast_inner, ctx.index()));
            return Ok(Pool { inner });
        }
        for _ in 0..min.max(1) {
            let claimed = {
                let mut q = inner.queue.lock();
                q.free_slot().map(|slot| (slot, q.occupy(slot)))
            };
            let Some((slot, generation)) = claimed else {
                break;
            };
            if let Err(e) = spawn_worker(&inner, slot, generation) {
                inner.close();
                return Err(e);
            }
        }
        Ok(Pool { inner })
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
/// let pool = Pool::<Slow>::builder().workers(1).build(()).unwrap();
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

/// A snapshot of a pool's counters.
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
/// let pool = Pool::<W>::builder().workers(2).build(()).unwrap();
/// pool.submit(()).wait().unwrap();
/// let stats = pool.stats();
/// assert_eq!(stats.workers, 2);
/// assert_eq!(stats.succeeded, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Worker threads alive.
    pub workers: usize,
    /// Workers running a task now.
    pub busy: usize,
    /// Tasks waiting in the queues.
    pub queued: usize,
    /// Tasks that returned a value.
    pub succeeded: u64,
    /// Tasks that returned their own error.
    pub failed: u64,
    /// Tasks whose worker panicked (each run counted, retries included).
    pub panicked: u64,
    /// Workers started again after a panic or a kill.
    pub restarts: u64,
    /// Tasks rejected because the queue was full.
    pub rejected: u64,
}

/// One worker slot's figures (see [`Pool::worker_stats`]).
///
/// # Examples
///
/// See [`Pool::worker_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// The slot's index (as [`Pool::kill_worker`] takes it).
    pub index: usize,
    /// Whether a worker runs in the slot.
    pub alive: bool,
    /// Tasks queued for it (routed to it) plus the one it runs.
    pub workload: usize,
    /// The highest workload seen.
    pub max_workload: usize,
    /// Tasks it finished (any outcome), across restarts.
    pub handled: u64,
    /// Of those, the ones that did not give a value.
    pub errors: u64,
    /// Since the slot's current worker started.
    pub uptime: Duration,
    /// Since it last finished a task, while it waits; zero while busy.
    pub idle: Duration,
}

#[derive(Default)]
struct PoolCounters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    restarts: AtomicU64,
    rejected: AtomicU64,
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
    /// let pool = Pool::<Cube>::builder().build(()).unwrap();
    /// assert_eq!(pool.stats().workers, isolates::pool::default_workers());
    /// let cubes = join_all((1..=3).map(|n| pool.submit(n)));
    /// assert_eq!(cubes, [Ok(1), Ok(8), Ok(27)]);
    /// ```
    pub fn builder() -> PoolBuilder<W> {
        let n = default_workers();
        PoolBuilder {
            name: "pool".into(),
            min: n,
            max: n,
            idle: Duration::from_secs(30),
            routing: Routing::SharedQueue,
            bound: None,
            nice: Some(10),
            rayon: false,
            copy_messages: false,
            process: None,
            #[cfg(feature = "nats")]
            nats: None,
            codec: Bincode::new(),
            _worker: std::marker::PhantomData,
        }
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
    /// let pool = Pool::<W>::builder().workers(1).build(()).unwrap();
    /// let t = pool.submit_task(Task::new(9).priority(TaskPriority::High));
    /// assert_eq!(t.wait(), Ok(9));
    /// ```
    pub fn submit_task(&self, task: Task<W::Input>) -> TaskHandle<W> {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cell = Arc::new(TaskCell::new(id, task.deadline));
        let handle = TaskHandle {
            cell: Arc::clone(&cell),
            codecs: Arc::clone(&inner.codecs),
            taken: false,
        };
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
        inner.enqueue(job);
        handle
    }

    /// Abandons worker `index` (0-based among the pool's slots) as if it
    /// died mid-task: its running task resolves
    /// [`TaskError::WorkerLost`](crate::TaskError::WorkerLost) (or runs
    /// again if it has retries left), and a fresh worker takes the slot.
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
    /// let pool = Pool::<W>::builder().workers(1).build(()).unwrap();
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
            // The old thread sees the new generation and leaves; the slot
            // stays alive for the next one.
            (running, q.occupy(index), index)
        };
        let (lost, generation, index) = lost;
        if let Some(running) = lost {
            inner.lost(running, "killed by Pool::kill_worker".into());
        }
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
    /// let pool = Pool::<W>::builder().workers(1).build(()).unwrap();
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

    /// Shuts the pool down: queued tasks resolve
    /// [`TaskError::PoolClosed`](crate::TaskError::PoolClosed), running
    /// ones finish, workers exit. Later submissions resolve `PoolClosed`.
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
    /// let pool = Pool::<W>::builder().workers(1).build(()).unwrap();
    /// pool.shutdown();
    /// assert_eq!(pool.submit(()).wait(), Err(isolates::TaskError::PoolClosed));
    /// ```
    pub fn shutdown(&self) {
        self.inner.close();
    }
}

/// A queued task.
struct Job {
    cell: Arc<TaskCell>,
    input: Envelope,
    priority: TaskPriority,
    key: Option<u64>,
    retries: u32,
}

/// A task being run, as its slot records it.
struct Running {
    cell: Arc<TaskCell>,
    /// A copy of the input for a retry.
    retry: Option<(Envelope, u32)>,
    priority: TaskPriority,
    key: Option<u64>,
}

#[derive(Default)]
struct Slot {
    alive: bool,
    /// Increased by a kill: a thread of an older generation leaves.
    generation: u64,
    running: Option<Running>,
    local: [VecDeque<Job>; 3],
    local_len: usize,
    /// When the current worker of this slot started.
    started: Option<Instant>,
    /// When it last finished a task (or started, if it has none yet).
    idle_since: Option<Instant>,
    handled: u64,
    errors: u64,
    max_workload: usize,
    /// Its idle rayon worker is released to help with `par` work.
    released: bool,
    /// Kills the current worker's child process.
    #[cfg(target_os = "linux")]
    child_kill: Option<Arc<crate::backend::process::parent::KillSwitch>>,
}

impl Slot {
    fn workload(&self) -> usize {
        self.local_len + usize::from(self.running.is_some())
    }

    fn note_workload(&mut self) {
        self.max_workload = self.max_workload.max(self.workload());
    }
}

struct Queues {
    shared: [VecDeque<Job>; 3],
    slots: Vec<Slot>,
    /// Queued tasks, shared and local.
    len: usize,
    alive: usize,
    /// Workers waiting on `work`.
    idle: usize,
    closed: bool,
    picks: u64,
    next_slot: usize,
    /// Tasks inside [`TaskContext::par`] (rayon mode).
    par: usize,
    /// Idle rayon workers released to help with `par` work.
    released: usize,
    /// Moves on when released workers must come back (work for them, a
    /// kill, the close).
    epoch: u64,
}

impl Queues {
    fn new(max: usize) -> Self {
        Queues {
            shared: Default::default(),
            slots: (0..max).map(|_| Slot::default()).collect(),
            len: 0,
            alive: 0,
            idle: 0,
            closed: false,
            picks: 0,
            next_slot: 0,
            par: 0,
            released: 0,
            epoch: 0,
        }
    }

    /// Gives `slot` to a new worker thread: a new generation (an older
    /// thread of the slot leaves when it sees it), counted alive. Returns
    /// the generation the new thread must carry.
    fn occupy(&mut self, slot: usize) -> u64 {
        let now = Instant::now();
        let record = &mut self.slots[slot];
        record.generation += 1;
        record.started = Some(now);
        record.idle_since = Some(now);
        if !record.alive {
            record.alive = true;
            self.alive += 1;
        }
        record.generation
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| !s.alive)
    }

    /// The order in which priorities are looked at for this pick: high
    /// first, but one pick in four starts at normal and one in eight at
    /// low, so no class starves.
    fn order(&mut self) -> [usize; 3] {
        self.picks += 1;
        if self.picks.is_multiple_of(8) {
            [2, 1, 0]
        } else if self.picks.is_multiple_of(4) {
            [1, 0, 2]
        } else {
            [0, 1, 2]
        }
    }

    fn take(&mut self, slot: usize) -> Option<Job> {
        let order = self.order();
        for class in order {
            if let Some(job) = self.slots[slot].local[class].pop_front() {
                self.slots[slot].local_len -= 1;
                self.len -= 1;
                return Some(job);
            }
        }
        for class in order {
            if let Some(job) = self.shared[class].pop_front() {
                self.len -= 1;
                return Some(job);
            }
        }
        None
    }

    fn push_local(&mut self, slot: usize, job: Job) {
        let class = job.priority as usize;
        self.slots[slot].local[class].push_back(job);
        self.slots[slot].local_len += 1;
        self.slots[slot].note_workload();
        self.len += 1;
    }

    fn push_shared(&mut self, job: Job, front: bool) {
        let class = job.priority as usize;
        if front {
            self.shared[class].push_front(job);
        } else {
            self.shared[class].push_back(job);
        }
        self.len += 1;
    }

    /// Drops queued tasks that resolved (cancelled) or whose deadline
    /// passed: they no longer hold a place. Returns them, to resolve (the
    /// expired ones) and drop once the lock is released: resolving runs
    /// callbacks, and a moved input's `Drop` is user code.
    #[must_use = "the expired tasks must be resolved"]
    fn purge_resolved(&mut self) -> Vec<Job> {
        let now = Instant::now();
        let live = |job: &Job| {
            job.cell.state() != TaskState::Done && job.cell.deadline.is_none_or(|d| now < d)
        };
        let mut purged = Vec::new();
        let mut take_dead = |q: &mut VecDeque<Job>| {
            if q.iter().all(live) {
                return 0;
            }
            let before = purged.len();
            let mut kept = VecDeque::with_capacity(q.len());
            for job in q.drain(..) {
                if live(&job) {
                    kept.push_back(job);
                } else {
                    purged.push(job);
                }
            }
            *q = kept;
            purged.len() - before
        };
        let mut removed = 0;
        for q in &mut self.shared {
            removed += take_dead(q);
        }
        for slot in &mut self.slots {
            let mut here = 0;
            for q in &mut slot.local {
                here += take_dead(q);
            }
            slot.local_len -= here;
            removed += here;
        }
        self.len -= removed;
        purged
    }

    fn drain_all(&mut self) -> Vec<Job> {
        let mut all = Vec::with_capacity(self.len);
        for q in &mut self.shared {
            all.extend(q.drain(..));
        }
        for slot in &mut self.slots {
            for q in &mut slot.local {
                all.extend(q.drain(..));
            }
            slot.local_len = 0;
        }
        self.len = 0;
        all
    }
}

struct Inner<W: Worker> {
    name: String,
    min: usize,
    max: usize,
    idle: Duration,
    routing: Routing,
    bound: Option<(usize, FullPolicy)>,
    nice: Option<i32>,
    args: W::Args,
    args_codec: DynCodec<W::Args>,
    codecs: Arc<CodecSet<W>>,
    queue: Mutex<Queues>,
    /// Workers wait here for tasks.
    work: Condvar,
    /// Rayon workers released to help with `par` work wait here (on the
    /// `idle_waits` thread) for [`Queues::epoch`] to change.
    rejoin: Condvar,
    /// Submitters wait here for room in a bounded queue.
    room: Condvar,
    next_id: AtomicU64,
    counters: PoolCounters,
    handles: AtomicUsize,
    /// The workers' threads, in a rayon pool.
    rayon: Option<rayon::ThreadPool>,
    /// In rayon mode: one thread on which released workers wait.
    idle_waits: Option<rayon::ThreadPool>,
    deadlines: Arc<deadline::Deadlines>,
    /// Workers in child processes.
    #[cfg(target_os = "linux")]
    process: Option<remote::WorkerSpec<W>>,
    /// Workers on other machines: each slot carries a task over NATS.
    #[cfg(feature = "nats")]
    nats: Option<Arc<crate::backend::nats::client::Client<W>>>,
}

impl<W: Worker> Inner<W> {
    /// A worker's start arguments: a clone moved to it, or their encoding.
    /// A panicking `Clone` is an error here, not an unwinding submitter or
    /// a dead worker.
    fn start_args(&self) -> Result<Envelope<W::Args>, CodecError> {
        if self.args_codec.copies() {
            return self.args_codec.encode_copy(&self.args, "start argument");
        }
        match crate::unwind::catch(|| self.args.clone()) {
            Ok(args) => Ok(Envelope::Moved(args)),
            Err(caught) => Err(CodecError::Encode(format!(
                "cloning the start arguments panicked: {}",
                caught.message
            ))),
        }
    }

    fn enqueue(self: &Arc<Self>, job: Job) {
        let mut q = self.queue.lock();
        if q.closed {
            drop(q);
            job.cell.fail(ErrorKind::Closed);
            return;
        }
        if let Some((bound, policy)) = self.bound {
            if q.len >= bound {
                let expired = q.purge_resolved();
                MutexGuard::unlocked(&mut q, || expire(expired));
            }
            if q.len >= bound {
                let room = match policy {
                    FullPolicy::Reject => false,
                    FullPolicy::Block(wait) => {
                        let deadline = crate::time::deadline_after(wait);
                        loop {
                            if q.len < bound || q.closed {
                                break true;
                            }
                            // Cancelled or timed-out tasks free their place
                            // too; they say nothing, so look now and then.
                            let slice = Instant::now() + Duration::from_millis(10);
                            let until = deadline.map_or(slice, |d| d.min(slice));
                            self.room.wait_until(&mut q, until);
                            let expired = q.purge_resolved();
                            MutexGuard::unlocked(&mut q, || expire(expired));
                            if deadline.is_some_and(|d| Instant::now() >= d) {
                                break q.len < bound;
                            }
                        }
                    }
                };
                if q.closed {
                    drop(q);
                    job.cell.fail(ErrorKind::Closed);
                    return;
                }
                if !room {
                    drop(q);
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    job.cell.fail(ErrorKind::Rejected);
                    return;
                }
            }
        }
        let target = self.route(&mut q, &job);
        match target {
            Some(slot) => q.push_local(slot, job),
            None => q.push_shared(job, false),
        }
        let recall = match target {
            Some(slot) => q.slots[slot].released,
            None => q.len > q.idle,
        };
        if recall {
            self.recall(&mut q);
        }
        // Grow when more work waits than idle workers can take (a worker
        // just woken still counts as idle until it runs).
        let grow = q.len > q.idle && q.alive < self.max && !q.closed && self.rayon.is_none();
        let claimed = if grow {
            q.free_slot().map(|slot| (slot, q.occupy(slot)))
        } else {
            None
        };
        drop(q);
        match target {
            // Local work: wake everyone so its owner sees it.
            Some(_) => {
                self.work.notify_all();
            }
            None => {
                self.work.notify_one();
            }
        }
        if let Some((slot, generation)) = claimed
            && spawn_worker(self, slot, generation).is_err()
        {
            self.retire(slot, generation, "no thread could be started".into());
        }
    }

    /// Ends the worker of `slot` (if still of `generation`): its local work
    /// goes to the shared queue. If no worker is left, queued tasks resolve
    /// `WorkerLost`: nobody would run them.
    fn retire(&self, slot: usize, generation: u64, why: String) {
        let orphans = {
            let mut q = self.queue.lock();
            if q.slots[slot].generation != generation || !q.slots[slot].alive {
                return;
            }
            q.slots[slot].alive = false;
            q.alive -= 1;
            let jobs: Vec<Job> = q.slots[slot]
                .local
                .iter_mut()
                .flat_map(|d| d.drain(..))
                .collect();
            q.slots[slot].local_len = 0;
            q.len -= jobs.len();
            for job in jobs {
                q.push_shared(job, false);
            }
            if q.len > q.idle {
                self.recall(&mut q);
            }
            if q.alive == 0 {
                q.drain_all()
            } else {
                Vec::new()
            }
        };
        self.work.notify_all();
        for job in orphans {
            job.cell.fail(ErrorKind::WorkerLost(format!(
                "no worker is running in the pool: {why}"
            )));
        }
    }

    /// The slot a task goes to, or `None` for the shared queue.
    fn route(&self, q: &mut Queues, job: &Job) -> Option<usize> {
        match self.routing {
            Routing::SharedQueue => None,
            Routing::KeyAffinity => job
                .key
                .map(|k| (k % q.slots.len() as u64) as usize)
                .filter(|&slot| q.slots[slot].alive),
            Routing::RoundRobin => {
                let alive: Vec<usize> = (0..q.slots.len()).filter(|&i| q.slots[i].alive).collect();
                if alive.is_empty() {
                    return None;
                }
                let pick = alive[q.next_slot % alive.len()];
                q.next_slot = q.next_slot.wrapping_add(1);
                Some(pick)
            }
            Routing::LeastLoaded => (0..q.slots.len())
                .filter(|&i| q.slots[i].alive)
                .min_by_key(|&i| q.slots[i].workload()),
        }
    }

    /// A worker's running task was lost: retry it or resolve it.
    fn lost(&self, running: Running, why: String) {
        let Running {
            cell,
            retry,
            priority,
            key,
        } = running;
        if let Some((input, retries)) = retry
            && retries > 0
            && cell.requeue()
        {
            let job = Job {
                cell,
                input,
                priority,
                key,
                retries: retries - 1,
            };
            let mut q = self.queue.lock();
            if q.closed {
                drop(q);
                job.cell.fail(ErrorKind::Closed);
                return;
            }
            q.push_shared(job, true);
            if q.len > q.idle {
                self.recall(&mut q);
            }
            drop(q);
            self.work.notify_one();
            return;
        }
        cell.fail(ErrorKind::WorkerLost(why));
    }

    fn close(&self) {
        self.deadlines.close();
        let jobs = {
            let mut q = self.queue.lock();
            q.closed = true;
            self.recall(&mut q);
            q.drain_all()
        };
        self.work.notify_all();
        self.room.notify_all();
        for job in jobs {
            job.cell.fail(ErrorKind::Closed);
        }
    }

    /// Takes the next task for `slot`, waiting; `None` when the worker
    /// should exit (closed, reaped, or replaced).
    ///
    /// An idle worker sleeps until something happens: a task, the close, a
    /// kill, and, for a worker above the minimum, the end of its idle time
    /// (one wake-up, armed only then). An idle rayon worker, while a task
    /// runs `par` work, is released to help with it (see
    /// [`wait_released`](Self::wait_released)).
    fn next(&self, slot: usize, generation: u64) -> Option<Job> {
        // The task just finished no longer needs its deadline watched.
        self.deadlines.forget_resolved();
        let mut q = self.queue.lock();
        let idle_since = Instant::now();
        loop {
            if q.slots[slot].generation != generation {
                return None;
            }
            if let Some(job) = q.take(slot) {
                drop(q);
                self.room.notify_one();
                return Some(job);
            }
            if q.closed {
                q.slots[slot].alive = false;
                q.alive -= 1;
                return None;
            }
            // Reap an idle worker above the minimum (never with local work:
            // its queue is empty here).
            if q.alive > self.min && idle_since.elapsed() >= self.idle {
                q.slots[slot].alive = false;
                q.alive -= 1;
                return None;
            }
            if q.par > 0
                && let Some(idle_waits) = &self.idle_waits
            {
                let seen = q.epoch;
                q.slots[slot].released = true;
                q.released += 1;
                MutexGuard::unlocked(&mut q, || {
                    idle_waits.install(|| self.wait_released(seen));
                });
                q.slots[slot].released = false;
                q.released -= 1;
                continue;
            }
            let reap_at = if q.alive > self.min {
                idle_since.checked_add(self.idle)
            } else {
                None
            };
            q.idle += 1;
            crate::time::wait(&self.work, &mut q, reap_at);
            q.idle -= 1;
        }
    }

    /// Runs on the `idle_waits` thread for a released rayon worker: returns
    /// once released workers are called back (the epoch moved on from
    /// `seen`).
    ///
    /// The worker waits for this inside `ThreadPool::install` on another
    /// pool, which is how a rayon worker waits for another pool's job: it
    /// runs its own pool's pending work meanwhile (the `par` work of the
    /// tasks) and sleeps when there is none, until rayon has new work or
    /// this returns. So it neither polls nor misses work; rayon gives no
    /// other way to sleep until work appears from inside a job, and a
    /// worker is one (the broadcast that holds it).
    fn wait_released(&self, seen: u64) {
        let mut q = self.queue.lock();
        while q.epoch == seen {
            self.rejoin.wait(&mut q);
        }
    }

    /// Calls released rayon workers back to the queue (work that no
    /// waiting worker takes, a kill, the close).
    fn recall(&self, q: &mut Queues) {
        if q.released > 0 {
            q.epoch = q.epoch.wrapping_add(1);
            self.rejoin.notify_all();
        }
    }

    /// A task starts data-parallel work: idle workers help with it until
    /// the section ends.
    fn enter_par(&self) -> ParSection<'_> {
        let idle = {
            let mut q = self.queue.lock();
            q.par += 1;
            q.idle > 0
        };
        if idle {
            self.work.notify_all();
        }
        ParSection(&self.queue)
    }
}

/// A task's [`TaskContext::par`] call in progress; ends when dropped (a
/// panic included). Released workers stay in rayon's sleep after it: they
/// come back only when called (see [`Inner::recall`]).
struct ParSection<'a>(&'a Mutex<Queues>);

impl Drop for ParSection<'_> {
    fn drop(&mut self) {
        self.0.lock().par -= 1;
    }
}

/// Starts a worker thread for `slot` (already marked alive).
fn spawn_worker<W: Worker>(
    inner: &Arc<Inner<W>>,
    slot: usize,
    generation: u64,
) -> Result<(), SpawnError> {
    let args = inner.start_args().map_err(SpawnError::Args)?;
    let thread_inner = Arc::clone(inner);
    std::thread::Builder::new()
        .name(format!("{}-{slot}", inner.name))
        .spawn(move || worker_main(thread_inner, slot, generation, args))
        .map(drop)
        .map_err(|e| SpawnError::Thread(e.to_string()))
}

/// A worker slot on a thread of the pool's rayon pool: serves until the
/// pool closes, starting a fresh worker each time the slot's worker is
/// killed.
fn rayon_worker<W: Worker>(inner: &Arc<Inner<W>>, slot: usize) {
    loop {
        let generation = {
            let mut q = inner.queue.lock();
            if !q.slots[slot].alive {
                return;
            }
            if q.closed {
                // Left by a kill just before the close: count it gone.
                q.slots[slot].alive = false;
                q.alive -= 1;
                return;
            }
            q.slots[slot].generation
        };
        let Ok(args) = inner.start_args() else {
            return;
        };
        worker_main(Arc::clone(inner), slot, generation, args);
    }
}

fn lower_priority(nice: Option<i32>) {
    #[cfg(target_os = "linux")]
    if let Some(nice) = nice {
        // Only ever lower the priority: a pool must not raise its threads
        // above the process that made it, even where it could.
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if nice > current
            && let Err(e) = rustix::process::setpriority_process(Some(tid), nice.min(19))
        {
            tracing::debug!(target: "isolates", error = %e, "could not lower a worker's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A worker's thread: start the state, then run tasks until told to stop.
fn worker_main<W: Worker>(
    inner: Arc<Inner<W>>,
    slot: usize,
    generation: u64,
    args: Envelope<W::Args>,
) {
    lower_priority(inner.nice);
    let decode_args = |args: Envelope<W::Args>| -> Result<W, String> {
        let args = inner
            .args_codec
            .unpack(args, "start argument")
            .map_err(|e| e.to_string())?;
        match unwind::catch(|| W::start(args)) {
            Ok(Ok(worker)) => Ok(worker),
            Ok(Err(e)) => Err(unwind::describe(&e)),
            Err(caught) => Err(caught.message),
        }
    };
    // The worker's state here, or a child process that holds it.
    let start = |args: Envelope<W::Args>| -> Result<Exec<W>, String> {
        #[cfg(feature = "nats")]
        if let Some(client) = &inner.nats {
            return Ok(Exec::Nats(client.slot()));
        }
        #[cfg(target_os = "linux")]
        if let Some(spec) = &inner.process {
            let args = inner
                .args_codec
                .unpack(args, "start argument")
                .map_err(|e| e.to_string())?;
            let child = remote::ChildWorker::start(spec, &inner.name, &args)?;
            let mut q = inner.queue.lock();
            if q.slots[slot].generation == generation {
                q.slots[slot].child_kill = Some(child.kill_switch());
            }
            return Ok(Exec::Child(child));
        }
        decode_args(args).map(|state| Exec::Local(StateGuard(Some(state))))
    };
    let mut exec = match start(args) {
        Ok(exec) => exec,
        Err(why) => {
            tracing::warn!(target: "isolates", pool = %inner.name, slot, %why, "a worker could not start");
            inner.retire(slot, generation, format!("a worker could not start: {why}"));
            return;
        }
    };
    while let Some(job) = inner.next(slot, generation) {
        let Job {
            cell,
            input,
            priority,
            key,
            retries,
        } = job;
        if !cell.start_running() {
            continue;
        }
        if cell.check_deadline(Instant::now()) {
            cell.returned();
            continue;
        }
        // A retry needs a copy of the input, kept only when the submitter
        // asked for retries: the bytes themselves when they came encoded,
        // else an encoding made here, on the worker (a moved value has no
        // other copy, and the submitter's thread must not pay for one).
        // An input with attachments (a `Transfer`, a port) has no copy: a
        // retry would find the buffer the first run took.
        let codecs = &*inner.codecs;
        let moved = matches!(input, Envelope::Moved(_));
        let retry_copy = if retries > 0 && !moved {
            input.try_clone()
        } else {
            None
        };
        let input = codecs.input.unpack_erased(input, "input");
        let retry_copy = match &input {
            Ok(value) if retries > 0 && moved => match codecs.input.encode_copy(value, "input") {
                Ok(copy) if !copy.has_attachments() => Some(copy.erase()),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(target: "isolates", pool = %inner.name, error = %e, "a task's input could not be copied for its retries: it runs once");
                    None
                }
            },
            _ => retry_copy,
        };
        let retry = retry_copy.map(|copy| (copy, retries));
        {
            let mut q = inner.queue.lock();
            if q.slots[slot].generation != generation {
                drop(q);
                cell.returned();
                inner.lost(
                    Running {
                        cell,
                        retry,
                        priority,
                        key,
                    },
                    "worker replaced".into(),
                );
                return;
            }
            let now = Instant::now();
            let record = &mut q.slots[slot];
            record.started.get_or_insert(now);
            record.idle_since = None;
            record.running = Some(Running {
                cell: Arc::clone(&cell),
                retry,
                priority,
                key,
            });
            record.note_workload();
        }
        let (outcome, panicked) = match (input, &mut exec) {
            (Err(e), _) => (Outcome::Error(ErrorKind::Codec(e)), false),
            #[cfg(target_os = "linux")]
            (Ok(input), Exec::Child(child)) => child.run(&input, &cell, codecs),
            #[cfg(feature = "nats")]
            (Ok(input), Exec::Nats(slot)) => slot.run(&input, &cell, codecs),
            // Never: a state is always there between tasks.
            (Ok(_), Exec::Local(StateGuard(None))) => (
                Outcome::Error(ErrorKind::WorkerLost("the worker has no state".into())),
                false,
            ),
            (Ok(input), Exec::Local(StateGuard(Some(worker)))) => {
                let ctx = TaskContext {
                    cell: &cell,
                    codecs,
                    helpers: inner.rayon.as_ref().map(|_| &*inner),
                    sink: None,
                };
                match unwind::catch(|| worker.run(input, &ctx)) {
                    Ok(Ok(value)) => (
                        match codecs.output.pack(value, "value") {
                            Ok(packed) => Outcome::Value(packed.envelope.erase()),
                            Err((_, e)) => Outcome::Error(ErrorKind::Codec(e)),
                        },
                        false,
                    ),
                    Ok(Err(error)) => (
                        match codecs.error.pack(error, "value") {
                            Ok(packed) => Outcome::Failed(packed.envelope.erase()),
                            Err((_, e)) => Outcome::Error(ErrorKind::Codec(e)),
                        },
                        false,
                    ),
                    Err(caught) => (Outcome::Error(ErrorKind::Panicked(caught.message)), true),
                }
            }
        };
        cell.returned();
        let running = {
            let mut q = inner.queue.lock();
            if q.slots[slot].generation != generation {
                // Killed meanwhile: the task was resolved or requeued by
                // the kill; this thread leaves.
                return;
            }
            let record = &mut q.slots[slot];
            record.handled += 1;
            if panicked || !matches!(outcome, Outcome::Value(_)) {
                record.errors += 1;
            }
            record.idle_since = Some(Instant::now());
            record.running.take()
        };
        let counters = &inner.counters;
        match &outcome {
            Outcome::Value(_) => counters.succeeded.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed(_) => counters.failed.fetch_add(1, Ordering::Relaxed),
            Outcome::Error(ErrorKind::Panicked(_)) => {
                counters.panicked.fetch_add(1, Ordering::Relaxed)
            }
            Outcome::Error(_) => counters.failed.fetch_add(1, Ordering::Relaxed),
        };
        if panicked {
            // A panic may leave the state broken: start it again, as a
            // supervisor restarts a crashed child.
            let message = match &outcome {
                Outcome::Error(ErrorKind::Panicked(m) | ErrorKind::WorkerLost(m)) => m.clone(),
                _ => String::new(),
            };
            tracing::warn!(target: "isolates", pool = %inner.name, slot, why = %message, "a task panicked or its worker died: the worker restarts");
            match running {
                Some(running)
                    if running.retry.as_ref().is_some_and(|(_, n)| *n > 0)
                        && !cell.cancel.load(Ordering::Acquire) =>
                {
                    inner.lost(running, message);
                }
                _ => {
                    cell.resolve(outcome);
                }
            }
            counters.restarts.fetch_add(1, Ordering::Relaxed);
            let args = match inner.start_args() {
                Ok(args) => args,
                Err(e) => {
                    inner.retire(slot, generation, format!("start arguments: {e}"));
                    return;
                }
            };
            match start(args) {
                Ok(fresh) => drop(std::mem::replace(&mut exec, fresh)),
                Err(why) => {
                    tracing::warn!(target: "isolates", pool = %inner.name, slot, %why,
                        "a worker could not restart");
                    inner.retire(
                        slot,
                        generation,
                        format!("a worker could not restart: {why}"),
                    );
                    return;
                }
            };
        } else {
            cell.resolve(outcome);
        }
    }
}

/// What runs a worker's tasks.
enum Exec<W: Worker> {
    /// Its state, on this thread.
    Local(StateGuard<W>),
    /// A child process that holds it.
    #[cfg(target_os = "linux")]
    Child(remote::ChildWorker<W>),
    /// A slot that carries tasks to workers on other machines.
    #[cfg(feature = "nats")]
    Nats(crate::backend::nats::client::RemoteSlot<W>),
}

/// A worker's state, dropped under `catch` wherever the worker's loop
/// leaves it: a `Drop` that panics must not kill the worker's thread while
/// the pool still counts it (its queued tasks would never resolve).
struct StateGuard<W>(Option<W>);

impl<W> Drop for StateGuard<W> {
    fn drop(&mut self) {
        drop_caught(self.0.take(), "");
    }
}

/// Drops a worker's state under `catch`; a panic is logged.
fn drop_caught<W>(state: Option<W>, pool: &str) {
    if let Some(state) = state
        && let Err(caught) = unwind::catch(move || drop(state))
    {
        tracing::warn!(target: "isolates", %pool, panic = %caught.message, "a worker's state panicked while dropped");
    }
}

/// Resolves tasks whose deadline passed (never with the pool locked: a
/// resolve runs the task's callbacks).
/// Resolves the purged jobs whose deadline passed, and drops them all;
/// called without the queue's lock.
fn expire(jobs: Vec<Job>) {
    let now = Instant::now();
    for job in jobs {
        job.cell.check_deadline(now);
    }
}

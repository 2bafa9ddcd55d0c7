//! Scheduled background work that survives restarts: what Android's
//! WorkManager, Flutter's `workmanager` and `background_fetch` do, for
//! native programs.
//!
//! A [`WorkManager`] runs [`Handler`]s the app registers by name on a pool
//! of worker isolates, when the [`WorkRequest`]s that name them are due:
//!
//! - **one-off, delayed or periodic** work (with a flex window), with
//!   serializable input and output;
//! - **retries** with linear or exponential [`Backoff`], and a **time limit**
//!   per run after which the run is told to stop, its worker abandoned, and
//!   the handler's [`on_timeout`](Handler::on_timeout) called;
//! - **constraints** ([`Constraint`]): built-ins read power, load, network
//!   and free space from the real system; work waits until they hold;
//! - **unique names** with an [`ExistingWork`] policy, **tags**, and
//!   **chains** ([`WorkChain`]) passing outputs on as inputs;
//! - **states** as Android's ([`WorkState`]), observed by id, tag or unique
//!   name through snapshots or a [`WorkWatch`], with progress;
//! - an embedded **store** ([`WorkStore`]: SQLite, WAL): after a crash or a
//!   `kill -9`, pending, periodic and interrupted work resumes
//!   (at least once), and succeeded work does not run again;
//! - **alarms** at a wall-clock time ([`WorkRequest::at`]) with a policy
//!   for alarms missed while nothing ran ([`MissedAlarm`]);
//! - **headless runs** ([`WorkManagerBuilder::run_due`]) that run the due
//!   work within a budget and exit, started by an **OS wake-up**
//!   ([`OsWake`]: a systemd user timer, a LaunchAgent, a scheduled task)
//!   that [`WorkManager::wake_with_os`] keeps set for the next due work;
//! - a store **format that survives upgrades**: a schema version with
//!   migrations, and each row's layout ([`WorkStore::open`]);
//! - an injectable [`Clock`], so tests of delays, periods and backoff run
//!   at once ([`ManualClock`]).
//!
//! No call blocks the UI thread: [`WorkManager::enqueue`] and
//! [`WorkManager::cancel`] return an [`Operation`] to poll, snapshots read
//! a shared map, and a [`WorkWatch`] is polled each frame.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use isolates::schedule::*;
//!
//! let clock = ManualClock::default();
//! let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
//!     .clock(clock.clone())
//!     .handler_fn("greet", |name: String, _: &WorkContext<'_>| {
//!         WorkResult::Success(format!("hello, {name}"))
//!     })
//!     .build()
//!     .unwrap();
//!
//! let later = WorkRequest::once("greet").input("world").initial_delay(Duration::from_secs(60));
//! let id = manager.enqueue(later).wait().unwrap().ids()[0];
//! assert_eq!(manager.info(id).unwrap().state, WorkState::Enqueued);
//!
//! clock.advance(Duration::from_secs(60)); // a minute passes, at once
//! let info = manager.wait_finished(id, Duration::from_secs(10)).unwrap();
//! assert_eq!(info.output::<String>(), Some(Ok("hello, world".into())));
//! manager.shutdown();
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod clock;
mod constraint;
mod core;
mod handler;
mod headless;
mod pace;
mod request;
mod store;
mod wake;

pub use clock::{Clock, ClockWaker, ManualClock, SystemClock};
pub use constraint::{
    BatteryNotLow, Constraint, NetworkAvailable, OnAcPower, StorageNotLow, SystemIdle,
};
pub use handler::{Handler, WorkContext, WorkResult};
pub use headless::DueRun;
pub use request::{
    Backoff, Enqueued, ExistingWork, InputMerger, MissedAlarm, WorkChain, WorkId, WorkInfo,
    WorkQuery, WorkRequest, WorkState,
};
pub use store::{StoreError, UnreadableWork, WorkStore};
pub use wake::{OsWake, SystemdUnits, WakeError};

use self::core::{Core, Event, Settings, StoreErrorSlot};
use self::handler::{ErasedHandler, FnHandler, Registry, Runner};
use crate::error::CodecError;
use crate::oneshot::{self, Miss};
use crate::pool::Pool;

/// What went wrong with a request to the work manager.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{WorkError, WorkManager, WorkRequest, WorkStore};
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).build().unwrap();
/// let err = manager.enqueue(WorkRequest::once("nobody")).wait().unwrap_err();
/// assert_eq!(err, WorkError::UnknownHandler("nobody".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkError {
    /// No handler is registered under this name: register it with
    /// [`WorkManagerBuilder::handler`].
    UnknownHandler(String),
    /// No constraint is registered under this name: register it with
    /// [`WorkManagerBuilder::constraint`].
    UnknownConstraint(String),
    /// The request is not valid as given; the text says why.
    Invalid(String),
    /// The input is larger than the data limit
    /// ([`WorkManagerBuilder::data_limit`]).
    DataTooLarge {
        /// Its encoded size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input could not be encoded.
    Codec(CodecError),
    /// The store could not be opened or read.
    Store(StoreError),
    /// The manager could not start its workers or scheduler thread.
    Spawn(String),
    /// The manager was shut down.
    Stopped,
    /// The answer was already taken from this [`Operation`]: it is given
    /// once, like every result handle's.
    AlreadyTaken,
}

impl fmt::Display for WorkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownHandler(h) => write!(
                f,
                "no handler is registered as {h:?}: register it with WorkManagerBuilder::handler"
            ),
            Self::UnknownConstraint(c) => write!(
                f,
                "no constraint is registered as {c:?}: register it with \
                 WorkManagerBuilder::constraint"
            ),
            Self::Invalid(why) => write!(f, "invalid work request: {why}"),
            Self::DataTooLarge { size, limit } => write!(
                f,
                "the input is {size} bytes, over the data limit of {limit}: pass a path or a key \
                 instead, or raise WorkManagerBuilder::data_limit"
            ),
            Self::Codec(e) => write!(f, "the input could not be encoded: {e}"),
            Self::Store(e) => e.fmt(f),
            Self::Spawn(e) => write!(f, "the work manager could not start: {e}"),
            Self::Stopped => f.write_str("the work manager was shut down"),
            Self::AlreadyTaken => f.write_str("the answer was already taken from this operation"),
        }
    }
}

impl std::error::Error for WorkError {}

impl From<StoreError> for WorkError {
    fn from(e: StoreError) -> Self {
        WorkError::Store(e)
    }
}

/// A validated request, as the scheduler takes it.
pub(crate) struct Spec {
    pub(crate) handler: String,
    pub(crate) input: Option<Vec<u8>>,
    /// Interval and flex in milliseconds.
    pub(crate) periodic: Option<(i64, i64)>,
    pub(crate) initial_delay: i64,
    pub(crate) tags: Vec<String>,
    pub(crate) constraints: Vec<String>,
    pub(crate) backoff: Backoff,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) input_merger: InputMerger,
    pub(crate) alarm: Option<request::Alarm>,
}

/// The answer to a request, once the scheduler has made it durable: poll
/// it from a UI thread, wait for it elsewhere, or `.await` it (it is a
/// [`Future`] on any executor, woken by the scheduler
/// once it answers).
///
/// The answer is given once; asking again gives
/// [`WorkError::AlreadyTaken`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .build()
///     .unwrap();
/// let mut op = manager.enqueue(WorkRequest::once("noop"));
/// // Each frame: op.try_result() is None until the store has it.
/// let done = op.wait_timeout(Duration::from_secs(10)).expect("answered");
/// assert!(matches!(done, Ok(Enqueued::New(_))));
/// assert_eq!(op.try_result(), Some(Err(WorkError::AlreadyTaken)));
/// ```
pub struct Operation<T> {
    rx: oneshot::Receiver<Result<T, WorkError>>,
    taken: bool,
}

impl<T> Operation<T> {
    fn waiting(rx: oneshot::Receiver<Result<T, WorkError>>) -> Self {
        Operation { rx, taken: false }
    }

    fn resolved(result: Result<T, WorkError>) -> Self {
        let (tx, rx) = oneshot::oneshot();
        tx.send(result);
        Operation::waiting(rx)
    }

    /// The answer, if it came; never blocks. After it returned an answer,
    /// later calls return `Some(Err(WorkError::AlreadyTaken))`.
    ///
    /// # Examples
    ///
    /// See [`Operation`].
    pub fn try_result(&mut self) -> Option<Result<T, WorkError>> {
        if self.taken {
            return Some(Err(WorkError::AlreadyTaken));
        }
        let got = self.rx.try_recv();
        self.settle(got)
    }

    /// Waits for the answer.
    ///
    /// # Errors
    ///
    /// The request's error; [`WorkError::Stopped`] if the manager stopped
    /// first; [`WorkError::AlreadyTaken`] if the answer was taken before.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn wait(mut self) -> Result<T, WorkError> {
        if self.taken {
            return Err(WorkError::AlreadyTaken);
        }
        let got = self.rx.recv_until(None);
        self.settle(got).unwrap_or(Err(WorkError::Stopped))
    }

    /// Waits up to `timeout`; `None` if no answer came by then. After an
    /// answer was taken, `Some(Err(WorkError::AlreadyTaken))`.
    ///
    /// # Examples
    ///
    /// See [`Operation`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<T, WorkError>> {
        if self.taken {
            return Some(Err(WorkError::AlreadyTaken));
        }
        let got = self.rx.recv_until(crate::time::deadline_after(timeout));
        self.settle(got)
    }

    /// What a look at the reply slot found, as the caller's answer.
    fn settle(&mut self, got: Result<Result<T, WorkError>, Miss>) -> Option<Result<T, WorkError>> {
        let answer = match got {
            Ok(answer) => answer,
            Err(Miss::Empty) => return None,
            // The scheduler dropped the reply: it stopped first.
            Err(Miss::Closed) => Err(WorkError::Stopped),
        };
        self.taken = true;
        Some(answer)
    }
}

/// Awaiting an `Operation` needs no particular runtime: the scheduler thread
/// wakes the awaiting task once the change is stored, and nothing polls in
/// between. Awaiting it after the answer was taken gives
/// [`WorkError::AlreadyTaken`].
///
/// # Examples
///
/// ```
/// use futures::executor::block_on;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .build()
///     .unwrap();
/// let mut op = manager.enqueue(WorkRequest::once("noop"));
/// block_on(async {
///     assert!(matches!((&mut op).await, Ok(Enqueued::New(_))));
///     assert_eq!(op.await, Err(WorkError::AlreadyTaken));
/// });
/// manager.shutdown();
/// ```
impl<T> Future for Operation<T> {
    type Output = Result<T, WorkError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        if !this.taken && this.rx.poll_ready(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(this.try_result().unwrap_or(Err(WorkError::Stopped)))
    }
}

impl<T> fmt::Debug for Operation<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.taken {
            "taken"
        } else if self.rx.is_empty() {
            "waiting"
        } else {
            "answered"
        };
        f.debug_struct("Operation").field("state", &state).finish()
    }
}

/// Changes to the works a [`WorkQuery`] selects, as they are stored: first
/// a snapshot of each, then every change. Changes are stored once per
/// scheduler turn, so a state that lasted less than a turn is not seen
/// (work enqueued when it can start at once is first seen running). Poll it each frame with
/// [`try_next`](Self::try_next) or [`drain`](Self::drain), or iterate it on
/// another thread (the iteration ends when the manager stops).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .build()
///     .unwrap();
/// let watch = manager.watch(WorkQuery::Tag("ui".into()));
/// manager.enqueue(WorkRequest::once("noop").tag("ui")).wait().unwrap();
/// let mut states = Vec::new();
/// while states.last() != Some(&WorkState::Succeeded) {
///     let info = watch.next_timeout(Duration::from_secs(10)).expect("a change");
///     states.push(info.state);
/// }
/// assert!(states.contains(&WorkState::Running));
/// ```
#[derive(Debug)]
pub struct WorkWatch {
    rx: cb::Receiver<WorkInfo>,
    /// The scheduler forgets the watch once this is dropped.
    _alive: Arc<()>,
}

impl WorkWatch {
    /// The next change, if one is waiting; never blocks.
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn try_next(&self) -> Option<WorkInfo> {
        self.rx.try_recv().ok()
    }

    /// Every change waiting now; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).build().unwrap();
    /// let watch = manager.watch(WorkQuery::All);
    /// for info in watch.drain() {
    ///     println!("{} is {:?}", info.id, info.state);
    /// }
    /// ```
    pub fn drain(&self) -> Vec<WorkInfo> {
        self.rx.try_iter().collect()
    }

    /// Waits up to `timeout` for the next change.
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn next_timeout(&self, timeout: Duration) -> Option<WorkInfo> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Iterator for WorkWatch {
    type Item = WorkInfo;

    fn next(&mut self) -> Option<WorkInfo> {
        self.rx.recv().ok()
    }
}

/// Configures and starts a [`WorkManager`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .system_constraints()
///     .workers(2)
///     .time_limit(Duration::from_secs(30))
///     .min_interval(Duration::from_secs(60))
///     .build()
///     .unwrap();
/// # manager.shutdown();
/// ```
pub struct WorkManagerBuilder {
    store: WorkStore,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    constraints: HashMap<String, Arc<dyn Constraint>>,
    clock: Arc<dyn Clock>,
    workers: usize,
    time_limit: Duration,
    stop_grace: Duration,
    min_interval: Duration,
    min_backoff: Duration,
    data_limit: usize,
    constraint_poll: Duration,
    keep_finished: Duration,
    /// Set by a headless run ([`WorkManagerBuilder::run_due`]).
    log: Option<Arc<core::RunLog>>,
}

impl fmt::Debug for WorkManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut handlers: Vec<_> = self.handlers.keys().collect();
        handlers.sort();
        let mut constraints: Vec<_> = self.constraints.keys().collect();
        constraints.sort();
        f.debug_struct("WorkManagerBuilder")
            .field("store", &self.store)
            .field("handlers", &handlers)
            .field("constraints", &constraints)
            .field("clock", &self.clock)
            .field("workers", &self.workers)
            .field("time_limit", &self.time_limit)
            .field("min_interval", &self.min_interval)
            .field("min_backoff", &self.min_backoff)
            .field("data_limit", &self.data_limit)
            .finish_non_exhaustive()
    }
}

impl WorkManagerBuilder {
    /// Registers `handler` under `name`; requests name it.
    ///
    /// # Examples
    ///
    /// See [`Handler`].
    pub fn handler<H: Handler>(mut self, name: &str, handler: H) -> Self {
        self.handlers.insert(name.to_owned(), Arc::new(handler));
        self
    }

    /// Registers a function as the handler `name`.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn handler_fn<I, O, F>(self, name: &str, f: F) -> Self
    where
        F: Fn(I, &WorkContext<'_>) -> WorkResult<O> + Send + Sync + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
    {
        self.handler(name, FnHandler::new(f))
    }

    /// Registers `constraint` under `name`; requests name it with
    /// [`WorkRequest::constraint`]. A name registered again is replaced.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::*;
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .constraint("big-disk", StorageNotLow::new("/", 10 << 30))
    ///     .build()
    ///     .unwrap();
    /// # manager.shutdown();
    /// ```
    pub fn constraint(mut self, name: &str, constraint: impl Constraint) -> Self {
        self.constraints
            .insert(name.to_owned(), Arc::new(constraint));
        self
    }

    /// Registers the built-in constraints under their usual names:
    /// `"on_ac_power"` ([`OnAcPower`]), `"battery_not_low"`
    /// ([`BatteryNotLow`]), `"system_idle"` ([`SystemIdle`]), `"network"`
    /// ([`NetworkAvailable`]) and `"storage_not_low"` ([`StorageNotLow`]
    /// on the current directory, 512 MiB).
    ///
    /// # Examples
    ///
    /// See [`WorkManagerBuilder`].
    pub fn system_constraints(self) -> Self {
        self.constraint("on_ac_power", OnAcPower::default())
            .constraint("battery_not_low", BatteryNotLow::default())
            .constraint("system_idle", SystemIdle::default())
            .constraint("network", NetworkAvailable::default())
            .constraint("storage_not_low", StorageNotLow::default())
    }

    /// The clock schedules are read from (default [`SystemClock`]).
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How many works run at once, each on its own worker isolate
    /// (default: the pool default, one per core).
    ///
    /// # Examples
    ///
    /// See [`WorkManagerBuilder`].
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The time limit of runs whose request sets none (default 10
    /// minutes, as Android's; at least 10 ms: shorter is raised to it).
    ///
    /// # Examples
    ///
    /// See [`WorkManagerBuilder`].
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = pace::floor(limit);
        self
    }

    /// How long a run past its limit has to stop by itself before its
    /// worker is abandoned and replaced (default 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// let b = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .stop_grace(std::time::Duration::from_millis(500));
    /// # let _ = b;
    /// ```
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// The shortest interval periodic work may ask for (default 1 minute;
    /// Android's is 15, to which it clamps silently). Shorter intervals are
    /// refused with [`WorkError::Invalid`]. At least 10 ms: a shorter
    /// minimum is raised to it.
    ///
    /// # Examples
    ///
    /// See [`WorkManagerBuilder`].
    pub fn min_interval(mut self, min: Duration) -> Self {
        self.min_interval = pace::floor(min);
        self
    }

    /// The shortest wait before a retry a request's [`Backoff`] may ask
    /// for (default 1 s; Android clamps backoff silently to at least
    /// 10 s). A request whose backoff waits less after its first retry is
    /// refused with [`WorkError::Invalid`]; stored work from an older
    /// build waits at least this long too. At least 10 ms: a shorter
    /// minimum is raised to it. Together with a time limit above zero
    /// (also checked), work that keeps failing cannot spin.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("n", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
    ///     .min_backoff(Duration::from_millis(100))
    ///     .build()
    ///     .unwrap();
    /// let spin = WorkRequest::once("n").backoff(Backoff::linear(Duration::ZERO));
    /// assert!(matches!(manager.enqueue(spin).wait(), Err(WorkError::Invalid(_))));
    /// let zero_limit = WorkRequest::once("n").time_limit(Duration::ZERO);
    /// assert!(matches!(manager.enqueue(zero_limit).wait(), Err(WorkError::Invalid(_))));
    /// let fine = WorkRequest::once("n").backoff(Backoff::linear(Duration::from_millis(100)));
    /// assert!(manager.enqueue(fine).wait().is_ok());
    /// # manager.shutdown();
    /// ```
    pub fn min_backoff(mut self, min: Duration) -> Self {
        self.min_backoff = pace::floor(min);
        self
    }

    /// The largest encoded input, output or progress (default 64 KiB;
    /// Android's is 10 KiB). Keep data small: pass paths or keys to big
    /// things.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("n", |_: Vec<u8>, _: &WorkContext<'_>| WorkResult::Success(()))
    ///     .data_limit(16)
    ///     .build()
    ///     .unwrap();
    /// let err = manager.enqueue(WorkRequest::once("n").input(&vec![0u8; 100])).wait().unwrap_err();
    /// assert!(matches!(err, WorkError::DataTooLarge { limit: 16, .. }));
    /// ```
    pub fn data_limit(mut self, bytes: usize) -> Self {
        self.data_limit = bytes;
        self
    }

    /// How often constraints are checked again while work waits on them
    /// (default 1 s; at least 10 ms: shorter is raised to it).
    /// [`WorkManager::recheck`] checks at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// let b = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .constraint_poll(std::time::Duration::from_millis(100));
    /// # let _ = b;
    /// ```
    pub fn constraint_poll(mut self, every: Duration) -> Self {
        self.constraint_poll = pace::floor(every);
        self
    }

    /// How long finished work stays in the store to be observed (default
    /// 1 day, on the manager's clock); then it is deleted.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// let b = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .keep_finished(std::time::Duration::from_secs(3600));
    /// # let _ = b;
    /// ```
    pub fn keep_finished(mut self, keep: Duration) -> Self {
        self.keep_finished = keep;
        self
    }

    /// Loads the store and starts the scheduler and the workers. Work a
    /// crash interrupted is enqueued again.
    ///
    /// # Errors
    ///
    /// [`WorkError::Store`] if the store cannot be read,
    /// [`WorkError::Spawn`] if threads cannot be started.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn build(self) -> Result<WorkManager, WorkError> {
        let (records, unreadable) = self.store.load()?;
        let next_id = self
            .store
            .max_id()?
            .max(records.iter().map(|r| r.id).max().unwrap_or(0))
            + 1;
        let (events_tx, events_rx) = cb::unbounded();
        let registry = Arc::new(Registry {
            handlers: self.handlers,
            events: events_tx.clone(),
            data_limit: self.data_limit,
            in_handler: Mutex::default(),
            key: handler::new_key(),
        });
        let key = registry.key;
        let workers = self.workers.max(1);
        let pool = Pool::<Runner>::builder()
            .name("work")
            .workers(workers)
            .build(Arc::clone(&registry))
            .map_err(|e| WorkError::Spawn(e.to_string()))?;
        let infos = Arc::new(RwLock::new(HashMap::new()));
        let store_error = Arc::new(StoreErrorSlot::default());
        let settings = Settings {
            clock: Arc::clone(&self.clock),
            constraints: self.constraints.clone(),
            max_running: workers,
            time_limit: self.time_limit,
            min_backoff: self.min_backoff,
            stop_grace: self.stop_grace,
            constraint_poll: self.constraint_poll,
            keep_finished: self.keep_finished,
            log: self.log.clone(),
        };
        let core = Core::new(
            self.store,
            settings,
            pool,
            Arc::clone(&registry),
            records,
            next_id,
            Arc::clone(&infos),
            Arc::clone(&store_error),
        );
        let thread = std::thread::Builder::new()
            .name("isolates-work".into())
            .spawn(move || core.run(events_rx))
            .map_err(|e| WorkError::Spawn(e.to_string()))?;
        let tick = events_tx.clone();
        self.clock
            .subscribe(Box::new(move || tick.send(Event::Tick).is_ok()));
        Ok(WorkManager {
            shared: Arc::new(Shared {
                events: events_tx,
                infos,
                store_error,
                unreadable,
                handlers: registry.handlers.keys().cloned().collect(),
                constraints: self.constraints.keys().cloned().collect(),
                min_interval: self.min_interval,
                min_backoff: self.min_backoff,
                data_limit: self.data_limit,
                key,
                thread: Mutex::new(Some(thread)),
                wakers: Mutex::default(),
            }),
        })
    }
}

/// Drops a chain's empty stages, as Android skips them; a chain with no
/// work at all is refused.
fn skip_empty_stages(mut chain: WorkChain) -> Result<WorkChain, WorkError> {
    chain.stages.retain(|stage| !stage.is_empty());
    if chain.stages.is_empty() {
        return Err(WorkError::Invalid("the chain holds no work".to_owned()));
    }
    Ok(chain)
}

/// A work's tags: its handler's name first (the implicit tag, as Android's
/// worker class name), then the request's own, each once.
fn with_implicit_tag(handler: &str, tags: Vec<String>) -> Vec<String> {
    let mut all = Vec::with_capacity(tags.len() + 1);
    all.push(handler.to_owned());
    all.extend(tags.into_iter().filter(|t| t != handler));
    all
}

struct Shared {
    events: cb::Sender<Event>,
    infos: Arc<RwLock<HashMap<u64, WorkInfo>>>,
    store_error: Arc<StoreErrorSlot>,
    unreadable: Vec<UnreadableWork>,
    handlers: HashSet<String>,
    constraints: HashSet<String>,
    min_interval: Duration,
    min_backoff: Duration,
    data_limit: usize,
    key: u64,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Threads keeping OS wake-ups set ([`WorkManager::wake_with_os`]):
    /// they end with the scheduler, after their last update.
    wakers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn shutdown(&self) {
        let _ = self.events.send(Event::Shutdown);
        if handler::current_work(self.key).is_some() {
            // From one of our handlers: the scheduler waits for this run to
            // return, so waiting for the scheduler here would wait for
            // ourselves. It stops on its own.
            return;
        }
        let thread = self.thread.lock().take();
        if let Some(thread) = thread
            // On the scheduler itself: it stops after this turn.
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
            // The scheduler is gone, and with it the wake threads' watches:
            // they make their last update and end.
            let wakers = std::mem::take(&mut *self.wakers.lock());
            for waker in wakers {
                let _ = waker.join();
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs scheduled work: see the [module documentation](self).
///
/// Clones share one manager. It stops with [`shutdown`](Self::shutdown)
/// or when the last clone is dropped; a handler that holds a clone keeps
/// it alive, so call `shutdown` then.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("download", |url: String, _: &WorkContext<'_>| WorkResult::Success(url.len() as u64))
///     .handler_fn("report", |bytes: u64, _: &WorkContext<'_>| WorkResult::Success(format!("{bytes} bytes")))
///     .build()
///     .unwrap();
///
/// // The report gets the download's output as its input.
/// let chain = WorkChain::new(WorkRequest::once("download").input("https://example.com"))
///     .then(WorkRequest::once("report"));
/// let ids = manager.enqueue_unique("daily", ExistingWork::Keep, chain).wait().unwrap();
/// let report = manager.wait_finished(ids.ids()[1], Duration::from_secs(10)).unwrap();
/// assert_eq!(report.output::<String>(), Some(Ok("19 bytes".into())));
/// assert_eq!(manager.infos(&WorkQuery::UniqueName("daily".into())).len(), 2);
/// manager.shutdown();
/// ```
#[derive(Clone)]
pub struct WorkManager {
    shared: Arc<Shared>,
}

impl fmt::Debug for WorkManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkManager")
            .field("works", &self.shared.infos.read().len())
            .finish_non_exhaustive()
    }
}

impl WorkManager {
    /// A builder over `store`, with the defaults: system clock, one worker
    /// per core, 10-minute time limit, 1-minute minimum interval, 1-second
    /// minimum backoff, 64 KiB data limit, no handlers, no constraints.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn builder(store: WorkStore) -> WorkManagerBuilder {
        WorkManagerBuilder {
            store,
            handlers: HashMap::new(),
            constraints: HashMap::new(),
            clock: Arc::new(SystemClock),
            workers: crate::pool::default_workers(),
            time_limit: Duration::from_secs(600),
            stop_grace: Duration::from_secs(5),
            min_interval: Duration::from_secs(60),
            min_backoff: pace::DEFAULT_MIN_BACKOFF,
            data_limit: 64 << 10,
            constraint_poll: Duration::from_secs(1),
            keep_finished: Duration::from_secs(24 * 3600),
            log: None,
        }
    }

    /// Enqueues a work or a chain; never blocks.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn enqueue(&self, work: impl Into<WorkChain>) -> Operation<Enqueued> {
        self.send_enqueue(work.into(), None)
    }

    /// Enqueues a work or a chain under a unique name, with `policy` for
    /// unfinished work already under it (see [`ExistingWork`]); never
    /// blocks.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn enqueue_unique(
        &self,
        name: &str,
        policy: ExistingWork,
        work: impl Into<WorkChain>,
    ) -> Operation<Enqueued> {
        self.send_enqueue(work.into(), Some((name.to_owned(), policy)))
    }

    fn send_enqueue(
        &self,
        chain: WorkChain,
        unique: Option<(String, ExistingWork)>,
    ) -> Operation<Enqueued> {
        let stages = match self.validate(chain, unique.as_ref().map(|(_, p)| *p)) {
            Ok(stages) => stages,
            Err(e) => return Operation::resolved(Err(e)),
        };
        let (reply, rx) = oneshot::oneshot();
        let event = Event::Enqueue {
            stages,
            unique,
            caller: handler::current_work(self.shared.key),
            reply,
        };
        if self.shared.events.send(event).is_err() {
            return Operation::resolved(Err(WorkError::Stopped));
        }
        Operation::waiting(rx)
    }

    fn validate(
        &self,
        chain: WorkChain,
        policy: Option<ExistingWork>,
    ) -> Result<Vec<Vec<Spec>>, WorkError> {
        let shared = &self.shared;
        let chain = skip_empty_stages(chain)?;
        let periodic = chain.stages.iter().flatten().any(WorkRequest::is_periodic);
        if periodic && chain.len() > 1 {
            return Err(WorkError::Invalid(
                "periodic work cannot be part of a chain or a batch; enqueue it alone".to_owned(),
            ));
        }
        match policy {
            Some(ExistingWork::Append | ExistingWork::AppendOrReplace) if periodic => {
                return Err(WorkError::Invalid(
                    "periodic work cannot be appended; use Keep, Update or Replace".to_owned(),
                ));
            }
            Some(ExistingWork::Update) if chain.len() > 1 => {
                return Err(WorkError::Invalid(
                    "Update changes one work in place; enqueue a single request".to_owned(),
                ));
            }
            _ => {}
        }
        let mut stages = Vec::with_capacity(chain.stages.len());
        for stage in chain.stages {
            let mut specs = Vec::with_capacity(stage.len());
            for req in stage {
                if !shared.handlers.contains(&req.handler) {
                    return Err(WorkError::UnknownHandler(req.handler));
                }
                if let Some(c) = req
                    .constraints
                    .iter()
                    .find(|c| !shared.constraints.contains(*c))
                {
                    return Err(WorkError::UnknownConstraint(c.clone()));
                }
                pace::check_request(&req, shared.min_backoff)?;
                let input = req.input.map_err(WorkError::Codec)?;
                if let Some(size) = input
                    .as_ref()
                    .map(Vec::len)
                    .filter(|&s| s > shared.data_limit)
                {
                    return Err(WorkError::DataTooLarge {
                        size,
                        limit: shared.data_limit,
                    });
                }
                let periodic = match req.periodic {
                    None => None,
                    Some((interval, _)) if interval < shared.min_interval => {
                        return Err(WorkError::Invalid(format!(
                            "the interval {interval:?} is under the minimum of {:?} \
                             (WorkManagerBuilder::min_interval)",
                            shared.min_interval
                        )));
                    }
                    Some((interval, flex)) => {
                        let flex = flex.unwrap_or(interval);
                        if flex.is_zero() || flex > interval {
                            return Err(WorkError::Invalid(format!(
                                "the flex window {flex:?} must be above zero and at most the \
                                 interval {interval:?}"
                            )));
                        }
                        Some((clock::dur_ms(interval), clock::dur_ms(flex)))
                    }
                };
                let alarm = match (req.at, req.missed) {
                    (None, None) => None,
                    (None, Some(_)) => {
                        return Err(WorkError::Invalid(
                            "if_missed applies to alarms only: make the request with \
                             WorkRequest::at"
                                .to_owned(),
                        ));
                    }
                    (Some(_), _) if !req.initial_delay.is_zero() => {
                        return Err(WorkError::Invalid(
                            "an alarm runs at its time and takes no initial delay: add the \
                             delay to the time given to WorkRequest::at"
                                .to_owned(),
                        ));
                    }
                    (Some(at), missed) => Some(request::Alarm {
                        at: clock::to_ms_ceil(at),
                        missed: missed.unwrap_or_default(),
                    }),
                };
                specs.push(Spec {
                    tags: with_implicit_tag(&req.handler, req.tags),
                    handler: req.handler,
                    input,
                    periodic,
                    initial_delay: clock::dur_ms(req.initial_delay),
                    constraints: req.constraints,
                    backoff: req.backoff,
                    time_limit: req.time_limit,
                    input_merger: req.input_merger,
                    alarm,
                });
            }
            stages.push(specs);
        }
        Ok(stages)
    }

    /// Cancels the unfinished works `query` selects, and the works chained
    /// after them; a running one is told to stop
    /// ([`WorkContext::is_stopped`]). A finished work it selects stays as it
    /// finished, but the unfinished works chained after it are cancelled,
    /// as Android cancels the dependents of a succeeded work cancelled by
    /// id. Answers how many were cancelled; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("later", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
    ///     .build()
    ///     .unwrap();
    /// let later = WorkRequest::once("later").tag("t").initial_delay(Duration::from_secs(3600));
    /// manager.enqueue(later.clone()).wait().unwrap();
    /// manager.enqueue(later).wait().unwrap();
    /// assert_eq!(manager.cancel(WorkQuery::Tag("t".into())).wait(), Ok(2));
    /// assert!(manager.infos(&WorkQuery::All).iter().all(|i| i.state == WorkState::Cancelled));
    /// ```
    pub fn cancel(&self, query: WorkQuery) -> Operation<usize> {
        let (reply, rx) = oneshot::oneshot();
        if self
            .shared
            .events
            .send(Event::Cancel { query, reply })
            .is_err()
        {
            return Operation::resolved(Err(WorkError::Stopped));
        }
        Operation::waiting(rx)
    }

    /// The work `id`, as last stored; never blocks for long.
    ///
    /// # Examples
    ///
    /// See [`WorkInfo`].
    pub fn info(&self, id: WorkId) -> Option<WorkInfo> {
        self.shared.infos.read().get(&id.0).cloned()
    }

    /// The works `query` selects, by id.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn infos(&self, query: &WorkQuery) -> Vec<WorkInfo> {
        let mut all: Vec<WorkInfo> = self
            .shared
            .infos
            .read()
            .values()
            .filter(|i| query.matches(i))
            .cloned()
            .collect();
        all.sort_by_key(|i| i.id);
        all
    }

    /// Watches the works `query` selects: see [`WorkWatch`].
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn watch(&self, query: WorkQuery) -> WorkWatch {
        let (to, rx) = cb::unbounded();
        let alive = Arc::new(());
        let _ = self.shared.events.send(Event::Watch {
            query,
            to,
            alive: Arc::downgrade(&alive),
        });
        WorkWatch { rx, _alive: alive }
    }

    /// Blocks until work `id` is finished, or `timeout` passes (then
    /// `None`). For tests and worker threads; a UI thread polls
    /// [`info`](Self::info) or a [`WorkWatch`] instead.
    ///
    /// # Examples
    ///
    /// See [`WorkInfo`].
    pub fn wait_finished(&self, id: WorkId, timeout: Duration) -> Option<WorkInfo> {
        self.wait_for(id, timeout, |i| i.state.is_finished())
    }

    /// Blocks until work `id` is stored in a state `cond` accepts, or
    /// `timeout` passes (then `None`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("tick", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
    ///     .build()
    ///     .unwrap();
    /// let id = manager.enqueue(WorkRequest::periodic("tick", Duration::from_secs(3600)))
    ///     .wait().unwrap().ids()[0];
    /// let info = manager.wait_for(id, Duration::from_secs(10), |i| i.periods == 1).unwrap();
    /// assert_eq!(info.state, WorkState::Enqueued); // periodic work comes back
    /// # manager.shutdown();
    /// ```
    pub fn wait_for(
        &self,
        id: WorkId,
        timeout: Duration,
        mut cond: impl FnMut(&WorkInfo) -> bool,
    ) -> Option<WorkInfo> {
        let deadline = crate::time::deadline_after(timeout);
        let watch = self.watch(WorkQuery::Id(id));
        loop {
            let next = match deadline {
                Some(d) => watch.rx.recv_deadline(d.max(Instant::now())).ok()?,
                None => watch.rx.recv().ok()?,
            };
            if cond(&next) {
                return Some(next);
            }
        }
    }

    /// Checks the constraints of waiting work now, instead of at the next
    /// poll (call it when the app learns that a condition changed).
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).build().unwrap();
    /// manager.recheck();
    /// ```
    pub fn recheck(&self) {
        let _ = self.shared.events.send(Event::Tick);
    }

    /// The last error writing the store, if the last write failed: the
    /// scheduler keeps the changes and tries again every second, and
    /// answers the operations they concern once written.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).build().unwrap();
    /// assert_eq!(manager.store_error(), None);
    /// ```
    pub fn store_error(&self) -> Option<StoreError> {
        self.shared.store_error.get()
    }

    /// Rows of the store that could not be read when the manager started;
    /// they are left in the store untouched, and the rest runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).build().unwrap();
    /// assert!(manager.unreadable().is_empty());
    /// ```
    pub fn unreadable(&self) -> &[UnreadableWork] {
        &self.shared.unreadable
    }

    /// Stops the scheduler and the workers: runs in progress are told to
    /// stop and stay enqueued in the store, to run again on the next start.
    /// Blocks until the store is written and the runs returned, or the stop
    /// grace passed (a handler that ignores [`WorkContext::is_stopped`]
    /// longer is left running; a manager started again on the same store
    /// in this process could then run its work beside it). Called from a
    /// handler, it returns at once and the manager stops after that run.
    /// Later requests answer [`WorkError::Stopped`].
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }
}

/// What loading does with one stored row's bytes (for `crate::fuzz`).
pub(crate) fn fuzz_row(bytes: &[u8]) {
    store::fuzz_row(bytes);
}

//! Configuring and starting a work manager.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel as cb;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(doc)]
use super::WorkRequest;
use super::child::{ChildArgs, ChildRunner};
use super::clock::{Clock, SystemClock};
use super::constraint::{
    BatteryNotLow, Constraint, NetworkAvailable, OnAcPower, StorageNotLow, SystemIdle,
};
use super::core::{self, Core, Settings, SharedCore};
use super::error::WorkError;
use super::event::Event;
use super::handler::{
    self, ErasedHandler, FnHandler, Handler, Registry, Runner, WorkContext, WorkResult,
};
use super::manager::{Live, Shared, WorkManager};
use super::outbox::StoreErrorSlot;
use super::pace;
use super::store::WorkStore;
use super::table::PAGE;
#[cfg(doc)]
use crate::Backoff;
use crate::pool::Pool;
use crate::process::ProcessOptions;

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
///     .spawn()
///     .unwrap();
/// # manager.stop();
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
    /// Set by [`processes`](Self::processes): the handlers registered with
    /// `process::Registry::work_handler` run in child processes.
    processes: Option<ProcessOptions>,
    /// Set by a headless run ([`WorkManagerBuilder::run_due`]).
    pub(super) log: Option<Arc<core::RunLog>>,
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
            .field("processes", &self.processes)
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

    /// Runs the handlers registered with
    /// [`Registry::work_handler`](crate::process::Registry::work_handler) in
    /// child processes, started with `options`: each becomes a handler of
    /// this manager under its name, and each of its runs runs in a child
    /// (this executable started again; a child serves one run at a time,
    /// and the manager keeps up to [`workers`](Self::workers) of them).
    /// Handlers registered with [`handler`](Self::handler) still run on
    /// threads. What changes for a run in a child:
    /// - a crash of the handler (an abort, a segfault, a stack overflow,
    ///   an allocation past [`ProcessOptions::max_memory`]) ends only its
    ///   child: the run fails, its [`WorkInfo::failure`](super::WorkInfo::failure)
    ///   saying how the child died, and other works go on;
    /// - a run past its time limit, or cancelled, is told to stop
    ///   ([`WorkContext::is_stopped`] turns true in the child) and, if it
    ///   has not returned within the [`stop_grace`](Self::stop_grace), its
    ///   child is killed (SIGKILL, after SIGTERM and
    ///   [`ProcessOptions::kill_grace`] if one is set): the work really
    ///   stops, and follows the same rules as a thread run (a time-out
    ///   retries after its backoff and calls [`Handler::on_timeout`], in
    ///   the parent). The time limit counts from the run's dispatch, a
    ///   child's start included (a millisecond or two);
    /// - progress crosses the channel and reaches watchers as a thread
    ///   run's; input, output and progress are encoded as always;
    /// - **not available in a child:** this manager, which lives in the
    ///   parent. A handler there cannot call [`WorkManager::enqueue`] on
    ///   it (follow-up work goes in a [chain](super::WorkChain) or is
    ///   enqueued by the parent), and what it captured is its child's copy,
    ///   made by the child's own registration.
    ///
    /// Linux only: elsewhere [`spawn`](Self::spawn) fails with
    /// [`WorkError::Spawn`].
    ///
    /// # Errors
    ///
    /// At [`spawn`](Self::spawn): [`WorkError::NotRegistered`] if no work
    /// handler is registered (or `Registry::init` was not called);
    /// [`WorkError::Invalid`] if a name is registered both here and with
    /// [`Registry::work_handler`](crate::process::Registry::work_handler).
    ///
    /// # Examples
    ///
    /// A whole program is in
    /// [`Registry::work_handler`](crate::process::Registry::work_handler).
    /// Without a work handler registered for child processes there is
    /// nothing to run there:
    ///
    /// ```
    /// use isolates::process::ProcessOptions;
    /// use isolates::schedule::*;
    ///
    /// let err = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .processes(ProcessOptions::new())
    ///     .spawn()
    ///     .unwrap_err();
    /// assert!(matches!(err, WorkError::NotRegistered(_)));
    /// ```
    pub fn processes(mut self, options: ProcessOptions) -> Self {
        self.processes = Some(options);
        self
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
    ///     .spawn()
    ///     .unwrap();
    /// # manager.stop();
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
    /// Without [`processes`](Self::processes), a few due works per worker
    /// are handed to the workers' queue ahead, so that a worker that
    /// finishes one starts the next at once; they stay
    /// [`Enqueued`](super::WorkState::Enqueued) until their handler starts,
    /// and one cancelled or replaced meanwhile never runs. With
    /// `processes`, runs on threads and in child processes share this
    /// number, and each is handed out only to a free worker.
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

    /// How long a run past its limit, or cancelled, has to stop by itself
    /// before its worker is abandoned and replaced (default 5 s). A run in
    /// a child process ([`processes`](Self::processes)) has its child
    /// killed instead: it really stops.
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
    /// use isolates::Backoff;
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("n", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
    ///     .min_backoff(Duration::from_millis(100))
    ///     .spawn()
    ///     .unwrap();
    /// let spin = WorkRequest::once("n").backoff(Backoff::linear(Duration::ZERO));
    /// assert!(matches!(manager.enqueue(spin).wait(), Err(WorkError::Invalid(_))));
    /// let zero_limit = WorkRequest::once("n").time_limit(Duration::ZERO);
    /// assert!(matches!(manager.enqueue(zero_limit).wait(), Err(WorkError::Invalid(_))));
    /// let fine = WorkRequest::once("n").backoff(Backoff::linear(Duration::from_millis(100)));
    /// assert!(manager.enqueue(fine).wait().is_ok());
    /// # manager.stop();
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
    ///     .spawn()
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
    /// [`WorkError::Spawn`] if threads (or, with
    /// [`processes`](Self::processes), child processes) cannot be started,
    /// and the errors [`processes`](Self::processes) lists.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn spawn(mut self) -> Result<WorkManager, WorkError> {
        let in_child = self.take_process_handlers()?;
        let mut opening = self.store.opening(PAGE)?;
        let unreadable = std::mem::take(&mut opening.unreadable);
        let next_id = self
            .store
            .max_id()?
            .max(opening.records.iter().map(|r| r.id).max().unwrap_or(0))
            + 1;
        let reader = Arc::new(self.store.reader()?);
        let (events_tx, events_rx) = cb::unbounded();
        let registry = Arc::new(Registry {
            handlers: self.handlers,
            in_child: in_child.iter().cloned().collect(),
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
            .spawn(Arc::clone(&registry))
            .map_err(|e| WorkError::Spawn(e.to_string()))?;
        let children = match &self.processes {
            Some(options) => Some(child_pool(options, workers, self.data_limit)?),
            None => None,
        };
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
            (pool, children),
            Arc::clone(&registry),
            opening,
            next_id,
            Arc::clone(&store_error),
        )?;
        let live = Arc::new(Live::default());
        let running = live.enter();
        let core: SharedCore = Arc::new(Mutex::new(Some((core, events_rx.clone()))));
        let turns = Arc::clone(&core);
        let thread = std::thread::Builder::new()
            .name("isolates-work".into())
            .spawn(move || {
                let _running = running;
                Core::run(&core, events_rx);
            })
            .map_err(|e| WorkError::Spawn(e.to_string()))?;
        let tick = events_tx.clone();
        self.clock
            .subscribe(Box::new(move || tick.send(Event::Tick).is_ok()));
        Ok(WorkManager {
            shared: Arc::new(Shared {
                turns,
                events: events_tx,
                reader,
                store_error,
                unreadable,
                handlers: registry.handlers.keys().cloned().collect(),
                constraints: self.constraints.keys().cloned().collect(),
                min_interval: self.min_interval,
                min_backoff: self.min_backoff,
                data_limit: self.data_limit,
                key,
                scheduler: thread.thread().id(),
                live,
            }),
        })
    }
}

impl WorkManagerBuilder {
    /// With [`processes`](Self::processes): adds the handlers registered
    /// for child processes to this manager's; returns their names.
    fn take_process_handlers(&mut self) -> Result<Vec<String>, WorkError> {
        if self.processes.is_none() {
            return Ok(Vec::new());
        }
        let registered = super::child::registered();
        if registered.is_empty() {
            return Err(WorkError::NotRegistered(
                "WorkManagerBuilder::processes was set, but no work handler is registered for \
                 child processes: register them with isolates::process::Registry::work_handler \
                 and call init, first thing in main"
                    .into(),
            ));
        }
        let mut names = Vec::new();
        for (name, handler) in registered {
            if self.handlers.contains_key(&name) {
                return Err(WorkError::Invalid(format!(
                    "the handler {name:?} is registered both on the builder (a thread) and with \
                     process::Registry::work_handler (a child process): register it once"
                )));
            }
            self.handlers.insert(name.clone(), handler);
            names.push(name);
        }
        Ok(names)
    }
}

/// The process pool that runs handlers in child processes: up to
/// `workers` children, started as runs need them and ended after a minute
/// idle.
fn child_pool(
    options: &ProcessOptions,
    workers: usize,
    data_limit: usize,
) -> Result<Pool<ChildRunner>, WorkError> {
    Pool::<ChildRunner>::builder()
        .name("work-child")
        .autoscale(0, workers, CHILD_IDLE)
        .process(options.clone())
        .spawn(ChildArgs { data_limit })
        .map_err(|e| match e {
            crate::SpawnError::NotRegistered(why) => WorkError::NotRegistered(why),
            e => WorkError::Spawn(e.to_string()),
        })
}

/// How long a child process that runs handlers may stay idle.
const CHILD_IDLE: Duration = Duration::from_secs(60);

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
            processes: None,
            log: None,
        }
    }
}

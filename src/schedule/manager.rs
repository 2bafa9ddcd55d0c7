//! The work manager: requests in, snapshots and watches out.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::{Condvar, Mutex};

use super::clock;
use super::error::WorkError;
use super::event::Event;
use super::handler;
use super::operation::Operation;
use super::outbox::StoreErrorSlot;
use super::pace;
use super::request::{
    self, Enqueued, ExistingWork, Spec, WorkChain, WorkId, WorkInfo, WorkQuery, WorkRequest,
};
use super::store::{StoreError, StoreReader, UnreadableWork};
use super::watch::WorkWatch;
#[cfg(doc)]
use super::{WorkContext, WorkManagerBuilder};
use crate::oneshot;

/// Runs scheduled work: see the [module documentation](super).
///
/// Clones share one manager. It stops with [`stop`](Self::stop)
/// or when the last clone is dropped; a handler that holds a clone keeps
/// it alive, so call `stop` then.
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
///     .spawn()
///     .unwrap();
///
/// // The report gets the download's output as its input.
/// let chain = WorkChain::new(WorkRequest::once("download").input("https://example.com"))
///     .then(WorkRequest::once("report"));
/// let ids = manager.enqueue_unique("daily", ExistingWork::Keep, chain).wait().unwrap();
/// let report = manager.wait_finished(ids.ids()[1], Duration::from_secs(10)).unwrap();
/// assert_eq!(report.output::<String>(), Some(Ok("19 bytes".into())));
/// assert_eq!(manager.infos(&WorkQuery::UniqueName("daily".into())).len(), 2);
/// manager.stop();
/// ```
#[derive(Clone)]
pub struct WorkManager {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for WorkManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkManager").finish_non_exhaustive()
    }
}

impl WorkManager {
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
        let caller = handler::current_work(self.shared.key);
        let event = Event::Enqueue {
            stages,
            unique,
            caller,
            reply,
        };
        if self.shared.events.send(event).is_err() {
            return Operation::resolved(Err(WorkError::Stopped));
        }
        let operation = Operation::waiting(rx);
        if caller.is_some() {
            // A handler's thread is one of the manager's workers: it does
            // not run the scheduler (whose turn hands runs to them).
            return operation;
        }
        // Not the manager's shared record: an operation kept must not keep
        // the manager from stopping when its last handle goes.
        let core = Arc::clone(&self.shared.turns);
        operation.with_turn(Box::new(move || super::core::Core::caller_turn(&core)))
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
                    backoff: req.backoff.into(),
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
    ///     .spawn()
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

    /// The work `id`, as last stored; never blocks for long. It is read
    /// from the store (one indexed row), also after the manager stopped;
    /// `None` if the store holds no readable work `id`, or cannot be read
    /// (see [`store_error`](Self::store_error) and the log).
    ///
    /// # Examples
    ///
    /// See [`WorkInfo`].
    pub fn info(&self, id: WorkId) -> Option<WorkInfo> {
        self.infos(&WorkQuery::Id(id)).into_iter().next()
    }

    /// The works `query` selects, by id, as last stored. They are read
    /// from the store: a tag or a unique name through its index, every
    /// work for [`WorkQuery::All`] (its cost grows with the store). Empty
    /// if the store cannot be read (the error is logged).
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn infos(&self, query: &WorkQuery) -> Vec<WorkInfo> {
        self.shared.reader.infos(query).unwrap_or_else(|e| {
            tracing::error!(target: "isolates", error = %e,
                "the work store could not be read for a query");
            Vec::new()
        })
    }

    /// Watches the works `query` selects: see [`WorkWatch`].
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn watch(&self, query: WorkQuery) -> WorkWatch {
        self.watch_with(query, None)
    }

    /// Watches the changes to the works `query` selects, from the next
    /// written turn on, with no snapshot of them first; `registered` is
    /// told once the watch is in place: a read of the store after that
    /// misses no change.
    pub(super) fn watch_changes(
        &self,
        query: WorkQuery,
        registered: oneshot::Sender<()>,
    ) -> WorkWatch {
        self.watch_with(query, Some(registered))
    }

    /// A watch of `query`'s changes; `registered`, if given, is told once
    /// it is in place.
    fn watch_with(&self, query: WorkQuery, registered: Option<oneshot::Sender<()>>) -> WorkWatch {
        let (to, rx) = cb::unbounded();
        let alive = Arc::new(());
        let _ = self.shared.events.send(Event::Watch {
            query,
            to,
            alive: Arc::downgrade(&alive),
            registered,
        });
        WorkWatch::new(rx, alive)
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
    ///     .spawn()
    ///     .unwrap();
    /// let id = manager.enqueue(WorkRequest::periodic("tick", Duration::from_secs(3600)))
    ///     .wait().unwrap().ids()[0];
    /// let info = manager.wait_for(id, Duration::from_secs(10), |i| i.periods == 1).unwrap();
    /// assert_eq!(info.state, WorkState::Enqueued); // periodic work comes back
    /// # manager.stop();
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
                Some(d) => watch.next_until(Some(d.max(Instant::now())))?,
                None => watch.next_until(None)?,
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
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).spawn().unwrap();
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
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).spawn().unwrap();
    /// assert_eq!(manager.store_error(), None);
    /// ```
    pub fn store_error(&self) -> Option<StoreError> {
        self.shared.store_error.get()
    }

    /// Rows of the store that could not be read when the manager started,
    /// among those it read then (every work not enqueued, and the enqueued
    /// works due first); they are left in the store untouched, and the rest
    /// runs. An unreadable row of later enqueued work is found when its
    /// time comes: it is logged and left as it is.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).spawn().unwrap();
    /// assert!(manager.unreadable().is_empty());
    /// ```
    pub fn unreadable(&self) -> &[UnreadableWork] {
        &self.shared.unreadable
    }

    /// Stops the scheduler and the workers; returns at once (see
    /// [`join`](Self::join)). Runs in progress are told to stop
    /// ([`WorkContext::is_stopped`]) and stay enqueued in the store, to run
    /// again on the next start. That holds for a run that returns within
    /// the stop grace too, whatever it returns: as Android's WorkManager
    /// ignores the result of a stopped worker, a stopped run is not
    /// recorded as finished (a handler that may be stopped after its side
    /// effect must be safe to run again). The grace only bounds how long
    /// [`join`](Self::join) waits for such runs to return. The scheduler's
    /// thread writes the store, then ends. Later requests answer
    /// [`WorkError::Stopped`]. Dropping the last clone of the manager stops
    /// it the same way, without waiting.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Waits at most `timeout` for the manager to end after a
    /// [`stop`](Self::stop): its store written, the runs returned (or the
    /// stop grace passed: a handler that ignores
    /// [`WorkContext::is_stopped`] longer is left running; a manager
    /// started again on the same store in this process could then run its
    /// work beside it), and its OS wake-up set a last time. Returns whether
    /// it ended; `false` at once when called from one of its own handlers
    /// (the manager waits for that run to return). `Duration::MAX` waits
    /// for good.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).spawn().unwrap();
    /// assert!(!manager.is_finished());
    /// manager.stop();
    /// assert!(manager.join(Duration::from_secs(10)));
    /// assert!(manager.is_finished());
    /// ```
    pub fn join(&self, timeout: Duration) -> bool {
        if handler::current_work(self.shared.key).is_some()
            || std::thread::current().id() == self.shared.scheduler
        {
            return self.is_finished();
        }
        self.shared
            .live
            .wait_until(crate::time::deadline_after(timeout))
    }

    /// Whether the manager has ended (after a [`stop`](Self::stop)); never
    /// blocks.
    ///
    /// # Examples
    ///
    /// See [`join`](Self::join).
    pub fn is_finished(&self) -> bool {
        self.shared.live.wait_until(Some(Instant::now()))
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

pub(super) struct Shared {
    /// The scheduler, for a turn run by a caller that blocks for an
    /// answer (see `Core::caller_turn`).
    pub(super) turns: super::core::SharedCore,
    pub(super) events: cb::Sender<Event>,
    /// Reads the store for queries.
    pub(super) reader: Arc<StoreReader>,
    pub(super) store_error: Arc<StoreErrorSlot>,
    pub(super) unreadable: Vec<UnreadableWork>,
    pub(super) handlers: HashSet<String>,
    pub(super) constraints: HashSet<String>,
    pub(super) min_interval: Duration,
    pub(super) min_backoff: Duration,
    pub(super) data_limit: usize,
    pub(super) key: u64,
    /// The scheduler's thread (a `join` there would wait for itself).
    pub(super) scheduler: ThreadId,
    /// The manager's threads still running: the scheduler, and those
    /// keeping OS wake-ups set ([`WorkManager::wake_with_os`]), which end
    /// with the scheduler, after their last update.
    pub(super) live: Arc<Live>,
}

impl Shared {
    fn stop(&self) {
        let _ = self.events.send(Event::Shutdown);
    }
}

/// Counts a manager's running threads; [`join`](WorkManager::join) waits
/// for none to be left.
#[derive(Default)]
pub(super) struct Live {
    count: Mutex<usize>,
    ended: Condvar,
}

impl Live {
    /// Counts a thread about to start, until the guard (moved into it) is
    /// dropped: when it ends, or at once if it could not start.
    pub(super) fn enter(self: &Arc<Self>) -> LiveGuard {
        *self.count.lock() += 1;
        LiveGuard(Arc::clone(self))
    }

    /// Waits until no thread runs or `deadline` passes (forever if
    /// `None`); returns whether none runs.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut count = self.count.lock();
        while *count > 0 {
            if crate::time::wait(&self.ended, &mut count, deadline) {
                break;
            }
        }
        *count == 0
    }
}

/// One running thread of a manager: see [`Live::enter`].
pub(super) struct LiveGuard(Arc<Live>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock();
        *count -= 1;
        if *count == 0 {
            self.0.ended.notify_all();
        }
    }
}

/// The last clone stops the manager without waiting: its thread ends in
/// the background.
impl Drop for Shared {
    fn drop(&mut self) {
        self.stop();
    }
}

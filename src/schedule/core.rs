//! The scheduler: the works, the store and the runs, behind one lock
//! that its thread takes for each turn.
//!
//! Every change to a work happens in a turn, one turn at a time. Each turn
//! handles the events that arrived, starts the works that are due, then
//! writes every changed work in one store transaction before it answers
//! the callers whose change that transaction made durable. A caller that
//! blocks for the answer to its enqueue runs the turn itself when the lock
//! is free ([`Core::caller_turn`]): its request is written on its own
//! thread, without the two thread hand-offs (to the scheduler's thread and
//! back) that cost more than the write.
//!
//! This file is the loop that ties the parts together: the pure
//! [`Table`] decides (with [`unique`](super::unique) for unique names),
//! [`Runs`] starts and stops runs on the pool, and the [`Outbox`] writes
//! and publishes what the table changed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::Mutex;

use super::child::ChildRunner;
use super::clock::{Clock, from_ms};
use super::constraint::Constraint;
use super::error::WorkError;
use super::event::Event;
use super::handler::{Registry, RunOutput, RunRequest, Runner};
use super::outbox::{Outbox, StoreErrorSlot};
use super::request::{Enqueued, WorkId, WorkQuery, WorkState};
use super::runs::Runs;
use super::store::{Opening, StoreError, WorkStore};
use super::table::{Limits, PAGE, Table};
use super::unique;
use crate::error::TaskError;
use crate::oneshot;
use crate::pool::Pool;
use crate::unwind;

/// How often a failed store write is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How many runs per worker the scheduler hands to the thread pool at
/// most, those in progress included: the rest wait in the pool's queue,
/// and a worker that finishes one takes the next at once (see
/// [`Runs::queues_ahead`]). More are handed out in each turn, and fewer
/// turns are needed: 16 measured faster than 4 on no-op works.
const AHEAD: usize = 16;
/// At most this many more runs than workers wait in the pool's queue (a
/// large pool's queue holds no more inputs than that).
const AHEAD_MAX: usize = 64;

/// What a headless run learns from the scheduler: the works it started,
/// and those its stop interrupted.
#[derive(Default)]
pub(crate) struct RunLog {
    pub(crate) started: Mutex<Vec<u64>>,
    pub(crate) interrupted: Mutex<Vec<u64>>,
}

/// Settings the scheduler needs.
pub(crate) struct Settings {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) constraints: HashMap<String, Arc<dyn Constraint>>,
    pub(crate) max_running: usize,
    pub(crate) time_limit: Duration,
    /// The least wait before a retry, whatever a stored backoff says.
    pub(crate) min_backoff: Duration,
    pub(crate) stop_grace: Duration,
    pub(crate) constraint_poll: Duration,
    pub(crate) keep_finished: Duration,
    /// Set for a headless run.
    pub(crate) log: Option<Arc<RunLog>>,
}

/// The scheduler and a receiver of its events, shared by its thread and
/// the callers that run a turn ([`Core::caller_turn`]); empty once it has
/// shut down, so that neither the store nor the receiver outlives it (a
/// request sent to a stopped manager then fails at once).
pub(crate) type SharedCore = Arc<Mutex<Option<(Core, cb::Receiver<Event>)>>>;

pub(crate) struct Core {
    table: Table,
    runs: Runs,
    outbox: Outbox,
    settings: Settings,
    registry: Arc<Registry>,
    /// Handlers or constraints missing for stored work, warned once.
    warned: HashSet<String>,
    stopping_down: bool,
    /// When the constraints of running works were last looked at.
    running_checked_at: Option<Instant>,
    /// A recheck was asked for: look at running works' constraints now.
    recheck: bool,
    /// Waiting for the scheduler to be idle ([`Event::WhenIdle`]).
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// When loading the next page of enqueued works last failed: tried
    /// again a store retry later.
    page_failed_at: Option<Instant>,
    /// When the scheduler's thread plans to wake (`None`: only for an
    /// event).
    sleep_until: Option<Instant>,
    /// The constraints each running work's run was started under (those
    /// with none are not here).
    run_constraints: HashMap<u64, Vec<String>>,
}

impl Core {
    /// The scheduler over `store`, with the works `opening` loaded from
    /// it (and the prerequisites of its blocked works); the changes the
    /// load made are written before it returns.
    pub(crate) fn new(
        store: WorkStore,
        settings: Settings,
        pools: (Pool<Runner>, Option<Pool<ChildRunner>>),
        registry: Arc<Registry>,
        opening: Opening,
        next_id: u64,
        store_error: Arc<StoreErrorSlot>,
    ) -> Result<Self, StoreError> {
        let limits = Limits {
            keep_finished: settings.keep_finished,
            min_backoff: settings.min_backoff,
            data_limit: registry.data_limit,
        };
        let mut records = opening.records;
        // Blocked works are decided from their prerequisites: stored
        // enqueued ones are loaded with them.
        let held: HashSet<u64> = records.iter().map(|r| r.id).collect();
        let missing: BTreeSet<u64> = records
            .iter()
            .filter(|r| r.state == WorkState::Blocked)
            .flat_map(|r| r.prerequisites.iter().copied())
            .filter(|p| !held.contains(p))
            .collect();
        for id in missing {
            records.extend(store.select(&WorkQuery::Id(WorkId(id)))?);
        }
        let mut table = Table::new(limits, next_id);
        table.load(records, super::clock::to_ms(settings.clock.now()));
        table.set_horizon(opening.horizon);
        table.reindex(&opening.unindexed);
        let mut outbox = Outbox::new(store, store_error);
        // What loading changed (interrupted runs enqueued again...) is
        // what queries see from the start; a failure is retried by the
        // first turn.
        outbox.flush(&mut table);
        Ok(Core {
            table,
            runs: Runs::new(pools.0, pools.1, Arc::clone(&registry), settings.stop_grace),
            outbox,
            settings,
            registry,
            warned: HashSet::new(),
            stopping_down: false,
            running_checked_at: None,
            recheck: false,
            idle_waiters: Vec::new(),
            page_failed_at: None,
            sleep_until: None,
            run_constraints: HashMap::new(),
        })
    }

    /// Loads the next page of stored enqueued works once the clock reaches
    /// the table's horizon (see `table/lazy.rs`).
    fn page_in(&mut self, now: i64) {
        let Some(horizon) = self.table.horizon() else {
            return;
        };
        let retrying = self
            .page_failed_at
            .is_some_and(|t| t.elapsed() < STORE_RETRY);
        if horizon.0 > now || retrying {
            return;
        }
        match self.outbox.store().due_after(horizon, PAGE) {
            Ok((records, next)) => {
                self.page_failed_at = None;
                self.table.take_page(records, next, now);
            }
            Err(e) => {
                tracing::error!(target: "isolates", error = %e,
                    "the work store could not be read for the next due works; retrying");
                self.page_failed_at = Some(Instant::now());
            }
        }
    }

    /// Brings the stored enqueued works `query` selects into the table for
    /// this turn, so that a cancel or a unique name's policy sees them.
    fn fault_in(&mut self, query: &WorkQuery, now: i64) -> Result<(), WorkError> {
        if self.table.horizon().is_none() {
            // Every enqueued work is held.
            return Ok(());
        }
        let found = self.outbox.store().enqueued(query)?;
        self.table.fault_in(found, now);
        Ok(())
    }

    fn now(&self) -> i64 {
        super::clock::to_ms(self.settings.clock.now())
    }

    /// Tells the runs of the works the table stopped (cancelled, replaced,
    /// finished) to stop.
    fn apply_halts(&mut self) {
        for id in self.table.take_halts() {
            self.runs.halt(id);
        }
    }

    /// The thread's loop; returns when shut down, with the scheduler (and
    /// its store) dropped: `core` is left empty, so that a caller holding
    /// it keeps nothing alive.
    pub(crate) fn run(core: &SharedCore, events: cb::Receiver<Event>) {
        let mut wait: Option<Duration> = Some(Duration::ZERO);
        loop {
            // Events are only taken under the lock, in the channel's order:
            // a caller's turn and this thread's never handle one sender's
            // events out of order.
            let mut ready = cb::Select::new();
            ready.recv(&events);
            match wait {
                Some(d) => drop(ready.ready_timeout(d)),
                None => drop(ready.ready()),
            }
            let mut slot = core.lock();
            let Some((this, _)) = slot.as_mut() else {
                return;
            };
            this.drain(&events);
            if this.stopping_down {
                if let Some((mut this, _)) = slot.take() {
                    this.shut_down(&events);
                }
                return;
            }
            wait = this.turn();
            this.sleep_until = wait.map(|d| Instant::now() + d);
        }
    }

    /// A turn run by a caller that blocks for its request's answer, when
    /// the scheduler is between turns: the request is then handled and
    /// written on the caller's thread, which saves the two thread
    /// hand-offs (caller → scheduler → caller) of a commit. The
    /// scheduler's thread is told if the turn left it something to do
    /// sooner than it planned to wake. Does nothing while a turn runs
    /// elsewhere (the caller then waits as usual).
    pub(crate) fn caller_turn(core: &SharedCore) {
        let Some(mut slot) = core.try_lock() else {
            return;
        };
        let Some((this, events)) = slot.as_mut() else {
            return;
        };
        if this.stopping_down {
            return;
        }
        this.drain(events);
        let nudge = if this.stopping_down {
            true
        } else {
            let wait = this.turn();
            match (wait.map(|d| Instant::now() + d), this.sleep_until) {
                (Some(at), Some(planned)) => at < planned,
                (Some(_), None) => true,
                (None, _) => false,
            }
        };
        if nudge {
            let _ = this.registry.events.send(Event::Wake);
        }
    }

    /// Handles what arrived, in bounded batches (the rest waits for the
    /// next turn).
    fn drain(&mut self, events: &cb::Receiver<Event>) {
        for _ in 0..4096 {
            match events.try_recv() {
                Ok(event) => self.handle(event),
                Err(cb::TryRecvError::Empty) => break,
                Err(cb::TryRecvError::Disconnected) => {
                    self.stopping_down = true;
                    break;
                }
            }
        }
    }

    /// Everything a turn does after its events: limits, constraints,
    /// dispatch, the write and its replies; how long to sleep after it.
    fn turn(&mut self) -> Option<Duration> {
        let now = self.now();
        for work in self.runs.check_limits() {
            let retiring = self.table.is_retiring(work);
            self.timed_out(work, now);
            if retiring {
                self.table.end_retired(work, now);
            }
        }
        self.runs.check_stopping();
        let watching = self.check_running_constraints();
        self.page_in(now);
        let (next, waiting) = self.dispatch(now);
        let next = (next, waiting || watching);
        self.table.prune(now);
        let flushed = self.outbox.flush(&mut self.table);
        let paged = self.table.horizon().is_none_or(|h| h.0 > now);
        if flushed && paged && self.runs.is_idle() {
            // Nothing runs, and dispatch started whatever could start:
            // the work still due waits on a constraint or a handler.
            for waiter in self.idle_waiters.drain(..) {
                waiter.send(());
            }
        }
        self.next_wait(now, next, flushed)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Enqueue {
                stages,
                unique,
                caller,
                reply,
            } => {
                let now = self.now();
                let outcome = match unique {
                    None => Ok(Enqueued::New(self.table.add_chain(
                        stages,
                        None,
                        Vec::new(),
                        now,
                    ))),
                    Some((name, policy)) => {
                        let running_caller = caller.filter(|&id| self.runs.is_running(id));
                        self.fault_in(&WorkQuery::UniqueName(name.clone()), now)
                            .and_then(|()| {
                                unique::enqueue_unique(
                                    &mut self.table,
                                    stages,
                                    name,
                                    policy,
                                    running_caller,
                                    now,
                                )
                            })
                    }
                };
                self.outbox.reply(Box::new(move || {
                    reply.send(outcome);
                }));
            }
            Event::Cancel { query, reply } => {
                let now = self.now();
                let outcome = self
                    .fault_in(&query, now)
                    .map(|()| self.table.cancel(&query, now));
                self.outbox.reply(Box::new(move || {
                    reply.send(outcome);
                }));
            }
            Event::Watch {
                query,
                to,
                alive,
                registered,
            } => self.outbox.watch(query, to, alive, registered),
            Event::Started { work, task, at } => self.started(work, task, at),
            Event::Done { work, task } => self.finished(work, task),
            Event::Progress { work, task, bytes } => {
                // Only from the run in progress: a stopped run's late
                // progress is dropped.
                if self.runs.is_current(work, task) {
                    self.table.progress(work, bytes);
                }
            }
            Event::ChildProgress { work, task } => {
                if let Some(bytes) = self.runs.take_progress(work, task) {
                    self.table.progress(work, bytes);
                }
            }
            Event::Returned { work, task } => self.runs.returned(work, task),
            Event::Tick => self.recheck = true,
            Event::Wake => {}
            Event::WhenIdle(waiter) => self.idle_waiters.push(waiter),
            Event::Shutdown => self.stopping_down = true,
        }
        self.apply_halts();
    }

    // ---- running ---------------------------------------------------------

    /// Stops the runs whose constraints no longer hold and puts their works
    /// back to enqueued, to run again once the constraints hold, as Android
    /// stops a worker whose constraints are lost (the handler sees
    /// [`is_stopped`](super::WorkContext::is_stopped)). Looks at most once
    /// per constraint poll, and at once after a recheck or a clock change.
    /// Returns whether a running work has constraints: the scheduler then
    /// polls.
    fn check_running_constraints(&mut self) -> bool {
        let runs = &self.runs;
        self.run_constraints.retain(|&id, _| runs.is_running(id));
        let watched: Vec<(u64, Vec<String>)> = self
            .run_constraints
            .iter()
            .filter(|(id, _)| self.table.get(**id).is_some())
            .map(|(id, constraints)| (*id, constraints.clone()))
            .collect();
        let recheck = std::mem::take(&mut self.recheck);
        if watched.is_empty() {
            return false;
        }
        let now = Instant::now();
        let due = recheck
            || self.running_checked_at.is_none_or(|at| {
                now.saturating_duration_since(at) >= self.settings.constraint_poll
            });
        if !due {
            return true;
        }
        self.running_checked_at = Some(now);
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        for (id, constraints) in watched {
            let holds = constraints.iter().all(|name| {
                *verdicts.entry(name.clone()).or_insert_with(|| {
                    self.settings
                        .constraints
                        .get(name)
                        .is_some_and(|c| unwind::catch(|| c.holds()).unwrap_or(false))
                })
            });
            if !holds && !self.runs.is_started(id) {
                // Still in the pool's queue: taken back, it waits for its
                // constraints as enqueued work does.
                self.runs.halt(id);
            } else if !holds {
                tracing::debug!(target: "isolates", work = %WorkId(id),
                    "a running work's constraints stopped holding; it is stopped and enqueued");
                self.runs.halt(id);
                if self.table.is_retiring(id) {
                    // It replaced itself: its run has ended, and so has it
                    // (as at the end of any run of a retiring work).
                    let now = self.now();
                    self.table.end_retired(id, now);
                } else {
                    self.table.constraints_lost(id);
                }
            }
        }
        true
    }

    /// Starts due works while there is room; returns the earliest future
    /// start, and whether work waits on a constraint.
    fn dispatch(&mut self, now: i64) -> (Option<i64>, bool) {
        let mut waiting_constraint = false;
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        let mut start = Vec::new();
        let mut missed = Vec::new();
        let mut next = None;
        // A run told to stop keeps its worker until it returns or its
        // worker is abandoned. Runs on threads may wait in the pool's
        // queue: the pool's workers keep `max_running`.
        let workers = self.settings.max_running;
        let handed = if self.runs.queues_ahead() {
            workers
                .saturating_mul(AHEAD)
                .min(workers.saturating_add(AHEAD_MAX))
        } else {
            workers
        };
        let room = handed.saturating_sub(self.runs.busy());
        for (at, id) in self.table.due() {
            if at > now {
                next = Some(at);
                break;
            }
            if start.len() >= room {
                break;
            }
            // Handed to the pool already, waiting there to start.
            if self.runs.is_stopping(id) || self.runs.is_running(id) {
                continue;
            }
            let Some(rec) = self.table.get(id) else {
                continue;
            };
            if let Some((late, window)) = Table::missed_alarm(rec, at, now) {
                missed.push((id, late, window));
                continue;
            }
            if !self.registry.handlers.contains_key(&rec.handler) {
                if self.warned.insert(format!("h:{}", rec.handler)) {
                    tracing::warn!(target: "isolates", work = %WorkId(id), handler = %rec.handler,
                        "stored work names a handler this program does not register; it waits");
                }
                continue;
            }
            let mut holds = true;
            for name in &rec.constraints {
                let verdict = match verdicts.get(name) {
                    Some(&v) => v,
                    None => {
                        let v = match self.settings.constraints.get(name) {
                            Some(c) => unwind::catch(|| c.holds()).unwrap_or(false),
                            None => {
                                if self.warned.insert(format!("c:{name}")) {
                                    tracing::warn!(target: "isolates", constraint = %name,
                                        "stored work names a constraint this program does not \
                                         register; it waits");
                                }
                                false
                            }
                        };
                        verdicts.insert(name.clone(), v);
                        v
                    }
                };
                if !verdict {
                    holds = false;
                    break;
                }
            }
            if !holds {
                waiting_constraint = true;
                continue;
            }
            start.push(id);
        }
        for (id, late, window) in missed {
            let why = format!(
                "the alarm missed its time by {late:?}, more than its window of {window:?} \
                 (MissedAlarm::SkipAfter): skipped"
            );
            self.table.cancel_one(id, &why, now);
        }
        self.apply_halts();
        for id in start {
            self.start(id);
        }
        (next, waiting_constraint)
    }

    /// Hands a run of due work `id` to a pool. Its work stays enqueued
    /// until the run starts: at once in a child process, when its handler
    /// starts on a thread ([`Event::Started`]).
    fn start(&mut self, id: u64) {
        let Some(rec) = self.table.get(id) else {
            return;
        };
        let limit = rec.time_limit.unwrap_or(self.settings.time_limit);
        let request = RunRequest {
            work: id,
            handler: rec.handler.clone(),
            input: rec.input.clone().unwrap_or_default(),
            // What `Table::start` makes it.
            attempt: rec.attempts.saturating_add(1),
        };
        let constraints = rec.constraints.clone();
        let now = self.now();
        let started = self.runs.start(id, request, limit, now);
        // The constraints this run was started under: an UPDATE that
        // changes the work's applies from its next run (Android watches a
        // running worker's own constraints), so the run is watched by
        // these.
        if constraints.is_empty() {
            self.run_constraints.remove(&id);
        } else {
            self.run_constraints.insert(id, constraints);
        }
        if started {
            self.mark_started(id);
        }
    }

    /// Work `id`'s run started: the work is running.
    fn mark_started(&mut self, id: u64) {
        self.table.start(id);
        if let Some(log) = &self.settings.log {
            log.started.lock().push(id);
        }
    }

    /// `task`, work `work`'s run on a thread, entered its handler at `at`.
    fn started(&mut self, work: u64, task: u64, at: Instant) {
        let now = self.now();
        if !self.runs.started(work, task, at, now) {
            return; // taken back or stopped before: already accounted for
        }
        if self.table.get(work).is_some() {
            self.mark_started(work);
        } else {
            // Let go from memory while its run waited (see `table/lazy.rs`):
            // it stays enqueued in the store, and runs when paged in again.
            self.runs.halt(work);
        }
    }

    /// A run resolved.
    fn finished(&mut self, work: u64, task: u64) {
        let Some(finished) = self.runs.take_result(work, task) else {
            return; // cancelled or shut down: already accounted for
        };
        let now = self.now();
        let result = finished.result;
        if finished.started.is_none() {
            let ran = matches!(
                result,
                Ok(_) | Err(TaskError::Panicked(_) | TaskError::Failed(_) | TaskError::Codec(_))
            );
            if !ran {
                // Never left the pool's queue (a pool that lost its last
                // worker, or closed): the work is still enqueued, and due.
                return;
            }
            // It ran without its start heard first (a handler this
            // program lacks fails before it starts; an input that cannot
            // be carried fails at once).
            self.mark_started(work);
        }
        let ran_at = finished.started.unwrap_or(now);
        let retiring = self.table.is_retiring(work);
        match result {
            Ok(RunOutput::Success(bytes)) => self.table.succeed(work, bytes, now, ran_at),
            Ok(RunOutput::Retry) => self.table.retry(work, None, now),
            Ok(RunOutput::Failure(why)) => self.table.fail(work, why, now, ran_at),
            Err(TaskError::TimedOut) => self.timed_out(work, now),
            Err(TaskError::Panicked(m)) => {
                let why = format!("the handler panicked: {m}");
                self.table.fail(work, why, now, ran_at);
            }
            Err(TaskError::Failed(why)) => self.table.fail(work, why, now, ran_at),
            Err(TaskError::Codec(e)) => {
                let why = format!("the run's data could not be carried: {e}");
                self.table.fail(work, why, now, ran_at);
            }
            // A child process that dies under its handler crashed there
            // (an abort, a segfault, its memory limit): as a panic, the
            // run fails. (Runs that were told to stop and killed are
            // accounted for already.)
            Err(TaskError::WorkerLost(why)) if finished.child => {
                let why = format!("the run's child process ended without a result: {why}");
                self.table.fail(work, why, now, ran_at);
            }
            Err(TaskError::WorkerLost(why)) => {
                let why = format!("its worker was lost: {why}");
                self.table.retry(work, Some(why), now);
            }
            // Not run: back in line as it was.
            Err(TaskError::PoolClosed | TaskError::Rejected) => self.table.requeue(work),
            Err(TaskError::Cancelled | TaskError::AlreadyTaken) => {}
        }
        if retiring {
            // Replaced from its own run: that run finished it.
            self.table.end_retired(work, now);
        }
    }

    /// Work `work`'s run passed its time limit (it was told to stop): it
    /// runs again after its backoff, and its handler's `on_timeout` is
    /// called.
    fn timed_out(&mut self, work: u64, now: i64) {
        let limit = self
            .table
            .get(work)
            .and_then(|r| r.time_limit)
            .unwrap_or(self.settings.time_limit);
        let why = format!("the run passed its time limit of {limit:?}");
        self.table.retry(work, Some(why), now);
        if let Some(rec) = self.table.get(work) {
            self.runs.on_timeout(rec.info());
        }
    }

    // ---- waiting and stopping --------------------------------------------

    /// How long to wait for events before the next turn (`None`: until one
    /// arrives).
    fn next_wait(
        &self,
        now: i64,
        (next, waiting): (Option<i64>, bool),
        flushed: bool,
    ) -> Option<Duration> {
        let mut wait: Option<Duration> = None;
        let mut at_most = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
        if let Some(d) = next.and_then(|at| self.settings.clock.real_wait(from_ms(at))) {
            at_most(d);
        }
        if waiting {
            at_most(self.settings.constraint_poll);
        }
        let instant = Instant::now();
        for at in self.runs.looks() {
            at_most(at.saturating_duration_since(instant));
        }
        if !flushed {
            at_most(STORE_RETRY);
        }
        if let Some(at) = self.table.next_prune()
            && let Some(d) = self.settings.clock.real_wait(from_ms(at.max(now)))
        {
            at_most(d);
        }
        // The next page is loaded when the clock reaches the horizon, and
        // not before a store retry after a failed load.
        if let Some(horizon) = self.table.horizon()
            && let Some(d) = self.settings.clock.real_wait(from_ms(horizon.0.max(now)))
        {
            let retry = self.page_failed_at.map_or(Duration::ZERO, |t| {
                (t + STORE_RETRY).saturating_duration_since(instant)
            });
            at_most(d.max(retry));
        }
        wait
    }

    /// Stops: runs in progress are told to stop and go back to enqueued
    /// (they run again on the next start), the store is written, and runs
    /// get up to the stop grace to return.
    fn shut_down(&mut self, events: &cb::Receiver<Event>) {
        // Runs still in the pool's queue are taken back: they never ran.
        let running: Vec<u64> = self.runs.running().collect();
        let started: Vec<u64> = running
            .iter()
            .copied()
            .filter(|&id| self.runs.is_started(id))
            .collect();
        if let Some(log) = &self.settings.log {
            log.interrupted.lock().extend(&started);
        }
        for id in running {
            self.runs.halt(id);
        }
        for id in started {
            self.table.requeue(id);
        }
        self.runs.shutdown_pool();
        if self.outbox.flush(&mut self.table) {
            self.outbox.release_ids();
        } else {
            tracing::error!(target: "isolates",
                "the work store could not be written at shutdown; the last changes are lost");
            self.outbox.drop_unwritten();
        }
        self.runs.wait_stopped(events);
    }
}

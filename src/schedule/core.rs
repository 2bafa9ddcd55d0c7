//! The scheduler: one thread that owns the works, the store and the runs.
//!
//! Every change to a work happens here, so the state machine needs no
//! locks. Each turn handles the events that arrived, starts the works that
//! are due, then writes every changed work in one store transaction before
//! it answers the callers whose change that transaction made durable.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::{Mutex, RwLock};

use super::clock::{Clock, dur_ms, from_ms};
use super::constraint::Constraint;
use super::handler::{Registry, RunOutput, RunRequest, Runner};
use super::request::{
    Alarm, Enqueued, ExistingWork, InputMerger, MissedAlarm, WorkId, WorkInfo, WorkQuery, WorkState,
};
use super::store::{Record, WorkStore};
use super::{Spec, WorkError};
use crate::codec::{Bincode, Codec};
use crate::error::TaskError;
use crate::oneshot;
use crate::pool::{Pool, Task, TaskHandle, TaskWatch};
use crate::unwind;

/// How often a failed store write is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How soon a run told to stop is looked at again while it is executing
/// but not in its handler: about to enter it, or just returned from it
/// (both take microseconds). A run in its handler says when it returns
/// ([`Event::Returned`]) and is not looked at.
const STOP_CHECK: Duration = Duration::from_millis(20);
/// The longest of those looks' growing intervals.
const STOP_CHECK_MAX: Duration = Duration::from_secs(1);
/// The least time (on the work clock, ms) between two looks for finished
/// work to delete; a look happens only once some may be deleted.
const PRUNE_EVERY: i64 = 60_000;
/// Why work replaced under its unique name was cancelled.
const REPLACED: &str = "replaced by new work under its unique name";
/// Why a run whose constraints stopped holding was stopped.
const CONSTRAINTS_LOST: &str = "its constraints stopped holding during the run; it runs again once \
                                they hold";

/// A reply sent once the change it reports is in the store.
type Reply = Box<dyn FnOnce() + Send>;

/// What reaches the scheduler thread.
pub(crate) enum Event {
    Enqueue {
        stages: Vec<Vec<Spec>>,
        unique: Option<(String, ExistingWork)>,
        caller: Option<u64>,
        reply: oneshot::Sender<Result<Enqueued, WorkError>>,
    },
    Cancel {
        query: WorkQuery,
        reply: oneshot::Sender<Result<usize, WorkError>>,
    },
    Watch {
        query: WorkQuery,
        to: cb::Sender<WorkInfo>,
        /// Dead once the watch is dropped.
        alive: Weak<()>,
    },
    Done {
        work: u64,
        task: u64,
    },
    Progress {
        work: u64,
        task: u64,
        bytes: Vec<u8>,
    },
    /// The handler of a run told to stop returned.
    Returned {
        work: u64,
        task: u64,
    },
    Tick,
    /// Answered once nothing runs and no work can start now: what a
    /// headless run waits for.
    WhenIdle(oneshot::Sender<()>),
    Shutdown,
}

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

/// A [`WorkWatch`](super::WorkWatch)'s end.
struct Watcher {
    query: WorkQuery,
    to: cb::Sender<WorkInfo>,
    alive: Weak<()>,
}

/// A run told to stop that may still be executing.
struct Stopping {
    task: u64,
    watch: TaskWatch,
    /// When its worker is abandoned (and replaced) if it still runs.
    kill_at: Instant,
    killed: bool,
    /// When to look at it again, while it executes out of its handler
    /// (see [`STOP_CHECK`]); `None` while the handler runs.
    look_at: Option<Instant>,
    /// The interval after the next look.
    look_every: Duration,
}

/// A run in progress.
struct Run {
    task: u64,
    handle: TaskHandle<Runner>,
    /// When it started, on the work clock (ms): a periodic run counts for
    /// the period it started in.
    started: i64,
}

pub(crate) struct Core {
    store: WorkStore,
    settings: Settings,
    pool: Pool<Runner>,
    registry: Arc<Registry>,
    records: HashMap<u64, Record>,
    /// Prerequisite → the works waiting for it.
    dependents: HashMap<u64, Vec<u64>>,
    unique: HashMap<String, Vec<u64>>,
    /// Enqueued works by earliest start.
    due: BTreeSet<(i64, u64)>,
    running: HashMap<u64, Run>,
    /// Works whose last run was told to stop (time limit, cancel) and may
    /// still be executing. They do not start again before it returned.
    stopping: HashMap<u64, Stopping>,
    next_id: u64,
    dirty: HashSet<u64>,
    deleted: Vec<u64>,
    replies: Vec<Reply>,
    watchers: Vec<Watcher>,
    /// Watches to register once this turn is written.
    new_watchers: Vec<Watcher>,
    infos: Arc<RwLock<HashMap<u64, WorkInfo>>>,
    store_error: Arc<StoreErrorSlot>,
    /// When finished work may first be deleted, on the work clock
    /// (`i64::MAX`: none is waiting to be).
    prune_at: i64,
    /// When finished work was last looked at for deleting.
    pruned_at: i64,
    /// Handlers or constraints missing for stored work, warned once.
    warned: HashSet<String>,
    stopping_down: bool,
    /// The last state of works deleted this turn because new work under
    /// their unique name superseded them: their watchers get it.
    gone: Vec<WorkInfo>,
    /// When the constraints of running works were last looked at.
    running_checked_at: Option<Instant>,
    /// A recheck was asked for: look at running works' constraints now.
    recheck: bool,
    /// Works whose prerequisites changed, to decide (see
    /// [`resolve_dependents`](Self::resolve_dependents)), with the time.
    cascade: Vec<(u64, i64)>,
    /// Whether a cascade is being worked through.
    cascading: bool,
    /// Waiting for the scheduler to be idle ([`Event::WhenIdle`]).
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: WorkStore,
        settings: Settings,
        pool: Pool<Runner>,
        registry: Arc<Registry>,
        records: Vec<Record>,
        next_id: u64,
        infos: Arc<RwLock<HashMap<u64, WorkInfo>>>,
        store_error: Arc<StoreErrorSlot>,
    ) -> Self {
        let mut core = Core {
            store,
            settings,
            pool,
            registry,
            records: HashMap::new(),
            dependents: HashMap::new(),
            unique: HashMap::new(),
            due: BTreeSet::new(),
            running: HashMap::new(),
            stopping: HashMap::new(),
            next_id,
            dirty: HashSet::new(),
            deleted: Vec::new(),
            replies: Vec::new(),
            watchers: Vec::new(),
            new_watchers: Vec::new(),
            infos,
            store_error,
            // The first turn looks at the work loaded from the store.
            prune_at: i64::MIN,
            pruned_at: i64::MIN,
            warned: HashSet::new(),
            stopping_down: false,
            gone: Vec::new(),
            running_checked_at: None,
            recheck: false,
            cascade: Vec::new(),
            cascading: false,
            idle_waiters: Vec::new(),
        };
        let now = core.now();
        for mut rec in records {
            // Stored before works carried their handler's name as a tag.
            if !rec.tags.contains(&rec.handler) {
                rec.tags.insert(0, rec.handler.clone());
            }
            if rec.retire && !rec.state.is_finished() {
                // It replaced itself, and its last run was interrupted.
                rec.state = WorkState::Cancelled;
                rec.finished_at = Some(now);
                rec.failure = Some(REPLACED.to_owned());
                core.dirty.insert(rec.id);
            } else if rec.state == WorkState::Running {
                // Interrupted by a crash or a kill: it runs again.
                rec.state = WorkState::Enqueued;
                rec.next_run_at = rec.next_run_at.min(now);
                rec.progress = None;
                core.dirty.insert(rec.id);
            }
            core.insert(rec);
        }
        // A prerequisite may have finished (or become unreadable) without
        // its dependents being decided before the last stop.
        let mut blocked: Vec<u64> = core
            .records
            .values()
            .filter(|r| r.state == WorkState::Blocked)
            .map(|r| r.id)
            .collect();
        blocked.sort_unstable();
        for id in blocked {
            core.resolve_blocked(id, now);
        }
        core.infos
            .write()
            .extend(core.records.values().map(|r| (r.id, r.info())));
        core
    }

    fn now(&self) -> i64 {
        super::clock::to_ms(self.settings.clock.now())
    }

    /// Adds a record to the indexes.
    fn insert(&mut self, rec: Record) {
        for &p in &rec.prerequisites {
            self.dependents.entry(p).or_default().push(rec.id);
        }
        if let Some(name) = &rec.unique {
            self.unique.entry(name.clone()).or_default().push(rec.id);
        }
        if rec.state == WorkState::Enqueued {
            self.due.insert((rec.next_run_at, rec.id));
        }
        self.records.insert(rec.id, rec);
    }

    /// Changes a record, keeping the due index right and marking it for
    /// the store.
    fn update(&mut self, id: u64, f: impl FnOnce(&mut Record)) {
        let Some(rec) = self.records.get_mut(&id) else {
            return;
        };
        let was_finished = rec.state.is_finished();
        if rec.state == WorkState::Enqueued {
            self.due.remove(&(rec.next_run_at, id));
        }
        f(rec);
        // Progress is the run's: gone when the run ends (Android clears it
        // when a work finishes).
        if rec.state != WorkState::Running {
            rec.progress = None;
        }
        if rec.state == WorkState::Enqueued {
            self.due.insert((rec.next_run_at, id));
        }
        let finished = !was_finished && rec.state.is_finished();
        self.dirty.insert(id);
        if finished {
            self.arm_prune(id);
        }
    }

    /// Work `id` just finished: it may be deleted once kept long enough,
    /// and so may its finished prerequisites, which may have waited only
    /// for it.
    fn arm_prune(&mut self, id: u64) {
        let keep = dur_ms(self.settings.keep_finished);
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        let deletable = |r: &Record| {
            r.finished_at
                .filter(|_| r.state.is_finished())
                .map(|f| f.saturating_add(keep))
        };
        let prerequisites = rec
            .prerequisites
            .iter()
            .filter_map(|p| self.records.get(p).and_then(deletable));
        if let Some(at) = deletable(rec).into_iter().chain(prerequisites).min() {
            self.prune_at = self.prune_at.min(at);
        }
    }

    /// The thread's loop; returns when shut down.
    pub(crate) fn run(mut self, events: cb::Receiver<Event>) {
        let mut wait: Option<Duration> = Some(Duration::ZERO);
        loop {
            let first = match wait {
                Some(d) => events.recv_timeout(d).map_err(|e| e.is_disconnected()),
                None => events.recv().map_err(|_| true),
            };
            match first {
                Ok(event) => self.handle(event),
                Err(true) => self.stopping_down = true,
                Err(false) => {}
            }
            // Take what else arrived, in bounded batches.
            for _ in 0..4096 {
                match events.try_recv() {
                    Ok(event) => self.handle(event),
                    Err(_) => break,
                }
            }
            if self.stopping_down {
                self.shut_down(&events);
                return;
            }
            let now = self.now();
            self.check_stopping();
            let watching = self.check_running_constraints();
            let (next, waiting) = self.dispatch(now);
            let next = (next, waiting || watching);
            self.prune(now);
            let flushed = self.flush();
            if flushed && self.running.is_empty() && self.stopping.is_empty() {
                // Nothing runs, and dispatch started whatever could start:
                // the work still due waits on a constraint or a handler.
                for waiter in self.idle_waiters.drain(..) {
                    waiter.send(());
                }
            }
            wait = self.next_wait(now, next, flushed);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Enqueue {
                stages,
                unique,
                caller,
                reply,
            } => {
                let outcome = self.enqueue(stages, unique, caller);
                self.replies.push(Box::new(move || {
                    reply.send(outcome);
                }));
            }
            Event::Cancel { query, reply } => {
                let n = self.cancel(&query);
                self.replies.push(Box::new(move || {
                    reply.send(Ok(n));
                }));
            }
            Event::Watch { query, to, alive } => {
                // Registered after this turn's write, so its snapshot is
                // what the store (and `infos`) hold.
                self.new_watchers.push(Watcher { query, to, alive });
            }
            Event::Done { work, task } => self.finished(work, task),
            Event::Progress { work, task, bytes } => {
                // Only from the run in progress: a stopped run's late
                // progress is dropped.
                if self.running.get(&work).is_some_and(|r| r.task == task) {
                    self.update(work, |r| r.progress = Some(bytes));
                }
            }
            Event::Returned { work, task } => {
                if self.stopping.get(&work).is_some_and(|s| s.task == task) {
                    self.stopping.remove(&work);
                }
            }
            Event::Tick => self.recheck = true,
            Event::WhenIdle(waiter) => self.idle_waiters.push(waiter),
            Event::Shutdown => self.stopping_down = true,
        }
    }

    // ---- enqueueing ------------------------------------------------------

    fn enqueue(
        &mut self,
        stages: Vec<Vec<Spec>>,
        unique: Option<(String, ExistingWork)>,
        caller: Option<u64>,
    ) -> Result<Enqueued, WorkError> {
        let mut after: Vec<u64> = Vec::new();
        if let Some((name, policy)) = &unique {
            let existing: Vec<u64> = self
                .unique
                .get(name)
                .map(|ids| {
                    ids.iter()
                        .copied()
                        .filter(|id| self.records.contains_key(id))
                        .collect()
                })
                .unwrap_or_default();
            let unfinished: Vec<u64> = existing
                .iter()
                .copied()
                .filter(|id| !self.records[id].state.is_finished())
                .collect();
            let periodic = stages[0][0].periodic.is_some();
            let mut policy = *policy;
            if policy == ExistingWork::AppendOrReplace {
                let leaves = self.leaves(&existing);
                let broken = leaves.iter().any(|id| {
                    matches!(
                        self.records[id].state,
                        WorkState::Failed | WorkState::Cancelled
                    )
                });
                policy = if broken {
                    ExistingWork::Replace
                } else {
                    ExistingWork::Append
                };
            }
            match policy {
                ExistingWork::Keep if !unfinished.is_empty() => {
                    return Ok(Enqueued::Kept(unfinished.into_iter().map(WorkId).collect()));
                }
                ExistingWork::Update if !unfinished.is_empty() => {
                    let target = *unfinished.iter().max().expect("not empty");
                    if self.records[&target].periodic.is_some() != periodic {
                        return Err(WorkError::Invalid(format!(
                            "{} under {name:?} is {} work; UPDATE cannot turn it into {} work: \
                             use REPLACE",
                            WorkId(target),
                            if periodic { "one-off" } else { "periodic" },
                            if periodic { "periodic" } else { "one-off" },
                        )));
                    }
                    let spec = stages.into_iter().next().and_then(|s| s.into_iter().next());
                    let spec = spec.expect("validated: one request");
                    self.update_in_place(target, spec);
                    return Ok(Enqueued::Updated(WorkId(target)));
                }
                ExistingWork::Append => {
                    if let Some(&p) = unfinished
                        .iter()
                        .find(|id| self.records[id].periodic.is_some())
                    {
                        return Err(WorkError::Invalid(format!(
                            "{} under {name:?} is periodic work, which never finishes: nothing \
                             can run after it; use Keep or Replace",
                            WorkId(p)
                        )));
                    }
                    after = self.leaves(&existing);
                }
                ExistingWork::Replace => {
                    for id in unfinished {
                        let self_running = caller == Some(id) && self.running.contains_key(&id);
                        if self_running {
                            self.update(id, |r| r.retire = true);
                        } else {
                            self.cancel_one(id, REPLACED);
                        }
                    }
                    self.supersede(name, &existing);
                }
                // Keep or Update with nothing unfinished: start fresh.
                _ => self.supersede(name, &existing),
            }
        }
        let now = self.now();
        let name = unique.map(|(n, _)| n);
        let mut ids = Vec::new();
        let mut prev = after;
        for stage in stages {
            let mut this = Vec::new();
            for spec in stage {
                let id = self.next_id;
                self.next_id += 1;
                let rec = new_record(id, spec, name.clone(), prev.clone(), now);
                self.insert(rec);
                self.dirty.insert(id);
                if !prev.is_empty() {
                    self.resolve_blocked(id, now);
                }
                this.push(id);
                ids.push(WorkId(id));
            }
            prev = this;
        }
        Ok(Enqueued::New(ids))
    }

    /// Works among `ids` that no other work among them waits for.
    fn leaves(&self, ids: &[u64]) -> Vec<u64> {
        let set: HashSet<u64> = ids.iter().copied().collect();
        ids.iter()
            .copied()
            .filter(|id| {
                self.dependents
                    .get(id)
                    .is_none_or(|ds| !ds.iter().any(|d| set.contains(d)))
            })
            .collect()
    }

    /// Makes way for new work under `name`: the works `ids` that had it
    /// are deleted, as Android deletes the works that REPLACE (or KEEP and
    /// APPEND_OR_REPLACE over finished work) supersede. Unfinished ones
    /// were cancelled first, and their watchers get that last change; one
    /// replaced from its own run only loses the name, and is cancelled
    /// when that run ends.
    fn supersede(&mut self, name: &str, ids: &[u64]) {
        self.unique.remove(name);
        for &id in ids {
            if self.records.get(&id).is_some_and(|r| r.retire) {
                self.update(id, |r| r.unique = None);
            } else {
                self.delete(id);
            }
        }
    }

    /// Removes work `id` from the indexes and, at the next write, from the
    /// store and the snapshots; a change made this turn still reaches its
    /// watchers.
    fn delete(&mut self, id: u64) {
        let Some(rec) = self.records.remove(&id) else {
            return;
        };
        if rec.state == WorkState::Enqueued {
            self.due.remove(&(rec.next_run_at, id));
        }
        for p in &rec.prerequisites {
            if let Some(ds) = self.dependents.get_mut(p) {
                ds.retain(|&d| d != id);
            }
        }
        self.dependents.remove(&id);
        if self.dirty.remove(&id) {
            self.gone.push(rec.info());
        }
        self.deleted.push(id);
    }

    fn update_in_place(&mut self, id: u64, spec: Spec) {
        let now = self.now();
        self.update(id, |r| {
            r.handler = spec.handler;
            if spec.input.is_some() {
                r.input = spec.input;
            }
            r.tags = spec.tags;
            r.constraints = spec.constraints;
            r.backoff = spec.backoff;
            r.time_limit = spec.time_limit;
            r.input_merger = spec.input_merger;
            r.initial_delay = spec.initial_delay;
            r.periodic = spec.periodic;
            r.alarm = spec.alarm;
            if r.state == WorkState::Enqueued && r.retries == 0 {
                r.next_run_at = match r.periodic {
                    // Keeps its timing: same period, new window.
                    Some((interval, flex)) => {
                        r.period_start.saturating_add(interval.saturating_sub(flex))
                    }
                    None => match r.alarm {
                        // An alarm moves to its new time.
                        Some(alarm) => alarm.at.max(now),
                        None => r
                            .enqueued_at
                            .saturating_add(r.initial_delay)
                            .max(now.min(r.next_run_at)),
                    },
                };
            }
        });
    }

    /// Decides the fate of the works waiting on `id`, and of the works
    /// waiting on those, with a work list rather than recursion: a chain of
    /// any length (user-sized data) takes no more stack than one link.
    /// Called while a cascade is under way, it adds to that cascade's list.
    fn resolve_dependents(&mut self, id: u64, now: i64) {
        if let Some(ds) = self.dependents.get(&id) {
            // Reversed: popped in order, as the recursion visited them.
            self.cascade.extend(ds.iter().rev().map(|&d| (d, now)));
        }
        if self.cascading {
            return;
        }
        self.cascading = true;
        while let Some((d, at)) = self.cascade.pop() {
            self.resolve_blocked(d, at);
        }
        self.cascading = false;
    }

    /// Decides a blocked work's fate from its prerequisites.
    fn resolve_blocked(&mut self, id: u64, now: i64) {
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        if rec.state != WorkState::Blocked {
            return;
        }
        // A missing prerequisite is an unreadable row (finished work is
        // pruned only once its dependents finished): keep waiting.
        let Some(states) = rec
            .prerequisites
            .iter()
            .map(|p| self.records.get(p).map(|r| (*p, r.state)))
            .collect::<Option<Vec<(u64, WorkState)>>>()
        else {
            return;
        };
        if let Some((p, _)) = states.iter().find(|(_, s)| *s == WorkState::Cancelled) {
            let why = format!("its prerequisite {} was cancelled", WorkId(*p));
            self.cancel_one(id, &why);
        } else if let Some((p, _)) = states.iter().find(|(_, s)| *s == WorkState::Failed) {
            let why = format!("its prerequisite {} failed", WorkId(*p));
            self.fail_one(id, why, now, now);
        } else if states.iter().all(|(_, s)| *s == WorkState::Succeeded) {
            let merged = match rec.input {
                Some(_) => None,
                None => match self.merged_input(rec) {
                    Ok(input) => Some(input),
                    Err(why) => {
                        self.fail_one(id, why, now, now);
                        return;
                    }
                },
            };
            self.update(id, |r| {
                if r.input.is_none() {
                    r.input = merged;
                }
                r.state = WorkState::Enqueued;
                r.enqueued_at = now;
                r.next_run_at = first_run(r.alarm.as_ref(), r.initial_delay, now);
            });
        }
    }

    /// The input of `rec`, whose prerequisites all succeeded, made from
    /// their outputs as its merger says; an error if it is over the data
    /// limit.
    fn merged_input(&self, rec: &Record) -> Result<Vec<u8>, String> {
        let outputs: Vec<&[u8]> = rec
            .prerequisites
            .iter()
            .map(|p| {
                self.records
                    .get(p)
                    .and_then(|r| r.output.as_deref())
                    .unwrap_or_default()
            })
            .collect();
        let input = match rec.input_merger {
            // Whole values overwrite: the one listed last wins.
            InputMerger::Overwriting => outputs.last().copied().unwrap_or_default().to_vec(),
            // A sequence is its length then its elements: the outputs, as
            // encoded, make a `Vec` of them.
            InputMerger::ArrayCreating => {
                let mut bytes = Vec::new();
                Bincode::new()
                    .encode(&(outputs.len() as u64), &mut bytes)
                    .map_err(|e| format!("the merged input could not be encoded: {e}"))?;
                for output in outputs {
                    bytes.extend_from_slice(output);
                }
                bytes
            }
        };
        if input.len() > self.registry.data_limit {
            return Err(format!(
                "the merged outputs of its prerequisites are {} bytes, over the data limit of {}",
                input.len(),
                self.registry.data_limit
            ));
        }
        Ok(input)
    }

    // ---- cancelling ------------------------------------------------------

    fn cancel(&mut self, query: &WorkQuery) -> usize {
        let (mut targets, mut done): (Vec<u64>, Vec<u64>) = self
            .records
            .values()
            .filter(|r| r.selected_by(query))
            .map(|r| r.id)
            .partition(|id| !self.records[id].state.is_finished());
        targets.sort_unstable();
        done.sort_unstable();
        let before = self.count_finished(WorkState::Cancelled);
        for id in targets {
            self.cancel_one(id, "cancelled");
        }
        for id in done {
            self.cancel_downstream(id);
        }
        self.count_finished(WorkState::Cancelled) - before
    }

    /// Cancels the unfinished works that wait, directly or down a chain,
    /// on finished work `id`, which stays as it finished: Android's cancel
    /// of a succeeded prerequisite cancels what waits on it.
    fn cancel_downstream(&mut self, id: u64) {
        let why = format!(
            "{} was cancelled after it finished, and this work waited on it",
            WorkId(id)
        );
        let mut stack: Vec<u64> = self.dependents.get(&id).cloned().unwrap_or_default();
        let mut seen = HashSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            match self.records.get(&d) {
                // Finished too: look further down.
                Some(r) if r.state.is_finished() => {
                    stack.extend(self.dependents.get(&d).into_iter().flatten().copied());
                }
                // Cancels the rest of its chain too.
                Some(_) => self.cancel_one(d, &why),
                None => {}
            }
        }
    }

    fn count_finished(&self, state: WorkState) -> usize {
        self.records.values().filter(|r| r.state == state).count()
    }

    /// Cancels one unfinished work and, after it, the works waiting on it.
    fn cancel_one(&mut self, id: u64, why: &str) {
        let now = self.now();
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        if rec.state.is_finished() {
            return;
        }
        self.halt(id);
        self.update(id, |r| {
            r.state = WorkState::Cancelled;
            r.finished_at = Some(now);
            if why != "cancelled" {
                r.failure = Some(why.to_owned());
            }
        });
        self.resolve_dependents(id, now);
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
        let watched: Vec<(u64, Vec<String>)> = self
            .running
            .keys()
            .filter_map(|id| {
                let rec = self.records.get(id)?;
                (!rec.constraints.is_empty()).then(|| (*id, rec.constraints.clone()))
            })
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
            if !holds {
                tracing::debug!(target: "isolates", work = %WorkId(id),
                    "a running work's constraints stopped holding; it is stopped and enqueued");
                self.halt(id);
                self.update(id, |r| {
                    r.state = WorkState::Enqueued;
                    r.failure = Some(CONSTRAINTS_LOST.to_owned());
                });
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
        // worker is abandoned.
        let holding = self.stopping.values().filter(|s| !s.killed).count();
        let room = self
            .settings
            .max_running
            .saturating_sub(self.running.len() + holding);
        for &(at, id) in &self.due {
            if at > now {
                next = Some(at);
                break;
            }
            if start.len() >= room {
                break;
            }
            if self.stopping.contains_key(&id) {
                continue;
            }
            let rec = &self.records[&id];
            if let Some(Alarm {
                missed: MissedAlarm::SkipAfter(window),
                ..
            }) = rec.alarm
                && now.saturating_sub(at) > dur_ms(window)
            {
                missed.push((id, at, window));
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
        for (id, at, window) in missed {
            let late = Duration::from_millis(now.saturating_sub(at).unsigned_abs());
            let why = format!(
                "the alarm missed its time by {late:?}, more than its window of {window:?} \
                 (MissedAlarm::SkipAfter): skipped"
            );
            self.cancel_one(id, &why);
        }
        for id in start {
            self.start(id);
        }
        (next, waiting_constraint)
    }

    fn start(&mut self, id: u64) {
        self.update(id, |r| {
            r.state = WorkState::Running;
            r.attempts = r.attempts.saturating_add(1);
        });
        let rec = &self.records[&id];
        let limit = rec.time_limit.unwrap_or(self.settings.time_limit);
        let request = RunRequest {
            work: id,
            handler: rec.handler.clone(),
            input: rec.input.clone().unwrap_or_default(),
            attempt: rec.attempts,
        };
        if let Some(log) = &self.settings.log {
            log.started.lock().push(id);
        }
        let handle = self.pool.submit_task(Task::new(request).timeout(limit));
        let task = handle.id();
        let started = self.now();
        let events = self.registry.events.clone();
        handle.on_resolve(move |task| {
            let _ = events.send(Event::Done { work: id, task });
        });
        self.running.insert(
            id,
            Run {
                task,
                handle,
                started,
            },
        );
    }

    /// A run resolved.
    fn finished(&mut self, work: u64, task: u64) {
        if self.running.get(&work).is_none_or(|r| r.task != task) {
            return; // cancelled or shut down: already accounted for
        }
        let mut run = self.running.remove(&work).expect("checked");
        let now = self.now();
        let ran_at = run.started;
        let retiring = self.records.get(&work).is_some_and(|r| r.retire);
        let Some(result) = run.handle.try_take() else {
            return;
        };
        match result {
            Ok(RunOutput::Success(bytes)) => self.succeed(work, bytes, now, ran_at),
            Ok(RunOutput::Retry) => self.retry(work, None, now),
            Ok(RunOutput::Failure(why)) => self.fail_one(work, why, now, ran_at),
            Err(TaskError::TimedOut) => {
                self.stop(work, &run);
                let limit = self.records[&work]
                    .time_limit
                    .unwrap_or(self.settings.time_limit);
                let why = format!("the run passed its time limit of {limit:?}");
                self.retry(work, Some(why), now);
                let info = self.records[&work].info();
                if let Some(h) = self.registry.handlers.get(&info.handler).cloned() {
                    // Not on this thread: the callback may call the manager
                    // and wait for an answer only this thread gives.
                    let spawned = std::thread::Builder::new()
                        .name("isolates-work-timeout".into())
                        .spawn(move || {
                            if let Err(p) = unwind::catch(|| h.on_timeout(&info)) {
                                tracing::warn!(target: "isolates", work = %info.id,
                                    panic = %p.message, "a handler's on_timeout panicked");
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(target: "isolates", work = %WorkId(work), error = %e,
                            "no thread for on_timeout; it was not called");
                    }
                }
            }
            Err(TaskError::Panicked(m)) => {
                self.fail_one(work, format!("the handler panicked: {m}"), now, ran_at);
            }
            Err(TaskError::Failed(why)) => self.fail_one(work, why, now, ran_at),
            Err(TaskError::Codec(e)) => {
                let why = format!("the run's data could not be carried: {e}");
                self.fail_one(work, why, now, ran_at);
            }
            Err(TaskError::WorkerLost(why)) => {
                self.retry(work, Some(format!("its worker was lost: {why}")), now);
            }
            Err(TaskError::PoolClosed | TaskError::Rejected) => {
                // Not run: back in line as it was.
                self.update(work, |r| r.state = WorkState::Enqueued);
            }
            Err(TaskError::Cancelled | TaskError::AlreadyTaken) => {}
        }
        if retiring {
            // Replaced from its own run: that run finished it.
            self.cancel_one(work, REPLACED);
        }
    }

    /// A run that started at `ran_at` succeeded.
    fn succeed(&mut self, id: u64, output: Vec<u8>, now: i64, ran_at: i64) {
        self.conclude(id, Ok(output), now, ran_at);
    }

    fn retry(&mut self, id: u64, why: Option<String>, now: i64) {
        let min = self.settings.min_backoff;
        self.update(id, |r| {
            r.retries = r.retries.saturating_add(1);
            r.state = WorkState::Enqueued;
            let wait = r.backoff.delay_after(r.retries).max(min);
            r.next_run_at = now.saturating_add(dur_ms(wait));
            r.failure = why;
        });
    }

    /// Fails one-off work and its dependents; periodic work waits for its
    /// next period.
    /// `ran_at`: when the failed run started (`now` for work that did not
    /// run).
    fn fail_one(&mut self, id: u64, why: String, now: i64, ran_at: i64) {
        self.conclude(id, Err(why), now, ran_at);
    }

    /// Ends a run (or, for `Err`, a work that cannot run): one-off work
    /// finishes, periodic work moves to its next period; then the works
    /// waiting on it are decided.
    fn conclude(&mut self, id: u64, outcome: Result<Vec<u8>, String>, now: i64, ran_at: i64) {
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        if rec.state.is_finished() {
            return;
        }
        let periodic = rec.periodic.is_some();
        self.halt(id);
        self.update(id, |r| {
            r.retries = 0;
            let state = match outcome {
                Ok(output) => {
                    r.output = Some(output);
                    r.failure = None;
                    WorkState::Succeeded
                }
                Err(why) => {
                    r.failure = Some(why);
                    WorkState::Failed
                }
            };
            if periodic {
                next_period(r, ran_at);
            } else {
                r.state = state;
                r.finished_at = Some(now);
            }
        });
        self.resolve_dependents(id, now);
    }

    /// Tells work `id`'s run, if one is in progress, to stop, and keeps
    /// the work from starting again until that run returned.
    fn halt(&mut self, id: u64) {
        if let Some(run) = self.running.remove(&id) {
            run.handle.cancel();
            self.stop(id, &run);
        }
    }

    /// Watches `run`, told to stop, until it returns.
    fn stop(&mut self, work: u64, run: &Run) {
        let watch = run.handle.watch();
        if watch.is_executing() {
            let now = Instant::now();
            let mut stopping = Stopping {
                task: run.task,
                watch,
                kill_at: later(now, self.settings.stop_grace),
                killed: false,
                look_at: None,
                look_every: STOP_CHECK,
            };
            if still_executing(&self.registry, &mut stopping, now) {
                self.stopping.insert(work, stopping);
            }
        }
    }

    /// Forgets runs that returned; abandons (and replaces) the workers of
    /// runs that did not stop within their grace. An abandoned run's work
    /// still waits for it to return: runs of one work never overlap.
    fn check_stopping(&mut self) {
        if self.stopping.is_empty() {
            return;
        }
        let now = Instant::now();
        let pool = &self.pool;
        let registry = &self.registry;
        self.stopping.retain(|work, s| {
            if !still_executing(registry, s, now) {
                return false;
            }
            if !s.killed && now >= s.kill_at {
                tracing::warn!(target: "isolates", work = %WorkId(*work),
                    "a run did not stop within its grace period; its worker is abandoned and \
                     the work waits for the run to return");
                pool.kill_task(s.task);
                s.killed = true;
            }
            true
        });
    }

    /// Deletes finished work older than the retention, once nothing
    /// unfinished waits on it.
    ///
    /// It looks only once some finished work may be deleted
    /// ([`arm_prune`](Self::arm_prune)), at most every [`PRUNE_EVERY`],
    /// and then knows when the next may be: an idle manager does not wake
    /// for it.
    fn prune(&mut self, now: i64) {
        if now < self.next_prune() {
            return;
        }
        self.pruned_at = now;
        let keep = dur_ms(self.settings.keep_finished);
        let mut old = Vec::new();
        let mut next = i64::MAX;
        for r in self.records.values() {
            let Some(at) = r
                .finished_at
                .filter(|_| r.state.is_finished())
                .map(|f| f.saturating_add(keep))
            else {
                continue;
            };
            // Work that unfinished work waits on stays; the last of those
            // to finish arms the next look.
            let waited_on = self.dependents.get(&r.id).is_some_and(|ds| {
                ds.iter()
                    .any(|d| self.records.get(d).is_some_and(|r| !r.state.is_finished()))
            });
            if waited_on {
                continue;
            }
            if at <= now {
                old.push(r.id);
            } else {
                next = next.min(at);
            }
        }
        self.prune_at = next;
        for id in old {
            let Some(rec) = self.records.remove(&id) else {
                continue;
            };
            if let Some(name) = &rec.unique
                && let Some(ids) = self.unique.get_mut(name)
            {
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    self.unique.remove(name);
                }
            }
            self.dependents.remove(&id);
            self.dirty.remove(&id);
            self.deleted.push(id);
        }
    }

    /// When [`prune`](Self::prune) looks next, if `prune_at` is not
    /// `i64::MAX`.
    fn next_prune(&self) -> i64 {
        self.prune_at
            .max(self.pruned_at.saturating_add(PRUNE_EVERY))
    }

    /// Writes what changed; on success publishes it and sends the replies
    /// it makes true. Returns whether everything is written.
    fn flush(&mut self) -> bool {
        if self.dirty.is_empty() && self.deleted.is_empty() {
            self.send_replies();
            return true;
        }
        let records = &self.records;
        let puts = self.dirty.iter().filter_map(|id| records.get(id));
        if let Err(e) = self.store.write(puts, &self.deleted) {
            tracing::error!(target: "isolates", error = %e,
                "the work store could not be written; retrying");
            self.store_error.set(Some(e));
            return false;
        }
        self.store_error.set(None);
        let mut changed: Vec<WorkInfo> = self
            .dirty
            .drain()
            .filter_map(|id| records.get(&id).map(Record::info))
            .collect();
        let gone = std::mem::take(&mut self.gone);
        {
            let mut infos = self.infos.write();
            for id in self.deleted.drain(..) {
                infos.remove(&id);
            }
            for info in &changed {
                infos.insert(info.id.0, info.clone());
            }
        }
        if !self.watchers.is_empty() {
            // Deleted works' last changes reach their watchers only.
            changed.extend(gone);
            changed.sort_by_key(|i| i.id);
            // Dropped watches leave here, whether or not a change is theirs.
            self.watchers.retain(|w| {
                w.alive.strong_count() > 0
                    && changed
                        .iter()
                        .filter(|i| w.query.matches(i))
                        .all(|i| w.to.send(i.clone()).is_ok())
            });
        }
        self.send_replies();
        true
    }

    /// Answers the callers and registers the watches of a written turn.
    fn send_replies(&mut self) {
        for reply in self.replies.drain(..) {
            reply();
        }
        for w in std::mem::take(&mut self.new_watchers) {
            let mut matching: Vec<_> = self
                .records
                .values()
                .filter(|r| r.selected_by(&w.query))
                .map(Record::info)
                .collect();
            matching.sort_by_key(|i| i.id);
            if matching.into_iter().all(|i| w.to.send(i).is_ok()) {
                self.watchers.push(w);
            }
        }
    }

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
        for s in self.stopping.values() {
            let look = s.look_at.into_iter();
            for at in look.chain((!s.killed).then_some(s.kill_at)) {
                at_most(at.saturating_duration_since(instant));
            }
        }
        if !flushed {
            at_most(STORE_RETRY);
        }
        if self.prune_at != i64::MAX {
            let at = self.next_prune();
            if let Some(d) = self.settings.clock.real_wait(from_ms(at.max(now))) {
                at_most(d);
            }
        }
        wait
    }

    /// Stops: runs in progress are told to stop and go back to enqueued
    /// (they run again on the next start), the store is written, and runs
    /// get up to the stop grace to return.
    fn shut_down(&mut self, events: &cb::Receiver<Event>) {
        let running: Vec<u64> = self.running.keys().copied().collect();
        if let Some(log) = &self.settings.log {
            log.interrupted.lock().extend(&running);
        }
        for id in running {
            self.halt(id);
            self.update(id, |r| r.state = WorkState::Enqueued);
        }
        self.pool.shutdown();
        if !self.flush() {
            tracing::error!(target: "isolates",
                "the work store could not be written at shutdown; the last changes are lost");
            // Their changes are not stored: the callers learn the manager
            // stopped (dropped replies answer `Stopped`), never `Ok`.
            self.replies.clear();
            self.new_watchers.clear();
        }
        // A restart on the same store must not overlap a run still going:
        // wait for the runs told to stop to return (they say so), up to the
        // grace. Other events are dropped: the manager has stopped.
        let deadline = later(Instant::now(), self.settings.stop_grace);
        loop {
            let now = Instant::now();
            let registry = &self.registry;
            self.stopping
                .retain(|_, s| still_executing(registry, s, now));
            if self.stopping.is_empty() || now >= deadline {
                break;
            }
            let look = self.stopping.values().filter_map(|s| s.look_at).min();
            let until = look.map_or(deadline, |at| at.min(deadline));
            match events.recv_deadline(until) {
                Ok(Event::Returned { work, task }) => {
                    if self.stopping.get(&work).is_some_and(|s| s.task == task) {
                        self.stopping.remove(&work);
                    }
                }
                Ok(_) | Err(cb::RecvTimeoutError::Timeout) => {}
                // The registry holds a sender: cannot happen.
                Err(cb::RecvTimeoutError::Disconnected) => break,
            }
        }
        if !self.stopping.is_empty() {
            tracing::warn!(target: "isolates",
                "runs still executing after the stop grace are left behind at shutdown");
        }
    }
}

/// Whether `s`, a run told to stop, may still be executing; arms its next
/// look while it executes out of its handler (see [`STOP_CHECK`]).
fn still_executing(registry: &Registry, s: &mut Stopping, now: Instant) -> bool {
    if !s.watch.is_executing() {
        return false;
    }
    if registry.in_handler(s.task) {
        // It says when it returns.
        s.look_at = None;
    } else if s.look_at.is_none_or(|at| at <= now) {
        s.look_at = Some(now + s.look_every);
        s.look_every = (s.look_every * 2).min(STOP_CHECK_MAX);
    }
    true
}

/// A new work's record, blocked if it has prerequisites.
fn new_record(
    id: u64,
    spec: Spec,
    unique: Option<String>,
    prerequisites: Vec<u64>,
    now: i64,
) -> Record {
    let start = first_run(spec.alarm.as_ref(), spec.initial_delay, now);
    let next_run_at = match spec.periodic {
        Some((interval, flex)) => start.saturating_add(interval.saturating_sub(flex)),
        None => start,
    };
    Record {
        id,
        handler: spec.handler,
        state: if prerequisites.is_empty() {
            WorkState::Enqueued
        } else {
            WorkState::Blocked
        },
        input: spec.input,
        output: None,
        progress: None,
        tags: spec.tags,
        unique,
        periodic: spec.periodic,
        period_start: start,
        initial_delay: spec.initial_delay,
        enqueued_at: now,
        backoff: spec.backoff,
        constraints: spec.constraints,
        time_limit: spec.time_limit,
        attempts: 0,
        retries: 0,
        periods: 0,
        next_run_at,
        finished_at: None,
        prerequisites,
        failure: None,
        retire: false,
        input_merger: spec.input_merger,
        alarm: spec.alarm,
    }
}

/// When a work that becomes enqueued at `now` first runs: an alarm at its
/// time (at once if that passed), other work after its initial delay.
fn first_run(alarm: Option<&Alarm>, initial_delay: i64, now: i64) -> i64 {
    match alarm {
        Some(alarm) => alarm.at.max(now),
        None => now.saturating_add(initial_delay),
    }
}

/// Moves periodic work, whose run started at `ran_at`, to its next period:
/// at most one run per period, and, as Android schedules it, the next run
/// no sooner than one interval after the last one started. A run on time
/// (at the start of its flex window) keeps the periods where they were; a
/// late run (the process was down, the work waited for a constraint or a
/// worker) pushes them: the periods missed are skipped, and the next run
/// comes one interval after the late one. The run attempt count starts
/// again each period.
fn next_period(r: &mut Record, ran_at: i64) {
    let Some((interval, flex)) = r.periodic else {
        return;
    };
    let interval = interval.max(1);
    // Saturating: a stored row may hold any value an i64 holds.
    let offset = interval.saturating_sub(flex).max(0);
    let on_grid = r
        .period_start
        .saturating_add(interval)
        .saturating_add(offset);
    let next_run_at = on_grid.max(ran_at.saturating_add(interval));
    r.period_start = next_run_at.saturating_sub(offset);
    r.periods = r.periods.saturating_add(1);
    r.attempts = 0;
    r.state = WorkState::Enqueued;
    r.next_run_at = next_run_at;
}

/// `d` after `now`, or a century after it if an `Instant` cannot hold
/// that (a grace of `Duration::MAX`).
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// The last store write error, for the app to read; cleared by a write
/// that works.
#[derive(Default)]
pub(crate) struct StoreErrorSlot(Mutex<Option<super::StoreError>>);

impl StoreErrorSlot {
    fn set(&self, e: Option<super::StoreError>) {
        *self.0.lock() = e;
    }

    pub(crate) fn get(&self) -> Option<super::StoreError> {
        self.0.lock().clone()
    }
}

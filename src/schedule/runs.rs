//! The runs: works dispatched to the pool of worker isolates, their time
//! limits, stopping them, and collecting their results.
//!
//! The scheduler's only contact with the pools: submitting, watching and
//! stopping runs through the pools' API. Handlers run on a pool of worker
//! threads, or (those registered for child processes) on a process pool.
//! The scheduler keeps a run's time limit itself, from when its handler
//! starts: a run past it is told to stop, and after the stop grace its
//! worker is abandoned (its child killed).
//!
//! Runs on threads may be handed to the pool ahead, to wait in its queue
//! behind busy workers ([`Runs::queues_ahead`]): a worker that finishes a
//! run takes the next without waiting for the scheduler. Such a run's
//! work stays enqueued until its handler starts ([`Event::Started`]); a
//! run cancelled while it waits never runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;

use super::child::ChildRunner;
use super::event::Event;
use super::handler::{Registry, RunOutput, RunRequest, Runner};
use super::request::{WorkId, WorkInfo};
use crate::error::TaskError;
use crate::pool::{Pool, Task, TaskHandle, TaskWatch};
use crate::unwind;

/// How soon a run told to stop is looked at again while it is executing
/// but not in its handler: about to enter it, or just returned from it
/// (both take microseconds). A run in its handler says when it returns
/// ([`Event::Returned`]) and is not looked at.
const STOP_CHECK: Duration = Duration::from_millis(20);
/// The longest of those looks' growing intervals.
const STOP_CHECK_MAX: Duration = Duration::from_secs(1);

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
    /// It runs in a child process: killing it kills the child.
    child: bool,
}

/// A run's task, on the thread pool or the process pool.
enum RunHandle {
    Thread(TaskHandle<Runner>),
    Child(TaskHandle<ChildRunner>),
}

impl RunHandle {
    fn id(&self) -> u64 {
        match self {
            RunHandle::Thread(h) => h.id(),
            RunHandle::Child(h) => h.id(),
        }
    }

    /// Whether this resolved the task (`false`: it had resolved already).
    fn cancel(&self) -> bool {
        match self {
            RunHandle::Thread(h) => h.cancel(),
            RunHandle::Child(h) => h.cancel(),
        }
    }

    fn watch(&self) -> TaskWatch {
        match self {
            RunHandle::Thread(h) => h.watch(),
            RunHandle::Child(h) => h.watch(),
        }
    }

    fn try_take(&mut self) -> Option<Result<RunOutput, TaskError<String>>> {
        match self {
            RunHandle::Thread(h) => h.try_take(),
            RunHandle::Child(h) => h.try_take(),
        }
    }

    fn on_resolve(&self, f: impl FnOnce(u64) + Send + 'static) {
        match self {
            RunHandle::Thread(h) => h.on_resolve(f),
            RunHandle::Child(h) => h.on_resolve(f),
        }
    }
}

/// A run handed to a pool: queued behind busy workers, or in progress.
struct Run {
    task: u64,
    handle: RunHandle,
    /// When it started, on the work clock (ms): a periodic run counts for
    /// the period it started in. `None` while it waits in the thread
    /// pool's queue ([`Event::Started`] says when its handler starts).
    started: Option<i64>,
    /// Its time limit, counted from when it starts.
    limit: Duration,
    /// When it passes its time limit (the scheduler keeps it, for runs on
    /// threads as in child processes); `None` before it started, and
    /// once it passed with the result already there.
    limit_at: Option<Instant>,
    /// It runs in a child process.
    child: bool,
}

/// How a finished run ended, as the scheduler accounts for it.
pub(super) struct Finished {
    /// When it started, on the work clock (ms); `None` if the scheduler
    /// had not heard that it started.
    pub(super) started: Option<i64>,
    pub(super) result: Result<RunOutput, TaskError<String>>,
    /// It ran in a child process.
    pub(super) child: bool,
}

/// The runs in progress, and those told to stop that may still execute.
pub(super) struct Runs {
    pool: Pool<Runner>,
    /// The handlers registered for child processes run here.
    children: Option<Pool<ChildRunner>>,
    registry: Arc<Registry>,
    running: HashMap<u64, Run>,
    /// Works whose last run was told to stop (time limit, cancel) and may
    /// still be executing. They do not start again before it returned.
    stopping: HashMap<u64, Stopping>,
    /// How long a run told to stop has before its worker is abandoned.
    stop_grace: Duration,
}

impl Runs {
    pub(super) fn new(
        pool: Pool<Runner>,
        children: Option<Pool<ChildRunner>>,
        registry: Arc<Registry>,
        stop_grace: Duration,
    ) -> Self {
        Runs {
            pool,
            children,
            registry,
            running: HashMap::new(),
            stopping: HashMap::new(),
            stop_grace,
        }
    }

    /// Whether work `id` has a run, queued or in progress.
    pub(super) fn is_running(&self, id: u64) -> bool {
        self.running.contains_key(&id)
    }

    /// Whether work `id` has a run whose handler started.
    pub(super) fn is_started(&self, id: u64) -> bool {
        self.running.get(&id).is_some_and(|r| r.started.is_some())
    }

    /// Whether runs on threads may wait in the pool's queue: the pool
    /// alone then keeps `max_running` (it has that many workers). Not with
    /// a process pool too: the two pools share `max_running`, so runs are
    /// handed out only to free workers, and start at once.
    pub(super) fn queues_ahead(&self) -> bool {
        self.children.is_none()
    }

    /// Whether `task` is work `work`'s run in progress.
    pub(super) fn is_current(&self, work: u64, task: u64) -> bool {
        self.running.get(&work).is_some_and(|r| r.task == task)
    }

    /// The works with a run, queued or in progress.
    pub(super) fn running(&self) -> impl Iterator<Item = u64> + '_ {
        self.running.keys().copied()
    }

    /// Whether work `id`'s last run was told to stop and may still execute.
    pub(super) fn is_stopping(&self, id: u64) -> bool {
        self.stopping.contains_key(&id)
    }

    /// How many workers the runs hold: those in progress, and those told
    /// to stop whose worker was not abandoned yet.
    pub(super) fn busy(&self) -> usize {
        self.running.len() + self.stopping.values().filter(|s| !s.killed).count()
    }

    /// Whether nothing runs, and no run told to stop may still execute.
    pub(super) fn is_idle(&self) -> bool {
        self.running.is_empty() && self.stopping.is_empty()
    }

    /// Hands a run of work `id` to a pool, within `limit` from when it
    /// starts; `now` is now on the work clock. A run in a child process
    /// counts as started now (returns `true`); one on a thread may wait in
    /// the pool's queue, and [`Event::Started`] says when its handler
    /// starts. [`Event::Done`] says when it resolved.
    pub(super) fn start(
        &mut self,
        id: u64,
        request: RunRequest,
        limit: Duration,
        now: i64,
    ) -> bool {
        let (handle, limit_at) = match &self.children {
            Some(children) if self.registry.in_child.contains(&request.handler) => {
                // No pool deadline: that would kill the child at once. The
                // scheduler tells the run to stop at its limit, and kills
                // it after the stop grace.
                let handle = children.submit_task(Task::new(request));
                let events = self.registry.events.clone();
                let task = handle.id();
                let progressed = move || {
                    let _ = events.send(Event::ChildProgress { work: id, task });
                };
                handle.on_progress(progressed);
                let limit_at = later(Instant::now(), limit);
                (RunHandle::Child(handle), Some(limit_at))
            }
            _ => {
                // No pool deadline: it would count from now, and the run
                // may wait in the queue first. The scheduler keeps the
                // limit from [`Event::Started`].
                let handle = self.pool.submit_task(Task::new(request));
                (RunHandle::Thread(handle), None)
            }
        };
        let task = handle.id();
        let events = self.registry.events.clone();
        handle.on_resolve(move |task| {
            let _ = events.send(Event::Done { work: id, task });
        });
        let child = limit_at.is_some();
        self.running.insert(
            id,
            Run {
                task,
                handle,
                started: child.then_some(now),
                limit,
                child,
                limit_at,
            },
        );
        child
    }

    /// `task`, work `work`'s run, entered its handler at `at`; `now` is
    /// now on the work clock. Returns whether it is that work's run and had
    /// not been heard to start: its work is running from now on.
    pub(super) fn started(&mut self, work: u64, task: u64, at: Instant, now: i64) -> bool {
        match self.running.get_mut(&work) {
            Some(run) if run.task == task && run.started.is_none() => {
                run.started = Some(now);
                run.limit_at = Some(later(at, run.limit));
                true
            }
            _ => false,
        }
    }

    /// The latest progress of `task`, work `work`'s run in a child process,
    /// if it is the run in progress and has reported some since the last
    /// look.
    pub(super) fn take_progress(&self, work: u64, task: u64) -> Option<Vec<u8>> {
        match self.running.get(&work) {
            Some(Run {
                task: current,
                handle: RunHandle::Child(handle),
                ..
            }) if *current == task => handle.progress().pop(),
            _ => None,
        }
    }

    /// The runs that passed their time limit: each is told to stop (its
    /// handler sees [`is_stopped`](super::WorkContext::is_stopped)), and
    /// its worker is abandoned (its child killed) if it has not returned
    /// within the stop grace. Returns their works: they timed out.
    pub(super) fn check_limits(&mut self) -> Vec<u64> {
        let now = Instant::now();
        let passed: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, run)| run.limit_at.is_some_and(|at| at <= now))
            .map(|(&work, _)| work)
            .collect();
        let mut timed_out = Vec::new();
        for work in passed {
            let Some(run) = self.running.get_mut(&work) else {
                continue;
            };
            if !run.handle.cancel() {
                // Its result came first: it is on its way
                // ([`Event::Done`]) and counts.
                run.limit_at = None;
                continue;
            }
            if let Some(run) = self.running.remove(&work) {
                self.stop(work, &run);
                timed_out.push(work);
            }
        }
        timed_out
    }

    /// The result of `task`, work `work`'s run in progress, once it
    /// resolved, with when the run started; `None` if `task` is not that
    /// run (it was told to stop: already accounted for). A run past its
    /// time limit is watched until it returns.
    pub(super) fn take_result(&mut self, work: u64, task: u64) -> Option<Finished> {
        if !self.is_current(work, task) {
            return None;
        }
        let mut run = self.running.remove(&work)?;
        let result = run.handle.try_take()?;
        if matches!(result, Err(TaskError::TimedOut)) {
            self.stop(work, &run);
        }
        Some(Finished {
            started: run.started,
            result,
            child: run.child,
        })
    }

    /// Calls the handler's `on_timeout` for `info`, a work whose run passed
    /// its time limit. Not on the scheduler's thread: the callback may
    /// call the manager and wait for an answer only that thread gives.
    pub(super) fn on_timeout(&self, info: WorkInfo) {
        let Some(h) = self.registry.handlers.get(&info.handler).cloned() else {
            return;
        };
        let work = info.id;
        let spawned = std::thread::Builder::new()
            .name("isolates-work-timeout".into())
            .spawn(move || {
                if let Err(p) = unwind::catch(|| h.on_timeout(&info)) {
                    tracing::warn!(target: "isolates", work = %info.id,
                        panic = %p.message, "a handler's on_timeout panicked");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(target: "isolates", work = %work, error = %e,
                "no thread for on_timeout; it was not called");
        }
    }

    /// Tells work `id`'s run, if one is in progress, to stop, and keeps
    /// the work from starting again until that run returned.
    pub(super) fn halt(&mut self, id: u64) {
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
                kill_at: later(now, self.stop_grace),
                killed: false,
                look_at: None,
                look_every: STOP_CHECK,
                child: run.child,
            };
            if still_executing(&self.registry, &mut stopping, now) {
                self.stopping.insert(work, stopping);
            }
        }
    }

    /// The handler of `task`, work `work`'s run told to stop, returned.
    pub(super) fn returned(&mut self, work: u64, task: u64) {
        if self.stopping.get(&work).is_some_and(|s| s.task == task) {
            self.stopping.remove(&work);
        }
    }

    /// Forgets runs that returned; abandons (and replaces) the workers of
    /// runs that did not stop within their grace. An abandoned run's work
    /// still waits for it to return: runs of one work never overlap.
    pub(super) fn check_stopping(&mut self) {
        if self.stopping.is_empty() {
            return;
        }
        let now = Instant::now();
        let pool = &self.pool;
        let children = self.children.as_ref();
        let registry = &self.registry;
        self.stopping.retain(|work, s| {
            if !still_executing(registry, s, now) {
                return false;
            }
            if !s.killed && now >= s.kill_at {
                if s.child {
                    tracing::warn!(target: "isolates", work = %WorkId(*work),
                        "a run did not stop within its grace period; its child process is killed");
                    if let Some(children) = children {
                        children.kill_task(s.task);
                    }
                    // The kill ends the run within milliseconds: look soon.
                    s.look_at = Some(now + STOP_CHECK);
                    s.look_every = STOP_CHECK;
                } else {
                    tracing::warn!(target: "isolates", work = %WorkId(*work),
                        "a run did not stop within its grace period; its worker is abandoned \
                         and the work waits for the run to return");
                    pool.kill_task(s.task);
                }
                s.killed = true;
            }
            true
        });
    }

    /// When the runs told to stop are next looked at, or abandoned, and
    /// when runs pass their time limits.
    pub(super) fn looks(&self) -> impl Iterator<Item = Instant> + '_ {
        let stopping = self.stopping.values().flat_map(|s| {
            let look = s.look_at.into_iter();
            look.chain((!s.killed).then_some(s.kill_at))
        });
        stopping.chain(self.running.values().filter_map(|r| r.limit_at))
    }

    /// Stops the pools: no run starts from now on.
    pub(super) fn shutdown_pool(&self) {
        self.pool.stop();
        if let Some(children) = &self.children {
            children.stop();
        }
    }

    /// At shutdown: waits for the runs told to stop to return (they say so
    /// on `events`), up to the stop grace, so that a restart on the same
    /// store does not overlap a run still going. Other events are dropped:
    /// the manager has stopped.
    pub(super) fn wait_stopped(&mut self, events: &cb::Receiver<Event>) {
        let deadline = later(Instant::now(), self.stop_grace);
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
                Ok(Event::Returned { work, task }) => self.returned(work, task),
                Ok(_) | Err(cb::RecvTimeoutError::Timeout) => {}
                // The registry holds a sender: cannot happen.
                Err(cb::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Runs in child processes still going are killed: no child
        // outlives its manager.
        if let Some(children) = &self.children {
            self.stopping.retain(|_, s| {
                if s.child {
                    children.kill_task(s.task);
                }
                !s.child
            });
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
    // A run in a child says nothing when it returns (its task ids are the
    // process pool's, not those `in_handler` holds): it is looked at.
    if !s.child && registry.in_handler(s.task) {
        // It says when it returns.
        s.look_at = None;
    } else if s.look_at.is_none_or(|at| at <= now) {
        s.look_at = Some(now + s.look_every);
        s.look_every = (s.look_every * 2).min(STOP_CHECK_MAX);
    }
    true
}

/// `d` after `now`, or a century after it if an `Instant` cannot hold
/// that (a grace of `Duration::MAX`).
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

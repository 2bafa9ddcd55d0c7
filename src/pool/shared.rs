//! What a pool's handles and workers share: the queues under their lock,
//! the settings, the counters, and the steps that change them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::queue::{Job, Queues, Running, expire};
#[cfg(target_os = "linux")]
use super::remote;
use super::task::{CodecSet, ErrorKind};
use super::{FullPolicy, Routing, Worker, deadline};
use crate::error::CodecError;

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
/// let pool = Pool::<W>::builder().workers(2).spawn(()).unwrap();
/// pool.submit(()).wait().unwrap();
/// let stats = pool.stats();
/// assert_eq!(stats.workers, 2);
/// assert_eq!(stats.succeeded, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
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

/// One worker slot's figures (see [`Pool::worker_stats`](super::Pool::worker_stats)).
///
/// # Examples
///
/// See [`Pool::worker_stats`](super::Pool::worker_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerStats {
    /// The slot's index (as [`Pool::kill_worker`](super::Pool::kill_worker) takes it).
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
pub(super) struct PoolCounters {
    pub(super) succeeded: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) panicked: AtomicU64,
    pub(super) restarts: AtomicU64,
    pub(super) rejected: AtomicU64,
}

pub(super) struct Inner<W: Worker> {
    pub(super) name: String,
    pub(super) min: usize,
    pub(super) max: usize,
    pub(super) idle: Duration,
    pub(super) routing: Routing,
    pub(super) bound: Option<(usize, FullPolicy)>,
    pub(super) nice: Option<i32>,
    pub(super) args: W::Args,
    pub(super) codecs: Arc<CodecSet<W>>,
    pub(super) queue: Mutex<Queues>,
    /// Workers wait here for tasks.
    pub(super) work: Condvar,
    /// Rayon workers released to help with `par` work wait here (on the
    /// `idle_waits` thread) for [`Queues::epoch`] to change.
    pub(super) rejoin: Condvar,
    /// Submitters wait here for room in a bounded queue.
    pub(super) room: Condvar,
    /// [`Pool::join`](super::Pool::join) waits here for the last worker
    /// to leave: told whenever one does.
    pub(super) left: Condvar,
    pub(super) next_id: AtomicU64,
    pub(super) counters: PoolCounters,
    pub(super) handles: AtomicUsize,
    /// The workers' threads, in a rayon pool.
    pub(super) rayon: Option<rayon::ThreadPool>,
    /// In rayon mode: one thread on which released workers wait.
    pub(super) idle_waits: Option<rayon::ThreadPool>,
    pub(super) deadlines: Arc<deadline::Deadlines>,
    /// Workers in child processes.
    #[cfg(target_os = "linux")]
    pub(super) process: Option<remote::WorkerSpec<W>>,
    /// Workers on other machines: each slot carries a task over NATS.
    #[cfg(feature = "nats")]
    pub(super) nats: Option<Arc<super::nats::Client<W>>>,
}

impl<W: Worker> Inner<W> {
    /// A worker's start arguments: a clone moved to it. A panicking
    /// `Clone` is an error here, not an unwinding submitter or a dead
    /// worker.
    pub(super) fn start_args(&self) -> Result<W::Args, CodecError> {
        match crate::unwind::catch(|| self.args.clone()) {
            Ok(args) => Ok(args),
            Err(caught) => Err(CodecError::Encode(format!(
                "cloning the start arguments panicked: {}",
                caught.message
            ))),
        }
    }

    /// Queues `job`; returns a slot (and its generation) the pool should
    /// start a worker thread for, when more work waits than idle workers
    /// can take (the caller starts it: this module runs no workers).
    #[must_use = "a claimed slot needs a worker started, or retired"]
    pub(super) fn enqueue(self: &Arc<Self>, job: Job) -> Option<(usize, u64)> {
        let mut q = self.queue.lock();
        if q.closed {
            drop(q);
            job.cell.fail(ErrorKind::Closed);
            return None;
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
                    return None;
                }
                if !room {
                    drop(q);
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    job.cell.fail(ErrorKind::Rejected);
                    return None;
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
        claimed
    }

    /// Ends the worker of `slot` (if still of `generation`): its local work
    /// goes to the shared queue. If no worker is left, queued tasks resolve
    /// `WorkerLost`: nobody would run them.
    pub(super) fn retire(&self, slot: usize, generation: u64, why: String) {
        let orphans = {
            let mut q = self.queue.lock();
            if q.slots[slot].generation != generation || !q.slots[slot].alive {
                return;
            }
            q.slots[slot].alive = false;
            q.alive -= 1;
            self.left.notify_all();
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
    pub(super) fn route(&self, q: &mut Queues, job: &Job) -> Option<usize> {
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
    pub(super) fn lost(&self, running: Running, why: String) {
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

    /// Waits until the pool is closed and no worker is left, or `deadline`
    /// passes (forever if `None`); returns whether none is left.
    pub(super) fn wait_ended(&self, deadline: Option<Instant>) -> bool {
        let mut q = self.queue.lock();
        while !(q.closed && q.alive == 0) {
            if crate::time::wait(&self.left, &mut q, deadline) {
                break;
            }
        }
        q.closed && q.alive == 0
    }

    pub(super) fn close(&self) {
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
    pub(super) fn next(&self, slot: usize, generation: u64) -> Option<Job> {
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
                self.left.notify_all();
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
    pub(super) fn wait_released(&self, seen: u64) {
        let mut q = self.queue.lock();
        while q.epoch == seen {
            self.rejoin.wait(&mut q);
        }
    }

    /// Calls released rayon workers back to the queue (work that no
    /// waiting worker takes, a kill, the close).
    pub(super) fn recall(&self, q: &mut Queues) {
        if q.released > 0 {
            q.epoch = q.epoch.wrapping_add(1);
            self.rejoin.notify_all();
        }
    }

    /// A task starts data-parallel work: idle workers help with it until
    /// the section ends.
    pub(super) fn enter_par(&self) -> ParSection<'_> {
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
pub(super) struct ParSection<'a>(&'a Mutex<Queues>);

impl Drop for ParSection<'_> {
    fn drop(&mut self) {
        self.0.lock().par -= 1;
    }
}

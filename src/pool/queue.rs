//! A pool's queues: three priority classes, shared and per worker slot,
//! with each slot's record. A plain data structure: no threads, no waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::task::TaskCell;
use super::{TaskPriority, TaskState};
use crate::codec::envelope::Envelope;

/// A queued task.
pub(super) struct Job {
    pub(super) cell: Arc<TaskCell>,
    pub(super) input: Envelope,
    pub(super) priority: TaskPriority,
    pub(super) key: Option<u64>,
    pub(super) retries: u32,
}

/// A task being run, as its slot records it.
pub(super) struct Running {
    pub(super) cell: Arc<TaskCell>,
    /// A copy of the input for a retry.
    pub(super) retry: Option<(Envelope, u32)>,
    pub(super) priority: TaskPriority,
    pub(super) key: Option<u64>,
}

#[derive(Default)]
pub(super) struct Slot {
    pub(super) alive: bool,
    /// Increased by a kill: a thread of an older generation leaves.
    pub(super) generation: u64,
    pub(super) running: Option<Running>,
    pub(super) local: [VecDeque<Job>; 3],
    pub(super) local_len: usize,
    /// When the current worker of this slot started.
    pub(super) started: Option<Instant>,
    /// When it last finished a task (or started, if it has none yet).
    pub(super) idle_since: Option<Instant>,
    pub(super) handled: u64,
    pub(super) errors: u64,
    pub(super) max_workload: usize,
    /// Its idle rayon worker is released to help with `par` work.
    pub(super) released: bool,
    /// Kills the current worker's child process.
    #[cfg(target_os = "linux")]
    pub(super) child_kill: Option<Arc<crate::backend::process::parent::KillSwitch>>,
}

impl Slot {
    pub(super) fn workload(&self) -> usize {
        self.local_len + usize::from(self.running.is_some())
    }

    pub(super) fn note_workload(&mut self) {
        self.max_workload = self.max_workload.max(self.workload());
    }
}

pub(super) struct Queues {
    pub(super) shared: [VecDeque<Job>; 3],
    pub(super) slots: Vec<Slot>,
    /// Queued tasks, shared and local.
    pub(super) len: usize,
    pub(super) alive: usize,
    /// Workers waiting on `work`.
    pub(super) idle: usize,
    pub(super) closed: bool,
    pub(super) picks: u64,
    pub(super) next_slot: usize,
    /// Tasks inside [`TaskContext::par`] (rayon mode).
    pub(super) par: usize,
    /// Idle rayon workers released to help with `par` work.
    pub(super) released: usize,
    /// Moves on when released workers must come back (work for them, a
    /// kill, the close).
    pub(super) epoch: u64,
}

impl Queues {
    pub(super) fn new(max: usize) -> Self {
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
    pub(super) fn occupy(&mut self, slot: usize) -> u64 {
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

    pub(super) fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| !s.alive)
    }

    /// The order in which priorities are looked at for this pick: high
    /// first, but one pick in four starts at normal and one in eight at
    /// low, so no class starves.
    pub(super) fn order(&mut self) -> [usize; 3] {
        self.picks += 1;
        // Of each 8 picks: the 8th starts at low, the 4th and 6th at normal.
        match self.picks % 8 {
            0 => [2, 1, 0],
            4 | 6 => [1, 0, 2],
            _ => [0, 1, 2],
        }
    }

    pub(super) fn take(&mut self, slot: usize) -> Option<Job> {
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

    pub(super) fn push_local(&mut self, slot: usize, job: Job) {
        let class = job.priority as usize;
        self.slots[slot].local[class].push_back(job);
        self.slots[slot].local_len += 1;
        self.slots[slot].note_workload();
        self.len += 1;
    }

    pub(super) fn push_shared(&mut self, job: Job, front: bool) {
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
    pub(super) fn purge_resolved(&mut self) -> Vec<Job> {
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

    pub(super) fn drain_all(&mut self) -> Vec<Job> {
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

/// Resolves tasks whose deadline passed (never with the pool locked: a
/// resolve runs the task's callbacks).
/// Resolves the purged jobs whose deadline passed, and drops them all;
/// called without the queue's lock.
pub(super) fn expire(jobs: Vec<Job>) {
    let now = Instant::now();
    for job in jobs {
        job.cell.check_deadline(now);
    }
}

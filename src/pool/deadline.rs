//! A pool's deadline timer: a task resolves `TimedOut` when its deadline
//! passes even if nobody polls it (a queued task behind busy workers, whose
//! result an event loop waits for through a waker).
//!
//! The timer wakes only for a deadline of a task still pending: entries of
//! tasks that resolved first are dropped from the top of the heap by the
//! workers (as they finish a task) and by the timer before it waits. With
//! nothing left to watch it wakes once more, [`IDLE_EXIT`] after the heap
//! emptied, and exits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::task::TaskCell;

/// How long the timer thread stays with nothing to watch before it exits
/// (the next deadline starts it again): a single wake-up, not a period,
/// that spares a thread start to a pool whose tasks come in bursts.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The heap size from which entries of finished tasks are swept out.
const SWEEP_FROM: usize = 1024;

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    cells: HashMap<u64, Weak<TaskCell>>,
    /// Sweep when the heap reaches this size (amortized: it doubles with
    /// what survives a sweep).
    sweep_at: usize,
    thread: bool,
    closed: bool,
    /// The deadline the timer sleeps until, if it sleeps for one: a later
    /// deadline needs no wake-up.
    armed: Option<Instant>,
    /// Since when the heap is empty.
    empty_since: Option<Instant>,
}

impl State {
    /// Drops the entries of tasks that resolved or were dropped long before
    /// their deadline (a work manager gives every run a limit of minutes),
    /// so the heap holds about the tasks still pending.
    fn sweep(&mut self) {
        self.cells.retain(|_, cell| {
            cell.upgrade()
                .is_some_and(|c| c.state() != super::task::TaskState::Done)
        });
        let cells = &self.cells;
        self.heap.retain(|Reverse((_, id))| cells.contains_key(id));
        self.sweep_at = (self.heap.len() * 2).max(SWEEP_FROM);
    }

    /// Drops the entries at the top of the heap whose task resolved or was
    /// dropped: the timer need not wake for them.
    fn pop_resolved(&mut self) {
        while let Some(Reverse((_, id))) = self.heap.peek().copied() {
            let pending = self
                .cells
                .get(&id)
                .and_then(Weak::upgrade)
                .is_some_and(|c| c.state() != super::task::TaskState::Done);
            if pending {
                return;
            }
            self.heap.pop();
            self.cells.remove(&id);
        }
        self.empty_since.get_or_insert_with(Instant::now);
    }
}

#[derive(Default)]
pub(crate) struct Deadlines {
    state: Mutex<State>,
    changed: Condvar,
}

impl Deadlines {
    /// Watches `cell`'s deadline, if it has one.
    pub(crate) fn watch(self: &Arc<Self>, cell: &Arc<TaskCell>, pool: &str) {
        let Some(at) = cell.deadline else {
            return;
        };
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        if state.heap.len() >= state.sweep_at.max(SWEEP_FROM) {
            state.sweep();
        }
        state.heap.push(Reverse((at, cell.id)));
        state.cells.insert(cell.id, Arc::downgrade(cell));
        state.empty_since = None;
        if !state.thread {
            let timer = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("{pool}-deadlines"))
                .spawn(move || timer.run());
            match spawned {
                Ok(_) => state.thread = true,
                // Handles still expire their deadline when polled.
                Err(e) => tracing::warn!(target: "isolates", error = %e,
                    "no deadline timer thread: deadlines fire when polled"),
            }
        } else if state.armed.is_none_or(|armed| at < armed) {
            self.changed.notify_one();
        }
    }

    /// Forgets the tasks at the top of the heap that resolved (a worker
    /// calls it as it finishes a task), so the timer does not wake for
    /// their deadlines.
    pub(crate) fn forget_resolved(&self) {
        let mut state = self.state.lock();
        if !state.heap.is_empty() {
            state.pop_resolved();
            if state.closed && state.heap.is_empty() {
                // The last deadline of a closed pool: the timer can go.
                self.changed.notify_all();
            }
        }
    }

    /// Takes no more deadlines; the timer goes once those it holds have
    /// fired or their tasks resolved.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.changed.notify_all();
    }

    fn run(&self) {
        let mut state = self.state.lock();
        loop {
            state.pop_resolved();
            // A closed pool takes no new deadlines, but its running tasks'
            // still fire (their handles may be awaited or watched): the
            // timer goes once none is left.
            if state.closed && state.heap.is_empty() {
                state.thread = false;
                return;
            }
            match state.heap.peek().copied() {
                None => {
                    let since = *state.empty_since.get_or_insert_with(Instant::now);
                    let exit_at = since.checked_add(IDLE_EXIT);
                    if exit_at.is_none_or(|at| at <= Instant::now()) {
                        state.thread = false;
                        return;
                    }
                    crate::time::wait(&self.changed, &mut state, exit_at);
                }
                Some(Reverse((at, id))) if at <= Instant::now() => {
                    state.heap.pop();
                    let cell = state.cells.remove(&id).and_then(|w| w.upgrade());
                    if let Some(cell) = cell {
                        // Resolving runs callbacks: never under the lock.
                        parking_lot::MutexGuard::unlocked(&mut state, || {
                            cell.check_deadline(Instant::now());
                        });
                    }
                }
                Some(Reverse((at, _))) => {
                    state.armed = Some(at);
                    self.changed.wait_until(&mut state, at);
                    state.armed = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::task::ErrorKind;

    #[test]
    fn finished_tasks_leave_the_heap() {
        let deadlines = Arc::new(Deadlines::default());
        let far = Instant::now() + Duration::from_secs(3600);
        let mut pending = Vec::new();
        for id in 0..10_000u64 {
            let cell = Arc::new(TaskCell::new(id, Some(far)));
            deadlines.watch(&cell, "test");
            if id % 100 == 0 {
                pending.push(cell); // still pending: must stay watched
            } else {
                cell.fail(ErrorKind::Cancelled);
            }
        }
        let state = deadlines.state.lock();
        assert!(
            state.heap.len() < 2 * SWEEP_FROM + pending.len(),
            "{} heap entries for {} pending tasks",
            state.heap.len(),
            pending.len()
        );
        for cell in &pending {
            assert!(
                state.cells.contains_key(&cell.id),
                "a pending task was dropped"
            );
        }
        drop(state);
        deadlines.close();
    }
}

//! A pool's deadline timer: a task resolves `TimedOut` when its deadline
//! passes even if nobody polls it (a queued task behind busy workers, whose
//! result an event loop waits for through a waker).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::task::TaskCell;

/// How long the timer thread waits with nothing to watch before it exits
/// (the next deadline starts it again).
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
        let earliest = state.heap.peek().map(|Reverse((at, _))| *at);
        state.heap.push(Reverse((at, cell.id)));
        state.cells.insert(cell.id, Arc::downgrade(cell));
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
        } else if earliest.is_none_or(|e| at < e) {
            self.changed.notify_one();
        }
    }

    /// Stops the timer.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.changed.notify_all();
    }

    fn run(&self) {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                state.thread = false;
                return;
            }
            match state.heap.peek().copied() {
                None => {
                    let timed_out = self.changed.wait_for(&mut state, IDLE_EXIT).timed_out();
                    if timed_out && state.heap.is_empty() {
                        state.thread = false;
                        return;
                    }
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
                    self.changed.wait_until(&mut state, at);
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

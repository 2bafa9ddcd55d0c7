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

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    cells: HashMap<u64, Weak<TaskCell>>,
    thread: bool,
    closed: bool,
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

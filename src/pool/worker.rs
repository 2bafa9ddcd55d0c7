//! A worker's thread: its state (or the child process or remote slot that
//! holds it), and the loop that runs tasks one at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::queue::{Job, Running};
#[cfg(target_os = "linux")]
use super::remote;
use super::shared::Inner;
use super::task::{ErrorKind, Outcome};
use super::{TaskContext, Worker};
use crate::codec::envelope::Envelope;
use crate::error::SpawnError;
use crate::invoke::{self, Invoked};
use crate::unwind;

/// Starts a worker thread for `slot` (already marked alive).
pub(super) fn spawn_worker<W: Worker>(
    inner: &Arc<Inner<W>>,
    slot: usize,
    generation: u64,
) -> Result<(), SpawnError> {
    let args = inner.start_args().map_err(SpawnError::Args)?;
    let thread_inner = Arc::clone(inner);
    std::thread::Builder::new()
        .name(format!("{}-{slot}", inner.name))
        .spawn(move || worker_main(thread_inner, slot, generation, args))
        .map(drop)
        .map_err(|e| SpawnError::Thread(e.to_string()))
}

/// A worker slot on a thread of the pool's rayon pool: serves until the
/// pool closes, starting a fresh worker each time the slot's worker is
/// killed.
pub(super) fn rayon_worker<W: Worker>(inner: &Arc<Inner<W>>, slot: usize) {
    loop {
        let generation = {
            let mut q = inner.queue.lock();
            if !q.slots[slot].alive {
                return;
            }
            if q.closed {
                // Left by a kill just before the close: count it gone.
                q.slots[slot].alive = false;
                q.alive -= 1;
                return;
            }
            q.slots[slot].generation
        };
        let Ok(args) = inner.start_args() else {
            return;
        };
        worker_main(Arc::clone(inner), slot, generation, args);
    }
}

pub(super) fn lower_priority(nice: Option<i32>) {
    #[cfg(target_os = "linux")]
    if let Some(nice) = nice {
        // Only ever lower the priority: a pool must not raise its threads
        // above the process that made it, even where it could.
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if nice > current
            && let Err(e) = rustix::process::setpriority_process(Some(tid), nice.min(19))
        {
            tracing::debug!(target: "isolates", error = %e, "could not lower a worker's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A worker's thread: start the state, then run tasks until told to stop.
pub(super) fn worker_main<W: Worker>(
    inner: Arc<Inner<W>>,
    slot: usize,
    generation: u64,
    args: W::Args,
) {
    lower_priority(inner.nice);
    let start_here = |args: W::Args| -> Result<W, String> {
        match unwind::catch(|| W::start(args)) {
            Ok(Ok(worker)) => Ok(worker),
            Ok(Err(e)) => Err(unwind::describe(&e)),
            Err(caught) => Err(caught.message),
        }
    };
    // The worker's state here, or a child process that holds it.
    let start = |args: W::Args| -> Result<Exec<W>, String> {
        #[cfg(feature = "nats")]
        if let Some(client) = &inner.nats {
            return Ok(Exec::Nats(client.slot()));
        }
        #[cfg(target_os = "linux")]
        if let Some(spec) = &inner.process {
            let child = remote::ChildWorker::start(spec, &inner.name, &args)?;
            let mut q = inner.queue.lock();
            if q.slots[slot].generation == generation {
                q.slots[slot].child_kill = Some(child.kill_switch());
            }
            return Ok(Exec::Child(child));
        }
        start_here(args).map(|state| Exec::Local(StateGuard(Some(state))))
    };
    // A restarted worker's uptime starts again (`WorkerStats::uptime`).
    let restarted = || {
        let mut q = inner.queue.lock();
        if q.slots[slot].generation == generation {
            q.slots[slot].started = Some(Instant::now());
        }
    };
    let mut exec = match start(args) {
        Ok(exec) => exec,
        Err(why) => {
            tracing::warn!(target: "isolates", pool = %inner.name, slot, %why, "a worker could not start");
            inner.retire(slot, generation, format!("a worker could not start: {why}"));
            return;
        }
    };
    loop {
        // A remote slot takes a task only with an in-flight place for it.
        #[cfg(feature = "nats")]
        if let Exec::Nats(remote) = &mut exec {
            remote.place();
            // The tasks handed over go out before this thread may wait
            // for the next.
            if inner.queue.lock().len == 0 {
                remote.flush();
            }
        }
        let Some(job) = inner.next(slot, generation) else {
            break;
        };
        let Job {
            cell,
            input,
            priority,
            key,
            retries,
        } = job;
        if !cell.start_running() {
            continue;
        }
        if cell.check_deadline(Instant::now()) {
            cell.returned();
            continue;
        }
        // A retry needs a copy of the input, kept only when the submitter
        // asked for retries: the bytes themselves when they came encoded,
        // else an encoding made here, on the worker (a moved value has no
        // other copy, and the submitter's thread must not pay for one).
        // An input with attachments (a `Transfer`, a port) has no copy: a
        // retry would find the buffer the first run took.
        let codecs = &*inner.codecs;
        let moved = matches!(input, Envelope::Moved(_));
        let retry_copy = if retries > 0 && !moved {
            input.try_clone()
        } else {
            None
        };
        let input = codecs.input.unpack_erased(input, "input");
        let retry_copy = match &input {
            Ok(value) if retries > 0 && moved => match codecs.input.encode_copy(value, "input") {
                Ok(copy) if !copy.has_attachments() => Some(copy.erase()),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(target: "isolates", pool = %inner.name, error = %e, "a task's input could not be copied for its retries: it runs once");
                    None
                }
            },
            _ => retry_copy,
        };
        let retry = retry_copy.map(|copy| (copy, retries));
        // A remote task is handed over: the bridge resolves it.
        #[cfg(feature = "nats")]
        if let Exec::Nats(remote) = &mut exec {
            let count = counter(&inner);
            match input {
                Ok(input) => remote.hand_over(&input, &cell, &inner.codecs, count),
                Err(e) => {
                    let outcome = Outcome::Error(ErrorKind::Codec(e));
                    count(&outcome);
                    cell.returned();
                    cell.resolve(outcome);
                }
            }
            continue;
        }
        {
            let mut q = inner.queue.lock();
            if q.slots[slot].generation != generation {
                drop(q);
                cell.returned();
                inner.lost(
                    Running {
                        cell,
                        retry,
                        priority,
                        key,
                    },
                    "worker replaced".into(),
                );
                return;
            }
            let now = Instant::now();
            let record = &mut q.slots[slot];
            record.started.get_or_insert(now);
            record.idle_since = None;
            record.running = Some(Running {
                cell: Arc::clone(&cell),
                retry,
                priority,
                key,
            });
            record.note_workload();
        }
        // A child that died while its worker was idle (killed from
        // outside) has not seen this task: it goes to a fresh child, and
        // is not charged for the death. (Should no child start, the dead
        // one's run below says the worker is lost, and the restart after it
        // decides.)
        #[cfg(target_os = "linux")]
        if let Exec::Child(child) = &mut exec
            && child.has_died()
            && let Ok(fresh) = inner
                .start_args()
                .map_err(|e| e.to_string())
                .and_then(&start)
        {
            tracing::warn!(target: "isolates", pool = %inner.name, slot, "a worker's child died while idle: the worker restarts");
            inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
            drop(std::mem::replace(&mut exec, fresh));
            restarted();
        }
        let (outcome, panicked) = match (input, &mut exec) {
            (Err(e), _) => (Outcome::Error(ErrorKind::Codec(e)), false),
            #[cfg(target_os = "linux")]
            (Ok(input), Exec::Child(child)) => child.run(&input, &cell, codecs),
            #[cfg(feature = "nats")]
            // Never: a remote task is handed over above.
            (Ok(_), Exec::Nats(_)) => (
                Outcome::Error(ErrorKind::WorkerLost(
                    "a remote task was not handed over".into(),
                )),
                false,
            ),
            // Never: a state is always there between tasks.
            (Ok(_), Exec::Local(StateGuard(None))) => (
                Outcome::Error(ErrorKind::WorkerLost("the worker has no state".into())),
                false,
            ),
            (Ok(input), Exec::Local(StateGuard(Some(worker)))) => {
                let ctx = TaskContext {
                    cell: &cell,
                    codecs,
                    helpers: inner.rayon.as_ref().map(|_| &*inner),
                    sink: None,
                };
                let invoked = invoke::call(|| worker.run(input, &ctx));
                let panicked = invoked.panicked();
                (
                    Outcome::from(invoked.pack(&codecs.output, &codecs.error)),
                    panicked,
                )
            }
        };
        cell.returned();
        let running = {
            let mut q = inner.queue.lock();
            if q.slots[slot].generation != generation {
                // Killed meanwhile: the task was resolved or requeued by
                // the kill; this thread leaves.
                return;
            }
            let record = &mut q.slots[slot];
            record.handled += 1;
            if panicked || !matches!(outcome, Outcome::Value(_)) {
                record.errors += 1;
            }
            record.idle_since = Some(Instant::now());
            record.running.take()
        };
        let counters = &inner.counters;
        match &outcome {
            Outcome::Value(_) => counters.succeeded.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed(_) => counters.failed.fetch_add(1, Ordering::Relaxed),
            Outcome::Error(ErrorKind::Panicked(_)) => {
                counters.panicked.fetch_add(1, Ordering::Relaxed)
            }
            Outcome::Error(_) => counters.failed.fetch_add(1, Ordering::Relaxed),
        };
        if panicked {
            // A panic may leave the state broken: start it again, as a
            // supervisor restarts a crashed child.
            let message = match &outcome {
                Outcome::Error(ErrorKind::Panicked(m) | ErrorKind::WorkerLost(m)) => m.clone(),
                _ => String::new(),
            };
            tracing::warn!(target: "isolates", pool = %inner.name, slot, why = %message, "a task panicked or its worker died: the worker restarts");
            match running {
                Some(running)
                    if running.retry.as_ref().is_some_and(|(_, n)| *n > 0)
                        && !cell.cancel.load(Ordering::Acquire) =>
                {
                    inner.lost(running, message);
                }
                _ => {
                    cell.resolve(outcome);
                }
            }
            counters.restarts.fetch_add(1, Ordering::Relaxed);
            let args = match inner.start_args() {
                Ok(args) => args,
                Err(e) => {
                    inner.retire(slot, generation, format!("start arguments: {e}"));
                    return;
                }
            };
            match start(args) {
                Ok(fresh) => {
                    drop(std::mem::replace(&mut exec, fresh));
                    restarted();
                }
                Err(why) => {
                    tracing::warn!(target: "isolates", pool = %inner.name, slot, %why,
                        "a worker could not restart");
                    inner.retire(
                        slot,
                        generation,
                        format!("a worker could not restart: {why}"),
                    );
                    return;
                }
            };
        } else {
            cell.resolve(outcome);
        }
    }
    // Closed: the tasks handed over resolve before the pool's connection
    // may go.
    #[cfg(feature = "nats")]
    if let Exec::Nats(remote) = &mut exec {
        remote.drain();
    }
}

/// Counts a remote task's outcome in its pool's counters, as the loop
/// counts a local one.
#[cfg(feature = "nats")]
fn counter<W: Worker>(inner: &Arc<Inner<W>>) -> super::nats::Count {
    let inner = Arc::clone(inner);
    Arc::new(move |outcome: &Outcome| {
        let counters = &inner.counters;
        match outcome {
            Outcome::Value(_) => counters.succeeded.fetch_add(1, Ordering::Relaxed),
            Outcome::Error(ErrorKind::Panicked(_)) => {
                counters.panicked.fetch_add(1, Ordering::Relaxed)
            }
            Outcome::Failed(_) | Outcome::Error(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    })
}

/// A task's outcome, from what its worker's `run` came to (here, in a
/// child, or on another machine), its value and error packed for the
/// task's handle.
impl<T: Send + 'static, E: Send + 'static> From<Invoked<Envelope<T>, Envelope<E>>> for Outcome {
    fn from(invoked: Invoked<Envelope<T>, Envelope<E>>) -> Outcome {
        match invoked {
            Invoked::Value(value) => Outcome::Value(value.erase()),
            Invoked::Failed(error) => Outcome::Failed(error.erase()),
            Invoked::Panicked(caught) => Outcome::Error(ErrorKind::Panicked(caught.message)),
            Invoked::BadInput(e) | Invoked::Unencodable(e) => Outcome::Error(ErrorKind::Codec(e)),
        }
    }
}

/// What runs a worker's tasks.
pub(super) enum Exec<W: Worker> {
    /// Its state, on this thread.
    Local(StateGuard<W>),
    /// A child process that holds it.
    #[cfg(target_os = "linux")]
    Child(remote::ChildWorker<W>),
    /// A slot that carries tasks to workers on other machines.
    #[cfg(feature = "nats")]
    Nats(super::nats::RemoteSlot<W>),
}

/// A worker's state, dropped under `catch` wherever the worker's loop
/// leaves it: a `Drop` that panics must not kill the worker's thread while
/// the pool still counts it (its queued tasks would never resolve).
pub(super) struct StateGuard<W>(Option<W>);

impl<W> Drop for StateGuard<W> {
    fn drop(&mut self) {
        drop_caught(self.0.take(), "");
    }
}

/// Drops a worker's state under `catch`; a panic is logged.
pub(super) fn drop_caught<W>(state: Option<W>, pool: &str) {
    if let Some(state) = state
        && let Err(caught) = unwind::catch(move || drop(state))
    {
        tracing::warn!(target: "isolates", %pool, panic = %caught.message, "a worker's state panicked while dropped");
    }
}

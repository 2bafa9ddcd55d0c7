//! Dropping anything never blocks the caller: the last handle of an
//! isolate, a supervisor, a pool or a work manager returns at once, and
//! the thing it owned still ends, in the background.
//!
//! Each owned thing is kept busy for far longer than the bound on the
//! drop (a drop that waited for it would fail), and released only after
//! the drop returned.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::wait_until;
use isolates::pool::{Pool, TaskContext, Worker};
use isolates::port;
use isolates::supervisor::{ChildSpec, Shutdown, Supervisor};
use isolates::{Context, ExitReason, Isolate};

/// A drop must return within this (it does O(1) work; the bound only
/// leaves room for a loaded machine's scheduling).
const DROP_BOUND: Duration = Duration::from_millis(250);
/// How long the owned things are given to end afterwards.
const LONG: Duration = Duration::from_secs(30);

/// Drops `value` on a thread of its own; returns how long the drop took.
fn timed_drop<T: Send + 'static>(value: T) -> Duration {
    std::thread::spawn(move || {
        let start = Instant::now();
        drop(value);
        start.elapsed()
    })
    .join()
    .expect("the dropping thread")
}

/// One gate per test (tests run at once): opened by the test, waited on
/// by the isolate it starts.
static GATES: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
/// Raised by the isolate of gate `i` once its handler runs (waits at the
/// gate).
static ENTERED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// Waits until gate `i` opens (at most [`LONG`]).
fn pass(i: usize) {
    let until = Instant::now() + LONG;
    while !GATES[i].load(Ordering::Acquire) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Handles a message once its gate (the start argument) opens.
struct Blocker {
    gate: usize,
}

impl Isolate for Blocker {
    type Args = usize;
    type Message = u8;
    type Reply = u8;
    type Error = String;

    fn start(gate: usize, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Blocker { gate })
    }

    fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> {
        ENTERED[self.gate].store(true, Ordering::Release);
        pass(self.gate);
        Ok(m)
    }
}

#[test]
fn dropping_the_last_isolate_handle_returns_at_once_and_the_isolate_ends() {
    let isolate = Blocker::spawn(0).unwrap();
    let (exits_tx, exits) = port::unbounded::<ExitReason>();
    isolate.add_exit_listener(exits_tx);
    let reply = isolate.ask_pending(7);
    let took = timed_drop(isolate);
    assert!(took < DROP_BOUND, "the drop took {took:?}");
    GATES[0].store(true, Ordering::Release);
    // Its queue is handled, then it exits.
    assert_eq!(reply.wait(), Ok(7));
    assert_eq!(exits.recv_timeout(LONG), Ok(ExitReason::Normal));
}

#[test]
fn dropping_the_last_supervisor_returns_at_once_and_its_tree_stops() {
    let sup = Supervisor::builder()
        .child(
            ChildSpec::worker::<Blocker>("blocker", 1)
                .shutdown(Shutdown::Timeout(Duration::from_secs(20))),
        )
        .spawn()
        .unwrap();
    let child = sup.worker::<Blocker>("blocker").unwrap();
    let (exits_tx, exits) = port::unbounded::<ExitReason>();
    child.add_exit_listener(exits_tx);
    // Busy: stopping it waits for this message, up to its shutdown time.
    // Once it is being handled: a stop that came before it was taken would
    // end the isolate with the message still queued (as Dart's kill).
    let reply = child.ask_pending(1);
    assert!(
        wait_until(|| ENTERED[1].load(Ordering::Acquire), LONG),
        "the message is being handled"
    );
    let clone = sup.clone();
    assert!(
        timed_drop(clone) < DROP_BOUND,
        "a clone's drop stops nothing"
    );
    assert!(!sup.is_finished());
    let took = timed_drop(sup);
    assert!(took < DROP_BOUND, "the drop took {took:?}");
    GATES[1].store(true, Ordering::Release);
    assert_eq!(reply.wait(), Ok(1));
    assert!(exits.recv_timeout(LONG).is_ok(), "the child stopped");
    assert!(wait_until(|| child.is_finished(), LONG));
}

/// Runs a task until the test lets it go.
struct Gated(Arc<AtomicBool>);

impl Worker for Gated {
    type Args = Arc<AtomicBool>;
    type Input = ();
    type Output = u8;
    type Progress = ();
    type Error = String;

    fn start(open: Arc<AtomicBool>) -> Result<Self, String> {
        Ok(Gated(open))
    }

    fn run(&mut self, (): (), _: &TaskContext<'_, Self>) -> Result<u8, String> {
        let until = Instant::now() + LONG;
        while !self.0.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(5)
    }
}

#[test]
fn dropping_the_last_pool_returns_at_once_and_its_running_task_finishes() {
    let open = Arc::new(AtomicBool::new(false));
    let pool = Pool::<Gated>::builder()
        .workers(1)
        .spawn(Arc::clone(&open))
        .unwrap();
    let task = pool.submit(());
    let watch = task.watch();
    assert!(wait_until(|| watch.is_executing(), LONG));
    let took = timed_drop(pool);
    assert!(took < DROP_BOUND, "the drop took {took:?}");
    open.store(true, Ordering::Release);
    assert_eq!(task.wait(), Ok(5));
    assert!(wait_until(|| !watch.is_executing(), LONG));
}

#[cfg(feature = "schedule")]
#[test]
fn dropping_the_last_work_manager_returns_at_once_and_keeps_its_run() {
    use isolates::schedule::{
        WorkContext, WorkManager, WorkRequest, WorkResult, WorkState, WorkStore,
    };

    let path =
        std::env::temp_dir().join(format!("isolates-drop-manager-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let started = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&started);
    // Told to stop, it takes a while to wind up (within the grace): a
    // drop that waited for it would take as long.
    let slow = move |(): (), ctx: &WorkContext<'_>| {
        seen.store(true, Ordering::Release);
        let until = Instant::now() + LONG;
        while !ctx.is_stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_secs(1));
        WorkResult::Success(3u8)
    };
    let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
        .handler_fn("slow", slow)
        .stop_grace(Duration::from_secs(20))
        .spawn()
        .unwrap();
    let id = manager
        .enqueue(WorkRequest::once("slow"))
        .wait()
        .unwrap()
        .ids()[0];
    assert!(wait_until(|| started.load(Ordering::Acquire), LONG));
    let took = timed_drop(manager);
    assert!(took < DROP_BOUND, "the drop took {took:?}");
    // The store is let go once the manager's thread has written it.
    assert!(wait_until(|| WorkStore::open(&path).is_ok(), LONG));
    let again = WorkManager::builder(WorkStore::open(&path).unwrap())
        .handler_fn("slow", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(0u8)
        })
        .spawn()
        .unwrap();
    // Stopped mid-run, it stayed enqueued (as after a crash) and runs again.
    let info = again
        .wait_finished(id, LONG)
        .expect("the work is still in the store, and runs again");
    assert_eq!(info.state, WorkState::Succeeded);
    assert_eq!(info.output::<u8>(), Some(Ok(0)));
    again.stop();
    assert!(again.join(LONG));
    std::fs::remove_file(&path).unwrap();
}

//! Worker pools: the four routing modes, priorities without starvation,
//! cancellation and deadlines (queued and running), progress, bounded queues
//! (reject and block), panics with fresh state and retries, killed workers,
//! autoscaling up and down, shutdown, the main-thread pump, and every handle
//! resolving exactly once under a mixed load.
//!
//! Tasks that must stay running are gated: an `Op::Block` task sends back a
//! release port and waits on it, so no test relies on sleeps or on how fast
//! a thread is scheduled (one test sleeps only to make a past race likely;
//! it passes however the threads are scheduled).

mod common;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::wait_until;
use isolates::pool::{
    FullPolicy, MainThread, Pool, PoolBuilder, Routing, Task, TaskContext, TaskHandle,
    TaskPriority, TaskState, Worker,
};
use isolates::{ReceivePort, RecvTimeoutError, RunError, SendPort, TaskError, port};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

/// Each worker state takes the next number when it starts, so a restarted
/// worker is told apart from the one before.
static INCARNATIONS: AtomicU64 = AtomicU64::new(0);

/// Keys of `PanicFirst` and `HoldFirst` tasks that have started once.
static FIRST_RUNS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Keys of `HoldFirst` tasks whose first run may return.
static RELEASED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[derive(Serialize, Deserialize)]
enum Op {
    /// Returns twice the number.
    Double(u64),
    /// Sends `Event::Started`, then waits until released; if it sees it was
    /// cancelled (or its deadline passed) first, it sends `Event::SawCancel`
    /// and returns an error.
    Block(SendPort<Event>),
    /// Returns its own error.
    Fail(String),
    /// Panics with this message.
    Panic(String),
    /// Panics the first time a task with this key runs; returns 2 after.
    PanicFirst(u64),
    /// The first run with this key waits until `release_hold(key)` and
    /// returns 1; later runs return 2 at once. Carries no port, so it can be
    /// retried.
    HoldFirst(u64),
    /// Reports 1..=n as progress, then returns n.
    Progress(u32),
}

#[derive(Serialize, Deserialize)]
enum Event {
    /// A `Block` task started on `thread`; send on `release` to let it end.
    Started {
        release: SendPort<()>,
        thread: String,
    },
    /// The running `Block` task saw `TaskContext::is_cancelled`.
    SawCancel,
}

/// What every task returns: its value and who ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Done {
    value: u64,
    /// The worker thread's name (`<pool name>-<slot>`).
    thread: String,
    /// Which start of a worker state ran it.
    incarnation: u64,
    /// Tasks this worker state has run, this one included.
    runs: u64,
}

/// A worker that does what its task says; if started with a log port it
/// sends there the id of every task it starts, in order.
struct Probe {
    incarnation: u64,
    runs: u64,
    log: Option<SendPort<u64>>,
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

fn first_run(key: u64) -> bool {
    let mut runs = FIRST_RUNS.lock().unwrap();
    if runs.contains(&key) {
        false
    } else {
        runs.push(key);
        true
    }
}

fn has_run(key: u64) -> bool {
    FIRST_RUNS.lock().unwrap().contains(&key)
}

fn release_hold(key: u64) {
    RELEASED.lock().unwrap().push(key);
}

impl Worker for Probe {
    type Args = Option<SendPort<u64>>;
    type Input = Op;
    type Output = Done;
    type Progress = u32;
    type Error = String;

    fn start(log: Self::Args) -> Result<Self, String> {
        Ok(Probe {
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            runs: 0,
            log,
        })
    }

    fn run(&mut self, op: Op, task: &TaskContext<'_, Self>) -> Result<Done, String> {
        self.runs += 1;
        if let Some(log) = &self.log {
            log.send(task.id()).map_err(|e| e.to_string())?;
        }
        let value = match op {
            Op::Double(n) => n * 2,
            Op::Block(events) => {
                let (release, gate) = port::bounded::<()>(1);
                let thread = thread_name();
                events
                    .send(Event::Started { release, thread })
                    .map_err(|e| e.to_string())?;
                let until = Instant::now() + T;
                loop {
                    match gate.recv_timeout(Duration::from_millis(2)) {
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                        Err(_) => {}
                    }
                    if task.is_cancelled() {
                        let _ = events.send(Event::SawCancel);
                        return Err("stopped".into());
                    }
                    if Instant::now() >= until {
                        return Err("never released".into());
                    }
                }
                0
            }
            Op::Fail(why) => return Err(why),
            Op::Panic(message) => panic!("{message}"),
            Op::PanicFirst(key) => {
                if first_run(key) {
                    panic!("first run of {key}");
                }
                2
            }
            Op::HoldFirst(key) => {
                if first_run(key) {
                    let until = Instant::now() + T;
                    while !RELEASED.lock().unwrap().contains(&key) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    1
                } else {
                    2
                }
            }
            Op::Progress(n) => {
                for i in 1..=n {
                    task.progress(i);
                }
                u64::from(n)
            }
        };
        Ok(Done {
            value,
            thread: thread_name(),
            incarnation: self.incarnation,
            runs: self.runs,
        })
    }
}

type Outcome = Result<Done, TaskError<String>>;

fn builder(workers: usize) -> PoolBuilder<Probe> {
    Pool::<Probe>::builder().workers(workers).nice(None)
}

fn pool(workers: usize) -> Pool<Probe> {
    builder(workers).spawn(None).unwrap()
}

/// A pool whose workers log the id of each task they start.
fn logged(workers: usize) -> (Pool<Probe>, ReceivePort<u64>) {
    let (tx, rx) = port::unbounded();
    (builder(workers).spawn(Some(tx)).unwrap(), rx)
}

/// The next `n` task ids from a log.
fn ids(log: &ReceivePort<u64>, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| log.recv_timeout(T).expect("a task never started"))
        .collect()
}

/// Waits for a task's result; fails the test if it never comes.
fn outcome(mut handle: TaskHandle<Probe>) -> Outcome {
    handle.wait_timeout(T).expect("the task never resolved")
}

fn value(handle: TaskHandle<Probe>) -> u64 {
    outcome(handle).expect("the task failed").value
}

/// A `Block` op and the port its events come on.
fn blocking() -> (Op, ReceivePort<Event>) {
    let (tx, rx) = port::unbounded();
    (Op::Block(tx), rx)
}

/// Waits until a `Block` task runs: its release port and its thread.
fn started(events: &ReceivePort<Event>) -> (SendPort<()>, String) {
    match events.recv_timeout(T) {
        Ok(Event::Started { release, thread }) => (release, thread),
        Ok(Event::SawCancel) => panic!("the task saw a cancel before it started"),
        Err(e) => panic!("the blocking task never started: {e}"),
    }
}

/// Submits a `Block` task and waits until it runs.
fn block(pool: &Pool<Probe>) -> (TaskHandle<Probe>, SendPort<()>, String) {
    let (op, events) = blocking();
    let handle = pool.submit(op);
    let (release, thread) = started(&events);
    (handle, release, thread)
}

/// Lets a `Block` task end and checks it succeeded.
fn finish(handle: TaskHandle<Probe>, release: &SendPort<()>) -> Done {
    release.send(()).unwrap();
    outcome(handle).expect("the blocking task failed")
}

// --- Routing ---------------------------------------------------------------

#[test]
fn shared_queue_computes_every_result_and_an_idle_worker_takes_queued_work() {
    let pool = pool(2);
    let handles: Vec<_> = (0..100).map(|n| pool.submit(Op::Double(n))).collect();
    for (n, handle) in (0..).zip(handles) {
        assert_eq!(value(handle), n * 2);
    }

    // With one worker held, the other serves everything queued.
    let (held, release, held_thread) = block(&pool);
    let quick: Vec<_> = (0..20).map(|n| pool.submit(Op::Double(n))).collect();
    for (n, handle) in (0..).zip(quick) {
        let done = outcome(handle).unwrap();
        assert_eq!(done.value, n * 2);
        assert_ne!(done.thread, held_thread);
    }
    assert_eq!(held.state(), TaskState::Running);
    assert_eq!(finish(held, &release).thread, held_thread);
    assert_eq!(pool.stats().succeeded, 121);
}

#[test]
fn least_loaded_sends_work_to_the_worker_that_is_free() {
    let pool = builder(2)
        .routing(Routing::LeastLoaded)
        .spawn(None)
        .unwrap();
    let handles: Vec<_> = (0..100).map(|n| pool.submit(Op::Double(n))).collect();
    for (n, handle) in (0..).zip(handles) {
        assert_eq!(value(handle), n * 2);
    }

    // One worker runs a held task: each new task goes to the other one.
    let (held, release, held_thread) = block(&pool);
    for n in 0..10 {
        let done = outcome(pool.submit(Op::Double(n))).unwrap();
        assert_eq!(done.value, n * 2);
        assert_ne!(done.thread, held_thread);
    }
    assert_eq!(held.state(), TaskState::Running);
    finish(held, &release);
}

#[test]
fn round_robin_alternates_workers_even_when_one_is_free() {
    let pool = builder(2)
        .name("rr")
        .routing(Routing::RoundRobin)
        .spawn(None)
        .unwrap();
    // Four tasks routed in turn: 1 and 3 to one worker, 2 and 4 to the other.
    let (op1, events1) = blocking();
    let (op2, events2) = blocking();
    let first = pool.submit(op1);
    let second = pool.submit(op2);
    let third = pool.submit(Op::Double(3));
    let fourth = pool.submit(Op::Double(4));
    let (release1, thread1) = started(&events1);
    let (release2, thread2) = started(&events2);
    assert_ne!(thread1, thread2);

    // The second worker finishes its two; the third task still waits for
    // the first worker although the second is free.
    assert_eq!(finish(second, &release2).thread, thread2);
    let done4 = outcome(fourth).unwrap();
    assert_eq!((done4.value, done4.thread.as_str()), (8, thread2.as_str()));
    assert_eq!(third.state(), TaskState::Queued);

    assert_eq!(finish(first, &release1).thread, thread1);
    let done3 = outcome(third).unwrap();
    assert_eq!((done3.value, done3.thread.as_str()), (6, thread1.as_str()));

    // Consecutive tasks alternate, continuing the turn.
    let handles: Vec<_> = (0..20).map(|n| pool.submit(Op::Double(n))).collect();
    let done: Vec<Done> = handles.into_iter().map(|h| outcome(h).unwrap()).collect();
    for (n, d) in (0..).zip(&done) {
        assert_eq!(d.value, n * 2);
        let expected = if n % 2 == 0 { &thread1 } else { &thread2 };
        assert_eq!(&d.thread, expected, "task {n}");
    }
}

#[test]
fn key_affinity_runs_a_key_on_one_worker_and_spreads_keys() {
    let pool = builder(3)
        .name("affinity")
        .routing(Routing::KeyAffinity)
        .spawn(None)
        .unwrap();
    let mut handles = Vec::new();
    for round in 0..5 {
        for key in 0..16u64 {
            let task = Task::new(Op::Double(key * 100 + round)).key(format!("user-{key}"));
            handles.push((key, round, pool.submit_task(task)));
        }
    }
    let mut threads: HashMap<u64, HashSet<String>> = HashMap::new();
    for (key, round, handle) in handles {
        let done = outcome(handle).unwrap();
        assert_eq!(done.value, (key * 100 + round) * 2);
        threads.entry(key).or_default().insert(done.thread);
    }
    for (key, used) in &threads {
        assert_eq!(used.len(), 1, "key {key} ran on {used:?}");
    }
    let all: HashSet<&String> = threads.values().flatten().collect();
    assert!(all.len() > 1, "16 keys all ran on {all:?}");
    assert_eq!(pool.stats().workers, 3);
}

// --- Priorities -------------------------------------------------------------

#[test]
fn high_priority_runs_first_then_normal_then_low() {
    let (pool, log) = logged(1);
    let (held, release, _) = block(&pool);
    let low = pool.submit_task(Task::new(Op::Double(1)).priority(TaskPriority::Low));
    let normal = pool.submit_task(Task::new(Op::Double(2)).priority(TaskPriority::Normal));
    let high = pool.submit_task(Task::new(Op::Double(3)).priority(TaskPriority::High));
    let expected = [held.id(), high.id(), normal.id(), low.id()];
    finish(held, &release);
    assert_eq!(value(low), 2);
    assert_eq!(value(normal), 4);
    assert_eq!(value(high), 6);
    // The worker took the held task at its first or second pick, so these
    // are picks 2..=4 or 3..=5: the one starting at normal (every fourth)
    // finds the high task gone, and the one starting at low (every eighth)
    // does not come up.
    assert_eq!(ids(&log, 4), expected);
}

#[test]
fn a_low_task_is_not_starved_by_many_high_ones() {
    let (pool, log) = logged(1);
    let (held, release, _) = block(&pool);
    let high: Vec<_> = (0..20)
        .map(|n| pool.submit_task(Task::new(Op::Double(n)).priority(TaskPriority::High)))
        .collect();
    let low = pool.submit_task(Task::new(Op::Double(99)).priority(TaskPriority::Low));
    let low_id = low.id();
    let held_id = held.id();
    finish(held, &release);
    assert_eq!(value(low), 198);
    for (n, handle) in (0..).zip(high) {
        assert_eq!(value(handle), n * 2);
    }
    let order = ids(&log, 22);
    assert_eq!(order[0], held_id);
    let at = order[1..].iter().position(|&id| id == low_id).unwrap();
    // One pick in eight starts at low: within any eight picks in a row.
    assert!(at < 8, "the low task ran {}th of 21", at + 1);
}

// --- Cancellation and deadlines ---------------------------------------------

#[test]
fn a_cancelled_queued_task_never_runs() {
    let (pool, log) = logged(1);
    let (held, release, _) = block(&pool);
    let mut queued = pool.submit(Op::Double(5));
    assert_eq!(queued.state(), TaskState::Queued);
    assert!(queued.cancel());
    assert_eq!(queued.try_take(), Some(Err(TaskError::Cancelled)));
    assert!(!queued.cancel());

    let held_id = held.id();
    finish(held, &release);
    let after = pool.submit(Op::Double(6));
    let after_id = after.id();
    assert_eq!(value(after), 12);
    // The worker went from the held task straight to the one after.
    assert_eq!(ids(&log, 2), [held_id, after_id]);
    assert!(log.try_recv().is_err());
}

#[test]
fn a_cancelled_running_task_resolves_at_once_and_sees_the_cancel() {
    let pool = pool(1);
    let (op, events) = blocking();
    let mut running = pool.submit(op);
    // Held open until the end: the task must stop because of the cancel.
    let (_release, _) = started(&events);
    assert_eq!(running.state(), TaskState::Running);
    assert!(running.cancel());
    assert_eq!(running.try_take(), Some(Err(TaskError::Cancelled)));
    assert!(matches!(events.recv_timeout(T), Ok(Event::SawCancel)));
    assert!(!running.cancel(), "cancel after the task resolved");

    // A task that already finished cannot be cancelled either.
    let mut done = pool.submit(Op::Double(4));
    assert_eq!(done.wait_timeout(T).unwrap().unwrap().value, 8);
    assert!(!done.cancel());
    assert_eq!(value(pool.submit(Op::Double(5))), 10);
}

#[test]
fn a_queued_task_times_out_while_the_only_worker_is_busy() {
    let (pool, log) = logged(1);
    let (held, release, _) = block(&pool);
    let timeout = Duration::from_millis(50);
    let submitted = Instant::now();
    let late = pool.submit_task(Task::new(Op::Double(1)).timeout(timeout));
    assert_eq!(outcome(late), Err(TaskError::TimedOut));
    assert!(submitted.elapsed() >= timeout);
    assert_eq!(held.state(), TaskState::Running);

    let held_id = held.id();
    finish(held, &release);
    let after = pool.submit(Op::Double(2));
    let after_id = after.id();
    assert_eq!(value(after), 4);
    assert_eq!(ids(&log, 2), [held_id, after_id], "the timed-out task ran");
}

#[test]
fn a_running_task_past_its_deadline_sees_is_cancelled() {
    let pool = pool(1);
    // The deadline must pass after the worker takes the task; on a loaded
    // machine it may pass first (the task is then skipped): try again with
    // a longer one.
    let mut timeout = Duration::from_millis(200);
    for _ in 0..6 {
        let (op, events) = blocking();
        let submitted = Instant::now();
        let task = pool.submit_task(Task::new(op).timeout(timeout));
        assert_eq!(outcome(task), Err(TaskError::TimedOut));
        assert!(submitted.elapsed() >= timeout);
        // Once a later task ran on the only worker, the timed-out one has
        // either returned or been skipped.
        assert_eq!(value(pool.submit(Op::Double(1))), 2);
        match events.try_recv() {
            Ok(Event::Started { .. }) => {
                assert!(matches!(events.try_recv(), Ok(Event::SawCancel)));
                return;
            }
            Ok(Event::SawCancel) => panic!("SawCancel before Started"),
            Err(_) => timeout *= 2,
        }
    }
    panic!("the worker never took the task before its deadline");
}

// --- Progress ----------------------------------------------------------------

#[test]
fn progress_arrives_in_order() {
    let pool = pool(1);
    let mut task = pool.submit(Op::Progress(500));
    let mut seen = Vec::new();
    assert!(wait_until(
        || {
            seen.extend(task.progress());
            task.is_done()
        },
        T
    ));
    seen.extend(task.progress());
    assert_eq!(seen, (1..=500).collect::<Vec<u32>>());
    assert_eq!(task.try_take().unwrap().unwrap().value, 500);
    assert!(task.progress().is_empty());
}

// --- Bounded queue -----------------------------------------------------------

#[test]
fn a_full_queue_rejects_with_the_reject_policy() {
    let pool = builder(1)
        .queue_bound(2, FullPolicy::Reject)
        .spawn(None)
        .unwrap();
    let (held, release, _) = block(&pool);
    let queued = [pool.submit(Op::Double(1)), pool.submit(Op::Double(2))];
    assert_eq!(pool.stats().queued, 2);
    let mut rejected = pool.submit(Op::Double(3));
    assert_eq!(rejected.try_take(), Some(Err(TaskError::Rejected)));
    let stats = pool.stats();
    assert_eq!((stats.rejected, stats.queued), (1, 2));

    finish(held, &release);
    for (n, handle) in (1..).zip(queued) {
        assert_eq!(value(handle), n * 2);
    }
    assert_eq!(value(pool.submit(Op::Double(4))), 8);
    assert_eq!(pool.stats().rejected, 1);
}

#[test]
fn a_full_queue_with_the_block_policy_waits_for_room() {
    let pool = builder(1)
        .queue_bound(1, FullPolicy::Block(T))
        .spawn(None)
        .unwrap();
    let (held, release, _) = block(&pool);
    let queued = pool.submit(Op::Double(1));

    let (ready_tx, ready_rx) = mpsc::channel();
    let submitter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            ready_tx.send(()).unwrap();
            let handle = pool.submit(Op::Double(2));
            (handle, Instant::now())
        })
    };
    ready_rx.recv_timeout(T).unwrap();
    // No room can appear while the worker is held.
    assert!(!wait_until(
        || submitter.is_finished(),
        Duration::from_millis(100)
    ));
    let released = Instant::now();
    finish(held, &release);
    let (waited, returned) = submitter.join().unwrap();
    assert!(returned >= released);
    assert_eq!(value(queued), 2);
    assert_eq!(value(waited), 4);
    assert_eq!(pool.stats().rejected, 0);
}

#[test]
fn a_full_queue_with_the_block_policy_rejects_after_its_wait() {
    let wait = Duration::from_millis(100);
    let pool = builder(1)
        .queue_bound(1, FullPolicy::Block(wait))
        .spawn(None)
        .unwrap();
    let (held, release, _) = block(&pool);
    let queued = pool.submit(Op::Double(1));
    let start = Instant::now();
    let mut rejected = pool.submit(Op::Double(2));
    assert!(start.elapsed() >= wait);
    assert_eq!(rejected.try_take(), Some(Err(TaskError::Rejected)));
    assert_eq!(pool.stats().rejected, 1);
    finish(held, &release);
    assert_eq!(value(queued), 2);
}

#[test]
fn a_cancelled_task_frees_its_place_in_a_bounded_queue() {
    let pool = builder(1)
        .queue_bound(1, FullPolicy::Reject)
        .spawn(None)
        .unwrap();
    let (held, release, _) = block(&pool);
    let stale = pool.submit(Op::Double(1));
    assert!(stale.cancel());
    let fresh = pool.submit(Op::Double(2));
    assert_eq!(
        fresh.state(),
        TaskState::Queued,
        "the fresh task was rejected"
    );
    assert_eq!(pool.stats().queued, 1, "{:?}", pool.stats());
    finish(held, &release);
    assert_eq!(value(fresh), 4);
}

// --- Panics, retries, killed workers ----------------------------------------

#[test]
fn a_panicking_task_resolves_panicked_and_the_worker_restarts_fresh() {
    let pool = pool(1);
    let one = outcome(pool.submit(Op::Double(1))).unwrap();
    let two = outcome(pool.submit(Op::Double(2))).unwrap();
    assert_eq!((one.runs, two.runs), (1, 2));
    assert_eq!(one.incarnation, two.incarnation);

    assert_eq!(
        outcome(pool.submit(Op::Panic("boom".into()))),
        Err(TaskError::Panicked("boom".into()))
    );
    let after = outcome(pool.submit(Op::Double(3))).unwrap();
    assert_eq!(after.value, 6);
    assert_eq!(after.runs, 1, "the state was not started again");
    assert_ne!(after.incarnation, one.incarnation);
    let stats = pool.stats();
    assert_eq!(
        (stats.panicked, stats.restarts, stats.workers),
        (1, 1, 1),
        "{stats:?}"
    );
}

#[test]
fn a_task_with_a_retry_survives_a_panic_on_its_first_attempt() {
    let pool = pool(1);
    let retried = pool.submit_task(Task::new(Op::PanicFirst(7_001)).retries(1));
    let done = outcome(retried).unwrap();
    assert_eq!(done.value, 2);
    assert_eq!(done.runs, 1, "the retry ran on a fresh state");
    let stats = pool.stats();
    assert_eq!((stats.panicked, stats.restarts), (1, 1));

    // Without a retry the same panic is the task's result.
    assert_eq!(
        outcome(pool.submit(Op::PanicFirst(7_002))),
        Err(TaskError::Panicked("first run of 7002".into()))
    );
    assert_eq!(pool.stats().panicked, 2);
}

#[test]
fn killing_a_worker_mid_task_loses_the_task_and_the_pool_goes_on() {
    let pool = pool(1);
    let (held, release, _) = block(&pool);
    // Queued behind the held task: the replacement runs it.
    let queued = pool.submit(Op::Double(1));
    assert!(pool.kill_worker(0));
    assert!(matches!(outcome(held), Err(TaskError::WorkerLost(_))));
    let first = outcome(queued).unwrap();
    assert_eq!((first.value, first.runs), (2, 1), "a fresh state");
    let after = outcome(pool.submit(Op::Double(21))).unwrap();
    assert_eq!((after.value, after.runs), (42, 2));
    assert_eq!(after.incarnation, first.incarnation);
    let stats = pool.stats();
    assert_eq!((stats.workers, stats.restarts), (1, 1));
    assert!(!pool.kill_worker(7), "no such worker");
    // Let the abandoned thread end.
    let _ = release.send(());
}

#[test]
fn a_task_with_a_retry_runs_again_when_its_worker_is_killed() {
    let key = 8_001;
    let pool = pool(1);
    let task = pool.submit_task(Task::new(Op::HoldFirst(key)).retries(1));
    assert!(wait_until(|| has_run(key), T));
    assert!(pool.kill_worker(0));
    let done = outcome(task).unwrap();
    assert_eq!(done.value, 2, "the second attempt");
    release_hold(key);
    assert_eq!(value(pool.submit(Op::Double(4))), 8);
    assert_eq!(pool.stats().restarts, 1);
}

// --- Autoscaling ---------------------------------------------------------------

#[test]
fn autoscale_grows_to_the_maximum_under_load_and_shrinks_when_idle() {
    let pool = Pool::<Probe>::builder()
        .nice(None)
        .autoscale(1, 3, Duration::from_millis(200))
        .spawn(None)
        .unwrap();
    assert_eq!(pool.stats().workers, 1);
    // Each held task starts before the next is submitted: a pool grows when
    // work is submitted and no worker is idle.
    let held: Vec<_> = (0..3).map(|_| block(&pool)).collect();
    let threads: HashSet<&String> = held.iter().map(|(_, _, thread)| thread).collect();
    assert_eq!(threads.len(), 3);
    assert_eq!(pool.stats().workers, 3);
    assert_eq!(pool.stats().busy, 3);

    for (handle, release, _) in held {
        finish(handle, &release);
    }
    assert!(
        wait_until(|| pool.stats().workers == 1, T),
        "{:?}",
        pool.stats()
    );
    assert_eq!(value(pool.submit(Op::Double(5))), 10);
}

#[test]
fn autoscale_starts_a_worker_for_tasks_submitted_back_to_back() {
    for _ in 0..5 {
        let pool = Pool::<Probe>::builder()
            .nice(None)
            .autoscale(1, 2, T)
            .spawn(None)
            .unwrap();
        // The bug needs the one worker waiting for work; nothing shows when
        // it is, so give it time (the test passes either way once fixed).
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(pool.stats().workers, 1);
        let (op1, events1) = blocking();
        let (op2, events2) = blocking();
        let first = pool.submit(op1);
        let second = pool.submit(op2);
        // Both must run at once, one worker each.
        let (release1, _) = started(&events1);
        let (release2, _) = started(&events2);
        assert_eq!(pool.stats().workers, 2);
        finish(first, &release1);
        finish(second, &release2);
    }
}

// --- Shutdown -------------------------------------------------------------------

#[test]
fn shutdown_closes_queued_and_later_tasks_and_lets_running_ones_finish() {
    let pool = pool(1);
    let (held, release, _) = block(&pool);
    let mut queued = [pool.submit(Op::Double(1)), pool.submit(Op::Double(2))];
    pool.stop();
    for handle in &mut queued {
        assert_eq!(handle.try_take(), Some(Err(TaskError::PoolClosed)));
    }
    let mut later = pool.submit(Op::Double(3));
    assert_eq!(later.try_take(), Some(Err(TaskError::PoolClosed)));
    assert_eq!(finish(held, &release).value, 0);
    assert!(wait_until(|| pool.stats().workers == 0, T));
}

#[test]
fn dropping_the_last_pool_clone_shuts_it_down() {
    let pool = pool(1);
    let other = pool.clone();
    let (held, release, _) = block(&pool);
    let queued = other.submit(Op::Double(1));
    drop(pool);
    // A clone is left: nothing closed.
    assert_eq!(queued.state(), TaskState::Queued);
    drop(other);
    assert_eq!(outcome(queued), Err(TaskError::PoolClosed));
    assert_eq!(finish(held, &release).value, 0);
}

// --- MainThread -------------------------------------------------------------------

#[test]
fn main_thread_runs_callbacks_only_in_pump_on_its_thread_exactly_once() {
    let pool = pool(2);
    let mut ui = MainThread::new();
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&woken);
    ui.set_waker(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let me = std::thread::current().id();
    let delivered: Rc<RefCell<HashMap<u64, usize>>> = Rc::default();
    let results: Rc<RefCell<Vec<(u64, Outcome)>>> = Rc::default();
    let mut expected = HashMap::new();
    for n in 0..30u64 {
        let op = if n % 3 == 0 {
            Op::Fail(format!("no {n}"))
        } else {
            Op::Double(n)
        };
        let handle = pool.submit(op);
        let id = handle.id();
        expected.insert(id, n);
        let (delivered, results) = (Rc::clone(&delivered), Rc::clone(&results));
        ui.on_done(handle, move |result| {
            assert_eq!(std::thread::current().id(), me);
            *delivered.borrow_mut().entry(id).or_default() += 1;
            results.borrow_mut().push((id, result));
        });
    }
    assert_eq!(ui.watching(), 30);
    // Every task resolves; no callback runs until the pump.
    assert!(wait_until(|| woken.load(Ordering::SeqCst) == 30, T));
    assert!(delivered.borrow().is_empty());
    assert_eq!(ui.pump(Duration::ZERO), 0, "a zero budget runs nothing");
    assert!(delivered.borrow().is_empty());

    assert_eq!(ui.pump(T), 30);
    assert_eq!(ui.watching(), 0);
    assert_eq!(ui.pump(T), 0);
    assert_eq!(delivered.borrow().len(), 30);
    assert!(delivered.borrow().values().all(|&n| n == 1));
    for (id, result) in results.borrow().iter() {
        let n = expected[id];
        if n % 3 == 0 {
            assert_eq!(result, &Err(TaskError::Failed(format!("no {n}"))));
        } else {
            assert_eq!(result.as_ref().unwrap().value, n * 2);
        }
    }
}

#[test]
fn main_thread_watch_delivers_progress_then_the_result() {
    let pool = pool(1);
    let mut ui = MainThread::new();
    let me = std::thread::current().id();
    let progress: Rc<RefCell<Vec<u32>>> = Rc::default();
    let done: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let (p, d) = (Rc::clone(&progress), Rc::clone(&done));
    ui.watch(
        pool.submit(Op::Progress(50)),
        move |value| {
            assert_eq!(std::thread::current().id(), me);
            p.borrow_mut().push(value);
        },
        move |result| {
            assert_eq!(std::thread::current().id(), me);
            d.borrow_mut().push(result);
        },
    );
    assert!(wait_until(
        || {
            ui.pump(Duration::from_millis(5));
            ui.watching() == 0
        },
        T
    ));
    assert_eq!(*progress.borrow(), (1..=50).collect::<Vec<u32>>());
    let done = done.borrow();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].as_ref().unwrap().value, 50);
}

#[test]
fn main_thread_delivers_a_queued_timeout_while_the_workers_are_busy() {
    let pool = pool(1);
    let (held, release, _) = block(&pool);
    let mut ui = MainThread::new();
    let done: Rc<RefCell<Option<Outcome>>> = Rc::default();
    let sink = Rc::clone(&done);
    let task = pool.submit_task(Task::new(Op::Double(1)).timeout(Duration::from_millis(50)));
    ui.on_done(task, move |result| *sink.borrow_mut() = Some(result));
    let delivered = wait_until(
        || {
            ui.pump(Duration::from_millis(5));
            done.borrow().is_some()
        },
        // Less than the held task's own limit: it is held all along.
        T / 2,
    );
    finish(held, &release);
    assert!(
        delivered,
        "the timeout was not delivered while the worker was busy"
    );
    assert_eq!(*done.borrow(), Some(Err(TaskError::TimedOut)));
}

#[test]
fn main_thread_delivers_pending_results_beside_tasks() {
    fn square(n: u64) -> u64 {
        n * n
    }
    let pool = pool(1);
    let mut ui = MainThread::new();
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&woken);
    ui.set_waker(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let me = std::thread::current().id();
    let replies: Rc<RefCell<Vec<Result<u64, RunError>>>> = Rc::default();
    for n in 0..10 {
        let replies = Rc::clone(&replies);
        ui.on_reply(isolates::run(square, n), move |result| {
            assert_eq!(std::thread::current().id(), me);
            replies.borrow_mut().push(result);
        });
    }
    let done: Rc<RefCell<Option<Outcome>>> = Rc::default();
    let sink = Rc::clone(&done);
    ui.on_done(pool.submit(Op::Double(4)), move |r| {
        *sink.borrow_mut() = Some(r)
    });
    assert_eq!(ui.watching(), 11);
    // Each arrival wakes the event loop; no callback runs before the pump.
    assert!(wait_until(|| woken.load(Ordering::SeqCst) == 11, T));
    assert!(replies.borrow().is_empty());
    assert_eq!(ui.pump(T), 11);
    assert_eq!(ui.watching(), 0);
    let mut got = replies.borrow().clone();
    got.sort_by_key(|r| *r.as_ref().unwrap());
    assert_eq!(got, (0..10).map(|n| Ok(n * n)).collect::<Vec<_>>());
    assert_eq!(done.borrow().as_ref().unwrap().as_ref().unwrap().value, 8);

    // A result taken before it was handed over is delivered as taken.
    let mut taken = isolates::run(square, 3);
    assert_eq!(taken.wait_timeout(T), Some(Ok(9)));
    let late: Rc<RefCell<Option<Result<u64, RunError>>>> = Rc::default();
    let sink = Rc::clone(&late);
    ui.on_reply(taken, move |r| *sink.borrow_mut() = Some(r));
    assert_eq!(ui.pump(T), 1);
    assert_eq!(*late.borrow(), Some(Err(RunError::AlreadyTaken)));
}

#[test]
fn main_thread_keeps_tasks_of_two_pools_apart() {
    // Task ids are numbered per pool: the first task of each has the same.
    let (a, b) = (pool(1), pool(1));
    let mut ui = MainThread::new();
    let values: Rc<RefCell<Vec<u64>>> = Rc::default();
    for (pool, n) in [(&a, 1), (&b, 2)] {
        let values = Rc::clone(&values);
        ui.on_done(pool.submit(Op::Double(n)), move |r| {
            values.borrow_mut().push(r.unwrap().value);
        });
    }
    assert_eq!(ui.watching(), 2);
    assert!(wait_until(
        || {
            ui.pump(Duration::from_millis(5));
            ui.watching() == 0
        },
        T
    ));
    values.borrow_mut().sort_unstable();
    assert_eq!(*values.borrow(), vec![2, 4]);
}

// --- Exactly once --------------------------------------------------------------------

#[test]
fn every_handle_resolves_exactly_once_under_a_mixed_load() {
    const N: u64 = 2_000;
    let pool = pool(2);
    let mut tasks = Vec::new();
    for i in 0..N {
        let op = match i % 10 {
            0 => Op::Panic(format!("panic {i}")),
            1 | 2 => Op::Fail(format!("fail {i}")),
            _ => Op::Double(i),
        };
        let handle = pool.submit(op);
        let cancelled = matches!(i % 10, 3 | 4) && handle.cancel();
        tasks.push((i, handle, cancelled));
    }
    let cancelled = tasks.iter().filter(|(_, _, c)| *c).count() as u64;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for (i, mut handle, cancelled) in tasks {
        let result = handle.wait_timeout(T).expect("a task never resolved");
        let want = match i % 10 {
            0 => Err(TaskError::Panicked(format!("panic {i}"))),
            1 | 2 => Err(TaskError::Failed(format!("fail {i}"))),
            _ if cancelled => Err(TaskError::Cancelled),
            _ => Ok(i * 2),
        };
        let kind = match &result {
            Ok(_) => "ok",
            Err(TaskError::Panicked(_)) => "panicked",
            Err(TaskError::Failed(_)) => "failed",
            Err(TaskError::Cancelled) => "cancelled",
            Err(e) => panic!("task {i}: unexpected {e}"),
        };
        *counts.entry(kind).or_default() += 1;
        assert_eq!(result.map(|d| d.value), want, "task {i}");
        assert_eq!(handle.try_take(), None, "task {i} resolved twice");
        assert!(!handle.cancel());
        assert_eq!(handle.wait(), Err(TaskError::AlreadyTaken));
    }
    let count = |kind| counts.get(kind).copied().unwrap_or(0);
    assert_eq!(count("panicked"), N / 10);
    assert_eq!(count("failed"), N / 5);
    assert_eq!(count("cancelled"), cancelled);
    assert_eq!(count("ok"), N - N / 10 - N / 5 - cancelled);
    let stats = pool.stats();
    assert_eq!((stats.panicked, stats.failed), (N / 10, N / 5));
    assert_eq!(stats.queued, 0);
}

#[test]
fn on_resolve_observers_run_beside_a_batch() {
    let pool = Pool::<Probe>::builder().workers(2).spawn(None).unwrap();
    let told = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..8u64).map(|n| pool.submit(Op::Double(n))).collect();
    let watches: Vec<_> = handles.iter().map(TaskHandle::watch).collect();
    for handle in &handles {
        let told = Arc::clone(&told);
        handle.on_resolve(move |_| {
            told.fetch_add(1, Ordering::SeqCst);
        });
    }
    // The batch sets its own observer beside ours: both are told.
    let values: Vec<u64> = isolates::pool::Batch::new(handles)
        .join()
        .into_iter()
        .map(|r| r.unwrap().value)
        .collect();
    assert_eq!(values, (0..8u64).map(|n| n * 2).collect::<Vec<_>>());
    assert!(wait_until(|| told.load(Ordering::SeqCst) == 8, T));
    assert!(watches.iter().all(|w| w.is_done() && !w.is_executing()));
    // Set after the end: told at once, on this thread.
    let mut late = pool.submit(Op::Double(3));
    assert_eq!(late.wait_timeout(T).map(|r| r.unwrap().value), Some(6));
    let (tx, rx) = mpsc::channel();
    late.on_resolve(move |task| tx.send(task).unwrap());
    assert_eq!(rx.try_recv(), Ok(late.id()));
}

#[test]
fn a_watch_sees_a_cancelled_run_execute_until_it_returns() {
    let pool = Pool::<Probe>::builder().workers(1).spawn(None).unwrap();
    let (events_tx, events) = port::unbounded::<Event>();
    let task = pool.submit(Op::Block(events_tx));
    let watch = task.watch();
    let Ok(Event::Started { release, .. }) = events.recv_timeout(T) else {
        panic!("the task did not start");
    };
    assert_eq!(watch.state(), TaskState::Running);
    assert!(watch.is_executing());
    assert!(task.cancel());
    // Resolved at once; its code runs until it looks at the flag.
    assert!(watch.is_done());
    assert!(matches!(events.recv_timeout(T), Ok(Event::SawCancel)));
    assert!(wait_until(|| !watch.is_executing(), T));
    assert_eq!(task.wait(), Err(TaskError::Cancelled));
    drop(release);
}

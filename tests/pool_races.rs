//! Regressions found by review: workers that cannot start or restart,
//! deadlines that nobody polls, wakers that call back into the pool,
//! concurrent kills, and rayon-mode slots after a failed restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::wait_until;
use isolates::pool::{MainThread, Pool, Routing, Task, TaskContext, Worker};
use isolates::{SendPort, TaskError, port};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
enum Op {
    Echo(u32),
    Panic,
    /// Blocks until released through the port it sends back.
    Block(SendPort<SendPort<()>>),
}

/// Starts `budget` times in all (per pool, counted in the shared args),
/// then refuses.
#[derive(Clone, Serialize, Deserialize)]
struct Budget {
    id: usize,
    starts: usize,
}

static STARTS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

struct Limited;

impl Worker for Limited {
    type Args = Budget;
    type Input = Op;
    type Output = u32;
    type Progress = ();
    type Error = String;

    fn start(budget: Budget) -> Result<Self, String> {
        if STARTS[budget.id].fetch_add(1, Ordering::SeqCst) >= budget.starts {
            return Err("out of starts".into());
        }
        Ok(Limited)
    }

    fn run(&mut self, op: Op, _: &TaskContext<'_, Self>) -> Result<u32, String> {
        match op {
            Op::Echo(n) => Ok(n),
            Op::Panic => panic!("told to panic"),
            Op::Block(reply) => {
                let (tx, rx) = port::bounded::<()>(1);
                reply.send(tx).map_err(|e| e.to_string())?;
                let _ = rx.recv_timeout(T);
                Ok(0)
            }
        }
    }
}

fn budget(id: usize, starts: usize) -> Budget {
    Budget { id, starts }
}

/// Holds a worker of `pool` inside a task until the returned port is used.
fn hold(pool: &Pool<Limited>) -> SendPort<()> {
    let (tx, rx) = port::bounded::<SendPort<()>>(1);
    drop(pool.submit(Op::Block(tx)));
    rx.recv_timeout(T).unwrap()
}

#[test]
fn tasks_resolve_when_no_worker_can_start() {
    let pool = Pool::<Limited>::builder()
        .workers(2)
        .spawn(budget(0, 0))
        .unwrap();
    let mut task = pool.submit(Op::Echo(1));
    match task.wait_timeout(T) {
        Some(Err(TaskError::WorkerLost(why))) => assert!(why.contains("out of starts"), "{why}"),
        other => panic!("expected WorkerLost, got {other:?}"),
    }
}

#[test]
fn a_failed_restart_hands_the_slots_queue_to_the_others() {
    // Two starts: both workers start, no restart succeeds.
    let pool = Pool::<Limited>::builder()
        .workers(2)
        .routing(Routing::RoundRobin)
        .spawn(budget(1, 2))
        .unwrap();
    // Slot 0 gets the panic and the echo behind it; its restart fails.
    let release = hold(&pool); // slot 0 (round robin starts there)
    let other = pool.submit(Op::Echo(7)); // slot 1
    let crash = pool.submit(Op::Panic); // slot 0, queued
    let mut stranded = pool.submit(Op::Echo(9)); // slot 1
    let mut behind = pool.submit(Op::Echo(11)); // slot 0, queued
    release.send(()).unwrap();
    assert_eq!(other.wait(), Ok(7));
    assert!(matches!(crash.wait(), Err(TaskError::Panicked(_))));
    assert_eq!(stranded.wait_timeout(T), Some(Ok(9)));
    assert_eq!(behind.wait_timeout(T), Some(Ok(11)));
    assert!(wait_until(|| pool.stats().workers == 1, T));
}

#[test]
fn a_deadline_fires_while_every_worker_is_busy() {
    let pool = Pool::<Limited>::builder()
        .workers(1)
        .spawn(budget(2, usize::MAX))
        .unwrap();
    let release = hold(&pool);
    let mut ui = MainThread::new();
    let (woke_tx, woke) = std::sync::mpsc::channel();
    ui.set_waker(move || {
        let _ = woke_tx.send(());
    });
    let task = pool.submit_task(Task::new(Op::Echo(1)).timeout(Duration::from_millis(20)));
    let result = Arc::new(std::sync::Mutex::new(None));
    let sink = Arc::clone(&result);
    ui.on_done(task, move |r| *sink.lock().unwrap() = Some(r));
    // The only worker is held: only the pool's timer can resolve the task.
    woke.recv_timeout(T).expect("the waker never came");
    assert!(wait_until(
        || {
            ui.pump(Duration::from_millis(5));
            result.lock().unwrap().is_some()
        },
        T
    ));
    assert_eq!(*result.lock().unwrap(), Some(Err(TaskError::TimedOut)));
    release.send(()).unwrap();
}

#[test]
fn a_waker_may_call_back_into_the_pool() {
    let pool = Pool::<Limited>::builder()
        .workers(1)
        .spawn(budget(3, usize::MAX))
        .unwrap();
    let release = hold(&pool);
    let mut ui = MainThread::new();
    let called = Arc::new(AtomicBool::new(false));
    let (flag, inner) = (Arc::clone(&called), pool.clone());
    ui.set_waker(move || {
        // Re-entering the pool from a resolve must not deadlock.
        let _ = inner.stats();
        flag.store(true, Ordering::Release);
    });
    let task = pool.submit_task(Task::new(Op::Echo(1)).timeout(Duration::from_millis(1)));
    ui.on_done(task, |_| {});
    assert!(wait_until(
        || {
            let _ = pool.stats(); // expires the task from this thread too
            called.load(Ordering::Acquire)
        },
        T
    ));
    release.send(()).unwrap();
}

#[test]
fn concurrent_kills_leave_one_worker_per_slot() {
    let pool = Pool::<Limited>::builder()
        .workers(2)
        .spawn(budget(4, usize::MAX))
        .unwrap();
    let mut handles = Vec::new();
    for round in 0..200 {
        let killers: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || pool.kill_worker(0))
            })
            .collect();
        for n in 0..4 {
            handles.push(pool.submit(Op::Echo(round * 4 + n)));
        }
        for killer in killers {
            killer.join().unwrap();
        }
    }
    for (i, mut handle) in handles.into_iter().enumerate() {
        match handle.wait_timeout(T) {
            Some(Ok(n)) => assert_eq!(n as usize, i),
            Some(Err(TaskError::WorkerLost(_))) => {}
            other => panic!("task {i}: {other:?}"),
        }
    }
    assert_eq!(pool.stats().workers, 2);
    pool.stop();
    assert!(wait_until(|| pool.stats().workers == 0, T));
}

#[test]
fn rayon_mode_survives_a_failed_restart_and_a_kill() {
    // Two starts for two rayon workers: restarts fail.
    let pool = Pool::<Limited>::builder()
        .workers(2)
        .rayon(true)
        .routing(Routing::RoundRobin)
        .spawn(budget(5, 2))
        .unwrap();
    assert!(matches!(
        pool.submit(Op::Panic).wait(),
        Err(TaskError::Panicked(_))
    ));
    assert!(wait_until(|| pool.stats().workers == 1, T));
    // The dead slot gets no task and no ghost thread; the live one serves.
    for i in 0..10 {
        assert_eq!(pool.submit(Op::Echo(i)).wait(), Ok(i));
    }
    let dead = pool.worker_stats().iter().position(|w| !w.alive).unwrap();
    assert!(!pool.kill_worker(dead));
    pool.stop();
    assert!(wait_until(|| pool.stats().workers == 0, T));
}

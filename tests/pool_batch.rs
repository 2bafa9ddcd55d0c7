//! Batch waits (`Batch`, `join_all`): results in submission order, each
//! task's error in its own place (failures, panics, cancels, deadlines, a
//! closed pool), handles already taken, the empty batch, and the
//! non-blocking forms a UI thread uses.
//!
//! Tasks that must stay unresolved are gated: an `Op::Hold` task runs until
//! it is cancelled, so no test relies on how fast a thread is scheduled.
//! That the waiter wakes once per batch is checked by a unit test beside
//! the latch (src/pool/batch.rs), where its wakes can be counted.

mod common;

use std::time::{Duration, Instant};

use common::wait_until;
use isolates::TaskError;
use isolates::pool::{Batch, Pool, Task, TaskContext, TaskState, Worker, join_all};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    /// Returns the number.
    Value(u64),
    /// Spins about this many microseconds, then returns them.
    Spin(u64),
    /// Returns its own error.
    Fail(String),
    /// Panics with this message.
    Panic(String),
    /// Runs until cancelled (at most `T`), then fails.
    Hold,
}

struct Probe;

impl Worker for Probe {
    type Args = ();
    type Input = Op;
    type Output = u64;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Probe)
    }

    fn run(&mut self, op: Op, task: &TaskContext<'_, Self>) -> Result<u64, String> {
        match op {
            Op::Value(n) => Ok(n),
            Op::Spin(us) => {
                let until = Instant::now() + Duration::from_micros(us);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                Ok(us)
            }
            Op::Fail(why) => Err(why),
            Op::Panic(why) => panic!("{why}"),
            Op::Hold => {
                let until = Instant::now() + T;
                while !task.is_cancelled() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err("held".into())
            }
        }
    }
}

fn pool(workers: usize) -> Pool<Probe> {
    Pool::<Probe>::builder().workers(workers).spawn(()).unwrap()
}

#[test]
fn results_come_in_submission_order_whatever_order_tasks_finish_in() {
    let pool = pool(2);
    // Earlier tasks take longer, so later ones tend to finish first.
    let ops = (0..200u64).map(|i| Op::Spin(200 - i));
    let results = join_all(ops.map(|op| pool.submit(op)));
    assert_eq!(results, (1..=200u64).rev().map(Ok).collect::<Vec<_>>());
}

#[test]
fn a_large_batch_over_every_worker_gives_every_result() {
    let pool = pool(2);
    let batch: Batch<Probe> = (0..5_000).map(|i| pool.submit(Op::Value(i))).collect();
    assert_eq!(batch.len(), 5_000);
    assert_eq!(batch.join(), (0..5_000).map(Ok).collect::<Vec<_>>());
    assert_eq!(pool.stats().succeeded, 5_000);
}

#[test]
fn errors_and_panics_stay_in_their_own_places() {
    let pool = pool(2);
    let results = join_all([
        pool.submit(Op::Value(1)),
        pool.submit(Op::Fail("no".into())),
        pool.submit(Op::Panic("boom".into())),
        pool.submit(Op::Value(4)),
    ]);
    assert_eq!(results[0], Ok(1));
    assert_eq!(results[1], Err(TaskError::Failed("no".into())));
    assert!(
        matches!(&results[2], Err(TaskError::Panicked(m)) if m.contains("boom")),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3], Ok(4));
}

#[test]
fn cancelled_and_timed_out_tasks_resolve_in_their_places() {
    // One worker, held: everything after the hold stays queued.
    let pool = pool(1);
    let hold = pool.submit(Op::Hold);
    assert!(wait_until(|| hold.state() == TaskState::Running, T));
    let late = pool.submit_task(Task::new(Op::Value(1)).timeout(Duration::from_millis(20)));
    let cancelled = pool.submit(Op::Value(2));
    let fine = pool.submit(Op::Value(3));
    assert!(cancelled.cancel());
    let mut batch = Batch::new([hold, late, cancelled, fine]);
    // The deadline resolves the queued task while the worker is held; the
    // hold and the last task are left.
    assert!(wait_until(|| batch.pending() == 2, T));
    assert_eq!(batch.try_join(), None);
    // Cancelling the batch resolves what is left, the hold included.
    assert_eq!(batch.cancel(), 2);
    assert_eq!(
        batch.join(),
        [
            Err(TaskError::Cancelled),
            Err(TaskError::TimedOut),
            Err(TaskError::Cancelled),
            Err(TaskError::Cancelled),
        ]
    );
}

#[test]
fn a_timed_join_resolves_a_queued_tasks_deadline_itself() {
    let pool = pool(1);
    let hold = pool.submit(Op::Hold);
    let late = pool.submit_task(Task::new(Op::Value(1)).timeout(Duration::from_millis(20)));
    let mut batch = Batch::new([late]);
    // The join wakes at the task's deadline (or the pool's timer resolves
    // it first): either way it ends with TimedOut, not at the join's limit.
    assert_eq!(batch.join_timeout(T), Some(vec![Err(TaskError::TimedOut)]));
    assert!(hold.cancel());
}

#[test]
fn the_empty_batch_is_done_at_once() {
    let none: Vec<isolates::pool::TaskHandle<Probe>> = Vec::new();
    assert_eq!(join_all(none), []);
    let mut batch = Batch::<Probe>::new([]);
    assert!(batch.is_empty());
    assert!(batch.is_done());
    assert_eq!(batch.pending(), 0);
    assert_eq!(batch.join_timeout(Duration::ZERO), Some(vec![]));
    assert_eq!(batch.try_join(), None, "taken");
}

#[test]
fn a_handle_already_taken_gives_already_taken_in_its_place() {
    let pool = pool(2);
    let mut taken = pool.submit(Op::Value(1));
    assert_eq!(taken.wait_timeout(T), Some(Ok(1)));
    let results = join_all([pool.submit(Op::Value(0)), taken, pool.submit(Op::Value(2))]);
    assert_eq!(results, [Ok(0), Err(TaskError::AlreadyTaken), Ok(2)]);
}

#[test]
fn the_non_blocking_forms_never_wait_for_held_tasks_and_leave_the_batch_usable() {
    let pool = pool(2);
    let hold = pool.submit(Op::Hold);
    let id = hold.id();
    let mut batch = Batch::new([pool.submit(Op::Value(1)), hold]);
    assert_eq!(batch.try_join(), None);
    assert_eq!(batch.join_timeout(Duration::from_millis(5)), None);
    assert_eq!(
        batch.join_deadline(Instant::now() - Duration::from_millis(1)),
        None,
        "a deadline in the past only looks"
    );
    assert!(wait_until(|| batch.pending() == 1, T), "the value resolves");
    assert!(!batch.is_done());
    assert_eq!(batch.cancel(), 1, "only task {id} was left to cancel");
    assert_eq!(
        batch.try_join(),
        Some(vec![Ok(1), Err(TaskError::Cancelled)])
    );
    // Taken once: later takes say so instead of panicking.
    assert_eq!(batch.try_join(), None);
    assert_eq!(batch.join_timeout(Duration::ZERO), None);
    assert_eq!(
        batch.join(),
        [Err(TaskError::AlreadyTaken), Err(TaskError::AlreadyTaken)]
    );
}

#[test]
fn a_shut_down_pool_resolves_its_queued_tasks_in_the_batch() {
    let pool = pool(1);
    let hold = pool.submit(Op::Hold);
    assert!(wait_until(|| hold.state() == TaskState::Running, T));
    let batch = Batch::new([pool.submit(Op::Value(1)), hold]);
    pool.stop();
    // The queued task resolves at once; the running one may finish.
    assert!(wait_until(|| batch.pending() == 1, T));
    assert_eq!(batch.cancel(), 1);
    assert_eq!(
        batch.join(),
        [Err(TaskError::PoolClosed), Err(TaskError::Cancelled)]
    );
}

#[test]
fn a_batch_may_mix_pools_and_is_filled_from_other_threads() {
    let (a, b) = (pool(1), pool(1));
    let mut batch: Batch<Probe> = [a.submit(Op::Value(1)), b.submit(Op::Value(2))]
        .into_iter()
        .collect();
    let results = batch.join_timeout(T);
    assert_eq!(results, Some(vec![Ok(1), Ok(2)]));
}

//! Hostile worker code: a state whose `Drop` panics, start arguments whose
//! `Clone` or `Deserialize` panics. Every task still resolves; no worker thread dies
//! while the pool counts it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use isolates::TaskError;
use isolates::pool::{Pool, TaskContext, Worker};
use serde::{Deserialize, Deserializer, Serialize};

const T: Duration = Duration::from_secs(20);

/// Panics on 0; its `Drop` always panics.
struct Grumpy;

impl Drop for Grumpy {
    fn drop(&mut self) {
        panic!("a state that panics when dropped");
    }
}

impl Worker for Grumpy {
    type Args = ();
    type Input = u32;
    type Output = u32;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Grumpy)
    }

    fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> {
        assert!(n != 0, "asked to panic");
        Ok(n)
    }
}

#[test]
fn a_state_whose_drop_panics_is_replaced_and_tasks_go_on() {
    let pool = Pool::<Grumpy>::builder().workers(1).spawn(()).unwrap();
    for round in 1..=3u32 {
        // The panic restarts the worker: its old state is dropped (and
        // panics) while the worker goes on.
        assert!(matches!(
            pool.submit(0).wait_timeout_owned(T),
            Some(Err(TaskError::Panicked(_)))
        ));
        assert_eq!(pool.submit(round).wait_timeout_owned(T), Some(Ok(round)));
    }
    let stats = pool.stats();
    assert_eq!(stats.workers, 1);
    assert_eq!(stats.restarts, 3);
    // Dropping the pool drops the states too: no panic reaches here.
    drop(pool);
}

/// Serializes fine; deserializing panics.
#[derive(Clone, Debug)]
struct Poison;

impl Serialize for Poison {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Poison {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("start arguments that panic when decoded")
    }
}

struct Poisoned;

impl Worker for Poisoned {
    type Args = Poison;
    type Input = u32;
    type Output = u32;
    type Progress = ();
    type Error = String;

    fn start(_: Poison) -> Result<Self, String> {
        Ok(Poisoned)
    }

    fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> {
        Ok(n)
    }
}

#[test]
fn start_arguments_are_cloned_not_decoded_even_when_copying() {
    // Start arguments are not messages: each worker gets a clone, and
    // their serde impls never run in-process.
    let pool = Pool::<Poisoned>::builder()
        .workers(2)
        .copy_messages(true)
        .spawn(Poison)
        .unwrap();
    assert_eq!(pool.submit(7).wait_timeout_owned(T), Some(Ok(7)));
}

/// How many times a `Brittle` was cloned.
static BRITTLE_CLONES: AtomicUsize = AtomicUsize::new(0);

/// Start arguments whose `Clone` panics after the first.
#[derive(Debug)]
struct Brittle;

impl Clone for Brittle {
    fn clone(&self) -> Self {
        let n = BRITTLE_CLONES.fetch_add(1, Ordering::SeqCst);
        assert!(n == 0, "start arguments that panic when cloned");
        Brittle
    }
}

/// Panics on 0.
struct Shaky;

impl Worker for Shaky {
    type Args = Brittle;
    type Input = u32;
    type Output = u32;
    type Progress = ();
    type Error = String;

    fn start(_: Brittle) -> Result<Self, String> {
        Ok(Shaky)
    }

    fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> {
        assert!(n != 0, "asked to panic");
        Ok(n)
    }
}

#[test]
fn start_arguments_whose_clone_panics_fail_tasks_not_hang_them() {
    // The first clone starts the worker; the restart after a panic needs
    // another, which panics: the worker is gone, and tasks resolve.
    let pool = Pool::<Shaky>::builder().workers(1).spawn(Brittle).unwrap();
    assert_eq!(pool.submit(3).wait_timeout_owned(T), Some(Ok(3)));
    assert!(matches!(
        pool.submit(0).wait_timeout_owned(T),
        Some(Err(TaskError::Panicked(_)))
    ));
    assert!(matches!(
        pool.submit(7).wait_timeout_owned(T),
        Some(Err(TaskError::WorkerLost(_)))
    ));
    // A build whose first clone panics is an error, not an unwinding
    // caller.
    assert!(matches!(
        Pool::<Shaky>::builder().workers(1).spawn(Brittle),
        Err(isolates::SpawnError::Args(_))
    ));
}

/// `wait_timeout` on an owned handle.
trait WaitOwned<O, E> {
    fn wait_timeout_owned(self, timeout: Duration) -> Option<Result<O, E>>;
}

impl<W: Worker> WaitOwned<W::Output, TaskError<W::Error>> for isolates::pool::TaskHandle<W> {
    fn wait_timeout_owned(
        mut self,
        timeout: Duration,
    ) -> Option<Result<W::Output, TaskError<W::Error>>> {
        self.wait_timeout(timeout)
    }
}

/// Reports `n` progress values, then returns.
struct Chatty;

impl Worker for Chatty {
    type Args = ();
    type Input = u32;
    type Output = ();
    type Progress = u32;
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Chatty)
    }

    fn run(&mut self, n: u32, task: &TaskContext<'_, Self>) -> Result<(), String> {
        for i in 0..n {
            task.progress(i);
        }
        Ok(())
    }
}

#[test]
fn unread_progress_is_bounded_to_the_latest_values() {
    let pool = Pool::<Chatty>::builder().workers(1).spawn(()).unwrap();
    let mut task = pool.submit(100_000);
    assert_eq!(task.wait_timeout(T), Some(Ok(())));
    let kept = task.progress();
    assert_eq!(kept.len(), 1024, "only the latest unread values are kept");
    assert_eq!(kept.first(), Some(&(100_000 - 1024)));
    assert_eq!(kept.last(), Some(&99_999));
}

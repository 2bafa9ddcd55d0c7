//! The work manager against hostile input: chains long enough to overflow
//! any per-link recursion, stored rows with extreme values, files that are
//! not ours, a second opener of one store, and requests that would spin.
//!
//! Schedules run on a [`ManualClock`]; every wait on another thread is a
//! condition with a timeout, never a bare sleep.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use isolates::schedule::*;

/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);
/// Far longer than any recursion per link could go on a default thread
/// stack (the scheduler's thread has 2 MiB).
const CHAIN: usize = 10_000;

// ---- helpers -------------------------------------------------------------

/// A directory under the system temp dir, unique to this process and test,
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-hostile-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manager whose `"fail"` handler fails and whose `"count"` handler
/// counts its runs in `runs`.
fn manager(path: &Path, clock: &ManualClock, runs: &Arc<AtomicUsize>) -> WorkManager {
    let runs = Arc::clone(runs);
    WorkManager::builder(WorkStore::open(path).expect("store opens"))
        .clock(clock.clone())
        .workers(2)
        .handler_fn("fail", |(): (), _: &WorkContext<'_>| {
            WorkResult::<()>::Failure("on purpose".into())
        })
        .handler_fn("count", move |_: (), _: &WorkContext<'_>| {
            runs.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(())
        })
        .build()
        .expect("manager starts")
}

/// `head`, then `CHAIN - 1` counting works, one after the other.
fn long_chain(head: WorkRequest) -> WorkChain {
    let mut chain = WorkChain::new(head);
    for _ in 1..CHAIN {
        chain = chain.then(WorkRequest::once("count").tag("chain"));
    }
    chain
}

fn new_ids(op: Operation<Enqueued>) -> Vec<WorkId> {
    let mut op = op;
    match op.wait_timeout(T).expect("enqueue answered") {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("expected new work, got {other:?}"),
    }
}

/// How many of the works are in `state`.
fn count(manager: &WorkManager, state: WorkState) -> usize {
    manager
        .infos(&WorkQuery::All)
        .iter()
        .filter(|i| i.state == state)
        .count()
}

// ---- long chains (issue 11, item 1) --------------------------------------

/// A chain of 10,000 works whose head fails fails to its end, on the
/// scheduler's thread and without overflowing its stack; a restart on the
/// same store finds every link failed and runs none.
#[test]
fn a_long_chain_whose_head_fails_fails_to_its_end() {
    let dir = TempDir::new("chain-fail");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let ids = {
        let m = manager(&path, &clock, &runs);
        let ids = new_ids(m.enqueue(long_chain(WorkRequest::once("fail"))));
        assert_eq!(ids.len(), CHAIN);
        let last = m.wait_finished(ids[CHAIN - 1], T).expect("the chain ends");
        assert_eq!(last.state, WorkState::Failed, "{last:?}");
        assert_eq!(count(&m, WorkState::Failed), CHAIN);
        m.shutdown();
        ids
    };
    let m = manager(&path, &clock, &runs);
    let last = m.info(ids[CHAIN - 1]).expect("kept");
    assert_eq!(last.state, WorkState::Failed, "{last:?}");
    assert_eq!(count(&m, WorkState::Failed), CHAIN);
    m.shutdown();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no link after the head ran");
}

/// Cancelling the head of a chain of 10,000 works cancels all of them,
/// and the cancel is stored: a restart on the same store runs none.
#[test]
fn cancelling_the_head_of_a_long_chain_cancels_it_all_and_is_stored() {
    let dir = TempDir::new("chain-cancel");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    {
        let m = manager(&path, &clock, &runs);
        let head = WorkRequest::once("count").initial_delay(HOUR);
        let ids = new_ids(m.enqueue(long_chain(head)));
        let mut cancel = m.cancel(WorkQuery::Id(ids[0]));
        assert_eq!(cancel.wait_timeout(T), Some(Ok(CHAIN)));
        m.shutdown();
    }
    // Its time comes: nothing of it may run.
    clock.advance(HOUR * 2);
    let m = manager(&path, &clock, &runs);
    assert_eq!(count(&m, WorkState::Cancelled), CHAIN);
    // A work enqueued after the restart runs; the chain still does not.
    let probe = new_ids(m.enqueue(WorkRequest::once("count")))[0];
    let done = m.wait_finished(probe, T).expect("the probe runs");
    assert_eq!(done.state, WorkState::Succeeded);
    m.shutdown();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the probe ran");
}

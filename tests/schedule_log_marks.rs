//! The store's log (`<store>-log`, folded into SQLite behind the commits)
//! and how far it is folded (its mark in the database): states that a
//! crash (or a power cut) must not undo. Found by a review, with the mark
//! missing: the replay after a crash wrote older frames over a write that
//! had gone to SQLite directly, or over a commit SQLite had made durable.
//!
//! A crash is simulated as `tests/schedule_store.rs` does: a consistent
//! copy of what SQLite holds (`VACUUM INTO`) and then the log files beside
//! it, taken while the store is open and quiet.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::store::crash_copy;
use common::wait_until;
use isolates::schedule::*;

const T: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-store-log-review-{}-{name}",
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

/// The state `store` holds for work `id`.
fn stored_state(store: &WorkStore, id: WorkId) -> WorkState {
    let works = store.works().unwrap();
    works.into_iter().find(|i| i.id == id).unwrap().state
}

/// Every event sent before it was handled and its turn written.
fn barrier(manager: &WorkManager) {
    let mut op = manager.cancel(WorkQuery::Tag("no such tag".into()));
    assert_eq!(op.wait_timeout(T), Some(Ok(0)));
}

fn ids(op: Operation<Enqueued>) -> Vec<WorkId> {
    let mut op = op;
    match op.wait_timeout(T).expect("enqueue answered") {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("expected new work, got {other:?}"),
    }
}

/// A write bigger than `DIRECT_BYTES` (1 MiB) goes to SQLite directly and
/// is not in the log, but the log's older frames for the same works stay:
/// replayed after a crash, they must not be written over the newer state.
/// Here one cancel of 30 works of 60 KB input each (each under the default
/// data limit) is one such write: after the crash the works stay
/// cancelled.
#[test]
fn a_big_write_is_not_undone_by_the_replay_of_older_frames_after_a_crash() {
    let dir = TempDir::new("big-cancel");
    let path = dir.path("works.db");
    let clock = ManualClock::new(std::time::SystemTime::now());
    let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
        .clock(clock.clone())
        .handler_fn("n", |_: Vec<u8>, _: &WorkContext<'_>| {
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let mut all = Vec::new();
    for _ in 0..30 {
        // One commit each: each a frame of about 60 KB in the log.
        all.extend(ids(manager.enqueue(
            WorkRequest::once("n")
                .input(&vec![7u8; 60_000])
                .initial_delay(HOUR)
                .tag("big"),
        )));
    }
    barrier(&manager);
    let mut op = manager.cancel(WorkQuery::Tag("big".into()));
    assert_eq!(op.wait_timeout(T), Some(Ok(30)));
    barrier(&manager);
    for id in &all {
        assert_eq!(manager.info(*id).unwrap().state, WorkState::Cancelled);
    }
    // Reads fold: SQLite holds every commit now.
    assert_eq!(
        manager
            .infos(&WorkQuery::Tag("big".into()))
            .iter()
            .filter(|i| i.state == WorkState::Cancelled)
            .count(),
        30
    );

    let copy = dir.path("crashed.db");
    crash_copy(&path, &copy);
    manager.stop();
    assert!(manager.join(T));

    let store = WorkStore::open(&copy).unwrap();
    let states: Vec<WorkState> = store
        .works()
        .unwrap()
        .into_iter()
        .filter(|i| all.contains(&i.id))
        .map(|i| i.state)
        .collect();
    assert_eq!(states.len(), 30);
    assert!(
        states.iter().all(|s| *s == WorkState::Cancelled),
        "cancelled works came back after a crash: {states:?}"
    );
}

/// The same with one work: its output over 1 MiB (the data limit raised)
/// makes its success a direct write; after a crash the log's older frames
/// (enqueued, running) must not be folded over it: it stays succeeded.
#[test]
fn a_succeeded_work_with_a_big_output_does_not_run_again_after_a_crash() {
    let dir = TempDir::new("big-output");
    let path = dir.path("works.db");
    let copy = dir.path("crashed.db");
    let runs = Arc::new(AtomicUsize::new(0));
    let spawn = |store: WorkStore, runs: &Arc<AtomicUsize>| {
        let runs = Arc::clone(runs);
        WorkManager::builder(store)
            .data_limit(4 << 20)
            .handler_fn("big", move |(): (), _: &WorkContext<'_>| {
                runs.fetch_add(1, Ordering::SeqCst);
                WorkResult::Success(vec![1u8; 2 << 20])
            })
            .spawn()
            .unwrap()
    };
    let manager = spawn(WorkStore::open(&path).unwrap(), &runs);
    let id = ids(manager.enqueue(WorkRequest::once("big")))[0];
    let done = manager.wait_finished(id, T).expect("the work finished");
    assert_eq!(done.state, WorkState::Succeeded);
    barrier(&manager);
    assert_eq!(
        manager.infos(&WorkQuery::Id(id))[0].state,
        WorkState::Succeeded
    );
    crash_copy(&path, &copy);
    manager.stop();
    assert!(manager.join(T));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let store = WorkStore::open(&copy).unwrap();
    let state = stored_state(&store, id);
    let manager = spawn(store, &runs);
    // A work run again would be counted within this wait.
    let _ = wait_until(|| runs.load(Ordering::SeqCst) > 1, Duration::from_secs(2));
    manager.stop();
    assert!(manager.join(T));
    assert_eq!(
        state,
        WorkState::Succeeded,
        "the success was undone by the replay"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a succeeded work ran again");
}

/// The log is not synced at each commit, SQLite's database is (at each
/// checkpoint). A power cut can leave SQLite with commits whose frames the
/// log lost (its tail torn): the replay of the log's surviving prefix, all
/// of it folded long before, must not write older states over those
/// durable commits. Here a work that succeeded, its success checkpointed
/// into the database, stays succeeded.
#[test]
fn a_torn_log_tail_does_not_undo_commits_that_sqlite_had_made_durable() {
    let dir = TempDir::new("torn-after-fold");
    let path = dir.path("works.db");
    let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
        .handler_fn("n", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
        .spawn()
        .unwrap();
    let id = ids(manager.enqueue(WorkRequest::once("n")))[0];
    let done = manager.wait_finished(id, T).expect("the work finished");
    assert_eq!(done.state, WorkState::Succeeded);
    barrier(&manager);
    // A read folds; a checkpoint makes the success durable in the file.
    assert_eq!(
        manager.infos(&WorkQuery::Id(id))[0].state,
        WorkState::Succeeded
    );
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
            .unwrap();
    }
    let copy = dir.path("powercut.db");
    crash_copy(&path, &copy);
    manager.stop();
    assert!(manager.join(T));

    // The power cut: the log's last page did not reach the disk.
    let log = PathBuf::from(format!("{}-log", copy.display()));
    let bytes = std::fs::read(&log).unwrap();
    assert!(bytes.len() > 16, "the log holds the work's commits");
    std::fs::write(&log, &bytes[..bytes.len() - 5]).unwrap();

    let store = WorkStore::open(&copy).unwrap();
    let state = stored_state(&store, id);
    assert_eq!(
        state,
        WorkState::Succeeded,
        "a durable success was undone by folding the log's torn prefix"
    );
}

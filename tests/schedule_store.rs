//! The work store and the built-in constraints: schedules, ids and states
//! survive a restart on a file store (after a clean shutdown and after a
//! simulated `kill -9`), succeeded work does not run again, interrupted
//! work does; files that are not ours (not a database, another program's
//! database, a newer schema, a damaged file) are refused and left byte for
//! byte as they were; unreadable rows are reported and kept while the rest
//! runs; finished work is pruned; and the built-in constraints read fake
//! `/sys` and `/proc` trees.
//!
//! Schedules run on a [`ManualClock`]; every wait on another thread is a
//! condition polled with a 10 s timeout. A turn of the scheduler is awaited
//! with a barrier: an operation's answer comes after every event sent
//! before it was handled.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use common::store::crash_copy;
use common::wait_until;
use isolates::schedule::*;

const T: Duration = Duration::from_secs(10);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

// ---- helpers -------------------------------------------------------------

/// A directory under the system temp dir, unique to this process and test,
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-store-{}-{name}",
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

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    std::fs::write(path, text).expect("write file");
}

/// Waits until every event sent before it was handled by the scheduler and
/// the turn that handled them was written: a cancel of nothing answers
/// after that turn.
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

fn info(manager: &WorkManager, id: WorkId) -> WorkInfo {
    manager.info(id).expect("known work")
}

fn wait_state(manager: &WorkManager, id: WorkId, state: WorkState) -> WorkInfo {
    manager
        .wait_for(id, T, |i| i.state == state)
        .unwrap_or_else(|| panic!("{id} did not reach {state:?}: {:?}", manager.info(id)))
}

/// A manager whose handler `"count"` counts its runs in `runs` and answers
/// its input; `"noop"` does nothing.
fn counting_manager(store: WorkStore, clock: &ManualClock, runs: &Arc<AtomicUsize>) -> WorkManager {
    let runs = Arc::clone(runs);
    WorkManager::builder(store)
        .clock(clock.clone())
        .workers(2)
        .handler_fn("count", move |n: u32, _: &WorkContext<'_>| {
            runs.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(n)
        })
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .expect("manager starts")
}

/// The file's bytes, and those of its WAL if it has one.
fn snapshot(path: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    (
        std::fs::read(path).expect("read file"),
        std::fs::read(PathBuf::from(wal))
            .ok()
            .filter(|w| !w.is_empty()),
    )
}

fn assert_says_what_to_do(err: &StoreError, path: &Path, words: &[&str]) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "{text:?} names the file"
    );
    for w in words {
        assert!(text.contains(w), "{text:?} says {w:?}");
    }
    // The same text through the manager's error.
    assert_eq!(WorkError::Store(err.clone()).to_string(), text);
}

// ---- restarts ------------------------------------------------------------

/// Delayed, periodic and blocked work, with tags and unique names, is
/// stored as it was; a new manager on the same file has it all, with the
/// same ids, states and times, runs it when its time comes, and numbers
/// new work after the old.
#[test]
fn restart_keeps_schedules_ids_and_names() {
    let dir = TempDir::new("restart");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));

    let before = {
        let manager = counting_manager(WorkStore::open(&path).unwrap(), &clock, &runs);
        let later = WorkRequest::once("count")
            .input(&1u32)
            .tag("later")
            .tag("user")
            .initial_delay(20 * MIN);
        let later = ids(manager.enqueue_unique("later", ExistingWork::Keep, later));
        let tick = WorkRequest::periodic("count", HOUR)
            .flex(15 * MIN)
            .input(&2u32)
            .tag("tick");
        let tick = ids(manager.enqueue_unique("tick", ExistingWork::Keep, tick));
        let chain = WorkChain::new(
            WorkRequest::once("count")
                .input(&3u32)
                .tag("chain")
                .initial_delay(30 * MIN),
        )
        .then(WorkRequest::once("count").tag("chain"));
        let chain = ids(manager.enqueue_unique("chain", ExistingWork::Append, chain));
        assert_eq!(
            [later, tick, chain].concat(),
            [WorkId(1), WorkId(2), WorkId(3), WorkId(4)]
        );

        let before = manager.infos(&WorkQuery::All);
        let states: Vec<_> = before.iter().map(|i| i.state).collect();
        use WorkState::*;
        assert_eq!(states, [Enqueued, Enqueued, Enqueued, Blocked]);
        let start = clock.now();
        assert_eq!(before[0].next_run_at, Some(start + 20 * MIN));
        assert_eq!(before[1].next_run_at, Some(start + 45 * MIN));
        assert_eq!(before[2].next_run_at, Some(start + 30 * MIN));
        assert_eq!(before[3].next_run_at, None);
        assert_eq!(before[3].prerequisites, [WorkId(3)]);
        manager.stop();
        manager.join(Duration::MAX);
        before
    };
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing was due");

    // The file holds exactly what the manager showed.
    let store = WorkStore::open(&path).unwrap();
    assert_eq!(store.works().unwrap(), before);
    assert!(store.unreadable().unwrap().is_empty());
    drop(store);

    // A new process: a new clock reading the same time.
    let clock = ManualClock::new(clock.now());
    let manager = counting_manager(WorkStore::open(&path).unwrap(), &clock, &runs);
    assert!(manager.unreadable().is_empty());
    assert_eq!(manager.infos(&WorkQuery::All), before);
    assert_eq!(
        manager.infos(&WorkQuery::UniqueName("chain".into())).len(),
        2
    );
    assert_eq!(manager.infos(&WorkQuery::Tag("user".into())).len(), 1);
    barrier(&manager);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "still nothing due");

    clock.advance(HOUR);
    let later = manager.wait_finished(WorkId(1), T).expect("later runs");
    assert_eq!(later.state, WorkState::Succeeded);
    assert_eq!(later.output::<u32>(), Some(Ok(1)));
    let tick = manager
        .wait_for(WorkId(2), T, |i| i.periods == 1)
        .expect("tick runs");
    assert_eq!(tick.state, WorkState::Enqueued);
    assert_eq!(tick.output::<u32>(), Some(Ok(2)));
    let second = manager.wait_finished(WorkId(4), T).expect("chain runs");
    assert_eq!(second.state, WorkState::Succeeded);
    assert_eq!(second.output::<u32>(), Some(Ok(3)), "the first's output");
    assert_eq!(info(&manager, WorkId(3)).state, WorkState::Succeeded);
    assert_eq!(runs.load(Ordering::SeqCst), 4);

    // New work is numbered after the old.
    let new = ids(manager.enqueue(WorkRequest::once("noop").initial_delay(HOUR)));
    assert_eq!(new, [WorkId(5)]);
    manager.stop();
    manager.join(Duration::MAX);
}

/// Work that succeeded before a restart is not run again after it.
#[test]
fn succeeded_work_does_not_run_again() {
    let dir = TempDir::new("succeeded");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));

    let manager = counting_manager(WorkStore::open(&path).unwrap(), &clock, &runs);
    let id = ids(manager.enqueue(WorkRequest::once("count").input(&7u32)))[0];
    assert_eq!(
        manager.wait_finished(id, T).map(|i| i.state),
        Some(WorkState::Succeeded)
    );
    manager.stop();
    manager.join(Duration::MAX);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    for _ in 0..2 {
        let manager = counting_manager(WorkStore::open(&path).unwrap(), &clock, &runs);
        let old = info(&manager, id);
        assert_eq!(old.state, WorkState::Succeeded);
        assert_eq!(old.run_attempts, 1);
        assert_eq!(old.output::<u32>(), Some(Ok(7)));
        clock.advance(HOUR);
        manager.recheck();
        // Work enqueued now runs: the scheduler had its chance at the old.
        let other = ids(manager.enqueue(WorkRequest::once("noop")))[0];
        assert!(manager.wait_finished(other, T).is_some());
        barrier(&manager);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not run again");
        assert_eq!(info(&manager, id).run_attempts, 1);
        manager.stop();
        manager.join(Duration::MAX);
    }
}

/// A manager whose `"block"` handler runs until released (or told to
/// stop), recording each attempt; `"noop"` does nothing.
fn blocking_manager(
    store: WorkStore,
    clock: &ManualClock,
    release: &Arc<AtomicBool>,
    started: &Arc<AtomicU32>,
    stopped: &Arc<AtomicBool>,
) -> WorkManager {
    let (release, started, stopped) = (
        Arc::clone(release),
        Arc::clone(started),
        Arc::clone(stopped),
    );
    WorkManager::builder(store)
        .clock(clock.clone())
        .workers(2)
        .handler_fn("block", move |(): (), work: &WorkContext<'_>| {
            started.store(work.attempt(), Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                if work.is_stopped() {
                    stopped.store(true, Ordering::SeqCst);
                    return WorkResult::Retry;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            WorkResult::Success(work.attempt())
        })
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .expect("manager starts")
}

/// A shutdown while work runs tells the run to stop and stores the work
/// enqueued: the next start runs it again, and counts both runs.
#[test]
fn work_interrupted_by_shutdown_runs_again() {
    let dir = TempDir::new("interrupted");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU32::new(0));
    let stopped = Arc::new(AtomicBool::new(false));

    let manager = blocking_manager(
        WorkStore::open(&path).unwrap(),
        &clock,
        &release,
        &started,
        &stopped,
    );
    let id = ids(manager.enqueue(WorkRequest::once("block").tag("slow")))[0];
    wait_state(&manager, id, WorkState::Running);
    assert!(wait_until(|| started.load(Ordering::SeqCst) == 1, T));
    manager.stop();
    manager.join(Duration::MAX);
    assert!(
        wait_until(|| stopped.load(Ordering::SeqCst), T),
        "the run was told to stop"
    );

    let stored = WorkStore::open(&path).unwrap().works().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].state, WorkState::Enqueued);
    assert_eq!(stored[0].run_attempts, 1);
    assert_eq!(
        stored[0].tags,
        ["block", "slow"],
        "the handler's name, then its own"
    );

    release.store(true, Ordering::SeqCst);
    let manager = blocking_manager(
        WorkStore::open(&path).unwrap(),
        &clock,
        &release,
        &started,
        &stopped,
    );
    let done = manager.wait_finished(id, T).expect("runs again");
    assert_eq!(done.state, WorkState::Succeeded);
    assert_eq!(done.run_attempts, 2, "the interrupted run counts");
    assert_eq!(
        done.output::<u32>(),
        Some(Ok(2)),
        "the handler saw attempt 2"
    );
    assert_eq!(started.load(Ordering::SeqCst), 2);
    manager.stop();
    manager.join(Duration::MAX);
}

/// A store copied while work runs is what a `kill -9` leaves: the work
/// stored as running. A manager on the copy runs it again at once, even
/// if it was delayed, and counts the interrupted run.
#[test]
fn work_stored_running_runs_again() {
    let dir = TempDir::new("killed");
    let path = dir.path("works.db");
    let copy = dir.path("copy.db");
    let clock = ManualClock::default();
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU32::new(0));
    let stopped = Arc::new(AtomicBool::new(false));

    let manager = blocking_manager(
        WorkStore::open(&path).unwrap(),
        &clock,
        &release,
        &started,
        &stopped,
    );
    let id = ids(manager.enqueue(WorkRequest::once("block").initial_delay(MIN)))[0];
    let waiting = ids(manager.enqueue(WorkRequest::once("noop").initial_delay(HOUR)))[0];
    clock.advance(MIN);
    wait_state(&manager, id, WorkState::Running);
    // The running state is stored once the manager shows it.
    crash_copy(&path, &copy);
    release.store(true, Ordering::SeqCst);
    assert!(manager.wait_finished(id, T).is_some());
    manager.stop();
    manager.join(Duration::MAX);

    let stored = WorkStore::open(&copy).unwrap().works().unwrap();
    assert_eq!(stored[0].id, id);
    assert_eq!(stored[0].state, WorkState::Running);
    assert_eq!(stored[0].run_attempts, 1);

    // The clock went back (another machine, a clock fix): it still runs.
    let clock = ManualClock::new(clock.now() - HOUR);
    started.store(0, Ordering::SeqCst);
    let manager = blocking_manager(
        WorkStore::open(&copy).unwrap(),
        &clock,
        &release,
        &started,
        &stopped,
    );
    let done = manager.wait_finished(id, T).expect("runs again");
    assert_eq!(done.state, WorkState::Succeeded);
    assert_eq!(done.run_attempts, 2);
    assert_eq!(done.output::<u32>(), Some(Ok(2)));
    assert_eq!(info(&manager, waiting).state, WorkState::Enqueued);
    manager.stop();
    manager.join(Duration::MAX);
}

/// Ids are never reused, even when the work with the highest id was
/// pruned before the restart.
#[test]
fn ids_are_not_reused_after_pruning_and_restart() {
    let dir = TempDir::new("ids");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let build = |clock: &ManualClock| {
        WorkManager::builder(WorkStore::open(&path).unwrap())
            .clock(clock.clone())
            .workers(1)
            .keep_finished(HOUR)
            .handler_fn(
                "noop",
                |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
            )
            .spawn()
            .unwrap()
    };

    let manager = build(&clock);
    let kept = ids(manager.enqueue(WorkRequest::once("noop").initial_delay(24 * HOUR)))[0];
    let gone = ids(manager.enqueue(WorkRequest::once("noop")))[0];
    assert_eq!((kept, gone), (WorkId(1), WorkId(2)));
    assert!(manager.wait_finished(gone, T).is_some());
    clock.advance(HOUR + MIN);
    assert!(wait_until(|| manager.info(gone).is_none(), T), "pruned");
    manager.stop();
    manager.join(Duration::MAX);
    assert_eq!(
        WorkStore::open(&path)
            .unwrap()
            .works()
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [kept]
    );

    let manager = build(&clock);
    let new = ids(manager.enqueue(WorkRequest::once("noop").initial_delay(HOUR)))[0];
    assert!(new > gone, "{new} reuses the id of pruned {gone}");
    manager.stop();
    manager.join(Duration::MAX);
}

/// The store sets `sqlite_sequence` ahead of the ids it writes, so a
/// commit of new work leaves that page alone; a clean stop gives the ids
/// set aside back, and a store left as a crash leaves it (a copy taken
/// while the manager runs) numbers new work after them: never an id used
/// before.
#[test]
fn ids_set_aside_are_given_back_at_a_clean_stop() {
    let dir = TempDir::new("reserve");
    let path = dir.path("works.db");
    let copy = dir.path("copy.db");
    let seq = |path: &Path| -> i64 {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'works'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let clock = ManualClock::default();
    let build = |path: &Path| noop_manager(path, &clock);
    let later = || WorkRequest::once("noop").initial_delay(HOUR);

    let manager = build(&path);
    // A query folds the store's log into SQLite (see `crash_copy`).
    let folded = |manager: &WorkManager| drop(manager.infos(&WorkQuery::All));
    assert_eq!(ids(manager.enqueue(later())), [WorkId(1)]);
    folded(&manager);
    let ahead = seq(&path);
    assert!(ahead > 1, "set ahead of the ids written: {ahead}");
    assert_eq!(ids(manager.enqueue(later())), [WorkId(2)]);
    folded(&manager);
    assert_eq!(seq(&path), ahead, "the second commit leaves it alone");
    crash_copy(&path, &copy);
    manager.stop();
    manager.join(Duration::MAX);
    assert_eq!(seq(&path), 2, "given back at the stop");

    // A clean restart numbers on.
    let manager = build(&path);
    assert_eq!(ids(manager.enqueue(later())), [WorkId(3)]);
    manager.stop();
    manager.join(Duration::MAX);

    // The copy is what a crash leaves: new work skips the ids set aside.
    let manager = build(&copy);
    assert_eq!(manager.infos(&WorkQuery::All).len(), 2);
    let new = ids(manager.enqueue(later()))[0];
    assert_eq!(new, WorkId(ahead.unsigned_abs() + 1));
    manager.stop();
    manager.join(Duration::MAX);
}

/// A plain delayed work writes its row and its due-index entry: no tag
/// row for its handler's name, which still finds it (once, even when it
/// is also an explicit tag), enqueued or not, before and after a restart.
#[test]
fn the_handler_name_finds_works_without_a_tag_row() {
    let dir = TempDir::new("handler-tag");
    let path = dir.path("works.db");
    let tag_rows = |path: &Path| -> Vec<(String, i64)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT tag, id FROM work_tags ORDER BY id, tag")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let clock = ManualClock::default();
    let build = || noop_manager(&path, &clock);
    let later = || WorkRequest::once("noop").initial_delay(HOUR);
    let by_handler = |m: &WorkManager| -> Vec<(WorkId, WorkState)> {
        m.infos(&WorkQuery::Tag("noop".into()))
            .iter()
            .map(|i| (i.id, i.state))
            .collect()
    };

    let manager = build();
    let plain = ids(manager.enqueue(later()))[0];
    let tagged = ids(manager.enqueue(later().tag("photos")))[0];
    let twice = ids(manager.enqueue(later().tag("noop")))[0];
    let done = ids(manager.enqueue(WorkRequest::once("noop")))[0];
    let expected = [
        (plain, WorkState::Enqueued),
        (tagged, WorkState::Enqueued),
        (twice, WorkState::Enqueued),
        (done, WorkState::Succeeded),
    ];
    // Queries read the store, which has the success once it is written.
    assert!(
        wait_until(|| by_handler(&manager) == expected, T),
        "{:?}",
        by_handler(&manager)
    );
    assert_eq!(tag_rows(&path), [("photos".to_owned(), tagged.0 as i64)]);
    assert_eq!(info(&manager, plain).tags, ["noop"]);
    manager.stop();
    assert!(manager.join(Duration::from_secs(30)));

    let manager = build();
    assert_eq!(by_handler(&manager), expected);
    assert_eq!(manager.cancel(WorkQuery::Tag("noop".into())).wait(), Ok(3));
    assert!(
        by_handler(&manager)
            .iter()
            .all(|(_, s)| *s != WorkState::Enqueued)
    );
    assert_eq!(by_handler(&manager).len(), 4);
    manager.stop();
    assert!(manager.join(Duration::from_secs(30)));
}

// ---- files that are not ours ---------------------------------------------

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = TempDir::new("notdb");
    let path = dir.path("notes.txt");
    let text = "shopping list:\n- milk\n- eggs\n".repeat(200);
    std::fs::write(&path, &text).unwrap();

    let err = WorkStore::open(&path).unwrap_err();
    assert_eq!(err, StoreError::NotADatabase { path: path.clone() });
    assert_says_what_to_do(&err, &path, &["untouched", "pick another path"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    // Nothing was created beside it.
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}

#[test]
fn another_programs_database_is_refused_untouched() {
    let dir = TempDir::new("foreign");

    // A plain database with a table, no application id.
    let path = dir.path("app.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE contacts (name TEXT, phone TEXT);
             INSERT INTO contacts VALUES ('Ada', '555-0100');",
        )
        .unwrap();
    }
    let bytes = snapshot(&path);
    let err = WorkStore::open(&path).unwrap_err();
    assert_eq!(
        err,
        StoreError::Foreign {
            path: path.clone(),
            application_id: 0
        }
    );
    assert_says_what_to_do(&err, &path, &["untouched", "pick another path"]);
    assert_eq!(snapshot(&path), bytes);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let phone: String = conn
        .query_row("SELECT phone FROM contacts WHERE name = 'Ada'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(phone, "555-0100");
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "no table was added");
    drop(conn);

    // Another program's empty database, known by its application id.
    let path = dir.path("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA application_id = 1234;").unwrap();
    }
    let bytes = snapshot(&path);
    let err = WorkStore::open(&path).unwrap_err();
    assert_eq!(
        err,
        StoreError::Foreign {
            path: path.clone(),
            application_id: 1234
        }
    );
    assert_eq!(snapshot(&path), bytes);
}

#[test]
fn a_store_of_a_newer_version_is_refused_untouched() {
    let dir = TempDir::new("toonew");
    let path = dir.path("works.db");
    {
        let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
            .handler_fn(
                "noop",
                |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
            )
            .spawn()
            .unwrap();
        ids(manager.enqueue(WorkRequest::once("noop").initial_delay(HOUR)));
        manager.stop();
        manager.join(Duration::MAX);
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4);
        conn.execute_batch("PRAGMA user_version = 5;").unwrap();
    }
    let bytes = snapshot(&path);
    let err = WorkStore::open(&path).unwrap_err();
    assert_eq!(
        err,
        StoreError::TooNew {
            path: path.clone(),
            version: 5,
            supported: 4
        }
    );
    assert_says_what_to_do(&err, &path, &["newer", "upgrade", "pick another path"]);
    assert_eq!(snapshot(&path), bytes);
    let err = WorkError::from(WorkStore::open(&path).unwrap_err());
    assert!(matches!(err, WorkError::Store(StoreError::TooNew { .. })));
    assert_eq!(snapshot(&path), bytes);
}

/// A store file with three pages: the header, the table, and rows.
fn store_with_rows(path: &Path) {
    let manager = WorkManager::builder(WorkStore::open(path).unwrap())
        .handler_fn("noop", |_: String, _: &WorkContext<'_>| {
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    for i in 0..40 {
        let big = format!("{i}").repeat(200);
        ids(manager.enqueue(WorkRequest::once("noop").input(&big).initial_delay(HOUR)));
    }
    manager.stop();
    manager.join(Duration::MAX);
    let len = std::fs::metadata(path).unwrap().len();
    assert!(len >= 3 * 4096, "{len} bytes");
    assert_eq!(snapshot(path).1, None, "checkpointed at close");
}

#[test]
fn a_damaged_store_is_refused_untouched() {
    let dir = TempDir::new("damaged");
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("header", |b| b[..16].copy_from_slice(b"not sqlite, no!!")),
        ("truncated", |b| b.truncate(4096 + 1000)),
        ("pages", |b| {
            let end = b.len();
            for (i, byte) in b[4096..end].iter_mut().enumerate() {
                *byte = (i * 7 + 13) as u8;
            }
        }),
    ];
    for (name, damage) in damages {
        let path = dir.path(&format!("{name}.db"));
        store_with_rows(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();

        let err = WorkStore::open(&path)
            .and_then(|s| s.works().map(|w| w.len()))
            .unwrap_err();
        match &err {
            StoreError::NotADatabase { path: p } => {
                assert_eq!(p, &path);
                assert_says_what_to_do(&err, &path, &["untouched", "pick another path"]);
            }
            StoreError::Corrupt { path: p, detail } => {
                assert_eq!(p, &path);
                assert!(!detail.is_empty());
                assert_says_what_to_do(&err, &path, &["damaged", "untouched", "backup"]);
            }
            other => panic!("{name}: expected NotADatabase or Corrupt, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: untouched");
    }
}

/// Rows that cannot be read are reported and kept as they are; the rest
/// of the store runs, and new ids pass theirs.
#[test]
fn unreadable_rows_are_reported_and_kept() {
    let dir = TempDir::new("unreadable");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    {
        let manager = counting_manager(WorkStore::open(&path).unwrap(), &clock, &runs);
        let first = WorkRequest::once("count").input(&1u32).initial_delay(MIN);
        let second = WorkRequest::once("count").input(&2u32).initial_delay(MIN);
        assert_eq!(ids(manager.enqueue(first)), [WorkId(1)]);
        assert_eq!(ids(manager.enqueue(second)), [WorkId(2)]);
        manager.stop();
        manager.join(Duration::MAX);
    }
    let garbage: &[u8] = b"\xde\xad\xbe\xef this is no work record";
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("INSERT INTO works (id, record) VALUES (100, ?1)", [garbage])
            .unwrap();
        // A readable record in the wrong row.
        conn.execute(
            "INSERT INTO works (id, record) SELECT 50, record FROM works WHERE id = 1",
            [],
        )
        .unwrap();
    }

    let store = WorkStore::open(&path).unwrap();
    let bad = store.unreadable().unwrap();
    assert_eq!(
        bad.iter().map(|u| u.id).collect::<Vec<_>>(),
        [WorkId(50), WorkId(100)]
    );
    assert!(bad.iter().all(|u| !u.reason.is_empty()), "{bad:?}");
    assert!(bad[0].reason.contains('1'), "{bad:?}");
    assert_eq!(store.works().unwrap().len(), 2);

    let manager = counting_manager(store, &clock, &runs);
    assert_eq!(manager.unreadable(), bad.as_slice());
    assert_eq!(
        manager
            .infos(&WorkQuery::All)
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [WorkId(1), WorkId(2)]
    );
    clock.advance(MIN);
    for id in [WorkId(1), WorkId(2)] {
        let done = manager.wait_finished(id, T).expect("the rest runs");
        assert_eq!(done.state, WorkState::Succeeded);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let new = ids(manager.enqueue(WorkRequest::once("noop").initial_delay(HOUR)));
    assert_eq!(new, [WorkId(101)], "after the unreadable rows too");
    manager.stop();
    manager.join(Duration::MAX);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let kept: Vec<u8> = conn
        .query_row("SELECT record FROM works WHERE id = 100", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, garbage);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM works", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 5);
}

// ---- pruning -------------------------------------------------------------

#[test]
fn finished_work_is_pruned_after_the_retention() {
    let dir = TempDir::new("prune");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
        .clock(clock.clone())
        .workers(1)
        .keep_finished(HOUR)
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .unwrap();
    let done = ids(manager.enqueue(WorkRequest::once("noop").tag("done")))[0];
    let pending = ids(manager.enqueue(WorkRequest::once("noop").initial_delay(48 * HOUR)))[0];
    assert!(manager.wait_finished(done, T).is_some());

    clock.advance(HOUR - MIN);
    barrier(&manager);
    assert_eq!(
        info(&manager, done).state,
        WorkState::Succeeded,
        "kept for an hour"
    );

    clock.advance(MIN + MIN);
    assert!(wait_until(|| manager.info(done).is_none(), T), "pruned");
    assert!(manager.infos(&WorkQuery::Tag("done".into())).is_empty());
    assert_eq!(info(&manager, pending).state, WorkState::Enqueued);
    manager.stop();
    manager.join(Duration::MAX);

    let stored = WorkStore::open(&path).unwrap().works().unwrap();
    assert_eq!(
        stored.iter().map(|i| i.id).collect::<Vec<_>>(),
        [pending],
        "deleted from the store"
    );
}

// ---- built-in constraints --------------------------------------------------

/// Writes a power supply under `<root>/sys/class/power_supply/<name>`.
fn supply(root: &Path, name: &str, files: &[(&str, &str)]) {
    let dir = root.join("sys/class/power_supply").join(name);
    for (file, text) in files {
        write(&dir.join(file), &format!("{text}\n"));
    }
}

fn battery(root: &Path, status: &str, capacity: u32) {
    supply(
        root,
        "BAT0",
        &[
            ("type", "Battery"),
            ("status", status),
            ("capacity", &capacity.to_string()),
        ],
    );
}

#[cfg(target_os = "linux")]
#[test]
fn on_ac_power_reads_power_supplies() {
    let dir = TempDir::new("ac");
    let root = &dir.0;
    let ac = OnAcPower::with_root(root);
    assert!(ac.holds(), "no supplies: a desktop on mains");

    battery(root, "Discharging", 60);
    assert!(!ac.holds(), "on battery");
    supply(root, "AC", &[("type", "Mains"), ("online", "0")]);
    assert!(!ac.holds(), "unplugged");
    supply(root, "AC", &[("online", "1")]);
    assert!(ac.holds(), "plugged in");

    supply(root, "AC", &[("online", "0")]);
    battery(root, "Charging", 60);
    assert!(ac.holds(), "charging");
    battery(root, "Full", 100);
    assert!(ac.holds(), "full");
}

#[cfg(target_os = "linux")]
#[test]
fn battery_not_low_reads_capacity_and_status() {
    let dir = TempDir::new("battery");
    let root = &dir.0;
    assert!(BatteryNotLow::with_root(root).holds(), "no battery");

    battery(root, "Discharging", 10);
    assert!(!BatteryNotLow::with_root(root).holds());
    battery(root, "Charging", 10);
    assert!(BatteryNotLow::with_root(root).holds(), "low but charging");
    battery(root, "Discharging", 15);
    assert!(
        !BatteryNotLow::with_root(root).holds(),
        "at the limit is low"
    );
    battery(root, "Discharging", 80);
    assert!(BatteryNotLow::with_root(root).holds());
    assert!(!BatteryNotLow::with_root(root).min_percent(90).holds());
    assert!(BatteryNotLow::with_root(root).min_percent(79).holds());
}

#[cfg(target_os = "linux")]
#[test]
fn network_available_reads_routes_and_interfaces() {
    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
    const LOCAL: &str = "eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
    const DEFAULT: &str = "eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
    let dir = TempDir::new("net");
    let root = &dir.0;
    let net = NetworkAvailable::with_root(root);
    assert!(!net.holds(), "nothing: offline");

    write(&root.join("sys/class/net/lo/operstate"), "unknown\n");
    write(&root.join("sys/class/net/eth0/operstate"), "up\n");
    write(&root.join("proc/net/route"), &format!("{HEADER}{LOCAL}"));
    assert!(!net.holds(), "no default route");
    write(
        &root.join("proc/net/route"),
        &format!("{HEADER}{DEFAULT}{LOCAL}"),
    );
    assert!(net.holds(), "default route, eth0 up");
    write(&root.join("sys/class/net/eth0/operstate"), "down\n");
    assert!(!net.holds(), "eth0 down");
    write(&root.join("sys/class/net/eth0/operstate"), "up\n");
    assert!(net.holds());
    std::fs::remove_file(root.join("proc/net/route")).unwrap();
    assert!(!net.holds(), "no route table");
}

#[cfg(target_os = "linux")]
#[test]
fn system_idle_measures_between_checks() {
    fn stat(root: &Path, busy: u64, idle: u64) {
        // user nice system idle iowait irq softirq steal guest guest_nice
        write(
            &root.join("proc/stat"),
            &format!(
                "cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n\
                 intr 0\n"
            ),
        );
    }
    let dir = TempDir::new("idle");
    let root = &dir.0;

    // The first check has no window: it reads the load average.
    write(&root.join("proc/loadavg"), "0.00 0.01 0.05 1/100 1234\n");
    stat(root, 1000, 1000);
    let idle = SystemIdle::with_root(root).window(Duration::ZERO);
    assert!(idle.holds(), "load 0");
    write(
        &root.join("proc/loadavg"),
        "100000.0 0.01 0.05 1/100 1234\n",
    );
    let busy = SystemIdle::with_root(root).window(Duration::ZERO);
    assert!(!busy.holds(), "a huge load");

    // Then the share of idle ticks since the last check.
    stat(root, 1100, 1900); // +100 busy, +900 idle
    assert!(idle.holds());
    assert!(busy.holds(), "the window decides now, not the load");
    stat(root, 2000, 2000); // +900 busy, +100 idle
    assert!(!idle.holds());
    assert!(!busy.holds());
    stat(root, 2400, 2600); // +400 busy, +600 idle
    assert!(idle.holds());
    assert!(
        !SystemIdle::with_root(root).min_idle(0.7).holds(),
        "load is high"
    );

    // Within a window, the last verdict stands.
    let slow = SystemIdle::with_root(root).window(HOUR);
    write(&root.join("proc/loadavg"), "0.00 0.01 0.05 1/100 1234\n");
    assert!(slow.holds());
    stat(root, 10_000, 2600); // all busy since
    assert!(slow.holds(), "the window has not passed");
    assert!(!idle.holds());
}

#[test]
fn storage_not_low_reads_free_space() {
    let dir = TempDir::new("storage");
    assert!(StorageNotLow::new(&dir.0, 1).holds());
    #[cfg(target_os = "linux")]
    {
        assert!(StorageNotLow::new(&dir.0, 1).available().unwrap() > 1);
        assert!(!StorageNotLow::new(&dir.0, u64::MAX).holds());
    }
}

/// Work gated on a built-in constraint over a fake laptop waits on battery
/// and runs once it is plugged in and the app says so.
#[cfg(target_os = "linux")]
#[test]
fn work_waits_for_a_builtin_constraint() {
    let dir = TempDir::new("gated");
    let root = dir.path("root");
    battery(&root, "Discharging", 50);
    supply(&root, "AC", &[("type", "Mains"), ("online", "0")]);
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
        .clock(clock.clone())
        .constraint("on_ac_power", OnAcPower::with_root(&root))
        .constraint("battery_not_low", BatteryNotLow::with_root(&root))
        // Only recheck() looks again.
        .constraint_poll(HOUR)
        .handler_fn("backup", move |(): (), _: &WorkContext<'_>| {
            counter.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let req = WorkRequest::once("backup")
        .constraint("on_ac_power")
        .constraint("battery_not_low");
    let id = ids(manager.enqueue(req))[0];
    barrier(&manager);
    manager.recheck();
    barrier(&manager);
    assert_eq!(info(&manager, id).state, WorkState::Enqueued);
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    supply(&root, "AC", &[("online", "1")]);
    manager.recheck();
    let done = manager.wait_finished(id, T).expect("runs on AC");
    assert_eq!(done.state, WorkState::Succeeded);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    manager.stop();
    manager.join(Duration::MAX);
}

/// Periodic work that enqueued its own replacement during a run, and was
/// interrupted before the run ended, does not come back after a restart:
/// it is cancelled, and only the replacement keeps the name.
#[test]
fn work_that_replaced_itself_stays_retired_after_a_restart() {
    let dir = TempDir::new("retire");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let slot: Arc<std::sync::OnceLock<WorkManager>> = Arc::default();
    let replaced = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let (sl, rp, st) = (
        Arc::clone(&slot),
        Arc::clone(&replaced),
        Arc::clone(&stopped),
    );
    let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
        .clock(clock.clone())
        .handler_fn("renew", move |(): (), w: &WorkContext<'_>| {
            if w.attempt() == 1 {
                let m = sl.get().expect("the manager is set");
                let next = WorkRequest::periodic("renew", HOUR).initial_delay(HOUR);
                m.enqueue_unique("renew", ExistingWork::Replace, next)
                    .wait()
                    .expect("replacement enqueued");
                rp.store(true, Ordering::SeqCst);
            }
            // Stays in its run until the shutdown stops it.
            while !w.is_stopped() {
                std::thread::sleep(Duration::from_millis(1));
            }
            st.store(true, Ordering::SeqCst);
            WorkResult::<()>::Retry
        })
        .spawn()
        .unwrap();
    assert!(slot.set(manager.clone()).is_ok());
    let old = ids(manager.enqueue_unique(
        "renew",
        ExistingWork::Keep,
        WorkRequest::periodic("renew", HOUR),
    ))[0];
    assert!(wait_until(|| replaced.load(Ordering::SeqCst), T));
    barrier(&manager);
    assert_eq!(info(&manager, old).state, WorkState::Running);
    manager.stop();
    manager.join(Duration::MAX);
    assert!(wait_until(|| stopped.load(Ordering::SeqCst), T));
    drop(slot);

    let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
        .clock(clock.clone())
        .handler_fn("renew", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let old_info = info(&manager, old);
    assert_eq!(old_info.state, WorkState::Cancelled, "{old_info:?}");
    assert_eq!(old_info.unique_name, None);
    let named = manager.infos(&WorkQuery::UniqueName("renew".into()));
    assert_eq!(named.len(), 1);
    assert_ne!(named[0].id, old);
    assert_eq!(named[0].state, WorkState::Enqueued);
    manager.stop();
    manager.join(Duration::MAX);
}

/// A manager on the store at `path`, on `clock`, with one worker and a
/// no-op handler `"noop"`.
fn noop_manager(path: &Path, clock: &ManualClock) -> WorkManager {
    WorkManager::builder(WorkStore::open(path).unwrap())
        .clock(clock.clone())
        .workers(1)
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .unwrap()
}

/// Callers that block on their enqueues run the scheduler's turn
/// themselves when it is free. A stop in the middle of them: every wait
/// resolves (stored, or `Stopped`), every work a caller was told is stored
/// is in the store, and once `join` returns the store is let go (a caller
/// holding the scheduler keeps nothing alive).
#[test]
fn callers_that_write_their_own_enqueues_meet_a_stop_and_lose_nothing() {
    let dir = TempDir::new("caller-turns");
    let path = dir.0.join("works.db");
    for round in 0..8 {
        let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
            .handler_fn("later", |(): (), _: &WorkContext<'_>| {
                WorkResult::Success(())
            })
            .spawn()
            .unwrap();
        let answered = AtomicUsize::new(0);
        let stored: Vec<Vec<WorkId>> = std::thread::scope(|s| {
            let callers: Vec<_> = (0..3)
                .map(|_| {
                    let (manager, answered) = (&manager, &answered);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        for _ in 0..400 {
                            let later = WorkRequest::once("later").initial_delay(HOUR);
                            match manager.enqueue(later).wait() {
                                Ok(done) => {
                                    mine.extend(done.ids());
                                    answered.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(WorkError::Stopped) => break,
                                Err(e) => panic!("round {round}: {e}"),
                            }
                        }
                        mine
                    })
                })
                .collect();
            // Stop while the callers are at it, later each round.
            let after = 10 * (round + 1);
            assert!(wait_until(|| answered.load(Ordering::SeqCst) >= after, T));
            manager.stop();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert!(manager.join(T), "round {round}: the scheduler ended");
        // Let go: it opens at once, and holds every work a caller was told
        // is stored.
        let store = WorkStore::open(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let held: std::collections::HashSet<WorkId> =
            store.works().unwrap().into_iter().map(|w| w.id).collect();
        for id in stored.iter().flatten() {
            assert!(
                held.contains(id),
                "round {round}: {id} was answered stored and is not"
            );
        }
        // A request to a stopped manager fails at once.
        let late = manager.enqueue(WorkRequest::once("later")).wait();
        assert_eq!(late.map(|_| ()), Err(WorkError::Stopped));
    }
}

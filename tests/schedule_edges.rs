//! The work manager at its edges: ids across a restart, a stopped run's
//! result, foreign rows, paging past the first page, updates of works not
//! held in memory, and files that only look like SQLite.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use isolates::schedule::*;
use parking_lot::Mutex;

const T: Duration = Duration::from_secs(10);
const MIN: Duration = Duration::from_secs(60);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-review-schedule-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("works.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_ids(op: Operation<Enqueued>) -> Vec<WorkId> {
    let mut op = op;
    match op.wait_timeout(T).expect("enqueue answered") {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("expected new work, got {other:?}"),
    }
}

/// A clock moved by hand that never wakes the scheduler: a move is seen
/// at the next turn something else causes.
#[derive(Debug, Clone)]
struct SilentClock(Arc<Mutex<SystemTime>>);

impl SilentClock {
    fn new() -> Self {
        SilentClock(Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock() += by;
    }
}

impl Clock for SilentClock {
    fn now(&self) -> SystemTime {
        *self.0.lock()
    }
    fn real_wait(&self, _at: SystemTime) -> Option<Duration> {
        None
    }
}

/// A run told to stop by `WorkManager::stop` that returns within the stop
/// grace: `join` waits for it to return, and, as Android's WorkManager
/// ignores a stopped worker's result, its work stays enqueued (its result
/// is not recorded), to run again on the next start.
#[test]
fn a_run_stopped_with_its_manager_returns_within_the_grace_and_stays_enqueued() {
    let dir = TempDir::new("grace");
    let runs = Arc::new(AtomicUsize::new(0));
    let returned = Arc::new(AtomicUsize::new(0));
    let build = |runs: &Arc<AtomicUsize>, returned: &Arc<AtomicUsize>| {
        let (runs, returned) = (Arc::clone(runs), Arc::clone(returned));
        WorkManager::builder(WorkStore::open(dir.db()).unwrap())
            .workers(1)
            .stop_grace(Duration::from_secs(5))
            .handler_fn("job", move |(): (), work: &WorkContext<'_>| {
                runs.fetch_add(1, Ordering::SeqCst);
                // Works until told to stop, then takes a moment to return.
                while !work.is_stopped() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(100));
                returned.fetch_add(1, Ordering::SeqCst);
                WorkResult::Success(7u32)
            })
            .spawn()
            .unwrap()
    };
    let manager = build(&runs, &returned);
    let id = new_ids(manager.enqueue(WorkRequest::once("job")))[0];
    assert!(
        manager
            .wait_for(id, T, |i| i.state == WorkState::Running)
            .is_some()
    );
    manager.stop();
    assert!(manager.join(T));
    assert_eq!(
        returned.load(Ordering::SeqCst),
        1,
        "join returned before the stopped run did"
    );
    drop(manager);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let stored = WorkStore::open(dir.db()).unwrap().works().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].state, stored[0].output::<u32>()),
        (WorkState::Enqueued, None),
        "a stopped run's result is not recorded: {:?}",
        stored[0]
    );
    // The next start runs it again.
    let manager = build(&runs, &returned);
    assert!(
        manager
            .wait_for(id, T, |i| i.state == WorkState::Running)
            .is_some()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    manager.stop();
    assert!(manager.join(T));
}

/// A work whose id was handed to the caller, then pruned in the same turn
/// (before ever being written), must not have its id given to another work
/// after a restart.
#[test]
fn an_id_pruned_before_it_was_written_is_not_reused_after_a_restart() {
    let dir = TempDir::new("ids");
    let clock = SilentClock::new();
    let build = |clock: &SilentClock| {
        WorkManager::builder(WorkStore::open(dir.db()).unwrap())
            .clock(clock.clone())
            .workers(1)
            .keep_finished(Duration::ZERO)
            .handler_fn("fail", |(): (), _: &WorkContext<'_>| {
                WorkResult::<()>::Failure("no".into())
            })
            .handler_fn(
                "noop",
                |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
            )
            .spawn()
            .unwrap()
    };
    let manager = build(&clock);
    let failed =
        new_ids(manager.enqueue_unique("u", ExistingWork::Keep, WorkRequest::once("fail")))[0];
    let info = manager.wait_finished(failed, T).expect("finished");
    assert_eq!(info.state, WorkState::Failed);
    // Past the prune throttle, unseen by the scheduler until the next
    // request's turn: that turn appends (the new work fails at once, its
    // prerequisite failed) and prunes both.
    clock.advance(2 * MIN);
    let appended =
        new_ids(manager.enqueue_unique("u", ExistingWork::Append, WorkRequest::once("noop")))[0];
    assert!(appended > failed);
    manager.stop();
    assert!(manager.join(T));
    drop(manager);

    let manager = build(&clock);
    let next = new_ids(manager.enqueue(WorkRequest::once("noop").initial_delay(MIN)))[0];
    manager.stop();
    assert!(manager.join(T));
    assert!(
        next > appended,
        "{next} reuses the id {appended} handed out before the restart"
    );
}

/// A headless run over a store holding more due works than one page
/// loaded at start (4096) runs them all, each once.
#[test]
fn run_due_runs_every_due_work_beyond_the_first_page() {
    let dir = TempDir::new("pages");
    let n = 4096 + 300;
    {
        // Scheduled an hour ago, due half an hour later.
        let past = ManualClock::new(SystemTime::now() - 2 * 30 * MIN);
        let m = WorkManager::builder(WorkStore::open(dir.db()).unwrap())
            .clock(past)
            .handler_fn("count", |(): (), _: &WorkContext<'_>| {
                WorkResult::Success(())
            })
            .spawn()
            .unwrap();
        // One stage of many: one write.
        let stage: Vec<WorkRequest> = (0..n)
            .map(|_| WorkRequest::once("count").initial_delay(30 * MIN))
            .collect();
        let ids = new_ids(m.enqueue(WorkChain::all(stage)));
        assert_eq!(ids.len(), n);
        m.stop();
        assert!(m.join(T));
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let run = WorkManager::builder(WorkStore::open(dir.db()).unwrap())
        .workers(2)
        .handler_fn("count", move |(): (), _: &WorkContext<'_>| {
            counter.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(())
        })
        .run_due(Duration::from_secs(60))
        .unwrap();
    assert!(run.drained);
    assert_eq!(ran.load(Ordering::SeqCst), n);
    assert_eq!(run.ran.len(), n);
    assert_eq!(run.next_due, None);
}

/// A row whose `due` column is not a number (written by something else,
/// or by hand) is a row that cannot be read: reported and kept, while the
/// rest of the store opens and runs, as for any other unreadable row.
#[test]
fn a_row_with_a_foreign_due_column_does_not_stop_the_store() {
    let dir = TempDir::new("due-text");
    let clock = ManualClock::default();
    {
        let m = WorkManager::builder(WorkStore::open(dir.db()).unwrap())
            .clock(clock.clone())
            .handler_fn(
                "noop",
                |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
            )
            .spawn()
            .unwrap();
        new_ids(m.enqueue(WorkRequest::once("noop").initial_delay(MIN)));
        m.stop();
        assert!(m.join(T));
    }
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute(
            "INSERT INTO works (id, record, layout, handler, state, due) \
             VALUES (100, x'deadbeef', 3, 'noop', 0, 'soon')",
            [],
        )
        .unwrap();
    }
    let store = WorkStore::open(dir.db()).unwrap();
    let built = WorkManager::builder(store)
        .clock(clock.clone())
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn();
    let m = match built {
        Ok(m) => m,
        Err(e) => panic!("the store did not open for one foreign row: {e}"),
    };
    assert_eq!(
        m.unreadable().iter().map(|u| u.id).collect::<Vec<_>>(),
        [WorkId(100)]
    );
    clock.advance(MIN);
    assert_eq!(
        m.wait_finished(WorkId(1), T).map(|i| i.state),
        Some(WorkState::Succeeded)
    );
    m.stop();
    assert!(m.join(T));
}

/// Short files that start as an SQLite database but are not one (a
/// header alone, a header and garbage) are refused, not taken for a new
/// store, and left as they were.
#[test]
fn a_bare_sqlite_header_is_refused_untouched() {
    let dir = TempDir::new("bare-header");
    let mut garbage = b"SQLite format 3\0".to_vec();
    garbage.extend((0..200u32).map(|i| (i * 37 + 11) as u8));
    for (name, bytes) in [
        ("magic", b"SQLite format 3\0".to_vec()),
        ("garbage", garbage),
    ] {
        let path = dir.0.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let got = WorkStore::open(&path).and_then(|s| s.works().map(|w| w.len()));
        assert!(
            matches!(
                got,
                Err(StoreError::NotADatabase { .. } | StoreError::Corrupt { .. })
            ),
            "{name}: {got:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was changed");
    }
}

/// An UPDATE of a unique work the manager does not hold (due beyond the
/// first page loaded at start) changes the stored work in place: it runs
/// once, at its new time, with its new input.
#[test]
fn update_reaches_a_stored_work_the_manager_does_not_hold() {
    let dir = TempDir::new("update-far");
    let clock = ManualClock::default();
    let ran: Arc<Mutex<Vec<u32>>> = Arc::default();
    let build = |clock: &ManualClock, ran: &Arc<Mutex<Vec<u32>>>| {
        let ran = Arc::clone(ran);
        WorkManager::builder(WorkStore::open(dir.db()).unwrap())
            .clock(clock.clone())
            .workers(2)
            .handler_fn("count", move |n: u32, _: &WorkContext<'_>| {
                ran.lock().push(n);
                WorkResult::Success(n)
            })
            .spawn()
            .unwrap()
    };
    let far = {
        let m = build(&clock, &ran);
        let near: Vec<WorkRequest> = (0..4096 + 200)
            .map(|n| {
                WorkRequest::once("count")
                    .input(&(n + 10))
                    .initial_delay(60 * MIN)
            })
            .collect();
        new_ids(m.enqueue(WorkChain::all(near)));
        let far = new_ids(
            m.enqueue_unique(
                "far",
                ExistingWork::Keep,
                WorkRequest::once("count")
                    .input(&1u32)
                    .initial_delay(24 * 60 * MIN),
            ),
        )[0];
        m.stop();
        assert!(m.join(T));
        far
    };
    let m = build(&clock, &ran);
    let mut op = m.enqueue_unique(
        "far",
        ExistingWork::Update,
        WorkRequest::once("count").input(&2u32).initial_delay(MIN),
    );
    assert_eq!(op.wait_timeout(T), Some(Ok(Enqueued::Updated(far))));
    clock.advance(MIN);
    let done = m
        .wait_finished(far, T)
        .expect("the updated work ran at its new time");
    assert_eq!(done.output::<u32>(), Some(Ok(2)));
    assert_eq!(*ran.lock(), [2]);
    m.stop();
    assert!(m.join(T));
}

//! A store written by an earlier version opens after the upgrade, untouched
//! in meaning: `tests/fixtures/store-v1.db` was written by the build before
//! stores had row layouts (schema 1; see `tests/fixtures/README.md`). A copy
//! is opened, compared work by work with what it held, and then run: each
//! work runs when it was due, with its input, backoff, constraint, period
//! and chain as they were stored. A migration that fails leaves the store
//! at its version; a row no layout reads is kept as it was.
//!
//! Schedules run on a [`ManualClock`] at the fixture's time; waits on other
//! threads are conditions with a 10 s timeout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use isolates::schedule::*;

const T: Duration = Duration::from_secs(10);
/// 2025-01-01T00:00:00Z, the fixture's clock, in seconds.
const T0: u64 = 1_735_689_600;
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1.db");
/// The same works written by the build before the store's log (schema 3).
const FIXTURE_V3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v3.db");

/// A copy of the fixture in a directory of its own, removed when dropped:
/// opening it upgrades it in place.
struct Copy(PathBuf);

impl Copy {
    fn new(name: &str) -> Self {
        Self::of(FIXTURE, name)
    }

    fn of(fixture: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-upgrade-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixture, dir.join("works.db")).unwrap();
        Copy(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("works.db")
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn at(secs: u64) -> Option<std::time::SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn user_version(path: &Path) -> i32 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// Every row's id and bytes, as stored.
fn rows(path: &Path) -> Vec<(i64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, record FROM works ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn info(
    id: u64,
    handler: &str,
    state: WorkState,
    tags: &[&str],
    next_run_at: Option<std::time::SystemTime>,
) -> WorkInfo {
    WorkInfo {
        id: WorkId(id),
        handler: handler.into(),
        state,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        unique_name: None,
        periodic: false,
        run_attempts: 0,
        retries: 0,
        periods: 0,
        next_run_at,
        output: None,
        progress: None,
        failure: None,
        prerequisites: vec![],
    }
}

fn encoded<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
    use isolates::Codec;
    let mut bytes = Vec::new();
    isolates::Bincode::new().encode(value, &mut bytes).unwrap();
    Some(bytes)
}

/// What the fixture holds (its README's table), as [`WorkInfo`]s.
fn expected() -> Vec<WorkInfo> {
    use WorkState::*;
    let done = |id, handler, out: u32| WorkInfo {
        run_attempts: 1,
        output: encoded(&out),
        ..info(id, handler, Succeeded, &[handler], None)
    };
    vec![
        info(1, "greet", Enqueued, &["greet", "ui"], at(T0 + 3600)),
        WorkInfo {
            unique_name: Some("feed".into()),
            periodic: true,
            ..info(2, "sync", Enqueued, &["sync", "network"], at(T0 + 600))
        },
        done(3, "square", 9),
        done(4, "square", 16),
        WorkInfo {
            prerequisites: vec![WorkId(3), WorkId(4)],
            ..done(5, "sum", 25)
        },
        WorkInfo {
            unique_name: Some("later-sum".into()),
            ..info(6, "square", Enqueued, &["square"], at(T0 + 7200))
        },
        WorkInfo {
            unique_name: Some("later-sum".into()),
            prerequisites: vec![WorkId(6)],
            ..info(7, "sum", Blocked, &["sum", "blocked"], None)
        },
        WorkInfo {
            run_attempts: 1,
            failure: Some("the disk is full".into()),
            ..info(8, "fail", Failed, &["fail"], None)
        },
        info(9, "greet", Cancelled, &["greet", "old"], None),
        WorkInfo {
            run_attempts: 1,
            retries: 1,
            ..info(10, "flaky", Enqueued, &["flaky"], at(T0 + 30))
        },
    ]
}

/// The schema version in a database file's header (bytes 60..64), read
/// without SQLite: opening the committed fixture would leave WAL files
/// beside it.
fn header_version(path: &str) -> u32 {
    let bytes = std::fs::read(path).unwrap();
    u32::from_be_bytes(bytes[60..64].try_into().unwrap())
}

#[test]
fn the_fixture_is_todays_format() {
    assert_eq!(header_version(FIXTURE), 1, "the fixture was changed");
    let copy = Copy::new("untouched");
    drop(WorkStore::open(copy.db()).unwrap());
    assert_eq!(user_version(&copy.db()), 4);
    assert_eq!(header_version(FIXTURE), 1);
}

#[test]
fn a_store_of_schema_1_opens_after_the_upgrade_untouched_in_meaning() {
    let copy = Copy::new("meaning");
    let before = rows(&copy.db());
    assert_eq!(before.len(), 10);
    {
        let store = WorkStore::open(copy.db()).expect("the old store opens");
        assert_eq!(store.unreadable().unwrap(), []);
        assert_eq!(store.works().unwrap(), expected());
    }
    // Upgraded: schema 4, each row knows its layout, and no row's bytes
    // were rewritten by opening.
    assert_eq!(user_version(&copy.db()), 4);
    assert_eq!(rows(&copy.db()), before);
    let conn = rusqlite::Connection::open(copy.db()).unwrap();
    let layouts: Vec<Option<i64>> = conn
        .prepare("SELECT layout FROM works ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(layouts, vec![Some(2); 10]);
    drop(conn);
    // Opening again is not a second upgrade: the same works.
    let store = WorkStore::open(copy.db()).unwrap();
    assert_eq!(store.works().unwrap(), expected());
}

/// A store of schema 3 (written by the build before commits went through
/// the store's log) opens as schema 4 with every work as it was: its rows
/// and columns are not touched, a manager finds its works by tag, handler
/// and unique name, and new work is numbered after them.
#[test]
fn a_store_of_schema_3_opens_after_the_upgrade_untouched_in_meaning() {
    assert_eq!(header_version(FIXTURE_V3), 3, "the fixture was changed");
    let copy = Copy::of(FIXTURE_V3, "meaning-v3");
    let before = rows(&copy.db());
    {
        let store = WorkStore::open(copy.db()).expect("the schema-3 store opens");
        assert_eq!(store.unreadable().unwrap(), []);
        assert_eq!(store.works().unwrap(), expected());
    }
    assert_eq!(user_version(&copy.db()), 4);
    assert_eq!(rows(&copy.db()), before);
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0));
    let manager = WorkManager::builder(WorkStore::open(copy.db()).unwrap())
        .clock(clock.clone())
        .handler_fn("greet", |name: String, _: &WorkContext<'_>| {
            WorkResult::Success(format!("hello, {name}"))
        })
        .spawn()
        .unwrap();
    let ids = |q: WorkQuery| -> Vec<u64> { manager.infos(&q).iter().map(|i| i.id.0).collect() };
    assert_eq!(ids(WorkQuery::Tag("ui".into())), [1]);
    assert_eq!(ids(WorkQuery::Tag("square".into())), [3, 4, 6]);
    assert_eq!(ids(WorkQuery::UniqueName("later-sum".into())), [6, 7]);
    let new = manager
        .enqueue(WorkRequest::once("greet").input("again"))
        .wait()
        .unwrap();
    assert_eq!(new.ids(), [WorkId(11)]);
    assert!(manager.wait_finished(WorkId(11), T).is_some());
    manager.stop();
    assert!(manager.join(T));
    assert_eq!(header_version(FIXTURE_V3), 3);
}

/// The upgrade to schema 3 fills the columns the store is searched by from
/// each row (the rows' bytes stay as they were), and a manager finds the
/// old works by tag, handler name and unique name through them. Tag rows
/// are written for explicit tags only: the handler's name is the
/// `handler` column.
#[test]
fn the_upgrade_fills_the_columns_the_store_is_searched_by() {
    let copy = Copy::new("columns");
    drop(WorkStore::open(copy.db()).unwrap());
    let conn = rusqlite::Connection::open(copy.db()).unwrap();
    type Columns = (
        i64,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    let columns: Vec<Columns> = conn
        .prepare("SELECT id, handler, state, due, uniq FROM works ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let tags = |id: i64| -> Vec<String> {
        conn.prepare("SELECT tag FROM work_tags WHERE id = ?1 ORDER BY tag")
            .unwrap()
            .query_map([id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let expected = expected();
    assert_eq!(columns.len(), expected.len());
    for ((id, handler, state, due, uniq), want) in columns.into_iter().zip(&expected) {
        assert_eq!(id as u64, want.id.0);
        assert_eq!(handler.as_deref(), Some(want.handler.as_str()), "{id}");
        assert!(state.is_some(), "{id}: every row read");
        let due_ms = want
            .next_run_at
            .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64);
        assert_eq!(due, due_ms, "{id}: due only when enqueued, at its time");
        assert_eq!(uniq, want.unique_name, "{id}");
        let mut want_tags: Vec<String> = want
            .tags
            .iter()
            .filter(|t| **t != want.handler)
            .cloned()
            .collect();
        want_tags.sort();
        assert_eq!(tags(id), want_tags, "{id}");
    }
    drop(conn);

    let manager = WorkManager::builder(WorkStore::open(copy.db()).unwrap())
        .clock(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)))
        .spawn()
        .unwrap();
    let by = |q: WorkQuery| -> Vec<WorkInfo> { manager.infos(&q) };
    let with = |f: &dyn Fn(&WorkInfo) -> bool| -> Vec<WorkInfo> {
        expected.iter().filter(|i| f(i)).cloned().collect()
    };
    assert_eq!(
        by(WorkQuery::Tag("ui".into())),
        with(&|i| i.tags.iter().any(|t| t == "ui"))
    );
    let handlers: std::collections::BTreeSet<&str> =
        expected.iter().map(|i| i.handler.as_str()).collect();
    assert!(
        handlers.len() > 1,
        "the fixture has works of several handlers"
    );
    for handler in handlers {
        assert_eq!(
            by(WorkQuery::Tag(handler.into())),
            with(&|i| i.handler == handler || i.tags.iter().any(|t| t == handler)),
            "{handler}"
        );
    }
    assert_eq!(
        by(WorkQuery::UniqueName("later-sum".into())),
        with(&|i| i.unique_name.as_deref() == Some("later-sum"))
    );
    manager.stop();
}

#[derive(Debug)]
struct Switch(Arc<AtomicBool>);

impl Constraint for Switch {
    fn holds(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn the_upgraded_works_run_as_they_were_scheduled() {
    let copy = Copy::new("runs");
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0));
    let network = Arc::new(AtomicBool::new(false));
    let greets = Arc::new(AtomicU32::new(0));
    let g = Arc::clone(&greets);
    let manager = WorkManager::builder(WorkStore::open(copy.db()).unwrap())
        .clock(clock.clone())
        .workers(1)
        .constraint("network", Switch(Arc::clone(&network)))
        .handler_fn("greet", move |name: String, _: &WorkContext<'_>| {
            // The first run asks for a retry: the stored backoff decides when
            // the next comes.
            if g.fetch_add(1, Ordering::SeqCst) == 0 {
                WorkResult::Retry
            } else {
                WorkResult::Success(format!("hello, {name}"))
            }
        })
        .handler_fn("sync", |url: String, _: &WorkContext<'_>| {
            WorkResult::Success(url.len() as u64)
        })
        .handler_fn("square", |n: u32, _: &WorkContext<'_>| {
            WorkResult::Success(n * n)
        })
        .handler_fn("sum", |all: Vec<u32>, _: &WorkContext<'_>| {
            WorkResult::Success(all.iter().sum::<u32>())
        })
        .handler_fn("fail", |(): (), _: &WorkContext<'_>| {
            WorkResult::<()>::Failure("again".into())
        })
        .handler_fn("flaky", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    assert_eq!(manager.infos(&WorkQuery::All), expected());

    // 00:00:30: the retried work's backoff (exponential, 30 s) ends.
    clock.advance(Duration::from_secs(30));
    let flaky = manager.wait_finished(WorkId(10), T).unwrap();
    assert_eq!((flaky.state, flaky.run_attempts), (WorkState::Succeeded, 2));

    // 00:10: the periodic work's flex window opens; the next one opens an
    // interval (15 min) later.
    clock.advance(Duration::from_secs(570));
    let sync = manager.wait_for(WorkId(2), T, |i| i.periods == 1).unwrap();
    assert_eq!(sync.output::<u64>(), Some(Ok(24)));
    assert_eq!(sync.next_run_at, at(T0 + 1500));
    assert_eq!(sync.unique_name.as_deref(), Some("feed"));

    // 01:00: the greeting is due but waits on its stored constraint.
    clock.advance(Duration::from_secs(3000));
    manager.recheck();
    let still = manager.infos(&WorkQuery::Tag("ui".into()));
    assert_eq!(still[0].state, WorkState::Enqueued);
    assert_eq!(greets.load(Ordering::SeqCst), 0);
    network.store(true, Ordering::SeqCst);
    manager.recheck();
    // Its linear 10 s backoff after the first retry.
    let retried = manager.wait_for(WorkId(1), T, |i| i.retries == 1).unwrap();
    assert_eq!(retried.next_run_at, at(T0 + 3600 + 10));
    clock.advance(Duration::from_secs(10));
    let greet = manager.wait_finished(WorkId(1), T).unwrap();
    assert_eq!(greet.output::<String>(), Some(Ok("hello, world".into())));

    // 02:00: the delayed square runs, and the blocked sum gets its output
    // through the stored array-creating merger.
    clock.advance(Duration::from_secs(3590));
    let sum = manager.wait_finished(WorkId(7), T).unwrap();
    assert_eq!(sum.state, WorkState::Succeeded);
    assert_eq!(sum.output::<u32>(), Some(Ok(25)));

    // Finished work kept its results; ids are not reused.
    let old = manager.info(WorkId(5)).unwrap();
    assert_eq!(old.output::<u32>(), Some(Ok(25)));
    let failed = manager.info(WorkId(8)).unwrap();
    assert_eq!(failed.failure.as_deref(), Some("the disk is full"));
    let new = manager.enqueue(WorkRequest::once("flaky")).wait().unwrap();
    assert_eq!(new.ids(), [WorkId(11)]);
    manager.stop();
    manager.join(Duration::MAX);
    drop(manager);

    // Rows that changed were written in the current layout; the rest kept
    // theirs, and still read.
    let conn = rusqlite::Connection::open(copy.db()).unwrap();
    let layout = |id: i64| -> Option<i64> {
        conn.query_row("SELECT layout FROM works WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(layout(9), Some(2), "untouched");
    let current = layout(1).unwrap();
    assert!(current > 2, "rewritten in the current layout, {current}");
    assert_eq!(layout(11), Some(current));
    drop(conn);
    let store = WorkStore::open(copy.db()).unwrap();
    assert_eq!(store.unreadable().unwrap(), []);
    assert_eq!(store.works().unwrap().len(), 11);
}

#[test]
fn a_failed_migration_leaves_the_store_as_it_was() {
    let copy = Copy::new("failed");
    {
        // A column in the way: the step's ALTER TABLE fails.
        let conn = rusqlite::Connection::open(copy.db()).unwrap();
        conn.execute_batch("ALTER TABLE works ADD COLUMN layout TEXT")
            .unwrap();
    }
    let before = rows(&copy.db());
    let err = WorkStore::open(copy.db()).unwrap_err();
    match &err {
        StoreError::Migration { from, to, .. } => assert_eq!((*from, *to), (1, 4)),
        other => panic!("expected a migration error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("left as it was"), "{text}");
    assert!(text.contains("older build"), "{text}");
    assert_eq!(user_version(&copy.db()), 1);
    assert_eq!(rows(&copy.db()), before);
}

/// The steps run in one transaction: when the second (2 → 3) fails, the
/// first is undone too.
#[test]
fn a_failed_second_step_leaves_the_store_at_its_first_schema() {
    let copy = Copy::new("failed-second");
    {
        // A column in the way of step 2 → 3 only.
        let conn = rusqlite::Connection::open(copy.db()).unwrap();
        conn.execute_batch("ALTER TABLE works ADD COLUMN due TEXT")
            .unwrap();
    }
    let before = rows(&copy.db());
    match WorkStore::open(copy.db()).unwrap_err() {
        StoreError::Migration { from, to, .. } => assert_eq!((from, to), (2, 4)),
        other => panic!("expected a migration error, got {other:?}"),
    }
    assert_eq!(user_version(&copy.db()), 1);
    assert_eq!(rows(&copy.db()), before);
    let conn = rusqlite::Connection::open(copy.db()).unwrap();
    let layout: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('works') WHERE name = 'layout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(layout, 0, "step 1 → 2 was undone");
}

#[test]
fn a_row_no_layout_reads_is_kept_through_the_upgrade() {
    let copy = Copy::new("unreadable");
    let junk: &[u8] = b"\x01\x02 not a work";
    {
        let conn = rusqlite::Connection::open(copy.db()).unwrap();
        conn.execute("INSERT INTO works (id, record) VALUES (11, ?1)", [junk])
            .unwrap();
    }
    let store = WorkStore::open(copy.db()).unwrap();
    let bad = store.unreadable().unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].id, WorkId(11));
    assert_eq!(store.works().unwrap(), expected());
    drop(store);
    let conn = rusqlite::Connection::open(copy.db()).unwrap();
    let (kept, layout): (Vec<u8>, Option<i64>) = conn
        .query_row("SELECT record, layout FROM works WHERE id = 11", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((kept.as_slice(), layout), (junk, None));
}

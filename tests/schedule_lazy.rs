//! A manager holds only part of a large store in memory: the works that
//! are not enqueued, and the enqueued ones due first (a few thousand); the
//! rest stay in the store until their time comes. Everything the API
//! promises holds for the works it does not hold: queries by id, tag and
//! unique name find them, cancels reach them, unique-name policies see
//! them, watches start from them, and each runs once when it is due.
//!
//! Each test fills a file store with [`MANY`] delayed works (more than a
//! manager loads when it starts) plus a few due last, the ones the tests
//! look at, and starts a new manager on it. Schedules run on a
//! [`ManualClock`]; waits on other threads are conditions with timeouts.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::wait_until;
use isolates::schedule::*;
use parking_lot::Mutex;

const T: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// More enqueued works than a manager loads at its start (4,096).
const MANY: u32 = 5_000;

/// A directory unique to this process and test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-lazy-{}-{name}",
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

/// The inputs of the runs of handler `"count"`, in the order they ran.
type Ran = Arc<Mutex<Vec<u32>>>;

fn manager(path: &PathBuf, clock: &ManualClock, ran: &Ran) -> WorkManager {
    let ran = Arc::clone(ran);
    WorkManager::builder(WorkStore::open(path).expect("store opens"))
        .clock(clock.clone())
        .workers(2)
        .handler_fn("count", move |n: u32, _: &WorkContext<'_>| {
            ran.lock().push(n);
            WorkResult::Success(n)
        })
        .spawn()
        .expect("manager starts")
}

fn new_ids(op: Operation<Enqueued>) -> Vec<WorkId> {
    let mut op = op;
    match op.wait_timeout(T).expect("enqueue answered") {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("expected new work, got {other:?}"),
    }
}

/// The works due last, which the new manager does not load.
struct Far {
    /// Tagged "far".
    tagged: WorkId,
    /// Under the unique name "far-name".
    named: WorkId,
    /// Neither.
    plain: WorkId,
}

/// Fills a store with [`MANY`] works due within the next hours, then the
/// three [`Far`] works due in a day, and stops its manager.
fn fill(path: &PathBuf, clock: &ManualClock) -> Far {
    let ran = Ran::default();
    let m = manager(path, clock, &ran);
    let mut last = None;
    for n in 0..MANY {
        let delay = HOUR + Duration::from_secs(u64::from(n));
        last = Some(m.enqueue(WorkRequest::once("count").input(&n).initial_delay(delay)));
    }
    new_ids(last.expect("works were enqueued"));
    let far = |n: u32| WorkRequest::once("count").input(&n).initial_delay(DAY);
    let tagged = new_ids(m.enqueue(far(MANY).tag("far")))[0];
    let named = new_ids(m.enqueue_unique("far-name", ExistingWork::Keep, far(MANY + 1)))[0];
    let plain = new_ids(m.enqueue(far(MANY + 2)))[0];
    m.stop();
    assert!(m.join(Duration::from_secs(60)));
    assert!(ran.lock().is_empty(), "nothing was due");
    Far {
        tagged,
        named,
        plain,
    }
}

#[test]
fn queries_find_stored_works_the_manager_does_not_hold() {
    let dir = TempDir::new("queries");
    let clock = ManualClock::default();
    let far = fill(&dir.db(), &clock);
    let m = manager(&dir.db(), &clock, &Ran::default());

    let info = m.info(far.plain).expect("found by id");
    assert_eq!(info.state, WorkState::Enqueued);
    assert_eq!(info.next_run_at, Some(clock.now() + DAY));
    let tagged = m.infos(&WorkQuery::Tag("far".into()));
    assert_eq!(
        tagged.iter().map(|i| i.id).collect::<Vec<_>>(),
        [far.tagged]
    );
    let named = m.infos(&WorkQuery::UniqueName("far-name".into()));
    assert_eq!(named.iter().map(|i| i.id).collect::<Vec<_>>(), [far.named]);
    // The handler's name is a tag of every work.
    assert_eq!(
        m.infos(&WorkQuery::Tag("count".into())).len(),
        MANY as usize + 3
    );
    assert_eq!(m.infos(&WorkQuery::All).len(), MANY as usize + 3);

    // A watch starts from the stored work.
    let watch = m.watch(WorkQuery::Id(far.tagged));
    let first = watch.next_timeout(T).expect("a snapshot");
    assert_eq!((first.id, first.state), (far.tagged, WorkState::Enqueued));
    m.stop();
}

#[test]
fn cancels_reach_stored_works_the_manager_does_not_hold() {
    let dir = TempDir::new("cancel");
    let clock = ManualClock::default();
    let far = fill(&dir.db(), &clock);
    let m = manager(&dir.db(), &clock, &Ran::default());
    let watch = m.watch(WorkQuery::Id(far.plain));

    assert_eq!(m.cancel(WorkQuery::Tag("far".into())).wait(), Ok(1));
    assert_eq!(
        m.cancel(WorkQuery::UniqueName("far-name".into())).wait(),
        Ok(1)
    );
    assert_eq!(m.cancel(WorkQuery::Id(far.plain)).wait(), Ok(1));
    for id in [far.tagged, far.named, far.plain] {
        assert_eq!(m.info(id).expect("kept").state, WorkState::Cancelled);
    }
    let states: Vec<WorkState> = std::iter::from_fn(|| watch.next_timeout(T))
        .map(|i| i.state)
        .take_while(|s| *s != WorkState::Cancelled)
        .collect();
    assert_eq!(
        states,
        [WorkState::Enqueued],
        "watched from stored to cancelled"
    );
    // The rest is untouched.
    let enqueued = m
        .infos(&WorkQuery::All)
        .iter()
        .filter(|i| i.state == WorkState::Enqueued)
        .count();
    assert_eq!(enqueued, MANY as usize);
    // The handler's name still finds every work, the cancelled ones (no
    // longer in the due index) too, each once.
    let by_handler = m.infos(&WorkQuery::Tag("count".into()));
    assert_eq!(by_handler.len(), MANY as usize + 3);
    let cancelled: Vec<WorkId> = by_handler
        .iter()
        .filter(|i| i.state == WorkState::Cancelled)
        .map(|i| i.id)
        .collect();
    assert_eq!(cancelled, [far.tagged, far.named, far.plain]);
    m.stop();
    assert!(m.join(Duration::from_secs(60)));
    // And after a restart, from the store.
    let m = manager(&dir.db(), &clock, &Ran::default());
    assert_eq!(
        m.infos(&WorkQuery::Tag("count".into())).len(),
        MANY as usize + 3
    );
    assert_eq!(
        m.cancel(WorkQuery::Tag("count".into())).wait(),
        Ok(MANY as usize)
    );
    m.stop();
}

#[test]
fn unique_name_policies_see_stored_works_the_manager_does_not_hold() {
    let dir = TempDir::new("unique");
    let clock = ManualClock::default();
    let far = fill(&dir.db(), &clock);
    let m = manager(&dir.db(), &clock, &Ran::default());
    let again = || WorkRequest::once("count").input(&0u32);

    let mut kept = m.enqueue_unique("far-name", ExistingWork::Keep, again());
    assert_eq!(
        kept.wait_timeout(T),
        Some(Ok(Enqueued::Kept(vec![far.named])))
    );
    let appended = new_ids(m.enqueue_unique("far-name", ExistingWork::Append, again()))[0];
    let after = m.info(appended).expect("stored");
    assert_eq!(after.state, WorkState::Blocked);
    assert_eq!(after.prerequisites, [far.named]);

    let replaced = new_ids(m.enqueue_unique("far-name", ExistingWork::Replace, again()))[0];
    assert_eq!(m.info(far.named), None, "replaced work is deleted");
    assert_eq!(m.info(appended), None, "and the work chained after it");
    let named = m.infos(&WorkQuery::UniqueName("far-name".into()));
    assert_eq!(named.iter().map(|i| i.id).collect::<Vec<_>>(), [replaced]);
    m.stop();
}

#[test]
fn stored_works_run_once_each_when_their_time_comes() {
    let dir = TempDir::new("run");
    let clock = ManualClock::default();
    let far = fill(&dir.db(), &clock);
    let ran = Ran::default();
    let m = manager(&dir.db(), &clock, &ran);
    clock.advance(DAY);
    let done = m
        .wait_finished(far.plain, Duration::from_secs(120))
        .expect("the last work ran");
    assert_eq!(done.state, WorkState::Succeeded);
    let all = MANY as usize + 3;
    assert!(
        wait_until(|| ran.lock().len() >= all, Duration::from_secs(120)),
        "{} of {all} ran",
        ran.lock().len()
    );
    // A last turn: nothing more runs.
    assert_eq!(m.cancel(WorkQuery::Tag("none".into())).wait(), Ok(0));
    let ran = ran.lock().clone();
    let once: HashSet<u32> = ran.iter().copied().collect();
    assert_eq!((ran.len(), once.len()), (all, all), "each ran once");
    assert!(
        m.infos(&WorkQuery::All)
            .iter()
            .all(|i| i.state == WorkState::Succeeded)
    );
    m.stop();
}

/// Tags are found through the store's index: a work updated in place is
/// found by its new tags only, and a replaced (deleted) one by none.
#[test]
fn tag_queries_follow_updates_and_deletes() {
    let clock = ManualClock::default();
    let ran = Ran::default();
    let m = {
        let ran = Arc::clone(&ran);
        WorkManager::builder(WorkStore::in_memory().unwrap())
            .clock(clock.clone())
            .handler_fn("count", move |n: u32, _: &WorkContext<'_>| {
                ran.lock().push(n);
                WorkResult::Success(n)
            })
            .spawn()
            .unwrap()
    };
    let tagged = |tag: &str| -> Vec<WorkId> {
        m.infos(&WorkQuery::Tag(tag.into()))
            .iter()
            .map(|i| i.id)
            .collect()
    };
    let req = |tag: &str| {
        WorkRequest::once("count")
            .input(&1u32)
            .tag(tag)
            .initial_delay(HOUR)
    };
    let id = new_ids(m.enqueue_unique("n", ExistingWork::Keep, req("old")))[0];
    assert_eq!(tagged("old"), [id]);
    let mut op = m.enqueue_unique("n", ExistingWork::Update, req("new"));
    assert_eq!(op.wait_timeout(T), Some(Ok(Enqueued::Updated(id))));
    assert_eq!(tagged("old"), []);
    assert_eq!(tagged("new"), [id]);
    assert_eq!(tagged("count"), [id], "the handler's name stays a tag");

    let next = new_ids(m.enqueue_unique("n", ExistingWork::Replace, req("newer")))[0];
    assert_eq!(tagged("new"), [], "the replaced work is deleted");
    assert_eq!(tagged("count"), [next]);
    m.stop();
}

//! Alarms (`WorkRequest::at`): work at a wall-clock time, not before it;
//! an alarm missed while no manager ran runs once on the next start, or is
//! skipped past its window (`MissedAlarm`), in the app and in a headless
//! run; its time survives a restart; requests that mix an alarm with a
//! delay, or a missed policy without an alarm, are refused.
//!
//! Schedules run on a [`ManualClock`] but one test on the real clock; every
//! wait on another thread is a condition with a 10 s timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use isolates::schedule::*;
use parking_lot::Mutex;

const T: Duration = Duration::from_secs(10);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-alarm-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
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

/// Every event sent before it was handled, and its turn written.
fn barrier(manager: &WorkManager) {
    let mut op = manager.cancel(WorkQuery::Tag("no such tag".into()));
    assert_eq!(op.wait_timeout(T), Some(Ok(0)));
}

fn id(manager: &WorkManager, work: impl Into<WorkChain>) -> Vec<WorkId> {
    manager.enqueue(work).wait().unwrap().ids().to_vec()
}

/// A manager whose `"ring"` handler notes the clock's time and its input.
fn ringing(
    store: WorkStore,
    clock: &ManualClock,
    rang: &Arc<Mutex<Vec<(String, SystemTime)>>>,
) -> WorkManager {
    let (rang, at) = (Arc::clone(rang), clock.clone());
    WorkManager::builder(store)
        .clock(clock.clone())
        .handler_fn("ring", move |text: String, _: &WorkContext<'_>| {
            rang.lock().push((text.clone(), at.now()));
            WorkResult::Success(text)
        })
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .unwrap()
}

#[test]
fn an_alarm_runs_at_its_time_not_before() {
    let clock = ManualClock::default();
    let rang = Arc::default();
    let manager = ringing(WorkStore::in_memory().unwrap(), &clock, &rang);
    let time = clock.now() + MIN;
    let alarm = id(&manager, WorkRequest::at("ring", time).input("tea"))[0];
    assert_eq!(manager.info(alarm).unwrap().next_run_at, Some(time));

    clock.advance(MIN - Duration::from_millis(1));
    barrier(&manager);
    assert_eq!(manager.info(alarm).unwrap().state, WorkState::Enqueued);
    assert!(rang.lock().is_empty());

    clock.advance(Duration::from_millis(1));
    let done = manager.wait_finished(alarm, T).unwrap();
    assert_eq!(done.state, WorkState::Succeeded);
    assert_eq!(*rang.lock(), [("tea".to_owned(), time)]);
    manager.stop();
    manager.join(Duration::MAX);
}

#[test]
fn an_alarm_on_the_system_clock_fires_at_its_time() {
    let fired = Arc::new(Mutex::new(None));
    let f = Arc::clone(&fired);
    let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
        .handler_fn("ring", move |(): (), _: &WorkContext<'_>| {
            *f.lock() = Some(SystemTime::now());
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let time = SystemTime::now() + Duration::from_millis(300);
    let alarm = id(&manager, WorkRequest::at("ring", time))[0];
    let done = manager.wait_finished(alarm, T).unwrap();
    assert_eq!(done.state, WorkState::Succeeded);
    let fired = fired.lock().unwrap();
    assert!(
        fired >= time,
        "it fired {:?} early",
        time.duration_since(fired)
    );
    manager.stop();
    manager.join(Duration::MAX);
}

#[test]
fn a_missed_alarm_runs_once_on_start_or_is_skipped_past_its_window() {
    let dir = TempDir::new("missed");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let rang = Arc::default();
    let time = clock.now() + MIN;
    let (once, skipped, within, after) = {
        let manager = ringing(WorkStore::open(&path).unwrap(), &clock, &rang);
        let once = id(&manager, WorkRequest::at("ring", time).input("once"))[0];
        let skip = WorkRequest::at("ring", time)
            .input("skip")
            .if_missed(MissedAlarm::SkipAfter(5 * MIN));
        let chain = id(
            &manager,
            WorkChain::new(skip).then(WorkRequest::once("noop")),
        );
        let within = WorkRequest::at("ring", time)
            .input("within")
            .if_missed(MissedAlarm::SkipAfter(2 * HOUR));
        let within = id(&manager, within)[0];
        manager.stop();
        manager.join(Duration::MAX);
        (once, chain[0], within, chain[1])
    };
    // The machine sleeps through the alarms' time; an hour later the app
    // starts again.
    clock.advance(HOUR);
    let started = clock.now();
    let manager = ringing(WorkStore::open(&path).unwrap(), &clock, &rang);
    let done = manager.wait_finished(once, T).unwrap();
    assert_eq!((done.state, done.run_attempts), (WorkState::Succeeded, 1));
    assert_eq!(
        manager.wait_finished(within, T).unwrap().state,
        WorkState::Succeeded
    );
    let skip = manager.wait_finished(skipped, T).unwrap();
    assert_eq!(skip.state, WorkState::Cancelled);
    let why = skip.failure.unwrap();
    assert!(why.contains("missed") && why.contains("SkipAfter"), "{why}");
    assert_eq!(skip.run_attempts, 0, "never ran");
    assert_eq!(
        manager.wait_finished(after, T).unwrap().state,
        WorkState::Cancelled
    );

    // Both ran on start, and once each: later time brings nothing more.
    assert!(rang.lock().iter().all(|(_, at)| *at == started), "{rang:?}");
    clock.advance(HOUR);
    barrier(&manager);
    let mut texts: Vec<String> = rang.lock().iter().map(|(t, _)| t.clone()).collect();
    texts.sort();
    assert_eq!(texts, ["once", "within"]);
    manager.stop();
    manager.join(Duration::MAX);
}

#[test]
fn a_missed_alarm_runs_once_in_a_headless_run() {
    let dir = TempDir::new("headless");
    let path = dir.path("works.db");
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        move |text: String, _: &WorkContext<'_>| {
            runs.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(text)
        }
    };
    let half_an_hour_ago = SystemTime::now() - HOUR / 2;
    let (once, skipped) = {
        let an_hour_ago = ManualClock::new(SystemTime::now() - HOUR);
        let app = WorkManager::builder(WorkStore::open(&path).unwrap())
            .clock(an_hour_ago)
            .handler_fn("ring", handler.clone())
            .spawn()
            .unwrap();
        let once = id(
            &app,
            WorkRequest::at("ring", half_an_hour_ago).input("once"),
        )[0];
        let skip = WorkRequest::at("ring", half_an_hour_ago)
            .input("skip")
            .if_missed(MissedAlarm::SkipAfter(MIN));
        let skipped = id(&app, skip)[0];
        app.stop();
        app.join(Duration::MAX);
        (once, skipped)
    };
    let run = WorkManager::builder(WorkStore::open(&path).unwrap())
        .handler_fn("ring", handler.clone())
        .run_due(Duration::from_secs(60))
        .unwrap();
    assert!(run.drained);
    assert_eq!(run.ran.iter().map(|i| i.id).collect::<Vec<_>>(), [once]);
    assert_eq!(run.ran[0].output::<String>(), Some(Ok("once".into())));
    assert_eq!(run.next_due, None);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let works = WorkStore::open(&path).unwrap().works().unwrap();
    let skip = works.iter().find(|i| i.id == skipped).unwrap();
    assert_eq!(skip.state, WorkState::Cancelled);

    // A second headless run has nothing to do.
    let run = WorkManager::builder(WorkStore::open(&path).unwrap())
        .handler_fn("ring", handler)
        .run_due(Duration::from_secs(60))
        .unwrap();
    assert!(run.ran.is_empty());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn an_alarm_keeps_its_time_across_a_restart() {
    let dir = TempDir::new("restart");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let rang = Arc::default();
    let time = clock.now() + 90 * MIN;
    let alarm = {
        let manager = ringing(WorkStore::open(&path).unwrap(), &clock, &rang);
        let alarm = WorkRequest::at("ring", time)
            .input("later")
            .if_missed(MissedAlarm::SkipAfter(MIN));
        let alarm = id(&manager, alarm)[0];
        manager.stop();
        manager.join(Duration::MAX);
        alarm
    };
    clock.advance(HOUR);
    let works = WorkStore::open(&path).unwrap().works().unwrap();
    assert_eq!(works[0].next_run_at, Some(time));
    let manager = ringing(WorkStore::open(&path).unwrap(), &clock, &rang);
    clock.advance(30 * MIN);
    let done = manager.wait_finished(alarm, T).unwrap();
    assert_eq!(done.state, WorkState::Succeeded, "on time: not missed");
    assert_eq!(*rang.lock(), [("later".to_owned(), time)]);
    manager.stop();
    manager.join(Duration::MAX);
}

#[test]
fn alarms_in_chains_updates_and_the_past() {
    let clock = ManualClock::default();
    let rang = Arc::default();
    let manager = ringing(WorkStore::in_memory().unwrap(), &clock, &rang);
    let start = clock.now();

    // Set in the past: it rings at once, even with no window to be late in.
    let past = WorkRequest::at("ring", start - HOUR)
        .input("past")
        .if_missed(MissedAlarm::SkipAfter(Duration::ZERO));
    let past = id(&manager, past)[0];
    assert_eq!(
        manager.wait_finished(past, T).unwrap().state,
        WorkState::Succeeded
    );

    // After a prerequisite: at its time, the prerequisite done before.
    let chain = WorkChain::new(WorkRequest::once("noop"))
        .then(WorkRequest::at("ring", start + HOUR).input("chained"));
    let chained = id(&manager, chain)[1];
    assert_eq!(
        manager
            .wait_for(chained, T, |i| i.state == WorkState::Enqueued)
            .unwrap()
            .next_run_at,
        Some(start + HOUR)
    );

    // Update moves an alarm to its new time.
    let op = manager.enqueue_unique(
        "wake",
        ExistingWork::Update,
        WorkRequest::at("ring", start + HOUR).input("wake"),
    );
    let wake = op.wait().unwrap().ids()[0];
    let moved = manager.enqueue_unique(
        "wake",
        ExistingWork::Update,
        WorkRequest::at("ring", start + 2 * HOUR).input("wake"),
    );
    assert_eq!(moved.wait().unwrap().ids(), [wake]);
    assert_eq!(
        manager.info(wake).unwrap().next_run_at,
        Some(start + 2 * HOUR)
    );
    manager.stop();
    manager.join(Duration::MAX);
}

#[test]
fn alarm_requests_that_make_no_sense_are_refused() {
    let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
        .handler_fn(
            "ring",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .unwrap();
    let not_an_alarm = WorkRequest::once("ring").if_missed(MissedAlarm::RunOnce);
    match manager.enqueue(not_an_alarm).wait() {
        Err(WorkError::Invalid(why)) => assert!(why.contains("WorkRequest::at"), "{why}"),
        other => panic!("{other:?}"),
    }
    let delayed = WorkRequest::at("ring", SystemTime::now()).initial_delay(MIN);
    match manager.enqueue(delayed).wait() {
        Err(WorkError::Invalid(why)) => assert!(why.contains("initial delay"), "{why}"),
        other => panic!("{other:?}"),
    }
    manager.stop();
    manager.join(Duration::MAX);
}

//! Runs handed to the worker pool ahead, waiting in its queue behind busy
//! workers: their work is `Enqueued` until the handler starts, a cancel or
//! a replace takes them back before they run, and their time limit counts
//! from when the handler starts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::wait_until;
use isolates::schedule::*;

const LONG: Duration = Duration::from_secs(10);

/// A flag a handler waits on (10 s at most), opened by the test.
#[derive(Default)]
struct Gate(AtomicBool);

impl Gate {
    fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wait(&self) {
        wait_until(|| self.0.load(Ordering::SeqCst), LONG);
    }
}

/// A constraint the test turns on and off (on at first).
#[derive(Debug)]
struct Flag(AtomicBool);

impl Constraint for Flag {
    fn holds(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn flag() -> Arc<Flag> {
    Arc::new(Flag(AtomicBool::new(true)))
}

/// What a test drives: the gate `block` waits on, the count of `count`'s
/// runs, the manager, and whether a `block` run has started.
type Setup = (Arc<Gate>, Arc<AtomicUsize>, WorkManager, Arc<AtomicBool>);

/// One worker: `block` holds it until the gate opens (and says it
/// started), `count` counts its runs; constraint `flag` holds.
fn manager() -> Setup {
    with_flag(&flag())
}

/// As [`manager`], with constraint `flag` as `flag` says.
fn with_flag(flag: &Arc<Flag>) -> Setup {
    let (gate, runs) = (Arc::new(Gate::default()), Arc::new(AtomicUsize::new(0)));
    let (g, r) = (Arc::clone(&gate), Arc::clone(&runs));
    let blocking = Arc::new(AtomicBool::new(false));
    let b = Arc::clone(&blocking);
    let m = WorkManager::builder(WorkStore::in_memory().expect("store"))
        .workers(1)
        .constraint("flag", Arc::clone(flag))
        .constraint_poll(Duration::from_millis(20))
        .handler_fn("block", move |(): (), _: &WorkContext<'_>| {
            b.store(true, Ordering::SeqCst);
            g.wait();
            WorkResult::Success(())
        })
        .handler_fn("count", move |(): (), _: &WorkContext<'_>| {
            r.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(())
        })
        .spawn()
        .expect("manager");
    (gate, runs, m, blocking)
}

/// Stops the manager and waits for it.
fn stop(m: WorkManager) {
    m.stop();
    m.join(Duration::MAX);
}

fn new_id(m: &WorkManager, request: WorkRequest) -> WorkId {
    m.enqueue(request).wait().expect("enqueued").ids()[0]
}

/// Returns once the scheduler has handled everything sent before.
fn sync(m: &WorkManager) {
    assert_eq!(m.cancel(WorkQuery::Tag("none".into())).wait(), Ok(0));
}

/// Blocks the one worker with a `block` run, and returns its id once its
/// handler runs.
fn block(m: &WorkManager, blocking: &AtomicBool) -> WorkId {
    let id = new_id(m, WorkRequest::once("block").time_limit(LONG * 2));
    assert!(wait_until(|| blocking.load(Ordering::SeqCst), LONG));
    let running = m.wait_for(id, LONG, |i| i.state == WorkState::Running);
    assert!(running.is_some(), "the blocker is running");
    id
}

#[test]
fn a_queued_run_is_enqueued_until_its_handler_starts() {
    let (gate, runs, m, blocking) = manager();
    let blocker = block(&m, &blocking);
    let id = new_id(&m, WorkRequest::once("count"));
    let watch = m.watch(WorkQuery::Id(id));
    sync(&m);
    let queued = m.info(id).expect("known");
    assert_eq!(
        queued.state,
        WorkState::Enqueued,
        "waits behind the busy worker"
    );
    assert_eq!(queued.run_attempts, 0);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    gate.open();
    let done = m.wait_finished(id, LONG).expect("finishes");
    assert_eq!(done.state, WorkState::Succeeded);
    assert_eq!(done.run_attempts, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let mut states = Vec::new();
    while let Some(i) = watch.next_timeout(Duration::from_millis(100)) {
        states.push(i.state);
    }
    assert_eq!(states.last(), Some(&WorkState::Succeeded), "{states:?}");
    assert_eq!(
        states
            .iter()
            .filter(|&&s| s == WorkState::Succeeded)
            .count(),
        1,
        "{states:?}"
    );
    assert!(m.wait_finished(blocker, LONG).is_some());
    stop(m);
}

#[test]
fn a_queued_run_cancelled_never_runs_and_is_cancelled_once() {
    let (gate, runs, m, blocking) = manager();
    let blocker = block(&m, &blocking);
    let id = new_id(&m, WorkRequest::once("count"));
    let watch = m.watch(WorkQuery::Id(id));
    sync(&m);
    assert_eq!(m.cancel(WorkQuery::Id(id)).wait(), Ok(1));
    assert_eq!(m.cancel(WorkQuery::Id(id)).wait(), Ok(0), "cancelled once");
    gate.open();
    assert!(m.wait_finished(blocker, LONG).is_some());
    // The worker is free: a later work runs, the cancelled one did not.
    let later = new_id(&m, WorkRequest::once("count"));
    assert!(m.wait_finished(later, LONG).is_some());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the later work ran");
    let info = m.info(id).expect("known");
    assert_eq!(info.state, WorkState::Cancelled);
    assert_eq!(info.run_attempts, 0);
    let mut states = Vec::new();
    while let Some(i) = watch.next_timeout(Duration::from_millis(100)) {
        states.push(i.state);
    }
    assert!(!states.contains(&WorkState::Running), "{states:?}");
    assert_eq!(
        states
            .iter()
            .filter(|&&s| s == WorkState::Cancelled)
            .count(),
        1,
        "{states:?}"
    );
    stop(m);
}

#[test]
fn a_queued_run_replaced_under_its_unique_name_never_runs() {
    let (gate, runs, m, blocking) = manager();
    let blocker = block(&m, &blocking);
    let unique = || {
        m.enqueue_unique("n", ExistingWork::Replace, WorkRequest::once("count"))
            .wait()
            .expect("enqueued")
            .ids()[0]
    };
    let old = unique();
    sync(&m);
    let new = unique();
    assert_ne!(old, new);
    gate.open();
    assert!(m.wait_finished(blocker, LONG).is_some());
    let done = m.wait_finished(new, LONG).expect("the new work runs");
    assert_eq!(done.state, WorkState::Succeeded);
    sync(&m);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the replaced work never ran"
    );
    stop(m);
}

#[test]
fn a_queued_runs_time_limit_counts_from_its_start() {
    let (gate, runs, m, blocking) = manager();
    let blocker = block(&m, &blocking);
    let limit = Duration::from_millis(200);
    let id = new_id(&m, WorkRequest::once("count").time_limit(limit));
    sync(&m);
    // It waits in the queue well past its time limit (a condition on the
    // time itself: what is tested is how long it waited).
    let queued_at = Instant::now();
    assert!(!wait_until(
        || m.info(id).is_some_and(|i| i.state != WorkState::Enqueued),
        limit * 3
    ));
    assert!(queued_at.elapsed() >= limit * 3);
    gate.open();
    assert!(m.wait_finished(blocker, LONG).is_some());
    let done = m.wait_finished(id, LONG).expect("finishes");
    assert_eq!(done.state, WorkState::Succeeded, "{done:?}");
    assert_eq!(done.run_attempts, 1, "not timed out in the queue: {done:?}");
    assert_eq!(done.failure, None);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    stop(m);
}

#[test]
fn a_run_started_past_its_limit_still_times_out() {
    let (gate, runs, m, blocking) = manager();
    // The blocker itself, with a short limit, times out from its start.
    let id = new_id(
        &m,
        WorkRequest::once("block").time_limit(Duration::from_millis(100)),
    );
    assert!(wait_until(|| blocking.load(Ordering::SeqCst), LONG));
    let retried = m.wait_for(id, LONG, |i| {
        i.failure
            .as_deref()
            .is_some_and(|f| f.contains("time limit"))
    });
    assert!(retried.is_some(), "timed out: {:?}", m.info(id));
    gate.open();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    stop(m);
}

#[test]
fn a_queued_run_whose_constraints_stop_holding_waits_and_never_ran() {
    let flag = flag();
    let (gate, runs, m, blocking) = with_flag(&flag);
    let blocker = block(&m, &blocking);
    let id = new_id(&m, WorkRequest::once("count").constraint("flag"));
    sync(&m);
    flag.0.store(false, Ordering::SeqCst);
    // The scheduler looks at the constraints of the runs it handed out
    // every poll (20 ms): a few polls, then the worker is freed.
    let polled = Instant::now();
    wait_until(|| polled.elapsed() >= Duration::from_millis(200), LONG);
    gate.open();
    assert!(m.wait_finished(blocker, LONG).is_some());
    sync(&m);
    let waiting = m.info(id).expect("known");
    assert_eq!(waiting.state, WorkState::Enqueued, "{waiting:?}");
    assert_eq!(waiting.run_attempts, 0);
    assert_eq!(waiting.failure, None, "it never ran: {waiting:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    flag.0.store(true, Ordering::SeqCst);
    let done = m.wait_finished(id, LONG).expect("runs once the flag holds");
    assert_eq!(done.state, WorkState::Succeeded);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    stop(m);
}

#[test]
fn a_headless_budget_reports_only_runs_that_started() {
    let path =
        std::env::temp_dir().join(format!("isolates-queue-headless-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // The app never runs them: their constraint does not hold there (it
    // does in the headless run).
    let app = WorkManager::builder(WorkStore::open(&path).expect("store"))
        .handler_fn(
            "slow",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .constraint("held", Arc::new(Flag(AtomicBool::new(false))))
        .spawn()
        .expect("app");
    let ids: Vec<WorkId> = (0..4)
        .map(|_| new_id(&app, WorkRequest::once("slow").constraint("held")))
        .collect();
    app.stop();
    assert!(app.join(LONG));
    drop(app);
    // One worker that each run holds until it is told to stop: the first
    // run starts, the others wait in the queue when the budget ends.
    let run = WorkManager::builder(WorkStore::open(&path).expect("store"))
        .workers(1)
        .constraint("held", flag())
        .handler_fn("slow", |(): (), w: &WorkContext<'_>| {
            wait_until(|| w.is_stopped(), LONG);
            WorkResult::Success(())
        })
        .run_due(Duration::from_millis(300))
        .expect("headless run");
    assert!(!run.drained);
    assert_eq!(run.ran.len(), 1, "only the started run: {run:?}");
    assert_eq!(run.stopped, vec![run.ran[0].id]);
    assert!(ids.contains(&run.ran[0].id));
    assert_eq!(run.ran[0].state, WorkState::Enqueued);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

//! The work manager against SEMANTICS.md where a review found it wrong: an
//! UPDATE of a running work, a work that replaced itself losing its
//! constraints, and a dependent of a failed and a cancelled leaf.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::wait_until;
use isolates::schedule::*;

const LONG: Duration = Duration::from_secs(8);
const HOUR: Duration = Duration::from_secs(3600);

fn builder(clock: &ManualClock) -> WorkManagerBuilder {
    WorkManager::builder(WorkStore::in_memory().expect("store in memory"))
        .clock(clock.clone())
        .workers(2)
        .constraint_poll(Duration::from_millis(20))
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
}

fn new_id(op: Operation<Enqueued>) -> WorkId {
    match op.wait() {
        Ok(Enqueued::New(ids)) => {
            assert_eq!(ids.len(), 1);
            ids[0]
        }
        other => panic!("expected new work, got {other:?}"),
    }
}

fn sync(m: &WorkManager) {
    assert_eq!(
        m.cancel(WorkQuery::Tag("no work has this tag".into()))
            .wait(),
        Ok(0)
    );
}

fn wait_for(
    m: &WorkManager,
    id: WorkId,
    what: &str,
    cond: impl FnMut(&WorkInfo) -> bool,
) -> WorkInfo {
    m.wait_for(id, LONG, cond)
        .unwrap_or_else(|| panic!("{id} never {what}: {:?}", m.info(id)))
}

#[derive(Default)]
struct Gate(AtomicBool);

impl Gate {
    fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn wait(&self) -> bool {
        wait_until(|| self.is_open(), LONG)
    }
}

#[derive(Debug, Default)]
struct Flag(AtomicBool);

impl Constraint for Flag {
    fn holds(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// SEMANTICS: "UPDATE changes the request in place without cancelling a
/// running one"; ExistingWork::Update docs: "without cancelling a run in
/// progress: the change applies from its next run".
#[test]
fn update_adding_an_unmet_constraint_does_not_stop_the_running_run() {
    let clock = ManualClock::default();
    let power = Arc::new(Flag(AtomicBool::new(false)));
    let (started, release) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
    let (st, rl) = (Arc::clone(&started), Arc::clone(&release));
    let m = builder(&clock)
        .constraint("power", Arc::clone(&power))
        .handler_fn("long", move |(): (), w: &WorkContext<'_>| {
            st.open();
            wait_until(|| rl.is_open() || w.is_stopped(), LONG);
            WorkResult::Success(w.is_stopped())
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue_unique("u", ExistingWork::Keep, WorkRequest::once("long")));
    assert!(started.wait());
    wait_for(&m, id, "ran", |i| i.state == WorkState::Running);
    let r = m
        .enqueue_unique(
            "u",
            ExistingWork::Update,
            WorkRequest::once("long").constraint("power"),
        )
        .wait();
    assert_eq!(r, Ok(Enqueued::Updated(id)));
    for _ in 0..3 {
        m.recheck();
        sync(&m);
    }
    release.open();
    let i = m
        .wait_for(id, Duration::from_secs(3), |i| i.state.is_finished())
        .unwrap_or_else(|| {
            panic!(
                "the running run was stopped by the update: {:?}",
                m.info(id)
            )
        });
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(
        i.output::<bool>(),
        Some(Ok(false)),
        "the run was told to stop"
    );
    assert_eq!(i.run_attempts, 1);
    m.stop();
    m.join(Duration::MAX);
}

/// ExistingWork::Replace docs: a work that enqueues its own replacement
/// "loses the name, finishes its run, and is then cancelled". A run of it
/// stopped because its constraints stopped holding has ended: the replaced
/// work must not run again beside its replacement.
#[test]
fn a_self_replaced_work_whose_run_loses_its_constraints_does_not_run_again() {
    let clock = ManualClock::default();
    let power = Arc::new(Flag(AtomicBool::new(true)));
    let slot: Arc<OnceLock<WorkManager>> = Arc::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(Gate::default());
    let (sl, pw, rn, sp) = (
        Arc::clone(&slot),
        Arc::clone(&power),
        Arc::clone(&runs),
        Arc::clone(&stopped),
    );
    let m = builder(&clock)
        .constraint("power", Arc::clone(&power))
        .handler_fn("renew", move |(): (), w: &WorkContext<'_>| {
            if rn.fetch_add(1, Ordering::SeqCst) > 0 {
                return WorkResult::Success(2u32);
            }
            let m = sl.get().expect("the manager is set");
            let next = WorkRequest::once("noop").initial_delay(HOUR);
            m.enqueue_unique("renew", ExistingWork::Replace, next)
                .wait()
                .expect("replaced");
            pw.0.store(false, Ordering::SeqCst);
            m.recheck();
            if wait_until(|| w.is_stopped(), LONG) {
                sp.open();
            }
            WorkResult::Success(1u32)
        })
        .spawn()
        .unwrap();
    assert!(slot.set(m.clone()).is_ok());
    let first = new_id(m.enqueue_unique(
        "renew",
        ExistingWork::Replace,
        WorkRequest::once("renew").constraint("power"),
    ));
    assert!(stopped.wait(), "the run was never told to stop");
    sync(&m);
    power.0.store(true, Ordering::SeqCst);
    m.recheck();
    sync(&m);
    let i = wait_for(&m, first, "finished", |i| i.state.is_finished());
    assert_eq!(
        (i.state, runs.load(Ordering::SeqCst)),
        (WorkState::Cancelled, 1),
        "the replaced work ran again: {i:?}"
    );
    m.stop();
    m.join(Duration::MAX);
}

/// Android's EnqueueRunnable: work appended after leaves of which one
/// FAILED and one was CANCELLED is FAILED (a failed prerequisite is looked
/// at first: `if (hasFailedPrerequisites) FAILED else if (hasCancelled...)
/// CANCELLED`).
#[test]
fn append_after_a_failed_and_a_cancelled_leaf_fails() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .handler_fn("fail", |(): (), _: &WorkContext<'_>| {
            WorkResult::<()>::Failure("no".into())
        })
        .spawn()
        .unwrap();
    let ids = match m
        .enqueue_unique(
            "n",
            ExistingWork::Append,
            WorkChain::all([
                WorkRequest::once("fail"),
                WorkRequest::once("noop").initial_delay(HOUR),
            ]),
        )
        .wait()
    {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("{other:?}"),
    };
    let f = wait_for(&m, ids[0], "finished", |i| i.state.is_finished());
    assert_eq!(f.state, WorkState::Failed);
    assert_eq!(m.cancel(WorkQuery::Id(ids[1])).wait(), Ok(1));
    let next = new_id(m.enqueue_unique("n", ExistingWork::Append, WorkRequest::once("noop")));
    let i = wait_for(&m, next, "finished", |i| i.state.is_finished());
    assert_eq!(i.state, WorkState::Failed, "{i:?}");
    m.stop();
    m.join(Duration::MAX);
}

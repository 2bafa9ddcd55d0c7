//! Behaviours users of Dart isolates and Android WorkManager expect, one
//! test each, named after the behaviour (issue 16). Where we chose to
//! differ, the test asserts our choice; README's "Differences from Dart and
//! WorkManager" lists them with the reasons.
//!
//! Work manager tests run on a [`ManualClock`]; every test waits on
//! conditions with a timeout, never on sleeps.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wait_until;
use isolates::Backoff;
use isolates::schedule::*;

/// How long any condition may take to come true.
const LONG: Duration = Duration::from_secs(10);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

// ---- helpers ---------------------------------------------------------------

/// A manager on `clock` with two workers, a fast constraint poll, and the
/// handlers `noop`, `square` (u32 → u32), `show` (u32 → String) and `sum`
/// (Vec<u32> → u32).
fn builder(clock: &ManualClock) -> WorkManagerBuilder {
    WorkManager::builder(WorkStore::in_memory().expect("store in memory"))
        .clock(clock.clone())
        .workers(2)
        .constraint_poll(Duration::from_millis(20))
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .handler_fn("square", |n: u32, _: &WorkContext<'_>| {
            WorkResult::Success(n * n)
        })
        .handler_fn("show", |n: u32, _: &WorkContext<'_>| {
            WorkResult::Success(format!("<{n}>"))
        })
        .handler_fn("sum", |all: Vec<u32>, _: &WorkContext<'_>| {
            WorkResult::Success(all.iter().sum::<u32>())
        })
}

fn new_ids(op: Operation<Enqueued>) -> Vec<WorkId> {
    match op.wait() {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("expected new work, got {other:?}"),
    }
}

fn new_id(op: Operation<Enqueued>) -> WorkId {
    let ids = new_ids(op);
    assert_eq!(ids.len(), 1, "one work: {ids:?}");
    ids[0]
}

/// Returns once the scheduler has handled everything sent before, started
/// what was due and stored it.
fn sync(m: &WorkManager) {
    assert_eq!(
        m.cancel(WorkQuery::Tag("no work has this tag".into()))
            .wait(),
        Ok(0)
    );
}

fn info(m: &WorkManager, id: WorkId) -> WorkInfo {
    m.info(id).unwrap_or_else(|| panic!("{id} is not known"))
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

fn finished(m: &WorkManager, id: WorkId) -> WorkInfo {
    m.wait_finished(id, LONG)
        .unwrap_or_else(|| panic!("{id} never finished: {:?}", m.info(id)))
}

/// A flag a handler waits on (10 s at most), opened by the test.
#[derive(Default)]
struct Gate(AtomicBool);

impl Gate {
    fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wait(&self) -> bool {
        wait_until(|| self.0.load(Ordering::SeqCst), LONG)
    }
}

/// A constraint the test turns on and off.
#[derive(Debug, Default)]
struct Flag(AtomicBool);

impl Constraint for Flag {
    fn holds(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

// ---- 1. a constraint lost during a run -------------------------------------

#[test]
fn a_run_whose_constraints_stop_holding_is_stopped_and_enqueued_again() {
    let clock = ManualClock::default();
    let power = Arc::new(Flag(AtomicBool::new(true)));
    let (started, saw_stop) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
    let (st, s) = (Arc::clone(&started), Arc::clone(&saw_stop));
    let m = builder(&clock)
        .constraint("power", Arc::clone(&power))
        .handler_fn("long", move |(): (), w: &WorkContext<'_>| {
            if w.attempt() == 1 {
                // Works until told to stop; the output of a stopped run is
                // ignored.
                st.open();
                if wait_until(|| w.is_stopped(), LONG) {
                    s.open();
                }
                return WorkResult::Success(1u32);
            }
            WorkResult::Success(2u32)
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("long").constraint("power")));
    assert!(started.wait(), "the handler never started");

    power.0.store(false, Ordering::SeqCst);
    m.recheck();
    let i = wait_for(&m, id, "went back to enqueued", |i| {
        i.state == WorkState::Enqueued
    });
    assert!(saw_stop.wait(), "the handler was never told to stop");
    let why = i.failure.expect("the stop says why");
    assert!(why.contains("constraints"), "{why}");
    assert_eq!(i.retries, 0, "a lost constraint is not a retry");
    // It waits for the constraint, however long.
    clock.advance(HOUR);
    sync(&m);
    assert_eq!(info(&m, id).state, WorkState::Enqueued);

    power.0.store(true, Ordering::SeqCst);
    m.recheck();
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(i.output::<u32>(), Some(Ok(2)), "the second run's output");
    assert_eq!(i.run_attempts, 2);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn a_run_whose_constraints_keep_holding_is_not_stopped() {
    let clock = ManualClock::default();
    let power = Arc::new(Flag(AtomicBool::new(true)));
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let m = builder(&clock)
        .constraint("power", Arc::clone(&power))
        .handler_fn("long", move |(): (), w: &WorkContext<'_>| {
            g.wait();
            WorkResult::Success(w.is_stopped())
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("long").constraint("power")));
    wait_for(&m, id, "started", |i| i.state == WorkState::Running);
    // Several looks at the constraints while it runs.
    for _ in 0..3 {
        m.recheck();
        sync(&m);
    }
    gate.open();
    let i = finished(&m, id);
    assert_eq!(i.output::<bool>(), Some(Ok(false)), "it was told to stop");
    assert_eq!(i.run_attempts, 1);
    m.stop();
    m.join(Duration::MAX);
}

// ---- 2. the next period after a late run -----------------------------------

#[test]
fn a_late_periodic_run_pushes_the_next_run_one_interval_after_it() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let t0 = clock.now();
    let id = new_id(m.enqueue(WorkRequest::periodic("noop", HOUR)));
    let i = wait_for(&m, id, "ran its first period", |i| i.periods == 1);
    assert_eq!(i.next_run_at, Some(t0 + HOUR), "on time: the next interval");

    // Late: it runs at +10h30m; Android runs it next at +11h30m.
    clock.advance(HOUR * 10 + MINUTE * 30);
    let i = wait_for(&m, id, "ran late", |i| i.periods == 2);
    assert_eq!(i.next_run_at, Some(t0 + HOUR * 11 + MINUTE * 30));
    sync(&m);
    assert_eq!(info(&m, id).periods, 2, "nothing ran before the interval");

    // On time from there: one interval on.
    clock.advance(HOUR);
    let i = wait_for(&m, id, "ran on time", |i| i.periods == 3);
    assert_eq!(i.next_run_at, Some(t0 + HOUR * 12 + MINUTE * 30));
    m.stop();
    m.join(Duration::MAX);
}

// ---- 3. cancelling a finished work -----------------------------------------

#[test]
fn cancelling_a_finished_work_cancels_its_unfinished_dependents() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("noop"))
        .then(WorkRequest::once("noop").initial_delay(HOUR))
        .then(WorkRequest::once("noop"));
    let ids = new_ids(m.enqueue(chain));
    let [a, b, c] = ids[..] else {
        panic!("three works: {ids:?}")
    };
    assert_eq!(finished(&m, a).state, WorkState::Succeeded);
    wait_for(&m, b, "was unblocked", |i| i.state == WorkState::Enqueued);
    assert_eq!(info(&m, c).state, WorkState::Blocked);

    assert_eq!(m.cancel(WorkQuery::Id(a)).wait(), Ok(2));
    assert_eq!(
        info(&m, a).state,
        WorkState::Succeeded,
        "finished stays finished"
    );
    assert_eq!(info(&m, b).state, WorkState::Cancelled);
    assert_eq!(info(&m, c).state, WorkState::Cancelled);
    clock.advance(HOUR);
    sync(&m);
    assert_eq!(info(&m, b).run_attempts, 0, "a cancelled dependent ran");
    m.stop();
    m.join(Duration::MAX);
}

// ---- 4. superseded work is deleted -----------------------------------------

#[test]
fn replace_deletes_the_old_work_after_its_watchers_see_it_cancelled() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let old = new_id(m.enqueue_unique(
        "sync",
        ExistingWork::Replace,
        WorkRequest::once("noop").initial_delay(HOUR),
    ));
    let watch = m.watch(WorkQuery::Id(old));
    let first = watch.next_timeout(LONG).expect("a snapshot");
    assert_eq!(first.state, WorkState::Enqueued);

    let new = new_id(m.enqueue_unique("sync", ExistingWork::Replace, WorkRequest::once("noop")));
    let last = watch.next_timeout(LONG).expect("the cancel");
    assert_eq!((last.id, last.state), (old, WorkState::Cancelled));
    assert_eq!(m.info(old), None, "deleted");
    finished(&m, new);
    let all: Vec<WorkId> = m.infos(&WorkQuery::All).iter().map(|i| i.id).collect();
    assert_eq!(all, [new]);
    assert!(watch.try_next().is_none(), "nothing after the cancel");
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn keep_and_append_or_replace_over_finished_work_delete_it() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .handler_fn("fail", |(): (), _: &WorkContext<'_>| -> WorkResult<()> {
            WorkResult::Failure("no".into())
        })
        .spawn()
        .unwrap();
    let done = new_id(m.enqueue_unique("k", ExistingWork::Keep, WorkRequest::once("noop")));
    finished(&m, done);
    let fresh = new_id(m.enqueue_unique("k", ExistingWork::Keep, WorkRequest::once("noop")));
    assert_ne!(fresh, done);
    assert_eq!(m.info(done), None, "the finished work was deleted");

    let failed = new_id(m.enqueue_unique(
        "a",
        ExistingWork::AppendOrReplace,
        WorkRequest::once("fail"),
    ));
    assert_eq!(finished(&m, failed).state, WorkState::Failed);
    let again = new_id(m.enqueue_unique(
        "a",
        ExistingWork::AppendOrReplace,
        WorkRequest::once("noop"),
    ));
    assert_eq!(m.info(failed), None, "the failed work was deleted");
    assert!(info(&m, again).prerequisites.is_empty());
    m.stop();
    m.join(Duration::MAX);
}

// ---- 5. fan-in merges outputs -----------------------------------------------

#[test]
fn fan_in_overwrites_by_default_and_creates_an_array_on_request() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let squares = || WorkChain::all([1u32, 2, 3].map(|n| WorkRequest::once("square").input(&n)));

    let ids = new_ids(m.enqueue(squares().then(WorkRequest::once("show"))));
    let show = finished(&m, ids[3]);
    assert_eq!(show.prerequisites, ids[..3]);
    assert_eq!(
        show.output::<String>(),
        Some(Ok("<9>".into())),
        "the last prerequisite's output overwrites the others"
    );

    let merged = WorkRequest::once("sum").input_merger(InputMerger::ArrayCreating);
    let ids = new_ids(m.enqueue(squares().then(merged)));
    let sum = finished(&m, ids[3]);
    assert_eq!(sum.output::<u32>(), Some(Ok(1 + 4 + 9)), "{sum:?}");

    // With one prerequisite, an array of one.
    let one = WorkChain::new(WorkRequest::once("square").input(&5u32))
        .then(WorkRequest::once("sum").input_merger(InputMerger::ArrayCreating));
    let ids = new_ids(m.enqueue(one));
    assert_eq!(finished(&m, ids[1]).output::<u32>(), Some(Ok(25)));
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn merged_outputs_over_the_data_limit_fail_the_dependent() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .data_limit(40)
        .handler_fn("bytes", |n: usize, _: &WorkContext<'_>| {
            WorkResult::Success(vec![7u8; n])
        })
        .handler_fn("count", |all: Vec<Vec<u8>>, _: &WorkContext<'_>| {
            WorkResult::Success(all.len())
        })
        .spawn()
        .unwrap();
    // Each output fits (about 31 bytes); the three together do not.
    let chain = WorkChain::all((0..3).map(|_| WorkRequest::once("bytes").input(&30usize)))
        .then(WorkRequest::once("count").input_merger(InputMerger::ArrayCreating));
    let ids = new_ids(m.enqueue(chain));
    let i = finished(&m, ids[3]);
    assert_eq!(i.state, WorkState::Failed);
    let why = i.failure.expect("a reason");
    assert!(why.contains("data limit"), "{why}");
    assert_eq!(i.run_attempts, 0, "it never ran");
    m.stop();
    m.join(Duration::MAX);
}

// ---- 6. attempts per period ------------------------------------------------

#[test]
fn periodic_run_attempts_start_at_one_each_period() {
    let clock = ManualClock::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let m = builder(&clock)
        .handler_fn("flaky", move |(): (), w: &WorkContext<'_>| {
            s.lock().unwrap().push(w.attempt());
            if w.attempt() == 1 {
                WorkResult::Retry
            } else {
                WorkResult::Success(())
            }
        })
        .spawn()
        .unwrap();
    let every = WorkRequest::periodic("flaky", HOUR).backoff(Backoff::linear(MINUTE));
    let id = new_id(m.enqueue(every));
    for period in 1..=3u64 {
        let i = wait_for(&m, id, "retried", |i| i.retries == 1);
        assert_eq!(i.run_attempts, 1, "period {period}: {i:?}");
        clock.advance(MINUTE);
        let i = wait_for(&m, id, "ended its period", |i| i.periods == period);
        assert_eq!(i.run_attempts, 0, "counted again from the next period");
        clock.advance(HOUR);
    }
    assert_eq!(*seen.lock().unwrap(), [1, 2, 1, 2, 1, 2]);
    m.stop();
    m.join(Duration::MAX);
}

// ---- 7. progress after the end ---------------------------------------------

#[test]
fn progress_is_cleared_when_a_run_ends() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let m = builder(&clock)
        .handler_fn("steps", move |(): (), w: &WorkContext<'_>| {
            w.set_progress(&50u32);
            g.wait();
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("steps")));
    let i = wait_for(&m, id, "reported progress", |i| i.progress.is_some());
    assert_eq!(i.state, WorkState::Running);
    assert_eq!(i.progress::<u32>(), Some(Ok(50)));
    gate.open();
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(i.progress, None);

    // So does a periodic work's at the end of each period.
    let id = new_id(m.enqueue(WorkRequest::periodic("steps", HOUR)));
    let i = wait_for(&m, id, "ran its first period", |i| i.periods == 1);
    assert_eq!((i.state, i.progress), (WorkState::Enqueued, None));
    m.stop();
    m.join(Duration::MAX);
}

// ---- 8. the implicit tag ---------------------------------------------------

#[test]
fn every_work_is_tagged_with_its_handler_name() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let later = |h: &str| WorkRequest::once(h).initial_delay(HOUR);
    let a = new_id(m.enqueue(later("noop").tag("ui")));
    let b = new_id(m.enqueue(later("noop").tag("noop")));
    let c = new_id(m.enqueue(later("square").input(&2u32)));
    assert_eq!(info(&m, a).tags, ["noop", "ui"]);
    assert_eq!(info(&m, b).tags, ["noop"], "not twice");
    assert_eq!(info(&m, c).tags, ["square"]);
    let noops: Vec<WorkId> = m
        .infos(&WorkQuery::Tag("noop".into()))
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(noops, [a, b]);
    assert_eq!(m.cancel(WorkQuery::Tag("noop".into())).wait(), Ok(2));
    assert_eq!(info(&m, c).state, WorkState::Enqueued);
    m.stop();
    m.join(Duration::MAX);
}

// ---- 9. empty chain stages -------------------------------------------------

#[test]
fn empty_chain_stages_are_skipped() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("square").input(&3u32))
        .then_all([])
        .then(WorkRequest::once("show"))
        .then_all([]);
    let ids = new_ids(m.enqueue(chain));
    let [a, b] = ids[..] else {
        panic!("two works: {ids:?}")
    };
    let i = finished(&m, b);
    assert_eq!(i.prerequisites, [a]);
    assert_eq!(i.output::<String>(), Some(Ok("<9>".into())));

    // An empty first stage too.
    let ids = new_ids(m.enqueue(WorkChain::all([]).then(WorkRequest::once("noop"))));
    assert_eq!(finished(&m, ids[0]).state, WorkState::Succeeded);

    // A chain with no work at all is refused.
    let none = m.enqueue(WorkChain::all([]).then_all([])).wait();
    assert!(matches!(none, Err(WorkError::Invalid(_))), "{none:?}");
    m.stop();
    m.join(Duration::MAX);
}

// ---- isolates ----------------------------------------------------------------

mod isolate {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use isolates::{
        AskError, Context, ExitReason, Isolate, IsolateBuilder, IsolateError, IsolateHandle,
        Priority, SendPort, port,
    };
    use serde::{Deserialize, Serialize};

    const T: Duration = Duration::from_secs(10);

    #[derive(Serialize, Deserialize)]
    enum Cmd {
        Echo(u32),
        Fail,
        /// Sends 1 to the port, exits, then would send 2.
        Exit(SendPort<u32>),
        /// As `Exit`, but catches the unwind and returns.
        ExitCaught(SendPort<u32>),
        /// Sets [`GLOBAL`].
        SetGlobal(u32),
    }

    /// Exits from `start` if asked.
    struct Probe;

    static GLOBAL: AtomicU32 = AtomicU32::new(0);

    impl Isolate for Probe {
        type Args = bool;
        type Message = Cmd;
        type Reply = u32;
        type Error = String;

        fn start(exit: bool, ctx: &mut Context<Self>) -> Result<Self, String> {
            if exit {
                ctx.exit();
            }
            Ok(Probe)
        }

        fn handle(&mut self, cmd: Cmd, ctx: &mut Context<Self>) -> Result<u32, String> {
            match cmd {
                Cmd::Echo(n) => Ok(n),
                Cmd::Fail => Err("failed on purpose".into()),
                Cmd::Exit(to) => {
                    let _ = to.send(1);
                    ctx.exit();
                    #[allow(unreachable_code)]
                    {
                        let _ = to.send(2);
                        Ok(2)
                    }
                }
                Cmd::ExitCaught(to) => {
                    let _ = to.send(1);
                    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        ctx.exit();
                    }));
                    let _ = to.send(if caught.is_err() { 2 } else { 3 });
                    Ok(2)
                }
                Cmd::SetGlobal(n) => {
                    GLOBAL.store(n, Ordering::SeqCst);
                    Ok(n)
                }
            }
        }
    }

    fn spawn_paused() -> (IsolateHandle<Probe>, isolates::PauseToken) {
        IsolateBuilder::new()
            .errors_are_fatal(false)
            .spawn_paused::<Probe>(false)
            .expect("spawn")
    }

    // ---- 10. the same port twice; removal ----------------------------------

    #[test]
    fn the_same_port_added_twice_gets_each_exit_and_error_once() {
        let (probe, token) = spawn_paused();
        let (exit_tx, exits) = port::unbounded::<ExitReason>();
        let (error_tx, errors) = port::unbounded::<IsolateError>();
        for _ in 0..2 {
            probe.add_exit_listener(exit_tx.clone());
        }
        for _ in 0..3 {
            probe.add_error_listener(error_tx.clone());
        }
        // Told last: once they have an event, the ports before them have it.
        let (last_exit_tx, last_exits) = port::unbounded::<ExitReason>();
        let (last_error_tx, last_errors) = port::unbounded::<IsolateError>();
        probe.add_exit_listener(last_exit_tx);
        probe.add_error_listener(last_error_tx);
        probe.resume(&token);

        for _ in 0..5 {
            assert!(matches!(
                probe.ask_timeout(Cmd::Fail, T),
                Err(AskError::Failed(_))
            ));
        }
        for n in 0..5 {
            let e = last_errors.recv_timeout(T).expect("an error");
            assert_eq!(e.message, "failed on purpose", "error {n}");
        }
        assert_eq!(errors.try_iter().count(), 5, "each error once");

        probe.kill(Priority::Immediate);
        assert_eq!(last_exits.recv_timeout(T), Ok(ExitReason::Killed));
        assert_eq!(exits.try_iter().collect::<Vec<_>>(), [ExitReason::Killed]);
    }

    #[test]
    fn removed_exit_and_error_listeners_get_nothing() {
        let (probe, token) = spawn_paused();
        let (exit_tx, exits) = port::unbounded::<ExitReason>();
        let (error_tx, errors) = port::unbounded::<IsolateError>();
        probe.add_exit_listener(exit_tx.clone());
        probe.add_exit_listener(exit_tx.clone());
        probe.add_error_listener(error_tx.clone());
        assert!(probe.remove_exit_listener(&exit_tx), "it was a listener");
        assert!(
            !probe.remove_exit_listener(&exit_tx),
            "added twice, held once"
        );
        assert!(probe.remove_error_listener(&error_tx));
        assert!(!probe.remove_error_listener(&error_tx));
        let (last_exit_tx, last_exits) = port::unbounded::<ExitReason>();
        let (last_error_tx, last_errors) = port::unbounded::<IsolateError>();
        probe.add_exit_listener(last_exit_tx);
        probe.add_error_listener(last_error_tx);
        probe.resume(&token);

        assert!(probe.ask_timeout(Cmd::Fail, T).is_err());
        assert!(last_errors.recv_timeout(T).is_ok());
        assert!(
            errors.try_recv().is_err(),
            "a removed error listener was told"
        );
        probe.kill(Priority::Immediate);
        assert_eq!(last_exits.recv_timeout(T), Ok(ExitReason::Killed));
        assert!(
            exits.try_recv().is_err(),
            "a removed exit listener was told"
        );
    }

    // ---- 11. an exit listener added after the exit -------------------------

    #[test]
    fn an_exit_listener_added_after_the_exit_gets_the_reason_at_once() {
        let (probe, token) = spawn_paused();
        probe.resume(&token);
        probe.kill(Priority::Immediate);
        assert_eq!(probe.join(T), Some(ExitReason::Killed));
        let (tx, exits) = port::unbounded::<ExitReason>();
        probe.add_exit_listener(tx);
        // Ours, unlike Dart (which sends nothing): the reason, at once.
        assert_eq!(exits.try_recv(), Ok(ExitReason::Killed));
        assert!(exits.try_recv().is_err(), "once");

        // An error listener added after the exit gets nothing.
        let (tx, errors) = port::unbounded::<IsolateError>();
        probe.add_error_listener(tx);
        assert!(errors.try_recv().is_err());
    }

    // ---- 12. an isolate ending itself at once ------------------------------

    #[test]
    fn exit_ends_the_isolate_at_once_and_the_handler_does_not_go_on() {
        let (probe, token) = spawn_paused();
        let (exit_tx, exits) = port::unbounded::<ExitReason>();
        let (error_tx, errors) = port::unbounded::<IsolateError>();
        probe.add_exit_listener(exit_tx);
        probe.add_error_listener(error_tx);
        probe.resume(&token);

        let (to, seen) = port::unbounded::<u32>();
        let mut exiting = probe.ask_pending(Cmd::Exit(to));
        let mut queued = probe.ask_pending(Cmd::Echo(7));
        assert_eq!(
            exiting.wait_timeout(T),
            Some(Err(AskError::Dead(ExitReason::Normal)))
        );
        assert_eq!(
            queued.wait_timeout(T),
            Some(Err(AskError::Dead(ExitReason::Normal))),
            "a queued message was handled"
        );
        assert_eq!(probe.join(T), Some(ExitReason::Normal));
        assert_eq!(exits.recv_timeout(T), Ok(ExitReason::Normal));
        assert_eq!(
            seen.try_iter().collect::<Vec<_>>(),
            [1],
            "the handler went on"
        );
        assert!(errors.try_recv().is_err(), "an exit is not an error");
    }

    #[test]
    fn exit_from_start_ends_the_isolate_normally() {
        let probe = IsolateBuilder::new().spawn::<Probe>(true).expect("spawn");
        assert_eq!(probe.join(T), Some(ExitReason::Normal));
    }

    #[test]
    fn exit_whose_unwind_is_caught_still_ends_the_isolate_after_the_handler() {
        let (probe, token) = spawn_paused();
        probe.resume(&token);
        let (to, seen) = port::unbounded::<u32>();
        assert_eq!(probe.ask_timeout(Cmd::ExitCaught(to), T), Ok(2));
        assert_eq!(probe.join(T), Some(ExitReason::Normal));
        assert_eq!(seen.try_iter().collect::<Vec<_>>(), [1, 2]);
    }

    // ---- 13. globals ---------------------------------------------------------

    #[test]
    fn statics_are_shared_with_the_spawner_unlike_dart_globals() {
        fn set(n: u32) -> u32 {
            GLOBAL.store(n, Ordering::SeqCst);
            n
        }
        // `run`: a static set on its thread is the caller's.
        assert_eq!(isolates::run(set, 41).wait(), Ok(41));
        assert_eq!(GLOBAL.load(Ordering::SeqCst), 41);
        // An isolate: the same.
        let (probe, token) = spawn_paused();
        probe.resume(&token);
        assert_eq!(probe.ask_timeout(Cmd::SetGlobal(42), T), Ok(42));
        assert_eq!(GLOBAL.load(Ordering::SeqCst), 42);
    }
}

// ---- stores written before these changes -------------------------------------

/// A backoff as stored rows hold it.
#[derive(serde::Serialize)]
struct StoredBackoff {
    exponential: bool,
    delay: Duration,
    max: Duration,
}

/// A request's default backoff, as stored: exponential from 30 s, at most
/// 5 h.
const DEFAULT_BACKOFF: StoredBackoff = StoredBackoff {
    exponential: true,
    delay: Duration::from_secs(30),
    max: Duration::from_secs(5 * 3600),
};

/// A row as the first store layout held it (before the input merger).
#[derive(serde::Serialize)]
struct RowV1 {
    id: u64,
    handler: String,
    state: WorkState,
    input: Option<Vec<u8>>,
    output: Option<Vec<u8>>,
    progress: Option<Vec<u8>>,
    tags: Vec<String>,
    unique: Option<String>,
    periodic: Option<(i64, i64)>,
    period_start: i64,
    initial_delay: i64,
    enqueued_at: i64,
    backoff: StoredBackoff,
    constraints: Vec<String>,
    time_limit: Option<Duration>,
    attempts: u32,
    retries: u32,
    periods: u64,
    next_run_at: i64,
    finished_at: Option<i64>,
    prerequisites: Vec<u64>,
    failure: Option<String>,
    retire: bool,
}

fn row_v1(id: u64, handler: &str, state: WorkState, prerequisites: Vec<u64>) -> RowV1 {
    RowV1 {
        id,
        handler: handler.into(),
        state,
        input: None,
        output: None,
        progress: None,
        tags: vec!["old".into()],
        unique: None,
        periodic: None,
        period_start: 0,
        initial_delay: 0,
        enqueued_at: 0,
        backoff: DEFAULT_BACKOFF,
        constraints: vec![],
        time_limit: None,
        attempts: 0,
        retries: 0,
        periods: 0,
        next_run_at: 0,
        finished_at: None,
        prerequisites,
        failure: None,
        retire: false,
    }
}

#[test]
fn works_stored_by_the_first_layout_load_tagged_and_merge_as_before() {
    use isolates::{Bincode, Codec};

    let path =
        std::env::temp_dir().join(format!("isolates-semantics-v1-{}.db", std::process::id()));
    let remove = |p: &std::path::Path| {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
        }
    };
    remove(&path);
    drop(WorkStore::open(&path).expect("a new store"));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let encode = |row: &RowV1| {
            let mut bytes = Vec::new();
            Bincode::new().encode(row, &mut bytes).unwrap();
            bytes
        };
        let mut rows = Vec::new();
        for (id, n) in [(1u64, 3u32), (2, 4)] {
            let mut row = row_v1(id, "square", WorkState::Succeeded, vec![]);
            let mut out = Vec::new();
            Bincode::new().encode(&n, &mut out).unwrap();
            row.output = Some(out);
            row.finished_at = Some(0);
            row.attempts = 1;
            rows.push(row);
        }
        rows.push(row_v1(3, "show", WorkState::Blocked, vec![1, 2]));
        for row in &rows {
            conn.execute(
                "INSERT INTO works (id, record) VALUES (?1, ?2)",
                rusqlite::params![row.id as i64, encode(row)],
            )
            .unwrap();
        }
    }

    let clock = ManualClock::default();
    let m = WorkManager::builder(WorkStore::open(&path).unwrap())
        .clock(clock.clone())
        .workers(2)
        .handler_fn("square", |n: u32, _: &WorkContext<'_>| {
            WorkResult::Success(n * n)
        })
        .handler_fn("show", |n: u32, _: &WorkContext<'_>| {
            WorkResult::Success(format!("<{n}>"))
        })
        .spawn()
        .unwrap();
    assert!(m.unreadable().is_empty(), "{:?}", m.unreadable());
    let i = finished(&m, WorkId(3));
    assert_eq!(i.output::<String>(), Some(Ok("<4>".into())), "{i:?}");
    assert_eq!(i.tags, ["show", "old"], "the implicit tag is added on load");
    assert_eq!(info(&m, WorkId(1)).tags, ["square", "old"]);
    m.stop();
    m.join(Duration::MAX);
    remove(&path);
}

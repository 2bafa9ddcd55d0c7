//! Behaviour of the work manager (`isolates::schedule`): states, delays,
//! periods, retries and backoff, chains, unique names, cancelling, time
//! limits, progress, watches, data limits, errors and constraints.
//!
//! Every test runs on a [`ManualClock`]: delays, periods and backoff are
//! exact and pass at once. Tests wait on conditions (10 s at most), never
//! on sleeps; "it did not run" is checked after a round trip through the
//! scheduler ([`sync`]), which answers only after it has dispatched with
//! the clock's current time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::wait_until;
use isolates::Backoff;
use isolates::schedule::*;

/// How long any condition may take to come true.
const LONG: Duration = Duration::from_secs(10);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A manager on `clock` with two workers, a fast constraint poll and a
/// `noop` handler.
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

/// A handler that counts its runs and succeeds.
fn counting(runs: &Arc<AtomicUsize>) -> impl Fn((), &WorkContext<'_>) -> WorkResult<()> + use<> {
    let runs = Arc::clone(runs);
    move |(): (), _: &WorkContext<'_>| {
        runs.fetch_add(1, Ordering::SeqCst);
        WorkResult::Success(())
    }
}

fn count(runs: &AtomicUsize) -> usize {
    runs.load(Ordering::SeqCst)
}

/// The id of a newly enqueued single work.
fn new_id(op: Operation<Enqueued>) -> WorkId {
    match op.wait() {
        Ok(Enqueued::New(ids)) => {
            assert_eq!(ids.len(), 1, "one work: {ids:?}");
            ids[0]
        }
        other => panic!("expected new work, got {other:?}"),
    }
}

/// The ids of a newly enqueued chain.
fn new_ids(op: Operation<Enqueued>) -> Vec<WorkId> {
    match op.wait() {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("expected new work, got {other:?}"),
    }
}

/// Returns once the scheduler has handled everything sent before this
/// call, started what was due by the clock's time, and stored it: a work
/// still `Enqueued` after it was not started.
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

/// Waits until `id` is stored in a state `cond` accepts.
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

/// How long after the clock's now `info` runs next.
fn due_in(clock: &ManualClock, info: &WorkInfo) -> Duration {
    let at = info.next_run_at.expect("enqueued work has a next run");
    at.duration_since(clock.now())
        .unwrap_or_else(|_| panic!("next run {at:?} is before now {:?}", clock.now()))
}

/// Advances the clock by `step` whenever `id` waits, until it finished (a
/// run that passed a short time limit on a loaded machine is run again).
fn advance_until_finished(
    m: &WorkManager,
    clock: &ManualClock,
    id: WorkId,
    step: Duration,
) -> WorkInfo {
    let mut last = None;
    let done = wait_until(
        || {
            let i = info(m, id);
            if i.state == WorkState::Enqueued {
                clock.advance(step);
            }
            let done = i.state.is_finished();
            last = Some(i);
            done
        },
        LONG,
    );
    assert!(done, "{id} never finished: {last:?}");
    last.expect("looked at least once")
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

    fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a handler that replaced itself saw: the enqueue's answer, and
/// whether it was told to stop.
type Renewal = Mutex<Option<(Result<Enqueued, WorkError>, bool)>>;

/// A constraint the test turns on and off.
#[derive(Debug, Default)]
struct Flag(AtomicBool);

impl Constraint for Flag {
    fn holds(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

// ---- one-off and delayed work ---------------------------------------------

#[test]
fn one_off_work_succeeds_with_its_output() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .handler_fn("double", |n: u32, _: &WorkContext<'_>| {
            WorkResult::Success(n * 2)
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("double").input(&21u32)));
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(i.output::<u32>(), Some(Ok(42)));
    assert_eq!(i.run_attempts, 1);
    assert_eq!(i.retries, 0);
    assert_eq!(i.failure, None);
    assert_eq!(i.next_run_at, None);
    assert_eq!(i.handler, "double");
    assert!(!i.periodic);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn initial_delay_waits_for_the_clock() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    let t0 = clock.now();
    let id = new_id(m.enqueue(WorkRequest::once("count").initial_delay(MINUTE)));
    let i = info(&m, id);
    assert_eq!(i.state, WorkState::Enqueued);
    assert_eq!(i.next_run_at, Some(t0 + MINUTE));

    sync(&m);
    assert_eq!(info(&m, id).state, WorkState::Enqueued);
    assert_eq!(count(&runs), 0);

    clock.advance(MINUTE - SECOND);
    sync(&m);
    assert_eq!(info(&m, id).state, WorkState::Enqueued);
    assert_eq!(count(&runs), 0);

    clock.advance(SECOND);
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(i.run_attempts, 1);
    assert_eq!(count(&runs), 1);
    m.stop();
    m.join(Duration::MAX);
}

// ---- periodic work ---------------------------------------------------------

#[test]
fn periodic_work_runs_once_per_interval() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .handler_fn("tick", counting(&runs))
        .spawn()
        .unwrap();
    let t0 = clock.now();
    let id = new_id(m.enqueue(WorkRequest::periodic("tick", HOUR)));
    // Without flex the first period runs at once.
    let i = wait_for(&m, id, "ran its first period", |i| i.periods == 1);
    assert_eq!(i.state, WorkState::Enqueued);
    assert!(i.periodic);
    assert_eq!(i.next_run_at, Some(t0 + HOUR));
    for n in 2..=4u32 {
        sync(&m);
        assert_eq!(
            info(&m, id).periods,
            u64::from(n) - 1,
            "nothing before the interval"
        );
        clock.advance(HOUR);
        let i = wait_for(&m, id, "ran its next period", |i| i.periods == u64::from(n));
        assert_eq!(
            i.state,
            WorkState::Enqueued,
            "periodic work comes back: {i:?}"
        );
        assert_eq!(i.next_run_at, Some(t0 + HOUR * n));
        assert_eq!(i.run_attempts, 0, "attempts count within a period");
    }
    sync(&m);
    assert_eq!(count(&runs), 4);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn periodic_failure_waits_for_the_next_period() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let m = builder(&clock)
        .handler_fn(
            "flaky",
            move |(): (), _: &WorkContext<'_>| -> WorkResult<()> {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    WorkResult::Failure("the feed is down".into())
                } else {
                    panic!("the feed is on fire")
                }
            },
        )
        .spawn()
        .unwrap();
    let t0 = clock.now();
    let id = new_id(m.enqueue(WorkRequest::periodic("flaky", HOUR)));
    let i = wait_for(&m, id, "ran its first period", |i| i.periods == 1);
    assert_eq!(i.state, WorkState::Enqueued, "not Failed: {i:?}");
    assert_eq!(i.failure.as_deref(), Some("the feed is down"));
    assert_eq!(i.retries, 0);
    assert_eq!(i.next_run_at, Some(t0 + HOUR));

    // A panic too waits for the next period.
    clock.advance(HOUR);
    let i = wait_for(&m, id, "ran its second period", |i| i.periods == 2);
    assert_eq!(i.state, WorkState::Enqueued, "not Failed: {i:?}");
    let failure = i.failure.expect("the panic is the failure");
    assert!(failure.contains("the feed is on fire"), "{failure}");
    assert_eq!(i.next_run_at, Some(t0 + HOUR * 2));
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn missed_periods_are_skipped() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .handler_fn("tick", counting(&runs))
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::periodic("tick", HOUR)));
    wait_for(&m, id, "ran its first period", |i| i.periods == 1);

    clock.advance(HOUR * 10);
    let i = wait_for(&m, id, "ran after the gap", |i| i.periods == 2);
    // The run after the gap counts for the period it ran in: the next run
    // is in the next period, not at once.
    assert_eq!(i.state, WorkState::Enqueued, "ran again at once: {i:?}");
    assert_eq!(due_in(&clock, &i), HOUR);
    sync(&m);
    let i = info(&m, id);
    assert_eq!((i.state, i.periods), (WorkState::Enqueued, 2));
    assert_eq!(count(&runs), 2, "one run for ten missed intervals");

    // A gap of two intervals: one run, not two.
    clock.advance(HOUR * 3);
    let i = wait_for(&m, id, "ran after the gap", |i| i.periods == 3);
    assert_eq!(i.state, WorkState::Enqueued, "ran again at once: {i:?}");
    assert_eq!(due_in(&clock, &i), HOUR);
    sync(&m);
    assert_eq!(count(&runs), 3);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn a_run_that_outlasts_its_period_does_not_skip_the_next() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let m = builder(&clock)
        .handler_fn("slow", move |(): (), w: &WorkContext<'_>| {
            if w.attempt() == 1 {
                g.wait();
            }
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let t0 = clock.now();
    let flex = MINUTE * 15;
    let id = new_id(m.enqueue(WorkRequest::periodic("slow", HOUR).flex(flex)));
    clock.advance(HOUR - flex);
    wait_for(&m, id, "started", |i| i.state == WorkState::Running);
    // The run started in its window and ends in the next period.
    clock.advance(MINUTE * 30);
    gate.open();
    let i = wait_for(&m, id, "ran its first period", |i| i.periods == 1);
    assert_eq!(i.state, WorkState::Enqueued);
    assert_eq!(i.next_run_at, Some(t0 + HOUR + HOUR - flex));
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn flex_window_runs_late_in_each_interval() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .handler_fn("tick", counting(&runs))
        .spawn()
        .unwrap();
    let t0 = clock.now();
    let flex = MINUTE * 15;
    let id = new_id(m.enqueue(WorkRequest::periodic("tick", HOUR).flex(flex)));
    let i = info(&m, id);
    assert_eq!(i.state, WorkState::Enqueued);
    assert_eq!(i.next_run_at, Some(t0 + HOUR - flex));

    clock.advance(MINUTE * 44);
    sync(&m);
    assert_eq!(info(&m, id).state, WorkState::Enqueued);
    assert_eq!(count(&runs), 0);

    clock.advance(MINUTE);
    let i = wait_for(&m, id, "ran in its flex window", |i| i.periods == 1);
    assert_eq!(i.next_run_at, Some(t0 + HOUR + HOUR - flex));
    assert_eq!(count(&runs), 1);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn periodic_interval_and_flex_are_checked() {
    let clock = ManualClock::default();
    let m = builder(&clock).min_interval(MINUTE * 15).spawn().unwrap();
    let short = m.enqueue(WorkRequest::periodic("noop", MINUTE * 14)).wait();
    assert!(matches!(short, Err(WorkError::Invalid(_))), "{short:?}");
    let wide = m
        .enqueue(WorkRequest::periodic("noop", HOUR).flex(HOUR + SECOND))
        .wait();
    assert!(matches!(wide, Err(WorkError::Invalid(_))), "{wide:?}");
    let zero = m
        .enqueue(WorkRequest::periodic("noop", HOUR).flex(Duration::ZERO))
        .wait();
    assert!(matches!(zero, Err(WorkError::Invalid(_))), "{zero:?}");
    assert!(m.infos(&WorkQuery::All).is_empty(), "nothing was enqueued");
    // The minimum itself and a flex of the whole interval are fine.
    new_id(m.enqueue(WorkRequest::periodic("noop", MINUTE * 15)));
    new_id(m.enqueue(WorkRequest::periodic("noop", HOUR).flex(HOUR)));
    m.stop();
    m.join(Duration::MAX);
}

// ---- retries and backoff ---------------------------------------------------

/// Work that always asks to retry, with `backoff` (the request's default
/// if `None`): after the n-th retry it runs next `expected[n - 1]` later,
/// and not a second earlier.
fn check_backoff(backoff: impl Into<Option<Backoff>>, expected: &[Duration]) {
    let backoff = backoff.into();
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let m = builder(&clock)
        .handler_fn(
            "again",
            move |(): (), _: &WorkContext<'_>| -> WorkResult<()> {
                r.fetch_add(1, Ordering::SeqCst);
                WorkResult::Retry
            },
        )
        .spawn()
        .unwrap();
    let mut request = WorkRequest::once("again");
    if let Some(backoff) = backoff {
        request = request.backoff(backoff);
    }
    let id = new_id(m.enqueue(request));
    for (n, &want) in (1u32..).zip(expected) {
        let i = wait_for(&m, id, "retried", |i| {
            i.retries == n && i.state == WorkState::Enqueued
        });
        assert_eq!(
            due_in(&clock, &i),
            want,
            "backoff after retry {n} of {backoff:?}"
        );
        assert_eq!(i.run_attempts, n);
        assert_eq!(i.failure, None);
        assert_eq!(count(&runs), n as usize);

        clock.advance(want - SECOND);
        sync(&m);
        let i = info(&m, id);
        assert_eq!((i.state, i.retries), (WorkState::Enqueued, n), "ran early");
        assert_eq!(count(&runs), n as usize, "ran early");

        clock.advance(SECOND);
    }
    let n = expected.len() as u32 + 1;
    let i = wait_for(&m, id, "retried", |i| i.retries == n);
    assert_eq!(i.run_attempts, n);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn linear_backoff() {
    let d = Duration::from_secs(10);
    check_backoff(Backoff::linear(d), &[d, d * 2, d * 3]);
}

#[test]
fn exponential_backoff() {
    let d = Duration::from_secs(10);
    check_backoff(Backoff::exponential(d), &[d, d * 2, d * 4, d * 8]);
}

#[test]
fn backoff_is_capped() {
    let d = Duration::from_secs(10);
    let cap = Duration::from_secs(25);
    check_backoff(Backoff::exponential(d).max(cap), &[d, d * 2, cap, cap]);
}

#[test]
fn default_backoff_is_exponential_from_30_seconds() {
    let d = Duration::from_secs(30);
    check_backoff(None, &[d, d * 2]);
}

#[test]
fn success_after_retries_resets_the_retry_count() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .handler_fn("third", |(): (), w: &WorkContext<'_>| {
            if w.attempt() < 3 {
                WorkResult::Retry
            } else {
                WorkResult::Success(w.attempt())
            }
        })
        .spawn()
        .unwrap();
    let backoff = Backoff::linear(SECOND);
    let id = new_id(m.enqueue(WorkRequest::once("third").backoff(backoff)));
    wait_for(&m, id, "retried", |i| {
        i.retries == 1 && i.state == WorkState::Enqueued
    });
    clock.advance(SECOND);
    wait_for(&m, id, "retried", |i| {
        i.retries == 2 && i.state == WorkState::Enqueued
    });
    clock.advance(SECOND * 2);
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(i.output::<u32>(), Some(Ok(3)));
    assert_eq!((i.run_attempts, i.retries), (3, 0));
    m.stop();
    m.join(Duration::MAX);
}

// ---- failures --------------------------------------------------------------

#[test]
fn handler_panic_fails_the_work() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .handler_fn("boom", |(): (), _: &WorkContext<'_>| -> WorkResult<()> {
            panic!("the disk is on fire")
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("boom")));
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Failed);
    let failure = i.failure.expect("a failure text");
    assert!(failure.contains("the disk is on fire"), "{failure}");
    assert!(failure.contains("panic"), "{failure}");
    assert_eq!(i.run_attempts, 1);
    assert_eq!(i.output, None);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn failure_result_fails_the_work() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .handler_fn("refuse", |(): (), _: &WorkContext<'_>| -> WorkResult<()> {
            WorkResult::Failure("no such account".into())
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("refuse")));
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Failed);
    assert_eq!(i.failure.as_deref(), Some("no such account"));
    assert_eq!((i.run_attempts, i.retries), (1, 0));
    sync(&m);
    assert_eq!(info(&m, id).run_attempts, 1, "a failure is not retried");
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn undecodable_input_fails_the_work() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .handler_fn("text", |s: String, _: &WorkContext<'_>| {
            WorkResult::Success(s)
        })
        .spawn()
        .unwrap();
    // Bincode reads a length of 200 then runs out of bytes.
    let id = new_id(m.enqueue(WorkRequest::once("text").input(&200u8)));
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Failed);
    let failure = i.failure.expect("a failure text");
    assert!(failure.contains("input"), "{failure}");
    m.stop();
    m.join(Duration::MAX);
}

// ---- chains ----------------------------------------------------------------

fn chain_builder(clock: &ManualClock, runs: &Arc<AtomicUsize>) -> WorkManagerBuilder {
    let r = Arc::clone(runs);
    let s = Arc::clone(runs);
    builder(clock)
        .handler_fn("double", move |n: u32, _: &WorkContext<'_>| {
            r.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(n * 2)
        })
        .handler_fn("show", move |n: u32, _: &WorkContext<'_>| {
            s.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(format!("<{n}>"))
        })
        .handler_fn("fail", |(): (), _: &WorkContext<'_>| -> WorkResult<u32> {
            WorkResult::Failure("upstream broke".into())
        })
}

#[test]
fn chain_passes_outputs_on_as_inputs() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = chain_builder(&clock, &runs).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("double").input(&3u32))
        .then(WorkRequest::once("double"))
        .then(WorkRequest::once("show"));
    let ids = new_ids(m.enqueue(chain));
    let [a, b, c] = ids[..] else {
        panic!("three works: {ids:?}")
    };
    let ic = finished(&m, c);
    assert_eq!(ic.state, WorkState::Succeeded);
    assert_eq!(ic.output::<String>(), Some(Ok("<12>".into())));
    assert_eq!(ic.prerequisites, vec![b]);
    let (ia, ib) = (info(&m, a), info(&m, b));
    assert_eq!(ia.output::<u32>(), Some(Ok(6)));
    assert_eq!(ib.output::<u32>(), Some(Ok(12)));
    assert_eq!(ib.prerequisites, vec![a]);
    assert!(ia.prerequisites.is_empty());
    assert_eq!(count(&runs), 3);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn chain_work_with_its_own_input_keeps_it() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = chain_builder(&clock, &runs).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("double").input(&3u32))
        .then(WorkRequest::once("double").input(&100u32));
    let ids = new_ids(m.enqueue(chain));
    assert_eq!(finished(&m, ids[1]).output::<u32>(), Some(Ok(200)));
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn failure_fails_the_rest_of_the_chain() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = chain_builder(&clock, &runs).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("fail"))
        .then(WorkRequest::once("double"))
        .then(WorkRequest::once("show"));
    let ids = new_ids(m.enqueue(chain));
    let ic = finished(&m, ids[2]);
    let (ia, ib) = (info(&m, ids[0]), info(&m, ids[1]));
    assert_eq!(ia.state, WorkState::Failed);
    assert_eq!(ia.failure.as_deref(), Some("upstream broke"));
    for i in [&ib, &ic] {
        assert_eq!(i.state, WorkState::Failed, "{i:?}");
        assert_eq!(i.run_attempts, 0, "never ran: {i:?}");
        let failure = i.failure.as_deref().expect("a failure text");
        assert!(failure.contains("prerequisite"), "{failure}");
    }
    assert!(ib.failure.unwrap().contains(&ids[0].to_string()));
    assert_eq!(count(&runs), 0);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn cancelling_the_head_cancels_the_chain() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = chain_builder(&clock, &runs).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("double").input(&1u32).initial_delay(HOUR))
        .then(WorkRequest::once("double"))
        .then(WorkRequest::once("show"));
    let ids = new_ids(m.enqueue(chain));
    assert_eq!(info(&m, ids[0]).state, WorkState::Enqueued);
    assert_eq!(info(&m, ids[1]).state, WorkState::Blocked);
    assert_eq!(info(&m, ids[2]).state, WorkState::Blocked);
    assert_eq!(info(&m, ids[1]).next_run_at, None);

    assert_eq!(m.cancel(WorkQuery::Id(ids[0])).wait(), Ok(3));
    for &id in &ids {
        assert_eq!(info(&m, id).state, WorkState::Cancelled);
    }
    let why = info(&m, ids[1]).failure.expect("why it was cancelled");
    assert!(why.contains("prerequisite"), "{why}");

    clock.advance(HOUR * 2);
    sync(&m);
    assert_eq!(count(&runs), 0);
    for &id in &ids {
        assert_eq!(info(&m, id).state, WorkState::Cancelled);
    }
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn then_all_fans_out_and_joins() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = chain_builder(&clock, &runs).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("double").input(&5u32))
        .then_all([WorkRequest::once("show"), WorkRequest::once("double")])
        .then(WorkRequest::once("show"));
    let ids = new_ids(m.enqueue(chain));
    let [a, b1, b2, c] = ids[..] else {
        panic!("four works: {ids:?}")
    };
    let ic = finished(&m, c);
    assert_eq!(info(&m, a).output::<u32>(), Some(Ok(10)));
    // Both branches got the head's output.
    assert_eq!(info(&m, b1).output::<String>(), Some(Ok("<10>".into())));
    assert_eq!(info(&m, b2).output::<u32>(), Some(Ok(20)));
    assert_eq!(info(&m, b1).prerequisites, vec![a]);
    assert_eq!(info(&m, b2).prerequisites, vec![a]);
    // The join waited for both and took the last one's output (the
    // overwriting input merger).
    assert_eq!(ic.prerequisites, vec![b1, b2]);
    assert!(
        info(&m, b1).state == WorkState::Succeeded && info(&m, b2).state == WorkState::Succeeded
    );
    assert_eq!(ic.output::<String>(), Some(Ok("<20>".into())));
    assert_eq!(count(&runs), 4);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn delayed_chain_work_waits_after_its_prerequisite() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = chain_builder(&clock, &runs).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("double").input(&1u32))
        .then(WorkRequest::once("show").initial_delay(MINUTE));
    let ids = new_ids(m.enqueue(chain));
    let i = wait_for(&m, ids[1], "was unblocked", |i| {
        i.state == WorkState::Enqueued
    });
    assert_eq!(due_in(&clock, &i), MINUTE);
    clock.advance(MINUTE);
    assert_eq!(
        finished(&m, ids[1]).output::<String>(),
        Some(Ok("<2>".into()))
    );
    m.stop();
    m.join(Duration::MAX);
}

// ---- unique names ----------------------------------------------------------

fn unique_builder(clock: &ManualClock) -> WorkManagerBuilder {
    builder(clock)
        .handler_fn("inc", |n: u32, _: &WorkContext<'_>| {
            WorkResult::Success(n + 1)
        })
        .handler_fn("fail", |(): (), _: &WorkContext<'_>| -> WorkResult<u32> {
            WorkResult::Failure("no".into())
        })
}

fn named(m: &WorkManager, name: &str) -> Vec<WorkId> {
    m.infos(&WorkQuery::UniqueName(name.into()))
        .into_iter()
        .map(|i| i.id)
        .collect()
}

#[test]
fn keep_ignores_new_work_while_the_old_is_unfinished() {
    let clock = ManualClock::default();
    let m = unique_builder(&clock).spawn().unwrap();
    let later = WorkRequest::once("inc").input(&1u32).initial_delay(HOUR);
    let first = new_id(m.enqueue_unique("sync", ExistingWork::Keep, later.clone()));
    let again = m
        .enqueue_unique(
            "sync",
            ExistingWork::Keep,
            WorkRequest::once("inc").input(&5u32),
        )
        .wait();
    assert_eq!(again, Ok(Enqueued::Kept(vec![first])));
    assert_eq!(named(&m, "sync"), vec![first]);
    assert_eq!(m.infos(&WorkQuery::All).len(), 1);

    clock.advance(HOUR);
    assert_eq!(finished(&m, first).output::<u32>(), Some(Ok(2)));
    // Finished: Keep enqueues new work.
    let second = new_id(m.enqueue_unique("sync", ExistingWork::Keep, later));
    assert_ne!(second, first);
    assert_eq!(named(&m, "sync"), vec![second]);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn replace_cancels_the_old_work() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = unique_builder(&clock)
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    let old = new_id(m.enqueue_unique(
        "r",
        ExistingWork::Replace,
        WorkRequest::once("count").initial_delay(HOUR),
    ));
    let new = new_id(m.enqueue_unique("r", ExistingWork::Replace, WorkRequest::once("count")));
    assert_ne!(old, new);
    assert_eq!(m.info(old), None, "cancelled and deleted");
    assert_eq!(finished(&m, new).state, WorkState::Succeeded);
    assert_eq!(named(&m, "r"), vec![new]);
    clock.advance(HOUR * 2);
    sync(&m);
    assert_eq!(m.info(old), None);
    assert_eq!(count(&runs), 1, "only the new work ran");
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn append_runs_after_the_old_work_with_its_output() {
    let clock = ManualClock::default();
    let m = unique_builder(&clock).spawn().unwrap();
    // The old work has not run yet: the new one waits for it.
    let old = new_id(m.enqueue_unique(
        "a",
        ExistingWork::Append,
        WorkRequest::once("inc").input(&1u32).initial_delay(HOUR),
    ));
    let new = new_id(m.enqueue_unique("a", ExistingWork::Append, WorkRequest::once("inc")));
    let i = info(&m, new);
    assert_eq!(i.state, WorkState::Blocked);
    assert_eq!(i.prerequisites, vec![old]);
    sync(&m);
    assert_eq!(info(&m, new).state, WorkState::Blocked);

    clock.advance(HOUR);
    let i = finished(&m, new);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(
        i.output::<u32>(),
        Some(Ok(3)),
        "the old output 2 was its input"
    );
    assert_eq!(info(&m, old).state, WorkState::Succeeded);

    // The old work (now the chain's leaf) already succeeded: the new one
    // runs at once, after it.
    let third = new_id(m.enqueue_unique("a", ExistingWork::Append, WorkRequest::once("inc")));
    let i = finished(&m, third);
    assert_eq!(i.prerequisites, vec![new]);
    assert_eq!(i.output::<u32>(), Some(Ok(4)));

    // Work with an input of its own keeps it.
    let own = new_id(m.enqueue_unique(
        "a",
        ExistingWork::Append,
        WorkRequest::once("inc").input(&100u32),
    ));
    let i = finished(&m, own);
    assert_eq!(i.prerequisites, vec![third]);
    assert_eq!(i.output::<u32>(), Some(Ok(101)));
    assert_eq!(named(&m, "a"), vec![old, new, third, own]);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn append_to_failed_work_fails() {
    let clock = ManualClock::default();
    let m = unique_builder(&clock).spawn().unwrap();
    let old = new_id(m.enqueue_unique("f", ExistingWork::Append, WorkRequest::once("fail")));
    assert_eq!(finished(&m, old).state, WorkState::Failed);
    let new = new_id(m.enqueue_unique(
        "f",
        ExistingWork::Append,
        WorkRequest::once("inc").input(&1u32),
    ));
    let i = finished(&m, new);
    assert_eq!(i.state, WorkState::Failed);
    assert_eq!(i.run_attempts, 0);
    let failure = i.failure.expect("a failure text");
    assert!(failure.contains("prerequisite"), "{failure}");
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn append_to_cancelled_work_is_cancelled() {
    let clock = ManualClock::default();
    let m = unique_builder(&clock).spawn().unwrap();
    let old = new_id(m.enqueue_unique(
        "c",
        ExistingWork::Append,
        WorkRequest::once("inc").input(&1u32).initial_delay(HOUR),
    ));
    assert_eq!(m.cancel(WorkQuery::Id(old)).wait(), Ok(1));
    let new = new_id(m.enqueue_unique(
        "c",
        ExistingWork::Append,
        WorkRequest::once("inc").input(&1u32),
    ));
    let i = finished(&m, new);
    assert_eq!(i.state, WorkState::Cancelled);
    assert_eq!(i.run_attempts, 0);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn append_or_replace_starts_fresh_after_a_failure() {
    let clock = ManualClock::default();
    let m = unique_builder(&clock).spawn().unwrap();
    let old = new_id(m.enqueue_unique(
        "x",
        ExistingWork::AppendOrReplace,
        WorkRequest::once("fail"),
    ));
    assert_eq!(finished(&m, old).state, WorkState::Failed);
    let fresh = new_id(m.enqueue_unique(
        "x",
        ExistingWork::AppendOrReplace,
        WorkRequest::once("inc").input(&1u32),
    ));
    let i = finished(&m, fresh);
    assert_eq!(i.state, WorkState::Succeeded);
    assert!(i.prerequisites.is_empty(), "{i:?}");
    assert_eq!(i.output::<u32>(), Some(Ok(2)));

    // After a success it appends.
    let next =
        new_id(m.enqueue_unique("x", ExistingWork::AppendOrReplace, WorkRequest::once("inc")));
    let i = finished(&m, next);
    assert_eq!(i.prerequisites, vec![fresh]);
    assert_eq!(i.output::<u32>(), Some(Ok(3)));
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn update_changes_waiting_work_in_place() {
    let clock = ManualClock::default();
    let m = unique_builder(&clock).spawn().unwrap();
    let t0 = clock.now();
    let id = new_id(m.enqueue_unique(
        "u",
        ExistingWork::Update,
        WorkRequest::once("inc").input(&1u32).initial_delay(HOUR),
    ));
    clock.advance(MINUTE);
    let updated = m
        .enqueue_unique(
            "u",
            ExistingWork::Update,
            WorkRequest::once("inc")
                .input(&41u32)
                .initial_delay(HOUR)
                .tag("new"),
        )
        .wait();
    assert_eq!(updated, Ok(Enqueued::Updated(id)));
    let i = info(&m, id);
    assert_eq!(i.state, WorkState::Enqueued);
    assert_eq!(
        i.next_run_at,
        Some(t0 + HOUR),
        "the delay still counts from the enqueue"
    );
    assert_eq!(
        i.tags,
        ["inc", "new"],
        "the handler's name, then the new tags"
    );
    assert_eq!(named(&m, "u"), vec![id]);

    clock.advance(HOUR);
    assert_eq!(finished(&m, id).output::<u32>(), Some(Ok(42)));

    // Nothing unfinished: Update enqueues new work.
    let next = new_id(m.enqueue_unique(
        "u",
        ExistingWork::Update,
        WorkRequest::once("inc").input(&1u32),
    ));
    assert_ne!(next, id);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn update_of_periodic_work_keeps_its_timing() {
    let clock = ManualClock::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let m = builder(&clock)
        .handler_fn("tick", move |n: u32, _: &WorkContext<'_>| {
            s.lock().unwrap().push(n);
            WorkResult::Success(n)
        })
        .spawn()
        .unwrap();
    let t0 = clock.now();
    let id = new_id(m.enqueue_unique(
        "p",
        ExistingWork::Update,
        WorkRequest::periodic("tick", HOUR).input(&1u32),
    ));
    wait_for(&m, id, "ran its first period", |i| i.periods == 1);
    clock.advance(MINUTE * 30);
    let updated = m
        .enqueue_unique(
            "p",
            ExistingWork::Update,
            WorkRequest::periodic("tick", HOUR).input(&2u32),
        )
        .wait();
    assert_eq!(updated, Ok(Enqueued::Updated(id)));
    let i = info(&m, id);
    assert_eq!(i.periods, 1, "the update did not start a new period");
    assert_eq!(i.next_run_at, Some(t0 + HOUR), "the update kept the timing");
    sync(&m);
    assert_eq!(*seen.lock().unwrap(), vec![1]);

    clock.advance(MINUTE * 30);
    let i = wait_for(&m, id, "ran its second period", |i| i.periods == 2);
    assert_eq!(i.output::<u32>(), Some(Ok(2)));
    assert_eq!(*seen.lock().unwrap(), vec![1, 2]);

    // Periodic work cannot become one-off work by an update.
    let wrong = m
        .enqueue_unique(
            "p",
            ExistingWork::Update,
            WorkRequest::once("tick").input(&3u32),
        )
        .wait();
    assert!(matches!(wrong, Err(WorkError::Invalid(_))), "{wrong:?}");
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn update_does_not_cancel_a_running_work() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stopped = Arc::new(AtomicBool::new(false));
    let (g, s, st) = (Arc::clone(&gate), Arc::clone(&seen), Arc::clone(&stopped));
    let m = builder(&clock)
        .handler_fn("slow", move |text: String, w: &WorkContext<'_>| {
            s.lock().unwrap().push(text.clone());
            if w.attempt() == 1 {
                assert!(g.wait(), "the test never opened the gate");
                st.store(w.is_stopped(), Ordering::SeqCst);
                WorkResult::Retry
            } else {
                WorkResult::Success(text)
            }
        })
        .spawn()
        .unwrap();
    let backoff = Backoff::linear(SECOND * 10);
    let id = new_id(m.enqueue_unique(
        "slow",
        ExistingWork::Update,
        WorkRequest::once("slow").input("old").backoff(backoff),
    ));
    wait_for(&m, id, "started", |i| i.state == WorkState::Running);
    assert!(wait_until(|| seen.lock().unwrap().len() == 1, LONG));

    let updated = m
        .enqueue_unique(
            "slow",
            ExistingWork::Update,
            WorkRequest::once("slow").input("new").backoff(backoff),
        )
        .wait();
    assert_eq!(updated, Ok(Enqueued::Updated(id)));
    assert_eq!(info(&m, id).state, WorkState::Running, "the run goes on");

    gate.open();
    let i = wait_for(&m, id, "finished its first run", |i| {
        i.state == WorkState::Enqueued && i.retries == 1
    });
    assert!(
        !stopped.load(Ordering::SeqCst),
        "the update stopped the run"
    );
    assert_eq!(due_in(&clock, &i), SECOND * 10);
    clock.advance(SECOND * 10);
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(i.output::<String>(), Some(Ok("new".into())));
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["old".to_owned(), "new".to_owned()]
    );
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn periodic_work_cannot_be_appended() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    for policy in [ExistingWork::Append, ExistingWork::AppendOrReplace] {
        let r = m
            .enqueue_unique("p", policy, WorkRequest::periodic("noop", HOUR))
            .wait();
        assert!(matches!(r, Err(WorkError::Invalid(_))), "{policy:?}: {r:?}");
    }
    assert!(m.infos(&WorkQuery::All).is_empty());
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn periodic_keep_and_replace() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let every = WorkRequest::periodic("noop", HOUR);
    let first = new_id(m.enqueue_unique("p", ExistingWork::Keep, every.clone()));
    let kept = m
        .enqueue_unique("p", ExistingWork::Keep, every.clone())
        .wait();
    assert_eq!(kept, Ok(Enqueued::Kept(vec![first])));
    let second = new_id(m.enqueue_unique("p", ExistingWork::Replace, every));
    assert_eq!(m.info(first), None, "replaced: cancelled and deleted");
    assert_eq!(named(&m, "p"), vec![second]);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn work_replacing_itself_is_not_cancelled() {
    let clock = ManualClock::default();
    let slot: Arc<OnceLock<WorkManager>> = Arc::default();
    let seen: Arc<Renewal> = Arc::default();
    let (sl, se) = (Arc::clone(&slot), Arc::clone(&seen));
    let m = builder(&clock)
        .handler_fn("renew", move |(): (), w: &WorkContext<'_>| {
            let m = sl.get().expect("the manager is set");
            let next = WorkRequest::once("noop").initial_delay(HOUR);
            let r = m
                .enqueue_unique("renew", ExistingWork::Replace, next)
                .wait();
            *se.lock().unwrap() = Some((r, w.is_stopped()));
            WorkResult::Success(7u32)
        })
        .spawn()
        .unwrap();
    assert!(slot.set(m.clone()).is_ok());
    let first =
        new_id(m.enqueue_unique("renew", ExistingWork::Replace, WorkRequest::once("renew")));
    let i = finished(&m, first);
    assert_eq!(i.state, WorkState::Succeeded, "{i:?}");
    assert_eq!(i.output::<u32>(), Some(Ok(7)));
    let (r, stopped) = seen.lock().unwrap().take().expect("the handler ran");
    assert!(!stopped, "the handler was told to stop");
    let second = match r {
        Ok(Enqueued::New(ids)) => ids[0],
        other => panic!("the replacement was not enqueued: {other:?}"),
    };
    let i = info(&m, second);
    assert_eq!(i.state, WorkState::Enqueued);
    assert_eq!(i.unique_name.as_deref(), Some("renew"));
    assert_eq!(
        named(&m, "renew"),
        vec![second],
        "the old work lost the name"
    );
    m.stop();
    m.join(Duration::MAX);
}

// ---- cancelling ------------------------------------------------------------

#[test]
fn cancel_by_id_tag_name_and_all() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    let later = WorkRequest::once("count").initial_delay(HOUR);

    let tagged = new_ids(m.enqueue(WorkChain::all([
        later.clone().tag("t"),
        later.clone().tag("t"),
    ])));
    let untagged = new_id(m.enqueue(later.clone()));
    assert_eq!(m.cancel(WorkQuery::Tag("t".into())).wait(), Ok(2));
    assert!(
        tagged
            .iter()
            .all(|&id| info(&m, id).state == WorkState::Cancelled)
    );
    assert_eq!(info(&m, untagged).state, WorkState::Enqueued);

    let chain = WorkChain::new(later.clone()).then(WorkRequest::once("count"));
    let named_ids = new_ids(m.enqueue_unique("n", ExistingWork::Keep, chain));
    assert_eq!(m.cancel(WorkQuery::UniqueName("n".into())).wait(), Ok(2));
    assert!(
        named_ids
            .iter()
            .all(|&id| info(&m, id).state == WorkState::Cancelled)
    );

    assert_eq!(m.cancel(WorkQuery::Id(untagged)).wait(), Ok(1));
    assert_eq!(info(&m, untagged).state, WorkState::Cancelled);
    assert_eq!(
        m.cancel(WorkQuery::Id(untagged)).wait(),
        Ok(0),
        "already cancelled"
    );

    let rest = new_ids(m.enqueue(WorkChain::all([later.clone(), later.clone(), later])));
    assert_eq!(m.cancel(WorkQuery::All).wait(), Ok(3));
    assert!(
        rest.iter()
            .all(|&id| info(&m, id).state == WorkState::Cancelled)
    );
    assert_eq!(m.cancel(WorkQuery::All).wait(), Ok(0));

    clock.advance(HOUR * 2);
    sync(&m);
    assert_eq!(count(&runs), 0);
    m.stop();
    m.join(Duration::MAX);
}

/// A manager whose handler `"spin"` raises the first flag when it starts,
/// then waits to be told to stop and raises the second if it was.
fn spinning_manager(clock: &ManualClock) -> (WorkManager, Arc<AtomicBool>, Arc<AtomicBool>) {
    let started = Arc::new(AtomicBool::new(false));
    let saw_stop = Arc::new(AtomicBool::new(false));
    let (st, sa) = (Arc::clone(&started), Arc::clone(&saw_stop));
    let m = builder(clock)
        .handler_fn("spin", move |(): (), w: &WorkContext<'_>| {
            st.store(true, Ordering::SeqCst);
            if wait_until(|| w.is_stopped(), LONG) {
                sa.store(true, Ordering::SeqCst);
            }
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    (m, started, saw_stop)
}

#[test]
fn cancelling_running_work_tells_the_handler_to_stop() {
    let clock = ManualClock::default();
    let (m, started, saw_stop) = spinning_manager(&clock);
    let id = new_id(m.enqueue(WorkRequest::once("spin")));
    assert!(wait_until(|| started.load(Ordering::SeqCst), LONG));
    // The run told the scheduler it started before its handler ran: once
    // the scheduler has handled what came before this request, it is
    // stored as running.
    sync(&m);
    assert_eq!(info(&m, id).state, WorkState::Running);
    assert_eq!(m.cancel(WorkQuery::Id(id)).wait(), Ok(1));
    assert_eq!(info(&m, id).state, WorkState::Cancelled);
    assert!(
        wait_until(|| saw_stop.load(Ordering::SeqCst), LONG),
        "is_stopped never became true"
    );
    // The run's late result does not undo the cancel.
    sync(&m);
    let i = info(&m, id);
    assert_eq!(i.state, WorkState::Cancelled);
    assert_eq!(i.output, None);
    m.stop();
    m.join(Duration::MAX);
}

// ---- time limits -----------------------------------------------------------

/// Runs past its time limit on the first attempt (until told to stop),
/// succeeds on the next; records `on_timeout` calls.
struct Overrun {
    timeouts: Arc<Mutex<Vec<WorkInfo>>>,
}

impl Handler for Overrun {
    type Input = ();
    type Output = u32;

    fn run(&self, (): (), work: &WorkContext<'_>) -> WorkResult<u32> {
        if work.attempt() == 1 {
            wait_until(|| work.is_stopped(), LONG);
            return WorkResult::Success(0); // dropped: the run timed out
        }
        WorkResult::Success(work.attempt())
    }

    fn on_timeout(&self, info: &WorkInfo) {
        self.timeouts.lock().unwrap().push(info.clone());
    }
}

#[test]
fn time_limit_stops_the_run_and_counts_as_a_retry() {
    let clock = ManualClock::default();
    let timeouts = Arc::new(Mutex::new(Vec::new()));
    let m = builder(&clock)
        .handler(
            "overrun",
            Overrun {
                timeouts: Arc::clone(&timeouts),
            },
        )
        .spawn()
        .unwrap();
    let backoff = Backoff::linear(SECOND * 10);
    let request = WorkRequest::once("overrun")
        .time_limit(Duration::from_millis(50))
        .backoff(backoff);
    let id = new_id(m.enqueue(request));
    let i = wait_for(&m, id, "timed out", |i| i.retries == 1);
    assert_eq!(i.state, WorkState::Enqueued);
    assert_eq!(i.run_attempts, 1);
    let failure = i.failure.clone().expect("why it is retried");
    assert!(failure.contains("time limit"), "{failure}");
    assert_eq!(due_in(&clock, &i), SECOND * 10);
    assert!(wait_until(|| !timeouts.lock().unwrap().is_empty(), LONG));
    {
        let seen = timeouts.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].id, id);
        assert_eq!(seen[0].retries, 1);
    }

    sync(&m);
    assert_eq!(info(&m, id).run_attempts, 1, "not before its backoff");
    let i = advance_until_finished(&m, &clock, id, SECOND * 10);
    assert_eq!(i.state, WorkState::Succeeded);
    assert!(
        i.output::<u32>().is_some_and(|o| o.is_ok_and(|n| n >= 2)),
        "{i:?}"
    );
    assert_eq!(i.retries, 0);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn a_run_that_ignores_the_stop_loses_its_worker_and_its_work_waits_for_it() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let first_returned = Arc::new(AtomicBool::new(false));
    let (g, fr) = (Arc::clone(&gate), Arc::clone(&first_returned));
    let m = builder(&clock)
        .workers(1)
        .stop_grace(Duration::from_millis(50))
        .handler_fn("stubborn", move |(): (), w: &WorkContext<'_>| {
            if w.attempt() == 1 {
                // Ignores is_stopped: only the test lets it go.
                g.wait();
                fr.store(true, Ordering::SeqCst);
                return WorkResult::Success(1u32);
            }
            WorkResult::Success(w.attempt())
        })
        .handler_fn("other", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(0u32)
        })
        .spawn()
        .unwrap();
    let request = WorkRequest::once("stubborn")
        .time_limit(Duration::from_millis(100))
        .backoff(Backoff::linear(SECOND));
    let id = new_id(m.enqueue(request));
    let i = wait_for(&m, id, "timed out", |i| i.retries == 1);
    assert_eq!(i.state, WorkState::Enqueued);

    // The only worker is stuck in the first run: after the grace it is
    // abandoned and replaced, so other work runs...
    let other = new_id(m.enqueue(WorkRequest::once("other")));
    assert_eq!(finished(&m, other).state, WorkState::Succeeded);
    // ...but the stubborn work, due again, waits for its first run to
    // return: two runs of one work never overlap.
    clock.advance(SECOND * 5);
    sync(&m);
    let other = new_id(m.enqueue(WorkRequest::once("other")));
    assert_eq!(finished(&m, other).state, WorkState::Succeeded);
    let i = info(&m, id);
    assert_eq!((i.state, i.run_attempts), (WorkState::Enqueued, 1), "{i:?}");
    assert!(!first_returned.load(Ordering::SeqCst));

    gate.open();
    assert!(wait_until(|| first_returned.load(Ordering::SeqCst), LONG));
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded, "{i:?}");
    assert_eq!(i.run_attempts, 2);
    assert_eq!(
        i.output::<u32>(),
        Some(Ok(2)),
        "the abandoned run's result changed nothing"
    );
    m.stop();
    m.join(Duration::MAX);
}

// ---- progress and watches --------------------------------------------------

#[test]
fn progress_is_visible_while_running_and_cleared_after() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let m = builder(&clock)
        .handler_fn("steps", move |(): (), w: &WorkContext<'_>| {
            w.set_progress(&1u32);
            g.wait();
            w.set_progress(&2u32);
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("steps")));
    let i = wait_for(&m, id, "reported progress", |i| i.progress.is_some());
    assert_eq!(i.state, WorkState::Running);
    assert_eq!(i.progress::<u32>(), Some(Ok(1)));
    gate.open();
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Succeeded);
    assert_eq!(i.progress, None);
    m.stop();
    m.join(Duration::MAX);
}

/// Collects `watch`'s changes until one is `Succeeded`.
fn states_until_succeeded(watch: &WorkWatch, id: WorkId) -> Vec<WorkState> {
    let mut states = Vec::new();
    while states.last() != Some(&WorkState::Succeeded) {
        let i = watch
            .next_timeout(LONG)
            .unwrap_or_else(|| panic!("no change after {states:?}"));
        assert_eq!(i.id, id, "a change of another work");
        states.push(i.state);
    }
    states
}

#[test]
fn watch_by_tag_sees_running_then_succeeded() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let m = builder(&clock)
        .handler_fn("gated", move |(): (), _: &WorkContext<'_>| {
            g.wait();
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let watch = m.watch(WorkQuery::Tag("ui".into()));
    assert_eq!(watch.try_next(), None);
    let other = new_id(m.enqueue(WorkRequest::once("noop").tag("not ui")));
    let id = new_id(m.enqueue(WorkRequest::once("gated").tag("ui")));
    // Enqueued first (the run is handed to the pool), Running once its
    // handler starts.
    let mut running = watch.next_timeout(LONG).expect("a change");
    if running.state == WorkState::Enqueued {
        assert_eq!(running.id, id);
        running = watch.next_timeout(LONG).expect("a change");
    }
    assert_eq!((running.id, running.state), (id, WorkState::Running));
    gate.open();
    let states = states_until_succeeded(&watch, id);
    assert!(
        !states.contains(&WorkState::Running),
        "seen twice: {states:?}"
    );
    finished(&m, other);
    sync(&m);
    assert!(watch.drain().is_empty(), "changes of untagged work");
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn watch_by_id_starts_with_a_snapshot() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let m = builder(&clock)
        .handler_fn("gated", move |(): (), _: &WorkContext<'_>| {
            g.wait();
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("gated").initial_delay(MINUTE)));
    let watch = m.watch(WorkQuery::Id(id));
    let first = watch.next_timeout(LONG).expect("a snapshot");
    assert_eq!((first.id, first.state), (id, WorkState::Enqueued));
    sync(&m);
    assert!(watch.drain().is_empty(), "no change before the delay");

    clock.advance(MINUTE);
    let running = watch.next_timeout(LONG).expect("a change");
    assert_eq!(running.state, WorkState::Running);
    gate.open();
    assert_eq!(
        states_until_succeeded(&watch, id),
        vec![WorkState::Succeeded]
    );
    m.stop();
    m.join(Duration::MAX);
}

/// One turn's changes come to a watch together: whichever way they are
/// taken, each is seen once and in order.
#[test]
fn watch_sees_each_change_of_a_turn_once_in_order() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let watch = m.watch(WorkQuery::Tag("turn".into()));
    let ids = new_ids(m.enqueue(WorkChain::all(
        (0..5).map(|_| WorkRequest::once("noop").tag("turn").initial_delay(MINUTE)),
    )));
    sync(&m);
    let first = watch.next_timeout(LONG).expect("a change");
    let second = watch.try_next().expect("the rest of the turn is there");
    let rest = watch.drain();
    let seen: Vec<WorkId> = [first, second]
        .into_iter()
        .chain(rest)
        .map(|i| {
            assert_eq!(i.state, WorkState::Enqueued);
            i.id
        })
        .collect();
    assert_eq!(seen, ids, "each enqueued work once, in order");
    assert_eq!(watch.try_next(), None);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn watch_drain_takes_what_is_waiting() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let watch = m.watch(WorkQuery::All);
    let ids = new_ids(m.enqueue(WorkChain::all([
        WorkRequest::once("noop"),
        WorkRequest::once("noop"),
    ])));
    for &id in &ids {
        finished(&m, id);
    }
    let mut seen = Vec::new();
    assert!(
        wait_until(
            || {
                seen.extend(watch.drain());
                ids.iter().all(|id| {
                    seen.iter()
                        .any(|i| i.id == *id && i.state == WorkState::Succeeded)
                })
            },
            LONG,
        ),
        "drained {seen:?}"
    );
    for &id in &ids {
        let last = seen.iter().rev().find(|i| i.id == id).unwrap();
        assert_eq!(last.state, WorkState::Succeeded);
    }
    sync(&m);
    assert!(watch.drain().is_empty());
    assert_eq!(watch.try_next(), None);
    m.stop();
    m.join(Duration::MAX);
}

// ---- data limits and errors ------------------------------------------------

#[test]
fn input_over_the_data_limit_is_refused() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .data_limit(64)
        .handler_fn("bytes", |b: Vec<u8>, _: &WorkContext<'_>| {
            WorkResult::Success(b.len())
        })
        .spawn()
        .unwrap();
    let err = m
        .enqueue(WorkRequest::once("bytes").input(&vec![7u8; 100]))
        .wait()
        .unwrap_err();
    match err {
        WorkError::DataTooLarge { size, limit } => {
            assert_eq!(limit, 64);
            assert!(size > 100, "{size}");
        }
        other => panic!("expected DataTooLarge, got {other:?}"),
    }
    assert!(m.infos(&WorkQuery::All).is_empty());
    let id = new_id(m.enqueue(WorkRequest::once("bytes").input(&vec![7u8; 32])));
    assert_eq!(finished(&m, id).output::<usize>(), Some(Ok(32)));
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn output_over_the_data_limit_fails_the_run() {
    let clock = ManualClock::default();
    let m = builder(&clock)
        .data_limit(64)
        .handler_fn("big", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(vec![1u8; 1000])
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("big")));
    let i = finished(&m, id);
    assert_eq!(i.state, WorkState::Failed);
    assert_eq!(i.output, None);
    let failure = i.failure.expect("a failure text");
    assert!(failure.contains("data limit"), "{failure}");
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn invalid_requests_are_refused() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    assert_eq!(
        m.enqueue(WorkRequest::once("nobody")).wait(),
        Err(WorkError::UnknownHandler("nobody".into()))
    );
    assert_eq!(
        m.enqueue(WorkRequest::once("noop").constraint("wifi"))
            .wait(),
        Err(WorkError::UnknownConstraint("wifi".into()))
    );
    let empty = m.enqueue(WorkChain::all([])).wait();
    assert!(matches!(empty, Err(WorkError::Invalid(_))), "{empty:?}");
    let periodic_chain = m
        .enqueue(
            WorkChain::new(WorkRequest::once("noop")).then(WorkRequest::periodic("noop", HOUR)),
        )
        .wait();
    assert!(
        matches!(periodic_chain, Err(WorkError::Invalid(_))),
        "{periodic_chain:?}"
    );
    let update_chain = m
        .enqueue_unique(
            "u",
            ExistingWork::Update,
            WorkChain::new(WorkRequest::once("noop")).then(WorkRequest::once("noop")),
        )
        .wait();
    assert!(
        matches!(update_chain, Err(WorkError::Invalid(_))),
        "{update_chain:?}"
    );
    // A later handler in a chain is checked too: nothing is enqueued.
    let unknown_later = m
        .enqueue(WorkChain::new(WorkRequest::once("noop")).then(WorkRequest::once("nobody")))
        .wait();
    assert_eq!(
        unknown_later,
        Err(WorkError::UnknownHandler("nobody".into()))
    );
    assert!(m.infos(&WorkQuery::All).is_empty());
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn requests_after_shutdown_are_stopped() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("noop")));
    finished(&m, id);
    m.stop();
    m.join(Duration::MAX);
    assert_eq!(
        m.enqueue(WorkRequest::once("noop")).wait(),
        Err(WorkError::Stopped)
    );
    assert_eq!(
        m.enqueue_unique("x", ExistingWork::Keep, WorkRequest::once("noop"))
            .wait(),
        Err(WorkError::Stopped)
    );
    assert_eq!(m.cancel(WorkQuery::All).wait(), Err(WorkError::Stopped));
    assert_eq!(m.wait_finished(id, Duration::from_millis(10)), None);
    // Moving the clock of a stopped manager is harmless; shutting down again too.
    clock.advance(HOUR);
    m.stop();
    m.join(Duration::MAX);
}

// ---- constraints -----------------------------------------------------------

#[test]
fn constraint_holds_work_until_recheck() {
    let clock = ManualClock::default();
    let flag = Arc::new(Flag::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        // No poll during the test: only recheck looks again.
        .constraint_poll(HOUR)
        .constraint("flag", Arc::clone(&flag))
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("count").constraint("flag")));
    m.recheck();
    // Once unrelated work enqueued after the recheck succeeded, the
    // scheduler has looked at the constraint again.
    let other = new_id(m.enqueue(WorkRequest::once("noop")));
    finished(&m, other);
    sync(&m);
    let i = info(&m, id);
    assert_eq!(i.state, WorkState::Enqueued);
    assert_eq!(i.run_attempts, 0);
    assert_eq!(count(&runs), 0);

    flag.0.store(true, Ordering::SeqCst);
    m.recheck();
    assert!(
        wait_until(|| info(&m, id).state == WorkState::Succeeded, LONG),
        "recheck did not start it: {:?}",
        m.info(id)
    );
    assert_eq!(count(&runs), 1);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn constraint_is_polled() {
    let clock = ManualClock::default();
    let flag = Arc::new(Flag::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .constraint("flag", Arc::clone(&flag))
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("count").constraint("flag")));
    sync(&m);
    assert_eq!(info(&m, id).state, WorkState::Enqueued);
    flag.0.store(true, Ordering::SeqCst);
    // No event: the poll (20 ms) finds it.
    assert!(
        wait_until(|| info(&m, id).state == WorkState::Succeeded, LONG),
        "the poll did not start it: {:?}",
        m.info(id)
    );
    assert_eq!(count(&runs), 1);
    m.stop();
    m.join(Duration::MAX);
}

// ---- shutdown, operations, edge cases ---------------------------------------

#[test]
fn shutdown_stops_runs_and_leaves_them_enqueued() {
    let clock = ManualClock::default();
    let (m, started, saw_stop) = spinning_manager(&clock);
    let id = new_id(m.enqueue(WorkRequest::once("spin")));
    assert!(wait_until(|| started.load(Ordering::SeqCst), LONG));
    m.stop();
    m.join(Duration::MAX);
    assert!(
        wait_until(|| saw_stop.load(Ordering::SeqCst), LONG),
        "is_stopped never became true"
    );
    let i = info(&m, id);
    assert_eq!(
        i.state,
        WorkState::Enqueued,
        "to run again on the next start: {i:?}"
    );
    assert_eq!(i.output, None);
}

#[test]
fn watch_iteration_ends_when_the_manager_stops() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let watch = m.watch(WorkQuery::All);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let states: Vec<WorkState> = watch.map(|i| i.state).collect();
        tx.send(states).unwrap();
    });
    let id = new_id(m.enqueue(WorkRequest::once("noop")));
    finished(&m, id);
    m.stop();
    m.join(Duration::MAX);
    let states = rx.recv_timeout(LONG).expect("the iteration ended");
    assert_eq!(states.last(), Some(&WorkState::Succeeded), "{states:?}");
    reader.join().unwrap();
}

#[test]
fn operation_can_be_polled() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let mut op = m.enqueue(WorkRequest::once("noop").initial_delay(HOUR));
    let mut answer = None;
    assert!(wait_until(
        || {
            answer = op.try_take();
            answer.is_some()
        },
        LONG
    ));
    assert!(matches!(answer, Some(Ok(Enqueued::New(_)))), "{answer:?}");
    assert!(op.is_done());
    assert_eq!(op.try_take(), None, "answered once");
    assert_eq!(op.wait(), Err(WorkError::AlreadyTaken), "answered once");

    let mut op = m.cancel(WorkQuery::All);
    assert_eq!(op.wait_timeout(LONG), Some(Ok(1)));
    // Refused requests answer at once.
    let mut refused = m.enqueue(WorkRequest::once("nobody"));
    assert_eq!(
        refused.try_take(),
        Some(Err(WorkError::UnknownHandler("nobody".into())))
    );
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn progress_over_the_data_limit_is_dropped() {
    let clock = ManualClock::default();
    let (sent, gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
    let (s, g) = (Arc::clone(&sent), Arc::clone(&gate));
    let m = builder(&clock)
        .data_limit(64)
        .handler_fn("steps", move |(): (), w: &WorkContext<'_>| {
            w.set_progress(&5u32);
            w.set_progress(&vec![0u8; 1000]);
            s.open();
            g.wait();
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("steps")));
    assert!(sent.wait(), "the handler never set its progress");
    // The progress was sent before this round trip: it is stored now.
    sync(&m);
    let i = info(&m, id);
    assert_eq!(i.state, WorkState::Running);
    assert_eq!(
        i.progress::<u32>(),
        Some(Ok(5)),
        "the big progress was dropped"
    );
    gate.open();
    assert_eq!(finished(&m, id).state, WorkState::Succeeded);
    m.stop();
    m.join(Duration::MAX);
}

/// A constraint that panics when asked.
#[derive(Debug)]
struct Broken;

impl Constraint for Broken {
    fn holds(&self) -> bool {
        panic!("the sensor fell off")
    }
}

#[test]
fn a_panicking_constraint_does_not_hold() {
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .constraint("broken", Broken)
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    let id = new_id(m.enqueue(WorkRequest::once("count").constraint("broken")));
    m.recheck();
    let other = new_id(m.enqueue(WorkRequest::once("noop")));
    assert_eq!(
        finished(&m, other).state,
        WorkState::Succeeded,
        "the scheduler goes on"
    );
    sync(&m);
    assert_eq!(info(&m, id).state, WorkState::Enqueued);
    assert_eq!(count(&runs), 0);
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn periodic_work_replacing_itself_retires_after_its_run() {
    let clock = ManualClock::default();
    let slot: Arc<OnceLock<WorkManager>> = Arc::default();
    let seen: Arc<Renewal> = Arc::default();
    let (sl, se) = (Arc::clone(&slot), Arc::clone(&seen));
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .handler_fn("renew", move |(): (), w: &WorkContext<'_>| {
            let m = sl.get().expect("the manager is set");
            let next = WorkRequest::periodic("count", HOUR);
            let r = m
                .enqueue_unique("renew", ExistingWork::Replace, next)
                .wait();
            *se.lock().unwrap() = Some((r, w.is_stopped()));
            WorkResult::Success(())
        })
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    assert!(slot.set(m.clone()).is_ok());
    let old = new_id(m.enqueue_unique(
        "renew",
        ExistingWork::Replace,
        WorkRequest::periodic("renew", HOUR),
    ));
    let i = finished(&m, old);
    // Its run completed (it was not stopped), then it retired.
    assert_eq!(i.state, WorkState::Cancelled, "{i:?}");
    assert_eq!(i.periods, 1);
    let (r, stopped) = seen.lock().unwrap().take().expect("the handler ran");
    assert!(!stopped, "the run was told to stop");
    let new = match r {
        Ok(Enqueued::New(ids)) => ids[0],
        other => panic!("the replacement was not enqueued: {other:?}"),
    };
    wait_for(&m, new, "ran its first period", |i| i.periods == 1);
    assert_eq!(named(&m, "renew"), vec![new]);

    clock.advance(HOUR);
    wait_for(&m, new, "ran its second period", |i| i.periods == 2);
    sync(&m);
    let i = info(&m, old);
    assert_eq!(
        (i.state, i.periods),
        (WorkState::Cancelled, 1),
        "the old work ran again"
    );
    m.stop();
    m.join(Duration::MAX);
}

// ---- edge cases: huge durations, callbacks that call back, foreign rows ----

/// The manager still answers (its scheduler thread did not die).
fn scheduler_alive(m: &WorkManager) -> bool {
    let mut op = m.cancel(WorkQuery::Tag("none".into()));
    matches!(op.wait_timeout(Duration::from_secs(3)), Some(Ok(0)))
}

#[test]
fn huge_periodic_interval_does_not_kill_the_scheduler() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let req = WorkRequest::periodic("noop", Duration::MAX).flex(MINUTE);
    let mut op = m.enqueue(req);
    let r = op.wait_timeout(Duration::from_secs(3));
    assert!(
        matches!(r, Some(Ok(_)) | Some(Err(WorkError::Invalid(_)))),
        "{r:?}"
    );
    assert!(scheduler_alive(&m), "scheduler thread died");
}

#[test]
fn huge_initial_delay_in_chain_does_not_kill_the_scheduler() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let chain = WorkChain::new(WorkRequest::once("noop"))
        .then(WorkRequest::once("noop").initial_delay(Duration::MAX));
    let ids = new_ids(m.enqueue(chain));
    // The first runs and succeeds; resolving the second computes now + delay.
    let _ = m.wait_finished(ids[0], Duration::from_secs(3));
    assert!(scheduler_alive(&m), "scheduler thread died");
}

#[test]
fn update_with_huge_initial_delay_does_not_kill_the_scheduler() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    new_id(m.enqueue_unique(
        "u",
        ExistingWork::Keep,
        WorkRequest::once("noop").initial_delay(HOUR),
    ));
    let mut op = m.enqueue_unique(
        "u",
        ExistingWork::Update,
        WorkRequest::once("noop").initial_delay(Duration::MAX),
    );
    let _ = op.wait_timeout(Duration::from_secs(3));
    assert!(scheduler_alive(&m), "scheduler thread died");
}

#[test]
fn huge_periodic_initial_delay_with_flex_does_not_kill_the_scheduler() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let req = WorkRequest::periodic("noop", HOUR)
        .flex(MINUTE)
        .initial_delay(Duration::MAX);
    let mut op = m.enqueue(req);
    let _ = op.wait_timeout(Duration::from_secs(3));
    assert!(scheduler_alive(&m), "scheduler thread died");
}

#[test]
fn far_future_clock_does_not_kill_the_scheduler() {
    let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_millis(i64::MAX as u64));
    let m = builder(&clock).spawn().unwrap();
    assert!(scheduler_alive(&m), "scheduler thread died");
}

#[test]
fn append_to_periodic_work_is_not_blocked_forever() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    let p = new_id(m.enqueue_unique("n", ExistingWork::Keep, WorkRequest::periodic("noop", HOUR)));
    let r = m
        .enqueue_unique("n", ExistingWork::Append, WorkRequest::once("noop"))
        .wait();
    let id = match r {
        Err(WorkError::Invalid(_)) => return, // refused: fine
        Ok(Enqueued::New(ids)) => ids[0],
        other => panic!("{other:?}"),
    };
    wait_for(&m, p, "ran", |i| i.periods == 1);
    clock.advance(HOUR);
    wait_for(&m, p, "ran again", |i| i.periods == 2);
    sync(&m);
    let i = info(&m, id);
    assert!(
        i.state != WorkState::Blocked,
        "appended one-off waits forever on periodic work that never finishes: {i:?}"
    );
}

/// A handler whose on_timeout enqueues and waits, as a user might.
struct EnqueueOnTimeout {
    slot: Arc<OnceLock<WorkManager>>,
}

impl Handler for EnqueueOnTimeout {
    type Input = ();
    type Output = ();
    fn run(&self, (): (), w: &WorkContext<'_>) -> WorkResult<()> {
        wait_until(|| w.is_stopped(), LONG);
        WorkResult::Success(())
    }
    fn on_timeout(&self, _info: &WorkInfo) {
        let m = self.slot.get().unwrap();
        let _ = m.enqueue(WorkRequest::once("noop")).wait();
    }
}

#[test]
fn on_timeout_that_enqueues_and_waits_does_not_deadlock() {
    let clock = ManualClock::default();
    let slot: Arc<OnceLock<WorkManager>> = Arc::default();
    let m = builder(&clock)
        .handler(
            "slow",
            EnqueueOnTimeout {
                slot: Arc::clone(&slot),
            },
        )
        .spawn()
        .unwrap();
    assert!(slot.set(m.clone()).is_ok());
    new_id(m.enqueue(WorkRequest::once("slow").time_limit(Duration::from_millis(50))));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        scheduler_alive(&m),
        "the scheduler deadlocked in on_timeout"
    );
}

#[test]
fn queued_run_is_not_timed_out_behind_a_cancelled_one() {
    let clock = ManualClock::default();
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let started = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&started);
    let runs = Arc::new(AtomicUsize::new(0));
    let m = builder(&clock)
        .workers(1)
        .stop_grace(Duration::from_secs(5))
        .handler_fn("stubborn", move |(): (), _: &WorkContext<'_>| {
            st.store(true, Ordering::SeqCst);
            g.wait(); // ignores is_stopped
            WorkResult::Success(())
        })
        .handler_fn("count", counting(&runs))
        .spawn()
        .unwrap();
    let a = new_id(m.enqueue(WorkRequest::once("stubborn")));
    assert!(wait_until(|| started.load(Ordering::SeqCst), LONG));
    assert_eq!(m.cancel(WorkQuery::Id(a)).wait(), Ok(1));
    let b = new_id(m.enqueue(WorkRequest::once("count").time_limit(Duration::from_millis(200))));
    std::thread::sleep(Duration::from_millis(600));
    sync(&m);
    let i = info(&m, b);
    gate.open();
    assert_eq!(count(&runs), 0);
    assert!(
        i.failure.is_none() && i.retries == 0,
        "b never ran, yet it was charged a timeout: {i:?}"
    );
    m.stop();
    m.join(Duration::MAX);
}

#[test]
fn caller_of_another_manager_is_not_taken_for_self_replacement() {
    // Two managers: ids start at 1 in both. A handler of manager 1 (work#1)
    // replaces work under a name in manager 2 whose work#1 runs now.
    let clock = ManualClock::default();
    let (m2, started, saw_stop) = spinning_manager(&clock);
    let slot: Arc<OnceLock<WorkManager>> = Arc::default();
    let sl = Arc::clone(&slot);
    let m1 = builder(&clock)
        .handler_fn("replacer", move |(): (), _: &WorkContext<'_>| {
            let m2 = sl.get().unwrap();
            let _ = m2
                .enqueue_unique(
                    "n",
                    ExistingWork::Replace,
                    WorkRequest::once("noop").initial_delay(HOUR),
                )
                .wait();
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    assert!(slot.set(m2.clone()).is_ok());
    let spin = new_id(m2.enqueue_unique("n", ExistingWork::Keep, WorkRequest::once("spin")));
    assert!(wait_until(|| started.load(Ordering::SeqCst), LONG));
    let r = new_id(m1.enqueue(WorkRequest::once("replacer")));
    assert_eq!(spin, r, "same id in both stores");
    finished(&m1, r);
    sync(&m2);
    // Replaced: cancelled and deleted. Taken for a self-replacement, it
    // would still be there, running.
    let i = m2.info(spin);
    assert!(
        i.is_none(),
        "replaced work kept running: {i:?}; saw_stop={}",
        saw_stop.load(Ordering::SeqCst)
    );
    m1.stop();
    m1.join(Duration::MAX);
    m2.stop();
    m2.join(Duration::MAX);
}

/// A store path under the temp dir, removed with its WAL files on drop.
struct TmpDb(std::path::PathBuf);

impl TmpDb {
    fn clear(&self) {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
        }
    }
}

impl AsRef<std::path::Path> for TmpDb {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TmpDb {
    fn drop(&mut self) {
        self.clear();
    }
}

fn edge_tmp(name: &str) -> TmpDb {
    let p = std::env::temp_dir().join(format!("isolates-edge-{}-{name}.db", std::process::id()));
    let db = TmpDb(p);
    db.clear();
    db
}

#[test]
fn a_text_row_does_not_make_the_whole_store_unreadable() {
    let path = edge_tmp("textrow");
    {
        let clock = ManualClock::default();
        let m = WorkManager::builder(WorkStore::open(&path).unwrap())
            .clock(clock.clone())
            .handler_fn(
                "noop",
                |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
            )
            .spawn()
            .unwrap();
        new_id(m.enqueue(WorkRequest::once("noop").initial_delay(HOUR)));
        m.stop();
        m.join(Duration::MAX);
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("INSERT INTO works (id, record) VALUES (7, 'some text')", [])
            .unwrap();
    }
    let store = WorkStore::open(&path).unwrap();
    let r = store.unreadable();
    assert!(r.is_ok(), "one odd row fails the whole load: {r:?}");
}

#[test]
fn a_huge_stored_id_does_not_hang_every_operation() {
    let path = edge_tmp("hugeid");
    {
        let m = WorkManager::builder(WorkStore::open(&path).unwrap())
            .spawn()
            .unwrap();
        m.stop();
        m.join(Duration::MAX);
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO works (id, record) VALUES (?1, x'00')",
            [i64::MAX],
        )
        .unwrap();
    }
    // The ids are used up: the store is refused with a clear error at
    // start, instead of every later write failing.
    let err = WorkManager::builder(WorkStore::open(&path).unwrap())
        .handler_fn(
            "noop",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .unwrap_err();
    assert!(
        matches!(&err, WorkError::Store(StoreError::Corrupt { detail, .. }) if detail.contains("id")),
        "{err}"
    );
}

#[test]
fn shutdown_then_restart_does_not_run_a_work_twice_at_once() {
    let path = edge_tmp("restart");
    let clock = ManualClock::default();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let make = |store: WorkStore| {
        let (i, mo, g) = (Arc::clone(&inside), Arc::clone(&most), Arc::clone(&gate));
        WorkManager::builder(store)
            .clock(clock.clone())
            .handler_fn("once", move |(): (), w: &WorkContext<'_>| {
                let n = i.fetch_add(1, Ordering::SeqCst) + 1;
                mo.fetch_max(n, Ordering::SeqCst);
                // Stops when told, after a slow cleanup (within the grace).
                while !w.is_stopped() && !g.is_open() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(200));
                i.fetch_sub(1, Ordering::SeqCst);
                WorkResult::Success(())
            })
            .spawn()
            .unwrap()
    };
    let m = make(WorkStore::open(&path).unwrap());
    let id = new_id(m.enqueue(WorkRequest::once("once")));
    assert!(wait_until(|| inside.load(Ordering::SeqCst) == 1, LONG));
    m.stop();
    m.join(Duration::MAX);
    let m2 = make(WorkStore::open(&path).unwrap());
    let _ = m2.wait_for(id, Duration::from_secs(2), |i| {
        i.state == WorkState::Running
    });
    std::thread::sleep(Duration::from_millis(200));
    let seen = most.load(Ordering::SeqCst);
    gate.open();
    m2.stop();
    m2.join(Duration::MAX);
    assert_eq!(
        seen, 1,
        "two runs of {id} at once (shutdown returned while its run went on)"
    );
}

/// Drops a flag when dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Holds the last manager clone and drops it in on_timeout (the scheduler thread).
struct DropsManagerOnTimeout {
    manager: Mutex<Option<WorkManager>>,
    _flag: DropFlag,
}

impl Handler for DropsManagerOnTimeout {
    type Input = ();
    type Output = ();
    fn run(&self, (): (), w: &WorkContext<'_>) -> WorkResult<()> {
        wait_until(|| w.is_stopped(), LONG);
        WorkResult::Success(())
    }
    fn on_timeout(&self, _info: &WorkInfo) {
        drop(self.manager.lock().unwrap().take());
    }
}

#[test]
fn last_clone_dropped_on_the_scheduler_thread_frees_the_handlers() {
    let clock = ManualClock::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let holder: Arc<OnceLock<Arc<DropsManagerOnTimeout>>> = Arc::default();
    let h = Arc::new(DropsManagerOnTimeout {
        manager: Mutex::new(None),
        _flag: DropFlag(Arc::clone(&dropped)),
    });
    // Register via a thin wrapper so the test keeps no strong ref.
    struct Wrap(Arc<DropsManagerOnTimeout>);
    impl Handler for Wrap {
        type Input = ();
        type Output = ();
        fn run(&self, i: (), w: &WorkContext<'_>) -> WorkResult<()> {
            self.0.run(i, w)
        }
        fn on_timeout(&self, info: &WorkInfo) {
            self.0.on_timeout(info)
        }
    }
    let m = builder(&clock)
        .handler("t", Wrap(Arc::clone(&h)))
        .spawn()
        .unwrap();
    *h.manager.lock().unwrap() = Some(m.clone());
    drop(holder);
    new_id(m.enqueue(WorkRequest::once("t").time_limit(Duration::from_millis(50))));
    let weak = Arc::downgrade(&h);
    drop(h);
    drop(m); // the handler now holds the last clone
    // on_timeout drops it on the scheduler thread: the manager should stop
    // and its handlers be freed.
    let freed = wait_until(|| dropped.load(Ordering::SeqCst), Duration::from_secs(5));
    assert!(
        freed,
        "handlers leaked (registry never withdrawn); strong={}",
        weak.strong_count()
    );
}

#[test]
fn last_clone_dropped_inside_a_handler_does_not_deadlock() {
    let clock = ManualClock::default();
    let slot: Arc<Mutex<Option<WorkManager>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let (sl, d) = (Arc::clone(&slot), Arc::clone(&done));
    let m = builder(&clock)
        .handler_fn("dropper", move |(): (), _: &WorkContext<'_>| {
            let m = sl.lock().unwrap().take();
            drop(m); // the last clone: stops the manager from its own worker
            d.store(true, Ordering::SeqCst);
            WorkResult::Success(())
        })
        .spawn()
        .unwrap();
    *slot.lock().unwrap() = Some(m.clone());
    new_id(m.enqueue(WorkRequest::once("dropper")));
    drop(m);
    assert!(
        wait_until(|| done.load(Ordering::SeqCst), Duration::from_secs(5)),
        "handler stuck in Drop"
    );
}

/// One thread's requests are handled in the order it sent them, whether
/// the scheduler's thread or the caller's own turn (a blocking wait on an
/// enqueue) handles them: a cancel sent before an enqueue never cancels
/// the work that enqueue adds.
#[test]
fn a_threads_requests_are_handled_in_the_order_it_sent_them() {
    let clock = ManualClock::default();
    let m = builder(&clock).spawn().unwrap();
    for round in 0..300 {
        let tag = format!("round-{round}");
        // Not waited for: it goes out first, and is handled first.
        let cancel = m.cancel(WorkQuery::Tag(tag.clone()));
        let id = new_id(m.enqueue(WorkRequest::once("noop").tag(&tag).initial_delay(HOUR)));
        sync(&m);
        assert_eq!(info(&m, id).state, WorkState::Enqueued, "round {round}");
        drop(cancel);
    }
    m.stop();
    m.join(Duration::MAX);
}

//! The table on its own: transitions, chains and pruning, with no store,
//! no clock and no threads.

use std::time::Duration;

use super::*;
use crate::Backoff;
use crate::schedule::request::{InputMerger, MissedAlarm, StoredBackoff, WorkQuery};

/// A table keeping finished work 1 s, retrying after at least 1 s, with a
/// 64-byte data limit.
pub(in crate::schedule) fn table() -> Table {
    Table::new(
        Limits {
            keep_finished: Duration::from_secs(1),
            min_backoff: Duration::from_secs(1),
            data_limit: 64,
        },
        1,
    )
}

/// A one-off request for `handler`, no input, as validation makes it.
pub(in crate::schedule) fn spec(handler: &str) -> Spec {
    Spec {
        handler: handler.to_owned(),
        input: None,
        periodic: None,
        initial_delay: 0,
        tags: vec![handler.to_owned()],
        constraints: Vec::new(),
        backoff: StoredBackoff::default(),
        time_limit: None,
        input_merger: InputMerger::default(),
        alarm: None,
    }
}

/// Adds `specs` as one chain of single-work stages at `now`.
pub(in crate::schedule) fn chain(t: &mut Table, specs: Vec<Spec>, now: i64) -> Vec<u64> {
    let stages = specs.into_iter().map(|s| vec![s]).collect();
    t.add_chain(stages, None, Vec::new(), now)
        .into_iter()
        .map(|id| id.0)
        .collect()
}

pub(in crate::schedule) fn state(t: &Table, id: u64) -> WorkState {
    t.get(id).expect("the work is in the table").state
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    Bincode::new().encode(value, &mut bytes).unwrap();
    bytes
}

#[test]
fn new_work_is_due_after_its_delay_and_pending_until_written() {
    let mut t = table();
    let mut later = spec("a");
    later.initial_delay = 500;
    let [id] = chain(&mut t, vec![later], 1_000)[..] else {
        panic!("one work")
    };
    assert_eq!(state(&t, id), WorkState::Enqueued);
    assert_eq!(t.due().collect::<Vec<_>>(), vec![(1_500, id)]);
    assert!(!t.is_clean());
    let (puts, deleted, _) = t.pending();
    assert_eq!(puts.map(|r| r.id).collect::<Vec<_>>(), vec![id]);
    assert!(deleted.is_empty());
    let written = t.written();
    assert_eq!(written.changed.len(), 1);
    assert_eq!(written.changed[0].id, WorkId(id));
    assert!(t.is_clean());
}

#[test]
fn a_success_finishes_the_run_and_passes_its_output_down_the_chain() {
    let mut t = table();
    let [a, b] = chain(&mut t, vec![spec("a"), spec("b")], 0)[..] else {
        panic!("two works")
    };
    assert_eq!(state(&t, b), WorkState::Blocked);
    assert_eq!(t.due().map(|(_, id)| id).collect::<Vec<_>>(), vec![a]);

    let rec = t.start(a).expect("started");
    assert_eq!((rec.state, rec.attempts), (WorkState::Running, 1));
    assert_eq!(t.due().count(), 0);
    t.progress(a, vec![1, 2]);
    assert_eq!(t.get(a).unwrap().progress, Some(vec![1, 2]));

    t.succeed(a, encoded(&7u32), 40, 10);
    let done = t.get(a).unwrap();
    assert_eq!(done.state, WorkState::Succeeded);
    assert_eq!(done.finished_at, Some(40));
    assert_eq!(done.progress, None, "progress is the run's");
    let next = t.get(b).unwrap();
    assert_eq!(next.state, WorkState::Enqueued);
    assert_eq!(next.input, Some(encoded(&7u32)));
    assert_eq!((next.enqueued_at, next.next_run_at), (40, 40));
}

#[test]
fn an_array_creating_merger_makes_a_vec_of_the_outputs() {
    let mut t = table();
    let mut join = spec("join");
    join.input_merger = InputMerger::ArrayCreating;
    let ids = t.add_chain(
        vec![vec![spec("a"), spec("b")], vec![join]],
        None,
        Vec::new(),
        0,
    );
    let [a, b, join] = [ids[0].0, ids[1].0, ids[2].0];
    t.succeed(a, encoded(&1u32), 5, 0);
    assert_eq!(state(&t, join), WorkState::Blocked, "one prerequisite left");
    t.succeed(b, encoded(&2u32), 6, 0);
    let input = t.get(join).unwrap().input.clone().expect("merged");
    assert_eq!(
        Bincode::new().decode::<Vec<u32>>(&input).unwrap(),
        vec![1, 2]
    );
}

#[test]
fn merged_outputs_over_the_data_limit_fail_the_dependent() {
    let mut t = table();
    let [a, b] = chain(&mut t, vec![spec("a"), spec("b")], 0)[..] else {
        panic!("two works")
    };
    t.succeed(a, vec![0; 100], 5, 0);
    let rec = t.get(b).unwrap();
    assert_eq!(rec.state, WorkState::Failed);
    assert!(
        rec.failure
            .as_deref()
            .unwrap()
            .contains("over the data limit of 64")
    );
}

#[test]
fn a_failure_fails_the_rest_of_the_chain_and_a_cancel_cancels_it() {
    let mut t = table();
    let [a, b, c] = chain(&mut t, vec![spec("a"), spec("b"), spec("c")], 0)[..] else {
        panic!("three works")
    };
    t.fail(a, "no".to_owned(), 9, 0);
    assert_eq!(t.get(a).unwrap().failure.as_deref(), Some("no"));
    for id in [b, c] {
        assert_eq!(state(&t, id), WorkState::Failed);
    }
    assert_eq!(
        t.get(b).unwrap().failure.as_deref(),
        Some(format!("its prerequisite {} failed", WorkId(a)).as_str())
    );

    let [d, e] = chain(&mut t, vec![spec("d"), spec("e")], 0)[..] else {
        panic!("two works")
    };
    t.take_halts();
    assert_eq!(t.cancel(&WorkQuery::Id(WorkId(d)), 12), 2);
    assert_eq!(state(&t, d), WorkState::Cancelled);
    assert_eq!(t.get(d).unwrap().failure, None, "cancelled by the app");
    assert_eq!(state(&t, e), WorkState::Cancelled);
    assert_eq!(t.get(e).unwrap().finished_at, Some(12));
    assert!(t.take_halts().contains(&d), "its run is to be stopped");
}

#[test]
fn a_long_chain_cascades_without_recursion() {
    const LINKS: usize = 20_000;
    let mut t = table();
    let ids = chain(&mut t, (0..LINKS).map(|_| spec("x")).collect(), 0);
    assert_eq!(t.cancel(&WorkQuery::Id(WorkId(ids[0])), 1), LINKS);
    assert_eq!(state(&t, ids[LINKS - 1]), WorkState::Cancelled);
}

#[test]
fn cancelling_finished_work_cancels_only_what_waits_on_it() {
    let mut t = table();
    let [a, b] = chain(&mut t, vec![spec("a"), spec("b")], 0)[..] else {
        panic!("two works")
    };
    t.succeed(a, Vec::new(), 1, 0);
    assert_eq!(t.cancel(&WorkQuery::Id(WorkId(a)), 2), 1);
    assert_eq!(state(&t, a), WorkState::Succeeded);
    assert_eq!(state(&t, b), WorkState::Cancelled);
    assert!(
        t.get(b)
            .unwrap()
            .failure
            .as_deref()
            .unwrap()
            .contains("after it finished")
    );
}

#[test]
fn a_retry_waits_for_its_backoff_and_at_least_the_minimum() {
    let mut t = table();
    let mut quick = spec("a");
    quick.backoff = Backoff::linear(Duration::from_millis(10)).into();
    let mut slow = spec("b");
    slow.backoff = Backoff::linear(Duration::from_secs(5)).into();
    let [a, b] = t.add_chain(vec![vec![quick, slow]], None, Vec::new(), 0)[..] else {
        panic!("two works")
    };
    for id in [a.0, b.0] {
        t.start(id);
        t.retry(id, Some("again".to_owned()), 100);
    }
    let a = t.get(a.0).unwrap();
    assert_eq!(
        (a.state, a.retries, a.next_run_at),
        (WorkState::Enqueued, 1, 1_100)
    );
    assert_eq!(a.failure.as_deref(), Some("again"));
    assert_eq!(t.get(b.0).unwrap().next_run_at, 5_100);
}

#[test]
fn periodic_work_moves_to_its_next_period_and_a_late_run_pushes_it() {
    let mut t = table();
    let mut tick = spec("tick");
    tick.periodic = Some((60_000, 60_000));
    let [id] = chain(&mut t, vec![tick], 0)[..] else {
        panic!("one work")
    };
    t.start(id);
    t.fail(id, "flaky".to_owned(), 100, 0);
    let rec = t.get(id).unwrap();
    assert_eq!(rec.state, WorkState::Enqueued, "periodic work never fails");
    assert_eq!((rec.next_run_at, rec.periods, rec.attempts), (60_000, 1, 0));

    t.start(id);
    t.succeed(id, Vec::new(), 150_100, 150_000);
    let rec = t.get(id).unwrap();
    assert_eq!(rec.next_run_at, 210_000, "one interval after the late run");
    assert_eq!(rec.periods, 2);
}

#[test]
fn loading_requeues_interrupted_runs_and_ends_self_replaced_work() {
    let mut t = table();
    let ids = t.add_chain(
        vec![vec![spec("run"), spec("retired"), spec("pre")]],
        None,
        Vec::new(),
        0,
    );
    let [run, retired, pre] = [ids[0].0, ids[1].0, ids[2].0];
    let [dep] = t.add_chain(vec![vec![spec("dep")]], None, vec![pre], 0)[..] else {
        panic!("one work")
    };
    t.start(run);
    t.progress(run, vec![1]);
    t.start(retired);
    t.retire(retired);
    t.start(pre);
    let mut stored: Vec<Record> = t.records().cloned().collect();
    // The prerequisite's success was stored, its dependent's was not.
    for r in &mut stored {
        if r.id == pre {
            r.state = WorkState::Succeeded;
            r.output = Some(encoded(&3u8));
        }
    }

    let mut loaded = table();
    loaded.load(stored, 5_000);
    let r = loaded.get(run).unwrap();
    assert_eq!(
        (r.state, r.next_run_at, r.progress.clone()),
        (WorkState::Enqueued, 0, None)
    );
    let r = loaded.get(retired).unwrap();
    assert_eq!(r.state, WorkState::Cancelled);
    assert_eq!(r.failure.as_deref(), Some(REPLACED));
    let r = loaded.get(dep.0).unwrap();
    assert_eq!(
        (r.state, r.input.clone()),
        (WorkState::Enqueued, Some(encoded(&3u8)))
    );
    let (puts, _, _) = loaded.pending();
    let mut dirty: Vec<u64> = puts.map(|r| r.id).collect();
    dirty.sort_unstable();
    assert_eq!(dirty, vec![run, retired, dep.0]);
}

#[test]
fn finished_work_is_pruned_after_its_retention_once_nothing_waits_on_it() {
    let mut t = table();
    let [a, b] = chain(&mut t, vec![spec("a"), spec("b")], 0)[..] else {
        panic!("two works")
    };
    t.written();
    t.prune(0); // the first turn looks at what was loaded
    assert_eq!(t.next_prune(), None, "nothing finished: no look is due");
    t.succeed(a, Vec::new(), 0, 0);
    assert_eq!(t.next_prune(), Some(60_000), "at most one look a minute");
    t.prune(60_000);
    assert!(t.get(a).is_some(), "b waits on a");
    assert_eq!(t.next_prune(), None, "nothing to look for until b finishes");

    t.succeed(b, Vec::new(), 61_000, 60_000);
    assert_eq!(t.next_prune(), Some(120_000));
    t.prune(119_999);
    assert!(t.get(b).is_some());
    t.prune(120_000);
    assert!(t.get(a).is_none() && t.get(b).is_none());
    let mut deleted = t.written().deleted;
    deleted.sort_unstable();
    assert_eq!(deleted, vec![a, b]);
    assert_eq!(t.next_prune(), None);
}

#[test]
fn an_alarm_is_skipped_once_it_missed_its_window() {
    let mut t = table();
    let mut alarm = spec("wake");
    alarm.alarm = Some(Alarm {
        at: 1_000,
        missed: MissedAlarm::SkipAfter(Duration::from_secs(1)),
    });
    let mut once = spec("once");
    once.alarm = Some(Alarm {
        at: 1_000,
        missed: MissedAlarm::RunOnce,
    });
    let [a, o] = t.add_chain(vec![vec![alarm, once]], None, Vec::new(), 0)[..] else {
        panic!("two works")
    };
    assert_eq!(t.get(a.0).unwrap().next_run_at, 1_000);
    let rec = t.get(a.0).unwrap();
    assert_eq!(
        Table::missed_alarm(rec, 1_000, 2_000),
        None,
        "on the window's edge"
    );
    assert_eq!(
        Table::missed_alarm(rec, 1_000, 2_500),
        Some((Duration::from_millis(1_500), Duration::from_secs(1)))
    );
    assert_eq!(
        Table::missed_alarm(t.get(o.0).unwrap(), 1_000, 99_000),
        None
    );
}

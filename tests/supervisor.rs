//! Supervision with OTP semantics: strategies, restart types, intensity and
//! escalation through two levels, backoff, mailboxes kept across restarts,
//! shutdown order, events.

mod common;
#[path = "common/supervised.rs"]
mod supervised;

use std::time::{Duration, Instant};

use common::wait_until;
use isolates::Backoff;
use isolates::supervisor::{ChildSpec, Restart, Shutdown, Strategy, SupervisionEvent, Supervisor};
use isolates::{AskError, ExitReason, IsolateHandle, ReceivePort, SendPort, SpawnError, port};
use supervised::{
    Msg, T, Worker, args, count, events, expect_event, logged_args, restarted, worker,
};

/// Three workers a, b, c with a = 1, b = 2, c = 3 increments.
fn three(strategy: Strategy, c_restart: Restart) -> (Supervisor, [IsolateHandle<Worker>; 3]) {
    let sup = Supervisor::builder()
        .strategy(strategy)
        .restart_intensity(5, Duration::from_secs(5))
        .child(ChildSpec::worker::<Worker>("a", args("a")))
        .child(ChildSpec::worker::<Worker>("b", args("b")))
        .child(ChildSpec::worker::<Worker>("c", args("c")).restart(c_restart))
        .spawn()
        .unwrap();
    let handles = [worker(&sup, "a"), worker(&sup, "b"), worker(&sup, "c")];
    for (n, h) in handles.iter().enumerate() {
        for _ in 0..=n {
            h.cast(Msg::Incr).unwrap();
        }
        // Handled before any crash: a restart would keep queued casts for
        // the next incarnation.
        assert_eq!(count(h), n as u64 + 1);
    }
    (sup, handles)
}

#[test]
fn one_for_one_restarts_only_the_child_that_died() {
    let (sup, [a, b, c]) = three(Strategy::OneForOne, Restart::Permanent);
    let ev = events(&sup);
    assert!(
        matches!(b.ask_timeout(Msg::Panic, T), Err(AskError::Panicked(m)) if m.contains("b was told"))
    );
    expect_event(&ev, restarted("b"));
    // The same handle reaches the new incarnation; its count starts over.
    assert_eq!(count(&b), 0);
    assert_eq!(count(&a), 1);
    assert_eq!(count(&c), 3);
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn one_for_all_restarts_every_child_but_temporary_ones() {
    let (sup, [a, b, c]) = three(Strategy::OneForAll, Restart::Temporary);
    let ev = events(&sup);
    assert!(b.ask_timeout(Msg::Fail, T).is_err());
    expect_event(&ev, restarted("a"));
    expect_event(&ev, restarted("b"));
    assert_eq!(count(&a), 0);
    assert_eq!(count(&b), 0);
    // The temporary child was stopped by its sibling's death, not restarted.
    assert_eq!(c.join(T), Some(ExitReason::Killed));
    assert!(matches!(c.ask_timeout(Msg::Get, T), Err(AskError::Dead(_))));
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn rest_for_one_restarts_the_child_and_those_after_it() {
    let (sup, [a, b, c]) = three(Strategy::RestForOne, Restart::Permanent);
    let ev = events(&sup);
    assert!(b.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, restarted("b"));
    expect_event(&ev, restarted("c"));
    assert_eq!(count(&a), 1);
    assert_eq!(count(&b), 0);
    assert_eq!(count(&c), 0);
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn restart_types_decide_by_exit_reason() {
    let sup = Supervisor::builder()
        .restart_intensity(10, Duration::from_secs(5))
        .child(ChildSpec::worker::<Worker>("perm", args("perm")))
        .child(ChildSpec::worker::<Worker>("trans", args("trans")).restart(Restart::Transient))
        .child(ChildSpec::worker::<Worker>("trans2", args("trans2")).restart(Restart::Transient))
        .child(ChildSpec::worker::<Worker>("temp", args("temp")).restart(Restart::Temporary))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    let (perm, trans, trans2, temp) = (
        worker(&sup, "perm"),
        worker(&sup, "trans"),
        worker(&sup, "trans2"),
        worker(&sup, "temp"),
    );
    // Permanent: even a normal exit is restarted.
    perm.cast(Msg::Stop).unwrap();
    expect_event(&ev, restarted("perm"));
    assert_eq!(count(&perm), 0);
    // Transient: a normal exit ends it...
    trans.cast(Msg::Stop).unwrap();
    assert_eq!(trans.join(T), Some(ExitReason::Normal));
    // ...an abnormal one restarts it.
    assert!(trans2.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, restarted("trans2"));
    assert_eq!(count(&trans2), 0);
    // Temporary: never restarted.
    assert!(temp.ask_timeout(Msg::Panic, T).is_err());
    assert!(matches!(temp.join(T), Some(ExitReason::Panicked(_))));
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn intensity_escalates_through_two_levels() {
    // inner allows 1 restart in 5 s; root allows 1 restart of inner.
    let inner = Supervisor::builder()
        .name("inner")
        .restart_intensity(1, Duration::from_secs(5))
        .child(ChildSpec::worker::<Worker>("w", args("w")));
    let root = Supervisor::builder()
        .name("root")
        .restart_intensity(1, Duration::from_secs(5))
        .child(ChildSpec::supervisor("inner", inner))
        .spawn()
        .unwrap();
    let root_events = events(&root);

    // Two crashes in the window: inner restarts once, then gives up; root
    // sees inner exit and restarts it (a fresh tree).
    let first = root.supervisor("inner").unwrap();
    let w = first.worker::<Worker>("w").unwrap();
    assert!(w.ask_timeout(Msg::Panic, T).is_err());
    assert!(wait_until(|| w.ask_timeout(Msg::Get, T) == Ok(0), T));
    assert!(w.ask_timeout(Msg::Panic, T).is_err());
    assert!(
        matches!(first.join(T), Some(ExitReason::Failed(why)) if why.contains("restart intensity"))
    );
    expect_event(&root_events, restarted("inner"));

    // The fresh inner tree works, with a new worker.
    assert!(wait_until(
        || root
            .supervisor("inner")
            .is_ok_and(|s| s.exit_reason().is_none()),
        T
    ));
    let second = root.supervisor("inner").unwrap();
    let w2 = second.worker::<Worker>("w").unwrap();
    assert_eq!(count(&w2), 0);

    // Two more crashes: inner gives up again, which is root's second
    // restart in its window: root gives up too.
    assert!(w2.ask_timeout(Msg::Panic, T).is_err());
    assert!(wait_until(|| w2.ask_timeout(Msg::Get, T) == Ok(0), T));
    assert!(w2.ask_timeout(Msg::Panic, T).is_err());
    match root.join(T) {
        Some(ExitReason::Failed(why)) => assert!(why.contains("root"), "{why}"),
        other => panic!("root should have given up, got {other:?}"),
    }
    expect_event(&root_events, |e| {
        matches!(e, SupervisionEvent::GaveUp { .. })
    });
}

#[test]
fn backoff_delays_restarts() {
    let min = Duration::from_millis(80);
    let sup = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .backoff(Backoff::exponential(min).max(Duration::from_secs(1)))
        .child(ChildSpec::worker::<Worker>("w", args("w")))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    let w = worker(&sup, "w");
    for expected in [min, min * 2] {
        let crashed = Instant::now();
        assert!(w.ask_timeout(Msg::Panic, T).is_err());
        expect_event(&ev, restarted("w"));
        let waited = crashed.elapsed();
        assert!(
            waited >= expected,
            "restarted after {waited:?}, backoff {expected:?}"
        );
    }
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn a_crash_loses_no_queued_message() {
    let sup = Supervisor::builder()
        .child(ChildSpec::worker::<Worker>("w", args("w")))
        .spawn()
        .unwrap();
    let w = worker(&sup, "w");
    // Hold the worker inside a message, queue work behind it, then make
    // the message at the head panic.
    let (gate_tx, gate_rx) = port::bounded::<SendPort<()>>(1);
    let mut blocked = w.ask_pending(Msg::Block(gate_tx));
    let release = gate_rx.recv_timeout(T).unwrap();
    let mut crash = w.ask_pending(Msg::Panic);
    for _ in 0..100 {
        w.cast(Msg::Incr).unwrap();
    }
    let mut after: Vec<_> = (0..10).map(|_| w.ask_pending(Msg::Get)).collect();
    release.send(()).unwrap();

    assert_eq!(blocked.wait_timeout(T), Some(Ok(0)));
    assert!(matches!(
        crash.wait_timeout(T),
        Some(Err(AskError::Panicked(_)))
    ));
    // Every cast queued behind the crash reached the restarted worker.
    for pending in &mut after {
        assert_eq!(pending.wait_timeout(T), Some(Ok(100)));
    }
    assert_eq!(w.stats().dropped, 0);
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn children_start_in_order_and_stop_in_reverse() {
    let (log_tx, log) = port::unbounded::<String>();
    let sup = Supervisor::builder()
        .child(ChildSpec::worker::<Worker>("a", logged_args("a", &log_tx)))
        .child(ChildSpec::worker::<Worker>("b", logged_args("b", &log_tx)))
        .child(
            ChildSpec::worker::<Worker>("c", logged_args("c", &log_tx))
                .shutdown(Shutdown::Immediate),
        )
        .spawn()
        .unwrap();
    let a = worker(&sup, "a");
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
    drop(log_tx);
    let mut lines = Vec::new();
    while lines.len() < 6 {
        lines.push(log.recv_timeout(T).unwrap());
    }
    // Starts are in child order; stops in reverse.
    let starts: Vec<_> = lines.iter().filter(|l| l.starts_with("start")).collect();
    let stops: Vec<_> = lines.iter().filter(|l| l.starts_with("stop")).collect();
    assert_eq!(starts, ["start a", "start b", "start c"]);
    assert_eq!(stops, ["stop c", "stop b", "stop a"]);
    // The stopped children are gone for good.
    assert!(matches!(
        a.ask_timeout(Msg::Get, T),
        Err(AskError::Dead(ExitReason::Killed))
    ));
}

#[test]
fn a_child_that_cannot_start_fails_the_supervisor_start() {
    let err = Supervisor::builder()
        .child(ChildSpec::worker_with::<Worker, _>(
            "bad",
            isolates::IsolateBuilder::new().mailbox(isolates::Mailbox::Bounded(0)),
            args("bad"),
        ))
        .spawn()
        .unwrap_err();
    assert_eq!(err, isolates::SpawnError::ZeroCapacity);
}

#[test]
fn the_crashing_message_is_retried_only_when_asked_and_only_so_often() {
    let sup = Supervisor::builder()
        .restart_intensity(10, Duration::from_secs(5))
        .child(ChildSpec::worker::<Worker>("w", args("w")))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    let w = worker(&sup, "w");
    let exits = |rx: &ReceivePort<SupervisionEvent>, n: usize| {
        for _ in 0..n {
            expect_event(rx, |e| matches!(e, SupervisionEvent::Restarted { .. }));
        }
    };
    // A plain ask is not retried: one crash.
    assert!(matches!(
        w.ask_timeout(Msg::Panic, T),
        Err(AskError::Panicked(_))
    ));
    exits(&ev, 1);
    // A poison message with three attempts crashes the worker three times,
    // then the caller gets the panic: no loop.
    assert!(matches!(
        w.ask_retrying(Msg::Panic, T, 3),
        Err(AskError::Panicked(_))
    ));
    exits(&ev, 3);
    assert_eq!(count(&w), 0);
    // Nothing more was restarted.
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
    let restarts = ev
        .try_iter()
        .filter(|e| matches!(e, SupervisionEvent::Restarted { .. }))
        .count();
    assert_eq!(restarts, 0);
}

/// Regression: an exit of another child while the supervisor waits for a
/// child to stop must still be handled (restarted, counted).
#[test]
fn a_sibling_exit_during_a_stop_is_not_lost() {
    let sup = Supervisor::builder()
        .strategy(Strategy::RestForOne)
        .restart_intensity(5, Duration::from_secs(5))
        .child(ChildSpec::worker::<Worker>("a", args("a")))
        .child(ChildSpec::worker::<Worker>("b", args("b")))
        .child(ChildSpec::worker::<Worker>("c", args("c")).shutdown(Shutdown::Timeout(T)))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    let (a, b, c) = (worker(&sup, "a"), worker(&sup, "b"), worker(&sup, "c"));
    // c is held inside a message; b's crash makes the supervisor stop c
    // and wait for it.
    let (gate_tx, gate_rx) = port::bounded::<SendPort<()>>(1);
    let mut held = c.ask_pending(Msg::Block(gate_tx));
    let release = gate_rx.recv_timeout(T).unwrap();
    assert!(b.ask_timeout(Msg::Panic, T).is_err());
    expect_event(
        &ev,
        |e| matches!(e, SupervisionEvent::Exited { child, .. } if child == "b"),
    );
    // While it waits, a crashes too.
    assert!(a.ask_timeout(Msg::Panic, T).is_err());
    release.send(()).unwrap();
    assert!(held.wait_timeout(T).is_some());
    expect_event(&ev, restarted("a"));
    assert_eq!(count(&a), 0);
    assert_eq!(count(&b), 0);
    assert_eq!(count(&c), 0);
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

/// Regression: a kill sent to an incarnation that then exited another way
/// must not kill the next incarnation, whose kill flag starts clear.
#[test]
fn a_stale_kill_does_not_reach_the_restarted_child() {
    let sup = Supervisor::builder()
        .strategy(Strategy::OneForAll)
        .restart_intensity(5, Duration::from_secs(5))
        .child(ChildSpec::worker::<Worker>("a", args("a")))
        .child(
            ChildSpec::worker::<Worker>("c", args("c"))
                .shutdown(Shutdown::Timeout(Duration::from_millis(20))),
        )
        .spawn()
        .unwrap();
    let ev = events(&sup);
    let (a, c) = (worker(&sup, "a"), worker(&sup, "c"));
    // c runs until it is killed: the graceful stop (after the current
    // message) times out, the immediate kill ends it, and the graceful
    // one is left queued.
    let (started_tx, started) = port::bounded::<()>(1);
    let mut running = c.ask_pending(Msg::UntilKilled(started_tx));
    started.recv_timeout(T).unwrap();
    assert!(a.ask_timeout(Msg::Panic, T).is_err());
    assert!(running.wait_timeout(T).is_some());
    expect_event(&ev, restarted("a"));
    expect_event(&ev, restarted("c"));
    // The new c is alive, not killed by the leftover request, and its
    // kill flag is clear.
    assert_eq!(c.ask_timeout(Msg::KillRequested, T), Ok(0));
    assert_eq!(count(&c), 0);
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
    let late_exits = ev
        .try_iter()
        .filter(|e| matches!(e, SupervisionEvent::Restarted { .. }))
        .count();
    assert_eq!(late_exits, 0, "nothing restarted again");
}

/// Regression: with jitter, a one-for-all wave still restarts in child
/// order.
#[test]
fn a_jittered_wave_restarts_in_child_order() {
    let (log_tx, log) = port::unbounded::<String>();
    let names = ["o0", "o1", "o2", "o3", "o4", "o5"];
    let mut builder = Supervisor::builder()
        .strategy(Strategy::OneForAll)
        .restart_intensity(20, Duration::from_secs(5))
        .backoff(
            Backoff::exponential(Duration::from_millis(5))
                .max(Duration::from_millis(50))
                .jitter(),
        );
    for name in names {
        builder = builder.child(ChildSpec::worker::<Worker>(
            name,
            logged_args(name, &log_tx),
        ));
    }
    let sup = builder.spawn().unwrap();
    let ev = events(&sup);
    for _ in 0..names.len() {
        log.recv_timeout(T).unwrap();
    }
    for wave in 0..3 {
        let victim = worker(&sup, names[wave % names.len()]);
        assert!(victim.ask_timeout(Msg::Panic, T).is_err());
        for _ in 0..names.len() {
            expect_event(&ev, |e| matches!(e, SupervisionEvent::Restarted { .. }));
        }
        let starts: Vec<String> = log.try_iter().filter(|l| l.starts_with("start")).collect();
        let expected: Vec<String> = names.iter().map(|n| format!("start {n}")).collect();
        assert_eq!(starts, expected, "wave {wave}");
    }
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn two_children_of_one_name_are_refused_before_any_starts() {
    let (log, started) = port::unbounded::<String>();
    let refused = Supervisor::builder()
        .child(ChildSpec::worker::<Worker>("a", logged_args("a", &log)))
        .child(ChildSpec::worker::<Worker>("b", logged_args("b", &log)))
        .child(ChildSpec::worker::<Worker>("a", logged_args("a2", &log)))
        .spawn();
    match refused {
        Err(SpawnError::DuplicateChild(name)) => assert_eq!(name, "a"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a supervisor with two children named \"a\" started"),
    }
    drop(log);
    // The refusal comes before any child starts: none said it started.
    assert_eq!(started.recv_timeout(T).ok(), None);
}

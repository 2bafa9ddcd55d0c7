//! Children added and removed while a supervisor runs, as OTP's
//! `start_child`, `terminate_child`, `restart_child`, `delete_child` and
//! `which_children`: the states they leave, the restart counts, the events,
//! where a late child stands in `rest_for_one` and `one_for_all`, typed
//! errors, and the non-blocking forms.

use std::time::Duration;

use isolates::Backoff;
use isolates::supervisor::{
    ChildError, ChildInfo, ChildKind, ChildSpec, Restart, Shutdown, Strategy, SupervisionEvent,
    Supervisor,
};
use isolates::{AskError, ExitReason, Mailbox, SendPort, SpawnError, port};
use supervised::{
    Args, Msg, T, Worker, args, count, events, expect_event, logged_args, restarted, worker,
};

#[path = "common/supervised.rs"]
mod supervised;

fn spec(name: &str) -> ChildSpec {
    ChildSpec::worker::<Worker>(name, args(name))
}

fn logged(name: &str, log: &SendPort<String>) -> ChildSpec {
    ChildSpec::worker::<Worker>(name, logged_args(name, log))
}

fn started(name: &str) -> impl Fn(&SupervisionEvent) -> bool + '_ {
    move |e| matches!(e, SupervisionEvent::Started { child } if child == name)
}

fn exited(name: &str) -> impl Fn(&SupervisionEvent) -> bool + '_ {
    move |e| matches!(e, SupervisionEvent::Exited { child, .. } if child == name)
}

fn info(sup: &Supervisor, name: &str) -> ChildInfo {
    sup.children()
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no child {name}"))
}

/// (name, running, restarts) of every child, in order.
fn states(sup: &Supervisor) -> Vec<(String, bool, u64)> {
    sup.children()
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.running, c.restarts))
        .collect()
}

fn state(name: &str, running: bool, restarts: u64) -> (String, bool, u64) {
    (name.to_owned(), running, restarts)
}

fn stop(sup: &Supervisor) {
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

#[test]
fn a_started_child_runs_is_listed_and_is_restarted_like_the_others() {
    let (tx, ev) = port::unbounded();
    let sup = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .event_listener(tx)
        .child(spec("a"))
        .spawn()
        .unwrap();
    expect_event(&ev, started("a"));

    sup.start_child(spec("late")).unwrap();
    expect_event(&ev, started("late"));
    sup.start_child(ChildSpec::supervisor("tree", Supervisor::builder()))
        .unwrap();
    expect_event(&ev, started("tree"));
    let children = sup.children().unwrap();
    let kinds: Vec<_> = children
        .iter()
        .map(|c| (c.name.as_str(), c.kind, c.restart, c.running, c.restarts))
        .collect();
    assert_eq!(
        kinds,
        [
            ("a", ChildKind::Worker, Restart::Permanent, true, 0),
            ("late", ChildKind::Worker, Restart::Permanent, true, 0),
            ("tree", ChildKind::Supervisor, Restart::Permanent, true, 0),
        ]
    );
    assert!(sup.supervisor("tree").is_ok());

    // The new child works and is restarted by the supervisor's policy.
    let late = worker(&sup, "late");
    late.cast(Msg::Incr).unwrap();
    assert_eq!(count(&late), 1);
    assert!(matches!(
        late.ask_timeout(Msg::Panic, T),
        Err(AskError::Panicked(_))
    ));
    expect_event(&ev, restarted("late"));
    assert_eq!(count(&late), 0);
    assert_eq!(info(&sup, "late").restarts, 1);
    assert!(info(&sup, "late").running);
    assert_eq!(info(&sup, "a").restarts, 0);

    // A second child of a name in use, running or not, is refused.
    let dup = sup.start_child(spec("late")).unwrap_err();
    assert_eq!(
        dup,
        ChildError::AlreadyPresent {
            name: "late".into()
        }
    );
    assert!(dup.to_string().contains("restart_child"), "{dup}");
    sup.terminate_child("late").unwrap();
    assert!(matches!(
        sup.start_child(spec("late")),
        Err(ChildError::AlreadyPresent { .. })
    ));
    assert_eq!(sup.children().unwrap().len(), 3);
    stop(&sup);
}

#[test]
fn terminate_restart_and_delete_follow_otp() {
    let sup = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .child(spec("a"))
        .child(spec("b"))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    let old_b = worker(&sup, "b");

    // A running child can be neither restarted nor deleted.
    assert_eq!(
        sup.restart_child("b"),
        Err(ChildError::Running { name: "b".into() })
    );
    assert_eq!(
        sup.delete_child("b"),
        Err(ChildError::Running { name: "b".into() })
    );

    // Terminated: stopped, not restarted, its spec kept.
    sup.terminate_child("b").unwrap();
    expect_event(&ev, exited("b"));
    assert_eq!(states(&sup), [state("a", true, 0), state("b", false, 0)]);
    assert_eq!(old_b.join(T), Some(ExitReason::Killed));
    assert!(matches!(
        old_b.ask_timeout(Msg::Get, T),
        Err(AskError::Dead(_))
    ));
    // Again: nothing to do.
    assert_eq!(sup.terminate_child("b"), Ok(()));

    // Restarted: a fresh child, with a fresh handle, not counted as a
    // restart by the supervisor.
    sup.restart_child("b").unwrap();
    expect_event(&ev, started("b"));
    let new_b = worker(&sup, "b");
    new_b.cast(Msg::Incr).unwrap();
    assert_eq!(count(&new_b), 1);
    assert_eq!(states(&sup), [state("a", true, 0), state("b", true, 0)]);
    assert!(matches!(
        old_b.ask_timeout(Msg::Get, T),
        Err(AskError::Dead(_))
    ));

    // Deleted: gone from the list, from lookups and from the events' view;
    // its name is free again.
    sup.terminate_child("b").unwrap();
    sup.delete_child("b").unwrap();
    expect_event(
        &ev,
        |e| matches!(e, SupervisionEvent::Deleted { child } if child == "b"),
    );
    assert_eq!(states(&sup), [state("a", true, 0)]);
    assert!(sup.worker::<Worker>("b").is_err());
    assert_eq!(
        sup.restart_child("b"),
        Err(ChildError::NotFound {
            name: "b".into(),
            children: vec!["a".into()],
        })
    );
    assert!(matches!(
        sup.delete_child("b"),
        Err(ChildError::NotFound { .. })
    ));
    assert!(matches!(
        sup.terminate_child("b"),
        Err(ChildError::NotFound { .. })
    ));
    sup.start_child(spec("b")).unwrap();
    assert_eq!(count(&worker(&sup, "b")), 0);
    stop(&sup);
}

/// A child started later comes after the earlier ones: in `rest_for_one`
/// an earlier child's exit restarts it, its own exit restarts only those
/// after it.
#[test]
fn rest_for_one_puts_late_children_after_the_earlier_ones() {
    let sup = Supervisor::builder()
        .strategy(Strategy::RestForOne)
        .restart_intensity(10, Duration::from_secs(5))
        .child(spec("a"))
        .child(spec("b"))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    sup.start_child(spec("c")).unwrap();
    sup.start_child(spec("d")).unwrap();
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| worker(&sup, n));
    for h in [&a, &b, &c, &d] {
        h.cast(Msg::Incr).unwrap();
        assert_eq!(count(h), 1);
    }

    assert!(b.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, restarted("b"));
    expect_event(&ev, restarted("c"));
    expect_event(&ev, restarted("d"));
    assert_eq!([count(&a), count(&b), count(&c), count(&d)], [1, 0, 0, 0]);
    assert_eq!(
        states(&sup),
        [
            state("a", true, 0),
            state("b", true, 1),
            state("c", true, 1),
            state("d", true, 1)
        ]
    );

    for h in [&a, &b, &c, &d] {
        h.cast(Msg::Incr).unwrap();
        // Handled before the crash: a restart keeps queued casts for the
        // next incarnation.
        count(h);
    }
    assert!(c.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, restarted("c"));
    expect_event(&ev, restarted("d"));
    assert_eq!([count(&a), count(&b), count(&c), count(&d)], [2, 1, 0, 0]);
    assert_eq!(
        states(&sup),
        [
            state("a", true, 0),
            state("b", true, 1),
            state("c", true, 2),
            state("d", true, 2)
        ]
    );
    stop(&sup);
}

/// In `one_for_all` a late child is stopped with the others and started
/// again last; a terminated child stays stopped through the wave.
#[test]
fn one_for_all_restarts_late_children_last_and_leaves_terminated_ones() {
    let (log_tx, log) = port::unbounded::<String>();
    let sup = Supervisor::builder()
        .strategy(Strategy::OneForAll)
        .restart_intensity(10, Duration::from_secs(5))
        .child(logged("a", &log_tx))
        .child(logged("b", &log_tx))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    sup.start_child(logged("c", &log_tx)).unwrap();
    sup.start_child(logged("off", &log_tx)).unwrap();
    sup.terminate_child("off").unwrap();
    let starts: Vec<String> = log.try_iter().filter(|l| l.starts_with("start ")).collect();
    assert_eq!(starts, ["start a", "start b", "start c", "start off"]);

    let a = worker(&sup, "a");
    assert!(a.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, restarted("c"));
    let starts: Vec<String> = log.try_iter().filter(|l| l.starts_with("start ")).collect();
    assert_eq!(starts, ["start a", "start b", "start c"]);
    assert_eq!(
        states(&sup),
        [
            state("a", true, 1),
            state("b", true, 1),
            state("c", true, 1),
            state("off", false, 0)
        ]
    );
    stop(&sup);
}

/// A late child's crashes count toward the supervisor's restart
/// intensity like any child's.
#[test]
fn a_late_child_counts_toward_the_restart_intensity() {
    let sup = Supervisor::builder()
        .restart_intensity(1, Duration::from_secs(30))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    sup.start_child(spec("late")).unwrap();
    let late = worker(&sup, "late");
    assert!(late.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, restarted("late"));
    assert!(late.ask_timeout(Msg::Panic, T).is_err());
    match sup.join(T) {
        Some(ExitReason::Failed(why)) => assert!(why.contains("restart intensity"), "{why}"),
        other => panic!("the supervisor should have given up, got {other:?}"),
    }
    expect_event(&ev, |e| matches!(e, SupervisionEvent::GaveUp { .. }));
}

#[test]
fn a_child_that_cannot_start_is_not_added() {
    let sup = Supervisor::builder().child(spec("a")).spawn().unwrap();
    let bad = ChildSpec::worker_with::<Worker, _>(
        "bad",
        isolates::IsolateBuilder::new().mailbox(Mailbox::Bounded(0)),
        Args {
            name: "bad".into(),
            log: None,
        },
    );
    let err = sup.start_child(bad).unwrap_err();
    assert_eq!(
        err,
        ChildError::StartFailed {
            name: "bad".into(),
            error: SpawnError::ZeroCapacity,
        }
    );
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(states(&sup), [state("a", true, 0)]);
    assert!(sup.worker::<Worker>("bad").is_err());
    // The supervisor goes on.
    assert_eq!(count(&worker(&sup, "a")), 0);
    stop(&sup);
}

/// A temporary child's spec goes with it, as in OTP: when it exits, and
/// when it is terminated.
#[test]
fn a_temporary_childs_spec_goes_when_it_ends() {
    let sup = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    sup.start_child(spec("once").restart(Restart::Temporary))
        .unwrap();
    sup.start_child(spec("job").restart(Restart::Temporary))
        .unwrap();
    let once = worker(&sup, "once");
    assert!(once.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, exited("once"));
    assert_eq!(states(&sup), [state("job", true, 0)]);
    sup.terminate_child("job").unwrap();
    assert!(sup.children().unwrap().is_empty());
    assert!(matches!(
        sup.restart_child("job"),
        Err(ChildError::NotFound { .. })
    ));
    // Both names are free.
    sup.start_child(spec("once")).unwrap();
    sup.start_child(spec("job")).unwrap();
    assert_eq!(
        states(&sup),
        [state("once", true, 0), state("job", true, 0)]
    );
    stop(&sup);
}

/// A child waiting out its backoff counts as running for `restart_child`
/// and `delete_child`; terminating it cancels the restart.
#[test]
fn terminating_a_child_in_backoff_cancels_its_restart() {
    let sup = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .backoff(Backoff::exponential(Duration::from_secs(60)).max(Duration::from_secs(60)))
        .child(spec("slow"))
        .spawn()
        .unwrap();
    let ev = events(&sup);
    let slow = worker(&sup, "slow");
    assert!(slow.ask_timeout(Msg::Panic, T).is_err());
    expect_event(&ev, exited("slow"));
    assert_eq!(states(&sup), [state("slow", false, 0)]);
    assert_eq!(
        sup.restart_child("slow"),
        Err(ChildError::Running {
            name: "slow".into()
        })
    );
    assert!(matches!(
        sup.delete_child("slow"),
        Err(ChildError::Running { .. })
    ));
    sup.terminate_child("slow").unwrap();
    // No longer due: it can be started by hand, at once.
    sup.restart_child("slow").unwrap();
    assert_eq!(count(&worker(&sup, "slow")), 0);
    assert_eq!(states(&sup), [state("slow", true, 0)]);
    stop(&sup);
}

/// The `_pending` forms return at once, even while the supervisor is busy
/// stopping a child that holds it up; they resolve once it is done.
#[test]
fn pending_forms_never_block_the_caller() {
    let sup = Supervisor::builder()
        .child(spec("busy").shutdown(Shutdown::Timeout(T)))
        .spawn()
        .unwrap();
    let busy = worker(&sup, "busy");
    let (gate_tx, gate_rx) = port::bounded::<SendPort<()>>(1);
    let mut held = busy.ask_pending(Msg::Block(gate_tx));
    let release = gate_rx.recv_timeout(T).unwrap();

    // The supervisor waits for "busy" to finish its message...
    let mut terminate = sup.terminate_child_pending("busy");
    let mut start = sup.start_child_pending(spec("next"));
    // ...so neither request can be done yet: the calls returned anyway.
    assert_eq!(start.try_take(), None);
    assert_eq!(terminate.try_take(), None);
    assert!(sup.children().is_ok());

    release.send(()).unwrap();
    assert_eq!(held.wait_timeout(T), Some(Ok(0)));
    assert_eq!(terminate.wait_timeout(T), Some(Ok(())));
    assert_eq!(start.wait_timeout(T), Some(Ok(())));
    assert_eq!(
        states(&sup),
        [state("busy", false, 0), state("next", true, 0)]
    );
    // Taken once.
    assert_eq!(start.try_take(), None);
    assert!(start.is_taken());
    stop(&sup);
}

/// After the supervisor exits every request says so, and none that was on
/// its way is left hanging.
#[test]
fn requests_to_an_exited_supervisor_say_so() {
    let sup = Supervisor::builder()
        .name("root")
        .child(spec("a"))
        .spawn()
        .unwrap();
    // Requests racing the stop: each resolves, one way or the other.
    let pendings: Vec<_> = (0..20)
        .map(|i| sup.start_child_pending(spec(&format!("w{i}"))))
        .collect();
    sup.stop();
    for mut pending in pendings {
        match pending.wait_timeout(T) {
            Some(Ok(()) | Err(ChildError::Exited { .. })) => {}
            other => panic!("a request racing the stop got {other:?}"),
        }
    }
    assert_eq!(sup.join(T), Some(ExitReason::Normal));

    let exited = ChildError::Exited {
        supervisor: "root".into(),
    };
    assert_eq!(sup.start_child(spec("b")), Err(exited.clone()));
    assert_eq!(sup.terminate_child("a"), Err(exited.clone()));
    assert_eq!(sup.restart_child("a"), Err(exited.clone()));
    assert_eq!(sup.delete_child("a"), Err(exited.clone()));
    assert_eq!(sup.children(), Err(exited.clone()));
    let mut pending = sup.delete_child_pending("a");
    assert_eq!(pending.try_take(), Some(Err(exited.clone())));
    assert!(exited.to_string().contains("exit_reason"), "{exited}");
}

/// Terminating a nested supervisor stops its tree; restarting it starts a
/// fresh one.
#[test]
fn a_nested_supervisor_can_be_terminated_and_restarted() {
    let sup = Supervisor::builder().spawn().unwrap();
    let inner = Supervisor::builder().child(spec("w"));
    sup.start_child(ChildSpec::supervisor("inner", inner))
        .unwrap();
    let first = sup.supervisor("inner").unwrap();
    let w = first.worker::<Worker>("w").unwrap();
    sup.terminate_child("inner").unwrap();
    assert_eq!(first.join(T), Some(ExitReason::Normal));
    assert!(matches!(w.ask_timeout(Msg::Get, T), Err(AskError::Dead(_))));
    assert_eq!(states(&sup), [state("inner", false, 0)]);

    sup.restart_child("inner").unwrap();
    let second = sup.supervisor("inner").unwrap();
    assert_eq!(second.exit_reason(), None);
    assert_eq!(count(&second.worker::<Worker>("w").unwrap()), 0);
    stop(&sup);
    assert!(second.join(T).is_some());
}

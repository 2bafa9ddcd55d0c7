//! Observers never hold up the observed: a listener whose mailbox is full
//! (nobody drains it) misses events, and the supervisor or isolate it
//! listens to goes on.

mod common;

use std::time::Duration;

use isolates::supervisor::{ChildSpec, Restart, SupervisionEvent, Supervisor};
use isolates::{
    AskError, Context, ExitReason, Isolate, IsolateBuilder, IsolateError, Priority, port,
};

const T: Duration = Duration::from_secs(10);

/// Answers `n` with `n`; 0 panics, 1 fails.
struct Touchy;

impl Isolate for Touchy {
    type Args = ();
    type Message = u32;
    type Reply = u32;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Touchy)
    }

    fn handle(&mut self, n: u32, _: &mut Context<Self>) -> Result<u32, String> {
        match n {
            0 => panic!("asked to panic"),
            1 => Err("asked to fail".into()),
            n => Ok(n),
        }
    }
}

#[test]
fn a_full_event_listener_does_not_freeze_its_supervisor() {
    let sup = Supervisor::builder()
        .restart_intensity(100, Duration::from_secs(5))
        .child(ChildSpec::worker::<Touchy>("touchy", ()).restart(Restart::Permanent))
        .spawn()
        .unwrap();
    // Room for one event, never drained.
    let (stuck, _stuck_rx) = port::bounded::<SupervisionEvent>(1);
    sup.add_event_listener(stuck);
    let (live, events) = port::unbounded::<SupervisionEvent>();
    sup.add_event_listener(live);
    let touchy = sup.worker::<Touchy>("touchy").unwrap();
    for _ in 0..5 {
        assert!(matches!(
            touchy.ask_timeout(0, T),
            Err(AskError::Panicked(_))
        ));
        // The restarted child answers: the supervisor went on.
        assert_eq!(touchy.ask_timeout(7, T), Ok(7));
    }
    sup.stop();
    assert!(sup.join(T).is_some(), "the supervisor stops");
    let restarts = events
        .try_iter()
        .filter(|e| matches!(e, SupervisionEvent::Restarted { .. }))
        .count();
    assert_eq!(restarts, 5, "a drained listener gets every event");
    assert!(sup.dropped_events() >= 9, "the full one missed the rest");
}

#[test]
fn full_error_and_exit_listeners_do_not_hold_up_an_isolate() {
    let h = IsolateBuilder::new()
        .errors_are_fatal(false)
        .spawn::<Touchy>(())
        .unwrap();
    let (errors, _errors_rx) = port::bounded::<IsolateError>(1);
    h.add_error_listener(errors);
    let (exits, _exits_rx) = port::bounded::<ExitReason>(1);
    exits.send(ExitReason::Normal).unwrap(); // full before the exit
    h.add_exit_listener(exits);
    for _ in 0..5 {
        assert_eq!(
            h.ask_timeout(1, T),
            Err(AskError::Failed("asked to fail".into()))
        );
        assert_eq!(h.ask_timeout(9, T), Ok(9));
    }
    h.kill(Priority::Immediate);
    assert_eq!(h.join(T), Some(ExitReason::Killed));
}

#[test]
fn a_gone_error_listener_is_forgotten_and_a_live_one_still_hears() {
    let h = IsolateBuilder::new()
        .errors_are_fatal(false)
        .spawn::<Touchy>(())
        .unwrap();
    let (gone, gone_rx) = port::unbounded::<IsolateError>();
    h.add_error_listener(gone);
    drop(gone_rx);
    let (live, heard) = port::unbounded::<IsolateError>();
    h.add_error_listener(live);
    assert!(h.ask_timeout(1, T).is_err());
    assert!(h.ask_timeout(1, T).is_err());
    // Listeners hear of an error after its asker has the reply.
    let mut messages = Vec::new();
    assert!(common::wait_until(
        || {
            messages.extend(heard.try_iter().map(|e| e.message));
            messages.len() >= 2
        },
        T
    ));
    assert_eq!(messages, ["asked to fail", "asked to fail"]);
}

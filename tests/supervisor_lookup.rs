//! A supervisor can be observed from its first event, and asking it for a
//! child says what went wrong: listeners attached to the builder see each
//! child's `Started`; a lookup by a wrong name, of a wrong type, or after
//! the supervisor exited gets a typed error saying which.

use std::time::Duration;

use isolates::supervisor::{ChildSpec, LookupError, Restart, SupervisionEvent, Supervisor};
use isolates::{AskError, Context, ExitReason, Isolate, ReceivePort, port};

const T: Duration = Duration::from_secs(10);

/// Answers `n` with `n`; 0 panics.
struct Echo;

impl Isolate for Echo {
    type Args = ();
    type Message = u32;
    type Reply = u32;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Echo)
    }

    fn handle(&mut self, n: u32, _: &mut Context<Self>) -> Result<u32, String> {
        assert!(n != 0, "asked to panic");
        Ok(n)
    }
}

/// Another isolate type, to ask for by mistake.
struct Quiet;

impl Isolate for Quiet {
    type Args = ();
    type Message = ();
    type Reply = ();
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Quiet)
    }

    fn handle(&mut self, (): (), _: &mut Context<Self>) -> Result<(), String> {
        Ok(())
    }
}

fn next(events: &ReceivePort<SupervisionEvent>) -> SupervisionEvent {
    events.recv_timeout(T).expect("an event within the timeout")
}

fn started(child: &str) -> SupervisionEvent {
    SupervisionEvent::Started {
        child: child.into(),
    }
}

/// A listener attached to the builder sees every child start, in order,
/// then what happens later; a nested supervisor's builder's listener sees
/// its own children start.
#[test]
fn listeners_attached_at_build_see_every_start() {
    let (tx, events) = port::unbounded::<SupervisionEvent>();
    let (inner_tx, inner_events) = port::unbounded::<SupervisionEvent>();
    let inner = Supervisor::builder()
        .event_listener(inner_tx)
        .child(ChildSpec::worker::<Quiet>("quiet", ()));
    let sup = Supervisor::builder()
        .restart_intensity(10, Duration::from_secs(5))
        .event_listener(tx)
        .child(ChildSpec::worker::<Echo>("a", ()).restart(Restart::Permanent))
        .child(ChildSpec::worker::<Echo>("b", ()))
        .child(ChildSpec::supervisor("inner", inner))
        .spawn()
        .unwrap();
    assert_eq!(next(&events), started("a"));
    assert_eq!(next(&events), started("b"));
    assert_eq!(next(&events), started("inner"));
    assert_eq!(next(&inner_events), started("quiet"));

    let a = sup.worker::<Echo>("a").unwrap();
    assert!(matches!(a.ask_timeout(0, T), Err(AskError::Panicked(_))));
    assert!(matches!(
        next(&events),
        SupervisionEvent::Exited { child, reason: ExitReason::Panicked(_) } if child == "a"
    ));
    assert!(matches!(
        next(&events),
        SupervisionEvent::Restarted { child, attempt: 1 } if child == "a"
    ));
    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
}

/// A typo, a wrong isolate type, a worker asked for as a supervisor (and
/// the reverse) and a lookup after the exit each get their own error,
/// which names what to do.
#[test]
fn lookups_say_what_went_wrong() {
    let sup = Supervisor::builder()
        .child(ChildSpec::worker::<Echo>("echo", ()))
        .child(ChildSpec::supervisor("inner", Supervisor::builder()))
        .spawn()
        .unwrap();
    assert_eq!(sup.worker::<Echo>("echo").unwrap().ask_timeout(3, T), Ok(3));
    assert!(sup.supervisor("inner").is_ok());

    let typo = sup.worker::<Echo>("ecko").unwrap_err();
    assert_eq!(
        typo,
        LookupError::NotFound {
            name: "ecko".into(),
            children: vec!["echo".into(), "inner".into()],
        }
    );
    assert!(typo.to_string().contains("\"echo\""), "{typo}");

    let wrong = sup.worker::<Quiet>("echo").unwrap_err();
    match &wrong {
        LookupError::WrongType {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "echo");
            assert!(
                expected.ends_with("Quiet") && found.ends_with("Echo"),
                "{wrong:?}"
            );
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(wrong.to_string().contains("Echo"), "{wrong}");
    assert!(matches!(
        sup.worker::<Echo>("inner"),
        Err(LookupError::WrongType {
            found: "a supervisor",
            ..
        })
    ));
    assert!(matches!(
        sup.supervisor("echo"),
        Err(LookupError::WrongType {
            expected: "a supervisor",
            ..
        })
    ));

    sup.stop();
    assert_eq!(sup.join(T), Some(ExitReason::Normal));
    let gone = sup.worker::<Echo>("echo").unwrap_err();
    assert!(matches!(&gone, LookupError::Exited { .. }), "{gone:?}");
    assert!(gone.to_string().contains("exit_reason"), "{gone}");
}

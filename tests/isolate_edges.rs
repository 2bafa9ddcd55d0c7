//! In-process isolates and supervision where a review found them wrong:
//! `stop` on a paused isolate or during a restart's backoff, an abandoned
//! child's monitors and name, and links across a restart.

mod common;

use std::time::Duration;

use common::wait_until;
use isolates::{AskError, Context, ExitReason, Isolate, IsolateState};

const T: Duration = Duration::from_secs(5);

struct Echo;
impl Isolate for Echo {
    type Args = ();
    type Message = u32;
    type Reply = u32;
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Echo)
    }
    fn handle(&mut self, m: u32, _: &mut Context<Self>) -> Result<u32, String> {
        Ok(m)
    }
}

/// `stop()` is documented to handle the messages already in the mailbox,
/// then exit Normal. On a paused isolate (a handle that can resume it still
/// exists) it exits at once and the queued ask is lost.
#[test]
fn stop_on_a_paused_isolate_still_handles_queued_messages() {
    let echo = Echo::spawn(()).unwrap();
    assert_eq!(echo.ask_timeout(1, T), Ok(1));
    let token = echo.pause();
    assert!(wait_until(|| echo.state() == IsolateState::Paused, T));
    let mut queued = echo.ask_pending(7);
    echo.stop();
    // While paused it must not exit with the ask still queued.
    let early = echo.join(Duration::from_millis(300));
    echo.resume(&token);
    let reply = queued.wait_timeout(T);
    assert_eq!(
        (early, reply),
        (None, Some(Ok(7))),
        "stop() on a paused isolate dropped a queued ask"
    );
    assert_eq!(echo.join(T), Some(ExitReason::Normal));
}

/// Blocks in its handler (not checking `kill_requested`) until released.
struct Stuck;
impl Isolate for Stuck {
    type Args = ();
    type Message = isolates::SendPort<isolates::SendPort<()>>;
    type Reply = ();
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Stuck)
    }
    fn handle(
        &mut self,
        reply: isolates::SendPort<isolates::SendPort<()>>,
        _: &mut Context<Self>,
    ) -> Result<(), String> {
        let (tx, rx) = isolates::port::bounded::<()>(1);
        reply.send(tx).map_err(|e| e.to_string())?;
        let _ = rx.recv_timeout(Duration::from_secs(20));
        Ok(())
    }
}

/// A supervisor that abandons a child that does not stop closes it
/// (`Killed`: join and exit listeners say it ended), but its monitors,
/// links and registered names are only told/forgotten when its thread
/// ends, which may be never: a monitor never fires although the isolate is
/// reported dead.
#[test]
fn an_abandoned_child_tells_its_monitors() {
    use isolates::supervisor::{ChildSpec, Shutdown, Supervisor};
    let sup = Supervisor::builder()
        .child(ChildSpec::worker::<Stuck>("stuck", ()).shutdown(Shutdown::Immediate))
        .spawn()
        .unwrap();
    let child = sup.worker::<Stuck>("stuck").unwrap();
    child.register("review-core-stuck").unwrap();
    let (_monitor, downs) = child.monitor_port();
    let (tx, rx) = isolates::port::unbounded();
    child.cast(tx).unwrap();
    let release = rx.recv_timeout(T).unwrap();
    // Abandoned after ABANDON_AFTER (5 s).
    sup.terminate_child("stuck").unwrap();
    assert_eq!(child.exit_reason(), Some(ExitReason::Killed));
    let down = downs.recv_timeout(Duration::from_secs(1));
    let name_left = isolates::registered().contains(&"review-core-stuck".to_string());
    let _ = release.send(());
    // Even once its handler returns, the abandoned incarnation never ends:
    // `close` dropped the queued immediate kill.
    let late = downs.recv_timeout(Duration::from_secs(2));
    sup.stop();
    assert!(
        down.is_ok() && !name_left,
        "closed as Killed, but Down = {down:?}, name still registered = {name_left}, \
         Down after the handler returned = {late:?}"
    );
}

/// Counts; panics on 0, fails on 1.
struct Counter(u32);
impl Isolate for Counter {
    type Args = ();
    type Message = u32;
    type Reply = u32;
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Counter(0))
    }
    fn handle(&mut self, m: u32, _: &mut Context<Self>) -> Result<u32, String> {
        match m {
            0 => panic!("told to panic"),
            1 => Err("told to fail".into()),
            _ => {
                self.0 += 1;
                Ok(self.0)
            }
        }
    }
}

/// `stop()` asked of a supervised transient child while it waits out its
/// restart backoff is dropped: the child is restarted and runs on, and
/// `join` never returns.
#[test]
fn stop_during_a_restart_backoff_is_not_lost() {
    use isolates::Backoff;
    use isolates::supervisor::{ChildSpec, Restart, Supervisor};
    let sup = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .backoff(Backoff::constant(Duration::from_millis(400)))
        .child(ChildSpec::worker::<Counter>("t", ()).restart(Restart::Transient))
        .spawn()
        .unwrap();
    let child = sup.worker::<Counter>("t").unwrap();
    assert!(matches!(
        child.ask_timeout(0, T),
        Err(AskError::Panicked(_))
    ));
    // Now waiting out its backoff: ask it to stop gracefully.
    child.stop();
    let joined = child.join(Duration::from_secs(3));
    // The supervisor hears of the exit just after `join` does: a transient
    // child that exited Normal is not restarted.
    let settled = wait_until(
        || !sup.children().unwrap()[0].running,
        Duration::from_secs(3),
    );
    sup.stop();
    assert_eq!(
        (joined, settled),
        (Some(ExitReason::Normal), true),
        "stop() during the backoff was dropped: the child was restarted"
    );
}

#[test]
fn intensity_zero_gives_up_at_the_first_restart_and_the_exit_listener_hears_once() {
    use isolates::supervisor::{ChildSpec, Restart, Supervisor};
    let sup = Supervisor::builder()
        .restart_intensity(0, Duration::from_secs(5))
        .child(ChildSpec::worker::<Counter>("z", ()).restart(Restart::Transient))
        .spawn()
        .unwrap();
    let child = sup.worker::<Counter>("z").unwrap();
    let (tx, exits) = isolates::port::unbounded();
    child.add_exit_listener(tx);
    child.kill(isolates::Priority::AfterCurrent);
    let reason = sup.join(T);
    assert!(matches!(reason, Some(ExitReason::Failed(_))), "{reason:?}");
    assert_eq!(exits.recv_timeout(T), Ok(ExitReason::Killed));
    assert!(exits.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn kill_after_current_ends_a_paused_isolate_and_fails_its_queued_ask() {
    let c = Counter::spawn(()).unwrap();
    let _token = c.pause();
    assert!(wait_until(|| c.state() == IsolateState::Paused, T));
    let mut q = c.ask_pending(5);
    c.kill(isolates::Priority::AfterCurrent);
    assert_eq!(c.join(T), Some(ExitReason::Killed));
    assert_eq!(
        q.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
}

/// X: traps exits and forwards the `Down`s it gets. A: links to X in
/// `start`; panics on 0.
struct Linker {
    downs: Option<isolates::SendPort<isolates::Down>>,
}
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct LinkerArgs {
    /// Some: this is X (traps, forwards); None: this is A (links to X).
    downs: Option<isolates::SendPort<isolates::Down>>,
    x: String,
}
impl Isolate for Linker {
    type Args = LinkerArgs;
    type Message = u32;
    type Reply = u32;
    type Error = String;
    fn start(args: LinkerArgs, ctx: &mut Context<Self>) -> Result<Self, String> {
        if args.downs.is_some() {
            ctx.trap_exits(true);
        } else {
            let x =
                isolates::IsolateHandle::<Linker>::whereis(&args.x).map_err(|e| e.to_string())?;
            ctx.link(&x).map_err(|e| e.to_string())?;
        }
        Ok(Linker { downs: args.downs })
    }
    fn handle(&mut self, m: u32, _: &mut Context<Self>) -> Result<u32, String> {
        if m == 0 {
            panic!("told to panic");
        }
        Ok(m)
    }
    fn down(&mut self, down: isolates::Down, _: &mut Context<Self>) -> Result<(), String> {
        if let Some(tx) = &self.downs {
            let _ = tx.send(down);
        }
        Ok(())
    }
}

/// A supervised A links to X in `start`. A crashes and is restarted; its
/// new incarnation links to X again before the old incarnation's thread
/// has told its links (here: slowed by many monitors). The old
/// incarnation's `tell` then removes X's entries for A by id — the new
/// incarnation's too — so X's later death never reaches A's new
/// incarnation: the link does not fire.
#[test]
fn a_link_made_by_a_restarted_incarnation_survives_the_old_ones_exit() {
    relink_after_restart(20_000, "review-core-x");
}

/// The same without the slow exit notice: passes (the control).
#[test]
fn control_relink_after_restart_without_monitors() {
    relink_after_restart(0, "review-core-x0");
}

fn relink_after_restart(monitor_count: usize, x_name: &'static str) {
    use isolates::supervisor::{ChildSpec, SupervisionEvent, Supervisor};
    let (down_tx, x_downs) = isolates::port::unbounded();
    let x = Linker::spawn(LinkerArgs {
        downs: Some(down_tx),
        x: String::new(),
    })
    .unwrap();
    x.register(x_name).unwrap();
    let sup = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .child(ChildSpec::worker::<Linker>(
            "a",
            LinkerArgs {
                downs: None,
                x: x_name.into(),
            },
        ))
        .spawn()
        .unwrap();
    let (ev_tx, events) = isolates::port::unbounded();
    sup.add_event_listener(ev_tx);
    let a = sup.worker::<Linker>("a").unwrap();
    assert_eq!(a.ask_timeout(5, T), Ok(5));
    // Many monitors make the old incarnation's exit notice slow.
    let monitors: Vec<_> = (0..monitor_count).map(|_| a.monitor_port()).collect();
    assert!(matches!(a.ask_timeout(0, T), Err(AskError::Panicked(_))));
    // X hears of the first incarnation's crash.
    let first = x_downs.recv_timeout(T).unwrap();
    assert!(matches!(first.reason, ExitReason::Panicked(_)), "{first:?}");
    assert_eq!(a.ask_timeout(6, T), Ok(6), "restarted");
    drop(monitors);
    while events.try_recv().is_ok() {}
    // X dies abnormally: the restarted A is linked to it and must follow.
    x.kill(isolates::Priority::Immediate);
    assert_eq!(x.join(T), Some(ExitReason::Killed));
    let followed = loop {
        match events.recv_timeout(Duration::from_secs(3)) {
            Ok(SupervisionEvent::Exited { reason, .. }) => break Some(reason),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    sup.stop();
    assert!(
        matches!(followed, Some(ExitReason::Linked { .. })),
        "the restarted A did not follow X: {followed:?}"
    );
}

//! What kameo/ractor/OTP users reach for: timers in `Context`, a registry
//! by name, monitors and links between any two isolates.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::wait_until;
use isolates::port::{self, ReceivePort, SendPort};
use isolates::supervisor::{ChildSpec, Supervisor};
use isolates::{
    Context, Down, ExitReason, Isolate, IsolateHandle, Priority, RegisterError, TimerError,
    TimerRef, WhereisError,
};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

/// What a probe reports on its port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    /// A timer's message arrived, with its tag.
    Timer(u32, #[serde(skip, default = "Instant::now")] Instant),
    Down(Down),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Cmd {
    After(u64, u32),
    /// Sets a timer and cancels it at once.
    AfterCancelled(u64, u32),
    Every(u64, u32),
    /// A timer's message: report it (and sleep `slow` ms on the first).
    Fire(u32),
    Monitor(String),
    Demonitor,
    Link(String),
    Trap(bool),
    /// Kills the isolate of this name, waits for its exit, then monitors
    /// it (`false`) or links to it (`true`).
    Late(String, bool),
    Fail,
    Stop,
}

/// Timers set by probes, for the test to look at (a `TimerRef` is not a
/// reply: replies serialize).
static TIMERS: Mutex<Vec<(u32, TimerRef)>> = Mutex::new(Vec::new());

struct Probe {
    out: SendPort<Event>,
    slow_first: u64,
    fired: u32,
    monitor: Option<isolates::MonitorRef>,
}

impl Isolate for Probe {
    type Args = (SendPort<Event>, u64);
    type Message = Cmd;
    type Reply = u64;
    type Error = String;

    fn start(
        (out, slow_first): (SendPort<Event>, u64),
        _: &mut Context<Self>,
    ) -> Result<Self, String> {
        Ok(Probe {
            out,
            slow_first,
            fired: 0,
            monitor: None,
        })
    }

    fn handle(&mut self, cmd: Cmd, ctx: &mut Context<Self>) -> Result<u64, String> {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        match cmd {
            Cmd::After(ms, tag) => {
                let timer = ctx
                    .send_after(Duration::from_millis(ms), Cmd::Fire(tag))
                    .map_err(|e| text(&e))?;
                TIMERS.lock().unwrap().push((tag, timer));
            }
            Cmd::AfterCancelled(ms, tag) => {
                let timer = ctx
                    .send_after(Duration::from_millis(ms), Cmd::Fire(tag))
                    .map_err(|e| text(&e))?;
                assert!(timer.cancel());
                assert!(!timer.cancel());
            }
            Cmd::Every(ms, tag) => {
                let timer = ctx
                    .send_interval(Duration::from_millis(ms), Cmd::Fire(tag))
                    .map_err(|e| text(&e))?;
                TIMERS.lock().unwrap().push((tag, timer));
            }
            Cmd::Fire(tag) => {
                let _ = self.out.send(Event::Timer(tag, Instant::now()));
                self.fired += 1;
                if self.fired == 1 && self.slow_first > 0 {
                    // Busy handling: the interval's next ticks are missed.
                    std::thread::sleep(Duration::from_millis(self.slow_first));
                }
            }
            Cmd::Monitor(name) => {
                let other = IsolateHandle::<Probe>::whereis(&name).map_err(|e| text(&e))?;
                self.monitor = Some(ctx.monitor(&other).map_err(|e| text(&e))?);
            }
            Cmd::Demonitor => {
                let monitor = self.monitor.take().ok_or("no monitor")?;
                return Ok(u64::from(ctx.demonitor(&monitor)));
            }
            Cmd::Link(name) => {
                let other = IsolateHandle::<Probe>::whereis(&name).map_err(|e| text(&e))?;
                ctx.link(&other).map_err(|e| text(&e))?;
            }
            Cmd::Trap(on) => ctx.trap_exits(on),
            Cmd::Late(name, link) => {
                let other = IsolateHandle::<Probe>::whereis(&name).map_err(|e| text(&e))?;
                other.kill(Priority::Immediate);
                other.join(T).ok_or("did not exit")?;
                if link {
                    ctx.link(&other).map_err(|e| text(&e))?;
                } else {
                    ctx.monitor(&other).map_err(|e| text(&e))?;
                }
            }
            Cmd::Fail => return Err("asked to fail".into()),
            Cmd::Stop => ctx.stop(),
        }
        Ok(0)
    }

    fn down(&mut self, down: Down, _: &mut Context<Self>) -> Result<(), String> {
        let _ = self.out.send(Event::Down(down));
        Ok(())
    }
}

fn probe(name: &str) -> (IsolateHandle<Probe>, ReceivePort<Event>) {
    probe_slow(name, 0)
}

fn probe_slow(name: &str, slow_first: u64) -> (IsolateHandle<Probe>, ReceivePort<Event>) {
    let (tx, rx) = port::unbounded();
    let handle = isolates::IsolateBuilder::new()
        .name(name)
        .spawn::<Probe>((tx, slow_first))
        .unwrap();
    handle.register(name).unwrap();
    (handle, rx)
}

fn timer(tag: u32) -> TimerRef {
    let timers = TIMERS.lock().unwrap();
    timers.iter().find(|(t, _)| *t == tag).unwrap().1.clone()
}

fn next_down(events: &ReceivePort<Event>) -> Down {
    loop {
        match events.recv_timeout(T).expect("a Down") {
            Event::Down(down) => return down,
            Event::Timer(..) => {}
        }
    }
}

#[test]
fn a_timer_fires_once_at_or_after_its_delay() {
    let (p, events) = probe("otp-once");
    let set = Instant::now();
    p.ask_timeout(Cmd::After(80, 1), T).unwrap();
    let Event::Timer(1, at) = events.recv_timeout(T).unwrap() else {
        panic!("not the timer")
    };
    assert!(
        at >= set + Duration::from_millis(80),
        "fired early: {:?}",
        at - set
    );
    assert!(!timer(1).is_pending());
    assert!(!timer(1).cancel(), "a fired timer cannot be cancelled");
    // A later timer comes; the first does not come again.
    p.ask_timeout(Cmd::After(20, 2), T).unwrap();
    assert!(matches!(events.recv_timeout(T), Ok(Event::Timer(2, _))));
    assert!(events.try_recv().is_err());
}

#[test]
fn a_cancelled_timer_never_fires() {
    let (p, events) = probe("otp-cancel");
    p.ask_timeout(Cmd::AfterCancelled(10, 11), T).unwrap();
    p.ask_timeout(Cmd::After(60, 12), T).unwrap();
    // Cancelled from outside the isolate too.
    p.ask_timeout(Cmd::After(30, 13), T).unwrap();
    assert!(timer(13).cancel());
    assert!(matches!(events.recv_timeout(T), Ok(Event::Timer(12, _))));
    assert!(events.try_recv().is_err(), "a cancelled timer fired");
}

#[test]
fn intervals_tick_on_schedule_and_stop_on_exit() {
    let (p, events) = probe("otp-every");
    let set = Instant::now();
    p.ask_timeout(Cmd::Every(10, 21), T).unwrap();
    for k in 1..=5u32 {
        let Event::Timer(21, at) = events.recv_timeout(T).unwrap() else {
            panic!("not the interval")
        };
        // Never before its point of the schedule.
        assert!(at >= set + Duration::from_millis(10) * k, "tick {k} early");
    }
    assert!(timer(21).is_pending());
    p.kill(Priority::Immediate);
    assert_eq!(p.join(T), Some(ExitReason::Killed));
    assert!(!timer(21).is_pending(), "the exit cancels the interval");
    assert!(!timer(21).cancel());
}

#[test]
fn a_slow_isolate_skips_missed_ticks() {
    // The first tick takes 100 ms: about nine ticks are missed meanwhile.
    let (p, events) = probe_slow("otp-skip", 100);
    p.ask_timeout(Cmd::Every(10, 41), T).unwrap();
    let Event::Timer(41, first) = events.recv_timeout(T).unwrap() else {
        panic!("not the interval")
    };
    let until = first + Duration::from_millis(150);
    let mut ticks = 1;
    assert!(wait_until(
        || {
            while let Ok(Event::Timer(41, at)) = events.try_recv() {
                if at <= until {
                    ticks += 1;
                }
            }
            Instant::now() > until + Duration::from_millis(20)
        },
        T
    ));
    // Delivering the missed ticks would make about 15 in 150 ms; skipping
    // them, about 6.
    assert!(ticks <= 10, "missed ticks piled up: {ticks}");
    assert!(ticks >= 2, "the interval stopped: {ticks}");
}

#[test]
fn timer_misuse_is_a_typed_error() {
    let bad = BadTimers::spawn(()).unwrap();
    let (zero, far) = bad.ask_timeout((), T).unwrap();
    assert_eq!(zero, "an interval's period must be above zero");
    assert!(far.contains("beyond"), "{far}");
}

/// Reports its timer errors as text (errors do not serialize).
struct BadTimers;
impl Isolate for BadTimers {
    type Args = ();
    type Message = ();
    type Reply = (String, String);
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(BadTimers)
    }
    fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<(String, String), String> {
        let zero = ctx.send_interval(Duration::ZERO, ()).unwrap_err();
        assert_eq!(zero, TimerError::ZeroPeriod);
        let far = ctx.send_after(Duration::MAX, ()).unwrap_err();
        assert_eq!(far, TimerError::OutOfRange);
        Ok((zero.to_string(), far.to_string()))
    }
}

#[test]
fn registry_lookups_are_typed_and_names_go_with_their_isolate() {
    let (p, _events) = probe("otp-reg");
    let found = IsolateHandle::<Probe>::whereis("otp-reg").unwrap();
    assert_eq!(found, p);
    assert!(isolates::registered().contains(&"otp-reg".to_string()));
    // Of another type: typed error.
    let wrong = IsolateHandle::<BadTimers>::whereis("otp-reg").unwrap_err();
    assert!(matches!(wrong, WhereisError::WrongType { ref name, .. } if name == "otp-reg"));
    // Taken by another.
    let other = BadTimers::spawn(()).unwrap();
    assert_eq!(
        other.register("otp-reg"),
        Err(RegisterError::Taken {
            name: "otp-reg".into()
        })
    );
    // Again by its owner: fine. A second name too.
    p.register("otp-reg").unwrap();
    p.register("otp-reg-2").unwrap();
    assert!(isolates::unregister("otp-reg-2"));
    assert!(IsolateHandle::<Probe>::whereis("otp-reg-2").is_err());
    // Gone with the isolate: no stale handle; the name is free again.
    p.ask_timeout(Cmd::Stop, T).unwrap();
    assert_eq!(p.join(T), Some(ExitReason::Normal));
    assert_eq!(
        IsolateHandle::<Probe>::whereis("otp-reg").unwrap_err(),
        WhereisError::NotFound {
            name: "otp-reg".into()
        }
    );
    assert!(!isolates::registered().contains(&"otp-reg".to_string()));
    assert!(matches!(
        p.register("otp-reg"),
        Err(RegisterError::Exited { .. })
    ));
    other.register("otp-reg").unwrap();
}

/// Registers itself from `start`: each incarnation takes the name anew.
struct Named;
impl Isolate for Named {
    type Args = ();
    type Message = ();
    type Reply = ();
    type Error = String;
    fn start(_: (), ctx: &mut Context<Self>) -> Result<Self, String> {
        ctx.handle()
            .register("otp-named")
            .map_err(|e| e.to_string())?;
        Ok(Named)
    }
    fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> {
        Err("fail".into())
    }
}

#[test]
fn a_restarted_isolate_registers_its_name_again() {
    let sup = Supervisor::builder()
        .child(ChildSpec::worker::<Named>("named", ()))
        .spawn()
        .unwrap();
    let first = IsolateHandle::<Named>::whereis("otp-named").unwrap();
    let (_, downs) = first.monitor_port();
    assert!(first.ask_timeout((), T).is_err());
    // The first incarnation's end fires the monitor; the next one takes
    // the name again (its `start` would fail otherwise).
    assert!(downs.recv_timeout(T).is_ok());
    assert!(wait_until(
        || IsolateHandle::<Named>::whereis("otp-named").is_ok_and(|h| !h.is_finished()),
        T
    ));
    sup.stop();
    assert!(wait_until(
        || IsolateHandle::<Named>::whereis("otp-named").is_err(),
        T
    ));
}

#[test]
fn monitors_tell_of_normal_abnormal_and_earlier_exits() {
    let (watcher, events) = probe("otp-mon-watcher");
    for (name, cmd, expected) in [
        ("otp-mon-a", Cmd::Stop, ExitReason::Normal),
        (
            "otp-mon-b",
            Cmd::Fail,
            ExitReason::Failed("asked to fail".into()),
        ),
    ] {
        let (target, _) = probe(name);
        watcher.ask_timeout(Cmd::Monitor(name.into()), T).unwrap();
        let _ = target.ask_timeout(cmd, T);
        let down = next_down(&events);
        assert_eq!(
            (down.id, &down.name, &down.reason),
            (target.id(), &name.to_string(), &expected)
        );
        assert!(down.monitor.is_some());
        // Told once.
        assert_eq!(target.join(T), Some(expected));
    }
    // Already dead: at once, to an isolate and to a port.
    let (dead, _) = probe("otp-mon-dead");
    watcher
        .ask_timeout(Cmd::Late("otp-mon-dead".into(), false), T)
        .unwrap();
    let down = next_down(&events);
    assert_eq!((down.id, down.reason), (dead.id(), ExitReason::Killed));
    let (_, late) = dead.monitor_port();
    assert_eq!(late.try_recv().unwrap().reason, ExitReason::Killed);
    // The watcher survives what it watches.
    assert!(!watcher.is_finished());
    assert!(events.try_recv().is_err(), "a Down came twice");
}

#[test]
fn a_demonitored_isolate_tells_nothing() {
    let (watcher, events) = probe("otp-demon-watcher");
    let (target, _) = probe("otp-demon-target");
    watcher
        .ask_timeout(Cmd::Monitor("otp-demon-target".into()), T)
        .unwrap();
    assert_eq!(watcher.ask_timeout(Cmd::Demonitor, T), Ok(1));
    // A second monitor, left on: its Down is the only one.
    watcher
        .ask_timeout(Cmd::Monitor("otp-demon-target".into()), T)
        .unwrap();
    target.kill(Priority::Immediate);
    let down = next_down(&events);
    assert_eq!(down.reason, ExitReason::Killed);
    // After the Down, nothing more: the first monitor was taken off.
    watcher.ask_timeout(Cmd::Stop, T).unwrap();
    assert_eq!(watcher.join(T), Some(ExitReason::Normal));
    assert!(events.try_recv().is_err());
}

#[test]
fn links_propagate_abnormal_exits_only() {
    let (a, _) = probe("otp-link-a");
    let (b, _) = probe("otp-link-b");
    let (c, _) = probe("otp-link-c");
    // a – b – c: c fails, b and then a follow, naming the root cause.
    a.ask_timeout(Cmd::Link("otp-link-b".into()), T).unwrap();
    b.ask_timeout(Cmd::Link("otp-link-c".into()), T).unwrap();
    let _ = c.ask_timeout(Cmd::Fail, T);
    let failed = ExitReason::Failed("asked to fail".into());
    assert_eq!(c.join(T), Some(failed.clone()));
    let b_reason = b.join(T).unwrap();
    assert_eq!(
        b_reason,
        ExitReason::Linked {
            id: c.id(),
            name: "otp-link-c".into(),
            reason: Box::new(failed.clone())
        }
    );
    let a_reason = a.join(T).unwrap();
    assert_eq!(
        a_reason,
        ExitReason::Linked {
            id: b.id(),
            name: "otp-link-b".into(),
            reason: Box::new(failed)
        },
        "{a_reason}"
    );

    // A normal exit does not propagate.
    let (d, _) = probe("otp-link-d");
    let (e, _) = probe("otp-link-e");
    d.ask_timeout(Cmd::Link("otp-link-e".into()), T).unwrap();
    e.ask_timeout(Cmd::Stop, T).unwrap();
    assert_eq!(e.join(T), Some(ExitReason::Normal));
    // A message after the exit's signal is handled: d is alive.
    assert_eq!(d.ask_timeout(Cmd::Trap(false), T), Ok(0));
    assert!(!d.is_finished());
}

#[test]
fn trapping_exits_turns_a_linked_death_into_a_down() {
    let (trapper, events) = probe("otp-trap");
    let (doomed, _) = probe("otp-trap-doomed");
    trapper.ask_timeout(Cmd::Trap(true), T).unwrap();
    trapper
        .ask_timeout(Cmd::Link("otp-trap-doomed".into()), T)
        .unwrap();
    doomed.kill(Priority::Immediate);
    let down = next_down(&events);
    assert_eq!(
        (down.id, down.reason, down.monitor),
        (doomed.id(), ExitReason::Killed, None)
    );
    assert!(!trapper.is_finished());
    assert_eq!(trapper.ask_timeout(Cmd::Trap(true), T), Ok(0));

    // Linking to an isolate already dead acts at once.
    let (gone, _) = probe("otp-trap-gone");
    trapper
        .ask_timeout(Cmd::Late("otp-trap-gone".into(), true), T)
        .unwrap();
    let down = next_down(&events);
    assert_eq!(
        (down.id, down.reason, down.monitor),
        (gone.id(), ExitReason::Killed, None)
    );
    // Without trapping, the same kills it.
    let (victim, _) = probe("otp-trap-victim");
    let (gone, _) = probe("otp-trap-gone-2");
    victim
        .ask_timeout(Cmd::Late("otp-trap-gone-2".into(), true), T)
        .unwrap();
    let reason = victim.join(T).unwrap();
    assert!(
        matches!(reason, ExitReason::Linked { id, .. } if id == gone.id()),
        "{reason}"
    );
}

#[test]
fn a_linked_death_takes_the_other_side_down_too() {
    let (a, _) = probe("otp-both-a");
    let (b, _) = probe("otp-both-b");
    a.ask_timeout(Cmd::Link("otp-both-b".into()), T).unwrap();
    // The link is both ways: a's failure takes b.
    let _ = a.ask_timeout(Cmd::Fail, T);
    let reason = b.join(T).unwrap();
    assert!(
        matches!(reason, ExitReason::Linked { id, .. } if id == a.id()),
        "{reason}"
    );
}

/// Context switches of this process's threads named `name`, from
/// `/proc/self/task/*/status` (a parked thread makes none).
#[cfg(target_os = "linux")]
fn switches(name: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        if field("Name:").as_deref() == Some(name) {
            let count = |key| field(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += count("voluntary_ctxt_switches:") + count("nonvoluntary_ctxt_switches:");
        }
    }
    total
}

/// Idle means no wake-ups: an isolate with no timer, or one far off,
/// parks until something happens (see `tests/idle.rs`).
#[cfg(target_os = "linux")]
#[test]
fn an_idle_isolate_with_or_without_timers_makes_no_wake_ups() {
    let (bare, _) = probe("otp-idle-bare");
    let (timed, _) = probe("otp-idle-timed");
    timed.ask_timeout(Cmd::After(600_000, 31), T).unwrap();
    bare.ask_timeout(Cmd::Trap(false), T).unwrap();
    for name in ["otp-idle-bare", "otp-idle-timed"] {
        // Settled: no switch for 100 ms.
        let mut last = switches(name);
        assert!(wait_until(
            || {
                std::thread::sleep(Duration::from_millis(100));
                let now = switches(name);
                std::mem::replace(&mut last, now) == now
            },
            T
        ));
        let before = switches(name);
        let window = Instant::now();
        assert!(!wait_until(
            || switches(name) > before + 3,
            Duration::from_secs(1)
        ));
        assert!(window.elapsed() >= Duration::from_secs(1));
    }
    assert!(timer(31).is_pending());
}

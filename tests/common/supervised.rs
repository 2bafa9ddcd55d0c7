//! The supervised worker of `tests/supervisor.rs` and
//! `tests/supervisor_dynamic.rs` (included by path), and helpers to read a
//! supervisor's events.

#![allow(dead_code)] // each includer uses a part

use std::time::{Duration, Instant};

use isolates::supervisor::{SupervisionEvent, Supervisor};
use isolates::{Context, ExitReason, Isolate, IsolateHandle, ReceivePort, SendPort, port};
use serde::{Deserialize, Serialize};

pub(crate) const T: Duration = Duration::from_secs(10);

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Args {
    pub(crate) name: String,
    /// Told "start <name>" and "stop <name>" as the worker starts and stops.
    pub(crate) log: Option<SendPort<String>>,
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) enum Msg {
    Incr,
    Get,
    Panic,
    Fail,
    Stop,
    /// Blocks until released through the port it sends back.
    Block(SendPort<SendPort<()>>),
    /// Says it started, then runs until a kill is requested (or `T`).
    UntilKilled(SendPort<()>),
    /// 1 if a kill is requested of this incarnation, else 0.
    KillRequested,
}

/// Counts `Incr`s; the count is lost when it restarts.
pub(crate) struct Worker {
    pub(crate) count: u64,
    pub(crate) args: Args,
}

impl Isolate for Worker {
    type Args = Args;
    type Message = Msg;
    type Reply = u64;
    type Error = String;

    fn start(args: Args, _: &mut Context<Self>) -> Result<Self, String> {
        if let Some(log) = &args.log {
            let _ = log.send(format!("start {}", args.name));
        }
        Ok(Worker { count: 0, args })
    }

    fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) -> Result<u64, String> {
        match msg {
            Msg::Incr => self.count += 1,
            Msg::Get => {}
            Msg::Panic => panic!("{} was told to panic", self.args.name),
            Msg::Fail => return Err(format!("{} was told to fail", self.args.name)),
            Msg::Stop => ctx.stop(),
            Msg::Block(reply) => {
                let (tx, rx) = port::bounded::<()>(1);
                reply.send(tx).map_err(|e| e.to_string())?;
                let _ = rx.recv_timeout(T);
            }
            Msg::UntilKilled(started) => {
                let _ = started.send(());
                let until = Instant::now() + T;
                while !ctx.kill_requested() && Instant::now() < until {
                    std::thread::yield_now();
                }
            }
            Msg::KillRequested => return Ok(u64::from(ctx.kill_requested())),
        }
        Ok(self.count)
    }

    fn stopping(&mut self, _: &ExitReason) {
        if let Some(log) = &self.args.log {
            let _ = log.send(format!("stop {}", self.args.name));
        }
    }
}

pub(crate) fn args(name: &str) -> Args {
    Args {
        name: name.into(),
        log: None,
    }
}

pub(crate) fn logged_args(name: &str, log: &SendPort<String>) -> Args {
    Args {
        name: name.into(),
        log: Some(log.clone()),
    }
}

pub(crate) fn events(sup: &Supervisor) -> ReceivePort<SupervisionEvent> {
    let (tx, rx) = port::unbounded();
    sup.add_event_listener(tx);
    rx
}

/// Receives events until one matches `want`; fails after `T`. Returns the
/// events that came before it.
pub(crate) fn expect_event(
    rx: &ReceivePort<SupervisionEvent>,
    want: impl Fn(&SupervisionEvent) -> bool,
) -> Vec<SupervisionEvent> {
    let deadline = Instant::now() + T;
    let mut before = Vec::new();
    loop {
        match rx.recv_deadline(deadline) {
            Ok(event) if want(&event) => return before,
            Ok(event) => before.push(event),
            Err(e) => panic!("the expected event never came (after {before:?}): {e}"),
        }
    }
}

pub(crate) fn restarted(name: &str) -> impl Fn(&SupervisionEvent) -> bool + '_ {
    move |e| matches!(e, SupervisionEvent::Restarted { child, .. } if child == name)
}

pub(crate) fn started(name: &str) -> impl Fn(&SupervisionEvent) -> bool + '_ {
    move |e| matches!(e, SupervisionEvent::Started { child } if child == name)
}

pub(crate) fn exited(name: &str) -> impl Fn(&SupervisionEvent) -> bool + '_ {
    move |e| matches!(e, SupervisionEvent::Exited { child, .. } if child == name)
}

pub(crate) fn worker(sup: &Supervisor, name: &str) -> IsolateHandle<Worker> {
    sup.worker::<Worker>(name).expect("no such worker")
}

pub(crate) fn count(h: &IsolateHandle<Worker>) -> u64 {
    h.ask_timeout(Msg::Get, T).unwrap()
}

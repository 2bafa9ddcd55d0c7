//! Isolate lifecycle: ask and cast, panics and errors, kill priorities with
//! queued messages, pause tokens, ping, listeners, stats, ordering.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Even, wait_until};
use isolates::{
    AskError, CodecError, Context, ExitReason, Isolate, IsolateBuilder, IsolateError,
    IsolateHandle, IsolateState, Mailbox, Pending, Priority, SendError, SendPort, SendTimeoutError,
    Transfer, TrySendError, port,
};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
enum Cmd {
    /// Blocks until released through the port it sends back (or killed).
    Block(SendPort<SendPort<()>>),
    Echo(u32),
    /// Appended to the log; checked against the previous value.
    Record(u32),
    Log,
    Panic(String),
    Fail(String),
    Stop,
    Even(Even),
    /// Replies with the address of the buffer it received.
    Address(Transfer),
    ReplyTo(SendPort<String>, String),
    Spin(u64),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Out {
    Unit,
    N(u64),
    Log { log: Vec<u32>, out_of_order: u32 },
    Interrupted,
}

#[derive(Default, Serialize, Deserialize)]
struct Opts {
    fail_start: bool,
    panic_start: bool,
    /// Every recorded value is also sent here.
    mirror: Option<SendPort<u32>>,
}

struct Subject {
    log: Vec<u32>,
    out_of_order: u32,
    mirror: Option<SendPort<u32>>,
}

impl Isolate for Subject {
    type Args = Opts;
    type Message = Cmd;
    type Reply = Out;
    type Error = String;

    fn start(opts: Opts, _: &mut Context<Self>) -> Result<Self, String> {
        if opts.panic_start {
            panic!("start panicked");
        }
        if opts.fail_start {
            return Err("start refused".into());
        }
        Ok(Subject {
            log: Vec::new(),
            out_of_order: 0,
            mirror: opts.mirror,
        })
    }

    fn handle(&mut self, cmd: Cmd, ctx: &mut Context<Self>) -> Result<Out, String> {
        match cmd {
            Cmd::Block(tell) => {
                let (release, gate) = port::bounded::<()>(1);
                tell.send(release).map_err(|e| e.to_string())?;
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if gate.recv_timeout(Duration::from_millis(1)).is_ok() {
                        return Ok(Out::Unit);
                    }
                    if ctx.kill_requested() {
                        return Ok(Out::Interrupted);
                    }
                    if Instant::now() > deadline {
                        return Err("the gate never opened".into());
                    }
                }
            }
            Cmd::Echo(n) => Ok(Out::N(n.into())),
            Cmd::Record(n) => {
                if self.log.last().is_some_and(|&last| last + 1 != n) {
                    self.out_of_order += 1;
                }
                self.log.push(n);
                if let Some(mirror) = &self.mirror {
                    mirror.send(n).map_err(|e| e.to_string())?;
                }
                Ok(Out::Unit)
            }
            Cmd::Log => Ok(Out::Log {
                log: self.log.clone(),
                out_of_order: self.out_of_order,
            }),
            Cmd::Panic(msg) => panic!("{msg}"),
            Cmd::Fail(msg) => Err(msg),
            Cmd::Stop => {
                ctx.stop();
                Ok(Out::Unit)
            }
            Cmd::Even(Even(n)) => Ok(Out::N(n.into())),
            Cmd::Address(t) => Ok(Out::N(t.into_vec().as_ptr() as u64)),
            Cmd::ReplyTo(port, text) => {
                port.send(text.to_uppercase()).map_err(|e| e.to_string())?;
                Ok(Out::Unit)
            }
            Cmd::Spin(iterations) => {
                let mut x = 0u64;
                for i in 0..iterations {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                Ok(Out::N(x))
            }
        }
    }
}

fn spawn() -> IsolateHandle<Subject> {
    Subject::spawn(Opts::default()).unwrap()
}

/// Sends a `Block` and waits until the handler is inside it; returns the
/// pending reply and the port that releases it.
fn block(h: &IsolateHandle<Subject>) -> (Pending<Out, AskError<String>>, SendPort<()>) {
    let (tell, told) = port::bounded::<SendPort<()>>(1);
    let pending = h.ask_pending(Cmd::Block(tell));
    let release = told.recv_timeout(T).expect("the handler started blocking");
    (pending, release)
}

#[test]
fn ask_and_cast() {
    let h = spawn();
    h.cast(Cmd::Record(1)).unwrap();
    h.try_cast(Cmd::Record(2)).unwrap();
    h.cast_timeout(Cmd::Record(3), T).unwrap();
    assert_eq!(h.ask_timeout(Cmd::Echo(7), T), Ok(Out::N(7)));
    assert_eq!(
        h.ask_timeout(Cmd::Log, T),
        Ok(Out::Log {
            log: vec![1, 2, 3],
            out_of_order: 0
        })
    );
    let stats = h.stats();
    assert_eq!(stats.messages_handled, 5);
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.state, IsolateState::Running);
}

#[test]
fn panicking_handler_is_contained() {
    let (h, token) = IsolateBuilder::new()
        .spawn_paused::<Subject>(Opts::default())
        .unwrap();
    let (errors_tx, errors) = port::unbounded::<IsolateError>();
    let (exits_tx, exits) = port::unbounded::<ExitReason>();
    h.add_error_listener(errors_tx);
    h.add_exit_listener(exits_tx);
    h.resume(&token);
    let bystander = spawn();

    let err = h.ask_timeout(Cmd::Panic("kaboom".into()), T).unwrap_err();
    assert_eq!(err, AskError::Panicked("kaboom".into()));
    assert_eq!(
        exits.recv_timeout(T),
        Ok(ExitReason::Panicked("kaboom".into()))
    );
    let error = errors.recv_timeout(T).unwrap();
    assert_eq!(error.message, "kaboom");
    assert!(
        error.stack.contains("isolate.rs"),
        "stack names the file: {}",
        error.stack
    );
    assert!(h.is_finished());
    assert_eq!(h.stats().errors, 1);
    // Nothing else was disturbed.
    assert_eq!(bystander.ask_timeout(Cmd::Echo(1), T), Ok(Out::N(1)));
}

#[test]
fn errors_not_fatal_keep_the_isolate() {
    let h = IsolateBuilder::new()
        .errors_are_fatal(false)
        .spawn::<Subject>(Opts::default())
        .unwrap();
    assert_eq!(
        h.ask_timeout(Cmd::Fail("nope".into()), T),
        Err(AskError::Failed("nope".to_string()))
    );
    assert_eq!(
        h.ask_timeout(Cmd::Fail("again".into()), T),
        Err(AskError::Failed("again".to_string()))
    );
    assert_eq!(h.ask_timeout(Cmd::Echo(2), T), Ok(Out::N(2)));
    assert_eq!(h.stats().errors, 2);
    // Switched to fatal at run time, the next error ends it.
    h.set_errors_fatal(true);
    assert_eq!(
        h.ask_timeout(Cmd::Fail("now fatal".into()), T),
        Err(AskError::Failed("now fatal".to_string()))
    );
    assert_eq!(h.join(T), Some(ExitReason::Failed("now fatal".into())));
}

#[test]
fn a_panic_ends_the_isolate_even_with_errors_not_fatal() {
    let h = IsolateBuilder::new()
        .errors_are_fatal(false)
        .spawn::<Subject>(Opts::default())
        .unwrap();
    // The panic is answered, then the half-changed state is not used again.
    let mut panicked = h.ask_pending(Cmd::Panic("broken".into()));
    let mut after = h.ask_pending(Cmd::Echo(4));
    assert_eq!(
        panicked.wait_timeout(T),
        Some(Err(AskError::Panicked("broken".into())))
    );
    assert_eq!(
        after.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Panicked("broken".into()))))
    );
    assert_eq!(h.join(T), Some(ExitReason::Panicked("broken".into())));
}

#[test]
fn handler_error_is_typed_and_fatal_by_default() {
    let h = spawn();
    assert_eq!(
        h.ask_timeout(Cmd::Fail("bad input".into()), T),
        Err(AskError::Failed("bad input".to_string()))
    );
    assert_eq!(h.join(T), Some(ExitReason::Failed("bad input".into())));
}

#[test]
fn start_failure_and_start_panic() {
    let (h, token) = IsolateBuilder::new()
        .spawn_paused::<Subject>(Opts {
            fail_start: true,
            ..Opts::default()
        })
        .unwrap();
    let (tx, exits) = port::unbounded();
    h.add_exit_listener(tx);
    h.resume(&token);
    assert_eq!(
        exits.recv_timeout(T),
        Ok(ExitReason::Failed("start refused".into()))
    );
    assert_eq!(
        h.ask_timeout(Cmd::Echo(1), T),
        Err(AskError::Dead(ExitReason::Failed("start refused".into())))
    );

    let h = Subject::spawn(Opts {
        panic_start: true,
        ..Opts::default()
    })
    .unwrap();
    assert_eq!(
        h.join(T),
        Some(ExitReason::Panicked("start panicked".into()))
    );
}

#[test]
fn kill_after_current_finishes_the_message_and_fails_the_queue() {
    let h = spawn();
    let (mut running, release) = block(&h);
    let mut queued: Vec<_> = (0..5).map(|n| h.ask_pending(Cmd::Echo(n))).collect();
    for n in 0..3 {
        h.cast(Cmd::Record(n)).unwrap();
    }
    let mut ping_before = h.ping(Priority::AfterCurrent);
    h.kill(Priority::AfterCurrent);
    let mut ping_after = h.ping(Priority::AfterCurrent);
    release.send(()).unwrap();

    assert_eq!(
        running.wait_timeout(T),
        Some(Ok(Out::Unit)),
        "the current message completes"
    );
    assert_eq!(h.join(T), Some(ExitReason::Killed));
    for pending in &mut queued {
        assert_eq!(
            pending.wait_timeout(T),
            Some(Err(AskError::Dead(ExitReason::Killed)))
        );
    }
    assert_eq!(
        ping_before.wait_timeout(T),
        Some(Ok(())),
        "control sent before the kill is served"
    );
    assert_eq!(
        ping_after.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
    let stats = h.stats();
    assert_eq!(stats.messages_handled, 1);
    assert_eq!(stats.dropped, 3, "queued casts are dropped and counted");
    assert_eq!(stats.state, IsolateState::Exited);
}

#[test]
fn kill_immediate_interrupts_cooperatively_and_jumps_the_control_queue() {
    let h = spawn();
    let (mut running, _release) = block(&h);
    let mut queued = h.ask_pending(Cmd::Echo(1));
    let mut ordinary_ping = h.ping(Priority::AfterCurrent);
    h.kill(Priority::Immediate);

    assert_eq!(
        running.wait_timeout(T),
        Some(Ok(Out::Interrupted)),
        "the handler saw kill_requested"
    );
    assert_eq!(h.join(T), Some(ExitReason::Killed));
    assert_eq!(
        queued.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
    assert_eq!(
        ordinary_ping.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed))),
        "the immediate kill overtook the queued ping"
    );
}

#[test]
fn ask_timeout_then_recovery() {
    let h = spawn();
    let (mut running, release) = block(&h);
    let started = Instant::now();
    assert_eq!(
        h.ask_timeout(Cmd::Echo(1), Duration::from_millis(50)),
        Err(AskError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    release.send(()).unwrap();
    assert_eq!(running.wait_timeout(T), Some(Ok(Out::Unit)));
    // The timed-out message was still handled; later asks work.
    assert_eq!(h.ask_timeout(Cmd::Echo(2), T), Ok(Out::N(2)));
    assert_eq!(h.stats().messages_handled, 3);
}

#[test]
fn dead_isolate_refuses_everything_with_its_reason() {
    let h = spawn();
    h.kill(Priority::Immediate);
    assert_eq!(h.join(T), Some(ExitReason::Killed));
    assert_eq!(
        h.ask_timeout(Cmd::Echo(1), T),
        Err(AskError::Dead(ExitReason::Killed))
    );
    let mut pending = h.ask_pending(Cmd::Echo(1));
    assert_eq!(
        pending.try_take(),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
    match h.cast(Cmd::Echo(9)) {
        Err(SendError::Disconnected(Cmd::Echo(9))) => {}
        other => panic!("expected the message back, got {other:?}"),
    }
    assert!(matches!(
        h.try_cast(Cmd::Echo(9)),
        Err(TrySendError::Disconnected(Cmd::Echo(9)))
    ));
    assert_eq!(
        h.ping(Priority::Immediate).wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
    // Killing again and listening late are harmless.
    h.kill(Priority::AfterCurrent);
    let (tx, exits) = port::unbounded();
    h.add_exit_listener(tx);
    assert_eq!(exits.recv_timeout(T), Ok(ExitReason::Killed));
}

#[test]
fn pause_holds_messages_and_resume_delivers_them_in_order() {
    let h = spawn();
    let token = h.pause();
    for n in 0..100 {
        h.cast(Cmd::Record(n)).unwrap();
    }
    let mut log = h.ask_pending(Cmd::Log);
    // A paused isolate still answers pings; once it has, the pause is in force.
    assert_eq!(h.ping(Priority::AfterCurrent).wait_timeout(T), Some(Ok(())));
    assert_eq!(h.state(), IsolateState::Paused);
    let stats = h.stats();
    assert_eq!(stats.messages_handled, 0);
    assert_eq!(stats.queue_len, 101);
    assert_eq!(log.try_take(), None);

    h.resume(&token);
    assert_eq!(
        log.wait_timeout(T),
        Some(Ok(Out::Log {
            log: (0..100).collect(),
            out_of_order: 0
        }))
    );
    assert_eq!(h.state(), IsolateState::Running);
}

#[test]
fn pause_tokens_follow_dart() {
    let h = spawn();
    // The same token twice needs one resume.
    let a = h.pause();
    h.pause_with(&a);
    h.resume(&a);
    assert_eq!(h.ask_timeout(Cmd::Echo(1), T), Ok(Out::N(1)));

    // Two tokens need two resumes.
    let a = h.pause();
    let b = h.pause();
    let mut reply = h.ask_pending(Cmd::Echo(2));
    h.resume(&a);
    assert_eq!(h.ping(Priority::AfterCurrent).wait_timeout(T), Some(Ok(())));
    assert_eq!(h.state(), IsolateState::Paused, "b still holds it");
    assert_eq!(reply.try_take(), None);
    h.resume(&b);
    assert_eq!(reply.wait_timeout(T), Some(Ok(Out::N(2))));
    // A resume with no pause behind it does nothing.
    h.resume(&b);
    assert_eq!(h.ask_timeout(Cmd::Echo(3), T), Ok(Out::N(3)));
}

#[test]
fn kill_while_paused_before_start() {
    let (h, _token) = IsolateBuilder::new()
        .spawn_paused::<Subject>(Opts::default())
        .unwrap();
    let mut queued = h.ask_pending(Cmd::Echo(1));
    // Not started: its thread may or may not have reached the pause yet.
    let state = h.state();
    assert!(
        matches!(state, IsolateState::Starting | IsolateState::Paused),
        "{state:?}"
    );
    assert_eq!(h.ping(Priority::Immediate).wait_timeout(T), Some(Ok(())));
    h.kill(Priority::AfterCurrent);
    assert_eq!(h.join(T), Some(ExitReason::Killed));
    assert_eq!(
        queued.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
}

#[test]
fn ten_thousand_messages_in_order() {
    const COUNT: u32 = 10_000;
    let h = spawn();
    for n in 0..COUNT {
        h.cast(Cmd::Record(n)).unwrap();
    }
    match h.ask_timeout(Cmd::Log, T) {
        Ok(Out::Log { log, out_of_order }) => {
            assert_eq!(out_of_order, 0);
            assert_eq!(log, (0..COUNT).collect::<Vec<_>>());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn many_askers_each_get_their_own_reply() {
    let h = spawn();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let h = h.clone();
            thread::spawn(move || {
                for i in 0..500u32 {
                    let n = t * 1000 + i;
                    assert_eq!(h.ask_timeout(Cmd::Echo(n), T), Ok(Out::N(n.into())));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(h.stats().messages_handled, 2000);
}

#[test]
fn undecodable_message_is_the_senders_error() {
    // Only a copying isolate decodes its messages.
    let h = IsolateBuilder::new()
        .copy_messages(true)
        .spawn::<Subject>(Opts::default())
        .unwrap();
    match h.ask_timeout(Cmd::Even(Even(3)), T) {
        Err(AskError::BadMessage(CodecError::Malformed(why))) => {
            assert!(why.contains("3 is odd"), "{why}")
        }
        other => panic!("expected BadMessage, got {other:?}"),
    }
    h.cast(Cmd::Even(Even(5))).unwrap();
    assert_eq!(h.ask_timeout(Cmd::Even(Even(4)), T), Ok(Out::N(4)));
    let stats = h.stats();
    assert_eq!(stats.bad_messages, 2);
    assert_eq!(stats.errors, 0);
    assert!(!h.is_finished());
}

#[test]
fn transfer_reaches_the_isolate_without_a_copy() {
    let h = spawn();
    let buffer = vec![1u8; 64 << 20];
    let address = buffer.as_ptr() as u64;
    assert_eq!(
        h.ask_timeout(Cmd::Address(Transfer::new(buffer)), T),
        Ok(Out::N(address))
    );
}

#[test]
fn reply_port_inside_a_message() {
    let h = spawn();
    let (tx, rx) = port::bounded::<String>(1);
    h.cast(Cmd::ReplyTo(tx, "shout".into())).unwrap();
    assert_eq!(rx.recv_timeout(T), Ok("SHOUT".to_string()));
}

#[test]
fn stop_exits_normally_and_fails_the_rest() {
    let h = spawn();
    let (mut running, release) = block(&h);
    let mut stop = h.ask_pending(Cmd::Stop);
    let mut after = h.ask_pending(Cmd::Echo(1));
    release.send(()).unwrap();
    assert_eq!(running.wait_timeout(T), Some(Ok(Out::Unit)));
    assert_eq!(stop.wait_timeout(T), Some(Ok(Out::Unit)));
    assert_eq!(
        after.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Normal)))
    );
    assert_eq!(h.join(T), Some(ExitReason::Normal));
}

#[test]
fn dropping_every_handle_drains_the_mailbox_then_exits() {
    let (mirror, seen) = port::unbounded::<u32>();
    let (h, token) = IsolateBuilder::new()
        .spawn_paused::<Subject>(Opts {
            mirror: Some(mirror),
            ..Opts::default()
        })
        .unwrap();
    let (tx, exits) = port::unbounded();
    h.add_exit_listener(tx);
    for n in 0..50 {
        h.cast(Cmd::Record(n)).unwrap();
    }
    let second = h.clone();
    h.resume(&token);
    drop(h);
    assert!(!second.is_finished());
    drop(second);
    assert_eq!(exits.recv_timeout(T), Ok(ExitReason::Normal));
    assert_eq!(
        seen.try_iter().collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>(),
        "nothing lost"
    );
}

#[test]
fn bounded_mailbox_full_policies() {
    let (h, token) = IsolateBuilder::new()
        .mailbox(Mailbox::Bounded(2))
        .spawn_paused::<Subject>(Opts::default())
        .unwrap();
    h.try_cast(Cmd::Echo(1)).unwrap();
    let mut first = h.ask_pending(Cmd::Echo(2));
    assert!(matches!(
        h.try_cast(Cmd::Echo(3)),
        Err(TrySendError::Full(Cmd::Echo(3)))
    ));
    assert_eq!(
        h.ask_pending(Cmd::Echo(4)).try_take(),
        Some(Err(AskError::Full))
    );
    assert!(matches!(
        h.cast_timeout(Cmd::Echo(5), Duration::from_millis(20)),
        Err(SendTimeoutError::Timeout(Cmd::Echo(5)))
    ));
    assert_eq!(
        h.ask_timeout(Cmd::Echo(6), Duration::from_millis(20)),
        Err(AskError::Timeout)
    );
    h.resume(&token);
    assert_eq!(first.wait_timeout(T), Some(Ok(Out::N(2))));
    assert_eq!(h.ask_timeout(Cmd::Echo(7), T), Ok(Out::N(7)));
}

#[test]
fn oversized_message_is_refused_at_the_sender() {
    let h = IsolateBuilder::new()
        .copy_messages(true)
        .codec(isolates::Bincode::<64>::limited())
        .spawn::<Subject>(Opts::default())
        .unwrap();
    let (tx, _rx) = port::unbounded::<String>();
    let long = "x".repeat(100);
    match h.ask_timeout(Cmd::ReplyTo(tx, long), T) {
        Err(AskError::Encode(CodecError::TooLarge { limit: 64, .. })) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(h.ask_timeout(Cmd::Echo(1), T), Ok(Out::N(1)));
}

#[test]
fn stats_count_busy_time() {
    let h = spawn();
    assert_eq!(
        h.ask_timeout(Cmd::Spin(2_000_000), T)
            .map(|o| matches!(o, Out::N(_))),
        Ok(true)
    );
    let stats = h.stats();
    assert!(stats.busy > Duration::ZERO);
    assert!(stats.uptime >= stats.busy);
    assert_eq!(stats.messages_handled, 1);
}

#[test]
fn names_and_debug_show_no_payload() {
    let named = IsolateBuilder::new()
        .name("worker-7")
        .spawn::<Subject>(Opts::default())
        .unwrap();
    assert_eq!(named.name(), "worker-7");
    let unnamed = spawn();
    assert_eq!(unnamed.name(), format!("Subject#{}", unnamed.id()));
    assert_ne!(named.id(), unnamed.id());
    assert_eq!(named.clone(), named);
    assert_ne!(named, unnamed);

    let err = named
        .ask_timeout(Cmd::Fail("SECRET-PAYLOAD".into()), T)
        .unwrap_err();
    let debug = format!("{named:?}");
    assert!(
        debug.contains("worker-7") && !debug.contains("SECRET"),
        "{debug}"
    );
    // The error was fatal: once it has exited, a cast is refused.
    assert!(named.join(T).is_some());
    let cast_err = named.cast(Cmd::Echo(0xDEAD)).unwrap_err();
    assert!(!format!("{cast_err:?}").contains("57005"), "{cast_err:?}");
    assert!(
        err.to_string().contains("SECRET-PAYLOAD"),
        "Display of the typed error carries it"
    );
}

#[test]
fn pending_is_polled_from_a_frame_loop() {
    let h = spawn();
    let (mut running, release) = block(&h);
    let frames = Arc::new(std::sync::atomic::AtomicU32::new(0));
    // The loop keeps drawing while the reply is on its way.
    for _ in 0..5 {
        assert_eq!(running.try_take(), None);
        assert!(!running.is_done());
        frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    release.send(()).unwrap();
    assert!(wait_until(|| running.is_done(), T));
    assert_eq!(running.try_take(), Some(Ok(Out::Unit)));
    assert_eq!(running.try_take(), None, "resolves exactly once");
    assert!(running.is_taken());
    assert_eq!(running.wait(), Err(AskError::AlreadyTaken));
    assert_eq!(frames.load(std::sync::atomic::Ordering::Relaxed), 5);
}

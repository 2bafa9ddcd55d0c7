//! Less ceremony: pools and isolates from functions, replies typed per
//! message, and the `ask` family (`ask` without a timeout, `ask_timeout`,
//! `ask_deadline`).
//!
//! Nothing here sleeps to let something happen: running tasks and handlers
//! are gated on ports, and waits are on conditions with generous timeouts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::wait_until;
use isolates::pool::{FnWorker, Pool, TaskContext, TaskState, join_all};
use isolates::process::ProcessOptions;
use isolates::supervisor::{ChildSpec, Supervisor};
use isolates::{
    AskError, Bincode, Codec, CodecError, Context, ExitReason, FnIsolate, Isolate, IsolateBuilder,
    IsolateHandle, Mailbox, Never, Priority, Request, SpawnError, TaskError, port,
};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- pools

#[test]
fn a_pool_from_a_function_is_an_ordinary_pool() {
    let squares: Pool<FnWorker<u64, u64>> = Pool::from_fn(|x: u64| x * x).unwrap();
    let handles: Vec<_> = (0..100).map(|x| squares.submit(x)).collect();
    let results = join_all(handles);
    assert_eq!(results, (0..100).map(|x| Ok(x * x)).collect::<Vec<_>>());
    assert_eq!(squares.stats().succeeded, 100);
}

#[test]
fn the_builder_settings_apply_to_a_pool_from_a_function() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let pool = Pool::builder()
        .name("lengths")
        .workers(2)
        .spawn_fn(move |text: String| {
            counted.fetch_add(1, Ordering::SeqCst);
            (thread::current().name().map(str::to_owned), text.len())
        })
        .unwrap();
    assert_eq!(pool.stats().workers, 2);
    let (thread, len) = pool.submit("four".into()).wait().unwrap();
    assert_eq!(len, 4);
    assert!(thread.is_some_and(|name| name.starts_with("lengths-")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_task_function_reports_progress_fails_and_sees_cancellation() {
    let (started_tx, started) = port::unbounded::<u64>();
    let pool = Pool::builder()
        .workers(2)
        .spawn_task_fn(move |n: u64, task: &TaskContext<'_, _>| {
            if n == 0 {
                return Err("zero is refused".to_string());
            }
            if n == u64::MAX {
                // Runs until cancelled.
                started_tx.send(task.id()).map_err(|e| e.to_string())?;
                let deadline = Instant::now() + T;
                while !task.is_cancelled() {
                    if Instant::now() > deadline {
                        return Err("never cancelled".into());
                    }
                    thread::yield_now();
                }
                return Err("cancelled".into());
            }
            for i in 1..=n {
                task.progress(i as u32);
            }
            Ok(n * 10)
        })
        .unwrap();

    let mut counted = pool.submit(3);
    assert_eq!(counted.wait_timeout(T), Some(Ok(30)));
    assert_eq!(counted.progress(), vec![1, 2, 3]);

    assert_eq!(
        pool.submit(0).wait(),
        Err(TaskError::Failed("zero is refused".to_string()))
    );

    let endless = pool.submit(u64::MAX);
    assert_eq!(started.recv_timeout(T), Ok(endless.id()));
    assert_eq!(endless.state(), TaskState::Running);
    assert!(endless.cancel());
    assert_eq!(endless.wait(), Err(TaskError::Cancelled));
    // The worker came back from the cancelled task and serves the next.
    assert_eq!(pool.submit(1).wait(), Ok(10));
}

#[test]
fn a_panicking_function_fails_its_task_and_the_pool_goes_on() {
    let pool = Pool::builder()
        .workers(1)
        .spawn_fn(|n: u32| {
            assert!(n != 13, "unlucky");
            n + 1
        })
        .unwrap();
    match pool.submit(13).wait() {
        Err(TaskError::Panicked(message)) => assert!(message.contains("unlucky"), "{message}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(pool.submit(1).wait(), Ok(2));
}

#[test]
fn a_pool_from_a_closure_refuses_a_child_process_with_a_typed_error() {
    let err = Pool::builder()
        .workers(1)
        .process(ProcessOptions::new())
        .spawn_fn(|n: u8| n)
        .unwrap_err();
    let SpawnError::InProcessOnly(why) = &err else {
        panic!("expected InProcessOnly, got {err:?}");
    };
    assert!(
        why.contains("a pool from a closure cannot run in a child process or on another machine"),
        "{why}"
    );
    assert!(why.contains("implement `Worker` and register it"), "{why}");
    assert_eq!(err.to_string(), *why);
}

#[cfg(feature = "nats")]
#[test]
fn a_pool_from_a_closure_refuses_nats_before_connecting() {
    // Nothing listens on port 9: the refusal comes before any connection.
    let err = Pool::builder()
        .nats(
            isolates::remote::NatsOptions::new("nats://127.0.0.1:9"),
            "squares",
        )
        .spawn_fn(|n: u64| n * n)
        .unwrap_err();
    assert!(matches!(err, SpawnError::InProcessOnly(_)), "{err:?}");
}

#[test]
fn a_closure_isolate_cannot_be_encoded_and_says_why() {
    let isolate = FnIsolate::new((), |_: &mut (), n: u8, _| n);
    let mut out = Vec::new();
    let err = Bincode::new().encode(&isolate, &mut out).unwrap_err();
    assert!(
        matches!(err, CodecError::Encode(ref why) if why.contains("cannot run in a child process")),
        "{err}"
    );
    let err = Bincode::new()
        .decode::<FnIsolate<(), u8, u8>>(&[0])
        .unwrap_err();
    assert!(
        err.to_string().contains("implement `isolates::Isolate`"),
        "{err}"
    );
}

// ------------------------------------------------------------- isolates

/// A state with nothing serde can do with: it only ever moves.
struct Tally {
    seen: Vec<String>,
}

#[test]
fn an_isolate_from_a_function_keeps_its_state_between_messages() {
    let tally = isolates::spawn_fn(
        Tally { seen: Vec::new() },
        |t: &mut Tally, word: String, _| {
            t.seen.push(word);
            t.seen.join(" ")
        },
    )
    .unwrap();
    tally.cast("a".into()).unwrap();
    tally.cast("b".into()).unwrap();
    assert_eq!(tally.ask("c".into()), Ok("a b c".to_string()));
    assert_eq!(tally.stats().messages_handled, 3);
}

#[test]
fn an_isolate_from_a_function_sees_its_context() {
    let once = IsolateBuilder::new()
        .name("once")
        .spawn_fn(0u32, |n: &mut u32, msg: u32, ctx: &mut Context<_>| {
            *n += msg;
            ctx.stop();
            format!("{} got {n}", ctx.name())
        })
        .unwrap();
    assert_eq!(once.ask(4), Ok("once got 4".to_string()));
    assert_eq!(once.join(T), Some(ExitReason::Normal));
}

#[test]
fn an_isolate_from_a_closure_refuses_a_child_process_with_a_typed_error() {
    let err = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn_fn((), |_: &mut (), n: u8, _| n)
        .unwrap_err();
    let SpawnError::InProcessOnly(why) = &err else {
        panic!("expected InProcessOnly, got {err:?}");
    };
    assert!(why.contains("cannot run in a child process"), "{why}");
    assert!(why.contains("implement `isolates::Isolate`"), "{why}");
}

#[test]
fn copying_messages_copies_them_and_still_moves_the_state() {
    let copied = IsolateBuilder::new()
        .copy_messages(true)
        .codec(Bincode::<256>::limited())
        .spawn_fn(
            Tally { seen: Vec::new() },
            |t: &mut Tally, bytes: Vec<u8>, _| {
                t.seen.push(format!("{}", bytes.len()));
                t.seen.len()
            },
        )
        .unwrap();
    assert_eq!(copied.ask(vec![1, 2, 3]), Ok(1));
    let err = copied.ask(vec![0; 1024]).unwrap_err();
    assert!(
        matches!(err, AskError::Encode(CodecError::TooLarge { .. })),
        "{err:?}"
    );
    assert_eq!(copied.ask(vec![]), Ok(2));
}

#[test]
fn a_supervised_isolate_from_a_function_restarts_from_its_initial_state() {
    let tree = Supervisor::builder()
        .restart_intensity(5, Duration::from_secs(5))
        .child(ChildSpec::worker_fn(
            "sum",
            vec![1u32],
            |sum: &mut Vec<u32>, n: u32, _| {
                assert!(n != 0, "zero crashes the sum");
                sum.push(n);
                sum.iter().sum::<u32>()
            },
        ))
        .spawn()
        .unwrap();
    let sum: IsolateHandle<FnIsolate<Vec<u32>, u32, u32>> =
        tree.worker::<FnIsolate<Vec<u32>, u32, u32>>("sum").unwrap();
    assert_eq!(sum.ask(2), Ok(3));
    assert_eq!(sum.ask(3), Ok(6));
    assert!(matches!(sum.ask(0), Err(AskError::Panicked(_))));
    // The restart began again from a clone of `vec![1]`.
    assert_eq!(sum.ask(10), Ok(11));
    tree.stop();
    assert!(tree.join(T).is_some());
}

// ------------------------------------------------------- typed requests

/// Keeps a text; three requests with three reply types.
struct Text(String);

#[derive(Serialize, Deserialize)]
struct Len;
#[derive(Serialize, Deserialize)]
struct Upper;
#[derive(Serialize, Deserialize)]
struct Append(String);
/// Its `Request` impl expects the reply of `Len`: a deliberate mismatch.
#[derive(Serialize, Deserialize)]
struct Confused;

#[derive(Serialize, Deserialize)]
enum TextMsg {
    Len(Len),
    Upper(Upper),
    Append(Append),
    Confused(Confused),
}

#[derive(Serialize, Deserialize)]
enum TextReply {
    Len(usize),
    Upper(String),
    Appended,
}

impl Isolate for Text {
    type Args = String;
    type Message = TextMsg;
    type Reply = TextReply;
    type Error = String;

    fn start(text: String, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Text(text))
    }

    fn handle(&mut self, msg: TextMsg, _: &mut Context<Self>) -> Result<TextReply, String> {
        Ok(match msg {
            TextMsg::Len(Len) => TextReply::Len(self.0.len()),
            TextMsg::Upper(Upper) | TextMsg::Confused(Confused) => {
                TextReply::Upper(self.0.to_uppercase())
            }
            TextMsg::Append(Append(more)) => {
                if more.is_empty() {
                    return Err("nothing to append".into());
                }
                self.0.push_str(&more);
                TextReply::Appended
            }
        })
    }
}

impl Request<Text> for Len {
    type Reply = usize;
    fn into_message(self) -> TextMsg {
        TextMsg::Len(self)
    }
    fn from_reply(reply: TextReply) -> Option<usize> {
        match reply {
            TextReply::Len(n) => Some(n),
            _ => None,
        }
    }
}

impl Request<Text> for Upper {
    type Reply = String;
    fn into_message(self) -> TextMsg {
        TextMsg::Upper(self)
    }
    fn from_reply(reply: TextReply) -> Option<String> {
        match reply {
            TextReply::Upper(s) => Some(s),
            _ => None,
        }
    }
}

impl Request<Text> for Append {
    type Reply = ();
    fn into_message(self) -> TextMsg {
        TextMsg::Append(self)
    }
    fn from_reply(reply: TextReply) -> Option<()> {
        matches!(reply, TextReply::Appended).then_some(())
    }
}

impl Request<Text> for Confused {
    type Reply = usize;
    fn into_message(self) -> TextMsg {
        TextMsg::Confused(self)
    }
    fn from_reply(reply: TextReply) -> Option<usize> {
        Len::from_reply(reply)
    }
}

fn text(start: &str) -> IsolateHandle<Text> {
    IsolateBuilder::new()
        .errors_are_fatal(false)
        .spawn::<Text>(start.into())
        .unwrap()
}

#[test]
fn each_request_gets_its_own_reply_type() {
    let text = text("hello");
    let len: usize = text.request(Len).wait().unwrap();
    assert_eq!(len, 5);
    let upper: String = text.request(Upper).wait().unwrap();
    assert_eq!(upper, "HELLO");
    text.request(Append(", world".into())).wait().unwrap();
    assert_eq!(text.request(Len).wait_timeout(T), Some(Ok(12)));
    // The handler's own error comes back typed, as with `ask`.
    assert_eq!(
        text.request(Append(String::new())).wait(),
        Err(AskError::Failed("nothing to append".into()))
    );
    // Requests and plain asks go to the same isolate.
    assert!(matches!(
        text.ask(TextMsg::Len(Len)),
        Ok(TextReply::Len(12))
    ));
}

#[test]
fn a_reply_of_another_kind_is_a_typed_error() {
    let text = text("abc");
    let err = text.request(Confused).wait().unwrap_err();
    assert!(err.to_string().contains("Confused"), "{err}");
    let AskError::WrongReply { request } = err else {
        panic!("expected WrongReply, got {err:?}");
    };
    assert!(request.ends_with("Confused"), "{request}");
    // The isolate is fine: the mismatch is the asker's, not the handler's.
    assert_eq!(text.request(Len).wait(), Ok(3));
}

#[test]
fn a_request_is_polled_without_blocking_and_resolves_when_the_isolate_dies() {
    let text = text("abc");
    let token = text.pause();
    let mut pending = text.request(Len);
    assert!(pending.try_take().is_none());
    text.resume(&token);
    assert_eq!(pending.wait_timeout(T), Some(Ok(3)));

    text.kill(Priority::Immediate);
    assert_eq!(text.join(T), Some(ExitReason::Killed));
    assert_eq!(
        text.request(Len).wait(),
        Err(AskError::Dead(ExitReason::Killed))
    );
}

#[test]
fn a_request_to_a_full_bounded_mailbox_is_refused_at_once() {
    let (echo, token) = IsolateBuilder::new()
        .mailbox(Mailbox::Bounded(1))
        .spawn_paused::<Text>("x".into())
        .unwrap();
    echo.try_cast(TextMsg::Len(Len)).unwrap();
    assert_eq!(echo.request(Len).wait(), Err(AskError::Full));
    echo.resume(&token);
    assert!(wait_until(|| echo.stats().queue_len == 0, T));
    assert_eq!(echo.request(Len).wait(), Ok(1));
}

// ------------------------------------------------------------- ask forms

fn echo() -> IsolateHandle<FnIsolate<(), u32, u32>> {
    isolates::spawn_fn((), |_: &mut (), n: u32, _| n).unwrap()
}

#[test]
fn ask_without_a_timeout_waits_for_a_slow_answer() {
    let (started_tx, started) = port::unbounded::<()>();
    let (gate_tx, gate) = port::bounded::<()>(1);
    let slow = isolates::spawn_fn((started_tx, gate), |(started, gate), n: u32, _| {
        let _ = started.send(());
        gate.recv_timeout(T).map_or(0, |()| n)
    })
    .unwrap();
    let asker = {
        let slow = slow.clone();
        thread::spawn(move || slow.ask(7))
    };
    assert_eq!(started.recv_timeout(T), Ok(()));
    assert!(!asker.is_finished());
    gate_tx.send(()).unwrap();
    assert_eq!(asker.join().unwrap(), Ok(7));
}

#[test]
fn ask_without_a_timeout_resolves_when_a_paused_isolate_is_killed() {
    let echo = echo();
    let _token = echo.pause();
    let asker = {
        let echo = echo.clone();
        thread::spawn(move || echo.ask(1))
    };
    assert!(wait_until(|| echo.stats().queue_len == 1, T));
    echo.kill(Priority::Immediate);
    assert_eq!(
        asker.join().unwrap(),
        Err(AskError::Dead(ExitReason::Killed))
    );
}

#[test]
fn ask_without_a_timeout_resolves_when_the_isolate_exits_before_answering() {
    let quitter = isolates::spawn_fn((), |_: &mut (), n: u32, ctx: &mut Context<_>| {
        if n == 0 {
            ctx.exit();
        }
        n
    })
    .unwrap();
    let token = quitter.pause();
    let mut first = quitter.ask_pending(0);
    let second = {
        let quitter = quitter.clone();
        thread::spawn(move || quitter.ask(2))
    };
    assert!(wait_until(|| quitter.stats().queue_len == 2, T));
    quitter.resume(&token);
    assert_eq!(
        first.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Normal)))
    );
    assert_eq!(
        second.join().unwrap(),
        Err(AskError::Dead(ExitReason::Normal))
    );
}

#[test]
fn ask_without_a_timeout_waits_for_room_in_a_bounded_mailbox() {
    let (echo, token) = IsolateBuilder::new()
        .mailbox(Mailbox::Bounded(1))
        .spawn_paused::<FnIsolate<(), u32, u32>>(FnIsolate::new((), |_: &mut (), n: u32, _| n))
        .unwrap();
    echo.try_cast(1).unwrap();
    let asker = {
        let echo = echo.clone();
        thread::spawn(move || echo.ask(2))
    };
    // The ask waits for room, not refused as `Full`.
    assert!(!wait_until(
        || asker.is_finished(),
        Duration::from_millis(50)
    ));
    echo.resume(&token);
    assert_eq!(asker.join().unwrap(), Ok(2));
}

#[test]
fn ask_timeout_and_ask_deadline_give_up_on_a_paused_isolate() {
    let echo = echo();
    assert_eq!(echo.ask_timeout(1, T), Ok(1));
    assert_eq!(echo.ask_deadline(2, Instant::now() + T), Ok(2));

    let token = echo.pause();
    let short = Duration::from_millis(30);
    let started = Instant::now();
    assert_eq!(echo.ask_timeout(3, short), Err(AskError::Timeout));
    assert!(started.elapsed() >= short);
    let deadline = Instant::now() + short;
    assert_eq!(echo.ask_deadline(4, deadline), Err(AskError::Timeout));
    assert!(Instant::now() >= deadline);
    // A deadline already past still sends, and gives up at once.
    assert_eq!(echo.ask_deadline(5, Instant::now()), Err(AskError::Timeout));
    echo.resume(&token);
    // The timed-out messages were still handled, in order; their replies
    // were dropped.
    assert_eq!(echo.ask(6), Ok(6));
    assert!(wait_until(|| echo.stats().messages_handled == 6, T));
}

#[test]
fn ask_deadline_bounds_the_wait_for_room_too() {
    let (echo, _token) = IsolateBuilder::new()
        .mailbox(Mailbox::Bounded(1))
        .spawn_paused::<FnIsolate<(), u32, u32>>(FnIsolate::new((), |_: &mut (), n: u32, _| n))
        .unwrap();
    echo.try_cast(1).unwrap();
    let deadline = Instant::now() + Duration::from_millis(30);
    assert_eq!(echo.ask_deadline(2, deadline), Err(AskError::Timeout));
    assert!(Instant::now() >= deadline);
    // The refused ask never entered the mailbox.
    assert_eq!(echo.stats().queue_len, 1);
}

#[test]
fn never_is_the_error_of_a_function_isolate() {
    let echo = echo();
    let answer: Result<u32, AskError<Never>> = echo.ask(9);
    assert_eq!(answer, Ok(9));
}

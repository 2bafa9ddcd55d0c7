//! Misuse and hostile user code: panicking serde and `Display` impls,
//! "forever" timeouts, zero-capacity mailboxes, orphaned paused isolates,
//! pause tokens of other isolates. Each must give a typed result, never a
//! panic in the caller or a hang.

mod common;

use std::fmt;
use std::time::Duration;

use common::wait_until;
use isolates::{
    AskError, Bincode, CodecError, Context, ExitReason, Isolate, IsolateBuilder, IsolateState,
    Mailbox, Priority, RunError, SpawnError, port, run, run_with,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const T: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(50);

/// Serializes fine unless it is 13; deserializing 7 panics.
#[derive(Debug, PartialEq)]
struct Touchy(u32);

impl Serialize for Touchy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(self.0 != 13, "serialize panics on 13");
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        assert!(n != 7, "deserialize panics on 7");
        Ok(Touchy(n))
    }
}

/// An error whose `Display` panics.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Rude;

impl fmt::Display for Rude {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("display panics")
    }
}

/// Echoes; 100 replies 13 (which cannot be serialized); 0 fails with `Rude`.
struct Echo;

impl Isolate for Echo {
    type Args = ();
    type Message = Touchy;
    type Reply = Touchy;
    type Error = Rude;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, Rude> {
        Ok(Echo)
    }

    fn handle(&mut self, m: Touchy, _: &mut Context<Self>) -> Result<Touchy, Rude> {
        match m.0 {
            0 => Err(Rude),
            100 => Ok(Touchy(13)),
            _ => Ok(m),
        }
    }
}

/// An `Echo` with Dart's copy semantics: its serde impls run on every send.
fn copying_echo() -> isolates::IsolateHandle<Echo> {
    IsolateBuilder::new()
        .copy_messages(true)
        .spawn::<Echo>(())
        .unwrap()
}

#[test]
fn moved_messages_run_no_serde_impl() {
    let h = Echo::spawn(()).unwrap();
    assert_eq!(h.ask_timeout(Touchy(7), T), Ok(Touchy(7)));
    assert_eq!(h.ask_timeout(Touchy(100), T), Ok(Touchy(13)));
    assert_eq!(h.stats().bad_messages, 0);
    assert_eq!(run(touchy_id, Touchy(7)).wait(), Ok(Touchy(7)));
    assert_eq!(run(make_13, ()).wait(), Ok(Touchy(13)));
}

#[test]
fn a_panicking_reply_serialize_is_that_asks_error_only() {
    let h = copying_echo();
    match h.ask_timeout(Touchy(100), T) {
        Err(AskError::BadReply(CodecError::Encode(why))) => {
            assert!(why.contains("serialize panics on 13"), "{why}");
        }
        other => panic!("expected BadReply, got {other:?}"),
    }
    // The isolate goes on.
    assert!(!h.is_finished());
    assert_eq!(h.ask_timeout(Touchy(1), T), Ok(Touchy(1)));
}

#[test]
fn a_panicking_message_deserialize_is_a_bad_message() {
    let h = copying_echo();
    h.cast(Touchy(7)).unwrap();
    match h.ask_timeout(Touchy(7), T) {
        Err(AskError::BadMessage(CodecError::Malformed(why))) => {
            assert!(why.contains("deserialize panics on 7"), "{why}");
        }
        other => panic!("expected BadMessage, got {other:?}"),
    }
    assert_eq!(h.ask_timeout(Touchy(2), T), Ok(Touchy(2)));
    assert_eq!(h.stats().bad_messages, 2);
}

#[test]
fn a_panicking_error_display_still_ends_the_isolate_cleanly() {
    let h = Echo::spawn(()).unwrap();
    assert!(matches!(
        h.ask_timeout(Touchy(0), T),
        Err(AskError::Failed(Rude))
    ));
    match h.join(T) {
        Some(ExitReason::Failed(text)) => {
            assert!(text.contains("the error's Display panicked"), "{text}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(
        h.ask_timeout(Touchy(1), T),
        Err(AskError::Dead(ExitReason::Failed(_)))
    ));
}

fn id(n: u32) -> u32 {
    n
}

#[test]
fn duration_max_means_no_deadline_everywhere() {
    let h = Echo::spawn(()).unwrap();
    assert_eq!(h.ask_timeout(Touchy(1), Duration::MAX), Ok(Touchy(1)));
    h.cast_timeout(Touchy(2), Duration::MAX).unwrap();
    assert_eq!(
        h.ping(Priority::Immediate).wait_timeout(Duration::MAX),
        Some(Ok(()))
    );
    assert_eq!(run(id, 3).wait_timeout(Duration::MAX), Some(Ok(3)));
    let (tx, rx) = port::bounded::<u8>(1);
    tx.send_timeout(4, Duration::MAX).unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX), Ok(4));
    h.kill(Priority::Immediate);
    assert_eq!(h.join(Duration::MAX), Some(ExitReason::Killed));
}

#[test]
fn a_zero_capacity_mailbox_is_refused_at_spawn() {
    let err = IsolateBuilder::new()
        .mailbox(Mailbox::Bounded(0))
        .spawn::<Echo>(())
        .unwrap_err();
    assert_eq!(err, SpawnError::ZeroCapacity);
    assert!(err.to_string().contains("Mailbox::Bounded(1)"), "{err}");
}

#[test]
fn a_paused_isolate_whose_handles_are_gone_exits() {
    // Spawned paused, then dropped: nobody can resume it.
    let (h, _token) = IsolateBuilder::new().spawn_paused::<Echo>(()).unwrap();
    let (tx, exits) = port::unbounded::<ExitReason>();
    h.add_exit_listener(tx);
    drop(h);
    assert_eq!(exits.recv_timeout(T), Ok(ExitReason::Normal));

    // Paused while running, with an ask queued, then dropped: the ask
    // resolves instead of hanging.
    let h = Echo::spawn(()).unwrap();
    let (tx, exits) = port::unbounded::<ExitReason>();
    h.add_exit_listener(tx);
    let _token = h.pause();
    let mut queued = h.ask_pending(Touchy(5));
    drop(h);
    assert_eq!(exits.recv_timeout(T), Ok(ExitReason::Normal));
    assert_eq!(
        queued.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Normal)))
    );
}

#[test]
fn control_requests_do_not_use_mailbox_room() {
    let h = IsolateBuilder::new()
        .mailbox(Mailbox::Bounded(1))
        .spawn::<Echo>(())
        .unwrap();
    let token = h.pause();
    for _ in 0..3 {
        assert_eq!(h.ping(Priority::AfterCurrent).wait_timeout(T), Some(Ok(())));
    }
    assert_eq!(h.stats().queue_len, 0);
    h.try_cast(Touchy(1)).unwrap();
    assert_eq!(h.stats().queue_len, 1);
    assert!(h.try_cast(Touchy(2)).unwrap_err().is_full());
    h.resume(&token);
    assert!(wait_until(|| h.stats().messages_handled == 1, T));
}

#[test]
fn a_pause_token_does_nothing_to_another_isolate() {
    let a = Echo::spawn(()).unwrap();
    let b = Echo::spawn(()).unwrap();
    let token_a = a.pause();
    let token_b = b.pause();
    b.resume(&token_a);
    assert_eq!(b.ask_timeout(Touchy(1), SHORT), Err(AskError::Timeout));
    assert_eq!(b.state(), IsolateState::Paused);
    b.resume(&token_b);
    a.resume(&token_a);
    assert!(b.ask_timeout(Touchy(2), T).is_ok());
    assert_eq!(a.ask_timeout(Touchy(3), T), Ok(Touchy(3)));

    // Spawn tokens too.
    let (c, token_c) = IsolateBuilder::new().spawn_paused::<Echo>(()).unwrap();
    let (d, token_d) = IsolateBuilder::new().spawn_paused::<Echo>(()).unwrap();
    d.resume(&token_c);
    assert_eq!(d.ask_timeout(Touchy(4), SHORT), Err(AskError::Timeout));
    d.resume(&token_d);
    c.resume(&token_c);
    assert_eq!(c.ask_timeout(Touchy(5), T), Ok(Touchy(5)));
}

fn touchy_id(t: Touchy) -> Touchy {
    t
}

fn make_13(_: ()) -> Touchy {
    Touchy(13)
}

#[test]
fn run_survives_panicking_serde_impls() {
    // Copying, the serde impls run: on the run's thread, under `catch`.
    match run_with(Bincode::new(), touchy_id, Touchy(7)).wait() {
        Err(RunError::Codec(CodecError::Malformed(why))) => {
            assert!(why.contains("deserialize panics on 7"), "{why}")
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    match run_with(Bincode::new(), make_13, ()).wait() {
        Err(RunError::Codec(CodecError::Encode(why))) => {
            assert!(why.contains("serialize panics on 13"), "{why}")
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    // The cached threads still serve.
    assert_eq!(run(id, 9).wait(), Ok(9));
}

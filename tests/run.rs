//! One-shot offload with `run`: results, typed errors, panics, codec limits,
//! polling from a frame loop, and many concurrent calls each resolving once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use isolates::{Bincode, CodecError, RunError, Transfer, run, run_with};
use serde::{Deserialize, Deserializer, Serialize};

const T: Duration = Duration::from_secs(10);

fn square(n: u64) -> u64 {
    n * n
}

fn thread_name(_: ()) -> Option<String> {
    std::thread::current().name().map(str::to_string)
}

fn checked_div((a, b): (i32, i32)) -> Result<i32, String> {
    a.checked_div(b)
        .ok_or_else(|| format!("{a} / {b} is undefined"))
}

fn boom(why: String) -> u8 {
    panic!("boom: {why}");
}

#[test]
fn runs_on_another_thread_and_returns_the_result() {
    assert_eq!(run(square, 12).wait(), Ok(144));
    let name = run(thread_name, ()).wait().unwrap();
    assert_eq!(name.as_deref(), Some("isolates-run"));
    assert_ne!(
        std::thread::current().name(),
        Some("isolates-run"),
        "the test itself runs elsewhere"
    );
}

#[test]
fn a_typed_error_crosses_the_boundary() {
    assert_eq!(run(checked_div, (7, 2)).wait(), Ok(Ok(3)));
    assert_eq!(
        run(checked_div, (7, 0)).wait(),
        Ok(Err("7 / 0 is undefined".to_string()))
    );
}

#[test]
fn a_panic_is_a_typed_error_with_its_message() {
    let err = run(boom, "bad input".to_string()).wait().unwrap_err();
    assert_eq!(err, RunError::Panicked("boom: bad input".into()));
    assert!(err.to_string().contains("boom: bad input"), "{err}");
    // The thread that caught the panic serves the next call.
    assert_eq!(run(square, 3).wait(), Ok(9));
}

fn ones(n: usize) -> Vec<u8> {
    vec![1; n]
}

#[test]
fn an_argument_or_result_over_the_limit_is_a_codec_error() {
    // The argument: refused before anything runs, resolved at once.
    let mut pending = run_with(Bincode::<64>::limited(), |v: Vec<u8>| v.len(), vec![0; 100]);
    assert!(pending.is_done());
    assert!(matches!(
        pending.try_take(),
        Some(Err(RunError::Codec(CodecError::TooLarge { limit: 64, .. })))
    ));
    // The result: the function ran, its result could not be carried back.
    let err = run_with(Bincode::<64>::limited(), ones, 1000)
        .wait()
        .unwrap_err();
    assert!(
        matches!(err, RunError::Codec(CodecError::TooLarge { limit: 64, .. })),
        "{err:?}"
    );
    // Under the limit, the same function works.
    assert_eq!(
        run_with(Bincode::<64>::limited(), ones, 10).wait(),
        Ok(vec![1; 10])
    );
}

/// Encodes fine, refuses to decode: an argument the other side cannot read.
#[derive(Debug, Serialize)]
struct Unreadable;

impl<'de> Deserialize<'de> for Unreadable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("this value cannot be read back"))
    }
}

fn never_called(_: Unreadable) -> u8 {
    unreachable!("the argument cannot be decoded")
}

fn makes_unreadable(_: ()) -> Unreadable {
    Unreadable
}

#[test]
fn undecodable_argument_or_result_is_a_codec_error() {
    // Only copied values are decoded.
    let err = run_with(Bincode::new(), never_called, Unreadable)
        .wait()
        .unwrap_err();
    assert_eq!(
        err,
        RunError::Codec(CodecError::Malformed(
            "this value cannot be read back".into()
        ))
    );
    let err = run_with(Bincode::new(), makes_unreadable, ())
        .wait()
        .unwrap_err();
    assert!(
        matches!(err, RunError::Codec(CodecError::Malformed(_))),
        "{err:?}"
    );
}

fn address_and_len(t: Transfer) -> (usize, usize) {
    let v = t.into_vec();
    (v.as_ptr() as usize, v.len())
}

#[test]
fn a_transfer_argument_arrives_without_a_copy() {
    let buf = vec![5u8; 4 << 20];
    let address = buf.as_ptr() as usize;
    let got = run(address_and_len, Transfer::new(buf)).wait().unwrap();
    assert_eq!(got, (address, 4 << 20));
}

fn slow_double(n: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(30));
    n * 2
}

#[test]
fn polled_from_a_frame_loop_without_blocking() {
    let mut pending = run(slow_double, 21);
    let start = Instant::now();
    let mut frames = 0;
    let result = loop {
        // One "frame": a non-blocking poll, then other work.
        if let Some(result) = pending.try_take() {
            break result;
        }
        frames += 1;
        assert!(start.elapsed() < T, "the result never came");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(result, Ok(42));
    assert!(
        frames > 0,
        "the first poll cannot have the result of a 30 ms job"
    );
    assert!(pending.is_taken());
    // The result resolves exactly once.
    assert_eq!(pending.try_take(), None);
    assert_eq!(pending.wait(), Err(RunError::AlreadyTaken));
}

#[test]
fn wait_timeout_leaves_the_result_to_a_later_wait() {
    let mut pending = run(slow_double, 5);
    // Whatever the scheduling, a bounded wait returns; if it was too short
    // the result is still there for the next wait.
    let first = pending.wait_timeout(Duration::from_millis(1));
    let result = match first {
        Some(result) => result,
        None => pending.wait_timeout(T).expect("the result never came"),
    };
    assert_eq!(result, Ok(10));
}

fn identity(n: u32) -> u32 {
    n
}

#[test]
fn many_concurrent_runs_each_resolve_once_with_their_own_result() {
    let pendings: Vec<_> = (0..2000u32).map(|i| (i, run(identity, i))).collect();
    let mut seen = HashSet::new();
    for (i, pending) in pendings {
        assert_eq!(pending.wait(), Ok(i));
        assert!(seen.insert(i));
    }
    assert_eq!(seen.len(), 2000);
}

/// Eight calls meet at a barrier: only possible if all eight run at once.
static MEETING: std::sync::Barrier = std::sync::Barrier::new(8);

fn meet(n: u32) -> u32 {
    MEETING.wait();
    n
}

#[test]
fn concurrent_runs_do_not_wait_for_each_other() {
    let mut pendings: Vec<_> = (0..8).map(|i| run(meet, i)).collect();
    for (i, pending) in pendings.iter_mut().enumerate() {
        let result = pending
            .wait_timeout(T)
            .expect("runs were serialized: the barrier never opened");
        assert_eq!(result, Ok(i as u32));
    }
}

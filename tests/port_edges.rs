//! Ports, pendings, asks, pings, listeners and `run` at their edges, from
//! a review: wakers across tasks, transfers given back, ports a dead
//! isolate held released, `run`'s typed errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskCx, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use isolates::{AskError, Context, ExitReason, Isolate, Priority, port};

struct Echo;
impl Isolate for Echo {
    type Args = ();
    type Message = u64;
    type Reply = u64;
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Echo)
    }
    fn handle(&mut self, m: u64, _: &mut Context<Self>) -> Result<u64, String> {
        if m > 1000 {
            std::thread::sleep(Duration::from_millis(m - 1000));
        }
        Ok(m)
    }
}

struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
fn counter() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A ping sent (after-current) to an isolate that has already exited must
/// resolve (guarantee 1), not hang.
#[test]
fn an_after_current_ping_to_a_dead_isolate_resolves() {
    let h = Echo::spawn(()).unwrap();
    h.kill(Priority::Immediate);
    assert_eq!(h.join(Duration::from_secs(5)), Some(ExitReason::Killed));
    let mut p = h.ping(Priority::AfterCurrent);
    let got = p.wait_timeout(Duration::from_secs(3));
    assert!(
        matches!(got, Some(Err(AskError::Dead(ExitReason::Killed)))),
        "got {got:?}"
    );
}

#[test]
fn an_immediate_ping_to_a_dead_isolate_resolves() {
    let h = Echo::spawn(()).unwrap();
    h.kill(Priority::Immediate);
    assert_eq!(h.join(Duration::from_secs(5)), Some(ExitReason::Killed));
    let mut p = h.ping(Priority::Immediate);
    let got = p.wait_timeout(Duration::from_secs(3));
    assert!(
        matches!(got, Some(Err(AskError::Dead(ExitReason::Killed)))),
        "got {got:?}"
    );
}

/// A future polled by one task, then moved to another and polled there:
/// the reply wakes the second waker.
#[test]
fn a_pending_moved_between_tasks_wakes_the_last_poller() {
    let h = Echo::spawn(()).unwrap();
    let mut p = h.ask_pending(1300);
    let (a, wa) = counter();
    let (b, wb) = counter();
    assert!(
        std::pin::Pin::new(&mut p)
            .poll(&mut TaskCx::from_waker(&wa))
            .is_pending()
    );
    assert!(
        std::pin::Pin::new(&mut p)
            .poll(&mut TaskCx::from_waker(&wb))
            .is_pending()
    );
    wait_for("wake of b", || b.0.load(Ordering::SeqCst) == 1);
    assert_eq!(a.0.load(Ordering::SeqCst), 0);
    match std::pin::Pin::new(&mut p).poll(&mut TaskCx::from_waker(&wb)) {
        Poll::Ready(r) => assert_eq!(r, Ok(1300)),
        Poll::Pending => panic!("woken but pending"),
    }
}

/// A pending ask queued behind a pause resolves when the isolate is killed.
#[test]
fn a_queued_ask_pending_resolves_when_a_paused_isolate_is_killed() {
    let h = Echo::spawn(()).unwrap();
    let _tok = h.pause();
    let mut p = h.ask_pending(5);
    h.kill(Priority::Immediate);
    let got = p.wait_timeout(Duration::from_secs(3));
    assert!(matches!(got, Some(Err(AskError::Dead(_)))), "got {got:?}");
}

use std::future::Future;

mod supervised {
    use super::*;
    use isolates::supervisor::{ChildSpec, Restart, Supervisor};

    fn sup(restart: Restart) -> (Supervisor, isolates::IsolateHandle<Echo>) {
        let sup = Supervisor::builder()
            .child(ChildSpec::worker::<Echo>("echo", ()).restart(restart))
            .spawn()
            .unwrap();
        let h = sup.worker::<Echo>("echo").unwrap();
        assert_eq!(
            h.ping(Priority::Immediate)
                .wait_timeout(Duration::from_secs(5)),
            Some(Ok(()))
        );
        (sup, h)
    }

    /// After `terminate_child` the old handle's isolate is exited; an
    /// after-current ping to it must resolve, not wait for a restart that
    /// may never come.
    #[test]
    fn an_after_current_ping_to_a_terminated_child_resolves() {
        let (sup, h) = sup(Restart::Permanent);
        sup.terminate_child("echo").unwrap();
        wait_for("exit", || h.is_finished());
        let got = h
            .ping(Priority::AfterCurrent)
            .wait_timeout(Duration::from_secs(3));
        sup.stop();
        assert!(matches!(got, Some(Err(AskError::Dead(_)))), "got {got:?}");
    }

    #[test]
    fn an_immediate_ping_to_a_terminated_child_resolves() {
        let (sup, h) = sup(Restart::Permanent);
        sup.terminate_child("echo").unwrap();
        wait_for("exit", || h.is_finished());
        let got = h
            .ping(Priority::Immediate)
            .wait_timeout(Duration::from_secs(3));
        sup.stop();
        assert!(matches!(got, Some(Err(AskError::Dead(_)))), "got {got:?}");
    }

    #[test]
    fn an_ask_pending_to_a_terminated_child_resolves() {
        let (sup, h) = sup(Restart::Permanent);
        sup.terminate_child("echo").unwrap();
        wait_for("exit", || h.is_finished());
        let got = h.ask_pending(3).wait_timeout(Duration::from_secs(3));
        sup.stop();
        assert!(matches!(got, Some(Err(AskError::Dead(_)))), "got {got:?}");
    }
}

mod batch2 {
    use super::*;
    use isolates::RunError;

    #[test]
    fn a_pending_survives_a_lost_timeout_and_is_awaited_again() {
        let h = Echo::spawn(()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut p = h.ask_pending(1200);
            let first = tokio::time::timeout(Duration::from_millis(20), &mut p).await;
            assert!(first.is_err());
            let second = tokio::time::timeout(Duration::from_secs(5), &mut p).await;
            assert_eq!(second.unwrap(), Ok(1200));
        });
    }

    fn any_panic(_: u8) -> u8 {
        std::panic::panic_any(42u32)
    }

    #[test]
    fn a_non_string_panic_in_run_resolves_panicked() {
        let got = run_wait(isolates::run(any_panic, 1));
        assert!(matches!(got, Err(RunError::Panicked(_))), "{got:?}");
    }

    fn run_wait<T, E>(mut p: isolates::Pending<T, E>) -> Result<T, E> {
        p.wait_timeout(Duration::from_secs(5)).expect("resolves")
    }

    struct BadSer;
    impl serde::Serialize for BadSer {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    impl<'de> serde::Deserialize<'de> for BadSer {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom("no"))
        }
    }
    fn make_bad(_: u8) -> BadSer {
        BadSer
    }
    fn take_bad(_: BadSer) -> u8 {
        1
    }
    fn panic_ser(_: u8) -> PanicSer {
        PanicSer
    }
    struct PanicSer;
    impl serde::Serialize for PanicSer {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("ser boom")
        }
    }
    impl<'de> serde::Deserialize<'de> for PanicSer {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(PanicSer)
        }
    }

    #[test]
    fn run_with_unencodable_values_resolves_codec_errors() {
        let b = isolates::Bincode::new();
        let got = run_wait(isolates::run_with(b, make_bad, 1));
        assert!(matches!(got, Err(RunError::Codec(_))), "{:?}", got.err());
        let got = run_wait(isolates::run_with(b, take_bad, BadSer));
        assert!(matches!(got, Err(RunError::Codec(_))), "{:?}", got.err());
        let got = run_wait(isolates::run_with(b, panic_ser, 1));
        assert!(matches!(got, Err(RunError::Codec(_))), "{:?}", got.err());
    }
}

/// Dart (and our own doc): the same port added twice as an exit listener
/// gets the exit once, also when added once before the exit and again
/// after it (it used to hear the one exit again at each add after it).
#[test]
fn the_same_exit_listener_added_before_and_after_the_exit_hears_it_once() {
    let h = Echo::spawn(()).unwrap();
    let (tx, exits) = port::unbounded::<ExitReason>();
    h.add_exit_listener(tx.clone());
    h.kill(Priority::Immediate);
    assert_eq!(
        exits.recv_timeout(Duration::from_secs(5)),
        Ok(ExitReason::Killed)
    );
    h.add_exit_listener(tx.clone());
    h.add_exit_listener(tx);
    let extra: Vec<_> = exits.try_iter().collect();
    assert!(
        extra.is_empty(),
        "one exit, heard {} more times: {extra:?}",
        extra.len()
    );
}

struct Holder(#[allow(dead_code)] isolates::SendPort<u8>);
impl Isolate for Holder {
    type Args = isolates::SendPort<u8>;
    type Message = isolates::SendPort<u8>;
    type Reply = ();
    type Error = String;
    fn start(p: isolates::SendPort<u8>, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Holder(p))
    }
    fn handle(&mut self, p: isolates::SendPort<u8>, _: &mut Context<Self>) -> Result<(), String> {
        self.0 = p;
        Ok(())
    }
}

/// The ports an isolate held go when it exits: a ReceivePort's iterator
/// over them ends.
#[test]
fn ports_held_by_a_dead_isolate_are_released() {
    for (copy, resume) in [(false, true), (true, true), (false, false), (true, false)] {
        let (tx, rx) = port::unbounded::<u8>();
        let (tx2, rx2) = port::unbounded::<u8>();
        let (h, tok) = isolates::IsolateBuilder::new()
            .copy_messages(copy)
            .spawn_paused::<Holder>(tx)
            .unwrap();
        h.cast(tx2).unwrap(); // queued behind the pause
        if resume {
            h.resume(&tok);
        }
        h.kill(Priority::Immediate);
        assert!(h.join(Duration::from_secs(5)).is_some());
        let t = std::thread::spawn(move || (rx.iter().count(), rx2.iter().count()));
        wait_for("iterators to end", || t.is_finished());
        t.join().unwrap();
        drop(h);
    }
}

/// Many awaits across a multi-thread runtime, with select-style re-polls
/// from different tasks: every one resolves, each exactly once.
#[test]
fn stress_pendings_across_tasks_all_resolve() {
    let h = Echo::spawn(()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let done = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(8), async {
            let mut tasks = Vec::new();
            for i in 0..200u64 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    let mut p = h.ask_pending(i);
                    // Poll once here, then hand it to another task.
                    let _ = tokio::time::timeout(Duration::from_micros(1), &mut p).await;
                    tokio::spawn(p).await.unwrap()
                }));
            }
            let mut n = 0;
            for (i, t) in tasks.into_iter().enumerate() {
                let r = t.await.unwrap();
                if r != Ok(i as u64) {
                    // Already taken by the first poll is fine only if it was Ok.
                    assert_eq!(r, Err(AskError::AlreadyTaken), "task {i}");
                }
                n += 1;
            }
            n
        })
        .await
    });
    assert_eq!(done.expect("all resolve in time"), 200);
}

/// Blocking asks from several threads at once, some timing out: the
/// recycled reply slots never mix replies up.
#[test]
fn stress_blocking_asks_with_timeouts_never_mix_replies() {
    let h = Echo::spawn(()).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let v = t * 200 + i % 200; // < 1000: no sleep
                    let timeout = if i % 7 == 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(5)
                    };
                    match h.ask_timeout(v, timeout) {
                        Ok(r) => assert_eq!(r, v),
                        Err(AskError::Timeout) => assert_eq!(timeout, Duration::ZERO),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    // 8,000 round trips: on a loaded 2-core machine that takes seconds.
    let end = Instant::now() + Duration::from_secs(120);
    while !threads.iter().all(|t| t.is_finished()) {
        assert!(Instant::now() < end, "the asking threads did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        t.join().unwrap();
    }
}

struct Buf;
impl Isolate for Buf {
    type Args = ();
    type Message = isolates::Transfer;
    type Reply = isolates::Transfer;
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Buf)
    }
    fn handle(
        &mut self,
        t: isolates::Transfer,
        _: &mut Context<Self>,
    ) -> Result<isolates::Transfer, String> {
        Ok(t)
    }
}

/// With copied messages a Transfer still moves: the reply is the same
/// allocation, and a refused cast gives the buffer back.
#[test]
fn copied_isolate_moves_transfers_and_gives_them_back() {
    let (h, tok) = isolates::IsolateBuilder::new()
        .copy_messages(true)
        .mailbox(isolates::Mailbox::Bounded(1))
        .spawn_paused::<Buf>(())
        .unwrap();
    h.try_cast(isolates::Transfer::new(vec![0; 16])).unwrap();
    let v = vec![7u8; 1 << 20];
    let addr = v.as_ptr();
    let back = match h.try_cast(isolates::Transfer::new(v)) {
        Err(isolates::TrySendError::Full(t)) => t.into_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!((back.as_ptr(), back.len()), (addr, 1 << 20));
    h.resume(&tok);
    let got = h
        .ask_timeout(isolates::Transfer::new(back), Duration::from_secs(5))
        .unwrap()
        .into_vec();
    assert_eq!((got.as_ptr(), got.len()), (addr, 1 << 20));
}

//! Awaiting results without a runtime dependency: `Pending`, `TaskHandle`
//! and `Operation` as futures under tokio (current-thread and multi-thread)
//! and `futures::executor`; many handles joined; futures dropped before they
//! resolve (the work still resolves once, nothing leaks); awaiting a taken
//! result; and wakers that panic (the thread that wakes them goes on).
//!
//! Work that must still be running when a future is dropped waits on a
//! keyed gate, so no test depends on how fast a thread is scheduled.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::wait_until;
use futures::executor::block_on;
use futures::future::Either;
use isolates::pool::{Pool, Task, TaskContext, Worker};
use isolates::{AskError, Context as IsolateContext, Isolate, RunError, TaskError, run};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Long enough for a loaded 2-core machine; only reached on failure.
const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- gates

/// Open gates, by key: gated work waits here until its test opens it.
static GATES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static OPENED: Condvar = Condvar::new();
/// Keys for gates and counted values, unique per test.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn key() -> u64 {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// Blocks (parked, not spinning) until `open(key)`, or `T` at most.
fn pass(key: u64) {
    let gates = GATES.lock().unwrap();
    let (_gates, _) = OPENED
        .wait_timeout_while(gates, T, |g| !g.contains(&key))
        .unwrap();
}

fn open(key: u64) {
    GATES.lock().unwrap().push(key);
    OPENED.notify_all();
}

// ------------------------------------------------------- counted values

/// Values alive per key: made (by a worker or by decoding) minus dropped.
static LIVE: Mutex<Option<HashMap<u64, i64>>> = Mutex::new(None);
/// Values made per key.
static MADE: Mutex<Option<HashMap<u64, i64>>> = Mutex::new(None);

fn tally(map: &Mutex<Option<HashMap<u64, i64>>>, key: u64, by: i64) {
    *map.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_default() += by;
}

fn count(map: &Mutex<Option<HashMap<u64, i64>>>, key: u64) -> i64 {
    map.lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(&key).copied())
        .unwrap_or(0)
}

/// A result whose copies are counted, to see that a result nobody takes
/// is dropped (moved or encoded, wherever it ends up).
#[derive(Debug, PartialEq)]
struct Counted(u64);

impl Counted {
    fn new(key: u64) -> Self {
        tally(&MADE, key, 1);
        tally(&LIVE, key, 1);
        Counted(key)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        tally(&LIVE, self.0, -1);
    }
}

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Counted::new(u64::deserialize(d)?))
    }
}

/// Whether every value of `key` was made and dropped again.
fn all_dropped(key: u64) -> bool {
    count(&MADE, key) >= 1 && count(&LIVE, key) == 0
}

// ------------------------------------------------------------- wakers

/// A waker that counts its wakes and, if asked, panics in each.
struct Probe {
    wakes: AtomicUsize,
    panics: bool,
}

impl Wake for Probe {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        assert!(!self.panics, "this waker panics");
    }
}

fn probe(panics: bool) -> (Arc<Probe>, Waker) {
    let probe = Arc::new(Probe {
        wakes: AtomicUsize::new(0),
        panics,
    });
    (Arc::clone(&probe), Waker::from(Arc::clone(&probe)))
}

/// Polls `future` once with `waker`.
fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

// ------------------------------------------------------ bounded waits

/// Runs `future` to its end on `futures::executor::block_on`, or fails
/// after `T`: a lost wake-up fails the test instead of hanging it.
fn within<F: Future>(future: F) -> F::Output {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (fire, fired) = futures::channel::oneshot::channel::<()>();
    let timer = std::thread::spawn(move || {
        if stopped.recv_timeout(T) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = fire.send(());
        }
    });
    let out = match block_on(futures::future::select(Box::pin(future), fired)) {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("not done within {T:?}: a wake-up was lost"),
    };
    drop(stop);
    timer.join().unwrap();
    out
}

/// Awaits `future` for `T` at most (under tokio).
async fn soon<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(T, future)
        .await
        .expect("not done in time: a wake-up was lost")
}

// ------------------------------------------------------ the workloads

fn square(n: u64) -> u64 {
    n * n
}

/// Waits at gate `key`, then makes a counted result.
fn gated(key: u64) -> Counted {
    pass(key);
    Counted::new(key)
}

/// Doubles, or waits at a gate first and returns a counted key.
struct Gated;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Out {
    Doubled(u64),
    Gated(Counted),
}

#[derive(Serialize, Deserialize)]
enum Job {
    Double(u64),
    Gate(u64),
}

impl Worker for Gated {
    type Args = ();
    type Input = Job;
    type Output = Out;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Gated)
    }

    fn run(&mut self, job: Job, _: &TaskContext<'_, Self>) -> Result<Out, String> {
        match job {
            Job::Double(n) => Ok(Out::Doubled(n * 2)),
            Job::Gate(key) => {
                pass(key);
                Ok(Out::Gated(Counted::new(key)))
            }
        }
    }
}

fn pool(workers: usize) -> Pool<Gated> {
    Pool::<Gated>::builder().workers(workers).spawn(()).unwrap()
}

/// The value of a `Job::Double` result.
fn value(result: Result<Out, TaskError<String>>) -> u64 {
    match result {
        Ok(Out::Doubled(n)) => n,
        other => panic!("{other:?}"),
    }
}

/// Whether `result` is the counted value of gate `key`.
fn gated_by(result: &Result<Out, TaskError<String>>, key: u64) -> bool {
    matches!(result, Ok(Out::Gated(Counted(k))) if *k == key)
}

struct Echo;

impl Isolate for Echo {
    type Args = ();
    type Message = u32;
    type Reply = u32;
    type Error = String;

    fn start(_: (), _: &mut IsolateContext<Self>) -> Result<Self, String> {
        Ok(Echo)
    }

    fn handle(&mut self, n: u32, _: &mut IsolateContext<Self>) -> Result<u32, String> {
        Ok(n + 1)
    }
}

// --------------------------------------------------------------- tests

#[tokio::test]
async fn pending_under_a_current_thread_runtime() {
    assert_eq!(soon(run(square, 12)).await, Ok(144));
    let echo = Echo::spawn(()).unwrap();
    assert_eq!(soon(echo.ask_pending(41)).await, Ok(42));
    let both = soon(futures::future::join(run(square, 3), echo.ask_pending(1))).await;
    assert_eq!(both, (Ok(9), Ok(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_under_a_multi_thread_runtime() {
    let echo = Echo::spawn(()).unwrap();
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let echo = echo.clone();
            tokio::spawn(async move {
                let squared = soon(run(square, i)).await;
                let asked = soon(echo.ask_pending(i as u32)).await;
                (squared, asked)
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (squared, asked) = soon(task).await.unwrap();
        assert_eq!(squared, Ok((i * i) as u64));
        assert_eq!(asked, Ok(i as u32 + 1));
    }
}

#[test]
fn pending_under_block_on() {
    assert_eq!(within(run(square, 7)), Ok(49));
    let echo = Echo::spawn(()).unwrap();
    assert_eq!(within(echo.ask_pending(9)), Ok(10));
    // A result that is there from the start: the argument did not encode.
    fn len(bytes: Vec<u8>) -> usize {
        bytes.len()
    }
    let refused = isolates::run_with(isolates::Bincode::<8>::limited(), len, vec![0; 100]);
    assert!(matches!(within(refused), Err(RunError::Codec(_))));
}

#[test]
fn task_handles_under_block_on() {
    let pool = pool(2);
    assert_eq!(value(within(pool.submit(Job::Double(21)))), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_handles_under_tokio() {
    let pool = pool(2);
    assert_eq!(value(soon(pool.submit(Job::Double(4))).await), 8);
}

#[test]
fn join_all_over_many_handles() {
    const COUNT: u64 = 500;
    let pool = pool(2);
    let handles: Vec<_> = (0..COUNT).map(|i| pool.submit(Job::Double(i))).collect();
    let results = within(futures::future::join_all(handles));
    let values: Vec<u64> = results.into_iter().map(value).collect();
    assert_eq!(values, (0..COUNT).map(|i| i * 2).collect::<Vec<_>>());

    let pendings: Vec<_> = (0..COUNT).map(|i| run(square, i)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let squares = runtime.block_on(soon(futures::future::join_all(pendings)));
    assert!(squares.iter().zip(0..).all(|(s, i)| *s == Ok(i * i)));
}

#[tokio::test]
async fn a_timed_out_pending_is_dropped_and_its_run_still_resolves_once() {
    let key = key();
    let pending = run(gated, key);
    let timed_out = tokio::time::timeout(Duration::from_millis(20), pending).await;
    assert!(timed_out.is_err(), "the gate is shut: it cannot be there");
    open(key);
    // The run made its result once, and the result nobody takes is dropped.
    assert!(
        wait_until(|| all_dropped(key), T),
        "leaked: {}",
        count(&LIVE, key)
    );
    assert_eq!(count(&MADE, key), 1, "made once, and never decoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_handle_lost_in_a_select_still_resolves_once() {
    let key = key();
    let pool = pool(1);
    let handle = pool.submit(Job::Gate(key));
    tokio::select! {
        _ = handle => panic!("the gate is shut: it cannot be done"),
        () = tokio::time::sleep(Duration::from_millis(20)) => {}
    }
    open(key);
    assert!(wait_until(|| pool.stats().succeeded == 1, T));
    assert!(
        wait_until(|| all_dropped(key), T),
        "leaked: {}",
        count(&LIVE, key)
    );
    assert_eq!(count(&MADE, key), 1, "made once, and never decoded");
    assert_eq!(pool.stats().succeeded, 1, "resolved once");
    // The pool goes on.
    assert_eq!(value(soon(pool.submit(Job::Double(5))).await), 10);
}

#[test]
fn a_dropped_future_releases_its_waker() {
    let gate = key();
    let (counter, waker) = probe(false);
    let mut pending = run(gated, gate);
    assert!(poll_once(&mut pending, &waker).is_pending());
    drop(pending);
    drop(waker);
    open(gate);
    // The run's thread wakes the stale waker once and lets go of it.
    assert!(wait_until(|| Arc::strong_count(&counter) == 1, T));
    assert_eq!(counter.wakes.load(Ordering::SeqCst), 1);
    assert!(wait_until(|| all_dropped(gate), T));

    let gate = key();
    let (counter, waker) = probe(false);
    let pool = pool(1);
    let mut handle = pool.submit(Job::Gate(gate));
    assert!(poll_once(&mut handle, &waker).is_pending());
    drop(handle);
    drop(waker);
    open(gate);
    assert!(wait_until(|| Arc::strong_count(&counter) == 1, T));
    assert_eq!(counter.wakes.load(Ordering::SeqCst), 1);
    assert!(wait_until(|| all_dropped(gate), T));
}

#[test]
fn awaiting_a_taken_result_gives_the_typed_error() {
    let mut pending = run(square, 2);
    assert_eq!(within(&mut pending), Ok(4));
    assert_eq!(within(&mut pending), Err(RunError::AlreadyTaken));
    assert!(pending.is_taken());

    let echo = Echo::spawn(()).unwrap();
    let mut asked = echo.ask_pending(1);
    assert_eq!(asked.wait_timeout(T), Some(Ok(2)));
    assert_eq!(within(asked), Err(AskError::AlreadyTaken));

    let pool = pool(1);
    let mut handle = pool.submit(Job::Double(1));
    assert_eq!(value(handle.wait_timeout(T).expect("resolved")), 2);
    assert_eq!(within(&mut handle), Err(TaskError::AlreadyTaken));
    assert_eq!(within(handle), Err(TaskError::AlreadyTaken));
}

#[test]
fn a_panicking_waker_does_not_kill_the_pool_worker() {
    let pool = pool(1);
    let gate = key();
    let (counter, waker) = probe(true);
    let mut handle = pool.submit(Job::Gate(gate));
    assert!(poll_once(&mut handle, &waker).is_pending());
    open(gate);
    assert!(wait_until(|| counter.wakes.load(Ordering::SeqCst) == 1, T));
    // Woken (and panicked) once: the result is there to take.
    match poll_once(&mut handle, Waker::noop()) {
        Poll::Ready(result) => assert!(gated_by(&result, gate), "{result:?}"),
        Poll::Pending => panic!("woken before the result was there"),
    }
    // The same worker takes the next task: it was not lost or restarted.
    let mut next = pool.submit(Job::Double(3));
    assert_eq!(
        value(next.wait_timeout(T).expect("the next task resolves")),
        6
    );
    let stats = pool.stats();
    assert_eq!((stats.workers, stats.restarts), (1, 0), "{stats:?}");
}

#[test]
fn a_panicking_waker_does_not_kill_the_run_thread() {
    let gate = key();
    let (counter, waker) = probe(true);
    let mut pending = run(gated, gate);
    assert!(poll_once(&mut pending, &waker).is_pending());
    open(gate);
    assert!(wait_until(|| counter.wakes.load(Ordering::SeqCst) == 1, T));
    assert!(matches!(
        poll_once(&mut pending, Waker::noop()),
        Poll::Ready(Ok(Counted(k))) if k == gate
    ));
    assert_eq!(run(square, 5).wait_timeout(T), Some(Ok(25)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_task_past_its_deadline_wakes_its_awaiter() {
    let gate = key();
    let pool = pool(1);
    let busy = pool.submit(Job::Gate(gate));
    let late = pool.submit_task(Task::new(Job::Double(1)).timeout(Duration::from_millis(30)));
    assert_eq!(soon(late).await, Err(TaskError::TimedOut));
    open(gate);
    assert!(gated_by(&soon(busy).await, gate));
}

/// `Operation`s of the work manager (the `schedule` feature).
#[cfg(feature = "schedule")]
mod schedule {
    use isolates::schedule::{
        Enqueued, WorkContext, WorkError, WorkManager, WorkQuery, WorkRequest, WorkResult,
        WorkStore,
    };

    use super::*;

    fn manager() -> WorkManager {
        WorkManager::builder(WorkStore::in_memory().unwrap())
            .workers(1)
            .handler_fn(
                "noop",
                |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
            )
            .spawn()
            .unwrap()
    }

    fn later() -> WorkRequest {
        WorkRequest::once("noop").initial_delay(Duration::from_secs(3600))
    }

    #[test]
    fn operations_under_block_on() {
        let m = manager();
        let id = match within(m.enqueue(later())) {
            Ok(Enqueued::New(ids)) => ids[0],
            other => panic!("{other:?}"),
        };
        assert!(m.info(id).is_some());
        assert_eq!(within(m.cancel(WorkQuery::All)), Ok(1));
        m.stop();
        m.join(Duration::MAX);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operations_under_tokio() {
        let m = manager();
        assert!(matches!(
            soon(m.enqueue(later())).await,
            Ok(Enqueued::New(_))
        ));
        assert_eq!(soon(m.cancel(WorkQuery::All)).await, Ok(1));
        m.stop();
        m.join(Duration::MAX);
        // A stopped manager answers at once.
        assert_eq!(soon(m.enqueue(later())).await, Err(WorkError::Stopped));
    }

    #[test]
    fn awaiting_a_taken_operation_gives_the_typed_error() {
        let m = manager();
        let mut op = m.enqueue(later());
        assert!(matches!(within(&mut op), Ok(Enqueued::New(_))));
        assert_eq!(within(&mut op), Err(WorkError::AlreadyTaken));
        assert_eq!(op.try_take(), None, "taken once");
        m.stop();
        m.join(Duration::MAX);
    }

    #[test]
    fn a_panicking_waker_does_not_kill_the_scheduler() {
        let m = manager();
        let (counter, waker) = probe(true);
        let mut op = m.enqueue(later());
        // The scheduler may answer before the first poll; either way the next
        // request is answered.
        if poll_once(&mut op, &waker).is_pending() {
            assert!(wait_until(|| counter.wakes.load(Ordering::SeqCst) == 1, T));
        }
        assert!(matches!(op.wait_timeout(T), Some(Ok(Enqueued::New(_)))));
        let next = m.enqueue(later()).wait_timeout(T);
        assert!(matches!(next, Some(Ok(Enqueued::New(_)))), "{next:?}");
        m.stop();
        m.join(Duration::MAX);
    }
}

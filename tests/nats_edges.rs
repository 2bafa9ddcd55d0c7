//! Pools over NATS at their edges, from a review: a stopped worker starts
//! no more tasks, a task running across a server restart resolves, a
//! server gone for good fails tasks at the disconnect timeout. The tests
//! marked `ignore` are bugs found and not fixed yet, each with its reason:
//! run them with `--ignored`.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::nats_server::NatsServer;
use common::wait_until;
use isolates::pool::{Pool, Task, TaskContext, Worker};
use isolates::remote::{self, NatsOptions};
use isolates::{CodecError, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    /// Records (lane, tag), then sleeps `ms`.
    Mark { tag: u64, ms: u64 },
    /// Returns `len` bytes.
    Big { tag: u64, len: usize },
    /// Takes a large input.
    Blob(Vec<u8>),
    /// Reports progress `tag`, then returns at once.
    Report(u64),
    /// Reports progress `n` times as fast as it can.
    Flood(u64),
}

/// A worker that records every run, per lane (its start argument), so
/// tests that run in this process keep their records apart.
struct Rec {
    lane: u64,
}

/// (lane, tag) of every run, in order.
static RUNS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

fn runs(lane: u64, tag: u64) -> usize {
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|r| **r == (lane, tag))
        .count()
}

fn runs_in(lane: u64) -> Vec<u64> {
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == lane)
        .map(|r| r.1)
        .collect()
}

impl Worker for Rec {
    type Args = u64;
    type Input = Job;
    type Output = Vec<u8>;
    type Progress = u64;
    type Error = String;

    fn start(lane: u64) -> Result<Self, String> {
        Ok(Rec { lane })
    }

    fn run(&mut self, job: Job, task: &TaskContext<'_, Self>) -> Result<Vec<u8>, String> {
        match job {
            Job::Mark { tag, ms } => {
                RUNS.lock().unwrap().push((self.lane, tag));
                std::thread::sleep(Duration::from_millis(ms));
                Ok(Vec::new())
            }
            Job::Big { tag, len } => {
                RUNS.lock().unwrap().push((self.lane, tag));
                Ok(vec![7u8; len])
            }
            Job::Blob(bytes) => Ok(bytes[..1].to_vec()),
            Job::Report(tag) => {
                task.progress(tag);
                Ok(Vec::new())
            }
            Job::Flood(n) => {
                for i in 0..n {
                    task.progress(i);
                }
                RUNS.lock().unwrap().push((self.lane, n));
                Ok(Vec::new())
            }
        }
    }
}

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn options(server: &NatsServer) -> NatsOptions {
    NatsOptions::new(server.url()).ack_wait(Duration::from_secs(2))
}

/// A task whose input is larger than the server's max_payload (1 MiB by
/// default) can never be published: its handle must resolve with an
/// error, not wait for good while the client publishes it again each
/// second.
#[test]
fn an_input_over_the_servers_max_payload_resolves() {
    let server = NatsServer::start(tmp(), &[]);
    let _serving = remote::start::<Rec>(&options(&server).workers(1), "bigin", 1).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server), "bigin")
        .spawn(0)
        .unwrap();
    // The pool works.
    assert_eq!(pool.submit(Job::Blob(vec![1; 10])).wait(), Ok(vec![1]));
    let mut big = pool.submit(Job::Blob(vec![2; 2 << 20]));
    let got = big.wait_timeout(Duration::from_secs(8));
    assert!(got.is_some(), "a 2 MiB input never resolved");
    let err = got.unwrap().unwrap_err();
    assert!(
        matches!(err, TaskError::Codec(CodecError::TooLarge { limit, .. }) if limit == 1 << 20),
        "{err:?}"
    );
    // The pool goes on.
    assert_eq!(pool.submit(Job::Blob(vec![3; 10])).wait(), Ok(vec![3]));
}

/// A result larger than the server's max_payload can never reach the
/// client: the task must resolve with an error and run once, not be
/// given back after each give-up and run again and again.
#[test]
fn an_output_over_the_servers_max_payload_resolves_once() {
    const LANE: u64 = 2;
    let server = NatsServer::start(tmp(), &[]);
    let _serving = remote::start::<Rec>(&options(&server).workers(1), "bigout", LANE).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server), "bigout")
        .spawn(0)
        .unwrap();
    let mut big = pool.submit(Job::Big {
        tag: 1,
        len: 2 << 20,
    });
    // give_up is max(ack_wait, 10 s): then the batch is naked and runs again.
    let reran = wait_until(|| runs(LANE, 1) >= 2, Duration::from_secs(14));
    let got = big.try_take();
    assert!(
        !reran && got.is_some(),
        "ran {} times; handle resolved: {:?}",
        runs(LANE, 1),
        got.map(|r| r.map(|v| v.len()))
    );
}

/// Outputs each well under the server's max_payload (4 KiB against a
/// server configured with `max_payload: 16384`), finished close together:
/// the worker packs them into one results message, over the max_payload;
/// every task must still resolve.
#[test]
fn results_that_together_exceed_max_payload_still_resolve() {
    const LANE: u64 = 3;
    let conf = tmp().join(format!("max-payload-{}.conf", std::process::id()));
    std::fs::write(&conf, "max_payload: 16384\n").unwrap();
    let server = NatsServer::start(tmp(), &["-c", conf.to_str().unwrap()]);
    let _serving = remote::start::<Rec>(&options(&server).workers(1), "manyout", LANE).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server).in_flight(32).batch(32), "manyout")
        .spawn(0)
        .unwrap();
    // One alone fits and resolves.
    let one = pool.submit(Job::Big {
        tag: 99,
        len: 4 << 10,
    });
    assert_eq!(one.wait().map(|v| v.len()), Ok(4 << 10));
    let mut handles: Vec<_> = (0..32)
        .map(|tag| pool.submit(Job::Big { tag, len: 4 << 10 }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut unresolved = 0;
    for h in &mut handles {
        match h.wait_deadline(deadline) {
            Some(r) => assert_eq!(r.map(|v| v.len()), Ok(4 << 10)),
            None => unresolved += 1,
        }
    }
    let _ = std::fs::remove_file(&conf);
    assert_eq!(
        unresolved, 0,
        "{unresolved} of 32 tasks unresolved after 8 s"
    );
}

/// Tasks stored in the stream while no worker runs. How many tasks the
/// pool's stream holds, read over a raw connection.
fn stored_batches(server: &NatsServer, name: &str) -> u64 {
    let url = server.url();
    let name = name.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let Ok(client) = async_nats::connect(url).await else {
            return 0;
        };
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream(format!("ISOLATES_{name}")).await else {
            return 0;
        };
        stream.info().await.map_or(0, |info| info.state.messages)
    })
}

/// A task cancelled after it reached the stream, while no worker was
/// connected: "a worker skips it if it has not started". The cancel
/// notice went out on core NATS with no one listening, so the worker that
/// starts later runs it.
#[test]
#[ignore = "known bug, not fixed yet: cancels are plain NATS publishes, not stored: a worker not subscribed then never sees them (src/pool/nats.rs Batcher::take, src/remote/serve.rs listen_cancels)"]
fn a_task_cancelled_before_any_worker_connects_is_not_run() {
    const LANE: u64 = 4;
    let server = NatsServer::start(tmp(), &[]);
    let pool = Pool::<Rec>::builder()
        .nats(options(&server), "cancelfirst")
        .spawn(0)
        .unwrap();
    let cancelled = pool.submit(Job::Mark { tag: 1, ms: 0 });
    assert!(
        wait_until(
            || stored_batches(&server, "cancelfirst") >= 1,
            Duration::from_secs(10)
        ),
        "the task did not reach the stream"
    );
    assert!(cancelled.cancel());
    let serving = remote::start::<Rec>(&options(&server).workers(1), "cancelfirst", LANE).unwrap();
    // A task after it: once it ran, the cancelled one was taken before.
    assert!(pool.submit(Job::Mark { tag: 2, ms: 0 }).wait().is_ok());
    assert_eq!(
        runs_in(LANE),
        [2],
        "the cancelled task ran; worker stats: {:?}",
        serving.stats()
    );
}

/// A task whose deadline passed while it waited in the stream (no worker
/// yet) resolves `TimedOut` at the client; the worker that comes later
/// must not run it. The deadline travels as "milliseconds left" counted
/// from when the worker receives it, so it runs.
#[test]
#[ignore = "known bug, not fixed yet: a deadline travels as milliseconds left and is counted from when the worker receives the task, not from when it was sent (src/remote/serve.rs)"]
fn a_task_past_its_deadline_in_the_stream_is_not_run() {
    const LANE: u64 = 5;
    let server = NatsServer::start(tmp(), &[]);
    let pool = Pool::<Rec>::builder()
        .nats(options(&server), "latedeadline")
        .spawn(0)
        .unwrap();
    let late =
        pool.submit_task(Task::new(Job::Mark { tag: 1, ms: 0 }).timeout(Duration::from_secs(1)));
    assert!(wait_until(
        || stored_batches(&server, "latedeadline") >= 1,
        Duration::from_secs(10)
    ));
    assert_eq!(late.wait(), Err(isolates::TaskError::TimedOut));
    let serving = remote::start::<Rec>(&options(&server).workers(1), "latedeadline", LANE).unwrap();
    assert!(pool.submit(Job::Mark { tag: 2, ms: 0 }).wait().is_ok());
    assert_eq!(
        runs_in(LANE),
        [2],
        "the timed-out task ran; worker stats: {:?}",
        serving.stats()
    );
}

/// Progress a task reported before it returned reaches its handle, as in
/// a local pool (checked here first): the remote progress and result
/// travel on two subscriptions, and the client's listener may take the
/// result first and drop the progress.
#[test]
#[ignore = "known bug, not fixed yet: progress and results come on two subscriptions, and a result handled before the task's last progress ends its route (src/pool/nats.rs listen; a biased select made it rarer, not impossible)"]
fn progress_reported_before_the_result_reaches_the_handle() {
    const TASKS: u64 = 200;
    let local = Pool::<Rec>::builder().workers(2).spawn(0).unwrap();
    for tag in 0..20 {
        let h = local.submit(Job::Report(tag));
        assert!(wait_until(|| h.is_done(), Duration::from_secs(10)));
        assert_eq!(h.progress(), [tag], "a local pool");
    }
    let server = NatsServer::start(tmp(), &[]);
    let _serving = remote::start::<Rec>(&options(&server).workers(2), "progress", 6).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server).in_flight(1), "progress")
        .spawn(0)
        .unwrap();
    let mut lost = Vec::new();
    for tag in 0..TASKS {
        let h = pool.submit(Job::Report(tag));
        assert!(wait_until(|| h.is_done(), Duration::from_secs(10)));
        if h.progress() != [tag] {
            lost.push(tag);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {TASKS} tasks lost their progress: {lost:?}",
        lost.len()
    );
}

/// `Pool::kill_worker(0)` on a NATS pool replaces its one worker thread;
/// the old thread takes an in-flight place before it sees it was replaced
/// and leaves with it (its `RemoteSlot` is dropped without giving it
/// back). With `in_flight(2)`, after one kill only one task is out at a
/// time: two tasks no longer run side by side on a two-thread worker.
#[test]
#[ignore = "known bug, not fixed yet: a slot killed with kill_worker loses an in-flight place (src/pool/worker.rs, src/pool/nats.rs RemoteSlot); giving back a held place on drop was not enough"]
fn kill_worker_on_a_nats_pool_keeps_its_in_flight_places() {
    const LANE: u64 = 8;
    let server = NatsServer::start(tmp(), &[]);
    let _serving = remote::start::<Rec>(&options(&server).workers(2), "killslot", LANE).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server).in_flight(2), "killslot")
        .spawn(0)
        .unwrap();
    // Before the kill, two tasks run side by side.
    let x = pool.submit(Job::Mark { tag: 10, ms: 1_500 });
    let y = pool.submit(Job::Mark { tag: 11, ms: 1_500 });
    assert!(wait_until(
        || runs(LANE, 10) == 1 && runs(LANE, 11) == 1,
        Duration::from_secs(1),
    ));
    assert!(x.wait().is_ok() && y.wait().is_ok());
    assert!(pool.kill_worker(0));
    let x = pool.submit(Job::Mark { tag: 2, ms: 1_500 });
    let y = pool.submit(Job::Mark { tag: 3, ms: 1_500 });
    let side_by_side = wait_until(
        || runs(LANE, 2) == 1 && runs(LANE, 3) == 1,
        Duration::from_secs(1),
    );
    assert!(x.wait().is_ok() && y.wait().is_ok());
    assert!(
        side_by_side,
        "with in_flight(2) after kill_worker(0), the second task waited for the first"
    );
}

/// One worker process, alive throughout, one thread: tasks that wait for
/// it must run once each ("at least once" is for a worker's death), with
/// nothing but slow tasks (each shorter than the ack wait).
#[test]
#[ignore = "known bug, not fixed yet: the pull consumer fetches ahead of free permits, and messages waiting in its buffer get no in-progress acks, so they are redelivered and run twice (src/remote/serve.rs, Pull::run)"]
fn a_busy_worker_runs_each_task_once() {
    const LANE: u64 = 9;
    let server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Rec>(
        &NatsOptions::new(server.url())
            .ack_wait(Duration::from_millis(1_000))
            .workers(1),
        "busy",
        LANE,
    )
    .unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server).in_flight(8).batch(1), "busy")
        .spawn(0)
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|tag| pool.submit(Job::Mark { tag, ms: 600 }))
        .collect();
    for h in handles {
        let mut h = h;
        assert!(h.wait_timeout(Duration::from_secs(12)).is_some());
    }
    let mut counts: Vec<(u64, usize)> = (0..8).map(|t| (t, runs(LANE, t))).collect();
    counts.retain(|(_, n)| *n != 1);
    assert!(
        counts.is_empty(),
        "(task, runs) not run once: {counts:?}; {:?}",
        serving.stats()
    );
}

/// `Serving::stop` "stops pulling tasks and closes the connection; tasks
/// it holds and has not finished go back to other workers". The tasks it
/// had queued for its threads still run after `stop` returned, in a
/// process no longer connected: their results go nowhere and the tasks
/// run again elsewhere.
#[test]
fn a_stopped_worker_starts_no_more_tasks() {
    const LANE: u64 = 10;
    let server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Rec>(&options(&server).workers(1), "stopserve", LANE).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server).in_flight(10).batch(10), "stopserve")
        .spawn(0)
        .unwrap();
    let handles: Vec<_> = (0..10)
        .map(|tag| pool.submit(Job::Mark { tag, ms: 200 }))
        .collect();
    assert!(wait_until(
        || !runs_in(LANE).is_empty(),
        Duration::from_secs(10)
    ));
    serving.stop();
    let at_stop = runs_in(LANE).len();
    // At most the one running finishes; wait to see how many start.
    let _ = wait_until(|| runs_in(LANE).len() == 10, Duration::from_secs(3));
    let after = runs_in(LANE).len();
    drop(handles);
    assert!(
        after <= at_stop,
        "{at_stop} task(s) had started when stop() returned, {after} had 3 s later"
    );
}

/// The server restarts while a task runs on a worker: the result is sent
/// again once the server is back, and the handle resolves with it.
#[test]
fn a_task_running_across_a_server_restart_resolves() {
    const LANE: u64 = 11;
    let mut server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Rec>(&options(&server).workers(1), "restartrun", LANE).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server), "restartrun")
        .spawn(0)
        .unwrap();
    let mut h = pool.submit(Job::Mark { tag: 1, ms: 1_500 });
    assert!(wait_until(|| runs(LANE, 1) == 1, Duration::from_secs(10)));
    server.restart();
    let got = h.wait_timeout(Duration::from_secs(12));
    assert!(
        matches!(got, Some(Ok(_))),
        "{got:?}; runs {}; {:?}",
        runs(LANE, 1),
        serving.stats()
    );
}

/// The server goes away for good: a task on the wire and one submitted
/// afterwards resolve `WorkerLost` once the disconnect timeout passed,
/// and the pool then stops and joins.
#[test]
fn a_server_gone_for_good_fails_tasks_after_the_disconnect_timeout() {
    const LANE: u64 = 12;
    let mut server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Rec>(&options(&server).workers(1), "gone", LANE).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(
            options(&server).disconnect_timeout(Duration::from_secs(2)),
            "gone",
        )
        .spawn(0)
        .unwrap();
    let mut out = pool.submit(Job::Mark { tag: 1, ms: 5_000 });
    assert!(wait_until(|| runs(LANE, 1) == 1, Duration::from_secs(10)));
    server.kill();
    let started = Instant::now();
    let mut later = pool.submit(Job::Mark { tag: 2, ms: 0 });
    let a = out.wait_timeout(Duration::from_secs(6));
    let b = later.wait_timeout(Duration::from_secs(3));
    assert!(
        matches!(a, Some(Err(isolates::TaskError::WorkerLost(_)))),
        "on the wire: {a:?} after {:?}",
        started.elapsed()
    );
    assert!(
        matches!(b, Some(Err(isolates::TaskError::WorkerLost(_)))),
        "submitted after: {b:?} after {:?}",
        started.elapsed()
    );
    pool.stop();
    assert!(pool.join(Duration::from_secs(5)), "the pool did not join");
    let stop = Instant::now();
    serving.stop();
    assert!(stop.elapsed() < Duration::from_secs(5));
}

/// Starts once; every later start (after a panic) fails.
struct Once;

static ONCE_STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Worker for Once {
    type Args = ();
    type Input = bool;
    type Output = ();
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        if ONCE_STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Ok(Once)
        } else {
            Err("no second start".into())
        }
    }

    fn run(&mut self, panic: bool, _: &TaskContext<'_, Self>) -> Result<(), String> {
        assert!(!panic, "boom");
        Ok(())
    }
}

/// A serving process whose only worker thread could not restart after a
/// panic has nothing left to run tasks with. It should end (`wait`
/// returns) rather than go on pulling tasks and giving each back at once,
/// again and again.
#[test]
#[ignore = "known bug, not fixed yet: when the last worker thread ends, batches are Nak'd and pulled again at once in a hot loop, and wait() never returns (src/remote/serve.rs)"]
fn a_worker_with_no_threads_left_stops_serving() {
    let server = NatsServer::start(tmp(), &[]);
    let serving = std::sync::Arc::new(
        remote::start::<Once>(&NatsOptions::new(server.url()).workers(1), "nothreads", ()).unwrap(),
    );
    let pool = Pool::<Once>::builder()
        .nats(NatsOptions::new(server.url()), "nothreads")
        .spawn(())
        .unwrap();
    assert!(matches!(
        pool.submit(true).wait(),
        Err(isolates::TaskError::Panicked(_))
    ));
    let pending = pool.submit(false);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::sync::Arc::clone(&serving);
    std::thread::spawn(move || {
        let _ = tx.send(waiter.wait());
    });
    let ended = rx.recv_timeout(Duration::from_secs(3));
    let stats = serving.stats();
    serving.stop();
    drop(pending);
    assert!(
        ended.is_ok(),
        "serving did not end in 3 s; it pulled the task {} times: {stats:?}",
        stats.received
    );
}

/// A TCP proxy in front of the server for the client's connection, which
/// can cut the server's side (the server sees the client go; the client
/// does not notice) and then close the client's side (it reconnects at
/// once, through the proxy, to the server).
struct Proxy {
    port: u16,
    pairs: std::sync::Arc<Mutex<Vec<(std::net::TcpStream, std::net::TcpStream)>>>,
}

impl Proxy {
    fn start(server_port: u16) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pairs = std::sync::Arc::new(Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&pairs);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let copy = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                    });
                };
                copy(client.try_clone().unwrap(), server.try_clone().unwrap());
                copy(server.try_clone().unwrap(), client.try_clone().unwrap());
                kept.lock().unwrap().push((client, server));
            }
        });
        Proxy { port, pairs }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server loses the client's connection; the client does not know.
    fn cut_server_side(&self) {
        for (_, server) in self.pairs.lock().unwrap().iter() {
            let _ = server.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The client sees its connection close, and reconnects.
    fn close_client_side(&self) {
        for (client, _) in self.pairs.lock().unwrap().drain(..) {
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The client is cut off from the server for a while, less than its
/// disconnect timeout, and a task finishes meanwhile: the worker finds no
/// one for its result for 10 s, terminates the batch (`orphaned`) and the
/// task is gone from the stream. The client comes back, its link is up,
/// and the handle never resolves: neither the result, nor `WorkerLost`.
#[test]
#[ignore = "known bug, not fixed yet: after 10 s of NoResponders the worker terminates the batch, before the client's disconnect timeout could fail it (src/remote/serve.rs deliver)"]
fn a_result_for_a_client_cut_off_briefly_is_not_lost() {
    const LANE: u64 = 13;
    let server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Rec>(&options(&server).workers(1), "cutoff", LANE).unwrap();
    let proxy = Proxy::start(server.port);
    let pool = Pool::<Rec>::builder()
        .nats(
            NatsOptions::new(proxy.url()).disconnect_timeout(Duration::from_secs(60)),
            "cutoff",
        )
        .spawn(0)
        .unwrap();
    assert!(pool.submit(Job::Mark { tag: 0, ms: 0 }).wait().is_ok());
    let mut h = pool.submit(Job::Mark { tag: 1, ms: 300 });
    assert!(wait_until(|| runs(LANE, 1) == 1, Duration::from_secs(10)));
    proxy.cut_server_side();
    let cut = Instant::now();
    // The worker gives up on the result after 10 s.
    let orphaned = wait_until(|| serving.stats().orphaned > 0, Duration::from_secs(12));
    proxy.close_client_side();
    // The client is back once a new task makes the round trip.
    let mut probe = pool.submit(Job::Mark { tag: 2, ms: 0 });
    assert!(
        probe.wait_timeout(Duration::from_secs(5)).is_some(),
        "the client did not come back"
    );
    let got = h.wait_timeout(Duration::from_secs(2));
    assert!(
        got.is_some(),
        "cut off for {:?} (disconnect timeout 60 s): the task never resolved \
         (orphaned by the worker: {orphaned}; {:?})",
        cut.elapsed(),
        serving.stats()
    );
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A task that reports progress in a tight loop: the worker's memory must
/// not grow with the values not yet written out (it spawned one publish
/// per value, with no bound; now a task keeps one value waiting, the
/// newest). No client here (the task is published raw): all the memory is
/// the worker's.
#[test]
fn a_progress_flood_keeps_the_workers_memory_bounded() {
    use isolates::Codec;
    const LANE: u64 = 14;
    const N: u64 = 200_000;
    let server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Rec>(&options(&server).workers(1), "flood", LANE).unwrap();
    let publish = |n: u64| {
        let mut input = Vec::new();
        isolates::Bincode::new()
            .encode(&Job::Flood(n), &mut input)
            .unwrap();
        let mut frame = b"ISb1".to_vec();
        frame.extend_from_slice(&0xABCDu64.to_le_bytes());
        frame.extend_from_slice(&1u32.to_le_bytes());
        frame.extend_from_slice(&n.to_le_bytes());
        frame.extend_from_slice(&u64::MAX.to_le_bytes());
        frame.extend_from_slice(&(input.len() as u32).to_le_bytes());
        frame.extend_from_slice(&input);
        server.publish_raw("isolates.flood.tasks", &frame, "");
    };
    publish(1_000);
    assert!(wait_until(
        || runs(LANE, 1_000) == 1,
        Duration::from_secs(10)
    ));
    let before = peak_rss_kib();
    let started = Instant::now();
    publish(N);
    assert!(wait_until(|| runs(LANE, N) == 1, Duration::from_secs(12)));
    let took = started.elapsed();
    let grew = peak_rss_kib().saturating_sub(before);
    serving.stop();
    assert!(
        grew < 64 << 10,
        "{N} progress values of a u64 in {took:?}: peak memory grew by {} MiB",
        grew >> 10
    );
}

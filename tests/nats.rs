//! Pools over NATS JetStream: worker processes on the same loopback server
//! as the client, a server of the test's own (see `common/nats_server.rs`).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::nats_server::NatsServer;
use common::wait_until;
use isolates::pool::{MainThread, Pool, Task, TaskContext, TaskPriority, Worker};
use isolates::remote::{self, NatsOptions};
use isolates::{RemoteError, SpawnError, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    /// n * n.
    Square(u64),
    /// Sleeps, reporting the worker's pid as progress first.
    Sleep(u64),
    /// Runs until cancelled (or `ms` pass), then says which.
    UntilCancelled(u64),
    Panic,
}

/// Output: the value, and the pid of the process that computed it. Its
/// start argument is a lane: tests that run in-process workers at once
/// keep their records apart.
struct Remote {
    lane: usize,
}

/// Squares in order of their start, per lane (in-process workers).
static ORDER: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());
static SAW_CANCEL: [AtomicBool; 8] = [const { AtomicBool::new(false) }; 8];
static RAN: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
const PRIORITIES: usize = 1;
const CANCEL: usize = 2;

impl Worker for Remote {
    type Args = usize;
    type Input = Job;
    type Output = (u64, u32);
    type Progress = u32;
    type Error = String;

    fn start(lane: usize) -> Result<Self, String> {
        Ok(Remote { lane: lane % 8 })
    }

    fn run(&mut self, job: Job, task: &TaskContext<'_, Self>) -> Result<(u64, u32), String> {
        RAN[self.lane].fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        match job {
            Job::Square(n) => {
                ORDER.lock().unwrap().push((self.lane, n));
                Ok((n * n, pid))
            }
            Job::Sleep(ms) => {
                task.progress(pid);
                std::thread::sleep(Duration::from_millis(ms));
                Ok((ms, pid))
            }
            Job::UntilCancelled(ms) => {
                task.progress(pid);
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until {
                    if task.is_cancelled() {
                        SAW_CANCEL[self.lane].store(true, Ordering::SeqCst);
                        return Err("cancelled".into());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok((ms, pid))
            }
            Job::Panic => panic!("remote boom"),
        }
    }
}

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

const SERVE_URL: &str = "ISOLATES_TEST_NATS_URL";
const SERVE_NAME: &str = "ISOLATES_TEST_NATS_NAME";

/// A worker process of this test binary runs this test alone, and serves
/// there until killed.
#[test]
fn serve_entry() {
    let (Ok(url), Ok(name)) = (std::env::var(SERVE_URL), std::env::var(SERVE_NAME)) else {
        return;
    };
    let options = NatsOptions::new(url)
        .workers(2)
        .ack_wait(Duration::from_secs(2));
    remote::serve::<Remote>(&options, &name, 0).expect("serve");
}

/// A worker process; SIGKILLed when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(url: &str, name: &str) -> WorkerProcess {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["serve_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(SERVE_URL, url)
            .env(SERVE_NAME, name)
            .spawn()
            .expect("a worker process");
        WorkerProcess(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn options(server: &NatsServer) -> NatsOptions {
    NatsOptions::new(server.url()).ack_wait(Duration::from_secs(2))
}

/// The basics over the wire: values, errors, panics, progress and
/// main-thread callbacks, each handle resolved once.
#[test]
fn tasks_run_on_remote_workers_with_progress_and_callbacks() {
    let server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Remote>(&options(&server).workers(2), "basics", 0).unwrap();
    let pool = Pool::<Remote>::builder()
        .nats(options(&server).in_flight(8), "basics")
        .spawn(0)
        .unwrap();
    let handles: Vec<_> = (0..200).map(|n| pool.submit(Job::Square(n))).collect();
    for (n, h) in (0..200u64).zip(handles) {
        assert_eq!(h.wait(), Ok((n * n, std::process::id())));
    }
    assert!(
        matches!(pool.submit(Job::Panic).wait(), Err(TaskError::Panicked(m)) if m.contains("remote boom"))
    );
    // The worker restarted its state and goes on.
    assert_eq!(pool.submit(Job::Square(3)).wait().map(|v| v.0), Ok(9));

    let mut ui = MainThread::new();
    let progress = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let done = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let (p, d) = (progress.clone(), done.clone());
    ui.watch(
        pool.submit(Job::Sleep(50)),
        move |pid| p.set(pid),
        move |r| {
            assert_eq!(r.map(|v| v.0), Ok(50));
            d.set(d.get() + 1);
        },
    );
    assert!(wait_until(
        || {
            ui.pump(Duration::from_millis(5));
            ui.watching() == 0
        },
        Duration::from_secs(30)
    ));
    assert_eq!(done.get(), 1);
    assert_eq!(progress.get(), std::process::id());
    let stats = serving.stats();
    assert_eq!(stats.panicked, 1);
    assert_eq!(stats.garbage, 0);
}

/// High-priority tasks leave the client's queue first.
#[test]
fn priorities_order_tasks_on_the_wire() {
    let server = NatsServer::start(tmp(), &[]);
    let _serving =
        remote::start::<Remote>(&options(&server).workers(1), "priorities", PRIORITIES).unwrap();
    let pool = Pool::<Remote>::builder()
        .nats(options(&server).in_flight(1), "priorities")
        .spawn(0)
        .unwrap();
    // Holds the only place on the wire while the others queue.
    let blocker = pool.submit(Job::Sleep(300));
    let low = pool.submit_task(Task::new(Job::Square(1_000)).priority(TaskPriority::Low));
    let normal = pool.submit(Job::Square(1_001));
    let high = pool.submit_task(Task::new(Job::Square(1_002)).priority(TaskPriority::High));
    for h in [blocker, low, normal, high] {
        assert!(h.wait().is_ok());
    }
    let order: Vec<u64> = ORDER
        .lock()
        .unwrap()
        .iter()
        .filter(|(lane, _)| *lane == PRIORITIES)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(order, [1_002, 1_001, 1_000]);
}

/// Two worker processes; one is SIGKILLed mid-task: its task goes to the
/// other after the ack wait, and every one of a few thousand tasks
/// resolves once, with the right value.
#[test]
fn a_killed_worker_process_has_its_task_redelivered() {
    const TASKS: u64 = 3_000;
    let server = NatsServer::start(tmp(), &[]);
    let pool = Pool::<Remote>::builder()
        .nats(options(&server).in_flight(32), "killed")
        .spawn(0)
        .unwrap();
    let a = WorkerProcess::start(&server.url(), "killed");
    let b = WorkerProcess::start(&server.url(), "killed");
    let mut ui = MainThread::new();
    let resolved = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    // A long task amid short ones, to catch one worker in the middle of
    // it: its batch most likely holds short tasks already resolved, which
    // the batch's second run must not resolve again.
    let mut marker = None;
    for n in 0..TASKS {
        if n == TASKS / 3 {
            marker = Some(pool.submit(Job::Sleep(1_500)));
        }
        let r = resolved.clone();
        ui.on_done(pool.submit(Job::Square(n)), move |v| {
            r.borrow_mut().push((n, v))
        });
    }
    let mut marker = marker.unwrap();
    let mut ran_marker = None;
    assert!(
        wait_until(
            || {
                ran_marker = marker_progress(&mut marker);
                ran_marker.is_some()
            },
            Duration::from_secs(60)
        ),
        "the long task never started"
    );
    let victim = ran_marker.unwrap();
    assert!(victim == a.pid() || victim == b.pid());
    let (mut victim, survivor) = if victim == a.pid() {
        (a, b.pid())
    } else {
        (b, a.pid())
    };
    victim.kill();
    assert!(
        wait_until(
            || {
                ui.pump(Duration::from_millis(5));
                ui.watching() == 0
            },
            Duration::from_secs(120)
        ),
        "{} tasks unresolved",
        ui.watching()
    );
    let (value, pid) = marker
        .wait_timeout(Duration::from_secs(60))
        .expect("the killed worker's task was not redelivered")
        .unwrap();
    assert_eq!(value, 1_500);
    assert_eq!(
        pid, survivor,
        "the task must complete on the surviving worker"
    );
    let resolved = resolved.borrow();
    assert_eq!(
        resolved.len() as u64,
        TASKS,
        "each task resolves exactly once"
    );
    let ids: HashSet<u64> = resolved.iter().map(|(n, _)| *n).collect();
    assert_eq!(ids.len() as u64, TASKS);
    for (n, v) in resolved.iter() {
        assert_eq!(v.as_ref().map(|v| v.0), Ok(n * n));
    }
    assert_eq!(pool.stats().succeeded, TASKS + 1);
}

fn marker_progress(marker: &mut isolates::pool::TaskHandle<Remote>) -> Option<u32> {
    marker.progress().last().copied()
}

/// Tasks stored in the stream (file storage) survive a restart of the
/// server; the client and workers reconnect and finish them all.
#[test]
fn queued_tasks_survive_a_server_restart() {
    let mut server = NatsServer::start(tmp(), &[]);
    let pool = Pool::<Remote>::builder()
        .nats(
            options(&server)
                .in_flight(64)
                .disconnect_timeout(Duration::from_secs(60)),
            "restart",
        )
        .spawn(0)
        .unwrap();
    // No worker yet: the tasks wait in the stream.
    let handles: Vec<_> = (0..200).map(|n| pool.submit(Job::Square(n))).collect();
    assert!(
        wait_until(
            || stream_tasks(&server, "restart") >= 64,
            Duration::from_secs(30)
        ),
        "the tasks did not reach the stream"
    );
    server.restart();
    let _worker = WorkerProcess::start(&server.url(), "restart");
    for (n, h) in (0..200u64).zip(handles) {
        let mut h = h;
        let got = h
            .wait_timeout(Duration::from_secs(90))
            .expect("a task was lost in the restart");
        assert_eq!(got.map(|v| v.0), Ok(n * n));
    }
}

/// How many tasks the pool's stream holds: the task counts of its stored
/// batches, read over a raw connection (a batch message is `ISb1`, the
/// client, then the task count).
fn stream_tasks(server: &NatsServer, name: &str) -> u64 {
    let url = server.url();
    let name = name.to_string();
    // A short-lived runtime of the test's own.
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
        let Ok(info) = stream.info().await else {
            return 0;
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut tasks = 0;
        for sequence in first..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await
                && let Some(count) = message.payload.get(12..16)
            {
                tasks += u64::from(u32::from_le_bytes(count.try_into().unwrap()));
            }
        }
        tasks
    })
}

/// A batch of tasks as the client frames it: `ISb1`, the client, the
/// count, then each task's id, deadline (ms), input length and input.
fn batch_frame(client: u64, tasks: &[(u64, &[u8])]) -> Vec<u8> {
    let mut frame = b"ISb1".to_vec();
    frame.extend_from_slice(&client.to_le_bytes());
    frame.extend_from_slice(&(tasks.len() as u32).to_le_bytes());
    for (id, input) in tasks {
        frame.extend_from_slice(&id.to_le_bytes());
        frame.extend_from_slice(&u64::MAX.to_le_bytes());
        frame.extend_from_slice(&(input.len() as u32).to_le_bytes());
        frame.extend_from_slice(input);
    }
    frame
}

/// A wrong password is a typed error, on both sides; an unreachable
/// server is one within the connect timeout.
#[test]
fn wrong_password_and_unreachable_server_are_typed_errors() {
    let server = NatsServer::start(tmp(), &["--user", "app", "--pass", "right"]);
    let wrong = options(&server).user_password("app", "wrong");
    let err = Pool::<Remote>::builder()
        .nats(wrong.clone(), "auth")
        .spawn(0)
        .unwrap_err();
    assert!(
        matches!(err, SpawnError::Remote(RemoteError::Unauthorized(_))),
        "{err}"
    );
    let err = remote::start::<Remote>(&wrong, "auth", 0).unwrap_err();
    assert!(matches!(err, RemoteError::Unauthorized(_)), "{err}");
    // The right one works.
    let right = options(&server).user_password("app", "right");
    let _serving = remote::start::<Remote>(&right, "auth", 0).unwrap();
    let pool = Pool::<Remote>::builder()
        .nats(right, "auth")
        .spawn(0)
        .unwrap();
    assert_eq!(pool.submit(Job::Square(4)).wait().map(|v| v.0), Ok(16));

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let nowhere = NatsOptions::new(format!("nats://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(500));
    let err = Pool::<Remote>::builder()
        .nats(nowhere, "auth")
        .spawn(0)
        .unwrap_err();
    assert!(
        matches!(err, SpawnError::Remote(RemoteError::Unreachable { .. })),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Bytes that are not a task, and a task whose input does not decode, are
/// counted and dropped; the worker goes on.
#[test]
fn garbage_on_the_task_subject_is_counted_and_ignored() {
    let server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Remote>(&options(&server).workers(1), "garbage", 0).unwrap();
    let pool = Pool::<Remote>::builder()
        .nats(options(&server).in_flight(4), "garbage")
        .spawn(0)
        .unwrap();
    // The stream exists once a side set it up.
    server.publish_raw("isolates.garbage.tasks", b"\xff\x00not a task at all", "");
    server.publish_raw("isolates.garbage.tasks", &[0u8; 0], "");
    // A batch of two tasks whose inputs are hostile (a length far past
    // the limit, bytes that are no input): each counts.
    let hostile = [0xff; 64];
    let frame = batch_frame(7, &[(1, &hostile), (2, b"\x07")]);
    server.publish_raw("isolates.garbage.tasks", &frame, "");
    // A batch cut short (it claims three tasks and holds one and a half):
    // counted once, none of its tasks runs.
    let mut cut = batch_frame(7, &[(3, b"\x00\x01"), (4, b"\x00\x01")]);
    cut[12..16].copy_from_slice(&3u32.to_le_bytes());
    cut.truncate(cut.len() - 1);
    server.publish_raw("isolates.garbage.tasks", &cut, "");
    assert!(
        wait_until(|| serving.stats().garbage == 5, Duration::from_secs(30)),
        "{:?}",
        serving.stats()
    );
    assert_eq!(pool.submit(Job::Square(5)).wait().map(|v| v.0), Ok(25));
    let stats = serving.stats();
    assert_eq!(stats.garbage, 5);
    assert_eq!(stats.batches, 5, "{stats:?}");
    assert_eq!(
        stats.received, 3,
        "the cut batch's tasks are not received: {stats:?}"
    );
}

/// Cancelling a running remote task stops it on the worker; a deadline
/// does the same; a cancelled task that waited on the wire never runs.
#[test]
fn cancel_and_deadline_cross_the_wire() {
    let server = NatsServer::start(tmp(), &[]);
    let serving = remote::start::<Remote>(&options(&server).workers(1), "cancel", CANCEL).unwrap();
    let pool = Pool::<Remote>::builder()
        .nats(options(&server).in_flight(4), "cancel")
        .spawn(0)
        .unwrap();

    let running = pool.submit(Job::UntilCancelled(60_000));
    assert!(wait_until(
        || !running.progress().is_empty(),
        Duration::from_secs(30)
    ));
    // Behind it on the wire: the worker has one thread.
    let waiting = pool.submit(Job::Square(77));
    // Delivered to the worker (it takes two tasks at once), queued behind
    // the running one.
    assert!(wait_until(
        || serving.stats().received >= 2,
        Duration::from_secs(30)
    ));
    let ran_before = RAN[CANCEL].load(Ordering::SeqCst);
    assert!(waiting.cancel());
    // Each handle's cancel goes out from its own slot: the waiting task's
    // must reach the worker before the running one ends, or the worker,
    // free again, would start it.
    assert!(wait_until(
        || serving.stats().cancels >= 1,
        Duration::from_secs(30)
    ));
    assert!(running.cancel());
    assert_eq!(running.wait(), Err(TaskError::Cancelled));
    assert!(
        wait_until(
            || SAW_CANCEL[CANCEL].swap(false, Ordering::SeqCst),
            Duration::from_secs(30)
        ),
        "the worker never saw the cancel"
    );
    // The worker is free again, and never ran the cancelled task.
    assert_eq!(pool.submit(Job::Square(6)).wait().map(|v| v.0), Ok(36));
    assert_eq!(
        RAN[CANCEL].load(Ordering::SeqCst),
        ran_before + 1,
        "the cancelled task ran"
    );

    let started = Instant::now();
    let late = pool
        .submit_task(Task::new(Job::UntilCancelled(60_000)).timeout(Duration::from_millis(500)));
    assert_eq!(late.wait(), Err(TaskError::TimedOut));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        wait_until(
            || SAW_CANCEL[CANCEL].swap(false, Ordering::SeqCst),
            Duration::from_secs(30)
        ),
        "the deadline never reached the worker"
    );
}

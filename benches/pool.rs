//! Pool benchmarks beside rayon in the same run:
//! - throughput of ~100 µs CPU tasks over all workers vs rayon on the same
//!   number of threads (target: ≥ 0.95 of rayon's tasks/s);
//! - p99 completion latency of mixed 10 µs–10 ms tasks, all submitted at
//!   once, vs `rayon::spawn` on the same number of threads. Criterion's
//!   "time" for this group is the p99 latency of one batch (`iter_custom`).
//!
//! Run: `cargo bench --bench pool`. Figures are in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel as cb;
use isolates::pool::{Pool, TaskContext, Worker};

/// Busy work: `iters` rounds of an integer hash.
fn spin(iters: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..iters {
        x = (x ^ i).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(31);
    }
    black_box(x)
}

/// Iterations of `spin` per microsecond on this machine.
fn calibrate() -> f64 {
    let iters = 2_000_000;
    let start = Instant::now();
    spin(iters);
    iters as f64 / start.elapsed().as_secs_f64() / 1e6
}

struct Spinner;

/// Nanoseconds since the process's first call: a timestamp that can cross
/// the encoded boundary (an `Instant` cannot).
fn now_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Spins like `Spinner`, and returns when it finished (`now_nanos`).
struct Stamper;

impl Worker for Stamper {
    type Args = ();
    type Input = u64;
    type Output = u64;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Stamper)
    }

    fn run(&mut self, iters: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> {
        spin(iters);
        Ok(now_nanos())
    }
}

impl Worker for Spinner {
    type Args = ();
    type Input = u64;
    type Output = u64;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Spinner)
    }

    fn run(&mut self, iters: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> {
        Ok(spin(iters))
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn throughput(c: &mut Criterion) {
    const TASKS: u64 = 1000;
    let per_us = calibrate();
    let iters = (100.0 * per_us) as u64; // ~100 µs a task
    let n = threads();
    let pool = Pool::<Spinner>::builder()
        .workers(n)
        .nice(None)
        .build(())
        .unwrap();
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap();

    let mut group = c.benchmark_group("pool_throughput_100us");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(10);
    group.bench_function("rayon", |b| {
        b.iter(|| {
            let (tx, rx) = cb::unbounded();
            rayon.scope(|s| {
                for _ in 0..TASKS {
                    let tx = tx.clone();
                    s.spawn(move |_| tx.send(spin(iters)).unwrap());
                }
            });
            drop(tx);
            black_box(rx.iter().count())
        })
    });
    group.bench_function("isolates_pool", |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..TASKS).map(|_| pool.submit(iters)).collect();
            // Wait from the last: the caller then sleeps once for the batch,
            // as it does at the end of rayon's scope, instead of waking for
            // each task and taking a core from the workers on every wake.
            let ok = handles.into_iter().rev().map(|h| h.wait().is_ok());
            black_box(ok.filter(|ok| *ok).count())
        })
    });
    group.finish();
}

/// Task sizes from 10 µs to 10 ms, log-uniform, from a fixed seed.
fn mixed_sizes(count: usize, per_us: f64) -> Vec<u64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            let micros = 10f64 * 1000f64.powf(u); // 10 µs .. 10 ms
            (micros * per_us) as u64
        })
        .collect()
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

fn latency(c: &mut Criterion) {
    const TASKS: usize = 400;
    let per_us = calibrate();
    let sizes = Arc::new(mixed_sizes(TASKS, per_us));
    let n = threads();
    let stamper = Pool::<Stamper>::builder()
        .workers(n)
        .nice(None)
        .build(())
        .unwrap();
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap();

    let mut group = c.benchmark_group("pool_p99_mixed_10us_10ms");
    group.sample_size(10);
    group.bench_function("rayon_spawn", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) = cb::unbounded();
                let start = Instant::now();
                for &size in sizes.iter() {
                    let tx = tx.clone();
                    rayon.spawn(move || {
                        spin(size);
                        tx.send(start.elapsed()).unwrap();
                    });
                }
                drop(tx);
                total += p99(rx.iter().collect());
            }
            total
        })
    });
    group.bench_function("isolates_pool", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = now_nanos();
                let handles: Vec<_> = sizes.iter().map(|&s| stamper.submit(s)).collect();
                let latencies = handles
                    .into_iter()
                    .map(|h| Duration::from_nanos(h.wait().unwrap() - start))
                    .collect();
                total += p99(latencies);
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = throughput, latency
}
criterion_main!(benches);

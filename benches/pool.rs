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
use isolates::pool::join_all;

#[path = "support/workload.rs"]
mod workload;

use workload::{Spinner, Stamper, calibrate, cores, mixed_sizes, now_nanos, pools, spin};

fn throughput(c: &mut Criterion) {
    const TASKS: u64 = 1000;
    let per_us = calibrate();
    let iters = (100.0 * per_us) as u64; // ~100 µs a task
    let (pool, rayon) = pools::<Spinner>(cores());

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
            // One wake for the batch, as at the end of rayon's scope,
            // instead of a wake per task, each taking a core from a worker.
            let ok = join_all(handles).into_iter().filter(Result::is_ok);
            black_box(ok.count())
        })
    });
    group.finish();
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

fn latency(c: &mut Criterion) {
    const TASKS: usize = 400;
    let per_us = calibrate();
    let sizes = Arc::new(mixed_sizes(TASKS, per_us));
    let (stamper, rayon) = pools::<Stamper>(cores());

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
                let latencies = join_all(handles)
                    .into_iter()
                    .map(|done| Duration::from_nanos(done.unwrap() - start))
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

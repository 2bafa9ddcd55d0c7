//! Work-manager benchmarks beside their baselines in the same run:
//! - scheduling overhead: 1,000 no-op works enqueued in one batch and run to
//!   success (in-memory store), vs 1,000 no-op jobs on rayon with as many
//!   threads;
//! - store throughput: works committed to an SQLite file store, one per
//!   transaction and 1,000 per transaction, vs rows of the same size
//!   written to SQLite directly in the same mode (WAL, synchronous NORMAL).
//!
//! Run: `cargo bench --features schedule --bench schedule`. Figures are in BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use isolates::schedule::WorkStore;

#[path = "support/schedule_load.rs"]
mod schedule_load;
#[path = "support/workload.rs"]
mod workload;

use schedule_load::*;

fn overhead(c: &mut Criterion) {
    const N: u64 = 1000;
    let workers = workload::cores();
    let manager = noop_manager(WorkStore::in_memory().unwrap(), workers);
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("schedule_noop_works");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.bench_function("rayon", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rayon_batch(&rayon, N)).sum())
    });
    let mut batch = 0;
    group.bench_function("work_manager", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    batch += 1;
                    run_batch(&manager, N, batch)
                })
                .sum()
        })
    });
    group.finish();
    manager.stop();
    manager.join(std::time::Duration::MAX);
}

fn store(c: &mut Criterion) {
    const N: u64 = 200;
    for per_tx in [1, N] {
        let mut group = c.benchmark_group(format!("store_commit_{per_tx}_per_tx"));
        group.throughput(Throughput::Elements(N));
        group.sample_size(10);
        let raw = temp_store_path("bench-raw");
        group.bench_function("raw_sqlite", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| raw_sqlite_commits(&raw, N, per_tx, WORK_ROW_BYTES))
                    .sum()
            })
        });
        remove_store(&raw);
        let path = temp_store_path("bench-store");
        let manager = noop_manager(WorkStore::open(&path).unwrap(), 1);
        group.bench_function("work_store", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| commit_works(&manager, N, per_tx)).sum())
        });
        manager.stop();
        manager.join(std::time::Duration::MAX);
        remove_store(&path);
        group.finish();
    }
}

criterion_group!(benches, overhead, store);
criterion_main!(benches);

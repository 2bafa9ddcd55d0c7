//! Workloads shared by the criterion benches and the `isolates-bench`
//! harness (included by path: each is its own crate), so both measure the
//! same thing.

#![allow(dead_code)] // each includer uses a part

use std::hint::black_box;
use std::time::Instant;

use isolates::pool::{Pool, TaskContext, Worker};
use isolates::{Context, Isolate};

/// Answers `n` with `n + 1`: the smallest useful isolate.
pub(crate) struct Echo;

impl Isolate for Echo {
    type Args = ();
    type Message = u64;
    type Reply = u64;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Echo)
    }

    fn handle(&mut self, n: u64, _: &mut Context<Self>) -> Result<u64, String> {
        Ok(n.wrapping_add(1))
    }
}

/// Busy work: `iters` rounds of an integer hash.
pub(crate) fn spin(iters: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..iters {
        x = (x ^ i).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(31);
    }
    black_box(x)
}

/// Iterations of `spin` per microsecond on this machine.
pub(crate) fn calibrate() -> f64 {
    let iters = 2_000_000;
    let start = Instant::now();
    spin(iters);
    iters as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Nanoseconds since the process's first call: a timestamp that can cross
/// the encoded boundary (an `Instant` cannot).
pub(crate) fn now_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Spins and returns the hash.
pub(crate) struct Spinner;

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

/// Spins, and returns when it finished (`now_nanos`).
pub(crate) struct Stamper;

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

/// The machine's cores.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A pool of `n` workers at the default OS priority, and a rayon pool of
/// `n` threads: the two sides of a pool comparison.
pub(crate) fn pools<W: Worker<Args = ()>>(n: usize) -> (Pool<W>, rayon::ThreadPool) {
    let pool = Pool::<W>::builder()
        .workers(n)
        .nice(None)
        .spawn(())
        .expect("pool");
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("rayon");
    (pool, rayon)
}

/// `count` task sizes (in `spin` iterations) from 10 µs to 10 ms,
/// log-uniform, from a fixed seed.
pub(crate) fn mixed_sizes(count: usize, per_us: f64) -> Vec<u64> {
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

//! Core runtime benchmarks, each beside its baseline in the same run:
//! - ask round trip vs a raw crossbeam two-channel round trip;
//! - cast throughput vs raw crossbeam one-way sends;
//! - codec encode/decode of a small struct vs plain serde-bincode, and of an
//!   8 MiB buffer (serde's element path, our bytes path) vs memcpy;
//! - `Transfer` of 1 KiB vs 64 MiB through a port, vs a 64 MiB memcpy;
//! - `run` with an 8 MiB `Vec<u8>` / `Vec<f32>` payload returned whole:
//!   only the caller's time inside `run` and `try_take`, vs an 8 MiB memcpy.
//!
//! Run: `cargo bench --bench core`. Ratios are in BENCHMARKS.md.

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel as cb;
use isolates::{Bincode, Codec, Isolate, Transfer, port};
use serde::{Deserialize, Serialize};

#[path = "support/ui_call.rs"]
mod ui_call;
#[path = "support/workload.rs"]
mod workload;

use workload::Echo;

const T: Duration = Duration::from_secs(10);

fn ask_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("ask_round_trip");

    // Baseline: a thread answering on a second channel.
    let (req_tx, req_rx) = cb::unbounded::<u64>();
    let (rep_tx, rep_rx) = cb::unbounded::<u64>();
    let server = thread::spawn(move || {
        for n in req_rx {
            if rep_tx.send(n.wrapping_add(1)).is_err() {
                break;
            }
        }
    });
    group.bench_function("crossbeam_two_channel", |b| {
        let mut n = 0u64;
        b.iter(|| {
            req_tx.send(n).unwrap();
            n = rep_rx.recv().unwrap();
        })
    });
    drop(req_tx);
    server.join().unwrap();

    let echo = Echo::spawn(()).unwrap();
    group.bench_function("isolate_ask", |b| {
        let mut n = 0u64;
        b.iter(|| n = echo.ask_timeout(n, T).unwrap())
    });
    group.finish();
}

fn cast_throughput(c: &mut Criterion) {
    const BATCH: u64 = 10_000;
    let mut group = c.benchmark_group("cast_throughput");
    group.throughput(Throughput::Elements(BATCH));

    // Baseline: one-way sends to a consumer, then one acknowledgement.
    let (tx, rx) = cb::unbounded::<u64>();
    let (ack_tx, ack_rx) = cb::bounded::<u64>(1);
    let consumer = thread::spawn(move || {
        let mut sum = 0u64;
        for n in rx {
            if n == u64::MAX {
                let _ = ack_tx.send(sum);
            } else {
                sum = sum.wrapping_add(n);
            }
        }
    });
    group.bench_function("crossbeam_one_way", |b| {
        b.iter(|| {
            for n in 0..BATCH {
                tx.send(n).unwrap();
            }
            tx.send(u64::MAX).unwrap();
            black_box(ack_rx.recv().unwrap())
        })
    });
    drop(tx);
    consumer.join().unwrap();

    let echo = Echo::spawn(()).unwrap();
    group.bench_function("isolate_cast", |b| {
        b.iter(|| {
            for n in 0..BATCH {
                echo.cast(n).unwrap();
            }
            black_box(echo.ask_timeout(0, T).unwrap())
        })
    });
    group.finish();
}

#[derive(Serialize, Deserialize, Clone)]
struct Small {
    id: u64,
    name: String,
    position: (f32, f32, f32),
    tags: Vec<u16>,
    enabled: bool,
}

#[derive(Serialize, Deserialize)]
struct Blob {
    #[serde(with = "isolates::codec::bytes")]
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SerdeBlob {
    data: Vec<u8>,
}

fn codec(c: &mut Criterion) {
    let config = bincode::config::standard();
    let codec = Bincode::new();

    let small = Small {
        id: 42,
        name: "player-one".into(),
        position: (1.0, 2.5, -3.0),
        tags: vec![1, 2, 3, 5, 8],
        enabled: true,
    };
    let mut group = c.benchmark_group("codec_small");
    group.bench_function("serde_bincode_encode", |b| {
        b.iter(|| bincode::serde::encode_to_vec(black_box(&small), config).unwrap())
    });
    group.bench_function("isolates_encode", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            codec.encode(black_box(&small), &mut out).unwrap();
            out
        })
    });
    let bytes = bincode::serde::encode_to_vec(&small, config).unwrap();
    group.bench_function("serde_bincode_decode", |b| {
        b.iter(|| bincode::serde::decode_from_slice::<Small, _>(black_box(&bytes), config).unwrap())
    });
    group.bench_function("isolates_decode", |b| {
        b.iter(|| codec.decode::<Small>(black_box(&bytes)).unwrap())
    });
    group.finish();

    const MIB8: usize = 8 << 20;
    let mut group = c.benchmark_group("codec_8mib");
    group.throughput(Throughput::Bytes(MIB8 as u64));
    group.sample_size(20);
    let data: Vec<u8> = (0..MIB8).map(|i| i as u8).collect();
    group.bench_function("memcpy", |b| b.iter(|| black_box(&data).clone()));
    let serde_blob = SerdeBlob { data: data.clone() };
    group.bench_function("serde_bincode_encode", |b| {
        b.iter(|| bincode::serde::encode_to_vec(black_box(&serde_blob), config).unwrap())
    });
    let serde_bytes = bincode::serde::encode_to_vec(&serde_blob, config).unwrap();
    group.bench_function("serde_bincode_decode", |b| {
        b.iter(|| {
            bincode::serde::decode_from_slice::<SerdeBlob, _>(black_box(&serde_bytes), config)
                .unwrap()
        })
    });
    let blob = Blob { data };
    group.bench_function("isolates_bytes_encode", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(MIB8 + 16);
            codec.encode(black_box(&blob), &mut out).unwrap();
            out
        })
    });
    let mut blob_bytes = Vec::new();
    codec.encode(&blob, &mut blob_bytes).unwrap();
    group.bench_function("isolates_bytes_decode", |b| {
        b.iter(|| codec.decode::<Blob>(black_box(&blob_bytes)).unwrap())
    });
    group.finish();
}

fn transfer(c: &mut Criterion) {
    let mut group = c.benchmark_group("transfer");
    let (tx, rx) = port::unbounded::<(u32, Transfer)>();
    for size in [1usize << 10, 64 << 20] {
        let mut buffer = Some(vec![7u8; size]);
        group.bench_with_input(BenchmarkId::new("port_send_recv", size), &size, |b, _| {
            b.iter(|| {
                let t = Transfer::new(buffer.take().unwrap());
                tx.send((1, t)).unwrap();
                let (_, t) = rx.recv().unwrap();
                buffer = Some(t.into_vec());
            })
        });
    }
    // A plain `Vec` moves the same way: no `Transfer` needed in-process.
    let (vec_tx, vec_rx) = port::unbounded::<(u32, Vec<u8>)>();
    for size in [1usize << 10, 64 << 20] {
        let mut buffer = Some(vec![7u8; size]);
        group.bench_with_input(
            BenchmarkId::new("port_send_recv_vec", size),
            &size,
            |b, _| {
                b.iter(|| {
                    vec_tx.send((1, buffer.take().unwrap())).unwrap();
                    let (_, v) = vec_rx.recv().unwrap();
                    buffer = Some(v);
                })
            },
        );
    }
    let data = vec![7u8; 64 << 20];
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("memcpy", 64usize << 20), |b| {
        b.iter(|| black_box(&data).clone())
    });
    group.finish();
}

fn run_8mib_caller(c: &mut Criterion) {
    use ui_call::{byte_payload, caller_cost, float_payload, same_bytes, same_floats};
    const MIB8: usize = 8 << 20;
    let mut group = c.benchmark_group("run_8mib_caller");
    group.throughput(Throughput::Bytes(MIB8 as u64));
    group.sample_size(10);
    let bytes = byte_payload(MIB8);
    let floats = float_payload(MIB8);
    let mut target = vec![0u8; MIB8];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            target.copy_from_slice(black_box(&bytes));
            black_box(&target);
        })
    });
    // Only the caller's time inside `run` and `try_take` counts: the payload
    // is cloned, and the result dropped, outside it.
    group.bench_function("run_vec_u8", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let payload = bytes.clone();
                    let (inside, back) =
                        caller_cost(|| isolates::run(same_bytes, payload)).expect("run of 8 MiB");
                    drop(back);
                    inside
                })
                .sum()
        })
    });
    group.bench_function("run_vec_f32", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let payload = floats.clone();
                    let (inside, back) =
                        caller_cost(|| isolates::run(same_floats, payload)).expect("run of 8 MiB");
                    drop(back);
                    inside
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = ask_round_trip, cast_throughput, codec, transfer, run_8mib_caller
}
criterion_main!(benches);

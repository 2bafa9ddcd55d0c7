//! Messaging between two threads pinned to different CPUs: an isolate's
//! `ask` and `cast` beside the same traffic over raw crossbeam channels.
//!
//! Each block builds its side afresh (a crossbeam server thread, or an
//! isolate), warms it up, measures, and stops it before the next block, so
//! one side never idles (or spins) beside the other's measure. Blocks of the
//! two sides alternate round by round.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use isolates::{Context, Isolate, Priority};

use super::sys::{
    BusyLoad, Pinning, describe, load_average, pick_pinning, pin_current, process_cpu,
};
use super::workload::cores;
use super::{Measure, T, median};

/// Set when a thread of a measure could not be pinned.
pub(crate) static PIN_FAILED: AtomicBool = AtomicBool::new(false);

pub(crate) fn pin_or_flag(cpu: Option<usize>) {
    if let Some(cpu) = cpu
        && !pin_current(cpu)
    {
        PIN_FAILED.store(true, Ordering::Relaxed);
    }
}

/// Answers `n` with `n + 1`, on a thread pinned from `start` (its own; in
/// a process isolate, the child's thread that serves it).
pub(crate) struct PinnedEcho;

impl Isolate for PinnedEcho {
    type Args = Option<usize>;
    type Message = u64;
    type Reply = u64;
    type Error = String;

    fn start(cpu: Option<usize>, _: &mut Context<Self>) -> Result<Self, String> {
        pin_or_flag(cpu);
        Ok(PinnedEcho)
    }

    fn handle(&mut self, n: u64, _: &mut Context<Self>) -> Result<u64, String> {
        Ok(n.wrapping_add(1))
    }
}

/// Asked for it, reports how many messages it counted and starts again.
const REPORT: u64 = u64::MAX;

/// Counts the messages it is sent, on a thread pinned from `start`.
struct PinnedCounter {
    count: u64,
}

impl Isolate for PinnedCounter {
    type Args = Option<usize>;
    type Message = u64;
    type Reply = u64;
    type Error = String;

    fn start(cpu: Option<usize>, _: &mut Context<Self>) -> Result<Self, String> {
        pin_or_flag(cpu);
        Ok(PinnedCounter { count: 0 })
    }

    fn handle(&mut self, n: u64, _: &mut Context<Self>) -> Result<u64, String> {
        if n == REPORT {
            Ok(std::mem::take(&mut self.count))
        } else {
            self.count += 1;
            Ok(self.count)
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Crossbeam,
    Isolate,
}

/// Runs `f` on a new thread pinned to the caller's CPU, giving it the CPU
/// for the other side; returns what `f` returns.
pub(crate) fn on_caller<R: Send>(
    pinning: Option<Pinning>,
    f: impl FnOnce(Option<usize>) -> R + Send,
) -> R {
    std::thread::scope(|s| {
        s.spawn(move || {
            pin_or_flag(pinning.map(|p| p.caller));
            f(pinning.map(|p| p.other))
        })
        .join()
        .expect("the caller thread panicked")
    })
}

/// Round trips before a block's measure starts.
const WARM_UP: u64 = 1_000;

/// Starts an echo server of `side` on `other`, warms it up, hands `f` its
/// round trip, then stops the server.
fn with_echo<R>(
    side: Side,
    other: Option<usize>,
    f: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R,
) -> R {
    match side {
        Side::Crossbeam => {
            let (req_tx, req_rx) = cb::unbounded::<u64>();
            let (rep_tx, rep_rx) = cb::unbounded::<u64>();
            let server = std::thread::spawn(move || {
                pin_or_flag(other);
                for n in req_rx {
                    if rep_tx.send(n.wrapping_add(1)).is_err() {
                        break;
                    }
                }
            });
            let result = {
                let mut call = |n: u64| {
                    req_tx.send(n).unwrap();
                    rep_rx.recv().unwrap()
                };
                for n in 0..WARM_UP {
                    black_box(call(n));
                }
                f(&mut call)
            };
            drop(req_tx);
            server.join().expect("the crossbeam server panicked");
            result
        }
        Side::Isolate => {
            let echo = PinnedEcho::spawn(other).expect("spawn");
            let result = {
                let mut call = |n: u64| echo.ask_timeout(n, T).unwrap();
                for n in 0..WARM_UP {
                    black_box(call(n));
                }
                f(&mut call)
            };
            echo.kill(Priority::Immediate);
            echo.join(T);
            result
        }
    }
}

/// Up to `n` round trips, or fewer once `budget` is spent; each one's
/// latency in ns goes to `samples`.
fn timed(n: u64, budget: Duration, samples: &mut Vec<f64>, call: &mut dyn FnMut(u64) -> u64) {
    let end = Instant::now() + budget;
    for i in 0..n {
        let start = Instant::now();
        black_box(call(i));
        samples.push(start.elapsed().as_nanos() as f64);
        if start > end {
            break;
        }
    }
}

fn percentile(xs: &mut [f64], pct: usize) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get((xs.len() * pct / 100).min(xs.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// `ask_rtt` (quiet machine) or `ask_rtt_busy` (one busy process per core):
/// the p50 of single blocking round trips, an isolate's `ask` against two
/// crossbeam channels to a thread.
pub(crate) fn ask_rtt(quick: bool, busy: bool) -> Measure {
    let rounds = if quick { 5 } else { 11 };
    let n = if quick { 4_000 } else { 20_000 };
    // Bounds a block when contention makes round trips slow.
    let budget = Duration::from_millis(if quick { 300 } else { 1000 });
    let pinning = pick_pinning();
    PIN_FAILED.store(false, Ordering::Relaxed);
    let load_before = load_average();
    let load = busy.then(|| BusyLoad::start(cores()).expect("busy processes start"));
    let (mut base, mut ours) = on_caller(pinning, |other| {
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            with_echo(Side::Crossbeam, other, |call| {
                timed(n, budget, &mut base, call)
            });
            with_echo(Side::Isolate, other, |call| {
                timed(n, budget, &mut ours, call)
            });
        }
        (base, ours)
    });
    let spinners = load.as_ref().map_or(0, BusyLoad::len);
    drop(load);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let (base_mean, ours_mean) = (mean(&base), mean(&ours));
    let (base_p50, ours_p50) = (percentile(&mut base, 50), percentile(&mut ours, 50));
    let (base_p99, ours_p99) = (percentile(&mut base, 99), percentile(&mut ours, 99));
    let pinned = describe(pinning, !PIN_FAILED.load(Ordering::Relaxed));
    let conditions = if busy {
        format!("{spinners} busy processes (one per core, nice 0) competing")
    } else {
        format!("no added load (1-min load average {load_before})")
    };
    Measure {
        name: if busy { "ask_rtt_busy" } else { "ask_rtt" },
        value: ours_p50,
        unit: "ns",
        baseline: "crossbeam two-channel round trip, p50",
        baseline_value: base_p50,
        ratio: ours_p50 / base_p50,
        goal: Some(if busy { "ratio <= 2.0" } else { "ratio <= 1.3" }),
        note: Some(format!(
            "p50 of single round trips; isolate vs crossbeam: p99 {ours_p99:.0} ns vs {base_p99:.0} ns, \
             mean {ours_mean:.0} ns vs {base_mean:.0} ns; {} vs {} round trips; \
             {conditions}; {pinned}",
            ours.len(),
            base.len()
        )),
    }
}

/// Process CPU time (every thread) per round trip, an isolate's `ask`
/// against two crossbeam channels to a thread.
pub(crate) fn ask_cpu(quick: bool) -> Measure {
    let rounds = if quick { 5 } else { 11 };
    let n = if quick { 5_000 } else { 20_000 };
    let pinning = pick_pinning();
    PIN_FAILED.store(false, Ordering::Relaxed);
    let block = |call: &mut dyn FnMut(u64) -> u64| {
        let cpu = process_cpu();
        let wall = Instant::now();
        for i in 0..n {
            black_box(call(i));
        }
        let wall = wall.elapsed().as_nanos() as f64 / n as f64;
        let cpu = match (cpu, process_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_nanos() as f64 / n as f64,
            _ => f64::NAN,
        };
        (cpu, wall)
    };
    let rows = on_caller(pinning, |other| {
        (0..rounds)
            .map(|_| {
                let base = with_echo(Side::Crossbeam, other, block);
                let ours = with_echo(Side::Isolate, other, block);
                (base, ours)
            })
            .collect::<Vec<_>>()
    });
    let base_cpu = median(rows.iter().map(|r| r.0.0).collect());
    let base_wall = median(rows.iter().map(|r| r.0.1).collect());
    let ours_cpu = median(rows.iter().map(|r| r.1.0).collect());
    let ours_wall = median(rows.iter().map(|r| r.1.1).collect());
    let pinned = describe(pinning, !PIN_FAILED.load(Ordering::Relaxed));
    Measure {
        name: "ask_cpu",
        value: ours_cpu,
        unit: "ns CPU",
        baseline: "crossbeam two-channel round trip, CPU",
        baseline_value: base_cpu,
        ratio: ours_cpu / base_cpu,
        goal: Some("ratio <= 2.0"),
        note: Some(format!(
            "process CPU time (both threads) per round trip, median of {rounds} blocks of {n}; \
             wall per round trip, isolate vs crossbeam: {ours_wall:.0} ns vs {base_wall:.0} ns; \
             {pinned}"
        )),
    }
}

/// One-way sends of a `u64` to a counter: an isolate's `cast` against a
/// crossbeam channel to a thread; each block ends when the counter reports
/// it counted them all.
pub(crate) fn cast_throughput(quick: bool) -> Measure {
    let rounds = if quick { 3 } else { 7 };
    let n = if quick { 200_000 } else { 1_000_000 };
    let pinning = pick_pinning();
    PIN_FAILED.store(false, Ordering::Relaxed);
    let (base, ours) = on_caller(pinning, |other| {
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            base.push(crossbeam_casts(other, n));
            ours.push(isolate_casts(other, n));
        }
        (median(base), median(ours))
    });
    let pinned = describe(pinning, !PIN_FAILED.load(Ordering::Relaxed));
    Measure {
        name: "cast_throughput",
        value: ours,
        unit: "msg/s",
        baseline: "crossbeam one-way sends to a counting thread",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio >= 0.5"),
        note: Some(format!("{n} sends per block, median of {rounds}; {pinned}")),
    }
}

fn crossbeam_casts(other: Option<usize>, n: u64) -> f64 {
    let (tx, rx) = cb::unbounded::<u64>();
    let (ack_tx, ack_rx) = cb::bounded::<u64>(1);
    let consumer = std::thread::spawn(move || {
        pin_or_flag(other);
        let mut count = 0u64;
        for x in rx {
            if x == REPORT {
                let _ = ack_tx.send(std::mem::take(&mut count));
            } else {
                count += 1;
            }
        }
    });
    let block = |n: u64| {
        let start = Instant::now();
        for i in 0..n {
            tx.send(i).unwrap();
        }
        tx.send(REPORT).unwrap();
        assert_eq!(ack_rx.recv().unwrap(), n, "the consumer lost messages");
        n as f64 / start.elapsed().as_secs_f64()
    };
    block(WARM_UP);
    let rate = block(n);
    drop(tx);
    consumer.join().expect("the consumer panicked");
    rate
}

fn isolate_casts(other: Option<usize>, n: u64) -> f64 {
    let counter = PinnedCounter::spawn(other).expect("spawn");
    let block = |n: u64| {
        let start = Instant::now();
        for i in 0..n {
            counter.cast(i).unwrap();
        }
        assert_eq!(
            counter.ask_timeout(REPORT, T).unwrap(),
            n,
            "the isolate lost messages"
        );
        n as f64 / start.elapsed().as_secs_f64()
    };
    block(WARM_UP);
    let rate = block(n);
    counter.kill(Priority::Immediate);
    counter.join(T);
    rate
}

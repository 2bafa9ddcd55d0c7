//! Process isolates beside the raw mechanism they stand on: a round trip
//! over a Unix socket pair to a child process, and starting a child of the
//! same executable with one message of handshake. The raw child is this
//! binary too (hidden flag [`RAW_CHILD_FLAG`]): both sides pay the same
//! `exec`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use isolates::IsolateBuilder;
use isolates::process::ProcessOptions;

use super::workload::Echo;
use super::{Measure, T, interleaved};

/// The hidden flag that turns the harness into a raw echo child: it reads
/// 8-byte numbers from its stdin (a socket) and writes back each plus one.
pub(crate) const RAW_CHILD_FLAG: &str = "--raw-echo-child";

/// What the raw child runs (pinned to the CPU its argument names, if any);
/// never returns.
pub(crate) fn raw_child(args: &[String]) -> ! {
    super::messaging::pin_or_flag(args.first().and_then(|cpu| cpu.parse().ok()));
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("stdin is a socket");
    let mut socket = UnixStream::from(fd);
    let mut buf = [0u8; 8];
    while socket.read_exact(&mut buf).is_ok() {
        let n = u64::from_le_bytes(buf).wrapping_add(1);
        if socket.write_all(&n.to_le_bytes()).is_err() {
            break;
        }
    }
    std::process::exit(0);
}

/// A raw child and our end of its socket.
struct RawChild {
    child: Child,
    socket: UnixStream,
}

impl RawChild {
    fn spawn() -> RawChild {
        Self::spawn_on(None)
    }

    fn spawn_on(cpu: Option<usize>) -> RawChild {
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        let child = Command::new(std::env::current_exe().expect("current exe"))
            .arg(RAW_CHILD_FLAG)
            .args(cpu.map(|cpu| cpu.to_string()))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .expect("spawn the raw child");
        RawChild {
            child,
            socket: ours,
        }
    }

    fn round_trip(&mut self, n: u64) -> u64 {
        self.socket.write_all(&n.to_le_bytes()).expect("write");
        let mut buf = [0u8; 8];
        self.socket.read_exact(&mut buf).expect("read");
        u64::from_le_bytes(buf)
    }
}

impl Drop for RawChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo_in_child() -> isolates::IsolateHandle<Echo> {
    IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Echo>(())
        .expect("spawn a process isolate")
}

pub(crate) fn process_ask_rtt(quick: bool) -> Measure {
    let n = if quick { 2_000 } else { 20_000 };
    // As `ask_rtt`: the caller on one CPU, the other side (here the child's
    // serving thread) on another, on both sides of the comparison.
    let pinning = super::sys::pick_pinning();
    super::messaging::PIN_FAILED.store(false, std::sync::atomic::Ordering::Relaxed);
    let (base, ours) = super::messaging::on_caller(pinning, |other| {
        let mut raw = RawChild::spawn_on(other);
        let echo = IsolateBuilder::new()
            .process(ProcessOptions::new())
            .spawn::<super::messaging::PinnedEcho>(other)
            .expect("spawn a process isolate");
        // Both children up and warm.
        for i in 0..1000 {
            black_box(raw.round_trip(i));
            black_box(echo.ask_timeout(i, T).expect("ask"));
        }
        round_trips(quick, n, &mut raw, &echo)
    });
    let pinned = !super::messaging::PIN_FAILED.load(std::sync::atomic::Ordering::Relaxed);
    Measure {
        name: "process_ask_rtt",
        value: ours,
        unit: "µs",
        baseline: "raw 8-byte round trip, Unix socket pair",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio <= 1.5"),
        note: Some(super::sys::describe(pinning, pinned)),
    }
}

fn round_trips(
    quick: bool,
    n: u64,
    raw: &mut RawChild,
    echo: &isolates::IsolateHandle<super::messaging::PinnedEcho>,
) -> (f64, f64) {
    interleaved(
        if quick { 5 } else { 9 },
        || {
            let start = Instant::now();
            for i in 0..n {
                black_box(raw.round_trip(i));
            }
            start.elapsed().as_nanos() as f64 / 1000.0 / n as f64
        },
        || {
            let start = Instant::now();
            for i in 0..n {
                black_box(echo.ask_timeout(i, T).expect("ask"));
            }
            start.elapsed().as_nanos() as f64 / 1000.0 / n as f64
        },
    )
}

/// The pause after each spawn of `process_spawn`, not timed.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(2);

/// One spawn of a process isolate, with one `ask`, a kill with `priority`
/// and a `join` (which returns once the child is reaped); ms.
fn spawn_ask_kill(i: u64, priority: isolates::Priority) -> f64 {
    let start = Instant::now();
    let echo = echo_in_child();
    black_box(echo.ask_timeout(i, T).expect("ask"));
    // Its exit and reaping, as the baseline's: not left to overlap the
    // next spawn.
    echo.kill(priority);
    echo.join(T).expect("the isolate exits");
    start.elapsed().as_nanos() as f64 / 1e6
}

/// One raw spawn with one round trip, its child killed and reaped; ms.
fn raw_spawn(i: u64) -> f64 {
    let start = Instant::now();
    let mut raw = RawChild::spawn();
    black_box(raw.round_trip(i));
    drop(raw);
    start.elapsed().as_nanos() as f64 / 1e6
}

/// The row ends the child as the baseline does, with SIGKILL
/// (`kill(Priority::Immediate)`); the graceful end (`AfterCurrent`: a Stop
/// frame, the child's `stopping`, its exit) is measured in the same rounds
/// and given in the note, against the same baseline.
///
/// The three are interleaved one spawn at a time, and each is the median
/// of its spawns: a burst of noise from the host (a spawn is about a
/// millisecond, and a few take several) then neither lands on one side
/// only nor weighs on the figure as it did on a mean of 40. Each spawn
/// starts from a settled machine: after each, a pause ([`SETTLE`], not
/// timed) lets what ended finish (the reaper, an ended isolate's thread),
/// so that neither side pays for what the other left running.
///
/// A quick run takes 100 of each (about a second): with 30, a median
/// moved by several hundredths from run to run, about as much as the
/// margin to the goal.
pub(crate) fn process_spawn(quick: bool) -> Measure {
    let n = if quick { 100 } else { 300 };
    let (mut base, mut ours, mut graceful) = (Vec::new(), Vec::new(), Vec::new());
    // Warm: the first spawns page the executable in.
    for i in 0..3 {
        raw_spawn(i);
        spawn_ask_kill(i, isolates::Priority::Immediate);
    }
    for i in 0..n {
        base.push(raw_spawn(i));
        std::thread::sleep(SETTLE);
        ours.push(spawn_ask_kill(i, isolates::Priority::Immediate));
        std::thread::sleep(SETTLE);
        graceful.push(spawn_ask_kill(i, isolates::Priority::AfterCurrent));
        std::thread::sleep(SETTLE);
    }
    let means = [&base, &ours].map(|xs| xs.iter().sum::<f64>() / xs.len() as f64);
    let (base, ours, graceful) = (
        super::median(base),
        super::median(ours),
        super::median(graceful),
    );
    Measure {
        name: "process_spawn",
        value: ours,
        unit: "ms",
        baseline: "Command spawn of this exe + one round trip",
        baseline_value: base,
        ratio: ours / base,
        goal: Some("ratio <= 1.2"),
        note: Some(format!(
            "medians of {n} spawns each, interleaved one at a time, 2 ms apart (means: {:.3} ms ours, \
             {:.3} ms baseline, ratio {:.4}); both end the child with SIGKILL (ours: \
             kill(Immediate)) and include its reaping; graceful end (kill(AfterCurrent): \
             Stop frame, stopping, exit) in the same rounds: {graceful:.3} ms, ratio {:.4}",
            means[1],
            means[0],
            means[1] / means[0],
            graceful / base
        )),
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4.0)
}

pub(crate) fn process_idle_rss(quick: bool) -> Measure {
    let n = if quick { 4 } else { 16 };
    let raws: Vec<RawChild> = (0..n)
        .map(|i| {
            let mut raw = RawChild::spawn();
            raw.round_trip(i);
            raw
        })
        .collect();
    let base = raws.iter().map(|r| rss_of(r.child.id())).sum::<f64>() / n as f64;
    drop(raws);
    let echoes: Vec<_> = (0..n)
        .map(|i| {
            let echo = echo_in_child();
            echo.ask_timeout(i, T).expect("ask");
            echo
        })
        .collect();
    let pids = child_pids();
    let ours = pids.iter().map(|&p| rss_of(p)).sum::<f64>() / pids.len().max(1) as f64;
    let note = format!(
        "{} live children measured, after one message each",
        pids.len()
    );
    drop(echoes);
    Measure {
        name: "process_idle_rss",
        value: ours,
        unit: "KiB",
        baseline: "an idle raw child of the same exe",
        baseline_value: base,
        ratio: ours / base,
        goal: None,
        note: Some(note),
    }
}

/// The pids of this process's live children that run this executable.
fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                // Field 4 of stat (after the name) is the parent's pid.
                fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(me)
                    && fields.first() != Some(&"Z")
            })
        })
        .collect()
}

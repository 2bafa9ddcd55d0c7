//! A sandbox for a decoder of untrusted files: the decoder runs in a
//! process isolate under a supervisor, and some files make it abort,
//! segfault, overflow its stack, blow past its memory limit or loop forever.
//! Each crash ends only the child process: its exit reason says which crash
//! it was, the request in flight resolves with that reason, the supervisor
//! starts a new child, and the requests queued behind the crash go to the
//! new one. A file that makes the decoder loop forever is cut off by the UI:
//! past a per-request deadline it kills the isolate with
//! `kill(Priority::Immediate)`, which kills the child in the middle of its
//! loop, and the supervisor restarts it.
//!
//! Meanwhile the "UI" (the main thread) draws frames at a steady 60 per
//! second and never blocks: each frame it sends a file with `ask_pending`
//! (up to a few in flight), polls the replies with `try_take` and the
//! supervisor's events with `try_recv`, and draws a status line (printed
//! every half second). At the end it prints a summary (frames drawn, the
//! worst frame time, files decoded, crashes by exit reason, restarts) and
//! exits non-zero if a frame took longer than 250 ms, a crash kind was never
//! seen, a file got another outcome than its flaw calls for, or a request
//! never resolved: CI runs it with `--short` and relies on that.
//!
//! ```text
//! cargo run --release --example crash_sandbox              # 600 files, about 20 s
//! cargo run --release --example crash_sandbox -- --short   # 48 files, a few seconds (CI)
//! ```
//!
//! The files are made up: a header (`SBX1`, a flaw byte, the decoded length)
//! and run-length pairs. The flaw byte stands for what a malformed file does
//! to a real decoder (a failed consistency check, a wild pointer, a chunk
//! that includes itself, a header that claims 3.75 GiB, a length field that
//! wraps); the decoder does that on purpose. The crate forbids `unsafe`, so
//! the "segfault" is a SIGSEGV the decoder raises on itself rather than a
//! wild read. Lines such as `memory allocation of … failed` and
//! `thread … has overflowed its stack` come from the children's stderr,
//! which the parent forwards (and reads to tell those crashes from a plain
//! abort).
//!
//! Linux only (process isolates need it); elsewhere it says so and exits 0.

use std::process::ExitCode;

use isolates::process::Registry;
use isolates::{Context, Isolate};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"SBX1";
const HEADER: usize = 9;

/// What the decoder reports for a file it decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Decoded {
    len: u64,
    checksum: u32,
    /// The child process that decoded it: a new one after each restart.
    pid: u32,
}

/// Decodes files in a child process; whatever a file does to it stays
/// there.
struct Decoder;

impl Isolate for Decoder {
    type Args = ();
    type Message = Vec<u8>;
    type Reply = Decoded;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Decoder)
    }

    fn handle(&mut self, file: Vec<u8>, _: &mut Context<Self>) -> Result<Decoded, String> {
        if file.len() < HEADER || &file[..4] != MAGIC {
            return Err("not an SBX1 file".into());
        }
        let declared = u32::from_le_bytes(file[5..9].try_into().expect("4 bytes")) as usize;
        let payload = &file[HEADER..];
        // The flaw byte: what a malformed file would make a real decoder do.
        match file[4] {
            // A corrupt table fails a consistency check: what a C
            // library's `assert` does.
            b'A' => std::process::abort(),
            // An offset past the buffer: a read through a wild pointer.
            b'S' => raise_segv(),
            // A chunk that includes itself.
            b'R' => {
                let depth = expand_chunk(std::hint::black_box(0));
                return Ok(Decoded {
                    len: depth,
                    checksum: 0,
                    pid: std::process::id(),
                });
            }
            // A length field that wraps: the copy loop never ends.
            b'L' => {
                let mut i = 0u32;
                let step = std::hint::black_box(payload.len() as u32 | 1);
                loop {
                    i = std::hint::black_box(i.wrapping_add(step));
                }
            }
            // b'B', the bomb, is in its header; b'.' is a good file.
            _ => {}
        }
        // Trusting the header is the bomb's way in: a file that claims
        // 3.75 GiB gets it reserved, past the child's memory limit.
        let mut out = Vec::with_capacity(declared);
        for pair in payload.chunks_exact(2) {
            out.extend(std::iter::repeat_n(pair[1], usize::from(pair[0])));
        }
        if out.len() != declared {
            return Err(format!("declared {declared} bytes, decoded {}", out.len()));
        }
        Ok(Decoded {
            len: out.len() as u64,
            checksum: checksum(&out),
            pid: std::process::id(),
        })
    }
}

/// Expands a chunk whose body is the chunk itself.
#[inline(never)]
fn expand_chunk(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    if frame[0] == u64::MAX {
        return 0;
    }
    expand_chunk(depth + 1).wrapping_add(frame[7])
}

/// Ends the process with SIGSEGV, as a wild read would.
#[cfg(target_os = "linux")]
fn raise_segv() -> ! {
    // Rust's SIGSEGV handler (which watches for stack overflows) lets the
    // first signal through when it is not a fault, restoring the default
    // action: the second one kills.
    let me = rustix::process::getpid();
    loop {
        let _ = rustix::process::kill_process(me, rustix::process::Signal::SEGV);
        std::thread::park_timeout(std::time::Duration::from_millis(10));
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_segv() -> ! {
    std::process::abort()
}

fn checksum(bytes: &[u8]) -> u32 {
    // FNV-1a.
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn main() -> ExitCode {
    Registry::new().isolate::<Decoder>().init();
    run()
}

#[cfg(not(target_os = "linux"))]
fn run() -> ExitCode {
    println!("crash_sandbox: process isolates need Linux; nothing to show on this platform");
    ExitCode::SUCCESS
}

#[cfg(target_os = "linux")]
use app::run;

#[cfg(target_os = "linux")]
mod app {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};
    use std::fmt::Write as _;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    use isolates::process::ProcessOptions;
    use isolates::supervisor::{ChildSpec, Restart, SupervisionEvent, Supervisor};
    use isolates::{AskError, Crash, ExitReason, IsolateBuilder, Pending, Priority, port};

    use super::{Decoded, Decoder, HEADER, MAGIC, checksum};

    /// What a file does to the decoder: the byte after the magic.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Flaw {
        /// A well-formed file.
        None,
        /// A corrupt table: the decoder's consistency check aborts.
        Abort,
        /// An offset past the buffer: the decoder reads through a wild pointer.
        Segfault,
        /// A chunk that includes itself: the recursive expansion never ends.
        Recursion,
        /// A header that claims 3.75 GiB of output, reserved up front.
        Bomb,
        /// A length field that wraps: the copy loop never ends.
        Loop,
        /// Not an SBX1 file at all: rejected with an error (no crash).
        Garbled,
    }

    impl Flaw {
        const ALL_BAD: [Flaw; 6] = [
            Flaw::Abort,
            Flaw::Segfault,
            Flaw::Recursion,
            Flaw::Bomb,
            Flaw::Loop,
            Flaw::Garbled,
        ];

        fn byte(self) -> u8 {
            match self {
                Flaw::None => b'.',
                Flaw::Abort => b'A',
                Flaw::Segfault => b'S',
                Flaw::Recursion => b'R',
                Flaw::Bomb => b'B',
                Flaw::Loop => b'L',
                Flaw::Garbled => b'?',
            }
        }

        fn name(self) -> &'static str {
            match self {
                Flaw::None => "good file",
                Flaw::Abort => "corrupt table",
                Flaw::Segfault => "wild offset",
                Flaw::Recursion => "self-including chunk",
                Flaw::Bomb => "decompression bomb",
                Flaw::Loop => "wrapping length",
                Flaw::Garbled => "not an SBX1 file",
            }
        }
    }

    const FRAME: Duration = Duration::from_micros(16_667);
    /// A frame slower than this fails the run.
    const FRAME_BUDGET: Duration = Duration::from_millis(250);
    /// How long the decoder may work on one file.
    const DEADLINE: Duration = Duration::from_secs(1);
    /// Files in flight at once (the rest wait on the UI side).
    const WINDOW: usize = 4;
    /// The child's address space limit.
    const MAX_MEMORY: u64 = 256 << 20;
    const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

    struct Config {
        files: usize,
        /// Every `flaw_every`-th file is flawed, the flaws in turn.
        flaw_every: usize,
        /// The run fails if it has not finished by then.
        time_limit: Duration,
    }

    /// A made-up file with `flaw`, and what a correct decoder makes of it.
    struct File {
        index: usize,
        flaw: Flaw,
        bytes: Vec<u8>,
        expected: Option<(u64, u32)>,
    }

    fn make_file(index: usize, flaw: Flaw, seed: &mut u64) -> File {
        let mut next = || {
            // xorshift64
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let pairs = 16 + (next() % 200) as usize;
        let mut payload = Vec::with_capacity(pairs * 2);
        let mut decoded = Vec::new();
        for _ in 0..pairs {
            let r = next();
            let (count, byte) = (1 + (r % 255) as u8, (r >> 8) as u8);
            payload.extend([count, byte]);
            decoded.extend(std::iter::repeat_n(byte, usize::from(count)));
        }
        let declared = if flaw == Flaw::Bomb {
            0xF000_0000
        } else {
            decoded.len() as u32
        };
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(if flaw == Flaw::Garbled {
            b"PK\x03\x04"
        } else {
            MAGIC
        });
        bytes.push(flaw.byte());
        bytes.extend(declared.to_le_bytes());
        bytes.extend(payload);
        let expected = (flaw == Flaw::None).then(|| (decoded.len() as u64, checksum(&decoded)));
        File {
            index,
            flaw,
            bytes,
            expected,
        }
    }

    type Reply = Result<Decoded, AskError<String>>;

    /// A file sent to the decoder.
    struct InFlight {
        file: File,
        pending: Pending<Decoded, AskError<String>>,
    }

    /// The exit reason a flaw must end the decoder with, if any.
    fn expected_exit(flaw: Flaw) -> Option<ExitReason> {
        match flaw {
            Flaw::Abort => Some(ExitReason::Crashed(Crash::Signal(6))),
            Flaw::Segfault => Some(ExitReason::Crashed(Crash::Signal(11))),
            Flaw::Recursion => Some(ExitReason::Crashed(Crash::StackOverflow)),
            Flaw::Bomb => Some(ExitReason::Crashed(Crash::OutOfMemory {
                limit: MAX_MEMORY,
            })),
            Flaw::Loop => Some(ExitReason::Killed),
            Flaw::None | Flaw::Garbled => None,
        }
    }

    /// Whether `reply` is what `file` calls for.
    fn as_expected(file: &File, reply: &Reply) -> bool {
        match (file.flaw, reply) {
            (Flaw::None, Ok(d)) => file.expected == Some((d.len, d.checksum)),
            (Flaw::Garbled, Err(AskError::Failed(_))) => true,
            (flaw, Err(AskError::Dead(reason))) => expected_exit(flaw).as_ref() == Some(reason),
            _ => false,
        }
    }

    fn kind(reason: &ExitReason) -> String {
        match reason {
            ExitReason::Crashed(Crash::Signal(6)) => "abort (SIGABRT)".into(),
            ExitReason::Crashed(Crash::Signal(11)) => "segfault (SIGSEGV)".into(),
            ExitReason::Crashed(Crash::StackOverflow) => "stack overflow".into(),
            ExitReason::Crashed(Crash::OutOfMemory { .. }) => "out of memory".into(),
            ExitReason::Killed => "killed past its deadline".into(),
            other => other.to_string(),
        }
    }

    #[derive(Default)]
    struct Tally {
        decoded: u64,
        decoded_bytes: u64,
        rejected: u64,
        /// Exit reasons, as the supervisor reported them.
        exits: BTreeMap<String, u64>,
        exits_total: u64,
        restarts: u64,
        gave_up: bool,
        kills: u64,
        /// Files whose outcome was not the one their flaw calls for.
        wrong: Vec<String>,
        pids: BTreeSet<u32>,
    }

    pub(crate) fn run() -> ExitCode {
        let short = std::env::args().any(|a| a == "--short");
        let config = if short {
            Config {
                files: 48,
                flaw_every: 4,
                time_limit: Duration::from_secs(15),
            }
        } else {
            Config {
                files: 600,
                flaw_every: 8,
                time_limit: Duration::from_secs(120),
            }
        };

        let spec = ChildSpec::worker_with::<Decoder, _>(
            "decoder",
            IsolateBuilder::new()
                .process(ProcessOptions::new().max_memory(MAX_MEMORY))
                // A rejected file is an answer, not a reason to restart.
                .errors_are_fatal(false),
            (),
        )
        .restart(Restart::Permanent);
        let sup = Supervisor::builder()
            .name("sandbox")
            .restart_intensity(30, Duration::from_secs(1))
            .child(spec)
            .spawn()
            .expect("start the supervisor");
        let (events_tx, events) = port::unbounded::<SupervisionEvent>();
        sup.add_event_listener(events_tx);
        let decoder = sup.worker::<Decoder>("decoder").expect("the decoder");

        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut files: VecDeque<File> = (0..config.files)
            .map(|i| {
                let flaw = if i % config.flaw_every == config.flaw_every - 1 {
                    Flaw::ALL_BAD[(i / config.flaw_every) % Flaw::ALL_BAD.len()]
                } else {
                    Flaw::None
                };
                make_file(i, flaw, &mut seed)
            })
            .collect();
        println!(
            "crash_sandbox: {} files ({} flawed), {} in flight at most, a {} ms deadline each, \
             the decoder's child limited to {} MiB",
            config.files,
            files.iter().filter(|f| f.flaw != Flaw::None).count(),
            WINDOW,
            DEADLINE.as_millis(),
            MAX_MEMORY >> 20,
        );

        let mut tally = Tally::default();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        // When the oldest file in flight became the oldest: the decoder has
        // been on it (or restarting to get to it) since then.
        let mut head_since = Instant::now();
        let mut killed_for: Option<usize> = None;
        let mut status = String::new();

        let started = Instant::now();
        let mut next_frame = started;
        let mut last_frame: Option<Instant> = None;
        let (mut frames, mut worst_gap, mut worst_work) = (0u64, Duration::ZERO, Duration::ZERO);
        let mut over_budget = 0u64;
        let mut gaps: Vec<Duration> = Vec::new();
        let mut worst_at = Duration::ZERO;
        let mut timed_out = false;

        loop {
            let frame_start = Instant::now();
            if let Some(last) = last_frame {
                let gap = frame_start - last;
                gaps.push(gap);
                if gap > worst_gap {
                    worst_gap = gap;
                    worst_at = frame_start - started;
                }
                if gap > FRAME_BUDGET {
                    over_budget += 1;
                }
            }
            last_frame = Some(frame_start);
            frames += 1;

            // Replies: non-blocking, oldest first (the decoder answers in
            // order).
            while let Some(front) = in_flight.front_mut() {
                let Some(reply) = front.pending.try_take() else {
                    break;
                };
                let done = in_flight.pop_front().expect("the front");
                head_since = Instant::now();
                record(&mut tally, &done.file, &reply);
            }

            // Supervisor events: non-blocking.
            while let Ok(event) = events.try_recv() {
                match event {
                    SupervisionEvent::Exited { reason, .. } => {
                        tally.exits_total += 1;
                        *tally.exits.entry(kind(&reason)).or_default() += 1;
                    }
                    SupervisionEvent::Restarted { attempt, .. } => {
                        tally.restarts += 1;
                        println!(
                            "    supervisor: decoder restarted ({attempt} within the last second)"
                        );
                    }
                    SupervisionEvent::GaveUp { reason } => {
                        tally.gave_up = true;
                        println!("    supervisor gave up: {reason}");
                    }
                    _ => {}
                }
            }

            // The deadline: a decoder stuck on a file is killed; the
            // supervisor starts a new one for the files behind it.
            if let Some(front) = in_flight.front()
                && head_since.elapsed() > DEADLINE
                && killed_for != Some(front.file.index)
            {
                println!(
                    "    file #{:>3}: no answer after {} ms, killing the decoder",
                    front.file.index,
                    DEADLINE.as_millis()
                );
                decoder.kill(Priority::Immediate);
                killed_for = Some(front.file.index);
                tally.kills += 1;
            }

            // One new file per frame, up to the window.
            if in_flight.len() < WINDOW
                && let Some(file) = files.pop_front()
            {
                if in_flight.is_empty() {
                    head_since = Instant::now();
                }
                let pending = decoder.ask_pending(file.bytes.clone());
                in_flight.push_back(InFlight { file, pending });
            }

            // Draw. The status line is built every frame and printed twice
            // a second.
            status.clear();
            let _ = write!(
                status,
                "[{} frame {frames:>5} {:>5.1} s] files {:>3}/{} | decoded {:>3} rejected {:>2} | \
                 exits {:>2} restarts {:>2} | in flight {} | worst frame {:>5.1} ms",
                SPINNER[(frames / 4) as usize % SPINNER.len()],
                started.elapsed().as_secs_f64(),
                config.files - files.len() - in_flight.len(),
                config.files,
                tally.decoded,
                tally.rejected,
                tally.exits_total,
                tally.restarts,
                in_flight.len(),
                worst_gap.as_secs_f64() * 1e3,
            );
            if frames % 30 == 0 {
                println!("{status}");
            }

            let all_answered = files.is_empty() && in_flight.is_empty();
            // Every exit has been followed by its restart (or the
            // supervisor gave up, which fails the run below).
            let settled = tally.exits_total == tally.restarts || tally.gave_up;
            if all_answered && settled {
                break;
            }
            if started.elapsed() > config.time_limit {
                timed_out = true;
                break;
            }

            worst_work = worst_work.max(frame_start.elapsed());
            // Pace to the next frame; after a long stall, start afresh
            // rather than rushing frames to catch up.
            next_frame += FRAME;
            let now = Instant::now();
            if next_frame > now {
                std::thread::sleep(next_frame - now);
            } else {
                next_frame = now;
            }
        }
        let elapsed = started.elapsed();
        println!("{status}");

        // The run is over: stopping the supervisor may wait (not a frame).
        sup.stop();
        let sup_exit = sup.join(Duration::from_secs(10));

        let unresolved = files.len() + in_flight.len();
        println!();
        println!("summary ({}):", if short { "--short" } else { "full run" });
        println!(
            "  frames drawn        {frames} in {:.2} s ({:.1} per second)",
            elapsed.as_secs_f64(),
            frames as f64 / elapsed.as_secs_f64()
        );
        gaps.sort_unstable();
        let percentile = |p: usize| {
            gaps.get((gaps.len() * p / 100).min(gaps.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "  worst frame time    {:.1} ms between frames at {:.2} s (budget {} ms, {} over; \
             median {:.1} ms, p99 {:.1} ms); at most {:.2} ms of work in a frame",
            worst_gap.as_secs_f64() * 1e3,
            worst_at.as_secs_f64(),
            FRAME_BUDGET.as_millis(),
            over_budget,
            percentile(50),
            percentile(99),
            worst_work.as_secs_f64() * 1e3
        );
        println!(
            "  files decoded       {} ({} bytes out), {} rejected, {} unresolved",
            tally.decoded, tally.decoded_bytes, tally.rejected, unresolved
        );
        println!(
            "  crashes by kind     {} exits in all (exit reasons from the supervisor):",
            tally.exits_total
        );
        for (kind, n) in &tally.exits {
            println!("    {n:>4}  {kind}");
        }
        println!(
            "  restarts            {} (kills at the deadline: {}), {} child processes answered",
            tally.restarts,
            tally.kills,
            tally.pids.len()
        );
        println!("  supervisor          stopped: {sup_exit:?}");

        let mut failures = Vec::new();
        if over_budget > 0 {
            failures.push(format!(
                "{over_budget} frames over the {} ms budget (worst {:.1} ms)",
                FRAME_BUDGET.as_millis(),
                worst_gap.as_secs_f64() * 1e3
            ));
        }
        if unresolved > 0 || timed_out {
            failures.push(format!(
                "{unresolved} files never answered within {} s",
                config.time_limit.as_secs()
            ));
        }
        for flaw in Flaw::ALL_BAD {
            if let Some(reason) = expected_exit(flaw)
                && !tally.exits.contains_key(&kind(&reason))
            {
                failures.push(format!(
                    "no {} seen (a {} should cause one)",
                    kind(&reason),
                    flaw.name()
                ));
            }
        }
        if tally.rejected == 0 {
            failures.push("no file was rejected".into());
        }
        if tally.gave_up {
            failures.push("the supervisor gave up".into());
        }
        if tally.restarts != tally.exits_total {
            failures.push(format!(
                "{} exits but {} restarts",
                tally.exits_total, tally.restarts
            ));
        }
        failures.extend(tally.wrong.iter().cloned());
        if failures.is_empty() {
            println!("ok: the UI never stalled, every crash stayed in its child");
            ExitCode::SUCCESS
        } else {
            for failure in &failures {
                eprintln!("FAILED: {failure}");
            }
            ExitCode::FAILURE
        }
    }

    fn record(tally: &mut Tally, file: &File, reply: &Reply) {
        let line = match reply {
            Ok(decoded) => {
                tally.decoded += 1;
                tally.decoded_bytes += decoded.len;
                tally.pids.insert(decoded.pid);
                None
            }
            Err(AskError::Failed(why)) => {
                tally.rejected += 1;
                Some(format!("rejected: {why}"))
            }
            Err(AskError::Dead(reason)) => Some(format!("decoder died: {reason}")),
            Err(other) => Some(format!("unexpected: {other}")),
        };
        if let Some(line) = line {
            println!("    file #{:>3} ({}): {line}", file.index, file.flaw.name());
        }
        if !as_expected(file, reply) {
            tally.wrong.push(format!(
                "file #{} ({}): got {reply:?}",
                file.index,
                file.flaw.name()
            ));
        }
    }
}

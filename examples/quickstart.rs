//! The smallest useful program: spawn an isolate, ask it (with requests
//! whose answers are typed per message), offload a one-shot computation
//! with `run`, move a big buffer without copying, see a crash come back as
//! a value, and a supervisor restart a crashed isolate, all from a loop
//! that never blocks.

use std::time::{Duration, Instant};

use isolates::supervisor::{ChildSpec, SupervisionEvent, Supervisor};
use isolates::{AskError, Context, ExitReason, Isolate, IsolateBuilder, Request, Transfer, run};
use serde::{Deserialize, Serialize};

/// Keeps a histogram of the bytes it is sent; the histogram never leaves it.
struct Histogram {
    counts: Vec<u64>,
}

/// Count the bytes of this buffer (moved, not copied); answers how many
/// bytes it has counted in all.
#[derive(Serialize, Deserialize)]
struct Add(Transfer);

/// Which byte value is most common so far, and how often?
#[derive(Serialize, Deserialize)]
struct Mode;

#[derive(Serialize, Deserialize)]
enum Msg {
    Add(Add),
    Mode(Mode),
    /// Crash on purpose, to show what a crash looks like from outside.
    Crash,
}

#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Counted(u64),
    Mode(u8, u64),
}

impl Isolate for Histogram {
    type Args = ();
    type Message = Msg;
    type Reply = Answer;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Histogram {
            counts: vec![0; 256],
        })
    }

    fn handle(&mut self, msg: Msg, _: &mut Context<Self>) -> Result<Answer, String> {
        match msg {
            Msg::Add(Add(buffer)) => {
                for byte in buffer.into_vec() {
                    self.counts[byte as usize] += 1;
                }
                Ok(Answer::Counted(self.counts.iter().sum()))
            }
            Msg::Mode(Mode) => {
                let (value, count) = self
                    .counts
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, c)| **c)
                    .unwrap_or((0, &0));
                Ok(Answer::Mode(value as u8, *count))
            }
            Msg::Crash => panic!("asked to crash"),
        }
    }
}

// Each request names its own answer: `histogram.request(Mode)` resolves to
// `(u8, u64)`, with no `Answer` to match at the call site.
impl Request<Histogram> for Add {
    type Reply = u64;
    fn into_message(self) -> Msg {
        Msg::Add(self)
    }
    fn from_reply(reply: Answer) -> Option<u64> {
        match reply {
            Answer::Counted(n) => Some(n),
            Answer::Mode(..) => None,
        }
    }
}

impl Request<Histogram> for Mode {
    type Reply = (u8, u64);
    fn into_message(self) -> Msg {
        Msg::Mode(self)
    }
    fn from_reply(reply: Answer) -> Option<(u8, u64)> {
        match reply {
            Answer::Mode(value, count) => Some((value, count)),
            Answer::Counted(_) => None,
        }
    }
}

fn collatz_steps(limit: u64) -> (u64, u32) {
    (1..limit)
        .map(|start| {
            let (mut n, mut steps) = (start, 0u32);
            while n != 1 {
                n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
                steps += 1;
            }
            (start, steps)
        })
        .max_by_key(|&(_, steps)| steps)
        .unwrap_or((0, 0))
}

fn main() {
    let timeout = Duration::from_secs(10);

    // 1. An isolate with private state.
    let histogram = IsolateBuilder::new()
        .name("histogram")
        .spawn::<Histogram>(())
        .expect("spawn");
    let buffer: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let mib = buffer.len() >> 20;
    let started = Instant::now();
    let counted = histogram.request(Add(Transfer::new(buffer)));
    println!(
        "moved a {mib} MiB buffer into {:?} in {:?}",
        histogram.name(),
        started.elapsed()
    );

    // 2. One-shot work, polled from a "frame loop" that never blocks.
    let mut heavy = run(collatz_steps, 300_000);
    let mut mode = histogram.request(Mode);
    let (mut frames, mut best, mut most) = (0u32, None, None);
    let frame_loop = Instant::now();
    while best.is_none() || most.is_none() {
        frames += 1;
        if let Some(result) = heavy.try_take() {
            best = Some(result.expect("run"));
        }
        if let Some(result) = mode.try_take() {
            most = Some(result.expect("ask"));
        }
        std::thread::sleep(Duration::from_millis(1)); // stands for drawing a frame
        assert!(frame_loop.elapsed() < timeout, "no answer in time");
    }
    let (start, steps) = best.unwrap_or_default();
    let (value, count) = most.unwrap_or_default();
    println!("{frames} frames drawn while the work ran elsewhere");
    println!("longest Collatz chain below 300000 starts at {start} ({steps} steps)");
    println!("most common byte: {value} ({count} times)");
    let total = counted.wait().expect("add");
    assert_eq!(total, 64 << 20);
    println!("bytes counted: {total}");

    // 3. A crash is a value: the caller and the exit listeners are told.
    match histogram.ask_timeout(Msg::Crash, timeout) {
        Err(AskError::Panicked(message)) => println!("the isolate panicked: {message}"),
        other => println!("unexpected: {other:?}"),
    }
    let reason = histogram.join(timeout);
    println!("exit reason: {reason:?}");
    assert!(matches!(reason, Some(ExitReason::Panicked(_))));

    // 4. Under a supervisor, a crash is followed by a restart: the same
    //    handle reaches the new incarnation, and nothing queued is lost.
    let supervisor = Supervisor::builder()
        .name("root")
        .restart_intensity(3, Duration::from_secs(5))
        .child(ChildSpec::worker::<Histogram>("histogram", ()))
        .spawn()
        .expect("supervisor");
    let (events_tx, events) = isolates::port::unbounded::<SupervisionEvent>();
    supervisor.add_event_listener(events_tx);
    let supervised = supervisor.worker::<Histogram>("histogram").expect("child");
    let mut crash = supervised.ask_pending(Msg::Crash);
    let mut after = supervised.request(Mode); // queued behind the crash
    println!("crash: {:?}", crash.wait_timeout(timeout));
    println!(
        "queued ask, answered by the restarted isolate: {:?}",
        after.wait_timeout(timeout)
    );
    supervisor.stop();
    println!("supervisor stopped: {:?}", supervisor.join(timeout));
    for event in events.try_iter() {
        println!("  event: {event:?}");
    }
}

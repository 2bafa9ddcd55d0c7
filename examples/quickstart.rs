//! The smallest useful program: spawn an isolate, ask it, offload a one-shot
//! computation with `run`, move a big buffer without copying, see a crash
//! come back as a value, and a supervisor restart a crashed isolate, all
//! from a loop that never blocks.

use std::time::{Duration, Instant};

use isolates::supervisor::{ChildSpec, SupervisionEvent, Supervisor};
use isolates::{AskError, Context, ExitReason, Isolate, IsolateBuilder, Transfer, run};

/// Keeps a histogram of the bytes it is sent; the histogram never leaves it.
struct Histogram {
    counts: Vec<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Request {
    /// Count the bytes of this buffer (moved, not copied).
    Add(Transfer),
    /// Which byte value is most common so far?
    Mode,
    /// Crash on purpose, to show what a crash looks like from outside.
    Crash,
}

impl Isolate for Histogram {
    type Args = ();
    type Message = Request;
    type Reply = (u8, u64);
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Histogram {
            counts: vec![0; 256],
        })
    }

    fn handle(&mut self, req: Request, _: &mut Context<Self>) -> Result<(u8, u64), String> {
        match req {
            Request::Add(buffer) => {
                for byte in buffer.into_vec() {
                    self.counts[byte as usize] += 1;
                }
            }
            Request::Mode => {}
            Request::Crash => panic!("asked to crash"),
        }
        let (value, count) = self
            .counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .unwrap_or((0, &0));
        Ok((value as u8, *count))
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
    histogram
        .cast(Request::Add(Transfer::new(buffer)))
        .expect("cast");
    println!(
        "moved a {mib} MiB buffer into {:?} in {:?}",
        histogram.name(),
        started.elapsed()
    );

    // 2. One-shot work, polled from a "frame loop" that never blocks.
    let mut heavy = run(collatz_steps, 300_000);
    let mut mode = histogram.ask_pending(Request::Mode);
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

    // 3. A crash is a value: the caller and the exit listeners are told.
    match histogram.ask(Request::Crash, timeout) {
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
    let mut crash = supervised.ask_pending(Request::Crash);
    let mut after = supervised.ask_pending(Request::Mode); // queued behind the crash
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

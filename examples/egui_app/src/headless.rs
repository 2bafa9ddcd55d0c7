//! `--headless`: the app's own `show`, driven by `egui::Context::run_ui` on
//! synthetic input, without a window (no eframe, no winit, no display).
//!
//! The driver behaves as eframe's event loop does: a 60 Hz clock, and a
//! frame only on a tick that brings input or after egui asked for a repaint
//! (the app's own requests, and the pool's through `MainThread`'s waker).
//! It applies the texture updates to images of its own, as a renderer
//! would upload them, and tessellates each frame.
//!
//! The script zooms twice in one frame, clicks the image to zoom there,
//! asks for more detail and cancels a frame later, then asks for more
//! detail again and lets that render finish. Then it checks: no frame's
//! update took longer than the budget, every job sent came back, the image
//! the renderer holds is the one a single thread computes, the progress
//! added up, the cancel dropped unsent tiles, and the idle app stopped
//! repainting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eframe::egui;
use egui::{ColorImage, Event, Key, Modifiers, PointerButton, Pos2, TextureId, ViewportId};

use crate::app::{FractalApp, IMAGE};
use crate::fractal::render_image;

/// One tick of a 60 Hz display.
const TICK: Duration = Duration::from_micros(16_667);
/// The window's size, in points.
const SCREEN: egui::Vec2 = egui::vec2(960.0, 640.0);
/// How long the work may take to finish after the script ends.
const SETTLE: Duration = Duration::from_secs(120);
/// Ticks watched once the app is idle; the second half must draw nothing.
const QUIET_TICKS: u64 = 60;
/// The fewest frames the script fits in.
pub(crate) const MIN_FRAMES: u64 = 60;

/// What the headless run is asked to do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// Ticks of the scripted part.
    pub(crate) frames: u64,
    /// The most one frame's update may take.
    pub(crate) budget: Duration,
}

/// When the next frame is due, as egui's repaint requests say.
#[derive(Clone, Default)]
struct RepaintClock(Arc<Mutex<Option<Instant>>>);

impl RepaintClock {
    fn request(&self, delay: Duration) {
        let Some(at) = Instant::now().checked_add(delay) else {
            return; // "never"
        };
        let mut due = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *due = Some(due.map_or(at, |d| d.min(at)));
    }

    /// Whether a frame is due now; clears the request if so.
    fn take_due(&self, now: Instant) -> bool {
        let mut due = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if due.is_some_and(|d| d <= now) {
            *due = None;
            true
        } else {
            false
        }
    }
}

/// The textures as a renderer holds them, updated from each frame's deltas.
#[derive(Default)]
struct SoftTextures {
    images: HashMap<TextureId, ColorImage>,
    uploaded_bytes: u64,
}

impl SoftTextures {
    fn apply(&mut self, delta: &mut egui::TexturesDelta) -> Result<(), String> {
        for (id, updates) in delta.set.drain() {
            for update in updates {
                let egui::ImageData::Color(image) = &update.image;
                self.uploaded_bytes += (image.pixels.len() * 4) as u64;
                match update.pos {
                    None => {
                        self.images.insert(id, (**image).clone());
                    }
                    Some([x, y]) => {
                        let target = self.images.get_mut(&id).ok_or_else(|| {
                            format!("a partial update of texture {id:?}, never set")
                        })?;
                        let [w, h] = image.size;
                        if x + w > target.size[0] || y + h > target.size[1] {
                            return Err(format!(
                                "an update at ({x}, {y}) of {w}x{h} overflows texture {id:?}"
                            ));
                        }
                        for row in 0..h {
                            let to = (y + row) * target.size[0] + x;
                            target.pixels[to..to + w]
                                .copy_from_slice(&image.pixels[row * w..(row + 1) * w]);
                        }
                    }
                }
            }
        }
        for id in delta.free.drain() {
            self.images.remove(&id);
        }
        Ok(())
    }
}

fn key(key: Key) -> [Event; 2] {
    [true, false].map(|pressed| Event::Key {
        key,
        physical_key: None,
        pressed,
        repeat: false,
        modifiers: Modifiers::NONE,
    })
}

/// The synthetic input of tick `tick` of `frames`.
fn script(tick: u64, frames: u64, app: &FractalApp) -> Vec<Event> {
    let at = |fraction: f64| (frames as f64 * fraction) as u64;
    let (zoom, click, cancel, last) = (at(0.1), at(0.25), at(0.45), at(0.6));
    // Where the click lands: left of the centre, on the set's edge.
    let target = app
        .image_rect()
        .map_or(Pos2::ZERO, |r| r.min + r.size() * egui::vec2(0.3, 0.45));
    let button = |pressed| Event::PointerButton {
        pos: target,
        button: PointerButton::Primary,
        pressed,
        modifiers: Modifiers::NONE,
    };
    match tick {
        // Two zooms within one frame, as a quick scroll gives.
        t if t == zoom => [key(Key::Plus), key(Key::Plus)].concat(),
        t if t == click => vec![Event::PointerMoved(target)],
        t if t == click + 1 => vec![button(true)],
        t if t == click + 2 => vec![button(false)],
        t if t == cancel => key(Key::R).to_vec(),
        t if t == cancel + 1 => key(Key::Escape).to_vec(),
        t if t == last => key(Key::H).to_vec(),
        _ => Vec::new(),
    }
}

/// What the frames took.
#[derive(Default)]
struct FrameTimes {
    /// Each update's time, less its wait for a CPU.
    updates: Vec<Duration>,
    worst_update: Duration,
    /// The worst update's wall time, waits for a CPU included.
    worst_wall: Duration,
    worst_frame: Duration,
    /// Time updates spent runnable, waiting for a CPU.
    cpu_wait: Duration,
    over_budget: u64,
}

/// Time this thread has spent runnable but waiting for a CPU, from Linux's
/// schedstat; `None` where the kernel does not say.
///
/// An update's wall time less this wait is what it spent running or
/// blocked: a wait on the pool counts against the budget, being preempted
/// by other programs on a busy machine does not.
fn cpu_wait() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn percentile(times: &[Duration], p: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Runs the app headless; `Err` says what went wrong.
pub(crate) fn run(options: Options) -> Result<(), String> {
    if options.frames < MIN_FRAMES {
        return Err(format!("--frames must be at least {MIN_FRAMES}"));
    }
    let ctx = egui::Context::default();
    let clock = RepaintClock::default();
    let on_request = clock.clone();
    ctx.set_request_repaint_callback(move |info| on_request.request(info.delay));
    let mut app =
        FractalApp::new(ctx.clone()).map_err(|e| format!("the tile pool did not start: {e}"))?;
    let mut textures = SoftTextures::default();
    let mut times = FrameTimes::default();
    let (mut frames_run, mut primitives) = (0u64, 0usize);
    let mut idle_since = None;
    let mut quiet_frames = 0u64;
    let started = Instant::now();
    let mut tick = 0u64;
    loop {
        let tick_at = started + TICK * tick as u32;
        if let Some(rest) = tick_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
        let events = if tick < options.frames {
            script(tick, options.frames, &app)
        } else {
            Vec::new()
        };
        let now = Instant::now();
        if tick == 0 || !events.is_empty() || clock.take_due(now) {
            let raw = egui::RawInput {
                screen_rect: Some(egui::Rect::from_min_size(Pos2::ZERO, SCREEN)),
                time: Some(started.elapsed().as_secs_f64()),
                predicted_dt: TICK.as_secs_f32(),
                events,
                ..Default::default()
            };
            let (mut wall, mut waited) = (Duration::ZERO, Duration::ZERO);
            let mut output = ctx.run_ui(raw, |ui| {
                let (begun, wait_before) = (Instant::now(), cpu_wait());
                app.show(ui);
                wall += begun.elapsed();
                if let (Some(before), Some(after)) = (wait_before, cpu_wait()) {
                    waited += after.saturating_sub(before);
                }
            });
            let update = wall.saturating_sub(waited);
            textures.apply(&mut output.textures_delta)?;
            primitives += ctx
                .tessellate(std::mem::take(&mut output.shapes), output.pixels_per_point)
                .len();
            if let Some(viewport) = output.viewport_output.get(&ViewportId::ROOT) {
                clock.request(viewport.repaint_delay);
            }
            let frame = now.elapsed();
            frames_run += 1;
            times.updates.push(update);
            if update > times.worst_update {
                times.worst_update = update;
                times.worst_wall = wall;
            }
            times.cpu_wait += waited;
            times.worst_frame = times.worst_frame.max(frame);
            if update > options.budget {
                times.over_budget += 1;
                eprintln!(
                    "frame {frames_run} (tick {tick}): update took {:.2} ms ({:.2} ms with its wait for a CPU), over the {:.1} ms budget",
                    ms(update),
                    ms(wall),
                    ms(options.budget)
                );
            }
            if idle_since.is_some_and(|since| tick >= since + QUIET_TICKS / 2) {
                quiet_frames += 1;
            }
        }
        tick += 1;
        if tick >= options.frames {
            if app.is_idle() {
                let since = *idle_since.get_or_insert(tick);
                if tick >= since + QUIET_TICKS {
                    break;
                }
            } else if started.elapsed() > TICK * options.frames as u32 + SETTLE {
                let s = app.stats();
                return Err(format!(
                    "a submitted job did not complete: {} sent, {} came back, after {:?}",
                    s.submitted,
                    s.delivered,
                    started.elapsed()
                ));
            }
        }
    }

    let s = app.stats();
    println!(
        "headless: {tick} ticks at 60 Hz, {frames_run} frames drawn ({} ticks idle), {primitives} primitives tessellated",
        tick - frames_run
    );
    println!(
        "frame update: p50 {:.2} ms, p99 {:.2} ms, worst {:.2} ms (budget {:.1} ms; {:.2} ms with its wait for a CPU); updates waited {:.1} ms in all for a CPU; worst whole frame {:.2} ms",
        ms(percentile(&times.updates, 50)),
        ms(percentile(&times.updates, 99)),
        ms(times.worst_update),
        ms(options.budget),
        ms(times.worst_wall),
        ms(times.cpu_wait),
        ms(times.worst_frame),
    );
    println!(
        "jobs: {} sent, {} done, {} painted, {} stale (view changed), never sent: {} (view changed) and {} (cancelled); {} failed; renders: {} started, {} finished, {} cancelled; waker calls {}; {} KiB of texture updates",
        s.submitted,
        s.delivered,
        s.painted,
        s.stale,
        s.superseded,
        s.cancelled,
        s.failed,
        s.renders_started,
        s.renders_finished,
        s.renders_cancelled,
        app.wakes(),
        textures.uploaded_bytes / 1024,
    );

    let mut problems = Vec::new();
    if times.over_budget > 0 {
        problems.push(format!(
            "{} frames' updates took longer than {:.1} ms (worst {:.2} ms)",
            times.over_budget,
            ms(options.budget),
            ms(times.worst_update)
        ));
    }
    if s.delivered != s.submitted {
        problems.push(format!(
            "{} of {} submitted jobs did not complete",
            s.submitted - s.delivered,
            s.submitted
        ));
    }
    if s.failed > 0 {
        problems.push(format!(
            "{} tiles failed: {}",
            s.failed,
            app.last_error().unwrap_or("?")
        ));
    }
    let (view, finished, (rows_done, rows_total)) = app.current();
    if !finished {
        problems.push("the last render did not finish".into());
    } else {
        if rows_done != rows_total {
            problems.push(format!("progress said {rows_done} rows of {rows_total}"));
        }
        let expected = render_image(&view, IMAGE);
        match textures.images.get(&app.texture_id()) {
            None => problems.push("the renderer has no image texture".into()),
            Some(shown) => {
                let wrong: Vec<usize> = shown
                    .pixels
                    .iter()
                    .zip(&expected)
                    .enumerate()
                    .filter(|(_, (got, want))| got.to_array() != **want)
                    .map(|(i, _)| i)
                    .collect();
                if shown.pixels.len() != expected.len() || !wrong.is_empty() {
                    let first = wrong
                        .first()
                        .map(|i| (i % IMAGE[0] as usize, i / IMAGE[0] as usize));
                    problems.push(format!(
                        "{} pixels differ from a one-thread render (first at {first:?})",
                        wrong.len()
                    ));
                } else {
                    println!(
                        "image: {}x{} pixels match a one-thread render of the final view",
                        IMAGE[0], IMAGE[1]
                    );
                }
            }
        }
    }
    if s.renders_cancelled == 0 || s.cancelled == 0 {
        problems.push("the cancel dropped no unsent tiles".into());
    }
    if app.wakes() == 0 {
        problems.push("the pool's waker was never called".into());
    }
    if quiet_frames > 0 {
        problems.push(format!(
            "the idle app kept repainting: {quiet_frames} frames with nothing to do"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

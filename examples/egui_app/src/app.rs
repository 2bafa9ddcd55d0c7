//! The app: one `show` per frame, the same in the window and in the
//! headless run. The frame loop never waits on the pool: it submits tiles,
//! and a [`MainThread`] hands back their progress and pixels during a
//! bounded `pump`. Its waker asks egui for a repaint, so an idle app draws
//! nothing until a tile lands.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eframe::egui;
use egui::{Color32, ColorImage, Key, Modifiers, TextureHandle, TextureOptions};
use isolates::TaskError;
use isolates::pool::{MainThread, Pool, default_workers};

use crate::fractal::{TileJob, Tiles, View, tiles};

/// The image, in pixels.
pub(crate) const IMAGE: [u32; 2] = [640, 400];
/// Tile side, in pixels: 260 tiles an image.
const TILE: u32 = 32;
/// The most of a frame that delivering results may take.
const PUMP_BUDGET: Duration = Duration::from_millis(3);
/// How often the progress bar moves while tiles run (a tile landing
/// repaints at once, through the waker).
const PROGRESS_REFRESH: Duration = Duration::from_millis(100);

/// What a watched tile hands back, during a pump, on this thread.
enum Delivery {
    /// Rows finished.
    Progress { generation: u64, rows: u32 },
    /// The tile's pixels, or why there are none.
    Done {
        generation: u64,
        job: TileJob,
        result: Result<Vec<u8>, TaskError<String>>,
    },
}

/// Counters the headless run checks and the status line shows.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    /// Tiles handed to the pool.
    pub(crate) submitted: u64,
    /// Tiles whose result came back (any result).
    pub(crate) delivered: u64,
    /// Tiles painted.
    pub(crate) painted: u64,
    /// Tiles of a view no longer shown, dropped when they came back.
    pub(crate) stale: u64,
    /// Tiles never sent because the view changed first.
    pub(crate) superseded: u64,
    /// Tiles never sent because the render was cancelled.
    pub(crate) cancelled: u64,
    /// Tiles that failed.
    pub(crate) failed: u64,
    pub(crate) renders_started: u64,
    pub(crate) renders_finished: u64,
    pub(crate) renders_cancelled: u64,
}

/// One image being rendered.
struct Render {
    generation: u64,
    view: View,
    /// Tiles not sent yet (the pool holds only a few at a time, so a cancel
    /// or a new view drops the rest at once).
    queue: VecDeque<TileJob>,
    tiles_total: u64,
    tiles_done: u64,
    rows_total: u64,
    rows_done: u64,
    started: Instant,
    took: Option<Duration>,
    cancelled: bool,
}

impl Render {
    fn is_finished(&self) -> bool {
        self.tiles_done == self.tiles_total
    }
}

/// The app's state; not `Send` (the `MainThread` and the inbox live on the
/// UI thread).
pub(crate) struct FractalApp {
    ctx: egui::Context,
    pool: Pool<Tiles>,
    main: MainThread,
    /// Filled by `MainThread`'s callbacks during `pump`, drained right after.
    inbox: Rc<RefCell<Vec<Delivery>>>,
    /// Tiles in the pool, of any render.
    in_flight: usize,
    /// The most tiles in the pool at once: two per worker keeps each busy.
    window: usize,
    render: Render,
    next_generation: u64,
    texture: TextureHandle,
    stats: Stats,
    /// Calls of the waker (from worker threads).
    wakes: Arc<AtomicU64>,
    last_error: Option<String>,
    /// Where the image was drawn last frame (the headless run clicks it).
    image_rect: Option<egui::Rect>,
}

impl FractalApp {
    /// The app, its pool started and the first render queued.
    pub(crate) fn new(ctx: egui::Context) -> Result<Self, isolates::SpawnError> {
        let workers = default_workers();
        // Workers run below the UI thread's priority (the pool's default).
        let pool = Pool::<Tiles>::builder()
            .name("tiles")
            .workers(workers)
            .spawn(())?;
        let mut main = MainThread::new();
        let wakes = Arc::new(AtomicU64::new(0));
        let (repaint, count) = (ctx.clone(), Arc::clone(&wakes));
        // Runs on a worker thread when a tile resolves: egui's repaint
        // request is thread-safe and wakes eframe's event loop.
        main.set_waker(move || {
            count.fetch_add(1, Ordering::Relaxed);
            repaint.request_repaint();
        });
        let blank = ColorImage::filled([IMAGE[0] as usize, IMAGE[1] as usize], Color32::BLACK);
        let texture = ctx.load_texture("mandelbrot", blank, TextureOptions::NEAREST);
        let mut app = FractalApp {
            ctx,
            pool,
            main,
            inbox: Rc::default(),
            in_flight: 0,
            window: (2 * workers).clamp(2, 64),
            render: Render {
                generation: 0,
                view: View::home(),
                queue: VecDeque::new(),
                tiles_total: 0,
                tiles_done: 0,
                rows_total: 0,
                rows_done: 0,
                started: Instant::now(),
                took: None,
                cancelled: false,
            },
            next_generation: 1,
            texture,
            stats: Stats::default(),
            wakes,
            last_error: None,
            image_rect: None,
        };
        app.start_render(View::home());
        Ok(app)
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    pub(crate) fn texture_id(&self) -> egui::TextureId {
        self.texture.id()
    }

    pub(crate) fn image_rect(&self) -> Option<egui::Rect> {
        self.image_rect
    }

    /// The view of the latest render, whether it finished, and its rows
    /// (done, total).
    pub(crate) fn current(&self) -> (View, bool, (u64, u64)) {
        let r = &self.render;
        (r.view, r.is_finished(), (r.rows_done, r.rows_total))
    }

    pub(crate) fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Nothing queued, nothing in the pool, nothing left to deliver.
    pub(crate) fn is_idle(&self) -> bool {
        self.render.queue.is_empty() && self.in_flight == 0 && self.main.watching() == 0
    }

    /// Starts rendering `view`; tiles of the previous view still in the
    /// pool are dropped when they come back.
    fn start_render(&mut self, view: View) {
        if !self.render.is_finished() && !self.render.cancelled {
            self.stats.superseded += self.render.queue.len() as u64;
        }
        let jobs = tiles(view, IMAGE, TILE);
        let rows_total = jobs.iter().map(|j| u64::from(j.size[1])).sum();
        self.render = Render {
            generation: self.next_generation,
            view,
            tiles_total: jobs.len() as u64,
            queue: jobs.into(),
            tiles_done: 0,
            rows_total,
            rows_done: 0,
            started: Instant::now(),
            took: None,
            cancelled: false,
        };
        self.next_generation += 1;
        self.stats.renders_started += 1;
        self.last_error = None;
    }

    /// Stops the render: unsent tiles are dropped, tiles in the pool still
    /// land (they belong to this view).
    fn cancel(&mut self) {
        if self.render.is_finished() || self.render.cancelled {
            return;
        }
        self.stats.cancelled += self.render.queue.len() as u64;
        self.render.queue.clear();
        self.render.cancelled = true;
        self.stats.renders_cancelled += 1;
    }

    /// Sends tiles until the pool holds `window` of them.
    fn top_up(&mut self) {
        while self.in_flight < self.window {
            let Some(job) = self.render.queue.pop_front() else {
                break;
            };
            let generation = self.render.generation;
            let (progress, done) = (Rc::clone(&self.inbox), Rc::clone(&self.inbox));
            self.main.watch(
                self.pool.submit(job),
                move |rows| {
                    progress
                        .borrow_mut()
                        .push(Delivery::Progress { generation, rows })
                },
                move |result| {
                    done.borrow_mut().push(Delivery::Done {
                        generation,
                        job,
                        result,
                    })
                },
            );
            self.in_flight += 1;
            self.stats.submitted += 1;
        }
    }

    /// Delivers what the pool finished, within `PUMP_BUDGET`.
    fn collect(&mut self) {
        let started = Instant::now();
        self.main.pump(PUMP_BUDGET);
        if started.elapsed() >= PUMP_BUDGET {
            // More may be ready: its waker has already fired, so ask for
            // the next frame here.
            self.ctx.request_repaint();
        }
        let deliveries = std::mem::take(&mut *self.inbox.borrow_mut());
        for delivery in deliveries {
            match delivery {
                Delivery::Progress { generation, rows } => {
                    if generation == self.render.generation {
                        self.render.rows_done += u64::from(rows);
                    }
                }
                Delivery::Done {
                    generation,
                    job,
                    result,
                } => {
                    self.in_flight -= 1;
                    self.stats.delivered += 1;
                    self.finish_tile(generation, &job, result);
                }
            }
        }
    }

    fn finish_tile(
        &mut self,
        generation: u64,
        job: &TileJob,
        result: Result<Vec<u8>, TaskError<String>>,
    ) {
        match result {
            Ok(_) if generation != self.render.generation => self.stats.stale += 1,
            Ok(rgba) => {
                let size = [job.size[0] as usize, job.size[1] as usize];
                let pixels = ColorImage::from_rgba_premultiplied(size, &rgba);
                let at = [job.origin[0] as usize, job.origin[1] as usize];
                self.texture
                    .set_partial(at, pixels, TextureOptions::NEAREST);
                self.stats.painted += 1;
                self.render.tiles_done += 1;
                if self.render.is_finished() {
                    self.render.took = Some(self.render.started.elapsed());
                    self.stats.renders_finished += 1;
                }
            }
            Err(error) => {
                self.stats.failed += 1;
                self.last_error = Some(format!("a tile failed: {error}"));
            }
        }
    }

    /// Zooms by `factor` around pixel `(x, y)` of the image.
    fn zoom(&mut self, factor: f64, x: f64, y: f64) {
        let view = self.render.view.zoomed(factor, IMAGE, x, y);
        self.start_render(view);
    }

    fn zoom_centre(&mut self, factor: f64) {
        self.zoom(factor, f64::from(IMAGE[0]) / 2.0, f64::from(IMAGE[1]) / 2.0);
    }

    /// The same view again with twice the iterations.
    fn more_detail(&mut self) {
        let mut view = self.render.view;
        view.max_iter = view.max_iter.saturating_mul(2);
        self.start_render(view);
    }

    /// Keyboard shortcuts; each press counts, even several in one frame.
    fn keys(&mut self) {
        let presses = |key| {
            self.ctx
                .input_mut(|i| i.count_and_consume_key(Modifiers::NONE, key))
        };
        let mut actions = Vec::new();
        for (key, action) in [
            (Key::Plus, Action::ZoomIn),
            (Key::Equals, Action::ZoomIn),
            (Key::Minus, Action::ZoomOut),
            (Key::Escape, Action::Cancel),
            (Key::R, Action::MoreDetail),
            (Key::H, Action::Home),
        ] {
            actions.extend(std::iter::repeat_n(action, presses(key)));
        }
        for action in actions {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::ZoomIn => self.zoom_centre(0.5),
            Action::ZoomOut => self.zoom_centre(2.0),
            Action::Cancel => self.cancel(),
            Action::MoreDetail => self.more_detail(),
            Action::Home => self.start_render(View::home()),
        }
    }

    /// One frame: input, results, new work, drawing. Never blocks.
    pub(crate) fn show(&mut self, ui: &mut egui::Ui) {
        self.keys();
        self.collect();
        let rendering = !self.render.is_finished() && !self.render.cancelled;

        egui::Panel::top("controls").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Mandelbrot tiles on an isolates pool");
                for (label, action) in [
                    ("Zoom in (+)", Action::ZoomIn),
                    ("Zoom out (-)", Action::ZoomOut),
                    ("More detail (R)", Action::MoreDetail),
                    ("Home (H)", Action::Home),
                ] {
                    if ui.button(label).clicked() {
                        self.act(action);
                    }
                }
                if ui.add_enabled(rendering, egui::Button::new("Cancel (Esc)")).clicked() {
                    self.act(Action::Cancel);
                }
            });
            let r = &self.render;
            let fraction = r.rows_done as f32 / r.rows_total.max(1) as f32;
            let text = match (r.took, r.cancelled) {
                (Some(took), _) => format!("{} tiles in {:.0} ms", r.tiles_total, took.as_secs_f64() * 1e3),
                (None, true) => format!("cancelled: {} of {} tiles", r.tiles_done, r.tiles_total),
                (None, false) => format!("{} of {} tiles", r.tiles_done, r.tiles_total),
            };
            ui.add(egui::ProgressBar::new(fraction).text(text));
            let s = &self.stats;
            ui.label(format!(
                "view ({:.6}, {:.6}) width {:.2e}, {} iterations | pool: {} in flight, {} sent, {} painted, {} stale, {} never sent | waker calls {}",
                r.view.cx,
                r.view.cy,
                r.view.span,
                r.view.max_iter,
                self.in_flight,
                s.submitted,
                s.painted,
                s.stale,
                s.superseded + s.cancelled,
                self.wakes(),
            ));
            if let Some(error) = &self.last_error {
                ui.colored_label(Color32::RED, error);
            }
        });

        egui::CentralPanel::default().show(ui, |ui| {
            let room = ui.available_size();
            let aspect = IMAGE[0] as f32 / IMAGE[1] as f32;
            let width = room.x.min(room.y * aspect).max(1.0);
            let size = egui::vec2(width, width / aspect);
            let response = ui.add(
                egui::Image::new(&self.texture)
                    .fit_to_exact_size(size)
                    .sense(egui::Sense::click()),
            );
            self.image_rect = Some(response.rect);
            if response.clicked()
                && let Some(pos) = response.hover_pos()
            {
                // Click to zoom in around that point.
                let at = (pos - response.rect.min) / response.rect.size();
                let (x, y) = (
                    f64::from(at.x) * f64::from(IMAGE[0]),
                    f64::from(at.y) * f64::from(IMAGE[1]),
                );
                self.zoom(0.5, x, y);
            }
        });

        // After the buttons and clicks: what they started goes out now.
        self.top_up();
        if (!self.render.is_finished() && !self.render.cancelled) || self.in_flight > 0 {
            // Progress is read during a pump; tiles landing wake us anyway.
            self.ctx.request_repaint_after(PROGRESS_REFRESH);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    ZoomIn,
    ZoomOut,
    Cancel,
    MoreDetail,
    Home,
}

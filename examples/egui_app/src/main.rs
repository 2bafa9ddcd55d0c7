//! An egui app whose frame loop hands Mandelbrot tiles to an `isolates`
//! pool and repaints when they land, through `MainThread`'s waker: the
//! picture fills in tile by tile with a progress bar, a view change drops
//! the tiles of the old one, and Cancel stops a render. An idle app draws
//! nothing.
//!
//! ```text
//! cargo run --release -p isolates-egui-example                 # a window
//!     keys: + / - zoom, R more detail, H home, Esc cancel; click the image to zoom there
//! cargo run --release -p isolates-egui-example -- --headless --frames 300 [--budget-ms 8]
//! ```
//!
//! `--headless` needs no display: it drives the same app code with egui
//! alone, checks it, and exits non-zero if a frame went over budget, a job
//! did not complete or the image was wrong (see `headless.rs`).

mod app;
mod fractal;
mod headless;

use std::process::ExitCode;
use std::time::Duration;

use eframe::egui;

use crate::app::FractalApp;

/// eframe calls `ui` when egui asked for a repaint or input arrived.
impl eframe::App for FractalApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

fn window() -> Result<(), String> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("isolates: Mandelbrot tiles on a pool")
            .with_inner_size([960.0, 640.0]),
        ..Default::default()
    };
    eframe::run_native(
        "isolates-egui-example",
        options,
        Box::new(|cc| Ok(Box::new(FractalApp::new(cc.egui_ctx.clone())?))),
    )
    .map_err(|e| format!("the window could not open: {e} (no display? try --headless)"))
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("{problem}\nusage: isolates-egui-example [--headless [--frames N] [--budget-ms MS]]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut headless = false;
    let mut options = headless::Options {
        frames: 300,
        budget: Duration::from_millis(8),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--headless" => headless = true,
            "--frames" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n >= headless::MIN_FRAMES => options.frames = n,
                _ => {
                    return usage(&format!(
                        "--frames needs a number, at least {}",
                        headless::MIN_FRAMES
                    ));
                }
            },
            "--budget-ms" => match args.next().and_then(|n| n.parse::<f64>().ok()) {
                Some(ms) if ms > 0.0 && ms.is_finite() => {
                    options.budget = Duration::from_secs_f64(ms / 1e3)
                }
                _ => return usage("--budget-ms needs a positive number of milliseconds"),
            },
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let result = if headless {
        headless::run(options)
    } else {
        window()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("error: {problem}");
            ExitCode::FAILURE
        }
    }
}

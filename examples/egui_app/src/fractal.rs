//! The heavy part: Mandelbrot tiles, computed by a pool's workers. The same
//! pixel function renders a whole image on one thread, which the headless
//! mode compares with what the app showed.

use isolates::pool::{TaskContext, Worker};
use serde::{Deserialize, Serialize};

/// Rows a worker computes between two progress reports.
const ROWS_PER_REPORT: u32 = 8;

/// Where the image looks in the complex plane, and how hard.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct View {
    pub(crate) cx: f64,
    pub(crate) cy: f64,
    /// Width of the image in the complex plane.
    pub(crate) span: f64,
    pub(crate) max_iter: u32,
}

impl View {
    /// The whole set, at a detail that keeps every core busy for a while.
    pub(crate) fn home() -> Self {
        View {
            cx: -0.6,
            cy: 0.0,
            span: 3.2,
            max_iter: 1_500,
        }
    }

    /// The view `factor` times as wide, centred on the point under pixel
    /// `(x, y)` of an image of `size` pixels; deeper views get more
    /// iterations, so the edge stays sharp.
    pub(crate) fn zoomed(&self, factor: f64, size: [u32; 2], x: f64, y: f64) -> Self {
        let (cx, cy) = self.point(size, x, y);
        let max_iter = if factor < 1.0 {
            (f64::from(self.max_iter) * 1.15) as u32
        } else {
            ((f64::from(self.max_iter) / 1.15) as u32).max(200)
        };
        View {
            cx,
            cy,
            span: self.span * factor,
            max_iter,
        }
    }

    /// The complex number at the centre of pixel `(x, y)`.
    fn point(&self, size: [u32; 2], x: f64, y: f64) -> (f64, f64) {
        let scale = self.span / f64::from(size[0].max(1));
        (
            self.cx + (x - f64::from(size[0]) / 2.0) * scale,
            self.cy + (y - f64::from(size[1]) / 2.0) * scale,
        )
    }
}

/// The colour of pixel `(x, y)`: black inside the set, a smooth palette
/// outside.
pub(crate) fn pixel(view: &View, size: [u32; 2], x: u32, y: u32) -> [u8; 4] {
    let (cr, ci) = view.point(size, f64::from(x) + 0.5, f64::from(y) + 0.5);
    let (mut zr, mut zi, mut n) = (0.0f64, 0.0f64, 0u32);
    while n < view.max_iter && zr * zr + zi * zi <= 4.0 {
        let t = zr * zr - zi * zi + cr;
        zi = 2.0 * zr * zi + ci;
        zr = t;
        n += 1;
    }
    if n == view.max_iter {
        return [0, 0, 0, 255];
    }
    // Log scale: detail shows at any depth.
    let t = f64::from(n + 1).ln() / f64::from(view.max_iter + 1).ln();
    let channel =
        |phase: f64| (127.5 * (1.0 - (std::f64::consts::TAU * (t * 3.0 + phase)).cos())) as u8;
    [channel(0.0), channel(0.15), channel(0.35), 255]
}

/// One tile of the image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TileJob {
    pub(crate) view: View,
    /// The whole image, in pixels.
    pub(crate) image: [u32; 2],
    /// The tile's top-left pixel and size.
    pub(crate) origin: [u32; 2],
    pub(crate) size: [u32; 2],
}

/// The tiles of an image of `image` pixels, `tile` pixels square at most,
/// those nearest the centre first (they are what a person looks at).
pub(crate) fn tiles(view: View, image: [u32; 2], tile: u32) -> Vec<TileJob> {
    let mut jobs = Vec::new();
    for y in (0..image[1]).step_by(tile as usize) {
        for x in (0..image[0]).step_by(tile as usize) {
            jobs.push(TileJob {
                view,
                image,
                origin: [x, y],
                size: [tile.min(image[0] - x), tile.min(image[1] - y)],
            });
        }
    }
    let centre = |job: &TileJob| {
        let dx = i64::from(job.origin[0] + job.size[0] / 2) - i64::from(image[0] / 2);
        let dy = i64::from(job.origin[1] + job.size[1] / 2) - i64::from(image[1] / 2);
        dx * dx + dy * dy
    };
    jobs.sort_by_key(centre);
    jobs
}

/// Computes one tile row by row, RGBA; `row_done` is told after each row
/// and says whether to go on.
pub(crate) fn render_tile(job: &TileJob, mut row_done: impl FnMut(u32) -> bool) -> Option<Vec<u8>> {
    let [w, h] = job.size;
    let mut rgba = Vec::with_capacity(w as usize * h as usize * 4);
    for row in 0..h {
        for col in 0..w {
            rgba.extend_from_slice(&pixel(
                &job.view,
                job.image,
                job.origin[0] + col,
                job.origin[1] + row,
            ));
        }
        if !row_done(row + 1) {
            return None;
        }
    }
    Some(rgba)
}

/// The whole image on this thread, as the check the app's image must pass.
pub(crate) fn render_image(view: &View, image: [u32; 2]) -> Vec<[u8; 4]> {
    let mut pixels = Vec::with_capacity(image[0] as usize * image[1] as usize);
    for y in 0..image[1] {
        for x in 0..image[0] {
            pixels.push(pixel(view, image, x, y));
        }
    }
    pixels
}

/// The pool's worker: a tile in, its RGBA pixels out, progress in rows.
pub(crate) struct Tiles;

impl Worker for Tiles {
    type Args = ();
    type Input = TileJob;
    type Output = Vec<u8>;
    /// Rows finished since the last report.
    type Progress = u32;
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Tiles)
    }

    fn run(&mut self, job: TileJob, task: &TaskContext<'_, Self>) -> Result<Vec<u8>, String> {
        let mut reported = 0;
        let rgba = render_tile(&job, |rows| {
            if rows.is_multiple_of(ROWS_PER_REPORT) || rows == job.size[1] {
                task.progress(rows - reported);
                reported = rows;
            }
            !task.is_cancelled()
        });
        rgba.ok_or_else(|| "cancelled".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_image_once() {
        let image = [100, 70];
        let mut seen = vec![0u8; 100 * 70];
        for job in tiles(View::home(), image, 32) {
            for y in job.origin[1]..job.origin[1] + job.size[1] {
                for x in job.origin[0]..job.origin[0] + job.size[0] {
                    seen[(y * 100 + x) as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn a_tile_is_the_image_cut_out() {
        let (view, image) = (View::home(), [40, 30]);
        let whole = render_image(&view, image);
        let job = TileJob {
            view,
            image,
            origin: [16, 8],
            size: [16, 16],
        };
        let rgba = render_tile(&job, |_| true).expect("not stopped");
        for (i, px) in rgba.chunks(4).enumerate() {
            let (x, y) = (16 + i as u32 % 16, 8 + i as u32 / 16);
            assert_eq!(px, whole[(y * 40 + x) as usize]);
        }
    }

    #[test]
    fn the_set_is_black_and_the_outside_is_not() {
        let view = View::home();
        let size = [320, 200];
        // The pixel at the origin of the plane is inside; far left is out.
        let x0 = ((0.0 - view.cx) / view.span * 320.0 + 160.0) as u32;
        assert_eq!(pixel(&view, size, x0, 100), [0, 0, 0, 255]);
        assert_ne!(pixel(&view, size, 0, 0), [0, 0, 0, 255]);
    }
}

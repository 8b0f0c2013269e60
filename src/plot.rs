//! Small, self-contained PNG line plots ("top-1 accuracy vs MACs" charts).
//!
//! Everything is rasterised in-process into an RGB buffer: anti-aliased
//! polylines, markers, a light grid, tick labels, a legend and a title drawn
//! with a built-in 5x7 bitmap font. No system fonts, font files or network
//! access are needed at run time; the only dependency is the `png` encoder.
//!
//! ```no_run
//! use usnet::plot::{write_line_plot, Curve, PlotSpec};
//! let curves = vec![
//!     Curve::new("US-Net", vec![(5.0e6, 60.1), (12.3e6, 68.4), (20.0e6, 71.0)]),
//!     Curve::new("1.0x baseline", vec![(20.0e6, 70.2)]),
//! ];
//! let spec = PlotSpec { title: "CIFAR-10", x_label: "MACs", y_label: "Top-1 accuracy (%)" };
//! write_line_plot(std::path::Path::new("acc_vs_macs.png"), &spec, &curves).unwrap();
//! ```

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Width of the produced image in pixels.
pub const WIDTH: u32 = 900;
/// Height of the produced image in pixels.
pub const HEIGHT: u32 = 600;

/// One labelled series. Points are `(x, y)` = `(MACs, top-1 %)`; they are
/// plotted sorted by `x`, joined by a line (when there are two or more) and
/// marked individually. A single point is drawn as a marker only.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points }
    }
}

/// Title and axis labels. Text is rendered with a built-in ASCII font;
/// characters outside printable ASCII are shown as a small box
/// (except `×`, `–` and `—`, which map to `x` and `-`).
#[derive(Debug, Clone, Copy)]
pub struct PlotSpec<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: no curves given")]
    NoCurves,
    #[error("curve {label:?} has no points")]
    EmptyCurve { label: String },
    #[error("curve {label:?} has a non-finite point at index {index}: ({x}, {y})")]
    NonFinite { label: String, index: usize, x: f64, y: f64 },
    #[error("data range of the {axis} axis is too large to plot")]
    RangeTooLarge { axis: &'static str },
    #[error("I/O error writing plot {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("PNG encoding failed for plot {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: png::EncodingError,
    },
}

/// Renders the curves and writes a `WIDTH`x`HEIGHT` RGB PNG to `path`.
///
/// The file is written to `<path>.tmp` first and then renamed over `path`,
/// so readers never observe a half-written image. Invalid input (no curves,
/// a curve without points, NaN/infinite coordinates) is reported as an error
/// before anything is written.
pub fn write_line_plot(path: &Path, spec: &PlotSpec, curves: &[Curve]) -> Result<(), PlotError> {
    let canvas = render(spec, curves)?;
    let tmp = tmp_path(path);
    let io_err = |source| PlotError::Io { path: path.to_path_buf(), source };
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err)?;
        let mut out = BufWriter::new(file);
        encode_png(&mut out, canvas.w as u32, canvas.h as u32, &canvas.px)
            .map_err(|source| PlotError::Encode { path: path.to_path_buf(), source })?;
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn encode_png<W: Write>(w: W, width: u32, height: u32, rgb: &[u8]) -> Result<(), png::EncodingError> {
    let mut enc = png::Encoder::new(w, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()
}

// ---------------------------------------------------------------------------
// Layout and chart drawing
// ---------------------------------------------------------------------------

const PALETTE: [Rgb; 10] = [
    Rgb(0x1f, 0x77, 0xb4), // blue
    Rgb(0xff, 0x7f, 0x0e), // orange
    Rgb(0x2c, 0xa0, 0x2c), // green
    Rgb(0xd6, 0x27, 0x28), // red
    Rgb(0x94, 0x67, 0xbd), // purple
    Rgb(0x8c, 0x56, 0x4b), // brown
    Rgb(0xe3, 0x77, 0xc2), // pink
    Rgb(0x7f, 0x7f, 0x7f), // grey
    Rgb(0xbc, 0xbd, 0x22), // olive
    Rgb(0x17, 0xbe, 0xcf), // cyan
];
const SHAPES: [Shape; 5] = [Shape::Circle, Shape::Square, Shape::TriangleUp, Shape::Diamond, Shape::TriangleDown];

const WHITE: Rgb = Rgb(255, 255, 255);
const INK: Rgb = Rgb(0x22, 0x22, 0x22);
const FRAME: Rgb = Rgb(0x44, 0x44, 0x44);
const GRID: Rgb = Rgb(0xe4, 0xe4, 0xe4);
const LEGEND_BORDER: Rgb = Rgb(0xbb, 0xbb, 0xbb);

const LINE_WIDTH: f64 = 2.2;
const MARKER_R: f64 = 4.5;
const TEXT_SCALE: i64 = 2;

fn validate(curves: &[Curve]) -> Result<(), PlotError> {
    if curves.is_empty() {
        return Err(PlotError::NoCurves);
    }
    for c in curves {
        if c.points.is_empty() {
            return Err(PlotError::EmptyCurve { label: c.label.clone() });
        }
        if let Some((index, &(x, y))) = c.points.iter().enumerate().find(|(_, (x, y))| !x.is_finite() || !y.is_finite()) {
            return Err(PlotError::NonFinite { label: c.label.clone(), index, x, y });
        }
    }
    Ok(())
}

fn render(spec: &PlotSpec, curves: &[Curve]) -> Result<Canvas, PlotError> {
    validate(curves)?;
    let (w, h) = (WIDTH as i64, HEIGHT as i64);
    let mut cv = Canvas::new(w as usize, h as usize, WHITE);

    let all = curves.iter().flat_map(|c| c.points.iter().copied());
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in all {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    let xa = Axis::new(xmin, xmax, 7).ok_or(PlotError::RangeTooLarge { axis: "x" })?;
    let ya = Axis::new(ymin, ymax, 8).ok_or(PlotError::RangeTooLarge { axis: "y" })?;

    let s = TEXT_SCALE;
    let cap = 7 * s; // height of digits / capitals
    let full = 9 * s; // including descenders

    // Title: shrink, then truncate, to fit the width.
    let title_scale = if text_width(spec.title, 3) <= w - 40 { 3 } else { 2 };
    let title = fit_text(spec.title, title_scale, w - 40);
    let top = if title.is_empty() { 20 } else { 16 + 7 * title_scale + 18 };

    let y_label = fit_text(spec.y_label, s, h - 40);
    let ytick_w = ya.labels.iter().map(|l| text_width(l, s)).max().unwrap_or(0);
    let left = 14 + if y_label.is_empty() { 0 } else { full + 12 } + ytick_w + 8 + 5;
    let last_x_label = xa.labels.last().map(|l| text_width(l, s)).unwrap_or(0);
    let right = (last_x_label / 2 + 10).max(28);
    let x_label = spec.x_label;
    let bottom = 5 + 8 + cap + if x_label.is_empty() { 14 } else { 14 + full + 10 };

    let plot = Rect { x0: left, y0: top, x1: w - right, y1: h - bottom };
    let (pw, ph) = ((plot.x1 - plot.x0) as f64, (plot.y1 - plot.y0) as f64);
    let map = |x: f64, y: f64| -> (f64, f64) {
        let fx = (x - xa.lo) / (xa.hi - xa.lo);
        let fy = (y - ya.lo) / (ya.hi - ya.lo);
        (plot.x0 as f64 + fx * (pw - 1.0) + 0.5, plot.y0 as f64 + (1.0 - fy) * (ph - 1.0) + 0.5)
    };

    // Grid, frame, ticks and tick labels.
    for &t in &xa.ticks {
        let px = map(t, ya.lo).0.floor() as i64;
        cv.fill_rect(Rect { x0: px, y0: plot.y0, x1: px + 1, y1: plot.y1 }, GRID);
    }
    for &t in &ya.ticks {
        let py = map(xa.lo, t).1.floor() as i64;
        cv.fill_rect(Rect { x0: plot.x0, y0: py, x1: plot.x1, y1: py + 1 }, GRID);
    }
    cv.fill_rect(Rect { x0: plot.x0 - 1, y0: plot.y0 - 1, x1: plot.x1 + 1, y1: plot.y0 }, FRAME);
    cv.fill_rect(Rect { x0: plot.x0 - 1, y0: plot.y1, x1: plot.x1 + 1, y1: plot.y1 + 1 }, FRAME);
    cv.fill_rect(Rect { x0: plot.x0 - 1, y0: plot.y0 - 1, x1: plot.x0, y1: plot.y1 + 1 }, FRAME);
    cv.fill_rect(Rect { x0: plot.x1, y0: plot.y0 - 1, x1: plot.x1 + 1, y1: plot.y1 + 1 }, FRAME);
    for (&t, label) in xa.ticks.iter().zip(&xa.labels) {
        let px = map(t, ya.lo).0.floor() as i64;
        cv.fill_rect(Rect { x0: px, y0: plot.y1 + 1, x1: px + 1, y1: plot.y1 + 6 }, FRAME);
        cv.text(px - text_width(label, s) / 2, plot.y1 + 6 + 8, label, s, INK);
    }
    for (&t, label) in ya.ticks.iter().zip(&ya.labels) {
        let py = map(xa.lo, t).1.floor() as i64;
        cv.fill_rect(Rect { x0: plot.x0 - 6, y0: py, x1: plot.x0 - 1, y1: py + 1 }, FRAME);
        cv.text(plot.x0 - 6 - 8 - text_width(label, s), py - cap / 2, label, s, INK);
    }

    // Title and axis labels.
    if !title.is_empty() {
        cv.text((w - text_width(&title, title_scale)) / 2, 16, &title, title_scale, INK);
    }
    if !x_label.is_empty() {
        let xl = fit_text(x_label, s, w - 20);
        let cx = (plot.x0 + plot.x1) / 2;
        cv.text(cx - text_width(&xl, s) / 2, plot.y1 + 6 + 8 + cap + 14, &xl, s, INK);
    }
    if !y_label.is_empty() {
        let cy = (plot.y0 + plot.y1) / 2;
        cv.text_vertical(14, cy - text_width(&y_label, s) / 2, &y_label, s, INK);
    }

    // Curves: lines first within a curve, then its markers on top.
    let screen: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|c| {
            let mut pts = c.points.clone();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            pts.into_iter().map(|(x, y)| map(x, y)).collect()
        })
        .collect();
    for (i, pts) in screen.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if pts.len() >= 2 {
            cv.stroke_polyline(pts, LINE_WIDTH, color, plot);
        }
        for &(px, py) in pts {
            cv.marker(px, py, SHAPES[i % SHAPES.len()], MARKER_R, color, plot);
        }
    }

    draw_legend(&mut cv, curves, &screen, plot);
    Ok(cv)
}

fn draw_legend(cv: &mut Canvas, curves: &[Curve], screen: &[Vec<(f64, f64)>], plot: Rect) {
    let s = TEXT_SCALE;
    let row_h = 22;
    let sample_w = 30;
    let pad = 8;
    let inset = 10;
    let max_w = (plot.x1 - plot.x0) - 2 * inset;
    let max_rows = (((plot.y1 - plot.y0) - 2 * inset - 10) / row_h).max(1) as usize;
    let label_room = max_w - (pad + sample_w + 8 + 10);
    if label_room < 6 * s {
        return;
    }
    // (curve index or None for the "+N more" row, text)
    let mut rows: Vec<(Option<usize>, String)> = Vec::new();
    let shown = if curves.len() > max_rows { max_rows.saturating_sub(1) } else { curves.len() };
    for (i, c) in curves.iter().enumerate().take(shown) {
        rows.push((Some(i), fit_text(&c.label, s, label_room)));
    }
    if shown < curves.len() {
        rows.push((None, fit_text(&format!("+{} more", curves.len() - shown), s, label_room)));
    }
    let text_w = rows.iter().map(|(_, t)| text_width(t, s)).max().unwrap_or(0);
    let lw = pad + sample_w + 8 + text_w + 10;
    let lh = 10 + rows.len() as i64 * row_h;

    // Pick the corner that hides the fewest data pixels.
    let corners = [
        (plot.x1 - inset - lw, plot.y1 - inset - lh), // lower right
        (plot.x0 + inset, plot.y0 + inset),           // upper left
        (plot.x0 + inset, plot.y1 - inset - lh),      // lower left
        (plot.x1 - inset - lw, plot.y0 + inset),      // upper right
    ];
    let samples = sample_polylines(screen);
    let (lx, ly) = corners
        .iter()
        .copied()
        .min_by_key(|&(x, y)| {
            let (x0, y0, x1, y1) = ((x - 6) as f64, (y - 6) as f64, (x + lw + 6) as f64, (y + lh + 6) as f64);
            samples.iter().filter(|&&(px, py)| px >= x0 && px < x1 && py >= y0 && py < y1).count()
        })
        .unwrap_or(corners[0]);

    let bx = Rect { x0: lx, y0: ly, x1: lx + lw, y1: ly + lh };
    cv.fill_rect(bx, LEGEND_BORDER);
    cv.fill_rect(Rect { x0: bx.x0 + 1, y0: bx.y0 + 1, x1: bx.x1 - 1, y1: bx.y1 - 1 }, WHITE);
    for (r, (idx, text)) in rows.iter().enumerate() {
        let cy = ly + 5 + row_h / 2 + r as i64 * row_h;
        if let Some(i) = *idx {
            let color = PALETTE[i % PALETTE.len()];
            let (sx0, sx1) = ((lx + pad) as f64 + 0.5, (lx + pad + sample_w) as f64 - 0.5);
            let fy = cy as f64 + 0.5;
            if curves[i].points.len() >= 2 {
                cv.stroke_polyline(&[(sx0, fy), (sx1, fy)], LINE_WIDTH, color, bx);
            }
            cv.marker((sx0 + sx1) / 2.0, fy, SHAPES[i % SHAPES.len()], MARKER_R, color, bx);
        }
        cv.text(lx + pad + sample_w + 8, cy - 7 * s / 2, text, s, INK);
    }
}

/// Points along every polyline, spaced about 3 px apart (used to place the legend).
fn sample_polylines(screen: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for pts in screen {
        out.extend_from_slice(pts);
        for seg in pts.windows(2) {
            let (a, b) = (seg[0], seg[1]);
            let n = ((b.0 - a.0).hypot(b.1 - a.1) / 3.0).ceil().min(2000.0) as usize;
            for k in 1..n {
                let t = k as f64 / n as f64;
                out.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Axes: ranges, "nice" ticks and tick labels
// ---------------------------------------------------------------------------

struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    labels: Vec<String>,
}

impl Axis {
    /// Padded range around `[min, max]` with about `target` ticks at
    /// 1/2/5 x 10^k steps. `None` if the range cannot be represented.
    fn new(min: f64, max: f64, target: usize) -> Option<Axis> {
        let max_abs = min.abs().max(max.abs());
        let span = max - min;
        let (lo, hi) = if !(span > max_abs * 1e-9) {
            // Degenerate (all values equal or nearly so): centre them.
            let half = if max_abs > 0.0 { max_abs * 0.1 } else { 1.0 };
            (min - half, max + half)
        } else {
            let pad = span * 0.06;
            (min - pad, max + pad)
        };
        let range = hi - lo;
        if !(lo.is_finite() && hi.is_finite() && range.is_finite() && range > 0.0) {
            return None;
        }
        let step = nice_step(range / target as f64)?;
        let first = (lo / step).ceil() * step;
        let mut ticks = Vec::new();
        for k in 0..64 {
            let v = first + k as f64 * step;
            if v > hi + step * 1e-9 {
                break;
            }
            ticks.push(if v.abs() < step * 1e-6 { 0.0 } else { v });
        }
        let labels = format_ticks(&ticks, step);
        Some(Axis { lo, hi, ticks, labels })
    }
}

fn nice_step(raw: f64) -> Option<f64> {
    if !(raw.is_finite() && raw > 0.0) {
        return None;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    let step = m * mag;
    (step.is_finite() && step > 0.0).then_some(step)
}

/// Formats tick values; large magnitudes use K/M/G suffixes (e.g. "12.5M"),
/// with as many decimals as the step needs.
fn format_ticks(ticks: &[f64], step: f64) -> Vec<String> {
    let max_abs = ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    let (div, suffix) = if max_abs >= 1e9 {
        (1e9, "G")
    } else if max_abs >= 1e6 {
        (1e6, "M")
    } else if max_abs >= 1e4 {
        (1e3, "K")
    } else {
        (1.0, "")
    };
    let scaled = step / div;
    let decimals = (-(scaled.log10() + 1e-9).floor()).clamp(0.0, 12.0) as usize;
    ticks
        .iter()
        .map(|&t| {
            if max_abs >= 1e15 || (max_abs > 0.0 && max_abs < 1e-4) {
                format!("{t:.1e}")
            } else {
                let v = t / div;
                let v = if v == 0.0 { 0.0 } else { v }; // no "-0"
                format!("{v:.decimals$}{suffix}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Raster canvas
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Rgb(u8, u8, u8);

/// Half-open pixel rectangle `[x0, x1) x [y0, y1)`.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn intersect(self, o: Rect) -> Rect {
        Rect { x0: self.x0.max(o.x0), y0: self.y0.max(o.y0), x1: self.x1.min(o.x1), y1: self.y1.min(o.y1) }
    }
    fn is_empty(&self) -> bool {
        self.x0 >= self.x1 || self.y0 >= self.y1
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
}

impl Shape {
    /// Whether offset `(dx, dy)` from the centre lies inside a shape of radius `r`.
    fn contains(self, dx: f64, dy: f64, r: f64) -> bool {
        match self {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            Shape::Square => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
            Shape::Diamond => dx.abs() + dy.abs() <= r * 1.25,
            Shape::TriangleUp | Shape::TriangleDown => {
                let dy = if matches!(self, Shape::TriangleDown) { -dy } else { dy };
                let (top, base) = (-1.15 * r, 0.8 * r);
                dy >= top && dy <= base && dx.abs() <= 1.05 * r * (dy - top) / (base - top)
            }
        }
    }
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize, bg: Rgb) -> Self {
        let mut px = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            px.extend_from_slice(&[bg.0, bg.1, bg.2]);
        }
        Canvas { w, h, px }
    }

    fn bounds(&self) -> Rect {
        Rect { x0: 0, y0: 0, x1: self.w as i64, y1: self.h as i64 }
    }

    fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f64) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 || a <= 0.0 {
            return;
        }
        let a = a.min(1.0);
        let i = (y as usize * self.w + x as usize) * 3;
        for (k, v) in [c.0, c.1, c.2].into_iter().enumerate() {
            let old = self.px[i + k] as f64;
            self.px[i + k] = (old + (v as f64 - old) * a).round() as u8;
        }
    }

    fn fill_rect(&mut self, r: Rect, c: Rgb) {
        let r = r.intersect(self.bounds());
        if r.is_empty() {
            return;
        }
        for y in r.y0..r.y1 {
            for x in r.x0..r.x1 {
                let i = (y as usize * self.w + x as usize) * 3;
                self.px[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
            }
        }
    }

    /// Anti-aliased polyline with round joins/caps, clipped to `clip`.
    /// Coverage is accumulated as a per-pixel maximum so joints are not
    /// over-painted.
    fn stroke_polyline(&mut self, pts: &[(f64, f64)], width: f64, c: Rgb, clip: Rect) {
        let hw = width / 2.0;
        let m = hw + 1.5;
        let (mut bx0, mut by0, mut bx1, mut by1) = (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &(x, y) in pts {
            bx0 = bx0.min(x - m);
            by0 = by0.min(y - m);
            bx1 = bx1.max(x + m);
            by1 = by1.max(y + m);
        }
        let area = Rect { x0: bx0.floor() as i64, y0: by0.floor() as i64, x1: bx1.ceil() as i64 + 1, y1: by1.ceil() as i64 + 1 }
            .intersect(clip)
            .intersect(self.bounds());
        if area.is_empty() {
            return;
        }
        let aw = (area.x1 - area.x0) as usize;
        let mut mask = vec![0f32; aw * (area.y1 - area.y0) as usize];
        let segs: Vec<((f64, f64), (f64, f64))> =
            if pts.len() == 1 { vec![(pts[0], pts[0])] } else { pts.windows(2).map(|w| (w[0], w[1])).collect() };
        for (a, b) in segs {
            let r = Rect {
                x0: (a.0.min(b.0) - m).floor() as i64,
                y0: (a.1.min(b.1) - m).floor() as i64,
                x1: (a.0.max(b.0) + m).ceil() as i64 + 1,
                y1: (a.1.max(b.1) + m).ceil() as i64 + 1,
            }
            .intersect(area);
            for y in r.y0..r.y1 {
                for x in r.x0..r.x1 {
                    let d = seg_dist(x as f64 + 0.5, y as f64 + 0.5, a, b);
                    let cov = (hw + 0.5 - d).clamp(0.0, 1.0) as f32;
                    let i = (y - area.y0) as usize * aw + (x - area.x0) as usize;
                    if cov > mask[i] {
                        mask[i] = cov;
                    }
                }
            }
        }
        for y in area.y0..area.y1 {
            for x in area.x0..area.x1 {
                let cov = mask[(y - area.y0) as usize * aw + (x - area.x0) as usize];
                if cov > 0.0 {
                    self.blend(x, y, c, cov as f64);
                }
            }
        }
    }

    /// Filled, anti-aliased (4x4 supersampled) marker with a thin white halo.
    fn marker(&mut self, cx: f64, cy: f64, shape: Shape, r: f64, c: Rgb, clip: Rect) {
        self.fill_shape(cx, cy, shape, r + 1.3, WHITE, clip);
        self.fill_shape(cx, cy, shape, r, c, clip);
    }

    fn fill_shape(&mut self, cx: f64, cy: f64, shape: Shape, r: f64, c: Rgb, clip: Rect) {
        let ext = r * 1.3 + 1.0;
        let area = Rect {
            x0: (cx - ext).floor() as i64,
            y0: (cy - ext).floor() as i64,
            x1: (cx + ext).ceil() as i64 + 1,
            y1: (cy + ext).ceil() as i64 + 1,
        }
        .intersect(clip)
        .intersect(self.bounds());
        if area.is_empty() {
            return;
        }
        const N: usize = 4;
        for y in area.y0..area.y1 {
            for x in area.x0..area.x1 {
                let mut hits = 0;
                for sy in 0..N {
                    for sx in 0..N {
                        let px = x as f64 + (sx as f64 + 0.5) / N as f64;
                        let py = y as f64 + (sy as f64 + 0.5) / N as f64;
                        if shape.contains(px - cx, py - cy, r) {
                            hits += 1;
                        }
                    }
                }
                if hits > 0 {
                    self.blend(x, y, c, hits as f64 / (N * N) as f64);
                }
            }
        }
    }

    /// Horizontal text; `(x, y)` is the top-left of the capital height.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        let (px, py) = (cx + col as i64 * scale, y + row as i64 * scale);
                        self.fill_rect(Rect { x0: px, y0: py, x1: px + scale, y1: py + scale }, c);
                    }
                }
            }
            cx += ADVANCE * scale;
        }
    }

    /// Text rotated 90 degrees counter-clockwise (reads bottom to top).
    /// `(x, y)` is the top-left corner of its bounding box, whose width is
    /// the full glyph height (9 * scale) and height is `text_width`.
    fn text_vertical(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        let tw = text_width(s, scale);
        let mut u0 = 0;
        for ch in s.chars() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        let u = u0 + col as i64 * scale; // along the text
                        let v = row as i64 * scale; // down the glyph
                        let (px, py) = (x + v, y + tw - u - scale);
                        self.fill_rect(Rect { x0: px, y0: py, x1: px + scale, y1: py + scale }, c);
                    }
                }
            }
            u0 += ADVANCE * scale;
        }
    }
}

fn seg_dist(px: f64, py: f64, a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 { (((px - a.0) * dx + (py - a.1) * dy) / l2).clamp(0.0, 1.0) } else { 0.0 };
    (px - a.0 - t * dx).hypot(py - a.1 - t * dy)
}

// ---------------------------------------------------------------------------
// Built-in bitmap font: 5x7 cells (capital height 7) plus 2 descender rows.
// ---------------------------------------------------------------------------

const GLYPH_W: usize = 5;
const GLYPH_H: usize = 9;
const ADVANCE: i64 = GLYPH_W as i64 + 1;

fn text_width(s: &str, scale: i64) -> i64 {
    let n = s.chars().count() as i64;
    if n == 0 { 0 } else { n * ADVANCE * scale - scale }
}

/// `s` unchanged if it fits in `max_w` pixels, else truncated with "...".
fn fit_text(s: &str, scale: i64, max_w: i64) -> String {
    if text_width(s, scale) <= max_w {
        return s.to_string();
    }
    let max_chars = ((max_w + scale) / (ADVANCE * scale)).max(0) as usize;
    if max_chars <= 3 {
        return ".".repeat(max_chars);
    }
    let mut out: String = s.chars().take(max_chars - 3).collect();
    out.push_str("...");
    out
}

fn glyph(ch: char) -> &'static [u8; GLYPH_H] {
    let ch = match ch {
        '×' => 'x',
        '–' | '—' | '−' => '-',
        c => c,
    };
    match ch as u32 {
        c @ 32..=126 => &FONT[(c - 32) as usize],
        _ => &UNKNOWN_GLYPH,
    }
}

const UNKNOWN_GLYPH: [u8; GLYPH_H] = parse_glyph(&["#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####"]);

const fn parse_glyph(rows: &[&str]) -> [u8; GLYPH_H] {
    assert!(rows.len() <= GLYPH_H, "glyph has too many rows");
    let mut out = [0u8; GLYPH_H];
    let mut r = 0;
    while r < rows.len() {
        let b = rows[r].as_bytes();
        assert!(b.len() == GLYPH_W, "glyph row must be 5 wide");
        let mut c = 0;
        while c < GLYPH_W {
            match b[c] {
                b'#' => out[r] |= 1 << (GLYPH_W - 1 - c),
                b'.' => {}
                _ => panic!("glyph rows use only '#' and '.'"),
            }
            c += 1;
        }
        r += 1;
    }
    out
}

const fn parse_font(src: &[&[&str]; 95]) -> [[u8; GLYPH_H]; 95] {
    let mut out = [[0u8; GLYPH_H]; 95];
    let mut i = 0;
    while i < 95 {
        out[i] = parse_glyph(src[i]);
        i += 1;
    }
    out
}

/// Printable ASCII 0x20..=0x7E. Rows 0-6 sit on the baseline; rows 7-8 are
/// descenders. Missing trailing rows are blank.
const FONT: [[u8; GLYPH_H]; 95] = parse_font(&[
    /*   */ &[],
    /* ! */ &["..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."],
    /* " */ &[".#.#.", ".#.#.", ".#.#."],
    /* # */ &[".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."],
    /* $ */ &["..#..", ".####", "#.#..", ".###.", "..#.#", "####.", "..#.."],
    /* % */ &["##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"],
    /* & */ &[".##..", "#..#.", "#.#..", ".#...", "#.#.#", "#..#.", ".##.#"],
    /* ' */ &["..#..", "..#..", "..#.."],
    /* ( */ &["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."],
    /* ) */ &[".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."],
    /* * */ &[".....", "..#..", "#.#.#", ".###.", "#.#.#", "..#..", "....."],
    /* + */ &[".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."],
    /* , */ &[".....", ".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."],
    /* - */ &[".....", ".....", ".....", ".###.", ".....", ".....", "....."],
    /* . */ &[".....", ".....", ".....", ".....", ".....", ".##..", ".##.."],
    /* / */ &["....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."],
    /* 0 */ &[".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    /* 1 */ &["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    /* 2 */ &[".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    /* 3 */ &["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
    /* 4 */ &["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    /* 5 */ &["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    /* 6 */ &["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    /* 7 */ &["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    /* 8 */ &[".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    /* 9 */ &[".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
    /* : */ &[".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."],
    /* ; */ &[".....", ".##..", ".##..", ".....", ".##..", "..#..", ".#..."],
    /* < */ &["...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."],
    /* = */ &[".....", ".....", "#####", ".....", "#####", ".....", "....."],
    /* > */ &[".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."],
    /* ? */ &[".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."],
    /* @ */ &[".###.", "#...#", "....#", ".##.#", "#.#.#", "#.#.#", ".###."],
    /* A */ &[".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    /* B */ &["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."],
    /* C */ &[".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."],
    /* D */ &["###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."],
    /* E */ &["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
    /* F */ &["#####", "#....", "#....", "####.", "#....", "#....", "#...."],
    /* G */ &[".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"],
    /* H */ &["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    /* I */ &[".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
    /* J */ &["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."],
    /* K */ &["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
    /* L */ &["#....", "#....", "#....", "#....", "#....", "#....", "#####"],
    /* M */ &["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"],
    /* N */ &["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"],
    /* O */ &[".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
    /* P */ &["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
    /* Q */ &[".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"],
    /* R */ &["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"],
    /* S */ &[".####", "#....", "#....", ".###.", "....#", "....#", "####."],
    /* T */ &["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
    /* U */ &["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
    /* V */ &["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."],
    /* W */ &["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."],
    /* X */ &["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"],
    /* Y */ &["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."],
    /* Z */ &["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"],
    /* [ */ &[".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."],
    /* \ */ &["#....", "#....", ".#...", "..#..", "...#.", "....#", "....#"],
    /* ] */ &[".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."],
    /* ^ */ &["..#..", ".#.#.", "#...#"],
    /* _ */ &[".....", ".....", ".....", ".....", ".....", ".....", ".....", "#####"],
    /* ` */ &[".#...", "..#..", "...#."],
    /* a */ &[".....", ".....", ".###.", "....#", ".####", "#...#", ".####"],
    /* b */ &["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."],
    /* c */ &[".....", ".....", ".###.", "#....", "#....", "#...#", ".###."],
    /* d */ &["....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"],
    /* e */ &[".....", ".....", ".###.", "#...#", "#####", "#....", ".###."],
    /* f */ &["..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."],
    /* g */ &[".....", ".....", ".####", "#...#", "#...#", "#..##", ".##.#", "....#", ".###."],
    /* h */ &["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"],
    /* i */ &["..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."],
    /* j */ &["...#.", ".....", "..##.", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."],
    /* k */ &["#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."],
    /* l */ &[".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
    /* m */ &[".....", ".....", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#"],
    /* n */ &[".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"],
    /* o */ &[".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."],
    /* p */ &[".....", ".....", "####.", "#...#", "#...#", "##..#", "#.##.", "#....", "#...."],
    /* q */ &[".....", ".....", ".####", "#...#", "#...#", "#..##", ".##.#", "....#", "....#"],
    /* r */ &[".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."],
    /* s */ &[".....", ".....", ".####", "#....", ".###.", "....#", "####."],
    /* t */ &[".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."],
    /* u */ &[".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"],
    /* v */ &[".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."],
    /* w */ &[".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."],
    /* x */ &[".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"],
    /* y */ &[".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#", "....#", ".###."],
    /* z */ &[".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"],
    /* { */ &["...##", "..#..", "..#..", ".#...", "..#..", "..#..", "...##"],
    /* | */ &["..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
    /* } */ &["##...", "..#..", "..#..", "...#.", "..#..", "..#..", "##..."],
    /* ~ */ &[".....", ".....", ".#...", "#.#.#", "...#.", ".....", "....."],
]);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("usnet_plot_{name}_{}_{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample_curves() -> Vec<Curve> {
        vec![
            Curve::new(
                "US-Net",
                // deliberately unsorted: the writer sorts by x
                vec![(20.1e6, 71.9), (2.4e6, 55.2), (5.3e6, 63.0), (12.3e6, 69.5), (9.1e6, 67.4), (15.7e6, 70.8)],
            ),
            Curve::new("fixed 0.5x", vec![(5.3e6, 61.4)]),
            Curve::new("fixed 1.0x", vec![(20.1e6, 70.7)]),
        ]
    }

    fn spec() -> PlotSpec<'static> {
        PlotSpec { title: "Top-1 accuracy vs MACs", x_label: "MACs", y_label: "Top-1 accuracy (%)" }
    }

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn writes_valid_png_with_dimensions_and_colours() {
        let dir = temp_dir("ok");
        let path = dir.join("acc_vs_macs.png");
        write_line_plot(&path, &spec(), &sample_curves()).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert!(!tmp_path(&path).exists(), "temporary file left behind");

        assert_eq!(&bytes[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        // IHDR is always the first chunk: length(4) "IHDR" width(4) height(4).
        assert_eq!(&bytes[12..16], b"IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (WIDTH, HEIGHT));

        let (dw, dh, rgb) = decode(&bytes);
        assert_eq!((dw, dh), (WIDTH, HEIGHT));
        assert_eq!(rgb.len(), (WIDTH * HEIGHT * 3) as usize);
        let colours: HashSet<[u8; 3]> = rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
        assert!(colours.len() > 1, "image is a single colour");
        for c in &PALETTE[..3] {
            assert!(colours.contains(&[c.0, c.1, c.2]), "curve colour {c:?} missing");
        }
        assert!(colours.contains(&[INK.0, INK.1, INK.2]), "no text drawn");

        // Overwriting an existing plot works too.
        write_line_plot(&path, &spec(), &sample_curves()[..1]).unwrap();
        assert_eq!(decode(&fs::read(&path).unwrap()).0, WIDTH);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_input_is_an_error() {
        let dir = temp_dir("empty");
        let path = dir.join("p.png");
        assert!(matches!(write_line_plot(&path, &spec(), &[]), Err(PlotError::NoCurves)));
        let curves = vec![Curve::new("a", vec![(1.0, 2.0)]), Curve::new("b", vec![])];
        match write_line_plot(&path, &spec(), &curves) {
            Err(PlotError::EmptyCurve { label }) => assert_eq!(label, "b"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!path.exists() && !tmp_path(&path).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_finite_points_are_errors() {
        let dir = temp_dir("nan");
        let path = dir.join("p.png");
        for bad in [(f64::NAN, 1.0), (1.0, f64::NAN), (f64::INFINITY, 1.0), (1.0, f64::NEG_INFINITY)] {
            let curves = vec![Curve::new("c", vec![(1.0, 2.0), bad])];
            match write_line_plot(&path, &spec(), &curves) {
                Err(PlotError::NonFinite { label, index, .. }) => assert_eq!((label.as_str(), index), ("c", 1)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn io_error_names_the_path() {
        let dir = temp_dir("io");
        let path = dir.join("missing_subdir").join("p.png");
        let err = write_line_plot(&path, &spec(), &sample_curves()).unwrap_err();
        match &err {
            PlotError::Io { path: p, .. } => assert_eq!(p, &path),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("missing_subdir"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn degenerate_and_extreme_inputs_do_not_panic() {
        let cases: Vec<Vec<Curve>> = vec![
            vec![Curve::new("one", vec![(3.0e6, 50.0)])],
            vec![Curve::new("zero", vec![(0.0, 0.0), (0.0, 0.0)])],
            vec![Curve::new("flat", vec![(1.0, 5.0), (2.0, 5.0), (3.0, 5.0)])],
            vec![Curve::new("neg", vec![(-5.0, -1.0), (5.0, 1.0)])],
            vec![Curve::new("tiny", vec![(1e-12, 1e-12), (2e-12, 3e-12)])],
            vec![Curve::new("huge", vec![(1e12, 1e200), (3e12, 2e200)])],
            (0..40).map(|i| Curve::new(format!("c{i} {}", "long label ".repeat(i)), vec![(i as f64, i as f64)])).collect(),
        ];
        let long = "title ".repeat(100);
        let unicode = PlotSpec { title: &long, x_label: "MACs × 10⁶", y_label: "accuracy — %" };
        for curves in &cases {
            for s in [spec(), unicode, PlotSpec { title: "", x_label: "", y_label: "" }] {
                let cv = render(&s, curves).unwrap();
                assert_eq!((cv.w, cv.h), (WIDTH as usize, HEIGHT as usize));
            }
        }
        // A range that overflows f64 is reported, not drawn.
        let overflow = vec![Curve::new("o", vec![(-f64::MAX, 0.0), (f64::MAX, 1.0)])];
        assert!(matches!(render(&spec(), &overflow), Err(PlotError::RangeTooLarge { axis: "x" })));
    }

    #[test]
    fn tick_labels_use_si_suffixes() {
        let ax = Axis::new(2.4e6, 20.1e6, 7).unwrap();
        assert!(ax.labels.iter().all(|l| l.ends_with('M')), "{:?}", ax.labels);
        assert!(ax.labels.contains(&"10M".to_string()), "{:?}", ax.labels);
        assert_eq!(format_ticks(&[12.3e6, 12.4e6], 0.1e6), vec!["12.3M", "12.4M"]);
        assert_eq!(format_ticks(&[0.0, 0.5e9, 1.0e9], 0.5e9), vec!["0.0G", "0.5G", "1.0G"]);
        assert_eq!(format_ticks(&[60.0, 65.0, 70.0], 5.0), vec!["60", "65", "70"]);
        assert_eq!(format_ticks(&[-0.5, 0.0, 0.5], 0.5), vec!["-0.5", "0.0", "0.5"]);
        let ay = Axis::new(55.2, 71.9, 6).unwrap();
        assert!(ay.ticks.len() >= 3 && ay.ticks.len() <= 12, "{:?}", ay.ticks);
        assert!(ay.lo < 55.2 && ay.hi > 71.9);
    }

    #[test]
    fn font_covers_printable_ascii() {
        for c in ' '..='~' {
            let g = glyph(c);
            assert_eq!(g.iter().all(|&r| r == 0), c == ' ', "glyph {c:?}");
        }
        assert_eq!(glyph('é'), &UNKNOWN_GLYPH);
        assert_eq!(glyph('×'), glyph('x'));
        assert_eq!(text_width("ab", 2), 22);
        assert_eq!(fit_text("abcdefgh", 1, 6 * 5 - 1), "ab...");
    }
}

//! Line charts as PNG or SVG, drawn with `plotters`.
//!
//! A [`Figure`] is a title and one to four [`Panel`]s; each panel is a chart with axis labels,
//! a legend, and [`Curve`]s (a line through points, each point marked filled or hollow).
//! Text uses DejaVu Sans embedded from the `dejavu` crate and registered on first use, so no
//! system font is needed. PNGs are drawn into an RGB buffer and encoded with the `png`
//! crate; both formats are written through [`crate::atomic_file::write_atomic`].
//!
//! ```no_run
//! use usnet::plot::{write_figure, Curve, Figure, Panel};
//! let mut panel = Panel::new("Top-1 vs MACs", "MACs per image", "top-1 (%)");
//! panel.x_si = true;
//! panel.curves.push(Curve::new("US-Net", vec![(5.0e6, 60.1), (12.3e6, 68.4), (20.0e6, 71.0)]));
//! panel.curves.push(Curve::new("1.0x alone", vec![(20.0e6, 70.2)]));
//! let figure = Figure { title: String::new(), panels: vec![panel] };
//! write_figure(std::path::Path::new("acc_vs_macs.png"), &figure).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The font family every text of a chart uses; [`register_font`] binds it to DejaVu Sans.
const FONT: &str = "sans-serif";

/// Colours of the curves, in order (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// A wider x range than this (max / min, all positive) is drawn on a log axis when the
/// panel's `x_log` is `None`.
pub const LOG_AXIS_RATIO: f64 = 10.0;

/// Marker shapes, chosen per curve by [`Curve::shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
}

const SHAPES: [Shape; 5] = [Shape::Circle, Shape::Square, Shape::TriangleUp, Shape::Diamond, Shape::TriangleDown];

impl Shape {
    /// The `i`-th shape, cycling.
    pub fn nth(i: usize) -> Shape {
        SHAPES[i % SHAPES.len()]
    }

    /// The outline of a marker of radius `r`, in pixels around its point, open (for the
    /// fill) and closed (for the stroke).
    fn paths(self, r: i32) -> (Vec<(i32, i32)>, Vec<(i32, i32)>) {
        let open = self.outline(r);
        let mut closed = open.clone();
        closed.push(open[0]);
        (open, closed)
    }

    fn outline(self, r: i32) -> Vec<(i32, i32)> {
        let h = (f64::from(r) * 0.85).round() as i32;
        match self {
            Shape::Circle => (0..16)
                .map(|i| {
                    let a = f64::from(i) * std::f64::consts::TAU / 16.0;
                    ((f64::from(r) * a.cos()).round() as i32, (f64::from(r) * a.sin()).round() as i32)
                })
                .collect(),
            Shape::Square => vec![(-h, -h), (h, -h), (h, h), (-h, h)],
            Shape::TriangleUp => vec![(0, -r - 1), (r + 1, r - 1), (-r - 1, r - 1)],
            Shape::TriangleDown => vec![(0, r + 1), (r + 1, -r + 1), (-r - 1, -r + 1)],
            Shape::Diamond => vec![(0, -r - 1), (r + 1, 0), (0, r + 1), (-r - 1, 0)],
        }
    }
}

/// One labelled series: a line through `points` (sorted by x) and a marker on each.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    /// `(x, y)`, drawn in x order.
    pub points: Vec<(f64, f64)>,
    /// Points whose marker is hollow (same length as `points`, or empty for all filled).
    pub hollow: Vec<bool>,
    /// Index into the palette (default: the curve's position in its panel).
    pub color: Option<usize>,
    /// Marker shape (default: by the curve's position in its panel).
    pub shape: Option<Shape>,
    /// Draw markers (default); off for dense series such as a loss per step.
    pub markers: bool,
}

impl Curve {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, hollow: Vec::new(), color: None, shape: None, markers: true }
    }
}

/// Where a panel's legend sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendAt {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

/// One chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
    /// Log x axis: `Some` forces it, `None` picks log when the x range (all positive) spans
    /// more than [`LOG_AXIS_RATIO`].
    pub x_log: Option<bool>,
    /// Log y axis (positive data only; a panel with a value <= 0 falls back to linear).
    pub y_log: bool,
    /// Tick labels of the x axis with SI suffixes (12.5M); otherwise plain numbers.
    pub x_si: bool,
    pub legend: LegendAt,
    /// A line of small text under the title (for example what hollow markers mean).
    pub note: Option<String>,
}

impl Panel {
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            curves: Vec::new(),
            x_log: None,
            y_log: false,
            x_si: false,
            legend: LegendAt::LowerRight,
            note: None,
        }
    }
}

/// A title over one to four panels: one fills the image, two sit side by side, three are
/// two over one, four a 2x2 grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<Panel>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: no curves given")]
    NoCurves,
    #[error("a figure holds 1 to 4 panels, got {0}")]
    Panels(usize),
    #[error("curve {label:?} has no points")]
    EmptyCurve { label: String },
    #[error("curve {label:?} has a non-finite point at index {index}: ({x}, {y})")]
    NonFinite { label: String, index: usize, x: f64, y: f64 },
    #[error("curve {label:?}: {hollow} hollow flags for {points} points")]
    HollowLength { label: String, hollow: usize, points: usize },
    #[error("data range of the {axis} axis is too large to plot")]
    RangeTooLarge { axis: &'static str },
    #[error("{}: the plot format is taken from the extension: .png or .svg", path.display())]
    Format { path: PathBuf },
    #[error("drawing the plot failed: {0}")]
    Draw(String),
    #[error("{}: {reason}", path.display())]
    Input { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
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

type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Registers DejaVu Sans as the charts' font (once per process; later calls do nothing).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; should it ever fail to parse, drawing
        // text fails with a `Draw` error naming the missing font.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The image size of a figure of `panels` panels.
pub fn size(panels: usize) -> (u32, u32) {
    match panels {
        0 | 1 => (1000, 650),
        2 => (1500, 650),
        _ => (1500, 1100),
    }
}

/// Draws `figure` and writes it to `path` as PNG or SVG (by the extension), atomically.
///
/// Invalid input (no curves, an empty curve, a non-finite point, more than four panels) is
/// reported before anything is written.
pub fn write_figure(path: &Path, figure: &Figure) -> Result<(), PlotError> {
    let svg = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => false,
        Some("svg") => true,
        _ => return Err(PlotError::Format { path: path.to_path_buf() }),
    };
    let bytes = if svg { render_svg(figure)?.into_bytes() } else { encode_png(path, figure)? };
    crate::atomic_file::write_atomic(path, &bytes).map_err(|source| PlotError::Io { path: path.to_path_buf(), source })
}

/// The figure as an RGB buffer (`size(panels)`, row-major, 3 bytes a pixel).
pub fn render_rgb(figure: &Figure) -> Result<(u32, u32, Vec<u8>), PlotError> {
    validate(figure)?;
    register_font();
    let (w, h) = size(figure.panels.len());
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw_figure(&root, figure).map_err(|e| PlotError::Draw(e.to_string()))?;
    }
    Ok((w, h, buf))
}

/// The figure as an SVG document.
pub fn render_svg(figure: &Figure) -> Result<String, PlotError> {
    validate(figure)?;
    // SVG text is laid out (legend boxes, centring) with the same font metrics.
    register_font();
    let (w, h) = size(figure.panels.len());
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        draw_figure(&root, figure).map_err(|e| PlotError::Draw(e.to_string()))?;
    }
    Ok(out)
}

fn encode_png(path: &Path, figure: &Figure) -> Result<Vec<u8>, PlotError> {
    let (w, h, rgb) = render_rgb(figure)?;
    let encode = || -> Result<Vec<u8>, png::EncodingError> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
        writer.finish()?;
        Ok(out)
    };
    encode().map_err(|source| PlotError::Encode { path: path.to_path_buf(), source })
}

fn validate(figure: &Figure) -> Result<(), PlotError> {
    if figure.panels.is_empty() || figure.panels.len() > 4 {
        return Err(PlotError::Panels(figure.panels.len()));
    }
    if figure.panels.iter().all(|p| p.curves.is_empty()) {
        return Err(PlotError::NoCurves);
    }
    for c in figure.panels.iter().flat_map(|p| &p.curves) {
        if c.points.is_empty() {
            return Err(PlotError::EmptyCurve { label: c.label.clone() });
        }
        if !c.hollow.is_empty() && c.hollow.len() != c.points.len() {
            return Err(PlotError::HollowLength { label: c.label.clone(), hollow: c.hollow.len(), points: c.points.len() });
        }
        if let Some((index, &(x, y))) = c.points.iter().enumerate().find(|(_, (x, y))| !x.is_finite() || !y.is_finite()) {
            return Err(PlotError::NonFinite { label: c.label.clone(), index, x, y });
        }
    }
    for p in &figure.panels {
        if !p.curves.is_empty() {
            data_range(p.curves.iter().flat_map(|c| c.points.iter().map(|q| q.0)), false, "x")?;
            data_range(p.curves.iter().flat_map(|c| c.points.iter().map(|q| q.1)), false, "y")?;
        }
    }
    Ok(())
}

/// The padded axis range of `values` (finite, at least one): 4% of the span on each side
/// (on a log axis, 4% of the log span); a single value gets a range around it.
fn data_range(values: impl Iterator<Item = f64>, log: bool, axis: &'static str) -> Result<(f64, f64), PlotError> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if log {
        let (a, b) = (lo.log10(), hi.log10());
        let pad = if b > a { (b - a) * 0.04 } else { 0.1 };
        return Ok((10f64.powf(a - pad), 10f64.powf(b + pad)));
    }
    let span = hi - lo;
    if !span.is_finite() {
        return Err(PlotError::RangeTooLarge { axis });
    }
    let pad = if span > 0.0 { span * 0.04 } else if lo != 0.0 { lo.abs() * 0.05 } else { 1.0 };
    let (a, b) = (lo - pad, hi + pad);
    if !a.is_finite() || !b.is_finite() {
        return Err(PlotError::RangeTooLarge { axis });
    }
    Ok((a, b))
}

/// Splits the root into the panels' areas (see [`Figure`]).
fn panel_areas<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, n: usize) -> Vec<DrawingArea<DB, Shift>> {
    match n {
        1 => vec![area.clone()],
        2 => area.split_evenly((1, 2)),
        3 => {
            let (_, h) = area.dim_in_pixel();
            let (top, bottom) = area.split_vertically(h / 2);
            let mut v = top.split_evenly((1, 2));
            v.push(bottom);
            v
        }
        _ => area.split_evenly((2, 2)),
    }
}

fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let body = if figure.title.is_empty() { root.clone() } else { root.titled(&figure.title, (FONT, 28))? };
    for (area, panel) in panel_areas(&body, figure.panels.len()).iter().zip(&figure.panels) {
        if panel.curves.is_empty() {
            continue;
        }
        let xs = || panel.curves.iter().flat_map(|c| c.points.iter().map(|p| p.0));
        let ys = || panel.curves.iter().flat_map(|c| c.points.iter().map(|p| p.1));
        let positive = |mut v: Box<dyn Iterator<Item = f64> + '_>| v.all(|x| x > 0.0);
        let (xmin, xmax) = (xs().fold(f64::INFINITY, f64::min), xs().fold(f64::NEG_INFINITY, f64::max));
        let x_log = positive(Box::new(xs())) && panel.x_log.unwrap_or(xmax / xmin > LOG_AXIS_RATIO);
        let y_log = panel.y_log && positive(Box::new(ys()));
        let (x0, x1) = data_range(xs(), x_log, "x")?;
        let (y0, y1) = data_range(ys(), y_log, "y")?;
        match (x_log, y_log) {
            (false, false) => draw_panel(area, panel, RangedCoordf64::from(x0..x1), RangedCoordf64::from(y0..y1))?,
            (true, false) => draw_panel(area, panel, LogCoord::from((x0..x1).log_scale()), RangedCoordf64::from(y0..y1))?,
            (false, true) => draw_panel(area, panel, RangedCoordf64::from(x0..x1), LogCoord::from((y0..y1).log_scale()))?,
            (true, true) => draw_panel(area, panel, LogCoord::from((x0..x1).log_scale()), LogCoord::from((y0..y1).log_scale()))?,
        }
    }
    root.present()?;
    Ok(())
}

fn draw_panel<DB, X, Y>(area: &DrawingArea<DB, Shift>, panel: &Panel, x: X, y: Y) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let area = match &panel.note {
        Some(note) => {
            let (w, h) = area.dim_in_pixel();
            let (rest, bottom) = area.split_vertically(h.saturating_sub(24));
            bottom.draw(&Text::new(
                note.clone(),
                (w as i32 / 2, 2),
                TextStyle::from((FONT, 15).into_font()).color(&RGBColor(0x55, 0x55, 0x55)).pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
            rest
        }
        None => area.clone(),
    };
    let mut chart = ChartBuilder::on(&area)
        .caption(&panel.title, (FONT, 21))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;
    let x_fmt = |v: &f64| if panel.x_si { si(*v) } else { plain(*v) };
    let y_fmt = |v: &f64| plain(*v);
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_labels(8)
        .y_labels(8)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .light_line_style(RGBColor(0xf2, 0xf2, 0xf2))
        .axis_style(RGBColor(0x44, 0x44, 0x44))
        .draw()?;
    for (i, curve) in panel.curves.iter().enumerate() {
        let color = PALETTE[curve.color.unwrap_or(i) % PALETTE.len()];
        let shape = curve.shape.unwrap_or(Shape::nth(i));
        let mut order: Vec<usize> = (0..curve.points.len()).collect();
        order.sort_by(|&a, &b| curve.points[a].0.total_cmp(&curve.points[b].0));
        let line = color.stroke_width(2);
        let series = chart.draw_series(LineSeries::new(order.iter().map(|&k| curve.points[k]), line))?;
        let (outline, closed) = shape.paths(5);
        let (fill, stroke) = (color.filled(), color.stroke_width(2));
        let hollow_fill = WHITE.filled();
        let markers = curve.markers;
        // Every marker is one element type: a circle and a polygon, the one not drawn
        // transparent (and a curve without markers gets an invisible one in its legend).
        let circle = shape == Shape::Circle;
        let none = (TRANSPARENT.filled(), TRANSPARENT.stroke_width(0));
        let marker = move |fill: ShapeStyle| if circle { ((fill, stroke), none) } else { (none, (fill, stroke)) };
        let (lo, lc) = (outline.clone(), closed.clone());
        let legend_styles = if markers { marker(fill) } else { (none, none) };
        series.label(curve.label.as_str()).legend(move |(lx, ly)| {
            let ((cf, cs), (pf, ps)) = legend_styles;
            EmptyElement::at((lx, ly))
                + PathElement::new(vec![(-12, 0), (12, 0)], line)
                + Circle::new((0, 0), 5, cf)
                + Circle::new((0, 0), 5, cs)
                + Polygon::new(lo.clone(), pf)
                + PathElement::new(lc.clone(), ps)
        });
        if markers {
            chart.draw_series(order.iter().map(|&k| {
                let style = if curve.hollow.get(k).copied().unwrap_or(false) { hollow_fill } else { fill };
                let ((cf, cs), (pf, ps)) = marker(style);
                EmptyElement::at(curve.points[k])
                    + Circle::new((0, 0), 5, cf)
                    + Circle::new((0, 0), 5, cs)
                    + Polygon::new(outline.clone(), pf)
                    + PathElement::new(closed.clone(), ps)
            }))?;
        }
    }
    let at = match panel.legend {
        LegendAt::UpperLeft => SeriesLabelPosition::UpperLeft,
        LegendAt::UpperRight => SeriesLabelPosition::UpperRight,
        LegendAt::LowerLeft => SeriesLabelPosition::LowerLeft,
        LegendAt::LowerRight => SeriesLabelPosition::LowerRight,
    };
    chart
        .configure_series_labels()
        .position(at)
        .margin(10)
        .legend_area_size(34)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(0xbb, 0xbb, 0xbb))
        .draw()?;
    Ok(())
}

/// A tick label with an SI suffix: 12.5M, 800k, 3G.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = match a {
        _ if a >= 1e12 => (v / 1e12, "T"),
        _ if a >= 1e9 => (v / 1e9, "G"),
        _ if a >= 1e6 => (v / 1e6, "M"),
        _ if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    format!("{}{suffix}", trim(scaled))
}

/// A plain tick label: at most 4 significant digits, exponent form when very large or small.
pub fn plain(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        // A tick at zero computed as 1e-18 or so.
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    trim(v)
}

fn trim(v: f64) -> String {
    let a = v.abs();
    let decimals = if a == 0.0 || a >= 100.0 { 0 } else if a >= 10.0 { 1 } else if a >= 1.0 { 2 } else { 4 };
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(curves: Vec<Curve>) -> Figure {
        let p = Panel { x_si: true, curves, ..Panel::new("Top-1 vs MACs", "MACs per image", "top-1 accuracy (%)") };
        Figure { title: "A title".into(), panels: vec![p] }
    }

    fn colours(rgb: &[u8]) -> std::collections::HashSet<[u8; 3]> {
        rgb.chunks(3).map(|c| [c[0], c[1], c[2]]).collect()
    }

    #[test]
    fn draws_curves_text_and_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let us = Curve { hollow: vec![false, false, true], ..Curve::new("US-Net", vec![(20.0e6, 71.0), (5.0e6, 60.1), (12.3e6, 68.4)]) };
        let fig = figure(vec![us, Curve::new("1.0x", vec![(20.0e6, 70.2)])]);
        let (w, h, rgb) = render_rgb(&fig).unwrap();
        assert_eq!((w, h), size(1));
        let seen = colours(&rgb);
        // The first two palette colours (the curves) and dark text pixels are drawn.
        for c in &PALETTE[..2] {
            assert!(seen.contains(&[c.0, c.1, c.2]), "curve colour {c:?} missing");
        }
        assert!(rgb.chunks(3).filter(|p| p.iter().all(|&v| v < 60)).count() > 500, "too little text");

        let png = dir.path().join("a.png");
        write_figure(&png, &fig).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), size(1));
        assert_eq!(img.into_raw(), rgb);
        let svg = dir.path().join("a.SVG");
        write_figure(&svg, &fig).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("US-Net") && text.contains("A title"), "{}", &text[..200.min(text.len())]);
        assert!(matches!(write_figure(&dir.path().join("a.jpg"), &fig), Err(PlotError::Format { .. })));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn hollow_markers_differ_from_filled() {
        let filled = figure(vec![Curve::new("a", vec![(1.0, 1.0), (2.0, 2.0)])]);
        let mut hollow = filled.clone();
        hollow.panels[0].curves[0].hollow = vec![true, true];
        assert_ne!(render_rgb(&filled).unwrap().2, render_rgb(&hollow).unwrap().2);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(render_rgb(&figure(vec![])), Err(PlotError::NoCurves)));
        assert!(matches!(render_rgb(&figure(vec![Curve::new("e", vec![])])), Err(PlotError::EmptyCurve { .. })));
        let nan = figure(vec![Curve::new("n", vec![(1.0, 2.0), (f64::NAN, 1.0)])]);
        assert!(matches!(render_rgb(&nan), Err(PlotError::NonFinite { index: 1, .. })));
        let bad = Curve { hollow: vec![true, false], ..Curve::new("h", vec![(1.0, 2.0)]) };
        assert!(matches!(render_rgb(&figure(vec![bad])), Err(PlotError::HollowLength { .. })));
        let overflow = figure(vec![Curve::new("o", vec![(-f64::MAX, 0.0), (f64::MAX, 1.0)])]);
        assert!(matches!(render_rgb(&overflow), Err(PlotError::RangeTooLarge { axis: "x" })));
        let mut five = figure(vec![Curve::new("a", vec![(1.0, 1.0)])]);
        five.panels = vec![five.panels[0].clone(); 5];
        assert!(matches!(render_rgb(&five), Err(PlotError::Panels(5))));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("sub").join("p.png");
        std::fs::write(dir.path().join("missing"), b"a file where a directory should be").unwrap();
        let err = write_figure(&path, &figure(vec![Curve::new("a", vec![(1.0, 1.0)])])).unwrap_err();
        assert!(err.to_string().contains("p.png"), "{err}");
    }

    #[test]
    fn degenerate_inputs_and_layouts_draw() {
        let cases: Vec<Vec<Curve>> = vec![
            vec![Curve::new("one", vec![(3.0e6, 50.0)])],
            vec![Curve::new("zero", vec![(0.0, 0.0), (0.0, 0.0)])],
            vec![Curve::new("neg", vec![(-5.0, -1.0), (5.0, 1.0)])],
            vec![Curve::new("wide", vec![(1e3, 1.0), (1e9, 2.0)])],
            vec![Curve::new("tiny", vec![(1e-12, 1e-12), (2e-12, 3e-12)])],
            (0..12).map(|i| Curve::new(format!("c{i} × —"), vec![(i as f64, i as f64)])).collect(),
        ];
        for curves in cases {
            let mut f = figure(curves);
            f.panels[0].y_log = true;
            render_rgb(&f).unwrap();
            for n in 2..=4 {
                f.panels = vec![f.panels[0].clone(); n];
                assert_eq!(render_rgb(&f).unwrap().0, size(n).0);
            }
        }
    }

    #[test]
    fn tick_labels() {
        assert_eq!(si(12.5e6), "12.5M");
        assert_eq!(si(800e3), "800k");
        assert_eq!(si(3e9), "3G");
        assert_eq!(si(0.0), "0");
        assert_eq!(plain(0.1), "0.1");
        assert_eq!(plain(72.26), "72.3");
        assert_eq!(plain(1e-5), "1.00e-5");
        assert_eq!(plain(-3.47e-18), "0");
    }
}

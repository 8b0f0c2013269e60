//! Widths and channel rounding.
//!
//! Every layer gets its channel count from [`make_divisible`] through [`slim_channels`]; nothing
//! else in the crate rounds channels.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The most widths a list or grid may hold (`--widths`, `width_mult_list`): each width costs
/// a forward pass over the data, and its BN statistics are stored.
pub const MAX_GRID: usize = 1000;

/// Tolerance used when comparing widths against a range: widths are user-typed decimals.
const WIDTH_EPS: f64 = 1e-9;

/// The official `make_divisible` rule: round `v` to the nearest multiple of `divisor`
/// (at least 1), adding one `divisor` when rounding down lost more than 10%.
///
/// `max(1, int(v + d/2) // d * d)`, plus `d` if that is `< 0.9 * v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor.max(1);
    let rounded = ((v + d as f64 / 2.0) as usize) / d * d;
    let mut new_v = rounded.max(1);
    if (new_v as f64) < 0.9 * v {
        new_v += d;
    }
    new_v
}

/// The channel count of a US layer side with `full` channels at width `width`, with the
/// official US ops' `ratio`: `make_divisible(full * width / ratio) * ratio`.
///
/// The arithmetic order (multiply, then divide) matches the official code, so the f64
/// rounding matches it too.
pub fn slim_channels(full: usize, width: f64, ratio: usize, divisor: usize) -> usize {
    make_divisible(full as f64 * width / ratio as f64, divisor) * ratio
}

/// A width multiplier in `(0, 1]`, where 1.0 is the full network.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Width(f64);

impl Width {
    /// The full network.
    pub const MAX: Width = Width(1.0);

    /// A width from a number; errors unless it is finite and in `(0, 1]`.
    pub fn new(value: f64) -> Result<Self> {
        if !value.is_finite() || value <= 0.0 || value > 1.0 + WIDTH_EPS {
            return Err(Error::InvalidWidth {
                input: value.to_string(),
                reason: "expected a number in (0, 1], such as 0.5".into(),
            });
        }
        Ok(Width(value.min(1.0)))
    }

    /// The multiplier.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shortest text that reads back as the same f64, so keys round-trip.
        write!(f, "{}", self.0)
    }
}

impl FromStr for Width {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let value = s.trim().parse().ok().and_then(|v| Width::new(v).ok());
        value.ok_or_else(|| Error::InvalidWidth { input: s.into(), reason: "expected a number in (0, 1], such as 0.5".into() })
    }
}

/// The closed range of widths a model is trained for, `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WidthRange {
    min: Width,
    max: Width,
}

impl WidthRange {
    /// A range; errors when `min > max`.
    pub fn new(min: Width, max: Width) -> Result<Self> {
        if min.get() > max.get() {
            return Err(Error::InvalidWidth {
                input: format!("{min}:{max}"),
                reason: "expected MIN:MAX with MIN <= MAX".into(),
            });
        }
        Ok(WidthRange { min, max })
    }

    /// The smallest width.
    pub fn min(&self) -> Width {
        self.min
    }

    /// The largest width.
    pub fn max(&self) -> Width {
        self.max
    }

    /// Whether `width` lies in the range.
    pub fn contains(&self, width: Width) -> bool {
        width.get() >= self.min.get() - WIDTH_EPS && width.get() <= self.max.get() + WIDTH_EPS
    }

    /// `Ok(width)` when it lies in the range, else [`Error::WidthOutOfRange`].
    pub fn check(&self, width: Width) -> Result<Width> {
        if self.contains(width) {
            Ok(width)
        } else {
            Err(Error::WidthOutOfRange { width: width.get(), min: self.min.get(), max: self.max.get() })
        }
    }

    /// `n` evenly spaced widths from min to max, both included (`n >= 2`), rounded to 4
    /// decimals so that they print and parse back unchanged.
    pub fn grid(&self, n: usize) -> Vec<Width> {
        let n = n.max(2);
        let (lo, hi) = (self.min.get(), self.max.get());
        (0..n)
            .map(|i| {
                let w = lo + (hi - lo) * i as f64 / (n - 1) as f64;
                Width(((w * 1e4).round() / 1e4).clamp(lo, hi))
            })
            .collect()
    }
}

impl fmt::Display for WidthRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.min, self.max)
    }
}

impl FromStr for WidthRange {
    type Err = Error;

    /// Parses `MIN:MAX`, e.g. `0.25:1.0`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidWidth { input: s.into(), reason: reason.into() };
        let (lo, hi) = s.split_once(':').ok_or_else(|| bad("expected MIN:MAX, such as 0.25:1.0"))?;
        let (lo, hi) = (lo.parse::<Width>(), hi.parse::<Width>());
        match (lo, hi) {
            (Ok(lo), Ok(hi)) => WidthRange::new(lo, hi),
            _ => Err(bad("expected MIN:MAX with numbers in (0, 1], such as 0.25:1.0")),
        }
    }
}

/// The width of every layer of a model: one width for all, or one per stage.
///
/// A per-stage spec lists the stem's width, then one width per block-table row, written with
/// `/` between entries, e.g. `0.5/0.35/0.5/0.75/1.0`. US-MobileNet v2's head (its last 1x1
/// conv) has no entry: its output is fixed at full width as in the official model, and only
/// its input follows the last stage. A uniform width is a single number.
///
/// Specs are canonical: a per-stage spec whose entries are all equal *is* that uniform width
/// (the same channels, MACs and statistics key), so [`WidthSpec::per_stage`],
/// [`fmt::Display`], [`WidthSpec::key`] and `==` all treat `0.5/0.5/0.5` as `0.5`. Parsing
/// keeps the entries as written, so that the model can check their number.
#[derive(Debug, Clone)]
pub enum WidthSpec {
    /// The same width for every slimmable layer, as in the paper's uniform US-Nets.
    Uniform(Width),
    /// One width per stage: the stem, then each block-table row. Build it with
    /// [`WidthSpec::per_stage`] to keep it canonical.
    PerStage(Vec<Width>),
}

impl WidthSpec {
    /// A per-stage spec, or the uniform width when every entry is equal.
    pub fn per_stage(widths: Vec<Width>) -> Self {
        match widths.first() {
            Some(&first) if widths.iter().all(|w| *w == first) => WidthSpec::Uniform(first),
            _ => WidthSpec::PerStage(widths),
        }
    }

    /// The canonical form: [`WidthSpec::Uniform`] for a per-stage spec of equal entries.
    pub fn canonical(&self) -> WidthSpec {
        match self {
            WidthSpec::Uniform(w) => WidthSpec::Uniform(*w),
            WidthSpec::PerStage(ws) => WidthSpec::per_stage(ws.clone()),
        }
    }

    /// Every width the spec names.
    pub fn widths(&self) -> Vec<Width> {
        match self {
            WidthSpec::Uniform(w) => vec![*w],
            WidthSpec::PerStage(ws) => ws.clone(),
        }
    }

    /// Errors unless every width lies in `range`.
    pub fn check(&self, range: &WidthRange) -> Result<()> {
        self.widths().into_iter().try_for_each(|w| range.check(w).map(|_| ()))
    }

    /// The spec with each width to 3 decimals, for progress output.
    pub fn short(&self) -> String {
        let parts: Vec<String> = self.canonical().widths().iter().map(|w| format!("{:.3}", w.get())).collect();
        parts.join("/")
    }

    /// The canonical text of the spec, used as the key of its BN statistics.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl PartialEq for WidthSpec {
    fn eq(&self, other: &Self) -> bool {
        self.canonical().widths() == other.canonical().widths()
    }
}

impl From<Width> for WidthSpec {
    fn from(w: Width) -> Self {
        WidthSpec::Uniform(w)
    }
}

impl fmt::Display for WidthSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.canonical() {
            WidthSpec::Uniform(w) => write!(f, "{w}"),
            WidthSpec::PerStage(ws) => write!(f, "{}", ws.iter().map(Width::to_string).collect::<Vec<_>>().join("/")),
        }
    }
}

impl FromStr for WidthSpec {
    type Err = Error;

    /// Parses `0.5` (uniform) or `0.5/0.35/.../1.0` (per stage). A per-stage spec keeps the
    /// entries as written, so that the model checks their number even when they are all equal
    /// (`0.5/0.5/0.5` on a model of five entries is an error, not width 0.5); it still equals,
    /// prints and keys as the uniform width.
    fn from_str(s: &str) -> Result<Self> {
        if !s.contains('/') {
            return Ok(WidthSpec::Uniform(s.parse()?));
        }
        let widths = s
            .split('/')
            .map(|part| {
                part.parse::<Width>().map_err(|_| Error::InvalidWidth {
                    input: s.into(),
                    reason: format!(
                        "entry {part:?} is not a width; expected per-stage widths in (0, 1] \
                         separated by '/', such as 0.5/0.35/0.75"
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WidthSpec::PerStage(widths))
    }
}

/// Parses a list of widths: a comma list (`1.0,0.75,0.5`), a grid `MIN:MAX:STEP`
/// (`0.35:1.0:0.05`, both ends included), or a mix of both separated by commas.
/// Per-stage specs (`0.5/0.35/...`) may appear as list entries. A width given twice (or that
/// a grid's 6-decimal rounding makes twice) is kept once, at its first place.
///
/// # Errors
///
/// [`Error::InvalidWidth`] for an entry that is not a width or grid, or a list of more than
/// [`MAX_GRID`] widths (checked before any grid is expanded).
pub fn parse_width_list(s: &str) -> Result<Vec<WidthSpec>> {
    let bad = |reason: String| Error::InvalidWidth { input: s.into(), reason };
    let too_many = |n: f64| bad(format!("{n} widths; at most {MAX_GRID} are allowed (use a larger STEP)"));
    let mut out: Vec<WidthSpec> = Vec::new();
    let push = |spec: WidthSpec, out: &mut Vec<WidthSpec>| {
        if !out.contains(&spec) {
            out.push(spec);
        }
    };
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(bad("empty entry; expected widths such as 1.0,0.75,0.5 or 0.35:1.0:0.05".into()));
        }
        let parts: Vec<&str> = item.split(':').collect();
        match parts.as_slice() {
            [single] => push(single.parse::<WidthSpec>()?, &mut out),
            [lo, hi, step] => {
                let lo: Width = lo.parse()?;
                let hi: Width = hi.parse()?;
                let step: f64 = step
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| bad(format!("step {step:?} must be a positive number")))?;
                if lo > hi {
                    return Err(bad(format!("grid {item:?} needs MIN <= MAX")));
                }
                let steps = ((hi.get() - lo.get()) / step + 1e-6).floor();
                // NaN cannot happen (finite bounds, positive step); an infinite count can.
                if steps >= MAX_GRID as f64 || out.len() + steps as usize >= MAX_GRID {
                    return Err(too_many(out.len() as f64 + steps + 1.0));
                }
                let n = steps as usize;
                for i in 0..=n {
                    let w = lo.get() + step * i as f64;
                    push(WidthSpec::Uniform(Width::new((w * 1e6).round() / 1e6)?), &mut out);
                }
                if (lo.get() + step * n as f64 - hi.get()).abs() > 1e-6 {
                    push(WidthSpec::Uniform(hi), &mut out);
                }
            }
            _ => {
                return Err(bad(format!(
                    "entry {item:?} is neither a width (0.5) nor a grid MIN:MAX:STEP (0.35:1.0:0.05)"
                )));
            }
        }
        if out.len() > MAX_GRID {
            return Err(too_many(out.len() as f64));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official rule, transcribed literally for comparison.
    fn reference(v: f64, d: usize) -> usize {
        let d = d as f64;
        let mut new_v = ((v + d / 2.0).trunc() / d).floor() * d;
        new_v = new_v.max(1.0);
        if new_v < 0.9 * v {
            new_v += d;
        }
        new_v as usize
    }

    #[test]
    fn make_divisible_matches_reference() {
        for d in [1, 2, 4, 8, 16] {
            for i in 1..4000 {
                let v = i as f64 * 0.37;
                assert_eq!(make_divisible(v, d), reference(v, d), "v={v} d={d}");
            }
        }
    }

    #[test]
    fn make_divisible_known_values() {
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(1280.0, 8), 1280);
        assert_eq!(make_divisible(11.2, 8), 16);
        assert_eq!(make_divisible(0.3, 8), 1);
        assert_eq!(slim_channels(96, 0.35, 6, 8), 48);
    }

    #[test]
    fn width_parsing() {
        assert_eq!("0.5".parse::<Width>().unwrap().get(), 0.5);
        for bad in ["", "abc", "0", "-0.5", "1.5", "nan", "inf"] {
            assert!(bad.parse::<Width>().is_err(), "{bad}");
        }
        let r: WidthRange = "0.25:1.0".parse().unwrap();
        assert!(r.contains(Width::new(0.25).unwrap()));
        assert!(r.check(Width::new(0.2).unwrap()).is_err());
        assert!("1.0:0.25".parse::<WidthRange>().is_err());
        assert!("0.25".parse::<WidthRange>().is_err());
    }

    #[test]
    fn spec_parsing_round_trips() {
        let s: WidthSpec = "0.5/0.35/1".parse().unwrap();
        assert_eq!(s.to_string(), "0.5/0.35/1");
        assert_eq!(s, s.to_string().parse().unwrap());
        assert!("0.5/x".parse::<WidthSpec>().is_err());
        assert_eq!("0.73".parse::<WidthSpec>().unwrap().key(), "0.73");
    }

    #[test]
    fn per_stage_specs_of_equal_entries_are_the_uniform_width() {
        let half = Width::new(0.5).unwrap();
        let uniform = WidthSpec::Uniform(half);
        for spec in [WidthSpec::PerStage(vec![half; 5]), WidthSpec::per_stage(vec![half; 5]), "0.5/0.5/0.5/0.5/0.5".parse().unwrap()] {
            assert_eq!(spec, uniform);
            assert_eq!(spec.key(), "0.5");
            assert_eq!(spec.to_string(), "0.5");
            assert_eq!(spec.short(), "0.500");
        }
        assert!(matches!(WidthSpec::per_stage(vec![half; 3]), WidthSpec::Uniform(_)));
        let mixed: WidthSpec = "0.5/0.35/0.5".parse().unwrap();
        assert_ne!(mixed, uniform);
        assert_eq!(mixed.key(), "0.5/0.35/0.5");
    }

    #[test]
    fn width_lists_and_grids() {
        let l = parse_width_list("0.35:1.0:0.05").unwrap();
        assert_eq!(l.len(), 14);
        assert_eq!(l[0].key(), "0.35");
        assert_eq!(l[13].key(), "1");
        let l = parse_width_list("1.0,0.75,0.5").unwrap();
        assert_eq!(l.len(), 3);
        assert!(parse_width_list("1.0,,0.5").is_err());
        assert!(parse_width_list("0.3:0.2:0.1").is_err());
        assert!(parse_width_list("0.3:1:0").is_err());
        // Capped before expanding; duplicates (given, or made by 6-decimal rounding) kept once.
        for huge in ["0.35:1.0:1e-300", "0.35:1.0:0.0001", "0.35:1.0:0.0005,0.35:1.0:0.0005"] {
            let err = parse_width_list(huge).unwrap_err().to_string();
            assert!(err.contains("at most 1000"), "{huge}: {err}");
        }
        assert_eq!(parse_width_list("0.35:1.0:0.001").unwrap().len(), 651);
        let l = parse_width_list("0.5,1.0,0.5,0.35:0.36:0.0000001").unwrap_err();
        assert!(l.to_string().contains("at most"), "{l}");
        let l = parse_width_list("0.5,1.0,0.5,0.5/0.5,0.4:0.4000004:0.0000001").unwrap();
        assert_eq!(l.iter().map(|w| w.key()).collect::<Vec<_>>(), ["0.5", "1", "0.4"]);
        let g = WidthRange::new(Width::new(0.25).unwrap(), Width::MAX).unwrap().grid(4);
        assert_eq!(g.iter().map(|w| w.get()).collect::<Vec<_>>(), vec![0.25, 0.5, 0.75, 1.0]);
    }
}

//! The charts usnet draws from its own output files: top-1 vs MACs from the JSON that
//! `usnet eval --json` writes, and training curves from run directories (`metrics.jsonl`,
//! `validation.jsonl`). Drawing is [`crate::plot`]'s.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::plot::{Curve, Figure, LegendAt, Panel, PlotError, Shape};

/// The longest line read from a JSON-lines log; a longer one is an error, not an allocation.
pub const MAX_LINE: u64 = 1 << 20;
/// The largest eval JSON read.
pub const MAX_EVAL_FILE: u64 = 256 << 20;
/// Points per curve of a per-step series: longer runs are averaged over buckets of steps.
pub const MAX_STEP_POINTS: usize = 600;

/// The fields of a `usnet eval --json` row that the charts use (the others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvalPoint {
    /// The row's checkpoint label (a file can hold several checkpoints).
    #[serde(default)]
    pub label: Option<String>,
    pub width: String,
    pub macs: u64,
    pub top1: f64,
    /// BN statistics calibrated on demand rather than stored in the checkpoint.
    #[serde(default)]
    pub calibrated_on_demand: bool,
}

fn input_error(path: &Path, reason: impl Into<String>) -> PlotError {
    PlotError::Input { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads the rows of an eval JSON file.
pub fn read_eval(path: &Path) -> Result<Vec<EvalPoint>, PlotError> {
    let io = |source| PlotError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_EVAL_FILE + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_EVAL_FILE {
        return Err(input_error(path, format!("larger than {MAX_EVAL_FILE} bytes; not an eval JSON file")));
    }
    let rows: Vec<EvalPoint> = serde_json::from_str(&text).map_err(|e| {
        input_error(path, format!("{e}; expected the JSON that `usnet eval --json FILE` writes (a list of rows with width, macs, top1)"))
    })?;
    if rows.is_empty() {
        return Err(input_error(path, "holds no rows; evaluate at least one width (`usnet eval --json`)"));
    }
    Ok(rows)
}

/// The curves of one eval file labelled `label`: one curve, or one per checkpoint when the
/// file holds several (`label: checkpoint`).
pub fn eval_curves(label: &str, rows: &[EvalPoint]) -> Vec<Curve> {
    let mut groups: Vec<(Option<&str>, Vec<&EvalPoint>)> = Vec::new();
    for r in rows {
        let key = r.label.as_deref();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let several = groups.len() > 1;
    groups
        .into_iter()
        .map(|(key, g)| {
            let name = match key {
                Some(k) if several => format!("{label}: {k}"),
                _ => label.to_string(),
            };
            let points = g.iter().map(|r| (r.macs as f64, r.top1)).collect();
            Curve { hollow: g.iter().map(|r| r.calibrated_on_demand).collect(), ..Curve::new(name, points) }
        })
        .collect()
}

/// The top-1 vs MACs panel of `curves` (from [`eval_curves`]): MACs on a log axis when
/// their range is wide, hollow markers for widths calibrated on demand.
pub fn accuracy_panel(title: &str, curves: Vec<Curve>) -> Panel {
    let hollow = curves.iter().any(|c| c.hollow.iter().any(|&h| h));
    let note = hollow.then(|| "filled marker: stored BN statistics; hollow: calibrated on demand".into());
    Panel { x_si: true, note, curves, ..Panel::new(title, "MACs per image", "top-1 accuracy (%)") }
}

/// One line of `metrics.jsonl` (the fields the charts use).
#[derive(Debug, Deserialize)]
struct StepLine {
    step: u64,
    lr: f64,
    /// `(width, loss)`; a non-finite loss is written as null.
    losses: Vec<(String, Option<f64>)>,
}

/// One line of `validation.jsonl`.
#[derive(Debug, Deserialize)]
struct ValidationLine {
    epoch: u64,
    width: String,
    top1: f64,
}

/// What a run directory's logs hold, for the curves.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLog {
    pub label: String,
    /// `(step, lr, loss of the first width trained that step)`, by step, one per step.
    pub steps: Vec<(u64, f64, Option<f64>)>,
    /// `(width, [(epoch, top1)])`, widths in the order they first appear.
    pub validation: Vec<(String, Vec<(u64, f64)>)>,
}

/// Calls `f` with each non-empty line of `path` and its number; lines longer than
/// [`MAX_LINE`] are an error.
fn for_each_line(path: &Path, mut f: impl FnMut(usize, &str) -> Result<(), PlotError>) -> Result<(), PlotError> {
    let io = |source| PlotError::Io { path: path.to_path_buf(), source };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        let got = (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut buf).map_err(io)?;
        if got == 0 {
            break;
        }
        if got as u64 > MAX_LINE {
            return Err(input_error(path, format!("line {n} is longer than {MAX_LINE} bytes; not a usnet log")));
        }
        let line = std::str::from_utf8(&buf).map_err(|_| input_error(path, format!("line {n} is not UTF-8")))?;
        if !line.trim().is_empty() {
            f(n, line)?;
        }
    }
    Ok(())
}

/// Reads a run directory's `metrics.jsonl` and (if present) `validation.jsonl`.
pub fn read_run(dir: &Path, label: &str) -> Result<RunLog, PlotError> {
    let metrics = dir.join("metrics.jsonl");
    if !metrics.is_file() {
        let why = if dir.is_dir() { "has no metrics.jsonl" } else { "is not a directory" };
        return Err(input_error(dir, format!("{why}; pass a run directory (the --output of `usnet train`)")));
    }
    let mut steps: Vec<(u64, f64, Option<f64>)> = Vec::new();
    for_each_line(&metrics, |n, line| {
        let s: StepLine = serde_json::from_str(line).map_err(|e| input_error(&metrics, format!("line {n}: {e}")))?;
        steps.push((s.step, s.lr, s.losses.first().and_then(|l| l.1)));
        Ok(())
    })?;
    // A resumed run may repeat steps; the last line of a step wins.
    steps.reverse();
    steps.sort_by_key(|s| s.0);
    steps.dedup_by_key(|s| s.0);
    let mut validation: Vec<(String, Vec<(u64, f64)>)> = Vec::new();
    let vpath = dir.join("validation.jsonl");
    if vpath.is_file() {
        for_each_line(&vpath, |n, line| {
            let v: ValidationLine = serde_json::from_str(line).map_err(|e| input_error(&vpath, format!("line {n}: {e}")))?;
            match validation.iter_mut().find(|(w, _)| *w == v.width) {
                Some((_, pts)) => pts.push((v.epoch, v.top1)),
                None => validation.push((v.width, vec![(v.epoch, v.top1)])),
            }
            Ok(())
        })?;
        for (_, pts) in &mut validation {
            pts.reverse();
            pts.sort_by_key(|p| p.0);
            pts.dedup_by_key(|p| p.0);
        }
    }
    Ok(RunLog { label: label.to_string(), steps, validation })
}

/// `(step, value)` averaged over buckets of consecutive points so that at most `max`
/// remain; returns the points and the bucket size.
fn bucket_means(points: &[(f64, f64)], max: usize) -> (Vec<(f64, f64)>, usize) {
    let k = points.len().div_ceil(max.max(1)).max(1);
    let means = points
        .chunks(k)
        .map(|c| {
            let n = c.len() as f64;
            (c.iter().map(|p| p.0).sum::<f64>() / n, c.iter().map(|p| p.1).sum::<f64>() / n)
        })
        .collect();
    (means, k)
}

/// Training curves of `runs`: loss and learning rate per step, and validation top-1 per
/// epoch and width when any run has it. A run keeps its colour in every panel.
pub fn curves_figure(title: &str, runs: &[RunLog]) -> Figure {
    let per_step = |title: &str, y: &str| Panel { legend: LegendAt::UpperRight, x_log: Some(false), ..Panel::new(title, "step", y) };
    let mut loss = per_step("", "loss (first width of each step)");
    let mut lr = per_step("Learning rate", "learning rate");
    let mut val = Panel { x_log: Some(false), ..Panel::new("Validation top-1 after each epoch", "epoch", "top-1 accuracy (%)") };
    let mut bucket = 1;
    for (i, run) in runs.iter().enumerate() {
        let losses: Vec<(f64, f64)> = run.steps.iter().filter_map(|&(s, _, l)| Some((s as f64, l?))).filter(|p| p.1 > 0.0).collect();
        if !losses.is_empty() {
            let (pts, k) = bucket_means(&losses, MAX_STEP_POINTS);
            bucket = bucket.max(k);
            loss.curves.push(Curve { color: Some(i), markers: false, ..Curve::new(run.label.clone(), pts) });
        }
        let rates: Vec<(f64, f64)> = run.steps.iter().map(|&(s, r, _)| (s as f64, r)).collect();
        if !rates.is_empty() {
            let pts = bucket_means(&rates, MAX_STEP_POINTS).0;
            lr.curves.push(Curve { color: Some(i), markers: false, ..Curve::new(run.label.clone(), pts) });
        }
        for (j, (width, pts)) in run.validation.iter().enumerate() {
            let pts = pts.iter().map(|&(e, t)| (e as f64, t)).collect();
            val.curves.push(Curve { color: Some(i), shape: Some(Shape::nth(j)), ..Curve::new(format!("{} @ {width}", run.label), pts) });
        }
    }
    loss.title = if bucket > 1 { format!("Training loss (mean of every {bucket} steps)") } else { "Training loss".into() };
    let mut panels = vec![loss, lr, val];
    panels.retain(|p| !p.curves.is_empty());
    Figure { title: title.to_string(), panels }
}

/// `PATH` or `PATH=LABEL`: a path that exists is taken whole; otherwise the text after the
/// last `=` is the label. Without a label: the directory's name for a directory, else the
/// name of the file's directory (or the file's stem, for a file in the current directory).
pub fn path_and_label(arg: &str) -> (PathBuf, String) {
    let (path, label) = match arg.rsplit_once('=') {
        Some((p, l)) if !Path::new(arg).exists() && !p.is_empty() && !l.is_empty() => (PathBuf::from(p), Some(l.to_string())),
        _ => (PathBuf::from(arg), None),
    };
    let label = label.unwrap_or_else(|| {
        let named = if path.is_dir() { Some(path.as_path()) } else { path.parent().filter(|p| !p.as_os_str().is_empty()) };
        let name = match named {
            Some(d) => d.canonicalize().ok().and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned())),
            None => path.file_stem().map(|n| n.to_string_lossy().into_owned()),
        };
        name.unwrap_or_else(|| path.display().to_string())
    });
    (path, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_files_give_one_curve_per_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.json");
        let rows = r#"[{"checkpoint":"a","label":"us","width":"1","macs":2000000,"top1":91.5,"calibrated_on_demand":false,"extra":1},
                      {"label":"us","width":"0.42","macs":500000,"top1":88.0,"calibrated_on_demand":true}]"#;
        std::fs::write(&path, rows).unwrap();
        let rows = read_eval(&path).unwrap();
        let curves = eval_curves("run", &rows);
        assert_eq!(curves.len(), 1);
        assert_eq!(curves[0].label, "run");
        assert_eq!(curves[0].points, vec![(2e6, 91.5), (5e5, 88.0)]);
        assert_eq!(curves[0].hollow, vec![false, true]);
        assert!(accuracy_panel("t", curves).note.is_some());
        let mut two = rows.clone();
        two[1].label = Some("fixed".into());
        let labels: Vec<String> = eval_curves("f", &two).into_iter().map(|c| c.label).collect();
        assert_eq!(labels, ["f: us", "f: fixed"]);

        std::fs::write(&path, "{\"not\": \"a list\"}").unwrap();
        let err = read_eval(&path).unwrap_err().to_string();
        assert!(err.contains("test.json") && err.contains("usnet eval --json"), "{err}");
        std::fs::write(&path, "[]").unwrap();
        assert!(read_eval(&path).unwrap_err().to_string().contains("no rows"));
        assert!(read_eval(&dir.path().join("none.json")).unwrap_err().to_string().contains("none.json"));
    }

    #[test]
    fn run_logs_dedupe_resumed_steps_and_group_validation() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("us");
        assert!(read_run(&run, "us").unwrap_err().to_string().contains("not a directory"));
        std::fs::create_dir(&run).unwrap();
        assert!(read_run(&run, "us").unwrap_err().to_string().contains("no metrics.jsonl"));
        let line = |step: u64, loss: &str| {
            format!("{{\"step\":{step},\"total_steps\":9,\"epoch\":0,\"lr\":0.{step},\"losses\":[[\"1\",{loss}],[\"0.35\",9.0]],\"images_per_sec\":1.0,\"elapsed\":1.0}}\n")
        };
        let text = [line(1, "2.5"), line(2, "2.0"), line(2, "1.9"), line(3, "null"), "\n".into()].concat();
        std::fs::write(run.join("metrics.jsonl"), text).unwrap();
        let v = "{\"step\":3,\"epoch\":1,\"width\":\"1\",\"top1\":80.0,\"top5\":99.0,\"samples\":200}\n\
                 {\"step\":3,\"epoch\":1,\"width\":\"0.35\",\"top1\":70.0,\"top5\":99.0,\"samples\":200}\n\
                 {\"step\":6,\"epoch\":2,\"width\":\"1\",\"top1\":85.0,\"top5\":99.0,\"samples\":200}\n";
        std::fs::write(run.join("validation.jsonl"), v).unwrap();
        let log = read_run(&run, "us").unwrap();
        assert_eq!(log.steps, vec![(1, 0.1, Some(2.5)), (2, 0.2, Some(1.9)), (3, 0.3, None)]);
        assert_eq!(log.validation, vec![("1".to_string(), vec![(1, 80.0), (2, 85.0)]), ("0.35".to_string(), vec![(1, 70.0)])]);
        let fig = curves_figure("t", &[log.clone()]);
        assert_eq!(fig.panels.len(), 3);
        assert_eq!(fig.panels[0].curves[0].points, vec![(1.0, 2.5), (2.0, 1.9)]);
        assert_eq!(fig.panels[2].curves.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["us @ 1", "us @ 0.35"]);
        crate::plot::render_rgb(&fig).unwrap();

        std::fs::write(run.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
        let err = read_run(&run, "us").unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn long_runs_are_averaged_into_buckets() {
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, (i % 2) as f64)).collect();
        let (means, k) = bucket_means(&pts, 300);
        assert_eq!(k, 4);
        assert_eq!(means.len(), 250);
        assert_eq!(means[0], (1.5, 0.5));
        assert_eq!(bucket_means(&pts[..3], 300), (pts[..3].to_vec(), 1));
    }

    #[test]
    fn labels_come_from_the_argument_or_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("fixed_05");
        std::fs::create_dir(&run).unwrap();
        let file = run.join("test.json");
        std::fs::write(&file, "[]").unwrap();
        assert_eq!(path_and_label(file.to_str().unwrap()), (file.clone(), "fixed_05".to_string()));
        assert_eq!(path_and_label(&format!("{}=0.5x alone", file.display())), (file.clone(), "0.5x alone".to_string()));
        assert_eq!(path_and_label(run.to_str().unwrap()).1, "fixed_05");
        assert_eq!(path_and_label("eval.json").1, "eval");
    }
}

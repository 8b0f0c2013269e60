//! `usnet eval`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use usnet::checkpoint::{resolve, Checkpoint};
use usnet::config::{TrainConfig, TrainingMode};
use usnet::dataset::{first_batches, ExperimentData};
use usnet::eval::accuracy;
use usnet::plot::{write_line_plot, Curve, PlotSpec};
use usnet::profile::width_cost;
use usnet::width::parse_width_list;
use usnet::{CalibratedModel, WidthSpec};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  usnet eval --checkpoint runs/default\n  usnet eval --checkpoint runs/default --widths 0.35:1.0:0.05 --json eval.json\n  usnet eval --checkpoint runs/us --checkpoint runs/fixed-0.5 --plot compare.png")]
pub struct EvalArgs {
    /// Checkpoint file or run directory; repeat to compare several on one plot.
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    /// Widths: `grid` (each checkpoint's width_mult_list), a list, a grid MIN:MAX:STEP, or
    /// per-stage specs. Default: the calibrated widths (the grid for a fresh checkpoint).
    #[arg(long)]
    widths: Option<String>,
    /// Batches for calibrating a width that has no stored statistics (default: the
    /// config's bn_cal_batch_num).
    #[arg(long)]
    batches: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Ablation: no per-width BN statistics; every width uses the max width's statistics,
    /// sliced to its channels (calibrating the max width if needed).
    #[arg(long)]
    no_calibration: bool,
    /// Write the top-1 vs MACs plot here (default: eval.png beside the first checkpoint).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Which images to score: `test` (default), or `validation`, the training images the
    /// run held out (its config's validation_size).
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
}

/// The images `eval` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Test,
    Validation,
}

/// One row of the results.
#[derive(Debug, Clone, Serialize)]
struct Row {
    checkpoint: String,
    label: String,
    mode: TrainingMode,
    width: String,
    macs: u64,
    params: u64,
    top1: f64,
    top5: f64,
    samples: usize,
    /// Images whose logits were not all finite (each scored as a miss).
    non_finite: usize,
    split: Split,
    calibrated_on_demand: bool,
}

/// Parses `--widths`, where `grid` means the config's `width_mult_list`.
pub fn parse_widths(s: &str, config: &TrainConfig) -> anyhow::Result<Vec<WidthSpec>> {
    if s.trim() == "grid" {
        return Ok(config.width_list()?);
    }
    parse_width_list(s).with_context(|| format!("parsing --widths {s:?}"))
}

fn label_of(path: &Path) -> String {
    let dir = if path.is_dir() { path } else { path.parent().unwrap_or(path) };
    dir.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let device = usnet::device::device(None)?;
    let mut rows: Vec<Row> = Vec::new();
    for given in &args.checkpoint {
        let path = resolve(given);
        let ck = Checkpoint::load(&path, &device)?;
        let specs = match &args.widths {
            Some(s) => parse_widths(s, &ck.config)?,
            None if !ck.bn_stats.is_empty() => ck.bn_stats.iter().map(|(s, _)| s.clone()).collect(),
            None => ck.config.width_list()?,
        };
        let data = ExperimentData::load(&ck.config).with_context(|| format!("loading the data of {}", path.display()))?;
        let [_, h, _] = data.test.sample_shape();
        let mut cal = CalibratedModel::with_stats(ck.model.clone(), ck.bn_stats.clone());
        let n = args.batches.unwrap_or(ck.config.bn_cal_batch_num).max(1);
        if args.no_calibration {
            let max = WidthSpec::Uniform(cal.model.width_range().max());
            if cal.stats(&max).is_none() {
                cal.calibrate(first_batches(&data.calibration, n, &device)?, std::slice::from_ref(&max))?;
            }
            eprintln!("{}: --no-calibration: every width uses the statistics of width {max}, sliced", path.display());
            cal.share_statistics(&max, &specs)?;
        }
        let missing = cal.missing(&specs);
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
            eprintln!("{}: no stored BN statistics for width(s) {}; calibrating on demand over {n} batch(es)", path.display(), names.join(", "));
            let inputs = first_batches(&data.calibration, n, &device)?;
            cal.calibrate(inputs, &missing).context("calibrating on demand")?;
        }
        let label = label_of(given);
        let pb = super::progress::bar(specs.len() as u64, "eval");
        for spec in &specs {
            pb.set_message(format!("{label} width {spec}"));
            let cost = width_cost(&cal.model, spec, h)?;
            let images = match args.split {
                Split::Test => &data.test,
                Split::Validation => data.validation.as_ref().with_context(|| {
                    format!("{} holds out no validation images (validation_size = 0 in its config)", path.display())
                })?,
            };
            let acc = accuracy(&cal, images, spec, &device).with_context(|| format!("evaluating {} at width {spec}", path.display()))?;
            rows.push(Row {
                checkpoint: path.display().to_string(),
                label: label.clone(),
                mode: ck.config.mode,
                width: spec.to_string(),
                macs: cost.macs,
                params: cost.params,
                top1: acc.top1,
                top5: acc.top5,
                samples: acc.samples,
                non_finite: acc.non_finite,
                split: args.split,
                calibrated_on_demand: missing.contains(spec),
            });
            pb.inc(1);
        }
        pb.finish_and_clear();
    }

    println!("{:<16} {:>24} {:>10} {:>10} {:>8} {:>8}", "checkpoint", "width", "MACs", "params", "top-1", "top-5");
    for r in &rows {
        let mut note = if r.calibrated_on_demand { "  (calibrated on demand)".to_string() } else { String::new() };
        if r.non_finite > 0 {
            note.push_str(&format!("  ({} of {} images had non-finite logits, scored as misses)", r.non_finite, r.samples));
        }
        println!(
            "{:<16} {:>24} {:>9.2}M {:>9.3}M {:>7.2}% {:>7.2}%{note}",
            r.label,
            r.width,
            r.macs as f64 / 1e6,
            r.params as f64 / 1e6,
            r.top1,
            r.top5
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows)?;
        usnet::checkpoint::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let plot_path = match &args.plot {
        Some(p) => p.clone(),
        None => {
            let first = resolve(&args.checkpoint[0]);
            first.parent().unwrap_or(Path::new(".")).join("eval.png")
        }
    };
    let mut curves: Vec<Curve> = Vec::new();
    for r in &rows {
        let point = (r.macs as f64, r.top1);
        match curves.iter_mut().find(|c| c.label == r.label) {
            Some(c) => c.points.push(point),
            None => curves.push(Curve { label: r.label.clone(), points: vec![point] }),
        }
    }
    let spec = PlotSpec { title: "Top-1 accuracy vs MACs", x_label: "MACs per image", y_label: "top-1 accuracy (%)" };
    write_line_plot(&plot_path, &spec, &curves).with_context(|| format!("writing the plot {}", plot_path.display()))?;
    eprintln!("wrote {}", plot_path.display());
    Ok(())
}

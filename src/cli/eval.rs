//! `usnet eval`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use usnet::checkpoint::resolve;
use usnet::config::{TrainConfig, TrainingMode};
use usnet::dataset::{first_batches, ExperimentData};
use usnet::eval::accuracy;
use usnet::charts::{accuracy_panel, eval_curves, EvalPoint};
use usnet::plot::{write_figure, Figure};
use usnet::profile::width_cost;
use usnet::width::parse_width_list;
use usnet::{BnStatsSource, CalibratedModel, WidthSpec};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  usnet eval --checkpoint runs/default\n  usnet eval --checkpoint runs/default --widths 0.35:1.0:0.05 --json eval.json\n  usnet eval --checkpoint runs/us --checkpoint runs/fixed-0.5 --plot compare.png")]
pub struct EvalArgs {
    /// Checkpoint file or run directory; repeat to compare several on one plot.
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    /// Widths: `grid` (each checkpoint's width_mult_list), a list, a grid MIN:MAX:STEP, or
    /// per-stage specs; at most 1,000, and a width that gives the same channels as an
    /// earlier one is merged into it. Default: the calibrated widths (the grid for a fresh
    /// checkpoint).
    #[arg(long)]
    widths: Option<String>,
    /// Batches for calibrating a width that has no stored statistics (default: the
    /// config's bn_cal_batch_num).
    #[arg(long)]
    batches: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where BN statistics come from: `calibrated` (per width, the paper's method: stored,
    /// or calibrated on demand), `shared-max` (the max width's calibrated statistics sliced
    /// for every width), or `running` (the running statistics of training, shared by every
    /// width: the paper's "no calibration" baseline).
    #[arg(long, value_enum, default_value_t = BnStats::Calibrated)]
    bn_stats: BnStats,
    /// Renamed: use --bn-stats shared-max (what it did) or --bn-stats running (the paper's
    /// "no calibration").
    #[arg(long, hide = true)]
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

/// `--bn-stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BnStats {
    Calibrated,
    SharedMax,
    Running,
}

impl From<BnStats> for BnStatsSource {
    fn from(b: BnStats) -> Self {
        match b {
            BnStats::Calibrated => BnStatsSource::Calibrated,
            BnStats::SharedMax => BnStatsSource::SharedMax,
            BnStats::Running => BnStatsSource::Running,
        }
    }
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
    /// Where the BN statistics came from (`--bn-stats`).
    bn_stats: BnStatsSource,
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
    anyhow::ensure!(
        !args.no_calibration,
        "--no-calibration was renamed: --bn-stats shared-max is what it did (the max width's calibrated statistics, \
         sliced), --bn-stats running is the paper's \"no calibration\" (the running statistics of training)"
    );
    let device = usnet::device::device(None)?;
    let mut rows: Vec<Row> = Vec::new();
    for given in &args.checkpoint {
        let path = resolve(given);
        let ck = super::load_checkpoint(&path, &device)?;
        let specs = match &args.widths {
            Some(s) => parse_widths(s, &ck.config)?,
            None if !ck.bn_stats.is_empty() => ck.bn_stats.iter().map(|(s, _)| s.clone()).collect(),
            None => ck.config.width_list()?,
        };
        let specs = super::distinct_widths(&ck.model, specs, &path.display().to_string())?;
        let data = ExperimentData::load(&ck.config).with_context(|| format!("loading the data of {}", path.display()))?;
        let [_, h, _] = data.test.sample_shape();
        let mut cal = CalibratedModel::with_stats(ck.model.clone(), ck.bn_stats.clone());
        let n = args.batches.unwrap_or(ck.config.bn_cal_batch_num).max(1);
        let source = BnStatsSource::from(args.bn_stats);
        match source {
            BnStatsSource::Calibrated => {}
            BnStatsSource::SharedMax => {
                eprintln!("{}: --bn-stats shared-max: every width uses the max width's calibrated statistics, sliced", path.display())
            }
            BnStatsSource::Running => {
                eprintln!("{}: --bn-stats running: every width uses the running statistics of training, sliced", path.display())
            }
        }
        let batches = || first_batches(&data.calibration, n, &device);
        let missing = cal
            .prepare(source, &specs, ck.running_stats.as_ref(), batches)
            .with_context(|| format!("preparing the BN statistics of {}", path.display()))?;
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
            eprintln!("{}: no stored BN statistics for width(s) {}; calibrated on demand over {n} batch(es)", path.display(), names.join(", "));
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
                bn_stats: source,
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
        usnet::atomic_file::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let plot_path = match &args.plot {
        Some(p) => p.clone(),
        None => {
            let first = resolve(&args.checkpoint[0]);
            first.parent().unwrap_or(Path::new(".")).join("eval.png")
        }
    };
    let mut curves = Vec::new();
    let mut labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    labels.dedup();
    for label in labels {
        let points: Vec<EvalPoint> = rows
            .iter()
            .filter(|r| r.label == label)
            .map(|r| EvalPoint { label: None, width: r.width.clone(), macs: r.macs, top1: r.top1, calibrated_on_demand: r.calibrated_on_demand })
            .collect();
        curves.extend(eval_curves(label, &points));
    }
    let figure = Figure { title: String::new(), panels: vec![accuracy_panel("Top-1 accuracy vs MACs", curves)] };
    match write_figure(&plot_path, &figure) {
        Ok(()) => eprintln!("wrote {}", plot_path.display()),
        // The default place, beside the checkpoint, may not be writable (a read-only run):
        // the results are printed already, so say so and succeed.
        Err(e) if args.plot.is_none() => eprintln!(
            "note: no plot written: {} is not writable ({e}); pass --plot PATH to write it elsewhere",
            plot_path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("writing the plot {}", plot_path.display())),
    }
    Ok(())
}

//! `usnet plot accuracy` and `usnet curves`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use usnet::charts::{accuracy_panel, curves_figure, eval_curves, path_and_label, read_eval, read_run};
use usnet::plot::{write_figure, Figure};

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(subcommand)]
    chart: Chart,
}

#[derive(Debug, Subcommand)]
enum Chart {
    /// Top-1 vs MACs, one curve per `usnet eval --json` file.
    ///
    /// Hollow markers are widths whose BN statistics were calibrated on demand (not stored
    /// in the checkpoint). MACs go on a log axis when they span more than 10x. The format
    /// follows the extension of --output: .png or .svg.
    #[command(after_help = "Examples:\n  usnet eval --checkpoint runs/us --widths 0.35:1.0:0.05 --json runs/us/test.json\n  usnet plot accuracy --output acc.png runs/us/test.json runs/fixed_05/test.json\n  usnet plot accuracy --output acc.svg --title \"Fashion-MNIST\" runs/us/test.json=US-Net runs/snet/test.json=S-Net")]
    Accuracy(AccuracyArgs),
}

#[derive(Debug, Args)]
struct AccuracyArgs {
    /// The image to write (.png or .svg).
    #[arg(long, short)]
    output: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "Top-1 accuracy vs MACs")]
    title: String,
    /// Eval JSON files, each `FILE` or `FILE=LABEL` (default label: the file's directory).
    #[arg(required = true, value_name = "EVAL.json[=LABEL]")]
    evals: Vec<String>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    match args.chart {
        Chart::Accuracy(a) => accuracy(a),
    }
}

fn accuracy(args: AccuracyArgs) -> anyhow::Result<()> {
    let mut curves = Vec::new();
    for (path, label) in args.evals.iter().map(|arg| path_and_label(arg)) {
        curves.extend(eval_curves(&label, &read_eval(&path)?));
    }
    let figure = Figure { title: String::new(), panels: vec![accuracy_panel(&args.title, curves)] };
    write_figure(&args.output, &figure).with_context(|| format!("writing the plot {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  usnet curves --output curves.png --run runs/us --run runs/fixed_05\n  usnet curves --output curves.svg --run runs/us=US-Net --run runs/snet=S-Net --title \"10 epochs\"")]
pub struct CurvesArgs {
    /// The image to write (.png or .svg).
    #[arg(long, short)]
    output: PathBuf,
    /// A run directory (the --output of `usnet train`), `DIR` or `DIR=LABEL` (default
    /// label: the directory's name); repeat for several runs.
    #[arg(long = "run", required = true, value_name = "DIR[=LABEL]")]
    runs: Vec<String>,
    /// The figure's title.
    #[arg(long, default_value = "Training curves")]
    title: String,
}

/// `usnet curves`: training loss and learning rate per step, validation top-1 per epoch.
pub fn curves(args: CurvesArgs) -> anyhow::Result<()> {
    let mut logs = Vec::new();
    for arg in &args.runs {
        let (dir, label) = path_and_label(arg);
        let log = read_run(&dir, &label)?;
        if log.steps.is_empty() {
            eprintln!("{}: metrics.jsonl holds no steps yet; the run is left out", dir.display());
            continue;
        }
        if log.validation.is_empty() {
            eprintln!("{}: no validation.jsonl lines (validation_size = 0, or no epoch finished): no validation curve", dir.display());
        }
        logs.push(log);
    }
    anyhow::ensure!(!logs.is_empty(), "none of the runs has logged a step yet: nothing to plot");
    let figure = curves_figure(&args.title, &logs);
    write_figure(&args.output, &figure).with_context(|| format!("writing the plot {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

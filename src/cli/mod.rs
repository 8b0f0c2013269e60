//! Argument parsing and dispatch for the `usnet` binary.

use clap::{Parser, Subcommand};

mod bench;
mod calibrate;
mod eval;
mod profile;
mod progress;
mod train;

/// Universally Slimmable Networks: train once, run at any width.
///
/// One US-Net is trained with the sandwich rule and inplace distillation, its batch-norm
/// statistics are re-estimated per width after training (BN post-statistics), and it then
/// runs at any width in its range, or a width per stage, without retraining.
///
/// A typical session:
///
///   usnet train --output runs/fmnist          # Fashion-MNIST default, no flags needed
///   usnet calibrate --checkpoint runs/fmnist  # BN statistics for the width grid
///   usnet eval --checkpoint runs/fmnist --widths 0.35:1.0:0.05 --json runs/fmnist/eval.json
#[derive(Debug, Parser)]
#[command(name = "usnet", version, about, long_about, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a US-Net (or an S-Net / fixed-width baseline) from a TOML config.
    Train(train::TrainArgs),
    /// Compute BN post-statistics for widths and store them in the checkpoint.
    Calibrate(calibrate::CalibrateArgs),
    /// Evaluate checkpoints across widths: table, JSON and a top-1 vs MACs plot.
    Eval(eval::EvalArgs),
    /// Time training, calibration and inference against PyTorch, in the same run.
    Bench(bench::BenchArgs),
    /// Print MACs and parameters of a model at each width.
    ///
    /// Counts multiply-accumulates of every conv and linear layer that runs at the width
    /// (one image), and the conv and linear parameters the width uses, as the official
    /// profiling does.
    ///
    /// Example: usnet profile --arch us_mobilenet_v2 --input-size 224 --widths 1.0,0.75,0.5,0.35
    Profile(profile::ProfileArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

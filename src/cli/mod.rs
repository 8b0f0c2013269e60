//! Argument parsing and dispatch for the `usnet` binary.

use clap::{Parser, Subcommand};

mod profile;

/// Universally Slimmable Networks: train once, run at any width.
///
/// One US-Net is trained with the sandwich rule and inplace distillation, its batch-norm
/// statistics are re-estimated per width after training, and it then runs at any width in
/// its range (or a width per stage) without retraining.
#[derive(Debug, Parser)]
#[command(name = "usnet", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        Command::Profile(args) => profile::run(args),
    }
}

//! Argument parsing and dispatch for the `usnet` binary.

use clap::{Parser, Subcommand};

mod bench;
mod calibrate;
mod eval;
mod export;
mod import;
mod plot;
mod profile;
mod progress;
mod search;
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
///   usnet export --checkpoint runs/fmnist --width 0.5 --output fmnist-0.5.onnx
///   usnet plot accuracy --output acc.png runs/fmnist/eval.json
///   usnet curves --output curves.png --run runs/fmnist
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
    /// Draw charts from eval JSON files (`plot accuracy`: top-1 vs MACs).
    Plot(plot::PlotArgs),
    /// Draw training curves of run directories: loss, learning rate, validation top-1.
    Curves(plot::CurvesArgs),
    /// Time training, calibration and inference against PyTorch and ONNX Runtime, interleaved.
    Bench(bench::BenchArgs),
    /// Read a checkpoint of the official PyTorch US-Nets into a usnet run directory.
    ///
    /// Example: usnet import --pytorch us_mobilenet_v2.pth --config configs/imagenet_us_mobilenet_v2.toml --output runs/official-v2
    Import(import::ImportArgs),
    /// Write one width (uniform or per stage) as a plain network: ONNX or safetensors.
    ///
    /// Example: usnet export --checkpoint runs/fmnist --width 0.5 --output fmnist-0.5.onnx
    Export(export::ExportArgs),
    /// Print MACs and parameters of a model at each width.
    ///
    /// Counts multiply-accumulates of every conv and linear layer that runs at the width
    /// (one image), and the conv and linear parameters the width uses, as the official
    /// profiling does.
    ///
    /// Example: usnet profile --arch us_mobilenet_v2 --input-size 224 --widths 1.0,0.75,0.5,0.35
    Profile(profile::ProfileArgs),
    /// Choose the most accurate width (uniform or per stage) under a budget of MACs or latency.
    ///
    /// Scores candidates on the run's validation split, each calibrated for its width, and
    /// the Pareto front's networks once on the test set at the end.
    ///
    /// Example: usnet search --checkpoint runs/default --budget macs=2M --per-stage
    Search(search::SearchArgs),
}

/// The exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
pub const INTERRUPTED_EXIT: i32 = 130;

/// A command stopped by Ctrl-C after saving its work; it has said so, and exits with
/// [`INTERRUPTED_EXIT`].
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The number of processes of the MPI job that started this one (OpenMPI's or MPICH's
/// launcher variables), or `None` outside mpirun.
fn mpi_job_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
}

/// Runs `f` as this process's part of the job: alone outside mpirun; under mpirun (a build
/// with `--features mpi`) as one rank of the MPI world, with its share of the host's cores,
/// and a failing rank aborts the job (`MPI_Abort`) so that no peer waits for it. A stop by
/// Ctrl-C, which every process agreed on, ends normally.
pub(crate) fn in_job(f: impl FnOnce(&mut dyn usnet::collective::Collective) -> anyhow::Result<()>) -> anyhow::Result<()> {
    match mpi_job_size() {
        #[cfg(feature = "mpi")]
        Some(_) => {
            use usnet::collective::Collective;
            let mut mpi = usnet::collective::Mpi::init()?;
            let local: usize = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
            if std::env::var_os("RAYON_NUM_THREADS").is_none() && local > 1 {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                // Fails only when the pool already exists, which then keeps its size.
                let _ = rayon::ThreadPoolBuilder::new().num_threads((cores / local).max(1)).build_global();
            }
            let (rank, size) = (mpi.rank(), mpi.size());
            match f(&mut mpi) {
                Err(e) if size > 1 && !e.is::<Interrupted>() => {
                    eprintln!("error: rank {rank} of {size}: {e:#}; ending the job");
                    mpi.abort(1)
                }
                result => result,
            }
        }
        #[cfg(not(feature = "mpi"))]
        Some(n) if n > 1 => anyhow::bail!(
            "started by mpirun as one of {n} processes, but this usnet was built without MPI: \
             build it with `cargo build --release --features mpi` (Debian: apt install libopenmpi-dev openmpi-bin libclang-dev)"
        ),
        _ => f(&mut usnet::collective::SingleProcess),
    }
}

/// Loads a checkpoint and reports on stderr what loading it had to convert or leave out.
pub(crate) fn load_checkpoint(path: &std::path::Path, device: &burn::tensor::Device) -> anyhow::Result<usnet::checkpoint::Checkpoint> {
    let ck = usnet::checkpoint::Checkpoint::load(path, device)?;
    for note in &ck.notes {
        eprintln!("{}: {note}", path.display());
    }
    Ok(ck)
}

/// `specs` without widths that give the same network as an earlier one, each merge said on
/// stderr (`who` names the model or file).
pub(crate) fn distinct_widths(model: &usnet::UsNet, specs: Vec<usnet::WidthSpec>, who: &str) -> anyhow::Result<Vec<usnet::WidthSpec>> {
    let (kept, merged) = model.distinct_widths(&specs)?;
    if !merged.is_empty() {
        let shown: Vec<String> = merged.iter().take(8).map(|(dropped, into)| format!("{dropped} into {into}")).collect();
        let more = if merged.len() > 8 { format!(" (and {} more)", merged.len() - 8) } else { String::new() };
        eprintln!(
            "{who}: {} width(s) give the same channels in every layer as an earlier one, merged: {}{more}",
            merged.len(),
            shown.join(", ")
        );
    }
    Ok(kept)
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Curves(args) => plot::curves(args),
        Command::Profile(args) => profile::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Import(args) => import::run(args),
        Command::Export(args) => export::run(args),
        Command::Search(args) => search::run(args),
    }
}

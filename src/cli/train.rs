//! `usnet train`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use usnet::config::{TrainConfig, DEFAULT_CONFIG};

use usnet::train::{EpochValidation, StepReport, TrainEvents, TrainOptions};

use super::progress::bar;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  usnet train                                   # Fashion-MNIST default into runs/default
  usnet train --config configs/cifar10_us_v2.toml --output runs/c10
  usnet train --output runs/c10 --resume        # continue after a crash, same steps
  usnet train --max-steps 20 --output /tmp/smoke
  mpirun -np 2 usnet train --output runs/dp     # data-parallel, 2 processes (--features mpi)
  usnet train --ghost-batches 2 --output runs/g # 1 process, trains as `mpirun -np 2` does

Under mpirun (built with --features mpi) every process joins the job: each trains on its
shard of every batch, the gradients are averaged over all processes, and rank 0 alone
writes the run directory (which every process must see, for --resume). Each process uses
cores / (processes on its host) threads unless RAYON_NUM_THREADS is set. A process that
fails or dies ends the whole job with an error; resume it with the same mpirun line and
--resume.

On --resume the run's stored config wins: --data-dir and --backend are taken (they change
no result); a changed schedule (--epochs, --batch-size, or those keys in --config) is refused
unless --force; any other setting that differs is ignored and said so. Resuming a finished
run with an unchanged schedule trains nothing and changes nothing.")]
pub struct TrainArgs {
    /// Experiment config (strict TOML, see configs/). Default: the Fashion-MNIST US-Net,
    /// or with --resume the run's own config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory: checkpoint.safetensors, metrics.jsonl, config.toml.
    #[arg(long, default_value = "runs/default")]
    output: PathBuf,
    /// Continue the run in --output from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// With --resume: take a changed schedule (epochs, batch size, learning rate, ...)
    /// instead of refusing it; the learning rate then continues on the new schedule.
    #[arg(long, requires = "resume")]
    force: bool,
    /// Override num_epochs (1 to 1,000,000); the learning-rate schedule spans them.
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop early after this many iterations in total. The learning rate still follows the
    /// schedule of all the epochs, and the stop is not saved: a later --resume trains on.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Override batch_size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Override data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backend: flex, tch, wgpu or cuda (as built).
    #[arg(long)]
    backend: Option<String>,
    /// Split each batch into this many chunks, each normalised with its own BN statistics,
    /// and average their gradients: one process trains as `mpirun -np N` processes do.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    ghost_batches: u16,
}

/// Loads `--config` (or the default, or on resume the run's own) and applies the
/// command-line overrides; on resume, [`usnet::train::resume_config`] then decides which of
/// its settings win over the stored ones.
fn resolve_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let stored = usnet::checkpoint::resolve(&args.output);
    let mut config = match &args.config {
        Some(path) => TrainConfig::load(path)?,
        // Resuming without --config continues with the run's own config, not the default.
        None if args.resume && stored.exists() => usnet::checkpoint::read_meta(&stored)?.0,
        None => TrainConfig::from_toml(DEFAULT_CONFIG, "the built-in default config")?,
    };
    config.num_epochs = args.epochs.unwrap_or(config.num_epochs);
    config.max_steps = args.max_steps.unwrap_or(config.max_steps);
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.data_dir = args.data_dir.clone().or(config.data_dir);
    config.backend = args.backend.clone().or(config.backend);
    config.validate().context("checking the config after command-line overrides")?;
    Ok(config)
}

/// Progress bar, validation lines and notes on stderr.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn println(&self, line: String) {
        match &self.bar {
            Some(pb) if !pb.is_hidden() => pb.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

impl TrainEvents for Progress {
    fn step(&mut self, r: &StepReport) {
        let pb = self.bar.get_or_insert_with(|| {
            let pb = bar(r.total_steps, "train");
            pb.set_position(r.step.saturating_sub(1));
            pb
        });
        let losses: Vec<String> = r.losses.iter().map(|(w, l)| format!("{w}:{l:.3}")).collect();
        pb.set_message(format!("ep {} lr {:.4} {:.0} img/s loss {}", r.epoch, r.lr, r.images_per_sec, losses.join(" ")));
        pb.set_position(r.step);
        if !pb.is_hidden() {
            return;
        }
        // Without a terminal, a line every 50 steps.
        if r.step.is_multiple_of(50) || r.step == r.total_steps {
            eprintln!("step {}/{} epoch {} lr {:.4} {:.0} img/s loss {}", r.step, r.total_steps, r.epoch, r.lr, r.images_per_sec, losses.join(" "));
        }
    }

    fn validation(&mut self, v: &EpochValidation) {
        self.println(format!("epoch {} validation top-1 at width {}: {:.2}% ({} images)", v.epoch, v.width, v.top1, v.samples));
    }

    fn note(&mut self, message: &str) {
        self.println(format!("note: {message}"));
    }
}

/// The stop flag a first Ctrl-C sets (training then finishes its step, saves and returns); a
/// second Ctrl-C exits at once with status 130.
fn ctrl_c_stop() -> Option<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now; the last checkpoint on disk stays as it was");
            std::process::exit(super::INTERRUPTED_EXIT);
        }
        eprintln!("\ninterrupted: finishing this step, then saving (Ctrl-C again to exit at once)");
    });
    match installed {
        Ok(()) => Some(stop),
        Err(e) => {
            eprintln!("note: Ctrl-C will stop training without saving ({e})");
            None
        }
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    super::in_job(|collective| run_in(args, collective))
}

fn run_in(args: TrainArgs, collective: &mut dyn usnet::collective::Collective) -> anyhow::Result<()> {
    let config = resolve_config(&args)?;
    let root = collective.is_root();
    let stop = ctrl_c_stop();
    let options =
        TrainOptions { resume: args.resume, force: args.force, stop: stop.clone(), ghost_batches: args.ghost_batches.into() };
    let mut progress = Progress { bar: None };
    let result = usnet::train::train_with(&config, &args.output, &options, collective, &mut progress);
    if let Some(pb) = &progress.bar {
        pb.finish();
    }
    let ck = result.with_context(|| format!("training into {}", args.output.display()))?;
    let interrupted = stop.is_some_and(|s| s.load(Ordering::SeqCst)) && !ck.state.finished;
    if !root {
        return if interrupted { Err(super::Interrupted.into()) } else { Ok(()) };
    }
    let path = usnet::checkpoint::resolve(&args.output);
    let resume = format!("usnet train --output {} --resume", args.output.display());
    if ck.state.finished {
        eprintln!("trained {} steps; checkpoint {}", ck.state.step, path.display());
    } else if interrupted {
        eprintln!("interrupted at step {}; checkpoint {} saved; continue with: {resume}", ck.state.step, path.display());
        return Err(super::Interrupted.into());
    } else {
        eprintln!(
            "stopped at step {} (--max-steps); checkpoint {}; continue with: {resume}",
            ck.state.step,
            path.display()
        );
    }
    Ok(())
}

//! `usnet train`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use usnet::config::{TrainConfig, DEFAULT_CONFIG};

use super::progress::bar;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  usnet train                                   # Fashion-MNIST default into runs/default\n  usnet train --config configs/cifar10_us_v2.toml --output runs/c10\n  usnet train --output runs/c10 --resume        # continue after a crash, same steps\n  usnet train --max-steps 20 --output /tmp/smoke")]
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
    /// Override num_epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many iterations in total.
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
}

/// Loads `--config` (or the default) and applies the command-line overrides.
fn resolve_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let stored = usnet::checkpoint::resolve(&args.output);
    let mut config = match &args.config {
        Some(path) => TrainConfig::load(path)?,
        // Resuming without --config continues with the run's own config, not the default.
        None if args.resume && stored.exists() => {
            let device = usnet::device::device(None)?;
            usnet::checkpoint::Checkpoint::load(&stored, &device)?.config
        }
        None => TrainConfig::from_toml(DEFAULT_CONFIG, "the built-in default config")?,
    };
    if let Some(e) = args.epochs {
        config.num_epochs = e;
    }
    if let Some(s) = args.max_steps {
        config.max_steps = s;
    }
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = Some(d.clone());
    }
    if let Some(b) = &args.backend {
        config.backend = Some(b.clone());
    }
    config.validate().context("checking the config after command-line overrides")?;
    Ok(config)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = resolve_config(&args)?;
    let progress: std::cell::RefCell<Option<indicatif::ProgressBar>> = std::cell::RefCell::new(None);
    let on_validation = &mut |v: &usnet::train::EpochValidation| {
        let line = format!("epoch {} validation top-1 at width {}: {:.2}% ({} images)", v.epoch, v.width, v.top1, v.samples);
        match progress.borrow().as_ref() {
            Some(pb) if !pb.is_hidden() => pb.println(line),
            _ => eprintln!("{line}"),
        }
    };
    let result = usnet::train::train(&config, &args.output, args.resume, &mut |r| {
        let mut progress = progress.borrow_mut();
        let pb = progress.get_or_insert_with(|| {
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
        if r.step % 50 == 0 || r.step == r.total_steps {
            eprintln!("step {}/{} epoch {} lr {:.4} {:.0} img/s loss {}", r.step, r.total_steps, r.epoch, r.lr, r.images_per_sec, losses.join(" "));
        }
    }, on_validation);
    if let Some(pb) = progress.borrow().as_ref() {
        pb.finish();
    }
    let ck = result.with_context(|| format!("training into {}", args.output.display()))?;
    eprintln!(
        "trained {} steps; checkpoint {}",
        ck.state.step,
        usnet::checkpoint::resolve(&args.output).display()
    );
    Ok(())
}

//! `usnet import`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use usnet::checkpoint::{Checkpoint, TrainState, FILE_NAME};
use usnet::config::TrainConfig;
use usnet::interop::check_output;
use usnet::interop::pytorch::import_pytorch;

/// Read a checkpoint of the official PyTorch US-Nets into a usnet run directory.
///
/// Reads what the official train.py saves (`{'model': state_dict, ...}` or a bare state dict,
/// with or without DataParallel's `module.` prefix). Each US batch norm's `.bn.{i}.` statistics
/// become the stored BN statistics of `width_mult_list[i]` of --config, in the list's order.
/// The optimizer state and unknown entries are left out (said on stderr); a missing or
/// mis-shaped tensor is an error naming the key and both shapes, and nothing is written.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  usnet import --pytorch us_mobilenet_v2.pth --config configs/imagenet_us_mobilenet_v2.toml --output runs/official-v2\n  usnet eval --checkpoint runs/official-v2\n  usnet export --checkpoint runs/official-v2 --width 0.5 --output v2-0.5.onnx")]
pub struct ImportArgs {
    /// The PyTorch checkpoint (.pth / .pt, written by torch.save).
    #[arg(long, value_name = "FILE")]
    pytorch: PathBuf,
    /// The usnet config of the model the checkpoint holds: `[model]` and `width_mult_list`
    /// (the official config's list, in its order) must match it; the dataset is what
    /// eval and calibrate use later.
    #[arg(long, value_name = "CONFIG.toml")]
    config: PathBuf,
    /// The run directory to create (checkpoint.safetensors and config.toml).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Replace a checkpoint already in DIR.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let config = TrainConfig::load(&args.config)?;
    let target = args.output.join(FILE_NAME);
    check_output(&target, args.force)?;
    let device = usnet::device::device(None)?;
    let imported = import_pytorch(&args.pytorch, &config.model, &config.width_mult_list, &device)
        .with_context(|| format!("importing {}", args.pytorch.display()))?;
    let who = args.pytorch.display();
    for line in &imported.ignored {
        eprintln!("{who}: {line}");
    }
    for name in &imported.shared_statistics {
        eprintln!(
            "{who}: {name} is a plain BatchNorm2d (it does not slim): its one set of running statistics was given to every width; \
             `usnet calibrate --checkpoint {}` gives it per-width statistics",
            args.output.display()
        );
    }
    let widths: Vec<String> = imported.bn_stats.iter().map(|(s, _)| s.to_string()).collect();
    let ck = Checkpoint {
        config: config.clone(),
        state: TrainState { finished: true, ..TrainState::default() },
        model: imported.model,
        momentum: Default::default(),
        bn_stats: imported.bn_stats,
        running_stats: None,
        notes: Vec::new(),
    };
    std::fs::create_dir_all(&args.output).with_context(|| format!("creating {}", args.output.display()))?;
    let _lock = usnet::run_lock::RunLock::acquire(&args.output)?;
    ck.save(&target)?;
    let config_path = args.output.join("config.toml");
    usnet::atomic_file::write_atomic(&config_path, config.to_toml().as_bytes()).with_context(|| format!("writing {}", config_path.display()))?;
    eprintln!(
        "imported {} ({}, {} parameters) with BN statistics for width(s) {} into {}",
        args.pytorch.display(),
        config.model.arch,
        ck.model.params().iter().map(|(_, _, t)| t.shape().iter().product::<usize>()).sum::<usize>(),
        widths.join(", "),
        target.display()
    );
    Ok(())
}

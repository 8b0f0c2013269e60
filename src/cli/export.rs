//! `usnet export`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use usnet::checkpoint::resolve;
use usnet::dataset::{first_batches, ExperimentData};
use usnet::interop::{check_output, export, ExportFormat, InputInfo};
use usnet::{CalibratedModel, WidthSpec};

/// Write one width of a model as a plain fixed-width network: ONNX or safetensors.
///
/// The format follows the output's extension. ONNX (opset 13): batch norm folded into the
/// convs, ReLU6 as Clip, depthwise convs as grouped Conv, global average pool, Gemm, and a
/// dynamic batch dimension. safetensors: that width's sliced weights under the official
/// names with batch norm unfolded, loadable into a plain PyTorch MobileNet of that width.
/// Both carry metadata: the width spec, channel counts, MACs, params, input size and
/// normalisation, class names where known, and the usnet version.
///
/// BN statistics are the stored ones of that width, or calibrated on demand from the run's
/// training data (as eval does; not stored: `usnet calibrate` stores them).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  usnet export --checkpoint runs/fmnist --width 0.5 --output fmnist-0.5.onnx\n  usnet export --checkpoint runs/fmnist --width 0.35/0.5/0.75/1.0/1.0 --output mixed.onnx   # per stage\n  usnet export --checkpoint runs/fmnist --width 1.0 --output fmnist-1.0.safetensors --force")]
pub struct ExportArgs {
    /// Checkpoint file, or a run directory holding checkpoint.safetensors.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The width: uniform (0.5) or per stage ('/'-separated: the stem, then one per
    /// block-table row; v2's head is fixed and has no entry).
    #[arg(long)]
    width: WidthSpec,
    /// The file to write: *.onnx or *.safetensors.
    #[arg(long)]
    output: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Batches for calibrating a width that has no stored statistics (default: the
    /// config's bn_cal_batch_num).
    #[arg(long)]
    batches: Option<usize>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let format = ExportFormat::from_path(&args.output)?;
    check_output(&args.output, args.force)?;
    let path = resolve(&args.checkpoint);
    let device = usnet::device::device(None)?;
    let ck = super::load_checkpoint(&path, &device)?;
    let mut cal = CalibratedModel::with_stats(ck.model.clone(), ck.bn_stats.clone());
    let n = args.batches.unwrap_or(ck.config.bn_cal_batch_num).max(1);
    let spec = args.width.clone();
    let missing = cal
        .calibrate_missing(std::slice::from_ref(&spec), || {
            let data = ExperimentData::load(&ck.config)?;
            first_batches(&data.calibration, n, &device)
        })
        .with_context(|| format!("{} at width {spec}", path.display()))?;
    if !missing.is_empty() {
        eprintln!(
            "{}: no stored BN statistics for width {spec}; calibrated on demand over {n} batch(es) (not stored: `usnet calibrate` stores them)",
            path.display()
        );
    }
    let fixed = cal.fixed(&spec).with_context(|| format!("{} at width {spec}", path.display()))?;
    let input = InputInfo::from_config(&ck.config)?;
    let done = export(&fixed, &input, &args.output, args.force)?;
    let kind = match format {
        ExportFormat::Onnx => "ONNX",
        ExportFormat::Safetensors => "safetensors",
    };
    eprintln!(
        "wrote {} ({kind}, {}, width {spec}: {:.2}M MACs at {}x{}, {:.3}M params, channels {:?}; {} bytes)",
        done.path.display(),
        fixed.arch,
        fixed.macs(input.size) as f64 / 1e6,
        input.size[0],
        input.size[1],
        fixed.params() as f64 / 1e6,
        fixed.channel_counts(),
        done.bytes
    );
    Ok(())
}

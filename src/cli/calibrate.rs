//! `usnet calibrate`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use usnet::checkpoint::resolve;
use usnet::collective::Collective;
use usnet::dataset::{first_batches, ExperimentData};
use usnet::CalibratedModel;

use super::eval::parse_widths;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  usnet calibrate --checkpoint runs/default\n  usnet calibrate --checkpoint runs/default --widths 0.35:1.0:0.05 --batches 16\n  usnet calibrate --checkpoint runs/default --widths 0.5/0.35/0.5/0.75/1.0   # per stage")]
pub struct CalibrateArgs {
    /// Checkpoint file, or a run directory holding checkpoint.safetensors.
    #[arg(long)]
    checkpoint: PathBuf,
    /// `grid` (the config's width_mult_list, default), a list (1.0,0.75,0.5), a grid
    /// MIN:MAX:STEP, or per-stage specs (the stem, then one width per block-table row, '/'
    /// separated; v2's head is fixed and has no entry). At most 1,000 widths; a width that
    /// gives the same channels as an earlier one is merged into it.
    #[arg(long, default_value = "grid")]
    widths: String,
    /// Training batches per width (default: the config's bn_cal_batch_num).
    #[arg(long)]
    batches: Option<usize>,
}

pub fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    super::in_job(|collective| run_in(args, collective))
}

/// Under mpirun, rank r calibrates on batches r, r + R, ... of the first `--batches`, the
/// cumulative sums are all-reduced (the statistics of one process over all of them), and
/// rank 0 alone locks and writes the checkpoint.
fn run_in(args: CalibrateArgs, collective: &mut dyn Collective) -> anyhow::Result<()> {
    let path = resolve(&args.checkpoint);
    let (rank, size) = (collective.rank(), collective.size());
    // One writer per run directory: not while it trains, nor two calibrations at once. (A
    // directory that does not exist gets no lock file: loading reports the missing file.)
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let _lock = (rank == 0 && dir.is_dir()).then(|| usnet::run_lock::RunLock::acquire(dir)).transpose()?;
    let device = usnet::device::device(None)?;
    let mut ck = super::load_checkpoint(&path, &device)?;
    let specs = parse_widths(&args.widths, &ck.config)?;
    let specs = super::distinct_widths(&ck.model, specs, &path.display().to_string())?;
    let batches = args.batches.unwrap_or(ck.config.bn_cal_batch_num);
    anyhow::ensure!(batches >= 1, "--batches must be at least 1");
    let data = ExperimentData::load(&ck.config).context("loading the calibration data")?;
    let start = std::time::Instant::now();
    let inputs = first_batches(&data.calibration, batches, &device)?;
    let total = inputs.len();
    let mine: Vec<_> = inputs.into_iter().skip(rank).step_by(size).collect();
    let mut cal = CalibratedModel::with_stats(ck.model.clone(), ck.bn_stats.clone());
    let pb = if rank == 0 { super::progress::bar(specs.len() as u64, "calibrate") } else { indicatif::ProgressBar::hidden() };
    for spec in &specs {
        pb.set_message(format!("width {spec}"));
        cal.calibrate_with(mine.clone(), std::slice::from_ref(spec), collective)
            .with_context(|| format!("calibrating width {spec}"))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    if rank != 0 {
        return Ok(());
    }
    ck.bn_stats = cal.all_stats();
    ck.save(&path)?;
    eprintln!(
        "calibrated {} width(s) over {} batch(es) of {} in {:.1}s; {} width(s) stored in {}",
        specs.len(),
        total,
        ck.config.batch_size,
        start.elapsed().as_secs_f64(),
        ck.bn_stats.len(),
        path.display()
    );
    Ok(())
}

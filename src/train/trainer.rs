//! The training loop: data, the sandwich step, schedules, metrics and checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, TrainState, FILE_NAME};
use crate::collective::{Collective, SingleProcess};
use crate::config::{TrainConfig, TrainingMode};
use crate::dataset::{images, ExperimentData};
use crate::error::{Error, Result};
use crate::init::Init;
use crate::model::UsNet;
use crate::run_lock::RunLock;
use crate::train::resume::resume_config;
use crate::layers::RunningStats;
use crate::train::sandwich::{train_step_parallel, Parallel, StepOptions, WidthSampler};
use crate::train::sgd::Sgd;
use crate::width::WidthSpec;

/// How often a checkpoint is written inside an epoch, besides the end of each epoch.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(120);

/// What the loop reports after each iteration.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    pub lr: f64,
    /// `(width, loss)` for each width trained this iteration.
    pub losses: Vec<(String, f32)>,
    /// Images of the global batch (all processes) per second of this iteration.
    pub images_per_sec: f64,
    /// Seconds since this process started training.
    pub elapsed: f64,
    /// Seconds of this iteration, and of them the gradient all-reduce's (0 in one process
    /// without ghost batches, where there is none).
    pub step_secs: f64,
    pub all_reduce_secs: f64,
}

/// Where a run writes.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// One line per epoch and width: validation top-1 after that epoch.
    pub fn validation(&self) -> PathBuf {
        self.dir.join("validation.jsonl")
    }
}

/// Validation accuracy of one width at the end of an epoch (a line of `validation.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct EpochValidation {
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    pub width: String,
    pub top1: f64,
    pub top5: f64,
    pub samples: usize,
}

/// The widths scored on the validation split after each epoch: a fixed net's width, an
/// S-Net's switch widths, or a US-Net's max and min width (which bound the rest).
fn validation_widths(config: &TrainConfig, model: &UsNet) -> Result<Vec<WidthSpec>> {
    Ok(match config.mode {
        TrainingMode::Fixed | TrainingMode::Slimmable => config.width_list()?,
        TrainingMode::Universal => {
            let (min, max) = model.min_max();
            vec![max, min]
        }
    })
}

/// Calibrates BN post-statistics of [`validation_widths`] on the calibration batches and
/// scores them on the validation split.
fn validate(config: &TrainConfig, model: &UsNet, data: &ExperimentData, step: u64, epoch: u64) -> Result<Vec<EpochValidation>> {
    let Some(validation) = &data.validation else { return Ok(Vec::new()) };
    let device = crate::device::device(config.backend.as_deref())?;
    let specs = validation_widths(config, model)?;
    let mut cal = crate::CalibratedModel::new(model.clone());
    cal.calibrate(crate::dataset::first_batches(&data.calibration, config.bn_cal_batch_num.max(1), &device)?, &specs)?;
    specs
        .iter()
        .map(|spec| {
            let acc = crate::eval::accuracy(&cal, validation, spec, &device)?;
            Ok(EpochValidation { step, epoch, width: spec.to_string(), top1: acc.top1, top5: acc.top5, samples: acc.samples })
        })
        .collect()
}

/// The widths trained at iteration `step`: seeded by (seed, step), so a resumed run draws
/// exactly what an uninterrupted one would.
pub fn widths_for_step(config: &TrainConfig, model: &UsNet, step: u64) -> Result<Vec<WidthSpec>> {
    let list = config.width_list()?;
    Ok(match config.mode {
        TrainingMode::Fixed => list,
        TrainingMode::Slimmable => crate::model::snet::training_widths(list),
        TrainingMode::Universal => {
            let sampler = WidthSampler {
                num_sample_training: config.num_sample_training,
                sandwich: config.sandwich_rule,
                teacher: config.inplace_distill,
                per_stage_groups: config.nonuniform.then(|| model.num_width_groups()),
            };
            let mut rng = StdRng::seed_from_u64(config.random_seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            sampler.sample(&model.width_range(), &mut rng)
        }
    })
}

/// How one invocation of [`train`] runs: nothing here is part of the experiment or saved.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue the run in the directory from its checkpoint, its stored config winning as
    /// [`resume_config`] decides.
    pub resume: bool,
    /// On resume, take a changed schedule or optimizer setting instead of refusing it.
    pub force: bool,
    /// When set (by a Ctrl-C handler, say), the run stops after the current iteration, saves
    /// a checkpoint it can resume from, and returns it unfinished. In a job of several
    /// processes, any process's flag stops them all after the same iteration.
    pub stop: Option<Arc<AtomicBool>>,
    /// Split each process's batch into this many chunks, each normalised with its own BN
    /// statistics, and average their gradients ([`crate::train::train_step_parallel`]): one
    /// process with `ghost_batches = R` trains as `R` processes do. 0 or 1: none.
    pub ghost_batches: usize,
}

/// What [`train`] reports as it goes; every method does nothing by default (`()` ignores all).
pub trait TrainEvents {
    /// After each iteration.
    fn step(&mut self, _report: &StepReport) {}
    /// After each epoch, one call per validated width.
    fn validation(&mut self, _row: &EpochValidation) {}
    /// A decision the user should hear about: a setting ignored or taken on resume, a run
    /// that had already finished, statistics that training made stale.
    fn note(&mut self, _message: &str) {}
}

impl TrainEvents for () {}

/// The iterations of a run: the learning-rate schedule spans `num_epochs` epochs, and
/// `max_steps` only stops the run early at `stop_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub per_epoch: u64,
    /// Iterations of the whole schedule, `per_epoch * num_epochs`.
    pub total: u64,
    /// Where this invocation stops: `total`, or `max_steps` when that is smaller.
    pub stop_at: u64,
}

impl Schedule {
    /// The schedule of `config` with `per_epoch` iterations an epoch.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the step count does not fit in 64 bits.
    pub fn new(config: &TrainConfig, per_epoch: u64) -> Result<Self> {
        let total = per_epoch.checked_mul(config.num_epochs as u64).ok_or_else(|| {
            Error::InvalidConfig(format!("{} epochs of {per_epoch} iterations do not fit in a step count", config.num_epochs))
        })?;
        let stop_at = if config.max_steps > 0 { total.min(config.max_steps) } else { total };
        Ok(Schedule { per_epoch, total, stop_at })
    }

    /// The learning rate of iteration `step` (0-based).
    pub fn lr(&self, config: &TrainConfig, step: u64) -> f64 {
        config.lr_at(step, self.total, self.per_epoch)
    }
}

/// Where a run starts: fresh, or from its checkpoint.
struct Start {
    config: TrainConfig,
    model: UsNet,
    sgd: Sgd,
    state: TrainState,
    running: RunningStats,
}

/// The model, optimizer and position to train from: a fresh model, or the run's checkpoint
/// with the config [`resume_config`] settles on. `Err(Ok(checkpoint))` means there is nothing
/// to train: the run had finished and its schedule is unchanged.
fn start_or_resume(
    config: &TrainConfig,
    paths: &RunPaths,
    options: &TrainOptions,
    events: &mut dyn TrainEvents,
    device: &burn::tensor::Device,
) -> Result<std::result::Result<Start, Checkpoint>> {
    let existing = paths.checkpoint();
    if !options.resume {
        if existing.exists() {
            return Err(Error::Checkpoint {
                path: existing,
                reason: "a checkpoint is already here; pass --resume to continue it, or choose another --output".into(),
            });
        }
        let model = UsNet::init(&config.model, &Init::Kaiming { seed: config.random_seed }, device)?;
        let running = model.new_running_stats();
        let start = Start { config: config.clone(), model, sgd: Sgd::new(config.sgd()), state: TrainState::default(), running };
        return Ok(Ok(start));
    }
    if !existing.exists() {
        return Err(Error::Checkpoint {
            path: existing,
            reason: "--resume found no checkpoint here; run without --resume to start a new run".into(),
        });
    }
    let ck = Checkpoint::load(&existing, device)?;
    for note in &ck.notes {
        events.note(note);
    }
    let resumed = resume_config(&ck.config, config, options.force)?;
    for note in &resumed.notes {
        events.note(&format!("--resume: {note}"));
    }
    let same_length = (resumed.config.num_epochs, resumed.config.batch_size) == (ck.config.num_epochs, ck.config.batch_size);
    if ck.state.finished && same_length {
        events.note(&format!(
            "the run in {} finished at step {}; nothing to train (its checkpoint and statistics are unchanged)",
            paths.dir.display(),
            ck.state.step
        ));
        return Ok(Err(ck));
    }
    if !ck.bn_stats.is_empty() {
        events.note(&format!(
            "the BN statistics of {} width(s) stored at step {} will not match the weights training goes on to; \
             they are dropped at the next save: run `usnet calibrate` after training",
            ck.bn_stats.len(),
            ck.state.step
        ));
    }
    let running = match ck.running_stats {
        Some(r) => r,
        None => {
            events.note(&format!(
                "the checkpoint (step {}) predates BN running statistics; they are kept from here on",
                ck.state.step
            ));
            ck.model.new_running_stats()
        }
    };
    let mut sgd = Sgd::new(resumed.config.sgd());
    sgd.buffers = ck.momentum;
    Ok(Ok(Start { config: resumed.config, model: ck.model, sgd, state: ck.state, running }))
}

/// Trains `config` into `dir`, or continues the run there with `options.resume`.
///
/// Holds the directory's [`RunLock`] throughout. Writes `checkpoint.safetensors` at the end
/// of every epoch, every [`CHECKPOINT_INTERVAL`], when stopped and at the end;
/// `metrics.jsonl` (one line per iteration), `validation.jsonl` and `config.toml` (the
/// resolved config, without `max_steps`). The learning rate follows the schedule of the
/// config's epochs even when `max_steps` stops the run early ([`Schedule`]); a run stopped
/// early or by `options.stop` is returned unfinished and can be resumed. A resumed run that
/// had finished, with its schedule unchanged, trains nothing and changes no file.
///
/// # Errors
///
/// `resume` without a checkpoint, a fresh run into a directory that has one, a directory
/// locked by another process ([`Error::Locked`]), a changed schedule on resume
/// ([`Error::ResumeChanged`]), data errors, a non-finite loss ([`Error::NonFiniteLoss`]) and
/// non-finite parameters at a save ([`Error::Diverged`]); after either of the last two the
/// last good checkpoint stays as it was.
pub fn train(config: &TrainConfig, dir: &Path, options: &TrainOptions, events: &mut dyn TrainEvents) -> Result<Checkpoint> {
    train_with(config, dir, options, &mut SingleProcess, events)
}

/// [`train`] as one process of a data-parallel job: every process of `collective` calls it
/// with the same config, directory and options.
///
/// Every process builds the same model (or loads the same checkpoint: `dir` must be one
/// directory all of them see), draws the same widths, and trains on its shard of each
/// global batch ([`crate::train::train_step_parallel`]); the gradients are averaged, so
/// every process holds the same parameters after each iteration. Rank 0 alone locks the
/// directory, writes files, validates and reports to `events`.
///
/// # Errors
///
/// As [`train`], on the process that meets them, and [`Error::InvalidConfig`] when the batch
/// is smaller than `processes * ghost_batches`. A process that fails must end the job
/// (`MPI_Abort`), or its peers wait for it.
pub fn train_with(
    config: &TrainConfig,
    dir: &Path,
    options: &TrainOptions,
    collective: &mut dyn Collective,
    events: &mut dyn TrainEvents,
) -> Result<Checkpoint> {
    let root = collective.is_root();
    let mut quiet = ();
    let events: &mut dyn TrainEvents = if root { events } else { &mut quiet };
    let paths = RunPaths { dir: dir.to_path_buf() };
    let _lock = if root { Some(RunLock::acquire(dir)?) } else { None };
    let device = crate::device::device(config.backend.as_deref())?;
    let Start { config, mut model, mut sgd, mut state, mut running } = match start_or_resume(config, &paths, options, events, &device)? {
        Ok(start) => start,
        Err(finished) => return Ok(finished),
    };
    let (processes, ghost_batches) = (collective.size(), options.ghost_batches.max(1));
    if config.batch_size < processes * ghost_batches {
        return Err(Error::InvalidConfig(format!(
            "batch_size {} cannot be split among {processes} process(es) x {ghost_batches} ghost batch(es): \
             use a batch of at least {}",
            config.batch_size,
            processes * ghost_batches
        )));
    }
    let mut logs = if root { Some(RunLogs::open(&paths, &config, state.step)?) } else { None };

    let mut data = ExperimentData::load(&config)?;
    if processes > 1 {
        data.train = data.train.shard(collective.rank(), processes)?;
    }
    let schedule = Schedule::new(&config, data.train.batches_per_epoch() as u64)?;
    model = model.into_trainable();
    let options_at = |lr| StepOptions {
        inplace_distill: config.inplace_distill && config.mode == TrainingMode::Universal,
        label_smoothing: config.label_smoothing,
        lr,
    };
    let stop_requested = || options.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    // With several processes, a stop is what the last step agreed on, so that all stop after
    // the same iteration.
    let agreed_stop = std::cell::Cell::new(false);
    let stopped = || if processes > 1 { agreed_stop.get() } else { stop_requested() };
    let mut saver = Saver { path: paths.checkpoint(), root, saved: options.resume.then_some(state.step), last: Instant::now() };

    let started = Instant::now();
    let (start_step, was_finished) = (state.step, state.finished);
    state.finished = false;
    'epochs: while state.step < schedule.stop_at && !stopped() {
        let epoch = state.epoch;
        let mut batches = data.train.epoch_from(epoch, state.batch)?;
        while state.step < schedule.stop_at {
            let Some(batch) = batches.next() else { break };
            let batch = batch?;
            let t0 = Instant::now();
            let widths = widths_for_step(&config, &model, state.step)?;
            let lr = schedule.lr(&config, state.step);
            let x = images(&batch, &device);
            // Counted from 1 in messages, as the progress output counts.
            let mut parallel = Parallel { collective: &mut *collective, ghost_batches, stop: stop_requested() };
            let out = train_step_parallel(
                &mut model,
                &mut sgd,
                x,
                &batch.labels,
                &widths,
                options_at(lr),
                state.step + 1,
                &mut running,
                &mut parallel,
            )?;
            agreed_stop.set(out.stop);
            state.step += 1;
            state.batch += 1;
            let report = StepReport {
                step: state.step,
                total_steps: schedule.stop_at,
                epoch,
                lr,
                losses: widths.iter().map(WidthSpec::short).zip(out.losses).collect(),
                images_per_sec: out.samples as f64 / t0.elapsed().as_secs_f64(),
                elapsed: started.elapsed().as_secs_f64(),
                step_secs: t0.elapsed().as_secs_f64(),
                all_reduce_secs: out.all_reduce_secs,
            };
            if let Some(logs) = &mut logs {
                logs.step(&report)?;
            }
            events.step(&report);
            if stopped() {
                break 'epochs;
            }
            if saver.last.elapsed() >= CHECKPOINT_INTERVAL && state.step < schedule.stop_at {
                saver.save(&config, &model, &sgd, &running, state)?;
            }
        }
        if state.batch as u64 >= schedule.per_epoch {
            state.epoch += 1;
            state.batch = 0;
            if let Some(logs) = &mut logs {
                for row in validate(&config, &model, &data, state.step, state.epoch)? {
                    events.validation(&row);
                    logs.validation(&row)?;
                }
            }
            if state.step < schedule.stop_at && !stopped() {
                saver.save(&config, &model, &sgd, &running, state)?;
            }
        }
    }
    state.finished = state.step >= schedule.total;
    if state.step > start_step || saver.saved.is_none() || state.finished != was_finished {
        saver.save(&config, &model, &sgd, &running, state)?;
    }
    if processes > 1 {
        // The processes finish together: none exits (or, failing, aborts the job) while
        // rank 0 is still writing the last checkpoint.
        collective.all_reduce_sum(&mut [0.0]);
    }
    Ok(training_checkpoint(config, state, model.into_inference(), sgd, running))
}

/// A checkpoint of a run in training: its momentum and running statistics, and no BN
/// post-statistics (they would not match the weights training goes on to).
fn training_checkpoint(config: TrainConfig, state: TrainState, model: UsNet, sgd: Sgd, running: RunningStats) -> Checkpoint {
    Checkpoint { config, state, model, momentum: sgd.buffers, bn_stats: Vec::new(), running_stats: Some(running), notes: Vec::new() }
}

/// Rank 0's files of a run besides the checkpoint: `config.toml`, and the JSON-lines logs
/// `metrics.jsonl` (a line per iteration) and `validation.jsonl` (a line per epoch and width).
struct RunLogs {
    paths: RunPaths,
    metrics: std::fs::File,
    validation: std::fs::File,
}

impl RunLogs {
    /// Writes the run's config and opens the logs at `step` (the checkpoint's).
    fn open(paths: &RunPaths, config: &TrainConfig, step: u64) -> Result<Self> {
        crate::atomic_file::write_atomic(&paths.config(), config.to_toml().as_bytes())
            .map_err(|source| Error::Io { path: paths.config(), source })?;
        let (metrics, validation) = (open_metrics(&paths.metrics(), step)?, open_metrics(&paths.validation(), step)?);
        Ok(Self { paths: paths.clone(), metrics, validation })
    }

    fn step(&mut self, report: &StepReport) -> Result<()> {
        append_line(&mut self.metrics, report, &self.paths.metrics())
    }

    fn validation(&mut self, row: &EpochValidation) -> Result<()> {
        append_line(&mut self.validation, row, &self.paths.validation())
    }
}

fn append_line(file: &mut std::fs::File, row: &impl Serialize, path: &Path) -> Result<()> {
    writeln!(file, "{}", serde_json::to_string(row).expect("log rows serialise"))
        .and_then(|_| file.flush())
        .map_err(|source| Error::Io { path: path.into(), source })
}

/// The checkpoint policy: rank 0 writes, every other process does nothing; a save refused for
/// non-finite parameters becomes [`Error::Diverged`], naming the last good checkpoint, which
/// stays on disk.
struct Saver {
    path: PathBuf,
    root: bool,
    /// The step of the checkpoint on disk, if any.
    saved: Option<u64>,
    /// When the last save happened (for [`CHECKPOINT_INTERVAL`]).
    last: Instant,
}

impl Saver {
    fn save(&mut self, config: &TrainConfig, model: &UsNet, sgd: &Sgd, running: &RunningStats, state: TrainState) -> Result<()> {
        self.last = Instant::now();
        if !self.root {
            return Ok(());
        }
        let ck = training_checkpoint(config.clone(), state, model.clone(), sgd.clone(), running.clone());
        ck.save(&self.path).map_err(|e| match e {
            Error::NonFinite { path, count, first } => Error::Diverged {
                step: state.step,
                count,
                first,
                path,
                kept: match self.saved {
                    Some(step) => format!("keeps the last good checkpoint (step {step})"),
                    None => "was not written (no good checkpoint yet)".into(),
                },
            },
            e => e,
        })?;
        self.saved = Some(state.step);
        Ok(())
    }
}

/// Opens a JSON-lines log (`metrics.jsonl`, `validation.jsonl`) for appending, first dropping
/// lines of steps after `step` (written after the checkpoint a resumed run starts from).
fn open_metrics(path: &Path, step: u64) -> Result<std::fs::File> {
    let io = |source| Error::Io { path: path.into(), source };
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(io)?;
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::atomic_file::write_atomic(path, kept.as_bytes()).map_err(io)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_CONFIG;

    fn setup(edit: impl Fn(&mut TrainConfig)) -> (TrainConfig, UsNet) {
        let mut config = TrainConfig::from_toml(DEFAULT_CONFIG, "default").unwrap();
        edit(&mut config);
        let text = config.to_toml();
        let config = TrainConfig::from_toml(&text, "edited").unwrap();
        let device = crate::device::device(None).unwrap();
        let model = UsNet::init(&config.model, &Init::Counter { seed: 0 }, &device).unwrap();
        (config, model)
    }

    #[test]
    fn the_teacher_runs_first_with_or_without_the_sandwich_rule() {
        for sandwich in [true, false] {
            let (config, model) = setup(|c| c.sandwich_rule = sandwich);
            let max = WidthSpec::Uniform(model.width_range().max());
            for step in 0..20 {
                let ws = widths_for_step(&config, &model, step).unwrap();
                assert_eq!(ws[0], max, "sandwich {sandwich} step {step}: {ws:?}");
                assert_eq!(ws.len(), config.num_sample_training + usize::from(!sandwich));
            }
        }
        // Without distillation and without the sandwich rule, every width is random.
        let (config, model) = setup(|c| {
            c.sandwich_rule = false;
            c.inplace_distill = false;
        });
        let ws = widths_for_step(&config, &model, 0).unwrap();
        assert_eq!(ws.len(), config.num_sample_training);
        assert!(ws.iter().all(|w| w.widths()[0].get() < 1.0), "{ws:?}");
    }

    #[test]
    fn snet_widths_run_widest_first_and_steps_are_reproducible() {
        let (config, model) = setup(|c| {
            c.mode = TrainingMode::Slimmable;
            c.width_mult_list = vec![0.5, 1.0, 0.35, 0.75];
        });
        let ws: Vec<String> = widths_for_step(&config, &model, 3).unwrap().iter().map(|w| w.key()).collect();
        assert_eq!(ws, ["1", "0.75", "0.5", "0.35"]);
        let (config, model) = setup(|_| {});
        assert_eq!(widths_for_step(&config, &model, 7).unwrap(), widths_for_step(&config, &model, 7).unwrap());
        assert_ne!(widths_for_step(&config, &model, 7).unwrap(), widths_for_step(&config, &model, 8).unwrap());
    }
}

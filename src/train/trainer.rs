//! The training loop: data, the sandwich step, schedules, metrics and checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, TrainState, FILE_NAME};
use crate::config::{TrainConfig, TrainingMode};
use crate::dataset::{images, ExperimentData};
use crate::error::{Error, Result};
use crate::init::Init;
use crate::model::UsNet;
use crate::train::sandwich::{train_step, StepOptions, WidthSampler};
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
    pub images_per_sec: f64,
    /// Seconds since this process started training.
    pub elapsed: f64,
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
        TrainingMode::Slimmable => {
            let mut sorted = list;
            sorted.sort_by(|a, b| b.widths()[0].get().total_cmp(&a.widths()[0].get()));
            sorted
        }
        TrainingMode::Universal => {
            let sampler = WidthSampler {
                num_sample_training: config.num_sample_training,
                sandwich: config.sandwich_rule,
                per_stage_groups: config.nonuniform.then(|| model.num_width_groups()),
            };
            let mut rng = StdRng::seed_from_u64(config.random_seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            sampler.sample(&model.width_range(), &mut rng)
        }
    })
}

/// Trains `config` into `dir`, or continues the run there with `resume`.
///
/// Writes `checkpoint.safetensors` at the end of every epoch, every
/// [`CHECKPOINT_INTERVAL`] and at the end, `metrics.jsonl` (one line per iteration) and
/// `config.toml` (the resolved config). Returns the final checkpoint.
///
/// # Errors
///
/// `resume` without a checkpoint, a fresh run into a directory that has one, data errors,
/// and a non-finite loss (the last checkpoint stays as it was).
pub fn train(
    config: &TrainConfig,
    dir: &Path,
    resume: bool,
    on_step: &mut dyn FnMut(&StepReport),
    on_validation: &mut dyn FnMut(&EpochValidation),
) -> Result<Checkpoint> {
    let paths = RunPaths { dir: dir.to_path_buf() };
    let device = crate::device::device(config.backend.as_deref())?;
    let existing = paths.checkpoint();
    let (mut model, mut sgd, mut state, config) = if resume {
        if !existing.exists() {
            return Err(Error::Checkpoint {
                path: existing,
                reason: "--resume found no checkpoint here; run without --resume to start a new run".into(),
            });
        }
        let ck = Checkpoint::load(&existing, &device)?;
        // The stored config wins, except for how long to train.
        let mut merged = ck.config.clone();
        merged.num_epochs = config.num_epochs;
        merged.max_steps = config.max_steps;
        let mut sgd = Sgd::new(merged.sgd());
        sgd.buffers = ck.momentum;
        (ck.model, sgd, ck.state, merged)
    } else {
        if existing.exists() {
            return Err(Error::Checkpoint {
                path: existing,
                reason: "a checkpoint is already here; pass --resume to continue it, or choose another --output".into(),
            });
        }
        let model = UsNet::init(&config.model, &Init::Kaiming { seed: config.random_seed }, &device)?;
        (model, Sgd::new(config.sgd()), TrainState::default(), config.clone())
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    crate::checkpoint::write_atomic(&paths.config(), config.to_toml().as_bytes())
        .map_err(|source| Error::Io { path: paths.config(), source })?;
    let mut metrics = open_metrics(&paths.metrics(), state.step)?;
    let mut validation_log = open_metrics(&paths.validation(), state.step)?;

    let data = ExperimentData::load(&config)?;
    let per_epoch = data.train.batches_per_epoch() as u64;
    let mut total = per_epoch * config.num_epochs as u64;
    if config.max_steps > 0 {
        total = total.min(config.max_steps);
    }
    model = model.into_trainable();
    let options = |lr| StepOptions {
        inplace_distill: config.inplace_distill && config.mode == TrainingMode::Universal,
        label_smoothing: config.label_smoothing,
        lr,
    };
    let save = |model: &UsNet, sgd: &Sgd, state: TrainState| -> Result<()> {
        Checkpoint { config: config.clone(), state, model: model.clone(), momentum: sgd.buffers.clone(), bn_stats: Vec::new() }
            .save(&paths.checkpoint())
    };

    let started = Instant::now();
    let mut last_save = Instant::now();
    while state.step < total {
        let epoch = state.epoch;
        let mut batches = data.train.epoch_from(epoch, state.batch)?;
        while state.step < total {
            let Some(batch) = batches.next() else { break };
            let batch = batch?;
            let t0 = Instant::now();
            let widths = widths_for_step(&config, &model, state.step)?;
            let lr = config.lr_at(state.step, total, per_epoch);
            let x = images(&batch, &device);
            let out = train_step(&mut model, &mut sgd, x, &batch.labels, &widths, options(lr), state.step)?;
            state.step += 1;
            state.batch += 1;
            let report = StepReport {
                step: state.step,
                total_steps: total,
                epoch,
                lr,
                losses: widths.iter().map(WidthSpec::short).zip(out.losses).collect(),
                images_per_sec: batch.labels.len() as f64 / t0.elapsed().as_secs_f64(),
                elapsed: started.elapsed().as_secs_f64(),
            };
            writeln!(metrics, "{}", serde_json::to_string(&report).expect("reports serialise"))
                .and_then(|_| metrics.flush())
                .map_err(|source| Error::Io { path: paths.metrics(), source })?;
            on_step(&report);
            if last_save.elapsed() >= CHECKPOINT_INTERVAL && state.step < total {
                save(&model, &sgd, state)?;
                last_save = Instant::now();
            }
        }
        if state.batch as u64 >= per_epoch {
            state.epoch += 1;
            state.batch = 0;
            for row in validate(&config, &model, &data, state.step, state.epoch)? {
                on_validation(&row);
                writeln!(validation_log, "{}", serde_json::to_string(&row).expect("rows serialise"))
                    .and_then(|_| validation_log.flush())
                    .map_err(|source| Error::Io { path: paths.validation(), source })?;
            }
            if state.step < total {
                save(&model, &sgd, state)?;
                last_save = Instant::now();
            }
        }
    }
    state.finished = true;
    save(&model, &sgd, state)?;
    Ok(Checkpoint { config, state, model: model.into_inference(), momentum: sgd.buffers, bn_stats: Vec::new() })
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
        crate::checkpoint::write_atomic(path, kept.as_bytes()).map_err(io)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)
}

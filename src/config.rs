//! Experiment configuration: one strict TOML file per experiment.
//!
//! Keys mirror the official app configs where they mean the same thing
//! (`width_mult_range`, `width_mult_list`, `num_sample_training`, `inplace_distill`,
//! `nonuniform`, `lr_scheduler`, `bn_cal_batch_num`, ...). Unknown keys are errors: the
//! official configs set `soft_target`, which the code never read, so distillation was
//! silently off; here such a key stops the run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::train::SgdConfig;
use crate::width::{Width, WidthSpec};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingMode {
    /// US-Nets: any width in `width_mult_range`, sandwich rule, inplace distillation.
    Universal,
    /// S-Nets: the discrete `width_mult_list`, switchable BN (private BN per width).
    Slimmable,
    /// One individually trained width, `width_mult_list[0]`.
    Fixed,
}

/// The learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    /// Linear decay to zero, per iteration (the official US-Nets schedule).
    LinearDecaying,
    /// Cosine decay to zero, per iteration.
    Cosine,
    /// Multiply by `multistep_lr_gamma` at each epoch of `multistep_lr_milestones`.
    Multistep,
}

/// The optimizer; SGD is the one the paper uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Sgd,
}

/// A training experiment. Every field has a default except the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `fashion-mnist` (default), `mnist`, `cifar10`, `cifar100` or `image-folder`.
    #[serde(default = "d_dataset")]
    pub dataset: String,
    /// Where the dataset lives; default: where its package installs it.
    #[serde(default, alias = "dataset_dir")]
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training images (0: all), for quick runs.
    #[serde(default)]
    pub train_subset: usize,
    /// Evaluate on only the first N test images (0: all).
    #[serde(default)]
    pub test_subset: usize,
    /// Training images held out as a validation split (0: none, every training image is
    /// trained on). The split is a shuffle seeded by `validation_seed` alone, so every run of
    /// an experiment holds out the same images; `usnet search` and `usnet eval --split
    /// validation` score on it, and it is never trained on or used for BN calibration.
    #[serde(default)]
    pub validation_size: usize,
    /// Seed of the validation split (default 0).
    #[serde(default)]
    pub validation_seed: u64,
    /// `universal` (default), `slimmable` or `fixed`.
    #[serde(default = "d_mode")]
    pub mode: TrainingMode,
    /// The model. Its `width_range` may be left out: it is `width_mult_range`, and a
    /// `width_range` that differs from it is an error (one source of truth).
    pub model: ModelConfig,
    /// `[min, max]` widths of a US-Net (default `[0.35, 1.0]`).
    #[serde(default = "d_range")]
    pub width_mult_range: [f64; 2],
    /// Universal: the width grid calibrated after training. Slimmable: the switch widths.
    /// Fixed: the single width trained.
    #[serde(default = "d_list")]
    pub width_mult_list: Vec<f64>,
    /// `n` of the sandwich rule (default 4).
    #[serde(default = "d_n")]
    pub num_sample_training: usize,
    /// The sandwich rule (max and min width always trained); off samples all n at random,
    /// and with `inplace_distill` the max width runs first in addition, as the teacher
    /// (n + 1 widths an iteration).
    #[serde(default = "d_true")]
    pub sandwich_rule: bool,
    /// Inplace distillation (default on).
    #[serde(default = "d_true")]
    pub inplace_distill: bool,
    /// Random widths per stage (non-uniform US-Nets).
    #[serde(default)]
    pub nonuniform: bool,
    #[serde(default)]
    pub label_smoothing: f64,
    #[serde(default = "d_opt")]
    pub optimizer: Optimizer,
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    #[serde(default = "d_true")]
    pub nesterov: bool,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_sched")]
    pub lr_scheduler: LrScheduler,
    #[serde(default)]
    pub multistep_lr_milestones: Vec<usize>,
    #[serde(default = "d_gamma")]
    pub multistep_lr_gamma: f64,
    /// Epochs of linear warm-up from 0 (may be fractional).
    #[serde(default)]
    pub warmup_epochs: f64,
    #[serde(default = "d_epochs")]
    pub num_epochs: usize,
    /// Stop early after this many iterations in total (0: no limit), as `--max-steps` does.
    /// The learning-rate schedule still spans `num_epochs`, so a short run is the start of
    /// the full one. It is this invocation's stop, not part of the experiment: it is never
    /// saved with a run, so `--resume` does not inherit it.
    #[serde(default, skip_serializing)]
    pub max_steps: u64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_seed")]
    pub random_seed: u64,
    /// Batches of BN post-statistics per width (default 8).
    #[serde(default = "d_cal")]
    pub bn_cal_batch_num: usize,
    /// Background threads preparing batches.
    #[serde(default = "d_workers")]
    pub data_loader_workers: usize,
    /// Backend: `flex`, `tch`, `wgpu` or `cuda` (default: the build's first).
    #[serde(default)]
    pub backend: Option<String>,
}

/// The defaults serde fills in for missing keys (`default = "d_..."` takes a function).
macro_rules! defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        $(fn $name() -> $ty {
            $value
        })*
    };
}

defaults! {
    d_dataset: String = "fashion-mnist".into();
    d_mode: TrainingMode = TrainingMode::Universal;
    d_range: [f64; 2] = [0.35, 1.0];
    d_list: Vec<f64> = vec![1.0, 0.75, 0.5, 0.35];
    d_n: usize = 4;
    d_true: bool = true;
    d_opt: Optimizer = Optimizer::Sgd;
    d_momentum: f64 = 0.9;
    d_wd: f64 = 4e-5;
    d_lr: f64 = 0.1;
    d_sched: LrScheduler = LrScheduler::LinearDecaying;
    d_gamma: f64 = 0.1;
    d_epochs: usize = 2;
    d_batch: usize = 128;
    d_seed: u64 = 1995;
    d_cal: usize = 8;
    d_workers: usize = 2;
}

/// The most epochs a config may ask for.
pub const MAX_EPOCHS: usize = 1_000_000;
/// The largest batch.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
/// The most widths trained per iteration (`num_sample_training`).
pub const MAX_SAMPLE_TRAINING: usize = 100;
/// The most BN calibration batches per width.
pub const MAX_CAL_BATCHES: usize = 100_000;
/// The most data-loader threads.
pub const MAX_WORKERS: usize = 256;

/// The Fashion-MNIST default, the config `usnet train` uses with no `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../configs/fashion_mnist_us_v2.toml");

impl TrainConfig {
    /// Parses a config from TOML text; `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// Malformed TOML, an unknown key (with the key's name and position) or an invalid value.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        // Name the file once: a validation error already reads "invalid model configuration".
        let in_file = |e: Error| match e {
            Error::InvalidConfig(m) => Error::InvalidConfig(format!("{origin}: {m}")),
            other => Error::InvalidConfig(format!("{origin}: {other}")),
        };
        let mut config: TrainConfig =
            toml::from_str(text).map_err(|e| Error::InvalidConfig(format!("{origin}: {e}")))?;
        if config.model.width_range_unset() {
            config.model.width_range = config.width_mult_range;
        } else if config.model.width_range != config.width_mult_range {
            return Err(Error::InvalidConfig(format!(
                "{origin}: [model] width_range = {:?} differs from width_mult_range = {:?}; \
                 they are one setting: drop width_range from [model] (it defaults to width_mult_range)",
                config.model.width_range, config.width_mult_range
            )));
        }
        config.model.switchable_bn = (config.mode == TrainingMode::Slimmable).then(|| config.width_mult_list.clone());
        config.validate().map_err(in_file)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The config as TOML, as saved beside every checkpoint.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a TrainConfig always serialises")
    }

    /// Checks values that serde cannot: every number is finite and in its range, so that
    /// nonsense (zero epochs, an infinite warm-up, negative momentum) stops the run before
    /// anything is loaded or written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first key out of range, its value and the range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        self.model.validate()?;
        let range = self.model.range()?;
        let count = |key: &str, value: usize, max: usize| {
            if (1..=max).contains(&value) { Ok(()) } else { bad(format!("{key} must be in 1..={max}, got {value}")) }
        };
        count("num_epochs", self.num_epochs, MAX_EPOCHS)?;
        count("batch_size", self.batch_size, MAX_BATCH_SIZE)?;
        count("num_sample_training", self.num_sample_training, MAX_SAMPLE_TRAINING)?;
        count("bn_cal_batch_num", self.bn_cal_batch_num, MAX_CAL_BATCHES)?;
        if self.data_loader_workers > MAX_WORKERS {
            return bad(format!("data_loader_workers must be at most {MAX_WORKERS}, got {}", self.data_loader_workers));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(self.warmup_epochs.is_finite() && (0.0..=self.num_epochs as f64).contains(&self.warmup_epochs)) {
            return bad(format!("warmup_epochs must be in [0, num_epochs = {}], got {}", self.num_epochs, self.warmup_epochs));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay must be a number >= 0, got {}", self.weight_decay));
        }
        if !(self.multistep_lr_gamma.is_finite() && self.multistep_lr_gamma > 0.0) {
            return bad(format!("multistep_lr_gamma must be a positive number, got {}", self.multistep_lr_gamma));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("label_smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        if self.width_mult_list.is_empty() {
            return bad("width_mult_list must list at least one width".into());
        }
        if self.width_mult_list.len() > crate::width::MAX_GRID {
            return bad(format!("width_mult_list has {} widths; at most {} are allowed", self.width_mult_list.len(), crate::width::MAX_GRID));
        }
        for &w in &self.width_mult_list {
            range.check(Width::new(w)?)?;
        }
        if self.mode == TrainingMode::Fixed && self.width_mult_list.len() != 1 {
            return bad(format!("mode = \"fixed\" trains one width; width_mult_list has {}", self.width_mult_list.len()));
        }
        if let Some(b) = &self.backend {
            crate::device::device(Some(b))?;
        }
        self.dataset_kind()?;
        Ok(())
    }

    /// The dataset format.
    pub fn dataset_kind(&self) -> Result<crate::data::DatasetKind> {
        self.dataset.parse().map_err(|e: crate::data::DataError| Error::InvalidConfig(e.to_string()))
    }

    /// The widths of `width_mult_list` as specs.
    pub fn width_list(&self) -> Result<Vec<WidthSpec>> {
        self.width_mult_list.iter().map(|&w| Ok(WidthSpec::Uniform(Width::new(w)?))).collect()
    }

    /// The directory to load data from.
    pub fn data_dir(&self) -> Result<PathBuf> {
        let kind = self.dataset_kind()?;
        self.data_dir.clone().or_else(|| kind.default_dir()).ok_or_else(|| {
            Error::InvalidConfig(format!("dataset {} has no default location; set data_dir", self.dataset))
        })
    }

    /// SGD settings.
    pub fn sgd(&self) -> SgdConfig {
        SgdConfig { momentum: self.momentum, nesterov: self.nesterov, weight_decay: self.weight_decay }
    }

    /// The learning rate at `step` of `total` steps, with `steps_per_epoch` iterations each
    /// epoch.
    pub fn lr_at(&self, step: u64, total: u64, steps_per_epoch: u64) -> f64 {
        let warmup = (self.warmup_epochs * steps_per_epoch as f64).round() as u64;
        if step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        let (t, span) = ((step - warmup) as f64, total.saturating_sub(warmup).max(1) as f64);
        match self.lr_scheduler {
            LrScheduler::LinearDecaying => self.lr * (1.0 - t / span).max(0.0),
            LrScheduler::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos()),
            LrScheduler::Multistep => {
                let epoch = (step / steps_per_epoch.max(1)) as usize;
                let passed = self.multistep_lr_milestones.iter().filter(|&&m| epoch >= m).count();
                self.lr * self.multistep_lr_gamma.powi(passed as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let c = TrainConfig::from_toml(DEFAULT_CONFIG, "default").unwrap();
        assert_eq!(c.mode, TrainingMode::Universal);
        assert!(c.inplace_distill);
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = TrainConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                // What a checkpoint stores reads back as the same experiment.
                assert_eq!(TrainConfig::from_toml(&c.to_toml(), "saved").unwrap(), c, "{}", path.display());
                // The model builds, and an S-Net has private BN parameters for each width.
                let device = crate::device::device(None).unwrap();
                let model = crate::model::UsNet::init(&c.model, &crate::init::Init::Counter { seed: 0 }, &device)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let names: Vec<String> = model.params().into_iter().map(|(n, _, _)| n).collect();
                let private = |k: usize| names.iter().any(|n| n.starts_with("features.0.1.bn.") && n.contains(&format!(".bn.{k}.")));
                match c.mode {
                    TrainingMode::Slimmable => {
                        assert!((0..c.width_mult_list.len()).all(private) && !private(c.width_mult_list.len()), "{}", path.display())
                    }
                    _ => assert!(!private(0) && names.contains(&"features.0.1.weight".to_string()), "{}", path.display()),
                }
                n += 1;
            }
        }
        assert!(n >= 8, "only {n} configs");
    }

    /// The values of apps/us_mobilenet_{v1,v2}_train_val.yml (JiahuiYu/slimmable_networks)
    /// that are config keys here; the data pipeline's differences are stated in the files.
    #[test]
    fn imagenet_configs_match_the_official_app_configs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for (file, lo, widths) in [("imagenet_us_mobilenet_v1.toml", 0.25, 31), ("imagenet_us_mobilenet_v2.toml", 0.35, 27)] {
            let c = TrainConfig::load(&dir.join(file)).unwrap();
            assert_eq!((c.num_epochs, c.batch_size, c.lr, c.lr_scheduler), (250, 1024, 0.5, LrScheduler::LinearDecaying), "{file}");
            assert_eq!((c.momentum, c.nesterov, c.weight_decay, c.warmup_epochs), (0.9, true, 1e-4, 0.0), "{file}");
            assert_eq!((c.bn_cal_batch_num, c.num_sample_training, c.random_seed), (5, 4, 1995), "{file}");
            assert_eq!(c.width_mult_range, [lo, 1.0], "{file}");
            // The official list: every 0.025 from the lower bound to 1.0.
            let mut list = c.width_mult_list.clone();
            list.sort_by(f64::total_cmp);
            assert_eq!(list.len(), widths, "{file}");
            for (i, w) in list.iter().enumerate() {
                assert!((w - (lo + 0.025 * i as f64)).abs() < 1e-9, "{file}: {w}");
            }
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            for difference in ["scale (0.25, 1)", "ColorJitter", "Lighting(0.1)", "antialias"] {
                assert!(text.contains(difference), "{file} does not state the difference {difference:?}");
            }
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = format!("soft_target = true\n{DEFAULT_CONFIG}");
        let err = TrainConfig::from_toml(&text, "exp.toml").unwrap_err().to_string();
        assert!(err.contains("soft_target") && err.contains("exp.toml"), "{err}");
        let text = DEFAULT_CONFIG.replace("[model]", "[model]\ndepth = 3");
        let err = TrainConfig::from_toml(&text, "exp.toml").unwrap_err().to_string();
        assert!(err.contains("depth"), "{err}");
    }

    #[test]
    fn model_width_range_is_optional_and_must_match() {
        let with = TrainConfig::from_toml(DEFAULT_CONFIG, "x").unwrap();
        let without = DEFAULT_CONFIG.replace("\nwidth_range = [0.35, 1.0]\n", "\n");
        assert_ne!(without, DEFAULT_CONFIG);
        let c = TrainConfig::from_toml(&without, "x").unwrap();
        assert_eq!(c.model.width_range, c.width_mult_range);
        assert_eq!(c, with);
        assert_eq!(c, TrainConfig::from_toml(&c.to_toml(), "saved").unwrap());
        // An explicit range must equal width_mult_range, not be overwritten by it.
        let other = without.replace("[model]\n", "[model]\nwidth_range = [0.5, 1.0]\n");
        let err = TrainConfig::from_toml(&other, "exp.toml").unwrap_err().to_string();
        assert!(err.contains("width_range") && err.contains("width_mult_range") && err.contains("exp.toml"), "{err}");
    }

    #[test]
    fn every_numeric_value_is_checked() {
        let cases = [
            ("num_epochs = 2", "num_epochs = 0", "num_epochs"),
            ("num_epochs = 2", "num_epochs = 9223372036854775807", "num_epochs"),
            ("warmup_epochs = 0.1", "warmup_epochs = inf", "warmup_epochs"),
            ("warmup_epochs = 0.1", "warmup_epochs = nan", "warmup_epochs"),
            ("warmup_epochs = 0.1", "warmup_epochs = -1.0", "warmup_epochs"),
            ("warmup_epochs = 0.1", "warmup_epochs = 3.0", "warmup_epochs"),
            ("momentum = 0.9", "momentum = -0.5", "momentum"),
            ("momentum = 0.9", "momentum = nan", "momentum"),
            ("momentum = 0.9", "momentum = 1.0", "momentum"),
            ("weight_decay = 4e-5", "weight_decay = -1e-4", "weight_decay"),
            ("weight_decay = 4e-5", "weight_decay = nan", "weight_decay"),
            ("weight_decay = 4e-5", "weight_decay = inf", "weight_decay"),
            ("bn_cal_batch_num = 8", "bn_cal_batch_num = 0", "bn_cal_batch_num"),
            ("batch_size = 128", "batch_size = 0", "batch_size"),
            ("batch_size = 128", "batch_size = 100000000", "batch_size"),
            ("num_sample_training = 4", "num_sample_training = 1000000000", "num_sample_training"),
            ("lr = 0.1", "lr = nan", "lr"),
            ("lr = 0.1", "lr = 0.0", "lr"),
            ("label_smoothing = 0.0", "label_smoothing = nan", "label_smoothing"),
            ("data_loader_workers = 1", "data_loader_workers = 100000", "data_loader_workers"),
            ("lr_scheduler = \"linear_decaying\"", "lr_scheduler = \"multistep\"\nmultistep_lr_gamma = nan", "multistep_lr_gamma"),
        ];
        for (from, to, key) in cases {
            assert!(DEFAULT_CONFIG.contains(from), "{from}");
            let text = DEFAULT_CONFIG.replace(from, to);
            let err = TrainConfig::from_toml(&text, "exp.toml").map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("exp.toml"), "{to}: {err}");
        }
        // The edges that are fine.
        for (from, to) in [("warmup_epochs = 0.1", "warmup_epochs = 2.0"), ("momentum = 0.9", "momentum = 0.0"), ("weight_decay = 4e-5", "weight_decay = 0.0")] {
            TrainConfig::from_toml(&DEFAULT_CONFIG.replace(from, to), "x").unwrap_or_else(|e| panic!("{to}: {e}"));
        }
    }

    #[test]
    fn out_of_range_list_width_is_an_error() {
        let text = DEFAULT_CONFIG.replace("width_mult_list = [", "width_mult_list = [0.1, ");
        assert!(TrainConfig::from_toml(&text, "x").is_err());
    }

    #[test]
    fn schedules() {
        let mut c = TrainConfig { warmup_epochs: 0.0, lr: 1.0, ..TrainConfig::from_toml(DEFAULT_CONFIG, "d").unwrap() };
        assert_eq!(c.lr_at(0, 100, 10), 1.0);
        assert!((c.lr_at(50, 100, 10) - 0.5).abs() < 1e-12);
        c.lr_scheduler = LrScheduler::Cosine;
        assert!((c.lr_at(50, 100, 10) - 0.5).abs() < 1e-12);
        c.lr_scheduler = LrScheduler::Multistep;
        c.multistep_lr_milestones = vec![3, 6];
        assert!((c.lr_at(65, 100, 10) - 0.01).abs() < 1e-12);
        c.warmup_epochs = 1.0;
        assert!((c.lr_at(4, 100, 10) - 0.5).abs() < 1e-12);
    }
}

//! The library's error type.

use std::path::PathBuf;

/// Everything the library reports to its caller.
///
/// Each variant carries the values a user needs to fix the input: the width that was out of
/// range and the range, the shape that was expected and the one given, the file and what was
/// wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A width string or value that is not a width.
    #[error("invalid width {input:?}: {reason}")]
    InvalidWidth { input: String, reason: String },

    /// A width outside the range the model was trained for.
    #[error("width {width} is outside the model's width range [{min}, {max}]")]
    WidthOutOfRange { width: f64, min: f64, max: f64 },

    /// A per-stage width spec with the wrong number of entries for this model.
    #[error("{arch} with {stages} stages takes {expected} per-stage widths ({layout}), got {got}")]
    SpecLength {
        arch: &'static str,
        stages: usize,
        expected: usize,
        layout: &'static str,
        got: usize,
    },

    /// A v2 per-stage spec with the head entry of older versions: the head's output is fixed.
    #[error(
        "us_mobilenet_v2's head (its last 1x1 conv, {last_channels} output channels) is fixed, as in the \
         official model, so a per-stage spec has no entry for it: give {expected} widths (the stem, then \
         one per block-table row), not {got}; drop the last entry"
    )]
    FixedHead { expected: usize, got: usize, last_channels: usize },

    /// A model configuration that cannot be built.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),

    /// An input tensor whose shape does not fit the model.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape { what: &'static str, expected: String, got: Vec<usize> },

    /// Evaluation asked for a width that has no stored BN statistics.
    #[error(
        "no BN statistics stored for width {width}; calibrate it first (stored: {stored})"
    )]
    NotCalibrated { width: String, stored: String },

    /// Widths without stored BN statistics, and no data to calibrate them on.
    #[error(
        "no BN statistics stored for width(s) {widths} and no data to calibrate them on ({reason}); \
         calibrate them where the dataset is (`usnet calibrate --checkpoint DIR --widths {widths}`), \
         set the config's data_dir, or use a stored width ({stored})"
    )]
    NoCalibrationData { widths: String, stored: String, reason: String },

    /// An output file that exists, refused without `force`.
    #[error("{path} already exists; pass --force to replace it")]
    OutputExists { path: PathBuf },

    /// An export path whose extension names no format.
    #[error("{path}: unknown export format; name the output *.onnx or *.safetensors")]
    ExportFormat { path: PathBuf },

    /// `--resume` with a schedule or optimizer setting that differs from the run's.
    #[error(
        "resuming with a changed schedule ({changes}) would make the learning rate jump mid-run; \
         resume without changing it, or force it (`usnet train --resume --force`)"
    )]
    ResumeChanged { changes: String },

    /// Parameters or optimizer state that are not finite, refused before they are written.
    #[error(
        "{path}: not written: {count} value(s) are NaN or infinite (first in {first}); the file on disk is unchanged"
    )]
    NonFinite { path: PathBuf, count: usize, first: String },

    /// Training diverged: a checkpoint of non-finite parameters was refused.
    #[error(
        "training diverged: after step {step}, {count} parameter value(s) are NaN or infinite (first in {first}); \
         not saved, so {path} {kept}; lower the learning rate or check the input data"
    )]
    Diverged { step: u64, count: usize, first: String, path: PathBuf, kept: String },

    /// Another process holds the run directory.
    #[error("{dir} is in use by another usnet process ({holder}); wait for it to finish or stop it")]
    Locked { dir: PathBuf, holder: String },

    /// Evaluation with the running statistics of a checkpoint that has none.
    #[error(
        "no BN running statistics: the checkpoint was written before training kept them; \
         evaluate with calibrated or shared-max statistics, or train it on to collect them"
    )]
    NoRunningStats,

    /// A loss that is not a finite number.
    #[error("loss of width {width} is {value} at step {step}; lower the learning rate or check the input data")]
    NonFiniteLoss { width: String, value: f32, step: u64 },

    /// Labels outside `0..num_classes`.
    #[error("label {label} is outside 0..{num_classes}")]
    Label { label: i64, num_classes: usize },

    /// A `--budget` that is not `macs=N` or `latency=T`.
    #[error("invalid budget {input:?}: {reason}")]
    InvalidBudget { input: String, reason: String },

    /// A budget that even the cheapest candidate exceeds.
    #[error("no candidate meets the budget {budget}: the cheapest, width {spec}, costs {cheapest}; raise the budget to at least that")]
    BudgetTooSmall { budget: String, cheapest: String, spec: String },

    /// A search on a run that holds out no validation images.
    #[error(
        "the run holds out no validation images (validation_size = 0 in its config); search scores candidates \
         on a validation split held out of the training set, never on the test set: train a run with \
         validation_size > 0 (the Fashion-MNIST configs hold out 5000)"
    )]
    NoValidationSplit,

    /// A checkpoint or weight file that cannot be read.
    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    /// A dataset that cannot be loaded; the message names the file.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

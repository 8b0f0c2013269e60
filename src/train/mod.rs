//! Training: the sandwich rule, inplace distillation, SGD and the training loop.

mod loss;
mod sandwich;
mod sgd;
mod trainer;

pub use loss::{label_targets, soft_cross_entropy, soft_targets};
pub use sandwich::{train_step, StepOptions, StepOutput, WidthSampler};
pub use sgd::{Sgd, SgdConfig};
pub use trainer::{train, widths_for_step, EpochValidation, RunPaths, StepReport, CHECKPOINT_INTERVAL};

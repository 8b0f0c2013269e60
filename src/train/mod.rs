//! Training: the sandwich rule, inplace distillation, SGD and the training loop.

mod loss;
mod resume;
mod sandwich;
mod sgd;
mod trainer;

pub use loss::{label_targets, soft_cross_entropy, soft_targets};
pub use resume::{resume_config, Resumed};
pub use sandwich::{
    train_step, train_step_parallel, train_step_tracking, Parallel, ParallelOutput, StepOptions, StepOutput, WidthSampler,
};
pub use sgd::{Sgd, SgdConfig};
pub use trainer::{
    train, train_with, widths_for_step, EpochValidation, RunPaths, Schedule, StepReport, TrainEvents, TrainOptions, CHECKPOINT_INTERVAL,
};

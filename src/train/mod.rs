//! Training: the sandwich rule, inplace distillation and SGD.

mod loss;
mod sandwich;
mod sgd;

pub use loss::{label_targets, soft_cross_entropy, soft_targets};
pub use sandwich::{train_step, StepOptions, StepOutput, WidthSampler};
pub use sgd::{Sgd, SgdConfig};

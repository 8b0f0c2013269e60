//! Universally slimmable layers: each runs on the first channels of its full weights.

mod batch_norm;
mod conv;
mod linear;
mod param;

pub use batch_norm::{BnAccumulator, BnMode, BnStat, BnStatistics, RunningStats, UsBatchNorm, BN_EPS};
pub use conv::{UsConv2d, UsConv2dConfig};
pub use linear::UsLinear;
pub use param::{AnyTensor, ParamFn};

//! usnet: Universally Slimmable Networks (Yu & Huang, ICCV 2019) on burn.
//!
//! One network, trained once, runs at any width in its range or any per-stage mix:
//!
//! - [`width`]: the `make_divisible` rule and the `Width`, `WidthRange`, `WidthSpec` types;
//! - [`layers`]: US conv, linear and batch norm, with explicit BN modes;
//! - [`model`]: US-MobileNet v1 and v2 built from block tables, with official names;
//! - [`train`]: the sandwich rule, inplace distillation and PyTorch-style SGD;
//! - [`calibration`]: BN post-statistics per width;
//! - [`fixed`]: one width cut out as a plain network, for export and fast inference;
//! - [`interop`]: official PyTorch checkpoints in, one width out as ONNX or safetensors;
//! - [`infer`]: the CPU inference engine that runs a fixed width (folded, packed, NHWC);
//! - [`profile`]: MACs and parameters per width;
//! - [`plot`], [`charts`]: PNG/SVG charts of eval results and training curves.


pub mod atomic_file;
pub mod bench;
pub mod calibration;
pub mod charts;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod data;
pub mod dataset;
pub mod device;
pub mod error;
pub mod eval;
pub mod fixed;
pub mod infer;
pub mod init;
pub mod interop;
pub mod kernels;
pub mod layers;
pub mod model;
#[cfg(feature = "flex")]
pub mod ops;
pub mod plot;
pub mod profile;
pub mod run_lock;
pub mod search;
pub mod train;
pub mod width;

pub use calibration::{calibrate, calibrate_with, BnStatsSource, CalibratedModel};
pub use error::{Error, Result};
pub use fixed::{FixedConv, FixedLinear, FixedNet};
pub use infer::InferencePlan;
pub use init::{Init, ParamKind};
pub use model::{Arch, ModelConfig, UsNet};
pub use width::{make_divisible, slim_channels, Width, WidthRange, WidthSpec};

//! US-MobileNet models.

mod config;
pub mod snet;
mod usnet;

pub use config::{Arch, BlockRow, ModelConfig};
pub use usnet::{add_first_channels, Block, ConvBn, DistinctWidths, LayerPlan, StageWidths, UsNet};

#[cfg(test)]
mod tests;

//! MACs and parameters per width, counted as the official profiling counts them.

use serde::Serialize;

use crate::error::Result;
use crate::model::UsNet;
use crate::width::WidthSpec;

/// The cost of one width.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WidthCost {
    /// The width spec, as text.
    pub width: String,
    /// Multiply-accumulates of every conv and linear layer that runs, for one image.
    pub macs: u64,
    /// Conv and linear parameters (weights and biases) that the width uses.
    pub params: u64,
}

/// The cost of `spec` on square `input_size` inputs.
pub fn width_cost(model: &UsNet, spec: &WidthSpec, input_size: usize) -> Result<WidthCost> {
    let plan = model.plan(spec, [input_size, input_size])?;
    Ok(WidthCost {
        width: spec.to_string(),
        macs: plan.iter().map(|l| l.macs()).sum(),
        params: plan.iter().map(|l| l.params()).sum(),
    })
}

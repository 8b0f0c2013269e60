//! MACs and parameters per width, counted as the official profiling counts them.

use serde::Serialize;

use crate::error::{Error, Result};
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
///
/// # Errors
///
/// The errors of [`UsNet::plan`], and [`Error::InvalidConfig`] when the MACs or parameters
/// do not fit in 64 bits (absurd input sizes).
pub fn width_cost(model: &UsNet, spec: &WidthSpec, input_size: usize) -> Result<WidthCost> {
    let plan = model.plan(spec, [input_size, input_size])?;
    let overflow = |what: &str| {
        Error::InvalidConfig(format!("the {what} of width {spec} on {input_size}x{input_size} inputs do not fit in 64 bits"))
    };
    let sum = |f: fn(&crate::model::LayerPlan) -> Option<u64>| plan.iter().try_fold(0u64, |acc, l| acc.checked_add(f(l)?));
    Ok(WidthCost {
        width: spec.to_string(),
        macs: sum(crate::model::LayerPlan::checked_macs).ok_or_else(|| overflow("MACs"))?,
        params: sum(crate::model::LayerPlan::checked_params).ok_or_else(|| overflow("parameters"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, Init, ModelConfig};

    #[test]
    fn macs_that_overflow_are_an_error_not_a_wrap() {
        let device = crate::device::device(None).unwrap();
        let model = UsNet::init(&ModelConfig::imagenet(Arch::UsMobilenetV2, 1000), &Init::Counter { seed: 0 }, &device).unwrap();
        let full = WidthSpec::Uniform(crate::Width::MAX);
        assert_eq!(width_cost(&model, &full, 224).unwrap().macs, 300_774_272);
        // 2^24 pixels a side still fits the official model (1.7e18 MACs) ...
        assert!(width_cost(&model, &full, 1 << 24).unwrap().macs > 1 << 60);
        // ... but not one with a wide stem, whose first layer alone has 1.2e20.
        let mut wide = ModelConfig::imagenet(Arch::UsMobilenetV2, 10);
        (wide.stem_channels, wide.stem_stride) = (16384, 1);
        let wide = UsNet::init(&wide, &Init::Counter { seed: 0 }, &device).unwrap();
        let err = width_cost(&wide, &full, 1 << 24).unwrap_err().to_string();
        assert!(err.contains("MACs") && err.contains("64 bits"), "{err}");
        let err = width_cost(&model, &full, (1 << 24) + 1).unwrap_err().to_string();
        assert!(err.contains("input size"), "{err}");
    }
}

//! S-Nets (slimmable networks; Yu et al., ICLR 2019), the paper's baseline: a discrete list of
//! switch widths, each with private BN parameters and statistics (switchable BN).
//!
//! What makes a model an S-Net lives here: which switch a width is, the private BN affine
//! pairs built at init, and the widths one iteration trains. A config with
//! `mode = "slimmable"` sets [`crate::model::ModelConfig::switchable_bn`] to its
//! `width_mult_list`; [`crate::layers::UsBatchNorm`] stores one affine pair per switch and
//! `forward` picks the switch's pair.

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::init::Init;
use crate::model::UsNet;
use crate::width::{Width, WidthSpec};

/// The index of `spec` among the switch `widths`.
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a width that is not a switch (a per-stage spec never is).
pub(crate) fn switch_index(widths: &[f64], spec: &WidthSpec) -> Result<usize> {
    let found = match spec.canonical() {
        WidthSpec::Uniform(w) => widths.iter().position(|s| (s - w.get()).abs() < 1e-9),
        WidthSpec::PerStage(_) => None,
    };
    found.ok_or_else(|| {
        Error::InvalidConfig(format!(
            "this S-Net has switchable BN for widths {widths:?} only; width {spec} is not one of them"
        ))
    })
}

/// Gives every BN layer of `model` one private affine pair per switch width, sized to the
/// layer's channels at that width.
pub(crate) fn make_switchable(model: &mut UsNet, widths: &[f64], init: &Init, device: &Device) -> Result<()> {
    let per_width = widths.iter().map(|&w| model.bn_channels(&WidthSpec::Uniform(Width::new(w)?))).collect::<Result<Vec<_>>>()?;
    for (j, bn) in model.bn_layers_mut().into_iter().enumerate() {
        bn.make_switchable(&per_width.iter().map(|channels| channels[j]).collect::<Vec<_>>(), init, device);
    }
    Ok(())
}

/// The widths an S-Net trains each iteration: every switch, widest first.
pub fn training_widths(mut switches: Vec<WidthSpec>) -> Vec<WidthSpec> {
    switches.sort_by(|a, b| b.widths()[0].get().total_cmp(&a.widths()[0].get()));
    switches
}

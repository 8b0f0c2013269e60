//! A [`FixedNet`] as a safetensors file a plain PyTorch MobileNet of that width loads: the
//! sliced weights under the official state-dict names, each batch norm unfolded (`weight`,
//! `bias`, `running_mean`, `running_var`, `num_batches_tracked`).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::fixed::FixedNet;

/// The named tensors of `net`: `(name, shape, f32 values)`, in state-dict order.
pub fn state_dict(net: &FixedNet) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for c in &net.convs {
        out.push((format!("{}.weight", c.name), c.weight_shape().to_vec(), c.weight.clone()));
        for (what, values) in [("weight", &c.gamma), ("bias", &c.beta), ("running_mean", &c.mean), ("running_var", &c.var)] {
            out.push((format!("{}.{what}", c.bn_name), vec![c.c_out], values.clone()));
        }
    }
    let lin = &net.classifier;
    out.push((format!("{}.weight", lin.name), vec![lin.c_out, lin.c_in], lin.weight.clone()));
    out.push((format!("{}.bias", lin.name), vec![lin.c_out], lin.bias.clone()));
    out
}

/// The safetensors bytes of `net`, with `metadata` as the header's string metadata.
///
/// # Errors
///
/// [`Error::InvalidConfig`] if safetensors refuses a tensor (it cannot for a valid net).
pub fn to_safetensors_bytes(net: &FixedNet, metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = state_dict(net)
        .into_iter()
        .map(|(name, shape, values)| (name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    // PyTorch's BatchNorm2d has a step counter; 0 says "statistics not from training steps".
    let counters: Vec<String> = net.convs.iter().map(|c| format!("{}.num_batches_tracked", c.bn_name)).collect();
    let zero = 0i64.to_le_bytes();
    let bad = |e: safetensors::SafeTensorError| Error::InvalidConfig(format!("safetensors export: {e}"));
    let mut views = Vec::with_capacity(tensors.len() + counters.len());
    for (name, shape, bytes) in &tensors {
        views.push((name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(bad)?));
    }
    for name in &counters {
        views.push((name.clone(), TensorView::new(Dtype::I64, Vec::new(), &zero).map_err(bad)?));
    }
    let metadata: HashMap<String, String> = metadata.iter().cloned().collect();
    safetensors::serialize(views, Some(metadata)).map_err(bad)
}

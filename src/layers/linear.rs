//! The universally slimmable linear layer.

use burn::tensor::{Device, Tensor};

use crate::init::{Init, ParamKind};
use crate::layers::param::{new_param, AnyTensor, ParamFn};

/// A linear layer (PyTorch layout, weight `[out, in]`, with bias) that uses the first input
/// features of its weight; its output does not slim.
#[derive(Debug, Clone)]
pub struct UsLinear {
    /// State-dict prefix, e.g. `classifier.0`.
    pub name: String,
    /// `[out, in]`.
    pub weight: Tensor<2>,
    /// `[out]`.
    pub bias: Tensor<1>,
}

impl UsLinear {
    /// A new layer with `in_features -> out_features`.
    pub fn init(name: &str, in_features: usize, out_features: usize, init: &Init, device: &Device) -> Self {
        let weight = new_param(init, &format!("{name}.weight"), ParamKind::LinearWeight, &[out_features, in_features], device);
        let bias = new_param(init, &format!("{name}.bias"), ParamKind::LinearBias, &[out_features], device);
        UsLinear { name: name.to_string(), weight: weight.into_r2(), bias: bias.into_r1() }
    }

    /// `x @ weight[:, :c_in]^T + bias`.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, c_in]`, `c_in <= in_features`
    /// - output: `[batch, out_features]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let c_in = x.dims()[1];
        let [o, i] = self.weight.dims();
        let w = if c_in == i { self.weight.clone() } else { self.weight.clone().slice([0..o, 0..c_in]) };
        x.matmul(w.transpose()) + self.bias.clone().unsqueeze::<2>()
    }

    pub(crate) fn map_params(&mut self, f: &mut ParamFn) {
        self.weight = f(&format!("{}.weight", self.name), ParamKind::LinearWeight, AnyTensor::R2(self.weight.clone())).into_r2();
        self.bias = f(&format!("{}.bias", self.name), ParamKind::LinearBias, AnyTensor::R1(self.bias.clone())).into_r1();
    }
}

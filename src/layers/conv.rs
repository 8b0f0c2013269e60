//! The universally slimmable 2-D convolution.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use crate::init::{Init, ParamKind};
use crate::layers::param::{new_param, AnyTensor, ParamFn};
use crate::width::slim_channels;

/// Configuration of a [`UsConv2d`], mirroring the official `USConv2d`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsConv2dConfig {
    /// Input channels of the full weight.
    pub in_channels: usize,
    /// Output channels of the full weight.
    pub out_channels: usize,
    /// Square kernel size; padding is `kernel_size / 2`.
    pub kernel_size: usize,
    /// Stride.
    pub stride: usize,
    /// One group per channel (`groups = channels` at every width).
    pub depthwise: bool,
    /// Whether the output side slims with the width (the official `us[1]`; the input side
    /// always follows the incoming tensor).
    pub slim_out: bool,
    /// The official `ratio[1]`: output channels are a multiple of it.
    pub out_ratio: usize,
}

impl UsConv2dConfig {
    /// A dense conv that slims its output with ratio 1.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize, stride: usize) -> Self {
        UsConv2dConfig { in_channels, out_channels, kernel_size, stride, depthwise: false, slim_out: true, out_ratio: 1 }
    }

    /// A new layer named `name` (its weight is `{name}.weight`).
    pub fn init(&self, name: &str, init: &Init, device: &Device) -> UsConv2d {
        let shape = self.weight_shape();
        let weight = new_param(init, &format!("{name}.weight"), self.kind(), &shape, device).into_r4();
        UsConv2d { config: self.clone(), name: name.to_string(), weight }
    }

    fn kind(&self) -> ParamKind {
        ParamKind::ConvWeight { depthwise: self.depthwise }
    }

    /// `[out, in / groups, k, k]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        let in_per_group = if self.depthwise { 1 } else { self.in_channels };
        vec![self.out_channels, in_per_group, self.kernel_size, self.kernel_size]
    }
}

/// A conv layer that runs on the first channels of its full weight.
#[derive(Debug, Clone)]
pub struct UsConv2d {
    pub config: UsConv2dConfig,
    /// State-dict prefix, e.g. `features.3.body.0`.
    pub name: String,
    /// `[out, in / groups, k, k]`.
    pub weight: Tensor<4>,
}

impl UsConv2d {
    /// Output channels when the input has `in_channels` channels and the layer's width is
    /// `width`.
    pub fn out_channels(&self, in_channels: usize, width: f64, divisor: usize) -> usize {
        let c = &self.config;
        if c.depthwise {
            in_channels
        } else if c.slim_out {
            slim_channels(c.out_channels, width, c.out_ratio, divisor).min(c.out_channels)
        } else {
            c.out_channels
        }
    }

    /// Output spatial size for input size `size`.
    pub fn out_size(&self, size: usize) -> usize {
        let k = self.config.kernel_size;
        (size + 2 * (k / 2) - k) / self.config.stride + 1
    }

    /// Applies the first `c_out` output and first `c_in` input channels of the weight, `c_in`
    /// being the input's channel count ([`UsConv2d::out_channels`] gives `c_out` at a width).
    ///
    /// # Shapes
    ///
    /// - input: `[batch, c_in, h, w]` with `c_in <= in_channels` of the full layer
    /// - output: `[batch, c_out, h', w']` (`c_out = c_in` for a depthwise conv)
    pub fn forward(&self, x: Tensor<4>, c_out: usize) -> Tensor<4> {
        let c_in = x.dims()[1];
        let weight = self.sliced_weight(c_in, c_out);
        let pad = self.pad();
        #[cfg(feature = "flex")]
        if crate::ops::enabled(&x.device()) {
            return crate::ops::conv2d(x, weight, self.config.stride, pad, self.config.depthwise);
        }
        let groups = if self.config.depthwise { c_in } else { 1 };
        let options = ConvOptions::new([self.config.stride; 2], [pad, pad], [1, 1], groups);
        conv2d(x, weight, None, options)
    }

    /// The weight's first `c_out` outputs and `c_in` inputs (`c_out = c_in` when depthwise).
    pub(crate) fn sliced_weight(&self, c_in: usize, c_out: usize) -> Tensor<4> {
        let c_out = if self.config.depthwise { c_in } else { c_out };
        let i_used = if self.config.depthwise { 1 } else { c_in };
        let [o, i, k, _] = self.weight.dims();
        if c_out == o && i_used == i {
            self.weight.clone()
        } else {
            self.weight.clone().slice([0..c_out, 0..i_used, 0..k, 0..k])
        }
    }

    /// Symmetric padding: `kernel_size / 2`.
    pub(crate) fn pad(&self) -> usize {
        self.config.kernel_size / 2
    }

    pub(crate) fn map_params(&mut self, f: &mut ParamFn) {
        self.weight = f(&format!("{}.weight", self.name), self.config.kind(), AnyTensor::R4(self.weight.clone())).into_r4();
    }
}

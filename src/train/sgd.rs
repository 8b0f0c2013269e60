//! SGD with PyTorch's semantics.

use std::collections::HashMap;

use burn::tensor::Tensor;

use crate::init::ParamKind;
use crate::layers::AnyTensor;
use crate::model::UsNet;

/// SGD hyper-parameters, as `torch.optim.SGD` (dampening 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub nesterov: bool,
    /// Applied only to conv weights that are not depthwise and to linear weights, as the
    /// official code does.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    /// Momentum 0.9 with Nesterov, as the official configs, and weight decay 4e-5.
    fn default() -> Self {
        SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 4e-5 }
    }
}

/// SGD state: one momentum buffer per parameter, by state-dict name.
#[derive(Debug, Clone, Default)]
pub struct Sgd {
    pub config: SgdConfig,
    /// Flattened momentum buffers.
    pub buffers: HashMap<String, Tensor<1>>,
}

impl Sgd {
    /// A fresh optimizer.
    pub fn new(config: SgdConfig) -> Self {
        Sgd { config, buffers: HashMap::new() }
    }

    /// One step with learning rate `lr` from flattened gradients by parameter name:
    /// `d = g + wd * p` (decayed kinds), `buf = d` on the first step else
    /// `momentum * buf + d`, `d = d + momentum * buf` (nesterov) or `buf`, `p -= lr * d`.
    /// Parameters without a gradient are left unchanged, as PyTorch does.
    pub fn step(&mut self, model: &mut UsNet, grads: &mut HashMap<String, Tensor<1>>, lr: f64) {
        let SgdConfig { momentum, nesterov, weight_decay } = self.config;
        model.map_params(&mut |name: &str, kind: ParamKind, param: AnyTensor| {
            let Some(grad) = grads.remove(name) else {
                return param;
            };
            param
                .into_inner()
                .map_flat(|p| {
                    let mut d = grad;
                    if weight_decay != 0.0 && kind.decays() {
                        d = d + p.clone().mul_scalar(weight_decay);
                    }
                    if momentum != 0.0 {
                        let buf = match self.buffers.remove(name) {
                            Some(buf) => buf.mul_scalar(momentum) + d.clone(),
                            None => d.clone(),
                        };
                        d = if nesterov { d + buf.clone().mul_scalar(momentum) } else { buf.clone() };
                        self.buffers.insert(name.to_string(), buf);
                    }
                    p - d.mul_scalar(lr)
                })
                .into_leaf()
        });
    }
}

//! SGD with PyTorch's semantics.

use std::collections::HashMap;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::init::ParamKind;
use crate::layers::AnyTensor;
use crate::model::UsNet;

/// SGD hyper-parameters, as `torch.optim.SGD` (dampening 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Default 0.9.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Default true, as the official configs.
    #[serde(default = "default_nesterov")]
    pub nesterov: bool,
    /// Applied only to conv weights that are not depthwise and to linear weights, as the
    /// official code does. Default 4e-5.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
}

fn default_momentum() -> f64 {
    0.9
}
fn default_nesterov() -> bool {
    true
}
fn default_weight_decay() -> f64 {
    4e-5
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { momentum: default_momentum(), nesterov: default_nesterov(), weight_decay: default_weight_decay() }
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

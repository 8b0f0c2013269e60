//! The sandwich rule with inplace distillation: one training iteration of a US-Net.

use std::collections::HashMap;

use burn::tensor::Tensor;
use rand::Rng;

use crate::error::{Error, Result};
use crate::layers::BnMode;
use crate::model::UsNet;
use crate::train::loss::{label_targets, soft_cross_entropy, soft_targets};
use crate::train::sgd::Sgd;
use crate::width::{Width, WidthRange, WidthSpec};

/// How the widths of an iteration are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WidthSampler {
    /// `n`: widths trained per iteration (at least 1).
    pub num_sample_training: usize,
    /// The sandwich rule: always include the max and min widths. Off, all `n` are random
    /// (the paper's ablation).
    pub sandwich: bool,
    /// Random widths are per stage (non-uniform US-Nets): `Some(number of width groups)`.
    pub per_stage_groups: Option<usize>,
}

impl WidthSampler {
    /// The widths of one iteration: max, min, then `n - 2` random (uniform in the range),
    /// or `n` random widths without the sandwich rule.
    pub fn sample(&self, range: &WidthRange, rng: &mut impl Rng) -> Vec<WidthSpec> {
        let (lo, hi) = (range.min().get(), range.max().get());
        let draw = |rng: &mut dyn rand::RngCore| {
            let mut one = || Width::new(rng.random_range(lo..=hi)).unwrap_or(range.max());
            match self.per_stage_groups {
                Some(groups) => WidthSpec::PerStage((0..groups).map(|_| one()).collect()),
                None => WidthSpec::Uniform(one()),
            }
        };
        let n = self.num_sample_training.max(1);
        if self.sandwich {
            let mut widths = vec![WidthSpec::Uniform(range.max())];
            if n >= 2 {
                widths.push(WidthSpec::Uniform(range.min()));
            }
            widths.extend((2..n).map(|_| draw(rng)));
            widths
        } else {
            (0..n).map(|_| draw(rng)).collect()
        }
    }
}

/// Options of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// Every width after the first learns from the first width's softmax.
    pub inplace_distill: bool,
    /// Label smoothing of the label loss.
    pub label_smoothing: f64,
    /// Learning rate of this step.
    pub lr: f64,
}

/// What a step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The loss of each width, in the order of `widths`.
    pub losses: Vec<f32>,
}

/// One iteration: each width in `widths` runs forward and backward on the same batch, the
/// gradients accumulate, then the optimizer takes one step.
///
/// The first width learns from the labels. With `inplace_distill`, every later width learns
/// from the first width's softmax of this iteration (detached) by soft cross-entropy, so the
/// first width should be the max width (the sandwich rule puts it first).
///
/// `model` must be trainable ([`UsNet::into_trainable`]); it is updated in place.
///
/// # Errors
///
/// A non-finite loss ([`Error::NonFiniteLoss`]) stops the step before the update, leaving
/// the model as it was; labels out of range and bad shapes or widths are errors too.
pub fn train_step(
    model: &mut UsNet,
    optimizer: &mut Sgd,
    input: Tensor<4>,
    labels: &[i64],
    widths: &[WidthSpec],
    options: StepOptions,
    step: u64,
) -> Result<StepOutput> {
    let batch = input.dims()[0];
    if labels.len() != batch {
        return Err(Error::Shape { what: "labels", expected: format!("[{batch}] (one per input)"), got: vec![labels.len()] });
    }
    let device = input.device();
    let num_classes = model.config().num_classes;
    let label_target = label_targets(labels, num_classes, options.label_smoothing, &device)?;
    let params = model.params();
    let mut grads: HashMap<String, Tensor<1>> = HashMap::new();
    let mut teacher: Option<Tensor<2>> = None;
    let mut losses = Vec::with_capacity(widths.len());
    for spec in widths {
        let logits = model.forward(input.clone(), spec, &mut BnMode::Train)?;
        let target = match &teacher {
            Some(t) if options.inplace_distill => t.clone(),
            _ => label_target.clone(),
        };
        if teacher.is_none() && options.inplace_distill {
            teacher = Some(soft_targets(&logits));
        }
        let loss = soft_cross_entropy(logits, target);
        let value: f32 = loss.clone().inner().into_scalar();
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss { width: spec.to_string(), value, step });
        }
        losses.push(value);
        let g = loss.backward();
        for (name, _, p) in &params {
            if let Some(gp) = p.grad_flat(&g) {
                let acc = match grads.remove(name) {
                    Some(acc) => acc + gp,
                    None => gp,
                };
                grads.insert(name.clone(), acc);
            }
        }
    }
    optimizer.step(model, &mut grads, options.lr);
    Ok(StepOutput { losses })
}

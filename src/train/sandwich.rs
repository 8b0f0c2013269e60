//! The sandwich rule with inplace distillation: one training iteration of a US-Net.

use std::collections::HashMap;

use burn::tensor::Tensor;
use rand::Rng;

use crate::error::{Error, Result};
use crate::layers::{BnMode, RunningStats};
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
    /// Inplace distillation is on, so the max width must run first as the teacher. The
    /// sandwich rule already puts it first; without the sandwich rule it runs first *in
    /// addition* to the `n` random widths (the teacher of the official code is always the max
    /// width, never a random one), so such an iteration trains `n + 1` widths.
    pub teacher: bool,
    /// Random widths are per stage (non-uniform US-Nets): `Some(number of width groups)`.
    pub per_stage_groups: Option<usize>,
}

impl WidthSampler {
    /// The widths of one iteration, the teacher (max width) first when there is one:
    /// max, min, then `n - 2` random (uniform in the range, per stage when
    /// `per_stage_groups` is set); without the sandwich rule `n` random widths, after the
    /// max width when `teacher`.
    pub fn sample(&self, range: &WidthRange, rng: &mut impl Rng) -> Vec<WidthSpec> {
        let (lo, hi) = (range.min().get(), range.max().get());
        let draw = |rng: &mut dyn rand::RngCore| {
            let mut one = || Width::new(rng.random_range(lo..=hi)).unwrap_or(range.max());
            match self.per_stage_groups {
                Some(groups) => WidthSpec::per_stage((0..groups).map(|_| one()).collect()),
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
            let teacher = self.teacher.then(|| WidthSpec::Uniform(range.max()));
            teacher.into_iter().chain((0..n).map(|_| draw(rng))).collect()
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
/// from the first width's softmax of this iteration (detached) by soft cross-entropy; that
/// teacher must be the max width ([`WidthSampler`] puts it first).
///
/// `model` must be trainable ([`UsNet::into_trainable`]); it is updated in place.
///
/// # Errors
///
/// A non-finite loss ([`Error::NonFiniteLoss`], with `step` as the iteration's number in
/// messages) stops the step before the update, leaving the model as it was; labels out of
/// range, bad shapes or widths, and with `inplace_distill` a first width other than the
/// model's max width ([`Error::InvalidConfig`]), are errors too.
pub fn train_step(
    model: &mut UsNet,
    optimizer: &mut Sgd,
    input: Tensor<4>,
    labels: &[i64],
    widths: &[WidthSpec],
    options: StepOptions,
    step: u64,
) -> Result<StepOutput> {
    step_with(model, optimizer, input, labels, widths, options, step, None)
}

/// [`train_step`], also folding every width's batch statistics into `running` (the BN
/// running statistics, [`RunningStats`]) in the order the widths run. The step's losses and
/// update are exactly those of [`train_step`].
///
/// # Errors
///
/// As [`train_step`]; `running` is updated only by widths that ran before an error.
#[allow(clippy::too_many_arguments)]
pub fn train_step_tracking(
    model: &mut UsNet,
    optimizer: &mut Sgd,
    input: Tensor<4>,
    labels: &[i64],
    widths: &[WidthSpec],
    options: StepOptions,
    step: u64,
    running: &mut RunningStats,
) -> Result<StepOutput> {
    step_with(model, optimizer, input, labels, widths, options, step, Some(running))
}

#[allow(clippy::too_many_arguments)]
fn step_with(
    model: &mut UsNet,
    optimizer: &mut Sgd,
    input: Tensor<4>,
    labels: &[i64],
    widths: &[WidthSpec],
    options: StepOptions,
    step: u64,
    mut running: Option<&mut RunningStats>,
) -> Result<StepOutput> {
    let batch = input.dims()[0];
    if labels.len() != batch {
        return Err(Error::Shape { what: "labels", expected: format!("[{batch}] (one per input)"), got: vec![labels.len()] });
    }
    if options.inplace_distill && widths.len() > 1 {
        let max = WidthSpec::Uniform(model.width_range().max());
        if widths[0] != max {
            return Err(Error::InvalidConfig(format!(
                "inplace distillation's teacher is the max width {max}, which must run first; the first width is {}",
                widths[0]
            )));
        }
    }
    let device = input.device();
    let num_classes = model.config().num_classes;
    let label_target = label_targets(labels, num_classes, options.label_smoothing, &device)?;
    let params = model.params();
    let mut grads: HashMap<String, Tensor<1>> = HashMap::new();
    let mut teacher: Option<Tensor<2>> = None;
    let mut losses = Vec::with_capacity(widths.len());
    for spec in widths {
        let mut mode = match running.as_deref_mut() {
            Some(r) => BnMode::TrainTrack(r),
            None => BnMode::Train,
        };
        let logits = model.forward(input.clone(), spec, &mut mode)?;
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

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn range() -> WidthRange {
        WidthRange::new(Width::new(0.35).unwrap(), Width::MAX).unwrap()
    }

    fn uniform(spec: &WidthSpec) -> f64 {
        match spec {
            WidthSpec::Uniform(w) => w.get(),
            WidthSpec::PerStage(_) => panic!("expected a uniform width, got {spec}"),
        }
    }

    #[test]
    fn the_sandwich_rule_puts_max_then_min_then_random_widths() {
        let mut rng = StdRng::seed_from_u64(1);
        for n in 1..=6 {
            let sampler = WidthSampler { num_sample_training: n, sandwich: true, teacher: true, per_stage_groups: None };
            let ws = sampler.sample(&range(), &mut rng);
            assert_eq!(ws.len(), n);
            assert_eq!(uniform(&ws[0]), 1.0);
            if n >= 2 {
                assert_eq!(uniform(&ws[1]), 0.35);
            }
            for w in &ws[2.min(n)..] {
                let v = uniform(w);
                assert!((0.35..=1.0).contains(&v) && v != 1.0 && v != 0.35, "{v}");
            }
        }
    }

    #[test]
    fn random_widths_are_uniform_over_the_range() {
        let mut rng = StdRng::seed_from_u64(2);
        let sampler = WidthSampler { num_sample_training: 12, sandwich: true, teacher: true, per_stage_groups: None };
        let mut buckets = [0usize; 13];
        let mut total = 0;
        for _ in 0..2000 {
            for w in &sampler.sample(&range(), &mut rng)[2..] {
                buckets[((uniform(w) - 0.35) / 0.05).floor().min(12.0) as usize] += 1;
                total += 1;
            }
        }
        // 13 buckets of 0.05 over [0.35, 1.0]: 20,000 draws, about 1,538 each.
        let expected = total as f64 / 13.0;
        for (i, &b) in buckets.iter().enumerate() {
            assert!((b as f64 - expected).abs() < 0.1 * expected, "bucket {i}: {b} of {total}");
        }
    }

    #[test]
    fn per_stage_widths_are_drawn_per_stage() {
        let mut rng = StdRng::seed_from_u64(3);
        let sampler = WidthSampler { num_sample_training: 4, sandwich: true, teacher: true, per_stage_groups: Some(5) };
        let ws = sampler.sample(&range(), &mut rng);
        // The sandwich's ends stay uniform; the random ones have one width per stage.
        assert_eq!((uniform(&ws[0]), uniform(&ws[1])), (1.0, 0.35));
        for spec in &ws[2..] {
            let WidthSpec::PerStage(stages) = spec else { panic!("{spec} is not per stage") };
            assert_eq!(stages.len(), 5);
            assert!(stages.iter().all(|w| range().contains(*w)));
            assert!(stages.windows(2).any(|p| p[0] != p[1]), "{spec}: stages drawn independently");
        }
    }

    #[test]
    fn without_the_sandwich_rule_the_teacher_is_still_the_max_width() {
        let mut rng = StdRng::seed_from_u64(4);
        let with = WidthSampler { num_sample_training: 4, sandwich: false, teacher: true, per_stage_groups: None };
        let ws = with.sample(&range(), &mut rng);
        assert_eq!(ws.len(), 5, "the max width runs in addition to the n random ones");
        assert_eq!(uniform(&ws[0]), 1.0);
        assert!(ws[1..].iter().all(|w| uniform(w) < 1.0));
        let without = WidthSampler { teacher: false, ..with };
        let ws = without.sample(&range(), &mut rng);
        assert_eq!(ws.len(), 4);
        assert!(ws.iter().all(|w| uniform(w) < 1.0), "no teacher: all random");
    }
}

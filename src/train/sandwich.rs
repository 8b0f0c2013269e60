//! The sandwich rule with inplace distillation: one training iteration of a US-Net.

use std::collections::HashMap;

use burn::tensor::{Tensor, TensorData};
use rand::Rng;

use crate::collective::{shard_range, Collective};
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
    running: Option<&mut RunningStats>,
) -> Result<StepOutput> {
    check_step(model, &input, labels, widths, options)?;
    let params = model.params();
    let mut grads = HashMap::new();
    let losses = chunk_pass(model, &params, input, labels, widths, options, running, None, &mut grads, Some(step))?;
    optimizer.step(model, &mut grads, options.lr);
    Ok(StepOutput { losses })
}

/// The checks every step makes before running: one label per input, and the max width first
/// when it is the teacher.
fn check_step(model: &UsNet, input: &Tensor<4>, labels: &[i64], widths: &[WidthSpec], options: StepOptions) -> Result<()> {
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
    Ok(())
}

/// Runs every width of `widths` forward and backward on one batch (the sandwich of one
/// chunk), adding each parameter's gradient of `scale * loss` (of `loss` without `scale`) into
/// `grads`, and returns each width's loss. BN normalises with this batch's statistics.
///
/// A non-finite loss is [`Error::NonFiniteLoss`] when `strict` holds the step's number;
/// otherwise it is returned as it is and that width's backward is skipped, for the caller to
/// decide once every process knows.
#[allow(clippy::too_many_arguments)]
fn chunk_pass(
    model: &UsNet,
    params: &[(String, crate::init::ParamKind, crate::layers::AnyTensor)],
    input: Tensor<4>,
    labels: &[i64],
    widths: &[WidthSpec],
    options: StepOptions,
    mut running: Option<&mut RunningStats>,
    scale: Option<f64>,
    grads: &mut HashMap<String, Tensor<1>>,
    strict: Option<u64>,
) -> Result<Vec<f32>> {
    let device = input.device();
    let num_classes = model.config().num_classes;
    let label_target = label_targets(labels, num_classes, options.label_smoothing, &device)?;
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
        losses.push(value);
        if !value.is_finite() {
            match strict {
                Some(step) => return Err(Error::NonFiniteLoss { width: spec.to_string(), value, step }),
                None => continue,
            }
        }
        let g = match scale {
            Some(s) => loss.mul_scalar(s).backward(),
            None => loss.backward(),
        };
        for (name, _, p) in params {
            if let Some(gp) = p.grad_flat(&g) {
                let acc = match grads.remove(name) {
                    Some(acc) => acc + gp,
                    None => gp,
                };
                grads.insert(name.clone(), acc);
            }
        }
    }
    Ok(losses)
}

/// How one process takes part in a data-parallel step ([`train_step_parallel`]).
pub struct Parallel<'a> {
    /// The job's processes; [`crate::collective::SingleProcess`] for one.
    pub collective: &'a mut dyn Collective,
    /// This process's batch is split into this many chunks ([`shard_range`]), each
    /// normalised with its own BN statistics ("ghost batches"); 1 for none.
    pub ghost_batches: usize,
    /// This process asks to stop after this step (Ctrl-C): the step tells every process.
    pub stop: bool,
}

/// What a data-parallel step reports, the same on every process.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelOutput {
    /// Each width's loss over the global batch (the mean of its chunks' losses, weighted by
    /// their sizes), in the order of `widths`.
    pub losses: Vec<f32>,
    /// Samples in the global batch, over all processes.
    pub samples: usize,
    /// Some process asked to stop: every process stops after this step.
    pub stop: bool,
    /// Seconds this process spent in the all-reduce (waiting for its peers included).
    pub all_reduce_secs: f64,
}

/// One data-parallel iteration of the sandwich rule, on this process's part of the global
/// batch (`input`, `labels`; possibly empty).
///
/// The part is split into `parallel.ghost_batches` chunks; each chunk runs every width of
/// `widths` as [`train_step`] does (BN statistics of the chunk, the chunk's own teacher).
/// The gradients of all chunks of all processes are summed in one all-reduce of one flat
/// buffer, with each chunk weighted by its share of the global batch, so every process
/// takes the same SGD step with the gradient of the global batch's mean loss. With one
/// process and one chunk this is exactly [`train_step_tracking`].
///
/// Only the first chunk's BN statistics are folded into `running`: rank 0's copy is the
/// one saved, which a single process with `ghost_batches = R` reproduces (as PyTorch's
/// DistributedDataParallel keeps rank 0's BN buffers).
///
/// # Errors
///
/// As [`train_step`]. A non-finite loss on any process is [`Error::NonFiniteLoss`] on every
/// process, before any update.
#[allow(clippy::too_many_arguments)]
pub fn train_step_parallel(
    model: &mut UsNet,
    optimizer: &mut Sgd,
    input: Tensor<4>,
    labels: &[i64],
    widths: &[WidthSpec],
    options: StepOptions,
    step: u64,
    running: &mut RunningStats,
    parallel: &mut Parallel<'_>,
) -> Result<ParallelOutput> {
    let n = input.dims()[0];
    let chunks = parallel.ghost_batches.max(1);
    if chunks == 1 && parallel.collective.size() == 1 {
        let out = step_with(model, optimizer, input, labels, widths, options, step, Some(running))?;
        return Ok(ParallelOutput { losses: out.losses, samples: n, stop: parallel.stop, all_reduce_secs: 0.0 });
    }
    check_step(model, &input, labels, widths, options)?;
    let params = model.params();
    let mut grads = HashMap::new();
    let mut loss_sums = vec![0.0f32; widths.len()];
    let mut running = Some(running);
    for chunk in 0..chunks {
        let range = shard_range(n, chunk, chunks);
        if range.is_empty() {
            continue;
        }
        let size = range.len();
        let x = input.clone().slice([range.clone()]);
        // Only the first chunk that runs tracks the running statistics.
        let losses = chunk_pass(model, &params, x, &labels[range], widths, options, running.take(), Some(size as f64), &mut grads, None)?;
        for (sum, loss) in loss_sums.iter_mut().zip(losses) {
            *sum += loss * size as f32;
        }
    }
    // One buffer: every parameter's gradient sum, then per parameter whether it had a
    // gradient, the loss sums, the sample count and the stop flag.
    let sizes: Vec<usize> = params.iter().map(|(_, _, p)| p.shape().iter().product()).collect();
    let total: usize = sizes.iter().sum();
    let mut buf = Vec::with_capacity(total + params.len() + widths.len() + 2);
    let mut present = Vec::with_capacity(params.len());
    for ((name, _, _), &size) in params.iter().zip(&sizes) {
        match grads.remove(name) {
            Some(g) => {
                buf.extend_from_slice(&g.into_data().try_into_vec_as::<f32>().expect("gradients read back as f32"));
                present.push(1.0);
            }
            None => {
                buf.resize(buf.len() + size, 0.0);
                present.push(0.0);
            }
        }
    }
    buf.extend_from_slice(&present);
    buf.extend_from_slice(&loss_sums);
    buf.push(n as f32);
    buf.push(if parallel.stop { 1.0 } else { 0.0 });
    let t0 = std::time::Instant::now();
    parallel.collective.all_reduce_sum(&mut buf);
    let all_reduce_secs = t0.elapsed().as_secs_f64();

    let tail = &buf[total..];
    let (present, tail) = tail.split_at(params.len());
    let (loss_sums, tail) = tail.split_at(widths.len());
    let samples = tail[0].round() as usize;
    let stop = tail[1] > 0.0;
    let scale = 1.0 / samples.max(1) as f32;
    let losses: Vec<f32> = loss_sums.iter().map(|s| s * scale).collect();
    if let Some((spec, &value)) = widths.iter().zip(&losses).find(|(_, l)| !l.is_finite()) {
        return Err(Error::NonFiniteLoss { width: spec.to_string(), value, step });
    }
    let device = input.device().inner();
    let mut offset = 0;
    for (((name, _, _), &size), &had) in params.iter().zip(&sizes).zip(present) {
        if had > 0.0 {
            let values: Vec<f32> = buf[offset..offset + size].iter().map(|g| g * scale).collect();
            grads.insert(name.clone(), Tensor::from_data(TensorData::new(values, [size]), &device));
        }
        offset += size;
    }
    optimizer.step(model, &mut grads, options.lr);
    Ok(ParallelOutput { losses, samples, stop, all_reduce_secs })
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

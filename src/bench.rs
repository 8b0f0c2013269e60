//! Benchmark workloads, the usnet side of `usnet bench`.
//!
//! Each workload mirrors one of `bench/torch_usnet.py`, so the two sides time the same
//! computation: the golden `v2_small` model for training and calibration, the official
//! US-MobileNet v2 for inference.

use std::rc::Rc;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::calibration::{calibrate, CalibratedModel};
use crate::error::{Error, Result};
use crate::init::Init;
use crate::model::{Arch, ModelConfig, UsNet};
use crate::train::{train_step, Sgd, SgdConfig, StepOptions, WidthSampler};
use crate::width::{Width, WidthRange, WidthSpec};

/// Timings of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub median_s: f64,
    pub samples_s: Vec<f64>,
    /// Peak resident memory of the process, from `/proc/self/status` (`VmHWM`), if readable.
    pub peak_rss_bytes: Option<u64>,
}

/// The golden files' `v2_small` model (3 input channels, 10 classes).
pub fn v2_small() -> ModelConfig {
    ModelConfig {
        arch: Arch::UsMobilenetV2,
        num_classes: 10,
        input_channels: 3,
        divisor: 8,
        width_range: [0.35, 1.0],
        block_setting: vec![vec![1, 16, 1, 1], vec![6, 24, 2, 2], vec![6, 32, 2, 2], vec![6, 48, 1, 1]],
        stem_channels: 32,
        stem_stride: 1,
        last_channels: Some(128),
        switchable_bn: None,
    }
}

/// A random input batch, uniform in [-2, 2): its values and the tensor (the benches and the
/// model tests draw inputs the same way).
pub(crate) fn random_values(rng: &mut StdRng, shape: [usize; 4], device: &Device) -> (Vec<f32>, Tensor<4>) {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    (values.clone(), Tensor::from_data(TensorData::new(values, shape), device))
}

fn random_input(rng: &mut StdRng, shape: [usize; 4], device: &Device) -> Tensor<4> {
    random_values(rng, shape, device).1
}

fn timed(warmup: usize, repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        f()?;
        samples.push(t0.elapsed().as_secs_f64());
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median_s = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    Ok(Timing { median_s, samples_s: samples, peak_rss_bytes: peak_rss() })
}

/// `VmHWM` of this process in bytes (Linux).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The widths of `infer/bN/wW` that issue 10 names, which `scaling/bN` runs in one process.
pub const SCALING_WIDTHS: [f64; 4] = [1.0, 0.75, 0.5, 0.35];

/// One workload, set up and ready to time call by call: what `usnet bench`'s worker
/// processes run, interleaved with the PyTorch and ONNX Runtime workers.
///
/// A workload has one part, or, for `scaling/bN`, one part per width of
/// [`SCALING_WIDTHS`]: the same calibrated network at each width, so that the widths can be
/// timed in turn within one process and the drift of the machine falls on all alike.
pub struct Workload {
    steps: Vec<Box<dyn FnMut() -> Result<()>>>,
    /// Each part's name: the workload's own, or `w1.0`, `w0.75`, ... for `scaling/bN`.
    pub parts: Vec<String>,
    /// Multiply-accumulates of one call of each part, where it has a fixed network
    /// (inference: the width's convs and classifier for the whole batch).
    pub macs: Vec<Option<u64>>,
}

impl Workload {
    /// Sets up the workload `name` (`sandwich/b128`, `calibrate`, `infer/b1/w0.5`,
    /// `scaling/b1`).
    ///
    /// # Errors
    ///
    /// An unknown workload name, and any error of setting it up.
    pub fn prepare(name: &str, device: &Device) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(0);
        let parts: Vec<&str> = name.split('/').collect();
        let bad = || Error::InvalidConfig(format!("unknown workload {name:?}; expected sandwich/bN, calibrate, infer/bN/wW or scaling/bN"));
        let batch = |p: &str| p.strip_prefix('b').and_then(|b| b.parse::<usize>().ok()).filter(|b| *b > 0).ok_or_else(bad);
        match parts.as_slice() {
            ["sandwich", b] => {
                let b = batch(b)?;
                let config = v2_small();
                let mut model = UsNet::init(&config, &Init::Kaiming { seed: 0 }, device)?.into_trainable();
                let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 1e-4 });
                let x = random_input(&mut rng, [b, 3, 32, 32], device);
                let labels: Vec<i64> = (0..b).map(|_| rng.random_range(0..10)).collect();
                let sampler = WidthSampler { num_sample_training: 4, sandwich: true, teacher: true, per_stage_groups: None };
                let range = config.range()?;
                let options = StepOptions { inplace_distill: true, label_smoothing: 0.0, lr: 0.05 };
                let mut step = 0;
                let step_fn = move || {
                    let widths = sampler.sample(&range, &mut rng);
                    step += 1;
                    train_step(&mut model, &mut sgd, x.clone(), &labels, &widths, options, step).map(|_| ())
                };
                Ok(Workload::single(name, Box::new(step_fn), None))
            }
            ["calibrate"] => {
                let config = v2_small();
                let model = UsNet::init(&config, &Init::Kaiming { seed: 0 }, device)?;
                let specs = grid(&config.range()?, 8);
                let batches: Vec<Tensor<4>> = (0..10).map(|_| random_input(&mut rng, [128, 3, 32, 32], device)).collect();
                Ok(Workload::single(name, Box::new(move || calibrate(&model, batches.clone(), &specs).map(|_| ())), None))
            }
            ["infer", b, w] => {
                let width: f64 = w.strip_prefix('w').and_then(|w| w.parse().ok()).ok_or_else(bad)?;
                Self::inference(batch(b)?, &[width], device)
            }
            ["scaling", b] => Self::inference(batch(b)?, &SCALING_WIDTHS, device),
            _ => Err(bad()),
        }
    }

    fn single(name: &str, step: Box<dyn FnMut() -> Result<()>>, macs: Option<u64>) -> Self {
        Workload { steps: vec![step], parts: vec![name.to_string()], macs: vec![macs] }
    }

    /// The official US-MobileNet v2 at 224 px, batch `b`, one part per width of `widths`:
    /// one network, calibrated at each of them.
    fn inference(b: usize, widths: &[f64], device: &Device) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(0);
        let specs = widths.iter().map(|&w| Ok(WidthSpec::Uniform(Width::new(w)?))).collect::<Result<Vec<_>>>()?;
        let config = ModelConfig::imagenet(Arch::UsMobilenetV2, 1000);
        let mut model = CalibratedModel::new(UsNet::init(&config, &Init::Kaiming { seed: 0 }, device)?);
        // Statistics from one small batch: eval cost does not depend on their values.
        model.calibrate(vec![random_input(&mut rng, [2, 3, 32, 32], device)], &specs)?;
        let macs = specs.iter().map(|spec| Ok(Some(model.fixed(spec)?.macs([224, 224]) * b as u64))).collect::<Result<Vec<_>>>()?;
        let x = random_input(&mut rng, [b, 3, 224, 224], device);
        let model = Rc::new(model);
        let steps = specs
            .iter()
            .map(|spec| {
                let (model, x, spec) = (Rc::clone(&model), x.clone(), spec.clone());
                Box::new(move || {
                    let logits = model.forward(x.clone(), &spec)?;
                    // Reading the result back forces the computation on lazy backends.
                    let _ = logits.into_data();
                    Ok(())
                }) as Box<dyn FnMut() -> Result<()>>
            })
            .collect();
        Ok(Workload { steps, parts: widths.iter().map(|w| format!("w{w:?}")).collect(), macs })
    }

    /// Runs each part of the workload once, untimed.
    ///
    /// # Errors
    ///
    /// Any error of the workload.
    pub fn call(&mut self) -> Result<()> {
        self.steps.iter_mut().try_for_each(|step| step())
    }

    /// Seconds one call of the first part takes.
    ///
    /// # Errors
    ///
    /// Any error of the workload.
    pub fn time_one(&mut self) -> Result<f64> {
        self.time_part(0)
    }

    /// Seconds one call of part `k` takes.
    ///
    /// # Errors
    ///
    /// `k` out of range, and any error of the workload.
    pub fn time_part(&mut self, k: usize) -> Result<f64> {
        let parts = self.steps.len();
        let step = self.steps.get_mut(k).ok_or_else(|| Error::InvalidConfig(format!("part {k} of a workload with {parts} parts")))?;
        let t0 = Instant::now();
        step()?;
        Ok(t0.elapsed().as_secs_f64())
    }
}

/// Runs the workload `name` (`sandwich/b128`, `calibrate`, `infer/b1/w0.5`) `warmup` times,
/// then times `repeats` calls.
///
/// # Errors
///
/// An unknown workload name, and any error of the workload itself.
pub fn run(name: &str, warmup: usize, repeats: usize, device: &Device) -> Result<Timing> {
    let mut workload = Workload::prepare(name, device)?;
    timed(warmup, repeats, || workload.call())
}

/// `n` widths evenly spaced over `range`, as `numpy.linspace` ([`WidthRange::grid`]).
fn grid(range: &WidthRange, n: usize) -> Vec<WidthSpec> {
    range.grid(n).into_iter().map(WidthSpec::Uniform).collect()
}

/// The median and quartiles of some samples (quartiles interpolated linearly between order
/// statistics, as `numpy.percentile`'s default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub q1: f64,
    pub q3: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `samples`; `None` when there are none or one is not finite.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        if samples.is_empty() || samples.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let pos = q * (s.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
        };
        Some(Spread { median: at(0.5), min: s[0], q1: at(0.25), q3: at(0.75), max: s[s.len() - 1] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_matches_numpy_percentiles() {
        // numpy.percentile([4, 1, 3, 2, 10], [0, 25, 50, 75, 100]) = [1, 2, 3, 4, 10]
        assert_eq!(Spread::of(&[4.0, 1.0, 3.0, 2.0, 10.0]), Some(Spread { median: 3.0, min: 1.0, q1: 2.0, q3: 4.0, max: 10.0 }));
        // numpy.percentile([1, 2, 3, 4], [25, 50, 75]) = [1.75, 2.5, 3.25]
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (1.75, 2.5, 3.25));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn scaling_workload_runs_each_width_of_one_network() {
        let device = crate::device::device(None).unwrap();
        let mut w = Workload::prepare("scaling/b1", &device).unwrap();
        assert_eq!(w.parts, ["w1.0", "w0.75", "w0.5", "w0.35"]);
        // Each part's MACs are its width's, as infer/b1/wW counts them.
        for (k, width) in SCALING_WIDTHS.iter().enumerate() {
            let single = Workload::prepare(&format!("infer/b1/w{width:?}"), &device).unwrap();
            assert_eq!(w.macs[k], single.macs[0], "{width}");
        }
        assert!(w.macs.windows(2).all(|m| m[0] > m[1]), "{:?}", w.macs);
        assert!(w.time_part(3).unwrap() > 0.0);
        assert!(w.time_part(4).is_err());
        assert!(Workload::prepare("scaling", &device).is_err());
        assert!(Workload::prepare("scaling/b0", &device).is_err());
    }
}

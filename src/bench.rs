//! Benchmark workloads, the usnet side of `usnet bench`.
//!
//! Each workload mirrors one of `bench/torch_usnet.py`, so the two sides time the same
//! computation: the golden `v2_small` model for training and calibration, the official
//! US-MobileNet v2 for inference.

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

/// Runs the workload `name` (`sandwich/b128`, `calibrate`, `infer/b1/w0.5`).
///
/// # Errors
///
/// An unknown workload name, and any error of the workload itself.
pub fn run(name: &str, warmup: usize, repeats: usize, device: &Device) -> Result<Timing> {
    let mut rng = StdRng::seed_from_u64(0);
    let parts: Vec<&str> = name.split('/').collect();
    let bad = || Error::InvalidConfig(format!("unknown workload {name:?}; expected sandwich/bN, calibrate or infer/bN/wW"));
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
            timed(warmup, repeats, || {
                let widths = sampler.sample(&range, &mut rng);
                step += 1;
                train_step(&mut model, &mut sgd, x.clone(), &labels, &widths, options, step).map(|_| ())
            })
        }
        ["calibrate"] => {
            let config = v2_small();
            let model = UsNet::init(&config, &Init::Kaiming { seed: 0 }, device)?;
            let specs = grid(&config.range()?, 8);
            let batches: Vec<Tensor<4>> = (0..10).map(|_| random_input(&mut rng, [128, 3, 32, 32], device)).collect();
            timed(warmup, repeats, || calibrate(&model, batches.clone(), &specs).map(|_| ()))
        }
        ["infer", b, w] => {
            let b = batch(b)?;
            let width: f64 = w.strip_prefix('w').and_then(|w| w.parse().ok()).ok_or_else(bad)?;
            let spec = WidthSpec::Uniform(Width::new(width)?);
            let config = ModelConfig::imagenet(Arch::UsMobilenetV2, 1000);
            let mut model = CalibratedModel::new(UsNet::init(&config, &Init::Kaiming { seed: 0 }, device)?);
            // Statistics from one small batch: eval cost does not depend on their values.
            model.calibrate(vec![random_input(&mut rng, [2, 3, 32, 32], device)], std::slice::from_ref(&spec))?;
            let x = random_input(&mut rng, [b, 3, 224, 224], device);
            timed(warmup, repeats, || {
                let logits = model.forward(x.clone(), &spec)?;
                // Reading the result back forces the computation on lazy backends.
                let _ = logits.into_data();
                Ok(())
            })
        }
        _ => Err(bad()),
    }
}

/// `n` widths evenly spaced over `range`, as `numpy.linspace` ([`WidthRange::grid`]).
fn grid(range: &WidthRange, n: usize) -> Vec<WidthSpec> {
    range.grid(n).into_iter().map(WidthSpec::Uniform).collect()
}

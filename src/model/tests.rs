//! Reference-vs-real tests of the US layers and models.

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::calibration::{calibrate, CalibratedModel};
use crate::init::Init;
use crate::kernels::conv::ConvGeom;
use crate::layers::{BnAccumulator, BnMode, UsBatchNorm, UsConv2dConfig};
use crate::model::{Arch, ModelConfig, UsNet};
use crate::train::{train_step, Sgd, SgdConfig, StepOptions};
use crate::width::{slim_channels, Width, WidthSpec};
use crate::Error;

fn device() -> Device {
    crate::device::device(None).expect("a backend")
}

use crate::bench::random_values as random;

#[test]
fn slimmed_conv_equals_dense_conv_on_weight_prefix() {
    let device = device();
    let mut rng = StdRng::seed_from_u64(1);
    for case in 0..24 {
        let depthwise = case % 3 == 0;
        let (c_max, o_max) = (rng.random_range(2..20), rng.random_range(2..20));
        let o_max = if depthwise { c_max } else { o_max };
        let k = [1, 3][rng.random_range(0..2)];
        let stride = rng.random_range(1..3);
        let cfg = UsConv2dConfig { depthwise, ..UsConv2dConfig::new(c_max, o_max, k, stride) };
        let conv = cfg.init("conv", &Init::Kaiming { seed: case }, &device);
        let width: f64 = rng.random_range(0.2..=1.0);
        let c_in = slim_channels(c_max, width, 1, 1).min(c_max);
        let c_out = if depthwise { c_in } else { conv.out_channels(c_in, width, 1) };
        let xs = [2, c_in, rng.random_range(3..8), rng.random_range(3..8)];
        let (xv, x) = random(&mut rng, xs, &device);
        let got = conv.forward(x, c_out).into_data().try_to_vec::<f32>().unwrap();

        // The reference is the dense definition on an explicitly sliced copy of the weight.
        let full = conv.weight.to_data().try_to_vec::<f32>().unwrap();
        let sliced = crate::fixed::first_channels_4d(&full, conv.weight.dims(), c_out, if depthwise { 1 } else { c_in });
        let g = ConvGeom { batch: xs[0], c_in, h: xs[2], w: xs[3], c_out, kernel: k, stride, pad: k / 2, depthwise };
        let want = crate::kernels::conv::tests::naive(&xv, &sliced, &g);
        assert_eq!(got.len(), want.len(), "case {case}");
        for (g, w) in got.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() <= 1e-4 * (1.0 + w.abs()), "case {case}: {g} vs {w}");
        }
    }
}

#[test]
fn cumulative_bn_statistics_equal_mean_of_batch_statistics() {
    let device = device();
    let mut rng = StdRng::seed_from_u64(2);
    let bn = UsBatchNorm::init("bn", 0, 12, &Init::Kaiming { seed: 0 }, &device);
    let mut acc = BnAccumulator::new(1);
    let c = 7; // a slimmed width: the first 7 of 12 channels
    let shape = [3, c, 4, 5];
    let (mut mean_ref, mut var_ref) = (vec![0.0f64; c], vec![0.0f64; c]);
    let batches = 5;
    for _ in 0..batches {
        let (v, x) = random(&mut rng, shape, &device);
        bn.forward(x, &mut BnMode::Calibrate(&mut acc), 0);
        let (m, var) = channel_stats(&v, shape);
        for ch in 0..c {
            mean_ref[ch] += m[ch] / batches as f64;
            var_ref[ch] += var[ch] / batches as f64;
        }
    }
    assert_eq!(acc.batches(), batches);
    let stats = acc.finish().expect("one layer, seen");
    let mean = stats.layers[0].mean.to_data().try_to_vec::<f32>().unwrap();
    let var = stats.layers[0].var.to_data().try_to_vec::<f32>().unwrap();
    for ch in 0..c {
        assert!((f64::from(mean[ch]) - mean_ref[ch]).abs() < 1e-5, "mean {ch}");
        assert!((f64::from(var[ch]) - var_ref[ch]).abs() < 1e-4, "var {ch}");
    }
}

fn small_v2() -> ModelConfig {
    ModelConfig {
        arch: Arch::UsMobilenetV2,
        num_classes: 5,
        input_channels: 3,
        divisor: 8,
        width_range: [0.35, 1.0],
        block_setting: vec![vec![1, 16, 1, 1], vec![6, 24, 2, 2], vec![6, 32, 1, 1]],
        stem_channels: 32,
        stem_stride: 1,
        last_channels: Some(64),
        switchable_bn: None,
    }
}

#[test]
fn gradients_outside_the_used_slice_are_exactly_zero() {
    let device = device();
    let model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 3 }, &device).unwrap().into_trainable();
    let mut rng = StdRng::seed_from_u64(3);
    let (_, x) = random(&mut rng, [4, 3, 8, 8], &device);
    let spec = WidthSpec::Uniform(Width::new(0.35).unwrap());
    let plan = model.plan(&spec, [8, 8]).unwrap();
    let loss = model.forward(x, &spec, &mut BnMode::Train).unwrap().powi_scalar(2).sum();
    let grads = loss.backward();
    let mut checked = 0;
    for (name, _, p) in model.params() {
        let grad = p.grad_flat(&grads).expect("every parameter takes part at any width");
        let g = grad.into_data().try_to_vec::<f32>().unwrap();
        let shape = p.shape();
        let layer = name.rsplit_once('.').unwrap().0;
        // The used region: from the conv's plan, or the BN's channel count.
        let used = |idx: usize| -> bool {
            if let Some(l) = plan.iter().find(|l| l.name == layer) {
                let per_out: usize = shape[1..].iter().product();
                let (o, rest) = (idx / per_out, idx % per_out);
                let i = if shape.len() == 4 { rest / (shape[2] * shape[3]) } else { rest };
                // A depthwise weight is [c, 1, k, k]: one input per group.
                let in_used = if l.groups > 1 { 1 } else { l.c_in };
                return o < l.c_out && i < in_used;
            }
            // A BN: its channels are its conv's outputs (the conv shares the prefix up to the slot).
            let (prefix, slot) = layer.rsplit_once('.').unwrap();
            let conv_name = format!("{prefix}.{}", slot.parse::<usize>().unwrap() - 1);
            let l = plan.iter().find(|l| l.name == conv_name).expect("a BN follows a conv");
            idx < l.c_out
        };
        let mut inside_nonzero = false;
        for (i, v) in g.iter().enumerate() {
            if used(i) {
                inside_nonzero |= *v != 0.0;
            } else {
                assert_eq!(*v, 0.0, "{name}[{i}] has a gradient outside the slice");
            }
        }
        assert!(inside_nonzero, "{name} has no gradient inside the slice");
        checked += 1;
    }
    assert_eq!(checked, model.params().len());
}

#[test]
fn per_stage_widths_give_each_stage_its_channels() {
    let device = device();
    let config = small_v2();
    let model = UsNet::init(&config, &Init::Kaiming { seed: 4 }, &device).unwrap();
    let ws = [0.5, 1.0, 0.35, 0.75];
    let spec = WidthSpec::per_stage(ws.iter().map(|w| Width::new(*w).unwrap()).collect());
    let plan = model.plan(&spec, [8, 8]).unwrap();
    let by_name = |n: &str| plan.iter().find(|l| l.name == n).unwrap_or_else(|| panic!("{n} in plan"));
    assert_eq!(by_name("features.0.0").c_out, slim_channels(32, 0.5, 1, 8));
    // Stage 0 (t=1): depthwise keeps the stem's channels, projection slims to 16 at 1.0.
    assert_eq!(by_name("features.1.body.0").c_out, slim_channels(32, 0.5, 1, 8));
    assert_eq!(by_name("features.1.body.3").c_out, 16);
    // Stage 1 at 0.35: expansion 16*6 with ratio 6, projection 24.
    assert_eq!(by_name("features.2.body.0").c_out, slim_channels(96, 0.35, 6, 8));
    assert_eq!(by_name("features.3.body.6").c_out, slim_channels(24, 0.35, 1, 8));
    // Stage 2 at 0.75; the head's input follows it, its output stays at 64 (official).
    assert_eq!(by_name("features.4.body.6").c_out, slim_channels(32, 0.75, 1, 8));
    assert_eq!(by_name("features.5.0").c_in, slim_channels(32, 0.75, 1, 8));
    assert_eq!(by_name("features.5.0").c_out, 64);
    assert_eq!(by_name("classifier.0").c_in, 64);
    // Each layer reads what the one before wrote.
    for pair in plan.windows(2) {
        assert_eq!(pair[0].c_out, pair[1].c_in, "{} -> {}", pair[0].name, pair[1].name);
    }
    let (_, x) = random(&mut StdRng::seed_from_u64(4), [2, 3, 8, 8], &device);
    let y = model.forward(x, &spec, &mut BnMode::Train).unwrap();
    assert_eq!(y.dims(), [2, 5]);
    // A spec of the wrong length names the layout.
    let short = WidthSpec::PerStage(vec![Width::new(0.5).unwrap(), Width::new(0.4).unwrap(), Width::new(0.5).unwrap()]);
    assert!(matches!(model.plan(&short, [8, 8]), Err(Error::SpecLength { expected: 4, got: 3, .. })));
    // Also when its entries are equal: parsing keeps the length the user wrote.
    for written in ["0.5/0.5/0.5", "0.5/0.5/0.5/0.5/0.5/0.5"] {
        let spec: WidthSpec = written.parse().unwrap();
        assert!(matches!(model.plan(&spec, [8, 8]), Err(Error::SpecLength { expected: 4, .. })), "{written}");
    }
    let right: WidthSpec = "0.5/0.5/0.5/0.5".parse().unwrap();
    assert_eq!(model.plan(&right, [8, 8]).unwrap(), model.plan(&WidthSpec::Uniform(Width::new(0.5).unwrap()), [8, 8]).unwrap());
    // The head entry of older versions: a clear error that says the head is fixed.
    let with_head: WidthSpec = "0.5/1.0/0.35/0.75/0.6".parse().unwrap();
    let err = model.plan(&with_head, [8, 8]).unwrap_err();
    assert!(matches!(err, Error::FixedHead { expected: 4, got: 5, last_channels: 64 }), "{err}");
    assert!(err.to_string().contains("drop the last entry"), "{err}");
}

#[test]
fn a_per_stage_spec_of_equal_entries_is_the_uniform_network() {
    let device = device();
    for config in [small_v2(), ModelConfig::imagenet(Arch::UsMobilenetV1, 10)] {
        let model = UsNet::init(&config, &Init::Counter { seed: 0 }, &device).unwrap();
        let w = Width::new(0.5).unwrap();
        let uniform = WidthSpec::Uniform(w);
        // Built without the canonicalising constructor, so the model itself must agree.
        let per_stage = WidthSpec::PerStage(vec![w; model.num_width_groups()]);
        assert_eq!(model.plan(&per_stage, [32, 32]).unwrap(), model.plan(&uniform, [32, 32]).unwrap(), "{:?}", config.arch);
        assert_eq!(model.bn_channels(&per_stage).unwrap(), model.bn_channels(&uniform).unwrap());
        assert_eq!(per_stage.key(), uniform.key());
        let cost = |s| crate::profile::width_cost(&model, s, 32).unwrap().macs;
        assert_eq!(cost(&per_stage), cost(&uniform));
    }
}

#[test]
fn widths_outside_the_range_and_bad_inputs_are_errors() {
    let device = device();
    let model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 5 }, &device).unwrap();
    let x = Tensor::<4>::zeros([2, 3, 8, 8], &device);
    let narrow = WidthSpec::Uniform(Width::new(0.2).unwrap());
    assert!(matches!(model.forward(x.clone(), &narrow, &mut BnMode::Train), Err(Error::WidthOutOfRange { .. })));
    let wrong = Tensor::<4>::zeros([2, 1, 8, 8], &device);
    assert!(matches!(model.forward(wrong, &WidthSpec::Uniform(Width::MAX), &mut BnMode::Train), Err(Error::Shape { .. })));
    let calibrated = CalibratedModel::new(model.clone());
    assert!(matches!(calibrated.forward(x, &WidthSpec::Uniform(Width::MAX)), Err(Error::NotCalibrated { .. })));
}

#[test]
fn calibrated_eval_uses_each_widths_own_statistics() {
    let device = device();
    let model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 6 }, &device).unwrap();
    let mut rng = StdRng::seed_from_u64(6);
    let batches: Vec<Tensor<4>> = (0..3).map(|_| random(&mut rng, [4, 3, 8, 8], &device).1).collect();
    let specs = [WidthSpec::Uniform(Width::MAX), WidthSpec::Uniform(Width::new(0.35).unwrap())];
    let stats = calibrate(&model, batches.clone(), &specs).unwrap();
    // Each width's statistics are its own: the same as calibrating it alone (so two widths'
    // results cannot be swapped or mixed).
    for (i, spec) in specs.iter().enumerate() {
        let alone = calibrate(&model, batches.clone(), std::slice::from_ref(spec)).unwrap().remove(0);
        for (a, b) in alone.layers.iter().zip(&stats[i].layers) {
            assert_eq!(a.mean.to_data(), b.mean.to_data(), "width {spec}");
            assert_eq!(a.var.to_data(), b.var.to_data(), "width {spec}");
        }
    }
    // The last BN does not slim, yet each width has its own statistics for it.
    let last = model.num_bn() - 1;
    // (Its input's mean is zero at every width, as the BN before the 1x1 conv has beta 0,
    // so compare the variance.)
    let a = stats[0].layers[last].var.to_data().try_to_vec::<f32>().unwrap();
    let b = stats[1].layers[last].var.to_data().try_to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-6));
    let mut cal = CalibratedModel::new(model.clone());
    cal.calibrate(batches.clone(), &specs).unwrap();
    // Eval at each width normalises with that width's statistics (on Flex through the
    // inference plan, which folds BN into the convs: equal up to rounding).
    let x = random(&mut rng, [2, 3, 8, 8], &device).1;
    let values = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0f32, f32::max);
    for (spec, own) in specs.iter().zip(&stats) {
        let want = values(model.forward(x.clone(), spec, &mut BnMode::Eval(own)).unwrap());
        let got = values(cal.forward(x.clone(), spec).unwrap());
        assert!(max_diff(&got, &want) <= 1e-4, "width {spec}: {got:?} vs {want:?}");
    }
    // And those differ from another set of statistics of the same shape.
    let other = calibrate(&model, batches[..1].to_vec(), &specs[..1]).unwrap().remove(0);
    let with_other = values(model.forward(x.clone(), &specs[0], &mut BnMode::Eval(&other)).unwrap());
    assert!(max_diff(&values(cal.forward(x, &specs[0]).unwrap()), &with_other) > 1e-3);
}

#[test]
fn sgd_step_matches_pytorch_rule_and_nan_loss_is_an_error() {
    let device = device();
    let config = small_v2();
    let mut model = UsNet::init(&config, &Init::Kaiming { seed: 7 }, &device).unwrap().into_trainable();
    let before = model.clone();
    let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 0.1 });
    let mut rng = StdRng::seed_from_u64(7);
    let (_, x) = random(&mut rng, [4, 3, 8, 8], &device);
    let labels = [0, 1, 2, 3];
    let widths = [WidthSpec::Uniform(Width::MAX)];
    // One width: distillation has no student here (see the distillation test for two).
    let options = StepOptions { inplace_distill: false, label_smoothing: 0.0, lr: 0.1 };
    // The gradient of the single width, computed independently.
    let logits = before.forward(x.clone(), &widths[0], &mut BnMode::Train).unwrap();
    let targets = crate::train::label_targets(&labels, 5, 0.0, &device).unwrap();
    let grads = crate::train::soft_cross_entropy(logits, targets).backward();
    train_step(&mut model, &mut sgd, x.clone(), &labels, &widths, options, 0).unwrap();
    for ((name, kind, p0), (_, _, p1)) in before.params().iter().zip(model.params()) {
        let g = p0.grad_flat(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let v0 = p0.to_data().try_to_vec::<f32>().unwrap();
        let v1 = p1.to_data().try_to_vec::<f32>().unwrap();
        let wd = if kind.decays() { 0.1 } else { 0.0 };
        for i in 0..v0.len() {
            let d = f64::from(g[i]) + wd * f64::from(v0[i]);
            let want = f64::from(v0[i]) - 0.1 * (d + 0.9 * d); // first step: buf = d
            assert!((f64::from(v1[i]) - want).abs() < 1e-5, "{name}[{i}]");
        }
    }
    let nan = Tensor::<4>::full([4, 3, 8, 8], f32::NAN, &device);
    let snapshot = model.params()[0].2.to_data();
    let err = train_step(&mut model, &mut sgd, nan, &labels, &widths, options, 1).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { step: 1, .. }), "{err}");
    assert_eq!(model.params()[0].2.to_data(), snapshot, "a failed step leaves the model unchanged");
    let bad_labels = [0, 1, 2, 9];
    assert!(matches!(train_step(&mut model, &mut sgd, x, &bad_labels, &widths, options, 2), Err(Error::Label { label: 9, .. })));
}

#[test]
fn switchable_bn_has_private_parameters_per_width() {
    let device = device();
    let config = ModelConfig { switchable_bn: Some(vec![1.0, 0.5, 0.35]), ..small_v2() };
    let model = UsNet::init(&config, &Init::Kaiming { seed: 8 }, &device).unwrap().into_trainable();
    let names: Vec<String> = model.params().into_iter().map(|(n, _, _)| n).collect();
    assert!(names.contains(&"features.0.1.bn.2.weight".to_string()), "official S-Net names");
    assert!(!names.contains(&"features.0.1.weight".to_string()));
    let (_, x) = random(&mut StdRng::seed_from_u64(8), [2, 3, 8, 8], &device);
    let half = WidthSpec::Uniform(Width::new(0.5).unwrap());
    let grads = model.forward(x.clone(), &half, &mut BnMode::Train).unwrap().sum().backward();
    for (name, _, p) in model.params() {
        let has = p.grad_flat(&grads).is_some();
        if name.contains(".bn.") {
            assert_eq!(has, name.contains(".bn.1."), "{name}: only width 0.5's BN learns");
        }
    }
    let other = WidthSpec::Uniform(Width::new(0.75).unwrap());
    assert!(matches!(model.forward(x, &other, &mut BnMode::Train), Err(Error::InvalidConfig(_))));
}

#[test]
fn inplace_distillation_teaches_later_widths_from_the_max_widths_softmax() {
    let device = device();
    let mut model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 9 }, &device).unwrap();
    // Sharpen the logits so that the teacher's softmax is far from the labels' one-hot.
    model.map_params(&mut |name, _, t| if name == "classifier.0.weight" { t.map_flat(|v| v.mul_scalar(30.0)) } else { t });
    let model = model.into_trainable();
    let (_, x) = random(&mut StdRng::seed_from_u64(9), [4, 3, 8, 8], &device);
    let labels = [0, 1, 2, 3];
    let (max, half) = (WidthSpec::Uniform(Width::MAX), WidthSpec::Uniform(Width::new(0.5).unwrap()));
    let widths = [max.clone(), half.clone()];
    // The two candidate losses of the half width, computed independently of train_step.
    let teacher = crate::train::soft_targets(&model.forward(x.clone(), &max, &mut BnMode::Train).unwrap());
    let student = || model.forward(x.clone(), &half, &mut BnMode::Train).unwrap();
    let soft: f32 = crate::train::soft_cross_entropy(student(), teacher).into_scalar();
    let hard: f32 = crate::train::soft_cross_entropy(student(), crate::train::label_targets(&labels, 5, 0.0, &device).unwrap()).into_scalar();
    assert!((soft - hard).abs() > 0.1, "the test needs the two losses to differ: {soft} vs {hard}");
    for (distill, want) in [(true, soft), (false, hard)] {
        let mut m = model.clone();
        let options = StepOptions { inplace_distill: distill, label_smoothing: 0.0, lr: 0.1 };
        let out = train_step(&mut m, &mut Sgd::new(SgdConfig::default()), x.clone(), &labels, &widths, options, 1).unwrap();
        assert!((out.losses[1] - want).abs() < 1e-5, "distill {distill}: {} vs {want}", out.losses[1]);
    }
    // The teacher must be the max width: a narrower first width is refused.
    let options = StepOptions { inplace_distill: true, label_smoothing: 0.0, lr: 0.1 };
    let mut m = model.clone();
    let err = train_step(&mut m, &mut Sgd::new(SgdConfig::default()), x, &labels, &[half, max], options, 1).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)) && err.to_string().contains("teacher"), "{err}");
}

#[test]
fn label_smoothing_follows_pytorch() {
    let device = device();
    let t = crate::train::label_targets(&[2, 0], 4, 0.1, &device).unwrap().into_data().try_to_vec::<f32>().unwrap();
    // (1 - e) * onehot + e / C, as torch.nn.CrossEntropyLoss(label_smoothing=e).
    let (on, off) = (0.9 + 0.025, 0.025);
    let want = [off, off, on, off, on, off, off, off];
    for (g, w) in t.iter().zip(want) {
        assert!((g - w).abs() < 1e-7, "{t:?}");
    }
    // The loss with smoothing: -sum(target * log_softmax), checked against a hand value.
    let logits = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 4]), &device);
    let target = crate::train::label_targets(&[3], 4, 0.2, &device).unwrap();
    let got: f32 = crate::train::soft_cross_entropy(logits, target).into_scalar();
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp() + 4f64.exp()).ln();
    let want: f64 = [1.0, 2.0, 3.0, 4.0].iter().zip([0.05, 0.05, 0.05, 0.85]).map(|(z, p)| -p * (z - lse)).sum();
    assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn widths_that_round_to_the_same_channels_are_merged_into_the_first() {
    let device = device();
    // Divisor 8: 0.5 and 0.51 give the same channels everywhere; 0.75 does not.
    let model = UsNet::init(&small_v2(), &Init::Counter { seed: 0 }, &device).unwrap();
    let specs: Vec<WidthSpec> = crate::width::parse_width_list("0.5,0.75,0.51,1.0").unwrap();
    assert_eq!(model.bn_channels(&specs[0]).unwrap(), model.bn_channels(&specs[2]).unwrap());
    let (kept, merged) = model.distinct_widths(&specs).unwrap();
    assert_eq!(kept.iter().map(|w| w.key()).collect::<Vec<_>>(), ["0.5", "0.75", "1"]);
    assert_eq!(merged, vec![(specs[2].clone(), specs[0].clone())]);
}

/// Channel means and unbiased variances of an NCHW buffer, in f64.
fn channel_stats(v: &[f32], [n, c, h, w]: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let count = (n * h * w) as f64;
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n).flat_map(|b| (0..h * w).map(move |i| (b, i))).map(|(b, i)| f64::from(v[(b * c + ch) * h * w + i])).collect();
            let m = vals.iter().sum::<f64>() / count;
            (m, vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (count - 1.0))
        })
        .unzip()
}

#[test]
fn running_statistics_follow_pytorch_and_share_one_buffer_across_widths() {
    let device = device();
    let mut rng = StdRng::seed_from_u64(11);
    let bn = UsBatchNorm::init("bn", 0, 12, &Init::Kaiming { seed: 0 }, &device);
    let mut running = crate::layers::RunningStats::new(&[vec![12]], &device);
    // PyTorch: running = 0.9 * running + 0.1 * batch (unbiased var), from mean 0 and var 1.
    let (mut mean, mut var) = (vec![0.0f64; 12], vec![1.0f64; 12]);
    for (c, shape) in [(7, [3, 7, 4, 5]), (12, [2, 12, 3, 3]), (5, [4, 5, 2, 2])] {
        let (v, x) = random(&mut rng, shape, &device);
        let tracked = bn.forward(x.clone(), &mut BnMode::TrainTrack(&mut running), 0);
        // The output is training mode's, unchanged by tracking.
        assert_eq!(tracked.into_data(), bn.forward(x, &mut BnMode::Train, 0).into_data());
        let (m, uv) = channel_stats(&v, shape);
        for ch in 0..c {
            mean[ch] = 0.9 * mean[ch] + 0.1 * m[ch];
            var[ch] = 0.9 * var[ch] + 0.1 * uv[ch];
        }
    }
    let got_mean = running.layers[0][0].mean.to_data().try_to_vec::<f32>().unwrap();
    let got_var = running.layers[0][0].var.to_data().try_to_vec::<f32>().unwrap();
    for ch in 0..12 {
        assert!((f64::from(got_mean[ch]) - mean[ch]).abs() < 1e-5, "mean {ch}: {} vs {}", got_mean[ch], mean[ch]);
        assert!((f64::from(got_var[ch]) - var[ch]).abs() < 1e-4, "var {ch}: {} vs {}", got_var[ch], var[ch]);
    }
}

#[test]
fn tracking_running_statistics_changes_no_training_output() {
    let device = device();
    let model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 12 }, &device).unwrap().into_trainable();
    let (_, x) = random(&mut StdRng::seed_from_u64(12), [4, 3, 8, 8], &device);
    let labels = [0, 1, 2, 3];
    let widths: Vec<WidthSpec> = crate::width::parse_width_list("1.0,0.35,0.6").unwrap();
    let options = StepOptions { inplace_distill: true, label_smoothing: 0.0, lr: 0.1 };
    let (mut a, mut b) = (model.clone(), model.clone());
    let (mut sa, mut sb) = (Sgd::new(SgdConfig::default()), Sgd::new(SgdConfig::default()));
    let mut running = model.new_running_stats();
    for step in 1..=2 {
        let la = train_step(&mut a, &mut sa, x.clone(), &labels, &widths, options, step).unwrap();
        let lb = crate::train::train_step_tracking(&mut b, &mut sb, x.clone(), &labels, &widths, options, step, &mut running).unwrap();
        assert_eq!(la, lb);
    }
    for ((name, _, pa), (_, _, pb)) in a.params().iter().zip(b.params()) {
        assert_eq!(pa.to_data(), pb.to_data(), "{name}");
    }
    // Every width updated the stem's shared buffer; the narrow ones only its first channels.
    let stem = running.layers[0][0].mean.to_data().try_to_vec::<f32>().unwrap();
    assert!(stem.iter().all(|v| *v != 0.0), "{stem:?}");
}

#[test]
fn an_snet_keeps_running_statistics_per_switch_width() {
    let device = device();
    let config = ModelConfig { switchable_bn: Some(vec![1.0, 0.5]), ..small_v2() };
    let model = UsNet::init(&config, &Init::Kaiming { seed: 13 }, &device).unwrap();
    let mut running = model.new_running_stats();
    assert_eq!(running.layers[0].len(), 2);
    let half = WidthSpec::Uniform(Width::new(0.5).unwrap());
    let (_, x) = random(&mut StdRng::seed_from_u64(13), [2, 3, 8, 8], &device);
    model.forward(x, &half, &mut BnMode::TrainTrack(&mut running)).unwrap();
    let untouched = running.layers[0][0].mean.to_data().try_to_vec::<f32>().unwrap();
    let updated = running.layers[0][1].mean.to_data().try_to_vec::<f32>().unwrap();
    assert!(untouched.iter().all(|v| *v == 0.0) && updated.iter().any(|v| *v != 0.0));
    // Evaluating at 0.5 uses switch 1's pair; the channel counts are 0.5's.
    let stats = model.running_statistics(&running, &half).unwrap();
    assert_eq!(stats.layers[0].mean.to_data(), running.layers[0][1].mean.to_data());
}

#[test]
fn bn_statistics_sources_give_each_width_the_statistics_they_name() {
    use crate::calibration::BnStatsSource;
    let device = device();
    let model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 14 }, &device).unwrap();
    let mut rng = StdRng::seed_from_u64(14);
    let batches: Vec<Tensor<4>> = (0..2).map(|_| random(&mut rng, [4, 3, 8, 8], &device).1).collect();
    let (max, half) = (WidthSpec::Uniform(Width::MAX), WidthSpec::Uniform(Width::new(0.5).unwrap()));
    let specs = [max.clone(), half.clone()];
    let own = calibrate(&model, batches.clone(), &specs).unwrap();
    let data = |s: &crate::layers::BnStatistics| s.layers.iter().map(|l| l.mean.to_data().try_to_vec::<f32>().unwrap()).collect::<Vec<_>>();

    let mut cal = CalibratedModel::new(model.clone());
    let on_demand = cal.prepare(BnStatsSource::Calibrated, &specs, None, || Ok(batches.clone())).unwrap();
    assert_eq!(on_demand, specs);
    assert_eq!(data(cal.stats(&half).unwrap()), data(&own[1]), "the half width's own statistics");

    let mut shared = CalibratedModel::new(model.clone());
    shared.prepare(BnStatsSource::SharedMax, &specs, None, || Ok(batches.clone())).unwrap();
    let max_stats = data(&own[0]);
    let channels = model.bn_channels(&half).unwrap();
    for ((got, full), c) in data(shared.stats(&half).unwrap()).iter().zip(&max_stats).zip(channels) {
        assert_eq!(got[..], full[..c], "the max width's statistics, sliced");
    }

    let mut running = model.new_running_stats();
    for b in &batches {
        model.forward(b.clone(), &max, &mut BnMode::TrainTrack(&mut running)).unwrap();
    }
    let mut run = CalibratedModel::new(model.clone());
    let never = || -> crate::Result<Vec<Tensor<4>>> { panic!("running statistics need no batches") };
    run.prepare(BnStatsSource::Running, &specs, Some(&running), never).unwrap();
    assert_eq!(data(run.stats(&half).unwrap()), data(&running.slice(0, &model.bn_channels(&half).unwrap())));
    assert_ne!(data(run.stats(&half).unwrap()), data(&own[1]));
    let err = CalibratedModel::new(model).prepare(BnStatsSource::Running, &specs, None, never).unwrap_err();
    assert!(matches!(err, Error::NoRunningStats), "{err}");
}

/// The parameters of `model`, flattened, by name.
fn param_values(model: &UsNet) -> Vec<(String, Vec<f32>)> {
    model.params().into_iter().map(|(name, _, p)| (name, p.to_data().try_to_vec::<f32>().unwrap())).collect()
}

#[test]
fn data_parallel_steps_average_the_gradients_of_their_shards() {
    use std::collections::VecDeque;

    use crate::collective::{Collective, Simulated, SingleProcess};
    use crate::train::{train_step_parallel, Parallel};

    let device = device();
    let model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 11 }, &device).unwrap().into_trainable();
    let mut rng = StdRng::seed_from_u64(11);
    // 5 samples: shards of 2 and 3, so the weighting by shard size matters.
    let (values, x) = random(&mut rng, [5, 3, 8, 8], &device);
    let labels = [0, 1, 2, 3, 4];
    let widths: Vec<WidthSpec> = ["1.0", "0.35", "0.6"].iter().map(|w| w.parse().unwrap()).collect();
    let options = StepOptions { inplace_distill: true, label_smoothing: 0.0, lr: 1.0 };
    let plain = || Sgd::new(SgdConfig { momentum: 0.0, nesterov: false, weight_decay: 0.0 });
    let fresh_stats = model.new_running_stats();
    let shard = |r: std::ops::Range<usize>| {
        let per = 3 * 8 * 8;
        let data = TensorData::new(values[r.start * per..r.end * per].to_vec(), [r.len(), 3, 8, 8]);
        (Tensor::<4>::from_data(data, &device), labels[r].to_vec())
    };

    // Reference: plain SGD with lr 1 moves each shard's model by its own gradient; the step
    // of the whole batch is the mean of those moves, weighted 2:3.
    let moved: Vec<Vec<(String, Vec<f32>)>> = [0..2, 2..5]
        .into_iter()
        .map(|r| {
            let mut m = model.clone();
            let (xs, ls) = shard(r);
            train_step(&mut m, &mut plain(), xs, &ls, &widths, options, 1).unwrap();
            param_values(&m)
        })
        .collect();
    let expected: Vec<Vec<f32>> =
        moved[0].iter().zip(&moved[1]).map(|((_, a), (_, b))| a.iter().zip(b).map(|(a, b)| (2.0 * a + 3.0 * b) / 5.0).collect()).collect();
    let close = |got: &UsNet, what: &str| {
        for ((name, got), want) in param_values(got).iter().zip(&expected) {
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "{what}: {name}[{i}] = {g}, expected {w}");
            }
        }
    };

    // One process, two ghost batches.
    let mut ghost = model.clone();
    let mut running = ghost.new_running_stats();
    let mut single = SingleProcess;
    let mut parallel = Parallel { collective: &mut single, ghost_batches: 2, stop: false };
    let out = train_step_parallel(&mut ghost, &mut plain(), x.clone(), &labels, &widths, options, 1, &mut running, &mut parallel).unwrap();
    assert_eq!(out.samples, 5);
    close(&ghost, "2 ghost batches");

    // Two processes, one at a time: rank `rank` of 2 steps on `(x, labels)` with `peers`, what
    // the other rank sent; returns the step's output, the model after it and what it sent.
    let step_as = |rank: usize, peers: Vec<Vec<f32>>, (x, labels): (Tensor<4>, Vec<i64>), stop: bool, step: u64| {
        let mut sim = Simulated { rank, size: 2, peers: VecDeque::from(peers), ..Default::default() };
        assert_eq!(sim.size(), 2);
        let mut m = model.clone();
        let mut p = Parallel { collective: &mut sim, ghost_batches: 1, stop };
        let out = train_step_parallel(&mut m, &mut plain(), x, &labels, &widths, options, step, &mut fresh_stats.clone(), &mut p);
        (out, m, sim.sent)
    };
    // Rank 1's contribution is what rank 0 receives.
    let (out1, _, sent1) = step_as(1, Vec::new(), shard(2..5), true, 1);
    out1.unwrap();
    let (out, m0, sent0) = step_as(0, sent1, shard(0..2), false, 1);
    let out = out.unwrap();
    assert_eq!(sent0.len(), 1, "one all-reduce per step");
    assert_eq!((out.samples, out.stop), (5, true), "the global batch, and rank 1's stop reaches rank 0");
    close(&m0, "rank 0 of 2");

    // A non-finite loss on rank 1 is an error on rank 0 too, before any update.
    let nan = Tensor::<4>::full([3, 3, 8, 8], f32::NAN, &device);
    let (_, _, sent1) = step_as(1, Vec::new(), (nan, shard(2..5).1), false, 4);
    let (out, m0, _) = step_as(0, sent1, shard(0..2), false, 4);
    let err = out.unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { step: 4, .. }), "{err}");
    assert_eq!(param_values(&m0), param_values(&model), "no update after a non-finite loss anywhere");
}

#[test]
fn calibration_over_processes_equals_one_process_seeing_every_batch() {
    use std::collections::VecDeque;

    use crate::calibration::calibrate_with;
    use crate::collective::Simulated;

    let device = device();
    let model = UsNet::init(&small_v2(), &Init::Kaiming { seed: 12 }, &device).unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    let batches: Vec<Tensor<4>> = (0..4).map(|_| random(&mut rng, [3, 3, 8, 8], &device).1).collect();
    let specs: Vec<WidthSpec> = ["1.0", "0.5"].iter().map(|w| w.parse().unwrap()).collect();
    let whole = calibrate(&model, batches.clone(), &specs).unwrap();
    let values = |s: &crate::layers::BnStatistics| -> Vec<f32> {
        s.layers.iter().flat_map(|l| [l.mean.to_data(), l.var.to_data()]).flat_map(|d| d.try_to_vec::<f32>().unwrap()).collect()
    };
    // Rank 0 holds `split` of the batches (none at all for 0), rank 1 the rest.
    for split in [1, 3, 0] {
        let mut rank1 = Simulated { rank: 1, size: 2, ..Default::default() };
        calibrate_with(&model, batches[split..].to_vec(), &specs, &mut rank1).unwrap();
        let mut rank0 = Simulated { rank: 0, size: 2, peers: VecDeque::from(rank1.sent), ..Default::default() };
        let got = calibrate_with(&model, batches[..split].to_vec(), &specs, &mut rank0).unwrap();
        assert_eq!(rank0.sent.len(), specs.len(), "one all-reduce per width");
        for (g, w) in got.iter().zip(&whole) {
            for (i, (a, b)) in values(g).iter().zip(values(w)).enumerate() {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "split {split}, value {i}: {a} vs {b}");
            }
        }
    }
}

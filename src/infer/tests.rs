use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::init::{counter_input, Init};
use crate::layers::BnMode;
use crate::model::{Arch, ModelConfig, UsNet};
use crate::width::Width;
use crate::CalibratedModel;

/// A pool of `threads` threads, so the parallel paths run whatever the machine has.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

/// The depthwise conv by its definition, NHWC, in f64.
#[allow(clippy::too_many_arguments)]
fn depthwise_reference(x: &[f32], [n, h, w, c]: [usize; 4], wt: &[f32], bias: &[f32], k: usize, s: usize, pad: usize, relu6: bool) -> (Vec<f64>, [usize; 2]) {
    let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
    let mut y = vec![0.0; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut acc = f64::from(bias[ch]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = ((oy * s + ky) as isize - pad as isize, (ox * s + kx) as isize - pad as isize);
                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                acc += f64::from(x[((b * h + iy as usize) * w + ix as usize) * c + ch]) * f64::from(wt[(ky * k + kx) * c + ch]);
                            }
                        }
                    }
                    y[((b * oh + oy) * ow + ox) * c + ch] = if relu6 { acc.clamp(0.0, 6.0) } else { acc };
                }
            }
        }
    }
    (y, [oh, ow])
}

/// Every instruction set, channel counts off the vector width, strides 1 and 2, kernels 1, 3
/// and 5, images with no border-free column, a residual, and the row bands of a team (each
/// reported once, after it is written).
#[test]
fn depthwise_matches_its_definition() {
    let cases = [
        ([1, 1, 1, 1], 3, 1),
        ([2, 5, 7, 3], 3, 1),
        ([1, 9, 13, 24], 3, 2),
        ([3, 12, 10, 17], 3, 1),
        ([1, 8, 11, 40], 5, 2),
        ([1, 6, 6, 8], 1, 1),
        ([2, 30, 28, 37], 3, 1),
        ([1, 40, 41, 96], 3, 2),
    ];
    for isa in Isa::available() {
        for (ci, &(dims, k, s)) in cases.iter().enumerate() {
            let [n, h, w, c] = dims;
            let x = counter_input("infer.dw.x", ci as u64, n * h * w * c);
            let wt = counter_input("infer.dw.w", ci as u64, k * k * c);
            let bias = counter_input("infer.dw.b", ci as u64, c);
            for (relu6, with_res) in [(false, false), (true, false), (true, true)] {
                let layer = Layer { op: Op::Depthwise(wt.clone()), c_out: c, kernel: k, stride: s, pad: k / 2, bias: bias.clone(), relu6, shortcut: None };
                let (mut want, [oh, ow]) = depthwise_reference(&x, dims, &wt, &bias, k, s, k / 2, relu6);
                // A residual one value wider than a pixel, added to all but the last channel.
                let (ld, cols) = (c + 1, c.saturating_sub(1));
                let r = counter_input("infer.dw.r", ci as u64, want.len() / c * ld);
                if with_res {
                    for (p, px) in want.chunks_exact_mut(c).enumerate() {
                        px[..cols].iter_mut().zip(&r[p * ld..]).for_each(|(v, a)| *v += f64::from(*a));
                    }
                }
                let res = with_res.then_some(Residual { values: &r, ld, cols });
                for (threads, cached) in [(1, false), (3, false), (1, true), (3, true)] {
                    let mut y = vec![f32::NAN; want.len() + 1];
                    let out = team::Buf::new(&mut y);
                    // Each task reports the rows it wrote, once they are all written.
                    let bands = std::sync::Mutex::new(Vec::new());
                    team::on_threads(threads, |par| {
                        depthwise(isa, &x, dims, &wt, &layer, [oh, ow], out, res, par, cached, |r0, r1| {
                            let written = unsafe { out.get(r0 * ow * c, (r1 - r0) * ow * c) };
                            assert!(written.iter().all(|v| !v.is_nan()), "rows {r0}..{r1} reported before they were written");
                            bands.lock().unwrap().push(r0..r1);
                        })
                    });
                    let mut bands = bands.into_inner().unwrap();
                    bands.sort_by_key(|r| r.start);
                    assert!(bands.windows(2).all(|b| b[0].end == b[1].start) && bands[0].start == 0 && bands.last().unwrap().end == n * oh, "bands {bands:?}");
                    for (i, (&g, &r)) in y.iter().zip(&want).enumerate() {
                        assert!((f64::from(g) - r).abs() <= 1e-5 * (1.0 + r.abs()), "{isa:?} {dims:?} k={k} s={s} relu6={relu6} res={with_res} threads={threads} [{i}]: {g} vs {r}");
                    }
                    assert!(y[want.len()].is_nan(), "{isa:?}: wrote past the output");
                }
            }
        }
    }
}

/// A v2 with residual blocks (two in the last row), a stride-2 stem and channel counts that
/// are not multiples of the vector width.
fn residual_v2() -> ModelConfig {
    ModelConfig {
        arch: Arch::UsMobilenetV2,
        num_classes: 7,
        input_channels: 3,
        divisor: 4,
        width_range: [0.35, 1.0],
        block_setting: vec![vec![1, 8, 1, 1], vec![4, 12, 2, 2], vec![3, 20, 3, 1]],
        stem_channels: 16,
        stem_stride: 2,
        last_channels: Some(36),
        switchable_bn: None,
    }
}

fn v1() -> ModelConfig {
    let mut c = ModelConfig::imagenet(Arch::UsMobilenetV1, 6);
    c.divisor = 4;
    c.block_setting = vec![vec![8, 1, 1], vec![20, 2, 2]];
    c.stem_channels = 8;
    c
}

/// A calibrated model at `specs`, and a batch of `shape`.
fn calibrated(config: &ModelConfig, specs: &[WidthSpec], shape: [usize; 4]) -> (CalibratedModel, Vec<f32>) {
    let device = crate::device::device(None).unwrap();
    let model = UsNet::init(config, &Init::Counter { seed: 5 }, &device).unwrap();
    let n: usize = shape.iter().product();
    let mut cal = CalibratedModel::new(model);
    let batches: Vec<Tensor<4>> = (0..2).map(|i| Tensor::from_data(TensorData::new(counter_input("infer.cal", i, n), shape), &device)).collect();
    cal.calibrate(batches, specs).unwrap();
    (cal, counter_input("infer.x", 0, n))
}

fn specs_of(model: &UsNet) -> Vec<WidthSpec> {
    let mut specs: Vec<WidthSpec> = ["1", "0.75", "0.5", "0.35"].iter().map(|s| s.parse().unwrap()).collect();
    let groups = model.num_width_groups();
    specs.push(WidthSpec::per_stage((0..groups).map(|g| Width::new([1.0, 0.5, 0.75, 0.35][g % 4]).unwrap()).collect()));
    specs
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what} [{i}]: {a} vs {b}");
    }
}

/// The plan computes what the fixed network's f64 reference computes, on every instruction
/// set, at uniform and per-stage widths, for one image and for batches that take the
/// layer-parallel and the image-parallel paths.
#[test]
fn plan_matches_the_reference_forward() {
    let (pool, pool1) = (pool(3), pool(1));
    // A grey-scale input too: the input transpose has a path of its own for RGB.
    let grey = ModelConfig { input_channels: 1, ..residual_v2() };
    for config in [residual_v2(), v1(), grey] {
        let probe = UsNet::init(&config, &Init::Counter { seed: 5 }, &crate::device::device(None).unwrap()).unwrap();
        let specs = specs_of(&probe);
        let c = config.input_channels;
        let (cal, _) = calibrated(&config, &specs, [2, c, 19, 23]);
        for spec in &specs {
            let fixed = cal.fixed(spec).unwrap();
            if config.arch == Arch::UsMobilenetV2 {
                assert!(fixed.convs.iter().filter(|c| c.shortcut.is_some()).count() >= 2, "the test model has residual blocks");
            }
            // Inverted residuals by chunks of as many rows as fit the cache, and of one row,
            // and of a few.
            for (isa, band_values) in Isa::available().into_iter().flat_map(|isa| [(isa, BLOCK_CHUNK), (isa, 1), (isa, 700)]) {
                let mut plan = InferencePlan::with_isa(&fixed, isa).unwrap();
                plan.band_values = band_values;
                // 1 image; 3 (layers spread over threads, bands across images); 2 larger ones
                // (depthwise layers and the convs around them by bands of rows); 14 of 5x6
                // (images spread, and too small for inverted residuals by bands on threads); 2
                // of one row (the padded input's top and bottom borders both in one task).
                for shape in [[1, c, 19, 23], [3, c, 17, 16], [2, c, 48, 40], [14, c, 5, 6], [2, c, 1, 9]] {
                    let x = counter_input("infer.x", shape[0] as u64, shape.iter().product());
                    let want = fixed.forward_reference(&x, shape).unwrap();
                    let got = pool.install(|| plan.forward(&x, shape)).unwrap();
                    assert_close(&got, &want, 2e-4, &format!("{:?} {spec} {isa:?} {shape:?} band {band_values}", config.arch));
                    let serial = pool1.install(|| plan.forward(&x, shape)).unwrap();
                    assert_close(&serial, &want, 2e-4, &format!("{:?} {spec} {isa:?} {shape:?} band {band_values}, 1 thread", config.arch));
                    // Again, on the buffers the first call left behind.
                    let again = pool.install(|| plan.forward(&x, shape)).unwrap();
                    assert_eq!(got, again, "a second call reuses buffers and gives the same logits");
                }
            }
        }
    }
}

/// `CalibratedModel::forward` (a plan on Flex) agrees with burn's eval-mode forward of the
/// slimmable model, and caches one plan per width.
#[test]
fn calibrated_forward_matches_burn() {
    let device = crate::device::device(None).unwrap();
    let config = residual_v2();
    let probe = UsNet::init(&config, &Init::Counter { seed: 5 }, &device).unwrap();
    let specs = specs_of(&probe);
    let shape = [4, 3, 21, 18];
    let (cal, x) = calibrated(&config, &specs, shape);
    for spec in &specs {
        let tensor = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device);
        let got: Vec<f32> = cal.forward(tensor.clone(), spec).unwrap().into_data().try_to_vec().unwrap();
        let want: Vec<f32> = cal.model.forward(tensor, spec, &mut BnMode::Eval(cal.stats(spec).unwrap())).unwrap().into_data().try_to_vec().unwrap();
        assert_close(&got, &want, 2e-4, &format!("{spec}"));
    }
    #[cfg(feature = "flex")]
    if crate::ops::enabled(&device) && enabled() {
        let a = cal.plan(&specs[0]).unwrap();
        let b = cal.plan(&specs[0]).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b), "one plan per width, built once");
    }
}

/// A buffer is not reused while its value has a reader left: a step's input lives until its
/// last layer has written, and so does the depthwise input of an inverted residual (which
/// runs as an expand, then a pair, when it does not run by bands).
#[test]
fn buffers_outlive_their_readers() {
    let layer = |op: Op, shortcut: Option<usize>| Layer { op, c_out: 4, kernel: 3, stride: 1, pad: 1, bias: vec![0.0; 4], relu6: true, shortcut };
    let pw = || Op::Pointwise(PackedB::new(Isa::Portable, 4, 4, |_, _| 0.0));
    let dw = || Op::Depthwise(vec![0.0; 36]);
    // A depthwise pair; two inverted residuals, the second adding the first's output; a
    // 1x1-depthwise-1x1 whose first output a shortcut reads, so no inverted residual.
    #[rustfmt::skip]
    let layers = vec![
        layer(dw(), None), layer(pw(), None),
        layer(pw(), None), layer(dw(), None), layer(pw(), None),
        layer(pw(), None), layer(dw(), None), layer(pw(), Some(4)),
        layer(pw(), None), layer(dw(), None), layer(pw(), Some(8)),
    ];
    let steps = steps(&layers);
    let spans: Vec<(usize, usize)> = steps.iter().map(|s| (s.first, s.len)).collect();
    assert_eq!(spans, [(0, 2), (2, 3), (5, 3), (8, 1), (9, 2)]);
    let (slot_of, slots) = assign_buffers(&layers, &steps);
    assert!(slots <= 4, "buffers are reused: {slot_of:?}");
    for (v, pair) in slot_of.windows(2).enumerate() {
        assert_ne!(pair[0], pair[1], "layer {v} writes over its own input: {slot_of:?}");
    }
    for s in &steps {
        let (input, last) = (s.first, s.first + s.len);
        assert!((input + 1..=last).all(|v| slot_of[v] != slot_of[input]), "step {s:?} writes over its input: {slot_of:?}");
        if s.len == 3 {
            assert_ne!(slot_of[last], slot_of[input + 1], "inverted residual {s:?} writes over its depthwise input: {slot_of:?}");
        }
    }
    assert!((6..=8).all(|v| slot_of[v] != slot_of[5]), "the shortcut's value is kept until layer 7: {slot_of:?}");
    assert!((10..=11).all(|v| slot_of[v] != slot_of[9]), "the shortcut's value is kept until layer 10: {slot_of:?}");
}

/// A chain may end with a depthwise layer, which then runs alone (no 1x1 conv after it).
#[test]
fn a_chain_may_end_with_a_depthwise_layer() {
    let spec: WidthSpec = "1".parse().unwrap();
    let (cal, _) = calibrated(&v1(), std::slice::from_ref(&spec), [2, 3, 8, 8]);
    let mut fixed = cal.fixed(&spec).unwrap();
    fixed.convs.pop();
    assert!(fixed.convs.last().unwrap().depthwise, "v1 ends with a depthwise-1x1 pair");
    let c = fixed.convs.last().unwrap().c_out;
    let classes = fixed.classifier.c_out;
    fixed.classifier.c_in = c;
    fixed.classifier.weight = counter_input("infer.tail", 0, classes * c);
    let plan = InferencePlan::new(&fixed).unwrap();
    for (threads, shape) in [(1, [1, 3, 9, 7]), (3, [2, 3, 16, 12])] {
        let x = counter_input("infer.x", 9, shape.iter().product());
        let got = pool(threads).install(|| plan.forward(&x, shape)).unwrap();
        assert_close(&got, &fixed.forward_reference(&x, shape).unwrap(), 2e-4, &format!("{threads} threads {shape:?}"));
    }
}

#[test]
fn bad_inputs_are_errors() {
    let config = residual_v2();
    let spec: WidthSpec = "0.5".parse().unwrap();
    let (cal, _) = calibrated(&config, std::slice::from_ref(&spec), [2, 3, 8, 8]);
    let plan = InferencePlan::new(&cal.fixed(&spec).unwrap()).unwrap();
    assert!(matches!(plan.forward(&[0.0; 10], [1, 3, 2, 2]), Err(Error::Shape { .. })), "wrong length");
    assert!(matches!(plan.forward(&[0.0; 16], [1, 4, 2, 2]), Err(Error::Shape { .. })), "wrong channels");
    assert!(matches!(plan.forward(&[], [0, 3, 2, 2]), Err(Error::Shape { .. })), "empty batch");
    assert!(plan.forward(&[0.0; 3], [1, 3, 1, 1]).is_ok(), "1x1 pixel images run (padding covers the kernels)");
}

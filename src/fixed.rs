//! One width of a US-Net as a plain network: the stage that export and fast inference use.
//!
//! [`FixedNet`] holds, for one [`WidthSpec`], the first channels of every weight and the BN
//! statistics of that width, as host `f32` buffers. It is what a fixed-width MobileNet of that
//! width would hold in PyTorch: nothing in it slims any more. The pipeline is
//! `UsNet` (trained, any width) → [`crate::CalibratedModel`] (BN statistics for some widths)
//! → `FixedNet` (one width) → an ONNX or safetensors file, or an inference engine.

use crate::error::{Error, Result};
use crate::layers::{BnStatistics, BN_EPS};
use crate::model::{Arch, ConvBn, UsNet};
use crate::width::WidthSpec;

/// A convolution at fixed width, with the batch norm after it and an optional ReLU6.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedConv {
    /// State-dict prefix of the conv, e.g. `features.3.body.0`.
    pub name: String,
    /// State-dict prefix of its batch norm, e.g. `features.3.body.1`.
    pub bn_name: String,
    pub c_in: usize,
    pub c_out: usize,
    /// Square kernel size; padding is `kernel / 2` on every side.
    pub kernel: usize,
    pub stride: usize,
    /// One group per channel (`c_in == c_out`).
    pub depthwise: bool,
    /// `[c_out, c_in / groups, kernel, kernel]`, row-major.
    pub weight: Vec<f32>,
    /// BN scale, shift, running mean and (unbiased) running variance, `[c_out]` each.
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    /// ReLU6 after the batch norm.
    pub relu6: bool,
    /// Ends a residual block: the output of conv `i` (the block's input) is added after the
    /// batch norm. The sum has this conv's `c_out` channels; when the shortcut has a
    /// different count (per-stage widths), only the first channels they share are added, as
    /// if the narrower one were zero-padded and the wider one cut.
    pub shortcut: Option<usize>,
}

impl FixedConv {
    /// `c_in` for a depthwise conv, else 1.
    pub fn groups(&self) -> usize {
        if self.depthwise { self.c_in } else { 1 }
    }

    /// Zero padding on each side.
    pub fn padding(&self) -> usize {
        self.kernel / 2
    }

    /// `[c_out, c_in / groups, kernel, kernel]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.groups(), self.kernel, self.kernel]
    }

    /// Output size along one spatial axis for input size `size`.
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding() - self.kernel) / self.stride + 1
    }

    /// The batch norm's eval-mode `y = x * scale + shift`, per output channel:
    /// `scale = gamma / sqrt(var + eps)`, `shift = beta - mean * scale`, computed in f64.
    pub fn bn_scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        let invstd = crate::kernels::bn::invstd(&self.var, BN_EPS as f32);
        crate::kernels::bn::fold(&self.gamma, &self.beta, &self.mean, &invstd)
    }

    /// The conv with its batch norm folded in: `(weight * scale, shift)`, the weight in
    /// [`FixedConv::weight_shape`] and the bias `[c_out]`.
    pub fn folded(&self) -> (Vec<f32>, Vec<f32>) {
        let (scale, shift) = self.bn_scale_shift();
        let per_out = self.weight.len() / self.c_out;
        let weight = self.weight.chunks_exact(per_out).zip(&scale).flat_map(|(w, &s)| w.iter().map(move |v| v * s)).collect();
        (weight, shift)
    }

    /// Multiply-accumulates for one image whose input to this conv is `hw`.
    pub fn macs(&self, hw: [usize; 2]) -> u64 {
        let [o, i, k, _] = self.weight_shape().map(|v| v as u64);
        o * i * k * k * (self.out_size(hw[0]) * self.out_size(hw[1])) as u64
    }
}

/// The classifier at fixed width: `y = x @ weight^T + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedLinear {
    /// State-dict prefix, e.g. `classifier.0`.
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    /// `[c_out, c_in]`, row-major.
    pub weight: Vec<f32>,
    /// `[c_out]`.
    pub bias: Vec<f32>,
}

/// A US-Net at one width: convs in forward order, then global average pooling and the
/// classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedNet {
    pub arch: Arch,
    /// The width this network was cut at.
    pub spec: WidthSpec,
    pub input_channels: usize,
    pub convs: Vec<FixedConv>,
    pub classifier: FixedLinear,
}

impl FixedNet {
    /// Cuts `model` at `spec`, with `stats` (that width's BN statistics) in its batch norms.
    ///
    /// # Errors
    ///
    /// A width outside the model's range or a bad per-stage spec; statistics that do not
    /// have one entry per BN layer with that width's channel counts; for an S-Net, a width
    /// that is not one of its switches.
    pub fn new(model: &UsNet, stats: &BnStatistics, spec: &WidthSpec) -> Result<Self> {
        let plan = model.plan(spec, [32, 32])?;
        let switch = model.switch_index(spec)?;
        if stats.layers.len() != model.num_bn() {
            return Err(Error::InvalidConfig(format!(
                "BN statistics of width {spec} have {} layers, the model has {}",
                stats.layers.len(),
                model.num_bn()
            )));
        }
        let mut convs: Vec<FixedConv> = Vec::with_capacity(plan.len() - 1);
        let mut push = |layer: &ConvBn, shortcut: Option<usize>| -> Result<usize> {
            let p = &plan[convs.len()];
            let [_, i_full, k, _] = layer.conv.weight.dims();
            let i_used = if layer.conv.config.depthwise { 1 } else { p.c_in };
            let full = host(layer.conv.weight.to_data());
            let weight = first_channels_4d(&full, [p.c_out, i_full, k, k], p.c_out, i_used);
            let stat = &stats.layers[layer.bn.index];
            let (gamma, beta) = &layer.bn.affine[switch];
            let mean = host(stat.mean.to_data());
            if mean.len() != p.c_out {
                return Err(Error::InvalidConfig(format!(
                    "BN statistics of {} at width {spec} have {} channels, the width has {}",
                    layer.bn.name,
                    mean.len(),
                    p.c_out
                )));
            }
            convs.push(FixedConv {
                name: layer.conv.name.clone(),
                bn_name: layer.bn.name.clone(),
                c_in: p.c_in,
                c_out: p.c_out,
                kernel: k,
                stride: layer.conv.config.stride,
                depthwise: layer.conv.config.depthwise,
                weight,
                gamma: host(gamma.to_data())[..p.c_out].to_vec(),
                beta: host(beta.to_data())[..p.c_out].to_vec(),
                mean,
                var: host(stat.var.to_data()),
                relu6: layer.relu6,
                shortcut,
            });
            Ok(convs.len() - 1)
        };
        // The index of the conv whose output feeds the next layer (the network input: none).
        let mut last = push(&model.stem, None)?;
        for block in &model.blocks {
            let input = last;
            if let Some(e) = &block.expand {
                push(e, None)?;
            }
            push(&block.depthwise, None)?;
            last = push(&block.project, block.residual.then_some(input))?;
        }
        if let Some(head) = &model.head {
            push(head, None)?;
        }
        let p = plan.last().expect("the plan ends with the classifier");
        let [o, i] = model.classifier.weight.dims();
        let full = host(model.classifier.weight.to_data());
        let weight = full.chunks_exact(i).flat_map(|row| row[..p.c_in].iter().copied()).collect();
        let classifier = FixedLinear {
            name: model.classifier.name.clone(),
            c_in: p.c_in,
            c_out: o,
            weight,
            bias: host(model.classifier.bias.to_data()),
        };
        Ok(FixedNet { arch: model.config().arch, spec: spec.clone(), input_channels: model.config().input_channels, convs, classifier })
    }

    /// Number of classes (the classifier's outputs).
    pub fn num_classes(&self) -> usize {
        self.classifier.c_out
    }

    /// The output channels of every conv, in forward order.
    pub fn channel_counts(&self) -> Vec<usize> {
        self.convs.iter().map(|c| c.c_out).collect()
    }

    /// Multiply-accumulates for one `hw` image, counted as [`crate::profile`] counts them.
    pub fn macs(&self, hw: [usize; 2]) -> u64 {
        let mut hw = hw;
        let mut total = 0;
        for c in &self.convs {
            total += c.macs(hw);
            hw = [c.out_size(hw[0]), c.out_size(hw[1])];
        }
        total + (self.classifier.c_in * self.classifier.c_out) as u64
    }

    /// Conv and linear parameters (weights and the classifier's bias), as
    /// [`crate::profile`] counts them.
    pub fn params(&self) -> u64 {
        let convs: usize = self.convs.iter().map(|c| c.weight.len()).sum();
        (convs + self.classifier.weight.len() + self.classifier.bias.len()) as u64
    }

    /// Logits of `input` (`[n, input_channels, h, w]`, row-major), computed the plain way in
    /// f64 from the unfolded batch norms: the reference that exporters and inference
    /// engines are tested against. Slow; meant for small inputs.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when `input` does not have `shape`'s length or the model's channels.
    pub fn forward_reference(&self, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        let [n, c, h, w] = shape;
        if c != self.input_channels || input.len() != n * c * h * w || n == 0 || h == 0 || w == 0 {
            return Err(Error::Shape {
                what: "reference input",
                expected: format!("[batch >= 1, {}, h >= 1, w >= 1] with as many values", self.input_channels),
                got: shape.to_vec(),
            });
        }
        let mut outputs: Vec<(Vec<f64>, [usize; 3])> = Vec::with_capacity(self.convs.len());
        let mut x: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
        let mut dims = [c, h, w];
        for conv in &self.convs {
            let (mut y, ydims) = reference_conv_bn(conv, &x, n, dims);
            if let Some(from) = conv.shortcut {
                let (s, sdims) = &outputs[from];
                add_first_channels(&mut y, ydims, s, *sdims, n);
            }
            outputs.push((y.clone(), ydims));
            x = y;
            dims = ydims;
        }
        let [cf, hf, wf] = dims;
        let lin = &self.classifier;
        let mut logits = Vec::with_capacity(n * lin.c_out);
        for b in 0..n {
            let pooled: Vec<f64> = (0..cf)
                .map(|ch| x[(b * cf + ch) * hf * wf..(b * cf + ch + 1) * hf * wf].iter().sum::<f64>() / (hf * wf) as f64)
                .collect();
            for o in 0..lin.c_out {
                let row = &lin.weight[o * lin.c_in..(o + 1) * lin.c_in];
                let dot: f64 = row.iter().zip(&pooled).map(|(&w, &p)| f64::from(w) * p).sum();
                logits.push((dot + f64::from(lin.bias[o])) as f32);
            }
        }
        Ok(logits)
    }
}

/// Conv, eval-mode batch norm and the optional ReLU6 of `conv` on `x` (`[n, c, h, w]`).
fn reference_conv_bn(conv: &FixedConv, x: &[f64], n: usize, [c, h, w]: [usize; 3]) -> (Vec<f64>, [usize; 3]) {
    let (k, s, pad) = (conv.kernel, conv.stride, conv.padding() as isize);
    let (oh, ow) = (conv.out_size(h), conv.out_size(w));
    let in_per_group = c / conv.groups();
    let mut y = vec![0.0; n * conv.c_out * oh * ow];
    for b in 0..n {
        for o in 0..conv.c_out {
            let first_in = if conv.depthwise { o } else { 0 };
            let scale = f64::from(conv.gamma[o]) / (f64::from(conv.var[o]) + BN_EPS).sqrt();
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0;
                    for i in 0..in_per_group {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - pad;
                                let ix = (ox * s + kx) as isize - pad;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * c + first_in + i) * h + iy as usize) * w + ix as usize];
                                acc += xv * f64::from(conv.weight[((o * in_per_group + i) * k + ky) * k + kx]);
                            }
                        }
                    }
                    let mut v = (acc - f64::from(conv.mean[o])) * scale + f64::from(conv.beta[o]);
                    if conv.relu6 {
                        v = v.clamp(0.0, 6.0);
                    }
                    y[((b * conv.c_out + o) * oh + oy) * ow + ox] = v;
                }
            }
        }
    }
    (y, [conv.c_out, oh, ow])
}

/// `y[:, :min] += s[:, :min]` over the first channels two `[n, c, h, w]` tensors share.
fn add_first_channels(y: &mut [f64], [cy, h, w]: [usize; 3], s: &[f64], [cs, ..]: [usize; 3], n: usize) {
    let plane = h * w;
    for b in 0..n {
        for ch in 0..cy.min(cs) {
            let (yo, so) = ((b * cy + ch) * plane, (b * cs + ch) * plane);
            y[yo..yo + plane].iter_mut().zip(&s[so..so + plane]).for_each(|(a, b)| *a += b);
        }
    }
}

/// The values of an f32 tensor read back to the host.
fn host(data: burn::tensor::TensorData) -> Vec<f32> {
    data.convert::<f32>().try_into_vec::<f32>().expect("converted to f32")
}

/// `full[..out, ..inp, :, :]` of a row-major `[o, i, k, k]` buffer.
pub(crate) fn first_channels_4d(full: &[f32], [_, i, k, _]: [usize; 4], out: usize, inp: usize) -> Vec<f32> {
    let kk = k * k;
    (0..out).flat_map(|o| full[(o * i) * kk..(o * i + inp) * kk].iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{counter_input, Init};
    use crate::model::ModelConfig;
    use crate::CalibratedModel;
    use burn::tensor::{Tensor, TensorData};

    fn small_v2() -> ModelConfig {
        ModelConfig {
            arch: Arch::UsMobilenetV2,
            num_classes: 5,
            input_channels: 3,
            divisor: 4,
            width_range: [0.35, 1.0],
            block_setting: vec![vec![1, 8, 1, 1], vec![4, 12, 2, 2], vec![4, 16, 1, 1]],
            stem_channels: 16,
            stem_stride: 2,
            last_channels: Some(32),
            switchable_bn: None,
        }
    }

    /// The fixed network computes what the US-Net computes at that width (eval-mode BN).
    #[test]
    fn reference_forward_matches_the_slimmable_model() {
        let device = crate::device::device(None).unwrap();
        let v1 = ModelConfig { block_setting: vec![vec![8, 1, 1], vec![16, 2, 2]], stem_channels: 8, ..ModelConfig::imagenet(Arch::UsMobilenetV1, 4) };
        for config in [small_v2(), v1] {
            let model = UsNet::init(&config, &Init::Counter { seed: 3 }, &device).unwrap();
            let shape = [2, 3, 9, 11];
            let n: usize = shape.iter().product();
            let x = counter_input("fixed.x", 1, n);
            let tensor = || Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device);
            let specs: Vec<WidthSpec> = ["1", "0.5", "0.35"].iter().map(|s| s.parse().unwrap()).collect();
            let mut cal = CalibratedModel::new(model.clone());
            let batches: Vec<Tensor<4>> = (0..2).map(|i| Tensor::from_data(TensorData::new(counter_input("fixed.cal", i, n), shape), &device)).collect();
            cal.calibrate(batches, &specs).unwrap();
            for spec in &specs {
                let fixed = FixedNet::new(&cal.model, cal.stats(spec).unwrap(), spec).unwrap();
                let want: Vec<f32> = cal.forward(tensor(), spec).unwrap().into_data().try_to_vec().unwrap();
                let got = fixed.forward_reference(&x, shape).unwrap();
                for (a, b) in want.iter().zip(&got) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{:?} {spec}: {a} vs {b}", config.arch);
                }
                let plan = model.plan(spec, [9, 11]).unwrap();
                assert_eq!(fixed.macs([9, 11]), plan.iter().map(|l| l.checked_macs().unwrap()).sum::<u64>());
                assert_eq!(fixed.params(), plan.iter().map(|l| l.checked_params().unwrap()).sum::<u64>());
                // Folding the batch norm into the conv gives the same affine map.
                let conv = &fixed.convs[1];
                let (w, b) = conv.folded();
                let (scale, shift) = conv.bn_scale_shift();
                assert_eq!(b, shift);
                assert!((w[0] - conv.weight[0] * scale[0]).abs() < 1e-6);
            }
        }
    }
}

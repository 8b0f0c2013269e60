//! The universally slimmable batch norm, with per-width statistics.
//!
//! The affine parameters are shared by all widths and sliced to the first channels. The
//! statistics are not: each width (or per-stage spec) has its own, computed after training by
//! [`crate::calibration`] and passed in explicitly through [`BnMode::Eval`].

use burn::tensor::module::{batch_norm, batch_norm_train};
use burn::tensor::{Device, Tensor};

use crate::init::{Init, ParamKind};
use crate::layers::param::{new_param, AnyTensor, ParamFn};
use crate::layers::UsConv2d;

/// PyTorch's default epsilon.
pub const BN_EPS: f64 = 1e-5;

/// The statistics of one BN layer at one width: `[channels]` each.
#[derive(Debug, Clone)]
pub struct BnStat {
    pub mean: Tensor<1>,
    /// Unbiased running variance, as PyTorch stores it.
    pub var: Tensor<1>,
}

/// The statistics of every BN layer of a model at one width spec, indexed by BN layer.
#[derive(Debug, Clone)]
pub struct BnStatistics {
    pub layers: Vec<BnStat>,
}

impl BnStatistics {
    /// Each layer's statistics cut to its first `channels[layer]` channels.
    pub fn sliced(&self, channels: &[usize]) -> BnStatistics {
        let cut = |s: &BnStat, c: usize| BnStat { mean: s.mean.clone().slice([0..c]), var: s.var.clone().slice([0..c]) };
        BnStatistics { layers: self.layers.iter().zip(channels).map(|(s, &c)| cut(s, c)).collect() }
    }
}

/// Cumulative averages of batch statistics, one slot per BN layer.
///
/// After `k` batches each slot holds the mean of the `k` batch means and of the `k` unbiased
/// batch variances (`s += (batch - s) / k`, as PyTorch's `momentum=None`).
#[derive(Debug, Clone, Default)]
pub struct BnAccumulator {
    slots: Vec<Option<(usize, BnStat)>>,
}

impl BnAccumulator {
    /// An empty accumulator for `num_layers` BN layers.
    pub fn new(num_layers: usize) -> Self {
        BnAccumulator { slots: vec![None; num_layers] }
    }

    /// Adds one batch's statistics, its mean and its biased variance over `count` values per
    /// channel (converted to the unbiased variance PyTorch stores).
    fn add_batch(&mut self, index: usize, mean: Tensor<1>, biased_var: Tensor<1>, count: usize) {
        let count = count as f64;
        self.add(index, mean, biased_var.mul_scalar(count / (count - 1.0).max(1.0)));
    }

    fn add(&mut self, index: usize, mean: Tensor<1>, unbiased_var: Tensor<1>) {
        let slot = &mut self.slots[index];
        *slot = Some(match slot.take() {
            None => (1, BnStat { mean, var: unbiased_var }),
            Some((k, s)) => {
                let k = k + 1;
                let inv = 1.0 / k as f64;
                let m = s.mean.clone() + (mean - s.mean).mul_scalar(inv);
                let v = s.var.clone() + (unbiased_var - s.var).mul_scalar(inv);
                (k, BnStat { mean: m, var: v })
            }
        });
    }

    /// Adds the batches of every other process of `collective` to this accumulator, so that
    /// each process holds the statistics of all the job's batches, as one process that saw
    /// them all would (each slot's count and its count-weighted sums are summed in one
    /// all-reduce). `channels` are the layers' channel counts at the width accumulated, on
    /// `device`; a process without batches takes part with zeros.
    ///
    /// # Panics
    ///
    /// When `channels` does not have one count per layer, or a slot has another count.
    pub fn all_reduce(&mut self, channels: &[usize], collective: &mut dyn crate::collective::Collective, device: &Device) {
        assert_eq!(channels.len(), self.slots.len(), "one channel count per BN layer");
        let mut buf = Vec::with_capacity(channels.iter().map(|c| 1 + 2 * c).sum());
        for (slot, &c) in self.slots.iter().zip(channels) {
            match slot {
                Some((k, s)) => {
                    let k = *k as f32;
                    buf.push(k);
                    for t in [&s.mean, &s.var] {
                        let values = t.to_data().try_into_vec_as::<f32>().expect("statistics read back as f32");
                        assert_eq!(values.len(), c, "BN statistics of {} channels, expected {c}", values.len());
                        buf.extend(values.iter().map(|v| v * k));
                    }
                }
                None => buf.resize(buf.len() + 1 + 2 * c, 0.0),
            }
        }
        collective.all_reduce_sum(&mut buf);
        let device = &device.clone().inner();
        let mut rest = &buf[..];
        for (slot, &c) in self.slots.iter_mut().zip(channels) {
            let (k, sums) = (rest[0], &rest[1..1 + 2 * c]);
            rest = &rest[1 + 2 * c..];
            let batches = k.round() as usize;
            *slot = (batches > 0).then(|| {
                let mean = sums[..c].iter().map(|v| v / k).collect::<Vec<f32>>();
                let var = sums[c..].iter().map(|v| v / k).collect::<Vec<f32>>();
                let tensor = |v: Vec<f32>| Tensor::from_data(burn::tensor::TensorData::new(v, [c]), device);
                (batches, BnStat { mean: tensor(mean), var: tensor(var) })
            });
        }
    }

    /// Number of batches seen by the first layer.
    pub fn batches(&self) -> usize {
        self.slots.first().and_then(|s| s.as_ref()).map_or(0, |(k, _)| *k)
    }

    /// The accumulated statistics, or `None` if some layer saw no batch.
    pub fn finish(self) -> Option<BnStatistics> {
        let layers = self.slots.into_iter().map(|s| s.map(|(_, stat)| stat)).collect::<Option<Vec<_>>>()?;
        Some(BnStatistics { layers })
    }
}

/// BN running statistics accumulated during training, as PyTorch's `BatchNorm2d` keeps them:
/// after each training-mode forward, `running = (1 - momentum) * running + momentum * batch`
/// with the batch mean and unbiased batch variance, starting from mean 0 and variance 1.
///
/// A US-Net has one full-width pair per BN layer, shared by every width: a width updates its
/// first channels, whatever width ran. That is the paper's "no calibration" baseline (every
/// width later normalises with these, sliced to its channels); the official code keeps such
/// shared buffers only for its unslimmed last BN and private ones per listed width for the
/// rest. An S-Net has one pair per switch width, as its private BNs do. They never change a
/// training output: normalisation in training uses the batch's statistics.
#[derive(Debug, Clone)]
pub struct RunningStats {
    /// PyTorch's default, 0.1.
    pub momentum: f64,
    /// `layers[bn][switch]`: each BN layer's pair per affine slot, at the slot's full size.
    pub layers: Vec<Vec<BnStat>>,
}

impl RunningStats {
    /// PyTorch's default BN momentum.
    pub const MOMENTUM: f64 = 0.1;

    /// Fresh statistics (mean 0, variance 1) for BN layers whose affine slots have `sizes`
    /// channels (`sizes[bn][switch]`), on `device`.
    pub fn new(sizes: &[Vec<usize>], device: &Device) -> Self {
        let device = &device.clone().inner();
        let layers = sizes
            .iter()
            .map(|slots| {
                slots
                    .iter()
                    .map(|&c| BnStat { mean: Tensor::zeros([c], device), var: Tensor::ones([c], device) })
                    .collect()
            })
            .collect();
        RunningStats { momentum: Self::MOMENTUM, layers }
    }

    /// Folds one batch's statistics (`count` values per channel, biased variance) into the
    /// first channels of layer `index`, slot `switch`.
    fn update(&mut self, index: usize, switch: usize, mean: Tensor<1>, biased_var: Tensor<1>, count: usize) {
        let m = self.momentum;
        let slot = &mut self.layers[index][switch];
        let device = slot.mean.device();
        let (mean, biased_var) = (mean.inner().to_device(&device), biased_var.inner().to_device(&device));
        let unbiased = biased_var.mul_scalar(count as f64 / (count as f64 - 1.0).max(1.0));
        let c = mean.dims()[0];
        let blend = |old: &Tensor<1>, new: Tensor<1>| {
            let head = if c == old.dims()[0] { old.clone() } else { old.clone().slice([0..c]) };
            let head = head.mul_scalar(1.0 - m) + new.mul_scalar(m);
            if c == old.dims()[0] { head } else { old.clone().slice_assign([0..c], head) }
        };
        slot.mean = blend(&slot.mean, mean);
        slot.var = blend(&slot.var, unbiased);
    }

    /// The statistics a width normalises with: each layer's pair of slot `switch`, cut to the
    /// layer's `channels` at that width.
    pub fn slice(&self, switch: usize, channels: &[usize]) -> BnStatistics {
        let layers = self.layers.iter().map(|slots| slots[switch.min(slots.len() - 1)].clone()).collect();
        BnStatistics { layers }.sliced(channels)
    }
}

/// How batch norm normalises, passed to every forward.
#[derive(Debug)]
pub enum BnMode<'a> {
    /// Batch statistics (mean and biased variance of this batch).
    Train,
    /// Batch statistics, as `Train`, and fold them into the running statistics (one extra
    /// statistics pass over the input on the fused path).
    TrainTrack(&'a mut RunningStats),
    /// Batch statistics, and accumulate them as the width's post-statistics.
    Calibrate(&'a mut BnAccumulator),
    /// Stored statistics of the width being run.
    Eval(&'a BnStatistics),
}

/// A new affine pair of `c` channels, `{prefix}.weight` and `{prefix}.bias`.
fn new_affine(prefix: &str, c: usize, init: &Init, device: &Device) -> (Tensor<1>, Tensor<1>) {
    let gamma = new_param(init, &format!("{prefix}.weight"), ParamKind::BnGamma, &[c], device).into_r1();
    let beta = new_param(init, &format!("{prefix}.bias"), ParamKind::BnBeta, &[c], device).into_r1();
    (gamma, beta)
}

/// Batch norm over the first channels of shared affine parameters, or, for an S-Net
/// (switchable BN), over one private affine pair per width of its list.
#[derive(Debug, Clone)]
pub struct UsBatchNorm {
    /// State-dict prefix, e.g. `features.3.body.1`.
    pub name: String,
    /// Position among the model's BN layers, the index into [`BnStatistics::layers`].
    pub index: usize,
    /// `(gamma, beta)`: one full-width pair shared by all widths (US-Nets), or one pair
    /// per switch width, each with that width's channel count (S-Nets).
    pub affine: Vec<(Tensor<1>, Tensor<1>)>,
}

impl UsBatchNorm {
    /// A new layer with `num_features` channels at full width.
    pub fn init(name: &str, index: usize, num_features: usize, init: &Init, device: &Device) -> Self {
        UsBatchNorm { name: name.to_string(), index, affine: vec![new_affine(name, num_features, init, device)] }
    }

    /// Makes this a switchable BN with one private affine pair per entry of `channels`
    /// (the layer's channel count at each switch width), named `{name}.bn.{i}.weight`
    /// and `.bias` as the official `SwitchableBatchNorm2d`.
    pub fn make_switchable(&mut self, channels: &[usize], init: &Init, device: &Device) {
        self.affine = channels.iter().enumerate().map(|(i, &c)| new_affine(&format!("{}.bn.{i}", self.name), c, init, device)).collect();
    }

    /// Normalises the first `c` channels, `c` being the input's channel count.
    ///
    /// # Shapes
    ///
    /// - input and output: `[batch, c, h, w]`, `c <= num_features`
    ///
    /// # Panics
    ///
    /// In eval mode, panics if the stored statistics of this layer do not have `c` channels;
    /// [`crate::model::UsNet`] checks the width spec before it runs.
    ///
    /// `switch` selects the private affine pair of an S-Net (0 for a US-Net).
    pub fn forward(&self, x: Tensor<4>, mode: &mut BnMode, switch: usize) -> Tensor<4> {
        let (gamma, beta) = self.sliced_affine(x.dims()[1], switch);
        match mode {
            BnMode::Train => batch_norm_train(x, gamma, beta, BN_EPS).output,
            BnMode::TrainTrack(running) => {
                let [n, _, h, w] = x.dims();
                let out = batch_norm_train(x, gamma, beta, BN_EPS);
                running.update(self.index, switch, out.mean.inner(), out.variance.inner(), n * h * w);
                out.output
            }
            BnMode::Calibrate(acc) => {
                let [n, _, h, w] = x.dims();
                let out = batch_norm_train(x, gamma, beta, BN_EPS);
                acc.add_batch(self.index, out.mean.inner(), out.variance.inner(), n * h * w);
                out.output
            }
            BnMode::Eval(stats) => {
                let stat = &stats.layers[self.index];
                assert_eq!(stat.mean.dims()[0], gamma.dims()[0], "statistics of {} have the wrong width", self.name);
                batch_norm(x, gamma, beta, stat.mean.clone(), stat.var.clone(), BN_EPS)
            }
        }
    }

    /// [`UsBatchNorm::forward`] followed by ReLU6 when `relu6`, as one fused operation where
    /// the backend has it ([`crate::ops`]).
    pub fn forward_act(&self, x: Tensor<4>, mode: &mut BnMode, switch: usize, relu6: bool) -> Tensor<4> {
        #[cfg(feature = "flex")]
        if crate::ops::enabled(&x.device()) {
            return self.forward_fused(x, mode, switch, relu6);
        }
        let y = self.forward(x, mode, switch);
        if relu6 { burn::tensor::activation::relu6(y) } else { y }
    }

    /// [`UsBatchNorm::forward_act`], then `conv` with `c_out` outputs
    /// ([`crate::layers::UsConv2d::forward`]). In training on the fused path this is one
    /// operation ([`crate::ops::bn_conv`]) whose backward recomputes this layer's output
    /// instead of keeping it: the activations kept for the backward are most of a training
    /// step's memory.
    pub fn forward_act_conv(&self, x: Tensor<4>, mode: &mut BnMode, switch: usize, relu6: bool, conv: &UsConv2d, c_out: usize) -> Tensor<4> {
        #[cfg(feature = "flex")]
        if crate::ops::enabled(&x.device()) && matches!(mode, BnMode::Train | BnMode::TrainTrack(_)) {
            let c = x.dims()[1];
            if let BnMode::TrainTrack(running) = mode {
                self.track(x.clone(), running, switch);
            }
            let (gamma, beta) = self.sliced_affine(c, switch);
            let weight = conv.sliced_weight(c, c_out);
            let args = crate::ops::ConvArgs { stride: conv.config.stride, pad: conv.pad(), depthwise: conv.config.depthwise };
            return crate::ops::bn_conv(x, gamma, beta, relu6, weight, args);
        }
        conv.forward(self.forward_act(x, mode, switch, relu6), c_out)
    }

    /// Adds the batch statistics of `x` to `running`.
    #[cfg(feature = "flex")]
    fn track(&self, x: Tensor<4>, running: &mut RunningStats, switch: usize) {
        let [n, _, h, w] = x.dims();
        let (mean, var) = crate::ops::bn_stats(x.inner());
        running.update(self.index, switch, mean, var, n * h * w);
    }

    #[cfg(feature = "flex")]
    fn forward_fused(&self, x: Tensor<4>, mode: &mut BnMode, switch: usize, relu6: bool) -> Tensor<4> {
        use crate::ops;
        let c = x.dims()[1];
        let (gamma, beta) = self.sliced_affine(c, switch);
        // Eval-mode BN is `x * scale + shift` with the statistics folded in.
        let fold = |mean: Tensor<1>, var: Tensor<1>| {
            let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("batch norm runs on f32 tensors");
            let invstd = crate::kernels::bn::invstd(&values(var), BN_EPS as f32);
            let (scale, shift) = crate::kernels::bn::fold(&values(gamma.clone()), &values(beta.clone()), &values(mean), &invstd);
            let device = gamma.device();
            let tensor = |v: Vec<f32>| Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [c]), &device);
            (tensor(scale), tensor(shift))
        };
        match mode {
            BnMode::Train => ops::bn_train(x, gamma, beta, relu6),
            BnMode::TrainTrack(running) => {
                self.track(x.clone(), running, switch);
                ops::bn_train(x, gamma, beta, relu6)
            }
            BnMode::Calibrate(acc) => {
                let [n, _, h, w] = x.dims();
                let (mean, var) = ops::bn_stats(x.clone());
                let (mean, var) = (mean.inner(), var.inner());
                acc.add_batch(self.index, mean.clone(), var.clone(), n * h * w);
                // Normalise with the batch statistics, as training mode does.
                let device = x.device();
                let (scale, shift) = fold(mean.to_device(&device), var.to_device(&device));
                ops::affine_act(x, scale, shift, relu6)
            }
            BnMode::Eval(stats) => {
                let stat = &stats.layers[self.index];
                assert_eq!(stat.mean.dims()[0], c, "statistics of {} have the wrong width", self.name);
                let (scale, shift) = fold(stat.mean.clone(), stat.var.clone());
                ops::affine_act(x, scale, shift, relu6)
            }
        }
    }

    /// The affine pair `switch`, cut to its first `c` channels.
    fn sliced_affine(&self, c: usize, switch: usize) -> (Tensor<1>, Tensor<1>) {
        let (gamma, beta) = &self.affine[switch];
        if c == gamma.dims()[0] {
            (gamma.clone(), beta.clone())
        } else {
            (gamma.clone().slice([0..c]), beta.clone().slice([0..c]))
        }
    }

    pub(crate) fn map_params(&mut self, f: &mut ParamFn) {
        let switchable = self.affine.len() > 1;
        for (i, (gamma, beta)) in self.affine.iter_mut().enumerate() {
            let prefix = if switchable { format!("{}.bn.{i}", self.name) } else { self.name.clone() };
            *gamma = f(&format!("{prefix}.weight"), ParamKind::BnGamma, AnyTensor::R1(gamma.clone())).into_r1();
            *beta = f(&format!("{prefix}.bias"), ParamKind::BnBeta, AnyTensor::R1(beta.clone())).into_r1();
        }
    }
}

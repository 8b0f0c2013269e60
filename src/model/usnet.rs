//! US-MobileNet v1 and v2, built from a block table.

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::{AnyTensor, BnMode, ParamFn, RunningStats, UsBatchNorm, UsConv2d, UsConv2dConfig, UsLinear};
use crate::model::config::{Arch, ModelConfig};
use crate::width::{Width, WidthRange, WidthSpec};

/// A conv, its batch norm and an optional ReLU6.
#[derive(Debug, Clone)]
pub struct ConvBn {
    pub conv: UsConv2d,
    pub bn: UsBatchNorm,
    pub relu6: bool,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>, c_out: usize, mode: &mut BnMode, switch: usize) -> Tensor<4> {
        self.bn.forward_act(self.conv.forward(x, c_out), mode, switch, self.relu6)
    }

    fn map_params(&mut self, f: &mut ParamFn) {
        self.conv.map_params(f);
        self.bn.map_params(f);
    }
}

/// A block: v1's depthwise-separable block (no expansion, ReLU6 after the projection) or
/// v2's inverted residual.
#[derive(Debug, Clone)]
pub struct Block {
    /// The block-table row this block belongs to; its width is that stage's width.
    pub stage: usize,
    pub expand: Option<ConvBn>,
    pub depthwise: ConvBn,
    pub project: ConvBn,
    /// Stride 1 and equal full input and output channels.
    pub residual: bool,
}

impl Block {
    /// The block's conv+BN layers, in forward (and state-dict) order.
    fn layers(&self) -> impl Iterator<Item = &ConvBn> {
        self.expand.iter().chain([&self.depthwise, &self.project])
    }

    fn layers_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        self.expand.iter_mut().chain([&mut self.depthwise, &mut self.project])
    }

    /// The block without its residual add; `next` gives each layer's output channels.
    ///
    /// Each batch norm inside the block runs together with the conv after it
    /// ([`UsBatchNorm::forward_act_conv`]), so that training keeps one activation per layer.
    fn forward(&self, x: Tensor<4>, next: &mut impl FnMut() -> usize, mode: &mut BnMode, switch: usize) -> Tensor<4> {
        let mut layers = self.layers();
        let mut last = layers.next().expect("a block has a depthwise and a project layer");
        let mut x = last.conv.forward(x, next());
        for layer in layers {
            x = last.bn.forward_act_conv(x, mode, switch, last.relu6, &layer.conv, next());
            last = layer;
        }
        last.bn.forward_act(x, mode, switch, last.relu6)
    }
}

/// The width a conv+BN layer's output follows.
#[derive(Debug, Clone, Copy)]
enum Follows {
    Stem,
    Stage(usize),
    /// v2's head: a fixed output.
    Fixed,
}

/// What a conv or linear layer does at one width: enough to count its cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// State-dict prefix of the layer.
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    /// 0 for a linear layer.
    pub kernel: usize,
    pub groups: usize,
    /// Output spatial size (1 for a linear layer).
    pub out_hw: [usize; 2],
    /// Whether the layer has a bias (linear) of `c_out` entries.
    pub bias: bool,
}

impl LayerPlan {
    /// The weights the layer uses at this width, `None` when they overflow `u64`.
    fn weights(&self) -> Option<u64> {
        let k2 = (self.kernel.max(1) as u64).checked_mul(self.kernel.max(1) as u64)?;
        (self.c_in as u64 / self.groups.max(1) as u64).checked_mul(self.c_out as u64)?.checked_mul(k2)
    }

    /// Multiply-accumulates for one image, `None` when they overflow `u64`.
    pub fn checked_macs(&self) -> Option<u64> {
        self.weights()?.checked_mul(self.out_hw[0] as u64)?.checked_mul(self.out_hw[1] as u64)
    }

    /// Parameters the layer uses at this width, `None` when they overflow `u64`.
    pub fn checked_params(&self) -> Option<u64> {
        self.weights()?.checked_add(if self.bias { self.c_out as u64 } else { 0 })
    }
}

/// The width of each stage, resolved from a [`WidthSpec`]. v2's head has none: its output
/// is fixed at `last_channels`, as in the official model.
#[derive(Debug, Clone, PartialEq)]
pub struct StageWidths {
    pub stem: f64,
    pub stages: Vec<f64>,
}

/// What [`UsNet::distinct_widths`] returns: the kept specs in order, and each dropped spec
/// with the kept one it merged into.
pub type DistinctWidths = (Vec<WidthSpec>, Vec<(WidthSpec, WidthSpec)>);

/// A universally slimmable MobileNet (v1 or v2).
///
/// Parameter names are the official PyTorch state-dict names.
#[derive(Debug, Clone)]
pub struct UsNet {
    config: ModelConfig,
    range: WidthRange,
    pub stem: ConvBn,
    pub blocks: Vec<Block>,
    /// v2's last 1x1 conv, BN and ReLU6.
    pub head: Option<ConvBn>,
    pub classifier: UsLinear,
    num_bn: usize,
}

impl UsNet {
    /// Builds the model of `config` with parameters from `init` on `device`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the configuration is not a valid model.
    pub fn init(config: &ModelConfig, init: &Init, device: &Device) -> Result<Self> {
        config.validate()?;
        let rows = config.rows()?;
        let mut num_bn = 0;
        // A conv named `conv`, then its BN named `bn`, numbered in forward order.
        let mut conv_bn = |conv: String, bn: String, cfg: UsConv2dConfig, relu6: bool| {
            let layer = ConvBn {
                conv: cfg.init(&conv, init, device),
                bn: UsBatchNorm::init(&bn, num_bn, cfg.out_channels, init, device),
                relu6,
            };
            num_bn += 1;
            layer
        };
        let stem_out = config.stem_out();
        let stem_cfg = UsConv2dConfig::new(config.input_channels, stem_out, 3, config.stem_stride);
        let stem = conv_bn("features.0.0".into(), "features.0.1".into(), stem_cfg, true);

        let v2 = config.arch == Arch::UsMobilenetV2;
        let mut blocks = Vec::new();
        let mut channels = stem_out;
        for (stage, row) in rows.iter().enumerate() {
            let outp = crate::width::make_divisible(row.c as f64, config.divisor);
            for i in 0..row.n {
                let stride = if i == 0 { row.s } else { 1 };
                let body = format!("features.{}.body", blocks.len() + 1);
                // Sequential slots: conv, BN, ReLU6 per layer, so layer k's conv is 3k.
                let mut slot = 0;
                let mut next = |cfg: UsConv2dConfig, relu6: bool| {
                    let layer = conv_bn(format!("{body}.{slot}"), format!("{body}.{}", slot + 1), cfg, relu6);
                    slot += 3;
                    layer
                };
                let hidden = channels * row.t;
                let expand_cfg = UsConv2dConfig { out_ratio: row.t, ..UsConv2dConfig::new(channels, hidden, 1, 1) };
                let expand = (v2 && row.t != 1).then(|| next(expand_cfg, true));
                let dw = UsConv2dConfig { depthwise: true, out_ratio: row.t, ..UsConv2dConfig::new(hidden, hidden, 3, stride) };
                let depthwise = next(dw, true);
                // v1 ends a block with ReLU6; v2's projection is linear.
                let project = next(UsConv2dConfig::new(hidden, outp, 1, 1), !v2);
                let residual = v2 && stride == 1 && channels == outp;
                blocks.push(Block { stage, expand, depthwise, project, residual });
                channels = outp;
            }
        }
        let head = config.last_channels.map(|last| {
            let name = format!("features.{}", blocks.len() + 1);
            // Only the head's input slims; its output is fixed, as in the official model.
            let cfg = UsConv2dConfig { slim_out: false, ..UsConv2dConfig::new(channels, last, 1, 1) };
            let layer = conv_bn(format!("{name}.0"), format!("{name}.1"), cfg, true);
            channels = last;
            layer
        });
        let classifier = UsLinear::init("classifier.0", channels, config.num_classes, init, device);
        let mut model = UsNet { config: config.clone(), range: config.range()?, stem, blocks, head, classifier, num_bn };
        if let Some(widths) = &config.switchable_bn {
            crate::model::snet::make_switchable(&mut model, widths, init, device)?;
        }
        Ok(model)
    }

    /// Every conv+BN layer in forward (and state-dict) order, with the width it follows: the
    /// one walk of the layers that [`UsNet::forward`]'s residual structure does not need.
    fn conv_bns(&self) -> impl Iterator<Item = (&ConvBn, Follows)> {
        let blocks = self.blocks.iter().flat_map(|b| b.layers().map(move |l| (l, Follows::Stage(b.stage))));
        std::iter::once((&self.stem, Follows::Stem)).chain(blocks).chain(self.head.iter().map(|h| (h, Follows::Fixed)))
    }

    /// Every conv+BN layer in forward (and state-dict) order: the stem, the blocks, the head.
    pub fn conv_bn_layers(&self) -> impl Iterator<Item = &ConvBn> {
        self.conv_bns().map(|(l, _)| l)
    }

    fn conv_bns_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        std::iter::once(&mut self.stem).chain(self.blocks.iter_mut().flat_map(Block::layers_mut)).chain(self.head.iter_mut())
    }

    pub(crate) fn bn_layers_mut(&mut self) -> Vec<&mut UsBatchNorm> {
        self.conv_bns_mut().map(|l| &mut l.bn).collect()
    }

    /// The switchable-BN index of `spec` for an S-Net (0 for a US-Net).
    ///
    /// # Errors
    ///
    /// For an S-Net, a width that is not one of its switch widths.
    pub fn switch_index(&self, spec: &WidthSpec) -> Result<usize> {
        match &self.config.switchable_bn {
            Some(widths) => crate::model::snet::switch_index(widths, spec),
            None => Ok(0),
        }
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The widths the model was trained for.
    pub fn width_range(&self) -> WidthRange {
        self.range
    }

    /// Number of BN layers (the length of a [`crate::layers::BnStatistics`]).
    pub fn num_bn(&self) -> usize {
        self.num_bn
    }

    /// Every BN layer, in the order of [`crate::layers::BnStatistics::layers`].
    pub fn bn_layers(&self) -> Vec<&UsBatchNorm> {
        let layers: Vec<&UsBatchNorm> = self.conv_bn_layers().map(|l| &l.bn).collect();
        debug_assert!(layers.iter().enumerate().all(|(i, bn)| bn.index == i));
        layers
    }

    /// The state-dict prefix of each BN layer, in the order of
    /// [`crate::layers::BnStatistics::layers`].
    pub fn bn_names(&self) -> Vec<String> {
        self.bn_layers().iter().map(|bn| bn.name.clone()).collect()
    }

    /// Fresh running statistics for this model (mean 0, variance 1): a full-width pair per BN
    /// layer, or one per switch width for an S-Net.
    pub fn new_running_stats(&self) -> RunningStats {
        let sizes: Vec<Vec<usize>> = self.bn_layers().iter().map(|bn| bn.affine.iter().map(|(g, _)| g.dims()[0]).collect()).collect();
        RunningStats::new(&sizes, &self.stem.conv.weight.device())
    }

    /// The statistics `spec` normalises with when BN is not calibrated: the running
    /// statistics of its switch (S-Nets) cut to its channels.
    ///
    /// # Errors
    ///
    /// As [`UsNet::stage_widths`] and [`UsNet::switch_index`], and [`Error::InvalidConfig`]
    /// when `running` was made for another model.
    pub fn running_statistics(&self, running: &RunningStats, spec: &WidthSpec) -> Result<crate::layers::BnStatistics> {
        let channels = self.bn_channels(spec)?;
        let switch = self.switch_index(spec)?;
        let fits = running.layers.len() == self.num_bn
            && running.layers.iter().zip(self.bn_layers()).all(|(slots, bn)| {
                slots.len() == bn.affine.len() && slots.iter().zip(&bn.affine).all(|(s, (g, _))| s.mean.dims() == g.dims())
            });
        if !fits {
            return Err(Error::InvalidConfig("the running statistics do not fit this model's BN layers".into()));
        }
        Ok(running.slice(switch, &channels))
    }

    /// Number of block-table stages.
    pub fn num_stages(&self) -> usize {
        self.config.block_setting.len()
    }

    /// Entries of a per-stage [`WidthSpec`]: the stem, then each block-table row (v2's head
    /// has a fixed output and no entry).
    pub fn num_width_groups(&self) -> usize {
        self.num_stages() + 1
    }

    /// The channel count of each BN layer at `spec` (its conv's output), in the order of
    /// [`crate::layers::BnStatistics::layers`].
    ///
    /// # Errors
    ///
    /// As [`UsNet::stage_widths`].
    pub fn bn_channels(&self, spec: &WidthSpec) -> Result<Vec<usize>> {
        // Channel counts do not depend on the spatial size.
        let plan = self.plan(spec, [32, 32])?;
        Ok(plan.iter().filter(|l| l.kernel > 0).map(|l| l.c_out).collect())
    }

    /// Resolves `spec` to a width per stage, checking it against the model's range.
    ///
    /// # Errors
    ///
    /// [`Error::WidthOutOfRange`] for a width outside the range; [`Error::SpecLength`] for a
    /// per-stage spec of the wrong length, [`Error::FixedHead`] for a v2 spec with a head entry.
    pub fn stage_widths(&self, spec: &WidthSpec) -> Result<StageWidths> {
        spec.check(&self.range)?;
        let k = self.num_stages();
        match spec {
            WidthSpec::Uniform(w) => Ok(StageWidths { stem: w.get(), stages: vec![w.get(); k] }),
            WidthSpec::PerStage(ws) => {
                let expected = self.num_width_groups();
                if let (Some(last_channels), true) = (self.config.last_channels, ws.len() == expected + 1) {
                    return Err(Error::FixedHead { expected, got: ws.len(), last_channels });
                }
                if ws.len() != expected {
                    let layout = "the stem, then one per block-table row";
                    return Err(Error::SpecLength { arch: self.config.arch.name(), stages: k, expected, layout, got: ws.len() });
                }
                let ws: Vec<f64> = ws.iter().map(|w| w.get()).collect();
                Ok(StageWidths { stem: ws[0], stages: ws[1..].to_vec() })
            }
        }
    }

    /// `specs` without those that give the same network as an earlier one (the same channel
    /// count in every layer, as widths that round alike do): the kept specs in order, and
    /// each dropped spec with the kept one it merged into.
    ///
    /// # Errors
    ///
    /// As [`UsNet::stage_widths`].
    pub fn distinct_widths(&self, specs: &[WidthSpec]) -> Result<DistinctWidths> {
        // Each kept spec with its (c_in, c_out) per layer.
        let mut seen: Vec<(Vec<(usize, usize)>, WidthSpec)> = Vec::new();
        let mut merged = Vec::new();
        for spec in specs {
            let channels: Vec<(usize, usize)> = self.plan(spec, [32, 32])?.iter().map(|l| (l.c_in, l.c_out)).collect();
            match seen.iter().find(|(c, _)| *c == channels) {
                Some((_, first)) => merged.push((spec.clone(), first.clone())),
                None => seen.push((channels, spec.clone())),
            }
        }
        Ok((seen.into_iter().map(|(_, spec)| spec).collect(), merged))
    }

    /// Every conv and linear layer that runs at `spec` on `[h, w]` inputs, in order, with
    /// its channel counts and output size.
    ///
    /// # Errors
    ///
    /// As [`UsNet::stage_widths`].
    pub fn plan(&self, spec: &WidthSpec, input_hw: [usize; 2]) -> Result<Vec<LayerPlan>> {
        let widths = self.stage_widths(spec)?;
        if input_hw.iter().any(|&s| s == 0 || s > crate::model::config::MAX_DIM) {
            return Err(Error::Shape {
                what: "input size",
                expected: format!("[h, w] in 1..={}", crate::model::config::MAX_DIM),
                got: input_hw.to_vec(),
            });
        }
        let d = self.config.divisor;
        let mut plans = Vec::new();
        let mut hw = input_hw;
        let mut c = self.config.input_channels;
        for (layer, follows) in self.conv_bns() {
            let conv = &layer.conv;
            let c_out = match follows {
                Follows::Stem => conv.out_channels(c, widths.stem, d),
                Follows::Stage(s) => conv.out_channels(c, widths.stages[s], d),
                // The head's output is fixed; its input follows the last stage.
                Follows::Fixed => conv.config.out_channels,
            };
            hw = [conv.out_size(hw[0]), conv.out_size(hw[1])];
            let groups = if conv.config.depthwise { c } else { 1 };
            plans.push(LayerPlan { name: conv.name.clone(), c_in: c, c_out, kernel: conv.config.kernel_size, groups, out_hw: hw, bias: false });
            c = c_out;
        }
        let out = self.config.num_classes;
        plans.push(LayerPlan { name: self.classifier.name.clone(), c_in: c, c_out: out, kernel: 0, groups: 1, out_hw: [1, 1], bias: true });
        Ok(plans)
    }

    /// Checks that `x` is `[batch, input_channels, h, w]` with every dimension at least 1.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        let [n, c, h, w] = dims;
        if n == 0 || h == 0 || w == 0 || c != self.config.input_channels {
            return Err(Error::Shape {
                what: "model input",
                expected: format!("[batch >= 1, {}, height >= 1, width >= 1]", self.config.input_channels),
                got: dims.to_vec(),
            });
        }
        Ok(())
    }

    /// Logits of `x` at width `spec`, with batch norm in `mode`.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, input_channels, h, w]`
    /// - output: `[batch, num_classes]`
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for a wrong input shape, and the errors of [`UsNet::stage_widths`].
    /// In eval mode, the statistics must have one entry per BN layer, computed for `spec`.
    pub fn forward(&self, x: Tensor<4>, spec: &WidthSpec, mode: &mut BnMode) -> Result<Tensor<2>> {
        let dims = x.dims();
        self.check_input(dims)?;
        let layers = match mode {
            BnMode::Eval(stats) => Some(stats.layers.len()),
            BnMode::TrainTrack(running) => Some(running.layers.len()),
            _ => None,
        };
        if let Some(n) = layers.filter(|&n| n != self.num_bn) {
            return Err(Error::InvalidConfig(format!("BN statistics have {n} layers, the model has {}", self.num_bn)));
        }
        let plan = self.plan(spec, [dims[2], dims[3]])?;
        let sw = self.switch_index(spec)?;
        let mut outs = plan.iter().map(|p| p.c_out);
        let mut next = move || outs.next().expect("the plan lists every layer");

        let mut x = self.stem.forward(x, next(), mode, sw);
        for block in &self.blocks {
            let input = x.clone();
            x = block.forward(x, &mut next, mode, sw);
            if block.residual {
                x = add_first_channels(x, input);
            }
        }
        if let Some(head) = &self.head {
            x = head.forward(x, next(), mode, sw);
        }
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dims(&[2, 3]).reshape([n, c]);
        Ok(self.classifier.forward(pooled))
    }

    /// Replaces every parameter by `f(name, kind, value)`, in state-dict order.
    pub fn map_params(&mut self, f: &mut ParamFn) {
        for layer in self.conv_bns_mut() {
            layer.map_params(f);
        }
        self.classifier.map_params(f);
    }

    /// Replaces every parameter by `f(name, value)`, in state-dict order, until `f` fails:
    /// the first error is returned, and the parameters from it on keep their values.
    pub fn try_map_params(&mut self, f: &mut dyn FnMut(&str, &AnyTensor) -> Result<AnyTensor>) -> Result<()> {
        let mut failure = None;
        self.map_params(&mut |name, _, t| match failure.is_none().then(|| f(name, &t)) {
            Some(Ok(new)) => new,
            Some(Err(e)) => {
                failure = Some(e);
                t
            }
            None => t,
        });
        failure.map_or(Ok(()), Err)
    }

    /// Every parameter with its name and kind, in state-dict order.
    pub fn params(&self) -> Vec<(String, crate::init::ParamKind, AnyTensor)> {
        let mut out = Vec::new();
        self.clone().map_params(&mut |name, kind, t| {
            out.push((name.to_string(), kind, t.clone()));
            t
        });
        out
    }

    /// The same model with every parameter a training leaf (autodiff, gradients retained).
    pub fn into_trainable(mut self) -> Self {
        self.map_params(&mut |_, _, t| t.into_leaf());
        self
    }

    /// The same model without autodiff, for calibration and inference.
    pub fn into_inference(mut self) -> Self {
        self.map_params(&mut |_, _, t| t.into_inner());
        self
    }

    /// The uniform width spec of the range's minimum and maximum.
    pub fn min_max(&self) -> (WidthSpec, WidthSpec) {
        (WidthSpec::Uniform(self.range.min()), WidthSpec::Uniform(self.range.max()))
    }

    /// A uniform width checked against the model's range.
    pub fn width(&self, w: f64) -> Result<WidthSpec> {
        Ok(WidthSpec::Uniform(self.range.check(Width::new(w)?)?))
    }
}

/// `y + x`, where a per-stage spec can give `x` and `y` different channel counts: the
/// shortcut adds to the first channels they share, as if the narrower one were zero-padded.
pub fn add_first_channels(y: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    let (cy, cx) = (y.dims()[1], x.dims()[1]);
    if cy == cx {
        y + x
    } else if cx < cy {
        let head = y.clone().narrow(1, 0, cx) + x;
        Tensor::cat(vec![head, y.narrow(1, cx, cy - cx)], 1)
    } else {
        y + x.narrow(1, 0, cy)
    }
}

//! The inference engine: one width of a US-Net compiled into a plan that runs on the CPU
//! without burn.
//!
//! [`InferencePlan::new`] takes a [`FixedNet`] and, once, folds every batch norm into its
//! conv, packs the weights for the micro-kernels of this CPU's instruction set
//! ([`simd::Isa`]), and assigns each activation to one of a few reusable buffers. A call of
//! [`InferencePlan::forward`] then runs, in NHWC layout:
//!
//! - a 1x1 conv as one packed gemm over all pixels, with bias, ReLU6 and the residual add of
//!   an inverted-residual block fused into the pass that stores the result;
//! - a depthwise conv as direct loops vectorised over channels, bias and ReLU6 fused, with
//!   the 1x1 conv after it on each band of rows as soon as the band is written;
//! - an inverted residual (1x1 expand, depthwise, 1x1 projection), and the stem with the
//!   first block after it, by bands of rows, a chunk at a time in a buffer that stays in
//!   cache, so that the large map between the first conv and the depthwise one is never
//!   written whole (`InferencePlan::block`);
//! - any other conv (the stem) as im2col and the same gemm;
//! - global average pooling and the classifier (a gemm with bias).
//!
//! Activation buffers live in workspaces that the plan keeps between calls. A batch with at
//! least two images per thread runs images in parallel (each thread its own workspace, cache
//! sized); a smaller batch spreads each layer over the threads, which run the plan as one
//! team (`team.rs`). The thread count is rayon's (`RAYON_NUM_THREADS`).
//!
//! [`crate::CalibratedModel::forward`] runs through a plan per width on the Flex backend.

mod gemm;
pub mod simd;
mod team;
mod threads;

pub use threads::init_global_pool;

use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fixed::{FixedConv, FixedNet};
use crate::width::WidthSpec;
use gemm::{PackedB, Residual};
use simd::{DwCall, Isa};
use team::{Buf, Par, Team};

/// Whether [`crate::CalibratedModel::forward`] uses an inference plan on Flex: yes, unless
/// the environment sets `USNET_ENGINE=0` (burn's eval-mode forward, for comparison).
pub fn enabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*OFF.get_or_init(|| std::env::var("USNET_ENGINE").is_ok_and(|v| v == "0"))
}

/// How a layer computes.
enum Op {
    /// 1x1, stride 1: a gemm straight on the NHWC input.
    Pointwise(PackedB),
    /// Any other dense conv: im2col (`(ky, kx, c_in)` per row), then a gemm.
    Dense(PackedB),
    /// One filter per channel, weights `[k * k][c]`.
    Depthwise(Vec<f32>),
}

/// One conv with its batch norm folded in.
struct Layer {
    op: Op,
    c_out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    bias: Vec<f32>,
    relu6: bool,
    /// Index of the layer whose output is added after this one's activation.
    shortcut: Option<usize>,
}

impl Layer {
    fn new(isa: Isa, conv: &FixedConv) -> Self {
        let (w, bias) = conv.folded();
        let (k, c_in, c_out) = (conv.kernel, conv.c_in, conv.c_out);
        let op = if conv.depthwise {
            let kk = k * k;
            let mut wt = vec![0.0; kk * c_out];
            for ch in 0..c_out {
                for t in 0..kk {
                    wt[t * c_out + ch] = w[ch * kk + t];
                }
            }
            Op::Depthwise(wt)
        } else if k == 1 && conv.stride == 1 {
            Op::Pointwise(PackedB::new(isa, c_in, c_out, |ci, co| w[co * c_in + ci]))
        } else {
            Op::Dense(PackedB::new(isa, k * k * c_in, c_out, |row, co| {
                let (tap, ci) = (row / c_in, row % c_in);
                w[(co * c_in + ci) * k * k + tap]
            }))
        };
        Layer { op, c_out, kernel: k, stride: conv.stride, pad: conv.padding(), bias, relu6: conv.relu6, shortcut: conv.shortcut }
    }

    fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.kernel) / self.stride + 1
    }
}

/// The activation buffers of one run, kept by the plan between calls.
#[derive(Default)]
struct Workspace {
    slots: Vec<Vec<f32>>,
    col: Vec<f32>,
    /// Per thread, the rows of an inverted residual's band (`InferencePlan::block`).
    band: Vec<f32>,
    pooled: Vec<f32>,
}

/// One width of a US-Net, ready to run: folded, packed weights and a buffer plan.
pub struct InferencePlan {
    spec: WidthSpec,
    isa: Isa,
    input_channels: usize,
    layers: Vec<Layer>,
    classifier: PackedB,
    classifier_bias: Vec<f32>,
    /// The layers' calls, in order.
    steps: Vec<Step>,
    /// The buffer that holds value `v`: the input (`v = 0`) or the output of layer `v - 1`.
    slot_of: Vec<usize>,
    slots: usize,
    /// Values that one chunk of an inverted residual's band keeps in cache: its expanded
    /// rows (and their im2col, after a stem) and their depthwise output ([`BLOCK_CHUNK`];
    /// the tests lower it to run many chunks on small images).
    band_values: usize,
    workspaces: Mutex<Vec<Workspace>>,
}

impl std::fmt::Debug for InferencePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePlan").field("spec", &self.spec.to_string()).field("isa", &self.isa).field("layers", &self.layers.len()).field("buffers", &self.slots).finish()
    }
}

impl InferencePlan {
    /// The plan of `net` on this CPU's best instruction set ([`Isa::detect`]).
    ///
    /// # Errors
    ///
    /// A network this engine cannot run: a shortcut that does not come from an earlier
    /// layer, or a depthwise layer whose input and output channels differ.
    pub fn new(net: &FixedNet) -> Result<Self> {
        Self::with_isa(net, Isa::detect())
    }

    /// The plan of `net` on `isa`, which must be one of [`Isa::available`].
    ///
    /// # Errors
    ///
    /// As [`InferencePlan::new`], and an instruction set this CPU lacks.
    pub fn with_isa(net: &FixedNet, isa: Isa) -> Result<Self> {
        if !Isa::available().contains(&isa) {
            return Err(Error::InvalidConfig(format!("this CPU cannot run the {isa:?} kernels")));
        }
        let mut c = net.input_channels;
        for (i, conv) in net.convs.iter().enumerate() {
            let bad = conv.c_in != c || (conv.depthwise && conv.c_out != conv.c_in) || conv.shortcut.is_some_and(|s| s >= i) || conv.kernel == 0 || conv.stride == 0;
            if bad {
                return Err(Error::InvalidConfig(format!("inference plan of width {}: layer {} ({}) is not a chain conv this engine runs", net.spec, i, conv.name)));
            }
            c = conv.c_out;
        }
        if net.classifier.c_in != c {
            return Err(Error::InvalidConfig(format!("inference plan of width {}: the classifier takes {} channels, the features have {c}", net.spec, net.classifier.c_in)));
        }
        let layers: Vec<Layer> = net.convs.iter().map(|conv| Layer::new(isa, conv)).collect();
        let lin = &net.classifier;
        let classifier = PackedB::new(isa, lin.c_in, lin.c_out, |ci, co| lin.weight[co * lin.c_in + ci]);
        let steps = steps(&layers);
        let (slot_of, slots) = assign_buffers(&layers, &steps);
        Ok(InferencePlan {
            spec: net.spec.clone(),
            isa,
            input_channels: net.input_channels,
            layers,
            classifier,
            classifier_bias: lin.bias.clone(),
            steps,
            slot_of,
            slots,
            band_values: BLOCK_CHUNK,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// The width this plan runs.
    pub fn spec(&self) -> &WidthSpec {
        &self.spec
    }

    /// Logits per class.
    pub fn num_classes(&self) -> usize {
        self.classifier.n
    }

    /// Logits `[n, classes]` (row-major) of `input` (`[n, c, h, w]`, row-major, NCHW).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when `input` does not have `shape`'s length or the model's channels,
    /// or an image too small for a kernel.
    pub fn forward(&self, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        let [n, c, h, w] = shape;
        let shape_error = || Error::Shape {
            what: "inference input",
            expected: format!("[batch >= 1, {}, h >= 1, w >= 1] with as many values", self.input_channels),
            got: shape.to_vec(),
        };
        let len = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(shape_error)?;
        if c != self.input_channels || input.len() != len || n == 0 || h == 0 || w == 0 {
            return Err(shape_error());
        }
        let (mut hh, mut ww) = (h, w);
        for layer in &self.layers {
            if hh + 2 * layer.pad < layer.kernel || ww + 2 * layer.pad < layer.kernel {
                return Err(Error::Shape { what: "inference input (too small for a kernel)", expected: format!("an image of at least {}x{} pixels", layer.kernel, layer.kernel), got: shape.to_vec() });
            }
            (hh, ww) = (layer.out_size(hh), layer.out_size(ww));
        }
        let classes = self.num_classes();
        let mut logits = vec![0.0f32; n * classes];
        let threads = rayon::current_num_threads();
        let image = c * h * w;
        // Images per task when images run in parallel: enough pixels to fill the kernels.
        let per_task = (4096 / (h * w)).max(1);
        if threads > 1 && n >= 2 * threads && n.div_ceil(per_task) >= threads {
            input.par_chunks(per_task * image).zip(logits.par_chunks_mut(per_task * classes)).for_each(|(x, out)| {
                let mut ws = self.take_workspace();
                self.run(&mut ws, x, x.len() / image, h, w, false, out);
                self.return_workspace(ws);
            });
        } else {
            let mut ws = self.take_workspace();
            self.run(&mut ws, input, n, h, w, threads > 1, &mut logits);
            self.return_workspace(ws);
        }
        Ok(logits)
    }

    fn take_workspace(&self) -> Workspace {
        self.workspaces.lock().map(|mut v| v.pop()).ok().flatten().unwrap_or_default()
    }

    fn return_workspace(&self, ws: Workspace) {
        if let Ok(mut v) = self.workspaces.lock() {
            v.push(ws);
        }
    }

    /// The logits of `n` images of `input` into `out`, with `ws`'s buffers; with `team`, all
    /// the pool's threads share each layer ([`Team::run`]).
    #[allow(clippy::too_many_arguments)]
    fn run(&self, ws: &mut Workspace, input: &[f32], n: usize, h: usize, w: usize, team: bool, out: &mut [f32]) {
        // Sizes (per batch) of every value and of the im2col buffer, then grow the buffers.
        let mut dims = Vec::with_capacity(self.layers.len() + 1);
        dims.push([h, w, self.input_channels]);
        let mut col_len = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            let [hh, ww, _] = dims[dims.len() - 1];
            let (oh, ow) = (layer.out_size(hh), layer.out_size(ww));
            col_len = col_len.max(n * oh * ow * self.im2col_depth(i));
            dims.push([oh, ow, layer.c_out]);
        }
        ws.slots.resize_with(self.slots, Vec::new);
        // Which inverted residuals run by bands: their first two outputs live in the band
        // buffer of each thread.
        let members = if team { rayon::current_num_threads() } else { 1 };
        let banded: Vec<bool> = self.steps.iter().map(|s| s.len == 3 && self.banded(s.first, n, &dims, members)).collect();
        let mut band_len = 0;
        let mut in_band = vec![false; dims.len()];
        for (s, _) in self.steps.iter().zip(&banded).filter(|(_, b)| **b) {
            band_len = band_len.max(self.chunk(s.first, &dims).2);
            in_band[s.first + 1] = true;
            in_band[s.first + 2] = true;
        }
        if ws.band.len() < members * band_len {
            ws.band.resize(members * band_len, 0.0);
        }
        let pad = self.input_pad();
        for (v, d) in dims.iter().enumerate() {
            let need = match v {
                0 => n * (d[0] + 2 * pad) * (d[1] + 2 * pad) * d[2],
                _ if in_band[v] => 0,
                _ => n * d[0] * d[1] * d[2],
            };
            let slot = &mut ws.slots[self.slot_of[v]];
            if slot.len() < need {
                slot.resize(need, 0.0);
            }
        }
        if ws.col.len() < col_len {
            ws.col.resize(col_len, 0.0);
        }
        ws.pooled.resize(n * dims[self.layers.len()][2], 0.0);
        let bufs = Buffers {
            slots: ws.slots.iter_mut().map(|s| Buf::new(s)).collect(),
            col: Buf::new(&mut ws.col),
            band: Buf::new(&mut ws.band),
            band_len,
            banded,
            pooled: Buf::new(&mut ws.pooled),
            out: Buf::new(out),
        };
        if team {
            // Per layer at most two parallel calls (im2col and gemm), then the input, the
            // pooling and the classifier.
            Team::run(2 * self.layers.len() + 3, |par| self.pass(par, input, n, &dims, &bufs));
        } else {
            self.pass(Par::Serial, input, n, &dims, &bufs);
        }
    }

    /// The layers of [`InferencePlan::run`], on `bufs` sized for `dims`; every member of a
    /// team runs all of it.
    fn pass(&self, par: Par<'_>, input: &[f32], n: usize, dims: &[[usize; 3]], bufs: &Buffers) {
        let isa = self.isa;
        let slot = |v: usize| bufs.slots[self.slot_of[v]];
        // SAFETY (every `get` and `get_mut` below): the buffers were sized for `dims` by
        // `run`; a value is written by one layer, whose tasks write disjoint parts, and read
        // by tasks of later calls, which begin once all its tasks are done, or by the task that
        // wrote those rows (a band of im2col, or of a depthwise output for the 1x1 after it);
        // a buffer is reused only by a layer after the last reader of its value
        // (`assign_buffers`, which counts a step's input as read by all the step's layers).
        let [h, w, c] = dims[0];
        let plane = h * w;
        // NCHW to NHWC, a row of pixels per task, within a zero border of `pad` pixels when
        // the first layer reads its taps from there.
        let pad = self.input_pad();
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        par.for_each(n * h, |r| {
            let (b, y) = (r / h, r % h);
            let img = &input[b * c * plane..(b + 1) * c * plane];
            if pad > 0 {
                // This row's border pixels, and the border rows above or below the image.
                let row = |py: usize| unsafe { slot(0).get_mut((b * hp + py) * wp * c, wp * c) };
                let padded = row(y + pad);
                padded[..pad * c].fill(0.0);
                padded[(pad + w) * c..].fill(0.0);
                let above = if y == 0 { 0..pad } else { 0..0 };
                let below = if y == h - 1 { h + pad..hp } else { 0..0 };
                above.chain(below).for_each(|py| row(py).fill(0.0));
            }
            let dst = unsafe { slot(0).get_mut(((b * hp + y + pad) * wp + pad) * c, w * c) };
            if c == 3 {
                // An RGB image: its three rows zipped, no index arithmetic per value.
                let [red, green, blue] = [0, 1, 2].map(|ch| &img[ch * plane + y * w..][..w]);
                for (((px, &r), &g), &bl) in dst.as_chunks_mut::<3>().0.iter_mut().zip(red).zip(green).zip(blue) {
                    *px = [r, g, bl];
                }
                return;
            }
            for (x, px) in dst.chunks_exact_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = img[ch * plane + y * w + x];
                }
            }
        });

        let input_of = |i: usize| {
            let [hh, ww, ci] = dims[i];
            let pad = if i == 0 { pad } else { 0 };
            unsafe { slot(i).get(0, n * (hh + 2 * pad) * (ww + 2 * pad) * ci) }
        };
        // The residual that layer `j` adds, if any.
        let residual = |j: usize| {
            let [oh, ow, co] = dims[j + 1];
            self.layers[j].shortcut.map(|s| {
                let [_, _, cs] = dims[s + 1];
                assert_eq!(dims[s + 1][..2], dims[j + 1][..2], "a shortcut joins maps of one size");
                Residual { values: unsafe { slot(s + 1).get(0, n * oh * ow * cs) }, ld: cs, cols: cs.min(co) }
            })
        };
        // Output rows `m0..m0 + m` of gemm layer `j`, on this thread, from `a`: those rows of
        // its input (or of its im2col).
        let gemm_rows = |j: usize, b: &PackedB, a: &[f32], m0: usize, m: usize| {
            let co = dims[j + 1][2];
            let res = residual(j).map(|r| Residual { values: &r.values[m0 * r.ld..], ..r });
            let out = Buf::new(unsafe { slot(j + 1).get_mut(m0 * co, m * co) });
            gemm::gemm(isa, a, b.k, m, b, &self.layers[j].bias, self.layers[j].relu6, res, out, co, Par::Serial);
        };
        // Layer `i`; a depthwise layer with the 1x1 conv after it when `pair`.
        let layer_call = |i: usize, pair: bool| {
            let layer = &self.layers[i];
            let [hh, ww, ci] = dims[i];
            let [oh, ow, co] = dims[i + 1];
            let y = slot(i + 1);
            let x = input_of(i);
            match &layer.op {
                Op::Pointwise(b) => gemm::gemm(isa, x, ci, n * oh * ow, b, &layer.bias, layer.relu6, residual(i), y, co, par),
                Op::Dense(_) if i == 0 => {
                    // The first layer reads its taps from the padded input, by bands of rows.
                    let band = (n * oh).div_ceil(4 * par.threads());
                    par.for_each((n * oh).div_ceil(band), |t| {
                        for r in t * band..((t + 1) * band).min(n * oh) {
                            let out = Buf::new(unsafe { y.get_mut(r * ow * co, ow * co) });
                            self.first_conv_row(x, [hh, ww, ci], r, out);
                        }
                    });
                }
                Op::Dense(b) => {
                    // im2col and gemm by bands of output rows, each band on one thread: its
                    // rows of `col` are still in that thread's cache when the gemm reads them,
                    // and no thread waits for the whole im2col.
                    let band = (n * oh).div_ceil(4 * par.threads()).min((CACHED_BAND / (ow * b.k)).max(1));
                    par.for_each((n * oh).div_ceil(band), |t| {
                        let (r0, r1) = (t * band, ((t + 1) * band).min(n * oh));
                        for r in r0..r1 {
                            im2col_row(x, [n, hh, ww, ci], layer, [oh, ow], r, unsafe { bufs.col.get_mut(r * ow * b.k, ow * b.k) });
                        }
                        let (m0, m) = (r0 * ow, (r1 - r0) * ow);
                        gemm_rows(i, b, unsafe { bufs.col.get(m0 * b.k, m * b.k) }, m0, m);
                    });
                }
                Op::Depthwise(wt) => {
                    // A 1x1 conv after it (an inverted residual's projection) runs in the same
                    // tasks, on the rows each task wrote: they are still in its cache, and no
                    // thread waits between the two layers.
                    let next = match self.layers.get(i + 1).map(|l| &l.op) {
                        Some(Op::Pointwise(b)) if pair => Some(b),
                        _ => None,
                    };
                    depthwise(isa, x, [n, hh, ww, ci], wt, layer, [oh, ow], y, residual(i), par, pair, |r0, r1| {
                        if let Some(b) = next {
                            let (m0, m) = (r0 * ow, (r1 - r0) * ow);
                            gemm_rows(i + 1, b, unsafe { y.get(m0 * co, m * co) }, m0, m);
                        }
                    });
                }
            }
        };
        for (&Step { first: i, len }, &banded) in self.steps.iter().zip(&bufs.banded) {
            match len {
                3 if banded => self.block(par, i, input_of(i), n, dims, bufs, &gemm_rows),
                3 => {
                    layer_call(i, false);
                    layer_call(i + 1, true);
                }
                _ => layer_call(i, len == 2),
            }
        }

        // Global average pooling, then the classifier.
        let [hf, wf, cf] = dims[self.layers.len()];
        let feats = unsafe { slot(self.layers.len()).get(0, n * hf * wf * cf) };
        let inv = 1.0 / (hf * wf) as f32;
        par.for_each(n, |b| {
            let pooled = unsafe { bufs.pooled.get_mut(b * cf, cf) };
            pooled.fill(0.0);
            for px in feats[b * hf * wf * cf..(b + 1) * hf * wf * cf].chunks_exact(cf) {
                for (s, v) in pooled.iter_mut().zip(px) {
                    *s += v;
                }
            }
            pooled.iter_mut().for_each(|s| *s *= inv);
        });
        let pooled = unsafe { bufs.pooled.get(0, n * cf) };
        gemm::gemm(isa, pooled, cf, n, &self.classifier, &self.classifier_bias, false, None, bufs.out, self.num_classes(), par);
    }
}

impl InferencePlan {
    /// For the inverted residual whose expand is layer `i`, on maps of `dims`: the depthwise
    /// output rows of one chunk, the expanded rows it reads, and the values a thread's band
    /// buffer holds for it (both). As many rows as keep a chunk within `band_values`, and at
    /// most the map's.
    fn chunk(&self, i: usize, dims: &[[usize; 3]]) -> (usize, usize, usize) {
        let dw = &self.layers[i + 1];
        let ([_, w, c], [oh, ow, _]) = (dims[i + 1], dims[i + 2]);
        let (k, s) = (dw.kernel, dw.stride);
        // Values per input row (expanded, and its im2col) and per output row.
        let (per_in, per_out) = (w * (c + self.im2col_depth(i)), ow * c);
        // `rows` output rows read `(rows - 1) * s + k` input rows.
        let rows = (self.band_values.saturating_sub(k.saturating_sub(s) * per_in) / (s * per_in + per_out)).clamp(1, oh);
        let rows_in = (rows - 1) * s + k;
        (rows, rows_in, rows_in * per_in + rows * per_out)
    }

    /// Values per pixel of the im2col of layer `i`: 0 for a 1x1 conv, which reads its input
    /// as it is, and for the first layer, which reads its taps from the padded input
    /// ([`InferencePlan::first_conv_row`]).
    fn im2col_depth(&self, i: usize) -> usize {
        match &self.layers[i].op {
            Op::Dense(b) if i > 0 => b.k,
            _ => 0,
        }
    }

    /// The zero border around the NHWC input: the first layer's padding when it is a dense
    /// conv (a stem), which then reads its taps from there; else none.
    fn input_pad(&self) -> usize {
        match self.layers.first() {
            Some(Layer { op: Op::Dense(_), pad, .. }) => *pad,
            _ => 0,
        }
    }

    /// Output row `r` (counted over the images) of the first layer, a dense conv, into `out`:
    /// one gemm whose rows read the taps from the input `x` of `[h, w, c]` images inside a
    /// border of [`InferencePlan::input_pad`], without an im2col.
    fn first_conv_row(&self, x: &[f32], [h, w, c]: [usize; 3], r: usize, out: Buf) {
        let layer = &self.layers[0];
        let Op::Dense(b) = &layer.op else { unreachable!("only a dense first layer reads taps") };
        let (k, s, pad) = (layer.kernel, layer.stride, layer.pad);
        let (oh, ow) = (layer.out_size(h), layer.out_size(w));
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let (img, oy) = (r / oh, r % oh);
        // Output (oy, ox) reads padded rows `oy * s..oy * s + k`, pixels from `ox * s` on.
        let taps = gemm::Taps { values: &x[(img * hp + oy * s) * wp * c..], ld: s * c, run: k * c, run_stride: wp * c };
        gemm::gemm_taps(self.isa, taps, ow, b, &layer.bias, layer.relu6, None, out, layer.c_out, Par::Serial);
    }

    /// Whether the inverted residual whose expand is layer `i` runs by bands
    /// ([`InferencePlan::block`]) for `n` images of `dims` on `threads` threads: always on
    /// one thread; on more when each thread's band has at least twice as many output rows as
    /// the expanded rows it shares with the next band. On small maps (7x7 on two threads)
    /// those shared rows cost more than the band saves, and the three convs run one after
    /// the other.
    fn banded(&self, i: usize, n: usize, dims: &[[usize; 3]], threads: usize) -> bool {
        let dw = &self.layers[i + 1];
        threads == 1 || (n * dims[i + 2][0]) / threads >= 2 * dw.kernel.saturating_sub(dw.stride).max(1)
    }

    /// The inverted residual whose expand is layer `i`, its three convs as one call, by
    /// bands of the depthwise output's rows: a task expands the input rows under its band,
    /// runs the depthwise on them and projects the result, a chunk of rows at a time, in its
    /// thread's band buffer. The expanded map (the largest of the network) and the depthwise
    /// output are never written whole, and no thread waits between the three.
    ///
    /// The first conv may also be a dense one, the stem before the first block: its rows
    /// then come from their im2col, also in the band buffer.
    ///
    /// A chunk keeps the expanded rows that the next one reads again (`k - s` of them), so
    /// only the first chunk of a band expands rows that another band expands too.
    #[allow(clippy::too_many_arguments)]
    fn block(&self, par: Par<'_>, i: usize, x: &[f32], n: usize, dims: &[[usize; 3]], bufs: &Buffers, project: &impl Fn(usize, &PackedB, &[f32], usize, usize)) {
        let [e, d, p] = [&self.layers[i], &self.layers[i + 1], &self.layers[i + 2]];
        let (Op::Pointwise(eb) | Op::Dense(eb), Op::Depthwise(wt), Op::Pointwise(pb)) = (&e.op, &d.op, &p.op) else {
            unreachable!("`steps` checked the ops")
        };
        let ([h0, w0, ci], [h, w, c], [oh, ow, _]) = (dims[i], dims[i + 1], dims[i + 2]);
        let (k, s, pad) = (d.kernel, d.stride, d.pad);
        let (rows, rows_in, len) = self.chunk(i, dims);
        let depth = self.im2col_depth(i);
        assert!(len <= bufs.band_len && x.len() >= n * h0 * w0 * ci && wt.len() >= k * k * c && d.bias.len() >= c, "inverted residual: buffer too small");
        // One band per thread: the rows that two bands both expand are fewest.
        let band = (n * oh).div_ceil(par.threads());
        par.for_each((n * oh).div_ceil(band), |t| {
            // SAFETY: each member runs one task at a time, on its own part of `band`.
            let scratch = unsafe { bufs.band.get_mut(par.member() * bufs.band_len, len) };
            let (ebuf, rest) = scratch.split_at_mut(rows_in * w * c);
            let (dbuf, col) = rest.split_at_mut(rows * ow * c);
            debug_assert_eq!(col.len(), rows_in * w * depth);
            let (r0, r1) = (t * band, ((t + 1) * band).min(n * oh));
            // The expanded rows `lo..hi` of image `b` that `ebuf` holds.
            let mut held: Option<(usize, usize, usize)> = None;
            let mut r = r0;
            while r < r1 {
                let (b, cy0) = (r / oh, r % oh);
                let cy1 = (cy0 + rows).min(oh).min(cy0 + r1 - r);
                let (lo, hi) = ((cy0 * s).saturating_sub(pad), ((cy1 - 1) * s + k - pad).min(h));
                let from = match held {
                    Some((hb, hlo, hhi)) if hb == b && hlo <= lo && lo < hhi => {
                        ebuf.copy_within((lo - hlo) * w * c..(hhi - hlo) * w * c, 0);
                        hhi
                    }
                    _ => lo,
                };
                if from < hi && i == 0 && matches!(e.op, Op::Dense(_)) {
                    // The stem's rows, their taps read from the padded input.
                    for row in from..hi {
                        let dst = Buf::new(&mut ebuf[(row - lo) * w * c..(row - lo + 1) * w * c]);
                        self.first_conv_row(x, [h0, w0, ci], b * h + row, dst);
                    }
                } else if from < hi {
                    // The first conv's rows `from..hi`: a 1x1 conv reads them from its input,
                    // another conv from their im2col.
                    let a = if depth == 0 {
                        &x[(b * h + from) * w * ci..(b * h + hi) * w * ci]
                    } else {
                        for (row, dst) in (from..hi).zip(col.chunks_exact_mut(w * depth)) {
                            im2col_row(x, [n, h0, w0, ci], e, [h, w], b * h + row, dst);
                        }
                        &col[..(hi - from) * w * depth]
                    };
                    let dst = Buf::new(&mut ebuf[(from - lo) * w * c..(hi - lo) * w * c]);
                    gemm::gemm(self.isa, a, eb.k, (hi - from) * w, eb, &e.bias, e.relu6, None, dst, c, Par::Serial);
                }
                held = Some((b, lo, hi));
                let call = DwCall {
                    x: ebuf.as_ptr(),
                    x_row0: lo,
                    h,
                    w,
                    c,
                    wt: wt.as_ptr(),
                    bias: d.bias.as_ptr(),
                    k,
                    stride: s,
                    pad,
                    relu6: d.relu6,
                    y: dbuf.as_mut_ptr(),
                    y_row0: cy0,
                    ow,
                };
                // SAFETY: `ebuf` holds the input rows `lo..hi` that output rows `cy0..cy1`
                // read, `dbuf` has room for `rows >= cy1 - cy0` output rows, and the assert
                // above covers the weights.
                unsafe { simd::depthwise(self.isa, &call, cy0, cy1) };
                let m = (cy1 - cy0) * ow;
                project(i + 2, pb, &dbuf[..m * c], (b * oh + cy0) * ow, m);
                r += cy1 - cy0;
            }
        });
    }
}

/// The buffers of one run, as the members of a team share them.
struct Buffers {
    slots: Vec<Buf>,
    col: Buf,
    /// `band_len` values per member of the team.
    band: Buf,
    band_len: usize,
    /// Per step, whether it runs by bands ([`InferencePlan::block`]).
    banded: Vec<bool>,
    pooled: Buf,
    out: Buf,
}

/// Values in a band of rows that one task writes and then reads again (the stem's im2col,
/// a depthwise output before the 1x1 after it): 256 KiB, a quarter of this machine's L2 per
/// core, so that the band is still in cache when it is read.
const CACHED_BAND: usize = 1 << 16;

/// Values in a chunk of an inverted residual's band (expanded rows and their depthwise
/// output): 512 KiB, half of this machine's L2 per core. A quarter was 2-4% slower at
/// batch 1 on one thread, twice this no faster (docs/performance.md, round 7).
const BLOCK_CHUNK: usize = 1 << 17;

/// `len` layers from `first` that run as one call of [`InferencePlan::pass`]:
///
/// - 3: an inverted residual ([`InferencePlan::block`]): a 1x1 conv (or a stem: any dense
///   conv), a depthwise conv and a 1x1 conv, the first two without a residual and their
///   outputs read by no shortcut;
/// - 2: a depthwise conv and the 1x1 conv after it, by bands of rows;
/// - 1: any other layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    first: usize,
    len: usize,
}

/// The calls that run `layers`, taking the longest step at each layer.
fn steps(layers: &[Layer]) -> Vec<Step> {
    let read_by_shortcut = |v: usize| layers.iter().any(|l| l.shortcut == Some(v));
    let mut steps = Vec::new();
    let mut first = 0;
    while first < layers.len() {
        let ops: Vec<&Op> = layers[first..].iter().take(3).map(|l| &l.op).collect();
        let len = match ops[..] {
            [Op::Pointwise(_) | Op::Dense(_), Op::Depthwise(_), Op::Pointwise(_)]
                if layers[first].shortcut.is_none() && layers[first + 1].shortcut.is_none() && !read_by_shortcut(first) && !read_by_shortcut(first + 1) =>
            {
                3
            }
            [Op::Depthwise(_), Op::Pointwise(_), ..] => 2,
            _ => 1,
        };
        steps.push(Step { first, len });
        first += len;
    }
    steps
}

/// Gives every value (the input, then each layer's output) a buffer, reusing a buffer once
/// its value has no reader left: `(buffer of each value, buffer count)`.
fn assign_buffers(layers: &[Layer], steps: &[Step]) -> (Vec<usize>, usize) {
    let values = layers.len() + 1;
    // The last layer that reads each value (the pooling reads the last as "layer L").
    let mut last_use: Vec<usize> = (0..values).collect();
    for (i, layer) in layers.iter().enumerate() {
        if let Some(s) = layer.shortcut {
            last_use[s + 1] = last_use[s + 1].max(i);
        }
    }
    for &Step { first, len } in steps {
        // A step's input is read until its last layer has written.
        last_use[first] = last_use[first].max(first + len - 1);
        // An inverted residual that does not run by bands runs its depthwise layer with the
        // 1x1 conv after it: the depthwise input too is read until the last layer.
        if len == 3 {
            last_use[first + 1] = last_use[first + 1].max(first + 2);
        }
    }
    let mut slot_of = vec![0; values];
    let mut holder: Vec<usize> = vec![0];
    for i in 0..layers.len() {
        let free = holder.iter().position(|&v| last_use[v] < i);
        let slot = free.unwrap_or_else(|| {
            holder.push(0);
            holder.len() - 1
        });
        holder[slot] = i + 1;
        slot_of[i + 1] = slot;
    }
    (slot_of, holder.len())
}

/// Row `r` (image `r / oh`, output row `r % oh`) of the im2col of `layer` on NHWC `x` into
/// `dst`: for each output pixel and each tap `(ky, kx)`, the `c` input values under it (zeros
/// outside the image).
fn im2col_row(x: &[f32], [_, h, w, c]: [usize; 4], layer: &Layer, [oh, ow]: [usize; 2], r: usize, dst: &mut [f32]) {
    let (k, s, pad) = (layer.kernel, layer.stride, layer.pad);
    let row_len = k * k * c;
    // For one `ky`, the taps `kx = 0..k` read `k * c` consecutive input values.
    let run = k * c;
    let (b, oy) = (r / oh, r % oh);
    for (ox, out) in dst[..ow * row_len].chunks_exact_mut(row_len).enumerate() {
        let ix0 = (ox * s) as isize - pad as isize;
        for ky in 0..k {
            let iy = (oy * s + ky) as isize - pad as isize;
            let taps = &mut out[ky * run..][..run];
            if iy < 0 || iy >= h as isize {
                taps.fill(0.0);
            } else if ix0 >= 0 && ix0 as usize + k <= w {
                copy_run(taps, &x[((b * h + iy as usize) * w + ix0 as usize) * c..][..run]);
            } else {
                for (kx, tap) in taps.chunks_exact_mut(c).enumerate() {
                    let ix = ix0 + kx as isize;
                    if ix < 0 || ix >= w as isize {
                        tap.fill(0.0);
                    } else {
                        tap.copy_from_slice(&x[((b * h + iy as usize) * w + ix as usize) * c..][..c]);
                    }
                }
            }
        }
    }
}

/// `dst = src`, as register moves for the 3x3-tap, 3-channel rows of an image stem (a
/// `memcpy` call per row would cost more than the copy).
fn copy_run(dst: &mut [f32], src: &[f32]) {
    if dst.len() == 9 && src.len() == 9 {
        let (d, s): (&mut [f32; 9], &[f32; 9]) = (dst.try_into().expect("9 values"), src.try_into().expect("9 values"));
        *d = *s;
    } else {
        dst.copy_from_slice(src);
    }
}

/// The depthwise conv of `layer` on NHWC `x` into `y` (plus `res`, after the activation),
/// bands of output rows spread over the team of `par`.
///
/// Each task then calls `then(r0, r1)` on the rows `r0..r1` (of `n * oh`) that it wrote; with
/// `cached`, a band of rows is small enough to still be in cache for it.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    isa: Isa,
    x: &[f32],
    [n, h, w, c]: [usize; 4],
    wt: &[f32],
    layer: &Layer,
    [oh, ow]: [usize; 2],
    y: Buf,
    res: Option<Residual<'_>>,
    par: Par<'_>,
    cached: bool,
    then: impl Fn(usize, usize),
) {
    assert!(x.len() >= n * h * w * c && y.len() >= n * oh * ow * c && wt.len() >= layer.kernel * layer.kernel * c && layer.bias.len() >= c, "depthwise: buffer too small");
    if let Some(r) = &res {
        assert!(r.cols <= c && r.values.len() >= (n * oh * ow - 1) * r.ld + r.cols, "depthwise: residual too small");
    }
    let work = n * oh * ow * c * layer.kernel * layer.kernel;
    let threads = par.threads();
    // Bands of output rows, a few per thread; one band when too small to share.
    let band = if threads < 2 || work < 1 << 15 { n * oh } else { (n * oh).div_ceil(4 * threads).max(1) };
    let band = if cached { band.min((CACHED_BAND / (ow * c)).max(1)) } else { band };
    par.for_each((n * oh).div_ceil(band), |t| {
        let (r0, r1) = (t * band, ((t + 1) * band).min(n * oh));
        let mut r = r0;
        while r < r1 {
            let (b, oy0) = (r / oh, r % oh);
            let oy1 = (oy0 + (r1 - r)).min(oh);
            let d = DwCall {
                x: x[b * h * w * c..].as_ptr(),
                x_row0: 0,
                h,
                w,
                c,
                wt: wt.as_ptr(),
                bias: layer.bias.as_ptr(),
                k: layer.kernel,
                stride: layer.stride,
                pad: layer.pad,
                relu6: layer.relu6,
                // SAFETY: the assert above covers image `b` of `y`.
                y: unsafe { y.ptr().add(b * oh * ow * c) },
                y_row0: 0,
                ow,
            };
            // SAFETY: the assert above covers image `b` of `x` and `y` and the weights; each
            // task writes its own rows of `y`.
            unsafe { simd::depthwise(isa, &d, oy0, oy1) };
            r += oy1 - oy0;
        }
        if let Some(r) = res {
            // SAFETY: this task's rows, as above.
            let rows = unsafe { y.get_mut(r0 * ow * c, (r1 - r0) * ow * c) };
            for (p, row) in rows.chunks_exact_mut(c).enumerate() {
                let src = &r.values[(r0 * ow + p) * r.ld..][..r.cols];
                for (a, b) in row[..r.cols].iter_mut().zip(src) {
                    *a += b;
                }
            }
        }
        then(r0, r1);
    });
}

#[cfg(test)]
mod tests;

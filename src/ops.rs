//! The fused operations of a US-Net as burn custom operations, with their own backward.
//!
//! [`UsOps`] is a burn backend extension implemented for the Flex backend (forward with the
//! kernels of [`crate::kernels`]) and for `Autodiff<Flex>` (the same forward, recorded with a
//! hand-written backward). The layers call the functions at the bottom of this file when their
//! tensors live on Flex ([`enabled`]) and compose burn's own ops on every other backend.

use std::borrow::Cow;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::bn::{self, Act, Planes};
use crate::kernels::conv::{self, ConvGeom};
use crate::layers::BN_EPS;

/// US-Net layers as single operations.
#[backend_extension(Flex, Autodiff)]
pub trait UsOps: Backend {
    /// Convolution with a square kernel, symmetric padding `pad`, no bias; depthwise when
    /// `depthwise` (weight `[c, 1, k, k]`).
    fn us_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, pad: usize, depthwise: bool) -> FloatTensor<Self>;

    /// Training-mode batch norm (batch statistics, `eps = 1e-5`), then ReLU6 when `relu6`.
    fn us_bn_train(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, relu6: bool) -> FloatTensor<Self>;

    /// `act(x * scale[c] + shift[c])`: eval-mode batch norm with its statistics folded in.
    fn us_affine_act(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, relu6: bool) -> FloatTensor<Self>;

    /// Per-channel batch mean (row 0) and biased variance (row 1), `[2, c]`; not differentiated.
    fn us_bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// [`UsOps::us_bn_train`], then [`UsOps::us_conv2d`] on its output. The backward keeps
    /// only `x` and recomputes the batch norm's output from it, so a layer pair holds one
    /// activation for the backward instead of two.
    fn us_bn_conv(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, relu6: bool, weight: FloatTensor<Self>, conv: ConvArgs) -> FloatTensor<Self>;
}

/// The geometry of [`UsOps::us_bn_conv`]'s conv, as [`UsOps::us_conv2d`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvArgs {
    pub stride: usize,
    pub pad: usize,
    pub depthwise: bool,
}

fn act(relu6: bool) -> Act {
    if relu6 { Act::Relu6 } else { Act::Identity }
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

/// The values of `t` in row-major order, borrowed when it is already laid out so.
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => {
            let data = t.to_contiguous().into_data();
            Cow::Owned(data.try_to_vec::<f32>().expect("usnet's fused ops run on f32 tensors"))
        }
    }
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Adds the gradient `values` (of `shape`) to `node`'s, when the graph tracks it.
fn register(grads: &mut Gradients, node: Option<NodeId>, values: Vec<f32>, shape: Vec<usize>) {
    if let Some(id) = node {
        grads.register::<Flex>(id, tensor(values, shape));
    }
}

fn planes(x: &FlexTensor) -> Planes {
    let d = dims(x);
    Planes { batch: d[0], channels: d[1], plane: d[2] * d[3] }
}

fn geom(x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize, depthwise: bool) -> ConvGeom {
    let (xd, wd) = (dims(x), dims(weight));
    ConvGeom { batch: xd[0], c_in: xd[1], h: xd[2], w: xd[3], c_out: wd[0], kernel: wd[2], stride, pad, depthwise }
}

/// The batch norm of [`UsOps::us_bn_conv`] (with its `mean` and `invstd`), then the conv on
/// its output, which is dropped.
fn bn_conv_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, act: Act, weight: &FlexTensor, conv: ConvArgs) -> (FlexTensor, Vec<f32>, Vec<f32>) {
    let (y, mean, invstd) = bn::train_forward(&values(x), &values(gamma), &values(beta), planes(x), BN_EPS as f32, act);
    // The conv's input has the batch norm's shape.
    let g = geom(x, weight, conv.stride, conv.pad, conv.depthwise);
    let z = conv::forward(&y, &values(weight), &g);
    (tensor(z, vec![g.batch, g.c_out, g.out_h(), g.out_w()]), mean, invstd)
}

/// What a training-mode batch norm keeps for its backward: its input and batch statistics.
#[derive(Debug, Clone)]
struct BnState {
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    act: Act,
}

impl BnState {
    /// The batch norm's output, bit for bit as its forward computed it.
    fn output(&self) -> Vec<f32> {
        let (scale, shift) = bn::fold(&values(&self.gamma), &values(&self.beta), &self.mean, &self.invstd);
        bn::affine_act(&values(&self.x), &scale, &shift, planes(&self.x), self.act)
    }

    /// Registers the gradients of `x`, gamma and beta (`nodes`, those tracked) for the
    /// output's gradient `dy`.
    fn backward(&self, dy: &[f32], nodes: [Option<NodeId>; 3], grads: &mut Gradients) {
        let p = planes(&self.x);
        let (dx, dgamma, dbeta) =
            bn::train_backward(&values(&self.x), dy, &values(&self.gamma), &values(&self.beta), &self.mean, &self.invstd, p, self.act);
        let [x, gamma, beta] = nodes;
        register(grads, x, dx, dims(&self.x));
        register(grads, gamma, dgamma, vec![p.channels]);
        register(grads, beta, dbeta, vec![p.channels]);
    }
}

impl UsOps for Flex {
    fn us_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, pad: usize, depthwise: bool) -> FlexTensor {
        let g = geom(&x, &weight, stride, pad, depthwise);
        let y = conv::forward(&values(&x), &values(&weight), &g);
        tensor(y, vec![g.batch, g.c_out, g.out_h(), g.out_w()])
    }

    fn us_bn_train(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, relu6: bool) -> FlexTensor {
        let p = planes(&x);
        let (y, _, _) = bn::train_forward(&values(&x), &values(&gamma), &values(&beta), p, BN_EPS as f32, act(relu6));
        tensor(y, dims(&x))
    }

    fn us_affine_act(x: FlexTensor, scale: FlexTensor, shift: FlexTensor, relu6: bool) -> FlexTensor {
        let p = planes(&x);
        let y = bn::affine_act(&values(&x), &values(&scale), &values(&shift), p, act(relu6));
        tensor(y, dims(&x))
    }

    fn us_bn_stats(x: FlexTensor) -> FlexTensor {
        let p = planes(&x);
        let (mut mean, var) = bn::stats(&values(&x), p);
        mean.extend(var);
        tensor(mean, vec![2, p.channels])
    }

    fn us_bn_conv(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, relu6: bool, weight: FlexTensor, conv: ConvArgs) -> FlexTensor {
        bn_conv_forward(&x, &gamma, &beta, act(relu6), &weight, conv).0
    }
}

impl<C: CheckpointStrategy> UsOps for Autodiff<Flex, C> {
    fn us_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, pad: usize, depthwise: bool) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Conv;

        impl Backward<Flex, 2> for Conv {
            type State = (FlexTensor, FlexTensor, usize, usize, bool);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_w] = ops.parents;
                let dy = grads.consume::<Flex>(&ops.node);
                let (x, weight, stride, pad, depthwise) = ops.state;
                let g = geom(&x, &weight, stride, pad, depthwise);
                let (dx, dw) = conv::backward(&values(&x), &values(&weight), &values(&dy), &g, node_x.is_some());
                if let (Some(node), Some(dx)) = (node_x, dx) {
                    grads.register::<Flex>(node.id, tensor(dx, dims(&x)));
                }
                register(grads, node_w.map(|n| n.id), dw, dims(&weight));
            }
        }

        let guards = [x.node(), weight.node()];
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        let y = Flex::us_conv2d(x.clone(), weight.clone(), stride, pad, depthwise);
        match Conv.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, weight, stride, pad, depthwise), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn us_bn_train(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, relu6: bool) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct BnTrain;

        impl Backward<Flex, 3> for BnTrain {
            type State = BnState;

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let dy = grads.consume::<Flex>(&ops.node);
                ops.state.backward(&values(&dy), ops.parents.map(|n| n.map(|n| n.id)), grads);
            }
        }

        let guards = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let p = planes(&x);
        let a = act(relu6);
        let (y, mean, invstd) = bn::train_forward(&values(&x), &values(&gamma), &values(&beta), p, BN_EPS as f32, a);
        let y = tensor(y, dims(&x));
        match BnTrain.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(BnState { x, gamma, beta, mean, invstd, act: a }, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn us_affine_act(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, relu6: bool) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AffineAct;

        impl Backward<Flex, 3> for AffineAct {
            type State = (FlexTensor, FlexTensor, FlexTensor, Act);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_scale, node_shift] = ops.parents;
                let dy = grads.consume::<Flex>(&ops.node);
                let (x, scale, shift, a) = ops.state;
                let p = planes(&x);
                let (dx, dscale, dshift) = bn::affine_act_backward(&values(&x), &values(&dy), &values(&scale), &values(&shift), p, a);
                register(grads, node_x.map(|n| n.id), dx, dims(&x));
                register(grads, node_scale.map(|n| n.id), dscale, vec![p.channels]);
                register(grads, node_shift.map(|n| n.id), dshift, vec![p.channels]);
            }
        }

        let guards = [x.node(), scale.node(), shift.node()];
        let (x, scale, shift) = (x.into_primitive(), scale.into_primitive(), shift.into_primitive());
        let y = Flex::us_affine_act(x.clone(), scale.clone(), shift.clone(), relu6);
        match AffineAct.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, scale, shift, act(relu6)), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn us_bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// Statistics are constants to the graph, as PyTorch's running statistics.
        #[derive(Debug)]
        struct Stats;

        impl Backward<Flex, 1> for Stats {
            type State = ();

            fn backward(self, _: Ops<Self::State, 1>, _: &mut Gradients, _: &mut Checkpointer) {}
        }

        let guards = [x.node()];
        let stats = Flex::us_bn_stats(x.into_primitive());
        match Stats.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((), stats),
            OpsKind::UnTracked(prep) => prep.finish(stats),
        }
    }

    fn us_bn_conv(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, relu6: bool, weight: FloatTensor<Self>, conv: ConvArgs) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct BnConv;

        /// The batch norm's input and statistics, not its output.
        #[derive(Debug, Clone)]
        struct State {
            bn: BnState,
            weight: FlexTensor,
            conv: ConvArgs,
        }

        impl Backward<Flex, 4> for BnConv {
            type State = State;

            fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_gamma, node_beta, node_w] = ops.parents.map(|n| n.map(|n| n.id));
                let dz = grads.consume::<Flex>(&ops.node);
                let State { bn, weight, conv: c } = ops.state;
                let y = bn.output();
                let g = geom(&bn.x, &weight, c.stride, c.pad, c.depthwise);
                let bn_nodes = [node_x, node_gamma, node_beta];
                let (dy, dw) = conv::backward(&y, &values(&weight), &values(&dz), &g, bn_nodes.iter().any(Option::is_some));
                drop((y, dz));
                register(grads, node_w, dw, dims(&weight));
                if let Some(dy) = dy {
                    bn.backward(&dy, bn_nodes, grads);
                }
            }
        }

        let guards = [x.node(), gamma.node(), beta.node(), weight.node()];
        let (x, gamma, beta, weight) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), weight.into_primitive());
        let a = act(relu6);
        let (z, mean, invstd) = bn_conv_forward(&x, &gamma, &beta, a, &weight, conv);
        match BnConv.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(State { bn: BnState { x, gamma, beta, mean, invstd, act: a }, weight, conv }, z),
            OpsKind::UnTracked(prep) => prep.finish(z),
        }
    }
}

/// Whether tensors on `device` take the fused path: Flex, with or without autodiff, unless
/// the environment sets `USNET_FUSED=0` (burn's own ops everywhere, for comparison).
pub fn enabled(device: &Device) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("USNET_FUSED").is_ok_and(|v| v == "0"));
    !off && matches!(device.clone().inner().as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// Runs `f` on the values of `x`, in row-major order. A contiguous f32 tensor of the Flex
/// backend lends them without a copy (a batch-1 forward at 224 px would otherwise copy 600 KB
/// per call); any other tensor is read back first.
///
/// # Errors
///
/// When `x` cannot be read back as f32 values.
pub fn with_values<const D: usize, R>(x: Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> std::result::Result<R, String> {
    use burn::backend::{BackendTensor, DispatchTensorKind};
    let x = x.into_dispatch();
    if let DispatchTensorKind::Flex(BackendTensor::Float(t)) = &x.kind
        && let Some(values) = t.as_slice::<f32>()
    {
        return Ok(f(values));
    }
    let values = Tensor::<D>::from_dispatch(x).into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    Ok(f(&values))
}

/// [`UsOps::us_conv2d`] on tensors.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, pad: usize, depthwise: bool) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as UsOps>::us_conv2d(x.into_dispatch(), weight.into_dispatch(), stride, pad, depthwise))
}

/// [`UsOps::us_bn_train`] on tensors.
pub fn bn_train(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, relu6: bool) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as UsOps>::us_bn_train(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), relu6))
}

/// [`UsOps::us_affine_act`] on tensors.
pub fn affine_act(x: Tensor<4>, scale: Tensor<1>, shift: Tensor<1>, relu6: bool) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as UsOps>::us_affine_act(x.into_dispatch(), scale.into_dispatch(), shift.into_dispatch(), relu6))
}

/// [`UsOps::us_bn_conv`] on tensors.
pub fn bn_conv(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, relu6: bool, weight: Tensor<4>, conv: ConvArgs) -> Tensor<4> {
    let (x, gamma, beta, weight) = (x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(<Dispatch as UsOps>::us_bn_conv(x, gamma, beta, relu6, weight, conv))
}

/// [`UsOps::us_bn_stats`] on tensors: `(mean, biased variance)`, `[c]` each.
pub fn bn_stats(x: Tensor<4>) -> (Tensor<1>, Tensor<1>) {
    let c = x.dims()[1];
    let s: Tensor<2> = Tensor::from_dispatch(<Dispatch as UsOps>::us_bn_stats(x.into_dispatch()));
    (s.clone().slice([0..1, 0..c]).reshape([c]), s.slice([1..2, 0..c]).reshape([c]))
}

#[cfg(test)]
mod tests {
    use burn::tensor::Tensor;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use crate::bench::random_values as random;

    /// `with_values` lends a contiguous tensor's values and reads any other back, in row-major
    /// order either way: a transposed view, and a tracked (autodiff) tensor, give what
    /// `into_data` gives.
    #[test]
    fn with_values_gives_the_values_in_row_major_order() {
        let device = crate::device::device(None).unwrap();
        let x: Tensor<4> = random(&mut StdRng::seed_from_u64(7), [2, 3, 4, 5], &device).1;
        let cases = [("contiguous", x.clone()), ("transposed view", x.clone().swap_dims(1, 3)), ("tracked", x.clone().autodiff().require_grad())];
        for (what, t) in cases {
            let expected = t.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            let got = super::with_values(t, <[f32]>::to_vec).unwrap();
            assert_eq!(got, expected, "{what}");
        }
        // A contiguous tensor lends its storage, which its clones share: two nested reads see
        // the same values at one address (two copies, alive together, could not).
        let shared = super::with_values(x.clone(), |a| super::with_values(x.clone(), |b| a.as_ptr() == b.as_ptr()).unwrap()).unwrap();
        assert!(shared, "a contiguous tensor was copied, not lent");
    }

    /// `bn_conv` is `bn_train` then `conv2d` regrouped, with the batch norm's output recomputed
    /// in the backward by the same kernel: the same values and gradients, bit for bit.
    #[test]
    fn bn_conv_computes_what_its_two_ops_compute() {
        let device = crate::device::device(None).unwrap();
        // (input, conv outputs, kernel, stride, depthwise, relu6, whether x, gamma and beta
        // are tracked); odd sizes, and batches large enough for the parallel paths.
        let cases = [
            ([3, 5, 7, 9], 6, 3, 2, false, true, true),
            ([2, 7, 11, 5], 7, 3, 1, true, false, true),
            ([16, 24, 17, 17], 24, 3, 2, true, true, true),
            ([16, 24, 17, 17], 33, 1, 1, false, true, true),
            ([4, 6, 9, 9], 5, 3, 1, false, true, false),
        ];
        for (i, (shape, c_out, k, stride, depthwise, relu6, track)) in cases.into_iter().enumerate() {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let [_, c, _, _] = shape;
            let leaf = |t: Tensor<4>, on: bool| if on { t.autodiff().require_grad() } else { t.autodiff() };
            let x = leaf(random(&mut rng, shape, &device).1, track);
            let gamma = random(&mut rng, [c, 1, 1, 1], &device).1.reshape([c]).autodiff();
            let gamma = if track { gamma.require_grad() } else { gamma };
            let beta = random(&mut rng, [c, 1, 1, 1], &device).1.reshape([c]).autodiff();
            let beta = if track { beta.require_grad() } else { beta };
            let w_shape = [if depthwise { c } else { c_out }, if depthwise { 1 } else { c }, k, k];
            let weight = leaf(random(&mut rng, w_shape, &device).1, true);
            let pad = k / 2;

            let fused = super::bn_conv(x.clone(), gamma.clone(), beta.clone(), relu6, weight.clone(), super::ConvArgs { stride, pad, depthwise });
            let plain = super::conv2d(super::bn_train(x.clone(), gamma.clone(), beta.clone(), relu6), weight.clone(), stride, pad, depthwise);
            let out = fused.dims();
            assert_eq!(out, plain.dims());
            let r = random(&mut rng, out, &device).1.autodiff();
            let bits = |t: Tensor<4>| t.inner().into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(bits(fused.clone()), bits(plain.clone()), "case {i}: values");
            let (gf, gp) = ((fused * r.clone()).sum().backward(), (plain * r).sum().backward());
            let grad = |g: &burn::tensor::Gradients| {
                let flat4 = |t: &Tensor<4>| t.grad(g).map(|t| t.into_data().try_to_vec::<f32>().unwrap());
                let flat1 = |t: &Tensor<1>| t.grad(g).map(|t| t.into_data().try_to_vec::<f32>().unwrap());
                [flat4(&x), flat1(&gamma), flat1(&beta), flat4(&weight)]
            };
            let (a, b) = (grad(&gf), grad(&gp));
            for (name, (a, b)) in ["x", "gamma", "beta", "weight"].into_iter().zip(a.into_iter().zip(b)) {
                assert_eq!(a.is_some(), name == "weight" || track, "case {i}: {name} tracked");
                assert_eq!(a, b, "case {i}: gradient of {name}");
            }
        }
    }
}

//! Named parameters of any rank, for optimizers, checkpoints and initialisation.

use burn::tensor::{Device, Tensor, TensorData};

use crate::init::{Init, ParamKind};

/// A parameter tensor of rank 1, 2 or 4.
///
/// Burn tensors are handles, so cloning one is cheap and shares the data.
#[derive(Debug, Clone)]
pub enum AnyTensor {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R4(Tensor<4>),
}

/// `body` with `t` bound to the tensor of `value`, whatever its rank; with `same_rank`, the
/// result wrapped back in the variant of `value`.
macro_rules! each_rank {
    (same_rank, $value:expr, |$t:ident| $body:expr) => {
        match $value {
            AnyTensor::R1($t) => AnyTensor::R1($body),
            AnyTensor::R2($t) => AnyTensor::R2($body),
            AnyTensor::R4($t) => AnyTensor::R4($body),
        }
    };
    ($value:expr, |$t:ident| $body:expr) => {
        match $value {
            AnyTensor::R1($t) => $body,
            AnyTensor::R2($t) => $body,
            AnyTensor::R4($t) => $body,
        }
    };
}

impl AnyTensor {
    /// A tensor of `shape` filled with `values` (row-major) on `device`.
    ///
    /// # Panics
    ///
    /// Panics when the rank is not 1, 2 or 4, or `values` does not have `shape`'s length.
    pub fn from_values(values: Vec<f32>, shape: &[usize], device: &Device) -> Self {
        let n = values.len();
        AnyTensor::unflatten(Tensor::from_data(TensorData::new(values, [n]), device), shape)
    }

    /// The shape.
    pub fn shape(&self) -> Vec<usize> {
        each_rank!(self, |t| t.dims().to_vec())
    }

    /// The data, read back to the host.
    pub fn to_data(&self) -> TensorData {
        each_rank!(self, |t| t.to_data())
    }

    /// The elements as one flat tensor.
    pub fn flatten(self) -> Tensor<1> {
        each_rank!(self, |t| flat(t))
    }

    /// A flat tensor put back into `shape` (rank 1, 2 or 4).
    ///
    /// # Panics
    ///
    /// Panics on another rank or a mismatched element count.
    pub fn unflatten(flat: Tensor<1>, shape: &[usize]) -> Self {
        match *shape {
            [a] => AnyTensor::R1(flat.reshape([a])),
            [a, b] => AnyTensor::R2(flat.reshape([a, b])),
            [a, b, c, d] => AnyTensor::R4(flat.reshape([a, b, c, d])),
            _ => panic!("parameters have rank 1, 2 or 4, not {}", shape.len()),
        }
    }

    /// Applies `f` to the flattened tensor and restores the shape.
    pub fn map_flat(self, f: impl FnOnce(Tensor<1>) -> Tensor<1>) -> Self {
        let shape = self.shape();
        AnyTensor::unflatten(f(self.flatten()), &shape)
    }

    /// The same values with autodiff on and gradients retained (a training leaf).
    pub fn into_leaf(self) -> Self {
        each_rank!(same_rank, self, |t| t.inner().autodiff().require_grad())
    }

    /// The same values without autodiff.
    pub fn into_inner(self) -> Self {
        each_rank!(same_rank, self, |t| t.inner())
    }

    /// This parameter's gradient in `grads`, flattened.
    pub fn grad_flat(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<1>> {
        each_rank!(self, |t| t.grad(grads).map(flat))
    }

    /// The rank-1 tensor.
    ///
    /// # Panics
    ///
    /// On another rank.
    pub fn into_r1(self) -> Tensor<1> {
        match self {
            AnyTensor::R1(t) => t,
            other => panic!("expected a rank-1 parameter, got shape {:?}", other.shape()),
        }
    }

    /// The rank-2 tensor; panics on another rank.
    pub fn into_r2(self) -> Tensor<2> {
        match self {
            AnyTensor::R2(t) => t,
            other => panic!("expected a rank-2 parameter, got shape {:?}", other.shape()),
        }
    }

    /// The rank-4 tensor; panics on another rank.
    pub fn into_r4(self) -> Tensor<4> {
        match self {
            AnyTensor::R4(t) => t,
            other => panic!("expected a rank-4 parameter, got shape {:?}", other.shape()),
        }
    }
}

/// The elements of `t` as one flat tensor.
fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

/// A function that sees each parameter by name and returns its replacement (same shape).
pub type ParamFn<'a> = dyn FnMut(&str, ParamKind, AnyTensor) -> AnyTensor + 'a;

/// A new parameter from `init`.
pub(crate) fn new_param(init: &Init, name: &str, kind: ParamKind, shape: &[usize], device: &Device) -> AnyTensor {
    AnyTensor::from_values(init.values(name, kind, shape), shape, device)
}

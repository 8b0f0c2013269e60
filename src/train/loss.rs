//! Losses: cross-entropy with labels and soft cross-entropy with a teacher's softmax.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

/// One-hot targets of `labels` as a `[batch, num_classes]` tensor, smoothed by
/// `label_smoothing` (PyTorch's rule: `(1 - e) * onehot + e / num_classes`).
///
/// # Errors
///
/// [`Error::Label`] for a label outside `0..num_classes`.
pub fn label_targets(labels: &[i64], num_classes: usize, label_smoothing: f64, device: &Device) -> Result<Tensor<2>> {
    let off = (label_smoothing / num_classes as f64) as f32;
    let on = (1.0 - label_smoothing) as f32 + off;
    let mut values = vec![off; labels.len() * num_classes];
    for (row, &label) in labels.iter().enumerate() {
        if label < 0 || label as usize >= num_classes {
            return Err(Error::Label { label, num_classes });
        }
        values[row * num_classes + label as usize] = on;
    }
    Ok(Tensor::from_data(TensorData::new(values, [labels.len(), num_classes]), device))
}

/// The detached softmax of a teacher's logits, the inplace-distillation target.
pub fn soft_targets(teacher_logits: &Tensor<2>) -> Tensor<2> {
    softmax(teacher_logits.clone().detach().inner(), 1)
}

/// Mean over the batch of `-sum_c target_c * log_softmax(logits)_c`.
///
/// With one-hot targets this is cross-entropy; with a teacher's softmax it is the soft
/// cross-entropy of inplace distillation.
///
/// # Shapes
///
/// - logits, targets: `[batch, num_classes]`
/// - output: `[1]`
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let n = logits.dims()[0] as f64;
    (targets * log_softmax(logits, 1)).sum().mul_scalar(-1.0 / n)
}

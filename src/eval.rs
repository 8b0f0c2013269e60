//! Accuracy of a calibrated model at a width.

use burn::tensor::Device;
use serde::Serialize;

use crate::calibration::CalibratedModel;
use crate::data::Loader;
use crate::dataset::images;
use crate::error::Result;
use crate::width::WidthSpec;

/// Top-1 and top-5 accuracy in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
    pub samples: usize,
}

/// Accuracy of `model` at `spec` over every batch of `loader` (epoch 0).
///
/// # Errors
///
/// [`crate::Error::NotCalibrated`] when `spec` has no statistics; data errors.
pub fn accuracy(model: &CalibratedModel, loader: &Loader, spec: &WidthSpec, device: &Device) -> Result<Accuracy> {
    let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let logits = model.forward(images(&batch, device), spec)?;
        let [rows, classes] = logits.dims();
        let values: Vec<f32> = logits.into_data().try_to_vec::<f32>().expect("logits are f32");
        for (r, &label) in batch.labels.iter().enumerate().take(rows) {
            let row = &values[r * classes..(r + 1) * classes];
            let target = row[label as usize];
            // Rank of the label: classes scoring strictly higher (ties count in its favour).
            let higher = row.iter().filter(|&&v| v > target).count();
            top1 += usize::from(higher < 1);
            top5 += usize::from(higher < 5);
        }
        n += rows;
    }
    let pct = |k: usize| if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 };
    Ok(Accuracy { top1: pct(top1), top5: pct(top5), samples: n })
}

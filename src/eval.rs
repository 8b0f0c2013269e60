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
    /// Rows with a NaN or infinite logit: each counts as a miss.
    pub non_finite: usize,
}

/// How one row of logits scores against its label: `(top-1 hit, top-5 hit)`.
///
/// The label's rank is the number of classes that beat it: a higher logit, or an equal
/// logit at a lower class index (ties break by lowest index, as `argmax` does). A row with
/// any non-finite logit is a miss at every k: `v > NaN` is false for every class, so a
/// NaN row would otherwise rank its label first.
pub fn score_row(row: &[f32], label: usize) -> (bool, bool) {
    if label >= row.len() || row.iter().any(|v| !v.is_finite()) {
        return (false, false);
    }
    let target = row[label];
    let rank = row.iter().enumerate().filter(|&(j, &v)| v > target || (v == target && j < label)).count();
    (rank < 1, rank < 5)
}

/// Accuracy of `model` at `spec` over every batch of `loader` (epoch 0).
///
/// # Errors
///
/// [`crate::Error::NotCalibrated`] when `spec` has no statistics; data errors.
pub fn accuracy(model: &CalibratedModel, loader: &Loader, spec: &WidthSpec, device: &Device) -> Result<Accuracy> {
    let (mut top1, mut top5, mut n, mut non_finite) = (0usize, 0usize, 0usize, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let logits = model.forward(images(&batch, device), spec)?;
        let [rows, classes] = logits.dims();
        let values: Vec<f32> = logits.into_data().try_to_vec::<f32>().expect("logits are f32");
        for (r, &label) in batch.labels.iter().enumerate().take(rows) {
            let row = &values[r * classes..(r + 1) * classes];
            non_finite += usize::from(row.iter().any(|v| !v.is_finite()));
            let (hit1, hit5) = score_row(row, label as usize);
            top1 += usize::from(hit1);
            top5 += usize::from(hit5);
        }
        n += rows;
    }
    let pct = |k: usize| if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 };
    Ok(Accuracy { top1: pct(top1), top5: pct(top5), samples: n, non_finite })
}

#[cfg(test)]
mod tests {
    use super::score_row;

    #[test]
    fn nan_rows_are_misses() {
        assert_eq!(score_row(&[f32::NAN; 10], 3), (false, false));
        let mut row = [0.0f32; 10];
        row[3] = 5.0;
        row[7] = f32::INFINITY;
        assert_eq!(score_row(&row, 3), (false, false));
        row[7] = f32::NAN;
        assert_eq!(score_row(&row, 3), (false, false));
    }

    #[test]
    fn ties_break_by_lowest_index() {
        // All equal: only class 0 is the argmax.
        let row = [1.0f32; 10];
        assert_eq!(score_row(&row, 0), (true, true));
        assert_eq!(score_row(&row, 1), (false, true));
        assert_eq!(score_row(&row, 4), (false, true));
        assert_eq!(score_row(&row, 5), (false, false));
        assert_eq!(score_row(&[0.0, 2.0, 1.0], 1), (true, true));
        assert_eq!(score_row(&[0.0, 2.0, 1.0], 2), (false, true));
    }
}

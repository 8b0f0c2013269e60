//! The real oracles: accuracy after calibrating a candidate, and MACs from `profile`.

use burn::tensor::{Device, Tensor};

use super::{Cost, CostKind, Scorer};
use crate::calibration::CalibratedModel;
use crate::data::Loader;
use crate::error::Result;
use crate::eval::accuracy;
use crate::model::UsNet;
use crate::profile::width_cost;
use crate::width::WidthSpec;

/// Top-1 of a candidate on some images after calibrating its BN statistics on fixed
/// calibration batches, as `calibrate` then `eval` would compute it.
///
/// Holds no statistics between candidates: each is calibrated, scored and dropped, so
/// memory stays bounded however many candidates a search scores.
pub struct ValidationScorer<'a> {
    model: UsNet,
    batches: Vec<Tensor<4>>,
    images: &'a Loader,
    device: Device,
}

impl<'a> ValidationScorer<'a> {
    /// Scores `model` on `images`, calibrating each candidate on `batches` (the checkpoint's
    /// `bn_cal_batch_num` batches of its calibration loader).
    pub fn new(model: &UsNet, batches: Vec<Tensor<4>>, images: &'a Loader, device: &Device) -> Self {
        ValidationScorer { model: model.clone().into_inference(), batches, images, device: device.clone() }
    }
}

impl Scorer for ValidationScorer<'_> {
    fn top1(&mut self, spec: &WidthSpec) -> Result<f64> {
        let mut cal = CalibratedModel::new(self.model.clone());
        cal.calibrate(self.batches.clone(), std::slice::from_ref(spec))?;
        Ok(accuracy(&cal, self.images, spec, &self.device)?.top1)
    }
}

/// MACs per image on square `input_size` inputs, as `usnet profile` counts them.
pub struct MacsCost<'a> {
    pub model: &'a UsNet,
    pub input_size: usize,
}

impl Cost for MacsCost<'_> {
    fn kind(&self) -> CostKind {
        CostKind::Macs
    }

    fn cost(&mut self, spec: &WidthSpec) -> Result<f64> {
        Ok(width_cost(self.model, spec, self.input_size)?.macs as f64)
    }
}

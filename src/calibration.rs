//! BN post-statistics: re-estimating each width's BN statistics after training.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use burn::tensor::Tensor;

use crate::collective::{Collective, SingleProcess};
use crate::error::{Error, Result};
use crate::fixed::FixedNet;
use crate::infer::InferencePlan;
use crate::layers::{BnAccumulator, BnMode, BnStatistics, RunningStats};
use crate::model::UsNet;
use crate::width::WidthSpec;

/// Computes the BN statistics of each spec in `specs` as the cumulative average of the
/// batch statistics over `batches` (batch mean and unbiased batch variance).
///
/// Every batch runs once per spec, in training-mode normalisation, as PyTorch's calibration
/// with `momentum=None` after a reset does. Pass an inference model
/// ([`UsNet::into_inference`]) so that no graph is recorded.
///
/// # Errors
///
/// A bad width or input shape, or no batch at all.
pub fn calibrate<I>(model: &UsNet, batches: I, specs: &[WidthSpec]) -> Result<Vec<BnStatistics>>
where
    I: IntoIterator<Item = Tensor<4>>,
{
    calibrate_with(model, batches, specs, &mut SingleProcess)
}

/// [`calibrate`] as one process of a data-parallel job: each process accumulates over its own
/// `batches`, then the cumulative sums are all-reduced, so every process gets the statistics
/// one process would compute over all the job's batches. A process may have no batch.
///
/// # Errors
///
/// A bad width or input shape, or no batch in the whole job.
pub fn calibrate_with<I>(model: &UsNet, batches: I, specs: &[WidthSpec], collective: &mut dyn Collective) -> Result<Vec<BnStatistics>>
where
    I: IntoIterator<Item = Tensor<4>>,
{
    let mut accs: Vec<BnAccumulator> = specs.iter().map(|_| BnAccumulator::new(model.num_bn())).collect();
    for spec in specs {
        model.stage_widths(spec)?;
    }
    for batch in batches {
        for (spec, acc) in specs.iter().zip(accs.iter_mut()) {
            model.forward(batch.clone(), spec, &mut BnMode::Calibrate(acc))?;
        }
    }
    if collective.size() > 1 {
        let device = model.stem.conv.weight.device();
        for (spec, acc) in specs.iter().zip(accs.iter_mut()) {
            acc.all_reduce(&model.bn_channels(spec)?, collective, &device);
        }
    }
    accs.into_iter()
        .map(|acc| acc.finish().ok_or_else(|| Error::InvalidConfig("calibration needs at least one batch".into())))
        .collect()
}

/// Where eval-mode BN statistics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnStatsSource {
    /// BN post-statistics per width (the paper's method): stored ones, and on-demand
    /// calibration for widths without them.
    Calibrated,
    /// The max width's calibrated statistics, sliced to each width's channels: one set of
    /// statistics shared by every width (what `--no-calibration` used to do).
    SharedMax,
    /// The running statistics accumulated during training (momentum 0.1, shared by every
    /// width, sliced to its channels): the paper's "no calibration" baseline.
    Running,
}

/// A trained model with BN post-statistics for some widths: the stage that can evaluate.
///
/// It keeps the inference plan of each width it has run ([`CalibratedModel::plan`]), built
/// from `model` and that width's statistics on first use; storing new statistics for a
/// width drops its plan. Replace the model by building a new `CalibratedModel`, not by
/// assigning to `model`, or plans already built keep the old weights.
#[derive(Debug, Clone)]
pub struct CalibratedModel {
    pub model: UsNet,
    stats: BTreeMap<String, (WidthSpec, BnStatistics)>,
    plans: PlanCache,
}

/// Inference plans by width key. A clone starts empty: plans are rebuilt on demand.
#[derive(Debug, Default)]
struct PlanCache(Mutex<HashMap<String, Arc<InferencePlan>>>);

impl Clone for PlanCache {
    fn clone(&self) -> Self {
        PlanCache::default()
    }
}

impl PlanCache {
    fn forget(&self, key: &str) {
        if let Ok(mut plans) = self.0.lock() {
            plans.remove(key);
        }
    }
}

impl CalibratedModel {
    /// A model with no statistics yet.
    pub fn new(model: UsNet) -> Self {
        CalibratedModel { model: model.into_inference(), stats: BTreeMap::new(), plans: PlanCache::default() }
    }

    /// A model with the statistics stored in a checkpoint.
    pub fn with_stats(model: UsNet, stats: Vec<(WidthSpec, BnStatistics)>) -> Self {
        let mut out = CalibratedModel::new(model);
        for (spec, s) in stats {
            out.insert(spec, s);
        }
        out
    }

    /// The stored statistics, for saving in a checkpoint.
    pub fn all_stats(&self) -> Vec<(WidthSpec, BnStatistics)> {
        self.stats.values().cloned().collect()
    }

    /// The specs of `specs` that have no statistics yet.
    pub fn missing(&self, specs: &[WidthSpec]) -> Vec<WidthSpec> {
        specs.iter().filter(|s| self.stats(s).is_none()).cloned().collect()
    }

    /// Stores the statistics of `spec`, replacing any earlier ones.
    pub fn insert(&mut self, spec: WidthSpec, stats: BnStatistics) {
        self.plans.forget(&spec.key());
        self.stats.insert(spec.key(), (spec, stats));
    }

    /// Calibrates `specs` on `batches` and stores the result.
    pub fn calibrate<I>(&mut self, batches: I, specs: &[WidthSpec]) -> Result<()>
    where
        I: IntoIterator<Item = Tensor<4>>,
    {
        self.calibrate_with(batches, specs, &mut SingleProcess)
    }

    /// [`CalibratedModel::calibrate`] as one process of a data-parallel job
    /// ([`calibrate_with`]): every process stores the statistics of all the job's batches.
    pub fn calibrate_with<I>(&mut self, batches: I, specs: &[WidthSpec], collective: &mut dyn Collective) -> Result<()>
    where
        I: IntoIterator<Item = Tensor<4>>,
    {
        let stats = calibrate_with(&self.model, batches, specs, collective)?;
        for (spec, s) in specs.iter().zip(stats) {
            self.insert(spec.clone(), s);
        }
        Ok(())
    }

    /// Gives each spec of `targets` the statistics of `source`, sliced to its channels: one
    /// set of calibrated statistics shared by every width ([`BnStatsSource::SharedMax`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotCalibrated`] when `source` has no statistics; bad widths.
    pub fn share_statistics(&mut self, source: &WidthSpec, targets: &[WidthSpec]) -> Result<()> {
        let from = self.stats_or_error(source)?.clone();
        for spec in targets {
            let sliced = from.sliced(&self.model.bn_channels(spec)?);
            self.insert(spec.clone(), sliced);
        }
        Ok(())
    }

    /// Gives every spec of `specs` its eval-mode statistics from `source`, the one place that
    /// policy lives (eval, search and export share it):
    ///
    /// - [`BnStatsSource::Calibrated`]: stored statistics where there are some; the others
    ///   are calibrated on demand over `batches()`.
    /// - [`BnStatsSource::SharedMax`]: the max width's statistics (calibrated on demand if
    ///   absent), sliced for every spec, replacing any they had.
    /// - [`BnStatsSource::Running`]: `running`, sliced for every spec, replacing any they had.
    ///
    /// Returns the specs that were calibrated on demand. `batches` is called at most once.
    ///
    /// # Errors
    ///
    /// [`Error::NoRunningStats`] for `Running` without running statistics; bad widths;
    /// calibration and data errors.
    pub fn prepare<F>(&mut self, source: BnStatsSource, specs: &[WidthSpec], running: Option<&RunningStats>, batches: F) -> Result<Vec<WidthSpec>>
    where
        F: FnOnce() -> Result<Vec<Tensor<4>>>,
    {
        match source {
            BnStatsSource::Calibrated => self.calibrate_missing(specs, batches),
            BnStatsSource::SharedMax => {
                let max = WidthSpec::Uniform(self.model.width_range().max());
                let missing = self.calibrate_missing(std::slice::from_ref(&max), batches)?;
                self.share_statistics(&max, specs)?;
                Ok(missing)
            }
            BnStatsSource::Running => {
                let running = running.ok_or(Error::NoRunningStats)?;
                for spec in specs {
                    let stats = self.model.running_statistics(running, spec)?;
                    self.insert(spec.clone(), stats);
                }
                Ok(Vec::new())
            }
        }
    }

    /// Calibrates, over `batches()`, the specs of `specs` that have no stored statistics
    /// (BN post-statistics on demand, as eval and export do), and returns them. `batches` is
    /// called only when some spec is missing, and at most once.
    ///
    /// # Errors
    ///
    /// [`Error::NoCalibrationData`] naming the missing widths when `batches` fails (no
    /// dataset to calibrate on); bad widths; calibration errors.
    pub fn calibrate_missing<F>(&mut self, specs: &[WidthSpec], batches: F) -> Result<Vec<WidthSpec>>
    where
        F: FnOnce() -> Result<Vec<Tensor<4>>>,
    {
        for spec in specs {
            self.model.stage_widths(spec)?;
        }
        let missing = self.missing(specs);
        if missing.is_empty() {
            return Ok(missing);
        }
        let batches = batches().map_err(|e| Error::NoCalibrationData {
            widths: missing.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
            stored: self.stored_names(),
            reason: e.to_string(),
        })?;
        self.calibrate(batches, &missing)?;
        Ok(missing)
    }

    /// The stored specs' keys, comma-separated, or `none`.
    fn stored_names(&self) -> String {
        let keys: Vec<&str> = self.stats.keys().map(String::as_str).collect();
        if keys.is_empty() { "none".into() } else { keys.join(", ") }
    }

    /// The statistics of `spec`, if calibrated.
    pub fn stats(&self, spec: &WidthSpec) -> Option<&BnStatistics> {
        self.stats.get(&spec.key()).map(|(_, s)| s)
    }

    /// The calibrated specs, in key order.
    pub fn specs(&self) -> Vec<WidthSpec> {
        self.stats.values().map(|(spec, _)| spec.clone()).collect()
    }

    /// The network at `spec` as a plain fixed-width network, with its stored statistics.
    ///
    /// # Errors
    ///
    /// [`Error::NotCalibrated`] when `spec` has no statistics, and the errors of
    /// [`FixedNet::new`].
    pub fn fixed(&self, spec: &WidthSpec) -> Result<FixedNet> {
        self.model.stage_widths(spec)?;
        FixedNet::new(&self.model, self.stats_or_error(spec)?, spec)
    }

    fn stats_or_error(&self, spec: &WidthSpec) -> Result<&BnStatistics> {
        self.stats(spec).ok_or_else(|| Error::NotCalibrated { width: spec.to_string(), stored: self.stored_names() })
    }

    /// The inference plan of `spec` (folded, packed weights), built on first use and kept.
    ///
    /// # Errors
    ///
    /// The errors of [`CalibratedModel::fixed`] and [`InferencePlan::new`].
    pub fn plan(&self, spec: &WidthSpec) -> Result<Arc<InferencePlan>> {
        let key = spec.key();
        if let Some(plan) = self.plans.0.lock().ok().and_then(|p| p.get(&key).cloned()) {
            return Ok(plan);
        }
        let plan = Arc::new(InferencePlan::new(&self.fixed(spec)?)?);
        if let Ok(mut plans) = self.plans.0.lock() {
            return Ok(plans.entry(key).or_insert(plan).clone());
        }
        Ok(plan)
    }

    /// Eval-mode logits at `spec`, normalised with its stored statistics.
    ///
    /// On the Flex backend this runs the width's [`InferencePlan`] (unless `USNET_FUSED=0`
    /// or `USNET_ENGINE=0`); elsewhere, burn's forward of the slimmable model.
    ///
    /// # Shapes
    ///
    /// `x`: `[n, input_channels, h, w]`; returns `[n, num_classes]`.
    ///
    /// # Errors
    ///
    /// [`Error::NotCalibrated`] when `spec` has no statistics, and the errors of
    /// [`UsNet::forward`] or [`InferencePlan::forward`].
    pub fn forward(&self, x: Tensor<4>, spec: &WidthSpec) -> Result<Tensor<2>> {
        self.model.stage_widths(spec)?;
        let stats = self.stats_or_error(spec)?;
        #[cfg(feature = "flex")]
        if crate::ops::enabled(&x.device()) && crate::infer::enabled() {
            let plan = self.plan(spec)?;
            let (device, shape) = (x.device(), x.dims());
            let logits = crate::ops::with_values(x, |values| plan.forward(values, shape)).map_err(|e| Error::InvalidConfig(format!("reading the input tensor: {e}")))??;
            let classes = plan.num_classes();
            return Ok(Tensor::from_data(burn::tensor::TensorData::new(logits, [shape[0], classes]), &device));
        }
        self.model.forward(x, spec, &mut BnMode::Eval(stats))
    }
}

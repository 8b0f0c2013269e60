//! Latency from a per-layer table measured with usnet's own inference.
//!
//! A candidate's latency is the sum of its layers' latencies. Each layer shape (which layer,
//! its input and output channels, its input size, and the channels of a residual shortcut)
//! is timed once, on this machine, at the search's batch size and thread count, and stored
//! in `latency_table.json` beside the checkpoint. The table records the machine, the thread
//! count, the batch, the input size and the usnet version; a table that differs in any of
//! them is measured again. Shapes are measured lazily, when a candidate first needs them.
//! Timing sits behind [`LayerTimer`], so tests can count and fake it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{Cost, CostKind};
use crate::error::{Error, Result};
use crate::layers::{BnMode, BnStat, BnStatistics};
use crate::model::{ConvBn, UsNet};
use crate::width::WidthSpec;

/// The table's file name inside a run directory.
pub const FILE_NAME: &str = "latency_table.json";
const FORMAT: &str = "usnet-latency-table/1";

/// One layer as it runs at some width: the unit the table times.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LayerShape {
    /// Position in forward order: the convs (stem, blocks, head), then the classifier.
    pub index: usize,
    /// State-dict prefix of the layer.
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    /// Spatial size of the layer's input.
    pub in_hw: [usize; 2],
    /// Channels of the residual shortcut added after the layer, if any.
    pub shortcut: Option<usize>,
}

impl LayerShape {
    /// The table key, e.g. `features.3.body.0 16->96 14x14` or `... +24` with a shortcut.
    pub fn key(&self) -> String {
        let [h, w] = self.in_hw;
        let shortcut = self.shortcut.map_or(String::new(), |c| format!(" +{c}"));
        format!("{} {}->{} {h}x{w}{shortcut}", self.name, self.c_in, self.c_out)
    }
}

/// Every layer that runs at `spec` on `[h, w]` inputs, in forward order (the convs, then the
/// classifier with the pooling before it).
///
/// # Errors
///
/// As [`UsNet::plan`].
pub fn layer_shapes(model: &UsNet, spec: &WidthSpec, input_hw: [usize; 2]) -> Result<Vec<LayerShape>> {
    let plan = model.plan(spec, input_hw)?;
    let mut shortcuts = vec![None; plan.len()];
    let mut i = 1; // the stem is plan[0]
    for block in &model.blocks {
        let block_in = plan[i].c_in;
        i += if block.expand.is_some() { 3 } else { 2 };
        if block.residual {
            shortcuts[i - 1] = Some(block_in);
        }
    }
    let mut hw = input_hw;
    Ok(plan
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let shape = LayerShape { index, name: p.name.clone(), c_in: p.c_in, c_out: p.c_out, in_hw: hw, shortcut: shortcuts[index] };
            hw = p.out_hw;
            shape
        })
        .collect())
}

/// Times layers and whole networks.
pub trait LayerTimer {
    /// Seconds of one forward of the layer `shape` on a batch.
    ///
    /// # Errors
    ///
    /// A shape the model does not have.
    fn time_layer(&mut self, shape: &LayerShape) -> Result<f64>;

    /// Seconds of one forward of the whole network at `spec` on a batch.
    ///
    /// # Errors
    ///
    /// Width errors.
    fn time_network(&mut self, spec: &WidthSpec) -> Result<f64>;
}

/// What a table was measured under; a table is reused only when all of it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableContext {
    /// Host name and CPU model.
    pub machine: String,
    /// Threads of the compute pool.
    pub threads: usize,
    pub usnet_version: String,
    /// Images per forward.
    pub batch: usize,
    pub input_hw: [usize; 2],
}

impl TableContext {
    /// This machine, its compute threads and this usnet, at `batch` images of `input_hw`.
    pub fn here(batch: usize, input_hw: [usize; 2]) -> Self {
        TableContext {
            machine: machine(),
            threads: rayon::current_num_threads(),
            usnet_version: env!("CARGO_PKG_VERSION").to_string(),
            batch,
            input_hw,
        }
    }

    /// The fields in which `self` differs from `other`, as text.
    fn differences(&self, other: &TableContext) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what} {a} (table) vs {b} (now)"));
            }
        };
        diff("machine", other.machine.clone(), self.machine.clone());
        diff("threads", other.threads.to_string(), self.threads.to_string());
        diff("usnet version", other.usnet_version.clone(), self.usnet_version.clone());
        diff("batch", other.batch.to_string(), self.batch.to_string());
        diff("input size", format!("{:?}", other.input_hw), format!("{:?}", self.input_hw));
        out
    }
}

/// Host name and CPU model, to tell one machine's table from another's.
fn machine() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown-host".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{host} ({cpu})")
}

/// Seconds per layer shape, measured under [`TableContext`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    pub format: String,
    pub context: TableContext,
    /// Seconds per batch, by [`LayerShape::key`].
    pub seconds: BTreeMap<String, f64>,
}

impl LatencyTable {
    /// An empty table for `context`.
    pub fn new(context: TableContext) -> Self {
        LatencyTable { format: FORMAT.into(), context, seconds: BTreeMap::new() }
    }

    /// The table at `path` when it was measured under `context`; otherwise an empty one, with
    /// a note saying why the stored one is not reused (none when there was no file).
    pub fn open(path: &Path, context: TableContext) -> (Self, Option<String>) {
        let why_not = match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (LatencyTable::new(context), None),
            Err(e) => format!("unreadable ({e})"),
            Ok(text) => match serde_json::from_str::<LatencyTable>(&text) {
                Ok(t) if t.format != FORMAT => format!("format {:?}, expected {FORMAT:?}", t.format),
                Ok(t) if t.context != context => {
                    format!("measured under other conditions ({})", context.differences(&t.context).join(", "))
                }
                Ok(t) => return (t, None),
                Err(e) => format!("not a latency table ({e})"),
            },
        };
        let note = format!("{}: {why_not}; measuring again", path.display());
        (LatencyTable::new(context), Some(note))
    }

    /// Writes the table to `path` atomically.
    ///
    /// # Errors
    ///
    /// I/O errors naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a table serialises");
        crate::atomic_file::write_atomic(path, text.as_bytes()).map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}

/// The sum of a table's per-layer latencies against a whole-network timing.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyCheck {
    pub spec: String,
    /// Sum over the layers from the table, seconds.
    pub table_s: f64,
    /// The whole network timed end to end, seconds.
    pub measured_s: f64,
    /// `(table - measured) / measured`, percent.
    pub error_pct: f64,
}

/// Latency as a [`Cost`]: table lookups, measuring shapes the table lacks.
pub struct LatencyCost<'a> {
    model: &'a UsNet,
    pub table: LatencyTable,
    timer: Box<dyn LayerTimer + 'a>,
    /// Shapes measured by this cost (not found in the table).
    pub measured: usize,
    path: Option<PathBuf>,
}

impl<'a> LatencyCost<'a> {
    /// Costs `model`'s widths from `table`, timing missing shapes with `timer`; with `path`,
    /// [`LatencyCost::save`] writes the table there.
    pub fn new(model: &'a UsNet, table: LatencyTable, timer: Box<dyn LayerTimer + 'a>, path: Option<PathBuf>) -> Self {
        LatencyCost { model, table, timer, measured: 0, path }
    }

    /// Saves the table when it has new entries.
    ///
    /// # Errors
    ///
    /// I/O errors naming the file.
    pub fn save(&self) -> Result<()> {
        match &self.path {
            Some(p) if self.measured > 0 => self.table.save(p),
            _ => Ok(()),
        }
    }

    /// For each of `specs`, the table's sum against a whole-network timing.
    ///
    /// # Errors
    ///
    /// Width and timing errors.
    pub fn check(&mut self, specs: &[WidthSpec]) -> Result<Vec<LatencyCheck>> {
        specs
            .iter()
            .map(|spec| {
                let table_s = self.cost(spec)?;
                let measured_s = self.timer.time_network(spec)?;
                let error_pct = 100.0 * (table_s - measured_s) / measured_s;
                Ok(LatencyCheck { spec: spec.to_string(), table_s, measured_s, error_pct })
            })
            .collect()
    }
}

impl Cost for LatencyCost<'_> {
    fn kind(&self) -> CostKind {
        CostKind::Latency
    }

    fn cost(&mut self, spec: &WidthSpec) -> Result<f64> {
        let mut total = 0.0;
        for shape in layer_shapes(self.model, spec, self.table.context.input_hw)? {
            let key = shape.key();
            let s = match self.table.seconds.get(&key) {
                Some(&s) => s,
                None => {
                    let s = self.timer.time_layer(&shape)?;
                    self.table.seconds.insert(key, s);
                    self.measured += 1;
                    s
                }
            };
            total += s;
        }
        Ok(total)
    }
}

/// Times layers with usnet's own inference (the model's layers in eval mode on `device`):
/// the median of repeated runs after a warm-up, at least [`MIN_REPEATS`] of them and at
/// least [`MIN_SECONDS`] in all.
pub struct EngineTimer<'a> {
    model: &'a UsNet,
    batch: usize,
    input_hw: [usize; 2],
    device: Device,
}

/// Fewest timed runs per measurement.
pub const MIN_REPEATS: usize = 5;
/// Least total time of the timed runs per measurement, seconds.
pub const MIN_SECONDS: f64 = 0.02;
const MAX_REPEATS: usize = 200;

impl<'a> EngineTimer<'a> {
    /// Times `model` (an inference model) on batches of `batch` images of `input_hw`.
    pub fn new(model: &'a UsNet, batch: usize, input_hw: [usize; 2], device: &Device) -> Self {
        EngineTimer { model, batch: batch.max(1), input_hw, device: device.clone() }
    }

    fn input(&self, c: usize, hw: [usize; 2]) -> Tensor<4> {
        let shape = [self.batch, c, hw[0], hw[1]];
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) * 0.125).collect();
        Tensor::from_data(TensorData::new(values, shape), &self.device)
    }

    /// Statistics of unit variance for every BN layer, each with `channels[i]` entries
    /// (timing does not depend on their values).
    fn statistics(&self, channels: &[usize]) -> BnStatistics {
        let layers = channels
            .iter()
            .map(|&c| BnStat { mean: Tensor::zeros([c], &self.device), var: Tensor::ones([c], &self.device) })
            .collect();
        BnStatistics { layers }
    }
}

/// The median seconds of `f` over repeated runs after one warm-up.
fn median_time(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < MAX_REPEATS && (samples.len() < MIN_REPEATS || start.elapsed().as_secs_f64() < MIN_SECONDS) {
        let t0 = Instant::now();
        f()?;
        samples.push(t0.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

impl LayerTimer for EngineTimer<'_> {
    fn time_layer(&mut self, shape: &LayerShape) -> Result<f64> {
        let convs: Vec<&ConvBn> = self.model.conv_bn_layers().collect();
        let x = self.input(shape.c_in, shape.in_hw);
        let bad = || Error::InvalidConfig(format!("the model has no layer {} at position {}", shape.name, shape.index));
        if shape.index == convs.len() {
            if self.model.classifier.name != shape.name {
                return Err(bad());
            }
            let classifier = &self.model.classifier;
            return median_time(|| {
                let [n, c, _, _] = x.dims();
                let pooled = x.clone().mean_dims(&[2, 3]).reshape([n, c]);
                let _ = classifier.forward(pooled).into_data();
                Ok(())
            });
        }
        let layer = *convs.get(shape.index).filter(|l| l.conv.name == shape.name).ok_or_else(bad)?;
        let mut channels = vec![1; self.model.num_bn()];
        channels[layer.bn.index] = shape.c_out;
        let stats = self.statistics(&channels);
        let shortcut = shape.shortcut.map(|c| {
            let out = [layer.conv.out_size(shape.in_hw[0]), layer.conv.out_size(shape.in_hw[1])];
            self.input(c, out)
        });
        median_time(|| {
            let y = layer.conv.forward(x.clone(), shape.c_out);
            let mut y = layer.bn.forward_act(y, &mut BnMode::Eval(&stats), 0, layer.relu6);
            if let Some(s) = &shortcut {
                y = crate::model::add_first_channels(y, s.clone());
            }
            let _ = y.into_data();
            Ok(())
        })
    }

    fn time_network(&mut self, spec: &WidthSpec) -> Result<f64> {
        let stats = self.statistics(&self.model.bn_channels(spec)?);
        let x = self.input(self.model.config().input_channels, self.input_hw);
        median_time(|| {
            let _ = self.model.forward(x.clone(), spec, &mut BnMode::Eval(&stats))?.into_data();
            Ok(())
        })
    }
}

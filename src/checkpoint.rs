//! Checkpoints: one safetensors file with the weights (official state-dict names), the
//! optimizer's momentum, the BN post-statistics of each calibrated width, and, in its
//! metadata, the resolved config and the training position.
//!
//! Writes go through [`crate::atomic_file::write_atomic`] (a temporary file renamed over the
//! old one), so a crash at any moment leaves either the old checkpoint or the new one, never a
//! torn file or a stray temporary file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::{AnyTensor, BnStat, BnStatistics, RunningStats};
use crate::model::UsNet;
use crate::width::WidthSpec;

/// The format tag stored in the metadata.
pub const FORMAT: &str = "usnet-checkpoint/1";
/// The file name inside a run directory.
pub const FILE_NAME: &str = "checkpoint.safetensors";

/// Where training stands: the next batch to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Epoch of the next batch.
    pub epoch: u64,
    /// Index of the next batch within `epoch`.
    pub batch: usize,
    /// Iterations done so far.
    pub step: u64,
    /// Training has reached its last step.
    pub finished: bool,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub config: TrainConfig,
    pub state: TrainState,
    pub model: UsNet,
    /// SGD momentum buffers (flattened), by parameter name.
    pub momentum: HashMap<String, Tensor<1>>,
    /// BN post-statistics by width spec.
    pub bn_stats: Vec<(WidthSpec, BnStatistics)>,
    /// BN running statistics accumulated during training, stored under the official
    /// state-dict names (`features.0.1.running_mean`, `...bn.0.running_var` for an S-Net);
    /// `None` in checkpoints written before they were kept.
    pub running_stats: Option<RunningStats>,
    /// What [`Checkpoint::load`] had to leave out or convert, for the caller to report (empty
    /// for a checkpoint written by this version).
    pub notes: Vec<String>,
}

/// The checkpoint file of `path`: the path itself, or `checkpoint.safetensors` in it when
/// it is a directory.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() { path.join(FILE_NAME) } else { path.to_path_buf() }
}

/// The tensors of a checkpoint being serialised, as little-endian bytes, and the non-finite
/// values seen: how many, and the first tensor that holds one.
#[derive(Default)]
struct Encoded {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    non_finite: usize,
    first: Option<String>,
}

impl Encoded {
    fn add(&mut self, name: String, shape: Vec<usize>, data: TensorData) {
        let values: Vec<f32> = data.try_to_vec::<f32>().expect("parameters are f32");
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            self.non_finite += bad;
            self.first.get_or_insert_with(|| name.clone());
        }
        self.tensors.push((name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
}

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    ///
    /// [`Error::NonFinite`] without writing anything when a parameter, momentum buffer or
    /// statistic is NaN or infinite, so that a diverged run never replaces a good
    /// checkpoint; I/O errors naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut enc = Encoded::default();
        for (name, _, t) in self.model.params() {
            enc.add(name, t.shape(), t.to_data());
        }
        for (name, buf) in &self.momentum {
            enc.add(format!("optimizer.momentum.{name}"), buf.dims().to_vec(), buf.to_data());
        }
        let bn_names = self.model.bn_names();
        for (i, (_, stats)) in self.bn_stats.iter().enumerate() {
            for (name, stat) in bn_names.iter().zip(&stats.layers) {
                for (what, t) in [("running_mean", &stat.mean), ("running_var", &stat.var)] {
                    enc.add(format!("bn_stats.{i}.{name}.{what}"), t.dims().to_vec(), t.to_data());
                }
            }
        }
        if let Some(running) = &self.running_stats {
            for (name, t) in running_tensors(&self.model, running) {
                enc.add(name, t.dims().to_vec(), t.to_data());
            }
        }
        if let Some(first) = enc.first {
            return Err(Error::NonFinite { path: path.to_path_buf(), count: enc.non_finite, first });
        }
        let owned = enc.tensors;
        let views = owned
            .iter()
            .map(|(n, shape, bytes)| TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (n.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Checkpoint { path: path.into(), reason: e.to_string() })?;
        let specs: Vec<String> = self.bn_stats.iter().map(|(s, _)| s.key()).collect();
        let checksum = checksum(owned.iter().map(|(n, shape, bytes)| (n.as_str(), shape.as_slice(), bytes.as_slice())));
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("checksum".to_string(), checksum),
            ("config".to_string(), self.config.to_toml()),
            ("state".to_string(), serde_json::to_string(&self.state).expect("state serialises")),
            ("bn_specs".to_string(), serde_json::to_string(&specs).expect("specs serialise")),
        ]);
        if let Some(running) = &self.running_stats {
            metadata.insert(RUNNING_KEY.to_string(), format!("momentum {}", running.momentum));
        }
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Checkpoint { path: path.into(), reason: e.to_string() })?;
        crate::atomic_file::write_atomic(path, &bytes).map_err(io)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`] onto `device`.
    ///
    /// # Errors
    ///
    /// A missing, truncated or corrupt file, or one whose tensors do not fit its config,
    /// as [`Error::Checkpoint`] naming the file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let path = resolve(path);
        let bad = |reason: String| Error::Checkpoint { path: path.clone(), reason };
        let bytes = std::fs::read(&path).map_err(|e| open_error(&path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{NOT_A_CHECKPOINT} ({e})")))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{NOT_A_CHECKPOINT} ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if let Some(stored) = meta.get("checksum") {
            let tensors = st.tensors();
            let found = checksum(tensors.iter().map(|(n, v)| (n.as_str(), v.shape(), v.data())));
            if &found != stored {
                return Err(bad(format!(
                    "the tensor data does not match the checksum stored with it ({stored}; the data gives {found}): \
                     the file is corrupt; restore it from a copy or train again"
                )));
            }
        }
        let (config, state) = parse_meta(&path, &meta)?;
        let field = |k: &str| meta.get(k).ok_or_else(|| bad(format!("{NOT_A_CHECKPOINT}: metadata has no {k:?}")));
        let specs: Vec<String> = serde_json::from_str(field("bn_specs")?).map_err(|e| bad(format!("bn_specs: {e}")))?;

        let read = |name: &str, shape: &[usize]| -> Result<AnyTensor> {
            let view = st.tensor(name).map_err(|_| bad(format!("missing tensor {name}")))?;
            if view.shape() != shape || view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, the config's model needs F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let non_finite = values.iter().filter(|v| !v.is_finite()).count();
            if non_finite > 0 {
                return Err(bad(format!(
                    "tensor {name} holds {non_finite} NaN or infinite value(s); the file was written by a diverged run \
                     or is corrupt, and cannot be trained or evaluated"
                )));
            }
            Ok(AnyTensor::from_values(values, shape, device))
        };

        let mut model = UsNet::init(&config.model, &Init::Counter { seed: 0 }, device)?;
        model.try_map_params(&mut |name, t| read(name, &t.shape()))?;
        let mut momentum = HashMap::new();
        for (name, _, t) in model.params() {
            let key = format!("optimizer.momentum.{name}");
            if st.names().contains(&key.as_str()) {
                let n = t.shape().iter().product();
                momentum.insert(name, read(&key, &[n])?.flatten());
            }
        }
        let mut bn_stats = Vec::new();
        let bn_names = model.bn_names();
        let mut notes = Vec::new();
        for (i, key) in specs.iter().enumerate() {
            let mut spec: WidthSpec = key.parse().map_err(|e| bad(format!("bn_stats entry {key:?}: {e}")))?;
            let channels = match model.bn_channels(&spec) {
                Ok(c) => c,
                // Written before v2's head was fixed: the last entry slimmed the head. With the
                // head at full width it is the spec without that entry, if the shapes agree.
                Err(Error::FixedHead { .. }) => {
                    let mut ws = spec.widths();
                    let head = ws.pop().map_or(0.0, |w| w.get());
                    spec = WidthSpec::per_stage(ws);
                    let channels = model.bn_channels(&spec)?;
                    let last = format!("bn_stats.{i}.{}.running_mean", bn_names[bn_names.len() - 1]);
                    let fits = st.tensor(&last).is_ok_and(|v| v.shape() == [channels[channels.len() - 1]]);
                    if head != 1.0 || !fits {
                        notes.push(format!(
                            "left out the BN statistics of {key:?}: written by an older usnet whose per-stage specs \
                             slimmed v2's head, a network that no longer exists; calibrate {spec} again"
                        ));
                        continue;
                    }
                    notes.push(format!("read the BN statistics of the older per-stage spec {key:?} as {spec} (its head was at full width)"));
                    channels
                }
                Err(e) => return Err(bad(format!("bn_stats entry {key:?}: {e}"))),
            };
            let mut layers = Vec::with_capacity(bn_names.len());
            for (name, c) in bn_names.iter().zip(channels) {
                let mean = read(&format!("bn_stats.{i}.{name}.running_mean"), &[c])?.into_r1();
                let var = read(&format!("bn_stats.{i}.{name}.running_var"), &[c])?.into_r1();
                layers.push(BnStat { mean, var });
            }
            bn_stats.push((spec, BnStatistics { layers }));
        }
        let running_stats = match meta.get(RUNNING_KEY) {
            None => None,
            Some(text) => {
                let momentum: f64 = text
                    .strip_prefix("momentum ")
                    .and_then(|m| m.parse().ok())
                    .ok_or_else(|| bad(format!("metadata {RUNNING_KEY} is {text:?}, expected \"momentum M\"")))?;
                let mut running = RunningStats { momentum, ..model.new_running_stats() };
                let tensors: Vec<Tensor<1>> =
                    running_tensors(&model, &running).iter().map(|(name, t)| read(name, &t.dims()).map(AnyTensor::into_r1)).collect::<Result<_>>()?;
                // The walk order of running_tensors: mean, then var, slot by slot.
                let mut tensors = tensors.into_iter();
                for slot in running.layers.iter_mut().flatten() {
                    if let (Some(mean), Some(var)) = (tensors.next(), tensors.next()) {
                        *slot = BnStat { mean, var };
                    }
                }
                Some(running)
            }
        };
        Ok(Checkpoint { config, state, model, momentum, bn_stats, running_stats, notes })
    }
}

/// The checksum of a checkpoint's tensors, `crc32:XXXXXXXX` over each tensor's name, shape
/// and little-endian data, in name order. Stored in the metadata by [`Checkpoint::save`] and
/// checked by [`Checkpoint::load`] (files without one, written before it existed, load
/// unchecked).
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = crc32fast::Hasher::new();
    for (name, shape, data) in sorted {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        for &d in shape {
            hasher.update(&(d as u64).to_le_bytes());
        }
        hasher.update(data);
    }
    format!("crc32:{:08x}", hasher.finalize())
}

/// The metadata key that marks a checkpoint with running statistics, `momentum M`.
const RUNNING_KEY: &str = "running_stats";

/// The running statistics as named tensors, in a fixed order: per BN layer, per slot, the
/// mean then the variance, named as the official state dict names them.
fn running_tensors(model: &UsNet, running: &RunningStats) -> Vec<(String, Tensor<1>)> {
    let mut out = Vec::new();
    for (bn, slots) in model.bn_layers().into_iter().zip(&running.layers) {
        for (i, slot) in slots.iter().enumerate() {
            let prefix = if slots.len() > 1 { format!("{}.bn.{i}", bn.name) } else { bn.name.clone() };
            out.push((format!("{prefix}.running_mean"), slot.mean.clone()));
            out.push((format!("{prefix}.running_var"), slot.var.clone()));
        }
    }
    out
}

/// What a file that does not parse as a checkpoint is told.
const NOT_A_CHECKPOINT: &str = "the file is truncated or is not a usnet checkpoint";

/// The config and training position in a checkpoint's metadata.
///
/// A stored `max_steps` (written by versions before it stopped being saved) is dropped: it
/// was one invocation's early stop, and a resumed run does not inherit it.
fn parse_meta(path: &Path, meta: &HashMap<String, String>) -> Result<(TrainConfig, TrainState)> {
    let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!("{NOT_A_CHECKPOINT}: metadata format is {:?}, expected {FORMAT:?}", meta.get("format"))));
    }
    let field = |k: &str| meta.get(k).ok_or_else(|| bad(format!("{NOT_A_CHECKPOINT}: metadata has no {k:?}")));
    let config = TrainConfig { max_steps: 0, ..TrainConfig::from_toml(field("config")?, &format!("config stored in {}", path.display()))? };
    let state: TrainState = serde_json::from_str(field("state")?).map_err(|e| bad(format!("state: {e}")))?;
    Ok((config, state))
}

/// The error of a checkpoint that cannot be opened, with a hint when it does not exist.
fn open_error(path: &Path, e: std::io::Error) -> Error {
    let reason = if e.kind() == std::io::ErrorKind::NotFound {
        "no such checkpoint; train one with `usnet train --output DIR` (it writes DIR/checkpoint.safetensors)".into()
    } else {
        e.to_string()
    };
    Error::Checkpoint { path: path.to_path_buf(), reason }
}

/// The largest safetensors header [`read_meta`] reads.
const MAX_HEADER: u64 = 100 << 20;

/// The config and training position of the checkpoint at `path` (a file or run directory),
/// read from its header alone, without loading the tensors.
///
/// # Errors
///
/// As [`Checkpoint::load`] for a missing, truncated or foreign file.
pub fn read_meta(path: &Path) -> Result<(TrainConfig, TrainState)> {
    use std::io::Read;
    let path = resolve(path);
    let bad = |reason: String| Error::Checkpoint { path: path.clone(), reason };
    let mut file = std::fs::File::open(&path).map_err(|e| open_error(&path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(format!("{NOT_A_CHECKPOINT} ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(bad(format!("{NOT_A_CHECKPOINT} (a header of {len} bytes)")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|e| bad(format!("{NOT_A_CHECKPOINT} ({e})")))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header = serde_json::from_slice(&header).map_err(|e| bad(format!("{NOT_A_CHECKPOINT} ({e})")))?;
    parse_meta(&path, &header.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::calibrate;
    use crate::config::DEFAULT_CONFIG;

    #[test]
    fn round_trip_and_truncation() {
        let device = crate::device::device(None).unwrap();
        let mut ck = small_checkpoint();
        let spec: WidthSpec = "0.5".parse().unwrap();
        let x = Tensor::<4>::ones([2, 1, 28, 28], &device);
        let stats = calibrate(&ck.model, vec![x], std::slice::from_ref(&spec)).unwrap().remove(0);
        let (name, _, p) = ck.model.params().remove(3);
        let n: usize = p.shape().iter().product();
        ck.momentum = HashMap::from([(name.clone(), Tensor::<1>::ones([n], &device))]);
        ck.state = TrainState { epoch: 2, batch: 5, step: 17, finished: false };
        ck.bn_stats = vec![(spec.clone(), stats)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        ck.save(&path).unwrap();
        let back = Checkpoint::load(dir.path(), &device).unwrap();
        assert_eq!(back.state, ck.state);
        assert_eq!(back.config, ck.config);
        for ((n1, _, a), (n2, _, b)) in ck.model.params().iter().zip(back.model.params()) {
            assert_eq!(n1, &n2);
            assert_eq!(a.to_data(), b.to_data(), "{n1}");
        }
        assert_eq!(back.momentum[&name].to_data(), ck.momentum[&name].to_data());
        assert_eq!(back.bn_stats[0].0, spec);
        assert_eq!(back.bn_stats[0].1.layers[4].var.to_data(), ck.bn_stats[0].1.layers[4].var.to_data());

        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = Checkpoint::load(&path, &device).unwrap_err().to_string();
            assert!(err.contains("checkpoint.safetensors"), "cut {cut}: {err}");
        }
    }

    fn small_checkpoint() -> Checkpoint {
        let device = crate::device::device(None).unwrap();
        let config = TrainConfig::from_toml(DEFAULT_CONFIG, "default").unwrap();
        let model = UsNet::init(&config.model, &Init::Kaiming { seed: 1 }, &device).unwrap();
        Checkpoint { config, state: TrainState::default(), model, momentum: HashMap::new(), bn_stats: Vec::new(), running_stats: None, notes: Vec::new() }
    }

    #[test]
    fn non_finite_parameters_are_never_written_nor_loaded() {
        let device = crate::device::device(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut ck = small_checkpoint();
        ck.save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        ck.model.map_params(&mut |name, _, t| if name == "features.2.body.3.weight" { t.map_flat(|v| v.mul_scalar(f32::NAN)) } else { t });
        let err = ck.save(&path).unwrap_err();
        assert!(matches!(&err, Error::NonFinite { first, .. } if first == "features.2.body.3.weight"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), good, "the good checkpoint is untouched");
        // A file that holds them anyway (written by an older version, without a checksum) is refused.
        std::fs::write(&path, rewrite(&good, false, |name, v| if name == "features.0.0.weight" { v[3] = f32::NAN })).unwrap();
        let err = Checkpoint::load(&path, &device).unwrap_err().to_string();
        assert!(err.contains("NaN or infinite") && err.contains("features.0.0.weight") && err.contains("checkpoint.safetensors"), "{err}");
    }

    /// The file `bytes` re-serialised with `edit` applied to each tensor's values, keeping its
    /// checksum or (as files written before checksums) dropping it.
    fn rewrite(bytes: &[u8], keep_checksum: bool, edit: impl Fn(&str, &mut Vec<f32>)) -> Vec<u8> {
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        if !keep_checksum {
            meta.remove("checksum");
        }
        let st = SafeTensors::deserialize(bytes).unwrap();
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(name, v)| {
                let mut values: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                edit(&name, &mut values);
                (name, v.shape().to_vec(), values.iter().flat_map(|x| x.to_le_bytes()).collect())
            })
            .collect();
        let views = owned.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()));
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    #[test]
    fn a_checksum_catches_flipped_weight_bytes_and_old_files_load_unchecked() {
        let device = crate::device::device(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        small_checkpoint().save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        Checkpoint::load(&path, &device).unwrap();
        // One flipped bit in a weight (still a finite number): caught, naming the file.
        let flipped = rewrite(&good, true, |name, v| {
            if name == "features.1.body.0.weight" {
                v[0] = f32::from_bits(v[0].to_bits() ^ 1);
            }
        });
        std::fs::write(&path, &flipped).unwrap();
        let err = Checkpoint::load(&path, &device).unwrap_err().to_string();
        assert!(err.contains("checksum") && err.contains("corrupt") && err.contains("checkpoint.safetensors"), "{err}");
        // The same file without a checksum (as written before checksums) loads unchecked.
        std::fs::write(&path, rewrite(&flipped, false, |_, _| {})).unwrap();
        Checkpoint::load(&path, &device).unwrap();
    }

    #[test]
    fn running_statistics_round_trip_under_official_names() {
        let device = crate::device::device(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut ck = small_checkpoint();
        let mut running = ck.model.new_running_stats();
        let x = Tensor::<4>::ones([2, 1, 28, 28], &device).mul_scalar(3.0);
        ck.model.forward(x, &"0.5".parse().unwrap(), &mut crate::layers::BnMode::TrainTrack(&mut running)).unwrap();
        ck.running_stats = Some(running.clone());
        ck.save(&path).unwrap();
        let names: Vec<String> = SafeTensors::deserialize(&std::fs::read(&path).unwrap()).unwrap().names().iter().map(|n| n.to_string()).collect();
        assert!(names.contains(&"features.0.1.running_mean".to_string()) && names.contains(&"features.0.1.running_var".to_string()));
        let back = Checkpoint::load(&path, &device).unwrap().running_stats.expect("stored");
        assert_eq!(back.momentum, 0.1);
        for (a, b) in back.layers.iter().flatten().zip(running.layers.iter().flatten()) {
            assert_eq!(a.mean.to_data(), b.mean.to_data());
            assert_eq!(a.var.to_data(), b.var.to_data());
        }
        // A checkpoint written before running statistics were kept has none.
        small_checkpoint().save(&path).unwrap();
        assert!(Checkpoint::load(&path, &device).unwrap().running_stats.is_none());
    }

    #[test]
    fn per_stage_statistics_with_the_old_head_entry_are_converted_or_left_out() {
        let device = crate::device::device(None).unwrap();
        let mut ck = small_checkpoint();
        let spec: WidthSpec = "0.5/0.35/0.5/0.75/1".parse().unwrap();
        let x = Tensor::<4>::ones([2, 1, 28, 28], &device);
        let stats = calibrate(&ck.model, vec![x], std::slice::from_ref(&spec)).unwrap().remove(0);
        let legacy = |head: f64| {
            let mut ws = spec.widths();
            ws.push(crate::width::Width::new(head).unwrap());
            WidthSpec::PerStage(ws)
        };
        // Head at full width: the same network as the new spec. Head at 0.5: gone.
        ck.bn_stats = vec![(legacy(1.0), stats.clone()), (legacy(0.5), stats)];
        let dir = tempfile::tempdir().unwrap();
        ck.save(&dir.path().join(FILE_NAME)).unwrap();
        let back = Checkpoint::load(dir.path(), &device).unwrap();
        assert_eq!(back.bn_stats.len(), 1);
        assert_eq!(back.bn_stats[0].0, spec);
        assert_eq!(back.notes.len(), 2, "{:?}", back.notes);
        assert!(back.notes[1].contains("0.5/0.35/0.5/0.75/1/0.5") && back.notes[1].contains("calibrate"), "{:?}", back.notes);
    }
}

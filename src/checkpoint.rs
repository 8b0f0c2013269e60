//! Checkpoints: one safetensors file with the weights (official state-dict names), the
//! optimizer's momentum, the BN post-statistics of each calibrated width, and, in its
//! metadata, the resolved config and the training position.
//!
//! Writes go to a temporary file that is then renamed over the old one, so a crash at any
//! moment leaves either the old checkpoint or the new one, never a torn file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::{AnyTensor, BnStat, BnStatistics};
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
}

/// The checkpoint file of `path`: the path itself, or `checkpoint.safetensors` in it when
/// it is a directory.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() { path.join(FILE_NAME) } else { path.to_path_buf() }
}

fn f32_bytes(data: &TensorData) -> Vec<u8> {
    let values: Vec<f32> = data.try_to_vec::<f32>().expect("parameters are f32");
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, _, t) in self.model.params() {
            owned.push((name, t.shape(), f32_bytes(&t.to_data())));
        }
        for (name, buf) in &self.momentum {
            owned.push((format!("optimizer.momentum.{name}"), buf.dims().to_vec(), f32_bytes(&buf.to_data())));
        }
        let bn_names = self.model.bn_names();
        for (i, (_, stats)) in self.bn_stats.iter().enumerate() {
            for (name, stat) in bn_names.iter().zip(&stats.layers) {
                for (what, t) in [("running_mean", &stat.mean), ("running_var", &stat.var)] {
                    owned.push((format!("bn_stats.{i}.{name}.{what}"), t.dims().to_vec(), f32_bytes(&t.to_data())));
                }
            }
        }
        let views = owned
            .iter()
            .map(|(n, shape, bytes)| TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (n.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Checkpoint { path: path.into(), reason: e.to_string() })?;
        let specs: Vec<String> = self.bn_stats.iter().map(|(s, _)| s.key()).collect();
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("config".to_string(), self.config.to_toml()),
            ("state".to_string(), serde_json::to_string(&self.state).expect("state serialises")),
            ("bn_specs".to_string(), serde_json::to_string(&specs).expect("specs serialise")),
        ]);
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Checkpoint { path: path.into(), reason: e.to_string() })?;
        write_atomic(path, &bytes).map_err(io)
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
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                bad("no such checkpoint; train one with `usnet train --output DIR` (it writes DIR/checkpoint.safetensors)".into())
            } else {
                bad(e.to_string())
            }
        })?;
        let hint = "the file is truncated or is not a usnet checkpoint";
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{hint} ({e})")))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{hint} ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("{hint}: metadata format is {:?}, expected {FORMAT:?}", meta.get("format"))));
        }
        let field = |k: &str| meta.get(k).ok_or_else(|| bad(format!("{hint}: metadata has no {k:?}")));
        let config = TrainConfig::from_toml(field("config")?, &format!("config stored in {}", path.display()))?;
        let state: TrainState = serde_json::from_str(field("state")?).map_err(|e| bad(format!("state: {e}")))?;
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
            Ok(AnyTensor::from_values(values, shape, device))
        };

        let mut model = UsNet::init(&config.model, &Init::Counter { seed: 0 }, device)?;
        let mut failure = None;
        model.map_params(&mut |name, _, t| match read(name, &t.shape()) {
            Ok(loaded) => loaded,
            Err(e) => {
                failure.get_or_insert(e);
                t
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
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
        for (i, key) in specs.iter().enumerate() {
            let spec: WidthSpec = key.parse().map_err(|e| bad(format!("bn_specs entry {key:?}: {e}")))?;
            let channels = model.bn_channels(&spec)?;
            let mut layers = Vec::with_capacity(bn_names.len());
            for (name, c) in bn_names.iter().zip(channels) {
                let mean = read(&format!("bn_stats.{i}.{name}.running_mean"), &[c])?.into_r1();
                let var = read(&format!("bn_stats.{i}.{name}.running_var"), &[c])?.into_r1();
                layers.push(BnStat { mean, var });
            }
            bn_stats.push((spec, BnStatistics { layers }));
        }
        Ok(Checkpoint { config, state, model, momentum, bn_stats })
    }
}

/// Writes `bytes` to `path` through `path.tmp`, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::calibrate;
    use crate::config::DEFAULT_CONFIG;

    #[test]
    fn round_trip_and_truncation() {
        let device = crate::device::device(None).unwrap();
        let config = TrainConfig::from_toml(DEFAULT_CONFIG, "default").unwrap();
        let model = UsNet::init(&config.model, &Init::Kaiming { seed: 1 }, &device).unwrap();
        let spec: WidthSpec = "0.5".parse().unwrap();
        let x = Tensor::<4>::ones([2, 1, 28, 28], &device);
        let stats = calibrate(&model, vec![x.clone()], std::slice::from_ref(&spec)).unwrap().remove(0);
        let (name, _, p) = model.params().remove(3);
        let n: usize = p.shape().iter().product();
        let momentum = HashMap::from([(name.clone(), Tensor::<1>::ones([n], &device))]);
        let state = TrainState { epoch: 2, batch: 5, step: 17, finished: false };
        let ck = Checkpoint { config, state, model, momentum, bn_stats: vec![(spec.clone(), stats)] };
        let dir = std::env::temp_dir().join(format!("usnet-ck-{}", std::process::id()));
        let path = dir.join(FILE_NAME);
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&dir, &device).unwrap();
        assert_eq!(back.state, state);
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

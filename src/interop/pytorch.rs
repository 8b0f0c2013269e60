//! Checkpoints of the official PyTorch US-Nets (`slimmable_networks`), read with
//! `pytorch-reader`.
//!
//! The official `train.py` saves `{'model': state_dict, 'last_epoch': ..., 'optimizer': ...}`
//! with `torch.save`, the keys prefixed with `module.` by DataParallel; a bare state dict,
//! with or without the prefix, reads as well. A US batch norm stores its affine `weight` and
//! `bias` at full width and one `BatchNorm2d(affine=False)` per entry of `width_mult_list`
//! under `.bn.{i}.`; entry `i` becomes the calibrated statistics of `width_mult_list[i]`.
//! A batch norm that does not slim (v2's tail) is a plain `BatchNorm2d` whose one set of
//! statistics serves every width.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::tensor::Device;
use pytorch_reader::{DType, PytorchReader};

use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::{AnyTensor, BnStat, BnStatistics};
use crate::model::{ModelConfig, UsNet};
use crate::width::WidthSpec;

/// The stem conv's weight: the one key every US-MobileNet state dict has.
const STEM_WEIGHT: &str = "features.0.0.weight";

/// A model read from a PyTorch checkpoint, with what reading it left out.
#[derive(Debug, Clone)]
pub struct Imported {
    pub model: UsNet,
    /// The BN statistics of each width of the list, in the list's order.
    pub bn_stats: Vec<(WidthSpec, BnStatistics)>,
    /// BN layers stored as a plain `BatchNorm2d`: one set of statistics, given to every width.
    pub shared_statistics: Vec<String>,
    /// One line per kind of entry that was not imported (the optimizer state, unknown keys).
    pub ignored: Vec<String>,
}

/// Reads the official checkpoint at `path` into the US-Net of `config`, with the statistics
/// of `width_mult_list[i]` from each batch norm's `.bn.{i}.`. Nothing is returned unless every
/// tensor is present, has the model's shape and is finite.
///
/// # Errors
///
/// [`Error::Checkpoint`] naming the file for a file that is not a PyTorch checkpoint, a
/// missing tensor (its key and the shape the model needs), a tensor of another shape (its
/// key and both shapes) or type, non-finite values, or statistics for a different number of
/// widths than `width_mult_list`; [`Error::InvalidConfig`] for an S-Net config or widths
/// outside the model's range.
pub fn import_pytorch(path: &Path, config: &ModelConfig, width_mult_list: &[f64], device: &Device) -> Result<Imported> {
    let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
    if config.switchable_bn.is_some() {
        return Err(Error::InvalidConfig(
            "import reads US-Net checkpoints (mode = \"universal\"); S-Nets' switchable BN is not supported".into(),
        ));
    }
    if !path.is_file() {
        return Err(Error::Io { path: path.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file") });
    }
    let reader = PytorchReader::new(path).map_err(|e| bad(format!("not a readable PyTorch checkpoint ({e}); expected a file written by torch.save")))?;
    let tensors = reader.into_tensors();
    let (state, outside) = split_state_dict(tensors).ok_or_else(|| {
        bad(format!("no tensor named {STEM_WEIGHT} (the stem conv): not a US-MobileNet state dict"))
    })?;
    let mut model = UsNet::init(config, &Init::Counter { seed: 0 }, device)?;
    let mut used: BTreeSet<String> = BTreeSet::new();
    let read = |key: &str, shape: &[usize], used: &mut BTreeSet<String>| -> Result<Vec<f32>> {
        let t = state.get(key).ok_or_else(|| bad(format!("missing tensor {key} (the model needs shape {shape:?})")))?;
        if t.shape() != shape {
            return Err(bad(format!(
                "tensor {key} has shape {:?}, the model of the config needs {shape:?}; is --config the model this checkpoint was trained as?",
                t.shape()
            )));
        }
        let bytes = t.read().map_err(|e| bad(format!("reading tensor {key}: {e}")))?;
        let values: Vec<f32> = match t.dtype() {
            DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().expect("4 bytes"))).collect(),
            DType::F64 => bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            other => return Err(bad(format!("tensor {key} is {other:?}; expected float32 or float64"))),
        };
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            return Err(bad(format!("tensor {key} holds {non_finite} NaN or infinite value(s)")));
        }
        used.insert(key.to_string());
        Ok(values)
    };

    model.try_map_params(&mut |name, t| {
        let shape = t.shape();
        Ok(AnyTensor::from_values(read(name, &shape, &mut used)?, &shape, device))
    })?;

    let specs = width_mult_list.iter().map(|&w| model.width(w)).collect::<Result<Vec<_>>>()?;
    let bn_names = model.bn_names();
    let stored_widths = bn_names.iter().map(|n| count_switches(&state, n)).max().unwrap_or(0);
    if stored_widths > 0 && stored_widths != specs.len() {
        return Err(bad(format!(
            "its batch norms hold statistics for {stored_widths} widths (bn.0 to bn.{}), the config's width_mult_list has {} ({width_mult_list:?}); \
             give the list the model was trained with, in its order",
            stored_widths - 1,
            specs.len()
        )));
    }
    let channels = specs.iter().map(|s| model.bn_channels(s)).collect::<Result<Vec<_>>>()?;
    let mut shared_statistics = Vec::new();
    let mut layers: Vec<Vec<BnStat>> = vec![Vec::with_capacity(bn_names.len()); specs.len()];
    for (j, name) in bn_names.iter().enumerate() {
        let fixed = channels.iter().all(|c| c[j] == channels[0][j]);
        let plain = fixed && count_switches(&state, name) == 0 && state.contains_key(&format!("{name}.running_mean"));
        if plain {
            shared_statistics.push(name.clone());
        }
        for (i, c) in channels.iter().enumerate() {
            let prefix = if plain { name.clone() } else { format!("{name}.bn.{i}") };
            let mean = read(&format!("{prefix}.running_mean"), &[c[j]], &mut used)?;
            let var = read(&format!("{prefix}.running_var"), &[c[j]], &mut used)?;
            let stat = |v: Vec<f32>| AnyTensor::from_values(v, &[c[j]], device).into_r1();
            layers[i].push(BnStat { mean: stat(mean), var: stat(var) });
            used.insert(format!("{prefix}.num_batches_tracked"));
        }
    }
    let bn_stats = specs.into_iter().zip(layers).map(|(s, layers)| (s, BnStatistics { layers })).collect();

    let mut ignored = Vec::new();
    if !outside.is_empty() {
        let mut groups: BTreeMap<String, usize> = BTreeMap::new();
        for key in &outside {
            *groups.entry(key.split('.').next().unwrap_or(key).to_string()).or_default() += 1;
        }
        let list: Vec<String> = groups.iter().map(|(g, n)| format!("{g} ({n})")).collect();
        ignored.push(format!("ignored {} tensor(s) outside the model's state dict: {}", outside.len(), list.join(", ")));
    }
    let unknown: Vec<&String> = state.keys().filter(|k| !used.contains(*k)).collect();
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(5).map(|k| k.as_str()).collect();
        let more = if unknown.len() > 5 { format!(" and {} more", unknown.len() - 5) } else { String::new() };
        ignored.push(format!("ignored {} unknown state-dict entr(ies): {}{more}", unknown.len(), shown.join(", ")));
    }
    Ok(Imported { model, bn_stats, shared_statistics, ignored })
}

/// The state dict among the checkpoint's tensors, keyed without its prefix (`model.`,
/// `module.`, ...), and the keys of the tensors outside it (the optimizer's). The state dict
/// is found by its stem weight; `None` when there is none.
fn split_state_dict(tensors: HashMap<String, pytorch_reader::Tensor>) -> Option<(HashMap<String, pytorch_reader::Tensor>, Vec<String>)> {
    let prefix = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(STEM_WEIGHT))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .min_by_key(|p| p.len())?
        .to_string();
    let (inside, outside): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(key, _)| key.starts_with(&prefix));
    let state = inside.into_iter().map(|(key, t)| (key[prefix.len()..].to_string(), t)).collect();
    let mut outside: Vec<String> = outside.into_iter().map(|(key, _)| key).collect();
    outside.sort();
    Some((state, outside))
}

/// How many `.bn.{i}.running_mean` entries the batch norm `name` has.
fn count_switches(state: &HashMap<String, pytorch_reader::Tensor>, name: &str) -> usize {
    (0..).take_while(|i| state.contains_key(&format!("{name}.bn.{i}.running_mean"))).count()
}


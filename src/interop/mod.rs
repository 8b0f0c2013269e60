//! Models in and out of usnet: checkpoints of the official PyTorch code come in
//! ([`pytorch`]), one width of a model goes out as ONNX ([`onnx`]) or safetensors
//! ([`safetensors`]).
//!
//! Export starts from a [`FixedNet`] (`CalibratedModel::fixed`), so what is written is
//! exactly the network usnet evaluates at that width.

pub mod onnx;
mod onnx_proto;
pub mod pytorch;
pub mod safetensors;

use std::path::{Path, PathBuf};

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::fixed::FixedNet;

/// The file formats `export` writes, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Onnx,
    Safetensors,
}

impl ExportFormat {
    /// The format named by `path`'s extension (`.onnx`, `.safetensors`).
    ///
    /// # Errors
    ///
    /// [`Error::ExportFormat`] for any other extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("onnx") => Ok(ExportFormat::Onnx),
            Some("safetensors") => Ok(ExportFormat::Safetensors),
            _ => Err(Error::ExportFormat { path: path.to_path_buf() }),
        }
    }
}

/// What an exported file says about its input and classes, besides the network.
#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    /// `[h, w]` of the images the model was trained and evaluated on.
    pub size: [usize; 2],
    /// Per-channel normalisation: the model sees `(pixel / 255 - mean) / std`.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The dataset's name, if known.
    pub dataset: Option<String>,
    /// Class names in label order, where the dataset fixes them.
    pub class_names: Option<Vec<String>>,
}

impl InputInfo {
    /// The input of `config`'s dataset: its eval size, normalisation and class names.
    ///
    /// # Errors
    ///
    /// An unknown dataset name.
    pub fn from_config(config: &TrainConfig) -> Result<Self> {
        let kind = config.dataset_kind()?;
        let n = kind.normalize();
        let size = kind.input_size();
        Ok(InputInfo {
            size: [size, size],
            mean: n.mean,
            std: n.std,
            dataset: Some(kind.name().to_string()),
            class_names: kind.class_names().filter(|names| names.len() == config.model.num_classes),
        })
    }
}

/// The metadata written into every export (ONNX `metadata_props`, safetensors header):
/// the width, channel counts, cost, input and the usnet version, as strings (lists as JSON).
pub fn metadata(net: &FixedNet, input: &InputInfo) -> Vec<(String, String)> {
    let json = |v: serde_json::Value| v.to_string();
    let mut out = vec![
        ("format".to_string(), "usnet-export/1".to_string()),
        ("usnet_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("arch".to_string(), net.arch.name().to_string()),
        ("width_spec".to_string(), net.spec.to_string()),
        ("channels".to_string(), json(serde_json::json!(net.channel_counts()))),
        ("macs".to_string(), net.macs(input.size).to_string()),
        ("params".to_string(), net.params().to_string()),
        ("num_classes".to_string(), net.num_classes().to_string()),
        ("input_channels".to_string(), net.input_channels.to_string()),
        ("input_size".to_string(), json(serde_json::json!(input.size))),
        ("input_mean".to_string(), json(serde_json::json!(input.mean))),
        ("input_std".to_string(), json(serde_json::json!(input.std))),
        ("input_normalisation".to_string(), "(pixel / 255 - input_mean[c]) / input_std[c], NCHW".to_string()),
        ("batch_norm".to_string(), "folded into the convs (ONNX); unfolded, this width's statistics (safetensors)".to_string()),
    ];
    if let Some(d) = &input.dataset {
        out.push(("dataset".to_string(), d.clone()));
    }
    if let Some(names) = &input.class_names {
        out.push(("class_names".to_string(), json(serde_json::json!(names))));
    }
    out
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: PathBuf,
    pub format: ExportFormat,
    pub bytes: usize,
}

/// Refuses an existing `path` unless `force`.
///
/// # Errors
///
/// [`Error::OutputExists`].
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::OutputExists { path: path.to_path_buf() });
    }
    Ok(())
}

/// Writes `net` to `path` in the format its extension names, with [`metadata`], through a
/// temporary file renamed into place.
///
/// # Errors
///
/// [`Error::ExportFormat`] for an unknown extension, [`Error::OutputExists`] when `path`
/// exists and `force` is off, [`Error::Io`] when it cannot be written.
pub fn export(net: &FixedNet, input: &InputInfo, path: &Path, force: bool) -> Result<Exported> {
    let format = ExportFormat::from_path(path)?;
    check_output(path, force)?;
    let meta = metadata(net, input);
    let bytes = match format {
        ExportFormat::Onnx => onnx::to_onnx_bytes(net, input.size, &meta),
        ExportFormat::Safetensors => safetensors::to_safetensors_bytes(net, &meta)?,
    };
    crate::atomic_file::write_atomic(path, &bytes).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    Ok(Exported { path: path.to_path_buf(), format, bytes: bytes.len() })
}

//! Helpers shared by the interop tests.

use std::path::Path;

use tract_onnx::prelude::*;

/// The first output of the ONNX model at `path` run in tract on `x` of `shape`.
pub fn tract_run(path: &Path, x: &[f32], shape: &[usize]) -> Vec<f32> {
    let model = tract_onnx::onnx().model_for_path(path).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let input = Tensor::from_shape(shape, x).unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

/// A fresh empty directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("usnet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

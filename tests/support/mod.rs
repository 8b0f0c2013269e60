//! Helpers shared by the integration tests (each test crate uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tract_onnx::prelude::*;

/// The first output of the ONNX model at `path` run in tract on `x` of `shape`.
pub fn tract_run(path: &Path, x: &[f32], shape: &[usize]) -> Vec<f32> {
    let model = tract_onnx::onnx().model_for_path(path).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let input = Tensor::from_shape(shape, x).unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

/// Debian's `dataset-fashion-mnist`, which `scripts/test.sh` installs.
pub const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// The real `usnet` binary run with `args`.
pub fn usnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_usnet")).args(args).output().expect("the binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", stderr(o));
}

/// A failure: non-zero exit, no panic, and a message containing every `needle`.
pub fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// The default config on 256 Fashion-MNIST images in batches of 32 (8 iterations an epoch),
/// 200 held out for validation, 128 test images, with `extra` TOML lines; written into `dir`.
pub fn small_config(dir: &Path, extra: &str) -> PathBuf {
    assert!(
        Path::new(FASHION).join("train-images-idx3-ubyte.gz").exists(),
        "these tests need Fashion-MNIST: apt-get install dataset-fashion-mnist"
    );
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/fashion_mnist_us_v2.toml")).unwrap();
    let text = base
        .replace("batch_size = 128", "batch_size = 32")
        .replace("validation_size = 5000", "validation_size = 200")
        .replace("data_loader_workers = 1", &format!("data_loader_workers = 1\ntrain_subset = 256\ntest_subset = 128\n{extra}"));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh empty directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usnet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

//! End-to-end runs of the real `usnet` binary.
//!
//! Tests marked `#[ignore = "heavy: ..."]` train on real Fashion-MNIST (a small subset);
//! CI runs them with `--include-ignored`. They need Debian's `dataset-fashion-mnist`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

fn usnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_usnet")).args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A failure: non-zero exit, no panic, and a message containing every `needle`.
fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usnet-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The default config on a small subset of Fashion-MNIST.
fn small_config(dir: &Path, extra: &str) -> PathBuf {
    assert!(
        Path::new(FASHION).join("train-images-idx3-ubyte.gz").exists(),
        "these tests need Fashion-MNIST: apt-get install dataset-fashion-mnist"
    );
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/fashion_mnist_us_v2.toml")).unwrap();
    let text = base
        .replace("batch_size = 128", "batch_size = 32")
        .replace("data_loader_workers = 1", &format!("data_loader_workers = 1\ntrain_subset = 256\ntest_subset = 128\n{extra}"));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn profile_prints_official_macs_and_rejects_bad_input() {
    let o = usnet(&["profile", "--arch", "us_mobilenet_v2", "--input-size", "224", "--widths", "1.0,0.35", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // MobileNet v2 1.0x: 300.77M MACs, 3.47M params; 0.35x: 59.29M (the published 300M and 59M).
    assert_eq!(rows[0]["macs"], 300_774_272u64);
    assert_eq!(rows[0]["params"], 3_470_760u64);
    assert_eq!(rows[1]["macs"], 59_285_808u64);
    let o = usnet(&["profile", "--arch", "us_mobilenet_v1", "--widths", "1.0"]);
    assert!(stdout(&o).contains("568.74M"), "{}", stdout(&o));

    assert_clean_failure(&usnet(&["profile", "--arch", "resnet"]), &["unknown arch"]);
    assert_clean_failure(&usnet(&["profile", "--widths", "0.2"]), &["outside the model's width range"]);
    assert_clean_failure(&usnet(&["profile", "--widths", "0.5,abc"]), &["abc"]);
    for o in [usnet(&["profile", "--widths", "0.2"]), usnet(&["profile", "--widths", "0.5,abc"])] {
        assert_eq!(stderr(&o).trim().lines().count(), 1, "one-line error: {}", stderr(&o));
    }
}

#[test]
fn bad_configs_and_checkpoints_fail_clearly() {
    let dir = temp_dir("bad");
    let cfg = dir.join("typo.toml");
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/fashion_mnist_us_v2.toml")).unwrap();
    std::fs::write(&cfg, format!("soft_target = true\n{base}")).unwrap();
    let out = dir.join("run");
    assert_clean_failure(&usnet(&["train", "--config", cfg.to_str().unwrap(), "--output", out.to_str().unwrap()]), &["soft_target", "typo.toml"]);

    std::fs::write(&cfg, base.replace("width_mult_list = [", "width_mult_list = [0.2, ")).unwrap();
    assert_clean_failure(&usnet(&["train", "--config", cfg.to_str().unwrap(), "--output", out.to_str().unwrap()]), &["0.2", "range"]);

    let missing = dir.join("nowhere");
    assert_clean_failure(
        &usnet(&["train", "--data-dir", missing.to_str().unwrap(), "--output", out.to_str().unwrap()]),
        &["nowhere", "dataset-fashion-mnist"],
    );

    assert_clean_failure(&usnet(&["train", "--output", out.to_str().unwrap(), "--resume"]), &["--resume", "checkpoint"]);

    let trunc = dir.join("truncated.safetensors");
    std::fs::write(&trunc, b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    assert_clean_failure(&usnet(&["eval", "--checkpoint", trunc.to_str().unwrap()]), &["truncated.safetensors", "truncated"]);
    assert_clean_failure(&usnet(&["calibrate", "--checkpoint", dir.join("none.safetensors").to_str().unwrap()]), &["none.safetensors"]);
}

#[test]
fn corrupt_idx_file_is_named() {
    let dir = temp_dir("idx");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::write(data.join(f), b"\x00\x00\x08\x03\x00\x00\x00\x05garbage").unwrap();
    }
    let o = usnet(&["train", "--data-dir", data.to_str().unwrap(), "--output", dir.join("run").to_str().unwrap()]);
    assert_clean_failure(&o, &["train-images-idx3-ubyte"]);
}

#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset"]
fn train_calibrate_eval_on_fashion_mnist() {
    let dir = temp_dir("e2e");
    let cfg = small_config(&dir, "");
    let run = dir.join("run");
    let (cfg, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    let o = usnet(&["train", "--config", cfg, "--max-steps", "6", "--output", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    // A second fresh run into the same directory would overwrite it: refused.
    assert_clean_failure(&usnet(&["train", "--config", cfg, "--max-steps", "6", "--output", run_s]), &["--resume"]);
    // Resuming without --config continues with the run's own config (not the default's).
    let o = usnet(&["train", "--output", run_s, "--resume", "--max-steps", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count(), 8);
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("train_subset = 256") && resolved.contains("batch_size = 32"), "{resolved}");

    let o = usnet(&["calibrate", "--checkpoint", run_s, "--widths", "1.0,0.5,0.35", "--batches", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = dir.join("eval.json");
    let plot = dir.join("eval.png");
    let o = usnet(&["eval", "--checkpoint", run_s, "--widths", "1.0,0.5,0.42", "--json", json.to_str().unwrap(), "--plot", plot.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("calibrating on demand"), "0.42 was not calibrated: {}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["calibrated_on_demand"], true);
    assert_eq!(rows[0]["calibrated_on_demand"], false);
    for r in rows {
        let top1 = r["top1"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&top1));
        assert_eq!(r["samples"], 128);
    }
    assert!(rows[0]["macs"].as_u64().unwrap() > rows[1]["macs"].as_u64().unwrap());
    let png = std::fs::read(&plot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_clean_failure(&usnet(&["eval", "--checkpoint", run_s, "--widths", "0.2"]), &["0.2", "range"]);
}

fn losses_by_step(run: &Path) -> Vec<(u64, Vec<f64>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let losses = v["losses"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect();
            (v["step"].as_u64().unwrap(), losses)
        })
        .collect()
}

#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset, twice"]
fn sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run() {
    let dir = temp_dir("kill");
    let cfg = small_config(&dir, "");
    let cfg = cfg.to_str().unwrap();
    // 256 images in batches of 32: 8 steps an epoch, 3 epochs.
    let whole = dir.join("whole");
    let o = usnet(&["train", "--config", cfg, "--epochs", "3", "--output", whole.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_usnet"))
        .args(["train", "--config", cfg, "--epochs", "3", "--output", killed.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until step 11 (mid-epoch 2, after the epoch-1 checkpoint), then SIGKILL.
    let start = Instant::now();
    loop {
        let steps = std::fs::read_to_string(killed.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
        if steps >= 11 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "training made no progress");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = usnet(&["train", "--config", cfg, "--epochs", "3", "--output", killed.to_str().unwrap(), "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let (a, b) = (losses_by_step(&whole), losses_by_step(&killed));
    let steps: Vec<u64> = b.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, (1..=24).collect::<Vec<_>>(), "each step exactly once");
    for ((s, la), (_, lb)) in a.iter().zip(&b) {
        for (x, y) in la.iter().zip(lb) {
            assert!((x - y).abs() <= 1e-3 * (1.0 + x.abs()), "step {s}: {la:?} vs {lb:?}");
        }
    }
}

//! End-to-end runs of the real `usnet` binary.
//!
//! Tests marked `#[ignore = "heavy: ..."]` train on real Fashion-MNIST (a small subset);
//! CI runs them with `--include-ignored`. They need Debian's `dataset-fashion-mnist`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use support::{assert_clean_failure, small_config, stderr, stdout, temp_dir, usnet};

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
    // Sizes nobody checked: refused before anything is allocated, with the limit.
    assert_clean_failure(&usnet(&["profile", "--widths", "0.35:1.0:1e-300"]), &["at most 1000"]);
    assert_clean_failure(&usnet(&["profile", "--num-classes", "1000000000"]), &["num_classes", "at most"]);
    assert_clean_failure(&usnet(&["profile", "--num-classes", "1000000"]), &["parameters", "at most 100000000"]);
    assert_clean_failure(&usnet(&["profile", "--input-size", "100000000"]), &["input size"]);
    let o = usnet(&["profile", "--widths", "0.5,0.51,1.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("0.51 into 0.5"), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().filter(|l| l.trim_end().ends_with('M')).count(), 2, "{}", stdout(&o));
    for o in [usnet(&["profile", "--widths", "0.2"]), usnet(&["profile", "--widths", "0.5,abc"])] {
        assert_eq!(stderr(&o).trim().lines().count(), 1, "one-line error: {}", stderr(&o));
    }
}

#[test]
fn bench_scaling_splits_each_burst_into_after_idle_back_to_back_and_steady() {
    // usnet's side alone (no Python): 2 rounds of bursts of 6 calls per width.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.json");
    let o = usnet(&["bench", "--workloads", "scaling/b1", "--skip-torch", "--skip-ort", "--warmup", "0", "--scaling-repeats", "2", "--scaling-burst", "6", "--settle-ms", "1", "--output", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let row = &summary["workloads"][0];
    assert_eq!((row["burst"].as_u64(), row["back_to_back_calls"].as_u64()), (Some(6), Some(3)), "{row}");
    let widths = row["scaling"]["usnet"].as_array().unwrap();
    assert_eq!(widths.len(), 4);
    for w in widths {
        for key in ["samples_s", "warm_samples_s", "steady_samples_s"] {
            assert_eq!(w[key].as_array().map(Vec::len), Some(2), "{key} of {w}");
        }
        // Per burst of 6: call 1, the median of calls 2-4 (--burst 4) and of calls 5-6.
        let values = |key: &str| -> Vec<f64> { w[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
        let (first, warm, steady) = (values("samples_s"), values("warm_samples_s"), values("steady_samples_s"));
        let bursts = w["burst_samples_s"].as_array().unwrap();
        assert_eq!(bursts.len(), 2, "{w}");
        for (r, calls) in bursts.iter().enumerate() {
            let mut c: Vec<f64> = calls.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(c.len(), 6, "{w}");
            assert_eq!(first[r], c[0], "{w}");
            c[1..4].sort_by(f64::total_cmp);
            assert_eq!(warm[r], c[2], "{w}");
            assert!((steady[r] - (c[4] + c[5]) / 2.0).abs() < 1e-15, "{w}");
        }
        // The surcharge is the first call minus the steady median of the same burst.
        let mut surcharge: Vec<f64> = first.iter().zip(&steady).map(|(a, b)| a - b).collect();
        surcharge.sort_by(f64::total_cmp);
        let median = w["surcharge_spread_s"]["median"].as_f64().unwrap();
        assert!((median - (surcharge[0] + surcharge[1]) / 2.0).abs() < 1e-12, "{w}");
        assert!(w["steady"]["spread"]["median"].as_f64().unwrap() > 0.0, "{w}");
    }
    assert!(widths[2]["steady"]["met"].is_boolean(), "w0.5 has a bound: {}", widths[2]);
    let md = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert!(md.contains("| usnet steady | met |") && md.contains("usnet surcharge ms"), "{md}");
}

#[test]
fn bench_worker_answers_bad_commands_and_refuses_bad_workloads() {
    use std::io::Write;
    use std::process::Stdio;
    // The worker of `usnet bench`: a wrong part or command gets a JSON error, and it goes on.
    let mut child = Command::new(env!("CARGO_BIN_EXE_usnet"))
        .args(["bench", "--serve", "scaling/b1", "--warmup", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"run 4\nrun x\nrun 1 2\nfly\nrun 3\nquit\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "{}", stdout(&o));
    assert_eq!(lines[0]["parts"], serde_json::json!(["w1.0", "w0.75", "w0.5", "w0.35"]));
    for bad in &lines[1..5] {
        assert!(bad["error"].as_str().unwrap().contains("expected run, run K (K < 4)"), "{bad}");
    }
    assert!(lines[5]["s"].as_f64().unwrap() > 0.0, "{}", lines[5]);

    for name in ["scaling", "scaling/b0", "scaling/bx", "infer/b1"] {
        assert_clean_failure(&usnet(&["bench", "--serve", name]), &["unknown workload", "scaling/bN"]);
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

    // Nonsense numbers stop the run before anything is written (they used to wrap to 0 epochs
    // and exit 0 with an untrained checkpoint marked finished).
    for epochs in ["0", "9223372036854775808"] {
        assert_clean_failure(&usnet(&["train", "--epochs", epochs, "--output", out.to_str().unwrap()]), &["num_epochs", epochs]);
    }
    std::fs::write(&cfg, base.replace("warmup_epochs = 0.1", "warmup_epochs = inf")).unwrap();
    assert_clean_failure(&usnet(&["train", "--config", cfg.to_str().unwrap(), "--output", out.to_str().unwrap()]), &["warmup_epochs", "typo.toml"]);
    assert!(!out.exists(), "a rejected run writes nothing");
    let ghost_out = dir.join("ghost");
    let ghost = |n: &str| usnet(&["train", "--batch-size", "4", "--ghost-batches", n, "--output", ghost_out.to_str().unwrap()]);
    assert_clean_failure(&ghost("8"), &["batch_size 4", "8 ghost batch", "at least 8"]);
    assert_clean_failure(&ghost("0"), &["--ghost-batches"]);

    let missing = dir.join("nowhere");
    assert_clean_failure(
        &usnet(&["train", "--data-dir", missing.to_str().unwrap(), "--output", out.to_str().unwrap()]),
        &["nowhere", "dataset-fashion-mnist"],
    );

    assert_clean_failure(&usnet(&["train", "--output", out.to_str().unwrap(), "--resume"]), &["--resume", "checkpoint"]);

    // An I/O error is said once, not "path: reason: reason".
    let o = usnet(&["train", "--config", dir.join("none.toml").to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert_clean_failure(&o, &["none.toml", "No such file"]);
    assert_eq!(stderr(&o).matches("No such file").count(), 1, "{}", stderr(&o));

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

/// A run directory's logs as `usnet train` writes them: `epochs` epochs of `steps` steps,
/// validation at widths 1 and 0.35 after each epoch.
fn fake_run(dir: &Path, epochs: u64, steps: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let (mut metrics, mut validation) = (String::new(), String::new());
    for s in 1..=epochs * steps {
        let loss = 2.3 / (1.0 + s as f64 / 20.0);
        metrics += &format!(
            "{{\"step\":{s},\"total_steps\":{},\"epoch\":{},\"lr\":{},\"losses\":[[\"1.000\",{loss}],[\"0.350\",{}]],\"images_per_sec\":100.0,\"elapsed\":1.0}}\n",
            epochs * steps,
            (s - 1) / steps,
            0.1 * (1.0 - s as f64 / (epochs * steps) as f64),
            loss * 1.1
        );
    }
    for e in 1..=epochs {
        for (w, top1) in [("1", 80.0 + e as f64), ("0.35", 75.0 + e as f64)] {
            validation += &format!("{{\"step\":{},\"epoch\":{e},\"width\":\"{w}\",\"top1\":{top1},\"top5\":99.0,\"samples\":200}}\n", e * steps);
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    std::fs::write(dir.join("validation.jsonl"), validation).unwrap();
}

#[test]
fn plot_accuracy_and_curves_draw_charts_and_name_bad_files() {
    let dir = temp_dir("plot");
    let (us, fixed) = (dir.join("us"), dir.join("fixed_05"));
    fake_run(&us, 3, 40);
    fake_run(&fixed, 3, 40);
    let rows = |label: &str, pts: &[(f64, u64, f64, bool)]| {
        let rows: Vec<serde_json::Value> = pts
            .iter()
            .map(|&(w, macs, top1, od)| serde_json::json!({"label": label, "width": w.to_string(), "macs": macs, "top1": top1, "calibrated_on_demand": od}))
            .collect();
        serde_json::to_string(&rows).unwrap()
    };
    std::fs::write(us.join("test.json"), rows("us", &[(1.0, 2_000_000, 91.0, false), (0.5, 600_000, 88.0, false), (0.42, 450_000, 87.0, true)])).unwrap();
    std::fs::write(fixed.join("test.json"), rows("fixed_05", &[(0.5, 600_000, 88.5, false)])).unwrap();
    let acc = dir.join("acc.png");
    let (us_json, fixed_json) = (us.join("test.json"), fixed.join("test.json"));
    let o = usnet(&["plot", "accuracy", "--output", acc.to_str().unwrap(), "--title", "Test top-1", us_json.to_str().unwrap(), &format!("{}=0.5x alone", fixed_json.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&acc).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), usnet::plot::size(1));
    // Both curves' colours (the first two of the palette) are drawn.
    for c in [[0x1f, 0x77, 0xb4], [0xff, 0x7f, 0x0e]] {
        assert!(img.pixels().any(|p| p.0 == c), "colour {c:?} missing");
    }
    let svg = dir.join("acc.svg");
    let o = usnet(&["plot", "accuracy", "-o", svg.to_str().unwrap(), us_json.to_str().unwrap(), &format!("{}=0.5x alone", fixed_json.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains(">\nus\n</text>") && text.contains("0.5x alone") && text.contains("hollow"), "{text}");

    let curves = dir.join("curves.png");
    let o = usnet(&["curves", "--output", curves.to_str().unwrap(), "--run", us.to_str().unwrap(), "--run", fixed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image::open(&curves).unwrap().to_rgb8().dimensions(), usnet::plot::size(3));

    // Bad input: a clear error naming the file, no panic, nothing written.
    let out = dir.join("never.png");
    let o = usnet(&["curves", "--output", out.to_str().unwrap(), "--run", dir.join("nowhere").to_str().unwrap()]);
    assert_clean_failure(&o, &["nowhere", "run directory"]);
    std::fs::write(dir.join("bad.json"), "{\"width\": 1}").unwrap();
    let o = usnet(&["plot", "accuracy", "--output", out.to_str().unwrap(), dir.join("bad.json").to_str().unwrap()]);
    assert_clean_failure(&o, &["bad.json", "usnet eval --json"]);
    std::fs::write(us.join("metrics.jsonl"), "{\"step\": 1, \"lr\": \"high\"}\n").unwrap();
    let o = usnet(&["curves", "--output", out.to_str().unwrap(), "--run", us.to_str().unwrap()]);
    assert_clean_failure(&o, &["metrics.jsonl", "line 1"]);
    let o = usnet(&["plot", "accuracy", "--output", dir.join("acc.gif").to_str().unwrap(), us_json.to_str().unwrap()]);
    assert_clean_failure(&o, &["acc.gif", ".png or .svg"]);
    assert!(!out.exists());
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

    // A full disk (a file size limit stands in for it): the write fails with a clear error,
    // the checkpoint stays as it was, and no temporary file is left to hold the space.
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let full = Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_usnet")])
        .args(["calibrate", "--checkpoint", run_s, "--widths", "1.0", "--batches", "1"])
        .output()
        .unwrap();
    assert_clean_failure(&full, &["checkpoint.safetensors"]);
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), before);
    let leftovers: Vec<String> = std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let o = usnet(&["calibrate", "--checkpoint", run_s, "--widths", "1.0,0.5,0.35", "--batches", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = dir.join("eval.json");
    let plot = dir.join("eval.png");
    let o = usnet(&["eval", "--checkpoint", run_s, "--widths", "1.0,0.5,0.42", "--json", json.to_str().unwrap(), "--plot", plot.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("0.42; calibrated on demand"), "0.42 was not calibrated: {}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["calibrated_on_demand"], true);
    assert_eq!(rows[0]["calibrated_on_demand"], false);
    for r in rows {
        // Finite logits on every image, and accuracies that are counts of 128 images: a NaN
        // model (scored 100% before) or a broken count fails here.
        let (top1, top5) = (r["top1"].as_f64().unwrap(), r["top5"].as_f64().unwrap());
        assert_eq!(r["non_finite"], 0, "{r}");
        assert_eq!(r["samples"], 128);
        assert!(0.0 < top1 && top1 <= top5 && top5 <= 100.0, "{r}");
        for pct in [top1, top5] {
            let hits = pct * 128.0 / 100.0;
            assert!((hits - hits.round()).abs() < 1e-6, "{pct}% is not a count of 128 images");
        }
    }
    assert!(rows[0]["macs"].as_u64().unwrap() > rows[1]["macs"].as_u64().unwrap());
    // The plot is a real image with something drawn on it, not just a PNG header.
    let img = image::open(&plot).unwrap_or_else(|e| panic!("{}: {e}", plot.display())).to_rgb8();
    assert!(img.width() >= 200 && img.height() >= 150, "{}x{}", img.width(), img.height());
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() >= 3, "a plot of {} colour(s)", colours.len());
    assert_clean_failure(&usnet(&["eval", "--checkpoint", run_s, "--widths", "0.2"]), &["0.2", "range"]);

    // The eval JSON and the run directory draw as charts (the interface of
    // scripts/results_report.py), PNG or SVG by extension.
    let acc = dir.join("acc.png");
    let o = usnet(&["plot", "accuracy", "--output", acc.to_str().unwrap(), "--title", "t", &format!("{}=US-Net", json.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let curves = dir.join("curves.svg");
    let o = usnet(&["curves", "--output", curves.to_str().unwrap(), "--run", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&curves).unwrap();
    assert!(svg.contains("<svg") && svg.contains("Training loss") && svg.contains("run"), "{}", &svg[..300.min(svg.len())]);

    // A run directory where the default plot cannot be written (root ignores permission
    // bits, so a directory stands in the plot's place): the results still come, with a note.
    std::fs::create_dir_all(run.join("eval.png").join("taken")).unwrap();
    let o = usnet(&["eval", "--checkpoint", run_s, "--widths", "1.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 ") && stderr(&o).contains("no plot written") && stderr(&o).contains("--plot"), "{}", stderr(&o));
    let o = usnet(&["eval", "--checkpoint", run_s, "--widths", "1.0", "--plot", run.join("eval.png").to_str().unwrap()]);
    assert_clean_failure(&o, &["writing the plot"]);

    // The three sources of BN statistics; the old flag says where it went.
    for source in ["shared-max", "running"] {
        let json = dir.join(format!("{source}.json"));
        let o = usnet(&["eval", "--checkpoint", run_s, "--widths", "1.0,0.5", "--bn-stats", source, "--json", json.to_str().unwrap(), "--plot", plot.to_str().unwrap()]);
        assert!(o.status.success(), "{source}: {}", stderr(&o));
        let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(rows.as_array().unwrap().iter().all(|r| r["bn_stats"] == source && r["non_finite"] == 0), "{rows}");
    }
    assert_clean_failure(&usnet(&["eval", "--checkpoint", run_s, "--no-calibration"]), &["--bn-stats shared-max", "--bn-stats running"]);
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

/// `(step, lr)` of every line of a run's metrics.
fn lrs(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["lr"].as_f64().unwrap())
        })
        .collect()
}

#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset"]
fn max_steps_stops_early_on_the_full_schedule_and_resume_follows_one_policy() {
    let dir = temp_dir("schedule");
    let cfg = small_config(&dir, "");
    let run = dir.join("run");
    let (cfg, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    // 256 images in batches of 32: 8 steps an epoch, 2 epochs, warm-up round(0.1 * 8) = 1 step.
    let lr = |step: u64| if step == 0 { 0.1 } else { 0.1 * (1.0 - (step - 1) as f64 / 15.0) };
    let o = usnet(&["train", "--config", cfg, "--max-steps", "3", "--output", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped at step 3") && stderr(&o).contains("--resume"), "{}", stderr(&o));
    // The LR is the start of the 16-step schedule, not a schedule squeezed into 3 steps.
    for (step, got) in lrs(&run) {
        assert!((got - lr(step - 1)).abs() < 1e-12, "step {step}: lr {got}, want {}", lr(step - 1));
    }
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(!saved.contains("max_steps"), "the stop is not part of the run: {saved}");

    // Resuming without --max-steps trains to the end of the schedule, LR continuous.
    let o = usnet(&["train", "--output", run_s, "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = lrs(&run);
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
    for (step, got) in all {
        assert!((got - lr(step - 1)).abs() < 1e-12, "step {step}: lr {got}, want {}", lr(step - 1));
    }

    // A finished, calibrated run: resuming is a no-op that says so and keeps every byte.
    let o = usnet(&["calibrate", "--checkpoint", run_s, "--widths", "1.0,0.5", "--batches", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let o = usnet(&["train", "--output", run_s, "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("finished at step 16; nothing to train"), "{}", stderr(&o));
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), before, "the stored statistics survive");

    // A changed schedule is refused unless forced; other settings are ignored, and said so.
    assert_clean_failure(&usnet(&["train", "--output", run_s, "--resume", "--epochs", "3"]), &["num_epochs 2 -> 3", "--force"]);
    assert_clean_failure(&usnet(&["train", "--output", run_s, "--resume", "--batch-size", "16"]), &["batch_size 32 -> 16"]);
    let other = dir.join("other.toml");
    std::fs::write(&other, std::fs::read_to_string(cfg).unwrap().replace("random_seed = 1995", "random_seed = 7")).unwrap();
    let o = usnet(&["train", "--config", other.to_str().unwrap(), "--output", run_s, "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("ignored random_seed = 7"), "{}", stderr(&o));
    let o = usnet(&["train", "--output", run_s, "--resume", "--epochs", "3", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("num_epochs = 3 replaces the run's 2") && stderr(&o).contains("calibrate"), "{}", stderr(&o));
    assert_eq!(lrs(&run).len(), 24);
}

#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset"]
fn a_second_writer_is_refused_and_ctrl_c_saves_then_exits_130() {
    let dir = temp_dir("sigint");
    let cfg = small_config(&dir, "");
    let run = dir.join("run");
    let (cfg, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_usnet"))
        .args(["train", "--config", cfg, "--epochs", "50", "--output", run_s])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0) < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "training made no progress");
        assert!(child.try_wait().unwrap().is_none(), "training ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second writer of the same directory is refused at once, naming the first.
    let pid = format!("pid {}", child.id());
    assert_clean_failure(&usnet(&["train", "--config", cfg, "--output", run_s, "--resume"]), &["in use by another usnet process", &pid]);
    assert_clean_failure(&usnet(&["calibrate", "--checkpoint", run_s]), &["in use by another usnet process", &pid]);

    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at step") && err.contains(&format!("usnet train --output {run_s} --resume")), "{err}");
    // The checkpoint holds every step the metrics logged.
    let steps = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count();
    let o = usnet(&["train", "--output", run_s, "--resume", "--max-steps", &steps.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("stopped at step {steps}")), "nothing lost, nothing repeated: {}", stderr(&o));
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count(), steps);
}

#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset"]
fn a_diverging_run_never_overwrites_its_last_good_checkpoint() {
    let dir = temp_dir("diverge");
    let cfg = small_config(&dir, "");
    let run = dir.join("run");
    let (cfg_s, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    let o = usnet(&["train", "--config", cfg_s, "--max-steps", "7", "--output", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let good = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    // The next step makes every parameter infinite; its loss was still finite, so only the
    // epoch-end save right after it can catch it.
    let wild = dir.join("wild.toml");
    std::fs::write(&wild, std::fs::read_to_string(&cfg).unwrap().replace("lr = 0.1", "lr = 1e39")).unwrap();
    let o = usnet(&["train", "--config", wild.to_str().unwrap(), "--output", run_s, "--resume", "--force"]);
    assert_clean_failure(&o, &["diverged", "after step 8", "keeps the last good checkpoint (step 7)", "lower the learning rate"]);
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), good);
    let leftovers: Vec<_> = std::fs::read_dir(&run).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The good checkpoint still resumes.
    let o = usnet(&["train", "--output", run_s, "--resume", "--max-steps", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A non-finite loss names the step as progress counts it (from 1): step 1 ran and was
    // logged, step 2's loss is NaN.
    let fresh = dir.join("fresh");
    let o = usnet(&["train", "--config", wild.to_str().unwrap(), "--output", fresh.to_str().unwrap(), "--max-steps", "5"]);
    assert_clean_failure(&o, &["at step 2", "lower the learning rate"]);
    assert_eq!(std::fs::read_to_string(fresh.join("metrics.jsonl")).unwrap().lines().count(), 1);
}

#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset, twice"]
fn snet_and_nonuniform_training_run_end_to_end() {
    let dir = temp_dir("modes");
    let base = std::fs::read_to_string(small_config(&dir, "")).unwrap();
    // An S-Net: its four widths every step, widest first; eval at its widths only.
    let snet = dir.join("snet.toml");
    std::fs::write(&snet, base.replace("mode = \"universal\"", "mode = \"slimmable\"").replace(
        "width_mult_list = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35]",
        "width_mult_list = [1.0, 0.75, 0.5, 0.35]",
    ))
    .unwrap();
    let run = dir.join("snet");
    let run_s = run.to_str().unwrap();
    let o = usnet(&["train", "--config", snet.to_str().unwrap(), "--max-steps", "3", "--output", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let widths: Vec<Vec<String>> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["losses"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap().to_string()).collect()
        })
        .collect();
    assert_eq!(widths.len(), 3);
    assert!(widths.iter().all(|w| w == &["1.000", "0.750", "0.500", "0.350"]), "{widths:?}");
    let o = usnet(&["eval", "--checkpoint", run_s, "--widths", "grid", "--bn-stats", "running"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean_failure(&usnet(&["eval", "--checkpoint", run_s, "--widths", "0.6"]), &["switchable BN", "0.6"]);

    // Non-uniform: the random widths are per stage (5 entries: stem and 4 rows), the ends uniform.
    let nonuniform = dir.join("nonuniform.toml");
    std::fs::write(&nonuniform, base.replace("nonuniform = false", "nonuniform = true")).unwrap();
    let run = dir.join("nonuniform");
    let run_s = run.to_str().unwrap();
    let o = usnet(&["train", "--config", nonuniform.to_str().unwrap(), "--max-steps", "3", "--output", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    for line in std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let w: Vec<&str> = v["losses"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
        assert_eq!(&w[..2], ["1.000", "0.350"], "{w:?}");
        assert!(w[2..].iter().all(|s| s.split('/').count() == 5), "{w:?}");
    }
    let o = usnet(&["eval", "--checkpoint", run_s, "--widths", "1.0,0.5/0.35/0.5/0.75/1.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn search_rejects_bad_input_clearly() {
    for (args, needles) in [
        (vec!["--budget", "flops=1M"], vec!["invalid budget", "macs=150M"]),
        (vec!["--budget", "macs=-3"], vec!["invalid budget", "positive"]),
        (vec!["--budget", "latency=5"], vec!["invalid budget", "no unit"]),
        (vec!["--budget", "macs=1M", "--time-limit", "soon"], vec!["not a duration"]),
        (vec!["--budget", "macs=1M", "--strategy", "random"], vec!["random"]),
    ] {
        let mut all = vec!["search", "--checkpoint", "/nonexistent/run"];
        all.extend(args);
        assert_clean_failure(&usnet(&all), &needles);
    }
    assert_clean_failure(&usnet(&["search", "--checkpoint", "/nonexistent/run", "--budget", "macs=1M"]), &["/nonexistent/run"]);
}

/// A search's JSON report.
fn search_json(run: &str, json: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["search", "--checkpoint", run, "--json", json.to_str().unwrap()];
    all.extend(args);
    let o = usnet(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset"]
fn search_end_to_end_on_a_tiny_run() {
    let dir = temp_dir("search");
    let cfg = small_config(&dir, "");
    let cfg_path = dir.join("nonuniform.toml");
    std::fs::write(&cfg_path, std::fs::read_to_string(&cfg).unwrap().replace("nonuniform = false", "nonuniform = true")).unwrap();
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let o = usnet(&["train", "--config", cfg_path.to_str().unwrap(), "--max-steps", "3", "--output", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The ends of the cost range, from a budget every network meets.
    let probe = search_json(run_s, &dir.join("probe.json"), &["--budget", "macs=1000G", "--step", "0.1"]);
    let (lo, hi) = (probe["cheapest"]["cost"].as_f64().unwrap(), probe["largest"]["cost"].as_f64().unwrap());
    assert!(0.0 < lo && lo < hi, "{probe}");
    assert_eq!(probe["strategies"][0]["best"]["spec"], "1");

    // Every strategy, a budget halfway: nothing over it, the front tested once, at the end.
    let budget = format!("macs={}", ((lo + hi) / 2.0) as u64);
    let plot = dir.join("search.png");
    let report = search_json(
        run_s,
        &dir.join("search.json"),
        &["--budget", &budget, "--step", "0.1", "--strategy", "uniform,greedy,evolution", "--population", "4", "--generations", "2", "--plot", plot.to_str().unwrap()],
    );
    assert!(plot.exists());
    assert_eq!(report["validation_images"], 200);
    let limit = report["budget_limit"].as_f64().unwrap();
    let strategies = report["strategies"].as_array().unwrap();
    assert_eq!(strategies.len(), 3);
    for s in strategies {
        let best = &s["best"];
        assert!(best["cost"].as_f64().unwrap() <= limit, "{s}");
        assert_eq!(best["cost"], best["macs"].as_u64().unwrap() as f64);
        assert!(best["test_top1"].is_number() && best["validation_top1"].is_number(), "{s}");
        for row in s["front"].as_array().unwrap() {
            assert!(row["cost"].as_f64().unwrap() <= limit && row["test_top1"].is_number());
        }
    }
    // The chosen spec is accepted as it is by eval and calibrate.
    let spec = strategies[1]["best"]["spec"].as_str().unwrap();
    assert!(spec.contains('/'), "greedy on a per-stage grid: {spec}");
    let o = usnet(&["eval", "--checkpoint", run_s, "--widths", spec, "--split", "validation", "--plot", dir.join("e.png").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(spec), "{}", stdout(&o));
    let o = usnet(&["calibrate", "--checkpoint", run_s, "--widths", spec]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Too small a budget names the cheapest network's cost.
    let o = usnet(&["search", "--checkpoint", run_s, "--budget", "macs=1K"]);
    assert_clean_failure(&o, &["no candidate meets the budget", "0.35", "M MACs"]);

    // Latency: the table is measured once, then reused.
    let first = search_json(run_s, &dir.join("lat1.json"), &["--budget", "latency=10s", "--step", "0.5", "--threads", "1"]);
    assert!(run.join("latency_table.json").exists());
    assert!(first["latency"]["measured_now"].as_u64().unwrap() > 0, "{first}");
    assert!(first["latency"]["mean_abs_error_pct"].is_number());
    let again = search_json(run_s, &dir.join("lat2.json"), &["--budget", "latency=10s", "--step", "0.5", "--threads", "1"]);
    assert_eq!(again["latency"]["measured_now"], 0, "{again}");
    // Another thread count measures again.
    let other = search_json(run_s, &dir.join("lat3.json"), &["--budget", "latency=10s", "--step", "0.5", "--threads", "2"]);
    assert!(other["latency"]["measured_now"].as_u64().unwrap() > 0, "{other}");

    // A run without a validation split is refused: search never scores on the test set.
    let cfg0 = dir.join("noval.toml");
    std::fs::write(&cfg0, std::fs::read_to_string(&cfg_path).unwrap().replace("validation_size = 200", "validation_size = 0")).unwrap();
    let run0 = dir.join("noval");
    let o = usnet(&["train", "--config", cfg0.to_str().unwrap(), "--max-steps", "1", "--output", run0.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean_failure(&usnet(&["search", "--checkpoint", run0.to_str().unwrap(), "--budget", "macs=1G"]), &["validation_size", "noval"]);
    let _ = std::fs::remove_dir_all(&dir);
}

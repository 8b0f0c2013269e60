//! `usnet import` and `usnet export` through the real binary.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{assert_clean_failure, assert_ok, stderr, usnet, FASHION};

const GOLDEN_IMPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/import");

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A usnet config for the model of an `usnet-import/1` file; the dataset is CIFAR-10 in a
/// directory that does not exist (import and export of stored widths need no data).
fn config_for(doc: &Value, dir: &Path) -> PathBuf {
    let m = &doc["model"];
    let list: Vec<f64> = serde_json::from_value(m["width_mult_list"].clone()).unwrap();
    let lo = list.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = list.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // What the file leaves null is the official model's.
    let arch: usnet::Arch = m["arch"].as_str().unwrap().parse().unwrap();
    let official = usnet::ModelConfig::imagenet(arch, 1);
    let rows = match &m["block_setting"] {
        Value::Null => serde_json::json!(official.block_setting).to_string(),
        v => v.to_string(),
    };
    let last = match (&m["last_channels"], official.last_channels) {
        (Value::Null, Some(c)) => format!("last_channels = {c}\n"),
        (Value::Null, None) => String::new(),
        (v, _) => format!("last_channels = {v}\n"),
    };
    let text = format!(
        "dataset = \"cifar10\"\ndata_dir = \"{}\"\nwidth_mult_range = [{lo:?}, {hi:?}]\nwidth_mult_list = {:?}\n\n[model]\n\
         arch = {}\nnum_classes = {}\ninput_channels = {}\ndivisor = {}\nblock_setting = {rows}\nstem_channels = {}\nstem_stride = {}\n{last}",
        s(&dir.join("no-data")),
        list,
        m["arch"],
        m["num_classes"],
        m["input_channels"],
        m["divisor"],
        official.stem_channels,
        m["stem_stride"],
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}


/// Every import fixture: `usnet import`, then `usnet export` of each stored width, run in
/// tract, gives the official logits.
#[test]
fn import_then_export_gives_the_official_logits() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(GOLDEN_IMPORT)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    fixtures.sort();
    assert!(!fixtures.is_empty(), "no import fixtures in {GOLDEN_IMPORT}");
    for fixture in fixtures {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
        let stem = fixture.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = support::temp_dir(&format!("cli-interop-{stem}"));
        let config = config_for(&doc, &dir);
        let pth = fixture.with_file_name(doc["checkpoint"].as_str().unwrap());
        let run = dir.join("run");
        let o = usnet(&["import", "--pytorch", s(&pth), "--config", s(&config), "--output", s(&run)]);
        assert_ok(&o);
        let err = stderr(&o);
        assert!(err.contains("optimizer"), "the ignored optimizer state is reported: {err}");
        if doc["model"]["arch"] == "us_mobilenet_v2" {
            assert!(err.contains("plain BatchNorm2d") && err.contains("usnet calibrate --checkpoint"), "{err}");
        }
        assert!(run.join("checkpoint.safetensors").is_file() && run.join("config.toml").is_file());

        let shape: Vec<usize> = serde_json::from_value(doc["input"]["shape"].clone()).unwrap();
        let seed = doc["seed"].as_u64().unwrap();
        let x = usnet::init::counter_input(doc["input"]["key"].as_str().unwrap(), seed, shape.iter().product());
        for case in doc["cases"].as_array().unwrap() {
            let width = case["width"].to_string();
            let out = dir.join(format!("{stem}-{width}.onnx"));
            let o = usnet(&["export", "--checkpoint", s(&run), "--width", &width, "--output", s(&out)]);
            assert_ok(&o);
            assert!(stderr(&o).contains("MACs"), "{}", stderr(&o));
            let got = support::tract_run(&out, &x, &shape);
            let want: Vec<f64> = serde_json::from_value(case["logits"]["values"].clone()).unwrap();
            let tol = case["logits"]["tolerance"].as_f64().unwrap();
            assert_eq!(got.len(), want.len());
            for (w, g) in want.iter().zip(&got) {
                assert!((w - f64::from(*g)).abs() <= tol.max(1e-4 * w.abs()), "{stem} width {width}: official {w}, exported {g}");
            }
            if let Some(check) = std::env::var_os("USNET_EXPORT_CHECK_DIR").map(PathBuf::from) {
                // The official logits, for ONNX Runtime too (scripts/check_exports.py).
                std::fs::create_dir_all(&check).unwrap();
                let name = format!("official-{stem}-{width}.onnx");
                std::fs::copy(&out, check.join(&name)).unwrap();
                let entry = serde_json::json!({ "file": name, "width_spec": width, "input_shape": shape, "input": x, "logits": want });
                std::fs::write(check.join(format!("{name}.json")), entry.to_string()).unwrap();
            }
        }
    }
}

#[test]
fn import_and_export_refuse_bad_input_clearly() {
    let fixture = Path::new(GOLDEN_IMPORT).join("v2_small_official.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let dir = support::temp_dir("cli-interop-bad");
    let config = config_for(&doc, &dir);
    let pth = fixture.with_file_name("v2_small_official.pth");
    let run = dir.join("run");

    // A truncated checkpoint: named, and nothing written.
    let truncated = dir.join("truncated.pth");
    let bytes = std::fs::read(&pth).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_clean_failure(&usnet(&["import", "--pytorch", s(&truncated), "--config", s(&config), "--output", s(&run)]), &["truncated.pth"]);
    assert!(!run.join("checkpoint.safetensors").exists(), "a failed import wrote a checkpoint");

    // A config that does not match: the key and both shapes.
    let text = std::fs::read_to_string(&config).unwrap().replace("last_channels = 256", "last_channels = 128");
    let wrong = dir.join("wrong.toml");
    std::fs::write(&wrong, text).unwrap();
    assert_clean_failure(
        &usnet(&["import", "--pytorch", s(&pth), "--config", s(&wrong), "--output", s(&run)]),
        &["features.7.0.weight", "[256, 64, 1, 1]", "[128, 64, 1, 1]"],
    );

    assert_ok(&usnet(&["import", "--pytorch", s(&pth), "--config", s(&config), "--output", s(&run)]));
    assert_clean_failure(&usnet(&["import", "--pytorch", s(&pth), "--config", s(&config), "--output", s(&run)]), &["already exists", "--force"]);
    assert_ok(&usnet(&["import", "--pytorch", s(&pth), "--config", s(&config), "--output", s(&run), "--force"]));

    let out = dir.join("m.onnx");
    // Outside the trained range.
    assert_clean_failure(&usnet(&["export", "--checkpoint", s(&run), "--width", "0.2", "--output", s(&out)]), &["0.2", "outside"]);
    // Not stored, and the config's dataset is not there to calibrate on.
    assert_clean_failure(
        &usnet(&["export", "--checkpoint", s(&run), "--width", "0.6", "--output", s(&out)]),
        &["0.6", "no data to calibrate", "usnet calibrate"],
    );
    // A per-stage spec of the wrong length.
    assert_clean_failure(&usnet(&["export", "--checkpoint", s(&run), "--width", "0.5/0.35/0.5/0.35/0.5/0.35/0.5/0.35/0.5", "--output", s(&out)]), &["per-stage"]);
    assert_clean_failure(&usnet(&["export", "--checkpoint", s(&run), "--width", "0.5", "--output", s(&dir.join("m.pt"))]), &[".onnx", ".safetensors"]);
    assert_ok(&usnet(&["export", "--checkpoint", s(&run), "--width", "0.5", "--output", s(&out)]));
    assert_clean_failure(&usnet(&["export", "--checkpoint", s(&run), "--width", "0.5", "--output", s(&out)]), &["already exists", "--force"]);
    assert_ok(&usnet(&["export", "--checkpoint", s(&run), "--width", "0.5", "--output", s(&out), "--force"]));
    // Unwritable: a directory under a regular file.
    assert_clean_failure(&usnet(&["export", "--checkpoint", s(&run), "--width", "0.5", "--output", s(&out.join("m.onnx"))]), &["m.onnx"]);

    for cmd in ["import", "export"] {
        let o = usnet(&[cmd, "--help"]);
        assert_ok(&o);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("Examples:") && help.contains(&format!("usnet {cmd} --")), "{cmd} --help: {help}");
    }
}

/// A run trained here, exported at a per-stage width calibrated on demand from its data:
/// the ONNX file gives what usnet's own eval path computes.
#[test]
#[ignore = "heavy: trains on a Fashion-MNIST subset"]
fn trained_run_exports_a_per_stage_width_calibrated_on_demand() {
    use burn::tensor::{Tensor, TensorData};
    use usnet::dataset::{first_batches, ExperimentData};
    assert!(Path::new(FASHION).join("train-images-idx3-ubyte.gz").exists(), "needs Fashion-MNIST: apt-get install dataset-fashion-mnist");
    let dir = support::temp_dir("cli-interop-trained");
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/fashion_mnist_us_v2.toml")).unwrap();
    let text = base
        .replace("batch_size = 128", "batch_size = 32")
        .replace("validation_size = 5000", "validation_size = 200")
        .replace("data_loader_workers = 1", "data_loader_workers = 1\ntrain_subset = 256\ntest_subset = 64");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let run = dir.join("run");
    assert_ok(&usnet(&["train", "--config", s(&cfg), "--max-steps", "4", "--output", s(&run)]));

    // Stem, then one width per block-table row (4 rows).
    let spec = "0.5/0.35/1/0.75/0.5";
    for (file, needle) in [("mixed.onnx", "ONNX"), ("mixed.safetensors", "safetensors")] {
        let o = usnet(&["export", "--checkpoint", s(&run), "--width", spec, "--output", s(&dir.join(file)), "--batches", "2"]);
        assert_ok(&o);
        assert!(stderr(&o).contains("calibrated on demand") && stderr(&o).contains(needle), "{}", stderr(&o));
    }

    // The same calibration through the library, then usnet's eval-mode logits on test images.
    let device = usnet::device::device(None).unwrap();
    let ck = usnet::checkpoint::Checkpoint::load(&run, &device).unwrap();
    let data = ExperimentData::load(&ck.config).unwrap();
    let spec: usnet::WidthSpec = spec.parse().unwrap();
    let mut cal = usnet::CalibratedModel::with_stats(ck.model.clone(), ck.bn_stats.clone());
    cal.calibrate_missing(std::slice::from_ref(&spec), || first_batches(&data.calibration, 2, &device)).unwrap();
    let batch = data.test.epoch(0).next().unwrap().unwrap();
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), &device);
    let want: Vec<f32> = cal.forward(x, &spec).unwrap().into_data().try_to_vec().unwrap();
    let got = support::tract_run(&dir.join("mixed.onnx"), &batch.images, &batch.shape);
    for (a, b) in want.iter().zip(&got) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "usnet {a}, ONNX {b}");
    }
    let bytes = std::fs::read(dir.join("mixed.onnx")).unwrap();
    for needle in ["Sneaker", "width_spec", "input_mean", "usnet_version"] {
        assert!(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "metadata lacks {needle}");
    }
}

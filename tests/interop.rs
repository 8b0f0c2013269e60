//! Export and import through the library: every exported ONNX file runs in tract and gives
//! usnet's own eval logits; safetensors round-trips; bad input is refused with a clear error.

mod support;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use usnet::init::counter_input;
use usnet::interop::pytorch::import_pytorch;
use usnet::interop::{export, InputInfo};
use usnet::{Arch, CalibratedModel, Error, Init, ModelConfig, UsNet, WidthSpec};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/import/v2_small_official.pth");

fn device() -> Device {
    usnet::device::device(None).unwrap()
}


/// A small v2 whose second row starts with a residual block (stride 1, 8 -> 8 channels), so
/// per-stage specs give shortcuts of a different width than the block (Pad and Slice).
fn small_v2() -> ModelConfig {
    ModelConfig {
        arch: Arch::UsMobilenetV2,
        num_classes: 5,
        input_channels: 3,
        divisor: 4,
        width_range: [0.35, 1.0],
        block_setting: vec![vec![1, 8, 1, 1], vec![4, 8, 2, 1], vec![4, 16, 1, 2]],
        stem_channels: 16,
        stem_stride: 2,
        last_channels: Some(32),
        switchable_bn: None,
    }
}

fn small_v1() -> ModelConfig {
    let mut c = ModelConfig::imagenet(Arch::UsMobilenetV1, 4);
    c.block_setting = vec![vec![8, 1, 1], vec![16, 2, 2]];
    c.stem_channels = 8;
    c.input_channels = 3;
    c
}

const HW: [usize; 2] = [12, 12];

fn input_info() -> InputInfo {
    InputInfo { size: HW, mean: vec![0.5], std: vec![0.25], dataset: None, class_names: None }
}

fn batch(key: &str, n: usize, device: &Device) -> (Vec<f32>, Tensor<4>) {
    let shape = [n, 3, HW[0], HW[1]];
    let x = counter_input(key, 7, shape.iter().product());
    (x.clone(), Tensor::from_data(TensorData::new(x, shape), device))
}

/// A model with counter weights, calibrated for `specs`.
fn calibrated(config: &ModelConfig, specs: &[WidthSpec]) -> CalibratedModel {
    let device = device();
    let model = UsNet::init(config, &Init::Counter { seed: 11 }, &device).unwrap();
    let mut cal = CalibratedModel::new(model);
    let batches: Vec<Tensor<4>> = (0..2).map(|i| batch(&format!("cal.{i}"), 4, &device).1).collect();
    cal.calibrate(batches, specs).unwrap();
    cal
}

/// Runs the ONNX file in tract on `x` (`[n, 3, h, w]`).
fn tract_logits(path: &Path, x: &[f32], n: usize) -> Vec<f32> {
    support::tract_run(path, x, &[n, 3, HW[0], HW[1]])
}


/// When `USNET_EXPORT_CHECK_DIR` is set, keeps a copy of the exported file at `path` there as
/// `name`, with `entry` (what usnet computes for it) beside it as `name.json`: the cases
/// `scripts/check_exports.py` runs in ONNX Runtime and the `safetensors` package.
fn keep_for_check(name: &str, path: &Path, mut entry: serde_json::Value) {
    let Some(dir) = std::env::var_os("USNET_EXPORT_CHECK_DIR").map(PathBuf::from) else { return };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(path, dir.join(name)).unwrap();
    entry["file"] = name.into();
    std::fs::write(dir.join(format!("{name}.json")), entry.to_string()).unwrap();
}

fn assert_close(want: &[f32], got: &[f32], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: lengths");
    for (i, (a, b)) in want.iter().zip(got).enumerate() {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{what}[{i}]: usnet {a}, exported {b}");
    }
}

fn specs(list: &[&str]) -> Vec<WidthSpec> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn onnx_export_matches_usnet_in_tract_at_uniform_and_per_stage_widths() {
    let device = device();
    let dir = support::temp_dir("interop-onnx");
    // Per-stage: stem, then one width per row. 1/0.5/... narrows the residual's block below
    // its shortcut (Slice); 0.5/1/... widens it (Pad).
    for (config, list) in [
        (small_v2(), specs(&["1", "0.5", "0.35", "0.75/1/0.5/0.75", "0.5/0.35/1/0.5"])),
        (small_v1(), specs(&["1", "0.25", "0.5/0.75/0.25"])),
    ] {
        let cal = calibrated(&config, &list);
        for spec in &list {
            let fixed = cal.fixed(spec).unwrap();
            let path = dir.join(format!("{}-{}.onnx", config.arch, spec.short().replace('/', "_")));
            export(&fixed, &input_info(), &path, false).unwrap();
            // The batch dimension is dynamic: two batch sizes through the same file.
            for n in [2, 3] {
                let (x, t) = batch(&format!("eval.{n}"), n, &device);
                let want: Vec<f32> = cal.forward(t, spec).unwrap().into_data().try_to_vec().unwrap();
                let got = tract_logits(&path, &x, n);
                assert_close(&want, &got, &format!("{} {spec} batch {n}", config.arch));
                let name = format!("{}-{}-b{n}.onnx", config.arch, spec.short().replace('/', "_"));
                let entry = serde_json::json!({ "width_spec": spec.to_string(), "input_shape": [n, 3, HW[0], HW[1]], "input": x, "logits": want });
                keep_for_check(&name, &path, entry);
            }
        }
    }
}

#[test]
fn onnx_export_of_a_per_stage_spec_holds_pad_and_slice() {
    // The residual shortcut of another width is what the uniform path never exercises;
    // check that the graph really carries it, so the tract test above covers it.
    let cal = calibrated(&small_v2(), &specs(&["0.75/1/0.5/0.75", "0.5/0.35/1/0.5"]));
    let dir = support::temp_dir("interop-padslice");
    for (spec, op) in [("0.75/1/0.5/0.75", "Slice"), ("0.5/0.35/1/0.5", "Pad")] {
        let spec: WidthSpec = spec.parse().unwrap();
        let fixed = cal.fixed(&spec).unwrap();
        let path = dir.join("m.onnx");
        export(&fixed, &input_info(), &path, true).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.windows(op.len()).any(|w| w == op.as_bytes()), "{spec}: no {op} node");
    }
}

#[test]
fn safetensors_export_round_trips_with_that_widths_shapes() {
    let spec: WidthSpec = "0.5".parse().unwrap();
    let cal = calibrated(&small_v2(), std::slice::from_ref(&spec));
    let fixed = cal.fixed(&spec).unwrap();
    let path = support::temp_dir("interop-st").join("m.safetensors");
    export(&fixed, &input_info(), &path, false).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["width_spec"], "0.5");
    assert_eq!(meta["channels"], serde_json::to_string(&fixed.channel_counts()).unwrap());
    assert_eq!(meta["macs"], fixed.macs(HW).to_string());
    let dict = usnet::interop::safetensors::state_dict(&fixed);
    for (name, shape, values) in &dict {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
        let read: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&read, values, "{name}");
    }
    let shapes: serde_json::Map<String, serde_json::Value> = dict.iter().map(|(n, shape, _)| (n.clone(), serde_json::json!(shape))).collect();
    keep_for_check("v2-0.5.safetensors", &path, serde_json::json!({ "width_spec": "0.5", "shapes": shapes }));
    // The width's channels, not the full model's: the stem has md(16 * 0.5) = 8 outputs.
    assert_eq!(st.tensor("features.0.0.weight").unwrap().shape(), [8, 3, 3, 3]);
    assert_eq!(st.tensor("features.0.1.running_var").unwrap().shape(), [8]);
    assert!(st.tensor("features.0.1.num_batches_tracked").is_ok());
    // Unfolded BN: the running statistics are the calibrated ones of this width.
    let stats = cal.stats(&spec).unwrap();
    let mean0: Vec<f32> = stats.layers[0].mean.to_data().try_to_vec().unwrap();
    assert_eq!(dict.iter().find(|(n, ..)| n == "features.0.1.running_mean").unwrap().2, mean0);
}

#[test]
fn export_refuses_bad_widths_missing_data_and_existing_outputs() {
    let cal = calibrated(&small_v2(), &specs(&["0.5"]));
    assert!(matches!(cal.fixed(&"0.2".parse().unwrap()), Err(Error::WidthOutOfRange { .. })));
    assert!(matches!(cal.fixed(&"0.75".parse().unwrap()), Err(Error::NotCalibrated { .. })));
    // An uncalibrated width and no data to calibrate it on: one clear error, naming the width.
    let mut on_demand = cal.clone();
    let err = on_demand
        .calibrate_missing(&specs(&["0.5", "0.75"]), || Err(Error::InvalidConfig("no dataset here".into())))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoCalibrationData { .. }), "{text}");
    assert!(text.contains("0.75") && text.contains("no dataset here") && text.contains("usnet calibrate"), "{text}");
    // With data, the missing one is calibrated and only it.
    let device = device();
    let batches: Vec<Tensor<4>> = (0..2).map(|i| batch(&format!("cal.{i}"), 4, &device).1).collect();
    let done = on_demand.calibrate_missing(&specs(&["0.5", "0.75"]), || Ok(batches)).unwrap();
    assert_eq!(done, specs(&["0.75"]));

    let fixed = cal.fixed(&"0.5".parse().unwrap()).unwrap();
    let dir = support::temp_dir("interop-refuse");
    let path = dir.join("m.onnx");
    export(&fixed, &input_info(), &path, false).unwrap();
    let err = export(&fixed, &input_info(), &path, false).unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }) && err.to_string().contains("--force"), "{err}");
    export(&fixed, &input_info(), &path, true).unwrap();
    let err = export(&fixed, &input_info(), &dir.join("m.pt"), false).unwrap_err();
    assert!(matches!(err, Error::ExportFormat { .. }), "{err}");
    // An unwritable place: a path under a regular file.
    let err = export(&fixed, &input_info(), &path.join("x.onnx"), false).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["m.onnx"]);
}

/// The fixture's model, as `tests/golden/import/v2_small_official.json` describes it.
fn fixture_config() -> (ModelConfig, Vec<f64>) {
    let mut c = ModelConfig::imagenet(Arch::UsMobilenetV2, 10);
    c.block_setting = vec![vec![1, 16, 1, 1], vec![6, 24, 2, 2], vec![6, 32, 2, 2], vec![6, 64, 1, 2]];
    c.last_channels = Some(256);
    (c, vec![1.0, 0.75, 0.5, 0.35])
}

#[test]
fn import_reads_the_official_layout_and_reports_what_it_left_out() {
    let (config, list) = fixture_config();
    let imported = import_pytorch(Path::new(FIXTURE), &config, &list, &device()).unwrap();
    assert_eq!(imported.bn_stats.len(), 4);
    // The list's order, not sorted.
    assert_eq!(imported.bn_stats.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>(), ["1", "0.75", "0.5", "0.35"]);
    assert_eq!(imported.shared_statistics, ["features.7.1"]);
    assert!(imported.ignored.iter().any(|l| l.contains("optimizer")), "{:?}", imported.ignored);
}

#[test]
fn import_refuses_bad_checkpoints_with_the_key_and_shapes() {
    let device = device();
    let (config, list) = fixture_config();
    let dir = support::temp_dir("interop-import-bad");

    let truncated = dir.join("truncated.pth");
    let bytes = std::fs::read(FIXTURE).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_pytorch(&truncated, &config, &list, &device).unwrap_err().to_string();
    assert!(err.contains("truncated.pth"), "{err}");

    let not_torch = dir.join("notes.pth");
    std::fs::write(&not_torch, b"not a checkpoint").unwrap();
    let err = import_pytorch(&not_torch, &config, &list, &device).unwrap_err().to_string();
    assert!(err.contains("notes.pth") && err.contains("PyTorch"), "{err}");

    let err = import_pytorch(&dir.join("absent.pth"), &config, &list, &device).unwrap_err().to_string();
    assert!(err.contains("absent.pth"), "{err}");

    // A config whose head is narrower than the checkpoint's: mis-shaped, both shapes named.
    let mut narrow = config.clone();
    narrow.last_channels = Some(128);
    let err = import_pytorch(Path::new(FIXTURE), &narrow, &list, &device).unwrap_err().to_string();
    assert!(err.contains("features.7.0.weight") && err.contains("[256, 64, 1, 1]") && err.contains("[128, 64, 1, 1]"), "{err}");

    // A config with one more block than the checkpoint: the first missing key is named.
    let mut deeper = config.clone();
    deeper.block_setting[3][2] = 2;
    let err = import_pytorch(Path::new(FIXTURE), &deeper, &list, &device).unwrap_err().to_string();
    assert!(err.contains("missing tensor") && err.contains("features.7."), "{err}");

    // A width list of another length than the statistics stored.
    let err = import_pytorch(Path::new(FIXTURE), &config, &list[..3], &device).unwrap_err().to_string();
    assert!(err.contains("4 widths") && err.contains("width_mult_list"), "{err}");
}

#[test]
fn imported_model_exports_to_onnx_with_the_official_logits() {
    // The fixture's own logits, through import and export: the path a PyTorch user takes.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(FIXTURE.replace(".pth", ".json")).unwrap()).unwrap();
    let (config, list) = fixture_config();
    let imported = import_pytorch(Path::new(FIXTURE), &config, &list, &device()).unwrap();
    let cal = CalibratedModel::with_stats(imported.model, imported.bn_stats);
    let shape: Vec<usize> = serde_json::from_value(doc["input"]["shape"].clone()).unwrap();
    let x = counter_input(doc["input"]["key"].as_str().unwrap(), doc["seed"].as_u64().unwrap(), shape.iter().product());
    let dir = support::temp_dir("interop-import-onnx");
    for case in doc["cases"].as_array().unwrap() {
        let spec = usnet::Width::new(case["width"].as_f64().unwrap()).map(WidthSpec::Uniform).unwrap();
        let fixed = cal.fixed(&spec).unwrap();
        let info = InputInfo { size: [shape[2], shape[3]], ..input_info() };
        let path = dir.join(format!("{}.onnx", spec.short()));
        export(&fixed, &info, &path, false).unwrap();
        let got = support::tract_run(&path, &x, &shape);
        let want: Vec<f64> = serde_json::from_value(case["logits"]["values"].clone()).unwrap();
        let tol = case["logits"]["tolerance"].as_f64().unwrap();
        for (w, g) in want.iter().zip(&got) {
            assert!((w - f64::from(*g)).abs() <= tol.max(1e-4 * w.abs()), "width {spec}: official {w}, ONNX {g}");
        }
    }
}

//! Golden test vectors from an independent float64 PyTorch reference (`tests/golden/README.md`).
//!
//! Runs every `*.json` in `tests/golden/` and its `import/`, or in `$USNET_GOLDEN_DIR` (and
//! its `import/`) when it is set, and prints each file's name with `ok` or its first
//! mismatches. Any file in the `usnet-golden/1` or `usnet-import/1` format works: nothing here
//! assumes the shipped models, shapes or widths.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;
use usnet::init::{counter_input, counter_labels};
use usnet::layers::BnMode;
use usnet::train::{train_step, Sgd, SgdConfig, StepOptions};
use usnet::interop::pytorch::import_pytorch;
use usnet::{calibrate, Arch, CalibratedModel, Init, ModelConfig, UsNet, WidthSpec};

/// `USNET_GOLDEN_TOLERANCE_SCALE`: every stored tolerance times this (default 1), for a
/// backend whose kernels sum in another order (`scripts/gpu_check.sh` says when it widens).
fn tolerance_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| match std::env::var("USNET_GOLDEN_TOLERANCE_SCALE") {
        Ok(v) => v.parse().ok().filter(|s: &f64| s.is_finite() && *s >= 1.0).unwrap_or_else(|| {
            eprintln!("golden: USNET_GOLDEN_TOLERANCE_SCALE={v:?} is not a number >= 1; using 1");
            1.0
        }),
        Err(_) => 1.0,
    })
}

/// One number that missed its tolerance.
struct Mismatch {
    section: String,
    key: String,
    index: usize,
    expected: f64,
    got: f64,
    tolerance: f64,
}

#[derive(Default)]
struct Report {
    mismatches: Vec<Mismatch>,
    checked: usize,
}

impl Report {
    fn check(&mut self, section: &str, key: &str, index: usize, expected: f64, got: f64, tolerance: f64) {
        self.checked += 1;
        let tolerance = tolerance * tolerance_scale();
        // A NaN `got` must fail, so compare with `!(diff <= tol)`.
        if !((expected - got).abs() <= tolerance) {
            self.mismatches.push(Mismatch { section: section.into(), key: key.into(), index, expected, got, tolerance });
        }
    }

    /// A stored tensor: `values` + `tolerance`, and/or `samples` of `[index, value, tol]`;
    /// an entry with neither checks nothing, so it is an error.
    fn tensor(&mut self, section: &str, key: &str, stored: &Value, got: &[f32], shape: &[usize]) -> Result<(), String> {
        let want_shape = shape_of(stored)?;
        if want_shape != shape {
            return Err(format!("{section} {key}: stored shape {want_shape:?}, model gives {shape:?}"));
        }
        if stored.get("values").is_none() && stored.get("samples").is_none() {
            return Err(format!("{section} {key}: the entry has neither values nor samples, so it checks nothing"));
        }
        if let Some(values) = stored.get("values") {
            let tol = num(&stored["tolerance"])?;
            let values = values.as_array().ok_or(format!("{section} {key}: values is not a list"))?;
            if values.len() != got.len() {
                return Err(format!("{section} {key}: {} stored values, model gives {}", values.len(), got.len()));
            }
            for (i, v) in values.iter().enumerate() {
                self.check(section, key, i, num(v)?, f64::from(got[i]), tol);
            }
        }
        if let Some(samples) = stored.get("samples") {
            for s in samples.as_array().ok_or(format!("{section} {key}: samples is not a list"))? {
                let idx = num(&s[0])? as usize;
                let value = got.get(idx).ok_or(format!("{section} {key}: sample index {idx} out of range"))?;
                self.check(section, key, idx, num(&s[1])?, f64::from(*value), num(&s[2])?);
            }
        }
        Ok(())
    }
}

fn num(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{v} is not a number")),
        // Some writers store numbers as strings to keep every digit.
        Value::String(s) => s.parse().map_err(|_| format!("{s:?} is not a number")),
        _ => Err(format!("{v} is not a number")),
    }
}

fn shape_of(v: &Value) -> Result<Vec<usize>, String> {
    let shape = &v["shape"];
    let parsed: Value = match shape {
        Value::String(s) => serde_json::from_str(s).map_err(|e| format!("shape {s:?}: {e}"))?,
        other => other.clone(),
    };
    parsed
        .as_array()
        .ok_or(format!("shape {shape} is not a list"))?
        .iter()
        .map(|d| num(d).map(|d| d as usize))
        .collect()
}

/// A width case: a number (uniform) or a list / string (per stage).
fn width_spec(v: &Value) -> Result<WidthSpec, String> {
    match v {
        Value::Number(_) => Ok(WidthSpec::Uniform(usnet::Width::new(num(v)?).map_err(|e| e.to_string())?)),
        Value::String(s) => s.parse().map_err(|e: usnet::Error| e.to_string()),
        Value::Array(items) => {
            let ws = items.iter().map(|w| usnet::Width::new(num(w)?).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
            Ok(WidthSpec::per_stage(ws))
        }
        _ => Err(format!("width {v} is neither a number nor a list")),
    }
}

fn model_config(m: &Value) -> Result<ModelConfig, String> {
    let arch: Arch = m["arch"].as_str().ok_or("model.arch missing")?.parse().map_err(|e: usnet::Error| e.to_string())?;
    let usize_of = |k: &str| num(&m[k]).map(|v| v as usize).map_err(|e| format!("model.{k}: {e}"));
    let range = m["width_range"].as_array().ok_or("model.width_range missing")?;
    let block_setting = block_rows(&m["block_setting"])?;
    Ok(ModelConfig {
        arch,
        num_classes: usize_of("num_classes")?,
        input_channels: usize_of("input_channels")?,
        divisor: usize_of("divisor")?,
        width_range: [num(&range[0])?, num(&range[1])?],
        block_setting,
        stem_channels: usize_of("stem_channels")?,
        stem_stride: usize_of("stem_stride")?,
        last_channels: match &m["last_channels"] {
            Value::Null => None,
            v => Some(num(v)? as usize),
        },
        switchable_bn: None,
    })
}

fn input(spec: &Value, seed: u64, device: &Device) -> Result<Tensor<4>, String> {
    let key = spec["key"].as_str().ok_or("input.key missing")?;
    let shape = shape_of(spec)?;
    let [n, c, h, w]: [usize; 4] = shape.clone().try_into().map_err(|_| format!("input {key}: shape {shape:?} is not 4-D"))?;
    let values = counter_input(key, seed, n * c * h * w);
    Ok(Tensor::from_data(TensorData::new(values, [n, c, h, w]), device))
}

fn values(t: Tensor<2>) -> (Vec<f32>, Vec<usize>) {
    let shape = t.dims().to_vec();
    (t.into_data().try_to_vec::<f32>().expect("f32 logits"), shape)
}

fn check_params(report: &mut Report, section: &str, model: &UsNet, stored: &Value) -> Result<(), String> {
    let stored = stored.as_object().ok_or(format!("{section} is not an object"))?;
    let params: HashMap<String, usnet::layers::AnyTensor> = model.params().into_iter().map(|(n, _, t)| (n, t)).collect();
    for (name, entry) in stored {
        let p = params.get(name).ok_or(format!("{section}: the model has no parameter {name}"))?;
        let data = p.to_data().try_to_vec::<f32>().map_err(|e| format!("{name}: {e:?}"))?;
        report.tensor(section, name, entry, &data, &p.shape())?;
    }
    if params.len() != stored.len() {
        return Err(format!("{section}: the model has {} parameters, the file {}", params.len(), stored.len()));
    }
    Ok(())
}

fn run_file(path: &Path, device: &Device) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if doc["format"] == "usnet-import/1" {
        return run_import(&doc, path.parent().unwrap_or(Path::new(".")), device);
    }
    run_doc(&doc, device)
}

fn block_rows(v: &Value) -> Result<Vec<Vec<usize>>, String> {
    v.as_array()
        .ok_or("model.block_setting missing")?
        .iter()
        .map(|row| row.as_array().ok_or("block row is not a list".to_string())?.iter().map(|x| num(x).map(|x| x as usize)).collect())
        .collect()
}

/// An `usnet-import/1` file: the official checkpoint beside it, imported, then evaluated at
/// each stored width with the imported statistics.
fn run_import(doc: &Value, dir: &Path, device: &Device) -> Result<Report, String> {
    let m = &doc["model"];
    let arch: Arch = m["arch"].as_str().ok_or("model.arch missing")?.parse().map_err(|e: usnet::Error| e.to_string())?;
    let usize_of = |k: &str| num(&m[k]).map(|v| v as usize).map_err(|e| format!("model.{k}: {e}"));
    let list: Vec<f64> = m["width_mult_list"].as_array().ok_or("model.width_mult_list missing")?.iter().map(num).collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err("model.width_mult_list is empty".into());
    }
    // The official defaults, for what the file leaves null.
    let official = ModelConfig::imagenet(arch, usize_of("num_classes")?);
    let lo = list.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = list.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let config = ModelConfig {
        arch,
        num_classes: official.num_classes,
        input_channels: usize_of("input_channels")?,
        divisor: usize_of("divisor")?,
        width_range: [lo, hi],
        block_setting: match &m["block_setting"] {
            Value::Null => official.block_setting.clone(),
            v => block_rows(v)?,
        },
        stem_channels: match m.get("stem_channels") {
            None | Some(Value::Null) => official.stem_channels,
            Some(v) => num(v)? as usize,
        },
        stem_stride: usize_of("stem_stride")?,
        last_channels: match &m["last_channels"] {
            Value::Null => official.last_channels,
            v => Some(num(v)? as usize),
        },
        switchable_bn: None,
    };
    let file = doc["checkpoint"].as_str().ok_or("checkpoint (the .pth file's name) missing")?;
    let imported = import_pytorch(&dir.join(file), &config, &list, device).map_err(|e| e.to_string())?;
    let seed = num(&doc["seed"])? as u64;
    let x = input(&doc["input"], seed, device)?;
    let cal = CalibratedModel::with_stats(imported.model, imported.bn_stats);
    let cases = doc["cases"].as_array().ok_or("cases missing")?;
    if cases.is_empty() {
        return Err("cases is empty, so the file checks nothing".into());
    }
    let mut report = Report::default();
    for case in cases {
        let spec = width_spec(&case["width"])?;
        let logits = cal.forward(x.clone(), &spec).map_err(|e| format!("width {spec}: {e}"))?;
        let (got, shape) = values(logits);
        report.tensor("import", &format!("logits@{spec}"), &case["logits"], &got, &shape)?;
    }
    Ok(report)
}

/// Documents the harness must refuse, each with the words its error must contain: a harness
/// that accepted them would pass files that check nothing.
fn self_check(device: &Device) -> Result<(), String> {
    let model = serde_json::json!({
        "arch": "us_mobilenet_v1", "num_classes": 3, "input_channels": 1, "divisor": 8,
        "width_range": [0.25, 1.0], "block_setting": [[16, 1, 1]], "stem_channels": 8,
        "stem_stride": 1, "last_channels": null
    });
    let config = model_config(&model)?;
    let built = UsNet::init(&config, &Init::Counter { seed: 0 }, device).map_err(|e| e.to_string())?;
    let params = |entry: &dyn Fn(&[usize]) -> Value| -> Value {
        built.params().iter().map(|(n, _, t)| (n.clone(), entry(&t.shape()))).collect::<serde_json::Map<_, _>>().into()
    };
    let doc = |params_init: Value, train: Value| {
        serde_json::json!({ "format": "usnet-golden/1", "seed": 0, "model": model, "params_init": params_init, "train": train })
    };
    let bare = doc(params(&|shape| serde_json::json!({ "shape": shape })), Value::Null);
    let no_distill = doc(
        params(&|shape| serde_json::json!({ "shape": shape, "samples": [] })),
        serde_json::json!({ "momentum": 0.9, "weight_decay": 0.0, "lr": 0.1, "steps": [] }),
    );
    for (what, doc, needle) in [("an entry with neither values nor samples", bare, "neither"), ("a train section without distillation", no_distill, "distillation")] {
        match run_doc(&doc, device) {
            Err(e) if e.contains(needle) => {}
            Err(e) => return Err(format!("{what}: refused for another reason: {e}")),
            Ok(_) => return Err(format!("{what} passed")),
        }
    }
    Ok(())
}

fn run_doc(doc: &Value, device: &Device) -> Result<Report, String> {
    if doc["format"] != "usnet-golden/1" {
        return Err(format!("format is {}, expected \"usnet-golden/1\"", doc["format"]));
    }
    let seed = num(&doc["seed"])? as u64;
    let config = model_config(&doc["model"])?;
    let model = UsNet::init(&config, &Init::Counter { seed }, device).map_err(|e| e.to_string())?;
    let mut report = Report::default();

    check_params(&mut report, "params_init", &model, &doc["params_init"])?;

    if let Some(fwd) = doc.get("forward").filter(|v| !v.is_null()) {
        let x = input(&fwd["input"], seed, device)?;
        for case in fwd["cases"].as_array().ok_or("forward.cases missing")? {
            let spec = width_spec(&case["width"])?;
            let logits = model.forward(x.clone(), &spec, &mut BnMode::Train).map_err(|e| e.to_string())?;
            let (got, shape) = values(logits);
            report.tensor("forward", &format!("logits@{spec}"), &case["logits"], &got, &shape)?;
        }
    }

    if let Some(cal) = doc.get("calibration").filter(|v| !v.is_null()) {
        let batches = cal["batches"]
            .as_array()
            .ok_or("calibration.batches missing")?
            .iter()
            .map(|b| input(b, seed, device))
            .collect::<Result<Vec<_>, _>>()?;
        let eval_x = input(&cal["eval_input"], seed, device)?;
        let cases = cal["cases"].as_array().ok_or("calibration.cases missing")?;
        let specs = cases.iter().map(|c| width_spec(&c["width"])).collect::<Result<Vec<_>, _>>()?;
        let all_stats = calibrate(&model, batches, &specs).map_err(|e| e.to_string())?;
        let bn_index: HashMap<String, usize> = model.bn_names().into_iter().enumerate().map(|(i, n)| (n, i)).collect();
        for ((case, spec), stats) in cases.iter().zip(&specs).zip(&all_stats) {
            let logits = model.forward(eval_x.clone(), spec, &mut BnMode::Eval(stats)).map_err(|e| e.to_string())?;
            let (got, shape) = values(logits);
            report.tensor("calibration", &format!("logits@{spec}"), &case["logits"], &got, &shape)?;
            if let Some(bn) = case.get("bn").and_then(Value::as_object) {
                for (name, entry) in bn {
                    let i = *bn_index.get(name).ok_or(format!("calibration: the model has no BN {name}"))?;
                    let stat = &stats.layers[i];
                    for (what, t) in [("mean", &stat.mean), ("var", &stat.var)] {
                        let data = t.to_data().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
                        report.tensor("calibration", &format!("{name}.{what}@{spec}"), &entry[what], &data, &t.dims())?;
                    }
                }
            }
        }
    }

    if let Some(train) = doc.get("train").filter(|v| !v.is_null()) {
        let distill = match train.get("distillation") {
            // Whether the students learn from the max width or the labels changes every loss:
            // a file must say which.
            None => return Err("train.distillation is missing: say whether inplace distillation is on".into()),
            Some(Value::Bool(b)) => *b,
            Some(Value::Null) => false,
            Some(Value::String(s)) => !matches!(s.to_ascii_lowercase().as_str(), "none" | "off" | "false"),
            Some(other) => return Err(format!("train.distillation {other} not understood")),
        };
        let sgd = SgdConfig {
            momentum: num(&train["momentum"])?,
            nesterov: train["nesterov"].as_bool().unwrap_or(false),
            weight_decay: num(&train["weight_decay"])?,
        };
        let options = StepOptions { inplace_distill: distill, label_smoothing: 0.0, lr: num(&train["lr"])? };
        let mut optimizer = Sgd::new(sgd);
        let mut trained = model.clone().into_trainable();
        for (s, step) in train["steps"].as_array().ok_or("train.steps missing")?.iter().enumerate() {
            let x = input(&step["input"], seed, device)?;
            let n = x.dims()[0];
            let labels: Vec<i64> = match step.get("labels").and_then(Value::as_array) {
                Some(l) => l.iter().map(|v| num(v).map(|v| v as i64)).collect::<Result<_, _>>()?,
                None => counter_labels(&format!("labels.train.{s}"), seed, n, config.num_classes),
            };
            let formula = counter_labels(&format!("labels.train.{s}"), seed, n, config.num_classes);
            if labels != formula {
                return Err(format!("train step {s}: stored labels differ from the counter formula"));
            }
            let widths = step["widths"].as_array().ok_or("train.steps[].widths missing")?.iter().map(width_spec).collect::<Result<Vec<_>, _>>()?;
            let out = train_step(&mut trained, &mut optimizer, x, &labels, &widths, options, s as u64).map_err(|e| e.to_string())?;
            report.tensor(&format!("train.steps[{s}]"), "losses", &step["losses"], &out.losses, &[out.losses.len()])?;
        }
        check_params(&mut report, "train.params_after", &trained, &train["params_after"])?;
    }
    Ok(report)
}

fn main() -> ExitCode {
    let dir: PathBuf = match std::env::var_os("USNET_GOLDEN_DIR") {
        Some(d) => d.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
    };
    let device = match usnet::device::device(None) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("golden: {e}");
            return ExitCode::FAILURE;
        }
    };
    if tolerance_scale() != 1.0 {
        println!("golden: every tolerance widened {}x (USNET_GOLDEN_TOLERANCE_SCALE)", tolerance_scale());
    }
    match self_check(&device) {
        Ok(()) => println!("self-check: malformed files are refused ... ok"),
        Err(e) => {
            println!("self-check ... FAILED: {e}");
            return ExitCode::FAILURE;
        }
    }
    let json_in = |d: &Path| -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(d)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
        files.sort();
        Ok(files)
    };
    let mut files: Vec<PathBuf> = match json_in(&dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("golden: cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    // Import fixtures (`usnet-import/1`, each beside its .pth) live in import/.
    let import_dir = dir.join("import");
    if import_dir.is_dir() {
        match json_in(&import_dir) {
            Ok(f) => files.extend(f),
            Err(e) => {
                eprintln!("golden: cannot read {}: {e}", import_dir.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if files.is_empty() {
        eprintln!("golden: no *.json files in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let (mut passed, mut failed) = (0, 0);
    for path in &files {
        let name = path.strip_prefix(&dir).map_or_else(|_| path.display().to_string(), |n| n.display().to_string());
        let start = std::time::Instant::now();
        match run_file(path, &device) {
            Ok(r) if r.mismatches.is_empty() => {
                passed += 1;
                println!("{name} ... ok ({} numbers, {:.1}s)", r.checked, start.elapsed().as_secs_f64());
            }
            Ok(r) => {
                failed += 1;
                println!("{name} ... FAILED: {} of {} numbers out of tolerance; first ones:", r.mismatches.len(), r.checked);
                for m in r.mismatches.iter().take(10) {
                    println!(
                        "    section {} key {} index {}: expected {:.9e}, got {:.9e}, tolerance {:.3e}",
                        m.section, m.key, m.index, m.expected, m.got, m.tolerance
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("{name} ... FAILED: {e}");
            }
        }
    }
    println!("golden: {passed} passed, {failed} failed");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

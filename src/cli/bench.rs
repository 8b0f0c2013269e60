//! `usnet bench`: usnet against PyTorch on the same workloads, in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
#[command(after_help = "Runs each workload in usnet (one child process per workload, so peak memory is per\n\
workload) and in PyTorch (bench/torch_usnet.py in .venv, installed by bench/setup_venv.sh on first\n\
use), then prints a table of medians and ratios and writes target/bench/summary.json.\n\n\
Examples:\n  usnet bench                       # all workloads, 2 threads\n  usnet bench --quick --workloads sandwich/b128,calibrate\n  usnet bench --skip-torch          # usnet only (no ratios)")]
pub struct BenchArgs {
    /// Comma list of workloads: sandwich/bN, calibrate, infer/bN/wW.
    #[arg(long, default_value = "sandwich/b128,calibrate,infer/b1/w1.0,infer/b1/w0.75,infer/b1/w0.5,infer/b1/w0.35,infer/b32/w1.0,infer/b32/w0.75,infer/b32/w0.5,infer/b32/w0.35")]
    workloads: String,
    /// Warm-up runs per workload.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per workload (the median is reported).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// One warm-up and three timed runs.
    #[arg(long)]
    quick: bool,
    /// Threads for both sides (RAYON_NUM_THREADS and torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Run only usnet.
    #[arg(long)]
    skip_torch: bool,
    /// Where to write the summary.
    #[arg(long, default_value = "target/bench/summary.json")]
    output: PathBuf,
    /// Internal: run one workload in this process and print its timing as JSON.
    #[arg(long, hide = true)]
    one: Option<String>,
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.quick {
        args.warmup = 1;
        args.repeats = 3;
    }
    let device = usnet::device::device(None)?;
    if let Some(name) = &args.one {
        let t = usnet::bench::run(name, args.warmup, args.repeats, &device)?;
        println!("{}", serde_json::to_string(&t)?);
        return Ok(());
    }
    let names: Vec<String> = args.workloads.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let exe = std::env::current_exe().context("locating the usnet binary")?;
    let mut ours = serde_json::Map::new();
    for name in &names {
        eprintln!("usnet: {name}");
        let out = Command::new(&exe)
            .args(["bench", "--one", name, "--warmup", &args.warmup.to_string(), "--repeats", &args.repeats.to_string()])
            .env("RAYON_NUM_THREADS", args.threads.to_string())
            // The allocator setting `usnet` makes at start-up, made from the first allocation.
            .env("MIMALLOC_PURGE_DELAY", std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_else(|_| "-1".into()))
            .output()
            .with_context(|| format!("running workload {name}"))?;
        if !out.status.success() {
            bail!("workload {name} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("reading workload {name}'s timing"))?;
        ours.insert(name.clone(), v);
    }
    let torch = if args.skip_torch { None } else { Some(run_torch(&names, &args)?) };

    println!("{:<20} {:>12} {:>12} {:>9} {:>10}", "workload", "usnet (s)", "torch (s)", "ratio", "peak MiB");
    let mut rows = Vec::new();
    for name in &names {
        let u = &ours[name];
        let um = u["median_s"].as_f64().unwrap_or(f64::NAN);
        let tm = torch.as_ref().and_then(|t| t["workloads"][torch_key(name)]["median_s"].as_f64());
        let ratio = tm.map(|t| um / t);
        let peak = u["peak_rss_bytes"].as_u64();
        println!(
            "{:<20} {:>12.4} {:>12} {:>9} {:>10}",
            name,
            um,
            tm.map_or("-".into(), |t| format!("{t:.4}")),
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            peak.map_or("-".into(), |p| format!("{:.0}", p as f64 / 1048576.0))
        );
        rows.push(json!({
            "workload": name,
            "usnet_median_s": um,
            "torch_median_s": tm,
            "ratio_usnet_over_torch": ratio,
            "usnet_peak_rss_bytes": peak,
            "usnet_samples_s": u["samples_s"],
            "torch_samples_s": torch.as_ref().map(|t| t["workloads"][torch_key(name)]["samples_s"].clone()),
        }));
    }
    let summary = json!({
        "backend": usnet::device::available_backends().first(),
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "torch": torch.as_ref().map(|t| t["torch"].clone()),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "workloads": rows,
    });
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    usnet::atomic_file::write_atomic(&args.output, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// The PyTorch script's name for a workload (`infer/b1/w1` -> `infer/b1/w1.0`).
fn torch_key(name: &str) -> String {
    match name.rsplit_once("/w") {
        Some((head, w)) if name.starts_with("infer/") => match w.parse::<f64>() {
            Ok(v) => format!("{head}/w{v:?}"),
            Err(_) => name.to_string(),
        },
        _ => name.to_string(),
    }
}

fn run_torch(names: &[String], args: &BenchArgs) -> anyhow::Result<Value> {
    let python = Path::new(".venv/bin/python");
    if !python.exists() {
        eprintln!("torch: creating .venv with bench/setup_venv.sh (first run only)");
        let ok = Command::new("bash").arg("bench/setup_venv.sh").status().context("running bench/setup_venv.sh")?;
        if !ok.success() {
            bail!("bench/setup_venv.sh failed; run it by hand to see why, or pass --skip-torch");
        }
    }
    let mut kinds = Vec::new();
    let (mut sandwich, mut infer_b, mut infer_w) = (Vec::new(), Vec::new(), Vec::new());
    for n in names {
        let parts: Vec<&str> = n.split('/').collect();
        match parts.as_slice() {
            ["sandwich", b] => {
                kinds.push("sandwich");
                sandwich.push(b.trim_start_matches('b').to_string());
            }
            ["calibrate"] => kinds.push("calibrate"),
            ["infer", b, w] => {
                kinds.push("infer");
                infer_b.push(b.trim_start_matches('b').to_string());
                infer_w.push(w.trim_start_matches('w').to_string());
            }
            _ => bail!("unknown workload {n:?}"),
        }
    }
    kinds.dedup();
    for v in [&mut sandwich, &mut infer_b, &mut infer_w] {
        v.sort();
        v.dedup();
    }
    let mut cmd = Command::new(python);
    cmd.arg("bench/torch_usnet.py")
        .args(["--workloads", &kinds.join(",")])
        .args(["--threads", &args.threads.to_string()])
        .args(["--warmup", &args.warmup.to_string(), "--repeats", &args.repeats.to_string()]);
    if !sandwich.is_empty() {
        cmd.args(["--sandwich-batch", &sandwich.join(",")]);
    }
    if !infer_b.is_empty() {
        cmd.args(["--infer-batch", &infer_b.join(","), "--infer-widths", &infer_w.join(",")]);
    }
    eprintln!("torch: {}", kinds.join(", "));
    let out = cmd.output().context("running bench/torch_usnet.py")?;
    if !out.status.success() {
        bail!("bench/torch_usnet.py failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("reading bench/torch_usnet.py's JSON")
}

//! `usnet bench`: usnet against PyTorch and ONNX Runtime on the same workloads, timed
//! interleaved in one run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Value};
use usnet::bench::Spread;

#[derive(Debug, Args)]
#[command(after_help = "Per workload, starts one worker process per side (usnet; PyTorch with bench/torch_usnet.py;\n\
for inference also ONNX Runtime with bench/ort_usnet.py, on the same network exported at that\n\
width), warms each up, then times the sides in turn (usnet, torch, ort, usnet, ...) for\n\
every repeat, so that a shared machine's drift falls on all sides alike. For inference each\n\
side's turn is a burst of --burst calls: the first comes after the pause that lets the\n\
previous side's threads go idle (a request to an idle server), the others back to back;\n\
both are reported. Reports per side the median and quartiles of the times, per repeat the\n\
ratio usnet/anchor (median and spread), the targets of issue 10 met or not, and the latency\n\
scaling over widths. scaling/bN times widths 1.0, 0.75, 0.5 and 0.35 of one network in\n\
one process per side (usnet, ORT), in turn within each of --scaling-repeats rounds, and\n\
reports latency(w)/latency(1.0) per round, so that the widths share the machine's drift:\n\
after the pause (call 1 of a burst of --scaling-burst), back to back (calls 2 to --burst)\n\
and steady (the rest), with what the first call costs on top of a steady one.\n\
Writes target/bench/summary.json and a markdown report (target/bench/summary.md) to paste into\n\
docs/performance.md. The Python side lives in .venv (bench/setup_venv.sh, run on first use).\n\n\
Examples:\n  usnet bench                       # all workloads, 2 threads, 10 interleaved repeats\n  usnet bench --quick --workloads infer/b1/w1.0,infer/b1/w0.5\n  usnet bench --workloads scaling/b1     # latency against width at batch 1 (about a minute)\n  usnet bench --skip-torch --skip-ort  # usnet only (no ratios)")]
pub struct BenchArgs {
    /// Comma list of workloads: sandwich/bN, calibrate, infer/bN/wW, scaling/bN.
    #[arg(long, default_value = "sandwich/b128,calibrate,infer/b1/w1.0,infer/b1/w0.75,infer/b1/w0.5,infer/b1/w0.35,infer/b32/w1.0,infer/b32/w0.75,infer/b32/w0.5,infer/b32/w0.35,scaling/b1")]
    workloads: String,
    /// Untimed warm-up calls per worker.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Interleaved timed rounds per workload (one turn per side each).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// One warm-up and three timed rounds.
    #[arg(long)]
    quick: bool,
    /// Threads for every side (RAYON_NUM_THREADS, torch.set_num_threads, ORT intra-op).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Pause after each side's calls, so that its spinning threads have gone idle before the
    /// next side runs (ONNX Runtime's threads spin for about 26 ms after a call).
    #[arg(long, default_value_t = 50)]
    settle_ms: u64,
    /// Back-to-back calls per side and repeat for inference: the first is timed after the
    /// pause ("after idle"), the others right after it ("back to back").
    #[arg(long, default_value_t = 4)]
    burst: usize,
    /// Interleaved rounds of the scaling/bN workloads (a round is a burst per width and side).
    #[arg(long, default_value_t = 30)]
    scaling_repeats: usize,
    /// Calls per burst in the scaling/bN workloads: the first after the pause, the next
    /// --burst - 1 back to back, and the rest ("steady", once the vCPUs have woken up).
    #[arg(long, default_value_t = 8)]
    scaling_burst: usize,
    /// Leave PyTorch out.
    #[arg(long)]
    skip_torch: bool,
    /// Leave ONNX Runtime out.
    #[arg(long)]
    skip_ort: bool,
    /// Where to write the summary (the markdown report goes beside it, as .md).
    #[arg(long, default_value = "target/bench/summary.json")]
    output: PathBuf,
    /// Internal: be the usnet worker of one workload (`run` lines on stdin).
    #[arg(long, hide = true)]
    serve: Option<String>,
}

/// Issue 10's targets: the most usnet may take, as a ratio of the anchor's time.
fn target(name: &str, anchor: &str) -> Option<f64> {
    match (name.split('/').next(), anchor) {
        (Some("infer"), "ort") => Some(1.0),
        (Some("sandwich"), "torch") => Some(0.67),
        (Some("calibrate"), "torch") => Some(0.8),
        _ => None,
    }
}

/// One worker process of one side: a JSON line per request.
struct Worker {
    side: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts `cmd` and waits for its `ready` line.
    fn start(side: &'static str, mut cmd: Command) -> anyhow::Result<(Worker, Value)> {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().with_context(|| format!("starting the {side} worker"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("{side} worker: no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("{side} worker: no stdout"))?);
        let mut w = Worker { side, child, stdin, stdout };
        let ready = w.read()?;
        if ready.get("ready").is_none() {
            bail!("{side} worker: expected a ready line, got {ready}");
        }
        Ok((w, ready))
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the {} worker exited early (its error is printed above)", self.side);
        }
        let v: Value = serde_json::from_str(line.trim()).with_context(|| format!("{} worker sent {line:?}", self.side))?;
        if let Some(e) = v.get("error") {
            bail!("{} worker: {e}", self.side);
        }
        Ok(v)
    }

    fn request(&mut self, cmd: &str) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{cmd}").and_then(|_| self.stdin.flush()).with_context(|| format!("writing to the {} worker", self.side))?;
        self.read()
    }

    /// Seconds of one timed call.
    fn run_once(&mut self) -> anyhow::Result<f64> {
        self.run_part(0)
    }

    /// Seconds of one timed call of part `k` (a width of `scaling/bN`).
    fn run_part(&mut self, k: usize) -> anyhow::Result<f64> {
        self.request(&format!("run {k}"))?["s"].as_f64().ok_or_else(|| anyhow!("{} worker: no time in its answer", self.side))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit").and_then(|_| self.stdin.flush());
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The usnet worker: this binary, one workload, its own process (so peak memory is per workload).
fn serve(name: &str, warmup: usize) -> anyhow::Result<()> {
    // As a deploying process would start (usnet::infer::init_global_pool's documentation).
    let pinned = usnet::infer::init_global_pool(None).context("building the thread pool")?;
    let device = usnet::device::device(None)?;
    let mut workload = usnet::bench::Workload::prepare(name, &device)?;
    for _ in 0..warmup {
        workload.call()?;
    }
    let mut out = std::io::stdout().lock();
    let ready = json!({"ready": name, "macs": workload.macs[0], "parts": workload.parts, "part_macs": workload.macs, "threads": rayon::current_num_threads(), "pinned_cpus": pinned});
    writeln!(out, "{ready}")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let answer = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["quit"] => break,
            ["run"] => json!({"s": workload.time_one()?}),
            ["run", k] if k.parse::<usize>().is_ok_and(|k| k < workload.parts.len()) => json!({"s": workload.time_part(k.parse()?)?}),
            ["info"] => json!({"peak_rss_bytes": usnet::bench::peak_rss()}),
            _ => json!({"error": format!("unknown command {:?}; expected run, run K (K < {}), info or quit", line.trim(), workload.parts.len())}),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

fn python_worker(script: &str, name: &str, args: &BenchArgs) -> Command {
    let mut cmd = Command::new(".venv/bin/python");
    cmd.arg(script).args(["--serve", name, "--threads", &args.threads.to_string(), "--warmup", &args.warmup.to_string()]);
    cmd.env("OMP_NUM_THREADS", args.threads.to_string());
    cmd
}

fn ensure_venv() -> anyhow::Result<()> {
    if Path::new(".venv/bin/python").exists() {
        return Ok(());
    }
    eprintln!("bench: creating .venv with bench/setup_venv.sh (first run only)");
    let ok = Command::new("bash").arg("bench/setup_venv.sh").status().context("running bench/setup_venv.sh")?;
    if !ok.success() {
        bail!("bench/setup_venv.sh failed; run it by hand to see why, or pass --skip-torch --skip-ort");
    }
    Ok(())
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.quick {
        args.warmup = 1;
        args.repeats = 3;
        args.scaling_repeats = args.scaling_repeats.min(6);
    }
    if let Some(name) = &args.serve {
        return serve(name, args.warmup);
    }
    args.repeats = args.repeats.max(1);
    let names: Vec<String> = args.workloads.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if !(args.skip_torch && args.skip_ort) {
        ensure_venv()?;
    }
    let exe = std::env::current_exe().context("locating the usnet binary")?;
    let load_before = loadavg();
    let mut rows = Vec::new();
    let mut pinned = Value::Null;
    for name in &names {
        eprintln!("bench: {name}");
        let mut usnet_cmd = Command::new(&exe);
        usnet_cmd
            .args(["bench", "--serve", name, "--warmup", &args.warmup.to_string()])
            .env("RAYON_NUM_THREADS", args.threads.to_string())
            // The allocator setting `usnet` makes at start-up, made from the first allocation.
            .env("MIMALLOC_PURGE_DELAY", std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_else(|_| "-1".into()));
        let (w, r) = Worker::start("usnet", usnet_cmd).with_context(|| format!("workload {name}"))?;
        pinned = r["pinned_cpus"].clone();
        let (mut workers, mut ready) = (vec![w], vec![r]);
        if name.starts_with("scaling/") {
            if !args.skip_ort {
                let (w, r) = Worker::start("ort", python_worker("bench/ort_usnet.py", name, &args)).with_context(|| format!("workload {name}"))?;
                workers.push(w);
                ready.push(r);
            }
            rows.push(scaling_run(name, &mut workers, &ready, &args).with_context(|| format!("workload {name}"))?);
            continue;
        }
        if !args.skip_torch {
            let (w, r) = Worker::start("torch", python_worker("bench/torch_usnet.py", name, &args)).with_context(|| format!("workload {name}"))?;
            workers.push(w);
            ready.push(r);
        }
        if !args.skip_ort && name.starts_with("infer/") {
            let (w, r) = Worker::start("ort", python_worker("bench/ort_usnet.py", name, &args)).with_context(|| format!("workload {name}"))?;
            workers.push(w);
            ready.push(r);
        }
        // Per side: the first call of each burst (after the pause), and the median of the
        // others (back to back).
        let burst = if name.starts_with("infer/") { args.burst.max(1) } else { 1 };
        let mut cold: Vec<Vec<f64>> = vec![Vec::with_capacity(args.repeats); workers.len()];
        let mut warm: Vec<Vec<f64>> = vec![Vec::with_capacity(args.repeats); workers.len()];
        for _ in 0..args.repeats {
            for ((w, c), h) in workers.iter_mut().zip(&mut cold).zip(&mut warm) {
                let times = (0..burst).map(|_| w.run_once()).collect::<anyhow::Result<Vec<f64>>>().with_context(|| format!("workload {name}"))?;
                c.push(times[0]);
                if let Some(m) = Spread::of(&times[1..]) {
                    h.push(m.median);
                }
                std::thread::sleep(Duration::from_millis(args.settle_ms));
            }
        }
        let peak = workers[0].request("info")?["peak_rss_bytes"].as_u64();
        let mut sides = serde_json::Map::new();
        for (((w, c), h), r) in workers.iter().zip(&cold).zip(&warm).zip(&ready) {
            sides.insert(w.side.into(), json!({"samples_s": c, "spread_s": Spread::of(c), "warm_samples_s": h, "warm_spread_s": Spread::of(h), "info": r}));
        }
        let mut ratios = serde_json::Map::new();
        for (i, w) in workers.iter().enumerate().skip(1) {
            let goal = target(name, w.side);
            let of = |s: &[Vec<f64>]| {
                let per_repeat: Vec<f64> = s[0].iter().zip(&s[i]).map(|(u, a)| u / a).collect();
                let spread = Spread::of(&per_repeat);
                json!({"per_repeat": per_repeat, "spread": spread, "target": goal, "met": goal.zip(spread).map(|(g, s)| s.median <= g)})
            };
            let mut ratio = of(&cold);
            ratio["warm"] = if burst > 1 { of(&warm) } else { Value::Null };
            ratios.insert(w.side.into(), ratio);
        }
        drop(workers);
        rows.push(json!({"workload": name, "macs": ready[0]["macs"], "usnet_peak_rss_bytes": peak, "sides": sides, "ratios": ratios}));
    }
    let summary = json!({
        "machine": {"cpu": cpu_model(), "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(), "loadavg_before_after": [load_before, loadavg()]},
        "backend": usnet::device::available_backends().first(),
        "isa": format!("{:?}", usnet::infer::simd::Isa::detect()),
        "threads": args.threads,
        "usnet_pinned_cpus": pinned,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "burst": args.burst,
        "settle_ms": args.settle_ms,
        "interleaved": true,
        "workloads": rows,
    });
    let report = markdown(&summary);
    println!("{report}");
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    usnet::atomic_file::write_atomic(&args.output, serde_json::to_string_pretty(&summary)?.as_bytes()).with_context(|| format!("writing {}", args.output.display()))?;
    let md = args.output.with_extension("md");
    usnet::atomic_file::write_atomic(&md, report.as_bytes()).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("wrote {} and {}", args.output.display(), md.display());
    Ok(())
}

/// The widths of one network timed in turn in one process per side (`scaling/bN`): per
/// repeat, each width's burst on each side, the order of the widths turned by one each repeat.
/// The ratio latency(w)/latency(1.0) is taken per repeat, after an idle pause, back to back
/// and steady, so that the machine's drift, which separate workloads minutes apart do not
/// share, falls on all widths alike. Also per repeat: the first call's surcharge over the
/// steady calls of its burst.
fn scaling_run(name: &str, workers: &mut [Worker], ready: &[Value], args: &BenchArgs) -> anyhow::Result<Value> {
    let parts: Vec<String> = serde_json::from_value(ready[0]["parts"].clone()).context("the usnet worker's parts")?;
    let macs: Vec<f64> = ready[0]["part_macs"].as_array().map(|m| m.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    if parts.len() < 2 || macs.len() != parts.len() {
        bail!("the usnet worker sent parts {parts:?} and MACs {macs:?}: expected one of each per width");
    }
    // The Python workers keep their own list of the widths (ort_usnet.py's SCALING_WIDTHS).
    let ours: Vec<Option<f64>> = parts.iter().map(|p| p.trim_start_matches('w').parse().ok()).collect();
    for (w, r) in workers.iter().zip(ready).skip(1) {
        let theirs: Vec<Option<f64>> = r["width"].as_array().map(|a| a.iter().map(Value::as_f64).collect()).unwrap_or_default();
        if theirs != ours {
            bail!("the {} worker runs widths {} but usnet's runs {parts:?}: bench/ort_usnet.py's SCALING_WIDTHS must match usnet::bench::SCALING_WIDTHS", w.side, r["width"]);
        }
    }
    // Calls 2..=`burst` of a burst are "back to back", as in the infer rows; the rest "steady".
    let burst = args.burst.max(1);
    let calls = args.scaling_burst.max(burst);
    let repeats = args.scaling_repeats.max(1);
    // [side][part]: every call of each burst.
    let mut bursts = vec![vec![Vec::with_capacity(repeats); parts.len()]; workers.len()];
    for r in 0..repeats {
        for j in 0..parts.len() {
            let k = (j + r) % parts.len();
            for (side, w) in workers.iter_mut().enumerate() {
                bursts[side][k].push((0..calls).map(|_| w.run_part(k)).collect::<anyhow::Result<Vec<f64>>>()?);
                std::thread::sleep(Duration::from_millis(args.settle_ms));
            }
        }
    }
    let batch1 = name == "scaling/b1";
    let mut sides = serde_json::Map::new();
    for (side, w) in workers.iter().enumerate() {
        // [part]: per repeat, the median of the calls `range` of its burst.
        let protocol = |range: std::ops::Range<usize>| -> Vec<Vec<f64>> {
            bursts[side].iter().map(|b| b.iter().filter_map(|t| Spread::of(&t[range.clone()]).map(|s| s.median)).collect()).collect()
        };
        // The first call of each burst, the median of calls 2..=burst, and of the rest.
        let (cold, warm, steady) = (protocol(0..1), protocol(1..burst), protocol(burst..calls));
        let widths: Vec<Value> = (0..parts.len())
            .map(|k| {
                let of = |s: &[Vec<f64>]| {
                    let per_repeat: Vec<f64> = s[k].iter().zip(&s[0]).map(|(t, t1)| t / t1).collect();
                    json!({"per_repeat": per_repeat, "spread": Spread::of(&per_repeat)})
                };
                let mac = macs[k] / macs[0];
                // Issue 10's bound holds at batch 1 for w >= 0.5 (the width is parts[k], "w0.5").
                let bounded = batch1 && parts[k].trim_start_matches('w').parse::<f64>().is_ok_and(|w| (0.5..1.0).contains(&w));
                let bound = bounded.then_some(1.2 * mac);
                let met = |r: &Value| bound.zip(r["spread"]["median"].as_f64()).map(|(b, m)| m <= b);
                let (mut idle, mut b2b, mut calm) = (of(&cold), of(&warm), of(&steady));
                for r in [&mut idle, &mut b2b, &mut calm] {
                    r["met"] = json!(met(r));
                }
                // What the first call after the pause costs on top of a steady call, per repeat.
                let surcharge: Vec<f64> = cold[k].iter().zip(&steady[k]).map(|(c, s)| c - s).collect();
                json!({"width": parts[k], "macs": macs[k], "macs_ratio": mac, "bound": bound,
                       "samples_s": cold[k], "warm_samples_s": warm[k], "steady_samples_s": steady[k], "burst_samples_s": bursts[side][k],
                       "after_idle": idle, "back_to_back": b2b, "steady": calm,
                       "steady_spread_s": Spread::of(&steady[k]), "surcharge_spread_s": Spread::of(&surcharge)})
            })
            .collect();
        sides.insert(w.side.into(), json!(widths));
    }
    Ok(json!({"workload": name, "repeats": repeats, "burst": calls, "back_to_back_calls": burst - 1, "scaling": sides}))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{:.2}", s * 1e3))
}

/// The report: times per side, ratios against their targets, and latency scaling over widths,
/// after an idle pause and (inference) back to back.
fn markdown(summary: &Value) -> String {
    let m = &summary["machine"];
    let mut out = format!(
        "Machine: {} ({} CPUs), {} threads per side (usnet's {}), kernels {}, {} interleaved repeats after {} warm-up calls, {} ms pause after each side's calls, bursts of {} inference calls; load average {} before, {} after.\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cpus"],
        summary["threads"],
        summary["usnet_pinned_cpus"].as_array().map_or("not pinned".into(), |c| format!("pinned to CPUs {}", c.iter().map(Value::to_string).collect::<Vec<_>>().join(", "))),
        summary["isa"].as_str().unwrap_or("?"),
        summary["repeats"],
        summary["warmup"],
        summary["settle_ms"],
        summary["burst"],
        m["loadavg_before_after"][0],
        m["loadavg_before_after"][1]
    );
    let rows = summary["workloads"].as_array().cloned().unwrap_or_default();
    for warm in [false, true] {
        let (times, title) = if warm {
            ("warm_spread_s", "Back to back (the other calls of each burst, their median per repeat)")
        } else {
            ("spread_s", "After an idle pause (the first call of each burst)")
        };
        let ratio_of = |r: &Value, s: &str| if warm { r["ratios"][s]["warm"].clone() } else { r["ratios"][s].clone() };
        let shown: Vec<&Value> = rows.iter().filter(|r| r.get("sides").is_some() && (!warm || !r["sides"]["usnet"]["warm_spread_s"].is_null())).collect();
        if shown.is_empty() {
            continue;
        }
        out += &format!("\n{title}:\n\n| workload | usnet ms (median [q1, q3]) | torch ms | ORT ms | usnet/torch median [min, q1, q3, max] | usnet/ORT median [min, q1, q3, max] | target | met |\n|---|---|---|---|---|---|---|---|\n");
        for r in &shown {
            let side = |s: &str| {
                let sp = &r["sides"][s][times];
                if sp.is_null() { "-".to_string() } else { format!("{} [{}, {}]", ms(sp["median"].as_f64()), ms(sp["q1"].as_f64()), ms(sp["q3"].as_f64())) }
            };
            let ratio = |s: &str| {
                let sp = &ratio_of(r, s)["spread"];
                if sp.is_null() {
                    "-".to_string()
                } else {
                    let f = |k: &str| sp[k].as_f64().map_or("?".into(), |v| format!("{v:.2}"));
                    format!("**{}x** [{}, {}, {}, {}]", f("median"), f("min"), f("q1"), f("q3"), f("max"))
                }
            };
            let (goal, met) = ["ort", "torch"]
                .iter()
                .find_map(|s| ratio_of(r, s)["target"].as_f64().map(|g| (format!("<= {g}x {s}"), ratio_of(r, s)["met"].as_bool())))
                .unwrap_or(("-".into(), None));
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r["workload"].as_str().unwrap_or("?"),
                side("usnet"),
                side("torch"),
                side("ort"),
                ratio("torch"),
                ratio("ort"),
                goal,
                met.map_or("-", |m| if m { "yes" } else { "no" })
            );
        }
        out += &scaling(&shown, times, title);
    }
    for r in rows.iter().filter(|r| r.get("scaling").is_some()) {
        out += &interleaved_scaling(r);
    }
    out
}

/// The tables of a `scaling/bN` row: per width, latency(w)/latency(1.0) taken per repeat
/// (median [q1, q3]) after an idle pause, back to back and steady, against issue 10's bound;
/// then what the first call after a pause costs on top of a steady one.
fn interleaved_scaling(row: &Value) -> String {
    let name = row["workload"].as_str().unwrap_or("?");
    let usnet = row["scaling"]["usnet"].as_array().cloned().unwrap_or_default();
    let ort = row["scaling"]["ort"].as_array();
    let cell = |w: Option<&Value>, protocol: &str| {
        let sp = w.map_or(&Value::Null, |w| &w[protocol]["spread"]);
        let f = |k: &str| sp[k].as_f64().map_or("?".into(), |v| format!("{v:.3}"));
        if sp.is_null() { "-".into() } else { format!("**{}** [{}, {}]", f("median"), f("q1"), f("q3")) }
    };
    let met = |w: &Value, protocol: &str| w[protocol]["met"].as_bool().map_or("-", |m| if m { "yes" } else { "no" });
    let mut table = String::new();
    for (k, w) in usnet.iter().enumerate() {
        let o = ort.and_then(|o| o.get(k));
        table += &format!(
            "| {} | {:.0} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            w["width"].as_str().unwrap_or("?"),
            w["macs"].as_f64().unwrap_or(f64::NAN) / 1e6,
            w["macs_ratio"].as_f64().unwrap_or(f64::NAN),
            w["bound"].as_f64().map_or("-".into(), |b| format!("{b:.3}")),
            cell(Some(w), "after_idle"),
            met(w, "after_idle"),
            cell(Some(w), "back_to_back"),
            met(w, "back_to_back"),
            cell(Some(w), "steady"),
            met(w, "steady"),
            cell(o, "after_idle"),
            cell(o, "back_to_back"),
            cell(o, "steady"),
        );
    }
    // The surcharge of the first call, and the after-idle ratio it leaves even to a forward
    // whose steady cost is exactly proportional to the MACs.
    let median = |w: Option<&Value>, key: &str| w.and_then(|w| w[key]["median"].as_f64());
    let mut surcharges = String::new();
    for (k, w) in usnet.iter().enumerate() {
        let o = ort.and_then(|o| o.get(k));
        let floor = |side: Option<&Value>, full: Option<&Value>| {
            let (s1, c1) = (median(full, "steady_spread_s"), median(full, "surcharge_spread_s"));
            let (c, mac) = (median(side, "surcharge_spread_s"), side.and_then(|w| w["macs_ratio"].as_f64()));
            match (s1, c1, c, mac) {
                (Some(s1), Some(c1), Some(c), Some(mac)) => format!("{:.3}", (mac * s1 + c) / (s1 + c1)),
                _ => "-".into(),
            }
        };
        surcharges += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            w["width"].as_str().unwrap_or("?"),
            ms(median(Some(w), "steady_spread_s")),
            ms(median(Some(w), "surcharge_spread_s")),
            floor(Some(w), usnet.first()),
            ms(median(o, "steady_spread_s")),
            ms(median(o, "surcharge_spread_s")),
            floor(o, ort.and_then(|o| o.first())),
        );
    }
    format!(
        "\nLatency scaling, widths interleaved ({name}: one network per side, its widths timed in turn in one process, {} repeats of bursts of {} calls: the first after the pause, the next {} back to back, the rest steady; latency(w)/latency(1.0) per repeat, median [q1, q3]; target at batch 1, w >= 0.5: <= 1.2 x MACs(w)/MACs(1.0)):\n\n| width | MMACs | MACs(w)/MACs(1.0) | bound | usnet after an idle pause | met | usnet back to back | met | usnet steady | met | ORT after an idle pause | ORT back to back | ORT steady |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n{table}\n\
         The first call after a pause, against a steady call ({name}; medians over repeats, ms). The surcharge is the first call's time minus the steady calls' median in the same burst; the last column of each side is the ratio after an idle pause that a forward would reach if its steady cost were exactly MACs(w)/MACs(1.0) of w1.0's and it paid the same surcharges:\n\n\
         | width | usnet steady ms | usnet surcharge ms | usnet after idle at MAC-proportional cost | ORT steady ms | ORT surcharge ms | ORT after idle at MAC-proportional cost |\n|---|---|---|---|---|---|---|\n{surcharges}",
        row["repeats"],
        row["burst"],
        row["back_to_back_calls"],
    )
}

/// Latency scaling: each inference batch size against its w1.0 row, on usnet's `times`, with
/// ONNX Runtime's own scaling beside it (the anchor pays per-layer costs too).
fn scaling(rows: &[&Value], times: &str, title: &str) -> String {
    let infer: Vec<(&str, f64, f64, f64, Option<f64>)> = rows
        .iter()
        .filter_map(|r| {
            let name = r["workload"].as_str()?;
            let (head, w) = name.strip_prefix("infer/")?.rsplit_once("/w")?;
            let median = |side: &str| r["sides"][side][times]["median"].as_f64();
            Some((head, w.parse::<f64>().ok()?, median("usnet")?, r["macs"].as_f64()?, median("ort")))
        })
        .collect();
    let mut table = String::new();
    for &(batch, w, t, macs, ort) in &infer {
        let Some(&(_, _, t1, macs1, ort1)) = infer.iter().find(|(b, w1, ..)| *b == batch && *w1 == 1.0) else { continue };
        let (lat, mac) = (t / t1, macs / macs1);
        let ort_lat = ort.zip(ort1).map_or("-".into(), |(o, o1)| format!("{:.3}", o / o1));
        table += &format!("| {batch} | {w} | {:.0} | {:.2} | {mac:.3} | {lat:.3} | {ort_lat} |\n", macs / 1e6, t * 1e3);
    }
    if table.is_empty() {
        return table;
    }
    format!(
        "\nLatency scaling across the workloads above, {} (usnet medians; each width was timed in its own process, minutes from the others, so the machine's drift between them is not cancelled: issue 10's bound is judged on the scaling/bN table, where the widths are interleaved):\n\n| batch | width | MMACs | usnet ms | MACs(w)/MACs(1.0) | latency(w)/latency(1.0) | ORT latency(w)/latency(1.0) |\n|---|---|---|---|---|---|---|\n{table}",
        title.split(" (").next().unwrap_or(title).to_lowercase()
    )
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

//! `usnet search`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use usnet::checkpoint::resolve;
use usnet::config::TrainingMode;
use usnet::dataset::{first_batches, ExperimentData};
use usnet::plot::{write_figure, Curve, Figure, Panel};
use usnet::profile::width_cost;
use usnet::search::latency::{self, EngineTimer, LatencyCheck, LatencyCost, LatencyTable, TableContext};
use usnet::search::{
    search_then_test, Budget, Candidate, Cost, CostKind, EvolutionSettings, MacsCost, Search, SearchSpace, Strategy,
    StrategyResult, ValidationScorer,
};
use usnet::{Error, WidthSpec};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  usnet search --checkpoint runs/default --budget macs=2M                 # best uniform width
  usnet search --checkpoint runs/nonuniform --budget macs=2M --per-stage  # evolution, per stage
  usnet search --checkpoint runs/nonuniform --budget latency=1ms --strategy uniform,greedy,evolution \\
               --json search.json --plot search.png

Each candidate's BN statistics are calibrated for it (the run's bn_cal_batch_num batches),
then it is scored on the run's validation split (validation_size images held out of the
training set). The test images are read once, at the end, for the networks on the Pareto
fronts only. The chosen spec prints as `eval --widths`, `calibrate --widths` and `export`
take it. Latency budgets use a per-layer table measured with usnet's own inference on this
machine, stored as latency_table.json beside the checkpoint and reused while the machine,
threads, batch and usnet version stay the same.")]
pub struct SearchArgs {
    /// Checkpoint file, or a run directory holding checkpoint.safetensors (a US-Net trained
    /// with validation_size > 0).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The most a network may cost: `macs=N` (MACs per image, suffix K, M or G, e.g.
    /// macs=2.5M) or `latency=T` (per batch of --batch images, unit us, ms or s, e.g.
    /// latency=1ms). No chosen network ever exceeds it.
    #[arg(long)]
    budget: Budget,
    /// Search a width per stage (the stem, then each block-table row): the default strategy
    /// becomes evolution instead of uniform.
    #[arg(long)]
    per_stage: bool,
    /// Strategies, comma separated: `uniform` (the best single width, by bisection),
    /// `greedy` (AutoSlim's rule, per stage) and `evolution` (Once-for-All's, per stage).
    /// Default: uniform, or evolution with --per-stage.
    #[arg(long, value_enum, value_delimiter = ',')]
    strategy: Vec<StrategyArg>,
    /// Images per forward for latency.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Compute threads (default: one per core); latency tables are kept per thread count.
    #[arg(long)]
    threads: Option<usize>,
    /// Step of the width grid each stage chooses from (the model's range, both ends included).
    #[arg(long, default_value_t = 0.05)]
    step: f64,
    /// Evolution: candidates per generation (OFA: 100).
    #[arg(long, default_value_t = 16)]
    population: usize,
    /// Evolution: generations (OFA: 500).
    #[arg(long, default_value_t = 10)]
    generations: usize,
    /// Seed of the evolution; the same seed gives the same search.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop each strategy after this long with its best so far, e.g. 90s, 5m, 1h.
    #[arg(long, value_parser = parse_duration)]
    time_limit: Option<Duration>,
    /// Calibration batches per candidate (default: the run's bn_cal_batch_num).
    #[arg(long)]
    batches: Option<usize>,
    /// Latency budgets: candidates whose per-layer sum is checked against a whole-network timing.
    #[arg(long, default_value_t = 3)]
    latency_checks: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a plot of each strategy's front (validation top-1 against cost) to this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// `--strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StrategyArg {
    Uniform,
    Greedy,
    Evolution,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Uniform => Strategy::Uniform,
            StrategyArg::Greedy => Strategy::Greedy,
            StrategyArg::Evolution => Strategy::Evolution,
        }
    }
}

/// `90s`, `5m`, `1h`, `1.5m` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    digits
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v * scale < 1e9)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("{s:?} is not a duration; expected seconds or a number with s, m or h, such as 90s or 5m"))
}

/// One network in the results.
#[derive(Debug, Serialize)]
struct Row {
    spec: String,
    /// In the budget's unit: MACs per image, or seconds per batch.
    cost: f64,
    macs: u64,
    validation_top1: f64,
    test_top1: Option<f64>,
}

#[derive(Debug, Serialize)]
struct StrategyReport {
    strategy: Strategy,
    best: Row,
    front: Vec<Row>,
    evaluations: usize,
    stopped_by_time_limit: bool,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    path: String,
    context: TableContext,
    entries: usize,
    measured_now: usize,
    checks: Vec<LatencyCheck>,
    mean_abs_error_pct: f64,
}

/// A spec and its cost in the budget's unit.
#[derive(Debug, Serialize)]
struct Ends {
    spec: String,
    cost: f64,
    macs: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    checkpoint: String,
    budget: String,
    cost_kind: CostKind,
    budget_limit: f64,
    per_stage: bool,
    grid: Vec<f64>,
    /// Every group at the grid's smallest width, and at its largest: the range of costs.
    cheapest: Ends,
    largest: Ends,
    evolution: EvolutionSettings,
    calibration_batches: usize,
    validation_images: usize,
    test_images: usize,
    strategies: Vec<StrategyReport>,
    latency: Option<LatencyReport>,
    seconds: f64,
}

pub fn run(args: SearchArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(args.population >= 2, "--population must be at least 2");
    anyhow::ensure!(args.generations >= 1, "--generations must be at least 1");
    if let Some(n) = args.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        usnet::infer::init_global_pool(Some(n)).context("setting --threads")?;
    } else {
        // Latency budgets are timed on this pool: one thread per CPU, pinned where it can be.
        let _ = usnet::infer::init_global_pool(None);
    }
    let strategies: Vec<Strategy> = match args.strategy.as_slice() {
        [] if args.per_stage => vec![Strategy::Evolution],
        [] => vec![Strategy::Uniform],
        given => given.iter().map(|&s| s.into()).collect(),
    };
    let path = resolve(&args.checkpoint);
    let device = usnet::device::device(None)?;
    let ck = super::load_checkpoint(&path, &device)?;
    anyhow::ensure!(
        ck.config.mode == TrainingMode::Universal,
        "{}: search needs a US-Net (mode = \"universal\"), which runs at any width; this run is {:?}",
        path.display(),
        ck.config.mode
    );
    let data = ExperimentData::load(&ck.config).with_context(|| format!("loading the data of {}", path.display()))?;
    let validation = data.validation.as_ref().ok_or(Error::NoValidationSplit).with_context(|| path.display().to_string())?;
    let [_, h, w] = data.test.sample_shape();
    let model = ck.model.clone().into_inference();
    let space = SearchSpace::grid(&model, args.step).with_context(|| format!("--step {}", args.step))?;
    let n = args.batches.unwrap_or(ck.config.bn_cal_batch_num);
    anyhow::ensure!(n >= 1, "--batches must be at least 1");
    let batches = first_batches(&data.calibration, n, &device)?;
    let mut scorer = ValidationScorer::new(&model, batches.clone(), validation, &device);
    let mut test = ValidationScorer::new(&model, batches, &data.test, &device);

    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let table_path = dir.join(latency::FILE_NAME);
    let mut macs = MacsCost { model: &model, input_size: h };
    let mut latency = match args.budget.kind {
        CostKind::Macs => None,
        CostKind::Latency => {
            let context = TableContext::here(args.batch, [h, w]);
            let (table, note) = LatencyTable::open(&table_path, context);
            if let Some(note) = note {
                eprintln!("{note}");
            }
            eprintln!("latency table {}: {} layer shape(s) stored", table_path.display(), table.seconds.len());
            let timer = EngineTimer::new(&model, args.batch, [h, w], &device);
            Some(LatencyCost::new(&model, table, Box::new(timer), Some(table_path.clone())))
        }
    };
    let cost: &mut dyn Cost = match &mut latency {
        Some(l) => l,
        None => &mut macs,
    };

    let kind = args.budget.kind;
    let mut end = |genes: Vec<usize>| -> anyhow::Result<Ends> {
        let spec = space.spec(&genes);
        Ok(Ends { cost: cost.cost(&spec)?, spec: spec.to_string(), macs: width_cost(&model, &spec, h)?.macs })
    };
    let (cheapest, largest) = (end(space.cheapest())?, end(space.largest())?);
    let mut search = Search::new(space.clone(), args.budget, &mut scorer, cost).with_context(|| path.display().to_string())?;
    search.time_limit = args.time_limit;
    search.evolution = EvolutionSettings { population: args.population, generations: args.generations, seed: args.seed, ..EvolutionSettings::default() };
    let pb = super::progress::bar(0, "search");
    let bar = pb.clone();
    search.on_progress(move |p| {
        bar.set_length(p.expected.max(p.evaluations) as u64);
        bar.set_position(p.evaluations as u64);
        let best = p.best.map_or_else(|| "none within the budget yet".to_string(), |b| {
            format!("best {} {:.2}% at {}", b.spec, b.validation_top1, kind.format(b.cost))
        });
        bar.set_message(format!("{} {best}", p.strategy.name()));
    });
    let results = search_then_test(&mut search, &strategies, &mut test).with_context(|| format!("searching {}", path.display()))?;
    drop(search);
    pb.finish_and_clear();

    let latency_report = latency.as_mut().map(|l| check_latency(l, &results, &space, args.latency_checks, &table_path)).transpose()?;
    let to_row = |c: &Candidate| -> anyhow::Result<Row> {
        let spec: WidthSpec = c.spec.parse()?;
        Ok(Row { spec: c.spec.clone(), cost: c.cost, macs: width_cost(&model, &spec, h)?.macs, validation_top1: c.validation_top1, test_top1: c.test_top1 })
    };
    let reports = results
        .iter()
        .map(|r| {
            Ok(StrategyReport {
                strategy: r.strategy,
                best: to_row(&r.best)?,
                front: r.front.iter().map(to_row).collect::<anyhow::Result<_>>()?,
                evaluations: r.evaluations,
                stopped_by_time_limit: r.stopped_by_time_limit,
                seconds: r.seconds,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_table(&reports, &args.budget);
    if let Some(l) = &latency_report {
        eprintln!(
            "latency: per-layer sums against whole-network timings, mean |error| {:.1}% over {} network(s); \
             {} shape(s) in {} ({} measured now)",
            l.mean_abs_error_pct,
            l.checks.len(),
            l.entries,
            l.path,
            l.measured_now
        );
    }
    let report = Report {
        checkpoint: path.display().to_string(),
        budget: args.budget.to_string(),
        cost_kind: kind,
        budget_limit: args.budget.limit,
        per_stage: strategies.iter().any(|s| *s != Strategy::Uniform),
        grid: space.choices.iter().map(|w| w.get()).collect(),
        cheapest,
        largest,
        evolution: EvolutionSettings { population: args.population, generations: args.generations, seed: args.seed, ..EvolutionSettings::default() },
        calibration_batches: n,
        validation_images: validation.num_samples(),
        test_images: data.test.num_samples(),
        strategies: reports,
        latency: latency_report,
        seconds: start.elapsed().as_secs_f64(),
    };
    if let Some(json) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        usnet::atomic_file::write_atomic(json, text.as_bytes()).with_context(|| format!("writing {}", json.display()))?;
        eprintln!("wrote {}", json.display());
    }
    if let Some(plot) = &args.plot {
        write_plot(plot, &report)?;
        eprintln!("wrote {}", plot.display());
    }
    Ok(())
}

/// Saves the latency table, then checks its sums against whole-network timings of the chosen
/// networks and the grid's ends.
fn check_latency(cost: &mut LatencyCost, results: &[StrategyResult], space: &SearchSpace, n: usize, path: &Path) -> anyhow::Result<LatencyReport> {
    cost.save().with_context(|| format!("saving the latency table {}", path.display()))?;
    let mut specs: Vec<WidthSpec> = Vec::new();
    let ends = [space.spec(&space.cheapest()), space.spec(&space.largest())];
    for spec in results.iter().map(|r| space.spec(&r.best.genes)).chain(ends) {
        if specs.len() < n && !specs.contains(&spec) {
            specs.push(spec);
        }
    }
    let checks = cost.check(&specs).context("timing whole networks to check the latency table")?;
    let mean_abs_error_pct = if checks.is_empty() { 0.0 } else { checks.iter().map(|c| c.error_pct.abs()).sum::<f64>() / checks.len() as f64 };
    cost.save().with_context(|| format!("saving the latency table {}", path.display()))?;
    Ok(LatencyReport {
        path: path.display().to_string(),
        context: cost.table.context.clone(),
        entries: cost.table.seconds.len(),
        measured_now: cost.measured,
        checks,
        mean_abs_error_pct,
    })
}

fn print_table(reports: &[StrategyReport], budget: &Budget) {
    println!("budget {budget}: the most accurate network of each strategy (*), and its Pareto front");
    println!("{:<10} {:>40} {:>12} {:>10} {:>10} {:>10}", "strategy", "width", "cost", "MACs", "val top-1", "test top-1");
    for r in reports {
        for row in &r.front {
            let mark = if row.spec == r.best.spec { "*" } else { " " };
            let test = row.test_top1.map_or_else(|| "-".to_string(), |t| format!("{t:.2}%"));
            println!(
                "{:<10} {:>40} {:>12} {:>9.2}M {:>9.2}% {:>10}{mark}",
                r.strategy.name(),
                row.spec,
                budget.kind.format(row.cost).replace(" MACs", ""),
                row.macs as f64 / 1e6,
                row.validation_top1,
                test
            );
        }
        let stop = if r.stopped_by_time_limit { ", stopped by --time-limit" } else { "" };
        println!("{:<10} {} candidate(s) scored in {:.1}s{stop}", "", r.evaluations, r.seconds);
    }
}

fn write_plot(path: &Path, report: &Report) -> anyhow::Result<()> {
    let scale = match report.cost_kind {
        CostKind::Macs => 1e-6,
        CostKind::Latency => 1e3,
    };
    let curves: Vec<Curve> = report
        .strategies
        .iter()
        .map(|s| Curve::new(s.strategy.name(), s.front.iter().map(|r| (r.cost * scale, r.validation_top1)).collect()))
        .collect();
    let x_label = match report.cost_kind {
        CostKind::Macs => "MMACs per image",
        CostKind::Latency => "ms per batch",
    };
    let title = format!("Search under {}: validation top-1 of each strategy's front", report.budget);
    let figure = Figure { title, panels: vec![Panel { curves, ..Panel::new("", x_label, "validation top-1 (%)") }] };
    write_figure(path, &figure).with_context(|| format!("writing the plot {}", path.display()))
}

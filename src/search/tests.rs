//! Strategies on a fake accuracy and cost oracle; the latency table with a fake timer.

use std::cell::RefCell;
use std::rc::Rc;

use super::latency::{layer_shapes, EngineTimer, LatencyCost, LatencyTable, LayerShape, LayerTimer, TableContext};
use super::*;
use crate::width::Width;
use crate::{Init, UsNet};

/// Importance of each group: the fake accuracy gains most from the later stages.
const WEIGHTS: [f64; 4] = [0.5, 1.0, 2.0, 4.0];
/// Cost per unit of width squared of each group: the early stages are the expensive ones.
const COSTS: [f64; 4] = [40.0, 20.0, 10.0, 5.0];

fn space() -> SearchSpace {
    SearchSpace { choices: (1..=10).map(|i| Width::new(i as f64 / 10.0).unwrap()).collect(), groups: 4 }
}

fn widths(spec: &WidthSpec) -> Vec<f64> {
    match spec {
        WidthSpec::Uniform(w) => vec![w.get(); 4],
        WidthSpec::PerStage(ws) => ws.iter().map(|w| w.get()).collect(),
    }
}

/// A concave accuracy in every group's width.
fn fake_top1(spec: &WidthSpec) -> f64 {
    widths(spec).iter().zip(WEIGHTS).map(|(w, a)| a * (1.0 + 5.0 * w).ln()).sum()
}

fn fake_cost(spec: &WidthSpec) -> f64 {
    widths(spec).iter().zip(COSTS).map(|(w, c)| c * w * w).sum()
}

/// Records every spec it scores, in a log shared with other scorers.
struct FakeScorer {
    name: &'static str,
    log: Rc<RefCell<Vec<(&'static str, String)>>>,
}

impl Scorer for FakeScorer {
    fn top1(&mut self, spec: &WidthSpec) -> Result<f64> {
        self.log.borrow_mut().push((self.name, spec.to_string()));
        Ok(fake_top1(spec))
    }
}

#[derive(Default)]
struct FakeCost {
    calls: usize,
}

impl Cost for FakeCost {
    fn kind(&self) -> CostKind {
        CostKind::Macs
    }

    fn cost(&mut self, spec: &WidthSpec) -> Result<f64> {
        self.calls += 1;
        Ok(fake_cost(spec))
    }
}

fn scorer(name: &'static str, log: &Rc<RefCell<Vec<(&'static str, String)>>>) -> FakeScorer {
    FakeScorer { name, log: log.clone() }
}

fn budget(limit: f64) -> Budget {
    Budget { kind: CostKind::Macs, limit }
}

/// Runs `f` on a search of the fake oracle under a MACs budget of `limit`; returns what `f`
/// returns, the specs scored in order and the cost oracle's calls.
fn with_search<R>(limit: f64, f: impl FnOnce(&mut Search<'_>) -> R) -> (R, Vec<String>, usize) {
    let log = Rc::default();
    let (mut s, mut c) = (scorer("validation", &log), FakeCost::default());
    let result = f(&mut Search::new(space(), budget(limit), &mut s, &mut c).unwrap());
    let scored = log.borrow().iter().map(|(_, s)| s.clone()).collect();
    (result, scored, c.calls)
}

/// Budgets from just above the cheapest (0.75) to just below the largest (75).
const BUDGETS: [f64; 6] = [0.8, 3.0, 10.0, 25.0, 50.0, 74.0];

#[test]
fn greedy_never_exceeds_the_budget_and_beats_uniform_where_stages_differ() {
    let greedy_and_uniform = |limit| with_search(limit, |s| (s.run(Strategy::Greedy).unwrap(), s.run(Strategy::Uniform).unwrap())).0;
    for limit in BUDGETS {
        let (greedy, uniform) = greedy_and_uniform(limit);
        assert!(greedy.best.cost <= limit, "budget {limit}: {:?}", greedy.best);
        assert!(greedy.front.iter().all(|c| c.cost <= limit));
        assert_eq!(greedy.best.validation_top1, fake_top1(&greedy.best.spec.parse().unwrap()));
        assert_eq!(greedy.best.cost, fake_cost(&greedy.best.spec.parse().unwrap()));
        // Spending the budget on the cheap, important late stages wins on this oracle.
        assert!(greedy.best.validation_top1 >= uniform.best.validation_top1, "budget {limit}: {greedy:?} vs {uniform:?}");
    }
    // Mid-range, strictly, with a per-stage spec.
    let (greedy, uniform) = greedy_and_uniform(10.0);
    assert!(greedy.best.spec.contains('/'), "{:?}", greedy.best);
    assert!(greedy.best.validation_top1 > uniform.best.validation_top1 + 0.5);
}

#[test]
fn uniform_bisection_finds_the_widest_width_within_the_budget() {
    let space = space();
    for limit in BUDGETS.into_iter().chain([75.0, 1000.0]) {
        let (result, _, calls) = with_search(limit, |s| s.run(Strategy::Uniform).unwrap());
        // Brute force over the grid: the most accurate uniform width within the budget.
        let want = (0..space.choices.len())
            .map(|i| space.spec(&space.uniform(i)))
            .filter(|s| fake_cost(s) <= limit)
            .max_by(|a, b| fake_top1(a).total_cmp(&fake_top1(b)))
            .unwrap();
        assert_eq!(result.best.spec, want.to_string(), "budget {limit}");
        assert!(!result.best.spec.contains('/'));
        // Bisection: the cheapest (checked up front), the widest, then log2(10) steps.
        assert!(calls <= 2 + 4, "budget {limit}: {calls} cost calls");
    }
}

#[test]
fn evolution_is_repeatable_with_a_seed_and_respects_the_budget() {
    let run = |seed: u64, limit: f64| {
        with_search(limit, |s| {
            s.evolution = EvolutionSettings { seed, population: 12, generations: 6, ..EvolutionSettings::default() };
            s.run(Strategy::Evolution).unwrap()
        })
    };
    for limit in BUDGETS {
        let (a, scored, _) = run(7, limit);
        let (b, scored_again, _) = run(7, limit);
        assert_eq!(scored, scored_again, "the same seed scores the same candidates in the same order");
        assert_eq!(a.best, b.best);
        assert_eq!(a.front, b.front);
        // The budget is a hard constraint: no candidate over it is even scored.
        for spec in &scored {
            assert!(fake_cost(&spec.parse().unwrap()) <= limit, "budget {limit}: scored {spec}");
        }
        // Tight budgets hold only a handful of networks; wider ones are explored past the
        // first population.
        assert!(a.evaluations > 12 || limit < 10.0, "budget {limit}: {}", a.evaluations);
    }
    let (a, ..) = run(1, 25.0);
    let (b, ..) = run(2, 25.0);
    let (c, ..) = run(3, 25.0);
    assert!(a.front != b.front || b.front != c.front, "different seeds explore differently");
}

#[test]
fn a_budget_below_the_cheapest_names_its_cost() {
    let log = Rc::default();
    let (mut s, mut c) = (scorer("validation", &log), FakeCost::default());
    let err = Search::new(space(), budget(0.5), &mut s, &mut c).err().expect("too small").to_string();
    // The cheapest: every group at 0.1, 75 * 0.01 = 0.75.
    assert!(err.contains("0.1") && err.contains("0.00M MACs") && err.contains("raise the budget"), "{err}");
    let latency = Budget { kind: CostKind::Latency, limit: 1.0 };
    let err = Search::new(space(), latency, &mut s, &mut c).err().expect("kind mismatch").to_string();
    assert!(err.contains("invalid budget"), "{err}");
}

#[test]
fn the_test_split_is_read_only_at_the_end_and_only_for_the_front() {
    let log: Rc<RefCell<Vec<(&'static str, String)>>> = Rc::default();
    let (mut validation, mut test, mut c) = (scorer("validation", &log), scorer("test", &log), FakeCost::default());
    let mut search = Search::new(space(), budget(20.0), &mut validation, &mut c).unwrap();
    search.evolution = EvolutionSettings { population: 8, generations: 3, ..EvolutionSettings::default() };
    let results = search_then_test(&mut search, &[Strategy::Uniform, Strategy::Greedy, Strategy::Evolution], &mut test).unwrap();
    drop(search);
    let log = log.borrow();
    let first_test = log.iter().position(|(who, _)| *who == "test").expect("the front is tested");
    assert!(log[first_test..].iter().all(|(who, _)| *who == "test"), "a validation score after the first test score");
    let tested: Vec<&String> = log[first_test..].iter().map(|(_, s)| s).collect();
    let mut front: Vec<&String> = results.iter().flat_map(|r| r.front.iter().map(|c| &c.spec)).collect();
    front.sort();
    front.dedup();
    let mut sorted = tested.clone();
    sorted.sort();
    assert_eq!(sorted, front, "exactly the front's networks, each once");
    for r in &results {
        for c in r.front.iter().chain([&r.best]) {
            assert_eq!(c.test_top1, Some(fake_top1(&c.spec.parse().unwrap())));
        }
    }
}

#[test]
fn a_time_limit_stops_with_the_best_so_far() {
    with_search(20.0, |search| {
        search.time_limit = Some(std::time::Duration::ZERO);
        for strategy in [Strategy::Evolution, Strategy::Greedy, Strategy::Uniform] {
            let r = search.run(strategy).unwrap();
            assert!(r.best.cost <= 20.0, "{strategy:?}");
            assert!(r.evaluations <= 2, "{strategy:?}: {}", r.evaluations);
            assert!(r.stopped_by_time_limit || strategy == Strategy::Uniform, "{strategy:?}");
        }
    });
}

#[test]
fn the_pareto_front_keeps_only_undominated_candidates_within_the_budget() {
    let c = |spec: &str, cost: f64, top1: f64| Candidate { spec: spec.into(), genes: vec![], cost, validation_top1: top1, test_top1: None };
    let all = [c("a", 1.0, 50.0), c("b", 2.0, 49.0), c("c", 2.0, 60.0), c("d", 3.0, 60.0), c("e", 4.0, 70.0), c("f", 9.0, 99.0)];
    let front = pareto_front(&all, &budget(5.0));
    let names: Vec<&str> = front.iter().map(|c| c.spec.as_str()).collect();
    assert_eq!(names, ["a", "c", "e"]);
}

// The latency table.

fn small_model() -> UsNet {
    let config = crate::bench::v2_small();
    UsNet::init(&config, &Init::Counter { seed: 1 }, &crate::device::device(None).unwrap()).unwrap().into_inference()
}

/// Counts the shapes it is asked to time; a layer costs its MACs in microseconds.
#[derive(Clone, Default)]
struct FakeTimer {
    layers: Rc<RefCell<Vec<String>>>,
}

impl LayerTimer for FakeTimer {
    fn time_layer(&mut self, shape: &LayerShape) -> Result<f64> {
        self.layers.borrow_mut().push(shape.key());
        Ok((shape.c_in * shape.c_out * shape.in_hw[0] * shape.in_hw[1]) as f64 * 1e-6)
    }

    fn time_network(&mut self, _: &WidthSpec) -> Result<f64> {
        Ok(1.0)
    }
}

fn context(threads: usize) -> TableContext {
    TableContext { machine: "test-machine".into(), threads, usnet_version: "0.1.0".into(), batch: 1, input_hw: [12, 12] }
}

#[test]
fn layer_shapes_follow_the_plan_with_shortcuts_on_residual_blocks() {
    let model = small_model();
    let spec: WidthSpec = "0.5/1/0.35/0.75/0.5".parse().unwrap();
    let shapes = layer_shapes(&model, &spec, [12, 12]).unwrap();
    let plan = model.plan(&spec, [12, 12]).unwrap();
    assert_eq!(shapes.len(), plan.len());
    for (s, p) in shapes.iter().zip(&plan) {
        assert_eq!((s.c_in, s.c_out, &s.name), (p.c_in, p.c_out, &p.name));
    }
    // The residual blocks: the second block of rows 2 and 3 (stride 1, as many channels).
    let with_shortcut: Vec<&LayerShape> = shapes.iter().filter(|s| s.shortcut.is_some()).collect();
    let residual = model.blocks.iter().filter(|b| b.residual).count();
    assert_eq!(with_shortcut.len(), residual);
    assert_eq!(residual, 2);
    assert_eq!(shapes[0].in_hw, [12, 12]);
    assert_eq!(shapes.last().unwrap().in_hw, plan[plan.len() - 2].out_hw);
}

#[test]
fn the_latency_table_is_reused_and_invalidated() {
    let model = small_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(latency::FILE_NAME);
    let specs: Vec<WidthSpec> = ["1", "0.5", "0.5/1/0.35/0.75/0.5", "0.35"].iter().map(|s| s.parse().unwrap()).collect();

    // A fresh table measures each shape once, however often a spec is costed.
    let timer = FakeTimer::default();
    let (table, note) = LatencyTable::open(&path, context(2));
    assert!(note.is_none(), "{note:?}");
    let mut cost = LatencyCost::new(&model, table, Box::new(timer.clone()), Some(path.clone()));
    let first: Vec<f64> = specs.iter().map(|s| cost.cost(s).unwrap()).collect();
    let measured = timer.layers.borrow().len();
    assert!(measured > 20, "{measured}");
    let mut unique = timer.layers.borrow().clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), measured, "a shape was timed twice");
    for s in &specs {
        cost.cost(s).unwrap();
    }
    assert_eq!(timer.layers.borrow().len(), measured);
    // The cost is the sum over the layers.
    let want: f64 = layer_shapes(&model, &specs[2], [12, 12]).unwrap().iter().map(|s| (s.c_in * s.c_out * s.in_hw[0] * s.in_hw[1]) as f64 * 1e-6).sum();
    assert!((first[2] - want).abs() < 1e-9, "sum over layers: {} vs {want}", first[2]);
    cost.save().unwrap();

    // The same machine, threads, version, batch and size: reused, nothing timed.
    let timer = FakeTimer::default();
    let (table, note) = LatencyTable::open(&path, context(2));
    assert!(note.is_none(), "{note:?}");
    let mut cost = LatencyCost::new(&model, table, Box::new(timer.clone()), Some(path.clone()));
    let again: Vec<f64> = specs.iter().map(|s| cost.cost(s).unwrap()).collect();
    // serde_json reads floats back to within an ulp.
    assert!(again.iter().zip(&first).all(|(a, b)| (a - b).abs() <= 1e-12 * b), "{again:?} vs {first:?}");
    assert_eq!(timer.layers.borrow().len(), 0);

    // A different thread count, batch, version or machine: measured again, and said why.
    for (other, what) in [
        (context(4), "threads 2 (table) vs 4 (now)"),
        (TableContext { batch: 8, ..context(2) }, "batch 1 (table) vs 8 (now)"),
        (TableContext { usnet_version: "0.2.0".into(), ..context(2) }, "usnet version"),
        (TableContext { machine: "other".into(), ..context(2) }, "machine"),
    ] {
        let timer = FakeTimer::default();
        let (table, note) = LatencyTable::open(&path, other);
        let note = note.expect("a mismatch is reported");
        assert!(note.contains(what) && note.contains("measuring again"), "{note}");
        let mut cost = LatencyCost::new(&model, table, Box::new(timer.clone()), None);
        cost.cost(&specs[0]).unwrap();
        assert!(!timer.layers.borrow().is_empty());
    }

    // A corrupt file: measured again, not an error.
    std::fs::write(&path, "{ not json").unwrap();
    let (table, note) = LatencyTable::open(&path, context(2));
    assert!(note.unwrap().contains("not a latency table"));
    assert!(table.seconds.is_empty());
}

#[test]
fn the_engine_timer_times_every_layer_and_the_whole_network() {
    let model = small_model();
    let device = crate::device::device(None).unwrap();
    let timer = EngineTimer::new(&model, 2, [12, 12], &device);
    let table = LatencyTable::new(TableContext { batch: 2, ..context(1) });
    let mut cost = LatencyCost::new(&model, table, Box::new(timer), None);
    let specs: Vec<WidthSpec> = ["1", "0.5/1/0.35/0.75/0.5"].iter().map(|s| s.parse().unwrap()).collect();
    for check in cost.check(&specs).unwrap() {
        assert!(check.table_s > 0.0 && check.table_s.is_finite(), "{check:?}");
        assert!(check.measured_s > 0.0 && check.error_pct.is_finite(), "{check:?}");
    }
    assert_eq!(cost.measured, cost.table.seconds.len());
    let bad = LayerShape { index: 99, name: "nope".into(), c_in: 1, c_out: 1, in_hw: [4, 4], shortcut: None };
    let mut timer = EngineTimer::new(&model, 1, [12, 12], &device);
    assert!(timer.time_layer(&bad).is_err());
}

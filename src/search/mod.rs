//! Choosing the most accurate width under a budget of MACs or measured latency.
//!
//! A US-Net holds every width in its range and every per-stage mix of them. A search walks
//! candidates of a [`SearchSpace`] with one of three [`Strategy`]s, scoring each on
//! validation images (its BN statistics calibrated for it: [`ValidationScorer`]) and
//! costing it in MACs or in seconds from a [`latency::LatencyTable`]. The budget is a hard
//! constraint: a candidate over it is never chosen. The test images are read once, at the
//! end, and only for the networks on the Pareto front ([`search_then_test`]).
//!
//! - [`budget`]: `macs=150M` or `latency=5ms`;
//! - [`space`]: a grid of widths per group (the stem, then each block-table row);
//! - [`latency`]: the per-layer latency table and the [`latency::LayerTimer`] that fills it;
//! - `uniform`, `greedy`, `evolution`: the strategies; [`pareto_front`] the front.

pub mod budget;
mod evolution;
mod greedy;
pub mod latency;
mod scorer;
pub mod space;
mod uniform;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use budget::{Budget, CostKind};
pub use evolution::EvolutionSettings;
pub use scorer::{MacsCost, ValidationScorer};
pub use space::{Genes, SearchSpace};

use crate::error::{Error, Result};
use crate::width::WidthSpec;

/// Top-1 accuracy (%) of a width on some images: the oracle a search asks.
pub trait Scorer {
    /// Top-1 accuracy in percent of the network at `spec`.
    ///
    /// # Errors
    ///
    /// Calibration, data or width errors.
    fn top1(&mut self, spec: &WidthSpec) -> Result<f64>;
}

/// The cost of a width, in the unit of [`Cost::kind`].
pub trait Cost {
    /// What the cost counts.
    fn kind(&self) -> CostKind;

    /// The cost of the network at `spec`.
    ///
    /// # Errors
    ///
    /// Width errors; for latency, timing errors.
    fn cost(&mut self, spec: &WidthSpec) -> Result<f64>;
}

/// How candidates are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The best single width under the budget: bisection on cost over the grid.
    Uniform,
    /// AutoSlim's rule: from the largest network, repeatedly slim the group whose slimming
    /// loses the least validation accuracy per unit of cost saved, until within budget.
    Greedy,
    /// Once-for-All's evolutionary search over per-stage widths, budget as a hard constraint.
    Evolution,
}

impl Strategy {
    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Uniform => "uniform",
            Strategy::Greedy => "greedy",
            Strategy::Evolution => "evolution",
        }
    }
}

/// A scored candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The width spec, as `eval`, `calibrate` and `export` accept it.
    pub spec: String,
    #[serde(skip)]
    pub genes: Genes,
    /// In the unit of the budget: MACs per image, or seconds per batch.
    pub cost: f64,
    /// Top-1 (%) on the validation images, calibrated for this width.
    pub validation_top1: f64,
    /// Top-1 (%) on the test images: filled in at the end, for the front only.
    pub test_top1: Option<f64>,
}

/// What one strategy found.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    pub strategy: Strategy,
    /// The most accurate candidate within the budget.
    pub best: Candidate,
    /// The Pareto front (cost ascending, accuracy strictly rising) of the candidates within
    /// the budget that this strategy scored.
    pub front: Vec<Candidate>,
    /// Distinct candidates this strategy scored on validation images.
    pub evaluations: usize,
    /// `--time-limit` stopped the strategy with its best so far.
    pub stopped_by_time_limit: bool,
    pub seconds: f64,
}

/// Where a strategy stands, for a progress bar.
#[derive(Debug)]
pub struct Progress<'a> {
    pub strategy: Strategy,
    /// Distinct candidates scored so far by this strategy.
    pub evaluations: usize,
    /// The expected number of evaluations, when known (evolution), else 0.
    pub expected: usize,
    /// The most accurate candidate within the budget so far.
    pub best: Option<&'a Candidate>,
}

/// A search over one space with one budget, its scores and costs memoised across strategies.
pub struct Search<'a> {
    pub space: SearchSpace,
    pub budget: Budget,
    scorer: &'a mut dyn Scorer,
    cost: &'a mut dyn Cost,
    /// Each strategy stops after this long, with its best so far.
    pub time_limit: Option<Duration>,
    pub evolution: EvolutionSettings,
    progress: Box<dyn FnMut(&Progress) + 'a>,
    scores: HashMap<String, f64>,
    costs: HashMap<String, f64>,
}

/// One strategy's bookkeeping while it runs.
pub(crate) struct Run<'s, 'a> {
    pub search: &'s mut Search<'a>,
    pub strategy: Strategy,
    pub expected: usize,
    start: Instant,
    scored: Vec<Candidate>,
    best: Option<Candidate>,
    stopped: bool,
}

impl<'a> Search<'a> {
    /// A search of `space` under `budget`, scoring with `scorer` and costing with `cost`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBudget`] when the budget and the cost count different things;
    /// [`Error::BudgetTooSmall`] when even the cheapest candidate (every group at the
    /// smallest width) is over the budget, naming its cost.
    pub fn new(space: SearchSpace, budget: Budget, scorer: &'a mut dyn Scorer, cost: &'a mut dyn Cost) -> Result<Self> {
        if budget.kind != cost.kind() {
            return Err(Error::InvalidBudget {
                input: budget.to_string(),
                reason: format!("the search costs candidates in {:?}, not {:?}", cost.kind(), budget.kind),
            });
        }
        let mut search = Search {
            space,
            budget,
            scorer,
            cost,
            time_limit: None,
            evolution: EvolutionSettings::default(),
            progress: Box::new(|_| {}),
            scores: HashMap::new(),
            costs: HashMap::new(),
        };
        let cheapest = search.space.cheapest();
        let cost = search.cost_of(&cheapest)?;
        if !budget.allows(cost) {
            return Err(Error::BudgetTooSmall {
                budget: budget.to_string(),
                cheapest: budget.kind.format(cost),
                spec: search.space.spec(&cheapest).to_string(),
            });
        }
        Ok(search)
    }

    /// Calls `f` after every scored candidate.
    pub fn on_progress(&mut self, f: impl FnMut(&Progress) + 'a) {
        self.progress = Box::new(f);
    }

    /// The cost of `genes`, memoised.
    pub fn cost_of(&mut self, genes: &[usize]) -> Result<f64> {
        let spec = self.space.spec(genes);
        memoised(&mut self.costs, spec.key(), || self.cost.cost(&spec))
    }

    /// Runs `strategy` and returns what it found.
    ///
    /// # Errors
    ///
    /// The scorer's and the cost's errors.
    pub fn run(&mut self, strategy: Strategy) -> Result<StrategyResult> {
        let expected = match strategy {
            Strategy::Evolution => self.evolution.population * self.evolution.generations,
            _ => 0,
        };
        let mut run = Run { search: self, strategy, expected, start: Instant::now(), scored: Vec::new(), best: None, stopped: false };
        match strategy {
            Strategy::Uniform => uniform::run(&mut run)?,
            Strategy::Greedy => greedy::run(&mut run)?,
            Strategy::Evolution => evolution::run(&mut run)?,
        }
        let best = run.best.clone().expect("every strategy scores at least one candidate within the budget");
        let front = pareto_front(&run.scored, &run.search.budget);
        Ok(StrategyResult {
            strategy,
            best,
            front,
            evaluations: run.scored.len(),
            stopped_by_time_limit: run.stopped,
            seconds: run.start.elapsed().as_secs_f64(),
        })
    }
}

impl Run<'_, '_> {
    /// The validation top-1 of `genes`, memoised; records it for this strategy.
    pub fn score(&mut self, genes: &[usize]) -> Result<Candidate> {
        let spec = self.search.space.spec(genes);
        let key = spec.to_string();
        if let Some(c) = self.scored.iter().find(|c| c.spec == key) {
            return Ok(c.clone());
        }
        let cost = self.search.cost_of(genes)?;
        let top1 = memoised(&mut self.search.scores, key.clone(), || self.search.scorer.top1(&spec))?;
        let candidate = Candidate { spec: key, genes: genes.to_vec(), cost, validation_top1: top1, test_top1: None };
        if self.search.budget.allows(cost) && self.best.as_ref().is_none_or(|b| better(&candidate, b)) {
            self.best = Some(candidate.clone());
        }
        self.scored.push(candidate.clone());
        let progress = Progress { strategy: self.strategy, evaluations: self.scored.len(), expected: self.expected, best: self.best.as_ref() };
        (self.search.progress)(&progress);
        Ok(candidate)
    }

    /// Whether the time limit has passed. Never before a candidate within the budget has
    /// been scored, so that every strategy returns one.
    pub fn out_of_time(&mut self) -> bool {
        self.best.is_some() && self.past_time_limit()
    }

    /// Whether the time limit has passed, whatever has been scored.
    pub fn past_time_limit(&mut self) -> bool {
        let over = self.search.time_limit.is_some_and(|t| self.start.elapsed() >= t);
        self.stopped |= over;
        over
    }

    pub fn cost(&mut self, genes: &[usize]) -> Result<f64> {
        self.search.cost_of(genes)
    }

    pub fn allows(&mut self, genes: &[usize]) -> Result<bool> {
        let c = self.cost(genes)?;
        Ok(self.search.budget.allows(c))
    }
}

/// `memo[key]`, computed by `f` the first time it is asked for.
fn memoised(memo: &mut HashMap<String, f64>, key: String, f: impl FnOnce() -> Result<f64>) -> Result<f64> {
    Ok(match memo.entry(key) {
        Entry::Occupied(e) => *e.get(),
        Entry::Vacant(e) => *e.insert(f()?),
    })
}

/// More accurate, or as accurate and cheaper.
fn better(a: &Candidate, b: &Candidate) -> bool {
    a.validation_top1 > b.validation_top1 || (a.validation_top1 == b.validation_top1 && a.cost < b.cost)
}

/// The candidates within `budget` that no other beats on both cost and validation accuracy,
/// cheapest first (so accuracy strictly rises along the front).
pub fn pareto_front(candidates: &[Candidate], budget: &Budget) -> Vec<Candidate> {
    let mut within: Vec<&Candidate> = candidates.iter().filter(|c| budget.allows(c.cost)).collect();
    within.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(b.validation_top1.total_cmp(&a.validation_top1)));
    let mut front: Vec<Candidate> = Vec::new();
    for c in within {
        if front.last().is_none_or(|last| c.validation_top1 > last.validation_top1) {
            front.push(c.clone());
        }
    }
    front
}

/// Runs each of `strategies` in turn, then scores every network on their fronts with
/// `test`, once each. Nothing reads the test images before the last strategy has finished.
///
/// # Errors
///
/// The errors of [`Search::run`] and of `test`.
pub fn search_then_test(search: &mut Search, strategies: &[Strategy], test: &mut dyn Scorer) -> Result<Vec<StrategyResult>> {
    let mut results = strategies.iter().map(|&s| search.run(s)).collect::<Result<Vec<_>>>()?;
    let mut tested: HashMap<String, f64> = HashMap::new();
    for result in &mut results {
        for c in result.front.iter_mut().chain(std::iter::once(&mut result.best)) {
            c.test_top1 = Some(memoised(&mut tested, c.spec.clone(), || test.top1(&search.space.spec(&c.genes)))?);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests;

//! `evolution`: Once-for-All's evolutionary search, with the budget a hard constraint.
//!
//! A population of random candidates within the budget; each generation keeps the most
//! accurate quarter as parents and fills the rest with mutations of a random parent (each
//! group resampled with probability `mutation_prob`) and crossovers of two random parents
//! (each group from either). A child over the budget is drawn again (OFA's rule); after
//! [`MAX_DRAWS`] draws it is repaired by slimming random groups until it fits, so that tight
//! budgets still terminate.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{Candidate, Genes, Run};
use crate::error::Result;

/// Draws of a child before it is repaired.
const MAX_DRAWS: usize = 50;

/// OFA's settings; its defaults (population 100, 500 generations) are scaled down here to
/// fit a 2-core machine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvolutionSettings {
    pub population: usize,
    pub generations: usize,
    /// Share of the population kept as parents (OFA: 0.25).
    pub parent_ratio: f64,
    /// Share of the population made by mutation (OFA: 0.5); the rest are crossovers.
    pub mutation_ratio: f64,
    /// Probability that a mutation resamples each group (OFA: 0.1).
    pub mutation_prob: f64,
    pub seed: u64,
}

impl Default for EvolutionSettings {
    fn default() -> Self {
        EvolutionSettings { population: 16, generations: 10, parent_ratio: 0.25, mutation_ratio: 0.5, mutation_prob: 0.1, seed: 1 }
    }
}

pub(crate) fn run(run: &mut Run) -> Result<()> {
    let settings = run.search.evolution;
    let space = run.search.space.clone();
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let n = settings.population.max(2);
    let parents_n = ((n as f64 * settings.parent_ratio).round() as usize).clamp(1, n);
    let mutants_n = ((n as f64 * settings.mutation_ratio).round() as usize).min(n - parents_n);
    let choices = space.choices.len();

    let random = |rng: &mut StdRng| (0..space.groups).map(|_| rng.random_range(0..choices)).collect();
    let mut population = (0..n).map(|_| feasible(run, &mut rng, random)).collect::<Result<Vec<Genes>>>()?;
    for generation in 0..settings.generations.max(1) {
        let mut scored: Vec<Candidate> = Vec::with_capacity(n);
        for genes in &population {
            if run.out_of_time() {
                return Ok(());
            }
            scored.push(run.score(genes)?);
        }
        if generation + 1 == settings.generations.max(1) {
            break;
        }
        // Most accurate first; ties to the cheaper, then by spec, so the order is repeatable.
        scored.sort_by(|a, b| {
            b.validation_top1.total_cmp(&a.validation_top1).then(a.cost.total_cmp(&b.cost)).then(a.spec.cmp(&b.spec))
        });
        let parents: Vec<Genes> = scored.iter().take(parents_n).map(|c| c.genes.clone()).collect();
        let mut next = parents.clone();
        for _ in 0..mutants_n {
            let parent = parents[rng.random_range(0..parents.len())].clone();
            let p = settings.mutation_prob;
            next.push(feasible(run, &mut rng, |rng| {
                parent.iter().map(|&g| if rng.random_bool(p) { rng.random_range(0..choices) } else { g }).collect()
            })?);
        }
        while next.len() < n {
            let a = parents[rng.random_range(0..parents.len())].clone();
            let b = parents[rng.random_range(0..parents.len())].clone();
            next.push(feasible(run, &mut rng, |rng| a.iter().zip(&b).map(|(&x, &y)| if rng.random_bool(0.5) { x } else { y }).collect())?);
        }
        population = next;
    }
    Ok(())
}

/// A child from `draw` within the budget: drawn again up to [`MAX_DRAWS`] times, then the last
/// draw repaired by slimming random groups (the cheapest network is within the budget).
fn feasible(run: &mut Run, rng: &mut StdRng, mut draw: impl FnMut(&mut StdRng) -> Genes) -> Result<Genes> {
    let mut child = draw(rng);
    for _ in 1..MAX_DRAWS {
        if run.allows(&child)? {
            return Ok(child);
        }
        child = draw(rng);
    }
    while !run.allows(&child)? {
        let slimmable: Vec<usize> = (0..child.len()).filter(|&g| child[g] > 0).collect();
        let Some(&g) = slimmable.get(rng.random_range(0..slimmable.len().max(1))) else { break };
        child[g] -= 1;
    }
    Ok(child)
}

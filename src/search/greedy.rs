//! `greedy`: AutoSlim's rule on a US-Net.
//!
//! From every group at the largest width, try slimming each group by one step of the grid,
//! and keep the step that loses the least validation accuracy per unit of cost saved, until
//! the network is within the budget. A US-Net needs no retraining between steps: each
//! candidate is only calibrated.

use super::Run;
use crate::error::Result;

pub(crate) fn run(run: &mut Run) -> Result<()> {
    let space = run.search.space.clone();
    let mut current = space.largest();
    let mut top1 = run.score(&current)?.validation_top1;
    let mut cost = run.cost(&current)?;
    while !run.search.budget.allows(cost) {
        let hurry = run.past_time_limit();
        // (loss per cost saved, cost saved, genes, top-1, cost) of the best step so far.
        let mut best: Option<(f64, f64, Vec<usize>, Option<f64>, f64)> = None;
        for g in (0..space.groups).filter(|&g| current[g] > 0) {
            let mut next = current.clone();
            next[g] -= 1;
            let next_cost = run.cost(&next)?;
            let saved = cost - next_cost;
            // Past the time limit, walk to the budget by cost alone: the largest saving.
            let (ratio, next_top1) = if hurry {
                (-saved, None)
            } else if saved <= 0.0 {
                // A step that saves nothing (possible with measured latency) is no progress.
                continue;
            } else {
                let t = run.score(&next)?.validation_top1;
                ((top1 - t) / saved, Some(t))
            };
            if best.as_ref().is_none_or(|b| ratio < b.0 || (ratio == b.0 && saved > b.1)) {
                best = Some((ratio, saved, next, next_top1, next_cost));
            }
        }
        // With no step that saves cost, slim the first group that can, so the walk still ends
        // (at the cheapest network, which is within the budget).
        let (next, next_top1, next_cost) = match best {
            Some((_, _, next, t, c)) => (next, t, c),
            None => {
                let g = (0..space.groups).find(|&g| current[g] > 0).expect("a network over the budget is not the cheapest");
                let mut next = current.clone();
                next[g] -= 1;
                let c = run.cost(&next)?;
                (next, None, c)
            }
        };
        (current, cost) = (next, next_cost);
        top1 = next_top1.unwrap_or(f64::NAN);
    }
    run.score(&current)?;
    Ok(())
}

//! `uniform`: the best single width under the budget, by bisection on cost.

use super::Run;
use crate::error::Result;

/// Bisection for the widest uniform width within the budget (cost rises with width), scoring
/// each width within the budget that it visits; the widest is scored last.
pub(crate) fn run(run: &mut Run) -> Result<()> {
    let space = run.search.space.clone();
    let (mut lo, mut hi) = (0, space.choices.len() - 1);
    // The cheapest is within the budget: `Search::new` checked it.
    if run.allows(&space.uniform(hi))? {
        lo = hi;
    } else {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if run.allows(&space.uniform(mid))? {
                if !run.out_of_time() {
                    run.score(&space.uniform(mid))?;
                }
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    run.score(&space.uniform(lo))?;
    Ok(())
}

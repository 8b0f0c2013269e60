//! The candidates a search can choose: a width per group (the stem, then each block-table
//! row) from one grid of widths.

use crate::error::{Error, Result};
use crate::model::UsNet;
use crate::width::{Width, WidthSpec};

/// A candidate: for each width group, an index into [`SearchSpace::choices`].
pub type Genes = Vec<usize>;

/// The widths each group may take, and how many groups there are.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    /// Ascending widths, each giving the network different channels from the others.
    pub choices: Vec<Width>,
    /// Entries of a per-stage spec ([`UsNet::num_width_groups`]).
    pub groups: usize,
}

impl SearchSpace {
    /// The grid `min, min + step, ..., max` of `model`'s width range (both ends included),
    /// with widths that round to the same channels as a smaller one left out.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWidth`] for a step that is not a positive number or gives more than
    /// [`crate::width::MAX_GRID`] widths.
    pub fn grid(model: &UsNet, step: f64) -> Result<Self> {
        let range = model.width_range();
        let (lo, hi) = (range.min().get(), range.max().get());
        let text = format!("{lo}:{hi}:{step}");
        if !step.is_finite() || step <= 0.0 {
            return Err(Error::InvalidWidth { input: text, reason: "the step must be a positive number, such as 0.05".into() });
        }
        let specs = crate::width::parse_width_list(&text)?;
        let (kept, _) = model.distinct_widths(&specs)?;
        let mut choices: Vec<Width> = kept.iter().flat_map(WidthSpec::widths).collect();
        choices.sort_by(|a, b| a.get().total_cmp(&b.get()));
        Ok(SearchSpace { choices, groups: model.num_width_groups() })
    }

    /// The spec of `genes` (canonical: equal entries give the uniform width).
    pub fn spec(&self, genes: &[usize]) -> WidthSpec {
        WidthSpec::per_stage(genes.iter().map(|&g| self.choices[g]).collect())
    }

    /// Every group at choice `index`.
    pub fn uniform(&self, index: usize) -> Genes {
        vec![index; self.groups]
    }

    /// Every group at the smallest width.
    pub fn cheapest(&self) -> Genes {
        self.uniform(0)
    }

    /// Every group at the largest width.
    pub fn largest(&self) -> Genes {
        self.uniform(self.choices.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, Init, ModelConfig};

    #[test]
    fn grid_spans_the_range_and_specs_round_trip() {
        let device = crate::device::device(None).unwrap();
        let model = UsNet::init(&ModelConfig::imagenet(Arch::UsMobilenetV2, 10), &Init::Counter { seed: 0 }, &device).unwrap();
        let space = SearchSpace::grid(&model, 0.05).unwrap();
        assert_eq!(space.groups, 8);
        assert_eq!(space.choices.first().unwrap().get(), 0.35);
        assert_eq!(space.choices.last().unwrap().get(), 1.0);
        assert!(space.choices.windows(2).all(|w| w[0] < w[1]));
        let genes = vec![0, 1, 2, 3, 4, 5, 6, 7];
        let spec = space.spec(&genes);
        let back: WidthSpec = spec.to_string().parse().unwrap();
        assert_eq!(back, spec);
        model.stage_widths(&back).unwrap();
        assert_eq!(space.spec(&space.uniform(3)).to_string(), space.choices[3].to_string());
        assert!(SearchSpace::grid(&model, 0.0).is_err());
        assert!(SearchSpace::grid(&model, f64::NAN).is_err());
    }
}

//! Budgets: `macs=150M` or `latency=5ms`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};

/// What a candidate's cost counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CostKind {
    /// Multiply-accumulates per image ([`crate::profile`]).
    Macs,
    /// Seconds per batch, from the latency table ([`super::latency`]).
    Latency,
}

impl CostKind {
    /// A cost of this kind as text: `150.00M MACs`, `4.98 ms`.
    pub fn format(self, cost: f64) -> String {
        match self {
            CostKind::Macs => format!("{:.2}M MACs", cost / 1e6),
            CostKind::Latency => format!("{:.3} ms", cost * 1e3),
        }
    }
}

/// The most a candidate may cost: the hard constraint of every strategy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub kind: CostKind,
    /// MACs per image, or seconds per batch.
    pub limit: f64,
}

impl Budget {
    /// Whether `cost` is within the budget.
    pub fn allows(&self, cost: f64) -> bool {
        cost <= self.limit
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CostKind::Macs => write!(f, "macs={}M", self.limit / 1e6),
            CostKind::Latency => write!(f, "latency={}ms", self.limit * 1e3),
        }
    }
}

const EXPECTED: &str = "expected macs=N (with an optional K, M or G suffix, such as macs=150M) \
                        or latency=T (with a unit us, ms or s, such as latency=5ms)";

impl FromStr for Budget {
    type Err = Error;

    /// Parses `macs=150M`, `macs=2.5e6`, `latency=5ms`, `latency=800us`, `latency=0.01s`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidBudget { input: s.into(), reason };
        let (key, value) = s.trim().split_once('=').ok_or_else(|| bad(EXPECTED.into()))?;
        let value = value.trim();
        let number = |text: &str| -> Result<f64> {
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| bad(format!("{value:?} is not a positive number; {EXPECTED}")))
        };
        let (kind, limit) = match key.trim().to_ascii_lowercase().as_str() {
            "macs" => {
                let (digits, scale) = match value.chars().last().map(|c| c.to_ascii_uppercase()) {
                    Some('K') => (&value[..value.len() - 1], 1e3),
                    Some('M') => (&value[..value.len() - 1], 1e6),
                    Some('G') => (&value[..value.len() - 1], 1e9),
                    _ => (value, 1.0),
                };
                (CostKind::Macs, number(digits)? * scale)
            }
            "latency" => {
                let (digits, scale) = if let Some(v) = value.strip_suffix("ms") {
                    (v, 1e-3)
                } else if let Some(v) = value.strip_suffix("us") {
                    (v, 1e-6)
                } else if let Some(v) = value.strip_suffix('s') {
                    (v, 1.0)
                } else {
                    return Err(bad(format!("latency {value:?} has no unit; {EXPECTED}")));
                };
                (CostKind::Latency, number(digits)? * scale)
            }
            other => return Err(bad(format!("unknown budget kind {other:?}; {EXPECTED}"))),
        };
        Ok(Budget { kind, limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_with_units() {
        let b: Budget = "macs=150M".parse().unwrap();
        assert_eq!((b.kind, b.limit), (CostKind::Macs, 150e6));
        assert_eq!("macs=2500".parse::<Budget>().unwrap().limit, 2500.0);
        assert_eq!("macs=1.5g".parse::<Budget>().unwrap().limit, 1.5e9);
        let l: Budget = "latency=5ms".parse().unwrap();
        assert_eq!(l.kind, CostKind::Latency);
        assert!((l.limit - 0.005).abs() < 1e-12);
        assert!(("latency=800us".parse::<Budget>().unwrap().limit - 8e-4).abs() < 1e-12);
        assert_eq!("latency=2s".parse::<Budget>().unwrap().limit, 2.0);
        assert_eq!(b.to_string().parse::<Budget>().unwrap(), b);
        assert_eq!(l.to_string(), "latency=5ms");
    }

    #[test]
    fn bad_budgets_say_what_was_expected() {
        for bad in ["", "150M", "flops=150M", "macs=", "macs=-1M", "macs=0", "macs=abcM", "latency=5", "latency=xms", "macs=nan", "latency=infms"] {
            let err = bad.parse::<Budget>().unwrap_err().to_string();
            assert!(err.contains("invalid budget") && err.contains("macs=150M"), "{bad}: {err}");
        }
    }
}

//! Parameter initialisation.
//!
//! Two schemes: [`Init::Counter`], the deterministic counter formula of the golden test
//! vectors (`../shared/golden/README.md`), and [`Init::Kaiming`], the official code's
//! initialisation for real training (conv: normal with std `sqrt(2 / fan_out)`; linear:
//! normal with std 0.01, bias 0; BN: gamma 1, beta 0).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a parameter is, for initialisation and for weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A convolution weight `[out, in / groups, k, k]`.
    ConvWeight { depthwise: bool },
    /// A linear weight `[out, in]`.
    LinearWeight,
    /// A linear bias `[out]`.
    LinearBias,
    /// A batch-norm scale.
    BnGamma,
    /// A batch-norm shift.
    BnBeta,
}

impl ParamKind {
    /// Whether the official code applies weight decay to this parameter: conv weights that
    /// are not depthwise, and linear weights.
    pub fn decays(self) -> bool {
        matches!(self, ParamKind::ConvWeight { depthwise: false } | ParamKind::LinearWeight)
    }
}

/// How to fill a new model's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// The golden vectors' counter formula with this seed.
    Counter { seed: u64 },
    /// The official code's random initialisation, seeded.
    Kaiming { seed: u64 },
}

impl Init {
    /// The values of the parameter `name` of `kind` with `shape`, row-major.
    pub fn values(&self, name: &str, kind: ParamKind, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match *self {
            Init::Counter { seed } => {
                // `offset + (u - 0.5) * scale`: weights uniform with the variance of 1 / fan_in.
                let fan_in: usize = shape[1..].iter().product();
                let (offset, scale) = match kind {
                    ParamKind::ConvWeight { .. } | ParamKind::LinearWeight => (0.0, 2.0 * (3.0 / fan_in as f64).sqrt()),
                    ParamKind::BnGamma => (1.0, 0.4),
                    ParamKind::BnBeta | ParamKind::LinearBias => (0.0, 0.4),
                };
                counter_uniform(name, seed, n).iter().map(|u| (offset + (u - 0.5) * scale) as f32).collect()
            }
            Init::Kaiming { seed } => {
                let mut rng = StdRng::seed_from_u64(seed ^ u64::from(fnv1a32(name)) << 20);
                match kind {
                    ParamKind::ConvWeight { .. } => {
                        // kaiming_normal_(mode='fan_out', nonlinearity='relu')
                        let fan_out = shape[0] * shape[2] * shape[3];
                        let std = (2.0 / fan_out as f64).sqrt();
                        normal(&mut rng, n, std)
                    }
                    ParamKind::LinearWeight => normal(&mut rng, n, 0.01),
                    ParamKind::BnGamma => vec![1.0; n],
                    ParamKind::BnBeta | ParamKind::LinearBias => vec![0.0; n],
                }
            }
        }
    }
}

/// 32-bit FNV-1a of the UTF-8 bytes of `s`.
pub fn fnv1a32(s: &str) -> u32 {
    s.bytes().fold(0x811C_9DC5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The golden counter sequence: `u_j = ((j * 0x9E3779B1 + salt) mod 2^32) / 2^32`, with
/// `salt = fnv1a32(key) + seed * 0x85EBCA77 (mod 2^32)`.
pub fn counter_uniform(key: &str, seed: u64, n: usize) -> Vec<f64> {
    counter_raw(key, seed, n).map(|x| f64::from(x) / 4_294_967_296.0).collect()
}

/// The raw 32-bit counter words behind [`counter_uniform`].
pub fn counter_raw(key: &str, seed: u64, n: usize) -> impl Iterator<Item = u32> {
    let salt = fnv1a32(key).wrapping_add((seed as u32).wrapping_mul(0x85EB_CA77));
    (0..n as u32).map(move |j| j.wrapping_mul(0x9E37_79B1).wrapping_add(salt))
}

/// Golden input values: `(u - 0.5) * 4`, cast to f32.
pub fn counter_input(key: &str, seed: u64, n: usize) -> Vec<f32> {
    counter_uniform(key, seed, n).iter().map(|u| ((u - 0.5) * 4.0) as f32).collect()
}

/// Golden labels: `(word >> 16) mod num_classes`.
pub fn counter_labels(key: &str, seed: u64, n: usize, num_classes: usize) -> Vec<i64> {
    counter_raw(key, seed, n).map(|x| i64::from((x >> 16) % num_classes as u32)).collect()
}

/// `n` samples of a normal with mean 0 and standard deviation `std` (finite, >= 0).
fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    match rand_distr::Normal::new(0.0, std) {
        Ok(dist) => rng.sample_iter(dist).take(n).map(|v: f64| v as f32).collect(),
        // Only a non-finite std gets here (a fan-out of 0 has no elements to draw).
        Err(_) => vec![0.0; n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a32(""), 0x811C_9DC5);
        assert_eq!(fnv1a32("a"), 0xE40C_292C);
    }

    #[test]
    fn seed_wraps_mod_2_32() {
        // (seed * 0x85EBCA77) mod 2^32 must equal the wrapping 32-bit product.
        let seed = 7u64;
        let expected = ((u64::from(fnv1a32("k")) + seed * 0x85EB_CA77) % (1 << 32)) as u32;
        assert_eq!(counter_raw("k", seed, 1).next(), Some(expected));
    }
}

//! Batch norm fused with its activation, on NCHW `f32` buffers: one pass for the statistics,
//! one to normalise, and two for the gradient, instead of a chain of tensor ops.

use super::{map_unzip, simd_kernel, written_chunks};

/// The sizes of an NCHW tensor, seen as `batch` runs of `channels` planes of `plane` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planes {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Planes {
    /// Checks that `x` holds `batch * channels * plane` values (overflow-safe), that each
    /// per-channel buffer of `per_channel` holds `channels`, and that `dy`, if given, is as
    /// long as `x`. The kernels index by these sizes; each public one checks them first, in
    /// release builds too.
    ///
    /// # Errors
    ///
    /// A message naming the buffer and both lengths.
    pub fn check(&self, x: usize, per_channel: &[(&str, usize)], dy: Option<usize>) -> Result<(), String> {
        let values = self.batch.checked_mul(self.channels).and_then(|v| v.checked_mul(self.plane));
        let values = values.ok_or_else(|| format!("{self:?} overflows usize"))?;
        if x != values {
            return Err(format!("the input has {x} values; {self:?} needs {values}"));
        }
        if let Some(dy) = dy.filter(|&dy| dy != x) {
            return Err(format!("the output gradient has {dy} values; the input has {x}"));
        }
        match per_channel.iter().find(|(_, len)| *len != self.channels) {
            Some((name, len)) => Err(format!("{name} has {len} values; there are {} channels", self.channels)),
            None => Ok(()),
        }
    }

    /// Panics with `what` and the reason when [`Planes::check`] fails.
    fn assert(&self, what: &str, x: usize, per_channel: &[(&str, usize)], dy: Option<usize>) {
        if let Err(e) = self.check(x, per_channel, dy) {
            panic!("bn::{what}: {e}");
        }
    }

    #[inline(always)]
    fn count(&self) -> usize {
        self.batch * self.plane
    }

    /// The `plane` values of channel `c` in sample `n`.
    #[inline(always)]
    fn of<'a>(&self, t: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &t[(n * self.channels + c) * self.plane..][..self.plane]
    }
}

/// Which activation follows the normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    /// `min(max(x, 0), 6)`; its gradient passes where `0 <= x <= 6`, as burn's `clamp`
    /// (and the golden reference) define it at the two kinks.
    Relu6,
}

impl Act {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::Identity => v,
            Act::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// The upstream gradient `g` masked by the activation's derivative at its input `v`.
    #[inline(always)]
    fn grad(self, v: f32, g: f32) -> f32 {
        match self {
            Act::Relu6 if !(0.0..=6.0).contains(&v) => 0.0,
            _ => g,
        }
    }

    /// `out[j] = grad(x[j] * scale + shift, dy[j])`, the gradient after the activation, in a
    /// loop of its own: LLVM vectorises the select here, not inside the lanes of a sum.
    #[inline(always)]
    fn mask_grad(self, out: &mut [f32], x: &[f32], dy: &[f32], scale: f32, shift: f32) {
        out.iter_mut().zip(x).zip(dy).for_each(|((o, &x), &g)| *o = self.grad(x * scale + shift, g));
    }
}

simd_kernel! {
/// Per-channel mean and biased variance: two passes, accumulated in f64 lanes (the golden
/// tests resolve the difference that f32 sums make).
///
/// # Panics
///
/// When [`Planes::check`] fails, as every public kernel here.
pub fn stats(x: &[f32], p: Planes) -> (Vec<f32>, Vec<f32>) {
    p.assert("stats", x.len(), &[], None);
    let m = p.count() as f64;
    map_unzip(p.channels, p.batch * p.channels * p.plane, |c| {
        let mean = (0..p.batch).map(|n| sum_f64(p.of(x, n, c), |v| v)).sum::<f64>() / m;
        let var = (0..p.batch).map(|n| sum_f64(p.of(x, n, c), |v| (v - mean) * (v - mean))).sum::<f64>() / m;
        (mean as f32, var as f32)
    })
}
}

/// `sum f(x_i)` in f64, in four independent lanes so that the loop vectorises.
#[inline(always)]
fn sum_f64(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    const L: usize = 4;
    let mut acc = [0.0f64; L];
    let chunks = xs.chunks_exact(L);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    for c in chunks {
        for l in 0..L {
            acc[l] += f(c[l] as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `sum f(a_i, b_i)` over two equal-length slices, in eight independent lanes so that the
/// loop vectorises instead of waiting on one running sum. The slices go through fixed-size
/// arrays (indexing a slice of unknown length checks bounds in every lane), and there is one
/// sum per loop: LLVM vectorised two sums in one loop as pairs, not as eight lanes.
#[inline(always)]
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    const L: usize = 8;
    let mut acc = [0.0f32; L];
    let n = a.len().min(b.len());
    let ((ca, ra), (cb, rb)) = (a[..n].as_chunks::<L>(), b[..n].as_chunks::<L>());
    for (xa, xb) in ca.iter().zip(cb) {
        for l in 0..L {
            acc[l] += f(xa[l], xb[l]);
        }
    }
    let mut total = acc.iter().sum::<f32>();
    for (&xa, &xb) in ra.iter().zip(rb) {
        total += f(xa, xb);
    }
    total
}

/// Channel `c`'s `(sum g * (x - m), sum g)` in f64, with `g` the gradient `dy` after the
/// activation of `x * scale + shift`: what the gradients of the per-channel affine map and
/// of batch norm reduce to (`m = 0` and `m = mean`; `x - 0.0` is `x` exactly).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn grad_sums(x: &[f32], dy: &[f32], p: Planes, c: usize, scale: f32, shift: f32, m: f32, act: Act) -> (f64, f64) {
    let (mut sgx, mut sg) = (0.0f64, 0.0f64);
    let mut gs = vec![0.0f32; p.plane];
    for n in 0..p.batch {
        let xs = p.of(x, n, c);
        act.mask_grad(&mut gs, xs, p.of(dy, n, c), scale, shift);
        sgx += lanes(&gs, xs, |g, x| g * (x - m)) as f64;
        sg += lanes(&gs, &gs, |g, _| g) as f64;
    }
    (sgx, sg)
}

simd_kernel! {
/// `y = act(x * scale[c] + shift[c])`.
pub fn affine_act(x: &[f32], scale: &[f32], shift: &[f32], p: Planes, act: Act) -> Vec<f32> {
    p.assert("affine_act", x.len(), &[("scale", scale.len()), ("shift", shift.len())], None);
    // SAFETY: each piece is zipped with its plane of `x`, as long, and every value written.
    unsafe {
        written_chunks(x.len(), p.plane, x.len(), |i, ys| {
            let xs = &x[i * p.plane..][..p.plane];
            let (a, b) = (scale[i % p.channels], shift[i % p.channels]);
            ys.iter_mut().zip(xs).for_each(|(y, &x)| {
                y.write(act.apply(x * a + b));
            });
        })
    }
}
}

simd_kernel! {
/// Gradients of [`affine_act`]: `(dx, dscale, dshift)`. The activation's input is recomputed
/// from `x`, bit for bit as the forward computed it, so nothing but `x` is kept.
pub fn affine_act_backward(x: &[f32], dy: &[f32], scale: &[f32], shift: &[f32], p: Planes, act: Act) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    p.assert("affine_act_backward", x.len(), &[("scale", scale.len()), ("shift", shift.len())], Some(dy.len()));
    let (dscale, dshift) = map_unzip(p.channels, x.len(), |c| {
            let (sx, s) = grad_sums(x, dy, p, c, scale[c], shift[c], 0.0, act);
            (sx as f32, s as f32)
        });
    // SAFETY: each piece is zipped with its planes of `x` and `dy`, as long, and every
    // value written.
    let dx = unsafe {
        written_chunks(x.len(), p.plane, x.len(), |i, dxs| {
            let (a, b) = (scale[i % p.channels], shift[i % p.channels]);
            let (xs, gs) = (&x[i * p.plane..][..p.plane], &dy[i * p.plane..][..p.plane]);
            dxs.iter_mut().zip(xs).zip(gs).for_each(|((d, &x), &g)| {
                d.write(act.grad(x * a + b, g) * a);
            });
        })
    };
    (dx, dscale, dshift)
}
}

/// Training-mode batch norm and activation: the output, and the batch mean and `1/sqrt(var + eps)`
/// for the backward pass.
pub fn train_forward(x: &[f32], gamma: &[f32], beta: &[f32], p: Planes, eps: f32, act: Act) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    p.assert("train_forward", x.len(), &[("gamma", gamma.len()), ("beta", beta.len())], None);
    let (mean, var) = stats(x, p);
    let invstd = invstd(&var, eps);
    let (scale, shift) = fold(gamma, beta, &mean, &invstd);
    (affine_act(x, &scale, &shift, p, act), mean, invstd)
}

/// `1 / sqrt(var + eps)` per channel.
pub fn invstd(var: &[f32], eps: f32) -> Vec<f32> {
    var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
}

/// Batch norm with fixed statistics as the affine map `x * scale + shift`:
/// `scale = gamma * invstd`, `shift = beta - mean * scale`. The one place BN is folded: the
/// kernels, the eval-mode layer, the inference plan and the ONNX export all call it.
pub fn fold(gamma: &[f32], beta: &[f32], mean: &[f32], invstd: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(invstd).map(|(g, i)| g * i).collect();
    let shift: Vec<f32> = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    (scale, shift)
}

simd_kernel! {
/// Gradients of [`train_forward`]: `(dx, dgamma, dbeta)`, with the activation's input
/// recomputed from `x` as in [`affine_act_backward`].
#[allow(clippy::too_many_arguments)]
pub fn train_backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    invstd: &[f32],
    p: Planes,
    act: Act,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let per_channel = [("gamma", gamma.len()), ("beta", beta.len()), ("mean", mean.len()), ("invstd", invstd.len())];
    p.assert("train_backward", x.len(), &per_channel, Some(dy.len()));
    let (scale, shift) = fold(gamma, beta, mean, invstd);
    // Per channel: sum(g) and sum(g * xhat), with g the gradient after the activation.
    let (dgamma, dbeta) = map_unzip(p.channels, x.len(), |c| {
            let (sgx, sg) = grad_sums(x, dy, p, c, scale[c], shift[c], mean[c], act);
            ((sgx * invstd[c] as f64) as f32, sg as f32)
        });
    let count = p.count() as f32;
    // SAFETY: each piece is zipped with its planes of `x` and `dy`, as long, and every
    // value written.
    let dx = unsafe {
        written_chunks(x.len(), p.plane, x.len(), |i, dxs| {
            let c = i % p.channels;
            let (m, is, sc, sh) = (mean[c], invstd[c], scale[c], shift[c]);
            let k = gamma[c] * is;
            let (mg, mgx) = (dbeta[c] / count, dgamma[c] / count);
            let (xs, gs) = (&x[i * p.plane..][..p.plane], &dy[i * p.plane..][..p.plane]);
            for ((d, &x), &g) in dxs.iter_mut().zip(xs).zip(gs) {
                let xhat = (x - m) * is;
                d.write(k * (act.grad(x * sc + sh, g) - mg - xhat * mgx));
            }
        })
    };
    (dx, dgamma, dbeta)
}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 100.0 - 3.0).collect()
    }

    /// `sum(w * train_forward(x))` in f64, the scalar whose gradient is checked.
    fn objective(x: &[f64], gamma: &[f64], beta: &[f64], w: &[f32], p: Planes, act: Act) -> f64 {
        let m = p.count() as f64;
        let mut total = 0.0;
        for c in 0..p.channels {
            let idx = |n: usize, j: usize| (n * p.channels + c) * p.plane + j;
            let all: Vec<usize> = (0..p.batch).flat_map(|n| (0..p.plane).map(move |j| idx(n, j))).collect();
            let mean = all.iter().map(|&i| x[i]).sum::<f64>() / m;
            let var = all.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
            for &i in &all {
                let v = (x[i] - mean) / (var + 1e-5).sqrt() * gamma[c] + beta[c];
                let v = if act == Act::Relu6 { v.clamp(0.0, 6.0) } else { v };
                total += v * w[i] as f64;
            }
        }
        total
    }

    #[test]
    fn train_gradients_match_finite_differences() {
        for act in [Act::Identity, Act::Relu6] {
            let p = Planes { batch: 3, channels: 2, plane: 5 };
            let x = values(30, 1);
            let gamma = vec![1.5f32, 0.7];
            let beta = vec![2.0f32, 3.0];
            let w = values(30, 7);
            let (_, mean, invstd) = train_forward(&x, &gamma, &beta, p, 1e-5, act);
            let (dx, dg, db) = train_backward(&x, &w, &gamma, &beta, &mean, &invstd, p, act);
            let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
            let (x64, g64, b64) = (f64s(&x), f64s(&gamma), f64s(&beta));
            let h = 1e-6;
            let numeric = |which: usize, i: usize| {
                let (mut xp, mut gp, mut bp) = (x64.clone(), g64.clone(), b64.clone());
                let (mut xm, mut gm, mut bm) = (x64.clone(), g64.clone(), b64.clone());
                match which {
                    0 => (xp[i] += h, xm[i] -= h),
                    1 => (gp[i] += h, gm[i] -= h),
                    _ => (bp[i] += h, bm[i] -= h),
                };
                (objective(&xp, &gp, &bp, &w, p, act) - objective(&xm, &gm, &bm, &w, p, act)) / (2.0 * h)
            };
            for (which, got) in [(0, &dx), (1, &dg), (2, &db)] {
                for (i, &v) in got.iter().enumerate() {
                    let e = numeric(which, i);
                    assert!((v as f64 - e).abs() < 1e-3 * (1.0 + e.abs()), "{act:?} input {which} index {i}: {v} vs {e}");
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_refused_in_release_builds() {
        let p = Planes { batch: 2, channels: 3, plane: 4 };
        assert!(p.check(24, &[("scale", 3)], Some(24)).is_ok());
        assert!(p.check(23, &[], None).unwrap_err().contains("input has 23"));
        assert!(p.check(24, &[("scale", 3), ("shift", 2)], None).unwrap_err().contains("shift has 2"));
        assert!(p.check(24, &[], Some(25)).unwrap_err().contains("gradient"));
        assert!(Planes { batch: usize::MAX, ..p }.check(24, &[], None).unwrap_err().contains("overflows"));
    }

    #[test]
    #[should_panic(expected = "bn::affine_act: shift has 2 values; there are 3 channels")]
    fn affine_act_panics_with_the_reason() {
        affine_act(&[0.0; 24], &[1.0; 3], &[0.0; 2], Planes { batch: 2, channels: 3, plane: 4 }, Act::Relu6);
    }

    #[test]
    fn stats_are_mean_and_biased_variance() {
        let p = Planes { batch: 2, channels: 1, plane: 2 };
        let (m, v) = stats(&[1.0, 2.0, 3.0, 6.0], p);
        assert_eq!((m[0], v[0]), (3.0, 3.5));
    }

    #[test]
    fn affine_gradients_match_finite_differences() {
        let p = Planes { batch: 2, channels: 3, plane: 4 };
        let x = values(24, 3);
        let (scale, shift) = (vec![0.5f32, -1.0, 2.0], vec![1.0f32, 4.0, 0.5]);
        let w = values(24, 9);
        let act = Act::Relu6;
        let (dx, ds, db) = affine_act_backward(&x, &w, &scale, &shift, p, act);
        let f = |x: &[f32], s: &[f32], b: &[f32]| -> f64 {
            affine_act(x, s, b, p, act).iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let h = 1e-3f32;
        let numeric = |which: usize, i: usize| {
            let (mut plus, mut minus) = ([x.clone(), scale.clone(), shift.clone()], [x.clone(), scale.clone(), shift.clone()]);
            plus[which][i] += h;
            minus[which][i] -= h;
            (f(&plus[0], &plus[1], &plus[2]) - f(&minus[0], &minus[1], &minus[2])) / (2.0 * h as f64)
        };
        for (which, name, got) in [(0, "dx", &dx), (1, "dscale", &ds), (2, "dshift", &db)] {
            for (i, &g) in got.iter().enumerate() {
                let e = numeric(which, i);
                let tolerance = if which == 0 { 1e-2 } else { 1e-2 * (1.0 + e.abs()) };
                assert!((g as f64 - e).abs() < tolerance, "{name} {i}: {g} vs {e}");
            }
        }
    }
}

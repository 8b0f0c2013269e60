//! Packed gemm with a fused epilogue: `c = act(a @ b + bias) (+ residual)`, the form of
//! every 1x1 convolution, the im2col'd stem and the classifier of an inference plan.

use super::simd::{self, GemmCall, Isa};
use super::team::{Buf, Par};

/// A `[k, n]` right-hand operand packed once for one instruction set's micro-kernel: panels
/// of `nr` columns, each `k` rows of `nr` contiguous values, zero past column `n`, 64-byte
/// aligned.
pub(crate) struct PackedB {
    data: Vec<f32>,
    offset: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) nv: usize,
    pub(crate) isa: Isa,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedB {{ k: {}, n: {}, nr: {}, {:?} }}", self.k, self.n, self.nr(), self.isa)
    }
}

impl PackedB {
    /// Packs the `[k, n]` matrix whose entry `(kk, j)` is `at(kk, j)`.
    pub(crate) fn new(isa: Isa, k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let lanes = isa.lanes();
        // Two vectors per row of the tile, unless one wastes fewer padded columns.
        let padded = |nr: usize| n.div_ceil(nr) * nr;
        let nv = if padded(lanes) < padded(2 * lanes) { 1 } else { 2 };
        let nr = nv * lanes;
        let panels = n.div_ceil(nr);
        let len = panels * k * nr;
        let mut data = vec![0.0f32; len + 16];
        let offset = data.as_ptr().align_offset(64).min(15);
        for p in 0..panels {
            for kk in 0..k {
                let row = &mut data[offset + (p * k + kk) * nr..][..nr];
                for (jj, v) in row.iter_mut().enumerate() {
                    let j = p * nr + jj;
                    if j < n {
                        *v = at(kk, j);
                    }
                }
            }
        }
        PackedB { data, offset, k, n, nv, isa }
    }

    /// Columns per panel.
    pub(crate) fn nr(&self) -> usize {
        self.nv * self.isa.lanes()
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.nr())
    }

    fn values(&self) -> &[f32] {
        &self.data[self.offset..]
    }
}

/// The residual of a gemm's epilogue: `res[row * ld + col]` for `col < cols`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Residual<'a> {
    pub values: &'a [f32],
    pub ld: usize,
    pub cols: usize,
}

/// `c[row * ldc + col] = act(a[row * lda ..][..k] @ b + bias) + residual` for `m` rows, where
/// `act` clamps to `[0, 6]` when `relu6` (before the residual is added).
///
/// Spreads rows (and, for few rows, panels) over the team of `par` when the product is
/// large enough to pay for it.
///
/// # Panics
///
/// When a buffer is shorter than the shapes say, or `b` was packed for another instruction
/// set (checked once per call, before any kernel runs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(isa: Isa, a: &[f32], lda: usize, m: usize, b: &PackedB, bias: &[f32], relu6: bool, res: Option<Residual<'_>>, c: Buf, ldc: usize, par: Par<'_>) {
    assert!(lda >= b.k, "gemm: lhs rows overlap");
    gemm_taps(isa, Taps { values: a, ld: lda, run: b.k, run_stride: 0 }, m, b, bias, relu6, res, c, ldc, par);
}

/// The left-hand side of a gemm whose row `i` is read in runs of `run` values, run `j` from
/// `values[i * ld + j * run_stride..]`. A conv on a zero-padded NHWC image reads its taps so,
/// from the image itself: a run is one kernel row (`k * c` values), `ld` the stride between
/// outputs (`stride * c`), `run_stride` an image row. Rows may overlap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taps<'a> {
    pub values: &'a [f32],
    pub ld: usize,
    pub run: usize,
    pub run_stride: usize,
}

/// [`gemm`] whose left-hand rows are read as `a` says.
///
/// # Panics
///
/// As [`gemm`]'s, and when the runs do not tile the depth.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_taps(isa: Isa, a: Taps<'_>, m: usize, b: &PackedB, bias: &[f32], relu6: bool, res: Option<Residual<'_>>, c: Buf, ldc: usize, par: Par<'_>) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    // Every layer has input channels, so every product has a depth.
    assert!(k > 0, "gemm: empty depth");
    assert_eq!(b.isa, isa, "gemm: operand packed for another instruction set");
    assert!(a.run > 0 && k % a.run == 0, "gemm: runs of {} values do not tile a depth of {k}", a.run);
    let runs = k / a.run;
    assert!(a.values.len() >= (m - 1) * a.ld + (runs - 1) * a.run_stride + a.run, "gemm: lhs too small");
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm: destination too small");
    assert!(bias.len() >= n, "gemm: bias too small");
    if let Some(r) = &res {
        assert!(r.cols <= n && r.ld >= r.cols && r.values.len() >= (m - 1) * r.ld + r.cols, "gemm: residual too small");
    }
    // Depth per pass: the whole of `k` when a panel's rows fit L1 beside the tile's rows (and
    // always when the rows come in runs, which the kernels read in one pass).
    let kc = if k <= 384 || runs > 1 { k } else { k.div_ceil(k.div_ceil(256)) };
    let call = GemmCall {
        a: a.values.as_ptr(),
        lda: a.ld,
        run: a.run,
        run_stride: a.run_stride,
        k,
        n,
        b: b.values().as_ptr(),
        nv: b.nv,
        kc,
        bias: bias.as_ptr(),
        relu6,
        res: res.map_or(std::ptr::null(), |r| r.values.as_ptr()),
        ldres: res.map_or(0, |r| r.ld),
        res_cols: res.map_or(0, |r| r.cols),
        c: c.ptr(),
        ldc,
    };
    let panels = b.panels();
    let threads = par.threads();
    let mr = isa.mr(b.nv);
    let (row_groups, panel_groups) = if threads < 2 || m * n * k < 1 << 16 {
        (1, 1)
    } else {
        let want = 4 * threads;
        let row_groups = m.div_ceil(mr).min(want);
        (row_groups, want.div_ceil(row_groups).min(panels))
    };
    let tiles_per_group = m.div_ceil(mr).div_ceil(row_groups);
    let panels_per_group = panels.div_ceil(panel_groups);
    par.for_each(row_groups * panel_groups, |t| {
        let (rg, pg) = (t / panel_groups, t % panel_groups);
        let m0 = (rg * tiles_per_group * mr).min(m);
        let m1 = ((rg + 1) * tiles_per_group * mr).min(m);
        let p0 = (pg * panels_per_group).min(panels);
        let p1 = ((pg + 1) * panels_per_group).min(panels);
        if m0 < m1 && p0 < p1 {
            // SAFETY: the asserts above bound every row, panel and column the kernels touch;
            // tasks write disjoint rows x panels of `c`.
            unsafe { simd::gemm(isa, &call, m0, m1, p0, p1) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::team::on_threads;

    /// `act(a @ b + bias) + res` in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(a: &[f32], lda: usize, m: usize, k: usize, n: usize, b: &[f32], bias: &[f32], relu6: bool, res: Option<(&[f32], usize, usize)>) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = f64::from(bias[j]);
                for kk in 0..k {
                    s += f64::from(a[i * lda + kk]) * f64::from(b[kk * n + j]);
                }
                if relu6 {
                    s = s.clamp(0.0, 6.0);
                }
                if let Some((r, ld, cols)) = res
                    && j < cols
                {
                    s += f64::from(r[i * ld + j]);
                }
                out[i * n + j] = s;
            }
        }
        out
    }

    fn values(seed: u64, len: usize) -> Vec<f32> {
        crate::init::counter_input("infer.gemm", seed, len)
    }

    /// Rows read in runs (a conv's taps on a padded image): overlapping rows, as many runs as
    /// kernel rows, on every instruction set, odd widths and the parallel path, against the
    /// plain gemm's definition on the rows written out.
    #[test]
    fn gemm_taps_reads_rows_in_runs() {
        // (rows, values per run, runs, row stride, run stride, columns)
        let shapes = [(13, 9, 3, 6, 70, 32), (50, 9, 3, 3, 160, 16), (7, 5, 2, 5, 11, 33), (1, 3, 1, 1, 0, 8), (300, 21, 7, 6, 1900, 24)];
        for isa in Isa::available() {
            for (si, &(m, run, runs, ld, run_stride, n)) in shapes.iter().enumerate() {
                let k = run * runs;
                let x = values(400 + si as u64, (m - 1) * ld + (runs - 1) * run_stride + run);
                let rows: Vec<f32> = (0..m).flat_map(|i| (0..k).map(move |kk| (i, kk))).map(|(i, kk)| x[i * ld + (kk / run) * run_stride + kk % run]).collect();
                let bm = values(500 + si as u64, k * n);
                let bias = values(600 + si as u64, n);
                let packed = PackedB::new(isa, k, n, |kk, j| bm[kk * n + j]);
                let want = reference(&rows, k, m, k, n, &bm, &bias, true, None);
                for parallel in [false, true] {
                    let mut c = vec![f32::NAN; m * n];
                    let out = Buf::new(&mut c);
                    let taps = Taps { values: &x, ld, run, run_stride };
                    on_threads(if parallel { 3 } else { 1 }, |par| gemm_taps(isa, taps, m, &packed, &bias, true, None, out, n, par));
                    for (i, (&g, &w)) in c.iter().zip(&want).enumerate() {
                        assert!((f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()) * (k as f64).sqrt(), "{isa:?} shape {si} par={parallel} [{}, {}]: {g} vs {w}", i / n, i % n);
                    }
                }
            }
        }
    }

    /// Every instruction set, odd sizes (tails of rows, of vectors and of panels), several
    /// `kc` passes, the residual cut short, and the parallel path.
    #[test]
    fn gemm_matches_its_definition() {
        let shapes = [(1, 1, 1), (5, 3, 7), (13, 27, 24), (29, 40, 17), (50, 9, 48), (31, 700, 33), (300, 96, 160), (64, 1000, 40)];
        for isa in Isa::available() {
            for (si, &(m, k, n)) in shapes.iter().enumerate() {
                for relu6 in [false, true] {
                    for with_res in [false, true] {
                        for parallel in [false, true] {
                            let lda = k + si % 3;
                            let a = values(si as u64, (m - 1) * lda + k);
                            let bm = values(100 + si as u64, k * n);
                            let bias = values(200 + si as u64, n);
                            let (ld, cols) = (n + 2, n.saturating_sub(5).max(1));
                            let r = values(300 + si as u64, m * ld);
                            let res = with_res.then_some(Residual { values: &r, ld, cols });
                            let packed = PackedB::new(isa, k, n, |kk, j| bm[kk * n + j]);
                            let mut c = vec![f32::NAN; m * (n + 1)];
                            let out = Buf::new(&mut c);
                            on_threads(if parallel { 3 } else { 1 }, |par| gemm(isa, &a, lda, m, &packed, &bias, relu6, res, out, n + 1, par));
                            let want = reference(&a, lda, m, k, n, &bm, &bias, relu6, with_res.then_some((&r[..], ld, cols)));
                            for i in 0..m {
                                for j in 0..n {
                                    let (g, w) = (f64::from(c[i * (n + 1) + j]), want[i * n + j]);
                                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()) * (k as f64).sqrt(), "{isa:?} {m}x{k}x{n} relu6={relu6} res={with_res} par={parallel} [{i},{j}]: {g} vs {w}");
                                }
                                assert!(c[i * (n + 1) + n].is_nan(), "{isa:?}: wrote past the row");
                            }
                        }
                    }
                }
            }
        }
    }
}

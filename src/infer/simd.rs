//! The inner loops of the inference engine, once per instruction set: AVX-512, AVX2 + FMA,
//! and a portable fallback, chosen at run time ([`Isa::detect`]).
//!
//! Each instruction set is a module made by [`isa_module!`] from the same algorithm text over
//! a handful of vector primitives (`load`, `fma`, masked `loadm`/`storem`, ...), so the three
//! paths cannot drift apart; only the primitives differ. The functions are `unsafe`: they
//! take raw pointers into buffers whose extents [`super::gemm`] and [`super`] check once per
//! layer, and the SIMD ones must only run on a CPU that has their features (which
//! [`Isa::detect`] and [`Isa::available`] guarantee).
#![allow(unsafe_op_in_unsafe_fn)]
#![allow(clippy::too_many_arguments)]

/// An instruction set the engine has kernels for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 16-lane `zmm` vectors (x86-64 with AVX-512F).
    Avx512,
    /// 8-lane `ymm` vectors with fused multiply-add (x86-64 with AVX2 and FMA).
    Avx2,
    /// Plain Rust on 8-value arrays, for every other CPU.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU has, for the inference engine and the training
    /// kernels ([`crate::kernels`]) alike. `USNET_ISA=portable|avx2|avx512` chooses a lower
    /// one (for comparisons); a higher one than the CPU has falls back to the best.
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let available = Isa::available();
            let wanted = match std::env::var("USNET_ISA").as_deref() {
                Ok("portable") => Some(Isa::Portable),
                Ok("avx2") => Some(Isa::Avx2),
                Ok("avx512") => Some(Isa::Avx512),
                _ => None,
            };
            wanted.filter(|w| available.contains(w)).unwrap_or(available[0])
        })
    }

    /// The instruction sets this CPU can run, best first (`Portable` always last).
    pub fn available() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                out.push(Isa::Avx2);
            }
        }
        out.push(Isa::Portable);
        out
    }

    /// `f32` values per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 | Isa::Portable => 8,
        }
    }

    /// Rows of the gemm micro-kernel whose tile is `nv` vectors wide (1 or 2): as many as
    /// the vector registers hold accumulators for.
    pub fn mr(self, nv: usize) -> usize {
        match (self, nv) {
            (Isa::Avx512, 1) => 14,
            (Isa::Avx512, _) => 12,
            (Isa::Avx2, 1) => 8,
            (Isa::Avx2, _) => 6,
            (Isa::Portable, _) => 4,
        }
    }
}

/// One gemm `c[m, n] = epilogue(a[m, k] @ b[k, n])` as the kernels see it.
///
/// `b` is packed in panels of `nv * lanes` columns: panel `p` holds `b[kk][p * nr + j]` at
/// `p * k * nr + kk * nr + j`, zero past column `n`. The epilogue adds `bias[col]`, clamps to
/// `[0, 6]` when `relu6`, then adds `res[row * ldres + col]` for `col < res_cols`.
///
/// Row `i` of `a` is read in runs of `run` values, run `j` from `a + i * lda + j * run_stride`
/// (one run, `run = k`, for a plain matrix; several only when `kc = k`). So a conv on a
/// zero-padded NHWC image reads its taps from the image itself, without an im2col: a run is a
/// kernel row's `k * c` values, `lda` the stride of the outputs, `run_stride` an image row.
#[derive(Debug, Clone, Copy)]
pub(super) struct GemmCall {
    pub a: *const f32,
    pub lda: usize,
    pub run: usize,
    pub run_stride: usize,
    pub k: usize,
    pub n: usize,
    pub b: *const f32,
    pub nv: usize,
    /// Depth of one pass over `k` (the part of a panel kept in L1).
    pub kc: usize,
    pub bias: *const f32,
    pub relu6: bool,
    pub res: *const f32,
    pub ldres: usize,
    pub res_cols: usize,
    pub c: *mut f32,
    pub ldc: usize,
}

/// One depthwise convolution of one image, NHWC, weights `[k * k][c]`.
///
/// `x` holds the input's rows from `x_row0` on, and `y` the output's rows from `y_row0` on
/// (both 0 for whole images; a band of an inverted residual holds only its own rows).
#[derive(Debug, Clone, Copy)]
pub(super) struct DwCall {
    pub x: *const f32,
    pub x_row0: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub wt: *const f32,
    pub bias: *const f32,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub relu6: bool,
    pub y: *mut f32,
    pub y_row0: usize,
    pub ow: usize,
}

/// Rows of `a` per cache block: the block's `kc` columns stay in L2 across all panels.
const MB: usize = 192;

/// Calls `$f::<MR, NV>($args)` for the runtime `mr` (1..=14).
macro_rules! by_mr {
    ($mr:expr, $nv:literal, $f:ident, ($($arg:expr),*)) => {
        match $mr {
            1 => $f::<1, $nv>($($arg),*),
            2 => $f::<2, $nv>($($arg),*),
            3 => $f::<3, $nv>($($arg),*),
            4 => $f::<4, $nv>($($arg),*),
            5 => $f::<5, $nv>($($arg),*),
            6 => $f::<6, $nv>($($arg),*),
            7 => $f::<7, $nv>($($arg),*),
            8 => $f::<8, $nv>($($arg),*),
            9 => $f::<9, $nv>($($arg),*),
            10 => $f::<10, $nv>($($arg),*),
            11 => $f::<11, $nv>($($arg),*),
            12 => $f::<12, $nv>($($arg),*),
            13 => $f::<13, $nv>($($arg),*),
            14 => $f::<14, $nv>($($arg),*),
            _ => unreachable!("micro-kernel rows {}", $mr),
        }
    };
}

/// The algorithms, written once over the primitives of the module that expands it.
macro_rules! algorithms {
    ($(#[$attr:meta])*) => {
        /// Accumulates an `MR x (NV * LANES)` tile over `kc` depths, then merges it into `c`:
        /// added to `c` unless `first`; bias, ReLU6 and residual applied when `last`.
        #[inline]
        $(#[$attr])*
        unsafe fn tile<const MR: usize, const NV: usize>(
            g: &GemmCall, kc: usize, a: *const f32, b: *const f32, c: *mut f32, ncols: usize, bias: *const f32,
            res: *const f32, rcols: usize, first: bool, last: bool,
        ) {
            let mut acc = [[zero(); NV]; MR];
            if g.run >= kc {
                acc = dot::<MR, NV>(acc, a, g.lda, kc, b);
            } else {
                // The rows' runs, one after the other.
                for j in 0..kc / g.run {
                    acc = dot::<MR, NV>(acc, a.add(j * g.run_stride), g.lda, g.run, b.add(j * g.run * NV * LANES));
                }
            }
            for v in 0..NV {
                let col = v * LANES;
                if col >= ncols {
                    break;
                }
                let cnt = (ncols - col).min(LANES);
                let rcnt = rcols.saturating_sub(col).min(cnt);
                let bv = if last { loadm(bias.add(col), cnt) } else { zero() };
                for i in 0..MR {
                    let cp = c.add(i * g.ldc + col);
                    let mut x = acc[i][v];
                    if !first {
                        x = add(x, loadm(cp, cnt));
                    }
                    if last {
                        x = add(x, bv);
                        if g.relu6 {
                            x = clamp6(x);
                        }
                        if rcnt > 0 {
                            x = add(x, loadm(res.add(i * g.ldres + col), rcnt));
                        }
                    }
                    storem(cp, x, cnt);
                }
            }
        }

        /// `acc` plus the products of `MR` rows of `a` (`lda` apart) by `kc` rows of a panel.
        $(#[$attr])*
        #[inline]
        unsafe fn dot<const MR: usize, const NV: usize>(mut acc: [[V; NV]; MR], a: *const f32, lda: usize, kc: usize, b: *const f32) -> [[V; NV]; MR] {
            let mut bp = b;
            for kk in 0..kc {
                let mut bv = [zero(); NV];
                for v in 0..NV {
                    bv[v] = load(bp.add(v * LANES));
                }
                for i in 0..MR {
                    let av = splat_from(a.add(i * lda + kk));
                    for v in 0..NV {
                        acc[i][v] = fma(av, bv[v], acc[i][v]);
                    }
                }
                bp = bp.add(NV * LANES);
            }
            acc
        }

        /// Rows `m0..m1` and panels `p0..p1` of `g`.
        $(#[$attr])*
        pub(in crate::infer) unsafe fn gemm(g: &GemmCall, m0: usize, m1: usize, p0: usize, p1: usize) {
            let nr = g.nv * LANES;
            let mr_max = isa().mr(g.nv);
            let mut mb0 = m0;
            while mb0 < m1 {
                let mb1 = (mb0 + MB).min(m1);
                let mut k0 = 0;
                while k0 < g.k {
                    let kc = g.kc.min(g.k - k0);
                    let (first, last) = (k0 == 0, k0 + kc == g.k);
                    for p in p0..p1 {
                        let col0 = p * nr;
                        let ncols = nr.min(g.n - col0);
                        let rcols = g.res_cols.saturating_sub(col0).min(ncols);
                        let b = g.b.add(p * g.k * nr + k0 * nr);
                        let bias = g.bias.add(col0);
                        let mut i = mb0;
                        while i < mb1 {
                            let mr = mr_max.min(mb1 - i);
                            let a = g.a.add(i * g.lda + k0);
                            let c = g.c.add(i * g.ldc + col0);
                            let res = if rcols > 0 { g.res.add(i * g.ldres + col0) } else { std::ptr::null() };
                            if g.nv == 1 {
                                by_mr!(mr, 1, tile, (g, kc, a, b, c, ncols, bias, res, rcols, first, last));
                            } else {
                                by_mr!(mr, 2, tile, (g, kc, a, b, c, ncols, bias, res, rcols, first, last));
                            }
                            i += mr;
                        }
                    }
                    k0 += kc;
                }
                mb0 = mb1;
            }
        }

        /// `T` outputs `ox..ox + T` of row `oy`, channels `c0..c0 + cnt`, taps of rows
        /// `ky0..ky1`, for a kernel and stride known at compile time: each input under the `T`
        /// is loaded once (at `T = 4`, 6 loads instead of 12 per kernel row at stride 1, 9 at
        /// stride 2), and `T` sums are in flight at once (a sum's FMAs depend on each other).
        /// Each sum adds its taps in the general loop's order. Inputs left or right of the row
        /// read as zeros (their taps add `0 * weight`), so a tile may cover the row's ends and
        /// run past it; the caller stores only the outputs that exist.
        $(#[$attr])*
        #[inline]
        unsafe fn dw_tile<const K: usize, const S: usize, const T: usize>(d: &DwCall, oy: usize, (ky0, ky1, c0, cnt): (usize, usize, usize, usize), ox: usize, bv: V) -> [V; T] {
            // The inputs under `T` outputs, `(T - 1) * S + K`, must fit `xs`: a larger
            // triple would read zeros past it, so it does not compile.
            const { assert!((T - 1) * S + K <= 20, "dw_tile: the tile, kernel and stride read more inputs than it holds") };
            let c = d.c;
            let mut acc = [bv; T];
            for ky in ky0..ky1 {
                let row = d.x.add(((oy * S + ky - d.pad - d.x_row0) * d.w) * c + c0);
                let mut xs = [zero(); 20];
                for (t, x) in xs.iter_mut().enumerate().take((T - 1) * S + K) {
                    // `ix = ox * S - pad + t`, inside the row or not.
                    let ix = (ox * S + t).wrapping_sub(d.pad);
                    if ix < d.w {
                        *x = loadm(row.add(ix * c), cnt);
                    }
                }
                for kx in 0..K {
                    let wv = loadm(d.wt.add((ky * K + kx) * c + c0), cnt);
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = fma(xs[j * S + kx], wv, *a);
                    }
                }
            }
            acc
        }

        /// Output rows `oy0..oy1` of the depthwise convolution `d`.
        $(#[$attr])*
        pub(in crate::infer) unsafe fn depthwise(d: &DwCall, oy0: usize, oy1: usize) {
            let (k, s, pad, c) = (d.k, d.stride, d.pad, d.c);
            // Output columns whose every tap is inside the input (for kernels other than 3x3):
            // no bounds checks there.
            let lo = pad.div_ceil(s);
            let hi = if d.w + pad >= k { ((d.w + pad - k) / s + 1).min(d.ow) } else { 0 };
            for oy in oy0..oy1 {
                let ky0 = pad.saturating_sub(oy * s);
                let ky1 = k.min((d.h + pad).saturating_sub(oy * s));
                let yrow = d.y.add((oy - d.y_row0) * d.ow * c);
                let mut c0 = 0;
                while c0 < c {
                    let cnt = (c - c0).min(LANES);
                    let bv = loadm(d.bias.add(c0), cnt);
                    let span = (ky0, ky1, c0, cnt);
                    let store = |ox: usize, acc: &[V]| {
                        for (j, a) in acc.iter().enumerate().take(d.ow - ox) {
                            let v = if d.relu6 { clamp6(*a) } else { *a };
                            storem(yrow.add((ox + j) * c + c0), v, cnt);
                        }
                    };
                    if k == 3 && s <= 2 {
                        // The whole row by tiles, its ends included; a last tile of at most 4
                        // outputs is a small one.
                        let mut ox = 0;
                        while ox < d.ow {
                            if d.ow - ox > 4 && DW_TILE > 4 {
                                let acc = if s == 1 { dw_tile::<3, 1, DW_TILE>(d, oy, span, ox, bv) } else { dw_tile::<3, 2, DW_TILE>(d, oy, span, ox, bv) };
                                store(ox, &acc);
                                ox += DW_TILE;
                            } else {
                                let acc = if s == 1 { dw_tile::<3, 1, 4>(d, oy, span, ox, bv) } else { dw_tile::<3, 2, 4>(d, oy, span, ox, bv) };
                                store(ox, &acc);
                                ox += 4;
                            }
                        }
                        c0 += LANES;
                        continue;
                    }
                    let mut ox = 0;
                    while ox < d.ow {
                        if ox >= lo && ox + 4 <= hi {
                            let mut acc = [bv; 4];
                            for ky in ky0..ky1 {
                                let row = d.x.add(((oy * s + ky - pad - d.x_row0) * d.w) * c + c0);
                                for kx in 0..k {
                                    let wv = loadm(d.wt.add((ky * k + kx) * c + c0), cnt);
                                    let ix = ox * s + kx - pad;
                                    for (j, a) in acc.iter_mut().enumerate() {
                                        *a = fma(loadm(row.add((ix + j * s) * c), cnt), wv, *a);
                                    }
                                }
                            }
                            store(ox, &acc);
                            ox += 4;
                        } else {
                            let mut acc = bv;
                            for ky in ky0..ky1 {
                                let row = d.x.add(((oy * s + ky - pad - d.x_row0) * d.w) * c + c0);
                                for kx in 0..k {
                                    let ix = (ox * s + kx) as isize - pad as isize;
                                    if ix < 0 || ix >= d.w as isize {
                                        continue;
                                    }
                                    let wv = loadm(d.wt.add((ky * k + kx) * c + c0), cnt);
                                    acc = fma(loadm(row.add(ix as usize * c), cnt), wv, acc);
                                }
                            }
                            let v = if d.relu6 { clamp6(acc) } else { acc };
                            storem(yrow.add(ox * c + c0), v, cnt);
                            ox += 1;
                        }
                    }
                    c0 += LANES;
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::{DwCall, GemmCall, MB};

    const LANES: usize = 16;
    /// Depthwise outputs per tile: 8 sums in flight, 17 inputs at stride 2, all in the 32
    /// vector registers.
    const DW_TILE: usize = 8;
    type V = __m512;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> V {
        _mm512_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32) -> V {
        _mm512_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat_from(p: *const f32) -> V {
        _mm512_set1_ps(*p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fma(a: V, b: V, c: V) -> V {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add(a: V, b: V) -> V {
        _mm512_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn clamp6(a: V) -> V {
        _mm512_min_ps(_mm512_max_ps(a, _mm512_setzero_ps()), _mm512_set1_ps(6.0))
    }
    /// The first `cnt` lanes at `p`, zeros after.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn loadm(p: *const f32, cnt: usize) -> V {
        if cnt == LANES { _mm512_loadu_ps(p) } else { _mm512_maskz_loadu_ps(((1u32 << cnt) - 1) as u16, p) }
    }
    /// Stores the first `cnt` lanes at `p`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn storem(p: *mut f32, v: V, cnt: usize) {
        if cnt == LANES { _mm512_storeu_ps(p, v) } else { _mm512_mask_storeu_ps(p, ((1u32 << cnt) - 1) as u16, v) }
    }
    fn isa() -> super::Isa {
        super::Isa::Avx512
    }

    algorithms!(#[target_feature(enable = "avx512f")]);
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::{DwCall, GemmCall, MB};

    const LANES: usize = 8;
    /// Depthwise outputs per tile: what the 16 vector registers hold.
    const DW_TILE: usize = 4;
    type V = __m256;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zero() -> V {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f32) -> V {
        _mm256_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat_from(p: *const f32) -> V {
        _mm256_broadcast_ss(&*p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma(a: V, b: V, c: V) -> V {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add(a: V, b: V) -> V {
        _mm256_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn clamp6(a: V) -> V {
        _mm256_min_ps(_mm256_max_ps(a, _mm256_setzero_ps()), _mm256_set1_ps(6.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask(cnt: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }
    /// The first `cnt` lanes at `p`, zeros after.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn loadm(p: *const f32, cnt: usize) -> V {
        if cnt == LANES { _mm256_loadu_ps(p) } else { _mm256_maskload_ps(p, mask(cnt)) }
    }
    /// Stores the first `cnt` lanes at `p`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn storem(p: *mut f32, v: V, cnt: usize) {
        if cnt == LANES { _mm256_storeu_ps(p, v) } else { _mm256_maskstore_ps(p, mask(cnt), v) }
    }
    fn isa() -> super::Isa {
        super::Isa::Avx2
    }

    algorithms!(#[target_feature(enable = "avx2,fma")]);
}

pub(super) mod portable {
    use super::{DwCall, GemmCall, MB};

    const LANES: usize = 8;
    /// Depthwise outputs per tile.
    const DW_TILE: usize = 4;

    #[derive(Clone, Copy)]
    struct V([f32; LANES]);

    #[inline(always)]
    fn zero() -> V {
        V([0.0; LANES])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        V(std::ptr::read_unaligned(p.cast::<[f32; LANES]>()))
    }
    #[inline(always)]
    unsafe fn splat_from(p: *const f32) -> V {
        V([*p; LANES])
    }
    #[inline(always)]
    fn fma(a: V, b: V, c: V) -> V {
        V(std::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    fn add(a: V, b: V) -> V {
        V(std::array::from_fn(|i| a.0[i] + b.0[i]))
    }
    #[inline(always)]
    fn clamp6(a: V) -> V {
        V(a.0.map(|v| v.clamp(0.0, 6.0)))
    }
    #[inline(always)]
    unsafe fn loadm(p: *const f32, cnt: usize) -> V {
        if cnt == LANES {
            return load(p);
        }
        let mut v = [0.0; LANES];
        std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), cnt);
        V(v)
    }
    #[inline(always)]
    unsafe fn storem(p: *mut f32, v: V, cnt: usize) {
        std::ptr::copy_nonoverlapping(v.0.as_ptr(), p, cnt);
    }
    fn isa() -> super::Isa {
        super::Isa::Portable
    }

    algorithms!();
}

/// [`GemmCall`] rows `m0..m1`, panels `p0..p1`, on `isa`'s kernels.
///
/// # Safety
///
/// `isa` runs on this CPU, and every pointer of `g` covers what the shapes say: `a` rows
/// `m0..m1` of `k` values (row stride `lda`), `b` panels `p0..p1`, `bias` `n` values, `res`
/// rows `m0..m1` of `res_cols`, `c` rows `m0..m1` of `n` values, none of them overlapping `c`.
pub(super) unsafe fn gemm(isa: Isa, g: &GemmCall, m0: usize, m1: usize, p0: usize, p1: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::gemm(g, m0, m1, p0, p1),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::gemm(g, m0, m1, p0, p1),
        _ => portable::gemm(g, m0, m1, p0, p1),
    }
}

/// [`DwCall`] output rows `oy0..oy1`, on `isa`'s kernels.
///
/// # Safety
///
/// `isa` runs on this CPU; `x` holds `h * w * c` values, `wt` `k * k * c`, `bias` `c`, and
/// `y` rows `oy0..oy1` of `ow * c` values, not overlapping the others.
pub(super) unsafe fn depthwise(isa: Isa, d: &DwCall, oy0: usize, oy1: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::depthwise(d, oy0, oy1),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::depthwise(d, oy0, oy1),
        _ => portable::depthwise(d, oy0, oy1),
    }
}

//! 2-D convolution on NCHW `f32` buffers: dense (im2col + gemm, or gemm alone for 1x1) and
//! depthwise (direct loops), forward and backward.

use rayon::prelude::*;

use super::{for_each_chunk, gemm_acc, parallel, simd_kernel, threads, written_chunks};

/// The geometry of one convolution: square kernel, symmetric padding, no dilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// One group per channel (`c_out == c_in`, weight `[c, 1, k, k]`).
    pub depthwise: bool,
}

impl ConvGeom {
    /// Checks the geometry and the buffer lengths (`x`, `weight`, and `dy` for the backward
    /// pass) with overflow-safe arithmetic: a non-zero kernel and stride, a kernel that fits
    /// the padded input, a depthwise conv with `c_out == c_in`, and each buffer exactly as
    /// long as the geometry says. The kernels assume all of it; [`forward`] and [`backward`]
    /// check it first, in release builds too.
    ///
    /// # Errors
    ///
    /// A message naming the first violation and the values involved.
    pub fn check(&self, x: usize, weight: usize, dy: Option<usize>) -> Result<(), String> {
        let g = self;
        if g.kernel == 0 || g.stride == 0 {
            return Err(format!("kernel {} and stride {} must be at least 1", g.kernel, g.stride));
        }
        for (side, len) in [("height", g.h), ("width", g.w)] {
            let padded = len.checked_add(g.pad.checked_mul(2).ok_or("padding overflows")?).ok_or("padded size overflows")?;
            if padded < g.kernel {
                return Err(format!("kernel {} is larger than the padded input {side} {len} + 2 * {}", g.kernel, g.pad));
            }
        }
        if g.depthwise && g.c_out != g.c_in {
            return Err(format!("a depthwise conv maps c_in {} to the same c_out, not {}", g.c_in, g.c_out));
        }
        let product = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let in_per_group = if g.depthwise { 1 } else { g.c_in };
        let want = [
            ("input", product(&[g.batch, g.c_in, g.h, g.w]), Some(x)),
            ("weight", product(&[g.c_out, in_per_group, g.kernel, g.kernel]), Some(weight)),
            ("output gradient", product(&[g.batch, g.c_out, g.out_h(), g.out_w()]), dy),
        ];
        for (what, expected, got) in want {
            let expected = expected.ok_or_else(|| format!("the {what} size overflows usize ({g:?})"))?;
            if let Some(got) = got
                && got != expected
            {
                return Err(format!("the {what} has {got} values; {g:?} needs {expected}"));
            }
        }
        Ok(())
    }

    /// Output height; valid for a geometry that passes [`ConvGeom::check`].
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// Output width; valid for a geometry that passes [`ConvGeom::check`].
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.kernel) / self.stride + 1
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// `c_in * k * k`: the reduction length of a dense conv.
    fn patch(&self) -> usize {
        self.c_in * self.kernel * self.kernel
    }

    /// A 1x1, stride-1, unpadded conv reads its input directly as the gemm operand.
    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.pad == 0
    }

    pub fn weight_len(&self) -> usize {
        if self.depthwise { self.c_in * self.kernel * self.kernel } else { self.c_out * self.patch() }
    }

    pub fn out_len(&self) -> usize {
        self.batch * self.c_out * self.out_plane()
    }
}

/// `y = conv(x, weight)`, `[batch, c_out, out_h, out_w]`.
///
/// # Panics
///
/// When [`ConvGeom::check`] fails (wrong buffer lengths, a kernel larger than the padded
/// input, ...), with its message: the kernels index by the geometry.
pub fn forward(x: &[f32], weight: &[f32], g: &ConvGeom) -> Vec<f32> {
    if let Err(e) = g.check(x.len(), weight.len(), None) {
        panic!("conv::forward: {e}");
    }
    if g.depthwise {
        depthwise_forward(x, weight, g)
    } else {
        let mut y = vec![0.0f32; g.out_len()];
        dense_forward(x, weight, &mut y, g);
        y
    }
}

/// Gradients of [`forward`]: `(dx, dweight)`, `dx` only when `need_dx`.
///
/// # Panics
///
/// As [`forward`], when [`ConvGeom::check`] fails for `x`, `weight` and `dy`.
pub fn backward(x: &[f32], weight: &[f32], dy: &[f32], g: &ConvGeom, need_dx: bool) -> (Option<Vec<f32>>, Vec<f32>) {
    if let Err(e) = g.check(x.len(), weight.len(), Some(dy.len())) {
        panic!("conv::backward: {e}");
    }
    if g.depthwise {
        let dx = need_dx.then(|| depthwise_backward_input(weight, dy, g));
        (dx, depthwise_backward_weight(x, dy, g))
    } else {
        let dx = need_dx.then(|| dense_backward_input(weight, dy, g));
        (dx, dense_backward_weight(x, dy, g))
    }
}

/// How to spread per-sample work over the pool: whole samples when there are enough of them,
/// otherwise inside each gemm.
fn per_sample_parallel(batch: usize, macs: usize) -> bool {
    batch >= 2 * threads() && parallel(macs / 16)
}

/// Multiply-adds of one dense conv over the batch.
fn dense_macs(g: &ConvGeom) -> usize {
    g.batch * g.c_out * g.patch() * g.out_plane()
}

fn dense_forward(x: &[f32], weight: &[f32], y: &mut [f32], g: &ConvGeom) {
    let (ip, op, k) = (g.c_in * g.in_plane(), g.c_out * g.out_plane(), g.patch());
    let one = |xs: &[f32], ys: &mut [f32], inner: bool| {
        let cols_buf;
        let cols = if g.is_pointwise() {
            xs
        } else {
            cols_buf = im2col(xs, g);
            &cols_buf
        };
        // y[c_out, p] = w[c_out, k] @ cols[k, p]
        gemm_acc(ys, weight, cols, g.c_out, g.out_plane(), k, Layout::w_cols(k, g.out_plane()), false, inner);
    };
    let inner = parallel(dense_macs(g) / 16);
    if per_sample_parallel(g.batch, dense_macs(g)) {
        y.par_chunks_mut(op).zip(x.par_chunks(ip)).for_each(|(ys, xs)| one(xs, ys, false));
    } else {
        y.chunks_mut(op).zip(x.chunks(ip)).for_each(|(ys, xs)| one(xs, ys, inner));
    }
}

fn dense_backward_input(weight: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (ip, op, k) = (g.c_in * g.in_plane(), g.c_out * g.out_plane(), g.patch());
    let mut dx = vec![0.0f32; g.batch * ip];
    let one = |dys: &[f32], dxs: &mut [f32], inner: bool| {
        // dcols[k, p] = w^T[k, c_out] @ dy[c_out, p]
        if g.is_pointwise() {
            gemm_acc(dxs, weight, dys, k, g.out_plane(), g.c_out, Layout::wt_dy(k, g.out_plane()), false, inner);
        } else {
            let mut cols = vec![0.0f32; k * g.out_plane()];
            gemm_acc(&mut cols, weight, dys, k, g.out_plane(), g.c_out, Layout::wt_dy(k, g.out_plane()), false, inner);
            col2im(&cols, dxs, g);
        }
    };
    let inner = parallel(dense_macs(g) / 16);
    if per_sample_parallel(g.batch, dense_macs(g)) {
        dx.par_chunks_mut(ip).zip(dy.par_chunks(op)).for_each(|(dxs, dys)| one(dys, dxs, false));
    } else {
        dx.chunks_mut(ip).zip(dy.chunks(op)).for_each(|(dxs, dys)| one(dys, dxs, inner));
    }
    dx
}

fn dense_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (ip, op, k) = (g.c_in * g.in_plane(), g.c_out * g.out_plane(), g.patch());
    // dw[c_out, k] += dy[c_out, p] @ cols^T[p, k], summed over samples.
    let one = |acc: &mut Vec<f32>, xs: &[f32], dys: &[f32], inner: bool| {
        let cols_buf;
        let cols = if g.is_pointwise() {
            xs
        } else {
            cols_buf = im2col(xs, g);
            &cols_buf
        };
        gemm_acc(acc, dys, cols, g.c_out, k, g.out_plane(), Layout::dy_colst(g.out_plane()), true, inner);
    };
    let zero = || vec![0.0f32; g.c_out * k];
    let inner = parallel(dense_macs(g) / 16);
    if per_sample_parallel(g.batch, dense_macs(g)) {
        let chunk = g.batch.div_ceil(threads());
        let parts: Vec<Vec<f32>> = (0..g.batch)
            .collect::<Vec<_>>()
            .par_chunks(chunk)
            .map(|samples| {
                let mut acc = zero();
                for &n in samples {
                    one(&mut acc, &x[n * ip..(n + 1) * ip], &dy[n * op..(n + 1) * op], false);
                }
                acc
            })
            .collect();
        sum_parts(parts)
    } else {
        let mut acc = zero();
        for n in 0..g.batch {
            one(&mut acc, &x[n * ip..(n + 1) * ip], &dy[n * op..(n + 1) * op], inner);
        }
        acc
    }
}

fn sum_parts(mut parts: Vec<Vec<f32>>) -> Vec<f32> {
    let mut acc = parts.swap_remove(0);
    for p in parts {
        acc.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    acc
}

/// Operand strides of the three gemms, as `(lhs_cs, lhs_rs, rhs_cs, rhs_rs)` where
/// `dst[m, n] = sum_k lhs[m, k] * rhs[k, n]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub lhs_cs: isize,
    pub lhs_rs: isize,
    pub rhs_cs: isize,
    pub rhs_rs: isize,
}

impl Layout {
    /// `w[m, k]` row-major times `cols[k, p]` row-major.
    fn w_cols(k: usize, p: usize) -> Self {
        Layout { lhs_cs: 1, lhs_rs: k as isize, rhs_cs: 1, rhs_rs: p as isize }
    }

    /// `w^T[k, m]` (w row-major `[m, k]`) times `dy[m, p]`.
    fn wt_dy(k: usize, p: usize) -> Self {
        Layout { lhs_cs: k as isize, lhs_rs: 1, rhs_cs: 1, rhs_rs: p as isize }
    }

    /// `dy[m, p]` times `cols^T[p, k]` (cols row-major `[k, p]`).
    fn dy_colst(p: usize) -> Self {
        Layout { lhs_cs: 1, lhs_rs: p as isize, rhs_cs: p as isize, rhs_rs: 1 }
    }
}

/// `[c_in * k * k, out_h * out_w]` patches of one sample, zero where the window leaves the image.
fn im2col(x: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let mut cols = vec![0.0f32; g.patch() * oh * ow];
    for c in 0..g.c_in {
        let plane = &x[c * g.in_plane()..(c + 1) * g.in_plane()];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut cols[((c * k + kh) * k + kw) * oh * ow..][..oh * ow];
                for (o_y, out_row) in row.chunks_mut(ow).enumerate() {
                    let iy = (o_y * g.stride + kh) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..][..g.w];
                    let (lo, hi) = valid_range(ow, g.stride, kw, g.pad, g.w);
                    for (o_x, v) in out_row.iter_mut().enumerate().take(hi).skip(lo) {
                        *v = src[o_x * g.stride + kw - g.pad];
                    }
                }
            }
        }
    }
    cols
}

/// Adds patches back into one sample's input gradient (the adjoint of [`im2col`]).
fn col2im(cols: &[f32], dx: &mut [f32], g: &ConvGeom) {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    for c in 0..g.c_in {
        let plane = &mut dx[c * g.in_plane()..(c + 1) * g.in_plane()];
        for kh in 0..k {
            for kw in 0..k {
                let row = &cols[((c * k + kh) * k + kw) * oh * ow..][..oh * ow];
                for (o_y, col_row) in row.chunks(ow).enumerate() {
                    let iy = (o_y * g.stride + kh) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w];
                    let (lo, hi) = valid_range(ow, g.stride, kw, g.pad, g.w);
                    for (o_x, v) in col_row.iter().enumerate().take(hi).skip(lo) {
                        dst[o_x * g.stride + kw - g.pad] += v;
                    }
                }
            }
        }
    }
}

/// The output columns `lo..hi` whose input column `o * stride + kw - pad` lies in `0..w`.
fn valid_range(out_w: usize, stride: usize, kw: usize, pad: usize, w: usize) -> (usize, usize) {
    // o * stride + kw >= pad
    let lo = if kw >= pad { 0 } else { (pad - kw).div_ceil(stride) };
    // o * stride + kw - pad <= w - 1
    let hi = if w + pad < kw + 1 { 0 } else { ((w + pad - kw - 1) / stride + 1).min(out_w) };
    (lo.min(hi), hi)
}

/// One depthwise plane's zero-padded input, `(h + 2p) x (w + 2p)`, split into its `s * s`
/// stride phases: phase `(r, q)` holds the padded values at rows `r, r + s, ...` and columns
/// `q, q + s, ...`, as an `hq x wq` plane. Tap `(kh, kw)` of output `(oy, ox)` reads padded
/// `(oy * s + kh, ox * s + kw)`, which is `(oy + kh / s, ox + kw / s)` of phase
/// `(kh % s, kw % s)`: in rows `wq` wide, one contiguous run of `(oh - 1) * wq + ow` values per
/// tap, whatever the stride. The runs are long enough to vectorise on the small planes of a
/// CIFAR-size network (8x8, stride 1: 80 values, against eight runs of 8 row by row), and no
/// loop divides. Each run also passes the `wq - ow` columns past each output row's end, which
/// are computed and dropped (forward) or zero (backward).
#[derive(Clone, Copy)]
struct Phases {
    s: usize,
    pad: usize,
    w: usize,
    hq: usize,
    wq: usize,
    oh: usize,
    ow: usize,
    k: usize,
}

impl Phases {
    #[inline(always)]
    fn new(g: &ConvGeom) -> Self {
        let s = g.stride;
        let (hq, wq) = ((g.h + 2 * g.pad).div_ceil(s), (g.w + 2 * g.pad).div_ceil(s));
        Phases { s, pad: g.pad, w: g.w, hq, wq, oh: g.out_h(), ow: g.out_w(), k: g.kernel }
    }

    /// Values in the buffer of all phases.
    #[inline(always)]
    fn len(&self) -> usize {
        self.s * self.s * self.hq * self.wq
    }

    /// Length of each tap's run.
    #[inline(always)]
    fn run(&self) -> usize {
        (self.oh - 1) * self.wq + self.ow
    }

    /// Where tap `(kh, kw)`'s run starts in the buffer.
    #[inline(always)]
    fn tap(&self, kh: usize, kw: usize) -> usize {
        let (s, wq) = (self.s, self.wq);
        ((kh % s) * s + kw % s) * self.hq * wq + (kh / s) * wq + kw / s
    }

    /// For input row `iy` and column phase `q`: the first input column of that phase, if the
    /// row has one, and where its value lands in the buffer (the next ones follow one apart).
    #[inline(always)]
    fn row_phase(&self, iy: usize, q: usize) -> Option<(usize, usize)> {
        let (s, p) = (self.s, self.pad);
        let ix0 = (q + s - p % s) % s;
        let r = (iy + p) % s;
        (ix0 < self.w).then(|| (ix0, (r * s + q) * self.hq * self.wq + (iy + p) / s * self.wq + (ix0 + p) / s))
    }

    /// The padded plane of `input` (`h x w`), split.
    #[inline(always)]
    fn split(&self, input: &[f32]) -> Vec<f32> {
        let mut buf = vec![0.0f32; self.len()];
        for (iy, row) in input.chunks_exact(self.w).enumerate() {
            for q in 0..self.s {
                if let Some((ix0, at)) = self.row_phase(iy, q) {
                    if self.s == 1 {
                        buf[at..][..self.w].copy_from_slice(row);
                    } else {
                        buf[at..].iter_mut().zip(row[ix0..].iter().step_by(self.s)).for_each(|(d, &v)| *d = v);
                    }
                }
            }
        }
        buf
    }

    /// The inverse of [`Phases::split`]: the `h x w` interior of a split buffer into `out`.
    #[inline(always)]
    fn merge(&self, buf: &[f32], out: &mut [f32]) {
        for (iy, row) in out.chunks_exact_mut(self.w).enumerate() {
            for q in 0..self.s {
                if let Some((ix0, at)) = self.row_phase(iy, q) {
                    if self.s == 1 {
                        row.copy_from_slice(&buf[at..][..self.w]);
                    } else {
                        row[ix0..].iter_mut().step_by(self.s).zip(&buf[at..]).for_each(|(d, &v)| *d = v);
                    }
                }
            }
        }
    }

    /// `dout` (`oh x ow`) in rows `wq` wide, the extra columns zero.
    #[inline(always)]
    fn widen(&self, dout: &[f32]) -> Vec<f32> {
        let mut buf = vec![0.0f32; self.run()];
        for (o_y, row) in dout.chunks_exact(self.ow).enumerate() {
            buf[o_y * self.wq..][..self.ow].copy_from_slice(row);
        }
        buf
    }
}

/// `acc[j] += t * src[j]`.
#[inline(always)]
fn axpy(acc: &mut [f32], t: f32, src: &[f32]) {
    acc.iter_mut().zip(src).for_each(|(a, x)| *a += t * x);
}

simd_kernel! {
fn depthwise_forward(x: &[f32], weight: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (ip, op, kk, ph) = (g.in_plane(), g.out_plane(), g.kernel * g.kernel, Phases::new(g));
    // SAFETY: each piece is one output plane, `oh` rows of `ow`, and every row is written.
    unsafe {
        written_chunks(g.out_len(), op, x.len() * kk, |i, out| {
            let taps = &weight[(i % g.c_in) * kk..][..kk];
            let xs = ph.split(&x[i * ip..][..ip]);
            let mut acc = vec![0.0f32; ph.run()];
            // Taps add in order; a padding tap adds `t * 0`.
            for kh in 0..ph.k {
                for kw in 0..ph.k {
                    axpy(&mut acc, taps[kh * ph.k + kw], &xs[ph.tap(kh, kw)..][..ph.run()]);
                }
            }
            for (o_y, row) in out.chunks_exact_mut(ph.ow).enumerate() {
                row.iter_mut().zip(&acc[o_y * ph.wq..][..ph.ow]).for_each(|(y, &v)| {
                    y.write(v);
                });
            }
        })
    }
}
}

simd_kernel! {
fn depthwise_backward_input(weight: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (ip, op, kk, ph) = (g.in_plane(), g.out_plane(), g.kernel * g.kernel, Phases::new(g));
    let mut dx = vec![0.0f32; g.batch * g.c_in * ip];
    for_each_chunk(&mut dx, ip, dy.len() * kk, |i, din| {
        let taps = &weight[(i % g.c_in) * kk..][..kk];
        let dys = ph.widen(&dy[i * op..][..op]);
        // Each tap scatters `t * dy` back along its run, into the split padded input.
        let mut acc = vec![0.0f32; ph.len()];
        for kh in 0..ph.k {
            for kw in 0..ph.k {
                axpy(&mut acc[ph.tap(kh, kw)..][..ph.run()], taps[kh * ph.k + kw], &dys);
            }
        }
        ph.merge(&acc, din);
    });
    dx
}
}

simd_kernel! {
fn depthwise_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (ip, op, kk, ph) = (g.in_plane(), g.out_plane(), g.kernel * g.kernel, Phases::new(g));
    let mut dw = vec![0.0f32; g.c_in * kk];
    for_each_chunk(&mut dw, kk, dy.len() * kk, |c, taps| {
        for n in 0..g.batch {
            let i = n * g.c_in + c;
            let xs = ph.split(&x[i * ip..][..ip]);
            let dys = ph.widen(&dy[i * op..][..op]);
            for kh in 0..ph.k {
                for kw in 0..ph.k {
                    taps[kh * ph.k + kw] += dot(&dys, &xs[ph.tap(kh, kw)..][..ph.run()]);
                }
            }
        }
    });
    dw
}
}

/// A dot product in eight lanes, so that it vectorises (through fixed-size arrays, as
/// `bn`'s `lanes`).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let n = a.len().min(b.len());
    let ((ca, ra), (cb, rb)) = (a[..n].as_chunks::<8>(), b[..n].as_chunks::<8>());
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The definition, in f64.
    pub(crate) fn naive(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f64> {
        let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
        let mut y = vec![0.0f64; g.out_len()];
        for n in 0..g.batch {
            for o in 0..g.c_out {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let mut s = 0.0f64;
                        let ins: Vec<usize> = if g.depthwise { vec![o] } else { (0..g.c_in).collect() };
                        for (j, &i) in ins.iter().enumerate() {
                            for kh in 0..k {
                                for kw in 0..k {
                                    let iy = (yy * g.stride + kh) as isize - g.pad as isize;
                                    let ix = (xx * g.stride + kw) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xv = x[((n * g.c_in + i) * g.h + iy as usize) * g.w + ix as usize] as f64;
                                    let wi = if g.depthwise { (o * k + kh) * k + kw } else { ((o * g.c_in + j) * k + kh) * k + kw };
                                    s += xv * w[wi] as f64;
                                }
                            }
                        }
                        y[((n * g.c_out + o) * oh + yy) * ow + xx] = s;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    fn geoms() -> Vec<ConvGeom> {
        let mut out = Vec::new();
        for &(depthwise, kernel, stride, h, w) in &[
            (false, 1, 1, 5, 4),
            (false, 3, 1, 5, 6),
            (false, 3, 2, 7, 6),
            (true, 3, 1, 5, 6),
            (true, 3, 2, 7, 8),
            (true, 5, 2, 6, 5),
            (true, 3, 1, 1, 1),
        ] {
            for batch in [1, 9] {
                let c_in = 3;
                let c_out = if depthwise { c_in } else { 5 };
                out.push(ConvGeom { batch, c_in, h, w, c_out, kernel, stride, pad: kernel / 2, depthwise });
            }
        }
        // Depthwise phase planes beyond `pad = kernel / 2`: no padding, padding as wide as the
        // kernel, stride 3, a stride larger than the kernel, odd sizes throughout.
        for &(kernel, stride, pad, h, w) in &[(3, 1, 0, 5, 7), (3, 1, 3, 4, 3), (3, 3, 1, 11, 7), (5, 3, 2, 9, 10), (1, 2, 0, 5, 5), (3, 4, 1, 9, 6)] {
            out.push(ConvGeom { batch: 2, c_in: 3, h, w, c_out: 3, kernel, stride, pad, depthwise: true });
        }
        out
    }

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((*x as f64 - y).abs() <= 1e-4 * (1.0 + y.abs()), "index {i}: {x} vs {y}");
        }
    }

    #[test]
    fn bad_geometries_are_refused_in_release_builds() {
        let g = ConvGeom { batch: 1, c_in: 3, h: 4, w: 4, c_out: 5, kernel: 3, stride: 1, pad: 1, depthwise: false };
        let (x, w) = (values(48, 1), values(g.weight_len(), 2));
        assert!(g.check(x.len(), w.len(), None).is_ok());
        // A weight wider than the input (c_in 4 against 3 channels) fits gemm's span check.
        let wide = values(5 * 4 * 9, 3);
        let err = g.check(x.len(), wide.len(), None).unwrap_err();
        assert!(err.contains("weight") && err.contains("180"), "{err}");
        let small = ConvGeom { h: 1, w: 1, pad: 0, ..g };
        assert!(small.check(3, w.len(), None).unwrap_err().contains("larger than the padded input"));
        let huge = ConvGeom { batch: usize::MAX / 2, ..g };
        assert!(huge.check(x.len(), w.len(), None).unwrap_err().contains("overflows"));
        let dw = ConvGeom { depthwise: true, ..g };
        assert!(dw.check(x.len(), 27, None).unwrap_err().contains("depthwise"));
        assert!(g.check(x.len(), w.len(), Some(7)).unwrap_err().contains("output gradient"));
        assert!(ConvGeom { stride: 0, ..g }.check(x.len(), w.len(), None).is_err());
    }

    #[test]
    #[should_panic(expected = "conv::forward: the weight has 180 values")]
    fn forward_panics_with_the_reason_on_a_wrong_weight() {
        let g = ConvGeom { batch: 1, c_in: 3, h: 4, w: 4, c_out: 5, kernel: 3, stride: 1, pad: 1, depthwise: false };
        forward(&values(48, 1), &values(180, 2), &g);
    }

    #[test]
    #[should_panic(expected = "conv::backward: kernel 3 is larger than the padded input height 1")]
    fn backward_panics_with_the_reason_on_a_kernel_larger_than_the_input() {
        let g = ConvGeom { batch: 1, c_in: 1, h: 1, w: 5, c_out: 1, kernel: 3, stride: 1, pad: 0, depthwise: true };
        backward(&[0.0; 5], &[0.0; 9], &[0.0; 3], &g, true);
    }

    /// The pool-parallel paths (whole samples per thread, gemm on the pool, depthwise planes
    /// on the pool) only run for shapes above [`super::super::PARALLEL_WORK`] and with more
    /// than one thread: run shapes that reach them on a 4-thread pool.
    #[test]
    fn parallel_paths_match_the_definition() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        pool.install(|| {
            assert_eq!(threads(), 4);
            let cases = [
                // 8 samples >= 2 * threads: whole samples in parallel (dense 3x3 and 1x1).
                ConvGeom { batch: 8, c_in: 6, h: 12, w: 10, c_out: 7, kernel: 3, stride: 1, pad: 1, depthwise: false },
                ConvGeom { batch: 8, c_in: 16, h: 9, w: 9, c_out: 24, kernel: 1, stride: 1, pad: 0, depthwise: false },
                // One large sample: gemm itself on the pool.
                ConvGeom { batch: 1, c_in: 32, h: 16, w: 16, c_out: 48, kernel: 3, stride: 2, pad: 1, depthwise: false },
                // Depthwise planes on the pool.
                ConvGeom { batch: 4, c_in: 32, h: 14, w: 14, c_out: 32, kernel: 3, stride: 1, pad: 1, depthwise: true },
                ConvGeom { batch: 4, c_in: 32, h: 15, w: 15, c_out: 32, kernel: 3, stride: 2, pad: 1, depthwise: true },
            ];
            for g in cases {
                // The work measures the kernels use to decide.
                let reaches = if g.depthwise {
                    super::super::parallel(g.batch * g.c_in * g.h * g.w * g.kernel * g.kernel)
                } else {
                    per_sample_parallel(g.batch, dense_macs(&g)) || parallel(dense_macs(&g) / 16)
                };
                assert!(reaches, "{g:?} does not reach the parallel path");
                let x = values(g.batch * g.c_in * g.h * g.w, 11);
                let w = values(g.weight_len(), 12);
                close(&forward(&x, &w, &g), &naive(&x, &w, &g));
                // Backward against the serial run of the same kernels (the adjoint test covers
                // their definition on small shapes).
                let dy = values(g.out_len(), 13);
                let (dx, dw) = backward(&x, &w, &dy, &g, true);
                let serial = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                let (dx1, dw1) = serial.install(|| backward(&x, &w, &dy, &g, true));
                let (dx, dx1) = (dx.unwrap(), dx1.unwrap());
                for (a, b) in dx.iter().zip(&dx1).chain(dw.iter().zip(&dw1)) {
                    assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
                }
            }
        });
    }

    #[test]
    fn forward_matches_the_definition() {
        for g in geoms() {
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let w = values(g.weight_len(), 2);
            close(&forward(&x, &w, &g), &naive(&x, &w, &g));
        }
    }

    /// Backward is the adjoint of forward: `<dy, conv(x, w)>` is linear in x and in w, so its
    /// gradient with respect to one input element is the forward applied to a unit vector.
    #[test]
    fn backward_is_the_adjoint_of_forward() {
        for g in geoms() {
            let x = values(g.batch * g.c_in * g.h * g.w, 3);
            let w = values(g.weight_len(), 4);
            let dy = values(g.out_len(), 5);
            let (dx, dw) = backward(&x, &w, &dy, &g, true);
            let dx = dx.unwrap();
            let inner = |x: &[f32], w: &[f32]| naive(x, w, &g).iter().zip(&dy).map(|(a, b)| a * *b as f64).sum::<f64>();
            let unit = |n: usize, i: usize| {
                let mut e = vec![0.0f32; n];
                e[i] = 1.0;
                e
            };
            let expect_dx: Vec<f64> = (0..x.len()).map(|i| inner(&unit(x.len(), i), &w)).collect();
            let expect_dw: Vec<f64> = (0..w.len()).map(|i| inner(&x, &unit(w.len(), i))).collect();
            close(&dx, &expect_dx);
            close(&dw, &expect_dw);
        }
    }
}

//! Hand-written CPU kernels for the layers a US-Net spends its time in, on plain `f32`
//! buffers in NCHW order.
//!
//! They know nothing of burn: [`crate::ops`] wraps them as burn custom operations (forward
//! and backward) for the Flex backend. Each kernel is tested against its definition here.

pub mod bn;
pub mod conv;

use gemm::Parallelism;

pub(crate) use conv::Layout;

/// Threads in the pool that runs the kernels (`RAYON_NUM_THREADS`, else one per core).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// `dst[m, n] (+)= lhs[m, k] @ rhs[k, n]` with `dst` row-major and the operands laid out as
/// `layout` says. `parallel` lets gemm use the pool (for a lone large product).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_acc(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, n: usize, k: usize, layout: Layout, accumulate: bool, parallel: bool) {
    assert!(dst.len() >= m * n, "gemm: destination too small");
    let span = |cs: isize, rs: isize, rows: usize, cols: usize| {
        if rows == 0 || cols == 0 { 0 } else { (cs as usize) * (cols - 1) + (rs as usize) * (rows - 1) + 1 }
    };
    assert!(lhs.len() >= span(layout.lhs_cs, layout.lhs_rs, m, k), "gemm: lhs too small");
    assert!(rhs.len() >= span(layout.rhs_cs, layout.rhs_rs, k, n), "gemm: rhs too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let parallelism = if parallel && threads() > 1 { Parallelism::Rayon(threads()) } else { Parallelism::None };
    // SAFETY: the asserts above keep every index gemm computes from the shapes and strides
    // inside the three slices, and `dst` does not alias the operands (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            layout.lhs_cs,
            layout.lhs_rs,
            rhs.as_ptr(),
            layout.rhs_cs,
            layout.rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Below this many values (or multiply-adds) a kernel stays on the calling thread: waking the
/// pool costs more than it saves (batch-1 inference spent a third of its time in the scheduler).
const PARALLEL_WORK: usize = 1 << 13;

/// Whether `work` values are worth spreading over the pool.
pub(crate) fn parallel(work: usize) -> bool {
    threads() > 1 && work >= PARALLEL_WORK
}

/// `f(i, piece)` for each `chunk`-sized piece of `out`, on the pool when `work` is worth it.
pub(crate) fn for_each_chunk<F>(out: &mut [f32], chunk: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    use rayon::prelude::*;
    if parallel(work) {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// `(0..n).map(f).unzip()`, on the pool when `work` is worth it.
pub(crate) fn map_unzip<F>(n: usize, work: usize, f: F) -> (Vec<f32>, Vec<f32>)
where
    F: Fn(usize) -> (f32, f32) + Sync + Send,
{
    use rayon::prelude::*;
    if parallel(work) { (0..n).into_par_iter().map(f).unzip() } else { (0..n).map(f).unzip() }
}

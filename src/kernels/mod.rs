//! Hand-written CPU kernels for the layers a US-Net spends its time in, on plain `f32`
//! buffers in NCHW order.
//!
//! They know nothing of burn: [`crate::ops`] wraps them as burn custom operations (forward
//! and backward) for the Flex backend. Each kernel is tested against its definition here.

pub mod bn;
pub mod conv;

use std::mem::MaybeUninit;

use gemm::Parallelism;

pub use crate::infer::simd::Isa;

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
pub(crate) fn for_each_chunk<T, F>(out: &mut [T], chunk: usize, work: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    use rayon::prelude::*;
    if parallel(work) {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// `len` values made as [`for_each_chunk`] makes them, `f(i, piece)` for each `chunk`-sized
/// piece, but without zeroing them first: memory that mimalloc hands back is not zero, and
/// `vec![0.0; len]` cost a pass over it (`memset`, 6% of a sandwich step's profile).
///
/// # Safety
///
/// `f` writes every value of each `piece` it is given (or panics).
pub(crate) unsafe fn written_chunks<F>(len: usize, chunk: usize, work: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
{
    let mut out = Vec::with_capacity(len);
    for_each_chunk(&mut out.spare_capacity_mut()[..len], chunk, work, f);
    // SAFETY: the capacity is `len`, and `f` wrote all of it (the caller's promise).
    unsafe { out.set_len(len) };
    out
}

/// `(0..n).map(f).unzip()`, on the pool when `work` is worth it.
pub(crate) fn map_unzip<F>(n: usize, work: usize, f: F) -> (Vec<f32>, Vec<f32>)
where
    F: Fn(usize) -> (f32, f32) + Sync + Send,
{
    use rayon::prelude::*;
    if parallel(work) { (0..n).into_par_iter().map(f).unzip() } else { (0..n).map(f).unzip() }
}

thread_local! {
    static FORCED: std::cell::Cell<Option<Isa>> = const { std::cell::Cell::new(None) };
}

/// The instruction set the kernels that this thread calls run on: the inference engine's
/// ([`Isa::detect`]: the best the CPU has, or a lower one that `USNET_ISA` names), unless
/// [`with_isa`] chose one for this thread.
pub fn isa() -> Isa {
    FORCED.with(|f| f.get()).unwrap_or_else(Isa::detect)
}

/// Runs `f` with the kernels that this thread calls on `isa`: the tests check that every
/// instruction set computes the same bits.
///
/// # Panics
///
/// When the CPU cannot run `isa` (see [`Isa::available`]).
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    assert!(Isa::available().contains(&isa), "this CPU cannot run {isa:?}");
    let before = FORCED.with(|c| c.replace(Some(isa)));
    let out = f();
    FORCED.with(|c| c.set(before));
    out
}

/// Defines a kernel three times over, compiled for AVX-512, for AVX2 with FMA and for the
/// x86-64 baseline, and calls the one for [`isa`]. The crate is built for the baseline, where
/// LLVM vectorises the kernels' loops four `f32` lanes wide; inside a function that enables
/// AVX2 or AVX-512 (and in the closures defined there, which inherit its features) it
/// vectorises them eight or sixteen wide. Helpers that such a body calls must be
/// `#[inline(always)]`, or they stay at the baseline.
///
/// No instruction set changes a result: Rust never fuses `a * b + c` by itself and every sum
/// keeps the lanes its code writes, so all three compute the same bits.
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                // Every CPU with AVX-512F has AVX2 and FMA.
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? $body
                match $crate::kernels::isa() {
                    // SAFETY: `isa` is always one the CPU has (`Isa::detect`, `with_isa`).
                    $crate::infer::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::infer::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::infer::simd::Isa::Portable => {}
                }
            }
            $body
        }
    };
}
pub(crate) use simd_kernel;

#[cfg(test)]
mod tests {
    use super::bn::{self, Act, Planes};
    use super::conv::{self, ConvGeom};
    use super::{isa, with_isa, Isa};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 125.0 - 3.0).collect()
    }

    /// Every output of the multiversioned kernels, as bits.
    fn outputs() -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        let mut push = |v: &[f32]| out.push(v.iter().map(|x| x.to_bits()).collect());
        for g in [
            ConvGeom { batch: 3, c_in: 5, h: 13, w: 11, c_out: 5, kernel: 3, stride: 1, pad: 1, depthwise: true },
            ConvGeom { batch: 3, c_in: 5, h: 13, w: 11, c_out: 5, kernel: 3, stride: 2, pad: 1, depthwise: true },
            ConvGeom { batch: 2, c_in: 4, h: 9, w: 9, c_out: 4, kernel: 5, stride: 1, pad: 2, depthwise: true },
        ] {
            let (x, w, dy) = (values(g.batch * g.c_in * g.h * g.w, 1), values(g.weight_len(), 2), values(g.out_len(), 3));
            push(&conv::forward(&x, &w, &g));
            let (dx, dw) = conv::backward(&x, &w, &dy, &g, true);
            push(&dx.unwrap());
            push(&dw);
        }
        let p = Planes { batch: 3, channels: 4, plane: 37 };
        let (x, dy, gamma, beta) = (values(3 * 4 * 37, 4), values(3 * 4 * 37, 5), values(4, 6), values(4, 7));
        for act in [Act::Identity, Act::Relu6] {
            let (y, mean, invstd) = bn::train_forward(&x, &gamma, &beta, p, 1e-5, act);
            let (dx, dgamma, dbeta) = bn::train_backward(&x, &dy, &gamma, &beta, &mean, &invstd, p, act);
            let (ddx, dscale, dshift) = bn::affine_act_backward(&x, &dy, &gamma, &beta, p, act);
            for v in [y, mean, invstd, dx, dgamma, dbeta, ddx, dscale, dshift] {
                push(&v);
            }
        }
        out
    }

    /// The claim of `simd_kernel!`: the instruction sets differ in speed only.
    #[test]
    fn every_instruction_set_computes_the_same_bits() {
        let want = with_isa(Isa::Portable, outputs);
        for set in Isa::available() {
            assert!(with_isa(set, outputs) == want, "{set:?} differs from the portable kernels");
        }
        assert_eq!(with_isa(Isa::Portable, isa), Isa::Portable);
    }
}

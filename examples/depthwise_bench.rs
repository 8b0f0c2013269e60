//! The training depthwise kernels on the layers of the bench's `v2_small` US-MobileNet v2 at
//! full width and batch 128 (32x32 input): forward, input gradient and weight gradient, the
//! best of 7 calls each, on the rayon pool (`RAYON_NUM_THREADS`). Compare two versions by
//! building this example at each commit and running the binaries alternately, and two vector
//! widths of one build with `USNET_ISA=portable|avx2|avx512`.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example depthwise_bench
use std::hint::black_box;
use std::time::Instant;

use usnet::kernels::conv::{self, ConvGeom};

/// Seconds of the fastest of `reps` calls of `f`.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    // (channels, input height = width, stride) of each depthwise conv in v2_small at width 1.0.
    let layers = [(32, 32, 1), (96, 32, 2), (144, 16, 1), (144, 16, 2), (192, 8, 1), (192, 8, 1)];
    println!("layer (batch 128)        forward   input grad  weight grad");
    for (c, h, s) in layers {
        let g = ConvGeom { batch: 128, c_in: c, h, w: h, c_out: c, kernel: 3, stride: s, pad: 1, depthwise: true };
        let x: Vec<f32> = (0..g.batch * c * h * h).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let w: Vec<f32> = (0..g.weight_len()).map(|i| ((i * 31) % 17) as f32 / 17.0).collect();
        let dy: Vec<f32> = (0..g.out_len()).map(|i| ((i * 13) % 101) as f32 / 101.0).collect();
        let forward = best_of(7, || drop(black_box(conv::forward(&x, &w, &g))));
        let both = best_of(7, || drop(black_box(conv::backward(&x, &w, &dy, &g, true))));
        let weight = best_of(7, || drop(black_box(conv::backward(&x, &w, &dy, &g, false))));
        let ms = |s: f64| s * 1e3;
        println!("c{c:3} {h:2}x{h:<2} stride {s}    {:7.2} ms {:8.2} ms {:9.2} ms", ms(forward), ms((both - weight).max(0.0)), ms(weight));
    }
}

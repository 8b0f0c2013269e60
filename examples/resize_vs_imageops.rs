//! usnet's resize (PIL's antialiased bilinear in 8-bit fixed point, src/data/transform.rs)
//! against `image::imageops::resize` with its Triangle filter: how many bytes of the PIL
//! fixture each gets wrong, and the time of an ImageNet evaluation transform.
//!
//!     cargo run --release --example resize_vs_imageops
use std::borrow::Cow;
use std::time::Instant;

use image::{imageops, GrayImage};
use rand::SeedableRng;
use usnet::data::{ImageView, Normalize, Transform};

fn pattern(c: usize, h: usize, w: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..c * h * w).map(|_| { state = (state * 1103515245 + 12345) % (1 << 31); (state >> 23) as u8 }).collect()
}

fn imageops_rcc(data: &[u8], c: usize, h: usize, w: usize, resize: usize, crop: usize) -> Vec<u8> {
    let (rh, rw) = if h <= w { (resize, w * resize / h) } else { (h * resize / w, resize) };
    let top = ((rh - crop) as f64 / 2.0).round_ties_even() as u32;
    let left = ((rw - crop) as f64 / 2.0).round_ties_even() as u32;
    let mut out = Vec::new();
    for ch in 0..c {
        let plane = GrayImage::from_raw(w as u32, h as u32, data[ch * h * w..(ch + 1) * h * w].to_vec()).unwrap();
        let r = imageops::resize(&plane, rw as u32, rh as u32, imageops::FilterType::Triangle);
        let cropped = imageops::crop_imm(&r, left, top, crop as u32, crop as u32).to_image();
        out.extend_from_slice(cropped.as_raw());
    }
    out
}

fn main() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/pil_resize.json")).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    let (mut total, mut differ, mut maxdiff) = (0, 0, 0i32);
    for case in fixture["cases"].as_array().unwrap().iter().filter(|c| c["op"] == "resize_center_crop") {
        let (c, h, w) = (n(&case["c"]), n(&case["h"]), n(&case["w"]));
        let data = pattern(c, h, w, case["seed"].as_u64().unwrap());
        let got = imageops_rcc(&data, c, h, w, n(&case["resize"]), n(&case["crop"]));
        let want: Vec<i32> = case["out"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
        total += want.len();
        for (g, w) in got.iter().zip(&want) {
            let d = (*g as i32 - w).abs();
            if d > 0 { differ += 1; }
            maxdiff = maxdiff.max(d);
        }
    }
    println!("imageops Triangle vs PIL: {differ} of {total} bytes differ, max |diff| {maxdiff}");
    // Speed: a 500x375 RGB image to Resize(256) + CenterCrop(224), as ImageNet evaluation.
    let (c, h, w) = (3, 375, 500);
    let data = pattern(c, h, w, 7);
    let t = Transform::resize_center_crop(256, 224, Normalize::unit());
    let view = ImageView { data: Cow::Owned(data.clone()), channels: c, height: h, width: w };
    let mut out = vec![0f32; 3 * 224 * 224];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let reps = 50;
    let t0 = Instant::now();
    for _ in 0..reps { t.apply(&view, &mut rng, &mut out).unwrap(); }
    let ours = t0.elapsed().as_secs_f64() / reps as f64;
    let t0 = Instant::now();
    for _ in 0..reps {
        let bytes = imageops_rcc(&data, c, h, w, 256, 224);
        for (o, b) in out.iter_mut().zip(&bytes) { *o = *b as f32 / 255.0; }
    }
    let theirs = t0.elapsed().as_secs_f64() / reps as f64;
    println!("500x375 RGB -> Resize(256)+CenterCrop(224)+to f32: usnet {:.2} ms, imageops {:.2} ms ({:.2}x)", ours * 1e3, theirs * 1e3, theirs / ours);
}

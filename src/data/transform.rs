//! Per-sample transforms: geometry (crop / resize / flip) then per-channel
//! normalisation, from u8 CHW pixels to f32 CHW values.
//!
//! Contract: [`Transform::apply`] is a pure function of the image and the RNG
//! state it is given, so a seeded RNG makes it reproducible. Padding pixels are
//! raw value 0 (black) *before* normalisation, as in torchvision's
//! `RandomCrop(padding=p)` followed by `Normalize`.

use rand::Rng;
use rand::rngs::StdRng;

use super::dataset::ImageView;
use super::error::{DataError, Result};

/// Per-channel normalisation: `out = (pixel / 255 - mean[c]) / std[c]`.
/// `mean` and `std` have one entry per channel, or one entry for all channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    pub fn new(mean: &[f32], std: &[f32]) -> Self {
        Self {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }
    /// Only scales to [0, 1].
    pub fn unit() -> Self {
        Self::new(&[0.0], &[1.0])
    }
    pub fn mnist() -> Self {
        Self::new(&[0.1307], &[0.3081])
    }
    pub fn fashion_mnist() -> Self {
        Self::new(&[0.2860], &[0.3530])
    }
    pub fn cifar10() -> Self {
        Self::new(&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616])
    }
    pub fn cifar100() -> Self {
        Self::new(&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762])
    }
    pub fn imagenet() -> Self {
        Self::new(&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225])
    }

    /// `(scale, shift)` per channel so that `out = pixel * scale + shift`.
    fn affine(&self, channels: usize) -> Result<Vec<(f32, f32)>> {
        let ok_len = |n: usize| n == 1 || n == channels;
        if !ok_len(self.mean.len()) || !ok_len(self.std.len()) {
            return Err(DataError::Config(format!(
                "normalisation has {} means and {} stds: expected 1 or {channels} (one per channel)",
                self.mean.len(),
                self.std.len()
            )));
        }
        let pick = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
        (0..channels)
            .map(|c| {
                let (m, s) = (pick(&self.mean, c), pick(&self.std, c));
                if !(s.is_finite() && s > 0.0 && m.is_finite()) {
                    return Err(DataError::Config(format!(
                        "normalisation channel {c}: mean {m}, std {s}: expected finite, std > 0"
                    )));
                }
                Ok((1.0 / (255.0 * s), -m / s))
            })
            .collect()
    }
}

/// The geometric part of a transform.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    /// Output = input size. Needs a fixed-size dataset to batch.
    Identity,
    /// Zero-pad `pad` pixels on every side, then crop a random window of the
    /// input size (offset uniform in `0..=2*pad` per axis). Needs a fixed-size dataset.
    PadCrop { pad: usize },
    /// Bilinear resize so the shorter side is `resize`, then the central
    /// `crop`×`crop` window (`crop <= resize`). Deterministic.
    ResizeCenterCrop { resize: usize, crop: usize },
    /// torchvision's RandomResizedCrop: a random window with area fraction in
    /// `scale` and aspect ratio (w/h) in `ratio` (log-uniform), 10 tries then
    /// a central fallback, resized bilinearly to `size`×`size`.
    RandomResizedCrop {
        size: usize,
        scale: (f32, f32),
        ratio: (f32, f32),
    },
}

/// Geometry, optional random horizontal flip (probability 1/2), normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub geometry: Geometry,
    pub hflip: bool,
    pub normalize: Normalize,
}

/// Where output pixel (y, x) reads from, before flipping.
enum Plan {
    /// `in[y + dy][x + dx]`, 0 outside the image.
    Shift { dy: isize, dx: isize },
    /// PIL's antialiased bilinear resize of a source window, per axis.
    Resample { ys: Axis, xs: Axis },
}

/// One axis of a resize as PIL does it: output `o` is pixel `o + skip` of the window of `len`
/// source pixels from `start` resized by `scale` source pixels per output pixel (`skip` is a
/// center crop taken after the resize).
#[derive(Debug, Clone, Copy)]
struct Axis {
    start: usize,
    len: usize,
    scale: f64,
    skip: usize,
}

impl Axis {
    /// The window of `len` source pixels from `start` resized to `out` pixels.
    fn new(start: usize, len: usize, out: usize, skip: usize) -> Self {
        Axis {
            start,
            len,
            scale: len as f64 / out as f64,
            skip,
        }
    }
}

impl Transform {
    /// Normalisation only (evaluation for fixed-size datasets).
    pub fn normalize_only(normalize: Normalize) -> Self {
        Self {
            geometry: Geometry::Identity,
            hflip: false,
            normalize,
        }
    }

    /// Zero-padded random crop (e.g. pad 4 for CIFAR, 2 for 28×28) and optional flip.
    pub fn random_crop(pad: usize, hflip: bool, normalize: Normalize) -> Self {
        Self {
            geometry: Geometry::PadCrop { pad },
            hflip,
            normalize,
        }
    }

    /// Evaluation for image folders: Resize(shorter side `resize`) + CenterCrop(`crop`).
    pub fn resize_center_crop(resize: usize, crop: usize, normalize: Normalize) -> Self {
        Self {
            geometry: Geometry::ResizeCenterCrop { resize, crop },
            hflip: false,
            normalize,
        }
    }

    /// Training for image folders: RandomResizedCrop(`size`, scale 0.08..1,
    /// ratio 3/4..4/3) and optional flip.
    pub fn random_resized_crop(size: usize, hflip: bool, normalize: Normalize) -> Self {
        Self {
            geometry: Geometry::RandomResizedCrop {
                size,
                scale: (0.08, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            },
            hflip,
            normalize,
        }
    }

    /// Output (C, H, W) for inputs with `channels` channels and, when fixed,
    /// size `(height, width)`; `None` means sizes vary, which only the
    /// resizing geometries accept. Also validates every parameter.
    pub fn output_shape(
        &self,
        channels: usize,
        size: Option<(usize, usize)>,
    ) -> Result<[usize; 3]> {
        self.normalize.affine(channels)?;
        let bad = |m: String| Err(DataError::Config(m));
        match (&self.geometry, size) {
            (Geometry::Identity | Geometry::PadCrop { .. }, Some((h, w))) => Ok([channels, h, w]),
            (Geometry::Identity | Geometry::PadCrop { .. }, None) => {
                bad("images of varying size need a resizing transform (ResizeCenterCrop or RandomResizedCrop)".into())
            }
            (Geometry::ResizeCenterCrop { resize, crop }, _) => {
                if *crop == 0 || crop > resize {
                    return bad(format!("center crop {crop} after resize {resize}: expected 0 < crop <= resize"));
                }
                Ok([channels, *crop, *crop])
            }
            (Geometry::RandomResizedCrop { size, scale, ratio }, _) => {
                let (s0, s1, r0, r1) = (scale.0, scale.1, ratio.0, ratio.1);
                if *size == 0 || !(0.0 < s0 && s0 <= s1 && s1 <= 1.0) || !(0.0 < r0 && r0 <= r1 && r1.is_finite()) {
                    return bad(format!(
                        "random resized crop size {size}, scale {scale:?}, ratio {ratio:?}: expected size > 0, 0 < scale.0 <= scale.1 <= 1, 0 < ratio.0 <= ratio.1"
                    ));
                }
                Ok([channels, *size, *size])
            }
        }
    }

    /// Transforms `img` into `out` (CHW f32, length = product of
    /// [`Transform::output_shape`] for this image). Random choices come from `rng` only.
    pub fn apply(&self, img: &ImageView<'_>, rng: &mut StdRng, out: &mut [f32]) -> Result<()> {
        let (c, h, w) = (img.channels, img.height, img.width);
        let [_, oh, ow] = self.output_shape(c, Some((h, w)))?;
        if img.data.len() != c * h * w || out.len() != c * oh * ow || h == 0 || w == 0 {
            return Err(DataError::Config(format!(
                "transform buffers: image {} bytes for ({c}, {h}, {w}), output {} values for ({c}, {oh}, {ow})",
                img.data.len(),
                out.len()
            )));
        }
        let affine = self.normalize.affine(c)?;
        let plan = self.plan(h, w, rng);
        let flip = self.hflip && rng.random::<bool>();
        render(img, plan, flip, &affine, [oh, ow], out);
        Ok(())
    }

    /// Chooses the sampling plan (parameters already validated).
    fn plan(&self, h: usize, w: usize, rng: &mut StdRng) -> Plan {
        match self.geometry {
            Geometry::Identity => Plan::Shift { dy: 0, dx: 0 },
            Geometry::PadCrop { pad } => {
                let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
                let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
                Plan::Shift { dy, dx }
            }
            Geometry::ResizeCenterCrop { resize, crop } => {
                // Resized size: shorter side = resize, longer side truncated (torchvision).
                let (rh, rw) = if h <= w {
                    (resize, w * resize / h)
                } else {
                    (h * resize / w, resize)
                };
                // torchvision's CenterCrop offset: Python's round, ties to even.
                let skip = |full: usize| ((full - crop) as f64 / 2.0).round_ties_even() as usize;
                Plan::Resample {
                    ys: Axis::new(0, h, rh, skip(rh)),
                    xs: Axis::new(0, w, rw, skip(rw)),
                }
            }
            Geometry::RandomResizedCrop { size, scale, ratio } => {
                let (i, j, ch, cw) = random_resized_window(h, w, scale, ratio, rng);
                // torchvision's resized_crop: crop the window, then resize it.
                Plan::Resample {
                    ys: Axis::new(i, ch, size, 0),
                    xs: Axis::new(j, cw, size, 0),
                }
            }
        }
    }
}

/// Writes `act(pixel * a + b)` per channel of `img` sampled by `plan` into `out`
/// (`[c, oh, ow]`), mirrored when `flip`.
fn render(
    img: &ImageView<'_>,
    plan: Plan,
    flip: bool,
    affine: &[(f32, f32)],
    [oh, ow]: [usize; 2],
    out: &mut [f32],
) {
    let (c, h, w) = (img.channels, img.height, img.width);
    let src = &img.data[..];
    match plan {
        Plan::Shift { dy, dx } => {
            for ch in 0..c {
                let (a, b) = affine[ch];
                let plane = &src[ch * h * w..(ch + 1) * h * w];
                for y in 0..oh {
                    let sy = y as isize + dy;
                    let row = &mut out[(ch * oh + y) * ow..(ch * oh + y + 1) * ow];
                    for x in 0..ow {
                        let sx = x as isize + dx;
                        let v = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                            plane[sy as usize * w + sx as usize]
                        } else {
                            0
                        };
                        row[if flip { ow - 1 - x } else { x }] = v as f32 * a + b;
                    }
                }
            }
        }
        Plan::Resample { ys, xs } => {
            // PIL's two passes in 8-bit fixed point: horizontal over the source rows that
            // the vertical pass reads, then vertical, each rounded and clipped to a byte.
            let (ky, kx) = (coefficients(oh, ys), coefficients(ow, xs));
            let first = ky.iter().map(|(start, _)| *start).min().unwrap_or(0);
            let last = ky
                .iter()
                .map(|(start, k)| start + k.len())
                .max()
                .unwrap_or(0);
            let mut rows = vec![0u8; (last - first) * ow];
            for ch in 0..c {
                let (a, b) = affine[ch];
                let plane = &src[ch * h * w..(ch + 1) * h * w];
                for (r, tmp) in rows.chunks_exact_mut(ow).enumerate() {
                    let line = &plane[(first + r) * w..][..w];
                    for (t, (start, k)) in tmp.iter_mut().zip(&kx) {
                        *t = fixed_point_sum(k.iter().zip(&line[*start..]).map(|(k, &p)| (*k, p)));
                    }
                }
                for (y, (start, k)) in ky.iter().enumerate() {
                    let row = &mut out[(ch * oh + y) * ow..(ch * oh + y + 1) * ow];
                    for x in 0..ow {
                        let column = k
                            .iter()
                            .enumerate()
                            .map(|(i, k)| (*k, rows[(start - first + i) * ow + x]));
                        let v = fixed_point_sum(column);
                        row[if flip { ow - 1 - x } else { x }] = f32::from(v) * a + b;
                    }
                }
            }
        }
    }
}

/// Window (top, left, height, width) as in torchvision's `RandomResizedCrop.get_params`.
fn random_resized_window(
    h: usize,
    w: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut StdRng,
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f32;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    let uniform = |rng: &mut StdRng, a: f32, b: f32| a + (b - a) * rng.random::<f32>();
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let i = rng.random_range(0..=h - ch);
            let j = rng.random_range(0..=w - cw);
            return (i, j, ch, cw);
        }
    }
    let in_ratio = w as f32 / h as f32;
    let (ch, cw) = if in_ratio < ratio.0 {
        (((w as f32 / ratio.0).round() as usize).clamp(1, h), w)
    } else if in_ratio > ratio.1 {
        (h, ((h as f32 * ratio.1).round() as usize).clamp(1, w))
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// Fixed-point bits of PIL's 8-bit resampling (`PRECISION_BITS` in `Resample.c`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each of `n` outputs of `axis`: the first source index and the fixed-point weights, as
/// PIL's `precompute_coeffs` and `normalize_coeffs_8bpc` make them for its bilinear filter. The
/// filter widens by the scale when downsampling (antialiasing), as in PIL and torchvision.
fn coefficients(n: usize, axis: Axis) -> Vec<(usize, Vec<i32>)> {
    let bilinear = |x: f64| (1.0 - x.abs()).max(0.0);
    let filterscale = axis.scale.max(1.0);
    let support = filterscale; // The bilinear filter's support is 1.
    (0..n)
        .map(|o| {
            let center = ((o + axis.skip) as f64 + 0.5) * axis.scale;
            // C's `(int)` truncates toward zero.
            let lo = ((center - support + 0.5).trunc().max(0.0) as usize).min(axis.len);
            let hi = ((center + support + 0.5).trunc() as usize).min(axis.len);
            let weights: Vec<f64> = (lo..hi)
                .map(|x| bilinear((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = weights.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let fixed = weights
                .iter()
                .map(|w| {
                    let k = if total == 0.0 { 0.0 } else { w / total } * one;
                    (if k < 0.0 { k - 0.5 } else { k + 0.5 }) as i32
                })
                .collect();
            (axis.start + lo, fixed)
        })
        .collect()
}

/// `sum(weight * pixel)` in PIL's fixed point, rounded and clipped to a byte.
fn fixed_point_sum(terms: impl Iterator<Item = (i32, u8)>) -> u8 {
    let sum = terms.fold(1i64 << (PRECISION_BITS - 1), |acc, (k, p)| {
        acc + i64::from(k) * i64::from(p)
    });
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn img(c: usize, h: usize, w: usize) -> ImageView<'static> {
        let data: Vec<u8> = (0..c * h * w).map(|i| (i % 251) as u8 + 1).collect();
        ImageView::new(data, c, h, w)
    }

    fn run(t: &Transform, im: &ImageView<'_>, seed: u64) -> Vec<f32> {
        let [c, h, w] = t
            .output_shape(im.channels, Some((im.height, im.width)))
            .unwrap();
        let mut out = vec![f32::NAN; c * h * w];
        t.apply(im, &mut StdRng::seed_from_u64(seed), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn normalisation_per_channel() {
        let im = ImageView::new(vec![0, 255, 51, 102], 2, 1, 2);
        let t = Transform::normalize_only(Normalize::new(&[0.0, 0.2], &[1.0, 0.5]));
        let out = run(&t, &im, 0);
        let want = [0.0, 1.0, 0.0, 0.4];
        assert!(
            out.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{out:?}"
        );
    }

    #[test]
    fn pad_crop_is_a_shifted_copy_with_zero_border() {
        let im = img(1, 6, 6);
        let t = Transform::random_crop(2, false, Normalize::unit());
        let mut shifted = 0;
        for seed in 0..20 {
            let out = run(&t, &im, seed);
            // Each output pixel is 0 (padding) or some input pixel value.
            assert!(
                out.iter()
                    .all(|&v| v == 0.0
                        || im.data.iter().any(|&p| (p as f32 / 255.0 - v).abs() < 1e-6))
            );
            shifted += usize::from(out.contains(&0.0));
            assert_eq!(out, run(&t, &im, seed), "same seed, same output");
        }
        assert!(shifted > 5, "padding should be visible in most crops");
    }

    #[test]
    fn flip_mirrors_rows() {
        let im = img(3, 2, 5);
        let plain = run(&Transform::normalize_only(Normalize::unit()), &im, 0);
        let t = Transform {
            geometry: Geometry::Identity,
            hflip: true,
            normalize: Normalize::unit(),
        };
        let (mut flipped, mut kept) = (false, false);
        for seed in 0..20 {
            let out = run(&t, &im, seed);
            let mirrored: Vec<f32> = plain
                .chunks(5)
                .flat_map(|r| r.iter().rev().copied())
                .collect();
            if out == mirrored {
                flipped = true;
            } else {
                assert_eq!(out, plain);
                kept = true;
            }
        }
        assert!(flipped && kept);
    }

    /// The bytes of `scripts/pil_resize_fixture.py`'s test image.
    fn pattern(c: usize, h: usize, w: usize, seed: u64) -> ImageView<'static> {
        let mut state = seed;
        let data: Vec<u8> = (0..c * h * w)
            .map(|_| {
                state = (state * 1103515245 + 12345) % (1 << 31);
                (state >> 23) as u8
            })
            .collect();
        ImageView::new(data, c, h, w)
    }

    #[test]
    fn resizing_gives_the_bytes_of_torchvision_on_pil() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/pil_resize.json")).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 12);
        let n = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
        for case in cases {
            let (c, h, w) = (n(&case["c"]), n(&case["h"]), n(&case["w"]));
            let im = pattern(c, h, w, case["seed"].as_u64().unwrap());
            let (out, size) = match case["op"].as_str().unwrap() {
                "resize_center_crop" => {
                    let t = Transform::resize_center_crop(n(&case["resize"]), n(&case["crop"]), Normalize::unit());
                    (run(&t, &im, 0), n(&case["crop"]))
                }
                _ => {
                    let win: Vec<usize> = case["window"].as_array().unwrap().iter().map(n).collect();
                    let size = n(&case["size"]);
                    let plan = Plan::Resample { ys: Axis::new(win[0], win[2], size, 0), xs: Axis::new(win[1], win[3], size, 0) };
                    let mut out = vec![f32::NAN; c * size * size];
                    render(&im, plan, false, &vec![(1.0 / 255.0, 0.0); c], [size, size], &mut out);
                    (out, size)
                }
            };
            assert_eq!(out.len(), c * size * size);
            let bytes: Vec<usize> = out.iter().map(|v| (v * 255.0).round() as usize).collect();
            let want: Vec<usize> = case["out"].as_array().unwrap().iter().map(n).collect();
            let differ = bytes.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{case_name}: {differ} of {} bytes differ from PIL", want.len(), case_name = case["op"]);
        }
    }

    #[test]
    fn resize_center_crop_shapes_and_identity() {
        // A 4x4 image resized to 4 and cropped to 4 is unchanged.
        let im = img(3, 4, 4);
        let t = Transform::resize_center_crop(4, 4, Normalize::unit());
        let out = run(&t, &im, 0);
        let ident = run(&Transform::normalize_only(Normalize::unit()), &im, 0);
        assert!(out.iter().zip(&ident).all(|(a, b)| (a - b).abs() < 1e-6));
        // Non-square input, downscale + crop.
        let im = img(3, 10, 17);
        let t = Transform::resize_center_crop(8, 6, Normalize::imagenet());
        assert_eq!(t.output_shape(3, None).unwrap(), [3, 6, 6]);
        assert!(run(&t, &im, 0).iter().all(|v| v.is_finite()));
        // Constant image stays constant under resampling.
        let flat = ImageView::new(vec![77; 3 * 9 * 13], 3, 9, 13);
        let n = Normalize::imagenet();
        let want = |c: usize| (77.0 / 255.0 - n.mean[c]) / n.std[c];
        for (i, v) in run(&t, &flat, 0).iter().enumerate() {
            assert!((v - want(i / 36)).abs() < 1e-4, "value {i}: {v}");
        }
    }

    #[test]
    fn random_resized_crop_deterministic_per_seed() {
        let im = img(3, 20, 30);
        let t = Transform::random_resized_crop(8, true, Normalize::imagenet());
        assert_eq!(run(&t, &im, 3), run(&t, &im, 3));
        assert_ne!(run(&t, &im, 3), run(&t, &im, 4));
        // Tiny and extreme-aspect inputs still work (fallback path).
        run(&t, &img(3, 1, 50), 0);
        run(&t, &img(3, 1, 1), 0);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let im = img(3, 4, 4);
        let mut out = vec![0.0; 48];
        let mut rng = StdRng::seed_from_u64(0);
        let t = Transform::normalize_only(Normalize::mnist()); // 1 mean for 3 channels: allowed
        assert!(t.apply(&im, &mut rng, &mut out).is_ok());
        let t = Transform::normalize_only(Normalize::new(&[0.0, 0.0], &[1.0, 1.0]));
        assert!(t.apply(&im, &mut rng, &mut out).is_err());
        let t = Transform::normalize_only(Normalize::new(&[0.0], &[0.0]));
        assert!(t.apply(&im, &mut rng, &mut out).is_err());
        assert!(
            Transform::resize_center_crop(4, 5, Normalize::unit())
                .output_shape(3, None)
                .is_err()
        );
        assert!(
            Transform::random_crop(2, false, Normalize::unit())
                .output_shape(3, None)
                .is_err()
        );
        let crop = |scale| Transform {
            geometry: Geometry::RandomResizedCrop {
                size: 4,
                scale,
                ratio: (1.0, 1.0),
            },
            ..Transform::random_resized_crop(4, false, Normalize::unit())
        };
        assert!(crop((0.5, 0.5)).apply(&im, &mut rng, &mut out[..48]).is_ok());
        assert!(crop((0.0, 0.5)).apply(&im, &mut rng, &mut out).is_err());
        assert!(
            Transform::normalize_only(Normalize::unit())
                .apply(&im, &mut rng, &mut out[..10])
                .is_err()
        );
    }
}

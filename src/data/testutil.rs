//! Writers of small real-format files for the unit tests.

use std::io::Write;
use std::path::Path;

use super::cifar::CifarKind;

/// Gzip-compresses `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// IDX file of unsigned bytes: the magic `0x0000080D` of `D = dims.len()`, the
/// dimensions, then `body`.
pub fn idx_file(dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(body);
    b
}

/// IDX image file of `n` h×w images; pixel p of image i is `(i * 7 + p) % 256`.
pub fn idx_images(n: usize, h: usize, w: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..n)
        .flat_map(|i| (0..h * w).map(move |p| ((i * 7 + p) % 256) as u8))
        .collect();
    idx_file(&[n as u32, h as u32, w as u32], &body)
}

/// IDX label file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    idx_file(&[labels.len() as u32], labels)
}

/// `n` CIFAR records: record i has (fine) label `(seed + i) % classes`, coarse
/// label 0 and pixel p `(seed + i + p) % 256`.
pub fn cifar_records(kind: CifarKind, n: usize, seed: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        let s = seed as usize + i;
        if kind == CifarKind::Cifar100 {
            b.push(0);
        }
        b.push((s % kind.num_classes()) as u8);
        b.extend((0..3072).map(|p| ((s + p) % 256) as u8));
    }
    b
}

/// Writes a `w`×`h` PNG filled with one RGB colour.
pub fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

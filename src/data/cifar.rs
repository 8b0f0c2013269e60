//! CIFAR-10 / CIFAR-100 "binary version" files.
//!
//! CIFAR-10 record: 1 label byte + 3072 pixel bytes (3×32×32, CHW).
//! CIFAR-100 record: 1 coarse + 1 fine label byte + 3072 pixel bytes; the
//! fine label (100 classes) is used. A file must be a positive multiple of
//! the record size.

use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Splits, require_file};
use super::error::{DataError, Result};

const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR variant a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    Cifar100,
}

impl CifarKind {
    /// Bytes per record: 3073 (CIFAR-10) or 3074 (CIFAR-100).
    pub fn record_size(self) -> usize {
        PIXELS + self.label_bytes()
    }

    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100 => 100,
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100 => 2,
        }
    }

    /// The sub-folder the official archive extracts to.
    fn subdir(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar-10-batches-bin",
            Self::Cifar100 => "cifar-100-binary",
        }
    }

    fn train_files(self) -> &'static [&'static str] {
        match self {
            Self::Cifar10 => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            Self::Cifar100 => &["train.bin"],
        }
    }

    fn test_file(self) -> &'static str {
        match self {
            Self::Cifar10 => "test_batch.bin",
            Self::Cifar100 => "test.bin",
        }
    }

    fn hint(self) -> String {
        let n = self.num_classes();
        format!(
            "fix: extract the CIFAR-{n} binary version (cifar-{n}-binary.tar.gz) into this directory"
        )
    }
}

/// Loads CIFAR-10 from `dir` or `dir/cifar-10-batches-bin`:
/// train = `data_batch_1..5.bin`, test = `test_batch.bin`.
pub fn load_cifar10(dir: &Path) -> Result<Splits> {
    load_cifar(dir, CifarKind::Cifar10)
}

/// Loads CIFAR-100 (fine labels) from `dir` or `dir/cifar-100-binary`:
/// train = `train.bin`, test = `test.bin`.
pub fn load_cifar100(dir: &Path) -> Result<Splits> {
    load_cifar(dir, CifarKind::Cifar100)
}

/// Loads a CIFAR directory of the given kind (see [`load_cifar10`], [`load_cifar100`]).
pub fn load_cifar(dir: &Path, kind: CifarKind) -> Result<Splits> {
    let dir = resolve_dir(dir, kind)?;
    let train_paths: Vec<PathBuf> = kind
        .train_files()
        .iter()
        .map(|f| require_file(&dir, f, "CIFAR training batch", &kind.hint()))
        .collect::<Result<_>>()?;
    let test_path = require_file(&dir, kind.test_file(), "CIFAR test batch", &kind.hint())?;
    let train = load_cifar_files(&train_paths, kind)?;
    let test = load_cifar_files(std::slice::from_ref(&test_path), kind)?;
    Splits::new(train, test, &test_path)
}

/// Loads and concatenates CIFAR binary files (in the given order).
pub fn load_cifar_files(paths: &[PathBuf], kind: CifarKind) -> Result<Dataset> {
    let Some(first) = paths.first() else {
        return Err(DataError::Config(
            "load_cifar_files needs at least one file".into(),
        ));
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in paths {
        read_cifar_file(path, kind, &mut pixels, &mut labels)?;
    }
    Dataset::from_u8(pixels, labels, kind.num_classes(), 3, 32, 32, first)
}

/// Appends one file's pixels and (fine) labels, validating size and labels.
fn read_cifar_file(
    path: &Path,
    kind: CifarKind,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rec = kind.record_size();
    if bytes.is_empty() || bytes.len() % rec != 0 {
        return Err(DataError::RecordSize {
            path: path.to_path_buf(),
            record_size: rec as u64,
            found: bytes.len() as u64,
        });
    }
    let n = bytes.len() / rec;
    pixels.reserve(n * PIXELS);
    labels.reserve(n);
    for (index, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[kind.label_bytes() - 1] as u32;
        if label as usize >= kind.num_classes() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                num_classes: kind.num_classes(),
            });
        }
        labels.push(label);
        pixels.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok(())
}

/// `dir` if it holds the test file, else `dir/<official subdir>` if that does.
fn resolve_dir(dir: &Path, kind: CifarKind) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            what: "CIFAR dataset directory".into(),
            hint: kind.hint(),
        });
    }
    let sub = dir.join(kind.subdir());
    if !dir.join(kind.test_file()).is_file() && sub.is_dir() {
        Ok(sub)
    } else {
        Ok(dir.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::cifar_records;
    use std::fs;

    /// Writes `n` records of `kind` (see [`cifar_records`]) to `path`.
    fn write_records(path: &Path, kind: CifarKind, n: usize, seed: u8) {
        fs::write(path, cifar_records(kind, n, seed)).unwrap();
    }

    #[test]
    fn cifar10_round_trip_in_subdir() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("cifar-10-batches-bin");
        fs::create_dir(&d).unwrap();
        for b in 1..=5 {
            let batch = d.join(format!("data_batch_{b}.bin"));
            write_records(&batch, CifarKind::Cifar10, 3, b as u8);
        }
        write_records(&d.join("test_batch.bin"), CifarKind::Cifar10, 2, 9);
        let s = load_cifar10(tmp.path()).unwrap();
        assert_eq!(
            (s.train.len(), s.test.len(), s.train.num_classes()),
            (15, 2, 10)
        );
        assert_eq!(s.train.size(), Some((32, 32)));
        assert_eq!(s.train.channels(), 3);
        // record i of a file with seed s has label (s + i) % 10 and pixels (s + i + p) % 256
        assert_eq!(s.train.label(4), Some(3)); // batch 2, record 1
        let img = s.train.image(4).unwrap();
        assert_eq!(img.data.len(), 3072);
        assert_eq!(
            (img.data[0], img.data[1], img.data[3071]),
            (3, 4, ((3 + 3071) % 256) as u8)
        );
        assert_eq!(s.test.label(1), Some(0));
    }

    #[test]
    fn cifar100_uses_fine_label() {
        let tmp = tempfile::tempdir().unwrap();
        write_records(&tmp.path().join("train.bin"), CifarKind::Cifar100, 4, 95);
        write_records(&tmp.path().join("test.bin"), CifarKind::Cifar100, 1, 0);
        let s = load_cifar100(tmp.path()).unwrap();
        assert_eq!(
            (s.train.len(), s.test.len(), s.train.num_classes()),
            (4, 1, 100)
        );
        assert_eq!(s.train.labels(), &[95, 96, 97, 98]);
        assert_eq!(s.train.image(1).unwrap().data[0], 96);
    }

    #[test]
    fn truncated_named() {
        let tmp = tempfile::tempdir().unwrap();
        write_records(&tmp.path().join("train.bin"), CifarKind::Cifar100, 2, 0);
        let mut t = cifar_records(CifarKind::Cifar100, 2, 0);
        t.truncate(5000);
        fs::write(tmp.path().join("test.bin"), t).unwrap();
        let e = load_cifar100(tmp.path()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::RecordSize {
                    record_size: 3074,
                    found: 5000,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("test.bin"), "{e}");
    }

    #[test]
    fn label_out_of_range_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mut recs = cifar_records(CifarKind::Cifar10, 2, 0);
        recs[3073] = 10; // label of record 1
        fs::write(tmp.path().join("test_batch.bin"), recs).unwrap();
        let e =
            load_cifar_files(&[tmp.path().join("test_batch.bin")], CifarKind::Cifar10).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    index: 1,
                    label: 10,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("test_batch.bin"), "{e}");
    }

    #[test]
    fn missing_batch_named() {
        let tmp = tempfile::tempdir().unwrap();
        write_records(&tmp.path().join("test_batch.bin"), CifarKind::Cifar10, 1, 0);
        let e = load_cifar10(tmp.path()).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("data_batch_1.bin"), "{e}");
        let e = load_cifar10(&tmp.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}

//! The in-memory [`Dataset`] type shared by every format, and file helpers.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::error::{DataError, Result};

/// One image as u8 pixels in CHW order (`data.len() == channels * height * width`).
#[derive(Debug, Clone)]
pub struct ImageView<'a> {
    pub data: Cow<'a, [u8]>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl<'a> ImageView<'a> {
    /// `c` planes of `h × w` pixels.
    pub fn new(data: impl Into<Cow<'a, [u8]>>, c: usize, h: usize, w: usize) -> Self {
        ImageView {
            data: data.into(),
            channels: c,
            height: h,
            width: w,
        }
    }
}

/// Where the pixels of a [`Dataset`] live.
#[derive(Debug, Clone)]
enum Pixels {
    /// All images share one shape; `data` is N*C*H*W bytes, NCHW.
    Dense {
        data: Vec<u8>,
        height: usize,
        width: usize,
    },
    /// One file per image (varying sizes), decoded to RGB on access.
    Files(Vec<PathBuf>),
}

/// N labelled images with `num_classes` classes.
///
/// Invariants (checked by every constructor): at least one sample, one label
/// per image, every label `< num_classes`, and for dense storage exactly
/// `N * C * H * W` pixel bytes.
#[derive(Debug, Clone)]
pub struct Dataset {
    pixels: Pixels,
    labels: Vec<u32>,
    num_classes: usize,
    channels: usize,
}

/// A train split and a test (or validation) split of one dataset.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

impl Dataset {
    /// Builds a dense dataset from NCHW u8 pixels. `source` names where the
    /// data came from and is used in error messages.
    #[allow(clippy::too_many_arguments)]
    pub fn from_u8(
        data: Vec<u8>,
        labels: Vec<u32>,
        num_classes: usize,
        channels: usize,
        height: usize,
        width: usize,
        source: &Path,
    ) -> Result<Self> {
        if labels.is_empty() {
            return Err(DataError::Empty {
                path: source.to_path_buf(),
                what: "sample".into(),
            });
        }
        if channels == 0 || height == 0 || width == 0 {
            return Err(DataError::BadHeader {
                path: source.to_path_buf(),
                reason: format!("image shape ({channels}, {height}, {width}) has a zero dimension"),
            });
        }
        let per_image = channels * height * width;
        let expected = per_image as u64 * labels.len() as u64;
        let found = data.len() as u64;
        if found < expected {
            return Err(DataError::Truncated {
                path: source.to_path_buf(),
                expected,
                found,
            });
        }
        if found > expected {
            return Err(DataError::TrailingData {
                path: source.to_path_buf(),
                expected,
                found,
            });
        }
        check_labels(&labels, num_classes, source)?;
        Ok(Self {
            pixels: Pixels::Dense {
                data,
                height,
                width,
            },
            labels,
            num_classes,
            channels,
        })
    }

    /// Builds a dataset of RGB image files decoded on access (see [`Dataset::image`]).
    pub fn from_files(
        files: Vec<PathBuf>,
        labels: Vec<u32>,
        num_classes: usize,
        source: &Path,
    ) -> Result<Self> {
        if files.is_empty() {
            return Err(DataError::Empty {
                path: source.to_path_buf(),
                what: "image file".into(),
            });
        }
        if files.len() != labels.len() {
            return Err(DataError::CountMismatch {
                images_path: source.to_path_buf(),
                images: files.len(),
                labels_path: source.to_path_buf(),
                labels: labels.len(),
            });
        }
        check_labels(&labels, num_classes, source)?;
        Ok(Self {
            pixels: Pixels::Files(files),
            labels,
            num_classes,
            channels: 3,
        })
    }

    /// Number of samples (always > 0).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false: constructors reject empty datasets.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `Some((height, width))` when all images share one size, `None` for image folders.
    pub fn size(&self) -> Option<(usize, usize)> {
        match &self.pixels {
            Pixels::Dense { height, width, .. } => Some((*height, *width)),
            Pixels::Files(_) => None,
        }
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Label of sample `i`; `None` when `i >= len()`.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.get(i).copied()
    }

    /// Pixels of sample `i` (CHW u8). Borrowed for dense data; decoded from
    /// disk to RGB for image folders, so it may fail with [`DataError::Decode`].
    pub fn image(&self, i: usize) -> Result<ImageView<'_>> {
        if i >= self.len() {
            return Err(DataError::Config(format!(
                "sample index {i} out of range: dataset has {} samples",
                self.len()
            )));
        }
        match &self.pixels {
            Pixels::Dense {
                data,
                height,
                width,
            } => {
                let n = self.channels * height * width;
                let pixels = &data[i * n..(i + 1) * n];
                Ok(ImageView::new(pixels, self.channels, *height, *width))
            }
            Pixels::Files(files) => decode_rgb(&files[i]),
        }
    }

    /// The samples at `indices`, in that order.
    ///
    /// # Panics
    ///
    /// On an index `>= len()` or an empty `indices` (a dataset is never empty).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        assert!(!indices.is_empty(), "a dataset subset needs at least one sample");
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let pixels = match &self.pixels {
            Pixels::Dense { data, height, width } => {
                let n = self.channels * height * width;
                let images: Vec<&[u8]> = indices.iter().map(|&i| &data[i * n..(i + 1) * n]).collect();
                Pixels::Dense { data: images.concat(), height: *height, width: *width }
            }
            Pixels::Files(files) => Pixels::Files(indices.iter().map(|&i| files[i].clone()).collect()),
        };
        Dataset { pixels, labels, num_classes: self.num_classes, channels: self.channels }
    }

    /// Splits off `size` samples chosen by a shuffle seeded with `seed` as a validation set:
    /// returns `(rest, validation, validation_indices)`, each in the original sample order.
    /// The same `(size, seed)` always holds out the same samples, whatever the training seed.
    ///
    /// # Errors
    ///
    /// [`DataError::Config`] unless `0 < size < len()`.
    pub fn hold_out(&self, size: usize, seed: u64) -> Result<(Dataset, Dataset, Vec<usize>)> {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        if size == 0 || size >= self.len() {
            return Err(DataError::Config(format!(
                "validation_size = {size} must be at least 1 and below the {} training images",
                self.len()
            )));
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let (held, rest) = order.split_at_mut(size);
        held.sort_unstable();
        rest.sort_unstable();
        Ok((self.subset(rest), self.subset(held), held.to_vec()))
    }

    /// The file backing sample `i`, for image-folder datasets.
    pub fn file(&self, i: usize) -> Option<&Path> {
        match &self.pixels {
            Pixels::Files(files) => files.get(i).map(PathBuf::as_path),
            Pixels::Dense { .. } => None,
        }
    }
}

impl Splits {
    /// Checks that train and test agree on class count, channels and (when
    /// fixed) image size; `test_path` is named in the error.
    pub(crate) fn new(train: Dataset, test: Dataset, test_path: &Path) -> Result<Self> {
        if let (Some((th, tw)), Some((sh, sw))) = (train.size(), test.size())
            && (th, tw, train.channels) != (sh, sw, test.channels)
        {
            return Err(DataError::ShapeMismatch {
                path: test_path.to_path_buf(),
                expected: [train.channels, th, tw],
                found: [test.channels, sh, sw],
            });
        }
        Ok(Self { train, test })
    }
}

fn check_labels(labels: &[u32], num_classes: usize, source: &Path) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= num_classes) {
        Some(index) => Err(DataError::LabelOutOfRange {
            path: source.to_path_buf(),
            index,
            label: labels[index],
            num_classes,
        }),
        None => Ok(()),
    }
}

/// Opens an image file, guessing its format from its contents.
pub(crate) fn open_image(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    image::ImageReader::open(path).map_err(io)?.with_guessed_format().map_err(io)
}

/// Decodes an image file to RGB, CHW u8.
pub(crate) fn decode_rgb(path: &Path) -> Result<ImageView<'static>> {
    let reader = open_image(path)?;
    let img = reader
        .decode()
        .map_err(|source| DataError::Decode {
            path: path.to_path_buf(),
            source,
        })?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let hwc = img.into_raw();
    let chw: Vec<u8> = (0..3).flat_map(|c| hwc.iter().skip(c).step_by(3).copied()).collect();
    Ok(ImageView::new(chw, 3, h, w))
}

/// `dir/name`, or a [`DataError::Missing`] naming it (with `hint`) when it is not a file.
pub(crate) fn require_file(dir: &Path, name: &str, what: &str, hint: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DataError::Missing {
            path,
            what: what.to_string(),
            hint: hint.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Dataset {
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        Dataset::from_u8(data, labels, 3, 1, 1, 1, Path::new("numbered")).unwrap()
    }

    #[test]
    fn hold_out_partitions_and_depends_only_on_its_seed() {
        let d = numbered(50);
        let (rest, held, idx) = d.hold_out(10, 7).unwrap();
        assert_eq!((rest.len(), held.len(), idx.len()), (40, 10, 10));
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "{idx:?}");
        // Every sample lands in exactly one side, with its own label.
        let mut seen = Vec::new();
        for (set, n) in [(&rest, 40), (&held, 10)] {
            for i in 0..n {
                let px = set.image(i).unwrap().data[0];
                assert_eq!(set.label(i), Some(u32::from(px) % 3));
                seen.push(px);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..50).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(d.hold_out(10, 7).unwrap().2, idx);
        assert_ne!(d.hold_out(10, 8).unwrap().2, idx);
        assert!(d.hold_out(0, 7).is_err() && d.hold_out(50, 7).is_err());
    }
}

//! The single error type of the data module.
//!
//! Contract: every variant that concerns a file carries that file's path and
//! its `Display` names it, together with what was expected and what was found.
//! Nothing in this module panics on user input; every problem surfaces here.

use std::path::PathBuf;

/// Everything that can go wrong while loading, transforming or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A required file or directory does not exist. `hint` says how to get it.
    #[error("{what} not found: expected {}; {hint}", path.display())]
    Missing {
        path: PathBuf,
        what: String,
        hint: String,
    },

    /// The operating system refused to read a file or directory.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A `.gz` file is not a complete, valid gzip stream.
    #[error("{}: expected a valid gzip stream, found corrupt or truncated data: {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The leading magic number does not identify the expected file kind.
    #[error("{}: bad magic number: expected 0x{expected:08x} ({kind}), found 0x{found:08x}", path.display())]
    BadMagic {
        path: PathBuf,
        kind: &'static str,
        expected: u32,
        found: u32,
    },

    /// The (decompressed) file is shorter than its header says it must be.
    #[error("{}: truncated: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    /// The (decompressed) file is longer than its header says it must be.
    #[error("{}: wrong size: expected {expected} bytes, found {found} (trailing data)", path.display())]
    TrailingData {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    /// A fixed-record file (CIFAR) whose size is not a positive multiple of the record size.
    #[error(
        "{}: wrong size: expected a positive multiple of the {record_size}-byte record, found {found} bytes (truncated, or not this dataset's format)",
        path.display()
    )]
    RecordSize {
        path: PathBuf,
        record_size: u64,
        found: u64,
    },

    /// A header field is impossible (zero or overflowing dimensions).
    #[error("{}: bad header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },

    /// A label is not below the number of classes.
    #[error("{}: label at index {index} is {label}: expected a label < {num_classes}", path.display())]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u32,
        num_classes: usize,
    },

    /// An image file and its label file disagree on the number of samples.
    #[error(
        "count mismatch: expected as many labels as images, found {images} images in {} and {labels} labels in {}",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },

    /// Two parts of one dataset disagree on the image shape (C, H, W).
    #[error("{}: shape mismatch: expected images of shape {expected:?} (C, H, W), found {found:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        expected: [usize; 3],
        found: [usize; 3],
    },

    /// A directory or file holds no samples where some are required.
    #[error("{}: expected at least one {what}, found none", path.display())]
    Empty { path: PathBuf, what: String },

    /// A validation class folder that has no counterpart among the training classes.
    #[error("{}: class folder {class:?} is not among the {num_train_classes} training classes", path.display())]
    UnknownClass {
        path: PathBuf,
        class: String,
        num_train_classes: usize,
    },

    /// An image file that cannot be decoded (or whose header cannot be read).
    #[error("{}: expected a decodable PNG or JPEG image: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    /// An invalid argument from the caller (not from a file).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A background loader thread ended before delivering its batches.
    #[error("data loader worker stopped before batch {batch}: {reason}")]
    Worker { batch: usize, reason: String },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, DataError>;

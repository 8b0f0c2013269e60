//! Datasets, transforms and a prefetching batch loader, independent of any
//! tensor backend: batches are plain NCHW `f32` buffers.
//!
//! Formats: IDX (MNIST, Fashion-MNIST; raw or `.gz`), CIFAR-10/100 binary,
//! and ImageNet-style image folders. Every loading problem is a
//! [`DataError`] that names the offending file; nothing panics on bad input.
//!
//! ```no_run
//! use std::{path::Path, sync::Arc};
//! use usnet::data::{DatasetKind, Loader, LoaderConfig};
//! let kind = DatasetKind::Cifar10;
//! let splits = kind.load(Path::new("data/cifar10"))?;
//! let train = Loader::new(Arc::new(splits.train), kind.train_transform(), LoaderConfig::train(128, 42))?;
//! for batch in train.epoch(0) {
//!     let batch = batch?; // batch.images: Vec<f32>, batch.shape: [n, c, h, w]
//! }
//! # Ok::<(), usnet::data::DataError>(())
//! ```

mod cifar;
mod dataset;
mod error;
mod folder;
mod idx;
mod kind;
mod loader;
mod transform;

#[cfg(test)]
mod testutil;

pub use cifar::{CifarKind, load_cifar, load_cifar_files, load_cifar10, load_cifar100};
pub use dataset::{Dataset, ImageView, Splits};
pub use error::{DataError, Result};
pub use folder::load_image_folder;
pub use idx::{
    FASHION_MNIST_DIR, FASHION_MNIST_HINT, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxImages,
    MNIST_HINT, load_fashion_mnist, load_idx_pair, load_mnist, read_idx_images, read_idx_labels,
};
pub use kind::DatasetKind;
pub use loader::{Batch, Epoch, Loader, LoaderConfig};
pub use transform::{Geometry, Normalize, Transform};

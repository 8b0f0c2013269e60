//! The bridge from [`crate::data`] (plain buffers) to tensors, per experiment config.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::TrainConfig;
use crate::data::{Batch, DatasetKind, Loader, LoaderConfig, Splits};
use crate::error::{Error, Result};

/// The loaders of an experiment.
pub struct ExperimentData {
    pub kind: DatasetKind,
    /// Training images with training augmentation, shuffled (the validation split left out).
    pub train: Loader,
    /// The held-out validation split of the training images (`validation_size`), with
    /// evaluation preprocessing, in order; `None` when the config holds out nothing.
    pub validation: Option<Loader>,
    /// Indices into the full training set of the validation images, ascending.
    pub validation_indices: Vec<usize>,
    /// Test images with evaluation preprocessing, in order.
    pub test: Loader,
    /// Training images with training augmentation, for BN calibration (as the official
    /// code calibrates on the training loader), shuffled with a fixed seed.
    pub calibration: Loader,
}

impl ExperimentData {
    /// Loads the config's dataset and checks that it fits the model.
    ///
    /// # Errors
    ///
    /// A missing or corrupt file (named), or a dataset whose channels or classes do not
    /// match the model's.
    pub fn load(config: &TrainConfig) -> Result<Self> {
        let kind = config.dataset_kind()?;
        let dir = config.data_dir()?;
        let Splits { train, test } = kind.load(&dir)?;
        let (channels, classes) = (train.channels(), train.num_classes());
        let mismatch = |has: String, key: &str, value: usize| {
            Err(Error::InvalidConfig(format!("{kind} in {} has {has} but model.{key} = {value}", dir.display())))
        };
        if channels != config.model.input_channels {
            return mismatch(format!("{channels} channel(s)"), "input_channels", config.model.input_channels);
        }
        if classes > config.model.num_classes {
            return mismatch(format!("{classes} classes"), "num_classes", config.model.num_classes);
        }
        let limit = |n: usize| (n > 0).then_some(n);
        let (train, validation, validation_indices) = if config.validation_size > 0 {
            let (rest, held, indices) = train.hold_out(config.validation_size, config.validation_seed)?;
            (rest, Some(held), indices)
        } else {
            (train, None, Vec::new())
        };
        let train = Arc::new(train);
        let workers = config.data_loader_workers;
        let train_cfg =
            LoaderConfig { workers, limit: limit(config.train_subset), ..LoaderConfig::train(config.batch_size, config.random_seed) };
        let cal_cfg = LoaderConfig { seed: config.random_seed.wrapping_add(0x5EED), ..train_cfg.clone() };
        let mut test_cfg = LoaderConfig { workers, ..LoaderConfig::eval(config.batch_size) };
        let validation = validation
            .map(|v| Loader::new(Arc::new(v), kind.eval_transform(), test_cfg.clone()))
            .transpose()?;
        test_cfg.limit = limit(config.test_subset);
        Ok(ExperimentData {
            kind,
            train: Loader::new(train.clone(), kind.train_transform(), train_cfg)?,
            validation,
            validation_indices,
            test: Loader::new(Arc::new(test), kind.eval_transform(), test_cfg)?,
            calibration: Loader::new(train, kind.train_transform(), cal_cfg)?,
        })
    }
}

/// A batch's images as a tensor on `device`.
pub fn images(batch: &Batch, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape), device)
}

/// The first `n` batches of epoch 0 of `loader`, as tensors (fewer if the epoch is shorter).
pub fn first_batches(loader: &Loader, n: usize, device: &Device) -> Result<Vec<Tensor<4>>> {
    loader.epoch(0).take(n).map(|b| Ok(images(&b?, device))).collect()
}

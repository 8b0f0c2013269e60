//! Batching with background prefetch.
//!
//! Contract: the contents of batch `k` of epoch `e` depend only on the
//! dataset, the transform, `config.seed`, `e` and `k` (never on thread
//! timing, worker count or where iteration started):
//! * the sample order of epoch `e` is a shuffle seeded by `(seed, e)` of the
//!   first `min(limit, len)` samples (identity order when `shuffle` is off);
//! * batch `k` holds order positions `k*batch_size ..` (the last batch is
//!   short unless `drop_last`, which drops it);
//! * sample `i`'s augmentation RNG is seeded by `(seed, e, i)`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::transform::Transform;

/// One batch: `images` is NCHW f32 with `shape = [n, c, h, w]`, `labels` has n entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<i64>,
}

/// How a [`Loader`] batches a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle each epoch with a seed derived from `(seed, epoch)`.
    pub shuffle: bool,
    /// Drop the last, short batch.
    pub drop_last: bool,
    /// Seed for shuffling and augmentation.
    pub seed: u64,
    /// Background threads preparing batches; 0 prepares them in the caller's thread.
    pub workers: usize,
    /// Batches prepared ahead of the consumer, over all workers (at least one per worker).
    pub prefetch: usize,
    /// Use only the first `limit` samples of the dataset.
    pub limit: Option<usize>,
    /// `Some((part, parts))`: each batch holds only its part `part` of `parts`
    /// ([`crate::collective::shard_range`] of the full batch), for one process of a
    /// data-parallel job; the batches, their order and each sample's augmentation are those
    /// of the full batches. Default `None`.
    pub shard: Option<(usize, usize)>,
}

impl LoaderConfig {
    /// Training defaults: shuffled, last batch kept, 2 workers, prefetch 4.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            shuffle: true,
            drop_last: false,
            seed,
            workers: 2,
            prefetch: 4,
            limit: None,
            shard: None,
        }
    }

    /// Evaluation defaults: sequential order, last batch kept, 2 workers, prefetch 4.
    pub fn eval(batch_size: usize) -> Self {
        Self {
            shuffle: false,
            ..Self::train(batch_size, 0)
        }
    }
}

struct Shared {
    dataset: Arc<Dataset>,
    transform: Transform,
    config: LoaderConfig,
    num_samples: usize,
    sample_shape: [usize; 3],
}

/// Yields the batches of one epoch at a time; cheap to clone.
#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl Loader {
    /// Validates the configuration and that `transform` gives one output shape
    /// for this dataset. Errors when an epoch would hold no batch.
    pub fn new(dataset: Arc<Dataset>, transform: Transform, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Config(
                "batch_size is 0: expected at least 1".into(),
            ));
        }
        if let Some((part, parts)) = config.shard {
            if part >= parts {
                return Err(DataError::Config(format!("shard {part} of {parts}: expected a part below {parts}")));
            }
        }
        let sample_shape = transform.output_shape(dataset.channels(), dataset.size())?;
        let num_samples = config.limit.map_or(dataset.len(), |l| l.min(dataset.len()));
        let loader = Self {
            shared: Arc::new(Shared {
                dataset,
                transform,
                config,
                num_samples,
                sample_shape,
            }),
        };
        if loader.batches_per_epoch() == 0 {
            let c = &loader.shared.config;
            return Err(DataError::Config(format!(
                "an epoch would be empty: {num_samples} samples (limit {:?}), batch_size {}, drop_last {}",
                c.limit, c.batch_size, c.drop_last
            )));
        }
        Ok(loader)
    }

    /// The same loader, its batches cut to part `part` of `parts` ([`LoaderConfig::shard`]).
    ///
    /// # Errors
    ///
    /// When `part >= parts`.
    pub fn shard(&self, part: usize, parts: usize) -> Result<Self> {
        let config = LoaderConfig { shard: Some((part, parts)), ..self.shared.config.clone() };
        Self::new(self.shared.dataset.clone(), self.shared.transform.clone(), config)
    }

    /// Samples used per epoch: `min(limit, dataset.len())`.
    pub fn num_samples(&self) -> usize {
        self.shared.num_samples
    }

    /// Batches per epoch (> 0).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.num_samples, self.shared.config.batch_size);
        if self.shared.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Shape (C, H, W) of every transformed sample.
    pub fn sample_shape(&self) -> [usize; 3] {
        self.shared.sample_shape
    }

    pub fn dataset(&self) -> &Dataset {
        &self.shared.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }

    /// Dataset indices in the order epoch `epoch` visits them.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shared.num_samples).collect();
        if self.shared.config.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(mix(&[
                self.shared.config.seed,
                epoch,
            ])));
        }
        order
    }

    /// Builds batch `index` of `epoch` in the caller's thread (shuffles the
    /// whole order first; prefer [`Loader::epoch`] for iteration).
    pub fn batch(&self, epoch: u64, index: usize) -> Result<Batch> {
        self.check_start(index, false)?;
        self.shared.make_batch(&self.order(epoch), epoch, index)
    }

    /// Iterates over all batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        Epoch::start(self, epoch, 0)
    }

    /// Iterates over batches `start..batches_per_epoch()` of `epoch`, identical
    /// to the tail of [`Loader::epoch`] (for exact resume). `start ==
    /// batches_per_epoch()` gives an empty iterator; larger is an error.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<Epoch> {
        self.check_start(start, true)?;
        Ok(Epoch::start(self, epoch, start))
    }

    fn check_start(&self, index: usize, allow_end: bool) -> Result<()> {
        let n = self.batches_per_epoch();
        if index < n || (allow_end && index == n) {
            Ok(())
        } else {
            Err(DataError::Config(format!(
                "batch index {index} out of range: the epoch has {n} batches"
            )))
        }
    }
}

impl Shared {
    fn make_batch(&self, order: &[usize], epoch: u64, index: usize) -> Result<Batch> {
        let b = self.config.batch_size;
        let mut ids = &order[index * b..((index + 1) * b).min(order.len())];
        if let Some((part, parts)) = self.config.shard {
            ids = &ids[crate::collective::shard_range(ids.len(), part, parts)];
        }
        let [c, h, w] = self.sample_shape;
        let per = c * h * w;
        let mut images = vec![0.0f32; ids.len() * per];
        let mut labels = Vec::with_capacity(ids.len());
        for (&i, out) in ids.iter().zip(images.chunks_exact_mut(per)) {
            let img = self.dataset.image(i)?;
            let mut rng = StdRng::seed_from_u64(mix(&[self.config.seed, epoch, i as u64]));
            self.transform.apply(&img, &mut rng, out)?;
            labels.push(i64::from(self.dataset.labels()[i]));
        }
        Ok(Batch {
            images,
            shape: [ids.len(), c, h, w],
            labels,
        })
    }
}

/// The batches of one epoch, in order. Prepared by background workers when
/// `workers > 0`; dropping it stops them. After an error it yields nothing more.
pub struct Epoch {
    shared: Arc<Shared>,
    order: Arc<Vec<usize>>,
    epoch: u64,
    next: usize,
    end: usize,
    start: usize,
    done: bool,
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Epoch {
    fn start(loader: &Loader, epoch: u64, start: usize) -> Self {
        let shared = Arc::clone(&loader.shared);
        let order = Arc::new(loader.order(epoch));
        let end = loader.batches_per_epoch();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = shared.config.workers.min(end.saturating_sub(start));
        let capacity = shared.config.prefetch.div_ceil(workers.max(1)).max(1);
        let (mut receivers, mut handles) = (Vec::new(), Vec::new());
        for w in 0..workers {
            let (tx, rx) = sync_channel(capacity);
            let (shared, order, stop) =
                (Arc::clone(&shared), Arc::clone(&order), Arc::clone(&stop));
            let spawned = std::thread::Builder::new()
                .name(format!("usnet-data-{w}"))
                .spawn(move || {
                    worker(
                        &shared,
                        &order,
                        epoch,
                        (start + w..end).step_by(workers),
                        &stop,
                        tx,
                    )
                });
            match spawned {
                Ok(h) => {
                    receivers.push(rx);
                    handles.push(h);
                }
                // Could not start a thread: fall back to fewer workers (or none).
                Err(_) => break,
            }
        }
        if receivers.len() < workers {
            // Keep the round-robin assignment consistent: use only workers that
            // started, or none; the finished/started ones are told to stop.
            stop.store(true, Ordering::Relaxed);
            receivers.clear();
            for h in handles.drain(..) {
                let _ = h.join();
            }
            stop.store(false, Ordering::Relaxed);
        }
        Self {
            shared,
            order,
            epoch,
            next: start,
            end,
            start,
            done: false,
            receivers,
            handles,
            stop,
        }
    }

    /// Index (within the epoch) of the batch the next call to `next` returns.
    pub fn next_index(&self) -> usize {
        self.next
    }
}

fn worker(
    shared: &Shared,
    order: &[usize],
    epoch: u64,
    indices: impl Iterator<Item = usize>,
    stop: &AtomicBool,
    tx: SyncSender<Result<Batch>>,
) {
    for k in indices {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let batch = shared.make_batch(order, epoch, k);
        let failed = batch.is_err();
        if tx.send(batch).is_err() || failed {
            return;
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done || self.next >= self.end {
            return None;
        }
        let k = self.next;
        let result = if self.receivers.is_empty() {
            self.shared.make_batch(&self.order, self.epoch, k)
        } else {
            let rx = &self.receivers[(k - self.start) % self.receivers.len()];
            rx.recv().unwrap_or_else(|_| {
                Err(DataError::Worker {
                    batch: k,
                    reason: "worker thread exited early (it panicked)".into(),
                })
            })
        };
        self.next += 1;
        self.done = result.is_err();
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.done { 0 } else { self.end - self.next };
        (0, Some(n))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.receivers.clear(); // unblocks workers waiting in `send`
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// SplitMix64-based mixing of several words into one seed.
fn mix(words: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &w in words {
        h ^= w;
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transform::Normalize;
    use std::path::Path;

    /// n 1×3×2 images; every pixel of image i is i, label i % 3.
    fn toy(n: usize) -> Arc<Dataset> {
        let data = (0..n)
            .flat_map(|i| std::iter::repeat_n(i as u8, 6))
            .collect();
        let labels = (0..n as u32).map(|i| i % 3).collect();
        Arc::new(Dataset::from_u8(data, labels, 3, 1, 3, 2, Path::new("toy")).unwrap())
    }

    fn ids(b: &Batch) -> Vec<usize> {
        // With unit normalisation and no padding, pixel 0 of each sample is i / 255.
        b.images
            .chunks(6)
            .map(|c| (c.iter().copied().fold(f32::MAX, f32::min) * 255.0).round() as usize)
            .collect()
    }

    fn collect(e: impl Iterator<Item = Result<Batch>>) -> Vec<Batch> {
        e.map(|b| b.unwrap()).collect()
    }

    fn cfg(batch: usize, seed: u64, workers: usize) -> LoaderConfig {
        LoaderConfig {
            workers,
            ..LoaderConfig::train(batch, seed)
        }
    }

    /// A loader over `toy(n)` without augmentation.
    fn plain(n: usize, config: LoaderConfig) -> Loader {
        Loader::new(toy(n), Transform::normalize_only(Normalize::unit()), config).unwrap()
    }

    #[test]
    fn every_sample_once_per_epoch() {
        let l = plain(23, cfg(5, 7, 2));
        assert_eq!(l.batches_per_epoch(), 5);
        for epoch in 0..3 {
            let batches = collect(l.epoch(epoch));
            assert_eq!(batches.len(), 5);
            assert_eq!(
                batches.iter().map(|b| b.shape[0]).collect::<Vec<_>>(),
                [5, 5, 5, 5, 3]
            );
            let mut seen: Vec<usize> = batches.iter().flat_map(ids).collect();
            assert_eq!(seen, l.order(epoch));
            for b in &batches {
                assert_eq!(b.shape[1..], [1, 3, 2]);
                assert_eq!(b.images.len(), b.shape.iter().product::<usize>());
                let want: Vec<i64> = ids(b).iter().map(|&i| (i % 3) as i64).collect();
                assert_eq!(b.labels, want);
            }
            seen.sort();
            assert_eq!(seen, (0..23).collect::<Vec<_>>());
        }
        assert_ne!(l.order(0), l.order(1), "epochs are shuffled differently");
    }

    #[test]
    fn deterministic_regardless_of_workers() {
        let t = Transform::random_crop(1, true, Normalize::mnist());
        let runs: Vec<Vec<Batch>> = [0, 1, 2, 3]
            .iter()
            .map(|&w| {
                collect(
                    Loader::new(
                        toy(30),
                        t.clone(),
                        LoaderConfig {
                            prefetch: 1,
                            ..cfg(4, 11, w)
                        },
                    )
                    .unwrap()
                    .epoch(2),
                )
            })
            .collect();
        assert!(runs.iter().all(|r| *r == runs[0]));
        let other = collect(Loader::new(toy(30), t, cfg(4, 12, 2)).unwrap().epoch(2));
        assert_ne!(other, runs[0], "another seed gives other batches");
    }

    #[test]
    fn resume_matches_tail() {
        let t = Transform::random_crop(1, true, Normalize::unit());
        let l = Loader::new(toy(26), t, cfg(4, 5, 2)).unwrap();
        let full = collect(l.epoch(3));
        assert_eq!(full.len(), 7);
        for k in [0, 1, 4, 6, 7] {
            let tail = collect(l.epoch_from(3, k).unwrap());
            assert_eq!(tail, full[k..], "resume at {k}");
        }
        assert_eq!(l.batch(3, 4).unwrap(), full[4]);
        assert!(l.epoch_from(3, 8).is_err());
        assert!(l.batch(3, 7).is_err());
    }

    #[test]
    fn shards_split_each_batch_and_keep_its_augmentation() {
        let t = Transform::random_crop(1, true, Normalize::unit());
        let full = collect(Loader::new(toy(26), t.clone(), cfg(8, 5, 2)).unwrap().epoch(1));
        let parts: Vec<Vec<Batch>> = (0..3)
            .map(|part| collect(Loader::new(toy(26), t.clone(), LoaderConfig { shard: Some((part, 3)), ..cfg(8, 5, 1) }).unwrap().epoch(1)))
            .collect();
        for (k, batch) in full.iter().enumerate() {
            let per = batch.images.len() / batch.labels.len();
            let mut images = Vec::new();
            let mut labels = Vec::new();
            for part in &parts {
                images.extend_from_slice(&part[k].images);
                labels.extend_from_slice(&part[k].labels);
                assert_eq!(part[k].images.len(), part[k].labels.len() * per);
            }
            assert_eq!((&images, &labels), (&batch.images, &batch.labels), "batch {k}: the shards concatenate to it");
        }
        // The last batch has 2 samples: part 0 of 3 is empty, as shard_range says.
        assert_eq!(parts[0].last().unwrap().labels.len(), 0);
        assert!(Loader::new(toy(26), t, LoaderConfig { shard: Some((3, 3)), ..cfg(8, 5, 1) }).is_err());
    }

    #[test]
    fn drop_last_limit_and_eval_order() {
        let l = plain(
            23,
            LoaderConfig {
                drop_last: true,
                ..cfg(5, 1, 1)
            },
        );
        assert_eq!(l.batches_per_epoch(), 4);
        assert!(collect(l.epoch(0)).iter().all(|b| b.shape[0] == 5));

        let l = plain(
            23,
            LoaderConfig {
                limit: Some(7),
                ..LoaderConfig::eval(3)
            },
        );
        assert_eq!((l.num_samples(), l.batches_per_epoch()), (7, 3));
        let all: Vec<usize> = collect(l.epoch(9)).iter().flat_map(ids).collect();
        assert_eq!(all, (0..7).collect::<Vec<_>>());

        let refused = |config| {
            Loader::new(toy(3), Transform::normalize_only(Normalize::unit()), config).is_err()
        };
        assert!(refused(LoaderConfig {
            drop_last: true,
            ..cfg(5, 0, 1)
        }));
        assert!(refused(LoaderConfig {
            limit: Some(0),
            ..cfg(5, 0, 1)
        }));
        assert!(refused(cfg(0, 0, 1)));
    }

    #[test]
    fn early_drop_stops_workers() {
        let l = plain(100, cfg(2, 0, 2));
        let mut e = l.epoch(0);
        assert!(e.next().unwrap().is_ok());
        assert_eq!(e.next_index(), 1);
        drop(e); // must not hang
    }

    #[test]
    fn decode_error_surfaces_from_worker() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("broken.png");
        std::fs::write(&p, b"garbage").unwrap();
        let ok = tmp.path().join("ok.png");
        crate::data::testutil::write_png(&ok, 4, 4, [1, 2, 3]);
        let ds =
            Dataset::from_files(vec![ok.clone(), ok, p], vec![0, 1, 0], 2, tmp.path()).unwrap();
        let t = Transform::resize_center_crop(4, 4, Normalize::unit());
        let l = Loader::new(Arc::new(ds), t, LoaderConfig::eval(1)).unwrap();
        let res: Vec<Result<Batch>> = l.epoch(0).collect();
        assert_eq!(res.len(), 3);
        assert!(res[0].is_ok() && res[1].is_ok());
        let msg = res[2].as_ref().unwrap_err().to_string();
        assert!(msg.contains("broken.png"), "{msg}");
    }
}

//! Collective communication between the processes of a data-parallel job.
//!
//! The trainer needs three things from its peers: how many there are, which one it is, and a
//! sum of one `f32` buffer over all of them. [`Collective`] is that and nothing more, so the
//! training loop has no MPI-specific code: [`SingleProcess`] is the one-process case (every
//! operation is the identity) and [`Mpi`] (feature `mpi`) runs over MPI's `MPI_Allreduce`.

#[cfg(feature = "mpi")]
mod mpi;

#[cfg(feature = "mpi")]
pub use self::mpi::Mpi;

/// The processes of a data-parallel job, as seen from one of them.
///
/// Every process calls each collective operation the same number of times, in the same
/// order, with buffers of the same length; otherwise the job deadlocks or aborts.
pub trait Collective {
    /// This process's index, `0..size()`. Rank 0 alone writes files.
    fn rank(&self) -> usize;
    /// The number of processes (at least 1).
    fn size(&self) -> usize;
    /// Replaces `buf` on every process by the elementwise sum of all processes' `buf`.
    ///
    /// A failure here (a peer that died) ends the whole job: MPI's default error handler
    /// aborts every process rather than returning, so there is no error to handle.
    fn all_reduce_sum(&mut self, buf: &mut [f32]);

    /// Whether this process writes the run's files (rank 0).
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// A job of one process: every collective operation leaves its buffer as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _buf: &mut [f32]) {}
}

/// The part `[part * n / parts, (part + 1) * n / parts)` of `0..n`: `parts` disjoint ranges
/// that cover `0..n`, their lengths differing by at most one.
///
/// # Panics
///
/// When `part >= parts`.
pub fn shard_range(n: usize, part: usize, parts: usize) -> std::ops::Range<usize> {
    assert!(part < parts, "part {part} of {parts}");
    part * n / parts..(part + 1) * n / parts
}

/// A job whose other processes are simulated: each all-reduce adds the next recorded buffer
/// of the peers to this process's one, and keeps what this process sent. For tests of code
/// that runs on several processes, one process at a time.
#[derive(Debug, Clone, Default)]
pub struct Simulated {
    pub rank: usize,
    pub size: usize,
    /// The sum of the other processes' buffers, one per all-reduce, in call order.
    pub peers: std::collections::VecDeque<Vec<f32>>,
    /// What this process contributed to each all-reduce, in call order.
    pub sent: Vec<Vec<f32>>,
}

impl Collective for Simulated {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) {
        self.sent.push(buf.to_vec());
        if let Some(peers) = self.peers.pop_front() {
            assert_eq!(peers.len(), buf.len(), "the peers' buffer differs in length");
            for (b, p) in buf.iter_mut().zip(peers) {
                *b += p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_the_batch() {
        for n in 0..20 {
            for parts in 1..6 {
                let ranges: Vec<_> = (0..parts).map(|p| shard_range(n, p, parts)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[parts - 1].end, n);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{n} in {parts}: {lens:?}");
            }
        }
    }
}

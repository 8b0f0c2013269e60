//! [`Collective`] over MPI (rsmpi), for `mpirun -np R usnet train`.

use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use super::Collective;
use crate::error::{Error, Result};

/// MPI's world communicator. Dropping it finalises MPI, which waits for every process: a
/// process that fails must call [`Mpi::abort`] instead, which ends the whole job.
pub struct Mpi {
    world: SimpleCommunicator,
    // Declared last: dropped (MPI_Finalize) after the communicator.
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {} }}", self.rank(), self.size())
    }
}

impl Mpi {
    /// Initialises MPI (once per process) and joins the job's world communicator. Errors
    /// are fatal to the job (MPI's default `MPI_ERRORS_ARE_FATAL`): a peer that dies ends
    /// every process instead of leaving them waiting.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when MPI was already initialised in this process.
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::InvalidConfig("MPI was already initialised in this process".into()))?;
        Ok(Mpi { world: universe.world(), _universe: universe })
    }

    /// Ends every process of the job with `code` (`MPI_Abort`); for a process that cannot
    /// go on, so that its peers do not wait for it forever.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
}

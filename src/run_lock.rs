//! One writer per run directory: an exclusive advisory lock on `DIR/.usnet.lock`.
//!
//! `usnet train` and `usnet calibrate` hold it while they write a run, so a second writer of
//! the same directory is refused at once with the first one's process id, instead of racing
//! it (mixed configs, truncated metrics). The lock is the operating system's (`flock` on
//! Unix, through `std::fs::File::try_lock`), so it is released when the holder exits, even
//! when it is killed; the file itself stays and means nothing without the lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = ".usnet.lock";

/// An exclusive lock on a run directory, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Locks `dir` (creating it), or fails at once if another process holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] naming the holder's process id (as it wrote it into the lock file),
    /// [`Error::Io`] when the directory or the lock file cannot be created.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let io = |source| Error::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "process id not yet written".to_string(),
                    text => text.to_string(),
                };
                return Err(Error::Locked { dir: dir.into(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).and_then(|_| file.rewind()).map_err(io)?;
        let me = format!("pid {}", std::process::id());
        file.write_all(me.as_bytes()).and_then(|_| file.flush()).map_err(io)?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = RunLock::acquire(&run).unwrap();
        // A second open file description conflicts, as a second process would.
        let err = RunLock::acquire(&run).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Locked { .. }), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())) && text.contains("run"), "{text}");
        drop(first);
        let again = RunLock::acquire(&run).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }
}

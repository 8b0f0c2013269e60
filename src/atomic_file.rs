//! Atomic file writes: a temporary file in the target's directory, written, synced, then
//! renamed over the target.
//!
//! A crash at any moment leaves the old file or the new one, never a torn file. Each write
//! gets its own uniquely named temporary file (`tempfile`), so two processes writing the same
//! path never collide on a shared `.tmp` name, and a failed write (a full disk, a failed
//! rename) removes its temporary file instead of leaving it to hold the space.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically, creating its directory if needed.
///
/// The file gets the permissions of a plain `File::create` (`0o666` less the umask), not the
/// `0o600` of a temporary file.
///
/// # Errors
///
/// The I/O error of creating, writing, syncing or renaming; the temporary file is removed
/// before it is returned.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    // Through the File itself: NamedTempFile's own Write names the temporary path in its
    // errors, a file that is gone by the time the error is read.
    tmp.as_file_mut().write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On failure the error holds the temporary file, and dropping it removes it.
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_replaces_and_keeps_plain_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(leftovers(path.parent().unwrap()).is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_ne!(mode & 0o044, 0, "readable by others as File::create makes it: {mode:o}");
        }
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the write succeeded.
        let target = dir.path().join("checkpoint.safetensors");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        assert!(write_atomic(&target, b"data").is_err());
        assert!(leftovers(dir.path()).is_empty(), "left {:?}", leftovers(dir.path()));
    }

    #[test]
    fn concurrent_writers_of_one_path_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, &[t; 1000]).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1000);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "a torn file");
        assert!(leftovers(dir.path()).is_empty());
    }
}

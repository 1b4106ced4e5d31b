//! File-system helpers the durability argument relies on: fsync of a directory (so that a
//! created, renamed or removed entry survives a crash) and the directory lock that keeps two
//! engines from writing one store.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes an exclusive advisory lock on `dir/LOCK`. The lock lives as long as the returned
/// file; flock locks conflict between open file descriptions, so a second open in the same
/// process is refused too.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(Error::io("open the lock file"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(Error::Io {
            context: "lock the store directory",
            source,
        }),
    }
}

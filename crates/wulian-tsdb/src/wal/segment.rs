//! WAL segment files and the active log.
//!
//! A segment is `wal/NNNNNNNNNNNN.wal` (12-digit, zero-padded segment number, starting at 1)
//! and begins with a 16-byte header: magic `b"WLNWAL"`, format version `u16`, segment number
//! `u64` (little-endian), followed by framed records (see `record`).
//!
//! [`SegmentLog`] is the writer's view: the open tail segment plus the sealed segments still
//! on disk. Rotation fsyncs the old segment before the new one is created, so after a crash
//! only the last segment can have a torn tail. New segments are fsynced (file and directory)
//! before any record is written to them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fsutil::sync_dir;

pub(crate) const MAGIC: &[u8; 6] = b"WLNWAL";
pub(crate) const VERSION: u16 = 1;
pub(crate) const HEADER_LEN: u64 = 16;

pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.wal"))
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment numbers present in `dir`, ascending. Other files are ignored.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        match entry.file_name().to_str().and_then(parse_name) {
            Some(n) => numbers.push(n),
            None => tracing::debug!(file = ?entry.path(), "Ignoring a file in the WAL directory."),
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

pub(crate) fn header(number: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..6].copy_from_slice(MAGIC);
    h[6..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&number.to_le_bytes());
    h
}

/// Checks a segment header; `Err` carries the reason.
pub(crate) fn check_header(bytes: &[u8], number: u64) -> Result<(), String> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(format!(
            "{} bytes, a segment header needs {HEADER_LEN}",
            bytes.len()
        ));
    }
    if &bytes[..6] != MAGIC {
        return Err("not a WAL segment (bad magic)".to_string());
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != VERSION {
        return Err(format!("unsupported WAL format version {version}"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[8..16]);
    let stored = u64::from_le_bytes(n);
    if stored != number {
        return Err(format!(
            "header says segment {stored}, file name says {number}"
        ));
    }
    Ok(())
}

/// Creates a segment with its header, durable (file and directory fsynced).
fn create(dir: &Path, number: u64) -> io::Result<File> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    file.write_all(&header(number))?;
    file.sync_all()?;
    sync_dir(dir)?;
    // Reopen in append mode so that a truncation after a failed write moves the end too.
    OpenOptions::new().append(true).open(&path)
}

/// A failed append, and whether the file was put back to its previous length.
#[derive(Debug)]
pub(crate) struct AppendError {
    pub source: io::Error,
    pub rolled_back: bool,
}

/// The log as the writer thread sees it.
#[derive(Debug)]
pub(crate) struct SegmentLog {
    dir: PathBuf,
    file: File,
    number: u64,
    len: u64,
    /// Sealed segments still on disk: (number, bytes).
    sealed: Vec<(u64, u64)>,
    dirty: bool,
    last_sync: Instant,
}

impl SegmentLog {
    /// Continues the existing segment `number` of `len` bytes (its tail already validated).
    pub(crate) fn resume(
        dir: &Path,
        number: u64,
        len: u64,
        sealed: Vec<(u64, u64)>,
    ) -> io::Result<SegmentLog> {
        let file = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, number))?;
        Ok(SegmentLog {
            dir: dir.to_path_buf(),
            file,
            number,
            len,
            sealed,
            dirty: false,
            last_sync: Instant::now(),
        })
    }

    /// Starts a fresh segment `number`.
    pub(crate) fn start(
        dir: &Path,
        number: u64,
        sealed: Vec<(u64, u64)>,
    ) -> io::Result<SegmentLog> {
        let file = create(dir, number)?;
        Ok(SegmentLog {
            dir: dir.to_path_buf(),
            file,
            number,
            len: HEADER_LEN,
            sealed,
            dirty: false,
            last_sync: Instant::now(),
        })
    }

    pub(crate) fn current(&self) -> u64 {
        self.number
    }

    pub(crate) fn current_len(&self) -> u64 {
        self.len
    }

    /// Bytes of all segments on disk.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.len + self.sealed.iter().map(|(_, b)| b).sum::<u64>()
    }

    pub(crate) fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Whether any segment holds a record.
    pub(crate) fn has_records(&self) -> bool {
        self.len > HEADER_LEN || self.sealed.iter().any(|(_, b)| *b > HEADER_LEN)
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn since_sync(&self) -> std::time::Duration {
        self.last_sync.elapsed()
    }

    /// A second handle on the current segment, for an fsync on another thread while this one
    /// goes on appending (fdatasync covers every write(2) that returned before it started).
    /// The log stays dirty: a later [`SegmentLog::sync`] still syncs.
    pub(crate) fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// write(2)s `bytes` at the end of the current segment. On failure the file is truncated
    /// back so that a partial record cannot end up in front of later ones.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), AppendError> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.dirty = true;
                Ok(())
            }
            Err(source) => {
                let rolled_back = self.file.set_len(self.len).is_ok();
                Err(AppendError {
                    source,
                    rolled_back,
                })
            }
        }
    }

    /// fsyncs the current segment if anything was written since the last fsync.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Seals the current segment (fsynced) and starts the next. Returns the new number.
    pub(crate) fn rotate(&mut self) -> io::Result<u64> {
        self.sync()?;
        let next = self.number + 1;
        let file = match create(&self.dir, next) {
            Ok(file) => file,
            Err(e) => {
                // Leave no half-made segment behind; if removal fails too, replay treats a
                // short last segment as torn.
                if let Err(remove) = fs::remove_file(segment_path(&self.dir, next)) {
                    tracing::debug!(error = %remove, "Removing a half-created segment failed.");
                }
                return Err(e);
            }
        };
        self.sealed.push((self.number, self.len));
        self.file = file;
        self.number = next;
        self.len = HEADER_LEN;
        self.last_sync = Instant::now();
        Ok(next)
    }

    /// Deletes the sealed segments numbered below `number` (covered by a snapshot).
    pub(crate) fn remove_before(&mut self, number: u64) -> io::Result<()> {
        let mut result = Ok(());
        let dir = &self.dir;
        self.sealed.retain(|(n, _)| {
            if *n >= number {
                return true;
            }
            match fs::remove_file(segment_path(dir, *n)) {
                Ok(()) => false,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    result = Err(e);
                    true
                }
            }
        });
        result?;
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_headers() {
        assert_eq!(parse_name("000000000042.wal"), Some(42));
        assert_eq!(parse_name("42.wal"), None);
        assert_eq!(parse_name("000000000042.wal.tmp"), None);
        let h = header(7);
        assert!(check_header(&h, 7).is_ok());
        assert!(check_header(&h, 8).is_err());
        assert!(check_header(&h[..10], 7).is_err());
        let mut bad = h;
        bad[0] = b'X';
        assert!(check_header(&bad, 7).is_err());
    }

    #[test]
    fn rotate_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::start(dir.path(), 1, Vec::new()).unwrap();
        assert!(!log.has_records());
        log.append(b"0123456789").unwrap();
        assert!(log.has_records());
        assert_eq!(log.rotate().unwrap(), 2);
        assert_eq!(log.total_bytes(), 2 * HEADER_LEN + 10);
        assert_eq!(list(dir.path()).unwrap(), vec![1, 2]);
        log.remove_before(2).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![2]);
        assert_eq!(log.segment_count(), 1);
        assert!(fs::metadata(segment_path(dir.path(), 1)).is_err());
    }
}

//! Replay of the WAL into the head at open.
//!
//! Segments are read in order, starting at the first segment the snapshot does not cover
//! (older leftovers from an interrupted checkpoint are deleted). Policy for damage:
//!
//! - The tail of the LAST segment may be torn: a short header, an impossible length, a record
//!   running past the end of the file, or a CRC mismatch with nothing valid after it. Such a
//!   record was being written when the process or machine died, so it was never acknowledged
//!   (acks come after the write, and in `Sync` mode after the fsync). It is truncated away
//!   with a `warn!` naming the file and offset, and the log continues from there.
//! - Anything else — damage in an earlier segment, a bad record followed by valid ones, a
//!   record that passes its CRC but does not decode, a missing segment — is
//!   [`Error::Corrupt`]: opening refuses rather than silently drop acknowledged data.

use std::fs::{self, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::head::Head;
use crate::wal::record::{self, Frame, Record};
use crate::wal::segment::{self, HEADER_LEN, segment_path};

/// What replay found.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Segments that remain, ascending: (number, bytes after any tail truncation).
    pub segments: Vec<(u64, u64)>,
    pub records: u64,
    /// Whether a torn tail was cut off.
    pub truncated_tail: bool,
}

/// Replays every segment numbered `start` or later into `head`.
pub(crate) fn replay(dir: &Path, start: u64, head: &mut Head) -> Result<Replayed> {
    let numbers = segment::list(dir).map_err(Error::io("list WAL segments"))?;
    let (covered, live): (Vec<u64>, Vec<u64>) = numbers.into_iter().partition(|n| *n < start);
    if !covered.is_empty() {
        for n in &covered {
            let path = segment_path(dir, *n);
            tracing::info!(file = %path.display(), "Removing a WAL segment the snapshot already covers.");
            fs::remove_file(&path).map_err(Error::io("remove a covered WAL segment"))?;
        }
        sync_dir(dir).map_err(Error::io("sync the WAL directory"))?;
    }
    if let Some(&first) = live.first()
        && first != start
    {
        return Err(Error::Corrupt {
            file: segment_path(dir, first),
            offset: 0,
            reason: format!("WAL segments {start} to {} are missing", first - 1),
        });
    }
    for pair in live.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(Error::Corrupt {
                file: segment_path(dir, pair[1]),
                offset: 0,
                reason: format!(
                    "WAL segments {} to {} are missing",
                    pair[0] + 1,
                    pair[1] - 1
                ),
            });
        }
    }

    let mut out = Replayed::default();
    for (i, &number) in live.iter().enumerate() {
        let last = i + 1 == live.len();
        let path = segment_path(dir, number);
        let bytes = fs::read(&path).map_err(Error::io("read a WAL segment"))?;
        if let Err(reason) = segment::check_header(&bytes, number) {
            if last && ((bytes.len() as u64) < HEADER_LEN || bytes.iter().all(|b| *b == 0)) {
                // Died while creating the segment (short or never-written header): it never
                // held a record.
                tracing::warn!(file = %path.display(), bytes = bytes.len(), "Removing a WAL segment with a torn header.");
                fs::remove_file(&path).map_err(Error::io("remove a torn WAL segment"))?;
                sync_dir(dir).map_err(Error::io("sync the WAL directory"))?;
                out.truncated_tail = true;
                continue;
            }
            return Err(Error::Corrupt {
                file: path,
                offset: 0,
                reason,
            });
        }
        let mut offset = HEADER_LEN as usize;
        loop {
            match record::read_frame(&bytes, offset) {
                Frame::End => break,
                Frame::Valid { payload, next } => {
                    let corrupt = |reason: String| Error::Corrupt {
                        file: path.clone(),
                        offset: offset as u64,
                        reason,
                    };
                    let record = record::decode(payload).map_err(|e| corrupt(e.0))?;
                    apply(head, record).map_err(corrupt)?;
                    out.records += 1;
                    offset = next;
                }
                Frame::Invalid {
                    reason,
                    complete,
                    next,
                } => {
                    let followed_by_valid =
                        complete && matches!(record::read_frame(&bytes, next), Frame::Valid { .. });
                    if !last || followed_by_valid {
                        let reason = if followed_by_valid {
                            format!("{reason}, and valid records follow")
                        } else {
                            reason
                        };
                        return Err(Error::Corrupt {
                            file: path,
                            offset: offset as u64,
                            reason,
                        });
                    }
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        dropped_bytes = bytes.len() - offset,
                        reason = %reason,
                        "Truncating a torn record at the tail of the WAL; it was never acknowledged."
                    );
                    truncate(&path, offset as u64)?;
                    out.truncated_tail = true;
                    break;
                }
            }
        }
        out.segments.push((number, offset as u64));
    }
    Ok(out)
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(Error::io("open a WAL segment to truncate it"))?;
    file.set_len(len)
        .map_err(Error::io("truncate a torn WAL tail"))?;
    file.sync_all()
        .map_err(Error::io("sync a truncated WAL segment"))
}

/// Applies one logged record. Logged values were validated and coerced before logging, so a
/// kind conflict here means the files disagree with each other.
pub(crate) fn apply(head: &mut Head, record: Record) -> std::result::Result<(), String> {
    match record {
        Record::Write(entries) => {
            for e in entries {
                head.upsert(&e.series, e.ts, e.value).map_err(|c| {
                    format!(
                        "series {} holds {} values but the record carries a {} value",
                        e.series, c.expected, c.actual
                    )
                })?;
            }
        }
        Record::DeleteDevice { tenant, device } => {
            head.delete_device(&tenant, &device);
        }
    }
    Ok(())
}

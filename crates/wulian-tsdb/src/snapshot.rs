//! Snapshots: the whole head written to one file so that the WAL can be cut.
//!
//! File: `snapshot/NNNNNNNNNNNN.snap`, named after the first WAL segment it does NOT cover
//! (`next_segment`): opening loads the newest snapshot and replays segments `next_segment`
//! and later. Layout, little-endian:
//!
//! - header (20 bytes): magic `b"WLNSNP"`, version `u16`, `next_segment u64`, crc32 of the
//!   preceding 16 bytes;
//! - blocks, framed like WAL records: `[len u32][crc32 u32][payload]`. Payload type `1` is a
//!   series block: `[tenant str][device str][key str][kind u8][n u32]` and n ×
//!   `[ts i64][value]`, ascending ts; a series is split over several blocks when it is long.
//!   Type `2` is the footer: `[blocks u64][series u64][points u64]`, and must be last.
//!
//! Writing goes to `NNNN.snap.tmp`, which is fsynced, renamed into place, and the directory
//! fsynced, so a snapshot is either complete or absent; a present snapshot that does not
//! verify is therefore real corruption and opening refuses ([`Error::Corrupt`]). Leftover
//! `.tmp` files are deleted at open.
//!
//! Format of the first engine version, superseded by block files (`block`, `storage`). It is
//! still read at open, so that a store written by that version is upgraded in place: the
//! snapshot is loaded into the head, the WAL after it replayed, and the first flush writes
//! everything to block files and deletes the snapshot. The writer is only used by tests.
#![cfg_attr(not(test), allow(dead_code))]

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::{
    DecodeError, Reader, put_i64, put_str, put_u8, put_u16, put_u32, put_u64, put_value,
};
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::head::Head;
use crate::value::{SeriesKey, ValueKind};

const MAGIC: &[u8; 6] = b"WLNSNP";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 20;
const BLOCK_SERIES: u8 = 1;
const BLOCK_FOOTER: u8 = 2;
/// A series block is closed after this many points or bytes, whichever comes first.
const BLOCK_POINTS: usize = 65_536;
const BLOCK_BYTES: usize = 1024 * 1024;
/// Largest block accepted when reading (one point can carry a string of a whole WAL record).
const MAX_BLOCK: usize = 2 * crate::wal::record::MAX_PAYLOAD;

/// A snapshot on disk.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotInfo {
    pub next_segment: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

pub(crate) fn path(dir: &Path, next_segment: u64) -> PathBuf {
    dir.join(format!("{next_segment:012}.snap"))
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".snap")?;
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn kind_byte(kind: ValueKind) -> u8 {
    match kind {
        ValueKind::Float => 0,
        ValueKind::Integer => 1,
        ValueKind::Bool => 2,
        ValueKind::String => 3,
    }
}

fn kind_from_byte(b: u8) -> Option<ValueKind> {
    Some(match b {
        0 => ValueKind::Float,
        1 => ValueKind::Integer,
        2 => ValueKind::Bool,
        3 => ValueKind::String,
        _ => return None,
    })
}

/// Writes all of `head` as the snapshot covering WAL segments below `next_segment`.
pub(crate) fn write(dir: &Path, next_segment: u64, head: &Head) -> Result<SnapshotInfo> {
    let final_path = path(dir, next_segment);
    let tmp_path = final_path.with_extension("snap.tmp");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp_path)
        .map_err(Error::io("create a snapshot file"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = write_body(&mut out, next_segment, head).and_then(|bytes| {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(bytes)
    });
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(source) => {
            if let Err(e) = fs::remove_file(&tmp_path) {
                tracing::debug!(error = %e, "Removing a failed snapshot file failed.");
            }
            return Err(Error::Io {
                context: "write a snapshot",
                source,
            });
        }
    };
    fs::rename(&tmp_path, &final_path).map_err(Error::io("rename a snapshot into place"))?;
    sync_dir(dir).map_err(Error::io("sync the snapshot directory"))?;
    Ok(SnapshotInfo {
        next_segment,
        path: final_path,
        bytes,
    })
}

fn write_body(out: &mut impl Write, next_segment: u64, head: &Head) -> io::Result<u64> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    put_u16(&mut header, VERSION);
    put_u64(&mut header, next_segment);
    let crc = crc32fast::hash(&header);
    put_u32(&mut header, crc);
    out.write_all(&header)?;
    let mut bytes = header.len() as u64;

    let (mut blocks, mut series_count, mut points) = (0u64, 0u64, 0u64);
    let mut buf = Vec::with_capacity(BLOCK_BYTES + 4096);
    for (tenant, device, key, series) in head.iter() {
        series_count += 1;
        let mut rest = series.points();
        while !rest.is_empty() {
            buf.clear();
            buf.extend_from_slice(&[0u8; 8]);
            put_u8(&mut buf, BLOCK_SERIES);
            put_str(&mut buf, tenant);
            put_str(&mut buf, device);
            put_str(&mut buf, key);
            put_u8(&mut buf, kind_byte(series.kind()));
            let count_at = buf.len();
            put_u32(&mut buf, 0);
            let mut n = 0usize;
            for p in rest {
                put_i64(&mut buf, p.ts);
                put_value(&mut buf, &p.value);
                n += 1;
                if n == BLOCK_POINTS || buf.len() >= BLOCK_BYTES {
                    break;
                }
            }
            rest = &rest[n..];
            // n <= BLOCK_POINTS, which fits in u32.
            buf[count_at..count_at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            bytes += frame_and_write(out, &mut buf)?;
            blocks += 1;
            points += n as u64;
        }
    }
    buf.clear();
    buf.extend_from_slice(&[0u8; 8]);
    put_u8(&mut buf, BLOCK_FOOTER);
    put_u64(&mut buf, blocks);
    put_u64(&mut buf, series_count);
    put_u64(&mut buf, points);
    bytes += frame_and_write(out, &mut buf)?;
    out.flush()?;
    Ok(bytes)
}

/// `buf` holds 8 placeholder bytes and then the payload.
fn frame_and_write(out: &mut impl Write, buf: &mut [u8]) -> io::Result<u64> {
    let len =
        u32::try_from(buf.len() - 8).map_err(|_| io::Error::other("snapshot block over 4 GiB"))?;
    let crc = crc32fast::hash(&buf[8..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    out.write_all(buf)?;
    Ok(buf.len() as u64)
}

/// Snapshot numbers in `dir`, ascending; deletes leftover temporary files.
fn list(dir: &Path) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("list snapshots"))? {
        let entry = entry.map_err(Error::io("list snapshots"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".snap.tmp") {
            tracing::info!(file = %entry.path().display(), "Removing an unfinished snapshot.");
            fs::remove_file(entry.path()).map_err(Error::io("remove an unfinished snapshot"))?;
        } else if let Some(n) = parse_name(name) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Loads the newest snapshot in `dir` into `head` (which must be empty). `None` if there is
/// no snapshot.
pub(crate) fn load_latest(dir: &Path, head: &mut Head) -> Result<Option<SnapshotInfo>> {
    let Some(&next_segment) = list(dir)?.last() else {
        return Ok(None);
    };
    let path = path(dir, next_segment);
    let file = File::open(&path).map_err(Error::io("open a snapshot"))?;
    let bytes = Loader {
        input: BufReader::with_capacity(1 << 20, file),
        path: &path,
        offset: 0,
    }
    .load(next_segment, head)?;
    Ok(Some(SnapshotInfo {
        next_segment,
        path,
        bytes,
    }))
}

struct Loader<'a, R> {
    input: R,
    path: &'a Path,
    offset: u64,
}

impl<R: Read> Loader<'_, R> {
    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            file: self.path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// Reads exactly `buf.len()` bytes; a short read is corruption (the file was complete
    /// when it was renamed into place).
    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt(self.offset, format!("file ends inside the {what}")))
            }
            Err(source) => Err(Error::Io {
                context: "read a snapshot",
                source,
            }),
        }
    }

    fn load(mut self, next_segment: u64, head: &mut Head) -> Result<u64> {
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header, "header")?;
        if &header[..6] != MAGIC {
            return Err(self.corrupt(0, "not a snapshot (bad magic)"));
        }
        let mut r = Reader::new(&header[6..]);
        let (version, stored_next, crc) =
            (|| Ok::<_, DecodeError>((r.u16()?, r.u64()?, r.u32()?)))()
                .map_err(|e| self.corrupt(0, e.0))?;
        if crc32fast::hash(&header[..16]) != crc {
            return Err(self.corrupt(0, "header checksum mismatch"));
        }
        if version != VERSION {
            return Err(self.corrupt(6, format!("unsupported snapshot format version {version}")));
        }
        if stored_next != next_segment {
            return Err(self.corrupt(
                8,
                format!("header says segment {stored_next}, file name says {next_segment}"),
            ));
        }

        let (mut blocks, mut points) = (0u64, 0u64);
        let mut payload = Vec::new();
        loop {
            let at = self.offset;
            let mut frame = [0u8; 8];
            self.read_exact(&mut frame, "block header (the footer is missing)")?;
            let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if len == 0 || len > MAX_BLOCK {
                return Err(self.corrupt(at, format!("block length {len}")));
            }
            payload.resize(len, 0);
            self.read_exact(&mut payload, "block")?;
            if crc32fast::hash(&payload) != crc {
                return Err(self.corrupt(at, "block checksum mismatch"));
            }
            let mut r = Reader::new(&payload);
            match r.u8().map_err(|e| self.corrupt(at, e.0))? {
                BLOCK_SERIES => {
                    points += load_block(&mut r, head).map_err(|e| self.corrupt(at, e.0))?;
                    blocks += 1;
                }
                BLOCK_FOOTER => {
                    let (f_blocks, f_series, f_points) =
                        (|| Ok::<_, DecodeError>((r.u64()?, r.u64()?, r.u64()?)))()
                            .map_err(|e| self.corrupt(at, e.0))?;
                    if (f_blocks, f_series, f_points)
                        != (blocks, head.series_count() as u64, points)
                    {
                        return Err(self.corrupt(
                            at,
                            format!(
                                "footer says {f_blocks} blocks, {f_series} series, {f_points} points; \
                                 the file holds {blocks}, {}, {points}",
                                head.series_count()
                            ),
                        ));
                    }
                    let mut probe = [0u8; 1];
                    match self.input.read(&mut probe) {
                        Ok(0) => return Ok(self.offset),
                        Ok(_) => return Err(self.corrupt(self.offset, "data after the footer")),
                        Err(source) => {
                            return Err(Error::Io {
                                context: "read a snapshot",
                                source,
                            });
                        }
                    }
                }
                other => return Err(self.corrupt(at, format!("unknown block type {other}"))),
            }
        }
    }
}

/// Decodes one series block into `head`. Returns the points loaded.
fn load_block(r: &mut Reader<'_>, head: &mut Head) -> std::result::Result<u64, DecodeError> {
    let key = SeriesKey {
        tenant: r.str()?.to_string(),
        device: r.str()?.to_string(),
        key: r.str()?.to_string(),
    };
    let kind_byte = r.u8()?;
    let kind = kind_from_byte(kind_byte)
        .ok_or_else(|| DecodeError(format!("unknown kind {kind_byte}")))?;
    let n = r.count(10)?;
    for _ in 0..n {
        let ts = r.i64()?;
        let value = r.value()?;
        if value.kind() != kind {
            return Err(DecodeError(format!(
                "{kind} series {key} holds a {} value",
                value.kind()
            )));
        }
        head.upsert(&key, ts, value).map_err(|c| {
            DecodeError(format!(
                "series {key} holds {} and {} values",
                c.expected, c.actual
            ))
        })?;
    }
    r.finish()?;
    Ok(n as u64)
}

/// Deletes snapshots older than the one covering up to `keep`.
pub(crate) fn remove_older(dir: &Path, keep: u64) -> Result<()> {
    let mut removed = false;
    for n in list(dir)? {
        if n < keep {
            fs::remove_file(path(dir, n)).map_err(Error::io("remove an old snapshot"))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir).map_err(Error::io("sync the snapshot directory"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn sample() -> Head {
        let mut head = Head::default();
        for i in 0..200_000i64 {
            head.upsert(
                &SeriesKey::new("t", "d", "temp"),
                i,
                Value::F64(i as f64 / 2.0),
            )
            .unwrap();
        }
        head.upsert(
            &SeriesKey::new("t", "d", "door"),
            5,
            Value::Str("open".into()),
        )
        .unwrap();
        head.upsert(&SeriesKey::new("u", "e", "on"), 7, Value::Bool(true))
            .unwrap();
        head.upsert(&SeriesKey::new("u", "e", "n"), 7, Value::I64(-3))
            .unwrap();
        head
    }

    #[test]
    fn round_trip_with_multi_block_series() {
        let dir = tempfile::tempdir().unwrap();
        let head = sample();
        let info = write(dir.path(), 3, &head).unwrap();
        assert_eq!(info.path, path(dir.path(), 3));
        let mut loaded = Head::default();
        let got = load_latest(dir.path(), &mut loaded).unwrap().unwrap();
        assert_eq!(got.next_segment, 3);
        assert_eq!(got.bytes, info.bytes);
        assert_eq!(loaded.series_count(), head.series_count());
        assert_eq!(loaded.point_count(), head.point_count());
        for (t, d, k, s) in head.iter() {
            let other = loaded.series(&SeriesKey::new(t, d, k)).unwrap();
            assert_eq!(other.kind(), s.kind());
            assert_eq!(other.points(), s.points());
        }
    }

    #[test]
    fn newest_wins_and_older_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 2, &Head::default()).unwrap();
        write(dir.path(), 5, &sample()).unwrap();
        fs::write(dir.path().join("000000000009.snap.tmp"), b"partial").unwrap();
        let mut head = Head::default();
        assert_eq!(
            load_latest(dir.path(), &mut head)
                .unwrap()
                .unwrap()
                .next_segment,
            5
        );
        assert!(!dir.path().join("000000000009.snap.tmp").exists());
        remove_older(dir.path(), 5).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![5]);
    }

    #[test]
    fn damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let info = write(dir.path(), 1, &sample()).unwrap();
        let good = fs::read(&info.path).unwrap();
        // A flipped byte in the middle, a truncation, a missing footer: all refused.
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        for bad in [
            flipped,
            good[..good.len() - 3].to_vec(),
            good[..HEADER_LEN].to_vec(),
        ] {
            fs::write(&info.path, &bad).unwrap();
            let err = load_latest(dir.path(), &mut Head::default()).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        }
    }
}

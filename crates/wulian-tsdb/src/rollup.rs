//! Rollup files: for one time partition and one bucket width (1 minute or 1 hour), every
//! series' bucket summaries (count, sum, min, max, first and last point), computed from the
//! partition's merged points. Immutable; written next to the block files by a flush (for a
//! partition that had no file before), by compaction and by the rollup rebuild job, and kept
//! after raw retention drops the partition.
//!
//! ```text
//! [header 44 B]  magic b"WLNRUP", version u16, generation u64, partition start i64,
//!                partition end i64, bucket width i64, crc32 of the 40 bytes before it
//! [frame]*       [len u32][crc32 u32][payload]   one per series: [tenant str][device str]
//!                [key str] then the buckets, see `encode_buckets`
//! [index]        [len u32][crc32 u32][payload]   [n u32] then n fixed 28-byte entries sorted
//!                by key hash: [hash u64][offset u64][len u32][buckets u32][kind u8][0 u8 x3]
//! [trailer 16 B] index offset u64, crc32 of it u32, b"WRUP"
//! ```
//!
//! The index stays on disk. An open file keeps only where its entries start and how many there
//! are; a lookup binary-searches the fixed-size entries with positioned reads (served by the
//! page cache) and checks the series key stored at the head of the frame, so a hash collision
//! can never return another series' buckets. Memory per open rollup file is therefore constant,
//! whatever the number of series — rollups are kept for months or years, one file per day and
//! level, and an in-memory index per file would cost every series kilobytes.
//!
//! A series' payload is six columns, each `[len varint][chunk]` in the block chunk format
//! (`compress::encode_chunk`), all with one entry per bucket: (bucket start, count as i64),
//! (bucket start, sum), (bucket start, min), (bucket start, max), then the first and the last
//! point of each bucket in the series' own kind. Regular buckets cost about a bit per
//! timestamp, and decimal sensor values compress as well as the raw points.
//!
//! CRCs are checked as in block files: header, trailer and index at open, a frame whenever it
//! is read.

use std::io;
use std::path::Path;

use crate::block::BlockFile;
use crate::codec::{DecodeError, Reader, put_str, put_u32, put_u64};
use crate::compress::{
    ByteReader, decode_chunk, decode_values, encode_chunk, encode_values, kind_byte,
    kind_from_byte, put_varint,
};
use crate::error::Result;
use crate::framed::{self, Format, FramedWriter};
use crate::query::PartialBucket;
use crate::value::{Point, SeriesKey, Value, ValueKind};

pub(crate) const DIR: &str = "rollups";
const MAGIC: &[u8; 6] = b"WLNRUP";
/// Version 3: the block chunk format version 2, and the bucket starts stored once (the sum,
/// minimum and maximum columns hold values only). Version 2 files are still read.
const VERSION: u16 = 3;
/// Bytes of one index entry.
const ENTRY_LEN: usize = 28;
/// Longest frame head read to check a series key: three length-prefixed strings.
const MAX_KEY_HEAD: usize = 3 * (4 + 1024);
const HEADER_LEN: usize = 44;
const FORMAT: Format = Format {
    name: "rollup",
    magic: MAGIC,
    version: VERSION,
    min_version: 2,
    trailer_magic: b"WRUP",
    header_len: HEADER_LEN,
    // At least the index frame's head.
    min_body: 8,
    write_context: "write a rollup file",
    rename_context: "rename a rollup file into place",
    open_context: "open a rollup file",
    stat_context: "stat a rollup file",
};

/// `GGGGGGGGGGGG-<width ms>.rup`: a flush or compaction writes both levels of a partition
/// under one generation.
pub(crate) fn file_name(generation: u64, width: i64) -> String {
    format!("{generation:012}-{width}.rup")
}

/// Where one series' buckets are.
#[derive(Clone, Debug)]
pub(crate) struct RollupMeta {
    pub kind: ValueKind,
    pub buckets: u32,
    pub offset: u64,
    pub len: u32,
}

/// What a written rollup file holds.
pub(crate) struct RollupWritten {
    pub bytes: u64,
}

/// Writes a rollup file one series at a time (via `.tmp`, fsynced, renamed; the caller syncs
/// the directory). Dropped without `finish`, it removes its `.tmp` file.
pub(crate) struct RollupWriter {
    out: FramedWriter,
    /// (key hash, entry) of every series written.
    index: Vec<(u64, RollupMeta)>,
}

impl RollupWriter {
    pub(crate) fn create(
        dir: &Path,
        generation: u64,
        partition: (i64, i64),
        width: i64,
    ) -> Result<RollupWriter> {
        let path = dir.join(file_name(generation, width));
        let extra = width.to_le_bytes();
        Ok(RollupWriter {
            out: FramedWriter::create(path, 256 << 10, &FORMAT, generation, partition, &extra)?,
            index: Vec::new(),
        })
    }

    /// Appends one series' buckets (ascending; empty is skipped). Series must come in key
    /// order.
    pub(crate) fn add(
        &mut self,
        key: &SeriesKey,
        kind: ValueKind,
        buckets: &[PartialBucket],
    ) -> Result<()> {
        if buckets.is_empty() {
            return Ok(());
        }
        let offset = self.out.offset();
        let mut payload = Vec::new();
        put_str(&mut payload, &key.tenant);
        put_str(&mut payload, &key.device);
        put_str(&mut payload, &key.key);
        payload.extend_from_slice(&encode_buckets(kind, buckets));
        let len = self.out.write_frame(&payload)?;
        self.index.push((
            key_hash(key),
            RollupMeta {
                kind,
                buckets: u32::try_from(buckets.len())
                    .map_err(|_| self.out.error(io::Error::other("over 4 Gi rollup buckets")))?,
                offset,
                len,
            },
        ));
        Ok(())
    }

    /// Writes the index and trailer, fsyncs, renames into place.
    pub(crate) fn finish(mut self) -> Result<RollupWritten> {
        // Stable: series with equal hashes stay in key order (they were added in key order).
        self.index.sort_by_key(|(hash, _)| *hash);
        let mut payload = Vec::with_capacity(4 + self.index.len() * ENTRY_LEN);
        put_u32(&mut payload, self.index.len() as u32);
        for (hash, e) in &self.index {
            put_u64(&mut payload, *hash);
            put_u64(&mut payload, e.offset);
            put_u32(&mut payload, e.len);
            put_u32(&mut payload, e.buckets);
            payload.push(kind_byte(e.kind));
            payload.extend_from_slice(&[0; 3]);
        }
        Ok(RollupWritten {
            bytes: self.out.finish(&payload)?,
        })
    }
}

/// An open rollup file: where its on-disk index entries are (see the module doc).
#[derive(Debug)]
pub(crate) struct RollupFile {
    pub bf: BlockFile,
    pub width: i64,
    /// File offset of the first index entry.
    entries_at: u64,
    /// Number of index entries.
    entries: usize,
}

impl RollupFile {
    /// Opens a file and reads its index (header, trailer and index CRCs checked).
    pub(crate) fn open(path: &Path, generation: u64) -> Result<RollupFile> {
        let framed::Opened {
            bf,
            extra,
            index_at,
            trailer_at,
        } = framed::open(path, &FORMAT, generation)?;
        let width = Reader::new(&extra).i64().map_err(|e| bf.corrupt(0, e.0))?;
        let (start, end) = bf.partition;
        if width < 1 || start >= end {
            return Err(bf.corrupt(16, format!("partition [{start}, {end}), width {width}")));
        }
        // The whole index is read once here, for its CRC and its entries' sanity; afterwards
        // only single entries are read.
        let payload = bf.read_frame(index_at, (trailer_at - index_at) as usize)?;
        let entries = check_index(&payload, index_at)
            .map_err(|e| bf.corrupt(index_at, format!("index: {}", e.0)))?;
        Ok(RollupFile {
            bf,
            width,
            entries_at: index_at + 8 + 4,
            entries,
        })
    }

    /// The index entry of `key`, if the file holds it. A read failure is logged and answers
    /// `None` (the caller falls back to raw points where they exist).
    pub(crate) fn meta(&self, key: &SeriesKey) -> Option<RollupMeta> {
        match self.find(key) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(file = %self.bf.path.display(), error = %error, "Rollup index lookup failed.");
                None
            }
        }
    }

    fn entry(&self, i: usize) -> Result<(u64, RollupMeta)> {
        let at = self.entries_at + (i * ENTRY_LEN) as u64;
        let b = self.bf.read_at(at, ENTRY_LEN)?;
        self.parse_entry(&b, at)
    }

    fn parse_entry(&self, b: &[u8], at: u64) -> Result<(u64, RollupMeta)> {
        let word = |r: std::ops::Range<usize>| {
            b[r].iter()
                .rev()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
        };
        let kind = kind_from_byte(b[24])
            .ok_or_else(|| self.bf.corrupt(at, format!("kind byte {}", b[24])))?;
        Ok((
            word(0..8),
            RollupMeta {
                offset: word(8..16),
                len: word(16..20) as u32,
                buckets: word(20..24) as u32,
                kind,
            },
        ))
    }

    /// Every series the file holds, with its entry, in no particular order: the index read in
    /// one piece, then the key at the head of each frame. For carrying a partition's entries
    /// forward (`storage::CompactJob`); queries use [`RollupFile::meta`].
    pub(crate) fn series(&self) -> Result<Vec<(SeriesKey, RollupMeta)>> {
        let index = self.bf.read_at(self.entries_at, self.entries * ENTRY_LEN)?;
        let mut out = Vec::with_capacity(self.entries);
        for (i, b) in index.chunks_exact(ENTRY_LEN).enumerate() {
            let (_, meta) = self.parse_entry(b, self.entries_at + (i * ENTRY_LEN) as u64)?;
            let want = (meta.len as usize).saturating_sub(8).min(MAX_KEY_HEAD);
            let head = self.bf.read_at(meta.offset + 8, want)?;
            let mut r = Reader::new(&head);
            let (t, d, k) = (|| Ok::<_, DecodeError>((r.str()?, r.str()?, r.str()?)))()
                .map_err(|e| self.bf.corrupt(meta.offset, format!("rollup key: {}", e.0)))?;
            out.push((SeriesKey::new(t, d, k), meta));
        }
        Ok(out)
    }

    fn find(&self, key: &SeriesKey) -> Result<Option<RollupMeta>> {
        let hash = key_hash(key);
        // Lower bound of `hash` over the sorted entries.
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.0 < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for i in lo..self.entries {
            let (h, meta) = self.entry(i)?;
            if h != hash {
                break;
            }
            if self.frame_key_is(&meta, key)? {
                return Ok(Some(meta));
            }
        }
        Ok(None)
    }

    /// Whether the frame of `meta` belongs to `key` (the key heads the frame's payload). A head
    /// that does not parse, or names another series while the frame fails its CRC, counts as
    /// `key`'s: the read that follows then reports the damage with file and offset instead of
    /// the lookup silently missing.
    fn frame_key_is(&self, meta: &RollupMeta, key: &SeriesKey) -> Result<bool> {
        let want = (meta.len as usize).saturating_sub(8).min(MAX_KEY_HEAD);
        let head = self.bf.read_at(meta.offset + 8, want)?;
        let mut r = Reader::new(&head);
        match (|| Ok::<_, DecodeError>((r.str()?, r.str()?, r.str()?)))() {
            Ok((t, d, k)) if t == key.tenant && d == key.device && k == key.key => Ok(true),
            // Another series with the same hash — unless the frame is damaged.
            Ok(_) => Ok(self.bf.read_frame(meta.offset, meta.len as usize).is_err()),
            Err(_) => Ok(true),
        }
    }

    /// Reads and decodes one series' buckets (the frame's CRC checked).
    pub(crate) fn read(&self, meta: &RollupMeta) -> Result<Vec<PartialBucket>> {
        let payload = self.bf.read_frame(meta.offset, meta.len as usize)?;
        let mut r = Reader::new(&payload);
        (|| Ok::<_, DecodeError>((r.str()?, r.str()?, r.str()?)))()
            .map_err(|e| self.bf.corrupt(meta.offset, format!("rollup key: {}", e.0)))?;
        let consumed = payload.len() - r.remaining();
        let buckets = decode_buckets(&payload[consumed..], meta.kind, self.bf.version)
            .map_err(|e| self.bf.corrupt(meta.offset, format!("rollup: {}", e.0)))?;
        if buckets.len() != meta.buckets as usize {
            return Err(self.bf.corrupt(
                meta.offset,
                format!(
                    "rollup holds {} buckets, the index says {}",
                    buckets.len(),
                    meta.buckets
                ),
            ));
        }
        Ok(buckets)
    }
}

/// Checks an index payload: its count matches its length, entries are sorted by hash and
/// carry a known kind and a non-zero bucket count. Returns the number of entries.
fn check_index(payload: &[u8], index_at: u64) -> std::result::Result<usize, DecodeError> {
    let mut r = Reader::new(payload);
    let n = r.count(ENTRY_LEN)?;
    if payload.len() != 4 + n * ENTRY_LEN {
        return Err(DecodeError(format!(
            "{} bytes for {n} entries",
            payload.len()
        )));
    }
    let mut previous = 0u64;
    for i in 0..n {
        let (hash, offset, len, buckets, kind) = (r.u64()?, r.u64()?, r.u32()?, r.u32()?, r.u8()?);
        r.bytes(3)?;
        if hash < previous {
            return Err(DecodeError(format!("entry {i} is out of order")));
        }
        previous = hash;
        if kind_from_byte(kind).is_none() {
            return Err(DecodeError(format!("entry {i}: kind byte {kind}")));
        }
        if buckets == 0 || len < 8 || offset + u64::from(len) > index_at {
            return Err(DecodeError(format!(
                "entry {i}: {buckets} buckets, {len} bytes at {offset}"
            )));
        }
    }
    r.finish()?;
    Ok(n)
}

/// FNV-1a over the series key's parts (with separators): stable across builds and platforms,
/// as an on-disk format needs; collisions are resolved by the key stored in each frame.
fn key_hash(key: &SeriesKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        key.tenant.as_bytes(),
        b"\0",
        key.device.as_bytes(),
        b"\0",
        key.key.as_bytes(),
    ] {
        for byte in part {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// One series' buckets as six chunk columns (see the module doc).
pub(crate) fn encode_buckets(kind: ValueKind, buckets: &[PartialBucket]) -> Vec<u8> {
    let column = |f: &dyn Fn(&PartialBucket) -> Value| -> Vec<Point> {
        buckets
            .iter()
            .map(|b| Point {
                ts: b.ts,
                value: f(b),
            })
            .collect()
    };
    let cols: [(ValueKind, Vec<Point>); 6] = [
        (
            ValueKind::Integer,
            column(&|b| Value::I64(i64::try_from(b.count).unwrap_or(i64::MAX))),
        ),
        (ValueKind::Float, column(&|b| Value::F64(b.sum))),
        (ValueKind::Float, column(&|b| Value::F64(b.min))),
        (ValueKind::Float, column(&|b| Value::F64(b.max))),
        (kind, buckets.iter().map(|b| b.first.clone()).collect()),
        (kind, buckets.iter().map(|b| b.last.clone()).collect()),
    ];
    let mut out = Vec::new();
    for (i, (k, points)) in cols.iter().enumerate() {
        // The sum, minimum and maximum share the counts' timestamps: values only.
        let column = if (1..=3).contains(&i) {
            let mut v = Vec::new();
            encode_values(&mut v, *k, points);
            v
        } else {
            encode_chunk(*k, points)
        };
        put_varint(&mut out, column.len() as u64);
        out.extend_from_slice(&column);
    }
    out
}

/// Decodes a series' buckets from a rollup file of format `version` (2 or 3).
pub(crate) fn decode_buckets(
    payload: &[u8],
    kind: ValueKind,
    version: u16,
) -> std::result::Result<Vec<PartialBucket>, DecodeError> {
    let chunk_version = if version >= 3 { 2 } else { 1 };
    let mut r = ByteReader::new(payload);
    let mut column = |k: ValueKind| -> std::result::Result<Vec<Point>, DecodeError> {
        let len = usize::try_from(r.varint()?)
            .map_err(|_| DecodeError::new("column length overflows"))?;
        decode_chunk(r.bytes(len)?, k, chunk_version)
    };
    let counts = column(ValueKind::Integer)?;
    let (sums, mins, maxs) = if version >= 3 {
        let mut values_only = || -> std::result::Result<Vec<Point>, DecodeError> {
            let len = usize::try_from(r.varint()?)
                .map_err(|_| DecodeError::new("column length overflows"))?;
            let bytes = r.bytes(len)?;
            let mut v = Vec::with_capacity(counts.len());
            let used = decode_values(bytes, ValueKind::Float, counts.len(), false, &mut v)?;
            if used != len {
                return Err(DecodeError::new("trailing bytes in a rollup column"));
            }
            Ok(counts
                .iter()
                .zip(v)
                .map(|(c, value)| Point { ts: c.ts, value })
                .collect())
        };
        (values_only()?, values_only()?, values_only()?)
    } else {
        (
            column(ValueKind::Float)?,
            column(ValueKind::Float)?,
            column(ValueKind::Float)?,
        )
    };
    let mut column = |k: ValueKind| -> std::result::Result<Vec<Point>, DecodeError> {
        let len = usize::try_from(r.varint()?)
            .map_err(|_| DecodeError::new("column length overflows"))?;
        decode_chunk(r.bytes(len)?, k, chunk_version)
    };
    let firsts = column(kind)?;
    let lasts = column(kind)?;
    if r.remaining() != 0 {
        return Err(DecodeError::new("trailing bytes after the columns"));
    }
    let n = counts.len();
    if [&sums, &mins, &maxs, &firsts, &lasts]
        .iter()
        .any(|c| c.len() != n)
    {
        return Err(DecodeError::new("columns of different lengths"));
    }
    let float = |p: &Point| match p.value {
        Value::F64(v) => Ok(v),
        _ => Err(DecodeError::new("a float column holds another kind")),
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ts = counts[i].ts;
        if sums[i].ts != ts || mins[i].ts != ts || maxs[i].ts != ts {
            return Err(DecodeError::new("bucket timestamps differ between columns"));
        }
        let count = match counts[i].value {
            Value::I64(c) if c > 0 => c as u64,
            _ => return Err(DecodeError::new("bucket count is not positive")),
        };
        out.push(PartialBucket {
            ts,
            count,
            sum: float(&sums[i])?,
            min: float(&mins[i])?,
            max: float(&maxs[i])?,
            first: firsts[i].clone(),
            last: lasts[i].clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::query::{DEFAULT_WIDTHS, level_partials};
    use std::fs;

    #[test]
    fn buckets_round_trip_bit_for_bit() {
        let points: Vec<Point> = (0..5000)
            .map(|i| Point {
                ts: i * 7_001,
                value: Value::F64(if i % 97 == 0 {
                    f64::from_bits(0x7fef_ffff_ffff_fff0 - i as u64)
                } else {
                    (i % 300) as f64 / 100.0 - 1.0
                }),
            })
            .collect();
        for level in 0..2 {
            let b = level_partials(&points, level, DEFAULT_WIDTHS);
            let back = decode_buckets(
                &encode_buckets(ValueKind::Float, &b),
                ValueKind::Float,
                VERSION,
            )
            .unwrap();
            assert_eq!(b.len(), back.len());
            for (x, y) in b.iter().zip(&back) {
                assert_eq!(x.sum.to_bits(), y.sum.to_bits());
                assert_eq!(
                    (x.ts, x.count, x.first.clone()),
                    (y.ts, y.count, y.first.clone())
                );
                assert_eq!(
                    (x.min, x.max, x.last.clone()),
                    (y.min, y.max, y.last.clone())
                );
            }
        }
        // Strings: no numbers, so infinite min/max and a zero sum round-trip too.
        let s = vec![Point {
            ts: 3,
            value: Value::Str("run".into()),
        }];
        let b = level_partials(&s, 0, DEFAULT_WIDTHS);
        let back = decode_buckets(
            &encode_buckets(ValueKind::String, &b),
            ValueKind::String,
            VERSION,
        )
        .unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn the_on_disk_index_finds_every_series_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys: Vec<SeriesKey> = (0..700)
            .map(|i| {
                SeriesKey::new(
                    "t",
                    format!("dev-{i:04}"),
                    if i % 2 == 0 { "temp" } else { "rh" },
                )
            })
            .collect();
        keys.sort();
        let mut w = RollupWriter::create(dir.path(), 9, (0, 86_400_000), 3_600_000).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let points = vec![Point {
                ts: 1_000,
                value: Value::I64(i as i64),
            }];
            w.add(
                k,
                ValueKind::Integer,
                &level_partials(&points, 1, DEFAULT_WIDTHS),
            )
            .unwrap();
        }
        w.finish().unwrap();
        let f = RollupFile::open(&dir.path().join(file_name(9, 3_600_000)), 9).unwrap();
        assert_eq!(f.entries, 700);
        for (i, k) in keys.iter().enumerate() {
            let meta = f.meta(k).unwrap_or_else(|| panic!("{k} not found"));
            let buckets = f.read(&meta).unwrap();
            assert_eq!(buckets[0].first.value, Value::I64(i as i64), "{k}");
        }
        assert!(f.meta(&SeriesKey::new("t", "dev-9999", "temp")).is_none());
        // Listing (for carrying entries forward) finds them all, with readable entries.
        let mut listed = f.series().unwrap();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            listed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            keys
        );
        assert_eq!(f.read(&listed[3].1).unwrap()[0].first.value, Value::I64(3));
        assert!(f.meta(&SeriesKey::new("u", "dev-0001", "rh")).is_none());
    }

    #[test]
    fn write_open_read_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        let k = SeriesKey::new("t", "d", "x");
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
                ts: i * 10_000,
                value: Value::I64(i),
            })
            .collect();
        let b = level_partials(&points, 0, DEFAULT_WIDTHS);
        let mut w = RollupWriter::create(dir.path(), 4, (0, 86_400_000), 60_000).unwrap();
        w.add(&k, ValueKind::Integer, &b).unwrap();
        w.finish().unwrap();
        let path = dir.path().join(file_name(4, 60_000));
        let f = RollupFile::open(&path, 4).unwrap();
        assert_eq!(f.width, 60_000);
        let meta = f.meta(&k).unwrap();
        assert_eq!(f.read(&meta).unwrap(), b);
        assert!(f.meta(&SeriesKey::new("t", "d", "y")).is_none());
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + 12] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let f = RollupFile::open(&path, 4).unwrap();
        assert!(matches!(
            f.read(&meta),
            Err(Error::Corrupt { offset: 44, .. })
        ));
        assert!(matches!(
            RollupFile::open(&path, 5),
            Err(Error::Corrupt { .. })
        ));
    }
}

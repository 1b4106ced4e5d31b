//! Immutable block files: one file holds, for one time partition, one compressed chunk per
//! series, plus an index.
//!
//! ```text
//! [header 36 B]  magic b"WLNBLK", version u16, generation u64, partition start i64,
//!                partition end i64, crc32 of the 32 bytes before it
//! [chunk]*       [len u32][crc32 u32][payload]   payload = compress::encode_chunk (version 2:
//!                segments with time bounds; version 1 files are still read)
//! [index]        [len u32][crc32 u32][payload]   payload = [n u32] then per series:
//!                [tenant str][device str][key str][kind u8][count u32][min ts i64]
//!                [max ts i64][offset u64][len u32][last value]
//! [trailer 16 B] index offset u64, crc32 of it u32, b"WIDX"
//! ```
//!
//! Every CRC is checked before the bytes behind it are decoded: the header and the index when
//! the file is opened, a chunk each time a query reads it. A mismatch is [`Error::Corrupt`]
//! naming the file and the byte offset of the frame.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{self, DecodeError, Reader, put_i64, put_str, put_u32, put_u64};
use crate::compress::{self, kind_byte, kind_from_byte};
use crate::error::{Error, Result};
use crate::framed::{self, Format, FramedWriter};
use crate::value::{Point, SeriesKey, Value, ValueKind};

pub(crate) const MAGIC: &[u8; 6] = b"WLNBLK";
/// Version 2: chunks in segments with their time bounds, timestamps and integers in the
/// classes code, decimals as classes-coded scaled integers. Version 1 files are still read.
pub(crate) const VERSION: u16 = 2;
pub(crate) const HEADER_LEN: usize = 36;
const FORMAT: Format = Format {
    name: "block",
    magic: MAGIC,
    version: VERSION,
    min_version: 1,
    trailer_magic: b"WIDX",
    header_len: HEADER_LEN,
    min_body: 0,
    write_context: "write a block file",
    rename_context: "rename a block file into place",
    open_context: "open a block file",
    stat_context: "stat a block file",
};
/// A frame longer than this is damage.
const MAX_FRAME: usize = 1 << 30;

pub(crate) fn file_name(generation: u64) -> String {
    format!("{generation:012}.blk")
}

/// Where one series' chunk is, as the index says.
#[derive(Clone, Debug)]
pub(crate) struct ChunkMeta {
    pub offset: u64,
    pub len: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// One index entry with its key, as read from disk.
#[derive(Clone, Debug)]
pub(crate) struct IndexEntry {
    pub key: SeriesKey,
    pub kind: ValueKind,
    pub meta: ChunkMeta,
    pub last: Value,
}

/// One index entry as read from disk, its names borrowed from the index payload (a store
/// opening 100,000 devices' files would otherwise allocate three strings per entry only to
/// drop them, and leave the heap fragmented).
#[derive(Clone, Debug)]
pub(crate) struct IndexRef<'a> {
    pub tenant: &'a str,
    pub device: &'a str,
    pub key: &'a str,
    pub kind: ValueKind,
    pub meta: ChunkMeta,
    pub last: Value,
}

/// A block file's index payload; [`Index::entries`] borrows from it.
pub(crate) struct Index {
    payload: Vec<u8>,
}

impl Index {
    pub(crate) fn entries(&self) -> std::result::Result<Vec<IndexRef<'_>>, DecodeError> {
        decode_index(&self.payload)
    }
}

/// One series to write.
pub(crate) struct SeriesData<'a> {
    pub key: &'a SeriesKey,
    pub kind: ValueKind,
    /// Ascending, unique timestamps, non-empty.
    pub points: &'a [Point],
}

/// What a written file holds.
#[derive(Clone, Debug)]
pub(crate) struct Written {
    pub bytes: u64,
    pub points: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Writes a block file (via `.tmp`, fsynced, renamed; the caller syncs the directory).
#[cfg(test)]
pub(crate) fn write(
    dir: &Path,
    generation: u64,
    partition: (i64, i64),
    series: &[SeriesData<'_>],
) -> Result<Written> {
    let mut w = BlockWriter::create(dir, generation, partition)?;
    for s in series {
        w.add(s)?;
    }
    w.finish()
}

/// Writes a block file one series at a time, so that compaction never holds a whole
/// partition decoded in memory. Dropped without `finish`, it removes its `.tmp` file.
pub(crate) struct BlockWriter {
    out: FramedWriter,
    index: Vec<IndexEntry>,
    points: u64,
    min_ts: i64,
    max_ts: i64,
}

impl BlockWriter {
    pub(crate) fn create(
        dir: &Path,
        generation: u64,
        partition: (i64, i64),
    ) -> Result<BlockWriter> {
        let path = dir.join(file_name(generation));
        let out = FramedWriter::create(path, 1 << 20, &FORMAT, generation, partition, &[])?;
        Ok(BlockWriter {
            out,
            index: Vec::new(),
            points: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        })
    }

    /// Appends one series' chunk (points ascending, unique; empty is skipped). Series must come
    /// in key order. Returns the chunk's place, if one was written.
    pub(crate) fn add(&mut self, s: &SeriesData<'_>) -> Result<Option<ChunkMeta>> {
        let (Some(first), Some(last)) = (s.points.first(), s.points.last()) else {
            return Ok(None);
        };
        let offset = self.out.offset();
        let payload = compress::encode_chunk(s.kind, s.points);
        let len = self.out.write_frame(&payload)?;
        let meta = ChunkMeta {
            offset,
            len,
            count: u32::try_from(s.points.len())
                .map_err(|_| self.out.error(io::Error::other("chunk over 4 Gi points")))?,
            min_ts: first.ts,
            max_ts: last.ts,
        };
        self.index.push(IndexEntry {
            key: s.key.clone(),
            kind: s.kind,
            meta: meta.clone(),
            last: last.value.clone(),
        });
        self.points += s.points.len() as u64;
        self.min_ts = self.min_ts.min(first.ts);
        self.max_ts = self.max_ts.max(last.ts);
        Ok(Some(meta))
    }

    /// Writes the index and trailer, fsyncs, renames into place.
    pub(crate) fn finish(self) -> Result<Written> {
        let mut payload = Vec::new();
        put_u32(&mut payload, self.index.len() as u32);
        for e in &self.index {
            put_str(&mut payload, &e.key.tenant);
            put_str(&mut payload, &e.key.device);
            put_str(&mut payload, &e.key.key);
            payload.push(kind_byte(e.kind));
            put_u32(&mut payload, e.meta.count);
            put_i64(&mut payload, e.meta.min_ts);
            put_i64(&mut payload, e.meta.max_ts);
            put_u64(&mut payload, e.meta.offset);
            put_u32(&mut payload, e.meta.len);
            codec::put_value(&mut payload, &e.last);
        }
        let bytes = self.out.finish(&payload)?;
        Ok(Written {
            bytes,
            points: self.points,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        })
    }
}

/// An open block file.
#[derive(Debug)]
pub(crate) struct BlockFile {
    pub path: PathBuf,
    pub file: File,
    /// `[start, end)` as the header says.
    pub partition: (i64, i64),
    /// The file's format version, as its header says (chunks are decoded accordingly).
    pub version: u16,
}

impl BlockFile {
    pub(crate) fn corrupt(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            file: self.path.clone(),
            offset,
            reason: reason.into(),
        }
    }

    /// Opens a file and reads its index (header, trailer and index CRCs checked, every entry
    /// decoded once to check it).
    pub(crate) fn open(path: &Path, generation: u64) -> Result<(BlockFile, Index)> {
        let framed::Opened {
            bf,
            index_at,
            trailer_at,
            ..
        } = framed::open(path, &FORMAT, generation)?;
        let payload = bf.read_frame(index_at, (trailer_at - index_at) as usize)?;
        decode_index(&payload).map_err(|e| bf.corrupt(index_at, format!("index: {}", e.0)))?;
        Ok((bf, Index { payload }))
    }

    pub(crate) fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        match self.file.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt(offset, "file ends early"))
            }
            Err(source) => Err(Error::Io {
                context: "read a block file",
                source,
            }),
        }
    }

    /// Reads the frame at `offset` whose total length (with the 8-byte frame header) must be
    /// `total`; checks the CRC and returns the payload.
    pub(crate) fn read_frame(&self, offset: u64, total: usize) -> Result<Vec<u8>> {
        if !(8..=MAX_FRAME).contains(&total) {
            return Err(self.corrupt(offset, format!("frame length {total}")));
        }
        let buf = self.read_at(offset, total)?;
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
        if len != total - 8 {
            return Err(self.corrupt(
                offset,
                format!("frame says {len} bytes, expected {}", total - 8),
            ));
        }
        if crc32fast::hash(&buf[8..]) != crc {
            return Err(self.corrupt(offset, "block checksum mismatch"));
        }
        Ok(buf[8..].to_vec())
    }

    /// Reads and decodes one chunk.
    pub(crate) fn read_chunk(&self, meta: &ChunkMeta, kind: ValueKind) -> Result<Vec<Point>> {
        self.read_chunk_range(meta, kind, i64::MIN, i64::MAX)
    }

    /// Reads one chunk and decodes its points with `from <= ts < to` (in version 2 files,
    /// only the segments that overlap the window are decoded).
    pub(crate) fn read_chunk_range(
        &self,
        meta: &ChunkMeta,
        kind: ValueKind,
        from: i64,
        to: i64,
    ) -> Result<Vec<Point>> {
        let payload = self.read_frame(meta.offset, meta.len as usize)?;
        let (points, total) = compress::decode_chunk_range(&payload, kind, self.version, from, to)
            .map_err(|e| self.corrupt(meta.offset, format!("chunk: {}", e.0)))?;
        if total != meta.count as usize {
            return Err(self.corrupt(
                meta.offset,
                format!("chunk holds {total} points, the index says {}", meta.count),
            ));
        }
        Ok(points)
    }
}

fn decode_index(payload: &[u8]) -> std::result::Result<Vec<IndexRef<'_>>, DecodeError> {
    let mut r = Reader::new(payload);
    let n = r.count(12 + 1 + 4 + 8 + 8 + 8 + 4 + 2)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (tenant, device, key) = (r.str()?, r.str()?, r.str()?);
        let kb = r.u8()?;
        let kind = kind_from_byte(kb).ok_or_else(|| DecodeError(format!("kind byte {kb}")))?;
        let count = r.u32()?;
        let min_ts = r.i64()?;
        let max_ts = r.i64()?;
        let offset = r.u64()?;
        let len = r.u32()?;
        let last = r.value()?;
        if last.kind() != kind || count == 0 || min_ts > max_ts {
            return Err(DecodeError(format!(
                "entry for {tenant}/{device}/{key} is inconsistent"
            )));
        }
        out.push(IndexRef {
            tenant,
            device,
            key,
            kind,
            meta: ChunkMeta {
                offset,
                len,
                count,
                min_ts,
                max_ts,
            },
            last,
        });
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framed::TRAILER_LEN;
    use std::fs;

    #[test]
    fn write_open_read_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = SeriesKey::new("t", "d", "a");
        let k2 = SeriesKey::new("t", "d", "b");
        let p1: Vec<Point> = (0..1000)
            .map(|i| Point {
                ts: i * 1000,
                value: Value::F64(i as f64 / 4.0),
            })
            .collect();
        let p2 = vec![Point {
            ts: 5,
            value: Value::Str("x".into()),
        }];
        let w = write(
            dir.path(),
            7,
            (0, 86_400_000),
            &[
                SeriesData {
                    key: &k1,
                    kind: ValueKind::Float,
                    points: &p1,
                },
                SeriesData {
                    key: &k2,
                    kind: ValueKind::String,
                    points: &p2,
                },
            ],
        )
        .unwrap();
        assert_eq!(w.points, 1001);
        let path = dir.path().join(file_name(7));
        let (bf, index) = BlockFile::open(&path, 7).unwrap();
        let index = index.entries().unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(bf.read_chunk(&index[0].meta, ValueKind::Float).unwrap(), p1);
        assert_eq!(
            bf.read_chunk(&index[1].meta, ValueKind::String).unwrap(),
            p2
        );
        assert_eq!(index[0].last, Value::F64(999.0 / 4.0));

        // A flipped byte inside the first chunk: Corrupt, naming file and chunk offset.
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + 20] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let (bf, index) = BlockFile::open(&path, 7).unwrap();
        let index = index.entries().unwrap();
        match bf.read_chunk(&index[0].meta, ValueKind::Float) {
            Err(Error::Corrupt { file, offset, .. }) => {
                assert_eq!(file, path);
                assert_eq!(offset, HEADER_LEN as u64);
            }
            other => panic!("{other:?}"),
        }
        // A flipped byte in the index: refused at open.
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - TRAILER_LEN - 3;
        bytes[at] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            BlockFile::open(&path, 7),
            Err(Error::Corrupt { .. })
        ));
    }
}

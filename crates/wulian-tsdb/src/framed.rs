//! The layout block files and rollup files share: a header (a 6-byte magic, format version
//! u16, generation u64, partition start i64 and end i64, the format's own fields, a CRC of all
//! before it), length + CRC framed records, an index frame, and a 16-byte trailer — index offset
//! u64, its CRC u32, a 4-byte magic. Written through `.tmp`, fsynced, renamed into place (the
//! caller syncs the directory); opened with the header, trailer and index offset checked.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::block::BlockFile;
use crate::codec::{DecodeError, Reader, put_i64, put_u16, put_u32, put_u64};
use crate::error::{Error, Result};

pub(crate) const TRAILER_LEN: usize = 16;
/// Where the common header fields end: magic, version, generation, partition start and end.
const COMMON_END: usize = 6 + 2 + 8 + 8 + 8;

/// One kind of framed file.
pub(crate) struct Format {
    /// "block" or "rollup", for error messages.
    pub name: &'static str,
    pub magic: &'static [u8; 6],
    pub version: u16,
    /// The oldest version still read (files are always written at `version`).
    pub min_version: u16,
    pub trailer_magic: &'static [u8; 4],
    /// Header length, its CRC included.
    pub header_len: usize,
    /// Bytes a valid file has at least beyond its header and trailer.
    pub min_body: usize,
    /// `Error::Io` contexts.
    pub write_context: &'static str,
    pub rename_context: &'static str,
    pub open_context: &'static str,
    pub stat_context: &'static str,
}

/// Writes one framed file; dropped without `finish`, it removes its `.tmp` file.
pub(crate) struct FramedWriter {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    offset: u64,
    format: &'static Format,
}

impl FramedWriter {
    /// Creates `path` + `.tmp` and writes the header: the magic, the common fields, `extra`
    /// (the format's own fields), their CRC.
    pub(crate) fn create(
        path: PathBuf,
        buffer: usize,
        format: &'static Format,
        generation: u64,
        partition: (i64, i64),
        extra: &[u8],
    ) -> Result<FramedWriter> {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let error = |source| Error::Io {
            context: format.write_context,
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(error)?;
        let mut w = FramedWriter {
            out: Some(BufWriter::with_capacity(buffer, file)),
            tmp,
            path,
            offset: 0,
            format,
        };
        let mut header = Vec::with_capacity(format.header_len);
        header.extend_from_slice(format.magic);
        put_u16(&mut header, format.version);
        put_u64(&mut header, generation);
        put_i64(&mut header, partition.0);
        put_i64(&mut header, partition.1);
        header.extend_from_slice(extra);
        let crc = crc32fast::hash(&header);
        put_u32(&mut header, crc);
        debug_assert_eq!(header.len(), format.header_len);
        w.write(&header)?;
        Ok(w)
    }

    pub(crate) fn error(&self, source: io::Error) -> Error {
        Error::Io {
            context: self.format.write_context,
            source,
        }
    }

    /// Bytes written so far: where the next frame starts.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let context = self.format.write_context;
        let error = |source| Error::Io { context, source };
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| error(io::Error::other("writer already finished")))?;
        out.write_all(bytes).map_err(error)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends `[len u32][crc32 u32][payload]`; returns the frame's length, head included.
    pub(crate) fn write_frame(&mut self, payload: &[u8]) -> Result<u32> {
        let len = u32::try_from(payload.len() + 8)
            .map_err(|_| self.error(io::Error::other("frame over 4 GiB")))?;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&(len - 8).to_le_bytes());
        head[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.write(&head)?;
        self.write(payload)?;
        Ok(len)
    }

    /// Writes `index` as the index frame and the trailer, fsyncs, renames into place; returns
    /// the file's length.
    pub(crate) fn finish(mut self, index: &[u8]) -> Result<u64> {
        let index_offset = self.offset;
        self.write_frame(index)?;
        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        put_u64(&mut trailer, index_offset);
        let crc = crc32fast::hash(&trailer);
        put_u32(&mut trailer, crc);
        trailer.extend_from_slice(self.format.trailer_magic);
        self.write(&trailer)?;
        let out = self
            .out
            .take()
            .ok_or_else(|| self.error(io::Error::other("writer already finished")))?;
        let file = out.into_inner().map_err(|e| self.error(e.into_error()))?;
        file.sync_all().map_err(|e| self.error(e))?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(Error::io(self.format.rename_context))?;
        Ok(self.offset)
    }
}

impl Drop for FramedWriter {
    fn drop(&mut self) {
        if self.out.take().is_some()
            && let Err(e) = fs::remove_file(&self.tmp)
        {
            tracing::debug!(file = %self.tmp.display(), error = %e, "Removing an unfinished file failed.");
        }
    }
}

/// An opened framed file whose header and trailer checked out.
pub(crate) struct Opened {
    /// With `partition` as the header says.
    pub bf: BlockFile,
    /// The format's own header fields: after the common ones, before the CRC.
    pub extra: Vec<u8>,
    /// Where the index frame starts and where the trailer starts.
    pub index_at: u64,
    pub trailer_at: u64,
}

/// Opens `path` and checks its length, magic, header CRC, version, generation (against the
/// one in its name), trailer and index offset. The caller parses `extra` and reads the index
/// frame.
pub(crate) fn open(path: &std::path::Path, format: &Format, generation: u64) -> Result<Opened> {
    let file = File::open(path).map_err(Error::io(format.open_context))?;
    let size = file
        .metadata()
        .map_err(Error::io(format.stat_context))?
        .len();
    let mut bf = BlockFile {
        path: path.to_path_buf(),
        file,
        partition: (0, 0),
        version: format.version,
    };
    let header_len = format.header_len;
    if size < (header_len + TRAILER_LEN + format.min_body) as u64 {
        return Err(bf.corrupt(
            0,
            format!("{size} bytes is too short for a {} file", format.name),
        ));
    }
    let header = bf.read_at(0, header_len)?;
    if &header[..6] != format.magic {
        return Err(bf.corrupt(0, format!("not a {} file (bad magic)", format.name)));
    }
    let crc_at = header_len - 4;
    if crc32fast::hash(&header[..crc_at])
        != u32::from_le_bytes(header[crc_at..].try_into().unwrap_or_default())
    {
        return Err(bf.corrupt(0, "header checksum mismatch"));
    }
    let mut r = Reader::new(&header[6..COMMON_END]);
    let (version, stored_gen, start, end) =
        (|| Ok::<_, DecodeError>((r.u16()?, r.u64()?, r.i64()?, r.i64()?)))()
            .map_err(|e| bf.corrupt(0, e.0))?;
    if !(format.min_version..=format.version).contains(&version) {
        return Err(bf.corrupt(
            6,
            format!("unsupported {} format version {version}", format.name),
        ));
    }
    if stored_gen != generation {
        return Err(bf.corrupt(
            8,
            format!("header says generation {stored_gen}, the name says {generation}"),
        ));
    }
    bf.partition = (start, end);
    bf.version = version;
    let trailer_at = size - TRAILER_LEN as u64;
    let trailer = bf.read_at(trailer_at, TRAILER_LEN)?;
    if &trailer[12..16] != format.trailer_magic
        || crc32fast::hash(&trailer[..8])
            != u32::from_le_bytes(trailer[8..12].try_into().unwrap_or_default())
    {
        return Err(bf.corrupt(trailer_at, "bad trailer"));
    }
    let index_at = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
    if index_at < header_len as u64 || index_at + 8 > trailer_at {
        return Err(bf.corrupt(trailer_at, format!("index offset {index_at}")));
    }
    Ok(Opened {
        extra: header[COMMON_END..crc_at].to_vec(),
        bf,
        index_at,
        trailer_at,
    })
}

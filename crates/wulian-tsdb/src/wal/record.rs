//! WAL records: framing and payload encoding.
//!
//! Frame: `[len u32 LE][crc32 u32 LE][payload; len]`, the CRC (crc32fast, IEEE) covering the
//! payload. The CRC is checked before anything is decoded. A zero length is invalid (every
//! payload has a type byte), which also makes a zero-filled tail read as damage rather than
//! as an empty record whose CRC happens to be 0.
//!
//! Payload, first byte = type:
//! - `1` write batch: `[n_series u32]` then per series `[tenant str][device str][key str]`,
//!   then `[n_points u32]` and per point `[series index u32][ts i64][value]`. One record per
//!   `write()` call, so a call is all-or-nothing on disk too.
//! - `2` device tombstone: `[tenant str][device str]`.
//!
//! Strings are `[len u32][utf-8]`, values `[tag u8][data]` (see `codec`).

use std::collections::HashMap;

use crate::codec::{
    DecodeError, DecodeResult, Reader, put_i64, put_str, put_u8, put_u32, put_value,
};
use crate::value::{SeriesKey, WriteEntry};

/// Bytes of `[len][crc]` in front of every payload.
pub(crate) const FRAME_HEADER: usize = 8;
/// Largest payload one record may carry; bigger lengths on disk are damage.
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

const TYPE_WRITE: u8 = 1;
const TYPE_DELETE_DEVICE: u8 = 2;

/// A decoded record.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    Write(Vec<WriteEntry>),
    DeleteDevice { tenant: String, device: String },
}

/// Appends one framed write-batch record to `buf`. Returns the payload size.
pub(crate) fn encode_write(buf: &mut Vec<u8>, entries: &[WriteEntry]) -> usize {
    let start = begin_frame(buf);
    put_u8(buf, TYPE_WRITE);
    // Series ids: a device is hashed once per run of its entries, and its keys are found in
    // a short list, trying first the one after the previous key's (devices repeat their key
    // order row after row). Hashing every entry's three names cost more than the rest of the
    // encoding.
    let mut devices: HashMap<(&str, &str), DeviceKeys<'_>> = HashMap::new();
    let mut order: Vec<&SeriesKey> = Vec::new();
    let mut ids: Vec<u32> = Vec::with_capacity(entries.len());
    let mut start_of_run = 0;
    while start_of_run < entries.len() {
        let first = &entries[start_of_run].series;
        let end = entries[start_of_run..]
            .iter()
            .position(|e| e.series.device != first.device || e.series.tenant != first.tenant)
            .map_or(entries.len(), |n| start_of_run + n);
        let keys = devices
            .entry((first.tenant.as_str(), first.device.as_str()))
            .or_default();
        keys.prev = None;
        for e in &entries[start_of_run..end] {
            let id = keys.id(&e.series.key).unwrap_or_else(|| {
                order.push(&e.series);
                // At most one series per entry, and entries per call are far below u32::MAX
                // (the record size cap sees to that).
                let id = u32::try_from(order.len() - 1).unwrap_or(u32::MAX);
                keys.add(&e.series.key, id);
                id
            });
            ids.push(id);
        }
        start_of_run = end;
    }
    put_u32(buf, u32::try_from(order.len()).unwrap_or(u32::MAX));
    for s in &order {
        put_str(buf, &s.tenant);
        put_str(buf, &s.device);
        put_str(buf, &s.key);
    }
    put_u32(buf, u32::try_from(entries.len()).unwrap_or(u32::MAX));
    for (e, id) in entries.iter().zip(ids) {
        put_u32(buf, id);
        put_i64(buf, e.ts);
        put_value(buf, &e.value);
    }
    end_frame(buf, start)
}

/// One device's keys in a write record being encoded: a list in first-seen order (a hash map
/// beyond [`DeviceKeys::LIST_MAX`] keys) and the slot of the previous key of the run.
#[derive(Default)]
struct DeviceKeys<'a> {
    list: Vec<(&'a str, u32)>,
    map: HashMap<&'a str, u32>,
    prev: Option<usize>,
}

impl<'a> DeviceKeys<'a> {
    const LIST_MAX: usize = 32;

    fn id(&mut self, key: &str) -> Option<u32> {
        if !self.map.is_empty() {
            return self.map.get(key).copied();
        }
        let guess = self.prev.map_or(0, |p| p + 1);
        let n = self.list.len();
        // From the guess around the list: usually the first comparison matches.
        let slot = (0..n)
            .map(|i| (guess + i) % n)
            .find(|&i| self.list[i].0 == key)?;
        self.prev = Some(slot);
        Some(self.list[slot].1)
    }

    fn add(&mut self, key: &'a str, id: u32) {
        if !self.map.is_empty() {
            self.map.insert(key, id);
            return;
        }
        self.list.push((key, id));
        self.prev = Some(self.list.len() - 1);
        if self.list.len() > Self::LIST_MAX {
            self.map = self.list.iter().copied().collect();
        }
    }
}

/// Appends one framed device-tombstone record to `buf`. Returns the payload size.
pub(crate) fn encode_delete_device(buf: &mut Vec<u8>, tenant: &str, device: &str) -> usize {
    let start = begin_frame(buf);
    put_u8(buf, TYPE_DELETE_DEVICE);
    put_str(buf, tenant);
    put_str(buf, device);
    end_frame(buf, start)
}

fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    start
}

/// Fills in `[len][crc]` for the payload written since `start`. A payload over u32::MAX gets a
/// length the reader refuses; the writer checks [`MAX_PAYLOAD`] before it logs anything.
fn end_frame(buf: &mut [u8], start: usize) -> usize {
    let payload_len = buf.len() - start - FRAME_HEADER;
    let crc = crc32fast::hash(&buf[start + FRAME_HEADER..]);
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    payload_len
}

/// What is at an offset of a segment's bytes.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A record whose CRC matches; the next frame starts at `next`.
    Valid { payload: &'a [u8], next: usize },
    /// Nothing left.
    End,
    /// Damage: a short header, an impossible length, a record running past the end, or a CRC
    /// mismatch. `complete` says whether the frame's claimed extent lies within the buffer
    /// (only a complete frame with a bad CRC can be followed by further records).
    Invalid {
        reason: String,
        complete: bool,
        next: usize,
    },
}

pub(crate) fn read_frame(buf: &[u8], offset: usize) -> Frame<'_> {
    let rest = &buf[offset.min(buf.len())..];
    if rest.is_empty() {
        return Frame::End;
    }
    let invalid = |reason: String| Frame::Invalid {
        reason,
        complete: false,
        next: buf.len(),
    };
    if rest.len() < FRAME_HEADER {
        return invalid(format!(
            "{} bytes left, a record header needs {FRAME_HEADER}",
            rest.len()
        ));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 {
        return invalid("record length is 0".to_string());
    }
    if len > MAX_PAYLOAD {
        return invalid(format!(
            "record length {len} exceeds the maximum {MAX_PAYLOAD}"
        ));
    }
    if len > rest.len() - FRAME_HEADER {
        return invalid(format!(
            "record of {len} bytes runs past the end of the file ({} bytes left)",
            rest.len() - FRAME_HEADER
        ));
    }
    let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
    let next = offset + FRAME_HEADER + len;
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Frame::Invalid {
            reason: format!("checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"),
            complete: true,
            next,
        };
    }
    Frame::Valid { payload, next }
}

/// Decodes a payload whose CRC has been checked.
pub(crate) fn decode(payload: &[u8]) -> DecodeResult<Record> {
    let mut r = Reader::new(payload);
    let record = match r.u8()? {
        TYPE_WRITE => {
            // A series entry is at least three empty strings; a point at least id+ts+bool.
            let n_series = r.count(12)?;
            let mut series = Vec::with_capacity(n_series);
            for _ in 0..n_series {
                series.push(SeriesKey {
                    tenant: r.str()?.to_string(),
                    device: r.str()?.to_string(),
                    key: r.str()?.to_string(),
                });
            }
            let n_points = r.count(14)?;
            let mut entries = Vec::with_capacity(n_points);
            for _ in 0..n_points {
                let id = r.u32()? as usize;
                let series = series
                    .get(id)
                    .ok_or_else(|| DecodeError(format!("series index {id} of {n_series}")))?
                    .clone();
                let ts = r.i64()?;
                let value = r.value()?;
                entries.push(WriteEntry { series, ts, value });
            }
            Record::Write(entries)
        }
        TYPE_DELETE_DEVICE => Record::DeleteDevice {
            tenant: r.str()?.to_string(),
            device: r.str()?.to_string(),
        },
        other => return Err(DecodeError(format!("unknown record type {other}"))),
    };
    r.finish()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn entries() -> Vec<WriteEntry> {
        vec![
            WriteEntry {
                series: SeriesKey::new("t", "d", "temp"),
                ts: 1,
                value: Value::F64(21.5),
            },
            WriteEntry {
                series: SeriesKey::new("t", "d", "door"),
                ts: 1,
                value: Value::Str("open".into()),
            },
            WriteEntry {
                series: SeriesKey::new("t", "d", "temp"),
                ts: 2,
                value: Value::F64(22.0),
            },
        ]
    }

    #[test]
    fn write_and_delete_round_trip() {
        let mut buf = Vec::new();
        encode_write(&mut buf, &entries());
        encode_delete_device(&mut buf, "t", "d");
        let Frame::Valid { payload, next } = read_frame(&buf, 0) else {
            panic!("first frame invalid")
        };
        let Record::Write(got) = decode(payload).unwrap() else {
            panic!("not a write")
        };
        assert_eq!(got.len(), 3);
        for (a, b) in got.iter().zip(entries()) {
            assert_eq!((&a.series, a.ts, &a.value), (&b.series, b.ts, &b.value));
        }
        let Frame::Valid { payload, next } = read_frame(&buf, next) else {
            panic!("second frame invalid")
        };
        assert!(matches!(
            decode(payload).unwrap(),
            Record::DeleteDevice { tenant, device } if tenant == "t" && device == "d"
        ));
        assert!(matches!(read_frame(&buf, next), Frame::End));
    }

    /// Devices that come back later in the batch, keys in changing orders, and a device with
    /// more keys than the short list holds: every entry decodes to its own series, and each
    /// series is named once in the record.
    #[test]
    fn series_ids_across_runs_orders_and_many_keys() {
        let mut input = Vec::new();
        for round in 0..3i64 {
            for device in ["a", "b", "a"] {
                let n = if device == "b" { 50 } else { 5 };
                for k in 0..n {
                    let k = if round == 1 { n - 1 - k } else { (k * 3) % n };
                    input.push(WriteEntry {
                        series: SeriesKey::new("t", device, format!("k{k}")),
                        ts: round,
                        value: Value::I64(k),
                    });
                }
            }
            input.push(WriteEntry {
                series: SeriesKey::new("u", "a", "k0"),
                ts: round,
                value: Value::Bool(true),
            });
        }
        let mut buf = Vec::new();
        encode_write(&mut buf, &input);
        let Frame::Valid { payload, .. } = read_frame(&buf, 0) else {
            panic!("frame invalid")
        };
        let Record::Write(got) = decode(payload).unwrap() else {
            panic!("not a write")
        };
        assert_eq!(got.len(), input.len());
        for (a, b) in got.iter().zip(&input) {
            assert_eq!((&a.series, a.ts, &a.value), (&b.series, b.ts, &b.value));
        }
        // The series table: 5 + 50 + 1 distinct series, each named once.
        let n_series = u32::from_le_bytes(payload[1..5].try_into().unwrap());
        assert_eq!(n_series, 56);
    }

    #[test]
    fn damage_is_detected() {
        let mut buf = Vec::new();
        encode_write(&mut buf, &entries());
        // Truncated anywhere: invalid, incomplete.
        for cut in 1..buf.len() {
            assert!(
                matches!(
                    read_frame(&buf[..cut], 0),
                    Frame::Invalid {
                        complete: false,
                        ..
                    }
                ),
                "cut at {cut}"
            );
        }
        // A flipped payload bit: complete but bad CRC.
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            read_frame(&flipped, 0),
            Frame::Invalid { complete: true, .. }
        ));
        // Zeros are not an empty record.
        assert!(matches!(read_frame(&[0u8; 16], 0), Frame::Invalid { .. }));
    }
}

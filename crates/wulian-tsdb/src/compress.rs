//! Column compression for one series chunk (one series, one partition file).
//!
//! Version 2 (block files v2, rollup files v3; see [`encode_chunk`]): the chunk is cut into
//! segments of [`SEGMENT_POINTS`] points, each with its count, first and last timestamp and
//! byte length in a directory at the head of the chunk, so a query decodes only the segments
//! that overlap its window. Per segment:
//!
//! - Timestamps: the deltas in units of their greatest common divisor, less the smallest
//!   delta, in the classes code ([`crate::classes`]): a regular series costs a few bytes per
//!   segment, a 10 s series with 10% gaps about a bit per point.
//! - Floats: mode 2 "decimal" when every value is exactly `m / 10^d` (checked bit for bit,
//!   `d` <= 9, `|m|` < 2^53): the zigzag deltas of `m` in the classes code, about
//!   `log2(step range) + 0.3` bits for a random walk; otherwise mode 0, Gorilla XOR. Lossless
//!   always: NaN payloads, -0.0, infinities and subnormals fall back to another mode. Mode 3
//!   "near decimal" for numbers computed from decimals (rollup sums): `round(v · 10^d)` as in
//!   mode 2 plus the difference in bits to `v`, usually zero or a few units in the last place.
//! - Integers: zigzag deltas in the classes code.
//! - Booleans: bit-packed, 8 per byte. Strings: a dictionary (`[n varint]` × `[len
//!   varint][utf-8]`, first-seen order) and one index varint per value.
//!
//! Version 1 (still decoded): `[kind u8][count varint]`, then the timestamp column (first ts
//! as a varint, then delta-of-delta with the Gorilla prefix code: `0` = same delta; `10`+7
//! bits, `110`+9, `1110`+12, `11110`+32 zigzag bits; `11111`+64 raw bits), then the value
//! column: floats with a mode byte (0 = Gorilla XOR; 1 = decimal with an adaptive bit width
//! `b`: per value `0` + b bits, `10` + (b+8) bits, or `11` + 64 bits), integers as zigzag
//! delta varints, booleans and strings as in version 2.
//!
//! Decoding checks every length against the bytes that are there; a damaged chunk yields a
//! `DecodeError`, never a panic or a huge allocation (chunks are CRC-checked before this runs,
//! so that is defence in depth).

use crate::classes;
use crate::codec::{DecodeError, DecodeResult};
use crate::value::{Point, Value, ValueKind};

// ---------------------------------------------------------------------------------------------
// Bit I/O

#[derive(Default)]
struct BitWriter {
    buf: Vec<u8>,
    cur: u64,
    n: u32,
}

impl BitWriter {
    /// Appends the low `bits` bits of `v`, most significant first.
    fn put(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 64);
        if bits == 0 {
            return;
        }
        if bits > 32 {
            self.put(v >> 32, bits - 32);
            self.put(v & 0xffff_ffff, 32);
            return;
        }
        let v = if bits == 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        };
        self.cur = (self.cur << bits) | v;
        self.n += bits;
        while self.n >= 8 {
            self.n -= 8;
            self.buf.push((self.cur >> self.n) as u8);
        }
        self.cur &= (1u64 << self.n) - 1;
    }

    fn bit(&mut self, b: bool) {
        self.put(u64::from(b), 1);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.buf.push((self.cur << (8 - self.n)) as u8);
        }
        self.buf
    }
}

struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize, // bit position
}

impl<'a> BitReader<'a> {
    fn new(buf: &'a [u8]) -> BitReader<'a> {
        BitReader { buf, pos: 0 }
    }

    fn get(&mut self, bits: u32) -> DecodeResult<u64> {
        if bits == 0 {
            return Ok(0);
        }
        if self.pos + bits as usize > self.buf.len() * 8 {
            return Err(DecodeError::new("bit stream ends early"));
        }
        let mut out = 0u64;
        let mut left = bits;
        while left > 0 {
            let byte = self.buf[self.pos / 8];
            let offset = (self.pos % 8) as u32;
            let avail = 8 - offset;
            let take = avail.min(left);
            let chunk = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            out = (out << take) | chunk;
            left -= take;
            self.pos += take as usize;
        }
        Ok(out)
    }

    fn bit(&mut self) -> DecodeResult<bool> {
        Ok(self.get(1)? == 1)
    }

    /// Bytes consumed, rounding a partial byte up.
    fn bytes_used(&self) -> usize {
        self.pos.div_ceil(8)
    }
}

// ---------------------------------------------------------------------------------------------
// Varints

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor for varints and raw bytes.
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> ByteReader<'a> {
        ByteReader { buf, pos: 0 }
    }

    pub(crate) fn varint(&mut self) -> DecodeResult<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::new("varint runs past the end"));
            };
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(DecodeError::new("varint longer than 10 bytes"))
    }

    pub(crate) fn u8(&mut self) -> DecodeResult<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| DecodeError::new("chunk ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return Err(DecodeError::new("chunk ends early"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

// ---------------------------------------------------------------------------------------------
// Prefix codes for signed integers

/// Delta-of-delta code for timestamps (Gorilla's buckets).
const TS_BUCKETS: [(u32, u32); 4] = [(2, 7), (3, 9), (4, 12), (5, 32)];

fn get_signed(r: &mut BitReader<'_>, buckets: &[(u32, u32); 4]) -> DecodeResult<i64> {
    if !r.bit()? {
        return Ok(0);
    }
    for &(_, width) in buckets {
        if !r.bit()? {
            return Ok(unzigzag(r.get(width)?));
        }
    }
    Ok(unzigzag(r.get(64)?))
}

// ---------------------------------------------------------------------------------------------
// Chunks

pub(crate) fn kind_byte(kind: ValueKind) -> u8 {
    match kind {
        ValueKind::Float => 0,
        ValueKind::Integer => 1,
        ValueKind::Bool => 2,
        ValueKind::String => 3,
    }
}

pub(crate) fn kind_from_byte(b: u8) -> Option<ValueKind> {
    Some(match b {
        0 => ValueKind::Float,
        1 => ValueKind::Integer,
        2 => ValueKind::Bool,
        3 => ValueKind::String,
        _ => return None,
    })
}

fn encode_gorilla(values: &[f64]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut prev = values[0].to_bits();
    w.put(prev, 64);
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for v in &values[1..] {
        let bits = v.to_bits();
        let xor = bits ^ prev;
        prev = bits;
        if xor == 0 {
            w.bit(false);
            continue;
        }
        w.bit(true);
        let l = xor.leading_zeros().min(31);
        let t = xor.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            w.bit(false);
            w.put(xor >> trail, 64 - lead - trail);
        } else {
            w.bit(true);
            let len = 64 - l - t; // 1..=64
            w.put(u64::from(l), 5);
            w.put(u64::from(len & 63), 6); // 64 is stored as 0
            w.put(xor >> t, len);
            lead = l;
            trail = t;
        }
    }
    w.finish()
}

fn decode_gorilla(buf: &[u8], n: usize, out: &mut Vec<f64>) -> DecodeResult<usize> {
    let mut r = BitReader::new(buf);
    let mut prev = r.get(64)?;
    out.push(f64::from_bits(prev));
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for _ in 1..n {
        if r.bit()? {
            let xor = if !r.bit()? {
                if lead == u32::MAX {
                    return Err(DecodeError::new("XOR window used before it was set"));
                }
                r.get(64 - lead - trail)? << trail
            } else {
                let l = r.get(5)? as u32;
                let mut len = r.get(6)? as u32;
                if len == 0 {
                    len = 64;
                }
                if l + len > 64 {
                    return Err(DecodeError::new("XOR window wider than 64 bits"));
                }
                lead = l;
                trail = 64 - l - len;
                r.get(len)? << trail
            };
            prev ^= xor;
        }
        out.push(f64::from_bits(prev));
    }
    Ok(r.bytes_used())
}

/// Powers of ten of the decimal modes (all exact in f64). Version 1 chunks use up to 10^6.
const POW10: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Extra bits of the second tier of the adaptive code.
const TIER2_EXTRA: u32 = 8;

fn get_adaptive(r: &mut BitReader<'_>, b: u32) -> DecodeResult<u64> {
    if !r.bit()? {
        return r.get(b);
    }
    if !r.bit()? {
        return r.get(b + TIER2_EXTRA);
    }
    r.get(64)
}

/// `m` with `m / 10^d == v` bit for bit, if there is one below 2^53.
fn scaled(v: f64, d: usize) -> Option<i64> {
    let m = (v * POW10[d]).round();
    if m.abs() >= 9_007_199_254_740_992.0 {
        return None;
    }
    let m = m as i64;
    ((m as f64 / POW10[d]).to_bits() == v.to_bits()).then_some(m)
}

fn decode_decimal(buf: &[u8], n: usize, out: &mut Vec<f64>) -> DecodeResult<usize> {
    if buf.len() < 2 {
        return Err(DecodeError::new("decimal column is too short"));
    }
    let (d, b) = (buf[0] as usize, u32::from(buf[1]));
    if d > 6 || b > 64 - TIER2_EXTRA {
        return Err(DecodeError(format!("decimal scale {d}, width {b}")));
    }
    let mut r = BitReader::new(&buf[2..]);
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(unzigzag(get_adaptive(&mut r, b)?));
        out.push(prev as f64 / POW10[d]);
    }
    Ok(2 + r.bytes_used())
}

/// Sizes in bytes of a float column in the two float modes: (Gorilla XOR, decimal if the
/// values allow it). For the storage report example; not a stable API.
#[doc(hidden)]
pub fn float_column_sizes(values: &[f64]) -> (usize, Option<usize>) {
    if values.is_empty() {
        return (0, None);
    }
    (
        encode_gorilla(values).len(),
        decimal_deltas(values).map(|(_, z)| 1 + classes::encoded_len(&z)),
    )
}

// ---------------------------------------------------------------------------------------------
// Chunk format version 2 (block files v2, rollup files v3)

/// Points per segment of a version 2 chunk: a query decodes only the segments that overlap
/// its window, so a narrow window costs at most about two segments whatever the chunk's size.
pub(crate) const SEGMENT_POINTS: usize = 1024;

/// Encodes points (ascending, unique timestamps, every value of `kind`) as one chunk payload
/// (version 2):
///
/// ```text
/// [kind u8][count varint][segments varint]
/// per segment: [count varint][first ts zigzag varint][last ts - first ts varint][body len varint]
/// per segment: body = timestamps then values (see encode_ts, encode_values)
/// ```
pub(crate) fn encode_chunk(kind: ValueKind, points: &[Point]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + points.len() * 2);
    out.push(kind_byte(kind));
    put_varint(&mut out, points.len() as u64);
    let segments: Vec<&[Point]> = points.chunks(SEGMENT_POINTS).collect();
    put_varint(&mut out, segments.len() as u64);
    let mut bodies = Vec::new();
    for seg in &segments {
        let start = bodies.len();
        let ts: Vec<i64> = seg.iter().map(|p| p.ts).collect();
        encode_ts(&mut bodies, &ts);
        encode_values(&mut bodies, kind, seg);
        let (first, last) = (ts[0], ts[ts.len() - 1]);
        put_varint(&mut out, seg.len() as u64);
        put_varint(&mut out, zigzag(first));
        put_varint(&mut out, last.wrapping_sub(first) as u64);
        put_varint(&mut out, (bodies.len() - start) as u64);
    }
    out.extend_from_slice(&bodies);
    out
}

/// Timestamps after the first (ascending, unique): the deltas in units of their greatest
/// common divisor, less the smallest, in the classes code:
/// `[unit varint][smallest varint][classes]`. Nothing for a single timestamp. A regular
/// series costs 3 bytes whatever its length; a 10 s series with 10% gaps about a bit per point.
pub(crate) fn encode_ts(out: &mut Vec<u8>, ts: &[i64]) {
    if ts.len() < 2 {
        return;
    }
    let deltas: Vec<u64> = ts
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]) as u64)
        .collect();
    let unit = deltas.iter().fold(0u64, |g, &d| gcd(g, d)).max(1);
    let smallest = deltas.iter().map(|d| d / unit).min().unwrap_or(1);
    put_varint(out, unit);
    put_varint(out, smallest);
    let z: Vec<u64> = deltas.iter().map(|d| d / unit - smallest).collect();
    classes::encode(out, &z);
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Decodes `n` timestamps starting with `first`; returns the bytes used.
pub(crate) fn decode_ts(
    buf: &[u8],
    n: usize,
    first: i64,
    out: &mut Vec<i64>,
) -> DecodeResult<usize> {
    out.push(first);
    if n < 2 {
        return Ok(0);
    }
    let mut r = ByteReader::new(buf);
    let unit = r.varint()?;
    let smallest = r.varint()?;
    if unit == 0 || smallest == 0 {
        return Err(DecodeError(format!(
            "timestamp unit {unit}, smallest step {smallest}"
        )));
    }
    let header = buf.len() - r.remaining();
    let mut prev = first;
    let mut bad = false;
    let used = classes::decode(r.rest(), n - 1, |z| {
        let step = z
            .checked_add(smallest)
            .and_then(|q| q.checked_mul(unit))
            .and_then(|d| i64::try_from(d).ok())
            .and_then(|d| prev.checked_add(d));
        match step {
            Some(ts) => prev = ts,
            None => bad = true,
        }
        out.push(prev);
    })?;
    if bad {
        return Err(DecodeError::new("timestamp step overflows"));
    }
    Ok(header + used)
}

/// The decimal scale `d` and the zigzag deltas of the scaled integers, if every value is
/// exactly `m / 10^d` (bit for bit) for integers `m` below 2^53.
fn decimal_deltas(values: &[f64]) -> Option<(usize, Vec<u64>)> {
    // The smallest scale that fits every value, in one pass that raises the scale when a
    // value needs more decimals. `m / 10^d` exact implies `10m / 10^(d+1)` exact (the same
    // quotient, correctly rounded) while `10m` stays below 2^53; the second pass checks anyway.
    let mut d = 0;
    for &v in values {
        while scaled(v, d).is_none() {
            d += 1;
            if d == POW10.len() {
                return None;
            }
        }
    }
    let mut prev = 0i64;
    let mut z = Vec::with_capacity(values.len());
    for &v in values {
        let m = scaled(v, d)?;
        z.push(zigzag(m.wrapping_sub(prev)));
        prev = m;
    }
    Some((d, z))
}

/// Mode 3, "near decimal": `[d u8]`, the classes code of the zigzag deltas of
/// `m = round(v · 10^d)`, then the classes code of the zigzag difference between the bits of
/// `v` and of `m / 10^d`. For numbers computed from decimals — the sums in rollups, averages —
/// the difference is a few units in the last place or zero; for anything else (NaN, ±inf,
/// -0.0, huge values: `m` is 0 there) it is whatever it takes, so the mode is lossless for
/// every bit pattern. `d` is chosen on a sample to minimise the size.
fn encode_near_decimal(values: &[f64]) -> Vec<u8> {
    let columns = |vals: &[f64], d: usize| -> (Vec<u64>, Vec<u64>) {
        let mut prev = 0i64;
        let (mut ms, mut corrs) = (
            Vec::with_capacity(vals.len()),
            Vec::with_capacity(vals.len()),
        );
        for &v in vals {
            let m = (v * POW10[d]).round();
            let m = if m.is_finite() && m.abs() < 9_007_199_254_740_992.0 {
                m as i64
            } else {
                0
            };
            let base = (m as f64 / POW10[d]).to_bits() as i64;
            ms.push(zigzag(m.wrapping_sub(prev)));
            corrs.push(zigzag((v.to_bits() as i64).wrapping_sub(base)));
            prev = m;
        }
        (ms, corrs)
    };
    let sample = &values[..values.len().min(256)];
    let d = (0..POW10.len())
        .min_by_key(|&d| {
            let (ms, corrs) = columns(sample, d);
            classes::encoded_len(&ms) + classes::encoded_len(&corrs)
        })
        .unwrap_or(0);
    let (ms, corrs) = columns(values, d);
    let mut out = vec![d as u8];
    classes::encode(&mut out, &ms);
    classes::encode(&mut out, &corrs);
    out
}

fn decode_near_decimal(buf: &[u8], n: usize, out: &mut Vec<f64>) -> DecodeResult<usize> {
    let d = *buf
        .first()
        .ok_or_else(|| DecodeError::new("near-decimal column is empty"))? as usize;
    let scale = *POW10
        .get(d)
        .ok_or_else(|| DecodeError(format!("decimal scale {d}")))?;
    let mut bases = Vec::with_capacity(n);
    let mut prev = 0i64;
    let used = classes::decode(&buf[1..], n, |z| {
        prev = prev.wrapping_add(unzigzag(z));
        bases.push((prev as f64 / scale).to_bits() as i64);
    })?;
    let mut i = 0;
    let used2 = classes::decode(&buf[1 + used..], n, |z| {
        let base = bases.get(i).copied().unwrap_or(0);
        out.push(f64::from_bits(base.wrapping_add(unzigzag(z)) as u64));
        i += 1;
    })?;
    Ok(1 + used + used2)
}

/// A float column in version 2: a mode byte, then mode 0 (Gorilla XOR) or mode 2 (decimal:
/// `[d u8]` and the zigzag deltas of `m` in the classes code), whichever is smaller.
/// Integers: zigzag deltas in the classes code. Booleans and strings as in version 1.
pub(crate) fn encode_values(out: &mut Vec<u8>, kind: ValueKind, points: &[Point]) {
    match kind {
        ValueKind::Float => {
            let values: Vec<f64> = points
                .iter()
                .map(|p| match p.value {
                    Value::F64(v) => v,
                    Value::I64(v) => v as f64,
                    _ => 0.0,
                })
                .collect();
            // Exact decimals at under a byte per value: done. Otherwise the smallest of the
            // exact decimal mode, the near-decimal mode and Gorilla.
            let decimal = decimal_deltas(&values).map(|(d, z)| (d, classes::encoded_len(&z), z));
            if let Some((d, len, z)) = &decimal
                && *len <= values.len()
            {
                out.push(2);
                out.push(*d as u8);
                classes::encode(out, z);
                return;
            }
            let mut best: (usize, Vec<u8>) = (0, encode_gorilla(&values));
            if let Some((d, len, z)) = decimal
                && 1 + len < best.1.len()
            {
                let mut col = vec![d as u8];
                classes::encode(&mut col, &z);
                best = (2, col);
            }
            let near = encode_near_decimal(&values);
            if near.len() < best.1.len() {
                best = (3, near);
            }
            out.push(best.0 as u8);
            out.extend_from_slice(&best.1);
        }
        ValueKind::Integer => {
            let mut prev = 0i64;
            let z: Vec<u64> = points
                .iter()
                .map(|p| {
                    let v = match p.value {
                        Value::I64(v) => v,
                        _ => 0,
                    };
                    let d = zigzag(v.wrapping_sub(prev));
                    prev = v;
                    d
                })
                .collect();
            classes::encode(out, &z);
        }
        ValueKind::Bool | ValueKind::String => encode_plain(out, kind, points),
    }
}

/// Booleans bit-packed; strings as a dictionary and one index varint per value.
fn encode_plain(out: &mut Vec<u8>, kind: ValueKind, points: &[Point]) {
    if kind == ValueKind::Bool {
        let mut w = BitWriter::default();
        for p in points {
            w.bit(matches!(p.value, Value::Bool(true)));
        }
        out.extend_from_slice(&w.finish());
        return;
    }
    let mut dict: Vec<&str> = Vec::new();
    let mut index: std::collections::HashMap<&str, u64> = Default::default();
    let mut ids = Vec::with_capacity(points.len());
    for p in points {
        let s = match &p.value {
            Value::Str(s) => s.as_str(),
            _ => "",
        };
        let id = *index.entry(s).or_insert_with(|| {
            dict.push(s);
            (dict.len() - 1) as u64
        });
        ids.push(id);
    }
    put_varint(out, dict.len() as u64);
    for s in &dict {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    for id in ids {
        put_varint(out, id);
    }
}

/// Decodes `n` values of `kind` (version 2, or version 1 when `v1`); returns the bytes used.
pub(crate) fn decode_values(
    buf: &[u8],
    kind: ValueKind,
    n: usize,
    v1: bool,
    out: &mut Vec<Value>,
) -> DecodeResult<usize> {
    decode_values_into(buf, kind, n, v1, |v| out.push(v))
}

/// [`decode_values`], handing each value to `out` in order.
fn decode_values_into(
    buf: &[u8],
    kind: ValueKind,
    n: usize,
    v1: bool,
    mut out: impl FnMut(Value),
) -> DecodeResult<usize> {
    let mut r = ByteReader::new(buf);
    match kind {
        ValueKind::Float => {
            let mode = r.u8()?;
            let mut v = Vec::with_capacity(n);
            let used = match (mode, v1) {
                (0, _) => decode_gorilla(r.rest(), n, &mut v)?,
                (1, _) => decode_decimal(r.rest(), n, &mut v)?,
                (2, false) => {
                    let d = r.u8()? as usize;
                    let scale = *POW10
                        .get(d)
                        .ok_or_else(|| DecodeError(format!("decimal scale {d}")))?;
                    let mut prev = 0i64;
                    1 + classes::decode(r.rest(), n, |z| {
                        prev = prev.wrapping_add(unzigzag(z));
                        v.push(prev as f64 / scale);
                    })?
                }
                (3, false) => decode_near_decimal(r.rest(), n, &mut v)?,
                (other, _) => return Err(DecodeError(format!("unknown float mode {other}"))),
            };
            r.advance(used);
            v.into_iter().map(Value::F64).for_each(&mut out);
        }
        ValueKind::Integer if v1 => {
            let mut prev = 0i64;
            for _ in 0..n {
                prev = prev.wrapping_add(unzigzag(r.varint()?));
                out(Value::I64(prev));
            }
        }
        ValueKind::Integer => {
            let mut prev = 0i64;
            let used = classes::decode(r.rest(), n, |z| {
                prev = prev.wrapping_add(unzigzag(z));
                out(Value::I64(prev));
            })?;
            r.advance(used);
        }
        ValueKind::Bool => {
            let bytes = r.bytes(n.div_ceil(8))?;
            let mut br = BitReader::new(bytes);
            for _ in 0..n {
                out(Value::Bool(br.bit()?));
            }
        }
        ValueKind::String => {
            let dict_len = r.varint()? as usize;
            if dict_len > r.remaining() {
                return Err(DecodeError::new("dictionary larger than the chunk"));
            }
            let mut dict = Vec::with_capacity(dict_len);
            for _ in 0..dict_len {
                let len = r.varint()? as usize;
                let bytes = r.bytes(len)?;
                dict.push(
                    std::str::from_utf8(bytes)
                        .map_err(|_| DecodeError::new("string is not valid UTF-8"))?
                        .to_string(),
                );
            }
            for _ in 0..n {
                let id = r.varint()? as usize;
                let s = dict
                    .get(id)
                    .ok_or_else(|| DecodeError(format!("dictionary index {id} of {dict_len}")))?;
                out(Value::Str(s.clone()));
            }
        }
    }
    Ok(buf.len() - r.remaining())
}

/// Decodes a whole chunk payload (of file format `version`) into points. `expected` is the
/// series kind the index claims.
pub(crate) fn decode_chunk(
    buf: &[u8],
    expected: ValueKind,
    version: u16,
) -> DecodeResult<Vec<Point>> {
    Ok(decode_chunk_range(buf, expected, version, i64::MIN, i64::MAX)?.0)
}

/// The points with `from <= ts < to` of a chunk payload, and the chunk's total point count.
/// Version 2 chunks decode only the segments that overlap the window.
pub(crate) fn decode_chunk_range(
    buf: &[u8],
    expected: ValueKind,
    version: u16,
    from: i64,
    to: i64,
) -> DecodeResult<(Vec<Point>, usize)> {
    if version < 2 {
        let mut points = decode_chunk_v1(buf, expected)?;
        let total = points.len();
        points.retain(|p| p.ts >= from && p.ts < to);
        return Ok((points, total));
    }
    let mut r = ByteReader::new(buf);
    let kind = kind_from_byte(r.u8()?).ok_or_else(|| DecodeError::new("unknown kind byte"))?;
    if kind != expected {
        return Err(DecodeError(format!(
            "chunk holds {kind} values, the index says {expected}"
        )));
    }
    let n = r.varint()? as usize;
    let segs = r.varint()? as usize;
    // Every segment's directory entry takes at least 4 bytes.
    if segs > r.remaining() / 4 || n > r.remaining().saturating_mul(8).saturating_add(1) {
        return Err(DecodeError(format!(
            "{n} points in {segs} segments cannot fit in the chunk"
        )));
    }
    let mut dir = Vec::with_capacity(segs);
    let (mut total, mut body_bytes, mut prev_last) = (0usize, 0usize, None::<i64>);
    for _ in 0..segs {
        let count = r.varint()? as usize;
        let first = unzigzag(r.varint()?);
        let last = first.wrapping_add(r.varint()? as i64);
        let len = r.varint()? as usize;
        if count == 0
            || last < first
            || prev_last.is_some_and(|p| first <= p)
            || (count == 1) != (first == last)
        {
            return Err(DecodeError::new("segment directory is inconsistent"));
        }
        prev_last = Some(last);
        total = total.saturating_add(count);
        body_bytes = body_bytes.saturating_add(len);
        dir.push((count, first, last, len));
    }
    if total != n || body_bytes != r.remaining() {
        return Err(DecodeError(format!(
            "segments hold {total} points in {body_bytes} bytes, the chunk {n} in {}",
            r.remaining()
        )));
    }
    let mut out = Vec::new();
    for (count, first, last, len) in dir {
        let body = r.bytes(len)?;
        if last < from || first >= to {
            continue;
        }
        let mut ts = Vec::with_capacity(count);
        let used = decode_ts(body, count, first, &mut ts)?;
        if ts.last() != Some(&last) || ts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DecodeError::new(
                "segment timestamps disagree with the directory",
            ));
        }
        let (a, b) = (
            ts.partition_point(|&t| t < from),
            ts.partition_point(|&t| t < to),
        );
        out.reserve(b - a);
        let mut i = 0;
        let used = used
            + decode_values_into(&body[used..], kind, count, false, |value| {
                if (a..b).contains(&i) {
                    out.push(Point { ts: ts[i], value });
                }
                i += 1;
            })?;
        if used != len {
            return Err(DecodeError(format!(
                "{} unexpected trailing bytes in a segment",
                len - used.min(len)
            )));
        }
    }
    Ok((out, n))
}

/// Decodes a version 1 chunk payload into points.
fn decode_chunk_v1(buf: &[u8], expected: ValueKind) -> DecodeResult<Vec<Point>> {
    let mut r = ByteReader::new(buf);
    let kind = kind_from_byte(r.u8()?).ok_or_else(|| DecodeError::new("unknown kind byte"))?;
    if kind != expected {
        return Err(DecodeError(format!(
            "chunk holds {kind} values, the index says {expected}"
        )));
    }
    let n = r.varint()? as usize;
    // Every point takes at least one bit; refuse counts the bytes cannot hold.
    if n > r.remaining().saturating_mul(8).saturating_add(1) {
        return Err(DecodeError(format!("count {n} cannot fit in the chunk")));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut ts = Vec::with_capacity(n);
    let first = unzigzag(r.varint()?);
    ts.push(first);
    let ts_len = r.varint()? as usize;
    let ts_bytes = r.bytes(ts_len)?;
    let mut br = BitReader::new(ts_bytes);
    let (mut prev, mut delta) = (first, 0i64);
    for _ in 1..n {
        delta = delta.wrapping_add(get_signed(&mut br, &TS_BUCKETS)?);
        prev = prev.wrapping_add(delta);
        ts.push(prev);
    }
    let values: Vec<Value> = match kind {
        ValueKind::Float => {
            let mode = r.u8()?;
            let mut v = Vec::with_capacity(n);
            let used = match mode {
                0 => decode_gorilla(r.rest(), n, &mut v)?,
                1 => decode_decimal(r.rest(), n, &mut v)?,
                other => return Err(DecodeError(format!("unknown float mode {other}"))),
            };
            r.advance(used);
            v.into_iter().map(Value::F64).collect()
        }
        ValueKind::Integer => {
            let mut prev = 0i64;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                prev = prev.wrapping_add(unzigzag(r.varint()?));
                v.push(Value::I64(prev));
            }
            v
        }
        ValueKind::Bool => {
            let bytes = r.bytes(n.div_ceil(8))?;
            let mut br = BitReader::new(bytes);
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(Value::Bool(br.bit()?));
            }
            v
        }
        ValueKind::String => {
            let dict_len = r.varint()? as usize;
            if dict_len > r.remaining() {
                return Err(DecodeError::new("dictionary larger than the chunk"));
            }
            let mut dict = Vec::with_capacity(dict_len);
            for _ in 0..dict_len {
                let len = r.varint()? as usize;
                let bytes = r.bytes(len)?;
                dict.push(
                    std::str::from_utf8(bytes)
                        .map_err(|_| DecodeError::new("string is not valid UTF-8"))?
                        .to_string(),
                );
            }
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let id = r.varint()? as usize;
                let s = dict
                    .get(id)
                    .ok_or_else(|| DecodeError(format!("dictionary index {id} of {dict_len}")))?;
                v.push(Value::Str(s.clone()));
            }
            v
        }
    };
    if r.remaining() != 0 {
        return Err(DecodeError(format!(
            "{} unexpected trailing bytes in a chunk",
            r.remaining()
        )));
    }
    if ts.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DecodeError::new("chunk timestamps are not ascending"));
    }
    Ok(ts
        .into_iter()
        .zip(values)
        .map(|(ts, value)| Point { ts, value })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a small deterministic generator for tests.
    pub(crate) struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn round_trip(kind: ValueKind, points: &[Point]) -> usize {
        let bytes = encode_chunk(kind, points);
        let back = decode_chunk(&bytes, kind, 2).unwrap();
        assert_eq!(back.len(), points.len());
        for (a, b) in back.iter().zip(points) {
            assert_eq!(a.ts, b.ts);
            match (&a.value, &b.value) {
                (Value::F64(x), Value::F64(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                (x, y) => assert_eq!(x, y),
            }
        }
        bytes.len()
    }

    #[test]
    fn every_kind_round_trips_on_random_data() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..200 {
            let n = rng.below(300) as usize + usize::from(round % 7 == 0);
            let mut ts = rng.below(1 << 40) as i64;
            let mut pts_f = Vec::new();
            let mut pts_i = Vec::new();
            let mut pts_b = Vec::new();
            let mut pts_s = Vec::new();
            let mut walk = 0.0f64;
            for _ in 0..n {
                ts += match rng.below(5) {
                    0 => 1,
                    1 => 1000,
                    2 => rng.below(1 << 20) as i64 + 1,
                    3 => rng.below(1 << 45) as i64 + 1,
                    _ => 1000 + rng.below(3) as i64,
                };
                let f = match round % 4 {
                    0 => f64::from_bits(rng.next() >> 2),
                    1 => (rng.below(10_000) as f64 - 5000.0) / 100.0,
                    2 => {
                        walk += (rng.below(101) as f64 - 50.0) / 100.0;
                        (walk * 100.0).round() / 100.0
                    }
                    _ => [0.0, -0.0, 1e300, -1e-300, 3.5][rng.below(5) as usize],
                };
                pts_f.push(Point {
                    ts,
                    value: Value::F64(f),
                });
                let i = match round % 3 {
                    0 => rng.next() as i64,
                    1 => rng.below(100) as i64 - 50,
                    _ => [i64::MIN, i64::MAX, 0][rng.below(3) as usize],
                };
                pts_i.push(Point {
                    ts,
                    value: Value::I64(i),
                });
                pts_b.push(Point {
                    ts,
                    value: Value::Bool(rng.below(2) == 1),
                });
                pts_s.push(Point {
                    ts,
                    value: Value::Str(format!("s{}", rng.below(5)).repeat(rng.below(3) as usize)),
                });
            }
            round_trip(ValueKind::Float, &pts_f);
            round_trip(ValueKind::Integer, &pts_i);
            round_trip(ValueKind::Bool, &pts_b);
            round_trip(ValueKind::String, &pts_s);
        }
    }

    #[test]
    fn regular_decimal_series_is_small() {
        let points: Vec<Point> = (0..86_400i64)
            .map(|i| Point {
                ts: 1_700_000_000_000 + i * 1000,
                value: Value::F64(
                    ((20.0 + 5.0 * (i as f64 / 3600.0).sin()) * 100.0).round() / 100.0,
                ),
            })
            .collect();
        let bytes = round_trip(ValueKind::Float, &points);
        assert!(bytes < points.len() / 2, "{bytes} bytes");
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut rng = Rng(99);
        let points: Vec<Point> = (0..100i64)
            .map(|i| Point {
                ts: i * 1000,
                value: Value::Str(format!("v{}", i % 3)),
            })
            .collect();
        let good = encode_chunk(ValueKind::String, &points);
        for _ in 0..2000 {
            let mut bad = good.clone();
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] ^= 1 << rng.below(8);
            // Either outcome is fine; neither may panic.
            drop(decode_chunk(&bad, ValueKind::String, 2));
            drop(decode_chunk(&bad[..at], ValueKind::String, 2));
        }
        assert!(decode_chunk(&good, ValueKind::Float, 2).is_err());
        // The same for the classes-coded columns and the segment directory.
        let floats: Vec<Point> = (0..3000i64)
            .map(|i| Point {
                ts: i * 10_000 + (i % 7) * 3,
                value: Value::F64((i % 97) as f64 / 100.0),
            })
            .collect();
        let ints: Vec<Point> = (0..3000i64)
            .map(|i| Point {
                ts: i * 1000,
                value: Value::I64(i * i),
            })
            .collect();
        for (kind, points) in [(ValueKind::Float, &floats), (ValueKind::Integer, &ints)] {
            let good = encode_chunk(kind, points);
            for _ in 0..3000 {
                let mut bad = good.clone();
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] ^= 1 << rng.below(8);
                drop(decode_chunk(&bad, kind, 2));
                drop(decode_chunk_range(&bad, kind, 2, 5_000_000, 6_000_000));
                drop(decode_chunk(&bad[..at], kind, 2));
            }
        }
    }

    fn bits_of(points: &[Point]) -> Vec<(i64, u64)> {
        points
            .iter()
            .map(|p| match p.value {
                Value::F64(v) => (p.ts, v.to_bits()),
                _ => (p.ts, u64::MAX),
            })
            .collect()
    }

    #[test]
    fn awkward_floats_round_trip_bit_for_bit() {
        let awkward = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::from_bits(0x7ff8_dead_beef_0001), // a NaN with a payload
            f64::from_bits(0xfff0_0000_0000_0001), // a signalling negative NaN
            5e-324,                                // the smallest subnormal
            2.225_073_858_507_201e-308,            // the largest subnormal
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            0.1,
            0.1 + 0.2, // not the decimal 0.3
            1.0 / 3.0,
            9_007_199_254_740_993.0, // above 2^53
            -123.456,
            1e-7,
        ];
        // Alone, mixed into decimal data (the decimal mode must fall back), and as a whole
        // chunk of each.
        for &v in &awkward {
            let mut points: Vec<Point> = (0..50i64)
                .map(|i| Point {
                    ts: i * 1000,
                    value: Value::F64(i as f64 / 100.0),
                })
                .collect();
            points[17].value = Value::F64(v);
            let back = decode_chunk(
                &encode_chunk(ValueKind::Float, &points),
                ValueKind::Float,
                2,
            )
            .unwrap();
            assert_eq!(bits_of(&back), bits_of(&points), "{v:?}");
        }
        let points: Vec<Point> = awkward
            .iter()
            .cycle()
            .take(3000)
            .enumerate()
            .map(|(i, &v)| Point {
                ts: i as i64 * 7,
                value: Value::F64(v),
            })
            .collect();
        let back = decode_chunk(
            &encode_chunk(ValueKind::Float, &points),
            ValueKind::Float,
            2,
        )
        .unwrap();
        assert_eq!(bits_of(&back), bits_of(&points));
        // Values with 7 to 9 decimals, and negative decimals, use the decimal mode losslessly.
        for d in [7, 8, 9] {
            let points: Vec<Point> = (0..2000i64)
                .map(|i| Point {
                    ts: i,
                    value: Value::F64((i * 7919 - 5_000_000) as f64 / POW10[d]),
                })
                .collect();
            let bytes = encode_chunk(ValueKind::Float, &points);
            let back = decode_chunk(&bytes, ValueKind::Float, 2).unwrap();
            assert_eq!(bits_of(&back), bits_of(&points));
        }
    }

    #[test]
    fn sums_of_decimals_use_the_near_decimal_mode_losslessly() {
        let mut rng = Rng(5);
        let mut walk = 5000i64;
        let points: Vec<Point> = (0..3000i64)
            .map(|i| {
                // A rollup's sum: six readings of two decimals added in f64.
                let mut sum = 0.0f64;
                for _ in 0..6 {
                    walk += rng.below(401) as i64 - 200;
                    sum += walk as f64 / 100.0;
                }
                Point {
                    ts: i * 60_000,
                    value: Value::F64(sum),
                }
            })
            .collect();
        let bytes = encode_chunk(ValueKind::Float, &points);
        let back = decode_chunk(&bytes, ValueKind::Float, 2).unwrap();
        assert_eq!(bits_of(&back), bits_of(&points));
        // Gorilla needs about 7 bytes for such values.
        assert!(bytes.len() < points.len() * 3, "{} bytes", bytes.len());
        // Every awkward bit pattern survives the mode too.
        let mut awkward: Vec<f64> = (0..300).map(|i| i as f64 * 0.3).collect();
        for (i, v) in [f64::NAN, -0.0, f64::INFINITY, 5e-324, 1e300, -1e-300]
            .into_iter()
            .enumerate()
        {
            awkward[i * 37] = v;
        }
        let near = encode_near_decimal(&awkward);
        let mut back = Vec::new();
        assert_eq!(
            decode_near_decimal(&near, awkward.len(), &mut back).unwrap(),
            near.len()
        );
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&awkward));
    }

    #[test]
    fn a_window_decodes_only_its_segments_and_agrees_with_a_full_decode() {
        let mut rng = Rng(7);
        let mut ts = 1_767_225_600_000i64;
        let points: Vec<Point> = (0..5000)
            .map(|_| {
                ts += 10_000 * (1 + i64::from(rng.below(10) == 0));
                Point {
                    ts,
                    value: Value::F64(rng.below(10_000) as f64 / 100.0),
                }
            })
            .collect();
        let bytes = encode_chunk(ValueKind::Float, &points);
        let (lo, hi) = (points[0].ts, points[points.len() - 1].ts);
        for _ in 0..200 {
            let a = lo - 50_000 + rng.below((hi - lo + 100_000) as u64) as i64;
            let b = a + rng.below(3_000_000) as i64;
            let (got, total) = decode_chunk_range(&bytes, ValueKind::Float, 2, a, b).unwrap();
            assert_eq!(total, points.len());
            let want: Vec<Point> = points
                .iter()
                .filter(|p| p.ts >= a && p.ts < b)
                .cloned()
                .collect();
            assert_eq!(got, want);
        }
        // A damaged segment outside the window is not even decoded; inside, it is an error.
        let mut bad = bytes.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0xff;
        assert!(decode_chunk_range(&bad, ValueKind::Float, 2, lo, lo + 60_000).is_ok());
    }

    #[test]
    fn regular_and_gappy_timestamps_are_nearly_free() {
        let regular: Vec<i64> = (0..10_000)
            .map(|i| 1_767_225_600_000 + i * 10_000)
            .collect();
        let mut out = Vec::new();
        encode_ts(&mut out, &regular);
        assert!(out.len() <= 8, "{} bytes", out.len());
        let mut back = Vec::new();
        assert_eq!(
            decode_ts(&out, regular.len(), regular[0], &mut back).unwrap(),
            out.len()
        );
        assert_eq!(back, regular);
        // 10% of the points missing: about a bit per timestamp.
        let mut rng = Rng(3);
        let gappy: Vec<i64> = regular
            .iter()
            .copied()
            .filter(|_| rng.below(10) != 0)
            .collect();
        let mut out = Vec::new();
        encode_ts(&mut out, &gappy);
        assert!(out.len() * 8 < gappy.len() * 13 / 10, "{} bytes", out.len());
        let mut back = Vec::new();
        decode_ts(&out, gappy.len(), gappy[0], &mut back).unwrap();
        assert_eq!(back, gappy);
    }
}

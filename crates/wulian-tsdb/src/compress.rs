//! Column compression for one series chunk (one series, one partition file).
//!
//! Payload of a chunk: `[kind u8][count varint]`, then the timestamp column, then the value
//! column.
//!
//! - Timestamps (ascending, unique): first ts as a varint, then delta-of-delta with the Gorilla
//!   prefix code (`0` = same delta; `10`+7 bits, `110`+9, `1110`+12, `11110`+32 zigzag bits;
//!   `11111`+64 raw bits). A regular 1 Hz series costs ~1 bit per timestamp.
//! - Floats: one mode byte. Mode 0 = Gorilla XOR (Facebook's encoding: `0` = same value, `10` =
//!   meaningful bits inside the previous window, `11` + 5 bits leading zeros + 6 bits length +
//!   bits). Mode 1 = "decimal": when every value is exactly `m / 10^d` for integers `m` (checked
//!   bit for bit, `d` ≤ 6, `|m|` < 2^53), `d` is stored and the `m` go as zigzag deltas with an
//!   adaptive code: a base width `b` chosen per chunk (one byte) to minimise the size, then per
//!   value `0` + b bits, `10` + (b+8) bits, or `11` + 64 bits. The
//!   encoder tries both and keeps the smaller, so the decimal mode is never worse and sensor
//!   data with a fixed resolution (0.01 °C) compresses to about a byte per value.
//! - Integers: zigzag deltas as LEB128 varints.
//! - Booleans: bit-packed, 8 per byte.
//! - Strings: a dictionary (`[n varint]` × `[len varint][utf-8]`, first-seen order) and one
//!   index varint per value.
//!
//! Decoding checks every length against the bytes that are there; a damaged chunk yields a
//! `DecodeError`, never a panic or a huge allocation (chunks are CRC-checked before this runs,
//! so that is defence in depth).

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

/// `0` for zero; then for bucket i: i+1 one-bits, a zero-bit, `width` zigzag bits; the last
/// escape is five one-bits and 64 raw bits.
fn put_signed(w: &mut BitWriter, v: i64, buckets: &[(u32, u32); 4]) {
    if v == 0 {
        w.bit(false);
        return;
    }
    let z = zigzag(v);
    for (i, &(prefix_len, width)) in buckets.iter().enumerate() {
        if z < (1u64 << width) {
            // prefix: i+1 ones then a zero (prefix_len bits in all).
            let prefix = ((1u64 << (i + 1)) - 1) << 1;
            w.put(prefix, prefix_len);
            w.put(z, width);
            return;
        }
    }
    w.put(0b11111, 5);
    w.put(z, 64);
}

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

/// Encodes points (ascending, unique timestamps, every value of `kind`) as one chunk payload.
pub(crate) fn encode_chunk(kind: ValueKind, points: &[Point]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + points.len() * 2);
    out.push(kind_byte(kind));
    put_varint(&mut out, points.len() as u64);
    if points.is_empty() {
        return out;
    }
    // Timestamps.
    put_varint(&mut out, zigzag(points[0].ts));
    let mut w = BitWriter::default();
    let mut prev = points[0].ts;
    let mut prev_delta = 0i64;
    for p in &points[1..] {
        let delta = p.ts.wrapping_sub(prev);
        put_signed(&mut w, delta.wrapping_sub(prev_delta), &TS_BUCKETS);
        prev_delta = delta;
        prev = p.ts;
    }
    let ts_bits = w.finish();
    put_varint(&mut out, ts_bits.len() as u64);
    out.extend_from_slice(&ts_bits);
    // Values.
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
            let gorilla = encode_gorilla(&values);
            match encode_decimal(&values) {
                Some(decimal) if decimal.len() < gorilla.len() => {
                    out.push(1);
                    out.extend_from_slice(&decimal);
                }
                _ => {
                    out.push(0);
                    out.extend_from_slice(&gorilla);
                }
            }
        }
        ValueKind::Integer => {
            let mut prev = 0i64;
            for p in points {
                let v = match p.value {
                    Value::I64(v) => v,
                    _ => 0,
                };
                put_varint(&mut out, zigzag(v.wrapping_sub(prev)));
                prev = v;
            }
        }
        ValueKind::Bool => {
            let mut w = BitWriter::default();
            for p in points {
                w.bit(matches!(p.value, Value::Bool(true)));
            }
            out.extend_from_slice(&w.finish());
        }
        ValueKind::String => {
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
            put_varint(&mut out, dict.len() as u64);
            for s in &dict {
                put_varint(&mut out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            for id in ids {
                put_varint(&mut out, id);
            }
        }
    }
    out
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

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// The decimal mode, if every value is exactly `m / 10^d` for some `d <= 6`.
fn encode_decimal(values: &[f64]) -> Option<Vec<u8>> {
    let d = (0..POW10.len()).find(|&d| values.iter().all(|&v| scaled(v, d).is_some()))?;
    let mut deltas = Vec::with_capacity(values.len());
    let mut prev = 0i64;
    for &v in values {
        let m = scaled(v, d)?;
        deltas.push(zigzag(m.wrapping_sub(prev)));
        prev = m;
    }
    let width = best_width(&deltas);
    let mut out = vec![d as u8, width as u8];
    let mut w = BitWriter::default();
    for z in deltas {
        put_adaptive(&mut w, z, width);
    }
    out.extend_from_slice(&w.finish());
    Some(out)
}

/// Extra bits of the second tier of the adaptive code.
const TIER2_EXTRA: u32 = 8;

/// Adaptive code with a per-chunk base width `b`: `0` + b bits, `10` + (b + 8) bits, `11` +
/// 64 bits. `b` is chosen per chunk to minimise the size.
fn put_adaptive(w: &mut BitWriter, z: u64, b: u32) {
    let len = 64 - z.leading_zeros();
    if len <= b {
        w.bit(false);
        w.put(z, b);
    } else if len <= b + TIER2_EXTRA {
        w.put(0b10, 2);
        w.put(z, b + TIER2_EXTRA);
    } else {
        w.put(0b11, 2);
        w.put(z, 64);
    }
}

fn get_adaptive(r: &mut BitReader<'_>, b: u32) -> DecodeResult<u64> {
    if !r.bit()? {
        return r.get(b);
    }
    if !r.bit()? {
        return r.get(b + TIER2_EXTRA);
    }
    r.get(64)
}

/// The base width that makes the adaptive code of `values` smallest.
fn best_width(values: &[u64]) -> u32 {
    let mut hist = [0u64; 65];
    for z in values {
        hist[(64 - z.leading_zeros()) as usize] += 1;
    }
    let mut best = (u64::MAX, 0u32);
    for b in 0..=(64 - TIER2_EXTRA) {
        let cost: u64 = hist
            .iter()
            .enumerate()
            .map(|(len, n)| {
                let len = len as u32;
                let bits = if len <= b {
                    1 + b
                } else if len <= b + TIER2_EXTRA {
                    2 + b + TIER2_EXTRA
                } else {
                    66
                };
                n * u64::from(bits)
            })
            .sum();
        if cost < best.0 {
            best = (cost, b);
        }
    }
    best.1
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
    if d >= POW10.len() || b > 64 - TIER2_EXTRA {
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
        encode_decimal(values).map(|d| d.len()),
    )
}

/// Decodes a chunk payload into points. `expected` is the series kind the index claims.
pub(crate) fn decode_chunk(buf: &[u8], expected: ValueKind) -> DecodeResult<Vec<Point>> {
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
        let back = decode_chunk(&bytes, kind).unwrap();
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
            drop(decode_chunk(&bad, ValueKind::String));
            drop(decode_chunk(&bad[..at], ValueKind::String));
        }
        assert!(decode_chunk(&good, ValueKind::Float).is_err());
    }
}

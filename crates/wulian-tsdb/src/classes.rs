//! The "classes" code for unsigned integers (zigzag deltas of scaled decimals, integers,
//! timestamp deltas): a value's class is its bit length (0..=64); the class is coded with a
//! canonical Huffman code built per column from the column's own class histogram, followed by
//! the value's bits below its leading one (`class - 1` raw bits; classes 0 and 1 have none).
//!
//! This is the "binning" idea of pco and of Elias-gamma codes with adaptive class lengths:
//! a random walk whose steps are uniform in ±k costs about `log2(2k) + 0.3` bits per value
//! (an entropy coder would reach `log2(2k)`), one class alone costs no prefix bits at all (a
//! regular timestamp column is `0` bits per point), and outliers cost what they need (a
//! rare class gets a long code, never an escape of 64 bits).
//!
//! ```text
//! [lo u8][hi u8]            the classes used, lo <= hi <= 64
//! [code length nibble]*     hi - lo + 1 nibbles, two per byte, high nibble first; 0 = unused
//! [bits]                    per value: its class code (MSB first), then class-1 raw bits
//! ```
//!
//! Code lengths are limited to [`MAX_CODE_LEN`] bits, so decoding is one table lookup per
//! value in a table of at most 4096 entries built once per column.

use crate::codec::{DecodeError, DecodeResult};

/// Longest Huffman code: bounds the decoding table (2^12 entries).
const MAX_CODE_LEN: u32 = 12;
const CLASSES: usize = 65;

fn class_of(v: u64) -> usize {
    (64 - v.leading_zeros()) as usize
}

/// An MSB-first bit writer.
#[derive(Default)]
pub(crate) struct Bits {
    buf: Vec<u8>,
    cur: u64,
    n: u32,
}

impl Bits {
    /// Appends the low `bits` bits of `v` (`bits` <= 64).
    pub(crate) fn put(&mut self, v: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        if bits > 32 {
            self.put(v >> 32, bits - 32);
            self.put(v & 0xffff_ffff, 32);
            return;
        }
        let v = v & ((1u64 << bits) - 1);
        self.cur = (self.cur << bits) | v;
        self.n += bits;
        while self.n >= 8 {
            self.n -= 8;
            self.buf.push((self.cur >> self.n) as u8);
        }
        self.cur &= (1u64 << self.n) - 1;
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.buf.push((self.cur << (8 - self.n)) as u8);
        }
        self.buf
    }
}

/// An MSB-first bit reader that reads a whole word at a time.
pub(crate) struct BitCursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BitCursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> BitCursor<'a> {
        BitCursor { buf, pos: 0 }
    }

    /// The next `n` bits (n <= 56) without consuming them; zeros past the end.
    #[inline]
    fn peek(&self, n: u32) -> u64 {
        if n == 0 {
            return 0;
        }
        let byte = self.pos >> 3;
        let word = match self.buf.get(byte..byte + 8) {
            Some(w) => u64::from_be_bytes(w.try_into().unwrap_or_default()),
            None => {
                let mut w = [0u8; 8];
                let rest = self.buf.get(byte..).unwrap_or_default();
                w[..rest.len()].copy_from_slice(rest);
                u64::from_be_bytes(w)
            }
        };
        (word << (self.pos & 7)) >> (64 - n)
    }

    #[inline]
    fn skip(&mut self, n: u32) -> DecodeResult<()> {
        if self.pos + n as usize > self.buf.len() * 8 {
            return Err(DecodeError::new("bit stream ends early"));
        }
        self.pos += n as usize;
        Ok(())
    }

    #[inline]
    pub(crate) fn read(&mut self, n: u32) -> DecodeResult<u64> {
        if n <= 56 {
            let v = self.peek(n);
            self.skip(n)?;
            Ok(v)
        } else {
            let hi = self.read(n - 32)?;
            let lo = self.read(32)?;
            Ok((hi << 32) | lo)
        }
    }

    /// Bytes consumed, a partial byte rounded up.
    pub(crate) fn bytes_used(&self) -> usize {
        self.pos.div_ceil(8)
    }
}

/// Huffman code lengths for `counts` (0 for an unused class), at most [`MAX_CODE_LEN`].
/// A single used class gets length 0: it costs no bits.
fn code_lengths(counts: &[u64; CLASSES]) -> [u8; CLASSES] {
    let mut lens = [0u8; CLASSES];
    let used: Vec<usize> = (0..CLASSES).filter(|&c| counts[c] > 0).collect();
    if used.len() <= 1 {
        return lens;
    }
    let mut weights: Vec<u64> = used.iter().map(|&c| counts[c]).collect();
    loop {
        // Huffman by repeated merging of the two lightest trees (65 symbols at most, so the
        // quadratic selection is cheaper than a heap). Each tree is a list of its leaves.
        let mut trees: Vec<(u64, Vec<usize>)> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (w, vec![i]))
            .collect();
        let mut depth = vec![0u32; used.len()];
        while trees.len() > 1 {
            trees.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
            let (wa, la) = trees.pop().unwrap_or_default();
            let (wb, lb) = trees.pop().unwrap_or_default();
            for &leaf in la.iter().chain(&lb) {
                depth[leaf] += 1;
            }
            let mut leaves = la;
            leaves.extend(lb);
            trees.push((wa + wb, leaves));
        }
        if depth.iter().all(|&d| d <= MAX_CODE_LEN) {
            for (i, &c) in used.iter().enumerate() {
                lens[c] = depth[i] as u8;
            }
            return lens;
        }
        // Too deep: flatten the distribution and try again (rare classes share longer codes).
        for w in &mut weights {
            *w = (*w >> 1) + 1;
        }
    }
}

/// Canonical codes for `lens`: per class, (code, length).
fn canonical(lens: &[u8; CLASSES]) -> [(u32, u8); CLASSES] {
    let mut order: Vec<usize> = (0..CLASSES).filter(|&c| lens[c] > 0).collect();
    order.sort_by_key(|&c| (lens[c], c));
    let mut codes = [(0u32, 0u8); CLASSES];
    let (mut code, mut prev_len) = (0u32, 0u8);
    for (i, &c) in order.iter().enumerate() {
        if i > 0 {
            code = (code + 1) << (lens[c] - prev_len);
        }
        prev_len = lens[c];
        codes[c] = (code, lens[c]);
    }
    codes
}

/// Appends the classes code of `values` to `out` (table and bit stream, byte-aligned end).
pub(crate) fn encode(out: &mut Vec<u8>, values: &[u64]) {
    let mut counts = [0u64; CLASSES];
    for &v in values {
        counts[class_of(v)] += 1;
    }
    let lo = counts.iter().position(|&n| n > 0).unwrap_or(0);
    let hi = counts.iter().rposition(|&n| n > 0).unwrap_or(0);
    let lens = code_lengths(&counts);
    out.push(lo as u8);
    out.push(hi as u8);
    for pair in lens[lo..=hi].chunks(2) {
        out.push((pair[0] << 4) | pair.get(1).copied().unwrap_or(0));
    }
    let codes = canonical(&lens);
    let mut w = Bits::default();
    for &v in values {
        let c = class_of(v);
        let (code, len) = codes[c];
        w.put(u64::from(code), u32::from(len));
        if c >= 2 {
            w.put(v, c as u32 - 1);
        }
    }
    out.extend_from_slice(&w.finish());
}

/// Size in bytes that [`encode`] would produce, without producing it.
pub(crate) fn encoded_len(values: &[u64]) -> usize {
    let mut counts = [0u64; CLASSES];
    for &v in values {
        counts[class_of(v)] += 1;
    }
    let lo = counts.iter().position(|&n| n > 0).unwrap_or(0);
    let hi = counts.iter().rposition(|&n| n > 0).unwrap_or(0);
    let lens = code_lengths(&counts);
    let bits: u64 = (0..CLASSES)
        .map(|c| counts[c] * (u64::from(lens[c]) + (c as u64).saturating_sub(1)))
        .sum();
    2 + (hi - lo + 1).div_ceil(2) + bits.div_ceil(8) as usize
}

/// Decodes `n` values from `buf` into `out` (through `f`); returns the bytes used.
pub(crate) fn decode(buf: &[u8], n: usize, mut f: impl FnMut(u64)) -> DecodeResult<usize> {
    if buf.len() < 2 {
        return Err(DecodeError::new("class table is too short"));
    }
    let (lo, hi) = (buf[0] as usize, buf[1] as usize);
    if lo > hi || hi >= CLASSES {
        return Err(DecodeError(format!("class range {lo}..={hi}")));
    }
    let table_len = (hi - lo + 1).div_ceil(2);
    let nibbles = buf
        .get(2..2 + table_len)
        .ok_or_else(|| DecodeError::new("class table ends early"))?;
    let mut lens = [0u8; CLASSES];
    for c in lo..=hi {
        let b = nibbles[(c - lo) / 2];
        lens[c] = if (c - lo) % 2 == 0 { b >> 4 } else { b & 0x0f };
    }
    let max_len = u32::from(lens.iter().copied().max().unwrap_or(0));
    if max_len > MAX_CODE_LEN {
        return Err(DecodeError(format!("code length {max_len}")));
    }
    // Table: for every `max_len`-bit prefix, the class and its code length. A single class
    // (max_len 0) decodes without reading bits.
    let mut table = vec![(u8::MAX, 0u8); 1usize << max_len];
    if max_len == 0 {
        table[0] = (lo as u8, 0);
    } else {
        // Kraft: a complete prefix code fills the table exactly; more is damage.
        let kraft: u64 = lens
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 1u64 << (max_len - u32::from(l)))
            .sum();
        if kraft > 1u64 << max_len {
            return Err(DecodeError::new("class code lengths are not a prefix code"));
        }
        let codes = canonical(&lens);
        for (c, &(code, len)) in codes.iter().enumerate() {
            if len == 0 {
                continue;
            }
            let shift = max_len - u32::from(len);
            let start = (code as usize) << shift;
            for slot in &mut table[start..start + (1usize << shift)] {
                *slot = (c as u8, len);
            }
        }
    }
    let mut r = BitCursor::new(&buf[2 + table_len..]);
    for _ in 0..n {
        // One 56-bit window holds the class code and, nearly always, the raw bits after it.
        let window = r.peek(56);
        let (c, len) = table[(window >> (56 - max_len)) as usize];
        if c == u8::MAX {
            return Err(DecodeError::new("invalid class code"));
        }
        let raw = u32::from(c.saturating_sub(1));
        let v = if c < 2 {
            r.skip(u32::from(len))?;
            u64::from(c)
        } else if u32::from(len) + raw <= 56 {
            r.skip(u32::from(len) + raw)?;
            let bits = (window >> (56 - u32::from(len) - raw)) & ((1u64 << raw) - 1);
            (1u64 << raw) | bits
        } else {
            r.skip(u32::from(len))?;
            (1u64 << raw) | r.read(raw)?
        };
        f(v);
    }
    Ok(2 + table_len + r.bytes_used())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: &[u64]) -> usize {
        let mut out = Vec::new();
        encode(&mut out, values);
        assert_eq!(out.len(), encoded_len(values), "encoded_len agrees");
        let mut back = Vec::new();
        let used = decode(&out, values.len(), |v| back.push(v)).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(back, values);
        out.len()
    }

    #[test]
    fn round_trips_edges_and_skewed_distributions() {
        round_trip(&[]);
        round_trip(&[0]);
        round_trip(&[u64::MAX, 0, 1, 2, 3, u64::MAX - 1, 1 << 63]);
        // One class: no code bits, only raw bits.
        assert_eq!(round_trip(&[0; 1000]), 3);
        // Every class once, and a very skewed histogram that needs the length limit.
        let all: Vec<u64> = (0..65)
            .map(|c| if c == 0 { 0 } else { 1u64 << (c - 1) })
            .collect();
        round_trip(&all);
        let mut skewed = Vec::new();
        for c in 0..40u32 {
            for _ in 0..(1u64 << (c / 2).min(20)) {
                skewed.push(if c == 0 { 0 } else { (1u64 << (c - 1)) | 1 });
            }
        }
        round_trip(&skewed);
    }

    #[test]
    fn uniform_steps_cost_near_their_entropy() {
        // Zigzag of uniform steps in ±200: log2(401) = 8.65 bits of entropy.
        let mut x = 0x9e37_79b9u64;
        let values: Vec<u64> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % 401
            })
            .collect();
        let bits = round_trip(&values) as f64 * 8.0 / values.len() as f64;
        assert!(bits < 9.2, "{bits} bits per value");
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let values: Vec<u64> = (0..500u64).map(|i| (i * 7919) % 300).collect();
        let mut good = Vec::new();
        encode(&mut good, &values);
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                drop(decode(&bad, values.len(), |_| {}));
                drop(decode(&bad[..at], values.len(), |_| {}));
            }
        }
    }
}

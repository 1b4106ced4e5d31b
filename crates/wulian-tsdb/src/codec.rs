//! Little-endian binary encoding shared by the WAL records and the snapshot blocks.
//!
//! Writing appends to a `Vec<u8>`; reading goes through [`Reader`], which checks every length
//! against the bytes that are actually there, so a damaged buffer yields a [`DecodeError`]
//! instead of a panic or a huge allocation.

use crate::value::Value;

/// Why a buffer could not be decoded (the caller adds file and offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub String);

impl DecodeError {
    pub(crate) fn new(reason: impl Into<String>) -> DecodeError {
        DecodeError(reason.into())
    }
}

pub(crate) type DecodeResult<T> = Result<T, DecodeError>;

const TAG_F64: u8 = 0;
const TAG_I64: u8 = 1;
const TAG_BOOL: u8 = 2;
const TAG_STR: u8 = 3;

pub(crate) fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}

pub(crate) fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// A string as `[len u32][utf-8 bytes]`. Callers keep strings far below 4 GiB (names are
/// validated, records are capped), so the length always fits.
pub(crate) fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u32(buf, u32::try_from(s.len()).unwrap_or(u32::MAX));
    buf.extend_from_slice(s.as_bytes());
}

/// A value as `[tag u8][data]`.
pub(crate) fn put_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::F64(v) => {
            put_u8(buf, TAG_F64);
            put_u64(buf, v.to_bits());
        }
        Value::I64(v) => {
            put_u8(buf, TAG_I64);
            put_i64(buf, *v);
        }
        Value::Bool(v) => {
            put_u8(buf, TAG_BOOL);
            put_u8(buf, u8::from(*v));
        }
        Value::Str(s) => {
            put_u8(buf, TAG_STR);
            put_str(buf, s);
        }
    }
}

/// Bounds-checked cursor over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(DecodeError(format!(
                "needs {n} bytes at payload offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn str(&mut self) -> DecodeResult<&'a str> {
        let len = self.u32()? as usize;
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::new("string is not valid UTF-8"))
    }

    pub(crate) fn value(&mut self) -> DecodeResult<Value> {
        match self.u8()? {
            TAG_F64 => Ok(Value::F64(f64::from_bits(self.u64()?))),
            TAG_I64 => Ok(Value::I64(self.i64()?)),
            TAG_BOOL => match self.u8()? {
                0 => Ok(Value::Bool(false)),
                1 => Ok(Value::Bool(true)),
                other => Err(DecodeError(format!("bool byte {other}"))),
            },
            TAG_STR => Ok(Value::Str(self.str()?.to_string())),
            other => Err(DecodeError(format!("unknown value tag {other}"))),
        }
    }

    /// A count read from the buffer, checked against the bytes left so that a damaged count
    /// cannot make the caller reserve gigabytes: every item takes at least `min_item_bytes`.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(DecodeError(format!(
                "count {n} cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }

    pub(crate) fn finish(&self) -> DecodeResult<()> {
        if self.remaining() != 0 {
            return Err(DecodeError(format!(
                "{} unexpected trailing bytes",
                self.remaining()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let values = [
            Value::F64(-1.5),
            Value::I64(i64::MIN),
            Value::Bool(true),
            Value::Str("héllo".into()),
        ];
        let mut buf = Vec::new();
        for v in &values {
            put_value(&mut buf, v);
        }
        let mut r = Reader::new(&buf);
        for v in &values {
            assert_eq!(&r.value().unwrap(), v);
        }
        r.finish().unwrap();
    }

    #[test]
    fn short_and_damaged_input_is_an_error() {
        let mut buf = Vec::new();
        put_str(&mut buf, "abc");
        assert!(Reader::new(&buf[..5]).str().is_err());
        assert!(Reader::new(&[9]).value().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff]).count(1).is_err());
    }
}

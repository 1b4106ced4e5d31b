//! The MQTT data representations (section 1.5): integers, variable byte integers, UTF-8
//! strings and binary data. `Reader` parses them from a packet body without copying binary
//! data; the `put_*` functions append them to an output buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// Largest value a variable byte integer can hold.
pub(crate) const MAX_VAR_INT: usize = 268_435_455;

/// Result of parsing a variable byte integer from the front of a slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes encoded it.
    Value(u32, usize),
    /// The slice ends before the last byte.
    Incomplete,
    /// A fifth byte would be needed.
    Malformed,
}

pub(crate) fn parse_var_int(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return VarInt::Incomplete;
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return VarInt::Value(value, i + 1);
        }
    }
    VarInt::Malformed
}

/// Cursor over one packet's body. Every read checks the length first, so running out of
/// bytes is [`DecodeError::TruncatedField`], never a panic.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless everything has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::TruncatedField);
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything not read yet (the PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(DecodeError::TruncatedField);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(DecodeError::TruncatedField);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(DecodeError::TruncatedField);
        }
        Ok(self.buf.get_u32())
    }

    /// A packet identifier, which must not be zero.
    pub(crate) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match parse_var_int(&self.buf) {
            VarInt::Value(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::TruncatedField),
            VarInt::Malformed => Err(DecodeError::MalformedVarInt),
        }
    }

    /// Two-byte length followed by that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.bytes(usize::from(len))
    }

    /// Length-prefixed UTF-8 string without U+0000.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::NulCharacter);
        }
        Ok(s.to_owned())
    }
}

pub(crate) fn put_var_int(buf: &mut BytesMut, value: usize) -> Result<(), EncodeError> {
    if value > MAX_VAR_INT {
        return Err(EncodeError::VarIntTooLarge(value));
    }
    let mut v = value;
    loop {
        let byte = (v % 128) as u8;
        v /= 128;
        if v == 0 {
            buf.put_u8(byte);
            return Ok(());
        }
        buf.put_u8(byte | 0x80);
    }
}

pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::BinaryTooLong(data.len()))?;
    buf.put_u16(len);
    buf.put_slice(data);
    Ok(())
}

pub(crate) fn put_string(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError::StringTooLong(s.len()))?;
    buf.put_u16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// Writes a packet identifier, refusing zero.
pub(crate) fn put_packet_id(buf: &mut BytesMut, id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    buf.put_u16(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries() {
        for (value, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut buf = BytesMut::new();
            put_var_int(&mut buf, value).unwrap();
            assert_eq!(&buf[..], bytes, "encode {value}");
            assert_eq!(
                parse_var_int(bytes),
                VarInt::Value(value as u32, bytes.len()),
                "decode {value}"
            );
        }
        let mut buf = BytesMut::new();
        assert_eq!(
            put_var_int(&mut buf, 268_435_456),
            Err(EncodeError::VarIntTooLarge(268_435_456))
        );
        assert_eq!(
            parse_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            VarInt::Malformed
        );
        assert_eq!(parse_var_int(&[0xFF, 0xFF]), VarInt::Incomplete);
        assert_eq!(parse_var_int(&[]), VarInt::Incomplete);
    }

    #[test]
    fn strings() {
        let mut r = Reader::new(Bytes::from_static(
            b"\x00\x02hi\x00\x02\xC3\x28\x00\x01\x00",
        ));
        assert_eq!(r.string().unwrap(), "hi");
        assert_eq!(r.string(), Err(DecodeError::InvalidUtf8));
        assert_eq!(r.string(), Err(DecodeError::NulCharacter));
        let mut r = Reader::new(Bytes::from_static(b"\x00\x05abc"));
        assert_eq!(r.string(), Err(DecodeError::TruncatedField));
        // UTF-16 surrogate encoded as UTF-8 (U+D800) is invalid.
        let mut r = Reader::new(Bytes::from_static(b"\x00\x03\xED\xA0\x80"));
        assert_eq!(r.string(), Err(DecodeError::InvalidUtf8));
        let mut buf = BytesMut::new();
        let long = "x".repeat(65_536);
        assert_eq!(
            put_string(&mut buf, &long),
            Err(EncodeError::StringTooLong(65_536))
        );
    }
}

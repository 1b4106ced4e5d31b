//! The few facts wulian reads from an X.509 certificate: the subject's common name (a device
//! certificate's CN is the device id), the serial number (for revocation) and the subject for
//! display. A small DER walker rather than a full X.509 crate: signatures and validity are
//! checked by webpki during the TLS handshake, so this only has to find fields, and it refuses
//! anything it cannot walk.

/// What [`parse`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Lowercase hex of the serial number, without leading zero bytes.
    pub serial: String,
    /// The subject's common name, if any.
    pub subject_cn: Option<String>,
    /// The issuer's common name, if any.
    pub issuer_cn: Option<String>,
}

/// Error for DER that is not a certificate we can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a readable X.509 certificate: {0}")]
pub struct ParseError(&'static str);

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION_TAG: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

/// Reads one TLV from the front of `input`: (tag, value, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), ParseError> {
    let (&tag, rest) = input.split_first().ok_or(ParseError("truncated"))?;
    let (&first, mut rest) = rest.split_first().ok_or(ParseError("truncated"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(ParseError("bad length"));
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err(ParseError("truncated"));
    }
    let (value, rest) = rest.split_at(len);
    Ok((tag, value, rest))
}

fn expect(input: &[u8], want: u8) -> Result<(&[u8], &[u8]), ParseError> {
    let (tag, value, rest) = tlv(input)?;
    if tag != want {
        return Err(ParseError("unexpected field"));
    }
    Ok((value, rest))
}

/// The first common name in a Name (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(name: &[u8]) -> Result<Option<String>, ParseError> {
    let mut rdns = name;
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, rest) = expect(attributes, SEQUENCE)?;
            attributes = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid == CN_OID {
                // UTF8String, PrintableString, IA5String...: all carry the text as bytes.
                let (_, text, _) = tlv(value)?;
                return std::str::from_utf8(text)
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| ParseError("common name is not UTF-8"));
            }
        }
    }
    Ok(None)
}

/// Reads the serial number and the subject and issuer common names of a DER certificate.
pub fn parse(der: &[u8]) -> Result<CertificateFacts, ParseError> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION_TAG) {
        rest = tlv(rest)?.2;
    }
    let (serial, rest) = expect(rest, INTEGER)?;
    let (_signature_algorithm, rest) = expect(rest, SEQUENCE)?;
    let (issuer, rest) = expect(rest, SEQUENCE)?;
    let (_validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    Ok(CertificateFacts {
        serial: serial_hex(serial),
        subject_cn: common_name(subject)?,
        issuer_cn: common_name(issuer)?,
    })
}

/// Lowercase hex without leading zero bytes (the sign byte DER adds).
fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[start..];
    if trimmed.is_empty() {
        return "00".to_string();
    }
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalises a serial number as people write it (`0A:1B…`, `0x0a1b`, with or without
/// leading zeros) to the form [`parse`] reports. `None` if it is not hex.
pub fn normalize_serial(text: &str) -> Option<String> {
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let digits = digits.to_ascii_lowercase();
    let digits = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes: Vec<u8> = (0..digits.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect();
    Some(serial_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials() {
        assert_eq!(normalize_serial("0A:1B").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("00a1b").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("0x00FF").as_deref(), Some("ff"));
        assert_eq!(normalize_serial("zz"), None);
        assert_eq!(serial_hex(&[0, 0x80, 1]), "8001");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_err());
        assert!(parse(&[0x30, 0x03, 0x30, 0x01]).is_err());
    }
}

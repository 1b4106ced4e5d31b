//! Request bodies: JSON as the device contract defines it (docs/device-contract.md), given as
//! application/json (Content-Format 50) or with no Content-Format at all — or the same
//! document in CBOR (60), which saves a constrained device a third of the bytes. CBOR is
//! translated to JSON here so the pipeline validates one format only.

use coap_lite::ResponseType;

use crate::wire::{FORMAT_CBOR, FORMAT_JSON, Reply};

/// The JSON bytes of a request body, 4.00 for CBOR that is not a JSON-like document, or 4.15
/// for a Content-Format we do not take.
pub fn to_json(content_format: Option<u16>, payload: &[u8]) -> Result<Vec<u8>, Reply> {
    match content_format {
        None | Some(FORMAT_JSON) => Ok(payload.to_vec()),
        Some(FORMAT_CBOR) => cbor_to_json(payload),
        Some(other) => Err(Reply::error(
            ResponseType::UnsupportedContentFormat,
            format!(
                "Content-Format {other} is not supported; send application/json (50) or application/cbor (60)"
            ),
        )),
    }
}

fn cbor_to_json(payload: &[u8]) -> Result<Vec<u8>, Reply> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let invalid =
        |why: String| Reply::error(ResponseType::BadRequest, format!("invalid_cbor: {why}"));
    let mut reader = payload;
    let value: serde_json::Value =
        ciborium::de::from_reader(&mut reader).map_err(|e| invalid(e.to_string()))?;
    if !reader.is_empty() {
        return Err(invalid(format!(
            "{} bytes after the CBOR item",
            reader.len()
        )));
    }
    serde_json::to_vec(&value).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_becomes_the_same_json() {
        // {"temp": 21.5, "ok": true, "n": 3} in CBOR.
        let cbor = b"\xa3\x64temp\xf9\x4d\x60\x62ok\xf5\x61n\x03";
        let json: serde_json::Value =
            serde_json::from_slice(&to_json(Some(60), cbor).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"temp": 21.5, "ok": true, "n": 3}));
        // An array of points, as the contract allows.
        let cbor = b"\x81\xa2\x62ts\x19\x03\xe8\x66values\xa1\x61t\x01";
        let json: serde_json::Value =
            serde_json::from_slice(&to_json(Some(60), cbor).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!([{"ts": 1000, "values": {"t": 1}}]));
    }

    #[test]
    fn bad_cbor_and_other_formats_are_refused() {
        for bad in [
            &b"\xa1\x64te"[..],
            b"\xa1\x01\x02",
            b"\x01\x02",
            b"\x44abcd",
        ] {
            let e = to_json(Some(60), bad).unwrap_err();
            assert_eq!(e.code, ResponseType::BadRequest, "{bad:?}");
            assert!(String::from_utf8_lossy(&e.payload).starts_with("invalid_cbor: "));
        }
        assert_eq!(
            to_json(Some(0), b"1").unwrap_err().code,
            ResponseType::UnsupportedContentFormat
        );
        assert_eq!(to_json(None, b"{}").unwrap(), b"{}");
    }
}

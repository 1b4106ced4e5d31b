//! The message layer (RFC 7252 §3–§4): what a datagram is before any resource sees it, and
//! the bytes of what goes back. coap-lite does the encoding and decoding; the rules about
//! which messages get a Reset, which are ignored and how responses are typed are ours.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};

/// The fixed four bytes every CoAP message starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub version: u8,
    pub confirmable: bool,
    /// Code class 0 (a request method, known or not).
    pub is_request: bool,
    pub token_length: usize,
    pub message_id: u16,
}

/// Reads the fixed header, without trusting anything after it. None below four bytes.
pub fn peek_header(datagram: &[u8]) -> Option<RawHeader> {
    let [first, code, id_hi, id_lo, ..] = *datagram else {
        return None;
    };
    Some(RawHeader {
        version: first >> 6,
        confirmable: (first >> 4) & 0x3 == 0,
        // Class 0 with a non-zero detail is a request; 0.00 is the Empty message.
        is_request: code >> 5 == 0 && code != 0,
        token_length: usize::from(first & 0x0F),
        message_id: u16::from_be_bytes([id_hi, id_lo]),
    })
}

/// The token of a datagram whose options may be unreadable (for answering an oversized
/// request). None when the token length is invalid or the token is cut off.
pub fn peek_token(datagram: &[u8], header: &RawHeader) -> Option<Vec<u8>> {
    if header.token_length > 8 {
        return None;
    }
    datagram.get(4..4 + header.token_length).map(<[u8]>::to_vec)
}

/// What the message layer makes of one datagram.
#[derive(Debug)]
pub enum Inbound {
    /// A Confirmable or Non-confirmable request (its method may still be unknown).
    Request(Packet),
    /// A Confirmable message we cannot process (a CoAP ping, a format error, a response to a
    /// request we never sent): answered with a Reset of this message id (§4.2, §4.3).
    Reset { message_id: u16, malformed: bool },
    /// Dropped silently (§4.2, §4.3: not Confirmable, or not CoAP version 1).
    Ignore { malformed: bool },
}

pub fn classify(datagram: &[u8]) -> Inbound {
    let Some(header) = peek_header(datagram) else {
        return Inbound::Ignore { malformed: true };
    };
    if header.version != 1 {
        // §3: messages with unknown version numbers MUST be silently ignored.
        return Inbound::Ignore { malformed: true };
    }
    let reject = |malformed| {
        if header.confirmable {
            Inbound::Reset {
                message_id: header.message_id,
                malformed,
            }
        } else {
            Inbound::Ignore { malformed }
        }
    };
    let Ok(packet) = Packet::from_bytes(datagram) else {
        return reject(true);
    };
    match packet.header.get_type() {
        // We send no Confirmable messages, so no ACK or RST can be expected: nothing to match.
        MessageType::Acknowledgement | MessageType::Reset => {
            return Inbound::Ignore { malformed: false };
        }
        MessageType::Confirmable | MessageType::NonConfirmable => {}
    }
    match packet.header.code {
        MessageClass::Empty => {
            let bare = packet.get_token().is_empty()
                && packet.options().next().is_none()
                && packet.payload.is_empty();
            // §4.3: a Non-confirmable message MUST NOT be Empty; §1.2: an Empty message has
            // nothing after the header. A bare Empty CON is a "CoAP ping": answered by RST.
            reject(!bare || !header.confirmable)
        }
        MessageClass::Request(_) => Inbound::Request(packet),
        MessageClass::Reserved(code) if code >> 5 == 0 => Inbound::Request(packet),
        // A response nobody asked for.
        MessageClass::Response(_) => reject(false),
        MessageClass::Reserved(_) => reject(true),
    }
}

/// A Reset for `message_id`: four bytes, version 1, type RST, code 0.00, no token.
pub fn reset(message_id: u16) -> Vec<u8> {
    let [hi, lo] = message_id.to_be_bytes();
    vec![0x70, 0x00, hi, lo]
}

/// Content-Format ids (RFC 7252 §12.3).
pub const FORMAT_JSON: u16 = 50;
pub const FORMAT_CBOR: u16 = 60;

/// A response before it is typed and numbered.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: ResponseType,
    pub payload: Vec<u8>,
    pub content_format: Option<u16>,
    /// Seconds until retrying makes sense (5.03).
    pub max_age: Option<u32>,
    /// The largest request body accepted (4.13, RFC 7959 §4).
    pub size1: Option<u32>,
}

impl Reply {
    pub fn new(code: ResponseType) -> Reply {
        Reply {
            code,
            payload: Vec::new(),
            content_format: None,
            max_age: None,
            size1: None,
        }
    }

    /// An error response with a diagnostic payload (§5.5.2: UTF-8 text, no Content-Format).
    pub fn error(code: ResponseType, diagnostic: impl Into<String>) -> Reply {
        Reply {
            payload: diagnostic.into().into_bytes(),
            ..Reply::new(code)
        }
    }

    pub fn json(code: ResponseType, body: String) -> Reply {
        Reply {
            payload: body.into_bytes(),
            content_format: Some(FORMAT_JSON),
            ..Reply::new(code)
        }
    }

    pub fn with_max_age(mut self, seconds: u32) -> Reply {
        self.max_age = Some(seconds);
        self
    }

    pub fn with_size1(mut self, bytes: u32) -> Reply {
        self.size1 = Some(bytes);
        self
    }

    pub fn is_error(&self) -> bool {
        self.code.is_error()
    }

    /// The response to a request: piggybacked in the ACK of a Confirmable request (same
    /// message id), or a Non-confirmable message with `fresh_id` for a Non-confirmable one;
    /// the request's token either way (§5.2).
    pub fn encode(
        &self,
        request_confirmable: bool,
        request_id: u16,
        fresh_id: u16,
        token: &[u8],
    ) -> Vec<u8> {
        let mut packet = Packet::new();
        packet.header.set_version(1);
        if request_confirmable {
            packet.header.set_type(MessageType::Acknowledgement);
            packet.header.message_id = request_id;
        } else {
            packet.header.set_type(MessageType::NonConfirmable);
            packet.header.message_id = fresh_id;
        }
        packet.header.code = MessageClass::Response(self.code);
        // Tokens come from parsed requests (at most 8 bytes); a longer one would be a bug here.
        packet.set_token(token.iter().copied().take(8).collect());
        if let Some(format) = self.content_format {
            packet.add_option(CoapOption::ContentFormat, uint_option(u32::from(format)));
        }
        if let Some(age) = self.max_age {
            packet.add_option(CoapOption::MaxAge, uint_option(age));
        }
        if let Some(size) = self.size1 {
            packet.add_option(CoapOption::Size1, uint_option(size));
        }
        packet.payload = self.payload.clone();
        // Without a size limit encoding cannot fail for the options we set; should it, the
        // empty result is not sent.
        packet.to_bytes_unlimited().unwrap_or_else(|error| {
            tracing::error!(error = ?error, "CoAP response could not be encoded.");
            Vec::new()
        })
    }
}

/// An unsigned option value in the fewest bytes (§3.2: zero is the empty string).
pub fn uint_option(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Reads an unsigned option value of at most `max_len` bytes.
pub fn read_uint(value: &[u8], max_len: usize) -> Option<u32> {
    if value.len() > max_len.min(4) {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: u8, code: u8, id: u16, token: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40 | (kind << 4) | token.len() as u8, code];
        out.extend(id.to_be_bytes());
        out.extend(token);
        out
    }

    #[test]
    fn pings_and_format_errors_get_resets_only_when_confirmable() {
        assert!(matches!(
            classify(&request(0, 0, 7, &[])),
            Inbound::Reset {
                message_id: 7,
                malformed: false
            }
        ));
        // Empty with a token: a format error.
        assert!(matches!(
            classify(&request(0, 0, 8, &[1])),
            Inbound::Reset {
                message_id: 8,
                malformed: true
            }
        ));
        assert!(matches!(
            classify(&request(1, 0, 9, &[])),
            Inbound::Ignore { malformed: true }
        ));
        // Token length 9..15 is a format error (§3).
        let mut bad = request(0, 1, 10, &[]);
        bad[0] |= 0x09;
        assert!(matches!(
            classify(&bad),
            Inbound::Reset { message_id: 10, .. }
        ));
        bad[0] = (bad[0] & 0xCF) | 0x10;
        assert!(matches!(
            classify(&bad),
            Inbound::Ignore { malformed: true }
        ));
        // Option delta 15 is reserved.
        let mut bad = request(0, 1, 11, &[]);
        bad.push(0xF0);
        assert!(matches!(
            classify(&bad),
            Inbound::Reset {
                message_id: 11,
                malformed: true
            }
        ));
    }

    #[test]
    fn garbage_and_other_versions_are_ignored() {
        for garbage in [
            &b""[..],
            b"\x40",
            b"\x40\x01\x00",
            b"GET / HTTP/1.1\r\n\r\n",
            &[0xFF; 64],
        ] {
            match classify(garbage) {
                Inbound::Ignore { malformed } => assert!(malformed),
                // "GET " is version 1 CON? 'G' = 0x47: version 1, CON, TKL 7, code 'E'
                // (class 2, a response) — a Confirmable response nobody asked for.
                Inbound::Reset { .. } => assert_eq!(&garbage[..1], b"G"),
                Inbound::Request(_) => panic!("{garbage:?} taken for a request"),
            }
        }
        let mut v2 = request(0, 1, 1, &[]);
        v2[0] = (v2[0] & 0x3F) | 0x80;
        assert!(matches!(classify(&v2), Inbound::Ignore { malformed: true }));
    }

    #[test]
    fn acks_resets_and_stray_responses() {
        assert!(matches!(
            classify(&request(2, 0, 1, &[])),
            Inbound::Ignore { malformed: false }
        ));
        assert!(matches!(
            classify(&request(0, 0x45, 2, &[])),
            Inbound::Reset {
                message_id: 2,
                malformed: false
            }
        ));
        assert!(matches!(
            classify(&request(1, 0x45, 3, &[])),
            Inbound::Ignore { .. }
        ));
        // Unknown method 0.31: still a request (answered 4.05 by the router).
        assert!(matches!(
            classify(&request(0, 0x1F, 4, &[])),
            Inbound::Request(_)
        ));
        // Class 7 is reserved.
        assert!(matches!(
            classify(&request(0, 0xE1, 5, &[])),
            Inbound::Reset {
                malformed: true,
                ..
            }
        ));
    }

    #[test]
    fn responses_are_piggybacked_or_non() {
        let reply = Reply::error(ResponseType::BadRequest, "invalid_json: oops");
        let ack = reply.encode(true, 0x1234, 99, &[0xAB, 0xCD]);
        let parsed = Packet::from_bytes(&ack).unwrap();
        assert_eq!(parsed.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(parsed.header.message_id, 0x1234);
        assert_eq!(parsed.get_token(), &[0xAB, 0xCD]);
        assert_eq!(
            parsed.header.code,
            MessageClass::Response(ResponseType::BadRequest)
        );
        assert_eq!(parsed.payload, b"invalid_json: oops");

        let non = Reply::json(ResponseType::Content, "[]".into()).encode(false, 0x1234, 99, &[1]);
        let parsed = Packet::from_bytes(&non).unwrap();
        assert_eq!(parsed.header.get_type(), MessageType::NonConfirmable);
        assert_eq!(parsed.header.message_id, 99);
        assert_eq!(
            parsed.get_first_option(CoapOption::ContentFormat),
            Some(&vec![50])
        );
        assert_eq!(reset(0x0102), vec![0x70, 0, 1, 2]);
    }

    #[test]
    fn uint_options() {
        assert_eq!(uint_option(0), Vec::<u8>::new());
        assert_eq!(uint_option(50), vec![50]);
        assert_eq!(uint_option(1152), vec![4, 128]);
        assert_eq!(read_uint(&[4, 128], 2), Some(1152));
        assert_eq!(read_uint(&[], 2), Some(0));
        assert_eq!(read_uint(&[1, 2, 3], 2), None);
    }
}

//! Malformed, truncated and oversized input: each case asserts the exact error (and its
//! reason code where it matters), plus a no-panic loop over pseudo-random bytes.

use bytes::BytesMut;

use crate::testutil::*;
use crate::*;

const V3: Protocol = Protocol::V311;
const V5: Protocol = Protocol::V5;

fn both(bytes: &[u8], expected: DecodeError) {
    assert_eq!(err(bytes, V3), expected, "3.1.1 {bytes:02x?}");
    assert_eq!(err(bytes, V5), expected, "5.0 {bytes:02x?}");
}

#[test]
fn every_prefix_is_incomplete() {
    for protocol in [V3, V5] {
        for p in samples(protocol) {
            let bytes = enc(&p, protocol);
            for n in 0..bytes.len() {
                assert_eq!(dec(&bytes[..n], protocol), Ok(None), "{p:?} prefix {n}");
            }
        }
    }
}

#[test]
fn remaining_length() {
    both(
        b"\x30\xFF\xFF\xFF\xFF\x01",
        DecodeError::MalformedRemainingLength,
    );
    // Detected as soon as the fifth length byte is there, before any body.
    both(
        b"\xC0\x80\x80\x80\x80",
        DecodeError::MalformedRemainingLength,
    );
    assert_eq!(dec(b"\xC0\x80\x80\x80", V5), Ok(None));
    assert_eq!(
        DecodeError::MalformedRemainingLength.reason_code(),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn too_large_from_header_alone() {
    let mut buf = BytesMut::from(&b"\x30\xFF\xFF\xFF\x7F"[..]);
    assert_eq!(
        decode(&mut buf, V5, 1000),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1000
        })
    );
    // PUBLISH "a/b" "hi" is 9 bytes in total: allowed at 9, refused at 8 from 2 bytes.
    let packet = b"\x30\x07\x00\x03a/bhi";
    assert!(matches!(
        decode(&mut BytesMut::from(&packet[..]), V3, 9),
        Ok(Some(_))
    ));
    let e = decode(&mut BytesMut::from(&packet[..2]), V3, 8).unwrap_err();
    assert_eq!(e, DecodeError::PacketTooLarge { size: 9, max: 8 });
    assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
}

#[test]
fn packet_types_and_flags() {
    both(b"\x00\x00", DecodeError::InvalidPacketType(0));
    both(b"\x00", DecodeError::InvalidPacketType(0));
    assert_eq!(err(b"\xF0\x00", V3), DecodeError::InvalidPacketType(15));
    assert!(matches!(dec(b"\xF0\x00", V5), Ok(Some(Packet::Auth(_)))));
    let flags = |packet_type, flags| DecodeError::InvalidFlags { packet_type, flags };
    both(b"\x11", flags(1, 1));
    both(b"\x28\x02\x00\x00", flags(2, 8));
    both(b"\x41\x02\x00\x01", flags(4, 1));
    both(b"\x60\x02\x00\x01", flags(6, 0));
    both(b"\x63", flags(6, 3));
    both(b"\x80\x02\x00\x01", flags(8, 0));
    both(b"\xA0", flags(10, 0));
    both(b"\xC2\x00", flags(12, 2));
    both(b"\xE1\x00", flags(14, 1));
    assert_eq!(err(b"\xF2\x00", V5), flags(15, 2));
}

#[test]
fn publish_flags() {
    both(b"\x36", DecodeError::InvalidQoS(3));
    both(b"\x3F\x05\x00\x01t\x00\x01", DecodeError::InvalidQoS(3));
    assert_eq!(err(b"\x38", V5), DecodeError::DupWithQoS0);
    // 3.1.1 is lenient about DUP on QoS 0.
    let Ok(Some(Packet::Publish(p))) = dec(b"\x38\x04\x00\x01tx", V3) else {
        panic!("expected a PUBLISH");
    };
    assert!(p.dup && p.qos == QoS::AtMostOnce);
}

#[test]
fn zero_packet_id() {
    both(b"\x32\x05\x00\x01t\x00\x00", DecodeError::ZeroPacketId);
    both(b"\x40\x02\x00\x00", DecodeError::ZeroPacketId);
    both(b"\x62\x02\x00\x00", DecodeError::ZeroPacketId);
    both(b"\x82\x06\x00\x00\x00\x01a\x00", DecodeError::ZeroPacketId);
    both(b"\xA2\x05\x00\x00\x00\x01a", DecodeError::ZeroPacketId);
    assert_eq!(
        DecodeError::ZeroPacketId.reason_code(),
        ReasonCode::ProtocolError
    );
}

#[test]
fn strings_and_topic_names() {
    both(b"\x30\x04\x00\x02\xC3\x28", DecodeError::InvalidUtf8);
    both(b"\x30\x04\x00\x02a\x00", DecodeError::NulCharacter);
    both(b"\x30\x05\x00\x03a/+", DecodeError::InvalidTopicName);
    both(b"\x30\x03\x00\x01#", DecodeError::InvalidTopicName);
    assert_eq!(
        DecodeError::InvalidTopicName.reason_code(),
        ReasonCode::TopicNameInvalid
    );
    assert_eq!(err(b"\x30\x02\x00\x00", V3), DecodeError::EmptyTopicName);
    assert_eq!(
        err(b"\x30\x03\x00\x00\x00", V5),
        DecodeError::EmptyTopicName
    );
    // Topic length runs past the end of the packet.
    both(b"\x30\x04\x00\x05ab", DecodeError::TruncatedField);
    // QoS 1 without room for the packet identifier.
    both(b"\x32\x04\x00\x01t\x00", DecodeError::TruncatedField);
    // Invalid UTF-8 in a user name and in a user property.
    assert_eq!(
        err(
            b"\x10\x10\x00\x04MQTT\x04\x80\x00\x00\x00\x00\x00\x02\xFF\xFE",
            V3
        ),
        DecodeError::InvalidUtf8
    );
    assert_eq!(
        err(b"\x40\x0B\x00\x01\x00\x07\x26\x00\x01k\x00\x01\x00", V5),
        DecodeError::NulCharacter
    );
}

#[test]
fn properties_rejected() {
    // PUBLISH "t" QoS 0 with the given property bytes.
    let publish = |props: &[u8]| {
        let mut b = vec![0x30, (4 + props.len()) as u8, 0, 1, b't', props.len() as u8];
        b.extend_from_slice(props);
        err(&b, V5)
    };
    assert_eq!(
        publish(b"\x01\x01\x01\x00"),
        DecodeError::DuplicateProperty(0x01)
    );
    assert_eq!(
        publish(b"\x23\x00\x01\x23\x00\x02"),
        DecodeError::DuplicateProperty(0x23)
    );
    let not_allowed = publish(b"\x11\x00\x00\x00\x01");
    assert_eq!(
        not_allowed,
        DecodeError::PropertyNotAllowed {
            property: 0x11,
            packet: "PUBLISH"
        }
    );
    assert_eq!(not_allowed.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(publish(b"\x05\x00"), DecodeError::UnknownProperty(0x05));
    assert_eq!(publish(b"\x80\x01"), DecodeError::UnknownProperty(0x80));
    let invalid = |property| DecodeError::InvalidPropertyValue { property };
    assert_eq!(publish(b"\x01\x02"), invalid(0x01));
    assert_eq!(publish(b"\x23\x00\x00"), invalid(0x23));
    assert_eq!(invalid(0x23).reason_code(), ReasonCode::TopicAliasInvalid);
    assert_eq!(publish(b"\x0B\x00"), invalid(0x0B));
    assert_eq!(invalid(0x0B).reason_code(), ReasonCode::ProtocolError);
    assert_eq!(publish(b"\x08\x00\x01#"), invalid(0x08));
    assert_eq!(
        publish(b"\x0B\xFF\xFF\xFF\xFF\x01"),
        DecodeError::MalformedVarInt
    );
    assert_eq!(publish(b"\x02\x00\x00"), DecodeError::TruncatedField);
    // Property length longer than the packet.
    assert_eq!(
        err(b"\x30\x05\x00\x01t\x09\x01", V5),
        DecodeError::TruncatedField
    );
    // Several subscription identifiers are fine on PUBLISH, not on SUBSCRIBE.
    assert!(
        dec(b"\x30\x08\x00\x01t\x04\x0B\x01\x0B\x02", V5)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        err(b"\x82\x0A\x00\x01\x04\x0B\x01\x0B\x02\x00\x01a\x00", V5),
        DecodeError::DuplicateProperty(0x0B)
    );

    // CONNECT with the given property bytes (client id "c", no will).
    let connect = |props: &[u8]| {
        let mut b = vec![
            0x10,
            (14 + props.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            2,
            0,
            0,
        ];
        b.push(props.len() as u8);
        b.extend_from_slice(props);
        b.extend_from_slice(b"\x00\x01c");
        err(&b, V5)
    };
    assert_eq!(
        connect(b"\x18\x00\x00\x00\x01"),
        DecodeError::PropertyNotAllowed {
            property: 0x18,
            packet: "CONNECT"
        }
    );
    assert_eq!(connect(b"\x21\x00\x00"), invalid(0x21));
    assert_eq!(connect(b"\x27\x00\x00\x00\x00"), invalid(0x27));
    assert_eq!(connect(b"\x17\x02"), invalid(0x17));
    assert_eq!(
        connect(b"\x21\x00\x01\x21\x00\x01"),
        DecodeError::DuplicateProperty(0x21)
    );
    assert_eq!(
        connect(b"\x16\x00\x01d"),
        DecodeError::AuthDataWithoutMethod
    );
    // User properties may repeat.
    assert!(matches!(
        dec(b"\x10\x1C\x00\x04MQTT\x05\x02\x00\x00\x0E\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01v\x00\x01c", V5),
        Ok(Some(Packet::Connect(_)))
    ));
    // CONNACK: maximum QoS must be 0 or 1.
    assert_eq!(err(b"\x20\x05\x00\x00\x02\x24\x02", V5), invalid(0x24));
    // PUBACK may not carry a topic alias.
    assert_eq!(
        err(b"\x40\x07\x00\x01\x00\x03\x23\x00\x01", V5),
        DecodeError::PropertyNotAllowed {
            property: 0x23,
            packet: "PUBACK"
        }
    );
}

#[test]
fn connect_rejected() {
    // Header up to the flags for the given name and level; then keep alive and client id.
    let connect = |name: &[u8], level: u8, flags: u8, rest: &[u8]| {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 60]);
        body.extend_from_slice(rest);
        let mut b = vec![0x10, body.len() as u8];
        b.extend_from_slice(&body);
        b
    };
    let id = b"\x00\x01c";
    let e = err(&connect(b"MQIsdp", 3, 2, id), V3);
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion(3));
    assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    both(
        &connect(b"MQTT", 6, 2, id),
        DecodeError::UnsupportedProtocolVersion(6),
    );
    both(
        &connect(b"MQTT", 3, 2, id),
        DecodeError::UnsupportedProtocolVersion(3),
    );
    both(
        &connect(b"MQTX", 4, 2, id),
        DecodeError::InvalidProtocolName,
    );
    both(&connect(b"MQTT", 4, 3, id), DecodeError::ReservedBitSet);
    // Will QoS 1 or will retain without the will flag.
    both(
        &connect(b"MQTT", 4, 0x08, id),
        DecodeError::InvalidWillFlags,
    );
    both(
        &connect(b"MQTT", 4, 0x20, id),
        DecodeError::InvalidWillFlags,
    );
    both(&connect(b"MQTT", 4, 0x1C, id), DecodeError::InvalidQoS(3));
    // Password without user name: malformed in 3.1.1, fine in 5.0.
    both(
        &connect(b"MQTT", 4, 0x40, b"\x00\x01c\x00\x01p"),
        DecodeError::PasswordWithoutUsername,
    );
    let Ok(Some(Packet::Connect(c))) =
        dec(&connect(b"MQTT", 5, 0x40, b"\x00\x00\x01c\x00\x01p"), V5)
    else {
        panic!("expected CONNECT");
    };
    assert_eq!((c.username, c.password.as_deref()), (None, Some(&b"p"[..])));
    // Will topic with a wildcard.
    both(
        &connect(b"MQTT", 4, 0x04, b"\x00\x01c\x00\x01+\x00\x00"),
        DecodeError::InvalidTopicName,
    );
    // Flags promise a user name that is not there.
    both(&connect(b"MQTT", 4, 0x80, id), DecodeError::TruncatedField);
    // Bytes after the last field.
    both(
        &connect(b"MQTT", 4, 0x02, b"\x00\x01cX"),
        DecodeError::TrailingBytes,
    );
    // Empty client id is accepted.
    let Ok(Some(Packet::Connect(c))) = dec(&connect(b"MQTT", 4, 0x02, b"\x00\x00"), V3) else {
        panic!("expected CONNECT");
    };
    assert_eq!(c.client_id, "");
}

#[test]
fn subscribe_rejected() {
    assert_eq!(err(b"\x82\x02\x00\x01", V3), DecodeError::EmptySubscription);
    assert_eq!(
        err(b"\x82\x03\x00\x01\x00", V5),
        DecodeError::EmptySubscription
    );
    assert_eq!(
        DecodeError::EmptySubscription.reason_code(),
        ReasonCode::ProtocolError
    );
    assert_eq!(err(b"\xA2\x02\x00\x01", V3), DecodeError::EmptyUnsubscribe);
    assert_eq!(
        err(b"\xA2\x03\x00\x01\x00", V5),
        DecodeError::EmptyUnsubscribe
    );
    // Filter "a" with the given options byte.
    let v3 = |o: u8| err(&[0x82, 6, 0, 1, 0, 1, b'a', o], V3);
    let v5 = |o: u8| err(&[0x82, 7, 0, 1, 0, 0, 1, b'a', o], V5);
    assert_eq!(v3(0x03), DecodeError::InvalidQoS(3));
    assert_eq!(v3(0x04), DecodeError::ReservedBitSet);
    assert_eq!(v3(0x80), DecodeError::ReservedBitSet);
    assert_eq!(v5(0x03), DecodeError::InvalidQoS(3));
    assert_eq!(v5(0x30), DecodeError::InvalidRetainHandling);
    assert_eq!(v5(0x40), DecodeError::ReservedBitSet);
    assert_eq!(v5(0x80), DecodeError::ReservedBitSet);
    // Options byte missing.
    assert_eq!(
        err(b"\x82\x05\x00\x01\x00\x01a", V3),
        DecodeError::TruncatedField
    );
    // No local on a shared subscription.
    assert_eq!(
        err(b"\x82\x12\x00\x01\x00\x00\x0C$share/g/a/b\x04", V5),
        DecodeError::NoLocalOnSharedSubscription
    );
    // Invalid filters are decoded; the broker answers them with SUBACK 0x8F.
    assert!(
        dec(b"\x82\x08\x00\x01\x00\x03a#b\x00", V3)
            .unwrap()
            .is_some()
    );
}

#[test]
fn reason_codes_rejected() {
    assert_eq!(
        err(b"\x20\x02\x00\x06", V3),
        DecodeError::InvalidReasonCode(6)
    );
    assert_eq!(err(b"\x20\x02\x02\x00", V3), DecodeError::ReservedBitSet);
    assert_eq!(
        err(b"\x20\x03\x00\x03\x00", V5),
        DecodeError::InvalidReasonCode(3)
    );
    let e = err(b"\x20\x03\x00\x10\x00", V5);
    assert_eq!(
        e,
        DecodeError::ReasonCodeNotAllowed {
            code: 0x10,
            packet: "CONNACK"
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(
        err(b"\x62\x03\x00\x01\x10", V5),
        DecodeError::ReasonCodeNotAllowed {
            code: 0x10,
            packet: "PUBREL"
        }
    );
    assert_eq!(
        err(b"\x90\x03\x00\x01\x03", V3),
        DecodeError::InvalidReasonCode(3)
    );
    assert_eq!(
        err(b"\x90\x03\x00\x01\x87", V3),
        DecodeError::InvalidReasonCode(0x87)
    );
    assert_eq!(
        err(b"\xE0\x01\x18", V5),
        DecodeError::ReasonCodeNotAllowed {
            code: 0x18,
            packet: "DISCONNECT"
        }
    );
    assert_eq!(
        err(b"\xF0\x01\x04", V5),
        DecodeError::ReasonCodeNotAllowed {
            code: 0x04,
            packet: "AUTH"
        }
    );
}

#[test]
fn trailing_bytes() {
    both(b"\xC0\x01\x00", DecodeError::TrailingBytes);
    both(b"\xD0\x01\x00", DecodeError::TrailingBytes);
    assert_eq!(err(b"\x40\x03\x00\x01\x00", V3), DecodeError::TrailingBytes);
    assert_eq!(err(b"\xB0\x03\x00\x01\x00", V3), DecodeError::TrailingBytes);
    assert_eq!(err(b"\xE0\x01\x00", V3), DecodeError::TrailingBytes);
    assert_eq!(err(b"\x20\x03\x00\x00\x00", V3), DecodeError::TrailingBytes);
}

#[test]
fn reason_code_from_u8() {
    for byte in 0..=255u8 {
        if let Some(code) = ReasonCode::from_u8(byte) {
            assert_eq!(code as u8, byte);
        }
    }
    assert_eq!(ReasonCode::from_u8(0x87), Some(ReasonCode::NotAuthorized));
    assert_eq!(ReasonCode::from_u8(0x03), None);
    assert_eq!(ReasonCode::from_u8(0xA3), None);
    assert_eq!((0..=255u8).filter_map(ReasonCode::from_u8).count(), 43);
}

/// xorshift64*: deterministic pseudo-random bytes without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes until the buffer runs dry or errors. Anything that decodes must re-encode and
/// decode to the same packet. Returns how many packets decoded.
fn decode_all(bytes: &[u8], protocol: Protocol) -> usize {
    let mut buf = BytesMut::from(bytes);
    let mut n = 0;
    while let Ok(Some(p)) = decode(&mut buf, protocol, 4096) {
        let again = enc(&p, protocol_of(&p, protocol));
        assert_eq!(dec(&again, protocol), Ok(Some(p)), "from {bytes:02x?}");
        n += 1;
    }
    n
}

fn protocol_of(p: &Packet, protocol: Protocol) -> Protocol {
    match p {
        Packet::Connect(c) => c.protocol,
        _ => protocol,
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let len = rng.below(48);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make plausible headers common: a valid type nibble and a small remaining length.
        if len > 2 && rng.below(2) == 0 {
            bytes[0] = (rng.below(16) as u8) << 4 | [0, 2, 0][rng.below(3)];
            bytes[1] = (len - 2) as u8;
        }
        decoded += decode_all(&bytes, V3) + decode_all(&bytes, V5);
    }
    eprintln!("garbage: {decoded} packets decoded");
    assert!(decoded > 50, "only {decoded} packets decoded");
}

#[test]
fn mutated_packets_never_panic() {
    let mut rng = Rng(42);
    let mut decoded = 0;
    for protocol in [V3, V5] {
        let encoded: Vec<Vec<u8>> = samples(protocol).iter().map(|p| enc(p, protocol)).collect();
        for _ in 0..20_000 {
            let mut bytes = encoded[rng.below(encoded.len())].clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[i] = rng.next() as u8,
                    1 => bytes[i] ^= 1 << rng.below(8),
                    _ => bytes.truncate(i.max(1)),
                }
            }
            decoded += decode_all(&bytes, protocol);
        }
    }
    eprintln!("mutated: {decoded} packets decoded");
    assert!(decoded > 1000, "only {decoded} packets decoded");
}

//! Byte-level encoding tests (expected bytes written by hand from the spec) and
//! decode(encode(p)) == p round trips for every packet type in both protocols.

use bytes::{Bytes, BytesMut};

use crate::testutil::*;
use crate::*;

const V3: Protocol = Protocol::V311;
const V5: Protocol = Protocol::V5;

/// Encodes `p`, compares with `expected`, then decodes `expected` back to `p`.
fn both_ways(p: &Packet, protocol: Protocol, expected: &[u8]) {
    assert_eq!(enc(p, protocol), expected, "encode {p:?}");
    assert_eq!(
        dec(expected, protocol),
        Ok(Some(p.clone())),
        "decode {expected:02x?}"
    );
}

#[test]
fn connect_v311_as_mosquitto_pub_sends_it() {
    // mosquitto_pub -V mqttv311 -i mosq-pub -u user -P pass (keepalive 60, clean session)
    let mut c = connect(V3);
    c.client_id = "mosq-pub".to_owned();
    c.username = Some("user".to_owned());
    c.password = Some(Bytes::from_static(b"pass"));
    let expected = b"\x10\x20\x00\x04MQTT\x04\xC2\x00\x3C\x00\x08mosq-pub\x00\x04user\x00\x04pass";
    both_ways(&Packet::Connect(c), V3, expected);
}

#[test]
fn connect_v311_minimal_and_will() {
    let mut c = connect(V3);
    c.clean_start = false;
    c.keep_alive = 0;
    c.client_id = String::new();
    both_ways(
        &Packet::Connect(c.clone()),
        V3,
        b"\x10\x0C\x00\x04MQTT\x04\x00\x00\x00\x00\x00",
    );
    c.will = Some(LastWill {
        topic: "w".to_owned(),
        payload: Bytes::from_static(b"x"),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: props(),
    });
    // will flag 0x04 | will QoS 2 (0x10)
    both_ways(
        &Packet::Connect(c),
        V3,
        b"\x10\x12\x00\x04MQTT\x04\x14\x00\x00\x00\x00\x00\x01w\x00\x01x",
    );
}

#[test]
fn connect_v5_with_properties_and_will() {
    let mut c = connect(V5);
    c.client_id = "c1".to_owned();
    c.keep_alive = 30;
    c.properties.session_expiry_interval = Some(3600);
    c.properties.receive_maximum = Some(20);
    c.will = Some(LastWill {
        topic: "w".to_owned(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties {
            will_delay_interval: Some(5),
            ..props()
        },
    });
    let expected = b"\x10\x25\x00\x04MQTT\x05\x2E\x00\x1E\
        \x08\x11\x00\x00\x0E\x10\x21\x00\x14\
        \x00\x02c1\
        \x05\x18\x00\x00\x00\x05\x00\x01w\x00\x03bye";
    both_ways(&Packet::Connect(c), V5, expected);
}

#[test]
fn connect_uses_its_own_protocol() {
    // The connection protocol argument does not apply to CONNECT.
    let c = Packet::Connect(connect(V5));
    assert_eq!(enc(&c, V3), enc(&c, V5));
    assert_eq!(dec(&enc(&c, V5), V3), Ok(Some(c)));
}

#[test]
fn connack() {
    let ca = |session_present, code| {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            properties: props(),
        })
    };
    both_ways(&ca(true, ReasonCode::Success), V3, b"\x20\x02\x01\x00");
    both_ways(
        &ca(false, ReasonCode::NotAuthorized),
        V3,
        b"\x20\x02\x00\x05",
    );
    both_ways(
        &ca(false, ReasonCode::NotAuthorized),
        V5,
        b"\x20\x03\x00\x87\x00",
    );
    let mut p = ca(false, ReasonCode::Success);
    if let Packet::ConnAck(c) = &mut p {
        c.properties.topic_alias_maximum = Some(10);
        c.properties.assigned_client_identifier = Some("ab".to_owned());
    }
    both_ways(&p, V5, b"\x20\x0B\x00\x00\x08\x12\x00\x02ab\x22\x00\x0A");
}

#[test]
fn connack_v311_return_code_mapping() {
    for (code, byte) in [
        (ReasonCode::Success, 0u8),
        (ReasonCode::UnsupportedProtocolVersion, 1),
        (ReasonCode::ClientIdentifierNotValid, 2),
        (ReasonCode::ServerUnavailable, 3),
        (ReasonCode::ServerBusy, 3),
        (ReasonCode::Banned, 3),
        (ReasonCode::UnspecifiedError, 3),
        (ReasonCode::BadUserNameOrPassword, 4),
        (ReasonCode::NotAuthorized, 5),
    ] {
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties {
                reason_string: Some("dropped for 3.1.1".to_owned()),
                ..props()
            },
        });
        assert_eq!(enc(&p, V3), [0x20, 0x02, 0x00, byte], "{code:?}");
    }
}

#[test]
fn publish() {
    let p = crate::testutil::publish("a/b", QoS::AtMostOnce, 0, b"hi");
    both_ways(&Packet::Publish(p.clone()), V3, b"\x30\x07\x00\x03a/bhi");
    both_ways(&Packet::Publish(p), V5, b"\x30\x08\x00\x03a/b\x00hi");

    let mut p = crate::testutil::publish("a/b", QoS::AtLeastOnce, 10, b"hi");
    p.dup = true;
    p.retain = true;
    both_ways(&Packet::Publish(p), V3, b"\x3B\x09\x00\x03a/b\x00\x0Ahi");

    let mut p = crate::testutil::publish("t", QoS::ExactlyOnce, 0x1234, b"x");
    p.properties.payload_format_indicator = Some(1);
    p.properties.topic_alias = Some(5);
    p.properties.user_properties = vec![user("k", "v")];
    both_ways(
        &Packet::Publish(p.clone()),
        V5,
        b"\x34\x13\x00\x01t\x12\x34\x0C\x01\x01\x23\x00\x05\x26\x00\x01k\x00\x01vx",
    );
    // 3.1.1 drops the properties.
    p.properties = props();
    both_ways(&Packet::Publish(p), V3, b"\x34\x06\x00\x01t\x12\x34x");

    let mut p = crate::testutil::publish("", QoS::AtMostOnce, 0, b"");
    p.properties.topic_alias = Some(1);
    both_ways(&Packet::Publish(p), V5, b"\x30\x06\x00\x00\x03\x23\x00\x01");
}

#[test]
fn publish_large_payload_uses_multibyte_remaining_length() {
    static PAYLOAD: [u8; 200] = [7; 200];
    let p = Packet::Publish(crate::testutil::publish("t", QoS::AtMostOnce, 0, &PAYLOAD));
    let bytes = enc(&p, V3);
    // 3 (topic) + 200 = 203 = 0xCB -> 0xCB 0x01
    assert_eq!(&bytes[..5], b"\x30\xCB\x01\x00\x01");
    assert_eq!(bytes.len(), 3 + 203);
    assert_eq!(dec(&bytes, V3), Ok(Some(p)));
}

#[test]
fn acks() {
    for (make, first) in [
        (Packet::PubAck as fn(Ack) -> Packet, 0x40u8),
        (Packet::PubRec, 0x50),
        (Packet::PubRel, 0x62),
        (Packet::PubComp, 0x70),
    ] {
        both_ways(&make(ack(0x0102)), V3, &[first, 2, 1, 2]);
        both_ways(&make(ack(0x0102)), V5, &[first, 2, 1, 2]);
        // Reason string only: full form with Success code.
        let mut a = ack(1);
        a.properties.reason_string = Some("r".to_owned());
        both_ways(
            &make(a.clone()),
            V5,
            &[first, 8, 0, 1, 0, 4, 0x1F, 0, 1, b'r'],
        );
        // 3.1.1 drops code and properties.
        assert_eq!(enc(&make(a), V3), [first, 2, 0, 1]);
    }
    let code = |packet_id, code| Ack {
        packet_id,
        code,
        properties: props(),
    };
    both_ways(
        &Packet::PubAck(code(1, ReasonCode::NoMatchingSubscribers)),
        V5,
        b"\x40\x03\x00\x01\x10",
    );
    both_ways(
        &Packet::PubRel(code(3, ReasonCode::PacketIdentifierNotFound)),
        V5,
        b"\x62\x03\x00\x03\x92",
    );
    // A 5.0 ack with reason code and empty property length decodes too.
    assert_eq!(
        dec(b"\x50\x04\x00\x01\x80\x00", V5),
        Ok(Some(Packet::PubRec(code(1, ReasonCode::UnspecifiedError))))
    );
}

#[test]
fn subscribe() {
    let s = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![sub("a/b", QoS::AtLeastOnce), sub("c/#", QoS::ExactlyOnce)],
        properties: props(),
    });
    both_ways(&s, V3, b"\x82\x0E\x00\x01\x00\x03a/b\x01\x00\x03c/#\x02");
    both_ways(
        &s,
        V5,
        b"\x82\x0F\x00\x01\x00\x00\x03a/b\x01\x00\x03c/#\x02",
    );

    let s = Subscribe {
        packet_id: 2,
        filters: vec![SubscribeFilter {
            filter: "a".to_owned(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        }],
        properties: Properties {
            subscription_identifiers: vec![300],
            ..props()
        },
    };
    both_ways(
        &Packet::Subscribe(s.clone()),
        V5,
        b"\x82\x0A\x00\x02\x03\x0B\xAC\x02\x00\x01a\x2D",
    );
    // 3.1.1 keeps only the QoS bits of the options.
    assert_eq!(
        enc(&Packet::Subscribe(s), V3),
        b"\x82\x06\x00\x02\x00\x01a\x01"
    );
}

#[test]
fn suback() {
    let s = Packet::SubAck(SubAck {
        packet_id: 1,
        codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::GRANTED_QOS0,
            ReasonCode::NotAuthorized,
        ],
        properties: props(),
    });
    both_ways(&s, V5, b"\x90\x06\x00\x01\x00\x01\x00\x87");
    // Every 5.0 error code is 0x80 in 3.1.1.
    assert_eq!(enc(&s, V3), b"\x90\x05\x00\x01\x01\x00\x80");
    assert_eq!(
        dec(b"\x90\x05\x00\x01\x01\x00\x80", V3),
        Ok(Some(Packet::SubAck(SubAck {
            packet_id: 1,
            codes: vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::GRANTED_QOS0,
                ReasonCode::UnspecifiedError
            ],
            properties: props(),
        })))
    );
}

#[test]
fn unsubscribe_and_unsuback() {
    let u = Packet::Unsubscribe(Unsubscribe {
        packet_id: 3,
        filters: vec!["a/b".to_owned()],
        properties: props(),
    });
    both_ways(&u, V3, b"\xA2\x07\x00\x03\x00\x03a/b");
    both_ways(&u, V5, b"\xA2\x08\x00\x03\x00\x00\x03a/b");

    let ua = UnsubAck {
        packet_id: 3,
        codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        properties: props(),
    };
    both_ways(
        &Packet::UnsubAck(ua.clone()),
        V5,
        b"\xB0\x05\x00\x03\x00\x00\x11",
    );
    // 3.1.1 UNSUBACK has no reason codes.
    assert_eq!(enc(&Packet::UnsubAck(ua), V3), b"\xB0\x02\x00\x03");
    assert_eq!(
        dec(b"\xB0\x02\x00\x03", V3),
        Ok(Some(Packet::UnsubAck(UnsubAck {
            packet_id: 3,
            codes: vec![],
            properties: props()
        })))
    );
}

#[test]
fn ping() {
    for protocol in [V3, V5] {
        both_ways(&Packet::PingReq, protocol, b"\xC0\x00");
        both_ways(&Packet::PingResp, protocol, b"\xD0\x00");
    }
}

#[test]
fn disconnect() {
    let d = |code, properties| Packet::Disconnect(Disconnect { code, properties });
    both_ways(
        &d(ReasonCode::NORMAL_DISCONNECTION, props()),
        V3,
        b"\xE0\x00",
    );
    both_ways(
        &d(ReasonCode::NORMAL_DISCONNECTION, props()),
        V5,
        b"\xE0\x00",
    );
    both_ways(
        &d(ReasonCode::ServerShuttingDown, props()),
        V5,
        b"\xE0\x01\x8B",
    );
    let expiry = Properties {
        session_expiry_interval: Some(0),
        ..props()
    };
    both_ways(
        &d(ReasonCode::Success, expiry.clone()),
        V5,
        b"\xE0\x07\x00\x05\x11\x00\x00\x00\x00",
    );
    // 3.1.1 has no body at all.
    assert_eq!(
        enc(&d(ReasonCode::SessionTakenOver, expiry), V3),
        b"\xE0\x00"
    );
    // Reason code with empty property length.
    assert_eq!(
        dec(b"\xE0\x02\x04\x00", V5),
        Ok(Some(d(ReasonCode::DisconnectWithWillMessage, props())))
    );
}

#[test]
fn auth() {
    let a = |code, properties| Packet::Auth(Auth { code, properties });
    both_ways(&a(ReasonCode::Success, props()), V5, b"\xF0\x00");
    both_ways(
        &a(ReasonCode::ContinueAuthentication, props()),
        V5,
        b"\xF0\x02\x18\x00",
    );
    let method = Properties {
        authentication_method: Some("m".to_owned()),
        authentication_data: Some(Bytes::from_static(b"d")),
        ..props()
    };
    both_ways(
        &a(ReasonCode::ContinueAuthentication, method),
        V5,
        b"\xF0\x0A\x18\x08\x15\x00\x01m\x16\x00\x01d",
    );
    // A reason code without property length is accepted.
    assert_eq!(
        dec(b"\xF0\x01\x19", V5),
        Ok(Some(a(ReasonCode::ReAuthenticate, props())))
    );
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&a(ReasonCode::Success, props()), V3, &mut buf),
        Err(EncodeError::AuthNotInV311)
    );
    assert!(buf.is_empty());
}

#[test]
fn round_trips() {
    for protocol in [V3, V5] {
        for p in samples(protocol) {
            let bytes = enc(&p, protocol);
            assert_eq!(
                dec(&bytes, protocol),
                Ok(Some(p.clone())),
                "{protocol:?} {p:?}"
            );
        }
    }
}

#[test]
fn consecutive_packets_in_one_buffer() {
    let all = samples(V5);
    let mut buf = BytesMut::new();
    for p in &all {
        encode(p, V5, &mut buf).unwrap();
    }
    let mut decoded = Vec::new();
    while let Some(p) = decode(&mut buf, V5, MAX).unwrap() {
        decoded.push(p);
    }
    assert_eq!(decoded, all);
    assert!(buf.is_empty());
}

#[test]
fn encode_errors_leave_buffer_untouched() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let check = |p: Packet, protocol, e: EncodeError, buf: &mut BytesMut| {
        assert_eq!(encode(&p, protocol, buf), Err(e), "{p:?}");
        assert_eq!(&buf[..], b"keep");
    };
    check(
        Packet::Publish(crate::testutil::publish("t", QoS::AtLeastOnce, 0, b"")),
        V5,
        EncodeError::ZeroPacketId,
        &mut buf,
    );
    check(
        Packet::PubAck(ack(0)),
        V3,
        EncodeError::ZeroPacketId,
        &mut buf,
    );
    check(
        Packet::Publish(crate::testutil::publish("", QoS::AtMostOnce, 0, b"")),
        V3,
        EncodeError::EmptyTopicName,
        &mut buf,
    );
    let mut c = connect(V3);
    c.password = Some(Bytes::from_static(b"p"));
    check(
        Packet::Connect(c),
        V3,
        EncodeError::PasswordWithoutUsername,
        &mut buf,
    );
    let mut c = connect(V5);
    c.client_id = "x".repeat(70_000);
    check(
        Packet::Connect(c),
        V5,
        EncodeError::StringTooLong(70_000),
        &mut buf,
    );
    let mut p = crate::testutil::publish("t", QoS::AtMostOnce, 0, b"");
    p.properties.session_expiry_interval = Some(1);
    check(
        Packet::Publish(p),
        V5,
        EncodeError::PropertyNotAllowed {
            property: 0x11,
            packet: "PUBLISH",
        },
        &mut buf,
    );
    let mut s = Subscribe {
        packet_id: 1,
        filters: vec![sub("a", QoS::AtMostOnce)],
        properties: props(),
    };
    s.properties.subscription_identifiers = vec![1, 2];
    check(
        Packet::Subscribe(s),
        V5,
        EncodeError::MultipleSubscriptionIdentifiers {
            packet: "SUBSCRIBE",
        },
        &mut buf,
    );
    let mut p = crate::testutil::publish("t", QoS::AtMostOnce, 0, b"");
    p.properties.subscription_identifiers = vec![268_435_456];
    check(
        Packet::Publish(p),
        V5,
        EncodeError::VarIntTooLarge(268_435_456),
        &mut buf,
    );
}

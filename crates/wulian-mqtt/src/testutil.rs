//! Helpers and sample packets shared by the codec tests.

use bytes::{Bytes, BytesMut};

use crate::*;

pub(crate) const MAX: usize = 1 << 20;

pub(crate) fn enc(p: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(p, protocol, &mut buf).unwrap();
    buf.to_vec()
}

/// Decodes one packet; on success asserts that exactly the whole input was consumed.
pub(crate) fn dec(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let res = decode(&mut buf, protocol, MAX);
    match &res {
        Ok(Some(_)) => assert!(buf.is_empty(), "left {} bytes", buf.len()),
        Ok(None) => assert_eq!(&buf[..], bytes, "Ok(None) must not consume"),
        Err(_) => {}
    }
    res
}

pub(crate) fn err(bytes: &[u8], protocol: Protocol) -> DecodeError {
    match dec(bytes, protocol) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub(crate) fn props() -> Properties {
    Properties::default()
}

pub(crate) fn user(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

pub(crate) fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        code: ReasonCode::Success,
        properties: props(),
    }
}

pub(crate) fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_owned(),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: props(),
    }
}

pub(crate) fn sub(filter: &str, qos: QoS) -> SubscribeFilter {
    SubscribeFilter {
        filter: filter.to_owned(),
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
    }
}

pub(crate) fn connect(protocol: Protocol) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "client".to_owned(),
        username: None,
        password: None,
        will: None,
        properties: props(),
    }
}

/// Packets that survive an encode/decode round trip unchanged in both protocols.
pub(crate) fn common_samples(protocol: Protocol) -> Vec<Packet> {
    let mut full_connect = connect(protocol);
    full_connect.clean_start = false;
    full_connect.client_id = String::new();
    full_connect.username = Some("üser".to_owned());
    full_connect.password = Some(Bytes::from_static(b"\x00\xffpw"));
    full_connect.will = Some(LastWill {
        topic: "will/t".to_owned(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: props(),
    });
    let mut dup = publish("a/b", QoS::AtLeastOnce, 7, b"x");
    dup.dup = true;
    dup.retain = true;
    vec![
        Packet::Connect(connect(protocol)),
        Packet::Connect(full_connect),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode::Success,
            properties: props(),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::BadUserNameOrPassword,
            properties: props(),
        }),
        Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, b"hello")),
        Packet::Publish(publish("/", QoS::ExactlyOnce, 65535, b"")),
        Packet::Publish(publish("t", QoS::AtMostOnce, 0, &[0xAB; 300])),
        Packet::Publish(dup),
        Packet::PubAck(ack(1)),
        Packet::PubRec(ack(2)),
        Packet::PubRel(ack(3)),
        Packet::PubComp(ack(4)),
        Packet::Subscribe(Subscribe {
            packet_id: 5,
            filters: vec![sub("a/+", QoS::AtMostOnce), sub("#", QoS::ExactlyOnce)],
            properties: props(),
        }),
        Packet::SubAck(SubAck {
            packet_id: 5,
            codes: vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::GRANTED_QOS0,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError,
            ],
            properties: props(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 6,
            filters: vec!["a/+".to_owned(), "x".to_owned()],
            properties: props(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            code: ReasonCode::NORMAL_DISCONNECTION,
            properties: props(),
        }),
    ]
}

/// 5.0-only samples, covering every property in a packet that allows it.
pub(crate) fn v5_samples() -> Vec<Packet> {
    let publish_props = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        content_type: Some("text/plain".to_owned()),
        response_topic: Some("reply/here".to_owned()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        subscription_identifiers: vec![1, 268_435_455],
        topic_alias: Some(3),
        user_properties: vec![user("k", "v"), user("k", "v2")],
        ..props()
    };
    let mut aliased = publish("", QoS::AtLeastOnce, 9, b"p");
    aliased.properties.topic_alias = Some(1);
    let mut with_props = publish("x/y", QoS::ExactlyOnce, 10, b"payload");
    with_props.properties = publish_props;

    let mut connect5 = connect(Protocol::V5);
    connect5.username = None;
    connect5.password = Some(Bytes::from_static(b"secret"));
    connect5.properties = Properties {
        session_expiry_interval: Some(u32::MAX),
        authentication_method: Some("SCRAM-SHA-1".to_owned()),
        authentication_data: Some(Bytes::from_static(b"data")),
        request_problem_information: Some(0),
        request_response_information: Some(1),
        receive_maximum: Some(100),
        topic_alias_maximum: Some(10),
        user_properties: vec![user("a", "b")],
        maximum_packet_size: Some(65536),
        ..props()
    };
    connect5.will = Some(LastWill {
        topic: "w".to_owned(),
        payload: Bytes::new(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(1),
            content_type: Some("ct".to_owned()),
            response_topic: Some("r".to_owned()),
            correlation_data: Some(Bytes::from_static(b"c")),
            will_delay_interval: Some(30),
            user_properties: vec![user("w", "p")],
            ..props()
        },
    });

    let connack_props = Properties {
        session_expiry_interval: Some(0),
        assigned_client_identifier: Some("auto-1".to_owned()),
        server_keep_alive: Some(30),
        authentication_method: Some("m".to_owned()),
        authentication_data: Some(Bytes::from_static(b"d")),
        response_information: Some("resp".to_owned()),
        server_reference: Some("other:1883".to_owned()),
        reason_string: Some("why".to_owned()),
        receive_maximum: Some(65535),
        topic_alias_maximum: Some(0),
        maximum_qos: Some(1),
        retain_available: Some(0),
        user_properties: vec![user("", "")],
        maximum_packet_size: Some(u32::MAX),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(0),
        shared_subscription_available: Some(1),
        ..props()
    };
    let reason = |s: &str| Properties {
        reason_string: Some(s.to_owned()),
        user_properties: vec![user("x", "y")],
        ..props()
    };
    vec![
        Packet::Connect(connect5),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::ServerMoved,
            properties: connack_props,
        }),
        Packet::Publish(aliased),
        Packet::Publish(with_props),
        Packet::PubAck(Ack {
            packet_id: 1,
            code: ReasonCode::NoMatchingSubscribers,
            properties: props(),
        }),
        Packet::PubRec(Ack {
            packet_id: 2,
            code: ReasonCode::QuotaExceeded,
            properties: reason("full"),
        }),
        Packet::PubRel(Ack {
            packet_id: 3,
            code: ReasonCode::Success,
            properties: reason("ok"),
        }),
        Packet::PubComp(Ack {
            packet_id: 4,
            code: ReasonCode::PacketIdentifierNotFound,
            properties: props(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 5,
            filters: vec![SubscribeFilter {
                filter: "$share/g/a/#".to_owned(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            }],
            properties: Properties {
                subscription_identifiers: vec![42],
                user_properties: vec![user("s", "t")],
                ..props()
            },
        }),
        Packet::SubAck(SubAck {
            packet_id: 5,
            codes: vec![ReasonCode::TopicFilterInvalid, ReasonCode::GrantedQoS2],
            properties: reason("partly"),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 6,
            filters: vec!["a".to_owned()],
            properties: Properties {
                user_properties: vec![user("u", "v")],
                ..props()
            },
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
            properties: reason("done"),
        }),
        Packet::Disconnect(Disconnect {
            code: ReasonCode::DisconnectWithWillMessage,
            properties: props(),
        }),
        Packet::Disconnect(Disconnect {
            code: ReasonCode::UseAnotherServer,
            properties: Properties {
                session_expiry_interval: Some(10),
                server_reference: Some("b:1883".to_owned()),
                ..reason("moved")
            },
        }),
        Packet::Auth(Auth {
            code: ReasonCode::Success,
            properties: props(),
        }),
        Packet::Auth(Auth {
            code: ReasonCode::ContinueAuthentication,
            properties: props(),
        }),
        Packet::Auth(Auth {
            code: ReasonCode::ReAuthenticate,
            properties: Properties {
                authentication_method: Some("m".to_owned()),
                authentication_data: Some(Bytes::from_static(b"d")),
                ..reason("again")
            },
        }),
    ]
}

/// Every sample for `protocol`.
pub(crate) fn samples(protocol: Protocol) -> Vec<Packet> {
    let mut all = common_samples(protocol);
    if protocol == Protocol::V5 {
        all.extend(v5_samples());
    } else {
        all.push(Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            codes: vec![],
            properties: props(),
        }));
    }
    all
}

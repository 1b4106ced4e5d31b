//! MQTT 5.0 clients (rumqttc v5).

use std::time::Duration;

use bytes::Bytes;
use wulian_broker::{OutboundMessage, Properties, QoS as BrokerQoS};

use crate::common::v5::*;
use crate::common::*;

#[tokio::test]
async fn connack_announces_capabilities_and_assigns_id() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "", "dev1", "secret");
    let ack = c.connack().await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(!ack.session_present);
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.receive_max, Some(64));
    assert_eq!(p.max_packet_size, Some(1024 * 1024));
    assert_eq!(p.retain_available, Some(1));
    assert_eq!(p.shared_subscription_available, Some(1));
    assert_eq!(p.subscription_identifiers_available, Some(1));
    assert_eq!(p.wildcard_subscription_available, Some(1));
    assert_eq!(p.max_qos, None);
    let id = p.assigned_client_identifier.expect("assigned client id");
    assert!(!id.is_empty());
    assert!(wait_until(|| b.broker.is_connected("t1", &id)).await);
}

#[tokio::test]
async fn keep_alive_is_capped() {
    let b = start(wulian_broker::BrokerConfig {
        max_keep_alive: 10,
        ..Default::default()
    })
    .await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    let ack = c.connack().await;
    assert_eq!(ack.properties.unwrap().server_keep_alive, Some(10));
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "nope");
    match c.expect_error().await {
        ConnectionError::ConnectionRefused(code) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn unauthorised_publish_gets_puback_not_authorized() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    c.connack().await;
    c.client
        .publish("devices/other/telemetry", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let ack = c
        .expect(|p| match p {
            Packet::PubAck(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ack.reason, PubAckReason::NotAuthorized);
    assert!(ack.properties.and_then(|p| p.reason_string).is_some());
    assert_eq!(b.broker.metrics().publish_denied_total, 1);
    assert_eq!(b.sink.count(), 0);

    // The connection survives a refused QoS 1 publish.
    c.client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    let ack = c
        .expect(|p| match p {
            Packet::PubAck(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(b.sink.count(), 1);

    // A refused QoS 0 publish ends it.
    c.client
        .publish("devices/other/telemetry", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(
        c.expect_server_disconnect().await,
        DisconnectReasonCode::NotAuthorized
    );
}

#[tokio::test]
async fn suback_codes() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    c.connack().await;
    c.client
        .subscribe_many([
            Filter::new("devices/dev1/commands/#", QoS::ExactlyOnce),
            Filter::new("devices/+/telemetry", QoS::AtLeastOnce),
            Filter::new("$share/g/devices/dev1/x", QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    let codes = c
        .expect(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
            SubscribeReasonCode::NotAuthorized,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    assert_eq!(b.broker.metrics().subscribe_denied_total, 1);
}

#[tokio::test]
async fn sink_rejection_gets_reason_code() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    c.connack().await;
    c.client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "reject")
        .await
        .unwrap();
    let ack = c
        .expect(|p| match p {
            Packet::PubAck(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ack.reason, PubAckReason::QuotaExceeded);
    assert_eq!(
        ack.properties.and_then(|p| p.reason_string).as_deref(),
        Some("test sink says no")
    );
    // QoS 0 rejection: dropped, connection kept.
    c.client
        .publish("devices/dev1/telemetry", QoS::AtMostOnce, false, "reject")
        .await
        .unwrap();
    c.client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "fine")
        .await
        .unwrap();
    let ack = c
        .expect(|p| match p {
            Packet::PubAck(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(b.broker.metrics().publish_rejected_total, 2);
    assert_eq!(b.sink.count(), 1);
}

#[tokio::test]
async fn server_publish_keeps_properties() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    c.connack().await;
    c.client
        .subscribe("devices/dev1/commands/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    c.expect(|p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;
    let queued = b.broker.publish(
        "t1",
        OutboundMessage {
            topic: "devices/dev1/commands/reboot".into(),
            payload: Bytes::from_static(b"{}"),
            qos: BrokerQoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                response_topic: Some("devices/dev1/responses".into()),
                correlation_data: Some(Bytes::from_static(b"corr-1")),
                content_type: Some("application/json".into()),
                user_properties: vec![("k".into(), "v".into())],
                message_expiry_interval: Some(60),
                ..Properties::default()
            },
        },
    );
    assert_eq!(queued, 1);
    let publish = c
        .expect(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(publish.topic.as_ref(), b"devices/dev1/commands/reboot");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    let props = publish.properties.expect("properties");
    assert_eq!(
        props.response_topic.as_deref(),
        Some("devices/dev1/responses")
    );
    assert_eq!(
        props.correlation_data.as_deref(),
        Some(b"corr-1".as_slice())
    );
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(props.user_properties, vec![("k".into(), "v".into())]);
    assert!(props.message_expiry_interval.is_some_and(|e| e <= 60));
}

#[tokio::test]
async fn client_properties_reach_the_sink_and_subscribers() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    c.connack().await;
    c.client
        .subscribe("devices/dev1/telemetry", QoS::AtMostOnce)
        .await
        .unwrap();
    c.expect(|p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;
    let props = PublishProperties {
        response_topic: Some("devices/dev1/replies".into()),
        correlation_data: Some(Bytes::from_static(b"c1")),
        user_properties: vec![("a".into(), "b".into())],
        ..Default::default()
    };
    c.client
        .publish_with_properties(
            "devices/dev1/telemetry",
            QoS::AtLeastOnce,
            false,
            "p",
            props,
        )
        .await
        .unwrap();
    let publish = c
        .expect(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    let got = publish.properties.expect("properties");
    assert_eq!(got.correlation_data.as_deref(), Some(b"c1".as_slice()));
    let msgs = b.sink.messages.lock();
    assert_eq!(
        msgs[0].1.properties.response_topic.as_deref(),
        Some("devices/dev1/replies")
    );
    assert_eq!(msgs[0].1.properties.user_properties.len(), 1);
}

#[tokio::test]
async fn no_local_subscription() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    c.connack().await;
    let mut filter = Filter::new("devices/dev1/telemetry", QoS::AtMostOnce);
    filter.nolocal = true;
    c.client.subscribe_many([filter]).await.unwrap();
    c.expect(|p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;
    c.client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    c.expect(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
    assert!(c.no_publish_within(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn qos2_both_directions() {
    let b = start_default().await;
    let mut c = v5_client(b.addr, "c", "dev1", "secret");
    c.connack().await;
    c.client
        .subscribe("devices/dev1/commands/#", QoS::ExactlyOnce)
        .await
        .unwrap();
    c.expect(|p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;
    c.client
        .publish("devices/dev1/telemetry", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    c.expect(|p| matches!(p, Packet::PubComp(_)).then_some(()))
        .await;
    assert_eq!(b.sink.count(), 1);
    for i in 0..3 {
        let queued = b.broker.publish(
            "t1",
            OutboundMessage {
                topic: format!("devices/dev1/commands/{i}"),
                payload: Bytes::from_static(b"x"),
                qos: BrokerQoS::ExactlyOnce,
                retain: false,
                properties: Properties::default(),
            },
        );
        assert_eq!(queued, 1);
        let publish = c
            .expect(|p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await;
        assert_eq!(publish.qos, QoS::ExactlyOnce);
        c.expect(|p| matches!(p, Packet::PubRel(_)).then_some(()))
            .await;
    }
}

#[tokio::test]
async fn takeover_sends_session_taken_over() {
    let b = start_default().await;
    let mut first = v5_client(b.addr, "same", "dev1", "secret");
    first.connack().await;
    let mut second = v5_client(b.addr, "same", "dev1", "secret");
    second.connack().await;
    assert_eq!(
        first.expect_server_disconnect().await,
        DisconnectReasonCode::SessionTakenOver
    );
    assert!(b.broker.is_connected("t1", "same"));
}

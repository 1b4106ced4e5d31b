//! MQTT 3.1.1 clients (rumqttc v4).

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{ConnectReturnCode, Packet, QoS, SubscribeReasonCode};
use wulian_broker::{OutboundMessage, Properties, QoS as BrokerQoS};

use crate::common::*;

fn command(topic: &str, qos: BrokerQoS) -> OutboundMessage {
    OutboundMessage {
        topic: topic.into(),
        payload: Bytes::from_static(b"go"),
        qos,
        retain: false,
        properties: Properties::default(),
    }
}

#[tokio::test]
async fn subscribe_publish_and_server_command() {
    let b = start_default().await;
    let mut c = v4_client(b.addr, "dev1", "dev1", "secret");
    c.expect(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
        .await;
    assert!(b.broker.is_connected("t1", "dev1"));

    c.client
        .subscribe("devices/dev1/commands/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let codes = c
        .expect(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    c.client
        .publish("devices/dev1/telemetry", QoS::AtMostOnce, false, "t0")
        .await
        .unwrap();
    c.client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "t1")
        .await
        .unwrap();
    c.expect(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
    assert!(wait_until(|| b.sink.count() == 2).await);
    {
        let msgs = b.sink.messages.lock();
        assert_eq!(msgs[0].0, "t1");
        assert_eq!(msgs[0].1.topic, "devices/dev1/telemetry");
        assert_eq!(msgs[0].1.payload.as_ref(), b"t0");
        assert_eq!(msgs[1].1.qos, BrokerQoS::AtLeastOnce);
    }

    let queued = b.broker.publish(
        "t1",
        command("devices/dev1/commands/reboot", BrokerQoS::AtLeastOnce),
    );
    assert_eq!(queued, 1);
    let publish = c
        .expect(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(publish.topic, "devices/dev1/commands/reboot");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(publish.payload.as_ref(), b"go");

    assert!(wait_until(|| b.broker.metrics().messages_delivered_total == 1).await);
    let m = b.broker.metrics();
    assert_eq!(m.publish_received_total, 2);
    assert_eq!(m.connections_current, 1);
    assert!(m.bytes_received_total > 0 && m.bytes_sent_total > 0);
    assert_eq!(b.sink.connects.lock().as_slice(), ["dev1".to_string()]);

    c.client.disconnect().await.unwrap();
    assert!(wait_until(|| !b.broker.is_connected("t1", "dev1")).await);
    assert!(wait_until(|| b.broker.metrics().connections_current == 0).await);
    assert!(wait_until(|| b.sink.disconnects.lock().len() == 1).await);
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let b = start_default().await;
    let mut c = v4_client(b.addr, "dev1", "dev1", "wrong");
    let err = c.expect_error().await;
    assert!(
        err.contains(&format!("{:?}", ConnectReturnCode::BadUserNamePassword)),
        "{err}"
    );
    assert_eq!(b.broker.metrics().auth_failed_total, 1);
    assert!(!b.broker.is_connected("t1", "dev1"));
}

#[tokio::test]
async fn unauthorised_publish_closes_connection() {
    let b = start_default().await;
    let mut c = v4_client(b.addr, "dev1", "dev1", "secret");
    c.expect(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
        .await;
    c.client
        .publish("devices/other/telemetry", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    c.expect_error().await;
    assert_eq!(b.broker.metrics().publish_denied_total, 1);
    assert_eq!(b.sink.count(), 0);
}

#[tokio::test]
async fn unauthorised_subscribe_gets_failure() {
    let b = start_default().await;
    let mut c = v4_client(b.addr, "dev1", "dev1", "secret");
    c.client
        .subscribe("devices/+/telemetry", QoS::AtLeastOnce)
        .await
        .unwrap();
    let codes = c
        .expect(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Failure]);
    assert_eq!(b.broker.metrics().subscribe_denied_total, 1);
    // Nothing from other devices arrives.
    b.broker.publish(
        "t1",
        command("devices/dev2/telemetry", BrokerQoS::AtMostOnce),
    );
    assert!(c.no_publish_within(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn sink_rejection_closes_connection() {
    let b = start_default().await;
    let mut c = v4_client(b.addr, "dev1", "dev1", "secret");
    c.expect(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
        .await;
    c.client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "reject")
        .await
        .unwrap();
    c.expect_error().await;
    assert_eq!(b.broker.metrics().publish_rejected_total, 1);
}

#[tokio::test]
async fn me_alias_is_rewritten() {
    let b = start_default().await;
    let mut c = v4_client(b.addr, "dev1", "dev1", "secret");
    c.client
        .subscribe("devices/me/commands/+", QoS::AtMostOnce)
        .await
        .unwrap();
    let codes = c
        .expect(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]);
    c.client
        .publish("devices/me/telemetry", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    c.expect(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
    assert_eq!(
        b.sink.topics(),
        vec![("t1".to_string(), "devices/dev1/telemetry".to_string())]
    );
    assert_eq!(
        b.broker.publish(
            "t1",
            command("devices/dev1/commands/x", BrokerQoS::AtMostOnce)
        ),
        1
    );
    let topic = c
        .expect(|p| match p {
            Packet::Publish(p) => Some(p.topic.clone()),
            _ => None,
        })
        .await;
    assert_eq!(topic, "devices/dev1/commands/x");
}

#[tokio::test]
async fn tenants_are_isolated() {
    let b = start_default().await;
    let mut sub = v4_client(b.addr, "sub", "dev1", "secret");
    sub.client
        .subscribe("devices/dev1/#", QoS::AtMostOnce)
        .await
        .unwrap();
    sub.expect(|p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;

    // Same device id and topic, other tenant.
    let mut other = v4_client(b.addr, "pub", "t2dev1", "secret");
    other
        .client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "t2")
        .await
        .unwrap();
    other
        .expect(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
    assert_eq!(
        b.sink.topics(),
        vec![("t2".to_string(), "devices/dev1/telemetry".to_string())]
    );
    assert!(sub.no_publish_within(Duration::from_millis(300)).await);
    assert_eq!(
        b.broker.publish(
            "t2",
            command("devices/dev1/commands/x", BrokerQoS::AtMostOnce)
        ),
        0
    );

    // Same tenant: delivered, including to the publisher itself.
    sub.client
        .publish("devices/dev1/telemetry", QoS::AtMostOnce, false, "t1")
        .await
        .unwrap();
    let payload = sub
        .expect(|p| match p {
            Packet::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .await;
    assert_eq!(payload.as_ref(), b"t1");
}

#[tokio::test]
async fn client_id_takeover() {
    let b = start_default().await;
    let mut first = v4_client(b.addr, "same", "dev1", "secret");
    first
        .expect(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
        .await;
    let mut second = v4_client(b.addr, "same", "dev1", "secret");
    second
        .expect(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
        .await;
    first.expect_error().await;
    assert!(b.broker.is_connected("t1", "same"));
    assert!(wait_until(|| b.broker.metrics().connections_current == 1).await);
    // The survivor still works.
    second
        .client
        .publish("devices/dev1/telemetry", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    second
        .expect(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
}

#[tokio::test]
async fn shutdown_closes_clients_and_returns() {
    let mut b = start_default().await;
    let mut c4 = v4_client(b.addr, "a", "dev1", "secret");
    c4.expect(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
        .await;
    let mut c5 = v5_client(b.addr, "b", "dev1", "secret");
    c5.connack().await;

    b.shutdown.cancel();
    let served = tokio::time::timeout(Duration::from_secs(7), &mut b.serve)
        .await
        .expect("serve did not return")
        .unwrap();
    assert!(served.is_ok());
    assert_eq!(
        c5.expect_server_disconnect().await,
        v5::DisconnectReasonCode::ServerShuttingDown
    );
    c4.expect_error().await;
    assert_eq!(b.broker.metrics().connections_current, 0);
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(b.addr).await.is_err());
}

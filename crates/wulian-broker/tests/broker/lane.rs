//! Application connections on the application lane (`lane.rs`): the same protocol as on the
//! shared workers — delivery in both directions, persistent sessions, takeover, shutdown —
//! from a connection that moved to another runtime after authentication.

use std::time::Duration;

use bytes::Bytes;
use wulian_broker::{BrokerConfig, Properties};
use wulian_mqtt::{Connect, Disconnect, Packet, Protocol, QoS, ReasonCode};

use crate::common::*;
use crate::sessions::{ack, publish, server_msg};

fn app_connect(protocol: Protocol, client_id: &str, clean_start: bool) -> Connect {
    let mut c = connect_packet(protocol, client_id, "app", 30);
    c.password = Some(Bytes::from_static(b"secret"));
    c.clean_start = clean_start;
    if protocol == Protocol::V5 && !clean_start {
        c.properties.session_expiry_interval = Some(600);
    }
    c
}

/// A wildcard subscriber that is an application moves to the lane and receives a device's
/// QoS 1 messages in order; its PUBACKs free its window (more messages than the window);
/// devices stay on the shared workers.
#[tokio::test]
async fn an_application_subscriber_runs_on_the_lane_and_gets_every_message() {
    let b = start(BrokerConfig {
        max_inflight: 4,
        ..BrokerConfig::default()
    })
    .await;
    let mut app = Raw::connect(b.addr, app_connect(Protocol::V5, "dash", true)).await;
    app.subscribed("devices/+/telemetry", QoS::AtLeastOnce)
        .await;
    assert_eq!(b.broker.metrics().application_lane_connections_total, 1);

    let mut device = Raw::connect(b.addr, {
        let mut c = connect_packet(Protocol::V311, "dev1", "dev1", 30);
        c.password = Some(Bytes::from_static(b"secret"));
        c
    })
    .await;
    assert_eq!(
        b.broker.metrics().application_lane_connections_total,
        1,
        "devices stay on the shared workers"
    );
    let payloads: [&'static [u8]; 10] =
        [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"];
    for (i, payload) in payloads.iter().enumerate() {
        let packet_id = i as u16 + 1;
        device
            .send(&publish(
                "devices/dev1/telemetry",
                QoS::AtLeastOnce,
                packet_id,
                payload,
            ))
            .await;
    }
    for expected in payloads {
        let p = app.next_publish().await;
        assert_eq!(p.payload.as_ref(), expected);
        assert_eq!(p.qos, QoS::AtLeastOnce);
        app.send(&Packet::PubAck(ack(p.packet_id))).await;
    }
}

/// MQTT-3.1.2-4/5 on the lane: an application's persistent session keeps its subscription
/// and queues QoS 1 messages while it is offline; the resumed connection (on the lane again)
/// receives them.
#[tokio::test]
async fn a_persistent_application_session_resumes_on_the_lane() {
    let b = start_default().await;
    let mut app = Raw::connect(b.addr, app_connect(Protocol::V5, "rules", false)).await;
    app.subscribed("devices/dev1/#", QoS::AtLeastOnce).await;
    app.send(&Packet::Disconnect(Disconnect {
        code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    assert!(app.until_closed().await.is_empty());
    assert!(wait_until(|| !b.broker.is_connected("t1", "rules")).await);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let n = b.broker.publish(
        "t1",
        server_msg("devices/dev1/alarm", QoS::AtLeastOnce, b"hot"),
    );
    assert_eq!(n, 1, "queued for the offline session");
    let (mut app, connack) =
        Raw::connect_ack(b.addr, app_connect(Protocol::V5, "rules", false)).await;
    assert!(connack.session_present);
    let p = app.next_publish().await;
    assert_eq!(p.payload.as_ref(), b"hot");
    app.send(&Packet::PubAck(ack(p.packet_id))).await;
    assert_eq!(b.broker.metrics().application_lane_connections_total, 2);
}

/// MQTT-3.1.4-3 on the lane: a second connection with the same client id takes the session
/// over; the first hears why (5.0: 0x8E) and is closed.
#[tokio::test]
async fn takeover_between_lane_connections() {
    let b = start_default().await;
    let mut first = Raw::connect(b.addr, app_connect(Protocol::V5, "dup", true)).await;
    let _second = Raw::connect(b.addr, app_connect(Protocol::V5, "dup", true)).await;
    let closing = first.until_closed().await;
    assert!(
        closing.iter().any(|p| matches!(
            p,
            Packet::Disconnect(d) if d.code == ReasonCode::SessionTakenOver
        )),
        "the first connection hears it was taken over: {closing:?}"
    );
    assert!(b.broker.is_connected("t1", "dup"));
}

/// Shutting the listener down reaches connections on the lane: 5.0 clients get 0x8B and
/// the listener's serve returns once they are gone.
#[tokio::test]
async fn shutdown_closes_lane_connections() {
    let b = start_default().await;
    let mut app = Raw::connect(b.addr, app_connect(Protocol::V5, "ops-dash", true)).await;
    b.shutdown.cancel();
    let closing = app.until_closed().await;
    assert!(
        closing.iter().any(|p| matches!(
            p,
            Packet::Disconnect(d) if d.code == ReasonCode::ServerShuttingDown
        )),
        "the lane's connection hears the server is shutting down: {closing:?}"
    );
    stop(b).await;
}

/// With the lane off, an application is served on the shared workers as before.
#[tokio::test]
async fn the_lane_can_be_turned_off() {
    let b = start(BrokerConfig {
        application_lane: false,
        ..BrokerConfig::default()
    })
    .await;
    let mut app = Raw::connect(b.addr, app_connect(Protocol::V311, "dash", true)).await;
    app.subscribed("devices/dev1/#", QoS::AtMostOnce).await;
    b.broker
        .publish("t1", server_msg("devices/dev1/x", QoS::AtMostOnce, b"1"));
    assert_eq!(app.next_publish().await.payload.as_ref(), b"1");
    assert_eq!(b.broker.metrics().application_lane_connections_total, 0);
}

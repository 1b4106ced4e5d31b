//! Persistent sessions: 3.1.1 clean session = 0, 5.0 clean start + session expiry, offline
//! queues and their limits, redelivery on reconnect, will delay, and survival of a restart.
//! Raw sockets, so each test controls exactly which acknowledgements the client sends.

use std::time::Duration;

use bytes::Bytes;
use wulian_broker::{
    BrokerConfig, OutboundMessage, Properties, Protocol, QoS, QueueOverflow, ReasonCode,
};
use wulian_mqtt::{
    Ack, Connect, Disconnect, LastWill, Packet, Publish, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};

use crate::common::*;

pub fn persistent(protocol: Protocol, client_id: &str, expiry: Option<u32>) -> Connect {
    let mut c = connect_packet(protocol, client_id, "dev1", 0);
    c.clean_start = false;
    c.properties.session_expiry_interval = expiry;
    c
}

pub fn subscribe(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }],
        properties: Properties::default(),
    })
}

pub fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: Properties::default(),
    })
}

pub fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        code: ReasonCode::Success,
        properties: Properties::default(),
    }
}

pub fn server_msg(topic: &str, qos: QoS, payload: &'static [u8]) -> OutboundMessage {
    OutboundMessage {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain: false,
        properties: Properties::default(),
    }
}

/// Connects, subscribes to `devices/dev1/#` at `qos`, and disconnects normally.
async fn subscribe_and_leave(b: &TestBroker, connect: Connect, qos: QoS) {
    let mut raw = Raw::connect(b.addr, connect).await;
    raw.subscribed("devices/dev1/#", qos).await;
    raw.send(&Packet::Disconnect(Disconnect {
        code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    assert!(raw.until_closed().await.is_empty());
}

async fn wait_offline(b: &TestBroker, client_id: &str) {
    assert!(wait_until(|| !b.broker.is_connected("t1", client_id)).await);
    // The connection task parks the session right after the socket closes.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// MQTT-3.1.2-4, MQTT-3.1.2-5, MQTT-3.2.2-2: a 3.1.1 session with clean session = 0 keeps
/// its subscriptions and stores QoS 1 messages while the client is offline; CONNACK says
/// the session is present.
#[tokio::test]
async fn v311_persistent_session_queues_while_offline() {
    let b = start_default().await;
    subscribe_and_leave(&b, persistent(Protocol::V311, "s1", None), QoS::AtLeastOnce).await;
    wait_offline(&b, "s1").await;
    for payload in [&b"1"[..], b"2", b"3"] {
        let n = b.broker.publish(
            "t1",
            OutboundMessage {
                payload: Bytes::copy_from_slice(payload),
                ..server_msg("devices/dev1/a", QoS::AtLeastOnce, b"")
            },
        );
        assert_eq!(n, 1, "queued for the offline session");
    }
    let (mut raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V311, "s1", None)).await;
    assert!(ack.session_present);
    for expected in [&b"1"[..], b"2", b"3"] {
        let p = raw.next_publish().await;
        assert_eq!(p.payload.as_ref(), expected);
        assert_eq!(p.qos, QoS::AtLeastOnce);
        raw.send(&Packet::PubAck(super::sessions::ack(p.packet_id)))
            .await;
    }
    assert_eq!(b.broker.metrics().messages_queued_total, 3);
}

/// MQTT-3.1.2-6 / MQTT-3.2.2-1: clean session = 1 discards the stored session.
#[tokio::test]
async fn clean_session_discards_the_stored_session() {
    let b = start_default().await;
    subscribe_and_leave(&b, persistent(Protocol::V311, "s1", None), QoS::AtLeastOnce).await;
    wait_offline(&b, "s1").await;
    b.broker
        .publish("t1", server_msg("devices/dev1/a", QoS::AtLeastOnce, b"x"));
    let (raw, ack) =
        Raw::connect_ack(b.addr, connect_packet(Protocol::V311, "s1", "dev1", 0)).await;
    assert!(!ack.session_present);
    drop(raw);
    wait_offline(&b, "s1").await;
    let (mut raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V311, "s1", None)).await;
    assert!(!ack.session_present);
    assert!(raw.no_publish_within(Duration::from_millis(300)).await);
    // Nothing routes to the discarded subscription any more.
    assert_eq!(
        b.broker
            .publish("t1", server_msg("devices/dev1/a", QoS::AtLeastOnce, b"y")),
        0
    );
}

/// MQTT-4.4.0-1 and MQTT-3.3.1-1: an unacknowledged QoS 1 PUBLISH is resent on reconnect
/// with DUP = 1 and the same packet identifier.
#[tokio::test]
async fn unacknowledged_qos1_is_resent_with_dup() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, persistent(Protocol::V311, "s1", None)).await;
    raw.subscribed("devices/dev1/#", QoS::AtLeastOnce).await;
    b.broker.publish(
        "t1",
        server_msg("devices/dev1/a", QoS::AtLeastOnce, b"once"),
    );
    let first = raw.next_publish().await;
    assert!(!first.dup);
    drop(raw); // no PUBACK
    wait_offline(&b, "s1").await;
    let (mut raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V311, "s1", None)).await;
    assert!(ack.session_present);
    let again = raw.next_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload.as_ref(), b"once");
    raw.send(&Packet::PubAck(ack_id(again.packet_id))).await;
    assert!(raw.no_publish_within(Duration::from_millis(300)).await);
}

fn ack_id(id: u16) -> Ack {
    ack(id)
}

/// MQTT-4.4.0-1 / MQTT-4.3.3: a PUBREL not yet completed is resent after reconnect.
#[tokio::test]
async fn pubrel_is_resent_on_reconnect() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    raw.subscribed("devices/dev1/#", QoS::ExactlyOnce).await;
    b.broker
        .publish("t1", server_msg("devices/dev1/a", QoS::ExactlyOnce, b"two"));
    let p = raw.next_publish().await;
    raw.send(&Packet::PubRec(ack(p.packet_id))).await;
    match raw.recv().await {
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, p.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(raw); // no PUBCOMP
    wait_offline(&b, "s1").await;
    let (mut raw, ack2) = Raw::connect_ack(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    assert!(ack2.session_present);
    match raw.recv().await {
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, p.packet_id),
        other => panic!("expected PUBREL again, got {other:?}"),
    }
    raw.send(&Packet::PubComp(ack(p.packet_id))).await;
    assert!(raw.no_publish_within(Duration::from_millis(300)).await);
}

/// MQTT-4.3.3-10 across a reconnect: the inbound QoS 2 state is part of the session, so a
/// PUBREL after reconnecting completes (no second delivery, no "not found").
#[tokio::test]
async fn inbound_qos2_state_survives_reconnect() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    raw.send(&publish("devices/dev1/t", QoS::ExactlyOnce, 7, b"x"))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    drop(raw);
    wait_offline(&b, "s1").await;
    let (mut raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    assert!(ack.session_present);
    // A retransmission of the same publish is not handed to the sink again.
    let mut dup = publish("devices/dev1/t", QoS::ExactlyOnce, 7, b"x");
    if let Packet::Publish(p) = &mut dup {
        p.dup = true;
    }
    raw.send(&dup).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    raw.send(&Packet::PubRel(super::sessions::ack(7))).await;
    match raw.recv().await {
        Some(Packet::PubComp(a)) => assert_eq!(a.code, ReasonCode::Success),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    assert_eq!(b.sink.count(), 1);
}

/// MQTT-3.1.2-23 (5.0): session expiry 0 (or absent) ends the session at disconnect even
/// with clean start = 0.
#[tokio::test]
async fn v5_expiry_zero_ends_at_disconnect() {
    let b = start_default().await;
    subscribe_and_leave(&b, persistent(Protocol::V5, "s1", None), QoS::AtLeastOnce).await;
    wait_offline(&b, "s1").await;
    let (_raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V5, "s1", None)).await;
    assert!(!ack.session_present);
}

/// MQTT 5.0 3.1.2.11.2: the session is deleted when the expiry interval passes after the
/// connection closed; the broker counts it.
#[tokio::test]
async fn v5_session_expires_after_interval() {
    let b = start_default().await;
    subscribe_and_leave(
        &b,
        persistent(Protocol::V5, "s1", Some(1)),
        QoS::AtLeastOnce,
    )
    .await;
    wait_offline(&b, "s1").await;
    assert_eq!(b.broker.metrics().sessions_persistent, 1);
    assert!(wait_until(|| b.broker.metrics().sessions_expired_total == 1).await);
    let (_raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V5, "s1", Some(1))).await;
    assert!(!ack.session_present);
}

/// MQTT 5.0 3.2.2.3.2: a capped session expiry is announced in CONNACK.
#[tokio::test]
async fn session_expiry_is_capped_and_announced() {
    let b = start(BrokerConfig {
        max_session_expiry_secs: 10,
        ..BrokerConfig::default()
    })
    .await;
    let (_raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V5, "s1", Some(100))).await;
    assert_eq!(ack.properties.session_expiry_interval, Some(10));
    let (_raw2, ack) =
        Raw::connect_ack(b.addr, persistent(Protocol::V5, "s2", Some(u32::MAX))).await;
    assert_eq!(ack.properties.session_expiry_interval, Some(10));
    let (_raw3, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V5, "s3", Some(5))).await;
    assert_eq!(ack.properties.session_expiry_interval, None);
}

async fn overflow_case(policy: QueueOverflow) -> Vec<Vec<u8>> {
    let b = start(BrokerConfig {
        max_queued_messages: 2,
        queue_overflow: policy,
        ..BrokerConfig::default()
    })
    .await;
    subscribe_and_leave(&b, persistent(Protocol::V311, "s1", None), QoS::AtLeastOnce).await;
    wait_offline(&b, "s1").await;
    for payload in [&b"1"[..], b"2", b"3"] {
        b.broker.publish(
            "t1",
            OutboundMessage {
                payload: Bytes::copy_from_slice(payload),
                ..server_msg("devices/dev1/a", QoS::AtLeastOnce, b"")
            },
        );
    }
    assert_eq!(b.broker.metrics().queue_overflow_total, 1);
    let mut raw = Raw::connect(b.addr, persistent(Protocol::V311, "s1", None)).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = raw.next_publish().await;
        raw.send(&Packet::PubAck(ack(p.packet_id))).await;
        got.push(p.payload.to_vec());
    }
    assert!(raw.no_publish_within(Duration::from_millis(300)).await);
    got
}

/// The offline queue is bounded (`max_queued_messages`); `queue_overflow` picks the victim.
#[tokio::test]
async fn offline_queue_drop_oldest() {
    assert_eq!(
        overflow_case(QueueOverflow::DropOldest).await,
        vec![b"2".to_vec(), b"3".to_vec()]
    );
}

#[tokio::test]
async fn offline_queue_drop_newest() {
    assert_eq!(
        overflow_case(QueueOverflow::DropNewest).await,
        vec![b"1".to_vec(), b"2".to_vec()]
    );
}

/// MQTT-3.1.4-3 with a persistent session: a second connection takes the session over,
/// including its subscriptions, and the first one is closed (5.0: 0x8E).
#[tokio::test]
async fn takeover_resumes_the_session() {
    let b = start_default().await;
    let mut first = Raw::connect(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    first.subscribed("devices/dev1/#", QoS::AtLeastOnce).await;
    let (mut second, ack) =
        Raw::connect_ack(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    assert!(ack.session_present);
    match first.until_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.code, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    b.broker
        .publish("t1", server_msg("devices/dev1/a", QoS::AtLeastOnce, b"x"));
    assert_eq!(second.next_publish().await.payload.as_ref(), b"x");
}

/// MQTT-3.3.2-5 / MQTT-3.3.2-6: queued messages whose expiry passed are dropped; the others
/// are forwarded with the remaining interval.
#[tokio::test]
async fn queued_messages_expire() {
    let b = start_default().await;
    subscribe_and_leave(
        &b,
        persistent(Protocol::V5, "s1", Some(60)),
        QoS::AtLeastOnce,
    )
    .await;
    wait_offline(&b, "s1").await;
    for (payload, expiry) in [(&b"short"[..], 1), (b"long", 100)] {
        b.broker.publish(
            "t1",
            OutboundMessage {
                payload: Bytes::copy_from_slice(payload),
                properties: Properties {
                    message_expiry_interval: Some(expiry),
                    ..Properties::default()
                },
                ..server_msg("devices/dev1/a", QoS::AtLeastOnce, b"")
            },
        );
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut raw = Raw::connect(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    let p = raw.next_publish().await;
    assert_eq!(p.payload.as_ref(), b"long");
    let left = p.properties.message_expiry_interval.unwrap();
    assert!((97..100).contains(&left), "remaining expiry {left}");
    raw.send(&Packet::PubAck(ack(p.packet_id))).await;
    assert!(raw.no_publish_within(Duration::from_millis(300)).await);
}

fn will_with_delay(delay: u32) -> Option<LastWill> {
    let mut w = will("devices/dev1/will", b"gone");
    if let Some(w) = &mut w {
        w.properties.will_delay_interval = Some(delay);
    }
    w
}

async fn will_watcher(b: &TestBroker) -> Raw {
    let mut watcher =
        Raw::connect(b.addr, connect_packet(Protocol::V5, "watcher", "dev1", 0)).await;
    watcher
        .subscribed("devices/dev1/will", QoS::AtMostOnce)
        .await;
    watcher
}

/// MQTT 5.0 3.1.3.2.2 / MQTT-3.1.3-9: the will waits for the will delay and is not sent
/// when the session is resumed before it passes.
#[tokio::test]
async fn will_delay_suppressed_by_resume() {
    let b = start_default().await;
    let mut watcher = will_watcher(&b).await;
    let mut c = persistent(Protocol::V5, "s1", Some(60));
    c.will = will_with_delay(2);
    let raw = Raw::connect(b.addr, c.clone()).await;
    drop(raw); // abnormal: the will is due after the delay
    wait_offline(&b, "s1").await;
    let _back = Raw::connect(b.addr, persistent(Protocol::V5, "s1", Some(60))).await;
    assert!(watcher.no_publish_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn will_delay_publishes_after_delay() {
    let b = start_default().await;
    let mut watcher = will_watcher(&b).await;
    let mut c = persistent(Protocol::V5, "s1", Some(60));
    c.will = will_with_delay(1);
    drop(Raw::connect(b.addr, c).await);
    assert!(watcher.no_publish_within(Duration::from_millis(500)).await);
    assert_eq!(watcher.next_publish().await.payload.as_ref(), b"gone");
}

/// MQTT 5.0 3.1.3.2.2: the will is sent when the session ends, if that is before the delay.
#[tokio::test]
async fn will_sent_at_session_expiry_if_earlier() {
    let b = start_default().await;
    let mut watcher = will_watcher(&b).await;
    let mut c = persistent(Protocol::V5, "s1", Some(1));
    c.will = will_with_delay(1000);
    drop(Raw::connect(b.addr, c).await);
    assert_eq!(watcher.next_publish().await.payload.as_ref(), b"gone");
}

/// Sessions, their queued messages and retained messages survive a broker restart on the
/// same data directory (MQTT-4.1.0-1: session state kept while the session exists).
#[tokio::test]
async fn sessions_and_retained_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..BrokerConfig::default()
    };
    let b = start_durable(config.clone()).await;
    subscribe_and_leave(
        &b,
        persistent(Protocol::V5, "sub", Some(3600)),
        QoS::AtLeastOnce,
    )
    .await;
    wait_offline(&b, "sub").await;
    // A client publishes at QoS 1: PUBACK means the queued copy is on disk.
    let mut publisher = Raw::connect(b.addr, connect_packet(Protocol::V5, "pub", "dev1", 0)).await;
    for (id, payload) in [(1, &b"m1"[..]), (2, b"m2")] {
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "devices/dev1/data".into(),
                packet_id: id,
                payload: Bytes::copy_from_slice(payload),
                properties: Properties::default(),
            }))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    publisher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "devices/dev1/state".into(),
            packet_id: 3,
            payload: Bytes::from_static(b"on"),
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    drop(publisher);
    stop(b).await;

    let b = start_durable(config).await;
    let (mut raw, ack) =
        Raw::connect_ack(b.addr, persistent(Protocol::V5, "sub", Some(3600))).await;
    assert!(ack.session_present, "session restored from the store");
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = raw.next_publish().await;
        if p.qos != QoS::AtMostOnce {
            raw.send(&Packet::PubAck(ack_id(p.packet_id))).await;
        }
        got.push((p.topic, p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("devices/dev1/data".to_string(), b"m1".to_vec()),
            ("devices/dev1/data".to_string(), b"m2".to_vec()),
            ("devices/dev1/state".to_string(), b"on".to_vec()),
        ]
    );
    // The restored subscription still routes.
    b.broker.publish(
        "t1",
        server_msg("devices/dev1/data", QoS::AtLeastOnce, b"m3"),
    );
    assert_eq!(raw.next_publish().await.payload.as_ref(), b"m3");
    // The retained message is there for new subscribers too.
    let mut other = Raw::connect(b.addr, connect_packet(Protocol::V5, "o", "dev1", 0)).await;
    other
        .send(&subscribe("devices/dev1/state", QoS::AtLeastOnce))
        .await;
    let p = other.next_publish().await;
    assert!(p.retain);
    assert_eq!(p.payload.as_ref(), b"on");
}

/// MQTT-4.4.0-1 across a graceful restart: a message in flight when the broker stopped is
/// resent with DUP = 1 and its packet identifier by the next broker on the same data dir.
#[tokio::test]
async fn inflight_message_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..BrokerConfig::default()
    };
    let b = start_durable(config.clone()).await;
    let mut raw = Raw::connect(b.addr, persistent(Protocol::V311, "s1", None)).await;
    raw.subscribed("devices/dev1/#", QoS::AtLeastOnce).await;
    b.broker.publish(
        "t1",
        server_msg("devices/dev1/a", QoS::AtLeastOnce, b"in flight"),
    );
    let first = raw.next_publish().await;
    stop(b).await; // no PUBACK was sent
    drop(raw);

    let b = start_durable(config).await;
    assert_eq!(b.broker.metrics().sessions_persistent, 1);
    let (mut raw, ack) = Raw::connect_ack(b.addr, persistent(Protocol::V311, "s1", None)).await;
    assert!(ack.session_present);
    let again = raw.next_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload.as_ref(), b"in flight");
}

/// MQTT-3.1.2-10 / MQTT-3.14.4-3: a normal DISCONNECT discards the will, also for a
/// persistent session with a will delay.
#[tokio::test]
async fn normal_disconnect_discards_delayed_will() {
    let b = start_default().await;
    let mut watcher = will_watcher(&b).await;
    let mut c = persistent(Protocol::V5, "s1", Some(60));
    c.will = will_with_delay(1);
    let mut raw = Raw::connect(b.addr, c).await;
    raw.send(&Packet::Disconnect(Disconnect {
        code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    assert!(raw.until_closed().await.is_empty());
    assert!(watcher.no_publish_within(Duration::from_secs(2)).await);
}

/// Subscriptions are written through: an UNSUBSCRIBE before a restart stays effective after.
#[tokio::test]
async fn unsubscribe_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..BrokerConfig::default()
    };
    let b = start_durable(config.clone()).await;
    let mut raw = Raw::connect(b.addr, persistent(Protocol::V311, "s1", None)).await;
    for filter in ["devices/dev1/a", "devices/dev1/b"] {
        raw.subscribed(filter, QoS::AtLeastOnce).await;
    }
    raw.send(&Packet::Unsubscribe(wulian_mqtt::Unsubscribe {
        packet_id: 2,
        filters: vec!["devices/dev1/b".into()],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::UnsubAck(_))));
    stop(b).await;
    drop(raw);

    let b = start_durable(config).await;
    let a = server_msg("devices/dev1/a", QoS::AtLeastOnce, b"a");
    let bb = server_msg("devices/dev1/b", QoS::AtLeastOnce, b"b");
    assert_eq!(b.broker.publish("t1", a), 1);
    assert_eq!(b.broker.publish("t1", bb), 0);
}

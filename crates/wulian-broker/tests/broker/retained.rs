//! Retained messages: stored per tenant, sent on subscribe per Retain Handling, replaced,
//! deleted by an empty payload, expired, and the Retain As Published option.

use std::time::Duration;

use bytes::Bytes;
use wulian_broker::{OutboundMessage, Properties, Protocol, QoS, ReasonCode};
use wulian_mqtt::{
    Packet, Publish, RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions,
};

use crate::common::*;

fn retained(topic: &str, payload: &'static [u8], expiry: Option<u32>) -> OutboundMessage {
    OutboundMessage {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties {
            message_expiry_interval: expiry,
            ..Properties::default()
        },
    }
}

fn subscribe_with(filter: &str, options: SubscriptionOptions) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options,
        }],
        properties: Properties::default(),
    })
}

fn opts(rh: RetainHandling, rap: bool) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: rap,
        retain_handling: rh,
    }
}

async fn subscribed(raw: &mut Raw, filter: &str, options: SubscriptionOptions) {
    raw.send(&subscribe_with(filter, options)).await;
    match raw.recv().await {
        Some(Packet::SubAck(s)) => assert!(!s.codes[0].is_error()),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// MQTT-3.3.1-5 / MQTT-3.3.1-6 (3.1.1) and MQTT-3.3.1-8: a retained message is stored,
/// replaced by the next one, and sent to new subscriptions with RETAIN = 1; MQTT-3.3.1-9
/// (3.1.1): messages forwarded to existing subscriptions carry RETAIN = 0.
#[tokio::test]
async fn v311_retained_replaced_and_sent_on_subscribe() {
    let b = start_default().await;
    b.broker
        .publish("t1", retained("devices/dev1/state", b"old", None));
    b.broker
        .publish("t1", retained("devices/dev1/state", b"new", None));
    b.broker
        .publish("t2", retained("devices/dev1/state", b"other tenant", None));
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V311, "c", "dev1", 0)).await;
    subscribed(
        &mut raw,
        "devices/dev1/#",
        opts(RetainHandling::SendAtSubscribe, false),
    )
    .await;
    let p = raw.next_publish().await;
    assert!(p.retain);
    assert_eq!(p.payload.as_ref(), b"new");
    assert!(raw.no_publish_within(Duration::from_millis(200)).await);
    b.broker
        .publish("t1", retained("devices/dev1/state", b"live", None));
    let p = raw.next_publish().await;
    assert!(!p.retain, "forwarded live: RETAIN = 0");
    assert_eq!(b.broker.metrics().retained_messages, 2);
}

/// MQTT-3.3.1-10 / MQTT-3.3.1-11 (3.1.1): a retained PUBLISH with an empty payload deletes
/// the retained message (and is not itself stored).
#[tokio::test]
async fn empty_payload_deletes() {
    let b = start_default().await;
    b.broker
        .publish("t1", retained("devices/dev1/s", b"x", None));
    b.broker
        .publish("t1", retained("devices/dev1/s", b"", None));
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    subscribed(
        &mut raw,
        "devices/dev1/#",
        opts(RetainHandling::SendAtSubscribe, false),
    )
    .await;
    assert!(raw.no_publish_within(Duration::from_millis(300)).await);
    assert_eq!(b.broker.metrics().retained_messages, 0);
}

/// A client's retained PUBLISH is stored too (and acknowledged after it is).
#[tokio::test]
async fn client_retained_publish_is_stored() {
    let b = start_default().await;
    let mut publisher = Raw::connect(b.addr, connect_packet(Protocol::V5, "p", "dev1", 0)).await;
    publisher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "devices/me/state".into(),
            packet_id: 1,
            payload: Bytes::from_static(b"on"),
            properties: Properties::default(),
        }))
        .await;
    match publisher.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.code, ReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    subscribed(
        &mut raw,
        "devices/dev1/state",
        opts(RetainHandling::SendAtSubscribe, false),
    )
    .await;
    let p = raw.next_publish().await;
    assert!(p.retain);
    assert_eq!(p.topic, "devices/dev1/state");
}

/// MQTT-3.3.1-9 / MQTT-3.3.1-10 / MQTT-3.3.1-11 (5.0): Retain Handling 0 sends at every
/// subscribe, 1 only for a new subscription, 2 never.
#[tokio::test]
async fn retain_handling_options() {
    let b = start_default().await;
    b.broker
        .publish("t1", retained("devices/dev1/s", b"x", None));
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    subscribed(
        &mut raw,
        "devices/dev1/s",
        opts(RetainHandling::DoNotSend, false),
    )
    .await;
    assert!(raw.no_publish_within(Duration::from_millis(200)).await);
    // Already subscribed: "if new" sends nothing.
    subscribed(
        &mut raw,
        "devices/dev1/s",
        opts(RetainHandling::SendAtSubscribeIfNew, false),
    )
    .await;
    assert!(raw.no_publish_within(Duration::from_millis(200)).await);
    // New filter: "if new" sends.
    subscribed(
        &mut raw,
        "devices/dev1/+",
        opts(RetainHandling::SendAtSubscribeIfNew, false),
    )
    .await;
    assert!(raw.next_publish().await.retain);
    // 0: sent again at every subscribe.
    subscribed(
        &mut raw,
        "devices/dev1/+",
        opts(RetainHandling::SendAtSubscribe, false),
    )
    .await;
    assert!(raw.next_publish().await.retain);
}

/// MQTT-3.3.1-12 / MQTT-3.3.1-13: Retain As Published keeps the RETAIN flag of forwarded
/// messages; without it RETAIN is 0.
#[tokio::test]
async fn retain_as_published() {
    let b = start_default().await;
    let mut rap = Raw::connect(b.addr, connect_packet(Protocol::V5, "a", "dev1", 0)).await;
    subscribed(
        &mut rap,
        "devices/dev1/s",
        opts(RetainHandling::DoNotSend, true),
    )
    .await;
    let mut plain = Raw::connect(b.addr, connect_packet(Protocol::V5, "b", "dev1", 0)).await;
    subscribed(
        &mut plain,
        "devices/dev1/s",
        opts(RetainHandling::DoNotSend, false),
    )
    .await;
    b.broker
        .publish("t1", retained("devices/dev1/s", b"x", None));
    assert!(rap.next_publish().await.retain);
    assert!(!plain.next_publish().await.retain);
}

/// MQTT-3.3.2-5: a retained message whose expiry passed is no longer sent.
#[tokio::test]
async fn retained_message_expires() {
    let b = start_default().await;
    b.broker
        .publish("t1", retained("devices/dev1/s", b"x", Some(1)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    subscribed(
        &mut raw,
        "devices/dev1/#",
        opts(RetainHandling::SendAtSubscribe, false),
    )
    .await;
    assert!(raw.no_publish_within(Duration::from_millis(300)).await);
}

/// Answers `devices/{id}/state` for tenant t1 with the payload "from source".
struct StateSource;

impl wulian_broker::RetainedSource for StateSource {
    fn claims(&self, topic: &str) -> bool {
        topic.ends_with("/state")
    }

    fn matching(&self, tenant: &str, filter: &str) -> Vec<OutboundMessage> {
        let topic = "devices/dev1/state";
        if tenant != "t1" || !wulian_mqtt::topic::matches(filter, topic) {
            return Vec::new();
        }
        vec![retained(topic, b"from source", None)]
    }
}

/// A retained source answers for the topics it claims: a stored message for such a topic
/// (here from before the source was attached) is dropped, a retained PUBLISH to it reaches
/// live subscribers but is not stored, and new subscriptions get the source's message, with
/// RETAIN = 1 and beside the stored messages of other topics (MQTT-3.3.1-8).
#[tokio::test]
async fn a_retained_source_answers_the_topics_it_claims() {
    let b = start_default().await;
    b.broker
        .publish("t1", retained("devices/dev1/state", b"stored", None));
    b.broker
        .publish("t1", retained("devices/dev1/other", b"kept", None));
    b.broker
        .set_retained_source(std::sync::Arc::new(StateSource));
    let mut live = Raw::connect(b.addr, connect_packet(Protocol::V5, "a", "dev1", 0)).await;
    subscribed(
        &mut live,
        "devices/dev1/#",
        opts(RetainHandling::SendAtSubscribe, false),
    )
    .await;
    let mut got: Vec<(String, Vec<u8>, bool)> = Vec::new();
    for _ in 0..2 {
        let p = live.next_publish().await;
        got.push((p.topic.clone(), p.payload.to_vec(), p.retain));
    }
    assert_eq!(
        got,
        vec![
            ("devices/dev1/other".into(), b"kept".to_vec(), true),
            ("devices/dev1/state".into(), b"from source".to_vec(), true),
        ]
    );
    assert!(live.no_publish_within(Duration::from_millis(200)).await);

    b.broker
        .publish("t1", retained("devices/dev1/state", b"live", None));
    let p = live.next_publish().await;
    assert_eq!((p.payload.as_ref(), p.retain), (b"live".as_slice(), false));

    let mut late = Raw::connect(b.addr, connect_packet(Protocol::V5, "b", "dev1", 0)).await;
    subscribed(
        &mut late,
        "devices/dev1/state",
        opts(RetainHandling::SendAtSubscribe, false),
    )
    .await;
    assert_eq!(late.next_publish().await.payload.as_ref(), b"from source");
    assert!(late.no_publish_within(Duration::from_millis(200)).await);
}

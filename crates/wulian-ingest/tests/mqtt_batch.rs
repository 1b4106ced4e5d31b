//! Several PUBLISHes in one TCP write reach the pipeline as one batch (one store write):
//! every accepted message is stored, the acknowledgements come in the packets' order, and a
//! refused message gets its own reason code while the others of its batch succeed.
//! Raw MQTT over TCP (built with the codec) so the packets leave in one write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wulian_broker::{
    Authenticator, Broker, BrokerConfig, ConnectRequest, Identity, ListenerConfig, Principal,
    TopicPolicy,
};
use wulian_ingest::Pipeline;
use wulian_mqtt::{Connect, Packet, Protocol, Publish, QoS, ReasonCode};
use wulian_tsdb::{SeriesKey, Tsdb, Value};

const WAIT: Duration = Duration::from_secs(5);

/// Every client is the device named by its username, in tenant "t1".
struct DeviceAuth;

#[async_trait::async_trait]
impl Authenticator for DeviceAuth {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode> {
        let device = req.username.clone().ok_or(ReasonCode::NotAuthorized)?;
        Ok(Identity {
            tenant: "t1".into(),
            policy: TopicPolicy::own_device(),
            principal: Principal::Device { device_id: device },
            sys_access: false,
        })
    }
}

struct Setup {
    tsdb: Tsdb,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(wulian_tsdb::Config::new(dir.path())).unwrap();
    let pipeline = Pipeline::new(tsdb.clone());
    let broker = Broker::new(BrokerConfig::default(), Arc::new(DeviceAuth), pipeline);
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = shutdown.clone();
    tokio::spawn(async move {
        broker
            .serve_listener(listener, ListenerConfig::tcp(), token)
            .await
    });
    Setup {
        tsdb,
        addr,
        _dir: dir,
        _shutdown: shutdown.drop_guard(),
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    protocol: Protocol,
}

impl Client {
    async fn connect(addr: SocketAddr, protocol: Protocol, device: &str) -> Client {
        let mut client = Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            protocol,
        };
        client
            .write(&[Packet::Connect(Connect {
                protocol,
                clean_start: true,
                keep_alive: 30,
                client_id: device.into(),
                username: Some(device.into()),
                password: Some(Bytes::from_static(b"x")),
                will: None,
                properties: Default::default(),
            })])
            .await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client
    }

    /// All packets in one socket write.
    async fn write(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            wulian_mqtt::encode(packet, self.protocol, &mut out).unwrap();
        }
        self.stream.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Packet> {
        let read = async {
            loop {
                if let Ok(Some(p)) = wulian_mqtt::decode(&mut self.buf, self.protocol, 1 << 20) {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("answer in time")
    }

    /// The next `n` PUBACKs as (packet id, reason code), in arrival order.
    async fn pubacks(&mut self, n: usize) -> Vec<(u16, ReasonCode)> {
        let mut acks = Vec::new();
        while acks.len() < n {
            match self.recv().await {
                Some(Packet::PubAck(a)) => acks.push((a.packet_id, a.code)),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
        acks
    }
}

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: Default::default(),
    })
}

fn temps(tsdb: &Tsdb, device: &str) -> Vec<(i64, f64)> {
    let series = SeriesKey {
        tenant: "t1".into(),
        device: device.into(),
        key: "temp".into(),
    };
    tsdb.range(&series, 0, i64::MAX, 1000)
        .points
        .into_iter()
        .map(|p| match p.value {
            Value::F64(v) => (p.ts, v),
            other => panic!("unexpected value {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_of_publishes_is_stored_and_acknowledged_in_order() {
    let s = setup().await;
    let mut c = Client::connect(s.addr, Protocol::V5, "d1").await;
    let topic = "devices/d1/telemetry";
    let packets: Vec<Packet> = (1..=20u16)
        .map(|i| {
            // QoS 0 and 1 mixed: every third message is QoS 0.
            let qos = if i % 3 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            publish(
                topic,
                qos,
                i,
                &format!(r#"{{"ts": {}, "temp": {i}}}"#, i64::from(i) * 1000),
            )
        })
        .collect();
    c.write(&packets).await;
    let expected: Vec<(u16, ReasonCode)> = (1..=20u16)
        .filter(|i| i % 3 != 0)
        .map(|i| (i, ReasonCode::Success))
        .collect();
    assert_eq!(c.pubacks(expected.len()).await, expected);
    // Every PUBACK means durable; the QoS 0 messages came before the last PUBACK.
    let stored = temps(&s.tsdb, "d1");
    let all: Vec<(i64, f64)> = (1..=20).map(|i| (i * 1000, i as f64)).collect();
    assert_eq!(stored, all);
    // One socket write of 20 small packets arrives in one read (loopback): the pipeline
    // stored them with far fewer store writes than messages (one, unless the read split).
    let requests = s.tsdb.stats().commit_requests;
    assert!(requests < 20, "{requests} store writes for 20 messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_in_a_batch_gets_its_own_reason_code() {
    let s = setup().await;
    let mut c = Client::connect(s.addr, Protocol::V5, "d2").await;
    let topic = "devices/d2/telemetry";
    c.write(&[
        publish(topic, QoS::AtLeastOnce, 1, r#"{"ts": 1000, "temp": 1}"#),
        publish(topic, QoS::AtMostOnce, 0, r#"{"ts": 2000, "temp": 2}"#),
        // Not JSON: refused by the parser.
        publish(topic, QoS::AtLeastOnce, 3, r#"{"ts": 3000, "temp": "#),
        publish(topic, QoS::AtLeastOnce, 4, r#"{"ts": 4000, "temp": 4}"#),
        // A string for a float series: refused by the store, which refuses the batch's
        // write as a whole; the others must still be stored.
        publish(topic, QoS::AtLeastOnce, 5, r#"{"ts": 5000, "temp": "hot"}"#),
        publish(topic, QoS::AtLeastOnce, 6, r#"{"ts": 6000, "temp": 6}"#),
    ])
    .await;
    assert_eq!(
        c.pubacks(5).await,
        vec![
            (1, ReasonCode::Success),
            (3, ReasonCode::PayloadFormatInvalid),
            (4, ReasonCode::Success),
            (5, ReasonCode::PayloadFormatInvalid),
            (6, ReasonCode::Success),
        ]
    );
    assert_eq!(
        temps(&s.tsdb, "d2"),
        vec![(1000, 1.0), (2000, 2.0), (4000, 4.0), (6000, 6.0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_311_batch_of_qos0_and_qos1_is_stored() {
    let s = setup().await;
    let mut c = Client::connect(s.addr, Protocol::V311, "d3").await;
    let topic = "devices/me/telemetry";
    c.write(&[
        publish(topic, QoS::AtLeastOnce, 7, r#"{"ts": 1000, "temp": 1}"#),
        publish(topic, QoS::AtMostOnce, 0, r#"{"ts": 2000, "temp": 2}"#),
        publish(topic, QoS::AtLeastOnce, 8, r#"{"ts": 3000, "temp": 3}"#),
        publish(topic, QoS::AtLeastOnce, 9, r#"{"ts": 4000, "temp": 4}"#),
        Packet::PingReq,
        publish(topic, QoS::AtLeastOnce, 10, r#"{"ts": 5000, "temp": 5}"#),
    ])
    .await;
    let mut answers = Vec::new();
    while answers.len() < 5 {
        match c.recv().await {
            Some(Packet::PubAck(a)) => answers.push(format!("puback {}", a.packet_id)),
            Some(Packet::PingResp) => answers.push("pingresp".to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        answers,
        ["puback 7", "puback 8", "puback 9", "pingresp", "puback 10"]
    );
    assert_eq!(
        temps(&s.tsdb, "d3"),
        vec![
            (1000, 1.0),
            (2000, 2.0),
            (3000, 3.0),
            (4000, 4.0),
            (5000, 5.0)
        ]
    );
}

//! The message scenarios on the load generator's own client (`--raw`): MQTT 3.1.1 through
//! `wulian_mqtt`'s codec, one task per connection, publishes pipelined.
//!
//! Why: with rumqttc each client is an event loop plus a publishing task and a channel hop
//! per message, and 1,000 of them saturate the two cores this machine shares with the broker
//! at 30,000–45,000 msg/s, before either broker does. Here a connection is one task that,
//! when it wakes (its next publish is due, or acknowledgements arrived), writes every publish
//! that is due in one socket write and reads every acknowledgement a read holds. A publisher
//! that falls behind catches up in a burst, and QoS 1/2 publishers keep at most `inflight`
//! messages unacknowledged, so at saturation each connection pipelines up to its window and
//! the broker's acknowledgement rate sets the pace. The subscriber answers all the
//! deliveries of one read with one write. Timeline, counting and latencies are those of
//! [`crate::messaging`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, lookup_host};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at};
use wulian_mqtt::{
    Ack, Connect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};

use crate::cli::{Common, Load, Subscriber};
use crate::creds::{self, Credential};
use crate::messaging::{
    Stats, Window, collect_connected, merge_json, payload, sent_micros, stats_json,
};
use crate::{proc_stats, report};

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 1 << 20;
/// Publishes written by one wake-up at most, so a far-behind QoS 0 publisher still reads.
const MAX_BURST: u64 = 256;

/// An MQTT connection: the socket and what was read past the last decoded packet.
struct Conn {
    id: String,
    stream: TcpStream,
    inbuf: BytesMut,
    connect_micros: u64,
}

impl Conn {
    /// Decodes the next complete packet in the buffer, if any.
    fn next_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        wulian_mqtt::decode(&mut self.inbuf, Protocol::V311, MAX_PACKET)
            .with_context(|| format!("{}: undecodable packet from the broker", self.id))
    }

    /// Reads once; an orderly close is an error (the broker never closes first here).
    async fn read(&mut self) -> anyhow::Result<()> {
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(16 * 1024);
        }
        let n = self
            .stream
            .read_buf(&mut self.inbuf)
            .await
            .with_context(|| format!("{}: read", self.id))?;
        if n == 0 {
            bail!("{}: the broker closed the connection", self.id);
        }
        Ok(())
    }

    /// Reads until a packet is complete (bounded by `deadline`).
    async fn expect(&mut self, deadline: Instant) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = self.next_packet()? {
                return Ok(p);
            }
            timeout_at(deadline.into(), self.read())
                .await
                .with_context(|| format!("{}: no answer in time", self.id))??;
        }
    }
}

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        code: ReasonCode::Success,
        properties: Properties::default(),
    }
}

fn encode(p: &Packet, out: &mut BytesMut) -> anyhow::Result<()> {
    wulian_mqtt::encode(p, Protocol::V311, out).context("encode a packet")
}

/// TCP connect, CONNECT, a successful CONNACK.
async fn connect(
    broker: SocketAddr,
    id: String,
    user: Option<(String, String)>,
    deadline: Instant,
) -> anyhow::Result<Conn> {
    let started = Instant::now();
    let stream = timeout_at(deadline.into(), TcpStream::connect(broker))
        .await
        .with_context(|| format!("{id}: TCP connect timed out"))?
        .with_context(|| format!("{id}: TCP connect"))?;
    stream.set_nodelay(true).ok();
    let mut out = BytesMut::new();
    encode(
        &Packet::Connect(Connect {
            protocol: Protocol::V311,
            clean_start: true,
            keep_alive: 60,
            client_id: id.clone(),
            username: user.as_ref().map(|(u, _)| u.clone()),
            password: user.map(|(_, p)| Bytes::from(p)),
            will: None,
            properties: Properties::default(),
        }),
        &mut out,
    )?;
    let mut c = Conn {
        id,
        stream,
        inbuf: BytesMut::with_capacity(256),
        connect_micros: 0,
    };
    timeout_at(deadline.into(), c.stream.write_all(&out))
        .await
        .context("CONNECT write timed out")??;
    match c.expect(deadline).await? {
        Packet::ConnAck(ack) if ack.code == ReasonCode::Success => {}
        Packet::ConnAck(ack) => bail!("{}: CONNACK refused: {:?}", c.id, ack.code),
        other => bail!("{}: expected CONNACK, got {other:?}", c.id),
    }
    c.connect_micros = started.elapsed().as_micros() as u64;
    Ok(c)
}

/// Connects everyone, `connect_concurrency` at a time; failures are counted, not fatal.
async fn connect_all(
    common: &Common,
    broker: SocketAddr,
    identities: Vec<(String, Option<(String, String)>)>,
) -> (Vec<Conn>, Value, Stats) {
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let timeout = Duration::from_secs(common.connect_timeout_secs.max(1));
    let mut set = JoinSet::new();
    for (i, (id, user)) in identities.into_iter().enumerate() {
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, connect(broker, id, user, Instant::now() + timeout).await)
        });
    }
    collect_connected(set, started, |c| c.connect_micros).await
}

/// What one publishing connection does.
#[derive(Clone)]
struct PubPlan {
    topic: String,
    qos: QoS,
    /// Start of this connection's schedule and the time between its publishes.
    start: Instant,
    period: Duration,
    inflight: usize,
    padding: Arc<str>,
}

/// Publishes on schedule (catching up in bursts, never more than `inflight` unacknowledged)
/// until the window ends, then waits for the outstanding acknowledgements until the drain
/// deadline. QoS 2 answers each PUBREC with a PUBREL and completes on PUBCOMP.
async fn publisher(mut c: Conn, plan: PubPlan, w: Window) -> Stats {
    let mut stats = Stats::new();
    if let Err(e) = publish_until_done(&mut c, &plan, w, &mut stats).await {
        stats.error(format!("{e:#}"));
    }
    // Unanswered publishes are counted by `publish_until_done`; say goodbye, best effort.
    let mut out = BytesMut::new();
    if encode(
        &Packet::Disconnect(wulian_mqtt::Disconnect {
            code: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties::default(),
        }),
        &mut out,
    )
    .is_ok()
    {
        timeout_at(w.hard_end.into(), c.stream.write_all(&out))
            .await
            .ok();
    }
    stats
}

async fn publish_until_done(
    c: &mut Conn,
    plan: &PubPlan,
    w: Window,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<(u16, Instant)> = VecDeque::with_capacity(plan.inflight);
    let mut out = BytesMut::with_capacity(1024);
    let mut next_id: u16 = 0;
    let mut seq = 0u64;
    let period = plan.period.as_nanos().max(1);
    let result = async {
        // Bounded by `w.hard_end`: every wait below is under that deadline.
        loop {
            let now = Instant::now();
            if now >= w.hard_end || (now >= w.end && pending.is_empty()) {
                return Ok(());
            }
            // Everything due by now (the schedule's k-th publish is at start + k·period).
            let mut next_due = w.end;
            if now < w.end && now >= plan.start {
                let due = (now.duration_since(plan.start).as_nanos() / period) as u64 + 1;
                let room = if plan.qos == QoS::AtMostOnce {
                    MAX_BURST
                } else {
                    (plan.inflight - pending.len()) as u64
                };
                let n = due.saturating_sub(seq).min(room).min(MAX_BURST);
                for _ in 0..n {
                    seq += 1;
                    let packet_id = if plan.qos == QoS::AtMostOnce {
                        0
                    } else {
                        next_id = next_id.checked_add(1).unwrap_or(1);
                        next_id
                    };
                    encode(
                        &Packet::Publish(Publish {
                            dup: false,
                            qos: plan.qos,
                            retain: false,
                            topic: plan.topic.clone(),
                            packet_id,
                            payload: Bytes::from(payload(seq, &plan.padding)),
                            properties: Properties::default(),
                        }),
                        &mut out,
                    )?;
                    stats.sent += 1;
                    if plan.qos == QoS::AtMostOnce {
                        stats.completed += 1;
                        stats.completed_in_window += 1;
                    } else {
                        pending.push_back((packet_id, now));
                    }
                }
                // Still behind (window full or burst cap): wake on acks, or soon for QoS 0.
                next_due = if seq < due {
                    if plan.qos == QoS::AtMostOnce {
                        now
                    } else {
                        w.end
                    }
                } else {
                    plan.start + Duration::from_nanos((seq as u128 * period) as u64)
                };
            } else if now < plan.start {
                next_due = plan.start;
            }
            if !out.is_empty() {
                timeout_at(w.hard_end.into(), c.stream.write_all(&out))
                    .await
                    .context("write timed out")??;
                out.clear();
            }
            // Acknowledgements already read first; then wait for more or for the next due.
            let mut progressed = false;
            while let Some(p) = c.next_packet()? {
                progressed = true;
                handle_ack(p, plan.qos, &mut pending, &mut out, stats, w)?;
            }
            if progressed {
                continue;
            }
            let wake = if now >= w.end {
                w.hard_end
            } else {
                next_due.min(w.end)
            };
            tokio::select! {
                r = c.read() => r?,
                () = sleep_until(wake.into()) => {}
            }
        }
    }
    .await;
    stats.outstanding += pending.len() as u64;
    result
}

fn handle_ack(
    p: Packet,
    qos: QoS,
    pending: &mut VecDeque<(u16, Instant)>,
    out: &mut BytesMut,
    stats: &mut Stats,
    w: Window,
) -> anyhow::Result<()> {
    let done = match (p, qos) {
        (Packet::PubAck(a), QoS::AtLeastOnce) | (Packet::PubComp(a), QoS::ExactlyOnce) => a,
        (Packet::PubRec(a), QoS::ExactlyOnce) => {
            if a.code.is_error() {
                bail!("PUBREC refused: {:?}", a.code);
            }
            encode(&Packet::PubRel(ack(a.packet_id)), out)?;
            return Ok(());
        }
        (other, _) => bail!("unexpected packet from the broker: {other:?}"),
    };
    if done.code.is_error() {
        stats.error(format!("publish refused: {:?}", done.code));
    }
    // Acknowledgements come in order (MQTT-4.6.0-2), so this is nearly always the front.
    let Some(at) = pending.iter().position(|(id, _)| *id == done.packet_id) else {
        bail!("acknowledgement of unknown packet id {}", done.packet_id);
    };
    let (_, sent) = pending.remove(at).expect("position is in range");
    let now = Instant::now();
    stats.completed += 1;
    if now <= w.end {
        stats.completed_in_window += 1;
    }
    report::record(
        &mut stats.publish_latency,
        now.duration_since(sent).as_micros() as u64,
    );
    Ok(())
}

/// Subscribes to `filter` and waits for a granted SUBACK.
async fn subscribe(c: &mut Conn, filter: &str, qos: QoS, deadline: Instant) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    encode(
        &Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: filter.to_string(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: Properties::default(),
        }),
        &mut out,
    )?;
    timeout_at(deadline.into(), c.stream.write_all(&out))
        .await
        .context("SUBSCRIBE write timed out")??;
    match c.expect(deadline).await? {
        Packet::SubAck(ack) if ack.codes.iter().all(|code| !code.is_error()) => Ok(()),
        Packet::SubAck(_) => bail!("{}: SUBSCRIBE {filter} refused by the broker", c.id),
        other => bail!("{}: expected SUBACK, got {other:?}", c.id),
    }
}

/// Receives until the drain deadline, acknowledging the deliveries of each read in one write.
async fn subscriber(mut c: Conn, w: Window) -> Stats {
    let mut stats = Stats::new();
    let mut out = BytesMut::with_capacity(4096);
    let result: anyhow::Result<()> = async {
        // Bounded by `w.hard_end`.
        loop {
            while let Some(p) = c.next_packet()? {
                match p {
                    Packet::Publish(p) => {
                        let now = Instant::now();
                        stats.received += 1;
                        if now <= w.end {
                            stats.received_in_window += 1;
                        }
                        if let Some(sent) = sent_micros(&p.payload) {
                            report::record(
                                &mut stats.delivery_latency,
                                crate::messaging::now_micros().saturating_sub(sent),
                            );
                        }
                        match p.qos {
                            QoS::AtMostOnce => {}
                            QoS::AtLeastOnce => {
                                encode(&Packet::PubAck(ack(p.packet_id)), &mut out)?
                            }
                            QoS::ExactlyOnce => {
                                encode(&Packet::PubRec(ack(p.packet_id)), &mut out)?
                            }
                        }
                    }
                    Packet::PubRel(a) => encode(&Packet::PubComp(ack(a.packet_id)), &mut out)?,
                    other => bail!("{}: unexpected packet {other:?}", c.id),
                }
            }
            if !out.is_empty() {
                timeout_at(w.hard_end.into(), c.stream.write_all(&out))
                    .await
                    .context("write timed out")??;
                out.clear();
            }
            match timeout_at(w.hard_end.into(), c.read()).await {
                Err(_) => return Ok(()),
                Ok(r) => r?,
            }
        }
    }
    .await;
    if let Err(e) = result {
        stats.error(format!("{e:#}"));
    }
    stats
}

/// Runs [`subscriber`] on its own thread with a single-threaded runtime; the receiver yields
/// its stats. The socket moves to the new runtime's reactor.
fn spawn_subscriber(c: Conn, w: Window) -> anyhow::Result<tokio::sync::oneshot::Receiver<Stats>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let std_stream = c
        .stream
        .into_std()
        .context("detach the subscriber socket")?;
    let (id, inbuf, connect_micros) = (c.id, c.inbuf, c.connect_micros);
    std::thread::Builder::new()
        .name("bench-subscriber".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let mut stats = Stats::new();
                    stats.error(format!("subscriber runtime: {e}"));
                    tx.send(stats).ok();
                    return;
                }
            };
            let stats = rt.block_on(async move {
                match TcpStream::from_std(std_stream) {
                    Ok(stream) => {
                        let c = Conn {
                            id,
                            stream,
                            inbuf,
                            connect_micros,
                        };
                        subscriber(c, w).await
                    }
                    Err(e) => {
                        let mut stats = Stats::new();
                        stats.error(format!("subscriber socket: {e}"));
                        stats
                    }
                }
            });
            tx.send(stats).ok();
        })
        .context("start the subscriber thread")?;
    Ok(rx)
}

/// Fan-in (optionally with one subscriber on `subscribe_to`) or QoS 2 on the raw client.
pub async fn load_scenario(
    name: &str,
    common: &Common,
    creds: &[Credential],
    load: &Load,
    qos: QoS,
    subscribe_to: Option<&str>,
    sub: &Subscriber,
) -> anyhow::Result<Value> {
    let broker = lookup_host((common.host.as_str(), common.port))
        .await
        .context("resolve the broker address")?
        .find(SocketAddr::is_ipv4)
        .context("the broker has no IPv4 address")?;
    let mut subscribers = Vec::new();
    if let Some(filter) = subscribe_to {
        let user = sub.subscriber_user.clone().map(|u| {
            let p = sub.subscriber_password.clone().unwrap_or_default();
            (u, p)
        });
        let deadline = Instant::now() + Duration::from_secs(common.connect_timeout_secs.max(1));
        let mut s = connect(broker, "bench-sub".into(), user, deadline)
            .await
            .context("the subscriber could not connect")?;
        subscribe(&mut s, filter, qos, deadline).await?;
        subscribers.push(s);
    }
    let ids = (0..load.clients)
        .map(|i| {
            creds::nth(creds, i).map(|c| {
                let user = c.token.map(|t| (c.id.clone(), t));
                (c.id, user)
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (publishers, connect_summary, connect_stats) = connect_all(common, broker, ids).await;
    if publishers.is_empty() {
        bail!(
            "no publisher could connect: {}",
            connect_stats.first_error.unwrap_or_default()
        );
    }
    let w = Window::new(load.duration_secs, load.drain_secs);
    let n = publishers.len();
    let rate = load.rate.max(1) as f64;
    let period = Duration::from_secs_f64(n as f64 / rate);
    let padding: Arc<str> = "x".repeat(load.payload_padding).into();
    let mut pub_tasks = JoinSet::new();
    // The subscriber gets a thread and a runtime of its own, as a separate application
    // would be: in the publishers' runtime it would wait behind 1,000 ready tasks before each
    // read, and at QoS 1 the broker's in-flight window (64) over that wait would be measured
    // instead of the broker.
    let mut sub_threads = Vec::new();
    for s in subscribers {
        sub_threads.push(spawn_subscriber(s, w)?);
    }
    for (i, c) in publishers.into_iter().enumerate() {
        let plan = PubPlan {
            topic: load.topic.replace("{id}", &c.id),
            qos,
            // Staggered so the offered load is even over time, not 1,000 at once.
            start: w.t0 + Duration::from_secs_f64(i as f64 / rate),
            period,
            inflight: usize::from(load.inflight.max(1)),
            padding: padding.clone(),
        };
        pub_tasks.spawn(publisher(c, plan, w));
    }
    sleep_until(w.t0.into()).await;
    let before = common.broker_pid.and_then(proc_stats::sample);
    sleep_until(w.end.into()).await;
    let after = common.broker_pid.and_then(proc_stats::sample);
    let mut pubs = Stats::new();
    let mut subs = Stats::new();
    while let Some(r) = pub_tasks.join_next().await {
        match r {
            Ok(s) => pubs.merge(s),
            Err(e) => pubs.error(format!("publisher task: {e}")),
        }
    }
    for t in sub_threads {
        match t.await {
            Ok(s) => subs.merge(s),
            Err(_) => subs.error("the subscriber thread ended without its results"),
        }
    }
    let secs = w.end.duration_since(w.t0).as_secs_f64();
    Ok(merge_json(
        json!({
            "scenario": name,
            "client": "raw",
            "label": common.label,
            "publishers": n,
            "subscribers": usize::from(subscribe_to.is_some()),
            "subscribe_filter": subscribe_to,
            "target_rate": load.rate,
            "inflight": load.inflight,
            "connect": connect_summary,
            "connect_first_error": connect_stats.first_error,
            "broker": proc_stats::delta(before, after),
        }),
        stats_json(&pubs, &subs, secs, qos as u8),
    ))
}

//! The message scenarios (fan-in, fan-out, QoS 2), on rumqttc clients speaking MQTT 3.1.1.
//!
//! Timeline of a run: connect everyone (bounded concurrency, each connect bounded in time),
//! start all publishers together at `t0`, publish at the target rate until `window_end`, then
//! wait at most `drain` for outstanding acknowledgements and deliveries. Rates count only what
//! completed inside the window, so a broker that falls behind shows it; latencies cover
//! everything that completed. Publish latency is from the PUBLISH leaving the client to its
//! PUBACK (QoS 1) or PUBCOMP (QoS 2); delivery latency is from the timestamp in the payload
//! to its arrival at a subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS,
    SubscribeReasonCode,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at};

use crate::cli::{Common, FanIn, FanOut, Load, Subscriber};
use crate::creds::{self, Credential};
use crate::proc_stats;
use crate::report;

/// Counters and histograms of one client, merged over all clients at the end.
pub(crate) struct Stats {
    pub(crate) sent: u64,
    pub(crate) completed: u64,
    pub(crate) completed_in_window: u64,
    pub(crate) received: u64,
    pub(crate) received_in_window: u64,
    pub(crate) outstanding: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) publish_latency: Histogram<u64>,
    pub(crate) delivery_latency: Histogram<u64>,
    /// Every delivery as (send time, latency) in µs, when the scenario looks at each
    /// message's spread over its subscribers (fan-out); `None` otherwise.
    pub(crate) deliveries: Option<Vec<(u64, u64)>>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            sent: 0,
            completed: 0,
            completed_in_window: 0,
            received: 0,
            received_in_window: 0,
            outstanding: 0,
            errors: 0,
            first_error: None,
            publish_latency: report::histogram(),
            delivery_latency: report::histogram(),
            deliveries: None,
        }
    }

    pub(crate) fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    pub(crate) fn merge(&mut self, o: Stats) {
        self.sent += o.sent;
        self.completed += o.completed;
        self.completed_in_window += o.completed_in_window;
        self.received += o.received;
        self.received_in_window += o.received_in_window;
        self.outstanding += o.outstanding;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        // Same bounds on both sides, so adding cannot fail.
        self.publish_latency.add(&o.publish_latency).ok();
        self.delivery_latency.add(&o.delivery_latency).ok();
        match (&mut self.deliveries, o.deliveries) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

/// How each message's deliveries spread over time: for every message that reached all
/// `subscribers`, its first delivery, 10th percentile, median, 90th percentile and last
/// delivery (latency from the send time), then the median of each over the messages. Shows
/// whether a broker starts a fan-out late or delivers it slowly, which one latency histogram
/// over all deliveries mixes up.
pub(crate) fn per_message_json(deliveries: &[(u64, u64)], subscribers: usize) -> Value {
    // Every subscriber gets the same payload, so its send time identifies the message.
    let mut by_message: HashMap<u64, Vec<u64>> = HashMap::new();
    for &(sent, latency) in deliveries {
        by_message.entry(sent).or_default().push(latency);
    }
    let mut spreads: [Vec<u64>; 5] = Default::default();
    for latencies in by_message.values_mut() {
        if latencies.len() < subscribers.max(1) {
            continue;
        }
        latencies.sort_unstable();
        let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
        for (spread, q) in spreads.iter_mut().zip([0, 10, 50, 90, 100]) {
            spread.push(at(q));
        }
    }
    let median_ms = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).map(|us| *us as f64 / 1000.0)
    };
    let [first, p10, p50, p90, last] = &mut spreads;
    json!({
        "messages": first.len(),
        "first_ms": median_ms(first),
        "p10_ms": median_ms(p10),
        "p50_ms": median_ms(p50),
        "p90_ms": median_ms(p90),
        "last_ms": median_ms(last),
    })
}

/// When the load runs.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) t0: Instant,
    pub(crate) end: Instant,
    pub(crate) hard_end: Instant,
}

impl Window {
    pub(crate) fn new(duration_secs: u64, drain_secs: u64) -> Window {
        let t0 = Instant::now() + Duration::from_millis(200);
        let end = t0 + Duration::from_secs(duration_secs.max(1));
        Window {
            t0,
            end,
            hard_end: end + Duration::from_secs(drain_secs),
        }
    }
}

fn qos_of(q: u8) -> anyhow::Result<QoS> {
    Ok(match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => bail!("QoS must be 0, 1 or 2"),
    })
}

pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A small telemetry document wulian accepts as-is; `t_us` carries the send time.
pub(crate) fn payload(seq: u64, padding: &str) -> Vec<u8> {
    let t = now_micros();
    if padding.is_empty() {
        format!("{{\"seq\":{seq},\"t_us\":{t},\"temp\":21.5}}").into_bytes()
    } else {
        format!("{{\"seq\":{seq},\"t_us\":{t},\"temp\":21.5,\"pad\":\"{padding}\"}}").into_bytes()
    }
}

/// The `t_us` field of a payload made by [`payload`], without a full JSON parse.
pub(crate) fn sent_micros(payload: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"t_us\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

struct Connected {
    client: AsyncClient,
    eventloop: EventLoop,
    id: String,
    connect_micros: u64,
}

/// Connects one client and waits for its CONNACK.
async fn connect(
    common: &Common,
    id: String,
    user: Option<(String, String)>,
    inflight: u16,
) -> anyhow::Result<Connected> {
    let mut opts = MqttOptions::new(id.clone(), common.host.clone(), common.port);
    opts.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_inflight(inflight.max(1))
        .set_request_channel_capacity(16)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = user {
        opts.set_credentials(u, p);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(common.connect_timeout_secs.max(1));
    eventloop.set_network_options(net);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(common.connect_timeout_secs.max(1));
    // Bounded: every poll is under the deadline, and the first event is the CONNACK or an error.
    for _ in 0..16 {
        let event = timeout_at(deadline.into(), eventloop.poll())
            .await
            .map_err(|_| anyhow::anyhow!("{id}: no CONNACK in time"))?
            .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        if let Event::Incoming(Packet::ConnAck(_)) = event {
            return Ok(Connected {
                client,
                eventloop,
                id,
                connect_micros: started.elapsed().as_micros() as u64,
            });
        }
    }
    bail!("{id}: no CONNACK")
}

/// Connects `n` clients with bounded concurrency. Returns the connected ones (in order) and
/// the connect stats; failures are counted, not fatal.
async fn connect_all(
    common: &Common,
    identities: Vec<(String, Option<(String, String)>)>,
    inflight: u16,
) -> (Vec<Connected>, Value, Stats) {
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    for (i, (id, user)) in identities.into_iter().enumerate() {
        let limit = limit.clone();
        let common = clone_common(common);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, connect(&common, id, user, inflight).await)
        });
    }
    collect_connected(set, started, |c| c.connect_micros).await
}

/// Waits for the connect tasks in `set` (each `(index, client)`) and summarises them: the
/// connected clients in index order, the connect report (count, failures, rate, latency from
/// `micros`) and the failures counted in the stats.
pub(crate) async fn collect_connected<C: 'static>(
    mut set: JoinSet<(usize, anyhow::Result<C>)>,
    started: Instant,
    micros: fn(&C) -> u64,
) -> (Vec<C>, Value, Stats) {
    let mut ok = Vec::new();
    let mut stats = Stats::new();
    let mut hist = report::histogram();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(c))) => {
                report::record(&mut hist, micros(&c));
                ok.push((i, c));
            }
            Ok((_, Err(e))) => stats.error(format!("connect: {e:#}")),
            Err(e) => stats.error(format!("connect task: {e}")),
        }
    }
    ok.sort_by_key(|(i, _)| *i);
    let secs = started.elapsed().as_secs_f64();
    let summary = json!({
        "connected": ok.len(),
        "failed": stats.errors,
        "seconds": secs,
        "per_sec": ok.len() as f64 / secs.max(1e-9),
        "latency": report::latency(&hist),
    });
    (ok.into_iter().map(|(_, c)| c).collect(), summary, stats)
}

fn clone_common(c: &Common) -> Common {
    Common {
        host: c.host.clone(),
        port: c.port,
        credentials_file: None,
        broker_pid: c.broker_pid,
        label: c.label.clone(),
        threads: c.threads,
        connect_concurrency: c.connect_concurrency,
        connect_timeout_secs: c.connect_timeout_secs,
    }
}

fn device_identity(cred: Credential) -> (String, Option<(String, String)>) {
    let user = cred.token.map(|t| (cred.id.clone(), t));
    (cred.id, user)
}

fn subscriber_identity(sub: &Subscriber, id: String) -> (String, Option<(String, String)>) {
    let user = sub.subscriber_user.clone().map(|u| {
        let p = sub.subscriber_password.clone().unwrap_or_default();
        (u, p)
    });
    (id, user)
}

/// Subscribes and waits for the SUBACK; a refused filter is an error.
async fn subscribe(
    c: &mut Connected,
    filter: &str,
    qos: QoS,
    deadline: Instant,
) -> anyhow::Result<()> {
    c.client
        .subscribe(filter, qos)
        .await
        .context("queue SUBSCRIBE")?;
    for _ in 0..64 {
        let event = timeout_at(deadline.into(), c.eventloop.poll())
            .await
            .map_err(|_| anyhow::anyhow!("{}: no SUBACK in time", c.id))??;
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            if ack
                .return_codes
                .iter()
                .any(|code| matches!(code, SubscribeReasonCode::Failure))
            {
                bail!("{}: SUBSCRIBE {filter} refused by the broker", c.id);
            }
            return Ok(());
        }
    }
    bail!("{}: no SUBACK", c.id)
}

/// Publishes on `topic` at one message per `period` from `t0 + offset` until the window ends.
async fn publish_loop(
    client: AsyncClient,
    topic: String,
    qos: QoS,
    period: Duration,
    offset: Duration,
    w: Window,
    padding: Arc<str>,
) {
    let mut interval = tokio::time::interval_at((w.t0 + offset).into(), period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    // Bounded by the window: at most duration / period iterations.
    loop {
        let tick = interval.tick().await;
        if tick.into_std() >= w.end {
            return;
        }
        seq += 1;
        let body = payload(seq, &padding);
        match timeout_at(
            w.end.into(),
            client.publish(topic.as_str(), qos, false, body),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Runs one client's event loop until the drain deadline or, for a publisher (`stop_early`),
/// as soon as the window has ended and nothing is outstanding. Records acknowledgement and
/// delivery times.
async fn drive(mut c: Connected, qos: QoS, w: Window, stop_early: bool, each: bool) -> Stats {
    let mut stats = Stats::new();
    if each {
        stats.deliveries = Some(Vec::new());
    }
    let mut pending: HashMap<u16, Instant> = HashMap::new();
    // Bounded by `w.hard_end`: every poll is under that deadline.
    loop {
        if stop_early && Instant::now() >= w.end && pending.is_empty() {
            break;
        }
        let event = match timeout_at(w.hard_end.into(), c.eventloop.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                stats.error(format!("{}: {e}", c.id));
                break;
            }
            Ok(Ok(event)) => event,
        };
        let now = Instant::now();
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                stats.sent += 1;
                if qos == QoS::AtMostOnce {
                    stats.completed += 1;
                    if now <= w.end {
                        stats.completed_in_window += 1;
                    }
                } else {
                    pending.insert(pkid, now);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) if qos == QoS::AtLeastOnce => {
                complete(&mut stats, &mut pending, ack.pkid, now, w);
            }
            Event::Incoming(Packet::PubComp(comp)) if qos == QoS::ExactlyOnce => {
                complete(&mut stats, &mut pending, comp.pkid, now, w);
            }
            Event::Incoming(Packet::Publish(p)) => {
                stats.received += 1;
                if now <= w.end {
                    stats.received_in_window += 1;
                }
                if let Some(sent) = sent_micros(&p.payload) {
                    let latency = now_micros().saturating_sub(sent);
                    report::record(&mut stats.delivery_latency, latency);
                    if let Some(d) = &mut stats.deliveries {
                        d.push((sent, latency));
                    }
                }
            }
            _ => {}
        }
    }
    stats.outstanding += pending.len() as u64;
    // Best-effort goodbye; the socket closes when the event loop is dropped.
    c.client.try_disconnect().ok();
    stats
}

fn complete(
    stats: &mut Stats,
    pending: &mut HashMap<u16, Instant>,
    pkid: u16,
    now: Instant,
    w: Window,
) {
    if let Some(sent) = pending.remove(&pkid) {
        stats.completed += 1;
        if now <= w.end {
            stats.completed_in_window += 1;
        }
        report::record(
            &mut stats.publish_latency,
            now.duration_since(sent).as_micros() as u64,
        );
    }
}

/// What a load run is asked to do, once everyone is connected.
struct Plan<'a> {
    topic_template: &'a str,
    qos: QoS,
    rate: u64,
    duration_secs: u64,
    drain_secs: u64,
    padding: usize,
    /// Keep every delivery, for [`per_message_json`].
    per_message: bool,
}

/// Publishers start together at `t0`; subscribers listen until the drain deadline.
/// Returns (publisher stats, subscriber stats, broker CPU/RSS over the window, window secs).
async fn run_load(
    common: &Common,
    publishers: Vec<Connected>,
    subscribers: Vec<Connected>,
    plan: &Plan<'_>,
) -> (Stats, Stats, Value, f64) {
    let w = Window::new(plan.duration_secs, plan.drain_secs);
    let n = publishers.len().max(1) as f64;
    let rate = plan.rate.max(1) as f64;
    let period = Duration::from_secs_f64(n / rate);
    let padding: Arc<str> = "x".repeat(plan.padding).into();
    let mut loops = JoinSet::new();
    let mut pub_drivers = JoinSet::new();
    let mut sub_drivers = JoinSet::new();
    for s in subscribers {
        sub_drivers.spawn(drive(s, plan.qos, w, false, plan.per_message));
    }
    for (i, c) in publishers.into_iter().enumerate() {
        let topic = plan.topic_template.replace("{id}", &c.id);
        let offset = Duration::from_secs_f64(i as f64 / rate);
        loops.spawn(publish_loop(
            c.client.clone(),
            topic,
            plan.qos,
            period,
            offset,
            w,
            padding.clone(),
        ));
        pub_drivers.spawn(drive(c, plan.qos, w, true, false));
    }
    sleep_until(w.t0.into()).await;
    let before = common.broker_pid.and_then(proc_stats::sample);
    sleep_until(w.end.into()).await;
    let after = common.broker_pid.and_then(proc_stats::sample);
    let mut pubs = Stats::new();
    let mut subs = Stats::new();
    while let Some(r) = pub_drivers.join_next().await {
        match r {
            Ok(s) => pubs.merge(s),
            Err(e) => pubs.error(format!("publisher task: {e}")),
        }
    }
    while let Some(r) = sub_drivers.join_next().await {
        match r {
            Ok(s) => subs.merge(s),
            Err(e) => subs.error(format!("subscriber task: {e}")),
        }
    }
    loops.shutdown().await;
    let secs = w.end.duration_since(w.t0).as_secs_f64();
    (pubs, subs, proc_stats::delta(before, after), secs)
}

pub(crate) fn stats_json(pubs: &Stats, subs: &Stats, secs: f64, qos: u8) -> Value {
    json!({
        "window_secs": secs,
        "qos": qos,
        "published": {
            "sent": pubs.sent,
            "completed": pubs.completed,
            "completed_per_sec": pubs.completed_in_window as f64 / secs,
            "outstanding_at_end": pubs.outstanding,
            "latency": report::latency(&pubs.publish_latency),
        },
        "delivered": {
            "received": subs.received,
            "per_sec": subs.received_in_window as f64 / secs,
            "latency": report::latency(&subs.delivery_latency),
        },
        "errors": pubs.errors + subs.errors,
        "first_error": pubs.first_error.clone().or_else(|| subs.first_error.clone()),
    })
}

pub(crate) fn merge_json(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// Publishers with the scenario's identities: the credentials in order, or anonymous.
async fn connect_publishers(
    common: &Common,
    creds: &[Credential],
    load: &Load,
) -> anyhow::Result<(Vec<Connected>, Value, Stats)> {
    let ids = (0..load.clients)
        .map(|i| creds::nth(creds, i).map(device_identity))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(connect_all(common, ids, load.inflight).await)
}

async fn load_scenario(
    name: &str,
    common: &Common,
    creds: &[Credential],
    load: &Load,
    qos: QoS,
    subscribe_to: Option<&str>,
    sub: &Subscriber,
) -> anyhow::Result<Value> {
    if load.raw {
        let qos = match qos {
            QoS::AtMostOnce => wulian_mqtt::QoS::AtMostOnce,
            QoS::AtLeastOnce => wulian_mqtt::QoS::AtLeastOnce,
            QoS::ExactlyOnce => wulian_mqtt::QoS::ExactlyOnce,
        };
        return crate::raw::load_scenario(name, common, creds, load, qos, subscribe_to, sub).await;
    }
    let mut subscribers = Vec::new();
    if let Some(filter) = subscribe_to {
        let (mut c, _, stats) = connect_all(
            common,
            vec![subscriber_identity(sub, "bench-sub".into())],
            1000,
        )
        .await;
        let Some(mut s) = c.pop() else {
            bail!(
                "the subscriber could not connect: {}",
                stats.first_error.unwrap_or_default()
            );
        };
        let deadline = Instant::now() + Duration::from_secs(common.connect_timeout_secs);
        subscribe(&mut s, filter, qos, deadline).await?;
        subscribers.push(s);
    }
    let (publishers, connect, connect_stats) = connect_publishers(common, creds, load).await?;
    if publishers.is_empty() {
        bail!(
            "no publisher could connect: {}",
            connect_stats.first_error.unwrap_or_default()
        );
    }
    let plan = Plan {
        topic_template: &load.topic,
        qos,
        rate: load.rate,
        duration_secs: load.duration_secs,
        drain_secs: load.drain_secs,
        padding: load.payload_padding,
        per_message: false,
    };
    let clients = publishers.len();
    let (pubs, subs, broker, secs) = run_load(common, publishers, subscribers, &plan).await;
    Ok(merge_json(
        json!({
            "scenario": name,
            "label": common.label,
            "publishers": clients,
            "subscribers": usize::from(subscribe_to.is_some()),
            "subscribe_filter": subscribe_to,
            "target_rate": load.rate,
            "connect": connect,
            "connect_first_error": connect_stats.first_error,
            "broker": broker,
        }),
        stats_json(&pubs, &subs, secs, qos as u8),
    ))
}

/// N devices publish on their own topics; optionally one subscriber on a wildcard.
pub async fn fan_in(common: &Common, creds: &[Credential], args: &FanIn) -> anyhow::Result<Value> {
    let qos = qos_of(args.qos)?;
    load_scenario(
        "fan-in",
        common,
        creds,
        &args.load,
        qos,
        args.subscribe.as_deref(),
        &args.subscriber,
    )
    .await
}

/// Like fan-in, at QoS 2 and without a subscriber: the four-packet handshake per message.
pub async fn qos2(common: &Common, creds: &[Credential], load: &Load) -> anyhow::Result<Value> {
    let sub = Subscriber {
        subscriber_user: None,
        subscriber_password: None,
    };
    load_scenario("qos2", common, creds, load, QoS::ExactlyOnce, None, &sub).await
}

/// One publisher, many subscribers on its topic.
pub async fn fan_out(
    common: &Common,
    creds: &[Credential],
    args: &FanOut,
) -> anyhow::Result<Value> {
    let qos = qos_of(args.qos)?;
    let publisher = creds::nth(creds, 0)?;
    let topic = args.topic.replace("{id}", &publisher.id);
    let ids = (0..args.subscribers)
        .map(|i| subscriber_identity(&args.subscriber, format!("bench-sub-{i:06}")))
        .collect();
    let (mut subscribers, connect, connect_stats) = connect_all(common, ids, 64).await;
    if subscribers.is_empty() {
        bail!(
            "no subscriber could connect: {}",
            connect_stats.first_error.unwrap_or_default()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(common.connect_timeout_secs.max(1) * 3);
    let mut refused = 0usize;
    let mut first_refusal = None;
    let mut subscribed = Vec::with_capacity(subscribers.len());
    for mut s in subscribers.drain(..) {
        match subscribe(&mut s, &topic, qos, deadline).await {
            Ok(()) => subscribed.push(s),
            Err(e) => {
                refused += 1;
                first_refusal.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    if subscribed.is_empty() {
        bail!(
            "no subscriber could subscribe to {topic}: {}",
            first_refusal.unwrap_or_default()
        );
    }
    let (mut pubs, _, pub_stats) = connect_all(common, vec![device_identity(publisher)], 64).await;
    let Some(p) = pubs.pop() else {
        bail!(
            "the publisher could not connect: {}",
            pub_stats.first_error.unwrap_or_default()
        );
    };
    let plan = Plan {
        topic_template: &topic,
        qos,
        rate: args.rate,
        duration_secs: args.duration_secs,
        drain_secs: args.drain_secs,
        padding: 0,
        per_message: true,
    };
    let n_subs = subscribed.len();
    let (pubs, subs, broker, secs) = run_load(common, vec![p], subscribed, &plan).await;
    Ok(merge_json(
        json!({
            "scenario": "fan-out",
            "label": common.label,
            "publishers": 1,
            "subscribers": n_subs,
            "subscribe_refused": refused,
            "subscribe_first_refusal": first_refusal,
            "topic": topic,
            "target_rate": args.rate,
            "expected_deliveries_per_sec": args.rate as f64 * n_subs as f64,
            "connect": connect,
            "connect_first_error": connect_stats.first_error,
            "broker": broker,
            "per_message": per_message_json(subs.deliveries.as_deref().unwrap_or_default(), n_subs),
        }),
        stats_json(&pubs, &subs, secs, qos as u8),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_message_spread_counts_messages_that_reached_everyone() {
        // Two messages to three subscribers (latencies in µs), a third reached only one.
        let deliveries = [
            (100, 1_000),
            (100, 3_000),
            (100, 2_000),
            (200, 5_000),
            (200, 4_000),
            (200, 6_000),
            (300, 9_000),
        ];
        let v = per_message_json(&deliveries, 3);
        assert_eq!(v["messages"], 2);
        // Firsts 1.0 and 4.0 ms, medians 2.0 and 5.0, lasts 3.0 and 6.0: the upper median.
        assert_eq!(v["first_ms"], 4.0);
        assert_eq!(v["p50_ms"], 5.0);
        assert_eq!(v["last_ms"], 6.0);
        assert_eq!(per_message_json(&[], 3)["first_ms"], Value::Null);
    }

    #[test]
    fn payload_carries_its_send_time() {
        let p = payload(7, "");
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(sent_micros(&p), v["t_us"].as_u64());
        let padded = payload(1, "xx");
        assert!(serde_json::from_slice::<Value>(&padded).is_ok());
        assert_eq!(sent_micros(b"{}"), None);
    }
}

//! One simulated device's MQTT life: connect with its id and token, subscribe to its commands
//! (and, for locks, its twin delta), report, answer commands, and reconnect with a back-off
//! when the connection drops — the loop a firmware team would write. A lock's behaviour lives
//! in [`crate::bike::Lock`]; this loop only carries its messages and its planned outages.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wulian_common::time::now_ms;

use crate::Target;
use crate::bike::{Lock, Publish};
use crate::config::CityConfig;
use crate::provision::{SimDevice, SimKind};
use crate::rng::Rng;
use crate::sensor::Sensor;

/// Room for a whole upload after an outage (buffered arrays, events, a report).
const REQUEST_CHANNEL: usize = 128;
/// Largest MQTT packet in either direction; uploads are chunked well below it.
const MAX_PACKET_BYTES: usize = 64 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(
    target: Target,
    dev: SimDevice,
    config: CityConfig,
    seed: u64,
    shutdown: CancellationToken,
) {
    match dev.kind {
        SimKind::Bike => run_lock(target, dev, config, seed, shutdown).await,
        SimKind::AirSensor => run_sensor(target, dev, config, seed, shutdown).await,
    }
}

fn connect(target: &Target, dev: &SimDevice) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(dev.id.clone(), target.host.clone(), target.port);
    opts.set_credentials(dev.id.clone(), dev.token.clone())
        .set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    AsyncClient::new(opts, REQUEST_CHANNEL)
}

/// The next event of the connection, if there is one; never ready without.
async fn next_event(conn: &mut Option<(AsyncClient, EventLoop)>) -> Result<Event, ConnectionError> {
    match conn {
        Some((_, eventloop)) => eventloop.poll().await,
        None => std::future::pending().await,
    }
}

async fn run_lock(
    target: Target,
    dev: SimDevice,
    config: CityConfig,
    seed: u64,
    shutdown: CancellationToken,
) {
    let mut rng = Rng::new(seed);
    let mut lock = Lock::new(&config, &mut rng, now_ms());
    let base = format!("devices/{}", dev.id);
    let mut conn: Option<(AsyncClient, EventLoop)> = None;
    let mut backoff = Duration::from_secs(1);
    let mut retry_at: Option<Instant> = None;
    loop {
        if conn.is_none() && !lock.radio_off() && retry_at.is_none_or(|t| Instant::now() >= t) {
            retry_at = None;
            let (client, eventloop) = connect(&target, &dev);
            // Queued until the connection is up.
            for topic in ["commands/+", "twin/delta"] {
                if let Err(error) =
                    client.try_subscribe(format!("{base}/{topic}"), QoS::AtLeastOnce)
                {
                    tracing::debug!(device = %dev.id, error = %error, "Subscription not queued.");
                }
            }
            conn = Some((client, eventloop));
        }
        let due_in = Duration::from_millis(
            u64::try_from(lock.next_due_ms().saturating_sub(now_ms())).unwrap_or(0),
        );
        let mut wake = Instant::now() + due_in.min(Duration::from_secs(3600));
        if let Some(t) = retry_at {
            wake = wake.min(t);
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some((client, _)) = &conn {
                    let _bye = client.try_disconnect();
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {
                if now_ms() >= lock.next_due_ms() {
                    let out = lock.tick(now_ms(), &mut rng);
                    publish(&conn, &base, out);
                    if lock.radio_off() && conn.take().is_some() {
                        // Dropping the connection closes the socket without a DISCONNECT, as
                        // a lost cellular link would.
                        lock.link_down();
                        tracing::debug!(device = %dev.id, "Simulated lock lost its link.");
                    }
                }
            }
            event = next_event(&mut conn) => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_secs(1);
                    let out = lock.link_up(now_ms(), &mut rng);
                    publish(&conn, &base, out);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(topic) = p.topic.strip_prefix(base.as_str()).and_then(|t| t.strip_prefix('/')) {
                        let out = lock.on_message(topic, &p.payload, now_ms(), &mut rng);
                        publish(&conn, &base, out);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(device = %dev.id, error = %error, "Simulated lock disconnected; reconnecting.");
                    conn = None;
                    lock.link_down();
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            },
        }
    }
}

fn publish(conn: &Option<(AsyncClient, EventLoop)>, base: &str, out: Vec<Publish>) {
    let Some((client, _)) = conn else {
        return;
    };
    for Publish { topic, payload } in out {
        // try_publish: a full queue drops a message rather than block the device.
        if let Err(error) = client.try_publish(
            format!("{base}/{topic}"),
            QoS::AtLeastOnce,
            false,
            payload.to_string(),
        ) {
            tracing::debug!(topic = %topic, error = %error, "Simulated lock dropped a message.");
        }
    }
}

async fn run_sensor(
    target: Target,
    dev: SimDevice,
    config: CityConfig,
    seed: u64,
    shutdown: CancellationToken,
) {
    let mut rng = Rng::new(seed);
    let mut sensor = Sensor::new(&mut rng);
    let interval = Duration::from_secs(config.sensor_interval_s.max(1));
    let mut backoff = Duration::from_secs(1);
    loop {
        let (client, mut eventloop) = connect(&target, &dev);
        let base = format!("devices/{}", dev.id);
        // Queued until the connection is up.
        let _queued = client
            .subscribe(format!("{base}/commands/+"), QoS::AtLeastOnce)
            .await;
        let mut ticker = tokio::time::interval(interval);
        let dropped = loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _bye = client.disconnect().await;
                    return;
                }
                _ = ticker.tick() => {
                    let values = sensor.step(now_ms(), &mut rng);
                    // try_publish: a device whose link is down drops a reading rather than
                    // queue without bound.
                    let _dropped = client.try_publish(format!("{base}/telemetry"), QoS::AtLeastOnce, false, values.to_string());
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => backoff = Duration::from_secs(1),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let name = p.topic.rsplit('/').next().unwrap_or_default();
                        let reply = json!({
                            "id": body["id"],
                            "status": "failed",
                            "error": format!("an air station takes no command {name:?}"),
                        });
                        let _queued = client.try_publish(format!("{}/response", p.topic), QoS::AtLeastOnce, false, reply.to_string());
                    }
                    Ok(_) => {}
                    Err(error) => break error,
                },
            }
        };
        tracing::debug!(device = %dev.id, error = %dropped, "Simulated device disconnected; reconnecting.");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

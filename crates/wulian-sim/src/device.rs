//! One simulated device's MQTT life: connect with its id and token, subscribe to its commands
//! (and, for bikes, its twin delta), report on a timer, answer commands, and reconnect with a
//! back-off when the connection drops — the loop a firmware team would write.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wulian_common::time::now_ms;

use crate::Target;
use crate::bike::Bike;
use crate::provision::{CityConfig, SimDevice, SimKind};
use crate::rng::Rng;
use crate::sensor::Sensor;

const FIRMWARE: &str = "1.4.2";

enum Behaviour {
    Bike(Bike),
    Sensor(Sensor),
}

pub async fn run(
    target: Target,
    dev: SimDevice,
    config: CityConfig,
    seed: u64,
    shutdown: CancellationToken,
) {
    let mut rng = Rng::new(seed);
    let mut behaviour = match dev.kind {
        SimKind::Bike => Behaviour::Bike(Bike::new(&config, &mut rng)),
        SimKind::AirSensor => Behaviour::Sensor(Sensor::new(&mut rng)),
    };
    let mut interval_s = match dev.kind {
        SimKind::Bike => config.bike_interval_s,
        SimKind::AirSensor => config.sensor_interval_s,
    }
    .max(1);
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut opts = MqttOptions::new(dev.id.clone(), target.host.clone(), target.port);
        opts.set_credentials(dev.id.clone(), dev.token.clone())
            .set_keep_alive(Duration::from_secs(60))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(opts, 32);
        let base = format!("devices/{}", dev.id);
        // Queued until the connection is up.
        let _queued = client
            .subscribe(format!("{base}/commands/+"), QoS::AtLeastOnce)
            .await;
        if matches!(behaviour, Behaviour::Bike(_)) {
            let _queued = client
                .subscribe(format!("{base}/twin/delta"), QoS::AtLeastOnce)
                .await;
            let report = json!({"firmware": FIRMWARE, "report_interval_s": interval_s});
            let _queued = client
                .publish(
                    format!("{base}/twin/reported"),
                    QoS::AtLeastOnce,
                    false,
                    report.to_string(),
                )
                .await;
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(interval_s));
        let dropped = loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _bye = client.disconnect().await;
                    return;
                }
                _ = ticker.tick() => {
                    let values = match &mut behaviour {
                        Behaviour::Bike(bike) => bike.step(interval_s as f64, &mut rng),
                        Behaviour::Sensor(sensor) => sensor.step(now_ms(), &mut rng),
                    };
                    // try_publish: a device whose link is down drops a reading rather than
                    // queue without bound.
                    let _dropped = client.try_publish(format!("{base}/telemetry"), QoS::AtLeastOnce, false, values.to_string());
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => backoff = Duration::from_secs(1),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if p.topic.ends_with("/twin/delta") {
                            if let Some(n) = body["delta"]["report_interval_s"].as_u64().filter(|n| (1..=3600).contains(n)) {
                                interval_s = n;
                                ticker = tokio::time::interval(Duration::from_secs(n));
                                let report = json!({"report_interval_s": n});
                                let _queued = client.try_publish(format!("{base}/twin/reported"), QoS::AtLeastOnce, false, report.to_string());
                            }
                        } else if let Some(name) = p.topic.rsplit('/').next() {
                            let answer = match &mut behaviour {
                                Behaviour::Bike(bike) => bike.command(name, &body["params"], &mut rng),
                                Behaviour::Sensor(_) => Err(format!("an air station takes no command {name:?}")),
                            };
                            let mut reply = match answer {
                                Ok(result) => json!({"result": result}),
                                Err(error) => json!({"error": error}),
                            };
                            reply["id"] = body["id"].clone();
                            let _queued = client.try_publish(format!("{}/response", p.topic), QoS::AtLeastOnce, false, reply.to_string());
                        }
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
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

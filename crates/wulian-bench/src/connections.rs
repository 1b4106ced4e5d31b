//! The `connections` scenario: how many idle, authenticated clients a broker holds, how fast
//! it accepts them, and what each costs in resident memory.
//!
//! rumqttc cannot bind a client socket to a chosen local address, and one source address
//! gives only ~28,000 ephemeral ports towards one broker port; so this scenario speaks MQTT
//! 3.1.1 itself with `wulian_mqtt`'s codec over tokio sockets bound to 127.0.0.1..=127.0.0.N.
//! With `--tls-ca` it connects over TLS (every connection a full handshake), and with
//! `--client-certs` each client presents its own certificate (mutual TLS) instead of a
//! password.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout_at;
use wulian_mqtt::{Connect, Packet, Properties, Protocol, ReasonCode};

use crate::cli::{Common, Connections};
use crate::creds::{self, Credential};
use crate::proc_stats;
use crate::report;
use crate::tls::ClientTls;

/// An open client connection, held idle (never read again, only dropped).
enum Held {
    Tcp {
        _stream: TcpStream,
    },
    Tls {
        _stream: Box<tokio_rustls::client::TlsStream<TcpStream>>,
    },
}

/// Connects (TCP, then the TLS handshake if `tls`), sends CONNECT and waits for a successful
/// CONNACK; returns the open connection.
async fn open(
    broker: SocketAddr,
    source: Ipv4Addr,
    cred: Credential,
    tls: Option<(&ClientTls, usize)>,
    keep_alive: u16,
    deadline: Instant,
) -> anyhow::Result<Held> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .with_context(|| format!("bind {source}"))?;
    let stream = timeout_at(deadline.into(), socket.connect(broker))
        .await
        .context("TCP connect timed out")?
        .context("TCP connect")?;
    stream.set_nodelay(true).ok();
    let Some((tls, i)) = tls else {
        let mut stream = stream;
        mqtt_connect(&mut stream, cred, false, keep_alive, deadline).await?;
        return Ok(Held::Tcp { _stream: stream });
    };
    let (connector, name) = tls
        .connector(i)
        .with_context(|| format!("no client certificate loaded for client {i}"))?;
    let mut stream = timeout_at(deadline.into(), connector.connect(name, stream))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake")?;
    mqtt_connect(&mut stream, cred, tls.mutual(), keep_alive, deadline).await?;
    Ok(Held::Tls {
        _stream: Box::new(stream),
    })
}

/// CONNECT, then a successful CONNACK. A client with a certificate sends no username or
/// password: the certificate is its identity.
async fn mqtt_connect<S>(
    stream: &mut S,
    cred: Credential,
    certificate: bool,
    keep_alive: u16,
    deadline: Instant,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let token = if certificate { None } else { cred.token };
    let connect = Packet::Connect(Connect {
        protocol: Protocol::V311,
        clean_start: true,
        keep_alive,
        username: token.as_ref().map(|_| cred.id.clone()),
        client_id: cred.id,
        password: token.map(Bytes::from),
        will: None,
        properties: Properties::default(),
    });
    let mut out = BytesMut::new();
    wulian_mqtt::encode(&connect, Protocol::V311, &mut out).context("encode CONNECT")?;
    timeout_at(deadline.into(), async {
        stream.write_all(&out).await?;
        stream.flush().await
    })
    .await
    .context("CONNECT write timed out")?
    .context("write CONNECT")?;
    let mut buf = BytesMut::with_capacity(64);
    // Bounded: CONNACK is 4 bytes; give up after a few reads or at the deadline.
    for _ in 0..8 {
        let n = timeout_at(deadline.into(), stream.read_buf(&mut buf))
            .await
            .context("no CONNACK in time")?
            .context("read CONNACK")?;
        if n == 0 {
            anyhow::bail!("connection closed before CONNACK");
        }
        match wulian_mqtt::decode(&mut buf, Protocol::V311, 1024)? {
            Some(Packet::ConnAck(ack)) if ack.code == ReasonCode::Success => return Ok(()),
            Some(Packet::ConnAck(ack)) => anyhow::bail!("CONNACK refused: {:?}", ack.code),
            Some(other) => anyhow::bail!("expected CONNACK, got {other:?}"),
            None => {}
        }
    }
    anyhow::bail!("no CONNACK")
}

pub async fn run(
    common: &Common,
    creds: &[Credential],
    args: &Connections,
) -> anyhow::Result<Value> {
    let broker = lookup_host((common.host.as_str(), common.port))
        .await
        .context("resolve the broker address")?
        .find(SocketAddr::is_ipv4)
        .context("the broker has no IPv4 address")?;
    let count = if creds.is_empty() {
        args.count
    } else {
        args.count.min(creds.len())
    };
    let sources: Vec<Ipv4Addr> = (1..=args.source_addrs.max(1))
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect();
    // Certificates are loaded before the clock starts.
    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => {
            let ids = (0..count)
                .map(|i| creds::nth(creds, i).map(|c| c.id))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let dir = args.client_certs.as_deref();
            Some(Arc::new(ClientTls::load(&common.host, ca, dir, &ids)?))
        }
    };
    let before = common.broker_pid.and_then(proc_stats::sample);
    let started = Instant::now();
    let stop_opening = started + Duration::from_secs(args.duration_secs.max(1));
    let limit = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let (release_tx, release_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<u64, String>>(1024);
    let mut holders = JoinSet::new();
    let mut hist = report::histogram();
    let (mut connected, mut failed) = (0usize, 0usize);
    let mut first_error: Option<String> = None;
    let mut last_connected = started;
    let mut spawned = 0usize;
    for i in 0..count {
        if Instant::now() >= stop_opening {
            break;
        }
        let permit = limit.clone().acquire_owned().await.context("semaphore")?;
        let cred = creds::nth(creds, i)?;
        let source = sources[i % sources.len()];
        let mut release = release_rx.clone();
        let done = done_tx.clone();
        let keep_alive = args.keep_alive;
        let timeout = Duration::from_secs(common.connect_timeout_secs.max(1));
        let hold_until = stop_opening + Duration::from_secs(args.hold_secs + 30);
        let tls = tls.clone();
        spawned += 1;
        holders.spawn(async move {
            let t = Instant::now();
            let tls = tls.as_deref().map(|tls| (tls, i));
            let result = open(broker, source, cred, tls, keep_alive, t + timeout).await;
            drop(permit);
            match result {
                Ok(stream) => {
                    done.send(Ok(t.elapsed().as_micros() as u64)).await.ok();
                    // Hold the connection idle until released (or a hard bound).
                    timeout_at(hold_until.into(), release.wait_for(|r| *r))
                        .await
                        .ok();
                    drop(stream);
                }
                Err(e) => {
                    done.send(Err(format!("{e:#}"))).await.ok();
                }
            }
        });
        // Collect finished connects as we go so the channel never fills up.
        while let Ok(r) = done_rx.try_recv() {
            tally(
                r,
                &mut hist,
                &mut connected,
                &mut failed,
                &mut first_error,
                &mut last_connected,
            );
        }
        // After a wave of failures the broker (or the machine) is at its limit: stop.
        if failed >= 100 && failed * 10 > connected {
            break;
        }
    }
    drop(done_tx);
    // Every spawned task reports exactly once; bounded by the connect timeout.
    let collect_deadline = Instant::now() + Duration::from_secs(common.connect_timeout_secs + 5);
    while connected + failed < spawned {
        match timeout_at(collect_deadline.into(), done_rx.recv()).await {
            Ok(Some(r)) => tally(
                r,
                &mut hist,
                &mut connected,
                &mut failed,
                &mut first_error,
                &mut last_connected,
            ),
            Ok(None) | Err(_) => break,
        }
    }
    let connect_secs = last_connected.duration_since(started).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let after = common.broker_pid.and_then(proc_stats::sample);
    let rss_per_conn = match (before, after) {
        (Some(b), Some(a)) if connected > 0 => {
            Some((a.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / connected as f64)
        }
        _ => None,
    };
    release_tx.send(true).ok();
    holders.shutdown().await;
    Ok(json!({
        "scenario": "connections",
        "label": common.label,
        "requested": count,
        "connected": connected,
        "failed": failed,
        "first_error": first_error,
        "source_addrs": sources.len(),
        "transport": match &tls {
            None => "tcp",
            Some(tls) if tls.mutual() => "mutual-tls",
            Some(_) => "tls",
        },
        "connect_secs": connect_secs,
        "connects_per_sec": connected as f64 / connect_secs.max(1e-9),
        "connect_latency": report::latency(&hist),
        "broker": proc_stats::delta(before, after),
        "rss_bytes_per_connection": rss_per_conn,
    }))
}

fn tally(
    r: Result<u64, String>,
    hist: &mut hdrhistogram::Histogram<u64>,
    connected: &mut usize,
    failed: &mut usize,
    first_error: &mut Option<String>,
    last_connected: &mut Instant,
) {
    match r {
        Ok(us) => {
            *connected += 1;
            *last_connected = Instant::now();
            report::record(hist, us);
        }
        Err(e) => {
            *failed += 1;
            first_error.get_or_insert(e);
        }
    }
}

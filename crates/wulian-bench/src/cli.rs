//! Command-line arguments. Defaults describe a short run on one machine; every load has a
//! count and a duration so nothing runs unbounded.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "wulian-bench",
    version,
    about = "MQTT load generator (prints one JSON report)"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Common {
    /// Broker host (an address on this machine).
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker MQTT port.
    #[arg(long, global = true, default_value_t = 1883)]
    pub port: u16,
    /// "id token" lines, one per device (wulian). Without it clients connect anonymously with
    /// client ids `bench-N` (e.g. Mosquitto with allow_anonymous).
    #[arg(long, global = true)]
    pub credentials_file: Option<PathBuf>,
    /// Broker process id: its CPU time and resident memory are read from /proc before and
    /// after the load and reported.
    #[arg(long, global = true)]
    pub broker_pid: Option<u32>,
    /// Label copied into the report (e.g. "wulian" or "mosquitto").
    #[arg(long, global = true, default_value = "broker")]
    pub label: String,
    /// Tokio worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
    /// Connections opened at once while connecting.
    #[arg(long, global = true, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Give up on a connection (TCP + CONNACK) after this many seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub connect_timeout_secs: u64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// N devices publish telemetry on their own topic; optional subscriber on a wildcard.
    FanIn(FanIn),
    /// One publisher, many subscribers of its topic.
    FanOut(FanOut),
    /// N devices publish at QoS 2 (PUBLISH/PUBREC/PUBREL/PUBCOMP per message).
    Qos2(Load),
    /// Open as many idle authenticated connections as possible.
    Connections(Connections),
    /// Create devices through wulian's REST API and write a credentials file.
    Provision(Provision),
    /// Write a CA, a server certificate and one client certificate per device (mutual TLS).
    DeviceCerts(DeviceCerts),
    /// A simulated bike-share city: lock farm, riders renting at a fixed rate, GBFS probes.
    Bikeshare(Bikeshare),
}

/// The publishing side shared by the message scenarios.
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Publishing clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Target publish rate over all clients, messages per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of publishing (the measuring window).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds to wait for outstanding acknowledgements and deliveries after the window.
    #[arg(long, default_value_t = 3)]
    pub drain_secs: u64,
    /// Extra bytes of padding in each JSON payload.
    #[arg(long, default_value_t = 0)]
    pub payload_padding: usize,
    /// QoS 1/2 messages in flight per client (wulian's default receive maximum is 64).
    #[arg(long, default_value_t = 64)]
    pub inflight: u16,
    /// Topic template; `{id}` is the client's device id.
    #[arg(long, default_value = "devices/{id}/telemetry")]
    pub topic: String,
    /// Use the load generator's own MQTT 3.1.1 client (one task per connection, publishes
    /// pipelined up to `--inflight`) instead of rumqttc: cheap enough per message that the
    /// broker, not the load generator, sets the ceiling.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Subscriber {
    /// Subscriber username (a wulian application client; any user on Mosquitto).
    #[arg(long)]
    pub subscriber_user: Option<String>,
    /// Subscriber password.
    #[arg(long)]
    pub subscriber_password: Option<String>,
}

#[derive(Args, Debug)]
pub struct FanIn {
    #[command(flatten)]
    pub load: Load,
    /// QoS of the publishes (0, 1 or 2). Throughput without a subscriber counts acknowledged
    /// publishes, so QoS 1 is the default.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Run one subscriber on this filter (e.g. `devices/+/telemetry`); none if absent.
    #[arg(long)]
    pub subscribe: Option<String>,
    #[command(flatten)]
    pub subscriber: Subscriber,
}

#[derive(Args, Debug)]
pub struct FanOut {
    /// Subscribing clients.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publish rate of the one publisher, messages per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    #[arg(long, default_value_t = 3)]
    pub drain_secs: u64,
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Topic published and subscribed to; `{id}` is the publisher's device id.
    #[arg(long, default_value = "devices/{id}/telemetry")]
    pub topic: String,
    #[command(flatten)]
    pub subscriber: Subscriber,
}

#[derive(Args, Debug)]
pub struct Connections {
    /// Connections to open (stops earlier at the first wave of refusals or at the deadline).
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Spread connections over source addresses 127.0.0.1 .. 127.0.0.N (about 28,000
    /// ephemeral ports per source address and destination).
    #[arg(long, default_value_t = 4)]
    pub source_addrs: u8,
    /// Stop opening connections after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Hold the connections open this long after the last one connected, then read memory.
    #[arg(long, default_value_t = 2)]
    pub hold_secs: u64,
    /// Keep-alive announced in CONNECT, seconds (no PINGREQ is sent while holding).
    #[arg(long, default_value_t = 300)]
    pub keep_alive: u16,
    /// Connect over TLS, trusting this CA (PEM); every connection is a full handshake.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: client N presents DIR/{its id}.pem and DIR/{its id}.key (from
    /// `device-certs`) and sends no username or password. Needs `--tls-ca`.
    #[arg(long, requires = "tls_ca")]
    pub client_certs: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DeviceCerts {
    /// Output directory: ca.pem, ca.key, server.pem, server.key, devices/{id}.pem and .key.
    #[arg(long)]
    pub out: PathBuf,
    /// Devices: the ids of `--credentials-file`, else `bench-000000` onwards.
    #[arg(long)]
    pub count: usize,
}

#[derive(Args, Debug)]
pub struct Provision {
    /// wulian's HTTP address, e.g. http://127.0.0.1:8080
    #[arg(long = "url", visible_alias = "provision")]
    pub url: String,
    /// An admin API key.
    #[arg(long)]
    pub api_key: String,
    /// Devices to create.
    #[arg(long)]
    pub count: usize,
    /// Device id prefix; ids are `{prefix}{n:06}`.
    #[arg(long, default_value = "bench-")]
    pub prefix: String,
    /// Where to write the "id token" lines.
    #[arg(long)]
    pub out: PathBuf,
    /// Parallel HTTP requests.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

#[derive(Args, Debug)]
pub struct Bikeshare {
    /// wulian's HTTP address, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: String,
    /// An admin API key of the tenant.
    #[arg(long)]
    pub api_key: String,
    /// The tenant (GBFS and rider sign-up paths).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Bikes (devices, MQTT connections).
    #[arg(long, default_value_t = 10_000)]
    pub bikes: usize,
    /// Bike id prefix; ids are `{prefix}{n:06}`.
    #[arg(long, default_value = "bike-")]
    pub prefix: String,
    /// Riders to sign up; 0: rate x (ride + cooldown + 5 s) x 1.3.
    #[arg(long, default_value_t = 0)]
    pub riders: usize,
    /// Trip starts offered per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// Seconds of offered load.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Seconds a ride lasts (unlock confirmed to the lock closing).
    #[arg(long, default_value_t = 10)]
    pub ride_secs: u64,
    /// Seconds a bike and its rider rest after a ride before they are picked again.
    #[arg(long, default_value_t = 3)]
    pub cooldown_secs: u64,
    /// The system's `unlock_timeout_s`.
    #[arg(long, default_value_t = 10)]
    pub unlock_timeout_s: u32,
    /// Report interval of a parked lock, seconds (the contract's 300).
    #[arg(long, default_value_t = 300)]
    pub parked_interval_secs: u64,
    /// Report interval while riding, seconds (the contract's 10).
    #[arg(long, default_value_t = 10)]
    pub riding_interval_secs: u64,
    /// Parking fences.
    #[arg(long, default_value_t = 2000)]
    pub parking_zones: usize,
    /// Half the side of the square service area, metres.
    #[arg(long, default_value_t = 5000.0)]
    pub radius_m: f64,
    #[arg(long, default_value_t = 30.259)]
    pub center_lat: f64,
    #[arg(long, default_value_t = 120.149)]
    pub center_lon: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Locks holding an MQTT connection; the others are "sleepy" (connect, report, disconnect
    /// on their interval, like a cellular lock in power saving) and are never rented. Bounded by
    /// the open-file limit of the server and of this process.
    #[arg(long, default_value_t = 100_000)]
    pub max_connected: usize,
    /// Spread lock connections over source addresses 127.0.0.1 .. 127.0.0.N.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u8,
    /// Parallel HTTP requests while setting up (zones, riders).
    #[arg(long, default_value_t = 16)]
    pub setup_parallel: usize,
    /// Parallel bulk-import requests (1,000 bikes each).
    #[arg(long, default_value_t = 2)]
    pub import_parallel: usize,
    /// Give up waiting for the bike share to offer the bikes after this many seconds.
    #[arg(long, default_value_t = 90)]
    pub ready_timeout_secs: u64,
    /// Milliseconds between GBFS probes (at least 1,100: the feed cache lives a second).
    #[arg(long, default_value_t = 2000)]
    pub gbfs_interval_ms: u64,
    /// Deadline of one HTTP request, seconds.
    #[arg(long, default_value_t = 30)]
    pub http_timeout_secs: u64,
}

//! The configuration file and how it meets environment variables and flags.
//!
//! Precedence, lowest to highest: built-in defaults (`impl Default`, with the reasons), the TOML
//! file given by `--config`, then `WULIAN_*` environment variables and command-line flags (clap
//! reads both; a flag beats its variable). `wulian config default` prints `DEFAULT_FILE`, and a
//! test keeps that text and `Config::default()` identical.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The commented default configuration file.
pub const DEFAULT_FILE: &str = include_str!("default-config.toml");

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub storage: StorageConfig,
    pub http: HttpConfig,
    /// People's console logins: session timeouts, cookie security, the login throttle.
    pub sessions: SessionsConfig,
    pub mqtt: MqttConfig,
    pub coap: CoapConfig,
    pub webhooks: WebhooksConfig,
    /// The rule engine: the action queue and the bounds of windowed aggregates (docs/rules.md).
    pub rules: wulian_rules::EngineConfig,
    pub simulation: SimulationConfig,
    /// The maps of the console and the rider app: a tile server instead of the GeoJSON basemap.
    pub map: MapConfig,
    pub log: LogConfig,
}

/// `[map]`: a deployment's tile server (docs/configuration.md). Empty: the maps draw the
/// tenant's GeoJSON basemap (`PUT /api/v1/bikeshare/basemap`, filled by `wulian demo`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MapConfig {
    /// A MapLibre style document URL (vector tiles); wins over `tiles`.
    pub style_url: String,
    /// Raster tile URL templates with `{z}`, `{x}` and `{y}`.
    pub tiles: Vec<String>,
    /// The raster tiles' size in pixels (256 when unset).
    pub tile_size: u16,
    /// The tiles' attribution, shown on the maps.
    pub attribution: String,
}

impl MapConfig {
    fn problems(&self, out: &mut Vec<String>) {
        if !self.style_url.is_empty() && origin(&self.style_url).is_none() {
            out.push("map.style_url must be an http:// or https:// URL".into());
        }
        for url in &self.tiles {
            if origin(url).is_none() || !["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p)) {
                out.push(format!(
                    "map.tiles: {url:?} must be an http:// or https:// URL with {{z}}, {{x}} and {{y}}"
                ));
            }
        }
        if self.tile_size != 0 && !(64..=1024).contains(&self.tile_size) {
            out.push("map.tile_size must be between 64 and 1024".into());
        }
    }

    /// What the map routes hand to the console and the rider app.
    pub fn tiles(&self) -> wulian_bikeshare::api::MapTiles {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        wulian_bikeshare::api::MapTiles {
            style_url: some(&self.style_url),
            tiles: self.tiles.clone(),
            tile_size: if self.tile_size == 0 {
                256
            } else {
                self.tile_size
            },
            attribution: some(&self.attribution),
        }
    }

    /// The origins the pages must be allowed to load from (their Content-Security-Policy).
    /// A style document names further tile and glyph URLs of its own: serve them from the
    /// style's origin, or proxy them there.
    pub fn origins(&self) -> Vec<String> {
        let mut out: Vec<String> = std::iter::once(&self.style_url)
            .chain(&self.tiles)
            .filter_map(|u| origin(u))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// `scheme://host[:port]` of an http(s) URL, or None. Only characters a URL's authority may
/// hold, so the origin can go into a header verbatim.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let valid = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    valid.then(|| format!("{scheme}://{authority}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    Sync,
    Async,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub durability: DurabilityMode,
    pub fsync_interval_ms: u64,
    /// QoS 0 MQTT telemetry (never acknowledged) is written in batches gathered over this
    /// many milliseconds (0: each read's messages at once).
    pub qos0_batch_ms: u64,
    /// Telemetry older than this many days is dropped, a whole day-partition at a time.
    /// 0 keeps everything. The default for devices whose tenant and profile set no
    /// `retention_days` of their own.
    pub retention_days: u64,
    /// Days the 1-minute rollups (summaries for charts) are kept; 0 keeps them forever.
    pub rollup_1m_retention_days: u64,
    /// Days the 1-hour rollups are kept; 0 keeps them forever.
    pub rollup_1h_retention_days: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            // Relative to where wulian is started, so a first run needs no setup.
            data_dir: PathBuf::from("./wulian-data"),
            // Acknowledged means on disk: the safe default; `async` trades a bounded window of
            // loss on power failure for throughput.
            durability: DurabilityMode::Sync,
            fsync_interval_ms: 100,
            // Fresh enough for dashboards and rules; long enough to share a group commit.
            qos0_batch_ms: 2,
            // Keep everything unless the operator decides otherwise: deleting data is a choice.
            retention_days: 0,
            rollup_1m_retention_days: 90,
            rollup_1h_retention_days: 730,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    /// Largest firmware image accepted by `POST /api/v1/firmware` (streamed to disk).
    pub max_firmware_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            // Loopback only: nothing listens beyond this machine unless configured.
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            // Longer than the longest command timeout (300 s), so waiting calls are not cut.
            request_timeout_secs: 310,
            max_firmware_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[sessions]`: people logged in to the console (`POST /api/v1/session`, docs/api.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session without a request for this long ends.
    pub idle_timeout_mins: u64,
    /// A session ends this long after login, however active.
    pub lifetime_hours: u64,
    /// Mark the session cookie `Secure` always (the deployment is served over HTTPS). It is
    /// also marked when a proxy sends `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
    /// Failed logins tolerated per (tenant, user) and per client address within the window;
    /// beyond them 429 with Retry-After.
    pub max_failures_per_user: u32,
    pub max_failures_per_client: u32,
    pub failure_window_mins: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        let api = wulian_api::routes::session::SessionConfig::default();
        SessionsConfig {
            idle_timeout_mins: api.idle_timeout.as_secs() / 60,
            lifetime_hours: api.lifetime.as_secs() / 3600,
            secure_cookies: api.secure_cookies,
            max_failures_per_user: api.max_failures_per_user,
            max_failures_per_client: api.max_failures_per_client,
            failure_window_mins: api.failure_window.as_secs() / 60,
        }
    }
}

impl SessionsConfig {
    /// The API's settings.
    pub fn api(&self) -> wulian_api::routes::session::SessionConfig {
        wulian_api::routes::session::SessionConfig {
            idle_timeout: Duration::from_secs(self.idle_timeout_mins.saturating_mul(60)),
            lifetime: Duration::from_secs(self.lifetime_hours.saturating_mul(3600)),
            secure_cookies: self.secure_cookies,
            max_failures_per_user: self.max_failures_per_user,
            max_failures_per_client: self.max_failures_per_client,
            failure_window: Duration::from_secs(self.failure_window_mins.saturating_mul(60)),
        }
    }

    fn problems(&self, out: &mut Vec<String>) {
        for (name, value) in [
            ("idle_timeout_mins", self.idle_timeout_mins),
            ("lifetime_hours", self.lifetime_hours),
            (
                "max_failures_per_user",
                u64::from(self.max_failures_per_user),
            ),
            (
                "max_failures_per_client",
                u64::from(self.max_failures_per_client),
            ),
            ("failure_window_mins", self.failure_window_mins),
        ] {
            if value == 0 {
                out.push(format!("sessions.{name} must be positive"));
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub addr: SocketAddr,
    pub max_connections: usize,
    pub connect_timeout_secs: u64,
    pub max_packet_bytes: usize,
    pub max_inflight: u16,
    pub outgoing_queue: usize,
    /// Longest session expiry a client may ask for, and the expiry of MQTT 3.1.1 persistent
    /// sessions (seconds; 0 disables persistent sessions).
    pub max_session_expiry_secs: u32,
    /// Messages kept per offline persistent session.
    pub max_queued_messages: usize,
    /// Which message goes when that queue is full.
    pub queue_overflow: QueueOverflowPolicy,
    /// Topic aliases an MQTT 5 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// PUBLISH packets per second per client (0 = unlimited).
    pub max_publish_rate: u32,
    /// Payload bytes per second per client (0 = unlimited).
    pub max_publish_bytes_rate: u64,
    /// Seconds between `$SYS/broker/...` statistics (0 = never).
    pub sys_interval_secs: u64,
    /// Admit clients without credentials on the main listener (development only).
    pub allow_anonymous: bool,
    /// Serve application clients (API keys) on plain TCP on threads of their own.
    pub application_lane: bool,
    /// Threads of the application lane; 0 = one per core, at most four.
    pub application_lane_threads: usize,
    /// Further listeners (`[[mqtt.listeners]]`): TLS, WebSocket, more TCP ports.
    pub listeners: Vec<ListenerConfig>,
}

/// What happens when a message arrives for an offline session whose queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueOverflowPolicy {
    #[default]
    DropOldest,
    DropNewest,
}

/// The transport of an extra MQTT listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

/// Whether a TLS listener asks for client certificates (mutual TLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// Clients authenticate inside MQTT only.
    #[default]
    None,
    /// A client may present a certificate issued by one of its tenant's registered CAs.
    Optional,
    /// Every client must present such a certificate.
    Required,
}

/// One `[[mqtt.listeners]]` entry. The broker-wide limits of `[mqtt]` apply too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub kind: ListenerKind,
    pub addr: SocketAddr,
    /// PEM server certificate chain (tls, wss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (tls, wss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuthMode,
    /// HTTP path of the WebSocket endpoint (ws, wss); default "/mqtt".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Open connections through this listener; unlimited beyond `mqtt.max_connections` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// New connections per second; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_rate: Option<u32>,
    /// Admit clients without credentials (development only).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Serve all of this listener's connections on the application lane (a listener for
    /// applications; TLS and WebSocket included).
    #[serde(default)]
    pub application_lane: bool,
}

impl ListenerConfig {
    /// The WebSocket path, with its default.
    pub fn ws_path(&self) -> &str {
        self.path
            .as_deref()
            .unwrap_or(wulian_broker::DEFAULT_WS_PATH)
    }

    fn problems(&self, index: usize, out: &mut Vec<String>) {
        let at = format!(
            "mqtt.listeners[{index}] ({} {})",
            self.kind.as_str(),
            self.addr
        );
        if self.kind.is_tls() {
            if self.cert.is_none() || self.key.is_none() {
                out.push(format!("{at}: cert and key are required for TLS"));
            }
        } else {
            if self.cert.is_some() || self.key.is_some() {
                out.push(format!("{at}: cert and key only apply to tls and wss"));
            }
            if self.client_auth != ClientAuthMode::None {
                out.push(format!("{at}: client_auth only applies to tls and wss"));
            }
        }
        match &self.path {
            Some(_) if !self.kind.is_websocket() => {
                out.push(format!("{at}: path only applies to ws and wss"));
            }
            Some(path) if !path.starts_with('/') => {
                out.push(format!("{at}: path must start with /"));
            }
            _ => {}
        }
        if self.max_connections == Some(0) {
            out.push(format!("{at}: max_connections must be positive"));
        }
        if self.connect_rate == Some(0) {
            out.push(format!("{at}: connect_rate must be positive"));
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: 10_000,
            // A client that has not sent CONNECT by then is probably not an MQTT client.
            connect_timeout_secs: 10,
            max_packet_bytes: 1024 * 1024,
            max_inflight: 64,
            outgoing_queue: 1000,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_queued_messages: 1000,
            queue_overflow: QueueOverflowPolicy::DropOldest,
            topic_alias_maximum: 32,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
            sys_interval_secs: 10,
            // Anonymous access is for development on a trusted machine only.
            allow_anonymous: false,
            application_lane: true,
            application_lane_threads: 0,
            listeners: Vec::new(),
        }
    }
}

/// `[coap]`: the CoAP endpoint for constrained devices (docs/coap.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    pub enabled: bool,
    pub addr: SocketAddr,
    /// Largest datagram accepted or sent.
    pub max_message_bytes: usize,
    /// Requests per second per peer IP address (0 = unlimited), and the burst above it.
    pub peer_rate: u32,
    pub peer_burst: u32,
    /// Peer addresses the rate limiter tracks at once.
    pub max_peers: usize,
    /// Exchanges remembered to answer retransmissions.
    pub dedup_capacity: usize,
    /// Requests processed at once.
    pub max_in_flight: usize,
}

impl Default for CoapConfig {
    fn default() -> Self {
        let limits = wulian_coap::CoapLimits::default();
        CoapConfig {
            // Off until asked for: without DTLS, device tokens cross the network in clear.
            enabled: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 5683)),
            max_message_bytes: limits.max_message_bytes,
            peer_rate: limits.peer_rate,
            peer_burst: limits.peer_burst,
            max_peers: limits.max_peers,
            dedup_capacity: limits.dedup_capacity,
            max_in_flight: limits.max_in_flight,
        }
    }
}

impl CoapConfig {
    pub fn limits(&self) -> wulian_coap::CoapLimits {
        wulian_coap::CoapLimits {
            max_message_bytes: self.max_message_bytes,
            peer_rate: self.peer_rate,
            peer_burst: self.peer_burst,
            max_peers: self.max_peers,
            dedup_capacity: self.dedup_capacity,
            max_in_flight: self.max_in_flight,
        }
    }

    fn problems(&self, out: &mut Vec<String>) {
        if !(64..=65_507).contains(&self.max_message_bytes) {
            out.push("coap.max_message_bytes must be between 64 and 65507".into());
        }
        if self.max_peers == 0 || self.dedup_capacity == 0 || self.max_in_flight == 0 {
            out.push("coap.max_peers, dedup_capacity and max_in_flight must be positive".into());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[simulation]`: a simulated city of devices in the default tenant (`--simulate-city`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulationConfig {
    pub enabled: bool,
    /// Smart bike locks (device ids bike-0001 …).
    pub bikes: usize,
    /// Air-quality stations (device ids aq-001 …).
    pub air_sensors: usize,
    /// The city's centre; devices spread about 4 km around it.
    pub center_lat: f64,
    pub center_lon: f64,
    /// Run the bike share on the simulated city: fences drawn as zones, the bike share enabled
    /// (sandbox payments) and simulated riders renting bikes through the rider API.
    pub bike_share: bool,
    /// Simulated seconds per real second for locks and riders (1 = real time).
    pub time_scale: f64,
    /// Simulated riders (0: half the bikes).
    pub riders: usize,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        let city = wulian_sim::CityConfig::default();
        SimulationConfig {
            enabled: false,
            bikes: city.bikes,
            air_sensors: city.air_sensors,
            center_lat: city.center.0,
            center_lon: city.center.1,
            bike_share: true,
            time_scale: 1.0,
            riders: 0,
        }
    }
}

/// `[webhooks]`: outgoing HTTP calls of rule actions and alarm notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Allow destinations on loopback, private and link-local addresses (off: tenants must not
    /// reach into the server's own network).
    pub allow_private_networks: bool,
    /// Attempts per request before it goes to the dead-letter list.
    pub max_attempts: u32,
    /// Per attempt.
    pub timeout_secs: u64,
    /// Requests waiting to be sent; beyond it they are dead-lettered at once.
    pub queue: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private_networks: false,
            max_attempts: 5,
            timeout_secs: 5,
            queue: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads and validates a configuration file. Missing keys take their defaults; unknown
    /// keys are errors (a typo should not silently fall back to a default).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("Parse config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems: Vec<String> = Vec::new();
        let scale = self.simulation.time_scale;
        if !(scale > 0.0 && scale <= wulian_sim::MAX_TIME_SCALE) {
            problems.push(format!(
                "simulation.time_scale must be above 0 and at most {}",
                wulian_sim::MAX_TIME_SCALE
            ));
        }
        if self.http.max_body_bytes == 0 {
            problems.push("http.max_body_bytes must be positive".into());
        }
        if self.http.request_timeout_secs == 0 {
            problems.push("http.request_timeout_secs must be positive".into());
        }
        if self.mqtt.max_connections == 0 {
            problems.push("mqtt.max_connections must be positive".into());
        }
        if self.mqtt.connect_timeout_secs == 0 {
            problems.push("mqtt.connect_timeout_secs must be positive".into());
        }
        if self.mqtt.max_packet_bytes < 64 || self.mqtt.max_packet_bytes > 268_435_460 {
            problems.push("mqtt.max_packet_bytes must be between 64 and 268435460".into());
        }
        if self.mqtt.max_inflight == 0 {
            problems.push("mqtt.max_inflight must be positive".into());
        }
        if self.mqtt.max_queued_messages == 0 {
            problems.push("mqtt.max_queued_messages must be positive".into());
        }
        if self.mqtt.outgoing_queue == 0 {
            problems.push("mqtt.outgoing_queue must be positive".into());
        }
        if self.storage.fsync_interval_ms == 0 {
            problems.push("storage.fsync_interval_ms must be positive".into());
        }
        for (index, listener) in self.mqtt.listeners.iter().enumerate() {
            listener.problems(index, &mut problems);
        }
        self.coap.problems(&mut problems);
        self.sessions.problems(&mut problems);
        self.map.problems(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.storage.fsync_interval_ms)
    }

    /// The installation's telemetry retention (the default of the retention policy), or None
    /// to keep everything.
    pub fn retention(&self) -> Option<Duration> {
        days(self.storage.retention_days)
    }

    /// The 1-minute and 1-hour rollup retentions (`None`: forever).
    pub fn rollup_retentions(&self) -> (Option<Duration>, Option<Duration>) {
        (
            days(self.storage.rollup_1m_retention_days),
            days(self.storage.rollup_1h_retention_days),
        )
    }
}

/// `n` days, or `None` for 0 (keep forever).
fn days(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n.saturating_mul(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_is_the_default_config() {
        assert_eq!(Config::parse(DEFAULT_FILE).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::parse("[http]\nadress = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }

    #[test]
    fn all_problems_are_reported() {
        let err = Config::parse("[mqtt]\nmax_connections = 0\nmax_inflight = 0\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("max_connections") && text.contains("max_inflight"),
            "{text}"
        );
    }

    #[test]
    fn listeners() {
        let c = Config::parse(
            r#"
[mqtt]
allow_anonymous = true

[[mqtt.listeners]]
kind = "tls"
addr = "127.0.0.1:8883"
cert = "server.pem"
key = "server.key"
client_auth = "optional"
application_lane = true

[[mqtt.listeners]]
kind = "ws"
addr = "127.0.0.1:8083"
max_connections = 100
connect_rate = 50
"#,
        )
        .unwrap();
        assert!(c.mqtt.allow_anonymous);
        assert!(c.mqtt.application_lane, "on by default");
        assert!(c.mqtt.listeners[0].application_lane);
        assert!(!c.mqtt.listeners[1].application_lane, "off by default");
        assert_eq!(c.mqtt.listeners.len(), 2);
        assert_eq!(c.mqtt.listeners[0].client_auth, ClientAuthMode::Optional);
        assert_eq!(c.mqtt.listeners[1].ws_path(), "/mqtt");
        assert_eq!(c.mqtt.listeners[1].connect_rate, Some(50));

        let err = Config::parse(
            "[[mqtt.listeners]]\nkind = \"tls\"\naddr = \"127.0.0.1:1\"\n\n\
             [[mqtt.listeners]]\nkind = \"tcp\"\naddr = \"127.0.0.1:2\"\npath = \"x\"\n",
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("cert and key are required") && text.contains("path only applies"),
            "{text}"
        );
    }

    #[test]
    fn coap_section() {
        let c = Config::parse("[coap]\nenabled = true\naddr = \"127.0.0.1:0\"\npeer_rate = 0\n")
            .unwrap();
        assert!(c.coap.enabled);
        assert_eq!(c.coap.limits().peer_rate, 0);
        assert_eq!(c.coap.max_message_bytes, 1152);
        let err = Config::parse("[coap]\nmax_message_bytes = 10\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("coap.max_message_bytes"),
            "{err:#}"
        );
    }

    #[test]
    fn partial_files_keep_defaults() {
        let c = Config::parse("[http]\naddr = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.http.addr.port(), 9000);
        assert_eq!(c.mqtt, MqttConfig::default());
    }
}

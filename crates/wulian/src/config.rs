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
    pub mqtt: MqttConfig,
    pub log: LogConfig,
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            // Loopback only: nothing listens beyond this machine unless configured.
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            // Longer than the longest command timeout (300 s), so waiting calls are not cut.
            request_timeout_secs: 310,
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
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
        let mut problems = Vec::new();
        if self.http.max_body_bytes == 0 {
            problems.push("http.max_body_bytes must be positive");
        }
        if self.http.request_timeout_secs == 0 {
            problems.push("http.request_timeout_secs must be positive");
        }
        if self.mqtt.max_connections == 0 {
            problems.push("mqtt.max_connections must be positive");
        }
        if self.mqtt.connect_timeout_secs == 0 {
            problems.push("mqtt.connect_timeout_secs must be positive");
        }
        if self.mqtt.max_packet_bytes < 64 || self.mqtt.max_packet_bytes > 268_435_460 {
            problems.push("mqtt.max_packet_bytes must be between 64 and 268435460");
        }
        if self.mqtt.max_inflight == 0 {
            problems.push("mqtt.max_inflight must be positive");
        }
        if self.mqtt.outgoing_queue == 0 {
            problems.push("mqtt.outgoing_queue must be positive");
        }
        if self.storage.fsync_interval_ms == 0 {
            problems.push("storage.fsync_interval_ms must be positive");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.storage.fsync_interval_ms)
    }
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
    fn partial_files_keep_defaults() {
        let c = Config::parse("[http]\naddr = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.http.addr.port(), 9000);
        assert_eq!(c.mqtt, MqttConfig::default());
    }
}

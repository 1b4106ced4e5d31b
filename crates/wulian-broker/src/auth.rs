//! Who a client is and what it may do.
//!
//! The broker knows nothing about devices, keys or tenants' storage: it hands the CONNECT
//! credentials to an [`Authenticator`] and gets back an [`Identity`] (tenant + principal +
//! topic policy), and it hands every authorised PUBLISH to a [`MessageSink`] before
//! acknowledging it. Both are traits so the server wiring, tests and later issues
//! (applications, ACL changes) plug in without touching the protocol code.

use std::net::SocketAddr;

use bytes::Bytes;
use wulian_mqtt::{Properties, Protocol, QoS, ReasonCode, topic};

/// The credentials of a CONNECT, as handed to the [`Authenticator`].
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    pub protocol: Protocol,
    /// May be empty (the broker assigns one after successful authentication).
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub remote_addr: SocketAddr,
    /// How the client reached the broker: which kind of listener, whether that listener
    /// admits anonymous clients, and the client certificate the TLS handshake verified.
    pub transport: TransportInfo,
}

/// The kind of listener a connection arrived on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// MQTT over plain TCP.
    #[default]
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (binary frames, subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    /// Does this transport run over TLS (and so may carry a client certificate)?
    pub fn is_tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }
}

/// Facts about a connection's transport that authentication may depend on.
#[derive(Clone, Debug, Default)]
pub struct TransportInfo {
    pub kind: TransportKind,
    /// The listener admits clients without credentials (development only).
    pub allow_anonymous: bool,
    /// The client's certificate chain (DER, leaf first), present only when the TLS handshake
    /// verified it against the configured client certificate authorities.
    pub peer_certificates: Option<Vec<Vec<u8>>>,
}

/// An authenticated client.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Routing namespace: messages never cross tenants.
    pub tenant: String,
    pub principal: Principal,
    pub policy: TopicPolicy,
    /// May subscribe to the broker's `$SYS/#` statistics (installation operators only: the
    /// figures span every tenant).
    pub sys_access: bool,
}

/// What kind of party is connected.
#[derive(Clone, Debug)]
pub enum Principal {
    Device {
        device_id: String,
    },
    /// An application or tool authenticated with an API key; its topic policy comes from the key.
    Application {
        key_id: String,
    },
    /// A client on a listener that allows anonymous access (development only).
    Anonymous,
}

/// MQTT topic filters a client may publish to and subscribe to, with deny lists that beat
/// the allow lists.
///
/// A PUBLISH topic must match one of `publish` and none of `deny_publish`. A SUBSCRIBE filter
/// must be covered by one of `subscribe`, i.e. every topic the requested filter can match is
/// matched by the allowed filter (`devices/d1/#` covers `devices/d1/commands/+`, not
/// `devices/+/commands/#`), and must not overlap any of `deny_subscribe` (a filter that could
/// deliver even one denied topic is refused whole, because routing does not filter per
/// subscriber).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicPolicy {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub deny_publish: Vec<String>,
    pub deny_subscribe: Vec<String>,
}

impl TopicPolicy {
    /// The policy of a device: everything below `devices/{device_id}/`.
    pub fn device(device_id: &str) -> TopicPolicy {
        let own = format!("devices/{device_id}/#");
        TopicPolicy {
            publish: vec![own.clone()],
            subscribe: vec![own],
            ..TopicPolicy::default()
        }
    }

    /// Everything in the tenant except the broker's `$SYS` topics: what anonymous clients on
    /// a development listener get.
    pub fn anonymous() -> TopicPolicy {
        TopicPolicy {
            publish: vec!["#".to_string()],
            subscribe: vec!["#".to_string()],
            deny_publish: vec!["$SYS/#".to_string()],
            deny_subscribe: vec!["$SYS/#".to_string()],
        }
    }

    /// May a PUBLISH to `topic` (a valid topic name) go through?
    pub fn allows_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|f| topic::matches(f, topic))
            && !self.deny_publish.iter().any(|f| topic::matches(f, topic))
    }

    /// May a subscription to `filter` (a valid topic filter) be granted?
    pub fn allows_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|f| filter_covers(f, filter))
            && !self
                .deny_subscribe
                .iter()
                .any(|d| filters_overlap(d, filter))
    }
}

/// Rejection from a [`MessageSink`].
#[derive(Clone, Debug)]
pub struct SinkError {
    /// Reason code returned to MQTT 5.0 clients (PUBACK / PUBREC).
    pub code: ReasonCode,
    /// Human readable reason (MQTT 5.0 reason string).
    pub reason: String,
}

/// Details of an accepted connection, for presence notifications.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub protocol: Protocol,
    pub client_id: String,
    pub remote_addr: SocketAddr,
    /// Effective keep alive in seconds (after the broker's cap).
    pub keep_alive: u16,
    /// The listener kind the client came through (TCP, TLS, WebSocket, WebSocket over TLS).
    pub transport: TransportKind,
}

/// An authorised PUBLISH from a client (topic already alias-rewritten).
#[derive(Clone, Debug)]
pub struct InboundMessage {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5.0 properties (response topic, correlation data, user properties, content type,
    /// payload format indicator, message expiry); empty for 3.1.1.
    pub properties: Properties,
}

/// Decides who may connect.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Err(code): BadUserNameOrPassword, NotAuthorized, ServerUnavailable... sent back in
    /// CONNACK (mapped to the nearest return code for 3.1.1).
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode>;

    /// Does this authenticator implement the MQTT 5.0 enhanced authentication `method`
    /// (CONNECT's Authentication Method)? A CONNECT naming an unsupported method is refused
    /// with CONNACK 0x8C Bad authentication method.
    fn supports_auth_method(&self, _method: &str) -> bool {
        false
    }
}

/// Results of [`MessageSink::stage_publish_batch`].
pub struct Staged<'a> {
    /// One per message: accepted (routed to subscribers now) or refused.
    pub accepted: Vec<Result<(), SinkError>>,
    /// Resolves once the accepted messages are durable; one result per message (entries of
    /// refused messages are ignored). `None`: the accepted ones are durable already.
    pub durable: Option<Durable<'a>>,
}

/// The second step of [`MessageSink::stage_publish_batch`].
pub type Durable<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Result<(), SinkError>>> + Send + 'a>>;

/// Where client messages go (storage, rules...).
#[async_trait::async_trait]
pub trait MessageSink: Send + Sync + 'static {
    /// Called for every authorised PUBLISH before it is acknowledged (PUBACK is sent only
    /// after Ok — the sink makes it durable).
    async fn on_publish(&self, identity: &Identity, msg: &InboundMessage) -> Result<(), SinkError>;
    /// Several authorised PUBLISHes of one client that arrived in one socket read (QoS 0, 1,
    /// and 2 seen for the first time), in order; returns one result per message, in the same
    /// order. Each `Ok` carries the same
    /// promise as [`MessageSink::on_publish`] (durable before the broker acknowledges it), and
    /// a refusal applies to its own message only. The default handles them one by one; a sink
    /// overrides it to make the batch durable at once.
    async fn on_publish_batch(
        &self,
        identity: &Identity,
        msgs: &[InboundMessage],
    ) -> Vec<Result<(), SinkError>> {
        let mut results = Vec::with_capacity(msgs.len());
        for msg in msgs {
            results.push(self.on_publish(identity, msg).await);
        }
        results
    }
    /// [`MessageSink::on_publish_batch`] in two steps, so that subscribers need not wait for
    /// the disk: the call resolves once the messages are checked (one result per message;
    /// the broker routes the accepted ones to subscribers at once), and
    /// [`Staged::durable`], when present, resolves once the accepted ones are durable, with
    /// one result per message (a later failure of an accepted one; refused ones are
    /// reported by the first step). The broker acknowledges a message only after both.
    /// The default is the one-step [`MessageSink::on_publish_batch`], routed after it.
    async fn stage_publish_batch<'a>(
        &'a self,
        identity: &Identity,
        msgs: &[InboundMessage],
    ) -> Staged<'a> {
        Staged {
            accepted: self.on_publish_batch(identity, msgs).await,
            durable: None,
        }
    }
    /// A client finished CONNECT successfully.
    async fn on_connect(&self, _identity: &Identity, _info: &ConnectionInfo) {}
    /// A client's connection ended.
    async fn on_disconnect(&self, _identity: &Identity, _reason: &str) {}
}

/// Rewrites the `devices/me/...` alias of a device to its own `devices/{device_id}/...`.
pub(crate) fn rewrite_me(principal: &Principal, topic: &str) -> Option<String> {
    let Principal::Device { device_id } = principal else {
        return None;
    };
    let rest = topic.strip_prefix("devices/me")?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(format!("devices/{device_id}{rest}"))
    } else {
        None
    }
}

/// Is every topic matched by `filter` also matched by `allowed`? Both must be valid filters.
pub(crate) fn filter_covers(allowed: &str, filter: &str) -> bool {
    let mut a = allowed.split('/');
    let mut f = filter.split('/');
    loop {
        match (a.next(), f.next()) {
            // `#` covers whatever remains, including the parent level itself.
            (Some("#"), _) => return true,
            (_, Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(al), Some(fl)) if al == fl && fl != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Could some topic be matched by both filters? Both must be valid, non-shared filters. A
/// wildcard in the first level never meets a topic starting with `$` (MQTT 4.7.2).
pub(crate) fn filters_overlap(a: &str, b: &str) -> bool {
    let wild = |f: &str| f.starts_with('+') || f.starts_with('#');
    if (a.starts_with('$') && wild(b)) || (b.starts_with('$') && wild(a)) {
        return false;
    }
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap() {
        assert!(filters_overlap("devices/d1/#", "devices/+/telemetry"));
        assert!(filters_overlap(
            "devices/+/commands/#",
            "devices/d1/commands/x"
        ));
        assert!(filters_overlap("#", "a"));
        assert!(!filters_overlap("#", "$SYS/x"));
        assert!(!filters_overlap("$SYS/#", "+/x"));
        assert!(filters_overlap("$SYS/#", "$SYS/broker/+"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("a/+", "a/b/c"));
        assert!(filters_overlap("a/#", "a"));
    }

    #[test]
    fn deny_beats_allow() {
        let policy = TopicPolicy {
            publish: vec!["devices/#".into()],
            subscribe: vec!["devices/#".into()],
            deny_publish: vec!["devices/+/commands/#".into()],
            deny_subscribe: vec!["devices/secret/#".into()],
        };
        assert!(policy.allows_publish("devices/d1/telemetry"));
        assert!(!policy.allows_publish("devices/d1/commands/reboot"));
        assert!(policy.allows_subscribe("devices/d1/telemetry"));
        assert!(!policy.allows_subscribe("devices/secret/telemetry"));
        // Could deliver devices/secret/telemetry: refused whole.
        assert!(!policy.allows_subscribe("devices/+/telemetry"));

        let anonymous = TopicPolicy::anonymous();
        assert!(anonymous.allows_subscribe("#"));
        assert!(anonymous.allows_publish("anything/at/all"));
        assert!(!anonymous.allows_subscribe("$SYS/#"));
        assert!(!anonymous.allows_publish("$SYS/x"));
    }

    #[test]
    fn covers() {
        assert!(filter_covers("devices/d1/#", "devices/d1/commands/+"));
        assert!(filter_covers("devices/d1/#", "devices/d1/#"));
        assert!(filter_covers("devices/d1/#", "devices/d1"));
        assert!(!filter_covers("devices/d1/#", "devices/+/commands/#"));
        assert!(!filter_covers("devices/d1/#", "#"));
        assert!(!filter_covers("devices/d1/#", "devices/d2/x"));
        assert!(filter_covers("a/+/c", "a/b/c"));
        assert!(filter_covers("a/+/c", "a/+/c"));
        assert!(!filter_covers("a/b/c", "a/+/c"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/+", "a/b/c"));
    }

    #[test]
    fn me_alias() {
        let p = Principal::Device {
            device_id: "d1".into(),
        };
        assert_eq!(
            rewrite_me(&p, "devices/me/telemetry").as_deref(),
            Some("devices/d1/telemetry")
        );
        assert_eq!(rewrite_me(&p, "devices/me").as_deref(), Some("devices/d1"));
        assert_eq!(rewrite_me(&p, "devices/meter/x"), None);
        assert_eq!(rewrite_me(&p, "other/me/x"), None);
    }
}

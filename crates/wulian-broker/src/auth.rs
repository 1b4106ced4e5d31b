//! Who a client is and what it may do.
//!
//! The broker knows nothing about devices, keys or tenants' storage: it hands the CONNECT
//! credentials to an [`Authenticator`] and gets back an [`Identity`] (tenant + principal +
//! topic policy), and it hands every authorised PUBLISH to a [`MessageSink`] before
//! acknowledging it. Both are traits so the server wiring, tests and later issues
//! (applications, ACL changes) plug in without touching the protocol code.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

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
    /// Shared: every device has the same policy ([`TopicPolicy::own_device`]), resolved
    /// against its own id when a topic is checked.
    pub policy: Arc<TopicPolicy>,
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

impl Identity {
    /// The device id of a device, for the `${device_id}` level of its policy.
    fn device_id(&self) -> Option<&str> {
        match &self.principal {
            // An id that is not one plain topic level would widen the policy: none then.
            Principal::Device { device_id }
                if !device_id.is_empty() && !device_id.contains(['/', '+', '#']) =>
            {
                Some(device_id)
            }
            _ => None,
        }
    }

    /// May this client PUBLISH to `topic` (a valid topic name)?
    pub fn allows_publish(&self, topic: &str) -> bool {
        self.policy.allows_publish_as(topic, self.device_id())
    }

    /// May this client subscribe to `filter` (a valid topic filter)?
    pub fn allows_subscribe(&self, filter: &str) -> bool {
        self.policy.allows_subscribe_as(filter, self.device_id())
    }
}

/// A filter level standing for the connected device's own id (see [`TopicPolicy::own_device`]).
pub const DEVICE_ID_LEVEL: &str = "${device_id}";

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
    /// The policy every device shares: everything below its own `devices/{device_id}/`,
    /// written with the [`DEVICE_ID_LEVEL`] level that a check resolves to the connected
    /// device's id. One allocation for the whole fleet rather than a policy per connection.
    pub fn own_device() -> Arc<TopicPolicy> {
        static OWN: LazyLock<Arc<TopicPolicy>> = LazyLock::new(|| {
            let own = format!("devices/{DEVICE_ID_LEVEL}/#");
            Arc::new(TopicPolicy {
                publish: vec![own.clone()],
                subscribe: vec![own],
                ..TopicPolicy::default()
            })
        });
        Arc::clone(&OWN)
    }

    /// The policy of one device, its id written out: everything below `devices/{device_id}/`.
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

    /// May a PUBLISH to `topic` (a valid topic name) go through? A [`DEVICE_ID_LEVEL`] level
    /// matches nothing here; see [`TopicPolicy::allows_publish_as`].
    pub fn allows_publish(&self, topic: &str) -> bool {
        self.allows_publish_as(topic, None)
    }

    /// May a subscription to `filter` (a valid topic filter) be granted?
    pub fn allows_subscribe(&self, filter: &str) -> bool {
        self.allows_subscribe_as(filter, None)
    }

    /// [`TopicPolicy::allows_publish`] for a device: [`DEVICE_ID_LEVEL`] levels stand for
    /// `device` (and match nothing without one).
    pub fn allows_publish_as(&self, topic: &str, device: Option<&str>) -> bool {
        let matches = |f: &String| matches_as(f, topic, device);
        self.publish.iter().any(matches) && !self.deny_publish.iter().any(matches)
    }

    /// [`TopicPolicy::allows_subscribe`] for a device (see
    /// [`TopicPolicy::allows_publish_as`]).
    pub fn allows_subscribe_as(&self, filter: &str, device: Option<&str>) -> bool {
        self.subscribe
            .iter()
            .any(|f| resolved(f, device).is_some_and(|f| filter_covers(&f, filter)))
            && !self
                .deny_subscribe
                .iter()
                .any(|d| resolved(d, device).is_some_and(|d| filters_overlap(&d, filter)))
    }
}

/// [`topic::matches`] with [`DEVICE_ID_LEVEL`] levels matching exactly `device` (nothing
/// without one); no allocation, as it runs for every PUBLISH.
fn matches_as(filter: &str, topic: &str, device: Option<&str>) -> bool {
    if !filter.contains(DEVICE_ID_LEVEL) {
        return topic::matches(filter, topic);
    }
    device.is_some_and(|device| topic::matches_with(filter, topic, Some((DEVICE_ID_LEVEL, device))))
}

/// `filter` with its [`DEVICE_ID_LEVEL`] levels replaced by `device`; borrowed when it has
/// none (the common case, no allocation), `None` when it has one and there is no device.
fn resolved<'a>(filter: &'a str, device: Option<&str>) -> Option<std::borrow::Cow<'a, str>> {
    if !filter.contains(DEVICE_ID_LEVEL) {
        return Some(std::borrow::Cow::Borrowed(filter));
    }
    let device = device?;
    let levels: Vec<&str> = filter
        .split('/')
        .map(|level| {
            if level == DEVICE_ID_LEVEL {
                device
            } else {
                level
            }
        })
        .collect();
    Some(std::borrow::Cow::Owned(levels.join("/")))
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

    fn device(id: &str) -> Identity {
        Identity {
            tenant: "t".into(),
            principal: Principal::Device {
                device_id: id.into(),
            },
            policy: TopicPolicy::own_device(),
            sys_access: false,
        }
    }

    #[test]
    fn the_shared_device_policy_resolves_to_each_devices_own_namespace() {
        let d1 = device("d1");
        assert!(d1.allows_publish("devices/d1/telemetry"));
        assert!(
            d1.allows_publish("devices/d1"),
            "# matches the parent level"
        );
        assert!(!d1.allows_publish("devices/d2/telemetry"));
        assert!(!d1.allows_publish("devices/d10/telemetry"));
        assert!(!d1.allows_publish("devices"));
        assert!(d1.allows_subscribe("devices/d1/commands/+"));
        assert!(d1.allows_subscribe("devices/d1/#"));
        assert!(!d1.allows_subscribe("devices/+/commands/#"));
        assert!(!d1.allows_subscribe("#"));
        assert!(!device("d2").allows_publish("devices/d1/telemetry"));
        // Without a device (or with an id that is not one plain level) the variable matches
        // nothing, so the policy allows nothing.
        let app = Identity {
            principal: Principal::Application { key_id: "k".into() },
            ..device("d1")
        };
        assert!(!app.allows_publish("devices/d1/telemetry"));
        assert!(!app.allows_publish("devices/${device_id}/telemetry"));
        assert!(!device("+").allows_publish("devices/x/telemetry"));
        assert!(!device("+").allows_subscribe("devices/+/telemetry"));
        // The same policy object for every device.
        assert!(Arc::ptr_eq(&TopicPolicy::own_device(), &d1.policy));
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

//! Which packet (or part of a packet) is being coded. Properties and reason codes are only
//! valid in some packets, so both tables are keyed by this.

/// A place where properties or reason codes appear. `Will` is the will-properties block of
/// CONNECT, which has its own set of allowed properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Kind {
    /// Name used in error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Connect => "CONNECT",
            Kind::Will => "CONNECT will",
            Kind::ConnAck => "CONNACK",
            Kind::Publish => "PUBLISH",
            Kind::PubAck => "PUBACK",
            Kind::PubRec => "PUBREC",
            Kind::PubRel => "PUBREL",
            Kind::PubComp => "PUBCOMP",
            Kind::Subscribe => "SUBSCRIBE",
            Kind::SubAck => "SUBACK",
            Kind::Unsubscribe => "UNSUBSCRIBE",
            Kind::UnsubAck => "UNSUBACK",
            Kind::Disconnect => "DISCONNECT",
            Kind::Auth => "AUTH",
        }
    }
}

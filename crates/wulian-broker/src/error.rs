//! Why a connection ended.
//!
//! Connection tasks return these instead of panicking so the spawner can log them inside the
//! connection's span; none of them is fatal to the broker. [`Close`] also decides what the
//! client is told (the MQTT 5.0 DISCONNECT reason) and whether its will is published, so the
//! policy lives in one place.

use wulian_mqtt::{DecodeError, EncodeError, ReasonCode};

/// A failure of the transport or of the handshake.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("could not encode packet: {0}")]
    Encode(#[from] EncodeError),
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    #[error("first packet was not CONNECT")]
    FirstPacketNotConnect,
    #[error("write to client timed out")]
    WriteTimeout,
}

/// Why an established (post-CONNACK) connection ended.
#[derive(Debug)]
pub(crate) enum Close {
    /// The client sent DISCONNECT; `with_will` when its reason code asks for the will (5.0).
    ClientDisconnect { with_will: bool },
    /// The client closed the socket without DISCONNECT.
    ConnectionLost,
    /// The broker is shutting down.
    Shutdown,
    /// Another connection took the client id over.
    TakenOver,
    /// Nothing received within 1.5 × keep alive.
    KeepAliveTimeout,
    /// The broker closes the connection because the client broke a rule (malformed packet,
    /// protocol error, forbidden publish...). 5.0 clients get DISCONNECT `code`.
    Refused { code: ReasonCode, reason: String },
    /// The transport failed.
    Failed(ConnectionError),
}

impl Close {
    pub(crate) fn refused(code: ReasonCode, reason: impl Into<String>) -> Close {
        Close::Refused {
            code,
            reason: truncate_reason(reason.into()),
        }
    }

    /// Reason code of the DISCONNECT sent to a 5.0 client, if one is sent.
    pub(crate) fn disconnect_code(&self) -> Option<ReasonCode> {
        match self {
            Close::Shutdown => Some(ReasonCode::ServerShuttingDown),
            Close::TakenOver => Some(ReasonCode::SessionTakenOver),
            Close::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            Close::Refused { code, .. } => Some(*code),
            Close::ClientDisconnect { .. } | Close::ConnectionLost | Close::Failed(_) => None,
        }
    }

    /// MQTT 3.1.2.5: the will is published unless the client disconnected normally. We also
    /// skip it on broker shutdown (the sink is going away too).
    pub(crate) fn publishes_will(&self) -> bool {
        match self {
            Close::ClientDisconnect { with_will } => *with_will,
            Close::Shutdown => false,
            _ => true,
        }
    }

    /// Short description for logs and the sink's disconnect notification.
    pub(crate) fn describe(&self) -> String {
        match self {
            Close::ClientDisconnect { .. } => "client disconnected".into(),
            Close::ConnectionLost => "connection lost".into(),
            Close::Shutdown => "server shutting down".into(),
            Close::TakenOver => "session taken over".into(),
            Close::KeepAliveTimeout => "keep alive timeout".into(),
            Close::Refused { code, reason } => format!("closed by broker ({code:?}): {reason}"),
            Close::Failed(e) => e.to_string(),
        }
    }
}

/// Longest reason string sent to clients; reasons may embed client-chosen topics, which
/// must not make the packet unencodable or large.
const MAX_REASON_LEN: usize = 256;

/// Cuts a reason string to [`MAX_REASON_LEN`] bytes on a character boundary.
pub(crate) fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

impl From<ConnectionError> for Close {
    fn from(e: ConnectionError) -> Close {
        Close::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_truncated_on_char_boundaries() {
        assert_eq!(truncate_reason("short".into()), "short");
        let long = "é".repeat(200);
        let cut = truncate_reason(long);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}

//! The one error type of the engine.
//!
//! Callers branch on the variant: the input errors (`TypeMismatch`, `NonFiniteValue`,
//! `TimestampOutOfRange`, `InvalidSeriesKey`, `BatchTooLarge`, `NotNumeric`, `InvalidInterval`)
//! mean "the request was refused and nothing was stored"; `Closed` and `WalFailed` mean the
//! engine no longer accepts writes; `Io` and `Corrupt` are storage failures.

use std::path::PathBuf;

use crate::value::ValueKind;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value's kind differs from the kind the series was created with. The whole batch was
    /// refused.
    #[error("series {key:?} holds {expected} values, got a {actual} value")]
    TypeMismatch {
        key: String,
        expected: ValueKind,
        actual: ValueKind,
    },
    /// Min/Max/Avg/Sum asked of a series that holds strings or booleans.
    #[error("series {key:?} holds {kind} values, which have no numeric aggregation")]
    NotNumeric { key: String, kind: ValueKind },
    /// NaN or an infinity. The whole batch was refused.
    #[error("value of {key:?} is not a finite number")]
    NonFiniteValue { key: String },
    /// A timestamp outside `0..=MAX_TIMESTAMP` (year 9999). The whole batch was refused.
    #[error("timestamp {ts} is outside 0..={max}", max = crate::value::MAX_TIMESTAMP)]
    TimestampOutOfRange { ts: i64 },
    /// An empty or over-long tenant, device or key name. The whole batch was refused.
    #[error("invalid series key: {reason}")]
    InvalidSeriesKey { reason: String },
    /// One write call that would not fit in one log record.
    #[error("batch encodes to {bytes} bytes, more than the {max} bytes one write may carry")]
    BatchTooLarge { bytes: usize, max: usize },
    /// A [`crate::Config`] value the engine cannot work with.
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
    /// An aggregation interval that is zero or negative.
    #[error("aggregation interval must be at least 1 ms")]
    InvalidInterval,
    /// The engine was closed (or its writer stopped); no more writes are accepted.
    #[error("the time-series store is closed")]
    Closed,
    /// An earlier fsync or unrecoverable write of the log failed. The state of the log on disk
    /// is unknown, so the engine refuses further writes; restarting replays what is durable.
    #[error("the write-ahead log failed earlier; writes are refused until restart")]
    WalFailed,
    /// Another handle (in this or another process) has the directory open.
    #[error("the store at {dir} is already open elsewhere")]
    Locked { dir: PathBuf },
    #[error("I/O error: {context}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A file that does not say what it must; opening refuses rather than drop acknowledged data.
    #[error("{file} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    /// A copy for the cases where one failure must be reported to several waiters (a group
    /// commit). `io::Error` is not `Clone`, so its kind and message are carried over.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { context, source } => Error::Io {
                context,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::TypeMismatch {
                key,
                expected,
                actual,
            } => Error::TypeMismatch {
                key: key.clone(),
                expected: *expected,
                actual: *actual,
            },
            Error::NotNumeric { key, kind } => Error::NotNumeric {
                key: key.clone(),
                kind: *kind,
            },
            Error::NonFiniteValue { key } => Error::NonFiniteValue { key: key.clone() },
            Error::TimestampOutOfRange { ts } => Error::TimestampOutOfRange { ts: *ts },
            Error::InvalidSeriesKey { reason } => Error::InvalidSeriesKey {
                reason: reason.clone(),
            },
            Error::BatchTooLarge { bytes, max } => Error::BatchTooLarge {
                bytes: *bytes,
                max: *max,
            },
            Error::InvalidConfig { reason } => Error::InvalidConfig {
                reason: reason.clone(),
            },
            Error::InvalidInterval => Error::InvalidInterval,
            Error::Closed => Error::Closed,
            Error::WalFailed => Error::WalFailed,
            Error::Locked { dir } => Error::Locked { dir: dir.clone() },
            Error::Corrupt {
                file,
                offset,
                reason,
            } => Error::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
        }
    }
}

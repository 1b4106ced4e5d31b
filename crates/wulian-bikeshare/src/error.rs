//! The bike share's errors, each with a stable machine code and the HTTP status the API
//! answers with.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// A business rule of the ledger, riders or pricing, with its own code and status.
    #[error("{message}")]
    Rule {
        status: u16,
        code: &'static str,
        message: String,
    },
    #[error("the platform refused: {0}")]
    Platform(String),
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Error {
        Error::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Error {
        Error::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::Unauthorized {
            code: "unauthorized",
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { code, .. }
            | Error::Invalid { code, .. }
            | Error::Conflict { code, .. }
            | Error::Forbidden { code, .. }
            | Error::Unauthorized { code, .. }
            | Error::Rule { code, .. } => code,
            Error::Platform(_) => "platform_error",
            Error::Sql(_) | Error::Io(_) | Error::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Error::NotFound { .. } => 404,
            Error::Invalid { .. } => 422,
            Error::Conflict { .. } => 409,
            Error::Forbidden { .. } => 403,
            Error::Unauthorized { .. } => 401,
            Error::Rule { status, .. } => *status,
            Error::Platform(_) => 502,
            Error::Sql(_) | Error::Io(_) | Error::Internal(_) => 500,
        }
    }
}

impl From<wulian_registry::Error> for Error {
    fn from(e: wulian_registry::Error) -> Error {
        use wulian_registry::Error as R;
        match e {
            R::NotFound { kind, id } => {
                Error::not_found("not_found", format!("{kind} {id:?} not found"))
            }
            R::AlreadyExists { kind, id } => {
                Error::conflict("already_exists", format!("{kind} {id:?} already exists"))
            }
            R::Invalid { field, reason } => {
                Error::invalid("invalid_field", format!("{field}: {reason}"))
            }
            R::Conflict(m) => Error::conflict("conflict", m),
            other => Error::Platform(other.to_string()),
        }
    }
}

impl From<crate::ledger::Error> for Error {
    fn from(e: crate::ledger::Error) -> Error {
        Error::Rule {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::pricing::Error> for Error {
    fn from(e: crate::pricing::Error) -> Error {
        Error::Rule {
            status: 422,
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::riders::Error> for Error {
    fn from(e: crate::riders::Error) -> Error {
        Error::Rule {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

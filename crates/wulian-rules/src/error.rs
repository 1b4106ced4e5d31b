//! The errors of the crate: a parse error that points at the exact place in the rule text, an
//! evaluation error that names the expression that failed, and the error of saving a rule.

use std::fmt;

/// Where a rule's SQL text is wrong, and what the parser expected there.
///
/// `offset` is a byte offset into the text; `line` and `column` are 1-based, the column counted
/// in characters. `Display` reads like `line 1, column 42: expected FROM, found 'WHERE'`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParseError {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    /// What would have been accepted here: keywords in capitals (`FROM`), punctuation quoted
    /// (`','`), categories in words (`expression`). For validation errors (unknown function,
    /// wrong arity, …) a single entry that says what is required.
    pub expected: Vec<String>,
    /// The text found at `offset` (`'WHERE'`, `end of input`).
    pub found: String,
}

impl ParseError {
    pub(crate) fn new(source: &str, offset: usize, expected: Vec<String>, found: String) -> Self {
        let offset = offset.min(source.len());
        let (line, column) = line_column(source, offset);
        ParseError {
            offset,
            line,
            column,
            expected,
            found,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: expected ", self.line, self.column)?;
        match self.expected.as_slice() {
            [] => f.write_str("nothing")?,
            [one] => f.write_str(one)?,
            [init @ .., last] => {
                f.write_str(&init.join(", "))?;
                write!(f, " or {last}")?;
            }
        }
        write!(f, ", found {}", self.found)
    }
}

impl std::error::Error for ParseError {}

/// 1-based line and character column of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in source.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// A rule failed at run time on one message: a type error, a division by zero, an unknown
/// zone, … `expression` is the rule text of the sub-expression that failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("in `{expression}` (offset {offset}): {reason}")]
pub struct EvalError {
    pub expression: String,
    pub offset: usize,
    pub reason: String,
}

/// Why a rule definition cannot be saved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("invalid rule: {0}")]
    Parse(#[from] ParseError),
    #[error("action {index}: {reason}")]
    InvalidAction { index: usize, reason: String },
    #[error("invalid rule id {0:?}: 1 to 128 characters of A-Z a-z 0-9 _ . : -")]
    InvalidId(String),
}

impl RuleError {
    /// Stable machine-readable name for API problem documents.
    pub fn code(&self) -> &'static str {
        match self {
            RuleError::Parse(_) => "rule_parse_error",
            RuleError::InvalidAction { .. } => "rule_invalid_action",
            RuleError::InvalidId(_) => "rule_invalid_id",
        }
    }
}

pub type Result<T, E = RuleError> = std::result::Result<T, E>;

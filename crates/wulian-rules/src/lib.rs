//! Rules in a SQL-like language (in the style of AWS IoT and EMQX rules), evaluated on the
//! ingest path:
//!
//! ```sql
//! SELECT device_id, temp, avg(temp, '5m') AS temp_avg
//! FROM 'devices/+/telemetry'
//! WHERE temp > 50
//! ```
//!
//! - [`Rule::compile`] parses and validates a [`RuleDefinition`] (SQL plus [`Action`]s); a
//!   [`ParseError`] gives line, column, what was expected and what was found.
//! - [`Rule::dry_run`] tries a rule on sample messages without side effects.
//! - [`RuleEngine`] holds the enabled rules per tenant; the host calls
//!   [`RuleEngine::process`] for each device [`Message`], and receives
//!   [`ActionInvocation`]s from the bounded queue through [`InvocationReceiver`] (directly or
//!   with [`InvocationReceiver::run`] and an [`ActionExecutor`]).
//!
//! The language reference, the action model and the bounds are in docs/rules.md.

mod action;
mod ast;
mod builtins;
mod dispatch;
mod engine;
mod error;
mod eval;
mod functions;
pub mod geo;
mod lexer;
mod parser;
mod replay;
mod rule;
mod template;
mod timefmt;
pub mod topic;
mod window;
mod zones;

pub use action::{Action, ActionInvocation, HttpMethod, ResolvedAction, Severity};
pub use dispatch::{ActionError, ActionExecutor};
pub use engine::{EngineConfig, InvocationReceiver, RuleCounters, RuleEngine, RuleStats};
pub use error::{EvalError, ParseError, Result, RuleError};
pub use functions::FUNCTION_NAMES;
pub use lexer::MAX_RULE_LEN;
pub use replay::messages_from_readings;
pub use rule::{DryRunResult, Message, Rule, RuleDefinition};
pub use window::WindowLimits;
pub use zones::{NoZones, StaticZones, ZoneResolver};

//! A compiled rule: parsing, validation, evaluation of one message, and the dry run.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::action::{Action, ActionInvocation, Compiled, ResolvedAction};
use crate::ast::{BinOp, Expr, PathSeg};
use crate::ast::{ExprKind, Query, SelectItem, Span};
use crate::error::{EvalError, ParseError, RuleError};
use crate::eval::{Ctx, Fail, eval, lookup_path, num_cmp, truth, type_name};
use crate::parser;
use crate::template::RenderCtx;
use crate::window::{DeviceMap, DeviceState, Summary, WindowLimits};
use crate::zones::{NoZones, ZoneResolver};

/// One device message as the rules see it. The host builds it on the ingest path; the payload
/// is the message's JSON (for the `{"ts", "values": {…}}` telemetry form, pass the object
/// under `values` so that `temp` reads the reading).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub tenant: String,
    pub device_id: String,
    pub topic: String,
    /// The message's timestamp in ms since the epoch (the device's `ts`, else receive time).
    /// Windows slide on this time, not on the wall clock.
    pub timestamp_ms: i64,
    pub payload: Value,
}

/// A rule as the host stores it and the API exchanges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDefinition {
    pub id: String,
    pub sql: String,
    #[serde(default)]
    pub actions: Vec<Action>,
}

impl RuleDefinition {
    /// A definition from stored or submitted parts, with the actions as a JSON array: an
    /// action that does not parse is reported with its index (`action 2: unknown variant
    /// "alarms"…`), like any other invalid action.
    pub fn from_json_actions(id: &str, sql: &str, actions: &Value) -> Result<Self, RuleError> {
        let items = match actions {
            Value::Array(items) => items.as_slice(),
            Value::Null => &[],
            other => {
                return Err(RuleError::InvalidAction {
                    index: 0,
                    reason: format!("actions must be a JSON array, found {}", type_name(other)),
                });
            }
        };
        let actions = items
            .iter()
            .enumerate()
            .map(|(index, a)| {
                Action::deserialize(a).map_err(|e| RuleError::InvalidAction {
                    index,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleDefinition {
            id: id.to_string(),
            sql: sql.to_string(),
            actions,
        })
    }
}

/// A validated, compiled rule. Cheap to evaluate; immutable (window state lives in the engine,
/// or in the dry run's own scratch state).
#[derive(Debug, Clone)]
pub struct Rule {
    definition: RuleDefinition,
    query: Query,
    actions: Vec<Compiled>,
    /// Whether evaluation needs per-device state (windows or clear-when-false alarms).
    stateful: bool,
    /// `WHERE field <op> number`, recognised for a fast path.
    fast_where: Option<FastCompare>,
    longest_window_ms: i64,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    pub outcome: Outcome,
    pub actions: Vec<(usize, Result<ResolvedAction, String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    TopicMismatch,
    /// WHERE was false (`Some(false)`) or unknown (`None`).
    NotMatched(Option<bool>),
    Matched(Map<String, Value>),
    Failed(EvalError),
}

/// The environment of an evaluation beyond the message.
pub(crate) struct Env<'a> {
    pub now_ms: i64,
    pub zones: &'a dyn ZoneResolver,
    pub limits: &'a WindowLimits,
}

impl Rule {
    /// Parses and validates a rule; the error says exactly what is wrong and where.
    pub fn compile(definition: RuleDefinition) -> Result<Rule, RuleError> {
        if definition.id.is_empty()
            || definition.id.len() > 128
            || !definition
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(RuleError::InvalidId(definition.id.clone()));
        }
        let query = parser::parse(&definition.sql)?;
        let selected: Option<Vec<String>> =
            if query.select.iter().any(|s| matches!(s, SelectItem::Star)) {
                None
            } else {
                Some(
                    query
                        .select
                        .iter()
                        .filter_map(|s| match s {
                            SelectItem::Expr { name, .. } => Some(name.clone()),
                            SelectItem::Star => None,
                        })
                        .collect(),
                )
            };
        let actions = definition
            .actions
            .iter()
            .enumerate()
            .map(|(index, a)| {
                Compiled::compile(a, selected.as_deref())
                    .map_err(|reason| RuleError::InvalidAction { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let longest_window_ms = query.buffers.iter().map(|b| b.window_ms).max().unwrap_or(0);
        let stateful =
            !query.buffers.is_empty() || actions.iter().any(|a| a.clears_when_false().is_some());
        let fast_where = query.filter.as_ref().and_then(FastCompare::recognise);
        Ok(Rule {
            definition,
            query,
            actions,
            stateful,
            fast_where,
            longest_window_ms,
        })
    }

    /// Parses SQL alone (for "validate as you type").
    pub fn check_sql(sql: &str) -> Result<(), ParseError> {
        parser::parse(sql).map(|_| ())
    }

    pub fn id(&self) -> &str {
        &self.definition.id
    }

    pub fn sql(&self) -> &str {
        &self.definition.sql
    }

    pub fn definition(&self) -> &RuleDefinition {
        &self.definition
    }

    /// The FROM topic filter.
    pub fn topic_filter(&self) -> &str {
        &self.query.from
    }

    /// Zone names used literally in `in_zone(…, 'name')`, so the host can check they exist
    /// when the rule is saved.
    pub fn zone_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut visit = |e: &crate::ast::Expr| {
            if let ExprKind::Call(crate::functions::Func::InZone, args) = &e.kind
                && let Some(ExprKind::Literal(Value::String(z))) = args.get(2).map(|a| &a.kind)
                && !names.contains(z)
            {
                names.push(z.clone());
            }
        };
        for item in &self.query.select {
            if let SelectItem::Expr { expr, .. } = item {
                walk(expr, &mut visit);
            }
        }
        if let Some(f) = &self.query.filter {
            walk(f, &mut visit);
        }
        for b in &self.query.buffers {
            walk(&b.arg, &mut visit);
        }
        names
    }

    pub(crate) fn is_stateful(&self) -> bool {
        self.stateful
    }

    pub(crate) fn idle_ttl_ms(&self, limits: &WindowLimits) -> i64 {
        limits.idle_ttl_ms.max(self.longest_window_ms)
    }

    /// Tries the rule on sample messages, in order, with fresh window state (so windowed
    /// aggregates accumulate over the samples). Pure: nothing is queued or executed, and the
    /// engine's state is untouched. `in_zone` has no zones here; use [`Rule::dry_run_with`]
    /// to supply them. Replaying stored telemetry is a dry run over messages built from it,
    /// oldest first.
    pub fn dry_run(&self, samples: &[Message]) -> Vec<DryRunResult> {
        self.dry_run_with(samples, &NoZones, wulian_common::time::now_ms())
    }

    /// [`Rule::dry_run`] with the host's zones and a fixed `now()`.
    pub fn dry_run_with(
        &self,
        samples: &[Message],
        zones: &dyn ZoneResolver,
        now_ms: i64,
    ) -> Vec<DryRunResult> {
        let limits = WindowLimits::default();
        let env = Env {
            now_ms,
            zones,
            limits: &limits,
        };
        let mut devices = DeviceMap::<DeviceState>::default();
        samples
            .iter()
            .enumerate()
            .map(|(index, msg)| {
                let ev = if crate::topic::matches(&self.query.from, &msg.topic) {
                    let device = if self.stateful {
                        devices.get(
                            &msg.device_id,
                            now_ms,
                            self.idle_ttl_ms(&limits),
                            limits.max_devices,
                        )
                    } else {
                        None
                    };
                    self.evaluate_routed(msg, device, &env)
                } else {
                    Evaluation {
                        outcome: Outcome::TopicMismatch,
                        actions: Vec::new(),
                    }
                };
                DryRunResult::from_evaluation(index, msg, ev)
            })
            .collect()
    }

    /// Evaluates one message whose topic matches the rule's filter. `device` is this rule's
    /// state for the message's device (the engine's, or a dry run's scratch state); it must
    /// be given for a stateful rule.
    pub(crate) fn evaluate_routed(
        &self,
        msg: &Message,
        mut device: Option<&mut DeviceState>,
        env: &Env<'_>,
    ) -> Evaluation {
        let result = self.run_query(msg, device.as_deref_mut(), env);
        let mut actions = Vec::new();
        let outcome = match result {
            Err(fail) => Outcome::Failed(self.eval_error(fail)),
            Ok(Err(matched)) => {
                // An alarm that clears when false clears on the first non-match after a
                // match, or after the state was lost (restart, eviction): clearing an alarm
                // that is not active is a no-op for the host.
                let was = device.as_ref().and_then(|d| d.last_match);
                if was != Some(false) {
                    for (i, a) in self.actions.iter().enumerate() {
                        if let Some(t) = a.clears_when_false() {
                            actions.push((
                                i,
                                Ok(ResolvedAction::ClearAlarm {
                                    alarm_type: t.to_string(),
                                }),
                            ));
                        }
                    }
                }
                if let Some(d) = device.as_deref_mut() {
                    d.last_match = Some(false);
                }
                Outcome::NotMatched(matched)
            }
            Ok(Ok(output)) => {
                let ctx = RenderCtx {
                    output: &output,
                    msg,
                    rule_id: self.id(),
                };
                for (i, a) in self.actions.iter().enumerate() {
                    actions.push((i, a.resolve(&ctx)));
                }
                if let Some(d) = device {
                    d.last_match = Some(true);
                }
                Outcome::Matched(output)
            }
        };
        Evaluation { outcome, actions }
    }

    /// Updates windows, applies WHERE, computes the output. `Ok(Err(w))` is "not matched"
    /// with the WHERE value `w`.
    fn run_query(
        &self,
        msg: &Message,
        device: Option<&mut DeviceState>,
        env: &Env<'_>,
    ) -> Result<Result<Map<String, Value>, Option<bool>>, Fail> {
        let mut summaries: Vec<Summary> = Vec::with_capacity(self.query.buffers.len());
        if !self.query.buffers.is_empty() {
            let Some(device) = device else {
                return Err(Fail {
                    span: self.query.from_span,
                    reason: "window state unavailable".into(),
                });
            };
            let ctx = Ctx {
                msg,
                now_ms: env.now_ms,
                zones: env.zones,
                aggregates: &[],
            };
            for (i, spec) in self.query.buffers.iter().enumerate() {
                let v = eval(&spec.arg, &ctx)?;
                let sample = match &v {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_f64()),
                    Value::Bool(b) if !spec.numeric => Some(Some(f64::from(u8::from(*b)))),
                    other if spec.numeric => {
                        return Err(Fail {
                            span: spec.arg.span,
                            reason: format!(
                                "window aggregates need numbers, found {}",
                                type_name(other)
                            ),
                        });
                    }
                    _ => Some(None),
                };
                summaries.push(device.push(
                    i,
                    msg.timestamp_ms,
                    sample,
                    spec.window_ms,
                    env.limits.max_samples_per_window,
                ));
            }
        }
        let ctx = Ctx {
            msg,
            now_ms: env.now_ms,
            zones: env.zones,
            aggregates: &summaries,
        };
        if let Some(filter) = &self.query.filter {
            // The common `field <op> number` decides here when the field is a number or
            // absent; anything else takes the general path below, errors included.
            match self
                .fast_where
                .as_ref()
                .and_then(|f| f.decide(&msg.payload))
            {
                Some(Some(true)) => return self.output(msg, &ctx).map(Ok),
                Some(decided) => return Ok(Err(decided)),
                None => {}
            }
            let v = eval(filter, &ctx)?;
            let t = truth(&v).map_err(|reason| Fail {
                span: filter.span,
                reason: format!("WHERE {reason}"),
            })?;
            if t != Some(true) {
                return Ok(Err(t));
            }
        }
        self.output(msg, &ctx).map(Ok)
    }

    /// The SELECT list for a message that matched.
    fn output(&self, msg: &Message, ctx: &Ctx<'_>) -> Result<Map<String, Value>, Fail> {
        let mut output = Map::new();
        for item in &self.query.select {
            match item {
                SelectItem::Star => match &msg.payload {
                    Value::Object(o) => {
                        for (k, v) in o {
                            output.insert(k.clone(), v.clone());
                        }
                    }
                    Value::Null => {}
                    other => {
                        output.insert("payload".into(), other.clone());
                    }
                },
                SelectItem::Expr { expr, name } => {
                    output.insert(name.clone(), eval(expr, ctx)?);
                }
            }
        }
        Ok(output)
    }

    fn eval_error(&self, fail: Fail) -> EvalError {
        let sql = &self.definition.sql;
        let Span { start, end } = fail.span;
        let expression = sql
            .get(start..end.max(start))
            .unwrap_or_default()
            .to_string();
        EvalError {
            expression,
            offset: start,
            reason: fail.reason,
        }
    }

    /// Builds the invocations for the engine.
    pub(crate) fn invocations<'r>(
        &'r self,
        msg: &'r Message,
        actions: Vec<(usize, Result<ResolvedAction, String>)>,
        now: Instant,
    ) -> impl Iterator<Item = Result<ActionInvocation, String>> + 'r {
        // Strings are cloned per invocation, not up front: most evaluations fire nothing.
        actions.into_iter().map(move |(action_index, r)| {
            r.map(|action| ActionInvocation {
                tenant: msg.tenant.clone(),
                rule_id: self.id().to_string(),
                action_index,
                device_id: msg.device_id.clone(),
                timestamp_ms: msg.timestamp_ms,
                action,
                enqueued_at: now,
            })
            .map_err(|e| format!("action {action_index}: {e}"))
        })
    }
}

/// `WHERE <payload field> <comparison> <number literal>` (either side), the shape of most
/// alert rules, evaluated without the general evaluator.
#[derive(Debug, Clone)]
struct FastCompare {
    path: Vec<PathSeg>,
    op: BinOp,
    literal: serde_json::Number,
    /// The literal is on the left: `50 < temp`.
    flipped: bool,
}

impl FastCompare {
    fn recognise(filter: &Expr) -> Option<FastCompare> {
        let ExprKind::Binary(op, l, r) = &filter.kind else {
            return None;
        };
        if !matches!(
            op,
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        ) {
            return None;
        }
        let (path, literal, flipped) = match (&l.kind, &r.kind) {
            (ExprKind::Field(p), ExprKind::Literal(Value::Number(n))) => (p, n, false),
            (ExprKind::Literal(Value::Number(n)), ExprKind::Field(p)) => (p, n, true),
            _ => return None,
        };
        Some(FastCompare {
            path: path.clone(),
            op: *op,
            literal: literal.clone(),
            flipped,
        })
    }

    /// `Some(Some(b))` decided, `Some(None)` unknown (the field is null or absent), `None`
    /// when the general evaluator must decide (another type: it knows the rules and errors).
    fn decide(&self, payload: &Value) -> Option<Option<bool>> {
        let n = match lookup_path(payload, &self.path) {
            None | Some(Value::Null) => return Some(None),
            Some(Value::Number(n)) => n,
            Some(_) => return None,
        };
        let ord = if self.flipped {
            num_cmp(&self.literal, n)
        } else {
            num_cmp(n, &self.literal)
        }?;
        Some(Some(match self.op {
            BinOp::Eq => ord.is_eq(),
            BinOp::NotEq => ord.is_ne(),
            BinOp::Lt => ord.is_lt(),
            BinOp::Le => ord.is_le(),
            BinOp::Gt => ord.is_gt(),
            _ => ord.is_ge(),
        }))
    }
}

/// Calls `f` on every node of an expression tree.
fn walk(e: &crate::ast::Expr, f: &mut impl FnMut(&crate::ast::Expr)) {
    f(e);
    match &e.kind {
        ExprKind::Literal(_)
        | ExprKind::Meta(_)
        | ExprKind::Field(_)
        | ExprKind::Aggregate { .. } => {}
        ExprKind::Get(b, _) | ExprKind::Neg(b) | ExprKind::Not(b) => walk(b, f),
        ExprKind::IsNull { expr, .. } => walk(expr, f),
        ExprKind::Binary(_, l, r) => {
            walk(l, f);
            walk(r, f);
        }
        ExprKind::In { expr, list, .. } => {
            walk(expr, f);
            list.iter().for_each(|x| walk(x, f));
        }
        ExprKind::Between {
            expr, low, high, ..
        } => {
            walk(expr, f);
            walk(low, f);
            walk(high, f);
        }
        ExprKind::Case {
            operand,
            whens,
            otherwise,
        } => {
            if let Some(o) = operand {
                walk(o, f);
            }
            for (c, r) in whens {
                walk(c, f);
                walk(r, f);
            }
            if let Some(o) = otherwise {
                walk(o, f);
            }
        }
        ExprKind::Call(_, args) => args.iter().for_each(|x| walk(x, f)),
        ExprKind::PointInPolygon(a, b, _) => {
            walk(a, f);
            walk(b, f);
        }
    }
}

/// The result of trying a rule on one sample message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRunResult {
    /// Position of the sample in the input.
    pub index: usize,
    pub matched: bool,
    /// The selected output when matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Map<String, Value>>,
    /// Why it did not match, or the evaluation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EvalError>,
    /// The actions that would fire (raises when matched, clears when not).
    pub actions: Vec<ResolvedAction>,
    /// Actions that would fail to render (missing template names, invalid topics, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub action_errors: Vec<String>,
}

impl DryRunResult {
    fn from_evaluation(index: usize, msg: &Message, ev: Evaluation) -> Self {
        let mut actions = Vec::new();
        let mut action_errors = Vec::new();
        for (i, r) in ev.actions {
            match r {
                Ok(a) => actions.push(a),
                Err(e) => action_errors.push(format!("action {i}: {e}")),
            }
        }
        let (matched, output, reason, error) = match ev.outcome {
            Outcome::TopicMismatch => (
                false,
                None,
                Some(format!(
                    "topic '{}' does not match the FROM filter",
                    msg.topic
                )),
                None,
            ),
            Outcome::NotMatched(Some(false)) => (false, None, Some("WHERE is false".into()), None),
            Outcome::NotMatched(_) => (
                false,
                None,
                Some("WHERE is null (unknown), which does not match".into()),
                None,
            ),
            Outcome::Matched(out) => (true, Some(out), None, None),
            Outcome::Failed(e) => (
                false,
                None,
                Some(format!("evaluation failed: {e}")),
                Some(e),
            ),
        };
        DryRunResult {
            index,
            matched,
            output,
            reason,
            error,
            actions,
            action_errors,
        }
    }
}

//! `${…}` templates of actions: topic names, URLs, headers, bodies, command parameters.
//!
//! `${name}` reads the rule's selected output first (`${temp}`, `${gps.lat}`,
//! `${readings[0]}`), then the message metadata (`${device_id}`, `${tenant}`, `${topic}`,
//! `${timestamp}`, `${rule_id}`). Strings render as themselves, other values as JSON. A name
//! that resolves to nothing is an error (the action does not fire), so that a typo cannot
//! publish to `devices//commands`. `$$` is a literal `$`.

use serde_json::{Map, Value};

use crate::ast::PathSeg;
use crate::builtins::{parse_json_path, to_text};
use crate::eval::lookup_path;
use crate::rule::Message;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var { name: String, path: Vec<PathSeg> },
}

/// What a template can read.
pub(crate) struct RenderCtx<'a> {
    pub output: &'a Map<String, Value>,
    pub msg: &'a Message,
    pub rule_id: &'a str,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            literal.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let close = body
                    .find('}')
                    .ok_or_else(|| format!("unclosed '${{' in template {text:?}"))?;
                let name = body[..close].trim();
                if name.is_empty() {
                    return Err(format!("empty '${{}}' in template {text:?}"));
                }
                let path = parse_json_path(name)
                    .map_err(|why| format!("bad name '${{{name}}}' in template {text:?}: {why}"))?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var {
                    name: name.to_string(),
                    path,
                });
                rest = &body[close + 1..];
            } else {
                literal.push('$');
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The literal text before the first `${…}` (to validate URL schemes at save time).
    pub(crate) fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// The literal parts, for checks such as "no wildcard in a topic".
    pub(crate) fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            Part::Var { .. } => None,
        })
    }

    pub(crate) fn render(&self, ctx: &RenderCtx<'_>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, path } => out.push_str(&to_text(&resolve(name, path, ctx)?)),
            }
        }
        Ok(out)
    }

    /// A template that is exactly one `${…}` keeps the value's JSON type when used inside a
    /// JSON template (`"${temp}"` gives the number, not a string).
    fn render_value(&self, ctx: &RenderCtx<'_>) -> Result<Value, String> {
        if let [Part::Var { name, path }] = self.parts.as_slice() {
            return resolve(name, path, ctx);
        }
        self.render(ctx).map(Value::String)
    }
}

fn resolve(name: &str, path: &[PathSeg], ctx: &RenderCtx<'_>) -> Result<Value, String> {
    if let Some(PathSeg::Key(first)) = path.first()
        && let Some(v) = ctx.output.get(first)
    {
        return lookup_path(v, &path[1..])
            .cloned()
            .ok_or_else(|| format!("template name '${{{name}}}' is not in the selected output"));
    }
    let meta = match name {
        "device_id" => Value::from(ctx.msg.device_id.as_str()),
        "tenant" => Value::from(ctx.msg.tenant.as_str()),
        "topic" => Value::from(ctx.msg.topic.as_str()),
        "timestamp" => Value::from(ctx.msg.timestamp_ms),
        "rule_id" => Value::from(ctx.rule_id),
        _ => {
            return Err(format!(
                "template name '${{{name}}}' is neither in the selected output nor message metadata"
            ));
        }
    };
    Ok(meta)
}

/// A JSON value whose strings are templates (command parameters).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonTemplate {
    Plain(Value),
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub(crate) fn parse(v: &Value) -> Result<JsonTemplate, String> {
        Ok(match v {
            Value::String(s) => JsonTemplate::Str(Template::parse(s)?),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .map(JsonTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => JsonTemplate::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Plain(other.clone()),
        })
    }

    pub(crate) fn render(&self, ctx: &RenderCtx<'_>) -> Result<Value, String> {
        Ok(match self {
            JsonTemplate::Plain(v) => v.clone(),
            JsonTemplate::Str(t) => t.render_value(ctx)?,
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => {
                let mut m = Map::new();
                for (k, v) in fields {
                    m.insert(k.clone(), v.render(ctx)?);
                }
                Value::Object(m)
            }
        })
    }
}

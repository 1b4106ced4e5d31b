//! InfluxDB line protocol ingest, compatible with InfluxDB 2 `POST /api/v2/write` and
//! InfluxDB 1 `POST /write` (Telegraf's `outputs.influxdb_v2` and `outputs.influxdb`).
//!
//! Mapping: the device is the tag `device_id` (else `device`); the series key is
//! `{measurement}.{field}`, or `{field}` for the measurement `telemetry`; other tags are not
//! stored. A request is all-or-nothing: every line is parsed and checked (device in the key's
//! tenant, key name, value type) before one write of the whole batch.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa::IntoParams;
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_ingest::telemetry::{MAX_STRING_VALUE_LEN, is_valid_key};
use wulian_tsdb::{MAX_TIMESTAMP, MIN_TIMESTAMP, SeriesKey, Value, ValueKind, WriteEntry};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiBytes, ApiQuery, Caller};
use crate::state::AppState;

/// The measurement whose fields are stored under the bare field name.
pub const PLAIN_MEASUREMENT: &str = "telemetry";

/// Query parameters of `POST /api/v2/write`. Unknown parameters are ignored, as InfluxDB does.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct WriteV2Query {
    /// Accepted and ignored: the tenant is the API key's.
    pub org: Option<String>,
    /// Accepted and ignored.
    #[serde(rename = "orgID")]
    pub org_id: Option<String>,
    /// Accepted and ignored: every point goes to the tenant's telemetry store.
    pub bucket: Option<String>,
    /// Timestamp unit: `ns` (default), `us`, `ms`, `s`.
    pub precision: Option<String>,
}

/// Query parameters of `POST /write` (InfluxDB 1). Unknown parameters are ignored.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct WriteV1Query {
    /// Accepted and ignored.
    pub db: Option<String>,
    /// Accepted and ignored.
    pub rp: Option<String>,
    /// Timestamp unit: `n`/`ns` (default), `u`/`us`, `ms`, `s`, `m`, `h`.
    pub precision: Option<String>,
    /// User name: ignored.
    pub u: Option<String>,
    /// Password: the API key (alternative to the Authorization header).
    pub p: Option<String>,
}

/// A field value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number in the body.
    pub number: usize,
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    /// As written, in the request's precision.
    pub timestamp: Option<i64>,
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Timestamp units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Ns,
    Us,
    Ms,
    S,
    M,
    H,
}

impl Precision {
    pub fn parse(s: Option<&str>) -> Option<Precision> {
        Some(match s.unwrap_or("ns") {
            "ns" | "n" | "" => Precision::Ns,
            "us" | "u" | "µs" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            "m" => Precision::M,
            "h" => Precision::H,
            _ => return None,
        })
    }

    /// Milliseconds since the epoch; `None` if it overflows. Sub-millisecond parts are floored.
    pub fn to_ms(self, ts: i64) -> Option<i64> {
        match self {
            Precision::Ns => Some(ts.div_euclid(1_000_000)),
            Precision::Us => Some(ts.div_euclid(1_000)),
            Precision::Ms => Some(ts),
            Precision::S => ts.checked_mul(1_000),
            Precision::M => ts.checked_mul(60_000),
            Precision::H => ts.checked_mul(3_600_000),
        }
    }
}

/// Parses a line protocol body. Empty lines and lines starting with `#` are skipped; `\r\n`
/// line ends are accepted. Stops at the first bad line.
pub fn parse(body: &str) -> Result<Vec<Line>, LineError> {
    let mut parser = Parser {
        s: body.as_bytes(),
        pos: 0,
        line: 1,
    };
    let mut lines = Vec::new();
    while parser.pos < parser.s.len() {
        parser.skip_blanks();
        match parser.peek() {
            None => break,
            Some(b'\n') => {
                parser.newline();
                continue;
            }
            Some(b'\r') if parser.s.get(parser.pos + 1) == Some(&b'\n') => {
                parser.pos += 1;
                parser.newline();
                continue;
            }
            Some(b'#') => {
                while !matches!(parser.peek(), None | Some(b'\n')) {
                    parser.pos += 1;
                }
                continue;
            }
            Some(_) => {}
        }
        let number = parser.line;
        let line = parser.line_body().map_err(|reason| LineError {
            line: number,
            reason,
        })?;
        lines.push(line);
    }
    Ok(lines)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn newline(&mut self) {
        self.pos += 1;
        self.line += 1;
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// At end of line (or body): consumes the line end.
    fn at_line_end(&mut self) -> bool {
        match self.peek() {
            None => true,
            Some(b'\n') => {
                self.newline();
                true
            }
            Some(b'\r') if self.s.get(self.pos + 1) == Some(&b'\n') => {
                self.pos += 1;
                self.newline();
                true
            }
            _ => false,
        }
    }

    /// A name (measurement, tag key or value, field key) up to an unescaped stop byte. A
    /// backslash before one of `escapable` stands for that byte; before anything else it is
    /// itself.
    fn name(&mut self, what: &str, stops: &[u8], escapable: &[u8]) -> Result<String, String> {
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            if b == b'\n' || stops.contains(&b) {
                break;
            }
            if b == b'\\'
                && let Some(&next) = self.s.get(self.pos + 1)
                && (escapable.contains(&next) || next == b'\\')
            {
                out.push(next);
                self.pos += 2;
                continue;
            }
            out.push(b);
            self.pos += 1;
        }
        if out.last() == Some(&b'\r') && self.peek() == Some(b'\n') {
            out.pop();
        }
        if out.is_empty() {
            return Err(format!("empty {what}"));
        }
        String::from_utf8(out).map_err(|_| format!("{what} is not valid UTF-8"))
    }

    fn expect(&mut self, byte: u8, context: &str) -> Result<(), String> {
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(b'\n') | None => Err(format!("unexpected end of line {context}")),
            Some(b) => Err(format!(
                "expected {:?} {context}, found {:?}",
                byte as char, b as char
            )),
        }
    }

    fn line_body(&mut self) -> Result<Line, String> {
        let number = self.line;
        let measurement = self.name("measurement", b", ", b", ")?;
        let mut tags = Vec::new();
        while self.peek() == Some(b',') {
            self.pos += 1;
            let key = self.name("tag key", b",= ", b",= ")?;
            self.expect(b'=', &format!("after tag key {key:?}"))?;
            let value = self.name(&format!("value of tag {key:?}"), b", ", b",= ")?;
            tags.push((key, value));
        }
        if !matches!(self.peek(), Some(b' ')) {
            return Err("expected a space and fields after the measurement and tags".into());
        }
        self.skip_blanks();
        let mut fields = Vec::new();
        loop {
            let key = self.name("field key", b",= ", b",= ")?;
            self.expect(b'=', &format!("after field key {key:?}"))?;
            let value = self.field_value(&key)?;
            fields.push((key, value));
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.skip_blanks();
        let mut timestamp = None;
        if !self.at_line_end() {
            let start = self.pos;
            while !matches!(self.peek(), None | Some(b'\n' | b' ' | b'\t' | b'\r')) {
                self.pos += 1;
            }
            let raw = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
            let ts = raw
                .parse::<i64>()
                .map_err(|_| format!("invalid timestamp {raw:?}"))?;
            timestamp = Some(ts);
            self.skip_blanks();
            if !self.at_line_end() {
                return Err("unexpected text after the timestamp".into());
            }
        }
        Ok(Line {
            number,
            measurement,
            tags,
            fields,
            timestamp,
        })
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue, String> {
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let mut out = Vec::new();
            loop {
                match self.peek() {
                    None => return Err(format!("unterminated string value of field {key:?}")),
                    Some(b'\\') if matches!(self.s.get(self.pos + 1), Some(b'"' | b'\\')) => {
                        out.push(self.s[self.pos + 1]);
                        self.pos += 2;
                    }
                    Some(b'"') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b) => {
                        if b == b'\n' {
                            self.line += 1;
                        }
                        out.push(b);
                        self.pos += 1;
                    }
                }
            }
            if !matches!(
                self.peek(),
                None | Some(b',' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                return Err(format!(
                    "unexpected text after the string value of field {key:?}"
                ));
            }
            return String::from_utf8(out)
                .map(FieldValue::Str)
                .map_err(|_| format!("string value of field {key:?} is not valid UTF-8"));
        }
        let start = self.pos;
        while !matches!(
            self.peek(),
            None | Some(b',' | b' ' | b'\t' | b'\n' | b'\r')
        ) {
            self.pos += 1;
        }
        let raw = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        parse_scalar(raw).ok_or_else(|| {
            if raw.is_empty() {
                format!("missing value of field {key:?}")
            } else {
                format!("invalid value {raw:?} of field {key:?}")
            }
        })
    }
}

fn parse_scalar(raw: &str) -> Option<FieldValue> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(FieldValue::Bool(false)),
        _ => {}
    }
    if let Some(int) = raw.strip_suffix('i') {
        return int.parse::<i64>().ok().map(FieldValue::Int);
    }
    if let Some(uint) = raw.strip_suffix('u') {
        return uint.parse::<u64>().ok().map(FieldValue::UInt);
    }
    // Numbers only: Rust's float parser also takes "inf" and "NaN", which the protocol does not.
    let first = raw.bytes().next()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    raw.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(FieldValue::Float)
}

/// The series key of a field of a measurement.
pub fn series_key(measurement: &str, field: &str) -> String {
    if measurement == PLAIN_MEASUREMENT {
        field.to_string()
    } else {
        format!("{measurement}.{field}")
    }
}

/// The device a line belongs to.
pub fn line_device(line: &Line) -> Option<&str> {
    let tag = |name: &str| {
        line.tags
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    tag("device_id").or_else(|| tag("device"))
}

/// One line's entries, checked, in the tenant; `device` and the series key validated.
fn line_entries(
    tenant: &str,
    line: &Line,
    precision: Precision,
    received_ms: i64,
) -> Result<Vec<WriteEntry>, String> {
    let device = line_device(line).ok_or("no device_id (or device) tag")?;
    let ts = match line.timestamp {
        None => received_ms,
        Some(ts) => precision
            .to_ms(ts)
            .filter(|ms| (MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(ms))
            .ok_or_else(|| {
                format!("timestamp {ts} is out of range (1970 to 9999 in the request's precision)")
            })?,
    };
    let mut entries = Vec::with_capacity(line.fields.len());
    for (field, value) in &line.fields {
        let key = series_key(&line.measurement, field);
        if !is_valid_key(&key) {
            return Err(format!(
                "series key {key:?} is not valid (1 to 128 of A-Z a-z 0-9 _ . : -)"
            ));
        }
        let value = match value {
            FieldValue::Float(f) => Value::F64(*f),
            FieldValue::Int(i) => Value::I64(*i),
            FieldValue::UInt(u) => Value::I64(i64::try_from(*u).map_err(|_| {
                format!("unsigned value {u} of field {field:?} exceeds the largest integer")
            })?),
            FieldValue::Bool(b) => Value::Bool(*b),
            FieldValue::Str(s) => {
                if s.len() > MAX_STRING_VALUE_LEN {
                    return Err(format!(
                        "string value of field {field:?} is longer than {MAX_STRING_VALUE_LEN} bytes"
                    ));
                }
                Value::Str(s.clone())
            }
        };
        entries.push(WriteEntry {
            series: SeriesKey::new(tenant, device, key),
            ts,
            value,
        });
    }
    Ok(entries)
}

fn line_problem(line: usize, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_line_protocol", format!("line {line}: {reason}"))
}

/// The API key of a write request: `Authorization: Token <key>` / `Bearer <key>` /
/// `Basic base64(user:key)`, or the `p` query parameter (InfluxDB 1).
fn presented_key(headers: &HeaderMap, password: Option<&str>) -> ApiResult<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| {
            ApiError::unauthorized("invalid_credentials", "malformed Authorization header")
        })?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "expected Authorization: Token <api key>",
            ));
        }
        if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
            return Ok(rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64_decode(rest)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::unauthorized("invalid_credentials", "malformed basic credentials")
                })?;
            let (_, pass) = decoded.split_once(':').unwrap_or(("", &decoded));
            return Ok(pass.to_string());
        }
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "expected Authorization: Token <api key>, Bearer or Basic",
        ));
    }
    match password {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(ApiError::unauthorized(
            "missing_credentials",
            "writes need Authorization: Token <api key> (or the key as password)",
        )),
    }
}

/// Standard base64 (padding optional).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.trim_end_matches('=').bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

async fn authenticate(state: &AppState, secret: String) -> ApiResult<Caller> {
    let key = run_blocking(&state.registry, move |r| r.authenticate_api_key(&secret))
        .await
        .map_err(|e| ApiError::internal("API key lookup failed.", &e))?
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_credentials", "unknown or revoked API key")
        })?;
    let caller = Caller::from_api_key(key);
    caller.require_write()?;
    Ok(caller)
}

/// Parses, checks and stores a body; all-or-nothing.
async fn write_lines(
    state: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    precision: Option<&str>,
    body: &[u8],
) -> ApiResult<StatusCode> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("?").trim();
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Encoding {encoding:?} is not supported; send the body uncompressed (Telegraf: content_encoding = \"identity\")"
                ),
            ));
        }
    }
    let precision = Precision::parse(precision).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            "precision must be one of ns, us, ms, s (InfluxDB 1 also n, u, m, h)",
        )
    })?;
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        line_problem(line, "not valid UTF-8")
    })?;
    let lines = parse(text).map_err(|e| line_problem(e.line, e.reason))?;
    if lines.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let tenant = caller.tenant().to_string();
    let received = now_ms();
    let mut entries = Vec::new();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    let mut kinds: HashMap<SeriesKey, ValueKind> = HashMap::new();
    for line in &lines {
        let line_entries = line_entries(&tenant, line, precision, received)
            .map_err(|reason| line_problem(line.number, reason))?;
        if let Some(device) = line_device(line) {
            first_line_of
                .entry(device.to_string())
                .or_insert(line.number);
        }
        for entry in &line_entries {
            // The kind a series has (stored, or set earlier in this body) must take this value;
            // an integer into a float series is stored as a float, as everywhere else.
            let known = match kinds.get(&entry.series) {
                Some(kind) => Some(*kind),
                None => {
                    let stored = state.tsdb.series_kind(&entry.series);
                    if let Some(kind) = stored {
                        kinds.insert(entry.series.clone(), kind);
                    }
                    stored
                }
            };
            let kind = entry.value.kind();
            match known {
                Some(k) if k == kind => {}
                Some(ValueKind::Float) if kind == ValueKind::Integer => {}
                Some(k) => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "type_mismatch",
                        format!(
                            "line {}: series {:?} of device {:?} holds {k} values, not {kind}",
                            line.number, entry.series.key, entry.series.device
                        ),
                    ));
                }
                None => {
                    kinds.insert(entry.series.clone(), kind);
                }
            }
        }
        entries.extend(line_entries);
    }
    // Every device must exist, enabled, in the key's tenant (another tenant's device reads as
    // missing).
    let mut devices: Vec<(String, usize)> = first_line_of.into_iter().collect();
    devices.sort_by_key(|(_, line)| *line);
    let check_tenant = tenant.clone();
    let refused = run_blocking(&state.registry, move |r| {
        for (device, line) in devices {
            match r.get_device(&check_tenant, &device) {
                Ok(d) if d.disabled => {
                    return Ok(Some((line, format!("device {device:?} is disabled"))));
                }
                Ok(_) => {}
                Err(wulian_registry::Error::NotFound { .. }) => {
                    return Ok(Some((line, format!("device {device:?} not found"))));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    })
    .await?;
    if let Some((line, reason)) = refused {
        return Err(ApiError::bad_request(
            "unknown_device",
            format!("line {line}: {reason}"),
        ));
    }
    let metrics = &state.pipeline.metrics;
    match state.tsdb.write(entries).await {
        Ok(summary) => {
            metrics.messages_accepted.fetch_add(1, Ordering::Relaxed);
            metrics
                .points_written
                .fetch_add(summary.points as u64, Ordering::Relaxed);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => {
            metrics.messages_rejected.fetch_add(1, Ordering::Relaxed);
            use wulian_tsdb::Error as E;
            match error {
                E::TypeMismatch { .. } => Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "type_mismatch",
                    error.to_string(),
                )),
                E::NonFiniteValue { .. }
                | E::TimestampOutOfRange { .. }
                | E::InvalidSeriesKey { .. }
                | E::BatchTooLarge { .. } => Err(ApiError::bad_request(
                    "invalid_line_protocol",
                    error.to_string(),
                )),
                other => Err(ApiError::internal("Storing line protocol failed.", &other)),
            }
        }
    }
}

#[utoipa::path(post, path = "/api/v2/write", tag = "telemetry",
    params(WriteV2Query),
    request_body(content = String, content_type = "text/plain", description = "InfluxDB line protocol; the device is the tag `device_id`"),
    security(("api_key" = [])),
    responses((status = 204, description = "Every line stored"), (status = 400, body = Problem, description = "A bad line (named by number); nothing stored"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem, description = "A Content-Encoding (e.g. gzip)"), (status = 422, body = Problem)))]
pub async fn write_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WriteV2Query>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<StatusCode> {
    let caller = authenticate(&state, presented_key(&headers, None)?).await?;
    write_lines(&state, &headers, &caller, q.precision.as_deref(), &body).await
}

#[utoipa::path(post, path = "/write", tag = "telemetry",
    params(WriteV1Query),
    request_body(content = String, content_type = "text/plain", description = "InfluxDB line protocol; the device is the tag `device_id`"),
    security(("api_key" = [])),
    responses((status = 204, description = "Every line stored"), (status = 400, body = Problem, description = "A bad line (named by number); nothing stored"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem, description = "A Content-Encoding (e.g. gzip)"), (status = 422, body = Problem)))]
pub async fn write_v1(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WriteV1Query>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<StatusCode> {
    let caller = authenticate(&state, presented_key(&headers, q.p.as_deref())?).await?;
    write_lines(&state, &headers, &caller, q.precision.as_deref(), &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Line {
        let mut lines = parse(s).unwrap();
        assert_eq!(lines.len(), 1, "{s}");
        lines.remove(0)
    }

    #[test]
    fn telegraf_lines() {
        let l = one(
            "cpu,cpu=cpu-total,device_id=gw-1,host=h usage_idle=98.5,usage_user=1.2 1700000000000000000\n",
        );
        assert_eq!(l.measurement, "cpu");
        assert_eq!(line_device(&l), Some("gw-1"));
        assert_eq!(l.fields[0], ("usage_idle".into(), FieldValue::Float(98.5)));
        assert_eq!(l.timestamp, Some(1_700_000_000_000_000_000));
        let l = one("mem,device=d total=8i,free=3u,ok=true,state=\"up\"");
        assert_eq!(
            l.fields,
            vec![
                ("total".into(), FieldValue::Int(8)),
                ("free".into(), FieldValue::UInt(3)),
                ("ok".into(), FieldValue::Bool(true)),
                ("state".into(), FieldValue::Str("up".into())),
            ]
        );
        assert_eq!(l.timestamp, None);
    }

    #[test]
    fn escaping() {
        let l = one(
            r#"my\ meas\,ure,device_id=d,tag\ k\=x=v\,a\ l\=ue fi\,eld\=x\ y="a \"q\" \\ b, c=d",x=1e3 5"#,
        );
        assert_eq!(l.measurement, "my meas,ure");
        assert_eq!(l.tags[1], ("tag k=x".into(), "v,a l=ue".into()));
        assert_eq!(l.fields[0].0, "fi,eld=x y");
        assert_eq!(l.fields[0].1, FieldValue::Str(r#"a "q" \ b, c=d"#.into()));
        assert_eq!(l.fields[1].1, FieldValue::Float(1000.0));
        assert_eq!(l.timestamp, Some(5));
    }

    #[test]
    fn comments_blank_lines_crlf_and_numbers() {
        let lines = parse("# hello\n\n  \r\nm,device_id=a v=1 1\r\nm,device_id=a v=2 2\n").unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].number, 4);
        assert_eq!(lines[1].number, 5);
        assert_eq!(lines[1].timestamp, Some(2));
    }

    #[test]
    fn multi_line_string_counts_lines() {
        let lines = parse("m,device_id=a s=\"x\ny\"\nm,device_id=a v=1\n").unwrap();
        assert_eq!(lines[0].fields[0].1, FieldValue::Str("x\ny".into()));
        assert_eq!(lines[1].number, 3);
    }

    #[test]
    fn errors_name_the_line() {
        for (body, line, needle) in [
            ("m,device_id=a v=1\nm,device_id=a\n", 2, "space"),
            ("m,device_id=a v=\n", 1, "missing value"),
            ("m,device_id=a v=abc\n", 1, "invalid value"),
            ("m,device_id=a v=inf\n", 1, "invalid value"),
            ("m,device_id=a v=1x2i\n", 1, "invalid value"),
            ("m,device_id=a v=1 12ab\n", 1, "invalid timestamp"),
            ("m,device_id=a v=1 1 2\n", 1, "after the timestamp"),
            ("m,device_id=a v=\"open\n", 1, "unterminated"),
            ("m,device_id v=1\n", 1, "after tag key"),
            ("m,device_id= v=1\n", 1, "empty value of tag"),
            (",device_id=a v=1\n", 1, "empty measurement"),
            ("m,device_id=a =1\n", 1, "empty field key"),
            (
                "ok,device_id=a v=1\n\nm,device_id=a v=\"s\"x\n",
                3,
                "after the string",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.line, line, "{body:?}: {e}");
            assert!(e.reason.contains(needle), "{body:?}: {e}");
        }
    }

    #[test]
    fn precisions_and_keys() {
        assert_eq!(
            Precision::Ns.to_ms(1_700_000_000_123_456_789),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            Precision::Us.to_ms(1_700_000_000_123_456),
            Some(1_700_000_000_123)
        );
        assert_eq!(Precision::S.to_ms(1_700_000_000), Some(1_700_000_000_000));
        assert_eq!(Precision::H.to_ms(i64::MAX), None);
        assert_eq!(Precision::parse(Some("u")), Some(Precision::Us));
        assert_eq!(Precision::parse(Some("x")), None);
        assert_eq!(series_key("telemetry", "temp"), "temp");
        assert_eq!(series_key("cpu", "usage_idle"), "cpu.usage_idle");
        assert_eq!(base64_decode("dTp3bGtfYWJj").unwrap(), b"u:wlk_abc");
    }
}

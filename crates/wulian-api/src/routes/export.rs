//! `GET /api/v1/devices/{id}/telemetry/export`: a device's raw points as a CSV download,
//! streamed: the store is read in windows of [`CHUNK_POINTS`] points with a moving `from`, so
//! memory stays bounded whatever the range.

use std::fmt::Write as _;

use crate::routes::telemetry::{requested_keys, time_range};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::IntoParams;
use wulian_tsdb::{Point, SeriesKey, Tsdb, Value};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Caller};
use crate::routes::devices::load_device;
use crate::state::AppState;

/// Points read from the store per step (one chunk of the response body).
pub const CHUNK_POINTS: usize = 5_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Comma-separated keys; all of the device's keys when absent.
    pub keys: Option<String>,
    /// Start, inclusive, ms since the epoch. Default: 0 (everything).
    pub from: Option<i64>,
    /// End, exclusive, ms since the epoch. Default: now (plus one ms).
    pub to: Option<i64>,
    /// `csv` (default). Parquet is not supported yet.
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/telemetry/export", tag = "telemetry",
    params(("id" = String, Path, description = "Device id"), ExportQuery), security(("api_key" = [])),
    responses((status = 200, content_type = "text/csv", body = String,
        description = "`time,ts_ms,key,value` rows (ISO 8601 UTC time, ms since the epoch), by key then time"),
        (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn export_telemetry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => {}
        "parquet" => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "format parquet is not supported yet; use csv",
            ));
        }
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format {other:?} is not one of csv"),
            ));
        }
    }
    load_device(&state, caller.tenant(), &id).await?;
    let (from, to) = time_range(q.from, q.to, |_| 0)?;
    let keys = requested_keys(&state, q.keys.as_deref(), caller.tenant(), &id);
    let cursor = Cursor {
        tsdb: state.tsdb.clone(),
        tenant: caller.tenant().to_string(),
        device: id.clone(),
        keys,
        key_index: 0,
        from,
        range_from: from,
        to,
        header_sent: false,
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        let (chunk, cursor) = match tokio::task::spawn_blocking(move || {
            let chunk = cursor.next_chunk();
            (chunk, cursor)
        })
        .await
        {
            Ok(done) => done,
            Err(error) => {
                tracing::error!(%error, "Export task failed.");
                return None;
            }
        };
        match chunk {
            Ok(Some(bytes)) => Some((Ok::<Bytes, std::io::Error>(bytes), cursor)),
            Ok(None) => None,
            Err(error) => {
                // The status line is gone; cutting the body short is how the client learns.
                tracing::error!(%error, device = %cursor.device, "Export read failed.");
                Some((
                    Err(std::io::Error::other(error.to_string())),
                    Cursor::done(cursor),
                ))
            }
        }
    });
    let filename = format!("{id}-telemetry.csv");
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    // Device ids are [A-Za-z0-9_.:-], safe inside a quoted filename.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Where the export is: the key being read and the next `from` within it.
struct Cursor {
    tsdb: Tsdb,
    tenant: String,
    device: String,
    keys: Vec<String>,
    key_index: usize,
    /// Next timestamp to read of the current key.
    from: i64,
    range_from: i64,
    to: i64,
    header_sent: bool,
}

impl Cursor {
    fn done(mut self) -> Cursor {
        self.key_index = self.keys.len();
        self.header_sent = true;
        self
    }

    /// The next piece of the body, `None` at the end. Blocking (block files).
    fn next_chunk(&mut self) -> wulian_tsdb::Result<Option<Bytes>> {
        let mut out = String::new();
        if !self.header_sent {
            self.header_sent = true;
            out.push_str("time,ts_ms,key,value\n");
        }
        while let Some(key) = self.keys.get(self.key_index) {
            let series = SeriesKey::new(self.tenant.as_str(), self.device.as_str(), key.as_str());
            let result = self
                .tsdb
                .try_range(&series, self.from, self.to, CHUNK_POINTS)?;
            for point in &result.points {
                // Formatting into a String cannot fail.
                write_row(&mut out, key, point).unwrap_or_default();
            }
            match result.points.last() {
                Some(last) if result.truncated => self.from = last.ts + 1,
                _ => {
                    self.key_index += 1;
                    self.from = self.range_from;
                }
            }
            if !result.points.is_empty() {
                break;
            }
        }
        Ok(if out.is_empty() {
            None
        } else {
            Some(Bytes::from(out))
        })
    }
}

fn write_row(out: &mut String, key: &str, point: &Point) -> std::fmt::Result {
    write!(out, "{},{},{},", iso8601(point.ts), point.ts, key)?;
    match &point.value {
        Value::F64(v) => write!(out, "{v}")?,
        Value::I64(v) => write!(out, "{v}")?,
        Value::Bool(v) => write!(out, "{v}")?,
        Value::Str(s) => csv_field(out, s),
    }
    out.push('\n');
    Ok(())
}

/// RFC 4180: quoted (quotes doubled) when it holds a comma, quote or line break.
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for ms since the epoch (0 ..= year 9999).
pub fn iso8601(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn csv_quoting() {
        let mut s = String::new();
        csv_field(&mut s, "a,\"b\"");
        assert_eq!(s, "\"a,\"\"b\"\"\"");
    }
}

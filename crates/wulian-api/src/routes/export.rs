//! Telemetry export as a download, streamed: `GET /api/v1/devices/{id}/telemetry/export` (one
//! device) and `GET /api/v1/telemetry/export` (a group: `devices=a,b`, or `profile=` and/or
//! `label=k:v`, as the fleet queries select it).
//!
//! The store is read in windows of [`CHUNK_POINTS`] points of one series with a moving `from`
//! (devices in id order, each device's keys in order, each key ascending), and each window is
//! encoded and sent before the next is read, so memory stays bounded whatever the range:
//!
//! - CSV: `time,ts_ms,key,value` rows for a device, `device_id,time,ts_ms,key,value` for a
//!   group (RFC 3339 UTC time with ms, ms since the epoch). Gzip-compressed on the fly with
//!   `compression=gzip` (a `.csv.gz` file) or when the client sends `Accept-Encoding: gzip`
//!   (`Content-Encoding: gzip`); `compression=none` turns the latter off.
//! - Parquet: row groups of at least one window's worth of rows (small series are gathered
//!   into one group), each written into a buffer that is flushed to the body; the footer
//!   goes last. Columns `device_id` (string), `key` (string), `ts`
//!   (int64 TIMESTAMP(MILLIS, UTC)), and one nullable value column per kind: `value_double`,
//!   `value_int`, `value_bool`, `value_string` (exactly one is set per row, so integers keep
//!   all 64 bits). Pages are snappy-compressed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flate2::write::GzEncoder;
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use serde::Deserialize;
use utoipa::IntoParams;
use wulian_tsdb::{Point, SeriesKey, Tsdb, Value};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Caller};
use crate::routes::devices::load_device;
use crate::routes::telemetry::{requested_keys, time_range};
use crate::state::AppState;

/// Points read from the store per step (one chunk of the response body; a Parquet row group
/// holds at least this many rows, unless it is the last).
pub const CHUNK_POINTS: usize = 5_000;

/// The Parquet schema of both exports.
pub const PARQUET_SCHEMA: &str = "message telemetry {
    required binary device_id (STRING);
    required binary key (STRING);
    required int64 ts (TIMESTAMP(MILLIS,true));
    optional double value_double;
    optional int64 value_int;
    optional boolean value_bool;
    optional binary value_string (STRING);
}";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Comma-separated keys; all of the device's keys when absent.
    pub keys: Option<String>,
    /// Start, inclusive, ms since the epoch. Default: 0 (everything).
    pub from: Option<i64>,
    /// End, exclusive, ms since the epoch. Default: now (plus one ms).
    pub to: Option<i64>,
    /// `csv` (default) or `parquet`.
    pub format: Option<String>,
    /// CSV only: `gzip` (a `.csv.gz` file) or `none`. Default: gzip as a transfer encoding
    /// when the request's `Accept-Encoding` allows it, else none.
    pub compression: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GroupExportQuery {
    /// Comma-separated device ids (at most 1000). Not with `profile`/`label`.
    pub devices: Option<String>,
    /// Devices of this profile.
    pub profile: Option<String>,
    /// Comma-separated `key:value` pairs a device must all carry.
    pub label: Option<String>,
    /// Comma-separated keys; every key of each device when absent.
    pub keys: Option<String>,
    /// Start, inclusive, ms since the epoch. Default: 0 (everything).
    pub from: Option<i64>,
    /// End, exclusive, ms since the epoch. Default: now (plus one ms).
    pub to: Option<i64>,
    /// `csv` (default) or `parquet`.
    pub format: Option<String>,
    /// CSV only: `gzip` (a `.csv.gz` file) or `none`. Default: gzip as a transfer encoding
    /// when the request's `Accept-Encoding` allows it, else none.
    pub compression: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/telemetry/export", tag = "telemetry",
    params(("id" = String, Path, description = "Device id"), ExportQuery), security(("api_key" = [])),
    responses((status = 200, content_type = "text/csv", body = String,
        description = "`time,ts_ms,key,value` rows (RFC 3339 UTC time, ms since the epoch), by key then time; \
            gzip-compressed with `compression=gzip` (`application/gzip`) or `Accept-Encoding: gzip` \
            (`Content-Encoding: gzip`). With `format=parquet`: `application/vnd.apache.parquet`, columns \
            device_id, key, ts (TIMESTAMP millis UTC), value_double, value_int, value_bool, value_string."),
        (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn export_telemetry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let encoding = Encoding::plan(q.format.as_deref(), q.compression.as_deref(), &headers)?;
    load_device(&state, caller.tenant(), &id).await?;
    let (from, to) = time_range(q.from, q.to, |_| 0)?;
    let keys = requested_keys(&state, q.keys.as_deref(), caller.tenant(), &id);
    let rows = Rows::new(
        state.tsdb.clone(),
        caller.tenant(),
        vec![id.clone()],
        Some(keys),
        (from, to),
    );
    respond(rows, encoding, false, &format!("{id}-telemetry"))
}

#[utoipa::path(get, path = "/api/v1/telemetry/export", tag = "telemetry",
    params(GroupExportQuery), security(("api_key" = [])),
    responses((status = 200, content_type = "text/csv", body = String,
        description = "`device_id,time,ts_ms,key,value` rows by device, key, time; compression and \
            `format=parquet` as for one device's export."),
        (status = 400, body = Problem),
        (status = 404, body = Problem, description = "A device listed in `devices` does not exist")))]
pub async fn export_group(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<GroupExportQuery>,
) -> ApiResult<Response> {
    let encoding = Encoding::plan(q.format.as_deref(), q.compression.as_deref(), &headers)?;
    let (from, to) = time_range(q.from, q.to, |_| 0)?;
    let devices = crate::routes::fleet::resolve_group(
        &state,
        caller.tenant(),
        q.devices.as_deref(),
        q.profile.as_deref(),
        q.label.as_deref(),
    )
    .await?;
    let keys = q
        .keys
        .as_deref()
        .map(|k| crate::routes::fleet::split_list(Some(k)));
    if keys.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::bad_request("invalid_query", "keys lists no key"));
    }
    let rows = Rows::new(
        state.tsdb.clone(),
        caller.tenant(),
        devices,
        keys,
        (from, to),
    );
    respond(rows, encoding, true, "telemetry-export")
}

/// What the body is: CSV (plain, a gzip file, or gzip as a transfer encoding) or Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Csv,
    CsvGzipFile,
    CsvGzipTransfer,
    Parquet,
}

impl Encoding {
    fn plan(
        format: Option<&str>,
        compression: Option<&str>,
        headers: &HeaderMap,
    ) -> ApiResult<Encoding> {
        let gzip = match compression {
            None => None,
            Some("gzip") => Some(true),
            Some("none") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("compression {other:?} is not one of gzip, none"),
                ));
            }
        };
        match format.unwrap_or("csv") {
            "csv" => Ok(match gzip {
                Some(true) => Encoding::CsvGzipFile,
                Some(false) => Encoding::Csv,
                None if accepts_gzip(headers) => Encoding::CsvGzipTransfer,
                None => Encoding::Csv,
            }),
            "parquet" if gzip == Some(true) => Err(ApiError::bad_request(
                "invalid_query",
                "compression applies to csv; parquet pages are snappy-compressed already",
            )),
            "parquet" => Ok(Encoding::Parquet),
            other => Err(ApiError::bad_request(
                "invalid_query",
                format!("format {other:?} is not one of csv, parquet"),
            )),
        }
    }
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// Streams the export as the response body, with its content type and file name.
fn respond(rows: Rows, encoding: Encoding, group: bool, stem: &str) -> ApiResult<Response> {
    let encoder = Encoder::new(encoding, group)
        .map_err(|e| ApiError::internal("Starting an export failed.", &e))?;
    let export = Export {
        rows,
        encoder,
        finished: false,
    };
    let stream = futures_util::stream::unfold(export, |mut export| async move {
        let (chunk, export) = match tokio::task::spawn_blocking(move || {
            let chunk = export.next_chunk();
            (chunk, export)
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
            Ok(Some(bytes)) => Some((Ok::<Bytes, std::io::Error>(bytes), export)),
            Ok(None) => None,
            Err(error) => {
                // The status line is gone; cutting the body short is how the client learns.
                tracing::error!(%error, "Export failed.");
                Some((Err(std::io::Error::other(error.to_string())), export.stop()))
            }
        }
    });
    let (content_type, extension) = match encoding {
        Encoding::Csv | Encoding::CsvGzipTransfer => ("text/csv; charset=utf-8", "csv"),
        Encoding::CsvGzipFile => ("application/gzip", "csv.gz"),
        Encoding::Parquet => ("application/vnd.apache.parquet", "parquet"),
    };
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if encoding == Encoding::CsvGzipTransfer {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if encoding != Encoding::Parquet {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    // Device ids are [A-Za-z0-9_.:-], safe inside a quoted filename.
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{stem}.{extension}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A failure while the body is being produced.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("reading the store: {0}")]
    Store(#[from] wulian_tsdb::Error),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("compressing: {0}")]
    Io(#[from] std::io::Error),
}

/// One window of one series.
struct Window {
    device: String,
    key: String,
    points: Vec<Point>,
}

/// Where the export is: the device and key being read and the next `from` within the key.
struct Rows {
    tsdb: Tsdb,
    tenant: String,
    devices: Vec<String>,
    /// The keys asked for; `None` = every key of each device.
    wanted: Option<Vec<String>>,
    device_index: usize,
    /// The current device's keys, listed when the device is reached.
    keys: Option<Vec<String>>,
    key_index: usize,
    from: i64,
    range: (i64, i64),
}

impl Rows {
    fn new(
        tsdb: Tsdb,
        tenant: &str,
        devices: Vec<String>,
        wanted: Option<Vec<String>>,
        range: (i64, i64),
    ) -> Rows {
        Rows {
            tsdb,
            tenant: tenant.to_string(),
            devices,
            wanted,
            device_index: 0,
            keys: None,
            key_index: 0,
            from: range.0,
            range,
        }
    }

    /// The next non-empty window, `None` at the end. Blocking (block files).
    fn next_window(&mut self) -> wulian_tsdb::Result<Option<Window>> {
        while let Some(device) = self.devices.get(self.device_index) {
            let keys = match &self.keys {
                Some(keys) => keys,
                None => {
                    let keys = match &self.wanted {
                        Some(k) => k.clone(),
                        None => self.tsdb.keys(&self.tenant, device),
                    };
                    self.key_index = 0;
                    self.from = self.range.0;
                    self.keys.insert(keys)
                }
            };
            let Some(key) = keys.get(self.key_index) else {
                self.device_index += 1;
                self.keys = None;
                continue;
            };
            let series = SeriesKey::new(self.tenant.as_str(), device.as_str(), key.as_str());
            let result = self
                .tsdb
                .try_range(&series, self.from, self.range.1, CHUNK_POINTS)?;
            match result.points.last() {
                Some(last) if result.truncated => self.from = last.ts + 1,
                _ => {
                    self.key_index += 1;
                    self.from = self.range.0;
                }
            }
            if !result.points.is_empty() {
                return Ok(Some(Window {
                    device: series.device,
                    key: series.key,
                    points: result.points,
                }));
            }
        }
        Ok(None)
    }
}

/// Turns windows into body bytes.
enum Encoder {
    Csv {
        /// Group exports carry a `device_id` column.
        group: bool,
        header_sent: bool,
        gzip: Option<GzEncoder<Vec<u8>>>,
    },
    Parquet {
        writer: Option<SerializedFileWriter<Vec<u8>>>,
        /// Windows waiting for their row group: small series are gathered until a group
        /// holds at least [`CHUNK_POINTS`] rows, so that a group export of many small series
        /// does not make one row group (and footer entry) per series.
        pending: Vec<Window>,
        pending_rows: usize,
    },
}

impl Encoder {
    fn new(encoding: Encoding, group: bool) -> Result<Encoder, ExportError> {
        Ok(match encoding {
            Encoding::Csv => Encoder::Csv {
                group,
                header_sent: false,
                gzip: None,
            },
            Encoding::CsvGzipFile | Encoding::CsvGzipTransfer => Encoder::Csv {
                group,
                header_sent: false,
                gzip: Some(GzEncoder::new(Vec::new(), flate2::Compression::default())),
            },
            Encoding::Parquet => {
                let schema = parquet::schema::parser::parse_message_type(PARQUET_SCHEMA)?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_created_by("wulian".to_string())
                    .build();
                Encoder::Parquet {
                    writer: Some(SerializedFileWriter::new(
                        Vec::new(),
                        Arc::new(schema),
                        Arc::new(props),
                    )?),
                    pending: Vec::new(),
                    pending_rows: 0,
                }
            }
        })
    }

    /// The bytes for one window (possibly none yet: gzip and row groups may hold them back).
    fn encode(&mut self, w: Window) -> Result<Vec<u8>, ExportError> {
        match self {
            Encoder::Csv {
                group,
                header_sent,
                gzip,
            } => {
                let mut text = String::new();
                if !*header_sent {
                    *header_sent = true;
                    text.push_str(csv_header(*group));
                }
                for point in &w.points {
                    if *group {
                        csv_field(&mut text, &w.device);
                        text.push(',');
                    }
                    // Formatting into a String cannot fail.
                    write_row(&mut text, &w.key, point).unwrap_or_default();
                }
                Ok(match gzip {
                    Some(gz) => {
                        gz.write_all(text.as_bytes())?;
                        std::mem::take(gz.get_mut())
                    }
                    None => text.into_bytes(),
                })
            }
            Encoder::Parquet {
                writer,
                pending,
                pending_rows,
            } => {
                *pending_rows += w.points.len();
                pending.push(w);
                if *pending_rows < CHUNK_POINTS {
                    return Ok(Vec::new());
                }
                let writer = writer.as_mut().ok_or_else(|| {
                    ExportError::Parquet(ParquetError::General("writer already closed".into()))
                })?;
                write_row_group(writer, pending)?;
                pending.clear();
                *pending_rows = 0;
                // Everything the row group wrote is final: hand it to the body.
                writer.flush()?;
                Ok(std::mem::take(writer.inner_mut()))
            }
        }
    }

    /// The last bytes: the CSV header of an empty export, the gzip trailer, the Parquet footer.
    fn finish(&mut self) -> Result<Vec<u8>, ExportError> {
        match self {
            Encoder::Csv {
                group,
                header_sent,
                gzip,
            } => {
                let header = if *header_sent { "" } else { csv_header(*group) };
                *header_sent = true;
                Ok(match gzip.take() {
                    Some(mut gz) => {
                        gz.write_all(header.as_bytes())?;
                        gz.finish()?
                    }
                    None => header.as_bytes().to_vec(),
                })
            }
            Encoder::Parquet {
                writer, pending, ..
            } => match writer.take() {
                Some(mut w) => {
                    if !pending.is_empty() {
                        write_row_group(&mut w, pending)?;
                        pending.clear();
                    }
                    Ok(w.into_inner()?)
                }
                None => Ok(Vec::new()),
            },
        }
    }
}

fn csv_header(group: bool) -> &'static str {
    if group {
        "device_id,time,ts_ms,key,value\n"
    } else {
        "time,ts_ms,key,value\n"
    }
}

/// One row group: the windows' rows, the value in the column of its kind.
fn write_row_group(
    writer: &mut SerializedFileWriter<Vec<u8>>,
    windows: &[Window],
) -> Result<(), ParquetError> {
    let n: usize = windows.iter().map(|w| w.points.len()).sum();
    let (mut device, mut key, mut ts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut doubles = Vec::new();
    let mut ints = Vec::new();
    let mut bools = Vec::new();
    let mut strings = Vec::new();
    // Definition levels: 1 where the column holds the row's value, 0 where it is null.
    let mut levels = [vec![0i16; n], vec![0i16; n], vec![0i16; n], vec![0i16; n]];
    let mut row = 0;
    for w in windows {
        let d = ByteArray::from(w.device.as_str());
        let k = ByteArray::from(w.key.as_str());
        for p in &w.points {
            device.push(d.clone());
            key.push(k.clone());
            ts.push(p.ts);
            match &p.value {
                Value::F64(v) => {
                    doubles.push(*v);
                    levels[0][row] = 1;
                }
                Value::I64(v) => {
                    ints.push(*v);
                    levels[1][row] = 1;
                }
                Value::Bool(v) => {
                    bools.push(*v);
                    levels[2][row] = 1;
                }
                Value::Str(s) => {
                    strings.push(ByteArray::from(s.as_str()));
                    levels[3][row] = 1;
                }
            }
            row += 1;
        }
    }
    let mut rg = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut col) = rg.next_column()? {
        match index {
            0 => col
                .typed::<ByteArrayType>()
                .write_batch(&device, None, None)?,
            1 => col.typed::<ByteArrayType>().write_batch(&key, None, None)?,
            2 => col.typed::<Int64Type>().write_batch(&ts, None, None)?,
            3 => col
                .typed::<DoubleType>()
                .write_batch(&doubles, Some(&levels[0]), None)?,
            4 => col
                .typed::<Int64Type>()
                .write_batch(&ints, Some(&levels[1]), None)?,
            5 => col
                .typed::<BoolType>()
                .write_batch(&bools, Some(&levels[2]), None)?,
            _ => col
                .typed::<ByteArrayType>()
                .write_batch(&strings, Some(&levels[3]), None)?,
        };
        col.close()?;
        index += 1;
    }
    rg.close()?;
    Ok(())
}

/// A streaming export: rows in, encoded chunks out.
struct Export {
    rows: Rows,
    encoder: Encoder,
    finished: bool,
}

impl Export {
    /// Stops after a failure: the stream ends with the error it just sent.
    fn stop(mut self) -> Export {
        self.rows.device_index = self.rows.devices.len();
        self.finished = true;
        self
    }

    /// The next piece of the body, `None` at the end. Blocking (block files).
    fn next_chunk(&mut self) -> Result<Option<Bytes>, ExportError> {
        if self.finished {
            return Ok(None);
        }
        while let Some(window) = self.rows.next_window()? {
            let bytes = self.encoder.encode(window)?;
            if !bytes.is_empty() {
                return Ok(Some(Bytes::from(bytes)));
            }
        }
        self.finished = true;
        let bytes = self.encoder.finish()?;
        Ok((!bytes.is_empty()).then(|| Bytes::from(bytes)))
    }
}

fn write_row(out: &mut String, key: &str, point: &Point) -> std::fmt::Result {
    write!(out, "{},{},", iso8601(point.ts), point.ts)?;
    csv_field(out, key);
    out.push(',');
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
    wulian_common::time::rfc3339_ms(ms)
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

    #[test]
    fn accept_encoding() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&h)
        };
        assert!(with("gzip"));
        assert!(with("br, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn encoding_plan() {
        let h = HeaderMap::new();
        assert_eq!(Encoding::plan(None, None, &h).unwrap(), Encoding::Csv);
        assert_eq!(
            Encoding::plan(Some("csv"), Some("gzip"), &h).unwrap(),
            Encoding::CsvGzipFile
        );
        assert_eq!(
            Encoding::plan(Some("parquet"), None, &h).unwrap(),
            Encoding::Parquet
        );
        assert!(Encoding::plan(Some("parquet"), Some("gzip"), &h).is_err());
        assert!(Encoding::plan(Some("xml"), None, &h).is_err());
        assert!(Encoding::plan(None, Some("br"), &h).is_err());
    }
}

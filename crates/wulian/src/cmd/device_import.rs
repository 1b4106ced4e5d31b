//! `wulian devices import FILE`: bulk provisioning from CSV or JSON, in batches through
//! `POST /api/v1/devices/import`, with a progress bar. Errors are reported per input line; the
//! good lines are still imported. The new tokens (shown once) go to `--tokens-out` as CSV.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::client::Client;

/// Devices sent per request (the API takes at most 1,000).
const BATCH: usize = 500;

/// One device to create and the input line it came from.
struct Entry {
    line: usize,
    device: Value,
}

/// The devices parsed from a file, and the lines that could not be parsed (line, why).
type Parsed = (Vec<Entry>, Vec<(usize, String)>);

/// What an import did, for the summary and the exit code.
pub struct ImportSummary {
    pub created: usize,
    pub failed: usize,
}

pub fn import(
    client: &Client,
    file: &Path,
    tokens_out: Option<&PathBuf>,
) -> anyhow::Result<ImportSummary> {
    let text = std::fs::read_to_string(file).with_context(|| format!("Read {}", file.display()))?;
    let is_csv = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (entries, mut bad) = if is_csv {
        parse_csv(&text)?
    } else {
        parse_json(&text)?
    };
    for (line, why) in &bad {
        eprintln!("line {line}: {why}");
    }

    let mut tokens: Box<dyn Write> = match tokens_out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("Create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    writeln!(tokens, "id,token")?;

    let bar = ProgressBar::new(entries.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} devices  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut created = 0;
    for chunk in entries.chunks(BATCH) {
        let body = json!({"devices": chunk.iter().map(|e| &e.device).collect::<Vec<_>>()});
        let result = client.post("/devices/import", &body)?;
        for c in result["created"].as_array().into_iter().flatten() {
            writeln!(
                tokens,
                "{},{}",
                c["id"].as_str().unwrap_or_default(),
                c["token"].as_str().unwrap_or_default()
            )?;
            created += 1;
        }
        for e in result["errors"].as_array().into_iter().flatten() {
            let index = e["index"].as_u64().and_then(|i| usize::try_from(i).ok());
            let line = index
                .and_then(|i| chunk.get(i))
                .map_or(0, |entry| entry.line);
            let why = format!(
                "{} ({})",
                e["detail"].as_str().unwrap_or_default(),
                e["code"].as_str().unwrap_or_default()
            );
            bar.suspend(|| eprintln!("line {line}: {why}"));
            bad.push((line, why));
        }
        bar.inc(chunk.len() as u64);
    }
    tokens.flush()?;
    bar.finish_and_clear();
    eprintln!(
        "Imported {created} device(s); {} line(s) failed.{}",
        bad.len(),
        if tokens_out.is_some() {
            " Tokens are in the --tokens-out file, shown nowhere else."
        } else {
            ""
        }
    );
    Ok(ImportSummary {
        created,
        failed: bad.len(),
    })
}

/// CSV with a header: `id` required; `name`, `profile`, `labels` (`k=v;k2=v2`), `attributes`
/// (a JSON object), `disabled` optional.
fn parse_csv(text: &str) -> anyhow::Result<Parsed> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader.headers().context("Read the CSV header")?.clone();
    if !headers.iter().any(|h| h == "id") {
        bail!(
            "the CSV header must name an `id` column (and may name name, profile, labels, attributes, disabled)"
        );
    }
    for h in &headers {
        if !matches!(
            h,
            "id" | "name" | "profile" | "labels" | "attributes" | "disabled"
        ) {
            bail!(
                "unknown CSV column {h:?}: columns are id, name, profile, labels, attributes, disabled"
            );
        }
    }
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                bad.push((line, format!("unreadable CSV: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        match csv_device(&headers, &record) {
            Ok(device) => entries.push(Entry { line, device }),
            Err(why) => bad.push((line, why)),
        }
    }
    Ok((entries, bad))
}

fn csv_device(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Value, String> {
    let mut device = serde_json::Map::new();
    for (name, value) in headers.iter().zip(record.iter()) {
        if value.is_empty() {
            continue;
        }
        let v = match name {
            "labels" => {
                let mut labels = BTreeMap::new();
                for pair in value.split(';').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("label {pair:?} must be key=value"))?;
                    labels.insert(k.trim().to_string(), v.trim().to_string());
                }
                json!(labels)
            }
            "attributes" => {
                serde_json::from_str(value).map_err(|e| format!("attributes is not JSON: {e}"))?
            }
            "disabled" => json!(
                value
                    .parse::<bool>()
                    .map_err(|_| format!("disabled must be true or false, not {value:?}"))?
            ),
            _ => json!(value),
        };
        device.insert(name.to_string(), v);
    }
    Ok(Value::Object(device))
}

/// A JSON array of device objects, or JSON lines (one object per line).
fn parse_json(text: &str) -> anyhow::Result<Parsed> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text).context("Parse the JSON array")?;
        // Array entries are numbered from 1: there are no meaningful lines in a JSON document.
        return Ok((
            items
                .into_iter()
                .enumerate()
                .map(|(i, device)| Entry {
                    line: i + 1,
                    device,
                })
                .collect(),
            Vec::new(),
        ));
    }
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(device) if device.is_object() => entries.push(Entry {
                line: i + 1,
                device,
            }),
            Ok(_) => bad.push((i + 1, "not a JSON object".to_string())),
            Err(e) => bad.push((i + 1, format!("invalid JSON: {e}"))),
        }
    }
    Ok((entries, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_devices_and_bad_rows_are_reported_by_line() {
        let text = "id,name,profile,labels,attributes\n\
                    lock-1,Lock 1,lock,zone=north;fleet=a,{\"fw\":\"1.0\"}\n\
                    lock-2,,lock,,\n\
                    lock-3,x,lock,nolabel,\n\
                    lock-4,x,lock,,{bad\n";
        let (entries, bad) = parse_csv(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, 2);
        assert_eq!(
            entries[0].device,
            json!({"id": "lock-1", "name": "Lock 1", "profile": "lock",
                   "labels": {"zone": "north", "fleet": "a"}, "attributes": {"fw": "1.0"}})
        );
        assert_eq!(
            entries[1].device,
            json!({"id": "lock-2", "profile": "lock"})
        );
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [4, 5]);
        assert!(parse_csv("name\nx\n").is_err(), "an id column is required");
        assert!(parse_csv("id,colour\nx,red\n").is_err());
    }

    #[test]
    fn json_arrays_and_lines() {
        let (entries, bad) = parse_json("[{\"id\": \"a\"}, {\"id\": \"b\"}]").unwrap();
        assert_eq!((entries.len(), bad.len()), (2, 0));
        let (entries, bad) =
            parse_json("{\"id\": \"a\"}\n\n[1]\n{oops\n{\"id\": \"b\"}\n").unwrap();
        assert_eq!(entries.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 5]);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [3, 4]);
    }
}

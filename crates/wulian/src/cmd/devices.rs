//! `wulian devices ...`: the device registry, telemetry and commands from the command line.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{ApiArgs, Client, path_segment, print_json};

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: DevicesCommand,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// List devices (a table; --json for JSON).
    List {
        #[arg(long)]
        profile: Option<String>,
        /// key:value; repeat for several (all must match).
        #[arg(long)]
        label: Vec<String>,
        /// Substring of id or name.
        #[arg(long)]
        search: Option<String>,
        /// Devices per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Follow next_cursor through every page.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Create a device; prints it with its token (shown once).
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        /// key=value; repeat for several.
        #[arg(long)]
        label: Vec<String>,
        /// A JSON object.
        #[arg(long)]
        attributes: Option<String>,
    },
    /// Show a device.
    Get { id: String },
    /// Change a device's name, profile, labels (replaced whole), attributes or disabled flag.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        /// key=value; repeat for several. Replaces all labels.
        #[arg(long)]
        label: Vec<String>,
        #[arg(long)]
        attributes: Option<String>,
        #[arg(long)]
        disabled: Option<bool>,
    },
    /// Delete a device with its telemetry and commands.
    Delete { id: String },
    /// Create many devices from a CSV file (header: id,name,profile,labels,attributes,disabled;
    /// labels as k=v;k2=v2) or JSON (an array, or one object per line). Bad lines are reported
    /// and skipped; the rest are created. Prints `id,token` CSV (tokens are shown once).
    Import {
        file: std::path::PathBuf,
        /// Write the `id,token` CSV here instead of standard output.
        #[arg(long)]
        tokens_out: Option<std::path::PathBuf>,
    },
    /// Issue a new token; the old one stops working at once, or after --grace-s seconds.
    RotateToken {
        id: String,
        /// Keep the current token valid this many seconds (devices switch over without downtime).
        #[arg(long, default_value_t = 0)]
        grace_s: u32,
    },
    /// Query telemetry (raw points, or buckets with --agg and --interval).
    Telemetry {
        id: String,
        /// Comma-separated keys.
        #[arg(long)]
        keys: Option<String>,
        /// ms since epoch.
        #[arg(long)]
        from: Option<i64>,
        #[arg(long)]
        to: Option<i64>,
        /// min, max, avg, sum, count, first, last.
        #[arg(long)]
        agg: Option<String>,
        /// Bucket width in ms.
        #[arg(long)]
        interval: Option<i64>,
    },
    /// The latest value of each key.
    Latest { id: String },
    /// Send a command and wait for the device's answer.
    Command {
        id: String,
        name: String,
        /// Parameters as JSON.
        #[arg(long, default_value = "{}")]
        params: String,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Command history of a device, newest first.
    Commands { id: String },
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        DevicesCommand::List {
            profile,
            label,
            search,
            limit,
            all,
            json,
        } => list(&client, profile, label, search, limit, all, json),
        DevicesCommand::Create {
            id,
            name,
            profile,
            label,
            attributes,
        } => {
            let mut body = json!({"id": id, "labels": parse_labels(&label)?});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if let Some(profile) = profile {
                body["profile"] = json!(profile);
            }
            if let Some(attributes) = attributes {
                body["attributes"] = parse_json("--attributes", &attributes)?;
            }
            let device = client.post("/devices", &body)?;
            print_json(&device);
            eprintln!("The token above is shown once; store it on the device now.");
            Ok(())
        }
        DevicesCommand::Get { id } => {
            print_json(&client.get(&device_path(&id), &[])?);
            Ok(())
        }
        DevicesCommand::Update {
            id,
            name,
            profile,
            label,
            attributes,
            disabled,
        } => {
            let mut body = json!({});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if let Some(profile) = profile {
                body["profile"] = json!(profile);
            }
            if !label.is_empty() {
                body["labels"] = json!(parse_labels(&label)?);
            }
            if let Some(attributes) = attributes {
                body["attributes"] = parse_json("--attributes", &attributes)?;
            }
            if let Some(disabled) = disabled {
                body["disabled"] = json!(disabled);
            }
            print_json(&client.patch(&device_path(&id), &body)?);
            Ok(())
        }
        DevicesCommand::Delete { id } => {
            client.delete(&device_path(&id), &[])?;
            eprintln!("Deleted device {id}.");
            Ok(())
        }
        DevicesCommand::Import { file, tokens_out } => {
            let summary = super::device_import::import(&client, &file, tokens_out.as_ref())?;
            if summary.failed > 0 {
                bail!(
                    "{} line(s) were not imported ({} device(s) were)",
                    summary.failed,
                    summary.created
                );
            }
            Ok(())
        }
        DevicesCommand::RotateToken { id, grace_s } => {
            let path = format!("{}/token?grace_s={grace_s}", device_path(&id));
            print_json(&client.post(&path, &json!({}))?);
            if grace_s == 0 {
                eprintln!("The token above is shown once; the old token no longer works.");
            } else {
                eprintln!(
                    "The token above is shown once; the old token keeps working for {grace_s} s."
                );
            }
            Ok(())
        }
        DevicesCommand::Telemetry {
            id,
            keys,
            from,
            to,
            agg,
            interval,
        } => {
            let mut query = Vec::new();
            if let Some(keys) = keys {
                query.push(("keys", keys));
            }
            if let Some(from) = from {
                query.push(("from", from.to_string()));
            }
            if let Some(to) = to {
                query.push(("to", to.to_string()));
            }
            if let Some(agg) = agg {
                query.push(("agg", agg));
            }
            if let Some(interval) = interval {
                query.push(("interval", interval.to_string()));
            }
            print_json(&client.get(&format!("{}/telemetry", device_path(&id)), &query)?);
            Ok(())
        }
        DevicesCommand::Latest { id } => {
            print_json(&client.get(&format!("{}/telemetry/latest", device_path(&id)), &[])?);
            Ok(())
        }
        DevicesCommand::Command {
            id,
            name,
            params,
            timeout_ms,
        } => {
            let body = json!({"name": name, "params": parse_json("--params", &params)?, "timeout_ms": timeout_ms});
            let command = client.post(&format!("{}/commands", device_path(&id)), &body)?;
            print_json(&command);
            match command["status"].as_str() {
                Some("succeeded") => Ok(()),
                Some(status) => bail!("command finished as {status}"),
                None => bail!("the API returned no command status"),
            }
        }
        DevicesCommand::Commands { id } => {
            print_json(&client.get(&format!("{}/commands", device_path(&id)), &[])?);
            Ok(())
        }
    }
}

fn device_path(id: &str) -> String {
    format!("/devices/{}", path_segment(id))
}

fn list(
    client: &Client,
    profile: Option<String>,
    labels: Vec<String>,
    search: Option<String>,
    limit: u32,
    all: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(profile) = profile {
        query.push(("profile", profile));
    }
    if !labels.is_empty() {
        query.push(("label", labels.join(",")));
    }
    if let Some(search) = search {
        query.push(("search", search));
    }
    let mut devices: Vec<Value> = Vec::new();
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.clone();
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page = client.get("/devices", &q)?;
        total = page["total"].as_u64().unwrap_or(total);
        devices.extend(page["devices"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if !all || cursor.is_none() {
            break;
        }
    }
    if as_json {
        print_json(&json!({"devices": devices, "total": total, "next_cursor": cursor}));
        return Ok(());
    }
    println!(
        "{:<32} {:<24} {:<16} {:<9} LABELS",
        "ID", "NAME", "PROFILE", "CONNECTED"
    );
    for d in &devices {
        let labels: Vec<String> = d["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<32} {:<24} {:<16} {:<9} {}",
            d["id"].as_str().unwrap_or(""),
            d["name"].as_str().unwrap_or(""),
            d["profile"].as_str().unwrap_or(""),
            if d["connected"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            labels.join(",")
        );
    }
    eprintln!(
        "{} of {} devices{}",
        devices.len(),
        total,
        if cursor.is_some() {
            " (more: --all)"
        } else {
            ""
        }
    );
    Ok(())
}

fn parse_labels(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("label {p:?} must be key=value"),
        })
        .collect()
}

fn parse_json(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

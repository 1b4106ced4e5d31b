//! `wulian profiles|rules|alarms|firmware ...`: device profiles, rules, alarms and OTA firmware
//! from the command line, over the same REST API applications use.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::client::{ApiArgs, Client, path_segment, print_json};

#[derive(Debug, Args)]
pub struct ProfilesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: ProfilesCommand,
}

#[derive(Debug, Subcommand)]
enum ProfilesCommand {
    /// List the tenant's profiles.
    List,
    /// Show a profile (its JSON is also its export format).
    Get {
        id: String,
    },
    /// Create a profile from a JSON file, or replace it when it exists.
    Apply {
        file: PathBuf,
    },
    /// Create a profile from an Azure DTDL interface or an Alibaba TSL document.
    Import {
        id: String,
        file: PathBuf,
        /// dtdl or tsl.
        #[arg(long)]
        format: String,
    },
    Delete {
        id: String,
    },
}

pub fn run_profiles(args: ProfilesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        ProfilesCommand::List => print_json(&client.get("/profiles", &[])?),
        ProfilesCommand::Get { id } => {
            print_json(&client.get(&format!("/profiles/{}", path_segment(&id)), &[])?)
        }
        ProfilesCommand::Apply { file } => {
            let body = read_json(&file)?;
            print_json(&apply(&client, "/profiles", &body)?);
        }
        ProfilesCommand::Import { id, file, format } => {
            let document = read_json(&file)?;
            let body = json!({"id": id, "format": format, "document": document});
            let imported = client.post("/profiles/import", &body)?;
            for warning in imported["warnings"].as_array().into_iter().flatten() {
                eprintln!("skipped: {}", warning.as_str().unwrap_or_default());
            }
            print_json(&imported["profile"]);
        }
        ProfilesCommand::Delete { id } => {
            client.delete(&format!("/profiles/{}", path_segment(&id)), &[])?;
            eprintln!("Deleted profile {id}.");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// List the tenant's rules with their counters.
    List,
    Get {
        id: String,
    },
    /// Create a rule from a JSON file ({"id", "sql", "actions", ...}), or replace it.
    Apply {
        file: PathBuf,
    },
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Try a rule file on sample messages (a JSON array of {"device_id", "payload", ...}).
    DryRun {
        rule: PathBuf,
        samples: PathBuf,
    },
}

pub fn run_rules(args: RulesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let rule_path = |id: &str| format!("/rules/{}", path_segment(id));
    match args.command {
        RulesCommand::List => print_json(&client.get("/rules", &[])?),
        RulesCommand::Get { id } => print_json(&client.get(&rule_path(&id), &[])?),
        RulesCommand::Apply { file } => print_json(&apply(&client, "/rules", &read_json(&file)?)?),
        RulesCommand::Enable { id } => {
            print_json(&client.post(&format!("{}/enable", rule_path(&id)), &json!({}))?)
        }
        RulesCommand::Disable { id } => {
            print_json(&client.post(&format!("{}/disable", rule_path(&id)), &json!({}))?)
        }
        RulesCommand::Delete { id } => {
            client.delete(&rule_path(&id), &[])?;
            eprintln!("Deleted rule {id}.");
        }
        RulesCommand::DryRun { rule, samples } => {
            let rule = read_json(&rule)?;
            let body = json!({"sql": rule["sql"], "actions": rule["actions"], "samples": read_json(&samples)?});
            print_json(&client.post("/rules/dry-run", &body)?);
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AlarmsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: AlarmsCommand,
}

#[derive(Debug, Subcommand)]
enum AlarmsCommand {
    /// List alarms, newest first (open ones by default).
    List {
        /// open, active, acknowledged, cleared, or all.
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long)]
        device: Option<String>,
    },
    Ack {
        id: String,
    },
    Clear {
        id: String,
    },
}

pub fn run_alarms(args: AlarmsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        AlarmsCommand::List { status, device } => {
            let mut query = Vec::new();
            if status != "all" {
                query.push(("status", status));
            }
            if let Some(device) = device {
                query.push(("device_id", device));
            }
            let alarms = client.get("/alarms", &query)?;
            for a in alarms.as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<13} {:<14} {:<24} {:<16} x{}",
                    a["id"].as_str().unwrap_or_default(),
                    a["severity"].as_str().unwrap_or_default(),
                    a["status"].as_str().unwrap_or_default(),
                    a["type"].as_str().unwrap_or_default(),
                    a["device_id"].as_str().unwrap_or_default(),
                    a["count"]
                );
            }
        }
        AlarmsCommand::Ack { id } => {
            print_json(&client.post(&format!("/alarms/{}/ack", path_segment(&id)), &json!({}))?)
        }
        AlarmsCommand::Clear { id } => {
            print_json(&client.post(&format!("/alarms/{}/clear", path_segment(&id)), &json!({}))?)
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct FirmwareArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: FirmwareCommand,
}

#[derive(Debug, Subcommand)]
enum FirmwareCommand {
    /// List firmware images.
    List,
    /// Upload an image (hashed here first; the server checks the hash and signs it).
    Upload {
        file: PathBuf,
        #[arg(long)]
        profile: String,
        #[arg(long)]
        version: String,
    },
    /// Start a campaign: --profile and/or --label k=v and/or --device id select the devices.
    Rollout {
        firmware_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        label: Vec<String>,
        #[arg(long)]
        device: Vec<String>,
        /// Percent of the devices updating at once.
        #[arg(long, default_value_t = 10)]
        batch_percent: u32,
        /// Abort above this share of failed devices.
        #[arg(long, default_value_t = 20)]
        failure_threshold_pct: u32,
    },
    /// Show a campaign's progress.
    Status { campaign_id: String },
}

pub fn run_firmware(args: FirmwareArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        FirmwareCommand::List => print_json(&client.get("/firmware", &[])?),
        FirmwareCommand::Upload {
            file,
            profile,
            version,
        } => {
            let len = std::fs::metadata(&file)
                .with_context(|| format!("Read {}", file.display()))?
                .len();
            let sha256 = hash_file(&file, len)?;
            let bar = progress(len, "uploading");
            let reader = bar.wrap_read(
                std::fs::File::open(&file).with_context(|| format!("Open {}", file.display()))?,
            );
            let query = [
                ("profile", profile),
                ("version", version),
                ("sha256", sha256),
            ];
            let stored = client.post_stream("/firmware", &query, reader, len);
            bar.finish_and_clear();
            print_json(&stored?);
        }
        FirmwareCommand::Rollout {
            firmware_id,
            name,
            profile,
            label,
            device,
            batch_percent,
            failure_threshold_pct,
        } => {
            let mut labels = serde_json::Map::new();
            for pair in &label {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--label {pair:?} must be key=value"))?;
                labels.insert(k.to_string(), Value::String(v.to_string()));
            }
            let body = json!({
                "name": name.unwrap_or_else(|| format!("rollout of {firmware_id}")),
                "firmware_id": firmware_id,
                "target": {"profile": profile, "labels": labels, "devices": device},
                "batch_percent": batch_percent,
                "failure_threshold_pct": failure_threshold_pct,
            });
            print_json(&client.post("/ota/campaigns", &body)?);
        }
        FirmwareCommand::Status { campaign_id } => print_json(&client.get(
            &format!("/ota/campaigns/{}", path_segment(&campaign_id)),
            &[],
        )?),
    }
    Ok(())
}

/// POSTs a new resource, or PUTs it over an existing one with the same id.
fn apply(client: &Client, collection: &str, body: &Value) -> anyhow::Result<Value> {
    let id = body["id"]
        .as_str()
        .context("the file needs an \"id\"")?
        .to_string();
    match client.post(collection, body) {
        Err(e) if e.to_string().contains("already_exists") => {
            client.put(&format!("{collection}/{}", path_segment(&id)), body)
        }
        other => other,
    }
}

fn read_json(file: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("Read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("Parse {} as JSON", file.display()))
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// SHA-256 of a file, with a progress bar (large images take a while).
fn hash_file(file: &PathBuf, len: u64) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let bar = progress(len, "hashing");
    let mut reader = bar
        .wrap_read(std::fs::File::open(file).with_context(|| format!("Open {}", file.display()))?);
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher).context("Hash the image")?;
    bar.finish_and_clear();
    Ok(hex::encode(hasher.finalize()))
}

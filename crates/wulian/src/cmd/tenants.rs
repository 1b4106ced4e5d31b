//! `wulian tenants ...` and `wulian keys ...`.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{ApiArgs, Client, path_segment, print_json};

#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TenantsCommand,
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// List tenants.
    List,
    /// Create a tenant.
    Create {
        name: String,
        /// A slug; generated when absent.
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete a tenant with all its keys, devices, telemetry and commands.
    Delete { id: String },
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List API keys (never their secrets).
    List {
        /// Another tenant's keys (installation admin only).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create an API key; prints its secret once.
    Create {
        name: String,
        /// admin, read_write or read_only.
        #[arg(long, default_value = "read_write")]
        scope: String,
        /// Create it in another tenant (installation admin only).
        #[arg(long)]
        tenant: Option<String>,
        /// MQTT topic policy as JSON, e.g.
        /// '{"subscribe": {"allow": ["devices/+/telemetry"]}, "publish": {"deny": ["#"]}}';
        /// the scope's default when absent (docs/mqtt.md).
        #[arg(long)]
        mqtt_policy: Option<String>,
    },
    /// Revoke an API key.
    Revoke {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub fn run_tenants(args: TenantsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        TenantsCommand::List => print_json(&client.get("/tenants", &[])?),
        TenantsCommand::Create { name, id } => {
            print_json(&client.post("/tenants", &json!({"name": name, "id": id}))?);
        }
        TenantsCommand::Delete { id } => {
            client.delete(&format!("/tenants/{}", path_segment(&id)), &[])?;
            eprintln!("Deleted tenant {id}.");
        }
    }
    Ok(())
}

pub fn run_keys(args: KeysArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        KeysCommand::List { tenant } => {
            let query: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
            print_json(&client.get("/api-keys", &query)?);
        }
        KeysCommand::Create {
            name,
            scope,
            tenant,
            mqtt_policy,
        } => {
            let mqtt_policy: Option<serde_json::Value> = mqtt_policy
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .context("--mqtt-policy is not JSON")?;
            print_json(&client.post(
                "/api-keys",
                &json!({"name": name, "scope": scope, "tenant": tenant, "mqtt_policy": mqtt_policy}),
            )?);
            eprintln!("The secret above is shown once; only its hash is stored.");
        }
        KeysCommand::Revoke { id, tenant } => {
            let query: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
            client.delete(&format!("/api-keys/{}", path_segment(&id)), &query)?;
            eprintln!("Revoked API key {id}.");
        }
    }
    Ok(())
}

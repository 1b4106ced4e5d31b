//! `wulian ca ...`: a tenant's CA certificates for device certificates (mutual TLS), and
//! revoking a device's certificate. Calls the REST API like any application.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{ApiArgs, Client, path_segment, print_json};

#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Register a CA certificate (PEM file): devices with certificates it issued, whose
    /// common name is their device id, may connect over TLS without a token.
    Add {
        /// The CA certificate, PEM (e.g. ca.pem from `wulian certs ca`).
        cert: PathBuf,
        #[arg(long, default_value = "devices")]
        name: String,
    },
    /// List the tenant's CA certificates.
    List,
    /// Remove a CA certificate; devices it issued certificates for can no longer use them.
    Delete { id: String },
    /// Revoke one certificate of a device, by serial number or SHA-256 fingerprint (hex).
    Revoke {
        device_id: String,
        #[arg(long, required_unless_present = "fingerprint")]
        serial: Option<String>,
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

pub fn run(args: CaArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        CaCommand::Add { cert, name } => {
            let pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("Read {}", cert.display()))?;
            print_json(&client.post(
                "/ca-certificates",
                &json!({"name": name, "certificate": pem}),
            )?);
        }
        CaCommand::List => print_json(&client.get("/ca-certificates", &[])?),
        CaCommand::Delete { id } => {
            client.delete(&format!("/ca-certificates/{}", path_segment(&id)), &[])?;
            eprintln!("Removed CA certificate {id}.");
        }
        CaCommand::Revoke {
            device_id,
            serial,
            fingerprint,
        } => {
            print_json(&client.post(
                &format!("/devices/{}/certificates/revoke", path_segment(&device_id)),
                &json!({"serial": serial, "fingerprint": fingerprint}),
            )?);
        }
    }
    Ok(())
}

//! The command line: `wulian serve`, `wulian config`, and the API clients (`devices`,
//! `tenants`, `keys`, `users`, `ca`) that call the same REST API applications use, and `certs`, which
//! makes test certificates locally.

mod ca;
mod certs;
mod client;
mod config;
mod demo;
mod device_import;
mod devices;
mod lifecycle;
mod serve;
mod tenants;
mod users;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wulian",
    version,
    about = "wulian: an IoT platform in one binary (MQTT broker, device registry, telemetry store, REST API)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: MQTT broker, REST API and embedded storage in one process.
    Serve(serve::ServeArgs),
    /// Run the platform with a simulated bike-share city: fences, 2,000 locks over MQTT and
    /// riders renting through the rider API; prints the URLs to open.
    Demo(demo::DemoArgs),
    /// Print or check configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Manage devices, their tokens, telemetry and commands (calls the REST API).
    Devices(devices::DevicesArgs),
    /// Manage tenants (installation admin key).
    Tenants(tenants::TenantsArgs),
    /// Manage API keys.
    Keys(tenants::KeysArgs),
    /// Manage people's accounts for the web console (admin API key).
    Users(users::UsersArgs),
    /// Register CA certificates for device certificates (mutual TLS); revoke device certificates.
    Ca(ca::CaArgs),
    /// Make a test CA, server and device certificates for TLS (no server needed).
    Certs(certs::CertsArgs),
    /// Device profiles and their thing models.
    Profiles(lifecycle::ProfilesArgs),
    /// Rules: apply from files, enable, disable, dry-run.
    Rules(lifecycle::RulesArgs),
    /// Alarms: list, acknowledge, clear.
    Alarms(lifecycle::AlarmsArgs),
    /// OTA: upload firmware (with a progress bar), start and follow campaigns.
    Firmware(lifecycle::FirmwareArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Config(cmd) => config::run(cmd),
        Command::Devices(args) => devices::run(args),
        Command::Tenants(args) => tenants::run_tenants(args),
        Command::Keys(args) => tenants::run_keys(args),
        Command::Users(args) => users::run(args),
        Command::Ca(args) => ca::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Profiles(args) => lifecycle::run_profiles(args),
        Command::Rules(args) => lifecycle::run_rules(args),
        Command::Alarms(args) => lifecycle::run_alarms(args),
        Command::Firmware(args) => lifecycle::run_firmware(args),
    }
}

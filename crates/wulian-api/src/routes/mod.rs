//! Handlers, one module per resource.

pub mod alarms;
pub mod certificates;
pub mod commands;
pub mod devices;
pub mod export;
pub mod fleet;
pub mod lineprotocol;
pub mod live;
pub mod ota;
pub mod profiles;
pub mod provisioning;
pub mod rules;
pub mod session;
pub mod system;
pub mod telemetry;
pub mod tenants;
pub mod twins;
pub mod users;
pub mod zones;

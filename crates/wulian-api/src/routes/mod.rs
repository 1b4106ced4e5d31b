//! Handlers, one module per resource.

pub mod certificates;
pub mod commands;
pub mod devices;
pub mod export;
pub mod fleet;
pub mod lineprotocol;
pub mod system;
pub mod telemetry;
pub mod tenants;

//! Dockless bike sharing built on wulian's public APIs: bikes are devices with the smart-lock
//! profile (docs/bike-lock-contract.md), unlocks are commands, positions come from telemetry.
//!
//! Modules with one job each:
//! - [`fence`]: parking fences and other zones, a spatial index answering "where is this bike".
//! - [`cells`]: H3 cells, supply and demand per cell and hour, rebalancing suggestions.
//! - [`pricing`]: pricing plans and fares (integer minor units), mapped onto GBFS.
//! - [`ledger`]: the double-entry ledger of riders' money.
//! - [`riders`]: rider accounts and the rules regulation sets for them.
//! - [`gbfs`], [`mds`]: the open-data feeds for the city.

pub mod api;
pub mod cells;
pub mod city;
pub mod db;
pub mod error;
pub mod feeds;
pub mod fence;
pub mod fleet;
pub mod gbfs;
pub mod ids;
pub mod ledger;
pub mod lock;
mod locks;
pub mod mds;
pub mod ops;
pub mod pricing;
pub mod riders;
pub mod service;
pub mod system;
mod tripflow;
pub mod trips;
mod upkeep;
pub mod vehicle_events;
pub mod wallet;
pub mod workorders;

pub use error::{Error, Result};
pub use service::{BikeShare, Platform};

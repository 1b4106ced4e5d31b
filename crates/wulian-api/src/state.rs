//! What every handler can reach. Cloned per request, so everything is behind an `Arc` or is a
//! cheap handle.

use std::sync::Arc;

use wulian_broker::Broker;
use wulian_ingest::{CommandService, Pipeline};
use wulian_registry::Registry;
use wulian_tsdb::Tsdb;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub tsdb: Tsdb,
    pub pipeline: Arc<Pipeline>,
    pub commands: Arc<CommandService>,
    pub broker: Broker,
}

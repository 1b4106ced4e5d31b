//! Small pieces that several wulian crates share and that belong to none of them: the device
//! topic contract (so the broker wiring, the ingest pipeline and the command service agree on
//! one spelling of every topic), wall-clock time in milliseconds, group commit for SQLite,
//! and Prometheus text for histograms.

pub mod blocking;
pub mod group_commit;
pub mod metrics;
pub mod time;
pub mod topics;

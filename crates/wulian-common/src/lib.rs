//! Small pieces that several wulian crates share and that belong to none of them: the device
//! topic contract (so the broker wiring, the ingest pipeline and the command service agree on
//! one spelling of every topic) and wall-clock time in milliseconds.

pub mod blocking;
pub mod time;
pub mod topics;

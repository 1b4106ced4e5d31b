//! The write-ahead log: every accepted write and device deletion is appended here, and made
//! durable per the durability policy, before it reaches the in-memory head or is acknowledged.
//!
//! - `segment`: segment files and their header; the active log (append, fsync, rotate, remove).
//! - `record`: framing (`[len][crc32][payload]`) and the payload encoding.
//! - `writer`: the single writer thread and its group commit.
//! - `replay`: reading the log back at open, with the torn-tail policy.

pub(crate) mod record;
pub(crate) mod replay;
pub(crate) mod segment;
pub(crate) mod writer;

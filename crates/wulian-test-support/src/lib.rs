//! Fixtures that tests of several crates share, so each suite does not grow its own copy.
//! Only ever a `[dev-dependencies]` entry: nothing here ships in the binary.

pub mod certs;

//! Random identifiers and tokens (from the OS's randomness; tokens must not be guessable, so
//! there is no fallback).

use crate::error::{Error, Result};

/// `bytes` random bytes as hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// `prefix-` + 16 random hex digits.
pub fn new_id(prefix: &str) -> Result<String> {
    Ok(format!("{prefix}-{}", random_hex(8)?))
}

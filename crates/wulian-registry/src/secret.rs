//! Secrets (API keys, device tokens) and random ids.
//!
//! A secret is a prefix plus 32 random bytes from the OS, hex-encoded. Only `SHA-256(secret)`
//! (hex) is stored. A slow password hash (argon2, bcrypt) exists to make guessing *low-entropy,
//! human-chosen* passwords expensive; these secrets carry 256 bits of entropy, so a fast hash is
//! already infeasible to invert, and a slow one would only make every MQTT CONNECT and HTTP
//! request cost tens of milliseconds of CPU on small machines — a denial-of-service lever.
//!
//! API keys are looked up by their hash through a unique index; the B-tree walk's timing can
//! only reveal information about hash prefixes, which an attacker cannot steer toward a valid
//! key. Device tokens are loaded by device id and compared with `subtle` in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Result;

/// Every API key secret starts with this, so callers can tell keys from device tokens.
pub const API_KEY_PREFIX: &str = "wlk_";
/// Every device token starts with this.
pub const DEVICE_TOKEN_PREFIX: &str = "wld_";
/// Every profile provisioning secret (claim provisioning) starts with this.
pub const PROVISIONING_SECRET_PREFIX: &str = "wlp_";

const SECRET_BYTES: usize = 32;
/// Longer presented secrets are rejected before hashing (ours are 68 characters).
pub(crate) const MAX_PRESENTED_SECRET_LEN: usize = 256;

/// `n` random bytes from the OS, hex-encoded.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// A fresh secret: `prefix` + 64 hex characters.
pub(crate) fn new_secret(prefix: &str) -> Result<String> {
    Ok(format!("{prefix}{}", random_hex(SECRET_BYTES)?))
}

/// What is stored for a secret: SHA-256, hex-encoded.
pub(crate) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two stored-format hashes without data-dependent timing.
pub(crate) fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A new command id: `c-` + 16 hex characters.
///
/// Infallible because callers build `Command` values with it: should the OS fail to provide
/// randomness (it practically never does), the id is derived from the clock, the process id and
/// a counter instead — still unique, which is all a command id needs (it is not a secret).
pub fn new_command_id() -> String {
    match random_hex(8) {
        Ok(hex) => format!("c-{hex}"),
        Err(_) => {
            use std::sync::atomic::{AtomicU64, Ordering};
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let seed = format!(
                "{nanos}:{}:{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let digest = Sha256::digest(seed.as_bytes());
            format!("c-{}", hex::encode(&digest[..8]))
        }
    }
}

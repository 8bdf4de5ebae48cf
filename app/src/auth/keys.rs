//! Secrets Flowdeck hands out (API keys and session tokens): generation and hashing.
//!
//! Only SHA-256 digests are stored. The secrets carry 256 random bits, so a slow password
//! hash would add nothing but latency on every request.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every API key starts with this, so people and secret scanners can recognise one.
pub const API_KEY_PREFIX: &str = "fdk_";

/// How many leading characters of a key are kept in clear to tell keys apart.
const SHOWN_PREFIX_LEN: usize = 12;

/// A newly generated secret: the clear text (shown once) and what gets stored.
pub struct NewSecret {
    /// The secret itself; never stored or logged.
    pub clear: String,
    /// SHA-256 of `clear`.
    pub hash: Vec<u8>,
    /// The first characters of `clear`, safe to display.
    pub shown_prefix: String,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn secret(clear: String) -> NewSecret {
    let hash = hash_secret(&clear);
    let shown_prefix = clear.chars().take(SHOWN_PREFIX_LEN).collect();
    NewSecret {
        clear,
        hash,
        shown_prefix,
    }
}

/// A fresh API key: `fdk_` followed by 64 hex digits (256 bits).
pub fn new_api_key() -> NewSecret {
    secret(format!("{API_KEY_PREFIX}{}", random_hex()))
}

/// Every per-run callback credential starts with this.
pub const CALLBACK_TOKEN_PREFIX: &str = "fdc_";

/// A fresh callback credential for one run: `fdc_` followed by 64 hex digits.
pub fn new_callback_token() -> NewSecret {
    secret(format!("{CALLBACK_TOKEN_PREFIX}{}", random_hex()))
}

/// A fresh session token for a browser cookie.
pub fn new_session_token() -> NewSecret {
    secret(random_hex())
}

/// The digest under which a secret is stored and looked up.
pub fn hash_secret(clear: &str) -> Vec<u8> {
    Sha256::digest(clear.as_bytes()).to_vec()
}

/// Whether `candidate` has the shape of an API key, checked before any database work.
pub fn looks_like_api_key(candidate: &str) -> bool {
    has_shape(candidate, API_KEY_PREFIX)
}

/// Whether `candidate` has the shape of a run's callback credential.
pub fn looks_like_callback_token(candidate: &str) -> bool {
    has_shape(candidate, CALLBACK_TOKEN_PREFIX)
}

fn has_shape(candidate: &str, prefix: &str) -> bool {
    candidate
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_prefixed_random_and_hash_to_what_is_stored() {
        let a = new_api_key();
        let b = new_api_key();
        assert!(a.clear.starts_with(API_KEY_PREFIX));
        assert!(looks_like_api_key(&a.clear));
        assert_ne!(a.clear, b.clear);
        assert_eq!(a.hash, hash_secret(&a.clear));
        assert_eq!(a.shown_prefix, a.clear[..SHOWN_PREFIX_LEN]);
        assert!(
            !a.hash
                .windows(4)
                .any(|w| a.clear.as_bytes().windows(4).any(|c| c == w))
        );
    }

    #[test]
    fn malformed_keys_are_recognised_without_a_lookup() {
        assert!(!looks_like_api_key("fdk_short"));
        assert!(!looks_like_api_key(&format!("xyz_{}", "a".repeat(64))));
        assert!(!looks_like_api_key(&format!("fdk_{}", "g".repeat(64))));
    }
}

//! Secrets Flowdeck hands out (API keys, run callback credentials, session tokens):
//! generation, recognition and hashing.
//!
//! API keys and callback credentials look like `fdk_` + 32 random base62 characters
//! (190 bits) + a 6-character base62 CRC-32 of everything before it, the shape secret
//! scanners recognise (GitHub's tokens use it): a leaked key is spotted by its prefix, and
//! a mistyped one is refused by its checksum before any database work.
//!
//! Only SHA-256 digests are stored. The secrets carry at least 190 random bits, so a slow
//! password hash would add nothing but latency on every request.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// Every API key starts with this, so people and secret scanners can recognise one.
pub const API_KEY_PREFIX: &str = "fdk_";
/// Every per-run callback credential starts with this.
pub const CALLBACK_TOKEN_PREFIX: &str = "fdc_";

/// Random base62 characters in a key: 32 × log2(62) ≈ 190 bits.
const RANDOM_LEN: usize = 32;
/// Base62 digits of the CRC-32 checksum (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// How many leading characters of a key are kept in clear to tell keys apart.
const SHOWN_PREFIX_LEN: usize = 12;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A newly generated secret: the clear text (shown once) and what gets stored.
pub struct NewSecret {
    /// The secret itself; never stored or logged.
    pub clear: String,
    /// SHA-256 of `clear`.
    pub hash: Vec<u8>,
    /// The first characters of `clear`, safe to display.
    pub shown_prefix: String,
}

impl NewSecret {
    fn new(clear: String) -> Self {
        Self {
            hash: hash_secret(&clear),
            shown_prefix: clear.chars().take(SHOWN_PREFIX_LEN).collect(),
            clear,
        }
    }
}

/// `len` random base62 characters.
pub fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The 6-digit base62 CRC-32 of `body`, most significant digit first.
fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("base62 digits are ASCII")
}

fn checksummed(prefix: &str) -> NewSecret {
    let body = format!("{prefix}{}", random_base62(RANDOM_LEN));
    let sum = checksum(&body);
    NewSecret::new(body + &sum)
}

/// A fresh API key.
pub fn new_api_key() -> NewSecret {
    checksummed(API_KEY_PREFIX)
}

/// A fresh callback credential for one run.
pub fn new_callback_token() -> NewSecret {
    checksummed(CALLBACK_TOKEN_PREFIX)
}

/// A fresh session token for a browser cookie (256 bits, hex).
pub fn new_session_token() -> NewSecret {
    NewSecret::new(hex::encode(rand::random::<[u8; 32]>()))
}

/// The digest under which a secret is stored and looked up.
pub fn hash_secret(clear: &str) -> Vec<u8> {
    Sha256::digest(clear.as_bytes()).to_vec()
}

/// A value derived from a session token that pages hand to scripts for the CSRF check;
/// knowing it does not reveal the token.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("flowdeck-csrf:{session_token}").as_bytes(),
    ))
}

/// Whether `candidate` has the shape of an API key, checked before any database work.
pub fn looks_like_api_key(candidate: &str) -> bool {
    has_shape(candidate, API_KEY_PREFIX)
}

/// Whether `candidate` has the shape of a session token (64 hex digits).
pub fn looks_like_session_token(candidate: &str) -> bool {
    candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `candidate` has the shape of a run's callback credential.
pub fn looks_like_callback_token(candidate: &str) -> bool {
    has_shape(candidate, CALLBACK_TOKEN_PREFIX)
}

/// `text` with every API key and callback credential in it masked.
///
/// The prefix stays (`fdc_****`), so a reader sees a credential was there but never the
/// credential. Flow logs may print the parameters Flowdeck passed, the callback
/// credential among them.
pub fn mask(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(API_KEY_PREFIX) && !text.contains(CALLBACK_TOKEN_PREFIX) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = [API_KEY_PREFIX, CALLBACK_TOKEN_PREFIX]
        .iter()
        .filter_map(|prefix| rest.find(prefix).map(|at| (at, prefix.len())))
        .min()
    {
        let (at, prefix_len) = at;
        let after = at + prefix_len;
        let secret_len = rest[after..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        masked.push_str(&rest[..after]);
        if secret_len > 0 {
            masked.push_str("****");
        }
        rest = &rest[after + secret_len..];
    }
    masked.push_str(rest);
    std::borrow::Cow::Owned(masked)
}

/// A checksummed secret with this prefix, or one in the shape issued before checksums
/// (64 hex digits), which stays valid until it expires or is revoked.
fn has_shape(candidate: &str, prefix: &str) -> bool {
    let Some(rest) = candidate.strip_prefix(prefix) else {
        return false;
    };
    if rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return true;
    }
    rest.len() == RANDOM_LEN + CHECKSUM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()) && {
        let (body, sum) = candidate.split_at(candidate.len() - CHECKSUM_LEN);
        checksum(body) == sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_text_are_masked_and_the_rest_kept() {
        let token = new_callback_token().clear;
        let key = new_api_key().clear;
        let line = format!("params: {{'flowdeck_token': '{token}', 'key': {key}}} fdc_ and done");
        let masked = mask(&line);
        assert!(
            !masked.contains(&token[4..]) && !masked.contains(&key[4..]),
            "{masked}"
        );
        assert_eq!(
            masked,
            "params: {'flowdeck_token': 'fdc_****', 'key': fdk_****} fdc_ and done"
        );
        assert!(matches!(mask("nothing here"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn api_keys_are_prefixed_checksummed_random_and_hash_to_what_is_stored() {
        let a = new_api_key();
        let b = new_api_key();
        assert!(a.clear.starts_with(API_KEY_PREFIX));
        assert_eq!(a.clear.len(), API_KEY_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN);
        assert!(looks_like_api_key(&a.clear));
        assert!(!looks_like_callback_token(&a.clear));
        assert_ne!(a.clear, b.clear);
        assert_eq!(a.hash, hash_secret(&a.clear));
        assert_eq!(a.shown_prefix, a.clear[..SHOWN_PREFIX_LEN]);
        assert!(looks_like_callback_token(&new_callback_token().clear));
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let key = new_api_key().clear;
        for i in API_KEY_PREFIX.len()..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(!looks_like_api_key(&typo), "{typo} passed the checksum");
        }
    }

    #[test]
    fn checksum_is_six_base62_digits_of_crc32() {
        let sum = checksum("fdk_");
        assert_eq!(sum.len(), CHECKSUM_LEN);
        let value = sum.bytes().fold(0u64, |acc, d| {
            acc * 62 + BASE62.iter().position(|&c| c == d).unwrap() as u64
        });
        assert_eq!(value, u64::from(crc32fast::hash(b"fdk_")));
    }

    #[test]
    fn malformed_keys_are_recognised_without_a_lookup() {
        assert!(!looks_like_api_key("fdk_short"));
        assert!(!looks_like_api_key(&format!("xyz_{}", "a".repeat(38))));
        assert!(!looks_like_api_key(&format!("fdk_{}", "-".repeat(38))));
        assert!(!looks_like_api_key(&format!("fdk_{}", "g".repeat(64))));
        // Keys issued before checksums keep working.
        assert!(looks_like_api_key(&format!("fdk_{}", "a1".repeat(32))));
    }
}

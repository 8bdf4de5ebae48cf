//! API keys this replica has verified lately, so that a request with a known key reads
//! nothing from the database.
//!
//! A key is remembered with the replica's key version ([`crate::api::cache::Freshness::key_version`])
//! and for at most a minute, and is read again when either moves: every change to what a
//! key grants (revoked, rotated, another role) is announced to every replica by the
//! database, and a change to keys made through this replica moves the version when its
//! request ends, so a key revoked here is refused by the very next request. Its expiry is checked on
//! every use. The minute matches how often a key's last use is written. While the replica
//! is not listening for announcements, nothing is remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::db::Credential;

/// How long a verified key is believed without reading it again.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// Keys remembered at most.
const MAX_KEYS: usize = 1024;

struct Known {
    credential: Credential,
    version: u64,
    checked: Instant,
}

/// Verified API keys, by the hash of the secret.
#[derive(Default)]
pub struct KnownKeys {
    keys: Mutex<HashMap<Vec<u8>, Known>>,
}

impl KnownKeys {
    /// The credential of a key verified at this `version` less than a minute ago and still
    /// unexpired.
    pub fn get(&self, hash: &[u8], version: Option<u64>) -> Option<Credential> {
        let version = version?;
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = keys.get(hash)?;
        let live = known.version == version
            && known.checked.elapsed() < FRESH_FOR
            && known.credential.expires_at.is_none_or(|end| end > Utc::now());
        live.then(|| known.credential.clone())
    }

    /// Remembers a key read from the database after seeing `version`.
    pub fn remember(&self, hash: Vec<u8>, credential: Credential, version: Option<u64>) {
        let Some(version) = version else { return };
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.len() >= MAX_KEYS && !keys.contains_key(&hash) {
            keys.retain(|_, known| known.version == version && known.checked.elapsed() < FRESH_FOR);
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
        }
        keys.insert(
            hash,
            Known {
                credential,
                version,
                checked: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Role;

    fn credential(expires_at: Option<chrono::DateTime<Utc>>) -> Credential {
        Credential {
            id: 1,
            actor: "api-key:ci".into(),
            role: Role::Operator,
            expires_at,
            scope: Default::default(),
            budget: Default::default(),
        }
    }

    #[test]
    fn a_key_is_believed_only_at_the_version_it_was_read_at() {
        let known = KnownKeys::default();
        known.remember(b"h".to_vec(), credential(None), Some(3));
        assert_eq!(known.get(b"h", Some(3)).map(|c| c.id), Some(1));
        assert!(known.get(b"h", Some(4)).is_none(), "a key change was announced");
        assert!(known.get(b"h", None).is_none(), "not listening");
        assert!(known.get(b"other", Some(3)).is_none());
    }

    #[test]
    fn nothing_is_remembered_while_not_listening_and_an_expired_key_is_not_believed() {
        let known = KnownKeys::default();
        known.remember(b"h".to_vec(), credential(None), None);
        assert!(known.get(b"h", Some(0)).is_none());
        known.remember(
            b"e".to_vec(),
            credential(Some(Utc::now() - chrono::Duration::seconds(1))),
            Some(0),
        );
        assert!(known.get(b"e", Some(0)).is_none());
    }
}

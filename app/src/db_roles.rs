//! Least privilege in `PostgreSQL`: the server's role reads and writes rows, owns nothing.
//!
//! So it cannot alter tables, disable triggers, or update, delete or truncate the audit
//! trail. `flowdeck migrate`, connected as the schema's owner, creates that role when it is
//! missing and (re)applies its grants after every migration, through
//! `flowdeck_grant_server_role` (`migrations/20261202000014_server_role.sql`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `PostgreSQL`'s default SCRAM iteration count (`scram_iterations`).
const SCRAM_ITERATIONS: u32 = 4096;

/// Grants the server's role `role` rows only, creating it if missing; `true` if created.
///
/// A new role gets `password`, which leaves this process only as a SCRAM-SHA-256 verifier.
/// A role that is too strong or owns anything is refused.
pub async fn grant_server_role(
    db: impl sqlx::PgExecutor<'_>,
    role: &str,
    password: Option<&str>,
) -> Result<bool, sqlx::Error> {
    // Hashed here, as psql's \password does, so that neither the connection nor a server
    // log of statements and their parameters (log_statement) ever holds the password.
    let verifier = password.map(|p| scram_verifier(p, &rand::random::<[u8; 16]>(), SCRAM_ITERATIONS));
    let created = sqlx::query_scalar!(
        "SELECT flowdeck_grant_server_role($1, $2)",
        role,
        verifier.as_deref()
    )
    .fetch_one(db)
    .await?;
    Ok(created.unwrap_or(false))
}

/// The SCRAM-SHA-256 verifier `PostgreSQL` stores for `password` (RFC 5802, RFC 7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    // Like PostgreSQL, SASLprep the password, and use it as it is when that fails.
    let prepared = stringprep::saslprep(password).map_or_else(|_| password.to_owned(), |p| p.into_owned());
    let salted = pbkdf2_sha256(prepared.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (32 bytes), as SCRAM's `Hi()`.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes a key of any length");
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected value computed independently with Python's hashlib.pbkdf2_hmac and hmac, whose
    // computation matched a verifier PostgreSQL 15 stored for a known password.
    #[test]
    fn a_password_becomes_the_verifier_postgres_would_store() {
        let salt = b"0123456789abcdef";
        assert_eq!(
            scram_verifier("pencil", salt, 4096),
            "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:\
             jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
        );
    }

    #[test]
    fn the_verifier_never_contains_the_password() {
        let verifier = scram_verifier("s3cret-Passw0rd", &[7; 16], 4096);
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains("s3cret"), "{verifier}");
    }
}

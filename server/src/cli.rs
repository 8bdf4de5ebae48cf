//! The command line: `serve` (default), `migrate`, `api-key create|list|revoke`, `check`.

use anyhow::Context;
use app::auth::{Role, db as auth_db, keys};
use clap::{Parser, Subcommand};
use sqlx::PgPool;

use crate::config::Config;

const ENVIRONMENT: &str = "\
Environment:
  DATABASE_URL             PostgreSQL URL [default: postgres://postgres@127.0.0.1:5432/flowdeck]
  FLOWDECK_ADDR            listen address [default: 127.0.0.1:8000]
  FLOWDECK_LOG_FORMAT      text or json [default: text]
  FLOWDECK_SECURE_COOKIES  true when served over HTTPS [default: false]
  LEPTOS_SITE_ROOT         built site directory [default: target/site]
  RUST_LOG                 log filter [default: info]
  PREFECT_API_URL          Prefect API, e.g. http://127.0.0.1:4200/api (unset: runs wait as pending)
  PREFECT_API_KEY          Prefect Cloud API key (sent as Bearer)
  PREFECT_API_AUTH_STRING  self-hosted Prefect user:pass (sent as Basic)
  FLOWDECK_DEFAULT_DEPLOYMENT  deployment (flow/deployment or id) of pipelines naming none
  FLOWDECK_PUBLIC_URL      URL flows use to reach Flowdeck [default: http://FLOWDECK_ADDR]
  FLOWDECK_SYNC_INTERVAL_MS  how often run states are read from Prefect [default: 2000]
  FLOWDECK_STUCK_AFTER_S   flag a running run silent this long as stuck [default: 600]
  FLOWDECK_DISPATCH_LEASE_S  how long a dispatcher holds a run it is submitting [default: 120]
  FLOWDECK_AUTH_FAILURES_PER_MIN  failed authentications per source address, then 429 [default: 10]
  FLOWDECK_TRIGGERS_PER_MIN  runs one caller may trigger or retry, then 429 [default: 120]";

/// Flowdeck: control plane and live dashboard for Prefect pipelines.
#[derive(Parser)]
#[command(name = "flowdeck", version, after_help = ENVIRONMENT)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Migrate the database and serve the dashboard and API.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    ApiKey {
        /// What to do with keys.
        #[command(subcommand)]
        action: ApiKeyCommand,
    },
    /// Check the configuration and the database connection.
    Check,
}

/// API key commands.
#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; it is printed once, alone on the last line.
    Create {
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name that says who or what holds the key.
        #[arg(long)]
        name: String,
        /// Make the key stop working after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key and the browser sessions it opened.
    Revoke {
        /// The key's id, as `list` shows it.
        id: i64,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|_| "must be viewer, operator or admin".to_owned())
}

/// Creates an API key and prints it alone on the last line.
pub async fn create_api_key(
    pool: &PgPool,
    role: Role,
    name: &str,
    expires_in_days: Option<u32>,
) -> anyhow::Result<()> {
    let name = name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 100,
        "--name must be 1 to 100 characters"
    );
    let key = keys::new_api_key();
    let mut tx = pool.begin().await?;
    let id = auth_db::insert_api_key(&mut *tx, name, role, &key.shown_prefix, &key.hash, "cli").await?;
    if let Some(days) = expires_in_days {
        auth_db::set_api_key_expiry(
            &mut *tx,
            id,
            i32::try_from(days).context("--expires-in-days is too large")?,
        )
        .await?;
    }
    tx.commit().await?;
    println!("Created API key {id} \"{name}\" with role {role}. It is shown only now; store it safely:");
    println!("{}", key.clear);
    Ok(())
}

/// Prints the keys as a table.
pub async fn list_api_keys(pool: &PgPool) -> anyhow::Result<()> {
    let keys = auth_db::list_api_keys(pool).await?;
    println!(
        "{:>5}  {:<24} {:<9} {:<13} {:<8} LAST USED",
        "ID", "NAME", "ROLE", "PREFIX", "STATE"
    );
    for k in keys {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|t| t < chrono::Utc::now()) {
            "expired"
        } else {
            "active"
        };
        let last = k
            .last_used_at
            .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
        println!(
            "{:>5}  {:<24} {:<9} {:<13} {:<8} {last}",
            k.id, k.name, k.role, k.key_prefix, state
        );
    }
    Ok(())
}

/// Revokes a key.
pub async fn revoke_api_key(pool: &PgPool, id: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        auth_db::revoke_api_key(pool, id).await?,
        "no active API key has id {id}"
    );
    println!("API key {id} revoked");
    Ok(())
}

/// Checks that the configuration is usable and the database answers.
pub async fn check(config: &Config) -> anyhow::Result<()> {
    println!("listen address: {}", config.addr);
    println!("site root: {}", config.site_root);
    let pool = config.connect().await?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .context("database does not answer")?;
    println!("database: reachable");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    println!("migrations applied: {applied} (run `flowdeck migrate` to apply new ones)");
    Ok(())
}

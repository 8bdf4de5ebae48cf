//! The command line: `serve` (default), `migrate`, `api-key create|list|rotate|revoke`,
//! `check`; and the client commands (`pipelines`, `run`, `runs`: [`crate::remote`]).

use anyhow::Context;
use app::api_keys::{
    self, ApiKeyCriteria, ApiKeyFilter, CreatedApiKey, KeyState, KeyStateFilter, NewApiKey, Rotation,
};
use app::caller::{AuthMethod, Caller, Principal, Role};
use app::filter::TextFilter;
use clap::{Parser, Subcommand};
use sqlx::PgPool;

use crate::config::Config;
use crate::remote;

const ENVIRONMENT: &str = "\
Environment of the client commands (pipelines, run, runs):
  FLOWDECK_URL             the Flowdeck server, e.g. https://flowdeck.example.com
  FLOWDECK_API_KEY         the API key they send (a viewer's reads; run and cancel need an operator's)
  Exit codes: 0 done (a waited run completed), 1 a waited run failed, crashed, was cancelled
  or did not end in time, 2 usage, connection or server error.

Environment of the server commands:
  DATABASE_URL             PostgreSQL URL [default: postgres://postgres@127.0.0.1:5432/flowdeck]
  FLOWDECK_MIGRATION_DATABASE_URL  the schema owner's URL: migrate (and serve's and api-key's
                           migration step) use it, then give DATABASE_URL's role rows only,
                           creating it if missing (unset: DATABASE_URL migrates)
  FLOWDECK_ADDR            listen address [default: 127.0.0.1:8000]
  FLOWDECK_LOG_FORMAT      text or json [default: text]
  FLOWDECK_METRICS_ADDR    also serve /metrics here, without credentials (e.g. 127.0.0.1:9464)
  OTEL_EXPORTER_OTLP_ENDPOINT  export spans over OTLP/HTTP to this collector (unset: no export)
  OTEL_EXPORTER_OTLP_PROTOCOL  http/protobuf or http/json [default: http/protobuf]
  OTEL_SERVICE_NAME        service name of the spans [default: flowdeck]
  LEPTOS_SITE_ROOT         built site directory [default: target/site]
  RUST_LOG                 log filter [default: info]
  PREFECT_API_URL          Prefect API, e.g. http://127.0.0.1:4200/api (unset: runs wait as pending)
  PREFECT_API_KEY          Prefect Cloud API key (sent as Bearer)
  PREFECT_API_AUTH_STRING  self-hosted Prefect user:pass (sent as Basic)
  FLOWDECK_DEFAULT_DEPLOYMENT  deployment (flow/deployment or id) of pipelines naming none
  FLOWDECK_PUBLIC_URL      URL people and flows reach Flowdeck at [default: http://FLOWDECK_ADDR];
                           session cookies are Secure unless it is http:// on a loopback host
  FLOWDECK_SYNC_INTERVAL_MS  how often run states are read from Prefect [default: 2000]
  FLOWDECK_STUCK_AFTER_S   flag a running run silent this long as stuck [default: 600]
  FLOWDECK_DISPATCH_LEASE_S  how long a dispatcher holds a run it is submitting [default: 120]
  FLOWDECK_AUTH_FAILURES_PER_MIN  failed authentications per client address, then 429 [default: 10]
  FLOWDECK_TRIGGERS_PER_MIN  runs one caller may trigger or retry, then 429 [default: 120]
  FLOWDECK_SIGN_INS_PER_MIN  OIDC sign-ins one client address may start, then 429 [default: 30]
  FLOWDECK_TRUSTED_PROXIES  addresses and CIDR ranges of proxies whose Forwarded /
                           X-Forwarded-For name the client (e.g. 10.0.0.0/8) [default: none]
  FLOWDECK_FORWARDED_HEADER  the header those proxies append the client to: X-Forwarded-For
                           or Forwarded; the other is never read [default: X-Forwarded-For]
  FLOWDECK_CALLBACK_TTL    longest life of a run's callback credential [default: 24h]
  FLOWDECK_OIDC_ISSUER     OpenID Connect issuer URL; enables bearer JWTs and browser sign-in
  FLOWDECK_OIDC_CLIENT_ID  client id for browser sign-in (required with the issuer)
  FLOWDECK_OIDC_CLIENT_SECRET  client secret, for confidential clients (PKCE is always used)
  FLOWDECK_OIDC_AUDIENCE   aud that bearer tokens must carry [default: the client id]
  FLOWDECK_OIDC_ROLE_CLAIM claim naming the role (string or array) [default: flowdeck_role]
  FLOWDECK_OIDC_ROLE_MAP   claim values to roles, e.g. admins=admin,ops=operator
  FLOWDECK_OIDC_ALGORITHMS accepted algorithms [default: RS256,ES256,EdDSA; never none/HS*]
  FLOWDECK_OIDC_ALLOW_MISSING_NBF  accept tokens without nbf (true/false) [default: false]
  FLOWDECK_PROXY_TRUSTED_ADDRS  IPs of an identity-aware proxy whose user headers are believed
  FLOWDECK_PROXY_USER_HEADER    header naming the user [default: X-Forwarded-User]
  FLOWDECK_PROXY_GROUPS_HEADER  header listing groups [default: X-Forwarded-Groups]
  FLOWDECK_PROXY_ROLE_MAP  groups to roles, e.g. data-eng=operator,platform=admin
  FLOWDECK_RETAIN_RUN_EVENTS_DAYS    keep run events (run history) this long [default: 90]
  FLOWDECK_RETAIN_CHANGES_HOURS      keep the change feed (SSE replay) this long [default: 24]
  FLOWDECK_RETAIN_SESSIONS_DAYS      keep sessions this long after they ended [default: 7]
  FLOWDECK_RETAIN_IDEMPOTENCY_HOURS  an Idempotency-Key deduplicates this long [default: 24]
                           (the audit trail is kept unless an admin sets a retention:
                           PUT /api/audit_events/retention)";

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
    /// Migrate the database (if anything is pending) and serve the dashboard and API.
    Serve,
    /// Apply database migrations, grant the server's role (when it is not the owner), and exit.
    Migrate,
    /// Manage API keys.
    ApiKey {
        /// What to do with keys.
        #[command(subcommand)]
        action: ApiKeyCommand,
    },
    /// Check the configuration and the database connection.
    Check,
    /// Run one pruning pass now and print what it deleted, as JSON (for benchmarks).
    #[command(hide = true)]
    Prune,
    /// Client: list the pipelines of the server at `FLOWDECK_URL`.
    Pipelines {
        /// What to do.
        #[command(subcommand)]
        action: remote::PipelinesCommand,
    },
    /// Client: trigger a pipeline on the server at `FLOWDECK_URL`, and wait for its run.
    Run(remote::RunArgs),
    /// Client: read or cancel a run, print or follow its log.
    Runs {
        /// What to do.
        #[command(subcommand)]
        action: remote::RunsCommand,
    },
}

impl Command {
    /// The client command this is, or itself when it is a server command.
    pub fn into_remote(self) -> Result<remote::Command, Command> {
        match self {
            Command::Pipelines { action } => Ok(remote::Command::Pipelines(action)),
            Command::Run(args) => Ok(remote::Command::Run(args)),
            Command::Runs { action } => Ok(remote::Command::Runs(action)),
            other => Err(other),
        }
    }
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
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: Option<u32>,
        /// Revoke the active keys with this name first: for a key made again and again, such
        /// as the one `make run` prints, so they do not pile up.
        #[arg(long)]
        replace: bool,
    },
    /// List keys (never their secrets).
    List,
    /// Make a successor of a key (printed once, alone on the last line); the old key keeps
    /// working for the overlap, then expires.
    Rotate {
        /// The key's id, as `list` shows it.
        id: i64,
        /// Minutes the old key keeps working beside the new one.
        #[arg(long, default_value_t = app::api_keys::DEFAULT_OVERLAP_MINUTES)]
        overlap_minutes: u32,
    },
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

/// The CLI acts as a local admin; its actions are audited like any other.
fn local_admin() -> Caller {
    let principal = Principal {
        actor: "cli".to_owned(),
        role: Role::Admin,
        via: AuthMethod::Local,
        run_scope: None,
        key_id: None,
        scope: Default::default(),
        budget: Default::default(),
    };
    Caller::local(principal)
}

fn print_created(verb: &str, created: &CreatedApiKey) {
    let key = &created.key;
    println!(
        "{verb} API key {} \"{}\" with role {}. It is shown only now; store it safely:",
        key.id, key.name, key.role
    );
    println!("{}", created.secret);
}

/// Creates an API key and prints it alone on the last line; with `replace`, the active keys
/// of the same name are revoked first.
pub async fn create_api_key(
    pool: &PgPool,
    role: Role,
    name: &str,
    expires_in_days: Option<u32>,
    replace: bool,
) -> anyhow::Result<()> {
    let caller = local_admin();
    if replace {
        let same_name = ApiKeyFilter {
            api_keys: ApiKeyCriteria {
                name: Some(TextFilter {
                    any_: Some(vec![name.trim().to_owned()]),
                    ..TextFilter::default()
                }),
                state: Some(KeyStateFilter {
                    any_: Some(vec![KeyState::Active]),
                }),
                ..ApiKeyCriteria::default()
            },
            limit: Some(app::filter::MAX_LIMIT),
            ..ApiKeyFilter::default()
        };
        for old in api_keys::service::filter(pool, &caller, &same_name).await? {
            api_keys::service::revoke(pool, &caller, old.id).await?;
            eprintln!(
                "Revoked API key {} \"{}\", which this one replaces.",
                old.id, old.name
            );
        }
    }
    let new = NewApiKey {
        name: name.trim().to_owned(),
        role,
        expires_at: expires_in_days.map(|days| chrono::Utc::now() + chrono::Duration::days(days.into())),
        scope: Default::default(),
        budget: Default::default(),
    };
    let created = api_keys::service::create(pool, &caller, new).await?;
    print_created("Created", &created);
    Ok(())
}

/// Rotates a key and prints the new one alone on the last line.
pub async fn rotate_api_key(pool: &PgPool, id: i64, overlap_minutes: u32) -> anyhow::Result<()> {
    let caller = local_admin();
    let rotation = Rotation {
        overlap_minutes: Some(overlap_minutes),
        expires_at: None,
    };
    let created = api_keys::service::rotate(pool, &caller, id, rotation).await?;
    eprintln!("API key {id} keeps working for {overlap_minutes} more minutes.");
    print_created("Rotated into", &created);
    Ok(())
}

/// Prints the keys as a table.
pub async fn list_api_keys(pool: &PgPool) -> anyhow::Result<()> {
    let caller = local_admin();
    let filter = ApiKeyFilter {
        limit: Some(app::filter::MAX_LIMIT),
        ..ApiKeyFilter::default()
    };
    let keys = api_keys::service::filter(pool, &caller, &filter).await?;
    println!(
        "{:>5}  {:<24} {:<9} {:<13} {:<8} {:<26} LAST USED",
        "ID", "NAME", "ROLE", "PREFIX", "STATE", "EXPIRES"
    );
    let time = |t: Option<chrono::DateTime<chrono::Utc>>, none: &str| {
        t.map_or_else(|| none.to_owned(), |t| t.to_rfc3339())
    };
    for k in keys {
        println!(
            "{:>5}  {:<24} {:<9} {:<13} {:<8} {:<26} {}",
            k.id,
            k.name,
            k.role,
            k.key_prefix,
            k.state.as_str(),
            time(k.expires_at, "never"),
            time(k.last_used_at, "never"),
        );
    }
    Ok(())
}

/// Revokes a key.
pub async fn revoke_api_key(pool: &PgPool, id: i64) -> anyhow::Result<()> {
    let caller = local_admin();
    api_keys::service::revoke(pool, &caller, id).await?;
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
    match crate::schema::status(&pool).await? {
        crate::schema::Schema::UpToDate => println!("migrations: up to date"),
        crate::schema::Schema::Pending(n) => println!("migrations: {n} pending (run `flowdeck migrate`)"),
        crate::schema::Schema::Changed(v) => println!("migrations: {v} differs from this binary's"),
    }
    Ok(())
}

/// Runs one pruning pass (waiting up to a minute while another replica holds the lock) and
/// prints what it deleted and how long it took, as one JSON line.
pub async fn prune(pool: &PgPool, pruner: &app::retention::service::Pruner) -> anyhow::Result<()> {
    // Kept alive: a dropped sender would read as "stopping".
    let (_running, mut shutdown) = tokio::sync::watch::channel(false);
    for _ in 0..60 {
        let started = std::time::Instant::now();
        if let Some(pruned) = app::retention::service::prune_once(pool, pruner, &mut shutdown).await? {
            let mut line = serde_json::to_value(pruned)?;
            line["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
            println!("{line}");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    anyhow::bail!("another replica kept the pruning lock for a minute")
}

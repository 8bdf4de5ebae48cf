//! Configuration from environment variables, read once at start-up, and start-up helpers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use app::prefect::{PrefectAuth, PrefectClient};
use app::retention::service::{Pruner, Retention};
use app::runs::dispatch::DispatchConfig;
use leptos::config::LeptosOptions;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Default database: a `flowdeck` database on the local `PostgreSQL`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/flowdeck";
/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";

/// Everything Flowdeck reads from its environment.
pub struct Config {
    /// `DATABASE_URL`: the server's connection; its role needs only to read and write rows.
    pub database_url: String,
    /// `FLOWDECK_MIGRATION_DATABASE_URL`: the schema owner's connection, used only to
    /// migrate and to grant `DATABASE_URL`'s role; unset, `DATABASE_URL` migrates.
    pub migration_database_url: Option<String>,
    /// `FLOWDECK_ADDR`.
    pub addr: SocketAddr,
    /// `FLOWDECK_LOG_FORMAT=json` for JSON lines.
    pub json_logs: bool,
    /// `FLOWDECK_METRICS_ADDR`: a separate listener serving `/metrics` without credentials.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether session cookies are `Secure` with the `__Host-` prefix: always, unless
    /// `FLOWDECK_PUBLIC_URL` is plain HTTP on a loopback host (local development).
    pub secure_cookies: bool,
    /// `LEPTOS_SITE_ROOT`: where the built site (`pkg/`, assets) lives.
    pub site_root: String,
    /// `PREFECT_API_URL`; without it runs are accepted and wait as `pending`.
    pub prefect_api_url: Option<String>,
    /// `PREFECT_API_KEY` (Cloud, Bearer) or `PREFECT_API_AUTH_STRING` (self-hosted, Basic).
    prefect_auth: PrefectAuth,
    /// `FLOWDECK_DEFAULT_DEPLOYMENT`: the deployment of pipelines that name none.
    pub default_deployment: Option<String>,
    /// `PREFECT_UI_URL`: where links to flow runs point.
    pub prefect_ui_url: Option<String>,
    /// `FLOWDECK_PUBLIC_URL`: how flows reach Flowdeck [default: `http://FLOWDECK_ADDR`].
    pub public_url: String,
    /// `FLOWDECK_SYNC_INTERVAL_MS`: how often run states are read from Prefect.
    pub sync_interval: Duration,
    /// `FLOWDECK_STUCK_AFTER_S`: a running run silent this long is flagged as stuck.
    pub stuck_after: Duration,
    /// `FLOWDECK_DISPATCH_LEASE_S`: how long a claimed outbox row stays with one dispatcher.
    pub dispatch_lease: Duration,
    /// `FLOWDECK_AUTH_FAILURES_PER_MIN`, `FLOWDECK_TRIGGERS_PER_MIN`: rate limits.
    pub budgets: app::auth::limits::Budgets,
    /// `FLOWDECK_OIDC_*`: the OpenID Connect issuer, when `FLOWDECK_OIDC_ISSUER` is set.
    pub oidc: Option<app::auth::oidc::OidcConfig>,
    /// `FLOWDECK_PROXY_*`: the trusted identity-aware proxy, when
    /// `FLOWDECK_PROXY_TRUSTED_ADDRS` is set.
    pub proxy: Option<app::auth::proxy::ProxyConfig>,
    /// `FLOWDECK_WEBHOOK_ALLOW`: private ranges (CIDR, comma-separated) webhook deliveries
    /// may go to anyway, for self-hosted receivers.
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// `FLOWDECK_TRUSTED_PROXIES`: proxies whose `Forwarded`/`X-Forwarded-For` name the client.
    pub trusted_proxies: app::client_addr::TrustedProxies,
    /// `FLOWDECK_CALLBACK_TTL`: how long a run's callback credential works at most.
    pub callback_ttl: Duration,
    /// `FLOWDECK_RETAIN_*`: how long data that grows forever is kept.
    pub retention: Retention,
}

/// Seconds in an hour.
const HOUR: u64 = 3600;
/// Seconds in a day.
const DAY: u64 = 24 * HOUR;

/// The retention settings, each a whole number above 0 (a typo must not prune everything).
fn retention() -> anyhow::Result<Retention> {
    let defaults = Retention::default();
    Ok(Retention {
        run_events: kept_for(
            "FLOWDECK_RETAIN_RUN_EVENTS_DAYS",
            "days",
            DAY,
            defaults.run_events,
        )?,
        changes: kept_for("FLOWDECK_RETAIN_CHANGES_HOURS", "hours", HOUR, defaults.changes)?,
        sessions: kept_for("FLOWDECK_RETAIN_SESSIONS_DAYS", "days", DAY, defaults.sessions)?,
        idempotency_keys: kept_for(
            "FLOWDECK_RETAIN_IDEMPOTENCY_HOURS",
            "hours",
            HOUR,
            defaults.idempotency_keys,
        )?,
        oidc_logins: defaults.oidc_logins,
    })
}

/// A retention from `name`: 1 to 100 years' worth of `unit`s (`seconds` each), or `default`.
fn kept_for(name: &str, unit: &str, seconds: u64, default: Duration) -> anyhow::Result<Duration> {
    let Some(value) = var(name)? else {
        return Ok(default);
    };
    let most = 36_500 * DAY / seconds;
    let count = value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=most).contains(n))
        .with_context(|| {
            format!("{name} must be a whole number of {unit} from 1 to {most}, not {value:?}")
        })?;
    Ok(Duration::from_secs(count * seconds))
}

/// A duration such as `24h`, `90m`, `3600s`, `2d` or a bare number of seconds.
fn duration(name: &str, default: Duration) -> anyhow::Result<Duration> {
    let Some(text) = var(name)? else {
        return Ok(default);
    };
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && seconds > 0)
        .and_then(|n| n.checked_mul(seconds))
        .filter(|s| *s <= 366 * 86_400)
        .map(Duration::from_secs)
        .with_context(|| format!("{name} must be a duration from 1s to 366d, like 24h, 90m or 3600s"))
}

/// The trusted proxy settings, when `FLOWDECK_PROXY_TRUSTED_ADDRS` is set.
fn proxy() -> anyhow::Result<Option<app::auth::proxy::ProxyConfig>> {
    let Some(addrs) = var("FLOWDECK_PROXY_TRUSTED_ADDRS")? else {
        return Ok(None);
    };
    let trusted = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .with_context(|| format!("FLOWDECK_PROXY_TRUSTED_ADDRS: {a:?} is not an IP address"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let role_map = role_map("FLOWDECK_PROXY_ROLE_MAP")?;
    Ok(Some(app::auth::proxy::ProxyConfig {
        trusted,
        user_header: var("FLOWDECK_PROXY_USER_HEADER")?
            .unwrap_or_else(|| "x-forwarded-user".into())
            .to_ascii_lowercase(),
        groups_header: var("FLOWDECK_PROXY_GROUPS_HEADER")?
            .unwrap_or_else(|| "x-forwarded-groups".into())
            .to_ascii_lowercase(),
        role_map,
    }))
}

/// The OpenID Connect settings, when `FLOWDECK_OIDC_ISSUER` is set.
fn oidc(public_url: &str) -> anyhow::Result<Option<app::auth::oidc::OidcConfig>> {
    use app::auth::oidc::{OidcConfig, parse_algorithms};
    let Some(issuer) = var("FLOWDECK_OIDC_ISSUER")? else {
        return Ok(None);
    };
    url::Url::parse(&issuer).context("FLOWDECK_OIDC_ISSUER must be a URL")?;
    let client_id = var("FLOWDECK_OIDC_CLIENT_ID")?
        .context("FLOWDECK_OIDC_CLIENT_ID must be set with FLOWDECK_OIDC_ISSUER")?;
    let algorithms =
        parse_algorithms(&var("FLOWDECK_OIDC_ALGORITHMS")?.unwrap_or_else(|| "RS256,ES256,EdDSA".into()))
            .map_err(|e| anyhow::anyhow!("FLOWDECK_OIDC_ALGORITHMS: {e}"))?;
    let role_map = role_map("FLOWDECK_OIDC_ROLE_MAP")?;
    Ok(Some(OidcConfig {
        audience: var("FLOWDECK_OIDC_AUDIENCE")?.unwrap_or_else(|| client_id.clone()),
        client_secret: var("FLOWDECK_OIDC_CLIENT_SECRET")?,
        role_claim: var("FLOWDECK_OIDC_ROLE_CLAIM")?.unwrap_or_else(|| "flowdeck_role".into()),
        redirect_uri: format!("{}/auth/oidc/callback", public_url.trim_end_matches('/')),
        jwks_min_refresh: Duration::from_secs(30),
        issuer,
        client_id,
        role_map,
        algorithms,
        allow_missing_nbf: flag("FLOWDECK_OIDC_ALLOW_MISSING_NBF")?,
    }))
}

/// A per-minute budget from `name`, or `default`.
fn per_minute(name: &str, default: std::num::NonZeroU32) -> anyhow::Result<std::num::NonZeroU32> {
    var(name)?
        .map(|v| {
            v.parse()
                .with_context(|| format!("{name} must be a whole number above 0"))
        })
        .transpose()
        .map(|n| n.unwrap_or(default))
}

/// A role map (`group=role,…`): empty when unset; set, it must name at least one pair, since
/// an empty map would let role names map to themselves again.
fn role_map(name: &str) -> anyhow::Result<std::collections::HashMap<String, app::caller::Role>> {
    let Some(list) = var(name)? else {
        return Ok(std::collections::HashMap::new());
    };
    let map = app::auth::oidc::parse_role_map(&list).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    anyhow::ensure!(!map.is_empty(), "{name} is set but names no value=role pair");
    Ok(map)
}

/// A yes/no variable: `true`/`1`/`yes` or `false`/`0`/`no` (unset: no).
fn flag(name: &str) -> anyhow::Result<bool> {
    match var(name)?.as_deref().map(str::trim) {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => anyhow::bail!("{name} must be true or false, not {other:?}"),
    }
}

/// The variable `name`, `None` when unset or blank; an error names a non-UTF-8 value.
pub(crate) fn var(name: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!("{name} is not valid UTF-8"),
    }
}

/// A pool of at most `connections` to `url`, failing fast with a message that names the
/// variable `name` it came from (but never prints the URL: it may hold a password).
pub async fn connect_to(url: &str, name: &str, connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to the database given by {name}"))
}

impl Config {
    /// Reads the environment; fails with the name of the variable that is wrong.
    pub fn from_env() -> anyhow::Result<Self> {
        let addr = var("FLOWDECK_ADDR")?.unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = addr
            .parse()
            .with_context(|| format!("FLOWDECK_ADDR must be host:port, like {DEFAULT_ADDR}"))?;
        let json_logs = match var("FLOWDECK_LOG_FORMAT")?.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => anyhow::bail!("FLOWDECK_LOG_FORMAT must be text or json, not {other:?}"),
        };
        let metrics_addr = var("FLOWDECK_METRICS_ADDR")?
            .map(|v| {
                v.parse()
                    .context("FLOWDECK_METRICS_ADDR must be host:port, like 127.0.0.1:9464")
            })
            .transpose()?;
        let prefect_auth = match (var("PREFECT_API_KEY")?, var("PREFECT_API_AUTH_STRING")?) {
            (Some(_), Some(_)) => anyhow::bail!("set PREFECT_API_KEY or PREFECT_API_AUTH_STRING, not both"),
            (Some(key), None) => PrefectAuth::Bearer(key),
            (None, Some(user_pass)) => PrefectAuth::Basic(user_pass),
            (None, None) => PrefectAuth::None,
        };
        let sync_ms: u64 = var("FLOWDECK_SYNC_INTERVAL_MS")?
            .map(|v| {
                v.parse()
                    .context("FLOWDECK_SYNC_INTERVAL_MS must be a number of milliseconds")
            })
            .transpose()?
            .unwrap_or(2000);
        let stuck_s: u64 = var("FLOWDECK_STUCK_AFTER_S")?
            .map(|v| {
                v.parse()
                    .context("FLOWDECK_STUCK_AFTER_S must be a number of seconds")
            })
            .transpose()?
            .unwrap_or(600);
        let lease_s: u64 = var("FLOWDECK_DISPATCH_LEASE_S")?
            .map(|v| {
                v.parse()
                    .context("FLOWDECK_DISPATCH_LEASE_S must be a number of seconds")
            })
            .transpose()?
            .unwrap_or(120);
        let defaults = app::auth::limits::Budgets::default();
        let budgets = app::auth::limits::Budgets {
            auth_failures_per_minute: per_minute(
                "FLOWDECK_AUTH_FAILURES_PER_MIN",
                defaults.auth_failures_per_minute,
            )?,
            triggers_per_minute: per_minute("FLOWDECK_TRIGGERS_PER_MIN", defaults.triggers_per_minute)?,
            sign_ins_per_minute: per_minute("FLOWDECK_SIGN_INS_PER_MIN", defaults.sign_ins_per_minute)?,
        };
        let forwarded_header = var("FLOWDECK_FORWARDED_HEADER")?
            .map(|name| name.parse())
            .transpose()
            .map_err(|e| anyhow::anyhow!("FLOWDECK_FORWARDED_HEADER: {e}"))?
            .unwrap_or_default();
        let trusted_proxies =
            app::client_addr::TrustedProxies::parse(&var("FLOWDECK_TRUSTED_PROXIES")?.unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("FLOWDECK_TRUSTED_PROXIES: {e}"))?
                .reading(forwarded_header);
        let public_url = var("FLOWDECK_PUBLIC_URL")?.unwrap_or_else(|| format!("http://{addr}"));
        let webhook_allow = var("FLOWDECK_WEBHOOK_ALLOW")?
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .map_err(|e| anyhow::anyhow!("FLOWDECK_WEBHOOK_ALLOW: {s:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Config {
            webhook_allow,
            prefect_api_url: var("PREFECT_API_URL")?,
            prefect_ui_url: var("PREFECT_UI_URL")?,
            prefect_auth,
            default_deployment: var("FLOWDECK_DEFAULT_DEPLOYMENT")?,
            secure_cookies: app::auth::headers::cookies_must_be_secure(&public_url),
            oidc: oidc(&public_url)?,
            proxy: proxy()?,
            retention: retention()?,
            public_url: public_url.trim_end_matches('/').to_owned(),
            sync_interval: Duration::from_millis(sync_ms.max(100)),
            stuck_after: Duration::from_secs(stuck_s.max(1)),
            dispatch_lease: Duration::from_secs(lease_s.max(1)),
            budgets,
            trusted_proxies,
            callback_ttl: duration("FLOWDECK_CALLBACK_TTL", Duration::from_secs(24 * 3600))?,
            database_url: var("DATABASE_URL")?.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            migration_database_url: var("FLOWDECK_MIGRATION_DATABASE_URL")?,
            addr,
            json_logs,
            metrics_addr,
            site_root: var("LEPTOS_SITE_ROOT")?.unwrap_or_else(|| "target/site".to_owned()),
        })
    }

    /// Connects to `PostgreSQL`, failing fast with a message that names `DATABASE_URL`
    /// (but never prints it: it may hold a password).
    pub async fn connect(&self) -> anyhow::Result<PgPool> {
        connect_to(&self.database_url, "DATABASE_URL", 16).await
    }

    /// The Prefect client, when `PREFECT_API_URL` is set.
    pub fn prefect(&self) -> anyhow::Result<Option<PrefectClient>> {
        self.prefect_api_url
            .as_deref()
            .map(|url| {
                PrefectClient::new(url, self.prefect_auth.clone(), Duration::from_secs(15))
                    .context("PREFECT_API_URL, PREFECT_API_KEY or PREFECT_API_AUTH_STRING is unusable")
            })
            .transpose()
    }

    /// Prefect's UI: `PREFECT_UI_URL`, else derived from `PREFECT_API_URL`.
    pub fn prefect_ui_url(&self) -> Option<String> {
        self.prefect_ui_url
            .clone()
            .or_else(|| self.prefect_api_url.as_deref().map(app::prefect::ui_url_for))
    }

    /// The pruner, with the retention settings.
    pub fn pruner(&self) -> Pruner {
        Pruner::new(self.retention)
    }

    /// What the dispatcher needs.
    pub fn dispatch(&self) -> DispatchConfig {
        DispatchConfig {
            default_deployment: self.default_deployment.clone(),
            callback_url: format!("{}/api/status-update/", self.public_url),
            lease: self.dispatch_lease,
        }
    }

    /// What the webhook deliverer needs.
    pub fn webhooks(&self) -> app::webhooks::deliver::DeliveryConfig {
        app::webhooks::deliver::DeliveryConfig {
            public_url: self.public_url.clone(),
            links: app::prefect::PrefectLinks {
                default_deployment: self.default_deployment.clone(),
                ui_url: self.prefect_ui_url(),
            },
            allow: self.webhook_allow.clone(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Leptos' options for this deployment.
    pub fn leptos_options(&self) -> LeptosOptions {
        LeptosOptions::builder()
            .output_name("flowdeck")
            .site_root(self.site_root.as_str())
            .site_pkg_dir("pkg")
            .site_addr(self.addr)
            .build()
    }
}

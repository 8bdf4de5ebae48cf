//! The deliverer, in every replica: claims due deliveries (one replica per delivery, by
//! lease), signs them and sends them, and records each attempt.
//!
//! Signing follows Standard Webhooks: `webhook-id` (the same on every attempt),
//! `webhook-timestamp`, `webhook-signature` (`v1,` HMAC-SHA256 of `id.timestamp.body`; during
//! a secret rotation the old secret's signature too, space-separated), made with the
//! `standardwebhooks` crate. Only public addresses are sent to: each name is resolved and
//! checked when connecting (so a name that rebinds to a private address after creation
//! does not help), a URL naming an address is checked before sending, and redirects are
//! not followed. Failures are retried with exponential backoff and jitter, honouring
//! `Retry-After`, for 24 hours; `410 Gone` disables the endpoint, as does failing for 24 hours.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore, watch};

use super::db::{self, Claimed, Outcome};
use crate::prefect::PrefectLinks;

/// The channel the database wakes deliverers on.
pub const CHANNEL: &str = "flowdeck_webhooks";
/// Deliveries are retried this long after their event, then given up.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);
/// How many deliveries one replica sends at once.
const IN_FLIGHT: usize = 16;
/// How many deliveries one endpoint has in flight at once (across replicas, as far as
/// leases tell), so one slow receiver takes only a few of a replica's slots.
pub const PER_ENDPOINT: i64 = 4;
/// How long a claim lasts: longer than an attempt can take.
const LEASE_SECONDS: i32 = 60;
/// How much of a receiver's answer is kept.
const EXCERPT: usize = 512;

/// What the deliverer needs besides the database.
#[derive(Clone)]
pub struct DeliveryConfig {
    /// Flowdeck's own address, for links to run pages.
    pub public_url: String,
    /// Prefect's UI, for links to flow runs.
    pub links: PrefectLinks,
    /// Private ranges deliveries may go to anyway (`FLOWDECK_WEBHOOK_ALLOW`), for
    /// self-hosted receivers.
    pub allow: Vec<IpNet>,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// Whether an address is one deliveries must not reach.
///
/// Loopback, private, link-local
/// (where cloud metadata services live), unspecified, multicast, documentation or
/// shared (CGNAT) ranges, unless `allow` names it.
pub fn refused(ip: IpAddr, allow: &[IpNet]) -> bool {
    if allow.iter().any(|net| net.contains(&ip)) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused(IpAddr::V4(v4), allow);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves names and keeps only the addresses deliveries may reach.
struct PublicOnly {
    allow: Arc<Vec<IpNet>>,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found.into_iter().filter(|a| !refused(a.ip(), &allow)).collect();
            if kept.is_empty() {
                return Err(format!("{host} resolves only to addresses webhooks may not reach").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client deliveries are sent with: public addresses only, no redirects.
pub fn client(config: &DeliveryConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PublicOnly {
            allow: Arc::new(config.allow.clone()),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .user_agent(concat!("Flowdeck-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The body sent for a delivery: the event with links to the run page and Prefect, or
/// its Slack form. The same on every attempt.
pub fn body(claimed: &Claimed, config: &DeliveryConfig) -> Value {
    let mut event = claimed.payload.clone();
    let run_id = event["data"]["run"]["id"].as_i64();
    let flow_run = event["data"]["run"]["prefect_flow_run_id"]
        .as_str()
        .map(str::to_owned);
    if let Some(run_id) = run_id {
        event["data"]["links"] = json!({
            "run": format!("{}/runs/{run_id}", config.public_url),
            "prefect_flow_run": flow_run.and_then(|id| config.links.flow_run_url(&id)),
        });
    }
    if claimed.format != "slack" {
        return event;
    }
    let kind = event["type"].as_str().unwrap_or_default();
    let pipeline = event["data"]["pipeline"]["name"].as_str().unwrap_or("a pipeline");
    let mut text = match run_id {
        Some(id) => format!("Run {id} of {pipeline}: {kind}"),
        None => format!("{pipeline}: {kind}"),
    };
    if let Some(stage) = event["data"]["failed_stage"]["name"].as_str() {
        let error = event["data"]["failed_stage"]["error_message"]
            .as_str()
            .unwrap_or("");
        text.push_str(&format!(" at stage {stage}: {error}"));
    }
    let link = event["data"]["links"]["run"].as_str().map(str::to_owned);
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})];
    if let Some(link) = link {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("<{link}|Open the run>")}]}));
    }
    json!({"text": text, "blocks": blocks})
}

/// The `webhook-signature` header for `body`: the current secret's signature, and the
/// previous one's during a rotation.
pub fn signature(claimed: &Claimed, at: DateTime<Utc>, body: &[u8]) -> Result<String, String> {
    let mut signatures = Vec::new();
    for secret in std::iter::once(&claimed.secret).chain(claimed.previous_secret.as_ref()) {
        let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
        signatures.push(
            webhook
                .sign(&claimed.message_id, at.timestamp(), body)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(signatures.join(" "))
}

/// When to try again after `attempts` failed ones.
///
/// 5 s doubling to an hour, with ±20 %
/// jitter, or the receiver's `Retry-After` (at most an hour); `None` once that would be
/// more than a day after the event.
pub fn next_attempt(
    attempts: i32,
    retry_after: Option<u64>,
    created_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let base = 5_f64 * 2_f64.powi(attempts.clamp(0, 20)).min(720.0);
    let jittered = base * rand::rng().random_range(0.8..1.2);
    let seconds = retry_after.map_or(jittered, |s| s.min(3600) as f64);
    let at = Utc::now() + chrono::Duration::milliseconds((seconds * 1000.0) as i64);
    (at < created_at + GIVE_UP_AFTER).then_some(at)
}

/// The URL's host when it is an address, checked (names are checked when resolved).
fn literal_refused(url: &str, allow: &[IpNet]) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return true;
    };
    match parsed.host() {
        Some(url::Host::Ipv4(v4)) => refused(IpAddr::V4(v4), allow),
        Some(url::Host::Ipv6(v6)) => refused(IpAddr::V6(v6), allow),
        Some(url::Host::Domain(_)) => false,
        None => true,
    }
}

/// Sends one delivery and records the attempt.
async fn attempt(
    pool: &PgPool,
    http: &reqwest::Client,
    config: &DeliveryConfig,
    claimed: Claimed,
) -> sqlx::Result<()> {
    let started = Instant::now();
    let body = serde_json::to_vec(&body(&claimed, config)).unwrap_or_default();
    let now = Utc::now();
    let sent = async {
        if literal_refused(&claimed.url, &config.allow) {
            return Err("the URL names an address webhooks may not reach".to_owned());
        }
        let signature = signature(&claimed, now, &body)?;
        http.post(&claimed.url)
            .header("content-type", "application/json")
            .header("webhook-id", &claimed.message_id)
            .header("webhook-timestamp", now.timestamp().to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))
    }
    .await;
    let (status, retry_after, excerpt, error) = match sent {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let retry_after = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = answer.text().await.unwrap_or_default();
            let excerpt: String = text.chars().take(EXCERPT).collect();
            (Some(status), retry_after, Some(excerpt), None)
        }
        Err(error) => (None, None, None, Some(error)),
    };
    let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let delivered = status.is_some_and(|s| (200..300).contains(&s));
    let gone = status == Some(410);
    let next = if delivered || gone {
        None
    } else {
        next_attempt(claimed.attempts + 1, retry_after, claimed.created_at)
    };
    let mut tx = pool.begin().await?;
    let disable = gone.then_some("the receiver answered 410 Gone");
    let outcome = Outcome {
        status_code: status.map(i32::from),
        latency_ms,
        excerpt: excerpt.as_deref(),
        error: error.as_deref(),
    };
    db::record_attempt(&mut tx, claimed.id, &outcome, delivered, next, disable).await?;
    tx.commit().await?;
    if !delivered {
        tracing::warn!(
            webhook.endpoint = claimed.endpoint_id,
            webhook.delivery = claimed.id,
            http.status = status,
            error = error.as_deref().unwrap_or_default(),
            retry = next.is_some(),
            "webhook delivery failed"
        );
    }
    Ok(())
}

/// Why a request got no answer, without its URL (which may hold a receiver's credential).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

/// One replica's deliverer: claims due deliveries as slots free up and sends each in its
/// own task, so a slow receiver holds only its own slots (at most [`PER_ENDPOINT`]).
#[derive(Clone)]
pub struct Deliverer {
    pool: PgPool,
    http: reqwest::Client,
    config: Arc<DeliveryConfig>,
    slots: Arc<Semaphore>,
    finished: Arc<Notify>,
}

impl Deliverer {
    /// A deliverer sending with [`client`].
    pub fn new(pool: PgPool, config: DeliveryConfig) -> reqwest::Result<Self> {
        Ok(Deliverer {
            http: client(&config)?,
            pool,
            config: Arc::new(config),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            finished: Arc::new(Notify::new()),
        })
    }

    /// Claims due deliveries for the free slots and starts sending them; answers how many
    /// it started. Each attempt is recorded by its own task.
    pub async fn start_due(&self) -> sqlx::Result<usize> {
        let mut started = 0;
        loop {
            let free = self.slots.available_permits();
            if free == 0 {
                return Ok(started);
            }
            let Ok(mut slots) = self.slots.clone().try_acquire_many_owned(free as u32) else {
                return Ok(started);
            };
            let claimed = db::claim(&self.pool, free as i64, LEASE_SECONDS, PER_ENDPOINT).await?;
            let all_claimed = claimed.len() == free;
            for one in claimed {
                let Some(slot) = slots.split(1) else { break };
                started += 1;
                let this = self.clone();
                tokio::spawn(async move {
                    // Frees the slot and wakes the deliverer however the attempt ends.
                    let _done = Done {
                        _slot: slot,
                        finished: this.finished.clone(),
                    };
                    let delivery = one.id;
                    if let Err(error) = attempt(&this.pool, &this.http, &this.config, one).await {
                        // Its lease runs out and it is claimed again.
                        tracing::warn!(%error, webhook.delivery = delivery, "a webhook attempt was not recorded");
                    }
                });
            }
            if !all_claimed {
                return Ok(started);
            }
        }
    }

    /// Whether nothing is being sent.
    fn idle(&self) -> bool {
        self.slots.available_permits() == IN_FLIGHT
    }

    /// Sends until nothing is due and nothing is in flight (tests and benchmarks).
    pub async fn drain(&self) -> sqlx::Result<()> {
        loop {
            let finished = self.finished.notified();
            let started = self.start_due().await?;
            if started == 0 && self.idle() {
                return Ok(());
            }
            finished.await;
        }
    }

    /// Runs until `shutdown` turns true: woken when deliveries are queued, when a slot
    /// frees, and every second for retries that came due. At shutdown, the attempts in
    /// flight are finished and recorded (each takes at most the timeout).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        self.serve(shutdown).await;
        let all = u32::try_from(IN_FLIGHT).unwrap_or(u32::MAX);
        let finishing = self.slots.acquire_many(all);
        if tokio::time::timeout(self.config.timeout + Duration::from_secs(5), finishing)
            .await
            .is_err()
        {
            tracing::warn!("webhook attempts still in flight at shutdown are sent again after their lease");
        }
    }

    async fn serve(&self, mut shutdown: watch::Receiver<bool>) {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => listener.listen(CHANNEL).await.ok().map(|()| listener),
            Err(_) => None,
        };
        loop {
            let finished = self.finished.notified();
            tokio::select! {
                result = self.start_due() => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "webhook deliveries wait for the database");
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            // A lost connection is made again by the next `recv`; meanwhile the second's
            // poll below keeps time, so a database that is down is not asked in a tight loop.
            let wake = async {
                match listener.as_mut() {
                    Some(listener) => {
                        if listener.recv().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake => {}
                () = finished => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// A slot held by an attempt: freed, and the deliverer woken, when the attempt ends.
struct Done {
    _slot: tokio::sync::OwnedSemaphorePermit,
    finished: Arc<Notify>,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.finished.notify_one();
    }
}

/// Runs a replica's deliverer until `shutdown` turns true.
pub async fn run(pool: PgPool, config: DeliveryConfig, shutdown: watch::Receiver<bool>) {
    match Deliverer::new(pool, config) {
        Ok(deliverer) => deliverer.run(shutdown).await,
        Err(error) => tracing::error!(%error, "cannot build the webhook client; no webhooks are sent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_refused_unless_allowed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "100.64.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(refused(ip.parse().unwrap(), &[]), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(!refused(ip.parse().unwrap(), &[]), "{ip}");
        }
        let allow: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(!refused("10.1.2.3".parse().unwrap(), &allow));
        assert!(refused("192.168.1.1".parse().unwrap(), &allow));
    }

    #[test]
    fn retries_back_off_and_stop_after_a_day() {
        let now = Utc::now();
        let first = next_attempt(1, None, now).unwrap();
        assert!(first > now + chrono::Duration::seconds(7) && first < now + chrono::Duration::seconds(13));
        let honoured = next_attempt(1, Some(120), now).unwrap();
        assert!(honoured > now + chrono::Duration::seconds(119));
        assert!(next_attempt(3, None, now - chrono::Duration::hours(24)).is_none());
    }
}

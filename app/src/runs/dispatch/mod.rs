//! The dispatcher: takes accepted runs from the outbox and submits each to Prefect exactly
//! once, however often Flowdeck or Prefect fail in between.
//!
//! Exactly once rests on two things: the outbox row is committed with the run (nothing is
//! submitted that was not accepted, nothing accepted is forgotten), and every attempt for a
//! run uses the same Prefect idempotency key (stored on the run, unique across databases),
//! so a repeated `create_flow_run` returns the first flow run. Replicas claim rows with `FOR UPDATE SKIP LOCKED` and a lease.

pub mod db;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use tracing::Instrument;

use crate::prefect::{NewFlowRun, PrefectClient, PrefectError};
use crate::telemetry::TraceParent;
use crate::telemetry::metrics::metrics;

/// The channel a committed trigger notifies, waking every replica's dispatcher.
pub const OUTBOX_CHANNEL: &str = "flowdeck_outbox";

/// The flow run label Prefect reads as its OpenTelemetry parent (`traceparent`).
pub const PREFECT_TRACEPARENT_LABEL: &str = "__OTEL_TRACEPARENT";

/// What the dispatcher needs to know about this deployment of Flowdeck.
#[derive(Clone)]
pub struct DispatchConfig {
    /// Deployment used by pipelines without their own (`flow/deployment` or id).
    pub default_deployment: Option<String>,
    /// Where flows send their status callbacks (`.../api/status-update/`).
    pub callback_url: String,
    /// How long a claimed row stays with one dispatcher before another may retry it.
    pub lease: Duration,
}

/// Delay before attempt `attempts + 1`: 1 s doubling to 5 minutes.
pub fn backoff_seconds(attempts: i32) -> i32 {
    let exponent = attempts.clamp(1, 10) - 1;
    (1_i32 << exponent).min(300)
}

fn flow_parameters(run: &db::OutboxRun, callback_url: &str) -> Value {
    let mut parameters = match &run.parameters {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    parameters.insert("flowdeck_run_id".into(), json!(run.run_id));
    parameters.insert("flowdeck_callback_url".into(), json!(callback_url));
    parameters.insert("flowdeck_token".into(), json!(run.callback_token));
    parameters.insert("flowdeck_request_id".into(), json!(run.request_id));
    // Only a restart sends it (never a caller's own), so flows that do not take it still
    // accept every other run.
    match &run.resume {
        Some(resume) => parameters.insert("flowdeck_resume".into(), resume.clone()),
        None => parameters.remove("flowdeck_resume"),
    };
    Value::Object(parameters)
}

/// Deployment ids by the reference pipelines give, resolved once per dispatch pass.
type DeploymentIds = std::collections::HashMap<String, String>;

async fn submit(
    prefect: &PrefectClient,
    config: &DispatchConfig,
    deployments: &mut DeploymentIds,
    run: &db::OutboxRun,
    trigger_trace: Option<TraceParent>,
) -> Result<String, PrefectError> {
    let reference = run
        .deployment
        .as_deref()
        .or(config.default_deployment.as_deref())
        .ok_or_else(|| PrefectError::Rejected {
            status: 422,
            message: "the pipeline has no deployment and no default deployment is configured".into(),
        })?;
    let deployment_id = match deployments.get(reference) {
        Some(id) => id.clone(),
        None => {
            let id = prefect.deployment_id(reference).await?;
            deployments.insert(reference.to_owned(), id.clone());
            id
        }
    };
    let mut labels = serde_json::Map::new();
    labels.insert("flowdeck.run_id".into(), json!(run.run_id.to_string()));
    labels.insert("flowdeck.pipeline".into(), json!(run.pipeline_slug));
    if let Some(request_id) = &run.request_id {
        labels.insert("flowdeck.request_id".into(), json!(request_id));
    }
    // Prefect parents its flow run span on this label; the demo flow sends it back with
    // each callback. From inside the submit span, which continues the trigger's trace.
    if let Some(traceparent) = crate::telemetry::outgoing_traceparent(trigger_trace) {
        labels.insert(PREFECT_TRACEPARENT_LABEL.into(), json!(traceparent.to_string()));
    }
    let new_run = NewFlowRun {
        parameters: flow_parameters(run, &config.callback_url),
        idempotency_key: run.idempotency_key.clone(),
        tags: [
            Some("flowdeck".to_owned()),
            Some(format!("flowdeck-pipeline:{}", run.pipeline_slug)),
            run.request_id.as_ref().map(|id| format!("flowdeck-request:{id}")),
        ]
        .into_iter()
        .flatten()
        .collect(),
        labels,
    };
    let flow_run = prefect.create_flow_run(&deployment_id, &new_run).await?;
    Ok(flow_run.id)
}

/// Claims due outbox rows and submits them, one at a time (a SQLite-backed Prefect answers
/// 503 to concurrent writes). Returns how many rows were handled.
pub async fn dispatch_due(
    pool: &PgPool,
    prefect: &PrefectClient,
    config: &DispatchConfig,
) -> sqlx::Result<usize> {
    let lease = i32::try_from(config.lease.as_secs()).unwrap_or(120);
    let claimed = db::claim_outbox(pool, 10, lease).await?;
    let count = claimed.len();
    let mut deployments = DeploymentIds::new();
    for run in claimed {
        // The submission continues the trigger's trace and carries its request id.
        let span = tracing::info_span!(
            "submit run",
            otel.name = "submit run",
            run.id = run.run_id,
            run.attempt = run.attempts,
            request_id = run.request_id.as_deref().unwrap_or_default(),
            trace_id = tracing::field::Empty,
        );
        let trigger_trace = run.traceparent.as_deref().and_then(TraceParent::parse);
        TraceParent::adopt(&span, trigger_trace);
        submit_one(pool, prefect, config, &mut deployments, &run, trigger_trace)
            .instrument(span)
            .await?;
    }
    Ok(count)
}

async fn submit_one(
    pool: &PgPool,
    prefect: &PrefectClient,
    config: &DispatchConfig,
    deployments: &mut DeploymentIds,
    run: &db::OutboxRun,
    trigger_trace: Option<TraceParent>,
) -> sqlx::Result<()> {
    match submit(prefect, config, deployments, run, trigger_trace).await {
        Ok(flow_run_id) => {
            if db::mark_submitted(pool, run.run_id, &flow_run_id).await? {
                metrics().transition("pending", "scheduled");
            }
            tracing::info!(run.id = run.run_id, prefect.flow_run_id = %flow_run_id, "run submitted to Prefect");
        }
        Err(error) if error.is_permanent() => {
            let reason = error.to_string();
            if let Some(from) = db::fail_submission(pool, run.run_id, &reason).await? {
                metrics().transition(from.as_str(), "failed");
            }
            tracing::warn!(run.id = run.run_id, error = %reason, "Prefect refused the run; marked failed");
        }
        Err(error) => {
            let delay = backoff_seconds(run.attempts);
            db::retry_later(pool, run.run_id, delay, &error.to_string()).await?;
            tracing::warn!(run.id = run.run_id, retry.in_s = delay, error = %error, "Prefect unavailable; run stays pending");
        }
    }
    Ok(())
}

/// Runs the dispatcher until `shutdown` turns true: woken by NOTIFY after each trigger,
/// and every second for retries that came due.
pub async fn run(
    pool: PgPool,
    prefect: Arc<PrefectClient>,
    config: DispatchConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut listener) => match listener.listen(OUTBOX_CHANNEL).await {
            Ok(()) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; the dispatcher polls instead");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot LISTEN; the dispatcher polls instead");
            None
        }
    };
    loop {
        loop {
            // A shutdown abandons a submission in progress (Prefect may be retrying for
            // seconds): its claim lapses with its lease and the next dispatcher submits it
            // again with the same idempotency key, so Prefect makes no second flow run.
            let pass = tokio::select! {
                pass = dispatch_due(&pool, &prefect, &config) => pass,
                _ = shutdown.changed() => return,
            };
            match pass {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "dispatcher database error");
                    break;
                }
            }
        }
        let wake = async {
            match listener.as_mut() {
                Some(l) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), l.recv()).await;
                }
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        if crate::shutdown::stopped_while(wake, &mut shutdown).await {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_seconds(1), 1);
        assert_eq!(backoff_seconds(2), 2);
        assert_eq!(backoff_seconds(5), 16);
        assert_eq!(backoff_seconds(40), 300);
    }
}

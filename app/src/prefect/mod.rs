//! The Prefect REST client: one typed method per endpoint.
//!
//! It retries the failures that pass (429 with `Retry-After`, 5xx, timeouts, refused
//! connections, unreadable answers) and gives typed, permanent errors for the rest. Works with a self-hosted server (optional Basic
//! auth) and Prefect Cloud (Bearer key).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

mod events;
mod log_stream;
mod socket;
pub use events::{EventStream, StateChange};
pub use log_stream::LogStream;

/// Where Flowdeck points at Prefect: the deployment of pipelines that name none
/// (`FLOWDECK_DEFAULT_DEPLOYMENT`) and Prefect's UI (`PREFECT_UI_URL`, else derived from
/// the API URL), for links to flow runs.
#[derive(Debug, Clone, Default)]
pub struct PrefectLinks {
    /// The deployment of pipelines that name none.
    pub default_deployment: Option<String>,
    /// Prefect's UI.
    pub ui_url: Option<String>,
}

impl PrefectLinks {
    /// Where Prefect's UI shows a flow run.
    pub fn flow_run_url(&self, flow_run_id: &str) -> Option<String> {
        self.ui_url
            .as_ref()
            .map(|ui| format!("{}/runs/flow-run/{flow_run_id}", ui.trim_end_matches('/')))
    }
}

/// The API version Flowdeck speaks, sent on every request.
const API_VERSION: &str = "0.8.4";

/// What went wrong talking to Prefect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefectError {
    /// Prefect refused the request for good (400, 401, 403, 404, 409, 422); its message is kept.
    #[error("Prefect rejected the request ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Prefect's `detail`, or the body.
        message: String,
    },
    /// Prefect did not answer usefully after the retries (5xx, 429, timeouts, no connection).
    #[error("Prefect is unavailable: {0}")]
    Unavailable(String),
    /// Prefect answered 2xx with a body Flowdeck cannot read.
    #[error("unexpected answer from Prefect: {0}")]
    Garbage(String),
}

/// What a caller is told when Prefect fails them: Prefect's own reason when it refused
/// (a conflict with the state Prefect holds), else that the upstream service failed.
impl From<PrefectError> for crate::error::AppError {
    fn from(error: PrefectError) -> Self {
        match error {
            PrefectError::Rejected { message, .. } => Self::conflict(format!("Prefect refused: {message}")),
            PrefectError::Unavailable(_) | PrefectError::Garbage(_) => Self::Upstream {
                service: "prefect".into(),
            },
        }
    }
}

impl PrefectError {
    /// Whether trying again later cannot help. An unreadable 2xx answer is worth a retry:
    /// every write Flowdeck makes is idempotent, so repeating it cannot duplicate anything.
    pub fn is_permanent(&self) -> bool {
        matches!(self, PrefectError::Rejected { .. })
    }

    /// The error's kind, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            PrefectError::Rejected { .. } => "rejected",
            PrefectError::Unavailable(_) => "unavailable",
            PrefectError::Garbage(_) => "garbage",
        }
    }
}

/// One attempt's failure, before retries are decided.
#[derive(Debug)]
struct Attempt {
    error: PrefectError,
    retry_after: Option<Duration>,
    /// The HTTP status, when Prefect answered.
    status: Option<u16>,
}

/// How Flowdeck authenticates to Prefect.
#[derive(Clone)]
pub enum PrefectAuth {
    /// No credential (a local server).
    None,
    /// Self-hosted server with `PREFECT_SERVER_API_AUTH_STRING` (`user:pass`).
    Basic(String),
    /// Prefect Cloud API key.
    Bearer(String),
}

/// A Prefect flow run, as far as Flowdeck reads it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FlowRun {
    /// Flow run id.
    pub id: String,
    /// `SCHEDULED`, `RUNNING`, `COMPLETED`, ...
    pub state_type: Option<String>,
    /// `Scheduled`, `Late`, `Running`, ...
    pub state_name: Option<String>,
    /// The current state, with its id and message.
    pub state: Option<FlowRunState>,
}

/// A flow run's state.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FlowRunState {
    /// State id: unique per transition.
    pub id: Option<String>,
    /// State type.
    #[serde(rename = "type")]
    pub kind: String,
    /// State name.
    pub name: Option<String>,
    /// Why the run is in this state.
    pub message: Option<String>,
    /// When the run entered this state.
    #[serde(default)]
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
}

/// Prefect's answer to a state change request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SetStateResult {
    /// `ACCEPT`, `REJECT`, `ABORT` or `WAIT`.
    pub status: String,
    /// The state the run is in afterwards.
    pub state: Option<FlowRunState>,
}

/// One log line of a flow run, as Prefect stores it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PrefectLog {
    /// Log id.
    pub id: String,
    /// The logger's name (`prefect.flow_runs`, `prefect.task_runs`, …).
    pub name: String,
    /// Python's level number: 10 debug, 20 info, 30 warning, 40 error, 50 critical.
    pub level: i32,
    /// The line.
    pub message: String,
    /// When it was written.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The task run that wrote it, if a task did.
    #[serde(default)]
    pub task_run_id: Option<String>,
    /// When Prefect received it.
    #[serde(default)]
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

/// Which page of logs to read.
#[derive(Debug, Clone, Copy)]
pub struct LogPage {
    /// At most this many (Prefect's limit is 200).
    pub limit: usize,
    /// Skip this many first.
    pub offset: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// Only lines written at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// What to create a flow run with.
#[derive(Debug, Clone, Serialize)]
pub struct NewFlowRun {
    /// Parameters for the flow.
    pub parameters: Value,
    /// Makes the request safe to repeat: Prefect returns the first flow run for a key.
    pub idempotency_key: String,
    /// Tags on the flow run.
    pub tags: Vec<String>,
    /// Labels on the flow run.
    pub labels: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct Deployment {
    id: String,
}

/// A deployment, as the pipeline form and the Run dialog show it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeploymentInfo {
    /// Deployment id.
    pub id: String,
    /// Deployment name (without the flow's).
    pub name: String,
    /// The flow it runs.
    pub flow_id: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON schema of the flow's parameters.
    #[serde(default)]
    pub parameter_openapi_schema: Option<Value>,
    /// Parameters the deployment sets.
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Deserialize)]
struct Flow {
    id: String,
    name: String,
}

/// A client for one Prefect API (`PREFECT_API_URL`).
#[derive(Clone)]
pub struct PrefectClient {
    http: reqwest::Client,
    base_url: String,
    retries: usize,
    /// What the event stream's `auth` message carries: the API key or the auth string.
    socket_token: Option<String>,
}

impl PrefectClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:4200/api`), each call bounded by `timeout`.
    pub fn new(base_url: &str, auth: PrefectAuth, timeout: Duration) -> Result<Self, PrefectError> {
        let mut headers = HeaderMap::new();
        headers.insert("x-prefect-api-version", HeaderValue::from_static(API_VERSION));
        let (credential, socket_token) = match auth {
            PrefectAuth::None => (None, None),
            PrefectAuth::Basic(user_pass) => {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&user_pass);
                (Some(format!("Basic {encoded}")), Some(user_pass))
            }
            PrefectAuth::Bearer(key) => (Some(format!("Bearer {key}")), Some(key)),
        };
        if let Some(credential) = credential {
            let mut value = HeaderValue::from_str(&credential)
                .map_err(|_| PrefectError::Garbage("the Prefect credential is not a valid header".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| PrefectError::Garbage(format!("cannot build the HTTP client: {e}")))?;
        Ok(PrefectClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            retries: 5,
            socket_token,
        })
    }

    /// The same client with at most `retries` retries per call (tests use few).
    pub fn with_retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// The Prefect API base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// One HTTP call, in its own client span, timed and counted by `operation`.
    async fn attempt<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Attempt> {
        let span = tracing::info_span!(
            "prefect",
            otel.name = %format!("prefect {operation}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            prefect.operation = operation,
            http.request.method = %method,
            url.path = path,
            http.response.status_code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self.send::<T>(method, path, body).instrument(span.clone()).await;
        let error = result.as_ref().err().map(|attempt| {
            if let Some(status) = attempt.status {
                span.record("http.response.status_code", i64::from(status));
            }
            span.record("otel.status_code", "ERROR");
            attempt.error.kind()
        });
        crate::telemetry::metrics::metrics().prefect_call(operation, started.elapsed(), error);
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Attempt> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self.http.request(method, &url);
        // Prefect's server continues the trace when it records spans of its own.
        if let Some(traceparent) = crate::telemetry::outgoing_traceparent(None) {
            request = request.header("traceparent", traceparent.to_string());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Attempt {
            error: PrefectError::Unavailable(if e.is_timeout() {
                "timed out".into()
            } else {
                "no connection".into()
            }),
            retry_after: None,
            status: None,
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs.min(60)));
        let bytes = response.bytes().await.map_err(|_| Attempt {
            error: PrefectError::Unavailable("the answer was cut off".into()),
            retry_after: None,
            status: Some(status.as_u16()),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Attempt {
                error: PrefectError::Garbage(format!("{path}: {e}")),
                retry_after: None,
                status: Some(status.as_u16()),
            });
        }
        let transient = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::INTERNAL_SERVER_ERROR
        );
        let error = if transient {
            PrefectError::Unavailable(format!("HTTP {}", status.as_u16()))
        } else {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("detail")
                        .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned))
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            PrefectError::Rejected {
                status: status.as_u16(),
                message,
            }
        };
        Err(Attempt {
            error,
            retry_after,
            status: Some(status.as_u16()),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, PrefectError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.retries)
            .with_jitter();
        (|| self.attempt::<T>(operation, method.clone(), path, body.as_ref()))
            .retry(backoff)
            .when(|a: &Attempt| !a.error.is_permanent())
            .adjust(|a: &Attempt, delay| a.retry_after.or(delay))
            .notify(|a: &Attempt, delay| {
                tracing::warn!(prefect.path = path, error = %a.error, retry.in_ms = delay.as_millis() as u64, "Prefect call failed; retrying");
            })
            .await
            .map_err(|a| a.error)
    }

    /// The id of a deployment given as an id or as `flow-name/deployment-name`.
    pub async fn deployment_id(&self, reference: &str) -> Result<String, PrefectError> {
        if is_uuid(reference) {
            return Ok(reference.to_owned());
        }
        let found: Deployment = self
            .call("read_deployment", Method::GET, &deployment_path(reference)?, None)
            .await?;
        Ok(found.id)
    }

    /// A deployment given as an id or as `flow-name/deployment-name`.
    pub async fn deployment(&self, reference: &str) -> Result<DeploymentInfo, PrefectError> {
        let path = if is_uuid(reference) {
            format!("/deployments/{reference}")
        } else {
            deployment_path(reference)?
        };
        self.call("read_deployment", Method::GET, &path, None).await
    }

    /// The deployments Prefect knows (at most 200), each named `flow-name/deployment-name`.
    pub async fn deployments(&self) -> Result<Vec<(String, DeploymentInfo)>, PrefectError> {
        let body = json!({ "limit": 200, "sort": "NAME_ASC" });
        let deployments: Vec<DeploymentInfo> = self
            .call(
                "filter_deployments",
                Method::POST,
                "/deployments/filter",
                Some(body),
            )
            .await?;
        let flow_ids: Vec<&str> = deployments.iter().map(|d| d.flow_id.as_str()).collect();
        let body = json!({ "flows": { "id": { "any_": flow_ids } }, "limit": 200 });
        let flows: Vec<Flow> = self
            .call("filter_flows", Method::POST, "/flows/filter", Some(body))
            .await?;
        let mut named: Vec<(String, DeploymentInfo)> = deployments
            .into_iter()
            .map(|d| {
                let flow = flows
                    .iter()
                    .find(|f| f.id == d.flow_id)
                    .map_or("?", |f| f.name.as_str());
                (format!("{flow}/{}", d.name), d)
            })
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(named)
    }

    /// One page of a flow run's logs (`POST /logs/filter`), at or above `min_level`, by
    /// time (oldest first unless `newest_first`); Prefect answers at most 200 a page.
    pub async fn flow_run_logs(
        &self,
        flow_run_id: &str,
        min_level: i32,
        page: LogPage,
    ) -> Result<Vec<PrefectLog>, PrefectError> {
        let mut logs = json!({ "flow_run_id": { "any_": [flow_run_id] }, "level": { "ge_": min_level } });
        if let Some(since) = page.since {
            logs["timestamp"] =
                json!({ "after_": since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true) });
        }
        let body = json!({
            "logs": logs,
            "sort": if page.newest_first { "TIMESTAMP_DESC" } else { "TIMESTAMP_ASC" },
            "limit": page.limit.min(200),
            "offset": page.offset,
        });
        self.call("filter_logs", Method::POST, "/logs/filter", Some(body))
            .await
    }

    /// Creates a flow run of a deployment (`POST /deployments/{id}/create_flow_run`).
    pub async fn create_flow_run(
        &self,
        deployment_id: &str,
        run: &NewFlowRun,
    ) -> Result<FlowRun, PrefectError> {
        let body = serde_json::to_value(run).map_err(|e| PrefectError::Garbage(e.to_string()))?;
        self.call(
            "create_flow_run",
            Method::POST,
            &format!("/deployments/{}/create_flow_run", encode(deployment_id)),
            Some(body),
        )
        .await
    }

    /// The flow runs with these ids (`POST /flow_runs/filter`).
    pub async fn flow_runs(&self, ids: &[String]) -> Result<Vec<FlowRun>, PrefectError> {
        let body = json!({ "flow_runs": { "id": { "any_": ids } }, "limit": ids.len().max(1) });
        self.call("filter_flow_runs", Method::POST, "/flow_runs/filter", Some(body))
            .await
    }

    /// The flow runs carrying `tag` (e.g. `flowdeck-request:<id>`), at most 200.
    pub async fn flow_runs_with_tag(&self, tag: &str) -> Result<Vec<FlowRun>, PrefectError> {
        let body = json!({ "flow_runs": { "tags": { "all_": [tag] } }, "limit": 200 });
        self.call("filter_flow_runs", Method::POST, "/flow_runs/filter", Some(body))
            .await
    }

    /// Asks Prefect to cancel a flow run (`set_state` `CANCELLING`).
    pub async fn cancel_flow_run(&self, id: &str) -> Result<SetStateResult, PrefectError> {
        let body = json!({ "state": { "type": "CANCELLING", "name": "Cancelling", "message": "Cancelled from Flowdeck" } });
        self.call(
            "set_flow_run_state",
            Method::POST,
            &format!("/flow_runs/{}/set_state", encode(id)),
            Some(body),
        )
        .await
    }

    /// Whether the API answers its health check.
    pub async fn healthy(&self) -> bool {
        self.attempt::<Value>("health", Method::GET, "/health", None)
            .await
            .is_ok()
    }
}

fn deployment_path(reference: &str) -> Result<String, PrefectError> {
    let (flow, deployment) = reference.split_once('/').ok_or_else(|| PrefectError::Rejected {
        status: 422,
        message: format!("deployment {reference:?} is neither an id nor flow-name/deployment-name"),
    })?;
    Ok(format!(
        "/deployments/name/{}/{}",
        encode(flow),
        encode(deployment)
    ))
}

/// Where Prefect's UI lives for an API URL: Prefect Cloud's app for a workspace API,
/// the same server without `/api` for a self-hosted one.
pub fn ui_url_for(api_url: &str) -> String {
    let api_url = api_url.trim_end_matches('/');
    if let Some(rest) = api_url.strip_prefix("https://api.prefect.cloud/api/accounts/")
        && let Some((account, workspace)) = rest.split_once("/workspaces/")
    {
        return format!("https://app.prefect.cloud/account/{account}/workspace/{workspace}");
    }
    api_url.strip_suffix("/api").unwrap_or(api_url).to_owned()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailability_is_worth_retrying() {
        assert!(!PrefectError::Unavailable("HTTP 503".into()).is_permanent());
        assert!(
            PrefectError::Rejected {
                status: 404,
                message: "x".into()
            }
            .is_permanent()
        );
        assert!(!PrefectError::Garbage("x".into()).is_permanent());
    }

    #[test]
    fn the_ui_is_found_from_the_api_url() {
        assert_eq!(ui_url_for("http://127.0.0.1:4200/api"), "http://127.0.0.1:4200");
        assert_eq!(
            ui_url_for("https://api.prefect.cloud/api/accounts/a1/workspaces/w2/"),
            "https://app.prefect.cloud/account/a1/workspace/w2"
        );
        assert_eq!(
            ui_url_for("https://prefect.example.com/prefect"),
            "https://prefect.example.com/prefect"
        );
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode("my flow/x"), "my%20flow%2Fx");
        assert!(is_uuid("0b7c6a0e-5d0f-4c59-9d7e-1a2b3c4d5e6f"));
        assert!(!is_uuid("etl/demo"));
    }
}

//! The MCP server at `/mcp` (Model Context Protocol, Streamable HTTP), for AI agents.
//!
//! Built on the official Rust SDK (`rmcp`), stateless (any replica answers any request).
//! A caller authenticates with the same bearer credential as the REST API (an API key or
//! an OIDC token; a browser's session cookie is not taken here), and every tool calls
//! the same service functions as REST, so the key's role, scope and budgets apply
//! unchanged. Every tool call is written to the audit trail (`mcp.<tool>`) with its
//! outcome; runs an agent starts carry its key as actor and `mcp` as source.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::auth::limits::Limits;
use crate::caller::record::{self, Outcome};
use crate::caller::{AuthMethod, Caller, Principal, RequestMeta};
use crate::error::{AppError, ErrorBody};
use crate::events::hub::Hub;
use crate::pipelines::{self, DashboardQuery};
use crate::prefect::{PrefectClient, PrefectLinks};
use crate::runs::filter::RunFilter;
use crate::runs::triggers::TriggerWriter;
use crate::runs::{self, Run, TriggerRequest};

pub mod http;

/// Longest a `wait_for_run` waits.
pub const MAX_WAIT_SECONDS: u64 = 600;

/// What the tools work with: the parts of the application state they call services with.
#[derive(Clone)]
pub struct McpParts {
    /// The `PostgreSQL` pool.
    pub db: PgPool,
    /// Kept answers of listings (`search_runs`).
    pub answers: Arc<crate::api::cache::Answers>,
    /// The Prefect API, when configured.
    pub prefect: Option<Arc<PrefectClient>>,
    /// The default deployment and Prefect's UI.
    pub links: PrefectLinks,
    /// This replica's rate limits.
    pub limits: Arc<Limits>,
    /// This replica's trigger writers.
    pub triggers: Arc<TriggerWriter>,
    /// The change feed, which `wait_for_run` follows.
    pub hub: Arc<Hub>,
}

/// The MCP server: one per request (stateless), all sharing [`McpParts`].
#[derive(Clone)]
pub struct Flowdeck {
    parts: McpParts,
    tool_router: ToolRouter<Self>,
}

/// `list_pipelines`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPipelines {
    /// Name, slug or tag contains this text (any case).
    #[serde(default)]
    pub search: Option<String>,
    /// Carries this tag exactly.
    #[serde(default)]
    pub tag: Option<String>,
    /// The latest run's status: pending, scheduled, running, completed, failed, cancelling,
    /// cancelled, crashed or paused.
    #[serde(default)]
    pub status: Option<String>,
    /// Page of 50, from 1.
    #[serde(default)]
    pub page: Option<i64>,
}

/// A pipeline, by id or slug.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineRef {
    /// The pipeline's id (as text, e.g. "12") or slug (e.g. "nightly-etl").
    pub pipeline: String,
}

/// `trigger_run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    /// The pipeline's id (as text) or slug.
    pub pipeline: String,
    /// Parameter overrides on top of the pipeline's defaults; checked against the
    /// deployment's parameter schema.
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    /// Makes the call safe to repeat: the same key and request give the same run.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Only answer what would be sent to Prefect; start nothing, write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A run, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRef {
    /// The run's id.
    pub run_id: i64,
}

/// `retry_run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRun {
    /// The finished run to run again.
    pub run_id: i64,
    /// Restart from this stage (a failed run's failed stage, say): the stages before it are
    /// carried over as skipped, reusing their outputs. Without it, every stage runs again.
    #[serde(default)]
    pub from_stage: Option<String>,
    /// Overrides on top of the parameters the run used.
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    /// Makes the call safe to repeat: the same key and request give the same run.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `wait_for_run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForRun {
    /// The run's id.
    pub run_id: i64,
    /// Seconds to wait at most (1 to 600, default 60).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// The caller the identifying middleware put in the HTTP request.
fn caller_of(http: &::http::request::Parts) -> Result<Caller, AppError> {
    let principal: Principal = crate::caller::identified(http)?;
    Ok(Caller {
        principal,
        meta: http.extensions.get::<RequestMeta>().cloned().unwrap_or_default(),
    })
}

/// A run with what an agent asks first: how long it took and, if it failed, why.
fn run_json(run: Run, links: &PrefectLinks) -> Value {
    let failure = run.failure.clone();
    let seconds = run.started_at.map(|start| {
        (run.ended_at.unwrap_or_else(chrono::Utc::now) - start).num_milliseconds() as f64 / 1000.0
    });
    json!({"run": run.linked(links), "failure": failure, "duration_seconds": seconds})
}

/// The outcome an error is audited with.
fn outcome_of(error: &AppError) -> Outcome {
    match error {
        AppError::Unauthorized | AppError::Forbidden { .. } | AppError::OutOfScope { .. } => Outcome::Denied,
        _ => Outcome::Failed,
    }
}

/// An error as a tool's result: the REST API's error body, as text and structured.
fn error_result(error: &AppError) -> CallToolResult {
    let body = serde_json::to_value(ErrorBody::of(error)).unwrap_or(Value::Null);
    let mut result = CallToolResult::structured_error(body);
    result.content = vec![ContentBlock::text(error.to_string())];
    result
}

impl Flowdeck {
    /// The server for one request.
    pub fn new(parts: McpParts) -> Self {
        Self {
            parts,
            tool_router: Self::tool_router(),
        }
    }

    /// Runs a tool for the request's caller and audits the call (`mcp.<tool>`, its target
    /// and outcome); an error is the tool's result, as the REST API would answer it.
    async fn call<F, Fut>(
        &self,
        http: &::http::request::Parts,
        tool: &str,
        target: Option<String>,
        work: F,
    ) -> Result<CallToolResult, ErrorData>
    where
        F: FnOnce(McpParts, Caller) -> Fut,
        Fut: Future<Output = Result<Value, AppError>>,
    {
        let caller = caller_of(http).map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        let answer = work(self.parts.clone(), caller.clone()).await;
        let (outcome, detail) = match &answer {
            Ok(_) => (Outcome::Success, json!({"tool": tool})),
            Err(error) => (
                outcome_of(error),
                json!({"tool": tool, "code": error.code(), "error": error.to_string()}),
            ),
        };
        let action = format!("mcp.{tool}");
        if let Err(error) = record::with_detail(
            &self.parts.db,
            &caller,
            &action,
            target.as_deref(),
            outcome,
            &detail,
        )
        .await
        {
            tracing::error!(%error, tool, "cannot audit an MCP tool call");
            return Ok(error_result(&AppError::from(error)));
        }
        Ok(match answer {
            Ok(value) => CallToolResult::structured(value),
            Err(error) => error_result(&error),
        })
    }
}

#[tool_router]
impl Flowdeck {
    /// Lists the pipelines the key may see, with their latest run's status.
    #[tool(
        description = "List the pipelines this key may see (50 per page), with each one's latest run status. Filter by search text, tag or status.",
        annotations(read_only_hint = true)
    )]
    async fn list_pipelines(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        Parameters(input): Parameters<ListPipelines>,
    ) -> Result<CallToolResult, ErrorData> {
        self.call(&http, "list_pipelines", None, |parts, caller| async move {
            let query = DashboardQuery {
                q: input.search,
                status: input.status,
                tag: input.tag,
                sort: Some("name".into()),
                page: input.page,
            };
            let page = pipelines::service::dashboard(&parts.db, &caller, &query).await?;
            let pipelines: Vec<Value> = page
                .pipelines
                .into_iter()
                .map(|p| {
                    json!({"id": p.id, "slug": p.slug, "name": p.name, "description": p.description,
                           "tags": p.tags, "deployment": p.deployment, "status": p.status,
                           "latest_run_id": p.latest_run_id, "error_message": p.error_message,
                           "updated_at": p.updated_at})
                })
                .collect();
            Ok(json!({"pipelines": pipelines, "total": page.total, "page": page.page, "per_page": page.per_page}))
        })
        .await
    }

    /// One pipeline with its stages, defaults and recent runs.
    #[tool(
        description = "Read one pipeline (by id or slug): its stages, default parameters, deployment, tags and its 20 most recent runs.",
        annotations(read_only_hint = true)
    )]
    async fn get_pipeline(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        Parameters(input): Parameters<PipelineRef>,
    ) -> Result<CallToolResult, ErrorData> {
        let target = Some(format!("pipeline:{}", input.pipeline));
        self.call(&http, "get_pipeline", target, |parts, caller| async move {
            let id = pipelines::service::resolve(&parts.db, &caller, &input.pipeline).await?;
            let pipeline = pipelines::service::get(&parts.db, &caller, id).await?;
            let recent = runs::service::recent_for_pipeline(&parts.db, &caller, id).await?;
            let recent: Vec<Value> = recent
                .into_iter()
                .map(|r| {
                    json!({"id": r.id, "status": r.status, "created_at": r.created_at, "ended_at": r.ended_at,
                           "error_message": r.error_message, "actor": r.actor, "source": r.source})
                })
                .collect();
            Ok(json!({"pipeline": pipeline, "recent_runs": recent}))
        })
        .await
    }

    /// Starts a run, or says what would be sent (`dry_run`).
    #[tool(
        description = "Start a run of a pipeline (by id or slug) with optional parameter overrides, checked against the deployment's parameter schema. With idempotency_key, repeating the call gives the same run. With dry_run, answers what would be sent to Prefect and starts nothing. Counts against the key's budgets.",
        annotations(destructive_hint = false, idempotent_hint = false)
    )]
    async fn trigger_run(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        Parameters(input): Parameters<TriggerRun>,
    ) -> Result<CallToolResult, ErrorData> {
        let target = Some(format!("pipeline:{}", input.pipeline));
        self.call(&http, "trigger_run", target, |parts, caller| async move {
            let id = pipelines::service::resolve(&parts.db, &caller, &input.pipeline).await?;
            let overrides = input.parameters.unwrap_or_default();
            let prefect = parts.prefect.as_deref();
            let preview =
                runs::service::preview(&parts.db, prefect, &parts.links, &caller, id, overrides.clone()).await?;
            if input.dry_run {
                return Ok(json!({
                    "dry_run": true,
                    "pipeline_id": id,
                    "prefect": {
                        "deployment": preview.deployment,
                        "parameters": preview.parameters,
                        "schema_checked": preview.schema_checked,
                        "added_by_flowdeck": ["flowdeck_run_id", "flowdeck_callback_url", "flowdeck_token", "flowdeck_request_id"],
                    },
                }));
            }
            let trigger = runs::service::Trigger {
                pipeline_id: id,
                request: TriggerRequest {
                    parameters: (!overrides.is_empty()).then_some(overrides),
                },
                source: "mcp",
                idempotency_key: input.idempotency_key.as_deref(),
                repeat_waits: false,
            };
            let run = runs::service::trigger(&parts.db, &parts.limits, &parts.triggers, &caller, trigger).await?;
            Ok(run_json(run, &parts.links))
        })
        .await
    }

    /// A run with its stages and, when it failed, why.
    #[tool(
        description = "Read a run: status, stages with their timings, records processed, and for a failed run `failure`: the failed stage, its error, Prefect's final message and the reason in one line.",
        annotations(read_only_hint = true)
    )]
    async fn get_run(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        Parameters(input): Parameters<RunRef>,
    ) -> Result<CallToolResult, ErrorData> {
        let target = Some(format!("run:{}", input.run_id));
        self.call(&http, "get_run", target, |parts, caller| async move {
            let run = runs::service::get(&parts.db, &caller, input.run_id).await?;
            Ok(run_json(run, &parts.links))
        })
        .await
    }

    /// Waits for a run to end, reporting its stages as progress.
    #[tool(
        description = "Wait until a run ends (completed, failed, cancelled or crashed) or the timeout passes (default 60 s, at most 600 s). Sends progress notifications as stages finish. Answers the run and whether it finished.",
        annotations(read_only_hint = true)
    )]
    async fn wait_for_run(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        Parameters(input): Parameters<WaitForRun>,
    ) -> Result<CallToolResult, ErrorData> {
        let target = Some(format!("run:{}", input.run_id));
        self.call(&http, "wait_for_run", target, |parts, caller| async move {
            let seconds = input.timeout_seconds.unwrap_or(60);
            if !(1..=MAX_WAIT_SECONDS).contains(&seconds) {
                return Err(AppError::invalid(
                    "timeout_seconds",
                    format!("must be between 1 and {MAX_WAIT_SECONDS}"),
                ));
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let token = meta.get_progress_token();
            let mut changes = parts.hub.subscribe();
            let mut told = None;
            loop {
                let run = runs::service::get(&parts.db, &caller, input.run_id).await?;
                let done = run.stages.iter().filter(|s| s.status.is_terminal()).count();
                let now = (run.status, done);
                if let Some(token) = &token
                    && told != Some(now)
                {
                    told = Some(now);
                    let running = run
                        .stages
                        .iter()
                        .find(|s| !s.status.is_terminal())
                        .map(|s| s.name.as_str());
                    let message = match running {
                        Some(stage) if !run.status.is_terminal() => format!("{}: stage {stage}", run.status),
                        _ => run.status.to_string(),
                    };
                    let progress = ProgressNotificationParam::new(token.clone(), done as f64)
                        .with_total(run.stages.len() as f64)
                        .with_message(message);
                    if let Err(error) = peer.notify_progress(progress).await {
                        tracing::debug!(%error, "cannot send MCP progress");
                    }
                }
                let finished = run.status.is_terminal();
                if finished || tokio::time::Instant::now() >= deadline {
                    let mut answer = run_json(run, &parts.links);
                    answer["finished"] = json!(finished);
                    return Ok(answer);
                }
                // Read again when this run changes, and at least every two seconds.
                let tick = tokio::time::sleep(Duration::from_secs(2));
                tokio::pin!(tick);
                loop {
                    tokio::select! {
                        received = changes.recv() => match received {
                            Ok(published) if published.change.run_id != Some(input.run_id) => {}
                            _ => break,
                        },
                        () = &mut tick => break,
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
        })
        .await
    }

    /// Cancels a run.
    #[tool(
        description = "Cancel an unfinished run (in Prefect too, if it reached it). Needs the cancel action.",
        annotations(destructive_hint = true, idempotent_hint = true)
    )]
    async fn cancel_run(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        Parameters(input): Parameters<RunRef>,
    ) -> Result<CallToolResult, ErrorData> {
        let target = Some(format!("run:{}", input.run_id));
        self.call(&http, "cancel_run", target, |parts, caller| async move {
            let run =
                runs::service::cancel(&parts.db, parts.prefect.as_deref(), &caller, input.run_id).await?;
            Ok(run_json(run, &parts.links))
        })
        .await
    }

    /// Runs a finished run again.
    #[tool(
        description = "Run a finished run again: a new run linked to it, with its parameters and any overrides. With from_stage, restart there (get_run's failure.stage names a failed run's stage), reusing the earlier stages' outputs. Needs the retry action; counts against the key's budgets.",
        annotations(destructive_hint = false, idempotent_hint = false)
    )]
    async fn retry_run(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        Parameters(input): Parameters<RetryRun>,
    ) -> Result<CallToolResult, ErrorData> {
        let target = Some(format!("run:{}", input.run_id));
        self.call(&http, "retry_run", target, |parts, caller| async move {
            let retry = runs::service::Retry {
                run_id: input.run_id,
                request: runs::RetryRequest {
                    from_stage: input.from_stage,
                    parameters: input.parameters,
                },
                idempotency_key: input.idempotency_key.as_deref(),
            };
            let run = runs::service::retry(&parts.db, &parts.limits, &caller, retry).await?;
            Ok(run_json(run, &parts.links))
        })
        .await
    }

    /// Finds runs with the REST API's filter.
    #[tool(
        description = "Find runs with the Prefect-style filter of POST /api/runs/filter: criteria on runs (status any_/not_any_, created/started/ended before_/after_, actor, source...) and on their pipelines (slug, tags, name...), sort and limit/offset.",
        annotations(read_only_hint = true)
    )]
    async fn search_runs(
        &self,
        Extension(http): Extension<::http::request::Parts>,
        Parameters(filter): Parameters<RunFilter>,
    ) -> Result<CallToolResult, ErrorData> {
        self.call(&http, "search_runs", None, |parts, caller| async move {
            let kept = runs::service::filter(&parts.db, &parts.answers, &caller, &filter).await?;
            let runs: Value = serde_json::from_slice(kept.json()).map_err(|_| AppError::Internal)?;
            Ok(json!({"runs": runs}))
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Flowdeck {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("flowdeck", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Flowdeck runs data pipelines as Prefect flows. List pipelines, start a run, wait for it \
                 and read why it failed. This key may see and do only what its scope allows; runs it \
                 starts count against its budgets.",
            )
    }
}

/// Whether a principal may use `/mcp`: a bearer credential (API key or OIDC token), never
/// an ambient one (a session cookie, the proxy's headers) another site could make a
/// browser send.
pub fn takes(principal: &Principal) -> bool {
    matches!(principal.via, AuthMethod::ApiKey | AuthMethod::Oidc)
}

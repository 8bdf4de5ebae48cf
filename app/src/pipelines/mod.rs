//! Pipelines: definitions (stages, deployment, defaults) shown with their latest run.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::runs::{Run, Stage};
use crate::status::RunStatus;

pub mod dashboard;
pub mod filter;
pub mod page;

#[cfg(feature = "ssr")]
pub mod db;
#[cfg(feature = "ssr")]
pub mod http;
#[cfg(feature = "ssr")]
pub mod service;
#[cfg(feature = "ssr")]
pub mod validate;

/// The seed's five stages, used when a pipeline is created without its own.
pub const DEFAULT_STAGES: [&str; 5] = [
    "Data Generation",
    "Data Ingestion",
    "Spark Processing",
    "DBT Transformation",
    "Data Export",
];

/// A pipeline with its latest run, in the seed's shape plus the definition's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Pipeline {
    /// Pipeline id.
    pub id: i64,
    /// Unique, URL-safe name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Status of the latest run; `pending` when it never ran.
    pub status: RunStatus,
    /// When the pipeline was created.
    pub created_at: DateTime<Utc>,
    /// Last change to the pipeline or its latest run.
    pub updated_at: DateTime<Utc>,
    /// Prefect flow run of the latest run.
    pub prefect_flow_run_id: Option<String>,
    /// Records processed by the latest run.
    pub records_processed: i64,
    /// Error of the latest run.
    pub error_message: Option<String>,
    /// The last runs' outcomes and durations in seconds, oldest first (at most 10).
    #[serde(default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Vec<Vec<serde_json::Value>>, example = json!([["completed", 42.5], ["failed", null]])))]
    pub recent_runs: Vec<(RunStatus, Option<f64>)>,
    /// Stages of the latest run (or the planned stages).
    pub stages: Vec<Stage>,
    /// The latest run's id.
    pub latest_run_id: Option<i64>,
    /// Prefect deployment (id or `flow/deployment`); `None` uses the default one.
    pub deployment: Option<String>,
    /// Ordered stage names.
    pub stage_names: Vec<String>,
    /// Parameters every run starts from.
    pub default_parameters: serde_json::Value,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// At most this many unfinished runs at once; `None` for no limit.
    pub max_concurrent_runs: Option<i32>,
}

/// Body of `POST /api/pipelines/`: the seed's `{name, description}` plus the definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"name": "Nightly ETL", "description": "Loads yesterday's orders", "deployment": "etl/nightly", "tags": ["etl"], "default_parameters": {"rows": 1000}})))]
#[serde(deny_unknown_fields)]
pub struct NewPipeline {
    /// Display name (required).
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// URL-safe unique name; derived from `name` when absent.
    #[serde(default)]
    pub slug: Option<String>,
    /// Prefect deployment: UUID or `flow-name/deployment-name`.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Ordered stage names; the seed's five when absent.
    #[serde(default)]
    pub stages: Option<Vec<String>>,
    /// Parameters every run starts from (a JSON object).
    #[serde(default)]
    pub default_parameters: Option<serde_json::Value>,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// At most this many unfinished runs at once.
    #[serde(default)]
    pub max_concurrent_runs: Option<i32>,
    /// Accepted for the seed's clients, which send `"pending"`; a pipeline's status is
    /// always its latest run's.
    #[serde(default)]
    pub status: Option<String>,
}

/// Body of `PATCH /api/pipelines/{id}`: the fields to change; the others stay. `null`
/// clears a field that may be empty (description, deployment, concurrency limit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"description": "Loads yesterday's orders and refunds", "tags": ["etl", "orders"], "max_concurrent_runs": 2})))]
#[serde(deny_unknown_fields)]
pub struct PipelinePatch {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// What it does; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>))]
    pub description: Option<Option<String>>,
    /// Prefect deployment; `null` uses the default one.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>))]
    pub deployment: Option<Option<String>>,
    /// Ordered stage names (later runs use them).
    #[serde(default)]
    pub stages: Option<Vec<String>>,
    /// Parameters every run starts from (a JSON object).
    #[serde(default)]
    pub default_parameters: Option<serde_json::Value>,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// At most this many unfinished runs at once; `null` for no limit.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<i32>))]
    pub max_concurrent_runs: Option<Option<i32>>,
}

/// A field that is present in the body, `null` or not (absent fields stay `None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A pipeline with its recent runs, for the pipeline page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDetail {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Its latest runs, newest first.
    pub recent_runs: Vec<Run>,
}

/// The dashboard's orders.
pub const SORTS: [&str; 4] = ["updated", "name", "status", "created"];

/// The dashboard's filters, as in its URL (`/?q=…&status=…&tag=…&sort=…&page=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DashboardQuery {
    /// Name, slug or tag contains (case-insensitive).
    pub q: Option<String>,
    /// The latest run's status.
    pub status: Option<String>,
    /// Carries this tag.
    pub tag: Option<String>,
    /// One of [`SORTS`]; `updated` by default.
    pub sort: Option<String>,
    /// Page number, from 1.
    pub page: Option<i64>,
}

impl DashboardQuery {
    /// The same filters on page `page`, as a URL query (`?…`; empty values left out).
    pub fn to_url(&self, page: i64) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("q", &self.q),
            ("status", &self.status),
            ("tag", &self.tag),
            ("sort", &self.sort),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(key, value);
            }
        }
        if page > 1 {
            query.append_pair("page", &page.to_string());
        }
        let query = query.finish();
        if query.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{query}")
        }
    }

    /// The filters in a URL query string (`?q=…&page=2`, the `?` optional); unknown keys
    /// are ignored, as the server does.
    pub fn from_search(search: &str) -> Self {
        let mut query = Self::default();
        for (key, value) in form_urlencoded::parse(search.trim_start_matches('?').as_bytes()) {
            let value = Some(value.into_owned());
            match &*key {
                "q" => query.q = value,
                "status" => query.status = value,
                "tag" => query.tag = value,
                "sort" => query.sort = value,
                "page" => query.page = value.and_then(|p| p.parse().ok()),
                _ => {}
            }
        }
        query
    }

    /// Whether any filter is set (sort and page aside).
    pub fn is_filtered(&self) -> bool {
        [&self.q, &self.status, &self.tag]
            .into_iter()
            .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()))
    }
}

/// One dashboard page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardPage {
    /// The pipelines on this page, with their latest runs.
    pub pipelines: Vec<Pipeline>,
    /// Pipelines matching the filters, on every page.
    pub total: i64,
    /// This page, from 1.
    pub page: i64,
    /// Pipelines per page.
    pub per_page: i64,
    /// Every pipeline counted by its latest status (filters aside).
    pub by_status: Vec<(RunStatus, i64)>,
}

/// A dashboard page.
#[server(prefix = "/sfn", endpoint = "dashboard")]
pub async fn dashboard(query: Option<DashboardQuery>) -> Result<DashboardPage, AppError> {
    // (Optional because a query without any filter encodes as nothing at all.)
    let db = expect_context::<sqlx::PgPool>();
    service::dashboard(
        &db,
        &crate::caller::Caller::current()?,
        &query.unwrap_or_default(),
    )
    .await
}

/// The totals, rows and pager of a dashboard page, rendered as HTML: what the dashboard's
/// island puts in place when its filters or the data change.
#[server(prefix = "/sfn", endpoint = "dashboard_rows")]
pub async fn dashboard_rows(query: Option<DashboardQuery>) -> Result<String, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let query = query.unwrap_or_default();
    let page = service::dashboard(&db, &crate::caller::Caller::current()?, &query).await?;
    Ok(view! { <dashboard::DashboardRows page query /> }.to_html())
}

/// One pipeline with its recent runs.
#[server(prefix = "/sfn", endpoint = "get_pipeline_detail")]
pub async fn get_pipeline_detail(id: i64) -> Result<PipelineDetail, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let pipeline = service::get(&db, &caller, id).await?;
    let recent_runs = crate::runs::service::recent_for_pipeline(&db, &caller, id).await?;
    Ok(PipelineDetail {
        pipeline,
        recent_runs,
    })
}

/// What the New pipeline form offers as deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentMenu {
    /// The deployment pipelines without one run (`FLOWDECK_DEFAULT_DEPLOYMENT`).
    pub default: Option<String>,
    /// Every deployment Prefect knows, as `flow-name/deployment-name`.
    pub available: Vec<String>,
    /// Why the list is empty, when Prefect could not be asked.
    pub problem: Option<String>,
}

/// The deployments the New pipeline form offers.
#[server(prefix = "/sfn", endpoint = "deployment_choices")]
pub async fn deployment_choices() -> Result<DeploymentMenu, AppError> {
    let prefect = expect_context::<Option<std::sync::Arc<crate::prefect::PrefectClient>>>();
    let links = expect_context::<crate::prefect::PrefectLinks>();
    crate::caller::Caller::current()?.require(crate::caller::Role::Admin)?;
    let (available, problem) = match &prefect {
        None => (
            Vec::new(),
            Some("Prefect is not configured (PREFECT_API_URL)".to_owned()),
        ),
        Some(prefect) => match prefect.deployments().await {
            Ok(list) => (list.into_iter().map(|(name, _)| name).collect(), None),
            Err(error) => {
                tracing::warn!(%error, "cannot list Prefect deployments");
                (
                    Vec::new(),
                    Some("Prefect did not answer; type the deployment's name".to_owned()),
                )
            }
        },
    };
    Ok(DeploymentMenu {
        default: links.default_deployment.clone(),
        available,
        problem,
    })
}

/// Creates a pipeline from the New pipeline form (plain text inputs: one stage per line,
/// comma-separated tags, parameters as a JSON object); goes to the new pipeline's page.
#[server(prefix = "/sfn", endpoint = "create_pipeline")]
pub async fn create_pipeline(
    name: String,
    description: String,
    deployment: String,
    stages: String,
    default_parameters: String,
    tags: String,
) -> Result<i64, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let stages: Vec<String> = stages.lines().filter_map(text).collect();
    let tags: Vec<String> = tags.split(',').filter_map(text).collect();
    let default_parameters = match text(&default_parameters) {
        None => None,
        Some(json) => Some(
            serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .filter(serde_json::Value::is_object)
                .ok_or_else(|| AppError::invalid("default_parameters", "must be a JSON object"))?,
        ),
    };
    let new = NewPipeline {
        name: name.trim().to_owned(),
        description: text(&description),
        deployment: text(&deployment),
        stages: (!stages.is_empty()).then_some(stages),
        default_parameters,
        tags: (!tags.is_empty()).then_some(tags),
        ..NewPipeline::default()
    };
    let pipeline = service::create(&db, &caller, new).await?;
    leptos_axum::redirect(&format!("/pipelines/{}", pipeline.id));
    Ok(pipeline.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_urls_read_back_as_the_same_filters() {
        let query = DashboardQuery {
            q: Some("etl & more 100%".into()),
            status: Some("failed".into()),
            tag: Some("a+b".into()),
            sort: Some("name".into()),
            page: None,
        };
        let url = query.to_url(3);
        assert!(url.starts_with("/?"), "{url}");
        let back = DashboardQuery::from_search(&url[1..]);
        assert_eq!(
            back,
            DashboardQuery {
                page: Some(3),
                ..query
            }
        );
    }

    #[test]
    fn an_empty_or_foreign_search_is_no_filter() {
        assert_eq!(DashboardQuery::from_search(""), DashboardQuery::default());
        assert_eq!(
            DashboardQuery::from_search("?utm=x&page=zz"),
            DashboardQuery::default()
        );
        assert_eq!(DashboardQuery::default().to_url(1), "/");
    }
}

//! `POST /api/pipelines/filter` and `/count`.

use serde::{Deserialize, Serialize};

use crate::filter::PipelineCriteria;

/// Orders of a pipeline listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PipelineSort {
    /// Newest first.
    #[default]
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
    /// By name, ignoring case.
    NameAsc,
    /// By name, ignoring case, from Z to A.
    NameDesc,
    /// Most recently updated first: the pipeline's definition or its latest run, whichever
    /// changed last (the `updated_at` a pipeline shows).
    UpdatedDesc,
    /// Least recently updated first.
    UpdatedAsc,
    /// By id.
    IdAsc,
    /// By id, highest first.
    IdDesc,
}

/// `POST /api/pipelines/filter` and `/count`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"pipelines": {"tags": {"all_": ["etl"]}, "status": {"any_": ["failed"]}, "name": {"like_": "nightly"}}, "sort": "NAME_ASC", "limit": 50, "offset": 0})))]
#[serde(deny_unknown_fields)]
pub struct PipelineFilter {
    /// Criteria on pipelines.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub pipelines: PipelineCriteria,
    /// Order of the answer.
    #[serde(default)]
    pub sort: PipelineSort,
    /// At most this many pipelines (1 to 200, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Skip this many first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

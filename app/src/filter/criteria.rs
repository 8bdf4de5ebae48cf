//! Criteria both listings take: on a status, and on pipelines (runs are filtered by their
//! pipeline's fields too).

use serde::{Deserialize, Serialize};

use super::{IdFilter, TagsFilter, TextFilter, TimeFilter};
use crate::status::RunStatus;

/// Operators on a run status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusFilter {
    /// One of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_: Option<Vec<RunStatus>>,
    /// None of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_any_: Option<Vec<RunStatus>>,
}

impl StatusFilter {
    /// Adds these criteria on the status `column` (a trusted SQL expression).
    #[cfg(feature = "ssr")]
    pub fn apply(&self, w: &mut crate::filter::Where<'_>, column: &str) {
        let names = |list: &Option<Vec<RunStatus>>| {
            list.as_ref()
                .map(|l| l.iter().map(|s| s.as_str().to_owned()).collect())
        };
        w.statuses(column, names(&self.any_), names(&self.not_any_));
    }
}

/// Criteria on pipelines; all must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PipelineCriteria {
    /// By id.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<IdFilter>,
    /// By display name.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<TextFilter>,
    /// By slug.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub slug: Option<TextFilter>,
    /// By Prefect deployment.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub deployment: Option<TextFilter>,
    /// By tags.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub tags: Option<TagsFilter>,
    /// By creation time.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<TimeFilter>,
    /// By the status of the latest run (`pending` when it never ran).
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<StatusFilter>,
}

#[cfg(feature = "ssr")]
impl PipelineCriteria {
    /// Adds these criteria on `pipelines p`.
    pub fn apply(&self, w: &mut crate::filter::Where<'_>) {
        /// The latest run's status, looked up by primary key per pipeline: written against
        /// the join it would make the planner hash every run (275 ms at a million runs; 18 ms).
        const STATUS: &str =
            "coalesce((SELECT lr.status FROM runs lr WHERE lr.id = p.latest_run_id), 'pending')";
        w.ids("p.id", self.id.as_ref())
            .text("p.name", self.name.as_ref())
            .text("p.slug", self.slug.as_ref())
            .text("p.deployment", self.deployment.as_ref())
            .tags("p.tags", self.tags.as_ref())
            .time("p.created_at", self.created.as_ref());
        if let Some(filter) = &self.status {
            filter.apply(w, STATUS);
        }
    }
}

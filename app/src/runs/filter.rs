//! `POST /api/runs/filter` and `/count`: runs by their own fields and by their pipeline's.

use serde::{Deserialize, Serialize};

use crate::filter::{IdFilter, PipelineCriteria, StatusFilter, TextFilter, TimeFilter};

/// Criteria on runs; all must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunCriteria {
    /// By id.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<IdFilter>,
    /// By status.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<StatusFilter>,
    /// By when the trigger was accepted.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<TimeFilter>,
    /// By when the run started.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub started: Option<TimeFilter>,
    /// By when the run ended.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended: Option<TimeFilter>,
    /// By who triggered it (`api-key:ci`).
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub actor: Option<TextFilter>,
    /// By what it was triggered through (`api`, `ui`, `seed-api`, `retry`).
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub source: Option<TextFilter>,
    /// By the trigger's request id.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<TextFilter>,
    /// By the trigger's `Idempotency-Key`.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub idempotency_key: Option<TextFilter>,
    /// By Prefect flow run id.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub prefect_flow_run_id: Option<TextFilter>,
}

/// Orders of a run listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunSort {
    /// Newest trigger first.
    #[default]
    CreatedDesc,
    /// Oldest trigger first.
    CreatedAsc,
    /// Most recently ended first; unfinished runs last.
    EndedDesc,
}

/// `POST /api/runs/filter` and `/count`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"runs": {"status": {"any_": ["failed", "crashed"]}, "created": {"after_": "2026-11-01T00:00:00Z"}}, "pipelines": {"tags": {"any_": ["etl"]}}, "sort": "CREATED_DESC", "limit": 50, "offset": 0})))]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    /// Criteria on the runs.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub runs: RunCriteria,
    /// Criteria on the runs' pipelines.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub pipelines: PipelineCriteria,
    /// Order of the answer.
    #[serde(default)]
    pub sort: RunSort,
    /// At most this many runs (1 to 200, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Skip this many first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

#[cfg(feature = "ssr")]
pub mod service {
    //! The run filter's queries; every criterion is a bound parameter on an indexed path
    //! (`runs (created_at)`, `(status, created_at)`, `(pipeline_id, created_at)`).

    use sqlx::PgPool;

    use super::{RunFilter, RunSort};
    use axum::body::Bytes;

    use crate::api::cache;
    use crate::api::cache::Answers;
    use crate::caller::{Principal, Role};
    use crate::error::Result;
    use crate::filter::{Where, paging};
    use crate::runs::Run;
    use crate::runs::db::RunRow;

    pub(super) fn criteria(select: &str, filter: &RunFilter) -> Where<'static> {
        let c = &filter.runs;
        let mut w = Where::new(select);
        w.ids("r.id", c.id.as_ref())
            .time("r.created_at", c.created.as_ref())
            .time("r.started_at", c.started.as_ref())
            .time("r.ended_at", c.ended.as_ref())
            .text("r.actor", c.actor.as_ref())
            .text("r.source", c.source.as_ref())
            .text("r.request_id", c.request_id.as_ref())
            .text("r.idempotency_key", c.idempotency_key.as_ref())
            .text("r.prefect_flow_run_id", c.prefect_flow_run_id.as_ref());
        if let Some(status) = &c.status {
            status.apply(&mut w, "r.status");
        }
        // The pipeline's latest-run status is only looked up when a criterion asks for it.
        filter.pipelines.apply(&mut w);
        w
    }

    const FROM: &str = " FROM runs r JOIN pipelines p ON p.id = r.pipeline_id";

    /// The runs that match, without their stages.
    #[tracing::instrument(name = "runs.filter", skip_all)]
    pub async fn filter(
        pool: &PgPool,
        answers: &Answers,
        principal: &Principal,
        filter: &RunFilter,
    ) -> Result<Bytes> {
        principal.require(Role::Viewer)?;
        let page = paging(filter.limit, filter.offset)?;
        answers
            .answer(cache::key("runs.filter", filter), || async {
                cache::to_json(&page_of(pool, filter, page).await?)
            })
            .await
    }

    async fn page_of(db: &PgPool, filter: &RunFilter, page: (i64, i64)) -> Result<Vec<Run>> {
        let select = format!("SELECT {}{FROM}", RunRow::COLUMNS);
        let mut w = criteria(&select, filter);
        let order = match filter.sort {
            RunSort::CreatedDesc => " ORDER BY r.created_at DESC, r.id DESC",
            RunSort::CreatedAsc => " ORDER BY r.created_at, r.id",
            RunSort::EndedDesc => " ORDER BY r.ended_at DESC NULLS LAST, r.id DESC",
        };
        w.page(order, page);
        let rows = w.query.build_query_as::<RunRow>().fetch_all(db).await?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    /// How many runs match.
    #[tracing::instrument(name = "runs.count", skip_all)]
    pub async fn count(db: &PgPool, principal: &Principal, filter: &RunFilter) -> Result<i64> {
        principal.require(Role::Viewer)?;
        // Paging does not change a count, but a bad one is still refused.
        paging(filter.limit, filter.offset)?;
        let mut w = criteria(&format!("SELECT count(*){FROM}"), filter);
        Ok(w.query.build_query_scalar::<i64>().fetch_one(db).await?)
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    //! The filter parser against arbitrary JSON: it accepts or refuses, never panics, and
    //! no value of the body ever reaches the SQL text.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::RunFilter;

    /// Keys a filter body has, and others; values carry `§` so the SQL can be searched
    /// for them.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "runs",
                "pipelines",
                "status",
                "any_",
                "not_any_",
                "all_",
                "eq_",
                "like_",
                "is_null_",
                "before_",
                "after_",
                "id",
                "name",
                "slug",
                "tags",
                "created",
                "started",
                "ended",
                "actor",
                "source",
                "request_id",
                "deployment",
                "sort",
                "limit",
                "offset",
            ])
            .prop_map(str::to_owned),
            "[a-z_]{1,6}",
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec!["failed", "running", "CREATED_ASC", "2026-01-01T00:00:00Z"])
                .prop_map(Value::from),
            "[a-z' ;%_-]{0,8}".prop_map(|s| Value::from(format!("§{s}"))),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_body_is_parsed_or_refused_and_values_stay_out_of_the_sql(body in json()) {
            if let Ok(filter) = serde_json::from_value::<RunFilter>(body) {
                let mut w = super::service::criteria("SELECT 1 FROM runs r JOIN pipelines p", &filter);
                let sql = w.query.sql().to_owned();
                prop_assert!(!sql.contains('§'), "a value reached the SQL: {}", sql);
                // A parsed filter round-trips through its JSON form unchanged.
                let again: RunFilter = serde_json::from_value(serde_json::to_value(&filter).unwrap()).unwrap();
                prop_assert_eq!(again, filter);
                drop(w.query.build());
            }
        }
    }
}

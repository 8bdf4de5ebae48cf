//! `POST /api/runs/filter` and `/count`: runs by their own fields and by their pipeline's.

use serde::{Deserialize, Serialize};

use crate::filter::{IdFilter, PipelineCriteria, StatusFilter, TextFilter, TimeFilter};

/// Criteria on runs; all must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunSort {
    /// Newest trigger first.
    #[default]
    CreatedDesc,
    /// Oldest trigger first.
    CreatedAsc,
    /// Most recently ended first; unfinished runs last.
    EndedDesc,
    /// Earliest ended first; unfinished runs last.
    EndedAsc,
}

/// `POST /api/runs/filter` and `/count`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
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
                let mut w = super::super::db::criteria("SELECT 1 FROM runs r JOIN pipelines p", &filter);
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

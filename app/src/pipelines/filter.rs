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
    /// By id.
    IdAsc,
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

#[cfg(feature = "ssr")]
pub mod service {
    //! The pipeline filter's queries.

    use sqlx::PgPool;

    use super::{PipelineFilter, PipelineSort};
    use crate::filter::PipelineCriteria;
    use axum::body::Bytes;

    use crate::api::cache;
    use crate::api::cache::Answers;
    use crate::caller::{Principal, Role};
    use crate::error::Result;
    use crate::filter::{Where, paging};
    use crate::pipelines::Pipeline;
    use crate::pipelines::db::PipelineRow;

    const FROM: &str = " FROM pipelines p LEFT JOIN runs r ON r.id = p.latest_run_id";

    /// The pipelines that match, with their latest runs.
    #[tracing::instrument(name = "pipelines.filter", skip_all)]
    pub async fn filter(
        pool: &PgPool,
        answers: &Answers,
        principal: &Principal,
        filter: &PipelineFilter,
    ) -> Result<Bytes> {
        principal.require(Role::Viewer)?;
        let page = paging(filter.limit, filter.offset)?;
        answers
            .answer(cache::key("pipelines.filter", filter), || async {
                cache::to_json(&page_of(pool, &filter.pipelines, filter.sort, page).await?)
            })
            .await
    }

    /// One page (`(limit, offset)`, already checked) of the pipelines matching `criteria`
    /// in `sort` order, with their latest runs and stages. Newest first, it is cut from the
    /// `created_at` index before anything is joined, whatever the number of pipelines.
    pub(crate) async fn page_of(
        db: &PgPool,
        criteria: &PipelineCriteria,
        sort: PipelineSort,
        page: (i64, i64),
    ) -> Result<Vec<Pipeline>> {
        let mut w = Where::new(format!("SELECT {}{FROM}", PipelineRow::COLUMNS).as_str());
        criteria.apply(&mut w);
        let order = match sort {
            PipelineSort::CreatedDesc => " ORDER BY p.created_at DESC, p.id DESC",
            PipelineSort::CreatedAsc => " ORDER BY p.created_at, p.id",
            PipelineSort::NameAsc => " ORDER BY lower(p.name), p.id",
            PipelineSort::IdAsc => " ORDER BY p.id",
        };
        w.page(order, page);
        let rows = w.query.build_query_as::<PipelineRow>().fetch_all(db).await?;
        crate::pipelines::service::with_stages(db, rows).await
    }

    /// How many pipelines match.
    #[tracing::instrument(name = "pipelines.count", skip_all)]
    pub async fn count(db: &PgPool, principal: &Principal, filter: &PipelineFilter) -> Result<i64> {
        principal.require(Role::Viewer)?;
        // Paging does not change a count, but a bad one is still refused.
        paging(filter.limit, filter.offset)?;
        let mut w = Where::new(format!("SELECT count(*){FROM}").as_str());
        filter.pipelines.apply(&mut w);
        Ok(w.query.build_query_scalar::<i64>().fetch_one(db).await?)
    }
}

//! Queries for pipelines.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::filter::PipelineSort;
use super::validate::ValidPipeline;
use crate::caller::KeyScope;
use crate::filter::{PipelineCriteria, Where};

/// A pipeline row joined with its latest run's summary.
#[derive(sqlx::FromRow)]
pub struct PipelineRow {
    /// Pipeline id.
    pub id: i64,
    /// Unique slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Prefect deployment.
    pub deployment: Option<String>,
    /// Ordered stage names.
    pub stage_names: Vec<String>,
    /// Default parameters.
    pub default_parameters: serde_json::Value,
    /// Tags.
    pub tags: Vec<String>,
    /// Concurrency limit.
    pub max_concurrent_runs: Option<i32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change to the pipeline or its latest run.
    pub updated_at: DateTime<Utc>,
    /// Latest run id.
    pub run_id: Option<i64>,
    /// Latest run status.
    pub run_status: Option<String>,
    /// Latest run's Prefect flow run.
    pub prefect_flow_run_id: Option<String>,
    /// Latest run's records.
    pub records_processed: Option<i64>,
    /// Latest run's error.
    pub error_message: Option<String>,
}

impl PipelineRow {
    /// The columns of a [`PipelineRow`], from `pipelines p LEFT JOIN runs r` (latest run).
    pub const COLUMNS: &str = "p.id, p.slug, p.name, p.description, p.deployment, p.stage_names, \
        p.default_parameters, p.tags, p.max_concurrent_runs, p.created_at, \
        GREATEST(p.updated_at, r.updated_at) AS updated_at, r.id AS run_id, r.status AS run_status, \
        r.prefect_flow_run_id, r.records_processed, r.error_message";
}

/// Replaces a pipeline's definition (its slug stays).
pub async fn update_pipeline(db: impl PgExecutor<'_>, id: i64, p: &ValidPipeline) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE pipelines SET name = $2, description = $3, deployment = $4, stage_names = $5,
                default_parameters = $6, tags = $7, max_concurrent_runs = $8, updated_at = now()
         WHERE id = $1",
        id,
        p.name,
        p.description,
        p.deployment,
        &p.stage_names,
        p.default_parameters,
        &p.tags,
        p.max_concurrent_runs,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes a pipeline; its runs, stages and events go with it.
pub async fn delete_pipeline(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM pipelines WHERE id = $1", id)
        .execute(db)
        .await?;
    Ok(())
}

/// Stores a pipeline under `slug`; returns its id.
pub async fn insert_pipeline(db: impl PgExecutor<'_>, p: &ValidPipeline, slug: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO pipelines (slug, name, description, deployment, stage_names,
                                default_parameters, tags, max_concurrent_runs)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        slug,
        p.name,
        p.description,
        p.deployment,
        &p.stage_names,
        p.default_parameters,
        &p.tags,
        p.max_concurrent_runs,
    )
    .fetch_one(db)
    .await
}

/// Slugs in use that equal `base` or extend it with a dash.
pub async fn slugs_like(db: impl PgExecutor<'_>, base: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r"SELECT slug FROM pipelines WHERE slug = $1 OR slug LIKE $1 || '-%'",
        base
    )
    .fetch_all(db)
    .await
}

/// The id of the pipeline with this slug.
pub async fn id_by_slug(db: impl PgExecutor<'_>, slug: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!("SELECT id FROM pipelines WHERE slug = $1", slug)
        .fetch_optional(db)
        .await
}

/// Locks a pipeline's row for a change to it; `None` when there is none.
pub async fn lock_pipeline(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!("SELECT id FROM pipelines WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(db)
        .await
}

/// What the dashboard asks for; `pattern` is an `ILIKE` pattern, `sort` one of
/// `updated`, `name`, `status`, `created`.
pub struct DashboardFilter<'a> {
    /// Name, slug or tag contains.
    pub pattern: Option<&'a str>,
    /// The latest run's status (`pending` for none).
    pub status: Option<&'a str>,
    /// Carries this tag exactly.
    pub tag: Option<&'a str>,
    /// Order.
    pub sort: &'a str,
    /// The caller's scope: pipelines outside it are left out.
    pub scope: &'a KeyScope,
}

/// One dashboard page of pipelines matching `filter`, with their latest runs.
pub async fn dashboard_page(
    db: impl PgExecutor<'_>,
    filter: &DashboardFilter<'_>,
    skip: i64,
    limit: i64,
) -> sqlx::Result<Vec<PipelineRow>> {
    sqlx::query_as!(
        PipelineRow,
        r#"SELECT p.id, p.slug, p.name, p.description, p.deployment, p.stage_names,
                  p.default_parameters, p.tags, p.max_concurrent_runs, p.created_at,
                  GREATEST(p.updated_at, r.updated_at) AS "updated_at!",
                  r.id AS "run_id?", r.status AS "run_status?",
                  r.prefect_flow_run_id AS "prefect_flow_run_id?",
                  r.records_processed AS "records_processed?", r.error_message AS "error_message?"
           FROM pipelines p
           LEFT JOIN LATERAL (SELECT id, status, updated_at, prefect_flow_run_id, records_processed,
                                     error_message
                              FROM runs WHERE runs.id = p.latest_run_id OFFSET 0) r ON true
           WHERE ($1::text IS NULL OR p.name ILIKE $1 OR p.slug ILIKE $1
                  OR EXISTS (SELECT 1 FROM unnest(p.tags) AS t (tag) WHERE t.tag ILIKE $1))
             AND ($2::text IS NULL OR coalesce(r.status, 'pending') = $2)
             AND ($3::text IS NULL OR $3 = ANY (p.tags))
             AND (NOT $7::bool OR p.id = ANY($8) OR p.slug = ANY($9) OR p.tags && $10)
           ORDER BY CASE WHEN $4 = 'name' THEN lower(p.name) END ASC,
                    CASE WHEN $4 = 'status' THEN coalesce(r.status, 'pending') END ASC,
                    CASE WHEN $4 = 'updated' THEN GREATEST(p.updated_at, r.updated_at) END DESC,
                    p.created_at DESC, p.id DESC
           OFFSET $5 LIMIT $6"#,
        filter.pattern,
        filter.status,
        filter.tag,
        filter.sort,
        skip,
        limit,
        filter.scope.limits_pipelines(),
        &filter.scope.pipeline_ids,
        &filter.scope.slugs,
        &filter.scope.tags,
    )
    .fetch_all(db)
    .await
}

/// How many pipelines match `filter` (its `sort` aside).
pub async fn dashboard_count(db: impl PgExecutor<'_>, filter: &DashboardFilter<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!"
           FROM pipelines p
           LEFT JOIN LATERAL (SELECT status FROM runs WHERE runs.id = p.latest_run_id OFFSET 0) r ON true
           WHERE ($1::text IS NULL OR p.name ILIKE $1 OR p.slug ILIKE $1
                  OR EXISTS (SELECT 1 FROM unnest(p.tags) AS t (tag) WHERE t.tag ILIKE $1))
             AND ($2::text IS NULL OR coalesce(r.status, 'pending') = $2)
             AND ($3::text IS NULL OR $3 = ANY (p.tags))
             AND (NOT $4::bool OR p.id = ANY($5) OR p.slug = ANY($6) OR p.tags && $7)"#,
        filter.pattern,
        filter.status,
        filter.tag,
        filter.scope.limits_pipelines(),
        &filter.scope.pipeline_ids,
        &filter.scope.slugs,
        &filter.scope.tags,
    )
    .fetch_one(db)
    .await
}

/// Every pipeline in `scope` counted by its latest run's status (`pending` for none).
pub async fn count_by_status(db: impl PgExecutor<'_>, scope: &KeyScope) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT coalesce(r.status, 'pending') AS "status!", count(*) AS "count!"
           FROM pipelines p
           LEFT JOIN LATERAL (SELECT status FROM runs WHERE runs.id = p.latest_run_id OFFSET 0) r ON true
           WHERE (NOT $1::bool OR p.id = ANY($2) OR p.slug = ANY($3) OR p.tags && $4)
           GROUP BY 1"#,
        scope.limits_pipelines(),
        &scope.pipeline_ids,
        &scope.slugs,
        &scope.tags,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// One pipeline with its latest run.
pub async fn pipeline_by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<PipelineRow>> {
    sqlx::query_as!(
        PipelineRow,
        r#"SELECT p.id, p.slug, p.name, p.description, p.deployment, p.stage_names,
                  p.default_parameters, p.tags, p.max_concurrent_runs, p.created_at,
                  GREATEST(p.updated_at, r.updated_at) AS "updated_at!",
                  r.id AS "run_id?", r.status AS "run_status?",
                  r.prefect_flow_run_id AS "prefect_flow_run_id?",
                  r.records_processed AS "records_processed?", r.error_message AS "error_message?"
           FROM pipelines p
           LEFT JOIN runs r ON r.id = p.latest_run_id
           WHERE p.id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Pipelines with their latest runs, for listings. Each latest run is looked up by its key
/// (`OFFSET 0` keeps the planner from turning the lookups into a join): as a join, the
/// planner hashes all of `runs` once the pipelines outnumber a few thousand (465-900 ms at
/// 10,000 pipelines and 1,000,000 runs, against 20-30 ms looked up). The dashboard's
/// queries above are written the same way.
const FILTER_FROM: &str = " FROM pipelines p LEFT JOIN LATERAL (SELECT id, status, updated_at, \
    prefect_flow_run_id, records_processed, error_message FROM runs \
    WHERE runs.id = p.latest_run_id OFFSET 0) r ON true";

/// One page (`(limit, offset)`) of the pipelines in `scope` matching `criteria` in `sort` order.
///
/// With their latest runs. Newest first, it is cut from the `created_at` index before
/// anything is joined, whatever the number of pipelines.
pub async fn matching(
    db: impl PgExecutor<'_>,
    criteria: &PipelineCriteria,
    scope: &KeyScope,
    sort: PipelineSort,
    page: (i64, i64),
) -> sqlx::Result<Vec<PipelineRow>> {
    let mut w = Where::new(format!("SELECT {}{FILTER_FROM}", PipelineRow::COLUMNS).as_str());
    criteria.apply(&mut w);
    w.in_scope(scope);
    let order = match sort {
        PipelineSort::CreatedDesc => " ORDER BY p.created_at DESC, p.id DESC",
        PipelineSort::CreatedAsc => " ORDER BY p.created_at, p.id",
        PipelineSort::NameAsc => " ORDER BY lower(p.name), p.id",
        PipelineSort::NameDesc => " ORDER BY lower(p.name) DESC, p.id DESC",
        PipelineSort::UpdatedDesc => " ORDER BY GREATEST(p.updated_at, r.updated_at) DESC, p.id DESC",
        PipelineSort::UpdatedAsc => " ORDER BY GREATEST(p.updated_at, r.updated_at), p.id",
        PipelineSort::IdAsc => " ORDER BY p.id",
        PipelineSort::IdDesc => " ORDER BY p.id DESC",
    };
    w.page(order, page);
    w.query.build_query_as::<PipelineRow>().fetch_all(db).await
}

/// How many pipelines in `scope` match `criteria`.
pub async fn count_matching(
    db: impl PgExecutor<'_>,
    criteria: &PipelineCriteria,
    scope: &KeyScope,
) -> sqlx::Result<i64> {
    let mut w = Where::new(format!("SELECT count(*){FILTER_FROM}").as_str());
    criteria.apply(&mut w);
    w.in_scope(scope);
    w.query.build_query_scalar::<i64>().fetch_one(db).await
}

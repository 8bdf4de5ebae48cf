//! Pipeline operations shared by REST handlers and server functions.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;

use super::filter::{PipelineFilter, PipelineSort};
use super::validate::slugify;
use super::{DashboardPage, DashboardQuery, SORTS};
use super::{NewPipeline, Pipeline, db};
use crate::api::cache;
use crate::api::cache::{Answers, Scope};
use crate::api::encoding::Kept;
use crate::caller::record;
use crate::caller::{Caller, KeyScope, Role};
use crate::error::{AppError, Result, ResultExt};
use crate::filter::{PipelineCriteria, paging};
use crate::runs::{self, Stage};
use crate::status::RunStatus;

/// Largest page a listing returns.
pub const MAX_LIMIT: i64 = 1000;

/// Checks `skip`/`limit` of a listing, naming the bad one.
pub fn check_page(skip: i64, limit: i64) -> Result<()> {
    if skip < 0 {
        return Err(AppError::invalid("skip", "must not be negative"));
    }
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(())
}

/// Changes the fields of a pipeline that `patch` names, checked as on creation.
#[tracing::instrument(name = "pipelines.update", skip_all)]
pub async fn update(
    pool: &PgPool,
    caller: &Caller,
    id: i64,
    patch: super::PipelinePatch,
) -> Result<Pipeline> {
    caller.require(Role::Admin)?;
    let mut tx = pool.begin().await?;
    db::lock_pipeline(&mut *tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("Pipeline"))?;
    let current = db::pipeline_by_id(&mut *tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("Pipeline"))?;
    let merged = NewPipeline {
        name: patch.name.unwrap_or(current.name),
        description: patch.description.unwrap_or(current.description),
        slug: Some(current.slug),
        deployment: patch.deployment.unwrap_or(current.deployment),
        stages: Some(patch.stages.unwrap_or(current.stage_names)),
        default_parameters: Some(patch.default_parameters.unwrap_or(current.default_parameters)),
        tags: Some(patch.tags.unwrap_or(current.tags)),
        max_concurrent_runs: patch.max_concurrent_runs.unwrap_or(current.max_concurrent_runs),
        status: None,
    };
    let valid = merged.validate()?;
    db::update_pipeline(&mut *tx, id, &valid).await?;
    record::success(&mut *tx, caller, "pipeline.update", &format!("pipeline:{id}")).await?;
    tx.commit().await?;
    get(pool, caller, id).await
}

/// Deletes a pipeline with its runs' history; refused while a run is unfinished.
#[tracing::instrument(name = "pipelines.delete", skip_all)]
pub async fn delete(pool: &PgPool, caller: &Caller, id: i64) -> Result<()> {
    caller.require(Role::Admin)?;
    let mut tx = pool.begin().await?;
    db::lock_pipeline(&mut *tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("Pipeline"))?;
    let unfinished = runs::db::count_active_runs(&mut *tx, id).await?;
    if unfinished > 0 {
        return Err(AppError::conflict(format!(
            "pipeline {id} has {unfinished} unfinished run(s); cancel them or wait for them to end"
        )));
    }
    db::delete_pipeline(&mut *tx, id).await?;
    record::success(&mut *tx, caller, "pipeline.delete", &format!("pipeline:{id}")).await?;
    tx.commit().await?;
    tracing::info!(pipeline.id = id, "pipeline deleted");
    Ok(())
}

/// Rows with their latest run's stages and recent outcomes, as the API answers them.
pub(crate) async fn with_stages(pool: &PgPool, rows: Vec<db::PipelineRow>) -> Result<Vec<Pipeline>> {
    let run_ids: Vec<i64> = rows.iter().filter_map(|r| r.run_id).collect();
    let pipeline_ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut stages: HashMap<i64, Vec<Stage>> = HashMap::new();
    for stage in runs::db::stages_for_runs(pool, &run_ids).await? {
        stages
            .entry(stage.run_id.unwrap_or_default())
            .or_default()
            .push(stage);
    }
    let mut outcomes: HashMap<i64, Vec<(RunStatus, Option<f64>)>> = HashMap::new();
    for (pipeline_id, status, seconds) in runs::db::recent_outcomes(pool, &pipeline_ids, 10).await? {
        outcomes.entry(pipeline_id).or_default().push((status, seconds));
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let run_stages: Vec<Stage> = match row.run_id {
                Some(run_id) => stages.remove(&run_id).unwrap_or_default(),
                None => row
                    .stage_names
                    .iter()
                    .zip(0..)
                    .map(|(name, position)| Stage::planned(row.id, position, name))
                    .collect(),
            };
            // Oldest first, as the sparkline draws them.
            let mut recent_runs = outcomes.remove(&row.id).unwrap_or_default();
            recent_runs.reverse();
            Pipeline {
                id: row.id,
                slug: row.slug,
                name: row.name,
                description: row.description,
                status: row
                    .run_status
                    .as_deref()
                    .map_or(RunStatus::Pending, RunStatus::from_db),
                created_at: row.created_at,
                updated_at: row.updated_at,
                prefect_flow_run_id: row.prefect_flow_run_id,
                records_processed: row.records_processed.unwrap_or(0),
                error_message: row.error_message,
                recent_runs,
                stages: run_stages,
                latest_run_id: row.run_id,
                deployment: row.deployment,
                stage_names: row.stage_names,
                default_parameters: row.default_parameters,
                tags: row.tags,
                max_concurrent_runs: row.max_concurrent_runs,
            }
        })
        .collect())
}

/// A page of pipelines, newest first, each with its latest run and stages.
#[tracing::instrument(name = "pipelines.list", skip_all)]
pub async fn list(
    pool: &PgPool,
    answers: &Answers,
    caller: &Caller,
    skip: i64,
    limit: i64,
) -> Result<Arc<Kept>> {
    caller.require(Role::Viewer)?;
    check_page(skip, limit)?;
    // A scoped caller's answers are kept apart: the scope is part of the key.
    answers
        .answer(
            cache::key("pipelines.list", &(skip, limit, caller.scope.listing())),
            || async {
                let page = page_of(
                    pool,
                    &crate::filter::PipelineCriteria::default(),
                    &caller.scope,
                    super::filter::PipelineSort::CreatedDesc,
                    (limit, skip),
                )
                .await?;
                cache::to_json(&page)
            },
        )
        .await
}

/// Pipelines per dashboard page.
pub const PER_PAGE: i64 = 50;

/// One dashboard page: filtered, sorted, paginated, with totals by status.
#[tracing::instrument(name = "pipelines.dashboard", skip_all)]
pub async fn dashboard(pool: &PgPool, caller: &Caller, query: &DashboardQuery) -> Result<DashboardPage> {
    caller.require(Role::Viewer)?;
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > 200) {
        return Err(AppError::invalid("q", "must be at most 200 characters"));
    }
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| RunStatus::parse(s, "status"))
        .transpose()?;
    let tag = query.tag.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let sort = query
        .sort
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("updated");
    if !SORTS.contains(&sort) {
        return Err(AppError::invalid(
            "sort",
            "must be one of updated, name, status, created",
        ));
    }
    let page = query.page.unwrap_or(1);
    if !(1..=100_000).contains(&page) {
        return Err(AppError::invalid("page", "must be a page number from 1"));
    }
    let escaped = q.map(crate::filter::contains_pattern);
    let filter = db::DashboardFilter {
        pattern: escaped.as_deref(),
        status: status.map(RunStatus::as_str),
        tag,
        sort,
        scope: &caller.scope,
    };
    let rows = db::dashboard_page(pool, &filter, (page - 1) * PER_PAGE, PER_PAGE).await?;
    let total = db::dashboard_count(pool, &filter).await?;
    let mut by_status: Vec<(RunStatus, i64)> = db::count_by_status(pool, &caller.scope)
        .await?
        .into_iter()
        .map(|(s, n)| (RunStatus::from_db(&s), n))
        .collect();
    by_status.sort_by_key(|(s, _)| RunStatus::ALL.iter().position(|x| x == s));
    Ok(DashboardPage {
        pipelines: with_stages(pool, rows).await?,
        total,
        page,
        per_page: PER_PAGE,
        by_status,
    })
}

/// One pipeline with its latest run and stages.
#[tracing::instrument(name = "pipelines.get", skip_all)]
pub async fn get(pool: &PgPool, caller: &Caller, id: i64) -> Result<Pipeline> {
    caller.require(Role::Viewer)?;
    let pipeline = read(pool, id).await?;
    if !caller.scope.covers(pipeline.id, &pipeline.slug, &pipeline.tags) {
        return Err(AppError::not_found("Pipeline"));
    }
    Ok(pipeline)
}

/// One pipeline with its latest run, as the JSON `GET /api/pipelines/{id}` answers; kept
/// until the database may have changed, like the listings.
#[tracing::instrument(name = "pipelines.get_json", skip_all)]
pub async fn get_json(pool: &PgPool, answers: &Answers, caller: &Caller, id: i64) -> Result<Arc<Kept>> {
    caller.require(Role::Viewer)?;
    // The answer is the same for every caller who may see it.
    caller.sees_pipeline(pool, id).await?;
    answers
        .answer_in(Scope::Pipeline(id), cache::key("pipelines.get", &id), || async {
            cache::to_json(&read(pool, id).await?)
        })
        .await
}

/// The id of the pipeline `reference` names (an id or a slug), if the caller sees it.
#[tracing::instrument(name = "pipelines.resolve", skip_all)]
pub async fn resolve(pool: &PgPool, caller: &Caller, reference: &str) -> Result<i64> {
    caller.require(Role::Viewer)?;
    let reference = reference.trim();
    let id = match reference.parse::<i64>() {
        Ok(id) => Some(id),
        Err(_) => db::id_by_slug(pool, reference).await?,
    }
    .ok_or_else(|| AppError::not_found("Pipeline"))?;
    caller.sees_pipeline(pool, id).await?;
    Ok(id)
}

async fn read(pool: &PgPool, id: i64) -> Result<Pipeline> {
    let row = db::pipeline_by_id(pool, id)
        .await?
        .ok_or_else(|| AppError::not_found("Pipeline"))?;
    Ok(with_stages(pool, vec![row]).await?.remove(0))
}

/// The first free slug among `base`, `base-2`, `base-3`, ...
fn free_slug(base: &str, taken: &[String]) -> String {
    (1..)
        .map(|n| {
            if n == 1 {
                base.to_owned()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|candidate| !taken.contains(candidate))
        .expect("an unbounded range always yields a free slug")
}

/// Creates a pipeline (admins only) and audits it.
#[tracing::instrument(name = "pipelines.create", skip_all)]
pub async fn create(pool: &PgPool, caller: &Caller, new: NewPipeline) -> Result<Pipeline> {
    caller.require(Role::Admin)?;
    let valid = new.validate()?;
    let mut tx = pool.begin().await?;
    let slug = match &valid.slug {
        Some(slug) => slug.clone(),
        None => {
            let base = slugify(&valid.name);
            free_slug(&base, &db::slugs_like(&mut *tx, &base).await?)
        }
    };
    let id = db::insert_pipeline(&mut *tx, &valid, &slug)
        .await
        .on_constraint("pipelines_slug_key", "a pipeline with this slug already exists")?;
    record::success(&mut *tx, caller, "pipeline.create", &format!("pipeline:{id}")).await?;
    tx.commit().await?;
    tracing::info!(pipeline.id = id, pipeline.slug = %slug, "pipeline created");
    get(pool, caller, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_slug_skips_taken_ones() {
        assert_eq!(free_slug("etl", &[]), "etl");
        assert_eq!(free_slug("etl", &["etl".into(), "etl-2".into()]), "etl-3");
    }

    #[test]
    fn page_bounds_name_the_field() {
        assert!(check_page(0, 100).is_ok());
        assert!(matches!(check_page(-1, 10), Err(AppError::Invalid { field, .. }) if field == "skip"));
        assert!(matches!(check_page(0, 0), Err(AppError::Invalid { field, .. }) if field == "limit"));
        assert!(
            matches!(check_page(0, MAX_LIMIT + 1), Err(AppError::Invalid { field, .. }) if field == "limit")
        );
    }
}

/// The pipelines that match, with their latest runs.
#[tracing::instrument(name = "pipelines.filter", skip_all)]
pub async fn filter(
    pool: &PgPool,
    answers: &Answers,
    caller: &Caller,
    filter: &PipelineFilter,
) -> Result<Arc<Kept>> {
    caller.require(Role::Viewer)?;
    let page = paging(filter.limit, filter.offset)?;
    answers
        .answer(
            cache::key("pipelines.filter", &(filter, caller.scope.listing())),
            || async {
                cache::to_json(&page_of(pool, &filter.pipelines, &caller.scope, filter.sort, page).await?)
            },
        )
        .await
}

/// One page (`(limit, offset)`, already checked) of the pipelines matching `criteria`
/// in `sort` order, with their latest runs and stages.
async fn page_of(
    pool: &PgPool,
    criteria: &PipelineCriteria,
    scope: &KeyScope,
    sort: PipelineSort,
    page: (i64, i64),
) -> Result<Vec<Pipeline>> {
    let rows = db::matching(pool, criteria, scope, sort, page).await?;
    with_stages(pool, rows).await
}

/// How many pipelines match.
#[tracing::instrument(name = "pipelines.count", skip_all)]
pub async fn count(pool: &PgPool, caller: &Caller, filter: &PipelineFilter) -> Result<i64> {
    caller.require(Role::Viewer)?;
    // Paging does not change a count, but a bad one is still refused.
    paging(filter.limit, filter.offset)?;
    Ok(db::count_matching(pool, &filter.pipelines, &caller.scope).await?)
}

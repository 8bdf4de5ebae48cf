//! Pipeline operations shared by REST handlers and server functions.

use sqlx::PgPool;

use super::validate::slugify;
use super::{NewPipeline, Pipeline, db};
use crate::audit;
use crate::auth::middleware::RequestMeta;
use crate::auth::{Principal, Role};
use crate::error::{AppError, Result, ResultExt};
use crate::runs::{self, RunStatus, Stage};

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

async fn with_stages(pool: &PgPool, rows: Vec<db::PipelineRow>) -> Result<Vec<Pipeline>> {
    let run_ids: Vec<i64> = rows.iter().filter_map(|r| r.run_id).collect();
    let mut stages = runs::db::stages_for_runs(pool, &run_ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let run_stages: Vec<Stage> = match row.run_id {
                Some(run_id) => {
                    let (mine, rest) = std::mem::take(&mut stages)
                        .into_iter()
                        .partition(|s| s.run_id == Some(run_id));
                    stages = rest;
                    mine
                }
                None => row
                    .stage_names
                    .iter()
                    .zip(0..)
                    .map(|(name, position)| Stage::planned(row.id, position, name))
                    .collect(),
            };
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
pub async fn list(pool: &PgPool, principal: &Principal, skip: i64, limit: i64) -> Result<Vec<Pipeline>> {
    principal.require(Role::Viewer)?;
    check_page(skip, limit)?;
    let rows = db::list_pipelines(pool, skip, limit).await?;
    with_stages(pool, rows).await
}

/// One pipeline with its latest run and stages.
pub async fn get(pool: &PgPool, principal: &Principal, id: i64) -> Result<Pipeline> {
    principal.require(Role::Viewer)?;
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
pub async fn create(
    pool: &PgPool,
    principal: &Principal,
    meta: &RequestMeta,
    new: NewPipeline,
) -> Result<Pipeline> {
    principal.require(Role::Admin)?;
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
    audit::record_success(
        &mut *tx,
        principal,
        "pipeline.create",
        &format!("pipeline:{id}"),
        meta,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(pipeline.id = id, pipeline.slug = %slug, "pipeline created");
    get(pool, principal, id).await
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

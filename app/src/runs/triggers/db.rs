//! The set-based statements of a group of triggers: a fixed number whatever its size.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::runs::db::RunTemplate;

/// A locked pipeline: its name (for the answers) and what it gives each run.
pub struct Locked {
    pub name: String,
    pub template: RunTemplate,
}

/// Locks the pipelines' rows (so concurrent triggers see each other's runs) and reads their
/// names and run templates; a pipeline another transaction holds, or that does not exist,
/// is left out.
pub async fn lock_templates(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<HashMap<i64, Locked>> {
    let rows = sqlx::query!(
        "SELECT id, name, deployment, stage_names, default_parameters, max_concurrent_runs
         FROM pipelines WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let template = RunTemplate {
                deployment: r.deployment,
                stage_names: r.stage_names,
                default_parameters: r.default_parameters,
                max_concurrent_runs: r.max_concurrent_runs,
            };
            (
                r.id,
                Locked {
                    name: r.name,
                    template,
                },
            )
        })
        .collect())
}

/// Unfinished runs of each pipeline (pipelines with none are absent).
pub async fn active_runs(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<HashMap<i64, i64>> {
    let rows = sqlx::query!(
        r#"SELECT pipeline_id, count(*) AS "count!" FROM runs
           WHERE pipeline_id = ANY($1) AND status NOT IN ('completed', 'failed', 'cancelled', 'crashed')
           GROUP BY pipeline_id"#,
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.pipeline_id, r.count)).collect())
}

/// Runs about to be recorded together, one entry per run in each column.
#[derive(Default)]
pub struct NewRuns {
    pub pipeline_ids: Vec<i64>,
    pub parameters: Vec<serde_json::Value>,
    pub actors: Vec<String>,
    pub sources: Vec<String>,
    pub request_ids: Vec<String>,
    pub traceparents: Vec<Option<String>>,
    pub callback_token_hashes: Vec<Vec<u8>>,
    pub api_key_ids: Vec<Option<i64>>,
    /// The stages of every run: the run's index in the columns above (from 1), position, name.
    pub stage_runs: Vec<i32>,
    pub stage_positions: Vec<i32>,
    pub stage_names: Vec<String>,
}

/// What the database gave a recorded run: its id, times and stage ids (in stage order).
pub struct Recorded {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub stage_ids: Vec<i64>,
}

/// Records `runs` (`pending`) in one statement; answers what the database gave each, in
/// the same order, so that the answers need no second read.
///
/// With them go their stages, their outbox entries (holding each run's callback credential,
/// `callbacks`) and the first entry of each run's history (`accepted`, `pending`, by its
/// request, at `at`), and the dispatchers are woken: a group costs one round trip whatever
/// its size.
pub async fn insert_runs(
    conn: &mut PgConnection,
    runs: &NewRuns,
    callbacks: &[String],
    at: DateTime<Utc>,
) -> sqlx::Result<Vec<Recorded>> {
    // Each run is found again by its callback credential's hash, which is unique.
    let rows = sqlx::query!(
        r#"WITH input AS (
               SELECT * FROM unnest($1::bigint[], $2::jsonb[], $3::text[], $4::text[], $5::text[],
                                    $6::text[], $7::bytea[], $11::text[], $14::bigint[]) WITH ORDINALITY
                 AS i(pipeline_id, parameters, actor, source, request_id, traceparent, hash, callback,
                      api_key_id, ord)
           ), run AS (
               INSERT INTO runs (pipeline_id, parameters, actor, source, request_id, traceparent,
                                 callback_token_hash, api_key_id)
               SELECT pipeline_id, parameters, actor, source, request_id, traceparent, hash, api_key_id
               FROM input ORDER BY ord
               RETURNING id, callback_token_hash, created_at, updated_at
           ), recorded AS (
               SELECT run.id, run.created_at, run.updated_at, input.*
               FROM run JOIN input ON input.hash = run.callback_token_hash
           ), stages AS (
               INSERT INTO stage_runs (run_id, position, name)
               SELECT recorded.id, s.position, s.name
               FROM unnest($8::int[], $9::int[], $10::text[]) AS s(ord, position, name)
               JOIN recorded ON recorded.ord = s.ord
               RETURNING run_id, position, id
           ), outbox AS (
               INSERT INTO run_outbox (run_id, callback_token)
               SELECT id, callback FROM recorded
           ), accepted AS (
               INSERT INTO run_events (run_id, event_id, kind, status, occurred_at, request_id)
               SELECT id, 'flowdeck:' || gen_random_uuid()::text, 'accepted', 'pending', $12, request_id
               FROM recorded
           ), woken AS (
               SELECT pg_notify($13, max(id)::text) FROM recorded
           )
           SELECT recorded.id AS "id!", recorded.created_at AS "created_at!",
                  recorded.updated_at AS "updated_at!",
                  coalesce((SELECT array_agg(stages.id ORDER BY stages.position) FROM stages
                            WHERE stages.run_id = recorded.id), '{}') AS "stage_ids!"
           FROM recorded, woken ORDER BY recorded.ord"#,
        &runs.pipeline_ids,
        &runs.parameters,
        &runs.actors,
        &runs.sources,
        &runs.request_ids,
        &runs.traceparents as &[Option<String>],
        &runs.callback_token_hashes,
        &runs.stage_runs,
        &runs.stage_positions,
        &runs.stage_names,
        callbacks,
        at,
        crate::runs::dispatch::OUTBOX_CHANNEL,
        &runs.api_key_ids as &[Option<i64>],
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Recorded {
            id: r.id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            stage_ids: r.stage_ids,
        })
        .collect())
}

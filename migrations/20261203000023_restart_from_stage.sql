-- Restarting a run from one of its stages (POST /api/runs/{id}/retry with from_stage).
-- The new run starts at `from_stage`; the stages before it are carried over as `skipped`,
-- each naming the run whose output it reuses (`output_run_id`: the run that produced it,
-- followed through earlier restarts). A pruned run leaves the link empty, and the flow
-- then finds the output gone and says so.
ALTER TABLE runs ADD COLUMN from_stage text;

ALTER TABLE stage_runs DROP CONSTRAINT stage_runs_status_check,
    ADD CONSTRAINT stage_runs_status_check CHECK (status IN ('pending', 'scheduled', 'running', 'completed',
        'failed', 'cancelling', 'cancelled', 'crashed', 'paused', 'skipped')),
    ADD COLUMN output_run_id bigint REFERENCES runs (id) ON DELETE SET NULL;

-- Pruning a run looks up the stages that reuse its output.
CREATE INDEX stage_runs_output_run_id_idx ON stage_runs (output_run_id) WHERE output_run_id IS NOT NULL;

-- The last error-level lines of a failed or crashed run's flow log (at most 5, masked),
-- read from Prefect once its final state has settled: what the run page and
-- GET /api/runs/{id} show of the log beside the stage's report. NULL until read; an
-- empty array when there were none.
ALTER TABLE runs ADD COLUMN failure_logs jsonb;

CREATE OR REPLACE FUNCTION flowdeck_runs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowdeck_record_changes('run.status', array_agg(r.pipeline_id ORDER BY r.id),
                                    array_agg(r.id ORDER BY r.id),
                                    array_agg(flowdeck_run_json(r) ORDER BY r.id))
    FROM new_runs r JOIN old_runs o ON o.id = r.id
    WHERE (r.status, r.records_processed, r.prefect_state, r.prefect_message, r.prefect_flow_run_id,
           r.error_message, r.stuck_since, r.failure_logs)
          IS DISTINCT FROM
          (o.status, o.records_processed, o.prefect_state, o.prefect_message, o.prefect_flow_run_id,
           o.error_message, o.stuck_since, o.failure_logs);
    RETURN NULL;
END $$;

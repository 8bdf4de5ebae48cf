-- The message of the latest Prefect state a run was seen in ("Flow run encountered an
-- exception: …"), so a failed or crashed run can say what Prefect said beside what its
-- stage reported.
ALTER TABLE runs ADD COLUMN prefect_message text;

-- A new message is a change to the run: announced like its other shown fields, so kept
-- answers and live pages show it.
CREATE OR REPLACE FUNCTION flowdeck_runs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowdeck_record_changes('run.status', array_agg(r.pipeline_id ORDER BY r.id),
                                    array_agg(r.id ORDER BY r.id),
                                    array_agg(flowdeck_run_json(r) ORDER BY r.id))
    FROM new_runs r JOIN old_runs o ON o.id = r.id
    WHERE (r.status, r.records_processed, r.prefect_state, r.prefect_message, r.prefect_flow_run_id,
           r.error_message, r.stuck_since)
          IS DISTINCT FROM
          (o.status, o.records_processed, o.prefect_state, o.prefect_message, o.prefect_flow_run_id,
           o.error_message, o.stuck_since);
    RETURN NULL;
END $$;

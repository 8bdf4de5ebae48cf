-- The change feed's triggers on runs and stage runs run once per statement, not once per
-- row (issue 18): a statement that records or moves many runs (a group of triggers or of
-- status reports) writes its changes with one INSERT over the statement's transition
-- tables and announces them with one NOTIFY, whose payload lists the change ids
-- ("12,13,14"; several NOTIFYs when they would not fit in one). Pipelines keep their row
-- triggers: they change one at a time.

-- Announces the changes with these ids, at most 400 ids per NOTIFY (a payload must stay
-- under 8,000 bytes); none for none.
CREATE FUNCTION flowdeck_announce(ids bigint[]) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('flowdeck_changes', string_agg(id::text, ',' ORDER BY id))
    FROM unnest(ids) WITH ORDINALITY AS c(id, n)
    GROUP BY (n - 1) / 400;
$$;

-- Records changes of one kind, in the order given, and announces them: the one path
-- every change-feed trigger takes (the row triggers on pipelines too, through
-- flowdeck_record_change).
CREATE FUNCTION flowdeck_record_changes(change_kind text, pipeline_ids bigint[], run_ids bigint[],
                                        datas jsonb[])
RETURNS void LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO changes (kind, pipeline_id, run_id, data)
        SELECT change_kind, c.pipeline_id, c.run_id, c.data
        FROM unnest(pipeline_ids, run_ids, datas) WITH ORDINALITY AS c(pipeline_id, run_id, data, n)
        ORDER BY c.n
        RETURNING id
    )
    SELECT flowdeck_announce(array_agg(id)) FROM added;
$$;

CREATE OR REPLACE FUNCTION flowdeck_record_change(kind text, pipeline_id bigint, run_id bigint, data jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowdeck_record_changes(kind, ARRAY[pipeline_id], ARRAY[run_id], ARRAY[data]);
END $$;

CREATE FUNCTION flowdeck_run_json(r runs) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('id', r.id, 'pipeline_id', r.pipeline_id, 'status', r.status,
                              'records_processed', r.records_processed,
                              'error_message', r.error_message, 'prefect_state', r.prefect_state,
                              'prefect_flow_run_id', r.prefect_flow_run_id,
                              'created_at', r.created_at, 'started_at', r.started_at,
                              'ended_at', r.ended_at, 'updated_at', r.updated_at,
                              'stuck_since', r.stuck_since);
$$;

DROP TRIGGER runs_changed ON runs;
DROP TRIGGER runs_latest ON runs;
DROP TRIGGER stage_runs_changed ON stage_runs;
DROP FUNCTION flowdeck_run_changed();
DROP FUNCTION flowdeck_run_inserted();
DROP FUNCTION flowdeck_stage_changed();

-- New runs: run.created each, and each pipeline points at its newest run.
CREATE FUNCTION flowdeck_runs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowdeck_record_changes('run.created', array_agg(r.pipeline_id ORDER BY r.id),
                                    array_agg(r.id ORDER BY r.id),
                                    array_agg(flowdeck_run_json(r) ORDER BY r.id))
    FROM new_runs r;
    UPDATE pipelines p SET latest_run_id = n.newest
    FROM (SELECT pipeline_id, max(id) AS newest FROM new_runs GROUP BY pipeline_id) n
    WHERE p.id = n.pipeline_id AND (p.latest_run_id IS NULL OR p.latest_run_id < n.newest);
    RETURN NULL;
END $$;
CREATE TRIGGER runs_inserted AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_runs_inserted();

-- Moved runs: run.status for each whose shown fields changed.
CREATE FUNCTION flowdeck_runs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowdeck_record_changes('run.status', array_agg(r.pipeline_id ORDER BY r.id),
                                    array_agg(r.id ORDER BY r.id),
                                    array_agg(flowdeck_run_json(r) ORDER BY r.id))
    FROM new_runs r JOIN old_runs o ON o.id = r.id
    WHERE (r.status, r.records_processed, r.prefect_state, r.prefect_flow_run_id,
           r.error_message, r.stuck_since)
          IS DISTINCT FROM
          (o.status, o.records_processed, o.prefect_state, o.prefect_flow_run_id,
           o.error_message, o.stuck_since);
    RETURN NULL;
END $$;
CREATE TRIGGER runs_updated AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_runs_updated();

-- Moved stages: stage.status for each whose status, count or message changed. (Stage runs
-- are announced when they change, not when a run creates them: run.created covers that.)
CREATE FUNCTION flowdeck_stages_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The run's pipeline by its key (a join may hash all of runs for a few stages).
    PERFORM flowdeck_record_changes(
        'stage.status',
        array_agg((SELECT pipeline_id FROM runs WHERE runs.id = s.run_id) ORDER BY s.id),
        array_agg(s.run_id ORDER BY s.id),
        array_agg(jsonb_build_object('id', s.id, 'run_id', s.run_id, 'position', s.position,
                                     'name', s.name, 'status', s.status,
                                     'records_processed', s.records_processed,
                                     'error_message', CASE WHEN s.status = 'failed' THEN s.message END,
                                     'started_at', s.started_at, 'completed_at', s.ended_at)
                  ORDER BY s.id))
    FROM new_stages s JOIN old_stages o ON o.id = s.id
    WHERE (s.status, s.records_processed, s.message)
          IS DISTINCT FROM (o.status, o.records_processed, o.message);
    RETURN NULL;
END $$;
CREATE TRIGGER stage_runs_updated AFTER UPDATE ON stage_runs
    REFERENCING OLD TABLE AS old_stages NEW TABLE AS new_stages
    FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_stages_updated();

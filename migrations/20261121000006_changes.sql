-- The change feed behind `GET /api/events`: one row per change to a pipeline, run or
-- stage run, written by triggers in the changing transaction (so every writer, on every
-- replica, feeds it), announced at commit by NOTIFY with the row id only. Subscribers that
-- reconnect replay from it (`Last-Event-ID`); rows older than a day are pruned.
CREATE TABLE changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL,
    pipeline_id bigint NOT NULL,
    run_id      bigint,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_created_at_idx ON changes (created_at);

CREATE FUNCTION flowdeck_record_change(kind text, pipeline_id bigint, run_id bigint, data jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    change_id bigint;
BEGIN
    INSERT INTO changes (kind, pipeline_id, run_id, data)
    VALUES (kind, pipeline_id, run_id, data)
    RETURNING id INTO change_id;
    PERFORM pg_notify('flowdeck_changes', change_id::text);
END $$;

CREATE FUNCTION flowdeck_pipeline_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowdeck_record_change(
        CASE TG_OP WHEN 'INSERT' THEN 'pipeline.created' ELSE 'pipeline.updated' END,
        NEW.id, NULL,
        jsonb_build_object('id', NEW.id, 'slug', NEW.slug, 'name', NEW.name,
                           'description', NEW.description, 'tags', to_jsonb(NEW.tags),
                           'updated_at', NEW.updated_at));
    RETURN NULL;
END $$;
CREATE TRIGGER pipelines_changed AFTER INSERT OR UPDATE ON pipelines
    FOR EACH ROW EXECUTE FUNCTION flowdeck_pipeline_changed();

CREATE FUNCTION flowdeck_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.status IS NOT DISTINCT FROM OLD.status
       AND NEW.records_processed IS NOT DISTINCT FROM OLD.records_processed
       AND NEW.prefect_state IS NOT DISTINCT FROM OLD.prefect_state
       AND NEW.prefect_flow_run_id IS NOT DISTINCT FROM OLD.prefect_flow_run_id
       AND NEW.error_message IS NOT DISTINCT FROM OLD.error_message
       AND NEW.stuck_since IS NOT DISTINCT FROM OLD.stuck_since THEN
        RETURN NULL;
    END IF;
    PERFORM flowdeck_record_change(
        CASE TG_OP WHEN 'INSERT' THEN 'run.created' ELSE 'run.status' END,
        NEW.pipeline_id, NEW.id,
        jsonb_build_object('id', NEW.id, 'pipeline_id', NEW.pipeline_id, 'status', NEW.status,
                           'records_processed', NEW.records_processed,
                           'error_message', NEW.error_message, 'prefect_state', NEW.prefect_state,
                           'prefect_flow_run_id', NEW.prefect_flow_run_id,
                           'created_at', NEW.created_at, 'started_at', NEW.started_at,
                           'ended_at', NEW.ended_at, 'updated_at', NEW.updated_at,
                           'stuck_since', NEW.stuck_since));
    RETURN NULL;
END $$;
CREATE TRIGGER runs_changed AFTER INSERT OR UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION flowdeck_run_changed();

-- Stage runs are announced when they change, not when a run creates them (run.created
-- covers that).
CREATE FUNCTION flowdeck_stage_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS NOT DISTINCT FROM OLD.status
       AND NEW.records_processed IS NOT DISTINCT FROM OLD.records_processed
       AND NEW.message IS NOT DISTINCT FROM OLD.message THEN
        RETURN NULL;
    END IF;
    PERFORM flowdeck_record_change(
        'stage.status',
        (SELECT pipeline_id FROM runs WHERE id = NEW.run_id), NEW.run_id,
        jsonb_build_object('id', NEW.id, 'run_id', NEW.run_id, 'position', NEW.position,
                           'name', NEW.name, 'status', NEW.status,
                           'records_processed', NEW.records_processed,
                           'error_message', CASE WHEN NEW.status = 'failed' THEN NEW.message END,
                           'started_at', NEW.started_at, 'completed_at', NEW.ended_at));
    RETURN NULL;
END $$;
CREATE TRIGGER stage_runs_changed AFTER UPDATE ON stage_runs
    FOR EACH ROW EXECUTE FUNCTION flowdeck_stage_changed();

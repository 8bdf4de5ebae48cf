-- Each pipeline points at its latest run, kept by a trigger, so the dashboard joins one run
-- per pipeline by primary key instead of searching each pipeline's runs (three times a
-- page: rows, count and totals by status).
--
-- "Latest" is the most recently inserted run: triggers on one pipeline are serialised by
-- its row lock, so ids grow in the order runs are accepted. No foreign key: deleting a
-- pipeline deletes its runs, and a SET NULL back onto the row being deleted would fail.
ALTER TABLE pipelines ADD COLUMN latest_run_id bigint;

-- A pipeline change is announced unless only its latest run moved (run.created says that).
CREATE OR REPLACE FUNCTION flowdeck_pipeline_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND to_jsonb(NEW) - 'latest_run_id' = to_jsonb(OLD) - 'latest_run_id' THEN
        RETURN NULL;
    END IF;
    PERFORM flowdeck_record_change(
        CASE TG_OP WHEN 'INSERT' THEN 'pipeline.created' ELSE 'pipeline.updated' END,
        NEW.id, NULL,
        jsonb_build_object('id', NEW.id, 'slug', NEW.slug, 'name', NEW.name,
                           'description', NEW.description, 'tags', to_jsonb(NEW.tags),
                           'updated_at', NEW.updated_at));
    RETURN NULL;
END $$;

CREATE FUNCTION flowdeck_run_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pipelines SET latest_run_id = NEW.id
    WHERE id = NEW.pipeline_id AND (latest_run_id IS NULL OR latest_run_id < NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER runs_latest AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION flowdeck_run_inserted();

UPDATE pipelines p SET latest_run_id = (SELECT max(id) FROM runs WHERE runs.pipeline_id = p.id);

-- A deleted pipeline is a change too: subscribers on every replica hear of it, and every
-- replica's kept answers (which list pipelines) are read afresh.
CREATE FUNCTION flowdeck_pipeline_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowdeck_record_change('pipeline.deleted', OLD.id, NULL,
                                   jsonb_build_object('id', OLD.id, 'slug', OLD.slug));
    RETURN NULL;
END $$;
CREATE TRIGGER pipelines_deleted AFTER DELETE ON pipelines
    FOR EACH ROW EXECUTE FUNCTION flowdeck_pipeline_deleted();

-- Which request sent each stage or run report (and which accepted each run): one request
-- id finds a report in the run's history as well as in the audit trail.
ALTER TABLE run_events ADD COLUMN request_id text;

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

-- A change to what an API key grants (revoked, expiring, another role or name, deleted)
-- is announced, so replicas that remember verified keys forget them at once.
CREATE FUNCTION flowdeck_api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowdeck_keys', '');
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.role IS DISTINCT FROM NEW.role OR OLD.name IS DISTINCT FROM NEW.name
          OR OLD.key_hash IS DISTINCT FROM NEW.key_hash)
    EXECUTE FUNCTION flowdeck_api_key_changed();
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION flowdeck_api_key_changed();

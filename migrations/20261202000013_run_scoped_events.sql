-- Hardening for a real deployment (issue 16).

-- Report event ids are unique per run, not across runs: a report on one run can no longer
-- silence another run's events by taking their ids first.
ALTER TABLE run_events DROP CONSTRAINT run_events_event_id_key;
ALTER TABLE run_events ADD CONSTRAINT run_events_run_id_event_id_key UNIQUE (run_id, event_id);
-- Ids Flowdeck makes itself start with `flowdeck:`, a prefix reports may not use.
ALTER TABLE run_events ALTER COLUMN event_id SET DEFAULT 'flowdeck:' || gen_random_uuid()::text;

-- A session signed out or revoked is announced like a change to keys, so that every
-- replica's event streams opened with it check it again and end.
CREATE TRIGGER sessions_ended AFTER UPDATE ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION flowdeck_api_key_changed();

-- Hardening for a real deployment (issue 16).

-- Report event ids are unique per run, not across runs: a report on one run can no longer
-- silence another run's events by taking their ids first.
ALTER TABLE run_events DROP CONSTRAINT run_events_event_id_key;
ALTER TABLE run_events ADD CONSTRAINT run_events_run_id_event_id_key UNIQUE (run_id, event_id);
-- Ids Flowdeck makes itself start with `flowdeck:`, a prefix reports may not use.
ALTER TABLE run_events ALTER COLUMN event_id SET DEFAULT 'flowdeck:' || gen_random_uuid()::text;
-- Runs still going keep their history free of repeats: their Prefect states and submission
-- get the new ids, so a state seen again after the upgrade is known (finished runs see
-- no more states; their rows keep the old ids).
UPDATE run_events SET event_id = 'flowdeck:' || CASE
        WHEN event_id LIKE 'prefect-state-%' THEN event_id
        WHEN event_id LIKE 'submit-failed-%' THEN 'submit-failed'
        ELSE 'submitted' END
    WHERE run_id IN (SELECT id FROM runs WHERE ended_at IS NULL)
      AND (event_id LIKE 'prefect-state-%' OR event_id = 'submitted-' || run_id
           OR event_id = 'submit-failed-' || run_id);

-- A session signed out or revoked is announced like a change to keys, so that every
-- replica's event streams opened with it check it again and end.
CREATE TRIGGER sessions_ended AFTER UPDATE ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION flowdeck_api_key_changed();

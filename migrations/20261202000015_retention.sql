-- Retention: data that grows forever is pruned by age. The server's settings
-- (FLOWDECK_RETAIN_*) bound run events, changes, sessions, idempotency keys and pending
-- sign-ins; the audit trail is kept unless an admin sets a retention, stored here so that
-- every replica and the pruning function below read the same value.
CREATE TABLE settings (
    -- One row only: the key can only be true.
    id                   boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- Days audit events are kept; NULL keeps them forever.
    audit_retention_days integer CHECK (audit_retention_days BETWEEN 1 AND 36500),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
INSERT INTO settings DEFAULT VALUES;

-- The pruner's age predicates (changes and idempotency keys have theirs; audit events use
-- audit_events_occurred_at_idx; pending sign-ins are a handful of rows).
CREATE INDEX run_events_recorded_at_idx ON run_events (recorded_at);
-- When a session ended: least() skips NULL, so this is expires_at unless revoked earlier.
CREATE INDEX sessions_ended_at_idx ON sessions (least(expires_at, revoked_at));

-- The audit trail stays append-only, but for one door: a DELETE while
-- `flowdeck.pruning_audit` is 'on', which only flowdeck_prune_audit sets (for its own call).
-- That is safe: privileges are checked before triggers run, so only a role that may DELETE
-- from audit_events ever reaches this trigger, and such a role (the owner) could drop the
-- trigger anyway. The server's role has no DELETE on audit_events; it can only call the
-- function, which decides what is old from the settings row, never from its caller.
-- UPDATE and TRUNCATE are refused always.
CREATE OR REPLACE FUNCTION flowdeck_audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('flowdeck.pruning_audit', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- Deletes at most `batch` (capped at 10,000) audit events older than the admin's retention,
-- oldest first, and returns how many; none while no retention is set. It runs as its owner
-- and opens the trigger's door for its own DELETE only, closing it again before it returns
-- (set_config rather than a SET clause: an owner that is not a superuser, as on managed
-- PostgreSQL, may not attach a custom setting to a function).
CREATE FUNCTION flowdeck_prune_audit(batch integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    keep_days integer;
    deleted   integer;
BEGIN
    SELECT audit_retention_days INTO keep_days FROM settings;
    IF keep_days IS NULL OR batch IS NULL OR batch < 1 THEN
        RETURN 0;
    END IF;
    PERFORM set_config('flowdeck.pruning_audit', 'on', true);
    DELETE FROM audit_events WHERE id IN (
        SELECT id FROM audit_events
        WHERE occurred_at < now() - make_interval(days => keep_days)
        ORDER BY occurred_at
        LIMIT least(batch, 10000)
    );
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('flowdeck.pruning_audit', 'off', true);
    -- Recorded here, with the deletion, so no caller can prune without a trace.
    IF deleted > 0 THEN
        INSERT INTO audit_events (actor, action, target, outcome, detail)
        VALUES ('flowdeck', 'audit.pruned', 'audit_events', 'success',
                jsonb_build_object('deleted', deleted, 'retention_days', keep_days,
                                   'cutoff', now() - make_interval(days => keep_days)));
    END IF;
    RETURN deleted;
END;
$$;

-- Sets the audit retention and records who did (`audit.retention_set`, with the old and new
-- days) in the same statement; returns the old days. The server's role may read `settings`
-- but not write it, so this is the only way the retention changes, and never silently.
CREATE FUNCTION flowdeck_set_audit_retention(
    days integer, actor text, actor_role text, request_id text, source_addr text
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    old_days integer;
BEGIN
    IF days IS NOT NULL AND days NOT BETWEEN 1 AND 36500 THEN
        RAISE EXCEPTION 'audit retention must be 1 to 36500 days or NULL'
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT audit_retention_days INTO old_days FROM settings FOR UPDATE;
    UPDATE settings SET audit_retention_days = days, updated_at = now();
    INSERT INTO audit_events (actor, role, action, target, request_id, outcome, source_addr, detail)
    VALUES (actor, actor_role, 'audit.retention_set', 'audit_events', request_id, 'success',
            source_addr, jsonb_build_object('old_days', old_days, 'new_days', days));
    RETURN old_days;
END;
$$;

-- Identity, part two: key rotation, OIDC sign-in, and an audit trail nobody can rewrite.

-- A key made by rotating another names it; the old key keeps working until its overlap ends.
ALTER TABLE api_keys ADD COLUMN rotated_from bigint REFERENCES api_keys (id);
CREATE INDEX api_keys_created_at_idx ON api_keys (created_at DESC, id DESC);

-- Sign-ins through an OpenID Connect issuer in flight: the PKCE verifier and nonce wait
-- here (looked up by the hash of the `state` parameter) for the issuer to send the browser
-- back. A row lives ten minutes at most and is deleted when used.
CREATE TABLE oidc_logins (
    state_hash    bytea PRIMARY KEY,
    code_verifier text NOT NULL,
    nonce         text NOT NULL,
    next_path     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The audit trail is append-only: no statement may change or remove a row.
CREATE FUNCTION flowdeck_audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION flowdeck_audit_is_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_audit_is_append_only();

-- The audit filter's common questions: one actor's or one action's recent events, and
-- everything one request did.
CREATE INDEX audit_events_actor_idx ON audit_events (actor, occurred_at DESC, id DESC);
CREATE INDEX audit_events_action_idx ON audit_events (action, occurred_at DESC, id DESC);
CREATE INDEX audit_events_request_id_idx ON audit_events (request_id) WHERE request_id IS NOT NULL;

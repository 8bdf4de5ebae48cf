-- `Idempotency-Key` of triggers (IETF httpapi draft): the first request with a key for a
-- caller decides the run; repeats with the same body get that run back, repeats with
-- another body are refused. Rows are kept at least 24 hours (today: forever).
CREATE TABLE idempotency_keys (
    actor        text NOT NULL,
    key          text NOT NULL,
    -- SHA-256 of what the request asked for (target and parsed body).
    request_hash bytea NOT NULL,
    run_id       bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

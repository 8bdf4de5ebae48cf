-- Transactional outbox of runs waiting to be submitted to Prefect, and the per-run
-- callback credential.

-- One row per accepted run until Prefect has it. Written in the trigger's transaction,
-- so a run is never committed without its way into Prefect, nor submitted uncommitted.
CREATE TABLE run_outbox (
    run_id          bigint PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A dispatcher that claimed the row holds it until then; another may take it after.
    locked_until    timestamptz,
    last_error      text,
    -- The run's callback credential in clear, only until it is handed to Prefect; the
    -- dispatcher needs the same one on every attempt because Prefect keeps the first
    -- flow run's parameters for an idempotency key.
    callback_token  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_outbox_next_attempt_at_idx ON run_outbox (next_attempt_at);

ALTER TABLE runs ADD COLUMN callback_token_hash bytea;
CREATE UNIQUE INDEX runs_callback_token_hash_key ON runs (callback_token_hash)
    WHERE callback_token_hash IS NOT NULL;
-- Runs the reconciler follows: known to Prefect, not finished.
CREATE INDEX runs_unfinished_idx ON runs (id)
    WHERE prefect_flow_run_id IS NOT NULL
      AND status NOT IN ('completed', 'failed', 'cancelled', 'crashed');

-- The Prefect idempotency key of each run. Prefect keeps keys per flow forever, so the key
-- must be unique across every Flowdeck database that ever talks to that Prefect: a run id
-- alone would collide after a database reset or between installations.
ALTER TABLE runs ADD COLUMN prefect_idempotency_key text NOT NULL
    DEFAULT ('flowdeck-run-' || gen_random_uuid()::text);

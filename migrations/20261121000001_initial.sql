-- Flowdeck's data model (DESIGN.md section 2). Forward-only; later changes get new files.

-- Run and stage statuses follow Prefect's state types, lower-cased. They are plain text
-- with CHECK constraints (not domains or enums) so sqlx maps them to String directly.
CREATE TABLE pipelines (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug               text NOT NULL CONSTRAINT pipelines_slug_key UNIQUE,
    name               text NOT NULL,
    description        text,
    -- Prefect deployment: a UUID or `flow-name/deployment-name`; NULL runs the default one.
    deployment         text,
    stage_names        text[] NOT NULL,
    default_parameters jsonb NOT NULL DEFAULT '{}'::jsonb,
    tags               text[] NOT NULL DEFAULT '{}',
    -- Maximum runs in flight at once; NULL means no limit.
    max_concurrent_runs integer CHECK (max_concurrent_runs > 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipelines_created_at_idx ON pipelines (created_at DESC, id DESC);

CREATE TABLE runs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id         bigint NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    status              text NOT NULL DEFAULT 'pending'
                        CONSTRAINT runs_status_check CHECK (status IN ('pending', 'scheduled', 'running', 'completed', 'failed', 'cancelling', 'cancelled', 'crashed', 'paused')),
    parameters          jsonb NOT NULL DEFAULT '{}'::jsonb,
    actor               text NOT NULL,
    source              text NOT NULL,
    request_id          text,
    idempotency_key     text,
    retry_of_run_id     bigint REFERENCES runs (id) ON DELETE SET NULL,
    prefect_flow_run_id text,
    prefect_state       text,
    records_processed   bigint NOT NULL DEFAULT 0,
    error_message       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    submitted_at        timestamptz,
    started_at          timestamptz,
    ended_at            timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_pipeline_id_created_at_idx ON runs (pipeline_id, created_at DESC, id DESC);
CREATE INDEX runs_status_created_at_idx ON runs (status, created_at DESC);
CREATE UNIQUE INDEX runs_prefect_flow_run_id_key ON runs (prefect_flow_run_id)
    WHERE prefect_flow_run_id IS NOT NULL;

CREATE TABLE stage_runs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position          integer NOT NULL,
    name              text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CONSTRAINT stage_runs_status_check CHECK (status IN ('pending', 'scheduled', 'running', 'completed', 'failed', 'cancelling', 'cancelled', 'crashed', 'paused')),
    message           text,
    records_processed bigint,
    started_at        timestamptz,
    ended_at          timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stage_runs_run_id_name_key UNIQUE (run_id, name),
    CONSTRAINT stage_runs_run_id_position_key UNIQUE (run_id, position)
);

-- Append-only history of a run; `event_id` makes redelivered events harmless.
CREATE TABLE run_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    event_id    text NOT NULL DEFAULT gen_random_uuid()::text,
    kind        text NOT NULL,
    stage_name  text,
    status      text,
    message     text,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT run_events_event_id_key UNIQUE (event_id)
);
CREATE INDEX run_events_run_id_occurred_at_idx ON run_events (run_id, occurred_at, id);

CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- First characters of the key, shown in listings so people can tell keys apart.
    key_prefix   text NOT NULL,
    -- SHA-256 of the whole key: keys carry 256 random bits, so a fast hash is enough.
    key_hash     bytea NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE TABLE sessions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   bytea NOT NULL CONSTRAINT sessions_token_hash_key UNIQUE,
    api_key_id   bigint REFERENCES api_keys (id) ON DELETE CASCADE,
    actor        text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    role        text,
    action      text NOT NULL,
    target      text,
    request_id  text,
    outcome     text NOT NULL,
    source_addr text,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at DESC, id DESC);

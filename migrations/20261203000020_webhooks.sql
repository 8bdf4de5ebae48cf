-- Signed outbound webhooks (issue 20): endpoints, and a delivery outbox written by the
-- triggers below in the transaction of the change that caused each event, so no event is
-- lost and none is sent for a change that rolled back.
CREATE TABLE webhook_endpoints (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url              text NOT NULL,
    description      text NOT NULL DEFAULT '',
    event_types      text[] NOT NULL,
    -- Only events of these pipelines (by id or tag); none listed: every pipeline.
    pipeline_ids     bigint[] NOT NULL DEFAULT '{}',
    tags             text[] NOT NULL DEFAULT '{}',
    format           text NOT NULL DEFAULT 'standard' CHECK (format IN ('standard', 'slack')),
    -- The signing secret (`whsec_` + base64), and the one it replaced while a rotation's
    -- overlap lasts: both signatures are sent until then.
    secret           text NOT NULL,
    previous_secret  text,
    previous_until   timestamptz,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    -- Since when every attempt failed (none succeeded since); cleared by a success.
    failing_since    timestamptz,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- `webhook-id`: the same for every attempt of this event to this endpoint.
    message_id       text NOT NULL UNIQUE,
    event_type       text NOT NULL,
    -- The event (`{type, timestamp, data}`), fixed when it happened.
    payload          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);

CREATE TABLE webhook_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at     timestamptz NOT NULL DEFAULT now(),
    status_code      integer,
    latency_ms       integer NOT NULL,
    -- The start of the receiver's answer, or why there was none.
    response_excerpt text,
    error            text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- Queues one delivery per enabled endpoint that wants `events` (type, pipeline, tags, data)
-- and wakes the deliverers. Costs one indexless look at the (few) endpoints per statement
-- while there are none.
CREATE FUNCTION flowdeck_queue_webhooks(events jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled) OR jsonb_array_length(events) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, payload)
    SELECT w.id, 'msg_' || replace(gen_random_uuid()::text, '-', ''), e->>'type',
           jsonb_build_object('type', e->>'type',
                              'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                              'data', e->'data')
    FROM jsonb_array_elements(events) AS e
    JOIN webhook_endpoints w
      ON w.enabled AND (e->>'type') = ANY (w.event_types)
     AND ((w.pipeline_ids = '{}' AND w.tags = '{}')
          OR (e->>'pipeline_id')::bigint = ANY (w.pipeline_ids)
          OR w.tags && ARRAY(SELECT jsonb_array_elements_text(e->'tags')));
    IF FOUND THEN
        PERFORM pg_notify('flowdeck_webhooks', '');
    END IF;
END $$;

-- What an event says about a run: the run, its pipeline, and for a failure the failed stage.
CREATE FUNCTION flowdeck_webhook_run(r runs, kind text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'type', kind, 'pipeline_id', p.id, 'tags', to_jsonb(p.tags),
        'data', jsonb_build_object(
            'run', jsonb_build_object('id', r.id, 'status', r.status, 'error_message', r.error_message,
                                      'request_id', r.request_id, 'actor', r.actor, 'source', r.source,
                                      'prefect_flow_run_id', r.prefect_flow_run_id,
                                      'prefect_state', r.prefect_state, 'created_at', r.created_at,
                                      'started_at', r.started_at, 'ended_at', r.ended_at,
                                      'stuck_since', r.stuck_since),
            'pipeline', jsonb_build_object('id', p.id, 'slug', p.slug, 'name', p.name, 'tags', to_jsonb(p.tags)),
            'failed_stage', (SELECT jsonb_build_object('name', s.name, 'position', s.position, 'error_message', s.message)
                             FROM stage_runs s WHERE s.run_id = r.id AND s.status IN ('failed', 'crashed')
                             ORDER BY s.position LIMIT 1)))
    FROM pipelines p WHERE p.id = r.pipeline_id
$$;

-- Runs that ended, got stuck, or reported again after being stuck.
CREATE FUNCTION flowdeck_runs_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled) THEN
        RETURN NULL;
    END IF;
    PERFORM flowdeck_queue_webhooks(coalesce(jsonb_agg(e.event), '[]'::jsonb))
    FROM (
        SELECT flowdeck_webhook_run(r, 'run.' || r.status) AS event
        FROM new_runs r JOIN old_runs o ON o.id = r.id
        WHERE r.status IS DISTINCT FROM o.status
          AND r.status IN ('completed', 'failed', 'crashed', 'cancelled')
        UNION ALL
        SELECT flowdeck_webhook_run(r, CASE WHEN r.stuck_since IS NULL THEN 'run.recovered' ELSE 'run.stuck' END)
        FROM new_runs r JOIN old_runs o ON o.id = r.id
        WHERE (r.stuck_since IS NULL) IS DISTINCT FROM (o.stuck_since IS NULL)
    ) e;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_webhooks AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_runs_webhooks();

CREATE FUNCTION flowdeck_pipelines_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM flowdeck_queue_webhooks(coalesce(jsonb_agg(jsonb_build_object(
            'type', 'pipeline.created', 'pipeline_id', p.id, 'tags', to_jsonb(p.tags),
            'data', jsonb_build_object('pipeline', jsonb_build_object(
                'id', p.id, 'slug', p.slug, 'name', p.name, 'tags', to_jsonb(p.tags))))), '[]'::jsonb))
        FROM changed_pipelines p;
    ELSE
        PERFORM flowdeck_queue_webhooks(coalesce(jsonb_agg(jsonb_build_object(
            'type', 'pipeline.deleted', 'pipeline_id', p.id, 'tags', to_jsonb(p.tags),
            'data', jsonb_build_object('pipeline', jsonb_build_object(
                'id', p.id, 'slug', p.slug, 'name', p.name, 'tags', to_jsonb(p.tags))))), '[]'::jsonb))
        FROM changed_pipelines p;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER pipelines_created_webhooks AFTER INSERT ON pipelines
    REFERENCING NEW TABLE AS changed_pipelines
    FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_pipelines_webhooks();
CREATE TRIGGER pipelines_deleted_webhooks AFTER DELETE ON pipelines
    REFERENCING OLD TABLE AS changed_pipelines
    FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_pipelines_webhooks();

-- Scoped API keys and their budgets (issue 19).
--
-- A key may be limited to some pipelines (by id, slug or tag: a pipeline tagged later is in
-- scope from then on) and to some actions; it may carry budgets of triggers per hour and per
-- day and of unfinished runs at once. No pipeline listed: every pipeline. `scope_actions`
-- NULL: every action the key's role allows.
ALTER TABLE api_keys
    ADD COLUMN scope_pipeline_ids  bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN scope_slugs         text[] NOT NULL DEFAULT '{}',
    ADD COLUMN scope_tags          text[] NOT NULL DEFAULT '{}',
    ADD COLUMN scope_actions       text[],
    ADD COLUMN triggers_per_hour   integer CHECK (triggers_per_hour > 0),
    ADD COLUMN triggers_per_day    integer CHECK (triggers_per_day > 0),
    ADD COLUMN max_unfinished_runs integer CHECK (max_unfinished_runs > 0);

-- The key that made a run: budgets are counted from runs, in the database, so they hold
-- across replicas.
ALTER TABLE runs ADD COLUMN api_key_id bigint;
CREATE INDEX runs_api_key_created_idx ON runs (api_key_id, created_at) WHERE api_key_id IS NOT NULL;
CREATE INDEX runs_api_key_unfinished_idx ON runs (api_key_id)
    WHERE api_key_id IS NOT NULL AND status NOT IN ('completed', 'failed', 'cancelled', 'crashed');

-- A change to what a key grants is announced, now including its scope and budgets.
DROP TRIGGER api_keys_changed ON api_keys;
CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.role IS DISTINCT FROM NEW.role OR OLD.name IS DISTINCT FROM NEW.name
          OR OLD.key_hash IS DISTINCT FROM NEW.key_hash
          OR OLD.scope_pipeline_ids IS DISTINCT FROM NEW.scope_pipeline_ids
          OR OLD.scope_slugs IS DISTINCT FROM NEW.scope_slugs
          OR OLD.scope_tags IS DISTINCT FROM NEW.scope_tags
          OR OLD.scope_actions IS DISTINCT FROM NEW.scope_actions
          OR OLD.triggers_per_hour IS DISTINCT FROM NEW.triggers_per_hour
          OR OLD.triggers_per_day IS DISTINCT FROM NEW.triggers_per_day
          OR OLD.max_unfinished_runs IS DISTINCT FROM NEW.max_unfinished_runs)
    EXECUTE FUNCTION flowdeck_api_key_changed();

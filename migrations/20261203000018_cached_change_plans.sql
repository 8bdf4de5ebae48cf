-- The change feed's recording functions in PL/pgSQL instead of SQL (issue 18). PostgreSQL
-- 15 parses and plans the body of a SQL function that it cannot inline (these write rows)
-- on every call, so every statement that recorded changes paid a parse and a plan in its
-- trigger: 14 % of the database's time under a load of triggers (perf, 16 clients). A
-- PL/pgSQL function keeps its statements' plans for the connection's life.

CREATE OR REPLACE FUNCTION flowdeck_announce(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowdeck_changes', string_agg(id::text, ',' ORDER BY id))
    FROM unnest(ids) WITH ORDINALITY AS c(id, n)
    GROUP BY (n - 1) / 400;
END $$;

CREATE OR REPLACE FUNCTION flowdeck_record_changes(change_kind text, pipeline_ids bigint[],
                                                   run_ids bigint[], datas jsonb[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    added bigint[];
BEGIN
    WITH inserted AS (
        INSERT INTO changes (kind, pipeline_id, run_id, data)
        SELECT change_kind, c.pipeline_id, c.run_id, c.data
        FROM unnest(pipeline_ids, run_ids, datas) WITH ORDINALITY AS c(pipeline_id, run_id, data, n)
        ORDER BY c.n
        RETURNING id
    )
    SELECT array_agg(id) INTO added FROM inserted;
    PERFORM flowdeck_announce(added);
END $$;

-- A run's JSON depends on the session's time zone (it renders times), so it is STABLE, not
-- IMMUTABLE; declared truthfully, PostgreSQL inlines it into the trigger's statement instead
-- of calling it as a SQL function, parsed and planned on each statement.
ALTER FUNCTION flowdeck_run_json(runs) STABLE;

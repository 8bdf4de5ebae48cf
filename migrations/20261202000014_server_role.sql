-- Least privilege: the server connects as a role that reads and writes rows but owns
-- nothing, so it cannot alter or drop tables, disable triggers, or change or remove the
-- audit trail (refused by permissions, before the append-only trigger is even reached).
-- `flowdeck migrate`, connected as the schema's owner, calls this after every migration,
-- so tables and functions that later migrations add are granted too. An existing role
-- keeps its password and attributes; one that is too strong or owns anything is refused.
-- password_verifier is a SCRAM-SHA-256 verifier made by the caller, never a clear password.
CREATE FUNCTION flowdeck_grant_server_role(role_name text, password_verifier text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    created boolean := false;
    strong  text;
    owned   text;
    kept    text;
BEGIN
    IF coalesce(role_name, '') = '' THEN
        RAISE EXCEPTION 'the server role needs a name';
    END IF;
    -- Two replicas starting at once would otherwise collide on the same grants.
    PERFORM pg_advisory_xact_lock(hashtext('flowdeck_grant_server_role'));

    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION',
                           role_name)
                || CASE WHEN password_verifier IS NULL THEN '' ELSE format(' PASSWORD %L', password_verifier) END;
            created := true;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            -- Roles are cluster-wide: another database's migration made it just now.
            NULL;
        END;
    END IF;

    SELECT concat_ws(', ',
                     CASE WHEN rolsuper THEN 'SUPERUSER' END,
                     CASE WHEN rolcreatedb THEN 'CREATEDB' END,
                     CASE WHEN rolcreaterole THEN 'CREATEROLE' END,
                     CASE WHEN rolbypassrls THEN 'BYPASSRLS' END,
                     CASE WHEN rolreplication THEN 'REPLICATION' END)
      INTO strong
      FROM pg_roles WHERE rolname = role_name;
    IF strong <> '' THEN
        RAISE EXCEPTION 'the server role % has % and must not: run ALTER ROLE % NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION, or name another role in DATABASE_URL',
            role_name, strong, quote_ident(role_name)
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    -- Owning an object (or belonging to its owner's role) would let it alter or drop it.
    SELECT string_agg(what, ', ' ORDER BY what) INTO owned FROM (
        SELECT pg_describe_object('pg_database'::regclass, oid, 0) AS what FROM pg_database
         WHERE datname = current_database() AND pg_has_role(role_name, datdba, 'MEMBER')
        UNION
        SELECT pg_describe_object('pg_namespace'::regclass, oid, 0) FROM pg_namespace
         WHERE nspname = 'public' AND pg_has_role(role_name, nspowner, 'MEMBER')
        UNION
        SELECT pg_describe_object('pg_class'::regclass, oid, 0) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND pg_has_role(role_name, relowner, 'MEMBER')
        UNION
        SELECT pg_describe_object('pg_proc'::regclass, oid, 0) FROM pg_proc
         WHERE pronamespace = 'public'::regnamespace AND pg_has_role(role_name, proowner, 'MEMBER')
        UNION
        SELECT pg_describe_object(classid, objid, objsubid) FROM pg_shdepend
         WHERE deptype = 'o' AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = role_name)
           AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ) AS o;
    IF owned IS NOT NULL THEN
        RAISE EXCEPTION 'the server role % owns, or belongs to the owner of: %; it must own nothing: give them to the schema owner (REASSIGN OWNED BY % TO ...) or name another role in DATABASE_URL',
            role_name, owned, quote_ident(role_name)
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), role_name);
    EXECUTE format('REVOKE CREATE ON SCHEMA public FROM %I', role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %I', role_name);
    EXECUTE format('REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM %I', role_name);
    -- The audit trail is append-only by permission as well as by its trigger.
    IF to_regclass('public.audit_events') IS NOT NULL THEN
        EXECUTE format('REVOKE UPDATE, DELETE ON public.audit_events FROM %I', role_name);
    END IF;
    -- sqlx's ledger of applied migrations: the server only reads it, to see nothing is pending.
    -- The audit retention is changed only through flowdeck_set_audit_retention, which
    -- records who changed it.
    IF to_regclass('public.settings') IS NOT NULL THEN
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON public.settings FROM %I', role_name);
    END IF;
    IF to_regclass('public._sqlx_migrations') IS NOT NULL THEN
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON public._sqlx_migrations FROM %I', role_name);
    END IF;
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', role_name);
    EXECUTE format('REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM %I', role_name);
    EXECUTE format('GRANT EXECUTE ON ALL ROUTINES IN SCHEMA public TO %I', role_name);

    -- What PUBLIC, or a role it belongs to, may still give it.
    IF has_schema_privilege(role_name, 'public', 'CREATE') THEN
        RAISE EXCEPTION 'the server role % may still create objects in schema public, through PUBLIC or a role it belongs to: run REVOKE CREATE ON SCHEMA public FROM PUBLIC as the schema''s owner (the default since PostgreSQL 15)',
            role_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT string_agg(relname, ', ' ORDER BY relname) INTO kept FROM pg_class
     WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
       AND (has_table_privilege(role_name, oid, 'TRUNCATE')
            OR has_table_privilege(role_name, oid, 'TRIGGER')
            OR has_table_privilege(role_name, oid, 'REFERENCES')
            OR (relname = 'audit_events'
                AND (has_table_privilege(role_name, oid, 'UPDATE') OR has_table_privilege(role_name, oid, 'DELETE')))
            OR (relname = 'settings'
                AND (has_table_privilege(role_name, oid, 'INSERT') OR has_table_privilege(role_name, oid, 'UPDATE')
                     OR has_table_privilege(role_name, oid, 'DELETE')))
            OR (relname = '_sqlx_migrations'
                AND (has_table_privilege(role_name, oid, 'INSERT') OR has_table_privilege(role_name, oid, 'UPDATE')
                     OR has_table_privilege(role_name, oid, 'DELETE'))));
    IF kept IS NOT NULL THEN
        RAISE EXCEPTION 'the server role % may still truncate, add triggers or references to, or change rows it must only read or append in: %, through PUBLIC or a role it belongs to: revoke that there',
            role_name, kept
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN created;
END;
$$;

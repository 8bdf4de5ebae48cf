//! Least privilege in `PostgreSQL`: the server's role, granted by the code `flowdeck migrate`
//! runs, reads and writes rows but may not change the schema or the audit trail, and is
//! refused by permissions (SQLSTATE 42501), not only by the append-only trigger.

use std::hash::{BuildHasher, RandomState};

use app::db_roles::grant_server_role;
use sqlx::{Connection, PgConnection, PgPool};

/// A role name no other test (or test run) uses: roles are cluster-wide.
fn unique_role() -> String {
    format!(
        "flowdeck_test_{:016x}",
        RandomState::new().hash_one(std::process::id())
    )
}

/// Connects to the test database as `role` (the local `PostgreSQL` trusts loopback).
async fn connect_as(db: &PgPool, role: &str) -> PgConnection {
    let options = db.connect_options().as_ref().clone().username(role);
    PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect as {role}: {e}"))
}

/// Drops `role` and everything it holds in the test database, if it exists.
async fn drop_role(db: &PgPool, role: &str) {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(db)
        .await
        .expect("look the role up");
    if !exists {
        return;
    }
    // DDL on an identifier, which cannot be a bound parameter; the name is ours.
    for statement in [
        "REASSIGN OWNED BY {} TO CURRENT_USER",
        "DROP OWNED BY {}",
        "DROP ROLE {}",
    ] {
        sqlx::query(&statement.replace("{}", &format!("\"{role}\"")))
            .execute(db)
            .await
            .unwrap_or_else(|e| panic!("{statement} for {role}: {e}"));
    }
}

/// Runs `checks` on a new role's name, then drops the role even when a check failed.
async fn with_role<F, Fut>(db: PgPool, checks: F)
where
    F: FnOnce(PgPool, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let role = unique_role();
    let outcome = tokio::spawn(checks(db.clone(), role.clone())).await;
    drop_role(&db, &role).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs `sql` as the server's role; it must be refused for want of privilege.
async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    let error = match sqlx::query(sql).execute(&mut *conn).await {
        Ok(done) => panic!("{sql:?} was allowed ({} rows)", done.rows_affected()),
        Err(sqlx::Error::Database(e)) => e,
        Err(e) => panic!("{sql:?} failed otherwise: {e}"),
    };
    assert_eq!(error.code().as_deref(), Some("42501"), "{sql:?}: {error}");
    error.message().to_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_server_role_writes_rows_but_not_the_schema_nor_the_audit_trail(db: PgPool) {
    with_role(db, |db, role| async move {
        assert!(grant_server_role(&db, &role, None).await.expect("grant"), "the role is created");
        // Every `flowdeck migrate` grants again: that is harmless and creates nothing.
        assert!(!grant_server_role(&db, &role, None).await.expect("grant again"));

        let attributes: (bool, bool, bool, bool, bool, bool) = sqlx::query_as(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication
             FROM pg_roles WHERE rolname = $1",
        )
        .bind(&role)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(attributes, (true, false, false, false, false, false));
        let owned: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_shdepend WHERE deptype = 'o'
               AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        )
        .bind(&role)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(owned, 0, "the server role owns nothing");
        // Every function, the audit pruner (SECURITY DEFINER) included, may be called.
        let uncallable: Vec<String> = sqlx::query_scalar(
            "SELECT proname::text FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace AND NOT has_function_privilege($1, oid, 'EXECUTE')",
        )
        .bind(&role)
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(uncallable, Vec::<String>::new());

        let mut app = connect_as(&db, &role).await;
        // Rows: read, insert, update, delete.
        let pipeline: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (slug, name, stage_names) VALUES ('least-privilege', 'Least privilege', '{one}')
             RETURNING id",
        )
        .fetch_one(&mut app)
        .await
        .expect("insert a pipeline");
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO runs (pipeline_id, actor, source) VALUES ($1, 'test', 'api') RETURNING id",
        )
        .bind(pipeline)
        .fetch_one(&mut app)
        .await
        .expect("insert a run");
        sqlx::query("UPDATE runs SET status = 'running', started_at = now() WHERE id = $1")
            .bind(run)
            .execute(&mut app)
            .await
            .expect("update a run");
        sqlx::query("UPDATE pipelines SET description = 'changed' WHERE id = $1")
            .bind(pipeline)
            .execute(&mut app)
            .await
            .expect("update a pipeline");
        let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE pipeline_id = $1")
            .bind(pipeline)
            .fetch_one(&mut app)
            .await
            .expect("read runs");
        assert_eq!(runs, 1);
        sqlx::query("DELETE FROM runs WHERE id = $1")
            .bind(run)
            .execute(&mut app)
            .await
            .expect("delete a run");
        sqlx::query("DELETE FROM pipelines WHERE id = $1")
            .bind(pipeline)
            .execute(&mut app)
            .await
            .expect("delete a pipeline");
        // The audit trail: read and append.
        sqlx::query("INSERT INTO audit_events (actor, action, outcome) VALUES ('test', 'privileges.check', 'ok')")
            .execute(&mut app)
            .await
            .expect("append to the audit trail");
        let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&mut app)
            .await
            .expect("read the audit trail");
        assert!(audited >= 1);
        // What `serve` reads to see that no migration is pending.
        sqlx::query("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .execute(&mut app)
            .await
            .expect("read the applied migrations");

        // The audit trail's rows: refused by permission, before its trigger is reached.
        for sql in [
            "UPDATE audit_events SET outcome = 'forged'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ] {
            let message = refused(&mut app, sql).await;
            assert!(
                message.starts_with("permission denied for table audit_events"),
                "{sql:?}: {message}"
            );
        }
        // The schema, the triggers, sqlx's ledger, other tables' wholesale removal.
        for sql in [
            "ALTER TABLE runs ADD COLUMN sneaky integer",
            "ALTER TABLE audit_events DISABLE TRIGGER ALL",
            "DROP TABLE runs",
            "CREATE TABLE sneaky (id integer)",
            "CREATE FUNCTION sneaky() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
            "TRUNCATE runs",
            "DELETE FROM _sqlx_migrations",
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99999999999999, 'forged', true, '\\x00', 0)",
            // The audit retention: only through the function that records who set it.
            "UPDATE settings SET audit_retention_days = 1",
            "DELETE FROM settings",
        ] {
            refused(&mut app, sql).await;
        }
        // Setting it through the function leaves its own audit row, and pruning too.
        sqlx::query("SELECT flowdeck_set_audit_retention(1, 'intruder', NULL, NULL, NULL)")
            .execute(&mut app)
            .await
            .expect("the function is the way to set the retention");
        sqlx::query("UPDATE audit_events SET occurred_at = occurred_at")
            .execute(&mut app)
            .await
            .expect_err("still refused");
        let recorded: Vec<String> = sqlx::query_scalar(
            "SELECT actor FROM audit_events WHERE action = 'audit.retention_set'",
        )
        .fetch_all(&mut app)
        .await
        .unwrap();
        assert_eq!(recorded, ["intruder"]);
        app.close().await.ok();
    })
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_password_reaches_postgres_only_as_a_scram_verifier(db: PgPool) {
    with_role(db, |db, role| async move {
        grant_server_role(&db, &role, Some("correct horse battery staple"))
            .await
            .expect("grant");
        let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&db)
            .await
            .unwrap();
        assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
        assert!(!stored.contains("horse"), "{stored}");
    })
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_role_that_owns_a_table_or_is_too_strong_is_refused(db: PgPool) {
    with_role(db, |db, role| async move {
        grant_server_role(&db, &role, None).await.expect("grant");
        sqlx::query(&format!("ALTER TABLE stage_runs OWNER TO \"{role}\""))
            .execute(&db)
            .await
            .unwrap();
        let error = grant_server_role(&db, &role, None)
            .await
            .expect_err("an owner is refused");
        assert!(error.to_string().contains("table stage_runs"), "{error}");

        sqlx::query(&format!("REASSIGN OWNED BY \"{role}\" TO CURRENT_USER"))
            .execute(&db)
            .await
            .unwrap();
        sqlx::query(&format!("ALTER ROLE \"{role}\" CREATEROLE"))
            .execute(&db)
            .await
            .unwrap();
        let error = grant_server_role(&db, &role, None)
            .await
            .expect_err("a strong role is refused");
        assert!(error.to_string().contains("has CREATEROLE"), "{error}");
    })
    .await;
}

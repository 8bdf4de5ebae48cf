//! Retention: one pruning pass removes what is older than each setting and keeps the rest;
//! the audit trail is pruned only by age, after an admin sets a retention, and audited.

mod common;

use std::time::Duration;

use app::retention::service::{Pruned, Pruner, Retention, prune_once};
use axum::http::StatusCode;
use common::TestApp;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

/// A pruner with the default retentions and tiny batches, so that a pass takes several.
fn pruner() -> Pruner {
    Pruner {
        batch: 2,
        pause: Duration::from_millis(1),
        ..Pruner::new(Retention::default())
    }
}

/// One pass; `None` when another session holds the lock.
async fn pass(db: &PgPool) -> Option<Pruned> {
    let (_running, mut shutdown) = tokio::sync::watch::channel(false);
    prune_once(db, &pruner(), &mut shutdown).await.expect("a pass")
}

async fn scalar(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect(sql)
}

async fn exec(db: &PgPool, sql: &str) {
    sqlx::query(sql).execute(db).await.expect(sql);
}

/// A trigger of `pipeline` with an `Idempotency-Key`; the run's id.
async fn keyed_run(app: &TestApp, pipeline: i64, key: &str) -> i64 {
    let request = axum::http::Request::post(format!("/api/pipelines/{pipeline}/runs"))
        .header("authorization", format!("Bearer {}", app.operator))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    answer.json()["id"].as_i64().unwrap()
}

/// Audit events written straight into the table, `days` old each.
async fn old_audit_events(db: &PgPool, days: &[i32]) {
    for d in days {
        sqlx::query(
            "INSERT INTO audit_events (actor, action, outcome, occurred_at)
             VALUES ('test', 'test.old', 'success', now() - make_interval(days => $1))",
        )
        .bind(d)
        .execute(db)
        .await
        .unwrap();
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn one_pass_removes_what_is_older_than_each_setting_and_keeps_the_rest(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app.pipeline(json!({"name": "kept"})).await;
    let old_run = keyed_run(&app, pipeline, "old-key").await;
    let new_run = keyed_run(&app, pipeline, "new-key").await;
    for _ in 0..4 {
        app.post(
            "/api/status-update/",
            &app.operator,
            json!({"run_id": old_run, "stage_name": "Data Generation", "status": "running"}),
        )
        .await;
    }
    // Run events of one run recorded 91 days ago (older than 90), the other's today.
    exec(
        &db,
        &format!("UPDATE run_events SET recorded_at = now() - interval '91 days' WHERE run_id = {old_run}"),
    )
    .await;
    let old_events = scalar(
        &db,
        &format!("SELECT count(*) FROM run_events WHERE run_id = {old_run}"),
    )
    .await;
    let new_events = scalar(
        &db,
        &format!("SELECT count(*) FROM run_events WHERE run_id = {new_run}"),
    )
    .await;
    assert!(old_events >= 1 && new_events >= 1);
    // Changes: all but the newest two made 25 hours ago (older than 24).
    exec(
        &db,
        "UPDATE changes SET created_at = now() - interval '25 hours'
         WHERE id < (SELECT max(id) - 1 FROM changes)",
    )
    .await;
    let old_changes = scalar(
        &db,
        "SELECT count(*) FROM changes WHERE created_at < now() - interval '1 hour'",
    )
    .await;
    // One idempotency key first used 25 hours ago, the other just now.
    exec(
        &db,
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old-key'",
    )
    .await;
    // Sessions: ended 8 days ago (expired; revoked), 2 days ago, and live.
    exec(
        &db,
        "INSERT INTO sessions (token_hash, actor, role, created_at, expires_at, revoked_at) VALUES
           ('\\x01', 'a', 'viewer', now() - interval '9 days', now() - interval '8 days', NULL),
           ('\\x02', 'a', 'viewer', now() - interval '9 days', now() - interval '8 days' + interval '12 hours', now() - interval '8 days'),
           ('\\x03', 'a', 'viewer', now() - interval '3 days', now() - interval '2 days', NULL),
           ('\\x04', 'a', 'viewer', now() - interval '30 days', now() + interval '1 hour', now() - interval '1 day'),
           ('\\x05', 'a', 'viewer', now(), now() + interval '12 hours', NULL)",
    )
    .await;
    // Pending sign-ins: one begun two hours ago, one now.
    exec(
        &db,
        "INSERT INTO oidc_logins (state_hash, code_verifier, nonce, next_path, created_at) VALUES
           ('\\x01', 'v', 'n', '/', now() - interval '2 hours'), ('\\x02', 'v', 'n', '/', now())",
    )
    .await;
    // The audit trail holds an event of three years ago; no retention is set.
    old_audit_events(&db, &[1100]).await;
    let audit_before = app.count("audit_events").await;

    let pruned = pass(&db).await.expect("nobody else holds the lock");
    assert_eq!(
        pruned,
        Pruned {
            run_events: u64::try_from(old_events).unwrap(),
            changes: u64::try_from(old_changes).unwrap(),
            sessions: 2,
            idempotency_keys: 1,
            oidc_logins: 1,
            audit_events: 0,
        }
    );
    assert_eq!(
        scalar(
            &db,
            &format!("SELECT count(*) FROM run_events WHERE run_id = {old_run}")
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &db,
            &format!("SELECT count(*) FROM run_events WHERE run_id = {new_run}")
        )
        .await,
        new_events
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM changes").await, 2);
    let sessions: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM sessions ORDER BY token_hash")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(sessions, [vec![3], vec![4], vec![5]]);
    assert_eq!(scalar(&db, "SELECT count(*) FROM oidc_logins").await, 1);
    // Without a retention the trail is untouched and nothing says it was pruned.
    assert_eq!(app.count("audit_events").await, audit_before);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'audit.pruned'"
        )
        .await,
        0
    );
    // The run whose history was pruned still reads.
    assert_eq!(app.run(old_run).await["id"], old_run);

    // A pruned key no longer deduplicates: the same request makes a new run. A kept one does.
    let again = keyed_run(&app, pipeline, "old-key").await;
    assert_ne!(again, old_run);
    assert_eq!(keyed_run(&app, pipeline, "new-key").await, new_run);

    // Nothing is left to prune.
    assert_eq!(pass(&db).await, Some(Pruned::default()));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_admin_sets_the_audit_retention_and_old_events_are_pruned_by_age(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    old_audit_events(&db, &[400, 40, 31, 29, 1]).await;
    let retention = app.get("/api/audit_events/retention", &app.admin).await;
    assert_eq!(retention.status, StatusCode::OK);
    assert_eq!(retention.json(), json!({"days": null}));

    let set = app
        .call(
            "PUT",
            "/api/audit_events/retention",
            Some(&app.admin),
            Some(json!({"days": 30})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    assert_eq!(set.json(), json!({"days": 30}));
    assert_eq!(
        app.get("/api/audit_events/retention", &app.admin).await.json(),
        json!({"days": 30})
    );
    let (actor, detail): (String, Value) =
        sqlx::query_as("SELECT actor, detail FROM audit_events WHERE action = 'audit.retention_set'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(actor, "api-key:test-admin");
    assert_eq!(detail, json!({"old_days": null, "new_days": 30}));

    let before = app.count("audit_events").await;
    let pruned = pass(&db).await.unwrap();
    assert_eq!(pruned.audit_events, 3);
    let left: Vec<i32> = sqlx::query_scalar(
        "SELECT extract(day FROM now() - occurred_at)::int FROM audit_events WHERE action = 'test.old' ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(left, [1, 29]);
    // Each batch that deleted is recorded by the database function itself (audit.pruned,
    // from Flowdeck, with its count and the cutoff): the counts add up to what was deleted.
    let recorded: Vec<(String, Value)> =
        sqlx::query_as("SELECT actor, detail FROM audit_events WHERE action = 'audit.pruned'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(!recorded.is_empty());
    let deleted: i64 = recorded
        .iter()
        .map(|(_, detail)| detail["deleted"].as_i64().unwrap())
        .sum();
    assert_eq!(deleted, 3);
    for (actor, detail) in &recorded {
        assert_eq!(actor, "flowdeck");
        assert_eq!(detail["retention_days"], 30);
        assert!(detail["cutoff"].is_string(), "{detail}");
    }
    assert_eq!(
        app.count("audit_events").await,
        before - 3 + recorded.len() as i64
    );
    // The retention change and the recent events are kept; a pass with nothing to delete
    // records nothing.
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'audit.retention_set'"
        )
        .await,
        1
    );
    assert_eq!(pass(&db).await.unwrap().audit_events, 0);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'audit.pruned'"
        )
        .await,
        recorded.len() as i64
    );

    // null keeps the trail forever again.
    let cleared = app
        .call(
            "PUT",
            "/api/audit_events/retention",
            Some(&app.admin),
            Some(json!({"days": null})),
        )
        .await;
    assert_eq!(cleared.json(), json!({"days": null}));
    old_audit_events(&db, &[400]).await;
    assert_eq!(pass(&db).await.unwrap().audit_events, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn only_admins_set_the_retention_and_bad_bodies_change_nothing(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let uri = "/api/audit_events/retention";
    let body = json!({"days": 1});
    for key in [&app.viewer, &app.operator] {
        let put = app.call("PUT", uri, Some(key), Some(body.clone())).await;
        assert_eq!(put.status, StatusCode::FORBIDDEN, "{}", put.text());
        assert_eq!(app.get(uri, key).await.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        app.call("PUT", uri, None, Some(body)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let bad = [
        (json!({"days": 0}), "days"),
        (json!({"days": -5}), "days"),
        (json!({"days": 36501}), "days"),
        (json!({"days": "30"}), "days"),
        (json!({"days": 1.5}), "days"),
        (json!({"days": 99_999_999_999_i64}), "days"),
        (json!({}), "days"),
        (json!({"days": 30, "keep": true}), "keep"),
        (json!([30]), "body"),
    ];
    for (body, field) in bad {
        let answer = app.call("PUT", uri, Some(&app.admin), Some(body.clone())).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.text()
        );
        assert_eq!(answer.json()["field"], field, "{body}: {}", answer.text());
    }
    assert_eq!(app.get(uri, &app.admin).await.json(), json!({"days": null}));
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'audit.retention_set'"
        )
        .await,
        0
    );
    let most = app
        .call("PUT", uri, Some(&app.admin), Some(json!({"days": 36500})))
        .await;
    assert_eq!(most.status, StatusCode::OK, "{}", most.text());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_pass_prunes_nothing_while_another_replica_holds_the_lock(db: PgPool) {
    exec(
        &db,
        "INSERT INTO oidc_logins (state_hash, code_verifier, nonce, next_path, created_at)
         VALUES ('\\x01', 'v', 'n', '/', now() - interval '2 hours')",
    )
    .await;
    let mut replica = PgConnection::connect_with(&db.connect_options()).await.unwrap();
    assert!(app::retention::db::try_lock(&mut replica).await.unwrap());
    assert_eq!(pass(&db).await, None);
    assert_eq!(scalar(&db, "SELECT count(*) FROM oidc_logins").await, 1);
    // The other replica's session ends: its lock goes with it.
    replica.close().await.unwrap();
    assert_eq!(pass(&db).await.unwrap().oidc_logins, 1);
    assert_eq!(scalar(&db, "SELECT count(*) FROM oidc_logins").await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_trail_refuses_changes_except_pruning_by_age(db: PgPool) {
    old_audit_events(&db, &[400, 1]).await;
    exec(&db, "UPDATE settings SET audit_retention_days = 30").await;
    // The test's role owns the table, and still cannot delete, change or empty it.
    for sql in [
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE occurred_at < now() - interval '30 days'",
        "UPDATE audit_events SET actor = 'someone else'",
        "TRUNCATE audit_events",
    ] {
        let refused = sqlx::query(sql).execute(&db).await.unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{sql}: {refused}");
    }
    // The function's door closes when it returns, even inside one transaction.
    let mut tx = db.begin().await.unwrap();
    let deleted: i32 = sqlx::query_scalar("SELECT flowdeck_prune_audit(100)")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let refused = sqlx::query("DELETE FROM audit_events")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    tx.rollback().await.unwrap();
    // The server's role (SELECT and INSERT only) cannot open the door itself, but may
    // call the function, which deletes only what the retention allows. (Roles are
    // cluster-wide: this one lives and dies in a transaction.)
    let mut tx = db.begin().await.unwrap();
    for sql in [
        "CREATE ROLE flowdeck_retention_test NOLOGIN",
        "GRANT SELECT, INSERT ON audit_events TO flowdeck_retention_test",
        "GRANT SELECT ON settings TO flowdeck_retention_test",
        "SET LOCAL ROLE flowdeck_retention_test",
        "SET LOCAL flowdeck.pruning_audit = 'on'",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.expect(sql);
    }
    let mut attempt = tx.begin().await.unwrap();
    let refused = sqlx::query("DELETE FROM audit_events")
        .execute(&mut *attempt)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("permission denied"), "{refused}");
    attempt.rollback().await.unwrap();
    let deleted: i32 = sqlx::query_scalar("SELECT flowdeck_prune_audit(100)")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    tx.rollback().await.unwrap();
    assert_eq!(scalar(&db, "SELECT count(*) FROM audit_events").await, 2);
}

/// `flowdeck prune` with `env`: its exit status and output.
fn flowdeck_prune(db: &PgPool, env: &[(&str, &str)]) -> std::process::Output {
    common::flowdeck(db, env, &["prune"])
}

#[sqlx::test(migrations = "../migrations")]
async fn retention_settings_are_checked_at_start_and_prune_once_prints_its_counts(db: PgPool) {
    for bad in ["0", "-1", "ninety", "1.5", "36501"] {
        let out = flowdeck_prune(&db, &[("FLOWDECK_RETAIN_RUN_EVENTS_DAYS", bad)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(
            stderr.contains("FLOWDECK_RETAIN_RUN_EVENTS_DAYS"),
            "{bad}: {stderr}"
        );
    }
    let out = flowdeck_prune(&db, &[("FLOWDECK_RETAIN_CHANGES_HOURS", "0")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOWDECK_RETAIN_CHANGES_HOURS"));

    exec(
        &db,
        "INSERT INTO oidc_logins (state_hash, code_verifier, nonce, next_path, created_at)
         VALUES ('\\x01', 'v', 'n', '/', now() - interval '2 hours')",
    )
    .await;
    let out = flowdeck_prune(&db, &[("FLOWDECK_RETAIN_SESSIONS_DAYS", "1")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["oidc_logins"], 1);
    assert_eq!(line["run_events"], 0);
    assert!(line["seconds"].as_f64().is_some(), "{line}");
}

//! The database schema at start-up: migrations, applied as the schema's owner
//! (`FLOWDECK_MIGRATION_DATABASE_URL`, else `DATABASE_URL`), and the server's own role,
//! which reads and writes rows but owns nothing (`app::db_roles`). A server given only a
//! restricted `DATABASE_URL` starts without migrating when nothing is pending: its role
//! may not create sqlx's ledger of migrations, let alone tables.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgConnectOptions;

use crate::config::Config;

/// The migrations under `migrations/`, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How the database's schema compares with the binary's migrations.
#[derive(Debug, PartialEq, Eq)]
pub enum Schema {
    /// Every migration is applied (the database may hold newer ones, from a newer binary).
    UpToDate,
    /// This many migrations are not applied yet.
    Pending(usize),
    /// This migration was applied with other contents than the binary's.
    Changed(i64),
}

/// `flowdeck migrate`: applies pending migrations as `FLOWDECK_MIGRATION_DATABASE_URL`'s
/// role when it is set (else `DATABASE_URL`'s), then, when `DATABASE_URL` names another
/// role, creates that role if missing and grants it rows only.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let Some(owner_url) = config.migration_database_url.as_deref() else {
        let pool = config.connect().await?;
        bring_up_to_date(&pool, "DATABASE_URL").await?;
        pool.close().await;
        return Ok(());
    };
    let server = server_role(&config.database_url, owner_url)?;
    let owner = crate::config::connect_to(owner_url, "FLOWDECK_MIGRATION_DATABASE_URL", 1).await?;
    bring_up_to_date(&owner, "FLOWDECK_MIGRATION_DATABASE_URL").await?;
    if let Some(server) = server {
        let created = app::db_roles::grant_server_role(&owner, &server.name, server.password.as_deref())
            .await
            .with_context(|| {
                format!(
                    "cannot grant DATABASE_URL's role {:?} its privileges",
                    server.name
                )
            })?;
        tracing::info!(db.role = %server.name, created, "DATABASE_URL's role may read and write rows, and owns nothing");
    }
    owner.close().await;
    Ok(())
}

/// Connects as `DATABASE_URL`'s role with the schema up to date, for `serve` and the
/// `api-key` commands: through [`migrate`] when `FLOWDECK_MIGRATION_DATABASE_URL` is set,
/// else migrating as `DATABASE_URL`'s role, which only has to when something is pending.
pub async fn connect_migrated(config: &Config) -> anyhow::Result<PgPool> {
    if config.migration_database_url.is_some() {
        migrate(config).await?;
        return config.connect().await;
    }
    let pool = config.connect().await?;
    bring_up_to_date(&pool, "DATABASE_URL").await?;
    Ok(pool)
}

/// Compares the migrations applied to `pool`'s database with the binary's.
pub async fn status(pool: &PgPool) -> anyhow::Result<Schema> {
    // sqlx's own table, made by the migrator rather than by a migration, so the checked
    // macros (checked against a schema built from migrations/*.sql) cannot see it.
    let applied: HashMap<i64, Vec<u8>> =
        match sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows.into_iter().collect(),
            // No ledger yet: a new database, nothing applied.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => HashMap::new(),
            Err(e) if refused(&e) => {
                return Err(e).context(
                    "the role may not read _sqlx_migrations: run `flowdeck migrate` with \
                     FLOWDECK_MIGRATION_DATABASE_URL set to the URL of the schema's owner, to grant it",
                );
            }
            Err(e) => return Err(e).context("cannot read the applied migrations"),
        };
    let mut pending = 0;
    for migration in MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()) {
        match applied.get(&migration.version) {
            None => pending += 1,
            Some(checksum) if checksum[..] != migration.checksum[..] => {
                return Ok(Schema::Changed(migration.version));
            }
            Some(_) => {}
        }
    }
    Ok(if pending == 0 {
        Schema::UpToDate
    } else {
        Schema::Pending(pending)
    })
}

/// Runs the pending migrations, if any; `url_var` names the variable `pool` came from.
async fn bring_up_to_date(pool: &PgPool, url_var: &str) -> anyhow::Result<()> {
    let pending = match status(pool).await? {
        Schema::UpToDate => return Ok(()),
        Schema::Pending(pending) => pending,
        Schema::Changed(version) => anyhow::bail!(
            "migration {version} in the database differs from this binary's: they were built from different migrations"
        ),
    };
    let Err(e) = MIGRATOR.run(pool).await else {
        return Ok(());
    };
    let refused = match &e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => refused(e),
        _ => false,
    };
    let pending = if pending == 1 {
        "1 migration is pending".to_owned()
    } else {
        format!("{pending} migrations are pending")
    };
    let why = match (refused, url_var) {
        (false, _) => "database migration failed".to_owned(),
        (true, "DATABASE_URL") => format!(
            "{pending} and DATABASE_URL's role may not change the schema: run `flowdeck migrate` \
             with FLOWDECK_MIGRATION_DATABASE_URL set to the URL of the schema's owner"
        ),
        (true, _) => format!(
            "{pending} and {url_var}'s role may not change the schema: it must be the URL of the schema's owner"
        ),
    };
    Err(anyhow::Error::new(e).context(why))
}

/// Whether `PostgreSQL` refused `e` for want of privilege.
fn refused(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "42501")
}

/// `DATABASE_URL`'s role, when it is not the owner's.
struct ServerRole {
    name: String,
    /// The URL's password, if it has one: the role is created with it.
    password: Option<String>,
}

/// The role `DATABASE_URL` names (with its password), unless the owner's URL names it too.
fn server_role(database_url: &str, owner_url: &str) -> anyhow::Result<Option<ServerRole>> {
    // Parsed as the connection will be, so that a user left out means the same default.
    let options = |url: &str, var: &str| {
        PgConnectOptions::from_str(url).with_context(|| format!("{var} is not a PostgreSQL URL"))
    };
    let server = options(database_url, "DATABASE_URL")?;
    let owner = options(owner_url, "FLOWDECK_MIGRATION_DATABASE_URL")?;
    if server.get_username() == owner.get_username() {
        return Ok(None);
    }
    if server.get_database() != owner.get_database() {
        tracing::warn!(
            "DATABASE_URL and FLOWDECK_MIGRATION_DATABASE_URL name different databases; \
             DATABASE_URL's role is granted in the migration URL's"
        );
    }
    let password = url::Url::parse(database_url).ok().and_then(|url| {
        url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
    });
    Ok(Some(ServerRole {
        name: server.get_username().to_owned(),
        password,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_role_is_database_urls_user_with_its_password_decoded() {
        let role = server_role(
            "postgres://flowdeck_app:p%40ss%2Fw@db:5432/flowdeck",
            "postgres://owner:secret@db:5432/flowdeck",
        )
        .unwrap()
        .expect("another role");
        assert_eq!(role.name, "flowdeck_app");
        assert_eq!(role.password.as_deref(), Some("p@ss/w"));
    }

    #[test]
    fn one_user_in_both_urls_means_no_server_role() {
        let role = server_role(
            "postgres://owner@127.0.0.1/flowdeck",
            "postgres://owner:pw@localhost:5432/flowdeck",
        )
        .unwrap();
        assert!(role.is_none());
    }

    #[test]
    fn a_server_role_without_a_password_is_created_without_one() {
        let role = server_role("postgres://app@h/db", "postgres://owner@h/db")
            .unwrap()
            .expect("another role");
        assert_eq!(role.password, None);
    }
}

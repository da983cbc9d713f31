//! `pgveil guard install | remove | status`: the guard constraints of
//! [`pgveil_policy::guard`] on a live database, installed online.
//!
//! Installing takes two steps per column, as PostgreSQL's own advice for
//! large tables goes: `ADD CONSTRAINT … NOT VALID` (a brief ACCESS
//! EXCLUSIVE lock, no scan; retried under a short `lock_timeout` so it never
//! queues behind a long transaction while blocking everyone behind it), then
//! `VALIDATE CONSTRAINT` (a scan under SHARE UPDATE EXCLUSIVE, which blocks
//! neither reads nor writes). The constraint is added to the table and so
//! to every inheritance child and partition.

use crate::check::CheckError;
use crate::config::Config;
use crate::keys;
use pgveil_policy::guard::{guard_comment, guard_expression, guard_name};
use pgveil_policy::{ColumnRef, Policy, StorageType};
use std::io::Write;
use std::time::Duration;

/// How long one attempt to take the ALTER TABLE lock may wait.
const LOCK_TIMEOUT: &str = "500ms";
/// Attempts before giving up on a table that is never free.
const LOCK_ATTEMPTS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error("database: {0}")]
    Database(String),
    #[error("{0} column(s) are not fully guarded")]
    Incomplete(usize),
}

fn db_err(e: tokio_postgres::Error) -> GuardError {
    // The server's message only: constraint names, never values.
    match e.as_db_error() {
        Some(d) => GuardError::Database(format!("{} ({})", d.message(), d.code().code())),
        None => GuardError::Database(e.to_string()),
    }
}

/// The state of one column's guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardState {
    /// Installed, current and validated: every row satisfies it.
    Valid,
    /// Installed and current, not validated: new writes are checked, rows
    /// written before it may hold plaintext.
    NotValidated,
    /// Installed by another pgveil version, or for another mode or storage.
    Outdated,
    /// Not installed.
    Missing,
    /// The column's storage type cannot hold ciphertext.
    NoStorage(String),
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One protected column present in the database.
struct Target {
    column: ColumnRef,
    expression: Option<String>,
    storage: StorageType,
}

async fn targets(
    policy: &Policy,
    client: &tokio_postgres::Client,
) -> Result<Vec<Target>, GuardError> {
    let catalog = crate::check::catalog_columns(policy, client)
        .await
        .map_err(db_err)?;
    let mut out = Vec::new();
    for pc in policy.columns() {
        let Some(storage) = crate::check::storage_of(&catalog, &pc.column) else {
            continue;
        };
        out.push(Target {
            column: pc.column.clone(),
            expression: guard_expression(pc, &storage),
            storage,
        });
    }
    Ok(out)
}

/// `(validated, comment)` of the guard constraint of `t`, if present.
async fn existing(
    client: &tokio_postgres::Client,
    t: &Target,
) -> Result<Option<(bool, Option<String>)>, GuardError> {
    let row = client
        .query_opt(
            "SELECT c.convalidated, pg_catalog.obj_description(c.oid, 'pg_constraint') \
             FROM pg_catalog.pg_constraint AS c \
             WHERE c.conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.regclass \
             AND c.conname OPERATOR(pg_catalog.=) $2::pg_catalog.text \
             AND c.contype OPERATOR(pg_catalog.=) 'c'",
            &[
                &t.column.table_ref().to_string(),
                &guard_name(&t.column.column),
            ],
        )
        .await
        .map_err(db_err)?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

async fn state(client: &tokio_postgres::Client, t: &Target) -> Result<GuardState, GuardError> {
    let Some(expr) = &t.expression else {
        return Ok(GuardState::NoStorage(format!("{:?}", t.storage)));
    };
    Ok(match existing(client, t).await? {
        None => GuardState::Missing,
        Some((_, comment)) if comment.as_deref() != Some(guard_comment(expr).as_str()) => {
            GuardState::Outdated
        }
        Some((true, _)) => GuardState::Valid,
        Some((false, _)) => GuardState::NotValidated,
    })
}

/// Runs an ALTER TABLE under a short lock timeout, retrying while the
/// table is busy (SQLSTATE 55P03).
async fn alter_with_retry(client: &tokio_postgres::Client, sql: &str) -> Result<(), GuardError> {
    client
        .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
        .await
        .map_err(db_err)?;
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match client.batch_execute(sql).await {
            Ok(()) => break Ok(()),
            Err(e)
                if attempt < LOCK_ATTEMPTS
                    && e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => break Err(db_err(e)),
        }
    };
    client
        .batch_execute("RESET lock_timeout")
        .await
        .map_err(db_err)?;
    result
}

/// Installs (or replaces outdated) guards on every protected column of the
/// database and validates them. Columns whose rows still hold plaintext
/// keep a NOT VALID guard (new writes are checked) and are reported.
pub async fn install(
    cfg: &Config,
    url: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), GuardError> {
    let policy = keys::load_policy(cfg)?;
    let client = crate::check::connect(url).await?;
    let mut incomplete = 0;
    for t in targets(&policy, &client).await? {
        let Some(expr) = t.expression.clone() else {
            let _ = writeln!(
                out,
                "error: {}: its storage type cannot hold ciphertext (use text or bytea); no guard",
                t.column
            );
            incomplete += 1;
            continue;
        };
        let table = t.column.table_ref().to_string();
        let name = guard_name(&t.column.column);
        let q = quoted(&name);
        let st = state(&client, &t).await?;
        if matches!(st, GuardState::Missing | GuardState::Outdated) {
            let drop = if st == GuardState::Outdated {
                format!("DROP CONSTRAINT {q}, ")
            } else {
                String::new()
            };
            alter_with_retry(
                &client,
                &format!("ALTER TABLE {table} {drop}ADD CONSTRAINT {q} CHECK ({expr}) NOT VALID"),
            )
            .await?;
            client
                .batch_execute(&format!(
                    "COMMENT ON CONSTRAINT {q} ON {table} IS '{}'",
                    guard_comment(&expr)
                ))
                .await
                .map_err(db_err)?;
        }
        if st == GuardState::Valid {
            let _ = writeln!(
                out,
                "ok: {}: guard {name} already installed and validated",
                t.column
            );
            continue;
        }
        match client
            .batch_execute(&format!("ALTER TABLE {table} VALIDATE CONSTRAINT {q}"))
            .await
        {
            Ok(()) => {
                let _ = writeln!(
                    out,
                    "ok: {}: guard {name} installed and validated",
                    t.column
                );
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) => {
                let _ = writeln!(
                    out,
                    "error: {}: guard {name} installed but not validated: rows hold values that are not ciphertext of this column (plaintext from before pgveil?); new writes are checked",
                    t.column
                );
                incomplete += 1;
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    if incomplete > 0 {
        return Err(GuardError::Incomplete(incomplete));
    }
    Ok(())
}

/// Drops every guard of the policy's columns.
pub async fn remove(
    cfg: &Config,
    url: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), GuardError> {
    let policy = keys::load_policy(cfg)?;
    let client = crate::check::connect(url).await?;
    for t in targets(&policy, &client).await? {
        if existing(&client, &t).await?.is_none() {
            continue;
        }
        let name = guard_name(&t.column.column);
        alter_with_retry(
            &client,
            &format!(
                "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                t.column.table_ref(),
                quoted(&name)
            ),
        )
        .await?;
        let _ = writeln!(out, "ok: {}: guard {name} removed", t.column);
    }
    Ok(())
}

/// Each protected column present in the database with its guard's state.
pub async fn status(
    policy: &Policy,
    client: &tokio_postgres::Client,
) -> Result<Vec<(ColumnRef, GuardState)>, GuardError> {
    let mut out = Vec::new();
    for t in targets(policy, client).await? {
        let st = state(client, &t).await?;
        out.push((t.column, st));
    }
    Ok(out)
}

/// `pgveil guard status`: prints each column's guard; fails when any is
/// missing, outdated or not validated.
pub async fn print_status(
    cfg: &Config,
    url: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), GuardError> {
    let policy = keys::load_policy(cfg)?;
    let client = crate::check::connect(url).await?;
    let mut bad = 0;
    for (column, st) in status(&policy, &client).await? {
        let line = match &st {
            GuardState::Valid => format!("ok: {column}: guarded"),
            GuardState::NotValidated => {
                format!("warning: {column}: guard not validated (older rows unchecked)")
            }
            GuardState::Outdated => {
                format!("warning: {column}: guard outdated: run `pgveil guard install`")
            }
            GuardState::Missing => {
                format!("warning: {column}: no guard: run `pgveil guard install`")
            }
            GuardState::NoStorage(s) => {
                format!("error: {column}: storage {s} cannot hold ciphertext")
            }
        };
        if st != GuardState::Valid {
            bad += 1;
        }
        let _ = writeln!(out, "{line}");
    }
    if bad > 0 {
        return Err(GuardError::Incomplete(bad));
    }
    Ok(())
}

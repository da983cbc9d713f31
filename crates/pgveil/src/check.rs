//! `pgveil check`: validate configuration, policy and keys offline, and with
//! `--database` the policy against the live catalog.

use crate::config::{Config, UpstreamConfig, UpstreamTlsMode};
use crate::keys::{self, FileKeyringStore};
use pgveil_crypto::KeyringStore;
use pgveil_policy::{CatalogColumn, ColumnRef, Policy, Severity, StorageType};
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error("database: {0}")]
    Database(String),
    #[error("{0} problem(s) found")]
    Findings(usize),
}

/// Runs every offline check; with `database`, the catalog checks too.
/// Returns an error when anything would stop pgveil from protecting data.
pub async fn run(
    cfg: &Config,
    database: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<(), CheckError> {
    // TLS and listener settings first; the policy and keys are checked below
    // with messages that say how to fix them.
    let mut without_policy = cfg.clone();
    without_policy.policy.file = None;
    crate::server::Shared::new(without_policy)?;
    let _ = writeln!(out, "ok: configuration and TLS files");
    let Some(policy_path) = cfg.policy_file() else {
        let _ = writeln!(
            out,
            "warning: no policy.file configured: nothing is protected"
        );
        return Ok(());
    };
    let policy = keys::load_policy(cfg)?;
    let _ = writeln!(
        out,
        "ok: policy {}: {} table(s), {} column(s), {} key(s)",
        policy_path.display(),
        policy.tables().len(),
        policy.columns().count(),
        policy.keys().len()
    );
    let mut problems = 0;
    let store = FileKeyringStore::new(cfg.keyring_file());
    if !store.exists() {
        let _ = writeln!(
            out,
            "error: keyring {} does not exist: run `pgveil keys init`",
            store.path().display()
        );
        problems += 1;
    } else {
        let kek = keys::load_kek(cfg)?;
        let ring = store.load()?;
        for key in policy.keys() {
            let name = key.name.to_string();
            match ring.column_keys(&name, &kek) {
                Ok(_) => {}
                Err(e) => {
                    let _ = writeln!(out, "error: key {name}: {e} (run `pgveil keys init`)");
                    problems += 1;
                }
            }
        }
        if problems == 0 {
            let _ = writeln!(
                out,
                "ok: every policy key unwraps with KEK {}",
                ring.kek_id()
            );
        }
    }
    if let Some(url) = database {
        problems += check_database(&policy, url, out).await?;
    }
    if problems > 0 {
        return Err(CheckError::Findings(problems));
    }
    Ok(())
}

/// Checks the policy against the live catalog. TLS to the database is used
/// when the server offers it (certificates are not verified: this reads
/// catalog metadata and counts only).
async fn check_database(
    policy: &Policy,
    url: &str,
    out: &mut (dyn Write + Send),
) -> Result<usize, CheckError> {
    let db_err = |e: tokio_postgres::Error| CheckError::Database(pg_error(&e));
    let client = connect(url).await?;
    let catalog = catalog_columns(policy, &client).await.map_err(db_err)?;
    let mut counts: BTreeMap<ColumnRef, u64> = BTreeMap::new();
    for col in policy.columns() {
        let Some(storage) = storage_of(&catalog, &col.column) else {
            continue;
        };
        if let Some(q) = Policy::non_envelope_count_query(&col.column, &storage) {
            let n: i64 = client
                .query_one(q.as_str(), &[])
                .await
                .map_err(db_err)?
                .get(0);
            counts.insert(col.column.clone(), n.max(0) as u64);
        }
    }
    let findings = policy.check_catalog(&catalog, Some(&counts));
    let mut problems = 0;
    for f in &findings {
        let _ = writeln!(out, "{f}");
        if f.severity == Severity::Error {
            problems += 1;
        }
    }
    // The second line of defence: report columns without a current,
    // validated guard (a warning: pgveil works without them).
    let guards = crate::guard::status(policy, &client)
        .await
        .map_err(|e| CheckError::Database(e.to_string()))?;
    for (column, state) in guards {
        use crate::guard::GuardState as G;
        let what = match state {
            G::Valid | G::NoStorage(_) => continue,
            G::NotValidated => "guard not validated (rows written before it are unchecked)",
            G::Outdated => "guard outdated",
            G::Missing => "no guard constraint",
        };
        let _ = writeln!(
            out,
            "warning: {column}: {what}: run `pgveil guard install --database …` so PostgreSQL itself rejects plaintext"
        );
    }
    drop(client);
    Ok(problems)
}

/// The policy tables' columns as the live catalog describes them.
pub(crate) async fn catalog_columns(
    policy: &Policy,
    client: &tokio_postgres::Client,
) -> Result<Vec<CatalogColumn>, tokio_postgres::Error> {
    Ok(client
        .query(policy.catalog_query().as_str(), &[])
        .await?
        .iter()
        .map(|r| CatalogColumn {
            schema: r.get(0),
            table: r.get(1),
            column: r.get(2),
            data_type: r.get(3),
        })
        .collect())
}

/// The storage type of protected column `column`, if the table has it.
pub(crate) fn storage_of(catalog: &[CatalogColumn], column: &ColumnRef) -> Option<StorageType> {
    catalog
        .iter()
        .find(|c| {
            c.schema == column.schema.as_str()
                && c.table == column.table.as_str()
                && c.column == column.column.as_str()
        })
        .map(|row| StorageType::from_format_type(&row.data_type))
}

/// A client connection to `url` for maintenance commands, with TLS when the
/// server offers it (certificates are not verified: these commands read
/// catalog metadata, or write ciphertext only). The connection task ends
/// when the client is dropped.
/// A tokio-postgres error with the server's message and SQLSTATE (its
/// `Display` says only "db error").
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client, CheckError> {
    let tls_cfg = crate::tls::upstream_config(&UpstreamConfig {
        tls_mode: UpstreamTlsMode::Require,
        ..Default::default()
    })
    .map_err(|e| CheckError::Database(e.to_string()))?
    .expect("require mode has a TLS config");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls_cfg).clone());
    let (client, conn) = tokio_postgres::connect(url, tls)
        .await
        .map_err(|e| CheckError::Database(pg_error(&e)))?;
    tokio::spawn(conn);
    Ok(client)
}

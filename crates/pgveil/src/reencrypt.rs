//! `pgveil keys reencrypt`: after `keys rotate`, rewrites every stored value
//! of the columns that use a key from older versions to the active one, in
//! batches, directly against the database (not through the proxy). Values
//! are decrypted and re-encrypted in this process; nothing but counts and
//! SQLSTATEs is printed. Rows are updated one by one with an optimistic
//! check (`WHERE ctid = … AND col = old`), so concurrent writers win and the
//! row is simply left for the next run.
//!
//! Until a column is fully re-encrypted, pgveil's look-ups match every live
//! version, but joins, `GROUP BY` and unique constraints compare stored
//! ciphertexts and see equal values only within one version: re-encrypt,
//! then retire the old version.

use std::io::Write;

use pgveil_crypto::{encode_text, ColumnKeys, KeyringStore};
use pgveil_policy::ProtectedColumn;

use crate::config::Config;
use crate::keys::{self, KeysError};

/// Why re-encryption stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReencryptError {
    /// Configuration, policy or keys.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The database connection or a catalog query failed.
    #[error("database: {0}")]
    Database(String),
    /// The column's key has no active version.
    #[error("key {0} has no active version")]
    NoActiveVersion(String),
}

/// Per-column outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ColumnOutcome {
    /// Values rewritten to the active version.
    pub updated: u64,
    /// Rows changed by someone else meanwhile (left for the next run).
    pub raced: u64,
    /// Values that could not be re-encrypted (decryption failure, or the
    /// database refused the update, e.g. a unique violation).
    pub failed: u64,
    /// Values still under an older version when the run ended (rows moved
    /// by concurrent updates, or failed ones): re-run before retiring.
    pub remaining: u64,
}

/// Re-encrypts every column that uses `column`'s key. Returns the total of
/// failed values (0 on full success).
pub async fn run(
    cfg: &Config,
    column: &str,
    url: &str,
    batch: u32,
    out: &mut (dyn Write + Send),
) -> Result<u64, ReencryptError> {
    let policy = keys::load_policy(cfg)?;
    let protected = keys::protected_column(&policy, column)?;
    let key_name = protected.key.to_string();
    let kek = keys::load_kek(cfg)?;
    let ring = keys::FileKeyringStore::new(cfg.keyring_file()).load()?;
    let column_keys = ring.column_keys(&key_name, &kek).map_err(KeysError::from)?;
    let active = column_keys
        .active_version()
        .ok_or_else(|| ReencryptError::NoActiveVersion(key_name.clone()))?;
    let client = crate::check::connect(url)
        .await
        .map_err(|e| ReencryptError::Database(e.to_string()))?;
    let targets: Vec<&ProtectedColumn> = policy
        .columns()
        .filter(|c| c.key == protected.key)
        .collect();
    let mut failed = 0;
    for c in targets {
        let outcome = reencrypt_column(&client, c, &column_keys, active, batch.max(1)).await?;
        let _ = writeln!(
            out,
            "{}: {} value(s) re-encrypted to v{active}, {} changed concurrently, {} failed, {} left under older versions",
            c.column, outcome.updated, outcome.raced, outcome.failed, outcome.remaining
        );
        failed += outcome.failed.max(outcome.remaining);
    }
    Ok(failed)
}

async fn reencrypt_column(
    client: &tokio_postgres::Client,
    c: &ProtectedColumn,
    keys: &ColumnKeys,
    active: u32,
    batch: u32,
) -> Result<ColumnOutcome, ReencryptError> {
    let db = |e: tokio_postgres::Error| ReencryptError::Database(e.to_string());
    let table = c.column.table_ref().to_string();
    let name = c.column.column.quoted();
    let storage: Option<String> = client
        .query_opt(
            "SELECT format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = to_regclass($1::text) AND a.attname = $2::text AND NOT a.attisdropped",
            &[&table, &c.column.column.as_str()],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0));
    let Some(storage) = storage else {
        return Ok(ColumnOutcome::default());
    };
    let bytea = storage == "bytea";
    let version = active.to_be_bytes().to_vec();
    // Rows whose envelope header names another key version, in ctid order
    // after the last one looked at (failed rows are not retried in a run).
    let header = if bytea {
        format!("substring({name} FROM 2 FOR 4)")
    } else {
        format!("substring(decode(substr({name}, 6, 8), 'base64') FROM 2 FOR 4)")
    };
    let shape = if bytea {
        format!("length({name}) >= 33")
    } else {
        // Only well-formed headers reach decode(): a stray value must not
        // abort the run.
        format!("{name} ~ '^pgv1:[A-Za-z0-9+/]{{8}}'")
    };
    let pending = format!("{name} IS NOT NULL AND {shape} AND {header} <> $1");
    // (tableoid, ctid) is unique across partitions and inheritance children.
    let select = format!(
        "SELECT tableoid::int8, ctid::text, {name} FROM {table} WHERE {pending} \
         AND (tableoid::int8, ctid) > ($2::int8, $3::text::tid) ORDER BY tableoid, ctid LIMIT {batch}"
    );
    let count = format!("SELECT count(*) FROM {table} WHERE {pending}");
    let update = format!(
        "UPDATE {table} SET {name} = $1 WHERE tableoid = $2::int8::oid AND ctid = $3::text::tid AND {name} = $4"
    );
    let select = client.prepare(&select).await.map_err(db)?;
    let update = client.prepare(&update).await.map_err(db)?;
    let mut outcome = ColumnOutcome::default();
    let mut last: (i64, String) = (0, "(0,0)".to_owned());
    loop {
        let rows = client
            .query(&select, &[&version, &last.0, &last.1])
            .await
            .map_err(db)?;
        if rows.is_empty() {
            let n: i64 = client
                .query_one(count.as_str(), &[&version])
                .await
                .map_err(db)?
                .get(0);
            outcome.remaining = n.max(0) as u64;
            return Ok(outcome);
        }
        for row in &rows {
            let rel: i64 = row.get(0);
            let ctid: String = row.get(1);
            last = (rel, ctid.clone());
            let (stored, old): (Vec<u8>, Old) = if bytea {
                let v: Vec<u8> = row.get(2);
                (v.clone(), Old::Bytes(v))
            } else {
                let v: String = row.get(2);
                (v.clone().into_bytes(), Old::Text(v))
            };
            let Ok(plain) = keys.decrypt_stored(&stored) else {
                outcome.failed += 1;
                continue;
            };
            let Ok(env) = keys.encrypt(&plain) else {
                outcome.failed += 1;
                continue;
            };
            let result = match &old {
                Old::Bytes(o) => client.execute(&update, &[&env, &rel, &ctid, o]).await,
                Old::Text(o) => {
                    let new = encode_text(&env);
                    client.execute(&update, &[&new, &rel, &ctid, o]).await
                }
            };
            match result {
                Ok(1) => outcome.updated += 1,
                Ok(_) => outcome.raced += 1,
                Err(e) if e.as_db_error().is_some() => {
                    // E.g. 23505: the same value already exists under the
                    // active version (inserted after the rotation).
                    tracing::warn!(
                        column = %c.column,
                        sqlstate = e.code().map(|s| s.code()).unwrap_or(""),
                        "re-encryption of one value refused by the database"
                    );
                    outcome.failed += 1;
                }
                Err(e) => return Err(db(e)),
            }
        }
    }
}

enum Old {
    Bytes(Vec<u8>),
    Text(String),
}

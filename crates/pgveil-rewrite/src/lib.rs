//! pgveil's protocol engine: per session, it watches the client→server and
//! server→client message streams and rewrites what must change so that
//! PostgreSQL only ever stores ciphertext in protected columns while the
//! client reads and writes plaintext. Pure: no I/O; the `pgveil` crate
//! moves the bytes.
//!
//! # Client → server
//! * `Query` / `Parse`: the statement analyser (`pgveil-sql`) finds literals
//!   and `$n` parameters that target protected columns. Literals are
//!   encrypted and spliced into the original text at their byte spans;
//!   `Parse` parameter types of protected targets become the storage type
//!   (`text`/`bytea`). Statements mentioning no protected table pass
//!   untouched without being parsed.
//! * `Bind`: protected parameters (text or binary) are brought to canonical
//!   form, encrypted with the column's active key and re-encoded for the
//!   storage type.
//! * `Execute` of a portal whose result shape pgveil does not know yet gets
//!   a `Describe` (portal) injected in front of it; its answer is consumed.
//! * Refusals are raised *by the server*, in order: the refused message is
//!   replaced by a statement that raises the refusal's SQLSTATE and message
//!   (`DO … RAISE`), so pipelines, transaction state and the extended
//!   protocol's skip-until-`Sync` behave exactly as for a server error.
//!
//! # Server → client
//! * `RowDescription`: fields whose `(table OID, attnum)` is a protected
//!   column get the logical type OID, length and modifier.
//! * `DataRow`: protected values are decrypted and re-encoded in the format
//!   the client asked for, one row at a time.
//! * `ParameterDescription`: storage types of protected parameters are
//!   reported as the logical (or client-declared) types.
//! * A value that fails to decrypt becomes an `ErrorResponse` (`XX001`) and
//!   the rest of that exchange up to `ReadyForQuery` is dropped: garbage is
//!   never returned.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod array;
mod catalog;
mod copy;
mod error;
pub mod observe;
mod registry;
mod session;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pgveil_crypto::ColumnKeys;
use pgveil_policy::{ColumnRef, Policy};

pub use access::{may_change_role, may_end_transaction, RoleView, Roles, SessionCtx, ROLE_QUERY};
pub use catalog::{catalog_query, Catalog, CatalogOrder, CatalogReader, CatalogRow};
pub use copy::encode_binary_copy;
pub use error::{Denial, RewriteError, DECRYPT_FAILED};
pub use session::{ClientAction, ClientOutcome, Path, ServerAction, Session};
pub use values::{round_numeric, ColumnCrypto, ColumnStats, Storage};

/// The data keys of the policy's key owners and per-column counters.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<ColumnRef, Result<Arc<ColumnKeys>, String>>,
    stats: BTreeMap<ColumnRef, Arc<ColumnStats>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// An empty set (every protected column then lacks a key).
    pub fn new() -> Self {
        Self::default()
    }

    /// Fresh random version-1 keys for every key of `policy` (tests,
    /// fuzzing and benchmarks; never persisted).
    pub fn generated(policy: &Policy) -> Result<Self, pgveil_crypto::CryptoError> {
        let mut keys = KeySet::new();
        for k in policy.keys() {
            let mut ck = ColumnKeys::new(&k.name.to_string())?;
            let mode = match k.mode {
                pgveil_policy::Mode::Randomized => pgveil_crypto::EncryptionMode::Randomized,
                pgveil_policy::Mode::Deterministic => pgveil_crypto::EncryptionMode::Deterministic,
            };
            ck.add_version(1, mode, &pgveil_crypto::DataKey::generate()?)?;
            ck.set_active(1)?;
            keys.insert(k.name.clone(), Ok(ck));
        }
        Ok(keys)
    }

    /// Adds the keys of key owner `owner`, or why they are unavailable.
    pub fn insert(&mut self, owner: ColumnRef, keys: Result<ColumnKeys, String>) {
        self.keys.insert(owner, keys.map(Arc::new));
    }

    /// Uses `stats` as the counters of `column` (so counters can outlive
    /// one engine, e.g. across configuration reloads).
    pub fn use_stats(&mut self, column: ColumnRef, stats: Arc<ColumnStats>) {
        self.stats.insert(column, stats);
    }

    fn keys_for(&self, owner: &ColumnRef) -> Result<Arc<ColumnKeys>, String> {
        self.keys
            .get(owner)
            .cloned()
            .unwrap_or_else(|| Err(format!("the keyring has no key {owner}")))
    }

    fn stats_for(&self, column: &ColumnRef) -> Arc<ColumnStats> {
        self.stats.get(column).cloned().unwrap_or_default()
    }

    /// Counters of every protected column of `policy` (created on demand).
    fn prepare_stats(&mut self, policy: &Policy) {
        for c in policy.columns() {
            self.stats.entry(c.column.clone()).or_default();
        }
    }
}

/// One database's resolved catalog and statement analyser.
pub struct DbContext {
    /// The resolved catalog.
    pub catalog: Catalog,
    analyzer: pgveil_sql::Analyzer,
    generation: u64,
    /// When the catalog was read: a new session does not reuse a context
    /// older than [`CATALOG_MAX_AGE`].
    read_at: std::time::Instant,
}

/// How long a new session may reuse another session's catalog read. DDL
/// made around pgveil (directly on PostgreSQL: a rename, a new child) is
/// invisible to pgveil until it reads the catalog again; sessions starting
/// more than this after such DDL see it.
pub const CATALOG_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

impl fmt::Debug for DbContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbContext")
            .field("columns", &self.catalog.len())
            .field("generation", &self.generation)
            .finish()
    }
}

/// Shared by every session of one configuration: policy, keys, per-database
/// catalogs and the DDL generation counter.
pub struct Engine {
    policy: Arc<Policy>,
    keys: KeySet,
    databases: Mutex<HashMap<String, Arc<DbContext>>>,
    /// Per database, the policy tables last reported missing: a warning is
    /// worth logging when this changes, not on every catalog read.
    missing_reported: Mutex<HashMap<String, Vec<String>>>,
    generation: AtomicU64,
    /// A reload replaced this engine's policy with one that protects other
    /// columns (or the same ones differently): sessions still using it are
    /// closed at their next idle point, so no pooled connection keeps
    /// writing under the old policy.
    superseded: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy.origin())
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for a policy and its keys.
    pub fn new(policy: Arc<Policy>, mut keys: KeySet) -> Self {
        keys.prepare_stats(&policy);
        Engine {
            policy,
            keys,
            databases: Mutex::new(HashMap::new()),
            missing_reported: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            superseded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks the engine as replaced by a different policy (see the field).
    pub fn supersede(&self) {
        self.superseded.store(true, Ordering::Release);
    }

    /// Whether [`Engine::supersede`] was called.
    pub fn superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Per-column counters, for metrics.
    pub fn column_stats(&self) -> impl Iterator<Item = (&ColumnRef, &Arc<ColumnStats>)> {
        self.keys.stats.iter()
    }

    /// Encryptions per data key version: `(key name, version, count)`.
    pub fn key_encryptions(&self) -> Vec<(String, u32, u64)> {
        let mut out = Vec::new();
        for keys in self.keys.keys.values().flatten() {
            for (v, _) in keys.versions() {
                out.push((
                    keys.key_name().to_owned(),
                    v,
                    keys.encryption_count(v).unwrap_or(0),
                ));
            }
        }
        out.sort();
        out
    }

    /// Carries encryption counts over from a previous engine (a reload), so
    /// per-key limits and counters continue rather than restart.
    pub fn restore_key_encryptions(&self, counts: &[(String, u32, u64)]) {
        for (name, version, count) in counts {
            for keys in self.keys.keys.values().flatten() {
                if keys.key_name() == name {
                    let _ = keys.set_encryption_count(*version, *count);
                }
            }
        }
    }

    /// The catalog query to run on a new session.
    pub fn catalog_query(&self) -> String {
        catalog_query(&self.policy)
    }

    /// The cached context of `database`, if still current.
    pub fn cached(&self, database: &str) -> Option<Arc<DbContext>> {
        let g = self.generation.load(Ordering::Acquire);
        let dbs = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        dbs.get(database)
            .filter(|c| c.generation == g && c.read_at.elapsed() < CATALOG_MAX_AGE)
            .cloned()
    }

    /// Builds a context from catalog rows read at `generation` (taken before
    /// the query was sent).
    pub fn build(&self, rows: &[CatalogRow], generation: u64) -> Arc<DbContext> {
        let catalog = Catalog::resolve(&self.policy, &self.keys, rows);
        let opts = pgveil_sql::AnalyzeOptions {
            column_order: Some(Arc::new(CatalogOrder(catalog.column_order()))),
            dependent_views: Arc::new(pgveil_sql::DependentViews::with_reasons(catalog.guarded())),
            relation_schemas: Some(Arc::new(catalog.relation_schemas().clone())),
            ..Default::default()
        };
        Arc::new(DbContext {
            analyzer: pgveil_sql::Analyzer::with_options(self.policy.clone(), opts, 10_000),
            catalog,
            generation,
            read_at: std::time::Instant::now(),
        })
    }

    /// Caches a context read outside any transaction.
    pub fn publish(&self, database: &str, ctx: &Arc<DbContext>) {
        if ctx.generation == self.generation.load(Ordering::Acquire) {
            let mut dbs = self.databases.lock().unwrap_or_else(|e| e.into_inner());
            dbs.insert(database.to_owned(), ctx.clone());
        }
    }

    /// Records the policy tables `ctx` found missing in `database`; true
    /// when that differs from what was last recorded for it (worth a
    /// warning), false when it was already reported.
    pub fn note_missing_tables(&self, database: &str, ctx: &DbContext) -> bool {
        let mut names: Vec<String> = ctx
            .catalog
            .missing_tables()
            .iter()
            .map(|t| t.to_string())
            .collect();
        names.sort();
        let mut seen = self
            .missing_reported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.get(database) == Some(&names) {
            return false;
        }
        let changed = !names.is_empty();
        seen.insert(database.to_owned(), names);
        changed
    }

    /// The current DDL generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// DDL committed somewhere: every session re-reads its catalog before
    /// its next statement.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut dbs = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        dbs.clear();
    }
}

#[cfg(test)]
mod tests;

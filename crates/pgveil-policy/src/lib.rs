//! The column-encryption policy: which columns pgveil protects, how, and
//! with which key. Pure: it parses strings and answers questions; it never
//! opens a file, a socket or the database.
//!
//! # The policy file
//!
//! A policy is a TOML file a DBA can read at a glance. One section per
//! table, one line per protected column:
//!
//! ```toml
//! [tables."public.patients"]
//! first_name      = { type = "text", label = "pii" }
//! last_name       = { type = "text", label = "pii" }
//! ssn             = { type = "text", mode = "deterministic", label = "phi" }
//! date_of_birth   = { type = "date", label = "phi" }
//! medical_history = { type = "text", label = "phi" }
//!
//! [tables."public.visits"]
//! patient_ssn = { type = "text", mode = "deterministic", label = "phi", key = "public.patients.ssn" }  # share a key so joins work
//! notes       = { type = "text", label = "phi" }
//! ```
//!
//! Columns not listed are not protected: pgveil passes them through.
//! `config/clinic.example.toml` is a complete, commented example.
//!
//! ## `[tables."schema.table"]`
//!
//! The section name is the table, written as in SQL: `table` (meaning
//! `public.table`) or `schema.table`. Quote it in TOML — `[tables."public.patients"]` —
//! because an unquoted `[tables.public.patients]` would be three nested TOML
//! tables (the loader recognises that mistake and says so).
//!
//! Names follow PostgreSQL's rules: unquoted names fold to lower case
//! (`Public.Patients` is `public.patients`); double-quoted names keep
//! their case and may contain dots, spaces or `""` for a quote:
//! `[tables."public.\"Patients\""]` is the table created as `"Patients"`,
//! `[tables."\"odd.schema\".t"]` is table `t` in schema `odd.schema`.
//! Names are at most 63 bytes (PostgreSQL truncates longer ones).
//! A table must list at least one column and may appear only once
//! (`patients` and `public.patients` are the same table).
//!
//! Header-style column sections also work:
//! `[tables."public.patients".ssn]` followed by `type = "text"` lines.
//!
//! ## Columns
//!
//! Each key in a table section is a column name, with the same rules:
//! `FirstName = {…}` means column `firstname`; `"\"FirstName\"" = {…}`
//! means the column created as `"FirstName"`. Two keys naming the same column
//! (`FirstName` and `firstname`) are an error. The value is a table with
//! these fields and no others:
//!
//! | field   | required | default      | meaning |
//! |---------|----------|--------------|---------|
//! | `type`  | yes      | —            | The logical type: what clients read and write (see below). |
//! | `mode`  | no       | `randomized` | `randomized`: AES-256-GCM with a random nonce; equal values encrypt differently; the column can be written and read but not compared in SQL. `deterministic`: equal values give equal ciphertext, so `=`, `IN`, joins, `GROUP BY` and unique indexes work; it reveals which rows hold equal values. |
//! | `label` | no       | none         | A short tag carried into audit events and metrics, e.g. `pii`, `phi`: 1–32 characters of `a-z`, `0-9`, `_`, starting with a letter. |
//! | `key`   | no       | the column itself | Another protected column, `schema.table.column` (or `table.column` for `public`), whose data key this column uses instead of its own. Needed for deterministic joins: equal values encrypt equally only under the same key. |
//!
//! ### Types
//!
//! Any ASCII case, with these spellings (the first is canonical):
//! `text`; `varchar`, `character varying`, with an optional length
//! `varchar(n)`; `int2`, `smallint`; `int4`, `integer`, `int`; `int8`,
//! `bigint`; `numeric`, `decimal`, with optional `numeric(p)` /
//! `numeric(p,s)`; `float4`, `real`; `float8`, `double precision`; `bool`,
//! `boolean`; `date`; `time`, `time without time zone`; `timestamp`,
//! `timestamp without time zone`; `timestamptz`, `timestamp with time zone`;
//! `uuid`; `json`; `jsonb`; `bytea`.
//!
//! The type is the *logical* type clients see (pgveil reports it in
//! `RowDescription`, with the length/precision as the type modifier). The
//! *storage* type of the column in the database is separate and chosen by the
//! DBA: `text` or `varchar` (ciphertext stored as `pgv1:` + base64) or `bytea`
//! (raw ciphertext). A `date` column, say, must be converted to `text` before
//! it can be protected; `pgveil check` says exactly which `ALTER TABLE` is
//! needed (see [`check`]).
//!
//! ### Shared keys
//!
//! * `key` must name a column protected by this policy (after case folding).
//! * Naming the column itself is allowed and means the default.
//! * **No chains**: if `a` uses `b`'s key, `b` must use its own key. A
//!   reference to a column that itself borrows a key is refused with the
//!   owner's name, so every sharer names the owner directly and one `grep`
//!   finds every column a key protects.
//! * Columns sharing a key must have the **same mode** (a randomized column
//!   under a deterministic key would weaken nothing but is certainly a
//!   mistake, and the reverse leaks equality the DBA did not ask for).
//! * Columns sharing a **deterministic** key must have compatible types:
//!   the same type, both `text`/`varchar`, or both `int2`/`int4`/`int8`
//!   (pgveil encrypts a value's canonical text form, so these compare equal
//!   when their values do). Randomized columns may share a key whatever
//!   their types; that only saves keys.
//! * For joins to work, the crypto layer must bind ciphertext to the key
//!   owner ([`ProtectedColumn::key`]), not to each column.
//!
//! ## Errors
//!
//! The loader reports every problem it can find, each with the file, line,
//! table or column, and what to change, as [`PolicyErrors`]:
//! `policy.toml:7: public.visits.patient_ssn: key "public.patient.ssn" is not a protected column in this policy (did you mean "public.patients.ssn"?)`.
//! The kinds ([`PolicyErrorKind`]):
//!
//! | error | when |
//! |-------|------|
//! | `Toml` | the file is not valid TOML (including a key given twice); reported alone |
//! | `UnknownTopLevelKey` | a top-level key other than `tables` (standalone files only) |
//! | `TablesNotATable`, `TableNotATable`, `ColumnNotATable` | a value of the wrong TOML shape |
//! | `InvalidTableName`, `InvalidColumnName` | not a valid (quoted) identifier, more than two parts, longer than 63 bytes |
//! | `DottedTableName` | `[tables.public.patients]` without quotes |
//! | `DuplicateTable` | two sections name the same table |
//! | `EmptyTable` | a section with no columns |
//! | `DuplicateColumn` | two keys name the same column after case folding |
//! | `UnknownField` | a column field other than `type`, `mode`, `label`, `key` (with a "did you mean") |
//! | `MissingType` | no `type` |
//! | `NotAString` | a field that is not a string |
//! | `Type` | unknown type (lists the accepted ones), a modifier on a type that takes none, a bad length/precision |
//! | `UnknownMode` | a mode other than `randomized` / `deterministic` (any ASCII case) |
//! | `InvalidLabel` | a label that is not a short simple identifier |
//! | `InvalidKey` | a `key` that is not `schema.table.column` |
//! | `UnknownKey` | a `key` naming a column not protected by the policy |
//! | `KeyChain` | a `key` naming a column that itself uses another column's key |
//! | `KeyModeMismatch` | a column's mode differs from its key owner's |
//! | `KeyTypeMismatch` | deterministic key sharers with incompatible types |
//!
//! ## Embedding
//!
//! [`Policy::from_toml_str`] reads a standalone policy file and refuses
//! unknown top-level keys. [`Policy::from_embedded_toml_str`] reads the
//! `[tables…]` sections of a larger configuration file and ignores its other
//! top-level keys (the configuration's own parser validates those), with the
//! same line numbers.
//!
//! # For the proxy
//!
//! * Lookups: [`Policy::table`], [`Policy::lookup`], [`Policy::lookup_column`],
//!   [`Policy::table_by_name`] (catalog spellings), iteration with
//!   [`Policy::tables`] / [`Policy::columns`], keys with [`Policy::keys`].
//! * The statement fast path: [`Policy::mentions_protected_table`] (see
//!   [`prefilter`] for what it guarantees and what it cannot see).
//! * `pgveil check`: [`Policy::catalog_query`], [`Policy::check_catalog`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod check;
pub mod error;
pub mod guard;
pub mod ident;
mod load;
pub mod prefilter;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use access::{Access, AccessRules, MaskKind};
pub use check::{CatalogColumn, CheckFinding, Severity, StorageType};
pub use error::{PolicyError, PolicyErrorKind, PolicyErrors};
pub use ident::{ColumnRef, Ident, IdentError, QualifiedTable};
pub use prefilter::TableMentionScanner;
pub use types::{ColumnType, TypeError, TypeSpec};

/// How a column is encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// AES-256-GCM with a random nonce: equal values encrypt differently.
    /// The default.
    #[default]
    Randomized,
    /// AES-256-GCM-SIV with a nonce derived from the value: equal values
    /// encrypt equally, so equality predicates, joins and unique indexes
    /// work. Reveals which rows hold equal values.
    Deterministic,
}

impl Mode {
    /// Parse a policy `mode` value (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Mode> {
        if s.eq_ignore_ascii_case("randomized") {
            Some(Mode::Randomized)
        } else if s.eq_ignore_ascii_case("deterministic") {
            Some(Mode::Deterministic)
        } else {
            None
        }
    }

    /// `randomized` or `deterministic`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Randomized => "randomized",
            Mode::Deterministic => "deterministic",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column's audit/metric label: 1–32 of `a-z`, `0-9`, `_`, starting with
/// a letter, so it is safe as a Prometheus label value and the set is small.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    /// Longest label accepted.
    pub const MAX_LEN: usize = 32;

    /// Validate a label.
    pub fn parse(s: &str) -> Option<Label> {
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        valid.then(|| Label(s.to_owned()))
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One protected column, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedColumn {
    /// The column.
    pub column: ColumnRef,
    /// Its logical type: what clients read and write.
    pub ty: ColumnType,
    /// The logical type's modifier as PostgreSQL encodes it (`-1` for none;
    /// see [`TypeSpec::typmod`]), for `RowDescription`.
    pub typmod: i32,
    /// How it is encrypted.
    pub mode: Mode,
    /// Its audit/metric label, if the policy gives one.
    pub label: Option<Label>,
    /// The column whose data key encrypts this one: the column itself unless
    /// the policy says `key = "…"`. Never a chain: the owner uses its own key.
    pub key: ColumnRef,
    /// The policy line declaring the column, for diagnostics.
    pub line: usize,
    /// The `mask` the policy gives (see [`ProtectedColumn::mask`]).
    pub mask: Option<MaskKind>,
}

impl ProtectedColumn {
    /// The logical type with its modifier.
    pub fn type_spec(&self) -> TypeSpec {
        TypeSpec {
            ty: self.ty,
            typmod: self.typmod,
        }
    }

    /// How masked values of this column look: the policy's `mask`, or the
    /// type's default ([`MaskKind::default_for`]).
    pub fn mask(&self) -> MaskKind {
        self.mask.unwrap_or_else(|| MaskKind::default_for(self.ty))
    }

    /// Whether this column uses another column's key.
    pub fn shares_key(&self) -> bool {
        self.key != self.column
    }

    /// Whether equal values encrypt equally.
    pub fn is_deterministic(&self) -> bool {
        self.mode == Mode::Deterministic
    }
}

/// The protected columns of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePolicy {
    table: QualifiedTable,
    line: usize,
    columns: BTreeMap<Ident, ProtectedColumn>,
}

impl TablePolicy {
    /// The table.
    pub fn table(&self) -> &QualifiedTable {
        &self.table
    }

    /// The policy line of the table's section.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Its protected columns, ordered by name.
    pub fn columns(&self) -> impl ExactSizeIterator<Item = &ProtectedColumn> + '_ {
        self.columns.values()
    }

    /// A protected column by (normalised) name.
    pub fn column(&self, column: &Ident) -> Option<&ProtectedColumn> {
        self.columns.get(column)
    }

    /// A protected column by its catalog spelling (`pg_attribute.attname`).
    pub fn column_by_name(&self, attname: &str) -> Option<&ProtectedColumn> {
        self.columns.get(attname)
    }
}

/// A data key and the columns that use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name: the column that owns it.
    pub name: ColumnRef,
    /// The mode every column under this key uses.
    pub mode: Mode,
    /// The columns encrypted with it (the owner included), sorted.
    pub columns: Vec<ColumnRef>,
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    origin: String,
    tables: BTreeMap<QualifiedTable, TablePolicy>,
    keys: BTreeMap<ColumnRef, KeyInfo>,
    scanner: TableMentionScanner,
    access: Option<AccessRules>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::empty()
    }
}

impl Policy {
    /// Parse a standalone policy file. `origin` (usually the file name)
    /// prefixes every error message.
    pub fn from_toml_str(src: &str, origin: &str) -> Result<Policy, PolicyErrors> {
        load::load(src, origin, false)
    }

    /// Parse the `[tables…]` sections of a larger configuration file,
    /// ignoring its other top-level keys.
    pub fn from_embedded_toml_str(src: &str, origin: &str) -> Result<Policy, PolicyErrors> {
        load::load(src, origin, true)
    }

    /// A policy protecting nothing.
    pub fn empty() -> Policy {
        Policy::from_parts(String::new(), BTreeMap::new(), BTreeMap::new())
    }

    pub(crate) fn from_parts(
        origin: String,
        tables: BTreeMap<QualifiedTable, TablePolicy>,
        keys: BTreeMap<ColumnRef, KeyInfo>,
    ) -> Policy {
        let scanner = TableMentionScanner::new(tables.keys());
        Policy {
            origin,
            tables,
            keys,
            scanner,
            access: None,
        }
    }

    /// Where the policy came from, as given to the loader.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether the policy protects nothing.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The tables, ordered by schema then name.
    pub fn tables(&self) -> impl ExactSizeIterator<Item = &TablePolicy> + '_ {
        self.tables.values()
    }

    /// Every protected column, table by table.
    pub fn columns(&self) -> impl Iterator<Item = &ProtectedColumn> + '_ {
        self.tables.values().flat_map(TablePolicy::columns)
    }

    /// A table's policy.
    pub fn table(&self, table: &QualifiedTable) -> Option<&TablePolicy> {
        self.tables.get(table)
    }

    /// A table's policy by catalog spelling (`pg_namespace.nspname`,
    /// `pg_class.relname`), without building identifiers.
    pub fn table_by_name(&self, schema: &str, table: &str) -> Option<&TablePolicy> {
        self.tables
            .iter()
            .find(|(t, _)| t.schema.as_str() == schema && t.table.as_str() == table)
            .map(|(_, p)| p)
    }

    /// A protected column.
    pub fn lookup(&self, table: &QualifiedTable, column: &Ident) -> Option<&ProtectedColumn> {
        self.tables.get(table)?.column(column)
    }

    /// A protected column by reference.
    pub fn lookup_column(&self, column: &ColumnRef) -> Option<&ProtectedColumn> {
        self.table(&column.table_ref())?.column(&column.column)
    }

    /// The distinct data keys, by owner name, each with its mode and columns.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &KeyInfo> + '_ {
        self.keys.values()
    }

    /// The key owned by `owner` (the [`ProtectedColumn::key`] of its users).
    pub fn key(&self, owner: &ColumnRef) -> Option<&KeyInfo> {
        self.keys.get(owner)
    }

    /// The `[access]` rules, if the policy has them (without, every role
    /// may read and write every protected column in plaintext).
    pub fn access(&self) -> Option<&AccessRules> {
        self.access.as_ref()
    }

    /// The distinct labels in use.
    pub fn labels(&self) -> BTreeSet<&Label> {
        self.columns().filter_map(|c| c.label.as_ref()).collect()
    }

    /// Whether SQL text might reference a protected table. Never a false
    /// negative for any spelling of a protected table's name; false positives
    /// (the name in a string, a comment, a longer name) only cost a parse.
    /// See [`prefilter`] for the exact guarantee.
    pub fn mentions_protected_table(&self, sql: &str) -> bool {
        self.scanner.is_match(sql.as_bytes())
    }

    /// [`Policy::mentions_protected_table`] on raw statement bytes (as they
    /// arrive in a `Query` or `Parse` message).
    pub fn mentions_protected_table_bytes(&self, sql: &[u8]) -> bool {
        self.scanner.is_match(sql)
    }

    /// The pre-filter's patterns: protected table names, lower-cased.
    pub fn prefilter_patterns(&self) -> &[String] {
        self.scanner.patterns()
    }
}

#[cfg(test)]
mod tests;

//! `pgveil check`, the pure half: compare the policy with the live catalog.
//!
//! The binary runs [`Policy::catalog_query`] (one query over `pg_catalog`),
//! maps each row to a [`CatalogColumn`], optionally counts values that are
//! not pgveil ciphertext with [`Policy::non_envelope_count_query`], and hands
//! everything to [`Policy::check_catalog`], which returns the findings to
//! print. Nothing here touches the database.
//!
//! # Storage types
//! A protected column's *storage* type is the DBA's choice; the policy's
//! `type` is the *logical* type clients see:
//! * `bytea` stores the raw binary envelope
//!   (`format(1) | key_version(4) | nonce(12) | ciphertext | tag(16)`);
//! * `text` and `varchar` store `pgv1:` followed by the envelope in base64,
//!   so an existing `text` column needs no DDL;
//! * anything else (`date`, `integer`, `jsonb`, …) cannot hold ciphertext and
//!   must be converted, e.g.
//!   `ALTER TABLE public.patients ALTER COLUMN date_of_birth TYPE text USING date_of_birth::text;`
//!   (existing values stay plaintext until they are encrypted).
//!
//! A `varchar(n)` must be long enough for the ciphertext, which is longer
//! than the plaintext: a value of `b` bytes takes
//! `5 + 4 * ceil((33 + b) / 3)` characters ([`text_envelope_len`]).

use std::collections::BTreeMap;
use std::fmt;

use crate::ident::{ColumnRef, Ident, QualifiedTable};
use crate::{Policy, ProtectedColumn};

// The envelope's shape, mirrored from `pgveil-crypto` (`envelope::TEXT_PREFIX`,
// `FORMAT_V1_*`, `OVERHEAD`) because this crate must not depend on it; the
// binary, which sees both, should assert they agree.

/// The prefix of a text-stored envelope (`envelope::TEXT_PREFIX`).
pub const TEXT_ENVELOPE_PREFIX: &str = "pgv1:";
/// First bytes of a binary envelope: v1 randomized, v1 deterministic (`envelope::FORMAT_V1_*`).
pub const ENVELOPE_FORMAT_BYTES: [u8; 2] = [0x11, 0x12];
/// Bytes an envelope adds to the plaintext: format 1 + key version 4 + nonce 12 + tag 16
/// (`envelope::OVERHEAD`).
pub const ENVELOPE_OVERHEAD: usize = 1 + 4 + 12 + 16;

/// Characters of a text-stored envelope for a plaintext of `plaintext_bytes`.
pub fn text_envelope_len(plaintext_bytes: usize) -> usize {
    TEXT_ENVELOPE_PREFIX.len() + 4 * (ENVELOPE_OVERHEAD + plaintext_bytes).div_ceil(3)
}

/// The longest plaintext (bytes) whose text envelope fits in `chars`
/// characters, or `None` if not even an empty value fits.
pub fn max_plaintext_for_text_len(chars: usize) -> Option<usize> {
    let base64 = chars.checked_sub(TEXT_ENVELOPE_PREFIX.len())?;
    (base64 / 4 * 3).checked_sub(ENVELOPE_OVERHEAD)
}

/// One column of a policy table as the catalog describes it: a row of
/// [`Policy::catalog_query`]. Names are as stored (already normalised).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogColumn {
    /// `pg_namespace.nspname`
    pub schema: String,
    /// `pg_class.relname`
    pub table: String,
    /// `pg_attribute.attname`
    pub column: String,
    /// `format_type()` output, e.g. `text`, `character varying(64)`, `bytea`, `integer`.
    pub data_type: String,
}

/// What a column's storage type can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageType {
    /// `text`: base64 envelope.
    Text,
    /// `character varying(n)`: base64 envelope, limited to `n` characters.
    Varchar(Option<usize>),
    /// `bytea`: raw envelope.
    Bytea,
    /// Anything else: cannot hold ciphertext.
    Other(String),
}

impl StorageType {
    /// Classify `format_type()` output.
    pub fn from_format_type(data_type: &str) -> Self {
        let t = data_type.trim();
        match t {
            "text" => return StorageType::Text,
            "bytea" => return StorageType::Bytea,
            "character varying" => return StorageType::Varchar(None),
            _ => {}
        }
        if let Some(n) = t
            .strip_prefix("character varying(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
        {
            return StorageType::Varchar(Some(n));
        }
        StorageType::Other(t.to_owned())
    }
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The column is ready.
    Ok,
    /// Works, but something needs attention.
    Warning,
    /// pgveil cannot protect the column as configured.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One result of [`Policy::check_catalog`]. Never contains column values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFinding {
    /// How serious.
    pub severity: Severity,
    /// The table concerned.
    pub table: QualifiedTable,
    /// The column concerned, if the finding is about one column.
    pub column: Option<Ident>,
    /// What was found and what to do, for the DBA.
    pub message: String,
}

impl fmt::Display for CheckFinding {
    /// `error: public.patients.ssn: stored as integer, …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.table)?;
        if let Some(column) = &self.column {
            write!(f, ".{column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Policy {
    /// The SQL the binary runs for `pgveil check` (simple or extended
    /// protocol, no parameters). It returns one row per column of every
    /// policy table — `schema_name text, table_name text, column_name text,
    /// data_type text` — in [`CatalogColumn`] field order. Tables are matched
    /// case-insensitively so the check can point out case mistakes; domains
    /// are reported as their base type. Ordinary, partitioned and foreign
    /// tables are considered.
    pub fn catalog_query(&self) -> String {
        let wanted: Vec<String> = self
            .tables()
            .map(|t| {
                format!(
                    "(pg_catalog.lower({}), pg_catalog.lower({}))",
                    sql_literal(t.table().schema.as_str()),
                    sql_literal(t.table().table.as_str())
                )
            })
            .collect();
        let filter = if wanted.is_empty() {
            "false".to_owned()
        } else {
            format!(
                "(pg_catalog.lower(n.nspname), pg_catalog.lower(c.relname)) IN (VALUES {})",
                wanted.join(", ")
            )
        };
        format!(
            "SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, \
             a.attname::text AS column_name, \
             pg_catalog.format_type(\
             CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, \
             CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) AS data_type \
             FROM pg_catalog.pg_attribute AS a \
             JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f') \
             AND {filter} \
             ORDER BY 1, 2, a.attnum"
        )
    }

    /// SQL counting the values of `column` that are not pgveil envelopes
    /// (one row, one `bigint`), given its storage type; `None` for storage
    /// that cannot hold ciphertext (already an error). The count only looks
    /// at the envelope's shape (the `pgv1:` prefix, or a known format byte
    /// and the minimum length), not at whether it decrypts.
    pub fn non_envelope_count_query(column: &ColumnRef, storage: &StorageType) -> Option<String> {
        let table = column.table_ref();
        let c = &column.column;
        let condition = match storage {
            StorageType::Text | StorageType::Varchar(_) => format!(
                "pg_catalog.left({c}::text, {}) <> {}",
                TEXT_ENVELOPE_PREFIX.len(),
                sql_literal(TEXT_ENVELOPE_PREFIX)
            ),
            StorageType::Bytea => format!(
                "CASE WHEN pg_catalog.length({c}) < {ENVELOPE_OVERHEAD} THEN true \
                 ELSE pg_catalog.get_byte({c}, 0) NOT IN ({}) END",
                ENVELOPE_FORMAT_BYTES.map(|b| b.to_string()).join(", ")
            ),
            StorageType::Other(_) => return None,
        };
        Some(format!(
            "SELECT pg_catalog.count(*) FROM {table} WHERE {c} IS NOT NULL AND {condition}"
        ))
    }

    /// Compare the policy with the catalog rows from [`Policy::catalog_query`].
    ///
    /// `non_envelope_counts` maps a protected column to the number of its
    /// values that are not ciphertext (from
    /// [`Policy::non_envelope_count_query`]); pass `None` to skip that check.
    /// Returns findings in policy order; every protected column gets at
    /// least one, `Ok` when nothing is wrong.
    pub fn check_catalog(
        &self,
        catalog: &[CatalogColumn],
        non_envelope_counts: Option<&BTreeMap<ColumnRef, u64>>,
    ) -> Vec<CheckFinding> {
        let mut findings = Vec::new();
        for table_policy in self.tables() {
            let table = table_policy.table();
            let rows: Vec<&CatalogColumn> = catalog
                .iter()
                .filter(|r| r.schema == table.schema.as_str() && r.table == table.table.as_str())
                .collect();
            if rows.is_empty() {
                findings.push(CheckFinding {
                    severity: Severity::Error,
                    table: table.clone(),
                    column: None,
                    message: format!(
                        "table not found in the database (policy line {}){}",
                        table_policy.line,
                        table_case_hint(table, catalog)
                    ),
                });
                continue;
            }
            for protected in table_policy.columns() {
                let row = rows
                    .iter()
                    .find(|r| r.column == protected.column.column.as_str());
                let Some(row) = row else {
                    findings.push(CheckFinding {
                        severity: Severity::Error,
                        table: table.clone(),
                        column: Some(protected.column.column.clone()),
                        message: format!(
                            "column not found in table {table} (policy line {}){}",
                            protected.line,
                            column_case_hint(protected, &rows)
                        ),
                    });
                    continue;
                };
                let before = findings.len();
                let storage = StorageType::from_format_type(&row.data_type);
                check_storage(protected, &storage, &row.data_type, &mut findings);
                let count = non_envelope_counts
                    .and_then(|counts| counts.get(&protected.column))
                    .copied()
                    .unwrap_or(0);
                if count > 0 {
                    findings.push(CheckFinding {
                        severity: Severity::Warning,
                        table: table.clone(),
                        column: Some(protected.column.column.clone()),
                        message: format!(
                            "{count} stored value(s) are not pgveil ciphertext \
                             (plaintext from before the column was protected, or written \
                             without pgveil); values are not shown"
                        ),
                    });
                }
                if findings.len() == before {
                    findings.push(CheckFinding {
                        severity: Severity::Ok,
                        table: table.clone(),
                        column: Some(protected.column.column.clone()),
                        message: format!(
                            "{} {}, stored as {} ({})",
                            protected.mode,
                            protected.type_spec(),
                            row.data_type,
                            match storage {
                                StorageType::Bytea => "raw envelope",
                                _ => "pgv1: base64 envelope",
                            }
                        ),
                    });
                }
            }
        }
        findings
    }
}

fn check_storage(
    protected: &ProtectedColumn,
    storage: &StorageType,
    data_type: &str,
    findings: &mut Vec<CheckFinding>,
) {
    let table = protected.column.table_ref();
    let column = &protected.column.column;
    let alter =
        format!("ALTER TABLE {table} ALTER COLUMN {column} TYPE text USING {column}::text;");
    let finding = |severity, message| CheckFinding {
        severity,
        table: table.clone(),
        column: Some(column.clone()),
        message,
    };
    match storage {
        StorageType::Text | StorageType::Bytea | StorageType::Varchar(None) => {}
        StorageType::Other(t) => findings.push(finding(
            Severity::Error,
            format!(
                "stored as {t}, which cannot hold ciphertext; store it as text or varchar \
                 (\"pgv1:\" base64 envelope) or bytea (raw envelope), e.g. {alter} \
                 (existing values stay plaintext until encrypted)"
            ),
        )),
        StorageType::Varchar(Some(n)) => {
            let n = *n;
            let Some(fits) = max_plaintext_for_text_len(n) else {
                findings.push(finding(
                    Severity::Error,
                    format!(
                        "stored as {data_type}, too short for any ciphertext (at least {} \
                         characters); widen it: {alter}",
                        text_envelope_len(0)
                    ),
                ));
                return;
            };
            match protected.ty.max_text_bytes(protected.typmod) {
                Some(bound) if text_envelope_len(bound) <= n => {}
                Some(bound) => findings.push(finding(
                    Severity::Warning,
                    format!(
                        "stored as {data_type}, which may be too short: ciphertext of a {} value \
                         takes up to {} characters (values over {fits} bytes will not fit); \
                         widen it: {alter}",
                        protected.type_spec(),
                        text_envelope_len(bound)
                    ),
                )),
                None => findings.push(finding(
                    Severity::Warning,
                    format!(
                        "stored as {data_type}: ciphertext is longer than plaintext, so only \
                         values up to {fits} bytes will fit; widen it: {alter}"
                    ),
                )),
            }
        }
    }
}

fn table_case_hint(table: &QualifiedTable, catalog: &[CatalogColumn]) -> String {
    let schema = table.schema.as_str().to_lowercase();
    let name = table.table.as_str().to_lowercase();
    let mut seen: Vec<QualifiedTable> = Vec::new();
    for row in catalog {
        if row.schema.to_lowercase() == schema && row.table.to_lowercase() == name {
            if let (Ok(s), Ok(t)) = (
                Ident::from_normalized(row.schema.clone()),
                Ident::from_normalized(row.table.clone()),
            ) {
                let found = QualifiedTable::new(s, t);
                if !seen.contains(&found) {
                    seen.push(found);
                }
            }
        }
    }
    if seen.is_empty() {
        return String::new();
    }
    let names: Vec<String> = seen.iter().map(|t| t.to_string()).collect();
    format!(
        "; the database has {} (quoted names keep their case: write the policy key as in SQL, e.g. [tables.{:?}])",
        names.join(", "),
        names[0]
    )
}

fn column_case_hint(protected: &ProtectedColumn, rows: &[&CatalogColumn]) -> String {
    let name = protected.column.column.as_str().to_lowercase();
    let found: Vec<String> = rows
        .iter()
        .filter(|r| r.column.to_lowercase() == name)
        .filter_map(|r| Ident::from_normalized(r.column.clone()).ok())
        .map(|i| i.to_string())
        .collect();
    match found.first() {
        None => String::new(),
        Some(first) => format!(
            "; the table has column {first} (quoted names keep their case: write the policy key as {:?})",
            first
        ),
    }
}

/// A string literal that means the same whatever `standard_conforming_strings` is.
fn sql_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
[tables."public.patients"]
ssn = { type = "text", mode = "deterministic", label = "phi" }
date_of_birth = { type = "date", label = "phi" }
first_name = { type = "varchar(40)", label = "pii" }
notes = { type = "text" }
photo = { type = "bytea" }
visits = { type = "int4" }

[tables."clinic.\"Visits\""]
"\"Notes\"" = { type = "text" }

[tables."public.gone"]
x = { type = "text" }
"#;

    fn policy() -> Policy {
        Policy::from_toml_str(SRC, "policy.toml").unwrap()
    }

    fn row(schema: &str, table: &str, column: &str, data_type: &str) -> CatalogColumn {
        CatalogColumn {
            schema: schema.into(),
            table: table.into(),
            column: column.into(),
            data_type: data_type.into(),
        }
    }

    fn find<'a>(findings: &'a [CheckFinding], column: &str) -> Vec<&'a CheckFinding> {
        findings
            .iter()
            .filter(|f| f.column.as_ref().map(Ident::as_str) == Some(column))
            .collect()
    }

    #[test]
    fn envelope_sizes() {
        assert_eq!(text_envelope_len(0), 5 + 44);
        assert_eq!(text_envelope_len(11), 5 + 4 * 15); // an SSN: 44 bytes -> 60 base64
        assert_eq!(max_plaintext_for_text_len(49), Some(0));
        assert_eq!(max_plaintext_for_text_len(48), None);
        assert_eq!(max_plaintext_for_text_len(4), None);
        for n in 0..200 {
            let len = text_envelope_len(n);
            assert!(max_plaintext_for_text_len(len).unwrap() >= n);
            assert!(max_plaintext_for_text_len(len - 1).is_none_or(|m| m < n));
        }
    }

    #[test]
    fn storage_types() {
        assert_eq!(StorageType::from_format_type("text"), StorageType::Text);
        assert_eq!(StorageType::from_format_type("bytea"), StorageType::Bytea);
        assert_eq!(
            StorageType::from_format_type("character varying(64)"),
            StorageType::Varchar(Some(64))
        );
        assert_eq!(
            StorageType::from_format_type("character varying"),
            StorageType::Varchar(None)
        );
        assert_eq!(
            StorageType::from_format_type("character(11)"),
            StorageType::Other("character(11)".into())
        );
    }

    #[test]
    fn catalog_findings() {
        let p = policy();
        let catalog = vec![
            row("public", "patients", "id", "integer"),
            row("public", "patients", "ssn", "text"),
            row("public", "patients", "date_of_birth", "date"),
            row("public", "patients", "first_name", "character varying(100)"),
            row("public", "patients", "notes", "character varying(200)"),
            row("public", "patients", "photo", "bytea"),
            row("public", "patients", "Visits", "integer"),
            row("clinic", "visits", "notes", "text"),
        ];
        let mut counts = BTreeMap::new();
        counts.insert(ColumnRef::parse("public.patients.ssn").unwrap(), 3u64);
        counts.insert(ColumnRef::parse("public.patients.photo").unwrap(), 0u64);
        let findings = p.check_catalog(&catalog, Some(&counts));
        for f in &findings {
            eprintln!("{f}");
        }

        let ssn = find(&findings, "ssn");
        assert_eq!(ssn.len(), 1);
        assert_eq!(ssn[0].severity, Severity::Warning);
        assert!(ssn[0]
            .message
            .starts_with("3 stored value(s) are not pgveil ciphertext"));

        let dob = find(&findings, "date_of_birth");
        assert_eq!(dob[0].severity, Severity::Error);
        assert!(dob[0].message.contains(
            "ALTER TABLE public.patients ALTER COLUMN date_of_birth TYPE text USING date_of_birth::text;"
        ));
        assert!(dob[0]
            .message
            .starts_with("stored as date, which cannot hold ciphertext"));

        let first = find(&findings, "first_name");
        assert_eq!(first[0].severity, Severity::Warning);
        assert!(
            first[0]
                .message
                .contains("takes up to 265 characters (values over 36 bytes will not fit)"),
            "{}",
            first[0].message
        );

        let notes = find(&findings, "notes");
        assert_eq!(notes[0].severity, Severity::Warning);
        assert!(
            notes[0]
                .message
                .contains("only values up to 111 bytes will fit"),
            "{}",
            notes[0].message
        );

        let photo = find(&findings, "photo");
        assert_eq!(photo[0].severity, Severity::Ok);
        assert_eq!(
            photo[0].to_string(),
            "ok: public.patients.photo: randomized bytea, stored as bytea (raw envelope)"
        );

        let visits = find(&findings, "visits");
        assert_eq!(visits[0].severity, Severity::Error);
        assert!(visits[0].message.starts_with("column not found in table public.patients (policy line 8); the table has column \"Visits\""), "{}", visits[0].message);

        let quoted: Vec<_> = findings
            .iter()
            .filter(|f| f.table.schema.as_str() == "clinic")
            .collect();
        assert_eq!(quoted.len(), 1);
        assert_eq!(quoted[0].severity, Severity::Error);
        assert!(
            quoted[0].message.starts_with(
                "table not found in the database (policy line 10); the database has clinic.visits"
            ),
            "{}",
            quoted[0].message
        );

        let gone: Vec<_> = findings
            .iter()
            .filter(|f| f.table.table.as_str() == "gone")
            .collect();
        assert_eq!(
            gone[0].to_string(),
            "error: public.gone: table not found in the database (policy line 13)"
        );
        // Unprotected columns (id, Visits) get no findings.
        assert!(find(&findings, "id").is_empty());
    }

    #[test]
    fn short_varchar_is_an_error() {
        let p = Policy::from_toml_str("[tables.t]\nc = { type = \"int4\" }\n", "p.toml").unwrap();
        let f = p.check_catalog(&[row("public", "t", "c", "character varying(20)")], None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0]
            .message
            .contains("too short for any ciphertext (at least 49 characters)"));
        let f = p.check_catalog(&[row("public", "t", "c", "character varying(64)")], None);
        assert_eq!(f[0].severity, Severity::Warning, "{}", f[0]);
        assert!(
            f[0].message.contains("takes up to 65 characters"),
            "{}",
            f[0]
        );
        let f = p.check_catalog(&[row("public", "t", "c", "character varying(65)")], None);
        assert_eq!(f[0].severity, Severity::Ok, "{}", f[0]);
    }

    #[test]
    fn queries() {
        let p = policy();
        let q = p.catalog_query();
        assert!(q.contains("(VALUES (pg_catalog.lower('clinic'), pg_catalog.lower('Visits')), (pg_catalog.lower('public'), pg_catalog.lower('gone')), (pg_catalog.lower('public'), pg_catalog.lower('patients')))"), "{q}");
        assert!(Policy::empty().catalog_query().contains("AND false"));
        let c = ColumnRef::parse("clinic.\"Visits\".\"Notes\"").unwrap();
        assert_eq!(
            Policy::non_envelope_count_query(&c, &StorageType::Text).unwrap(),
            "SELECT pg_catalog.count(*) FROM clinic.\"Visits\" WHERE \"Notes\" IS NOT NULL AND pg_catalog.left(\"Notes\"::text, 5) <> 'pgv1:'"
        );
        assert_eq!(
            Policy::non_envelope_count_query(&c, &StorageType::Bytea).unwrap(),
            "SELECT pg_catalog.count(*) FROM clinic.\"Visits\" WHERE \"Notes\" IS NOT NULL AND CASE WHEN pg_catalog.length(\"Notes\") < 33 THEN true ELSE pg_catalog.get_byte(\"Notes\", 0) NOT IN (17, 18) END"
        );
        assert_eq!(
            Policy::non_envelope_count_query(&c, &StorageType::Other("date".into())),
            None
        );
        assert_eq!(sql_literal("o'k"), "'o''k'");
        assert_eq!(sql_literal("a\\b'"), "E'a\\\\b'''");
    }
}

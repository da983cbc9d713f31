//! The engine's error type and its single mapping to client-visible
//! SQLSTATEs. Messages name tables, columns and reasons, never values.

use pgveil_policy::ColumnRef;

/// SQLSTATE for a protected value that cannot be decrypted (`data_corrupted`).
pub const DECRYPT_FAILED: &str = "XX001";
/// SQLSTATE `feature_not_supported`.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// SQLSTATE `datatype_mismatch`.
pub const DATATYPE_MISMATCH: &str = "42804";
/// SQLSTATE `undefined_table`: a policy table the catalog does not have.
pub const UNDEFINED_TABLE: &str = "42P01";
/// SQLSTATE `internal_error`: no usable data key.
pub const KEY_UNAVAILABLE: &str = "XX000";
/// SQLSTATE `bad_copy_file_format`.
pub const BAD_COPY_FORMAT: &str = "22P04";
/// SQLSTATE `insufficient_privilege`: the access rules deny the session's
/// role.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// The audit log cannot record: statements on protected columns are refused
/// (class 58, system error: `io_error`).
pub const AUDIT_UNAVAILABLE: &str = "58030";
/// SQLSTATE `protocol_violation`.
pub const PROTOCOL_VIOLATION: &str = "08P01";

/// Why the engine refuses or fails a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The statement analyser refused the statement.
    #[error("{0}")]
    Refused(#[from] pgveil_sql::Refusal),
    /// A value for a protected column is not valid input for its logical type.
    #[error("pgveil: invalid value for protected column {column}: {reason}")]
    InvalidValue {
        /// The column.
        column: ColumnRef,
        /// What is wrong, without the value.
        reason: String,
        /// The SQLSTATE PostgreSQL would report.
        sqlstate: &'static str,
    },
    /// A bound parameter's declared type cannot be converted to the column's type.
    #[error("pgveil: parameter ${param} targets protected column {column} of type {logical} but is declared as type OID {declared}, a conversion pgveil cannot reproduce on ciphertext; declare it as {logical} or leave its type unspecified")]
    ParamType {
        /// 1-based parameter number.
        param: u32,
        /// The column.
        column: ColumnRef,
        /// Logical type name.
        logical: &'static str,
        /// The declared type OID.
        declared: u32,
    },
    /// No catalog entry for a protected column's table.
    #[error("pgveil: table {table} of protected column {column} is not in this database's catalog (create it, or fix the policy)")]
    NotInCatalog {
        /// The table.
        table: String,
        /// The column.
        column: ColumnRef,
    },
    /// The column's storage type cannot hold ciphertext.
    #[error("pgveil: protected column {column} is stored as {storage}, which cannot hold ciphertext; store it as text or bytea")]
    BadStorage {
        /// The column.
        column: ColumnRef,
        /// Storage type name or OID.
        storage: String,
    },
    /// No usable data key.
    #[error("pgveil: no usable data key for protected column {column} (key {key}): {reason}")]
    NoKey {
        /// The column.
        column: ColumnRef,
        /// The key name.
        key: String,
        /// Why.
        reason: String,
    },
    /// The policy's access rules deny the session's role this column.
    #[error("{0}")]
    Denied(Box<Denial>),
    /// The audit log cannot record statements on protected columns.
    #[error("pgveil: the audit log cannot record statements on protected columns ({reason}); they are refused until it can (audit.on_failure = \"refuse\")")]
    AuditUnavailable {
        /// Why (no values).
        reason: String,
    },
    /// A stored protected value failed to decrypt.
    #[error("pgveil: stored value of protected column {column} cannot be decrypted ({reason}); it was not written through pgveil with this column's key, or it was altered")]
    Decrypt {
        /// The column.
        column: ColumnRef,
        /// Why (no value).
        reason: String,
    },
    /// COPY data pgveil cannot split into fields as declared.
    #[error("pgveil: COPY {table}, line {line}: {reason}")]
    CopyFormat {
        /// The table.
        table: String,
        /// 1-based line of the stream (0: before any data).
        line: u64,
        /// What is wrong, without values.
        reason: String,
    },
    /// An error on one line of a COPY stream.
    #[error("{inner} (COPY line {line})")]
    InCopy {
        /// 1-based line of the stream.
        line: u64,
        /// The error.
        inner: Box<RewriteError>,
    },
    /// A server or client message pgveil cannot interpret where it must.
    #[error("pgveil: malformed {0} message")]
    Malformed(&'static str),
}

impl RewriteError {
    /// The one mapping from engine errors to SQLSTATEs.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            RewriteError::Refused(r) => r.sqlstate,
            RewriteError::InvalidValue { sqlstate, .. } => sqlstate,
            RewriteError::ParamType { .. } => DATATYPE_MISMATCH,
            RewriteError::NotInCatalog { .. } => UNDEFINED_TABLE,
            RewriteError::BadStorage { .. } => DATATYPE_MISMATCH,
            RewriteError::NoKey { .. } => KEY_UNAVAILABLE,
            RewriteError::Decrypt { .. } => DECRYPT_FAILED,
            RewriteError::Denied(_) => INSUFFICIENT_PRIVILEGE,
            RewriteError::AuditUnavailable { .. } => AUDIT_UNAVAILABLE,
            RewriteError::CopyFormat { .. } => BAD_COPY_FORMAT,
            RewriteError::InCopy { inner, .. } => inner.sqlstate(),
            RewriteError::Malformed(_) => PROTOCOL_VIOLATION,
        }
    }

    /// The protected column involved, if any (for metrics and audit).
    pub fn column(&self) -> Option<&ColumnRef> {
        match self {
            RewriteError::Refused(r) => r.column.as_ref(),
            RewriteError::InvalidValue { column, .. }
            | RewriteError::ParamType { column, .. }
            | RewriteError::NotInCatalog { column, .. }
            | RewriteError::BadStorage { column, .. }
            | RewriteError::NoKey { column, .. }
            | RewriteError::Decrypt { column, .. } => Some(column),
            RewriteError::Denied(d) => Some(&d.column),
            RewriteError::InCopy { inner, .. } => inner.column(),
            RewriteError::CopyFormat { .. }
            | RewriteError::Malformed(_)
            | RewriteError::AuditUnavailable { .. } => None,
        }
    }

    /// A bounded label for the refused-statements metric.
    pub fn reason_label(&self) -> &'static str {
        match self {
            RewriteError::Refused(_) => "unsupported_statement",
            RewriteError::InvalidValue { .. } => "invalid_value",
            RewriteError::ParamType { .. } => "parameter_type",
            RewriteError::NotInCatalog { .. } => "not_in_catalog",
            RewriteError::BadStorage { .. } => "bad_storage",
            RewriteError::NoKey { .. } => "no_key",
            RewriteError::Decrypt { .. } => "decrypt_failed",
            RewriteError::Denied(_) => "access_denied",
            RewriteError::AuditUnavailable { .. } => "audit_unavailable",
            RewriteError::CopyFormat { .. } => "copy_format",
            RewriteError::InCopy { inner, .. } => inner.reason_label(),
            RewriteError::Malformed(_) => "malformed",
        }
    }

    /// The hint sent with the error, if any.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RewriteError::InCopy { inner, .. } => inner.hint(),
            RewriteError::Decrypt { .. } => Some(
                "Values in protected columns must be written through pgveil; see pgveil check for plaintext left behind.",
            ),
            RewriteError::NoKey { .. } => Some("Run `pgveil keys init` (or rotate) and reload pgveil."),
            RewriteError::Denied(_) => Some(
                "The [access] rules of pgveil's policy decide which roles may read or write protected columns; after SET ROLE in an extended-protocol batch, Sync before touching protected columns.",
            ),
            _ => None,
        }
    }
}

/// Why the access rules refused a protected column (boxed in [`RewriteError::Denied`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgveil: permission denied to {action} protected column {column} (label {label}) as role {role}")]
pub struct Denial {
    /// The column.
    pub column: ColumnRef,
    /// Its label (`unlabeled` without one).
    pub label: String,
    /// `read` or `write`.
    pub action: &'static str,
    /// The effective role, or why it is not known.
    pub role: String,
}

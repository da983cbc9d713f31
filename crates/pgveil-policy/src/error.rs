//! Policy errors: each names the file, the line, the table or column, and
//! what to change. The loader collects every error it can find and returns
//! them together as [`PolicyErrors`].

use std::fmt;

use thiserror::Error;

use crate::ident::{ColumnRef, IdentError};
use crate::types::TypeError;
use crate::Mode;

/// One problem in a policy file.
///
/// Displays as `origin:line: subject: message`, for example
/// `policy.toml:7: public.visits.patient_ssn: key "public.patient.ssn" is not a protected column in this policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file name (or other origin) given to the loader.
    pub origin: String,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// The table or column concerned (qualified, as SQL would write it), or
    /// the raw TOML key when it could not be read as a name.
    pub subject: Option<String>,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.origin, self.line)?;
        if let Some(subject) = &self.subject {
            write!(f, "{subject}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for PolicyError {}

/// The kinds of policy error. Messages are written for the DBA editing the file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyErrorKind {
    /// The file is not valid TOML.
    #[error("invalid TOML: {message}")]
    Toml {
        /// The TOML parser's message.
        message: String,
    },
    /// A top-level key other than `tables` in a standalone policy file.
    #[error("unknown top-level key {key:?}; a policy file holds [tables.\"schema.table\"] sections and [access]")]
    UnknownTopLevelKey {
        /// The key.
        key: String,
    },
    /// `tables` is not a table.
    #[error("`tables` must be a table of tables, like [tables.\"public.patients\"], not {found}")]
    TablesNotATable {
        /// The TOML type found instead.
        found: &'static str,
    },
    /// A `tables` entry is not a table.
    #[error(
        "a table entry must be a table of columns, like [tables.\"public.patients\"], not {found}"
    )]
    TableNotATable {
        /// The TOML type found instead.
        found: &'static str,
    },
    /// A table key is not a valid `table` or `schema.table`.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTableName {
        /// The TOML key.
        name: String,
        /// Why.
        reason: IdentError,
    },
    /// An unquoted dotted TOML key split a table name into nested tables.
    #[error(
        "TOML read `{outer}.{inner}` as nested tables; quote the whole table name: [tables.\"{outer}.{inner}\"]"
    )]
    DottedTableName {
        /// The part TOML took as the table.
        outer: String,
        /// The part TOML took as a column.
        inner: String,
    },
    /// The same table appears twice (e.g. as `patients` and `public.patients`).
    #[error("table listed twice: {spelling:?} here and {first_spelling:?} at line {first_line} name the same table")]
    DuplicateTable {
        /// This occurrence's TOML key.
        spelling: String,
        /// The first occurrence's TOML key.
        first_spelling: String,
        /// The first occurrence's line.
        first_line: usize,
    },
    /// A table with no columns.
    #[error("table lists no protected columns; add columns or remove the section")]
    EmptyTable,
    /// A column key is not a valid identifier.
    #[error("invalid column name {name:?}: {reason}")]
    InvalidColumnName {
        /// The TOML key.
        name: String,
        /// Why.
        reason: IdentError,
    },
    /// The same column appears twice after case folding.
    #[error("column listed twice: {spelling:?} here and {first_spelling:?} at line {first_line} name the same column (unquoted names fold to lower case; quote them to keep case: \"\\\"FirstName\\\"\")")]
    DuplicateColumn {
        /// This occurrence's TOML key.
        spelling: String,
        /// The first occurrence's TOML key.
        first_spelling: String,
        /// The first occurrence's line.
        first_line: usize,
    },
    /// A column entry is not a table.
    #[error("a column entry must be a table like {{ type = \"text\" }}, not {found}")]
    ColumnNotATable {
        /// The TOML type found instead.
        found: &'static str,
    },
    /// A field a column entry does not have.
    #[error(
        "unknown field `{field}`{hint}; a column takes `type`, `mode`, `label`, `key` and `mask`"
    )]
    UnknownField {
        /// The field.
        field: String,
        /// ` (did you mean `mode`?)` or empty.
        hint: String,
    },
    /// A column entry without `type`.
    #[error("missing `type`; say what the column holds, e.g. type = \"text\"")]
    MissingType,
    /// A field whose value is not a string.
    #[error("`{field}` must be a string, not {found}")]
    NotAString {
        /// The field.
        field: &'static str,
        /// The TOML type found instead.
        found: &'static str,
    },
    /// A bad `type` value.
    #[error("{0}")]
    Type(TypeError),
    /// A bad `mode` value.
    #[error("unknown mode {given:?}; accepted modes: randomized (the default), deterministic")]
    UnknownMode {
        /// What the policy said.
        given: String,
    },
    /// A bad `mask` value, or one that does not fit the column's type.
    #[error("invalid mask {given:?}: {reason}")]
    InvalidMask {
        /// What the policy said.
        given: String,
        /// Why.
        reason: String,
    },
    /// An error in the `[access]` section.
    #[error("[access]: {message}")]
    Access {
        /// What is wrong.
        message: String,
    },
    /// A bad `label` value.
    #[error("invalid label {given:?}; a label is 1 to 32 of a-z, 0-9 and _, starting with a letter (e.g. pii, phi)")]
    InvalidLabel {
        /// What the policy said.
        given: String,
    },
    /// A `key` value that is not a column name.
    #[error("invalid key {given:?}: {reason}; write the owning column as schema.table.column")]
    InvalidKey {
        /// What the policy said.
        given: String,
        /// Why.
        reason: IdentError,
    },
    /// A `key` naming a column the policy does not protect.
    #[error("key \"{key}\" is not a protected column in this policy{hint}")]
    UnknownKey {
        /// The referenced column.
        key: ColumnRef,
        /// ` (did you mean "…"?)` or empty.
        hint: String,
    },
    /// A `key` naming a column that itself borrows another column's key.
    #[error("key \"{key}\" itself uses the key of \"{owner}\"; name the owner directly: key = \"{owner}\"")]
    KeyChain {
        /// The referenced column.
        key: ColumnRef,
        /// The column that owns the key.
        owner: ColumnRef,
    },
    /// Columns sharing a key with different modes.
    #[error("is {mode} but shares the key of \"{owner}\", which is {owner_mode}; columns sharing a key must have the same mode")]
    KeyModeMismatch {
        /// The key owner.
        owner: ColumnRef,
        /// The owner's mode.
        owner_mode: Mode,
        /// This column's mode.
        mode: Mode,
    },
    /// Deterministic columns sharing a key with incompatible types.
    #[error("has type {ty} but shares the deterministic key of \"{owner}\", of type {owner_type}; equal values would not encrypt equally (a shared deterministic key needs the same type, both text/varchar, or both int2/int4/int8)")]
    KeyTypeMismatch {
        /// The key owner.
        owner: ColumnRef,
        /// The owner's type.
        owner_type: String,
        /// This column's type.
        ty: String,
    },
}

/// Every error found in a policy, sorted by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// The errors, in line order.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for an error returned by the loader.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PolicyErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

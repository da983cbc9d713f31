//! Who may see plaintext: the policy's `[access]` section and per-column
//! masks.
//!
//! ```toml
//! [access]
//! default = "deny"                 # decrypt | mask | deny, for roles not listed
//!
//! [access.roles.clinician]
//! phi = "decrypt"
//! pii = "decrypt"
//!
//! [access.roles.billing]
//! phi = "mask"
//! pii = "decrypt"
//! "public.patients.ssn" = "deny"  # a column overrides its label
//!
//! [access.write]                   # who may write columns of a label
//! phi = ["clinician"]
//! pii = ["clinician", "billing"]
//! ```
//!
//! A session's decision for a column is the **most permissive** rule among
//! its effective role and every role that role inherits from (PostgreSQL's
//! `pg_has_role(…, 'USAGE')`) that has a rule for the column; `default` when
//! none has. A role's rule for a column is its entry for the column if it
//! has one, else its entry for the column's label (`unlabeled` for a column
//! without a label).
//!
//! Writing a column needs a role listed under `[access.write]` for its
//! label; a label not listed there may be written by the roles that may
//! decrypt the column. Without an `[access]` section every role may read
//! and write every protected column in plaintext (pgveil's behaviour before
//! access rules).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::{ColumnRef, ColumnType, ProtectedColumn};

/// What a session gets of a protected column's values. Ordered from least
/// to most permissive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Statements that read, compare or return the column are refused
    /// (`42501`).
    Deny,
    /// Values are returned masked (see [`MaskKind`]).
    Mask,
    /// Values are returned in plaintext.
    Decrypt,
}

impl Access {
    /// Parse `decrypt`, `mask` or `deny`.
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "decrypt" => Some(Access::Decrypt),
            "mask" => Some(Access::Mask),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    /// `decrypt`, `mask` or `deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Decrypt => "decrypt",
            Access::Mask => "mask",
            Access::Deny => "deny",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a masked value looks. Masked values keep the column's logical type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// Text: every letter and digit but the last four becomes `*`, other
    /// characters stay (`123-45-6789` → `***-**-6789`).
    Last4,
    /// Text: the first character, then `***` (`Jane` → `J***`). The
    /// default for text columns.
    First,
    /// Text: `****@` and the part after the last `@` (`jane@example.org` →
    /// `****@example.org`); a value without `@` becomes `****`.
    Email,
    /// Dates and timestamps: January 1st (midnight) of the value's year.
    /// The default for those types.
    Year,
    /// `NULL`. The default for every other type.
    Null,
}

impl MaskKind {
    /// Parse a policy `mask` value.
    pub fn parse(s: &str) -> Option<MaskKind> {
        match s {
            "last4" => Some(MaskKind::Last4),
            "first" => Some(MaskKind::First),
            "email" => Some(MaskKind::Email),
            "year" => Some(MaskKind::Year),
            "null" => Some(MaskKind::Null),
            _ => None,
        }
    }

    /// The policy spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            MaskKind::Last4 => "last4",
            MaskKind::First => "first",
            MaskKind::Email => "email",
            MaskKind::Year => "year",
            MaskKind::Null => "null",
        }
    }

    /// Whether the mask applies to columns of type `ty`.
    pub fn fits(self, ty: ColumnType) -> bool {
        match self {
            MaskKind::Last4 | MaskKind::First | MaskKind::Email => {
                matches!(ty, ColumnType::Text | ColumnType::Varchar)
            }
            MaskKind::Year => matches!(
                ty,
                ColumnType::Date | ColumnType::Timestamp | ColumnType::Timestamptz
            ),
            MaskKind::Null => true,
        }
    }

    /// The mask used for a column of type `ty` without a `mask` field.
    pub fn default_for(ty: ColumnType) -> MaskKind {
        match ty {
            ColumnType::Text | ColumnType::Varchar => MaskKind::First,
            ColumnType::Date | ColumnType::Timestamp | ColumnType::Timestamptz => MaskKind::Year,
            _ => MaskKind::Null,
        }
    }
}

impl fmt::Display for MaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule key that matches columns without a label.
pub const UNLABELED: &str = "unlabeled";

/// One role's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleRules {
    /// By label (or [`UNLABELED`]).
    pub labels: BTreeMap<String, Access>,
    /// By column: overrides the label's rule.
    pub columns: BTreeMap<ColumnRef, Access>,
}

/// The `[access]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRules {
    /// For roles without a rule.
    pub default: Access,
    /// By PostgreSQL role name (exact, case-sensitive: `pg_roles.rolname`).
    pub roles: BTreeMap<String, RoleRules>,
    /// Label (or [`UNLABELED`]) → roles that may write its columns.
    pub write: BTreeMap<String, BTreeSet<String>>,
}

fn label_key(col: &ProtectedColumn) -> &str {
    col.label.as_ref().map_or(UNLABELED, |l| l.as_str())
}

impl AccessRules {
    /// One role's rule for a column, if it has one.
    fn rule(&self, role: &str, col: &ProtectedColumn) -> Option<Access> {
        let r = self.roles.get(role)?;
        r.columns
            .get(&col.column)
            .or_else(|| r.labels.get(label_key(col)))
            .copied()
    }

    /// The decision for a session whose effective role and inherited roles
    /// are `roles`: the most permissive of their rules for `col`, `default`
    /// when none of them has one.
    pub fn decide<'r>(
        &self,
        roles: impl IntoIterator<Item = &'r str>,
        col: &ProtectedColumn,
    ) -> Access {
        let mut best: Option<Access> = None;
        for role in roles {
            if let Some(a) = self.rule(role, col) {
                best = Some(best.map_or(a, |b| b.max(a)));
            }
        }
        best.unwrap_or(self.default)
    }

    /// Whether a session with `roles` may write `col`.
    pub fn may_write<'r>(
        &self,
        roles: impl IntoIterator<Item = &'r str> + Clone,
        col: &ProtectedColumn,
    ) -> bool {
        match self.write.get(label_key(col)) {
            Some(writers) => roles.into_iter().any(|r| writers.contains(r)),
            None => self.decide(roles, col) == Access::Decrypt,
        }
    }

    /// The roles named anywhere in the rules.
    pub fn role_names(&self) -> BTreeSet<&str> {
        self.roles
            .keys()
            .map(String::as_str)
            .chain(self.write.values().flatten().map(String::as_str))
            .collect()
    }
}

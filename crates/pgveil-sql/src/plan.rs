//! What the analyser tells the proxy about one query string.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use pgveil_policy::{ColumnRef, Ident, Mode, QualifiedTable, TypeSpec};

use crate::Refusal;

/// The result of analysing a query string.
#[derive(Clone, Debug)]
pub enum Analysis {
    /// Names no protected table (and no session-level prepared statement
    /// could be involved): forward untouched.
    Passthrough,
    /// One plan per statement, in order.
    Planned(Arc<Plan>),
}

/// The plans for the statements of one query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// One per statement, in text order.
    pub statements: Vec<StatementPlan>,
}

impl Plan {
    /// Whether the statement text carries values of protected columns (a
    /// literal written to or compared with one, also inside `PREPARE`):
    /// such a text is PHI itself.
    pub fn holds_protected_values(&self) -> bool {
        fn statement(s: &StatementPlan) -> bool {
            !s.literals.is_empty()
                || matches!(&s.prepared, Some(PreparedOp::Prepare { plan, .. }) if statement(plan))
        }
        self.statements.iter().any(statement)
    }

    /// Whether any statement needs rewriting or session bookkeeping.
    pub fn needs_rewrite(&self) -> bool {
        self.statements.iter().any(|s| {
            !s.literals.is_empty()
                || !s.params.is_empty()
                || s.copy.is_some()
                || s.prepared.is_some()
        })
    }
}

/// Metrics kind of a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE`, `DECLARE … CURSOR FOR SELECT`.
    Select,
    /// `INSERT`, including upserts.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `COPY`.
    Copy,
    /// Anything else (DDL, transaction control, `PREPARE`, `EXECUTE`, …).
    Other,
}

impl StatementKind {
    /// Lower-case name for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Copy => "copy",
            StatementKind::Other => "other",
        }
    }
}

/// How a value meets its protected column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// Stored into the column (`INSERT`, `SET`): encrypt with the active key
    /// version.
    Write,
    /// Compared by equality (`=`, `<>`, `IN`, `= ANY`) with a deterministic
    /// column: during key rotation the proxy may expand a literal to
    /// `IN (ct_active, ct_previous…)` (for `<>`, `NOT IN (…)`).
    Equality,
}

/// The protected column a value targets, with what the crypto layer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The policy column.
    pub column: ColumnRef,
    /// The column whose data key encrypts it (AAD binds to this one).
    pub key: ColumnRef,
    /// The logical type: how to canonicalise the plaintext.
    pub ty: TypeSpec,
    /// Randomized or deterministic.
    pub mode: Mode,
}

/// A literal to replace with ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiteralTarget {
    /// Byte span in the original query string. Covers the literal token
    /// (`'…'`, `E'…'`, `42`, `-42`, `true`) and, when the literal carries an
    /// explicit cast (`'1990-01-01'::date`, `CAST('…' AS date)`), the whole
    /// cast expression: the proxy replaces the span with just the ciphertext
    /// literal, which PostgreSQL then assigns to the storage column.
    pub span: Range<usize>,
    /// The decoded value (quotes and escapes removed; numbers as written).
    pub value: String,
    /// Where it goes.
    pub target: Target,
    /// Write or equality comparison.
    pub usage: Comparison,
    /// True inside `col <> …` / `NOT IN (…)` (rotation expands to `NOT IN`).
    pub negated: bool,
    /// Where the literal stands, which decides how it can be expanded to
    /// several ciphertexts (one per live key version) during a rotation.
    pub form: LiteralForm,
}

/// The syntactic position of a literal compared with a protected column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralForm {
    /// Anywhere else (a written value, or `'x' = col`): one ciphertext.
    Value,
    /// `col = lit` / `col <> lit`: may become `= ANY(ARRAY[…])` / `<> ALL(…)`.
    EqRight,
    /// An element of `IN (…)` or `ARRAY[…]`: may become several elements.
    ListElement,
    /// A whole one-dimensional array literal (`'{a,b}'::text[]`, an
    /// argument of `unnest(…)` feeding an INSERT): every element is
    /// encrypted and the literal becomes `ARRAY[…]::<storage>[]`.
    Array,
}

/// A `$n` parameter that targets a protected column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamTarget {
    /// Where it goes.
    pub target: Target,
    /// Write or equality comparison.
    pub usage: Comparison,
    /// `col = ANY($n)`: the parameter is an array; encrypt each element.
    pub array: bool,
    /// Every place `$n` appears next to a protected column.
    pub sites: Vec<ParamSite>,
}

impl ParamTarget {
    /// Every use is `col = $n` / `col <> $n`: during a key rotation the
    /// proxy may turn each into `col = ANY($n)` / `col <> ALL($n)` and bind
    /// an array of one ciphertext per live key version.
    pub fn expandable(&self) -> bool {
        !self.array && !self.sites.is_empty() && self.sites.iter().all(|s| s.eq_right)
    }

    /// Every use is an `IN (…)`/`ARRAY[…]` element: during a key rotation
    /// the proxy may add one parameter per older version next to each.
    pub fn list_only(&self) -> bool {
        !self.array && !self.sites.is_empty() && self.sites.iter().all(|s| s.list)
    }
}

/// One occurrence of a protected parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSite {
    /// The expression's span (a cast around `$n`, or `$n` itself).
    pub span: Range<usize>,
    /// The `$n` token's span.
    pub keep: Range<usize>,
    /// `col = $n` or `col <> $n` (`negated`).
    pub eq_right: bool,
    /// An element of `IN (…)` or `ARRAY[…]`: during a rotation the proxy may
    /// add parameters next to it (`IN ($1, $7)`) for older key versions.
    pub list: bool,
    /// `<>`.
    pub negated: bool,
}

/// Text replacing `span` (an insertion when `span` is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextEdit {
    /// Byte span in the query string (empty for an insertion).
    pub span: Range<usize>,
    /// The new text.
    pub text: String,
}

/// A `NULL` written to a protected column: never encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NullWrite {
    /// The `NULL` keyword's byte span.
    pub span: Range<usize>,
    /// The column.
    pub column: ColumnRef,
}

/// Ciphertext moved from one protected column to another under the same key
/// (`INSERT … SELECT`, `UPDATE … SET a = b`, `EXCLUDED.col`). The proxy must
/// also check that both columns have the same storage type (text vs bytea).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnCopy {
    /// Source column.
    pub from: ColumnRef,
    /// Destination column.
    pub to: ColumnRef,
}

/// COPY direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyDirection {
    /// `COPY … FROM STDIN`: the proxy encrypts fields.
    FromStdin,
    /// `COPY … TO STDOUT`: the proxy decrypts fields.
    ToStdout,
}

/// COPY data format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL text format.
    Text,
    /// CSV.
    Csv,
    /// PostgreSQL binary format: each field length-prefixed, in the binary
    /// send/receive form of the column's type (drivers' bulk loaders, e.g.
    /// asyncpg `copy_records_to_table`).
    Binary,
}

/// One COPY column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyField {
    /// The column name.
    pub name: Ident,
    /// The protected column, if it is one.
    pub target: Option<Target>,
}

/// How to encrypt/decrypt a COPY stream field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// The table.
    pub table: QualifiedTable,
    /// The fields in stream order; `None` means "all columns": the proxy
    /// must use the table's column order from the catalog.
    pub columns: Option<Vec<CopyField>>,
    /// Direction.
    pub direction: CopyDirection,
    /// Format.
    pub format: CopyFormat,
    /// Field delimiter (text: tab, CSV: comma).
    pub delimiter: char,
    /// The NULL marker (text: `\N`, CSV: empty unquoted).
    pub null: String,
    /// Header line present (CSV, or text from PostgreSQL 15).
    pub header: bool,
    /// CSV quote character.
    pub quote: char,
    /// CSV escape character.
    pub escape: char,
}

/// An argument of SQL-level `EXECUTE name (args)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecuteArg {
    /// A literal with its span and decoded value.
    Literal {
        /// Byte span (covers a cast if present).
        span: Range<usize>,
        /// Decoded value.
        value: String,
    },
    /// `NULL`.
    Null,
    /// Anything else (an expression, a parameter, an exotic literal).
    Other,
}

/// SQL-level prepared statement bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreparedOp {
    /// `PREPARE name AS stmt`: register `plan` under `name` once it succeeds.
    Prepare {
        /// The (normalised) name.
        name: String,
        /// The inner statement's plan; its `params` map `$n` like `Parse`.
        plan: Arc<StatementPlan>,
    },
    /// `EXECUTE name (args)`: bind with [`PreparedStatements::bind_execute`].
    Execute {
        /// The (normalised) name.
        name: String,
        /// Arguments, `$1` first.
        args: Vec<ExecuteArg>,
    },
    /// `DEALLOCATE name`.
    Deallocate(String),
    /// `DEALLOCATE ALL`, `DISCARD ALL`.
    DeallocateAll,
    /// A statement naming prepared statements (`EXECUTE`, `PREPARE`, …)
    /// that pgveil could not parse: forwarded only while the session has no
    /// protected prepared statement.
    Unparsed,
}

/// The plan for one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementPlan {
    /// Byte span of the statement in the query string (without `;`).
    pub span: Range<usize>,
    /// Kind, for metrics.
    pub kind: StatementKind,
    /// Literals to encrypt, in text order.
    pub literals: Vec<LiteralTarget>,
    /// Parameters (1-based `$n`) that target protected columns.
    pub params: BTreeMap<u32, ParamTarget>,
    /// Text edits besides the literals: casts around protected parameters
    /// removed (`$1::varchar` → `$1`, the value now being ciphertext of the
    /// storage type), and the column list pgveil relied on for `INSERT`/
    /// `COPY` without one (so PostgreSQL maps values by name even if the
    /// table changed behind pgveil's back).
    pub edits: Vec<TextEdit>,
    /// `NULL`s written to protected columns (left as is).
    pub nulls: Vec<NullWrite>,
    /// Ciphertext copies between columns sharing a key.
    pub copies: Vec<ColumnCopy>,
    /// Protected columns whose values the statement returns or compares.
    pub reads: BTreeSet<ColumnRef>,
    /// Protected columns the statement writes.
    pub writes: BTreeSet<ColumnRef>,
    /// Protected columns whose stored values the statement destroys without
    /// naming them (`DELETE` rows, `TRUNCATE`, `DROP COLUMN`): recorded by
    /// the audit log, not subject to the access rules.
    pub deletes: BTreeSet<ColumnRef>,
    /// The statement with its literals replaced by `?` (for audit).
    pub fingerprint: std::sync::Arc<str>,
    /// For `COPY` on a protected table.
    pub copy: Option<CopyPlan>,
    /// For `PREPARE` / `EXECUTE` / `DEALLOCATE` / `DISCARD ALL`.
    pub prepared: Option<PreparedOp>,
    /// Whether the statement references a protected table at all.
    pub touches_protected: bool,
    /// The highest `$n` in the statement's text (0 if none).
    pub max_param: u32,
}

impl StatementPlan {
    /// Completes the access facts after the walk: every protected column a
    /// reference resolved to is a read, and a ciphertext copied into a
    /// column is a write to it.
    pub(crate) fn settle(&mut self, referenced: BTreeSet<ColumnRef>) {
        self.reads.extend(referenced);
        let copied: Vec<ColumnRef> = self.copies.iter().map(|c| c.to.clone()).collect();
        self.writes.extend(copied);
    }

    pub(crate) fn new(span: Range<usize>, kind: StatementKind) -> Self {
        StatementPlan {
            span,
            kind,
            literals: Vec::new(),
            params: BTreeMap::new(),
            edits: Vec::new(),
            nulls: Vec::new(),
            copies: Vec::new(),
            reads: BTreeSet::new(),
            writes: BTreeSet::new(),
            deletes: BTreeSet::new(),
            fingerprint: std::sync::Arc::from(""),
            copy: None,
            prepared: None,
            touches_protected: false,
            max_param: 0,
        }
    }
}

/// A session's SQL-level prepared statements (`PREPARE`), as far as they
/// involve protected columns. One per client session; the proxy calls
/// [`PreparedStatements::apply`] after a statement succeeds.
#[derive(Clone, Debug, Default)]
pub struct PreparedStatements {
    plans: HashMap<String, Arc<StatementPlan>>,
}

impl PreparedStatements {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no statement is registered.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// The plan registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<StatementPlan>> {
        self.plans.get(name)
    }

    /// Sets (or with `None` removes) the plan under `name`; returns the
    /// previous one, so the caller can undo the change if the server
    /// rejects the statement that made it.
    pub fn set(
        &mut self,
        name: &str,
        plan: Option<Arc<StatementPlan>>,
    ) -> Option<Arc<StatementPlan>> {
        match plan {
            Some(p) => self.plans.insert(name.to_owned(), p),
            None => self.plans.remove(name),
        }
    }

    /// The registered names.
    pub fn names(&self) -> Vec<String> {
        self.plans.keys().cloned().collect()
    }

    /// The literal targets of an `EXECUTE`: argument *i* maps to parameter
    /// `$i+1` of the registered plan. Unknown names bind nothing (the
    /// statement did not touch protected columns). Refuses arguments that
    /// are not plain literals or `NULL` in protected positions.
    pub fn bind_execute(&self, plan: &StatementPlan) -> Result<Vec<LiteralTarget>, Refusal> {
        let Some(PreparedOp::Execute { name, args }) = &plan.prepared else {
            return Ok(Vec::new());
        };
        let Some(prepared) = self.plans.get(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (n, p) in &prepared.params {
            let idx = usize::try_from(*n).unwrap_or(usize::MAX).wrapping_sub(1);
            match args.get(idx) {
                Some(ExecuteArg::Literal { span, value }) if !p.array => out.push(LiteralTarget {
                    span: span.clone(),
                    value: value.clone(),
                    target: p.target.clone(),
                    usage: p.usage,
                    negated: false,
                    form: LiteralForm::Value,
                }),
                Some(ExecuteArg::Null) => {}
                None => {}
                Some(_) => {
                    return Err(Refusal::unsupported(
                        Some(&p.target.column),
                        format!(
                            "EXECUTE argument ${n} targets protected column {}: pass a plain literal or NULL",
                            p.target.column
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }
}

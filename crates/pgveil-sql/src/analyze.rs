//! The AST walk: resolves table and column references against the policy
//! and classifies every use of a protected column as allowed (recording
//! targets) or refused. Unknown constructs fall back to a conservative text
//! check: if they mention a protected column name or table, refuse.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Display;
use std::ops::Range;
use std::sync::Arc;

use pgveil_policy::{
    ColumnRef, ColumnType, Ident, Policy, ProtectedColumn, QualifiedTable, TypeSpec,
};
use sqlparser::ast::Spanned;
use sqlparser::ast::{
    self as ast, AssignmentTarget, BinaryOperator, CopyLegacyCsvOption, CopyLegacyOption,
    CopyOption, CopySource, CopyTarget, Distinct, Expr, FromTable, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, InTarget, JoinConstraint, JoinOperator, ObjectName,
    ObjectNamePart, OnConflictAction, OnInsert, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, TableObject, TableWithJoins,
    UnaryOperator, UpdateTableFromKind, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::lex::{self, Kind, LineIndex};
use crate::plan::*;
use crate::{AnalyzeOptions, Refusal};

type R<T = ()> = Result<T, Refusal>;

/// Normalise a sqlparser identifier as PostgreSQL does.
fn norm(i: &ast::Ident) -> String {
    if i.quote_style == Some('"') {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// A prepared statement name as PostgreSQL's parser keeps it: an
/// identifier cut to 63 bytes at a character boundary.
fn stmt_name(i: &ast::Ident) -> String {
    let mut n = norm(i);
    if n.len() > 63 {
        let mut cut = 63;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    n
}

fn ident(s: &str) -> Option<Ident> {
    Ident::from_normalized(s.to_owned()).ok()
}

fn object_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(norm(i)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

pub(crate) fn target_of(pc: &ProtectedColumn) -> Target {
    Target {
        column: pc.column.clone(),
        key: pc.key.clone(),
        ty: pc.type_spec(),
        mode: pc.mode,
    }
}

/// The one argument of `unnest(arg)` (a plain call: no `FILTER`, `OVER`,
/// qualifiers on the name other than `pg_catalog`).
fn unnest_arg(e: &Expr) -> Option<&Expr> {
    let Expr::Function(f) = e else { return None };
    let parts = object_parts(&f.name)?;
    let named = match parts.as_slice() {
        [n] | [_, n] => n == "unnest",
        _ => false,
    };
    if !named || parts.len() == 2 && parts[0] != "pg_catalog" {
        return None;
    }
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return None;
    }
    let FunctionArguments::List(l) = &f.args else {
        return None;
    };
    if l.duplicate_treatment.is_some() || !l.clauses.is_empty() {
        return None;
    }
    match l.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] => Some(a),
        _ => None,
    }
}

/// The index of an output named by ordinal (`1`) or by output alias, as
/// ORDER BY, GROUP BY and DISTINCT ON may name them.
fn output_index<T>(e: &Expr, outputs: &[(Option<String>, T)]) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<usize>().ok().and_then(|k| k.checked_sub(1)),
            _ => None,
        },
        Expr::Identifier(i) => {
            let n = norm(i);
            outputs
                .iter()
                .position(|(a, _)| a.as_deref() == Some(n.as_str()))
        }
        _ => None,
    }
}

/// The protected column behind an output named by ordinal or alias.
fn output_target<'p>(
    e: &Expr,
    outputs: &[(Option<String>, Option<&'p ProtectedColumn>)],
) -> Option<&'p ProtectedColumn> {
    output_index(e, outputs)
        .and_then(|k| outputs.get(k))
        .and_then(|o| o.1)
}

/// Whether a number literal converts to text exactly as written (what
/// pgveil encrypts): `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not negative zero.
fn number_reads_as_written(n: &str) -> bool {
    let digits = n.strip_prefix('-').unwrap_or(n);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let int_ok = int == "0"
        || (!int.is_empty() && !int.starts_with('0') && int.bytes().all(|b| b.is_ascii_digit()));
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    let negative_zero = n.starts_with('-') && digits.bytes().all(|b| b == b'0' || b == b'.');
    int_ok && frac_ok && !negative_zero
}

/// The column a target-list name writes (its first part: `a.b` is field
/// `b` of column `a`), and whether it names a field or element of it.
/// An unparsable name yields no column (an empty string).
fn target_column(n: &ObjectName) -> (String, bool) {
    match object_parts(n) {
        Some(parts) => (parts.first().cloned().unwrap_or_default(), parts.len() > 1),
        None => (String::new(), true),
    }
}

/// A relation visible in a scope.
#[derive(Clone, Debug)]
struct Rel {
    /// The name a qualifier must use: the alias, else the table name.
    name: String,
    /// Also matched when unaliased: `schema.table`.
    schema: Option<String>,
    /// The table if it is a protected one.
    table: Option<QualifiedTable>,
    /// A derived table `(VALUES …) AS alias (cols)`: its values by column,
    /// so `INSERT … SELECT alias.col FROM (VALUES …)` can encrypt them.
    values: Option<Arc<ValuesRel>>,
}

/// Where a parameter stands in an equality.
#[derive(Clone, Copy, Debug)]
enum Site {
    /// `col = $n` / `col <> $n`.
    EqRight {
        negated: bool,
    },
    /// An element of `IN (…)` / `ARRAY[…]`.
    ListElement,
    Other,
}

/// The classified values of a `VALUES` derived table.
#[derive(Debug)]
struct ValuesRel {
    columns: Vec<String>,
    rows: Vec<Vec<Elem>>,
    /// `unnest(a, b, …)`: one row whose elements are arrays; column `k`
    /// takes the elements of array `k`.
    arrays: bool,
}

/// One classified `VALUES` element.
#[derive(Clone, Debug)]
enum Elem {
    Literal(Range<usize>, String),
    Param(u32, Option<(Range<usize>, Range<usize>)>),
    Null,
    Other,
}

/// Where a projection's values go.
#[derive(Clone, Debug)]
enum Proj<'p> {
    /// To the client with table OIDs: bare protected columns are fine.
    Top,
    /// Through a subquery/CTE/UNION: table OID lost, refuse protected values.
    Nested,
    /// Nowhere (`EXISTS`): bare columns are fine.
    Discard,
    /// Into these columns (`INSERT … SELECT`); `None` = unprotected.
    Into(Vec<Option<&'p ProtectedColumn>>),
    /// Compared with this column (`x IN (SELECT …)`); `None` = unprotected.
    InSub(Option<&'p ProtectedColumn>),
    /// The rows of `COPY (query) TO STDOUT`: bare protected columns are
    /// fine (the proxy decrypts them by position), wildcards are not.
    CopyOut,
}

/// A classified value expression.
enum Operand<'p> {
    Protected(&'p ProtectedColumn),
    Unprotected,
    Literal(Range<usize>, String),
    /// `$n`, with the span of the expression (a cast around it, which the
    /// proxy removes, or the token itself) and of the `$n` token.
    Param(u32, Option<(Range<usize>, Range<usize>)>),
    Null(Range<usize>),
    Default,
    /// A literal or cast pgveil will not rewrite; the reason says why.
    Bad(&'static str),
    Other,
}

pub(crate) struct Walker<'p, 'o> {
    policy: &'p Policy,
    opts: &'o AnalyzeOptions,
    /// The statement's text and its offset in the query string.
    text: &'o str,
    base: usize,
    lines: LineIndex<'o>,
    scopes: Vec<Vec<Rel>>,
    ctes: Vec<HashSet<String>>,
    pub plan: StatementPlan,
    /// Set when a name could refer to a protected table pgveil cannot place
    /// (an unqualified name matching a policy table outside the search path).
    pub ambiguous: Option<Refusal>,
    /// The protected column behind each output of a `COPY (query)`.
    copy_outputs: Option<Vec<Option<&'p ProtectedColumn>>>,
    /// Columns of `VALUES` derived tables whose values go into protected
    /// columns (`INSERT … SELECT v.a FROM (VALUES …) v(a)`): encrypted, so
    /// any other use of them (a comparison, a function, another output)
    /// would see ciphertext or compare plaintext: refused.
    bound_values: Vec<(usize, usize)>,
    /// The SELECT whose projection is being placed into an INSERT's columns
    /// reads from one relation only, with no DISTINCT, GROUP BY or HAVING:
    /// a VALUES list or unnest(…) there supplies each value exactly once,
    /// unchanged (a join could merge it with another column, repeat or
    /// drop it; grouping could merge equal plaintexts).
    lone_source: bool,
    /// Resolving the target of INSERT/UPDATE/DELETE: always a real table
    /// (a CTE of the same name never stands in for it in PostgreSQL).
    dml_target: bool,
    /// Spans (in `text`) the walk has accounted for: every literal and
    /// parameter it classified, and every construct it checked as a whole
    /// (the text fallback). [`Walker::check_coverage`] refuses a statement
    /// reaching a protected table with a value outside all of them.
    accounted: RefCell<Vec<Range<usize>>>,
    /// The protected tables the statement names.
    protected_tables: Vec<QualifiedTable>,
    /// Index in `plan.literals` of the literal starting at each offset: one
    /// literal reached twice (`SELECT t.a, t.a FROM unnest('{x}') t(a)`
    /// into two protected columns) can be ciphertext for one place only.
    literal_at: std::collections::HashMap<usize, usize>,
    /// Every protected column a column reference of the statement resolved
    /// to, wherever it appears (`count(ssn)`, `ssn IS NULL`, `ORDER BY`):
    /// all of them are reads for the access rules and the audit log.
    pub referenced: RefCell<std::collections::BTreeSet<ColumnRef>>,
}

impl<'p, 'o> Walker<'p, 'o>
where
    'o: 'p,
{
    pub fn new(policy: &'p Policy, opts: &'o AnalyzeOptions, text: &'o str, base: usize) -> Self {
        Walker {
            policy,
            opts,
            text,
            base,
            lines: LineIndex::new(text),
            scopes: Vec::new(),
            ctes: Vec::new(),
            plan: StatementPlan::new(base..base + text.len(), StatementKind::Other),
            ambiguous: None,
            copy_outputs: None,
            bound_values: Vec::new(),
            lone_source: false,
            dml_target: false,
            accounted: RefCell::new(Vec::new()),
            protected_tables: Vec::new(),
            literal_at: std::collections::HashMap::new(),
            referenced: RefCell::new(std::collections::BTreeSet::new()),
        }
    }

    /// Records a resolved protected column reference.
    fn referenced(&self, c: Option<&'p ProtectedColumn>) -> Option<&'p ProtectedColumn> {
        if let Some(c) = c {
            self.referenced.borrow_mut().insert(c.column.clone());
        }
        c
    }

    // ----- coverage -----

    fn account(&self, span: sqlparser::tokenizer::Span) {
        if let Some(r) = self.span_of(span) {
            self.accounted.borrow_mut().push(r);
        }
    }

    /// The structural half of fail-closed: in a statement that reaches a
    /// protected table, every string literal and `$n` parameter must sit in
    /// a position the walk classified. A value the walk never looked at (a
    /// clause it does not descend into, a node kind added to the parser)
    /// refuses the statement instead of being forwarded unexamined.
    pub fn check_coverage(&self, tokens: &[lex::Tok]) -> R {
        // Also when the walk reached no protected table but the text names
        // one: it may sit in a clause the walk never entered (a subquery
        // in TABLESAMPLE, in a DDL expression on another table).
        if !self.plan.touches_protected && !self.policy.mentions_protected_table(self.text) {
            return Ok(());
        }
        // The union of the accounted spans, sorted and disjoint, so each
        // token is one binary search (statements can hold 10⁵ literals).
        let mut spans = self.accounted.borrow().clone();
        spans.sort_by_key(|r| r.start);
        let mut union: Vec<Range<usize>> = Vec::with_capacity(spans.len());
        for r in spans {
            match union.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => union.push(r),
            }
        }
        for t in tokens {
            if !matches!(
                t.kind,
                Kind::String | Kind::Dollar | Kind::Param | Kind::Unterminated
            ) {
                continue;
            }
            let i = union.partition_point(|r| r.start <= t.start);
            if i > 0 && t.end <= union[i - 1].end {
                continue;
            }
            let tables = if self.protected_tables.is_empty() {
                "a protected table".to_owned()
            } else {
                let mut names: Vec<String> = self
                    .protected_tables
                    .iter()
                    .map(|t| t.to_string())
                    .collect();
                names.sort();
                names.dedup();
                format!("protected table {}", names.join(", "))
            };
            let what = if t.kind == Kind::Param {
                "a parameter"
            } else {
                "a literal"
            };
            return Err(Refusal::unsupported(
                None,
                format!(
                    "this statement reaches {tables}, and {what} at byte {} stands in a clause pgveil does not analyse; move the value out of that clause or simplify the statement",
                    t.start + self.base
                ),
            ));
        }
        Ok(())
    }

    // ----- names -----

    fn resolve_table(&mut self, name: &ObjectName) -> Option<QualifiedTable> {
        let parts = object_parts(name)?;
        self.check_view(&parts);
        let (schema, table) = match parts.as_slice() {
            [t] => {
                if !self.dml_target && self.ctes.iter().any(|s| s.contains(t)) {
                    return None;
                }
                return self.resolve_unqualified(&ident(t)?);
            }
            [s, t] | [_, s, t] => (s, t),
            _ => return None,
        };
        let q = QualifiedTable::new(ident(schema)?, ident(table)?);
        if self.policy.table(&q).is_some() {
            return Some(q);
        }
        // Another relation with a protected table's name: the protected
        // table moved by ALTER SCHEMA … RENAME, a foreign table over it
        // (IMPORT FOREIGN SCHEMA), or a copy. pgveil cannot tell them apart.
        if let Some(p) = self
            .policy
            .tables()
            .map(|t| t.table())
            .find(|t| t.table == q.table)
        {
            self.defer(Refusal::unsupported(
                None,
                format!(
                    "{q} shares its name with protected table {p} (it may be that table under another schema, or a foreign table over it); pgveil refuses it: rename it"
                ),
            ));
        }
        None
    }

    /// An unqualified table name. pgveil does not see the session's
    /// `search_path` (`SET`, `ALTER ROLE … SET`, startup options, functions
    /// with `SET`), so it does not use it: from the catalog it knows every
    /// schema holding a relation of that name. One relation, a protected
    /// table: that table. Several: refused as ambiguous (qualify the name).
    /// Without the catalog: the configured search path, refusing a name
    /// that matches a protected table outside it.
    fn resolve_unqualified(&mut self, table: &Ident) -> Option<QualifiedTable> {
        let protected: Vec<QualifiedTable> = self
            .policy
            .tables()
            .map(|tp| tp.table().clone())
            .filter(|q| q.table == *table)
            .collect();
        let first = protected.first()?.clone();
        if let Some(names) = &self.opts.relation_schemas {
            match names.get(table.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                [] => {}
                [only] => {
                    if let Some(q) = protected.iter().find(|q| q.schema.as_str() == only) {
                        return Some(q.clone());
                    }
                    self.defer(Refusal::unsupported(
                        None,
                        format!(
                            "the only relation named {table} is in schema {only}, but the policy protects {first}, which this database does not have; qualify the name or fix the policy"
                        ),
                    ));
                    return None;
                }
                many => {
                    self.defer(Refusal::unsupported(
                        None,
                        format!(
                            "unqualified table name {table} is ambiguous: schemas {} each have one and {first} is protected; pgveil does not follow search_path, so qualify the name (e.g. {first})",
                            many.join(", ")
                        ),
                    ));
                    return None;
                }
            }
        }
        let found = self.opts.search_path.iter().find_map(|s| {
            let q = QualifiedTable::new(s.clone(), table.clone());
            self.policy.table(&q).map(|_| q)
        });
        if found.is_none() {
            self.defer(Refusal::unsupported(
                None,
                format!(
                    "unqualified table name {table} may refer to protected table {first}, which is outside pgveil's search path ({}); qualify the name as {first}",
                    self.opts
                        .search_path
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        found
    }

    /// Records a refusal found while resolving names (the first one wins).
    fn defer(&mut self, r: Refusal) {
        if self.ambiguous.is_none() {
            self.ambiguous = Some(r);
        }
    }

    /// A relation that reaches protected data under another name (a view, a
    /// child or partition) or a protected table that no longer matches the
    /// policy: refused whatever the statement does with it.
    fn check_view(&mut self, parts: &[String]) {
        if self.opts.dependent_views.is_empty() || self.ambiguous.is_some() {
            return;
        }
        let hit = self.opts.dependent_views.iter().find(|(v, _)| match parts {
            // Unqualified: any schema (pgveil does not follow search_path).
            [t] => v.table.as_str() == t,
            [s, t] | [_, s, t] => v.schema.as_str() == s && v.table.as_str() == t,
            _ => false,
        });
        let Some((v, why)) = hit else { return };
        let reason = match why {
            crate::Guarded::View => format!(
                "{v} is a view over protected tables: pgveil cannot decrypt its columns or encrypt writes through it; query or write the tables themselves"
            ),
            crate::Guarded::Child(parent) => format!(
                "{v} inherits from protected table {parent} (a child or partition): its copies of the protected columns are not in the policy; write and read through {parent}, or add {v} to the policy"
            ),
            crate::Guarded::MissingColumn(c) => format!(
                "protected table {v} has no column {c} any more (renamed or dropped): pgveil cannot tell which column now holds it; rename it back or update the policy"
            ),
        };
        self.ambiguous = Some(Refusal::unsupported(None, reason));
    }

    fn rel_for(&mut self, name: &ObjectName, alias: Option<&ast::Ident>) -> Rel {
        let table = self.resolve_table(name);
        if let Some(t) = &table {
            self.plan.touches_protected = true;
            self.protected_tables.push(t.clone());
        }
        let parts = object_parts(name).unwrap_or_default();
        match alias {
            Some(a) => Rel {
                name: norm(a),
                schema: None,
                table,
                values: None,
            },
            None => Rel {
                name: parts.last().cloned().unwrap_or_default(),
                schema: (parts.len() >= 2).then(|| parts[parts.len() - 2].clone()),
                table,
                values: None,
            },
        }
    }

    fn protected_in(&self, rel: &Rel, col: &str) -> Option<&'p ProtectedColumn> {
        let t = rel.table.as_ref()?;
        self.policy.lookup(t, &ident(col)?)
    }

    fn is_protected_name(&self, col: &str) -> bool {
        self.policy
            .columns()
            .any(|c| c.column.column.as_str() == col)
    }

    fn resolve_parts(&self, parts: &[String]) -> R<Option<&'p ProtectedColumn>> {
        match parts {
            [col] => {
                for scope in self.scopes.iter().rev() {
                    let hits: Vec<&ProtectedColumn> = scope
                        .iter()
                        .filter_map(|r| self.protected_in(r, col))
                        .collect();
                    match hits.as_slice() {
                        [] => continue,
                        [one] => return Ok(self.referenced(Some(one))),
                        [first, ..] => {
                            return Err(Refusal::new(
                                "42702",
                                Some(&first.column),
                                format!(
                                    "column reference \"{col}\" is ambiguous between protected tables; qualify it (e.g. {}.{})",
                                    first.column.table, first.column.column
                                ),
                            ))
                        }
                    }
                }
                Ok(None)
            }
            [.., q, col] => {
                let schema = (parts.len() >= 3).then(|| &parts[parts.len() - 3]);
                for scope in self.scopes.iter().rev() {
                    for rel in scope {
                        let schema_ok = match schema {
                            None => true,
                            Some(s) => {
                                rel.schema.as_ref() == Some(s)
                                    || rel.table.as_ref().is_some_and(|t| {
                                        t.schema.as_str() == s
                                            && rel.schema.is_none()
                                            && rel.name == t.table.as_str()
                                    })
                            }
                        };
                        if &rel.name == q && schema_ok {
                            return Ok(self.referenced(self.protected_in(rel, col)));
                        }
                    }
                }
                if self.is_protected_name(col)
                    && self.scopes.iter().flatten().any(|r| r.table.is_some())
                {
                    return Err(Refusal::unsupported(
                        None,
                        format!("cannot resolve the qualifier of column \"{col}\", which is protected in a table this statement uses"),
                    ));
                }
                Ok(None)
            }
            [] => Ok(None),
        }
    }

    fn column_of(&self, e: &Expr) -> R<Option<Option<&'p ProtectedColumn>>> {
        match e {
            Expr::Identifier(i) => Ok(Some(self.resolve_parts(&[norm(i)])?)),
            Expr::CompoundIdentifier(v) => {
                let parts: Vec<String> = v.iter().map(norm).collect();
                Ok(Some(self.resolve_parts(&parts)?))
            }
            Expr::Nested(inner) => self.column_of(inner),
            _ => Ok(None),
        }
    }

    /// The protected column `e` directly is, if any.
    fn direct(&self, e: &Expr) -> R<Option<&'p ProtectedColumn>> {
        Ok(self.column_of(e)?.flatten())
    }

    /// `p` / `schema.patients` naming a protected relation in scope rather
    /// than a column: a whole-row value (`SELECT p FROM patients p`,
    /// `row_to_json(p)`) that would carry the protected columns as
    /// ciphertext with no table OID to decrypt them by.
    fn whole_row(&self, e: &Expr) -> R {
        let parts: Vec<String> = match e {
            Expr::Identifier(i) => vec![norm(i)],
            Expr::CompoundIdentifier(v) if v.len() == 2 => v.iter().map(norm).collect(),
            _ => return Ok(()),
        };
        let name = parts.last().map(String::as_str).unwrap_or_default();
        for rel in self.scopes.iter().rev().flatten() {
            let Some(t) = &rel.table else { continue };
            let matches = match parts.as_slice() {
                [_] => rel.name == name,
                [s, _] => {
                    rel.name == name
                        && (rel.schema.as_deref() == Some(s.as_str())
                            || (rel.schema.is_none() && t.schema.as_str() == s))
                }
                _ => false,
            };
            if !matches {
                continue;
            }
            if parts.len() == 1 {
                // A column of that name wins over the relation (PostgreSQL
                // resolves columns first).
                let is_column = self
                    .opts
                    .column_order
                    .as_ref()
                    .and_then(|o| o.column_order(t))
                    .is_some_and(|cols| cols.iter().any(|c| c.as_str() == name));
                if is_column {
                    return Ok(());
                }
            }
            return Err(Refusal::unsupported(
                None,
                format!(
                    "{} is a whole-row reference to protected table {t}: its protected columns would travel as ciphertext without their table; select the columns by name",
                    parts.join(".")
                ),
            ));
        }
        Ok(())
    }

    /// A reference to a `VALUES` column bound to a protected target, other
    /// than the projection that writes it.
    fn bound_value_use(&self, e: &Expr) -> R {
        if self.bound_values.is_empty() {
            return Ok(());
        }
        if let Some((v, k)) = self.values_column(e) {
            let id = Arc::as_ptr(&v) as usize;
            if self.bound_values.contains(&(id, k)) {
                return Err(Refusal::unsupported(
                    None,
                    format!(
                        "VALUES column {} supplies a protected column and is used elsewhere in the statement, where it would be ciphertext; use it only as the inserted value",
                        v.columns.get(k).map(String::as_str).unwrap_or("?")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The protected table a `p.*` / `*` (qualifier `qual`) covers, if any,
    /// and the qualifier's last part.
    fn wildcard_table(
        &self,
        qual: Option<&ObjectName>,
    ) -> (Option<QualifiedTable>, Option<String>) {
        let q = qual.and_then(object_parts).and_then(|p| p.last().cloned());
        let hit = self
            .scopes
            .iter()
            .rev()
            .flatten()
            .filter(|r| q.as_ref().is_none_or(|q| &r.name == q))
            .find_map(|r| r.table.clone());
        (hit, q)
    }

    /// `p.*` / `*` as a function argument (`row_to_json(p.*)`, `ROW(p.*)`):
    /// refused when it covers a protected relation.
    fn wildcard_arg(&self, qual: Option<&ObjectName>, fname: &str) -> R {
        if qual.is_none() && fname == "count" {
            return Ok(());
        }
        match self.wildcard_table(qual).0 {
            Some(t) => Err(Refusal::unsupported(
                None,
                format!(
                    "{fname}() over a whole row of protected table {t} would see ciphertext; pass the columns by name"
                ),
            )),
            None => Ok(()),
        }
    }

    /// `p.*` / `*` used as a value inside an expression: refused when it
    /// covers a protected relation.
    fn whole_row_wildcard(&self, qual: Option<&ObjectName>) -> R {
        match self.wildcard_table(qual) {
            (Some(t), q) => Err(Refusal::unsupported(
                None,
                format!(
                    "{}* inside an expression is a whole row of protected table {t}: its protected columns would travel as ciphertext; select the columns by name",
                    q.map(|q| format!("{q}.")).unwrap_or_default()
                ),
            )),
            (None, _) => Ok(()),
        }
    }

    // ----- literals -----

    fn span_of(&self, span: sqlparser::tokenizer::Span) -> Option<Range<usize>> {
        let s = self.lines.offset(span.start.line, span.start.column)?;
        let e = self.lines.offset(span.end.line, span.end.column)?;
        (s < e).then_some(s..e)
    }

    fn abs(&self, r: Range<usize>) -> Range<usize> {
        r.start + self.base..r.end + self.base
    }

    fn operand(&self, e: &Expr) -> R<Operand<'p>> {
        if let Some(c) = self.column_of(e)? {
            if let Expr::Identifier(i) = e {
                if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") {
                    return Ok(Operand::Default);
                }
            }
            return Ok(c.map_or(Operand::Unprotected, Operand::Protected));
        }
        Ok(match e {
            Expr::Nested(inner) => self.operand(inner)?,
            Expr::Value(v) => self.value_operand(v),
            Expr::UnaryOp {
                op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                    match self.value_operand(v) {
                        Operand::Literal(r, val) => {
                            // The sign must directly precede the number.
                            let before = self.text[..r.start].trim_end();
                            let sign = if *op == UnaryOperator::Minus {
                                '-'
                            } else {
                                '+'
                            };
                            match before.strip_suffix(sign) {
                                Some(b) => {
                                    let start = b.len();
                                    let v = if sign == '-' { format!("-{val}") } else { val };
                                    Operand::Literal(start..r.end, v)
                                }
                                None => Operand::Bad("a signed number written in an unusual form"),
                            }
                        }
                        other => other,
                    }
                }
                _ => Operand::Other,
            },
            Expr::Cast { expr, .. } => match self.operand(expr)? {
                Operand::Literal(r, val) => match self.cast_span(e, r.clone()) {
                    Some(span) => Operand::Literal(span, val),
                    None => Operand::Bad(
                        "a cast literal pgveil cannot delimit; write the literal without a cast",
                    ),
                },
                Operand::Null(r) => Operand::Null(r),
                Operand::Param(n, Some((outer, tok))) if outer == tok => {
                    match self.cast_span(e, tok.clone()) {
                        Some(outer) => Operand::Param(n, Some((outer, tok))),
                        None => Operand::Bad(
                            "a cast on a parameter pgveil cannot delimit; remove the cast",
                        ),
                    }
                }
                Operand::Param(..) => Operand::Bad("a parameter with two casts; remove them"),
                Operand::Protected(_) => Operand::Bad("a cast of a column"),
                _ => Operand::Other,
            },
            Expr::TypedString(_) => {
                Operand::Bad("a typed literal (type 'value'); write the plain literal")
            }
            _ => Operand::Other,
        })
    }

    fn value_operand(&self, v: &ast::ValueWithSpan) -> Operand<'p> {
        let Some(r) = self.span_of(v.span) else {
            return Operand::Bad("a literal whose position pgveil cannot determine");
        };
        self.accounted.borrow_mut().push(r.clone());
        let text = &self.text[r.clone()];
        match &v.value {
            Value::Null => Operand::Null(r),
            Value::Placeholder(p) => match p.strip_prefix('$').and_then(|n| n.parse::<u32>().ok()) {
                Some(n) if n > 0 => Operand::Param(n, Some((r.clone(), r))),
                _ => Operand::Bad("a parameter placeholder other than $n"),
            },
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => match lex::decode_string(text) {
                Some(d) if &d == s => Operand::Literal(r, d),
                _ => Operand::Bad("a string literal in a form pgveil does not rewrite (continuation, \\x/\\u escapes); use a plain '...' literal or a parameter"),
            },
            Value::Number(n, false) => {
                if text == n && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
                    Operand::Literal(r, n.clone())
                } else {
                    Operand::Bad("a number written in a form pgveil does not rewrite")
                }
            }
            Value::Boolean(b) => {
                if text.eq_ignore_ascii_case(if *b { "true" } else { "false" }) {
                    Operand::Literal(r, b.to_string())
                } else {
                    Operand::Bad("a boolean literal pgveil cannot delimit")
                }
            }
            Value::DollarQuotedString(_) => Operand::Bad("a dollar-quoted literal; use a plain '...' literal or a parameter"),
            _ => Operand::Bad("a literal form pgveil does not rewrite; use a plain '...' literal or a parameter"),
        }
    }

    /// The span of a whole cast expression around the literal at `lit`:
    /// `lit::type` or `CAST(lit AS type)`. Verified by re-parsing the
    /// candidate text and comparing it with the AST.
    fn cast_span(&self, cast: &Expr, lit: Range<usize>) -> Option<Range<usize>> {
        let Expr::Cast { kind, .. } = cast else {
            return None;
        };
        let start = match kind {
            ast::CastKind::DoubleColon => {
                // `lit::type` or `(lit)::type` (Django writes `(%s)::text[]`).
                let mut starts = vec![lit.start];
                let mut at = lit.start;
                for _ in 0..2 {
                    let before = self.text[..at].trim_end();
                    match before.strip_suffix('(') {
                        Some(b) => {
                            at = b.len();
                            starts.push(at);
                        }
                        None => break,
                    }
                }
                return starts
                    .into_iter()
                    .find_map(|start| self.cast_end(cast, start, lit.end));
            }
            ast::CastKind::Cast => {
                let before = self.text[..lit.start]
                    .trim_end()
                    .strip_suffix('(')?
                    .trim_end();
                let kw = before.len().checked_sub(4)?;
                if !before.get(kw..)?.eq_ignore_ascii_case("cast") {
                    return None;
                }
                kw
            }
            _ => return None,
        };
        self.cast_end(cast, start, lit.end)
    }

    /// The span from `start` to the end of the cast expression `cast`
    /// whose literal ends at `lit_end`, verified by re-parsing.
    fn cast_end(&self, cast: &Expr, start: usize, lit_end: usize) -> Option<Range<usize>> {
        let want = cast.to_string();
        // The type follows within a few hundred bytes: lex a window, not
        // the rest of the statement (which would be quadratic in the number
        // of casts). A window cut mid-token fails the re-parse: refused.
        let mut window = (lit_end + 1024).min(self.text.len());
        while !self.text.is_char_boundary(window) {
            window -= 1;
        }
        let toks = lex::tokens(&self.text[lit_end..window]);
        let mut best = None;
        for t in toks
            .iter()
            .filter(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
            .take(16)
        {
            let end = lit_end + t.end;
            let cand = &self.text[start..end];
            if let Ok(mut p) = Parser::new(&PostgreSqlDialect {}).try_with_sql(cand) {
                if let Ok(e) = p.parse_expr() {
                    if p.peek_token().token == sqlparser::tokenizer::Token::EOF
                        && e.to_string() == want
                    {
                        // The shortest candidate that reads back as the
                        // cast is the cast: a longer one would parse as a
                        // larger expression (or leave tokens over).
                        best = Some(start..end);
                        break;
                    }
                }
            }
        }
        best
    }

    // ----- recording -----

    /// A cast written around a value for a protected column (`'x'::date`,
    /// `CAST($1 AS varchar)`) must name the column's logical type: pgveil
    /// removes it and canonicalises the value for the column's type, so a
    /// cast that would convert the value (`'01'::int4` into a text column,
    /// `'abcdef'::varchar(3)`) would be silently ignored.
    fn check_cast(&self, pc: &ProtectedColumn, span: &Range<usize>, array: bool) -> R {
        let text = &self.text[span.clone()];
        let Ok(mut parser) = Parser::new(&PostgreSqlDialect {}).try_with_sql(text) else {
            return self.refuse(pc, "a value pgveil cannot re-read is given for");
        };
        let Ok(mut e) = parser.parse_expr() else {
            return self.refuse(pc, "a value pgveil cannot re-read is given for");
        };
        let want = pc.type_spec();
        loop {
            let (expr, data_type) = match e {
                Expr::Nested(inner) => {
                    e = *inner;
                    continue;
                }
                Expr::Cast {
                    expr, data_type, ..
                } => (expr, data_type),
                _ => break,
            };
            let mut name = data_type.to_string().to_ascii_lowercase();
            if array {
                match name.strip_suffix("[]") {
                    Some(n) => name = n.trim_end().to_owned(),
                    None => {
                        return self.refuse(
                            pc,
                            "an array parameter must be cast to an array of the logical type of",
                        )
                    }
                }
            }
            let fits = TypeSpec::parse(&name).is_ok_and(|c| {
                let family = |t: ColumnType| matches!(t, ColumnType::Text | ColumnType::Varchar);
                (c.ty == want.ty || (family(c.ty) && family(want.ty)))
                    && (c.typmod == -1 || c.typmod == want.typmod)
            });
            if !fits {
                return Err(Refusal::unsupported(
                    Some(&pc.column),
                    format!(
                        "a cast to {name} would convert the value for protected column {} (logical type {}), which pgveil cannot do on ciphertext; cast to {} or remove the cast",
                        pc.column, pc.type_spec(), pc.type_spec()
                    ),
                ));
            }
            e = *expr;
        }
        Ok(())
    }

    fn add_literal(
        &mut self,
        pc: &ProtectedColumn,
        span: Range<usize>,
        value: String,
        usage: Comparison,
        negated: bool,
        form: LiteralForm,
    ) -> R {
        self.check_cast(pc, &span, form == LiteralForm::Array)?;
        let numeric = self.text[span.clone()]
            .trim_start_matches('(')
            .starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'));
        if numeric
            && matches!(pc.type_spec().ty, ColumnType::Text | ColumnType::Varchar)
            && !number_reads_as_written(&value)
        {
            return self.refuse(
                pc,
                "a number that PostgreSQL would normalise on its way to text (exponent, leading zeros, a leading point, negative zero) is given for; quote it as the text to store, for",
            );
        }
        let span = self.abs(span);
        let target = target_of(pc);
        if let Some(&i) = self.literal_at.get(&span.start) {
            let prev = &self.plan.literals[i];
            if prev.span == span
                && prev.target == target
                && (prev.usage, prev.negated, prev.form) == (usage, negated, form)
            {
                return Ok(());
            }
            return Err(Refusal::unsupported(
                Some(&pc.column),
                format!(
                    "one literal is used for {} and for {}: pgveil can write it as ciphertext for one place only; repeat the value for each column",
                    prev.target.column, pc.column
                ),
            ));
        }
        self.literal_at.insert(span.start, self.plan.literals.len());
        self.plan.literals.push(LiteralTarget {
            span,
            value,
            target,
            usage,
            negated,
            form,
        });
        Ok(())
    }

    fn add_param(
        &mut self,
        pc: &ProtectedColumn,
        n: u32,
        cast: Option<(Range<usize>, Range<usize>)>,
        usage: Comparison,
        array: bool,
        site: Site,
    ) -> R {
        if let Some((outer, tok)) = &cast {
            if outer != tok {
                self.check_cast(pc, outer, array)?;
            }
        }
        let site = cast.map(|(outer, tok)| {
            if outer != tok {
                // pgveil binds the parameter with the storage type: the cast
                // (meant for the logical type) goes; the value is
                // canonicalised for the column's logical type instead.
                self.plan.edits.push(TextEdit {
                    span: self.abs(outer.clone()),
                    text: self.text[tok.clone()].to_owned(),
                });
            }
            ParamSite {
                span: self.abs(outer),
                keep: self.abs(tok),
                negated: matches!(site, Site::EqRight { negated: true }),
                eq_right: matches!(site, Site::EqRight { .. }),
                list: matches!(site, Site::ListElement),
            }
        });
        if let Some(prev) = self.plan.params.get_mut(&n) {
            if prev.target.key != pc.key || prev.array != array {
                return Err(Refusal::unsupported(
                    Some(&pc.column),
                    format!(
                        "parameter ${n} is used for {} and {}, which are encrypted with different keys; use separate parameters",
                        prev.target.column, pc.column
                    ),
                ));
            }
            prev.sites.extend(site);
            return Ok(());
        }
        self.plan.params.insert(
            n,
            ParamTarget {
                target: target_of(pc),
                usage,
                array,
                sites: site.into_iter().collect(),
            },
        );
        Ok(())
    }

    fn refuse<T>(&self, pc: &ProtectedColumn, what: &str) -> R<T> {
        Err(Refusal::unsupported(
            Some(&pc.column),
            format!("{what} protected column {}", pc.column),
        ))
    }

    /// Every occurrence of a protected parameter must be a position the
    /// walk accounted for: `$1` used for a protected column and also for an
    /// unprotected one (`VALUES ($1, $1)`, `RETURNING $1`, `LIMIT $1`) would
    /// carry ciphertext there, or be compared as plaintext.
    pub fn check_param_uses(&self) -> R {
        let plan = match &self.plan.prepared {
            Some(PreparedOp::Prepare { plan, .. }) => plan.as_ref(),
            _ => &self.plan,
        };
        if plan.params.is_empty() {
            return Ok(());
        }
        let mut uses: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for t in lex::tokens(self.text) {
            if t.kind == Kind::Param {
                if let Ok(n) = self.text[t.start + 1..t.end].parse::<u32>() {
                    *uses.entry(n).or_default() += 1;
                }
            }
        }
        for (n, p) in &plan.params {
            if uses.get(n).copied().unwrap_or(0) != p.sites.len() {
                return Err(Refusal::unsupported(
                    Some(&p.target.column),
                    format!(
                        "parameter ${n} is used for protected column {} and elsewhere in the statement, where it would be ciphertext; use a separate parameter for each place",
                        p.target.column
                    ),
                ));
            }
        }
        Ok(())
    }

    // ----- statements -----

    pub fn statement(&mut self, s: &Statement) -> R {
        match s {
            Statement::Query(q) => {
                self.plan.kind = StatementKind::Select;
                self.query(q, Proj::Top)
            }
            Statement::Insert(i) => {
                self.plan.kind = StatementKind::Insert;
                self.insert(i, false)
            }
            Statement::Update(u) => {
                self.plan.kind = StatementKind::Update;
                self.update(u, false)
            }
            Statement::Delete(d) => {
                self.plan.kind = StatementKind::Delete;
                self.delete(d, false)
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                self.plan.kind = StatementKind::Copy;
                self.copy(source, *to, target, options, legacy_options)?;
                // The options' strings (DELIMITER, NULL, QUOTE, …) were
                // read by `copy`; a query source's values by the walk.
                let whole = 0..self.text.len();
                let rest = match source {
                    CopySource::Table { .. } => vec![whole],
                    CopySource::Query(q) => match self.span_of(q.span()) {
                        Some(r) => vec![0..r.start, r.end..whole.end],
                        None => Vec::new(),
                    },
                };
                self.accounted.get_mut().extend(rest);
                Ok(())
            }
            Statement::Prepare {
                name,
                data_types,
                statement,
            } => {
                let mut inner = Walker::new(self.policy, self.opts, self.text, self.base);
                inner.statement(statement)?;
                if let Some(r) = inner.ambiguous.take() {
                    return Err(r);
                }
                for (n, p) in &inner.plan.params {
                    if data_types
                        .get(usize::try_from(*n).unwrap_or(usize::MAX) - 1)
                        .is_some()
                    {
                        return Err(Refusal::unsupported(
                            Some(&p.target.column),
                            format!(
                                "PREPARE declares a type for ${n}, which targets protected column {}; declare no parameter types",
                                p.target.column
                            ),
                        ));
                    }
                }
                self.plan.touches_protected = inner.plan.touches_protected;
                self.accounted
                    .get_mut()
                    .extend(inner.accounted.into_inner());
                self.protected_tables.append(&mut inner.protected_tables);
                // The prepared plan carries its own facts (its EXECUTE is
                // checked and recorded with them).
                inner.plan.settle(inner.referenced.take());
                self.plan.reads = inner.plan.reads.clone();
                self.plan.writes = inner.plan.writes.clone();
                self.plan.deletes = inner.plan.deletes.clone();
                // Literals inside the PREPARE text are encrypted now.
                self.plan.literals = std::mem::take(&mut inner.plan.literals);
                self.plan.nulls = std::mem::take(&mut inner.plan.nulls);
                self.plan.prepared = Some(PreparedOp::Prepare {
                    name: stmt_name(name),
                    plan: Arc::new(inner.plan),
                });
                Ok(())
            }
            Statement::Execute {
                name, parameters, ..
            } => {
                let name = match name.as_ref().map(|n| n.0.as_slice()) {
                    Some([ObjectNamePart::Identifier(i)]) => stmt_name(i),
                    Some(_) => return self.refuse_stmt("EXECUTE of a qualified name"),
                    None => String::new(),
                };
                let mut args = Vec::new();
                for e in parameters {
                    let mut bare = e;
                    while let Expr::Nested(inner) = bare {
                        bare = inner;
                    }
                    if matches!(bare, Expr::Cast { .. }) {
                        // A cast may convert the value (`'abc'::varchar(2)`)
                        // and pgveil does not know the target's type here:
                        // such an argument is refused for a protected
                        // parameter.
                        self.expr(e)?;
                        args.push(ExecuteArg::Other);
                        continue;
                    }
                    args.push(match self.operand(e)? {
                        Operand::Literal(r, value) => ExecuteArg::Literal {
                            span: self.abs(r),
                            value,
                        },
                        Operand::Null(_) => ExecuteArg::Null,
                        _ => {
                            self.expr(e)?;
                            ExecuteArg::Other
                        }
                    });
                }
                self.plan.prepared = Some(PreparedOp::Execute { name, args });
                Ok(())
            }
            Statement::Deallocate { name, .. } => {
                self.plan.prepared = Some(
                    if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
                        PreparedOp::DeallocateAll
                    } else {
                        PreparedOp::Deallocate(stmt_name(name))
                    },
                );
                Ok(())
            }
            Statement::Discard { object_type } => {
                if matches!(object_type, ast::DiscardObject::ALL) {
                    self.plan.prepared = Some(PreparedOp::DeallocateAll);
                }
                Ok(())
            }
            Statement::Declare { stmts, .. } => {
                for d in stmts {
                    if let Some(q) = &d.for_query {
                        self.plan.kind = StatementKind::Select;
                        self.query(q, Proj::Top)?;
                    }
                }
                Ok(())
            }
            Statement::Explain {
                statement, analyze, ..
            } => {
                let _ = analyze;
                self.statement(statement)
            }
            Statement::Merge(_) => self.refuse_stmt("MERGE"),
            Statement::Call(_) => self.refuse_stmt("CALL"),
            Statement::CreateView(v) => {
                self.new_relation_name(&v.name, false)?;
                self.query(&v.query, Proj::Nested)?;
                Ok(())
            }
            Statement::CreateTable(ct) => self.create_table(ct),
            Statement::AlterTable(at) => self.alter_table(at),
            Statement::CreateIndex(ci) => self.create_index(ci),
            // Utility and DDL statements carry no values for protected columns.
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::Drop { .. }
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Comment { .. }
            | Statement::Analyze(_)
            | Statement::Vacuum(_)
            | Statement::Lock(_)
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. } => Ok(()),
            // Destroys every protected value of the tables: recorded.
            Statement::Truncate(t) => {
                for target in &t.table_names {
                    if let Some(tq) = self.resolve_table(&target.name) {
                        self.plan.touches_protected = true;
                        for c in self.policy.table(&tq).into_iter().flat_map(|t| t.columns()) {
                            self.plan.deletes.insert(c.column.clone());
                        }
                    }
                }
                Ok(())
            }
            other => {
                // Fail closed: any other statement that names a protected
                // table is refused.
                let text = other.to_string();
                if self.policy.mentions_protected_table(&text) {
                    self.refuse_stmt("this statement type")
                } else {
                    Ok(())
                }
            }
        }
    }

    // ----- DDL -----

    /// A relation about to be created under `name`: refused when it would
    /// share a protected table's name in another schema (or as a temporary
    /// table, which comes first in every search path) — afterwards an
    /// unqualified name could mean either. Returns the protected table when
    /// `name` is that table itself.
    fn new_relation_name(
        &mut self,
        name: &ObjectName,
        temporary: bool,
    ) -> R<Option<QualifiedTable>> {
        let Some(parts) = object_parts(name) else {
            return Ok(None);
        };
        let Some(last) = parts.last() else {
            return Ok(None);
        };
        let Some(protected) = self
            .policy
            .tables()
            .map(|t| t.table())
            .find(|t| t.table.as_str() == last)
            .cloned()
        else {
            return Ok(None);
        };
        let itself = !temporary && self.resolve_table(name).is_some();
        if itself {
            self.plan.touches_protected = true;
            return Ok(self.resolve_table(name));
        }
        Err(Refusal::unsupported(
            None,
            format!(
                "a {}relation named {} would share the name of protected table {protected}, and unqualified names could then mean either; choose another name",
                if temporary { "temporary " } else { "" },
                parts.join(".")
            ),
        ))
    }

    fn create_table(&mut self, ct: &ast::CreateTable) -> R {
        let table = self.new_relation_name(&ct.name, ct.temporary)?;
        let mut parents: Vec<&ObjectName> = ct.inherits.iter().flatten().collect();
        parents.extend(ct.partition_of.as_ref());
        for parent in parents {
            if let Some(p) = self.resolve_table(parent) {
                return Err(Refusal::unsupported(
                    None,
                    format!(
                        "{} would inherit the protected columns of {p} (a child or partition), which the policy does not cover; add the child to the policy and create it outside pgveil, or write to {p}",
                        ct.name
                    ),
                ));
            }
            if let Some(t) = &table {
                return Err(Refusal::unsupported(
                    None,
                    format!("protected table {t} cannot be a child or partition of {parent}: writes through {parent} would not be encrypted"),
                ));
            }
        }
        if let Some(t) = &table {
            let rel = Rel {
                name: t.table.as_str().to_owned(),
                schema: None,
                table: Some(t.clone()),
                values: None,
            };
            for c in &ct.constraints {
                self.table_constraint(c, &rel)?;
            }
            if ct.query.is_some() {
                return Err(Refusal::unsupported(
                    None,
                    format!("CREATE TABLE {t} AS … would fill protected columns with values pgveil does not encrypt; create the table, then INSERT through pgveil"),
                ));
            }
            for c in &ct.columns {
                let Some(pc) = ident(&norm(&c.name)).and_then(|n| self.policy.lookup(t, &n)) else {
                    continue;
                };
                for o in &c.options {
                    use ast::ColumnOption as O;
                    match &o.option {
                        O::Null
                        | O::NotNull
                        | O::PrimaryKey(_)
                        | O::Unique(_)
                        | O::Comment(_)
                        | O::Collation(_) => {}
                        _ => {
                            return self.refuse(
                                pc,
                                "a column DEFAULT, CHECK or generated expression would compute or compare plaintext values of",
                            )
                        }
                    }
                }
            }
        }
        if let Some(q) = &ct.query {
            self.query(q, Proj::Nested)?;
        }
        Ok(())
    }

    fn alter_table(&mut self, at: &ast::AlterTable) -> R {
        use ast::AlterColumnOperation as C;
        use ast::AlterTableOperation as Op;
        let rel = self.rel_for(&at.name, None);
        let table = rel.table.clone();
        let lookup = |w: &Self, c: &ast::Ident| -> Option<&'p ProtectedColumn> {
            w.protected_in(&rel, &norm(c))
        };
        for op in &at.operations {
            match op {
                // The second line of defence is not the application's to
                // remove: `pgveil guard remove` does it, directly.
                Op::DropConstraint { name, .. } | Op::RenameConstraint { old_name: name, .. }
                    if norm(name).starts_with("pgveil_guard") =>
                {
                    return Err(Refusal::unsupported(
                        None,
                        format!("constraint {name} is a pgveil guard: remove guards with `pgveil guard remove` on a direct connection, not through pgveil"),
                    ));
                }
                Op::RenameTable { table_name } => {
                    let (ast::RenameTableNameKind::As(new) | ast::RenameTableNameKind::To(new)) =
                        table_name;
                    if let Some(t) = &table {
                        return Err(Refusal::unsupported(
                            None,
                            format!("renaming protected table {t} would leave its ciphertext under a name the policy does not protect; change the policy and rename outside pgveil"),
                        ));
                    }
                    self.new_relation_name(new, false)?;
                    if self.resolve_table(new).is_some() {
                        return Err(Refusal::unsupported(
                            None,
                            format!("renaming {} to the name of a protected table would make pgveil treat its plaintext as ciphertext", at.name),
                        ));
                    }
                }
                Op::AttachPartition { .. } | Op::AttachPartitionOf { .. } => {
                    if table.is_some() || self.policy.mentions_protected_table(&op.to_string()) {
                        return self.refuse_stmt("ATTACH PARTITION");
                    }
                }
                // Not a protected table: its other DDL carries no protected
                // values; a foreign key may reference a protected table's
                // key, anything else naming one (INHERIT …) is refused.
                Op::AddConstraint {
                    constraint: ast::TableConstraint::ForeignKey(_),
                    ..
                } if table.is_none() => {}
                _ if table.is_none() => {
                    if self.policy.mentions_protected_table(&op.to_string()) {
                        return self.refuse_stmt("this ALTER TABLE");
                    }
                }
                Op::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    for c in [old_column_name, new_column_name] {
                        if let Some(pc) = lookup(self, c) {
                            return self.refuse(pc, "renaming would move the ciphertext away from the policy's name for (change the policy first):");
                        }
                    }
                }
                Op::AlterColumn { column_name, op } => {
                    if let Some(pc) = lookup(self, column_name) {
                        match op {
                            C::SetNotNull | C::DropNotNull | C::DropDefault => {}
                            C::SetDefault { .. } => {
                                return self
                                    .refuse(pc, "a DEFAULT would store a plaintext value in")
                            }
                            C::SetDataType { .. } => {
                                return self.refuse(
                                    pc,
                                    "changing the type (and USING) would rewrite the ciphertext of",
                                )
                            }
                            _ => return self.refuse(pc, "this ALTER COLUMN is not supported on"),
                        }
                    } else if let C::SetDataType { using: Some(u), .. }
                    | C::SetDefault { value: u } = op
                    {
                        self.scopes.push(vec![rel.clone()]);
                        let r = self.expr(u);
                        self.scopes.pop();
                        r?;
                    }
                }
                Op::AddColumn { column_def, .. } => {
                    // A generated or default expression reading a protected
                    // column would copy its ciphertext into a plain column.
                    self.scopes.push(vec![rel.clone()]);
                    let r = self.fallback(column_def);
                    self.scopes.pop();
                    r?;
                    if let Some(pc) = lookup(self, &column_def.name) {
                        if !column_def.options.iter().all(|o| {
                            matches!(
                                o.option,
                                ast::ColumnOption::Null
                                    | ast::ColumnOption::NotNull
                                    | ast::ColumnOption::Unique(_)
                                    | ast::ColumnOption::Comment(_)
                            )
                        }) {
                            return self.refuse(pc, "a DEFAULT, generated or checked new column would hold plaintext in");
                        }
                    }
                }
                Op::AddConstraint { constraint, .. } => {
                    self.table_constraint(constraint, &rel)?;
                }
                Op::DropColumn { column_names, .. } => {
                    for n in column_names {
                        if let Some(pc) = lookup(self, n) {
                            self.plan.deletes.insert(pc.column.clone());
                        }
                    }
                }
                Op::DropConstraint { .. }
                | Op::RenameConstraint { .. }
                | Op::DisableRowLevelSecurity
                | Op::EnableRowLevelSecurity
                | Op::ForceRowLevelSecurity
                | Op::NoForceRowLevelSecurity
                | Op::DisableRule { .. }
                | Op::EnableRule { .. }
                | Op::EnableAlwaysRule { .. }
                | Op::EnableReplicaRule { .. }
                | Op::DisableTrigger { .. }
                | Op::EnableTrigger { .. }
                | Op::EnableAlwaysTrigger { .. }
                | Op::EnableReplicaTrigger { .. }
                | Op::ReplicaIdentity { .. }
                | Op::OwnerTo { .. }
                | Op::SetLogged
                | Op::SetUnlogged => {}
                _ => return self.refuse_stmt("this ALTER TABLE operation"),
            }
        }
        Ok(())
    }

    /// A table constraint on a protected table: UNIQUE, PRIMARY KEY and
    /// FOREIGN KEY compare stored ciphertext (deterministic columns); a
    /// CHECK may not use a protected column; anything else (EXCLUDE with
    /// its predicate and expressions, …) is refused.
    fn table_constraint(&mut self, c: &ast::TableConstraint, rel: &Rel) -> R {
        use ast::TableConstraint as T;
        match c {
            T::Unique(_) | T::PrimaryKey(_) => Ok(()),
            T::ForeignKey(fk) => {
                // From a protected column: the referenced table's values
                // (and ON UPDATE CASCADE writes) would land in it unencrypted.
                for col in &fk.columns {
                    if let Some(pc) = self.protected_in(rel, &norm(col)) {
                        return self.refuse(pc, "a foreign key would copy plaintext values into");
                    }
                }
                Ok(())
            }
            T::Check(check) => {
                self.scopes.push(vec![rel.clone()]);
                let r = self.fallback(check);
                self.scopes.pop();
                r
            }
            _ => self.refuse_stmt("this constraint"),
        }
    }

    fn create_index(&mut self, ci: &ast::CreateIndex) -> R {
        let rel = self.rel_for(&ci.table_name, None);
        if rel.table.is_none() {
            return Ok(());
        }
        self.scopes.push(vec![rel]);
        let r = (|| {
            for c in &ci.columns {
                match self.direct(&c.column.expr)? {
                    // An index on ciphertext: equality (deterministic) works.
                    Some(_) => {}
                    None => self.expr(&c.column.expr)?,
                }
            }
            if let Some(p) = &ci.predicate {
                self.expr(p)?;
            }
            Ok(())
        })();
        self.scopes.pop();
        r
    }

    fn refuse_stmt(&self, what: &str) -> R {
        let tables: Vec<String> = self
            .policy
            .tables()
            .map(|t| t.table())
            .filter(|t| self.policy_table_mentioned(t))
            .map(ToString::to_string)
            .collect();
        Err(Refusal::unsupported(
            None,
            format!(
                "{what} is not supported on protected tables ({}): pgveil cannot see which values reach protected columns",
                tables.join(", ")
            ),
        ))
    }

    fn policy_table_mentioned(&self, t: &QualifiedTable) -> bool {
        let lower = self.text.to_ascii_lowercase();
        lower.contains(&t.table.as_str().to_ascii_lowercase())
    }

    // ----- queries -----

    fn query(&mut self, q: &Query, proj: Proj<'p>) -> R {
        let mut pushed = false;
        if let Some(with) = &q.with {
            self.ctes.push(HashSet::new());
            pushed = true;
            for cte in &with.cte_tables {
                self.query(&cte.query, Proj::Nested)?;
                if let Some(s) = self.ctes.last_mut() {
                    s.insert(norm(&cte.alias.name));
                }
            }
        }
        let order: Vec<&ast::OrderByExpr> = match &q.order_by {
            Some(ob) => match &ob.kind {
                OrderByKind::Expressions(v) => v.iter().collect(),
                OrderByKind::All(_) => Vec::new(),
            },
            None => Vec::new(),
        };
        let res = self.set_expr(&q.body, proj, &order);
        if res.is_ok() {
            if let Some(lc) = &q.limit_clause {
                self.fallback(lc)?;
            }
            if let Some(e) = q.fetch.as_ref().and_then(|f| f.quantity.as_ref()) {
                self.expr(e)?;
            }
        }
        if pushed {
            self.ctes.pop();
        }
        res
    }

    fn set_expr(&mut self, body: &SetExpr, proj: Proj<'p>, order: &[&ast::OrderByExpr]) -> R {
        match body {
            SetExpr::Select(s) => self.select(s, proj, order),
            SetExpr::Query(q) => {
                self.query(q, proj)?;
                self.order_outside(order)
            }
            SetExpr::SetOperation {
                left,
                right,
                op,
                set_quantifier,
            } => {
                // Rows combined by UNION/INTERSECT/EXCEPT are compared (and
                // deduplicated) by value: only UNION ALL keeps each row, so
                // only UNION ALL may feed protected columns.
                if let Proj::Into(targets) = &proj {
                    let all = *op == ast::SetOperator::Union
                        && matches!(set_quantifier, ast::SetQuantifier::All);
                    if let (false, Some(t)) = (all, targets.iter().flatten().next()) {
                        return self.refuse(
                            t,
                            &format!(
                                "{op} compares rows by value; only UNION ALL can supply values for"
                            ),
                        );
                    }
                }
                let branch = match proj {
                    Proj::Top | Proj::CopyOut => Proj::Nested,
                    p => p,
                };
                self.set_expr(left, branch.clone(), &[])?;
                self.set_expr(right, branch, &[])?;
                self.order_outside(order)
            }
            SetExpr::Values(v) => {
                match &proj {
                    // VALUES that are an INSERT's rows (in parentheses, in a
                    // UNION ALL, after WITH): every value is written.
                    Proj::Into(targets) => {
                        let targets = targets.clone();
                        self.scopes.push(Vec::new());
                        let r = (|| {
                            for row in &v.rows {
                                for (i, e) in row.content.iter().enumerate() {
                                    self.write_value_as(
                                        targets.get(i).copied().flatten(),
                                        e,
                                        LiteralForm::ListElement,
                                    )?;
                                }
                            }
                            Ok(())
                        })();
                        self.scopes.pop();
                        r?;
                    }
                    Proj::InSub(Some(pc)) => {
                        return self.refuse(
                            pc,
                            "IN (VALUES ...) is not rewritten; list the values directly, IN ('a', 'b'), for",
                        );
                    }
                    Proj::Top
                    | Proj::Nested
                    | Proj::Discard
                    | Proj::CopyOut
                    | Proj::InSub(None) => {
                        for row in &v.rows {
                            for e in row.content.iter() {
                                self.expr(e)?;
                            }
                        }
                    }
                }
                self.order_outside(order)
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => match s {
                Statement::Insert(i) => self.insert(i, true),
                Statement::Update(u) => self.update(u, true),
                Statement::Delete(d) => self.delete(d, true),
                _ => self.refuse_stmt("this nested statement"),
            },
            SetExpr::Merge(_) => self.refuse_stmt("MERGE"),
            SetExpr::Table(t) => {
                let name = ObjectName::from(
                    t.schema_name
                        .iter()
                        .chain(t.table_name.iter())
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                match &proj {
                    Proj::Into(targets) => {
                        if let Some(t) = targets.iter().flatten().next() {
                            return self.refuse(
                                t,
                                "TABLE as a source supplies values pgveil cannot encrypt for",
                            );
                        }
                    }
                    Proj::InSub(Some(pc)) => {
                        return self.refuse(pc, "IN (TABLE ...) cannot be compared with");
                    }
                    _ => {}
                }
                if let Some(tq) = self.resolve_table(&name) {
                    self.plan.touches_protected = true;
                    if !matches!(proj, Proj::Top | Proj::Discard) {
                        return Err(Refusal::unsupported(
                            None,
                            format!("TABLE {tq} inside a subquery, CTE or UNION would return protected columns without their table; select them at the top level"),
                        ));
                    }
                    for c in self.policy.table(&tq).into_iter().flat_map(|t| t.columns()) {
                        self.plan.reads.insert(c.column.clone());
                    }
                }
                self.order_outside(order)
            }
        }
    }

    /// ORDER BY outside a SELECT's scope (after UNION, VALUES): output
    /// names only; protected outputs were already refused.
    fn order_outside(&mut self, order: &[&ast::OrderByExpr]) -> R {
        for o in order {
            self.expr(&o.expr)?;
        }
        Ok(())
    }

    fn join_tree(&mut self, twj: &TableWithJoins, rels: &mut Vec<Rel>) -> R {
        self.table_factor(&twj.relation, rels)?;
        for j in &twj.joins {
            self.table_factor(&j.relation, rels)?;
            let Some(constraint) = join_constraint(&j.join_operator) else {
                return self.refuse_stmt("this join type");
            };
            match constraint {
                JoinConstraint::On(e) => {
                    // ON sees every relation joined so far.
                    self.scopes.push(rels.clone());
                    let r = self.expr(e);
                    self.scopes.pop();
                    r?;
                }
                JoinConstraint::Using(cols) => {
                    for c in cols {
                        let Some(parts) = object_parts(c) else {
                            continue;
                        };
                        let Some(col) = parts.last() else { continue };
                        let hits: Vec<&ProtectedColumn> = rels
                            .iter()
                            .filter_map(|r| self.protected_in(r, col))
                            .collect();
                        if let Some(first) = hits.first() {
                            if hits.len() < 2
                                || !first.is_deterministic()
                                || hits.iter().any(|h| h.key != first.key)
                            {
                                return self.refuse(first, "JOIN USING needs both sides deterministic under one key; cannot join on");
                            }
                        }
                    }
                }
                JoinConstraint::Natural => {
                    if rels.iter().any(|r| r.table.is_some()) {
                        return self.refuse_stmt("NATURAL JOIN");
                    }
                }
                JoinConstraint::None | JoinConstraint::UsingAlias(..) => {}
            }
        }
        Ok(())
    }

    fn table_factor(&mut self, tf: &TableFactor, rels: &mut Vec<Rel>) -> R {
        match tf {
            TableFactor::Table {
                name,
                alias,
                args,
                sample,
                ..
            } => {
                if args.is_some() {
                    self.fallback(tf)?;
                }
                if let Some(
                    ast::TableSampleKind::BeforeTableAlias(ts)
                    | ast::TableSampleKind::AfterTableAlias(ts),
                ) = sample
                {
                    // `TABLESAMPLE m (quantity) REPEATABLE (seed)`: the
                    // quantity can be any expression, a subquery included.
                    if let Some(q) = &ts.quantity {
                        self.expr(&q.value)?;
                    }
                    if let Some(seed) = &ts.seed {
                        self.account(seed.value.span);
                    }
                }
                let rel = self.rel_for(name, alias.as_ref().map(|a| &a.name));
                if let (Some(t), Some(a)) = (&rel.table, alias) {
                    if !a.columns.is_empty() {
                        // `patients p(a, b)` renames columns by position:
                        // pgveil resolves protected columns by name.
                        return Err(Refusal::unsupported(
                            None,
                            format!("a column alias list on protected table {t} renames its columns by position; alias the table only and name the columns"),
                        ));
                    }
                }
                rels.push(rel);
                Ok(())
            }
            TableFactor::Derived {
                subquery,
                alias,
                lateral,
                ..
            } => {
                if *lateral {
                    self.scopes.push(rels.clone());
                }
                let r = self.query(subquery, Proj::Nested);
                if *lateral {
                    self.scopes.pop();
                }
                r?;
                let values = match &*subquery.body {
                    SetExpr::Values(v) if subquery.with.is_none() => {
                        let mut rows = Vec::with_capacity(v.rows.len());
                        for row in &v.rows {
                            let mut out = Vec::with_capacity(row.content.len());
                            for e in row.content.iter() {
                                out.push(match self.operand(e)? {
                                    Operand::Literal(r, v) => Elem::Literal(r, v),
                                    Operand::Param(n, c) => Elem::Param(n, c),
                                    Operand::Null(_) => Elem::Null,
                                    _ => Elem::Other,
                                });
                            }
                            rows.push(out);
                        }
                        // PostgreSQL names them column1, column2, … unless
                        // the alias lists names.
                        let width = rows.first().map_or(0, Vec::len);
                        let named: Vec<String> = alias
                            .iter()
                            .flat_map(|a| a.columns.iter().map(|c| norm(&c.name)))
                            .collect();
                        let columns = (0..width)
                            .map(|k| named.get(k).cloned().unwrap_or(format!("column{}", k + 1)))
                            .collect();
                        Some(Arc::new(ValuesRel {
                            columns,
                            rows,
                            arrays: false,
                        }))
                    }
                    _ => None,
                };
                rels.push(Rel {
                    name: alias.as_ref().map(|a| norm(&a.name)).unwrap_or_default(),
                    schema: None,
                    table: None,
                    values,
                });
                Ok(())
            }
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset,
                with_offset_alias,
                with_ordinality,
            } if !with_offset && with_offset_alias.is_none() => {
                // `unnest(a, b, …)`: column k holds the elements of array k.
                // Arrays of literals or parameters can feed protected
                // columns (ORM bulk inserts); anything else is walked.
                let mut row = Vec::with_capacity(array_exprs.len());
                for e in array_exprs {
                    let el = match self.operand(e)? {
                        Operand::Literal(r, v) => Elem::Literal(r, v),
                        Operand::Param(n, c) => Elem::Param(n, c),
                        Operand::Null(_) => Elem::Null,
                        _ => {
                            self.expr(e)?;
                            Elem::Other
                        }
                    };
                    row.push(el);
                }
                if *with_ordinality {
                    row.push(Elem::Other);
                }
                let named: Vec<String> = alias
                    .iter()
                    .flat_map(|a| a.columns.iter().map(|c| norm(&c.name)))
                    .collect();
                let columns = (0..row.len())
                    .map(|k| named.get(k).cloned().unwrap_or_default())
                    .collect();
                rels.push(Rel {
                    name: alias.as_ref().map(|a| norm(&a.name)).unwrap_or_default(),
                    schema: None,
                    table: None,
                    values: Some(Arc::new(ValuesRel {
                        columns,
                        rows: vec![row],
                        arrays: true,
                    })),
                });
                Ok(())
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let before = rels.len();
                self.join_tree(table_with_joins, rels)?;
                if let Some(a) = alias {
                    if let Some(t) = rels[before..].iter().find_map(|r| r.table.as_ref()) {
                        if !a.columns.is_empty() {
                            return Err(Refusal::unsupported(
                                None,
                                format!("a column alias list on a join over protected table {t} renames its columns by position; name the columns instead"),
                            ));
                        }
                    }
                    // `(a JOIN b) AS j`: only `j.` qualifies its columns.
                    for r in &mut rels[before..] {
                        r.name = norm(&a.name);
                        r.schema = None;
                    }
                }
                Ok(())
            }
            other => {
                self.fallback(other)?;
                rels.push(Rel {
                    name: String::new(),
                    schema: None,
                    table: None,
                    values: None,
                });
                Ok(())
            }
        }
    }

    fn select(&mut self, s: &Select, proj: Proj<'p>, order: &[&ast::OrderByExpr]) -> R {
        let mut rels = Vec::new();
        for twj in &s.from {
            self.join_tree(twj, &mut rels)?;
        }
        // `SELECT … INTO new_table`: the rows go into a table pgveil does
        // not protect, as ciphertext: like CREATE TABLE AS.
        let proj = if s.into.is_some() { Proj::Nested } else { proj };
        self.scopes.push(rels);
        let r = self.select_body(s, proj, order);
        self.scopes.pop();
        r
    }

    fn select_body(&mut self, s: &Select, proj: Proj<'p>, order: &[&ast::OrderByExpr]) -> R {
        // Subqueries walked inside decide for themselves; restored after.
        let outer = self.lone_source;
        self.lone_source = matches!(proj, Proj::Into(_)) && Self::lone(s, self.scopes.last());
        let r = self.select_items(s, proj, order);
        self.lone_source = outer;
        r
    }

    fn select_items(&mut self, s: &Select, proj: Proj<'p>, order: &[&ast::OrderByExpr]) -> R {
        for w in &s.named_window {
            self.fallback_text(&w.to_string())?;
            if let ast::NamedWindowExpr::WindowSpec(spec) = &w.1 {
                self.window_spec(spec)?;
            }
        }
        // VALUES columns this SELECT writes into protected columns: bound
        // before anything else is walked (WHERE comes first).
        let placed = match &proj {
            Proj::Into(_) => self.placeable_wildcard(s),
            _ => None,
        };
        if let (Proj::Into(targets), Some(v)) = (&proj, &placed) {
            for (k, t) in targets.iter().enumerate() {
                if t.is_some() {
                    self.bound_values.push((Arc::as_ptr(v) as usize, k));
                }
            }
        }
        if let Proj::Into(targets) = &proj {
            for (i, item) in s.projection.iter().enumerate() {
                let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item
                else {
                    continue;
                };
                if targets.get(i).copied().flatten().is_some() && self.direct(e)?.is_none() {
                    if let Some((v, k)) = self.values_column(e) {
                        self.bound_values.push((Arc::as_ptr(&v) as usize, k));
                    }
                }
            }
        }
        if let Some(w) = &s.selection {
            self.expr(w)?;
        }
        // Projection.
        let mut outputs: Vec<(Option<String>, Option<&'p ProtectedColumn>)> = Vec::new();
        // A wildcard whose columns could not be placed (COPY (query) only).
        let mut unplaced = false;
        for (i, item) in s.projection.iter().enumerate() {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    let alias = match item {
                        SelectItem::ExprWithAlias { alias, .. } => Some(norm(alias)),
                        _ => None,
                    };
                    let direct = self.direct(e)?;
                    outputs.push((alias, direct));
                    self.project(e, direct, i, &proj)?;
                }
                SelectItem::ExprWithAliases { expr, .. } => {
                    self.expr(expr)?;
                    outputs.push((None, None));
                }
                SelectItem::Wildcard(_) if placed.is_some() => {
                    let (Some(v), Proj::Into(targets)) = (&placed, &proj) else {
                        unreachable!("placed only for Proj::Into")
                    };
                    if v.rows.first().map_or(0, Vec::len) != targets.len() {
                        if let Some(t) = targets.iter().flatten().next() {
                            return self.refuse(
                                t,
                                "INSERT … SELECT * supplies a different number of columns than the INSERT lists, including",
                            );
                        }
                    }
                    for (k, t) in targets.iter().enumerate() {
                        if let Some(t) = t {
                            self.values_column_into(t, v, k)?;
                        }
                    }
                    outputs.push((None, None));
                }
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    let qual = match item {
                        SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(n),
                            _,
                        ) => object_parts(n).and_then(|p| p.last().cloned()),
                        SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::Expr(_),
                            _,
                        ) => return self.refuse_stmt("a wildcard over an expression"),
                        _ => None,
                    };
                    let cols: Vec<&'p ProtectedColumn> = self
                        .scopes
                        .last()
                        .into_iter()
                        .flatten()
                        .filter(|r| qual.as_ref().is_none_or(|q| &r.name == q))
                        .filter_map(|r| r.table.as_ref())
                        .filter_map(|t| self.policy.table(t))
                        .flat_map(|t| t.columns())
                        .collect();
                    match &proj {
                        Proj::Top | Proj::Discard => {
                            for c in cols {
                                self.plan.reads.insert(c.column.clone());
                            }
                        }
                        Proj::CopyOut => {
                            // COPY (SELECT * …): place the columns by the
                            // catalog's order when every relation is known
                            // and no USING/NATURAL join merges columns.
                            let merged = qual.is_none() && merges_join_columns(&s.from);
                            if let Some(expanded) =
                                self.expand_wildcard(qual.as_deref()).filter(|_| !merged)
                            {
                                for c in expanded.iter().flatten() {
                                    self.plan.reads.insert(c.column.clone());
                                }
                                outputs.extend(expanded.into_iter().map(|c| (None, c)));
                                continue;
                            }
                            unplaced = true;
                            if let Some(c) = cols.first() {
                                if merged {
                                    return self.refuse(c, "COPY (SELECT * …) over a JOIN … USING or NATURAL JOIN merges the joined columns, so pgveil cannot place them; list the columns instead, including");
                                }
                                return self.refuse(c, "COPY (SELECT * …) over relations pgveil cannot place column by column would return");
                            }
                        }
                        _ => {
                            if let Some(c) = cols.first() {
                                return self.refuse(c, "SELECT * inside a subquery, CTE, UNION or INSERT … SELECT would return or copy");
                            }
                        }
                    }
                    outputs.push((None, None));
                }
            }
        }
        if let Proj::CopyOut = &proj {
            let wildcard = unplaced
                || s.projection
                    .iter()
                    .any(|i| matches!(i, SelectItem::ExprWithAliases { .. }));
            if let Some(c) = outputs.iter().find_map(|o| o.1) {
                if wildcard {
                    return self.refuse(
                        c,
                        "COPY (SELECT * …) cannot place the columns of its rows; list the columns instead, including",
                    );
                }
            }
            self.copy_outputs = Some(outputs.iter().map(|o| o.1).collect());
        }
        if let (Proj::Into(t), None) = (&proj, &placed) {
            if s.projection.iter().any(|i| {
                matches!(
                    i,
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                )
            }) && t.iter().any(Option::is_some)
            {
                return Err(Refusal::unsupported(
                    t.iter().flatten().next().map(|c| &c.column),
                    "INSERT … SELECT * into a table with protected columns is placed only from one VALUES list or unnest(…) of array literals or parameters (and nothing else in the SELECT); use INSERT … VALUES, or SELECT * FROM unnest($1, $2, …) with one array parameter per column".to_owned(),
                ));
            }
        }
        // DISTINCT.
        match &s.distinct {
            Some(Distinct::Distinct) => {
                for (_, c) in &outputs {
                    if let Some(c) = c {
                        if !c.is_deterministic() {
                            return self.refuse(c, "SELECT DISTINCT cannot compare randomized");
                        }
                    }
                }
            }
            Some(Distinct::On(exprs)) => {
                for e in exprs {
                    self.group_expr(e, &outputs)?;
                }
            }
            _ => {}
        }
        if let GroupByExpr::Expressions(exprs, _) = &s.group_by {
            for e in exprs {
                self.group_expr(e, &outputs)?;
            }
        }
        if let Some(h) = &s.having {
            self.expr(h)?;
        }
        for o in order {
            if let Some(c) = self.direct(&o.expr)? {
                return self.refuse(c, "ORDER BY would sort ciphertext of");
            }
            // Into an INSERT: an ordinal or output alias names a target
            // column; its values are ciphertext by the time rows are sorted.
            if let Proj::Into(targets) = &proj {
                let index = output_index(&o.expr, &outputs);
                if let Some(t) = index.and_then(|k| targets.get(k).copied().flatten()) {
                    return self.refuse(t, "ORDER BY would sort ciphertext written into");
                }
            }
            // Ordinal or output alias pointing at a protected output.
            if let Some(c) = output_target(&o.expr, &outputs) {
                return self.refuse(c, "ORDER BY would sort ciphertext of");
            }
            self.expr(&o.expr)?;
        }
        Ok(())
    }

    /// A GROUP BY / DISTINCT ON item: an input column first (as
    /// PostgreSQL resolves a name there), else an output by ordinal or
    /// alias (`GROUP BY 1`, `DISTINCT ON (1)`).
    fn group_expr(
        &mut self,
        e: &Expr,
        outputs: &[(Option<String>, Option<&'p ProtectedColumn>)],
    ) -> R {
        let direct = match self.direct(e)? {
            Some(c) => Some(c),
            None => output_target(e, outputs),
        };
        match direct {
            Some(c) if c.is_deterministic() => {
                self.plan.reads.insert(c.column.clone());
                Ok(())
            }
            Some(c) => self.refuse(c, "GROUP BY / DISTINCT ON cannot group randomized"),
            None => self.expr(e),
        }
    }

    fn project(
        &mut self,
        e: &Expr,
        direct: Option<&'p ProtectedColumn>,
        i: usize,
        proj: &Proj<'p>,
    ) -> R {
        match proj {
            Proj::Top | Proj::Discard | Proj::CopyOut => match direct {
                Some(c) => {
                    self.plan.reads.insert(c.column.clone());
                    Ok(())
                }
                None => self.expr(e),
            },
            Proj::Nested => match direct {
                Some(c) => self
                    .refuse(
                        c,
                        "a subquery, CTE, UNION or view projection loses the table identity of",
                    )
                    .map_err(|r| {
                        r.with_hint("select the column directly from its table at the top level")
                    }),
                None => self.expr(e),
            },
            Proj::Into(targets) => {
                let target = targets.get(i).copied().flatten();
                if let Some(t) = target {
                    // Whatever supplies it, the target is written.
                    self.plan.writes.insert(t.column.clone());
                }
                match (target, direct) {
                    (Some(t), Some(src)) if t.key == src.key => {
                        self.plan.reads.insert(src.column.clone());
                        if src.column != t.column {
                            self.plan.copies.push(ColumnCopy {
                                from: src.column.clone(),
                                to: t.column.clone(),
                            });
                        }
                        Ok(())
                    }
                    (Some(t), None) if self.values_column(e).is_some() => self.values_into(t, e),
                    (Some(t), None) if unnest_arg(e).is_some() => {
                        // `SELECT unnest($1::text[])`: each element of the
                        // array is a value for the column.
                        let arg = unnest_arg(e).expect("checked");
                        if self.scopes.last().is_some_and(|r| !r.is_empty()) {
                            return self.refuse(
                                t,
                                "SELECT unnest(…) with a FROM clause repeats its elements once per row; use SELECT * FROM unnest(…) for",
                            );
                        }
                        let el = match self.operand(arg)? {
                            Operand::Literal(r, v) => Elem::Literal(r, v),
                            Operand::Param(n, c) => Elem::Param(n, c),
                            Operand::Null(_) => Elem::Null,
                            _ => Elem::Other,
                        };
                        let v = ValuesRel {
                            columns: Vec::new(),
                            rows: vec![vec![el]],
                            arrays: true,
                        };
                        self.values_column_into(t, &v, 0)
                    }
                    (Some(t), _) => Err(Refusal::unsupported(
                        Some(&t.column),
                        format!(
                            "INSERT … SELECT into protected column {}: the source must be a column encrypted with the same key ({}); insert values with VALUES or parameters instead",
                            t.column, t.key
                        ),
                    )),
                    (None, Some(src)) => self.refuse(src, "INSERT … SELECT would copy ciphertext into an unprotected column from"),
                    (None, None) => self.expr(e),
                }
            }
            Proj::InSub(lhs) => match (lhs, direct) {
                (Some(l), Some(src)) if l.key == src.key && l.is_deterministic() => {
                    self.plan.reads.insert(src.column.clone());
                    Ok(())
                }
                (Some(l), _) => self.refuse(
                    l,
                    "IN (subquery) must select a deterministic column under the same key as",
                ),
                (None, Some(src)) => self.refuse(src, "a plaintext value cannot be compared with"),
                (None, None) => self.expr(e),
            },
        }
    }

    /// Inserts ` (a, b, …)` at byte `after` (relative to the statement).
    fn insert_column_list(
        &mut self,
        after: Option<usize>,
        order: &[Ident],
        table: &QualifiedTable,
    ) -> R {
        let Some(at) = after else {
            return Err(Refusal::unsupported(
                None,
                format!("a statement on {table} without a column list whose table name pgveil cannot delimit; list the columns"),
            ));
        };
        let list: Vec<String> = order.iter().map(Ident::quoted).collect();
        let at = at + self.base;
        self.plan.edits.push(TextEdit {
            span: at..at,
            text: format!(" ({})", list.join(", ")),
        });
        Ok(())
    }

    /// The columns `*` (or `qual.*`) stands for, when every relation it
    /// covers is a table whose column order the catalog gave; `None` if any
    /// is not (an unprotected table, a subquery, a function).
    fn expand_wildcard(&self, qual: Option<&str>) -> Option<Vec<Option<&'p ProtectedColumn>>> {
        let order = self.opts.column_order.as_ref()?;
        let mut out = Vec::new();
        for r in self
            .scopes
            .last()?
            .iter()
            .filter(|r| qual.is_none_or(|q| r.name == q))
        {
            let t = r.table.as_ref()?;
            let tp = self.policy.table(t)?;
            for name in order.column_order(t)? {
                out.push(tp.column(&name));
            }
        }
        Some(out)
    }

    /// `alias.col` or `col` (optionally cast) naming a column of a
    /// `VALUES` derived table in scope: the table and the column's index.
    fn values_column(&self, e: &Expr) -> Option<(Arc<ValuesRel>, usize)> {
        let inner = match e {
            Expr::Cast { expr, .. } => expr.as_ref(),
            other => other,
        };
        let (qual, col) = match inner {
            Expr::Identifier(i) => (None, norm(i)),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                (Some(norm(&parts[0])), norm(&parts[1]))
            }
            _ => return None,
        };
        let mut hits = self.scopes.last()?.iter().filter_map(|r| {
            let v = r.values.as_ref()?;
            if qual.as_ref().is_some_and(|q| q != &r.name) {
                return None;
            }
            let k = v.columns.iter().position(|c| c == &col)?;
            Some((v.clone(), k))
        });
        let hit = hits.next()?;
        hits.next().is_none().then_some(hit)
    }

    /// `INSERT INTO t (protected) SELECT v.col FROM (VALUES …) v(col)`:
    /// every value of that column is encrypted for the target (this is how
    /// SQLAlchemy's "insertmanyvalues" sends bulk inserts with RETURNING).
    fn values_into(&mut self, t: &'p ProtectedColumn, e: &Expr) -> R {
        let Some((v, k)) = self.values_column(e) else {
            return self.refuse(t, "INSERT … SELECT cannot place the values for");
        };
        if let Expr::Cast { expr, .. } = e {
            // The cast was meant for the logical type; the value now is
            // ciphertext of the storage type.
            let keep = match expr.as_ref() {
                Expr::Identifier(i) => self.span_of(i.span),
                Expr::CompoundIdentifier(p) => {
                    match (
                        p.first().and_then(|a| self.span_of(a.span)),
                        p.last().and_then(|b| self.span_of(b.span)),
                    ) {
                        (Some(a), Some(b)) => Some(a.start..b.end),
                        _ => None,
                    }
                }
                _ => None,
            };
            match keep.and_then(|k| Some((self.cast_span(e, k.clone())?, k))) {
                Some((outer, keep)) => {
                    self.check_cast(t, &outer, false)?;
                    self.plan.edits.push(TextEdit {
                        span: self.abs(outer),
                        text: self.text[keep].to_owned(),
                    })
                }
                None => return self.refuse(t, "a cast pgveil cannot delimit around the source of"),
            }
        }
        self.values_column_into(t, &v, k)
    }

    /// Every value of column `k` of `v` encrypted for `t`.
    fn values_column_into(&mut self, t: &'p ProtectedColumn, v: &ValuesRel, k: usize) -> R {
        if !self.lone_source {
            return self.refuse(
                t,
                "a VALUES list or unnest(…) feeding a protected column must be the only relation of its SELECT, with no DISTINCT, GROUP BY or HAVING (a join or grouping could merge, repeat or drop its values); it feeds",
            );
        }
        let form = if v.arrays {
            LiteralForm::Array
        } else {
            // Typed (`::bytea`) so the VALUES column gets the storage type.
            LiteralForm::ListElement
        };
        for row in &v.rows {
            match row.get(k).cloned().unwrap_or(Elem::Other) {
                Elem::Literal(span, value) => {
                    self.add_literal(t, span, value, Comparison::Write, false, form)?
                }
                Elem::Param(n, cast) => {
                    self.add_param(t, n, cast, Comparison::Write, v.arrays, Site::Other)?
                }
                Elem::Null => {}
                Elem::Other if v.arrays => {
                    return self.refuse(
                        t,
                        "unnest(…) may only take array literals or parameters for",
                    )
                }
                Elem::Other => {
                    return self.refuse(
                        t,
                        "VALUES rows may only hold literals, parameters or NULL for",
                    )
                }
            }
        }
        self.plan.writes.insert(t.column.clone());
        Ok(())
    }

    /// `INSERT INTO t (…) SELECT * FROM <one VALUES or unnest relation>`:
    /// the relation's columns, in order, with no clause that could filter,
    /// combine or reorder them.
    fn placeable_wildcard(&self, s: &Select) -> Option<Arc<ValuesRel>> {
        let [SelectItem::Wildcard(_)] = s.projection.as_slice() else {
            return None;
        };
        if s.selection.is_some() || !Self::lone(s, self.scopes.last()) {
            return None;
        }
        let [rel] = self.scopes.last()?.as_slice() else {
            return None;
        };
        rel.values.clone()
    }

    /// At most one relation in FROM (no join), no DISTINCT, GROUP BY or
    /// HAVING.
    fn lone(s: &Select, scope: Option<&Vec<Rel>>) -> bool {
        scope.is_none_or(|r| r.len() <= 1)
            && s.having.is_none()
            && s.distinct.is_none()
            && matches!(&s.group_by, GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty())
    }

    // ----- writes -----

    fn write_value(&mut self, target: Option<&'p ProtectedColumn>, e: &Expr) -> R {
        self.write_value_as(target, e, LiteralForm::Value)
    }

    /// [`Self::write_value`] with the literal form: `ListElement` where the
    /// literal must carry the storage type (VALUES inside a set operation).
    fn write_value_as(
        &mut self,
        target: Option<&'p ProtectedColumn>,
        e: &Expr,
        form: LiteralForm,
    ) -> R {
        let Some(pc) = target else {
            if let Some(src) = self.direct(e)? {
                return self.refuse(
                    src,
                    "assigning to an unprotected column would copy ciphertext of",
                );
            }
            return self.expr(e);
        };
        self.plan.writes.insert(pc.column.clone());
        match self.operand(e)? {
            Operand::Literal(span, value) => {
                self.add_literal(pc, span, value, Comparison::Write, false, form)
            }
            Operand::Param(n, cast) => {
                self.add_param(pc, n, cast, Comparison::Write, false, Site::Other)
            }
            Operand::Null(span) => {
                let span = self.abs(span);
                self.plan.nulls.push(NullWrite {
                    span,
                    column: pc.column.clone(),
                });
                Ok(())
            }
            Operand::Default => Ok(()),
            Operand::Protected(src) if src.key == pc.key => {
                if src.column != pc.column {
                    self.plan.copies.push(ColumnCopy {
                        from: src.column.clone(),
                        to: pc.column.clone(),
                    });
                }
                Ok(())
            }
            Operand::Protected(src) => Err(Refusal::unsupported(
                Some(&pc.column),
                format!(
                    "protected column {} cannot be set from {}, which uses a different key",
                    pc.column, src.column
                ),
            )),
            Operand::Unprotected => self.refuse(pc, "a plaintext column's value cannot be assigned to"),
            Operand::Bad(why) => Err(Refusal::unsupported(
                Some(&pc.column),
                format!("the value for protected column {} is {why}", pc.column),
            )),
            Operand::Other => Err(Refusal::unsupported(
                Some(&pc.column),
                format!(
                    "the value for protected column {} is an expression pgveil cannot encrypt; send a literal or a parameter",
                    pc.column
                ),
            )),
        }
    }

    fn insert(&mut self, ins: &ast::Insert, nested: bool) -> R {
        let TableObject::TableName(name) = &ins.table else {
            return self.refuse_stmt("INSERT into a table function");
        };
        self.dml_target = true;
        let rel = self.rel_for(name, ins.table_alias.as_ref().map(|a| &a.alias));
        self.dml_target = false;
        let table = rel.table.clone();
        // PostgreSQL reads `a.b` in a target list as field `b` of column
        // `a` (and `a[1]` as an element): the column is the first part.
        let mut cols: Vec<String> = Vec::with_capacity(ins.columns.len());
        for c in &ins.columns {
            let (col, fields) = target_column(c);
            if col.is_empty() && rel.table.is_some() {
                return Err(Refusal::unsupported(
                    None,
                    format!("INSERT into {c}: a target column pgveil cannot read, on a table with protected columns"),
                ));
            }
            if fields {
                if let Some(pc) = self.protected_in(&rel, &col) {
                    return self.refuse(pc, "a field or element assignment cannot write into");
                }
            }
            cols.push(col);
        }
        // A column the table does not have: PostgreSQL would reject the
        // statement — and log its text, values included.
        if let Some(t) = &table {
            if let Some(order) = self
                .opts
                .column_order
                .as_ref()
                .and_then(|c| c.column_order(t))
            {
                if let Some(missing) = cols
                    .iter()
                    .find(|c| !order.iter().any(|o| o.as_str() == c.as_str()))
                {
                    return Err(Refusal {
                        sqlstate: "42703",
                        column: None,
                        reason: format!("column \"{missing}\" of relation {t} does not exist (pgveil checks it before sending the values)"),
                    });
                }
            }
        }
        let targets: Vec<Option<&'p ProtectedColumn>> = match &table {
            Some(t) => {
                let names: Vec<String> = if !cols.is_empty() {
                    cols.clone()
                } else if ins.source.is_none() {
                    Vec::new()
                } else {
                    match self.opts.column_order.as_ref().and_then(|c| c.column_order(t)) {
                        Some(order) => {
                            let after = match &ins.table_alias {
                                Some(a) => self.span_of(a.alias.span).map(|r| r.end),
                                None => self.span_of(name.span()).map(|r| r.end),
                            };
                            self.insert_column_list(after, &order, t)?;
                            order.iter().map(|i| i.as_str().to_owned()).collect()
                        }
                        None => {
                            return Err(Refusal::unsupported(
                                None,
                                format!(
                                    "INSERT into {t} without a column list: pgveil needs the column list to know which values to encrypt; list the columns"
                                ),
                            ))
                        }
                    }
                };
                names.iter().map(|c| self.protected_in(&rel, c)).collect()
            }
            None => Vec::new(),
        };
        if let Some(src) = &ins.source {
            match src.body.as_ref() {
                SetExpr::Values(v) if src.with.is_none() => {
                    self.scopes.push(Vec::new());
                    let r = (|| {
                        for row in &v.rows {
                            for (i, e) in row.content.iter().enumerate() {
                                self.write_value(targets.get(i).copied().flatten(), e)?;
                            }
                        }
                        Ok(())
                    })();
                    self.scopes.pop();
                    r?;
                }
                _ => self.query(src, Proj::Into(targets.clone()))?,
            }
        }
        if !ins.assignments.is_empty() {
            return self.refuse_stmt("INSERT … SET");
        }
        let mut scope = vec![rel.clone()];
        if let Some(OnInsert::OnConflict(oc)) = &ins.on {
            // The arbiter index's predicate: compared like a look-up (it
            // must match a partial index made through pgveil).
            if let Some(ast::ConflictTarget::Columns {
                predicate: Some(p), ..
            }) = &oc.conflict_target
            {
                self.scopes.push(vec![rel.clone()]);
                let r = self.expr(p);
                self.scopes.pop();
                r?;
            }
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                scope.push(Rel {
                    name: "excluded".into(),
                    schema: None,
                    table: table.clone(),
                    values: None,
                });
                self.scopes.push(scope.clone());
                let r = self
                    .assignments(&du.assignments, &rel)
                    .and_then(|_| match &du.selection {
                        Some(w) => self.expr(w),
                        None => Ok(()),
                    });
                self.scopes.pop();
                r?;
            }
        } else if ins.on.is_some() {
            return self.refuse_stmt("ON DUPLICATE KEY");
        }
        self.returning(ins.returning.as_deref(), vec![rel], nested)
    }

    fn assignments(&mut self, assignments: &[ast::Assignment], target: &Rel) -> R {
        for a in assignments {
            match &a.target {
                AssignmentTarget::ColumnName(n) => {
                    let (col, fields) = target_column(n);
                    if col.is_empty() && target.table.is_some() {
                        return Err(Refusal::unsupported(
                            None,
                            format!("SET {n}: a target column pgveil cannot read, on a table with protected columns"),
                        ));
                    }
                    let pc = self.protected_in(target, &col);
                    if let (Some(pc), true) = (pc, fields) {
                        return self.refuse(pc, "a field or element assignment cannot write into");
                    }
                    self.write_value(pc, &a.value)?;
                }
                AssignmentTarget::Tuple(names) => {
                    for n in names {
                        let (col, _) = target_column(n);
                        if let Some(pc) = self.protected_in(target, &col) {
                            return self.refuse(pc, "a multi-column SET (a, b) = … cannot assign");
                        }
                    }
                    self.expr(&a.value)?;
                }
            }
        }
        Ok(())
    }

    fn returning(&mut self, items: Option<&[SelectItem]>, scope: Vec<Rel>, nested: bool) -> R {
        let Some(items) = items else { return Ok(()) };
        self.scopes.push(scope);
        let proj = if nested { Proj::Nested } else { Proj::Top };
        let r = (|| {
            for (i, item) in items.iter().enumerate() {
                match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        let d = self.direct(e)?;
                        self.project(e, d, i, &proj)?;
                    }
                    _ => {
                        let cols: Vec<&'p ProtectedColumn> = self
                            .scopes
                            .last()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.table.as_ref())
                            .filter_map(|t| self.policy.table(t))
                            .flat_map(|t| t.columns())
                            .collect();
                        if nested {
                            if let Some(c) = cols.first() {
                                return self.refuse(
                                    c,
                                    "RETURNING * inside a CTE loses the table identity of",
                                );
                            }
                        }
                        for c in cols {
                            self.plan.reads.insert(c.column.clone());
                        }
                    }
                }
            }
            Ok(())
        })();
        self.scopes.pop();
        r
    }

    fn update(&mut self, u: &ast::Update, nested: bool) -> R {
        let mut rels = Vec::new();
        self.dml_target = true;
        let r = self.table_factor(&u.table.relation, &mut rels);
        self.dml_target = false;
        r?;
        if !u.table.joins.is_empty() {
            return self.refuse_stmt("UPDATE with JOIN");
        }
        let target = rels[0].clone();
        if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = &u.from
        {
            for twj in f {
                self.join_tree(twj, &mut rels)?;
            }
        }
        self.scopes.push(rels.clone());
        let r = (|| {
            self.assignments(&u.assignments, &target)?;
            if let Some(w) = &u.selection {
                self.expr(w)?;
            }
            Ok(())
        })();
        self.scopes.pop();
        r?;
        self.returning(u.returning.as_deref(), rels, nested)
    }

    fn delete(&mut self, d: &ast::Delete, nested: bool) -> R {
        let mut rels = Vec::new();
        let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
        for twj in f {
            if !twj.joins.is_empty() {
                return self.refuse_stmt("DELETE with JOIN");
            }
            self.dml_target = true;
            let r = self.table_factor(&twj.relation, &mut rels);
            self.dml_target = false;
            r?;
        }
        // The deleted rows' protected values: recorded.
        for t in rels.iter().filter_map(|r| r.table.as_ref()) {
            for c in self.policy.table(t).into_iter().flat_map(|t| t.columns()) {
                self.plan.deletes.insert(c.column.clone());
            }
        }
        for twj in d.using.iter().flatten() {
            self.join_tree(twj, &mut rels)?;
        }
        self.scopes.push(rels.clone());
        let r = match &d.selection {
            Some(w) => self.expr(w),
            None => Ok(()),
        };
        self.scopes.pop();
        r?;
        self.returning(d.returning.as_deref(), rels, nested)
    }

    fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> R {
        let (table, fields) = match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                let Some(table) = self.resolve_table(table_name) else {
                    return Ok(());
                };
                let tp = self.policy.table(&table);
                let names: Option<Vec<Ident>> = if columns.is_empty() {
                    let order = self
                        .opts
                        .column_order
                        .as_ref()
                        .and_then(|c| c.column_order(&table));
                    if let Some(order) = &order {
                        let after = self.span_of(table_name.span()).map(|r| r.end);
                        self.insert_column_list(after, order, &table)?;
                    }
                    order
                } else {
                    columns.iter().map(|c| ident(&norm(c))).collect()
                };
                let fields = names.map(|names| {
                    names
                        .into_iter()
                        .map(|n| CopyField {
                            target: tp.and_then(|t| t.column(&n)).map(target_of),
                            name: n,
                        })
                        .collect::<Vec<_>>()
                });
                if fields.is_none() {
                    // Unknown column order: every protected column counts.
                    for c in tp.into_iter().flat_map(|t| t.columns()) {
                        if to {
                            self.plan.reads.insert(c.column.clone());
                        } else {
                            self.plan.writes.insert(c.column.clone());
                        }
                    }
                }
                (table, fields)
            }
            CopySource::Query(q) => {
                self.copy_outputs = None;
                self.query(q, Proj::CopyOut)?;
                let outputs = self.copy_outputs.take().unwrap_or_default();
                let Some(first) = outputs.iter().flatten().next() else {
                    return Ok(());
                };
                let table = first.column.table_ref();
                let fields = outputs
                    .iter()
                    .map(|c| CopyField {
                        name: c.map_or_else(
                            || Ident::from_normalized("?column?".to_owned()).expect("valid"),
                            |c| c.column.column.clone(),
                        ),
                        target: c.map(target_of),
                    })
                    .collect();
                (table, Some(fields))
            }
        };
        self.plan.touches_protected = true;
        let direction = match (to, target) {
            (false, CopyTarget::Stdin) => CopyDirection::FromStdin,
            (true, CopyTarget::Stdout) => CopyDirection::ToStdout,
            _ => {
                return Err(Refusal::unsupported(
                    None,
                    format!("COPY {table} to or from a server file or program bypasses pgveil; use COPY … FROM STDIN / TO STDOUT"),
                ))
            }
        };
        let mut plan = CopyPlan {
            table: table.clone(),
            columns: fields,
            direction,
            format: CopyFormat::Text,
            delimiter: '\t',
            null: "\\N".into(),
            header: false,
            quote: '"',
            escape: '"',
        };
        let mut delimiter = None;
        let mut null = None;
        let mut escape = None;
        let mut binary = false;
        for o in options {
            match o {
                CopyOption::Format(f) => match norm(f).as_str() {
                    "text" => plan.format = CopyFormat::Text,
                    "csv" => plan.format = CopyFormat::Csv,
                    "binary" => binary = true,
                    _ => {
                        return Err(Refusal::unsupported(
                            None,
                            format!("COPY {table} with an unknown FORMAT is not supported by pgveil; use text, csv or binary"),
                        ))
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(*c),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => plan.header = *h,
                CopyOption::Quote(c) => plan.quote = *c,
                CopyOption::Escape(c) => escape = Some(*c),
                CopyOption::Freeze(_) => {}
                CopyOption::Encoding(e) => {
                    let e = e.to_ascii_uppercase().replace(['-', '_'], "");
                    if e != "UTF8" {
                        return Err(Refusal::unsupported(
                            None,
                            format!("COPY {table} with ENCODING other than UTF8 is not supported by pgveil (it splits fields byte by byte); convert the data to UTF-8"),
                        ));
                    }
                }
                CopyOption::ForceQuote(_)
                | CopyOption::ForceNotNull(_)
                | CopyOption::ForceNull(_) => {
                    return Err(Refusal::unsupported(
                        None,
                        format!("COPY {table} with FORCE_QUOTE, FORCE_NOT_NULL or FORCE_NULL is not supported by pgveil; drop the option"),
                    ))
                }
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Binary => binary = true,
                CopyLegacyOption::Csv(csv) => {
                    plan.format = CopyFormat::Csv;
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => plan.header = true,
                            CopyLegacyCsvOption::Quote(q) => plan.quote = *q,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(*e),
                            _ => {
                                return Err(Refusal::unsupported(
                                    None,
                                    format!("COPY {table} with FORCE QUOTE or FORCE NOT NULL is not supported by pgveil; drop the option"),
                                ))
                            }
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Header => plan.header = true,
                _ => return self.refuse_stmt("this COPY option"),
            }
        }
        if binary {
            // The server refuses DELIMITER, NULL, QUOTE, ESCAPE, HEADER and
            // CSV together with binary; the fields are length-prefixed.
            plan.format = CopyFormat::Binary;
        } else if plan.format == CopyFormat::Csv {
            plan.delimiter = delimiter.unwrap_or(',');
            plan.null = null.unwrap_or_default();
            plan.escape = escape.unwrap_or(plan.quote);
        } else {
            plan.delimiter = delimiter.unwrap_or('\t');
            plan.null = null.unwrap_or_else(|| "\\N".into());
        }
        if let Some(fields) = &plan.columns {
            for c in fields.iter().filter_map(|f| f.target.as_ref()) {
                if direction == CopyDirection::FromStdin {
                    self.plan.writes.insert(c.column.clone());
                } else {
                    self.plan.reads.insert(c.column.clone());
                }
            }
        }
        self.plan.copy = Some(plan);
        Ok(())
    }

    // ----- expressions -----

    /// `left = right` (`operator`: a plain `=`/`<>` a literal may be
    /// expanded behind) or `IS [NOT] DISTINCT FROM`.
    fn comparison(&mut self, left: &Expr, right: &Expr, negated: bool, operator: bool) -> R {
        let l = self.operand(left)?;
        let r = self.operand(right)?;
        // `col = ('x')` keeps one ciphertext: `(ANY(…))` would not parse.
        let form = if operator
            && matches!(l, Operand::Protected(_))
            && !matches!(right, Expr::Nested(_))
        {
            LiteralForm::EqRight
        } else {
            LiteralForm::Value
        };
        let (pc, other, other_expr) = match (&l, &r) {
            (Operand::Protected(a), Operand::Protected(b)) => {
                let (a, b) = (*a, *b);
                if !a.is_deterministic() {
                    return self.refuse(a, "equality is not possible on randomized");
                }
                if !b.is_deterministic() {
                    return self.refuse(b, "equality is not possible on randomized");
                }
                if a.key != b.key {
                    return Err(Refusal::unsupported(
                        Some(&a.column),
                        format!(
                            "{} and {} are encrypted with different keys and cannot be compared; give one the other's key in the policy",
                            a.column, b.column
                        ),
                    ));
                }
                self.plan.reads.insert(a.column.clone());
                self.plan.reads.insert(b.column.clone());
                return Ok(());
            }
            (Operand::Protected(a), _) => (*a, r, right),
            (_, Operand::Protected(b)) => (*b, l, left),
            _ => {
                self.expr(left)?;
                return self.expr(right);
            }
        };
        if !pc.is_deterministic() {
            if matches!(other, Operand::Null(_)) {
                return Ok(());
            }
            return Err(Refusal::unsupported(
                Some(&pc.column),
                format!(
                    "equality comparison is not possible on randomized protected column {}; make it mode = \"deterministic\" in the policy",
                    pc.column
                ),
            ));
        }
        self.plan.reads.insert(pc.column.clone());
        match other {
            Operand::Literal(span, value) => {
                self.add_literal(pc, span, value, Comparison::Equality, negated, form)
            }
            Operand::Param(n, cast) => {
                let site = if form == LiteralForm::EqRight {
                    Site::EqRight { negated }
                } else {
                    Site::Other
                };
                self.add_param(pc, n, cast, Comparison::Equality, false, site)
            }
            Operand::Null(_) => Ok(()),
            Operand::Unprotected => self.refuse(pc, "a plaintext column cannot be compared with"),
            Operand::Bad(why) => Err(Refusal::unsupported(
                Some(&pc.column),
                format!(
                    "the value compared with protected column {} is {why}",
                    pc.column
                ),
            )),
            _ => match other_expr {
                Expr::Subquery(q) => self.query(q, Proj::InSub(Some(pc))),
                _ => self.refuse(pc, "only a literal or a parameter can be compared with"),
            },
        }
    }

    fn expr(&mut self, e: &Expr) -> R {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match self.direct(e)? {
                Some(c) => self.refuse(c, "this use of"),
                None => {
                    self.whole_row(e)?;
                    self.bound_value_use(e)
                }
            },
            Expr::Nested(inner) => self.expr(inner),
            Expr::Value(v) => {
                self.account(v.span);
                Ok(())
            }
            Expr::TypedString(ts) => {
                self.account(ts.value.span);
                Ok(())
            }
            Expr::Interval(i) => self.expr(&i.value),
            // `(p.*)` / `(*)` inside an expression (a cast, an array, a NULL
            // test, a comparison of rows): a whole row of a protected table
            // as one value, its protected columns as ciphertext.
            Expr::Wildcard(_) => self.whole_row_wildcard(None),
            Expr::QualifiedWildcard(q, _) => self.whole_row_wildcard(Some(q)),
            Expr::IsNull(x) | Expr::IsNotNull(x) => match self.direct(x)? {
                Some(_) => Ok(()),
                None => self.expr(x),
            },
            Expr::BinaryOp { left, op, right } => {
                match op {
                    BinaryOperator::Eq => self.comparison(left, right, false, true),
                    BinaryOperator::NotEq => self.comparison(left, right, true, true),
                    BinaryOperator::And | BinaryOperator::Or => {
                        self.expr(left)?;
                        self.expr(right)
                    }
                    other => {
                        let what = match other {
                        BinaryOperator::Lt | BinaryOperator::LtEq | BinaryOperator::Gt | BinaryOperator::GtEq => {
                            "a range comparison (<, >, <=, >=) cannot be evaluated on ciphertext of"
                        }
                        BinaryOperator::StringConcat => "string concatenation (||) cannot be applied to",
                        BinaryOperator::PGRegexMatch
                        | BinaryOperator::PGRegexIMatch
                        | BinaryOperator::PGRegexNotMatch
                        | BinaryOperator::PGRegexNotIMatch
                        | BinaryOperator::PGLikeMatch
                        | BinaryOperator::PGILikeMatch
                        | BinaryOperator::PGNotLikeMatch
                        | BinaryOperator::PGNotILikeMatch => "pattern matching cannot be evaluated on ciphertext of",
                        _ => "operators cannot be applied to",
                    };
                        for side in [left, right] {
                            if let Some(c) = self.direct(side)? {
                                return self.refuse(c, what);
                            }
                        }
                        self.expr(left)?;
                        self.expr(right)
                    }
                }
            }
            Expr::IsDistinctFrom(a, b) => self.comparison(a, b, true, false),
            Expr::IsNotDistinctFrom(a, b) => self.comparison(a, b, false, false),
            Expr::UnaryOp { expr, .. } => {
                if let Some(c) = self.direct(expr)? {
                    return self.refuse(c, "operators cannot be applied to");
                }
                self.expr(expr)
            }
            Expr::In {
                expr,
                target,
                negated,
                ..
            } => self.in_expr(expr, target, *negated),
            Expr::AnyOp {
                left,
                compare_op,
                right,
                ..
            } => {
                if let Some(c) = self.direct(left)? {
                    if *compare_op != BinaryOperator::Eq {
                        return self.refuse(c, "only = ANY(...) can be evaluated on");
                    }
                    if !c.is_deterministic() {
                        return self.refuse(c, "equality comparison is not possible on randomized");
                    }
                    self.plan.reads.insert(c.column.clone());
                    let inner = match right.as_ref() {
                        Expr::Nested(i) => i.as_ref(),
                        other => other,
                    };
                    return match inner {
                        Expr::Array(arr) => {
                            for el in &arr.elem {
                                self.in_element(c, el, false)?;
                            }
                            Ok(())
                        }
                        _ => match self.operand(inner)? {
                            Operand::Param(n, cast) => self.add_param(c, n, cast, Comparison::Equality, true, Site::Other),
                            _ => self.refuse(c, "= ANY(...) needs a parameter or an ARRAY[...] of literals to compare with"),
                        },
                    };
                }
                if let Some(c) = self.direct(right)? {
                    return self.refuse(c, "ANY/ALL over");
                }
                self.expr(left)?;
                self.expr(right)
            }
            Expr::AllOp { left, right, .. } => {
                for side in [left, right] {
                    if let Some(c) = self.direct(side)? {
                        return self.refuse(c, "ALL(...) cannot be evaluated on");
                    }
                }
                self.expr(left)?;
                self.expr(right)
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                for side in [expr, low, high] {
                    if let Some(c) = self.direct(side)? {
                        return self.refuse(
                            c,
                            "BETWEEN (a range comparison) cannot be evaluated on ciphertext of",
                        );
                    }
                }
                self.expr(expr)?;
                self.expr(low)?;
                self.expr(high)
            }
            Expr::Like {
                expr,
                pattern,
                escape_char,
                ..
            }
            | Expr::ILike {
                expr,
                pattern,
                escape_char,
                ..
            }
            | Expr::SimilarTo {
                expr,
                pattern,
                escape_char,
                ..
            } => {
                for side in [expr, pattern] {
                    if let Some(c) = self.direct(side)? {
                        return self.refuse(
                            c,
                            "LIKE / ILIKE / SIMILAR TO cannot be evaluated on ciphertext of",
                        );
                    }
                }
                self.expr(expr)?;
                self.expr(pattern)?;
                match escape_char {
                    Some(e) => self.expr(e),
                    None => Ok(()),
                }
            }
            Expr::RLike { expr, pattern, .. } => {
                for side in [expr, pattern] {
                    if let Some(c) = self.direct(side)? {
                        return self.refuse(
                            c,
                            "LIKE / ILIKE / SIMILAR TO cannot be evaluated on ciphertext of",
                        );
                    }
                }
                self.expr(expr)?;
                self.expr(pattern)
            }
            Expr::Cast { expr, .. } => {
                if let Some(c) = self.direct(expr)? {
                    return self.refuse(c, "a cast cannot be applied to");
                }
                self.expr(expr)
            }
            Expr::Collate { expr, .. } => {
                if let Some(c) = self.direct(expr)? {
                    return self.refuse(c, "COLLATE cannot be applied to");
                }
                self.expr(expr)
            }
            Expr::Function(f) => self.function(f),
            Expr::Subquery(q) => self.query(q, Proj::Nested),
            Expr::Exists { subquery, .. } => self.query(subquery, Proj::Discard),
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let mut all: Vec<&Expr> = Vec::new();
                all.extend(operand.as_deref());
                for c in conditions {
                    all.push(&c.result);
                }
                all.extend(else_result.as_deref());
                for x in &all {
                    if let Some(c) = self.direct(x)? {
                        return self.refuse(c, "CASE cannot use");
                    }
                    self.expr(x)?;
                }
                for c in conditions {
                    if operand.is_some() {
                        if let Some(pc) = self.direct(&c.condition)? {
                            return self.refuse(pc, "CASE cannot use");
                        }
                    }
                    self.expr(&c.condition)?;
                }
                Ok(())
            }
            Expr::Tuple(v) => {
                for x in v {
                    if let Some(c) = self.direct(x)? {
                        return self.refuse(c, "a row constructor (a, b) cannot contain");
                    }
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::Array(a) => {
                for x in &a.elem {
                    if let Some(c) = self.direct(x)? {
                        return self.refuse(c, "an ARRAY[...] cannot contain");
                    }
                    self.expr(x)?;
                }
                Ok(())
            }
            other => self.fallback(other),
        }
    }

    fn in_element(&mut self, c: &'p ProtectedColumn, el: &Expr, negated: bool) -> R {
        // `IN (('x'))` keeps one ciphertext: `(('a', 'b'))` is a row.
        let (form, site) = if matches!(el, Expr::Nested(_)) {
            (LiteralForm::Value, Site::Other)
        } else {
            (LiteralForm::ListElement, Site::ListElement)
        };
        match self.operand(el)? {
            Operand::Literal(span, value) => {
                self.add_literal(c, span, value, Comparison::Equality, negated, form)
            }
            Operand::Param(n, cast) => {
                self.add_param(c, n, cast, Comparison::Equality, false, site)
            }
            Operand::Null(_) => Ok(()),
            Operand::Protected(o) if o.key == c.key && o.is_deterministic() => Ok(()),
            Operand::Bad(why) => Err(Refusal::unsupported(
                Some(&c.column),
                format!(
                    "a value compared with protected column {} is {why}",
                    c.column
                ),
            )),
            _ => self.refuse(c, "IN (...) may only list literals or parameters for"),
        }
    }

    fn in_expr(&mut self, lhs: &Expr, target: &InTarget, negated: bool) -> R {
        match self.direct(lhs)? {
            Some(c) => {
                if !c.is_deterministic() {
                    return self.refuse(
                        c,
                        "IN (...) is an equality comparison, not possible on randomized",
                    );
                }
                self.plan.reads.insert(c.column.clone());
                match target {
                    InTarget::List(list) => {
                        for el in list {
                            self.in_element(c, el, negated)?;
                        }
                        Ok(())
                    }
                    InTarget::Subquery(q) => self.query(q, Proj::InSub(Some(c))),
                    _ => self.refuse(c, "this IN form cannot be evaluated on"),
                }
            }
            None => {
                self.expr(lhs)?;
                match target {
                    InTarget::List(list) => {
                        for el in list {
                            if let Some(c) = self.direct(el)? {
                                return self
                                    .refuse(c, "a plaintext value cannot be compared (IN) with");
                            }
                            self.expr(el)?;
                        }
                        Ok(())
                    }
                    InTarget::Subquery(q) => self.query(q, Proj::InSub(None)),
                    other => self.fallback_text(&other.to_string()),
                }
            }
        }
    }

    fn function(&mut self, f: &ast::Function) -> R {
        let fname = object_parts(&f.name)
            .and_then(|p| p.last().cloned())
            .unwrap_or_default();
        let args: Vec<&FunctionArg> = match &f.args {
            FunctionArguments::List(l) => l.args.iter().collect(),
            FunctionArguments::Subquery(q) => {
                return self.query(q, Proj::Nested);
            }
            FunctionArguments::None => Vec::new(),
        };
        let distinct = matches!(&f.args, FunctionArguments::List(l) if matches!(l.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct)));
        for a in &args {
            let e = match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                }
                | FunctionArg::ExprNamed {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => e,
                FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(q))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::QualifiedWildcard(q),
                    ..
                }
                | FunctionArg::ExprNamed {
                    arg: FunctionArgExpr::QualifiedWildcard(q),
                    ..
                } => {
                    self.wildcard_arg(Some(q), &fname)?;
                    continue;
                }
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard)
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Wildcard,
                    ..
                }
                | FunctionArg::ExprNamed {
                    arg: FunctionArgExpr::Wildcard,
                    ..
                } => {
                    self.wildcard_arg(None, &fname)?;
                    continue;
                }
                _ => return self.fallback(*a),
            };
            if let Some(c) = self.direct(e)? {
                if fname == "count" && args.len() == 1 && f.over.is_none() {
                    if distinct && !c.is_deterministic() {
                        return self.refuse(c, "count(DISTINCT …) cannot compare randomized");
                    }
                    continue;
                }
                let what = if matches!(fname.as_str(), "min" | "max") {
                    format!("{fname}() would compare ciphertext of")
                } else {
                    format!("function {fname}() cannot be applied to")
                };
                return self.refuse(c, &what);
            }
            self.expr(e)?;
        }
        if let FunctionArguments::List(l) = &f.args {
            for clause in &l.clauses {
                match clause {
                    ast::FunctionArgumentClause::OrderBy(obs) => {
                        for o in obs {
                            if let Some(c) = self.direct(&o.expr)? {
                                return self
                                    .refuse(c, "an aggregate's ORDER BY would sort ciphertext of");
                            }
                            self.expr(&o.expr)?;
                        }
                    }
                    ast::FunctionArgumentClause::Limit(e)
                    | ast::FunctionArgumentClause::Where(e) => self.expr(e)?,
                    ast::FunctionArgumentClause::IgnoreOrRespectNulls(_) => {}
                    other => self.fallback(other)?,
                }
            }
        }
        if let Some(filter) = &f.filter {
            self.expr(filter)?;
        }
        for o in &f.within_group {
            if let Some(c) = self.direct(&o.expr)? {
                return self.refuse(c, "WITHIN GROUP (ORDER BY …) would sort ciphertext of");
            }
            self.expr(&o.expr)?;
        }
        if let Some(over) = &f.over {
            self.fallback_text(&over.to_string())?;
            if let ast::WindowType::WindowSpec(spec) = over {
                self.window_spec(spec)?;
            }
        }
        Ok(())
    }

    /// A construct the walker does not model: refuse if its text names a
    /// protected column (of a table in scope) or a protected table.
    /// The values of a window (`OVER (…)`): its text has passed the
    /// fallback check; its expressions are walked so their values are
    /// accounted for.
    fn window_spec(&mut self, spec: &ast::WindowSpec) -> R {
        for e in &spec.partition_by {
            self.expr(e)?;
        }
        for o in &spec.order_by {
            self.expr(&o.expr)?;
        }
        if let Some(frame) = &spec.window_frame {
            for bound in std::iter::once(&frame.start_bound).chain(frame.end_bound.as_ref()) {
                if let ast::WindowFrameBound::Preceding(Some(e))
                | ast::WindowFrameBound::Following(Some(e)) = bound
                {
                    self.expr(e)?;
                }
            }
        }
        Ok(())
    }

    fn fallback<T: Spanned + Display>(&self, node: &T) -> R {
        self.account(node.span());
        self.fallback_text(&node.to_string())
    }

    fn fallback_text(&self, text: &str) -> R {
        if self.policy.mentions_protected_table(text) {
            return Err(Refusal::unsupported(
                None,
                "a construct pgveil does not analyse references a protected table; simplify the statement".to_owned(),
            ));
        }
        let in_scope: Vec<&'p ProtectedColumn> = self
            .scopes
            .iter()
            .flatten()
            .filter_map(|r| r.table.as_ref())
            .filter_map(|t| self.policy.table(t))
            .flat_map(|t| t.columns())
            .collect();
        for t in lex::tokens(text) {
            let word = match t.kind {
                Kind::Word => text[t.start..t.end].to_ascii_lowercase(),
                Kind::QuotedIdent => text[t.start + 1..t.end - 1].replace("\"\"", "\""),
                _ => continue,
            };
            if let Some(c) = in_scope.iter().find(|c| c.column.column.as_str() == word) {
                return self.refuse(c, "an expression pgveil cannot analyse uses");
            }
        }
        Ok(())
    }
}

/// The constraint of a join, for the join types pgveil walks.
fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c) => Some(c),
        _ => None,
    }
}

/// Whether a FROM clause joins with `USING` or `NATURAL` (also inside
/// parenthesised joins): an unqualified `SELECT *` then merges the joined
/// columns into one, so its outputs are not the relations' columns in
/// order.
fn merges_join_columns(from: &[TableWithJoins]) -> bool {
    fn twj(t: &TableWithJoins) -> bool {
        factor(&t.relation)
            || t.joins.iter().any(|j| {
                factor(&j.relation)
                    || !matches!(
                        join_constraint(&j.join_operator),
                        Some(JoinConstraint::On(_) | JoinConstraint::None)
                    )
            })
    }
    fn factor(f: &TableFactor) -> bool {
        matches!(f, TableFactor::NestedJoin { table_with_joins, .. } if twj(table_with_joins))
    }
    from.iter().any(twj)
}

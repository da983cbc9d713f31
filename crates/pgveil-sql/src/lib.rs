//! Statement analysis for pgveil: from SQL text and the column policy, which
//! literals and `$n` parameters must be encrypted for which protected
//! column, and which statements must be refused. Pure: no I/O.
//!
//! # Flow
//! 1. [`Policy::mentions_protected_table`] pre-filter: no mention →
//!    [`Analysis::Passthrough`] without parsing (unless the session has SQL
//!    `PREPARE`d protected statements and the text says `EXECUTE`, …).
//! 2. Split on top-level `;` with our own lexer (exact byte spans), parse
//!    each statement with sqlparser (PostgreSQL dialect). A statement that
//!    does not parse while the text mentions a protected table is refused.
//! 3. Walk the AST: resolve tables (unqualified names via the search path,
//!    default `public`; aliases; CTE names shadow tables) and columns
//!    (qualified, or unqualified when exactly one protected table in scope
//!    has the column; ambiguity → `42702`).
//!
//! # Supported
//! * `INSERT` with a column list (one or many `VALUES` rows); without one
//!   only when a [`ColumnOrder`] catalog is supplied; `DEFAULT`; `NULL`
//!   (recorded in [`StatementPlan::nulls`], never encrypted); `ON CONFLICT
//!   … DO UPDATE SET col = EXCLUDED.col | literal | $n`; `RETURNING`.
//! * `UPDATE … SET col = literal | $n | NULL | DEFAULT | same-key column
//!   … [FROM …] WHERE …`; `DELETE … [USING …] WHERE …`.
//! * `INSERT … SELECT` when every protected target's source is a column
//!   encrypted with the same key ([`StatementPlan::copies`]).
//! * Predicates on deterministic columns: `col = lit|$n`, `lit = col`,
//!   `<>`, `IS [NOT] DISTINCT FROM`, `IN (lit, $n, …)`, `IN (SELECT same-key
//!   col …)`, `= ANY($n)` (array parameter), `= ANY(ARRAY[lit, …])`,
//!   `a.col = b.col` under one key, `JOIN … USING (col)`; `IS [NOT] NULL` on
//!   any protected column; `GROUP BY`, `DISTINCT`, `count(DISTINCT col)` on
//!   deterministic columns; `count(col)` on any.
//! * Literals: `'…'` (with `''`), `E'…'` (simple backslash escapes),
//!   numbers (with a sign), booleans. A literal with an explicit cast
//!   (`'1990-01-01'::date`, `CAST('…' AS date)`) in a protected position
//!   gets a span covering the whole cast: the proxy replaces it with the
//!   bare ciphertext literal (the storage column is `text`/`bytea`, so the
//!   cast to the logical type must go).
//! * `COPY table [(cols)] FROM STDIN | TO STDOUT` in text or CSV:
//!   [`CopyPlan`].
//! * SQL `PREPARE name AS stmt` / `EXECUTE name (args)` / `DEALLOCATE` /
//!   `DISCARD ALL`: [`PreparedOp`], bound through [`PreparedStatements`].
//! * `EXPLAIN stmt` (analysed like `stmt`: `EXPLAIN ANALYZE` executes it),
//!   `DECLARE … CURSOR FOR select`, DDL and transaction control.
//!
//! # Refused (fail closed; SQLSTATE `0A000` unless noted)
//! Functions, operators, casts, `||`, `COLLATE`, `CASE` over a protected
//! column (except `count`, `IS NULL`, equality as above); `LIKE`/`ILIKE`/
//! `~`/`SIMILAR TO`; `<`, `>`, `BETWEEN`; `ORDER BY` (also by ordinal or
//! alias) and `min`/`max`; equality, `IN`, `GROUP BY`, `DISTINCT` on a
//! randomized column; comparing a protected column with a plaintext column,
//! an expression or a column under another key; protected columns projected
//! through subqueries, CTEs, `UNION`, `COPY (query)` or `CREATE VIEW/TABLE AS`
//! (the result would carry no table OID); `INSERT … SELECT`/`UPDATE … SET`
//! from a non-provable source; `INSERT` without a column list and no
//! catalog; `MERGE`, `CALL`, `NATURAL JOIN`, statements of other kinds
//! naming a protected table, unparsable statements naming one (including
//! `DO $$…$$`); binary `COPY`, `COPY` to/from files or programs; literals in
//! protected positions in forms pgveil does not rewrite (dollar-quoted,
//! `U&''`, `\x`/`\u` escapes, typed `date '…'`, string continuation);
//! casts on parameters in protected positions; `PREPARE` with declared
//! types for protected parameters; a parameter used for columns under two
//! keys; ambiguous unqualified columns (`42702`).
//! Reasons name the column and say what to do instead; they never contain
//! a literal value.
//!
//! # Not analysed here
//! Views, rules, triggers and functions reaching protected tables under
//! other names (the proxy sees those via the catalog / RowDescription);
//! column `DEFAULT` expressions in DDL; a parameter used both for a
//! protected and an unprotected column.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod analyze;
mod lex;
mod plan;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use pgveil_policy::{ColumnRef, Ident, Policy, QualifiedTable};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use plan::{
    Analysis, ColumnCopy, Comparison, CopyDirection, CopyField, CopyFormat, CopyPlan, ExecuteArg,
    LiteralForm, LiteralTarget, NullWrite, ParamSite, ParamTarget, Plan, PreparedOp,
    PreparedStatements, StatementKind, StatementPlan, Target, TextEdit,
};

/// SQLSTATE `feature_not_supported`.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// Why pgveil refuses a statement. Safe to show a client: the reason names
/// tables and columns, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pgveil: {reason}")]
pub struct Refusal {
    /// The SQLSTATE to report.
    pub sqlstate: &'static str,
    /// The protected column involved, if one is.
    pub column: Option<ColumnRef>,
    /// What is wrong and what to do instead.
    pub reason: String,
}

/// The crate's error type.
pub type SqlError = Refusal;

impl Refusal {
    pub(crate) fn new(sqlstate: &'static str, column: Option<&ColumnRef>, reason: String) -> Self {
        Refusal {
            sqlstate,
            column: column.cloned(),
            reason,
        }
    }

    pub(crate) fn unsupported(column: Option<&ColumnRef>, reason: String) -> Self {
        Self::new(FEATURE_NOT_SUPPORTED, column, reason)
    }

    pub(crate) fn with_hint(mut self, hint: &str) -> Self {
        self.reason.push_str("; ");
        self.reason.push_str(hint);
        self
    }
}

/// The catalog's column order of a table (`pg_attribute` by `attnum`,
/// dropped columns excluded), for `INSERT` without a column list and
/// `COPY` without one.
pub trait ColumnOrder: Send + Sync {
    /// The columns of `table` in order, or `None` if unknown.
    fn column_order(&self, table: &QualifiedTable) -> Option<Vec<Ident>>;
}

/// Analysis settings.
#[derive(Clone)]
pub struct AnalyzeOptions {
    /// Schemas for unqualified table names, in order (default `public`),
    /// used only when [`AnalyzeOptions::relation_schemas`] is unknown.
    pub search_path: Vec<Ident>,
    /// Column order lookups, if the proxy has the catalog.
    pub column_order: Option<Arc<dyn ColumnOrder>>,
    /// Relations that reach protected data under another name (views over
    /// protected tables, inheritance children and partitions) or protected
    /// tables that no longer match the policy: any statement naming one is
    /// refused.
    pub dependent_views: Arc<DependentViews>,
    /// For each policy table name, the schemas in which the database has a
    /// relation of that name (from the catalog). With it, an unqualified
    /// name is resolved without knowing the session's `search_path`: it is
    /// the protected table when that is the only relation of that name, and
    /// refused as ambiguous when there are several.
    pub relation_schemas: Option<Arc<HashMap<String, Vec<String>>>>,
}

/// Why a relation in [`DependentViews`] is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// A view (or materialized view) reading protected tables.
    View,
    /// An inheritance child or partition of a protected table.
    Child(QualifiedTable),
    /// A protected table lacking a policy column (renamed or dropped).
    MissingColumn(Ident),
}

/// Relations statements may not name (see [`AnalyzeOptions::dependent_views`]),
/// with a pre-filter for their names.
#[derive(Debug, Default)]
pub struct DependentViews {
    views: Vec<(QualifiedTable, Guarded)>,
    scanner: Option<aho_corasick::AhoCorasick>,
}

impl DependentViews {
    /// Views over protected tables, and a case-insensitive scanner for
    /// their names.
    pub fn new(views: Vec<QualifiedTable>) -> Self {
        Self::with_reasons(views.into_iter().map(|v| (v, Guarded::View)).collect())
    }

    /// Relations with the reason each is refused.
    pub fn with_reasons(views: Vec<(QualifiedTable, Guarded)>) -> Self {
        let scanner = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(views.iter().map(|v| v.0.table.as_str()))
            .ok()
            .filter(|_| !views.is_empty());
        DependentViews { views, scanner }
    }

    /// No relation is refused.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// The relations and why each is refused.
    pub fn iter(&self) -> impl Iterator<Item = &(QualifiedTable, Guarded)> {
        self.views.iter()
    }

    /// Whether `sql` may name one of the relations (text match, like the
    /// policy's own pre-filter).
    fn mentioned(&self, sql: &str) -> bool {
        match &self.scanner {
            Some(s) => s.is_match(sql),
            // Building the scanner failed: assume every statement may.
            None => !self.views.is_empty(),
        }
    }
}

impl AnalyzeOptions {
    /// Whether `sql` may name a dependent view.
    fn mentions_view(&self, sql: &str) -> bool {
        self.dependent_views.mentioned(sql)
    }
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            search_path: vec![
                Ident::from_normalized(pgveil_policy::ident::DEFAULT_SCHEMA).expect("valid")
            ],
            column_order: None,
            dependent_views: Arc::new(DependentViews::default()),
            relation_schemas: None,
        }
    }
}

impl fmt::Debug for AnalyzeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnalyzeOptions")
            .field("search_path", &self.search_path)
            .field("column_order", &self.column_order.is_some())
            .finish()
    }
}

/// Analyse a query string (one or more `;`-separated statements) with the
/// default options.
pub fn analyze(sql: &str, policy: &Policy) -> Result<Analysis, Refusal> {
    analyze_with(sql, policy, &AnalyzeOptions::default(), None)
}

/// Words that make a statement session-dependent when the session has SQL
/// prepared statements registered.
const SESSION_WORDS: [&str; 4] = ["execute", "prepare", "deallocate", "discard"];

fn mentions_session_word(sql: &str) -> bool {
    static WORDS: WordScanner = WordScanner::new(&SESSION_WORDS);
    WORDS.matches(sql)
}

/// Analyse with options and, if the session has any, its SQL-level prepared
/// statements (they make `EXECUTE name (…)` relevant although its text names
/// no protected table).
pub fn analyze_with(
    sql: &str,
    policy: &Policy,
    opts: &AnalyzeOptions,
    session: Option<&PreparedStatements>,
) -> Result<Analysis, Refusal> {
    let mentions = policy.mentions_protected_table(sql)
        || opts.mentions_view(sql)
        || lex::has_unicode_ident(sql)
        || escaped_mention(sql, policy);
    // Every EXECUTE/PREPARE/DEALLOCATE/DISCARD is analysed: the session
    // checks the names it uses against the ones it prepared.
    let _ = session;
    let session_relevant = mentions_session_word(sql);
    // PREPARE of a protected statement always mentions its table; but a
    // re-PREPARE under a registered name must be seen too (session_relevant).
    if !mentions && !session_relevant {
        return Ok(Analysis::Passthrough);
    }
    plan(sql, policy, opts).map(|p| Analysis::Planned(Arc::new(p)))
}

/// Whether an escaped string (`E'…'`, `U&'…'`) in `sql` spells a protected
/// table's name once decoded.
fn escaped_mention(sql: &str, policy: &Policy) -> bool {
    match lex::decoded_escaped_strings(sql) {
        Some(d) => !d.is_empty() && policy.mentions_protected_table(&d),
        None => true,
    }
}

fn plan(sql: &str, policy: &Policy, opts: &AnalyzeOptions) -> Result<Plan, Refusal> {
    let mut statements = Vec::new();
    for span in lex::split_statements(sql) {
        let text = &sql[span.clone()];
        if escaped_mention(text, policy) && !policy.mentions_protected_table(text) {
            return Err(Refusal::unsupported(
                None,
                "a string with escapes spells a protected table's name (in a DO block or function body pgveil cannot see into); write the name plainly".to_owned(),
            ));
        }
        if lex::has_unicode_ident(text) {
            return Err(Refusal::unsupported(
                None,
                "U&\"…\" identifiers are refused: Unicode escapes can spell a protected table or column under a name pgveil cannot match; write the identifier plainly".to_owned(),
            ));
        }
        let parsed = Parser::parse_sql(&PostgreSqlDialect {}, text);
        let stmt = match parsed {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(v) if v.is_empty() => continue,
            _ => {
                if policy.mentions_protected_table(text) || opts.mentions_view(text) {
                    let tables: Vec<String> = policy
                        .tables()
                        .map(|t| t.table().to_string())
                        .filter(|t| {
                            let name = t.rsplit('.').next().unwrap_or(t).to_ascii_lowercase();
                            text.to_ascii_lowercase().contains(&name)
                        })
                        .collect();
                    return Err(Refusal::unsupported(
                        None,
                        format!(
                            "pgveil cannot parse a statement that may reference protected tables ({}); it refuses rather than risk sending plaintext",
                            if tables.is_empty() { "via a view".to_owned() } else { tables.join(", ") }
                        ),
                    ));
                }
                let mut p = StatementPlan::new(span, StatementKind::Other);
                if mentions_session_word(text) {
                    p.prepared = Some(PreparedOp::Unparsed);
                }
                statements.push(p);
                continue;
            }
        };
        let mut w = analyze::Walker::new(policy, opts, text, span.start);
        w.statement(&stmt)?;
        if let Some(r) = w.ambiguous.take() {
            return Err(r);
        }
        w.check_param_uses()?;
        // One scan of the statement's tokens for the coverage check and the
        // highest parameter number.
        let tokens = lex::tokens(text);
        w.check_coverage(&tokens)?;
        let referenced = w.referenced.take();
        let mut p = w.plan;
        p.settle(referenced);
        p.fingerprint = lex::fingerprint_tokens(text, &tokens).into();
        p.literals.sort_by_key(|l| l.span.start);
        p.max_param = tokens
            .iter()
            .filter(|t| t.kind == lex::Kind::Param)
            .filter_map(|t| text[t.start + 1..t.end].parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        statements.push(p);
    }
    Ok(Plan { statements })
}

/// Whether `sql` has a backslash inside a plain `'…'` string (read
/// differently when `standard_conforming_strings` is off).
pub fn has_backslash_in_plain_string(sql: &str) -> bool {
    memchr::memchr(b'\\', sql.as_bytes()).is_some()
        && lex::tokens(sql).iter().any(|t| {
            matches!(t.kind, lex::Kind::String | lex::Kind::Unterminated)
                && sql.as_bytes()[t.start] == b'\''
                && sql[t.start..t.end].contains('\\')
        })
}

/// The value of every string literal of `sql` (`'…'`, `E'…'`, `$tag$…$tag$`
/// and the other prefixed forms), in text order, as pgveil's scanner reads
/// it (`None` for forms it does not decode): for parity tests against
/// PostgreSQL's own scanner.
pub fn string_literal_values(sql: &str) -> Vec<Option<String>> {
    let tokens = lex::tokens(sql);
    let mut previous_word = "";
    let mut strings = Vec::new();
    for t in &tokens {
        match t.kind {
            lex::Kind::Space | lex::Kind::Comment => continue,
            // `U&'…' UESCAPE '!'`: the escape character is part of the
            // literal before it, not a literal of its own.
            lex::Kind::String if previous_word.eq_ignore_ascii_case("uescape") => {}
            lex::Kind::String | lex::Kind::Dollar => strings.push(*t),
            _ => {}
        }
        previous_word = if t.kind == lex::Kind::Word {
            &sql[t.start..t.end]
        } else {
            ""
        };
    }
    strings
        .iter()
        .map(|t| {
            let text = &sql[t.start..t.end];
            if t.kind == lex::Kind::Dollar {
                let tag = text[1..].find('$').map(|i| i + 2)?;
                text.get(tag..text.len().checked_sub(tag)?)
                    .map(str::to_owned)
            } else {
                lex::decode_string(text)
            }
        })
        .collect()
}

/// How many non-empty statements the query string `sql` has (split on
/// top-level `;` as PostgreSQL's scanner would).
pub fn statement_count(sql: &str) -> usize {
    lex::split_statements(sql).len()
}

/// Whether PostgreSQL could split `sql` into different tokens than pgveil
/// does, depending on settings pgveil cannot be sure of at the moment the
/// server reads the text:
/// * `standard_conforming_strings = off` makes a backslash in a plain
///   `'…'` string an escape: the boundaries move only where such an escape
///   would swallow a quote (`'a\'`, `'\''`);
/// * client encodings with ASCII trail bytes (GBK, SJIS, BIG5, …) can make
///   a backslash that follows a non-ASCII byte part of a character: the
///   boundaries move where that backslash escaped a quote or a backslash.
///
/// Elsewhere both readings give the same tokens (values may differ, but
/// pgveil replaces every protected value with its own literal).
pub fn reading_may_differ(sql: &str) -> bool {
    let b = sql.as_bytes();
    if memchr::memchr(b'\\', b).is_none() {
        return false;
    }
    let encoding = b
        .windows(3)
        .any(|w| w[0] >= 0x80 && w[1] == b'\\' && matches!(w[2], b'\'' | b'\\'));
    if encoding {
        return true;
    }
    lex::tokens(sql).iter().any(|t| {
        if !matches!(t.kind, lex::Kind::String | lex::Kind::Unterminated) || b[t.start] != b'\'' {
            return false;
        }
        // The token as pgveil read it (standard strings), then as the
        // server would with backslash escapes.
        let body = &b[t.start + 1..t.end];
        let mut i = 0;
        while i < body.len() {
            if body[i] == b'\\' {
                if body.get(i + 1) == Some(&b'\'') {
                    return true;
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        false
    })
}

/// Whether `sql` may change a setting that decides how PostgreSQL reads
/// statement text (`standard_conforming_strings`, `client_encoding`,
/// `SET NAMES`, `set_config`, `RESET`, `DISCARD`): until the server has
/// answered it, pgveil cannot know the session's reading.
pub fn mentions_text_setting(sql: &str) -> bool {
    static WORDS: WordScanner = WordScanner::new(&[
        "standard_conforming_strings",
        "client_encoding",
        "names",
        "set_config",
        "reset",
        "discard",
    ]);
    WORDS.matches(sql)
}

/// A case-insensitive scan for any of a fixed set of words, built on first
/// use; if it cannot be built, everything matches (the callers then take
/// the cautious path).
struct WordScanner {
    words: &'static [&'static str],
    scanner: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
}

impl WordScanner {
    const fn new(words: &'static [&'static str]) -> Self {
        WordScanner {
            words,
            scanner: std::sync::OnceLock::new(),
        }
    }

    fn matches(&self, text: &str) -> bool {
        let scanner = self.scanner.get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(self.words)
                .ok()
        });
        scanner.as_ref().is_none_or(|s| s.is_match(text))
    }
}

/// Whether `sql` may change the session's `TimeZone` (`SET timezone`,
/// `SET TIME ZONE`, `set_config`, `RESET`, `DISCARD`): until the server has
/// answered it, pgveil cannot know how a `timestamptz` without an offset
/// reads, and canonicalises as for an unknown zone (an explicit offset is
/// then required).
pub fn mentions_timezone_setting(sql: &str) -> bool {
    static WORDS: WordScanner = WordScanner::new(&["zone", "set_config", "reset", "discard"]);
    WORDS.matches(sql)
}

/// The statement with every literal (strings, numbers, dollar-quoted text)
/// replaced by `?`, parameters kept as `$n`, comments dropped and white
/// space collapsed: safe for logs. Works on any text, parsable or not.
pub fn fingerprint(sql: &str) -> String {
    lex::fingerprint(sql)
}

/// Cached analysis results by statement text.
type PlanCache = HashMap<Box<str>, Result<Arc<Plan>, Refusal>>;

/// Caches plans per statement text for a policy. Plans are `Arc`s: cheap to
/// clone and to keep per prepared-statement name. Texts that carry values of
/// protected columns, and refused texts, are never cached (they are PHI).
pub struct Analyzer {
    policy: Arc<Policy>,
    opts: AnalyzeOptions,
    cache: Mutex<PlanCache>,
    capacity: usize,
}

impl fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Analyzer")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Analyzer {
    /// An analyser with default options and a 10 000-entry cache.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self::with_options(policy, AnalyzeOptions::default(), 10_000)
    }

    /// An analyser with options and a cache capacity (0 disables caching).
    pub fn with_options(policy: Arc<Policy>, opts: AnalyzeOptions, capacity: usize) -> Self {
        Analyzer {
            policy,
            opts,
            cache: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Analyse `sql`; `session` as in [`analyze_with`]. Plans and refusals
    /// are cached by text (they do not depend on the session: `EXECUTE` is
    /// bound later by [`PreparedStatements::bind_execute`]).
    pub fn analyze(
        &self,
        sql: &str,
        session: Option<&PreparedStatements>,
    ) -> Result<Analysis, Refusal> {
        self.analyze_session(sql, session.is_some_and(|s| !s.is_empty()))
    }

    /// [`Analyzer::analyze`] for a session that has (`prepared`) or has not
    /// protected prepared statements of any kind: with them, `EXECUTE`,
    /// `PREPARE`, `DEALLOCATE` and `DISCARD` are analysed although their
    /// text names no protected table.
    pub fn analyze_session(&self, sql: &str, prepared: bool) -> Result<Analysis, Refusal> {
        let mentions = self.policy.mentions_protected_table(sql)
            || self.opts.mentions_view(sql)
            || lex::has_unicode_ident(sql)
            || escaped_mention(sql, &self.policy);
        let _ = prepared;
        let session_relevant = mentions_session_word(sql);
        if !mentions && !session_relevant {
            return Ok(Analysis::Passthrough);
        }
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(sql).cloned()) {
            return hit.map(Analysis::Planned);
        }
        let result = plan(sql, &self.policy, &self.opts).map(Arc::new);
        // Only texts that hold no protected value are kept: a text with a
        // literal for a protected column is PHI (and all but never repeats),
        // and a refused text may hold one where the walk could not tell.
        let cacheable = matches!(&result, Ok(p) if !p.holds_protected_values());
        if self.capacity > 0 && cacheable {
            if let Ok(mut c) = self.cache.lock() {
                if c.len() >= self.capacity {
                    // Crude but bounded: statement texts are few in practice.
                    c.clear();
                }
                c.insert(sql.into(), result.clone());
            }
        }
        result.map(Analysis::Planned)
    }

    /// Whether the text of `sql` names a protected table or a view over
    /// one (the pre-filter), whatever its parse says.
    pub fn mentions_protected(&self, sql: &str) -> bool {
        self.policy.mentions_protected_table(sql)
            || self.opts.mentions_view(sql)
            || lex::has_unicode_ident(sql)
    }

    /// Drop cached plans (after DDL or a policy reload).
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }
}

#[cfg(test)]
mod tests;

//! PostgreSQL's namespaces of prepared statements and portals, as far as
//! they hold protected statements, as the server confirms them.
//!
//! PostgreSQL has one namespace of prepared statements, shared by the
//! protocol (`Parse`/`Close`) and SQL (`PREPARE`/`DEALLOCATE`/`DISCARD
//! ALL`), and one of portals (`Bind`/`Close`). The registry keeps the state
//! the server has confirmed, plus the changes of messages sent but not yet
//! answered, in the order they were sent. The server answers in that order,
//! so changes are resolved strictly from the front: applied to the
//! confirmed state when their message succeeds, dropped when it fails or is
//! skipped (everything up to `Sync` after an error in the extended
//! protocol; the rest of a simple query string after a failed statement).
//!
//! The client side reads the *expected* state: the confirmed one with every
//! pending change applied. Within one batch that is what the server will
//! have when it gets there, since a failure makes it skip the rest of the
//! batch. Across a `Sync` it is a guess; [`Registry::unsettled`] says when a
//! wrong guess could send a value to a protected statement unencrypted, so
//! the session can refuse instead of guessing.
//!
//! See <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY>.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use pgveil_sql::{PreparedOp, StatementPlan};

/// PostgreSQL keeps statement and portal names in `NAMEDATALEN` (64) byte
/// keys: longer names are cut to 63 bytes, so `a…(70)` and its 63-byte
/// prefix are one name.
const NAME_MAX: usize = 63;

fn key(name: &[u8]) -> &[u8] {
    &name[..name.len().min(NAME_MAX)]
}

fn key_bytes(name: Bytes) -> Bytes {
    if name.len() > NAME_MAX {
        name.slice(..NAME_MAX)
    } else {
        name
    }
}

/// What a statement name holds. Every name the session prepared through
/// pgveil is known, so a name pgveil never saw (a `PREPARE` run inside
/// dynamic SQL) can be refused instead of assumed harmless.
#[derive(Debug)]
pub(crate) enum Entry<S> {
    /// A statement on no protected table.
    Plain,
    /// Made by a protocol `Parse`: what the session keeps of it.
    Protocol(S),
    /// Made by SQL `PREPARE`: its plan, for binding `EXECUTE`.
    Sql(Arc<StatementPlan>),
}

impl<S> Entry<S> {
    fn protected(&self) -> bool {
        !matches!(self, Entry::Plain)
    }
}

/// One change sent to the server and not yet answered.
#[derive(Debug)]
enum Op<S, P> {
    /// A name now holds this statement, or (`None`) none (`Close`,
    /// `DEALLOCATE`).
    Statement(Bytes, Option<Entry<S>>),
    /// `DEALLOCATE ALL` / `DISCARD ALL`: every named statement (the unnamed
    /// one stays).
    ClearStatements,
    /// A portal now holds this (or, `None`, no protected) statement.
    Portal(Bytes, Option<P>),
}

impl<S, P> Op<S, P> {
    /// Whether the op decides what statement `name` holds, and the
    /// resulting entry.
    fn statement(&self, name: &[u8]) -> Option<Option<&Entry<S>>> {
        match self {
            Op::Statement(n, e) if n == name => Some(e.as_ref()),
            Op::ClearStatements if !name.is_empty() => Some(None),
            _ => None,
        }
    }

    /// Whether the op can change what a statement name holds.
    fn on_statements(&self) -> bool {
        matches!(self, Op::Statement(..) | Op::ClearStatements)
    }

    fn portal(&self, name: &[u8]) -> Option<Option<&P>> {
        match self {
            Op::Portal(n, p) if n == name => Some(p.as_ref()),
            _ => None,
        }
    }
}

/// The registry: `S` is what pgveil keeps of a protocol statement, `P` of a
/// portal (the session's types; generic so the registry is tested alone).
#[derive(Debug)]
pub(crate) struct Registry<S, P> {
    statements: HashMap<Bytes, Entry<S>>,
    portals: HashMap<Bytes, P>,
    /// Unanswered changes, oldest first.
    pending: VecDeque<Op<S, P>>,
    /// Protected entries in `statements`.
    protected: usize,
    /// How many of `pending` were added since [`Registry::take_fresh`].
    fresh: usize,
    /// How many of `pending` change statement names: when none do (a
    /// pipeline of `Bind`s to one prepared statement), statement look-ups
    /// skip the scan of `pending` (which would make a pipeline of n binds
    /// cost n²).
    statement_ops: usize,
}

impl<S, P> Default for Registry<S, P> {
    fn default() -> Self {
        Registry {
            statements: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            protected: 0,
            fresh: 0,
            statement_ops: 0,
        }
    }
}

impl<S, P> Registry<S, P> {
    /// The protected statement `name` is expected to hold.
    pub fn entry(&self, name: &[u8]) -> Option<&Entry<S>> {
        let name = key(name);
        if self.statement_ops == 0 {
            return self.statements.get(name);
        }
        match self.pending.iter().rev().find_map(|op| op.statement(name)) {
            Some(e) => e,
            None => self.statements.get(name),
        }
    }

    /// Whether any unanswered change can alter what a statement name holds.
    pub fn statement_changes_pending(&self) -> bool {
        self.statement_ops > 0
    }

    /// The protocol statement `name` is expected to hold.
    pub fn statement(&self, name: &[u8]) -> Option<&S> {
        match self.entry(name) {
            Some(Entry::Protocol(s)) => Some(s),
            _ => None,
        }
    }

    /// The same, to mark it described (not an op: describing changes
    /// nothing on the server).
    pub fn statement_mut(&mut self, name: &[u8]) -> Option<&mut S> {
        let name = key(name);
        let at = if self.statement_ops == 0 {
            None
        } else {
            self.pending
                .iter()
                .rposition(|op| op.statement(name).is_some())
        };
        let entry = match at {
            Some(i) => match &mut self.pending[i] {
                Op::Statement(_, e) => e.as_mut(),
                _ => None,
            },
            None => self.statements.get_mut(name),
        };
        match entry {
            Some(Entry::Protocol(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether any protected statement is expected, in either namespace.
    pub fn has_statements(&self) -> bool {
        self.protected > 0
            || self.statement_ops > 0
                && self
                    .pending
                    .iter()
                    .any(|op| matches!(op, Op::Statement(_, Some(e)) if e.protected()))
    }

    /// Expected number of statements (approximate while changes are
    /// pending; for the tracking limit).
    pub fn statement_count(&self) -> usize {
        self.statements.len() + self.pending.len()
    }

    /// The SQL-level plans expected (tests: analysing with a session).
    #[cfg(test)]
    pub fn sql(&self) -> pgveil_sql::PreparedStatements {
        let mut names: Vec<&Bytes> = self.statements.keys().collect();
        for op in &self.pending {
            if let Op::Statement(n, _) = op {
                names.push(n);
            }
        }
        let mut out = pgveil_sql::PreparedStatements::new();
        for n in names {
            if let (Some(Entry::Sql(p)), Ok(s)) = (self.entry(n), std::str::from_utf8(n)) {
                out.set(s, Some(Arc::clone(p)));
            }
        }
        out
    }

    /// A `Parse` of `name`: its protected info, or `None` when the new
    /// statement is not protected.
    pub fn parse(&mut self, name: Bytes, info: Option<S>) {
        let entry = info.map_or(Entry::Plain, Entry::Protocol);
        self.push(Op::Statement(key_bytes(name), Some(entry)));
    }

    /// A `Close` of statement `name`, or `DEALLOCATE name`.
    pub fn close_statement(&mut self, name: &[u8]) {
        self.push(Op::Statement(Bytes::copy_from_slice(key(name)), None));
    }

    /// The effect of one SQL statement (`PREPARE`, `DEALLOCATE [ALL]`,
    /// `DISCARD ALL`) when it succeeds.
    pub fn apply_sql(&mut self, plan: &StatementPlan) {
        match &plan.prepared {
            Some(PreparedOp::Prepare { name, plan }) => {
                let entry = if plan.touches_protected {
                    Entry::Sql(Arc::clone(plan))
                } else {
                    Entry::Plain
                };
                self.push(Op::Statement(
                    Bytes::copy_from_slice(key(name.as_bytes())),
                    Some(entry),
                ));
            }
            Some(PreparedOp::Deallocate(name)) => self.close_statement(name.as_bytes()),
            Some(PreparedOp::DeallocateAll) => self.push(Op::ClearStatements),
            Some(PreparedOp::Execute { .. }) | Some(PreparedOp::Unparsed) | None => {}
        }
    }

    /// The portal `name` is expected to hold.
    pub fn portal(&self, name: &[u8]) -> Option<&P> {
        let name = key(name);
        match self.pending.iter().rev().find_map(|op| op.portal(name)) {
            Some(p) => p,
            None => self.portals.get(name),
        }
    }

    /// The same, to mark it described.
    pub fn portal_mut(&mut self, name: &[u8]) -> Option<&mut P> {
        let name = key(name);
        let at = self
            .pending
            .iter()
            .rposition(|op| op.portal(name).is_some());
        match at {
            Some(i) => match &mut self.pending[i] {
                Op::Portal(_, p) => p.as_mut(),
                _ => None,
            },
            None => self.portals.get_mut(name),
        }
    }

    /// Expected number of tracked portals (approximate, for the limit).
    pub fn portal_count(&self) -> usize {
        self.portals.len() + self.pending.len()
    }

    /// A `Bind` of portal `name` (or a `Close` of it with `None`).
    pub fn set_portal(&mut self, name: Bytes, info: Option<P>) {
        self.push(Op::Portal(key_bytes(name), info));
    }

    fn push(&mut self, op: Op<S, P>) {
        self.statement_ops += usize::from(op.on_statements());
        self.pending.push_back(op);
        self.fresh += 1;
    }

    fn pop_front(&mut self) -> Option<Op<S, P>> {
        let op = self.pending.pop_front()?;
        self.statement_ops -= usize::from(op.on_statements());
        Some(op)
    }

    /// How many changes were made since the last call: they belong to the
    /// message about to be queued.
    pub fn take_fresh(&mut self) -> usize {
        std::mem::take(&mut self.fresh)
    }

    /// Withdraws the newest `n` changes (the message that made them is
    /// refused and never sent).
    pub fn withdraw(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(op) = self.pending.pop_back() {
                self.statement_ops -= usize::from(op.on_statements());
            }
        }
    }

    /// The server completed the message owning the oldest `n` changes.
    pub fn confirm(&mut self, n: usize) {
        for _ in 0..n {
            match self.pop_front() {
                Some(Op::Statement(name, new)) => {
                    let added = new.as_ref().is_some_and(Entry::protected);
                    let old = match new {
                        Some(e) => self.statements.insert(name, e),
                        None => self.statements.remove(&name),
                    };
                    let removed = old.as_ref().is_some_and(Entry::protected);
                    self.protected = self.protected + usize::from(added) - usize::from(removed);
                }
                Some(Op::ClearStatements) => {
                    self.statements.retain(|name, _| name.is_empty());
                    self.protected = self.statements.values().filter(|e| e.protected()).count();
                }
                Some(Op::Portal(name, Some(p))) => {
                    self.portals.insert(name, p);
                }
                Some(Op::Portal(name, None)) => {
                    self.portals.remove(&name);
                }
                None => {}
            }
        }
    }

    /// The server rejected or skipped the message owning the oldest `n`
    /// changes: they never happened.
    pub fn discard(&mut self, n: usize) {
        for _ in 0..n {
            self.pop_front();
        }
    }

    /// Whether using `name` now could reach a protected statement other
    /// than the expected one (or one when none is expected). `earlier` is
    /// how many of the oldest pending changes belong to batches before the
    /// current one (which may still fail independently). A change in the
    /// current batch decides the name: if it fails, the server skips the
    /// use too.
    pub fn unsettled(&self, name: &[u8], portal: bool, earlier: usize) -> bool {
        if !portal && self.statement_ops == 0 {
            return false;
        }
        let name = key(name);
        let decides = |op: &Op<S, P>| {
            if portal {
                op.portal(name).map(|p| p.is_some())
            } else {
                op.statement(name).map(|e| e.is_some_and(Entry::protected))
            }
        };
        if self
            .pending
            .iter()
            .skip(earlier)
            .any(|op| decides(op).is_some())
        {
            return false;
        }
        let mut outcomes: Vec<(usize, bool)> = self
            .pending
            .iter()
            .take(earlier)
            .enumerate()
            .filter_map(|(i, op)| decides(op).map(|protected| (i, protected)))
            .collect();
        let Some(&(expected, _)) = outcomes.last() else {
            return false;
        };
        let confirmed = if portal {
            self.portals.contains_key(name)
        } else {
            self.statements.get(name).is_some_and(Entry::protected)
        };
        outcomes.push((usize::MAX, confirmed));
        // Any protected state the server may really have that is not the
        // expected one.
        outcomes
            .iter()
            .any(|&(i, protected)| protected && i != expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgveil_sql::PreparedStatements;

    type R = Registry<&'static str, &'static str>;

    fn plan_with(sql: &str, session: Option<&PreparedStatements>) -> StatementPlan {
        let policy = pgveil_policy::Policy::from_toml_str(
            "[tables.\"public.patients\"]\nssn = { type = \"text\" }\n",
            "t",
        )
        .unwrap();
        match pgveil_sql::analyze_with(sql, &policy, &Default::default(), session).unwrap() {
            pgveil_sql::Analysis::Planned(p) => p.statements[0].clone(),
            pgveil_sql::Analysis::Passthrough => panic!("passthrough"),
        }
    }

    #[test]
    fn a_rejected_parse_keeps_the_protected_statement() {
        let mut r = R::default();
        r.parse(Bytes::from_static(b"s1"), Some("protected"));
        let n = r.take_fresh();
        r.confirm(n); // ParseComplete
                      // Parse of s1 again (the server answers 42P05).
        r.parse(Bytes::from_static(b"s1"), None);
        assert!(r.statement(b"s1").is_none());
        let n = r.take_fresh();
        r.discard(n);
        assert_eq!(r.statement(b"s1"), Some(&"protected"));
    }

    #[test]
    fn names_are_cut_to_63_bytes_as_postgres_does() {
        let mut r = R::default();
        let long = Bytes::from("q".repeat(70));
        r.parse(long, Some("protected"));
        assert_eq!(r.statement("q".repeat(63).as_bytes()), Some(&"protected"));
        assert_eq!(
            r.statement(format!("{}zz", "q".repeat(63)).as_bytes()),
            Some(&"protected")
        );
        assert!(r.statement("q".repeat(62).as_bytes()).is_none());
    }

    #[test]
    fn changes_resolve_in_order_whatever_fails() {
        let mut r = R::default();
        r.parse(Bytes::from_static(b"q"), Some("v1"));
        let n = r.take_fresh();
        r.confirm(n);
        // Three messages in flight: PREPARE q (fails: exists), DEALLOCATE q
        // (skipped), Parse q v2 (skipped).
        r.parse(Bytes::from_static(b"q"), Some("v2-prepare"));
        let a = r.take_fresh();
        r.close_statement(b"q");
        let b = r.take_fresh();
        r.parse(Bytes::from_static(b"q"), Some("v3"));
        let c = r.take_fresh();
        assert_eq!(r.statement(b"q"), Some(&"v3"));
        r.discard(a);
        r.discard(b);
        assert_eq!(r.statement(b"q"), Some(&"v3"), "still pending");
        r.discard(c);
        assert_eq!(r.statement(b"q"), Some(&"v1"));
    }

    #[test]
    fn unsettled_names_are_those_a_failure_could_leave_protected() {
        let mut r = R::default();
        r.parse(Bytes::from_static(b"old"), Some("v1"));
        let n = r.take_fresh();
        r.confirm(n);
        // Earlier batch: replace `old` (may fail: 42P05), create `new`.
        r.parse(Bytes::from_static(b"old"), None);
        r.parse(Bytes::from_static(b"new"), Some("fresh"));
        let earlier = r.take_fresh();
        assert!(r.unsettled(b"old", false, earlier), "v1 may remain");
        assert!(!r.unsettled(b"new", false, earlier), "fresh or nothing");
        assert!(!r.unsettled(b"other", false, earlier));
        // A change in the current batch decides the name.
        r.parse(Bytes::from_static(b"old"), Some("v9"));
        assert!(!r.unsettled(b"old", false, earlier));
    }

    #[test]
    fn sql_prepare_and_protocol_parse_share_one_namespace() {
        let mut r = R::default();
        let p = plan_with("PREPARE q AS INSERT INTO patients (ssn) VALUES ($1)", None);
        r.apply_sql(&p);
        let n = r.take_fresh();
        r.confirm(n);
        assert!(matches!(r.entry(b"q"), Some(Entry::Sql(_))));
        assert!(r.sql().get("q").is_some());
        // A protocol Parse of q would fail on the server (42P05).
        r.parse(Bytes::from_static(b"q"), Some("proto"));
        assert_eq!(r.statement(b"q"), Some(&"proto"));
        let n = r.take_fresh();
        r.discard(n);
        assert!(matches!(r.entry(b"q"), Some(Entry::Sql(_))));
        // DEALLOCATE ALL clears both kinds; a failed one keeps both.
        r.parse(Bytes::from_static(b"s"), Some("proto"));
        let n = r.take_fresh();
        r.confirm(n);
        let all = plan_with("DEALLOCATE ALL", Some(&r.sql()));
        r.apply_sql(&all);
        assert!(r.entry(b"q").is_none() && r.entry(b"s").is_none());
        let n = r.take_fresh();
        r.discard(n);
        assert!(r.entry(b"q").is_some() && r.entry(b"s").is_some());
    }
}

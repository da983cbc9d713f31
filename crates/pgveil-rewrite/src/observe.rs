//! Per-statement facts for audit: what a statement touching protected
//! columns was, who ran it, what pgveil decided and how it ended.
//!
//! The engine never sees the sink: the binary injects an [`Observer`] into
//! each [`crate::Session`]. Facts carry no values — a statement is named by
//! its fingerprint (literals replaced by `?`), columns by name and label.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgveil_policy::ColumnRef;

use crate::access::SessionCtx;

/// How a statement used a protected column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnUse {
    /// Returned, compared, joined or grouped on.
    Read,
    /// Written (INSERT, UPDATE, COPY FROM).
    Write,
    /// Destroyed without being named (DELETE rows, TRUNCATE, DROP COLUMN).
    Delete,
}

impl ColumnUse {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ColumnUse::Read => "read",
            ColumnUse::Write => "write",
            ColumnUse::Delete => "delete",
        }
    }
}

/// pgveil's decision for one column of one statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Plaintext (read) or allowed (write).
    Allow,
    /// Masked.
    Mask,
    /// Refused by the access rules.
    Deny,
    /// The statement was refused for another reason (fail closed).
    Refused,
}

impl Decision {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Mask => "mask",
            Decision::Deny => "deny",
            Decision::Refused => "refused",
        }
    }
}

/// One protected column of a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnFact {
    /// `schema.table.column`.
    pub column: ColumnRef,
    /// `column` as text (rendered once, not per record).
    pub name: Arc<str>,
    /// Its label (`unlabeled` without one).
    pub label: String,
    /// Read or written.
    pub used: ColumnUse,
    /// What pgveil decided.
    pub decision: Decision,
}

/// How a statement ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server completed it (`CommandComplete`): its command word and
    /// row count, when the tag has one.
    Completed {
        /// `SELECT`, `INSERT`, `COPY`, …
        command: String,
        /// Rows returned or affected.
        rows: Option<u64>,
    },
    /// An `Execute` with a row limit stopped early (`PortalSuspended`).
    Suspended {
        /// Rows returned by this `Execute`.
        rows: u64,
    },
    /// The server failed it.
    ServerError {
        /// Its SQLSTATE.
        sqlstate: String,
        /// Rows sent before the error (a simple query streams them).
        rows: u64,
    },
    /// pgveil refused it (nothing of it ran, or its results were withheld).
    Refused {
        /// The SQLSTATE the client got.
        sqlstate: &'static str,
        /// Bounded reason label (as in the refused-statements metric).
        reason: &'static str,
    },
}

/// The facts of one statement, handed to the [`Observer`] when it ends.
#[derive(Clone, Debug)]
pub struct StatementEvent {
    /// Who the session is.
    pub session: Arc<SessionCtx>,
    /// The effective role the decisions were taken for.
    pub role: String,
    /// `select`, `insert`, `update`, `delete`, `copy`, `other`, or
    /// `unknown` for a refusal pgveil could not classify.
    pub kind: &'static str,
    /// `simple` or `extended`.
    pub protocol: &'static str,
    /// The statement with its literals replaced by `?`.
    pub fingerprint: Arc<str>,
    /// Protected columns touched.
    pub columns: Arc<[ColumnFact]>,
    /// How it ended.
    pub outcome: Outcome,
    /// From the client's message to the statement's end.
    pub duration: Duration,
}

/// Receives statement facts. Implementations must not block for long: they
/// run on the session's task.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// Whether statements touching protected columns may run now. `Err`
    /// (the reason, no values) makes pgveil refuse them: the audit sink
    /// cannot record them.
    fn admit(&self) -> Result<(), String>;
    /// One statement ended.
    fn statement(&self, event: StatementEvent);
}

/// A statement under way, completed into a [`StatementEvent`].
#[derive(Debug)]
pub(crate) struct Draft {
    pub role: String,
    pub kind: &'static str,
    pub protocol: &'static str,
    pub fingerprint: Arc<str>,
    pub columns: Arc<[ColumnFact]>,
    pub started: Instant,
    /// `DataRow`s seen (for `PortalSuspended`).
    pub rows: u64,
    /// pgveil failed it after it was sent (a denial at `RowDescription`, a
    /// value that does not decrypt, a refused COPY row).
    pub refused: Option<(&'static str, &'static str)>,
}

impl Draft {
    pub(crate) fn finish(self, session: &Arc<SessionCtx>, outcome: Outcome) -> StatementEvent {
        let outcome = match self.refused {
            Some((sqlstate, reason)) => Outcome::Refused { sqlstate, reason },
            None => outcome,
        };
        StatementEvent {
            session: Arc::clone(session),
            role: self.role,
            kind: self.kind,
            protocol: self.protocol,
            fingerprint: self.fingerprint,
            columns: self.columns,
            outcome,
            duration: self.started.elapsed(),
        }
    }
}

/// The outcome of a `CommandComplete` tag (`INSERT 0 5`, `SELECT 3`, …).
pub(crate) fn completed(tag: &[u8]) -> Outcome {
    let tag = std::str::from_utf8(tag).unwrap_or("");
    let mut words = tag.split(' ');
    let command = words.next().unwrap_or("").to_owned();
    let rows = tag
        .rsplit(' ')
        .next()
        .filter(|_| tag.contains(' '))
        .and_then(|n| n.parse().ok());
    Outcome::Completed { command, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags() {
        let c = |t: &str| match completed(t.as_bytes()) {
            Outcome::Completed { command, rows } => (command, rows),
            o => panic!("{o:?}"),
        };
        assert_eq!(c("INSERT 0 5"), ("INSERT".into(), Some(5)));
        assert_eq!(c("SELECT 3"), ("SELECT".into(), Some(3)));
        assert_eq!(c("COPY 12"), ("COPY".into(), Some(12)));
        assert_eq!(c("CREATE TABLE"), ("CREATE".into(), None));
        assert_eq!(c("BEGIN"), ("BEGIN".into(), None));
    }
}

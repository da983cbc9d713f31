//! The per-session state machine. The client→server side calls
//! [`Session::client_message`] for every complete message and the
//! server→client side [`Session::server_message`]; both directions share one
//! `Session` (behind a mutex in the I/O layer) because responses are matched
//! to requests through a queue of expectations, in protocol order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use pgveil_crypto::canonical::{LogicalType, SessionTimeZone};
use pgveil_policy::ColumnRef;
use pgveil_sql::{Analysis, Comparison, LiteralForm, LiteralTarget, StatementPlan, TextEdit};
use pgveil_wire::backend::{self, ErrorFields, FieldDescription};
use pgveil_wire::frontend::{self, Format};
use pgveil_wire::Frame;

use crate::access::{self, Reveal, RoleEffect, RoleReader, RoleState, RoleView, SessionCtx};
use crate::copy::{CopyCodec, CopyStream};
use crate::error::{Denial, RewriteError};
use crate::observe::{self, ColumnFact, ColumnUse, Decision, Draft, Observer, Outcome};
use crate::registry::{Entry, Registry};
use crate::values::ColumnCrypto;
use crate::{CatalogReader, DbContext, Engine};

/// How a client message was handled, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Forwarded as is (after at most a pre-filter).
    Passthrough,
    /// Rewritten (values encrypted, types rewritten, a Describe injected).
    Rewritten,
    /// Refused; the label is bounded (see [`RewriteError::reason_label`]).
    Refused(&'static str),
}

/// What to do with a client message.
#[derive(Debug)]
pub enum ClientAction {
    /// Send the message unchanged.
    Forward,
    /// Send the bytes written to `out` instead.
    Replace,
    /// Send this catalog query first, wait until [`ServerAction::RefreshDone`],
    /// then hand the same message to [`Session::client_message`] again.
    Refresh(Frame),
}

/// [`ClientAction`] plus what it means for metrics and logs.
#[derive(Debug)]
pub struct ClientOutcome {
    /// The action.
    pub action: ClientAction,
    /// The path, for metrics.
    pub path: Path,
    /// The error when refused (never contains values), for logs.
    pub error: Option<RewriteError>,
}

impl ClientOutcome {
    fn forward() -> Self {
        ClientOutcome {
            action: ClientAction::Forward,
            path: Path::Passthrough,
            error: None,
        }
    }
}

/// What to do with a server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    /// Send it to the client unchanged.
    Forward,
    /// Send the bytes written to `out` instead.
    Replace,
    /// Send nothing.
    Drop,
    /// A catalog refresh finished (the message is dropped): wake the
    /// client→server side.
    RefreshDone,
    /// Send the bytes written to `out` (the `ReadyForQuery`, then a FATAL
    /// error) and close the connection: the policy this session runs under
    /// was replaced and it is idle.
    ReplaceAndClose,
}

/// `unknown`: a parameter type left for the server to infer.
const UNKNOWN_OID: u32 = 705;

/// Which columns of a result are protected, their formats, and what the
/// session's role may see of each.
#[derive(Debug)]
struct Shape {
    cols: Vec<Option<Arc<ColumnCrypto>>>,
    formats: Vec<Format>,
    /// Per column (`Plain` for unprotected ones), decided under the role of
    /// `epoch`.
    reveal: Vec<Reveal>,
    epoch: u64,
}

impl Shape {
    fn empty() -> Shape {
        Shape {
            cols: Vec::new(),
            formats: Vec::new(),
            reveal: Vec::new(),
            epoch: 0,
        }
    }

    fn with_formats(&self, formats: &[Format]) -> Shape {
        Shape {
            cols: self.cols.clone(),
            formats: (0..self.cols.len())
                .map(|i| frontend::format_at(formats, i))
                .collect(),
            reveal: self.reveal.clone(),
            epoch: self.epoch,
        }
    }
}

/// The protected columns a statement reads (returns, compares, copies
/// out) and writes, for the access rules.
#[derive(Debug, Default)]
struct AccessCols {
    reads: Vec<ColumnRef>,
    writes: Vec<ColumnRef>,
    /// Destroyed, not named: audit only (see `StatementPlan::deletes`).
    deletes: Vec<ColumnRef>,
    /// The statement's kind, for audit.
    kind: &'static str,
    /// The statement's fingerprint, for audit (kept only with an observer).
    fingerprint: Option<Arc<str>>,
    /// Audit facts as last decided, with the role epoch they were decided
    /// in (a prepared statement's runs share them).
    facts: std::sync::Mutex<Option<(u64, Arc<[ColumnFact]>)>>,
}

impl AccessCols {
    fn of(st: &StatementPlan) -> AccessCols {
        let mut reads: Vec<ColumnRef> = st.reads.iter().cloned().collect();
        let mut writes: Vec<ColumnRef> = st.writes.iter().cloned().collect();
        if let Some(copy) = &st.copy {
            let cols = copy
                .columns
                .iter()
                .flatten()
                .filter_map(|f| f.target.as_ref().map(|t| t.column.clone()));
            match copy.direction {
                pgveil_sql::CopyDirection::FromStdin => writes.extend(cols),
                _ => reads.extend(cols),
            }
        }
        let mut deletes: Vec<ColumnRef> = st.deletes.iter().cloned().collect();
        if let Some(pgveil_sql::PreparedOp::Prepare { .. }) = &st.prepared {
            // PREPARE runs nothing: its EXECUTE is checked.
            reads.clear();
            writes.clear();
            deletes.clear();
        }
        reads.sort();
        reads.dedup();
        writes.sort();
        writes.dedup();
        AccessCols {
            reads,
            writes,
            deletes,
            kind: st.kind.as_str(),
            fingerprint: None,
            facts: Default::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && self.deletes.is_empty()
    }
}

/// A prepared statement that touches a protected table.
#[derive(Debug)]
struct StmtInfo {
    /// Per protected parameter.
    params: Vec<ParamInfo>,
    /// `ParameterDescription` corrections: index → OID to report.
    describe: Arc<ParamFix>,
    /// A `Describe` (statement) was sent after the `Parse`.
    described: bool,
    /// A `COPY` on a protected table.
    copy: Option<Arc<CopyCodec>>,
    /// SQL `PREPARE`/`DEALLOCATE`/`DISCARD ALL` sent through `Parse`: its
    /// effect on the registry happens at each `Execute`.
    sql_op: Option<Arc<StatementPlan>>,
    /// Protected columns read and written, checked at each `Execute`.
    columns: Arc<AccessCols>,
}

/// How to correct a statement's `ParameterDescription`.
#[derive(Debug, Default)]
struct ParamFix {
    /// Index → OID to report (logical or client-declared types).
    oids: Vec<(usize, u32)>,
    /// Report only this many parameters (pgveil added the rest).
    keep: Option<usize>,
}

/// A protected parameter of a prepared statement.
#[derive(Debug)]
struct ParamInfo {
    /// 0-based index.
    idx: usize,
    col: Arc<ColumnCrypto>,
    /// The client-declared type (of the elements, for an array).
    declared: Option<LogicalType>,
    declared_oid: u32,
    /// An array of values: to compare with (`col = ANY($n)`) or to write
    /// (`unnest($n)` feeding an INSERT).
    array: bool,
    /// Written (one ciphertext per element, active key) or compared (every
    /// live key version of each element).
    usage: Comparison,
    /// `col = $n` rewritten to `col = ANY($n)` during a key rotation: a
    /// scalar from the client, an array of its ciphertexts to the server.
    expand: bool,
    /// `IN ($n)` rewritten to `IN ($n, $m…)` during a key rotation: the
    /// 0-based indexes of the added parameters, one per older version.
    extras: Vec<usize>,
}

#[derive(Debug)]
struct PortalInfo {
    statement: Bytes,
    described: bool,
    copy: Option<Arc<CopyCodec>>,
    sql_op: Option<Arc<StatementPlan>>,
    columns: Arc<AccessCols>,
}

#[derive(Debug)]
enum Expect {
    Query {
        refusal: bool,
        /// `COPY … TO STDOUT` on a protected table: its rows' codec.
        copy: Option<Arc<CopyCodec>>,
    },
    FunctionCall,
    Parse {
        internal: bool,
    },
    Bind {
        portal: Bytes,
        statement: Bytes,
        formats: Vec<Format>,
        internal: bool,
        tracked: bool,
    },
    DescribeStatement {
        name: Bytes,
        params: Option<Arc<ParamFix>>,
        tracked: bool,
    },
    DescribePortal {
        name: Bytes,
        internal: bool,
        tracked: bool,
    },
    Execute {
        portal: Bytes,
        refusal: bool,
        copy: Option<Arc<CopyCodec>>,
        /// The portal's result shape, looked up at the first `DataRow` and
        /// kept for the rest of this Execute's rows (nothing can change the
        /// portal before the server completes the Execute).
        rows: std::cell::OnceCell<Option<Arc<Shape>>>,
    },
    Close,
    Sync,
    /// A `Sync` sent while a `COPY … FROM STDIN` `Execute` was in progress:
    /// the server ignores it if the copy started, answers it if not.
    CopySync,
    Refresh,
    /// pgveil's [`access::ROLE_QUERY`].
    RoleRefresh,
}

type Reg = Registry<StmtInfo, PortalInfo>;

/// An expected server answer with the number of registry changes made by
/// the message that asked for it (resolved when the answer comes).
#[derive(Debug)]
struct Pending {
    expect: Expect,
    /// Changes confirmed by the answer, dropped if the server rejects or
    /// skips the message.
    ops: usize,
    /// A simple query: the changes of each statement not completed yet, in
    /// order (each `CommandComplete` confirms the first).
    statements: VecDeque<usize>,
    /// pgveil's own first statement (the scratch table of a refused COPY):
    /// its `CommandComplete` is not the client's.
    internal_first: bool,
    /// Audit drafts: one per statement of a simple query (in order), one
    /// for an `Execute`; `None` for a statement without protected columns.
    audits: VecDeque<Option<Box<Draft>>>,
}

impl Pending {
    fn all_ops(&self) -> usize {
        self.ops + self.statements.iter().sum::<usize>()
    }
}

/// The expectations in protocol order.
#[derive(Debug, Default)]
struct ExpectQueue {
    q: VecDeque<Pending>,
}

impl ExpectQueue {
    fn front(&self) -> Option<&Expect> {
        self.q.front().map(|p| &p.expect)
    }

    fn len(&self) -> usize {
        self.q.len()
    }
}

/// One client session's rewriting state.
pub struct Session {
    engine: Arc<Engine>,
    database: String,
    ctx: Arc<DbContext>,
    /// Prepared statements and portals, confirmed by the server.
    reg: Reg,
    expect: ExpectQueue,
    // Server side.
    stmt_shapes: HashMap<Bytes, Arc<Shape>>,
    portal_shapes: HashMap<Bytes, Arc<Shape>>,
    current: Option<Arc<Shape>>,
    poisoned: bool,
    refresh: Option<(CatalogReader, u64)>,
    tz: SessionTimeZone,
    standard_strings: bool,
    idle: bool,
    ddl_seen: bool,
    stale: bool,
    refresh_attempted: bool,
    batch_open: bool,
    bufs: crate::values::DecryptBuffers,
    /// `COPY … FROM STDIN` data being encrypted.
    copy_in: Option<CopyStream>,
    /// After a refused COPY row: drop the client's copy messages.
    copy_discard: bool,
    /// The refusal that replaces the server's answer to pgveil's CopyFail.
    copy_failed: Option<RewriteError>,
    /// `COPY … TO STDOUT` data being decrypted.
    copy_out: Option<CopyStream>,
    /// The session's client_encoding when it is not UTF-8: pgveil reads
    /// statement text, parameters and COPY data as UTF-8, so protected
    /// values in another encoding would be encrypted unconverted (and COPY
    /// could not be split byte by byte).
    unsafe_encoding: Option<String>,
    /// The server's major version (`server_version` at startup).
    server_major: Option<u32>,
    /// Statements that may change how the server reads text (see
    /// [`pgveil_sql::mentions_text_setting`]) were sent and not all answered.
    text_settings_in_flight: bool,
    /// Statements that may change `TimeZone` (see
    /// [`pgveil_sql::mentions_timezone_setting`]) were sent and not all
    /// answered: values are canonicalised as for an unknown zone.
    tz_in_flight: bool,
    /// Between the `Execute` of a `COPY … FROM STDIN` and its end, where the
    /// server ignores `Sync`.
    copy_in_mode: bool,
    /// The server answered the current `Execute` with CopyInResponse: the
    /// `Sync`s sent meanwhile are ignored.
    copy_in_started: bool,
    /// Unprotected statements and portals that are `COPY … FROM STDIN`.
    copy_statements: HashSet<Bytes>,
    copy_portals: HashSet<Bytes>,
    /// Who the session is.
    sctx: Arc<SessionCtx>,
    /// The policy has access rules: the role is tracked.
    access_on: bool,
    /// The role as the server confirmed it.
    role: RoleState,
    /// A role query was sent for the message being handled.
    role_attempted: bool,
    /// Statements and portals whose text may affect the role, applied at
    /// each `Execute`.
    role_statements: HashMap<Bytes, RoleEffect>,
    role_portals: HashMap<Bytes, RoleEffect>,
    /// Receives the facts of each statement touching protected columns.
    observer: Option<Arc<dyn Observer>>,
    /// The draft made by the rows of a statement without one of its own.
    rows_draft: Option<Box<Draft>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("database", &self.database)
            .field("pending", &self.expect.len())
            .finish_non_exhaustive()
    }
}

const MAX_TRACKED: usize = 10_000;

fn cstr<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = b.get(*pos..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    *pos += end + 1;
    Some(&rest[..end])
}

fn frame_of(msg: &[u8]) -> Frame {
    Frame::new(msg[0], &msg[5..])
}

/// The refusal when a session tracks too many statements or portals.
fn too_many(what: &str) -> RewriteError {
    pgveil_sql::Refusal {
        sqlstate: "54000",
        column: None,
        reason: format!(
            "this session has {MAX_TRACKED} {what} on protected tables; close or deallocate some"
        ),
    }
    .into()
}

/// Sets the format of one parameter of a `Bind`, spelling out the
/// per-parameter format codes if the message used the short forms.
fn set_param_format(bind: &mut frontend::Bind, idx: usize, format: Format) {
    let n = bind.params.len();
    match bind.param_formats.len() {
        0 => bind.param_formats = vec![Format::Text; n],
        1 if n != 1 => bind.param_formats = vec![bind.param_formats[0]; n],
        k if k < n => bind.param_formats.resize(n, Format::Text),
        _ => {}
    }
    if let Some(slot) = bind.param_formats.get_mut(idx) {
        *slot = format;
    }
}

/// Whether an unparsed statement may be `COPY … FROM STDIN` (the server
/// then ignores `Sync` until the copy ends). Over-matching only matters
/// for a `Sync` sent between such an `Execute` and the copy's end.
fn looks_like_copy_in(sql: &str) -> bool {
    let mut t = sql.trim_start();
    // Leading comments.
    loop {
        if let Some(rest) = t.strip_prefix("--") {
            t = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = t.strip_prefix("/*") {
            t = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    if !t.get(..4).is_some_and(|k| k.eq_ignore_ascii_case("copy")) {
        return false;
    }
    let words: Vec<String> = t
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.windows(2).any(|w| w[0] == "from" && w[1] == "stdin")
}

fn engine_access_on(engine: &Engine) -> bool {
    engine.policy().access().is_some()
}

/// `DO … RAISE` text that makes the server report `err` itself.
fn raise_sql(err: &RewriteError) -> String {
    let esc = |s: &str| {
        let mut s = s.replace('\\', "/").replace('\'', "''");
        // Nothing in the text may close the dollar quote.
        while s.contains("$pgveil$") {
            s = s.replace("$pgveil$", "$ pgveil$");
        }
        s
    };
    let hint = err
        .hint()
        .map(|h| format!(", HINT = '{}'", esc(h)))
        .unwrap_or_default();
    format!(
        "DO $pgveil$ BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = '{}'{hint}; END $pgveil$",
        err.sqlstate(),
        esc(&err.to_string())
    )
}

impl Session {
    /// A session on `database` with its resolved context.
    pub fn new(engine: Arc<Engine>, database: &str, ctx: Arc<DbContext>) -> Self {
        let access_on = engine_access_on(&engine);
        Session {
            engine,
            database: database.to_owned(),
            ctx,
            reg: Reg::default(),
            expect: ExpectQueue::default(),
            stmt_shapes: HashMap::new(),
            portal_shapes: HashMap::new(),
            current: None,
            poisoned: false,
            refresh: None,
            tz: SessionTimeZone::Unknown,
            standard_strings: true,
            idle: true,
            ddl_seen: false,
            stale: false,
            refresh_attempted: false,
            batch_open: false,
            bufs: Default::default(),
            copy_in: None,
            copy_discard: false,
            copy_failed: None,
            copy_out: None,
            unsafe_encoding: None,
            text_settings_in_flight: false,
            tz_in_flight: false,
            server_major: None,
            copy_in_mode: false,
            copy_in_started: false,
            copy_statements: HashSet::new(),
            copy_portals: HashSet::new(),
            sctx: Arc::new(SessionCtx {
                database: database.to_owned(),
                ..Default::default()
            }),
            access_on,
            role: RoleState::new(),
            role_attempted: false,
            role_statements: HashMap::new(),
            role_portals: HashMap::new(),
            observer: None,
            rows_draft: None,
        }
    }

    /// Reports each statement touching protected columns to `observer`
    /// (which also makes the session follow its role, for the events).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self.access_on = true;
        self
    }

    /// Sets the connection's facts (after authentication).
    pub fn with_session_ctx(mut self, sctx: SessionCtx) -> Self {
        self.sctx = Arc::new(sctx);
        self
    }

    /// The connection's facts.
    pub fn session_ctx(&self) -> &Arc<SessionCtx> {
        &self.sctx
    }

    /// The role as the server last confirmed it.
    pub fn role(&self) -> &RoleView {
        &self.role.confirmed
    }

    fn rules(&self) -> Option<&pgveil_policy::AccessRules> {
        self.engine.policy().access()
    }

    /// What `view` may see of each column of a result.
    fn reveal_of(&self, cols: &[Option<Arc<ColumnCrypto>>], view: &RoleView) -> Vec<Reveal> {
        cols.iter()
            .map(|c| match c {
                Some(c) if self.access_on => match self.engine.policy().lookup_column(&c.column) {
                    Some(pc) => access::reveal(self.rules(), view, pc),
                    None => Reveal::Deny,
                },
                _ => Reveal::Plain,
            })
            .collect()
    }

    /// `shape` with its decisions taken under the current role.
    fn decided(&self, shape: &Arc<Shape>) -> Arc<Shape> {
        if !self.access_on || shape.epoch == self.role.epoch {
            return shape.clone();
        }
        Arc::new(Shape {
            cols: shape.cols.clone(),
            formats: shape.formats.clone(),
            reveal: self.reveal_of(&shape.cols, &self.role.confirmed),
            epoch: self.role.epoch,
        })
    }

    /// Refuses a statement reading a column the role may not see or writing
    /// one it may not write.
    fn check_access(&self, cols: &AccessCols, view: &RoleView) -> Result<(), RewriteError> {
        if !self.access_on {
            return Ok(());
        }
        let policy = self.engine.policy();
        let denied = |c: &ColumnRef, action| self.denied(c, action, view);
        for c in &cols.reads {
            let allowed = policy.lookup_column(c).is_some_and(|pc| {
                access::decide(self.rules(), view, pc) != pgveil_policy::Access::Deny
            });
            if !allowed {
                return Err(denied(c, "read"));
            }
        }
        for c in &cols.writes {
            let allowed = policy
                .lookup_column(c)
                .is_some_and(|pc| access::may_write(self.rules(), view, pc));
            if !allowed {
                return Err(denied(c, "write"));
            }
        }
        Ok(())
    }

    /// The role query to run before the message being handled, if the role
    /// is unconfirmed and the client is between batches.
    fn role_refresh_needed(&mut self) -> Option<Frame> {
        if !self.access_on
            || !self.role.dirty
            || self.batch_open
            || self.role_attempted
            || self.role.reader.is_some()
        {
            return None;
        }
        self.role_attempted = true;
        self.role.asking();
        self.push(Expect::RoleRefresh);
        Some(frontend::query(access::ROLE_QUERY.as_bytes()))
    }

    fn role_refresh_message(&mut self, msg: &[u8]) -> ServerAction {
        let frame = frame_of(msg);
        let status = match self.role.reader.as_mut() {
            Some(r) => r.feed(&frame),
            None => Some(b'I'),
        };
        let Some(status) = status else {
            return ServerAction::Drop;
        };
        self.pop_done();
        let view = self
            .role
            .reader
            .take()
            .map_or(RoleView::Unknown, RoleReader::finish);
        self.role.answered(view, status);
        ServerAction::RefreshDone
    }

    /// Queues an expectation with the registry changes made for it.
    fn push(&mut self, expect: Expect) {
        let ops = self.reg.take_fresh();
        self.expect.q.push_back(Pending {
            expect,
            ops,
            statements: VecDeque::new(),
            internal_first: false,
            audits: VecDeque::new(),
        });
    }

    /// The server answered the front message: its changes stand.
    fn pop_done(&mut self) -> Option<Expect> {
        let p = self.expect.q.pop_front()?;
        self.reg.confirm(p.all_ops());
        Some(p.expect)
    }

    /// The front message failed or was skipped: its changes never happened.
    fn pop_skipped(&mut self) -> Option<Expect> {
        let p = self.expect.q.pop_front()?;
        self.reg.discard(p.all_ops());
        Some(p.expect)
    }

    /// Whether `name` (a statement, or a portal) could hold a protected
    /// statement other than the expected one when the server gets to the
    /// message about to be sent: see [`Registry::unsettled`]. Changes of
    /// batches before the current one (up to the last Sync or Query sent)
    /// may still fail independently.
    fn unsettled(&self, name: &[u8], portal: bool) -> bool {
        if !portal && !self.reg.statement_changes_pending() {
            return false;
        }
        let Some(end) = self.expect.q.iter().rposition(|p| {
            matches!(
                p.expect,
                Expect::Sync | Expect::Query { .. } | Expect::FunctionCall | Expect::CopySync
            )
        }) else {
            return false;
        };
        let earlier: usize = self
            .expect
            .q
            .iter()
            .take(end + 1)
            .map(Pending::all_ops)
            .sum();
        self.reg.unsettled(name, portal, earlier)
    }

    /// The refusal for a statement name this session never prepared through
    /// pgveil (a `PREPARE` inside dynamic SQL, or no statement at all).
    fn unknown_statement(name: &[u8]) -> RewriteError {
        pgveil_sql::Refusal {
            sqlstate: "26000",
            column: None,
            reason: format!(
                "prepared statement \"{}\" was not prepared through pgveil in this session; pgveil cannot tell whether it writes protected columns",
                String::from_utf8_lossy(name)
            ),
        }
        .into()
    }

    /// The refusal for a name whose state is [`Self::unsettled`].
    fn unsettled_error(name: &[u8]) -> RewriteError {
        pgveil_sql::Refusal {
            sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
            column: None,
            reason: format!(
                "\"{}\" held a statement on protected columns and was redefined or closed in a pipeline the server has not answered yet; pgveil cannot tell which statement the server will use: wait for that result (or use a new name)",
                String::from_utf8_lossy(name)
            ),
        }
        .into()
    }

    /// Records a `ParameterStatus` seen during startup.
    pub fn parameter_status(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b"TimeZone" => {
                self.tz = SessionTimeZone::from_pg_setting(&String::from_utf8_lossy(value))
            }
            b"standard_conforming_strings" => self.standard_strings = value == b"on",
            b"server_version" => {
                self.server_major = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
            }
            b"client_encoding" => {
                let v = String::from_utf8_lossy(value).to_ascii_uppercase();
                self.unsafe_encoding = (v != "UTF8").then_some(v);
            }
            _ => {}
        }
    }

    /// The resolved context in use.
    pub fn context(&self) -> &Arc<DbContext> {
        &self.ctx
    }

    // ------------------------------------------------------------------
    // Client → server
    // ------------------------------------------------------------------

    /// Handles one complete client message (`msg` includes tag and length).
    /// For [`ClientAction::Replace`] the replacement is appended to `out`.
    pub fn client_message(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ClientOutcome {
        let outcome = self.client_inner(msg, out);
        if let Some(err) = &outcome.error {
            if self.observer.is_some() {
                self.audit_refusal(msg, err);
            }
        }
        outcome
    }

    fn client_inner(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ClientOutcome {
        let tag = msg[0];
        match tag {
            frontend::tag::COPY_DATA | frontend::tag::COPY_DONE | frontend::tag::COPY_FAIL => {
                if tag != frontend::tag::COPY_DATA {
                    self.copy_in_mode = false;
                }
                return self.on_copy_message(msg, out);
            }
            // The server ignores Sync in copy-in mode, but only once the
            // copy has started: decided when its answer comes.
            frontend::tag::SYNC if self.copy_in_mode => {
                self.push(Expect::CopySync);
                return ClientOutcome::forward();
            }
            frontend::tag::SYNC | frontend::tag::FLUSH => {}
            _ => {
                // Any other message ends copy-in mode (the server says so).
                self.copy_in = None;
                self.copy_discard = false;
                self.copy_in_mode = false;
            }
        }
        match tag {
            frontend::tag::QUERY | frontend::tag::PARSE => {
                if let Some(frame) = self.role_refresh_needed().or_else(|| self.refresh_needed()) {
                    return ClientOutcome {
                        action: ClientAction::Refresh(frame),
                        path: Path::Passthrough,
                        error: None,
                    };
                }
                self.refresh_attempted = false;
                self.role_attempted = false;
                if tag == frontend::tag::QUERY {
                    self.on_query(msg, out)
                } else {
                    self.batch_open = true;
                    self.on_parse(msg, out)
                }
            }
            frontend::tag::BIND => {
                if let Some(frame) = self.role_refresh_needed() {
                    return ClientOutcome {
                        action: ClientAction::Refresh(frame),
                        path: Path::Passthrough,
                        error: None,
                    };
                }
                self.role_attempted = false;
                self.batch_open = true;
                self.on_bind(msg, out)
            }
            frontend::tag::DESCRIBE => {
                self.batch_open = true;
                self.on_describe(msg);
                ClientOutcome::forward()
            }
            frontend::tag::EXECUTE => {
                self.batch_open = true;
                self.on_execute(msg, out)
            }
            frontend::tag::CLOSE => {
                self.batch_open = true;
                let mut pos = 6;
                if let Some(name) = cstr(msg, &mut pos) {
                    // Journaled: a Close skipped after an error keeps the name.
                    if msg.get(5) == Some(&b'S') {
                        self.reg.close_statement(name);
                    } else if self.reg.portal(name).is_some() {
                        self.reg.set_portal(Bytes::copy_from_slice(name), None);
                    }
                }
                self.push(Expect::Close);
                ClientOutcome::forward()
            }
            frontend::tag::SYNC => {
                self.batch_open = false;
                self.push(Expect::Sync);
                ClientOutcome::forward()
            }
            frontend::tag::FUNCTION_CALL => {
                self.push(Expect::FunctionCall);
                ClientOutcome::forward()
            }
            _ => ClientOutcome::forward(),
        }
    }

    /// `CopyData`, `CopyDone`, `CopyFail` from the client.
    fn on_copy_message(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ClientOutcome {
        let tag = msg[0];
        let dropped = ClientOutcome {
            action: ClientAction::Replace,
            path: Path::Rewritten,
            error: None,
        };
        if self.copy_discard {
            // After a refused row nothing more of this COPY may reach the
            // server (the server would drop it anyway).
            if tag != frontend::tag::COPY_DATA {
                self.copy_discard = false;
            }
            return dropped;
        }
        let Some(stream) = self.copy_in.as_mut() else {
            return ClientOutcome::forward();
        };
        let start = out.len();
        let result = match tag {
            frontend::tag::COPY_DATA => {
                out.push(frontend::tag::COPY_DATA);
                out.extend_from_slice(&[0; 4]);
                stream.feed(&msg[5..], out)
            }
            frontend::tag::COPY_DONE => {
                out.push(frontend::tag::COPY_DATA);
                out.extend_from_slice(&[0; 4]);
                stream.finish(out)
            }
            _ => {
                self.copy_in = None;
                return ClientOutcome::forward();
            }
        };
        match result {
            Ok(()) => {
                let n = out.len() - start - 1;
                if n == 4 {
                    out.truncate(start);
                } else {
                    out[start + 1..start + 5].copy_from_slice(&(n as u32).to_be_bytes());
                }
                if tag == frontend::tag::COPY_DONE {
                    self.copy_in = None;
                    out.extend_from_slice(msg);
                }
                dropped
            }
            Err(e) => {
                out[start..].iter_mut().for_each(|b| *b = 0);
                out.truncate(start);
                self.copy_in = None;
                self.copy_discard = tag == frontend::tag::COPY_DATA;
                let mut body = b"pgveil refused the COPY data".to_vec();
                body.push(0);
                out.extend_from_slice(Frame::new(frontend::tag::COPY_FAIL, &body).raw());
                self.copy_failed = Some(e.clone());
                ClientOutcome {
                    action: ClientAction::Replace,
                    path: Path::Refused(e.reason_label()),
                    error: Some(e),
                }
            }
        }
    }

    fn refresh_needed(&mut self) -> Option<Frame> {
        if self.batch_open || self.refresh_attempted || self.refresh.is_some() {
            return None;
        }
        if !self.stale && self.engine.generation() == self.ctx.generation {
            return None;
        }
        self.refresh_attempted = true;
        self.refresh = Some((CatalogReader::default(), self.engine.generation()));
        self.push(Expect::Refresh);
        Some(frontend::query(self.engine.catalog_query().as_bytes()))
    }

    fn refuse_query(&mut self, err: RewriteError, out: &mut Vec<u8>) -> ClientOutcome {
        self.push(Expect::Query {
            refusal: true,
            copy: None,
        });
        out.extend_from_slice(frontend::query(raise_sql(&err).as_bytes()).raw());
        ClientOutcome {
            action: ClientAction::Replace,
            path: Path::Refused(err.reason_label()),
            error: Some(err),
        }
    }

    /// [`Self::refuse_query`] for a query string `sql`. A refused
    /// `COPY … FROM STDIN` that is the string's only statement is sent as is
    /// with a `CopyFail` right behind it: the server enters copy mode and
    /// fails at once, so the client (psql with inline data in a script)
    /// stays in copy mode and its data lines — dropped by pgveil — are
    /// never sent on as SQL statements. No data reaches the server; the
    /// client gets the refusal as the COPY's error.
    fn refuse_query_text(
        &mut self,
        sql: &str,
        err: RewriteError,
        out: &mut Vec<u8>,
    ) -> ClientOutcome {
        if !(looks_like_copy_in(sql) && pgveil_sql::statement_count(sql) == 1) {
            return self.refuse_query(err, out);
        }
        self.push(Expect::Query {
            refusal: false,
            copy: None,
        });
        if let Some(p) = self.expect.q.back_mut() {
            p.internal_first = true;
        }
        // Not the client's text (it may carry values, e.g. COPY … WHERE):
        // a COPY into a session-private scratch table, failed at once.
        out.extend_from_slice(
            frontend::query(
                b"CREATE TEMP TABLE IF NOT EXISTS pgveil_refused_copy (line text); COPY pg_temp.pgveil_refused_copy FROM STDIN",
            )
            .raw(),
        );
        let mut body = b"pgveil refused the COPY".to_vec();
        body.push(0);
        out.extend_from_slice(Frame::new(frontend::tag::COPY_FAIL, &body).raw());
        self.copy_in = None;
        self.copy_discard = true;
        self.copy_failed = Some(err.clone());
        ClientOutcome {
            action: ClientAction::Replace,
            path: Path::Refused(err.reason_label()),
            error: Some(err),
        }
    }

    /// Extended protocol: replace the message by an unnamed statement that
    /// raises the error when executed.
    fn refuse_extended(&mut self, err: RewriteError, out: &mut Vec<u8>) -> ClientOutcome {
        let parse = frontend::Parse {
            name: Bytes::new(),
            query: Bytes::from(raise_sql(&err)),
            param_types: Vec::new(),
        };
        let bind = frontend::Bind {
            portal: Bytes::new(),
            statement: Bytes::new(),
            param_formats: Vec::new(),
            params: Vec::new(),
            result_formats: Vec::new(),
        };
        out.extend_from_slice(parse.encode().raw());
        out.extend_from_slice(bind.encode().raw());
        out.extend_from_slice(
            frontend::Execute {
                portal: Bytes::new(),
                max_rows: 0,
            }
            .encode()
            .raw(),
        );
        self.reg.parse(Bytes::new(), None);
        if self.reg.portal(b"").is_some() {
            self.reg.set_portal(Bytes::new(), None);
        }
        self.push(Expect::Parse { internal: true });
        self.push(Expect::Bind {
            portal: Bytes::new(),
            statement: Bytes::new(),
            formats: Vec::new(),
            internal: true,
            tracked: false,
        });
        self.push(Expect::Execute {
            portal: Bytes::new(),
            refusal: true,
            copy: None,
            rows: Default::default(),
        });
        ClientOutcome {
            action: ClientAction::Replace,
            path: Path::Refused(err.reason_label()),
            error: Some(err),
        }
    }

    /// Encrypts literal targets and splices them into `sql`, and removes
    /// the casts around protected parameters.
    fn splice(
        &self,
        sql: &str,
        literals: &[LiteralTarget],
        replacements: &[TextEdit],
    ) -> Result<String, RewriteError> {
        enum Edit<'a> {
            Literal(&'a LiteralTarget),
            Replace(&'a str),
        }
        let mut out = String::with_capacity(sql.len() + literals.len() * 64);
        let mut edits: Vec<(std::ops::Range<usize>, Edit)> = literals
            .iter()
            .map(|l| (l.span.clone(), Edit::Literal(l)))
            .chain(
                replacements
                    .iter()
                    .map(|e| (e.span.clone(), Edit::Replace(&e.text))),
            )
            .collect();
        edits.sort_by_key(|e| e.0.start);
        let mut last = 0;
        for (span, edit) in edits {
            if span.start < last || span.end > sql.len() {
                return Err(RewriteError::Malformed("statement (overlapping literals)"));
            }
            out.push_str(&sql[last..span.start]);
            match edit {
                Edit::Literal(lit) if lit.form == LiteralForm::Array => {
                    let col = self.ctx.catalog.column(&lit.target.column)?;
                    out.push_str(&self.array_literal(col, lit)?);
                }
                Edit::Literal(lit) => {
                    let col = self.ctx.catalog.column(&lit.target.column)?;
                    let canonical = col.canonical_from_client(
                        lit.value.as_bytes(),
                        Format::Text,
                        None,
                        self.tz(),
                    )?;
                    let all = if lit.usage == Comparison::Equality && lit.form != LiteralForm::Value
                    {
                        col.encrypt_lookup(&canonical)?
                    } else {
                        vec![col.encrypt(&canonical)?]
                    };
                    let mut texts = Vec::with_capacity(all.len());
                    for env in &all {
                        let mut t = col.sql_literal(env)?;
                        if lit.form != LiteralForm::Value && col.storage == crate::Storage::Bytea {
                            t.push_str("::bytea");
                        }
                        texts.push(t);
                    }
                    match (texts.len(), lit.form) {
                        (1, _) | (_, LiteralForm::Value | LiteralForm::Array) => {
                            out.push_str(&texts[0])
                        }
                        (_, LiteralForm::ListElement) => out.push_str(&texts.join(", ")),
                        (_, LiteralForm::EqRight) => {
                            // During a rotation: match every live version.
                            out.push_str(if lit.negated {
                                "ALL(ARRAY["
                            } else {
                                "ANY(ARRAY["
                            });
                            out.push_str(&texts.join(", "));
                            out.push_str("])");
                        }
                    }
                }
                Edit::Replace(text) => out.push_str(text),
            }
            last = span.end;
        }
        out.push_str(&sql[last..]);
        Ok(out)
    }

    /// A whole array literal for a protected column (`'{a,b}'::text[]`) as
    /// `ARRAY[ct, …]::<storage>[]`: each element encrypted, NULLs kept.
    fn array_literal(
        &self,
        col: &ColumnCrypto,
        lit: &LiteralTarget,
    ) -> Result<String, RewriteError> {
        let elements = crate::array::parse_text(lit.value.as_bytes()).map_err(|reason| {
            RewriteError::InvalidValue {
                column: col.column.clone(),
                reason: format!("array literal: {reason}"),
                sqlstate: "22P02",
            }
        })?;
        let mut texts = Vec::with_capacity(elements.len());
        for e in elements {
            let Some(e) = e else {
                texts.push("NULL".to_owned());
                continue;
            };
            let canonical = col.canonical_from_client(&e, Format::Text, None, self.tz())?;
            let all = match lit.usage {
                Comparison::Equality => col.encrypt_lookup(&canonical)?,
                Comparison::Write => vec![col.encrypt(&canonical)?],
            };
            for env in &all {
                texts.push(col.sql_literal(env)?);
            }
        }
        let ty = match col.storage {
            crate::Storage::Bytea => "bytea",
            _ => "text",
        };
        Ok(if texts.is_empty() {
            format!("'{{}}'::{ty}[]")
        } else {
            format!("ARRAY[{}]::{ty}[]", texts.join(", "))
        })
    }

    /// The session's time zone for reading values, or unknown while a
    /// statement that may change it is unanswered.
    fn tz(&self) -> SessionTimeZone {
        if self.tz_in_flight {
            SessionTimeZone::Unknown
        } else {
            self.tz
        }
    }

    /// The codec of a COPY on a protected table, if its data can be split.
    fn copy_codec(&self, plan: &pgveil_sql::CopyPlan) -> Result<Arc<CopyCodec>, RewriteError> {
        if let Some(enc) = &self.unsafe_encoding {
            return Err(RewriteError::CopyFormat {
                table: plan.table.to_string(),
                line: 0,
                reason: format!(
                    "client_encoding {enc}: pgveil reads COPY data as UTF-8 (other encodings can hide delimiters inside multibyte characters and would be encrypted unconverted); SET client_encoding TO 'UTF8' first"
                ),
            });
        }
        CopyCodec::new(plan, &self.ctx.catalog)
    }

    /// Whether the server will read the text of a statement touching
    /// protected columns as pgveil did: UTF-8, and standard strings (a
    /// backslash in a plain literal is an escape otherwise).
    /// [`Self::check_text`] for statements that can reach protected columns
    /// (they touch a protected table, or the session has protected prepared
    /// statements an `EXECUTE` could run), and the refusal of a statement
    /// naming prepared statements that pgveil could not parse while the
    /// session has protected ones.
    fn check_plan(
        &self,
        plan: &pgveil_sql::Plan,
        sql: &str,
        unsure: bool,
        copy_only: bool,
    ) -> Result<(), RewriteError> {
        // Protected prepared statements the session has, or that this very
        // string defines before a statement pgveil cannot parse could run
        // them (`PREPARE p AS …; CREATE TABLE t AS EXECUTE p(…)`).
        let prepared = self.reg.has_statements()
            || plan.statements.iter().any(|s| {
                matches!(&s.prepared, Some(pgveil_sql::PreparedOp::Prepare { plan, .. }) if plan.touches_protected)
            });
        if prepared
            && plan
                .statements
                .iter()
                .any(|s| matches!(s.prepared, Some(pgveil_sql::PreparedOp::Unparsed)))
        {
            return Err(pgveil_sql::Refusal {
                sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
                column: None,
                reason: "pgveil cannot parse a statement naming prepared statements while this session has prepared statements on protected tables; it refuses rather than risk sending plaintext".to_owned(),
            }
            .into());
        }
        // By the text, not the parse: a reading pgveil gets wrong can hide
        // a protected table inside what it takes for a string.
        if prepared
            || plan.statements.iter().any(|s| s.touches_protected)
            || self.ctx.analyzer.mentions_protected(sql)
        {
            self.check_text(sql, unsure, copy_only)?;
        }
        Ok(())
    }

    /// `unsure`: a statement that may change these settings was sent
    /// earlier and not answered yet, or precedes this one in its string.
    fn check_text(&self, sql: &str, unsure: bool, copy_only: bool) -> Result<(), RewriteError> {
        let refuse = |reason: String| -> Result<(), RewriteError> {
            Err(pgveil_sql::Refusal {
                sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
                column: None,
                reason,
            }
            .into())
        };
        if let Some(enc) = &self.unsafe_encoding {
            return refuse(format!(
                "client_encoding is {enc}: pgveil reads and encrypts protected values as UTF-8; SET client_encoding TO 'UTF8'"
            ));
        }
        // Whatever pgveil last saw of standard_conforming_strings or
        // client_encoding, the server may already read with other values (a
        // function calling set_config, a FunctionCall, ALTER SYSTEM and a
        // reload): refuse text whose tokens those settings could move.
        // (A COPY statement carries no values, and option strings misread
        // fail the server's validation.)
        if !copy_only && pgveil_sql::reading_may_differ(sql) {
            return refuse(
                "a backslash that escapes a quote in a '...' literal (or follows a non-ASCII character) is read differently under other standard_conforming_strings or client_encoding settings, which can change without pgveil seeing it in time; use a parameter or E'...' with \\x/\\u-free escapes".to_owned(),
            );
        }
        if (!self.standard_strings || unsure)
            && !copy_only
            && pgveil_sql::has_backslash_in_plain_string(sql)
        {
            return refuse(
                "a backslash in a '...' literal is read differently when standard_conforming_strings is off (or while it may be changing); use E'...' or a parameter".to_owned(),
            );
        }
        if unsure && !sql.is_ascii() {
            return refuse(
                "the client encoding may be changing (a statement setting it is still running); send this statement after its answer".to_owned(),
            );
        }
        Ok(())
    }

    fn check_statement(&self, st: &StatementPlan) -> Result<(), RewriteError> {
        // Every protected column written must be resolvable with usable
        // storage before anything is sent.
        for c in &st.writes {
            let col = self.ctx.catalog.column(c)?;
            if let crate::Storage::Other(oid) = col.storage {
                return Err(RewriteError::BadStorage {
                    column: c.clone(),
                    storage: format!("type OID {oid}"),
                });
            }
        }
        Ok(())
    }

    fn on_query(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ClientOutcome {
        let body = &msg[5..];
        let sql_bytes = body.strip_suffix(&[0]).unwrap_or(body);
        let Ok(sql) = std::str::from_utf8(sql_bytes) else {
            if self
                .engine
                .policy()
                .mentions_protected_table_bytes(sql_bytes)
            {
                return self.refuse_query(
                    RewriteError::Malformed("Query (not UTF-8) naming a protected table"),
                    out,
                );
            }
            if self.access_on {
                self.role
                    .note(access::effect(&String::from_utf8_lossy(sql_bytes)));
            }
            self.push(Expect::Query {
                refusal: false,
                copy: None,
            });
            return ClientOutcome::forward();
        };
        let role_effect = if self.access_on {
            access::effect(sql)
        } else {
            None
        };
        if pgveil_sql::mentions_timezone_setting(sql) {
            self.tz_in_flight = true;
        }
        let setting = pgveil_sql::mentions_text_setting(sql);
        let unsure_before = self.text_settings_in_flight;
        if setting {
            // Unsettled until the server has answered this and everything
            // before it (ParameterStatus comes before that answer).
            self.text_settings_in_flight = true;
        }
        let analysis = self
            .ctx
            .analyzer
            .analyze_session(sql, self.reg.has_statements());
        let plan = match analysis {
            Ok(Analysis::Passthrough) => {
                self.role.note(role_effect);
                self.push(Expect::Query {
                    refusal: false,
                    copy: None,
                });
                return ClientOutcome::forward();
            }
            Err(r) => return self.refuse_query_text(sql, r.into(), out),
            Ok(Analysis::Planned(p)) => p,
        };
        // A setting changed earlier in this same string applies to the
        // statements after it.
        let unsure = unsure_before || (setting && plan.statements.len() > 1);
        let copy_only = plan.statements.iter().all(|s| s.copy.is_some());
        if let Err(e) = self.check_plan(&plan, sql, unsure, copy_only) {
            return self.refuse_query_text(sql, e, out);
        }
        // Statement by statement, as the server will run them: a PREPARE
        // earlier in the string binds an EXECUTE later in it. Each
        // statement's registry changes are confirmed by its CommandComplete.
        let mut literals: Vec<LiteralTarget> = Vec::new();
        let mut changes: VecDeque<usize> = VecDeque::new();
        let mut copy = None;
        let mut refused = None;
        // A role change earlier in the string leaves the role unconfirmed
        // for the statements after it.
        let mut role_unsettled = false;
        let mut audits: VecDeque<Option<Box<Draft>>> = VecDeque::new();
        for st in &plan.statements {
            let view = if role_unsettled {
                RoleView::Unknown
            } else {
                self.role.for_client().clone()
            };
            let cols = self.sql_access_cols(st);
            if let Err(e) = self
                .check_statement(st)
                .and_then(|()| self.check_access(&cols, &view))
                .and_then(|()| self.admit(&cols))
            {
                refused = Some(e);
                break;
            }
            if self.observer.is_some() {
                let text = sql.get(st.span.clone()).unwrap_or(sql);
                audits.push_back(
                    self.draft(&cols, &view, "simple", || self.plan_fingerprint(st, text)),
                );
            }
            if self.access_on {
                let text = sql.get(st.span.clone()).unwrap_or(sql);
                role_unsettled |= self.role.unsettles(access::effect(text));
            }
            if let Some(p) = &st.copy {
                if plan.statements.len() > 1 {
                    refused = Some(RewriteError::CopyFormat {
                        table: p.table.to_string(),
                        line: 0,
                        reason: "a COPY on a protected table must be the only statement of its query string".to_owned(),
                    });
                    break;
                }
                match self.copy_codec(p) {
                    Ok(c) => copy = Some(c),
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            literals.extend(st.literals.iter().cloned());
            match self.bind_execute(st) {
                Ok(l) => literals.extend(l),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
            self.reg.apply_sql(st);
            if matches!(st.prepared, Some(pgveil_sql::PreparedOp::DeallocateAll)) {
                self.stmt_shapes.clear();
            }
            changes.push_back(self.reg.take_fresh());
        }
        if let Some(e) = refused {
            // Nothing of the string runs: none of its changes stand.
            let fresh = self.reg.take_fresh();
            self.reg.withdraw(changes.iter().sum::<usize>() + fresh);
            return self.refuse_query_text(sql, e, out);
        }
        let edits: Vec<TextEdit> = plan
            .statements
            .iter()
            .flat_map(|st| st.edits.iter().cloned())
            .collect();
        let mut copy_out = None;
        let mut copy_in = None;
        if let Some(codec) = copy {
            if codec.is_copy_in() {
                copy_in = Some(CopyStream::new(codec, self.tz(), self.server_major));
            } else {
                copy_out = Some(codec);
            }
        }
        let spliced = if literals.is_empty() && edits.is_empty() {
            None
        } else {
            match self.splice(sql, &literals, &edits) {
                Ok(new_sql) => Some(new_sql),
                Err(e) => {
                    self.reg.withdraw(changes.iter().sum::<usize>());
                    return self.refuse_query_text(sql, e, out);
                }
            }
        };
        self.copy_in = copy_in;
        self.role.note(role_effect);
        self.expect.q.push_back(Pending {
            expect: Expect::Query {
                refusal: false,
                copy: copy_out,
            },
            ops: 0,
            statements: changes,
            internal_first: false,
            audits,
        });
        if let Some(new_sql) = spliced {
            out.extend_from_slice(frontend::query(new_sql.as_bytes()).raw());
            return ClientOutcome {
                action: ClientAction::Replace,
                path: Path::Rewritten,
                error: None,
            };
        }
        ClientOutcome {
            action: ClientAction::Forward,
            path: Path::Rewritten,
            error: None,
        }
    }

    /// The protected columns of a simple-query statement; for SQL `EXECUTE`,
    /// those of the prepared statement it runs.
    fn sql_access_cols(&self, st: &StatementPlan) -> AccessCols {
        let mut cols = AccessCols::of(st);
        if let Some(pgveil_sql::PreparedOp::Execute { name, .. }) = &st.prepared {
            if let Some(Entry::Sql(plan)) = self.reg.entry(name.as_bytes()) {
                let inner = AccessCols::of(plan);
                cols.reads.extend(inner.reads);
                cols.writes.extend(inner.writes);
                cols.deletes.extend(inner.deletes);
            }
        }
        cols
    }

    /// The literals of an `EXECUTE`, refusing one whose statement was
    /// created by a protocol `Parse` with protected parameters (pgveil binds
    /// those in `Bind`, not in SQL text).
    fn bind_execute(&self, st: &StatementPlan) -> Result<Vec<LiteralTarget>, RewriteError> {
        let Some(pgveil_sql::PreparedOp::Execute { name, .. }) = &st.prepared else {
            return Ok(Vec::new());
        };
        if self.reg.entry(name.as_bytes()).is_none() {
            return Err(Self::unknown_statement(name.as_bytes()));
        }
        {
            if self.unsettled(name.as_bytes(), false) {
                return Err(Self::unsettled_error(name.as_bytes()));
            }
            if self
                .reg
                .statement(name.as_bytes())
                .is_some_and(|i| !i.params.is_empty())
            {
                return Err(pgveil_sql::Refusal {
                    sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
                    column: None,
                    reason: format!(
                        "prepared statement {name} was created with the extended protocol and has protected parameters: run it with Bind/Execute, not SQL EXECUTE"
                    ),
                }
                .into());
            }
        }
        // Only this name's plan: the registry may hold many statements.
        let mut one = pgveil_sql::PreparedStatements::new();
        if let Some(Entry::Sql(plan)) = self.reg.entry(name.as_bytes()) {
            one.set(name, Some(Arc::clone(plan)));
        }
        Ok(one.bind_execute(st)?)
    }

    fn on_parse(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ClientOutcome {
        let mut pos = 5;
        let (Some(name), Some(query)) = (cstr(msg, &mut pos), cstr(msg, &mut pos)) else {
            // Malformed: the server reports it.
            self.push(Expect::Parse { internal: false });
            return ClientOutcome::forward();
        };
        let name = Bytes::copy_from_slice(name);
        let Ok(sql) = std::str::from_utf8(query) else {
            if self.engine.policy().mentions_protected_table_bytes(query) {
                return self.refuse_extended(
                    RewriteError::Malformed("Parse (not UTF-8) naming a protected table"),
                    out,
                );
            }
            self.reg.parse(name, None);
            self.push(Expect::Parse { internal: false });
            return ClientOutcome::forward();
        };
        if looks_like_copy_in(sql) {
            if self.copy_statements.len() >= MAX_TRACKED {
                self.copy_statements.clear();
            }
            self.copy_statements.insert(name.clone());
        } else if !self.copy_statements.is_empty() {
            self.copy_statements.remove(&name);
        }
        // Never forgotten on a Parse: the server may reject this Parse (a
        // name in use) or skip it (after an error in its batch) and keep the
        // statement the name held. A name that no longer changes the role
        // costs a role query per batch that executes it, nothing worse.
        if let (true, Some(e)) = (self.access_on, access::effect(sql)) {
            if self.role_statements.len() >= MAX_TRACKED
                && !self.role_statements.contains_key(&name)
            {
                // Forgetting one would let its Execute change the role
                // unseen: refuse instead.
                return self.refuse_extended(
                    too_many("prepared statements that may change the role"),
                    out,
                );
            }
            self.role_statements.insert(name.clone(), e);
        }
        let unsure = self.text_settings_in_flight;
        if pgveil_sql::mentions_text_setting(sql) {
            self.text_settings_in_flight = true;
        }
        if pgveil_sql::mentions_timezone_setting(sql) {
            self.tz_in_flight = true;
        }
        let plan = match self
            .ctx
            .analyzer
            .analyze_session(sql, self.reg.has_statements())
        {
            Ok(Analysis::Passthrough) => {
                self.reg.parse(name, None);
                self.push(Expect::Parse { internal: false });
                return ClientOutcome::forward();
            }
            Err(r) => return self.refuse_extended(r.into(), out),
            Ok(Analysis::Planned(p)) => p,
        };
        if plan.statements.len() > 1 {
            return self.refuse_extended(
                pgveil_sql::Refusal {
                    sqlstate: "42601",
                    column: None,
                    reason: "cannot insert multiple commands into a prepared statement".to_owned(),
                }
                .into(),
                out,
            );
        }
        let copy_only = plan.statements.iter().all(|s| s.copy.is_some());
        if let Err(e) = self.check_plan(&plan, sql, unsure, copy_only) {
            return self.refuse_extended(e, out);
        }
        let Ok(frontend::FrontendMessage::Parse(mut parse)) =
            frontend::FrontendMessage::decode(&frame_of(msg))
        else {
            return self.refuse_extended(RewriteError::Malformed("Parse"), out);
        };
        let Some(st) = plan.statements.first() else {
            self.reg.parse(name, None);
            self.push(Expect::Parse { internal: false });
            return ClientOutcome::forward();
        };
        let mut columns = AccessCols::of(st);
        if self.observer.is_some() && !columns.is_empty() {
            columns.fingerprint = Some(self.plan_fingerprint(st, sql));
        }
        let columns = Arc::new(columns);
        let view = self.role.for_client().clone();
        if let Err(e) = self
            .check_statement(st)
            .and_then(|()| self.check_access(&columns, &view))
        {
            return self.refuse_extended(e, out);
        }
        // Recorded only if the server rejects the Parse (an Execute records
        // each run).
        let parse_draft = self.draft(&columns, &view, "extended", || {
            columns.fingerprint.clone().unwrap_or_else(|| Arc::from(""))
        });
        let copy = match &st.copy {
            Some(plan) => match self.copy_codec(plan) {
                Ok(c) => Some(c),
                Err(e) => return self.refuse_extended(e, out),
            },
            None => None,
        };
        let mut literals = st.literals.clone();
        match self.bind_execute(st) {
            Ok(l) => literals.extend(l),
            Err(e) => return self.refuse_extended(e, out),
        }
        let mut params = Vec::new();
        let mut describe = Vec::new();
        let mut expansions = Vec::new();
        let mut next_param = st.max_param;
        for (&n, p) in &st.params {
            let col = match self.ctx.catalog.column(&p.target.column) {
                Ok(c) => c.clone(),
                Err(e) => return self.refuse_extended(e, out),
            };
            if p.usage == Comparison::Equality && col.mode != pgveil_policy::Mode::Deterministic {
                // The analyser refuses this; double-check.
                return self.refuse_extended(
                    pgveil_sql::Refusal {
                        sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
                        column: Some(p.target.column.clone()),
                        reason: format!("{} is randomized: it cannot be compared", p.target.column),
                    }
                    .into(),
                    out,
                );
            }
            let idx = (n as usize).saturating_sub(1);
            if idx >= u16::MAX as usize {
                continue;
            }
            let declared_oid = parse.param_types.get(idx).copied().unwrap_or(0);
            let declared = match (declared_oid, p.array) {
                (0 | UNKNOWN_OID, _) => None,
                (oid, false) => LogicalType::from_oid(oid),
                (oid, true) => crate::array::element_of(oid),
            };
            if declared.is_none() && !matches!(declared_oid, 0 | UNKNOWN_OID) {
                // PostgreSQL would convert from that type (bpchar drops
                // trailing spaces) or reject it (record); pgveil cannot
                // reproduce either on ciphertext.
                return self.refuse_extended(
                    RewriteError::ParamType {
                        param: n,
                        column: col.column.clone(),
                        logical: col.logical.name(),
                        declared: declared_oid,
                    },
                    out,
                );
            }
            if parse.param_types.len() <= idx {
                parse.param_types.resize(idx + 1, 0);
            }
            let storage = col.storage.param_oid();
            // During a key rotation `col = $n` must match every live
            // version: it becomes `col = ANY($n)` with an array bound.
            let versions = col.lookup_versions();
            let expand = p.expandable() && versions > 1;
            let mut extras = Vec::new();
            if expand {
                for site in &p.sites {
                    let op = if site.negated { "ALL" } else { "ANY" };
                    expansions.push(TextEdit {
                        span: site.span.clone(),
                        text: format!("{op}(${n})"),
                    });
                }
            } else if p.list_only() && versions > 1 && next_param < 60_000 {
                // `IN ($n)` → `IN ($n, $m…)`: parameters appended after the
                // client's, one per older key version.
                let mut text = format!("${n}");
                for _ in 1..versions {
                    next_param += 1;
                    extras.push(next_param as usize - 1);
                    text.push_str(&format!(", ${next_param}"));
                }
                for site in &p.sites {
                    expansions.push(TextEdit {
                        span: site.span.clone(),
                        text: text.clone(),
                    });
                }
            }
            for &e in &extras {
                if parse.param_types.len() <= e {
                    parse.param_types.resize(e + 1, 0);
                }
                parse.param_types[e] = storage;
            }
            parse.param_types[idx] = if p.array || expand {
                crate::array::storage_array_oid(storage)
            } else {
                storage
            };
            describe.push((
                idx,
                match (declared_oid, p.array) {
                    (0, false) => col.logical.type_oid(),
                    (0, true) => crate::array::array_oid(col.logical),
                    (oid, _) => oid,
                },
            ));
            params.push(ParamInfo {
                idx,
                col,
                declared,
                declared_oid,
                array: p.array,
                usage: p.usage,
                expand,
                extras,
            });
        }
        let mut replacements = st.edits.clone();
        for e in expansions {
            // `col = $n` → `col = ANY($n)`: replaces the cast removal too.
            replacements.retain(|r| r.span != e.span);
            replacements.push(e);
        }
        if !literals.is_empty() || !replacements.is_empty() {
            match self.splice(sql, &literals, &replacements) {
                Ok(s) => parse.query = Bytes::from(s),
                Err(e) => return self.refuse_extended(e, out),
            }
        }
        if self.reg.statement_count() >= MAX_TRACKED && self.reg.statement(&name).is_none() {
            // Bounded, and never by forgetting one: a forgotten statement's
            // parameters would reach the server unencrypted.
            return self.refuse_extended(too_many("prepared statements"), out);
        }
        self.reg.parse(
            name.clone(),
            Some(StmtInfo {
                params,
                describe: Arc::new(ParamFix {
                    oids: describe,
                    keep: (next_param > st.max_param).then_some(st.max_param as usize),
                }),
                described: false,
                copy,
                sql_op: st.prepared.is_some().then(|| Arc::new(st.clone())),
                columns,
            }),
        );
        self.push(Expect::Parse { internal: false });
        if parse_draft.is_some() {
            if let Some(p) = self.expect.q.back_mut() {
                p.audits.push_back(parse_draft);
            }
        }
        out.extend_from_slice(parse.encode().raw());
        ClientOutcome {
            action: ClientAction::Replace,
            path: Path::Rewritten,
            error: None,
        }
    }

    fn on_bind(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ClientOutcome {
        let mut pos = 5;
        let (Some(portal), Some(stmt)) = (cstr(msg, &mut pos), cstr(msg, &mut pos)) else {
            self.push(Expect::Bind {
                portal: Bytes::new(),
                statement: Bytes::new(),
                formats: Vec::new(),
                internal: false,
                tracked: false,
            });
            return ClientOutcome::forward();
        };
        let portal = Bytes::copy_from_slice(portal);
        if self.copy_statements.contains(stmt) {
            if self.copy_portals.len() >= MAX_TRACKED {
                self.copy_portals.clear();
            }
            self.copy_portals.insert(portal.clone());
        } else if !self.copy_portals.is_empty() {
            self.copy_portals.remove(&portal);
        }
        // Likewise kept through a Bind the server may reject or skip.
        if let (true, Some(e)) = (self.access_on, self.role_statements.get(stmt).copied()) {
            if self.role_portals.len() >= MAX_TRACKED && !self.role_portals.contains_key(&portal) {
                return self.refuse_extended(too_many("portals that may change the role"), out);
            }
            self.role_portals.insert(portal.clone(), e);
        }
        if self.unsettled(stmt, false) {
            let e = Self::unsettled_error(stmt);
            return self.refuse_extended(e, out);
        }
        if self.reg.entry(stmt).is_none() {
            let e = Self::unknown_statement(stmt);
            return self.refuse_extended(e, out);
        }
        if matches!(self.reg.entry(stmt), Some(Entry::Sql(_))) {
            // The name holds a protected statement made by SQL PREPARE:
            // pgveil binds its arguments in EXECUTE text, not in Bind.
            let name = String::from_utf8_lossy(stmt).into_owned();
            return self.refuse_extended(
                pgveil_sql::Refusal {
                    sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
                    column: None,
                    reason: format!(
                        "prepared statement {name} was created by SQL PREPARE on a protected table: run it with SQL EXECUTE, not a protocol Bind"
                    ),
                }
                .into(),
                out,
            );
        }
        let Some(info) = self.reg.statement(stmt) else {
            if self.reg.portal(&portal).is_some() {
                self.reg.set_portal(portal.clone(), None);
            }
            self.push(Expect::Bind {
                portal,
                statement: Bytes::new(),
                formats: Vec::new(),
                internal: false,
                tracked: false,
            });
            return ClientOutcome::forward();
        };
        if let (false, Some(enc)) = (info.params.is_empty(), self.unsafe_encoding.clone()) {
            return self.refuse_extended(
                pgveil_sql::Refusal {
                    sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
                    column: info.params.first().map(|p| p.col.column.clone()),
                    reason: format!(
                        "client_encoding is {enc}: pgveil reads and encrypts protected values as UTF-8; SET client_encoding TO 'UTF8'"
                    ),
                }
                .into(),
                out,
            );
        }
        let statement = Bytes::copy_from_slice(stmt);
        let Ok(frontend::FrontendMessage::Bind(mut bind)) =
            frontend::FrontendMessage::decode(&frame_of(msg))
        else {
            return self.refuse_extended(RewriteError::Malformed("Bind"), out);
        };
        let mut changed = false;
        // Parameters pgveil added for older key versions (`IN ($n, $m)`),
        // filled below; a Bind with the wrong count is the server's to report.
        let count_ok = info.describe.keep.is_none_or(|k| k == bind.params.len());
        let mut added: Vec<(usize, Bytes)> = Vec::new();
        // Each parameter's binary envelope, before its storage encoding.
        let mut envelope = Vec::new();
        for p in &info.params {
            let Some(value) = bind.params.get(p.idx).and_then(Option::as_ref) else {
                continue; // NULL stays NULL (and so do its added parameters)
            };
            let format = frontend::format_at(&bind.param_formats, p.idx);
            let textual = format == Format::Text
                || matches!(p.col.logical.name(), "text" | "varchar" | "json" | "jsonb");
            if self.text_settings_in_flight && textual && !value.is_ascii() {
                // The server converts it from a client_encoding that may be
                // changing; pgveil would encrypt it as UTF-8.
                let err = pgveil_sql::Refusal {
                    sqlstate: crate::error::FEATURE_NOT_SUPPORTED,
                    column: Some(p.col.column.clone()),
                    reason: format!(
                        "the client encoding may be changing (a statement setting it is still running); bind the value for protected column {} after its answer",
                        p.col.column
                    ),
                };
                return self.refuse_extended(err.into(), out);
            }
            if format == Format::Binary && p.declared_oid != 0 && p.declared.is_none() {
                let err = RewriteError::ParamType {
                    param: p.idx as u32 + 1,
                    column: p.col.column.clone(),
                    logical: p.col.logical.name(),
                    declared: p.declared_oid,
                };
                return self.refuse_extended(err, out);
            }
            let result = if p.array {
                self.encrypt_array(p, value, format)
            } else {
                // The canonical plaintext is wiped whatever happens next.
                p.col
                    .canonical_from_client(value, format, p.declared, self.tz())
                    .and_then(|mut c| {
                        let r = if p.expand {
                            p.col.encrypt_lookup(&c).and_then(|all| {
                                let els = all
                                    .iter()
                                    .map(|env| p.col.param_value(env, Format::Binary).map(Some))
                                    .collect::<Result<Vec<_>, _>>()?;
                                Ok((
                                    crate::array::encode_binary(p.col.storage.param_oid(), &els),
                                    Format::Binary,
                                ))
                            })
                        } else if count_ok && !p.extras.is_empty() {
                            // Active version in the client's slot, older ones added.
                            p.col.encrypt_lookup(&c).and_then(|all| {
                                for (k, &e) in p.extras.iter().enumerate() {
                                    if let Some(env) = all.get(k + 1).or(all.last()) {
                                        let v = p.col.param_value(env, Format::Binary)?;
                                        added.push((e, Bytes::from(v)));
                                    }
                                }
                                Ok((p.col.param_value(&all[0], format)?, format))
                            })
                        } else {
                            let mut v = Vec::new();
                            p.col
                                .encrypt_stored_into(&c, format, &mut envelope, &mut v)
                                .map(|()| (v, format))
                        };
                        zeroize::Zeroize::zeroize(&mut c);
                        r
                    })
            };
            match result {
                Ok((v, f)) => {
                    bind.params[p.idx] = Some(Bytes::from(v));
                    if f != format {
                        set_param_format(&mut bind, p.idx, f);
                    }
                    changed = true;
                }
                Err(e) => return self.refuse_extended(e, out),
            }
        }
        let extras = info.params.iter().flat_map(|p| p.extras.iter().copied());
        if let (true, Some(last)) = (count_ok, extras.clone().max()) {
            bind.params.resize(last + 1, None);
            for e in extras {
                set_param_format(&mut bind, e, Format::Binary);
            }
            for (e, v) in added {
                bind.params[e] = Some(v);
            }
            changed = true;
        }
        let (copy, sql_op, columns) =
            (info.copy.clone(), info.sql_op.clone(), info.columns.clone());
        if self.reg.portal_count() >= MAX_TRACKED && self.reg.portal(&portal).is_none() {
            return self.refuse_extended(too_many("open portals"), out);
        }
        self.reg.set_portal(
            portal.clone(),
            Some(PortalInfo {
                statement: statement.clone(),
                described: false,
                copy,
                sql_op,
                columns,
            }),
        );
        self.push(Expect::Bind {
            portal,
            statement,
            formats: bind.result_formats.clone(),
            internal: false,
            tracked: true,
        });
        if changed {
            out.extend_from_slice(bind.encode().raw());
            ClientOutcome {
                action: ClientAction::Replace,
                path: Path::Rewritten,
                error: None,
            }
        } else {
            ClientOutcome {
                action: ClientAction::Forward,
                path: Path::Rewritten,
                error: None,
            }
        }
    }

    /// An array parameter: every element encrypted (under every live key
    /// version for a deterministic column), sent as a binary array of the
    /// storage type.
    fn encrypt_array(
        &self,
        p: &ParamInfo,
        value: &[u8],
        format: Format,
    ) -> Result<(Vec<u8>, Format), RewriteError> {
        let bad = |reason: &str| RewriteError::InvalidValue {
            column: p.col.column.clone(),
            reason: format!("array parameter ${}: {reason}", p.idx + 1),
            sqlstate: "22P02",
        };
        let (declared, elements) = match format {
            Format::Text => (p.declared, crate::array::parse_text(value).map_err(bad)?),
            Format::Binary => {
                let (oid, els) = crate::array::parse_binary(value).map_err(bad)?;
                // As PostgreSQL's array_recv: the elements must be of the
                // parameter's element type (declared, else the column's).
                let want = p.declared.unwrap_or(p.col.logical);
                if oid != want.type_oid() {
                    return Err(bad(
                        "binary array elements of another type than the parameter's",
                    ));
                }
                (Some(want), els)
            }
        };
        let mut out = Vec::with_capacity(elements.len());
        for e in elements {
            match e {
                None => out.push(None),
                Some(e) => {
                    let c = p
                        .col
                        .canonical_from_client(&e, format, declared, self.tz())?;
                    let all = match p.usage {
                        Comparison::Equality => p.col.encrypt_lookup(&c)?,
                        Comparison::Write => vec![p.col.encrypt(&c)?],
                    };
                    for env in all {
                        out.push(Some(p.col.param_value(&env, Format::Binary)?));
                    }
                }
            }
        }
        Ok((
            crate::array::encode_binary(p.col.storage.param_oid(), &out),
            Format::Binary,
        ))
    }

    fn on_describe(&mut self, msg: &[u8]) {
        let mut pos = 6;
        let name = cstr(msg, &mut pos).unwrap_or_default();
        if msg.get(5) == Some(&b'S') {
            let (params, tracked) = match self.reg.statement_mut(name) {
                Some(info) => {
                    info.described = true;
                    (Some(info.describe.clone()), true)
                }
                None => (None, false),
            };
            self.push(Expect::DescribeStatement {
                name: Bytes::copy_from_slice(name),
                params,
                tracked,
            });
        } else {
            let tracked = match self.reg.portal_mut(name) {
                Some(p) => {
                    p.described = true;
                    true
                }
                None => false,
            };
            self.push(Expect::DescribePortal {
                name: Bytes::copy_from_slice(name),
                internal: false,
                tracked,
            });
        }
    }

    fn on_execute(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ClientOutcome {
        let mut pos = 5;
        let name = cstr(msg, &mut pos).unwrap_or_default();
        if self.copy_portals.contains(name) {
            self.copy_in_mode = true;
        }
        if self.unsettled(name, true) {
            let e = Self::unsettled_error(name);
            return self.refuse_extended(e, out);
        }
        let mut draft = None;
        if self.access_on {
            if let Some(p) = self.reg.portal(name) {
                let view = self.role.for_client().clone();
                let cols = p.columns.clone();
                if let Err(e) = self
                    .check_access(&cols, &view)
                    .and_then(|()| self.admit(&cols))
                {
                    return self.refuse_extended(e, out);
                }
                draft = self.draft(&cols, &view, "extended", || {
                    cols.fingerprint.clone().unwrap_or_else(|| Arc::from(""))
                });
            }
            let effect = self.role_portals.get(name).copied();
            self.role.note(effect);
        }
        let Some(portal) = self.reg.portal(name) else {
            self.push(Expect::Execute {
                portal: Bytes::copy_from_slice(name),
                refusal: false,
                copy: None,
                rows: Default::default(),
            });
            return ClientOutcome::forward();
        };
        let (codec, sql_op, described) = (
            portal.copy.clone(),
            portal.sql_op.clone(),
            portal.described
                || self
                    .reg
                    .statement(&portal.statement)
                    .is_some_and(|s| s.described),
        );
        let mut copy_out = None;
        if let Some(codec) = codec {
            if codec.is_copy_in() {
                self.copy_in = Some(CopyStream::new(codec, self.tz(), self.server_major));
                self.copy_in_mode = true;
            } else {
                copy_out = Some(codec);
            }
        }
        let name = Bytes::copy_from_slice(name);
        let mut action = ClientAction::Forward;
        if !described {
            // The result shape is unknown: ask the server, keep the answer.
            if let Some(p) = self.reg.portal_mut(&name) {
                p.described = true;
            }
            let mut body = vec![b'P'];
            body.extend_from_slice(&name);
            body.push(0);
            out.extend_from_slice(Frame::new(frontend::tag::DESCRIBE, &body).raw());
            out.extend_from_slice(msg);
            self.push(Expect::DescribePortal {
                name: name.clone(),
                internal: true,
                tracked: true,
            });
            action = ClientAction::Replace;
        }
        // PREPARE/DEALLOCATE run through the extended protocol: their effect,
        // confirmed by this Execute's CommandComplete.
        if let Some(op) = sql_op {
            self.reg.apply_sql(&op);
        }
        self.push(Expect::Execute {
            portal: name,
            refusal: false,
            copy: copy_out,
            rows: Default::default(),
        });
        if draft.is_some() {
            if let Some(p) = self.expect.q.back_mut() {
                p.audits.push_back(draft);
            }
        }
        ClientOutcome {
            action,
            path: Path::Rewritten,
            error: None,
        }
    }

    // ------------------------------------------------------------------
    // Server → client
    // ------------------------------------------------------------------

    /// Handles one complete server message. For [`ServerAction::Replace`]
    /// the replacement is appended to `out`.
    pub fn server_message(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ServerAction {
        let tag = msg[0];
        // Asynchronous messages may come at any time.
        match tag {
            backend::tag::PARAMETER_STATUS => {
                if let Ok((n, v)) = backend::decode_parameter_status(&frame_of(msg)) {
                    self.parameter_status(&n, &v);
                }
                return ServerAction::Forward;
            }
            backend::tag::NOTICE_RESPONSE | backend::tag::NOTIFICATION => {
                return if self.poisoned {
                    ServerAction::Drop
                } else {
                    ServerAction::Forward
                };
            }
            _ => {}
        }
        if matches!(self.expect.front(), Some(Expect::Refresh)) {
            return self.refresh_message(msg);
        }
        if matches!(self.expect.front(), Some(Expect::RoleRefresh)) {
            return self.role_refresh_message(msg);
        }
        let was_poisoned = self.poisoned;
        let action = self.server_inner(msg, out);
        if !was_poisoned {
            return action;
        }
        if tag == backend::tag::READY_FOR_QUERY {
            self.poisoned = false;
            return ServerAction::Forward;
        }
        // After a decryption failure: nothing more until ReadyForQuery.
        if action == ServerAction::Replace {
            out.clear();
        }
        ServerAction::Drop
    }

    fn refresh_message(&mut self, msg: &[u8]) -> ServerAction {
        let Some((reader, _)) = self.refresh.as_mut() else {
            self.pop_done();
            return ServerAction::Drop;
        };
        let frame = frame_of(msg);
        let done = reader.feed(&frame).unwrap_or(false);
        if !done {
            return ServerAction::Drop;
        }
        self.pop_done();
        let idle = backend::TransactionStatus::decode(&frame)
            .map(|s| s == backend::TransactionStatus::Idle)
            .unwrap_or(false);
        let (reader, generation) = self.refresh.take().expect("checked");
        if let Some(rows) = reader.finish() {
            let ctx = self.engine.build(&rows, generation);
            if idle {
                self.engine.publish(&self.database, &ctx);
            }
            self.ctx = ctx;
            self.stale = false;
        }
        ServerAction::RefreshDone
    }

    fn shape_of(&self, msg: &[u8]) -> Result<Option<(Shape, Vec<FieldDescription>)>, RewriteError> {
        let frame = frame_of(msg);
        let mut fields = backend::decode_row_description(&frame)
            .map_err(|_| RewriteError::Malformed("RowDescription"))?;
        let mut cols = Vec::with_capacity(fields.len());
        let mut any = false;
        for f in &mut fields {
            let c = self
                .ctx
                .catalog
                .by_attr(f.table_oid, f.column_attr)
                .cloned();
            if let Some(c) = &c {
                any = true;
                f.type_oid = c.logical.type_oid();
                f.type_size = crate::values::type_size(c.logical);
                f.type_modifier = c.typmod;
            }
            cols.push(c);
        }
        if !any {
            return Ok(None);
        }
        let formats = fields.iter().map(|f| f.format).collect();
        let reveal = self.reveal_of(&cols, &self.role.confirmed);
        Ok(Some((
            Shape {
                cols,
                formats,
                reveal,
                epoch: self.role.epoch,
            },
            fields,
        )))
    }

    fn fail(&mut self, err: RewriteError, out: &mut Vec<u8>) -> ServerAction {
        // The client gets the error; everything up to ReadyForQuery is dropped.
        out.clear();
        if let Some(d) = self.front_draft_mut() {
            d.refused = Some((err.sqlstate(), err.reason_label()));
        } else if self.observer.is_some() {
            // A result withheld from a statement with no record of its own
            // (a FETCH, a statement pgveil did not analyse).
            let protocol = if matches!(self.expect.front(), Some(Expect::Query { .. })) {
                "simple"
            } else {
                "extended"
            };
            self.emit_refusal("other", protocol, Arc::from(""), &err);
        }
        let e = backend::error_response(
            backend::Severity::Error,
            err.sqlstate(),
            &err.to_string(),
            None,
            err.hint(),
        );
        out.extend_from_slice(e.raw());
        self.poisoned = true;
        ServerAction::Replace
    }

    fn server_inner(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ServerAction {
        let tag = msg[0];
        match tag {
            backend::tag::ERROR_RESPONSE => {
                self.copy_out = None;
                let failed = self.take_front_draft().or_else(|| self.bind_draft());
                if let Some(d) = failed {
                    let sqlstate = ErrorFields::decode_body(&Bytes::copy_from_slice(&msg[5..]))
                        .ok()
                        .and_then(|e| e.code().map(|c| String::from_utf8_lossy(c).into_owned()))
                        .unwrap_or_default();
                    let rows = d.rows;
                    self.emit(*d, Outcome::ServerError { sqlstate, rows });
                }
                if self.access_on {
                    self.role.server_error();
                }
                let action = self.on_error(msg, out);
                match self.copy_failed.take() {
                    // The server's answer to pgveil's CopyFail: report why.
                    Some(e) => {
                        out.clear();
                        let r = backend::error_response(
                            backend::Severity::Error,
                            e.sqlstate(),
                            &e.to_string(),
                            None,
                            e.hint(),
                        );
                        out.extend_from_slice(r.raw());
                        ServerAction::Replace
                    }
                    None => action,
                }
            }
            backend::tag::COPY_OUT => {
                let codec = match self.expect.front() {
                    Some(Expect::Query { copy, .. }) | Some(Expect::Execute { copy, .. }) => {
                        copy.clone()
                    }
                    _ => None,
                };
                let Some(codec) = codec else {
                    return ServerAction::Forward;
                };
                let width = msg
                    .get(6..8)
                    .map(|b| i16::from_be_bytes([b[0], b[1]]) as i64)
                    .unwrap_or(-1);
                if msg.get(5) != Some(&u8::from(codec.is_binary())) || width != codec.width() as i64
                {
                    return self.fail(
                        RewriteError::Malformed(
                            "CopyOutResponse (not the expected format or columns)",
                        ),
                        out,
                    );
                }
                let reveal = self.reveal_of(codec.columns(), &self.role.confirmed);
                let shape = Shape {
                    cols: codec.columns().to_vec(),
                    formats: Vec::new(),
                    reveal,
                    epoch: self.role.epoch,
                };
                if let Some(e) = self.denial(&shape) {
                    return self.fail(e, out);
                }
                let masks = shape
                    .reveal
                    .iter()
                    .map(|r| match r {
                        Reveal::Mask(m) => Some(*m),
                        _ => None,
                    })
                    .collect();
                self.copy_out =
                    Some(CopyStream::new(codec, self.tz, self.server_major).with_masks(masks));
                ServerAction::Forward
            }
            backend::tag::COPY_DATA | backend::tag::COPY_DONE => {
                let Some(stream) = self.copy_out.as_mut() else {
                    return ServerAction::Forward;
                };
                let start = out.len();
                out.push(backend::tag::COPY_DATA);
                out.extend_from_slice(&[0; 4]);
                let r = if tag == backend::tag::COPY_DATA {
                    stream.feed(&msg[5..], out)
                } else {
                    stream.finish(out)
                };
                if let Err(e) = r {
                    self.copy_out = None;
                    return self.fail(e, out);
                }
                let n = out.len() - start - 1;
                if n == 4 {
                    out.truncate(start);
                } else {
                    out[start + 1..start + 5].copy_from_slice(&(n as u32).to_be_bytes());
                }
                if tag == backend::tag::COPY_DONE {
                    self.copy_out = None;
                    out.extend_from_slice(msg);
                }
                if out.is_empty() {
                    ServerAction::Drop
                } else {
                    ServerAction::Replace
                }
            }
            backend::tag::PARSE_COMPLETE => match self.pop_done() {
                Some(Expect::Parse { internal: true }) => ServerAction::Drop,
                _ => ServerAction::Forward,
            },
            backend::tag::BIND_COMPLETE => match self.pop_done() {
                Some(Expect::Bind {
                    portal,
                    statement,
                    formats,
                    internal,
                    tracked,
                }) => {
                    if tracked {
                        match self.stmt_shapes.get(&statement) {
                            Some(s) => {
                                let shape = Arc::new(s.with_formats(&formats));
                                self.portal_shapes.insert(portal, shape);
                            }
                            None => {
                                self.portal_shapes.remove(&portal);
                            }
                        }
                    } else {
                        self.portal_shapes.remove(&portal);
                    }
                    if internal {
                        ServerAction::Drop
                    } else {
                        ServerAction::Forward
                    }
                }
                _ => ServerAction::Forward,
            },
            backend::tag::CLOSE_COMPLETE => {
                if matches!(self.expect.front(), Some(Expect::Close)) {
                    self.pop_done();
                }
                ServerAction::Forward
            }
            backend::tag::PARAMETER_DESCRIPTION => {
                let Some(Expect::DescribeStatement {
                    params: Some(params),
                    ..
                }) = self.expect.front()
                else {
                    return ServerAction::Forward;
                };
                if params.oids.is_empty() && params.keep.is_none() {
                    return ServerAction::Forward;
                }
                let params = params.clone();
                match backend::decode_parameter_description(&frame_of(msg)) {
                    Ok(mut oids) => {
                        for &(i, oid) in params.oids.iter() {
                            if let Some(slot) = oids.get_mut(i) {
                                *slot = oid;
                            }
                        }
                        if let Some(keep) = params.keep {
                            oids.truncate(keep);
                        }
                        out.extend_from_slice(backend::encode_parameter_description(&oids).raw());
                        ServerAction::Replace
                    }
                    Err(_) => ServerAction::Forward,
                }
            }
            backend::tag::ROW_DESCRIPTION => self.on_row_description(msg, out),
            backend::tag::NO_DATA => match self.pop_done() {
                Some(Expect::DescribeStatement { name, tracked, .. }) => {
                    if tracked {
                        self.stmt_shapes.insert(name, Arc::new(Shape::empty()));
                    }
                    ServerAction::Forward
                }
                Some(Expect::DescribePortal { name, internal, .. }) => {
                    self.portal_shapes.remove(&name);
                    if internal {
                        ServerAction::Drop
                    } else {
                        ServerAction::Forward
                    }
                }
                _ => ServerAction::Forward,
            },
            backend::tag::DATA_ROW => {
                let shape = match self.expect.front() {
                    Some(Expect::Query { .. }) => self.current.clone(),
                    Some(Expect::Execute { portal, rows, .. }) => rows
                        .get_or_init(|| self.portal_shapes.get(portal).map(|s| self.decided(s)))
                        .clone(),
                    _ => None,
                };
                if self.observer.is_some() {
                    if let Some(s) = &shape {
                        let own = self
                            .expect
                            .q
                            .front()
                            .and_then(|p| p.audits.front())
                            .is_some_and(Option::is_some);
                        if !own && self.rows_draft.is_none() && s.cols.iter().any(Option::is_some) {
                            self.rows_draft = Some(self.shape_draft(s));
                        }
                    }
                    if let Some(d) = self.front_draft_mut() {
                        d.rows += 1;
                    }
                }
                match shape {
                    Some(s) if s.cols.iter().any(Option::is_some) => {
                        match self.decrypt_row(&s, msg, out) {
                            Ok(()) => ServerAction::Replace,
                            Err(e) => self.fail(e, out),
                        }
                    }
                    _ => ServerAction::Forward,
                }
            }
            backend::tag::COMMAND_COMPLETE => {
                if let Some(p) = self.expect.q.front_mut() {
                    if matches!(p.expect, Expect::Query { .. })
                        && std::mem::take(&mut p.internal_first)
                    {
                        return ServerAction::Drop;
                    }
                }
                self.note_ddl(msg);
                if let Some(d) = self.take_front_draft() {
                    let tag = msg.get(5..msg.len().saturating_sub(1)).unwrap_or_default();
                    self.emit(*d, observe::completed(tag));
                }
                match self.expect.front() {
                    Some(Expect::Query { .. }) => {
                        self.current = None;
                        // This statement of the string ran: its changes stand.
                        if let Some(n) = self
                            .expect
                            .q
                            .front_mut()
                            .and_then(|p| p.statements.pop_front())
                        {
                            self.reg.confirm(n);
                        }
                    }
                    Some(Expect::Execute { .. }) => {
                        self.pop_done();
                        self.drop_copy_syncs();
                    }
                    _ => {}
                }
                ServerAction::Forward
            }
            backend::tag::COPY_IN => {
                if matches!(self.expect.front(), Some(Expect::Execute { .. })) {
                    self.copy_in_started = true;
                }
                ServerAction::Forward
            }
            backend::tag::EMPTY_QUERY | backend::tag::PORTAL_SUSPENDED => {
                if let Some(d) = self.take_front_draft() {
                    let rows = d.rows;
                    self.emit(*d, Outcome::Suspended { rows });
                }
                if matches!(self.expect.front(), Some(Expect::Execute { .. })) {
                    self.pop_done();
                }
                ServerAction::Forward
            }
            backend::tag::READY_FOR_QUERY => {
                self.rows_draft = None;
                // Whatever is still expected before this point was skipped.
                while let Some(e) = self.expect.front() {
                    if matches!(
                        e,
                        Expect::Sync
                            | Expect::CopySync
                            | Expect::Query { .. }
                            | Expect::FunctionCall
                    ) {
                        // The cycle's end: it ran (a failed statement of a
                        // query string was dropped at its ErrorResponse).
                        self.pop_done();
                        break;
                    }
                    self.pop_skipped();
                }
                if self.expect.len() == 0 {
                    // Every statement sent has been answered, and with it any
                    // ParameterStatus that changed how text is read.
                    self.text_settings_in_flight = false;
                    self.tz_in_flight = false;
                }
                self.copy_in_started = false;
                self.current = None;
                let status = msg.get(5).copied().unwrap_or(b'I');
                self.idle = status == b'I';
                // A CopyFail the server dropped (it had failed already)
                // gets no answer of its own.
                self.copy_failed = None;
                if self.ddl_seen {
                    self.stale = true;
                    if self.idle {
                        self.ddl_seen = false;
                        self.engine.invalidate();
                    }
                }
                if self.idle && self.expect.len() == 0 && self.engine.superseded() {
                    // As PostgreSQL does on an administrator's shutdown: a
                    // FATAL error right after ReadyForQuery, at an idle
                    // point, so pools drop the connection and open another
                    // under the new policy.
                    out.extend_from_slice(msg);
                    out.extend_from_slice(
                        backend::error_response(
                            backend::Severity::Fatal,
                            "57P01",
                            "pgveil: the column-encryption policy changed since this connection was opened; reconnect",
                            None,
                            None,
                        )
                        .raw(),
                    );
                    return ServerAction::ReplaceAndClose;
                }
                ServerAction::Forward
            }
            _ => ServerAction::Forward,
        }
    }

    /// After a `COPY … FROM STDIN` `Execute` that entered copy mode: the
    /// `Sync`s sent during the copy got no answer.
    fn drop_copy_syncs(&mut self) {
        if std::mem::take(&mut self.copy_in_started) {
            while matches!(self.expect.front(), Some(Expect::CopySync)) {
                self.pop_done();
            }
        }
    }

    fn note_ddl(&mut self, msg: &[u8]) {
        let tag = &msg[5..];
        const DDL: [&[u8]; 13] = [
            b"CREATE VIEW",
            b"ALTER VIEW",
            b"DROP VIEW",
            b"CREATE MATERIALIZED VIEW",
            b"CREATE TABLE",
            b"ALTER TABLE",
            b"DROP TABLE",
            b"CREATE SCHEMA",
            b"ALTER SCHEMA",
            b"DROP SCHEMA",
            b"CREATE FOREIGN TABLE",
            b"ALTER FOREIGN TABLE",
            b"DROP FOREIGN TABLE",
        ];
        if DDL.iter().any(|d| tag.starts_with(d)) || tag.starts_with(b"IMPORT FOREIGN SCHEMA") {
            self.ddl_seen = true;
        }
    }

    fn on_row_description(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ServerAction {
        let shaped = match self.shape_of(msg) {
            Ok(s) => s,
            Err(e) => return self.fail(e, out),
        };
        let (shape, encoded) = match shaped {
            Some((shape, fields)) => (
                Some(Arc::new(shape)),
                Some(backend::encode_row_description(&fields)),
            ),
            None => (None, None),
        };
        let mut internal = false;
        match self.expect.front() {
            Some(Expect::Query { .. }) => {
                if let Some(e) = shape.as_deref().and_then(|s| self.denial(s)) {
                    return self.fail(e, out);
                }
                self.current = shape
            }
            Some(Expect::DescribeStatement { .. }) => {
                if let Some(Expect::DescribeStatement { name, tracked, .. }) = self.pop_done() {
                    if tracked {
                        let s = shape.unwrap_or_else(|| Arc::new(Shape::empty()));
                        self.stmt_shapes.insert(name, s);
                    }
                }
            }
            Some(Expect::DescribePortal { .. }) => {
                if let Some(Expect::DescribePortal {
                    name,
                    internal: i,
                    tracked,
                }) = self.pop_done()
                {
                    internal = i;
                    match shape {
                        Some(s) if tracked => {
                            self.portal_shapes.insert(name, s);
                        }
                        _ => {
                            self.portal_shapes.remove(&name);
                        }
                    }
                }
            }
            _ => {}
        }
        if internal {
            return ServerAction::Drop;
        }
        match encoded {
            Some(f) => {
                out.extend_from_slice(f.raw());
                ServerAction::Replace
            }
            None => ServerAction::Forward,
        }
    }

    fn on_error(&mut self, msg: &[u8], out: &mut Vec<u8>) -> ServerAction {
        let refusal = matches!(
            self.expect.front(),
            Some(Expect::Query { refusal: true, .. }) | Some(Expect::Execute { refusal: true, .. })
        );
        let extended = !matches!(
            self.expect.front(),
            None | Some(Expect::Query { .. })
                | Some(Expect::FunctionCall)
                | Some(Expect::Sync)
                | Some(Expect::CopySync)
        );
        if extended {
            // The server skips everything up to a Sync it does not ignore —
            // simple Queries and FunctionCalls sent before that Sync too
            // (postgres.c discards every message while ignore_till_sync is
            // set): the failed message and those after it change nothing.
            while let Some(e) = self.expect.front() {
                let stop = match e {
                    Expect::Sync => true,
                    Expect::CopySync => !self.copy_in_started,
                    _ => false,
                };
                if stop {
                    break;
                }
                self.pop_skipped();
            }
            self.copy_in_started = false;
        }
        if matches!(self.expect.front(), Some(Expect::Query { .. })) {
            self.current = None;
            // The failed statement and the rest of the string did not run.
            let rest: usize = self
                .expect
                .q
                .front_mut()
                .map(|p| std::mem::take(&mut p.statements).into_iter().sum())
                .unwrap_or(0);
            self.reg.discard(rest);
        }
        self.scrub_error(msg, refusal, out)
    }

    /// Drops the PL/pgSQL context of pgveil's own refusals and the key
    /// values PostgreSQL puts in constraint-violation details.
    fn scrub_error(&mut self, msg: &[u8], refusal: bool, out: &mut Vec<u8>) -> ServerAction {
        let body = Bytes::copy_from_slice(&msg[5..]);
        let Ok(mut e) = ErrorFields::decode_body(&body) else {
            return ServerAction::Forward;
        };
        let integrity = e.code().is_some_and(|c| c.starts_with(b"23"));
        if !refusal && !integrity {
            return ServerAction::Forward;
        }
        let mut changed = false;
        e.fields.retain(|(code, _)| {
            let drop = refusal && matches!(*code, b'W' | b'F' | b'L' | b'R');
            changed |= drop;
            !drop
        });
        if integrity {
            for (code, value) in &mut e.fields {
                if *code == backend::field::DETAIL {
                    if let Some(d) = redact_detail(value) {
                        *value = Bytes::from(d);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return ServerAction::Forward;
        }
        out.extend_from_slice(e.encode(backend::tag::ERROR_RESPONSE).raw());
        ServerAction::Replace
    }

    /// Refuses statements on protected columns while the observer cannot
    /// record them.
    fn admit(&self, cols: &AccessCols) -> Result<(), RewriteError> {
        match &self.observer {
            Some(o) if !cols.is_empty() => o
                .admit()
                .map_err(|reason| RewriteError::AuditUnavailable { reason }),
            _ => Ok(()),
        }
    }

    /// An audit draft for a statement with `cols`, decided under `view`.
    fn draft(
        &self,
        cols: &AccessCols,
        view: &RoleView,
        protocol: &'static str,
        fingerprint: impl FnOnce() -> Arc<str>,
    ) -> Option<Box<Draft>> {
        self.observer.as_ref()?;
        if cols.is_empty() {
            return None;
        }
        // Decided once per role epoch for a statement (not while the role
        // is unconfirmed: Unknown is not that epoch's answer).
        let known = match (view, &self.role.confirmed) {
            (RoleView::Known(a), RoleView::Known(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let epoch = self.role.epoch;
        let cached = known
            .then(|| {
                cols.facts.lock().ok().and_then(|g| {
                    g.as_ref()
                        .filter(|(e, _)| *e == epoch)
                        .map(|(_, f)| f.clone())
                })
            })
            .flatten();
        let columns = match cached {
            Some(f) => f,
            None => {
                let f = self.column_facts(cols, view);
                if known {
                    if let Ok(mut g) = cols.facts.lock() {
                        *g = Some((epoch, f.clone()));
                    }
                }
                f
            }
        };
        Some(Box::new(Draft {
            role: access::role_name(view),
            kind: cols.kind,
            protocol,
            fingerprint: fingerprint(),
            columns,
            started: std::time::Instant::now(),
            rows: 0,
            refused: None,
        }))
    }

    /// The statement's fingerprint for audit: literals replaced by `?`;
    /// nothing of a text whose strings pgveil cannot delimit (backslashes in
    /// plain strings while `standard_conforming_strings` is off or changing).
    fn fingerprint(&self, sql: &str) -> Arc<str> {
        if (!self.standard_strings || self.text_settings_in_flight)
            && pgveil_sql::has_backslash_in_plain_string(sql)
        {
            return Arc::from(
                "(not shown: backslashes in strings while standard_conforming_strings is off)",
            );
        }
        pgveil_sql::fingerprint(sql).into()
    }

    /// A draft for a failing `Bind` of a statement on protected columns.
    fn bind_draft(&self) -> Option<Box<Draft>> {
        self.observer.as_ref()?;
        let Some(Expect::Bind {
            statement,
            internal: false,
            tracked: true,
            ..
        }) = self.expect.front()
        else {
            return None;
        };
        let cols = self.reg.statement(statement)?.columns.clone();
        self.draft(&cols, &self.role.confirmed, "extended", || {
            cols.fingerprint.clone().unwrap_or_else(|| Arc::from(""))
        })
    }

    /// [`Self::fingerprint`], taken from the analysis when it made one.
    fn plan_fingerprint(&self, st: &StatementPlan, text: &str) -> Arc<str> {
        let unsure = !self.standard_strings || self.text_settings_in_flight;
        if st.fingerprint.is_empty() || unsure {
            return self.fingerprint(text);
        }
        st.fingerprint.clone()
    }

    /// A draft for rows of protected columns returned by a statement with
    /// none of its own (a `FETCH` from a cursor, a statement pgveil did not
    /// analyse): its columns and decisions are the result's.
    fn shape_draft(&self, shape: &Shape) -> Box<Draft> {
        let columns = shape
            .cols
            .iter()
            .zip(&shape.reveal)
            .filter_map(|(c, r)| {
                let c = c.as_ref()?;
                let label = self.label_of(&c.column).to_owned();
                Some(ColumnFact {
                    name: c.column.to_string().into(),
                    column: c.column.clone(),
                    label,
                    used: ColumnUse::Read,
                    decision: match r {
                        Reveal::Plain => Decision::Allow,
                        Reveal::Mask(_) => Decision::Mask,
                        Reveal::Deny => Decision::Deny,
                    },
                })
            })
            .collect();
        Box::new(Draft {
            role: access::role_name(&self.role.confirmed),
            kind: "other",
            protocol: if matches!(self.expect.front(), Some(Expect::Query { .. })) {
                "simple"
            } else {
                "extended"
            },
            fingerprint: Arc::from(""),
            columns,
            started: std::time::Instant::now(),
            rows: 0,
            refused: None,
        })
    }

    /// The audit facts of `cols` under `view`.
    fn column_facts(&self, cols: &AccessCols, view: &RoleView) -> Arc<[ColumnFact]> {
        let policy = self.engine.policy();
        let rules = self.rules();
        let uses = cols
            .reads
            .iter()
            .map(|c| (c, ColumnUse::Read))
            .chain(cols.writes.iter().map(|c| (c, ColumnUse::Write)))
            .chain(cols.deletes.iter().map(|c| (c, ColumnUse::Delete)));
        uses.map(|(c, used)| {
            let pc = policy.lookup_column(c);
            let label = self.label_of(c).to_owned();
            let decision = match (pc, used) {
                (None, _) => Decision::Deny,
                (Some(pc), ColumnUse::Read) => match access::decide(rules, view, pc) {
                    pgveil_policy::Access::Decrypt => Decision::Allow,
                    pgveil_policy::Access::Mask => Decision::Mask,
                    pgveil_policy::Access::Deny => Decision::Deny,
                },
                (Some(pc), ColumnUse::Write) => {
                    if access::may_write(rules, view, pc) {
                        Decision::Allow
                    } else {
                        Decision::Deny
                    }
                }
                // PostgreSQL's privileges decide who may delete.
                (Some(_), ColumnUse::Delete) => Decision::Allow,
            };
            ColumnFact {
                name: c.to_string().into(),
                column: c.clone(),
                label,
                used,
                decision,
            }
        })
        .collect()
    }

    fn emit(&self, draft: Draft, outcome: Outcome) {
        if let Some(o) = &self.observer {
            o.statement(draft.finish(&self.sctx, outcome));
        }
    }

    /// The draft of the statement the server is answering now.
    fn front_draft_mut(&mut self) -> Option<&mut Draft> {
        let own = self
            .expect
            .q
            .front_mut()
            .and_then(|p| p.audits.front_mut())
            .and_then(|d| d.as_deref_mut());
        match own {
            Some(d) => Some(d),
            None => self.rows_draft.as_deref_mut(),
        }
    }

    /// The draft of the statement the server just finished: its own, or
    /// the one its rows made.
    fn take_front_draft(&mut self) -> Option<Box<Draft>> {
        let own = self
            .expect
            .q
            .front_mut()
            .and_then(|p| p.audits.pop_front())
            .flatten();
        own.or_else(|| self.rows_draft.take())
    }

    /// Records a refusal: for COPY data, as the outcome of the COPY under
    /// way; otherwise as its own event.
    fn audit_refusal(&mut self, msg: &[u8], err: &RewriteError) {
        if matches!(err, RewriteError::AuditUnavailable { .. }) {
            // The sink refused it: it cannot be recorded (logged instead).
            return;
        }
        let refused = (err.sqlstate(), err.reason_label());
        let tag = msg[0];
        if matches!(
            tag,
            frontend::tag::COPY_DATA | frontend::tag::COPY_DONE | frontend::tag::COPY_FAIL
        ) {
            if let Some(d) = self.front_draft_mut() {
                d.refused = Some(refused);
                return;
            }
        }
        let mut pos = 5;
        let (kind, fingerprint): (&'static str, Arc<str>) = match tag {
            frontend::tag::QUERY => {
                let body = &msg[5..];
                let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body));
                ("unknown", self.fingerprint(&sql))
            }
            frontend::tag::PARSE => {
                let _ = cstr(msg, &mut pos);
                let sql = String::from_utf8_lossy(cstr(msg, &mut pos).unwrap_or_default());
                ("unknown", self.fingerprint(&sql))
            }
            frontend::tag::BIND | frontend::tag::EXECUTE => {
                let portal = cstr(msg, &mut pos).unwrap_or_default();
                let cols = if tag == frontend::tag::BIND {
                    cstr(msg, &mut pos)
                        .and_then(|st| self.reg.statement(st))
                        .map(|i| i.columns.clone())
                } else {
                    self.reg.portal(portal).map(|p| p.columns.clone())
                };
                match cols {
                    Some(c) => (c.kind, c.fingerprint.clone().unwrap_or_else(|| "".into())),
                    None => ("unknown", "".into()),
                }
            }
            _ => ("unknown", "".into()),
        };
        let protocol = if tag == frontend::tag::QUERY {
            "simple"
        } else {
            "extended"
        };
        self.emit_refusal(kind, protocol, fingerprint, err);
    }

    /// Records a statement pgveil refused or whose result it withheld.
    fn emit_refusal(
        &self,
        kind: &'static str,
        protocol: &'static str,
        fingerprint: Arc<str>,
        err: &RewriteError,
    ) {
        let refused = (err.sqlstate(), err.reason_label());
        let columns = err
            .column()
            .map(|c| {
                let label = self.label_of(c).to_owned();
                let used = match err {
                    RewriteError::Denied(d) if d.action == "read" => ColumnUse::Read,
                    RewriteError::Denied(_) => ColumnUse::Write,
                    _ => ColumnUse::Read,
                };
                ColumnFact {
                    name: c.to_string().into(),
                    column: c.clone(),
                    label,
                    used,
                    decision: if matches!(err, RewriteError::Denied(_)) {
                        Decision::Deny
                    } else {
                        Decision::Refused
                    },
                }
            })
            .into_iter()
            .collect();
        let draft = Draft {
            role: access::role_name(&self.role.confirmed),
            kind,
            protocol,
            fingerprint,
            columns,
            started: std::time::Instant::now(),
            rows: 0,
            refused: Some(refused),
        };
        let outcome = Outcome::Refused {
            sqlstate: refused.0,
            reason: refused.1,
        };
        self.emit(draft, outcome);
    }

    /// The refusal for a result with a column the role may not read.
    fn denial(&self, shape: &Shape) -> Option<RewriteError> {
        let i = shape.reveal.iter().position(|r| *r == Reveal::Deny)?;
        let col = shape.cols.get(i)?.as_ref()?;
        Some(self.denied(&col.column, "read", &self.role.confirmed))
    }

    /// The access rules' refusal of `action` on `c` for `view`.
    fn denied(&self, c: &ColumnRef, action: &'static str, view: &RoleView) -> RewriteError {
        RewriteError::Denied(Box::new(Denial {
            column: c.clone(),
            label: self.label_of(c).to_owned(),
            action,
            role: access::role_name(view),
        }))
    }

    /// A protected column's label (`unlabeled` without one).
    fn label_of(&self, c: &ColumnRef) -> &str {
        self.engine
            .policy()
            .lookup_column(c)
            .and_then(|pc| pc.label.as_ref())
            .map_or(pgveil_policy::access::UNLABELED, |l| l.as_str())
    }

    fn decrypt_row(
        &mut self,
        shape: &Shape,
        msg: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let bad = || RewriteError::Malformed("DataRow");
        let body = &msg[5..];
        if body.len() < 2 {
            return Err(bad());
        }
        let n = i16::from_be_bytes([body[0], body[1]]);
        if n < 0 || n as usize != shape.cols.len() {
            return Err(bad());
        }
        if let Some(e) = self.denial(shape) {
            return Err(e);
        }
        let start = out.len();
        out.push(backend::tag::DATA_ROW);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body[..2]);
        let mut pos = 2;
        let mut bufs = std::mem::take(&mut self.bufs);
        let result = (|| {
            for (i, col) in shape.cols.iter().enumerate() {
                let len_bytes: [u8; 4] = body
                    .get(pos..pos + 4)
                    .ok_or_else(bad)?
                    .try_into()
                    .expect("4 bytes");
                pos += 4;
                let len = i32::from_be_bytes(len_bytes);
                if len < 0 {
                    out.extend_from_slice(&len_bytes);
                    continue;
                }
                let value = body.get(pos..pos + len as usize).ok_or_else(bad)?;
                pos += len as usize;
                match col {
                    None => {
                        out.extend_from_slice(&len_bytes);
                        out.extend_from_slice(value);
                    }
                    Some(c) => {
                        let at = out.len();
                        out.extend_from_slice(&[0; 4]);
                        let format = shape.formats.get(i).copied().unwrap_or(Format::Text);
                        match shape.reveal.get(i).copied().unwrap_or(Reveal::Plain) {
                            Reveal::Plain => {
                                c.decrypt_to_client(value, format, self.tz, &mut bufs, out)?
                            }
                            Reveal::Mask(mask) => {
                                if !c.mask_to_client(value, format, mask, &mut bufs, out)? {
                                    out.truncate(at);
                                    out.extend_from_slice(&(-1i32).to_be_bytes());
                                    continue;
                                }
                            }
                            // Checked above.
                            Reveal::Deny => return Err(bad()),
                        }
                        let n = (out.len() - at - 4) as i32;
                        out[at..at + 4].copy_from_slice(&n.to_be_bytes());
                    }
                }
            }
            if pos != body.len() {
                return Err(bad());
            }
            Ok(())
        })();
        bufs.wipe();
        self.bufs = bufs;
        if let Err(e) = result {
            // Wipe any plaintext already written for this row.
            out[start..].iter_mut().for_each(|b| *b = 0);
            out.truncate(start);
            return Err(e);
        }
        let len = (out.len() - start - 1) as u32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// `Key (ssn)=(…) already exists.` → the values replaced; `Failing row
/// contains (…)` → the row replaced.
fn redact_detail(detail: &[u8]) -> Option<String> {
    let d = String::from_utf8_lossy(detail);
    if d.starts_with("Failing row contains") {
        return Some("Failing row contains (values redacted by pgveil).".to_owned());
    }
    let open = d.find(")=(")?;
    let close = d.rfind(") ")?.max(open + 3);
    Some(format!(
        "{}(values redacted by pgveil){}",
        &d[..open + 2],
        &d[close + 1..]
    ))
}

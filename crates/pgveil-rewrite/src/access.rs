//! Who the session is, which role the server runs its statements as, and
//! what that role may see of each protected column.
//!
//! # The role, as the server confirms it
//! pgveil does not emulate `SET ROLE` semantics (transactions, savepoints,
//! `SET LOCAL`, errors rolling back implicit transactions, `DISCARD ALL`,
//! `set_config`): it asks. After the client sends anything that may change
//! the role (see [`may_change_role`]), and after anything that may end a
//! transaction in which the role was changed ([`may_end_transaction`]), the
//! role is *unconfirmed*; before the next statement pgveil runs
//! [`ROLE_QUERY`] on the session (queued behind everything sent, so the
//! answer is the state those statements left) and decides with its answer.
//! A statement that cannot wait for it (sent in the same extended-protocol
//! batch, before `Sync`) is refused if it touches a protected column.
//!
//! A change pgveil cannot see at all (a function calling `set_config`
//! without those words in the statement) leaves pgveil deciding for the
//! role it last confirmed: one the session could `SET ROLE` to itself, so
//! never more than the login role is allowed.

use std::sync::Arc;

use pgveil_crypto::canonical::{self, LogicalType};
use pgveil_policy::{Access, AccessRules, MaskKind, ProtectedColumn};
use pgveil_wire::backend;
use pgveil_wire::Frame;

/// Facts about the connection, fixed after authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionCtx {
    /// pgveil's connection id (as in its logs).
    pub connection_id: u64,
    /// The login user (startup `user`).
    pub user: String,
    /// The database.
    pub database: String,
    /// `application_name` at startup.
    pub application_name: String,
    /// The client's address.
    pub client_addr: String,
    /// The subject of the client's TLS certificate, if it sent one.
    pub tls_subject: Option<String>,
}

/// The server's answer about the session's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleView {
    /// Not known yet, or the last query failed: every protected column is
    /// denied.
    Unknown,
    /// Confirmed by the server.
    Known(Arc<Roles>),
}

/// The roles a session acts as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    /// `current_user` (the effective role).
    pub current_user: String,
    /// `session_user`.
    pub session_user: String,
    /// Every role whose privileges `current_user` has
    /// (`pg_has_role(current_user, r, 'USAGE')`, itself included), sorted.
    pub inherited: Vec<String>,
}

/// Asks the server who the session is. Rows: (`u`, current_user), (`s`,
/// session_user), (`m`, each role current_user inherits from).
// Every name is schema-qualified: the session's search_path (and its temp
// schema, searched first for type names) must not be able to substitute a
// type, cast or function that answers another role.
pub const ROLE_QUERY: &str = "SELECT 'u'::pg_catalog.text, current_user::pg_catalog.text UNION ALL SELECT 's'::pg_catalog.text, session_user::pg_catalog.text UNION ALL (SELECT 'm'::pg_catalog.text, r.rolname::pg_catalog.text FROM pg_catalog.pg_roles r WHERE pg_catalog.pg_has_role(current_user, r.oid, 'USAGE'::pg_catalog.text) ORDER BY 2 LIMIT 10000)";

/// Collects [`ROLE_QUERY`]'s answer.
#[derive(Debug, Default)]
pub(crate) struct RoleReader {
    roles: Roles,
    failed: bool,
}

impl RoleReader {
    /// Feeds one server message; `Some(status)` at `ReadyForQuery`.
    pub(crate) fn feed(&mut self, frame: &Frame) -> Option<u8> {
        match frame.tag() {
            backend::tag::ROW_DESCRIPTION => {
                // Two text columns, or the answer is not this query's.
                let ok = backend::decode_row_description(frame)
                    .is_ok_and(|f| f.len() == 2 && f.iter().all(|c| c.type_oid == 25));
                if !ok {
                    self.failed = true;
                }
                None
            }
            backend::tag::DATA_ROW => {
                let Ok(v) = backend::decode_data_row(frame) else {
                    self.failed = true;
                    return None;
                };
                let text = |i: usize| {
                    v.get(i)
                        .and_then(|x| x.as_ref())
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .map(str::to_owned)
                };
                match (text(0).as_deref(), text(1)) {
                    (Some("u"), Some(n)) if self.roles.current_user.is_empty() => {
                        self.roles.current_user = n
                    }
                    (Some("s"), Some(n)) if self.roles.session_user.is_empty() => {
                        self.roles.session_user = n
                    }
                    (Some("m"), Some(n)) => self.roles.inherited.push(n),
                    _ => self.failed = true,
                }
                None
            }
            backend::tag::ERROR_RESPONSE => {
                self.failed = true;
                None
            }
            backend::tag::READY_FOR_QUERY => Some(frame.body().first().copied().unwrap_or(b'I')),
            _ => None,
        }
    }

    pub(crate) fn finish(self) -> RoleView {
        if self.failed || self.roles.current_user.is_empty() {
            return RoleView::Unknown;
        }
        let mut roles = self.roles;
        roles.inherited.sort();
        roles.inherited.dedup();
        RoleView::Known(Arc::new(roles))
    }
}

/// The session's role state.
#[derive(Debug)]
pub(crate) struct RoleState {
    /// What the server last said.
    pub(crate) confirmed: RoleView,
    /// Something sent since may have changed the role.
    pub(crate) dirty: bool,
    /// The role was changed inside the current transaction: its end (or a
    /// rollback to a savepoint, or an error) may change it back.
    pub(crate) tx_sensitive: bool,
    /// Bumped whenever `confirmed` changes: result shapes decided under an
    /// older epoch are decided again.
    pub(crate) epoch: u64,
    /// A role query in flight.
    pub(crate) reader: Option<RoleReader>,
    /// Something that may change the role was sent after the query in
    /// flight: its answer describes an earlier state and settles nothing.
    changed_in_flight: bool,
}

impl RoleState {
    pub(crate) fn new() -> Self {
        RoleState {
            confirmed: RoleView::Unknown,
            dirty: true,
            tx_sensitive: false,
            epoch: 1,
            reader: None,
            changed_in_flight: false,
        }
    }

    /// A role query is sent now (behind everything sent so far).
    pub(crate) fn asking(&mut self) {
        self.reader = Some(RoleReader::default());
        self.changed_in_flight = false;
    }

    fn unsettle(&mut self) {
        self.dirty = true;
        if self.reader.is_some() {
            self.changed_in_flight = true;
        }
    }

    /// The view to decide client-side checks with: unknown while a change
    /// is unconfirmed.
    pub(crate) fn for_client(&self) -> &RoleView {
        if self.dirty {
            &RoleView::Unknown
        } else {
            &self.confirmed
        }
    }

    /// A statement with this [`effect`] ran (was sent).
    pub(crate) fn note(&mut self, effect: Option<RoleEffect>) {
        match effect {
            Some(RoleEffect::Changes) => {
                self.unsettle();
                self.tx_sensitive = true;
            }
            Some(RoleEffect::MayEndTransaction) if self.tx_sensitive => self.unsettle(),
            _ => {}
        }
    }

    /// Whether a statement with this effect, sent now, leaves the role
    /// unconfirmed for the statements after it.
    pub(crate) fn unsettles(&self, effect: Option<RoleEffect>) -> bool {
        match effect {
            Some(RoleEffect::Changes) => true,
            Some(RoleEffect::MayEndTransaction) => self.tx_sensitive,
            None => false,
        }
    }

    /// The server reported an error: an implicit transaction that changed
    /// the role rolled back.
    pub(crate) fn server_error(&mut self) {
        if self.tx_sensitive {
            self.unsettle();
        }
    }

    /// The role query's answer (with the transaction status after it).
    pub(crate) fn answered(&mut self, view: RoleView, status: u8) {
        if view != self.confirmed {
            self.epoch += 1;
        }
        // A failed query (an aborted transaction) is asked again before the
        // next statement; until then every protected column is denied. So is
        // a change sent after the query: the answer predates it.
        let later = std::mem::take(&mut self.changed_in_flight);
        self.dirty = view == RoleView::Unknown || later;
        self.confirmed = view;
        if status == b'I' && !later {
            self.tx_sensitive = false;
        }
    }
}

/// What a result column shows the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reveal {
    /// The plaintext.
    Plain,
    /// The masked plaintext.
    Mask(MaskKind),
    /// Nothing: the statement fails with `42501`.
    Deny,
}

/// [`decide`] with the column's mask.
pub(crate) fn reveal(
    rules: Option<&AccessRules>,
    view: &RoleView,
    col: &ProtectedColumn,
) -> Reveal {
    match decide(rules, view, col) {
        Access::Decrypt => Reveal::Plain,
        Access::Mask => Reveal::Mask(col.mask()),
        Access::Deny => Reveal::Deny,
    }
}

/// The role to name in a denial.
pub(crate) fn role_name(view: &RoleView) -> String {
    match view {
        RoleView::Known(r) => r.current_user.clone(),
        RoleView::Unknown => "(not confirmed yet)".to_owned(),
    }
}

/// The decision for a column under `view`.
pub(crate) fn decide(
    rules: Option<&AccessRules>,
    view: &RoleView,
    col: &ProtectedColumn,
) -> Access {
    let Some(rules) = rules else {
        return Access::Decrypt;
    };
    match view {
        RoleView::Unknown => Access::Deny,
        RoleView::Known(r) => rules.decide(r.inherited.iter().map(String::as_str), col),
    }
}

/// Whether `view` may write `col`.
pub(crate) fn may_write(
    rules: Option<&AccessRules>,
    view: &RoleView,
    col: &ProtectedColumn,
) -> bool {
    let Some(rules) = rules else {
        return true;
    };
    match view {
        RoleView::Unknown => false,
        RoleView::Known(r) => rules.may_write(r.inherited.iter().map(String::as_str), col),
    }
}

/// How a statement text may affect the session's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoleEffect {
    /// It may change it ([`may_change_role`]).
    Changes,
    /// It may end a transaction ([`may_end_transaction`]).
    MayEndTransaction,
}

/// The [`RoleEffect`] of a statement text.
pub(crate) fn effect(sql: &str) -> Option<RoleEffect> {
    if may_change_role(sql) {
        Some(RoleEffect::Changes)
    } else if may_end_transaction(sql) {
        Some(RoleEffect::MayEndTransaction)
    } else {
        None
    }
}

/// The words of `sql` (identifier-like runs), lower-cased on comparison.
fn words(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Whether statement text may change the session's role: it contains the
/// word `role`, `authorization`, `discard` or `set_config` anywhere
/// (over-matching costs one role query).
pub fn may_change_role(sql: &str) -> bool {
    words(sql).any(|w| {
        ["role", "authorization", "discard", "set_config"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
    })
}

/// Whether statement text may end a transaction or roll back to a
/// savepoint.
pub fn may_end_transaction(sql: &str) -> bool {
    words(sql).any(|w| {
        ["rollback", "abort", "commit", "end", "prepare"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
    })
}

/// A masked value in canonical text form, or `None` for `NULL`.
pub(crate) fn mask_canonical(kind: MaskKind, ty: LogicalType, canonical: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(canonical).ok()?;
    match kind {
        MaskKind::Null => None,
        MaskKind::First => {
            let mut out = String::with_capacity(8);
            // A one-character value would be shown whole.
            if text.chars().nth(1).is_some() {
                if let Some(c) = text.chars().next() {
                    out.push(c);
                }
            }
            out.push_str("***");
            Some(out.into_bytes())
        }
        MaskKind::Last4 => {
            let total = text.chars().filter(|c| c.is_alphanumeric()).count();
            // The last four only of a value with at least eight: a shorter
            // one would be mostly or wholly shown.
            let keep_from = if total >= 8 { total - 4 } else { total };
            let mut seen = 0;
            let out: String = text
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() {
                        seen += 1;
                        if seen <= keep_from {
                            return '*';
                        }
                    }
                    c
                })
                .collect();
            Some(out.into_bytes())
        }
        MaskKind::Email => Some(match text.rfind('@') {
            Some(at) => format!("****{}", &text[at..]).into_bytes(),
            None => b"****".to_vec(),
        }),
        MaskKind::Year => {
            if text.ends_with("infinity") {
                return Some(canonical.to_vec());
            }
            let year = text.split('-').next().filter(|y| !y.is_empty())?;
            let bc = if text.ends_with(" BC") { " BC" } else { "" };
            let masked = match ty {
                LogicalType::Date => format!("{year}-01-01{bc}"),
                LogicalType::Timestamp => format!("{year}-01-01 00:00:00{bc}"),
                LogicalType::Timestamptz => format!("{year}-01-01 00:00:00+00{bc}"),
                _ => return None,
            };
            // Through the canonicaliser: a year whose January 1st is out of
            // range (4714 BC) masks to NULL.
            canonical::canonical_from_text(ty, masked.as_bytes()).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_does_not_settle_a_change_sent_after_its_query() {
        let known = || {
            RoleView::Known(Arc::new(Roles {
                current_user: "a".into(),
                ..Default::default()
            }))
        };
        let mut r = RoleState::new();
        r.asking();
        // SET ROLE pipelined behind the role query.
        r.note(Some(RoleEffect::Changes));
        r.answered(known(), b'I');
        assert_eq!(
            *r.for_client(),
            RoleView::Unknown,
            "the change is not settled"
        );
        assert!(r.tx_sensitive);
        r.asking();
        r.answered(known(), b'I');
        assert_eq!(*r.for_client(), known());
        assert!(!r.tx_sensitive);
    }

    #[test]
    fn masks_keep_the_documented_shapes() {
        let m = |k, t, v: &str| {
            mask_canonical(k, t, v.as_bytes()).map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            m(MaskKind::Last4, LogicalType::Text, "123-45-6789").unwrap(),
            "***-**-6789"
        );
        assert_eq!(m(MaskKind::Last4, LogicalType::Text, "12").unwrap(), "**");
        assert_eq!(
            m(MaskKind::Last4, LogicalType::Text, "12-34567").unwrap(),
            "**-*****"
        );
        assert_eq!(
            m(MaskKind::Last4, LogicalType::Text, "1234-5678").unwrap(),
            "****-5678"
        );
        assert_eq!(m(MaskKind::First, LogicalType::Text, "J").unwrap(), "***");
        assert_eq!(
            m(MaskKind::First, LogicalType::Text, "Jane").unwrap(),
            "J***"
        );
        assert_eq!(
            m(MaskKind::First, LogicalType::Text, "Émile").unwrap(),
            "É***"
        );
        assert_eq!(m(MaskKind::First, LogicalType::Text, "").unwrap(), "***");
        assert_eq!(
            m(MaskKind::Email, LogicalType::Text, "jane@example.org").unwrap(),
            "****@example.org"
        );
        assert_eq!(
            m(MaskKind::Email, LogicalType::Text, "nobody").unwrap(),
            "****"
        );
        assert_eq!(
            m(MaskKind::Year, LogicalType::Date, "1984-07-23").unwrap(),
            "1984-01-01"
        );
        assert_eq!(
            m(MaskKind::Year, LogicalType::Date, "0044-03-15 BC").unwrap(),
            "0044-01-01 BC"
        );
        assert_eq!(m(MaskKind::Year, LogicalType::Date, "4714-11-24 BC"), None);
        assert_eq!(
            m(MaskKind::Year, LogicalType::Date, "infinity").unwrap(),
            "infinity"
        );
        assert!(m(
            MaskKind::Year,
            LogicalType::Timestamp,
            "2020-05-06 07:08:09.5"
        )
        .unwrap()
        .starts_with("2020-01-01 00:00:00"));
        assert_eq!(m(MaskKind::Null, LogicalType::Int4, "42"), None);
    }

    #[test]
    fn role_words() {
        assert!(may_change_role("SET ROLE analyst"));
        assert!(may_change_role("reset role"));
        assert!(may_change_role("SET SESSION AUTHORIZATION bob"));
        assert!(may_change_role("select set_config('role', 'x', false)"));
        assert!(may_change_role("DISCARD ALL"));
        assert!(!may_change_role("SELECT user_role FROM staff"));
        assert!(may_end_transaction("ROLLBACK TO SAVEPOINT a"));
        assert!(!may_end_transaction("SELECT 1"));
    }

    #[test]
    fn unknown_role_denies_and_no_rules_decrypt() {
        let p = pgveil_policy::Policy::from_toml_str(
            "[tables.t]\nssn = { type = \"text\", label = \"phi\" }\n[access]\ndefault = \"mask\"\n[access.roles.doc]\nphi = \"decrypt\"\n[access.roles.temp]\nphi = \"deny\"\n",
            "t",
        )
        .unwrap();
        let col = p.columns().next().unwrap().clone();
        let rules = p.access();
        assert_eq!(decide(rules, &RoleView::Unknown, &col), Access::Deny);
        assert_eq!(decide(None, &RoleView::Unknown, &col), Access::Decrypt);
        let view = |r: &[&str]| {
            RoleView::Known(Arc::new(Roles {
                current_user: r[0].into(),
                session_user: r[0].into(),
                inherited: r.iter().map(|s| s.to_string()).collect(),
            }))
        };
        assert_eq!(decide(rules, &view(&["alice"]), &col), Access::Mask);
        assert_eq!(
            decide(rules, &view(&["alice", "doc"]), &col),
            Access::Decrypt
        );
        // A role's rule replaces the default; the most permissive rule wins.
        assert_eq!(decide(rules, &view(&["temp"]), &col), Access::Deny);
        assert_eq!(
            decide(rules, &view(&["temp", "doc"]), &col),
            Access::Decrypt
        );
        assert!(may_write(rules, &view(&["doc"]), &col));
        assert!(!may_write(rules, &view(&["alice"]), &col));
    }
}

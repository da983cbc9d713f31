//! Reading a policy from TOML text: walks the span-carrying TOML tree so
//! every error can name its line, validates each entry independently so one
//! mistake does not hide the next, then resolves shared keys.

use std::collections::{BTreeMap, BTreeSet};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::access::{Access, AccessRules, MaskKind, RoleRules, UNLABELED};
use crate::error::{PolicyError, PolicyErrorKind, PolicyErrors};
use crate::ident::{ColumnRef, Ident, QualifiedTable};
use crate::types::TypeSpec;
use crate::{KeyInfo, Label, Mode, Policy, ProtectedColumn, TablePolicy};

/// Fields a column entry accepts.
const COLUMN_FIELDS: [&str; 5] = ["type", "mode", "label", "key", "mask"];

/// Byte offset → 1-based line number.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }
}

/// A column as read, before key resolution. Fields are `None` where the
/// entry was invalid, so later checks skip what is already reported.
struct Draft {
    column: ColumnRef,
    line: usize,
    ty: Option<TypeSpec>,
    mode: Option<Mode>,
    label: Option<Label>,
    /// The `key` reference and the line of its value.
    key: Option<(ColumnRef, usize)>,
    /// The `mask` and the offset of its value.
    mask: Option<(MaskKind, usize)>,
}

struct DraftTable {
    table: QualifiedTable,
    spelling: String,
    line: usize,
    /// Column → (TOML spelling, draft).
    columns: BTreeMap<Ident, (String, Draft)>,
}

struct Loader<'a> {
    origin: &'a str,
    lines: Lines,
    errors: Vec<PolicyError>,
}

type Entry<'t, 'i> = (
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
);

/// Table entries in source order (the TOML map iterates by key).
fn in_source_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

pub(crate) fn load(src: &str, origin: &str, embedded: bool) -> Result<Policy, PolicyErrors> {
    let mut loader = Loader {
        origin,
        lines: Lines::new(src),
        errors: Vec::new(),
    };
    let (root, toml_errors) = DeTable::parse_recoverable(src);
    if !toml_errors.is_empty() {
        for e in toml_errors {
            let at = e.span().map_or(0, |s| s.start);
            loader.error(
                at,
                None,
                PolicyErrorKind::Toml {
                    message: e.message().trim().to_owned(),
                },
            );
        }
        return Err(loader.finish());
    }

    let mut tables_value = None;
    let mut access_value = None;
    for (key, value) in in_source_order(root.get_ref()) {
        if key.get_ref() == "tables" {
            tables_value = Some(value);
        } else if key.get_ref() == "access" {
            access_value = Some(value);
        } else if !embedded {
            loader.error(
                key.span().start,
                None,
                PolicyErrorKind::UnknownTopLevelKey {
                    key: key.get_ref().to_string(),
                },
            );
        }
    }

    let mut drafts: Vec<DraftTable> = Vec::new();
    if let Some(value) = tables_value {
        match value.get_ref() {
            DeValue::Table(tables) => {
                for (key, value) in in_source_order(tables) {
                    loader.table(&mut drafts, key, value);
                }
            }
            other => loader.error(
                value.span().start,
                None,
                PolicyErrorKind::TablesNotATable {
                    found: other.type_str(),
                },
            ),
        }
    }

    loader.resolve_keys(&drafts);
    let access = access_value.and_then(|v| loader.access(&drafts, v));
    if !loader.errors.is_empty() {
        return Err(loader.finish());
    }
    Ok(build(origin, drafts, access))
}

impl Loader<'_> {
    fn error(&mut self, at: usize, subject: Option<String>, kind: PolicyErrorKind) {
        self.errors.push(PolicyError {
            origin: self.origin.to_owned(),
            line: self.lines.line(at),
            subject,
            kind,
        });
    }

    fn finish(mut self) -> PolicyErrors {
        // Stable: errors on one line keep the order they were found in.
        self.errors.sort_by_key(|e| e.line);
        PolicyErrors(self.errors)
    }

    fn table(
        &mut self,
        drafts: &mut Vec<DraftTable>,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) {
        let spelling = key.get_ref().to_string();
        let at = key.span().start;
        let table = match QualifiedTable::parse(&spelling) {
            Ok(table) => table,
            Err(reason) => {
                self.error(
                    at,
                    None,
                    PolicyErrorKind::InvalidTableName {
                        name: spelling,
                        reason,
                    },
                );
                return;
            }
        };
        let DeValue::Table(columns) = value.get_ref() else {
            self.error(
                value.span().start,
                Some(table.to_string()),
                PolicyErrorKind::TableNotATable {
                    found: value.get_ref().type_str(),
                },
            );
            return;
        };
        let line = self.lines.line(at);
        let index = match drafts.iter().position(|d| d.table == table) {
            Some(index) => {
                // Report, then merge into the first entry: its columns are
                // still checked (and duplicates among them reported).
                let first = &drafts[index];
                let kind = PolicyErrorKind::DuplicateTable {
                    spelling: spelling.clone(),
                    first_spelling: first.spelling.clone(),
                    first_line: first.line,
                };
                self.error(at, Some(table.to_string()), kind);
                index
            }
            None => {
                drafts.push(DraftTable {
                    table: table.clone(),
                    spelling: spelling.clone(),
                    line,
                    columns: BTreeMap::new(),
                });
                drafts.len() - 1
            }
        };
        if columns.is_empty() {
            self.error(at, Some(table.to_string()), PolicyErrorKind::EmptyTable);
        }
        for (column_key, column_value) in in_source_order(columns) {
            self.column(&mut drafts[index], &spelling, column_key, column_value);
        }
    }

    fn column(
        &mut self,
        draft_table: &mut DraftTable,
        table_spelling: &str,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) {
        let table = draft_table.table.clone();
        let spelling = key.get_ref().to_string();
        let at = key.span().start;
        let line = self.lines.line(at);

        // `[tables.public.patients]` (unquoted) is three nested TOML tables:
        // what looks like a column here is really the table name's second half.
        if let DeValue::Table(fields) = value.get_ref() {
            let nested = !fields.is_empty()
                && fields.iter().all(|(k, v)| {
                    matches!(v.get_ref(), DeValue::Table(_))
                        && !COLUMN_FIELDS.contains(&k.get_ref().as_ref())
                });
            if nested {
                self.error(
                    at,
                    None,
                    PolicyErrorKind::DottedTableName {
                        outer: table_spelling.to_owned(),
                        inner: spelling,
                    },
                );
                return;
            }
        }

        let ident = match Ident::parse(&spelling) {
            Ok(ident) => ident,
            Err(reason) => {
                self.error(
                    at,
                    Some(table.to_string()),
                    PolicyErrorKind::InvalidColumnName {
                        name: spelling,
                        reason,
                    },
                );
                return;
            }
        };
        let column = table.column(ident.clone());
        let subject = Some(column.to_string());
        if let Some((first_spelling, first)) = draft_table.columns.get(&ident) {
            let kind = PolicyErrorKind::DuplicateColumn {
                spelling,
                first_spelling: first_spelling.clone(),
                first_line: first.line,
            };
            self.error(at, subject, kind);
            return;
        }
        let DeValue::Table(fields) = value.get_ref() else {
            self.error(
                value.span().start,
                subject,
                PolicyErrorKind::ColumnNotATable {
                    found: value.get_ref().type_str(),
                },
            );
            return;
        };

        let mut draft = Draft {
            column: column.clone(),
            line,
            ty: None,
            mode: Some(Mode::default()),
            label: None,
            key: None,
            mask: None,
        };
        let mut saw_type = false;
        for (field_key, field_value) in in_source_order(fields) {
            let field = field_key.get_ref().as_ref();
            let Some(&field) = COLUMN_FIELDS.iter().find(|f| **f == field) else {
                self.error(
                    field_key.span().start,
                    subject.clone(),
                    PolicyErrorKind::UnknownField {
                        field: field.to_owned(),
                        hint: did_you_mean(field, COLUMN_FIELDS.iter().copied(), "`", "`"),
                    },
                );
                continue;
            };
            if field == "type" {
                saw_type = true;
            }
            let value_at = field_value.span().start;
            let DeValue::String(text) = field_value.get_ref() else {
                self.error(
                    value_at,
                    subject.clone(),
                    PolicyErrorKind::NotAString {
                        field,
                        found: field_value.get_ref().type_str(),
                    },
                );
                if field == "mode" {
                    draft.mode = None;
                }
                continue;
            };
            match field {
                "type" => match TypeSpec::parse(text) {
                    Ok(ty) => draft.ty = Some(ty),
                    Err(e) => self.error(value_at, subject.clone(), PolicyErrorKind::Type(e)),
                },
                "mode" => {
                    draft.mode = Mode::parse(text);
                    if draft.mode.is_none() {
                        self.error(
                            value_at,
                            subject.clone(),
                            PolicyErrorKind::UnknownMode {
                                given: text.to_string(),
                            },
                        );
                    }
                }
                "label" => match Label::parse(text) {
                    Some(label) => draft.label = Some(label),
                    None => self.error(
                        value_at,
                        subject.clone(),
                        PolicyErrorKind::InvalidLabel {
                            given: text.to_string(),
                        },
                    ),
                },
                "mask" => match MaskKind::parse(text) {
                    Some(m) => draft.mask = Some((m, value_at)),
                    None => self.error(
                        value_at,
                        subject.clone(),
                        PolicyErrorKind::InvalidMask {
                            given: text.to_string(),
                            reason: "a mask is last4, first, email, year or null".to_owned(),
                        },
                    ),
                },
                _ => match ColumnRef::parse(text) {
                    Ok(key) => draft.key = Some((key, self.lines.line(value_at))),
                    Err(reason) => self.error(
                        value_at,
                        subject.clone(),
                        PolicyErrorKind::InvalidKey {
                            given: text.to_string(),
                            reason,
                        },
                    ),
                },
            }
        }
        if !saw_type {
            self.error(at, subject.clone(), PolicyErrorKind::MissingType);
        }
        if let (Some((mask, mask_at)), Some(ty)) = (draft.mask, draft.ty) {
            if !mask.fits(ty.ty) {
                self.error(
                    mask_at,
                    subject,
                    PolicyErrorKind::InvalidMask {
                        given: mask.to_string(),
                        reason: format!(
                            "it does not apply to a {} column (last4, first and email are for text and varchar, year for date and timestamps, null for any type)",
                            ty.ty.name()
                        ),
                    },
                );
            }
        }
        draft_table
            .columns
            .insert(ident, (key.get_ref().to_string(), draft));
    }

    /// Check every `key` reference. Chains are refused rather than followed:
    /// each sharer names the owner itself, so reading one entry (or grepping
    /// for the owner) shows every column a key protects.
    fn resolve_keys(&mut self, drafts: &[DraftTable]) {
        let all: BTreeMap<&ColumnRef, &Draft> = drafts
            .iter()
            .flat_map(|t| t.columns.values().map(|(_, d)| (&d.column, d)))
            .collect();
        for draft in all.values() {
            let Some((key, key_line)) = &draft.key else {
                continue;
            };
            if *key == draft.column {
                continue;
            }
            let subject = Some(draft.column.to_string());
            let kind = match all.get(key) {
                None => {
                    let names: Vec<String> = all.keys().map(|c| c.to_string()).collect();
                    PolicyErrorKind::UnknownKey {
                        key: key.clone(),
                        hint: did_you_mean(
                            &key.to_string(),
                            names.iter().map(String::as_str),
                            "\"",
                            "\"",
                        ),
                    }
                }
                Some(owner) => match &owner.key {
                    Some((owner_key, _)) if *owner_key != owner.column => {
                        PolicyErrorKind::KeyChain {
                            key: key.clone(),
                            owner: owner_key.clone(),
                        }
                    }
                    _ => match (draft.mode, owner.mode, draft.ty, owner.ty) {
                        (Some(mode), Some(owner_mode), _, _) if mode != owner_mode => {
                            PolicyErrorKind::KeyModeMismatch {
                                owner: key.clone(),
                                owner_mode,
                                mode,
                            }
                        }
                        (Some(Mode::Deterministic), _, Some(ty), Some(owner_ty))
                            if !ty.ty.key_compatible(owner_ty.ty) =>
                        {
                            PolicyErrorKind::KeyTypeMismatch {
                                owner: key.clone(),
                                owner_type: owner_ty.to_string(),
                                ty: ty.to_string(),
                            }
                        }
                        _ => continue,
                    },
                },
            };
            self.errors.push(PolicyError {
                origin: self.origin.to_owned(),
                line: *key_line,
                subject,
                kind,
            });
        }
    }
}

/// Turn validated drafts into the policy. Only called when no error was
/// found, so every draft is complete.
fn build(origin: &str, drafts: Vec<DraftTable>, access: Option<AccessRules>) -> Policy {
    let mut tables = BTreeMap::new();
    let mut keys: BTreeMap<ColumnRef, KeyInfo> = BTreeMap::new();
    for draft_table in drafts {
        let mut columns = BTreeMap::new();
        for (ident, (_, draft)) in draft_table.columns {
            let (Some(ty), Some(mode)) = (draft.ty, draft.mode) else {
                continue;
            };
            let key = draft
                .key
                .map_or_else(|| draft.column.clone(), |(key, _)| key);
            keys.entry(key.clone())
                .or_insert_with(|| KeyInfo {
                    name: key.clone(),
                    mode,
                    columns: Vec::new(),
                })
                .columns
                .push(draft.column.clone());
            columns.insert(
                ident,
                ProtectedColumn {
                    column: draft.column,
                    ty: ty.ty,
                    typmod: ty.typmod,
                    mode,
                    label: draft.label,
                    key,
                    line: draft.line,
                    mask: draft.mask.map(|(m, _)| m),
                },
            );
        }
        tables.insert(
            draft_table.table.clone(),
            TablePolicy {
                table: draft_table.table,
                line: draft_table.line,
                columns,
            },
        );
    }
    for info in keys.values_mut() {
        info.columns.sort();
    }
    let mut policy = Policy::from_parts(origin.to_owned(), tables, keys);
    policy.access = access;
    policy
}

impl Loader<'_> {
    fn access_error(&mut self, at: usize, message: String) {
        self.error(at, None, PolicyErrorKind::Access { message });
    }

    /// The `[access]` section, checked against the policy's labels and
    /// columns.
    fn access(
        &mut self,
        drafts: &[DraftTable],
        value: &Spanned<DeValue<'_>>,
    ) -> Option<AccessRules> {
        let DeValue::Table(section) = value.get_ref() else {
            self.access_error(
                value.span().start,
                format!("must be a table, not {}", value.get_ref().type_str()),
            );
            return None;
        };
        let mut labels: BTreeSet<String> = drafts
            .iter()
            .flat_map(|t| t.columns.values())
            .filter_map(|(_, d)| d.label.as_ref().map(|l| l.as_str().to_owned()))
            .collect();
        labels.insert(UNLABELED.to_owned());
        let columns: BTreeSet<ColumnRef> = drafts
            .iter()
            .flat_map(|t| t.columns.values().map(|(_, d)| d.column.clone()))
            .collect();
        let known = labels.iter().cloned().collect::<Vec<_>>().join(", ");
        let errors_before = self.errors.len();
        let mut rules = AccessRules {
            default: Access::Deny,
            roles: BTreeMap::new(),
            write: BTreeMap::new(),
        };
        let mut saw_default = false;
        for (key, value) in in_source_order(section) {
            let at = key.span().start;
            match key.get_ref().as_ref() {
                "default" => {
                    saw_default = true;
                    match value.get_ref().as_str().and_then(Access::parse) {
                        Some(a) => rules.default = a,
                        None => self.access_error(
                            value.span().start,
                            "`default` must be \"decrypt\", \"mask\" or \"deny\"".to_owned(),
                        ),
                    }
                }
                "roles" => {
                    let DeValue::Table(roles) = value.get_ref() else {
                        self.access_error(
                            at,
                            "`roles` must be a table of roles, like [access.roles.clinician]"
                                .to_owned(),
                        );
                        continue;
                    };
                    for (role, entries) in in_source_order(roles) {
                        let role_name = role.get_ref().to_string();
                        if role_name.is_empty() || role_name.len() > 63 {
                            self.access_error(role.span().start, format!("role name {role_name:?} is not a PostgreSQL role name (1 to 63 bytes)"));
                            continue;
                        }
                        let DeValue::Table(entries) = entries.get_ref() else {
                            self.access_error(role.span().start, format!("role {role_name:?} must be a table like {{ phi = \"decrypt\" }}"));
                            continue;
                        };
                        let mut rr = RoleRules::default();
                        for (k, v) in in_source_order(entries) {
                            let Some(a) = v.get_ref().as_str().and_then(Access::parse) else {
                                self.access_error(v.span().start, format!("role {role_name:?}: {:?} must be \"decrypt\", \"mask\" or \"deny\"", k.get_ref()));
                                continue;
                            };
                            let name = k.get_ref().to_string();
                            if labels.contains(&name) {
                                rr.labels.insert(name, a);
                            } else if let Some(c) =
                                ColumnRef::parse(&name).ok().filter(|c| columns.contains(c))
                            {
                                rr.columns.insert(c, a);
                            } else {
                                self.access_error(k.span().start, format!("role {role_name:?}: {name:?} is neither a label in use ({known}) nor a protected column (schema.table.column)"));
                            }
                        }
                        rules.roles.insert(role_name, rr);
                    }
                }
                "write" => {
                    let DeValue::Table(w) = value.get_ref() else {
                        self.access_error(at, "`write` must be a table of label = [roles], like [access.write] phi = [\"clinician\"]".to_owned());
                        continue;
                    };
                    for (k, v) in in_source_order(w) {
                        let label = k.get_ref().to_string();
                        if !labels.contains(&label) {
                            self.access_error(
                                k.span().start,
                                format!("write: {label:?} is not a label in use ({known})"),
                            );
                            continue;
                        }
                        let DeValue::Array(items) = v.get_ref() else {
                            self.access_error(
                                v.span().start,
                                format!("write: {label:?} must be a list of role names"),
                            );
                            continue;
                        };
                        let mut roles = BTreeSet::new();
                        for item in items.iter() {
                            match item.get_ref().as_str() {
                                Some(r) if !r.is_empty() && r.len() <= 63 => {
                                    roles.insert(r.to_owned());
                                }
                                _ => self.access_error(
                                    item.span().start,
                                    format!("write: {label:?} must list role names (strings)"),
                                ),
                            }
                        }
                        rules.write.insert(label, roles);
                    }
                }
                other => self.access_error(
                    at,
                    format!("unknown key {other:?}; [access] takes `default`, `roles` and `write`"),
                ),
            }
        }
        if !saw_default {
            self.access_error(
                value.span().start,
                "say what roles without a rule get: default = \"deny\" (or \"mask\", \"decrypt\")"
                    .to_owned(),
            );
        }
        (self.errors.len() == errors_before).then_some(rules)
    }
}

/// ` (did you mean X?)` when one candidate is close to `given`.
fn did_you_mean<'c>(
    given: &str,
    candidates: impl Iterator<Item = &'c str>,
    open: &str,
    close: &str,
) -> String {
    let given_lower = given.to_lowercase();
    let best = candidates
        .map(|c| (edit_distance(&given_lower, &c.to_lowercase()), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d > 0 && d <= (given.chars().count() / 3).max(2) => {
            format!(" (did you mean {open}{c}{close}?)")
        }
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers() {
        let lines = Lines::new("a\nbb\n\nc");
        assert_eq!(lines.line(0), 1);
        assert_eq!(lines.line(1), 1);
        assert_eq!(lines.line(2), 2);
        assert_eq!(lines.line(5), 3);
        assert_eq!(lines.line(6), 4);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("mode", "mode"), 0);
        assert_eq!(edit_distance("mdoe", "mode"), 2);
        assert_eq!(edit_distance("lable", "label"), 2);
        assert_eq!(edit_distance("", "key"), 3);
        assert_eq!(
            did_you_mean("mdoe", COLUMN_FIELDS.iter().copied(), "`", "`"),
            " (did you mean `mode`?)"
        );
        assert_eq!(
            did_you_mean("encryption", COLUMN_FIELDS.iter().copied(), "`", "`"),
            ""
        );
    }
}

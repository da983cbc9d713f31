//! Resolving the policy's protected columns against one database's catalog:
//! `(table OID, attnum)` for results, storage type for writes, column order
//! for `INSERT`/`COPY` without a column list.

use std::collections::HashMap;
use std::sync::Arc;

use pgveil_crypto::canonical::LogicalType;
use pgveil_policy::{ColumnRef, Ident, Policy, QualifiedTable};
use pgveil_wire::backend;
use pgveil_wire::Frame;

use crate::error::RewriteError;
use crate::values::{ColumnCrypto, Storage};
use crate::KeySet;

/// The protected columns of one database, resolved.
#[derive(Debug, Default)]
pub struct Catalog {
    columns: Vec<Arc<ColumnCrypto>>,
    by_attr: HashMap<(u32, i16), usize>,
    by_ref: HashMap<ColumnRef, usize>,
    order: HashMap<QualifiedTable, Vec<Ident>>,
    missing: Vec<QualifiedTable>,
    views: Vec<QualifiedTable>,
    /// Inheritance children and partitions, with their protected ancestor.
    children: Vec<(QualifiedTable, QualifiedTable)>,
    /// Policy columns that a present protected table lacks (renamed or
    /// dropped).
    missing_columns: Vec<(QualifiedTable, Ident)>,
    /// Policy table name → schemas holding a relation of that name.
    relation_schemas: HashMap<String, Vec<String>>,
}

/// An `E'…'` literal: read the same whatever `standard_conforming_strings`
/// the client's session has (the catalog query runs in that session).
fn sql_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The catalog query: every column of every policy table, in order, with
/// its storage type (domains resolved to their base type). Names are
/// compared exactly: the policy holds them normalised as the catalog does.
///
/// It runs in the client's own session, whose `search_path` the client
/// controls: every operator, function and type is schema-qualified, so a
/// user-defined `=` or `text` earlier in the path cannot change what pgveil
/// learns.
pub fn catalog_query(policy: &Policy) -> String {
    let eq = "OPERATOR(pg_catalog.=)";
    let wanted: Vec<String> = policy
        .tables()
        .map(|t| {
            format!(
                "(n.nspname {eq} {} AND c.relname {eq} {})",
                sql_literal(t.table().schema.as_str()),
                sql_literal(t.table().table.as_str())
            )
        })
        .collect();
    let filter = if wanted.is_empty() {
        "false".to_owned()
    } else {
        format!("({})", wanted.join(" OR "))
    };
    let mut names: Vec<String> = policy
        .tables()
        .map(|t| sql_literal(t.table().table.as_str()))
        .collect();
    names.sort();
    names.dedup();
    let names = if names.is_empty() {
        "false".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("c.relname {eq} {n}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    // Rows with attnum 0: views reading protected tables (transitively);
    // -1: inheritance children and partitions (storage column: the
    // protected ancestor's OID); -2: every relation named like a policy
    // table, in any schema but the temporary and system ones.
    format!(
        "/* pgveil catalog */ WITH RECURSIVE prot AS (SELECT c.oid FROM pg_catalog.pg_class AS c \
         JOIN pg_catalog.pg_namespace AS n ON n.oid {eq} c.relnamespace \
         WHERE c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'f']::pg_catalog.\"char\"[]) AND {filter}), \
         dep(oid) AS (SELECT oid FROM prot UNION SELECT r.ev_class FROM dep \
         JOIN pg_catalog.pg_depend AS d ON d.refobjid {eq} dep.oid \
         AND d.classid {eq} 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.refclassid {eq} 'pg_catalog.pg_class'::pg_catalog.regclass \
         JOIN pg_catalog.pg_rewrite AS r ON r.oid {eq} d.objid WHERE r.ev_class OPERATOR(pg_catalog.<>) dep.oid), \
         kids(oid, top) AS (SELECT i.inhrelid, i.inhparent FROM pg_catalog.pg_inherits AS i \
         JOIN prot ON prot.oid {eq} i.inhparent \
         UNION SELECT i.inhrelid, kids.top FROM kids JOIN pg_catalog.pg_inherits AS i ON i.inhparent {eq} kids.oid) \
         SELECT c.oid::pg_catalog.int8, n.nspname::pg_catalog.text, c.relname::pg_catalog.text, a.attnum::pg_catalog.int4, a.attname::pg_catalog.text, \
         (CASE WHEN t.typtype {eq} 'd' THEN t.typbasetype ELSE a.atttypid END)::pg_catalog.int8 \
         FROM pg_catalog.pg_attribute AS a \
         JOIN prot ON prot.oid {eq} a.attrelid \
         JOIN pg_catalog.pg_class AS c ON c.oid {eq} a.attrelid \
         JOIN pg_catalog.pg_namespace AS n ON n.oid {eq} c.relnamespace \
         JOIN pg_catalog.pg_type AS t ON t.oid {eq} a.atttypid \
         WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
         UNION ALL SELECT c.oid::pg_catalog.int8, n.nspname::pg_catalog.text, c.relname::pg_catalog.text, 0, '', 0 \
         FROM dep JOIN pg_catalog.pg_class AS c ON c.oid {eq} dep.oid \
         JOIN pg_catalog.pg_namespace AS n ON n.oid {eq} c.relnamespace \
         WHERE NOT EXISTS (SELECT FROM prot WHERE prot.oid {eq} dep.oid) \
         UNION ALL SELECT c.oid::pg_catalog.int8, n.nspname::pg_catalog.text, c.relname::pg_catalog.text, -1, '', kids.top::pg_catalog.int8 \
         FROM kids JOIN pg_catalog.pg_class AS c ON c.oid {eq} kids.oid \
         JOIN pg_catalog.pg_namespace AS n ON n.oid {eq} c.relnamespace \
         WHERE NOT EXISTS (SELECT FROM prot WHERE prot.oid {eq} kids.oid) \
         UNION ALL SELECT c.oid::pg_catalog.int8, n.nspname::pg_catalog.text, c.relname::pg_catalog.text, -2, '', 0 \
         FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid {eq} c.relnamespace \
         WHERE ({names}) AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'f', 'v', 'm']::pg_catalog.\"char\"[]) \
         AND NOT pg_catalog.starts_with(n.nspname::pg_catalog.text, 'pg_') AND n.nspname OPERATOR(pg_catalog.<>) 'information_schema' \
         ORDER BY 1, 4"
    )
}

/// One row of [`catalog_query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRow {
    /// `pg_class.oid`.
    pub table_oid: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// `pg_attribute.attnum`.
    pub attnum: i16,
    /// Column name.
    pub column: String,
    /// Storage type OID.
    pub storage_oid: u32,
}

/// Collects the catalog query's result from server messages.
#[derive(Debug, Default)]
pub struct CatalogReader {
    rows: Vec<CatalogRow>,
    failed: bool,
}

impl CatalogReader {
    /// Feeds one server message; returns `true` at `ReadyForQuery`.
    pub fn feed(&mut self, frame: &Frame) -> Result<bool, RewriteError> {
        match frame.tag() {
            backend::tag::DATA_ROW => {
                let v = backend::decode_data_row(frame)
                    .map_err(|_| RewriteError::Malformed("catalog DataRow"))?;
                let text = |i: usize| -> Result<String, RewriteError> {
                    v.get(i)
                        .and_then(|x| x.as_ref())
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .map(str::to_owned)
                        .ok_or(RewriteError::Malformed("catalog DataRow"))
                };
                let num = |i: usize| -> Result<i64, RewriteError> {
                    text(i)?
                        .parse()
                        .map_err(|_| RewriteError::Malformed("catalog DataRow"))
                };
                self.rows.push(CatalogRow {
                    table_oid: num(0)? as u32,
                    schema: text(1)?,
                    table: text(2)?,
                    attnum: num(3)? as i16,
                    column: text(4)?,
                    storage_oid: num(5)? as u32,
                });
                Ok(false)
            }
            backend::tag::ERROR_RESPONSE => {
                self.failed = true;
                Ok(false)
            }
            backend::tag::READY_FOR_QUERY => Ok(true),
            _ => Ok(false),
        }
    }

    /// The rows, or `None` if the query failed.
    pub fn finish(self) -> Option<Vec<CatalogRow>> {
        (!self.failed).then_some(self.rows)
    }
}

impl Catalog {
    /// Resolves the policy against catalog rows.
    pub fn resolve(policy: &Policy, keys: &KeySet, rows: &[CatalogRow]) -> Catalog {
        let mut cat = Catalog::default();
        let mut oids: HashMap<u32, QualifiedTable> = HashMap::new();
        let mut kids: Vec<(QualifiedTable, u32)> = Vec::new();
        for row in rows {
            if row.attnum <= 0 {
                if row.attnum == -2 {
                    cat.relation_schemas
                        .entry(row.table.clone())
                        .or_default()
                        .push(row.schema.clone());
                    continue;
                }
                if let (Ok(schema), Ok(table)) = (
                    Ident::from_normalized(row.schema.clone()),
                    Ident::from_normalized(row.table.clone()),
                ) {
                    let qt = QualifiedTable::new(schema, table);
                    match row.attnum {
                        0 => cat.views.push(qt),
                        -1 => kids.push((qt, row.storage_oid)),
                        _ => {}
                    }
                }
                continue;
            }
            let (Ok(schema), Ok(table), Ok(column)) = (
                Ident::from_normalized(row.schema.clone()),
                Ident::from_normalized(row.table.clone()),
                Ident::from_normalized(row.column.clone()),
            ) else {
                continue;
            };
            let qt = QualifiedTable::new(schema, table);
            oids.entry(row.table_oid).or_insert_with(|| qt.clone());
            cat.order
                .entry(qt.clone())
                .or_default()
                .push(column.clone());
            let Some(pc) = policy.lookup(&qt, &column) else {
                continue;
            };
            let Ok(logical) = pc.ty.name().parse::<LogicalType>() else {
                continue;
            };
            let crypto = ColumnCrypto {
                column: pc.column.clone(),
                logical,
                typmod: pc.typmod,
                mode: pc.mode,
                storage: Storage::from_oid(row.storage_oid),
                keys: keys.keys_for(&pc.key),
                stats: keys.stats_for(&pc.column),
            };
            let idx = cat.columns.len();
            cat.columns.push(Arc::new(crypto));
            cat.by_attr.insert((row.table_oid, row.attnum), idx);
            cat.by_ref.insert(pc.column.clone(), idx);
        }
        for t in policy.tables() {
            match cat.order.get(t.table()) {
                None => cat.missing.push(t.table().clone()),
                Some(cols) => {
                    for c in t.columns() {
                        if !cols.contains(&c.column.column) {
                            cat.missing_columns
                                .push((t.table().clone(), c.column.column.clone()));
                        }
                    }
                }
            }
        }
        for (kid, top) in kids {
            // A child whose ancestor's columns were not returned (cannot
            // happen with one query) is refused under its own name.
            let parent = oids.get(&top).cloned().unwrap_or_else(|| kid.clone());
            cat.children.push((kid, parent));
        }
        cat
    }

    /// Relations statements may not name, and why: views over protected
    /// tables, children and partitions of them, protected tables lacking a
    /// policy column.
    pub fn guarded(&self) -> Vec<(QualifiedTable, pgveil_sql::Guarded)> {
        let mut out: Vec<(QualifiedTable, pgveil_sql::Guarded)> = self
            .views
            .iter()
            .map(|v| (v.clone(), pgveil_sql::Guarded::View))
            .collect();
        out.extend(
            self.children
                .iter()
                .map(|(k, p)| (k.clone(), pgveil_sql::Guarded::Child(p.clone()))),
        );
        out.extend(
            self.missing_columns
                .iter()
                .map(|(t, c)| (t.clone(), pgveil_sql::Guarded::MissingColumn(c.clone()))),
        );
        out
    }

    /// Policy table name → schemas that have a relation of that name.
    pub fn relation_schemas(&self) -> &HashMap<String, Vec<String>> {
        &self.relation_schemas
    }

    /// Protected tables lacking a policy column: `(table, column)`.
    pub fn missing_columns(&self) -> &[(QualifiedTable, Ident)] {
        &self.missing_columns
    }

    /// Policy tables this database does not have.
    pub fn missing_tables(&self) -> &[QualifiedTable] {
        &self.missing
    }

    /// Number of protected columns resolved.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether no protected column was resolved.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The protected column at `(table OID, attnum)` of a `RowDescription`.
    pub fn by_attr(&self, table_oid: u32, attnum: i16) -> Option<&Arc<ColumnCrypto>> {
        if table_oid == 0 {
            return None;
        }
        self.by_attr
            .get(&(table_oid, attnum))
            .map(|&i| &self.columns[i])
    }

    /// The protected column named `column`; an error if its table is not in
    /// this database (yet).
    pub fn column(&self, column: &ColumnRef) -> Result<&Arc<ColumnCrypto>, RewriteError> {
        self.by_ref
            .get(column)
            .map(|&i| &self.columns[i])
            .ok_or_else(|| RewriteError::NotInCatalog {
                table: column.table_ref().to_string(),
                column: column.clone(),
            })
    }

    /// Views that read protected tables.
    pub fn dependent_views(&self) -> &[QualifiedTable] {
        &self.views
    }

    /// Column order of the policy's tables, for the analyser.
    pub fn column_order(&self) -> HashMap<QualifiedTable, Vec<Ident>> {
        self.order.clone()
    }
}

/// [`pgveil_sql::ColumnOrder`] from a resolved catalog.
#[derive(Debug)]
pub struct CatalogOrder(pub HashMap<QualifiedTable, Vec<Ident>>);

impl pgveil_sql::ColumnOrder for CatalogOrder {
    fn column_order(&self, table: &QualifiedTable) -> Option<Vec<Ident>> {
        self.0.get(table).cloned()
    }
}

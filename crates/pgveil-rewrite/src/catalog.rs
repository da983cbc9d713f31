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
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The catalog query: every column of every policy table, in order, with
/// its storage type (domains resolved to their base type). Names are
/// compared exactly: the policy holds them normalised as the catalog does.
pub fn catalog_query(policy: &Policy) -> String {
    let wanted: Vec<String> = policy
        .tables()
        .map(|t| {
            format!(
                "({}, {})",
                sql_literal(t.table().schema.as_str()),
                sql_literal(t.table().table.as_str())
            )
        })
        .collect();
    let filter = if wanted.is_empty() {
        "false".to_owned()
    } else {
        format!(
            "(n.nspname::text, c.relname::text) IN (VALUES {})",
            wanted.join(", ")
        )
    };
    // Views reading protected tables (transitively) come back as rows with
    // attnum 0: statements naming them are refused.
    format!(
        "/* pgveil catalog */ WITH RECURSIVE prot AS (SELECT c.oid FROM pg_catalog.pg_class AS c \
         JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'f') AND {filter}), \
         dep(oid) AS (SELECT oid FROM prot UNION SELECT r.ev_class FROM dep \
         JOIN pg_catalog.pg_depend AS d ON d.refobjid = dep.oid \
         AND d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass \
         JOIN pg_catalog.pg_rewrite AS r ON r.oid = d.objid WHERE r.ev_class <> dep.oid) \
         SELECT c.oid::int8, n.nspname::text, c.relname::text, a.attnum::int4, a.attname::text, \
         (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::int8 \
         FROM pg_catalog.pg_attribute AS a \
         JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.oid IN (SELECT oid FROM prot) \
         UNION ALL SELECT c.oid::int8, n.nspname::text, c.relname::text, 0, '', 0 \
         FROM dep JOIN pg_catalog.pg_class AS c ON c.oid = dep.oid \
         JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
         WHERE dep.oid NOT IN (SELECT oid FROM prot) \
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
        for row in rows {
            if row.attnum == 0 {
                if let (Ok(schema), Ok(table)) = (
                    Ident::from_normalized(row.schema.clone()),
                    Ident::from_normalized(row.table.clone()),
                ) {
                    cat.views.push(QualifiedTable::new(schema, table));
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
            if !cat.order.contains_key(t.table()) {
                cat.missing.push(t.table().clone());
            }
        }
        cat
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

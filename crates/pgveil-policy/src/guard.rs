//! Guard constraints: pgveil's second line of defence, inside PostgreSQL.
//!
//! For every protected column a `CHECK` constraint accepts only `NULL` or a
//! well-formed pgveil envelope of that column's mode in that column's
//! storage encoding. A plaintext value that reaches the table by any path
//! pgveil's statement analysis does not see — dynamic SQL in functions, `DO`
//! blocks and triggers, another client connected directly, a child table or
//! partition (CHECK constraints are inherited), a renamed column (they
//! follow the column, not its name) — fails with SQLSTATE 23514 naming the
//! constraint, never the value.
//!
//! What a guard does not do: check that a value was encrypted under this
//! column's key (only pgveil can, with the key), so a client that forges
//! envelope-shaped bytes, or copies a ciphertext of another column of the
//! same mode, passes it. Such values fail authentication when read.
//!
//! Pure SQL generation; the `pgveil guard` command runs it.

use crate::check::{StorageType, ENVELOPE_OVERHEAD, TEXT_ENVELOPE_PREFIX};
use crate::{Ident, Mode, ProtectedColumn};

/// Prefix of every guard constraint's name.
pub const GUARD_PREFIX: &str = "pgveil_guard_";

/// Version of the guard expression; part of the constraint's comment so
/// `pgveil guard install` replaces guards made by an older pgveil.
pub const GUARD_VERSION: u32 = 1;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes).
const MAX_IDENT: usize = 63;

/// The constraint name guarding `column`: `pgveil_guard_<column>`, cut to
/// PostgreSQL's 63 bytes with a hash of the full name when too long.
pub fn guard_name(column: &Ident) -> String {
    let full = format!("{GUARD_PREFIX}{}", column.as_str());
    if full.len() <= MAX_IDENT {
        return full;
    }
    // FNV-1a: stable across builds and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in column.as_str().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let mut cut = MAX_IDENT - 9;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{h:08x}", &full[..cut])
}

/// The envelope format byte a column's values carry.
const fn format_byte(mode: Mode) -> u8 {
    match mode {
        Mode::Randomized => 0x11,
        Mode::Deterministic => 0x12,
    }
}

/// The `CHECK` expression for `pc` stored as `storage`, or `None` when the
/// storage type cannot hold ciphertext. Every operator and function is
/// schema-qualified; evaluation order is fixed by `CASE`, so no input makes
/// the check raise anything but a violation.
pub fn guard_expression(pc: &ProtectedColumn, storage: &StorageType) -> Option<String> {
    let c = &pc.column.column;
    let byte = format_byte(pc.mode);
    match storage {
        StorageType::Text | StorageType::Varchar(_) => {
            // `pgv1:` + padded standard base64 of at least an empty
            // plaintext's envelope; its first byte is the mode's format.
            let min = TEXT_ENVELOPE_PREFIX.len() + 4 * ENVELOPE_OVERHEAD.div_ceil(3);
            let skip = TEXT_ENVELOPE_PREFIX.len() + 1;
            Some(format!(
                "{c} IS NULL OR CASE WHEN {c}::pg_catalog.text OPERATOR(pg_catalog.~) \
                 '^pgv1:([A-Za-z0-9+/]{{4}})+([A-Za-z0-9+/]{{2}}==|[A-Za-z0-9+/]{{3}}=)?$' \
                 AND pg_catalog.length({c}::pg_catalog.text) OPERATOR(pg_catalog.>=) {min} \
                 THEN pg_catalog.get_byte(pg_catalog.decode(pg_catalog.substr({c}::pg_catalog.text, {skip}, 8), 'base64'), 0) \
                 OPERATOR(pg_catalog.=) {byte} ELSE false END"
            ))
        }
        StorageType::Bytea => Some(format!(
            "{c} IS NULL OR CASE WHEN pg_catalog.length({c}) OPERATOR(pg_catalog.>=) {ENVELOPE_OVERHEAD} \
             THEN pg_catalog.get_byte({c}, 0) OPERATOR(pg_catalog.=) {byte} ELSE false END"
        )),
        StorageType::Other(_) => None,
    }
}

/// The comment stored on a guard constraint: identifies pgveil's guards
/// and the expression they were made from (so a changed mode, storage or
/// pgveil version makes `guard install` replace it).
pub fn guard_comment(expression: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in expression.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("pgveil guard v{GUARD_VERSION} {h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    #[test]
    fn names_fit_postgres_limits_and_stay_distinct() {
        let short = Ident::parse("ssn").unwrap();
        assert_eq!(guard_name(&short), "pgveil_guard_ssn");
        let a = Ident::from_normalized("a".repeat(60)).unwrap();
        let b = Ident::from_normalized(format!("{}b", "a".repeat(59))).unwrap();
        assert!(guard_name(&a).len() <= 63);
        assert_ne!(guard_name(&a), guard_name(&b));
        let wide = Ident::from_normalized("é".repeat(30)).unwrap();
        assert!(guard_name(&wide).len() <= 63);
    }

    #[test]
    fn expressions_follow_mode_and_storage() {
        let p = Policy::from_toml_str(
            "[tables.\"public.p\"]\nssn = { type = \"text\", mode = \"deterministic\" }\nnote = { type = \"text\" }\n",
            "t",
        )
        .unwrap();
        let ssn = p
            .columns()
            .find(|c| c.column.column.as_str() == "ssn")
            .unwrap();
        let note = p
            .columns()
            .find(|c| c.column.column.as_str() == "note")
            .unwrap();
        let t = guard_expression(ssn, &StorageType::Text).unwrap();
        assert!(t.contains("= 18") || t.contains(") 18"), "{t}");
        assert!(t.contains(">=) 49"), "{t}");
        let b = guard_expression(note, &StorageType::Bytea).unwrap();
        assert!(b.contains(">=) 33") && b.contains(") 17"), "{b}");
        assert!(guard_expression(note, &StorageType::Other("integer".into())).is_none());
        assert_ne!(guard_comment(&t), guard_comment(&b));
    }
}

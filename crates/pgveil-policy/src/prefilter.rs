//! The statement fast path: does SQL text possibly mention a protected table?
//!
//! A statement that cannot name a protected table is forwarded without
//! parsing (parsing costs 8–34 µs; this scan costs nanoseconds). The scan is
//! conservative: it may say "yes" for a statement that only mentions the
//! name in a string or comment (a false positive costs one parse), but it
//! never says "no" for a statement that names a protected table.
//!
//! Why a substring scan of the bare table names is enough:
//! * Every reference to a table spells its name: unqualified, qualified
//!   (`public.patients`, `"public"."patients"`, with comments or spaces
//!   around the dot) — the table-name token is always there.
//! * Unquoted identifiers fold ASCII letters only (UTF-8 databases), so an
//!   ASCII case-insensitive match catches `PATIENTS` and `Patients`; a
//!   quoted `"Patients"` is spelled exactly and so matched too.
//! * Inside a quoted identifier a `"` is written `""`: names containing `"`
//!   are also searched in that doubled form.
//! * Names longer than 63 bytes are truncated by the server; the policy
//!   refuses such names, and a longer token in the SQL still contains the
//!   63-byte name as a prefix.
//! * The one spelling that need not contain the name is a Unicode-escaped
//!   identifier (`U&"p\0061tients"`), so any `U&"` makes the scan say yes.
//!
//! What a text scan cannot see, and the statement layer must handle: views,
//! functions, rules and triggers reaching a protected table under another
//! name, `EXECUTE` of a statement prepared earlier with SQL `PREPARE`, and
//! `FETCH` from a cursor declared earlier. The scan matches bytes as UTF-8
//! (or any ASCII-compatible encoding for ASCII names): with a non-UTF-8
//! `client_encoding` and non-ASCII table names the proxy must not rely on it.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::ident::QualifiedTable;

/// Marks a Unicode-escaped identifier, which can spell a name without containing it.
const UNICODE_ESCAPE: &str = "u&\"";

/// A compiled multi-pattern scanner for the protected table names.
#[derive(Clone, Debug)]
pub struct TableMentionScanner {
    /// `None` when there is nothing to find (empty policy).
    matcher: Option<Matcher>,
    /// The patterns, lower-cased, for inspection and tests.
    patterns: Vec<String>,
}

#[derive(Clone, Debug)]
enum Matcher {
    Automaton(AhoCorasick),
    /// Building the automaton failed (it cannot for a policy's handful of
    /// names, but if it did, every statement is treated as a mention).
    Everything,
}

impl TableMentionScanner {
    /// A scanner for these tables.
    pub fn new<'a>(tables: impl IntoIterator<Item = &'a QualifiedTable>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for table in tables {
            let name = table.table.as_str().to_ascii_lowercase();
            if name.contains('"') {
                patterns.push(name.replace('"', "\"\""));
            }
            patterns.push(name);
        }
        if patterns.is_empty() {
            return TableMentionScanner {
                matcher: None,
                patterns,
            };
        }
        patterns.push(UNICODE_ESCAPE.to_owned());
        patterns.sort();
        patterns.dedup();
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .map_or(Matcher::Everything, Matcher::Automaton);
        TableMentionScanner {
            matcher: Some(matcher),
            patterns,
        }
    }

    /// Whether `sql` might mention a protected table.
    pub fn is_match(&self, sql: &[u8]) -> bool {
        match &self.matcher {
            None => false,
            Some(Matcher::Everything) => true,
            Some(Matcher::Automaton(ac)) => ac.is_match(sql),
        }
    }

    /// The lower-cased patterns searched for (table names, their `""`-doubled
    /// forms, and `u&"`); ASCII case is ignored when matching.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scanner(names: &[&str]) -> TableMentionScanner {
        let tables: Vec<QualifiedTable> = names
            .iter()
            .map(|n| QualifiedTable::parse(n).unwrap())
            .collect();
        TableMentionScanner::new(&tables)
    }

    #[test]
    fn empty_policy_matches_nothing() {
        let s = scanner(&[]);
        assert!(!s.is_match(b"SELECT * FROM patients"));
        assert!(!s.is_match(b"SELECT U&\"x\""));
        assert!(s.patterns().is_empty());
    }

    #[test]
    fn finds_mentions() {
        let s = scanner(&["public.patients", "clinic.\"Visits\"", "\"a\"\"b\""]);
        for sql in [
            "SELECT * FROM patients",
            "select * from PUBLIC.PATIENTS where x = 1",
            "INSERT INTO \"public\".\"patients\" VALUES (1)",
            "SELECT * FROM public . /* c */ Patients",
            "UPDATE clinic.\"Visits\" SET a = 1",
            "SELECT * FROM visits", // folds to a different table: still a (harmless) match
            "SELECT * FROM \"a\"\"b\"",
            "SELECT * FROM U&\"p\\0061tients\"",
            "select * from u&\"x\"",
            "COPY patients FROM STDIN",
            "TABLE patients",
            "SELECT * FROM patients_archive", // false positive, fine
        ] {
            assert!(s.is_match(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "BEGIN",
            "SELECT * FROM appointments",
            "SET application_name = 'x'",
        ] {
            assert!(!s.is_match(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn non_ascii_names() {
        let s = scanner(&["\"Ärzte\""]);
        assert!(s.is_match("SELECT * FROM \"Ärzte\"".as_bytes()));
        // Unquoted, only ASCII folds: `Ärzte` stays `Ärzte`.
        assert!(s.is_match("SELECT * FROM ÄRZTE".as_bytes()));
        // `ärzte` is another table in PostgreSQL too.
        assert!(!s.is_match("SELECT * FROM ärzte".as_bytes()));
        assert!(!s.is_match("SELECT * FROM arzte".as_bytes()));
    }

    /// Spell `name` (normalised) as SQL might: unquoted in any ASCII case when
    /// that folds back to it, quoted exactly, or Unicode-escaped.
    fn spellings(name: String) -> impl Strategy<Value = String> {
        let foldable = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let escaped: String = format!(
            "U&\"{}\"",
            name.chars()
                .map(|c| format!("\\{:04x}", c as u32))
                .collect::<String>()
        );
        let n = name.clone();
        let cased = proptest::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
            n.chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        });
        let mut options = vec![Just(quoted).boxed(), Just(escaped).boxed()];
        if foldable {
            options.push(cased.boxed());
        }
        proptest::strategy::Union::new(options)
    }

    fn sql_noise() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("SELECT ".to_owned()),
                Just(" * FROM ".to_owned()),
                Just(" WHERE x = $1".to_owned()),
                Just(" /* comment */ ".to_owned()),
                Just("'str''ing'".to_owned()),
                Just("\n".to_owned()),
                "[a-zA-Z0-9_ ,().=]{0,12}",
                "\\PC{0,4}",
            ],
            0..6,
        )
        .prop_map(|parts| parts.concat())
    }

    fn table_and_spelling() -> impl Strategy<Value = (String, String)> {
        prop_oneof!["[a-z_][a-z0-9_$]{0,20}", "[A-Za-z][A-Za-z0-9 .\"é]{0,20}"]
            .prop_flat_map(|name| (Just(name.clone()), spellings(name)))
    }

    fn schema_spelling() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z]{1,8}",
            "[a-z]{1,8}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    proptest! {
        #[test]
        fn never_misses_a_mention(
            (table, spelled) in table_and_spelling(),
            schema in prop::option::of(schema_spelling()),
            decoy in "[a-z]{1,10}",
            prefix in sql_noise(),
            suffix in sql_noise(),
        ) {
            let qt = QualifiedTable::new(
                crate::ident::Ident::from_normalized("public").unwrap(),
                crate::ident::Ident::from_normalized(table).unwrap(),
            );
            let decoy = QualifiedTable::parse(&decoy).unwrap();
            let s = TableMentionScanner::new([&decoy, &qt]);
            let qualified = match schema {
                Some(schema) => format!("{schema} . {spelled}"),
                None => spelled,
            };
            let sql = format!("{prefix}{qualified}{suffix}");
            prop_assert!(s.is_match(sql.as_bytes()), "missed in {sql:?}");
        }

        #[test]
        fn no_match_without_the_letters(sql in "[^pP]{0,64}") {
            // A statement without a `p` cannot spell "patients" (nor `U&"`,
            // which needs a `u` and `&` and `"` in a row: excluded below).
            let s = scanner(&["patients"]);
            prop_assume!(!sql.to_ascii_lowercase().contains("u&\""));
            prop_assert!(!s.is_match(sql.as_bytes()));
        }
    }
}

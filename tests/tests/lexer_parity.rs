//! Issue 11, tokenizer parity: each tricky string goes through pgveil's
//! scanner and through PostgreSQL itself (directly, no proxy); the number of
//! statements PostgreSQL ran and the value of every string literal it
//! returned must be what pgveil's scanner read. A disagreement is how
//! plaintext once hid from the analyser (a `--` comment ended by `\r`).

use pgveil_tests::*;
use tokio_postgres::SimpleQueryMessage;

/// Statements of `SELECT`s whose outputs are exactly the string literals of
/// the text, in order.
const CORPUS: &[&str] = &[
    "SELECT 'plain'",
    "SELECT 'it''s', 'two'",
    "SELECT E'a\\nb', E'quote\\'s', E'back\\\\slash'",
    "SELECT e'\\x41\\102\\u00e9'",
    "SELECT 'a'; SELECT 'b'",
    "SELECT 'semi;colon'; SELECT $$dollar ; 'quoted'$$",
    "SELECT $tag$ $$ nested $$ $tag$, $a$x$a$",
    "SELECT 'x' -- comment 'not a literal' ; SELECT 'y'\n, 'z'",
    "SELECT 'x' -- comment ended by CR\r, 'after cr'",
    "SELECT /* block 'not' /* nested 'no' */ still comment */ 'yes'",
    "SELECT 'multi\nline'",
    "SELECT '' , ''''",
    "SELECT 'ünïcödé ☃', E'\\u2603'",
    "SELECT 'a'\n'continued on the next line'",
    "SELECT 'x'::text, CAST('y' AS text)",
    "SELECT U&'d\\0061t\\+000061'",
    "SELECT U&'!0041' UESCAPE '!'",
    "SELECT N'national'",
    "SELECT 'tab\there'",
    "SELECT $_$underscore tag$_$, $é$unicode tag$é$",
    ";; SELECT 'after empty statements' ;;",
    "SELECT 'a'/*c*/; /* only a comment */ ; SELECT 'b'",
    "SELECT \"quoted;ident\" FROM (SELECT 'q' AS \"quoted;ident\") s",
    "SELECT E'\\'; SELECT ''still one literal'",
    "SELECT 'backslash \\ stays'",
    "SELECT 'x'--no space\n",
    "SELECT 'a' -- a comment between\n 'continued'",
    "SELECT E'\\\\', ''''''",
    "SELECT 'x' AS \"a\"\"b\"",
    "SELECT $$ -- not a comment $$, $$ /* nor this */ $$",
    "SELECT '/* not a comment */', '-- nor this'",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgveil_scans_statement_text_as_postgresql_does() {
    // `$1$…$1$` is a parameter, not a dollar quote (a tag cannot start
    // with a digit): PostgreSQL rejects the statement ("there is no
    // parameter $1"); pgveil must not read a string there either.
    assert!(pgveil_sql::string_literal_values("SELECT $1$not a tag$1$").is_empty());
    let db = fresh_database("lexparity");
    let c = connect_plain(&direct_config(&db)).await;
    for sql in CORPUS {
        let msgs = c
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"));
        let mut statements = 0;
        let mut values: Vec<Option<String>> = Vec::new();
        for m in msgs {
            match m {
                SimpleQueryMessage::Row(r) => {
                    values.extend((0..r.len()).map(|i| r.get(i).map(str::to_owned)))
                }
                SimpleQueryMessage::CommandComplete(_) => statements += 1,
                _ => {}
            }
        }
        assert_eq!(
            pgveil_sql::statement_count(sql),
            statements,
            "statement boundaries of {sql:?}"
        );
        let mine = pgveil_sql::string_literal_values(sql);
        // Adjacent literals separated by a newline are one literal to
        // PostgreSQL; pgveil reads two and never rewrites them (it refuses
        // the form), so only their count may differ. Everything pgveil
        // decodes must be what the server read.
        let decoded: Vec<&String> = mine.iter().flatten().collect();
        if mine.len() == values.len() {
            for (m, v) in mine.iter().zip(&values) {
                if let Some(m) = m {
                    assert_eq!(Some(m), v.as_ref(), "literal of {sql:?}");
                }
            }
        } else {
            // String continuation (literals separated by whitespace
            // with a newline): fewer, longer values on the server.
            assert!(
                values.len() < mine.len(),
                "literal count of {sql:?}: pgveil {mine:?}, server {values:?}"
            );
            assert!(
                decoded
                    .iter()
                    .all(|d| values.iter().flatten().any(|v| v.contains(d.as_str()))),
                "{sql:?}: pgveil {mine:?}, server {values:?}"
            );
        }
    }
}

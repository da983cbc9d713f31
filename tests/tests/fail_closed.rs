//! Issue 11 against a real PostgreSQL: the statement shapes, driver
//! sequences and settings that once stored plaintext in protected columns,
//! each either rewritten (and read back equal) or refused with a SQLSTATE;
//! and the guard constraints that make PostgreSQL itself reject plaintext
//! written around pgveil. Oracles: the table data read directly, `pg_dump`,
//! and the server log with `log_statement = all`.
//!
//! Canaries sent through pgveil start with `LEAK`; values written directly
//! (around pgveil, to test the guards) start with `DIRECT`.

use pgveil_tests::*;
use std::process::Command;
use tokio_postgres::SimpleQueryMessage;

/// Rows of a simple query, or its SQLSTATE.
async fn try_rows(
    c: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, (String, String)> {
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()),
        Err(e) => {
            let d = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
            Err((d.code().code().to_owned(), d.message().to_owned()))
        }
    }
}

async fn refused(c: &tokio_postgres::Client, sql: &str, code: &str) -> String {
    match try_rows(c, sql).await {
        Ok(r) => panic!("not refused: {sql}: {r:?}"),
        Err((got, msg)) => {
            assert_eq!(got, code, "{sql}: {msg}");
            assert!(
                !msg.contains("LEAK"),
                "{sql}: the message holds a value: {msg}"
            );
            msg
        }
    }
}

/// Same in the extended protocol (tokio-postgres: Parse/Bind/Execute).
async fn refused_extended(c: &tokio_postgres::Client, sql: &str, code: &str) {
    match c.query(sql, &[]).await {
        Ok(r) => panic!("not refused (extended): {sql}: {} rows", r.len()),
        Err(e) => {
            let d = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
            assert_eq!(d.code().code(), code, "{sql}: {}", d.message());
            assert!(!d.message().contains("LEAK"));
        }
    }
}

/// No value of `column` in `db`, read directly, contains `LEAK`, and every
/// non-NULL value is an envelope.
fn assert_column_ciphertext(db: &str, table: &str, column: &str) {
    let n = cluster()
        .psql(
            db,
            &format!(
                "SELECT count(*) FROM {table} WHERE ({column}::text LIKE '%LEAK%' AND {column}::text !~ '^pgv1:[A-Za-z0-9+/]+=*$') \
                 OR ({column} IS NOT NULL AND {column}::text NOT LIKE 'pgv1:%')"
            ),
        )
        .unwrap();
    if n.trim() != "0" {
        let rows = cluster()
            .psql(
                db,
                &format!(
                    "SELECT id, left({column}::text, 40) FROM {table} WHERE ({column}::text LIKE '%LEAK%' AND {column}::text !~ '^pgv1:[A-Za-z0-9+/]+=*$') \
                     OR ({column} IS NOT NULL AND {column}::text NOT LIKE 'pgv1:%')"
                ),
            )
            .unwrap_or_default();
        panic!("{table}.{column} holds plaintext in {n} rows: {rows}");
    }
}

fn dump_lacks(db: &str, marker: &str) {
    let dump = std::process::Command::new(pg_program("pg_dump"))
        .arg(cluster().url(db))
        .output()
        .unwrap();
    assert!(dump.status.success());
    // Random ciphertext can spell a marker: only text outside envelopes counts.
    assert!(
        !without_ciphertext(&String::from_utf8_lossy(&dump.stdout))
            .contains(&marker.to_lowercase()),
        "pg_dump of {db} contains {marker}"
    );
}

/// The shapes of the report and family 1: INSERT sources other than a bare
/// VALUES list are encrypted value by value (both protocols), set operations
/// that compare values are refused, and a `--` comment ended by a carriage
/// return hides nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_sources_and_comment_tricks_store_only_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_shapes");
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let accepted = [
        "INSERT INTO patients (first_name, last_name, ssn) (VALUES ('LEAKA-1', 'x', '111-11-1111'))",
        "INSERT INTO patients (first_name, last_name, ssn) ((VALUES ('LEAKA-2', 'x', '222-22-2222')))",
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('LEAKA-3', 'x', '333-33-3333') UNION ALL VALUES ('LEAKA-4', 'y', '444-44-4444')",
        "INSERT INTO patients (first_name, last_name) WITH q AS (SELECT 1) VALUES ('LEAKA-5', 'x')",
        "SELECT 1 -- a comment ended by a carriage return\r; INSERT INTO patients (first_name, last_name) VALUES ('LEAKA-6', 'x')",
        "INSERT INTO patients (first_name, last_name) VALUES ('LEAKA-7', 'x') -- trailing\r, ('LEAKA-8', 'y')",
    ];
    for sql in accepted {
        try_rows(&c, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    // The same shapes in the extended protocol.
    c.execute(
        "INSERT INTO patients (first_name, last_name) (VALUES ($1, $2))",
        &[&"LEAKA-9", &"x"],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO patients (first_name, last_name) VALUES ($1, 'a') UNION ALL VALUES ($2, 'b')",
        &[&"LEAKA-10", &"LEAKA-11"],
    )
    .await
    .unwrap();
    // Read back through pgveil: the plaintext, in order of insertion.
    let names: Vec<String> = c
        .query("SELECT first_name FROM patients ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<String> = (1..=11).map(|i| format!("LEAKA-{i}")).collect();
    assert_eq!(names, want);
    let ssn: Vec<String> = c
        .query(
            "SELECT first_name FROM patients WHERE ssn = $1",
            &[&"444-44-4444"],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ssn, ["LEAKA-4"]);
    // Shapes that compare or copy values pgveil cannot encrypt: refused.
    for sql in [
        "INSERT INTO patients (first_name, last_name) VALUES ('LEAKA-x', 'x') UNION VALUES ('LEAKA-y', 'y')",
        "INSERT INTO patients (first_name, last_name) TABLE patients_staging",
        "SELECT id FROM patients WHERE ssn IN (VALUES ('LEAKA-z'))",
        "SELECT id FROM patients WHERE ssn NOT IN (VALUES ('LEAKA-z'))",
        "SELECT p FROM patients p",
        "SELECT row_to_json(p) FROM patients p",
        "SELECT first_name INTO TEMP leak_copy FROM patients",
        "INSERT INTO patients (first_name, last_name) VALUES ('LEAKA-z'::varchar(3), 'x')",
    ] {
        refused(&c, sql, "0A000").await;
        if !sql.contains(';') {
            refused_extended(&c, sql, "0A000").await;
        }
    }
    // A parameter used for a protected and an unprotected place.
    let e = c
        .execute(
            "INSERT INTO patients (first_name, last_name) VALUES ($1, 'x') RETURNING $1",
            &[&"LEAKA-p"],
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "0A000");
    assert_column_ciphertext(&db, "patients", "first_name");
    assert_column_ciphertext(&db, "patients", "ssn");
    dump_lacks(&db, "LEAKA");
    assert_server_log_lacks(&["LEAKA"]);
}

/// Family 3 and 8: prepared statements change only when the server says
/// so, in one namespace for SQL and the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_the_servers_confirmations() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database_for_raw("fc_prepared");
    let proxy = clinic_proxy(dir.path()).await;
    let mut r = RawClient::connect(proxy.port(), &db).await;
    let ok = |msgs: &[RawMessage], what: &str| {
        let errors: Vec<String> = msgs
            .iter()
            .filter(|m| m.tag == b'E')
            .map(|m| m.message())
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:?}");
    };
    let error = |msgs: &[RawMessage], code: &str, what: &str| {
        let e = msgs
            .iter()
            .find(|m| m.tag == b'E')
            .unwrap_or_else(|| panic!("{what}: no error"));
        assert_eq!(
            e.sqlstate().as_deref(),
            Some(code),
            "{what}: {}",
            e.message()
        );
    };

    // The report: a failed re-PREPARE must not make pgveil forget q.
    let m = r
        .query("PREPARE q AS INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, 'x', '777-77-7777')")
        .await;
    ok(&m, "prepare");
    let m = r.query("PREPARE q AS SELECT $1::text").await;
    error(&m, "42P05", "second prepare");
    let m = r.query("EXECUTE q('LEAKB-1')").await;
    ok(&m, "execute");
    // DEALLOCATE in an aborted transaction fails: q stays.
    let m = r.query("BEGIN; SELECT 1/0").await;
    error(&m, "22012", "division");
    let m = r.query("DEALLOCATE q").await;
    error(&m, "25P02", "deallocate in failed transaction");
    r.query("ROLLBACK").await;
    let m = r.query("EXECUTE q('LEAKB-2')").await;
    error(
        &m,
        "23505",
        "same ssn again: the statement still inserts (encrypted)",
    );

    // Protocol: Parse of an existing name fails; the old statement stays.
    r.send(&[
        raw::parse(
            "s1",
            "INSERT INTO patients (first_name, last_name) VALUES ($1, 'p')",
        ),
        raw::sync(),
    ])
    .await;
    ok(&r.until_ready().await, "parse s1");
    r.send(&[raw::parse("s1", "SELECT $1::text"), raw::sync()])
        .await;
    error(&r.until_ready().await, "42P05", "parse s1 again");
    r.send(&[
        raw::bind("", "s1", &[Some("LEAKB-3")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    ok(&r.until_ready().await, "bind s1");

    // A Close skipped after an error: s1 stays protected.
    r.send(&[
        raw::parse("", "SELEC broken"),
        raw::close_statement("s1"),
        raw::sync(),
    ])
    .await;
    error(&r.until_ready().await, "42601", "broken parse");
    r.send(&[
        raw::bind("", "s1", &[Some("LEAKB-4")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    ok(&r.until_ready().await, "bind s1 after skipped close");

    // A pipelined Parse that fails takes the Bind behind it down too; a
    // Bind of the same name in the next batch, sent before the answer,
    // cannot know which statement the server will use: refused.
    r.send(&[
        raw::parse("s1", "SELECT $1::text"),
        raw::bind("", "s1", &[Some("LEAKB-x")]),
        raw::execute(""),
        raw::sync(),
        raw::bind("", "s1", &[Some("LEAKB-y")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    error(&r.until_ready().await, "42P05", "pipelined parse");
    error(&r.until_ready().await, "0A000", "bind of an unsettled name");
    // Once answered, the name is settled again: the old statement.
    r.send(&[
        raw::bind("", "s1", &[Some("LEAKB-5")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    ok(&r.until_ready().await, "bind after the failed batch");
    // A brand-new name used in the next batch before its answer is fine
    // (psycopg's pipeline mode): if its Parse failed, the server has none.
    r.send(&[
        raw::parse(
            "s9",
            "INSERT INTO patients (first_name, last_name) VALUES ($1, 'n')",
        ),
        raw::sync(),
        raw::bind("", "s9", &[Some("LEAKB-6")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    ok(&r.until_ready().await, "parse s9");
    ok(&r.until_ready().await, "bind s9 in the next batch");

    // Closed for real (CloseComplete): the name may be reused unprotected.
    r.send(&[raw::close_statement("s1"), raw::sync()]).await;
    ok(&r.until_ready().await, "close");
    r.send(&[
        raw::parse("s1", "SELECT $1::text AS v"),
        raw::bind("", "s1", &[Some("plain")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    let m = r.until_ready().await;
    ok(&m, "reuse");
    assert!(m
        .iter()
        .any(|x| x.tag == b'D' && x.body.ends_with(b"plain")));

    // One namespace: a SQL-prepared protected statement is not bound by
    // the protocol, a protocol one is not run by SQL EXECUTE.
    ok(
        &r.query("PREPARE q2 AS INSERT INTO patients (first_name, last_name) VALUES ($1, 'y')")
            .await,
        "prepare q2",
    );
    r.send(&[
        raw::bind("", "q2", &[Some("LEAKB-y")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    error(
        &r.until_ready().await,
        "0A000",
        "protocol bind of SQL statement",
    );
    r.send(&[
        raw::parse(
            "s3",
            "INSERT INTO patients (first_name, last_name) VALUES ($1, 'z')",
        ),
        raw::sync(),
    ])
    .await;
    ok(&r.until_ready().await, "parse s3");
    error(
        &r.query("EXECUTE s3('LEAKB-z')").await,
        "0A000",
        "SQL execute of protocol statement",
    );

    // Everything stored is ciphertext and reads back.
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let mut names: Vec<String> = c
        .query("SELECT first_name FROM patients", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["LEAKB-1", "LEAKB-3", "LEAKB-4", "LEAKB-5", "LEAKB-6"]
    );
    assert_column_ciphertext(&db, "patients", "first_name");
    dump_lacks(&db, "LEAKB");
    assert_server_log_lacks(&["LEAKB"]);
}

/// Family 4 and 5: settings that change how the server reads text, and
/// names whose meaning pgveil cannot pin down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_names_that_change_parsing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_settings");
    cluster()
        .psql(
            &db,
            "CREATE SCHEMA app; CREATE TABLE app.insurance (member_id text, payer text)",
        )
        .unwrap();
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    // standard_conforming_strings = off (SET): a backslash in a plain
    // literal is refused, in the same string and after it.
    refused(
        &c,
        "SET standard_conforming_strings = off; INSERT INTO patients (first_name, last_name) VALUES ('x\\', 'LEAKC-1')",
        "0A000",
    )
    .await;
    try_rows(&c, "SET standard_conforming_strings = off")
        .await
        .unwrap();
    refused(
        &c,
        "INSERT INTO patients (first_name, last_name) VALUES ('a\\', ''LEAKC-2'')",
        "0A000",
    )
    .await;
    // Without a backslash the statement is read the same either way.
    try_rows(
        &c,
        "INSERT INTO patients (first_name, last_name) VALUES ('LEAKC-3', 'x')",
    )
    .await
    .unwrap();
    try_rows(&c, "RESET standard_conforming_strings")
        .await
        .unwrap();
    // ... and as a startup option.
    let mut cfg = proxy.pg_config(&db);
    cfg.options("-c standard_conforming_strings=off");
    let c2 = connect_tls(&cfg).await;
    refused(
        &c2,
        "INSERT INTO patients (first_name, last_name) VALUES ('LEAKC-4\\', 'x')",
        "0A000",
    )
    .await;
    // client_encoding other than UTF8.
    try_rows(&c, "SET client_encoding = 'LATIN1'")
        .await
        .unwrap();
    refused(
        &c,
        "INSERT INTO patients (first_name, last_name) VALUES ('LEAKC-5', 'x')",
        "0A000",
    )
    .await;
    try_rows(&c, "SET client_encoding = 'UTF8'").await.unwrap();
    // Unicode-escaped identifiers.
    refused(
        &c,
        "INSERT INTO U&\"p\\0061tients\" (first_name, last_name) VALUES ('LEAKC-6', 'x')",
        "0A000",
    )
    .await;
    // An unqualified name two schemas share: whatever search_path says.
    try_rows(&c, "SET search_path = app, public").await.unwrap();
    let msg = refused(
        &c,
        "INSERT INTO insurance (patient_id, payer, member_id) VALUES (1, 'p', 'LEAKC-7')",
        "0A000",
    )
    .await;
    assert!(msg.contains("ambiguous"), "{msg}");
    try_rows(&c, "RESET search_path").await.unwrap();
    // Temporary tables that would shadow a protected table.
    refused(&c, "CREATE TEMP TABLE patients (first_name text)", "0A000").await;
    // Renames of protected columns and tables.
    refused(
        &c,
        "ALTER TABLE patients RENAME COLUMN first_name TO fname",
        "0A000",
    )
    .await;
    refused(&c, "ALTER TABLE patients RENAME TO people", "0A000").await;
    refused(
        &c,
        "ALTER TABLE patients ALTER COLUMN ssn SET DEFAULT 'LEAKC-8'",
        "0A000",
    )
    .await;
    refused(
        &c,
        "CREATE TABLE patients_kid () INHERITS (patients)",
        "0A000",
    )
    .await;
    let rows = try_rows(&c, "SELECT first_name FROM patients")
        .await
        .unwrap();
    assert_eq!(rows, [[Some("LEAKC-3".to_owned())]]);
    assert_column_ciphertext(&db, "patients", "first_name");
    dump_lacks(&db, "LEAKC");
    assert_server_log_lacks(&["LEAKC"]);
}

/// The second line of defence: with guards installed, plaintext written
/// around pgveil — into a protected column, a child table, a renamed
/// column — fails in PostgreSQL with 23514 naming the guard; pgveil's own
/// writes pass; pgveil refuses statements on the renamed table and the
/// child; `guard remove` undoes it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_reject_plaintext_written_around_pgveil() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_guard");
    let cfg = clinic_config(dir.path());
    let url = cluster().url(&db);
    let mut out = Vec::new();
    pgveil::guard::install(&cfg, &url, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("ok: public.patients.ssn: guard pgveil_guard_ssn installed and validated"),
        "{out}"
    );
    // Installing again changes nothing.
    let mut again = Vec::new();
    pgveil::guard::install(&cfg, &url, &mut again)
        .await
        .unwrap();
    assert!(String::from_utf8(again)
        .unwrap()
        .contains("already installed"));

    // Through pgveil: every value type and storage passes the guard.
    let proxy = Proxy::start_with(cfg.clone()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.batch_execute(
        "INSERT INTO patients (first_name, last_name, ssn, date_of_birth, medical_history) VALUES ('LEAKD-1', 'x', '123-00-0001', '1990-01-01', 'hist');
         INSERT INTO lab_results (lab, sample_id, result_value, abnormal, details, raw_report) VALUES ('l', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1.5, true, '{\"a\": 1}', '\\x00ff')",
    )
    .await
    .unwrap();

    // Directly: plaintext is rejected with the guard's name, not the value.
    let direct = connect_plain(&direct_config(&db)).await;
    let cases = [
        "INSERT INTO patients (first_name, last_name) VALUES ('DIRECT-1', 'x')",
        "UPDATE patients SET ssn = 'DIRECT-2'",
        "INSERT INTO patients (first_name, last_name, medical_history) VALUES ('pgv1:AAAA', 'x', '\\x0011')",
        "INSERT INTO lab_results (lab, panel) VALUES ('l', '{}')",
        // An envelope of the other mode (deterministic byte in a randomized column).
        "INSERT INTO patients (first_name, last_name) SELECT ssn, ssn FROM patients LIMIT 1",
    ];
    for sql in cases {
        let e = direct.batch_execute(sql).await.unwrap_err();
        let d = e.as_db_error().unwrap();
        assert_eq!(d.code().code(), "23514", "{sql}: {}", d.message());
        assert!(d.message().contains("pgveil_guard_"), "{}", d.message());
        assert!(!d.message().contains("DIRECT"), "{}", d.message());
    }
    // Dynamic SQL the proxy cannot see: the guard still holds.
    let e = c
        .batch_execute(
            "DO $$ BEGIN EXECUTE 'INSERT INTO pat' || 'ients (first_name, last_name) VALUES (''DYN'' || ''CANARY'', ''x'')'; END $$",
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "23514");

    // A child table (created around pgveil) inherits the guards; pgveil
    // refuses statements naming it.
    direct
        .batch_execute("CREATE TABLE patients_kid () INHERITS (patients)")
        .await
        .unwrap();
    let e = direct
        .batch_execute(
            "INSERT INTO patients_kid (id, first_name, last_name) VALUES (1000, 'DIRECT-3', 'x')",
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "23514");
    // A renamed column keeps its guard.
    direct
        .batch_execute("ALTER TABLE patients RENAME COLUMN phone TO phone_number")
        .await
        .unwrap();
    let e = direct
        .batch_execute("INSERT INTO patients (first_name, last_name, phone_number) VALUES ('pgv1:EQAAAAFtZXNzYWdlIGJ5dGVzIGhlcmUgYW5kIG1vcmUgdGV4dA==', 'pgv1:EQAAAAFtZXNzYWdlIGJ5dGVzIGhlcmUgYW5kIG1vcmUgdGV4dA==', 'DIRECT-4')")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "23514");
    // pgveil learns of both on its next catalog read (a new proxy here;
    // DDL through pgveil or SIGHUP does the same) and refuses them.
    let proxy2 = Proxy::start_with(cfg.clone()).await;
    let c2 = connect_tls(&proxy2.pg_config(&db)).await;
    for sql in [
        "INSERT INTO patients_kid (first_name, last_name) VALUES ('LEAKD-2', 'x')",
        "INSERT INTO patients (first_name, last_name, phone_number) VALUES ('LEAKD-3', 'x', 'LEAKD-4')",
        "SELECT phone_number FROM patients",
    ] {
        let msg = refused(&c2, sql, "0A000").await;
        assert!(msg.contains("patients"), "{msg}");
    }
    direct
        .batch_execute(
            "DROP TABLE patients_kid; ALTER TABLE patients RENAME COLUMN phone_number TO phone",
        )
        .await
        .unwrap();

    // `guard status` through the CLI library, then remove and re-install
    // over a plaintext row: the guard is added but not validated.
    let client = connect_plain(&direct_config(&db)).await;
    let policy = pgveil_policy::Policy::from_toml_str(CLINIC_POLICY, "clinic").unwrap();
    let states = pgveil::guard::status(&policy, &client).await.unwrap();
    assert!(
        states
            .iter()
            .all(|(_, s)| *s == pgveil::guard::GuardState::Valid),
        "{states:?}"
    );
    pgveil::guard::remove(&cfg, &url, &mut Vec::new())
        .await
        .unwrap();
    direct
        .batch_execute("INSERT INTO patients (first_name, last_name) VALUES ('DIRECT-5', 'x')")
        .await
        .unwrap();
    let mut out = Vec::new();
    let r = pgveil::guard::install(&cfg, &url, &mut out).await;
    assert!(r.is_err());
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(
            "public.patients.first_name: guard pgveil_guard_first_name installed but not validated"
        ),
        "{out}"
    );
    assert!(!out.contains("DIRECT"));
    dump_lacks(&db, "LEAKD");
    // (The server log does hold DYNCANARY: PostgreSQL logs a failing row's
    // values in the guard violation's DETAIL; see the README.)
    assert_server_log_lacks(&["LEAKD"]);
}

/// Family 11: psql scripts with inline COPY data. On PostgreSQL ≤ 17 a `\.`
/// line ends CSV data (psql ≤ 17 sends it): accepted and encrypted. A COPY
/// pgveil refuses keeps psql in copy mode, so its data lines are never sent
/// on as SQL statements (which would put them in the server log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_scripts_with_inline_copy_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_copy");
    let proxy = clinic_proxy(dir.path()).await;
    let url = proxy.url(SCRAM_USER, &db, "verify-full");
    let script = dir.path().join("load.sql");
    std::fs::write(
        &script,
        "COPY patients (first_name, last_name, ssn) FROM stdin WITH (FORMAT csv);\n\
         LEAKE-1,x,LEAKE-2\n\
         \"LEAKE-3, quoted\",y,\n\
         \\.\n\
         SELECT count(*) FROM patients;\n",
    )
    .unwrap();
    let out = psql(&url, &["-f", script.to_str().unwrap()]);
    assert_eq!(ok_stdout(&out).trim(), "COPY 2\n2");
    assert_column_ciphertext(&db, "patients", "first_name");
    assert_column_ciphertext(&db, "patients", "ssn");
    // A refused COPY (FORCE_NOT_NULL is not supported on protected
    // columns): the error, and the data lines are swallowed, not run.
    std::fs::write(
        &script,
        "COPY patients (first_name, last_name, ssn) FROM stdin WITH (FORMAT csv, FORCE_NOT_NULL (ssn));\n\
         LEAKE-4,x,LEAKE-5\n\
         LEAKE-6; SELECT 'LEAKE-7';\n\
         \\.\n\
         COPY patients (first_name, last_name) FROM stdin WHERE first_name = 'LEAKE-8';\n\
         LEAKE-9\tx\n\
         \\.\n\
         SELECT 'after';\n",
    )
    .unwrap();
    let out = Command::new(pg_program("psql"))
        .args(["-X", "-A", "-t", "-d", &url, "-f", script.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pgveil"), "{stderr}");
    assert!(
        !stderr.contains("syntax error"),
        "data run as SQL: {stderr}"
    );
    assert_eq!(stdout.trim(), "after", "{stdout}");
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let mut names: Vec<String> = c
        .query("SELECT first_name FROM patients", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    assert_eq!(names, ["LEAKE-1", "LEAKE-3, quoted"]);
    dump_lacks(&db, "LEAKE");
    assert_server_log_lacks(&["LEAKE"]);
}

/// A FunctionCall message: set_config(name, value, false), text format.
fn set_config_call(name: &str, value: &str) -> pgveil_wire::Frame {
    let mut b = Vec::new();
    b.extend_from_slice(&2078u32.to_be_bytes()); // pg_catalog.set_config
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&3i16.to_be_bytes());
    for a in [name, value, "false"] {
        b.extend_from_slice(&(a.len() as i32).to_be_bytes());
        b.extend_from_slice(a.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    pgveil_wire::Frame::new(b'F', &b)
}

/// Found by an attack session on this change: settings the server applies
/// before pgveil can know (a function calling set_config, a FunctionCall
/// pipelined before the statement), names longer than PostgreSQL keeps,
/// the ON CONFLICT arbiter predicate, EXCLUDE constraints, VALUES columns
/// used twice, and statements prepared inside dynamic SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_found_in_review_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database_for_raw("fc_review");
    cluster()
        .psql(
            &db,
            "CREATE FUNCTION f_off() RETURNS text LANGUAGE sql AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$;
             CREATE FUNCTION f_gbk() RETURNS text LANGUAGE sql AS $$ SELECT set_config('client_encoding', 'GBK', false) $$;
             GRANT EXECUTE ON FUNCTION f_off(), f_gbk() TO cleartext_user;",
        )
        .unwrap();
    let proxy = clinic_proxy(dir.path()).await;
    let payload_scs = "WITH a AS (SELECT '\\', '), b AS (INSERT INTO patients (first_name, last_name) VALUES ($$LEAKF-1$$, $$x$$) RETURNING 1) SELECT ') SELECT 1 -- '";
    let payload_gbk = "WITH a AS (SELECT E'中\\'), b AS (INSERT INTO patients (first_name, last_name) VALUES ($$LEAKF-2$$, $$x$$) RETURNING 1) SELECT ') SELECT 1 -- '";
    let mut r = RawClient::connect(proxy.port(), &db).await;
    // A function flips the setting, pipelined with the payload.
    r.send(&[
        pgveil_wire::frontend::query(b"SELECT f_off()"),
        pgveil_wire::frontend::query(payload_scs.as_bytes()),
    ])
    .await;
    r.until_ready().await;
    let m = r.until_ready().await;
    assert!(
        m.iter().any(|x| x.sqlstate().as_deref() == Some("0A000")),
        "{:?}",
        m.iter().map(RawMessage::message).collect::<Vec<_>>()
    );
    // The same with a FunctionCall message.
    let mut r = RawClient::connect(proxy.port(), &db).await;
    r.send(&[
        set_config_call("standard_conforming_strings", "off"),
        pgveil_wire::frontend::query(payload_scs.as_bytes()),
    ])
    .await;
    r.until_ready().await;
    let m = r.until_ready().await;
    assert!(m.iter().any(|x| x.sqlstate().as_deref() == Some("0A000")));
    // GBK through a function.
    let mut r = RawClient::connect(proxy.port(), &db).await;
    r.send(&[
        pgveil_wire::frontend::query(b"SELECT f_gbk()"),
        pgveil_wire::frontend::query(payload_gbk.as_bytes()),
    ])
    .await;
    r.until_ready().await;
    let m = r.until_ready().await;
    assert!(m.iter().any(|x| x.sqlstate().as_deref() == Some("0A000")));

    let mut r = RawClient::connect(proxy.port(), &db).await;
    let error = |m: &[RawMessage], code: &str| {
        let e = m.iter().find(|x| x.tag == b'E').expect("an error");
        assert_eq!(e.sqlstate().as_deref(), Some(code), "{}", e.message());
        assert!(!e.message().contains("LEAKF"));
    };
    // Names longer than 63 bytes are one name with their 63-byte prefix.
    let long = "q".repeat(70);
    let m = r
        .query(&format!(
            "PREPARE {long} AS INSERT INTO patients (first_name, last_name) VALUES ($1, $2)"
        ))
        .await;
    assert!(m.iter().all(|x| x.tag != b'E'));
    let m = r
        .query(&format!("EXECUTE {}('LEAKF-3a', 'LEAKF-3b')", &long[..63]))
        .await;
    assert!(m.iter().all(|x| x.tag != b'E'), "encrypted and run");
    r.send(&[
        raw::parse(
            &"p".repeat(70),
            "INSERT INTO patients (first_name, last_name) VALUES ($1, 'x')",
        ),
        raw::bind("", &"p".repeat(63), &[Some("LEAKF-4")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    assert!(r.until_ready().await.iter().all(|x| x.tag != b'E'));
    // ON CONFLICT arbiter predicates and EXCLUDE constraints.
    error(
        &r.query("INSERT INTO patients (first_name, last_name) VALUES ('a', 'b') ON CONFLICT (ssn) WHERE first_name = 'LEAKF-5' DO NOTHING")
            .await,
        "0A000",
    );
    let c = connect_tls(&proxy.pg_config(&db)).await;
    refused(
        &c,
        "ALTER TABLE patients ADD CONSTRAINT c EXCLUDE USING btree (ssn WITH =) WHERE (ssn <> 'LEAKF-6')",
        "0A000",
    )
    .await;
    // A VALUES column written to a protected column and compared elsewhere.
    refused(
        &c,
        "INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) SELECT a, b, c, d FROM (VALUES (1, 'LEAKF-7', '2024-01-01'::date, 'p')) v(a, b, c, d) WHERE b = 'LEAKF-7'",
        "0A000",
    )
    .await;
    // A statement prepared inside dynamic SQL: pgveil never saw it. (In a
    // session that holds protected prepared statements the DO block itself
    // is refused: pgveil cannot parse it and it names PREPARE.)
    let m = r
        .query("DO $$ BEGIN EXECUTE 'PREPARE dq AS INSERT INTO pati' || 'ents (first_name, last_name) VALUES ($1, $2)'; END $$")
        .await;
    error(&m, "0A000");
    // A schema renamed through pgveil: its protected table under another
    // name is refused, not taken for an unprotected table.
    c.batch_execute("ALTER SCHEMA public RENAME TO pub3")
        .await
        .unwrap();
    refused(
        &c,
        "INSERT INTO pub3.patients (first_name, last_name) VALUES ('LEAKF-10', 'x')",
        "0A000",
    )
    .await;
    c.batch_execute("ALTER SCHEMA pub3 RENAME TO public")
        .await
        .unwrap();
    // Escapes spelling a protected table in a DO body.
    refused(
        &c,
        "DO E'BEGIN INSERT INTO p\\x61tients (first_name, last_name) VALUES (''LEAKF-11'', ''x''); END'",
        "0A000",
    )
    .await;
    let mut r = RawClient::connect(proxy.port(), &db).await;
    let m = r
        .query("DO $$ BEGIN EXECUTE 'PREPARE dq AS INSERT INTO pati' || 'ents (first_name, last_name) VALUES ($1, $2)'; END $$")
        .await;
    assert!(m.iter().all(|x| x.tag != b'E'));
    error(
        &r.query("EXECUTE dq('LEAKF-8a', 'LEAKF-8b')").await,
        "26000",
    );
    r.send(&[
        raw::bind("", "dq", &[Some("LEAKF-9")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    error(&r.until_ready().await, "26000");
    assert_column_ciphertext(&db, "patients", "first_name");
    assert_column_ciphertext(&db, "patients", "last_name");
    dump_lacks(&db, "LEAKF");
    assert_server_log_lacks(&["LEAKF"]);
}

/// Issue 17: ORM and driver bulk-insert idioms store ciphertext for every
/// element and read back equal: Django ≥ 5.2 `bulk_create`
/// (`SELECT * FROM UNNEST((%s)::text[], …)`, server- and client-side
/// binding), hand-written `unnest` with aliases, `SELECT unnest($1)`,
/// `SELECT * FROM (VALUES …) v`; NULL elements stay NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_insert_idioms_encrypt_every_element() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_bulk");
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    // Extended protocol, binary text[] parameters (server-side binding).
    let first: Vec<String> = (0..500).map(|i| format!("LEAKfirst{i}")).collect();
    let last: Vec<String> = (0..500).map(|i| format!("LEAKlast{i}")).collect();
    let ssn: Vec<Option<String>> = (0..500)
        .map(|i| (i % 7 != 0).then(|| format!("LEAK-{i:06}")))
        .collect();
    let n = c
        .execute(
            "INSERT INTO patients (first_name, last_name, ssn) SELECT * FROM UNNEST(($1)::text[], ($2)::text[], ($3)::text[])",
            &[&first, &last, &ssn],
        )
        .await
        .unwrap();
    assert_eq!(n, 500);
    // The ssn column is deterministic: the elements can be looked up.
    let row = c
        .query_one(
            "SELECT first_name, last_name FROM patients WHERE ssn = $1",
            &[&"LEAK-000001"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "LEAKfirst1");
    assert_eq!(row.get::<_, String>(1), "LEAKlast1");
    let nulls: i64 = c
        .query_one("SELECT count(*) FROM patients WHERE ssn IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 72);
    // Hand-written forms.
    c.execute(
        "INSERT INTO patients (first_name, last_name) SELECT a, b FROM unnest($1::text[], $2::text[]) AS t(a, b)",
        &[&vec!["LEAKalias"], &vec!["LEAKaliaslast"]],
    )
    .await
    .unwrap();
    // Simple protocol: literals as a client-side-binding driver writes them.
    c.batch_execute(
        "INSERT INTO patients (first_name, last_name, date_of_birth) SELECT * FROM UNNEST(('{LEAKsimple,\"LEAK quoted\"}')::text[], ('{LEAKs1,LEAKs2}')::text[], ('{1990-01-02,NULL}')::date[]);
         INSERT INTO patients (first_name, last_name) SELECT * FROM (VALUES ('LEAKvalues', 'LEAKvalueslast')) v;",
    )
    .await
    .unwrap();
    let rows = try_rows(
        &c,
        "SELECT first_name, last_name, date_of_birth FROM patients WHERE first_name IS NOT NULL AND ssn IS NULL ORDER BY id DESC LIMIT 4",
    )
    .await
    .unwrap();
    let mut got: Vec<_> = rows.into_iter().collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            vec![Some("LEAK quoted".into()), Some("LEAKs2".into()), None],
            vec![Some("LEAKalias".into()), Some("LEAKaliaslast".into()), None],
            vec![
                Some("LEAKsimple".into()),
                Some("LEAKs1".into()),
                Some("1990-01-02".into())
            ],
            vec![
                Some("LEAKvalues".into()),
                Some("LEAKvalueslast".into()),
                None
            ],
        ]
    );
    // Filtered or converted sources are refused, not forwarded.
    refused(
        &c,
        "INSERT INTO patients (first_name, last_name) SELECT * FROM unnest('{LEAKx}'::text[], '{LEAKy}'::text[]) u(a, b) WHERE a <> ''",
        "0A000",
    )
    .await;
    for column in ["first_name", "last_name", "ssn", "date_of_birth"] {
        assert_column_ciphertext(&db, "patients", column);
    }
    dump_lacks(&db, "LEAK");
    assert_server_log_lacks(&[
        "LEAKfirst",
        "LEAK-0000",
        "LEAKsimple",
        "LEAK quoted",
        "LEAKvalues",
        "LEAKalias",
    ]);
}

/// Third attack review, against the server: a protected PREPARE followed in
/// the same string by a statement pgveil cannot parse that runs it; a time
/// zone changed earlier in the same string; parameters declared with types
/// whose conversion pgveil cannot reproduce; `bytea_output = 'escape'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_string_prepare_timezone_declared_types_and_bytea_escape() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_third");
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    refused(
        &c,
        "PREPARE e5 AS WITH x AS (INSERT INTO patients (first_name, last_name) VALUES ($1, $2) RETURNING id) SELECT id FROM x; CREATE TABLE t415 AS EXECUTE e5('LEAK415a', 'LEAK415b')",
        "0A000",
    )
    .await;
    // A zone set earlier in the string: no offset-less timestamptz is
    // read in a zone pgveil cannot be sure of.
    let r = try_rows(
        &c,
        "SET timezone = 'Asia/Kolkata'; INSERT INTO lab_results (lab, reported_at) VALUES ('TZ6', '2020-01-01 10:00')",
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    c.batch_execute(
        "SET timezone = 'UTC'; INSERT INTO lab_results (lab, reported_at) VALUES ('TZ7', '2020-01-01 10:00+05:30')",
    )
    .await
    .unwrap();
    let rows = try_rows(&c, "SELECT reported_at FROM lab_results WHERE lab = 'TZ7'")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Some("2020-01-01 04:30:00+00".to_owned())]]);
    // Declared parameter types: bpchar (drops trailing spaces on its way
    // to text) and record are refused; bool becomes 'true' as in PostgreSQL.
    use tokio_postgres::types::Type;
    for ty in [Type::BPCHAR, Type::RECORD] {
        let e = c
            .prepare_typed(
                "INSERT INTO patients (first_name, last_name) VALUES ($1, 'x')",
                std::slice::from_ref(&ty),
            )
            .await
            .expect_err("declared type refused");
        assert_eq!(e.as_db_error().unwrap().code().code(), "42804", "{ty}");
    }
    let st = c
        .prepare_typed(
            "INSERT INTO patients (first_name, last_name) VALUES ($1, 'boolean') RETURNING first_name",
            &[Type::BOOL],
        )
        .await
        .unwrap();
    let row = c.query_one(&st, &[&true]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "true");
    // bytea_output = 'escape' reads the bytea-stored columns.
    c.batch_execute(
        "INSERT INTO patients (first_name, last_name, ssn, medical_history) VALUES ('e', 'scape', 'esc-1', 'history with \\ and é')",
    )
    .await
    .unwrap();
    for setting in ["escape", "hex"] {
        let rows = try_rows(
            &c,
            &format!("SET bytea_output = '{setting}'; SELECT medical_history FROM patients WHERE ssn = 'esc-1'"),
        )
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![vec![Some("history with \\ and é".to_owned())]],
            "{setting}"
        );
    }
    dump_lacks(&db, "LEAK415");
    assert_server_log_lacks(&["LEAK415"]);
}

/// Fourth attack review, against the server: DDL made directly on
/// PostgreSQL is seen by sessions that start afterwards (beyond the
/// catalog's reuse age); a column the table lacks is refused before its
/// value is sent; field assignments to protected columns and subqueries in
/// clauses the walk does not enter never reach the server log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_ddl_unknown_columns_and_unwalked_clauses() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_fourth");
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.batch_execute("CREATE TABLE k307 (x text)").await.unwrap();
    for sql in [
        "INSERT INTO patients (first_name.x, last_name) VALUES ('LEAKk4', 'b')",
        "UPDATE patients SET first_name.x = 'LEAKk110' WHERE id = -1",
        "CREATE INDEX k601 ON k307 (x) WHERE length(x) = (SELECT count(*) FROM patients WHERE ssn = 'LEAKk601')",
        "CREATE TABLE k602 (c bigint DEFAULT (SELECT count(*) FROM patients WHERE ssn = 'LEAKk602'))",
    ] {
        refused(&c, sql, "0A000").await;
    }
    // A TABLESAMPLE quantity is walked: its comparison is encrypted.
    let rows = try_rows(
        &c,
        "SELECT 1 FROM k307 TABLESAMPLE BERNOULLI ((SELECT count(*) FROM patients WHERE ssn = 'LEAKts1'))",
    )
    .await
    .unwrap();
    assert!(rows.is_empty());
    cluster()
        .psql(&db, "ALTER TABLE patients RENAME COLUMN email TO email2")
        .unwrap();
    tokio::time::sleep(pgveil_rewrite::CATALOG_MAX_AGE + std::time::Duration::from_millis(300))
        .await;
    let fresh = connect_tls(&proxy.pg_config(&db)).await;
    let msg = refused(
        &fresh,
        "INSERT INTO patients (first_name, last_name, email2) VALUES ('a', 'b', 'LEAKrn1')",
        "0A000",
    )
    .await;
    assert!(msg.contains("email"), "{msg}");
    refused(
        &fresh,
        "INSERT INTO patients (first_name, last_name, nonexistent) VALUES ('a', 'b', 'LEAKnx')",
        "42703",
    )
    .await;
    assert_server_log_lacks(&[
        "LEAKrn1", "LEAKnx", "LEAKk4", "LEAKk110", "LEAKk601", "LEAKk602", "LEAKts1",
    ]);
}

/// Fifth attack review, against the server: a CTE named like a protected
/// table never hides the real target of a write; column alias lists on
/// protected tables and guard drops are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cte_shadowing_alias_lists_and_guard_drops() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fc_fifth");
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.batch_execute(
        "WITH patients AS (SELECT 1) INSERT INTO patients (first_name, last_name, ssn) VALUES ('LEAKcte1', 'x', 'LEAK-cte-1')",
    )
    .await
    .unwrap();
    let n: i64 = c
        .query_one(
            "WITH patients AS (SELECT 1 AS id) SELECT count(*) FROM public.patients WHERE ssn = $1",
            &[&"LEAK-cte-1"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    c.batch_execute("WITH patients AS (SELECT 1 AS id) UPDATE patients SET first_name = 'LEAKcte2' WHERE ssn = 'LEAK-cte-1'")
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM patients AS p(pid, fname, lname, s) WHERE s = 'LEAKalias'",
        "ALTER TABLE patients DROP CONSTRAINT pgveil_guard_phone",
    ] {
        refused(&c, sql, "0A000").await;
    }
    for column in ["first_name", "ssn"] {
        assert_column_ciphertext(&db, "patients", column);
    }
    assert_server_log_lacks(&["LEAKcte", "LEAK-cte", "LEAKalias"]);
}

//! Issue 5 against a real PostgreSQL: equality look-ups across a key
//! rotation, the fail-closed catalogue (every refusal in both protocols,
//! with the session usable afterwards), multi-statement strings, and a
//! randomized fuzz of generated statements that must never put a canary
//! into the database in plaintext.

use pgveil_tests::*;
use tokio_postgres::SimpleQueryMessage;

fn firsts(rows: Vec<Vec<Option<String>>>) -> Vec<String> {
    let mut v: Vec<String> = rows
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_else(|| "NULL".into()))
        .collect();
    v.sort();
    v
}

/// After `keys rotate` and a reload, rows written under the previous key
/// version are still found by every equality form, in both protocols,
/// while new rows are written under the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_find_rows_of_every_live_key_version_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("rotation");
    let proxy = clinic_proxy(dir.path()).await;
    let c1 = connect_tls(&proxy.pg_config(&db)).await;
    c1.batch_execute(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('Old', 'One', '111-11-1111'), ('Old', 'Two', '222-22-2222');
         INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) VALUES (1, '111-11-1111', '2024-01-01', 'dr a')",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    pgveil::keys::rotate(&proxy.config, "public.patients.ssn", &mut out).unwrap();
    proxy.state.reload(proxy.config.clone()).unwrap();
    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.execute(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, $2, $3)",
        &[&"New", &"Three", &"333-33-3333"],
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) VALUES (3, '333-33-3333', '2024-02-01', 'dr b'), (1, '111-11-1111', '2024-03-01', 'dr c')")
        .await
        .unwrap();
    // Two versions are stored side by side.
    let versions = cluster()
        .psql(
            &db,
            "SELECT count(DISTINCT substr(decode(substr(ssn, 6), 'base64'), 1, 5)) FROM patients",
        )
        .unwrap();
    assert_eq!(versions.trim(), "2", "ciphertext headers of two versions");

    // Literals (simple protocol).
    for (sql, want) in [
        (
            "SELECT last_name FROM patients WHERE ssn = '111-11-1111'",
            vec!["One"],
        ),
        (
            "SELECT last_name FROM patients WHERE ssn = '333-33-3333'",
            vec!["Three"],
        ),
        (
            "SELECT last_name FROM patients WHERE ssn IN ('111-11-1111', '333-33-3333')",
            vec!["One", "Three"],
        ),
        (
            "SELECT last_name FROM patients WHERE ssn <> '111-11-1111'",
            vec!["Three", "Two"],
        ),
        (
            "SELECT last_name FROM patients WHERE ssn NOT IN ('222-22-2222')",
            vec!["One", "Three"],
        ),
        (
            "SELECT last_name FROM patients WHERE ssn = ANY(ARRAY['222-22-2222', '333-33-3333'])",
            vec!["Three", "Two"],
        ),
        (
            "SELECT provider FROM visits WHERE patient_ssn = '111-11-1111'",
            vec!["dr a", "dr c"],
        ),
    ] {
        assert_eq!(firsts(simple_rows(&c, sql).await), want, "{sql}");
    }
    // Parameters (extended protocol), scalar and array.
    for (sql, ssn, want) in [
        (
            "SELECT last_name FROM patients WHERE ssn = $1",
            "222-22-2222",
            vec!["Two"],
        ),
        (
            "SELECT last_name FROM patients WHERE ssn = $1::text",
            "111-11-1111",
            vec!["One"],
        ),
        (
            "SELECT last_name FROM patients WHERE ssn <> $1",
            "333-33-3333",
            vec!["One", "Two"],
        ),
    ] {
        let got: Vec<String> = {
            let mut v: Vec<String> = c
                .query(sql, &[&ssn])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| r.get(0))
                .collect();
            v.sort();
            v
        };
        assert_eq!(got, want, "{sql}");
    }
    // IN ($1, $2) gets one extra parameter per older version next to each.
    for sql in [
        "SELECT last_name FROM patients WHERE ssn IN ($1, $2)",
        "SELECT last_name FROM patients WHERE ssn IN ($1::text, $2) AND last_name IS NOT NULL",
        "SELECT last_name FROM patients WHERE ssn = ANY(ARRAY[$1, $2])",
    ] {
        let stmt = c
            .prepare(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(
            stmt.params().len(),
            2,
            "{sql}: the client sees its own parameters"
        );
        let mut got: Vec<String> = c
            .query(&stmt, &[&"111-11-1111", &"333-33-3333"])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        got.sort();
        assert_eq!(got, ["One", "Three"], "{sql}");
    }
    let arr = vec!["111-11-1111", "333-33-3333", "999-99-9999"];
    let mut got: Vec<String> = c
        .query(
            "SELECT last_name FROM patients WHERE ssn = ANY($1)",
            &[&arr],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    got.sort();
    assert_eq!(got, ["One", "Three"]);
    // Joins and unique constraints compare stored ciphertexts: across
    // versions they see different values. A v1 SSN inserted again under v2
    // is not caught by UNIQUE...
    let join = "SELECT count(*) FROM patients p JOIN visits v ON v.patient_ssn = p.ssn";
    assert_eq!(
        simple_rows(&c, join).await,
        vec![vec![Some("2".to_owned())]],
        "v1=v1 and v2=v2 only"
    );
    c.batch_execute(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('Dup', 'Two', '222-22-2222')",
    )
    .await
    .unwrap();
    // ... so re-encryption reports it (23505) and leaves that row alone.
    let url = cluster().url(&db);
    let mut out = Vec::new();
    let failed = pgveil::reencrypt::run(&proxy.config, "public.patients.ssn", &url, 2, &mut out)
        .await
        .unwrap();
    let report = String::from_utf8(out).unwrap();
    assert_eq!(failed, 1, "{report}");
    assert!(
        report.contains(
            "public.patients.ssn: 1 value(s) re-encrypted to v2, 0 changed concurrently, 1 failed"
        ),
        "{report}"
    );
    assert!(
        report.contains("public.visits.patient_ssn: 1 value(s) re-encrypted to v2"),
        "{report}"
    );
    assert!(!report.contains("222-22"), "{report}");
    // Remove the duplicate (found by SSN, deleted by id) and finish.
    let dup: i64 = c
        .query_one("SELECT id FROM patients WHERE ssn = $1 AND last_name IS NOT NULL ORDER BY id DESC LIMIT 1", &[&"222-22-2222"])
        .await
        .unwrap()
        .get(0);
    c.execute("DELETE FROM patients WHERE id = $1", &[&dup])
        .await
        .unwrap();
    let mut out = Vec::new();
    let failed = pgveil::reencrypt::run(&proxy.config, "public.patients.ssn", &url, 1000, &mut out)
        .await
        .unwrap();
    assert_eq!(failed, 0, "{}", String::from_utf8_lossy(&out));
    let versions = cluster()
        .psql(
            &db,
            "SELECT count(DISTINCT substr(decode(substr(ssn, 6), 'base64'), 1, 5)) FROM patients",
        )
        .unwrap();
    assert_eq!(versions.trim(), "1", "one version left");
    // Now joins see all equal values, and look-ups still find every row.
    assert_eq!(
        simple_rows(&c, join).await,
        vec![vec![Some("3".to_owned())]]
    );
    assert_eq!(
        firsts(simple_rows(&c, "SELECT last_name FROM patients WHERE ssn IN ('111-11-1111', '222-22-2222', '333-33-3333')").await),
        vec!["One", "Three", "Two"]
    );
    assert_only_ciphertext(&db);
}

/// One example per catalogue row of the README; each is refused with its
/// SQLSTATE and a message naming the column, in the simple and the
/// extended protocol, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_catalogue_in_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("catalogue");
    cluster()
        .psql(
            &db,
            "CREATE TABLE notes_public (id int, body text); INSERT INTO notes_public VALUES (1, 'plain');
             CREATE VIEW patients_v AS SELECT id, first_name, ssn FROM patients",
        )
        .unwrap();
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let cases: &[(&str, &str, &str, &str)] = &[
        // functions, operators, casts, ||
        ("SELECT upper(first_name) FROM patients", "0A000", "public.patients.first_name", "function upper() cannot be applied"),
        ("SELECT ssn || '-x' FROM patients", "0A000", "public.patients.ssn", "string concatenation (||) cannot be applied"),
        ("SELECT ssn::int8 FROM patients", "0A000", "public.patients.ssn", "a cast cannot be applied"),
        ("SELECT id FROM patients WHERE length(ssn) = 11", "0A000", "public.patients.ssn", "function length() cannot be applied"),
        // pattern matching, ranges, ordering, min/max
        ("SELECT id FROM patients WHERE ssn LIKE 'CANARY%'", "0A000", "public.patients.ssn", "LIKE / ILIKE / SIMILAR TO cannot be evaluated on ciphertext"),
        ("SELECT id FROM patients WHERE last_name ILIKE 'CANARY%'", "0A000", "public.patients.last_name", "LIKE / ILIKE / SIMILAR TO cannot be evaluated on ciphertext"),
        ("SELECT id FROM patients WHERE ssn ~ 'CANARY'", "0A000", "public.patients.ssn", "pattern matching cannot be evaluated on ciphertext"),
        ("SELECT id FROM patients WHERE ssn > 'CANARY'", "0A000", "public.patients.ssn", "a range comparison (<, >, <=, >=) cannot be evaluated"),
        ("SELECT id FROM patients WHERE ssn BETWEEN 'A' AND 'CANARY'", "0A000", "public.patients.ssn", "BETWEEN (a range comparison) cannot be evaluated"),
        ("SELECT id FROM patients ORDER BY ssn", "0A000", "public.patients.ssn", "ORDER BY would sort ciphertext"),
        ("SELECT id FROM patients ORDER BY last_name", "0A000", "public.patients.last_name", "ORDER BY would sort ciphertext"),
        ("SELECT max(ssn) FROM patients", "0A000", "public.patients.ssn", "max() would compare ciphertext"),
        ("SELECT min(date_of_birth) FROM patients", "0A000", "public.patients.date_of_birth", "min() would compare ciphertext"),
        // equality on a randomized column
        ("SELECT id FROM patients WHERE last_name = 'CANARY'", "0A000", "public.patients.last_name", "equality comparison is not possible on randomized"),
        ("SELECT id FROM patients WHERE last_name IN ('CANARY')", "0A000", "public.patients.last_name", "not possible on randomized"),
        // writes whose source cannot be proven to be same-key ciphertext
        ("INSERT INTO patients (first_name, last_name) SELECT body, body FROM notes_public", "0A000", "public.patients.first_name", "the source must be a column encrypted with the same key"),
        ("UPDATE patients SET last_name = n.body FROM notes_public n WHERE n.id = patients.id", "0A000", "public.patients.last_name", "a plaintext column's value cannot be assigned"),
        ("WITH x AS (SELECT 'CANARY' AS v) INSERT INTO patients (first_name, last_name) SELECT v, v FROM x", "0A000", "public.patients.first_name", "the source must be a column encrypted with the same key"),
        ("INSERT INTO patients (first_name, last_name) SELECT ssn, ssn FROM patients", "0A000", "public.patients.first_name", "the source must be a column encrypted with the same key"),
        ("UPDATE patients SET ssn = (SELECT body FROM notes_public LIMIT 1)", "0A000", "public.patients.ssn", "an expression pgveil cannot encrypt"),
        // views, MERGE, DO blocks, functions, unparsable text
        ("INSERT INTO patients_v (first_name, ssn) VALUES ('CANARY', 'CANARY-1')", "0A000", "patients_v", "is a view over protected tables"),
        ("SELECT ssn FROM patients_v", "0A000", "patients_v", "is a view over protected tables"),
        ("MERGE INTO patients p USING notes_public n ON p.id = n.id WHEN MATCHED THEN UPDATE SET last_name = 'CANARY'", "0A000", "public.patients", "MERGE is not supported on protected tables"),
        ("DO $$ BEGIN INSERT INTO patients (first_name, last_name) VALUES ('CANARY', 'CANARY'); END $$", "0A000", "public.patients", "it refuses rather than risk sending plaintext"),
        ("CREATE FUNCTION leak() RETURNS void LANGUAGE sql AS $$ INSERT INTO patients (first_name, last_name) VALUES ('CANARY', 'x') $$", "0A000", "public.patients", "is not supported on protected tables"),
        ("INSERT INTO patients (ssn) VALUES ('CANARY' ;; garbage(", "0A000", "public.patients", "cannot parse a statement that may reference protected tables"),
        // protected values without a table OID
        ("SELECT ssn FROM patients UNION SELECT 'CANARY'", "0A000", "public.patients.ssn", "loses the table identity"),
        ("SELECT s FROM (SELECT ssn AS s FROM patients) q", "0A000", "public.patients.ssn", "loses the table identity"),
        ("WITH q AS (SELECT last_name FROM patients) SELECT * FROM q", "0A000", "public.patients.last_name", "loses the table identity"),
        // COPY: unknown formats, files
        ("COPY patients TO STDOUT (FORMAT native)", "0A000", "public.patients", "with an unknown FORMAT is not supported"),
        ("COPY patients (ssn) FROM '/tmp/CANARY.csv'", "0A000", "public.patients", "bypasses pgveil"),
    ];
    let check = |sql: &str, e: &tokio_postgres::Error, code: &str, needle: &str, reason: &str| {
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: not a server error: {e}"));
        assert_eq!(db.code().code(), code, "{sql}: {}", db.message());
        assert!(
            db.message().starts_with("pgveil: ") && db.message().contains(needle),
            "{sql}: message does not name {needle}: {}",
            db.message()
        );
        assert!(
            db.message().contains(reason),
            "{sql}: message does not say {reason:?}: {}",
            db.message()
        );
        assert!(
            !db.message().contains("CANARY"),
            "{sql}: value in message: {}",
            db.message()
        );
    };
    for (sql, code, needle, reason) in cases {
        let e = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("not refused (simple): {sql}"));
        check(sql, &e, code, needle, reason);
        assert_eq!(simple_rows(&c, "SELECT 1").await.len(), 1, "after {sql}");
        let e = c
            .query(*sql, &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("not refused (extended): {sql}"));
        check(sql, &e, code, needle, reason);
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "after {sql}");
    }
    // Nothing got through.
    let n = cluster()
        .psql(&db, "SELECT count(*) FROM patients")
        .unwrap();
    assert_eq!(n.trim(), "0");
    assert!(
        cluster()
            .psql(&db, "SELECT count(*) FROM pg_proc WHERE proname = 'leak'")
            .unwrap()
            .trim()
            == "0"
    );
}

/// A simple-query string mixing protected and unprotected statements is
/// rewritten statement by statement; results of each are decrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_strings_are_rewritten_statement_by_statement() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("multi");
    cluster()
        .psql(&db, "CREATE TABLE notes_public (id int, body text)")
        .unwrap();
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let msgs = c
        .simple_query(
            "INSERT INTO notes_public VALUES (1, 'plain'); \
             INSERT INTO patients (first_name, last_name, ssn) VALUES ('CANARY-A', 'B', '123-45-6789'); \
             SELECT body FROM notes_public; \
             SELECT first_name, ssn FROM patients WHERE ssn = '123-45-6789'; \
             UPDATE patients SET last_name = 'CANARY-C' WHERE ssn = '123-45-6789' RETURNING last_name",
        )
        .await
        .unwrap();
    let got: Vec<Vec<String>> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            vec!["plain".to_owned()],
            vec!["CANARY-A".to_owned(), "123-45-6789".to_owned()],
            vec!["CANARY-C".to_owned()],
        ]
    );
    assert_only_ciphertext(&db);
}

/// Every equality form, simple and extended protocol, through pgveil on the
/// ciphertext schema vs directly on a plaintext copy: identical rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssn_lookups_in_every_form_match_a_plaintext_database() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("lookup_forms");
    let plain = plain_clinic_database("lookup_forms_plain");
    let proxy = clinic_proxy(dir.path()).await;
    let via = connect_tls(&proxy.pg_config(&enc)).await;
    let direct = connect_plain(&direct_config(&plain)).await;
    let setup = "INSERT INTO patients (first_name, last_name, ssn) VALUES \
        ('A', 'One', '111-11-1111'), ('B', 'Two', '222-22-2222'), ('C', 'Three', '333-33-3333'), \
        ('D', 'Four', NULL), ('E', 'Five', '555-55-5555');
        INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) VALUES \
        (1, '111-11-1111', '2024-01-01', 'dr a'), (1, '111-11-1111', '2024-02-01', 'dr b'), \
        (3, '333-33-3333', '2024-03-01', 'dr c');
        INSERT INTO patients (first_name, last_name, ssn) VALUES ('F', 'Six', '555-55-5555') \
        ON CONFLICT (ssn) DO UPDATE SET last_name = EXCLUDED.last_name";
    via.batch_execute(setup).await.unwrap();
    direct.batch_execute(setup).await.unwrap();
    let simple = [
        "SELECT id, last_name FROM patients WHERE ssn = '222-22-2222'",
        "SELECT id, last_name FROM patients WHERE ssn <> '222-22-2222' ORDER BY id",
        "SELECT id FROM patients WHERE ssn IN ('111-11-1111', '333-33-3333', '999') ORDER BY id",
        "SELECT id FROM patients WHERE ssn NOT IN ('111-11-1111') ORDER BY id",
        "SELECT id FROM patients WHERE ssn = ANY(ARRAY['111-11-1111', '555-55-5555']) ORDER BY id",
        "SELECT id FROM patients WHERE ssn IS NULL",
        "SELECT id FROM patients WHERE ssn IS NOT NULL ORDER BY id",
        "SELECT p.id, v.provider FROM patients p JOIN visits v ON v.patient_ssn = p.ssn ORDER BY v.provider",
        "SELECT count(*) FROM patients p WHERE EXISTS (SELECT 1 FROM visits v WHERE v.patient_ssn = p.ssn)",
        "SELECT patient_ssn, count(*) FROM visits GROUP BY patient_ssn ORDER BY 2",
        "SELECT DISTINCT ssn FROM patients",
        "SELECT count(DISTINCT ssn), count(ssn), count(first_name) FROM patients",
        "SELECT id, last_name, ssn FROM patients WHERE ssn = '555-55-5555'",
    ];
    for sql in simple {
        let (mut a, mut b) = (
            simple_rows(&via, sql).await,
            simple_rows(&direct, sql).await,
        );
        a.sort();
        b.sort();
        assert!(!b.is_empty(), "{sql}");
        assert_eq!(a, b, "{sql}");
    }
    type P<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
    let ssn2 = "222-22-2222";
    let list = vec!["111-11-1111", "555-55-5555", "nobody"];
    let extended: Vec<(&str, P)> = vec![
        ("SELECT id, last_name FROM patients WHERE ssn = $1", vec![&ssn2]),
        ("SELECT id FROM patients WHERE ssn <> $1 ORDER BY id", vec![&ssn2]),
        ("SELECT id FROM patients WHERE ssn IN ($1, $2) ORDER BY id", vec![&ssn2, &"333-33-3333"]),
        ("SELECT id FROM patients WHERE ssn = ANY($1) ORDER BY id", vec![&list]),
        ("SELECT id FROM patients WHERE ssn = $1::varchar", vec![&ssn2]),
        ("SELECT p.id, v.provider FROM patients p JOIN visits v ON v.patient_ssn = p.ssn WHERE p.ssn = $1 ORDER BY 2", vec![&"111-11-1111"]),
        ("SELECT count(*) FROM visits WHERE patient_ssn = $1", vec![&"111-11-1111"]),
    ];
    for (sql, params) in &extended {
        let a: Vec<String> = via
            .query(*sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        let b: Vec<String> = direct
            .query(*sql, params)
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        assert!(!b.is_empty(), "{sql}");
        assert_eq!(a.len(), b.len(), "{sql}");
        let via_rows = via.query(*sql, params).await.unwrap();
        let direct_rows = direct.query(*sql, params).await.unwrap();
        for (x, y) in via_rows.iter().zip(&direct_rows) {
            for i in 0..x.len() {
                assert_eq!(
                    x.get::<_, RawBinary>(i),
                    y.get::<_, RawBinary>(i),
                    "{sql} column {i}"
                );
            }
        }
    }
    assert_only_ciphertext(&enc);
}

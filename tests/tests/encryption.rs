//! Transparent column encryption on the wire, against a real PostgreSQL:
//! what clients write through pgveil is stored as ciphertext and read back
//! exactly as the same workload reads on a plaintext copy of the schema
//! (differential), in the simple and the extended protocol, text and binary.

use pgveil_tests::*;

/// Protected columns of `lab_results`, one per supported logical type.
const LAB_COLUMNS: &str = "lab, sample_id, test_code, result_value, result_float, reference_low, flag, \
     cell_count, abnormal, collected_on, collected_time, collected_at, reported_at, panel, details, raw_report";

/// Rows as SQL literals (text input), covering every type, NULLs, empty
/// values, extremes, Unicode and canaries.
const LAB_ROWS: &[&str] = &[
    "'lab-a', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'CANARY-CBC', 12.34565, 0.1, -2.75, -32768, \
     9223372036854775807, true, '1990-01-02', '08:30:00.123456', '2024-02-29 13:45:00.5', \
     '2024-02-29 13:45:00+05:30', '{\"b\": 1,  \"a\": [1,2]}', '{\"b\": {\"y\": 2, \"x\": 1}, \"a\": [true, null]}', \
     '\\x00ff43414e415259'",
    "'lab-null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "'lab-edge', '00000000-0000-0000-0000-000000000000', '', -0.00001, 'Infinity', 1024, 0, \
     -9223372036854775808, 'f', '0001-01-01', '24:00:00', '2000-01-01 00:00:00', \
     '2024-01-01 00:00:00Z', '[]', '{}', '\\x'",
    "'lab-unicode', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'Zoë Ångström 🩺 CANARY', 99999999.9999, -1e-300, \
     3.5, 32767, 42, 'yes', '2099-12-31', '23:59:59.999999', '1999-12-31 23:59:59.999999', \
     '1970-01-01 00:00:00-08', '{\"k\": \"CANARY ü\"}', '[1, \"CANARY\", {\"z\": 0.5}]', '\\xdeadbeef'",
];

fn insert_lab_sql() -> String {
    LAB_ROWS
        .iter()
        .map(|r| format!("INSERT INTO lab_results ({LAB_COLUMNS}) VALUES ({r});"))
        .collect()
}

/// Binary rows of an extended-protocol query.
async fn binary_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<RawBinary>> {
    binary_rows_with(c, sql, &[]).await
}

/// Binary rows of an extended-protocol query with parameters.
async fn binary_rows_with(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<Vec<RawBinary>> {
    c.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, RawBinary>(i)).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_in_text_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("enc_types");
    let plain = plain_clinic_database("plain_types");
    let proxy = clinic_proxy(dir.path()).await;
    let via = connect_tls(&proxy.pg_config(&enc)).await;
    let direct = connect_plain(&direct_config(&plain)).await;

    // Simple protocol, literals in every type.
    via.batch_execute(&insert_lab_sql()).await.unwrap();
    direct.batch_execute(&insert_lab_sql()).await.unwrap();
    let select = format!("SELECT {LAB_COLUMNS} FROM lab_results ORDER BY id");
    let (a, b) = (
        simple_rows(&via, &select).await,
        simple_rows(&direct, &select).await,
    );
    assert_eq!(a.len(), LAB_ROWS.len());
    assert_eq!(a, b, "text results through pgveil differ from plaintext");
    let (a, b) = (
        binary_rows(&via, &select).await,
        binary_rows(&direct, &select).await,
    );
    assert_eq!(a, b, "binary results through pgveil differ from plaintext");

    // Extended protocol, every parameter bound in binary exactly as a
    // binary client encodes it (bytes taken from the plaintext database).
    let params: Vec<Vec<RawBinary>> = b;
    let placeholders: Vec<String> = (1..=16).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO lab_results ({LAB_COLUMNS}) VALUES ({})",
        placeholders.join(", ")
    );
    for row in &params {
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            row.iter().map(|v| v as _).collect();
        via.execute(&insert, &refs).await.unwrap();
        direct.execute(&insert, &refs).await.unwrap();
    }
    let (a, b) = (
        simple_rows(&via, &select).await,
        simple_rows(&direct, &select).await,
    );
    assert_eq!(a.len(), 2 * LAB_ROWS.len());
    assert_eq!(a, b);
    let (a, b) = (
        binary_rows(&via, &select).await,
        binary_rows(&direct, &select).await,
    );
    assert_eq!(a, b);

    // Typed reads through tokio-postgres' own decoders.
    let r = via
        .query_one(
            "SELECT flag, cell_count, abnormal, result_float, raw_report, test_code FROM lab_results WHERE lab = $1 ORDER BY id LIMIT 1",
            &[&"lab-a"],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i16>(0), -32768);
    assert_eq!(r.get::<_, i64>(1), i64::MAX);
    assert!(r.get::<_, bool>(2));
    assert_eq!(r.get::<_, f64>(3), 0.1);
    assert_eq!(r.get::<_, Vec<u8>>(4), b"\x00\xffCANARY");
    assert_eq!(r.get::<_, String>(5), "CANARY-CBC");

    // Values the logical type rejects are refused with PostgreSQL's SQLSTATE
    // and nothing is written; the session goes on.
    for (sql, state) in [
        ("INSERT INTO lab_results (lab, flag) VALUES ('x', 40000)", "22003"),
        ("INSERT INTO lab_results (lab, collected_on) VALUES ('x', '2024-02-30')", "22008"),
        ("INSERT INTO lab_results (lab, test_code) VALUES ('x', 'CANARY-0123456789012345678901234567890')", "22001"),
        ("INSERT INTO lab_results (lab, sample_id) VALUES ('x', 'not-a-uuid')", "22P02"),
    ] {
        let e = via.batch_execute(sql).await.unwrap_err();
        let e = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(e.code().code(), state, "{sql}: {}", e.message());
        assert!(!e.message().contains("CANARY") && !e.message().contains("40000"));
    }
    let n: i64 = via
        .query_one("SELECT count(*) FROM lab_results WHERE lab = 'x'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert_only_ciphertext(&enc);
}

/// The same statements through pgveil (ciphertext schema) and directly on
/// the plaintext schema give the same results.
struct Differential {
    via: tokio_postgres::Client,
    direct: tokio_postgres::Client,
}

impl Differential {
    async fn same(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let a = simple_rows(&self.via, sql).await;
        let b = simple_rows(&self.direct, sql).await;
        assert_eq!(a, b, "results differ for {sql}");
        a
    }

    async fn same_prepared(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<Vec<RawBinary>> {
        let a = binary_rows_with(&self.via, sql, params).await;
        let b = binary_rows_with(&self.direct, sql, params).await;
        assert_eq!(a, b, "results differ for {sql}");
        a
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinic_workload_matches_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("enc_clinic");
    let plain = plain_clinic_database("plain_clinic");
    let proxy = clinic_proxy(dir.path()).await;
    let d = Differential {
        via: connect_tls(&proxy.pg_config(&enc)).await,
        direct: connect_plain(&direct_config(&plain)).await,
    };
    let big = "CANARY-history ".repeat(70_000); // ~1 MB
    let patients =
        "id, first_name, last_name, ssn, date_of_birth, phone, email, address, medical_history";
    for c in [&d.via, &d.direct] {
        c.batch_execute(
            "INSERT INTO patients (first_name, last_name, ssn, date_of_birth, phone, email) VALUES \
               ('Zoë', 'CANARY-Ångström 🩺', '123-45-6789', '1990-01-02', '', NULL), \
               ('O''Brien', 'CANARY-Back\\slash', '987-65-4321', NULL, '+1 555', 'ob@example.org');
             INSERT INTO visits (patient_id, patient_ssn, visit_date, provider, subjective, plan) VALUES \
               (1, '123-45-6789', '2024-03-01', 'dr-a', 'CANARY cough', 'CANARY rest'), \
               (2, '987-65-4321', '2024-03-02', 'dr-b', NULL, ''), \
               (1, '123-45-6789', '2024-03-03', 'dr-a', '', NULL);",
        )
        .await
        .unwrap();
        c.execute(
            "UPDATE patients SET medical_history = $1 WHERE id = $2",
            &[&big, &1i64],
        )
        .await
        .unwrap();
    }
    let rows = d
        .same(&format!("SELECT {patients} FROM patients ORDER BY id"))
        .await;
    assert_eq!(rows[0][8].as_deref(), Some(big.as_str()));
    d.same("SELECT p.ssn AS x, v.subjective, v.plan FROM patients p JOIN visits v ON v.patient_ssn = p.ssn ORDER BY v.id")
        .await;
    d.same("SELECT * FROM visits ORDER BY id").await;
    d.same("SELECT first_name FROM patients WHERE ssn = '987-65-4321'")
        .await;

    // UPSERT with EXCLUDED and RETURNING, simple and extended.
    d.same(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('New', 'CANARY-New', '123-45-6789') \
         ON CONFLICT (ssn) DO UPDATE SET first_name = EXCLUDED.first_name, phone = '+1 999' \
         RETURNING id, first_name, last_name, ssn, phone",
    )
    .await;
    d.same_prepared(
        "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) VALUES ($1, $2, $3, '2001-02-03') \
         ON CONFLICT (ssn) DO UPDATE SET last_name = EXCLUDED.last_name RETURNING id, first_name, last_name, ssn, date_of_birth",
        &[&"Third", &"CANARY-Third", &"555-55-5555"],
    )
    .await;
    d.same_prepared(
        "SELECT id, first_name, date_of_birth FROM patients WHERE ssn = $1",
        &[&"555-55-5555"],
    )
    .await;
    d.same_prepared(
        "UPDATE patients SET email = $1 WHERE ssn = $2 RETURNING email, medical_history IS NULL",
        &[&"CANARY@example.org", &"987-65-4321"],
    )
    .await;
    d.same_prepared(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, $2, NULL) RETURNING first_name, ssn",
        &[&"", &""],
    )
    .await;

    // SQL-level PREPARE / EXECUTE / DEALLOCATE.
    d.same(
        "PREPARE add_patient AS INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, $2, $3) RETURNING first_name, ssn; \
         EXECUTE add_patient ('Prep', 'CANARY-Prepared', '444-44-4444'); \
         DEALLOCATE add_patient",
    )
    .await;
    d.same("SELECT first_name, last_name FROM patients WHERE ssn = '444-44-4444'")
        .await;

    // A pipelined batch of 1,000 prepared inserts.
    for c in [&d.via, &d.direct] {
        let stmt = c
            .prepare("INSERT INTO visits (patient_id, patient_ssn, visit_date, provider, assessment) VALUES (2, $1, '2024-04-01', 'dr-c', $2)")
            .await
            .unwrap();
        let futs = (0..1000).map(|i| {
            let stmt = stmt.clone();
            async move {
                let note = format!("CANARY assessment {i}");
                c.execute(&stmt, &[&"987-65-4321", &note]).await
            }
        });
        for r in futures_util::future::join_all(futs).await {
            r.unwrap();
        }
    }
    let rows = d
        .same("SELECT count(*), count(DISTINCT patient_ssn) FROM visits")
        .await;
    assert_eq!(rows[0][0].as_deref(), Some("1003"));
    d.same("SELECT id, assessment FROM visits ORDER BY id")
        .await;
    d.same("SELECT count(*) FROM visits WHERE patient_ssn = '987-65-4321'")
        .await;
    // Equality forms on deterministic columns.
    d.same(
        "SELECT first_name FROM patients WHERE ssn IN ('123-45-6789', '987-65-4321') ORDER BY id",
    )
    .await;
    d.same("SELECT count(*) FROM patients WHERE ssn <> '123-45-6789'")
        .await;
    d.same("SELECT patient_ssn, count(*) FROM visits GROUP BY patient_ssn ORDER BY 2")
        .await;
    d.same("SELECT count(*), count(email), count(*) FILTER (WHERE email IS NULL) FROM patients")
        .await;
    d.same_prepared(
        "SELECT v.id, p.first_name FROM visits v JOIN patients p ON p.ssn = v.patient_ssn WHERE v.patient_ssn <> $1 ORDER BY v.id LIMIT 5",
        &[&"987-65-4321"],
    )
    .await;
    drop(d);
    assert_only_ciphertext(&enc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_swapped_ciphertext_is_an_error_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("forged");
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.batch_execute(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('CANARY-A', 'A', '111-11-1111'), ('CANARY-B', 'B', '222-22-2222')",
    )
    .await
    .unwrap();
    c.query_one("SELECT first_name FROM patients WHERE id = 1", &[])
        .await
        .unwrap();

    // Moved between columns (same row): the AAD binds the column's key.
    cluster()
        .psql(
            &db,
            "UPDATE patients SET first_name = last_name WHERE id = 1",
        )
        .unwrap();
    // Swapped between rows of the same column works by design (no row
    // binding); a flipped bit does not.
    cluster()
        .psql(
            &db,
            "UPDATE patients SET last_name = 'pgv1:' || encode(set_byte(decode(substr(last_name, 6), 'base64'), 20, 0), 'base64') WHERE id = 2",
        )
        .unwrap();
    // Plaintext written behind pgveil's back.
    cluster()
        .psql(
            &db,
            "INSERT INTO patients (first_name, last_name) VALUES ('CANARY-plain', 'x')",
        )
        .unwrap();
    for (sql, id) in [
        ("SELECT first_name FROM patients WHERE id = $1", 1i64),
        ("SELECT last_name FROM patients WHERE id = $1", 2),
        ("SELECT first_name FROM patients WHERE id = $1", 3),
    ] {
        let e = c.query(sql, &[&id]).await.unwrap_err();
        let e = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(e.code().code(), "XX001", "{}", e.message());
        assert!(e.message().contains("public.patients."), "{}", e.message());
        assert!(!e.message().contains("CANARY"));
        // Simple protocol too.
        let e = c
            .simple_query(&sql.replace("$1", &id.to_string()))
            .await
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("XX001"));
        // The session is still usable.
        let ok: String = c
            .query_one("SELECT ssn FROM patients WHERE id = 2", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(ok, "222-22-2222");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_errors_in_order_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("refuse");
    cluster()
        .psql(&db, "CREATE TABLE notes_public (id int, body text)")
        .unwrap();
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;

    // Simple protocol: a statement pgveil cannot rewrite safely.
    let e = c
        .simple_query("INSERT INTO patients (first_name, last_name, ssn) VALUES (upper('CanaryFirst'), 'CanaryLast', 'CANARY-SSN-1')")
        .await
        .unwrap_err();
    let db_err = e.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "0A000", "{e}");
    assert!(
        db_err.message().contains("public.patients.first_name"),
        "{}",
        db_err.message()
    );
    assert!(!db_err.message().to_lowercase().contains("canary"));
    assert!(db_err.where_().is_none(), "no PL/pgSQL context");
    c.simple_query("INSERT INTO notes_public VALUES (1, 'fine')")
        .await
        .unwrap();

    // Extended protocol: refused at Parse, error delivered in order.
    let e = c
        .query("SELECT ssn FROM patients WHERE ssn LIKE $1", &[&"CANARY%"])
        .await
        .unwrap_err();
    let db_err = e.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "0A000");
    assert!(
        db_err.message().contains("public.patients.ssn"),
        "{}",
        db_err.message()
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes_public", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Unparsable text mentioning a protected table.
    let e = c
        .simple_query("INSERT INTO patients (ssn) VALUES ('CANARY' ;; garbage(")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"));

    // In an explicit transaction the refusal aborts it, as a server error would.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c
        .simple_query("UPDATE visits SET subjective = subjective || 'CANARY-NOTE'")
        .await
        .is_err());
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    c.batch_execute("ROLLBACK").await.unwrap();

    // A multi-statement string with one refused statement is refused whole.
    assert!(c
        .simple_query("INSERT INTO notes_public VALUES (2, 'x'); INSERT INTO insurance (patient_id, payer, member_id) VALUES (1, 'p', lower('CANARY-MEMBER'))")
        .await
        .is_err());
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes_public", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing of the refused string ran");
    let counts = cluster()
        .psql(&db, "SELECT count(*) FROM patients UNION ALL SELECT count(*) FROM visits UNION ALL SELECT count(*) FROM insurance")
        .unwrap();
    assert_eq!(
        counts.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_created_through_pgveil_are_protected_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database("ddl");
    let proxy = clinic_proxy(dir.path()).await;
    let early = connect_tls(&proxy.pg_config(&db)).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    // Before the table exists, a write is refused (not sent in plaintext).
    assert!(c
        .simple_query(
            "INSERT INTO insurance (patient_id, payer, member_id) VALUES (1, 'p', 'CANARY-M')"
        )
        .await
        .is_err());
    c.batch_execute(&pgveil::demo::policy_ddl(CLINIC_POLICY))
        .await
        .unwrap();
    c.batch_execute(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('CANARY-F', 'CANARY-L', '1')",
    )
    .await
    .unwrap();
    // A session opened before the DDL sees the new catalog too.
    early
        .execute(
            "INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, $2, $3)",
            &[&"CANARY-F2", &"CANARY-L2", &"2"],
        )
        .await
        .unwrap();
    let names: Vec<String> = early
        .query("SELECT first_name FROM patients ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["CANARY-F", "CANARY-F2"]);
    let stored = cluster()
        .psql(&db, "SELECT count(*) FROM patients WHERE first_name LIKE 'pgv1:%' AND last_name LIKE 'pgv1:%'")
        .unwrap();
    assert_eq!(stored.trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_writes_and_reads_plaintext_while_the_database_holds_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("psql_enc");
    let proxy = clinic_proxy(dir.path()).await;
    let url = proxy.url(SCRAM_USER, &db, "verify-full");
    ok_stdout(&psql(
        &url,
        &[
            "-c",
            "INSERT INTO patients (first_name, last_name, ssn, date_of_birth, medical_history) VALUES ('Zoë', 'CANARY-Psql', '123-45-6789', '1990-01-02', 'CANARY history')",
            "-c",
            "INSERT INTO insurance (patient_id, payer, member_id, copay_cents) VALUES (1, 'acme', 'CANARY-M1', 2500)",
        ],
    ));
    let out = ok_stdout(&psql(
        &url,
        &[
            "-At",
            "-c",
            "SELECT first_name, last_name, ssn, date_of_birth, medical_history FROM patients",
            "-c",
            "SELECT member_id, copay_cents FROM insurance",
        ],
    ));
    assert!(
        out.contains("Zoë|CANARY-Psql|123-45-6789|1990-01-02|CANARY history"),
        "{out}"
    );
    assert!(out.contains("CANARY-M1|2500"), "{out}");

    // Every type, through psql, against psql on a plaintext copy.
    let plain = plain_clinic_database("psql_plain");
    let direct_url = cluster().url(&plain);
    for u in [&url, &direct_url] {
        ok_stdout(&psql(u, &["-c", &insert_lab_sql()]));
    }
    let select = format!("SELECT {LAB_COLUMNS} FROM lab_results ORDER BY id");
    let through = ok_stdout(&psql(&url, &["-c", &select]));
    let direct = ok_stdout(&psql(&direct_url, &["-c", &select]));
    assert_eq!(through, direct);
    assert_eq!(through.lines().count(), LAB_ROWS.len());
    assert_only_ciphertext(&db);
}

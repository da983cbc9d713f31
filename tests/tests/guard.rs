//! Fail closed while wire encryption is not available: with a policy
//! configured, statements that mention a protected table never reach
//! PostgreSQL; everything else passes, and the session stays usable.

use pgveil_tests::*;

async fn guarded_proxy(dir: &std::path::Path) -> Proxy {
    std::fs::write(
        dir.join("clinic.toml"),
        include_str!("../../config/clinic.example.toml"),
    )
    .unwrap();
    let mut cfg = Proxy::config();
    cfg.base_dir = dir.to_path_buf();
    cfg.policy.file = Some("clinic.toml".into());
    pgveil::keys::init(&cfg, &mut Vec::new()).unwrap();
    Proxy::start_with(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_on_protected_tables_are_refused_in_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database("guard");
    let ddl = pgveil::demo::policy_ddl(include_str!("../../config/clinic.example.toml"));
    cluster().psql(&db, &ddl).unwrap();
    cluster()
        .psql(&db, "CREATE TABLE notes_public (id int, body text)")
        .unwrap();
    let proxy = guarded_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;

    // Simple protocol: refused with 0A000, then the session goes on.
    let e = c
        .simple_query("INSERT INTO patients (first_name, last_name, ssn) VALUES ('CanaryFirst', 'CanaryLast', 'CANARY-SSN-1')")
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED),
        "{e}"
    );
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("protected columns"), "{msg}");
    assert!(!msg.contains("Canary") && !msg.contains("CANARY"));
    c.simple_query("INSERT INTO notes_public VALUES (1, 'fine')")
        .await
        .unwrap();

    // Extended protocol (prepare/bind): refused at Parse.
    let e = c
        .query(
            "SELECT ssn FROM Patients WHERE ssn = $1",
            &[&"CANARY-SSN-2"],
        )
        .await
        .unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("pgveil: protected table refused"), "{msg}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes_public", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // In an explicit transaction the refusal aborts it, exactly as an error
    // from PostgreSQL would.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c
        .simple_query("UPDATE visits SET subjective = 'CANARY-NOTE'")
        .await
        .is_err());
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    c.batch_execute("ROLLBACK").await.unwrap();

    // A multi-statement string mentioning a protected table is refused whole.
    assert!(c
        .simple_query("INSERT INTO notes_public VALUES (2, 'x'); INSERT INTO insurance (patient_id, payer, member_id) VALUES (1, 'p', 'CANARY-MEMBER')")
        .await
        .is_err());
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes_public", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing of the refused string ran");

    // Nothing reached the database.
    let dump = cluster()
        .psql(&db, "SELECT count(*) FROM patients UNION ALL SELECT count(*) FROM visits UNION ALL SELECT count(*) FROM insurance")
        .unwrap();
    assert_eq!(dump.split_whitespace().collect::<Vec<_>>(), ["0", "0", "0"]);
}

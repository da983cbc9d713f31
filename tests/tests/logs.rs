//! No PHI in logs: at the most verbose level, a workload with planted canary
//! values leaves statement fingerprints in the log and no canary anywhere.

use pgveil_tests::*;

const CANARIES: &[&str] = &[
    "CANARY-SSN-5521",
    "CanaryAlice",
    "CANARY-NOTE-77",
    "CANARY-PARAM-31",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_hold_fingerprints_and_no_canaries() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        // Everything pgveil's own crates log, at the most verbose level. (The
        // test's client library logs its own queries; it is not pgveil.)
        .with_env_filter("pgveil=trace,pgveil_sql=trace,pgveil_wire=trace,pgveil_crypto=trace,pgveil_policy=trace,rustls=trace,tokio_rustls=trace")
        .with_writer(move || writer.clone())
        .json()
        .init();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clinic.toml"),
        include_str!("../../config/clinic.example.toml"),
    )
    .unwrap();
    let db = fresh_database("logs");
    cluster()
        .psql(
            &db,
            &pgveil::demo::policy_ddl(include_str!("../../config/clinic.example.toml")),
        )
        .unwrap();
    cluster()
        .psql(&db, "CREATE TABLE open_notes (id int, body text)")
        .unwrap();
    let mut cfg = Proxy::config();
    cfg.base_dir = dir.path().to_path_buf();
    cfg.policy.file = Some("clinic.toml".into());
    pgveil::keys::init(&cfg, &mut Vec::new()).unwrap();
    let (proxy, admin) = Proxy::start_with_admin(cfg).await;

    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.simple_query("INSERT INTO open_notes VALUES (1, 'CANARY-NOTE-77')")
        .await
        .unwrap();
    c.execute(
        "INSERT INTO open_notes VALUES ($1, $2)",
        &[&2i32, &"CANARY-PARAM-31"],
    )
    .await
    .unwrap();
    // Protected writes and reads, a unique violation on a protected column,
    // a refused statement and a decryption failure: every error text the
    // client receives is collected.
    c.simple_query("INSERT INTO patients (first_name, last_name, ssn) VALUES ('CanaryAlice', 'X', 'CANARY-SSN-5521')")
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT first_name, ssn FROM patients WHERE ssn = $1",
            &[&"CANARY-SSN-5521"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "CanaryAlice");
    let mut client_errors = Vec::new();
    let unique = c
        .execute(
            "INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, 'Y', $2)",
            &[&"CanaryAlice", &"CANARY-SSN-5521"],
        )
        .await
        .unwrap_err();
    assert_eq!(unique.code().map(|c| c.code()), Some("23505"));
    client_errors.push(format!("{:?}", unique.as_db_error().unwrap()));
    let refused = c
        .simple_query("INSERT INTO patients (first_name, last_name, ssn) VALUES (upper('CanaryAlice'), 'X', 'CANARY-NOTE-77')")
        .await
        .unwrap_err();
    client_errors.push(format!("{:?}", refused.as_db_error().unwrap()));
    let refused = refused.as_db_error().unwrap().message().to_string();
    cluster()
        .psql(&db, "UPDATE patients SET last_name = 'CANARY-PARAM-31'")
        .unwrap();
    let undecryptable = c
        .query("SELECT last_name FROM patients", &[])
        .await
        .unwrap_err();
    assert_eq!(undecryptable.code().map(|c| c.code()), Some("XX001"));
    client_errors.push(format!("{:?}", undecryptable.as_db_error().unwrap()));
    let mut bad = proxy.pg_config(&db);
    bad.password("CANARY-SSN-5521");
    bad.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let wrong = bad
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .unwrap()
        .to_string();
    let (_, metrics) = http_get(admin, "/metrics").await;
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("INSERT INTO open_notes VALUES (?, ?)"),
        "fingerprint missing:\n{log}"
    );
    assert!(
        log.contains("INSERT INTO open_notes VALUES ($1, $2)"),
        "fingerprint missing:\n{log}"
    );
    for canary in CANARIES {
        assert!(!log.contains(canary), "{canary} in the log:\n{log}");
        assert!(!metrics.contains(canary), "{canary} in /metrics");
        assert!(
            !refused.contains(canary),
            "{canary} in the refusal sent to the client"
        );
        assert!(!wrong.contains(canary), "{canary} in the auth error");
        for e in &client_errors {
            assert!(
                !e.contains(canary),
                "{canary} in an error sent to the client: {e}"
            );
        }
    }
}

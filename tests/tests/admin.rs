//! The admin listener: /healthz, /readyz, /metrics after a workload.

use pgveil_tests::*;

fn metric(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness() {
    let (proxy, admin) = Proxy::start_with_admin(Proxy::config()).await;
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    // A workload: 3 TLS sessions, one refused by the server (wrong password).
    for _ in 0..3 {
        let c = connect_tls(&proxy.pg_config("postgres")).await;
        c.simple_query("SELECT 'CANARY-PHI-7731'").await.unwrap();
    }
    let mut bad = proxy.pg_config("postgres");
    bad.password("wrong");
    bad.ssl_mode(tokio_postgres::config::SslMode::Disable);
    assert!(bad.connect(tokio_postgres::NoTls).await.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&body, "pgveil_client_connections_total"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "pgveil_client_connections_active"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "pgveil_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\"}"
        ),
        Some(3.0),
        "{body}"
    );
    assert!(metric(&body, "pgveil_bytes_total{direction=\"client_to_server\"}").unwrap() > 0.0);
    assert_eq!(
        metric(&body, "pgveil_build_info{version=\"0.1.0\"}"),
        Some(1.0),
        "{body}"
    );
    let expiry = metric(
        &body,
        "pgveil_tls_certificate_expiry_timestamp_seconds{certificate=\"server\"}",
    )
    .expect("certificate expiry");
    let want = pgveil::admin::certificate_expiry(&certs().server_cert).unwrap() as f64;
    assert_eq!(expiry, want);
    // The test certificate is valid for 30 days from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expiry - now - 30.0 * 86_400.0).abs() < 120.0,
        "{expiry} vs {now}"
    );
    assert!(
        !body.contains("CANARY"),
        "metrics must not carry query text"
    );
    // Three simple-protocol SELECTs, timed to their ReadyForQuery.
    let simple_selects = metric(
        &body,
        "pgveil_statement_duration_seconds_count{kind=\"select\",path=\"passthrough\",protocol=\"simple\"}",
    );
    assert_eq!(simple_selects, Some(3.0), "{body}");
    assert!(metric(&body, "pgveil_proxy_time_seconds_count").unwrap() > 0.0);

    // The extended protocol is timed per Sync, labelled by the executed statement.
    let c = connect_plain(&proxy.pg_config("postgres")).await;
    for i in 0..5i32 {
        c.query_one("SELECT $1::int", &[&i]).await.unwrap();
    }
    let (_, body) = http_get(admin, "/metrics").await;
    let ext = metric(
        &body,
        "pgveil_statement_duration_seconds_count{kind=\"select\",path=\"passthrough\",protocol=\"extended\"}",
    )
    .unwrap_or(0.0);
    assert!(ext >= 5.0, "{body}");

    // Upstream down: readyz says why, with 503.
    let mut cfg = Proxy::config();
    cfg.upstream.address = format!("127.0.0.1:{}", pgveil::pgtemp::free_port().unwrap());
    let (_down, admin) = Proxy::start_with_admin(cfg).await;
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("\"ready\":false") && body.contains("unreachable"),
        "{body}"
    );
    assert_eq!(http_get(admin, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_counters_follow_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("crypto_metrics");
    let (proxy, admin) = Proxy::start_with_admin(clinic_config(dir.path())).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    for i in 0..3 {
        c.execute(
            "INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, $2, $3)",
            &[&format!("F{i}"), &"L", &format!("{i}")],
        )
        .await
        .unwrap();
    }
    let rows = c
        .query("SELECT first_name, ssn FROM patients", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(c
        .simple_query("SELECT upper(first_name) FROM patients")
        .await
        .is_err());
    cluster()
        .psql(
            &db,
            "UPDATE patients SET last_name = 'plaintext' WHERE ssn IS NOT NULL AND id = 1",
        )
        .unwrap();
    assert!(c
        .query("SELECT last_name FROM patients", &[])
        .await
        .is_err());

    let (_, body) = http_get(admin, "/metrics").await;
    let m = |s: &str| metric(&body, s).unwrap_or_else(|| panic!("{s} missing:\n{body}"));
    let enc = |col: &str| {
        m(&format!(
            "pgveil_crypto_values_total{{column=\"{col}\",operation=\"encrypt\",table=\"public.patients\"}}"
        ))
    };
    assert_eq!(enc("first_name"), 3.0);
    assert_eq!(enc("ssn"), 3.0);
    assert_eq!(
        m("pgveil_crypto_values_total{column=\"ssn\",operation=\"decrypt\",table=\"public.patients\"}"),
        3.0
    );
    assert_eq!(
        m("pgveil_crypto_errors_total{column=\"last_name\",table=\"public.patients\"}"),
        1.0
    );
    assert_eq!(
        m("pgveil_key_encryptions_total{key_id=\"public.patients.ssn/v1\"}"),
        3.0
    );
    assert_eq!(
        m("pgveil_refused_statements_total{reason=\"unsupported_statement\"}"),
        1.0
    );
    assert!(
        body.contains("pgveil_statement_duration_seconds_count{kind=\"insert\",path=\"rewritten\",protocol=\"extended\"} 3"),
        "{body}"
    );
}

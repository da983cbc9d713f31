//! Hot reload: new certificates reach new connections while open sessions keep
//! working; a broken configuration is rejected and the old one stays.

use pgveil::certs::DevCa;
use pgveil_tests::*;
use std::time::{Duration, Instant};

fn tls_with_ca(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

async fn try_connect(
    port: u16,
    ca_pem: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut c = tokio_postgres::Config::new();
    c.host("localhost")
        .port(port)
        .user(SCRAM_USER.0)
        .password(SCRAM_USER.1)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = c
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls_with_ca(
            ca_pem,
        )))
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Writes a server certificate signed by a fresh CA into `dir`; returns the CA PEM.
fn write_server_cert(dir: &std::path::Path) -> String {
    let ca = DevCa::new("reload CA").unwrap();
    let (cert, key) = ca
        .issue_pem("localhost", &["localhost"], false, 30)
        .unwrap();
    std::fs::write(dir.join("server.crt"), cert).unwrap();
    pgveil::certs::write_private(&dir.join("server.key"), &key).unwrap();
    ca.cert_pem().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = write_server_cert(dir.path());
    let mut cfg = Proxy::config();
    cfg.tls.cert_file = Some(dir.path().join("server.crt"));
    cfg.tls.key_file = Some(dir.path().join("server.key"));
    let (proxy, admin) = Proxy::start_with_admin(cfg.clone()).await;
    let open = try_connect(proxy.port(), &old_ca).await.unwrap();

    let new_ca = write_server_cert(dir.path());
    proxy.state.reload(cfg.clone()).expect("reload succeeds");
    assert!(
        try_connect(proxy.port(), &new_ca).await.is_ok(),
        "new certificate served"
    );
    assert!(
        try_connect(proxy.port(), &old_ca).await.is_err(),
        "old certificate gone"
    );
    assert_eq!(
        open.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // A broken configuration (key file missing) is rejected; the running one stays.
    let mut broken = cfg.clone();
    broken.tls.key_file = Some(dir.path().join("missing.key"));
    let e = proxy.state.reload(broken).unwrap_err();
    assert!(e.to_string().contains("missing.key"), "{e}");
    assert!(try_connect(proxy.port(), &new_ca).await.is_ok());
    let (_, body) = http_get(admin, "/metrics").await;
    assert!(
        body.contains("pgveil_config_reloads_total{result=\"success\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("pgveil_config_reloads_total{result=\"error\"} 1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = write_server_cert(dir.path());
    let port = pgveil::pgtemp::free_port().unwrap();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[admin]\nenabled = false\n[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n[upstream]\naddress = \"{}\"\n",
        cluster().address()
    );
    std::fs::write(dir.path().join("pgveil.toml"), config).unwrap();
    let mut child = std::process::Command::new(pgveil_binary())
        .args(["serve", "--config"])
        .arg(dir.path().join("pgveil.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let open = loop {
        match try_connect(port, &old_ca).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("pgveil serve did not come up: {e}"),
        }
    };
    let new_ca = write_server_cert(dir.path());
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_connect(port, &new_ca).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "new certificate not served after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        open.query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    drop(open);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Issue 11, family 9 and 5: a reload that would stop protecting a column is
/// rejected unless `policy.allow_unprotect` says so; a reload that protects
/// more closes idle sessions opened under the old policy (FATAL 57P01, as
/// PostgreSQL's own shutdown), so pooled connections cannot keep writing
/// the newly protected column in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_never_silently_drop_protection() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("reload_policy");
    let full = clinic_config(dir.path());
    // The same policy without patients.phone.
    let smaller = CLINIC_POLICY.replace(
        "phone           = { type = \"text\", label = \"pii\" }\n",
        "",
    );
    assert_ne!(smaller, CLINIC_POLICY);
    std::fs::write(dir.path().join("smaller.toml"), &smaller).unwrap();
    let mut small = full.clone();
    small.policy.file = Some("smaller.toml".into());
    let proxy = Proxy::start_with(full.clone()).await;

    // Shrinking: rejected, counted; the running policy stays.
    let e = proxy.state.reload(small.clone()).unwrap_err();
    assert!(e.to_string().contains("public.patients.phone"), "{e}");
    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.batch_execute(
        "INSERT INTO patients (first_name, last_name, phone) VALUES ('a', 'b', 'LEAKR-1')",
    )
    .await
    .unwrap();
    // Explicitly allowed: accepted.
    let mut allowed = small.clone();
    allowed.policy.allow_unprotect = true;
    proxy.state.reload(allowed).unwrap();
    // The session opened under the full policy is closed at its next idle
    // point (the policy changed), not left writing plaintext.
    let _ = c.simple_query("SELECT 1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.is_closed() || c.simple_query("SELECT 1").await.is_err());

    // Growing back: a session opened under the smaller policy is closed
    // before it can write the newly protected column in plaintext.
    let c2 = connect_tls(&proxy.pg_config(&db)).await;
    c2.simple_query("SELECT 1").await.unwrap();
    proxy.state.reload(full.clone()).unwrap();
    let _ = c2.simple_query("SELECT 1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = c2
        .batch_execute(
            "INSERT INTO patients (first_name, last_name, phone) VALUES ('a', 'b', 'LEAKR-2')",
        )
        .await;
    assert!(
        r.is_err(),
        "the old session must not write under the old policy"
    );
    // A new session writes under the new policy.
    let c3 = connect_tls(&proxy.pg_config(&db)).await;
    c3.batch_execute(
        "INSERT INTO patients (first_name, last_name, phone) VALUES ('a', 'b', 'LEAKR-3')",
    )
    .await
    .unwrap();
    let plain = cluster()
        .psql(
            &db,
            "SELECT count(*) FROM patients WHERE phone LIKE '%LEAKR%' AND phone !~ '^pgv1:[A-Za-z0-9+/]+=*$'",
        )
        .unwrap();
    assert_eq!(plain.trim(), "0");
}

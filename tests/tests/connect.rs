//! Issue 2, acceptance 1 and 2: TLS modes and authentication relay, driven by
//! psql and tokio-postgres against a real PostgreSQL.

use pgveil_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_require_and_plain() {
    let proxy = Proxy::start().await;
    let url = proxy.url(SCRAM_USER, "postgres", "verify-full");
    let proxy_port = proxy.port();
    let out = tokio::task::spawn_blocking(move || {
        let full = ok_stdout(&psql(&url, &["-c", "SELECT 'verify-full ok'"]));
        let req = ok_stdout(&psql(
            &url.replace("verify-full", "require"),
            &["-c", "SELECT 'require ok'"],
        ));
        let plain = ok_stdout(&psql(
            &url.replace("verify-full", "disable"),
            &["-c", "SELECT 'plain ok'"],
        ));
        // The session really is TLS between psql and pgveil.
        let ver = psql(&url, &["-c", "\\conninfo"]);
        (full, req, plain, ver, proxy_port)
    })
    .await
    .unwrap();
    assert_eq!(out.0.trim(), "verify-full ok");
    assert_eq!(out.1.trim(), "require ok");
    assert_eq!(out.2.trim(), "plain ok");
    let info = String::from_utf8_lossy(&out.3.stdout).to_string();
    assert!(info.contains("SSL connection (protocol: TLSv1.3"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_plaintext_with_28000() {
    let mut cfg = Proxy::config();
    cfg.tls.require_tls = true;
    let proxy = Proxy::start_with(cfg).await;
    let url = proxy.url(SCRAM_USER, "postgres", "disable");
    let tls_url = proxy.url(SCRAM_USER, "postgres", "verify-full");
    let (plain, tls) = tokio::task::spawn_blocking(move || {
        (
            psql(&url, &["-c", "SELECT 1"]),
            psql(&tls_url, &["-c", "SELECT 1"]),
        )
    })
    .await
    .unwrap();
    assert!(!plain.status.success());
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("pgveil requires TLS"), "{err}");
    assert_eq!(ok_stdout(&tls).trim(), "1");

    // The SQLSTATE, seen by a driver.
    let mut c = proxy.pg_config("postgres");
    c.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let e = c
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_cleartext_users_authenticate() {
    let proxy = Proxy::start().await;
    for user in [SCRAM_USER, MD5_USER, CLEARTEXT_USER] {
        let url = proxy.url(user, "postgres", "verify-full");
        let out = tokio::task::spawn_blocking(move || psql(&url, &["-c", "SELECT current_user"]))
            .await
            .unwrap();
        assert_eq!(ok_stdout(&out).trim(), user.0);
    }
    // The md5 user really uses md5 (not SCRAM) on the server.
    let pw = cluster()
        .psql(
            "postgres",
            &format!(
                "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = '{}'",
                MD5_USER.0
            ),
        )
        .unwrap();
    assert_eq!(pw.trim(), "md5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_servers_28p01() {
    let proxy = Proxy::start().await;
    for (user, _) in [SCRAM_USER, MD5_USER] {
        let mut c = proxy.pg_config("postgres");
        c.user(user).password("wrong-password");
        c.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let e = c
            .connect(tokio_postgres::NoTls)
            .await
            .err()
            .expect("must fail");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{user}: {e}"
        );
    }
    let url = proxy.url((SCRAM_USER.0, "nope"), "postgres", "verify-full");
    let out = tokio::task::spawn_blocking(move || psql(&url, &["-c", "SELECT 1"]))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_fails_prefer_succeeds() {
    let proxy = Proxy::start().await;
    let url = proxy.url(SCRAM_USER, "postgres", "verify-full");
    let (req, pref) = tokio::task::spawn_blocking(move || {
        (
            psql(
                &format!("{url}&channel_binding=require"),
                &["-c", "SELECT 1"],
            ),
            psql(
                &format!("{url}&channel_binding=prefer"),
                &["-c", "SELECT 'prefer ok'"],
            ),
        )
    })
    .await
    .unwrap();
    assert!(!req.status.success());
    let err = String::from_utf8_lossy(&req.stderr);
    assert!(err.contains("channel binding"), "{err}");
    assert_eq!(ok_stdout(&pref).trim(), "prefer ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let mut cfg = Proxy::config();
    cfg.tls.client_ca_file = Some(certs().ca_file.clone());
    let proxy = Proxy::start_with(cfg).await;
    let url = proxy.url(SCRAM_USER, "postgres", "verify-full");
    let c = certs();
    let with_cert = format!(
        "{url}&sslcert={}&sslkey={}",
        c.client_cert.display(),
        c.client_key.display()
    );
    let (without, with) = tokio::task::spawn_blocking(move || {
        (
            psql(&url, &["-c", "SELECT 1"]),
            psql(&with_cert, &["-c", "SELECT 'mtls ok'"]),
        )
    })
    .await
    .unwrap();
    assert!(!without.status.success());
    assert_eq!(ok_stdout(&with).trim(), "mtls ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_is_accepted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = Proxy::start().await;
    let mut tls = client_tls();
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut s = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("direct TLS handshake");
    let startup = pgveil_wire::startup::StartupMessage {
        protocol: pgveil_wire::startup::PROTOCOL_3_0,
        params: vec![
            ("user".into(), SCRAM_USER.0.into()),
            ("database".into(), "postgres".into()),
        ],
    };
    s.write_all(&startup.encode()).await.unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    // AuthenticationSASL (R, code 10) relayed from the server.
    assert_eq!(head[0], b'R');
    assert_eq!(i32::from_be_bytes(head[5..9].try_into().unwrap()), 10);

    // Without ALPN, direct TLS is refused.
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_tls()));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut s = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    s.write_all(&startup.encode()).await.unwrap();
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "connection must be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_modes() {
    use pgveil::config::UpstreamTlsMode;
    for mode in [
        UpstreamTlsMode::Require,
        UpstreamTlsMode::VerifyFull,
        UpstreamTlsMode::Prefer,
    ] {
        let mut cfg = Proxy::config();
        cfg.upstream.tls_mode = mode;
        cfg.upstream.ca_file = Some(certs().ca_file.clone());
        cfg.upstream.server_name = Some("localhost".into());
        let proxy = Proxy::start_with(cfg).await;
        let client = connect_tls(&proxy.pg_config("postgres")).await;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(
            row.get::<_, bool>(0),
            "{mode:?}: upstream session must be TLS"
        );
        // Upstream TLS makes PostgreSQL offer SCRAM-SHA-256-PLUS. pgveil strips
        // it; a TLS client then announces channel-binding support (gs2 'y'),
        // which PostgreSQL treats as a downgrade. channel_binding=disable
        // works; prefer gets the server's error with pgveil's hint.
        let url = proxy.url(SCRAM_USER, "postgres", "verify-full");
        let (disable, prefer) = tokio::task::spawn_blocking(move || {
            (
                psql(
                    &format!("{url}&channel_binding=disable"),
                    &["-c", "SELECT 1"],
                ),
                psql(
                    &format!("{url}&channel_binding=prefer"),
                    &["-c", "SELECT 1"],
                ),
            )
        })
        .await
        .unwrap();
        assert_eq!(ok_stdout(&disable).trim(), "1");
        if mode != UpstreamTlsMode::Prefer || !prefer.status.success() {
            let err = String::from_utf8_lossy(&prefer.stderr);
            assert!(err.contains("channel_binding=disable"), "{err}");
        }
    }
    // verify-full against the wrong name fails cleanly with 08006.
    let mut cfg = Proxy::config();
    cfg.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
    cfg.upstream.ca_file = Some(certs().ca_file.clone());
    cfg.upstream.server_name = Some("not-the-server.example".into());
    let proxy = Proxy::start_with(cfg).await;
    let mut c = proxy.pg_config("postgres");
    c.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let e = c
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::CONNECTION_FAILURE),
        "{e}"
    );
}

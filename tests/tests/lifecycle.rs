//! Issue 2, acceptance 5 and 6: cancel, many clients, disconnects, killed
//! backends, connection limit, graceful shutdown, and hostile input.

use futures_util::SinkExt;
use pgveil_tests::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_pg_sleep_returns_57014_fast() {
    let proxy = Proxy::start().await;
    let client = connect_tls(&proxy.pg_config("postgres")).await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(30)").await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls());
    token.cancel_query(tls).await.expect("cancel sent");
    let (r, client) = sleeper.await.unwrap();
    let elapsed = started.elapsed();
    let e = r.expect_err("query must be cancelled");
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    assert!(
        elapsed < Duration::from_millis(1300),
        "took {elapsed:?} (300 ms of it before the cancel)"
    );
    // The session goes on.
    let r = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_forged_key_is_ignored() {
    let proxy = Proxy::start().await;
    let client = connect_plain(&proxy.pg_config("postgres")).await;
    // A forged cancel with the *upstream* pid must not reach the backend.
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let req = pgveil_wire::startup::CancelRequest {
        process_id: pid as u32,
        secret: bytes::Bytes::from_static(&[1, 2, 3, 4]),
    };
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&req.encode()).await.unwrap();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).await.unwrap_or(0), 0);
    let r = client.query_one("SELECT pg_sleep(0.3)::text", &[]).await;
    assert!(r.is_ok(), "query must not be cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_clients() {
    let proxy = Proxy::start().await;
    let config = proxy.pg_config("postgres");
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let config = config.clone();
            tokio::spawn(async move {
                let c = connect_plain(&config).await;
                let r = c
                    .query_one("SELECT $1::int + 1, pg_backend_pid()", &[&i])
                    .await
                    .unwrap();
                // Hold the connection until all are open.
                tokio::time::sleep(Duration::from_millis(500)).await;
                r.get::<_, i32>(0)
            })
        })
        .collect();
    let mut sum = 0i64;
    for t in tasks {
        sum += t.await.unwrap() as i64;
    }
    assert_eq!(sum, (1..=300).sum::<i64>());
}

async fn backends_of(app: &str) -> i64 {
    let admin = connect_plain(&direct_config("postgres")).await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_backends(app: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = backends_of(app).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{app}: {n} backends, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_query_and_mid_copy_leaves_others_alone() {
    let db = fresh_database("disc");
    let proxy = Proxy::start().await;
    let other = connect_plain(&proxy.pg_config(&db)).await;
    other
        .batch_execute("CREATE TABLE t (id int, v text)")
        .await
        .unwrap();

    // Mid-query: the client task is aborted while pg_sleep runs.
    let mut cfg = proxy.pg_config(&db);
    cfg.application_name("disc_query");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let q = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(2)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.abort();
    conn_task.abort();

    // Mid-COPY: half a row sent, then the socket is dropped.
    let mut cfg = proxy.pg_config(&db);
    cfg.application_name("disc_copy");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let sink = c.copy_in("COPY t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\tcomplete row\n2\thalf a r"))
        .await
        .unwrap();
    sink.flush().await.unwrap();
    conn_task.abort();
    drop(c);

    // The other session is unaffected, the aborted COPY stored nothing, and
    // both upstream backends went away.
    let n: i64 = other
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    wait_for_backends("disc_copy", 0).await;
    wait_for_backends("disc_query", 0).await;
    let r = other.query_one("SELECT 'still here'", &[]).await.unwrap();
    assert_eq!(r.get::<_, &str>(0), "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_gives_that_client_a_clean_error() {
    let proxy = Proxy::start().await;
    let victim = connect_plain(&proxy.pg_config("postgres")).await;
    let bystander = connect_plain(&proxy.pg_config("postgres")).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = connect_plain(&direct_config("postgres")).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let e = victim.simple_query("SELECT 1").await.unwrap_err();
    // Either the FATAL 57P01 itself, or "connection closed" if it arrived first.
    assert!(
        e.code() == Some(&SqlState::ADMIN_SHUTDOWN) || e.is_closed(),
        "unexpected error: {e}"
    );
    let r = bystander.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 7);
    let again = connect_plain(&proxy.pg_config("postgres")).await;
    assert_eq!(
        again
            .query_one("SELECT 8", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_gives_53300() {
    let mut cfg = Proxy::config();
    cfg.max_connections = 2;
    let proxy = Proxy::start_with(cfg).await;
    let a = connect_plain(&proxy.pg_config("postgres")).await;
    let b = connect_plain(&proxy.pg_config("postgres")).await;
    let mut c = proxy.pg_config("postgres");
    c.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let e = c
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("third is refused");
    assert_eq!(e.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{e}");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("too many"), "{msg}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = connect_plain(&proxy.pg_config("postgres")).await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_sessions_finish() {
    let mut cfg = Proxy::config();
    cfg.shutdown_timeout_secs = 3;
    let proxy = Proxy::start_with(cfg).await;
    let addr = proxy.addr;
    let config = proxy.pg_config("postgres");
    let open = connect_plain(&config).await;
    let stopping = tokio::spawn(proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused, the open session still works.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let r = open
        .query_one("SELECT pg_sleep(0.2)::text || 'done'", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "done");
    drop(open);
    tokio::time::timeout(Duration::from_secs(2), stopping)
        .await
        .expect("server stops once the session is gone")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_closes_lingering_sessions() {
    let mut cfg = Proxy::config();
    cfg.shutdown_timeout_secs = 1;
    let proxy = Proxy::start_with(cfg).await;
    let open = connect_plain(&proxy.pg_config("postgres")).await;
    let started = Instant::now();
    proxy.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(open.simple_query("SELECT 1").await.is_err());
}

/// Reads what the proxy sends until it closes; returns the bytes.
async fn read_until_close(s: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .expect("closed in time");
    out
}

fn is_error_with(bytes: &[u8], code: &str) -> bool {
    bytes.first() == Some(&b'E')
        && bytes
            .windows(code.len() + 1)
            .any(|w| w[0] == b'C' && &w[1..] == code.as_bytes())
}

async fn assert_still_serving(proxy: &Proxy) {
    let c = connect_plain(&proxy.pg_config("postgres")).await;
    assert_eq!(
        c.query_one("SELECT 5", &[]).await.unwrap().get::<_, i32>(0),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_startup_input_gets_clean_errors() {
    let mut cfg = Proxy::config();
    cfg.handshake_timeout_secs = 1;
    let proxy = Proxy::start_with(cfg).await;

    // Garbage instead of a startup packet (an HTTP request): its "length"
    // is out of range, which PostgreSQL answers by closing silently.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(got.is_empty(), "{got:?}");

    // Oversized startup length: closed silently too.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 1, 0, 0, 0, 3, 0, 0]).await.unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(got.is_empty(), "{got:?}");

    // A startup packet PostgreSQL does answer (a malformed parameter list).
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 10, 0, 3, 0, 0, b'u', b'x'])
        .await
        .unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(is_error_with(&got, "08P01"), "{got:?}");

    // Truncated startup packet, then silence: closed by the handshake timeout.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u']).await.unwrap();
    let started = Instant::now();
    let got = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(got.is_empty() || is_error_with(&got, "08P01"), "{got:?}");

    // A TLS ClientHello of garbage.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x20, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0,
    ])
    .await
    .unwrap();
    s.write_all(&[0x55; 64]).await.unwrap();
    let _ = read_until_close(&mut s, Duration::from_secs(3)).await;

    // Garbage after SSLRequest accepted.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&pgveil_wire::startup::ssl_request())
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S');
    s.write_all(&[0x16, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let _ = read_until_close(&mut s, Duration::from_secs(3)).await;

    assert_still_serving(&proxy).await;
}

/// Authenticates a raw socket through the proxy (cleartext user, no TLS).
async fn raw_session(proxy: &Proxy) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let startup = pgveil_wire::startup::StartupMessage {
        protocol: pgveil_wire::startup::PROTOCOL_3_0,
        params: vec![
            ("user".into(), CLEARTEXT_USER.0.into()),
            ("database".into(), "postgres".into()),
        ],
    };
    s.write_all(&startup.encode()).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let reader = pgveil_wire::FrameReader::default();
    loop {
        let f = loop {
            if let Some(f) = reader.parse(&mut buf).unwrap() {
                break f;
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        };
        match f.tag() {
            b'R' if pgveil_wire::backend::auth_code(&f).unwrap() == 3 => {
                let mut body = CLEARTEXT_USER.1.as_bytes().to_vec();
                body.push(0);
                s.write_all(pgveil_wire::Frame::new(b'p', &body).raw())
                    .await
                    .unwrap();
            }
            b'Z' => return s,
            b'E' => panic!("login failed"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_after_login_get_08p01() {
    let mut cfg = Proxy::config();
    cfg.max_message_size = 1 << 20;
    let proxy = Proxy::start_with(cfg).await;

    // Oversized length claim (2 GiB) on a Query.
    let mut s = raw_session(&proxy).await;
    s.write_all(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b'S'])
        .await
        .unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(is_error_with(&got, "08P01"), "{got:?}");

    // Negative length.
    let mut s = raw_session(&proxy).await;
    s.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(is_error_with(&got, "08P01"), "{got:?}");

    // Truncated message, then the client goes away: nothing breaks.
    let mut s = raw_session(&proxy).await;
    s.write_all(&[b'Q', 0, 0, 0, 100, b'S', b'E'])
        .await
        .unwrap();
    drop(s);

    assert_still_serving(&proxy).await;
}

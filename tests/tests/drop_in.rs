//! Issue 17: pgveil as invisible as a plain connection — the backend's real
//! process id, a cancel that never lands on the next statement, silent
//! closes where PostgreSQL closes silently, and one warning where there was
//! one per session.

use pgveil_tests::*;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// pgveil's log lines of this test binary (one subscriber per process).
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Captured::default();
        let w = c.clone();
        tracing_subscriber::fmt()
            .with_env_filter("pgveil=info")
            .with_writer(move || w.clone())
            .json()
            .init();
        c
    })
}

fn log_text() -> String {
    logs().text()
}

/// A CancelRequest sent as libpq does: write, then wait for the far end to
/// close before reporting it delivered.
async fn cancel(port: u16, pid: u32, secret: &[u8]) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = pgveil_wire::startup::CancelRequest {
        process_id: pid,
        secret: bytes::Bytes::copy_from_slice(secret),
    };
    s.write_all(&req.encode()).await.unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink))
        .await
        .expect("the cancel connection closes")
        .unwrap();
}

fn first_value(msgs: &[RawMessage]) -> String {
    let d = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    let len = i32::from_be_bytes([d.body[2], d.body[3], d.body[4], d.body[5]]) as usize;
    String::from_utf8_lossy(&d.body[6..6 + len]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_the_backends_real_process_id() {
    let proxy = Proxy::start().await;
    let db = fresh_database("realpid");
    let mut listener = RawClient::connect(proxy.port(), &db).await;
    let mut notifier = RawClient::connect(proxy.port(), &db).await;
    let (pid, _) = notifier.key.clone().expect("BackendKeyData");
    let real: u32 = first_value(&notifier.query("SELECT pg_backend_pid()").await)
        .parse()
        .unwrap();
    assert_eq!(pid, real, "BackendKeyData carries the real process id");

    listener.query("LISTEN dropin").await;
    notifier.query("NOTIFY dropin, 'hello'").await;
    // An idle listener receives the notification at once.
    let a = listener.next().await;
    assert_eq!(a.tag, b'A', "NotificationResponse");
    let notified = u32::from_be_bytes([a.body[0], a.body[1], a.body[2], a.body[3]]);
    assert_eq!(notified, real, "notifications name the real process id");

    // pg_terminate_backend by that pid ends the right session.
    let mut admin = RawClient::connect(proxy.port(), &db).await;
    let r = admin
        .query(&format!("SELECT pg_terminate_backend({pid})"))
        .await;
    assert_eq!(first_value(&r), "t");
}

/// The probe of the issue: a cancel sent while the connection is idle must
/// never hit the statement that follows it (0 of 200 directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_never_lands_on_the_next_statement() {
    let proxy = Proxy::start().await;
    let db = fresh_database("cancelrace");
    let mut c = RawClient::connect(proxy.port(), &db).await;
    let (pid, secret) = c.key.clone().expect("BackendKeyData");
    let mut stray = 0;
    for _ in 0..200 {
        cancel(proxy.port(), pid, &secret).await;
        let r = c.query("SELECT pg_sleep(0.01)").await;
        if r.iter().any(|m| m.sqlstate().as_deref() == Some("57014")) {
            stray += 1;
        }
    }
    assert_eq!(stray, 0, "cancels landed on the following statement");
    // And a cancel during a statement still cancels it.
    c.send(&[pgveil_wire::frontend::query(b"SELECT pg_sleep(30)")])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel(proxy.port(), pid, &secret).await;
    let r = c.until_ready().await;
    assert!(r.iter().any(|m| m.sqlstate().as_deref() == Some("57014")));
}

/// What a client reads from `port` after sending `bytes` and closing its
/// write side.
async fn answer_to(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    if bytes.len() >= 8 {
        let _ = s.shutdown().await;
    }
    // (A short length with the connection left open: the server must
    // judge it without waiting for more; the read below would otherwise
    // last until the handshake timeout and its FATAL.)
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("closed in time");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_framing_closes_silently_as_postgresql_does() {
    let proxy = Proxy::start().await;
    let cases: [&[u8]; 7] = [
        // node-postgres ending during connect: Terminate before StartupMessage.
        b"X\0\0\0\x04\0\0\0\x08\x04\xd2\x16\x2f",
        // A length below the minimum.
        b"\0\0\0\x04\0\x03\0\0",
        // A length above the maximum.
        b"\x7f\0\0\0\0\x03\0\0",
        // Terminate alone, then the client goes away.
        b"X\0\0\0\x04",
        // Short and negative lengths, with nothing after them.
        b"\0\0\0\x04",
        b"\0\0\0\x07",
        b"\xff\xff\xff\xf0",
    ];
    for bytes in cases {
        let direct = answer_to(cluster().port(), bytes).await;
        let through = answer_to(proxy.port(), bytes).await;
        assert!(direct.is_empty(), "PostgreSQL answered {direct:?}");
        assert_eq!(through, direct, "pgveil answered {bytes:?} differently");
    }
    // Cases PostgreSQL does answer keep an 08P01/0A000 FATAL.
    let bad_version = b"\0\0\0\x08\0\x09\0\0";
    let through = answer_to(proxy.port(), bad_version).await;
    assert_eq!(through.first(), Some(&b'E'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_policy_tables_are_reported_once_per_database() {
    let _ = logs();
    let dir = tempfile::tempdir().unwrap();
    let proxy = clinic_proxy(dir.path()).await;
    let db = fresh_database("notables");
    let engine = proxy.state.current().engine.clone().expect("policy loaded");
    for _ in 0..6 {
        let _c = RawClient::connect(proxy.port(), &db).await;
        // DDL anywhere moves the catalog generation (a test suite does it
        // all the time): every new session reads the catalog again, and
        // still nothing new is worth a warning.
        engine.invalidate();
    }
    let count = log_text()
        .matches("policy tables not found in this database")
        .count();
    assert_eq!(count, 1, "{}", log_text());
}

/// The fields of the first `ErrorResponse` in `bytes`: (SQLSTATE, message).
fn error_fields(bytes: &[u8]) -> Option<(String, String)> {
    if bytes.first() != Some(&b'E') || bytes.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let body = bytes.get(5..1 + len)?;
    let (mut code, mut msg) = (String::new(), String::new());
    for f in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let v = String::from_utf8_lossy(&f[1..]).into_owned();
        match f[0] {
            b'C' => code = v,
            b'M' => msg = v,
            _ => {}
        }
    }
    Some((code, msg))
}

/// Startup packets PostgreSQL answers: pgveil answers them with the same
/// SQLSTATE and message (protocol 2 in protocol 2's own error form), and
/// accepts the longest startup packet PostgreSQL accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_match_postgresql() {
    let proxy = Proxy::start().await;
    let startup = |version: u32, params: &[u8]| {
        let mut p = ((8 + params.len()) as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&version.to_be_bytes());
        p.extend_from_slice(params);
        p
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("protocol 4.0", startup(4 << 16, b"user\0postgres\0\0")),
        ("protocol 9.9", startup((9 << 16) | 9, b"")),
        (
            "no terminator",
            startup(3 << 16, b"user\0postgres\0database"),
        ),
        ("unterminated value", startup(3 << 16, b"user\0post")),
    ];
    for (what, bytes) in &cases {
        let direct = answer_to(cluster().port(), bytes).await;
        let through = answer_to(proxy.port(), bytes).await;
        let d = error_fields(&direct).unwrap_or_else(|| panic!("{what}: PostgreSQL: {direct:?}"));
        assert_eq!(error_fields(&through), Some(d), "{what}");
    }
    // Protocol 2: PostgreSQL answers in protocol 2's error form, byte for
    // byte the same through pgveil.
    let v2 = startup(2 << 16, b"user\0postgres\0\0");
    let direct = answer_to(cluster().port(), &v2).await;
    let through = answer_to(proxy.port(), &v2).await;
    assert!(
        direct.starts_with(b"EFATAL:  unsupported frontend protocol 2.0"),
        "{direct:?}"
    );
    assert_eq!(through, direct);
    // The longest startup packet PostgreSQL reads (10,000 bytes after the
    // length word): both go on to authentication.
    let mut params = b"user\0postgres\0application_name\0".to_vec();
    params.resize(10_000 - 4 - 2, b'a');
    params.extend_from_slice(b"\0\0");
    let longest = startup(3 << 16, &params);
    assert_eq!(longest.len(), 10_004);
    let direct = answer_to(cluster().port(), &longest).await;
    let through = answer_to(proxy.port(), &longest).await;
    assert_eq!(
        direct.first(),
        Some(&b'R'),
        "PostgreSQL: {:?}",
        &direct[..direct.len().min(40)]
    );
    assert_eq!(through.first(), direct.first());
}

/// Bytes pipelined behind an SSLRequest (before its answer) were sent in the
/// clear: PostgreSQL answers the request, then refuses them with FATAL 08P01
/// (CVE-2021-23214) — with or without TLS on pgveil's listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_pipelined_after_an_ssl_request_is_refused() {
    let mut ssl_then_startup = 8u32.to_be_bytes().to_vec();
    ssl_then_startup.extend_from_slice(&80_877_103u32.to_be_bytes());
    ssl_then_startup.extend_from_slice(b"\0\0\0\x17\0\x03\0\0user\0postgres\0\0");
    let mut no_tls = Proxy::config();
    no_tls.tls.cert_file = None;
    no_tls.tls.key_file = None;
    for (proxy, answer) in [
        (Proxy::start().await, b'E'),
        (Proxy::start_with(no_tls).await, b'N'),
    ] {
        let got = answer_to(proxy.port(), &ssl_then_startup).await;
        // With TLS the request is refused before `S` (the bytes would
        // otherwise be read as if they came over TLS).
        let rest = if answer == b'N' {
            assert_eq!(got.first(), Some(&b'N'), "{got:?}");
            &got[1..]
        } else {
            &got[..]
        };
        let (code, msg) = error_fields(rest).unwrap_or_else(|| panic!("{got:?}"));
        assert_eq!(
            (code.as_str(), msg.as_str()),
            ("08P01", "received unencrypted data after SSL request")
        );
    }
}

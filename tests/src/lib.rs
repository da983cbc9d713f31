//! Test harness: one ephemeral PostgreSQL cluster per test binary, dev
//! certificates, an in-process pgveil per test, and client helpers.
//!
//! The cluster is real (initdb with SCRAM-SHA-256, random free port, temp
//! dir). It is shared by the tests of one binary; each test that changes data
//! uses its own database ([`fresh_database`]). Its log is printed when a
//! harness step fails, and kept (path printed) when `PGVEIL_KEEP_PG=1`.
#![forbid(unsafe_code)]

use pgveil::certs::DevCa;
use pgveil::pgtemp::{self, Cluster};
use pgveil::Config;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// Roles every cluster has, with their passwords.
pub const SCRAM_USER: (&str, &str) = ("scram_user", "scram-secret-1");
pub const MD5_USER: (&str, &str) = ("md5_user", "md5-secret-2");
pub const CLEARTEXT_USER: (&str, &str) = ("cleartext_user", "clear-secret-3");

/// The shared cluster of this test binary.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // Every statement the server receives is logged: tests grep the log
        // for canaries (the server must never see a protected value).
        let opts = pgtemp::Options {
            max_connections: 400,
            settings: vec![
                "log_statement = 'all'".into(),
                "log_min_error_statement = error".into(),
            ],
        };
        let mut c = match Cluster::start(&opts) {
            Ok(c) => c,
            Err(e) => panic!("cannot start PostgreSQL for the tests: {e}"),
        };
        if std::env::var_os("PGVEIL_KEEP_PG").is_some() {
            eprintln!("keeping PostgreSQL directory {}", c.keep().display());
        }
        let setup = format!(
            "CREATE ROLE {s} LOGIN SUPERUSER PASSWORD '{sp}';
             SET password_encryption = 'md5';
             CREATE ROLE {m} LOGIN SUPERUSER PASSWORD '{mp}';
             RESET password_encryption;
             CREATE ROLE {c} LOGIN PASSWORD '{cp}';",
            s = SCRAM_USER.0,
            sp = SCRAM_USER.1,
            m = MD5_USER.0,
            mp = MD5_USER.1,
            c = CLEARTEXT_USER.0,
            cp = CLEARTEXT_USER.1,
        );
        if let Err(e) = c.psql("postgres", &setup) {
            panic!("cluster setup failed: {e}\n{}", c.log());
        }
        // TLS on the server too, so upstream TLS modes and SCRAM-SHA-256-PLUS
        // (offered by PostgreSQL only over TLS) are exercised.
        let (cert, key) = certs()
            .ca
            .issue_pem("localhost", &["localhost", "127.0.0.1"], false, 30)
            .expect("upstream cert");
        c.enable_ssl(&cert, &key)
            .unwrap_or_else(|e| panic!("enabling ssl failed: {e}\n{}", c.log()));
        c
    })
}

/// Creates an empty database with a unique name and returns the name.
pub fn fresh_database(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    cluster()
        .psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE failed: {e}"));
    name
}

/// Development certificates shared by the tests of one binary.
pub struct TestCerts {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub ca: DevCa,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub ca_pem: String,
}

pub fn certs() -> &'static TestCerts {
    static CERTS: OnceLock<TestCerts> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pgveil-certs-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let ca = DevCa::new("pgveil test CA").expect("CA");
        let ca_path = dir.join("ca.crt");
        ca.write_cert(&ca_path).expect("write CA");
        let server = ca
            .issue(
                "localhost",
                &["localhost", "127.0.0.1"],
                false,
                30,
                &dir,
                "server",
            )
            .expect("server cert");
        let client = ca
            .issue(SCRAM_USER.0, &[SCRAM_USER.0], true, 30, &dir, "client")
            .expect("client cert");
        TestCerts {
            ca_pem: ca.cert_pem().to_string(),
            dir,
            ca_file: ca_path,
            ca,
            server_cert: server.cert,
            server_key: server.key,
            client_cert: client.cert,
            client_key: client.key,
        }
    })
}

/// A pgveil server running inside the test's runtime. Stops when dropped.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    pub config: Config,
    token: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
    /// The running state; `state.reload(config)` is what SIGHUP does.
    pub state: Arc<pgveil::server::Reloadable>,
}

impl Proxy {
    /// A config pointing at the shared cluster, TLS enabled with the test certs.
    pub fn config() -> Config {
        let certs = certs();
        let mut cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        cfg.upstream.address = cluster().address();
        cfg.tls.cert_file = Some(certs.server_cert.clone());
        cfg.tls.key_file = Some(certs.server_key.clone());
        cfg.handshake_timeout_secs = 5;
        cfg.admin.enabled = false;
        cfg.shutdown_timeout_secs = 2;
        cfg
    }

    /// Starts pgveil with the default test config.
    pub async fn start() -> Proxy {
        Self::start_with(Self::config()).await
    }

    /// Starts pgveil and its admin listener; returns the admin address too.
    pub async fn start_with_admin(mut config: Config) -> (Proxy, std::net::SocketAddr) {
        config.admin.enabled = true;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let admin_addr = admin.local_addr().unwrap();
        let proxy = Self::start_with(config).await;
        tokio::spawn(pgveil::admin::serve(
            admin,
            proxy.state.clone(),
            proxy.token.clone(),
        ));
        (proxy, admin_addr)
    }

    pub async fn start_with(config: Config) -> Proxy {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let state = pgveil::server::Reloadable::new(
            pgveil::server::Shared::new(config.clone()).expect("valid config"),
        );
        let handle = tokio::spawn(pgveil::server::serve(
            listener,
            state.clone(),
            token.clone(),
        ));
        Proxy {
            addr,
            config,
            token,
            handle: Some(handle),
            state,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A libpq URL through the proxy.
    pub fn url(&self, user: (&str, &str), database: &str, sslmode: &str) -> String {
        format!(
            "postgres://{}:{}@localhost:{}/{database}?sslmode={sslmode}&sslrootcert={}",
            user.0,
            user.1,
            self.port(),
            certs().ca_file.display()
        )
    }

    /// A tokio-postgres config through the proxy.
    pub fn pg_config(&self, database: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("localhost")
            .port(self.port())
            .user(SCRAM_USER.0)
            .password(SCRAM_USER.1)
            .dbname(database);
        c
    }

    /// Cancels the server and waits for it to finish its graceful shutdown.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// tokio-postgres config straight to the cluster.
pub fn direct_config(database: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(cluster().port())
        .user(SCRAM_USER.0)
        .password(SCRAM_USER.1)
        .dbname(database)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    c
}

/// A rustls client config trusting the test CA.
pub fn client_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in pgveil::tls::load_certs(&certs().ca_file).expect("CA") {
        roots.add(c).expect("add CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Connects with tokio-postgres over TLS (verify-full against the test CA).
pub async fn connect_tls(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let mut config = config.clone();
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls());
    let (client, conn) = config.connect(tls).await.expect("connect over TLS");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Connects with tokio-postgres without TLS.
pub async fn connect_plain(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let mut config = config.clone();
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect without TLS");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Finds a PostgreSQL client program (psql, pgbench, pg_dump) next to the
/// server binaries or on PATH.
pub fn pg_program(name: &str) -> PathBuf {
    let in_bindir = cluster().bindir().join(name);
    if in_bindir.is_file() {
        return in_bindir;
    }
    PathBuf::from(name)
}

/// Runs psql with `args`, connection given as a URL; returns its output.
pub fn psql(url: &str, args: &[&str]) -> Output {
    Command::new(pg_program("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(args)
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

/// stdout of a successful command, or a panic with its stderr.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path helper for files written by tests.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("pgveil-test-")
            .tempdir()
            .expect("tempdir")
            .keep()
    })
}

/// A plain HTTP/1.0 GET: (status, body). HTTP/1.0 so that any server (the
/// admin listener, Prometheus) closes the connection and never chunks.
pub async fn try_http_get(
    addr: std::net::SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// [`try_http_get`] that panics on I/O errors.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).await.expect("HTTP GET")
}

/// The `pgveil` binary of this build (cargo is asked to build it: a no-op
/// when it is current, so a test never runs a stale binary).
pub fn pgveil_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let mut c = Command::new(env!("CARGO"));
    c.args(["build", "-q", "-p", "pgveil", "--bin", "pgveil"]);
    if dir.ends_with("release") {
        c.arg("--release");
    }
    assert!(c.status().unwrap().success(), "building pgveil failed");
    dir.join("pgveil")
}

/// The clinic example policy (the product's reference policy).
pub const CLINIC_POLICY: &str = include_str!("../../config/clinic.example.toml");

/// A database with the clinic schema as the policy's DDL stores it
/// (protected columns as text/bytea ciphertext), for use through pgveil.
pub fn clinic_database(prefix: &str) -> String {
    let db = fresh_database(prefix);
    cluster()
        .psql(&db, &pgveil::demo::policy_ddl(CLINIC_POLICY))
        .unwrap_or_else(|e| panic!("clinic DDL failed: {e}"));
    db
}

/// A plaintext copy of the clinic schema with every protected column in
/// its logical type, for differential tests run directly on PostgreSQL.
pub fn plain_clinic_database(prefix: &str) -> String {
    let db = clinic_database(prefix);
    let policy = pgveil_policy::Policy::from_toml_str(CLINIC_POLICY, "clinic").expect("policy");
    let mut sql = String::new();
    for c in policy.columns() {
        let ty = c.type_spec().to_string();
        sql.push_str(&format!(
            "ALTER TABLE {}.{} ALTER COLUMN {} TYPE {ty} USING NULL;\n",
            c.column.schema.quoted(),
            c.column.table.quoted(),
            c.column.column.quoted()
        ));
    }
    cluster()
        .psql(&db, &sql)
        .unwrap_or_else(|e| panic!("plaintext schema failed: {e}"));
    db
}

/// Starts pgveil with the clinic policy and freshly generated keys in `dir`.
pub async fn clinic_proxy(dir: &Path) -> Proxy {
    Proxy::start_with(clinic_config(dir)).await
}

/// The test config with the clinic policy and fresh keys in `dir`.
pub fn clinic_config(dir: &Path) -> Config {
    std::fs::write(dir.join("clinic.toml"), CLINIC_POLICY).expect("write policy");
    let mut cfg = Proxy::config();
    cfg.base_dir = dir.to_path_buf();
    cfg.policy.file = Some("clinic.toml".into());
    pgveil::keys::init(&cfg, &mut Vec::new()).expect("keys init");
    cfg
}

/// A parameter or result value as raw wire bytes in binary format, of any
/// type: lets a test bind and compare exactly what a binary client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBinary(pub Option<Vec<u8>>);

impl tokio_postgres::types::ToSql for RawBinary {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(tokio_postgres::types::IsNull::No)
            }
            None => Ok(tokio_postgres::types::IsNull::Yes),
        }
    }
    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }
    tokio_postgres::types::to_sql_checked!();
}

impl<'a> tokio_postgres::types::FromSql<'a> for RawBinary {
    fn from_sql(
        _ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawBinary(Some(raw.to_vec())))
    }
    fn from_sql_null(
        _ty: &tokio_postgres::types::Type,
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawBinary(None))
    }
    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// Every protected value stored in `db` is NULL or an envelope, and no
/// canary appears anywhere (read directly, bypassing pgveil).
pub fn assert_only_ciphertext(db: &str) {
    let policy = pgveil_policy::Policy::from_toml_str(CLINIC_POLICY, "clinic").expect("policy");
    for c in policy.columns() {
        let sql = format!(
            "SELECT count(*) FROM {t} WHERE {col} IS NOT NULL AND NOT \
             (CASE WHEN pg_typeof({col}) = 'bytea'::regtype THEN get_byte({col}::text::bytea, 0) IN (17, 18) \
              ELSE {col}::text LIKE 'pgv1:%' END)",
            t = c.column.table_ref(),
            col = c.column.column.quoted()
        );
        let n = cluster().psql(db, &sql).unwrap();
        assert_eq!(n.trim(), "0", "{}: plaintext stored", c.column);
    }
    let dump = std::process::Command::new(pg_program("pg_dump"))
        .arg(cluster().url(db))
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = without_ciphertext(&String::from_utf8_lossy(&dump.stdout));
    assert!(dump.contains("pgv1:"), "dump holds the ciphertext");
    for canary in ["canary", "43414e415259", "zoë", "123-45-6789", "1990-01-02"] {
        if let Some(at) = dump.find(canary) {
            let start = dump[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = dump[at..].find('\n').map_or(dump.len(), |i| at + i);
            panic!("pg_dump output contains {canary:?}: {}", &dump[start..end]);
        }
    }
}

/// `text` lower-cased with the payload of every `pgv1:` base64 and `\\x11…`
/// / `\\x12…` hex envelope blanked: random ciphertext can spell a canary.
pub fn without_ciphertext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let base64 = b[i..].starts_with(b"pgv1:");
        // (Only envelope-shaped hex: format byte 0x11 or 0x12.)
        let hex = b[i..].starts_with(b"\\x11") || b[i..].starts_with(b"\\x12");
        if base64 || hex {
            let (skip, ok): (usize, fn(&u8) -> bool) = if base64 {
                (5, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
                })
            } else {
                (2, u8::is_ascii_hexdigit)
            };
            out.push_str(if base64 { "pgv1:" } else { "\\x" });
            i += skip;
            while i < b.len() && ok(&b[i]) {
                i += 1;
            }
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.extend(c.to_lowercase());
        i += c.len_utf8();
    }
    out
}

/// Text rows of a simple query.
pub async fn simple_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for m in c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    out
}

/// A client speaking the wire protocol message by message (no driver in
/// between), for pipelines and statement-name sequences drivers never send.
/// Logs in as [`CLEARTEXT_USER`] over plain TCP.
pub struct RawClient {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    reader: pgveil_wire::FrameReader,
    /// The `BackendKeyData` of the login: process id and secret.
    pub key: Option<(u32, bytes::Bytes)>,
}

/// One server message as the raw client saw it.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub tag: u8,
    pub body: bytes::Bytes,
}

impl RawMessage {
    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        if self.tag != b'E' {
            return None;
        }
        let e = pgveil_wire::backend::ErrorFields::decode_body(&self.body).ok()?;
        e.code().map(|c| String::from_utf8_lossy(c).into_owned())
    }

    /// The message text of an ErrorResponse.
    pub fn message(&self) -> String {
        pgveil_wire::backend::ErrorFields::decode_body(&self.body)
            .ok()
            .and_then(|e| e.get(b'M').map(|m| String::from_utf8_lossy(m).into_owned()))
            .unwrap_or_default()
    }
}

impl RawClient {
    /// Connects to pgveil at `port` and authenticates.
    pub async fn connect(port: u16, database: &str) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut c = RawClient {
            stream,
            buf: bytes::BytesMut::new(),
            reader: pgveil_wire::FrameReader::new(1 << 26),
            key: None,
        };
        let startup = pgveil_wire::startup::StartupMessage {
            protocol: 196_608,
            params: vec![
                ("user".into(), CLEARTEXT_USER.0.into()),
                ("database".into(), database.into()),
            ],
        };
        c.stream.write_all(&startup.encode()).await.unwrap();
        let auth = c.next().await;
        assert_eq!(auth.tag, b'R', "authentication request: {auth:?}");
        let mut pw = CLEARTEXT_USER.1.as_bytes().to_vec();
        pw.push(0);
        c.send(&[pgveil_wire::Frame::new(b'p', &pw)]).await;
        let msgs = c.until_ready().await;
        assert!(
            msgs.iter().all(|m| m.tag != b'E'),
            "login failed: {:?}",
            msgs.iter().map(RawMessage::message).collect::<Vec<_>>()
        );
        c.key = msgs.iter().find(|m| m.tag == b'K').map(|m| {
            let pid = u32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
            (pid, m.body.slice(4..))
        });
        c
    }

    /// Sends frames in one write.
    pub async fn send(&mut self, frames: &[pgveil_wire::Frame]) {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(f.raw());
        }
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next server message (10 s limit).
    pub async fn next(&mut self) -> RawMessage {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(f) = self.reader.parse(&mut self.buf).expect("framing") {
                return RawMessage {
                    tag: f.tag(),
                    body: f.body_bytes(),
                };
            }
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .expect("server answered in time")
            .expect("read");
            assert!(n > 0, "connection closed");
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<RawMessage> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// A simple query; the messages up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Vec<RawMessage> {
        self.send(&[pgveil_wire::frontend::query(sql.as_bytes())])
            .await;
        self.until_ready().await
    }
}

/// Frame builders for [`RawClient`] pipelines.
pub mod raw {
    use bytes::Bytes;
    use pgveil_wire::frontend::{self, Format, Target};
    use pgveil_wire::Frame;

    pub fn parse(name: &str, sql: &str) -> Frame {
        frontend::Parse {
            name: Bytes::copy_from_slice(name.as_bytes()),
            query: Bytes::copy_from_slice(sql.as_bytes()),
            param_types: Vec::new(),
        }
        .encode()
    }

    /// Bind with text parameters (`None` = NULL), text results.
    pub fn bind(portal: &str, statement: &str, params: &[Option<&str>]) -> Frame {
        frontend::Bind {
            portal: Bytes::copy_from_slice(portal.as_bytes()),
            statement: Bytes::copy_from_slice(statement.as_bytes()),
            param_formats: vec![Format::Text],
            params: params
                .iter()
                .map(|p| p.map(|v| Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            result_formats: vec![Format::Text],
        }
        .encode()
    }

    pub fn execute(portal: &str) -> Frame {
        frontend::Execute {
            portal: Bytes::copy_from_slice(portal.as_bytes()),
            max_rows: 0,
        }
        .encode()
    }

    pub fn describe_statement(name: &str) -> Frame {
        frontend::Describe {
            target: Target::Statement,
            name: Bytes::copy_from_slice(name.as_bytes()),
        }
        .encode()
    }

    pub fn close_statement(name: &str) -> Frame {
        frontend::Close {
            target: Target::Statement,
            name: Bytes::copy_from_slice(name.as_bytes()),
        }
        .encode()
    }

    pub fn close_portal(name: &str) -> Frame {
        frontend::Close {
            target: Target::Portal,
            name: Bytes::copy_from_slice(name.as_bytes()),
        }
        .encode()
    }

    pub fn sync() -> Frame {
        Frame::new(b'S', &[])
    }

    pub fn flush() -> Frame {
        Frame::new(b'H', &[])
    }
}

/// The server log (every statement, `log_statement = all`) holds none of
/// these markers.
pub fn assert_server_log_lacks(markers: &[&str]) {
    let log = cluster().log();
    assert!(
        log.contains("statement:"),
        "the server log records statements"
    );
    for m in markers {
        if let Some(at) = log.find(m) {
            let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!("server log contains {m:?}: {}", &log[start..end]);
        }
    }
}

/// A clinic database reachable by [`RawClient`] (privileges for
/// [`CLEARTEXT_USER`]).
pub fn clinic_database_for_raw(prefix: &str) -> String {
    let db = clinic_database(prefix);
    cluster()
        .psql(
            &db,
            &format!(
                "GRANT ALL ON ALL TABLES IN SCHEMA public TO {u}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {u};",
                u = CLEARTEXT_USER.0
            ),
        )
        .unwrap();
    db
}

/// The fuzzers' deterministic generator (xorshift64*): a seed replays a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `v`.
    pub fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// An in-memory log sink for `tracing_subscriber` (tests that read what
/// pgveil logged).
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

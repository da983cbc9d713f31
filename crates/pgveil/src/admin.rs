//! The admin listener: `GET /metrics` (Prometheus text format), `GET /healthz`
//! (process alive) and `GET /readyz` (configuration loaded and upstream
//! reachable; 503 with a JSON reason otherwise).
//!
//! A deliberately tiny HTTP/1.1 responder: one request per connection, the
//! request head capped at 8 KiB, no bodies accepted.

use crate::server::{Reloadable, Shared};
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Metric families. Label values are bounded sets chosen by pgveil, never
/// derived from SQL text, values or client addresses.
pub struct Metrics {
    pub registry: Registry,
    pub connections_active: IntGauge,
    pub connections_total: IntCounter,
    refused: IntCounterVec,
    pub upstream_connect_errors: IntCounter,
    tls_handshakes: IntCounterVec,
    pub bytes_from_clients: IntCounter,
    pub bytes_from_server: IntCounter,
    pub cert_expiry: IntGaugeVec,
    refused_statements: IntCounterVec,
    reloads: IntCounterVec,
    pub key_age: prometheus::GaugeVec,
    /// Audit records written since start, and whether the writer is failing.
    pub audit_records: IntGauge,
    pub audit_failing: IntGauge,
    pub rotation_period: Gauge,
    /// `[protocol][kind][path]`, resolved once so observing costs no lookup.
    statement_duration: Vec<prometheus::Histogram>,
    pub proxy_time: prometheus::Histogram,
    /// Per protected column; shared with every engine (survive reloads).
    columns: std::sync::Mutex<std::collections::BTreeMap<String, Arc<pgveil_rewrite::ColumnStats>>>,
    crypto_values: IntCounterVec,
    crypto_errors: IntCounterVec,
    key_encryptions: IntCounterVec,
}

/// Statement protocol, kind and path: the labels of the duration histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
}

pub use pgveil_sql::StatementKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatementPath {
    #[default]
    Passthrough,
    Rewritten,
    Refused,
}

const PROTOCOLS: [&str; 2] = ["simple", "extended"];
const KINDS: [&str; 6] = ["select", "insert", "update", "delete", "copy", "other"];
const PATHS: [&str; 3] = ["passthrough", "rewritten", "refused"];

/// Buckets from 50 µs to 10 s: fine enough for sub-millisecond statements.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets for time spent inside pgveil per batch: 1 µs to 100 ms.
const PROXY_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.01, 0.1,
];

/// The kind of a statement from its first keyword (comments skipped), for
/// the duration histogram; no parsing.
pub fn statement_kind(sql: &[u8]) -> StatementKind {
    let mut s = sql;
    loop {
        while let Some((c, rest)) = s.split_first() {
            if c.is_ascii_whitespace() || *c == b'(' {
                s = rest;
            } else {
                break;
            }
        }
        if s.starts_with(b"--") {
            s = s
                .iter()
                .position(|&b| b == b'\n')
                .map_or(&[][..], |i| &s[i..]);
        } else if s.starts_with(b"/*") {
            s = s
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(&[][..], |i| &s[i + 2..]);
        } else {
            break;
        }
    }
    let end = s
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let word = &s[..end];
    let is = |k: &str| word.eq_ignore_ascii_case(k.as_bytes());
    if is("select") || is("table") || is("values") {
        StatementKind::Select
    } else if is("insert") {
        StatementKind::Insert
    } else if is("update") {
        StatementKind::Update
    } else if is("delete") {
        StatementKind::Delete
    } else if is("copy") {
        StatementKind::Copy
    } else {
        StatementKind::Other
    }
}

/// Position of `kind` in [`KINDS`] (explicit: the enum is another crate's).
fn kind_index(kind: StatementKind) -> usize {
    match kind {
        StatementKind::Select => 0,
        StatementKind::Insert => 1,
        StatementKind::Update => 2,
        StatementKind::Delete => 3,
        StatementKind::Copy => 4,
        StatementKind::Other => 5,
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let build = IntGaugeVec::new(
            Opts::new("pgveil_build_info", "pgveil build; the value is always 1"),
            &["version"],
        )
        .expect("valid");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        reg(Box::new(build));
        let connections_active = IntGauge::new(
            "pgveil_client_connections_active",
            "Client sessions currently open (after startup)",
        )
        .expect("valid");
        reg(Box::new(connections_active.clone()));
        let connections_total = IntCounter::new(
            "pgveil_client_connections_total",
            "Client sessions opened (after startup)",
        )
        .expect("valid");
        reg(Box::new(connections_total.clone()));
        let refused = IntCounterVec::new(
            Opts::new(
                "pgveil_connections_refused_total",
                "Client connections refused, by reason",
            ),
            &["reason"],
        )
        .expect("valid");
        reg(Box::new(refused.clone()));
        let upstream_connect_errors = IntCounter::new(
            "pgveil_upstream_connect_errors_total",
            "Failed connections to the upstream PostgreSQL",
        )
        .expect("valid");
        reg(Box::new(upstream_connect_errors.clone()));
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "pgveil_tls_handshakes_total",
                "Client TLS handshakes by protocol version and result",
            ),
            &["version", "result"],
        )
        .expect("valid");
        reg(Box::new(tls_handshakes.clone()));
        let bytes = IntCounterVec::new(
            Opts::new("pgveil_bytes_total", "Protocol bytes relayed, by direction"),
            &["direction"],
        )
        .expect("valid");
        reg(Box::new(bytes.clone()));
        let refused_statements = IntCounterVec::new(
            Opts::new(
                "pgveil_refused_statements_total",
                "Statements refused (fail closed), by reason",
            ),
            &["reason"],
        )
        .expect("valid");
        reg(Box::new(refused_statements.clone()));
        let reloads = IntCounterVec::new(
            Opts::new(
                "pgveil_config_reloads_total",
                "Configuration reloads (SIGHUP), by result",
            ),
            &["result"],
        )
        .expect("valid");
        reg(Box::new(reloads.clone()));
        let cert_expiry = IntGaugeVec::new(
            Opts::new(
                "pgveil_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate pgveil serves (unix seconds)",
            ),
            &["certificate"],
        )
        .expect("valid");
        reg(Box::new(cert_expiry.clone()));
        let key_age = prometheus::GaugeVec::new(
            Opts::new(
                "pgveil_key_age_seconds",
                "Age of every active data key and of the KEK",
            ),
            &["key_id", "column"],
        )
        .expect("valid");
        reg(Box::new(key_age.clone()));
        let audit_records = IntGauge::new(
            "pgveil_audit_records_written",
            "Audit records written (and fsynced) since pgveil started",
        )
        .expect("valid");
        reg(Box::new(audit_records.clone()));
        let audit_failing = IntGauge::new(
            "pgveil_audit_failing",
            "1 while the audit log cannot be written (records queue; with on_failure = refuse, statements on protected columns are refused)",
        )
        .expect("valid");
        reg(Box::new(audit_failing.clone()));
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "pgveil_statement_duration_seconds",
                "From the client's statement (Query, or the batch up to Sync) to PostgreSQL's ReadyForQuery",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["protocol", "kind", "path"],
        )
        .expect("valid");
        reg(Box::new(duration.clone()));
        let mut statement_duration = Vec::with_capacity(36);
        for p in PROTOCOLS {
            for k in KINDS {
                for path in PATHS {
                    statement_duration.push(duration.with_label_values(&[p, k, path]));
                }
            }
        }
        let proxy_time = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "pgveil_proxy_time_seconds",
                "Time spent inside pgveil per relayed batch of messages (framing, checks, rewriting, crypto)",
            )
            .buckets(PROXY_BUCKETS.to_vec()),
        )
        .expect("valid");
        reg(Box::new(proxy_time.clone()));
        let rotation_period = Gauge::new(
            "pgveil_key_rotation_period_seconds",
            "Configured key rotation period, for alerting on key age",
        )
        .expect("valid");
        reg(Box::new(rotation_period.clone()));
        let crypto_values = IntCounterVec::new(
            Opts::new(
                "pgveil_crypto_values_total",
                "Protected values encrypted (on the way in) and decrypted (on the way out), by column",
            ),
            &["table", "column", "operation"],
        )
        .expect("valid");
        reg(Box::new(crypto_values.clone()));
        let crypto_errors = IntCounterVec::new(
            Opts::new(
                "pgveil_crypto_errors_total",
                "Protected values that failed to decrypt (tampered, foreign or plaintext) or to encrypt, by column",
            ),
            &["table", "column"],
        )
        .expect("valid");
        reg(Box::new(crypto_errors.clone()));
        let key_encryptions = IntCounterVec::new(
            Opts::new(
                "pgveil_key_encryptions_total",
                "Values encrypted with each data key version by this process",
            ),
            &["key_id"],
        )
        .expect("valid");
        reg(Box::new(key_encryptions.clone()));
        // Known label values start at 0 so rate() sees the first event.
        for r in ["tls_required", "too_many_connections"] {
            refused.with_label_values(&[r]);
        }
        for r in ["unsupported_statement", "invalid_value", "not_in_catalog"] {
            refused_statements.with_label_values(&[r]);
        }
        for v in ["TLSv1.2", "TLSv1.3"] {
            tls_handshakes.with_label_values(&[v, "ok"]);
        }
        tls_handshakes.with_label_values(&["unknown", "error"]);
        for r in ["success", "error"] {
            reloads.with_label_values(&[r]);
        }
        Self {
            registry,
            connections_active,
            connections_total,
            refused,
            upstream_connect_errors,
            tls_handshakes,
            bytes_from_clients: bytes.with_label_values(&["client_to_server"]),
            bytes_from_server: bytes.with_label_values(&["server_to_client"]),
            cert_expiry,
            refused_statements,
            reloads,
            key_age,
            audit_records,
            audit_failing,
            rotation_period,
            statement_duration,
            proxy_time,
            columns: Default::default(),
            crypto_values,
            crypto_errors,
            key_encryptions,
        }
    }

    /// The counters of one protected column (created on first use).
    pub fn column_stats(
        &self,
        column: &pgveil_policy::ColumnRef,
    ) -> Arc<pgveil_rewrite::ColumnStats> {
        let mut map = self.columns.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(column.to_string()).or_default().clone()
    }

    /// Copies the engines' atomic counters into the Prometheus families
    /// (at scrape time: the hot path only increments atomics).
    fn refresh_crypto(&self, engine: Option<&pgveil_rewrite::Engine>) {
        use std::sync::atomic::Ordering::Relaxed;
        fn catch_up(c: &prometheus::IntCounter, value: u64) {
            let current = c.get();
            if value > current {
                c.inc_by(value - current);
            }
        }
        let map = self.columns.lock().unwrap_or_else(|e| e.into_inner());
        for (name, stats) in map.iter() {
            let (table, column) = name.rsplit_once('.').unwrap_or(("", name));
            catch_up(
                &self
                    .crypto_values
                    .with_label_values(&[table, column, "encrypt"]),
                stats.encrypted.load(Relaxed),
            );
            catch_up(
                &self
                    .crypto_values
                    .with_label_values(&[table, column, "decrypt"]),
                stats.decrypted.load(Relaxed),
            );
            catch_up(
                &self.crypto_errors.with_label_values(&[table, column]),
                stats.errors.load(Relaxed),
            );
        }
        if let Some(engine) = engine {
            for (name, version, count) in engine.key_encryptions() {
                let id = format!("{name}/v{version}");
                catch_up(&self.key_encryptions.with_label_values(&[&id]), count);
            }
        }
    }

    pub fn observe_statement(
        &self,
        protocol: Protocol,
        kind: StatementKind,
        path: StatementPath,
        seconds: f64,
    ) {
        let i = (protocol as usize * KINDS.len() + kind_index(kind)) * PATHS.len() + path as usize;
        self.statement_duration[i].observe(seconds);
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn config_reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "error" }])
            .inc();
    }

    pub fn refused_statement(&self, reason: &'static str) {
        self.refused_statements.with_label_values(&[reason]).inc();
    }

    pub fn tls_handshake(&self, version: &'static str, ok: bool) {
        self.tls_handshakes
            .with_label_values(&[version, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements the active-connection gauge when a session ends, however it ends.
pub struct ConnectionGuard(IntGauge);

impl ConnectionGuard {
    pub fn new(m: &Metrics) -> Self {
        m.connections_active.inc();
        m.connections_total.inc();
        Self(m.connections_active.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `notAfter` of the first certificate in a PEM file, in unix seconds.
pub fn certificate_expiry(path: &std::path::Path) -> Option<i64> {
    use x509_cert::der::Decode;
    let certs = crate::tls::load_certs(path).ok()?;
    let cert = x509_cert::Certificate::from_der(certs.first()?.as_ref()).ok()?;
    let t = cert.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(t.as_secs()).ok()
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<Reloadable>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = state.current();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), respond(stream, &shared)).await;
        });
    }
}

async fn respond(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            return reply(&mut stream, 431, "text/plain", "request header too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    if method != b"GET" {
        return reply(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        b"/metrics" => {
            refresh_gauges(shared);
            let body = shared.metrics.render();
            reply(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        b"/healthz" => reply(&mut stream, 200, "text/plain", "ok\n").await,
        b"/readyz" => match readiness(shared).await {
            Ok(()) => reply(&mut stream, 200, "application/json", "{\"ready\":true}\n").await,
            Err(reason) => {
                let body = format!("{{\"ready\":false,\"reason\":{}}}\n", json_string(&reason));
                reply(&mut stream, 503, "application/json", &body).await
            }
        },
        _ => reply(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

/// Values computed at scrape time (ages grow between scrapes).
fn refresh_gauges(shared: &Shared) {
    shared.metrics.refresh_crypto(shared.engine.as_deref());
    if let Some(a) = &shared.audit {
        shared.metrics.audit_records.set(a.written() as i64);
        shared.metrics.audit_failing.set(i64::from(a.failing()));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    for k in shared.key_ages.iter() {
        shared
            .metrics
            .key_age
            .with_label_values(&[&k.key_id, &k.column])
            .set((now - k.created_at as f64).max(0.0));
    }
}

async fn readiness(shared: &Shared) -> Result<(), String> {
    let addr = &shared.config.upstream.address;
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("upstream {addr} unreachable: {e}")),
        Err(_) => Err(format!("upstream {addr} unreachable: timeout")),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn reply(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

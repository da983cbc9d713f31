//! The Prometheus side of the observability assets, with the real tools:
//! `promtool` checks the shipped rules and config and lints a real scrape, and
//! a real `prometheus` server scrapes a running pgveil and answers queries.
//!
//! `tests/install-prometheus.sh` installs both tools (apt) when missing.

use pgveil_tests::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");

/// Runs tests/install-prometheus.sh once per test binary.
fn ensure_prometheus() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/install-prometheus.sh");
        let out = Command::new("bash")
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{script} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn deploy(file: &str) -> PathBuf {
    Path::new(DEPLOY).join(file)
}

/// Asserts that a command succeeded, showing its output otherwise.
fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input.as_bytes()).expect("write promtool stdin");
    }
    child.wait_with_output().expect("wait for promtool")
}

#[test]
fn alert_rules_pass_promtool() {
    ensure_prometheus();
    let rules = deploy("alerts.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert_ok("promtool check rules", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SUCCESS: 7 rules found"), "{stdout}");

    // Behaviour of every alert on synthetic series (deploy/prometheus/alerts.test.yml).
    let tests = deploy("alerts.test.yml");
    let out = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert_ok("promtool test rules", &out);

    // The example config as shipped: promtool (like Prometheus) resolves
    // rule_files relative to the config file, so the check does not depend on
    // the working directory and also covers alerts.yml.
    let config = deploy("prometheus.yml");
    let out = Command::new("promtool")
        .args(["check", "config", config.to_str().unwrap()])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run promtool");
    assert_ok("promtool check config", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SUCCESS: 1 rule files found"), "{stdout}");
}

/// A scrape of pgveil after a workload.
async fn scrape_after_workload() -> String {
    let (proxy, admin) = Proxy::start_with_admin(Proxy::config()).await;
    for _ in 0..2 {
        let c = connect_tls(&proxy.pg_config("postgres")).await;
        c.simple_query("SELECT 1").await.unwrap();
        c.query("SELECT $1::text", &[&"x"]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_scrape_passes_promtool_check_metrics() {
    tokio::task::spawn_blocking(ensure_prometheus)
        .await
        .unwrap();
    let body = scrape_after_workload().await;
    assert!(body.contains("pgveil_client_connections_total 2"), "{body}");
    let out = tokio::task::spawn_blocking(move || {
        let out = promtool(&["check", "metrics"], Some(&body));
        (out, body)
    })
    .await
    .unwrap();
    let (out, body) = out;
    // promtool exits 1 on a format error and 3 on lint problems (naming,
    // units, missing HELP); both fail this test, with promtool's findings.
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\nscrape:\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `prometheus` server process, killed (and its data removed) on drop.
struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `target` (job "pgveil") every second and
    /// evaluating the shipped alert rules; waits until its API answers.
    async fn start(target: SocketAddr) -> PrometheusServer {
        let dir = tempfile::Builder::new()
            .prefix("pgveil-prometheus-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{rules}'\n\
                 scrape_configs:\n  - job_name: pgveil\n    static_configs:\n      - targets: ['{target}']\n",
                rules = deploy("alerts.yml").display()
            ),
        )
        .unwrap();
        let port = pgveil::pgtemp::free_port().expect("free port");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut server = PrometheusServer {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", server.log());
            }
            if let Ok(Ok((200, _))) = tokio::time::timeout(
                Duration::from_secs(2),
                try_http_get(server.addr, "/-/ready"),
            )
            .await
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 20 s:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=…`: the raw JSON answer.
    async fn query(&self, promql: &str) -> String {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = try_http_get(self.addr, &path)
            .await
            .expect("prometheus API");
        assert_eq!(status, 200, "{promql}: {body}");
        assert!(body.contains("\"status\":\"success\""), "{body}");
        body
    }

    /// Polls an instant query until it returns at least one series; returns
    /// the (labels JSON, value) of each.
    async fn wait_for(&self, promql: &str, timeout: Duration) -> Vec<(String, f64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let series = vector(&self.query(promql).await);
            if !series.is_empty() {
                return series;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {promql} after {timeout:?}\ntargets: {}\nlog:\n{}",
                try_http_get(self.addr, "/api/v1/targets")
                    .await
                    .map(|r| r.1)
                    .unwrap_or_default(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The series of an instant-vector answer:
/// `{"metric":{…},"value":[<ts>,"<value>"]}` → (`{…}`, value).
fn vector(json: &str) -> Vec<(String, f64)> {
    assert!(json.contains("\"resultType\":\"vector\""), "{json}");
    json.split("{\"metric\":")
        .skip(1)
        .map(|item| {
            let (labels, rest) = item
                .split_once(",\"value\":[")
                .unwrap_or_else(|| panic!("unexpected answer: {json}"));
            let value = rest
                .split_once(",\"")
                .and_then(|(_, v)| v.split_once('"'))
                .map(|(v, _)| v)
                .unwrap_or_else(|| panic!("unexpected answer: {json}"));
            (
                labels.to_string(),
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("value {value:?} in {json}")),
            )
        })
        .collect()
}

fn only(series: &[(String, f64)], promql: &str) -> f64 {
    assert_eq!(series.len(), 1, "{promql}: {series:?}");
    series[0].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_server_scrapes_pgveil() {
    tokio::task::spawn_blocking(ensure_prometheus)
        .await
        .unwrap();
    let (proxy, admin) = Proxy::start_with_admin(Proxy::config()).await;
    for _ in 0..2 {
        let c = connect_tls(&proxy.pg_config("postgres")).await;
        c.simple_query("SELECT 1").await.unwrap();
    }
    let prom = PrometheusServer::start(admin).await;
    let t = Duration::from_secs(30);

    let q = "up{job=\"pgveil\"}";
    assert_eq!(only(&prom.wait_for(q, t).await, q), 1.0);
    let q = "pgveil_build_info{job=\"pgveil\"}";
    let build = prom.wait_for(q, t).await;
    assert_eq!(only(&build, q), 1.0);
    assert!(
        build[0]
            .0
            .contains(&format!("\"version\":\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build:?}"
    );
    let q = "pgveil_client_connections_total{job=\"pgveil\"}";
    assert_eq!(only(&prom.wait_for(q, t).await, q), 2.0);
    let q = "pgveil_tls_handshakes_total{job=\"pgveil\",result=\"ok\",version=\"TLSv1.3\"}";
    assert_eq!(only(&prom.wait_for(q, t).await, q), 2.0);
    // Without a policy there are no key series, only the rotation period.
    let q = "pgveil_key_rotation_period_seconds";
    assert_eq!(only(&prom.wait_for(q, t).await, q), 90.0 * 86_400.0);
    assert!(vector(&prom.query("pgveil_key_age_seconds").await).is_empty());

    // The shipped rules load and evaluate against real series without errors.
    let deadline = Instant::now() + t;
    loop {
        let (status, rules) = try_http_get(prom.addr, "/api/v1/rules").await.unwrap();
        assert_eq!(status, 200, "{rules}");
        assert!(!rules.contains("\"health\":\"err\""), "{rules}");
        let evaluated = rules.matches("\"health\":\"ok\"").count();
        if evaluated >= 7 {
            break;
        }
        assert!(Instant::now() < deadline, "rules not evaluated: {rules}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Every query of the Grafana dashboard parses and runs against this
    // server ($job, $instance and $__rate_interval substituted).
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 12, "{exprs:?}");
    for e in &exprs {
        let q = e
            .replace("$job", "pgveil")
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m");
        let path = format!("/api/v1/query?query={}", url_encode(&q));
        let (status, body) = try_http_get(prom.addr, &path).await.unwrap();
        assert_eq!(status, 200, "dashboard query {q}: {body}");
    }
    let days = exprs
        .iter()
        .find(|e| e.contains("pgveil_tls_certificate_expiry_timestamp_seconds"))
        .expect("certificate panel")
        .replace("$job", "pgveil")
        .replace("$instance", ".*");
    let left = only(&prom.wait_for(&days, t).await, &days);
    assert!(
        (29.0..=30.0).contains(&left),
        "certificate days left {left}"
    );
    drop(prom);
    proxy.shutdown().await;
}

/// The PromQL expressions of deploy/grafana/pgveil.json (`"expr": "…"`).
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/pgveil.json");
    let json = std::fs::read_to_string(path).expect("read dashboard");
    assert!(json.contains("\"schemaVersion\": 39"), "schemaVersion");
    assert!(
        json.contains("\"uid\": \"${DS_PROMETHEUS}\""),
        "datasource input"
    );
    json.split("\"expr\": \"")
        .skip(1)
        .map(|rest| {
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => out.push(chars.next().expect("escape")),
                    c => out.push(c),
                }
            }
            out
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_key_ages_with_a_policy() {
    tokio::task::spawn_blocking(ensure_prometheus)
        .await
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("pgveil-keys-")
        .tempdir()
        .expect("tempdir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config/clinic.example.toml"),
        dir.path().join("clinic.toml"),
    )
    .expect("copy policy");
    let mut cfg = Proxy::config();
    cfg.base_dir = dir.path().to_path_buf();
    cfg.policy.file = Some("clinic.toml".into());
    // Rotation overdue from the start, so the shipped alert must match the
    // real series (pending: it has `for: 1h`).
    cfg.keys.rotation_period_days = 0;
    pgveil::keys::init(&cfg, &mut Vec::new()).expect("keys init");
    let (proxy, admin) = Proxy::start_with_admin(cfg).await;
    let prom = PrometheusServer::start(admin).await;
    let t = Duration::from_secs(30);

    let q = "pgveil_key_age_seconds{job=\"pgveil\",column=\"kek\"}";
    let kek_age = only(&prom.wait_for(q, t).await, q);
    assert!((0.0..600.0).contains(&kek_age), "KEK age {kek_age}");
    let ages = prom
        .wait_for("pgveil_key_age_seconds{job=\"pgveil\"}", t)
        .await;
    assert!(ages.len() > 1, "data keys missing: {ages:?}");
    for (labels, age) in &ages {
        assert!((0.0..600.0).contains(age), "{labels}: {age}");
        assert!(labels.contains("\"key_id\":\""), "{labels}");
    }
    let q = "pgveil_key_rotation_period_seconds";
    assert_eq!(only(&prom.wait_for(q, t).await, q), 0.0);

    // Every key series is overdue: the alert expression yields one series per
    // key, and the alert becomes pending for the KEK.
    let q = "ALERTS{alertname=\"PgveilKeyRotationOverdue\",column=\"kek\"}";
    let alert = prom.wait_for(q, t).await;
    assert!(
        alert[0].0.contains("\"alertstate\":\"pending\""),
        "{alert:?}"
    );
    assert!(alert[0].0.contains("\"severity\":\"ticket\""), "{alert:?}");
    let q = "count(ALERTS{alertname=\"PgveilKeyRotationOverdue\"})";
    assert_eq!(only(&prom.wait_for(q, t).await, q), ages.len() as f64);
    drop(prom);
    proxy.shutdown().await;
}

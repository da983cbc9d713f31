//! The quickstart: `pgveil demo` prints working URLs, serves psql over
//! verified TLS, and cleans up on SIGTERM (the binary, as a user runs it).

use pgveil_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_prints_urls_serves_psql_and_cleans_up_on_sigterm() {
    // Make sure a PostgreSQL is installed the way the harness finds it.
    let _ = pgveil::pgtemp::find_bindir().expect("PostgreSQL binaries");
    let mut child = Command::new(pgveil_binary())
        .args(["demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut direct = None;
    let mut psql_line = None;
    let mut metrics = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while url.is_none() || direct.is_none() || psql_line.is_none() {
        assert!(Instant::now() < deadline, "demo did not print its URLs");
        let line = lines.next().expect("demo output").unwrap();
        if let Some(u) = line.strip_prefix("DATABASE_URL=") {
            url = Some(u.to_string());
        } else if let Some(u) = line.strip_prefix("DIRECT_DATABASE_URL=") {
            direct = Some(u.to_string());
        } else if let Some(u) = line.strip_prefix("METRICS_URL=") {
            metrics = Some(u.to_string());
        } else if line.starts_with("psql ") {
            psql_line = Some(line);
        }
    }
    let url = url.unwrap();
    let metrics = metrics.expect("METRICS_URL printed before the psql line");
    let addr: std::net::SocketAddr = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(http_get(addr, "/metrics"));
    assert_eq!(status, 200);
    assert!(body.contains("pgveil_build_info"), "{body}");
    assert!(url.contains("sslmode=verify-full"), "{url}");
    let out = ok_stdout(&psql(&url, &["-c", "SELECT 'through pgveil'"]));
    assert_eq!(out.trim(), "through pgveil");
    let direct = direct.unwrap();
    let out = ok_stdout(&psql(&direct, &["-c", "SELECT 'direct'"]));
    assert_eq!(out.trim(), "direct");

    // The README's walk-through: a patient written through pgveil reads back
    // in plaintext there and only as ciphertext directly.
    ok_stdout(&psql(
        &url,
        &[
            "-c",
            "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) \
             VALUES ('Ada', 'Lovelace', '123-45-6789', '1815-12-10')",
        ],
    ));
    let out = ok_stdout(&psql(
        &url,
        &[
            "-c",
            "SELECT first_name, ssn, date_of_birth FROM patients WHERE ssn = '123-45-6789'",
        ],
    ));
    assert_eq!(out.trim(), "Ada|123-45-6789|1815-12-10");
    let out = ok_stdout(&psql(
        &direct,
        &["-c", "SELECT first_name, ssn, date_of_birth FROM patients"],
    ));
    assert!(out.starts_with("pgv1:"), "{out}");
    assert!(
        !out.contains("Ada") && !out.contains("123-45-6789"),
        "{out}"
    );
    let dir = url
        .split("sslrootcert=")
        .nth(1)
        .map(|p| std::path::PathBuf::from(p).parent().unwrap().to_path_buf())
        .unwrap();
    assert!(dir.exists());

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "demo exit status {status}");
    assert!(!dir.exists(), "demo temp dir {} left behind", dir.display());
}

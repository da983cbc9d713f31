//! Issue 2, acceptance 4: pgbench through pgveil in every query mode, with
//! zero failed transactions.

use pgveil_tests::*;
use std::process::{Command, Stdio};

fn pgbench(port: u16, db: &str, args: &[&str]) -> String {
    let out = Command::new(pg_program("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", MD5_USER.0])
        .args(args)
        .arg(db)
        .env("PGPASSWORD", MD5_USER.1)
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::null())
        .output()
        .expect("run pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_all_modes_zero_failures() {
    let db = fresh_database("bench");
    let proxy = Proxy::start().await;
    let port = proxy.port();
    tokio::task::spawn_blocking(move || {
        pgbench(port, &db, &["-i", "-s", "1", "-q"]);
        for mode in ["simple", "extended", "prepared"] {
            let out = pgbench(port, &db, &["-c", "8", "-j", "2", "-T", "10", "-M", mode]);
            let processed = out
                .lines()
                .find(|l| l.starts_with("number of transactions actually processed"))
                .unwrap_or_else(|| panic!("no summary in:\n{out}"));
            let n: u64 = processed
                .split(':')
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            assert!(n > 0, "{mode}: {processed}");
            // PostgreSQL 15's pgbench reports failures explicitly.
            if let Some(failed) = out
                .lines()
                .find(|l| l.starts_with("number of failed transactions"))
            {
                assert!(failed.contains(": 0 "), "{mode}: {failed}");
            }
            assert!(!out.contains("aborted"), "{mode}:\n{out}");
            eprintln!("pgbench -M {mode}: {processed}");
        }
    })
    .await
    .unwrap();
}

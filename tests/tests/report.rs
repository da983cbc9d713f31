//! `pgveil report` on the clinic (demo) schema: Markdown and HTML evidence
//! with the §164.312 safeguard table from live facts, rendered by headless
//! Chromium (installed by tests/run.sh).

use pgveil_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    let bin = ["chromium", "/usr/bin/chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is not installed: run tests/run.sh, which installs it");
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_maps_safeguards_to_live_facts_and_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("report");
    let mut cfg = clinic_config(dir.path());
    pgveil::audit::keygen(dir.path(), &mut Vec::new()).unwrap();
    cfg.audit.enabled = true;
    cfg.audit.dir = dir.path().join("audit");
    cfg.audit.signing_key_file = dir.path().join("audit-signing.key");
    let url = cluster().url(&db);
    pgveil::guard::install(&cfg, &url, &mut Vec::new())
        .await
        .expect("guards");
    let proxy = Proxy::start_with(cfg.clone()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    for i in 0..5 {
        c.execute(
            "INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, 'Doe', $2)",
            &[&format!("REPORTCANARY{i}"), &format!("900-00-000{i}")],
        )
        .await
        .unwrap();
        c.query(
            "SELECT first_name FROM patients WHERE ssn = $1",
            &[&format!("900-00-000{i}")],
        )
        .await
        .unwrap();
    }
    assert!(proxy
        .state
        .current()
        .audit
        .clone()
        .unwrap()
        .flush(Duration::from_secs(10)));

    let out_dir = dir.path().join("report");
    let mut log = Vec::new();
    pgveil::report::run(&cfg, Some(&url), &out_dir, &mut log)
        .await
        .expect("report");
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    for text in [&md, &html] {
        assert!(!text.contains("REPORTCANARY") && !text.contains("900-00-000"));
        assert!(!text.contains(SCRAM_USER.1), "no password from the URL");
        for std in [
            "164.312(a)(1)",
            "164.312(a)(2)(iv)",
            "164.312(b)",
            "164.312(c)(1)",
            "164.312(e)(1)",
        ] {
            assert!(text.contains(std), "{std} missing");
        }
        assert!(text.contains("hash chain verified"), "{md}");
        assert!(text.contains("0 stored value(s) not encrypted"), "{md}");
        assert!(text.contains("19 of 19 columns validated") || text.contains("columns validated"));
    }
    // Reads per day per role: 5 completed reads by the test user today.
    assert!(md.contains(&format!("| {} | 5 |", SCRAM_USER.0)), "{md}");
    assert!(html.contains("<svg id=\"reads-chart\""));

    // Rendered by a real browser: the DOM has the safeguard table's rows,
    // and a screenshot is taken.
    let page = format!("file://{}", out_dir.join("report.html").display());
    let profile = dir.path().join("chromium-profile");
    let dom = chromium(&["--dump-dom", &page], &profile);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<table id=\"safeguards\">"), "{dom}");
    assert_eq!(dom.matches("<tr><td>§164.312").count(), 6, "{dom}");
    let shot = dir.path().join("report.png");
    let out = chromium(
        &[&format!("--screenshot={}", shot.display()), &page],
        &profile,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(
        png.len() > 20_000,
        "a rendered page, not a blank one: {} bytes",
        png.len()
    );
    // Kept for a human to look at.
    if let Ok(keep) = std::env::var("PGVEIL_TEST_KEEP_REPORT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    proxy.shutdown().await;
}

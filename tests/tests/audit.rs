//! The audit log against a real PostgreSQL: one record per statement on
//! protected columns with its facts and row counts, never a value; a hash
//! chain with signed checkpoints that `pgveil audit verify` checks, finding
//! each kind of tampering with its position; and `on_failure = "refuse"`.

use pgveil_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CANARY: &str = "AUDITCANARY";

fn audit_config(dir: &Path) -> pgveil::config::Config {
    let mut cfg = clinic_config(dir);
    let mut out = Vec::new();
    pgveil::audit::keygen(dir, &mut out).expect("keygen");
    cfg.audit.enabled = true;
    cfg.audit.dir = dir.join("audit");
    cfg.audit.signing_key_file = dir.join("audit-signing.key");
    cfg.audit.checkpoint_every = 500;
    cfg.audit.checkpoint_interval_secs = 1;
    cfg.audit.segment_max_bytes = 256 << 10;
    cfg
}

fn records(dir: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(dir.join(n))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn verify(dir: &Path, public: &Path) -> (bool, String) {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let out = std::process::Command::new(BIN.get_or_init(pgveil_binary))
        .args(["audit", "verify"])
        .arg(dir)
        .arg("--public-key")
        .arg(public)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

fn statements(recs: &[Value]) -> Vec<&Value> {
    recs.iter().filter(|r| r["type"] == "statement").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_statement_is_recorded_once_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("audit_mix");
    let proxy = Proxy::start_with(audit_config(dir.path())).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let audit_dir = dir.path().join("audit");

    // 10,000 statements, mixed: simple and extended inserts, look-ups,
    // updates, reads of unprotected columns only (not recorded), refusals.
    let insert = c
        .prepare("INSERT INTO patients (first_name, last_name, ssn) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let lookup = c
        .prepare("SELECT first_name FROM patients WHERE ssn = $1")
        .await
        .unwrap();
    let mut expected: Vec<(&str, &str, Option<u64>)> = Vec::new(); // kind, outcome, rows
    let mut unrecorded = 0;
    for i in 0..10_000u32 {
        match i % 8 {
            0 | 1 => {
                c.execute(
                    &insert,
                    &[
                        &format!("{CANARY}F{i}"),
                        &format!("{CANARY}L{i}"),
                        &format!("{CANARY}-{i:06}"),
                    ],
                )
                .await
                .unwrap();
                expected.push(("insert", "completed", Some(1)));
            }
            2 => {
                c.batch_execute(&format!(
                    "INSERT INTO patients (first_name, last_name) VALUES ('{CANARY}S{i}', 'x')"
                ))
                .await
                .unwrap();
                expected.push(("insert", "completed", Some(1)));
            }
            3 => {
                let rows = c
                    .query(&lookup, &[&format!("{CANARY}-{:06}", i - 3)])
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 1);
                expected.push(("select", "completed", Some(1)));
            }
            4 => {
                let n = c
                    .execute(
                        "UPDATE patients SET phone = $1 WHERE ssn = $2",
                        &[&format!("{CANARY}P{i}"), &format!("{CANARY}-{:06}", i - 4)],
                    )
                    .await
                    .unwrap();
                assert_eq!(n, 1);
                expected.push(("update", "completed", Some(1)));
            }
            5 => {
                c.simple_query("SELECT count(*) FROM patients")
                    .await
                    .unwrap();
                unrecorded += 1;
            }
            6 => {
                let e = c
                    .simple_query(&format!(
                        "SELECT id FROM patients WHERE upper(first_name) = '{CANARY}Q{i}'"
                    ))
                    .await
                    .unwrap_err();
                assert_eq!(e.as_db_error().unwrap().code().code(), "0A000");
                expected.push(("unknown", "refused", None));
            }
            _ => {
                let rows = c
                    .simple_query(&format!(
                        "SELECT first_name, ssn FROM patients WHERE ssn = '{CANARY}-{:06}'",
                        i - 7
                    ))
                    .await
                    .unwrap();
                assert_eq!(
                    rows.iter()
                        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                        .count(),
                    1
                );
                expected.push(("select", "completed", Some(1)));
            }
        }
    }
    assert_eq!(expected.len() + unrecorded, 10_000);
    let log = proxy.state.current().audit.clone().unwrap();
    assert!(log.flush(Duration::from_secs(30)));

    let recs = records(&audit_dir);
    let stmts = statements(&recs);
    assert_eq!(
        stmts.len(),
        expected.len(),
        "one record per protected statement"
    );
    for (i, (r, (kind, outcome, rows))) in stmts.iter().zip(&expected).enumerate() {
        assert_eq!(r["kind"], *kind, "record {i}: {r}");
        assert_eq!(r["outcome"], *outcome, "record {i}: {r}");
        assert_eq!(r["rows"].as_u64(), *rows, "record {i}: {r}");
        assert_eq!(r["user"], SCRAM_USER.0);
        assert_eq!(r["role"], SCRAM_USER.0);
        assert_eq!(r["database"], db.as_str());
        assert!(r["conn"].as_u64().is_some());
        assert!(!r["client"].as_str().unwrap().is_empty());
        if *outcome == "refused" {
            assert_eq!(r["sqlstate"], "0A000");
            assert_eq!(r["columns"][0]["column"], "public.patients.first_name");
        } else {
            assert!(r["sqlstate"].is_null());
            let cols = r["columns"].as_array().unwrap();
            assert!(!cols.is_empty(), "{r}");
            for col in cols {
                assert_eq!(col["decision"], "allow");
                assert!(col["label"] == "pii" || col["label"] == "phi", "{col}");
            }
        }
    }
    // The update: phone written, ssn read (compared).
    let upd = stmts.iter().find(|r| r["kind"] == "update").unwrap();
    let uses: Vec<(String, String)> = upd["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["column"].as_str().unwrap().to_owned(),
                c["use"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        uses.contains(&("public.patients.ssn".into(), "read".into())),
        "{uses:?}"
    );
    assert!(
        uses.contains(&("public.patients.phone".into(), "write".into())),
        "{uses:?}"
    );
    // Fingerprints carry no literals.
    assert!(stmts
        .iter()
        .any(|r| r["fingerprint"] == "INSERT INTO patients (first_name, last_name) VALUES (?, ?)"));

    // No value anywhere in the audit files.
    for p in segments(&audit_dir) {
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains(CANARY), "{} holds a value", p.display());
    }
    assert!(segments(&audit_dir).len() >= 3, "rotated by size");

    // The untouched log verifies.
    let public = dir.path().join("audit-signing.pub");
    let (ok, out) = verify(&audit_dir, &public);
    assert!(ok, "{out}");
    assert!(out.contains("audit log verified"), "{out}");

    // Tampering, each on a fresh copy, each found with its position.
    let tamper = |name: &str, f: &dyn Fn(&Path)| -> String {
        let t = dir.path().join(format!("tamper-{name}"));
        copy_dir(&audit_dir, &t);
        f(&t);
        let (ok, out) = verify(&t, &public);
        assert!(!ok, "{name}: not detected: {out}");
        out
    };
    let edit_line = |d: &Path, seg: usize, f: &dyn Fn(&mut Vec<String>)| {
        let p = &segments(d)[seg];
        let mut ls: Vec<String> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        f(&mut ls);
        std::fs::write(p, ls.join("\n") + "\n").unwrap();
    };
    // One byte of the first record in segment 2 that has a row count.
    let seg1 = std::fs::read_to_string(&segments(&audit_dir)[1]).unwrap();
    let k = seg1
        .lines()
        .position(|l| l.contains("\"rows\":1,"))
        .expect("a record with rows");
    let out = tamper("edit", &|d| {
        edit_line(d, 1, &|ls| {
            ls[k] = ls[k].replacen("\"rows\":1,", "\"rows\":2,", 1);
        })
    });
    assert!(
        out.contains(&format!(":{} (seq", k + 2)) && out.contains("hash chain broken"),
        "{out}"
    );
    let out = tamper("delete", &|d| edit_line(d, 1, &|ls| drop(ls.remove(20))));
    assert!(out.contains(":21 (seq") && out.contains("missing"), "{out}");
    let out = tamper("insert", &|d| {
        edit_line(d, 1, &|ls| {
            let copy = ls[30].clone();
            ls.insert(31, copy);
        })
    });
    assert!(out.contains(":32 (seq"), "{out}");
    let out = tamper("swap", &|d| edit_line(d, 2, &|ls| ls.swap(5, 6)));
    assert!(out.contains(":6 (seq"), "{out}");
    let out = tamper("truncate", &|d| {
        let segs = segments(d);
        let last = segs.last().unwrap();
        let ls: Vec<String> = std::fs::read_to_string(last)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        std::fs::write(last, ls[..ls.len() / 2].join("\n") + "\n").unwrap();
    });
    assert!(out.contains("HEAD") && out.contains("truncated"), "{out}");
    let out = tamper("segment", &|d| {
        std::fs::remove_file(&segments(d)[1]).unwrap()
    });
    assert!(out.contains("missing") && out.contains(":1 (seq"), "{out}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_refuses_phi_statements_while_the_log_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("audit_refuse");
    let mut cfg = audit_config(dir.path());
    cfg.audit.on_failure = pgveil::config::AuditOnFailure::Refuse;
    let proxy = Proxy::start_with(cfg).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let audit_dir = dir.path().join("audit");
    let insert = "INSERT INTO patients (first_name, last_name) VALUES ($1, 'x')";
    c.execute(insert, &[&"before"]).await.unwrap();

    // The directory becomes unusable (root ignores permissions: it is moved
    // away and a file takes its place).
    let moved = dir.path().join("audit.moved");
    std::fs::rename(&audit_dir, &moved).unwrap();
    std::fs::write(&audit_dir, b"not a directory").unwrap();
    let mut refused = None;
    for _ in 0..100 {
        match c.execute(insert, &[&"during"]).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("PHI statements refused while the log fails");
    let db_err = e.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "58030", "{db_err:?}");
    assert!(
        db_err.message().contains("audit log cannot record"),
        "{}",
        db_err.message()
    );
    // Others proceed.
    c.simple_query("SELECT count(*) FROM patients")
        .await
        .unwrap();
    let e = c
        .simple_query("SELECT first_name FROM patients")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "58030");

    // Writable again: audit resumes, the chain is intact.
    std::fs::remove_file(&audit_dir).unwrap();
    std::fs::rename(&moved, &audit_dir).unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if c.execute(insert, &[&"after"]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "PHI statements run again");
    let log = proxy.state.current().audit.clone().unwrap();
    assert!(log.flush(Duration::from_secs(10)));
    let (ok, out) = verify(&audit_dir, &dir.path().join("audit-signing.pub"));
    assert!(ok, "{out}");
    let recs = records(&audit_dir);
    let n = statements(&recs)
        .iter()
        .filter(|r| r["kind"] == "insert" && r["outcome"] == "completed")
        .count();
    assert!(n >= 2, "{n}");
    proxy.shutdown().await;
}

/// Second attack review: reads the analyser once let pass unrecorded
/// (`count(col)`, `col IS NULL`, rows fetched from a cursor), fingerprints
/// of texts whose strings pgveil cannot delimit, and a log cut short while
/// pgveil was down (not continued: that would hide the cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indirect_reads_cursors_settings_and_a_cut_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("audit_more");
    let cfg = audit_config(dir.path());
    let proxy = Proxy::start_with(cfg.clone()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let audit_dir = dir.path().join("audit");
    c.batch_execute(&format!(
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('{CANARY}1', 'x', '{CANARY}-1'), ('{CANARY}2', 'y', NULL)"
    ))
    .await
    .unwrap();
    c.batch_execute("PREPARE pc AS SELECT count(ssn) FROM patients")
        .await
        .unwrap();
    c.simple_query("EXECUTE pc").await.unwrap();
    // Destroying values without naming them is recorded too.
    c.simple_query("DELETE FROM patients WHERE id < 0")
        .await
        .unwrap();
    c.simple_query("TRUNCATE visits").await.unwrap();
    c.simple_query("SELECT count(ssn) FROM patients")
        .await
        .unwrap();
    c.simple_query("SELECT id FROM patients WHERE ssn IS NULL")
        .await
        .unwrap();
    c.batch_execute(
        "BEGIN; DECLARE cur CURSOR FOR SELECT ssn, first_name FROM patients ORDER BY id",
    )
    .await
    .unwrap();
    c.simple_query("FETCH 1 FROM cur").await.unwrap();
    // Through the extended protocol pgveil does not follow the cursor: its
    // rows stay ciphertext (no plaintext revealed, nothing to record).
    let rows = c.query("FETCH ALL FROM cur", &[]).await.unwrap();
    let name: String = rows[0].get(1);
    assert!(name.starts_with("pgv1:"), "{name}");
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("SET standard_conforming_strings = off")
        .await
        .unwrap();
    let e = c
        .simple_query(&format!(
            "INSERT INTO patients (first_name, last_name) VALUES ('x\\'{CANARY}3', 'y')"
        ))
        .await
        .unwrap_err();
    assert!(e.as_db_error().is_some());
    let log = proxy.state.current().audit.clone().unwrap();
    assert!(log.flush(Duration::from_secs(10)));
    let recs = records(&audit_dir);
    let stmts = statements(&recs);
    let fps: Vec<&str> = stmts
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap())
        .collect();
    assert!(fps.contains(&"SELECT count(ssn) FROM patients"), "{fps:?}");
    assert!(fps.contains(&"EXECUTE pc"), "{fps:?}");
    for (fp, column) in [
        ("DELETE FROM patients WHERE id < ?", "public.patients.ssn"),
        ("TRUNCATE visits", "public.visits.subjective"),
    ] {
        let r = stmts
            .iter()
            .find(|r| r["fingerprint"] == fp)
            .unwrap_or_else(|| panic!("no record of {fp}: {fps:?}"));
        assert!(
            r["columns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["column"] == column && c["use"] == "delete"),
            "{r}"
        );
    }
    assert!(
        fps.contains(&"SELECT id FROM patients WHERE ssn IS NULL"),
        "{fps:?}"
    );
    let fetched: Vec<&&Value> = stmts
        .iter()
        .filter(|r| r["kind"] == "other" && r["fingerprint"] == "")
        .collect();
    assert_eq!(
        fetched.len(),
        1,
        "one record per FETCH that returned plaintext: {stmts:#?}"
    );
    assert_eq!(fetched[0]["rows"], 1);
    assert_eq!(fetched[0]["protocol"], "simple");
    assert!(fetched[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["column"] == "public.patients.ssn"));
    let refused = stmts.last().unwrap();
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert!(
        refused["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("(not shown"),
        "{refused}"
    );
    for p in segments(&audit_dir) {
        assert!(!std::fs::read_to_string(&p).unwrap().contains(CANARY));
    }
    drop(c);
    proxy.shutdown().await;

    // Cut the log's tail (HEAD's checkpoint with it) while pgveil is down:
    // it does not start on it, and says why.
    let last = segments(&audit_dir).pop().unwrap();
    let text = std::fs::read_to_string(&last).unwrap();
    let ls: Vec<&str> = text.lines().collect();
    std::fs::write(&last, ls[..ls.len() - 2].join("\n") + "\n").unwrap();
    let err = pgveil::audit::AuditLog::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("the log was cut short: HEAD's checkpoint is seq"),
        "{err}"
    );
    // HEAD gone too: still refused (segments without HEAD).
    std::fs::remove_file(audit_dir.join("HEAD")).unwrap();
    let err = pgveil::audit::AuditLog::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("HEAD is missing"), "{err}");
    // An emptied log proves nothing.
    for p in segments(&audit_dir) {
        std::fs::remove_file(p).unwrap();
    }
    let (ok, out) = verify(&audit_dir, &dir.path().join("audit-signing.pub"));
    assert!(!ok && out.contains("no records"), "{out}");
}

/// Second attack review: statements the server rejects at Parse or Bind are
/// recorded; results pgveil withholds from a statement with no record of its
/// own are recorded; a record appended after a clean stop is caught, by
/// `verify` and by the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_and_bind_errors_withheld_results_and_forgery_after_stop() {
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database_for_raw("audit_pb");
    let cfg = audit_config(dir.path());
    let proxy = Proxy::start_with(cfg.clone()).await;
    let audit_dir = dir.path().join("audit");
    let c = connect_tls(&proxy.pg_config(&db)).await;
    // Parse fails on the server (unknown column).
    let e = c
        .prepare("SELECT ssn, nosuch FROM patients")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42703");
    // Bind fails on the server (a parameter that is not an integer).
    let mut raw = RawClient::connect(proxy.port(), &db).await;
    raw.send(&[
        raw::parse("s1", "SELECT ssn FROM patients WHERE id = $1::int"),
        raw::bind("", "s1", &[Some("x")]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    let msgs = raw.until_ready().await;
    assert!(
        msgs.iter()
            .any(|m| m.sqlstate().as_deref() == Some("22P02")),
        "{msgs:?}"
    );
    let log = proxy.state.current().audit.clone().unwrap();
    assert!(log.flush(Duration::from_secs(10)));
    let recs = records(&audit_dir);
    let errors: Vec<(String, String)> = statements(&recs)
        .iter()
        .filter(|r| r["outcome"] == "error")
        .map(|r| {
            (
                r["sqlstate"].as_str().unwrap().to_owned(),
                r["fingerprint"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        errors.contains(&("42703".into(), "SELECT ssn, nosuch FROM patients".into())),
        "{errors:?}"
    );
    assert!(
        errors.contains(&(
            "22P02".into(),
            "SELECT ssn FROM patients WHERE id = $1::int".into()
        )),
        "{errors:?}"
    );
    drop(raw);
    drop(c);
    // What `pgveil serve` does on SIGTERM: a `stop` record, signed.
    log.close();
    proxy.shutdown().await;
    let last = segments(&audit_dir).pop().unwrap();
    let text = std::fs::read_to_string(&last).unwrap();
    let forged = format!(
        "{{\"prev\":\"{}\",\"role\":\"mallory\",\"seq\":{},\"time\":\"t\",\"type\":\"statement\"}}\n",
        pgveil_audit::line_hash(text.lines().last().unwrap().as_bytes()),
        last_seq(&text) + 1
    );
    let (ok, out) = verify(&audit_dir, &dir.path().join("audit-signing.pub"));
    assert!(ok, "{out}");
    std::fs::write(&last, text.clone() + &forged).unwrap();
    let (ok, out) = verify(&audit_dir, &dir.path().join("audit-signing.pub"));
    assert!(!ok && out.contains("after a clean stop"), "{out}");
    let err = pgveil::audit::AuditLog::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("follow a clean stop"), "{err}");
}

fn last_seq(text: &str) -> u64 {
    let v: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    v["seq"].as_u64().unwrap()
}

//! Real application drivers through pgveil: psycopg 3 (text, text-only
//! parameters, binary, server-side prepared), asyncpg (binary, prepared,
//! with and without its statement cache) and node-postgres (text, named
//! prepared statements) each write the fixture of `tests/clients/` into the
//! clinic tables and read back exactly what they and the others wrote,
//! while PostgreSQL holds only ciphertext. The drivers are installed by
//! `tests/clients/setup.sh` (venv under `target/`, `npm ci`).

use pgveil_tests::*;
use std::path::PathBuf;
use std::process::Command;

struct Drivers {
    python: PathBuf,
    node: PathBuf,
    dir: PathBuf,
}

fn drivers() -> Drivers {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    let out = Command::new("bash")
        .arg(dir.join("setup.sh"))
        .output()
        .expect("run tests/clients/setup.sh");
    assert!(
        out.status.success(),
        "tests/clients/setup.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("setup.sh printed no {key}: {stdout}"))
    };
    Drivers {
        python: value("PYTHON="),
        node: value("NODE="),
        dir,
    }
}

impl Drivers {
    fn run(&self, driver: &str, args: &[&str]) -> String {
        let mut cmd = if driver.ends_with(".js") {
            let mut c = Command::new(&self.node);
            c.arg(self.dir.join("node").join(driver));
            c
        } else {
            let mut c = Command::new(&self.python);
            c.arg(self.dir.join(driver));
            c
        };
        let out = cmd.args(args).output().expect("run driver");
        assert!(
            out.status.success(),
            "{driver} {:?} failed ({}):\n{}",
            &args[..1],
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_asyncpg_and_node_postgres_read_what_they_all_wrote() {
    let drivers = tokio::task::spawn_blocking(drivers).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("clients");
    let proxy = clinic_proxy(dir.path()).await;
    // psycopg over TLS with certificate verification; asyncpg and
    // node-postgres (which sends no SSLRequest by default) in the clear.
    let tls_url = proxy.url(SCRAM_USER, &db, "verify-full");
    let plain_url = proxy.url(SCRAM_USER, &db, "disable");
    let plain_url = plain_url.split('&').next().unwrap().to_owned();

    let writers: Vec<(&str, &str, &[&str], String)> = vec![
        (
            "py_psycopg.py",
            "psycopg_text",
            &["--format", "text"],
            tls_url.clone(),
        ),
        (
            "py_psycopg.py",
            "psycopg_textparams",
            &["--params", "text"],
            tls_url.clone(),
        ),
        (
            "py_psycopg.py",
            "psycopg_binary_prepared",
            &["--format", "binary", "--prepare"],
            tls_url.clone(),
        ),
        ("py_asyncpg.py", "asyncpg", &[], plain_url.clone()),
        (
            "py_asyncpg.py",
            "asyncpg_nocache",
            &["--no-statement-cache"],
            plain_url.clone(),
        ),
        ("pg_client.js", "node", &[], plain_url.clone()),
        (
            "pg_client.js",
            "node_prepared",
            &["--prepare"],
            plain_url.clone(),
        ),
    ];
    let readers: Vec<(&str, &[&str], String)> = vec![
        ("py_psycopg.py", &["--format", "text"], tls_url.clone()),
        (
            "py_psycopg.py",
            &["--format", "binary", "--prepare"],
            tls_url.clone(),
        ),
        ("py_asyncpg.py", &[], plain_url.clone()),
        ("pg_client.js", &[], plain_url.clone()),
        ("pg_client.js", &["--prepare"], plain_url.clone()),
    ];
    let check_url = tls_url.clone();
    // The drivers block; the proxy keeps running on the runtime meanwhile.
    tokio::task::spawn_blocking(move || {
        let d = &drivers;
        let tls_url = check_url;
        for (driver, tag, opts, url) in &writers {
            let mut args = vec!["write", url, tag];
            args.extend_from_slice(opts);
            d.run(driver, &args);
        }
        let mut first: Option<String> = None;
        for (driver, opts, url) in &readers {
            let mut args = vec!["read", url];
            args.extend_from_slice(opts);
            let out = d.run(driver, &args);
            for (_, tag, _, _) in &writers {
                assert!(out.contains(tag), "{driver} read no rows of {tag}");
            }
            match &first {
                None => first = Some(out),
                Some(f) => assert!(
                    *f == out,
                    "{driver} {opts:?} reads differently from psycopg"
                ),
            }
        }
        // Every writer's rows read back exactly as the fixture, in both formats.
        for (_, tag, _, _) in &writers {
            d.run("py_psycopg.py", &["check", &tls_url, tag]);
            d.run(
                "py_psycopg.py",
                &["check", &tls_url, tag, "--format", "binary"],
            );
        }
    })
    .await
    .unwrap();
    assert_only_ciphertext(&db);
}

/// Look-ups by SSN in every equality form (`=`, `<>`, `IN`, `= ANY(array)`,
/// `IS [NOT] NULL`, self-join, `GROUP BY`, `DISTINCT`, `count(DISTINCT)`,
/// `ON CONFLICT (ssn)`, literal forms) from psycopg 3 and asyncpg return
/// exactly what the same driver gets from a plaintext copy of the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_lookups_match_a_plaintext_database() {
    let drivers = tokio::task::spawn_blocking(drivers).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("lookup_enc");
    let plain = plain_clinic_database("lookup_plain");
    let proxy = clinic_proxy(dir.path()).await;
    let via = proxy.url(SCRAM_USER, &enc, "require");
    let direct = cluster().url(&plain);
    let enc2 = enc.clone();
    tokio::task::spawn_blocking(move || {
        for (mode, tag) in [("psycopg", "lkp"), ("asyncpg", "lka")] {
            let a = drivers.run("py_lookup.py", &[mode, &via, tag]);
            let b = drivers.run("py_lookup.py", &[mode, &direct, tag]);
            assert!(a.len() > 200, "{mode}: {a}");
            assert_eq!(a, b, "{mode}: through pgveil vs plaintext direct");
        }
    })
    .await
    .unwrap();
    assert_only_ciphertext(&enc2);
}

/// SQLAlchemy 2 Core and ORM CRUD (insert, bulk insert, query by SSN,
/// update, delete) on the clinic schema, unchanged, through pgveil.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_core_and_orm_crud() {
    let drivers = tokio::task::spawn_blocking(drivers).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("sqlalchemy");
    let proxy = clinic_proxy(dir.path()).await;
    let via = proxy.url(SCRAM_USER, &enc, "require");
    let enc2 = enc.clone();
    tokio::task::spawn_blocking(move || {
        let out = drivers.run("py_sqlalchemy.py", &[&via, "sa1"]);
        assert!(out.starts_with("ok"), "{out}");
    })
    .await
    .unwrap();
    assert_only_ciphertext(&enc2);
}

/// Issue 17: Django ≥ 5.2 `bulk_create` (`SELECT * FROM UNNEST((%s)::text[],
/// …)`) of 1,000 patients, with psycopg's client-side binding (arrays as
/// literals, Django's default) and with server-side binding (arrays as
/// parameters): every protected column holds ciphertext and reads back
/// equal through the ORM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_bulk_create_through_unnest() {
    let drivers = tokio::task::spawn_blocking(drivers).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("django");
    let proxy = clinic_proxy(dir.path()).await;
    let via = proxy.url(SCRAM_USER, &enc, "require");
    let enc2 = enc.clone();
    tokio::task::spawn_blocking(move || {
        let out = drivers.run("py_django.py", &[&via, "dj1"]);
        assert!(out.starts_with("ok"), "{out}");
        let out = drivers.run("py_django.py", &[&via, "dj2", "--server-side-binding"]);
        assert!(out.starts_with("ok"), "{out}");
    })
    .await
    .unwrap();
    assert_only_ciphertext(&enc2);
    let log = cluster().log();
    assert!(
        // As PostgreSQL received them: literal arrays rewritten to arrays of
        // ciphertext, parameters' logical-type casts removed.
        log.contains("SELECT * FROM UNNEST(ARRAY['pgv1:")
            && log.contains("SELECT * FROM UNNEST($1, $2, $3"),
        "Django used its UNNEST bulk path: {}",
        log.lines()
            .filter(|l| l.contains("INSERT INTO \"patients\""))
            .take(3)
            .map(|l| &l[..l.len().min(300)])
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_server_log_lacks(&["CANARYdj1", "CANARYdj2", "dj1-0000", "dj2-0000"]);
}

/// Issue 17: the drivers' other bulk idioms (`py_bulk.py`): asyncpg
/// `copy_records_to_table` (binary COPY) and `executemany`, psycopg binary
/// COPY, `executemany` and a hand-written `unnest($1::text[], …)`,
/// SQLAlchemy multi-row `VALUES … RETURNING` and its sentinel form through
/// the asyncpg dialect: ciphertext in every protected column, everything
/// reads back equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_bulk_idioms_encrypt_every_row() {
    let drivers = tokio::task::spawn_blocking(drivers).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("bulk");
    let proxy = clinic_proxy(dir.path()).await;
    let via = proxy.url(SCRAM_USER, &enc, "disable");
    let via = via.split('&').next().unwrap().to_owned();
    let enc2 = enc.clone();
    tokio::task::spawn_blocking(move || {
        let out = drivers.run("py_bulk.py", &[&via, "bk1"]);
        assert!(out.starts_with("ok"), "{out}");
    })
    .await
    .unwrap();
    assert_only_ciphertext(&enc2);
    let n = cluster()
        .psql(&enc2, "SELECT count(*) FROM patients")
        .unwrap();
    assert_eq!(n.trim(), "2200");
    let log = cluster().log().to_lowercase();
    for shape in ["(format binary)", "imp_sen", "from unnest("] {
        assert!(
            log.contains(shape),
            "the idioms' statements reached PostgreSQL: {shape}"
        );
    }
    assert_server_log_lacks(&["CANARYbk1", "bk1-copyrec-0", "canary.bk1"]);
}

/// Issue 14: psycopg 3 (text and binary results) and asyncpg (binary,
/// prepared) see a masking role's masks through their normal type
/// adaptation: text masks as strings, a date masked to its year as a date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_see_masks_through_their_type_adaptation() {
    let drivers = tokio::task::spawn_blocking(drivers).await.unwrap();
    let db = clinic_database("masks");
    cluster()
        .psql(
            "postgres",
            "CREATE ROLE mask_billing LOGIN PASSWORD 'mask-pw-1';\n\
             CREATE ROLE mask_clinician LOGIN PASSWORD 'mask-pw-1';",
        )
        .expect("roles");
    cluster()
        .psql(&db, "GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO PUBLIC;")
        .expect("grants");
    let dir = tempfile::tempdir().unwrap();
    let policy = CLINIC_POLICY.replace(
        "ssn             = { type = \"text\", mode = \"deterministic\", label = \"phi\" }",
        "ssn             = { type = \"text\", mode = \"deterministic\", label = \"phi\", mask = \"last4\" }",
    ) + "\n[access]\ndefault = \"deny\"\n[access.roles.mask_clinician]\nphi = \"decrypt\"\npii = \"decrypt\"\n[access.roles.mask_billing]\nphi = \"mask\"\npii = \"mask\"\n";
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let mut cfg = Proxy::config();
    cfg.base_dir = dir.path().to_path_buf();
    cfg.policy.file = Some("policy.toml".into());
    pgveil::keys::init(&cfg, &mut Vec::new()).expect("keys");
    let proxy = Proxy::start_with(cfg).await;
    let mut c = proxy.pg_config(&db);
    c.user("mask_clinician").password("mask-pw-1");
    let clin = connect_plain(&c).await;
    clin.batch_execute(
        "INSERT INTO patients (first_name, last_name, ssn, date_of_birth, email) VALUES \
         ('Ada', 'L', '123-45-6789', '1815-12-10', 'ada@example.org'), \
         ('Grace', 'H', NULL, NULL, 'grace@navy.mil')",
    )
    .await
    .unwrap();
    let url = format!(
        "postgresql://mask_billing:mask-pw-1@127.0.0.1:{}/{db}?sslmode=disable",
        proxy.port()
    );
    let out = tokio::task::spawn_blocking(move || drivers.run("py_masks.py", &[&url]))
        .await
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want = serde_json::json!([
        ["***-**-6789", "A***", "date:1815-01-01", "a***"],
        [null, "G***", null, "g***"]
    ]);
    for driver in ["psycopg_text", "psycopg_binary", "asyncpg"] {
        assert_eq!(got[driver], want, "{driver}: {out}");
    }
}

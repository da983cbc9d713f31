//! Issue 3: keys init/list/rotate and `pgveil check` (offline and against the
//! live catalog of a real PostgreSQL).

use pgveil::config::Config;
use pgveil_tests::*;

fn clinic_config(dir: &std::path::Path) -> Config {
    let src = include_str!("../../config/clinic.example.toml");
    std::fs::write(dir.join("clinic.toml"), src).unwrap();
    let mut cfg = Config {
        base_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.policy.file = Some("clinic.toml".into());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_live_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = clinic_config(dir.path());
    let mut out = Vec::new();

    // Offline, before keys exist: the missing keyring is an error.
    let e = pgveil::check::run(&cfg, None, &mut out).await.unwrap_err();
    assert!(e.to_string().contains("problem"), "{e}");
    let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
    assert!(text.contains("pgveil keys init"), "{text}");

    pgveil::keys::init(&cfg, &mut out).unwrap();
    out.clear();
    pgveil::check::run(&cfg, None, &mut out).await.unwrap();
    let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
    assert!(text.contains("every policy key unwraps"), "{text}");

    // Against a database without the schema: every table is missing.
    let db = fresh_database("check_empty");
    let url = cluster().url(&db);
    let e = pgveil::check::run(&cfg, Some(&url), &mut out)
        .await
        .unwrap_err();
    let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
    assert!(text.contains("public.patients"), "{text}");
    assert!(e.to_string().contains("problem"));

    // With the example's own DDL: clean, except a plaintext row is reported
    // by count (never by value), and a wrong storage type names the ALTER.
    let db = fresh_database("check_clinic");
    let ddl = pgveil::demo::policy_ddl(include_str!("../../config/clinic.example.toml"));
    assert!(ddl.contains("CREATE TABLE public.patients"), "{ddl}");
    cluster().psql(&db, &ddl).unwrap();
    let url = cluster().url(&db);
    pgveil::check::run(&cfg, Some(&url), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
    assert!(!text.contains("error:"), "{text}");

    cluster()
        .psql(&db, "INSERT INTO patients (first_name, last_name, ssn) VALUES ('CanaryAlice', 'Plain', '999-00-1234')")
        .unwrap();
    cluster()
        .psql(
            &db,
            "ALTER TABLE visits ALTER COLUMN plan TYPE integer USING NULL",
        )
        .unwrap();
    let e = pgveil::check::run(&cfg, Some(&url), &mut out)
        .await
        .unwrap_err();
    let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
    assert!(e.to_string().contains("problem"));
    assert!(text.contains("ALTER TABLE"), "{text}");
    assert!(
        text.contains("public.patients.first_name") || text.contains("first_name"),
        "{text}"
    );
    assert!(
        !text.contains("CanaryAlice"),
        "values must never be printed:\n{text}"
    );
    assert!(
        !text.contains("999-00-1234"),
        "values must never be printed:\n{text}"
    );
}

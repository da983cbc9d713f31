//! Role-based access to plaintext: the policy's `[access]` rules decide, per
//! PostgreSQL role (as the server reports it), whether a protected column is
//! decrypted, masked or refused, and who may write it.

use pgveil_tests::*;

const PW: &str = "access-secret-7";
const SSN: &str = "123-45-6789";
const HISTORY: &str = "canary-access-history-5521";

/// The clinic policy with masks and an `[access]` section.
fn policy() -> String {
    let mut p = CLINIC_POLICY
        .replace(
            "ssn             = { type = \"text\", mode = \"deterministic\", label = \"phi\" }",
            "ssn             = { type = \"text\", mode = \"deterministic\", label = \"phi\", mask = \"last4\" }",
        )
        .replace(
            "email           = { type = \"text\", label = \"pii\" }",
            "email           = { type = \"text\", label = \"pii\", mask = \"email\" }",
        );
    assert!(p.contains("mask = \"last4\"") && p.contains("mask = \"email\""));
    p.push_str(
        r#"
[access]
default = "deny"

[access.roles.acc_clinician]
phi = "decrypt"
pii = "decrypt"
financial = "decrypt"

[access.roles.acc_billing]
phi = "mask"
pii = "decrypt"
financial = "decrypt"
"public.patients.medical_history" = "deny"

[access.roles.acc_analyst]
phi = "mask"
pii = "mask"

[access.write]
phi = ["acc_clinician"]
pii = ["acc_clinician", "acc_billing"]
"#,
    );
    p
}

struct Fixture {
    proxy: Proxy,
    db: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let db = clinic_database("access");
    // Roles are cluster-wide: create them once per test binary.
    static ROLES: std::sync::Once = std::sync::Once::new();
    ROLES.call_once(|| {
        let mut sql = String::new();
        for r in [
            "acc_clinician",
            "acc_billing",
            "acc_analyst",
            "acc_unlisted",
        ] {
            sql.push_str(&format!("CREATE ROLE {r} LOGIN PASSWORD '{PW}';\n"));
        }
        // Inherits the clinician's rules.
        sql.push_str(&format!(
            "CREATE ROLE acc_nurse LOGIN PASSWORD '{PW}' IN ROLE acc_clinician;\n"
        ));
        // May SET ROLE to the clinician but does not inherit it.
        sql.push_str(&format!(
            "CREATE ROLE acc_switcher LOGIN NOINHERIT PASSWORD '{PW}' IN ROLE acc_clinician;\n"
        ));
        cluster().psql("postgres", &sql).expect("roles");
    });
    cluster()
        .psql(
            &db,
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;\n\
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO PUBLIC;",
        )
        .expect("grants");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy()).unwrap();
    let mut cfg = Proxy::config();
    cfg.base_dir = dir.path().to_path_buf();
    cfg.policy.file = Some("policy.toml".into());
    pgveil::keys::init(&cfg, &mut Vec::new()).expect("keys init");
    let proxy = Proxy::start_with(cfg).await;
    let f = Fixture {
        proxy,
        db,
        _dir: dir,
    };
    let c = f.connect("acc_clinician").await;
    c.execute(
        "INSERT INTO patients (first_name, last_name, ssn, date_of_birth, email, medical_history) \
         VALUES ($1, 'Quill', $2, '1984-03-07', 'zelda@example.org', $3)",
        &[&"Zelda", &SSN, &HISTORY],
    )
    .await
    .expect("clinician writes phi");
    f
}

impl Fixture {
    async fn connect(&self, role: &str) -> tokio_postgres::Client {
        let mut c = self.proxy.pg_config(&self.db);
        c.user(role).password(PW);
        connect_plain(&c).await
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| format!("not a server error: {e}"))
}

fn denied(e: &tokio_postgres::Error, column: &str, action: &str, role: &str) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(db.code().code(), "42501", "{db:?}");
    let msg = db.message();
    assert!(
        msg.contains(&format!(
            "permission denied to {action} protected column {column}"
        )),
        "{msg}"
    );
    assert!(msg.contains(&format!("as role {role}")), "{msg}");
    assert!(!msg.contains(SSN) && !msg.contains(HISTORY), "{msg}");
}

async fn simple_one(c: &tokio_postgres::Client, sql: &str) -> Vec<Option<String>> {
    let rows = simple_rows(c, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_gets_plaintext_masks_or_a_refusal() {
    let f = fixture().await;
    let q = "SELECT ssn, first_name, date_of_birth, email FROM patients";

    // Clinician: plaintext, in text (simple) and binary (extended) formats.
    let c = f.connect("acc_clinician").await;
    assert_eq!(
        simple_one(&c, q).await,
        [
            Some(SSN),
            Some("Zelda"),
            Some("1984-03-07"),
            Some("zelda@example.org")
        ]
        .map(|v| v.map(str::to_owned))
    );
    let row = c.query_one(q, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), SSN);
    let history: String = c
        .query_one("SELECT medical_history FROM patients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, HISTORY);

    // A member inheriting the clinician's role gets the same.
    let nurse = f.connect("acc_nurse").await;
    assert_eq!(simple_one(&nurse, q).await[0].as_deref(), Some(SSN));

    // Billing: phi masked (ssn last4, date to its year), pii plaintext.
    let b = f.connect("acc_billing").await;
    let masked = [
        Some("***-**-6789"),
        Some("Zelda"),
        Some("1984-01-01"),
        Some("zelda@example.org"),
    ]
    .map(|v| v.map(str::to_owned));
    assert_eq!(simple_one(&b, q).await, masked);
    let row = b.query_one(q, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "***-**-6789");
    assert_eq!(row.get::<_, String>(1), "Zelda");
    // Binary date: days since 2000-01-01; 1984-01-01 is 5844 days before.
    assert_eq!(
        row.get::<_, RawBinary>(2),
        RawBinary(Some((-5844i32).to_be_bytes().to_vec())),
        "binary date masked to its year"
    );
    // A column rule overrides the label's: medical_history is refused, and
    // so is SELECT * (it includes it), in both protocols.
    let e = b
        .simple_query("SELECT medical_history FROM patients")
        .await
        .unwrap_err();
    denied(&e, "public.patients.medical_history", "read", "acc_billing");
    let e = b.query("SELECT * FROM patients", &[]).await.unwrap_err();
    denied(&e, "public.patients.medical_history", "read", "acc_billing");
    // The session goes on.
    assert_eq!(
        simple_one(&b, "SELECT count(*) FROM patients").await,
        [Some("1".to_owned())]
    );
    // Joins and expressions carry the mask too.
    let row = simple_one(
        &b,
        "SELECT p.ssn, q.first_name FROM patients p JOIN patients q ON q.id = p.id",
    )
    .await;
    assert_eq!(row[0].as_deref(), Some("***-**-6789"));

    // Analyst: every protected column masked; email keeps its domain.
    let a = f.connect("acc_analyst").await;
    assert_eq!(
        simple_one(&a, q).await,
        [
            Some("***-**-6789"),
            Some("Z***"),
            Some("1984-01-01"),
            Some("****@example.org")
        ]
        .map(|v| v.map(str::to_owned))
    );
    // Equality search on a deterministic column still works under a mask.
    let rows = a
        .query("SELECT ssn FROM patients WHERE ssn = $1", &[&SSN])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "***-**-6789");

    // A role without rules gets the default: deny. Unprotected columns stay
    // readable.
    let u = f.connect("acc_unlisted").await;
    let e = u
        .simple_query("SELECT id, ssn FROM patients")
        .await
        .unwrap_err();
    denied(&e, "public.patients.ssn", "read", "acc_unlisted");
    let e = u.query(q, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(
        simple_one(&u, "SELECT id IS NOT NULL FROM patients").await,
        [Some("t".to_owned())]
    );
    // Using a denied column only to search, join or group is a read too.
    let e = u
        .query("SELECT id FROM patients WHERE ssn = $1", &[&SSN])
        .await
        .unwrap_err();
    denied(&e, "public.patients.ssn", "read", "acc_unlisted");
    let e = u
        .simple_query("SELECT count(*) FROM patients GROUP BY ssn")
        .await
        .unwrap_err();
    denied(&e, "public.patients.ssn", "read", "acc_unlisted");
    let e = u
        .simple_query("SELECT v.id FROM visits v JOIN patients p ON p.ssn = v.patient_ssn")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // Counting, NULL tests and sorting on a denied column read it too
    // (which rows have a value, which share one).
    // The same through SQL PREPARE: its EXECUTE is checked with the
    // prepared statement's reads.
    u.batch_execute("PREPARE pc AS SELECT count(ssn) FROM patients WHERE ssn IS NOT NULL")
        .await
        .unwrap();
    let e = u.simple_query("EXECUTE pc").await.unwrap_err();
    denied(&e, "public.patients.ssn", "read", "acc_unlisted");
    for sql in [
        "SELECT count(ssn), count(DISTINCT ssn) FROM patients",
        "SELECT id FROM patients WHERE ssn IS NOT NULL",
        "SELECT id FROM patients ORDER BY ssn IS NULL",
        "DELETE FROM patients WHERE id = 0 AND ssn IS NULL",
    ] {
        let e = u.simple_query(sql).await.unwrap_err();
        denied(&e, "public.patients.ssn", "read", "acc_unlisted");
        let e = u.query(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}");
    }
}

/// Second attack review: a whole row (`(p.*)`) inside an expression is a
/// read of every protected column (refused before anything runs, so a
/// `DELETE … RETURNING (p.*)` deletes nothing), and copying a ciphertext
/// into a column that shares its key is a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_rows_in_expressions_and_key_sharing_copies() {
    let f = fixture().await;
    let a = f.connect("acc_analyst").await;
    for sql in [
        "SELECT id, (p.*)::text FROM patients p",
        "SELECT array[p.*] FROM patients p",
        "SELECT id FROM patients p WHERE p.* IS NOT NULL",
        "SELECT count(*) FROM patients a, patients b WHERE (a.*) IS DISTINCT FROM (b.*)",
        "CREATE TABLE leak AS SELECT id, (p.*)::text AS r FROM patients p",
        "DELETE FROM patients p WHERE id > 0 RETURNING (p.*)",
    ] {
        let e = a.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{sql}: {e:?}");
        assert!(
            e.as_db_error().unwrap().message().contains("whole row"),
            "{sql}"
        );
    }
    let c = f.connect("acc_clinician").await;
    assert_eq!(
        simple_one(&c, "SELECT count(*) FROM patients").await,
        [Some("1".to_owned())],
        "nothing deleted"
    );
    // Billing may not write phi: not even by copying ciphertext between
    // columns that share a key.
    let b = f.connect("acc_billing").await;
    let e = b
        .simple_query(
            "INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) SELECT id, ssn, now(), 'x' FROM patients",
        )
        .await
        .unwrap_err();
    denied(&e, "public.visits.patient_ssn", "write", "acc_billing");
}

/// The role query cannot be answered by the session's own objects: a type
/// named `text` in the temp schema (searched first for types) or a schema
/// put before pg_catalog in search_path does not change who pgveil thinks
/// the session is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_query_cannot_be_spoofed_by_session_objects() {
    let f = fixture().await;
    let a = f.connect("acc_analyst").await;
    a.batch_execute(
        "CREATE TYPE pg_temp.text AS ENUM ('acc_clinician');
         CREATE FUNCTION pg_temp.f(name) RETURNS pg_temp.text LANGUAGE sql AS $$ SELECT 'acc_clinician'::pg_temp.text $$;
         CREATE CAST (name AS pg_temp.text) WITH FUNCTION pg_temp.f(name);",
    )
    .await
    .unwrap();
    cluster()
        .psql(
            &f.db,
            "CREATE SCHEMA evil; GRANT ALL ON SCHEMA evil TO PUBLIC;",
        )
        .unwrap();
    a.batch_execute("SET search_path = evil, pg_temp, pg_catalog, public")
        .await
        .unwrap();
    a.batch_execute("SET ROLE acc_analyst").await.unwrap();
    let rows = simple_rows(&a, "SELECT ssn, first_name FROM patients").await;
    assert_eq!(
        rows,
        vec![vec![
            Some("***-**-6789".to_owned()),
            Some("Z***".to_owned())
        ]],
        "still the analyst's masks"
    );
    let e = a
        .simple_query("UPDATE patients SET ssn = 'x'")
        .await
        .unwrap_err();
    denied(&e, "public.patients.ssn", "write", "acc_analyst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_write_rules() {
    let f = fixture().await;
    let b = f.connect("acc_billing").await;
    // Billing may write pii but not phi.
    let e = b
        .execute(
            "INSERT INTO patients (first_name, last_name, ssn) VALUES ('A', 'B', $1)",
            &[&"987-65-4321"],
        )
        .await
        .unwrap_err();
    denied(&e, "public.patients.ssn", "write", "acc_billing");
    let e = b
        .simple_query("UPDATE patients SET date_of_birth = '1990-01-02'")
        .await
        .unwrap_err();
    denied(&e, "public.patients.date_of_birth", "write", "acc_billing");
    // RETURNING is a read: masked for billing.
    let rows = simple_rows(
        &b,
        "UPDATE patients SET first_name = 'Zora' RETURNING first_name, ssn",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![
            Some("Zora".to_owned()),
            Some("***-**-6789".to_owned())
        ]]
    );
    // The analyst may write nothing protected.
    let a = f.connect("acc_analyst").await;
    let e = a
        .execute("UPDATE patients SET first_name = $1", &[&"Y"])
        .await
        .unwrap_err();
    denied(&e, "public.patients.first_name", "write", "acc_analyst");
    // Nothing was stored by the refused statements.
    let c = f.connect("acc_clinician").await;
    assert_eq!(
        simple_one(&c, "SELECT first_name, ssn, date_of_birth FROM patients").await,
        [Some("Zora"), Some(SSN), Some("1984-03-07")].map(|v| v.map(str::to_owned))
    );
    assert_only_ciphertext(&f.db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_is_followed_as_the_server_confirms_it() {
    let f = fixture().await;
    let s = f.connect("acc_switcher").await;
    let q = "SELECT ssn FROM patients";
    // NOINHERIT: the clinician's rules do not apply until SET ROLE.
    let e = s.simple_query(q).await.unwrap_err();
    denied(&e, "public.patients.ssn", "read", "acc_switcher");

    s.batch_execute("SET ROLE acc_clinician").await.unwrap();
    assert_eq!(simple_one(&s, q).await, [Some(SSN.to_owned())]);
    assert_eq!(s.query_one(q, &[]).await.unwrap().get::<_, String>(0), SSN);
    s.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(sqlstate(&s.query(q, &[]).await.unwrap_err()), "42501");

    // A SET ROLE rolled back with its transaction is undone.
    s.batch_execute("BEGIN; SET ROLE acc_clinician")
        .await
        .unwrap();
    assert_eq!(simple_one(&s, q).await, [Some(SSN.to_owned())]);
    s.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(sqlstate(&s.simple_query(q).await.unwrap_err()), "42501");

    // SET ROLE and a protected read in one simple-query string: the role the
    // read would run as is not confirmed yet, so the whole string is refused
    // before any of it runs (fail closed; send them separately).
    let e = s
        .simple_query("SET ROLE acc_clinician; SELECT ssn FROM patients")
        .await
        .unwrap_err();
    denied(&e, "public.patients.ssn", "read", "(not confirmed yet)");
    assert_eq!(
        simple_one(&s, "SELECT current_user").await,
        [Some("acc_switcher".to_owned())]
    );

    // A failed SET ROLE changes nothing.
    assert!(s.batch_execute("SET ROLE acc_billing").await.is_err());
    assert_eq!(sqlstate(&s.simple_query(q).await.unwrap_err()), "42501");

    // SET SESSION AUTHORIZATION needs superuser; set_config('role', ...) is
    // followed like SET ROLE.
    s.simple_query("SELECT set_config('role', 'acc_clinician', false)")
        .await
        .unwrap();
    assert_eq!(simple_one(&s, q).await, [Some(SSN.to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_is_masked_or_refused() {
    let f = fixture().await;
    let b = f.connect("acc_billing").await;
    let out = copy_text(
        &b,
        "COPY patients (ssn, first_name, date_of_birth) TO STDOUT",
    )
    .await;
    assert_eq!(out, "***-**-6789\tZelda\t1984-01-01\n");
    let out = copy_text(&b, "COPY (SELECT ssn FROM patients) TO STDOUT (FORMAT csv)").await;
    assert_eq!(out, "***-**-6789\n");
    let e = b
        .copy_out("COPY patients TO STDOUT")
        .await
        .err()
        .expect("COPY of a denied column is refused");
    denied(&e, "public.patients.medical_history", "read", "acc_billing");
    let u = f.connect("acc_unlisted").await;
    let e = u
        .copy_out("COPY patients (ssn) TO STDOUT")
        .await
        .err()
        .expect("refused");
    assert_eq!(sqlstate(&e), "42501");
    // COPY FROM is a write.
    let e = b
        .copy_in::<_, bytes::Bytes>("COPY patients (first_name, last_name, ssn) FROM STDIN")
        .await
        .err()
        .expect("COPY FROM into phi is refused for billing");
    denied(&e, "public.patients.ssn", "write", "acc_billing");
}

async fn copy_text(c: &tokio_postgres::Client, sql: &str) -> String {
    use futures_util::TryStreamExt;
    let stream = c
        .copy_out(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

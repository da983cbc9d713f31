//! A randomized fuzz of generated statements over the clinic schema, sent
//! through pgveil in the simple and the extended protocol: whatever pgveil
//! accepts or refuses, no canary (a value meant for a protected column)
//! may ever be stored in plaintext. Afterwards the database is dumped
//! directly and scanned.
//!
//! `PGVEIL_FUZZ_STATEMENTS` (default 20 000) and `PGVEIL_FUZZ_SEED` change
//! the run; a failure prints the seed and the statement count.

use pgveil_tests::*;

/// Text columns of the protected tables a canary may be aimed at.
const PATIENT_TEXT: &[&str] = &[
    "first_name",
    "last_name",
    "ssn",
    "phone",
    "email",
    "address",
    "medical_history",
];
const VISIT_TEXT: &[&str] = &["patient_ssn", "subjective", "objective", "assessment"];
const TABLE_NAMES: &[&str] = &[
    "patients",
    "public.patients",
    "\"patients\"",
    "PUBLIC.Patients",
];

struct Gen {
    rng: Rng,
    n: u64,
}

impl Gen {
    fn canary(&mut self) -> String {
        self.n += 1;
        format!("CANARY-{}-{}", self.n, self.rng.below(1000))
    }

    /// An SQL expression whose value contains a canary.
    fn value(&mut self) -> String {
        let c = self.canary();
        if self.rng.chance(75) {
            return format!("'{c}'");
        }
        match self.rng.below(22) {
            0..=5 => format!("'{c}'"),
            6 => format!("E'{c}'"),
            7 => format!("$${c}$$"),
            8 => format!("'{c}'::text"),
            9 => format!("CAST('{c}' AS text)"),
            10 => format!("upper('{c}')"),
            11 => format!("'{c}' || 'x'"),
            12 => format!("(SELECT '{c}')"),
            13 => format!("COALESCE(NULL, '{c}')"),
            14 => format!("concat('{c}', '')"),
            15 => format!("CASE WHEN true THEN '{c}' END"),
            16 => format!("U&'{c}'"),
            17 => format!("'{c}' COLLATE \"C\""),
            18 => format!("format('%s', '{c}')"),
            19 => format!("('{c}')"),
            20 => format!("lower('{c}')::varchar"),
            _ => format!("NULLIF('{c}', '')"),
        }
    }

    fn table(&mut self) -> &'static str {
        self.rng.pick(TABLE_NAMES)
    }

    fn noise(&mut self, s: String) -> String {
        match self.rng.below(6) {
            0 => format!("/* pgveil fuzz */ {s}"),
            1 => s.replace(' ', "\n  "),
            2 => format!("{s};"),
            _ => s,
        }
    }

    /// Shapes added for issue 11: INSERT sources other than VALUES, set
    /// operations, comments ended by \r, settings that change how text is
    /// read, whole-row references, DDL on protected tables, prepared
    /// statement names reused, Unicode-escaped identifiers.
    fn statement_v2(&mut self) -> String {
        let (a, b) = (self.value(), self.value());
        let t = self.table();
        match self.rng.below(24) {
            0 => format!("INSERT INTO {t} (first_name, last_name) (VALUES ({a}, {b}))"),
            1 => format!("INSERT INTO {t} (first_name, last_name) VALUES ({a}, 'x') UNION ALL VALUES ({b}, 'y')"),
            2 => format!("INSERT INTO {t} (first_name, last_name) VALUES ({a}, 'x') UNION VALUES ({b}, 'y')"),
            3 => format!("INSERT INTO {t} (first_name, last_name) WITH w AS (SELECT 1) VALUES ({a}, {b})"),
            4 => format!("INSERT INTO {t} (first_name, last_name) TABLE notes_public"),
            5 => format!("SELECT 1 -- c\r; INSERT INTO {t} (first_name, last_name) VALUES ({a}, {b})"),
            6 => format!("INSERT INTO {t} (first_name, last_name) VALUES ({a}, 'x') --\r, ({b}, 'y')"),
            7 => format!("/* a /* nested */ comment */ INSERT INTO {t} (first_name, last_name) VALUES ({a}, {b})"),
            8 => self
                .rng
                .pick(&[
                    "SET standard_conforming_strings = off",
                    "SET standard_conforming_strings = on",
                    "RESET standard_conforming_strings",
                    "SET search_path = app, public",
                    "RESET search_path",
                    "SELECT set_config('standard_conforming_strings', 'off', false)",
                ])
                .to_owned(),
            9 => {
                let c = self.canary();
                format!("INSERT INTO {t} (first_name, last_name) VALUES ('{c}\\', 'x')")
            }
            10 => {
                let c = self.canary();
                format!("INSERT INTO {t} (first_name, last_name) VALUES ('a\\', '{c}')")
            }
            11 => format!("SELECT id FROM {t} WHERE ssn IN (VALUES ({a}))"),
            12 => self
                .rng
                .pick(&[
                    "SELECT p FROM patients p",
                    "SELECT row_to_json(p) FROM patients p",
                    "SELECT to_jsonb(p.*) FROM patients p",
                    "SELECT * INTO TEMP fz_copy FROM patients",
                    "CREATE TABLE fz_copy2 AS SELECT first_name FROM patients",
                ])
                .to_owned(),
            13 => self
                .rng
                .pick(&[
                    "ALTER TABLE patients RENAME COLUMN first_name TO fname",
                    "ALTER TABLE patients RENAME TO people",
                    "CREATE TEMP TABLE patients (first_name text, last_name text)",
                    "CREATE TABLE fz_kid () INHERITS (patients)",
                    "CREATE TABLE app.patients (first_name text, last_name text)",
                ])
                .to_owned(),
            14 => format!("ALTER TABLE {t} ALTER COLUMN ssn SET DEFAULT {a}"),
            15 => format!("ALTER TABLE {t} ALTER COLUMN first_name SET DEFAULT {a}"),
            16 => "PREPARE fzp AS INSERT INTO patients (first_name, last_name) VALUES ($1, 'fzp')".to_owned(),
            17 => "PREPARE fzp AS SELECT $1::text".to_owned(),
            18 => "DEALLOCATE fzp".to_owned(),
            19 => format!("EXECUTE fzp({a})"),
            20 => format!("INSERT INTO U&\"patients\" (first_name, last_name) VALUES ({a}, {b})"),
            21 => format!("INSERT INTO {t} (first_name, last_name) VALUES ({a}::varchar(4), {b})"),
            22 => format!("SELECT id FROM {t} WHERE ssn = ANY(ARRAY[{a}, {b}]) OR ssn IN (SELECT {a})"),
            _ => format!("WITH x AS (INSERT INTO {t} (first_name, last_name) VALUES ({a}, {b}) RETURNING id) SELECT id FROM x"),
        }
    }

    /// Shapes added with the structural coverage check and the bulk paths
    /// of issue 17: `unnest` of array literals and parameters in every
    /// position, array literals with quoting, filtered or converted bulk
    /// sources, and values in clauses the analyser may not walk.
    fn statement_v3(&mut self) -> String {
        let (c, d) = (self.canary(), self.canary());
        let t = self.table();
        let arr = |rng: &mut Rng, c: &str| -> String {
            match rng.below(7) {
                0 => format!("'{{{c}}}'::text[]"),
                1 => format!("('{{\"{c}\",NULL}}')::text[]"),
                2 => format!("'{{{c}}}'"),
                3 => format!("ARRAY['{c}']"),
                4 => format!("string_to_array('{c}', ',')"),
                5 => format!("'{{{c}}}'::varchar(3)[]"),
                _ => format!("(('{{{c}}}'))::text[]"),
            }
        };
        let (x, y) = (arr(&mut self.rng, &c), arr(&mut self.rng, &d));
        match self.rng.below(28) {
            24 => format!("WITH patients AS (SELECT 1 AS id) UPDATE patients SET first_name = '{c}' WHERE id = 1"),
            25 => format!("WITH {t} AS (SELECT 1) INSERT INTO {t} (first_name, last_name) VALUES ('{c}', 'x')"),
            26 => format!("SELECT count(*) FROM {t} AS p(pid, fname, lname, s) WHERE s = '{c}'"),
            27 => format!("SELECT count(*) FROM (patients JOIN visits ON true) AS j(a, b) WHERE b = '{c}'"),
            19 => format!("INSERT INTO {t} (first_name.x, last_name) VALUES ('{c}', 'b')"),
            20 => format!("UPDATE {t} SET last_name[1] = '{c}' WHERE id = -1"),
            21 => format!("SELECT 1 FROM notes_public TABLESAMPLE BERNOULLI ((SELECT count(*) FROM {t} WHERE ssn = '{c}'))"),
            22 => format!("CREATE TABLE fz_k (c bigint DEFAULT (SELECT count(*) FROM {t} WHERE ssn = '{c}'))"),
            23 => format!("INSERT INTO {t} (first_name, last_name, no_such_column) VALUES ('a', 'b', '{c}')"),
            14 => format!("INSERT INTO {t} (first_name, last_name) SELECT a, b FROM (SELECT '{c}', 'x') w(a, b) LEFT JOIN (VALUES ('y', 'z')) v(a, b) USING (a, b)"),
            15 => format!("INSERT INTO {t} (first_name, last_name) SELECT a, b FROM (SELECT '{c}', 'x') w(a, b) NATURAL FULL JOIN (VALUES ('y', 'z')) v(a, b)"),
            16 => format!("INSERT INTO {t} (first_name, last_name) SELECT a, b FROM (VALUES ('x', 'y')) v(a, b) JOIN notes_public ON a = '{c}'"),
            17 => format!("PREPARE fz5 AS WITH x AS (INSERT INTO {t} (first_name, last_name) VALUES ($1, $2) RETURNING id) SELECT id FROM x; CREATE TEMP TABLE fz_t5 AS EXECUTE fz5('{c}', '{d}')"),
            18 => format!("INSERT INTO {t} (first_name, last_name) SELECT DISTINCT a, b FROM (VALUES ('{c}', '{d}'), ('{c}', '{d}')) v(a, b)"),
            0 | 1 => format!("INSERT INTO {t} (first_name, last_name) SELECT * FROM UNNEST({x}, {y})"),
            2 => format!("INSERT INTO {t} (first_name, last_name) SELECT a, b FROM unnest({x}, {y}) AS u(a, b)"),
            3 => format!("INSERT INTO {t} (first_name, last_name) SELECT a, b FROM unnest({x}, {y}) AS u(a, b) WHERE a <> b"),
            4 => format!("INSERT INTO {t} (first_name, last_name) SELECT unnest({x}), unnest({y})"),
            5 => format!("INSERT INTO {t} (first_name, last_name) SELECT * FROM unnest({x}, {y}) WITH ORDINALITY"),
            6 => format!("INSERT INTO {t} (first_name, last_name) SELECT * FROM (VALUES ('{c}', '{d}')) v"),
            7 => format!("INSERT INTO {t} (first_name, last_name) SELECT * FROM (VALUES ('{c}', '{d}')) v WHERE column1 <> ''"),
            8 => format!("INSERT INTO {t} (last_name, first_name) SELECT * FROM unnest({x}, {y}), unnest({x})"),
            9 => format!("SELECT json_object('{c}' VALUE 1), id FROM {t}"),
            10 => format!("SELECT id FROM {t} WHERE first_name LIKE 'a%' ESCAPE '{}'", &c[..1]),
            11 => format!("SELECT id FROM {t} ORDER BY id FETCH FIRST (SELECT length('{c}')) ROWS ONLY"),
            12 => format!("INSERT INTO {t} (first_name, last_name) SELECT * FROM UNNEST({x}, {y}) ORDER BY 1"),
            _ => format!("SELECT id FROM {t} WHERE ssn = ANY({x})"),
        }
    }

    fn statement(&mut self) -> String {
        if self.rng.chance(15) {
            let s = self.statement_v3();
            return self.noise(s);
        }
        if self.rng.chance(35) {
            let s = self.statement_v2();
            return self.noise(s);
        }
        let s = match self.rng.below(16) {
            0..=3 => {
                // INSERT … VALUES, possibly several rows, ON CONFLICT, RETURNING.
                let k = 1 + self.rng.below(3);
                let mut cols: Vec<&str> = vec!["first_name", "last_name"];
                for _ in 0..k {
                    let c = self.rng.pick(PATIENT_TEXT);
                    if !cols.contains(&c) {
                        cols.push(c);
                    }
                }
                let rows = 1 + self.rng.below(2);
                let vals: Vec<String> = (0..rows)
                    .map(|_| {
                        let v: Vec<String> = cols.iter().map(|_| self.value()).collect();
                        format!("({})", v.join(", "))
                    })
                    .collect();
                let mut s = format!(
                    "INSERT INTO {} ({}) VALUES {}",
                    self.table(),
                    cols.join(", "),
                    vals.join(", ")
                );
                if self.rng.chance(25) {
                    let c = self.rng.pick(PATIENT_TEXT);
                    let v = self.value();
                    s.push_str(&format!(" ON CONFLICT (ssn) DO UPDATE SET {c} = {v}"));
                }
                if self.rng.chance(30) {
                    s.push_str(" RETURNING id, ssn");
                }
                s
            }
            4 | 5 => {
                let c = self.rng.pick(PATIENT_TEXT);
                let v = self.value();
                let w = match self.rng.below(4) {
                    0 => format!("ssn = {}", self.value()),
                    1 => "id = 1".to_owned(),
                    2 => format!("last_name LIKE {}", self.value()),
                    _ => "true".to_owned(),
                };
                format!("UPDATE {} SET {c} = {v} WHERE {w}", self.table())
            }
            6 => {
                let (a, b) = (self.value(), self.value());
                match self.rng.below(4) {
                    0 => format!("INSERT INTO patients (first_name, last_name) SELECT {a}, {b}"),
                    1 => format!("INSERT INTO patients (first_name, last_name) SELECT {a}, body FROM notes_public"),
                    2 => format!("WITH x AS (SELECT {a} AS v) INSERT INTO patients (first_name, last_name) SELECT v, v FROM x"),
                    _ => format!("INSERT INTO patients (first_name, last_name) SELECT a, b FROM (VALUES ({a}, {b})) AS t(a, b)"),
                }
            }
            7 => {
                let c = self.rng.pick(VISIT_TEXT);
                let ssn = self.value();
                if c == "patient_ssn" {
                    format!("INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) VALUES (1, {ssn}, '2024-01-01', 'dr')")
                } else {
                    let v = self.value();
                    format!("INSERT INTO visits (patient_id, patient_ssn, visit_date, provider, {c}) VALUES (1, {ssn}, '2024-01-01', 'dr', {v})")
                }
            }
            8 => {
                let (a, b) = (self.value(), self.value());
                format!("INSERT INTO notes_public VALUES (1, 'plain'); INSERT INTO patients (first_name, last_name) VALUES ({a}, {b})")
            }
            9 => {
                let c = self.canary();
                format!("DO $do$ BEGIN INSERT INTO patients (first_name, last_name) VALUES ('{c}', 'x'); END $do$")
            }
            10 => {
                let name = format!("fz{}", self.rng.below(1_000_000));
                let (a, b) = (self.canary(), self.canary());
                let cast = if self.rng.chance(50) { "" } else { "::text" };
                format!("PREPARE {name} (text, text) AS INSERT INTO patients (first_name, last_name) VALUES ($1{cast}, $2); EXECUTE {name}('{a}', '{b}'); DEALLOCATE {name}")
            }
            11 => {
                let c = self.canary();
                format!("INSERT INTO patients (first_name, last_name) SELECT a, b FROM json_to_record('{{\"a\":\"{c}\",\"b\":\"x\"}}') AS t(a text, b text)")
            }
            12 => {
                let v = self.value();
                format!(
                    "INSERT INTO patients_v (first_name, ssn) VALUES ({v}, {})",
                    self.value()
                )
            }
            13 => {
                let v = self.value();
                format!("UPDATE patients SET last_name = n.body || {v} FROM notes_public n WHERE n.id = patients.id")
            }
            14 => {
                let v = self.value();
                format!("MERGE INTO patients p USING notes_public n ON p.id = n.id WHEN MATCHED THEN UPDATE SET last_name = {v}")
            }
            _ => {
                let v = self.value();
                format!(
                    "SELECT id FROM {} WHERE ssn = {v} OR first_name = {}",
                    self.table(),
                    self.value()
                )
            }
        };
        let s = if self.rng.chance(10) {
            s.to_uppercase()
        } else {
            s
        };
        self.noise(s)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_generated_statements_never_store_a_canary_in_plaintext() {
    let count: usize = std::env::var("PGVEIL_FUZZ_STATEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("PGVEIL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database("fuzz");
    cluster()
        .psql(
            &db,
            "CREATE TABLE notes_public (id int, body text); INSERT INTO notes_public VALUES (1, 'plain');
             CREATE VIEW patients_v AS SELECT id, first_name, last_name, ssn FROM patients;
             CREATE SCHEMA app; CREATE TABLE app.insurance (member_id text)",
        )
        .unwrap();
    let proxy = clinic_proxy(dir.path()).await;
    let c = connect_tls(&proxy.pg_config(&db)).await;
    c.batch_execute("INSERT INTO patients (first_name, last_name) VALUES ('first', 'patient')")
        .await
        .unwrap();
    let mut g = Gen {
        rng: Rng(seed | 1),
        n: 0,
    };
    let (mut ok, mut refused, mut other) = (0usize, 0usize, 0usize);
    for i in 0..count {
        let sql = g.statement();
        let extended = !sql.contains(';') && g.rng.chance(40);
        let result = if extended {
            c.query(&sql, &[]).await.map(|_| ())
        } else {
            c.simple_query(&sql).await.map(|_| ())
        };
        match result {
            Ok(()) => ok += 1,
            Err(e) => match e.as_db_error() {
                Some(d) if d.code().code() == "0A000" || d.message().starts_with("pgveil") => {
                    refused += 1
                }
                Some(d) => {
                    other += 1;
                    if std::env::var_os("PGVEIL_FUZZ_VERBOSE").is_some() {
                        eprintln!("server error {}: {} <- {sql}", d.code().code(), d.message());
                    }
                }
                None => panic!("seed {seed} statement {i}: connection failed: {e}"),
            },
        }
    }
    // A parameterised look-up still works at the end: the session is sound.
    let n: i64 = c
        .query_one("SELECT count(*) FROM patients WHERE ssn = $1", &[&"nobody"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    eprintln!("fuzz seed {seed}: {count} statements: {ok} accepted, {refused} refused by pgveil, {other} server errors");
    assert!(
        ok > count / 10,
        "the generator mostly produces refusals: {ok} accepted"
    );
    assert!(
        refused > count / 10,
        "the generator must exercise refusals: {refused}"
    );
    let stored = cluster()
        .psql(&db, "SELECT count(*) FROM patients")
        .unwrap();
    assert!(
        stored.trim().parse::<u64>().unwrap() > 100,
        "rows stored: {stored}"
    );
    assert_only_ciphertext(&db);
    // The server log: no canary in any statement (or its parameters) on a
    // protected table.
    let log = cluster().log();
    let mut last = "";
    for line in log.lines() {
        if line.contains("statement:") || line.contains("execute ") || line.contains("STATEMENT:") {
            last = line;
        }
        // Names a protected table: lower case (quoted or not), or upper
        // case unquoted ("PATIENTS" in quotes is another relation).
        let names = |l: &str| {
            l.contains("patients")
                || l.contains("visits")
                || ["PATIENTS", "VISITS"].iter().any(|t| {
                    l.match_indices(t)
                        .any(|(i, _)| i == 0 || l.as_bytes()[i - 1] != b'"')
                })
        };
        let protected = names(line) || names(last);
        assert!(
            !(protected && line.contains("CANARY-")),
            "seed {seed}: server log: {last} | {line}"
        );
    }
}

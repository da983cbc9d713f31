//! A stateful protocol fuzzer: random but well-formed message sequences
//! (Parse/Bind/Describe/Execute/Close/Sync/Flush, simple queries and COPY
//! FROM STDIN in text, CSV and binary with truncated, split, malformed or
//! failed data, with
//! statement and portal names reused across namespaces, server errors
//! injected by broken SQL, failing transactions and duplicate names,
//! pipelines of several Syncs) sent through pgveil by a raw client.
//!
//! Oracles: every protected value stored is an envelope and no canary is
//! stored (read directly, and in `pg_dump`); no canary appears in the
//! server log (`log_statement = all`) as a parameter or text of a statement
//! on a protected table; pgveil answers every Sync and Query (no hang, no
//! dropped session); afterwards every protected value decrypts.
//!
//! `PGVEIL_FUZZ_SEQUENCES` (default 5 000) and `PGVEIL_FUZZ_SEED` change the
//! run; a failure prints the seed.

use pgveil_tests::*;
use pgveil_wire::Frame;

const NAMES: &[&str] = &["", "a", "b", "q"];
const PORTALS: &[&str] = &["", "p"];

/// Statement texts: protected writes and reads with one parameter,
/// unprotected ones with one parameter, errors, and SQL-level prepared
/// statement commands.
const STATEMENTS: &[&str] = &[
    "INSERT INTO patients (first_name, last_name) VALUES ($1, 'fz')",
    "INSERT INTO patients (first_name, last_name, ssn) VALUES ('fz', $1, NULL)",
    "UPDATE patients SET address = $1 WHERE id = 1",
    "SELECT id, first_name FROM patients WHERE ssn = $1",
    "SELECT $1::text AS echo",
    "SELECT length($1::text)",
    "SELEC $1 broken",
    "SELECT 1/0 WHERE $1::text IS NOT NULL",
    "INSERT INTO patients (first_name, last_name) VALUES ($1, 'fz') RETURNING first_name",
];

const QUERIES: &[&str] = &[
    "PREPARE q AS INSERT INTO patients (first_name, last_name) VALUES ($1, 'fzq')",
    "PREPARE q AS SELECT $1::text",
    "PREPARE a AS INSERT INTO patients (first_name, last_name) VALUES ($1, 'fza')",
    "DEALLOCATE q",
    "DEALLOCATE a",
    "DEALLOCATE ALL",
    "BEGIN",
    "ROLLBACK",
    "COMMIT",
    "SELECT 1/0",
    "SELECT first_name FROM patients ORDER BY id DESC LIMIT 2",
];

struct Gen {
    rng: Rng,
    n: u64,
}

impl Gen {
    fn canary(&mut self) -> String {
        self.n += 1;
        format!("PCAN-{}", self.n)
    }

    /// A `COPY … FROM STDIN` of a few canary rows in text, CSV or binary,
    /// sometimes truncated, with a wrong field count, garbage or data after
    /// the end, split into several `CopyData`, ended by `CopyDone` or
    /// `CopyFail` — or a `COPY … TO STDOUT`.
    fn copy(&mut self) -> Vec<Frame> {
        let cols: &[&str] = match self.rng.below(3) {
            0 => &["first_name", "last_name"],
            1 => &["last_name", "first_name", "ssn"],
            _ => &["first_name", "last_name", "date_of_birth"],
        };
        let format = self.rng.below(3);
        let (opt, out_opt) = match format {
            0 => ("", ""),
            1 => (" (FORMAT csv)", " (FORMAT csv)"),
            _ => (" (FORMAT binary)", " WITH BINARY"),
        };
        if self.rng.below(6) == 0 {
            let sql = format!("COPY patients ({}) TO STDOUT{out_opt}", cols.join(", "));
            return vec![pgveil_wire::frontend::query(sql.as_bytes())];
        }
        let mut data = Vec::new();
        if format == 2 {
            data.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        }
        for _ in 0..self.rng.below(4) {
            let width = if self.rng.below(8) == 0 {
                cols.len() - 1
            } else {
                cols.len()
            };
            let fields: Vec<Option<Vec<u8>>> = (0..width)
                .map(|k| match (cols[k], self.rng.below(6)) {
                    (_, 0) => None,
                    ("date_of_birth", _) if format == 2 => Some(1234i32.to_be_bytes().to_vec()),
                    ("date_of_birth", _) => Some(b"1990-01-02".to_vec()),
                    _ => Some(self.canary().into_bytes()),
                })
                .collect();
            if format == 2 {
                data.extend_from_slice(&(fields.len() as i16).to_be_bytes());
                for f in &fields {
                    match f {
                        None => data.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            data.extend_from_slice(&(v.len() as i32).to_be_bytes());
                            data.extend_from_slice(v);
                        }
                    }
                }
            } else {
                let sep = if format == 1 { "," } else { "\t" };
                let null = if format == 1 { "" } else { "\\N" };
                let line: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        f.as_ref()
                            .map_or(null.to_owned(), |v| String::from_utf8_lossy(v).into_owned())
                    })
                    .collect();
                data.extend_from_slice(line.join(sep).as_bytes());
                data.push(b'\n');
            }
        }
        if format == 2 && self.rng.below(3) != 0 {
            data.extend_from_slice(&(-1i16).to_be_bytes());
        }
        match self.rng.below(8) {
            0 if !data.is_empty() => {
                let cut = self.rng.below(data.len());
                data.truncate(cut);
            }
            1 => {
                let c = self.canary();
                data.extend_from_slice(c.as_bytes());
            }
            _ => {}
        }
        let sql = format!("COPY patients ({}) FROM STDIN{opt}", cols.join(", "));
        let mut frames = vec![pgveil_wire::frontend::query(sql.as_bytes())];
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = 1 + self.rng.below(rest.len());
            frames.push(Frame::new(
                pgveil_wire::frontend::tag::COPY_DATA,
                &rest[..n],
            ));
            rest = &rest[n..];
        }
        frames.push(if self.rng.below(5) == 0 {
            Frame::new(pgveil_wire::frontend::tag::COPY_FAIL, b"fuzz\0")
        } else {
            Frame::new(pgveil_wire::frontend::tag::COPY_DONE, b"")
        });
        frames
    }

    /// One message; returns the frames and how many ReadyForQuery it adds.
    fn message(&mut self) -> (Vec<Frame>, usize) {
        match self.rng.below(22) {
            0..=3 => (
                vec![raw::parse(self.rng.pick(NAMES), self.rng.pick(STATEMENTS))],
                0,
            ),
            4..=7 => {
                let c = self.canary();
                let v = if self.rng.below(8) == 0 {
                    None
                } else {
                    Some(c.as_str())
                };
                (
                    vec![raw::bind(
                        self.rng.pick(PORTALS),
                        self.rng.pick(NAMES),
                        &[v],
                    )],
                    0,
                )
            }
            8..=10 => (vec![raw::execute(self.rng.pick(PORTALS))], 0),
            11 => (vec![raw::describe_statement(self.rng.pick(NAMES))], 0),
            12 => (vec![raw::close_statement(self.rng.pick(NAMES))], 0),
            13 => (vec![raw::close_portal(self.rng.pick(PORTALS))], 0),
            14 => (vec![raw::flush()], 0),
            15 | 16 => (vec![raw::sync()], 1),
            17 => {
                let c = self.canary();
                let sql = match self.rng.below(3) {
                    0 => format!("EXECUTE q('{c}')"),
                    1 => format!("EXECUTE a('{c}')"),
                    _ => format!("PREPARE q AS INSERT INTO patients (first_name, last_name) VALUES ('{c}', $1)"),
                };
                (vec![pgveil_wire::frontend::query(sql.as_bytes())], 1)
            }
            20 | 21 => (self.copy(), 1),
            _ => (
                vec![pgveil_wire::frontend::query(
                    self.rng.pick(QUERIES).as_bytes(),
                )],
                1,
            ),
        }
    }
}

/// Log lines (with their DETAIL continuation) about protected tables that
/// contain a canary.
fn log_leaks(log: &str) -> Vec<String> {
    let mut leaks = Vec::new();
    let mut last_statement = "";
    for line in log.lines() {
        if line.contains("statement:") || line.contains("execute ") || line.contains("STATEMENT:") {
            last_statement = line;
        }
        let about_protected = line.contains("patients") || last_statement.contains("patients");
        if about_protected && line.contains("PCAN-") {
            leaks.push(format!("{last_statement} | {line}"));
        }
    }
    leaks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_message_sequences_never_leak_a_canary() {
    let count: usize = std::env::var("PGVEIL_FUZZ_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let seed: u64 = std::env::var("PGVEIL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_9a11_0002);
    let dir = tempfile::tempdir().unwrap();
    let db = clinic_database_for_raw("fuzzproto");
    let proxy = clinic_proxy(dir.path()).await;
    let mut g = Gen {
        rng: Rng(seed | 1),
        n: 0,
    };
    let mut client = RawClient::connect(proxy.port(), &db).await;
    let (mut errors, mut messages) = (0usize, 0usize);
    let mut history: Vec<String> = Vec::new();
    for i in 0..count {
        let k = 1 + g.rng.below(8);
        let mut frames = Vec::new();
        for _ in 0..k {
            frames.extend(g.message().0);
        }
        frames.push(raw::sync());
        // A marker query after the final Sync (never skipped): the server's
        // answers up to its row are this sequence's, however many of the
        // Queries inside the batch the server discarded after an error.
        let marker = format!("fz-end-{i}");
        // (ROLLBACK first: a transaction left aborted would fail it.)
        frames.push(pgveil_wire::frontend::query(
            format!("ROLLBACK; SELECT '{marker}'").as_bytes(),
        ));
        messages += frames.len();
        client.send(&frames).await;
        let describe_now: Vec<String> = frames
            .iter()
            .map(|f| {
                let body = String::from_utf8_lossy(f.body()).replace('\0', "|");
                format!(
                    "{}:{}",
                    f.tag() as char,
                    body.chars().take(70).collect::<String>()
                )
            })
            .collect();
        let describe: Vec<String> = frames
            .iter()
            .map(|f| {
                let body = String::from_utf8_lossy(f.body()).replace('\0', "|");
                format!(
                    "{}:{}",
                    f.tag() as char,
                    body.chars().take(70).collect::<String>()
                )
            })
            .collect();
        let mut seen_marker = false;
        let mut got: Vec<String> = Vec::new();
        while !seen_marker {
            let msgs =
                match tokio::time::timeout(std::time::Duration::from_secs(5), client.until_ready())
                    .await
                {
                    Ok(m) => m,
                    Err(_) => {
                        panic!("seed {seed} sequence {i}: no answer to {describe:#?}, got {got:?}")
                    }
                };
            got.extend(msgs.iter().map(|m| {
                format!(
                    "{}{}",
                    m.tag as char,
                    if m.tag == b'E' {
                        m.message()
                    } else {
                        String::new()
                    }
                )
            }));
            let _ = &describe_now;
            for m in &msgs {
                if m.tag == b'D' && m.body.ends_with(marker.as_bytes()) {
                    seen_marker = true;
                }
                if m.tag == b'E' {
                    errors += 1;
                    let code = m.sqlstate().unwrap_or_default();
                    // (08P01 "bind message supplies …" is the server's
                    // ordinary answer to a Bind of the wrong statement.)
                    let broken =
                        code.starts_with("XX") || (code.starts_with("08") && code != "08P01");
                    assert!(
                        !broken,
                        "seed {seed} sequence {i}: {code} {}\n{describe:#?}\n{got:?}",
                        m.message()
                    );
                    assert!(!m.message().contains("PCAN-"), "{}", m.message());
                }
            }
        }
        history.push(format!("{i}: {describe_now:?} -> {got:?}"));
        if std::env::var_os("PGVEIL_FUZZ_CHECK_EACH").is_some() {
            let m = client
                .query("SELECT first_name, last_name, address FROM patients")
                .await;
            if let Some(e) = m.iter().find(|m| m.tag == b'E') {
                let start = history.len().saturating_sub(12);
                panic!(
                    "seed {seed}: after sequence {i}: {}\n{:#?}",
                    e.message(),
                    &history[start..]
                );
            }
        }
        // Start over now and then: a fresh session, fresh namespaces.
        if g.rng.below(200) == 0 {
            client = RawClient::connect(proxy.port(), &db).await;
        }
    }
    eprintln!("protocol fuzz seed {seed}: {count} sequences, {messages} messages, {errors} errors");
    // Every protected value is ciphertext; none holds a canary.
    for col in ["first_name", "last_name", "ssn", "address"] {
        let n = cluster()
            .psql(
                &db,
                &format!(
                    "SELECT count(*) FROM patients WHERE ({col} LIKE '%PCAN%' AND {col} !~ '^pgv1:[A-Za-z0-9+/]+=*$') OR ({col} IS NOT NULL AND {col} NOT LIKE 'pgv1:%')"
                ),
            )
            .unwrap();
        assert_eq!(n.trim(), "0", "seed {seed}: plaintext in patients.{col}");
    }
    let dump = std::process::Command::new(pg_program("pg_dump"))
        .arg(cluster().url(&db))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&dump.stdout).contains("PCAN-"));
    let leaks = log_leaks(&cluster().log());
    assert!(
        leaks.is_empty(),
        "seed {seed}: server log: {:#?}",
        &leaks[..leaks.len().min(5)]
    );
    // Everything stored decrypts, and some of it was written.
    let c = connect_tls(&proxy.pg_config(&db)).await;
    let rows = c
        .query("SELECT first_name, last_name, address FROM patients", &[])
        .await
        .unwrap();
    assert!(rows.len() > count / 500, "only {} rows written", rows.len());
}

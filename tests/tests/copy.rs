//! COPY through pgveil on protected tables, against a real PostgreSQL:
//! `COPY … FROM STDIN` in text and CSV encrypts the protected fields of every
//! row as it streams (rows split across CopyData messages at arbitrary
//! points), `COPY … TO STDOUT` from a table or a query decrypts them, and
//! the result is byte-identical to the same COPY on a plaintext copy of the
//! schema, read directly; binary COPY likewise, byte for byte. Malformed
//! rows are refused with nothing stored.

use futures_util::{SinkExt, TryStreamExt};
use pgveil_tests::*;

const ROWS: usize = 100_000;
const COLS: &str =
    "first_name, last_name, ssn, date_of_birth, phone, email, address, medical_history";

/// A deterministic mix of ordinary and awkward values: NULLs, empty strings,
/// escapes, tabs/newlines/backslashes in data, Unicode and canaries.
fn text_rows(n: usize, tag: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        let dob = format!("{:04}-{:02}-{:02}", 1900 + i % 120, 1 + i % 12, 1 + i % 28);
        let history = match i % 7 {
            0 => "\\N".to_owned(),
            1 => String::new(),
            2 => format!("CANARY history {i}\\twith tab\\nand newline \\\\ backslash"),
            3 => format!("Zoë Ångström 🩺 CANARY {i}"),
            _ => format!("CANARY note {i}, plain"),
        };
        let phone = if i % 5 == 0 {
            "\\N".to_owned()
        } else {
            format!("+1-555-{i:07}")
        };
        s.push_str(&format!(
            "CANARY-First-{i}\tLast\\t{i}\tCANARY-{tag}-{i:09}\t{dob}\t{phone}\tp{i}@example.org\t{i} Main St\\\\Apt\t{history}\n"
        ));
    }
    s
}

fn csv_rows(n: usize, tag: &str) -> String {
    let mut s = String::from(
        "first_name,last_name,ssn,date_of_birth,phone,email,address,medical_history\n",
    );
    for i in 0..n {
        let history = match i % 6 {
            0 => String::new(),     // NULL
            1 => "\"\"".to_owned(), // empty string
            2 => format!("\"CANARY, with comma and \"\"quotes\"\" {i}\""),
            3 => format!("\"CANARY multi\nline {i}\""), // row spans lines
            _ => format!("CANARY csv {i}"),
        };
        s.push_str(&format!(
            "CANARY-C{i},\"Last, {i}\",CANARY-{tag}-{i:09},1980-02-{:02},,c{i}@example.org,\"{i} Elm\",{history}\n",
            1 + i % 28
        ));
    }
    s
}

/// Sends `data` in chunks of varying odd sizes so rows span messages.
async fn copy_in(client: &tokio_postgres::Client, sql: &str, data: &str) -> u64 {
    let sink = client
        .copy_in(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    futures_util::pin_mut!(sink);
    let bytes = data.as_bytes();
    let mut pos = 0;
    let mut k = 0usize;
    while pos < bytes.len() {
        let size = [1usize, 7, 4093, 65_521, 13][k % 5];
        k += 1;
        let end = (pos + size).min(bytes.len());
        sink.send(bytes::Bytes::copy_from_slice(&bytes[pos..end]))
            .await
            .unwrap();
        pos = end;
    }
    sink.finish().await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    let stream = client
        .copy_out(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_100k_rows_in_and_out_in_text_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("copy_enc");
    let plain = plain_clinic_database("copy_plain");
    let proxy = clinic_proxy(dir.path()).await;
    let via = connect_tls(&proxy.pg_config(&enc)).await;
    let direct = connect_plain(&direct_config(&plain)).await;

    let text = text_rows(ROWS, "T");
    let csv = csv_rows(ROWS, "C");
    for c in [&via, &direct] {
        let n = copy_in(c, &format!("COPY patients ({COLS}) FROM STDIN"), &text).await;
        assert_eq!(n, ROWS as u64);
        let n = copy_in(
            c,
            &format!("COPY patients ({COLS}) FROM STDIN WITH (FORMAT csv, HEADER true)"),
            &csv,
        )
        .await;
        assert_eq!(n, ROWS as u64);
    }

    // COPY out from the table (physical order may differ between the two
    // databases: compared as sorted lines) and from queries (byte for byte).
    for sql in [
        format!("COPY patients ({COLS}) TO STDOUT"),
        format!("COPY patients ({COLS}) TO STDOUT WITH (FORMAT csv, HEADER true)"),
    ] {
        let mut a: Vec<Vec<u8>> = copy_out(&via, &sql)
            .await
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let mut b: Vec<Vec<u8>> = copy_out(&direct, &sql)
            .await
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        assert!(a.len() > 2 * ROWS, "{sql}: {} lines", a.len());
        a.sort();
        b.sort();
        assert!(a == b, "{sql}: lines differ");
    }
    for sql in [
        format!("COPY (SELECT {COLS} FROM patients ORDER BY id) TO STDOUT"),
        format!("COPY (SELECT {COLS} FROM patients ORDER BY id) TO STDOUT (FORMAT csv, HEADER)"),
        "COPY (SELECT id, ssn, medical_history, date_of_birth FROM patients WHERE id % 3 = 0 ORDER BY id) TO STDOUT (FORMAT csv)".to_owned(),
        "COPY (SELECT p.ssn, p.first_name FROM patients p WHERE p.id < 50 ORDER BY p.id) TO STDOUT".to_owned(),
    ] {
        let a = copy_out(&via, &sql).await;
        let b = copy_out(&direct, &sql).await;
        assert!(a.len() > 1000, "{sql}: {} bytes", a.len());
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
            let lo = at.saturating_sub(60);
            panic!(
                "{sql}: differs at byte {at}: via {:?} direct {:?}",
                String::from_utf8_lossy(&a[lo..(at + 60).min(a.len())]),
                String::from_utf8_lossy(&b[lo..(at + 60).min(b.len())])
            );
        }
    }
    // The text rows come back exactly as they went in.
    let back = copy_out(
        &via,
        &format!("COPY (SELECT {COLS} FROM patients WHERE id <= {ROWS} ORDER BY id) TO STDOUT"),
    )
    .await;
    assert!(
        back == text.as_bytes(),
        "COPY out differs from the COPY in input"
    );
    // And what went in comes back through SELECT.
    let sql = format!("SELECT {COLS} FROM patients ORDER BY id");
    let a = simple_rows(&via, &sql).await;
    let b = simple_rows(&direct, &sql).await;
    assert_eq!(a.len(), 2 * ROWS);
    assert!(a == b, "SELECT after COPY differs");
    // Lookup by SSN finds a copied row.
    let r = simple_rows(
        &via,
        "SELECT first_name FROM patients WHERE ssn = 'CANARY-C-000000042'",
    )
    .await;
    assert_eq!(r, vec![vec![Some("CANARY-C42".to_owned())]]);
    assert_only_ciphertext(&enc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_refusals_store_nothing_and_keep_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("copy_refuse");
    let proxy = clinic_proxy(dir.path()).await;
    let via = connect_tls(&proxy.pg_config(&enc)).await;

    // Binary COPY data pgveil cannot read (no PGCOPY signature): 22P04,
    // nothing stored.
    let sink = via
        .copy_in("COPY patients (ssn) FROM STDIN WITH BINARY")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let _ = sink
        .send(bytes::Bytes::from_static(b"CANARY-binary-data"))
        .await;
    let e = sink.finish().await.unwrap_err();
    let db = e.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "22P04");
    assert!(
        db.message().contains("PGCOPY signature"),
        "{}",
        db.message()
    );
    assert!(!db.message().contains("CANARY"), "{}", db.message());
    // A COPY to or from a server file bypasses pgveil.
    let e = via
        .simple_query("COPY patients (ssn) FROM '/tmp/x.csv'")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "0A000");
    // A row with the wrong number of fields: 22P04, nothing stored.
    let sink = via
        .copy_in("COPY patients (first_name, last_name, ssn) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"CANARY-A\tB\tCANARY-1\nCANARY-only-two\tfields\n",
    ))
    .await
    .unwrap();
    let e = sink.finish().await.unwrap_err();
    let db = e.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "22P04", "{}", db.message());
    assert!(db.message().contains("line 2"), "{}", db.message());
    assert!(!db.message().contains("CANARY"), "{}", db.message());
    // An invalid date in a protected column: the type's SQLSTATE.
    let sink = via
        .copy_in("COPY patients (first_name, last_name, date_of_birth) FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"CANARY-A,B,1990-01-01\nCANARY-A,B,CANARY-not-a-date\n",
    ))
    .await
    .unwrap();
    let e = sink.finish().await.unwrap_err();
    let db = e.as_db_error().expect("db error");
    assert!(db.code().code().starts_with("22"), "{:?}", db);
    assert!(db.message().contains("date_of_birth"), "{}", db.message());
    assert!(!db.message().contains("CANARY"), "{}", db.message());
    // Nothing was stored, and the session still works in both protocols.
    let n: i64 = via
        .query_one("SELECT count(*) FROM patients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    via.simple_query("SELECT 1").await.unwrap();
    // COPY of an unprotected table is untouched.
    via.batch_execute("CREATE TABLE IF NOT EXISTS plain_copy (a int, b text)")
        .await
        .unwrap();
    let n = copy_in(&via, "COPY plain_copy FROM STDIN", "1\tx\n2\t\\N\n").await;
    assert_eq!(n, 2);
    assert_only_ciphertext_or_empty(&enc);
}

/// psql's `\copy` uses the simple protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("copy_psql");
    let plain = plain_clinic_database("copy_psql_plain");
    let proxy = clinic_proxy(dir.path()).await;
    let csv = csv_rows(500, "P");
    let file = dir.path().join("in.csv");
    std::fs::write(&file, &csv).unwrap();
    let via_url = proxy.url(SCRAM_USER, &enc, "require");
    let direct_url = cluster().url(&plain);
    let load = format!(
        "\\copy patients ({COLS}) from '{}' with (format csv, header true)",
        file.display()
    );
    for url in [&via_url, &direct_url] {
        let out = ok_stdout(&psql(url, &["-c", &load]));
        assert!(out.contains("COPY 500"), "{out}");
    }
    let dump = "\\copy (select ssn, first_name, medical_history from patients) to stdout with csv";
    let a = ok_stdout(&psql(&via_url, &["-c", dump]));
    let b = ok_stdout(&psql(&direct_url, &["-c", dump]));
    assert_eq!(a, b);
    assert!(a.contains("CANARY multi\nline 3"), "{a}");
    assert_only_ciphertext(&enc);
}

fn assert_only_ciphertext_or_empty(db: &str) {
    let n = cluster()
        .psql(db, "SELECT count(*) FROM public.patients")
        .unwrap();
    if n.trim() != "0" {
        assert_only_ciphertext(db);
    }
}

/// COPY without a column list: pgveil uses the catalog's column order (the
/// identity and timestamp columns included), in and out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_without_a_column_list_uses_the_catalog_order() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("copy_nolist");
    let plain = plain_clinic_database("copy_nolist_plain");
    let proxy = clinic_proxy(dir.path()).await;
    let via = connect_tls(&proxy.pg_config(&enc)).await;
    let direct = connect_plain(&direct_config(&plain)).await;
    let mut data = String::new();
    for i in 1..=500 {
        data.push_str(&format!(
            "{i}\tCANARY-F{i}\tL{i}\tCANARY-S{i:05}\t1970-01-{:02}\t\\N\te{i}@x\tA {i}\tCANARY history {i}\t2024-01-01 00:00:00+00\n",
            1 + i % 28
        ));
    }
    for c in [&via, &direct] {
        let n = copy_in(c, "COPY patients FROM STDIN", &data).await;
        assert_eq!(n, 500);
    }
    for sql in [
        "COPY (SELECT id, first_name, last_name, ssn, date_of_birth, phone, email, address, medical_history, created_at FROM patients ORDER BY id) TO STDOUT",
        "COPY (SELECT * FROM patients WHERE id > 10 ORDER BY id) TO STDOUT (FORMAT csv)",
        "COPY (SELECT p.*, 1 AS one FROM patients p ORDER BY id) TO STDOUT",
    ] {
        let a = copy_out(&via, sql).await;
        assert!(a.len() > 1000, "{sql}");
        assert!(a == copy_out(&direct, sql).await, "{sql}");
    }
    // A wildcard over a relation pgveil cannot place is refused.
    let e = via
        .simple_query("COPY (SELECT * FROM patients p, (SELECT 1 AS x) q) TO STDOUT")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    let a = copy_out(&via, "COPY patients TO STDOUT (FORMAT csv)").await;
    let b = copy_out(&direct, "COPY patients TO STDOUT (FORMAT csv)").await;
    let (mut a, mut b): (Vec<&[u8]>, Vec<&[u8]>) = (
        a.split(|&c| c == b'\n').collect(),
        b.split(|&c| c == b'\n').collect(),
    );
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_only_ciphertext(&enc);
}

/// Binary COPY (what asyncpg's `copy_records_to_table` and psycopg's binary
/// `copy` send): 10,000 rows in through pgveil and directly into a
/// plaintext schema, then out both ways: byte-identical, and only
/// ciphertext stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_copy_in_and_out_equals_a_plaintext_database() {
    let dir = tempfile::tempdir().unwrap();
    let enc = clinic_database("copy_bin_enc");
    let plain = plain_clinic_database("copy_bin_plain");
    let proxy = clinic_proxy(dir.path()).await;
    let via = connect_tls(&proxy.pg_config(&enc)).await;
    let direct = connect_plain(&direct_config(&plain)).await;
    // first_name, last_name, ssn (text), date_of_birth (date: days since
    // 2000-01-01), medical_history (text, stored as bytea).
    let rows: Vec<Vec<Option<Vec<u8>>>> = (0..10_000i32)
        .map(|i| {
            vec![
                Some(format!("CANARY-B{i} Zoë").into_bytes()),
                Some(if i % 9 == 0 {
                    Vec::new()
                } else {
                    format!("O'Brien\t{i}").into_bytes()
                }),
                (i % 10 != 0).then(|| format!("CANARY-BIN-{i:06}").into_bytes()),
                (i % 3 != 0).then(|| (i * 3 - 20_000).to_be_bytes().to_vec()),
                (i % 2 == 0).then(|| format!("CANARY history {i}\n🩺").into_bytes()),
            ]
        })
        .collect();
    let data = pgveil_rewrite::encode_binary_copy(&rows);
    let cols = "first_name, last_name, ssn, date_of_birth, medical_history";
    for c in [&via, &direct] {
        let sink = c
            .copy_in(&format!(
                "COPY patients ({cols}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        // In uneven chunks, splitting tuples and the header.
        for chunk in data.chunks(7_919) {
            sink.send(bytes::Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
        }
        assert_eq!(sink.finish().await.unwrap(), 10_000);
    }
    let sql = format!("COPY (SELECT {cols} FROM patients ORDER BY id) TO STDOUT (FORMAT binary)");
    let (a, b) = (copy_out(&via, &sql).await, copy_out(&direct, &sql).await);
    assert_eq!(a.len(), b.len());
    assert!(
        a == b,
        "binary COPY out differs from the plaintext database"
    );
    assert_eq!(a, data);
    // SSN look-up finds a binary-copied row.
    let r = simple_rows(
        &via,
        "SELECT first_name FROM patients WHERE ssn = 'CANARY-BIN-000042'",
    )
    .await;
    assert_eq!(r, vec![vec![Some("CANARY-B42 Zoë".to_owned())]]);
    assert_only_ciphertext(&enc);
}

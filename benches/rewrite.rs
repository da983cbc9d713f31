//! Cost of pgveil's per-message work on the encrypted paths, without I/O:
//! the rewrite engine fed the messages a client and PostgreSQL exchange.
//!
//! - `decrypt_row`: one `DataRow` of the clinic's patients with 4 protected
//!   columns (first_name, last_name, ssn, date_of_birth) decrypted for the
//!   client, in text (simple protocol) and binary (extended, binary results)
//! - `bind_encrypt`: one `Bind` of an INSERT with 4 protected parameters
//!   (text format), encrypted
//! - `copy_in`: 100 rows of `COPY … FROM STDIN` with 4 protected fields, in
//!   text and binary format
//!
//! Reports time per message (criterion) and, printed before the timings,
//! heap allocations per message (a counting allocator around the system
//! one). `cargo bench -p pgveil-benches --bench rewrite -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pgveil_policy::Policy;
use pgveil_rewrite::{CatalogRow, Engine, KeySet, Session};
use pgveil_wire::backend::{self, FieldDescription};
use pgveil_wire::frontend::{self, Format, Target};
use pgveil_wire::Frame;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const POLICY: &str = include_str!("../config/clinic.example.toml");
const PATIENTS_OID: u32 = 16_400;
const TEXT: u32 = 25;
const COLS: &str = "first_name, last_name, ssn, date_of_birth";

fn engine() -> Arc<Engine> {
    let policy = Arc::new(Policy::from_toml_str(POLICY, "clinic").expect("clinic policy"));
    let keys = KeySet::generated(&policy).expect("keys");
    Arc::new(Engine::new(policy, keys))
}

/// `public.patients` as the policy's storage DDL has it.
fn catalog() -> Vec<CatalogRow> {
    [
        ("id", 20),
        ("first_name", TEXT),
        ("last_name", TEXT),
        ("ssn", TEXT),
        ("date_of_birth", TEXT),
        ("phone", TEXT),
        ("email", TEXT),
        ("address", TEXT),
        ("medical_history", 17),
        ("created_at", 1184),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, oid))| CatalogRow {
        table_oid: PATIENTS_OID,
        schema: "public".into(),
        table: "patients".into(),
        attnum: i as i16 + 1,
        column: (*name).into(),
        storage_oid: *oid,
    })
    .collect()
}

fn session(e: &Arc<Engine>) -> Session {
    let ctx = e.build(&catalog(), e.generation());
    let mut s = Session::new(e.clone(), "clinic", ctx);
    s.parameter_status(b"TimeZone", b"UTC");
    s
}

fn client(s: &mut Session, f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    let o = s.client_message(f.raw(), &mut out);
    assert!(o.error.is_none(), "{:?}", o.error);
    out
}

fn server(s: &mut Session, f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    s.server_message(f.raw(), &mut out);
    out
}

fn parse(name: &str, sql: &str) -> Frame {
    frontend::Parse {
        name: Bytes::copy_from_slice(name.as_bytes()),
        query: Bytes::copy_from_slice(sql.as_bytes()),
        param_types: Vec::new(),
    }
    .encode()
}

fn bind(statement: &str, params: &[&str], results: Format) -> Frame {
    frontend::Bind {
        portal: Bytes::new(),
        statement: Bytes::copy_from_slice(statement.as_bytes()),
        param_formats: vec![Format::Text],
        params: params
            .iter()
            .map(|p| Some(Bytes::copy_from_slice(p.as_bytes())))
            .collect(),
        result_formats: vec![results],
    }
    .encode()
}

/// Typical values: a name, a longer name, an SSN, a date of birth.
const VALUES: [&str; 4] = ["Ada", "Lovelace-Byron", "123-45-6789", "1990-01-02"];

/// The 4 values as stored: the ciphertext literals pgveil writes for them.
fn ciphertexts(e: &Arc<Engine>) -> Vec<Vec<u8>> {
    let mut s = session(e);
    let sql = format!(
        "INSERT INTO patients ({COLS}) VALUES ('{}', '{}', '{}', '{}')",
        VALUES[0], VALUES[1], VALUES[2], VALUES[3]
    );
    let out = client(&mut s, &frontend::query(sql.as_bytes()));
    let text = String::from_utf8_lossy(&out[5..]).into_owned();
    let got: Vec<Vec<u8>> = text
        .split('\'')
        .filter(|p| p.starts_with("pgv1:"))
        .map(|p| p.as_bytes().to_vec())
        .collect();
    assert_eq!(got.len(), 4, "{text}");
    got
}

fn field(name: &str, attnum: i16, format: Format) -> FieldDescription {
    FieldDescription {
        name: Bytes::from(name.to_owned()),
        table_oid: PATIENTS_OID,
        column_attr: attnum,
        type_oid: TEXT,
        type_size: -1,
        type_modifier: -1,
        format,
    }
}

fn row_description(format: Format) -> Frame {
    backend::encode_row_description(&[
        field("first_name", 2, format),
        field("last_name", 3, format),
        field("ssn", 4, format),
        field("date_of_birth", 5, format),
    ])
}

fn data_row(values: &[Vec<u8>]) -> Frame {
    let cols: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_slice())).collect();
    backend::encode_data_row(&cols)
}

/// A session in the middle of a result: the next message is a DataRow.
fn reading(e: &Arc<Engine>, format: Format) -> Session {
    let mut s = session(e);
    let sql = format!("SELECT {COLS} FROM patients WHERE id > 0");
    match format {
        Format::Text => {
            client(&mut s, &frontend::query(sql.as_bytes()));
        }
        Format::Binary => {
            for f in [
                parse("", &sql),
                bind("", &[], Format::Binary),
                frontend::Describe {
                    target: Target::Portal,
                    name: Bytes::new(),
                }
                .encode(),
                frontend::Execute {
                    portal: Bytes::new(),
                    max_rows: 0,
                }
                .encode(),
                Frame::new(b'S', &[]),
            ] {
                client(&mut s, &f);
            }
            server(&mut s, &Frame::new(backend::tag::PARSE_COMPLETE, b""));
            server(&mut s, &Frame::new(backend::tag::BIND_COMPLETE, b""));
        }
    }
    server(&mut s, &row_description(format));
    s
}

/// Heap allocations per call of `f`, averaged over `n` calls.
fn allocations(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        f();
    }
    region.change().allocations as f64 / n as f64
}

fn copy_text(rows: usize) -> Vec<u8> {
    let mut d = Vec::new();
    for i in 0..rows {
        d.extend_from_slice(
            format!(
                "{}{i}\t{}\t{}\t{}\n",
                VALUES[0], VALUES[1], VALUES[2], VALUES[3]
            )
            .as_bytes(),
        );
    }
    d
}

fn copy_binary_rows(rows: usize) -> Vec<u8> {
    let dob = (-3652i32).to_be_bytes(); // 1990-01-02
    let mut d = Vec::new();
    for i in 0..rows {
        d.extend_from_slice(&4i16.to_be_bytes());
        let first = format!("{}{i}", VALUES[0]);
        for v in [
            first.as_bytes(),
            VALUES[1].as_bytes(),
            VALUES[2].as_bytes(),
            &dob[..],
        ] {
            d.extend_from_slice(&(v.len() as i32).to_be_bytes());
            d.extend_from_slice(v);
        }
    }
    d
}

fn benches(c: &mut Criterion) {
    let e = engine();
    let stored = ciphertexts(&e);
    let mut report = Vec::new();

    // decrypt_row, text and binary.
    let text_row = data_row(&stored);
    let mut g = c.benchmark_group("decrypt_row");
    g.throughput(Throughput::Elements(4));
    for (name, format) in [("text", Format::Text), ("binary", Format::Binary)] {
        let mut s = reading(&e, format);
        let mut out = Vec::with_capacity(1024);
        let mut run = || {
            out.clear();
            black_box(s.server_message(black_box(text_row.raw()), &mut out));
        };
        report.push((
            format!("decrypt_row/{name} (4 values)"),
            allocations(10_000, &mut run),
        ));
        g.bench_function(name, |b| b.iter(&mut run));
    }
    g.finish();

    // Bind of 4 protected text parameters.
    let mut s = session(&e);
    let insert = format!("INSERT INTO patients ({COLS}) VALUES ($1, $2, $3, $4)");
    client(&mut s, &parse("ins", &insert));
    server(&mut s, &Frame::new(backend::tag::PARSE_COMPLETE, b""));
    let bind = bind("ins", &VALUES, Format::Text);
    let mut g = c.benchmark_group("bind_encrypt");
    g.throughput(Throughput::Elements(4));
    let mut out = Vec::with_capacity(1024);
    let mut run = || {
        out.clear();
        black_box(s.client_message(black_box(bind.raw()), &mut out));
    };
    report.push((
        "bind_encrypt (4 values)".to_owned(),
        allocations(10_000, &mut run),
    ));
    g.bench_function("text", |b| b.iter(&mut run));
    g.finish();

    // COPY FROM STDIN, 100 rows per CopyData.
    let mut g = c.benchmark_group("copy_in_100_rows");
    g.throughput(Throughput::Elements(400));
    for (name, opt, chunk) in [
        ("text", "", copy_text(100)),
        ("binary", " (FORMAT binary)", copy_binary_rows(100)),
    ] {
        let mut s = session(&e);
        client(
            &mut s,
            &frontend::query(format!("COPY patients ({COLS}) FROM STDIN{opt}").as_bytes()),
        );
        if name == "binary" {
            let mut header = b"PGCOPY\n\xff\r\n\0".to_vec();
            header.extend_from_slice(&[0; 8]);
            client(&mut s, &Frame::new(frontend::tag::COPY_DATA, &header));
        }
        let msg = Frame::new(frontend::tag::COPY_DATA, &chunk);
        let mut out = Vec::with_capacity(64 * 1024);
        let mut run = || {
            out.clear();
            black_box(s.client_message(black_box(msg.raw()), &mut out));
        };
        report.push((
            format!("copy_in/{name} (100 rows × 4 values)"),
            allocations(200, &mut run),
        ));
        g.bench_function(name, |b| b.iter(&mut run));
    }
    g.finish();

    eprintln!("\nheap allocations per message:");
    for (name, n) in report {
        eprintln!("  {name:<40} {n:>8.1}");
    }
}

criterion_group!(rewrite, benches);
criterion_main!(rewrite);

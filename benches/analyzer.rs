//! Cost of pgveil's statement analysis per statement, on a corpus written
//! the way ORMs and drivers write SQL (SQLAlchemy 2, Django 5, an
//! ActiveRecord-style builder, psql users) against the clinic policy:
//! the pre-filter alone (statements on unprotected tables), a cold analysis
//! (parse, walk, coverage check) and a cached one (the plan cache keyed by
//! statement text, as the proxy uses it; texts with literals for protected
//! columns are never cached — they are PHI — so their "cached" figure is a
//! cold analysis).
//!
//! `cargo bench -p pgveil-benches --bench analyzer -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgveil_policy::Policy;
use pgveil_sql::{analyze, Analyzer};

const POLICY: &str = include_str!("../config/clinic.example.toml");

/// Statements that reach protected tables.
const PROTECTED: &[(&str, &str)] = &[
    ("sqlalchemy_insert_returning", "INSERT INTO patients (first_name, last_name, ssn, date_of_birth, phone, email, address, medical_history) VALUES ($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, $4::DATE, $5::VARCHAR, $6::VARCHAR, $7::VARCHAR, $8::VARCHAR) RETURNING patients.id"),
    ("sqlalchemy_select_by_ssn", "SELECT patients.id, patients.first_name, patients.last_name, patients.ssn, patients.date_of_birth, patients.phone, patients.email, patients.address, patients.medical_history, patients.created_at FROM patients WHERE patients.ssn = $1::VARCHAR"),
    ("sqlalchemy_insertmanyvalues", "INSERT INTO patients (first_name, last_name, ssn) SELECT p0::VARCHAR, p1::VARCHAR, p2::VARCHAR FROM (VALUES ($1, $2, $3, 0), ($4, $5, $6, 1), ($7, $8, $9, 2), ($10, $11, $12, 3)) AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING patients.id, patients.id AS id__1"),
    ("django_get", "SELECT \"patients\".\"id\", \"patients\".\"first_name\", \"patients\".\"last_name\", \"patients\".\"ssn\", \"patients\".\"date_of_birth\" FROM \"patients\" WHERE \"patients\".\"ssn\" = 'AB-000123' LIMIT 21"),
    ("django_bulk_create_unnest", "INSERT INTO \"patients\" (\"first_name\", \"last_name\", \"ssn\", \"date_of_birth\") SELECT * FROM UNNEST(($1)::text[], ($2)::text[], ($3)::text[], ($4)::date[]) RETURNING \"patients\".\"id\""),
    ("django_update", "UPDATE \"patients\" SET \"last_name\" = 'Lovelace', \"phone\" = NULL WHERE \"patients\".\"id\" = 42"),
    ("activerecord_in_list", "SELECT \"visits\".* FROM \"visits\" WHERE \"visits\".\"patient_ssn\" IN ('111-11-1111', '222-22-2222', '333-33-3333') ORDER BY \"visits\".\"visit_date\" DESC LIMIT 50 OFFSET 0"),
    ("join_report", "SELECT v.visit_date, v.provider, p.first_name, p.last_name FROM visits v JOIN patients p ON p.ssn = v.patient_ssn WHERE v.visit_date BETWEEN '2024-01-01' AND '2024-12-31' AND p.ssn = ANY($1) ORDER BY v.visit_date"),
    ("upsert", "INSERT INTO patients (first_name, last_name, ssn) VALUES ('Ada', 'Lovelace', '123-45-6789') ON CONFLICT (ssn) DO UPDATE SET last_name = EXCLUDED.last_name RETURNING id, ssn"),
    ("insert_100_rows", ""),
];

/// Statements on unprotected tables: only the pre-filter runs.
const PASSTHROUGH: &[(&str, &str)] = &[
    ("health_check", "SELECT 1"),
    ("catalog", "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'"),
    ("app_table", "UPDATE appointments SET status = 'done', updated_at = now() WHERE id = $1"),
];

fn hundred_rows() -> String {
    let rows: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "('First{i}', 'Last{i}', '{i:03}-00-{i:04}', '1990-01-{:02}')",
                i % 28 + 1
            )
        })
        .collect();
    format!(
        "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) VALUES {}",
        rows.join(", ")
    )
}

fn benches(c: &mut Criterion) {
    let policy = Arc::new(Policy::from_toml_str(POLICY, "clinic").expect("clinic policy"));
    let big = hundred_rows();
    let corpus: Vec<(&str, &str)> = PROTECTED
        .iter()
        .map(|(n, s)| (*n, if s.is_empty() { big.as_str() } else { *s }))
        .collect();
    let mut group = c.benchmark_group("analyze_cold");
    for (name, sql) in &corpus {
        analyze(sql, &policy).unwrap_or_else(|r| panic!("{name} refused: {r}"));
        group.throughput(Throughput::Bytes(sql.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| analyze(black_box(sql), &policy))
        });
    }
    group.finish();
    let analyzer = Analyzer::new(policy.clone());
    let mut group = c.benchmark_group("analyze_cached");
    for (name, sql) in &corpus {
        group.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| analyzer.analyze(black_box(sql), None))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("prefilter_passthrough");
    for (name, sql) in PASSTHROUGH {
        group.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| analyze(black_box(sql), &policy))
        });
    }
    group.finish();
}

criterion_group!(analyzer_benches, benches);
criterion_main!(analyzer_benches);

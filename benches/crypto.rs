//! Per-value cost of pgveil's envelope encryption: nonce generation (or the
//! synthetic-nonce HMAC), AEAD, header and allocation, as the proxy pays it
//! for each protected field. Throughput is reported in bytes of plaintext.
//!
//! `cargo bench -p pgveil-benches --bench crypto -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgveil_crypto::{encode_text, ColumnKeys, DataKey, EncryptionMode, MAX_ENCRYPTION_LIMIT};

const SIZES: [usize; 3] = [32, 256, 16 * 1024];

fn keys(mode: EncryptionMode) -> ColumnKeys {
    let mut keys = ColumnKeys::new("public.patients.ssn").expect("valid name");
    keys.add_version(1, mode, &DataKey::generate().expect("OS randomness"))
        .expect("fresh version");
    keys.set_active(1).expect("added above");
    // Benchmarks encrypt tens of millions of values with one key.
    keys.set_encryption_limit(MAX_ENCRYPTION_LIMIT)
        .expect("within bounds");
    keys
}

fn bench_mode(c: &mut Criterion, name: &str, mode: EncryptionMode) {
    let keys = keys(mode);
    let mut group = c.benchmark_group(name);
    for size in SIZES {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encrypt", size), &plaintext, |b, p| {
            b.iter(|| keys.encrypt(black_box(p)).expect("encrypt"));
        });
        // What the proxy does: append into a reused output buffer.
        let mut out = Vec::with_capacity(size + 64);
        group.bench_with_input(
            BenchmarkId::new("encrypt_into", size),
            &plaintext,
            |b, p| {
                b.iter(|| {
                    out.clear();
                    keys.encrypt_into(black_box(p), &mut out).expect("encrypt");
                });
            },
        );
        let envelope = keys.encrypt(&plaintext).expect("encrypt");
        group.bench_with_input(BenchmarkId::new("decrypt", size), &envelope, |b, e| {
            b.iter(|| keys.decrypt(black_box(e)).expect("decrypt"));
        });
        group.bench_with_input(BenchmarkId::new("decrypt_into", size), &envelope, |b, e| {
            b.iter(|| {
                out.clear();
                keys.decrypt_into(black_box(e), &mut out).expect("decrypt");
            });
        });
        if size == 256 {
            // Text columns also pay for base64 (`pgv1:` form) both ways.
            group.bench_with_input(
                BenchmarkId::new("encrypt_text", size),
                &plaintext,
                |b, p| {
                    b.iter(|| keys.encrypt_text(black_box(p)).expect("encrypt"));
                },
            );
            let stored = encode_text(&envelope);
            group.bench_with_input(BenchmarkId::new("decrypt_text", size), &stored, |b, s| {
                b.iter(|| {
                    keys.decrypt_stored(black_box(s.as_bytes()))
                        .expect("decrypt")
                });
            });
        }
    }
    group.finish();
}

fn randomized(c: &mut Criterion) {
    bench_mode(c, "randomized", EncryptionMode::Randomized);
}

fn deterministic(c: &mut Criterion) {
    bench_mode(c, "deterministic", EncryptionMode::Deterministic);
}

criterion_group!(benches, randomized, deterministic);
criterion_main!(benches);

//! Behaviour of envelopes and key sets through the public API.

use std::collections::HashSet;

use pgveil_crypto::envelope::{NONCE_LEN, OVERHEAD, PREFIX_LEN};
use pgveil_crypto::{
    decode, encode_bytea_hex, encode_text, rng, ColumnKeys, CryptoError, DataKey, EncryptionMode,
};

const NAME: &str = "public.patients.ssn";

fn keys(name: &str, mode: EncryptionMode, versions: &[(u32, [u8; 32])]) -> ColumnKeys {
    let mut k = ColumnKeys::new(name).unwrap();
    for (v, bytes) in versions {
        k.add_version(*v, mode, &DataKey::from_bytes(*bytes))
            .unwrap();
    }
    k.set_active(versions.last().unwrap().0).unwrap();
    k
}

fn randomized() -> ColumnKeys {
    keys(NAME, EncryptionMode::Randomized, &[(1, [1; 32])])
}

fn deterministic() -> ColumnKeys {
    keys(NAME, EncryptionMode::Deterministic, &[(1, [2; 32])])
}

#[test]
fn round_trips_in_both_modes_and_all_storage_forms() {
    let long = vec![0x5au8; 1 << 20];
    let samples: [&[u8]; 6] = [
        b"",
        b"x",
        "😀 e\u{301} שלום".as_bytes(),
        b"123-45-6789",
        &[0u8; 100],
        &long,
    ];
    for k in [randomized(), deterministic()] {
        for &p in &samples {
            let e = k.encrypt(p).unwrap();
            assert_eq!(e.len(), p.len() + OVERHEAD);
            assert_eq!(k.decrypt(&e).unwrap().as_slice(), p);
            assert_eq!(k.decrypt_stored(&e).unwrap().as_slice(), p);
            assert_eq!(
                k.decrypt_stored(encode_text(&e).as_bytes())
                    .unwrap()
                    .as_slice(),
                p
            );
            assert_eq!(
                k.decrypt_stored(encode_bytea_hex(&e).as_bytes())
                    .unwrap()
                    .as_slice(),
                p
            );
            assert_eq!(decode(encode_text(&e).as_bytes()).unwrap().as_ref(), &e[..]);
        }
        let text = k.encrypt_text(b"abc").unwrap();
        assert!(text.starts_with("pgv1:"));
        assert_eq!(
            k.decrypt_stored(text.as_bytes()).unwrap().as_slice(),
            b"abc"
        );
    }
}

#[test]
fn header_fields() {
    let e = randomized().encrypt(b"v").unwrap();
    assert_eq!(&e[..5], &[0x11, 0, 0, 0, 1]);
    let e = keys(
        NAME,
        EncryptionMode::Deterministic,
        &[(0x0102_0304, [3; 32])],
    )
    .encrypt(b"v")
    .unwrap();
    assert_eq!(&e[..5], &[0x12, 1, 2, 3, 4]);
}

#[test]
fn encrypt_into_appends_and_leaves_buffer_alone_on_error() {
    let k = randomized();
    let mut buf = b"prefix".to_vec();
    k.encrypt_into(b"value", &mut buf).unwrap();
    assert_eq!(&buf[..6], b"prefix");
    assert_eq!(k.decrypt(&buf[6..]).unwrap().as_slice(), b"value");
    let mut out = b"keep".to_vec();
    assert!(k.decrypt_into(&buf[..buf.len() - 1], &mut out).is_err());
    assert_eq!(out, b"keep");
    k.decrypt_into(&buf[6..], &mut out).unwrap();
    assert_eq!(out, b"keepvalue");
}

/// The full encryption path: every envelope carries a fresh nonce. (Kept to
/// 50,000 values because this crate's generic AEAD code is unoptimized in
/// debug test builds; the million-nonce check below uses the same generator.)
#[test]
fn randomized_envelopes_never_repeat_a_nonce() {
    let k = randomized();
    let mut seen: HashSet<[u8; NONCE_LEN]> = HashSet::with_capacity(50_000);
    let mut buf = Vec::with_capacity(64);
    for _ in 0..50_000 {
        buf.clear();
        k.encrypt_into(b"0123456789abcdef", &mut buf).unwrap();
        let nonce: [u8; NONCE_LEN] = buf[5..PREFIX_LEN].try_into().unwrap();
        assert!(seen.insert(nonce), "nonce repeated");
    }
    assert_eq!(k.encryption_count(1), Some(50_000));
}

/// One million nonces from the generator `encrypt` uses: no repeats.
#[test]
fn a_million_nonces_never_repeat() {
    let mut all: Vec<u128> = (0..1_000_000)
        .map(|_| {
            let mut wide = [0u8; 16];
            wide[..NONCE_LEN].copy_from_slice(&rng::random_nonce());
            u128::from_le_bytes(wide)
        })
        .collect();
    all.sort_unstable();
    assert!(all.windows(2).all(|w| w[0] != w[1]), "nonce repeated");
}

#[test]
fn nonces_from_other_threads_differ() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| (0..10_000).map(|_| rng::random_nonce()).collect::<Vec<_>>())
        })
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for n in h.join().unwrap() {
            assert!(all.insert(n));
        }
    }
}

#[test]
fn randomized_ciphertexts_differ_for_equal_plaintexts() {
    let k = randomized();
    assert_ne!(k.encrypt(b"same").unwrap(), k.encrypt(b"same").unwrap());
}

#[test]
fn deterministic_equality_and_separation() {
    let k = deterministic();
    let a = k.encrypt(b"123-45-6789").unwrap();
    assert_eq!(a, k.encrypt(b"123-45-6789").unwrap());
    assert_ne!(a, k.encrypt(b"123-45-6780").unwrap());
    assert_ne!(k.encrypt(b"").unwrap(), k.encrypt(b"\0").unwrap());
    // Same data key bytes under another key name: unrelated ciphertext.
    let other_name = keys(
        "public.visits.patient_ssn",
        EncryptionMode::Deterministic,
        &[(1, [2; 32])],
    );
    let b = other_name.encrypt(b"123-45-6789").unwrap();
    assert_ne!(a[PREFIX_LEN..], b[PREFIX_LEN..]);
    // Same bytes, another version number: unrelated too.
    let other_version = keys(NAME, EncryptionMode::Deterministic, &[(2, [2; 32])]);
    let c = other_version.encrypt(b"123-45-6789").unwrap();
    assert_ne!(a[PREFIX_LEN..], c[PREFIX_LEN..]);
    // Columns sharing a key name (and key) produce joinable ciphertexts.
    let shared = keys(NAME, EncryptionMode::Deterministic, &[(1, [2; 32])]);
    assert_eq!(shared.encrypt(b"123-45-6789").unwrap(), a);
}

#[test]
fn encrypt_all_versions_covers_deterministic_versions_active_first() {
    let mut k = ColumnKeys::new(NAME).unwrap();
    k.add_version(
        1,
        EncryptionMode::Deterministic,
        &DataKey::from_bytes([1; 32]),
    )
    .unwrap();
    k.add_version(
        2,
        EncryptionMode::Deterministic,
        &DataKey::from_bytes([2; 32]),
    )
    .unwrap();
    k.add_version(
        3,
        EncryptionMode::Deterministic,
        &DataKey::from_bytes([3; 32]),
    )
    .unwrap();
    k.set_active(2).unwrap();
    let all = k.encrypt_all_versions(b"v").unwrap();
    let versions: Vec<u8> = all.iter().map(|e| e[4]).collect();
    assert_eq!(versions, [2, 3, 1]);
    assert_eq!(all[0], k.encrypt(b"v").unwrap());
    for e in &all {
        assert_eq!(k.decrypt(e).unwrap().as_slice(), b"v");
    }
    assert_eq!(
        randomized().encrypt_all_versions(b"v").unwrap_err(),
        CryptoError::NotDeterministic(NAME.into())
    );
}

#[test]
fn wrong_key_and_moved_ciphertext_fail_authentication() {
    for mode in [EncryptionMode::Randomized, EncryptionMode::Deterministic] {
        let k = keys(NAME, mode, &[(1, [7; 32])]);
        let e = k.encrypt(b"secret value").unwrap();
        let wrong_key = keys(NAME, mode, &[(1, [8; 32])]);
        assert_eq!(
            wrong_key.decrypt(&e).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        let moved = keys("public.other.column", mode, &[(1, [7; 32])]);
        assert_eq!(
            moved.decrypt(&e).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
    }
}

fn check_error_is_clean(err: &CryptoError) {
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("secret"), "{msg}");
    assert!(!msg.contains("[7, 7"), "{msg}");
}

#[test]
fn every_single_bit_flip_fails_binary_and_text() {
    for mode in [EncryptionMode::Randomized, EncryptionMode::Deterministic] {
        let k = keys(NAME, mode, &[(1, [7; 32])]);
        let e = k.encrypt(b"secret").unwrap();
        for i in 0..e.len() {
            for bit in 0..8 {
                let mut t = e.clone();
                t[i] ^= 1 << bit;
                let err = k.decrypt(&t).unwrap_err();
                check_error_is_clean(&err);
                assert!(k.decrypt_stored(&t).is_err());
            }
        }
        let text = encode_text(&e).into_bytes();
        for i in 0..text.len() {
            for bit in 0..8 {
                let mut t = text.clone();
                t[i] ^= 1 << bit;
                let err = k.decrypt_stored(&t).unwrap_err();
                check_error_is_clean(&err);
            }
        }
        let hex = encode_bytea_hex(&e).into_bytes();
        for i in 0..hex.len() {
            for bit in 0..8 {
                let mut t = hex.clone();
                t[i] ^= 1 << bit;
                assert!(k.decrypt_stored(&t).is_err());
            }
        }
    }
}

#[test]
fn truncation_at_every_length_fails() {
    for k in [randomized(), deterministic()] {
        let e = k.encrypt(b"secret value").unwrap();
        for len in 0..e.len() {
            let err = k.decrypt(&e[..len]).unwrap_err();
            check_error_is_clean(&err);
            if len < OVERHEAD {
                assert!(matches!(
                    err,
                    CryptoError::Truncated { .. } | CryptoError::UnsupportedVersion(_)
                ));
            } else {
                assert_eq!(err, CryptoError::AuthenticationFailed);
            }
            assert!(k.decrypt_stored(&e[..len]).is_err());
        }
        let text = encode_text(&e);
        for len in 0..text.len() {
            assert!(k.decrypt_stored(&text.as_bytes()[..len]).is_err());
        }
    }
}

#[test]
fn header_errors_are_typed() {
    let k = randomized();
    let mut e = k.encrypt(b"v").unwrap();
    e[4] = 9;
    assert_eq!(
        k.decrypt(&e).unwrap_err(),
        CryptoError::UnknownKeyVersion {
            key_name: NAME.into(),
            version: 9
        }
    );
    let mut e = k.encrypt(b"v").unwrap();
    e[0] = 0x12;
    assert_eq!(
        k.decrypt(&e).unwrap_err(),
        CryptoError::ModeMismatch {
            expected: EncryptionMode::Randomized,
            found: EncryptionMode::Deterministic
        }
    );
    e[0] = 0x21;
    assert_eq!(
        k.decrypt(&e).unwrap_err(),
        CryptoError::UnsupportedVersion(0x21)
    );
    assert_eq!(
        k.decrypt_stored(b"plain text").unwrap_err(),
        CryptoError::NotAnEnvelope
    );
}

#[test]
fn retired_versions_are_reported_as_retired() {
    let mut k = ColumnKeys::new(NAME).unwrap();
    k.add_version(1, EncryptionMode::Randomized, &DataKey::from_bytes([1; 32]))
        .unwrap();
    k.add_version(2, EncryptionMode::Randomized, &DataKey::from_bytes([2; 32]))
        .unwrap();
    k.set_active(1).unwrap();
    let old = k.encrypt(b"v").unwrap();
    k.set_active(2).unwrap();
    k.mark_retired(1);
    assert_eq!(
        k.decrypt(&old).unwrap_err(),
        CryptoError::KeyRetired {
            key_name: NAME.into(),
            version: 1
        }
    );
    assert_eq!(k.active_version(), Some(2));
    k.mark_retired(2);
    assert_eq!(
        k.encrypt(b"v").unwrap_err(),
        CryptoError::NoActiveKey(NAME.into())
    );
}

#[test]
fn encryption_limit_is_enforced_for_randomized_keys() {
    let mut k = randomized();
    k.set_encryption_limit(3).unwrap();
    for _ in 0..3 {
        k.encrypt(b"v").unwrap();
    }
    let err = k.encrypt(b"v").unwrap_err();
    assert_eq!(
        err,
        CryptoError::KeyExhausted {
            key_name: NAME.into(),
            version: 1,
            limit: 3
        }
    );
    assert!(err.to_string().contains("rotate"));
    assert_eq!(k.encryption_count(1), Some(3));
    let mut buf = b"x".to_vec();
    assert!(k.encrypt_into(b"v", &mut buf).is_err());
    assert_eq!(buf, b"x");
    // Decryption keeps working.
    let mut fresh = randomized();
    let e = fresh.encrypt(b"v").unwrap();
    assert_eq!(k.decrypt(&e).unwrap().as_slice(), b"v");
    // A persisted count is honoured.
    fresh.set_encryption_limit(10).unwrap();
    fresh.set_encryption_count(1, 10).unwrap();
    assert!(matches!(
        fresh.encrypt(b"v"),
        Err(CryptoError::KeyExhausted { .. })
    ));
    assert_eq!(
        fresh.set_encryption_limit((1 << 32) + 1).unwrap_err(),
        CryptoError::InvalidEncryptionLimit((1 << 32) + 1)
    );
    assert_eq!(randomized().encryption_limit(), 1 << 31);
    // Deterministic keys count but are not limited (SIV tolerates repeated nonces).
    let mut d = deterministic();
    d.set_encryption_limit(1).unwrap();
    d.encrypt(b"a").unwrap();
    d.encrypt(b"a").unwrap();
    assert_eq!(d.encryption_count(1), Some(2));
}

#[test]
fn key_names_are_validated() {
    for bad in [
        "",
        "ssn",
        "patients.ssn",
        "a.b.c.d",
        "a..c",
        "a.b.\n",
        &format!("a.b.{}", "x".repeat(64)),
    ] {
        assert!(
            matches!(ColumnKeys::new(bad), Err(CryptoError::InvalidKeyName(_))),
            "{bad:?}"
        );
    }
    assert!(ColumnKeys::new("public.Patients.\"ssn\"").is_ok());
}

#[test]
fn debug_output_has_no_key_material() {
    let k = keys(NAME, EncryptionMode::Deterministic, &[(1, [0x5a; 32])]);
    let dbg = format!("{k:?}");
    assert!(
        dbg.contains(NAME) && dbg.contains("v1 deterministic"),
        "{dbg}"
    );
    assert!(
        !dbg.contains("90, 90") && !dbg.contains("5a5a") && !dbg.contains("Wlpa"),
        "{dbg}"
    );
    assert_eq!(
        format!("{:?}", DataKey::from_bytes([0x5a; 32])),
        "DataKey(..)"
    );
}

#[test]
fn column_keys_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ColumnKeys>();
    let k = std::sync::Arc::new(randomized());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let k = k.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let e = k.encrypt(b"v").unwrap();
                    assert_eq!(k.decrypt(&e).unwrap().as_slice(), b"v");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(k.encryption_count(1), Some(4000));
}

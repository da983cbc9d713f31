//! Keyring lifecycle, serialization and KEK handling.

use pgveil_crypto::{
    ColumnKeys, CryptoError, DataKey, EncryptionMode, KekProvider, KeyState, Keyring, LocalKek,
    KEYRING_FORMAT,
};

const SSN: &str = "public.patients.ssn";
const NOTE: &str = "public.visits.note";

fn setup() -> (LocalKek, Keyring) {
    let kek = LocalKek::generate().unwrap().with_created_at(1_700_000_000);
    let mut ring = Keyring::new(kek.key_id());
    assert_eq!(
        ring.add_key(SSN, EncryptionMode::Deterministic, 100, &kek)
            .unwrap(),
        1
    );
    assert_eq!(
        ring.add_key(NOTE, EncryptionMode::Randomized, 100, &kek)
            .unwrap(),
        1
    );
    (kek, ring)
}

#[test]
fn add_rotate_decrypt_old_and_new_then_retire() {
    let (kek, mut ring) = setup();
    let v1 = ring.column_keys(SSN, &kek).unwrap();
    let old = v1.encrypt(b"123-45-6789").unwrap();

    assert_eq!(ring.rotate(SSN, 200, &kek).unwrap(), 2);
    assert_eq!(ring.active_version(SSN), Some(2));
    let states: Vec<_> = ring
        .list()
        .filter(|k| k.name == SSN)
        .map(|k| (k.version, k.state, k.mode))
        .collect();
    assert_eq!(
        states,
        [
            (1, KeyState::DecryptOnly, EncryptionMode::Deterministic),
            (2, KeyState::Active, EncryptionMode::Deterministic)
        ]
    );

    let v2 = ring.column_keys(SSN, &kek).unwrap();
    let new = v2.encrypt(b"123-45-6789").unwrap();
    assert_eq!(new[4], 2);
    assert_eq!(v2.decrypt(&old).unwrap().as_slice(), b"123-45-6789");
    assert_eq!(v2.decrypt(&new).unwrap().as_slice(), b"123-45-6789");
    assert_ne!(old, new);
    let lookups = v2.encrypt_all_versions(b"123-45-6789").unwrap();
    assert_eq!(lookups, vec![new.clone(), old.clone()]);

    assert_eq!(
        ring.retire(SSN, 2).unwrap_err(),
        CryptoError::CannotRetireActive {
            key_name: SSN.into(),
            version: 2
        }
    );
    ring.retire(SSN, 1).unwrap();
    let v3 = ring.column_keys(SSN, &kek).unwrap();
    assert_eq!(
        v3.decrypt(&old).unwrap_err(),
        CryptoError::KeyRetired {
            key_name: SSN.into(),
            version: 1
        }
    );
    assert_eq!(v3.decrypt(&new).unwrap().as_slice(), b"123-45-6789");
    assert_eq!(
        v3.versions().collect::<Vec<_>>(),
        [(2, EncryptionMode::Deterministic)]
    );
}

#[test]
fn lifecycle_errors() {
    let (kek, mut ring) = setup();
    assert_eq!(
        ring.add_key(SSN, EncryptionMode::Randomized, 1, &kek)
            .unwrap_err(),
        CryptoError::KeyAlreadyExists(SSN.into())
    );
    assert!(matches!(
        ring.add_key("nodots", EncryptionMode::Randomized, 1, &kek),
        Err(CryptoError::InvalidKeyName(_))
    ));
    assert_eq!(
        ring.rotate("public.x.y", 1, &kek).unwrap_err(),
        CryptoError::KeyNotFound("public.x.y".into())
    );
    assert_eq!(
        ring.retire(SSN, 9).unwrap_err(),
        CryptoError::KeyVersionNotFound {
            key_name: SSN.into(),
            version: 9
        }
    );
    let other = LocalKek::generate().unwrap();
    assert!(matches!(
        ring.rotate(SSN, 1, &other),
        Err(CryptoError::KekMismatch { .. })
    ));
    assert!(matches!(
        ring.column_keys(SSN, &other),
        Err(CryptoError::KekMismatch { .. })
    ));
    // The same id with different bytes fails at unwrap, not silently.
    let impostor = LocalKek::generate().unwrap().with_key_id(kek.key_id());
    assert_eq!(
        ring.column_keys(SSN, &impostor).unwrap_err(),
        CryptoError::UnwrapFailed
    );
}

#[test]
fn rotate_with_mode_switches_mode() {
    let (kek, mut ring) = setup();
    let old = ring.column_keys(NOTE, &kek).unwrap().encrypt(b"x").unwrap();
    assert_eq!(
        ring.rotate_with_mode(NOTE, EncryptionMode::Deterministic, 5, &kek)
            .unwrap(),
        2
    );
    let keys = ring.column_keys(NOTE, &kek).unwrap();
    assert_eq!(keys.active_mode(), Some(EncryptionMode::Deterministic));
    assert_eq!(keys.decrypt(&old).unwrap().as_slice(), b"x");
    assert_eq!(keys.encrypt(b"x").unwrap(), keys.encrypt(b"x").unwrap());
}

#[test]
fn serialization_round_trip() {
    let (kek, mut ring) = setup();
    ring.rotate(SSN, 300, &kek).unwrap();
    ring.retire(SSN, 1).unwrap();
    let before = ring.column_keys(SSN, &kek).unwrap().encrypt(b"v").unwrap();

    let json = ring.to_json();
    assert!(json.contains("\"format\": 1"));
    assert!(
        json.contains("\"state\": \"decrypt-only\"") || json.contains("\"state\": \"retired\"")
    );
    assert!(json.contains("\"mode\": \"deterministic\""));
    let back: Keyring = json.parse().unwrap();
    assert_eq!(back, {
        let mut r = ring.clone();
        r.mark_stored();
        r
    });
    assert_eq!(back.to_string(), json);
    assert_eq!(back.kek_id(), kek.key_id());
    assert_eq!(back.revision(), ring.revision());
    assert_eq!(back.loaded_revision(), ring.revision());
    let after = back.column_keys(SSN, &kek).unwrap();
    assert_eq!(after.decrypt(&before).unwrap().as_slice(), b"v");
    assert_eq!(after.encrypt(b"v").unwrap(), before);
    assert_eq!(back.names().collect::<Vec<_>>(), [SSN, NOTE]);
    let all = back.all_column_keys(&kek).unwrap();
    assert_eq!(all.len(), 2);
    let info = back
        .list()
        .find(|k| k.name == SSN && k.version == 2)
        .unwrap();
    assert_eq!((info.created_at, info.state), (300, KeyState::Active));
}

#[test]
fn revisions_support_compare_and_set() {
    let (kek, mut ring) = setup();
    assert_eq!(ring.loaded_revision(), 0);
    assert_eq!(ring.revision(), 1);
    ring.mark_stored();
    ring.rotate(SSN, 1, &kek).unwrap();
    ring.rotate(SSN, 2, &kek).unwrap();
    assert_eq!((ring.loaded_revision(), ring.revision()), (1, 2));
}

#[test]
fn wrapped_keys_cannot_be_swapped_between_entries() {
    let (kek, ring) = setup();
    let json = ring.to_json();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    let (a, b) = (
        keys[0]["wrapped_dek"].as_str().unwrap(),
        keys[1]["wrapped_dek"].as_str().unwrap(),
    );
    let swapped = json.replace(a, "@@").replace(b, a).replace("@@", b);
    let tampered: Keyring = swapped.parse().unwrap();
    assert_eq!(
        tampered.column_keys(SSN, &kek).unwrap_err(),
        CryptoError::UnwrapFailed
    );
    // Relabelling the mode is caught as well.
    let relabelled: Keyring = json
        .replacen("\"deterministic\"", "\"randomized\"", 1)
        .parse()
        .unwrap();
    assert!(relabelled.all_column_keys(&kek).is_err());
}

#[test]
fn invalid_documents_are_refused_without_echoing_content() {
    let (_, ring) = setup();
    let json = ring.to_json();
    for (doc, needle) in [
        ("not json".to_string(), "syntax"),
        (json.replace("\"format\": 1", "\"format\": 2"), "format 2"),
        (
            json.replacen("\"version\": 1", "\"version\": 0", 1),
            "version 0",
        ),
        (
            json.replacen("\"kek_id\"", "\"extra\": \"secret-stuff\", \"kek_id\"", 1),
            "line",
        ),
    ] {
        let err = doc.parse::<Keyring>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg}");
        assert!(!msg.contains("secret-stuff"), "{msg}");
    }
    let two_active = json.replacen(
        &format!("\"name\": \"{NOTE}\""),
        &format!("\"name\": \"{SSN}\""),
        1,
    );
    let two_active = two_active.replacen("\"version\": 1", "\"version\": 5", 1);
    assert!(two_active.parse::<Keyring>().is_err());
    assert_eq!(KEYRING_FORMAT, 1);
}

#[test]
fn kek_rotation_rewraps_without_changing_data_keys() {
    let (old_kek, mut ring) = setup();
    let e = ring
        .column_keys(NOTE, &old_kek)
        .unwrap()
        .encrypt(b"v")
        .unwrap();
    let new_kek = LocalKek::generate().unwrap();
    ring.rewrap(&old_kek, &new_kek).unwrap();
    assert_eq!(ring.kek_id(), new_kek.key_id());
    assert_eq!(
        ring.column_keys(NOTE, &new_kek)
            .unwrap()
            .decrypt(&e)
            .unwrap()
            .as_slice(),
        b"v"
    );
    assert!(ring.column_keys(NOTE, &old_kek).is_err());
}

#[test]
fn debug_of_secret_bearing_types_shows_no_key_bytes() {
    let kek_bytes = [0x5a; 32];
    let kek = LocalKek::from_bytes(kek_bytes);
    let mut ring = Keyring::new(kek.key_id());
    ring.add_key(SSN, EncryptionMode::Deterministic, 1, &kek)
        .unwrap();
    let keys: ColumnKeys = ring.column_keys(SSN, &kek).unwrap();
    let dek = DataKey::from_bytes(kek_bytes);
    let wrapped = kek.wrap(&dek, b"aad").unwrap();
    let wrapped_b64 = pgveil_crypto::encode_text(&wrapped);
    let ring_json = ring.to_json();
    let wrapped_in_ring = ring_json
        .split("\"wrapped_dek\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    for dbg in [
        format!("{kek:?}"),
        format!("{ring:?}"),
        format!("{keys:?}"),
        format!("{dek:?}"),
    ] {
        assert!(!dbg.contains("90, 90"), "{dbg}");
        assert!(!dbg.contains("5a5a"), "{dbg}");
        assert!(!dbg.contains("WlpaWlpa"), "{dbg}");
        assert!(!dbg.contains(wrapped_in_ring), "{dbg}");
        assert!(!dbg.contains(&wrapped_b64[5..20]), "{dbg}");
    }
}

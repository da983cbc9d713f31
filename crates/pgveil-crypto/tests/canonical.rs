//! Canonical plaintext: every logical type in text and binary format.

use pgveil_crypto::canonical::{
    canonical_from_binary, canonical_from_text, canonical_from_text_in, canonical_to_binary,
    canonical_to_text, canonical_to_text_in, CanonicalError, LogicalType, SessionTimeZone,
};
use pgveil_crypto::{ColumnKeys, DataKey, EncryptionMode};
use proptest::prelude::*;

use LogicalType::*;

fn canon(ty: LogicalType, input: &str) -> Result<String, CanonicalError> {
    canonical_from_text(ty, input.as_bytes()).map(|v| String::from_utf8(v).unwrap())
}

/// canonical → binary → canonical is stable, canonical text is a fixed
/// point of the text parser, and binary → canonical → binary is the identity.
fn assert_stable(ty: LogicalType, canonical: &[u8]) {
    assert_eq!(
        canonical_from_text_in(ty, canonical, SessionTimeZone::UTC).unwrap(),
        canonical,
        "{ty}: canonical text is not a fixed point"
    );
    let binary = canonical_to_binary(ty, canonical).unwrap();
    assert_eq!(
        canonical_from_binary(ty, &binary).unwrap(),
        canonical,
        "{ty}: via binary"
    );
    assert_eq!(
        canonical_to_binary(ty, &canonical_from_binary(ty, &binary).unwrap()).unwrap(),
        binary
    );
    assert_eq!(canonical_to_text(ty, canonical).unwrap(), canonical);
}

/// (type, text input, expected canonical text)
const CASES: &[(LogicalType, &str, &str)] = &[
    (Text, "", ""),
    (Text, "hello world", "hello world"),
    (Text, "  spaces kept  ", "  spaces kept  "),
    (Text, "😀 e\u{301} שָׁלוֹם مرحبا", "😀 e\u{301} שָׁלוֹם مرحبا"),
    (Varchar, "", ""),
    (Varchar, "Zoë 👩‍👩‍👧", "Zoë 👩‍👩‍👧"),
    (Int2, " -32768 ", "-32768"),
    (Int2, "+007", "7"),
    (Int4, "2147483647", "2147483647"),
    (Int4, "-0", "0"),
    (Int8, "\t-9223372036854775808\n", "-9223372036854775808"),
    (Numeric, "0012.3400", "12.3400"),
    (Numeric, "-1.5e-3", "-0.0015"),
    (Numeric, "1e3", "1000"),
    (Numeric, "NaN", "NaN"),
    (Numeric, "-inf", "-Infinity"),
    (
        Numeric,
        "123456789012345678901234567890.000000000000000000001",
        "123456789012345678901234567890.000000000000000000001",
    ),
    (Float4, "3.14159", "3.14159"),
    (Float4, "1e10", "1e+10"),
    (Float4, "-Infinity", "-Infinity"),
    (Float8, "0.1", "0.1"),
    (Float8, " 1e16 ", "1e+16"),
    (Float8, "-0", "-0"),
    (Float8, "nan", "NaN"),
    (Float8, "1.7976931348623157e308", "1.7976931348623157e+308"),
    (Float8, "4.9e-324", "5e-324"),
    (Bool, "TRUE", "t"),
    (Bool, " off ", "f"),
    (Bool, "y", "t"),
    (Bool, "0", "f"),
    (Date, "2024-02-29", "2024-02-29"),
    (Date, "0044-03-15 BC", "0044-03-15 BC"),
    (Date, "infinity", "infinity"),
    (Time, "13:45:00.123456", "13:45:00.123456"),
    (Time, "7:05", "07:05:00"),
    (Time, "24:00:00", "24:00:00"),
    (
        Timestamp,
        "2024-02-29 13:45:00.123456",
        "2024-02-29 13:45:00.123456",
    ),
    (
        Timestamp,
        "2024-02-29T13:45:00.100",
        "2024-02-29 13:45:00.1",
    ),
    (Timestamp, "-infinity", "-infinity"),
    (
        Timestamptz,
        "2024-02-29 13:45:00+05:30",
        "2024-02-29 08:15:00+00",
    ),
    (
        Timestamptz,
        "2024-02-29 23:45:00-08",
        "2024-03-01 07:45:00+00",
    ),
    (
        Timestamptz,
        "2024-02-29T13:45:00.5Z",
        "2024-02-29 13:45:00.5+00",
    ),
    (
        Timestamptz,
        "1999-12-31 23:59:59.999999+00",
        "1999-12-31 23:59:59.999999+00",
    ),
    (
        Uuid,
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    (
        Uuid,
        "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    (
        Uuid,
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    (
        Json,
        r#"{ "b": 1,  "a": [1, 2.50] }"#,
        r#"{ "b": 1,  "a": [1, 2.50] }"#,
    ),
    (Json, r#""😀\u00e9""#, r#""😀\u00e9""#),
    (
        Jsonb,
        r#"{ "b": 1,  "a": [1, 2.50], "b": "שלום" }"#,
        r#"{"a": [1, 2.50], "b": "שלום"}"#,
    ),
    (Jsonb, "\"e\u{301}😀\"", "\"e\u{301}😀\""),
    (Bytea, "", "\\x"),
    (Bytea, "\\xDEADbeef", "\\xdeadbeef"),
    (Bytea, "\\x de ad ", "\\xdead"),
    (Bytea, "ab\\\\c\\000\\377", "\\x61625c6300ff"),
];

#[test]
fn examples_for_every_type() {
    for &(ty, input, want) in CASES {
        let got = canon(ty, input).unwrap_or_else(|e| panic!("{ty} {input:?}: {e}"));
        assert_eq!(got, want, "{ty} {input:?}");
        assert_stable(ty, got.as_bytes());
    }
    let covered: std::collections::HashSet<_> = CASES.iter().map(|c| c.0).collect();
    assert_eq!(covered.len(), LogicalType::ALL.len());
}

#[test]
fn binary_examples() {
    let cases: &[(LogicalType, &[u8], &str)] = &[
        (Int2, &[0xff, 0xfe], "-2"),
        (Int4, &[0, 0, 1, 0], "256"),
        (Int8, &[0x80, 0, 0, 0, 0, 0, 0, 0], "-9223372036854775808"),
        (Float4, &[0x3f, 0xc0, 0, 0], "1.5"),
        (
            Float8,
            &[0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a],
            "0.1",
        ),
        (Float8, &[0x7f, 0xf0, 0, 0, 0, 0, 0, 0], "Infinity"),
        (Bool, &[1], "t"),
        (Bool, &[0], "f"),
        (Date, &[0, 0, 0, 0], "2000-01-01"),
        (Date, &[0xff, 0xff, 0xff, 0xff], "1999-12-31"),
        (Date, &[0x7f, 0xff, 0xff, 0xff], "infinity"),
        (Time, &[0, 0, 0, 0x14, 0x1d, 0xd7, 0x60, 0x00], "24:00:00"),
        (
            Timestamp,
            &[0, 0, 0, 0, 0, 0, 0, 1],
            "2000-01-01 00:00:00.000001",
        ),
        (Timestamptz, &[0x80, 0, 0, 0, 0, 0, 0, 0], "-infinity"),
        (Timestamptz, &[0xff; 8], "1999-12-31 23:59:59.999999+00"),
        (
            Uuid,
            &[
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11,
            ],
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        (
            Numeric,
            &[0, 2, 0, 0, 0x40, 0, 0, 2, 0, 12, 0x0d, 0x48],
            "-12.34",
        ),
        (Jsonb, b"\x01{\"b\":1,\"a\":2}", "{\"a\": 2, \"b\": 1}"),
        (Json, b"[1, 2]", "[1, 2]"),
        (Bytea, &[0, 0xff], "\\x00ff"),
        (Text, "ünï".as_bytes(), "ünï"),
    ];
    for &(ty, binary, want) in cases {
        let got = canonical_from_binary(ty, binary).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(String::from_utf8(got.clone()).unwrap(), want, "{ty}");
        assert_stable(ty, &got);
    }
    for (ty, bad) in [
        (Int4, &[0u8; 3][..]),
        (Int8, &[0; 9][..]),
        (Uuid, &[0; 15][..]),
        (Bool, &[][..]),
        (Jsonb, &b"\x02{}"[..]),
        (Jsonb, &[][..]),
        (Numeric, &[0, 1][..]),
        (Text, &[0xff, 0xfe][..]),
        (Text, &b"a\0b"[..]),
        (Date, &[0x80, 0, 0, 1][..]),
        (Time, &[0xff; 8][..]),
        (
            Timestamp,
            &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe][..],
        ),
        (Json, &b"{"[..]),
    ] {
        assert!(canonical_from_binary(ty, bad).is_err(), "{ty} {bad:?}");
    }
}

#[test]
fn empty_input_for_every_type() {
    for ty in LogicalType::ALL {
        match canonical_from_text(ty, b"") {
            Ok(c) => assert_stable(ty, &c),
            Err(e) => assert!(
                matches!(
                    e,
                    CanonicalError::InvalidSyntax(_) | CanonicalError::InvalidText(_)
                ),
                "{ty}: {e:?}"
            ),
        }
        if ty.binary_len().is_none() && !matches!(ty, Numeric | Jsonb | Json) {
            let c = canonical_from_binary(ty, b"").unwrap();
            assert_stable(ty, &c);
        }
    }
    assert_eq!(canon(Text, "").unwrap(), "");
    assert_eq!(canon(Bytea, "").unwrap(), "\\x");
}

#[test]
fn one_megabyte_values() {
    let big_text: String = "añ😀 ".repeat(1 << 18);
    assert!(big_text.len() >= 1 << 20);
    for ty in [Text, Varchar] {
        let c = canonical_from_text(ty, big_text.as_bytes()).unwrap();
        assert_eq!(c, big_text.as_bytes());
        assert_stable(ty, &c);
    }
    let json = format!("{{\"k\": [\"{big_text}\", 1]}}");
    for ty in [Json, Jsonb] {
        let c = canonical_from_text(ty, json.as_bytes()).unwrap();
        assert_stable(ty, &c);
    }
    let raw: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let c = canonical_from_binary(Bytea, &raw).unwrap();
    assert_eq!(c.len(), 2 + 2 * raw.len());
    assert_eq!(canonical_to_binary(Bytea, &c).unwrap(), raw);
    assert_eq!(canonical_from_text(Bytea, &c).unwrap(), c);
    // Encrypts and decrypts at that size too.
    let mut keys = ColumnKeys::new("public.t.blob").unwrap();
    keys.add_version(1, EncryptionMode::Randomized, &DataKey::from_bytes([9; 32]))
        .unwrap();
    keys.set_active(1).unwrap();
    assert_eq!(
        keys.decrypt(&keys.encrypt(&c).unwrap()).unwrap().as_slice(),
        &c[..]
    );
}

#[test]
fn refused_inputs_are_typed_and_never_echo_the_value() {
    let cases: &[(LogicalType, &str)] = &[
        (Int2, "32768"),
        (Int4, "12SECRET"),
        (Int4, "0x1F"),
        (Int8, "1_000"),
        (Int8, "99999999999999999999"),
        (Numeric, "SECRET"),
        (Numeric, "1e999999"),
        (Float8, "1e400"),
        (Float8, "1e-400"),
        (Float4, "1e39"),
        (Float8, "0x1p3"),
        (Bool, "SECRET"),
        (Bool, "o"),
        (Date, "epoch"),
        (Date, "02/29/2024"),
        (Date, "2023-02-29"),
        (Time, "allballs"),
        (Time, "25:00"),
        (Timestamp, "now"),
        (Timestamp, "today"),
        (Timestamptz, "2024-02-29 13:45:00"),
        (Timestamptz, "2024-02-29 13:45:00 America/SECRET"),
        (Uuid, "SECRET"),
        (Uuid, " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (Json, "{SECRET}"),
        (Jsonb, "[1,]"),
        (Bytea, "\\xabc"),
        (Bytea, "\\q"),
        (Text, "a\0SECRET"),
    ];
    for &(ty, input) in cases {
        let err = canon(ty, input).expect_err(input);
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains("SECRET"), "{msg}");
        assert!(input.len() < 5 || !msg.contains(input), "{msg}");
        assert_eq!(err.sqlstate().len(), 5);
    }
    assert_eq!(
        canon(Int2, "32768").unwrap_err(),
        CanonicalError::OutOfRange(Int2)
    );
    assert_eq!(
        canon(Timestamptz, "2024-01-01 00:00").unwrap_err(),
        CanonicalError::TimeZoneRequired
    );
    assert!(matches!(
        canon(Date, "epoch").unwrap_err(),
        CanonicalError::Unsupported { .. }
    ));
    assert!(canonical_from_text(Text, &[0xc3, 0x28]).is_err());
}

#[test]
fn session_time_zone() {
    assert_eq!(
        SessionTimeZone::from_pg_setting("UTC"),
        SessionTimeZone::UTC
    );
    assert_eq!(
        SessionTimeZone::from_pg_setting("Etc/UTC"),
        SessionTimeZone::UTC
    );
    assert_eq!(
        SessionTimeZone::from_pg_setting("Etc/GMT+5"),
        SessionTimeZone::Fixed(-5 * 3600)
    );
    assert_eq!(
        SessionTimeZone::from_pg_setting("Europe/Paris"),
        SessionTimeZone::Unknown
    );
    let c = canonical_from_text_in(
        Timestamptz,
        b"2024-06-01 12:00",
        SessionTimeZone::Fixed(-5 * 3600),
    )
    .unwrap();
    assert_eq!(c, b"2024-06-01 17:00:00+00");
    assert_eq!(
        canonical_to_text_in(Timestamptz, &c, SessionTimeZone::Fixed(-5 * 3600)).unwrap(),
        b"2024-06-01 12:00:00-05"
    );
    assert_eq!(
        canonical_to_text_in(Timestamptz, &c, SessionTimeZone::Unknown).unwrap(),
        c
    );
    assert_eq!(
        canonical_to_text_in(
            Timestamp,
            b"2024-06-01 12:00:00",
            SessionTimeZone::Fixed(3600)
        )
        .unwrap(),
        b"2024-06-01 12:00:00"
    );
}

#[test]
fn logical_type_names_and_oids() {
    for ty in LogicalType::ALL {
        assert_eq!(ty.to_string().parse::<LogicalType>().unwrap(), ty);
        assert_eq!(ty.sql_name().parse::<LogicalType>().unwrap(), ty);
        assert_eq!(LogicalType::from_oid(ty.type_oid()), Some(ty));
    }
    for (name, ty) in [
        ("character varying", Varchar),
        ("CHARACTER  VARYING", Varchar),
        ("smallint", Int2),
        ("integer", Int4),
        ("int", Int4),
        ("bigint", Int8),
        ("decimal", Numeric),
        ("real", Float4),
        ("double precision", Float8),
        ("boolean", Bool),
        ("timestamp with time zone", Timestamptz),
        ("timestamp without time zone", Timestamp),
    ] {
        assert_eq!(name.parse::<LogicalType>().unwrap(), ty, "{name}");
    }
    let oids: Vec<u32> = LogicalType::ALL.iter().map(|t| t.type_oid()).collect();
    assert_eq!(
        oids,
        [25, 1043, 21, 23, 20, 1700, 700, 701, 16, 1082, 1083, 1114, 1184, 2950, 114, 3802, 17]
    );
    assert!("varchar(20)".parse::<LogicalType>().is_err());
    assert!("money".parse::<LogicalType>().is_err());
}

/// The reason for canonical forms: a text-format and a binary-format client
/// writing the same value produce the same deterministic ciphertext.
#[test]
fn text_and_binary_clients_agree_under_deterministic_encryption() {
    let mut keys = ColumnKeys::new("public.patients.dob").unwrap();
    keys.add_version(
        1,
        EncryptionMode::Deterministic,
        &DataKey::from_bytes([4; 32]),
    )
    .unwrap();
    keys.set_active(1).unwrap();
    let from_text = canonical_from_text(Date, b" 1980-7-04 ").unwrap();
    let days = (1980 - 2000) * 365 - 5 + 185; // 1980-07-04: 7119 days before 2000-01-01
    let from_binary = canonical_from_binary(Date, &i32::to_be_bytes(days)).unwrap();
    assert_eq!(from_text, from_binary);
    assert_eq!(
        keys.encrypt(&from_text).unwrap(),
        keys.encrypt(&from_binary).unwrap()
    );
}

const TS_MIN: i64 = -211_813_488_000_000_000;
const TS_END: i64 = 9_223_371_331_200_000_000;

fn binary_identity(ty: LogicalType, binary: &[u8]) -> Result<(), TestCaseError> {
    let canonical =
        canonical_from_binary(ty, binary).map_err(|e| TestCaseError::fail(format!("{ty}: {e}")))?;
    prop_assert_eq!(
        canonical_to_binary(ty, &canonical).unwrap(),
        binary,
        "{}",
        ty
    );
    prop_assert_eq!(
        canonical_from_text_in(ty, &canonical, SessionTimeZone::UTC).unwrap(),
        canonical.clone()
    );
    Ok(())
}

fn text_stable(ty: LogicalType, input: &str) -> Result<Vec<u8>, TestCaseError> {
    let canonical = canonical_from_text(ty, input.as_bytes())
        .map_err(|e| TestCaseError::fail(format!("{ty} {input:?}: {e}")))?;
    let binary = canonical_to_binary(ty, &canonical).unwrap();
    prop_assert_eq!(
        canonical_from_binary(ty, &binary).unwrap(),
        canonical.clone()
    );
    prop_assert_eq!(
        canonical_from_text(ty, &canonical).unwrap(),
        canonical.clone()
    );
    Ok(canonical)
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        (any::<i32>(), 0u32..6, -8i32..8).prop_map(|(m, f, e)| format!(
            "{m}.{:0w$}e{e}",
            7,
            w = f as usize + 1
        )),
        "[a-zA-Z0-9 é😀\"\\\\/\\n\\t]{0,8}"
            .prop_map(|s| format!("{s:?}").replace("\\u{", "\\u00").replace('}', "")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(" ,"))),
            prop::collection::vec(("[a-c]{0,2}", inner), 0..5).prop_map(|v| {
                let members: Vec<String> =
                    v.into_iter().map(|(k, x)| format!("{k:?} :{x}")).collect();
                format!("{{ {} }}", members.join(","))
            }),
        ]
    })
}

proptest! {
    #[test]
    fn ints(v in any::<i64>(), ws in "[ \t\n]{0,2}", plus in any::<bool>()) {
        binary_identity(Int8, &v.to_be_bytes())?;
        binary_identity(Int4, &(v as i32).to_be_bytes())?;
        binary_identity(Int2, &(v as i16).to_be_bytes())?;
        let sign = if plus && v >= 0 { "+" } else { "" };
        let c = text_stable(Int8, &format!("{ws}{sign}{v}{ws}"))?;
        prop_assert_eq!(c, v.to_string().into_bytes());
    }

    #[test]
    fn floats(bits64 in any::<u64>(), bits32 in any::<u32>()) {
        let f = f64::from_bits(bits64);
        let bits64 = if f.is_nan() { f64::NAN.to_bits() } else { bits64 };
        binary_identity(Float8, &bits64.to_be_bytes())?;
        let g = f32::from_bits(bits32);
        let bits32 = if g.is_nan() { f32::NAN.to_bits() } else { bits32 };
        binary_identity(Float4, &bits32.to_be_bytes())?;
        // Non-canonical NaN payloads still decode, to "NaN".
        prop_assert_eq!(canonical_from_binary(Float8, &(bits64 | 0x7ff0_0000_0000_0001).to_be_bytes()).unwrap().len() <= 24, true);
        if f.is_finite() {
            text_stable(Float8, &format!("{f:e}"))?;
            text_stable(Float8, &format!("{f}"))?;
        }
    }

    #[test]
    fn bools(b in any::<bool>(), word in prop::sample::select(vec!["t", "TRUE", "yes", "on", "1", "f", "False", "NO", "off", "0"])) {
        binary_identity(Bool, &[u8::from(b)])?;
        text_stable(Bool, word)?;
    }

    #[test]
    fn dates(days in -2_451_545i32..2_145_031_949) {
        binary_identity(Date, &days.to_be_bytes())?;
        let c = canonical_from_binary(Date, &days.to_be_bytes()).unwrap();
        text_stable(Date, std::str::from_utf8(&c).unwrap())?;
    }

    #[test]
    fn times(micros in 0i64..=86_400_000_000) {
        binary_identity(Time, &micros.to_be_bytes())?;
    }

    #[test]
    fn timestamps(micros in TS_MIN..TS_END, offset_min in -15i64 * 60..15 * 60) {
        binary_identity(Timestamp, &micros.to_be_bytes())?;
        binary_identity(Timestamptz, &micros.to_be_bytes())?;
        // The same instant written at another offset canonicalizes to the same text.
        let utc = canonical_from_binary(Timestamptz, &micros.to_be_bytes()).unwrap();
        let offset = i32::try_from(offset_min * 60).unwrap();
        let local = canonical_to_text_in(Timestamptz, &utc, SessionTimeZone::Fixed(offset)).unwrap();
        let local = std::str::from_utf8(&local).unwrap();
        if let Ok(c) = canonical_from_text(Timestamptz, local.as_bytes()) {
            prop_assert_eq!(c, utc);
        }
    }

    #[test]
    fn uuids(bytes in any::<[u8; 16]>()) {
        binary_identity(Uuid, &bytes)?;
        let c = canonical_from_binary(Uuid, &bytes).unwrap();
        let s = std::str::from_utf8(&c).unwrap();
        prop_assert_eq!(text_stable(Uuid, &s.to_uppercase())?, c.clone());
        prop_assert_eq!(text_stable(Uuid, &format!("{{{}}}", s.replace('-', "")))?, c);
    }

    #[test]
    fn numerics(int in "[0-9]{0,40}", frac in prop::option::of("[0-9]{0,40}"), exp in prop::option::of(-60i32..60), neg in any::<bool>()) {
        prop_assume!(!int.is_empty() || frac.as_ref().is_some_and(|f| !f.is_empty()));
        let mut s = String::new();
        if neg { s.push('-'); }
        s.push_str(&int);
        if let Some(f) = &frac { s.push('.'); s.push_str(f); }
        if let Some(e) = exp { s.push_str(&format!("e{e}")); }
        let c = text_stable(Numeric, &s)?;
        let binary = canonical_to_binary(Numeric, &c).unwrap();
        binary_identity(Numeric, &binary)?;
    }

    #[test]
    fn raw_numeric_binaries_are_stable(weight in -20i16..20, dscale in 0u16..60, digits in prop::collection::vec(0i16..10000, 0..12), sign in prop::sample::select(vec![0u16, 0x4000])) {
        let mut b = Vec::new();
        b.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in &digits { b.extend_from_slice(&d.to_be_bytes()); }
        let c = canonical_from_binary(Numeric, &b).unwrap();
        let normalized = canonical_to_binary(Numeric, &c).unwrap();
        binary_identity(Numeric, &normalized)?;
    }

    #[test]
    fn byteas(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        binary_identity(Bytea, &raw)?;
        let escaped: String = raw.iter().map(|&b| match b {
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\{b:03o}"),
        }).collect();
        let c = text_stable(Bytea, &escaped)?;
        prop_assert_eq!(c, canonical_from_binary(Bytea, &raw).unwrap());
    }

    #[test]
    fn texts(s in "[^\u{0}]{0,64}") {
        for ty in [Text, Varchar] {
            binary_identity(ty, s.as_bytes())?;
            prop_assert_eq!(text_stable(ty, &s)?, s.as_bytes().to_vec());
        }
    }

    #[test]
    fn json_documents(doc in json_value()) {
        let c = text_stable(Json, &doc)?;
        prop_assert_eq!(c, doc.as_bytes().to_vec());
        binary_identity(Json, doc.as_bytes())?;
        let c = text_stable(Jsonb, &doc)?;
        let mut binary = vec![1u8];
        binary.extend_from_slice(&c);
        binary_identity(Jsonb, &binary)?;
    }
}

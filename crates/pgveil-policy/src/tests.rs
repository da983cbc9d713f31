//! Loading and validating whole policies.

use super::*;

const ISSUE_EXAMPLE: &str = r#"[tables."public.patients"]
first_name      = { type = "text", label = "pii" }
last_name       = { type = "text", label = "pii" }
ssn             = { type = "text", mode = "deterministic", label = "phi" }
date_of_birth   = { type = "date", label = "phi" }
medical_history = { type = "text", label = "phi" }

[tables."public.visits"]
patient_ssn = { type = "text", mode = "deterministic", label = "phi", key = "public.patients.ssn" }  # share a key so joins work
notes       = { type = "text", label = "phi" }
"#;

const CLINIC: &str = include_str!("../../../config/clinic.example.toml");

fn table(s: &str) -> QualifiedTable {
    QualifiedTable::parse(s).unwrap()
}

fn col(s: &str) -> ColumnRef {
    ColumnRef::parse(s).unwrap()
}

fn ident(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

/// Parse `src`, expecting failure; return the errors.
fn errors(src: &str) -> Vec<PolicyError> {
    match Policy::from_toml_str(src, "policy.toml") {
        Ok(p) => panic!("expected errors, got {p:?}"),
        Err(e) => e.0,
    }
}

/// The single error of `src`.
fn error(src: &str) -> PolicyError {
    let mut errs = errors(src);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.remove(0)
}

#[test]
fn issue_example_means_what_it_says() {
    let p = Policy::from_toml_str(ISSUE_EXAMPLE, "policy.toml").unwrap();
    assert_eq!(p.origin(), "policy.toml");
    assert_eq!(p.tables().len(), 2);
    assert_eq!(p.columns().count(), 7);

    let patients = p.table(&table("public.patients")).unwrap();
    assert_eq!(patients.line(), 1);
    assert_eq!(patients.columns().len(), 5);

    let first = p.lookup(&table("patients"), &ident("first_name")).unwrap();
    assert_eq!(first.column, col("public.patients.first_name"));
    assert_eq!(first.ty, ColumnType::Text);
    assert_eq!(first.typmod, -1);
    assert_eq!(first.mode, Mode::Randomized); // the default
    assert_eq!(first.label.as_ref().map(Label::as_str), Some("pii"));
    assert_eq!(first.key, first.column); // its own key by default
    assert!(!first.shares_key());
    assert_eq!(first.line, 2);

    let ssn = p.lookup_column(&col("public.patients.ssn")).unwrap();
    assert_eq!(ssn.mode, Mode::Deterministic);
    assert!(ssn.is_deterministic());
    assert_eq!(ssn.label.as_ref().unwrap().as_str(), "phi");

    let dob = p
        .lookup_column(&col("public.patients.date_of_birth"))
        .unwrap();
    assert_eq!(dob.ty, ColumnType::Date);
    assert_eq!(dob.ty.type_oid(), 1082);
    assert_eq!(dob.mode, Mode::Randomized);

    let patient_ssn = p.lookup_column(&col("public.visits.patient_ssn")).unwrap();
    assert_eq!(patient_ssn.mode, Mode::Deterministic);
    assert_eq!(patient_ssn.key, col("public.patients.ssn"));
    assert!(patient_ssn.shares_key());
    assert_eq!(patient_ssn.line, 9);

    let notes = p.lookup_column(&col("public.visits.notes")).unwrap();
    assert_eq!(notes.key, col("public.visits.notes"));

    // Unprotected columns and tables.
    assert!(p.lookup(&table("visits"), &ident("visit_date")).is_none());
    assert!(p.table(&table("public.insurance")).is_none());
    assert!(p.table(&table("other.patients")).is_none());

    // Keys: one per column, except the shared SSN key.
    assert_eq!(p.keys().len(), 6);
    let key = p.key(&col("public.patients.ssn")).unwrap();
    assert_eq!(key.mode, Mode::Deterministic);
    assert_eq!(
        key.columns,
        vec![col("public.patients.ssn"), col("public.visits.patient_ssn")]
    );
    assert!(p.key(&col("public.visits.patient_ssn")).is_none());

    let labels: Vec<&str> = p.labels().into_iter().map(Label::as_str).collect();
    assert_eq!(labels, ["phi", "pii"]);

    // Catalog-spelling lookups.
    let t = p.table_by_name("public", "visits").unwrap();
    assert!(t.column_by_name("patient_ssn").is_some());
    assert!(p.table_by_name("public", "Visits").is_none());
}

#[test]
fn clinic_example_parses() {
    let p = Policy::from_toml_str(CLINIC, "clinic.example.toml").unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = p.tables().map(|t| t.table().to_string()).collect();
    assert_eq!(
        names,
        [
            "public.insurance",
            "public.lab_results",
            "public.patients",
            "public.visits"
        ]
    );

    let patients = p.table(&table("public.patients")).unwrap();
    let cols: Vec<&str> = patients
        .columns()
        .map(|c| c.column.column.as_str())
        .collect();
    assert_eq!(
        cols,
        [
            "address",
            "date_of_birth",
            "email",
            "first_name",
            "last_name",
            "medical_history",
            "phone",
            "ssn"
        ]
    );
    for c in patients.columns() {
        let expected_mode = if c.column.column.as_str() == "ssn" {
            Mode::Deterministic
        } else {
            Mode::Randomized
        };
        assert_eq!(c.mode, expected_mode, "{}", c.column);
        assert!(!c.shares_key());
    }
    assert_eq!(
        p.lookup_column(&col("public.patients.date_of_birth"))
            .unwrap()
            .ty,
        ColumnType::Date
    );

    let visits = p.table(&table("public.visits")).unwrap();
    let cols: Vec<&str> = visits.columns().map(|c| c.column.column.as_str()).collect();
    assert_eq!(
        cols,
        [
            "assessment",
            "objective",
            "patient_ssn",
            "plan",
            "subjective"
        ]
    );
    let patient_ssn = visits.column(&ident("patient_ssn")).unwrap();
    assert_eq!(patient_ssn.mode, Mode::Deterministic);
    assert_eq!(patient_ssn.key, col("public.patients.ssn"));
    assert!(visits.column(&ident("visit_date")).is_none());

    let member = p.lookup_column(&col("public.insurance.member_id")).unwrap();
    assert_eq!(member.mode, Mode::Deterministic);
    assert!(!member.shares_key());
    let copay = p
        .lookup_column(&col("public.insurance.copay_cents"))
        .unwrap();
    assert_eq!(copay.ty, ColumnType::Int4);
    assert_eq!(copay.label.as_ref().unwrap().as_str(), "financial");

    let deterministic_keys: Vec<String> = p
        .keys()
        .filter(|k| k.mode == Mode::Deterministic)
        .map(|k| k.name.to_string())
        .collect();
    assert_eq!(
        deterministic_keys,
        ["public.insurance.member_id", "public.patients.ssn"]
    );
    for c in p.columns() {
        assert!(c.label.is_some(), "{} has no label", c.column);
    }

    assert!(p.mentions_protected_table("SELECT * FROM Visits WHERE id = 1"));
    assert!(!p.mentions_protected_table("SELECT now()"));
}

#[test]
fn case_folding_and_quoting() {
    let src = r#"
[tables."Clinic.Patients"]
FirstName = { type = "TEXT" }
"\"LastName\"" = { type = "Character Varying(64)" }

[tables."public.\"Mixed.Case\""]
"\"Col.With.Dot\"" = { type = "int8", mode = "Deterministic" }
"#;
    let p = Policy::from_toml_str(src, "p.toml").unwrap();
    let t = p.table(&table("clinic.patients")).unwrap();
    assert!(t.column(&ident("firstname")).is_some());
    assert!(t.column(&ident("FIRSTNAME")).is_some());
    assert!(t.column(&ident("\"FirstName\"")).is_none());
    let last = t.column_by_name("LastName").unwrap();
    assert_eq!(last.column.to_string(), "clinic.patients.\"LastName\"");
    assert_eq!(last.ty, ColumnType::Varchar);
    assert_eq!(last.typmod, 68);
    assert_eq!(last.type_spec().to_string(), "varchar(64)");

    let mixed = p.table_by_name("public", "Mixed.Case").unwrap();
    let c = mixed.column_by_name("Col.With.Dot").unwrap();
    assert_eq!(c.mode, Mode::Deterministic);
    assert_eq!(
        c.column.to_string(),
        "public.\"Mixed.Case\".\"Col.With.Dot\""
    );
    assert!(p.table(&table("public.\"mixed.case\"")).is_none());
}

#[test]
fn header_style_columns() {
    let src = r#"
[tables."public.patients".ssn]
type = "text"
mode = "deterministic"

[tables."public.patients".notes]
type = "text"
"#;
    let p = Policy::from_toml_str(src, "p.toml").unwrap();
    assert_eq!(p.columns().count(), 2);
    let ssn = p.lookup_column(&col("public.patients.ssn")).unwrap();
    assert_eq!(ssn.mode, Mode::Deterministic);
    assert_eq!(ssn.line, 2);
}

#[test]
fn empty_and_embedded() {
    let p = Policy::from_toml_str("", "p.toml").unwrap();
    assert!(p.is_empty());
    assert!(!p.mentions_protected_table("SELECT * FROM patients"));
    assert!(Policy::default().is_empty());

    let config = r#"
listen = "0.0.0.0:6432"
[upstream]
host = "db"

[tables.patients]
ssn = { type = "text", mode = "deterministic" }
bad = { type = "txt" }
"#;
    // Standalone: other top-level keys are errors.
    let errs = errors(config);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(
        errs[0].to_string(),
        "policy.toml:2: unknown top-level key \"listen\"; a policy file holds [tables.\"schema.table\"] sections and [access]"
    );
    assert_eq!(errs[1].line, 3);
    // Embedded: ignored, line numbers relative to the whole file.
    let errs = Policy::from_embedded_toml_str(config, "pgveil.toml").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs.0[0]
        .to_string()
        .starts_with("pgveil.toml:8: public.patients.bad: unknown type \"txt\""));
    let ok = Policy::from_embedded_toml_str(&config.replace("txt", "text"), "pgveil.toml").unwrap();
    assert_eq!(ok.columns().count(), 2);
}

#[test]
fn unknown_type_lists_accepted() {
    let e = error("[tables.patients]\nssn = { type = \"string\" }\n");
    assert_eq!(e.line, 2);
    assert_eq!(e.subject.as_deref(), Some("public.patients.ssn"));
    let msg = e.to_string();
    assert!(
        msg.starts_with("policy.toml:2: public.patients.ssn: unknown type \"string\"; accepted types: text, varchar/character varying/varchar(n), "),
        "{msg}"
    );
    assert!(msg.ends_with("uuid, json, jsonb, bytea"), "{msg}");

    let e = error("[tables.patients]\nssn = { type = \"text(11)\" }\n");
    assert_eq!(
        e.to_string(),
        "policy.toml:2: public.patients.ssn: type text takes no (…) modifier; only varchar(n) and numeric(p,s) do"
    );
    let e = error("[tables.patients]\nssn = { type = \"varchar(0)\" }\n");
    assert!(matches!(
        e.kind,
        PolicyErrorKind::Type(TypeError::BadModifier { .. })
    ));
}

#[test]
fn unknown_mode() {
    let e = error("[tables.patients]\n\nssn = { type = \"text\", mode = \"determinstic\" }\n");
    assert_eq!(
        e.to_string(),
        "policy.toml:3: public.patients.ssn: unknown mode \"determinstic\"; accepted modes: randomized (the default), deterministic"
    );
}

#[test]
fn unknown_field_names_field_and_line() {
    let src = "[tables.patients]\nssn = { type = \"text\",\n  mdoe = \"deterministic\" }\nx = { type = \"text\", encrypt = true }\n";
    let errs = errors(src);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        errs[0].to_string(),
        "policy.toml:3: public.patients.ssn: unknown field `mdoe` (did you mean `mode`?); a column takes `type`, `mode`, `label`, `key` and `mask`"
    );
    assert_eq!(
        errs[1].to_string(),
        "policy.toml:4: public.patients.x: unknown field `encrypt`; a column takes `type`, `mode`, `label`, `key` and `mask`"
    );
}

#[test]
fn unknown_key_reference() {
    let src = ISSUE_EXAMPLE.replace(
        "key = \"public.patients.ssn\"",
        "key = \"public.patient.ssn\"",
    );
    let e = error(&src);
    assert_eq!(
        e.to_string(),
        "policy.toml:9: public.visits.patient_ssn: key \"public.patient.ssn\" is not a protected column in this policy (did you mean \"public.patients.ssn\"?)"
    );
    assert!(matches!(e.kind, PolicyErrorKind::UnknownKey { .. }));

    // An unprotected column of a protected table is not a key either.
    let src = ISSUE_EXAMPLE.replace(
        "key = \"public.patients.ssn\"",
        "key = \"other.things.zzz\"",
    );
    assert_eq!(
        error(&src).to_string(),
        "policy.toml:9: public.visits.patient_ssn: key \"other.things.zzz\" is not a protected column in this policy"
    );

    // Case folding applies to references too.
    let src = ISSUE_EXAMPLE.replace(
        "key = \"public.patients.ssn\"",
        "key = \"Public.Patients.SSN\"",
    );
    assert!(Policy::from_toml_str(&src, "p").is_ok());
    let src = ISSUE_EXAMPLE.replace("key = \"public.patients.ssn\"", "key = \"patients.ssn\"");
    assert!(Policy::from_toml_str(&src, "p").is_ok());
    let src = ISSUE_EXAMPLE.replace(
        "key = \"public.patients.ssn\"",
        "key = \"public.\\\"Patients\\\".ssn\"",
    );
    assert!(matches!(
        error(&src).kind,
        PolicyErrorKind::UnknownKey { .. }
    ));

    let src = ISSUE_EXAMPLE.replace("key = \"public.patients.ssn\"", "key = \"ssn\"");
    let e = error(&src);
    assert_eq!(
        e.to_string(),
        "policy.toml:9: public.visits.patient_ssn: invalid key \"ssn\": expected schema.table.column, found 1 dot-separated part(s); write the owning column as schema.table.column"
    );
}

#[test]
fn own_key_is_the_default() {
    let src = "[tables.t]\na = { type = \"text\", key = \"public.t.a\" }\n";
    let p = Policy::from_toml_str(src, "p").unwrap();
    let a = p.lookup_column(&col("t.a")).unwrap();
    assert!(!a.shares_key());
}

#[test]
fn duplicate_columns_after_folding() {
    let src = "[tables.patients]\nFirstName = { type = \"text\" }\nfirstname = { type = \"text\" }\n\"\\\"FIRSTNAME\\\"\" = { type = \"text\" }\n";
    let e = error(src);
    assert_eq!(e.line, 3);
    assert_eq!(e.subject.as_deref(), Some("public.patients.firstname"));
    assert_eq!(
        e.kind,
        PolicyErrorKind::DuplicateColumn {
            spelling: "firstname".into(),
            first_spelling: "FirstName".into(),
            first_line: 2
        }
    );
    assert!(e.to_string().contains("unquoted names fold to lower case"));
}

#[test]
fn duplicate_tables() {
    let src = r#"[tables.patients]
ssn = { type = "text" }

[tables."public.patients"]
notes = { type = "text" }
ssn = { type = "text" }
"#;
    let errs = errors(src);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        errs[0].to_string(),
        "policy.toml:4: public.patients: table listed twice: \"public.patients\" here and \"patients\" at line 1 name the same table"
    );
    assert!(matches!(
        errs[1].kind,
        PolicyErrorKind::DuplicateColumn { first_line: 2, .. }
    ));
    assert_eq!(errs[1].line, 6);
}

#[test]
fn mode_mismatch_on_shared_key() {
    let src = ISSUE_EXAMPLE.replace(
        "patient_ssn = { type = \"text\", mode = \"deterministic\",",
        "patient_ssn = { type = \"text\",",
    );
    let e = error(&src);
    assert_eq!(
        e.to_string(),
        "policy.toml:9: public.visits.patient_ssn: is randomized but shares the key of \"public.patients.ssn\", which is deterministic; columns sharing a key must have the same mode"
    );
    // Randomized columns may share a key regardless of type.
    let src = "[tables.t]\na = { type = \"text\" }\nb = { type = \"jsonb\", key = \"t.a\" }\n";
    let p = Policy::from_toml_str(src, "p").unwrap();
    assert_eq!(p.key(&col("t.a")).unwrap().columns.len(), 2);
}

#[test]
fn type_mismatch_on_shared_deterministic_key() {
    let src = r#"[tables.t]
a = { type = "text", mode = "deterministic" }
b = { type = "varchar(11)", mode = "deterministic", key = "t.a" }
c = { type = "int4", mode = "deterministic" }
d = { type = "bigint", mode = "deterministic", key = "t.c" }
e = { type = "date", mode = "deterministic", key = "t.a" }
"#;
    let e = error(src);
    assert_eq!(
        e.to_string(),
        "policy.toml:6: public.t.e: has type date but shares the deterministic key of \"public.t.a\", of type text; equal values would not encrypt equally (a shared deterministic key needs the same type, both text/varchar, or both int2/int4/int8)"
    );
}

#[test]
fn key_chains_are_rejected() {
    let src = r#"[tables.t]
c = { type = "text", mode = "deterministic" }
b = { type = "text", mode = "deterministic", key = "public.t.c" }
a = { type = "text", mode = "deterministic", key = "public.t.b" }
"#;
    let e = error(src);
    assert_eq!(
        e.to_string(),
        "policy.toml:4: public.t.a: key \"public.t.b\" itself uses the key of \"public.t.c\"; name the owner directly: key = \"public.t.c\""
    );
    // A cycle is a chain too (every member is reported).
    let src = "[tables.t]\na = { type = \"text\", key = \"t.b\" }\nb = { type = \"text\", key = \"t.a\" }\n";
    let errs = errors(src);
    assert_eq!(errs.len(), 2);
    assert!(errs
        .iter()
        .all(|e| matches!(e.kind, PolicyErrorKind::KeyChain { .. })));
}

#[test]
fn invalid_names_and_labels() {
    let src = r#"[tables."public.pat ients"]
a = { type = "text" }

[tables."a.b.c"]
a = { type = "text" }

[tables.t]
"first name" = { type = "text" }
ok = { type = "text", label = "PII" }
ok2 = { type = "text", label = "" }
ok3 = { type = "text", label = "phi-2" }
ok4 = { type = "text", label = "contact_info" }
"#;
    let errs = errors(src);
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 6, "{shown:#?}");
    assert!(shown[0].starts_with(
        "policy.toml:1: invalid table name \"public.pat ients\": unexpected 'i' at byte 11"
    ));
    assert_eq!(
        shown[1],
        "policy.toml:4: invalid table name \"a.b.c\": expected table or schema.table, found 3 dot-separated part(s)"
    );
    assert!(shown[2].starts_with("policy.toml:8: public.t: invalid column name \"first name\""));
    assert_eq!(
        shown[3],
        "policy.toml:9: public.t.ok: invalid label \"PII\"; a label is 1 to 32 of a-z, 0-9 and _, starting with a letter (e.g. pii, phi)"
    );
    assert_eq!(errs[4].line, 10);
    assert_eq!(errs[5].line, 11);
}

#[test]
fn long_names() {
    let long = "a".repeat(64);
    let src = format!("[tables.{long}]\nx = {{ type = \"text\" }}\n");
    let e = error(&src);
    assert!(e
        .to_string()
        .contains("is 64 bytes long; PostgreSQL truncates names to 63 bytes"));
}

#[test]
fn wrong_shapes() {
    let src = r#"tables = 5"#;
    assert_eq!(
        error(src).to_string(),
        "policy.toml:1: `tables` must be a table of tables, like [tables.\"public.patients\"], not integer"
    );
    let src = "[tables]\npatients = \"ssn\"\n";
    assert_eq!(
        error(src).to_string(),
        "policy.toml:2: public.patients: a table entry must be a table of columns, like [tables.\"public.patients\"], not string"
    );
    let src = "[tables.patients]\nssn = \"text\"\n";
    assert_eq!(
        error(src).to_string(),
        "policy.toml:2: public.patients.ssn: a column entry must be a table like { type = \"text\" }, not string"
    );
    let src = "[tables.patients]\nssn = { type = 5, mode = true }\n";
    let errs = errors(src);
    assert_eq!(errs.len(), 2);
    assert_eq!(
        errs[0].to_string(),
        "policy.toml:2: public.patients.ssn: `type` must be a string, not integer"
    );
    let src = "[tables.patients]\nssn = { mode = \"deterministic\" }\n";
    assert_eq!(
        error(src).to_string(),
        "policy.toml:2: public.patients.ssn: missing `type`; say what the column holds, e.g. type = \"text\""
    );
    let src = "[tables.patients]\n";
    assert_eq!(
        error(src).to_string(),
        "policy.toml:1: public.patients: table lists no protected columns; add columns or remove the section"
    );
}

#[test]
fn dotted_table_name_is_explained() {
    let src = "[tables.public.patients]\nssn = { type = \"text\" }\n";
    let e = error(src);
    assert_eq!(
        e.to_string(),
        "policy.toml:1: TOML read `public.patients` as nested tables; quote the whole table name: [tables.\"public.patients\"]"
    );
}

#[test]
fn toml_syntax_errors_have_lines() {
    let e = error("[tables.patients]\nssn = { type = \"text\" \n");
    assert_eq!(e.line, 2, "{e}");
    assert!(
        e.to_string().starts_with("policy.toml:2: invalid TOML: "),
        "{e}"
    );
    // A TOML duplicate key is a syntax error.
    let errs = errors("[tables.patients]\nssn = { type = \"text\" }\nssn = { type = \"text\" }\n");
    assert_eq!(errs[0].line, 3, "{errs:#?}");
}

#[test]
fn all_errors_are_collected_in_line_order() {
    let src = r#"[tables.patients]
ssn = { type = "strng", mode = "deterministic" }
dob = { type = "date", mode = "sometimes" }
x = { typ = "text" }

[tables.visits]
patient_ssn = { type = "text", mode = "deterministic", key = "public.patient.ssn" }
"#;
    let errs = Policy::from_toml_str(src, "policy.toml").unwrap_err();
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3, 4, 4, 7], "{errs}");
    let text = errs.to_string();
    assert_eq!(text.lines().count(), 5);
    assert!(text
        .lines()
        .nth(2)
        .unwrap()
        .contains("unknown field `typ` (did you mean `type`?)"));
    assert!(text.lines().nth(3).unwrap().contains("missing `type`"));
}

#[test]
fn policy_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Policy>();
    assert_traits::<PolicyErrors>();
}

const ACCESS_EXAMPLE: &str = r#"
[tables.patients]
ssn = { type = "text", mode = "deterministic", label = "phi", mask = "last4" }
name = { type = "text", label = "pii" }
dob = { type = "date", label = "phi" }
notes = { type = "text" }

[access]
default = "deny"

[access.roles.clinician]
phi = "decrypt"
pii = "decrypt"
unlabeled = "decrypt"

[access.roles.billing]
phi = "mask"
pii = "decrypt"
"public.patients.dob" = "deny"

[access.write]
phi = ["clinician"]
"#;

#[test]
fn access_rules_decide_most_permissive_with_column_overrides() {
    use crate::access::{Access, MaskKind};
    let p = Policy::from_toml_str(ACCESS_EXAMPLE, "policy.toml").unwrap();
    let rules = p.access().expect("access rules");
    let ssn = p.lookup_column(&col("patients.ssn")).unwrap();
    let dob = p.lookup_column(&col("patients.dob")).unwrap();
    let name = p.lookup_column(&col("patients.name")).unwrap();
    let notes = p.lookup_column(&col("patients.notes")).unwrap();
    assert_eq!(ssn.mask(), MaskKind::Last4);
    assert_eq!(dob.mask(), MaskKind::Year, "default mask for a date");
    assert_eq!(name.mask(), MaskKind::First);

    assert_eq!(rules.decide(["clinician"], ssn), Access::Decrypt);
    assert_eq!(rules.decide(["billing"], ssn), Access::Mask);
    assert_eq!(
        rules.decide(["billing"], dob),
        Access::Deny,
        "column beats label"
    );
    assert_eq!(
        rules.decide(["billing"], notes),
        Access::Deny,
        "no rule: default"
    );
    assert_eq!(rules.decide(["nobody"], name), Access::Deny);
    // A role inheriting from both gets the most permissive.
    assert_eq!(rules.decide(["billing", "clinician"], dob), Access::Decrypt);

    assert!(rules.may_write(["clinician"], ssn));
    assert!(!rules.may_write(["billing"], ssn), "phi writers are listed");
    assert!(rules.may_write(["billing"], name), "pii: decrypt may write");
    assert!(!rules.may_write(["billing"], notes));
    assert!(rules.may_write(["clinician"], notes));
}

#[test]
fn access_errors_name_the_line() {
    let bad_label = ACCESS_EXAMPLE.replace(
        "unlabeled = \"decrypt\"\n",
        "unlabeled = \"decrypt\"\npiii = \"decrypt\"\n",
    );
    let errs = errors(&bad_label);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let msg = errs[0].to_string();
    assert!(msg.contains("\"piii\" is neither a label in use"), "{msg}");
    assert!(msg.starts_with("policy.toml:15:"), "{msg}");

    let errs = errors(&ACCESS_EXAMPLE.replace("default = \"deny\"\n", ""));
    assert!(
        errs[0].to_string().contains("default = \"deny\""),
        "{errs:#?}"
    );

    let errs = errors(&ACCESS_EXAMPLE.replace("phi = \"mask\"", "phi = \"show\""));
    assert!(
        errs[0]
            .to_string()
            .contains("must be \"decrypt\", \"mask\" or \"deny\""),
        "{errs:#?}"
    );

    // A mask must fit the column's type.
    let e = error("[tables.patients]\ndob = { type = \"date\", mask = \"last4\" }\n");
    assert_eq!(e.line, 2);
    assert!(matches!(e.kind, PolicyErrorKind::InvalidMask { .. }), "{e}");
    let e = error("[tables.patients]\nssn = { type = \"text\", mask = \"stars\" }\n");
    assert!(
        e.to_string().contains("last4, first, email, year or null"),
        "{e}"
    );
}

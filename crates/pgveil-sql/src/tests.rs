use super::*;
use proptest::prelude::*;

fn policy() -> Policy {
    Policy::from_toml_str(
        include_str!("../../../config/clinic.example.toml"),
        "clinic",
    )
    .unwrap()
}

fn plan_of(sql: &str) -> Arc<Plan> {
    match analyze(sql, &policy()).unwrap() {
        Analysis::Planned(p) => p,
        Analysis::Passthrough => panic!("passthrough: {sql}"),
    }
}

fn refusal(sql: &str) -> Refusal {
    match analyze(sql, &policy()) {
        Err(r) => r,
        Ok(a) => panic!("not refused: {sql}: {a:?}"),
    }
}

fn col(s: &str) -> ColumnRef {
    ColumnRef::parse(s).unwrap()
}

fn lits(sql: &str) -> Vec<(String, String, Comparison)> {
    plan_of(sql).statements[0]
        .literals
        .iter()
        .map(|l| {
            (
                sql[l.span.clone()].to_owned(),
                l.target.column.to_string(),
                l.usage,
            )
        })
        .collect()
}

#[test]
fn insert_with_columns_multi_row() {
    let sql = "INSERT INTO patients (first_name, ssn, created_at) VALUES ('Ann', '123-45-6789', now()), ('Bo', NULL, DEFAULT)";
    let p = plan_of(sql);
    let s = &p.statements[0];
    assert_eq!(s.kind, StatementKind::Insert);
    let got: Vec<_> = s
        .literals
        .iter()
        .map(|l| (&sql[l.span.clone()], l.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("'Ann'", "Ann"),
            ("'123-45-6789'", "123-45-6789"),
            ("'Bo'", "Bo")
        ]
    );
    assert_eq!(s.literals[1].target.column, col("public.patients.ssn"));
    assert_eq!(s.literals[1].usage, Comparison::Write);
    assert_eq!(s.nulls.len(), 1);
    assert_eq!(&sql[s.nulls[0].span.clone()], "NULL");
    assert!(s.writes.contains(&col("patients.ssn")));
}

#[test]
fn escapes_and_multibyte_spans() {
    let sql = "/* é€ */ INSERT INTO public.patients (\"first_name\", last_name) VALUES ('Zoë''s', E'a\\nb')";
    let s = &plan_of(sql).statements[0];
    assert_eq!(&sql[s.literals[0].span.clone()], "'Zoë''s'");
    assert_eq!(s.literals[0].value, "Zoë's");
    assert_eq!(&sql[s.literals[1].span.clone()], "E'a\\nb'");
    assert_eq!(s.literals[1].value, "a\nb");
    let sql = "SELECT id FROM patients\n -- ünïcode ☃\n WHERE /* ∑ */ ssn = '123-45-6789'";
    assert_eq!(
        lits(sql),
        [(
            "'123-45-6789'".into(),
            "public.patients.ssn".into(),
            Comparison::Equality
        )]
    );
}

#[test]
fn casts_cover_the_whole_expression() {
    let sql = "INSERT INTO patients (date_of_birth, phone) VALUES ('1990-01-01'::date, CAST('555' AS text))";
    let s = &plan_of(sql).statements[0];
    assert_eq!(&sql[s.literals[0].span.clone()], "'1990-01-01'::date");
    assert_eq!(s.literals[0].value, "1990-01-01");
    assert_eq!(&sql[s.literals[1].span.clone()], "CAST('555' AS text)");
    let sql = "INSERT INTO insurance (copay_cents, member_id) VALUES (-250, 'M1')";
    let s = &plan_of(sql).statements[0];
    assert_eq!(&sql[s.literals[0].span.clone()], "-250");
    assert_eq!(s.literals[0].value, "-250");
}

#[test]
fn parameters() {
    let s = &plan_of("INSERT INTO patients (first_name, ssn) VALUES ($1, $2) ON CONFLICT (ssn) DO UPDATE SET first_name = EXCLUDED.first_name, email = $3").statements[0];
    assert_eq!(s.params.len(), 3);
    assert_eq!(s.params[&2].target.column, col("patients.ssn"));
    assert_eq!(s.params[&3].target.column, col("patients.email"));
    let s = &plan_of("SELECT * FROM visits WHERE patient_ssn = ANY($1) AND provider = $2")
        .statements[0];
    assert!(s.params[&1].array);
    assert_eq!(s.params[&1].usage, Comparison::Equality);
    assert!(!s.params.contains_key(&2));
    let r = refusal("SELECT 1 FROM patients p JOIN insurance i ON i.patient_id = p.id WHERE p.ssn = $1 AND i.member_id = $1");
    assert_eq!(r.sqlstate, "0A000");
    // Same key: fine.
    plan_of("SELECT 1 FROM patients p JOIN visits v ON v.patient_ssn = p.ssn WHERE p.ssn = $1 AND v.patient_ssn = $1");
}

#[test]
fn update_delete_returning() {
    let sql = "UPDATE patients SET phone = '555-0100', email = NULL WHERE ssn = '123-45-6789' RETURNING id, phone";
    assert_eq!(
        lits(sql),
        [
            (
                "'555-0100'".into(),
                "public.patients.phone".into(),
                Comparison::Write
            ),
            (
                "'123-45-6789'".into(),
                "public.patients.ssn".into(),
                Comparison::Equality
            )
        ]
    );
    let sql = "DELETE FROM insurance i WHERE i.member_id IN ('A1', 'B2') AND payer = 'x'";
    assert_eq!(lits(sql).len(), 2);
    let sql = "SELECT * FROM patients WHERE ssn <> '1' AND email IS NOT NULL";
    let s = &plan_of(sql).statements[0];
    assert!(s.literals[0].negated);
    assert!(s.reads.contains(&col("patients.medical_history")));
}

#[test]
fn allowed_reads() {
    for sql in [
        "SELECT p.first_name, v.notes_id FROM patients p JOIN visits v ON v.patient_ssn = p.ssn",
        "SELECT ssn, count(*) FROM patients GROUP BY ssn",
        "SELECT DISTINCT ssn FROM patients",
        "SELECT count(DISTINCT ssn), count(email) FROM patients",
        "SELECT id FROM visits WHERE patient_ssn IN (SELECT ssn FROM patients WHERE id = 3)",
        "SELECT id FROM patients p WHERE EXISTS (SELECT 1 FROM visits v WHERE v.patient_ssn = p.ssn)",
        "SELECT 1 FROM patients JOIN visits USING (id) WHERE visit_date > '2020-01-01'",
        "ALTER TABLE patients ADD COLUMN x int",
    ] {
        plan_of(sql);
    }
    assert!(analyze("BEGIN", &policy()).is_ok());
    let s = &plan_of(
        "INSERT INTO visits (patient_id, patient_ssn) SELECT id, ssn FROM patients WHERE id = 1",
    )
    .statements[0];
    assert_eq!(
        s.copies,
        [ColumnCopy {
            from: col("patients.ssn"),
            to: col("visits.patient_ssn")
        }]
    );
}

#[test]
fn refusals_name_column_and_hide_values() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("SELECT upper(first_name) FROM patients WHERE id = 'CANARY-1'", "0A000", Some("public.patients.first_name")),
        ("SELECT * FROM patients WHERE email LIKE 'CANARY-2%'", "0A000", Some("public.patients.email")),
        ("SELECT * FROM patients WHERE ssn > 'CANARY-3'", "0A000", Some("public.patients.ssn")),
        ("SELECT * FROM patients WHERE ssn BETWEEN 'CANARY-4' AND 'z'", "0A000", Some("public.patients.ssn")),
        ("SELECT * FROM patients ORDER BY last_name", "0A000", Some("public.patients.last_name")),
        ("SELECT first_name AS f FROM patients ORDER BY f", "0A000", Some("public.patients.first_name")),
        ("SELECT max(ssn) FROM patients", "0A000", Some("public.patients.ssn")),
        ("SELECT * FROM patients WHERE email = 'CANARY-5'", "0A000", Some("public.patients.email")),
        ("SELECT first_name || 'CANARY-6' FROM patients", "0A000", Some("public.patients.first_name")),
        ("SELECT date_of_birth::text FROM patients", "0A000", Some("public.patients.date_of_birth")),
        ("SELECT x FROM (SELECT ssn AS x FROM patients) s", "0A000", Some("public.patients.ssn")),
        ("WITH c AS (SELECT email FROM patients) SELECT * FROM c", "0A000", Some("public.patients.email")),
        ("SELECT ssn FROM patients UNION SELECT patient_ssn FROM visits", "0A000", Some("public.patients.ssn")),
        ("INSERT INTO patients (ssn) SELECT member_id FROM insurance", "0A000", Some("public.patients.ssn")),
        ("INSERT INTO patients (ssn) SELECT 'CANARY-7'", "0A000", Some("public.patients.ssn")),
        ("INSERT INTO patients (first_name, last_name) SELECT t.a, t.a FROM unnest('{CANARY-30}'::text[]) AS t(a)", "0A000", Some("public.patients.last_name")),
        ("INSERT INTO patients (first_name, last_name) SELECT a, a FROM (VALUES ('CANARY-31')) v(a)", "0A000", Some("public.patients.last_name")),
        ("INSERT INTO patients (email) VALUES (lower('CANARY-8'))", "0A000", Some("public.patients.email")),
        ("INSERT INTO patients (email) VALUES ($$CANARY-9$$)", "0A000", Some("public.patients.email")),
        ("UPDATE patients SET email = provider FROM visits WHERE visits.provider = 'CANARY-10'", "0A000", Some("public.patients.email")),
        ("SELECT 1 FROM patients p JOIN insurance i ON i.member_id = p.ssn", "0A000", Some("public.insurance.member_id")),
        ("SELECT 1 FROM patients p JOIN visits v ON v.provider = p.ssn", "0A000", Some("public.patients.ssn")),
        ("SELECT ssn FROM patients p, visits v WHERE assessment = 'CANARY-11'", "0A000", Some("public.visits.assessment")),
        ("INSERT INTO patients VALUES ('CANARY-12')", "0A000", None),
        ("MERGE INTO patients p USING visits v ON p.ssn = v.patient_ssn WHEN MATCHED THEN UPDATE SET email = 'CANARY-13'", "0A000", None),
        ("DO $$ BEGIN UPDATE patients SET email = 'CANARY-14'; END $$", "0A000", None),
        ("CALL update_patients('CANARY-15')", "0A000", None),
        ("COPY patients FROM STDIN (FORMAT native)", "0A000", None),
        ("COPY patients TO '/tmp/CANARY-16'", "0A000", None),
        ("INSERT INTO patients (ssn) VALUES ('CANARY-17' THIS DOES NOT PARSE", "0A000", None),
        ("SELECT CASE WHEN id = 1 THEN email END FROM patients", "0A000", Some("public.patients.email")),
    ];
    for (sql, state, column) in cases {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, *state, "{sql}");
        assert_eq!(
            r.column.as_ref().map(ToString::to_string).as_deref(),
            *column,
            "{sql}: {r:?}"
        );
        if let Some(c) = column {
            assert!(r.reason.contains(c), "{sql}: {}", r.reason);
        }
        assert!(!r.reason.contains("CANARY"), "{sql}: {}", r.reason);
        assert!(!r.to_string().contains("CANARY"));
    }
}

#[test]
fn ambiguous_columns() {
    // Only patients has `email`: resolves.
    plan_of("SELECT 1 FROM patients JOIN visits ON patient_ssn = ssn WHERE email IS NULL");
    let r = refusal("SELECT 1 FROM patients a JOIN patients b ON a.id = b.id WHERE ssn = 'x'");
    assert_eq!(r.sqlstate, "42702");
}

#[test]
fn search_path_and_quoted_names() {
    let opts = AnalyzeOptions {
        search_path: vec![
            Ident::parse("app").unwrap(),
            Ident::parse("public").unwrap(),
        ],
        ..Default::default()
    };
    let a = analyze_with(
        "SELECT 1 FROM PATIENTS WHERE SSN = 'x'",
        &policy(),
        &opts,
        None,
    )
    .unwrap();
    let Analysis::Planned(p) = a else { panic!() };
    assert_eq!(p.statements[0].literals.len(), 1);
    // A differently-cased quoted name is another table.
    let s = &plan_of("SELECT 1 FROM \"Patients\" WHERE ssn = 'x'").statements[0];
    assert!(s.literals.is_empty());
    assert!(!s.touches_protected);
}

#[test]
fn prefilter_passthrough() {
    let p = policy();
    assert!(matches!(
        analyze("SELECT * FROM providers WHERE name = 'x'", &p),
        Ok(Analysis::Passthrough)
    ));
    assert!(matches!(
        analyze("THIS IS NOT SQL ((( 'x", &p),
        Ok(Analysis::Passthrough)
    ));
    // Mentions the name only in a string: parsed, nothing to do.
    let s = &plan_of("SELECT 'patients'").statements[0];
    assert!(s.literals.is_empty());
}

#[test]
fn multi_statement() {
    let sql = "SELECT 1; INSERT INTO patients (ssn) VALUES ('111'); UPDATE visits SET notes = 'n' ; select 'patients' ; INSERT INTO insurance (member_id) VALUES ('M-1')";
    let p = plan_of(sql);
    assert_eq!(p.statements.len(), 5);
    assert_eq!(
        &sql[p.statements[1].span.clone()],
        "INSERT INTO patients (ssn) VALUES ('111')"
    );
    assert_eq!(&sql[p.statements[1].literals[0].span.clone()], "'111'");
    assert_eq!(&sql[p.statements[4].literals[0].span.clone()], "'M-1'");
    assert_eq!(
        p.statements[4].literals[0].target.column,
        col("insurance.member_id")
    );
}

/// Options whose catalog gives every table the columns `names`.
fn with_column_order(names: &'static [&'static str]) -> AnalyzeOptions {
    struct Cat(&'static [&'static str]);
    impl ColumnOrder for Cat {
        fn column_order(&self, _t: &QualifiedTable) -> Option<Vec<Ident>> {
            Some(self.0.iter().map(|s| Ident::parse(s).unwrap()).collect())
        }
    }
    AnalyzeOptions {
        column_order: Some(Arc::new(Cat(names))),
        ..AnalyzeOptions::default()
    }
}

#[test]
fn insert_without_columns_uses_catalog() {
    let opts = with_column_order(&["id", "first_name", "last_name", "ssn"]);
    let sql = "INSERT INTO patients VALUES (DEFAULT, 'A', 'B', '123')";
    let Analysis::Planned(p) = analyze_with(sql, &policy(), &opts, None).unwrap() else {
        panic!()
    };
    let cols: Vec<String> = p.statements[0]
        .literals
        .iter()
        .map(|l| l.target.column.column.to_string())
        .collect();
    assert_eq!(cols, ["first_name", "last_name", "ssn"]);
}

#[test]
fn copy_star_over_a_merging_join_is_refused() {
    let opts = with_column_order(&["id", "first_name", "ssn"]);
    let planned = |sql: &str| analyze_with(sql, &policy(), &opts, None);
    // Without USING/NATURAL, `*` is every relation's columns in order.
    assert!(
        planned("COPY (SELECT * FROM patients p JOIN patients q ON p.id = q.id) TO STDOUT").is_ok()
    );
    assert!(
        planned("COPY (SELECT p.* FROM patients p JOIN patients q USING (id)) TO STDOUT").is_ok()
    );
    // USING and NATURAL merge the joined columns: `*` is not placeable.
    for sql in [
        "COPY (SELECT * FROM patients p JOIN patients q USING (id)) TO STDOUT",
        "COPY (SELECT * FROM patients p JOIN visits v USING (id)) TO STDOUT (FORMAT binary)",
        "COPY (SELECT * FROM (patients p JOIN patients q USING (id))) TO STDOUT",
    ] {
        let r = planned(sql).unwrap_err();
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(r.reason.contains("list the columns"), "{sql}: {}", r.reason);
    }
}

#[test]
fn copy_plans() {
    let s = &plan_of(
        "COPY patients (first_name, id) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';')",
    )
    .statements[0];
    let c = s.copy.as_ref().unwrap();
    assert_eq!(c.direction, CopyDirection::FromStdin);
    assert_eq!(c.format, CopyFormat::Csv);
    assert_eq!(c.delimiter, ';');
    assert!(c.header);
    let cols = c.columns.as_ref().unwrap();
    assert!(cols[0].target.is_some() && cols[1].target.is_none());
    let s = &plan_of("COPY visits TO STDOUT").statements[0];
    let c = s.copy.as_ref().unwrap();
    assert_eq!(
        (c.format, c.delimiter, c.null.as_str()),
        (CopyFormat::Text, '\t', "\\N")
    );
    assert!(c.columns.is_none());
    assert_eq!(s.kind, StatementKind::Copy);
    for sql in [
        "COPY patients (ssn) FROM STDIN (FORMAT binary)",
        "COPY patients (ssn) FROM STDIN BINARY",
        "COPY patients (ssn) TO STDOUT WITH BINARY",
    ] {
        let c = plan_of(sql).statements[0].copy.clone().unwrap();
        assert_eq!(c.format, CopyFormat::Binary, "{sql}");
    }
}

#[test]
fn sql_prepare_execute() {
    let p = policy();
    let prep = plan_of("PREPARE ins AS INSERT INTO patients (ssn, email) VALUES ($1, $2)");
    let mut reg = PreparedStatements::new();
    let Some(PreparedOp::Prepare { name, plan }) = &prep.statements[0].prepared else {
        panic!()
    };
    assert_eq!(name, "ins");
    reg.set(name, Some(plan.clone()));
    let sql = "EXECUTE ins('123-45-6789', NULL)";
    // The text names no protected table, but every EXECUTE is analysed (the
    // session checks the name against the statements it prepared).
    assert!(matches!(analyze(sql, &p), Ok(Analysis::Planned(_))));
    assert!(matches!(analyze("SELECT 1", &p), Ok(Analysis::Passthrough)));
    let Analysis::Planned(ex) =
        analyze_with(sql, &p, &AnalyzeOptions::default(), Some(&reg)).unwrap()
    else {
        panic!()
    };
    let bound = reg.bind_execute(&ex.statements[0]).unwrap();
    assert_eq!(bound.len(), 1);
    assert_eq!(&sql[bound[0].span.clone()], "'123-45-6789'");
    assert_eq!(bound[0].target.column, col("patients.ssn"));
    let Analysis::Planned(d) =
        analyze_with("DEALLOCATE ins", &p, &AnalyzeOptions::default(), Some(&reg)).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        d.statements[0].prepared,
        Some(PreparedOp::Deallocate("ins".into()))
    );
}

#[test]
fn analyzer_caches() {
    let a = Analyzer::new(Arc::new(policy()));
    let sql = "SELECT 1 FROM patients WHERE ssn = $1";
    let (Analysis::Planned(x), Analysis::Planned(y)) =
        (a.analyze(sql, None).unwrap(), a.analyze(sql, None).unwrap())
    else {
        panic!()
    };
    assert!(Arc::ptr_eq(&x, &y));
    // Texts carrying protected values (literals for protected columns, also
    // inside PREPARE) and refused texts are never kept: they are PHI.
    for phi in [
        "SELECT 1 FROM patients WHERE ssn = '123-45-6789'",
        "INSERT INTO patients (first_name, last_name) VALUES ('Ada', 'Lovelace')",
        "PREPARE q AS INSERT INTO patients (first_name, last_name) VALUES ('Ada', $1)",
        "UPDATE patients SET ssn = upper('123-45-6789')",
    ] {
        let _ = a.analyze(phi, None);
        assert!(!a.cache.lock().unwrap().contains_key(phi), "{phi}");
    }
    // A literal for an unprotected column is not PHI by the policy.
    let plain = "SELECT first_name FROM patients WHERE id = 42";
    let _ = a.analyze(plain, None);
    assert!(a.cache.lock().unwrap().contains_key(plain));
}

#[test]
fn fingerprint_examples() {
    assert_eq!(
        fingerprint("INSERT INTO patients (ssn) VALUES ('123-45-6789', -5, $1) /* c */"),
        "INSERT INTO patients (ssn) VALUES (?, -?, $1)"
    );
    // Quoted identifiers: kept where they name something, dropped where a
    // misquoted value could stand.
    assert_eq!(
        fingerprint(
            "SELECT \"p\".\"ssn\" FROM \"patients\" AS \"p\" WHERE \"p\".\"id\" = \"Ada Lovelace\""
        ),
        "SELECT \"p\".\"ssn\" FROM \"patients\" AS \"p\" WHERE \"p\".\"id\" = \"?\""
    );
    assert_eq!(
        fingerprint("INSERT INTO \"patients\" (\"first_name\") VALUES (\"Ada\")"),
        "INSERT INTO \"patients\" (\"?\") VALUES (\"?\")"
    );
}

proptest! {
    #[test]
    fn fingerprint_hides_literals(canary in "[A-Za-z0-9 '%_;\\\\-]{1,20}", n in 0u64..1_000_000) {
        let quoted = canary.replace('\'', "''");
        let sql = format!("SELECT * FROM patients WHERE ssn = 'CANARY{quoted}' AND x = {n}7 AND y = $$CANARY{canary}$$ AND z = E'CANARY\\'{quoted}'");
        let f = fingerprint(&sql);
        prop_assert!(!f.contains("CANARY"), "{}", f);
        let num = format!("{n}7");
        prop_assert!(!f.contains(&num));
    }

    /// Canaries in protected positions are either inside a literal target
    /// (so they will be encrypted) or the statement is refused.
    #[test]
    fn canaries_are_encrypted_or_refused(
        shape in 0usize..8,
        col_idx in 0usize..5,
        canary in "[A-Za-z0-9]{4,10}",
        prefix in "(|/\\* é \\*/ |-- ☃\n)",
    ) {
        let cols = ["ssn", "email", "first_name", "date_of_birth", "medical_history"];
        let c = cols[col_idx];
        let v = format!("'CANARY{canary}'");
        let sql = match shape {
            0 => format!("{prefix}INSERT INTO patients ({c}, id) VALUES ({v}, 1)"),
            1 => format!("{prefix}UPDATE patients SET {c} = {v} WHERE id = 2"),
            2 => format!("{prefix}SELECT id FROM patients WHERE {c} = {v}"),
            3 => format!("{prefix}SELECT id FROM patients p WHERE p.{c} IN ({v}, 'CANARYx')"),
            4 => format!("{prefix}SELECT id FROM patients WHERE {c} LIKE {v}"),
            5 => format!("{prefix}DELETE FROM patients WHERE upper({c}) = {v}"),
            6 => format!("{prefix}INSERT INTO patients ({c}) VALUES ({v}::text) ON CONFLICT DO NOTHING"),
            _ => format!("{prefix}UPDATE patients SET {c} = coalesce({v}, 'CANARYy')"),
        };
        match analyze(&sql, &policy()) {
            Err(r) => prop_assert!(!r.reason.contains("CANARY")),
            Ok(Analysis::Passthrough) => prop_assert!(false, "passthrough: {}", sql),
            Ok(Analysis::Planned(p)) => {
                let covered: Vec<_> = p.statements.iter().flat_map(|s| s.literals.iter().map(|l| l.span.clone())).collect();
                for (i, _) in sql.match_indices("CANARY") {
                    prop_assert!(covered.iter().any(|r| r.contains(&i)), "{} not covered in {}", i, sql);
                }
            }
        }
    }
}

#[test]
fn unqualified_names_of_protected_tables_outside_the_search_path_are_refused() {
    let p = Policy::from_toml_str(
        "[tables.\"billing.invoices\"]\ncard = { type = \"text\" }\n",
        "billing",
    )
    .unwrap();
    // The session might have SET search_path = billing: pgveil cannot tell.
    let r = analyze("INSERT INTO invoices (card) VALUES ('4111')", &p).unwrap_err();
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.reason.contains("billing.invoices"), "{}", r.reason);
    assert!(!r.reason.contains("4111"));
    // Qualified, it is rewritten as usual.
    match analyze("INSERT INTO billing.invoices (card) VALUES ('4111')", &p).unwrap() {
        Analysis::Planned(plan) => assert_eq!(plan.statements[0].literals.len(), 1),
        Analysis::Passthrough => panic!("passthrough"),
    }
}

#[test]
fn casts_on_protected_parameters_are_removed() {
    let sql = "SELECT id FROM patients WHERE ssn = $1::VARCHAR";
    let s = &plan_of(sql).statements[0];
    assert_eq!(s.edits.len(), 1);
    let u = &s.edits[0];
    assert_eq!(&sql[u.span.clone()], "$1::VARCHAR");
    assert_eq!(u.text, "$1");
    // SQLAlchemy's insertmanyvalues: values of a VALUES derived table.
    let sql = "INSERT INTO patients (first_name, ssn) SELECT p0::VARCHAR, p1 FROM \
               (VALUES ($1, $2, 0), ($3::VARCHAR, 'CANARY-9', 1)) AS imp_sen(p0, p1, sen_counter) \
               ORDER BY sen_counter RETURNING patients.id";
    let s = &plan_of(sql).statements[0];
    assert_eq!(s.params.len(), 3, "{s:?}");
    assert_eq!(s.literals.len(), 1);
    assert_eq!(s.literals[0].value, "CANARY-9");
    let kept: Vec<&str> = s.edits.iter().map(|u| u.text.as_str()).collect();
    assert!(kept.contains(&"p0") && kept.contains(&"$3"), "{kept:?}");
}

/// Every literal of `sql` that the analyser will replace, as text.
fn rewritten(sql: &str) -> Vec<String> {
    plan_of(sql)
        .statements
        .iter()
        .flat_map(|s| s.literals.iter().map(|l| sql[l.span.clone()].to_owned()))
        .collect()
}

#[test]
fn insert_sources_other_than_a_bare_values_list_encrypt_every_value() {
    // Parenthesised VALUES, UNION ALL of VALUES, WITH … VALUES: each value
    // written to a protected column is encrypted, none is forwarded.
    for sql in [
        "INSERT INTO patients (first_name, last_name, ssn) (VALUES ('CANARY-a', 'x', '111-11-1111'))",
        "INSERT INTO patients (first_name, last_name, ssn) ((VALUES ('CANARY-a', 'x', '111-11-1111')))",
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('CANARY-a', 'x', '111-11-1111') UNION ALL VALUES ('CANARY-b', 'y', '333-33-3333')",
        "INSERT INTO patients (first_name, last_name, ssn) WITH q AS (SELECT 1) VALUES ('CANARY-a', 'x', '111-11-1111')",
    ] {
        let lits = rewritten(sql);
        assert!(lits.iter().any(|l| l.contains("CANARY-a")), "{sql}: {lits:?}");
        assert!(lits.iter().any(|l| l.contains("111-11-1111")), "{sql}: {lits:?}");
        if sql.contains("CANARY-b") {
            assert!(lits.iter().any(|l| l.contains("CANARY-b")), "{sql}");
        }
    }
    // Set operations that compare values, TABLE as a source, and rows whose
    // values pgveil cannot encrypt are refused.
    for sql in [
        "INSERT INTO patients (first_name, last_name) VALUES ('a', 'b') UNION VALUES ('c', 'd')",
        "INSERT INTO patients (first_name, last_name) VALUES ('a', 'b') EXCEPT VALUES ('c', 'd')",
        "INSERT INTO patients (first_name, last_name) TABLE staging",
        "INSERT INTO patients (first_name, last_name) (VALUES (lower('a'), 'b'))",
        "INSERT INTO patients (first_name, last_name) SELECT * FROM (VALUES ('a', 'b')) v WHERE column1 <> 'x'",
        "INSERT INTO patients (first_name, last_name) SELECT DISTINCT * FROM (VALUES ('a', 'b')) v",
        "INSERT INTO patients (first_name, last_name) SELECT * FROM (VALUES ('a', 'b', 'c')) v",
    ] {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(
            r.column.is_some() || r.reason.contains("patients"),
            "{sql}: {r:?}"
        );
    }
}

#[test]
fn in_values_and_subqueries_never_carry_plaintext_to_a_protected_comparison() {
    for sql in [
        "SELECT id FROM patients WHERE ssn IN (VALUES ('123-45-6789'))",
        "SELECT id FROM patients WHERE ssn NOT IN (VALUES ('123-45-6789'))",
        "SELECT id FROM patients WHERE ssn IN (SELECT '123-45-6789')",
        "SELECT id FROM patients WHERE ssn IN (TABLE staging)",
        "SELECT id FROM patients WHERE ssn = (SELECT '123-45-6789')",
    ] {
        let r = refusal(sql);
        assert!(r.column.is_some(), "{sql}: {r:?}");
        assert!(!r.reason.contains("123-45"), "{sql}");
    }
}

#[test]
fn whole_row_references_and_select_into_are_refused() {
    for sql in [
        "SELECT p FROM patients p",
        "SELECT row_to_json(p) FROM patients p",
        "SELECT row_to_json(p.*) FROM patients p",
        "SELECT to_jsonb(patients) FROM patients",
        "SELECT public.patients FROM public.patients",
        "SELECT ssn, first_name INTO TEMP t FROM patients",
        "SELECT * INTO t FROM patients",
        "CREATE TABLE t AS SELECT ssn FROM patients",
    ] {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
    }
    // count(*) and qualified columns stay fine.
    plan_of("SELECT count(*), p.ssn FROM patients p GROUP BY p.ssn");
}

#[test]
fn a_parameter_used_for_a_protected_and_another_place_is_refused() {
    for sql in [
        "INSERT INTO patients (first_name, last_name) VALUES ($1, $1)",
        "INSERT INTO patients (first_name, created_at) VALUES ($1, now()) RETURNING $1",
        "SELECT id FROM patients WHERE ssn = $1 OR last_name IS NULL LIMIT $1",
        "UPDATE patients SET first_name = $1 WHERE id::text = $1",
    ] {
        let r = refusal(sql);
        assert!(r.reason.contains("$1"), "{sql}: {r:?}");
    }
    // The same parameter for two protected places under one key is fine.
    let s = &plan_of("SELECT v.id FROM visits v WHERE v.patient_ssn = $1 OR v.patient_ssn = $1")
        .statements[0];
    assert_eq!(s.params[&1].sites.len(), 2);
}

#[test]
fn casts_must_name_the_logical_type() {
    plan_of(
        "INSERT INTO patients (first_name, date_of_birth) VALUES ($1::varchar, '1990-01-01'::date)",
    );
    plan_of("INSERT INTO patients (first_name, last_name) VALUES (CAST('a' AS text), $2::TEXT)");
    plan_of("SELECT id FROM patients WHERE ssn = ANY($1::text[])");
    for sql in [
        "INSERT INTO patients (first_name, last_name) VALUES ('abcdef'::varchar(3), 'x')",
        "INSERT INTO patients (first_name, last_name) VALUES ($1::varchar(3), 'x')",
        "INSERT INTO patients (first_name, last_name) VALUES ('01'::int4, 'x')",
        "INSERT INTO patients (first_name, date_of_birth) VALUES ('a', '2024-01-01 10:00'::timestamp)",
        "SELECT id FROM patients WHERE ssn = $1::int8",
        "SELECT id FROM patients WHERE ssn = ANY($1::int4[])",
    ] {
        let r = refusal(sql);
        assert!(r.reason.contains("cast"), "{sql}: {r:?}");
    }
}

#[test]
fn ddl_on_protected_tables_is_refused_where_it_carries_values_or_moves_columns() {
    for sql in [
        "ALTER TABLE patients RENAME COLUMN first_name TO fname",
        "ALTER TABLE patients RENAME COLUMN phone TO ssn",
        "ALTER TABLE patients RENAME TO people",
        "ALTER TABLE staging RENAME TO patients",
        "ALTER TABLE patients ALTER COLUMN ssn SET DEFAULT '123-45-6789'",
        "ALTER TABLE patients ALTER COLUMN ssn TYPE text USING 'x'",
        "ALTER TABLE patients ADD COLUMN email text DEFAULT 'a@b.c'",
        "ALTER TABLE patients ADD CONSTRAINT c CHECK (ssn <> '123-45-6789')",
        "ALTER TABLE patients ALTER COLUMN created_at SET DEFAULT ssn",
        "ALTER TABLE patients ATTACH PARTITION p2 FOR VALUES IN (1)",
        "CREATE TABLE patients_2024 PARTITION OF patients FOR VALUES FROM (1) TO (2)",
        "CREATE TABLE kids (x int) INHERITS (patients)",
        "CREATE TEMP TABLE patients (ssn text)",
        "CREATE TABLE archive.patients (ssn text)",
        "CREATE VIEW billing.patients AS SELECT 1",
        "CREATE TABLE patients (id int, ssn text DEFAULT '123-45-6789')",
        "CREATE TABLE patients AS SELECT 'x' AS ssn",
        "CREATE INDEX ON patients (lower(ssn))",
    ] {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(!r.reason.contains("123-45"), "{sql}");
    }
    // DDL that carries no protected values keeps working.
    for sql in [
        "ALTER TABLE patients ADD COLUMN nickname text DEFAULT 'x'",
        "ALTER TABLE patients ALTER COLUMN ssn SET NOT NULL",
        "ALTER TABLE patients DROP CONSTRAINT c",
        "ALTER TABLE patients RENAME COLUMN created_at TO created",
        "CREATE INDEX ON patients (ssn)",
        "CREATE UNIQUE INDEX ON patients (ssn) WHERE ssn IS NOT NULL",
        "CREATE TABLE patients (id int PRIMARY KEY, ssn text UNIQUE NOT NULL)",
        "ALTER TABLE staging ADD COLUMN x int DEFAULT 1",
    ] {
        let r = analyze(sql, &policy());
        assert!(r.is_ok(), "{sql}: {r:?}");
    }
    // A literal in a partial index predicate is encrypted like a look-up.
    assert_eq!(
        rewritten("CREATE INDEX ON patients (id) WHERE ssn = '123-45-6789'"),
        ["'123-45-6789'"]
    );
}

#[test]
fn unqualified_names_resolve_by_the_relations_the_database_has() {
    let p = policy();
    let with = |names: &[(&str, &[&str])]| AnalyzeOptions {
        relation_schemas: Some(Arc::new(
            names
                .iter()
                .map(|(t, s)| (t.to_string(), s.iter().map(|x| x.to_string()).collect()))
                .collect(),
        )),
        ..Default::default()
    };
    let sql = "INSERT INTO patients (ssn) VALUES ('123-45-6789')";
    // Only public.patients: resolved whatever search_path the session has.
    let a = analyze_with(sql, &p, &with(&[("patients", &["public"])]), None).unwrap();
    assert!(matches!(a, Analysis::Planned(ref x) if x.statements[0].literals.len() == 1));
    // Two schemas have a `patients`: refused until qualified.
    let r = analyze_with(sql, &p, &with(&[("patients", &["app", "public"])]), None).unwrap_err();
    assert!(r.reason.contains("ambiguous"), "{r:?}");
    let q = "INSERT INTO public.patients (ssn) VALUES ('123-45-6789')";
    analyze_with(q, &p, &with(&[("patients", &["app", "public"])]), None).unwrap();
    // Only another schema's `patients` (the policy's table was moved): refused.
    let r = analyze_with(sql, &p, &with(&[("patients", &["app"])]), None).unwrap_err();
    assert!(r.reason.contains("app"), "{r:?}");
}

#[test]
fn children_and_tables_missing_a_policy_column_are_refused() {
    let opts = AnalyzeOptions {
        dependent_views: Arc::new(DependentViews::with_reasons(vec![
            (
                QualifiedTable::parse("public.patients_2024").unwrap(),
                Guarded::Child(QualifiedTable::parse("public.patients").unwrap()),
            ),
            (
                QualifiedTable::parse("public.visits").unwrap(),
                Guarded::MissingColumn(Ident::parse("subjective").unwrap()),
            ),
        ])),
        ..Default::default()
    };
    for sql in [
        "INSERT INTO patients_2024 (first_name) VALUES ('a')",
        "COPY public.patients_2024 FROM STDIN",
        "INSERT INTO visits (subj) VALUES ('a')",
        "SELECT * FROM visits",
    ] {
        let r = analyze_with(sql, &policy(), &opts, None).unwrap_err();
        assert_eq!(r.sqlstate, "0A000", "{sql}");
    }
}

#[test]
fn found_by_review_on_conflict_predicates_constraints_and_values_columns() {
    // The arbiter predicate of ON CONFLICT is a look-up: encrypted, or
    // refused where a look-up would be.
    let sql = "INSERT INTO patients (first_name, last_name, ssn) VALUES ('a', 'b', 'c') ON CONFLICT (ssn) WHERE ssn = 'CANARY-27' DO NOTHING";
    assert!(rewritten(sql).iter().any(|l| l.contains("CANARY-27")));
    for sql in [
        "INSERT INTO patients (first_name, last_name) VALUES ('a', 'b') ON CONFLICT (ssn) WHERE first_name = 'CANARY' DO NOTHING",
        "INSERT INTO patients (first_name, last_name) VALUES ('a', 'b') ON CONFLICT (ssn) WHERE ssn LIKE 'CANARY%' DO NOTHING",
        "ALTER TABLE patients ADD CONSTRAINT c EXCLUDE USING btree (ssn WITH =) WHERE (ssn <> 'CANARY')",
        "CREATE TABLE patients (id int, ssn text, EXCLUDE USING btree (ssn WITH =) WHERE (ssn <> 'CANARY'))",
        // A VALUES column written to a protected column and used elsewhere.
        "INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) SELECT a, b, c, d FROM (VALUES (1, 'CANARY', '2024-01-01'::date, 'p')) v(a, b, c, d) WHERE b = 'CANARY'",
        "INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) SELECT a, b, c, b FROM (VALUES (1, 'CANARY', '2024-01-01'::date, 'p')) v(a, b, c, d)",
        "INSERT INTO visits (patient_id, patient_ssn, visit_date, provider) SELECT a, b, c, d FROM (VALUES (1, 'CANARY', '2024-01-01'::date, 'p')) v(a, b, c, d) ORDER BY length(b)",
    ] {
        let r = refusal(sql);
        assert!(!r.reason.contains("CANARY"), "{sql}: {r:?}");
    }
    // SQLAlchemy's form (ORDER BY an unprotected VALUES column) still works.
    plan_of("INSERT INTO patients (first_name, ssn) SELECT p0, p1 FROM (VALUES ($1, $2, 0)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter");
    // Prepared statement names are cut to 63 bytes, as PostgreSQL's parser does.
    let long = "q".repeat(70);
    let p = plan_of(&format!(
        "PREPARE {long} AS INSERT INTO patients (ssn) VALUES ($1)"
    ));
    let Some(PreparedOp::Prepare { name, .. }) = &p.statements[0].prepared else {
        panic!()
    };
    assert_eq!(name.len(), 63);
}

#[test]
fn found_by_second_review() {
    for sql in [
        // Escapes spelling a protected name in bodies pgveil cannot parse.
        "DO E'BEGIN INSERT INTO p\\x61tients (first_name) VALUES (''CANARY''); END'",
        "DO U&'BEGIN INSERT INTO p\\0061tients (first_name) VALUES (''CANARY''); END'",
        "CREATE FUNCTION f(a text) RETURNS void LANGUAGE sql AS E'INSERT INTO p\\141tients (first_name) VALUES (a)'",
        // Another relation under a protected table's name.
        "INSERT INTO pub3.patients (first_name, last_name) VALUES ('CANARY', 'x')",
        "UPDATE fs.patients SET email = 'CANARY' WHERE id = 2",
        // INHERIT through ALTER TABLE on an unprotected table.
        "ALTER TABLE kid5 INHERIT patients",
        // Aggregate ORDER BY and named windows.
        "SELECT array_agg(id ORDER BY first_name) FROM patients",
        "SELECT array_agg(id ORDER BY first_name LIKE 'CANARY%') FROM patients",
        "SELECT id, row_number() OVER w FROM patients WINDOW w AS (ORDER BY ssn = 'CANARY')",
        // Copies of protected values into plain columns, foreign keys into them.
        "ALTER TABLE patients ADD COLUMN phone_copy text GENERATED ALWAYS AS (phone) STORED",
        "ALTER TABLE patients ADD CONSTRAINT fk FOREIGN KEY (phone) REFERENCES notes (body) ON UPDATE CASCADE",
    ] {
        let r = analyze(sql, &policy()).err().unwrap_or_else(|| panic!("not refused: {sql}"));
        assert!(!r.reason.contains("CANARY"), "{sql}: {r:?}");
    }
    // An equality on a deterministic column inside an aggregate's ORDER BY
    // is a look-up like any other: encrypted.
    let sql = "SELECT string_agg(id::text, ',' ORDER BY ssn = 'CANARY') FROM patients";
    assert_eq!(rewritten(sql), ["'CANARY'"]);
    // Still fine: a foreign key to a protected table's key, plain E'' strings.
    for sql in [
        "ALTER TABLE visits2 ADD CONSTRAINT fk FOREIGN KEY (pid) REFERENCES patients (id)",
        "SELECT E'a\\tb' FROM notes",
    ] {
        assert!(analyze(sql, &policy()).is_ok(), "{sql}");
    }
}

/// The structural coverage rule: in a statement that reaches a protected
/// table, a value the walk never classified refuses the statement. Clauses
/// the walk knows keep working whatever values they carry.
#[test]
fn values_in_clauses_the_walk_does_not_analyse_refuse_the_statement() {
    for sql in [
        "SELECT id FROM patients LIMIT '5' OFFSET $1",
        "SELECT id FROM patients ORDER BY id FETCH FIRST $1 ROWS ONLY",
        "SELECT DISTINCT ON ('x') id FROM patients",
        "SELECT id, count(*) FROM patients GROUP BY id HAVING max(created_at) > '2020-01-01'",
        "SELECT id FROM patients WHERE created_at AT TIME ZONE 'UTC' > now() - interval '1 day'",
        "SELECT jsonb_build_object('k', id) FROM patients",
        "SELECT row_number() OVER (ORDER BY created_at RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) FROM patients",
        "SELECT id FROM patients WINDOW w AS (PARTITION BY 'x')",
        "SELECT id FROM patients WHERE created_at::text LIKE 'a%' ESCAPE '!'",
        "SELECT id FROM patients WHERE EXTRACT(year FROM created_at) = 2020 AND TRIM(BOTH 'x' FROM 'y') = 'y'",
        "SELECT id FROM patients WHERE created_at::date = DATE '2020-01-01'",
        "UPDATE patients SET first_name = 'x' FROM (SELECT 1 AS a) s WHERE patients.id = s.a RETURNING id, 'done'",
        "DELETE FROM patients USING (VALUES ('a')) v(x) WHERE id::text = v.x",
        "INSERT INTO patients (first_name, ssn) VALUES ('a', 'b') ON CONFLICT (id) DO UPDATE SET first_name = 'z' WHERE patients.id > 0",
        "COPY patients (first_name) FROM STDIN WITH (FORMAT csv, NULL 'x', DELIMITER ';')",
        "COPY (SELECT first_name FROM patients WHERE created_at > '2020-01-01') TO STDOUT WITH (FORMAT csv, NULL 'x')",
        "PREPARE q AS SELECT id FROM patients WHERE id = $1 AND created_at > 'x'",
        "SELECT string_agg(id::text, ',' ORDER BY id) FILTER (WHERE id > 0) FROM patients",
        "SELECT id FROM patients WHERE created_at::text = U&'\\0061'",
        "SELECT id FROM patients p WHERE NOT EXISTS (SELECT 1 FROM lab_results l WHERE l.patient_id = p.id AND l.lab = 'x')",
    ] {
        if let Err(r) = analyze(sql, &policy()) {
            panic!("refused: {sql}: {r}");
        }
    }
    for sql in [
        "SELECT json_object('a' VALUE 1), id FROM patients",
        "SELECT id FROM patients, XMLTABLE('/a' PASSING 'x' COLUMNS b int)",
        "SELECT id FROM patients, json_table('{}'::jsonb, '$' COLUMNS (a int PATH '$.a'))",
    ] {
        let r = refusal(sql);
        assert!(
            r.to_string().contains("a clause pgveil does not analyse")
                && r.to_string().contains("public.patients"),
            "{sql}: {r}"
        );
    }
}

/// Issue 17: the bulk-insert idioms of ORMs and drivers — `SELECT * FROM
/// unnest(…)` (Django ≥ 5.2 `bulk_create`, with server- or client-side
/// binding), `unnest` with column aliases, `SELECT unnest($1)`, and
/// `SELECT * FROM (VALUES …) v` — encrypt every element.
#[test]
fn unnest_and_values_bulk_inserts_encrypt_every_element() {
    for sql in [
        "INSERT INTO patients (first_name, ssn) SELECT * FROM UNNEST(($1)::text[], ($2)::text[])",
        "INSERT INTO patients (first_name, ssn) SELECT * FROM unnest($1::text[], $2::text[])",
        "INSERT INTO patients (first_name, ssn) SELECT a, b FROM unnest($1::text[], $2) AS t(a, b)",
        "INSERT INTO patients (first_name) SELECT unnest($1::text[])",
    ] {
        let p = plan_of(sql);
        let st = &p.statements[0];
        assert!(
            st.params
                .values()
                .all(|p| p.array && p.usage == Comparison::Write),
            "{sql}"
        );
        assert!(
            st.params[&1].target.column == col("patients.first_name"),
            "{sql}"
        );
    }
    let sql = "INSERT INTO patients (first_name, ssn, created_at) SELECT * FROM UNNEST(('{Ann,\"Bo B\"}')::text[], ('{1,NULL}')::text[], ('{2024-01-01,2024-01-02}')::timestamptz[])";
    let p = plan_of(sql);
    let st = &p.statements[0];
    let got: Vec<_> = st
        .literals
        .iter()
        .map(|l| (&sql[l.span.clone()], l.value.as_str(), l.form))
        .collect();
    assert_eq!(
        got,
        [
            (
                "('{Ann,\"Bo B\"}')::text[]",
                "{Ann,\"Bo B\"}",
                LiteralForm::Array
            ),
            ("('{1,NULL}')::text[]", "{1,NULL}", LiteralForm::Array)
        ]
    );
    // Refused: a cast converting the elements, an expression as an array,
    // an unnest whose rows are filtered, a wildcard over two relations.
    for sql in [
        "INSERT INTO patients (first_name) SELECT * FROM unnest($1::int[])",
        "INSERT INTO patients (first_name) SELECT * FROM unnest(string_to_array($1, ','))",
        "INSERT INTO patients (first_name) SELECT * FROM unnest($1::text[]) u WHERE u <> ''",
        "INSERT INTO patients (first_name, ssn) SELECT * FROM unnest($1::text[]), unnest($2::text[])",
        "INSERT INTO patients (first_name) SELECT unnest($1::text[]) || 'x'",
    ] {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(
            r.column.is_some() || r.to_string().contains("public.patients"),
            "{sql}: {r}"
        );
    }
}

#[test]
fn nested_casts_are_checked_at_every_level() {
    refusal("INSERT INTO patients (first_name) VALUES (('01'::int4)::text)");
    refusal("INSERT INTO patients (first_name) SELECT * FROM unnest(('{1}'::int4[])::text[])");
    plan_of("INSERT INTO patients (first_name) VALUES (('x'::text)::text)");
}

/// Third attack review: a VALUES list or unnest feeding protected columns
/// must be the only relation of its SELECT — `JOIN … USING`/`NATURAL`
/// merge its columns with plaintext ones, `ON` conditions compare them,
/// joins repeat them and DISTINCT/GROUP BY would merge equal plaintexts.
#[test]
fn bulk_sources_must_stand_alone() {
    for sql in [
        "INSERT INTO patients (first_name, last_name) SELECT a, b FROM (SELECT 'p', 'q') w(a, b) LEFT JOIN (VALUES ('x', 'y')) v(a, b) USING (a, b)",
        "INSERT INTO patients (first_name, last_name) SELECT a, b FROM (SELECT 'p', 'q') w(a, b) NATURAL FULL JOIN (VALUES ('x', 'y')) v(a, b)",
        "INSERT INTO patients (first_name, last_name) SELECT a, b FROM (VALUES ('x', 'y')) v(a, b) JOIN notes ON a = 'x'",
        "INSERT INTO patients (first_name, last_name) SELECT DISTINCT a, b FROM (VALUES ('x', 'y'), ('x', 'y')) v(a, b)",
        "INSERT INTO patients (first_name, last_name) SELECT a, b FROM (VALUES ('x', 'y')) v(a, b) CROSS JOIN generate_series(1, 2)",
        "INSERT INTO patients (first_name, last_name) SELECT a, b FROM (VALUES ('x', 'y')) v(a, b) GROUP BY a, b",
        "INSERT INTO patients (first_name, last_name) SELECT unnest($1::text[]), unnest($2::text[]) FROM generate_series(1, 2)",
    ] {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
    }
    // SQLAlchemy's insertmanyvalues orders by a counter: still one source.
    plan_of("INSERT INTO patients (first_name, last_name) SELECT p0::TEXT, p1::TEXT FROM (VALUES ($1, $2, 0), ($3, $4, 1)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter RETURNING patients.id");
}

/// Third attack review: analysis time must grow linearly with the
/// statement (one large statement once blocked every session for minutes).
#[test]
fn analysis_is_linear_in_the_number_of_values() {
    let time = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!("'{i:09}'::text")).collect();
        let rows: Vec<String> = (0..n / 4)
            .map(|i| format!("('a{i}', 'b{i}'::text, {i})"))
            .collect();
        let sql = format!(
            "SELECT id FROM patients WHERE ssn IN ({}) AND id IN ({}); INSERT INTO patients (first_name, last_name, phone) VALUES {}",
            list.join(","),
            (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(","),
            rows.join(",")
        );
        let t = std::time::Instant::now();
        analyze(&sql, &policy()).unwrap();
        t.elapsed()
    };
    // The fastest of three runs each, so a busy machine (tests run in
    // parallel) does not decide the ratio.
    let best = |n: usize| (0..3).map(|_| time(n)).min().expect("three runs");
    time(500);
    let small = best(2_000);
    let large = best(16_000);
    // 8× the values: linear is ~8×, quadratic ~64×.
    assert!(
        large < small * 32,
        "2,000 values: {small:?}, 16,000 values: {large:?}"
    );
}

/// Third attack review: silently wrong results become refusals.
#[test]
fn conversions_and_groupings_pgveil_cannot_reproduce_are_refused() {
    for sql in [
        // GROUP BY / DISTINCT ON an output of a randomized column.
        "SELECT last_name, count(*) FROM patients GROUP BY 1",
        "SELECT last_name AS n, count(*) FROM patients GROUP BY n",
        "SELECT DISTINCT ON (1) last_name FROM patients",
        // Numbers PostgreSQL normalises on their way into a text column.
        "INSERT INTO patients (first_name, last_name) VALUES (1e5, 'x')",
        "INSERT INTO patients (first_name, last_name) VALUES (.5, 'x')",
        "INSERT INTO patients (first_name, last_name) VALUES (00012, 'x')",
        "INSERT INTO patients (first_name, last_name) VALUES (-0, 'x')",
    ] {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(r.column.is_some(), "{sql}: {r}");
    }
    // Numbers that read as written are encrypted as before.
    plan_of("INSERT INTO patients (first_name, last_name, phone) VALUES (12, -3.50, 0)");
    plan_of("SELECT ssn, count(*) FROM patients GROUP BY 1");
    // An EXECUTE argument with a cast is not a plain literal.
    let p = plan_of("EXECUTE q('abc'::varchar(2), 'x')");
    let Some(PreparedOp::Execute { args, .. }) = &p.statements[0].prepared else {
        panic!("execute")
    };
    assert!(matches!(args[0], ExecuteArg::Other), "{args:?}");
    assert!(matches!(args[1], ExecuteArg::Literal { .. }), "{args:?}");
}

/// Fourth attack review: values in clauses the walk never entered, on a
/// statement whose walked relations are all unprotected; field and element
/// assignments to protected columns.
#[test]
fn unwalked_clauses_naming_protected_tables_and_field_targets_are_refused() {
    // TABLESAMPLE's quantity is walked now: its comparison is rewritten.
    let p = plan_of("SELECT 1 FROM pg_class TABLESAMPLE BERNOULLI ((SELECT count(*) FROM patients WHERE ssn = 'K506')) LIMIT 1");
    assert_eq!(p.statements[0].literals.len(), 1);
    let p = plan_of("SELECT 1 FROM pg_class TABLESAMPLE BERNOULLI ((SELECT count(*) FROM patients WHERE ssn = $1))");
    assert_eq!(p.statements[0].params.len(), 1);
    for sql in [
        "SELECT 1 FROM pg_class TABLESAMPLE BERNOULLI ((SELECT max(length(first_name)) FROM patients))",
        "CREATE INDEX k601 ON notes (x) WHERE x::bigint = (SELECT count(*) FROM patients WHERE ssn = 'K601')",
        "CREATE TABLE k602 (c bigint DEFAULT (SELECT count(*) FROM patients WHERE ssn = 'K602'))",
        "CREATE TABLE k700 (c bigint CHECK (c > (SELECT count(*) FROM patients WHERE ssn = 'K700')))",
        "INSERT INTO patients (first_name.x, last_name) VALUES ('K4', 'b')",
        "INSERT INTO patients (last_name, \"first_name\".x) VALUES ('b', 'K4')",
        "UPDATE patients SET first_name.x = 'K110' WHERE id = -1",
        "INSERT INTO patients (first_name, last_name, ssn) VALUES ('a', 'b', 'x') ON CONFLICT (ssn) DO UPDATE SET first_name.x = 'K108'",
        "INSERT INTO patients (first_name.x, last_name) SELECT * FROM UNNEST('{K103}'::text[], '{b}'::text[])",
    ] {
        let r = refusal(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(!r.to_string().contains("K"), "{sql}: {r}");
    }
    // Ordinary statements that merely mention a protected table's name in
    // a string or an unprotected context keep working.
    plan_or_passthrough("INSERT INTO notes VALUES (1, 'about patients')");
    plan_or_passthrough(
        "SELECT 'patients' AS label, relname FROM pg_class WHERE relname = 'patients'",
    );
    plan_or_passthrough("SELECT 1 FROM pg_class TABLESAMPLE BERNOULLI (10) REPEATABLE (7)");
}

fn plan_or_passthrough(sql: &str) {
    if let Err(r) = analyze(sql, &policy()) {
        panic!("refused: {sql}: {r}");
    }
}

#[test]
fn ordering_a_bulk_source_by_a_protected_target_is_refused() {
    for sql in [
        "INSERT INTO patients (first_name, last_name) SELECT * FROM UNNEST('{a,b}'::text[], '{c,d}'::text[]) ORDER BY 1 DESC",
        "INSERT INTO patients (first_name, last_name) SELECT a AS f, b FROM unnest($1::text[], $2::text[]) u(a, b) ORDER BY f",
    ] {
        assert_eq!(refusal(sql).sqlstate, "0A000", "{sql}");
    }
}

/// Fifth attack review: a CTE never stands in for the target of a write;
/// column alias lists rename protected columns by position; guards cannot
/// be dropped through pgveil.
#[test]
fn cte_shadowed_targets_column_alias_lists_and_guard_drops() {
    // The target is the real table: its values are encrypted.
    for sql in [
        "WITH patients AS (SELECT 1) INSERT INTO patients (first_name, last_name) VALUES ('K120', 'x')",
        "WITH patients AS (SELECT 1 AS id) UPDATE patients SET first_name = 'K121' WHERE id = 1",
        "WITH patients AS (SELECT 1 AS id) DELETE FROM patients WHERE ssn = 'K122'",
    ] {
        let p = plan_of(sql);
        assert!(p.statements[0].literals.iter().any(|l| l.value.starts_with('K')), "{sql}");
    }
    let p = plan_of("WITH patients AS (SELECT 1) DELETE FROM patients WHERE ssn = $1");
    assert_eq!(p.statements[0].params.len(), 1);
    for sql in [
        "SELECT count(*) FROM patients AS p(pid, fname, lname, s) WHERE s = 'K720'",
        "DELETE FROM notes USING patients p(a, b) WHERE p.b = 'K724'",
        "SELECT count(*) FROM (patients JOIN visits ON true) AS j(a, b) WHERE b = 'K727'",
        "UPDATE patients SET phone = p2.phone FROM patients p2(id2, a, b, c, d, e, f, g, h, phone) WHERE p2.id2 = patients.id",
        "ALTER TABLE patients DROP CONSTRAINT pgveil_guard_phone",
        "ALTER TABLE patients RENAME CONSTRAINT pgveil_guard_phone TO x",
    ] {
        assert_eq!(refusal(sql).sqlstate, "0A000", "{sql}");
    }
    // A join alias qualifies its columns.
    let p = plan_of("SELECT j.id FROM (patients JOIN visits ON visits.patient_id = patients.id) AS j WHERE j.ssn = 'K1'");
    assert_eq!(p.statements[0].literals.len(), 1);
}

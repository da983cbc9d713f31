//! Arbitrary SQL text through the statement analyser and the fingerprint:
//! no panic; every literal span is in bounds and on character boundaries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn policy() -> &'static pgveil_policy::Policy {
    static P: OnceLock<pgveil_policy::Policy> = OnceLock::new();
    P.get_or_init(|| {
        pgveil_policy::Policy::from_toml_str(
            include_str!("../../config/clinic.example.toml"),
            "clinic.example.toml",
        )
        .expect("example policy parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pgveil_sql::fingerprint(sql);
    if let Ok(pgveil_sql::Analysis::Planned(plan)) = pgveil_sql::analyze(sql, policy()) {
        for st in &plan.statements {
            for lit in &st.literals {
                assert!(
                    sql.get(lit.span.clone()).is_some(),
                    "literal span out of bounds"
                );
            }
        }
    }
});

//! The engine without I/O: client and server messages in, messages out.

use super::*;
use bytes::Bytes;
use pgveil_wire::backend::{self, FieldDescription};
use pgveil_wire::frontend::{self, Format};
use pgveil_wire::Frame;

const CLINIC: &str = include_str!("../../../config/clinic.example.toml");
const PATIENTS_OID: u32 = 16_400;

fn engine() -> Arc<Engine> {
    let policy = Arc::new(Policy::from_toml_str(CLINIC, "clinic").unwrap());
    let keys = KeySet::generated(&policy).unwrap();
    Arc::new(Engine::new(policy, keys))
}

/// `patients` as the storage DDL has it: attnums 1..=10.
fn rows() -> Vec<CatalogRow> {
    let cols = [
        ("id", 20),
        ("first_name", 25),
        ("last_name", 25),
        ("ssn", 25),
        ("date_of_birth", 25),
        ("phone", 25),
        ("email", 25),
        ("address", 25),
        ("medical_history", 17),
        ("created_at", 1184),
    ];
    cols.iter()
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

fn session() -> Session {
    session_on(&engine())
}

fn session_on(e: &Arc<Engine>) -> Session {
    let ctx = e.build(&rows(), e.generation());
    let mut s = Session::new(e.clone(), "db", ctx);
    s.parameter_status(b"TimeZone", b"UTC");
    s
}

fn client(s: &mut Session, f: &Frame) -> (ClientOutcome, Vec<u8>) {
    let mut out = Vec::new();
    let o = s.client_message(f.raw(), &mut out);
    (o, out)
}

fn server(s: &mut Session, f: &Frame) -> (ServerAction, Vec<u8>) {
    let mut out = Vec::new();
    let a = s.server_message(f.raw(), &mut out);
    (a, out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = bytes::BytesMut::from(bytes);
    let reader = pgveil_wire::FrameReader::default();
    let mut out = Vec::new();
    while let Some(f) = reader.parse(&mut buf).unwrap() {
        out.push(f);
    }
    out
}

fn field(name: &str, attnum: i16, type_oid: u32, format: Format) -> FieldDescription {
    FieldDescription {
        name: Bytes::from(name.to_owned()),
        table_oid: PATIENTS_OID,
        column_attr: attnum,
        type_oid,
        type_size: -1,
        type_modifier: -1,
        format,
    }
}

#[test]
fn unprotected_statements_pass_untouched() {
    let mut s = session();
    let (o, out) = client(&mut s, &frontend::query(b"SELECT * FROM pgbench_accounts"));
    assert!(matches!(o.action, ClientAction::Forward));
    assert_eq!(o.path, Path::Passthrough);
    assert!(out.is_empty());
}

#[test]
fn simple_insert_is_encrypted_and_the_result_decrypted() {
    let mut s = session();
    let sql = "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) VALUES ('CANARY-F', 'L', '123-45-6789', '1990-01-02') RETURNING ssn, date_of_birth";
    let (o, out) = client(&mut s, &frontend::query(sql.as_bytes()));
    assert!(matches!(o.action, ClientAction::Replace));
    assert!(!contains(&out, b"CANARY") && !contains(&out, b"123-45-6789"));
    let rewritten = String::from_utf8_lossy(&out[5..]).into_owned();
    assert!(rewritten.starts_with(
        "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) VALUES ('pgv1:"
    ));
    assert!(rewritten.contains(" RETURNING ssn, date_of_birth"));

    // The server's answer: storage types in, logical types out.
    let rd = backend::encode_row_description(&[
        field("ssn", 4, 25, Format::Text),
        field("date_of_birth", 5, 25, Format::Text),
    ]);
    let (a, out) = server(&mut s, &rd);
    assert_eq!(a, ServerAction::Replace);
    let fields = backend::decode_row_description(&frames(&out)[0]).unwrap();
    assert_eq!(fields[1].type_oid, 1082);
    assert_eq!(fields[1].type_size, 4);
    // Ciphertext as the server stores it: take it from the rewritten text.
    let cts: Vec<&str> = rewritten
        .split('\'')
        .filter(|p| p.starts_with("pgv1:"))
        .collect();
    let row = backend::encode_data_row(&[Some(cts[2]), Some(cts[3])]);
    let (a, out) = server(&mut s, &row);
    assert_eq!(a, ServerAction::Replace);
    let values = backend::decode_data_row(&frames(&out)[0]).unwrap();
    assert_eq!(values[0].as_deref(), Some(&b"123-45-6789"[..]));
    assert_eq!(values[1].as_deref(), Some(&b"1990-01-02"[..]));
    // A ciphertext of another column is an error, and the rest of the
    // exchange is dropped up to ReadyForQuery.
    let swapped = backend::encode_data_row(&[Some(cts[3]), Some(cts[2])]);
    let (a, out) = server(&mut s, &swapped);
    assert_eq!(a, ServerAction::Replace);
    let e = backend::ErrorFields::decode(&frames(&out)[0]).unwrap();
    assert_eq!(e.code(), Some(&b"XX001"[..]));
    let (a, _) = server(&mut s, &row);
    assert_eq!(a, ServerAction::Drop);
    let (a, _) = server(
        &mut s,
        &Frame::new(backend::tag::COMMAND_COMPLETE, b"INSERT 0 1\0"),
    );
    assert_eq!(a, ServerAction::Drop);
    let (a, _) = server(&mut s, &backend::TransactionStatus::Idle.encode());
    assert_eq!(a, ServerAction::Forward);
}

#[test]
fn extended_protocol_binds_are_encrypted_in_both_formats() {
    let mut s = session();
    let parse = frontend::Parse {
        name: Bytes::from_static(b"s1"),
        query: Bytes::from_static(
            b"INSERT INTO patients (first_name, date_of_birth, medical_history) VALUES ($1, $2, $3)",
        ),
        param_types: vec![0, 1082],
    };
    let (o, out) = client(&mut s, &parse.encode());
    assert!(matches!(o.action, ClientAction::Replace));
    let Ok(frontend::FrontendMessage::Parse(p)) =
        frontend::FrontendMessage::decode(&frames(&out)[0])
    else {
        panic!()
    };
    assert_eq!(p.param_types, vec![25, 25, 17], "storage types");
    client(&mut s, &Frame::new(frontend::tag::DESCRIBE, b"Ss1\0"));
    // ParameterDescription goes back to what the client declared / the logical type.
    let (_, out) = server(&mut s, &Frame::new(backend::tag::PARSE_COMPLETE, b""));
    assert!(out.is_empty());
    let (a, out) = server(
        &mut s,
        &backend::encode_parameter_description(&[25, 25, 17]),
    );
    assert_eq!(a, ServerAction::Replace);
    assert_eq!(
        backend::decode_parameter_description(&frames(&out)[0]).unwrap(),
        vec![25, 1082, 25]
    );
    let bind = frontend::Bind {
        portal: Bytes::new(),
        statement: Bytes::from_static(b"s1"),
        param_formats: vec![Format::Text, Format::Binary, Format::Binary],
        params: vec![
            Some(Bytes::from_static(b"CANARY-Name")),
            Some(Bytes::copy_from_slice(&(-3_652i32).to_be_bytes())), // 1990-01-01
            Some(Bytes::from_static(b"CANARY-history")),
        ],
        result_formats: vec![],
    };
    let (o, out) = client(&mut s, &bind.encode());
    assert!(matches!(o.action, ClientAction::Replace));
    assert!(!contains(&out, b"CANARY"));
    let Ok(frontend::FrontendMessage::Bind(b)) =
        frontend::FrontendMessage::decode(&frames(&out)[0])
    else {
        panic!()
    };
    assert!(b.params[0].as_ref().unwrap().starts_with(b"pgv1:"));
    assert!(b.params[1].as_ref().unwrap().starts_with(b"pgv1:"));
    assert_eq!(
        b.params[2].as_ref().unwrap()[0],
        0x11,
        "raw envelope for bytea in binary"
    );

    // An invalid value is refused by the server itself, in order.
    let bad = frontend::Bind {
        params: vec![None, Some(Bytes::from_static(b"\x00")), None],
        ..bind
    };
    let (o, out) = client(&mut s, &bad.encode());
    assert_eq!(o.path, Path::Refused("invalid_value"));
    let msgs = frames(&out);
    assert_eq!(
        msgs.iter().map(|f| f.tag()).collect::<Vec<_>>(),
        [b'P', b'B', b'E']
    );
    assert!(contains(
        msgs[0].raw(),
        b"RAISE EXCEPTION USING ERRCODE = '22P03'"
    ));
}

#[test]
fn refused_statements_never_reach_the_server_as_sent() {
    let mut s = session();
    let (o, out) = client(
        &mut s,
        &frontend::query(b"UPDATE patients SET ssn = upper('CANARY-1')"),
    );
    assert!(matches!(o.path, Path::Refused(_)));
    assert!(!contains(&out, b"CANARY"));
    assert!(contains(&out, b"DO $pgveil$"));
    assert!(o.error.unwrap().to_string().contains("public.patients.ssn"));
}

#[test]
fn tables_missing_from_the_catalog_refuse_writes() {
    let e = engine();
    let ctx = e.build(&[], e.generation());
    assert_eq!(ctx.catalog.missing_tables().len(), 4);
    let mut s = Session::new(e, "db", ctx);
    let (o, out) = client(
        &mut s,
        &frontend::query(
            b"INSERT INTO insurance (patient_id, payer, member_id) VALUES (1, 'p', 'CANARY')",
        ),
    );
    assert_eq!(o.path, Path::Refused("not_in_catalog"));
    assert!(!contains(&out, b"CANARY"));
}

/// Runs `input` through a COPY FROM STDIN session, split into two chunks at
/// `cut`, and returns what would reach the server.
fn copy_in_at(e: &Arc<Engine>, sql: &str, input: &[u8], cut: usize) -> Vec<u8> {
    let mut s = session_on(e);
    let (o, _) = client(&mut s, &frontend::query(sql.as_bytes()));
    assert!(o.error.is_none(), "{:?}", o.error);
    let mut sent = Vec::new();
    for part in [&input[..cut], &input[cut..]] {
        let (o, out) = client(&mut s, &Frame::new(frontend::tag::COPY_DATA, part));
        assert!(o.error.is_none(), "cut {cut}: {:?}", o.error);
        assert!(matches!(o.action, ClientAction::Replace));
        sent.extend(copy_payloads(&out));
    }
    let (o, out) = client(&mut s, &Frame::new(frontend::tag::COPY_DONE, b""));
    assert!(o.error.is_none());
    assert_eq!(last_tag(&out), Some(frontend::tag::COPY_DONE));
    sent.extend(copy_payloads(&out));
    sent
}

/// Runs `stored` through a COPY TO STDOUT session, split at `cut`.
fn copy_out_at(e: &Arc<Engine>, sql: &str, width: i16, stored: &[u8], cut: usize) -> Vec<u8> {
    copy_out_in(e, sql, 0, width, stored, cut)
}

/// [`copy_out_at`] in `format` (0 text, 1 binary).
fn copy_out_in(
    e: &Arc<Engine>,
    sql: &str,
    format: u8,
    width: i16,
    stored: &[u8],
    cut: usize,
) -> Vec<u8> {
    let mut s = session_on(e);
    let (o, _) = client(&mut s, &frontend::query(sql.as_bytes()));
    assert!(o.error.is_none(), "{:?}", o.error);
    let mut body = vec![format];
    body.extend_from_slice(&width.to_be_bytes());
    for _ in 0..width {
        body.extend_from_slice(&i16::from(format).to_be_bytes());
    }
    let (a, _) = server(&mut s, &Frame::new(backend::tag::COPY_OUT, &body));
    assert_eq!(a, ServerAction::Forward);
    let mut got = Vec::new();
    for part in [&stored[..cut], &stored[cut..]] {
        let (a, out) = server(&mut s, &Frame::new(backend::tag::COPY_DATA, part));
        assert_ne!(a, ServerAction::Forward, "cut {cut}");
        got.extend(copy_payloads(&out));
    }
    let (_, out) = server(&mut s, &Frame::new(backend::tag::COPY_DONE, b""));
    got.extend(copy_payloads(&out));
    got
}

/// The payloads of the CopyData messages in `bytes`.
fn copy_payloads(bytes: &[u8]) -> Vec<u8> {
    frames(bytes)
        .iter()
        .filter(|f| f.tag() == b'd')
        .flat_map(|f| f.body().to_vec())
        .collect()
}

/// The tag of the last message in `bytes`.
fn last_tag(bytes: &[u8]) -> Option<u8> {
    frames(bytes).last().map(Frame::tag)
}

#[test]
fn copy_streams_survive_every_chunk_boundary_in_text_and_csv() {
    let cases: [(&str, &str, &[u8]); 3] = [
        (
            "COPY patients (first_name, ssn, phone) FROM STDIN",
            "COPY patients (first_name, ssn, phone) TO STDOUT",
            b"CANARY-A\\tb\\\\c\\nd\tCANARY-1\t\\N\r\nCANARY-\\\\\t\t555\nCANARY-Z\\\nnewline\tCANARY-2\tx\\ty\n\\.\n",
        ),
        (
            "COPY patients (first_name, ssn, phone) FROM STDIN WITH (FORMAT csv, HEADER true)",
            "COPY patients (first_name, ssn, phone) TO STDOUT WITH (FORMAT csv, HEADER true)",
            b"first_name,ssn,phone\nCANARY-A,\"CANARY, \"\"1\"\"\",\n\"CANARY\nmulti\",\"\",555\r\nCANARY-B,CANARY-2,\"x,y\"\n",
        ),
        (
            "COPY patients (first_name, ssn) FROM STDIN (FORMAT csv, ESCAPE '\\', QUOTE '''')",
            "COPY patients (first_name, ssn) TO STDOUT (FORMAT csv, ESCAPE '\\', QUOTE '''')",
            b"'CANARY \\' q',CANARY-1\nCANARY\\b,plain\n",
        ),
    ];
    let e = engine();
    for (copy_in, copy_out, input) in cases {
        let width = if copy_in.contains("phone") { 3 } else { 2 };
        for cut in 0..=input.len() {
            let sent = copy_in_at(&e, copy_in, input, cut);
            assert!(!contains(&sent, b"CANARY"), "cut {cut}: plaintext sent");
            assert!(contains(&sent, b"pgv1:"), "cut {cut}");
            let back = copy_out_at(&e, copy_out, width, &sent, cut.min(sent.len()));
            // PostgreSQL writes a backslash-escaped newline back as `\n`.
            let want = String::from_utf8_lossy(input).replace("\\\n", "\\n");
            assert_eq!(String::from_utf8_lossy(&back), want, "{copy_in}, cut {cut}");
        }
    }
}

use crate::copy::encode_binary_copy as binary_copy;

#[test]
fn binary_copy_encrypts_and_decrypts_every_protected_field_at_every_chunk_boundary() {
    // first_name text, ssn text (deterministic), date_of_birth date
    // (binary: days since 2000-01-01), created_at (not protected).
    let dob = (-7304i32).to_be_bytes().to_vec(); // 1980-01-02
    let input = binary_copy(&[
        vec![
            Some(b"CANARY-A".to_vec()),
            Some(b"CANARY-1".to_vec()),
            Some(dob),
            Some(vec![0, 0, 0, 0, 0, 0, 0, 7]),
        ],
        vec![Some(b"CANARY-B".to_vec()), None, None, None],
        vec![Some(Vec::new()), Some(b"CANARY-2".to_vec()), None, None],
    ]);
    let copy_in =
        "COPY patients (first_name, ssn, date_of_birth, created_at) FROM STDIN (FORMAT binary)";
    let copy_out = "COPY patients (first_name, ssn, date_of_birth, created_at) TO STDOUT BINARY";
    let e = engine();
    for cut in 0..=input.len() {
        let sent = copy_in_at(&e, copy_in, &input, cut);
        assert!(!contains(&sent, b"CANARY"), "cut {cut}: plaintext sent");
        assert_eq!(
            sent.windows(5).filter(|w| w == b"pgv1:").count(),
            6,
            "cut {cut}"
        );
        let back = copy_out_in(&e, copy_out, 1, 4, &sent, cut.min(sent.len()));
        assert_eq!(back, input, "cut {cut}");
    }
}

#[test]
fn binary_copy_data_pgveil_cannot_read_is_refused() {
    let sql = "COPY patients (first_name, ssn) FROM STDIN (FORMAT binary)";
    let good = binary_copy(&[vec![Some(b"CANARY-A".to_vec()), Some(b"CANARY-1".to_vec())]]);
    let mut with_oids = good.clone();
    with_oids[12] = 1; // flag bit 16
    let mut after_trailer = good.clone();
    after_trailer.extend_from_slice(&good[19..]);
    let mut bad_date = b"PGCOPY\n\xff\r\n\0".to_vec();
    bad_date.extend_from_slice(&[0; 8]);
    for (sql, data, want) in [
        (sql, &b"PGCOPX\n\xff\r\n\0CANARY"[..], "PGCOPY signature"),
        (sql, &with_oids[..], "with OIDs"),
        (sql, &after_trailer[..], "after the binary COPY trailer"),
        (
            sql,
            &binary_copy(&[vec![Some(b"CANARY-A".to_vec())]])[..],
            "1 fields where 2 columns",
        ),
        (
            sql,
            &good[..good.len() - 4],
            "ends inside a header or tuple",
        ),
        (
            "COPY patients (date_of_birth) FROM STDIN (FORMAT binary)",
            &binary_copy(&[vec![Some(b"CANARY".to_vec())]])[..],
            "date_of_birth",
        ),
    ] {
        let mut s = session();
        let e = copy_in_result(&mut s, sql, data).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert!(!e.to_string().contains("CANARY"), "{e}");
    }
}

/// What the session sends for a COPY FROM STDIN stream, or its refusal.
fn copy_in_result(s: &mut Session, sql: &str, data: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let (o, _) = client(s, &frontend::query(sql.as_bytes()));
    if let Some(e) = o.error {
        return Err(e);
    }
    let (o, out) = client(s, &Frame::new(frontend::tag::COPY_DATA, data));
    if let Some(e) = o.error {
        assert_eq!(last_tag(&out), Some(frontend::tag::COPY_FAIL));
        assert!(!contains(&out, b"CANARY"));
        return Err(e);
    }
    let mut sent = copy_payloads(&out);
    let (o, out) = client(s, &Frame::new(frontend::tag::COPY_DONE, b""));
    if let Some(e) = o.error {
        return Err(e);
    }
    sent.extend(copy_payloads(&out));
    Ok(sent)
}

#[test]
fn copy_data_pgveil_cannot_split_safely_is_refused() {
    let sql = "COPY patients (first_name, ssn) FROM STDIN";
    let csv = "COPY patients (first_name, ssn) FROM STDIN (FORMAT csv)";
    for (sql, data, want) in [
        (
            sql,
            &b"CANARY-A\tCANARY-1\n\\.\nCANARY-B\tCANARY-2\n"[..],
            "after the end-of-data marker",
        ),
        (csv, &b"CANARY-A,CANARY-1\n\\.\n"[..], "a \\. line in CSV"),
        (
            sql,
            &b"CANARY-A\tCANARY-1\rCANARY-B\tCANARY-2\n"[..],
            "bare carriage return",
        ),
        (
            csv,
            &b"CANARY-A,CANARY-1\rCANARY-B,CANARY-2\n"[..],
            "bare carriage return",
        ),
        (
            sql,
            &b"CANARY-A\tCANARY-1\tCANARY-x\n"[..],
            "3 fields where 2 columns",
        ),
    ] {
        let mut s = session();
        let e = copy_in_result(&mut s, sql, data).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert!(!e.to_string().contains("CANARY"), "{e}");
        // Nothing more of that COPY reaches the server.
        let (o, out) = client(
            &mut s,
            &Frame::new(frontend::tag::COPY_DATA, b"CANARY-C\tCANARY-3\n"),
        );
        assert!(matches!(o.action, ClientAction::Replace) && out.is_empty());
    }
    // Escaped and quoted carriage returns are data.
    let mut s = session();
    assert!(copy_in_result(&mut s, sql, b"CANARY-A\\r\tCANARY-1\r\n").is_ok());
    let mut s = session();
    assert!(copy_in_result(&mut s, csv, b"\"CANARY\rA\",CANARY-1\r\n").is_ok());
    // Encodings that hide delimiters in multibyte characters.
    let mut s = session();
    s.parameter_status(b"client_encoding", b"SJIS");
    let e = copy_in_result(&mut s, sql, b"x\ty\n").unwrap_err();
    assert!(e.to_string().contains("client_encoding is SJIS"), "{e}");
    let mut s = session();
    let e = copy_in_result(
        &mut s,
        "COPY patients (first_name, ssn) FROM STDIN (ENCODING 'SJIS')",
        b"x\ty\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("ENCODING other than UTF8"), "{e}");
}

#[test]
fn statements_without_a_column_list_get_the_one_pgveil_relied_on() {
    for (sql, want) in [
        (
            "COPY patients FROM STDIN",
            "COPY patients (id, first_name, last_name, ssn, date_of_birth, phone, email, address, medical_history, created_at) FROM STDIN",
        ),
        (
            "INSERT INTO public.patients AS p VALUES (DEFAULT, 'CANARY-A', 'B')",
            "INSERT INTO public.patients AS p (id, first_name, last_name, ssn, date_of_birth, phone, email, address, medical_history, created_at) VALUES (DEFAULT, 'pgv1:",
        ),
    ] {
        let mut s = session();
        let (o, out) = client(&mut s, &frontend::query(sql.as_bytes()));
        assert!(o.error.is_none(), "{:?}", o.error);
        let text = String::from_utf8_lossy(&out[5..]).to_string();
        assert!(text.starts_with(want), "{sql} → {text}");
        assert!(!text.contains("CANARY"));
    }
}

/// tokio-postgres sends Bind, Execute, Sync, the data, CopyDone, Sync: the
/// first Sync is ignored by the server if the copy started, answered if the
/// Execute failed first. Either way the expectations end empty.
#[test]
fn syncs_sent_during_copy_in_are_matched_whether_or_not_the_copy_starts() {
    let ready = Frame::new(backend::tag::READY_FOR_QUERY, b"I");
    for started in [true, false] {
        let mut s = session();
        let parse = frontend::Parse {
            name: Bytes::new(),
            query: Bytes::from_static(b"COPY patients (first_name, ssn) FROM STDIN"),
            param_types: vec![],
        };
        client(&mut s, &parse.encode());
        client(&mut s, &Frame::new(frontend::tag::SYNC, b""));
        server(&mut s, &Frame::new(backend::tag::PARSE_COMPLETE, b""));
        server(&mut s, &ready);
        let bind = frontend::Bind {
            portal: Bytes::new(),
            statement: Bytes::new(),
            param_formats: vec![],
            params: vec![],
            result_formats: vec![],
        };
        client(&mut s, &bind.encode());
        client(&mut s, &Frame::new(frontend::tag::EXECUTE, b"\0\0\0\0\0"));
        client(&mut s, &Frame::new(frontend::tag::SYNC, b""));
        let (_, out) = client(
            &mut s,
            &Frame::new(frontend::tag::COPY_DATA, b"CANARY-A\tCANARY-1\n"),
        );
        assert!(!contains(&out, b"CANARY"));
        client(&mut s, &Frame::new(frontend::tag::COPY_DONE, b""));
        client(&mut s, &Frame::new(frontend::tag::SYNC, b""));
        // Pipelined behind it: a query whose result must still be decrypted.
        client(&mut s, &frontend::query(b"SELECT ssn FROM patients"));
        server(&mut s, &Frame::new(backend::tag::BIND_COMPLETE, b""));
        // pgveil described the portal before the Execute.
        let (a, _) = server(&mut s, &Frame::new(backend::tag::NO_DATA, b""));
        assert_eq!(a, ServerAction::Drop);
        if started {
            server(
                &mut s,
                &Frame::new(backend::tag::COPY_IN, &[0, 0, 2, 0, 0, 0, 0]),
            );
            server(
                &mut s,
                &Frame::new(backend::tag::COMMAND_COMPLETE, b"COPY 1\0"),
            );
            server(&mut s, &ready);
        } else {
            let e = backend::error_response(
                backend::Severity::Error,
                "42501",
                "permission denied",
                None,
                None,
            );
            server(&mut s, &e);
            server(&mut s, &ready); // the first Sync
            server(&mut s, &ready); // the second
        }
        let col = s
            .context()
            .catalog
            .column(&ColumnRef::parse("public.patients.ssn").unwrap())
            .unwrap()
            .clone();
        let stored = col
            .param_value(&col.encrypt(b"123-45-6789").unwrap(), Format::Text)
            .unwrap();
        server(
            &mut s,
            &backend::encode_row_description(&[field("ssn", 4, 25, Format::Text)]),
        );
        let (a, out) = server(&mut s, &backend::encode_data_row(&[Some(stored)]));
        assert_eq!(a, ServerAction::Replace, "started {started}: decrypted");
        assert!(contains(&out, b"123-45-6789"));
        server(
            &mut s,
            &Frame::new(backend::tag::COMMAND_COMPLETE, b"SELECT 1\0"),
        );
        server(&mut s, &ready);
        assert!(
            format!("{s:?}").contains("pending: 0"),
            "started {started}: {s:?}"
        );
    }
}

#[test]
fn csv_end_marker_follows_the_server_version() {
    let csv = "COPY patients (first_name, ssn) FROM STDIN (FORMAT csv)";
    // PostgreSQL 17 (psql ≤ 17 sends the `\.` line): it ends the data.
    let mut s = session();
    s.parameter_status(b"server_version", b"17.2 (Debian 17.2-1)");
    let all = copy_in_result(&mut s, csv, b"CANARY-A,CANARY-1\n\\.\n").unwrap();
    assert!(!contains(&all, b"CANARY"), "encrypted");
    assert!(contains(&all, b"\n\\.\n"), "the marker is passed on");
    // PostgreSQL 18 reads it as a value: refused, as when unknown.
    for v in [&b"18.1"[..], b"nonsense"] {
        let mut s = session();
        s.parameter_status(b"server_version", v);
        let e = copy_in_result(&mut s, csv, b"CANARY-A,CANARY-1\n\\.\n").unwrap_err();
        assert!(e.to_string().contains("a \\. line in CSV"), "{e}");
    }
}

#[test]
fn backslashes_whose_reading_a_setting_could_change_are_refused() {
    for sql in [
        // standard_conforming_strings could be off without pgveil knowing.
        &b"WITH a AS (SELECT '\\', '), b AS (INSERT INTO patients (first_name, last_name) VALUES ($$CANARY$$, $$x$$) RETURNING 1) SELECT ') SELECT 1 -- '"[..],
        // In GBK the backslash after a non-ASCII byte belongs to the character.
        "WITH a AS (SELECT E'中\\'), b AS (INSERT INTO patients (first_name, last_name) VALUES ($$CANARY$$, $$x$$) RETURNING 1) SELECT ') SELECT 1 -- '".as_bytes(),
    ] {
        let mut s = session();
        let (o, out) = client(&mut s, &frontend::query(sql));
        assert!(o.error.is_some(), "{}", String::from_utf8_lossy(sql));
        assert!(!contains(&out, b"CANARY"));
    }
    // E'' strings with plain ASCII escapes are unaffected.
    let mut s = session();
    let (o, _) = client(
        &mut s,
        &frontend::query(b"INSERT INTO patients (first_name, last_name) VALUES (E'a\\tb', 'x')"),
    );
    assert!(o.error.is_none(), "{:?}", o.error);
}

//! Typed backend (server → client) messages pgveil inspects or rewrites.

use crate::buf::{put_cstr, Reader};
use crate::frontend::Format;
use crate::{Frame, WireError};
use bytes::Bytes;

pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const NO_DATA: u8 = b'n';
    pub const EMPTY_QUERY: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const COPY_IN: u8 = b'G';
    pub const COPY_OUT: u8 = b'H';
    pub const COPY_BOTH: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const NOTIFICATION: u8 = b'A';
    pub const NEGOTIATE_PROTOCOL: u8 = b'v';
}

/// Authentication request codes (`'R'` messages).
pub mod auth {
    pub const OK: i32 = 0;
    pub const CLEARTEXT: i32 = 3;
    pub const MD5: i32 = 5;
    pub const GSS: i32 = 7;
    pub const GSS_CONTINUE: i32 = 8;
    pub const SSPI: i32 = 9;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// Returns the authentication request code of an `'R'` frame.
pub fn auth_code(frame: &Frame) -> Result<i32, WireError> {
    Reader::new(frame.body(), "Authentication").i32()
}

/// The SASL mechanisms offered by an `AuthenticationSASL` message.
pub fn sasl_mechanisms(frame: &Frame) -> Result<Vec<Bytes>, WireError> {
    let body = frame.body_bytes();
    let mut r = Reader::new(&body, "AuthenticationSASL");
    if r.i32()? != auth::SASL {
        return Err(WireError::Malformed {
            what: "AuthenticationSASL",
            why: "not a SASL request",
        });
    }
    let mut out = Vec::new();
    loop {
        let m = r.cstr()?;
        if m.is_empty() {
            r.finish()?;
            return Ok(out);
        }
        out.push(body.slice_ref(m));
    }
}

/// Encodes an `AuthenticationSASL` offering `mechanisms`.
pub fn sasl_request(mechanisms: &[Bytes]) -> Frame {
    let mut b = auth::SASL.to_be_bytes().to_vec();
    for m in mechanisms {
        put_cstr(&mut b, m);
    }
    b.push(0);
    Frame::new(tag::AUTHENTICATION, &b)
}

/// `BackendKeyData`: the key a client must present to cancel this session.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendKeyData {
    pub process_id: u32,
    pub secret: Bytes,
}

impl std::fmt::Debug for BackendKeyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendKeyData")
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

impl BackendKeyData {
    pub fn decode(frame: &Frame) -> Result<Self, WireError> {
        let body = frame.body_bytes();
        let mut r = Reader::new(&body, "BackendKeyData");
        let process_id = r.u32()?;
        let n = r.remaining();
        if !(4..=crate::startup::MAX_CANCEL_KEY).contains(&n) {
            return Err(WireError::Malformed {
                what: "BackendKeyData",
                why: "bad secret key length",
            });
        }
        Ok(Self {
            process_id,
            secret: body.slice(4..),
        })
    }

    pub fn encode(&self) -> Frame {
        let mut b = self.process_id.to_be_bytes().to_vec();
        b.extend_from_slice(&self.secret);
        Frame::new(tag::BACKEND_KEY_DATA, &b)
    }
}

/// Transaction status reported by `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    pub fn decode(frame: &Frame) -> Result<Self, WireError> {
        let mut r = Reader::new(frame.body(), "ReadyForQuery");
        let s = match r.u8()? {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            _ => {
                return Err(WireError::Malformed {
                    what: "ReadyForQuery",
                    why: "unknown transaction status",
                })
            }
        };
        r.finish()?;
        Ok(s)
    }

    pub fn encode(self) -> Frame {
        let b = match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        };
        Frame::new(tag::READY_FOR_QUERY, &[b])
    }
}

/// One column of a `RowDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: Bytes,
    /// OID of the source table, 0 when the column is not a plain table column.
    pub table_oid: u32,
    /// Attribute number within that table, 0 when unknown.
    pub column_attr: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: Format,
}

/// Decodes a `RowDescription` body.
pub fn decode_row_description(frame: &Frame) -> Result<Vec<FieldDescription>, WireError> {
    let body = frame.body_bytes();
    let mut r = Reader::new(&body, "RowDescription");
    let n = r.count16()?;
    let mut out = Vec::with_capacity(n.min(r.remaining() / 19));
    for _ in 0..n {
        let name = body.slice_ref(r.cstr()?);
        let table_oid = r.u32()?;
        let column_attr = r.i16()?;
        let type_oid = r.u32()?;
        let type_size = r.i16()?;
        let type_modifier = r.i32()?;
        let format = match r.i16()? {
            0 => Format::Text,
            1 => Format::Binary,
            _ => {
                return Err(WireError::Malformed {
                    what: "RowDescription",
                    why: "unknown format code",
                })
            }
        };
        out.push(FieldDescription {
            name,
            table_oid,
            column_attr,
            type_oid,
            type_size,
            type_modifier,
            format,
        });
    }
    r.finish()?;
    Ok(out)
}

pub fn encode_row_description(fields: &[FieldDescription]) -> Frame {
    let mut b = Vec::with_capacity(2 + fields.len() * 32);
    b.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for f in fields {
        put_cstr(&mut b, &f.name);
        b.extend_from_slice(&f.table_oid.to_be_bytes());
        b.extend_from_slice(&f.column_attr.to_be_bytes());
        b.extend_from_slice(&f.type_oid.to_be_bytes());
        b.extend_from_slice(&f.type_size.to_be_bytes());
        b.extend_from_slice(&f.type_modifier.to_be_bytes());
        b.extend_from_slice(&f.format.code().to_be_bytes());
    }
    Frame::new(tag::ROW_DESCRIPTION, &b)
}

/// Decodes the values of a `DataRow` (`None` is SQL NULL). Values borrow the
/// frame's buffer; nothing is copied.
pub fn decode_data_row(frame: &Frame) -> Result<Vec<Option<Bytes>>, WireError> {
    let body = frame.body_bytes();
    let mut r = Reader::new(&body, "DataRow");
    let n = r.count16()?;
    let mut out = Vec::with_capacity(n.min(r.remaining() / 4));
    for _ in 0..n {
        out.push(r.nullable(&body)?);
    }
    r.finish()?;
    Ok(out)
}

pub fn encode_data_row<B: AsRef<[u8]>>(values: &[Option<B>]) -> Frame {
    let size: usize = values
        .iter()
        .map(|v| 4 + v.as_ref().map_or(0, |v| v.as_ref().len()))
        .sum();
    let mut b = Vec::with_capacity(2 + size);
    b.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                let v = v.as_ref();
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    Frame::new(tag::DATA_ROW, &b)
}

/// Decodes a `ParameterDescription` into parameter type OIDs.
pub fn decode_parameter_description(frame: &Frame) -> Result<Vec<u32>, WireError> {
    let mut r = Reader::new(frame.body(), "ParameterDescription");
    let n = r.count16()?;
    let mut out = Vec::with_capacity(n.min(r.remaining() / 4));
    for _ in 0..n {
        out.push(r.u32()?);
    }
    r.finish()?;
    Ok(out)
}

pub fn encode_parameter_description(oids: &[u32]) -> Frame {
    let mut b = Vec::with_capacity(2 + 4 * oids.len());
    b.extend_from_slice(&(oids.len() as i16).to_be_bytes());
    for o in oids {
        b.extend_from_slice(&o.to_be_bytes());
    }
    Frame::new(tag::PARAMETER_DESCRIPTION, &b)
}

/// `ParameterStatus`: a run-time parameter's name and value.
pub fn decode_parameter_status(frame: &Frame) -> Result<(Bytes, Bytes), WireError> {
    let body = frame.body_bytes();
    let mut r = Reader::new(&body, "ParameterStatus");
    let name = body.slice_ref(r.cstr()?);
    let value = body.slice_ref(r.cstr()?);
    r.finish()?;
    Ok((name, value))
}

/// The command tag of a `CommandComplete`.
pub fn decode_command_complete(frame: &Frame) -> Result<Bytes, WireError> {
    let body = frame.body_bytes();
    let mut r = Reader::new(&body, "CommandComplete");
    let t = body.slice_ref(r.cstr()?);
    r.finish()?;
    Ok(t)
}

/// Field codes of `ErrorResponse` / `NoticeResponse`.
pub mod field {
    pub const SEVERITY: u8 = b'S';
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
}

/// An `ErrorResponse` or `NoticeResponse` as a list of `(code, value)` fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub fields: Vec<(u8, Bytes)>,
}

impl ErrorFields {
    pub fn decode(frame: &Frame) -> Result<Self, WireError> {
        Self::decode_body(&frame.body_bytes())
    }

    /// Decodes an `ErrorResponse`/`NoticeResponse` body.
    pub fn decode_body(body: &Bytes) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ErrorResponse");
        let mut fields = Vec::new();
        loop {
            let code = r.u8()?;
            if code == 0 {
                r.finish()?;
                return Ok(Self { fields });
            }
            fields.push((code, body.slice_ref(r.cstr()?)));
        }
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_ref())
    }

    /// SQLSTATE code, if present.
    pub fn code(&self) -> Option<&[u8]> {
        self.get(field::CODE)
    }

    /// Severity (non-localized when the server sent it).
    pub fn severity(&self) -> Option<&[u8]> {
        self.get(field::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(field::SEVERITY))
    }

    /// FATAL and PANIC errors end the session.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity(), Some(b"FATAL") | Some(b"PANIC"))
    }

    pub fn encode(&self, tag: u8) -> Frame {
        let mut b = Vec::new();
        for (c, v) in &self.fields {
            b.push(*c);
            put_cstr(&mut b, v);
        }
        b.push(0);
        Frame::new(tag, &b)
    }
}

/// Severity of an error pgveil itself reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

/// Builds an `ErrorResponse` frame for an error raised by pgveil.
pub fn error_response(
    severity: Severity,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> Frame {
    let sev: &[u8] = match severity {
        Severity::Error => b"ERROR",
        Severity::Fatal => b"FATAL",
    };
    let clean = |s: &str| Bytes::from(s.replace('\0', "").into_bytes());
    let mut e = ErrorFields::default();
    e.fields.push((field::SEVERITY, Bytes::from_static(sev)));
    e.fields
        .push((field::SEVERITY_NONLOCALIZED, Bytes::from_static(sev)));
    e.fields.push((field::CODE, clean(sqlstate)));
    e.fields.push((field::MESSAGE, clean(message)));
    if let Some(d) = detail {
        e.fields.push((field::DETAIL, clean(d)));
    }
    if let Some(h) = hint {
        e.fields.push((field::HINT, clean(h)));
    }
    e.encode(tag::ERROR_RESPONSE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sasl_list_round_trip() {
        let mechs = vec![
            Bytes::from_static(b"SCRAM-SHA-256-PLUS"),
            Bytes::from_static(b"SCRAM-SHA-256"),
        ];
        let f = sasl_request(&mechs);
        assert_eq!(auth_code(&f).unwrap(), auth::SASL);
        assert_eq!(sasl_mechanisms(&f).unwrap(), mechs);
    }

    #[test]
    fn error_response_round_trip() {
        let f = error_response(
            Severity::Fatal,
            "08P01",
            "bad\0 thing",
            None,
            Some("fix it"),
        );
        let e = ErrorFields::decode(&f).unwrap();
        assert!(e.is_fatal());
        assert_eq!(e.code(), Some(&b"08P01"[..]));
        assert_eq!(e.get(field::MESSAGE), Some(&b"bad thing"[..]));
        assert_eq!(e.get(field::HINT), Some(&b"fix it"[..]));
    }

    #[test]
    fn ready_for_query() {
        for s in [
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed,
        ] {
            assert_eq!(TransactionStatus::decode(&s.encode()).unwrap(), s);
        }
        assert!(TransactionStatus::decode(&Frame::new(b'Z', b"Q")).is_err());
    }

    fn field_desc() -> impl Strategy<Value = FieldDescription> {
        (
            proptest::collection::vec(1u8..=255, 0..12),
            any::<u32>(),
            any::<i16>(),
            any::<u32>(),
            any::<i16>(),
            any::<i32>(),
            any::<bool>(),
        )
            .prop_map(|(n, t, a, o, s, m, bin)| FieldDescription {
                name: Bytes::from(n),
                table_oid: t,
                column_attr: a,
                type_oid: o,
                type_size: s,
                type_modifier: m,
                format: if bin { Format::Binary } else { Format::Text },
            })
    }

    proptest! {
        #[test]
        fn row_description_round_trip(fields in proptest::collection::vec(field_desc(), 0..6)) {
            let f = encode_row_description(&fields);
            prop_assert_eq!(decode_row_description(&f).unwrap(), fields);
        }

        #[test]
        fn data_row_round_trip(values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..8)) {
            let f = encode_data_row(&values);
            let got: Vec<Option<Vec<u8>>> = decode_data_row(&f).unwrap().into_iter().map(|v| v.map(|b| b.to_vec())).collect();
            prop_assert_eq!(got, values);
        }

        #[test]
        fn parameter_description_round_trip(oids in proptest::collection::vec(any::<u32>(), 0..10)) {
            prop_assert_eq!(decode_parameter_description(&encode_parameter_description(&oids)).unwrap(), oids);
        }

        #[test]
        fn backend_decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_data_row(&Frame::new(b'D', &body));
            let _ = decode_row_description(&Frame::new(b'T', &body));
            let _ = ErrorFields::decode(&Frame::new(b'E', &body));
            let _ = sasl_mechanisms(&Frame::new(b'R', &body));
            let _ = BackendKeyData::decode(&Frame::new(b'K', &body));
        }
    }

    #[test]
    fn data_row_with_lying_length_is_an_error() {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend_from_slice(&100i32.to_be_bytes());
        b.extend_from_slice(b"short");
        assert!(decode_data_row(&Frame::new(b'D', &b)).is_err());
    }
}

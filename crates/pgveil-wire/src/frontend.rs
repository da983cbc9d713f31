//! Typed frontend (client → server) messages pgveil inspects or rewrites.
//!
//! Only these are decoded; every other frontend message (`FunctionCall`,
//! `PasswordMessage`/SASL responses, …) is forwarded as its raw [`Frame`].

use crate::buf::{put_cstr, Reader};
use crate::{Frame, WireError};
use bytes::Bytes;

pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
    pub const FUNCTION_CALL: u8 = b'F';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this tag.
    pub const PASSWORD: u8 = b'p';
}

/// Text (0) or binary (1) format code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Binary,
}

impl Format {
    fn from_code(code: i16, what: &'static str) -> Result<Self, WireError> {
        match code {
            0 => Ok(Format::Text),
            1 => Ok(Format::Binary),
            _ => Err(WireError::Malformed {
                what,
                why: "unknown format code",
            }),
        }
    }

    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }
}

/// Resolves a format-code list as the protocol defines it: none = all text,
/// one = applies to all, otherwise one per item.
pub fn format_at(formats: &[Format], i: usize) -> Format {
    match formats.len() {
        0 => Format::Text,
        1 => formats[0],
        _ => formats.get(i).copied().unwrap_or(Format::Text),
    }
}

/// `Describe` and `Close` target a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn parse(b: u8, what: &'static str) -> Result<Self, WireError> {
        match b {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(WireError::Malformed {
                what,
                why: "target is neither 'S' nor 'P'",
            }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Parse {
    pub name: Bytes,
    pub query: Bytes,
    pub param_types: Vec<u32>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Bind {
    pub portal: Bytes,
    pub statement: Bytes,
    pub param_formats: Vec<Format>,
    pub params: Vec<Option<Bytes>>,
    pub result_formats: Vec<Format>,
}

// Parameter values and query text may hold protected values: Debug omits them.
impl std::fmt::Debug for Parse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parse")
            .field("name", &self.name)
            .field("query_len", &self.query.len())
            .field("param_types", &self.param_types)
            .finish()
    }
}

impl std::fmt::Debug for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bind")
            .field("portal", &self.portal)
            .field("statement", &self.statement)
            .field("params", &self.params.len())
            .field("result_formats", &self.result_formats)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Describe {
    pub target: Target,
    pub name: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub target: Target,
    pub name: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    pub portal: Bytes,
    pub max_rows: i32,
}

/// Frontend messages pgveil decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// Simple query; the text excludes the trailing NUL.
    Query(Bytes),
    Parse(Parse),
    Bind(Bind),
    Describe(Describe),
    Execute(Execute),
    Close(Close),
    Sync,
    Flush,
    CopyData(Bytes),
    CopyDone,
    CopyFail,
    Terminate,
    /// Any other message, untouched.
    Other(u8),
}

fn slice_of(body: &Bytes, part: &[u8]) -> Bytes {
    body.slice_ref(part)
}

impl FrontendMessage {
    /// Decodes a frame received from a client.
    pub fn decode(frame: &Frame) -> Result<Self, WireError> {
        let body = frame.body_bytes();
        Ok(match frame.tag() {
            tag::QUERY => {
                let mut r = Reader::new(&body, "Query");
                let q = r.cstr()?;
                r.finish()?;
                FrontendMessage::Query(slice_of(&body, q))
            }
            tag::PARSE => {
                let mut r = Reader::new(&body, "Parse");
                let name = slice_of(&body, r.cstr()?);
                let query = slice_of(&body, r.cstr()?);
                let n = r.count16()?;
                let mut param_types = Vec::with_capacity(n.min(r.remaining() / 4));
                for _ in 0..n {
                    param_types.push(r.u32()?);
                }
                r.finish()?;
                FrontendMessage::Parse(Parse {
                    name,
                    query,
                    param_types,
                })
            }
            tag::BIND => {
                let mut r = Reader::new(&body, "Bind");
                let portal = slice_of(&body, r.cstr()?);
                let statement = slice_of(&body, r.cstr()?);
                let nf = r.count16()?;
                let mut param_formats = Vec::with_capacity(nf.min(r.remaining() / 2));
                for _ in 0..nf {
                    param_formats.push(Format::from_code(r.i16()?, "Bind")?);
                }
                let np = r.count16()?;
                let mut params = Vec::with_capacity(np.min(r.remaining() / 4));
                for _ in 0..np {
                    params.push(r.nullable(&body)?);
                }
                let nr = r.count16()?;
                let mut result_formats = Vec::with_capacity(nr.min(r.remaining() / 2));
                for _ in 0..nr {
                    result_formats.push(Format::from_code(r.i16()?, "Bind")?);
                }
                r.finish()?;
                FrontendMessage::Bind(Bind {
                    portal,
                    statement,
                    param_formats,
                    params,
                    result_formats,
                })
            }
            tag::DESCRIBE => {
                let mut r = Reader::new(&body, "Describe");
                let target = Target::parse(r.u8()?, "Describe")?;
                let name = slice_of(&body, r.cstr()?);
                r.finish()?;
                FrontendMessage::Describe(Describe { target, name })
            }
            tag::CLOSE => {
                let mut r = Reader::new(&body, "Close");
                let target = Target::parse(r.u8()?, "Close")?;
                let name = slice_of(&body, r.cstr()?);
                r.finish()?;
                FrontendMessage::Close(Close { target, name })
            }
            tag::EXECUTE => {
                let mut r = Reader::new(&body, "Execute");
                let portal = slice_of(&body, r.cstr()?);
                let max_rows = r.i32()?;
                r.finish()?;
                FrontendMessage::Execute(Execute { portal, max_rows })
            }
            tag::SYNC => FrontendMessage::Sync,
            tag::FLUSH => FrontendMessage::Flush,
            tag::COPY_DATA => FrontendMessage::CopyData(body),
            tag::COPY_DONE => FrontendMessage::CopyDone,
            tag::COPY_FAIL => FrontendMessage::CopyFail,
            tag::TERMINATE => FrontendMessage::Terminate,
            other => FrontendMessage::Other(other),
        })
    }
}

impl Parse {
    pub fn encode(&self) -> Frame {
        let mut b = Vec::with_capacity(self.query.len() + self.name.len() + 8);
        put_cstr(&mut b, &self.name);
        put_cstr(&mut b, &self.query);
        b.extend_from_slice(&(self.param_types.len() as i16).to_be_bytes());
        for t in &self.param_types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        Frame::new(tag::PARSE, &b)
    }
}

impl Bind {
    pub fn encode(&self) -> Frame {
        let size: usize = self
            .params
            .iter()
            .map(|p| 4 + p.as_ref().map_or(0, |v| v.len()))
            .sum();
        let mut b = Vec::with_capacity(size + self.portal.len() + self.statement.len() + 16);
        put_cstr(&mut b, &self.portal);
        put_cstr(&mut b, &self.statement);
        b.extend_from_slice(&(self.param_formats.len() as i16).to_be_bytes());
        for f in &self.param_formats {
            b.extend_from_slice(&f.code().to_be_bytes());
        }
        b.extend_from_slice(&(self.params.len() as i16).to_be_bytes());
        for p in &self.params {
            match p {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&(self.result_formats.len() as i16).to_be_bytes());
        for f in &self.result_formats {
            b.extend_from_slice(&f.code().to_be_bytes());
        }
        Frame::new(tag::BIND, &b)
    }
}

/// Encodes a simple `Query`.
pub fn query(sql: &[u8]) -> Frame {
    let mut b = Vec::with_capacity(sql.len() + 1);
    put_cstr(&mut b, sql);
    Frame::new(tag::QUERY, &b)
}

impl Describe {
    pub fn encode(&self) -> Frame {
        let mut b = vec![self.target.byte()];
        put_cstr(&mut b, &self.name);
        Frame::new(tag::DESCRIBE, &b)
    }
}

impl Close {
    pub fn encode(&self) -> Frame {
        let mut b = vec![self.target.byte()];
        put_cstr(&mut b, &self.name);
        Frame::new(tag::CLOSE, &b)
    }
}

impl Execute {
    pub fn encode(&self) -> Frame {
        let mut b = Vec::new();
        put_cstr(&mut b, &self.portal);
        b.extend_from_slice(&self.max_rows.to_be_bytes());
        Frame::new(tag::EXECUTE, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cstring() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(1u8..=255, 0..16).prop_map(Bytes::from)
    }

    fn format() -> impl Strategy<Value = Format> {
        prop_oneof![Just(Format::Text), Just(Format::Binary)]
    }

    proptest! {
        #[test]
        fn parse_round_trip(name in cstring(), query in cstring(), types in proptest::collection::vec(any::<u32>(), 0..8)) {
            let p = Parse { name, query, param_types: types };
            let f = p.encode();
            prop_assert_eq!(FrontendMessage::decode(&f).unwrap(), FrontendMessage::Parse(p));
        }

        #[test]
        fn bind_round_trip(
            portal in cstring(), statement in cstring(),
            param_formats in proptest::collection::vec(format(), 0..4),
            params in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from)), 0..6),
            result_formats in proptest::collection::vec(format(), 0..4),
        ) {
            let b = Bind { portal, statement, param_formats, params, result_formats };
            let f = b.encode();
            prop_assert_eq!(FrontendMessage::decode(&f).unwrap(), FrontendMessage::Bind(b));
        }

        #[test]
        fn decode_never_panics(tag in prop_oneof![Just(b'Q'), Just(b'P'), Just(b'B'), Just(b'D'), Just(b'C'), Just(b'E')], body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = FrontendMessage::decode(&Frame::new(tag, &body));
        }
    }

    #[test]
    fn malformed_bind_is_an_error() {
        // Claims 1000 parameters but carries none.
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&1000i16.to_be_bytes());
        assert!(matches!(
            FrontendMessage::decode(&Frame::new(b'B', &b)),
            Err(WireError::Truncated("Bind"))
        ));
        let f = Frame::new(b'B', &[0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert!(FrontendMessage::decode(&f).is_err());
    }

    #[test]
    fn format_resolution() {
        assert_eq!(format_at(&[], 3), Format::Text);
        assert_eq!(format_at(&[Format::Binary], 3), Format::Binary);
        assert_eq!(
            format_at(&[Format::Text, Format::Binary], 1),
            Format::Binary
        );
    }

    #[test]
    fn query_debug_hides_text() {
        let p = Parse {
            name: Bytes::new(),
            query: Bytes::from_static(b"SELECT 'secret'"),
            param_types: vec![],
        };
        assert!(!format!("{p:?}").contains("secret"));
    }
}

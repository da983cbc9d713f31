//! The untagged startup phase: `int32 len | int32 code | body`.
//!
//! See "Message Flow › Start-up" and the `StartupMessage`, `SSLRequest`,
//! `GSSENCRequest` and `CancelRequest` formats in the PostgreSQL protocol docs.

use crate::buf::Reader;
use crate::WireError;
use bytes::{Buf, Bytes, BytesMut};

/// PostgreSQL's own limit for a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Request codes in the startup packet's code field.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Protocol 3.0. Protocol 3.2 (PostgreSQL 18) is also accepted and forwarded;
/// the server negotiates with `NegotiateProtocolVersion`.
pub const PROTOCOL_3_0: u32 = 196_608;

/// Longest cancel key PostgreSQL 18's protocol 3.2 allows.
pub const MAX_CANCEL_KEY: usize = 256;

/// One packet of the startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelRequest),
    Startup(StartupMessage),
}

/// A request to cancel the query running on another connection.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub process_id: u32,
    /// The secret key. 4 bytes in protocol 3.0, up to 256 in 3.2.
    pub secret: Bytes,
}

impl std::fmt::Debug for CancelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelRequest")
            .field("process_id", &self.process_id)
            .field("secret", &"..")
            .finish()
    }
}

impl CancelRequest {
    pub fn encode(&self) -> Vec<u8> {
        let len = 12 + self.secret.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        out.extend_from_slice(&self.process_id.to_be_bytes());
        out.extend_from_slice(&self.secret);
        out
    }
}

/// A `StartupMessage`: protocol version and `name=value` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub protocol: u32,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> Option<&str> {
        self.param("user")
    }

    /// The database, which defaults to the user name as in PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.param("database").or_else(|| self.user())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.protocol.to_be_bytes());
        for (k, v) in &self.params {
            crate::buf::put_cstr(&mut body, k.as_bytes());
            crate::buf::put_cstr(&mut body, v.as_bytes());
        }
        body.push(0);
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Encodes an `SSLRequest` (used towards an upstream server).
pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

/// Frames one startup-phase packet from `buf`.
///
/// Returns `Ok(None)` until the whole packet has arrived. The declared length
/// is checked against [`MAX_STARTUP_PACKET`] before waiting for the body, so a
/// peer cannot make pgveil buffer more than that.
pub fn parse_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    // The length is judged as soon as it has arrived, as PostgreSQL does:
    // a short one (4, 7, negative) must not wait for bytes never coming.
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 8 {
        return Err(WireError::BadLength {
            what: "startup packet",
            len: len as i64,
        });
    }
    // PostgreSQL caps the length without its own 4 bytes.
    if len - 4 > MAX_STARTUP_PACKET {
        return Err(WireError::TooLarge {
            what: "startup packet",
            len,
            max: MAX_STARTUP_PACKET,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len).freeze();
    debug_assert!(packet.len() >= 8);
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = packet.slice(8..);
    let fixed = |p: StartupPacket| {
        if body.is_empty() {
            Ok(Some(p))
        } else {
            Err(WireError::BadLength {
                what: "startup request",
                len: len as i64,
            })
        }
    };
    match code {
        SSL_REQUEST_CODE => fixed(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => fixed(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let mut r = Reader::new(&body, "CancelRequest");
            let process_id = r.u32()?;
            let key_len = r.remaining();
            if !(4..=MAX_CANCEL_KEY).contains(&key_len) {
                return Err(WireError::Malformed {
                    what: "CancelRequest",
                    why: "bad secret key length",
                });
            }
            Ok(Some(StartupPacket::Cancel(CancelRequest {
                process_id,
                secret: body.slice(4..),
            })))
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            Ok(Some(StartupPacket::Startup(StartupMessage {
                protocol: code,
                params: parse_params(body)?,
            })))
        }
    }
}

fn parse_params(mut body: Bytes) -> Result<Vec<(String, String)>, WireError> {
    const WHAT: &str = "StartupMessage";
    let mut params = Vec::new();
    loop {
        let Some(end) = body.iter().position(|&b| b == 0) else {
            return Err(WireError::Truncated(WHAT));
        };
        if end == 0 {
            body.advance(1);
            if !body.is_empty() {
                return Err(WireError::Malformed {
                    what: WHAT,
                    why: "trailing bytes",
                });
            }
            return Ok(params);
        }
        let key = utf8(&body[..end])?;
        body.advance(end + 1);
        let Some(vend) = body.iter().position(|&b| b == 0) else {
            return Err(WireError::Truncated(WHAT));
        };
        let value = utf8(&body[..vend])?;
        body.advance(vend + 1);
        params.push((key, value));
    }
}

fn utf8(b: &[u8]) -> Result<String, WireError> {
    String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed {
        what: "StartupMessage",
        why: "parameter is not valid UTF-8",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<StartupPacket>, WireError> {
        parse_startup(&mut BytesMut::from(bytes))
    }

    #[test]
    fn ssl_and_gss_requests() {
        assert_eq!(
            parse(&ssl_request()).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        let mut g = 8u32.to_be_bytes().to_vec();
        g.extend_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes());
        assert_eq!(parse(&g).unwrap(), Some(StartupPacket::GssEncRequest));
    }

    #[test]
    fn startup_round_trip() {
        let msg = StartupMessage {
            protocol: PROTOCOL_3_0,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "clinic".into()),
            ],
        };
        let enc = msg.encode();
        let got = parse(&enc).unwrap().unwrap();
        assert_eq!(got, StartupPacket::Startup(msg.clone()));
        assert_eq!(msg.database(), Some("clinic"));
    }

    #[test]
    fn incomplete_waits() {
        let msg = StartupMessage {
            protocol: PROTOCOL_3_0,
            params: vec![("user".into(), "a".into())],
        }
        .encode();
        for n in 0..msg.len() {
            assert_eq!(parse(&msg[..n]).unwrap(), None, "prefix {n}");
        }
    }

    #[test]
    fn cancel_round_trip() {
        let c = CancelRequest {
            process_id: 42,
            secret: Bytes::from_static(&[1, 2, 3, 4]),
        };
        assert_eq!(
            parse(&c.encode()).unwrap(),
            Some(StartupPacket::Cancel(c.clone()))
        );
        assert!(!format!("{c:?}").contains("[1, 2, 3, 4]"));
    }

    #[test]
    fn oversized_is_rejected_before_buffering() {
        let mut p = (MAX_STARTUP_PACKET as u32 + 5).to_be_bytes().to_vec();
        p.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        assert!(matches!(parse(&p), Err(WireError::TooLarge { .. })));
        let p = u32::MAX.to_be_bytes();
        let mut p = p.to_vec();
        p.extend_from_slice(&[0; 4]);
        assert!(matches!(parse(&p), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(WireError::TooLarge { .. })
        ));
        let mut p = 8u32.to_be_bytes().to_vec();
        p.extend_from_slice(&0x0002_0000u32.to_be_bytes());
        assert!(matches!(
            parse(&p),
            Err(WireError::UnsupportedProtocol { major: 2, .. })
        ));
        let p = [0, 0, 0, 3, 0, 0, 0, 0];
        assert!(matches!(parse(&p), Err(WireError::BadLength { .. })));
    }

    #[test]
    fn unterminated_params_are_truncated() {
        let mut p = 14u32.to_be_bytes().to_vec();
        p.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        p.extend_from_slice(b"user\0a");
        assert!(matches!(parse(&p), Err(WireError::Truncated(_))));
    }
}

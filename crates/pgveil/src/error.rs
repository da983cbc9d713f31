//! Session errors and the single mapping from them to what a client may see.
//!
//! Following Neon's `UserFacingError`: every error a client can receive is
//! built in [`ProxyError::client_error`]; internal details (addresses, OS
//! errors, key material, values) are logged by the caller, not sent.

use pgveil_wire::backend::{error_response, Severity};
use pgveil_wire::{Frame, WireError};

/// Everything that can end or interrupt a client session.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("client protocol violation: {0}")]
    ClientProtocol(#[from] WireError),
    #[error("server protocol violation: {0}")]
    ServerProtocol(WireError),
    /// A startup packet whose framing PostgreSQL itself answers by closing
    /// the connection without a word (it logs the reason): a length out of
    /// range, a malformed cancel request.
    #[error("invalid startup packet: {0}")]
    BadStartupPacket(WireError),
    #[error("client sent an unexpected message during {phase}")]
    UnexpectedClientMessage { phase: &'static str },
    /// Bytes pipelined behind an SSLRequest, before its answer: sent in the
    /// clear, possibly injected (CVE-2021-23214); PostgreSQL's FATAL.
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    #[error("TLS is required")]
    TlsRequired,
    #[error("client requested TLS but none is configured")]
    TlsNotConfigured,
    #[error("TLS handshake with client failed: {0}")]
    ClientTls(std::io::Error),
    #[error("direct TLS connection without the postgresql ALPN protocol")]
    DirectTlsWithoutAlpn,
    #[error("too many connections")]
    TooManyConnections,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("could not connect to upstream: {0}")]
    UpstreamConnect(String),
    #[error("upstream requested an authentication method pgveil cannot relay ({0})")]
    UnsupportedAuth(i32),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("cannot resolve the protected columns: {0}")]
    Catalog(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// The `ErrorResponse` to send to the client before closing, if any.
    ///
    /// SQLSTATEs follow PostgreSQL's own choices for the same situations.
    pub fn client_error(&self) -> Option<Frame> {
        let mut detail = None;
        let (code, msg, hint): (&str, String, Option<&str>) = match self {
            // PostgreSQL's own words for the startup packets it rejects.
            ProxyError::ClientProtocol(WireError::UnsupportedProtocol { major, minor }) => (
                "0A000",
                format!("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"),
                None,
            ),
            ProxyError::ClientProtocol(WireError::Truncated("StartupMessage")) => (
                "08P01",
                "invalid startup packet layout: expected terminator as last byte".into(),
                None,
            ),
            ProxyError::DataAfterSslRequest => {
                detail = Some("This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.");
                ("08P01", "received unencrypted data after SSL request".into(), None)
            }
            ProxyError::ClientProtocol(e) => ("08P01", format!("invalid frontend message: {e}"), None),
            ProxyError::UnexpectedClientMessage { phase } => {
                ("08P01", format!("unexpected message from client during {phase}"), None)
            }
            ProxyError::TlsRequired => (
                "28000",
                "pgveil requires TLS: connections without SSL are refused".into(),
                Some("Connect with sslmode=require, verify-ca or verify-full."),
            ),
            ProxyError::TooManyConnections => (
                "53300",
                "sorry, too many clients already (pgveil connection limit reached)".into(),
                None,
            ),
            ProxyError::HandshakeTimeout => ("08P01", "handshake timed out".into(), None),
            ProxyError::UpstreamConnect(_) => (
                "08006",
                "pgveil could not connect to the upstream PostgreSQL server".into(),
                None,
            ),
            ProxyError::ServerProtocol(_) => (
                "08P01",
                "pgveil received an invalid message from the upstream server".into(),
                None,
            ),
            ProxyError::UnsupportedAuth(_) => (
                "28000",
                "the upstream server requested an authentication method pgveil cannot relay (GSSAPI/SSPI)".into(),
                Some("Use SCRAM-SHA-256, md5 or password authentication for connections through pgveil."),
            ),
            ProxyError::ShuttingDown => (
                "57P01",
                "terminating connection because pgveil is shutting down".into(),
                None,
            ),
            ProxyError::Catalog(m) => (
                "XX000",
                format!("pgveil cannot resolve the policy's protected columns in this database: {m}"),
                None,
            ),
            ProxyError::TlsNotConfigured
            | ProxyError::BadStartupPacket(_)
            | ProxyError::ClientTls(_)
            | ProxyError::DirectTlsWithoutAlpn
            | ProxyError::Io(_) => return None,
        };
        Some(error_response(Severity::Fatal, code, &msg, detail, hint))
    }

    /// What to send a client that asked for protocol 2 or older: the error
    /// in that protocol's form (`E`, the text, a NUL; no length), as
    /// PostgreSQL does — such a client cannot read a v3 `ErrorResponse`.
    pub fn v2_client_error(&self) -> Option<Vec<u8>> {
        match self {
            ProxyError::ClientProtocol(WireError::UnsupportedProtocol { major, minor })
                if *major < 3 =>
            {
                let mut b = b"E".to_vec();
                b.extend_from_slice(
                    format!("FATAL:  unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0\n")
                        .as_bytes(),
                );
                b.push(0);
                Some(b)
            }
            _ => None,
        }
    }

    /// True when the peer simply went away; not worth a warning.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProxyError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

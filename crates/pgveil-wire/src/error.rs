//! Codec errors. Each is a protocol violation by the peer (SQLSTATE 08P01).

/// Why bytes from a peer could not be framed or decoded.
///
/// Messages describe the *shape* of the problem only; they never include
/// message contents, which may carry protected values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A length field exceeds the configured cap.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A length field is smaller than the smallest legal value.
    #[error("invalid {what} length {len}")]
    BadLength { what: &'static str, len: i64 },
    /// The body of a message ended before a field it declares.
    #[error("malformed {0} message: truncated")]
    Truncated(&'static str),
    /// A field holds a value the protocol does not allow.
    #[error("malformed {what} message: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    /// The first packet of a connection is not a startup-phase packet.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol { major: u16, minor: u16 },
}

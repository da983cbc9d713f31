//! PostgreSQL wire protocol codec for pgveil. No I/O.
//!
//! The codec follows the shape of `postgres-protocol`: every parser takes a
//! `&mut BytesMut` and returns `Ok(None)` when more bytes are needed, so the
//! I/O layer can feed it whatever a socket read produced.
//!
//! * [`startup`] frames the untagged startup phase: `StartupMessage`,
//!   `SSLRequest`, `GSSENCRequest` and `CancelRequest`
//!   (<https://www.postgresql.org/docs/current/protocol-message-formats.html>).
//! * [`frame`] frames tagged messages (`tag | int32 len | body`) in either
//!   direction and keeps them as raw bytes so that messages pgveil does not need
//!   to look inside are forwarded byte for byte.
//! * [`frontend`] and [`backend`] decode (and encode) the few messages pgveil
//!   must inspect or rewrite. Direction is part of a message's identity: `'D'`
//!   is `Describe` from a client and `DataRow` from a server, so the two
//!   directions have separate types.
//!
//! Every length read from the wire is checked against a cap before anything is
//! allocated: the startup packet against [`startup::MAX_STARTUP_PACKET`], tagged
//! messages against a configurable maximum.
#![forbid(unsafe_code)]

pub mod backend;
mod buf;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use error::WireError;
pub use frame::{Frame, FrameReader};

//! Framing of tagged messages: `byte tag | int32 len | body`, `len` counting
//! itself but not the tag.

use crate::WireError;
use bytes::{Bytes, BytesMut};

/// Default cap for one message body. PostgreSQL itself allows up to 1 GiB for
/// some messages; pgveil's cap is configurable (`max_message_size`).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// One tagged message kept as raw bytes (header included) so it can be
/// forwarded unchanged. Decoding into a typed message is on demand.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl std::fmt::Debug for Frame {
    // Bodies may carry protected values: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame({:?}, {} bytes)",
            self.tag() as char,
            self.raw.len()
        )
    }
}

impl Frame {
    /// Builds a frame from a tag and a body.
    pub fn new(tag: u8, body: &[u8]) -> Self {
        let mut out = BytesMut::with_capacity(body.len() + 5);
        crate::buf::put_message(&mut out, tag, body);
        Self { raw: out.freeze() }
    }

    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The body, without tag and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }

    /// The body as a cheap clone of the underlying buffer.
    pub fn body_bytes(&self) -> Bytes {
        self.raw.slice(5..)
    }

    /// The whole message as it appeared on the wire.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Frames tagged messages, refusing any whose declared length exceeds a cap.
#[derive(Debug, Clone, Copy)]
pub struct FrameReader {
    max_body: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl FrameReader {
    pub fn new(max_body: usize) -> Self {
        Self { max_body }
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Checks the message at the front of `buf` without consuming it.
    ///
    /// Returns its tag and total length (header included) once it is complete,
    /// `Ok(None)` while it is not. The same caps as [`FrameReader::parse`]
    /// apply. Lets a relay forward runs of messages straight from its read
    /// buffer, without splitting or copying them.
    pub fn peek(&self, buf: &[u8]) -> Result<Option<(u8, usize)>, WireError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(WireError::BadLength {
                what: "message",
                len: len.into(),
            });
        }
        let body = len as usize - 4;
        if body > self.max_body {
            return Err(WireError::TooLarge {
                what: "message",
                len: body,
                max: self.max_body,
            });
        }
        let total = body + 5;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some((buf[0], total)))
    }

    /// The total length of the message whose header starts `buf`, once the
    /// header is complete (for reserving buffer space).
    pub fn declared_total(buf: &[u8]) -> Option<usize> {
        if buf.len() < 5 {
            return None;
        }
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        usize::try_from(len).ok().map(|l| l + 1)
    }

    /// Splits one complete message off the front of `buf`.
    ///
    /// Returns `Ok(None)` while the message is incomplete. The length is checked
    /// as soon as the header is in, so an oversized claim is refused before its
    /// body is buffered.
    pub fn parse(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.peek(buf)? {
            Some((_, total)) => Ok(Some(Frame {
                raw: buf.split_to(total).freeze(),
            })),
            None => {
                if let Some(total) = Self::declared_total(buf) {
                    buf.reserve(total.saturating_sub(buf.len()));
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_and_waits() {
        let f = Frame::new(b'Q', b"SELECT 1\0");
        let r = FrameReader::default();
        for n in 0..f.len() {
            let mut b = BytesMut::from(&f.raw()[..n]);
            assert_eq!(r.parse(&mut b).unwrap(), None);
        }
        let mut b = BytesMut::from(&f.raw()[..]);
        b.extend_from_slice(b"S\0\0\0\x04");
        assert_eq!(r.parse(&mut b).unwrap().unwrap(), f);
        assert_eq!(r.parse(&mut b).unwrap().unwrap().tag(), b'S');
        assert!(b.is_empty());
    }

    #[test]
    fn oversized_and_negative_lengths() {
        let r = FrameReader::new(100);
        let mut b = BytesMut::from(&b"Q\x00\x00\x00\x69"[..]);
        assert!(matches!(
            r.parse(&mut b),
            Err(WireError::TooLarge { len: 101, .. })
        ));
        let mut b = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(matches!(r.parse(&mut b), Err(WireError::BadLength { .. })));
        let mut b = BytesMut::from(&b"Q\x00\x00\x00\x03"[..]);
        assert!(matches!(r.parse(&mut b), Err(WireError::BadLength { .. })));
    }

    proptest! {
        #[test]
        fn any_split_reframes(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8), cut in 0usize..512) {
            let r = FrameReader::new(1024);
            let frames: Vec<Frame> = bodies.iter().map(|b| Frame::new(b'd', b)).collect();
            let wire: Vec<u8> = frames.iter().flat_map(|f| f.raw().to_vec()).collect();
            let cut = cut.min(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = r.parse(&mut buf).unwrap() { got.push(f); }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = r.parse(&mut buf).unwrap() { got.push(f); }
            prop_assert_eq!(got, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let r = FrameReader::new(128);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = r.parse(&mut buf) {}
        }
    }
}

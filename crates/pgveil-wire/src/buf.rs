//! Bounds-checked readers over a message body.

use crate::WireError;
use bytes::Bytes;

/// A cursor over one message body. Every read checks the remaining length and
/// reports which message was truncated.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(self.i32()? as u32)
    }

    /// A count that must be non-negative (i16 on the wire).
    pub(crate) fn count16(&mut self) -> Result<usize, WireError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| WireError::Malformed {
            what: self.what,
            why: "negative count",
        })
    }

    /// A NUL-terminated string (not validated as UTF-8; Postgres allows any
    /// server encoding).
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        match self.buf.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                Ok(s)
            }
            None => Err(WireError::Truncated(self.what)),
        }
    }

    /// A value prefixed by an int32 length where -1 means NULL.
    pub(crate) fn nullable(&mut self, body: &Bytes) -> Result<Option<Bytes>, WireError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| WireError::Malformed {
            what: self.what,
            why: "negative value length",
        })?;
        let start = body.len() - self.buf.len();
        self.take(len)?;
        Ok(Some(body.slice(start..start + len)))
    }

    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed {
                what: self.what,
                why: "trailing bytes",
            })
        }
    }
}

/// Appends a C string, refusing embedded NULs (they would re-frame the message).
pub(crate) fn put_cstr(out: &mut Vec<u8>, s: &[u8]) {
    debug_assert!(!s.contains(&0));
    out.extend_from_slice(s);
    out.push(0);
}

/// Appends a tagged message: `tag | len | body`, where `len` counts itself.
pub(crate) fn put_message(out: &mut bytes::BytesMut, tag: u8, body: &[u8]) {
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

//! COPY streams in text and CSV format: the protected fields of each row of
//! `COPY … FROM STDIN` are encrypted on their way to the server, those of
//! `COPY … TO STDOUT` decrypted on their way to the client. Rows may span
//! `CopyData` messages; only the incomplete last line is buffered (capped),
//! so memory stays flat however long the stream.
//!
//! Field syntax follows PostgreSQL's `copyfromparse.c`/`copyto.c`: in text
//! format a backslash escapes the next byte (newline included) and the NULL
//! marker is compared before de-escaping; in CSV a field is NULL only when
//! unquoted and equal to the NULL marker.
//!
//! Binary format (drivers' bulk loaders): a signature header, then tuples
//! of a 16-bit field count and length-prefixed fields in each column's
//! binary send/receive form, then a trailer (field count -1). Protected
//! fields are read in the column's logical type and written in its storage
//! type (text: the envelope's text form; bytea: the raw envelope), and the
//! reverse on the way out. A tuple is buffered whole (capped like a line).

use std::sync::Arc;

use pgveil_crypto::canonical::SessionTimeZone;
use pgveil_sql::{CopyDirection, CopyFormat, CopyPlan};
use pgveil_wire::frontend::Format;
use zeroize::Zeroize;

use crate::error::RewriteError;
use crate::values::{ColumnCrypto, DecryptBuffers};
use crate::Catalog;

/// The longest COPY line pgveil buffers while waiting for its end.
pub const MAX_COPY_LINE: usize = 64 << 20;

/// How to transform the rows of one COPY statement.
#[derive(Debug)]
pub struct CopyCodec {
    table: String,
    encrypt: bool,
    csv: bool,
    binary: bool,
    delimiter: u8,
    null: Vec<u8>,
    header: bool,
    quote: u8,
    escape: u8,
    cols: Vec<Option<Arc<ColumnCrypto>>>,
}

fn single_byte(c: char, what: &str, table: &str) -> Result<u8, RewriteError> {
    if c.is_ascii() && c != '\n' && c != '\r' {
        Ok(c as u8)
    } else {
        Err(RewriteError::CopyFormat {
            table: table.to_owned(),
            line: 0,
            reason: format!("COPY {what} must be a single ASCII character for pgveil"),
        })
    }
}

impl CopyCodec {
    /// The codec for a planned COPY, with the columns resolved in `catalog`.
    pub fn new(plan: &CopyPlan, catalog: &Catalog) -> Result<Arc<Self>, RewriteError> {
        let table = plan.table.to_string();
        let Some(fields) = &plan.columns else {
            return Err(RewriteError::CopyFormat {
                table,
                line: 0,
                reason: "the table's column order is not in pgveil's catalog; list the columns: COPY t (a, b, …)".to_owned(),
            });
        };
        let mut cols = Vec::with_capacity(fields.len());
        for f in fields {
            cols.push(match &f.target {
                Some(t) => {
                    let c = catalog.column(&t.column)?;
                    if let crate::Storage::Other(oid) = c.storage {
                        return Err(RewriteError::BadStorage {
                            column: t.column.clone(),
                            storage: format!("type OID {oid}"),
                        });
                    }
                    Some(c.clone())
                }
                None => None,
            });
        }
        Ok(Arc::new(CopyCodec {
            encrypt: plan.direction == CopyDirection::FromStdin,
            csv: plan.format == CopyFormat::Csv,
            binary: plan.format == CopyFormat::Binary,
            delimiter: single_byte(plan.delimiter, "DELIMITER", &table)?,
            null: plan.null.as_bytes().to_vec(),
            header: plan.header,
            quote: single_byte(plan.quote, "QUOTE", &table)?,
            escape: single_byte(plan.escape, "ESCAPE", &table)?,
            cols,
            table,
        }))
    }

    /// True for `COPY … FROM STDIN`.
    pub fn is_copy_in(&self) -> bool {
        self.encrypt
    }

    /// The number of columns in each row.
    pub fn width(&self) -> usize {
        self.cols.len()
    }

    /// The protected column of each field (`None`: not protected).
    pub(crate) fn columns(&self) -> &[Option<Arc<ColumnCrypto>>] {
        &self.cols
    }

    /// True for binary format (`CopyOutResponse` format code 1).
    pub fn is_binary(&self) -> bool {
        self.binary
    }
}

/// The signature that starts binary COPY data.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags and header-extension length.
const BINARY_HEADER: usize = 19;
/// The longest binary header extension pgveil accepts (PostgreSQL writes
/// none).
const MAX_HEADER_EXTENSION: u32 = 1 << 20;

/// Where a binary COPY stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryPhase {
    Header,
    Tuples,
    /// After the trailer: nothing more may come.
    Ended,
}

/// One COPY stream in progress.
pub struct CopyStream {
    codec: Arc<CopyCodec>,
    tz: SessionTimeZone,
    /// The incomplete last line.
    pending: Vec<u8>,
    /// Line-splitting state carried across chunks.
    escaped: bool,
    in_quotes: bool,
    header_pending: bool,
    ended: bool,
    /// The server ends CSV data at a `\.` line too (PostgreSQL 17 and
    /// older; 18 reads it as a value).
    csv_end_marker: bool,
    line: u64,
    binary: BinaryPhase,
    // Scratch (may hold plaintext: wiped after every row).
    value: Vec<u8>,
    text: Vec<u8>,
    /// The binary envelope of the field being encrypted (ciphertext).
    envelope: Vec<u8>,
    fields: Vec<Field>,
    bufs: DecryptBuffers,
    /// `COPY … TO`: per column, the mask the session's role sees it under
    /// (`None`: plaintext).
    masks: Vec<Option<pgveil_policy::MaskKind>>,
}

impl std::fmt::Debug for CopyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyStream")
            .field("table", &self.codec.table)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
struct Field {
    start: usize,
    end: usize,
    quoted: bool,
}

impl Drop for CopyStream {
    fn drop(&mut self) {
        self.wipe();
        self.pending.zeroize();
    }
}

impl CopyStream {
    /// A stream transformed by `codec`, for a server of major version
    /// `server_major` (which decides what a `\.` line means in CSV;
    /// unknown: refused).
    pub fn new(codec: Arc<CopyCodec>, tz: SessionTimeZone, server_major: Option<u32>) -> Self {
        CopyStream {
            csv_end_marker: server_major.is_some_and(|v| v <= 17),
            header_pending: codec.header,
            codec,
            tz,
            pending: Vec::new(),
            escaped: false,
            in_quotes: false,
            ended: false,
            line: 0,
            binary: BinaryPhase::Header,
            value: Vec::new(),
            text: Vec::new(),
            envelope: Vec::new(),
            fields: Vec::new(),
            bufs: DecryptBuffers::default(),
            masks: Vec::new(),
        }
    }

    /// Masks the columns of a `COPY … TO` as `masks` says (by column).
    pub(crate) fn with_masks(mut self, masks: Vec<Option<pgveil_policy::MaskKind>>) -> Self {
        self.masks = masks;
        self
    }

    fn wipe(&mut self) {
        self.value.zeroize();
        self.text.zeroize();
        self.bufs.wipe();
    }

    /// Transforms the complete lines of `data` (plus what was pending) and
    /// appends them to `out`; keeps an incomplete last line.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.codec.binary {
            return self.feed_binary(data, out);
        }
        let mut start = 0;
        let mut i = 0;
        while i < data.len() {
            // Jump to the next byte that can change the splitter's state.
            if !self.escaped && !self.in_quotes {
                let next = if self.codec.csv {
                    memchr::memchr2(b'\n', self.codec.quote, &data[i..])
                } else {
                    memchr::memchr2(b'\n', b'\\', &data[i..])
                };
                match next {
                    Some(k) => i += k,
                    None => break,
                }
            } else if self.in_quotes && !self.escaped {
                let next = if self.codec.escape == self.codec.quote {
                    memchr::memchr(self.codec.quote, &data[i..])
                } else {
                    memchr::memchr2(self.codec.quote, self.codec.escape, &data[i..])
                };
                match next {
                    Some(k) => i += k,
                    None => break,
                }
            }
            let c = data[i];
            i += 1;
            if !self.end_of_line(c) {
                continue;
            }
            let i = i - 1;
            if self.pending.is_empty() {
                self.emit_line(&data[start..=i], out)?;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&data[start..=i]);
                let r = self.emit_line(&line, out);
                line.zeroize();
                r?;
            }
            start = i + 1;
        }
        if start < data.len() {
            if self.pending.len() + (data.len() - start) > MAX_COPY_LINE {
                return Err(self.format_error(format!(
                    "a COPY line is longer than pgveil's limit of {MAX_COPY_LINE} bytes"
                )));
            }
            self.pending.extend_from_slice(&data[start..]);
        }
        Ok(())
    }

    /// The end of the stream: a last line without a newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.codec.binary {
            // The server reads a stream without trailer to its end, but not
            // one that stops inside a header or tuple.
            return Err(
                self.format_error("the binary COPY data ends inside a header or tuple".to_owned())
            );
        }
        let mut line = std::mem::take(&mut self.pending);
        let r = self.emit_line(&line, out);
        line.zeroize();
        r
    }

    /// Advances the line splitter over one byte; true at an end of line.
    fn end_of_line(&mut self, c: u8) -> bool {
        let codec = &self.codec;
        if self.escaped {
            self.escaped = false;
            // In CSV the escape only matters before a quote or an escape;
            // anything else is looked at again.
            if !codec.csv || c == codec.quote || c == codec.escape {
                return false;
            }
        }
        if codec.csv {
            if self.in_quotes {
                if c == codec.escape && codec.escape != codec.quote {
                    self.escaped = true;
                } else if c == codec.quote {
                    self.in_quotes = false;
                }
                false
            } else if c == codec.quote {
                self.in_quotes = true;
                false
            } else {
                c == b'\n'
            }
        } else if c == b'\\' {
            self.escaped = true;
            false
        } else {
            c == b'\n'
        }
    }

    fn format_error(&self, reason: String) -> RewriteError {
        RewriteError::CopyFormat {
            table: self.codec.table.clone(),
            line: self.line,
            reason,
        }
    }

    /// One line including its terminator (none for a last line).
    fn emit_line(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.line += 1;
        let (body, eol) = match raw.strip_suffix(b"\n") {
            // A `\r` before the newline ends the line too, unless a backslash
            // escapes it (text format).
            Some(b) => match b.strip_suffix(b"\r") {
                Some(b2) if self.codec.csv || trailing_backslashes(b2).is_multiple_of(2) => {
                    (b2, &raw[b2.len()..])
                }
                _ => (b, &raw[b.len()..]),
            },
            None => (raw, &raw[raw.len()..]),
        };
        if self.ended {
            // PostgreSQL stops at the end-of-data marker (or, from 18 in CSV,
            // reads on): nothing may follow it unencrypted.
            if body.is_empty() && eol.len() == raw.len() {
                out.extend_from_slice(raw);
                return Ok(());
            }
            return Err(self.format_error(
                "data after the end-of-data marker \\. is not accepted by pgveil".to_owned(),
            ));
        }
        if body == b"\\." {
            if self.codec.csv && !self.csv_end_marker {
                return Err(self.format_error(
                    "a \\. line in CSV data is a value for PostgreSQL 18 and later (and this server's version is unknown or 18+); pgveil refuses it: remove the line".to_owned(),
                ));
            }
            self.ended = true;
            out.extend_from_slice(raw);
            return Ok(());
        }
        if memchr::memchr(b'\r', body).is_some() && self.bare_carriage_return(body) {
            return Err(self.format_error(
                "a bare carriage return ends a line for PostgreSQL but not for pgveil; use \\n or \\r\\n line endings, or escape it".to_owned(),
            ));
        }
        if self.header_pending {
            self.header_pending = false;
            out.extend_from_slice(raw);
            return Ok(());
        }
        let r = self.transform(body, out);
        self.wipe();
        r?;
        out.extend_from_slice(eol);
        Ok(())
    }

    /// Whether `body` has a carriage return outside an escape (text) or
    /// outside quotes (CSV).
    fn bare_carriage_return(&self, body: &[u8]) -> bool {
        let codec = &self.codec;
        let mut escaped = false;
        let mut in_quotes = false;
        for &c in body {
            if codec.csv {
                if in_quotes {
                    if escaped {
                        escaped = false;
                    } else if c == codec.escape && codec.escape != codec.quote {
                        escaped = true;
                    } else if c == codec.quote {
                        in_quotes = false;
                    }
                } else if c == codec.quote {
                    in_quotes = true;
                } else if c == b'\r' {
                    return true;
                }
            } else if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'\r' {
                return true;
            }
        }
        false
    }

    fn split(&mut self, body: &[u8]) {
        self.fields.clear();
        let codec = &self.codec;
        let mut start = 0;
        let mut i = 0;
        let mut in_quotes = false;
        let mut quoted = false;
        while i < body.len() {
            let c = body[i];
            if codec.csv {
                if in_quotes {
                    if c == codec.escape
                        && codec.escape != codec.quote
                        && body
                            .get(i + 1)
                            .is_some_and(|&n| n == codec.quote || n == codec.escape)
                    {
                        i += 2;
                        continue;
                    }
                    if c == codec.quote {
                        in_quotes = false;
                    }
                } else if c == codec.quote {
                    in_quotes = true;
                    quoted = true;
                } else if c == codec.delimiter {
                    self.fields.push(Field {
                        start,
                        end: i,
                        quoted,
                    });
                    start = i + 1;
                    quoted = false;
                }
            } else {
                match memchr::memchr2(codec.delimiter, b'\\', &body[i..]) {
                    None => break,
                    Some(k) => i += k,
                }
                if body[i] == b'\\' {
                    i += 2;
                    continue;
                }
                self.fields.push(Field {
                    start,
                    end: i,
                    quoted: false,
                });
                start = i + 1;
            }
            i += 1;
        }
        self.fields.push(Field {
            start,
            end: body.len(),
            quoted,
        });
    }

    fn transform(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.split(body);
        let codec = self.codec.clone();
        if self.fields.len() != codec.cols.len() {
            return Err(self.format_error(format!(
                "a row has {} fields where {} columns were expected",
                self.fields.len(),
                codec.cols.len()
            )));
        }
        let fields = std::mem::take(&mut self.fields);
        let mut result = Ok(());
        for (i, (f, col)) in fields.iter().zip(codec.cols.iter()).enumerate() {
            if i > 0 {
                out.push(codec.delimiter);
            }
            let raw = &body[f.start..f.end];
            let Some(col) = col else {
                out.extend_from_slice(raw);
                continue;
            };
            if !f.quoted && raw == codec.null.as_slice() {
                out.extend_from_slice(raw);
                continue;
            }
            let mask = self.masks.get(i).copied().flatten();
            if let Err(e) = self.field(col, mask, raw, out) {
                result = Err(RewriteError::InCopy {
                    line: self.line,
                    inner: Box::new(e),
                });
                break;
            }
        }
        self.fields = fields;
        result
    }

    /// One non-NULL protected field.
    fn field(
        &mut self,
        col: &ColumnCrypto,
        mask: Option<pgveil_policy::MaskKind>,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        self.value.clear();
        if self.codec.csv {
            csv_unquote(raw, self.codec.quote, self.codec.escape, &mut self.value);
        } else {
            text_unescape(raw, &mut self.value);
        }
        self.text.clear();
        if self.codec.encrypt {
            let mut canonical =
                col.canonical_from_client(&self.value, Format::Text, None, self.tz)?;
            let r = col.encrypt_stored_into(
                &canonical,
                Format::Text,
                &mut self.envelope,
                &mut self.text,
            );
            canonical.zeroize();
            r?;
            // Ciphertext text has no delimiter, quote or newline; a bytea's
            // `\x` needs its backslash escaped in text format.
            if self.codec.csv {
                csv_quote(&self.text, &self.codec, true, out);
            } else {
                text_escape(&self.text, self.codec.delimiter, out);
            }
        } else {
            if let Some(mask) = mask {
                if !col.mask_to_client(
                    &self.value,
                    Format::Text,
                    mask,
                    &mut self.bufs,
                    &mut self.text,
                )? {
                    out.extend_from_slice(&self.codec.null);
                    return Ok(());
                }
            } else {
                col.decrypt_to_client(
                    &self.value,
                    Format::Text,
                    self.tz,
                    &mut self.bufs,
                    &mut self.text,
                )?;
            }
            if self.codec.csv {
                csv_quote(&self.text, &self.codec, false, out);
            } else {
                text_escape(&self.text, self.codec.delimiter, out);
            }
        }
        Ok(())
    }
}

impl CopyStream {
    /// Binary format: transforms the complete units (header, tuples,
    /// trailer) of what was pending plus `data`; keeps an incomplete last
    /// one.
    fn feed_binary(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.pending.is_empty() {
            let used = self.binary_units(data, out)?;
            self.pending.extend_from_slice(&data[used..]);
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let r = self.binary_units(&buf, out);
        if let Ok(used) = r {
            self.pending.extend_from_slice(&buf[used..]);
        }
        buf.zeroize();
        r.map(|_| ())
    }

    /// Transforms the complete units at the start of `buf`; returns how many
    /// bytes they took.
    fn binary_units(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, RewriteError> {
        let mut pos = 0;
        while let Some(n) = self.binary_unit(&buf[pos..], out)? {
            pos += n;
        }
        Ok(pos)
    }

    /// One unit at the start of `buf`: its length, or `None` while it is
    /// incomplete.
    fn binary_unit(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, RewriteError> {
        match self.binary {
            BinaryPhase::Header => {
                let sig = buf.len().min(BINARY_SIGNATURE.len());
                if buf[..sig] != BINARY_SIGNATURE[..sig] {
                    return Err(self.format_error(
                        "binary COPY data does not start with the PGCOPY signature".to_owned(),
                    ));
                }
                if buf.len() < BINARY_HEADER {
                    return Ok(None);
                }
                let flags = be_u32(&buf[11..15]);
                if flags & (1 << 16) != 0 {
                    return Err(
                        self.format_error("binary COPY data with OIDs is not supported".to_owned())
                    );
                }
                if flags >> 17 != 0 {
                    return Err(self
                        .format_error("binary COPY data with unknown critical flags".to_owned()));
                }
                let extension = be_u32(&buf[15..19]);
                if extension > MAX_HEADER_EXTENSION {
                    return Err(self.format_error(format!(
                        "a binary COPY header extension is longer than pgveil's limit of {MAX_HEADER_EXTENSION} bytes"
                    )));
                }
                let total = BINARY_HEADER + extension as usize;
                if buf.len() < total {
                    return Ok(None);
                }
                out.extend_from_slice(&buf[..total]);
                self.binary = BinaryPhase::Tuples;
                Ok(Some(total))
            }
            BinaryPhase::Tuples => {
                let Some(count) = buf.get(..2) else {
                    return Ok(None);
                };
                let count = i16::from_be_bytes([count[0], count[1]]);
                if count == -1 {
                    out.extend_from_slice(&buf[..2]);
                    self.binary = BinaryPhase::Ended;
                    return Ok(Some(2));
                }
                if count < 0 || count as usize != self.codec.cols.len() {
                    return Err(self.format_error(format!(
                        "a tuple has {count} fields where {} columns were expected",
                        self.codec.cols.len()
                    )));
                }
                // Measure the tuple; every declared length counts against
                // the cap before its bytes arrive.
                let mut end = 2;
                for _ in 0..count {
                    let Some(len) = buf.get(end..end + 4) else {
                        return Ok(None);
                    };
                    let len = be_u32(len) as i32;
                    end += 4;
                    if len == -1 {
                        continue;
                    }
                    if len < 0 {
                        return Err(
                            self.format_error(format!("a field has the invalid length {len}"))
                        );
                    }
                    end += len as usize;
                    if end > MAX_COPY_LINE {
                        return Err(self.format_error(format!(
                            "a COPY tuple is longer than pgveil's limit of {MAX_COPY_LINE} bytes"
                        )));
                    }
                }
                if buf.len() < end {
                    return Ok(None);
                }
                self.line += 1;
                let r = self.binary_tuple(&buf[..end], out);
                self.wipe();
                r.map(|()| Some(end))
            }
            BinaryPhase::Ended if buf.is_empty() => Ok(None),
            BinaryPhase::Ended => Err(self.format_error(
                "data after the binary COPY trailer is not accepted by pgveil".to_owned(),
            )),
        }
    }

    /// One complete tuple (field count included).
    fn binary_tuple(&mut self, tuple: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let codec = self.codec.clone();
        out.extend_from_slice(&tuple[..2]);
        let mut pos = 2;
        for (i, col) in codec.cols.iter().enumerate() {
            let len = be_u32(&tuple[pos..pos + 4]) as i32;
            let start = pos;
            pos += 4;
            if len == -1 {
                out.extend_from_slice(&tuple[start..pos]);
                continue;
            }
            let value = &tuple[pos..pos + len as usize];
            pos += len as usize;
            let Some(col) = col else {
                out.extend_from_slice(&tuple[start..pos]);
                continue;
            };
            // The field straight into `out`, its length patched after.
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            let r = if codec.encrypt {
                col.canonical_from_client(value, Format::Binary, None, self.tz)
                    .and_then(|mut canonical| {
                        let r = col.encrypt_stored_into(
                            &canonical,
                            Format::Binary,
                            &mut self.envelope,
                            out,
                        );
                        canonical.zeroize();
                        r
                    })
            } else if let Some(mask) = self.masks.get(i).copied().flatten() {
                match col.mask_to_client(value, Format::Binary, mask, &mut self.bufs, out) {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        out.truncate(at);
                        out.extend_from_slice(&(-1i32).to_be_bytes());
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                col.decrypt_to_client(value, Format::Binary, self.tz, &mut self.bufs, out)
            };
            let len = match r {
                Ok(()) => i32::try_from(out.len() - at - 4).ok(),
                Err(e) => {
                    out[at..].zeroize();
                    out.truncate(at);
                    return Err(RewriteError::InCopy {
                        line: self.line,
                        inner: Box::new(e),
                    });
                }
            };
            let Some(len) = len else {
                out[at..].zeroize();
                out.truncate(at);
                return Err(
                    self.format_error("a transformed field is longer than 2 GiB".to_owned())
                );
            };
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }
}

/// Binary COPY data for `tuples` (a field `None` is NULL): header, tuples,
/// trailer. What drivers send; for tests, benchmarks and tools.
pub fn encode_binary_copy(tuples: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
    let mut b = BINARY_SIGNATURE.to_vec();
    b.extend_from_slice(&[0; 8]);
    for t in tuples {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        for f in t {
            match f {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn trailing_backslashes(b: &[u8]) -> usize {
    b.iter().rev().take_while(|&&c| c == b'\\').count()
}

/// Text-format field → bytes (`copyfromparse.c` `CopyReadAttributesText`).
fn text_unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != b'\\' || i >= raw.len() {
            out.push(c);
            continue;
        }
        let n = raw[i];
        i += 1;
        match n {
            b'0'..=b'7' => {
                let mut v = u32::from(n - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => match raw.get(i).and_then(|&d| (d as char).to_digit(16)) {
                Some(h) => {
                    i += 1;
                    let mut v = h;
                    if let Some(l) = raw.get(i).and_then(|&d| (d as char).to_digit(16)) {
                        v = v * 16 + l;
                        i += 1;
                    }
                    out.push(v as u8);
                }
                None => out.push(b'x'),
            },
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            other => out.push(other),
        }
    }
}

/// Bytes → text-format field (`copyto.c` `CopyAttributeOutText`).
fn text_escape(value: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    let special = |c: u8| c < 0x20 || c == b'\\' || c == delimiter;
    let mut run = 0;
    for (i, &c) in value.iter().enumerate() {
        if !special(c) {
            continue;
        }
        out.extend_from_slice(&value[run..i]);
        run = i + 1;
        match c {
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            11 => out.extend_from_slice(b"\\v"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            c if c == delimiter => {
                out.push(b'\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.extend_from_slice(&value[run..]);
}

/// CSV field → bytes: quotes removed, escapes resolved.
fn csv_unquote(raw: &[u8], quote: u8, escape: u8, out: &mut Vec<u8>) {
    let mut in_quotes = false;
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if in_quotes {
            if c == escape && raw.get(i).is_some_and(|&n| n == quote || n == escape) {
                out.push(raw[i]);
                i += 1;
                continue;
            }
            if c == quote {
                in_quotes = false;
                continue;
            }
            out.push(c);
        } else if c == quote {
            in_quotes = true;
        } else {
            out.push(c);
        }
    }
}

/// Bytes → CSV field, quoted when PostgreSQL would quote it (`copyto.c`
/// `CopyAttributeOutCSV`), or always.
fn csv_quote(value: &[u8], codec: &CopyCodec, always: bool, out: &mut Vec<u8>) {
    let need = always
        || value == codec.null.as_slice()
        || (codec.cols.len() == 1 && value == b"\\.")
        || value
            .iter()
            .any(|&c| c == codec.delimiter || c == codec.quote || c == b'\n' || c == b'\r');
    if !need {
        out.extend_from_slice(value);
        return;
    }
    out.push(codec.quote);
    let mut run = 0;
    for (i, &c) in value.iter().enumerate() {
        if c == codec.quote || c == codec.escape {
            out.extend_from_slice(&value[run..i]);
            out.push(codec.escape);
            run = i;
        }
    }
    out.extend_from_slice(&value[run..]);
    out.push(codec.quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_round_trip() {
        let v = b"a\tb\\c\nd\re\x08\x0b\x0c,|";
        let mut esc = Vec::new();
        text_escape(v, b'|', &mut esc);
        assert_eq!(esc, b"a\\tb\\\\c\\nd\\re\\b\\v\\f,\\|".to_vec());
        let mut back = Vec::new();
        text_unescape(&esc, &mut back);
        assert_eq!(back, v.to_vec());
        let mut o = Vec::new();
        text_unescape(b"\\101\\x41\\x4g\\q\\", &mut o);
        assert_eq!(o, b"AA\x04gq\\".to_vec());
    }

    #[test]
    fn csv_unquote_forms() {
        let mut o = Vec::new();
        csv_unquote(br#""a,""b"" c"d"#, b'"', b'"', &mut o);
        assert_eq!(o, br#"a,"b" cd"#.to_vec());
        o.clear();
        csv_unquote(br#""a\"b\\c\d""#, b'"', b'\\', &mut o);
        assert_eq!(o, br#"a"b\c\d"#.to_vec());
    }
}

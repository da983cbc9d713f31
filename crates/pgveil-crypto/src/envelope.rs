//! The envelope byte format and its two storage encodings.
//!
//! See the crate documentation for the byte-by-byte layout. This module only
//! parses and encodes; it holds no keys.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::CryptoError;

/// Format byte of a v1 randomized (AES-256-GCM) envelope.
pub const FORMAT_V1_RANDOMIZED: u8 = 0x11;
/// Format byte of a v1 deterministic (AES-256-GCM-SIV) envelope.
pub const FORMAT_V1_DETERMINISTIC: u8 = 0x12;
/// Length of `format(1) | key_version(4)`, the part of the header that is also AAD.
pub const HEADER_LEN: usize = 5;
/// AEAD nonce length.
pub const NONCE_LEN: usize = 12;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Bytes before the ciphertext: format, key version, nonce.
pub const PREFIX_LEN: usize = HEADER_LEN + NONCE_LEN;
/// Fixed size added to every plaintext: 33 bytes.
pub const OVERHEAD: usize = PREFIX_LEN + TAG_LEN;
/// Prefix of the text form stored in `text`/`varchar` columns.
pub const TEXT_PREFIX: &str = "pgv1:";

/// How a key encrypts: the per-key choice the policy makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionMode {
    /// AES-256-GCM with a random nonce: equal plaintexts give unrelated ciphertexts.
    Randomized,
    /// AES-256-GCM-SIV with a synthetic nonce: equal plaintexts give equal ciphertexts.
    Deterministic,
}

impl EncryptionMode {
    /// The envelope format byte for this mode (format version 1).
    pub const fn format_byte(self) -> u8 {
        match self {
            Self::Randomized => FORMAT_V1_RANDOMIZED,
            Self::Deterministic => FORMAT_V1_DETERMINISTIC,
        }
    }

    /// The mode a format byte stands for, if it is a known format.
    pub const fn from_format_byte(byte: u8) -> Option<Self> {
        match byte {
            FORMAT_V1_RANDOMIZED => Some(Self::Randomized),
            FORMAT_V1_DETERMINISTIC => Some(Self::Deterministic),
            _ => None,
        }
    }

    /// `randomized` or `deterministic`, as in the policy and keyring files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Randomized => "randomized",
            Self::Deterministic => "deterministic",
        }
    }
}

impl fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated-in-clear part of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Mode from the format byte.
    pub mode: EncryptionMode,
    /// Version of the column key's data key that encrypted the value.
    pub key_version: u32,
}

impl EnvelopeHeader {
    /// The 5 header bytes: format byte then big-endian key version.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let v = self.key_version.to_be_bytes();
        [self.mode.format_byte(), v[0], v[1], v[2], v[3]]
    }
}

/// Whether a first byte falls in the range reserved for binary envelopes
/// (`0x01..=0x1f`, control characters that never start a text form).
const fn is_reserved_format_byte(byte: u8) -> bool {
    matches!(byte, 0x01..=0x1f)
}

/// Parses and checks the header of a binary envelope (format byte, length).
///
/// # Errors
/// [`CryptoError::Truncated`] below 33 bytes, [`CryptoError::UnsupportedVersion`]
/// for an unknown format byte.
pub fn parse_header(envelope: &[u8]) -> Result<EnvelopeHeader, CryptoError> {
    let Some(&first) = envelope.first() else {
        return Err(CryptoError::Truncated {
            len: 0,
            min: OVERHEAD,
        });
    };
    let mode =
        EncryptionMode::from_format_byte(first).ok_or(CryptoError::UnsupportedVersion(first))?;
    if envelope.len() < OVERHEAD {
        return Err(CryptoError::Truncated {
            len: envelope.len(),
            min: OVERHEAD,
        });
    }
    let key_version = u32::from_be_bytes([envelope[1], envelope[2], envelope[3], envelope[4]]);
    Ok(EnvelopeHeader { mode, key_version })
}

/// Encodes a binary envelope for a `text`/`varchar` column: `pgv1:` + base64
/// (standard alphabet, padded).
pub fn encode_text(envelope: &[u8]) -> String {
    let mut out = String::with_capacity(TEXT_PREFIX.len() + envelope.len().div_ceil(3) * 4);
    out.push_str(TEXT_PREFIX);
    STANDARD.encode_string(envelope, &mut out);
    out
}

/// [`encode_text`], appended to `out` (no allocation when it has room).
pub fn encode_text_into(envelope: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(TEXT_PREFIX.as_bytes());
    let at = out.len();
    out.resize(at + envelope.len().div_ceil(3) * 4, 0);
    let n = STANDARD
        .encode_slice(envelope, &mut out[at..])
        .expect("sized for padded base64");
    out.truncate(at + n);
    debug_assert!(out.len() > start);
}

/// [`encode_bytea_hex`], appended to `out`.
pub fn encode_bytea_hex_into(envelope: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + envelope.len() * 2);
    out.extend_from_slice(b"\\x");
    for &b in envelope {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

/// Renders a binary envelope as PostgreSQL's text form of a `bytea` value:
/// `\x` + lowercase hex (what a `bytea` column returns in text format and what
/// a `bytea` literal or text-format parameter takes).
pub fn encode_bytea_hex(envelope: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + envelope.len() * 2);
    out.push_str("\\x");
    for &b in envelope {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A `bytea` value in the `escape` output format (`SET bytea_output =
/// 'escape'`) whose first byte is an envelope format byte (`\021`,
/// `\022`, octal).
fn is_bytea_escape_envelope(stored: &[u8]) -> bool {
    stored.starts_with(b"\\021") || stored.starts_with(b"\\022")
}

/// `bytea` escape format: `\\` is a backslash, `\ooo` an octal byte,
/// anything else the byte itself.
fn decode_bytea_escape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        if s.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
            continue;
        }
        match s.get(i + 1..i + 4) {
            Some(&[a, b, c])
                if (b'0'..=b'3').contains(&a)
                    && (b'0'..=b'7').contains(&b)
                    && (b'0'..=b'7').contains(&c) =>
            {
                out.push((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'));
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Recognises a stored value and returns the binary envelope inside it.
///
/// Accepted forms, told apart by their first bytes:
/// * a binary envelope (first byte `0x11`/`0x12`), borrowed as is;
/// * `pgv1:` + padded standard base64 of a binary envelope (text columns);
/// * `\x` + lowercase hex of a binary envelope (a `bytea` value in text format).
///
/// Decoding is strict (canonical base64 only, lowercase hex only, no
/// whitespace), so no two stored strings decode to the same envelope.
///
/// # Errors
/// [`CryptoError::NotAnEnvelope`] for anything else, [`CryptoError::InvalidEncoding`]
/// for a malformed payload, and the header errors of [`parse_header`].
pub fn decode(stored: &[u8]) -> Result<Cow<'_, [u8]>, CryptoError> {
    let envelope: Cow<'_, [u8]> = if let Some(b64) = stored.strip_prefix(TEXT_PREFIX.as_bytes()) {
        Cow::Owned(
            STANDARD
                .decode(b64)
                .map_err(|_| CryptoError::InvalidEncoding)?,
        )
    } else if let Some(hex) = stored.strip_prefix(b"\\x") {
        Cow::Owned(decode_lower_hex(hex).ok_or(CryptoError::InvalidEncoding)?)
    } else if is_bytea_escape_envelope(stored) {
        Cow::Owned(decode_bytea_escape(stored).ok_or(CryptoError::InvalidEncoding)?)
    } else {
        match stored.first() {
            Some(&b) if is_reserved_format_byte(b) => Cow::Borrowed(stored),
            _ => return Err(CryptoError::NotAnEnvelope),
        }
    };
    parse_header(&envelope)?;
    Ok(envelope)
}

/// Like [`decode`], but a decoded (`pgv1:` or `\x`) envelope goes into
/// `scratch` (cleared first) instead of a new allocation: the proxy's hot
/// path reuses one buffer for every value of a result.
///
/// # Errors
/// As [`decode`].
pub fn decode_into<'a>(
    stored: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], CryptoError> {
    if let Some(b64) = stored.strip_prefix(TEXT_PREFIX.as_bytes()) {
        scratch.clear();
        STANDARD
            .decode_vec(b64, scratch)
            .map_err(|_| CryptoError::InvalidEncoding)?;
        parse_header(scratch)?;
        Ok(&scratch[..])
    } else if stored.starts_with(b"\\x") || is_bytea_escape_envelope(stored) {
        let env = decode(stored)?;
        scratch.clear();
        scratch.extend_from_slice(&env);
        Ok(&scratch[..])
    } else {
        decode(stored)?;
        Ok(stored)
    }
}

/// Whether `stored` starts like one of the forms [`decode`] accepts. A cheap
/// pre-check; it does not validate the payload.
pub fn looks_like_envelope(stored: &[u8]) -> bool {
    stored.starts_with(TEXT_PREFIX.as_bytes())
        || stored.starts_with(b"\\x")
        || stored.first().is_some_and(|&b| is_reserved_format_byte(b))
}

fn decode_lower_hex(hex: &[u8]) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bytea` escape output as PostgreSQL writes it.
    fn escape(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                0x20..=0x7e => out.push(b),
                _ => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            }
        }
        out
    }

    #[test]
    fn bytea_escape_output_decodes() {
        let bytes: Vec<u8> = (0..=255u8).rev().chain([0x11, b'\\', b'x', 0]).collect();
        assert_eq!(
            decode_bytea_escape(&escape(&bytes)).as_deref(),
            Some(&bytes[..])
        );
        assert_eq!(decode_bytea_escape(b"\\9"), None);
        assert_eq!(decode_bytea_escape(b"\\"), None);
        let mut env = vec![0x11];
        env.extend_from_slice(&[0u8; 40]);
        // Not a valid envelope, but the escape form reaches the header
        // check exactly as the hex form does.
        let hex = format!(
            "\\x{}",
            env.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        assert_eq!(
            decode(&escape(&env)).map(|_| ()).map_err(|e| e.to_string()),
            decode(hex.as_bytes())
                .map(|_| ())
                .map_err(|e| e.to_string())
        );
        assert!(is_bytea_escape_envelope(&escape(&env)));
        assert!(!is_bytea_escape_envelope(b"\\000"));
    }

    fn sample() -> Vec<u8> {
        let mut e = vec![FORMAT_V1_RANDOMIZED, 0, 0, 0, 7];
        e.extend(std::iter::repeat_n(0xab, OVERHEAD - HEADER_LEN + 3));
        e
    }

    #[test]
    fn header_round_trip() {
        let h = EnvelopeHeader {
            mode: EncryptionMode::Deterministic,
            key_version: 0x0102_0304,
        };
        let mut e = h.to_bytes().to_vec();
        e.resize(OVERHEAD, 0);
        assert_eq!(parse_header(&e).unwrap(), h);
    }

    #[test]
    fn all_three_forms_decode_to_the_same_bytes() {
        let e = sample();
        assert_eq!(decode(&e).unwrap().as_ref(), &e[..]);
        assert!(matches!(decode(&e).unwrap(), Cow::Borrowed(_)));
        assert_eq!(decode(encode_text(&e).as_bytes()).unwrap().as_ref(), &e[..]);
        assert_eq!(
            decode(encode_bytea_hex(&e).as_bytes()).unwrap().as_ref(),
            &e[..]
        );
    }

    #[test]
    fn rejects_other_values_with_typed_errors() {
        assert_eq!(decode(b"hello"), Err(CryptoError::NotAnEnvelope));
        assert_eq!(decode(b""), Err(CryptoError::NotAnEnvelope));
        assert_eq!(decode(b"pgv2:AAAA"), Err(CryptoError::NotAnEnvelope));
        assert_eq!(
            decode(b"pgv1:not base64!"),
            Err(CryptoError::InvalidEncoding)
        );
        assert_eq!(decode(b"\\xAB"), Err(CryptoError::InvalidEncoding));
        assert_eq!(decode(b"\\xabc"), Err(CryptoError::InvalidEncoding));
        assert_eq!(
            decode(&[0x13; 40]),
            Err(CryptoError::UnsupportedVersion(0x13))
        );
        assert_eq!(
            decode(&[FORMAT_V1_RANDOMIZED; 10]),
            Err(CryptoError::Truncated {
                len: 10,
                min: OVERHEAD
            })
        );
        // Unpadded or non-canonical base64 is refused.
        let t = encode_text(&sample()[..34]);
        assert!(t.ends_with("=="));
        assert_eq!(
            decode(t.trim_end_matches('=').as_bytes()),
            Err(CryptoError::InvalidEncoding)
        );
    }

    #[test]
    fn text_form_is_recognisable() {
        let t = encode_text(&sample());
        assert!(t.starts_with("pgv1:EQAAAA"));
        assert!(looks_like_envelope(t.as_bytes()));
        assert!(!looks_like_envelope(b"plain"));
    }
}

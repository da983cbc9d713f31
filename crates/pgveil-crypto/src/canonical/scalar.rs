//! text, integers, bool, uuid and bytea.

use super::{pg_trim, CanonicalError, LogicalType};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// UTF-8 without NUL: what a PostgreSQL `text` value can hold.
pub(super) fn check_text(ty: LogicalType, input: &[u8]) -> Result<&str, CanonicalError> {
    let s = std::str::from_utf8(input).map_err(|_| CanonicalError::InvalidText(ty))?;
    if input.contains(&0) {
        return Err(CanonicalError::InvalidText(ty));
    }
    Ok(s)
}

/// `pg_strtoint16/32/64`: whitespace, optional sign, decimal digits.
pub(super) fn parse_int(
    ty: LogicalType,
    s: &str,
    min: i64,
    max: i64,
) -> Result<i64, CanonicalError> {
    let t = pg_trim(s);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        if digits.starts_with("0x")
            || digits.starts_with("0o")
            || digits.starts_with("0b")
            || digits.contains('_')
        {
            return Err(CanonicalError::Unsupported {
                ty,
                reason: "non-decimal integer literals and digit separators",
            });
        }
        return Err(CanonicalError::InvalidSyntax(ty));
    }
    // Accumulate the magnitude; any leading zeros are fine, overflow is range.
    let mut magnitude: u128 = 0;
    for b in digits.bytes() {
        magnitude = magnitude * 10 + u128::from(b - b'0');
        if magnitude > u128::from(u64::MAX) {
            return Err(CanonicalError::OutOfRange(ty));
        }
    }
    let value = if neg {
        -(magnitude as i128)
    } else {
        magnitude as i128
    };
    if value < i128::from(min) || value > i128::from(max) {
        return Err(CanonicalError::OutOfRange(ty));
    }
    Ok(i64::try_from(value).expect("checked against the type's range"))
}

pub(super) fn int_from_text(
    ty: LogicalType,
    s: &str,
    min: i64,
    max: i64,
) -> Result<String, CanonicalError> {
    Ok(parse_int(ty, s, min, max)?.to_string())
}

/// `parse_bool_with_len`: case-insensitive words and their unique prefixes.
pub(super) fn parse_bool(s: &str) -> Result<bool, CanonicalError> {
    let t = pg_trim(s).to_ascii_lowercase();
    let is_prefix_of =
        |word: &str, min_len: usize| t.len() >= min_len && word.starts_with(t.as_str());
    let value = match t.as_bytes().first() {
        Some(b't') if is_prefix_of("true", 1) => Some(true),
        Some(b'y') if is_prefix_of("yes", 1) => Some(true),
        Some(b'f') if is_prefix_of("false", 1) => Some(false),
        Some(b'n') if is_prefix_of("no", 1) => Some(false),
        Some(b'o') if is_prefix_of("on", 2) => Some(true),
        Some(b'o') if is_prefix_of("off", 2) => Some(false),
        Some(b'1') if t.len() == 1 => Some(true),
        Some(b'0') if t.len() == 1 => Some(false),
        _ => None,
    };
    value.ok_or(CanonicalError::InvalidSyntax(LogicalType::Bool))
}

pub(super) fn bool_from_text(s: &str) -> Result<String, CanonicalError> {
    Ok(String::from(if parse_bool(s)? { "t" } else { "f" }))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `string_to_uuid`: optional braces, hyphens only after groups of 4 digits.
pub(super) fn parse_uuid(s: &str) -> Result<[u8; 16], CanonicalError> {
    let err = CanonicalError::InvalidSyntax(LogicalType::Uuid);
    let mut src = s.as_bytes();
    let braces = src.first() == Some(&b'{');
    if braces {
        src = &src[1..];
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = src.get(..2).ok_or(err.clone())?;
        *byte = (hex_value(pair[0]).ok_or(err.clone())? << 4)
            | hex_value(pair[1]).ok_or(err.clone())?;
        src = &src[2..];
        if i % 2 == 1 && i < 15 && src.first() == Some(&b'-') {
            src = &src[1..];
        }
    }
    if braces {
        src = src.strip_prefix(b"}").ok_or(err.clone())?;
    }
    if !src.is_empty() {
        return Err(err);
    }
    Ok(out)
}

pub(super) fn uuid_to_text(bytes: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

pub(super) fn uuid_from_text(s: &str) -> Result<String, CanonicalError> {
    Ok(uuid_to_text(&parse_uuid(s)?))
}

/// Canonical bytea text: `\x` + lowercase hex.
pub(super) fn bytea_to_hex(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + raw.len() * 2);
    out.extend_from_slice(b"\\x");
    for &b in raw {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    out
}

/// `byteain`: hex format or traditional escape format, to raw bytes.
pub(super) fn bytea_from_text_raw(input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let err = CanonicalError::InvalidSyntax(LogicalType::Bytea);
    if let Some(hex) = input.strip_prefix(b"\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut i = 0;
        while i < hex.len() {
            if matches!(hex[i], b' ' | b'\n' | b'\t' | b'\r') {
                i += 1;
                continue;
            }
            let hi = hex_value(hex[i]).ok_or(err.clone())?;
            let lo = hex
                .get(i + 1)
                .and_then(|&c| hex_value(c))
                .ok_or(err.clone())?;
            out.push((hi << 4) | lo);
            i += 2;
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
        } else if input.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            match input.get(i + 1..i + 4) {
                Some(&[a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                    out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                    i += 4;
                }
                _ => return Err(err),
            }
        }
    }
    Ok(out)
}

pub(super) fn bytea_from_text(input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    Ok(bytea_to_hex(&bytea_from_text_raw(input)?))
}

//! One-dimensional array parameters (`col = ANY($1)`): the client's array,
//! in text or binary format, is split into elements; each element is
//! encrypted (under every live deterministic key version, so rows not yet
//! re-encrypted after a rotation still match) and the result is sent as a
//! binary array of the storage type.

use pgveil_crypto::canonical::LogicalType;

/// Array type OIDs of the logical types.
pub fn array_oid(t: LogicalType) -> u32 {
    match t {
        LogicalType::Text => 1009,
        LogicalType::Varchar => 1015,
        LogicalType::Int2 => 1005,
        LogicalType::Int4 => 1007,
        LogicalType::Int8 => 1016,
        LogicalType::Numeric => 1231,
        LogicalType::Float4 => 1021,
        LogicalType::Float8 => 1022,
        LogicalType::Bool => 1000,
        LogicalType::Date => 1182,
        LogicalType::Time => 1183,
        LogicalType::Timestamp => 1115,
        LogicalType::Timestamptz => 1185,
        LogicalType::Uuid => 2951,
        LogicalType::Json => 199,
        LogicalType::Jsonb => 3807,
        LogicalType::Bytea => 1001,
    }
}

/// The array type of a storage type (`bytea[]` or `text[]`).
pub fn storage_array_oid(storage: u32) -> u32 {
    if storage == 17 {
        1001
    } else {
        1009
    }
}

/// The element type of a logical array type OID.
pub fn element_of(array: u32) -> Option<LogicalType> {
    LogicalType::ALL
        .into_iter()
        .find(|t| array_oid(*t) == array)
}

/// Array elements (`None` = NULL).
pub type Elements = Vec<Option<Vec<u8>>>;

/// The most elements pgveil accepts in one array parameter.
pub const MAX_ELEMENTS: usize = 100_000;

/// White space around array elements, as `array_in` reads it (vertical
/// tab included).
fn is_array_space(c: &u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Elements of a one-dimensional array in text format (`{a,"b c",NULL}`).
pub fn parse_text(v: &[u8]) -> Result<Elements, &'static str> {
    // White space around the braces is allowed (array_in skips it).
    let start = v.iter().position(|c| !is_array_space(c)).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| !is_array_space(c))
        .map_or(start, |e| e + 1);
    let inner = v[start..end]
        .strip_prefix(b"{")
        .and_then(|r| r.strip_suffix(b"}"))
        .ok_or("an array literal must be {…} (one dimension, no bounds)")?;
    let mut out = Vec::new();
    if inner.iter().all(is_array_space) {
        return Ok(out);
    }
    let mut i = 0;
    loop {
        while inner.get(i).is_some_and(is_array_space) {
            i += 1;
        }
        let mut el = Vec::new();
        let mut quoted = false;
        if inner.get(i) == Some(&b'"') {
            quoted = true;
            i += 1;
            loop {
                match inner.get(i) {
                    None => return Err("unterminated quoted array element"),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        el.push(*inner.get(i + 1).ok_or("dangling backslash")?);
                        i += 2;
                    }
                    Some(&c) => {
                        el.push(c);
                        i += 1;
                    }
                }
            }
            while inner.get(i).is_some_and(is_array_space) {
                i += 1;
            }
        } else {
            // Trailing unescaped white space is not part of the element.
            let mut keep = 0;
            while let Some(&c) = inner.get(i) {
                match c {
                    b',' => break,
                    b'{' | b'}' | b'"' => return Err("a nested or malformed array"),
                    b'\\' => {
                        el.push(*inner.get(i + 1).ok_or("dangling backslash")?);
                        i += 2;
                        quoted = true; // an escaped element is never NULL
                        keep = el.len();
                    }
                    c => {
                        el.push(c);
                        i += 1;
                        if !is_array_space(&c) {
                            keep = el.len();
                        }
                    }
                }
            }
            el.truncate(keep);
            if el.is_empty() && !quoted {
                return Err("an empty array element");
            }
        }
        if !quoted && el.eq_ignore_ascii_case(b"null") {
            out.push(None);
        } else {
            out.push(Some(el));
        }
        if out.len() > MAX_ELEMENTS {
            return Err("too many array elements");
        }
        match inner.get(i) {
            None => return Ok(out),
            Some(b',') => i += 1,
            Some(_) => return Err("malformed array literal"),
        }
    }
}

/// Elements of a binary array (one dimension, or empty) and the element
/// type OID it declares.
pub fn parse_binary(v: &[u8]) -> Result<(u32, Elements), &'static str> {
    let bad = "malformed binary array";
    let int = |at: usize| -> Result<i32, &'static str> {
        v.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(bad)
    };
    let ndim = int(0)?;
    if !matches!(int(4)?, 0 | 1) {
        return Err("invalid array flags");
    }
    let elem = int(8)? as u32;
    if ndim == 0 {
        // Nothing may follow the header (the server rejects it).
        return if v.len() == 12 {
            Ok((elem, Vec::new()))
        } else {
            Err(bad)
        };
    }
    if ndim != 1 {
        return Err("only one-dimensional arrays are supported");
    }
    let n = int(12)?;
    if n < 0 || n as usize > MAX_ELEMENTS {
        return Err("too many array elements");
    }
    let mut pos = 20;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = int(pos)?;
        pos += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let e = v.get(pos..pos + len as usize).ok_or(bad)?;
        pos += len as usize;
        out.push(Some(e.to_vec()));
    }
    if pos != v.len() {
        return Err(bad);
    }
    Ok((elem, out))
}

/// A binary one-dimensional array of `elem_oid` with these elements.
pub fn encode_binary(elem_oid: u32, elements: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        20 + elements
            .iter()
            .flatten()
            .map(|e| e.len() + 4)
            .sum::<usize>(),
    );
    if elements.is_empty() {
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&elem_oid.to_be_bytes());
        return out;
    }
    let has_null = elements.iter().any(Option::is_none);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&elem_oid.to_be_bytes());
    out.extend_from_slice(&(elements.len() as i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    for e in elements {
        match e {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_arrays() {
        // Vertical tab is white space to array_in, like the others.
        assert_eq!(
            parse_text(b"{\x0ba\x0b, b\x0c}").unwrap(),
            vec![Some(b"a".to_vec()), Some(b"b".to_vec())]
        );
        // Binary flags other than 0/1 are refused, as array_recv does.
        let mut bin = encode_binary(25, &[Some(b"x".to_vec())]);
        bin[7] = 2;
        assert_eq!(parse_binary(&bin), Err("invalid array flags"));
        let v = parse_text(br#"{a, "b,c" ,NULL,"NULL","x\"y",d\,e}"#).unwrap();
        assert_eq!(
            v,
            vec![
                Some(b"a".to_vec()),
                Some(b"b,c".to_vec()),
                None,
                Some(b"NULL".to_vec()),
                Some(b"x\"y".to_vec()),
                Some(b"d,e".to_vec()),
            ]
        );
        assert_eq!(parse_text(b"{}").unwrap(), Vec::<Option<Vec<u8>>>::new());
        assert!(parse_text(b"{{a}}").is_err());
        assert!(parse_text(b"{a,,b}").is_err());
        assert!(parse_text(b"{a,}").is_err());
        assert_eq!(
            parse_text(b"{N\\ULL, a\\ }").unwrap(),
            vec![Some(b"NULL".to_vec()), Some(b"a ".to_vec())]
        );
        assert!(parse_text(b"[1:2]={a,b}").is_err());
        // White space around the braces, as array_in allows.
        assert_eq!(parse_text(b"  {a}\n ").unwrap(), vec![Some(b"a".to_vec())]);
        assert_eq!(parse_text(b" {} ").unwrap(), Vec::<Option<Vec<u8>>>::new());
        assert!(parse_text(b" ").is_err());
        // Bytes after an empty binary array's header are refused.
        let mut empty = encode_binary(25, &[]);
        assert!(parse_binary(&empty).is_ok());
        empty.push(0);
        assert!(parse_binary(&empty).is_err());
    }

    #[test]
    fn binary_round_trip() {
        let els = vec![Some(b"ab".to_vec()), None, Some(Vec::new())];
        let b = encode_binary(25, &els);
        assert_eq!(parse_binary(&b).unwrap(), (25, els));
        assert_eq!(parse_binary(&encode_binary(17, &[])).unwrap(), (17, vec![]));
        assert!(parse_binary(&b[..b.len() - 1]).is_err());
    }
}

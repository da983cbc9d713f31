//! json validation (`json_in` keeps the text verbatim) and jsonb
//! normalization (`jsonb_in` + `jsonb_out`).
//!
//! The grammar is PostgreSQL's JSON lexer: RFC 8259 values, whitespace
//! `' ' \t \n \r`, `\uXXXX` escapes with surrogate pairs checked, and any
//! alphanumeric run glued to a number or literal is an error. jsonb output
//! sorts object keys by (length, bytes), keeps the last of duplicate keys,
//! prints numbers as `numeric_out`, separates with `", "` and `": "`, and
//! escapes strings like `escape_json`.

use super::{numeric, CanonicalError, LogicalType};

/// Deepest JSON nesting accepted. PostgreSQL's limit depends on
/// `max_stack_depth`; deeper documents are refused here rather than risk the
/// proxy's stack.
pub const MAX_JSON_DEPTH: usize = 1000;

enum Value {
    Null,
    Bool(bool),
    /// Canonical numeric text (jsonb) or nothing (json).
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    ty: LogicalType,
}

fn is_json_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

impl Parser<'_> {
    fn err(&self) -> CanonicalError {
        CanonicalError::InvalidSyntax(self.ty)
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                if depth >= MAX_JSON_DEPTH {
                    return Err(CanonicalError::TooDeep(MAX_JSON_DEPTH));
                }
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Value::Object(members));
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(self.err());
                    }
                    let key = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(self.err());
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    members.push((key, v));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Object(members));
                        }
                        _ => return Err(self.err()),
                    }
                }
            }
            Some(b'[') => {
                if depth >= MAX_JSON_DEPTH {
                    return Err(CanonicalError::TooDeep(MAX_JSON_DEPTH));
                }
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.err()),
                    }
                }
            }
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(c) if is_json_alnum(*c) => {
                let start = self.i;
                while self.b.get(self.i).copied().is_some_and(is_json_alnum) {
                    self.i += 1;
                }
                match &self.b[start..self.i] {
                    b"true" => Ok(Value::Bool(true)),
                    b"false" => Ok(Value::Bool(false)),
                    b"null" => Ok(Value::Null),
                    _ => Err(self.err()),
                }
            }
            _ => Err(self.err()),
        }
    }

    fn number(&mut self) -> Result<Value, CanonicalError> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.b.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - s
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err()),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(self.err());
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err());
            }
        }
        if self.b.get(self.i).copied().is_some_and(is_json_alnum) {
            return Err(self.err());
        }
        if self.ty == LogicalType::Jsonb {
            let text = std::str::from_utf8(&self.b[start..self.i]).expect("ASCII");
            let canonical = numeric::from_text(text).map_err(|e| match e {
                CanonicalError::OutOfRange(_) => CanonicalError::OutOfRange(self.ty),
                _ => self.err(),
            })?;
            Ok(Value::Number(canonical))
        } else {
            Ok(Value::Number(String::new()))
        }
    }

    fn hex4(&mut self) -> Result<u32, CanonicalError> {
        let h = self.b.get(self.i..self.i + 4).ok_or_else(|| self.err())?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + char::from(c).to_digit(16).ok_or_else(|| self.err())?;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, CanonicalError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        let mut high_surrogate: Option<u32> = None;
        loop {
            let c = *self.b.get(self.i).ok_or_else(|| self.err())?;
            if c == b'\\' && self.b.get(self.i + 1) == Some(&b'u') {
                self.i += 2;
                let unit = self.hex4()?;
                let code = match (unit, high_surrogate.take()) {
                    (0xD800..=0xDBFF, None) => {
                        high_surrogate = Some(unit);
                        continue;
                    }
                    (0xDC00..=0xDFFF, Some(hi)) => {
                        0x10000 + ((hi - 0xD800) << 10) + (unit - 0xDC00)
                    }
                    (0xD800..=0xDFFF, _) | (_, Some(_)) => return Err(self.err()),
                    (other, None) => other,
                };
                if code == 0 && self.ty == LogicalType::Jsonb {
                    return Err(CanonicalError::Unsupported {
                        ty: self.ty,
                        reason: "\\u0000 in jsonb",
                    });
                }
                out.push(char::from_u32(code).ok_or_else(|| self.err())?);
                continue;
            }
            if high_surrogate.is_some() {
                return Err(self.err());
            }
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    let e = *self.b.get(self.i + 1).ok_or_else(|| self.err())?;
                    out.push(match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        _ => return Err(self.err()),
                    });
                    self.i += 2;
                }
                0..=0x1f => return Err(self.err()),
                _ => {
                    // Copy one UTF-8 sequence (the input is valid UTF-8).
                    let len = match c {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    let s = std::str::from_utf8(&self.b[self.i..self.i + len])
                        .map_err(|_| self.err())?;
                    out.push_str(s);
                    self.i += len;
                }
            }
        }
    }
}

fn parse(ty: LogicalType, s: &str) -> Result<Value, CanonicalError> {
    let mut p = Parser {
        b: s.as_bytes(),
        i: 0,
        ty,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err());
    }
    Ok(v)
}

/// Checks that `s` is a JSON text PostgreSQL's `json` type accepts.
pub(super) fn validate(s: &str) -> Result<(), CanonicalError> {
    parse(LogicalType::Json, s).map(drop)
}

fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write(out: &mut String, v: Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n),
        Value::String(s) => escape_into(out, &s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(out, item);
            }
            out.push(']');
        }
        Value::Object(mut members) => {
            // Stable sort, then keep the last of each run of equal keys.
            members.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            let mut unique: Vec<(String, Value)> = Vec::with_capacity(members.len());
            for m in members {
                match unique.last_mut() {
                    Some(last) if last.0 == m.0 => *last = m,
                    _ => unique.push(m),
                }
            }
            out.push('{');
            for (i, (k, val)) in unique.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                escape_into(out, &k);
                out.push_str(": ");
                write(out, val);
            }
            out.push('}');
        }
    }
}

/// `jsonb_in` then `jsonb_out`.
pub(super) fn jsonb_canonical(s: &str) -> Result<String, CanonicalError> {
    let v = parse(LogicalType::Jsonb, s)?;
    let mut out = String::with_capacity(s.len());
    write(&mut out, v);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonb_matches_postgres() {
        for (input, want) in [
            (r#"{"b":1,"a":2}"#, r#"{"a": 2, "b": 1}"#),
            (r#"{"aa":1,"b":2}"#, r#"{"b": 2, "aa": 1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a": 2}"#),
            (
                r#" [1.0, 1e2, -0, 1E-2 ,true,null] "#,
                "[1.0, 100, 0, 0.01, true, null]",
            ),
            (r#""\u00e9\ud83d\ude00\/""#, "\"é😀/\""),
            (r#""a\u0001\t""#, r#""a\u0001\t""#),
            ("{}", "{}"),
            ("[]", "[]"),
            (r#"{"x":{"y":[{}]}}"#, r#"{"x": {"y": [{}]}}"#),
        ] {
            assert_eq!(jsonb_canonical(input).unwrap(), want, "{input}");
        }
        for bad in [
            "",
            "01",
            "1x",
            "[1,]",
            "{\"a\" 1}",
            "tru",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\u{1}\"",
            "[1] x",
            "\"\\u0000\"",
            "NaN",
        ] {
            assert!(jsonb_canonical(bad).is_err(), "{bad:?}");
        }
        assert!(validate("\"\\u0000\"").is_ok());
        assert!(validate("1e400").is_ok());
        let deep = "[".repeat(MAX_JSON_DEPTH + 1) + &"]".repeat(MAX_JSON_DEPTH + 1);
        assert_eq!(
            validate(&deep).unwrap_err(),
            CanonicalError::TooDeep(MAX_JSON_DEPTH)
        );
        let ok = "[".repeat(MAX_JSON_DEPTH) + &"]".repeat(MAX_JSON_DEPTH);
        assert!(validate(&ok).is_ok());
    }
}

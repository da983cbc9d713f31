//! float4/float8: input as `float4in`/`float8in`, output as PostgreSQL 12+'s
//! shortest-exact (Ryu) form used when `extra_float_digits > 0`.
//!
//! Digits come from Rust's shortest round-trip formatter, which yields the
//! same digit string as Ryu; only the layout is PostgreSQL's: fixed notation
//! for decimal exponents in `[-4, 15)` (float8) or `[-4, 6)` (float4),
//! otherwise `d.ddde+XX` with at least two exponent digits.

use super::{pg_trim, CanonicalError, LogicalType};

enum Parsed<'a> {
    Nan,
    Infinity { negative: bool },
    Decimal { text: &'a str, nonzero: bool },
}

fn parse(ty: LogicalType, s: &str) -> Result<Parsed<'_>, CanonicalError> {
    let t = pg_trim(s);
    let (negative, unsigned) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if unsigned.eq_ignore_ascii_case("nan") {
        return Ok(Parsed::Nan);
    }
    if unsigned.eq_ignore_ascii_case("infinity") || unsigned.eq_ignore_ascii_case("inf") {
        return Ok(Parsed::Infinity { negative });
    }
    let b = unsigned.as_bytes();
    let mut i = 0;
    let mut digits = 0;
    let mut nonzero = false;
    while i < b.len() && b[i].is_ascii_digit() {
        nonzero |= b[i] != b'0';
        digits += 1;
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            nonzero |= b[i] != b'0';
            digits += 1;
            i += 1;
        }
    }
    if digits == 0 {
        if unsigned.len() > 1 && (unsigned.starts_with("0x") || unsigned.starts_with("0X")) {
            return Err(CanonicalError::Unsupported {
                ty,
                reason: "hexadecimal floating-point literals",
            });
        }
        return Err(CanonicalError::InvalidSyntax(ty));
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(CanonicalError::InvalidSyntax(ty));
        }
    }
    if i != b.len() {
        return Err(CanonicalError::InvalidSyntax(ty));
    }
    Ok(Parsed::Decimal { text: t, nonzero })
}

pub(super) fn parse_float8(s: &str) -> Result<f64, CanonicalError> {
    let ty = LogicalType::Float8;
    match parse(ty, s)? {
        Parsed::Nan => Ok(f64::NAN),
        Parsed::Infinity { negative } => Ok(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        Parsed::Decimal { text, nonzero } => {
            let v: f64 = text
                .parse()
                .map_err(|_| CanonicalError::InvalidSyntax(ty))?;
            if v.is_infinite() || (v == 0.0 && nonzero) {
                return Err(CanonicalError::OutOfRange(ty));
            }
            Ok(v)
        }
    }
}

pub(super) fn parse_float4(s: &str) -> Result<f32, CanonicalError> {
    let ty = LogicalType::Float4;
    match parse(ty, s)? {
        Parsed::Nan => Ok(f32::NAN),
        Parsed::Infinity { negative } => Ok(if negative {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        }),
        Parsed::Decimal { text, nonzero } => {
            let v: f32 = text
                .parse()
                .map_err(|_| CanonicalError::InvalidSyntax(ty))?;
            if v.is_infinite() || (v == 0.0 && nonzero) {
                return Err(CanonicalError::OutOfRange(ty));
            }
            Ok(v)
        }
    }
}

/// Lays out shortest digits (`sci` is Rust's `{:e}` output of a positive
/// finite value) the way PostgreSQL's `d2s.c`/`f2s.c` do.
fn layout(negative: bool, sci: &str, fixed_below: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').expect("{:e} output has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let n = i32::try_from(digits.len()).expect("at most 17 digits");
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if exp + 1 >= n {
            out.push_str(&digits);
            for _ in 0..(exp + 1 - n) {
                out.push('0');
            }
        } else {
            let split = usize::try_from(exp + 1).expect("non-negative");
            out.push_str(&digits[..split]);
            out.push('.');
            out.push_str(&digits[split..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
    }
    out
}

pub(super) fn format_float8(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if v == 0.0 {
        if v.is_sign_negative() { "-0" } else { "0" }.into()
    } else {
        layout(v < 0.0, &format!("{:e}", v.abs()), 15)
    }
}

pub(super) fn format_float4(v: f32) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if v == 0.0 {
        if v.is_sign_negative() { "-0" } else { "0" }.into()
    } else {
        layout(v < 0.0, &format!("{:e}", v.abs()), 6)
    }
}

pub(super) fn float8_from_text(s: &str) -> Result<String, CanonicalError> {
    Ok(format_float8(parse_float8(s)?))
}

pub(super) fn float4_from_text(s: &str) -> Result<String, CanonicalError> {
    Ok(format_float4(parse_float4(s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_output() {
        for (v, want) in [
            (0.1, "0.1"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (1e16, "1e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5, "-2.5"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (100.0, "100"),
            (1.234_567_890_123_456_7, "1.2345678901234567"),
        ] {
            assert_eq!(format_float8(v), want, "{v}");
        }
        for (v, want) in [
            (0.1f32, "0.1"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1.0e-5, "1e-05"),
        ] {
            assert_eq!(format_float4(v), want, "{v}");
        }
    }
}

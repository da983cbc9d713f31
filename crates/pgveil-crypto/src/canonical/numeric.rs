//! numeric: `numeric_in`/`numeric_out` and `numeric_recv`/`numeric_send`.
//!
//! Canonical text is `numeric_out`: no exponent, no leading zeros, exactly
//! `dscale` fractional digits, no sign on zero. The display scale of text
//! input is its number of fractional digits minus its exponent (`1.50` → 2,
//! `1.5e3` → 0, `100e-5` → 5), as in PostgreSQL.

use super::{pg_trim, CanonicalError, LogicalType};

const TY: LogicalType = LogicalType::Numeric;
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;
/// `NUMERIC_DSCALE_MAX`.
const DSCALE_MAX: i64 = 0x3FFF;
/// Digits before the decimal point allowed by `NUMERIC_WEIGHT_MAX` (32767).
const MAX_INT_DIGITS: i64 = 4 * 32768;
/// `numeric_recv` refuses more base-10000 digits than this
/// (`NUMERIC_MAX_PRECISION + NUMERIC_MAX_RESULT_SCALE`).
const MAX_RECV_DIGITS: usize = 3000;

enum Numeric {
    NaN,
    Infinity {
        negative: bool,
    },
    Finite {
        negative: bool,
        /// ASCII digits before the point, without leading zeros (empty for 0).
        int: Vec<u8>,
        /// Exactly `dscale` ASCII digits after the point.
        frac: Vec<u8>,
    },
}

fn parse(s: &str) -> Result<Numeric, CanonicalError> {
    let syntax = CanonicalError::InvalidSyntax(TY);
    let t = pg_trim(s);
    if t.eq_ignore_ascii_case("nan") {
        return Ok(Numeric::NaN);
    }
    let (negative, unsigned) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if unsigned.eq_ignore_ascii_case("infinity") || unsigned.eq_ignore_ascii_case("inf") {
        return Ok(Numeric::Infinity { negative });
    }
    let b = unsigned.as_bytes();
    let mut digits: Vec<u8> = Vec::with_capacity(b.len());
    let mut point: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => digits.push(c),
            b'.' if point.is_none() => point = Some(digits.len()),
            _ => break,
        }
        i += 1;
    }
    if digits.is_empty() {
        if unsigned.starts_with("0x") || unsigned.starts_with("0o") || unsigned.starts_with("0b") {
            return Err(CanonicalError::Unsupported {
                ty: TY,
                reason: "non-decimal numeric literals",
            });
        }
        return Err(syntax);
    }
    let mut exponent: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let exp_negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            // Saturate: anything this large overflows numeric anyway.
            exponent = (exponent * 10 + i64::from(b[i] - b'0')).min(1 << 40);
            i += 1;
        }
        if i == start {
            return Err(syntax);
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    if i != b.len() {
        if b[i] == b'_' {
            return Err(CanonicalError::Unsupported {
                ty: TY,
                reason: "digit separators",
            });
        }
        return Err(syntax);
    }
    let len = i64::try_from(digits.len()).map_err(|_| CanonicalError::OutOfRange(TY))?;
    let point =
        i64::try_from(point.unwrap_or(digits.len())).map_err(|_| CanonicalError::OutOfRange(TY))?;
    let int_len = point + exponent;
    let dscale = (len - int_len).max(0);
    if dscale > DSCALE_MAX {
        return Err(CanonicalError::OutOfRange(TY));
    }
    let in_digits = usize::try_from(int_len.clamp(0, len)).expect("clamped to len");
    let first_nonzero = digits[..in_digits].iter().position(|&d| d != b'0');
    let mut int = Vec::new();
    if let Some(first) = first_nonzero {
        let significant = int_len - i64::try_from(first).expect("small");
        if significant > MAX_INT_DIGITS {
            return Err(CanonicalError::OutOfRange(TY));
        }
        int.extend_from_slice(&digits[first..in_digits]);
        let padding = usize::try_from(int_len - len).unwrap_or(0);
        int.resize(int.len() + padding, b'0');
    }
    let mut frac = Vec::with_capacity(usize::try_from(dscale).expect("bounded"));
    if dscale > 0 {
        if int_len < 0 {
            frac.resize(usize::try_from(-int_len).expect("positive"), b'0');
        }
        frac.extend_from_slice(&digits[in_digits..]);
    }
    let negative = negative && (!int.is_empty() || frac.iter().any(|&d| d != b'0'));
    Ok(Numeric::Finite {
        negative,
        int,
        frac,
    })
}

fn to_text(n: &Numeric) -> String {
    match n {
        Numeric::NaN => "NaN".into(),
        Numeric::Infinity { negative: false } => "Infinity".into(),
        Numeric::Infinity { negative: true } => "-Infinity".into(),
        Numeric::Finite {
            negative,
            int,
            frac,
        } => {
            let mut s = String::with_capacity(int.len() + frac.len() + 3);
            if *negative {
                s.push('-');
            }
            if int.is_empty() {
                s.push('0');
            } else {
                s.push_str(std::str::from_utf8(int).expect("ASCII digits"));
            }
            if !frac.is_empty() {
                s.push('.');
                s.push_str(std::str::from_utf8(frac).expect("ASCII digits"));
            }
            s
        }
    }
}

pub(super) fn from_text(s: &str) -> Result<String, CanonicalError> {
    Ok(to_text(&parse(s)?))
}

fn group_value(chunk: &[u8]) -> i16 {
    chunk
        .iter()
        .fold(0i16, |acc, &d| acc * 10 + i16::from(d - b'0'))
}

pub(super) fn to_binary(s: &str) -> Result<Vec<u8>, CanonicalError> {
    let (weight_sign, dscale, groups): ((i16, u16), u16, Vec<i16>) = match parse(s)? {
        Numeric::NaN => ((0, SIGN_NAN), 0, Vec::new()),
        Numeric::Infinity { negative } => (
            (0, if negative { SIGN_NINF } else { SIGN_PINF }),
            0,
            Vec::new(),
        ),
        Numeric::Finite {
            negative,
            int,
            frac,
        } => {
            let dscale = u16::try_from(frac.len()).expect("dscale checked");
            let mut padded = vec![b'0'; (4 - int.len() % 4) % 4];
            padded.extend_from_slice(&int);
            let int_groups = padded.len() / 4;
            padded.extend_from_slice(&frac);
            padded.resize(padded.len().div_ceil(4) * 4, b'0');
            let mut groups: Vec<i16> = padded.chunks_exact(4).map(group_value).collect();
            let mut weight = i64::try_from(int_groups).expect("small") - 1;
            let leading = groups.iter().take_while(|&&g| g == 0).count();
            groups.drain(..leading);
            weight -= i64::try_from(leading).expect("small");
            while groups.last() == Some(&0) {
                groups.pop();
            }
            if groups.is_empty() {
                ((0, SIGN_POS), dscale, groups)
            } else {
                let weight = i16::try_from(weight).map_err(|_| CanonicalError::OutOfRange(TY))?;
                (
                    (weight, if negative { SIGN_NEG } else { SIGN_POS }),
                    dscale,
                    groups,
                )
            }
        }
    };
    let (weight, sign) = weight_sign;
    let ndigits = i16::try_from(groups.len()).map_err(|_| CanonicalError::OutOfRange(TY))?;
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

pub(super) fn from_binary(input: &[u8]) -> Result<String, CanonicalError> {
    let bad = CanonicalError::InvalidBinary(TY);
    let word = |i: usize| -> Result<u16, CanonicalError> {
        input
            .get(i..i + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or(bad.clone())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = word(6)?;
    if ndigits > MAX_RECV_DIGITS || input.len() != 8 + 2 * ndigits || i64::from(dscale) > DSCALE_MAX
    {
        return Err(bad);
    }
    let mut groups = Vec::with_capacity(ndigits);
    for k in 0..ndigits {
        let g = word(8 + 2 * k)? as i16;
        if !(0..=9999).contains(&g) {
            return Err(bad);
        }
        groups.push(g);
    }
    let n = match sign {
        SIGN_NAN => Numeric::NaN,
        SIGN_PINF => Numeric::Infinity { negative: false },
        SIGN_NINF => Numeric::Infinity { negative: true },
        SIGN_POS | SIGN_NEG => {
            // Group k has position weight - k (a power of 10000).
            let group_at = |position: i64| -> i16 {
                usize::try_from(weight - position)
                    .ok()
                    .and_then(|k| groups.get(k).copied())
                    .unwrap_or(0)
            };
            let mut int = Vec::new();
            let mut p = weight;
            while p >= 0 {
                int.extend_from_slice(format!("{:04}", group_at(p)).as_bytes());
                p -= 1;
            }
            let first = int.iter().position(|&d| d != b'0').unwrap_or(int.len());
            int.drain(..first);
            // Digits beyond dscale are truncated, as numeric_recv's trunc_var does.
            let mut frac = Vec::with_capacity(usize::from(dscale) + 4);
            let mut p = -1;
            while frac.len() < usize::from(dscale) {
                frac.extend_from_slice(format!("{:04}", group_at(p)).as_bytes());
                p -= 1;
            }
            frac.truncate(usize::from(dscale));
            let nonzero = !int.is_empty() || frac.iter().any(|&d| d != b'0');
            Numeric::Finite {
                negative: sign == SIGN_NEG && nonzero,
                int,
                frac,
            }
        }
        _ => return Err(bad),
    };
    Ok(to_text(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches_numeric_out() {
        for (input, want) in [
            ("1.50", "1.50"),
            ("  -0012.340 ", "-12.340"),
            ("1.5e3", "1500"),
            ("1e-2", "0.01"),
            ("100e-5", "0.00100"),
            ("-0", "0"),
            ("-0.00", "0.00"),
            (".5", "0.5"),
            ("5.", "5"),
            ("+7", "7"),
            ("nan", "NaN"),
            ("-inf", "-Infinity"),
            ("Infinity", "Infinity"),
            ("1.23E+2", "123"),
            ("0.000", "0.000"),
        ] {
            assert_eq!(from_text(input).unwrap(), want, "{input}");
        }
        for bad in [
            "", ".", "e5", "1e", "1.2.3", "- 1", "+NaN", "1 2", "0x10", "1_000", "abc",
        ] {
            assert!(from_text(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            from_text("1e200000").unwrap_err(),
            CanonicalError::OutOfRange(TY)
        );
        assert_eq!(
            from_text("1e-16384").unwrap_err(),
            CanonicalError::OutOfRange(TY)
        );
    }

    #[test]
    fn binary_layout() {
        // 1234.5678 -> ndigits 2, weight 0, pos, dscale 4, [1234, 5678]
        assert_eq!(
            to_binary("1234.5678").unwrap(),
            [0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xd2, 0x16, 0x2e]
        );
        // -0.0001 -> ndigits 1, weight -1, neg, dscale 4, [1]
        assert_eq!(
            to_binary("-0.0001").unwrap(),
            [0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 1]
        );
        // 10000 -> ndigits 1, weight 1, [1]
        assert_eq!(to_binary("10000").unwrap(), [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(to_binary("0.00").unwrap(), [0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(to_binary("NaN").unwrap(), [0, 0, 0, 0, 0xc0, 0, 0, 0]);
        for s in [
            "1234.5678",
            "-0.0001",
            "10000",
            "0.00",
            "NaN",
            "-Infinity",
            "12345678901234567890.123",
        ] {
            assert_eq!(from_binary(&to_binary(s).unwrap()).unwrap(), s);
        }
        // Digits beyond dscale are truncated; "-0" loses its sign.
        assert_eq!(
            from_binary(&[0, 2, 0, 0, 0x40, 0, 0, 1, 0, 0, 0x13, 0x88]).unwrap(),
            "-0.5"
        );
        assert_eq!(
            from_binary(&[0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0, 1]).unwrap(),
            "0.00"
        );
        assert!(from_binary(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]).is_err()); // digit 10000
        assert!(from_binary(&[0, 0, 0, 0, 0x12, 0x34, 0, 0]).is_err()); // bad sign
        assert!(from_binary(&[0, 1, 0, 0, 0, 0, 0, 0]).is_err()); // short
    }
}

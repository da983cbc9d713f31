//! date, time, timestamp, timestamptz: ISO input, `DateStyle = ISO` output,
//! and the integer binary formats (days / µs relative to 2000-01-01).
//!
//! Calendar arithmetic is proleptic Gregorian with astronomical years
//! internally (1 BC = year 0), like PostgreSQL's `date2j`/`j2date`.

use super::{is_pg_space, pg_trim, CanonicalError, LogicalType, SessionTimeZone};

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_UNIX_DAYS: i64 = 10_957;
/// First valid date: Julian day 0 = 4714-11-24 BC, in days since 2000-01-01.
const DATE_MIN: i64 = -2_451_545;
/// One past the last valid date (5874897-12-31).
const DATE_END: i64 = 2_147_483_494 - 2_451_545;
/// `MIN_TIMESTAMP`: 4714-11-24 00:00:00 BC in µs since 2000-01-01.
const TS_MIN: i64 = -211_813_488_000_000_000;
/// `END_TIMESTAMP`: 294277-01-01 00:00:00 (exclusive).
const TS_END: i64 = 9_223_371_331_200_000_000;
/// `MAX_TZDISP_HOUR`.
const MAX_OFFSET_HOURS: i64 = 15;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day number counted from 1970-01-01 (Howard
/// Hinnant's algorithm; proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0);
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            b: s.as_bytes(),
            i: 0,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn peek_at(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn skip_ws(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(is_pg_space) {
            self.i += 1;
        }
        self.i - start
    }
    /// All consecutive ASCII digits: (value saturated at 10^12, digit count).
    fn number(&mut self) -> (i64, usize) {
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = (v * 10 + i64::from(c - b'0')).min(1_000_000_000_000);
            self.i += 1;
        }
        (v, self.i - start)
    }
    fn digits_str(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i]).expect("ASCII digits")
    }
    fn word(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i]).expect("ASCII letters")
    }
    fn at_end(&self) -> bool {
        self.i == self.b.len()
    }
}

enum Special {
    Infinity,
    NegInfinity,
}

/// `infinity`/`-infinity`, or refuses other special words (`epoch`, `now`…).
fn special(ty: LogicalType, s: &str) -> Result<Option<Special>, CanonicalError> {
    let t = pg_trim(s);
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
        return Ok(Some(Special::Infinity));
    }
    if t.eq_ignore_ascii_case("-infinity") {
        return Ok(Some(Special::NegInfinity));
    }
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphabetic()) {
        return Err(CanonicalError::Unsupported {
            ty,
            reason: "special date/time keywords other than infinity",
        });
    }
    Ok(None)
}

/// `YYYY-MM-DD` → (year as written, month, day); range checked later.
fn date_fields(ty: LogicalType, c: &mut Cursor<'_>) -> Result<(i64, i64, i64), CanonicalError> {
    let syntax = CanonicalError::InvalidSyntax(ty);
    let (year, year_digits) = c.number();
    if year_digits < 4 {
        return Err(if year_digits == 0 {
            syntax
        } else {
            CanonicalError::Unsupported {
                ty,
                reason: "dates other than ISO YYYY-MM-DD",
            }
        });
    }
    if !c.eat(b'-') {
        return Err(
            if matches!(c.peek(), Some(b'/' | b'.')) || year_digits == 8 {
                CanonicalError::Unsupported {
                    ty,
                    reason: "dates other than ISO YYYY-MM-DD",
                }
            } else {
                syntax
            },
        );
    }
    let (month, n) = c.number();
    if !(1..=2).contains(&n) || !c.eat(b'-') {
        return Err(syntax);
    }
    let (day, n) = c.number();
    if !(1..=2).contains(&n) {
        return Err(syntax);
    }
    Ok((year, month, day))
}

/// Applies the era and validates the calendar date → days since 2000-01-01.
fn date_days(
    ty: LogicalType,
    (year, month, day): (i64, i64, i64),
    bc: bool,
) -> Result<i64, CanonicalError> {
    let range = CanonicalError::OutOfRange(ty);
    if year == 0 || year > 10_000_000 {
        return Err(range);
    }
    let astronomical = if bc { 1 - year } else { year };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(astronomical, month) {
        return Err(range);
    }
    let days = days_from_civil(astronomical, month, day) - PG_EPOCH_UNIX_DAYS;
    if !(DATE_MIN..DATE_END).contains(&days) {
        return Err(range);
    }
    Ok(days)
}

/// `HH:MM[:SS[.frac]]` → µs since midnight (up to 24:00:00 plus a leap second).
fn time_fields(ty: LogicalType, c: &mut Cursor<'_>) -> Result<i64, CanonicalError> {
    let syntax = CanonicalError::InvalidSyntax(ty);
    let range = CanonicalError::OutOfRange(ty);
    let (hour, n) = c.number();
    if !(1..=2).contains(&n) || !c.eat(b':') {
        return Err(syntax);
    }
    let (minute, n) = c.number();
    if !(1..=2).contains(&n) {
        return Err(syntax);
    }
    let (mut second, mut fsec) = (0, 0);
    if c.eat(b':') {
        let (s, n) = c.number();
        if !(1..=2).contains(&n) {
            return Err(syntax);
        }
        second = s;
        if c.eat(b'.') {
            let frac = c.digits_str();
            if frac.is_empty() {
                return Err(syntax);
            }
            fsec = if frac.len() <= 6 {
                let scaled = format!("{frac:0<6}");
                scaled.parse::<i64>().map_err(|_| syntax.clone())?
            } else {
                // PostgreSQL: rint(strtod(".fff…") * 1e6).
                let v: f64 = format!("0.{frac}").parse().map_err(|_| syntax.clone())?;
                #[allow(clippy::cast_possible_truncation)]
                let rounded = (v * 1e6).round_ties_even() as i64;
                rounded
            };
        }
    } else if c.peek() == Some(b'.') {
        return Err(CanonicalError::Unsupported {
            ty,
            reason: "MM:SS.fraction time input",
        });
    }
    if hour > 24
        || minute > 59
        || second > 60
        || (hour == 24 && (minute > 0 || second > 0 || fsec > 0))
    {
        return Err(range);
    }
    Ok(((hour * 60 + minute) * 60 + second) * USECS_PER_SEC + fsec)
}

/// An optional UTC offset (seconds east), `None` if there is none here.
fn offset(ty: LogicalType, c: &mut Cursor<'_>) -> Result<Option<i64>, CanonicalError> {
    let syntax = CanonicalError::InvalidSyntax(ty);
    let save = c.i;
    c.skip_ws();
    match c.peek() {
        Some(sign @ (b'+' | b'-')) => {
            c.i += 1;
            let start = c.i;
            let (v, n) = c.number();
            let (h, m, s) = if c.peek() == Some(b':') {
                if !(1..=2).contains(&n) {
                    return Err(syntax);
                }
                c.i += 1;
                let (m, mn) = c.number();
                if mn != 2 {
                    return Err(syntax);
                }
                let mut s = 0;
                if c.eat(b':') {
                    let (sv, sn) = c.number();
                    if sn != 2 {
                        return Err(syntax);
                    }
                    s = sv;
                }
                (v, m, s)
            } else {
                match n {
                    1 | 2 => (v, 0, 0),
                    3 | 4 => (v / 100, v % 100, 0),
                    5 | 6 => (v / 10_000, v / 100 % 100, v % 100),
                    _ => {
                        c.i = start;
                        return Err(syntax);
                    }
                }
            };
            if h > MAX_OFFSET_HOURS || m > 59 || s > 59 {
                return Err(CanonicalError::OutOfRange(ty));
            }
            let total = h * 3600 + m * 60 + s;
            Ok(Some(if sign == b'-' { -total } else { total }))
        }
        Some(c0) if c0.is_ascii_alphabetic() => {
            let word = c.word();
            if word.eq_ignore_ascii_case("z")
                || word.eq_ignore_ascii_case("utc")
                || word.eq_ignore_ascii_case("gmt")
            {
                Ok(Some(0))
            } else if word.eq_ignore_ascii_case("bc") || word.eq_ignore_ascii_case("ad") {
                c.i = save;
                Ok(None)
            } else {
                Err(CanonicalError::Unsupported {
                    ty,
                    reason: "named time zones and words other than BC/AD",
                })
            }
        }
        _ => {
            c.i = save;
            Ok(None)
        }
    }
}

/// Optional ` BC`/` AD`, then end of input (trailing whitespace allowed).
fn era_and_end(ty: LogicalType, c: &mut Cursor<'_>) -> Result<bool, CanonicalError> {
    let ws = c.skip_ws();
    let mut bc = false;
    if ws > 0 && c.peek().is_some_and(|x| x.is_ascii_alphabetic()) {
        let word = c.word();
        if word.eq_ignore_ascii_case("bc") {
            bc = true;
        } else if !word.eq_ignore_ascii_case("ad") {
            return Err(CanonicalError::InvalidSyntax(ty));
        }
        c.skip_ws();
    }
    if c.at_end() {
        Ok(bc)
    } else {
        Err(CanonicalError::InvalidSyntax(ty))
    }
}

pub(super) fn parse_date_days(s: &str) -> Result<i32, CanonicalError> {
    let ty = LogicalType::Date;
    match special(ty, s)? {
        Some(Special::Infinity) => return Ok(i32::MAX),
        Some(Special::NegInfinity) => return Ok(i32::MIN),
        None => {}
    }
    let mut c = Cursor::new(s);
    c.skip_ws();
    let fields = date_fields(ty, &mut c)?;
    let bc = era_and_end(ty, &mut c)?;
    let days = date_days(ty, fields, bc)?;
    Ok(i32::try_from(days).expect("within DATE range"))
}

pub(super) fn parse_time_micros(s: &str) -> Result<i64, CanonicalError> {
    let ty = LogicalType::Time;
    if special(ty, s)?.is_some() {
        return Err(CanonicalError::InvalidSyntax(ty));
    }
    let mut c = Cursor::new(s);
    c.skip_ws();
    let t = time_fields(ty, &mut c)?;
    c.skip_ws();
    if !c.at_end() {
        return Err(
            if c.peek()
                .is_some_and(|x| x.is_ascii_alphabetic() || x == b'+' || x == b'-')
            {
                CanonicalError::Unsupported {
                    ty,
                    reason: "AM/PM and time zones in time input",
                }
            } else {
                CanonicalError::InvalidSyntax(ty)
            },
        );
    }
    if t > USECS_PER_DAY {
        return Err(CanonicalError::OutOfRange(ty));
    }
    Ok(t)
}

pub(super) fn parse_timestamp_micros(
    s: &str,
    with_tz: bool,
    tz: SessionTimeZone,
) -> Result<i64, CanonicalError> {
    let ty = if with_tz {
        LogicalType::Timestamptz
    } else {
        LogicalType::Timestamp
    };
    match special(ty, s)? {
        Some(Special::Infinity) => return Ok(i64::MAX),
        Some(Special::NegInfinity) => return Ok(i64::MIN),
        None => {}
    }
    let mut c = Cursor::new(s);
    c.skip_ws();
    let fields = date_fields(ty, &mut c)?;
    let mut time = 0;
    let digit_at = |c: &Cursor<'_>, k: usize| c.peek_at(k).is_some_and(|x| x.is_ascii_digit());
    if matches!(c.peek(), Some(b'T' | b't')) && digit_at(&c, 1) {
        c.i += 1;
        time = time_fields(ty, &mut c)?;
    } else {
        let save = c.i;
        if c.skip_ws() > 0 && digit_at(&c, 0) {
            time = time_fields(ty, &mut c)?;
        } else {
            c.i = save;
        }
    }
    let explicit = offset(ty, &mut c)?;
    let bc = era_and_end(ty, &mut c)?;
    let days = date_days(ty, fields, bc)?;
    let offset_secs = if with_tz {
        match (explicit, tz) {
            (Some(o), _) => o,
            (None, SessionTimeZone::Fixed(o)) => i64::from(o),
            (None, SessionTimeZone::Unknown) => return Err(CanonicalError::TimeZoneRequired),
        }
    } else {
        // PostgreSQL silently ignores an offset given for timestamp without time zone.
        0
    };
    let micros = i128::from(days) * i128::from(USECS_PER_DAY) + i128::from(time)
        - i128::from(offset_secs) * i128::from(USECS_PER_SEC);
    if micros < i128::from(TS_MIN) || micros >= i128::from(TS_END) {
        return Err(CanonicalError::OutOfRange(ty));
    }
    Ok(i64::try_from(micros).expect("within TIMESTAMP range"))
}

fn push_date(out: &mut String, days_since_pg_epoch: i64) -> bool {
    let (y, m, d) = civil_from_days(days_since_pg_epoch + PG_EPOCH_UNIX_DAYS);
    let bc = y <= 0;
    let shown = if bc { 1 - y } else { y };
    out.push_str(&format!("{shown:04}-{m:02}-{d:02}"));
    bc
}

fn push_time(out: &mut String, micros_of_day: i64) {
    let secs = micros_of_day / USECS_PER_SEC;
    let frac = micros_of_day % USECS_PER_SEC;
    out.push_str(&format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ));
    if frac != 0 {
        let f = format!(".{frac:06}");
        out.push_str(f.trim_end_matches('0'));
    }
}

pub(super) fn date_from_days(days: i32) -> Result<String, CanonicalError> {
    match days {
        i32::MAX => Ok("infinity".into()),
        i32::MIN => Ok("-infinity".into()),
        d if !(DATE_MIN..DATE_END).contains(&i64::from(d)) => {
            Err(CanonicalError::OutOfRange(LogicalType::Date))
        }
        d => {
            let mut out = String::with_capacity(16);
            if push_date(&mut out, i64::from(d)) {
                out.push_str(" BC");
            }
            Ok(out)
        }
    }
}

pub(super) fn time_from_micros(micros: i64) -> Result<String, CanonicalError> {
    if !(0..=USECS_PER_DAY).contains(&micros) {
        return Err(CanonicalError::OutOfRange(LogicalType::Time));
    }
    let mut out = String::with_capacity(15);
    push_time(&mut out, micros);
    Ok(out)
}

fn format_timestamp(micros: i64, tz_offset: Option<i64>) -> String {
    match micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let local = micros + tz_offset.unwrap_or(0) * USECS_PER_SEC;
    let mut out = String::with_capacity(32);
    let bc = push_date(&mut out, local.div_euclid(USECS_PER_DAY));
    out.push(' ');
    push_time(&mut out, local.rem_euclid(USECS_PER_DAY));
    if let Some(offset) = tz_offset {
        out.push(if offset < 0 { '-' } else { '+' });
        let a = offset.abs();
        out.push_str(&format!("{:02}", a / 3600));
        if a % 3600 != 0 {
            out.push_str(&format!(":{:02}", a / 60 % 60));
        }
        if a % 60 != 0 {
            out.push_str(&format!(":{:02}", a % 60));
        }
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

pub(super) fn timestamp_from_micros(micros: i64, with_tz: bool) -> Result<String, CanonicalError> {
    let finite = micros != i64::MAX && micros != i64::MIN;
    if finite && !(TS_MIN..TS_END).contains(&micros) {
        let ty = if with_tz {
            LogicalType::Timestamptz
        } else {
            LogicalType::Timestamp
        };
        return Err(CanonicalError::OutOfRange(ty));
    }
    Ok(format_timestamp(micros, with_tz.then_some(0)))
}

/// A `timestamptz` as PostgreSQL prints it in a session at a fixed offset.
pub(super) fn format_timestamptz_at(
    micros: i64,
    offset_secs: i32,
) -> Result<String, CanonicalError> {
    Ok(format_timestamp(micros, Some(i64::from(offset_secs))))
}

pub(super) fn date_from_text(s: &str) -> Result<String, CanonicalError> {
    date_from_days(parse_date_days(s)?)
}

pub(super) fn time_from_text(s: &str) -> Result<String, CanonicalError> {
    time_from_micros(parse_time_micros(s)?)
}

pub(super) fn timestamp_from_text(
    s: &str,
    with_tz: bool,
    tz: SessionTimeZone,
) -> Result<String, CanonicalError> {
    timestamp_from_micros(parse_timestamp_micros(s, with_tz, tz)?, with_tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_anchors() {
        assert_eq!(days_from_civil(2000, 1, 1), PG_EPOCH_UNIX_DAYS);
        assert_eq!(
            days_from_civil(-4713, 11, 24) - PG_EPOCH_UNIX_DAYS,
            DATE_MIN
        );
        assert_eq!(
            days_from_civil(5_874_898, 1, 1) - PG_EPOCH_UNIX_DAYS,
            DATE_END
        );
        assert_eq!(
            (days_from_civil(294_277, 1, 1) - PG_EPOCH_UNIX_DAYS) * USECS_PER_DAY,
            TS_END
        );
        assert_eq!(DATE_MIN * USECS_PER_DAY, TS_MIN);
        for d in [-800_000, -1, 0, 1, 59, 60, 365, 1_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date_days("2000-01-01").unwrap(), 0);
        assert_eq!(date_from_text(" 2024-2-29 ").unwrap(), "2024-02-29");
        assert_eq!(date_from_text("0044-03-15 BC").unwrap(), "0044-03-15 BC");
        assert_eq!(date_from_text("0001-01-01 bc").unwrap(), "0001-01-01 BC");
        assert_eq!(date_from_text("4714-11-24 BC").unwrap(), "4714-11-24 BC");
        assert_eq!(date_from_text("5874897-12-31").unwrap(), "5874897-12-31");
        assert_eq!(date_from_text("10000-01-01 AD").unwrap(), "10000-01-01");
        assert_eq!(date_from_text("-Infinity").unwrap(), "-infinity");
        for bad in [
            "2023-02-29",
            "4714-11-23 BC",
            "5874898-01-01",
            "0000-01-01",
            "2024-13-01",
        ] {
            assert_eq!(
                date_from_text(bad).unwrap_err(),
                CanonicalError::OutOfRange(LogicalType::Date),
                "{bad}"
            );
        }
        for bad in [
            "24-01-01",
            "01/02/2024",
            "epoch",
            "today",
            "2024-01-01 12:00",
            "2024-01-01x",
            "",
        ] {
            assert!(date_from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(time_from_text("13:45").unwrap(), "13:45:00");
        assert_eq!(time_from_text("9:05:03.120").unwrap(), "09:05:03.12");
        assert_eq!(time_from_text("24:00:00").unwrap(), "24:00:00");
        assert_eq!(time_from_text("23:59:60").unwrap(), "24:00:00");
        assert_eq!(time_from_text("23:59:59.99999999").unwrap(), "24:00:00");
        assert_eq!(time_from_text("12:00:00.0000004").unwrap(), "12:00:00");
        for bad in [
            "24:00:01",
            "12:60:00",
            "23:59:60.5",
            "allballs",
            "12:00 PM",
            "12:30.5",
            "12",
        ] {
            assert!(time_from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        let ts = |s| timestamp_from_text(s, false, SessionTimeZone::Unknown);
        let tstz = |s| timestamp_from_text(s, true, SessionTimeZone::Unknown);
        assert_eq!(
            ts("2024-02-29 13:45:00.123456").unwrap(),
            "2024-02-29 13:45:00.123456"
        );
        assert_eq!(
            ts("2024-02-29T13:45:00.5").unwrap(),
            "2024-02-29 13:45:00.5"
        );
        assert_eq!(ts("2024-02-29").unwrap(), "2024-02-29 00:00:00");
        assert_eq!(
            ts("2024-02-29 13:45:00+05:30").unwrap(),
            "2024-02-29 13:45:00"
        );
        assert_eq!(ts("2024-12-31 24:00:00").unwrap(), "2025-01-01 00:00:00");
        assert_eq!(
            ts("0044-03-15 12:00:00 BC").unwrap(),
            "0044-03-15 12:00:00 BC"
        );
        assert_eq!(
            ts("294276-12-31 23:59:59.999999").unwrap(),
            "294276-12-31 23:59:59.999999"
        );
        assert!(ts("294277-01-01 00:00:00").is_err());
        assert_eq!(
            tstz("2024-02-29 13:45:00+05:30").unwrap(),
            "2024-02-29 08:15:00+00"
        );
        assert_eq!(
            tstz("2024-02-29T13:45:00Z").unwrap(),
            "2024-02-29 13:45:00+00"
        );
        assert_eq!(
            tstz("2024-02-29 13:45:00-08").unwrap(),
            "2024-02-29 21:45:00+00"
        );
        assert_eq!(
            tstz("2024-02-29 13:45 -0800").unwrap(),
            "2024-02-29 21:45:00+00"
        );
        assert_eq!(
            tstz("2024-02-29 13:45:00 UTC").unwrap(),
            "2024-02-29 13:45:00+00"
        );
        assert_eq!(
            tstz("0044-03-15 12:00:00+00 BC").unwrap(),
            "0044-03-15 12:00:00+00 BC"
        );
        assert_eq!(tstz("infinity").unwrap(), "infinity");
        assert_eq!(
            tstz("2024-02-29 13:45:00").unwrap_err(),
            CanonicalError::TimeZoneRequired
        );
        assert_eq!(
            timestamp_from_text("2024-02-29 13:45:00", true, SessionTimeZone::Fixed(3600)).unwrap(),
            "2024-02-29 12:45:00+00"
        );
        for bad in [
            "now",
            "epoch",
            "2024-02-29 13:45:00 Europe/Paris",
            "2024-02-29 13:45:00+16",
            "2024-02-29  x",
        ] {
            assert!(tstz(bad).is_err(), "{bad}");
        }
        let micros =
            parse_timestamp_micros("2024-02-29 08:15:00+00", true, SessionTimeZone::Unknown)
                .unwrap();
        assert_eq!(
            format_timestamptz_at(micros, 19_800).unwrap(),
            "2024-02-29 13:45:00+05:30"
        );
        assert_eq!(
            format_timestamptz_at(micros, -28_800).unwrap(),
            "2024-02-29 00:15:00-08"
        );
    }
}

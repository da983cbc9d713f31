//! Canonical plaintext: each logical type's value is encrypted as the text
//! PostgreSQL itself would print for it, so text-format and binary-format
//! clients (and deterministic equality) agree on one byte string per value.
//!
//! The canonical form is PostgreSQL's output with `DateStyle = ISO`,
//! `extra_float_digits = 1` (shortest round-trip floats), `bytea_output = hex`,
//! and `timestamptz` rendered in UTC with `+00`:
//!
//! | type | canonical text | binary wire format (send/recv) |
//! |---|---|---|
//! | `text`, `varchar` | the UTF-8 text itself | the same bytes |
//! | `int2/4/8` | `-123` | 2/4/8-byte big-endian two's complement |
//! | `numeric` | `-123.4500` (its display scale), `NaN`, `Infinity`, `-Infinity` | `ndigits i16, weight i16, sign u16, dscale u16, digits i16[]` base 10000 |
//! | `float4/8` | shortest round-trip (`0.1`, `1e+16`, `-0`, `NaN`, `Infinity`) | IEEE 754 big-endian |
//! | `bool` | `t` / `f` | one byte 1 / 0 |
//! | `date` | `2024-02-29`, `0044-03-15 BC`, `infinity` | i32 days since 2000-01-01 |
//! | `time` | `13:45:00.123` (fraction trimmed) | i64 µs since midnight |
//! | `timestamp` | `2024-02-29 13:45:00.123456` | i64 µs since 2000-01-01 00:00 |
//! | `timestamptz` | `2024-02-29 08:15:00+00` (UTC) | i64 µs since 2000-01-01 00:00 UTC |
//! | `uuid` | lowercase `8-4-4-4-12` | 16 bytes |
//! | `json` | the input text, verbatim | the same text |
//! | `jsonb` | PostgreSQL's normalized text (sorted unique keys, `", "`/`": "` spacing, numeric numbers) | version byte 1 + text |
//! | `bytea` | `\x` + lowercase hex | raw bytes |
//!
//! `±infinity` of `date`/`timestamp`/`timestamptz` are `i32/i64::MAX/MIN` in binary.
//!
//! # Accepted text input (anything else is refused, fail-closed)
//!
//! Leading/trailing whitespace is allowed where PostgreSQL allows it (not for
//! `uuid`, and it is data for `text`/`varchar`/`json`).
//!
//! * `int2/4/8`: optional sign, decimal digits. Not PostgreSQL 16's `0x…`,
//!   `0o…`, `0b…` or `1_000` forms.
//! * `numeric`: `[+-]digits[.digits][e[+-]digits]`, `.5`, `5.`, `NaN`,
//!   `[+-]Infinity`, `[+-]inf` (case-insensitive). Exponents within ±1000.
//! * `float4/8`: decimal with optional exponent, `NaN`, `[+-]Infinity`,
//!   `[+-]inf`. Overflow and underflow to zero are errors, as in PostgreSQL.
//!   Not hexadecimal floats.
//! * `bool`: `t`/`true`/`y`/`yes`/`on`/`1` and `f`/`false`/`n`/`no`/`off`/`0`,
//!   any case, and unique prefixes as PostgreSQL accepts them (`tr`, `of`).
//! * `date`: `YYYY-MM-DD` (year of 4 or more digits, 1–2 digit month and day),
//!   optional ` BC`/` AD`, `infinity`, `-infinity`.
//! * `time`: `HH:MM[:SS[.fraction]]`; `24:00:00`; leap second `:60` when the
//!   result stays within the day. More than 6 fractional digits round to µs.
//! * `timestamp`: a date, optionally followed by ` ` or `T` and a time,
//!   optionally an offset (ignored, exactly as PostgreSQL ignores it for
//!   `timestamp without time zone`) and ` BC`/` AD`; `infinity`, `-infinity`.
//! * `timestamptz`: as `timestamp`, with an offset `Z`, `±HH`, `±HHMM`,
//!   `±HH:MM`, `±HH:MM:SS`, ` UTC` or ` GMT`. Without an offset PostgreSQL uses
//!   the session's `TimeZone`: pass it as [`SessionTimeZone`] to
//!   [`canonical_from_text_in`]; with [`SessionTimeZone::Unknown`] (what
//!   [`canonical_from_text`] assumes) such input is refused with
//!   [`CanonicalError::TimeZoneRequired`]. Named zones (`Europe/Paris`) are refused.
//! * Not accepted for any date/time type: `epoch`, `now`, `today`,
//!   `tomorrow`, `yesterday`, `allballs`, non-ISO `DateStyle` orders
//!   (`02/29/2024`), month names, Julian dates.
//! * `uuid`: 32 hex digits in either case, hyphens after any group of four,
//!   optionally in braces.
//! * `bytea`: hex format `\x…` (whitespace between byte pairs allowed) or the
//!   traditional escape format (`\\`, `\ooo` octal, other bytes literal).
//! * `json`: any valid JSON text, kept byte for byte (as PostgreSQL's `json` does).
//! * `jsonb`: any valid JSON text without `\u0000`; normalized as PostgreSQL
//!   does. Nesting is limited to [`MAX_JSON_DEPTH`] levels.
//! * `text`/`varchar`: any UTF-8 without NUL bytes, verbatim.
//!
//! # What callers handle
//!
//! * SQL NULL is never encrypted or canonicalised: it stays NULL (a NULL
//!   parameter or field has length -1 on the wire and carries no bytes).
//! * Type modifiers (`varchar(n)` length, `numeric(p,s)` rounding,
//!   `timestamp(p)` precision) are not applied here: the server can no longer
//!   apply them to ciphertext, so the policy layer must (or refuse).
//! * All input is assumed to be UTF-8 (`client_encoding = UTF8`).

mod datetime;
pub use datetime::civil_from_days;
mod float;
mod json;
mod numeric;
mod scalar;

use std::fmt;
use std::str::FromStr;

pub use json::MAX_JSON_DEPTH;

/// The PostgreSQL type a protected column has for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogicalType {
    /// `text`
    Text,
    /// `varchar` / `character varying`
    Varchar,
    /// `int2` / `smallint`
    Int2,
    /// `int4` / `integer`
    Int4,
    /// `int8` / `bigint`
    Int8,
    /// `numeric` / `decimal`
    Numeric,
    /// `float4` / `real`
    Float4,
    /// `float8` / `double precision`
    Float8,
    /// `bool` / `boolean`
    Bool,
    /// `date`
    Date,
    /// `time` / `time without time zone`
    Time,
    /// `timestamp` / `timestamp without time zone`
    Timestamp,
    /// `timestamptz` / `timestamp with time zone`
    Timestamptz,
    /// `uuid`
    Uuid,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
    /// `bytea`
    Bytea,
}

impl LogicalType {
    /// Every supported type.
    pub const ALL: [Self; 17] = [
        Self::Text,
        Self::Varchar,
        Self::Int2,
        Self::Int4,
        Self::Int8,
        Self::Numeric,
        Self::Float4,
        Self::Float8,
        Self::Bool,
        Self::Date,
        Self::Time,
        Self::Timestamp,
        Self::Timestamptz,
        Self::Uuid,
        Self::Json,
        Self::Jsonb,
        Self::Bytea,
    ];

    /// The built-in type OID (`pg_type.oid`).
    pub const fn type_oid(self) -> u32 {
        match self {
            Self::Text => 25,
            Self::Varchar => 1043,
            Self::Int2 => 21,
            Self::Int4 => 23,
            Self::Int8 => 20,
            Self::Numeric => 1700,
            Self::Float4 => 700,
            Self::Float8 => 701,
            Self::Bool => 16,
            Self::Date => 1082,
            Self::Time => 1083,
            Self::Timestamp => 1114,
            Self::Timestamptz => 1184,
            Self::Uuid => 2950,
            Self::Json => 114,
            Self::Jsonb => 3802,
            Self::Bytea => 17,
        }
    }

    /// The type for a built-in OID.
    pub fn from_oid(oid: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_oid() == oid)
    }

    /// `pg_type.typname` (`int4`, `timestamptz`, …); also what `Display` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Varchar => "varchar",
            Self::Int2 => "int2",
            Self::Int4 => "int4",
            Self::Int8 => "int8",
            Self::Numeric => "numeric",
            Self::Float4 => "float4",
            Self::Float8 => "float8",
            Self::Bool => "bool",
            Self::Date => "date",
            Self::Time => "time",
            Self::Timestamp => "timestamp",
            Self::Timestamptz => "timestamptz",
            Self::Uuid => "uuid",
            Self::Json => "json",
            Self::Jsonb => "jsonb",
            Self::Bytea => "bytea",
        }
    }

    /// The SQL-standard spelling `format_type()` prints (`integer`,
    /// `character varying`, `timestamp with time zone`, …).
    pub const fn sql_name(self) -> &'static str {
        match self {
            Self::Varchar => "character varying",
            Self::Int2 => "smallint",
            Self::Int4 => "integer",
            Self::Int8 => "bigint",
            Self::Float4 => "real",
            Self::Float8 => "double precision",
            Self::Bool => "boolean",
            Self::Time => "time without time zone",
            Self::Timestamp => "timestamp without time zone",
            Self::Timestamptz => "timestamp with time zone",
            other => other.name(),
        }
    }

    /// Fixed binary length (`pg_type.typlen`), or `None` for variable length.
    pub const fn binary_len(self) -> Option<usize> {
        match self {
            Self::Bool => Some(1),
            Self::Int2 => Some(2),
            Self::Int4 | Self::Float4 | Self::Date => Some(4),
            Self::Int8 | Self::Float8 | Self::Time | Self::Timestamp | Self::Timestamptz => Some(8),
            Self::Uuid => Some(16),
            _ => None,
        }
    }
}

impl fmt::Display for LogicalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LogicalType {
    type Err = CanonicalError;

    /// Accepts `typname`s, `format_type` spellings and common aliases, in any
    /// case and with any inner spacing. Type modifiers (`varchar(20)`) are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        let ty = match normalized.as_str() {
            "text" => Self::Text,
            "varchar" | "character varying" | "char varying" => Self::Varchar,
            "int2" | "smallint" => Self::Int2,
            "int4" | "integer" | "int" => Self::Int4,
            "int8" | "bigint" => Self::Int8,
            "numeric" | "decimal" => Self::Numeric,
            "float4" | "real" => Self::Float4,
            "float8" | "double precision" | "float" => Self::Float8,
            "bool" | "boolean" => Self::Bool,
            "date" => Self::Date,
            "time" | "time without time zone" => Self::Time,
            "timestamp" | "timestamp without time zone" => Self::Timestamp,
            "timestamptz" | "timestamp with time zone" => Self::Timestamptz,
            "uuid" => Self::Uuid,
            "json" => Self::Json,
            "jsonb" => Self::Jsonb,
            "bytea" => Self::Bytea,
            _ => return Err(CanonicalError::UnknownType(s.trim().to_owned())),
        };
        Ok(ty)
    }
}

/// Why a value could not be brought to canonical form. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// Text that is not a valid input for the type (or a form not supported here).
    #[error("invalid input syntax for type {0}")]
    InvalidSyntax(LogicalType),
    /// A syntactically valid value outside the type's range.
    #[error("value out of range for type {0}")]
    OutOfRange(LogicalType),
    /// A PostgreSQL input form pgveil refuses on purpose (see the module docs).
    #[error("unsupported input for type {ty}: {reason}")]
    Unsupported {
        /// The type.
        ty: LogicalType,
        /// Which form, in general terms.
        reason: &'static str,
    },
    /// Binary-format bytes of the wrong length or with invalid fields.
    #[error("invalid binary representation for type {0}")]
    InvalidBinary(LogicalType),
    /// Not UTF-8, or contains a NUL byte.
    #[error("invalid UTF-8 or NUL byte in value of type {0}")]
    InvalidText(LogicalType),
    /// A `timestamptz` without offset while the session time zone is unknown.
    #[error("timestamptz input without a UTC offset needs a known session time zone")]
    TimeZoneRequired,
    /// JSON nested deeper than [`MAX_JSON_DEPTH`].
    #[error("JSON value nested deeper than {0} levels")]
    TooDeep(usize),
    /// A type name [`LogicalType::from_str`] does not know.
    #[error("unsupported type {0:?}")]
    UnknownType(String),
}

impl CanonicalError {
    /// The SQLSTATE PostgreSQL would report for the same problem.
    pub fn sqlstate(&self) -> &'static str {
        use LogicalType::*;
        match self {
            Self::InvalidSyntax(Date | Time | Timestamp | Timestamptz) | Self::TimeZoneRequired => {
                "22007"
            }
            Self::InvalidSyntax(_) => "22P02",
            Self::OutOfRange(Date | Time | Timestamp | Timestamptz) => "22008",
            Self::OutOfRange(_) => "22003",
            Self::Unsupported { .. } | Self::UnknownType(_) => "0A000",
            Self::InvalidBinary(_) => "22P03",
            Self::InvalidText(_) => "22021",
            Self::TooDeep(_) => "54001",
        }
    }
}

/// The session's `TimeZone`, as far as pgveil can interpret it without a
/// time zone database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionTimeZone {
    /// A named zone with daylight-saving rules, or not known: `timestamptz`
    /// input must then carry an explicit offset; output is rendered in UTC.
    #[default]
    Unknown,
    /// A fixed offset, seconds east of UTC (`Fixed(0)` is UTC).
    Fixed(i32),
}

impl SessionTimeZone {
    /// UTC.
    pub const UTC: Self = Self::Fixed(0);

    /// Interprets a `TimeZone` setting as reported in `ParameterStatus`:
    /// UTC aliases and `Etc/GMT±N` (POSIX sign: `Etc/GMT+5` is UTC−5) are
    /// fixed; everything else is [`SessionTimeZone::Unknown`].
    pub fn from_pg_setting(setting: &str) -> Self {
        let s = setting.trim();
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "utc" | "etc/utc" | "gmt" | "etc/gmt" | "uct" | "etc/uct" | "universal"
            | "etc/universal" | "zulu" | "etc/zulu" | "z" | "gmt0" | "etc/gmt0" | "etc/gmt+0"
            | "etc/gmt-0" | "greenwich" | "etc/greenwich" => Self::UTC,
            _ => {
                let Some(rest) = lower.strip_prefix("etc/gmt") else {
                    return Self::Unknown;
                };
                let (sign, digits) = match rest.as_bytes().first() {
                    Some(b'+') => (-1, &rest[1..]),
                    Some(b'-') => (1, &rest[1..]),
                    _ => return Self::Unknown,
                };
                match digits.parse::<i32>() {
                    Ok(h) if (0..=14).contains(&h) && digits.len() <= 2 => {
                        Self::Fixed(sign * h * 3600)
                    }
                    _ => Self::Unknown,
                }
            }
        }
    }
}

fn utf8(ty: LogicalType, input: &[u8]) -> Result<&str, CanonicalError> {
    std::str::from_utf8(input).map_err(|_| CanonicalError::InvalidText(ty))
}

/// PostgreSQL's `isspace()` set: space, `\t`, `\n`, `\v`, `\f`, `\r`.
pub(crate) fn is_pg_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

pub(crate) fn pg_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8))
}

/// Validates and normalizes a text-format client value, assuming an unknown
/// session time zone (see [`canonical_from_text_in`]).
///
/// # Errors
/// [`CanonicalError`]; never includes the value.
pub fn canonical_from_text(ty: LogicalType, input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    canonical_from_text_in(ty, input, SessionTimeZone::Unknown)
}

/// Validates and normalizes a text-format client value; `tz` is the session
/// time zone, used only for `timestamptz` input without an explicit offset.
///
/// # Errors
/// [`CanonicalError`]; never includes the value.
pub fn canonical_from_text_in(
    ty: LogicalType,
    input: &[u8],
    tz: SessionTimeZone,
) -> Result<Vec<u8>, CanonicalError> {
    use LogicalType::*;
    match ty {
        Text | Varchar | Json => {
            let s = scalar::check_text(ty, input)?;
            if ty == Json {
                json::validate(s)?;
            }
            Ok(input.to_vec())
        }
        Bytea => scalar::bytea_from_text(input),
        _ => {
            let s = utf8(ty, input)?;
            let out = match ty {
                Int2 => scalar::int_from_text(ty, s, i64::from(i16::MIN), i64::from(i16::MAX))?,
                Int4 => scalar::int_from_text(ty, s, i64::from(i32::MIN), i64::from(i32::MAX))?,
                Int8 => scalar::int_from_text(ty, s, i64::MIN, i64::MAX)?,
                Bool => scalar::bool_from_text(s)?,
                Uuid => scalar::uuid_from_text(s)?,
                Float4 => float::float4_from_text(s)?,
                Float8 => float::float8_from_text(s)?,
                Numeric => numeric::from_text(s)?,
                Jsonb => json::jsonb_canonical(scalar::check_text(ty, input)?)?,
                Date => datetime::date_from_text(s)?,
                Time => datetime::time_from_text(s)?,
                Timestamp => datetime::timestamp_from_text(s, false, tz)?,
                Timestamptz => datetime::timestamp_from_text(s, true, tz)?,
                Text | Varchar | Json | Bytea => unreachable!("handled above"),
            };
            Ok(out.into_bytes())
        }
    }
}

/// Converts a binary-format client value (PostgreSQL `typreceive` input) to
/// canonical text.
///
/// # Errors
/// [`CanonicalError::InvalidBinary`], [`CanonicalError::OutOfRange`], …
pub fn canonical_from_binary(ty: LogicalType, input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    use LogicalType::*;
    if let Some(len) = ty.binary_len() {
        if input.len() != len {
            return Err(CanonicalError::InvalidBinary(ty));
        }
    }
    let out = match ty {
        Text | Varchar | Json => return canonical_from_text(ty, input),
        Bytea => return Ok(scalar::bytea_to_hex(input)),
        Jsonb => match input.split_first() {
            Some((1, text)) => json::jsonb_canonical(scalar::check_text(ty, text)?)?,
            _ => return Err(CanonicalError::InvalidBinary(ty)),
        },
        Int2 => i16::from_be_bytes(fixed(input)).to_string(),
        Int4 => i32::from_be_bytes(fixed(input)).to_string(),
        Int8 => i64::from_be_bytes(fixed(input)).to_string(),
        Bool => String::from(if input[0] != 0 { "t" } else { "f" }),
        Uuid => scalar::uuid_to_text(&fixed(input)),
        Float4 => float::format_float4(f32::from_be_bytes(fixed(input))),
        Float8 => float::format_float8(f64::from_be_bytes(fixed(input))),
        Numeric => numeric::from_binary(input)?,
        Date => datetime::date_from_days(i32::from_be_bytes(fixed(input)))?,
        Time => datetime::time_from_micros(i64::from_be_bytes(fixed(input)))?,
        Timestamp => datetime::timestamp_from_micros(i64::from_be_bytes(fixed(input)), false)?,
        Timestamptz => datetime::timestamp_from_micros(i64::from_be_bytes(fixed(input)), true)?,
    };
    Ok(out.into_bytes())
}

/// Converts canonical text (e.g. just decrypted) to the binary wire format.
///
/// # Errors
/// [`CanonicalError`] if `canonical` is not valid input for the type.
pub fn canonical_to_binary(ty: LogicalType, canonical: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    use LogicalType::*;
    match ty {
        Text | Varchar | Json => Ok(canonical.to_vec()),
        Jsonb => {
            let mut out = Vec::with_capacity(canonical.len() + 1);
            out.push(1);
            out.extend_from_slice(canonical);
            Ok(out)
        }
        Bytea => scalar::bytea_from_text_raw(canonical),
        _ => {
            let s = utf8(ty, canonical)?;
            Ok(match ty {
                Int2 => {
                    let v = scalar::parse_int(ty, s, i64::from(i16::MIN), i64::from(i16::MAX))?;
                    i16::try_from(v)
                        .map_err(|_| CanonicalError::OutOfRange(ty))?
                        .to_be_bytes()
                        .to_vec()
                }
                Int4 => {
                    let v = scalar::parse_int(ty, s, i64::from(i32::MIN), i64::from(i32::MAX))?;
                    i32::try_from(v)
                        .map_err(|_| CanonicalError::OutOfRange(ty))?
                        .to_be_bytes()
                        .to_vec()
                }
                Int8 => scalar::parse_int(ty, s, i64::MIN, i64::MAX)?
                    .to_be_bytes()
                    .to_vec(),
                Bool => vec![u8::from(scalar::parse_bool(s)?)],
                Uuid => scalar::parse_uuid(s)?.to_vec(),
                Float4 => float::parse_float4(s)?.to_be_bytes().to_vec(),
                Float8 => float::parse_float8(s)?.to_be_bytes().to_vec(),
                Numeric => numeric::to_binary(s)?,
                Date => datetime::parse_date_days(s)?.to_be_bytes().to_vec(),
                Time => datetime::parse_time_micros(s)?.to_be_bytes().to_vec(),
                Timestamp => datetime::parse_timestamp_micros(s, false, SessionTimeZone::Unknown)?
                    .to_be_bytes()
                    .to_vec(),
                Timestamptz => datetime::parse_timestamp_micros(s, true, SessionTimeZone::Unknown)?
                    .to_be_bytes()
                    .to_vec(),
                Text | Varchar | Json | Jsonb | Bytea => unreachable!("handled above"),
            })
        }
    }
}

/// Canonical text to the text wire format: the identity (a copy).
///
/// # Errors
/// None today; the `Result` leaves room for types whose output differs.
pub fn canonical_to_text(ty: LogicalType, canonical: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let _ = ty;
    Ok(canonical.to_vec())
}

/// Canonical text to the text wire format as PostgreSQL would print it in a
/// session whose time zone is `tz`: `timestamptz` values are shifted to a
/// fixed offset (`2024-02-29 14:15:00+05:30`); everything else is the identity.
///
/// # Errors
/// [`CanonicalError`] if a `timestamptz` canonical value does not parse.
pub fn canonical_to_text_in(
    ty: LogicalType,
    canonical: &[u8],
    tz: SessionTimeZone,
) -> Result<Vec<u8>, CanonicalError> {
    match (ty, tz) {
        (LogicalType::Timestamptz, SessionTimeZone::Fixed(offset)) if offset != 0 => {
            let s = utf8(ty, canonical)?;
            let micros = datetime::parse_timestamp_micros(s, true, SessionTimeZone::Unknown)?;
            Ok(datetime::format_timestamptz_at(micros, offset)?.into_bytes())
        }
        _ => canonical_to_text(ty, canonical),
    }
}

fn fixed<const N: usize>(input: &[u8]) -> [u8; N] {
    input.try_into().expect("length checked against binary_len")
}

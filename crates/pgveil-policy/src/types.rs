//! Logical column types: what a protected column holds in plaintext, i.e. the
//! type a client sees. The storage type (text, varchar or bytea holding the
//! ciphertext) is the DBA's choice and is checked against the catalog in
//! [`crate::check`].

use std::fmt;

use thiserror::Error;

/// `VARHDRSZ`: PostgreSQL adds it to varchar lengths and numeric precisions in `atttypmod`.
const VARHDRSZ: i32 = 4;
/// Largest `varchar(n)` PostgreSQL accepts.
const MAX_VARCHAR_LEN: i32 = 10_485_760;
/// Largest `numeric(p)` precision PostgreSQL accepts.
const MAX_NUMERIC_PRECISION: i32 = 1000;

/// The logical type of a protected column.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ColumnType {
    /// `text`
    Text,
    /// `varchar` / `character varying`, optionally with a length
    Varchar,
    /// `int2` / `smallint`
    Int2,
    /// `int4` / `integer` / `int`
    Int4,
    /// `int8` / `bigint`
    Int8,
    /// `numeric` / `decimal`, optionally with precision and scale
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

impl ColumnType {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [ColumnType; 17] = [
        ColumnType::Text,
        ColumnType::Varchar,
        ColumnType::Int2,
        ColumnType::Int4,
        ColumnType::Int8,
        ColumnType::Numeric,
        ColumnType::Float4,
        ColumnType::Float8,
        ColumnType::Bool,
        ColumnType::Date,
        ColumnType::Time,
        ColumnType::Timestamp,
        ColumnType::Timestamptz,
        ColumnType::Uuid,
        ColumnType::Json,
        ColumnType::Jsonb,
        ColumnType::Bytea,
    ];

    /// The type's OID in `pg_type` (stable, built in).
    pub const fn type_oid(self) -> u32 {
        match self {
            ColumnType::Text => 25,
            ColumnType::Varchar => 1043,
            ColumnType::Int2 => 21,
            ColumnType::Int4 => 23,
            ColumnType::Int8 => 20,
            ColumnType::Numeric => 1700,
            ColumnType::Float4 => 700,
            ColumnType::Float8 => 701,
            ColumnType::Bool => 16,
            ColumnType::Date => 1082,
            ColumnType::Time => 1083,
            ColumnType::Timestamp => 1114,
            ColumnType::Timestamptz => 1184,
            ColumnType::Uuid => 2950,
            ColumnType::Json => 114,
            ColumnType::Jsonb => 3802,
            ColumnType::Bytea => 17,
        }
    }

    /// The canonical name (`pg_type.typname`): `text`, `varchar`, `int4`, …
    pub const fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Varchar => "varchar",
            ColumnType::Int2 => "int2",
            ColumnType::Int4 => "int4",
            ColumnType::Int8 => "int8",
            ColumnType::Numeric => "numeric",
            ColumnType::Float4 => "float4",
            ColumnType::Float8 => "float8",
            ColumnType::Bool => "bool",
            ColumnType::Date => "date",
            ColumnType::Time => "time",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Uuid => "uuid",
            ColumnType::Json => "json",
            ColumnType::Jsonb => "jsonb",
            ColumnType::Bytea => "bytea",
        }
    }

    /// Other spellings the policy accepts (SQL standard names).
    pub const fn aliases(self) -> &'static [&'static str] {
        match self {
            ColumnType::Varchar => &["character varying"],
            ColumnType::Int2 => &["smallint"],
            ColumnType::Int4 => &["integer", "int"],
            ColumnType::Int8 => &["bigint"],
            ColumnType::Numeric => &["decimal"],
            ColumnType::Float4 => &["real"],
            ColumnType::Float8 => &["double precision"],
            ColumnType::Bool => &["boolean"],
            ColumnType::Time => &["time without time zone"],
            ColumnType::Timestamp => &["timestamp without time zone"],
            ColumnType::Timestamptz => &["timestamp with time zone"],
            _ => &[],
        }
    }

    /// Look a type name up (no modifier), ASCII case-insensitively, with
    /// runs of white space treated as one space.
    pub fn from_name(name: &str) -> Option<ColumnType> {
        let name = normalize_spaces(name);
        ColumnType::ALL
            .into_iter()
            .find(|ty| ty.name() == name || ty.aliases().iter().any(|alias| *alias == name))
    }

    /// Whether the type takes a modifier: `varchar(n)`, `numeric(p)`, `numeric(p,s)`.
    pub const fn takes_modifier(self) -> bool {
        matches!(self, ColumnType::Varchar | ColumnType::Numeric)
    }

    /// Whether two columns of these types may share a deterministic key.
    ///
    /// Deterministic encryption turns equal plaintext into equal ciphertext,
    /// and pgveil encrypts a value's canonical text form; so columns can be
    /// joined through a shared key when their text forms coincide for equal
    /// values: the same type, both character (`text`/`varchar`) or both
    /// integer (`int2`/`int4`/`int8`).
    pub fn key_compatible(self, other: ColumnType) -> bool {
        use ColumnType::*;
        self == other
            || matches!(
                (self, other),
                (Text | Varchar, Text | Varchar) | (Int2 | Int4 | Int8, Int2 | Int4 | Int8)
            )
    }

    /// An upper bound on the bytes of a value's canonical text form, if the
    /// type (with `typmod`) bounds it. Used to size `varchar(n)` storage.
    pub fn max_text_bytes(self, typmod: i32) -> Option<usize> {
        let bound = match self {
            ColumnType::Int2 => 6,         // -32768
            ColumnType::Int4 => 11,        // -2147483648
            ColumnType::Int8 => 20,        // -9223372036854775808
            ColumnType::Bool => 5,         // false
            ColumnType::Date => 16,        // 5874897-12-31, 4713-01-01 BC, -infinity
            ColumnType::Time => 15,        // 24:00:00.000000
            ColumnType::Timestamp => 32,   // 294276-12-31 23:59:59.999999, BC
            ColumnType::Timestamptz => 42, // + time zone offset +14:59:59
            ColumnType::Uuid => 36,
            ColumnType::Float4 => 16, // -3.40282347e+38
            ColumnType::Float8 => 25, // -2.2250738585072014e-308
            ColumnType::Varchar if typmod >= VARHDRSZ => {
                // n characters, up to 4 bytes each in UTF-8.
                4 * (typmod - VARHDRSZ) as usize
            }
            ColumnType::Numeric if typmod >= VARHDRSZ => {
                let (precision, scale) = numeric_precision_scale(typmod);
                // digits, sign, point, a leading "0." and zeros a scale beyond the precision adds.
                precision.max(scale).max(0) as usize + 4
            }
            _ => return None,
        };
        Some(bound)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A logical type with its modifier: `varchar(64)`, `numeric(10,2)`, `date`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TypeSpec {
    /// The type.
    pub ty: ColumnType,
    /// The type modifier as PostgreSQL stores it in `pg_attribute.atttypmod`
    /// and sends it in `RowDescription`: `-1` for none, `n + 4` for
    /// `varchar(n)`, `((p << 16) | s) + 4` for `numeric(p,s)`.
    pub typmod: i32,
}

impl TypeSpec {
    /// A type without a modifier.
    pub const fn plain(ty: ColumnType) -> Self {
        TypeSpec { ty, typmod: -1 }
    }

    /// Parse a policy `type` value: a name from [`ColumnType`] (any listed
    /// spelling, any ASCII case), with `(n)` after `varchar` /
    /// `character varying` or `(p)` / `(p,s)` after `numeric` / `decimal`.
    pub fn parse(src: &str) -> Result<Self, TypeError> {
        let (base, modifier) = match src.find('(') {
            Some(open) => {
                let rest = src[open + 1..].trim_end();
                let Some(inner) = rest.strip_suffix(')') else {
                    return Err(TypeError::BadModifier {
                        given: src.to_owned(),
                        reason: "expected a closing ) at the end".to_owned(),
                    });
                };
                (&src[..open], Some(inner))
            }
            None => (src, None),
        };
        let Some(ty) = ColumnType::from_name(base) else {
            return Err(TypeError::Unknown {
                given: src.to_owned(),
            });
        };
        let Some(modifier) = modifier else {
            return Ok(TypeSpec::plain(ty));
        };
        let numbers: Vec<&str> = modifier.split(',').map(str::trim).collect();
        let bad = |reason: String| TypeError::BadModifier {
            given: src.to_owned(),
            reason,
        };
        let parse_int = |s: &str| {
            s.parse::<i32>()
                .map_err(|_| bad(format!("{s:?} is not an integer")))
        };
        match (ty, numbers.as_slice()) {
            (ColumnType::Varchar, [n]) => {
                let n = parse_int(n)?;
                if !(1..=MAX_VARCHAR_LEN).contains(&n) {
                    return Err(bad(format!(
                        "length must be between 1 and {MAX_VARCHAR_LEN}"
                    )));
                }
                Ok(TypeSpec {
                    ty,
                    typmod: n + VARHDRSZ,
                })
            }
            (ColumnType::Numeric, [p]) | (ColumnType::Numeric, [p, _]) => {
                let precision = parse_int(p)?;
                let scale = match numbers.get(1) {
                    Some(s) => parse_int(s)?,
                    None => 0,
                };
                if !(1..=MAX_NUMERIC_PRECISION).contains(&precision) {
                    return Err(bad(format!(
                        "precision must be between 1 and {MAX_NUMERIC_PRECISION}"
                    )));
                }
                if !(-1000..=1000).contains(&scale) {
                    return Err(bad("scale must be between -1000 and 1000".to_owned()));
                }
                Ok(TypeSpec {
                    ty,
                    typmod: ((precision << 16) | (scale & 0x7ff)) + VARHDRSZ,
                })
            }
            (ColumnType::Varchar, _) => Err(bad("expected varchar(n)".to_owned())),
            (ColumnType::Numeric, _) => Err(bad("expected numeric(p) or numeric(p,s)".to_owned())),
            _ => Err(TypeError::NoModifier { ty }),
        }
    }

    /// `n` of `varchar(n)`.
    pub fn varchar_length(&self) -> Option<u32> {
        (self.ty == ColumnType::Varchar && self.typmod >= VARHDRSZ)
            .then(|| (self.typmod - VARHDRSZ) as u32)
    }

    /// `(p, s)` of `numeric(p,s)`.
    pub fn numeric_precision_scale(&self) -> Option<(i32, i32)> {
        (self.ty == ColumnType::Numeric && self.typmod >= VARHDRSZ)
            .then(|| numeric_precision_scale(self.typmod))
    }
}

impl fmt::Display for TypeSpec {
    /// Canonical spelling: `varchar(64)`, `numeric(10,2)`, `int4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ty.name())?;
        if let Some(n) = self.varchar_length() {
            write!(f, "({n})")?;
        } else if let Some((p, s)) = self.numeric_precision_scale() {
            write!(f, "({p},{s})")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for TypeSpec {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TypeSpec::parse(s)
    }
}

/// Why a policy `type` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TypeError {
    /// Not a supported type name.
    #[error("unknown type {given:?}; accepted types: {}", accepted_types())]
    Unknown {
        /// What the policy said.
        given: String,
    },
    /// A modifier on a type that takes none, e.g. `text(10)`.
    #[error("type {ty} takes no (…) modifier; only varchar(n) and numeric(p,s) do")]
    NoModifier {
        /// The type.
        ty: ColumnType,
    },
    /// A malformed or out-of-range modifier.
    #[error("bad type modifier in {given:?}: {reason}")]
    BadModifier {
        /// What the policy said.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Every accepted spelling, for error messages and documentation.
pub fn accepted_types() -> String {
    let mut out = Vec::new();
    for ty in ColumnType::ALL {
        let mut names = vec![ty.name().to_owned()];
        names.extend(ty.aliases().iter().map(|a| (*a).to_owned()));
        match ty {
            ColumnType::Varchar => names.push("varchar(n)".to_owned()),
            ColumnType::Numeric => names.push("numeric(p,s)".to_owned()),
            _ => {}
        }
        out.push(names.join("/"));
    }
    out.join(", ")
}

fn numeric_precision_scale(typmod: i32) -> (i32, i32) {
    let raw = typmod - VARHDRSZ;
    let precision = (raw >> 16) & 0xffff;
    // The scale is an 11-bit two's-complement field (PostgreSQL 15+).
    let scale = ((raw & 0x7ff) ^ 1024) - 1024;
    (precision, scale)
}

fn normalize_spaces(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_oids() {
        let expect = [
            ("text", 25),
            ("varchar", 1043),
            ("int2", 21),
            ("int4", 23),
            ("int8", 20),
            ("numeric", 1700),
            ("float4", 700),
            ("float8", 701),
            ("bool", 16),
            ("date", 1082),
            ("time", 1083),
            ("timestamp", 1114),
            ("timestamptz", 1184),
            ("uuid", 2950),
            ("json", 114),
            ("jsonb", 3802),
            ("bytea", 17),
        ];
        for (ty, (name, oid)) in ColumnType::ALL.into_iter().zip(expect) {
            assert_eq!(ty.name(), name);
            assert_eq!(ty.type_oid(), oid, "{name}");
            assert_eq!(ColumnType::from_name(name), Some(ty));
        }
    }

    #[test]
    fn aliases_and_case() {
        for (given, ty) in [
            ("smallint", ColumnType::Int2),
            ("INTEGER", ColumnType::Int4),
            ("int", ColumnType::Int4),
            ("BigInt", ColumnType::Int8),
            ("decimal", ColumnType::Numeric),
            ("real", ColumnType::Float4),
            ("double   precision", ColumnType::Float8),
            ("boolean", ColumnType::Bool),
            ("character varying", ColumnType::Varchar),
            ("timestamp with time zone", ColumnType::Timestamptz),
            ("timestamp without time zone", ColumnType::Timestamp),
            ("time without time zone", ColumnType::Time),
        ] {
            assert_eq!(TypeSpec::parse(given), Ok(TypeSpec::plain(ty)), "{given}");
        }
    }

    #[test]
    fn modifiers() {
        let v = TypeSpec::parse("varchar(64)").unwrap();
        assert_eq!((v.ty, v.typmod), (ColumnType::Varchar, 68));
        assert_eq!(v.varchar_length(), Some(64));
        assert_eq!(v.to_string(), "varchar(64)");
        let v = TypeSpec::parse("character varying ( 11 )").unwrap();
        assert_eq!(v.varchar_length(), Some(11));
        let n = TypeSpec::parse("numeric(10,2)").unwrap();
        assert_eq!(n.typmod, ((10 << 16) | 2) + 4);
        assert_eq!(n.numeric_precision_scale(), Some((10, 2)));
        assert_eq!(n.to_string(), "numeric(10,2)");
        let n = TypeSpec::parse("decimal(5)").unwrap();
        assert_eq!(n.numeric_precision_scale(), Some((5, 0)));
        let n = TypeSpec::parse("numeric(5,-2)").unwrap();
        assert_eq!(n.numeric_precision_scale(), Some((5, -2)));
        assert_eq!(TypeSpec::parse("text").unwrap().to_string(), "text");
    }

    #[test]
    fn bad_types() {
        assert!(matches!(
            TypeSpec::parse("strng"),
            Err(TypeError::Unknown { .. })
        ));
        assert!(matches!(
            TypeSpec::parse("timetz"),
            Err(TypeError::Unknown { .. })
        ));
        assert_eq!(
            TypeSpec::parse("text(10)"),
            Err(TypeError::NoModifier {
                ty: ColumnType::Text
            })
        );
        for bad in [
            "varchar(0)",
            "varchar(x)",
            "varchar(1,2)",
            "varchar(10485761)",
            "varchar(10",
            "numeric(0)",
            "numeric(1001)",
            "numeric(10,2,3)",
            "numeric(5,1001)",
        ] {
            assert!(
                matches!(TypeSpec::parse(bad), Err(TypeError::BadModifier { .. })),
                "{bad}"
            );
        }
        let msg = TypeSpec::parse("strng").unwrap_err().to_string();
        assert!(msg.starts_with("unknown type \"strng\"; accepted types: text, varchar/character varying/varchar(n), int2/smallint"), "{msg}");
        assert!(msg.contains("float8/double precision"));
    }

    #[test]
    fn key_compatibility() {
        use ColumnType::*;
        assert!(Text.key_compatible(Varchar));
        assert!(Int4.key_compatible(Int8));
        assert!(Date.key_compatible(Date));
        assert!(!Text.key_compatible(Int4));
        assert!(!Json.key_compatible(Jsonb));
        assert!(!Timestamp.key_compatible(Timestamptz));
    }

    #[test]
    fn text_bounds() {
        assert_eq!(ColumnType::Int4.max_text_bytes(-1), Some(11));
        assert_eq!(ColumnType::Text.max_text_bytes(-1), None);
        assert_eq!(ColumnType::Varchar.max_text_bytes(-1), None);
        assert_eq!(ColumnType::Varchar.max_text_bytes(64 + 4), Some(256));
        assert_eq!(ColumnType::Numeric.max_text_bytes(-1), None);
        let n = TypeSpec::parse("numeric(10,2)").unwrap();
        assert_eq!(ColumnType::Numeric.max_text_bytes(n.typmod), Some(14));
    }
}

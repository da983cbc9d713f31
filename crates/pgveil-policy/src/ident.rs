//! SQL identifiers as PostgreSQL reads them.
//!
//! PostgreSQL folds unquoted identifiers to lower case (ASCII letters only,
//! as it does in UTF-8 databases) and keeps double-quoted identifiers exactly,
//! with `""` standing for one `"` inside the quotes
//! (<https://www.postgresql.org/docs/current/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS>).
//! An [`Ident`] holds the name *after* that normalisation — the spelling the
//! catalog stores in `pg_class.relname` / `pg_attribute.attname` — and its
//! `Display` quotes it back only where PostgreSQL's `quote_ident()` would.

use std::borrow::Borrow;
use std::fmt;

use thiserror::Error;

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); longer names are
/// silently truncated by the server, so the policy refuses them.
pub const MAX_IDENT_BYTES: usize = 63;

/// The schema an unqualified table name means.
pub const DEFAULT_SCHEMA: &str = "public";

/// Keywords that `quote_ident()` quotes: every PostgreSQL 15 keyword whose
/// category is not "unreserved" (`SELECT word FROM pg_get_keywords() WHERE
/// catcode <> 'U'`). Sorted, for binary search.
const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// Why a name is not a valid (qualified) identifier.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentError {
    /// Nothing, or only white space, where a name was expected.
    #[error("empty name")]
    Empty,
    /// `""`: PostgreSQL rejects zero-length quoted identifiers.
    #[error("zero-length quoted name \"\"")]
    EmptyQuoted,
    /// A `"` with no closing `"`.
    #[error("unterminated quoted name (missing closing \")")]
    UnterminatedQuote,
    /// A character that cannot start or continue an unquoted identifier.
    #[error(
        "unexpected {ch:?} at byte {at}; unquoted names are letters, digits, _ and $ \
         (quote other names: \"\\\"My Name\\\"\")"
    )]
    UnexpectedChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the input.
        at: usize,
    },
    /// NUL cannot appear in a PostgreSQL name.
    #[error("names cannot contain NUL")]
    Nul,
    /// Longer than [`MAX_IDENT_BYTES`].
    #[error("{name:?} is {len} bytes long; PostgreSQL truncates names to 63 bytes")]
    TooLong {
        /// The normalised name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Wrong number of dot-separated parts.
    #[error("expected {expected}, found {found} dot-separated part(s)")]
    Parts {
        /// What the caller accepts, e.g. "table or schema.table".
        expected: &'static str,
        /// How many parts there were.
        found: usize,
    },
}

/// One SQL identifier after PostgreSQL's normalisation (folded if it was
/// unquoted, exact if it was quoted).
///
/// Ordering, equality and hashing compare the normalised name, so `FirstName`
/// and `firstname` are equal while `"FirstName"` is not.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

impl Ident {
    /// Parse one SQL identifier token: `name` (folded to lower case) or
    /// `"Name"` (kept; `""` is one `"`). Surrounding white space is ignored.
    pub fn parse(sql: &str) -> Result<Self, IdentError> {
        let parts = split_qualified(sql)?;
        match <[Ident; 1]>::try_from(parts) {
            Ok([ident]) => Ok(ident),
            Err(parts) => Err(IdentError::Parts {
                expected: "a single name",
                found: parts.len(),
            }),
        }
    }

    /// An identifier from its normalised form, as the catalog stores it
    /// (no folding, no quote processing). Checks length and NUL only.
    pub fn from_normalized(name: impl Into<String>) -> Result<Self, IdentError> {
        let name = name.into();
        validate_normalized(&name)?;
        Ok(Ident(name))
    }

    /// The normalised name (what `pg_class.relname` / `pg_attribute.attname` hold).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `quote_ident()` would quote this name.
    pub fn needs_quotes(&self) -> bool {
        needs_quotes(&self.0)
    }

    /// The name as SQL would write it: quoted only when needed.
    pub fn quoted(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Ident {
    /// Writes the name the way `quote_ident()` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.needs_quotes() {
            return f.write_str(&self.0);
        }
        f.write_str("\"")?;
        for (i, piece) in self.0.split('"').enumerate() {
            if i > 0 {
                f.write_str("\"\"")?;
            }
            f.write_str(piece)?;
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({})", self)
    }
}

/// For map lookups by catalog spelling. (No `AsRef<str>`: the quoted form
/// from `Display` and the raw name must not be confused.)
impl Borrow<str> for Ident {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Ident {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ident::parse(s)
    }
}

/// A table: `schema.table`, both normalised.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct QualifiedTable {
    /// The schema (namespace); `public` when the name was unqualified.
    pub schema: Ident,
    /// The table name.
    pub table: Ident,
}

impl QualifiedTable {
    /// A table from its parts.
    pub fn new(schema: Ident, table: Ident) -> Self {
        QualifiedTable { schema, table }
    }

    /// Parse `table` (schema `public`) or `schema.table`, with PostgreSQL's
    /// quoting rules for each part: `public."Patients"`, `"odd.schema"."t"`.
    pub fn parse(sql: &str) -> Result<Self, IdentError> {
        let mut parts = split_qualified(sql)?;
        match parts.len() {
            1 => Ok(QualifiedTable {
                schema: Ident(DEFAULT_SCHEMA.to_owned()),
                table: parts.remove(0),
            }),
            2 => {
                let table = parts.remove(1);
                Ok(QualifiedTable {
                    schema: parts.remove(0),
                    table,
                })
            }
            found => Err(IdentError::Parts {
                expected: "table or schema.table",
                found,
            }),
        }
    }

    /// A column of this table.
    pub fn column(&self, column: Ident) -> ColumnRef {
        ColumnRef {
            schema: self.schema.clone(),
            table: self.table.clone(),
            column,
        }
    }
}

impl fmt::Display for QualifiedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

impl std::str::FromStr for QualifiedTable {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QualifiedTable::parse(s)
    }
}

/// A column: `schema.table.column`, all normalised.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ColumnRef {
    /// The schema (namespace).
    pub schema: Ident,
    /// The table name.
    pub table: Ident,
    /// The column name.
    pub column: Ident,
}

impl ColumnRef {
    /// A column from its parts.
    pub fn new(schema: Ident, table: Ident, column: Ident) -> Self {
        ColumnRef {
            schema,
            table,
            column,
        }
    }

    /// Parse `schema.table.column`, or `table.column` meaning schema `public`.
    pub fn parse(sql: &str) -> Result<Self, IdentError> {
        let mut parts = split_qualified(sql)?;
        let (schema, table, column) = match parts.len() {
            2 => {
                let column = parts.pop();
                let table = parts.pop();
                (Some(Ident(DEFAULT_SCHEMA.to_owned())), table, column)
            }
            3 => {
                let column = parts.pop();
                let table = parts.pop();
                (parts.pop(), table, column)
            }
            found => {
                return Err(IdentError::Parts {
                    expected: "schema.table.column",
                    found,
                })
            }
        };
        match (schema, table, column) {
            (Some(schema), Some(table), Some(column)) => Ok(ColumnRef {
                schema,
                table,
                column,
            }),
            // Unreachable: the lengths were checked above.
            _ => Err(IdentError::Empty),
        }
    }

    /// The table this column belongs to.
    pub fn table_ref(&self) -> QualifiedTable {
        QualifiedTable {
            schema: self.schema.clone(),
            table: self.table.clone(),
        }
    }
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.schema, self.table, self.column)
    }
}

impl std::str::FromStr for ColumnRef {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ColumnRef::parse(s)
    }
}

/// Quote `name` (already normalised) the way PostgreSQL's `quote_ident()` does.
pub fn quote_ident(name: &str) -> String {
    Ident(name.to_owned()).to_string()
}

fn needs_quotes(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return true;
    };
    if !(first.is_ascii_lowercase() || first == b'_') {
        return true;
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return true;
    }
    QUOTED_KEYWORDS.binary_search(&name).is_ok()
}

fn validate_normalized(name: &str) -> Result<(), IdentError> {
    if name.is_empty() {
        return Err(IdentError::Empty);
    }
    if name.contains('\0') {
        return Err(IdentError::Nul);
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(IdentError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    Ok(())
}

/// White space as PostgreSQL's lexer sees it (ASCII only: a non-ASCII
/// character such as U+00A0 is part of an identifier, not a separator).
fn is_sql_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_cont(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
}

/// Split a possibly qualified name (`a.b.c`, any part quoted) into normalised
/// identifiers. White space around parts and dots is allowed, as in SQL.
pub(crate) fn split_qualified(sql: &str) -> Result<Vec<Ident>, IdentError> {
    let mut parts = Vec::new();
    let mut chars = sql.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| is_sql_space(*c)).is_some() {}
        let name = match chars.next() {
            None => return Err(IdentError::Empty),
            Some((_, '"')) => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        None => return Err(IdentError::UnterminatedQuote),
                        Some((_, '"')) => {
                            if chars.next_if(|(_, c)| *c == '"').is_some() {
                                name.push('"');
                            } else {
                                break;
                            }
                        }
                        Some((_, c)) => name.push(c),
                    }
                }
                if name.is_empty() {
                    return Err(IdentError::EmptyQuoted);
                }
                name
            }
            Some((_, c)) if is_ident_start(c) => {
                let mut name = String::new();
                name.push(c.to_ascii_lowercase());
                while let Some((_, c)) = chars.next_if(|(_, c)| is_ident_cont(*c)) {
                    name.push(c.to_ascii_lowercase());
                }
                name
            }
            Some((_, '\0')) => return Err(IdentError::Nul),
            Some((at, '.')) if parts.is_empty() => {
                return Err(IdentError::UnexpectedChar { ch: '.', at })
            }
            Some((_, '.')) => return Err(IdentError::Empty),
            Some((at, ch)) => return Err(IdentError::UnexpectedChar { ch, at }),
        };
        validate_normalized(&name)?;
        parts.push(Ident(name));
        while chars.next_if(|(_, c)| is_sql_space(*c)).is_some() {}
        match chars.next() {
            None => return Ok(parts),
            Some((_, '.')) => continue,
            Some((_, '\0')) => return Err(IdentError::Nul),
            Some((at, ch)) => return Err(IdentError::UnexpectedChar { ch, at }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Ident {
        Ident::from_normalized(s).unwrap()
    }

    #[test]
    fn keywords_are_sorted() {
        assert!(QUOTED_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unquoted_folds_quoted_keeps() {
        assert_eq!(Ident::parse("FirstName").unwrap().as_str(), "firstname");
        assert_eq!(Ident::parse("\"FirstName\"").unwrap().as_str(), "FirstName");
        assert_eq!(Ident::parse("  ssn ").unwrap().as_str(), "ssn");
        assert_eq!(Ident::parse("\"a\"\"b\"").unwrap().as_str(), "a\"b");
        assert_eq!(Ident::parse("\"a.b\"").unwrap().as_str(), "a.b");
        assert_eq!(
            Ident::parse("\"with space\"").unwrap().as_str(),
            "with space"
        );
        assert_eq!(Ident::parse("col$1").unwrap().as_str(), "col$1");
        assert_eq!(Ident::parse("_x9").unwrap().as_str(), "_x9");
        // Only ASCII folds, as in a UTF-8 database.
        assert_eq!(Ident::parse("ÄrzteX").unwrap().as_str(), "Ärztex");
    }

    #[test]
    fn invalid_identifiers() {
        assert_eq!(Ident::parse(""), Err(IdentError::Empty));
        assert_eq!(Ident::parse("   "), Err(IdentError::Empty));
        assert_eq!(Ident::parse("\"\""), Err(IdentError::EmptyQuoted));
        assert_eq!(Ident::parse("\"abc"), Err(IdentError::UnterminatedQuote));
        assert_eq!(
            Ident::parse("1abc"),
            Err(IdentError::UnexpectedChar { ch: '1', at: 0 })
        );
        assert_eq!(
            Ident::parse("first name"),
            Err(IdentError::UnexpectedChar { ch: 'n', at: 6 })
        );
        assert_eq!(
            Ident::parse("a.b"),
            Err(IdentError::Parts {
                expected: "a single name",
                found: 2
            })
        );
        assert_eq!(Ident::parse("a\0b"), Err(IdentError::Nul));
        let long = "a".repeat(64);
        assert!(matches!(
            Ident::parse(&long),
            Err(IdentError::TooLong { len: 64, .. })
        ));
        assert!(Ident::parse(&"a".repeat(63)).is_ok());
        // 63 bytes counted in UTF-8, not characters.
        assert!(matches!(
            Ident::parse(&"é".repeat(32)),
            Err(IdentError::TooLong { len: 64, .. })
        ));
    }

    #[test]
    fn display_quotes_like_quote_ident() {
        for (name, shown) in [
            ("patients", "patients"),
            ("Patients", "\"Patients\""),
            ("first name", "\"first name\""),
            ("a\"b", "\"a\"\"b\""),
            ("a.b", "\"a.b\""),
            ("1abc", "\"1abc\""),
            ("_ok_1", "_ok_1"),
            ("user", "\"user\""),
            ("select", "\"select\""),
            ("table", "\"table\""),
            // Unreserved keywords stay bare, as quote_ident() leaves them.
            ("name", "name"),
            ("date", "date"),
            ("text", "text"),
            ("col$", "\"col$\""),
            ("é", "\"é\""),
        ] {
            assert_eq!(id(name).to_string(), shown, "{name}");
            // Round trip: what Display writes parses back to the same name.
            assert_eq!(Ident::parse(shown).unwrap(), id(name), "{shown}");
        }
    }

    #[test]
    fn qualified_tables() {
        let t = QualifiedTable::parse("patients").unwrap();
        assert_eq!(
            (t.schema.as_str(), t.table.as_str()),
            ("public", "patients")
        );
        let t = QualifiedTable::parse("Clinic.Patients").unwrap();
        assert_eq!(
            (t.schema.as_str(), t.table.as_str()),
            ("clinic", "patients")
        );
        let t = QualifiedTable::parse("public.\"Patients\"").unwrap();
        assert_eq!(t.table.as_str(), "Patients");
        assert_eq!(t.to_string(), "public.\"Patients\"");
        let t = QualifiedTable::parse("\"my.schema\".\"a.b\"").unwrap();
        assert_eq!((t.schema.as_str(), t.table.as_str()), ("my.schema", "a.b"));
        assert_eq!(t.to_string(), "\"my.schema\".\"a.b\"");
        let t = QualifiedTable::parse(" public . patients ").unwrap();
        assert_eq!(t.to_string(), "public.patients");
        assert_eq!(
            QualifiedTable::parse("a.b.c"),
            Err(IdentError::Parts {
                expected: "table or schema.table",
                found: 3
            })
        );
        assert_eq!(QualifiedTable::parse("public."), Err(IdentError::Empty));
        assert_eq!(QualifiedTable::parse("public..x"), Err(IdentError::Empty));
        assert!(matches!(
            QualifiedTable::parse(".x"),
            Err(IdentError::UnexpectedChar { ch: '.', at: 0 })
        ));
        assert!(matches!(
            QualifiedTable::parse("\"a\"b"),
            Err(IdentError::UnexpectedChar { ch: 'b', .. })
        ));
    }

    #[test]
    fn column_refs() {
        let c = ColumnRef::parse("public.patients.ssn").unwrap();
        assert_eq!(c.to_string(), "public.patients.ssn");
        assert_eq!(c.table_ref(), QualifiedTable::parse("patients").unwrap());
        let c = ColumnRef::parse("patients.SSN").unwrap();
        assert_eq!(c.to_string(), "public.patients.ssn");
        let c = ColumnRef::parse("s.\"T\".\"Col.With.Dots\"").unwrap();
        assert_eq!(c.column.as_str(), "Col.With.Dots");
        assert_eq!(c.to_string(), "s.\"T\".\"Col.With.Dots\"");
        assert_eq!(ColumnRef::parse(&c.to_string()).unwrap(), c);
        assert!(matches!(
            ColumnRef::parse("ssn"),
            Err(IdentError::Parts { found: 1, .. })
        ));
        assert!(matches!(
            ColumnRef::parse("a.b.c.d"),
            Err(IdentError::Parts { found: 4, .. })
        ));
    }

    #[test]
    fn only_ascii_white_space_separates() {
        assert_eq!(Ident::parse("\tssn\n").unwrap().as_str(), "ssn");
        assert_eq!(Ident::parse("ssn\u{a0}").unwrap().as_str(), "ssn\u{a0}");
    }

    proptest::proptest! {
        /// Any catalog name survives Display (quote_ident) and parsing back.
        #[test]
        fn quoting_round_trips(name in "[^\0]{1,40}", schema in "[a-z_\"A-Z. ]{1,10}") {
            proptest::prop_assume!(name.len() <= MAX_IDENT_BYTES);
            let ident = Ident::from_normalized(name).unwrap();
            proptest::prop_assert_eq!(Ident::parse(&ident.to_string()).unwrap(), ident.clone());
            let table = QualifiedTable::new(Ident::from_normalized(schema).unwrap(), ident.clone());
            proptest::prop_assert_eq!(QualifiedTable::parse(&table.to_string()).unwrap(), table.clone());
            let column = table.column(ident);
            proptest::prop_assert_eq!(ColumnRef::parse(&column.to_string()).unwrap(), column);
        }

        /// Folding an unquoted name is ASCII lower-casing.
        #[test]
        fn unquoted_names_fold(name in "[A-Za-z_][A-Za-z0-9_$]{0,30}") {
            let folded = Ident::parse(&name).unwrap();
            proptest::prop_assert_eq!(folded.as_str(), name.to_ascii_lowercase());
        }
    }

    #[test]
    fn equality_is_on_normalised_names() {
        assert_eq!(Ident::parse("FirstName"), Ident::parse("firstname"));
        assert_ne!(Ident::parse("\"FirstName\""), Ident::parse("FirstName"));
        assert_eq!(Ident::parse("\"firstname\""), Ident::parse("FirstName"));
    }
}

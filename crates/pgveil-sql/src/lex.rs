//! A small PostgreSQL lexer used where sqlparser cannot help: splitting a
//! simple-protocol query string into statements with exact byte spans,
//! fingerprinting (it must work on text that does not parse), converting
//! sqlparser's line/column locations to byte offsets, and re-checking a
//! literal's text against the parser's decoded value.
//!
//! Lexical rules: <https://www.postgresql.org/docs/current/sql-syntax-lexical.html>.

use std::ops::Range;

/// A token class: only what the callers need to distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Space,
    Comment,
    Word,
    QuotedIdent,
    /// `'…'`, `E'…'`, `U&'…'`, `B'…'`, `X'…'`, `N'…'`.
    String,
    /// `$tag$…$tag$`.
    Dollar,
    Number,
    /// `$1`.
    Param,
    Semicolon,
    Punct,
    /// A string, quoted identifier or comment with no end: the rest of the text.
    Unterminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tok {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_cont(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// Tokenise `sql`. Never fails: malformed input ends in an
/// [`Kind::Unterminated`] token.
pub(crate) fn tokens(sql: &str) -> Vec<Tok> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = sql[i..].chars().next().unwrap_or('\0');
        let kind = if c.is_whitespace() {
            i += c.len_utf8();
            while let Some(c) = sql[i..].chars().next() {
                if !c.is_whitespace() {
                    break;
                }
                i += c.len_utf8();
            }
            Kind::Space
        } else if b[i..].starts_with(b"--") {
            // PostgreSQL's scanner ends a `--` comment at \n or \r.
            i = sql[i..].find(['\n', '\r']).map_or(b.len(), |n| i + n);
            Kind::Comment
        } else if b[i..].starts_with(b"/*") {
            // PostgreSQL block comments nest.
            let mut depth = 0usize;
            let mut done = false;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        done = true;
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            if done {
                Kind::Comment
            } else {
                i = b.len();
                Kind::Unterminated
            }
        } else if c == '\'' {
            match scan_quoted(b, i, b'\'', false) {
                Some(e) => {
                    i = e;
                    Kind::String
                }
                None => {
                    i = b.len();
                    Kind::Unterminated
                }
            }
        } else if c == '"' {
            match scan_quoted(b, i, b'"', false) {
                Some(e) => {
                    i = e;
                    Kind::QuotedIdent
                }
                None => {
                    i = b.len();
                    Kind::Unterminated
                }
            }
        } else if is_ident_start(c) {
            // String prefixes: E'…' (backslash escapes), U&'…', B'…', X'…', N'…'.
            let lower = c.to_ascii_lowercase();
            let next = b.get(i + 1).copied();
            if matches!(lower, 'e' | 'b' | 'x' | 'n') && next == Some(b'\'') {
                match scan_quoted(b, i + 1, b'\'', lower == 'e') {
                    Some(e) => {
                        i = e;
                        Kind::String
                    }
                    None => {
                        i = b.len();
                        Kind::Unterminated
                    }
                }
            } else if lower == 'u'
                && next == Some(b'&')
                && matches!(b.get(i + 2), Some(b'\'' | b'"'))
            {
                let q = b[i + 2];
                match scan_quoted(b, i + 2, q, false) {
                    Some(e) => {
                        i = e;
                        if q == b'\'' {
                            Kind::String
                        } else {
                            Kind::QuotedIdent
                        }
                    }
                    None => {
                        i = b.len();
                        Kind::Unterminated
                    }
                }
            } else {
                i += c.len_utf8();
                while let Some(c) = sql[i..].chars().next() {
                    if !is_ident_cont(c) {
                        break;
                    }
                    i += c.len_utf8();
                }
                Kind::Word
            }
        } else if c == '$' {
            if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                Kind::Param
            } else if let Some(tag_end) = dollar_tag(sql, i) {
                let tag = &sql[i..tag_end];
                match sql[tag_end..].find(tag) {
                    Some(n) => {
                        i = tag_end + n + tag.len();
                        Kind::Dollar
                    }
                    None => {
                        i = b.len();
                        Kind::Unterminated
                    }
                }
            } else {
                i += 1;
                Kind::Punct
            }
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            i += 1;
            while i < b.len() {
                let d = b[i];
                let sign = (d == b'+' || d == b'-') && matches!(b[i - 1], b'e' | b'E');
                let dot = d == b'.' && b.get(i + 1).is_none_or(|n| *n != b'.');
                if d.is_ascii_alphanumeric() || d == b'_' || dot || sign {
                    i += 1;
                } else {
                    break;
                }
            }
            Kind::Number
        } else if c == ';' {
            i += 1;
            Kind::Semicolon
        } else {
            i += c.len_utf8();
            Kind::Punct
        };
        out.push(Tok {
            kind,
            start,
            end: i,
        });
    }
    out
}

/// End of a quoted token starting at `open` (the quote), or `None` if it
/// never closes. A doubled quote is one quote; `backslash` enables `E''`
/// escapes.
fn scan_quoted(b: &[u8], open: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut i = open + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// `$tag$` starting at `i`: the end of the opening tag.
fn dollar_tag(sql: &str, i: usize) -> Option<usize> {
    let rest = &sql[i + 1..];
    let mut n = 0;
    for (k, c) in rest.char_indices() {
        if c == '$' {
            return Some(i + 1 + k + 1);
        }
        let ok = if k == 0 {
            is_ident_start(c)
        } else {
            is_ident_cont(c) && c != '$'
        };
        if !ok {
            return None;
        }
        n = k;
    }
    let _ = n;
    None
}

/// Whether `sql` has a `U&"…"` identifier (Unicode escapes can spell any
/// name, so no text pre-filter can see which table or column it is).
pub(crate) fn has_unicode_ident(sql: &str) -> bool {
    memchr::memmem::find(sql.as_bytes(), b"&\"").is_some()
        && tokens(sql)
            .iter()
            .any(|t| t.kind == Kind::QuotedIdent && sql.as_bytes()[t.start] != b'"')
}

/// The text of every `E'…'` and `U&'…'` string in `sql` with its escapes
/// decoded (`\\x41`, `\\101`, `\\u0041`, `U&'\\0041'`), for the pre-filter:
/// escapes can spell a protected table's name inside a `DO` block or a
/// function body. `None` when a `UESCAPE` clause is present (decoding
/// would need the grammar): callers treat that as a mention.
pub(crate) fn decoded_escaped_strings(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    if memchr::memchr(b'\\', b).is_none() {
        return Some(String::new());
    }
    let mut out = String::new();
    for t in tokens(sql) {
        if !matches!(t.kind, Kind::String | Kind::Unterminated) {
            continue;
        }
        let tok = &sql[t.start..t.end];
        let lower = tok
            .get(..2)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let (unicode, body) = if lower == "e'" {
            (false, &tok[2..])
        } else if lower == "u&" {
            if sql.to_ascii_lowercase().contains("uescape") {
                return None;
            }
            (true, tok.get(3..).unwrap_or(""))
        } else {
            continue;
        };
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let take_hex = |chars: &mut std::iter::Peekable<std::str::Chars>, max: usize| {
                let mut v = 0u32;
                let mut n = 0;
                while n < max {
                    match chars.peek().and_then(|d| d.to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            chars.next();
                            n += 1;
                        }
                        None => break,
                    }
                }
                char::from_u32(v)
            };
            let decoded = match (unicode, chars.peek().copied()) {
                (true, Some('+')) => {
                    chars.next();
                    take_hex(&mut chars, 6)
                }
                (true, Some(d)) if d.is_ascii_hexdigit() => take_hex(&mut chars, 4),
                (false, Some('x')) => {
                    chars.next();
                    take_hex(&mut chars, 2)
                }
                (false, Some('u')) => {
                    chars.next();
                    take_hex(&mut chars, 4)
                }
                (false, Some('U')) => {
                    chars.next();
                    take_hex(&mut chars, 8)
                }
                (false, Some(d)) if d.is_digit(8) => {
                    let mut v = 0u32;
                    for _ in 0..3 {
                        match chars.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                chars.next();
                            }
                            None => break,
                        }
                    }
                    char::from_u32(v)
                }
                (_, Some(other)) => {
                    chars.next();
                    Some(other)
                }
                (_, None) => None,
            };
            out.extend(decoded);
        }
        out.push(' ');
    }
    Some(out)
}

/// Split a query string on top-level `;`: the byte span of each statement,
/// trimmed of surrounding white space and comments, skipping empty ones.
pub(crate) fn split_statements(sql: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut first: Option<usize> = None;
    let mut last = 0;
    for t in tokens(sql) {
        match t.kind {
            Kind::Space | Kind::Comment => {}
            Kind::Semicolon => {
                if let Some(f) = first.take() {
                    out.push(f..last);
                }
            }
            _ => {
                first.get_or_insert(t.start);
                last = t.end;
            }
        }
    }
    if let Some(f) = first {
        out.push(f..last);
    }
    out
}

/// The statement with every literal replaced by `?`: see [`crate::fingerprint`].
pub(crate) fn fingerprint(sql: &str) -> String {
    fingerprint_tokens(sql, &tokens(sql))
}

/// [`fingerprint`] from `sql`'s tokens, already lexed.
pub(crate) fn fingerprint_tokens(sql: &str, toks: &[Tok]) -> String {
    let significant: Vec<usize> = (0..toks.len())
        .filter(|&i| !matches!(toks[i].kind, Kind::Space | Kind::Comment))
        .collect();
    let text = |i: usize| &sql[toks[i].start..toks[i].end];
    let mut out = String::with_capacity(sql.len());
    let mut pending_space = false;
    let mut k: usize = 0; // position of the current token in `significant`
    for (i, t) in toks.iter().enumerate() {
        let piece = match t.kind {
            Kind::Space | Kind::Comment => {
                pending_space = !out.is_empty();
                continue;
            }
            Kind::String | Kind::Dollar | Kind::Number | Kind::Unterminated => "?",
            Kind::QuotedIdent => {
                // A quoted identifier is kept where it can only name
                // something (qualified, or after a keyword introducing a
                // relation or column name); elsewhere it could be a value
                // a client quoted the wrong way: its contents are dropped.
                let prev = k.checked_sub(1).map(|p| text(significant[p]));
                let next = significant.get(k + 1).map(|&n| text(n));
                let named = prev == Some(".")
                    || next == Some(".")
                    || prev
                        .is_some_and(|p| NAME_KEYWORDS.iter().any(|kw| p.eq_ignore_ascii_case(kw)));
                if named {
                    &sql[t.start..t.end]
                } else {
                    "\"?\""
                }
            }
            _ => &sql[t.start..t.end],
        };
        k += 1;
        debug_assert_eq!(significant.get(k - 1), Some(&i));
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push_str(piece);
    }
    out
}

/// Keywords after which a quoted identifier names a relation, column or
/// other object (never a value).
const NAME_KEYWORDS: &[&str] = &[
    "from",
    "join",
    "into",
    "update",
    "table",
    "only",
    "as",
    "index",
    "on",
    "view",
    "schema",
    "sequence",
    "column",
    "constraint",
    "rename",
    "to",
    "exists",
    "type",
    "function",
    "trigger",
];

/// Maps sqlparser locations (1-based line, 1-based column counted in
/// `char`s, lines split on `\n` only) to byte offsets.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of each line's start.
    starts: Vec<usize>,
    /// For text that is not ASCII: the byte offset of every `char` (and
    /// the text's length last), and the index of each line's first `char`.
    /// (Linear time for any number of look-ups: a statement of a million
    /// literals on one line must not cost a scan per literal.)
    chars: Option<(Vec<usize>, Vec<usize>)>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let chars = (!text.is_ascii()).then(|| {
            let mut bytes: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            bytes.push(text.len());
            let line_chars = starts
                .iter()
                .map(|s| bytes.partition_point(|&b| b < *s))
                .collect();
            (bytes, line_chars)
        });
        LineIndex {
            text,
            starts,
            chars,
        }
    }

    /// Byte offset of `line:column`, if inside the text (at most the end of
    /// its line).
    pub fn offset(&self, line: u64, column: u64) -> Option<usize> {
        let line = usize::try_from(line).ok()?.checked_sub(1)?;
        let line_start = *self.starts.get(line)?;
        let line_end = self
            .starts
            .get(line + 1)
            .map_or(self.text.len(), |next| next - 1);
        let col = usize::try_from(column).ok()?.checked_sub(1)?;
        let at = match &self.chars {
            None => line_start.checked_add(col)?,
            Some((bytes, line_chars)) => *bytes.get(line_chars[line].checked_add(col)?)?,
        };
        (at <= line_end).then_some(at)
    }
}

/// Decode the text of a string literal token (`'…'` or `E'…'`) as
/// PostgreSQL would, or `None` for forms pgveil does not rewrite (other
/// prefixes, string continuation across lines, escapes it does not know).
pub(crate) fn decode_string(tok: &str) -> Option<String> {
    let (escapes, body) = match tok.as_bytes().first()? {
        b'\'' => (false, &tok[1..]),
        b'e' | b'E' if tok.as_bytes().get(1) == Some(&b'\'') => (true, &tok[2..]),
        _ => return None,
    };
    let body = body.strip_suffix('\'')?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // Only a doubled quote may appear inside.
                if chars.next() != Some('\'') {
                    return None;
                }
                out.push('\'');
            }
            '\\' if escapes => {
                let e = chars.next()?;
                match e {
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '0'..='7' => {
                        let mut v = e.to_digit(8)?;
                        for _ in 0..2 {
                            match chars.peek().and_then(|d| d.to_digit(8)) {
                                Some(d) => {
                                    v = v * 8 + d;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        if v == 0 || v > 0x7f {
                            return None;
                        }
                        out.push(char::from_u32(v)?);
                    }
                    'x' | 'u' | 'U' => return None,
                    other => out.push(other),
                }
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_comments_end_at_carriage_return() {
        let sql = "SELECT 1 -- note\r; INSERT INTO t VALUES ('x')";
        assert_eq!(split_statements(sql).len(), 2);
        assert!(has_unicode_ident("SELECT U&\"s\\0073n\" FROM t"));
        assert!(!has_unicode_ident("SELECT \"a&\" FROM t"));
    }

    #[test]
    fn splits_and_skips_quotes() {
        let sql = "SELECT ';' ; /* ; */ SELECT $$;$$; -- x;\n";
        let spans = split_statements(sql);
        let texts: Vec<&str> = spans.iter().map(|r| &sql[r.clone()]).collect();
        assert_eq!(texts, ["SELECT ';'", "SELECT $$;$$"]);
    }

    #[test]
    fn line_index_counts_chars() {
        let t = "é\nab€c";
        let li = LineIndex::new(t);
        assert_eq!(li.offset(1, 1), Some(0));
        assert_eq!(li.offset(1, 2), Some(2));
        assert_eq!(li.offset(2, 4), Some(t.find('c').unwrap()));
        assert_eq!(li.offset(2, 5), Some(t.len()));
        assert_eq!(li.offset(2, 6), None);
        assert_eq!(li.offset(1, 3), None, "past the end of line 1");
        let a = "ab\ncd";
        let li = LineIndex::new(a);
        assert_eq!(li.offset(1, 3), Some(2));
        assert_eq!(li.offset(1, 4), None);
        assert_eq!(li.offset(2, 2), Some(4));
        assert_eq!(li.offset(3, 1), None);
    }

    #[test]
    fn decodes() {
        assert_eq!(decode_string("'it''s'").as_deref(), Some("it's"));
        assert_eq!(decode_string("E'a\\nb\\''").as_deref(), Some("a\nb'"));
        assert_eq!(decode_string("'a'\n'b'"), None);
        assert_eq!(decode_string("E'\\x41'"), None);
    }

    #[test]
    fn fingerprints() {
        assert_eq!(
            fingerprint("SELECT * FROM t WHERE a = 'x''y' AND b = $1 AND c IN (1, 2.5e3) -- c\n"),
            "SELECT * FROM t WHERE a = ? AND b = $1 AND c IN (?, ?)"
        );
        assert_eq!(
            fingerprint("select E'\\'' , $q$x$q$, 'unterminated"),
            "select ? , ?, ?"
        );
    }
}

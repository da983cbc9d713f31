//! One protected value on its way in (client plaintext → canonical form →
//! envelope in the column's storage encoding) and out (stored envelope →
//! plaintext in the format the client asked for).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pgveil_crypto::canonical::{self, CanonicalError, LogicalType, SessionTimeZone};
use pgveil_crypto::ColumnKeys;
use pgveil_policy::{ColumnRef, Mode};
use pgveil_wire::frontend::Format;

use crate::error::RewriteError;

/// How a protected column is stored (`pg_attribute.atttypid`, domains resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `text` or `varchar`: `pgv1:` + base64.
    Text,
    /// `bytea`: the raw envelope.
    Bytea,
    /// Anything else: cannot hold ciphertext (writes refused).
    Other(u32),
}

impl Storage {
    /// From a storage type OID.
    pub fn from_oid(oid: u32) -> Self {
        match oid {
            25 | 1043 => Storage::Text,
            17 => Storage::Bytea,
            other => Storage::Other(other),
        }
    }

    /// The type OID pgveil declares for parameters bound to this storage.
    pub fn param_oid(self) -> u32 {
        match self {
            Storage::Text => 25,
            Storage::Bytea => 17,
            Storage::Other(o) => o,
        }
    }
}

/// Counters per protected column; read by the metrics layer at scrape time.
#[derive(Debug, Default)]
pub struct ColumnStats {
    /// Values encrypted.
    pub encrypted: AtomicU64,
    /// Values decrypted.
    pub decrypted: AtomicU64,
    /// Values that failed to decrypt or to encrypt.
    pub errors: AtomicU64,
}

/// Everything needed to encrypt and decrypt one protected column.
#[derive(Debug, Clone)]
pub struct ColumnCrypto {
    /// The column.
    pub column: ColumnRef,
    /// Logical type clients see.
    pub logical: LogicalType,
    /// Logical type modifier (`-1` for none).
    pub typmod: i32,
    /// Randomized or deterministic.
    pub mode: Mode,
    /// Storage in this database.
    pub storage: Storage,
    /// The data keys (of the key owner column), if the keyring has them.
    pub keys: Result<Arc<ColumnKeys>, String>,
    /// Counters.
    pub stats: Arc<ColumnStats>,
}

/// `typlen` of the logical type, for `RowDescription`.
pub fn type_size(t: LogicalType) -> i16 {
    use LogicalType::*;
    match t {
        Bool => 1,
        Int2 => 2,
        Int4 | Float4 | Date => 4,
        Int8 | Float8 | Time | Timestamp | Timestamptz => 8,
        Uuid => 16,
        Text | Varchar | Numeric | Json | Jsonb | Bytea => -1,
    }
}

fn invalid(column: &ColumnRef, e: &CanonicalError) -> RewriteError {
    RewriteError::InvalidValue {
        column: column.clone(),
        reason: e.to_string(),
        sqlstate: e.sqlstate(),
    }
}

impl ColumnCrypto {
    fn keys(&self) -> Result<&ColumnKeys, RewriteError> {
        self.keys.as_deref().map_err(|reason| RewriteError::NoKey {
            column: self.column.clone(),
            key: String::new(),
            reason: reason.clone(),
        })
    }

    /// Brings a client value to canonical form: `declared` is the type the
    /// client declared for it (0 = none), `format` how it was sent.
    pub fn canonical_from_client(
        &self,
        value: &[u8],
        format: Format,
        declared: Option<LogicalType>,
        tz: SessionTimeZone,
    ) -> Result<Vec<u8>, RewriteError> {
        let source = declared.unwrap_or(self.logical);
        let err = |e: CanonicalError| invalid(&self.column, &e);
        let c = match format {
            Format::Text => canonical::canonical_from_text_in(source, value, tz).map_err(err)?,
            Format::Binary => canonical::canonical_from_binary(source, value).map_err(err)?,
        };
        let c = if source == self.logical {
            c
        } else if source == LogicalType::Bool
            && matches!(self.logical, LogicalType::Text | LogicalType::Varchar)
        {
            // bool → text is booltext(), not the output function: `true`.
            match c.as_slice() {
                b"t" | b"true" => b"true".to_vec(),
                _ => b"false".to_vec(),
            }
        } else {
            canonical::canonical_from_text_in(self.logical, &c, tz).map_err(err)?
        };
        self.apply_typmod(c)
    }

    /// What PostgreSQL's input function does with the type modifier:
    /// `numeric(p,s)` rounds to `s` digits and checks the precision,
    /// `varchar(n)` checks the length.
    pub fn apply_typmod(&self, canonical: Vec<u8>) -> Result<Vec<u8>, RewriteError> {
        if self.typmod < 4 {
            return Ok(canonical);
        }
        match self.logical {
            LogicalType::Numeric => {
                let raw = self.typmod - 4;
                let precision = (raw >> 16) & 0xffff;
                let scale = ((raw & 0x7ff) ^ 1024) - 1024;
                let s = std::str::from_utf8(&canonical).map_err(|_| self.bad("invalid numeric"))?;
                round_numeric(s, precision, scale)
                    .map(String::into_bytes)
                    .map_err(|reason| RewriteError::InvalidValue {
                        column: self.column.clone(),
                        reason,
                        sqlstate: "22003",
                    })
            }
            LogicalType::Varchar => {
                let n = (self.typmod - 4) as usize;
                let s = std::str::from_utf8(&canonical).map_err(|_| self.bad("invalid text"))?;
                let chars = s.chars().count();
                if chars <= n {
                    return Ok(canonical);
                }
                // PostgreSQL silently drops excess trailing spaces only.
                let cut = s.char_indices().nth(n).map_or(s.len(), |(i, _)| i);
                if s[cut..].bytes().all(|b| b == b' ') {
                    Ok(s.as_bytes()[..cut].to_vec())
                } else {
                    Err(RewriteError::InvalidValue {
                        column: self.column.clone(),
                        reason: format!("value too long for type character varying({n})"),
                        sqlstate: "22001",
                    })
                }
            }
            _ => Ok(canonical),
        }
    }

    fn bad(&self, reason: &str) -> RewriteError {
        RewriteError::InvalidValue {
            column: self.column.clone(),
            reason: reason.to_owned(),
            sqlstate: "22P02",
        }
    }

    /// Encrypts canonical plaintext with the active key version.
    pub fn encrypt(&self, canonical: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let keys = self.keys()?;
        self.counted(keys, keys.encrypt(canonical), |_| 1)
    }

    /// Counts `n(result)` encryptions, or an error mapped to [`RewriteError::NoKey`].
    fn counted<T>(
        &self,
        keys: &ColumnKeys,
        result: Result<T, pgveil_crypto::CryptoError>,
        n: fn(&T) -> u64,
    ) -> Result<T, RewriteError> {
        match result {
            Ok(v) => {
                self.stats.encrypted.fetch_add(n(&v), Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(RewriteError::NoKey {
                    column: self.column.clone(),
                    key: keys.key_name().to_owned(),
                    reason: e.to_string(),
                })
            }
        }
    }

    /// How many ciphertexts an equality look-up must match: the live
    /// deterministic key versions (1 outside a rotation).
    pub fn lookup_versions(&self) -> usize {
        match (&self.keys, self.mode) {
            (Ok(k), Mode::Deterministic) => k
                .versions()
                .filter(|(_, m)| *m == pgveil_crypto::EncryptionMode::Deterministic)
                .count()
                .max(1),
            _ => 1,
        }
    }

    /// The ciphertexts an equality comparison must match: for a
    /// deterministic column one per live deterministic key version (active
    /// first), so rows not yet re-encrypted after a rotation are found.
    pub fn encrypt_lookup(&self, canonical: &[u8]) -> Result<Vec<Vec<u8>>, RewriteError> {
        if self.mode != Mode::Deterministic {
            return Ok(vec![self.encrypt(canonical)?]);
        }
        let keys = self.keys()?;
        self.counted(keys, keys.encrypt_all_versions(canonical), |all| {
            all.len() as u64
        })
    }

    fn check_storage(&self) -> Result<(), RewriteError> {
        match self.storage {
            Storage::Other(oid) => Err(RewriteError::BadStorage {
                column: self.column.clone(),
                storage: format!("type OID {oid}"),
            }),
            _ => Ok(()),
        }
    }

    /// An envelope as a bound parameter value for the storage column, in
    /// the parameter's format.
    pub fn param_value(&self, envelope: &[u8], format: Format) -> Result<Vec<u8>, RewriteError> {
        self.check_storage()?;
        Ok(match (self.storage, format) {
            (Storage::Bytea, Format::Binary) => envelope.to_vec(),
            (Storage::Bytea, Format::Text) => {
                pgveil_crypto::encode_bytea_hex(envelope).into_bytes()
            }
            _ => pgveil_crypto::encode_text(envelope).into_bytes(),
        })
    }

    /// Encrypts canonical plaintext with the active key version and appends
    /// it to `out` as a value of the storage column in `format` (what
    /// [`Self::encrypt`] then [`Self::param_value`] give, without their
    /// allocations). `scratch` holds the binary envelope.
    pub fn encrypt_stored_into(
        &self,
        canonical: &[u8],
        format: Format,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        self.check_storage()?;
        let keys = self.keys()?;
        scratch.clear();
        self.counted(keys, keys.encrypt_into(canonical, scratch), |_| 1)?;
        match (self.storage, format) {
            (Storage::Bytea, Format::Binary) => out.extend_from_slice(scratch),
            (Storage::Bytea, Format::Text) => pgveil_crypto::encode_bytea_hex_into(scratch, out),
            _ => pgveil_crypto::encode_text_into(scratch, out),
        }
        Ok(())
    }

    /// An envelope as an SQL literal for the storage column.
    pub fn sql_literal(&self, envelope: &[u8]) -> Result<String, RewriteError> {
        self.check_storage()?;
        // Bytea always as E'\\x…': read the same whatever
        // standard_conforming_strings the server has at that moment.
        Ok(match self.storage {
            Storage::Bytea => format!("E'\\{}'", pgveil_crypto::encode_bytea_hex(envelope)),
            _ => format!("'{}'", pgveil_crypto::encode_text(envelope)),
        })
    }

    /// Decrypts a stored value (as the server sent it, in either format)
    /// and appends it to `out` in `format` for the client. `scratch` and
    /// `tmp` are reusable buffers (`tmp` may hold plaintext: the caller
    /// wipes it). On error nothing is appended to `out`.
    pub fn decrypt_to_client(
        &self,
        stored: &[u8],
        format: Format,
        tz: SessionTimeZone,
        bufs: &mut DecryptBuffers,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let fail = |reason: String| self.decrypt_failed(reason);
        let keys = self.keys.as_deref().map_err(|r| fail(r.clone()))?;
        // Canonical text is the text output format, except for timestamptz
        // in a session with a non-UTC fixed offset: decrypt straight into
        // the outgoing message then.
        // Likewise in binary format for the text-like types, whose binary
        // form is their canonical text.
        let direct = match format {
            Format::Text => {
                !(self.logical == LogicalType::Timestamptz
                    && matches!(tz, SessionTimeZone::Fixed(o) if o != 0))
            }
            Format::Binary => matches!(
                self.logical,
                LogicalType::Text | LogicalType::Varchar | LogicalType::Json
            ),
        };
        if direct {
            keys.decrypt_stored_into(stored, &mut bufs.envelope, out)
                .map_err(|e| fail(e.to_string()))?;
            self.stats.decrypted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        bufs.plain.clear();
        keys.decrypt_stored_into(stored, &mut bufs.envelope, &mut bufs.plain)
            .map_err(|e| fail(e.to_string()))?;
        let converted = match format {
            Format::Text => canonical::canonical_to_text_in(self.logical, &bufs.plain, tz),
            Format::Binary => canonical::canonical_to_binary(self.logical, &bufs.plain),
        };
        bufs.wipe();
        match converted {
            Ok(v) => {
                out.extend_from_slice(&v);
                self.stats.decrypted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(fail(format!(
                "decrypted value is not a valid {}: {e}",
                self.logical.name()
            ))),
        }
    }
}

impl ColumnCrypto {
    /// A stored value of this column that did not decrypt: counted, and the
    /// error (no value) for the client.
    fn decrypt_failed(&self, reason: String) -> RewriteError {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        RewriteError::Decrypt {
            column: self.column.clone(),
            reason,
        }
    }

    /// Decrypts a stored value and appends its `mask`ed form to `out` in
    /// `format`; `Ok(false)` (nothing appended) when the mask gives `NULL`.
    /// The plaintext never leaves `bufs` (wiped before returning).
    pub fn mask_to_client(
        &self,
        stored: &[u8],
        format: Format,
        mask: pgveil_policy::MaskKind,
        bufs: &mut DecryptBuffers,
        out: &mut Vec<u8>,
    ) -> Result<bool, RewriteError> {
        let fail = |reason: String| self.decrypt_failed(reason);
        let keys = self.keys.as_deref().map_err(|r| fail(r.clone()))?;
        bufs.plain.clear();
        let r = keys.decrypt_stored_into(stored, &mut bufs.envelope, &mut bufs.plain);
        if let Err(e) = r {
            bufs.wipe();
            return Err(fail(e.to_string()));
        }
        self.stats.decrypted.fetch_add(1, Ordering::Relaxed);
        let masked = crate::access::mask_canonical(mask, self.logical, &bufs.plain);
        bufs.wipe();
        let Some(masked) = masked else {
            return Ok(false);
        };
        // Masked values are canonical text of the logical type; a timestamp
        // with time zone is shown in UTC.
        let converted = match format {
            Format::Text => canonical::canonical_to_text(self.logical, &masked),
            Format::Binary => canonical::canonical_to_binary(self.logical, &masked),
        };
        match converted {
            Ok(v) => {
                out.extend_from_slice(&v);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

/// Buffers reused across the values of a result.
#[derive(Default)]
pub struct DecryptBuffers {
    envelope: Vec<u8>,
    plain: Vec<u8>,
}

impl std::fmt::Debug for DecryptBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecryptBuffers(..)")
    }
}

impl DecryptBuffers {
    /// Zeroes the plaintext buffer.
    pub fn wipe(&mut self) {
        self.plain.iter_mut().for_each(|b| *b = 0);
        self.plain.clear();
    }
}

/// Rounds canonical numeric text to `scale` fraction digits (half away from
/// zero, as PostgreSQL does) and checks it fits `precision` digits.
pub fn round_numeric(s: &str, precision: i32, scale: i32) -> Result<String, String> {
    if s == "NaN" {
        return Ok(s.to_owned());
    }
    let overflow = || {
        format!("numeric field overflow: a field with precision {precision}, scale {scale} cannot hold this value")
    };
    if s.ends_with("Infinity") {
        return Err(overflow());
    }
    if scale < 0 {
        return Err(format!(
            "numeric({precision},{scale}) with a negative scale is not supported"
        ));
    }
    let scale = scale as usize;
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || int.is_empty() {
        return Err("invalid numeric".to_owned());
    }
    let mut all: Vec<u8> = int.bytes().chain(frac.bytes().take(scale)).collect();
    all.extend(std::iter::repeat_n(b'0', scale.saturating_sub(frac.len())));
    if frac.len() > scale && frac.as_bytes()[scale] >= b'5' {
        // Increment the decimal string.
        let mut i = all.len();
        loop {
            if i == 0 {
                all.insert(0, b'1');
                break;
            }
            i -= 1;
            if all[i] == b'9' {
                all[i] = b'0';
            } else {
                all[i] += 1;
                break;
            }
        }
    }
    let split = all.len() - scale;
    let int_part = std::str::from_utf8(&all[..split]).expect("digits");
    let int_part = int_part.trim_start_matches('0');
    let frac_part = std::str::from_utf8(&all[split..]).expect("digits");
    if int_part.len() as i32 > precision - scale as i32 {
        return Err(overflow());
    }
    let zero = int_part.is_empty() && frac_part.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(all.len() + 2);
    if neg && !zero {
        out.push('-');
    }
    out.push_str(if int_part.is_empty() { "0" } else { int_part });
    if scale > 0 {
        out.push('.');
        out.push_str(frac_part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::round_numeric;

    #[test]
    fn numeric_rounding_matches_postgres() {
        assert_eq!(round_numeric("12.34", 12, 4).unwrap(), "12.3400");
        assert_eq!(round_numeric("12.34565", 12, 4).unwrap(), "12.3457");
        assert_eq!(round_numeric("-12.34565", 12, 4).unwrap(), "-12.3457");
        assert!(round_numeric("9.99995", 5, 4).is_err());
        assert_eq!(round_numeric("9.99995", 6, 4).unwrap(), "10.0000");
        assert_eq!(round_numeric("-0.00001", 6, 4).unwrap(), "0.0000");
        assert_eq!(round_numeric("5", 3, 0).unwrap(), "5");
        assert_eq!(round_numeric("4.5", 3, 0).unwrap(), "5");
        assert_eq!(round_numeric("NaN", 3, 0).unwrap(), "NaN");
        assert!(round_numeric("Infinity", 3, 0).is_err());
        assert!(round_numeric("1000", 3, 0).is_err());
        assert_eq!(round_numeric("0.5", 1, 1).unwrap(), "0.5");
    }
}

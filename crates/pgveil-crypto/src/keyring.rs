//! The keyring: every data key version, wrapped by the KEK, with its metadata.
//!
//! Pure model plus (de)serialization. Where the document lives — a file, or a
//! `pgveil` schema in the database so every replica sees it — is the
//! business of a [`KeyringStore`] implemented in the binary crate.
//!
//! Serialized form (JSON, `format` 1):
//!
//! ```json
//! {
//!   "format": 1,
//!   "revision": 3,
//!   "kek_id": "local:2f1c0e9a7b3d4c51",
//!   "keys": [
//!     { "name": "public.patients.ssn", "version": 1, "mode": "deterministic",
//!       "state": "decrypt-only", "created_at": 1700000000, "wrapped_dek": "AZ3k…" },
//!     { "name": "public.patients.ssn", "version": 2, "mode": "deterministic",
//!       "state": "active", "created_at": 1710000000, "wrapped_dek": "AT9x…" }
//!   ]
//! }
//! ```
//!
//! `wrapped_dek` is the KEK provider's output in standard base64; the wrap's
//! AAD binds the key name, version and mode, so entries cannot be swapped or
//! relabelled without unwrap failing.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::column::{validate_key_name, ColumnKeys};
use crate::envelope::EncryptionMode;
use crate::keys::{DataKey, KekProvider};
use crate::CryptoError;

/// The keyring document format this build reads and writes.
pub const KEYRING_FORMAT: u32 = 1;
/// Domain separation for the AAD of a wrapped data key.
const DEK_WRAP_LABEL: &[u8] = b"pgveil dek v1\0";

/// Lifecycle state of one key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Encrypts new values (one per key name) and decrypts.
    Active,
    /// Decrypts only; rows still encrypted with it await re-encryption.
    DecryptOnly,
    /// Not loaded: values under it no longer decrypt. Retire a version only
    /// once no row uses it.
    Retired,
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::DecryptOnly => "decrypt-only",
            Self::Retired => "retired",
        })
    }
}

/// A wrapped DEK: opaque provider output, base64 in the document.
#[derive(Clone, PartialEq, Eq)]
struct WrappedDek(Vec<u8>);

impl Serialize for WrappedDek {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for WrappedDek {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text)
            .map(WrappedDek)
            .map_err(|_| serde::de::Error::custom("wrapped_dek is not valid base64"))
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    version: u32,
    mode: EncryptionMode,
    state: KeyState,
    created_at: u64,
    wrapped_dek: WrappedDek,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringDoc {
    format: u32,
    revision: u64,
    kek_id: String,
    keys: Vec<KeyEntry>,
}

/// Metadata of one key version, as listed by [`Keyring::list`]. Holds no key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo<'a> {
    /// Key name, `schema.table.column`.
    pub name: &'a str,
    /// Version number, from 1.
    pub version: u32,
    /// Encryption mode.
    pub mode: EncryptionMode,
    /// Lifecycle state.
    pub state: KeyState,
    /// Creation time, unix seconds.
    pub created_at: u64,
}

/// All key versions of all key names, wrapped by one KEK.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    kek_id: String,
    /// Revision written by [`Keyring::to_json`].
    revision: u64,
    /// Revision this keyring was created or loaded at (compare-and-set base).
    loaded_revision: u64,
    /// Sorted by (name, version).
    entries: Vec<KeyEntry>,
}

fn wrap_aad(name: &str, version: u32, mode: EncryptionMode) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_WRAP_LABEL.len() + 5 + name.len());
    aad.extend_from_slice(DEK_WRAP_LABEL);
    aad.push(mode.format_byte());
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}

impl Keyring {
    /// An empty keyring whose keys will be wrapped by KEK `kek_id`.
    pub fn new(kek_id: impl Into<String>) -> Self {
        Self {
            kek_id: kek_id.into(),
            revision: 0,
            loaded_revision: 0,
            entries: Vec::new(),
        }
    }

    /// The id of the KEK that wraps every data key here.
    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// The revision this keyring will be written with.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision it was loaded (or created, or last stored) at: a
    /// [`KeyringStore`] stores only if the persisted revision still equals this.
    pub fn loaded_revision(&self) -> u64 {
        self.loaded_revision
    }

    /// Call after a successful [`KeyringStore::store`].
    pub fn mark_stored(&mut self) {
        self.loaded_revision = self.revision;
    }

    fn touch(&mut self) {
        self.revision = self.loaded_revision + 1;
    }

    fn check_kek(&self, kek: &dyn KekProvider) -> Result<(), CryptoError> {
        if kek.key_id() == self.kek_id {
            Ok(())
        } else {
            Err(CryptoError::KekMismatch {
                expected: self.kek_id.clone(),
                found: kek.key_id().to_owned(),
            })
        }
    }

    fn entries_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        self.entries.iter().filter(move |e| e.name == name)
    }

    fn insert_new(
        &mut self,
        name: &str,
        version: u32,
        mode: EncryptionMode,
        now: u64,
        kek: &dyn KekProvider,
    ) -> Result<(), CryptoError> {
        let dek = DataKey::generate()?;
        let wrapped = kek.wrap(&dek, &wrap_aad(name, version, mode))?;
        self.entries.push(KeyEntry {
            name: name.to_owned(),
            version,
            mode,
            state: KeyState::Active,
            created_at: now,
            wrapped_dek: WrappedDek(wrapped),
        });
        self.entries
            .sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        self.touch();
        Ok(())
    }

    /// Creates version 1 of a new key name and makes it active.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyName`], [`CryptoError::KeyAlreadyExists`],
    /// [`CryptoError::KekMismatch`], provider errors.
    pub fn add_key(
        &mut self,
        name: &str,
        mode: EncryptionMode,
        now: u64,
        kek: &dyn KekProvider,
    ) -> Result<u32, CryptoError> {
        validate_key_name(name)?;
        self.check_kek(kek)?;
        if self.entries_of(name).next().is_some() {
            return Err(CryptoError::KeyAlreadyExists(name.to_owned()));
        }
        self.insert_new(name, 1, mode, now, kek)?;
        Ok(1)
    }

    /// Adds a new active version with the same mode; the previous active
    /// version becomes decrypt-only. Returns the new version.
    ///
    /// # Errors
    /// [`CryptoError::KeyNotFound`], [`CryptoError::KekMismatch`], provider errors.
    pub fn rotate(
        &mut self,
        name: &str,
        now: u64,
        kek: &dyn KekProvider,
    ) -> Result<u32, CryptoError> {
        let mode = self
            .entries_of(name)
            .find(|e| e.state == KeyState::Active)
            .or_else(|| self.entries_of(name).last())
            .map(|e| e.mode)
            .ok_or_else(|| CryptoError::KeyNotFound(name.to_owned()))?;
        self.rotate_with_mode(name, mode, now, kek)
    }

    /// Like [`Self::rotate`] but the new version uses `mode` (switching a
    /// column between randomized and deterministic needs re-encryption).
    ///
    /// # Errors
    /// As [`Self::rotate`].
    pub fn rotate_with_mode(
        &mut self,
        name: &str,
        mode: EncryptionMode,
        now: u64,
        kek: &dyn KekProvider,
    ) -> Result<u32, CryptoError> {
        self.check_kek(kek)?;
        let latest = self
            .entries_of(name)
            .map(|e| e.version)
            .max()
            .ok_or_else(|| CryptoError::KeyNotFound(name.to_owned()))?;
        let version = latest.checked_add(1).ok_or_else(|| {
            CryptoError::InvalidKeyring(format!("key {name} has no versions left"))
        })?;
        // Wrap first so a provider failure leaves the keyring unchanged.
        let before = self.entries.clone();
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.name == name && e.state == KeyState::Active)
        {
            e.state = KeyState::DecryptOnly;
        }
        if let Err(err) = self.insert_new(name, version, mode, now, kek) {
            self.entries = before;
            return Err(err);
        }
        Ok(version)
    }

    /// Retires a decrypt-only version: it is no longer loaded, so values still
    /// under it stop decrypting. The wrapped key stays in the document.
    ///
    /// # Errors
    /// [`CryptoError::KeyVersionNotFound`], [`CryptoError::CannotRetireActive`].
    pub fn retire(&mut self, name: &str, version: u32) -> Result<(), CryptoError> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.name == name && e.version == version)
            .ok_or_else(|| CryptoError::KeyVersionNotFound {
                key_name: name.to_owned(),
                version,
            })?;
        match entry.state {
            KeyState::Active => Err(CryptoError::CannotRetireActive {
                key_name: name.to_owned(),
                version,
            }),
            KeyState::Retired => Ok(()),
            KeyState::DecryptOnly => {
                entry.state = KeyState::Retired;
                self.touch();
                Ok(())
            }
        }
    }

    /// Re-wraps every data key under a new KEK (KEK rotation; no row changes).
    ///
    /// # Errors
    /// [`CryptoError::KekMismatch`] if `old` is not this keyring's KEK; unwrap
    /// or provider errors (the keyring is then unchanged).
    pub fn rewrap(
        &mut self,
        old: &dyn KekProvider,
        new: &dyn KekProvider,
    ) -> Result<(), CryptoError> {
        self.check_kek(old)?;
        let mut entries = self.entries.clone();
        for e in &mut entries {
            let aad = wrap_aad(&e.name, e.version, e.mode);
            let dek = old.unwrap(&e.wrapped_dek.0, &aad)?;
            e.wrapped_dek = WrappedDek(new.wrap(&dek, &aad)?);
        }
        self.entries = entries;
        new.key_id().clone_into(&mut self.kek_id);
        self.touch();
        Ok(())
    }

    /// Every key version's metadata, sorted by name then version.
    pub fn list(&self) -> impl Iterator<Item = KeyInfo<'_>> + '_ {
        self.entries.iter().map(|e| KeyInfo {
            name: &e.name,
            version: e.version,
            mode: e.mode,
            state: e.state,
            created_at: e.created_at,
        })
    }

    /// Distinct key names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        let mut last: Option<&str> = None;
        self.entries.iter().filter_map(move |e| {
            if last == Some(e.name.as_str()) {
                None
            } else {
                last = Some(&e.name);
                last
            }
        })
    }

    /// The active version of `name`, if any.
    pub fn active_version(&self, name: &str) -> Option<u32> {
        self.entries_of(name)
            .find(|e| e.state == KeyState::Active)
            .map(|e| e.version)
    }

    /// Unwraps every non-retired version of `name` and builds its runtime key set.
    ///
    /// # Errors
    /// [`CryptoError::KeyNotFound`], [`CryptoError::KekMismatch`],
    /// [`CryptoError::UnwrapFailed`].
    pub fn column_keys(
        &self,
        name: &str,
        kek: &dyn KekProvider,
    ) -> Result<ColumnKeys, CryptoError> {
        self.check_kek(kek)?;
        let mut keys = ColumnKeys::new(name)?;
        let mut found = false;
        for e in self.entries_of(name) {
            found = true;
            if e.state == KeyState::Retired {
                keys.mark_retired(e.version);
                continue;
            }
            let dek = kek.unwrap(&e.wrapped_dek.0, &wrap_aad(&e.name, e.version, e.mode))?;
            keys.add_version(e.version, e.mode, &dek)?;
            if e.state == KeyState::Active {
                keys.set_active(e.version)?;
            }
        }
        if found {
            Ok(keys)
        } else {
            Err(CryptoError::KeyNotFound(name.to_owned()))
        }
    }

    /// [`Self::column_keys`] for every key name.
    ///
    /// # Errors
    /// As [`Self::column_keys`].
    pub fn all_column_keys(&self, kek: &dyn KekProvider) -> Result<Vec<ColumnKeys>, CryptoError> {
        self.names().map(|n| self.column_keys(n, kek)).collect()
    }

    /// The JSON document (pretty-printed), ready for a [`KeyringStore`].
    pub fn to_json(&self) -> String {
        let doc = KeyringDoc {
            format: KEYRING_FORMAT,
            revision: self.revision,
            kek_id: self.kek_id.clone(),
            keys: self.entries.clone(),
        };
        serde_json::to_string_pretty(&doc).expect("keyring serialization cannot fail")
    }

    /// Parses and validates a JSON document.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyring`] for syntax errors (position only, never
    /// content), an unknown `format`, invalid names, version 0, duplicate
    /// versions, several active versions of one name, or an empty wrapped key.
    pub fn from_json(text: &str) -> Result<Self, CryptoError> {
        let doc: KeyringDoc = serde_json::from_str(text).map_err(|e| {
            let kind = match e.classify() {
                serde_json::error::Category::Io => "I/O error",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected field or value",
                serde_json::error::Category::Eof => "unexpected end of document",
            };
            CryptoError::InvalidKeyring(format!(
                "{kind} at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        if doc.format != KEYRING_FORMAT {
            return Err(CryptoError::InvalidKeyring(format!(
                "unsupported format {} (this build reads {KEYRING_FORMAT})",
                doc.format
            )));
        }
        let mut entries = doc.keys;
        entries.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        for (i, e) in entries.iter().enumerate() {
            validate_key_name(&e.name)?;
            if e.version == 0 {
                return Err(CryptoError::InvalidKeyring(format!(
                    "key {} has version 0",
                    e.name
                )));
            }
            if e.wrapped_dek.0.is_empty() {
                return Err(CryptoError::InvalidKeyring(format!(
                    "key {} version {} has an empty wrapped_dek",
                    e.name, e.version
                )));
            }
            if let Some(prev) = i.checked_sub(1).map(|p| &entries[p]) {
                if prev.name == e.name && prev.version == e.version {
                    return Err(CryptoError::DuplicateKeyVersion {
                        key_name: e.name.clone(),
                        version: e.version,
                    });
                }
            }
        }
        let ring = Self {
            kek_id: doc.kek_id,
            revision: doc.revision,
            loaded_revision: doc.revision,
            entries,
        };
        for name in ring.names() {
            if ring
                .entries_of(name)
                .filter(|e| e.state == KeyState::Active)
                .count()
                > 1
            {
                return Err(CryptoError::InvalidKeyring(format!(
                    "key {name} has more than one active version"
                )));
            }
        }
        Ok(ring)
    }
}

impl fmt::Display for Keyring {
    /// The JSON document, as [`Keyring::to_json`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl FromStr for Keyring {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_json(s)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kek_id", &self.kek_id)
            .field("revision", &self.revision)
            .field("keys", &self.list().collect::<Vec<_>>())
            .finish()
    }
}

/// Where a keyring document is persisted (file, database table, …).
///
/// Implementations live outside this crate because they do I/O. Contract:
/// * `store` is atomic: a concurrent or later `load` sees either the previous
///   document or the new one, never a mix (write a temp file, fsync, rename;
///   or a single-row `UPDATE` in one transaction).
/// * `store` is compare-and-set: it fails with a conflict unless the persisted
///   document's `revision` equals [`Keyring::loaded_revision`], so two admins
///   rotating at once cannot silently drop one rotation. After success the
///   caller calls [`Keyring::mark_stored`].
/// * `load` of a store that was never written returns an error or an empty
///   keyring, as the implementation documents.
pub trait KeyringStore {
    /// The store's own error type.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Reads and parses the current document ([`Keyring::from_json`]).
    ///
    /// # Errors
    /// Storage errors, or a wrapped [`CryptoError::InvalidKeyring`].
    fn load(&self) -> Result<Keyring, Self::Error>;
    /// Atomically replaces the document with [`Keyring::to_json`].
    ///
    /// # Errors
    /// Storage errors, or a revision conflict.
    fn store(&self, keyring: &Keyring) -> Result<(), Self::Error>;
}

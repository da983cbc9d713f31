//! The runtime key set of one key name: ready ciphers per version, the active
//! version, and the encryption counter.
//!
//! Built once (by [`crate::Keyring::column_keys`] or by hand) and then shared
//! behind an `Arc` by every session: all methods take `&self`, and the only
//! mutable state is an atomic counter per version.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::{Zeroize as _, Zeroizing};

use crate::envelope::{
    self, EncryptionMode, EnvelopeHeader, HEADER_LEN, NONCE_LEN, OVERHEAD, PREFIX_LEN, TAG_LEN,
};
use crate::keys::DataKey;
use crate::siv::Aes256GcmSiv;
use crate::{kdf, rng, CryptoError};

/// Default number of randomized encryptions allowed per data key version: 2^31.
///
/// With random 96-bit nonces the chance that any two of `n` nonces collide is
/// about n²/2^97; NIST SP 800-38D caps random-nonce GCM at 2^32 invocations
/// per key for a 2^-32 bound. 2^31 keeps the collision probability below
/// 2^-35 and leaves headroom for several proxy replicas that each count only
/// their own encryptions.
pub const DEFAULT_ENCRYPTION_LIMIT: u64 = 1 << 31;
/// The highest limit [`ColumnKeys::set_encryption_limit`] accepts: 2^32.
pub const MAX_ENCRYPTION_LIMIT: u64 = 1 << 32;

/// HKDF salt for splitting a data key into subkeys.
const KDF_SALT: &[u8] = b"pgveil data-key v1";
const LABEL_GCM: &[u8] = b"aes-256-gcm";
const LABEL_SIV: &[u8] = b"aes-256-gcm-siv";
const LABEL_NONCE_MAC: &[u8] = b"siv-nonce-hmac-sha256";

/// Checks that a key name looks like `schema.table.column`: three non-empty
/// parts of at most 63 bytes (PostgreSQL's identifier limit), no control
/// characters.
///
/// # Errors
/// [`CryptoError::InvalidKeyName`].
pub fn validate_key_name(name: &str) -> Result<(), CryptoError> {
    let parts: Vec<&str> = name.split('.').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 63 && !p.chars().any(char::is_control));
    if ok {
        Ok(())
    } else {
        Err(CryptoError::InvalidKeyName(name.to_owned()))
    }
}

/// One data key version, ready to use.
struct VersionKeys {
    version: u32,
    mode: EncryptionMode,
    /// `format | key_version`, copied into every envelope.
    header: [u8; HEADER_LEN],
    /// `header | key name`: what every envelope of this version authenticates.
    aad: Box<[u8]>,
    cipher: VersionCipher,
    /// Encryptions performed with this version by this process.
    encryptions: AtomicU64,
}

enum VersionCipher {
    /// AES-256-GCM from `ring` (assembly, ~2x the RustCrypto `aes-gcm` speed
    /// on values up to a few hundred bytes on this class of CPU; the
    /// known-answer tests pin it to the NIST vectors).
    Randomized(ring::aead::LessSafeKey),
    Deterministic {
        siv: Aes256GcmSiv,
        /// Pre-keyed HMAC state, cloned per value to derive the synthetic nonce.
        nonce_mac: Hmac<Sha256>,
    },
}

fn derive_subkey(dek: &DataKey, key_name: &str, version: u32, label: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = kdf::extract(KDF_SALT, dek.expose_secret());
    let mut out = Zeroizing::new([0u8; 32]);
    kdf::expand(
        &prk,
        &[label, b"\0", &version.to_be_bytes(), key_name.as_bytes()],
        out.as_mut(),
    );
    out
}

/// All non-retired versions of one key name, unwrapped and ready.
///
/// Several columns may share one key name (policy `key = "public.patients.ssn"`
/// on `visits.patient_ssn`): they then share the key *and* the AAD, which is
/// what lets deterministic ciphertexts of the two columns join.
pub struct ColumnKeys {
    key_name: String,
    /// Sorted by version; a handful at most, so lookups scan.
    versions: Vec<VersionKeys>,
    active: Option<usize>,
    /// Versions known to be retired, for a precise error.
    retired: Vec<u32>,
    encryption_limit: u64,
}

impl ColumnKeys {
    /// An empty key set for `key_name` (`schema.table.column`).
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyName`].
    pub fn new(key_name: &str) -> Result<Self, CryptoError> {
        validate_key_name(key_name)?;
        Ok(Self {
            key_name: key_name.to_owned(),
            versions: Vec::new(),
            active: None,
            retired: Vec::new(),
            encryption_limit: DEFAULT_ENCRYPTION_LIMIT,
        })
    }

    /// Adds a version: derives its subkeys with HKDF-SHA-256 (bound to the key
    /// name and version) and initialises its ciphers once.
    ///
    /// # Errors
    /// [`CryptoError::DuplicateKeyVersion`]; version 0 is reserved and refused
    /// as [`CryptoError::KeyVersionNotFound`].
    pub fn add_version(
        &mut self,
        version: u32,
        mode: EncryptionMode,
        dek: &DataKey,
    ) -> Result<(), CryptoError> {
        if version == 0 {
            return Err(CryptoError::KeyVersionNotFound {
                key_name: self.key_name.clone(),
                version,
            });
        }
        if self.versions.iter().any(|v| v.version == version) {
            return Err(CryptoError::DuplicateKeyVersion {
                key_name: self.key_name.clone(),
                version,
            });
        }
        let header = EnvelopeHeader {
            mode,
            key_version: version,
        }
        .to_bytes();
        let mut aad = Vec::with_capacity(HEADER_LEN + self.key_name.len());
        aad.extend_from_slice(&header);
        aad.extend_from_slice(self.key_name.as_bytes());
        let cipher = match mode {
            EncryptionMode::Randomized => {
                let k = derive_subkey(dek, &self.key_name, version, LABEL_GCM);
                let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, k.as_ref())
                    .expect("AES-256 key is 32 bytes");
                VersionCipher::Randomized(ring::aead::LessSafeKey::new(unbound))
            }
            EncryptionMode::Deterministic => {
                let k = derive_subkey(dek, &self.key_name, version, LABEL_SIV);
                let m = derive_subkey(dek, &self.key_name, version, LABEL_NONCE_MAC);
                VersionCipher::Deterministic {
                    siv: Aes256GcmSiv::new(&k),
                    nonce_mac: <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(m.as_ref())
                        .expect("HMAC accepts any key length"),
                }
            }
        };
        let active_version = self.active_version();
        self.versions.push(VersionKeys {
            version,
            mode,
            header,
            aad: aad.into_boxed_slice(),
            cipher,
            encryptions: AtomicU64::new(0),
        });
        self.versions.sort_by_key(|v| v.version);
        self.retired.retain(|&r| r != version);
        self.active = active_version.and_then(|a| self.index_of(a));
        Ok(())
    }

    /// Records that `version` is retired, so envelopes naming it fail with
    /// [`CryptoError::KeyRetired`] rather than [`CryptoError::UnknownKeyVersion`].
    /// Drops the version's ciphers if it was loaded.
    pub fn mark_retired(&mut self, version: u32) {
        let active_version = self.active_version().filter(|&a| a != version);
        self.versions.retain(|v| v.version != version);
        self.active = active_version.and_then(|a| self.index_of(a));
        if !self.retired.contains(&version) {
            self.retired.push(version);
        }
    }

    /// Makes `version` the one new values are encrypted with.
    ///
    /// # Errors
    /// [`CryptoError::KeyVersionNotFound`] if it was not added.
    pub fn set_active(&mut self, version: u32) -> Result<(), CryptoError> {
        let idx = self
            .index_of(version)
            .ok_or_else(|| CryptoError::KeyVersionNotFound {
                key_name: self.key_name.clone(),
                version,
            })?;
        self.active = Some(idx);
        Ok(())
    }

    /// Sets how many randomized encryptions one version may perform in this
    /// process (default [`DEFAULT_ENCRYPTION_LIMIT`]).
    ///
    /// # Errors
    /// [`CryptoError::InvalidEncryptionLimit`] above [`MAX_ENCRYPTION_LIMIT`].
    pub fn set_encryption_limit(&mut self, limit: u64) -> Result<(), CryptoError> {
        if limit > MAX_ENCRYPTION_LIMIT {
            return Err(CryptoError::InvalidEncryptionLimit(limit));
        }
        self.encryption_limit = limit;
        Ok(())
    }

    /// Restores a persisted encryption count (e.g. the sum reported by all
    /// replicas), so the limit survives restarts.
    ///
    /// # Errors
    /// [`CryptoError::KeyVersionNotFound`].
    pub fn set_encryption_count(&self, version: u32, count: u64) -> Result<(), CryptoError> {
        let v = self
            .version(version)
            .ok_or_else(|| CryptoError::KeyVersionNotFound {
                key_name: self.key_name.clone(),
                version,
            })?;
        v.encryptions.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// The key name (`schema.table.column`) bound into every envelope's AAD.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The version new values are encrypted with.
    pub fn active_version(&self) -> Option<u32> {
        self.active.map(|i| self.versions[i].version)
    }

    /// The mode of the active version.
    pub fn active_mode(&self) -> Option<EncryptionMode> {
        self.active.map(|i| self.versions[i].mode)
    }

    /// Loaded (non-retired) versions and their modes, ascending.
    pub fn versions(&self) -> impl Iterator<Item = (u32, EncryptionMode)> + '_ {
        self.versions.iter().map(|v| (v.version, v.mode))
    }

    /// Encryptions performed with `version` by this process (for the
    /// data-key encryption count metric).
    pub fn encryption_count(&self, version: u32) -> Option<u64> {
        self.version(version)
            .map(|v| v.encryptions.load(Ordering::Relaxed))
    }

    /// The configured per-version limit for randomized encryptions.
    pub fn encryption_limit(&self) -> u64 {
        self.encryption_limit
    }

    fn index_of(&self, version: u32) -> Option<usize> {
        self.versions.iter().position(|v| v.version == version)
    }

    fn version(&self, version: u32) -> Option<&VersionKeys> {
        self.versions.iter().find(|v| v.version == version)
    }

    fn active_keys(&self) -> Result<&VersionKeys, CryptoError> {
        self.active
            .map(|i| &self.versions[i])
            .ok_or_else(|| CryptoError::NoActiveKey(self.key_name.clone()))
    }

    /// Encrypts with the active version into a new binary envelope.
    ///
    /// `plaintext` should be the value's canonical text form
    /// ([`crate::canonical`]). SQL NULL is never encrypted: callers pass NULL
    /// through unchanged.
    ///
    /// # Errors
    /// [`CryptoError::NoActiveKey`], [`CryptoError::KeyExhausted`].
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        self.encrypt_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// Like [`Self::encrypt`] but appends the envelope to `out` (which keeps
    /// its previous contents; on error nothing is appended).
    ///
    /// # Errors
    /// As [`Self::encrypt`].
    pub fn encrypt_into(&self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let keys = self.active_keys()?;
        encrypt_version(&self.key_name, keys, self.encryption_limit, plaintext, out)
    }

    /// Encrypts and encodes for a `text`/`varchar` column (`pgv1:` + base64).
    ///
    /// # Errors
    /// As [`Self::encrypt`].
    pub fn encrypt_text(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        Ok(envelope::encode_text(&self.encrypt(plaintext)?))
    }

    /// For deterministic keys: one envelope per loaded deterministic version,
    /// active version first, so an equality predicate can match rows not yet
    /// re-encrypted after a rotation (`col IN ($v2, $v1)`).
    ///
    /// # Errors
    /// [`CryptoError::NotDeterministic`] if no loaded version is deterministic.
    pub fn encrypt_all_versions(&self, plaintext: &[u8]) -> Result<Vec<Vec<u8>>, CryptoError> {
        let order = self.active.into_iter().chain(
            (0..self.versions.len())
                .rev()
                .filter(|&i| Some(i) != self.active),
        );
        let mut all = Vec::new();
        for i in order {
            let keys = &self.versions[i];
            if keys.mode == EncryptionMode::Deterministic {
                let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
                encrypt_version(
                    &self.key_name,
                    keys,
                    self.encryption_limit,
                    plaintext,
                    &mut out,
                )?;
                all.push(out);
            }
        }
        if all.is_empty() {
            return Err(CryptoError::NotDeterministic(self.key_name.clone()));
        }
        Ok(all)
    }

    /// Decrypts a binary envelope with the version named in its header.
    ///
    /// # Errors
    /// Header errors ([`CryptoError::Truncated`], [`CryptoError::UnsupportedVersion`]),
    /// [`CryptoError::UnknownKeyVersion`], [`CryptoError::KeyRetired`],
    /// [`CryptoError::ModeMismatch`], [`CryptoError::AuthenticationFailed`].
    pub fn decrypt(&self, envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut out = Zeroizing::new(Vec::with_capacity(envelope.len().saturating_sub(OVERHEAD)));
        self.decrypt_into(envelope, &mut out)?;
        Ok(out)
    }

    /// Like [`Self::decrypt`] but appends the plaintext to `out`; on error
    /// nothing is appended. The caller owns zeroizing `out`.
    ///
    /// This is the hot-path form for the proxy (decrypt straight into the
    /// outgoing message buffer): [`Self::decrypt`]'s `Zeroizing` result costs
    /// a volatile wipe of about one CPU cycle per byte when dropped.
    ///
    /// # Errors
    /// As [`Self::decrypt`].
    pub fn decrypt_into(&self, envelope: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let header = envelope::parse_header(envelope)?;
        let keys = match self.version(header.key_version) {
            Some(keys) => keys,
            None if self.retired.contains(&header.key_version) => {
                return Err(CryptoError::KeyRetired {
                    key_name: self.key_name.clone(),
                    version: header.key_version,
                })
            }
            None => {
                return Err(CryptoError::UnknownKeyVersion {
                    key_name: self.key_name.clone(),
                    version: header.key_version,
                })
            }
        };
        if keys.mode != header.mode {
            return Err(CryptoError::ModeMismatch {
                expected: keys.mode,
                found: header.mode,
            });
        }
        let nonce: [u8; NONCE_LEN] = envelope[HEADER_LEN..PREFIX_LEN]
            .try_into()
            .expect("length checked");
        let (ciphertext, tag) =
            envelope[PREFIX_LEN..].split_at(envelope.len() - PREFIX_LEN - TAG_LEN);
        let tag: [u8; TAG_LEN] = tag.try_into().expect("length checked");
        let start = out.len();
        out.resize(start + ciphertext.len(), 0);
        let result = match &keys.cipher {
            VersionCipher::Randomized(gcm) => {
                out[start..].copy_from_slice(ciphertext);
                gcm.open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(&keys.aad[..]),
                    ring::aead::Tag::from(tag),
                    &mut out[start..],
                    0..,
                )
                .map(|_| ())
                .map_err(|_| ())
            }
            VersionCipher::Deterministic { siv, .. } => {
                out[start..].copy_from_slice(ciphertext);
                siv.decrypt_in_place_detached(&nonce, &keys.aad, &mut out[start..], &tag)
                    .map_err(|_| ())
            }
        };
        if result.is_err() {
            // GCM-SIV decrypts before it verifies: wipe what it wrote.
            out[start..].zeroize();
            out.truncate(start);
            return Err(CryptoError::AuthenticationFailed);
        }
        Ok(())
    }

    /// Decodes a stored value (as [`Self::decrypt_stored`]) and appends its
    /// plaintext to `out`, using `scratch` for the decoded envelope: no
    /// allocation once the buffers have grown. On error nothing is appended.
    ///
    /// # Errors
    /// As [`envelope::decode`] and [`Self::decrypt`].
    pub fn decrypt_stored_into(
        &self,
        stored: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let envelope = envelope::decode_into(stored, scratch)?;
        self.decrypt_into(envelope, out)
    }

    /// Decodes a stored value ([`envelope::decode`]: binary, `pgv1:` or `\x`
    /// hex) and decrypts it.
    ///
    /// # Errors
    /// As [`envelope::decode`] and [`Self::decrypt`].
    pub fn decrypt_stored(&self, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let envelope: Cow<'_, [u8]> = envelope::decode(stored)?;
        self.decrypt(&envelope)
    }
}

fn encrypt_version(
    key_name: &str,
    keys: &VersionKeys,
    limit: u64,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let start = out.len();
    let nonce: [u8; NONCE_LEN] = match &keys.cipher {
        VersionCipher::Randomized(_) => {
            let previous = keys.encryptions.fetch_add(1, Ordering::Relaxed);
            if previous >= limit {
                keys.encryptions.fetch_sub(1, Ordering::Relaxed);
                return Err(CryptoError::KeyExhausted {
                    key_name: key_name.to_owned(),
                    version: keys.version,
                    limit,
                });
            }
            rng::random_nonce()
        }
        VersionCipher::Deterministic { nonce_mac, .. } => {
            // SIV: nonce-misuse resistant, so no limit is enforced; still counted.
            keys.encryptions.fetch_add(1, Ordering::Relaxed);
            let mut mac = nonce_mac.clone();
            mac.update(plaintext);
            let digest = mac.finalize().into_bytes();
            digest[..NONCE_LEN]
                .try_into()
                .expect("SHA-256 output is 32 bytes")
        }
    };
    out.reserve(OVERHEAD + plaintext.len());
    out.extend_from_slice(&keys.header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let in_out = &mut out[start + PREFIX_LEN..];
    let tag: Result<[u8; TAG_LEN], ()> = match &keys.cipher {
        VersionCipher::Randomized(gcm) => gcm
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&keys.aad[..]),
                in_out,
            )
            .map(|t| t.as_ref().try_into().expect("GCM tag is 16 bytes"))
            .map_err(|_| ()),
        VersionCipher::Deterministic { siv, .. } => siv
            .encrypt_in_place_detached(&nonce, &keys.aad, in_out)
            .map_err(|_| ()),
    };
    match tag {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(())
        }
        Err(_) => {
            out[start..].zeroize();
            out.truncate(start);
            Err(CryptoError::EncryptionFailed)
        }
    }
}

impl fmt::Debug for ColumnKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Versions<'a>(&'a [VersionKeys]);
        impl fmt::Debug for Versions<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|v| {
                        format!(
                            "v{} {} ({} encryptions)",
                            v.version,
                            v.mode,
                            v.encryptions.load(Ordering::Relaxed)
                        )
                    }))
                    .finish()
            }
        }
        f.debug_struct("ColumnKeys")
            .field("key_name", &self.key_name)
            .field("active_version", &self.active_version())
            .field("versions", &Versions(&self.versions))
            .field("retired", &self.retired)
            .field("encryption_limit", &self.encryption_limit)
            .finish()
    }
}

//! Data keys, the KEK provider trait and the local (file/env) KEK.
//!
//! A data key (DEK) encrypts column values; a key-encryption key (KEK) only
//! wraps DEKs. Real KMS providers implement [`KekProvider`] in the binary
//! crate; [`LocalKek`] is the development provider whose 32 bytes come from a
//! file or an environment variable (the binary does that loading and the
//! permission checks).

use std::fmt;

use aes_gcm::aead::AeadInOut as _;
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::rng::os_random;
use crate::CryptoError;

/// Length of a data key and of a local KEK.
pub const KEY_LEN: usize = 32;

/// A 256-bit data key. Zeroized on drop; `Debug` prints `DataKey(..)`; it has
/// no `Display`, `Clone` or `Serialize` — bytes leave only through a
/// [`KekProvider::wrap`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// A new random key from the operating system's random source.
    ///
    /// # Errors
    /// [`CryptoError::RandomnessUnavailable`] if the OS source fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Self([0u8; KEY_LEN]);
        os_random(&mut key.0)?;
        Ok(key)
    }

    /// Takes ownership of raw key bytes (e.g. just unwrapped by a KMS).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Copies key bytes out of a slice, which the caller should then zeroize.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyMaterial`] unless the slice is 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidKeyMaterial("data key must be 32 bytes"))?;
        Ok(Self(array))
    }

    /// The raw key bytes, for [`KekProvider`] implementations that must send
    /// them to a KMS. Do not log, store or copy them anywhere else.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A key-encryption key that wraps and unwraps data keys.
///
/// Shaped so a cloud KMS fits: the provider may hold no key material at all
/// and call out to a service in `wrap`/`unwrap` (the binary crate runs those
/// calls off the async runtime). `aad` must be authenticated by the wrap and
/// checked by the unwrap; the keyring passes the key name, version and mode
/// there so a wrapped DEK cannot be swapped between keyring entries.
pub trait KekProvider: Send + Sync {
    /// Stable identifier of this KEK (recorded in the keyring).
    fn key_id(&self) -> &str;
    /// When this KEK was created, unix seconds (0 if unknown).
    fn created_at(&self) -> u64;
    /// Encrypts a data key.
    ///
    /// # Errors
    /// Provider-specific; never include key bytes in the error.
    fn wrap(&self, dek: &DataKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
    /// Decrypts a wrapped data key, authenticating `aad`.
    ///
    /// # Errors
    /// [`CryptoError::UnwrapFailed`] if authentication fails.
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey, CryptoError>;
}

/// Format byte of a [`LocalKek`] wrapped key: AES-256-GCM, random nonce.
const LOCAL_WRAP_V1: u8 = 0x01;
/// Length of a [`LocalKek`] wrapped key: format, nonce, key, tag.
const LOCAL_WRAPPED_LEN: usize = 1 + 12 + KEY_LEN + 16;
/// Domain separation for the AAD of local wraps.
const LOCAL_WRAP_LABEL: &[u8] = b"pgveil local-kek wrap v1\0";

/// The development KEK: 32 bytes held in memory, wrapping with AES-256-GCM.
///
/// Wrapped form: `0x01 | nonce(12) | encrypted DEK(32) | tag(16)` (61 bytes),
/// AAD = a fixed label followed by the caller's AAD. The default key id is
/// `local:` + 16 hex digits of HMAC-SHA-256(kek, label): it identifies the KEK
/// (so loading the wrong file fails with a clear [`CryptoError::KekMismatch`])
/// without revealing anything usable about it.
pub struct LocalKek {
    cipher: Aes256Gcm,
    bytes: Zeroizing<[u8; KEY_LEN]>,
    key_id: String,
    created_at: u64,
}

impl LocalKek {
    /// Uses these 32 bytes as the KEK.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let cipher = Aes256Gcm::new(&(*bytes).into());
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(bytes.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(b"pgveil local-kek id v1");
        let fp = mac.finalize().into_bytes();
        let mut key_id = String::from("local:");
        for b in &fp[..8] {
            key_id.push_str(&format!("{b:02x}"));
        }
        Self {
            cipher,
            bytes,
            key_id,
            created_at: 0,
        }
    }

    /// A new random KEK from the OS random source.
    ///
    /// # Errors
    /// [`CryptoError::RandomnessUnavailable`] if the OS source fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        os_random(bytes.as_mut())?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Parses standard base64 of exactly 32 bytes; surrounding ASCII
    /// whitespace (a trailing newline in a key file) is ignored.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyMaterial`]; the input is never echoed.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim_ascii())
                .map_err(|_| CryptoError::InvalidKeyMaterial("KEK is not valid base64"))?,
        );
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidKeyMaterial("KEK must decode to 32 bytes"))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The KEK as standard base64, for writing a new key file (`pgveil keygen`).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// Replaces the derived key id (e.g. to keep an id recorded elsewhere).
    #[must_use]
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// Sets the creation time reported by [`KekProvider::created_at`].
    #[must_use]
    pub fn with_created_at(mut self, unix_seconds: u64) -> Self {
        self.created_at = unix_seconds;
        self
    }
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

fn local_wrap_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(LOCAL_WRAP_LABEL.len() + aad.len());
    full.extend_from_slice(LOCAL_WRAP_LABEL);
    full.extend_from_slice(aad);
    full
}

impl KekProvider for LocalKek {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn created_at(&self) -> u64 {
        self.created_at
    }

    fn wrap(&self, dek: &DataKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; 12];
        os_random(&mut nonce)?;
        let mut out = Vec::with_capacity(LOCAL_WRAPPED_LEN);
        out.push(LOCAL_WRAP_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(dek.expose_secret());
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &local_wrap_aad(aad),
                (&mut out[13..]).into(),
            )
            .map_err(|_| CryptoError::EncryptionFailed)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey, CryptoError> {
        if wrapped.len() != LOCAL_WRAPPED_LEN || wrapped[0] != LOCAL_WRAP_V1 {
            return Err(CryptoError::UnwrapFailed);
        }
        let nonce: [u8; 12] = wrapped[1..13].try_into().expect("length checked");
        let tag: [u8; 16] = wrapped[13 + KEY_LEN..].try_into().expect("length checked");
        let mut key = DataKey([0u8; KEY_LEN]);
        let buf = aes_gcm::aead::inout::InOutBuf::new(&wrapped[13..13 + KEY_LEN], &mut key.0)
            .expect("equal lengths");
        self.cipher
            .decrypt_inout_detached(&Nonce::from(nonce), &local_wrap_aad(aad), buf, &tag.into())
            .map_err(|_| CryptoError::UnwrapFailed)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_aad_binding() {
        let kek = LocalKek::generate().unwrap();
        let dek = DataKey::generate().unwrap();
        let wrapped = kek.wrap(&dek, b"aad-1").unwrap();
        assert_eq!(wrapped.len(), LOCAL_WRAPPED_LEN);
        let back = kek.unwrap(&wrapped, b"aad-1").unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
        assert_eq!(
            kek.unwrap(&wrapped, b"aad-2").unwrap_err(),
            CryptoError::UnwrapFailed
        );
        let other = LocalKek::generate().unwrap();
        assert_eq!(
            other.unwrap(&wrapped, b"aad-1").unwrap_err(),
            CryptoError::UnwrapFailed
        );
        for i in 0..wrapped.len() {
            let mut w = wrapped.clone();
            w[i] ^= 1;
            assert_eq!(
                kek.unwrap(&w, b"aad-1").unwrap_err(),
                CryptoError::UnwrapFailed
            );
        }
        assert_eq!(
            kek.unwrap(&wrapped[..60], b"aad-1").unwrap_err(),
            CryptoError::UnwrapFailed
        );
    }

    #[test]
    fn base64_round_trip_and_stable_id() {
        let kek = LocalKek::generate().unwrap();
        let text = format!("{}\n", kek.to_base64().as_str());
        let again = LocalKek::from_base64(&text).unwrap();
        assert_eq!(again.key_id(), kek.key_id());
        assert!(kek.key_id().starts_with("local:"));
        assert_eq!(kek.key_id().len(), "local:".len() + 16);
        assert!(LocalKek::from_base64("c2hvcnQ=").is_err());
        let err = LocalKek::from_base64("@@secret@@").unwrap_err().to_string();
        assert!(!err.contains("secret"));
    }

    #[test]
    fn debug_is_redacted() {
        let bytes = [0x5a; 32];
        let dek = DataKey::from_bytes(bytes);
        assert_eq!(format!("{dek:?}"), "DataKey(..)");
        let kek = LocalKek::from_bytes(bytes);
        let dbg = format!("{kek:?}");
        assert!(
            !dbg.contains("90, 90") && !dbg.contains("5a5a") && !dbg.contains("Wlpa"),
            "{dbg}"
        );
    }
}

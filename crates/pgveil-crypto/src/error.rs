//! The crate's error type for envelopes, keys and keyrings.
//!
//! Messages name key names, versions and lengths — metadata an operator needs
//! — and never plaintext, ciphertext or key bytes. Value-parsing errors live in
//! [`crate::canonical::CanonicalError`] because the proxy maps them to
//! different SQLSTATEs (bad client input rather than a crypto failure).

use crate::envelope::EncryptionMode;

/// Everything that can go wrong while encrypting, decrypting or managing keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The stored value is neither a binary envelope, a `pgv1:` text envelope
    /// nor a `\x` hex rendering of a binary envelope.
    #[error("value is not a pgveil envelope")]
    NotAnEnvelope,
    /// The format byte names a format or mode this build does not know.
    #[error("unsupported envelope format byte 0x{0:02x}")]
    UnsupportedVersion(u8),
    /// Shorter than the fixed 33-byte envelope overhead.
    #[error("envelope is truncated: {len} bytes, at least {min} required")]
    Truncated {
        /// Length seen.
        len: usize,
        /// Minimum length of any envelope.
        min: usize,
    },
    /// The `pgv1:` base64 payload or the `\x` hex payload is malformed.
    #[error("envelope text encoding is malformed")]
    InvalidEncoding,
    /// The envelope names a key version this key set does not hold.
    #[error("key {key_name} has no version {version}")]
    UnknownKeyVersion {
        /// Key name (`schema.table.column`).
        key_name: String,
        /// Version from the envelope header.
        version: u32,
    },
    /// The envelope names a retired key version: its data key is gone on purpose.
    #[error("key {key_name} version {version} is retired")]
    KeyRetired {
        /// Key name.
        key_name: String,
        /// Retired version.
        version: u32,
    },
    /// The envelope's mode differs from the mode of the key version it names.
    #[error("envelope mode {found} does not match key version mode {expected}")]
    ModeMismatch {
        /// Mode of the key version.
        expected: EncryptionMode,
        /// Mode in the envelope header.
        found: EncryptionMode,
    },
    /// The AEAD tag did not verify: wrong key, wrong column (AAD) or tampering.
    #[error("authentication failed: wrong key, wrong column or modified ciphertext")]
    AuthenticationFailed,
    /// The active randomized data key reached its encryption limit: rotate it.
    #[error(
        "key {key_name} version {version} reached its limit of {limit} encryptions; rotate the key"
    )]
    KeyExhausted {
        /// Key name.
        key_name: String,
        /// Exhausted version.
        version: u32,
        /// Configured limit.
        limit: u64,
    },
    /// The key set has no active version, so it can decrypt but not encrypt.
    #[error("key {0} has no active version")]
    NoActiveKey(String),
    /// Equality lookups need a deterministic key version.
    #[error("key {0} has no deterministic version")]
    NotDeterministic(String),
    /// The AEAD refused the input (only possible past its 64 GiB length limit).
    #[error("encryption failed: value too large")]
    EncryptionFailed,
    /// A key name is not `schema.table.column`.
    #[error("invalid key name {0:?}: expected schema.table.column")]
    InvalidKeyName(String),
    /// No key with that name in the keyring.
    #[error("key {0} not found")]
    KeyNotFound(String),
    /// The keyring already holds a key with that name.
    #[error("key {0} already exists")]
    KeyAlreadyExists(String),
    /// The keyring has no such version of that key.
    #[error("key {key_name} has no version {version}")]
    KeyVersionNotFound {
        /// Key name.
        key_name: String,
        /// Missing version.
        version: u32,
    },
    /// A key version appears twice.
    #[error("key {key_name} version {version} appears twice")]
    DuplicateKeyVersion {
        /// Key name.
        key_name: String,
        /// Duplicated version.
        version: u32,
    },
    /// The active version cannot be retired: rotate first.
    #[error("key {key_name} version {version} is active; rotate before retiring it")]
    CannotRetireActive {
        /// Key name.
        key_name: String,
        /// Active version.
        version: u32,
    },
    /// The KEK offered is not the one the keyring was wrapped with.
    #[error("keyring is wrapped by KEK {expected}, not {found}")]
    KekMismatch {
        /// KEK id recorded in the keyring.
        expected: String,
        /// KEK id offered.
        found: String,
    },
    /// A wrapped data key failed to unwrap (wrong KEK, wrong AAD or corruption).
    #[error("wrapped data key failed to unwrap")]
    UnwrapFailed,
    /// Key material has the wrong length or encoding (contents are not shown).
    #[error("invalid key material: {0}")]
    InvalidKeyMaterial(&'static str),
    /// The keyring document is malformed or violates an invariant.
    #[error("invalid keyring: {0}")]
    InvalidKeyring(String),
    /// An encryption limit above the safe maximum was requested.
    #[error("encryption limit {0} exceeds the safe maximum of 2^32")]
    InvalidEncryptionLimit(u64),
    /// The operating system's random source failed.
    #[error("operating system randomness unavailable")]
    RandomnessUnavailable,
    /// A [`crate::KekProvider`] (e.g. a KMS) failed; the message comes from the provider.
    #[error("KEK provider error: {0}")]
    Kek(String),
}

//! Envelope encryption for protected column values (no I/O).
//!
//! pgveil encrypts each protected value on its way to PostgreSQL and decrypts
//! it on the way back. This crate is the pure part of that: the envelope
//! format, the two AEAD modes, the canonical plaintext of every supported
//! type ([`canonical`]), data keys and their wrapping, and the keyring model.
//! Loading key files, talking to a KMS and storing the keyring happen in the
//! `pgveil` binary through the hooks here ([`KekProvider`], [`KeyringStore`]).
//!
//! # Envelope format (version 1)
//!
//! ```text
//! offset  size  field
//! 0       1     format   0x11 = v1 randomized (AES-256-GCM)
//!                        0x12 = v1 deterministic (AES-256-GCM-SIV)
//! 1       4     key_id   u32 big-endian: version number (1, 2, …) of the data
//!                        key of the column's key name
//! 5       12    nonce    randomized: 96 random bits from the CSPRNG
//!                        deterministic: first 12 bytes of HMAC-SHA-256(k_nonce, plaintext)
//! 17      n     ciphertext  (n = plaintext length)
//! 17+n    16    tag
//! ```
//!
//! Overhead is 33 bytes ([`envelope::OVERHEAD`]). The format byte's high
//! nibble is the format version (1), its low nibble the mode, so randomized
//! and deterministic envelopes are distinguishable without a key. Bytes
//! `0x01..=0x1f` are reserved for future formats; they never start the text
//! forms below. `key_id` 0 is never issued.
//!
//! The key *name* is not stored: it is implied by the column being read (the
//! policy maps each protected column to a key name) and is bound through the
//! associated data instead.
//!
//! ## Associated data
//!
//! `AAD = format(1) | key_id(4) | key name (UTF-8)`, i.e. the envelope's first
//! five bytes followed by the key name `schema.table.column`. So a ciphertext
//! only decrypts under the key name, key version and mode it was made with:
//! copied into a column with another key name it fails authentication. Several
//! columns may share one key name by policy (e.g. `visits.patient_ssn` uses key
//! `public.patients.ssn`) and then intentionally share AAD, which is what makes
//! their deterministic ciphertexts equal and joinable; values can then be moved
//! between those columns undetected.
//!
//! ## Storage encodings
//!
//! * `bytea` columns store the binary envelope as is.
//! * `text`/`varchar` columns store `pgv1:` + standard padded base64 of it
//!   ([`encode_text`]), so existing text columns need no DDL.
//!
//! [`decode`] recognises both (and the `\x` hex text rendering of a `bytea`
//! value) and rejects anything else with a typed [`CryptoError`].
//!
//! # Key hierarchy
//!
//! A KEK ([`KekProvider`]; [`LocalKek`] for development) wraps one random
//! 256-bit [`DataKey`] per (key name, version). Each data key is split with
//! HKDF-SHA-256 (salt `pgveil data-key v1`, info = label ‖ 0 ‖ version ‖ key
//! name) into the subkey its mode needs: an AES-256-GCM key, or an
//! AES-256-GCM-SIV key plus an HMAC-SHA-256 key for the synthetic nonce.
//! [`ColumnKeys`] holds these ciphers, initialised once, for every non-retired
//! version of one key name.
//!
//! # Randomized mode
//!
//! AES-256-GCM (the `ring` implementation: on this class of CPU it is about
//! twice as fast as RustCrypto's `aes-gcm` for values up to a few hundred
//! bytes, which is what columns hold; both are pinned to the NIST vectors and
//! produce identical envelopes) with a fresh random 96-bit nonce from a per-thread buffered
//! ChaCha CSPRNG seeded and periodically reseeded from the OS (see [`rng`] for
//! fork considerations). Equal plaintexts yield unrelated ciphertexts; such
//! columns support storage and retrieval only. Each version counts its
//! encryptions and refuses with [`CryptoError::KeyExhausted`] past a limit
//! (default 2^31, at most 2^32): rotate before then.
//!
//! # Deterministic mode and what it leaks
//!
//! AES-256-GCM-SIV (RFC 8452) with nonce = HMAC-SHA-256(k_nonce, plaintext)
//! truncated to 96 bits: equal plaintexts under the same key name and version
//! give byte-identical envelopes, so equality predicates, joins, `GROUP BY` and
//! unique indexes work on ciphertext. Different key names or versions give
//! unrelated ciphertexts.
//!
//! It leaks, to anyone who can read the stored column:
//! * **equality**: which rows hold the same value (across all columns sharing
//!   the key name);
//! * **frequency**: how often each value occurs, which with outside knowledge
//!   of the distribution (e.g. common surnames) can reveal values;
//! * **length**: the plaintext length (randomized mode leaks this too).
//!
//! It does not leak order, prefixes or any relation between unequal values,
//! and without the key it does not let anyone test a guessed value (the
//! nonce is keyed). After a rotation, equal values under different versions
//! differ, which is why lookups use [`ColumnKeys::encrypt_all_versions`].
//!
//! # Plaintext and NULL
//!
//! Values are encrypted in their canonical text form ([`canonical`]), so a
//! text-format and a binary-format client produce the same plaintext. SQL
//! NULL is never encrypted: it stays NULL in storage (NULL-ness is visible).
//!
//! # Secrets in memory and in messages
//!
//! Key material ([`DataKey`], [`LocalKek`], derived subkeys, cipher key
//! schedules) is zeroized on drop and prints redacted in `Debug`. Error
//! messages carry key names, versions and lengths only — never plaintext,
//! ciphertext or key bytes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod canonical;
mod column;
pub mod envelope;
mod error;
mod kdf;
mod keyring;
mod keys;
pub mod rng;
mod siv;

#[cfg(test)]
mod kat;

pub use column::{validate_key_name, ColumnKeys, DEFAULT_ENCRYPTION_LIMIT, MAX_ENCRYPTION_LIMIT};
pub use envelope::{
    decode, encode_bytea_hex, encode_bytea_hex_into, encode_text, encode_text_into, EncryptionMode,
    EnvelopeHeader,
};
pub use error::CryptoError;
pub use keyring::{KeyInfo, KeyState, Keyring, KeyringStore, KEYRING_FORMAT};
pub use keys::{DataKey, KekProvider, LocalKek, KEY_LEN};
pub use zeroize::Zeroizing;

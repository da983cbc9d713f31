//! Randomness: buffered nonces for per-value encryption, OS entropy for keys.
//!
//! A `getrandom` syscall costs about 450 ns here — more than encrypting a
//! small value — so nonces come from rand's `ThreadRng`: a per-thread ChaCha12
//! generator seeded from the OS, buffering 256 bytes of output per refill and
//! reseeding from the OS after every 64 KiB it produces.
//!
//! Fork safety: on Unix rand registers a `pthread_atfork` handler and reseeds
//! a thread's generator the next time it refills after a fork, but up to one
//! buffered block (256 bytes, about 21 nonces) may be handed out by both
//! parent and child. pgveil never forks after start-up; a program that forks
//! and then encrypts in both processes must not use this crate across the
//! fork without first draining or replacing its threads.
//!
//! Long-lived keys ([`crate::DataKey`], [`crate::LocalKek`]) and key-wrap
//! nonces come straight from the OS ([`OsRng`]) instead.

use rand::rngs::OsRng;
use rand::RngCore as _;

use crate::envelope::NONCE_LEN;
use crate::CryptoError;

/// A fresh 96-bit nonce from the calling thread's buffered CSPRNG.
///
/// # Panics
/// Only if the OS random source fails while seeding this thread's generator
/// (rand's `ThreadRng` panics then); Linux's `getrandom` does not fail once
/// the system has booted.
#[inline]
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn os_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|_| CryptoError::RandomnessUnavailable)
}

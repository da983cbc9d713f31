//! AES-256-GCM-SIV (RFC 8452) for the deterministic mode, composed from the
//! `aes` block cipher and `polyval`.
//!
//! The same construction as the `aes-gcm-siv` crate (which stays a
//! dev-dependency: the tests below check this one against it on random
//! inputs, and `kat.rs` against the RFC's vectors), arranged for short
//! values: the six blocks of the per-nonce key derivation are encrypted in
//! one call, and the counter-mode keystream in batches, instead of one
//! block-cipher call per block (each of which re-prepares the round keys on
//! CPUs with VAES). Derived keys and keystream are wiped after use.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes256, Block};
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// Tag length.
pub(crate) const TAG_LEN: usize = 16;
/// RFC 8452 limits on plaintext and associated data (2^36 bytes).
const MAX_LEN: u64 = 1 << 36;
/// Keystream blocks per block-cipher call.
const BATCH: usize = 8;

/// The message was longer than RFC 8452 allows, or did not authenticate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SivError;

/// AES-256-GCM-SIV under one key-generating key.
#[derive(Clone)]
pub(crate) struct Aes256GcmSiv {
    key_generating_key: Aes256,
}

impl std::fmt::Debug for Aes256GcmSiv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes256GcmSiv(..)")
    }
}

impl Aes256GcmSiv {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Aes256GcmSiv {
            key_generating_key: Aes256::new(key.into()),
        }
    }

    /// The per-nonce message-authentication and message-encryption keys
    /// (RFC 8452 §4: blocks `LE32(i) || nonce` for i in 0..6, the first
    /// half of each encrypted block).
    fn derive(&self, nonce: &[u8; NONCE_LEN]) -> (Polyval, Aes256) {
        let mut blocks = [Block::default(); 6];
        for (i, b) in blocks.iter_mut().enumerate() {
            b[..4].copy_from_slice(&(i as u32).to_le_bytes());
            b[4..].copy_from_slice(nonce);
        }
        self.key_generating_key.encrypt_blocks(&mut blocks);
        let mut mac_key = [0u8; 16];
        let mut enc_key = [0u8; 32];
        for (i, b) in blocks.iter().enumerate() {
            let half = &b[..8];
            match i {
                0 | 1 => mac_key[8 * i..8 * i + 8].copy_from_slice(half),
                _ => enc_key[8 * (i - 2)..8 * (i - 2) + 8].copy_from_slice(half),
            }
        }
        // Borrowed as arrays, not copied (a copy would not be wiped).
        let keys = (
            Polyval::new((&mac_key).into()),
            Aes256::new((&enc_key).into()),
        );
        mac_key.zeroize();
        enc_key.zeroize();
        for b in &mut blocks {
            b.as_mut_slice().zeroize();
        }
        keys
    }

    /// The tag of `message` (plaintext): POLYVAL over the padded associated
    /// data, the padded message and their bit lengths, XOR the nonce, top
    /// bit cleared, encrypted.
    fn tag(
        mut polyval: Polyval,
        cipher: &Aes256,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        message: &[u8],
    ) -> [u8; TAG_LEN] {
        polyval.update_padded(aad);
        polyval.update_padded(message);
        let mut lengths = polyval::Block::default();
        lengths[..8].copy_from_slice(&(aad.len() as u64 * 8).to_le_bytes());
        lengths[8..].copy_from_slice(&(message.len() as u64 * 8).to_le_bytes());
        polyval.update(&[lengths]);
        let mut s = polyval.finalize();
        let mut block = Block::default();
        block.copy_from_slice(&s);
        // S_s of a known plaintext says something about this nonce's
        // authentication key: wiped.
        s.as_mut_slice().zeroize();
        for (b, n) in block[..NONCE_LEN].iter_mut().zip(nonce) {
            *b ^= n;
        }
        block[15] &= 0x7f;
        cipher.encrypt_block(&mut block);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&block);
        tag
    }

    /// Counter mode from the tag (top bit set; 32-bit little-endian counter
    /// in the first four bytes, wrapping), XORed into `buf`.
    fn ctr(cipher: &Aes256, tag: &[u8; TAG_LEN], buf: &mut [u8]) {
        let mut counter = *tag;
        counter[15] |= 0x80;
        let mut n = u32::from_le_bytes([counter[0], counter[1], counter[2], counter[3]]);
        let mut keystream = [Block::default(); BATCH];
        for chunk in buf.chunks_mut(16 * BATCH) {
            let blocks = chunk.len().div_ceil(16);
            for b in &mut keystream[..blocks] {
                b.copy_from_slice(&counter);
                b[..4].copy_from_slice(&n.to_le_bytes());
                n = n.wrapping_add(1);
            }
            cipher.encrypt_blocks(&mut keystream[..blocks]);
            for (i, byte) in chunk.iter_mut().enumerate() {
                *byte ^= keystream[i / 16][i % 16];
            }
        }
        for b in &mut keystream {
            b.as_mut_slice().zeroize();
        }
    }

    /// Encrypts `buf` in place; returns the tag.
    pub(crate) fn encrypt_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SivError> {
        if buf.len() as u64 > MAX_LEN || aad.len() as u64 > MAX_LEN {
            return Err(SivError);
        }
        let (polyval, cipher) = self.derive(nonce);
        let tag = Self::tag(polyval, &cipher, nonce, aad, buf);
        Self::ctr(&cipher, &tag, buf);
        Ok(tag)
    }

    /// Decrypts `buf` in place and checks the tag; on failure `buf` is
    /// wiped.
    pub(crate) fn decrypt_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), SivError> {
        if buf.len() as u64 > MAX_LEN || aad.len() as u64 > MAX_LEN {
            return Err(SivError);
        }
        let (polyval, cipher) = self.derive(nonce);
        Self::ctr(&cipher, tag, buf);
        let expected = Self::tag(polyval, &cipher, nonce, aad, buf);
        if bool::from(expected.ct_eq(tag)) {
            Ok(())
        } else {
            buf.zeroize();
            Err(SivError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm_siv::aead::AeadInOut;

    /// A small deterministic generator for the differential test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn equals_the_aes_gcm_siv_crate_on_random_inputs() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..2_000 {
            let key: [u8; 32] = rng.bytes(32).try_into().unwrap();
            let nonce: [u8; 12] = rng.bytes(12).try_into().unwrap();
            // Lengths around block and batch boundaries, and long ones.
            let len = match round % 4 {
                0 => (rng.next() % 40) as usize,
                1 => (rng.next() % 300) as usize,
                2 => 16 * BATCH * ((rng.next() % 3) as usize) + (rng.next() % 17) as usize,
                _ => (rng.next() % 4_000) as usize,
            };
            let plain = rng.bytes(len);
            let aad_len = (rng.next() % 70) as usize;
            let aad = rng.bytes(aad_len);
            let ours = Aes256GcmSiv::new(&key);
            let theirs = aes_gcm_siv::Aes256GcmSiv::new(&key.into());

            let mut a = plain.clone();
            let tag = ours
                .encrypt_in_place_detached(&nonce, &aad, &mut a)
                .unwrap();
            let mut b = plain.clone();
            let their_tag = theirs
                .encrypt_inout_detached(&nonce.into(), &aad, b.as_mut_slice().into())
                .unwrap();
            assert_eq!(
                (a.as_slice(), &tag[..]),
                (b.as_slice(), their_tag.as_slice()),
                "round {round}"
            );

            ours.decrypt_in_place_detached(&nonce, &aad, &mut a, &tag)
                .unwrap();
            assert_eq!(a, plain);

            // Any flipped bit of the ciphertext, tag or associated data fails
            // and leaves nothing of the plaintext behind.
            let mut c = b.clone();
            if !c.is_empty() {
                let at = (rng.next() as usize) % c.len();
                c[at] ^= 1 << (rng.next() % 8);
                assert_eq!(
                    ours.decrypt_in_place_detached(&nonce, &aad, &mut c, &tag),
                    Err(SivError)
                );
                assert!(c.iter().all(|&x| x == 0));
            }
            let mut bad_tag = tag;
            bad_tag[(rng.next() % 16) as usize] ^= 0x40;
            let mut c = b.clone();
            assert_eq!(
                ours.decrypt_in_place_detached(&nonce, &aad, &mut c, &bad_tag),
                Err(SivError)
            );
            assert!(c.iter().all(|&x| x == 0));
            let mut other_aad = aad.clone();
            other_aad.push(0);
            let mut c = b.clone();
            assert_eq!(
                ours.decrypt_in_place_detached(&nonce, &other_aad, &mut c, &tag),
                Err(SivError)
            );
            assert!(c.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn counter_wraps_as_rfc_8452_says() {
        // A tag whose counter field is 0xffffffff: the keystream wraps to 0
        // in the first four bytes only (RFC 8452 §4; kat.rs checks the
        // RFC's own counter-wrap vectors, C.3).
        let key = [7u8; 32];
        let nonce = [9u8; 12];
        let ours = Aes256GcmSiv::new(&key);
        let (_, cipher) = ours.derive(&nonce);
        let tag = [0xffu8; 16];
        let mut a = vec![0u8; 64];
        Aes256GcmSiv::ctr(&cipher, &tag, &mut a);
        let mut expect = Vec::new();
        for n in [0xffff_ffffu32, 0, 1, 2] {
            let mut b = Block::default();
            b.copy_from_slice(&tag);
            b[..4].copy_from_slice(&n.to_le_bytes());
            cipher.encrypt_block(&mut b);
            expect.extend_from_slice(&b);
        }
        assert_eq!(a, expect);
    }
}

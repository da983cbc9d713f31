//! HKDF-SHA-256 (RFC 5869), built on `hmac` so no extra crate is needed.
//!
//! Used once per key version to split a data key into independent subkeys.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// HKDF-Extract: `PRK = HMAC-SHA-256(salt, ikm)`.
pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC accepts any key length");
    mac.update(ikm);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// HKDF-Expand into `out` (at most 255 × 32 bytes).
pub(crate) fn expand(prk: &[u8; 32], info: &[&[u8]], out: &mut [u8]) {
    assert!(out.len() <= 255 * 32, "HKDF-Expand output too long");
    let base = HmacSha256::new_from_slice(prk).expect("HMAC accepts any key length");
    let mut previous: Option<Zeroizing<[u8; 32]>> = None;
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let mut mac = base.clone();
        if let Some(prev) = &previous {
            mac.update(prev.as_ref());
        }
        for part in info {
            mac.update(part);
        }
        mac.update(&[u8::try_from(i + 1).expect("bounded by the assert above")]);
        let block: Zeroizing<[u8; 32]> = Zeroizing::new(mac.finalize().into_bytes().into());
        chunk.copy_from_slice(&block[..chunk.len()]);
        previous = Some(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5869 Appendix A.1 (SHA-256, basic).
    #[test]
    fn rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex("000102030405060708090a0b0c");
        let info = hex("f0f1f2f3f4f5f6f7f8f9");
        let prk = extract(&salt, &ikm);
        assert_eq!(
            prk.to_vec(),
            hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let mut okm = [0u8; 42];
        expand(&prk, &[&info], &mut okm);
        assert_eq!(
            okm.to_vec(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    /// RFC 5869 Appendix A.3 (SHA-256, empty salt and info).
    #[test]
    fn rfc5869_case_3() {
        let prk = extract(&[], &[0x0b; 22]);
        let mut okm = [0u8; 42];
        expand(&prk, &[], &mut okm);
        assert_eq!(
            okm.to_vec(),
            hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
        );
    }
}

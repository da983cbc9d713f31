//! Query cancellation across the proxy.
//!
//! A client cancels by opening a *new* connection and sending the
//! `(process id, secret)` it received in `BackendKeyData`. pgveil never shows
//! clients the upstream backend's real key: it mints its own per session and
//! maps it to the upstream key, so a cancel reaches exactly the backend serving
//! that session and a guessed key cannot target a backend directly.

use bytes::Bytes;
use pgveil_wire::backend::BackendKeyData;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<u32, Entry>>,
}

struct Entry {
    secret: Bytes,
    upstream: BackendKeyData,
}

/// Removes a session's key from the registry when the session ends.
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    process_id: u32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.process_id);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert/remove/get), so poisoning is ignored.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mints the key shown to the client for a session whose upstream key is
    /// `upstream`.
    pub fn register(self: &Arc<Self>, upstream: BackendKeyData) -> (BackendKeyData, CancelGuard) {
        let mut rng = rand::thread_rng();
        let mut secret = vec![0u8; upstream.secret.len()];
        rng.fill_bytes(&mut secret);
        let secret = Bytes::from(secret);
        let mut map = self.lock();
        let process_id = loop {
            let pid = rng.next_u32() & 0x7fff_ffff;
            if pid != 0 && !map.contains_key(&pid) {
                break pid;
            }
        };
        map.insert(
            process_id,
            Entry {
                secret: secret.clone(),
                upstream,
            },
        );
        drop(map);
        (
            BackendKeyData { process_id, secret },
            CancelGuard {
                registry: self.clone(),
                process_id,
            },
        )
    }

    /// The upstream key for a client's cancel request, if the key is genuine.
    /// The secret is compared in constant time.
    pub fn lookup(&self, process_id: u32, secret: &[u8]) -> Option<BackendKeyData> {
        let map = self.lock();
        let e = map.get(&process_id)?;
        if e.secret.len() == secret.len() && bool::from(e.secret.as_ref().ct_eq(secret)) {
            Some(e.upstream.clone())
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_and_drop() {
        let r = Arc::new(CancelRegistry::default());
        let up = BackendKeyData {
            process_id: 4242,
            secret: Bytes::from_static(&[9, 9, 9, 9]),
        };
        let (minted, guard) = r.register(up.clone());
        assert_ne!(minted.secret, up.secret);
        assert_eq!(r.lookup(minted.process_id, &minted.secret), Some(up));
        assert_eq!(r.lookup(minted.process_id, &[0, 0, 0, 0]), None);
        assert_eq!(r.lookup(minted.process_id, &minted.secret[..3]), None);
        drop(guard);
        assert!(r.is_empty());
    }
}

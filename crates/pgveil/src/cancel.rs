//! Query cancellation across the proxy.
//!
//! A client cancels by opening a *new* connection and sending the
//! `(process id, secret)` it received in `BackendKeyData`. pgveil shows
//! clients the backend's real process id — `pg_backend_pid()`,
//! notifications, `pg_terminate_backend()` and connection pools use it and
//! compare it with the key — but never the backend's secret: it mints its
//! own per session and maps it to the upstream key, so a cancel reaches
//! exactly the backend serving that session and a key seen elsewhere (a
//! process id is no secret) cannot target a backend directly.

use bytes::Bytes;
use pgveil_wire::backend::BackendKeyData;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<u32, Entry>>,
    serial: AtomicU64,
}

struct Entry {
    secret: Bytes,
    upstream: BackendKeyData,
    /// Which registration made the entry: a process id the server reuses
    /// while an older session is still ending must not lose the new entry
    /// when the old session's guard drops.
    serial: u64,
}

/// Removes a session's key from the registry when the session ends.
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    key: Option<(u32, u64)>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some((pid, serial)) = self.key {
            let mut map = self.registry.lock();
            if map.get(&pid).is_some_and(|e| e.serial == serial) {
                map.remove(&pid);
            }
        }
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert/remove/get), so poisoning is ignored.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key shown to the client for a session whose upstream key is
    /// `upstream`: the same process id, a fresh secret of the same length.
    pub fn register(self: &Arc<Self>, upstream: BackendKeyData) -> (BackendKeyData, CancelGuard) {
        let mut secret = vec![0u8; upstream.secret.len()];
        rand::thread_rng().fill_bytes(&mut secret);
        let secret = Bytes::from(secret);
        let process_id = upstream.process_id;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            process_id,
            Entry {
                secret: secret.clone(),
                upstream,
                serial,
            },
        );
        (
            BackendKeyData { process_id, secret },
            CancelGuard {
                registry: self.clone(),
                key: Some((process_id, serial)),
            },
        )
    }

    /// A guard for a session the server gave no key: nothing can cancel it.
    pub fn unregistered(self: &Arc<Self>) -> CancelGuard {
        CancelGuard {
            registry: self.clone(),
            key: None,
        }
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
        assert_eq!(minted.process_id, up.process_id, "the real process id");
        assert_ne!(minted.secret, up.secret);
        assert_eq!(r.lookup(minted.process_id, &minted.secret), Some(up));
        assert_eq!(r.lookup(minted.process_id, &[0, 0, 0, 0]), None);
        assert_eq!(r.lookup(minted.process_id, &minted.secret[..3]), None);
        drop(guard);
        assert!(r.is_empty());
    }

    #[test]
    fn a_reused_process_id_keeps_the_newer_session() {
        let r = Arc::new(CancelRegistry::default());
        let up = |s: u8| BackendKeyData {
            process_id: 7,
            secret: Bytes::from(vec![s; 4]),
        };
        let (_, old) = r.register(up(1));
        let (new_key, new) = r.register(up(2));
        drop(old);
        assert_eq!(r.lookup(7, &new_key.secret), Some(up(2)));
        drop(new);
        assert!(r.is_empty());
        drop(r.unregistered());
    }
}

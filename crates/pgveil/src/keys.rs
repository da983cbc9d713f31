//! The I/O side of keys: KEK providers (`file`, `env`), the keyring file with
//! atomic compare-and-set writes, and the `pgveil keys …` commands.
//!
//! The pure model (wrapping, versions, states) is `pgveil_crypto::Keyring`.

use crate::config::{Config, KekProviderKind};
use pgveil_crypto::{
    CryptoError, EncryptionMode, KekProvider, KeyState, Keyring, KeyringStore, LocalKek,
};
use pgveil_policy::{Mode, Policy};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("KEK file {path} is readable or writable by group/other (mode {mode:04o}); run: chmod 600 {path}")]
    KekFilePermissions { path: String, mode: u32 },
    #[error("cannot read KEK file {path}: {source} (create one with `pgveil keys init`)")]
    KekFileRead {
        path: String,
        source: std::io::Error,
    },
    #[error("environment variable {0} with the base64 KEK is not set")]
    KekEnvMissing(String),
    #[error("KEK from {origin}: {source}")]
    KekInvalid { origin: String, source: CryptoError },
    #[error("keyring {path} does not exist; create it with `pgveil keys init`")]
    KeyringMissing { path: String },
    #[error("keyring {path}: {source}")]
    KeyringInvalid { path: String, source: CryptoError },
    #[error("key {key}: the policy says {policy} but the keyring's active version is {keyring}; ciphertext would not match the column's searches. Rotate the key with the policy's mode (`pgveil keys rotate`) or fix the policy")]
    ModeMismatch {
        key: String,
        policy: &'static str,
        keyring: &'static str,
    },
    #[error("keyring {path} was changed by someone else (revision {found}, expected {expected}); re-run the command")]
    Conflict {
        path: String,
        found: u64,
        expected: u64,
    },
    #[error("keyring {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    Policy(String),
    #[error("no policy file configured (policy.file)")]
    NoPolicy,
    #[error("{column} is not a protected column in the policy")]
    UnknownColumn { column: String },
    #[error("KEK file {0} already exists; refusing to overwrite it")]
    KekExists(String),
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Loads the KEK the configuration names.
///
/// A `file` KEK must be readable by its owner only; its `created_at` is the
/// file's modification time. An `env` KEK's creation time is unknown (0).
pub fn load_kek(cfg: &Config) -> Result<LocalKek, KeysError> {
    match cfg.keys.kek_provider {
        KekProviderKind::File => load_kek_file(&cfg.kek_file()),
        KekProviderKind::Env => {
            let var = &cfg.keys.kek_env;
            let value = std::env::var(var).map_err(|_| KeysError::KekEnvMissing(var.clone()))?;
            LocalKek::from_base64(&value).map_err(|source| KeysError::KekInvalid {
                origin: format!("${var}"),
                source,
            })
        }
    }
}

pub fn load_kek_file(path: &Path) -> Result<LocalKek, KeysError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeysError::KekFileRead {
        path: shown.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeysError::KekFilePermissions { path: shown, mode });
    }
    let text = pgveil_crypto::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        KeysError::KekFileRead {
            path: shown.clone(),
            source,
        }
    })?);
    let created = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(LocalKek::from_base64(&text)
        .map_err(|source| KeysError::KekInvalid {
            origin: shown,
            source,
        })?
        .with_created_at(created))
}

/// The keyring as a JSON file, replaced atomically (temp file in the same
/// directory, fsync, rename, fsync of the directory) and compare-and-set on
/// the document's revision.
pub struct FileKeyringStore {
    path: PathBuf,
}

impl FileKeyringStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn io(&self, source: std::io::Error) -> KeysError {
        KeysError::Io {
            path: self.shown(),
            source,
        }
    }
}

impl KeyringStore for FileKeyringStore {
    type Error = KeysError;

    fn load(&self) -> Result<Keyring, KeysError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeysError::KeyringMissing { path: self.shown() })
            }
            Err(e) => return Err(self.io(e)),
        };
        Keyring::from_json(&text).map_err(|source| KeysError::KeyringInvalid {
            path: self.shown(),
            source,
        })
    }

    fn store(&self, keyring: &Keyring) -> Result<(), KeysError> {
        // Compare-and-set under an exclusive lock (a `.lock` file beside the
        // keyring), so two processes cannot both pass the check and both
        // replace the file: one of two concurrent rotations gets Conflict.
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        // The file must still be at the revision we loaded.
        let current = match self.load() {
            Ok(k) => k.revision(),
            Err(KeysError::KeyringMissing { .. }) => 0,
            Err(e) => return Err(e),
        };
        if current != keyring.loaded_revision() {
            return Err(KeysError::Conflict {
                path: self.shown(),
                found: current,
                expected: keyring.loaded_revision(),
            });
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".pgveil-keyring.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| self.io(e))?;
        tmp.write_all(keyring.to_json().as_bytes())
            .map_err(|e| self.io(e))?;
        tmp.as_file().sync_all().map_err(|e| self.io(e))?;
        tmp.persist(&self.path).map_err(|e| self.io(e.error))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))?;
        Ok(())
    }
}

/// Loads the policy the configuration names.
pub fn load_policy(cfg: &Config) -> Result<Policy, KeysError> {
    let path = cfg.policy_file().ok_or(KeysError::NoPolicy)?;
    let src = std::fs::read_to_string(&path).map_err(|source| KeysError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Policy::from_toml_str(&src, &path.display().to_string())
        .map_err(|e| KeysError::Policy(e.to_string()))
}

fn mode_of(m: Mode) -> EncryptionMode {
    match m {
        Mode::Randomized => EncryptionMode::Randomized,
        Mode::Deterministic => EncryptionMode::Deterministic,
    }
}

/// `pgveil keys init`: creates the development KEK file (file provider, if
/// absent) and the keyring, and adds version 1 of every key the policy needs
/// that the keyring lacks. Safe to run again after the policy grows.
pub fn init(cfg: &Config, out: &mut dyn Write) -> Result<(), KeysError> {
    let policy = load_policy(cfg)?;
    if cfg.keys.kek_provider == KekProviderKind::File && !cfg.kek_file().exists() {
        let kek = LocalKek::generate()?;
        let path = cfg.kek_file();
        crate::certs::write_private(&path, &format!("{}\n", kek.to_base64().as_str())).map_err(
            |source| KeysError::Io {
                path: path.display().to_string(),
                source,
            },
        )?;
        let _ = writeln!(
            out,
            "created KEK file {} (mode 0600; development only: use a KMS in production)",
            path.display()
        );
    }
    let kek = load_kek(cfg)?;
    let store = FileKeyringStore::new(cfg.keyring_file());
    let mut ring = if store.exists() {
        store.load()?
    } else {
        Keyring::new(kek.key_id())
    };
    let mut added = 0;
    for key in policy.keys() {
        let name = key.name.to_string();
        if ring.active_version(&name).is_none() && !ring.names().any(|n| n == name) {
            ring.add_key(&name, mode_of(key.mode), now(), &kek)?;
            let _ = writeln!(out, "added key {name} v1 ({})", key.mode.as_str());
            added += 1;
        }
    }
    if added > 0 || !store.exists() {
        store.store(&ring)?;
    }
    let _ = writeln!(
        out,
        "keyring {}: {} key name(s), {} added",
        store.path().display(),
        ring.names().count(),
        added
    );
    Ok(())
}

/// `pgveil keys list`: ids, columns, versions, ages, states. Never key bytes.
pub fn list(cfg: &Config, out: &mut dyn Write) -> Result<(), KeysError> {
    let store = FileKeyringStore::new(cfg.keyring_file());
    let ring = store.load()?;
    let policy = load_policy(cfg).ok();
    let now = now();
    let _ = writeln!(
        out,
        "keyring {} (KEK {})",
        store.path().display(),
        ring.kek_id()
    );
    let _ = writeln!(
        out,
        "{:<36} {:>3} {:<13} {:<12} {:<10} {:>8}  columns",
        "key", "ver", "mode", "state", "created", "age_days"
    );
    for k in ring.list() {
        let columns = policy
            .as_ref()
            .and_then(|p| p.keys().find(|ki| ki.name.to_string() == k.name))
            .map(|ki| {
                ki.columns
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "(not in policy)".into());
        let mode = match k.mode {
            EncryptionMode::Randomized => "randomized",
            EncryptionMode::Deterministic => "deterministic",
        };
        let _ = writeln!(
            out,
            "{:<36} {:>3} {:<13} {:<12} {:<10} {:>8}  {}",
            k.name,
            k.version,
            mode,
            k.state.to_string(),
            iso_date(k.created_at),
            now.saturating_sub(k.created_at) / 86_400,
            columns
        );
    }
    Ok(())
}

/// `pgveil keys rotate --column schema.table.column`: a new active version of
/// the column's key; the previous one becomes decrypt-only. A column that
/// shares another column's key rotates that key (for all its columns).
pub fn rotate(cfg: &Config, column: &str, out: &mut dyn Write) -> Result<(), KeysError> {
    let policy = load_policy(cfg)?;
    let protected = protected_column(&policy, column)?;
    let (col, key_name) = (protected.column.clone(), protected.key.to_string());
    let kek = load_kek(cfg)?;
    let store = FileKeyringStore::new(cfg.keyring_file());
    let mut ring = store.load()?;
    let old = ring.active_version(&key_name);
    let v = ring.rotate(&key_name, now(), &kek)?;
    store.store(&ring)?;
    if key_name != col.to_string() {
        let _ = writeln!(out, "{column} uses key {key_name}; rotated that key");
    }
    let _ = writeln!(
        out,
        "{key_name}: v{v} is active; {} decrypt-only",
        old.map(|o| format!("v{o} is now"))
            .unwrap_or_else(|| "no version was".into())
    );
    Ok(())
}

/// The policy's protected column named `schema.table.column`.
pub fn protected_column<'p>(
    policy: &'p Policy,
    column: &str,
) -> Result<&'p pgveil_policy::ProtectedColumn, KeysError> {
    let col =
        pgveil_policy::ColumnRef::parse(column).map_err(|e| KeysError::Policy(e.to_string()))?;
    policy
        .lookup_column(&col)
        .ok_or_else(|| KeysError::UnknownColumn {
            column: column.to_string(),
        })
}

/// `YYYY-MM-DD` of a unix time (UTC), without a date library.
pub fn iso_date(unix: u64) -> String {
    let (y, m, d) = pgveil_crypto::canonical::civil_from_days((unix / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Loads the policy, KEK and keyring, checks that every policy key unwraps,
/// and returns the creation time of every active data key and of the KEK.
pub fn key_ages(cfg: &Config) -> Result<Vec<crate::server::KeyAge>, KeysError> {
    let policy = load_policy(cfg)?;
    let kek = load_kek(cfg)?;
    let ring = FileKeyringStore::new(cfg.keyring_file()).load()?;
    // A KEK whose creation time is unknown (env provider) has no age series
    // rather than one that claims 1970 and trips every rotation alert.
    let mut out: Vec<crate::server::KeyAge> = (kek.created_at() > 0)
        .then(|| crate::server::KeyAge {
            key_id: kek.key_id().to_string(),
            column: "kek".into(),
            created_at: kek.created_at(),
        })
        .into_iter()
        .collect();
    for key in policy.keys() {
        let name = key.name.to_string();
        ring.column_keys(&name, &kek)?;
        for info in ring
            .list()
            .filter(|k| k.name == name && k.state == KeyState::Active)
        {
            for column in &key.columns {
                out.push(crate::server::KeyAge {
                    key_id: format!("{name}/v{}", info.version),
                    column: column.to_string(),
                    created_at: info.created_at,
                });
            }
        }
    }
    Ok(out)
}

/// Builds the rewriting engine: the policy and, for every data key it
/// needs, the unwrapped keys (with the configured encryption limit). A key
/// that cannot be loaded is an error: pgveil does not start (or reload)
/// with a policy it cannot serve.
pub fn engine(
    cfg: &Config,
    stats: &dyn Fn(&pgveil_policy::ColumnRef) -> std::sync::Arc<pgveil_rewrite::ColumnStats>,
) -> Result<pgveil_rewrite::Engine, KeysError> {
    let policy = load_policy(cfg)?;
    let kek = load_kek(cfg)?;
    let ring = FileKeyringStore::new(cfg.keyring_file()).load()?;
    let mut set = pgveil_rewrite::KeySet::new();
    for c in policy.columns() {
        set.use_stats(c.column.clone(), stats(&c.column));
    }
    for key in policy.keys() {
        let name = key.name.to_string();
        let want = match key.mode {
            pgveil_policy::Mode::Randomized => pgveil_crypto::EncryptionMode::Randomized,
            pgveil_policy::Mode::Deterministic => pgveil_crypto::EncryptionMode::Deterministic,
        };
        let active = ring
            .list()
            .filter(|k| k.name == name && k.state == KeyState::Active)
            .map(|k| k.mode)
            .next();
        if let Some(have) = active.filter(|m| *m != want) {
            return Err(KeysError::ModeMismatch {
                key: name,
                policy: want.as_str(),
                keyring: have.as_str(),
            });
        }
        let mut keys = ring.column_keys(&name, &kek)?;
        keys.set_encryption_limit(cfg.keys.max_encryptions_per_key)?;
        set.insert(key.name.clone(), Ok(keys));
    }
    Ok(pgveil_rewrite::Engine::new(
        std::sync::Arc::new(policy),
        set,
    ))
}

/// Which key states are usable, for callers that build ciphers.
pub fn usable(state: KeyState) -> bool {
    state != KeyState::Retired
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../config/clinic.example.toml"
            ),
            dir.path().join("policy.toml"),
        )
        .unwrap();
        let mut cfg = Config {
            base_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        cfg.policy.file = Some("policy.toml".into());
        (dir, cfg)
    }

    #[test]
    fn concurrent_rotations_never_make_two_keys_of_one_version() {
        let (_dir, cfg) = setup();
        init(&cfg, &mut Vec::new()).unwrap();
        let ok = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5 {
                        match rotate(&cfg, "public.patients.ssn", &mut Vec::new()) {
                            Ok(()) => {
                                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(KeysError::Conflict { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        });
        let ring = FileKeyringStore::new(cfg.keyring_file()).load().unwrap();
        let versions: Vec<u32> = ring
            .list()
            .filter(|k| k.name == "public.patients.ssn")
            .map(|k| k.version)
            .collect();
        let n = ok.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n >= 1);
        // Version 1 from init plus exactly one per successful rotation.
        assert_eq!(versions, (1..=n as u32 + 1).collect::<Vec<_>>());
    }

    #[test]
    fn a_policy_mode_that_differs_from_the_keyring_is_refused() {
        let (dir, cfg) = setup();
        init(&cfg, &mut Vec::new()).unwrap();
        // The policy turns ssn randomized; its key stays deterministic.
        let text = std::fs::read_to_string(dir.path().join("policy.toml"))
            .unwrap()
            .replace(
                "ssn             = { type = \"text\", mode = \"deterministic\", label = \"phi\" }",
                "ssn             = { type = \"text\", label = \"phi\" }",
            )
            .replace(
                "patient_ssn = { type = \"text\", mode = \"deterministic\",",
                "patient_ssn = { type = \"text\",",
            );
        std::fs::write(dir.path().join("policy.toml"), text).unwrap();
        let e = engine(&cfg, &|_| Default::default()).unwrap_err();
        assert!(matches!(e, KeysError::ModeMismatch { .. }), "{e}");
        assert!(e.to_string().contains("public.patients.ssn"), "{e}");
    }

    #[test]
    fn init_list_rotate_decrypt_old_and_new() {
        let (_dir, cfg) = setup();
        let mut out = Vec::new();
        init(&cfg, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("added key public.patients.ssn v1 (deterministic)"),
            "{text}"
        );
        // Idempotent.
        let mut out = Vec::new();
        init(&cfg, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("0 added"));

        let kek = load_kek(&cfg).unwrap();
        let store = FileKeyringStore::new(cfg.keyring_file());
        let ring = store.load().unwrap();
        let before = ring.column_keys("public.patients.ssn", &kek).unwrap();
        let old_ct = before.encrypt(b"123-45-6789").unwrap();

        let mut out = Vec::new();
        rotate(&cfg, "public.visits.patient_ssn", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("uses key public.patients.ssn"), "{text}");
        assert!(
            text.contains("v2 is active; v1 is now decrypt-only"),
            "{text}"
        );

        let ring = store.load().unwrap();
        let after = ring.column_keys("public.patients.ssn", &kek).unwrap();
        assert_eq!(after.active_version(), Some(2));
        let new_ct = after.encrypt(b"123-45-6789").unwrap();
        assert_ne!(old_ct, new_ct);
        assert_eq!(&after.decrypt(&old_ct).unwrap()[..], b"123-45-6789");
        assert_eq!(&after.decrypt(&new_ct).unwrap()[..], b"123-45-6789");

        let mut out = Vec::new();
        list(&cfg, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("decrypt-only"), "{text}");
        assert!(text.contains("public.visits.patient_ssn"), "{text}");
        // Never key bytes: the KEK's base64 must not appear.
        let kek_text = std::fs::read_to_string(cfg.kek_file()).unwrap();
        assert!(!text.contains(kek_text.trim()));
    }

    #[test]
    fn kek_file_permissions_are_enforced() {
        let (_dir, cfg) = setup();
        init(&cfg, &mut Vec::new()).unwrap();
        let path = cfg.kek_file();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_kek(&cfg).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(e.contains("0644"), "{e}");
    }

    #[test]
    fn env_kek() {
        let (_dir, mut cfg) = setup();
        cfg.keys.kek_provider = KekProviderKind::Env;
        cfg.keys.kek_env = "PGVEIL_TEST_KEK_UNSET_VARIABLE".into();
        assert!(matches!(load_kek(&cfg), Err(KeysError::KekEnvMissing(_))));
    }

    #[test]
    fn crash_mid_write_keeps_the_old_keyring() {
        let (dir, cfg) = setup();
        init(&cfg, &mut Vec::new()).unwrap();
        let store = FileKeyringStore::new(cfg.keyring_file());
        let before = std::fs::read(store.path()).unwrap();
        // A crash after writing part of the temp file, before the rename.
        std::fs::write(
            dir.path().join(".pgveil-keyring.crash.tmp"),
            &before[..before.len() / 2],
        )
        .unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), before);
        store.load().unwrap();
        // A store that fails before rename (directory made read-only is not
        // reliable as root, so use a conflicting revision) leaves it intact.
        let stale = store.load().unwrap();
        let kek = load_kek(&cfg).unwrap();
        let mut first = store.load().unwrap();
        first.rotate("public.patients.ssn", 1, &kek).unwrap();
        store.store(&first).unwrap();
        let after_first = std::fs::read(store.path()).unwrap();
        let mut second = stale;
        second.rotate("public.patients.ssn", 2, &kek).unwrap();
        assert!(matches!(
            store.store(&second),
            Err(KeysError::Conflict { .. })
        ));
        assert_eq!(std::fs::read(store.path()).unwrap(), after_first);
    }

    #[test]
    fn wrong_kek_is_refused() {
        let (_dir, cfg) = setup();
        init(&cfg, &mut Vec::new()).unwrap();
        let other = LocalKek::generate().unwrap();
        let ring = FileKeyringStore::new(cfg.keyring_file()).load().unwrap();
        assert!(ring.column_keys("public.patients.ssn", &other).is_err());
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(951_782_400), "2000-02-29");
        assert_eq!(iso_date(1_795_392_000), "2026-11-23");
    }
}

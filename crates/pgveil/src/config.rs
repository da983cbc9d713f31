//! `pgveil.toml`: the proxy's configuration.
//!
//! Sources, later ones overriding earlier ones: built-in defaults, the TOML
//! file, `PGVEIL_*` environment variables, command-line flags. Unknown keys are
//! errors that name the key and its line, so a typo never silently falls back
//! to a default.
//!
//! Environment overrides address any key: `PGVEIL_<SECTION>__<KEY>` (double
//! underscore between levels), e.g. `PGVEIL_UPSTREAM__TLS_MODE=verify-full`,
//! `PGVEIL_MAX_CONNECTIONS=500`. Two short forms exist for the most common
//! ones: `PGVEIL_LISTEN` and `PGVEIL_UPSTREAM` (host:port).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Client sessions served at once; further clients get SQLSTATE 53300.
    pub max_connections: usize,
    /// Time a client has for TLS, startup and authentication.
    pub handshake_timeout_secs: u64,
    /// On SIGTERM/SIGINT, time sessions get to finish before they are closed.
    pub shutdown_timeout_secs: u64,
    /// Largest message accepted from either side (bytes).
    pub max_message_size: usize,
    /// Runtime worker threads. 1 (the default) is a single event loop, like
    /// PgBouncer's: the least CPU per transaction, measured about 10% below a
    /// multi-threaded runtime on 2 cores (`benches/proxy-cpu.sh`). 0 means one
    /// per CPU, for large dedicated hosts.
    pub worker_threads: usize,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub policy: PolicyConfig,
    pub keys: KeysConfig,
    pub admin: AdminConfig,
    pub audit: AuditConfig,
    /// Directory relative paths in this file are resolved against (the file's
    /// own directory; the working directory for defaults).
    #[serde(skip)]
    #[schemars(skip)]
    pub base_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".parse().expect("valid default"),
            max_connections: 1000,
            handshake_timeout_secs: 10,
            shutdown_timeout_secs: 30,
            max_message_size: pgveil_wire::frame::DEFAULT_MAX_MESSAGE,
            worker_threads: 1,
            tls: TlsConfig::default(),
            upstream: UpstreamConfig::default(),
            log: LogConfig::default(),
            policy: PolicyConfig::default(),
            keys: KeysConfig::default(),
            admin: AdminConfig::default(),
            audit: AuditConfig::default(),
            base_dir: PathBuf::from("."),
        }
    }
}

/// TLS towards clients (pgveil is the server).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain served to clients. TLS is off when unset.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients that do not use TLS (SQLSTATE 28000).
    pub require_tls: bool,
}

/// How pgveil connects to PostgreSQL, mirroring libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS when the server offers it, plain otherwise; no verification.
    Prefer,
    /// TLS, no certificate verification (protects against passive snooping only).
    Require,
    /// TLS, certificate chain verified against `ca_file` and host name checked.
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `host:port` of PostgreSQL.
    pub address: String,
    pub tls_mode: UpstreamTlsMode,
    /// CA bundle for `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the server certificate (defaults to the host part of `address`).
    pub server_name: Option<String>,
    pub connect_timeout_secs: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:5432".into(),
            tls_mode: UpstreamTlsMode::Disable,
            ca_file: None,
            server_name: None,
            connect_timeout_secs: 10,
        }
    }
}

impl UpstreamConfig {
    /// Host part of `address` (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        let a = self.address.as_str();
        let host = match a.rfind(':') {
            Some(i) if !a[i + 1..].contains(']') => &a[..i],
            _ => a,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// The admin HTTP listener (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener; `enabled = false` turns it off.
    pub listen: SocketAddr,
    pub enabled: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9187".parse().expect("valid default"),
            enabled: true,
        }
    }
}

/// Where the column policy lives.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy TOML file (see `config/clinic.example.toml`). No file: nothing
    /// is protected and pgveil is a plain TLS-terminating proxy.
    pub file: Option<PathBuf>,
    /// Allow a reload (SIGHUP) that removes protection from columns, or
    /// changes their mode, type or key. Off: such a reload is rejected and
    /// logged at ERROR, because the columns may hold ciphertext and would
    /// start receiving plaintext. Set it for the one reload that means it,
    /// then unset it.
    #[serde(default)]
    pub allow_unprotect: bool,
}

/// Where the key-encryption key comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KekProviderKind {
    /// A file with the base64 KEK, readable by its owner only (development).
    #[default]
    File,
    /// Base64 KEK in an environment variable (development, containers).
    Env,
}

/// Keys: the KEK and the keyring of wrapped data keys.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    pub kek_provider: KekProviderKind,
    /// KEK file for `kek_provider = "file"` (default: `pgveil-kek.key` beside the policy).
    pub kek_file: Option<PathBuf>,
    /// Variable holding the KEK for `kek_provider = "env"`.
    pub kek_env: String,
    /// Keyring file (default: `pgveil-keyring.json` beside the policy).
    pub keyring_file: Option<PathBuf>,
    /// Encryptions one randomized data key may perform before rotation is required.
    pub max_encryptions_per_key: u64,
    /// Rotation period the key-age alerts compare against.
    pub rotation_period_days: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            kek_provider: KekProviderKind::File,
            kek_file: None,
            kek_env: "PGVEIL_KEK".into(),
            keyring_file: None,
            max_encryptions_per_key: 1 << 31,
            rotation_period_days: 90,
        }
    }
}

/// The audit log of statements on protected columns (see `pgveil-audit`).
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record every statement touching a protected column.
    pub enabled: bool,
    /// Directory of the segments and HEAD (relative: to the config file).
    pub dir: PathBuf,
    /// Ed25519 signing key from `pgveil audit keygen` (relative: to the
    /// config file).
    pub signing_key_file: PathBuf,
    /// `batch`: one fsync per batch of records (default); `always`: one per record.
    pub fsync: AuditFsync,
    /// When records cannot be written: `block` statements until they can,
    /// or `refuse` statements on protected columns (SQLSTATE 58030).
    pub on_failure: AuditOnFailure,
    /// A signed checkpoint after this many records.
    pub checkpoint_every: u64,
    /// … and at least this often while records are unsigned.
    pub checkpoint_interval_secs: u64,
    /// A new segment after this many bytes …
    pub segment_max_bytes: u64,
    /// … or this many seconds.
    pub segment_max_age_secs: u64,
    /// Sealed, verified segments older than this are deleted (7 years).
    pub retention_days: u64,
    /// Also write each record to standard output (for a SIEM).
    pub stdout: bool,
    /// Records queued between the sessions and the writer.
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: "audit".into(),
            signing_key_file: "audit-signing.key".into(),
            fsync: AuditFsync::Batch,
            on_failure: AuditOnFailure::Block,
            checkpoint_every: 1000,
            checkpoint_interval_secs: 10,
            segment_max_bytes: 64 << 20,
            segment_max_age_secs: 86_400,
            retention_days: 2555,
            stdout: false,
            queue: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditFsync {
    #[default]
    Batch,
    Always,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnFailure {
    #[default]
    Block,
    Refuse,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `pgveil=debug`; `PGVEIL_LOG` overrides.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl Config {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// Parses a TOML document (no environment overrides).
    pub fn from_toml(src: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(src).map_err(|e| ConfigError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Loads a file (or only defaults when `path` is `None`), then applies
    /// `PGVEIL_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (src, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "defaults".to_string()),
        };
        let mut doc: toml::Table = toml::from_str(&src).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        // Check the file on its own first so its errors carry line numbers.
        Config::from_toml(&src, &origin)?;
        // The variable that carries the KEK (keys.kek_env, default
        // PGVEIL_KEK) is key material, not a configuration override.
        let kek_env = doc
            .get("keys")
            .and_then(|k| k.get("kek_env"))
            .and_then(|v| v.as_str())
            .unwrap_or("PGVEIL_KEK")
            .to_string();
        let env: Vec<(String, String)> = env.into_iter().collect();
        let kek_env = env
            .iter()
            .find(|(k, _)| k == "PGVEIL_KEYS__KEK_ENV")
            .map(|(_, v)| v.clone())
            .unwrap_or(kek_env);
        let mut overridden = false;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("PGVEIL_") else {
                continue;
            };
            if rest == "LOG" || name == kek_env {
                continue; // the log filter (read by the logging setup); the KEK
            }
            let path: Vec<String> = match rest {
                "LISTEN" => vec!["listen".into()],
                "UPSTREAM" => vec!["upstream".into(), "address".into()],
                _ => rest.split("__").map(|s| s.to_ascii_lowercase()).collect(),
            };
            set_path(&mut doc, &path, &value);
            overridden = true;
        }
        let base_dir = path
            .and_then(|p| p.parent())
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !overridden {
            let mut cfg = Config::from_toml(&src, &origin)?;
            cfg.base_dir = base_dir;
            cfg.resolve_paths();
            return Ok(cfg);
        }
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                origin: format!("{origin} with PGVEIL_* environment overrides"),
                message: e.to_string(),
            })?;
        cfg.validate(&origin)?;
        let mut cfg = cfg;
        cfg.base_dir = base_dir;
        cfg.resolve_paths();
        Ok(cfg)
    }

    /// Makes the file paths of the TLS sections absolute against the
    /// configuration file's directory (policy and key paths are resolved
    /// where they are used, since their defaults depend on each other).
    fn resolve_paths(&mut self) {
        let base = self.base_dir.clone();
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        };
        fix(&mut self.tls.cert_file);
        fix(&mut self.tls.key_file);
        fix(&mut self.tls.client_ca_file);
        fix(&mut self.upstream.ca_file);
        // audit.dir and audit.signing_key_file are resolved where they are
        // used (Config::resolve), like the policy and key files.
    }

    /// Resolves a path from the file relative to the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The policy file, resolved.
    pub fn policy_file(&self) -> Option<PathBuf> {
        self.policy.file.as_deref().map(|p| self.resolve(p))
    }

    /// Directory that holds the policy (defaults for key files live there).
    fn key_dir(&self) -> PathBuf {
        self.policy_file()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| self.base_dir.clone())
    }

    /// The keyring file, resolved (default: beside the policy).
    pub fn keyring_file(&self) -> PathBuf {
        match &self.keys.keyring_file {
            Some(p) => self.resolve(p),
            None => self.key_dir().join("pgveil-keyring.json"),
        }
    }

    /// The KEK file, resolved (default: beside the policy).
    pub fn kek_file(&self) -> PathBuf {
        match &self.keys.kek_file {
            Some(p) => self.resolve(p),
            None => self.key_dir().join("pgveil-kek.key"),
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |message: String| {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                message,
            })
        };
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad("tls.cert_file and tls.key_file must be set together".into());
        }
        if self.tls.require_tls && self.tls.cert_file.is_none() {
            return bad("tls.require_tls = true needs tls.cert_file and tls.key_file".into());
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            return bad("tls.client_ca_file needs tls.cert_file and tls.key_file".into());
        }
        if self.upstream.tls_mode == UpstreamTlsMode::VerifyFull && self.upstream.ca_file.is_none()
        {
            return bad("upstream.tls_mode = \"verify-full\" needs upstream.ca_file".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.keys.max_encryptions_per_key == 0 || self.keys.max_encryptions_per_key > 1 << 32 {
            return bad(
                "keys.max_encryptions_per_key must be between 1 and 2^32 (AES-GCM random nonces)"
                    .into(),
            );
        }
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_interval_secs == 0 {
            return bad(
                "audit.checkpoint_every and audit.checkpoint_interval_secs must be at least 1"
                    .into(),
            );
        }
        if self.audit.queue == 0 || self.audit.segment_max_bytes < 4096 {
            return bad(
                "audit.queue must be at least 1 and audit.segment_max_bytes at least 4096".into(),
            );
        }
        if self.max_message_size < 1024 {
            return bad("max_message_size must be at least 1024 bytes".into());
        }
        if self.upstream.address.rsplit_once(':').is_none() {
            return bad(format!(
                "upstream.address {:?} must be host:port",
                self.upstream.address
            ));
        }
        Ok(())
    }
}

/// Sets `path` in `doc` to `raw`, typed as TOML would type it (integer,
/// boolean) or as a string otherwise.
fn set_path(doc: &mut toml::Table, path: &[String], raw: &str) {
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut t = doc;
    for (i, key) in path.iter().enumerate() {
        if i + 1 == path.len() {
            t.insert(key.clone(), value);
            return;
        }
        let entry = t
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("just made a table");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.max_connections, 1000);
        assert_eq!(c.upstream.tls_mode, UpstreamTlsMode::Disable);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::from_toml(
            "listen = \"127.0.0.1:1\"\n[upstream]\naddres = \"x:1\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("addres"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.starts_with("f.toml"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let c = Config::load(
            None,
            env(&[
                ("PGVEIL_LISTEN", "0.0.0.0:7000"),
                ("PGVEIL_UPSTREAM", "db:5433"),
                ("PGVEIL_MAX_CONNECTIONS", "7"),
                ("PGVEIL_UPSTREAM__TLS_MODE", "require"),
                ("PGVEIL_LOG", "debug"),
                ("PGVEIL_KEK", "c2VjcmV0"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.upstream.address, "db:5433");
        assert_eq!(c.upstream.host(), "db");
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.upstream.tls_mode, UpstreamTlsMode::Require);
    }

    #[test]
    fn unknown_env_key_is_named() {
        let e = Config::load(None, env(&[("PGVEIL_UPSTREAM__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn inconsistent_tls_is_rejected() {
        let e = Config::from_toml("[tls]\nrequire_tls = true\n", "f").unwrap_err();
        assert!(e.to_string().contains("require_tls"));
        let e = Config::from_toml("[upstream]\ntls_mode = \"verify-full\"\n", "f").unwrap_err();
        assert!(e.to_string().contains("ca_file"));
        let e = Config::from_toml("[upstream]\ntls_mode = \"sometimes\"\n", "f").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }

    #[test]
    fn ipv6_host() {
        let u = UpstreamConfig {
            address: "[::1]:5432".into(),
            ..Default::default()
        };
        assert_eq!(u.host(), "::1");
    }
}

/// The JSON schema of the configuration file (committed as
/// `config/pgveil.schema.json`; a test fails when it drifts).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut out = serde_json::to_string_pretty(&schema).expect("schema serializes");
    out.push('\n');
    out
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// Regenerate with `PGVEIL_UPDATE_SCHEMA=1 cargo test -p pgveil config_schema`.
    #[test]
    fn config_schema_is_committed() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/pgveil.schema.json"
        ));
        let now = json_schema();
        if std::env::var_os("PGVEIL_UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &now).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == now,
            "config/pgveil.schema.json is out of date: run PGVEIL_UPDATE_SCHEMA=1 cargo test -p pgveil config_schema"
        );
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/pgveil.example.toml"
        ));
        let cfg = Config::load(Some(path), Vec::new()).unwrap();
        assert!(cfg.policy_file().unwrap().ends_with("clinic.example.toml"));
        assert!(cfg.keyring_file().ends_with("pgveil-keyring.json"));
    }
}

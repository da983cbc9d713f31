//! The accept loop: connection limit, handshake timeout and graceful shutdown.
//!
//! `run(listener, config, shutdown)` takes its listener and shutdown token so
//! tests bind `127.0.0.1:0` and drive a real server in-process (mini-redis).

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::session;
use crate::tls::{self, TlsError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("client TLS: {0}")]
    ClientTls(TlsError),
    #[error("upstream TLS: {0}")]
    UpstreamTls(TlsError),
    #[error("upstream.server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("keys: {0}")]
    Keys(#[from] crate::keys::KeysError),
    #[error("the new policy would stop protecting {0} (removed, or mode, type or key changed); these columns may hold ciphertext and would receive plaintext. Set policy.allow_unprotect = true for this reload if that is intended")]
    PolicyShrink(String),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Columns `old` protects that `new` does not protect in the same way
/// (same mode, logical type and key).
fn unprotected(old: &pgveil_policy::Policy, new: Option<&pgveil_policy::Policy>) -> Vec<String> {
    old.columns()
        .filter(|c| {
            let same = new
                .and_then(|n| n.lookup(&c.column.table_ref(), &c.column.column))
                .is_some_and(|n| {
                    n.mode == c.mode && n.type_spec() == c.type_spec() && n.key == c.key
                });
            !same
        })
        .map(|c| c.column.to_string())
        .collect()
}

/// Creation time of one key, for `pgveil_key_age_seconds`.
#[derive(Debug, Clone)]
pub struct KeyAge {
    pub key_id: String,
    pub column: String,
    pub created_at: u64,
}

/// State shared by all sessions of one server.
pub struct Shared {
    pub metrics: Arc<crate::admin::Metrics>,
    /// Active data keys and the KEK (empty without a policy).
    pub key_ages: Vec<KeyAge>,
    /// The column-encryption engine (policy, keys, per-database catalogs),
    /// when a policy is configured.
    pub engine: Option<Arc<pgveil_rewrite::Engine>>,
    pub config: Config,
    pub tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub upstream_tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub cancel: Arc<CancelRegistry>,
    pub limit: Arc<Semaphore>,
    /// The audit log, opened once and kept across reloads.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(config: Config) -> Result<Self, ServerError> {
        Self::build(config, None)
    }

    /// Builds the state for a reloaded configuration. Metrics, the cancel
    /// registry and the connection semaphore carry over, so counters keep
    /// counting, open sessions stay cancellable and the limit stays one limit.
    pub fn reloaded(&self, config: Config) -> Result<Self, ServerError> {
        let next = Self::build(config, Some(self))?;
        // A policy that protects other columns, or the same ones otherwise:
        // open sessions under the old one close at their next idle point.
        if let Some(old) = &self.engine {
            let new = next.engine.as_ref().map(|e| e.policy().as_ref());
            // Changed access rules too: a session must not keep decrypting
            // for a role the new rules mask or deny.
            let changed = !unprotected(old.policy(), new).is_empty()
                || new.is_some_and(|n| !unprotected(n, Some(old.policy())).is_empty())
                || new.is_some_and(|n| {
                    n.access() != old.policy().access()
                        || n.columns().any(|c| {
                            old.policy()
                                .lookup_column(&c.column)
                                .is_some_and(|o| o.label != c.label || o.mask != c.mask)
                        })
                });
            if changed {
                old.supersede();
            }
        }
        let (old, new) = (self.config.max_connections, next.config.max_connections);
        if new > old {
            next.limit.add_permits(new - old);
        } else if new < old {
            next.limit.forget_permits(old - new);
        }
        Ok(next)
    }

    fn build(config: Config, previous: Option<&Shared>) -> Result<Self, ServerError> {
        let tls_acceptor = tls::server_config(&config.tls)
            .map_err(ServerError::ClientTls)?
            .map(tokio_rustls::TlsAcceptor::from);
        let upstream_tls =
            match tls::upstream_config(&config.upstream).map_err(ServerError::UpstreamTls)? {
                None => None,
                Some(c) => {
                    let name = config
                        .upstream
                        .server_name
                        .clone()
                        .unwrap_or_else(|| config.upstream.host().to_string());
                    let sn = rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|_| ServerError::ServerName(name))?;
                    Some((tokio_rustls::TlsConnector::from(c), sn))
                }
            };
        let metrics = previous
            .map(|p| p.metrics.clone())
            .unwrap_or_else(|| Arc::new(crate::admin::Metrics::new()));
        metrics
            .rotation_period
            .set((config.keys.rotation_period_days * 86_400) as f64);
        if let Some(cert) = &config.tls.cert_file {
            if let Some(t) = crate::admin::certificate_expiry(cert) {
                metrics.cert_expiry.with_label_values(&["server"]).set(t);
            }
        }
        let (key_ages, engine): (Vec<KeyAge>, Option<Arc<pgveil_rewrite::Engine>>) =
            if config.policy.file.is_some() {
                let engine = Arc::new(crate::keys::engine(&config, &|c| metrics.column_stats(c))?);
                if let Some(old) = previous.and_then(|p| p.engine.as_ref()) {
                    engine.restore_key_encryptions(&old.key_encryptions());
                }
                for t in engine.policy().tables() {
                    tracing::debug!(table = %t.table(), "protected table");
                }
                (crate::keys::key_ages(&config)?, Some(engine))
            } else {
                (Vec::new(), None)
            };
        if let Some(old) = previous.and_then(|p| p.engine.as_ref()) {
            let lost = unprotected(old.policy(), engine.as_ref().map(|e| e.policy().as_ref()));
            if !lost.is_empty() && !config.policy.allow_unprotect {
                return Err(ServerError::PolicyShrink(lost.join(", ")));
            }
        }
        let audit = match previous.and_then(|p| p.audit.clone()) {
            Some(a) => {
                if !config.audit.enabled || previous.is_some_and(|p| p.config.audit != config.audit)
                {
                    tracing::warn!("audit settings changed: they take effect at the next restart");
                }
                let mut m = serde_json::Map::new();
                m.insert(
                    "policy_columns".into(),
                    serde_json::Value::from(
                        engine
                            .as_ref()
                            .map_or(0, |e| e.policy().columns().count() as u64),
                    ),
                );
                a.admin("reload", m);
                Some(a)
            }
            None if config.audit.enabled => Some(crate::audit::AuditLog::open(&config)?),
            None => None,
        };
        Ok(Self {
            audit,
            metrics,
            key_ages,
            engine,
            limit: previous
                .map(|p| p.limit.clone())
                .unwrap_or_else(|| Arc::new(Semaphore::new(config.max_connections))),
            config,
            tls_acceptor,
            upstream_tls,
            cancel: previous
                .map(|p| p.cancel.clone())
                .unwrap_or_else(|| Arc::new(CancelRegistry::default())),
            next_id: AtomicU64::new(previous.map_or(1, |p| p.next_id.load(Ordering::Relaxed))),
        })
    }
}

/// The current [`Shared`] state, replaced as a whole on reload. New
/// connections take the state current when they arrive; open sessions keep
/// theirs, so a reload never drops or changes a running session.
pub struct Reloadable {
    current: std::sync::RwLock<Arc<Shared>>,
}

impl Reloadable {
    pub fn new(shared: Shared) -> Arc<Self> {
        Arc::new(Self {
            current: std::sync::RwLock::new(Arc::new(shared)),
        })
    }

    pub fn current(&self) -> Arc<Shared> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Validates `config` completely (TLS files, policy, keys) and swaps it
    /// in; on any error the running configuration stays and the error is
    /// returned (and counted in `pgveil_config_reloads_total{result="error"}`).
    pub fn reload(&self, config: Config) -> Result<(), ServerError> {
        let old = self.current();
        match old.reloaded(config) {
            Ok(next) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                old.metrics.config_reload(true);
                info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                old.metrics.config_reload(false);
                if matches!(e, ServerError::PolicyShrink(_)) {
                    tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays active");
                } else {
                    warn!(error = %e, "configuration reload rejected; the previous configuration stays active");
                }
                Err(e)
            }
        }
    }
}

/// Serves clients from `listener` until `shutdown` is cancelled, then stops
/// accepting, lets open sessions finish for `shutdown_timeout_secs`, and closes
/// whatever remains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    serve(listener, Reloadable::new(Shared::new(config)?), shutdown).await;
    Ok(())
}

/// [`run`] with pre-built, reloadable state.
pub async fn serve(listener: TcpListener, state: Arc<Reloadable>, shutdown: CancellationToken) {
    // A JoinSet rather than a select! on a cancellation token inside every
    // session: aborting at the hard stop costs nothing per poll.
    let mut sessions = tokio::task::JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, upstream = %state.current().config.upstream.address, "pgveil listening");
    }
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while sessions.try_join_next().is_some() {}
        let shared = state.current();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // user, database and application_name are recorded once the startup
        // packet is in; they are identifiers, never values.
        let span = tracing::info_span!(
            "conn",
            id,
            client = %peer,
            user = tracing::field::Empty,
            database = tracing::field::Empty,
            application_name = tracing::field::Empty,
        );
        sessions.spawn(session::handle(shared, tcp, id, peer.to_string(), span));
    }
    drop(listener);
    while sessions.try_join_next().is_some() {}
    let open = sessions.len();
    if open > 0 {
        info!(open, "shutting down: waiting for open sessions");
    }
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(state.current().config.shutdown_timeout(), drain)
        .await
        .is_err()
    {
        warn!(
            open = sessions.len(),
            "shutdown timeout reached: closing remaining sessions"
        );
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
    info!("pgveil stopped");
}

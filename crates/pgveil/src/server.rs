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
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

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
    /// The column policy, when one is configured. Until wire encryption is
    /// wired in, statements that mention a protected table are refused.
    pub policy: Option<Arc<pgveil_policy::Policy>>,
    pub config: Config,
    pub tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub upstream_tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub cancel: Arc<CancelRegistry>,
    pub limit: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(config: Config) -> Result<Self, ServerError> {
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
        let metrics = Arc::new(crate::admin::Metrics::new());
        metrics
            .rotation_period
            .set((config.keys.rotation_period_days * 86_400) as f64);
        if let Some(cert) = &config.tls.cert_file {
            if let Some(t) = crate::admin::certificate_expiry(cert) {
                metrics.cert_expiry.with_label_values(&["server"]).set(t);
            }
        }
        let (key_ages, policy) = if config.policy.file.is_some() {
            (
                crate::keys::key_ages(&config)?,
                Some(Arc::new(crate::keys::load_policy(&config)?)),
            )
        } else {
            (Vec::new(), None)
        };
        Ok(Self {
            metrics,
            key_ages,
            policy,
            limit: Arc::new(Semaphore::new(config.max_connections)),
            config,
            tls_acceptor,
            upstream_tls,
            cancel: Arc::new(CancelRegistry::default()),
            next_id: AtomicU64::new(1),
        })
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
    let shared = Arc::new(Shared::new(config)?);
    serve(listener, shared, shutdown).await;
    Ok(())
}

/// [`run`] with pre-built shared state.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, upstream = %shared.config.upstream.address, "pgveil listening");
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
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", id, client = %peer);
        tracker.spawn(session::handle(shared.clone(), tcp, hard_stop.clone()).instrument(span));
    }
    drop(listener);
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        info!(open, "shutting down: waiting for open sessions");
    }
    if tokio::time::timeout(shared.config.shutdown_timeout(), tracker.wait())
        .await
        .is_err()
    {
        warn!(
            open = tracker.len(),
            "shutdown timeout reached: closing remaining sessions"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    info!("pgveil stopped");
}

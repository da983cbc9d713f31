//! The `pgveil` command line. `anyhow` lives here, at the binary's edge.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgveil::config::{Config, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "pgveil",
    version,
    about = "Transparent PostgreSQL encryption proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML). Defaults apply when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding the file and PGVEIL_LISTEN.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Upstream PostgreSQL host:port, overriding the file and PGVEIL_UPSTREAM.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Start a throwaway PostgreSQL with pgveil in front of it and print URLs.
    Demo {
        /// Port for pgveil (0 picks a free one).
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
    /// Validate configuration, policy and keys; with --database also the live catalog.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// libpq URL of the database to check the policy against.
        #[arg(long)]
        database: Option<String>,
    },
    /// Guard constraints inside PostgreSQL: every protected column accepts
    /// only NULL or a pgveil envelope of its mode (SQLSTATE 23514 otherwise).
    Guard {
        /// Configuration file (TOML) naming the policy.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: GuardCommand,
    },
    /// Manage data keys (never prints key bytes).
    Keys {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Compliance evidence (HIPAA §164.312): report.md and report.html.
    Report {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// libpq URL of the database: adds coverage and guard facts.
        #[arg(long)]
        database: Option<String>,
        /// Directory to write the report to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Create the Ed25519 key pair that signs audit checkpoints
    /// (audit-signing.key, 0600, and audit-signing.pub).
    Keygen {
        /// Directory to write the two files to.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Verify an audit log: the hash chain, checkpoint signatures, HEAD;
    /// reports each problem with its segment, line and seq. Exits 1 on any.
    Verify {
        /// The log's directory (audit.dir).
        dir: PathBuf,
        /// The public key file from `pgveil audit keygen`.
        #[arg(long)]
        public_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum GuardCommand {
    /// Add (online: NOT VALID, then VALIDATE) or update the guard of every
    /// protected column; exits non-zero if rows still hold plaintext.
    Install {
        /// libpq URL of the database (a role that owns the tables).
        #[arg(long)]
        database: String,
    },
    /// Drop the guards.
    Remove {
        /// libpq URL of the database (a role that owns the tables).
        #[arg(long)]
        database: String,
    },
    /// Show each protected column's guard; exits non-zero unless all are
    /// installed, current and validated.
    Status {
        /// libpq URL of the database.
        #[arg(long)]
        database: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the development KEK (file provider) and the keyring with every policy key.
    Init,
    /// List key names, versions, modes, states and ages.
    List,
    /// Make a new version of a column's key active; the old one becomes decrypt-only.
    Rotate {
        /// The protected column, schema.table.column.
        #[arg(long)]
        column: String,
    },
    /// Rewrite stored values of every column using a column's key from older
    /// key versions to the active one (run after `rotate`, directly against
    /// the database).
    Reencrypt {
        /// The protected column, schema.table.column.
        #[arg(long)]
        column: String,
        /// libpq URL of the database (a role that can UPDATE the tables).
        #[arg(long)]
        database: String,
        /// Rows read per batch.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = std::env::var("PGVEIL_LOG").unwrap_or_else(|_| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(Config::load(path, std::env::vars())?)
}

/// Where `serve`'s configuration comes from, so SIGHUP can load it again
/// exactly the same way (file, then environment, then flags).
struct ReloadSource {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upstream: Option<String>,
}

impl ReloadSource {
    fn load(&self) -> anyhow::Result<Config> {
        let mut cfg = load_config(self.config.as_deref())?;
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(u) = &self.upstream {
            cfg.upstream.address = u.clone();
        }
        Ok(cfg)
    }
}

/// SIGHUP: reload configuration, policy, keys and TLS certificates. Open
/// sessions keep running; a configuration that fails to load or validate is
/// rejected with a log line and the running one stays. The listen addresses
/// cannot change without a restart.
async fn reload_on_sighup(state: std::sync::Arc<pgveil::server::Reloadable>, source: ReloadSource) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler: reload disabled");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading configuration");
        match source.load() {
            Ok(cfg) => {
                let _ = state.reload(cfg);
            }
            Err(e) => {
                state.current().metrics.config_reload(false);
                tracing::warn!(error = %e, "configuration reload rejected; the previous configuration stays active");
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    token.cancel();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = |workers: usize| {
        // One worker: a current-thread runtime, which batches readiness
        // events the way PgBouncer's single event loop does.
        let mut b = if workers == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            tokio::runtime::Builder::new_multi_thread()
        };
        if workers > 1 {
            b.worker_threads(workers);
        }
        b.enable_all().build().context("starting the async runtime")
    };
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
        } => {
            let reload_source = ReloadSource {
                config,
                listen,
                upstream,
            };
            let cfg = reload_source.load()?;
            init_logging(cfg.log.format, &cfg.log.level);
            runtime(cfg.worker_threads)?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", cfg.listen))?;
                let token = CancellationToken::new();
                tokio::spawn(shutdown_signal(token.clone()));
                let admin = if cfg.admin.enabled {
                    Some(
                        tokio::net::TcpListener::bind(cfg.admin.listen)
                            .await
                            .with_context(|| {
                                format!("cannot listen on admin address {}", cfg.admin.listen)
                            })?,
                    )
                } else {
                    None
                };
                let state = pgveil::server::Reloadable::new(pgveil::server::Shared::new(cfg)?);
                if let Some(admin) = admin {
                    tokio::spawn(pgveil::admin::serve(admin, state.clone(), token.clone()));
                }
                tokio::spawn(reload_on_sighup(state.clone(), reload_source));
                pgveil::server::serve(listener, state.clone(), token).await;
                // SIGTERM: every record written and signed before exit.
                if let Some(audit) = &state.current().audit {
                    audit.close();
                }
                Ok(())
            })
        }
        Command::Demo { port } => {
            init_logging(LogFormat::Human, "info");
            runtime(0)?.block_on(async move {
                let token = CancellationToken::new();
                tokio::spawn(shutdown_signal(token.clone()));
                pgveil::demo::run(port, token).await
            })
        }
        Command::Check { config, database } => {
            let cfg = load_config(config.as_deref())?;
            let mut out = std::io::stdout();
            runtime(1)?.block_on(pgveil::check::run(&cfg, database.as_deref(), &mut out))?;
            println!("check passed");
            Ok(())
        }
        Command::Guard { config, command } => {
            let cfg = load_config(config.as_deref())?;
            let mut out = std::io::stdout();
            let rt = runtime(1)?;
            match command {
                GuardCommand::Install { database } => {
                    rt.block_on(pgveil::guard::install(&cfg, &database, &mut out))?
                }
                GuardCommand::Remove { database } => {
                    rt.block_on(pgveil::guard::remove(&cfg, &database, &mut out))?
                }
                GuardCommand::Status { database } => {
                    rt.block_on(pgveil::guard::print_status(&cfg, &database, &mut out))?
                }
            }
            Ok(())
        }
        Command::Report {
            config,
            database,
            out: dir,
        } => {
            let cfg = load_config(config.as_deref())?;
            let mut out = std::io::stdout();
            runtime(1)?.block_on(pgveil::report::run(
                &cfg,
                database.as_deref(),
                &dir,
                &mut out,
            ))?;
            Ok(())
        }
        Command::Audit { command } => {
            let mut out = std::io::stdout();
            match command {
                AuditCommand::Keygen { dir } => pgveil::audit::keygen(&dir, &mut out)?,
                AuditCommand::Verify { dir, public_key } => {
                    if !pgveil::audit::verify(&dir, &public_key, &mut out)? {
                        std::process::exit(1);
                    }
                }
            }
            Ok(())
        }
        Command::Keys { config, command } => {
            let cfg = load_config(config.as_deref())?;
            let mut out = std::io::stdout();
            match command {
                KeysCommand::Init => pgveil::keys::init(&cfg, &mut out)?,
                KeysCommand::List => pgveil::keys::list(&cfg, &mut out)?,
                KeysCommand::Rotate { column } => pgveil::keys::rotate(&cfg, &column, &mut out)?,
                KeysCommand::Reencrypt {
                    column,
                    database,
                    batch,
                } => {
                    let failed = runtime(1)?.block_on(pgveil::reencrypt::run(
                        &cfg, &column, &database, batch, &mut out,
                    ))?;
                    if failed > 0 {
                        anyhow::bail!("{failed} value(s) could not be re-encrypted (see the warnings); re-run after fixing them");
                    }
                }
            }
            Ok(())
        }
    }
}

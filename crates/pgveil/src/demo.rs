//! `pgveil demo`: a throwaway PostgreSQL, development certificates and pgveil
//! in front of it, for a newcomer to try in one command.

use crate::certs::DevCa;
use crate::config::Config;
use crate::pgtemp::{self, Cluster};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Everything the demo started; dropping it cleans up.
pub struct Demo {
    pub cluster: Cluster,
    pub config: Config,
    pub ca_file: PathBuf,
    pub database_url: String,
    pub direct_url: String,
    _dir: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Postgres(#[from] pgtemp::PgTempError),
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("keys: {0}")]
    Keys(#[from] crate::keys::KeysError),
}

/// The clinic example policy the demo protects.
pub const CLINIC_POLICY: &str = include_str!("../../../config/clinic.example.toml");

impl Demo {
    /// Starts PostgreSQL and prepares pgveil's configuration (listening on
    /// `listen_port`, or a free port when 0).
    pub fn prepare(listen_port: u16) -> Result<Self, DemoError> {
        let cluster = Cluster::start(&pgtemp::Options::default())?;
        let dir = tempfile::Builder::new().prefix("pgveil-demo-").tempdir()?;
        let ca = DevCa::new("pgveil demo CA")?;
        let ca_file = dir.path().join("ca.crt");
        ca.write_cert(&ca_file)?;
        let server = ca.issue(
            "localhost",
            &["localhost", "127.0.0.1"],
            false,
            30,
            dir.path(),
            "server",
        )?;
        let port = if listen_port == 0 {
            pgtemp::free_port()?
        } else {
            listen_port
        };
        let mut config = Config {
            listen: ([127, 0, 0, 1], port).into(),
            ..Config::default()
        };
        config.upstream.address = cluster.address();
        config.tls.cert_file = Some(server.cert);
        config.tls.key_file = Some(server.key);
        // The clinic policy, a development KEK file and a keyring beside it,
        // and the policy's schema in the throwaway database.
        let policy_file = dir.path().join("clinic.toml");
        std::fs::write(&policy_file, CLINIC_POLICY)?;
        config.policy.file = Some(policy_file);
        config.keys.kek_file = Some(dir.path().join("kek.key"));
        crate::keys::init(&config, &mut std::io::sink())?;
        cluster.psql("postgres", &policy_ddl(CLINIC_POLICY))?;
        let password = cluster.superuser_password();
        let database_url = format!(
            "postgres://{}:{password}@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            pgtemp::SUPERUSER,
            ca_file.display()
        );
        let direct_url = cluster.url("postgres");
        Ok(Self {
            cluster,
            config,
            ca_file,
            database_url,
            direct_url,
            _dir: dir,
        })
    }
}

/// Runs the demo until `shutdown` fires.
pub async fn run(listen_port: u16, shutdown: CancellationToken) -> anyhow::Result<()> {
    let demo = tokio::task::spawn_blocking(move || Demo::prepare(listen_port)).await??;
    let listener = tokio::net::TcpListener::bind(demo.config.listen).await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics_url = format!("http://{}/metrics", admin.local_addr()?);
    // The second line of defence: PostgreSQL itself rejects plaintext in
    // protected columns, whoever writes it.
    let mut guard_log = Vec::new();
    crate::guard::install(&demo.config, &demo.direct_url, &mut guard_log).await?;
    println!(
        "pgveil demo is running (PostgreSQL {} in {}).",
        pg_version(&demo),
        demo.cluster.dir().display()
    );
    println!("DATABASE_URL={}", demo.database_url);
    println!("DIRECT_DATABASE_URL={}", demo.direct_url);
    println!("METRICS_URL={metrics_url}");
    println!(
        "Guard constraints installed on {} protected column(s): plaintext written directly fails with SQLSTATE 23514.",
        guard_log.split(|&b| b == b'\n').filter(|l| l.starts_with(b"ok:")).count()
    );
    println!("psql \"{}\"", demo.database_url);
    println!("Press Ctrl-C to stop; everything is removed on exit.");
    let state = crate::server::Reloadable::new(crate::server::Shared::new(demo.config.clone())?);
    tokio::spawn(crate::admin::serve(admin, state.clone(), shutdown.clone()));
    crate::server::serve(listener, state, shutdown).await;
    drop(demo);
    Ok(())
}

fn pg_version(demo: &Demo) -> String {
    std::process::Command::new(demo.cluster.bindir().join("postgres"))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The SQL DDL embedded as a comment block in a policy file (the indented
/// `#   ` lines after the "Schema (DDL)" heading), as the demo runs it.
pub fn policy_ddl(policy_src: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in policy_src.lines() {
        if line.starts_with("# Schema (DDL)") {
            in_block = true;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(sql) = line.strip_prefix("#   ") {
            out.push_str(sql);
            out.push('\n');
        } else if !line.starts_with('#') {
            break; // the block ends where the TOML begins
        }
    }
    out
}

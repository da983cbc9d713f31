//! A throwaway PostgreSQL cluster in a temporary directory, for `pgveil demo`
//! and the integration tests.
//!
//! `initdb` refuses to run as root; when pgveil runs as root (containers, CI)
//! the cluster is created and started as the unprivileged `postgres` user via
//! `runuser`, with the data directory owned by that user. The Unix socket goes
//! into the temporary directory too, so clusters never collide.
//!
//! A watchdog process stops the cluster if the owning process dies without
//! running [`Drop`] (a test binary's statics are never dropped).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found.\n\
         Install them, e.g. on Debian/Ubuntu: apt-get install -y postgresql\n\
         (looked in `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH)"
    )]
    NotInstalled,
    #[error("running as root, but there is no unprivileged `postgres` user to run PostgreSQL as (create one, e.g. by installing Debian's postgresql package)")]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Superuser created in every temporary cluster.
pub const SUPERUSER: &str = "postgres";

/// A running temporary cluster. Dropping it stops the server and deletes its
/// directory (unless [`Cluster::keep`] was called).
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    kept: Option<PathBuf>,
    bindir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<String>,
    watchdog: Option<std::process::Child>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Options for [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<String>,
    pub max_connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: Vec::new(),
            max_connections: 100,
        }
    }
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bindir() -> Result<PathBuf, PgTempError> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_all(&d) {
                return Ok(d);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, d)| has_all(d))
            .collect();
        versions.sort();
        if let Some((_, d)) = versions.pop() {
            return Ok(d);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_all(&d) {
                return Ok(d);
            }
        }
    }
    Err(PgTempError::NotInstalled)
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn random_password() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

impl Cluster {
    /// Creates and starts a cluster: `initdb` with SCRAM-SHA-256, a random
    /// superuser password, listening on 127.0.0.1 on a free port.
    pub fn start(opts: &Options) -> Result<Self, PgTempError> {
        let bindir = find_bindir()?;
        let run_as = if is_root() {
            let ok = Command::new("id")
                .arg("postgres")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(PgTempError::NoPostgresUser);
            }
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("pgveil-pg-").tempdir()?;
        let password = random_password();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if let Some(user) = &run_as {
            chown_r(dir.path(), user)?;
        }
        let mut cluster = Cluster {
            dir: Some(dir),
            kept: None,
            bindir,
            port: 0,
            password,
            run_as,
            watchdog: None,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                SUPERUSER,
                "-A",
                "scram-sha-256",
                "--pwfile",
                &pwfile.display().to_string(),
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        // `md5` in pg_hba.conf means: SCRAM for roles with a SCRAM verifier,
        // md5 for roles with an md5 hash, so tests can exercise both. The
        // role `cleartext_user` (if a test creates it) gets `password`.
        let hba = "local all all scram-sha-256\n\
                   host all cleartext_user 127.0.0.1/32 password\n\
                   host all all 127.0.0.1/32 md5\n\
                   host all all ::1/128 md5\n";
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        cluster.port = free_port()?;
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             max_connections = {}\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 128MB\nmax_prepared_transactions = 10\n\
             logging_collector = off\nlog_min_messages = warning\n",
            cluster.port,
            cluster.dir().display(),
            opts.max_connections,
        );
        for s in &opts.settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())?;
        if let Some(user) = &cluster.run_as {
            chown_r(cluster.dir(), user)?;
        }
        let log = cluster.log_path();
        cluster.run(
            "pg_ctl start",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        cluster.watchdog = cluster.spawn_watchdog().ok();
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bindir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, step: &'static str, args: &[&str]) -> Result<(), PgTempError> {
        let program = step.split(' ').next().unwrap_or(step);
        let program = if program == "pg_ctl" {
            "pg_ctl"
        } else {
            program
        };
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Ok(log) = std::fs::read_to_string(self.log_path()) {
            detail.push_str("\nserver log:\n");
            detail.push_str(&log);
        }
        Err(PgTempError::Step { step, detail })
    }

    /// Stops the server if this process dies without dropping the cluster.
    fn spawn_watchdog(&self) -> std::io::Result<std::process::Child> {
        let pg_ctl = self.bindir.join("pg_ctl");
        let data = self.data_dir();
        let runas = match &self.run_as {
            Some(u) => format!("runuser -u {u} -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
             {runas}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; \
             rm -rf '{dir}'",
            parent = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = data.display(),
            dir = self.dir().display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    pub fn dir(&self) -> &Path {
        match (&self.dir, &self.kept) {
            (Some(d), _) => d.path(),
            (None, Some(p)) => p,
            (None, None) => Path::new("/nonexistent"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("postgres.log")
    }

    /// The server log so far (for failing tests).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// A libpq URL for the superuser, straight to the server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}?sslmode=disable",
            self.password, self.port
        )
    }

    /// Runs SQL as the superuser through `psql` (from the same bindir or PATH).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgTempError> {
        let psql = if self.bindir.join("psql").is_file() {
            self.bindir.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(PgTempError::Step {
                step: "psql",
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Turns on TLS in the server with the given PEM certificate and key
    /// (written into the data directory, owned by the server's user, mode 0600).
    pub fn enable_ssl(&self, cert_pem: &str, key_pem: &str) -> Result<(), PgTempError> {
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert_pem)?;
        crate::certs::write_private(&data.join("server.key"), key_pem)?;
        if let Some(user) = &self.run_as {
            chown_r(&data.join("server.crt"), user)?;
            chown_r(&data.join("server.key"), user)?;
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Keeps the directory (data and log) after the cluster is dropped.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            self.kept = Some(d.keep());
        }
        self.dir().to_path_buf()
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) {
        let data = self.data_dir().display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_r(path: &Path, user: &str) -> Result<(), PgTempError> {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(PgTempError::Step {
            step: "chown",
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

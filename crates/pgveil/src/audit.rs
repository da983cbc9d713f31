//! The audit log's I/O: a writer thread appending chained records to
//! segment files, signing checkpoints, rotating and expiring segments; and
//! the `pgveil audit` commands. The format and its verification live in
//! `pgveil-audit` (no I/O).
//!
//! Sessions hand statement facts to [`AuditLog`] (the engine's observer)
//! through a bounded channel; the writer thread batches them, writes and
//! fsyncs. Nothing is dropped: records that cannot be written are kept (and
//! retried) in order; with `on_failure = "block"` sessions wait when the
//! queue is full, with `"refuse"` statements on protected columns are
//! refused while the log is failing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pgveil_audit::{Chain, SigningKey};
use pgveil_rewrite::observe::{Observer, Outcome, StatementEvent};
use serde_json::{Map, Value};

use crate::config::{AuditConfig, AuditFsync, AuditOnFailure, Config};

/// Errors opening the audit log or running `pgveil audit`.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit: {path}: {source}")]
    Key {
        path: PathBuf,
        source: pgveil_audit::AuditError,
    },
    #[error("audit: {0}")]
    Log(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// RFC 3339 UTC time with microseconds, from a Unix time.
pub fn format_time(unix_secs: u64, micros: u32) -> String {
    let (y, m, d) = pgveil_crypto::canonical::civil_from_days((unix_secs / 86_400) as i64);
    let rem = unix_secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn now() -> String {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format_time(d.as_secs(), d.subsec_micros())
}

/// An audit directory's segments (sorted by name) and HEAD, as read.
pub struct LogFiles {
    pub names: Vec<String>,
    pub data: Vec<Vec<u8>>,
    pub head: Option<Vec<u8>>,
}

impl LogFiles {
    /// Reads `dir`'s segments and HEAD.
    pub fn read(dir: &Path) -> Result<LogFiles, AuditError> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
            .collect();
        names.sort();
        let mut data = Vec::new();
        for n in &names {
            let p = dir.join(n);
            data.push(std::fs::read(&p).map_err(io(&p))?);
        }
        let head_path = dir.join("HEAD");
        let head = match std::fs::read(&head_path) {
            Ok(h) => Some(h),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&head_path)(e)),
        };
        Ok(LogFiles { names, data, head })
    }

    /// Verifies them with `key`.
    pub fn verify(&self, key: &pgveil_audit::VerifyingKey) -> pgveil_audit::Report {
        let segs: Vec<pgveil_audit::Segment<'_>> = self
            .names
            .iter()
            .zip(&self.data)
            .map(|(n, d)| pgveil_audit::Segment { name: n, data: d })
            .collect();
        pgveil_audit::verify(&segs, self.head.as_deref(), key)
    }
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn times_are_rfc3339() {
        use super::format_time;
        assert_eq!(format_time(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_time(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(format_time(1_796_601_600, 0), "2026-12-07T00:00:00.000000Z");
    }
}

enum Msg {
    Record(&'static str, Map<String, Value>),
    /// Rendered by the writer thread, off the session's task.
    Statement(Box<StatementEvent>),
    /// Write everything queued, sign a checkpoint, answer.
    Flush(SyncSender<()>),
}

#[derive(Debug, Default)]
struct Health {
    failing: AtomicBool,
    reason: Mutex<String>,
    written: AtomicU64,
}

/// The audit log: an [`Observer`] for the sessions, and its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    health: Arc<Health>,
    on_failure: AuditOnFailure,
    dir: PathBuf,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens (or creates) the log of `config` and starts its writer.
    pub fn open(config: &Config) -> Result<Arc<AuditLog>, AuditError> {
        let cfg = config.audit.clone();
        let dir = config.resolve(&cfg.dir);
        let key_path = config.resolve(&cfg.signing_key_file);
        let text = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = SigningKey::from_text(&text).map_err(|source| AuditError::Key {
            path: key_path.clone(),
            source,
        })?;
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut writer = Writer::open(dir.clone(), cfg.clone(), key)?;
        writer.record("start", Map::new());
        writer.flush()?;
        writer.checkpoint()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue);
        let health = Arc::new(Health::default());
        let h = health.clone();
        let thread = std::thread::Builder::new()
            .name("pgveil-audit".into())
            .spawn(move || writer.run(rx, &h))
            .map_err(io(&dir))?;
        Ok(Arc::new(AuditLog {
            tx,
            health,
            on_failure: cfg.on_failure,
            dir,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records written so far (since this process started).
    pub fn written(&self) -> u64 {
        self.health.written.load(Ordering::Relaxed)
    }

    /// Whether the writer is failing.
    pub fn failing(&self) -> bool {
        self.health.failing.load(Ordering::Relaxed)
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                // Never dropped: wait for room (block), or wait and refuse
                // the next statements (refuse: the log is behind).
                if self.on_failure == AuditOnFailure::Refuse {
                    self.health.failing.store(true, Ordering::Relaxed);
                }
                let _ = self.tx.send(msg);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.health.failing.store(true, Ordering::Relaxed);
            }
        }
    }

    /// An administrative event (reload, shutdown, …).
    pub fn admin(&self, kind: &'static str, fields: Map<String, Value>) {
        self.send(Msg::Record(kind, fields));
    }

    /// Writes everything queued and signs a checkpoint; waits up to
    /// `timeout`. Returns whether it finished.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Msg::Flush(tx));
        rx.recv_timeout(timeout).is_ok()
    }

    /// Records the shutdown, flushes, and stops the writer.
    pub fn close(&self) {
        self.admin("stop", Map::new());
        self.flush(Duration::from_secs(10));
        // The writer stops when every sender is gone; this one is not, so
        // the thread is left to end with the process after the flush.
        let _ = self.thread.lock().map(|mut t| t.take());
    }
}

impl Observer for AuditLog {
    fn admit(&self) -> Result<(), String> {
        if self.on_failure == AuditOnFailure::Refuse && self.failing() {
            let reason = self
                .health
                .reason
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            return Err(if reason.is_empty() {
                "the audit writer is behind".to_owned()
            } else {
                reason
            });
        }
        Ok(())
    }

    fn statement(&self, ev: StatementEvent) {
        self.send(Msg::Statement(Box::new(ev)));
    }
}

/// A statement event as the members of its record. Never a value: names,
/// labels, decisions, counts and the literal-free fingerprint. Written by
/// hand (not through `serde_json::Value`): this runs once per statement.
fn statement_body(ev: &StatementEvent) -> String {
    use pgveil_audit::json_str;
    use std::fmt::Write as _;
    let s = &ev.session;
    let mut b = String::with_capacity(384 + ev.fingerprint.len() + 96 * ev.columns.len());
    let _ = write!(b, "\"conn\":{},\"user\":", s.connection_id);
    json_str(&mut b, &s.user);
    b.push_str(",\"role\":");
    json_str(&mut b, &ev.role);
    b.push_str(",\"database\":");
    json_str(&mut b, &s.database);
    b.push_str(",\"application\":");
    json_str(&mut b, &s.application_name);
    b.push_str(",\"client\":");
    json_str(&mut b, &s.client_addr);
    b.push_str(",\"tls_subject\":");
    match &s.tls_subject {
        Some(t) => json_str(&mut b, t),
        None => b.push_str("null"),
    }
    b.push_str(",\"kind\":");
    json_str(&mut b, ev.kind);
    b.push_str(",\"protocol\":");
    json_str(&mut b, ev.protocol);
    b.push_str(",\"fingerprint\":");
    json_str(&mut b, &ev.fingerprint);
    b.push_str(",\"columns\":[");
    for (i, c) in ev.columns.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push_str("{\"column\":");
        json_str(&mut b, &c.name);
        b.push_str(",\"label\":");
        json_str(&mut b, &c.label);
        let _ = write!(
            b,
            ",\"use\":\"{}\",\"decision\":\"{}\"}}",
            c.used.as_str(),
            c.decision.as_str()
        );
    }
    b.push(']');
    let rows = |b: &mut String, r: Option<u64>| match r {
        Some(n) => {
            let _ = write!(b, ",\"rows\":{n}");
        }
        None => b.push_str(",\"rows\":null"),
    };
    match &ev.outcome {
        Outcome::Completed { command, rows: r } => {
            b.push_str(",\"outcome\":\"completed\",\"command\":");
            json_str(&mut b, command);
            rows(&mut b, *r);
            b.push_str(",\"sqlstate\":null");
        }
        Outcome::Suspended { rows: r } => {
            b.push_str(",\"outcome\":\"suspended\"");
            rows(&mut b, Some(*r));
            b.push_str(",\"sqlstate\":null");
        }
        Outcome::ServerError { sqlstate, rows: r } => {
            b.push_str(",\"outcome\":\"error\"");
            rows(&mut b, Some(*r));
            b.push_str(",\"sqlstate\":");
            json_str(&mut b, sqlstate);
        }
        Outcome::Refused { sqlstate, reason } => {
            b.push_str(",\"outcome\":\"refused\"");
            rows(&mut b, None);
            b.push_str(",\"sqlstate\":");
            json_str(&mut b, sqlstate);
            b.push_str(",\"reason\":");
            json_str(&mut b, reason);
        }
    }
    let _ = write!(b, ",\"duration_us\":{}", ev.duration.as_micros());
    b
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    cfg: AuditConfig,
    key: SigningKey,
    chain: Chain,
    /// Lines chained but not yet durably written, in order.
    pending: Vec<String>,
    file: Option<File>,
    /// The segment's length up to its last durable record.
    good_len: u64,
    opened: Instant,
    last_checkpoint: Instant,
    last_retention: Option<Instant>,
    /// The latest checkpoint, until HEAD holds it.
    head_pending: Option<String>,
    /// `time` of the records taken in this round (one clock read and
    /// format per round, not per record).
    batch_time: String,
}

impl Writer {
    fn open(dir: PathBuf, cfg: AuditConfig, key: SigningKey) -> Result<Writer, AuditError> {
        let mut w = Writer {
            dir,
            cfg,
            key,
            chain: Chain::default(),
            pending: Vec::new(),
            file: None,
            good_len: 0,
            opened: Instant::now(),
            last_checkpoint: Instant::now(),
            last_retention: None,
            head_pending: None,
            batch_time: now(),
        };
        // Continue the chain of the newest segment, if any — but only a log
        // that still holds HEAD's checkpoint: a log cut short while pgveil
        // was down is not continued (that would hide the cut).
        let segments = w.segments()?;
        let head_path = w.dir.join("HEAD");
        let head = match std::fs::read(&head_path) {
            Ok(h) => Some(h),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&head_path)(e)),
        };
        let refuse = |what: String| {
            AuditError::Log(format!(
                "{}: {what}; run `pgveil audit verify`, and move the directory aside to start a new log",
                w.dir.display()
            ))
        };
        let mut adopted: Option<Map<String, Value>> = None;
        let Some(last) = segments.last().cloned() else {
            if head.is_some() {
                return Err(refuse("HEAD remains but every segment is gone".into()));
            }
            return Ok(w);
        };
        let Some(head) = head else {
            return Err(refuse("segments exist but HEAD is missing".into()));
        };
        let head_line = head.strip_suffix(b"\n").unwrap_or(&head).to_vec();
        let head_seq = serde_json::from_slice::<Value>(&head_line)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .ok_or_else(|| refuse("HEAD is not a checkpoint record".into()))?;
        let path = w.dir.join(&last);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io(&path))?;
        // A record torn by a crash (never acknowledged by an fsync) is cut
        // off, and the cut is recorded.
        let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn = data.len() - keep;
        let line = data[..keep.saturating_sub(1)]
            .rsplit(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .to_vec();
        if !line.is_empty() {
            w.chain = Chain::resume(&line)
                .map_err(|e| AuditError::Log(format!("{}: {e}", path.display())))?;
        }
        if head_seq > w.chain.last_seq {
            return Err(refuse(format!(
                "the log was cut short: HEAD's checkpoint is seq {head_seq}, the log ends at seq {}",
                w.chain.last_seq
            )));
        }
        // HEAD's record, byte for byte, in the segment that holds its seq.
        let holder = segments
            .iter()
            .rfind(|n| pgveil_audit::segment_seq(n).is_some_and(|s| s <= head_seq))
            .cloned()
            .ok_or_else(|| refuse(format!("no segment holds HEAD's seq {head_seq}")))?;
        let holder_data = if holder == last {
            data.clone()
        } else {
            let p = w.dir.join(&holder);
            std::fs::read(&p).map_err(io(&p))?
        };
        let lines: Vec<&[u8]> = holder_data.split(|&b| b == b'\n').collect();
        let Some(at) = lines.iter().position(|l| *l == head_line.as_slice()) else {
            return Err(refuse(format!(
                "the log's record {head_seq} is not HEAD's checkpoint"
            )));
        };
        if w.chain.last_seq > head_seq {
            // Records after HEAD: the unsigned tail of a run that crashed —
            // unless that run stopped cleanly (a `stop` record, then HEAD's
            // checkpoint), after which nothing can have been written.
            let stopped = at > 0
                && serde_json::from_slice::<Value>(lines[at - 1])
                    .ok()
                    .is_some_and(|v| v.get("type").and_then(Value::as_str) == Some("stop"));
            if stopped {
                return Err(refuse(format!(
                    "records {}..={} follow a clean stop (seq {head_seq}): they were appended while pgveil was down",
                    head_seq + 1,
                    w.chain.last_seq
                )));
            }
            let mut m = Map::new();
            m.insert("from_seq".into(), Value::from(head_seq + 1));
            m.insert("to_seq".into(), Value::from(w.chain.last_seq));
            adopted = Some(m);
        }
        if let Some(m) = adopted {
            // Signed from here on by this run, which did not write them.
            w.record("adopted", m);
        }
        if torn > 0 {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(keep as u64).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            let mut m = Map::new();
            m.insert("torn_bytes_removed".into(), Value::from(torn as u64));
            m.insert("segment".into(), Value::from(last.as_str()));
            w.record("recovered", m);
        }
        // A fresh segment after a restart (the file stays closed until the
        // first flush): earlier segments stay as written.
        Ok(w)
    }

    fn segments(&self) -> Result<Vec<String>, AuditError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| pgveil_audit::segment_seq(n).is_some())
            .collect();
        names.sort();
        Ok(names)
    }

    fn record(&mut self, kind: &str, fields: Map<String, Value>) {
        let line = self.chain.append(&self.batch_time, kind, fields);
        self.pending.push(line);
    }

    fn checkpoint(&mut self) -> Result<(), AuditError> {
        let line = self.chain.checkpoint(&now(), &self.key);
        self.pending.push(line.clone());
        self.head_pending = Some(line);
        self.flush()?;
        self.last_checkpoint = Instant::now();
        self.write_head()
    }

    /// HEAD: the latest checkpoint, replaced atomically (retried until it
    /// is written: until then the log is failing).
    fn write_head(&mut self) -> Result<(), AuditError> {
        let Some(line) = &self.head_pending else {
            return Ok(());
        };
        let head = self.dir.join("HEAD");
        let tmp = self.dir.join("HEAD.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &head)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(io(&head))?;
        self.head_pending = None;
        Ok(())
    }

    /// Writes the pending lines to the current segment (opening one if
    /// needed) and fsyncs.
    fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let first_seq = self.chain.last_seq + 1 - self.pending.len() as u64;
            let path = self.dir.join(pgveil_audit::segment_name(first_seq));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
            self.good_len = f.metadata().map_err(io(&path))?.len();
            self.file = Some(f);
            self.opened = Instant::now();
        }
        let always = self.cfg.fsync == AuditFsync::Always;
        let dir = self.dir.clone();
        let f = self.file.as_mut().expect("opened above");
        let mut buf = Vec::with_capacity(self.pending.iter().map(|l| l.len() + 1).sum());
        let result = (|| -> std::io::Result<()> {
            if always {
                for l in &self.pending {
                    f.write_all(l.as_bytes())?;
                    f.write_all(b"\n")?;
                    f.sync_data()?;
                }
            } else {
                for l in &self.pending {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                }
                f.write_all(&buf)?;
                f.sync_data()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                if self.cfg.stdout {
                    let mut out = std::io::stdout().lock();
                    for l in &self.pending {
                        let _ = writeln!(out, "{l}");
                    }
                }
                self.good_len = f.stream_position().unwrap_or(self.good_len);
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                // Cut a partial write back, so the retry appends whole lines.
                let _ = f.set_len(self.good_len);
                let _ = f.seek(std::io::SeekFrom::End(0));
                Err(AuditError::Io {
                    path: dir,
                    source: e,
                })
            }
        }
    }

    fn rotate_if_due(&mut self) -> Result<(), AuditError> {
        if self.file.is_none() {
            return Ok(());
        }
        let due = self.good_len >= self.cfg.segment_max_bytes
            || self.opened.elapsed() >= Duration::from_secs(self.cfg.segment_max_age_secs);
        if due {
            // Seal: a checkpoint closes the segment; the next record opens one.
            self.checkpoint()?;
            self.file = None;
        }
        Ok(())
    }

    /// Deletes sealed segments older than the retention period, oldest
    /// first, each only if it verifies on its own and ends in a checkpoint.
    fn expire(&mut self) -> Result<(), AuditError> {
        let segs = self.segments()?;
        let horizon = Duration::from_secs(self.cfg.retention_days.saturating_mul(86_400));
        // Never the newest segment: the chain continues from it.
        for name in segs.iter().take(segs.len().saturating_sub(1)) {
            let path = self.dir.join(name);
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > horizon);
            if !old {
                break;
            }
            let data = std::fs::read(&path).map_err(io(&path))?;
            let Some(last) = data
                .strip_suffix(b"\n")
                .and_then(|d| d.rsplit(|&b| b == b'\n').next())
            else {
                break;
            };
            let sealed = serde_json::from_slice::<Value>(last)
                .ok()
                .is_some_and(|v| v.get("type").and_then(Value::as_str) == Some("checkpoint"));
            let seg = pgveil_audit::Segment { name, data: &data };
            let r = pgveil_audit::verify(&[seg], None, &self.key.verifying_key());
            // Alone, a segment has no HEAD and may start after seq 1: only
            // problems inside it count.
            let inside = r
                .problems
                .iter()
                .all(|p| p.segment == "HEAD" || p.what.starts_with("the log starts at"));
            if !sealed || !inside {
                tracing::warn!(segment = %name, "audit segment past retention is not sealed or does not verify: kept");
                break;
            }
            let last_seq = serde_json::from_slice::<Value>(last)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
                .unwrap_or(0);
            std::fs::remove_file(&path).map_err(io(&path))?;
            let mut m = Map::new();
            m.insert("deleted_through_seq".into(), Value::from(last_seq));
            m.insert(
                "deleted_last_hash".into(),
                Value::from(pgveil_audit::line_hash(last)),
            );
            m.insert("segment".into(), Value::from(name.as_str()));
            self.record("retention", m);
        }
        Ok(())
    }

    fn run(mut self, rx: Receiver<Msg>, health: &Health) {
        // The writer polls instead of blocking on the channel: a blocked
        // receiver is woken by every send, a context switch per statement
        // on the cores the sessions and PostgreSQL need (measured: most of
        // the audit's cost). Busy, it wakes every 10 ms (group commit: one
        // write and fsync for all records of the interval; fewer fsyncs
        // cost less CPU in the kernel); idle, it backs off to 50 ms.
        const BUSY: Duration = Duration::from_millis(10);
        const IDLE: Duration = Duration::from_millis(50);
        let mut interval = BUSY;
        let mut waiters: Vec<SyncSender<()>> = Vec::new();
        loop {
            std::thread::sleep(interval);
            self.batch_time = now();
            let mut closed = false;
            let mut got = false;
            // Bounded, so a failing disk does not grow memory without limit
            // (the channel then blocks the senders).
            while self.pending.len() < 100_000 {
                match rx.try_recv() {
                    Ok(m) => {
                        got = true;
                        self.take(m, &mut waiters);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            interval = if got { BUSY } else { (interval * 2).min(IDLE) };
            let n = self.pending.len() as u64;
            let mut result = self.flush().and_then(|()| self.write_head());
            if result.is_ok() {
                health.written.fetch_add(n, Ordering::Relaxed);
                // Only over new records: a checkpoint after a clean stop's
                // would itself look appended.
                let due = self.chain.unsigned > 0
                    && (self.chain.unsigned >= self.cfg.checkpoint_every
                        || !waiters.is_empty()
                        || closed
                        || self.last_checkpoint.elapsed()
                            >= Duration::from_secs(self.cfg.checkpoint_interval_secs));
                if due {
                    result = self.checkpoint();
                }
            }
            if result.is_ok() {
                result = self.rotate_if_due();
            }
            if result.is_ok()
                && self
                    .last_retention
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
            {
                self.last_retention = Some(Instant::now());
                result = self.expire();
            }
            match result {
                Ok(()) => {
                    if health.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("audit log writable again; chain continues");
                    }
                    for w in waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
                Err(e) => {
                    if !health.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %e, "audit log cannot be written; records are kept and retried");
                    }
                    if let Ok(mut r) = health.reason.lock() {
                        *r = e.to_string();
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
            if closed && self.pending.is_empty() {
                return;
            }
        }
    }

    fn take(&mut self, m: Msg, waiters: &mut Vec<SyncSender<()>>) {
        match m {
            Msg::Record(kind, fields) => self.record(kind, fields),
            Msg::Statement(ev) => {
                let line =
                    self.chain
                        .append_raw(&self.batch_time, "statement", &statement_body(&ev));
                self.pending.push(line);
            }
            Msg::Flush(w) => waiters.push(w),
        }
    }
}

/// `pgveil audit keygen`: writes the signing key (0600) and its public key.
pub fn keygen(dir: &Path, out: &mut dyn Write) -> Result<(), AuditError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let private = dir.join("audit-signing.key");
    let public = dir.join("audit-signing.pub");
    if private.exists() {
        return Err(AuditError::Log(format!(
            "{} exists; move it away first (records signed with it need its public key to verify)",
            private.display()
        )));
    }
    let (text, key) = SigningKey::generate().map_err(|source| AuditError::Key {
        path: private.clone(),
        source,
    })?;
    crate::certs::write_private(&private, &text).map_err(io(&private))?;
    let pubtext = key.verifying_key().to_text();
    std::fs::write(&public, format!("{pubtext}\n")).map_err(io(&public))?;
    let _ = writeln!(
        out,
        "wrote {} (keep it secret; set audit.signing_key_file) and {} ({pubtext}; give it to whoever verifies the log)",
        private.display(),
        public.display()
    );
    Ok(())
}

/// `pgveil audit verify`: checks every segment and HEAD in `dir`. Returns
/// whether the log verified.
pub fn verify(dir: &Path, public_key: &Path, out: &mut dyn Write) -> Result<bool, AuditError> {
    let text = std::fs::read_to_string(public_key).map_err(io(public_key))?;
    let key = pgveil_audit::VerifyingKey::from_text(&text).map_err(|source| AuditError::Key {
        path: public_key.to_path_buf(),
        source,
    })?;
    let files = LogFiles::read(dir)?;
    let names = &files.names;
    let r = files.verify(&key);
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no records".to_owned(),
    };
    let _ = writeln!(
        out,
        "{} segment(s), {} record(s) ({range}), {} checkpoint(s); signed through seq {} at {}; {} record(s) after the last checkpoint",
        names.len(),
        r.records,
        r.checkpoints,
        r.signed_through.map_or("(none)".to_owned(), |s| s.to_string()),
        r.signed_time.as_deref().unwrap_or("(never)"),
        r.unsigned_tail
    );
    for p in &r.problems {
        let _ = writeln!(out, "FAIL {p}");
    }
    if r.ok() {
        let _ = writeln!(out, "audit log verified");
    }
    Ok(r.ok())
}

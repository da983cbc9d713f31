//! `pgveil report`: compliance evidence mapping HIPAA §164.312 technical
//! safeguards to live facts (configuration, policy, keys, the database's
//! coverage and guards, access rules, the audit chain), as Markdown and a
//! self-contained HTML page with a chart of PHI reads per day per role.
//!
//! [`gather`] does the I/O; [`markdown`] and [`html`] only render.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::config::{AuditOnFailure, Config, KekProviderKind, UpstreamTlsMode};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Keys(#[from] crate::keys::KeysError),
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    #[error("database: {0}")]
    Database(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// One protected column's facts.
#[derive(Debug, Clone, Default)]
pub struct ColumnFacts {
    pub column: String,
    pub ty: String,
    pub mode: String,
    pub label: String,
    /// Active key version and its age in days.
    pub key: String,
    pub key_age_days: Option<u64>,
    /// Non-NULL values and how many of them are not envelopes (with a database).
    pub coverage: Option<(u64, u64)>,
    /// Guard state (with a database).
    pub guard: Option<String>,
}

impl ColumnFacts {
    /// The protected-columns table's cells for this column.
    fn cells(&self) -> [String; 9] {
        let (n, bad) = self
            .coverage
            .map_or(("-".to_owned(), "-".to_owned()), |(n, b)| {
                (n.to_string(), b.to_string())
            });
        [
            self.column.clone(),
            self.ty.clone(),
            self.mode.clone(),
            self.label.clone(),
            self.key.clone(),
            self.key_age_days.map_or("-".to_owned(), |d| d.to_string()),
            n,
            bad,
            self.guard.clone().unwrap_or_else(|| "-".to_owned()),
        ]
    }
}

/// A verified chain: records, first seq, last seq, signed through seq, at.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    pub records: u64,
    pub first: u64,
    pub last: u64,
    pub signed_through: u64,
    pub signed_time: String,
}

/// The audit log's state.
#[derive(Debug, Clone, Default)]
pub struct AuditFacts {
    pub enabled: bool,
    pub dir: String,
    pub on_failure: String,
    /// The verified chain, or its problems.
    pub verified: Option<Result<Verified, Vec<String>>>,
    /// PHI reads (statements reading protected columns that completed) per
    /// (day, role).
    pub reads: BTreeMap<(String, String), u64>,
}

/// Everything the report states.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub generated: String,
    pub version: String,
    pub database: Option<String>,
    pub client_tls: Option<String>,
    pub client_tls_required: bool,
    pub client_certificates: bool,
    pub upstream_tls: String,
    pub upstream_negotiated: Option<String>,
    pub kek_provider: String,
    pub kek_age_days: Option<u64>,
    pub rotation_days: u64,
    pub columns: Vec<ColumnFacts>,
    /// `None`: no `[access]` section. Else (default, per role: rules).
    pub access: Option<(String, Vec<(String, String)>)>,
    pub audit: AuditFacts,
}

fn days_since(unix: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_sub(unix) / 86_400
}

/// Collects the facts: from the configuration, policy and keyring; with
/// `database` (a libpq URL) also coverage and guards; from the audit log
/// (verified with the public key derived from the signing key).
pub async fn gather(cfg: &Config, database: Option<&str>) -> Result<Facts, ReportError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let policy = crate::keys::load_policy(cfg)?;
    let ages = crate::keys::key_ages(cfg)?;
    let mut f = Facts {
        generated: crate::audit::format_time(now.as_secs(), 0),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        database: database.map(redact_url),
        client_tls: cfg
            .tls
            .cert_file
            .as_ref()
            .map(|_| "TLS 1.2 and 1.3 (rustls; 1.3 preferred)".to_owned()),
        client_tls_required: cfg.tls.require_tls,
        client_certificates: cfg.tls.client_ca_file.is_some(),
        upstream_tls: match cfg.upstream.tls_mode {
            UpstreamTlsMode::Disable => "disable",
            UpstreamTlsMode::Prefer => "prefer",
            UpstreamTlsMode::Require => "require",
            UpstreamTlsMode::VerifyFull => "verify-full",
        }
        .to_owned(),
        kek_provider: match cfg.keys.kek_provider {
            KekProviderKind::File => "file (development)",
            KekProviderKind::Env => "env (development)",
        }
        .to_owned(),
        kek_age_days: ages
            .iter()
            .find(|a| a.column == "kek")
            .map(|a| days_since(a.created_at)),
        rotation_days: cfg.keys.rotation_period_days,
        ..Facts::default()
    };
    for c in policy.columns() {
        let age = ages.iter().find(|a| a.column == c.column.to_string());
        f.columns.push(ColumnFacts {
            column: c.column.to_string(),
            ty: c.type_spec().to_string(),
            mode: c.mode.to_string(),
            label: c
                .label
                .as_ref()
                .map_or("unlabeled".to_owned(), |l| l.as_str().to_owned()),
            key: age.map_or("(none)".to_owned(), |a| a.key_id.clone()),
            key_age_days: age.map(|a| days_since(a.created_at)),
            coverage: None,
            guard: None,
        });
    }
    if let Some(rules) = policy.access() {
        let mut roles = Vec::new();
        for (role, r) in &rules.roles {
            let mut parts: Vec<String> = r
                .labels
                .iter()
                .map(|(l, a)| format!("{l}: {}", a.as_str()))
                .collect();
            parts.extend(
                r.columns
                    .iter()
                    .map(|(c, a)| format!("{c}: {}", a.as_str())),
            );
            roles.push((role.clone(), parts.join(", ")));
        }
        for (label, writers) in &rules.write {
            let w: Vec<&str> = writers.iter().map(String::as_str).collect();
            roles.push((format!("write {label}"), w.join(", ")));
        }
        f.access = Some((rules.default.as_str().to_owned(), roles));
    }
    if let Some(url) = database {
        let client = crate::check::connect(url).await?;
        let db = |e: tokio_postgres::Error| {
            ReportError::Database(match e.as_db_error() {
                Some(d) => format!("{} ({})", d.message(), d.code().code()),
                None => e.to_string(),
            })
        };
        let catalog = crate::check::catalog_columns(&policy, &client)
            .await
            .map_err(db)?;
        for (c, facts) in policy.columns().zip(f.columns.iter_mut()) {
            let Some(storage) = crate::check::storage_of(&catalog, &c.column) else {
                continue;
            };
            let Some(q) = pgveil_policy::Policy::non_envelope_count_query(&c.column, &storage)
            else {
                continue;
            };
            let bad: i64 = client.query_one(q.as_str(), &[]).await.map_err(db)?.get(0);
            let total_q = format!(
                "SELECT count({}) FROM {}.{}",
                c.column.column.quoted(),
                c.column.schema.quoted(),
                c.column.table.quoted()
            );
            let total: i64 = client
                .query_one(total_q.as_str(), &[])
                .await
                .map_err(db)?
                .get(0);
            facts.coverage = Some((total.max(0) as u64, bad.max(0) as u64));
        }
        let guards = crate::guard::status(&policy, &client)
            .await
            .map_err(|e| ReportError::Database(e.to_string()))?;
        for (column, state) in guards {
            use crate::guard::GuardState as G;
            let s = match state {
                G::Valid => "validated".to_owned(),
                G::NotValidated => "installed, not validated".to_owned(),
                G::Outdated => "outdated".to_owned(),
                G::Missing => "missing".to_owned(),
                G::NoStorage(s) => format!("storage {s} cannot hold ciphertext"),
            };
            if let Some(fc) = f
                .columns
                .iter_mut()
                .find(|c| c.column == column.to_string())
            {
                fc.guard = Some(s);
            }
        }
        f.upstream_negotiated = client
            .query_opt(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get::<_, String>(0));
    }
    f.audit = audit_facts(cfg)?;
    Ok(f)
}

fn redact_url(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user@host/db
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn audit_facts(cfg: &Config) -> Result<AuditFacts, ReportError> {
    let a = &cfg.audit;
    let dir = cfg.resolve(&a.dir);
    let mut facts = AuditFacts {
        enabled: a.enabled,
        dir: dir.display().to_string(),
        on_failure: match a.on_failure {
            AuditOnFailure::Block => "block",
            AuditOnFailure::Refuse => "refuse",
        }
        .to_owned(),
        ..AuditFacts::default()
    };
    if !dir.is_dir() {
        return Ok(facts);
    }
    let key_path = cfg.resolve(&a.signing_key_file);
    let Ok(text) = std::fs::read_to_string(&key_path) else {
        return Ok(facts);
    };
    let Ok(key) = pgveil_audit::SigningKey::from_text(&text) else {
        return Ok(facts);
    };
    let Ok(files) = crate::audit::LogFiles::read(&dir) else {
        return Ok(facts);
    };
    let r = files.verify(&key.verifying_key());
    facts.verified = Some(if r.ok() {
        Ok(Verified {
            records: r.records,
            first: r.first_seq.unwrap_or(0),
            last: r.last_seq.unwrap_or(0),
            signed_through: r.signed_through.unwrap_or(0),
            signed_time: r.signed_time.clone().unwrap_or_default(),
        })
    } else {
        Err(r.problems.iter().map(ToString::to_string).collect())
    });
    for d in &files.data {
        for line in d.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let reads = v["type"] == "statement"
                && v["outcome"] == "completed"
                && v["columns"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["use"] == "read" && c["decision"] != "deny")
                });
            if !reads {
                continue;
            }
            let day = v["time"]
                .as_str()
                .unwrap_or("")
                .get(..10)
                .unwrap_or("")
                .to_owned();
            let role = v["role"].as_str().unwrap_or("").to_owned();
            *facts.reads.entry((day, role)).or_default() += 1;
        }
    }
    Ok(facts)
}

/// A safeguard row: standard, what it asks, the evidence, whether it is met.
fn safeguards(f: &Facts) -> Vec<(&'static str, &'static str, String, bool)> {
    let mut rows = Vec::new();
    rows.push((
        "§164.312(a)(1)",
        "Access control: only authorised persons or software see ePHI",
        match &f.access {
            Some((default, roles)) => format!(
                "[access] rules for {} role(s) and write rights; roles without a rule: {default}; the role is the one PostgreSQL reports for the session (asked again after every statement that may change it)",
                roles.iter().filter(|(r, _)| !r.starts_with("write ")).count()
            ),
            None => "no [access] section: every login that passes pgveil gets plaintext".to_owned(),
        },
        f.access.is_some(),
    ));
    let uncovered: u64 = f
        .columns
        .iter()
        .filter_map(|c| c.coverage.map(|(_, bad)| bad))
        .sum();
    let scanned = f.columns.iter().any(|c| c.coverage.is_some());
    let old_keys = f
        .columns
        .iter()
        .filter(|c| c.key_age_days.is_some_and(|d| d > f.rotation_days))
        .count();
    rows.push((
        "§164.312(a)(2)(iv)",
        "Encryption and decryption of ePHI",
        format!(
            "{} protected column(s), AES-256-GCM (randomized) / AES-256-GCM-SIV (deterministic); {}; {} data key(s) older than the {}-day rotation period; KEK provider {}{}",
            f.columns.len(),
            if scanned {
                format!("{uncovered} stored value(s) not encrypted")
            } else {
                "coverage not scanned (run with --database)".to_owned()
            },
            old_keys,
            f.rotation_days,
            f.kek_provider,
            f.kek_age_days.map_or(String::new(), |d| format!(", KEK {d} day(s) old")),
        ),
        scanned && uncovered == 0 && old_keys == 0,
    ));
    rows.push((
        "§164.312(b)",
        "Audit controls: record and examine activity on ePHI",
        match (&f.audit.enabled, &f.audit.verified) {
            (false, _) => "audit log disabled (audit.enabled = false)".to_owned(),
            (true, None) => "audit log enabled; no records or no signing key to verify with".to_owned(),
            (true, Some(Ok(v))) => format!(
                "hash chain verified: {} record(s), seq {}..={}, signed through seq {} at {}; on failure: {}",
                v.records, v.first, v.last, v.signed_through, v.signed_time, f.audit.on_failure
            ),
            (true, Some(Err(p))) => format!("audit chain FAILED verification: {} problem(s)", p.len()),
        },
        f.audit.enabled && matches!(f.audit.verified, Some(Ok(_))),
    ));
    let guards_ok = f
        .columns
        .iter()
        .all(|c| c.guard.as_deref() == Some("validated"));
    rows.push((
        "§164.312(c)(1)",
        "Integrity: ePHI not improperly altered or destroyed",
        format!(
            "every value authenticated (AEAD tag bound to column, key version and mode); guard constraints: {}",
            if f.columns.iter().all(|c| c.guard.is_none()) {
                "not checked (run with --database)".to_owned()
            } else {
                format!(
                    "{} of {} columns validated",
                    f.columns.iter().filter(|c| c.guard.as_deref() == Some("validated")).count(),
                    f.columns.len()
                )
            }
        ),
        guards_ok,
    ));
    rows.push((
        "§164.312(d)",
        "Person or entity authentication",
        format!(
            "PostgreSQL authenticates every login (SCRAM-SHA-256/md5 relayed; pgveil stores no credentials){}",
            if f.client_certificates { "; client certificates required (mTLS)" } else { "" }
        ),
        true,
    ));
    rows.push((
        "§164.312(e)(1)",
        "Transmission security",
        format!(
            "client side: {}{}; upstream: tls_mode = {}{}",
            f.client_tls.as_deref().unwrap_or("no TLS configured"),
            if f.client_tls_required {
                ", required"
            } else {
                ", optional"
            },
            f.upstream_tls,
            f.upstream_negotiated
                .as_ref()
                .map_or(String::new(), |v| format!(" (server negotiated {v})")),
        ),
        f.client_tls.is_some()
            && f.client_tls_required
            && matches!(f.upstream_tls.as_str(), "require" | "verify-full"),
    ));
    rows
}

/// The report as Markdown.
pub fn markdown(f: &Facts) -> String {
    let mut s = String::new();
    s.push_str("# pgveil compliance evidence (HIPAA §164.312)\n\n");
    s.push_str(&format!(
        "Generated {} by pgveil {}{}.\n\n",
        f.generated,
        f.version,
        f.database
            .as_ref()
            .map_or(String::new(), |d| format!(" for {d}"))
    ));
    s.push_str("## Technical safeguards\n\n| standard | safeguard | evidence | status |\n| --- | --- | --- | --- |\n");
    for (std, what, ev, ok) in safeguards(f) {
        s.push_str(&format!(
            "| {std} | {what} | {} | {} |\n",
            ev.replace('|', "\\|"),
            if ok { "met" } else { "gap" }
        ));
    }
    s.push_str("\n## Protected columns\n\n| column | type | mode | label | key | key age (days) | non-NULL values | not encrypted | guard |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for c in &f.columns {
        s.push_str(&format!("| {} |\n", c.cells().join(" | ")));
    }
    s.push_str("\n## Access rules\n\n");
    match &f.access {
        None => s.push_str("No `[access]` section: every login gets plaintext.\n"),
        Some((default, roles)) => {
            s.push_str(&format!(
                "Roles without a rule: **{default}**.\n\n| role | rules |\n| --- | --- |\n"
            ));
            for (r, rules) in roles {
                s.push_str(&format!("| {r} | {rules} |\n"));
            }
        }
    }
    s.push_str("\n## PHI reads per day and role (from the audit log)\n\n");
    if f.audit.reads.is_empty() {
        s.push_str("No reads recorded.\n");
    } else {
        s.push_str("| day | role | reads |\n| --- | --- | --- |\n");
        for ((day, role), n) in &f.audit.reads {
            s.push_str(&format!("| {day} | {role} | {n} |\n"));
        }
    }
    if let Some(Err(problems)) = &f.audit.verified {
        s.push_str("\n## Audit verification problems\n\n");
        for p in problems {
            s.push_str(&format!("- {p}\n"));
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// PHI reads per day, one bar per day stacked by role, as inline SVG.
fn chart(reads: &BTreeMap<(String, String), u64>) -> String {
    const COLORS: [&str; 6] = [
        "#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6",
    ];
    let days: Vec<&String> = {
        let mut d: Vec<&String> = reads.keys().map(|(d, _)| d).collect();
        d.dedup();
        d
    };
    let mut roles: Vec<&String> = reads.keys().map(|(_, r)| r).collect();
    roles.sort();
    roles.dedup();
    let totals: Vec<u64> = days
        .iter()
        .map(|d| {
            reads
                .iter()
                .filter(|((dd, _), _)| dd == *d)
                .map(|(_, n)| n)
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(1).max(1);
    let (w, h, left, bottom) = (640.0_f64, 240.0_f64, 50.0_f64, 40.0_f64);
    let bar = ((w - left) / days.len().max(1) as f64 * 0.6).min(60.0);
    let step = (w - left) / days.len().max(1) as f64;
    let mut s = format!(
        "<svg id=\"reads-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"PHI reads per day per role\">",
        h + 20.0 * roles.len() as f64
    );
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" stroke=\"#333\"/><text x=\"4\" y=\"14\" font-size=\"11\">{max}</text>",
        h - bottom,
        h - bottom
    ));
    for (i, day) in days.iter().enumerate() {
        let x = left + step * i as f64 + (step - bar) / 2.0;
        let mut y = h - bottom;
        for (ri, role) in roles.iter().enumerate() {
            let n = reads
                .get(&((*day).clone(), (*role).clone()))
                .copied()
                .unwrap_or(0);
            if n == 0 {
                continue;
            }
            let bh = (h - bottom - 20.0) * n as f64 / max as f64;
            y -= bh;
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} {}: {n}</title></rect>",
                COLORS[ri % COLORS.len()],
                esc(day),
                esc(role)
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x + bar / 2.0,
            h - bottom + 15.0,
            esc(day)
        ));
    }
    for (ri, role) in roles.iter().enumerate() {
        let y = h + 20.0 * ri as f64;
        s.push_str(&format!(
            "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            y - 10.0,
            COLORS[ri % COLORS.len()],
            left + 18.0,
            y,
            esc(role)
        ));
    }
    s.push_str("</svg>");
    s
}

/// The report as one self-contained HTML page.
pub fn html(f: &Facts) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pgveil compliance evidence</title>\n<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}table{border-collapse:collapse;margin:1em 0;width:100%}th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}th{background:#eef}.met{color:#0a6b0a;font-weight:bold}.gap{color:#b00;font-weight:bold}</style></head><body>\n",
    );
    s.push_str("<h1>pgveil compliance evidence (HIPAA §164.312)</h1>\n");
    s.push_str(&format!(
        "<p>Generated {} by pgveil {}{}.</p>\n",
        esc(&f.generated),
        esc(&f.version),
        f.database
            .as_ref()
            .map_or(String::new(), |d| format!(" for {}", esc(d)))
    ));
    s.push_str("<h2>Technical safeguards</h2>\n<table id=\"safeguards\"><thead><tr><th>standard</th><th>safeguard</th><th>evidence</th><th>status</th></tr></thead><tbody>\n");
    for (std, what, ev, ok) in safeguards(f) {
        let (class, word) = if ok { ("met", "met") } else { ("gap", "gap") };
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td></tr>\n",
            esc(std),
            esc(what),
            esc(&ev)
        ));
    }
    s.push_str("</tbody></table>\n<h2>Protected columns</h2>\n<table id=\"columns\"><thead><tr><th>column</th><th>type</th><th>mode</th><th>label</th><th>key</th><th>key age (days)</th><th>non-NULL values</th><th>not encrypted</th><th>guard</th></tr></thead><tbody>\n");
    for c in &f.columns {
        let cells: Vec<String> = c.cells().iter().map(|x| esc(x)).collect();
        s.push_str(&format!("<tr><td>{}</td></tr>\n", cells.join("</td><td>")));
    }
    s.push_str("</tbody></table>\n<h2>Access rules</h2>\n");
    match &f.access {
        None => {
            s.push_str("<p>No <code>[access]</code> section: every login gets plaintext.</p>\n")
        }
        Some((default, roles)) => {
            s.push_str(&format!(
                "<p>Roles without a rule: <b>{}</b>.</p><table id=\"access\"><thead><tr><th>role</th><th>rules</th></tr></thead><tbody>\n",
                esc(default)
            ));
            for (r, rules) in roles {
                s.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>\n",
                    esc(r),
                    esc(rules)
                ));
            }
            s.push_str("</tbody></table>\n");
        }
    }
    s.push_str("<h2>PHI reads per day and role (from the audit log)</h2>\n");
    if f.audit.reads.is_empty() {
        s.push_str("<p>No reads recorded.</p>\n");
    } else {
        s.push_str(&chart(&f.audit.reads));
    }
    if let Some(Err(problems)) = &f.audit.verified {
        s.push_str("<h2>Audit verification problems</h2><ul>\n");
        for p in problems {
            s.push_str(&format!("<li>{}</li>\n", esc(p)));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// `pgveil report`: writes `report.md` and `report.html` into `out_dir`.
pub async fn run(
    cfg: &Config,
    database: Option<&str>,
    out_dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<(), ReportError> {
    let facts = gather(cfg, database).await?;
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    for (name, text) in [
        ("report.md", markdown(&facts)),
        ("report.html", html(&facts)),
    ] {
        let p = out_dir.join(name);
        std::fs::write(&p, text).map_err(|source| ReportError::Io {
            path: p.clone(),
            source,
        })?;
        let _ = writeln!(out, "wrote {}", p.display());
    }
    Ok(())
}

//! pgveil's tamper-evident audit records, without I/O.
//!
//! # Format
//! The log is a sequence of JSON Lines *segments* (`audit-<first seq>.jsonl`).
//! Every record is one line holding at least `seq` (1, 2, 3, … across
//! segments and restarts), `time`, `type` and `prev`: the SHA-256 (hex) of
//! the previous record's line, exactly as written (the first record's `prev`
//! is 64 zeros). Editing, inserting, deleting or reordering any record
//! therefore breaks the chain at the record after it.
//!
//! Every so often (a number of records, an interval, a segment's end, a
//! shutdown) the writer appends a `checkpoint` record whose `sig` is an
//! Ed25519 signature over its `seq`, `prev` and `time`: through the chain it
//! vouches for every record before it. The latest checkpoint line is also
//! kept in a `HEAD` file beside the segments, so cutting records off the end
//! of the log (truncation) is detected: the log must still contain HEAD's
//! checkpoint, byte for byte.
//!
//! Retention deletes whole, sealed segments from the start and records a
//! `retention` record naming the last deleted `seq` and its hash, so a log
//! that starts later than 1 is explained — or reported.
//!
//! # What it does not guarantee
//! Whoever holds the signing key can rewrite the whole log and HEAD
//! consistently; an attacker who removes the tail *and* restores an older
//! HEAD (both from their own copies) is caught only by a copy of a newer
//! HEAD kept elsewhere (ship the log to a SIEM). Records after the last
//! checkpoint are chained but not yet signed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A key file that is not what `pgveil audit keygen` writes.
    #[error("{0}")]
    BadKey(String),
    /// A record line that cannot continue the chain.
    #[error("cannot continue the audit chain: {0}")]
    BadRecord(String),
}

/// SHA-256 of a record line (without its newline), lower-case hex.
pub fn line_hash(line: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, line);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What a checkpoint signs.
fn checkpoint_message(seq: u64, prev: &str, time: &str) -> Vec<u8> {
    format!("pgveil-audit-checkpoint-v1\n{seq}\n{prev}\n{time}").into_bytes()
}

/// The Ed25519 key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.verifying_key().to_text())
            .finish_non_exhaustive()
    }
}

const KEY_BEGIN: &str = "-----BEGIN PGVEIL AUDIT SIGNING KEY-----";
const KEY_END: &str = "-----END PGVEIL AUDIT SIGNING KEY-----";

impl SigningKey {
    /// A new key: the private key file's text (PKCS#8 inside a PEM-like
    /// armour) and the key.
    pub fn generate() -> Result<(Zeroizing<String>, SigningKey), AuditError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| AuditError::BadKey("cannot generate an Ed25519 key".into()))?;
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(doc.as_ref()));
        let text = Zeroizing::new(format!("{KEY_BEGIN}\n{}\n{KEY_END}\n", b64.as_str()));
        let key = Self::from_text(&text)?;
        Ok((text, key))
    }

    /// Reads a private key file's text.
    pub fn from_text(text: &str) -> Result<SigningKey, AuditError> {
        let body: Zeroizing<String> = Zeroizing::new(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != KEY_BEGIN && *l != KEY_END)
                .collect(),
        );
        if !text.contains(KEY_BEGIN) {
            return Err(AuditError::BadKey(
                "not a pgveil audit signing key (create one with `pgveil audit keygen`)".into(),
            ));
        }
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|_| AuditError::BadKey("the signing key is not valid base64".into()))?,
        );
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der))
            .map_err(|_| {
                AuditError::BadKey("the signing key is not an Ed25519 PKCS#8 key".into())
            })?;
        Ok(SigningKey { pair })
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey(k)
    }

    fn sign(&self, msg: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(msg).as_ref())
    }
}

/// The public key that verifies checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyingKey([u8; 32]);

impl VerifyingKey {
    /// `ed25519:<base64>`, the public key file's text.
    pub fn to_text(&self) -> String {
        format!(
            "ed25519:{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }

    /// Parses [`Self::to_text`].
    pub fn from_text(text: &str) -> Result<VerifyingKey, AuditError> {
        let b64 = text.trim().strip_prefix("ed25519:").ok_or_else(|| {
            AuditError::BadKey(
                "not a pgveil audit public key (expected a line `ed25519:<base64>`)".into(),
            )
        })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| AuditError::BadKey("the public key is not valid base64".into()))?;
        let k: [u8; 32] = raw
            .try_into()
            .map_err(|_| AuditError::BadKey("an Ed25519 public key is 32 bytes".into()))?;
        Ok(VerifyingKey(k))
    }

    fn verify(&self, msg: &[u8], sig_b64: &str) -> bool {
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig_b64) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, &sig)
            .is_ok()
    }

    /// A short id: the first 8 bytes of the key's SHA-256, hex.
    pub fn id(&self) -> String {
        line_hash(&self.0)[..16].to_owned()
    }
}

/// The writer's position in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// `seq` of the last record (0: none yet).
    pub last_seq: u64,
    /// Hash of the last record's line.
    pub last_hash: String,
    /// Records since the last checkpoint.
    pub unsigned: u64,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            last_seq: 0,
            last_hash: GENESIS.to_owned(),
            unsigned: 0,
        }
    }
}

impl Chain {
    /// Continues after `line`, the last record of an existing log.
    pub fn resume(line: &[u8]) -> Result<Chain, AuditError> {
        let v: Value = serde_json::from_slice(line)
            .map_err(|_| AuditError::BadRecord("its last record is not JSON".into()))?;
        let seq = v
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| AuditError::BadRecord("its last record has no seq".into()))?;
        let unsigned = u64::from(v.get("type").and_then(Value::as_str) != Some("checkpoint"));
        Ok(Chain {
            last_seq: seq,
            last_hash: line_hash(line),
            unsigned,
        })
    }

    /// Appends a record of `kind` with `fields` (which must not use the
    /// names `seq`, `time`, `type`, `prev`, `sig`); returns its line.
    pub fn append(&mut self, time: &str, kind: &str, fields: Map<String, Value>) -> String {
        let mut m = fields;
        m.insert("seq".into(), Value::from(self.last_seq + 1));
        m.insert("time".into(), Value::from(time));
        m.insert("type".into(), Value::from(kind));
        m.insert("prev".into(), Value::from(self.last_hash.as_str()));
        m.remove("sig");
        let line = Value::Object(m).to_string();
        self.last_seq += 1;
        self.last_hash = line_hash(line.as_bytes());
        self.unsigned += 1;
        line
    }

    /// Appends a record of `kind` whose other fields are `body`: JSON
    /// object members (`"k":v,…`, no braces) not using the names `seq`,
    /// `time`, `type`, `prev`, `sig`. Returns its line.
    pub fn append_raw(&mut self, time: &str, kind: &str, body: &str) -> String {
        let mut line = String::with_capacity(body.len() + 160);
        line.push_str("{\"seq\":");
        line.push_str(&(self.last_seq + 1).to_string());
        line.push_str(",\"time\":");
        json_str(&mut line, time);
        line.push_str(",\"type\":");
        json_str(&mut line, kind);
        line.push_str(",\"prev\":\"");
        line.push_str(&self.last_hash);
        line.push('"');
        if !body.is_empty() {
            line.push(',');
            line.push_str(body);
        }
        line.push('}');
        self.last_seq += 1;
        self.last_hash = line_hash(line.as_bytes());
        self.unsigned += 1;
        line
    }

    /// Appends a signed checkpoint; returns its line.
    pub fn checkpoint(&mut self, time: &str, key: &SigningKey) -> String {
        let seq = self.last_seq + 1;
        let mut m = Map::new();
        m.insert(
            "sig".into(),
            Value::from(key.sign(&checkpoint_message(seq, &self.last_hash, time))),
        );
        m.insert("key".into(), Value::from(key.verifying_key().id()));
        m.insert("seq".into(), Value::from(seq));
        m.insert("time".into(), Value::from(time));
        m.insert("type".into(), Value::from("checkpoint"));
        m.insert("prev".into(), Value::from(self.last_hash.as_str()));
        let line = Value::Object(m).to_string();
        self.last_seq = seq;
        self.last_hash = line_hash(line.as_bytes());
        self.unsigned = 0;
        line
    }
}

/// Appends `s` to `out` as a JSON string.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The segment file name for a segment starting at `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("audit-{seq:020}.jsonl")
}

/// The first `seq` a segment's name promises.
pub fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// One segment's bytes, by file name.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// File name (`audit-<seq>.jsonl`).
    pub name: &'a str,
    /// Contents.
    pub data: &'a [u8],
}

/// A verification failure, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Segment file (or `HEAD`).
    pub segment: String,
    /// 1-based line in it (0: the segment as a whole).
    pub line: usize,
    /// The record's `seq`, when readable.
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// First and last `seq` seen.
    pub first_seq: Option<u64>,
    /// Last `seq` seen.
    pub last_seq: Option<u64>,
    /// Records read.
    pub records: u64,
    /// Valid checkpoints.
    pub checkpoints: u64,
    /// `seq` of the last valid checkpoint.
    pub signed_through: Option<u64>,
    /// Records after it (chained, not yet signed).
    pub unsigned_tail: u64,
    /// `time` of the last valid checkpoint.
    pub signed_time: Option<String>,
    /// Every failure found, in log order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// No problem found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies segments (in any order; sorted by name here) and the HEAD
/// checkpoint against `key`.
pub fn verify(segments: &[Segment<'_>], head: Option<&[u8]>, key: &VerifyingKey) -> Report {
    let mut segs: Vec<&Segment<'_>> = segments.iter().collect();
    segs.sort_by_key(|s| s.name);
    let mut r = Report::default();
    let mut expected_seq: Option<u64> = None;
    let mut last_hash = String::new();
    let mut start_prev: Option<String> = None;
    let mut retained: Vec<(u64, String)> = Vec::new();
    // seq → line hash, for the HEAD check.
    let mut hashes: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    // The previous record's type, and whether a clean stop was sealed (a
    // `stop` record then its checkpoint): only a `start` may follow that.
    let mut prev_kind = String::new();
    let mut stopped = false;
    for (si, seg) in segs.iter().enumerate() {
        let last_segment = si + 1 == segs.len();
        let problem = |line: usize, seq: Option<u64>, what: String| Problem {
            segment: seg.name.to_owned(),
            line,
            seq,
            what,
        };
        if seg.data.is_empty() {
            r.problems
                .push(problem(0, None, "empty segment (records removed?)".into()));
            continue;
        }
        let ends_cleanly = seg.data.last() == Some(&b'\n');
        let lines: Vec<&[u8]> = seg
            .data
            .strip_suffix(b"\n")
            .unwrap_or(seg.data)
            .split(|&b| b == b'\n')
            .collect();
        let name_seq = segment_seq(seg.name);
        for (li, line) in lines.iter().enumerate() {
            let lineno = li + 1;
            if !ends_cleanly && li + 1 == lines.len() {
                let what = if last_segment {
                    "the last record is cut short (truncated while written, or edited)"
                } else {
                    "the segment's last record is cut short"
                };
                r.problems.push(problem(lineno, None, what.into()));
                break;
            }
            let v: Value = match serde_json::from_slice(line) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    r.problems.push(problem(
                        lineno,
                        None,
                        "not a JSON record (edited or inserted)".into(),
                    ));
                    // The next record cannot match this line's hash anyway.
                    last_hash = line_hash(line);
                    expected_seq = expected_seq.map(|s| s + 1);
                    continue;
                }
            };
            let seq = v.get("seq").and_then(Value::as_u64);
            let prev = v.get("prev").and_then(Value::as_str).unwrap_or("");
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
            let time = v.get("time").and_then(Value::as_str).unwrap_or("");
            let Some(seq) = seq else {
                r.problems
                    .push(problem(lineno, None, "record without seq".into()));
                continue;
            };
            r.records += 1;
            if li == 0 && name_seq != Some(seq) {
                r.problems.push(problem(
                    lineno,
                    Some(seq),
                    format!(
                        "the segment's name says it starts at seq {}, its first record is seq {seq} (segment renamed or records removed)",
                        name_seq.map_or("?".to_owned(), |s| s.to_string())
                    ),
                ));
            }
            match expected_seq {
                None => {
                    r.first_seq = Some(seq);
                    if seq != 1 || prev != GENESIS {
                        start_prev = Some(prev.to_owned());
                    }
                }
                Some(want) => {
                    if seq != want {
                        let what = if seq > want {
                            format!(
                                "seq {seq} follows seq {}: records {want}..{} are missing (deleted, or a segment removed)",
                                want - 1,
                                seq - 1
                            )
                        } else {
                            format!(
                                "seq {seq} where seq {want} was expected (a record inserted, duplicated or moved)"
                            )
                        };
                        r.problems.push(problem(lineno, Some(seq), what));
                    } else if prev != last_hash {
                        r.problems.push(problem(
                            lineno,
                            Some(seq),
                            "does not follow the record before it (hash chain broken): the previous record was edited, or records were inserted, deleted or swapped".into(),
                        ));
                    }
                }
            }
            let hash = line_hash(line);
            if stopped && kind != "start" {
                r.problems.push(problem(
                    lineno,
                    Some(seq),
                    format!("a {kind:?} record after a clean stop and before the next start: appended while pgveil was down"),
                ));
            }
            stopped = kind == "checkpoint" && prev_kind == "stop";
            prev_kind = kind.to_owned();
            match kind {
                "checkpoint" => {
                    let sig = v.get("sig").and_then(Value::as_str).unwrap_or("");
                    if key.verify(&checkpoint_message(seq, prev, time), sig) {
                        r.checkpoints += 1;
                        r.signed_through = Some(seq);
                        r.signed_time = Some(time.to_owned());
                        r.unsigned_tail = 0;
                    } else {
                        r.problems.push(problem(
                            lineno,
                            Some(seq),
                            "checkpoint signature does not verify with this public key".into(),
                        ));
                    }
                }
                "retention" => {
                    if let (Some(through), Some(h)) = (
                        v.get("deleted_through_seq").and_then(Value::as_u64),
                        v.get("deleted_last_hash").and_then(Value::as_str),
                    ) {
                        retained.push((through, h.to_owned()));
                    }
                    r.unsigned_tail += 1;
                }
                _ => r.unsigned_tail += 1,
            }
            hashes.insert(seq, hash.clone());
            last_hash = hash;
            expected_seq = Some(seq + 1);
            r.last_seq = Some(seq);
        }
    }
    // A log starting after seq 1 must be explained by retention.
    if let (Some(first), Some(prev)) = (r.first_seq, start_prev) {
        let explained = retained
            .iter()
            .any(|(through, h)| *through + 1 == first && *h == prev);
        if !explained {
            r.problems.push(Problem {
                segment: segs.first().map_or(String::new(), |s| s.name.to_owned()),
                line: 1,
                seq: Some(first),
                what: format!(
                    "the log starts at seq {first}, and no retention record says records before it were deleted (a segment removed?)"
                ),
            });
        }
    }
    match head {
        None if r.records > 0 => r.problems.push(Problem {
            segment: "HEAD".into(),
            line: 0,
            seq: None,
            what: "HEAD is missing: truncation of the log cannot be ruled out".into(),
        }),
        None => r.problems.push(Problem {
            segment: "(log)".into(),
            line: 0,
            seq: None,
            what: "no records and no HEAD: an empty or removed log proves nothing".into(),
        }),
        Some(head) => {
            let line = head.strip_suffix(b"\n").unwrap_or(head);
            let v: Option<Value> = serde_json::from_slice(line).ok();
            let seq = v
                .as_ref()
                .and_then(|v| v.get("seq"))
                .and_then(Value::as_u64);
            let prev = v
                .as_ref()
                .and_then(|v| v.get("prev"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let time = v
                .as_ref()
                .and_then(|v| v.get("time"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let sig = v
                .as_ref()
                .and_then(|v| v.get("sig"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let head_problem = |what: String| Problem {
                segment: "HEAD".into(),
                line: 0,
                seq,
                what,
            };
            match seq {
                None => r
                    .problems
                    .push(head_problem("HEAD is not a checkpoint record".into())),
                Some(seq) => {
                    if !key.verify(&checkpoint_message(seq, prev, time), sig) {
                        r.problems.push(head_problem(
                            "HEAD's signature does not verify with this public key".into(),
                        ));
                    } else {
                        match hashes.get(&seq) {
                            Some(h) if *h == line_hash(line) => {}
                            Some(_) => r.problems.push(head_problem(format!(
                                "the log's record {seq} is not HEAD's checkpoint"
                            ))),
                            None => r.problems.push(head_problem(format!(
                                "the log was truncated: HEAD's checkpoint is seq {seq}, the log ends at seq {}",
                                r.last_seq.map_or("(none)".to_owned(), |s| s.to_string())
                            ))),
                        }
                    }
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests;

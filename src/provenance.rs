//! Provenance: an append-only, hash-chained JSON Lines log of every execution.
//!
//! Over all nine walls: what each built, and what the sandbox did.
//!
//! Each line is one JSON object whose `prev` is the SHA-256 (hex) of the line
//! before it (64 zeros for the first line), so an edit, insertion, deletion or
//! reordering anywhere but at the very end breaks the chain at that line, and
//! `ninewall audit verify` names it. Appends take an exclusive `flock` on the
//! file, read the last line and write their lines: several supervisors
//! appending to one log keep one chain. A durable append then calls
//! `fdatasync` after unlocking, so that the syncs of executions that end
//! together are one journal commit (the filesystem joins concurrent syncs of
//! one file into its running transaction), and returns only once it is done:
//! a record is on disk before the caller is told anything. (A sealed log
//! syncs before unlocking, so that its witness hears the seals in order.)
//!
//! Records: `exec.start` (written before the sandbox is built: if it cannot be
//! written, nothing runs), `syscall.denied` (one per refused syscall name, with
//! a count), `exec.end` (how it ended, what it used). A start without an end is
//! an execution whose supervisor died: `audit show` calls it incomplete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
#[error("provenance: {what} {path}: {source}")]
pub struct ProvenanceError {
    /// What was attempted.
    pub what: &'static str,
    /// The log.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Who asked for an execution and on whose behalf: recorded in `exec.start`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// The delegating execution.
    pub parent: Option<String>,
    /// The worker, as the policy names it.
    pub worker: Option<String>,
    /// The role that granted the MBU.
    pub role: Option<String>,
    /// The uid the kernel reported for the client.
    pub client_uid: Option<u32>,
    /// How many delegations deep this execution is (0: asked for directly).
    #[serde(default)]
    pub depth: u32,
    /// The digest of the profile the gate checked
    /// ([`profile_digest`]): the supervisor refuses to run
    /// if the files changed since.
    #[serde(default)]
    pub expect_profile: Option<String>,
    /// The agent's own record (an `llm.call`, an `agent.note` appended
    /// through the daemon) that led to this execution, by its id.
    #[serde(default)]
    pub caused_by: Option<String>,
}

/// The log file, open for appending.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
}

/// The log used when neither `--audit-log` nor `NINEWALL_AUDIT_LOG` names one:
/// `/var/log/ninewall/audit.jsonl` for root, `$XDG_STATE_HOME/ninewall/` or
/// `~/.local/state/ninewall/audit.jsonl` for anyone else.
pub fn default_log_path(uid: u32) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NINEWALL_AUDIT_LOG") {
        return Some(PathBuf::from(p));
    }
    if uid == 0 {
        return Some(PathBuf::from("/var/log/ninewall/audit.jsonl"));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("ninewall/audit.jsonl"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            out.push(char::from(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    out
}

/// `n` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    let mut v = n;
    while v > 0 && i > 0 {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
    }
    let start = i.min(digits.len().saturating_sub(width));
    for &d in digits.get(start..).unwrap_or_default() {
        out.push(char::from(d));
    }
}

/// SHA-256 of `bytes`, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Longest string a record carries whole when someone else chose it (a
/// client's MBU name, an argument): longer ones are recorded by
/// [`bounded`].
pub const RECORDED_STRING_MAX: usize = 256;
/// Most arguments an `exec.start` record lists one by one.
const RECORDED_ARGS_MAX: usize = 64;

/// A string someone else chose, as a record carries it: whole up to
/// [`RECORDED_STRING_MAX`] bytes; beyond, its first 64 characters, its
/// length and its SHA-256, which identify it without letting it fill the
/// log.
pub fn bounded(text: &str) -> Value {
    if text.len() <= RECORDED_STRING_MAX {
        return Value::String(text.to_string());
    }
    let prefix: String = text.chars().take(64).collect();
    json!({"prefix": prefix, "bytes": text.len(), "sha256": sha256_hex(text.as_bytes())})
}

/// A list of strings someone else chose (an argv): each [`bounded`], and
/// past [`RECORDED_ARGS_MAX`] items, the rest as a count and the SHA-256 of
/// them NUL-joined.
pub fn bounded_list(items: &[String]) -> Value {
    let listed: Vec<Value> = items.iter().take(RECORDED_ARGS_MAX).map(|a| bounded(a)).collect();
    let Some(rest) = items.get(RECORDED_ARGS_MAX..).filter(|r| !r.is_empty()) else {
        return Value::Array(listed);
    };
    json!({
        "first": listed,
        "more": rest.len(),
        "more_sha256": sha256_hex(rest.join("\0").as_bytes()),
    })
}

/// A [`bounded`] string as a human reads it.
pub fn bounded_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => format!(
            "{}… ({} bytes, sha256 {})",
            o.get("prefix").and_then(Value::as_str).unwrap_or(""),
            o.get("bytes").map_or_else(|| "?".to_string(), Value::to_string),
            o.get("sha256").and_then(Value::as_str).unwrap_or("?")
        ),
        _ => "?".to_string(),
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time as RFC 3339 UTC with nanoseconds (fixed width, so ids sort).
pub fn now_rfc3339() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// `d` after the Unix epoch, as [`now_rfc3339`] writes it.
fn rfc3339(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(i64::MAX - 719_468) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Written digit by digit: one per recorded file access.
    let mut out = String::with_capacity(30);
    for (n, width, sep) in [
        (year.unsigned_abs(), 4, '-'),
        (month.unsigned_abs(), 2, '-'),
        (day.unsigned_abs(), 2, 'T'),
        (rem / 3600, 2, ':'),
        (rem % 3600 / 60, 2, ':'),
        (rem % 60, 2, '.'),
        (u64::from(d.subsec_nanos()), 9, 'Z'),
    ] {
        push_padded(&mut out, n, width);
        out.push(sep);
    }
    out
}

/// A new execution id: sortable by start time, unique per host.
pub fn new_exec_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        now_rfc3339(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The last line of `file` (without its newline), or `None` if it is empty.
fn last_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut chunk: u64 = 4096;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut buf)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(pos) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(body.get(pos + 1..).unwrap_or_default().to_vec()));
        }
        if start == 0 {
            return Ok(Some(body.to_vec()));
        }
        chunk = chunk.saturating_mul(4);
    }
}

/// A last line without its newline: a write that was cut short (the disk
/// filled, the machine stopped). Returns how many bytes to keep (up to and
/// with the last newline) and the torn bytes after them.
fn torn_tail(file: &mut File) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last == *b"\n" {
        return Ok(None);
    }
    let mut chunk: u64 = 4096;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
        file.take(len - start).read_to_end(&mut buf)?;
        if let Some(pos) = buf.iter().rposition(|&b| b == b'\n') {
            let keep = start + pos as u64 + 1;
            return Ok(Some((keep, buf.get(pos + 1..).unwrap_or_default().to_vec())));
        }
        if start == 0 {
            return Ok(Some((0, buf)));
        }
        chunk = chunk.saturating_mul(4);
    }
}

/// A new open file description of the file `file` is open on, through its
/// `/proc/self/fd` link (the same inode; no path is resolved again). Appends
/// are ordered by `flock`, which holds per open file description: a `dup`
/// or an inherited descriptor shares its holder's lock and so would not wait
/// for it.
fn reopen(file: &File) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

impl AuditLog {
    /// Opens (creating it and its directory, private to the caller) the log.
    pub fn open(path: &Path) -> Result<AuditLog, ProvenanceError> {
        let err = |what| {
            let path = path.to_path_buf();
            move |source| ProvenanceError { what, path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(err("creating the directory of"))?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(err("cannot open"))?;
        Ok(AuditLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The log a parent process opened, inherited as descriptor `fd`
    /// (`run --audit-log-fd`, from a daemon or a delegating supervisor): the
    /// same file, not a path resolved again.
    pub fn inherited(fd: i32) -> Result<AuditLog, ProvenanceError> {
        let proc_path = PathBuf::from(format!("/proc/self/fd/{fd}"));
        let inherited = crate::sys::take_inherited_fd(fd).map_err(|source| ProvenanceError {
            what: "cannot take the inherited log",
            path: proc_path.clone(),
            source,
        })?;
        // For messages: the path the parent opened, as the kernel has it.
        let path = std::fs::read_link(&proc_path).unwrap_or(proc_path);
        let file = reopen(&File::from(inherited)).map_err(|source| ProvenanceError {
            what: "cannot reopen the inherited log",
            path: path.clone(),
            source,
        })?;
        Ok(AuditLog { file, path })
    }

    /// A second handle on the same log file, for a thread of its own: appends
    /// through either keep one chain.
    pub fn try_clone(&self) -> Result<AuditLog, ProvenanceError> {
        Ok(AuditLog {
            file: reopen(&self.file).map_err(|source| ProvenanceError {
                what: "cannot reopen",
                path: self.path.clone(),
                source,
            })?,
            path: self.path.clone(),
        })
    }

    /// The open log's descriptor, for a child process to inherit.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (a JSON object; `prev` is set here), durably.
    pub fn append(&mut self, record: Value) -> Result<(), ProvenanceError> {
        self.append_with(record, true)
    }

    /// Appends records that belong together (an execution's end: its refused
    /// syscalls and `exec.end`) in one locked write, synced once.
    pub fn append_synced(&mut self, records: Vec<Value>) -> Result<(), ProvenanceError> {
        self.append_all(records, true)
    }

    /// Appends records in one locked write without waiting for the disk: for
    /// the many file events of a run, made durable by the `exec.end` that
    /// follows them.
    pub fn append_batch<R: Chained>(&mut self, records: Vec<R>) -> Result<(), ProvenanceError> {
        self.append_all(records, false)
    }

    fn append_with(&mut self, record: Value, sync: bool) -> Result<(), ProvenanceError> {
        self.append_all(vec![record], sync)
    }

    fn append_all<R: Chained>(&mut self, records: Vec<R>, sync: bool) -> Result<(), ProvenanceError> {
        let err = |what| {
            let path = self.path.clone();
            move |source| ProvenanceError { what, path, source }
        };
        let fd = self.file.as_raw_fd();
        crate::sys::flock(fd, libc::LOCK_EX).map_err(err("cannot lock"))?;
        let result = (|| {
            // A line cut short by an earlier write is no record: it is cut
            // off, and the cut recorded, so that the chain goes on.
            let mut out = Vec::new();
            let repaired = match torn_tail(&mut self.file)? {
                Some((keep, torn)) => {
                    self.file.set_len(keep)?;
                    Some(json!({
                        "kind": "log.recovered",
                        "time": now_rfc3339(),
                        "cut_bytes": torn.len(),
                        "cut_sha256": sha256_hex(&torn),
                        "reason": "the last line was incomplete (a write cut short); it was removed",
                    }))
                }
                None => None,
            };
            let mut prev = match last_line(&mut self.file)? {
                Some(line) => sha256_hex(&line),
                None => GENESIS.to_string(),
            };
            if let Some(mut record) = repaired {
                record.set_prev(prev);
                let line = serde_json::to_vec(&record)?;
                prev = sha256_hex(&line);
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
            let before = self.file.seek(SeekFrom::End(0))?;
            for mut record in records {
                record.set_prev(prev);
                let line = serde_json::to_vec(&record)?;
                prev = sha256_hex(&line);
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
            // A synced append ends with a seal, where sealing is set up.
            let mut witness = None;
            if sync {
                if let Some(mut seal) = seal::seal_record(&self.path, &prev)? {
                    seal.set_prev(prev);
                    let line = serde_json::to_vec(&seal)?;
                    witness = Some((
                        seal.get("epoch").and_then(Value::as_u64).unwrap_or(0),
                        sha256_hex(&line),
                    ));
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                }
            }
            if let Err(e) = self.file.write_all(&out) {
                // Part of it may be on disk: cut it off, so that the next
                // append goes on from a whole line.
                let _ = self.file.set_len(before);
                return Err(e);
            }
            // Synced here only for a seal, whose witness must hear the seals
            // in the log's order; else after unlocking, below.
            if let Some((epoch, head)) = witness {
                self.file.sync_data()?;
                seal::witness(&self.path, epoch, &head);
                return Ok(false);
            }
            Ok::<bool, std::io::Error>(sync)
        })();
        let _ = crate::sys::flock(fd, libc::LOCK_UN);
        // Everything written up to our lines (by anyone) is on disk when this
        // returns: fdatasync writes all of the file's dirty data, and waits
        // for a commit already under way that holds it.
        match result {
            Ok(true) => self.file.sync_data().map_err(err("cannot sync")),
            Ok(false) => Ok(()),
            Err(e) => Err(err("cannot write")(e)),
        }
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}: {message}")]
pub struct ChainBreak {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Checks every line of a log; returns the number of records.
pub fn verify(text: &[u8]) -> Result<usize, ChainBreak> {
    let mut prev = GENESIS.to_string();
    let mut count = 0;
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    if body.is_empty() {
        return Ok(0);
    }
    // A last line without its newline is a write cut short.
    let torn_line = (!text.ends_with(b"\n")).then(|| body.split(|&b| b == b'\n').count());
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let last_and_torn = torn_line == Some(n);
        let value: Value = serde_json::from_slice(line).map_err(|e| ChainBreak {
            line: n,
            message: if last_and_torn {
                format!(
                    "the last line is torn ({} bytes without their newline: a write cut short, not an edit); \
                     the next append sets it aside and records that",
                    line.len()
                )
            } else {
                format!("not a JSON record ({e})")
            },
        })?;
        let claimed = value.get("prev").and_then(Value::as_str).unwrap_or_default();
        if claimed != prev {
            return Err(ChainBreak {
                line: n,
                message: if n == 1 {
                    "the first record does not start the chain (a line before it was removed)".into()
                } else {
                    format!(
                        "prev does not match line {}: a line was edited, inserted, removed or moved here",
                        n - 1
                    )
                },
            });
        }
        prev = sha256_hex(line);
        count += 1;
    }
    Ok(count)
}

/// Where torn lines were set aside (`log.recovered`): each record's line
/// number and how many bytes were cut.
pub fn recoveries(text: &[u8]) -> Vec<(usize, u64)> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let v: Value = serde_json::from_slice(line).ok()?;
            (v.get("kind")?.as_str()? == "log.recovered")
                .then(|| (i + 1, v.get("cut_bytes").and_then(Value::as_u64).unwrap_or(0)))
        })
        .collect()
}

/// The story of each execution in a log, optionally one only.
pub fn executions(text: &[u8], only: Option<&str>) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let Some(id) = v.get("exec").and_then(Value::as_str) else {
            continue;
        };
        if only.is_some_and(|o| o != id) {
            continue;
        }
        out.entry(id.to_string()).or_default().push(v);
    }
    out
}

/// The gate's refusals (`gate.refused`): requests that never became an
/// execution, so they belong to none.
pub fn gate_refusals(text: &[u8]) -> Vec<Value> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("gate.refused"))
        .collect()
}

/// `text` as it may be shown on a terminal: every control character (C0,
/// DEL, C1: newlines and escape sequences among them), every character that
/// reorders text (bidirectional overrides and isolates) and every line or
/// paragraph separator written as `\u{…}`, and `\` as `\\`. A record's
/// fields are chosen by whoever the record is about (a file name by the
/// sandbox, an MBU name by a client): shown raw, they could draw fake lines
/// or rewrite the admin's screen.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let reorders = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || reorders || matches!(c, '\u{2028}' | '\u{2029}') {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `text` reads as a provenance log: empty, or a first line that is
/// a chained record (a JSON object with `prev` and `kind`).
pub fn is_log(text: &[u8]) -> bool {
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    first.is_empty()
        || serde_json::from_slice::<Value>(first)
            .is_ok_and(|v| v.get("prev").and_then(Value::as_str).is_some() && v.get("kind").is_some())
}

/// A value the sandbox or a client chose, as `audit show` prints it: in
/// double quotes, escaped by [`printable`], with its own quotes escaped, so
/// that it is always told apart from what ninewall wrote and can neither
/// end its quotes nor start a line.
pub fn chosen(text: &str) -> String {
    format!("\"{}\"", printable(text).replace('"', "\\\""))
}

/// The agent's records (`llm.call`, `agent.note`) that an execution's
/// start names as its cause (`caused_by`).
pub fn causes(text: &[u8], records: &[Value]) -> Vec<Value> {
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.get("caused_by").and_then(Value::as_str))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    text.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|v| v.get("id").and_then(Value::as_str).is_some_and(|id| ids.contains(&id)))
        .collect()
}

/// One line for an agent's record, escaped as every shown field is.
pub fn describe_agent_record(r: &Value) -> String {
    let text = |p: &str| {
        printable(&r.pointer(p).map_or_else(
            || "?".to_string(),
            |v| v.as_str().map_or_else(|| v.to_string(), str::to_string),
        ))
    };
    match r.get("kind").and_then(Value::as_str) {
        Some("llm.call") => format!(
            "{} llm.call {} by worker {} (uid {}): model {}, purpose {}; prompt {} bytes sha256 {}, response {} bytes sha256 {}; tokens {} in, {} out; {} ms",
            text("/time"),
            text("/id"),
            text("/worker"),
            text("/client/uid"),
            chosen(&r.get("model").map_or_else(|| "?".to_string(), bounded_text)),
            chosen(&r.get("purpose").map_or_else(|| "?".to_string(), bounded_text)),
            text("/prompt_bytes"),
            text("/prompt_sha256"),
            text("/response_bytes"),
            text("/response_sha256"),
            text("/tokens_in"),
            text("/tokens_out"),
            text("/latency_ms")
        ),
        _ => format!(
            "{} {} {} by worker {} (uid {}): {}",
            text("/time"),
            text("/kind"),
            text("/id"),
            text("/worker"),
            text("/client/uid"),
            chosen(&r.get("text").map_or_else(|| "?".to_string(), bounded_text))
        ),
    }
}

/// One line per gate refusal: when, who, what, why.
pub fn describe_refusal(r: &Value) -> String {
    let text = |p: &str| printable(r.pointer(p).and_then(Value::as_str).unwrap_or("?"));
    let num = |p: &str| printable(&r.pointer(p).map_or("?".to_string(), Value::to_string));
    let asked = match r.pointer("/mbu") {
        Some(mbu) if !mbu.is_null() => format!("asked for {}", chosen(&bounded_text(mbu))),
        _ => "connected".to_string(),
    };
    format!(
        "{} refused  uid {} (worker {}) {asked}: {}",
        text("/time"),
        num("/client/uid"),
        printable(r.pointer("/worker").and_then(Value::as_str).unwrap_or("none")),
        printable(&r.pointer("/reason").map_or_else(|| "?".to_string(), bounded_text))
    )
}

/// A human-readable story of one execution's records.
pub fn execution_story(id: &str, records: &[Value]) -> String {
    // Every field through `printable`: JSON values as JSON, strings as text.
    let f = |r: &Value, p: &str| printable(&r.pointer(p).cloned().unwrap_or(Value::Null).to_string());
    let text = |r: &Value, p: &str| printable(r.pointer(p).and_then(Value::as_str).unwrap_or("?"));
    // What the sandbox or the client chose: quoted (see `chosen`).
    let quoted = |r: &Value, p: &str| chosen(&r.pointer(p).map_or_else(|| "?".to_string(), bounded_text));
    let mut s = format!(
        "execution {}  (values in \"double quotes\" came from the sandbox or a client)\n",
        printable(id)
    );
    for r in records {
        let time = text(r, "/time");
        match text(r, "/kind").as_str() {
            "exec.start" => {
                s.push_str(&format!(
                    "  {time} started  mbu {} by uid {} (profile sha256 {}), argv {}\n",
                    text(r, "/mbu"),
                    f(r, "/worker/uid"),
                    text(r, "/profile/sha256"),
                    f(r, "/argv")
                ));
                if let Some(w) = r.pointer("/worker/name").and_then(Value::as_str) {
                    s.push_str(&format!(
                        "  {time} gate     worker {} (client uid {}), role {}\n",
                        printable(w),
                        f(r, "/worker/client_uid"),
                        text(r, "/role")
                    ));
                }
                if let Some(c) = r.pointer("/caused_by").and_then(Value::as_str) {
                    s.push_str(&format!("  {time} gate     caused by {}\n", chosen(c)));
                }
                if let Some(p) = r.pointer("/parent").and_then(Value::as_str) {
                    s.push_str(&format!(
                        "  {time} gate     delegated by {} (depth {})\n",
                        printable(p),
                        f(r, "/depth")
                    ));
                }
            }
            "guard.refused" => s.push_str(&format!(
                "  {time} refused  by the interpreter guard: {}{}\n",
                quoted(r, "/what"),
                r.pointer("/line")
                    .and_then(Value::as_u64)
                    .map_or(String::new(), |l| format!(" (line {l})"))
            )),
            "net.connect" => {
                let allowed = r.pointer("/allowed").and_then(Value::as_bool) == Some(true);
                let to = format!("{}:{}", quoted(r, "/host"), f(r, "/port"));
                s.push_str(&if allowed {
                    format!(
                        "  {time} net      {} {to} via {} allowed; {} bytes out, {} in, {} ms, {}\n",
                        text(r, "/protocol"),
                        text(r, "/address"),
                        f(r, "/bytes_out"),
                        f(r, "/bytes_in"),
                        f(r, "/duration_ms"),
                        text(r, "/ended")
                    )
                } else {
                    format!(
                        "  {time} refused  net {} {to}: {}\n",
                        text(r, "/protocol"),
                        text(r, "/refused")
                    )
                });
            }
            "delegate.refused" => s.push_str(&format!(
                "  {time} refused  delegation to {}: {}\n",
                quoted(r, "/mbu"),
                text(r, "/reason")
            )),
            "file" => {
                let mut notes = String::new();
                if f(r, "/exists") == "false" {
                    notes.push_str(", missing");
                }
                if let Some(a) = r.pointer("/asked").and_then(Value::as_str) {
                    notes.push_str(&format!(", asked {}", chosen(a)));
                }
                if let Some(u) = r.pointer("/unresolved_after").and_then(Value::as_str) {
                    notes.push_str(&format!(", nothing to resolve below {}", chosen(u)));
                }
                s.push_str(&format!(
                    "  {time} file     {} {} {} ({}{notes})\n",
                    text(r, "/access"),
                    quoted(r, "/path"),
                    text(r, "/verdict"),
                    text(r, "/syscall"),
                ));
            }
            "syscall.denied" => s.push_str(&format!(
                "  {time} refused  syscall {} x{}\n",
                text(r, "/name"),
                f(r, "/count")
            )),
            "exec.end" => {
                let code = f(r, "/code");
                let signal = f(r, "/signal");
                s.push_str(&format!(
                    "  {time} ended    {}{}{}; wall {} ms, cpu {} ms, peak memory {} bytes, output {} bytes\n",
                    text(r, "/reason"),
                    if code == "null" {
                        String::new()
                    } else {
                        format!(" code {code}")
                    },
                    if signal == "null" {
                        String::new()
                    } else {
                        format!(" signal {signal}")
                    },
                    f(r, "/wall_ms"),
                    f(r, "/cpu_ms"),
                    f(r, "/peak_memory"),
                    f(r, "/output_bytes")
                ));
            }
            other => s.push_str(&format!("  {time} {other}\n")),
        }
    }
    if !records.iter().any(|r| text(r, "/kind") == "exec.end") {
        s.push_str("  incomplete: no end record (the supervisor stopped before the execution ended)\n");
    }
    s
}

/// One digest over a profile's files (path and SHA-256 of each, base first):
/// what `exec.start` records, and what the gate compares.
pub fn profile_digest(files: &[(std::path::PathBuf, Vec<u8>)]) -> String {
    let mut all = Vec::new();
    for (path, bytes) in files {
        all.extend_from_slice(path.display().to_string().as_bytes());
        all.push(0);
        all.extend_from_slice(&sha256_hex(bytes).into_bytes());
        all.push(b'\n');
    }
    sha256_hex(&all)
}

/// What `exec.start` says about the run besides its plan.
#[derive(Debug, Clone, Copy)]
pub struct StartContext<'a> {
    /// The uid ninewall runs as.
    pub uid: u32,
    /// The host workspace directory, if one was given.
    pub workspace: Option<&'a Path>,
    /// [`profile_digest`] of the profile that was loaded.
    pub profile_sha256: &'a str,
    /// Who asked (worker, role, client uid) and the delegating parent.
    pub lineage: &'a Lineage,
    /// The shared empty network namespace the sandbox joined, if it did not
    /// get one of its own.
    pub shared_network: Option<&'a Path>,
    /// For a warm sandbox: when, and from which profile, the walls that do
    /// not depend on the request were built.
    pub warm: Option<WarmStart<'a>>,
}

/// A warm sandbox's build, in its execution's start record.
#[derive(Debug, Clone, Copy)]
pub struct WarmStart<'a> {
    /// When its walls were built (RFC 3339).
    pub built_at: &'a str,
    /// [`profile_digest`] of the profile they were built from.
    pub profile_sha256: &'a str,
}

/// The `exec.start` record.
pub fn start_record(id: &str, policy: &crate::Policy, plan: &crate::SetupPlan, cx: StartContext) -> Value {
    let files: Vec<String> = policy.sources.iter().map(|s| s.display().to_string()).collect();
    let l = cx.lineage;
    let landlock = plan.landlock.as_ref().map(|ll| {
        json!({
            "abi": ll.abi,
            "fs": crate::landlock::fs_names(ll.handled_fs),
            "net": crate::landlock::net_names(ll.handled_net),
            "scoped": crate::landlock::scope_names(ll.scoped),
            "rules": ll.paths.iter().map(|r| json!({"path": r.path, "access": crate::landlock::fs_names(r.access)})).collect::<Vec<_>>(),
            "ports": ll.ports.iter().map(|r| json!({"port": r.port, "access": crate::landlock::net_names(r.access)})).collect::<Vec<_>>(),
        })
    });
    json!({
        "kind": "exec.start",
        "exec": id,
        "time": now_rfc3339(),
        "parent": l.parent,
        "depth": l.depth,
        "worker": {"uid": cx.uid, "name": l.worker, "client_uid": l.client_uid},
        "role": l.role,
        "caused_by": l.caused_by,
        "mbu": policy.name,
        "profile": {"files": files, "sha256": cx.profile_sha256},
        "argv": bounded_list(&plan.argv),
        "program": plan.program,
        "workspace": cx.workspace,
        "warm": cx.warm.map(|w| json!({"built_at": w.built_at, "profile_sha256": w.profile_sha256})),
        "walls": {
            "interpreter_guard": policy.python.is_some(),
            "credentials": {
                "inside": [plan.ids.inside_uid, plan.ids.inside_gid],
                "host": [plan.ids.host_uid, plan.ids.host_gid],
                "identity": if plan.ids.own_namespace { "own" } else if cx.uid == 0 { "nobody" } else { "caller" },
                "capabilities": "none",
                "no_new_privs": true,
            },
            "filesystem": {"mounts": plan.mounts.len()},
            "namespaces": ["user", "mount", "pid", "ipc", "uts", "net", "cgroup", "time"],
            "network": plan.net,
            "egress": if plan.net == crate::policy::NetMode::Proxy {
                json!({
                    "proxy": format!("127.0.0.1:{}", crate::policy::egress::PROXY_PORT),
                    "allow": plan.proxy.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "connections": plan.limits.connections,
                    "connection_bytes": plan.limits.connection_bytes,
                    "connection_seconds": plan.limits.connection_seconds,
                })
            } else {
                Value::Null
            },
            "shared_net_namespace": cx.shared_network,
            "landlock": landlock,
            "seccomp": {
                "on_denied": plan.seccomp.on_denied,
                "allowed": plan.seccomp.allow.len(),
                "notify": plan.seccomp.notify,
                // What a `file` record's path is, said once: the supervisor
                // reads it from the caller before the kernel runs the call.
                "file_paths": if !plan.seccomp.notify {
                    Value::Null
                } else {
                    json!("read from the caller's memory before the call ran: another thread of the caller can change it after")
                },
                "socket_families": plan.seccomp.socket_families,
                "setid_modes": "refused",
                "openat2": "enosys",
            },
            "limits": plan.limits,
        },
    })
}

/// A `file` record.
pub fn file_record(id: &str, seq: u64, e: crate::sandbox::FileEvent) -> FileRecord<'_> {
    FileRecord {
        access: e.access,
        asked: e.asked,
        exec: id,
        exists: e.exists,
        kind: "file",
        path: e.path,
        pid: e.pid,
        prev: String::new(),
        seq,
        syscall: e.syscall,
        time: rfc3339(e.at),
        unresolved_after: e.unresolved_after,
        verdict: e.verdict,
    }
}

/// A line of a run's file records: an access, or what stands for many
/// (`file.repeated`, `file.dropped`).
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum FileLine<'a> {
    /// One access.
    Access(FileRecord<'a>),
    /// A summary.
    Summary(Value),
}

impl Chained for FileLine<'_> {
    fn set_prev(&mut self, prev: String) {
        match self {
            FileLine::Access(r) => r.set_prev(prev),
            FileLine::Summary(v) => v.set_prev(prev),
        }
    }
}

/// The last access recorded for one process, and how many identical ones
/// (same call, path as reached and as asked, kind, verdict, existence)
/// followed it in a row.
struct Repeat {
    syscall: String,
    path: String,
    asked: Option<String>,
    access: crate::seccomp::files::Access,
    verdict: &'static str,
    exists: bool,
    unresolved_after: Option<String>,
    seq: u64,
    count: u64,
    last: std::time::Duration,
}

impl Repeat {
    fn is(&self, e: &crate::sandbox::FileEvent) -> bool {
        self.syscall == e.syscall
            && self.path == e.path
            && self.asked == e.asked
            && self.access == e.access
            && self.verdict == e.verdict
            && self.exists == e.exists
            && self.unresolved_after == e.unresolved_after
    }
}

/// Most processes whose last access is held for a repeat count; past it,
/// the counts so far are written and the slate cleared.
const REPEATS_HELD: usize = 256;

/// Turns a run's file events into its file records, bounded: identical
/// accesses of one process in a row become one record and a count
/// (`file.repeated`, with the time of the last), and past `max` records
/// the rest are counted per syscall (`file.dropped`, at the end). What the
/// recorder holds is one access per process, at most [`REPEATS_HELD`].
pub struct FileRecorder<'a> {
    exec: &'a str,
    max: u64,
    seq: u64,
    written: u64,
    repeats: std::collections::HashMap<i32, Repeat>,
    dropped: BTreeMap<String, u64>,
}

impl<'a> FileRecorder<'a> {
    /// A recorder for execution `exec`, of at most `max` records.
    pub fn new(exec: &'a str, max: u64) -> FileRecorder<'a> {
        FileRecorder {
            exec,
            max,
            seq: 0,
            written: 0,
            repeats: std::collections::HashMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    /// Takes one event, putting the lines it makes in `out`; `false` once
    /// the budget is spent (the event was only counted).
    pub fn event(&mut self, e: crate::sandbox::FileEvent, out: &mut Vec<FileLine<'a>>) -> bool {
        if let Some(r) = self.repeats.get_mut(&e.pid).filter(|r| r.is(&e)) {
            r.count += 1;
            r.last = e.at;
            return true;
        }
        if let Some(r) = self.repeats.remove(&e.pid) {
            self.repeated(&r, out);
        }
        if self.written >= self.max {
            *self.dropped.entry(e.syscall).or_insert(0) += 1;
            return false;
        }
        if self.repeats.len() >= REPEATS_HELD {
            let held: Vec<Repeat> = self.repeats.drain().map(|(_, r)| r).collect();
            for r in &held {
                self.repeated(r, out);
            }
        }
        self.seq += 1;
        self.written += 1;
        self.repeats.insert(
            e.pid,
            Repeat {
                syscall: e.syscall.clone(),
                path: e.path.clone(),
                asked: e.asked.clone(),
                access: e.access,
                verdict: e.verdict,
                exists: e.exists,
                unresolved_after: e.unresolved_after.clone(),
                seq: self.seq,
                count: 0,
                last: e.at,
            },
        );
        out.push(FileLine::Access(file_record(self.exec, self.seq, e)));
        true
    }

    fn repeated(&mut self, r: &Repeat, out: &mut Vec<FileLine<'a>>) {
        if r.count == 0 {
            return;
        }
        self.written += 1;
        out.push(FileLine::Summary(json!({
            "kind": "file.repeated",
            "exec": self.exec,
            "time": now_rfc3339(),
            "seq": r.seq,
            "count": r.count,
            "last": rfc3339(r.last),
        })));
    }

    /// The counts still held, once the run has ended.
    pub fn finish(mut self) -> Vec<Value> {
        let mut out = Vec::new();
        let held: Vec<Repeat> = self.repeats.drain().map(|(_, r)| r).collect();
        for r in &held {
            self.repeated(r, &mut out);
        }
        let mut values: Vec<Value> = out.into_iter().filter_map(|l| serde_json::to_value(l).ok()).collect();
        if !self.dropped.is_empty() {
            values.push(json!({
                "kind": "file.dropped",
                "exec": self.exec,
                "time": now_rfc3339(),
                "max_records": self.max,
                "by_syscall": self.dropped,
            }));
        }
        values
    }
}

/// A `file` record. A struct rather than a JSON map, because there is one per
/// recorded access; its fields are in the order a map's keys are written
/// (sorted), so its line reads like every other record's.
#[derive(Debug, serde::Serialize)]
pub struct FileRecord<'a> {
    access: crate::seccomp::files::Access,
    #[serde(skip_serializing_if = "Option::is_none")]
    asked: Option<String>,
    exec: &'a str,
    exists: bool,
    kind: &'static str,
    path: String,
    pid: i32,
    prev: String,
    seq: u64,
    syscall: String,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    unresolved_after: Option<String>,
    verdict: &'static str,
}

/// A record that can be chained: [`AuditLog`] sets its `prev`.
pub trait Chained: serde::Serialize {
    /// Sets `prev`, the SHA-256 of the line before.
    fn set_prev(&mut self, prev: String);
}

impl Chained for Value {
    fn set_prev(&mut self, prev: String) {
        if let Value::Object(map) = self {
            map.insert("prev".into(), Value::String(prev));
        }
    }
}

impl Chained for FileRecord<'_> {
    fn set_prev(&mut self, prev: String) {
        self.prev = prev;
    }
}

/// `net.connect` records: wall 6's proxy's connections, as the supervisor
/// saw them from the host's side (what it connected to and carried, not
/// the sandbox's word). Written in batches before `exec.end`, so that the
/// supervisor never holds more than a batch of them as JSON.
pub fn net_records(id: &str, connections: &[crate::sandbox::proxy::Connection]) -> Vec<Value> {
    connections
        .iter()
        .map(|c| {
            json!({
                "kind": "net.connect",
                "exec": id,
                "time": rfc3339(c.at),
                "protocol": c.protocol,
                "host": bounded(&c.host),
                "port": c.port,
                "address": c.address.map(|a| a.ip().to_string()),
                "allowed": c.refused.is_none(),
                "refused": c.refused.map(crate::policy::egress::Refusal::describe),
                "bytes_out": c.bytes_out,
                "bytes_in": c.bytes_in,
                "duration_ms": c.duration_ms,
                "ended": c.ended,
            })
        })
        .collect()
}

/// The records of an execution's end: one `syscall.denied` per refused
/// syscall, then `exec.end`.
pub fn end_records(id: &str, result: &Result<crate::Outcome, String>) -> Vec<Value> {
    let time = now_rfc3339();
    let Ok(o) = result else {
        let message = result.as_ref().err().cloned().unwrap_or_default();
        return vec![
            json!({"kind": "exec.end", "exec": id, "time": time, "reason": "setup-failed", "failure": message}),
        ];
    };
    let mut out: Vec<Value> = o
        .refused
        .iter()
        .map(|(name, n)| json!({"kind": "syscall.denied", "exec": id, "time": time, "name": name, "count": n}))
        .collect();
    // What the interpreter guard refused: reported from inside the sandbox,
    // so bounded like every value that comes from there.
    out.extend(o.guard_refused.iter().map(|g| {
        json!({
            "kind": "guard.refused",
            "exec": id,
            "time": rfc3339(g.at),
            "what": bounded(&g.what),
            "line": g.line,
        })
    }));
    let (reason, code, signal, failure) = match &o.end {
        crate::sandbox::End::Exited(c) => ("exited", Some(*c), None, None),
        crate::sandbox::End::Signaled(s) => ("signaled", None, Some(*s), None),
        crate::sandbox::End::SetupFailed(f) => ("setup-failed", None, None, Some(f.to_string())),
    };
    let reason = o.limit.map_or(reason, |l| l.name());
    out.push(json!({
        "kind": "exec.end",
        "exec": id,
        "time": time,
        "reason": reason,
        "code": code,
        "signal": signal,
        "exit_code": o.exit_code(),
        "failure": failure,
        "wall_ms": o.usage.wall_ms,
        "cpu_ms": o.usage.cpu_ms,
        "recorder_cpu_ms": o.usage.recorder_cpu_ms,
        "peak_memory": o.usage.peak_memory,
        "output_bytes": o.usage.output_bytes,
        "output_truncated": o.usage.output_truncated,
        "resources": o.resources,
        "refused_syscalls": o.refused.iter().map(|(_, n)| n).sum::<u64>(),
        "guard_refused": o.guard_refused_total,
        "guard_reports_cut": o.guard_cut,
        "net": o.net.as_ref().map(|n| json!({
            "connections": n.total,
            "refused": n.refused,
            "bytes_out": n.bytes_out,
            "bytes_in": n.bytes_in,
            "unrecorded": n.unrecorded,
            "cpu_ms": n.cpu_ns / 1_000_000,
        })),
        "disk": o.disk.map(|d| json!({"allowed": d.allowed, "added": d.added, "reached": d.reached})),
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for l in lines {
            let line = format!(r#"{{"prev":"{prev}","kind":"{l}"}}"#);
            prev = sha256_hex(line.as_bytes());
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn a_good_chain_verifies_and_every_tampering_is_found_at_its_line() {
        let good = chain(&["a", "b", "c", "d"]);
        assert_eq!(verify(&good), Ok(4));
        let lines: Vec<&[u8]> = good.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let join = |ls: Vec<&[u8]>| {
            ls.join(&b'\n')
                .into_iter()
                .chain(std::iter::once(b'\n'))
                .collect::<Vec<u8>>()
        };
        let needle = b"\"kind\":\"b\"";
        let mut flipped = good.clone();
        let at = flipped.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len() - 2;
        flipped[at] = b'x';
        assert_eq!(verify(&flipped).unwrap_err().line, 3, "an edit of line 2 breaks line 3");
        let deleted = join(vec![lines[0], lines[2], lines[3]]);
        assert_eq!(verify(&deleted).unwrap_err().line, 2);
        let swapped = join(vec![lines[0], lines[2], lines[1], lines[3]]);
        assert_eq!(verify(&swapped).unwrap_err().line, 2);
        let first_gone = join(vec![lines[1], lines[2], lines[3]]);
        assert_eq!(verify(&first_gone).unwrap_err().line, 1);
        assert_eq!(verify(b"{\"prev\":\"0\"\n").unwrap_err().line, 1);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-11-26T05:49:00.123456789Z".len(), "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
        let at = |secs, nanos| rfc3339(std::time::Duration::new(secs, nanos));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(at(1_795_687_501, 240_820_000), "2026-11-26T10:05:01.240820000Z");
        assert_eq!(at(4_107_542_399, 999_999_999), "2100-02-28T23:59:59.999999999Z");
        assert_eq!(at(4_107_542_400, 1), "2100-03-01T00:00:00.000000001Z");
    }

    #[test]
    fn seal_hmac_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            seal::hmac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            seal::hmac(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn printable_shows_control_and_reordering_characters_as_escapes() {
        assert_eq!(
            printable("a\nb\u{1b}[2J\u{202e}c\\d\u{85}e\u{2028}"),
            "a\\u{a}b\\u{1b}[2J\\u{202e}c\\\\d\\u{85}e\\u{2028}"
        );
        assert_eq!(printable("/work/plain name-ü.txt"), "/work/plain name-ü.txt");
    }

    #[test]
    fn a_file_record_is_written_like_a_map_of_its_fields() {
        let e = crate::sandbox::FileEvent {
            pid: 2,
            syscall: "openat".into(),
            path: "/work/a \"b\"".into(),
            access: crate::seccomp::files::Access::Create,
            verdict: "allowed",
            exists: false,
            asked: None,
            at: std::time::Duration::from_secs(1_765_000_000),
            unresolved_after: None,
        };
        let mut r = file_record("id-1", 7, e);
        r.set_prev("ab".into());
        let line = serde_json::to_string(&r).unwrap_or_default();
        let as_map = serde_json::to_value(&r).map(|v| v.to_string()).unwrap_or_default();
        assert_eq!(line, as_map);
        assert!(line.starts_with(r#"{"access":"create","exec":"id-1","exists":false,"kind":"file","path":"/work/a \"b\"","pid":2,"prev":"ab","seq":7,"syscall":"openat","time":"#), "{line}");
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0, 1, 0x0f, 0x10, 0xab, 0xff]), "00010f10abff");
    }
}

// --- sealing -------------------------------------------------------------------

/// Forward-secure sealing, as journald's `--setup-keys` does it: a key that
/// evolves by a one-way step every epoch (the old one overwritten), an HMAC
/// of the chain head with the current epoch's key appended as a `seal`
/// record after every synced append. Whoever holds the log and the key file
/// later can rewrite and rechain the log, and forge seals from the current
/// epoch on; never a seal of an epoch already past, which `audit verify
/// --key` checks with the first key, kept elsewhere.
pub mod seal {
    use super::{hex, now_secs, sha256_hex, Value};
    use sha2::{Digest, Sha256};
    use std::path::{Path, PathBuf};

    /// The key file beside a log: `LOG.seal`.
    pub fn key_path(log: &Path) -> PathBuf {
        let mut p = log.as_os_str().to_owned();
        p.push(".seal");
        PathBuf::from(p)
    }

    /// The state of the sealing key: the epoch it is for, and the key.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    pub struct KeyState {
        /// When epoch 0 began (Unix seconds).
        pub start: u64,
        /// Seconds per epoch.
        pub interval: u64,
        /// The epoch `key` is for.
        pub epoch: u64,
        /// The key, hex.
        pub key: String,
    }

    /// One step of the key: SHA-256 of a label and the key. One-way: the
    /// key of an epoch says nothing of the one before.
    pub fn evolve(key: &[u8]) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(b"ninewall seal key evolution v1");
        h.update(key);
        h.finalize().to_vec()
    }

    /// HMAC-SHA-256 (RFC 2104).
    pub fn hmac(key: &[u8], message: &[u8]) -> String {
        let mut block = [0u8; 64];
        let digest;
        let key = if key.len() > 64 {
            digest = Sha256::digest(key);
            digest.as_slice()
        } else {
            key
        };
        for (b, k) in block.iter_mut().zip(key) {
            *b = *k;
        }
        let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
        let mut inner = Sha256::new();
        inner.update(pad(0x36));
        inner.update(message);
        let mut outer = Sha256::new();
        outer.update(pad(0x5c));
        outer.update(inner.finalize());
        hex(&outer.finalize())
    }

    fn unhex(s: &str) -> Option<Vec<u8>> {
        s.len()
            .is_multiple_of(2)
            .then(|| {
                (0..s.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                    .collect()
            })
            .flatten()
    }

    /// The verification key an admin keeps: first key, start, interval.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct VerificationKey {
        first: Vec<u8>,
        start: u64,
        interval: u64,
    }

    impl VerificationKey {
        /// `nwseal1:KEYHEX:START:INTERVAL`.
        pub fn parse(text: &str) -> Option<VerificationKey> {
            let mut parts = text.trim().split(':');
            if parts.next()? != "nwseal1" {
                return None;
            }
            let first = unhex(parts.next()?).filter(|k| k.len() == 32)?;
            let start = parts.next()?.parse().ok()?;
            let interval = parts.next()?.parse().ok().filter(|&i| i > 0)?;
            parts
                .next()
                .is_none()
                .then_some(VerificationKey { first, start, interval })
        }

        fn key_of(&self, epoch: u64) -> Vec<u8> {
            let mut k = self.first.clone();
            for _ in 0..epoch {
                k = evolve(&k);
            }
            k
        }
    }

    impl std::fmt::Display for VerificationKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "nwseal1:{}:{}:{}", hex(&self.first), self.start, self.interval)
        }
    }

    /// Makes the key file for `log` (refusing to replace one), and returns
    /// the verification key to keep elsewhere.
    pub fn setup(log: &Path, interval: u64) -> std::io::Result<VerificationKey> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut first = vec![0u8; 32];
        crate::sys::random_bytes(&mut first)?;
        let start = now_secs();
        let state = KeyState {
            start,
            interval,
            epoch: 0,
            key: hex(&first),
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(key_path(log))?;
        file.write_all(&serde_json::to_vec(&state).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        Ok(VerificationKey { first, start, interval })
    }

    /// A `seal` record of the chain head `head` (the hash of the last line),
    /// with the key of the current epoch: the key file is moved on to that
    /// epoch first and its old key overwritten. `None` when the log has no
    /// key file. Called with the log locked.
    pub fn seal_record(log: &Path, head: &str) -> std::io::Result<Option<Value>> {
        let path = key_path(log);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut state: KeyState = serde_json::from_slice(&text).map_err(std::io::Error::other)?;
        let mut key = unhex(&state.key).ok_or_else(|| std::io::Error::other("the seal key file is damaged"))?;
        let now = now_secs();
        let epoch = now.saturating_sub(state.start) / state.interval.max(1);
        if epoch > state.epoch {
            for _ in state.epoch..epoch {
                key = evolve(&key);
            }
            state.epoch = epoch;
            state.key = hex(&key);
            // Overwritten in place and synced: the old key is gone from the
            // file before any seal of the new epoch exists.
            let mut bytes = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
            bytes.resize(text.len().max(bytes.len()), b' ');
            std::fs::write(&path, &bytes)?;
            std::fs::File::open(&path)?.sync_all()?;
        }
        Ok(Some(serde_json::json!({
            "kind": "seal",
            "time": super::now_rfc3339(),
            "epoch": state.epoch,
            "hmac": hmac(&key, head.as_bytes()),
        })))
    }

    /// Where seals are witnessed: the system log, or `NINEWALL_WITNESS`.
    pub const WITNESS_ENV: &str = "NINEWALL_WITNESS";

    /// Sends the chain head after a seal to the system log (`/dev/log`, or
    /// the datagram socket `NINEWALL_WITNESS` names), one short line, so
    /// that a host's log shipping keeps a copy the log's writer cannot take
    /// back. Best effort: no system log, no witness.
    pub fn witness(log: &Path, epoch: u64, head: &str) {
        let socket = std::env::var_os(WITNESS_ENV).map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from);
        let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        // <134>: facility local0, severity info.
        let line = format!(
            "<134>ninewall[{}]: ninewall seal: log={} epoch={epoch} head={head}",
            std::process::id(),
            log.display()
        );
        let _ = sock.send_to(line.as_bytes(), socket);
    }

    /// The chain heads a witness file (syslog lines) holds, in order.
    pub fn witnessed_heads(witness: &str) -> Vec<String> {
        witness
            .lines()
            .filter(|l| l.contains("ninewall seal: "))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("head=")))
            .map(str::to_string)
            .collect()
    }

    /// Checks a log against the heads a witness saw: each must be the hash
    /// of a line of the log, in order. Returns how many there were, or the
    /// first missing one.
    pub fn check_witness(text: &[u8], heads: &[String]) -> Result<usize, String> {
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let hashes: Vec<String> = body.split(|&b| b == b'\n').map(sha256_hex).collect();
        let mut from = 0;
        for (i, head) in heads.iter().enumerate() {
            match hashes.iter().skip(from).position(|h| h == head) {
                Some(p) => from += p + 1,
                None => {
                    return Err(format!(
                        "witnessed head {} of {} ({head}) is not in the log: it was cut or rewritten after line {from}",
                        i + 1,
                        heads.len()
                    ))
                }
            }
        }
        Ok(heads.len())
    }

    /// What `audit verify --key` found.
    #[derive(Debug, Default)]
    pub struct Sealed {
        /// Seals checked.
        pub seals: usize,
        /// The time the last seal covers (its record's time).
        pub last_seal: Option<String>,
        /// Records after the last seal.
        pub unsealed_after: usize,
    }

    /// Checks every seal of a log whose chain holds: each must be the HMAC of
    /// the line before it with its epoch's key, and epochs never go back.
    /// Returns the first bad seal's line.
    pub fn check(text: &[u8], vk: &VerificationKey) -> Result<Sealed, (usize, String)> {
        let mut out = Sealed::default();
        let mut prev_line: Option<&[u8]> = None;
        let mut last_epoch = 0;
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                return Err((n, "not a JSON record".into()));
            };
            if v.get("kind").and_then(Value::as_str) == Some("seal") {
                let epoch = v
                    .get("epoch")
                    .and_then(Value::as_u64)
                    .ok_or((n, "a seal without an epoch".to_string()))?;
                if epoch < last_epoch {
                    return Err((n, format!("a seal of epoch {epoch} after one of epoch {last_epoch}")));
                }
                let head = sha256_hex(prev_line.unwrap_or_default());
                let expected = hmac(&vk.key_of(epoch), head.as_bytes());
                if v.get("hmac").and_then(Value::as_str) != Some(expected.as_str()) {
                    return Err((
                        n,
                        "the seal does not match: the log before it was changed (or the seal forged)".into(),
                    ));
                }
                last_epoch = epoch;
                out.seals += 1;
                out.last_seal = v.get("time").and_then(Value::as_str).map(str::to_string);
                out.unsealed_after = 0;
            } else {
                out.unsealed_after += 1;
            }
            prev_line = Some(line);
        }
        Ok(out)
    }
}

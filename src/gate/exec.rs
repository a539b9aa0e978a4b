//! One execution on someone else's behalf (a daemon client, a delegating
//! sandbox): the request and answer on the wire, and running it as its own
//! `ninewall run` process.
//!
//! Wall 1's executions: each one a separate supervisor.
//!
//! Each execution is a separate supervisor process, started from this binary
//! (`/proc/self/exe`): executions share nothing (a crash or a leak in one is
//! not in the next), the requester's memory stays flat however many it runs,
//! and the supervisor is exactly the one `ninewall run` is, with its
//! provenance. The supervisor reports its outcome as one JSON line on a
//! descriptor it inherits (`--outcome-fd`); its stdout and stderr are the
//! MBU's alone.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::provenance::{AuditLog, Lineage};
use crate::sandbox::cgroup::{CgroupPool, Lease};

/// Held while a supervisor is spawned: the one descriptor it must inherit is
/// inheritable only then, so no other spawn of this process (another client's
/// thread) can inherit it too.
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Longest request line accepted.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A request, one JSON line. Who asks is not part of it: the kernel says that.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WireRequest {
    /// The MBU to run.
    pub mbu: String,
    /// Arguments appended to the profile's command.
    #[serde(default)]
    pub args: Vec<String>,
    /// The MBU's standard input as UTF-8 text.
    #[serde(default)]
    pub stdin: String,
    /// The MBU's standard input as base64 (RFC 4648, padded), for bytes
    /// that are not UTF-8; only one of `stdin` and `stdin_base64` may be
    /// given.
    #[serde(default)]
    pub stdin_base64: Option<String>,
    /// A host directory to use as the workspace (daemon only).
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// The id of the agent's record (`llm.call`, `agent.note`) that led to
    /// this request: recorded in `exec.start`.
    #[serde(default)]
    pub caused_by: Option<String>,
    /// The protocol: 1 (the default), one answer line with the output in it;
    /// 2 (daemon only), the output streamed in frames (see [`Started::stream`]).
    #[serde(default)]
    pub v: Option<u32>,
}

impl WireRequest {
    /// The MBU's standard input, whichever field carries it.
    pub fn stdin_bytes(&self) -> Result<Vec<u8>, String> {
        match &self.stdin_base64 {
            None => Ok(self.stdin.clone().into_bytes()),
            Some(_) if !self.stdin.is_empty() => {
                Err("both stdin and stdin_base64 are given; valid: one of them".into())
            }
            Some(b64) => decode_base64(b64)
                .ok_or_else(|| "stdin_base64 is not base64 (RFC 4648: A-Z a-z 0-9 + /, padded with =)".to_string()),
        }
    }
}

/// Decodes standard, padded base64; `None` for anything else.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (i, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in quad.get(..4 - pad)? {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice([a, b, c].get(..3 - pad)?);
    }
    Some(out)
}

/// Encodes bytes as standard, padded base64.
pub fn encode_base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut buf = [0u8; 3];
        for (d, s) in buf.iter_mut().zip(chunk) {
            *d = *s;
        }
        let n = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(*ALPHABET.get(idx as usize).unwrap_or(&b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Most bytes of stdout and of stderr one answer line of protocol 1 carries;
/// the rest is cut (and said). Protocol 2 streams any amount.
pub const V1_OUTPUT_CAP: u64 = 256 << 10;

/// The answer, one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct WireResponse {
    /// Whether the execution ran (whatever its exit code).
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The execution id in the provenance log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// The exit code `ninewall run` would have exited with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The limit that ended it, if one did (`limits.wall_seconds`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The MBU's stdout (invalid UTF-8 replaced), bounded by `limits.output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// The MBU's stderr, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// What ninewall itself said about the execution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// The protocol, when it is not 1: on protocol 2's first line and end line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    /// The id of an agent record the daemon appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl WireResponse {
    /// A refusal: nothing ran.
    pub fn refused(error: impl std::fmt::Display) -> WireResponse {
        WireResponse {
            ok: false,
            error: Some(error.to_string()),
            ..WireResponse::default()
        }
    }

    /// Protocol 2's first line: the execution runs, its output follows.
    pub fn started() -> WireResponse {
        WireResponse {
            ok: true,
            v: Some(2),
            ..WireResponse::default()
        }
    }

    /// Writes the response as one line, encoded straight onto `w` (no copy
    /// of the whole line is held).
    pub fn write_to(&self, w: impl Write) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(w);
        serde_json::to_writer(&mut w, self).map_err(std::io::Error::other)?;
        w.write_all(b"\n")?;
        w.flush()
    }

    /// The response as one line, newline included.
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the answer"}"#.to_string());
        s.push('\n');
        s
    }
}

/// What a warm sandbox's supervisor (`ninewall run --warm-fd`) tells the
/// daemon on its control socket, one JSON line each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "warm", rename_all = "snake_case", deny_unknown_fields)]
pub enum WarmSays {
    /// Its walls are built; it waits for a request.
    Ready {
        /// The profile they were built from.
        profile_sha256: String,
        /// When (RFC 3339).
        built_at: String,
    },
    /// They could not be built; the supervisor ends.
    Failed {
        /// Which wall, and why.
        error: String,
    },
    /// It took the request: its outcome comes on the outcome pipe.
    Taken,
    /// Its profile changed since: it ran nothing, and ends.
    Stale {
        /// Which file changed.
        error: String,
    },
}

/// A request for a warm sandbox, from the daemon: one JSON line, the
/// workspace's descriptor passed with its first bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WarmRequest {
    /// Arguments after `--`.
    pub args: Vec<String>,
    /// The host workspace, as the client named it.
    pub workspace: Option<PathBuf>,
    /// Who asked.
    pub lineage: Lineage,
}

/// What `ninewall run --outcome-fd` writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct OutcomeLine {
    /// The execution id, once one was recorded.
    pub exec: Option<String>,
    /// The exit code.
    pub exit_code: i32,
    /// The limit that ended the run.
    pub limit: Option<String>,
    /// Everything ninewall said (the lines it prints as `ninewall: …`).
    pub messages: Vec<String>,
}

/// One execution to run as a separate supervisor.
#[derive(Debug, Clone)]
pub struct Execution<'a> {
    /// The profile.
    pub profile: &'a Path,
    /// Arguments after `--`.
    pub args: &'a [String],
    /// Standard input.
    pub stdin: &'a [u8],
    /// The host workspace directory, opened by whoever checked it.
    pub workspace: Option<Workspace<'a>>,
    /// The provenance log, which the supervisor inherits open.
    pub audit_log: &'a AuditLog,
    /// Who asked.
    pub lineage: &'a Lineage,
    /// Most bytes of stdout and of stderr kept (the supervisor already
    /// enforces the profile's output limit; this bounds what we hold).
    pub output_cap: u64,
    /// The daemon's cgroups, one of which is lent to the supervisor when
    /// one is free.
    pub cgroups: Option<&'a std::sync::Arc<CgroupPool>>,
}

/// A host workspace, as the daemon opened it for its client: the supervisor
/// inherits the descriptor and binds that directory; the path is for the
/// record and for messages.
#[derive(Debug, Clone, Copy)]
pub struct Workspace<'a> {
    /// The path the client named.
    pub path: &'a Path,
    /// The directory, open.
    pub fd: std::os::fd::BorrowedFd<'a>,
}

/// The running supervisor of an [`Execution`]; [`Started::finish`] collects
/// it into one answer, [`Started::stream`] passes its output on as it comes.
pub struct Started {
    child: std::process::Child,
    /// The cgroup lent to it: given back once it is reaped.
    lease: Option<Lease>,
    handle: Option<crate::sys::ProcessHandle>,
    /// The supervisor's outcome pipe; closing it lets the supervisor go.
    outcome: Option<std::fs::File>,
    cap: u64,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// How a streamed execution ended for its client.
#[derive(Debug)]
pub enum Streamed {
    /// All output was passed on; this is the end line's content.
    Ended(WireResponse),
    /// The client hung up (or stopped reading while the daemon drains): the
    /// supervisor was let go, and ends the run as cancelled.
    ClientGone,
}

impl Execution<'_> {
    /// Starts the supervisor process.
    pub fn start(&self) -> std::io::Result<Started> {
        let lineage = serde_json::to_vec(self.lineage).map_err(std::io::Error::other)?;
        let (outcome_r, outcome_w) = crate::sys::pipe_cloexec()?;
        // Who asked goes over a pipe, not argv: the supervisor takes it only
        // from its parent, this program (see `run --lineage-fd`). It is
        // written whole before the spawn (far less than a pipe holds).
        let (lineage_r, lineage_w) = crate::sys::pipe_cloexec()?;
        crate::sys::write_all(lineage_w.as_raw_fd(), &lineage).map_err(std::io::Error::from_raw_os_error)?;
        drop(lineage_w);
        let lease = self.cgroups.and_then(CgroupPool::lend);
        let mut cmd = supervisor_command(self.profile, self.audit_log, &outcome_w, lease.as_ref());
        cmd.arg("--lineage-fd").arg(lineage_r.as_raw_fd().to_string());
        if let Some(ws) = self.workspace {
            cmd.arg("--workspace")
                .arg(ws.path)
                .arg("--workspace-fd")
                .arg(ws.fd.as_raw_fd().to_string());
        }
        cmd.arg("--").args(self.args);
        let inherited: Vec<RawFd> = [lineage_r.as_raw_fd()]
            .into_iter()
            .chain(self.workspace.map(|ws| ws.fd.as_raw_fd()))
            .collect();
        let mut child = match spawn_supervisor(&mut cmd, self.audit_log, outcome_w, &inherited) {
            Ok(child) => child,
            Err(e) => {
                // No supervisor runs: nothing used the cgroup.
                give_back_if(true, lease);
                return Err(e);
            }
        };
        let writer = child.stdin.take().map(|mut w| {
            let input = self.stdin.to_vec();
            std::thread::spawn(move || {
                // The MBU may not read its input at all: a broken pipe is fine.
                let _ = w.write_all(&input);
            })
        });
        Ok(Started {
            handle: i32::try_from(child.id())
                .ok()
                .and_then(|pid| crate::sys::ProcessHandle::open(pid).ok()),
            child,
            lease,
            outcome: Some(std::fs::File::from(outcome_r)),
            cap: self.output_cap,
            writer,
        })
    }
}

/// `ninewall run --profile P --audit-log-fd L --outcome-fd O [--cgroup
/// NAME]`, its stdio piped and its environment empty.
fn supervisor_command(
    profile: &Path,
    audit_log: &AuditLog,
    outcome_w: &std::os::fd::OwnedFd,
    lease: Option<&Lease>,
) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("run")
        .arg("--profile")
        .arg(profile)
        .arg("--audit-log-fd")
        .arg(audit_log.raw_fd().to_string())
        .arg("--outcome-fd")
        .arg(outcome_w.as_raw_fd().to_string());
    if let Some(lease) = lease {
        cmd.arg("--cgroup").arg(lease.name());
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_clear();
    cmd
}

/// Spawns a supervisor that inherits `outcome_w`, the log and `inherited`,
/// and nothing else of this process. On `Err`, no supervisor is left
/// running (one spawned is killed and reaped).
fn spawn_supervisor(
    cmd: &mut Command,
    audit_log: &AuditLog,
    outcome_w: std::os::fd::OwnedFd,
    inherited: &[RawFd],
) -> std::io::Result<std::process::Child> {
    // No code runs in the child before exec (no pre_exec), so the standard
    // library spawns with posix_spawn (vfork): a fork of this process,
    // threads and all, and the exec that throws that copy away cost about
    // as much as the sandbox's own set-up. The supervisor arms its own
    // parent-death signal (`run --outcome-fd`).
    let _only_spawn = SPAWNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    crate::sys::set_inheritable(outcome_w.as_raw_fd(), true)?;
    // The log and the others stay open here: inheritable only for this
    // one spawn.
    let shared: Vec<RawFd> = std::iter::once(audit_log.raw_fd())
        .chain(inherited.iter().copied())
        .collect();
    let mut spawned = shared
        .iter()
        .try_for_each(|&fd| crate::sys::set_inheritable(fd, true))
        .and_then(|()| cmd.spawn());
    let mut closed = Ok(());
    for &fd in &shared {
        closed = closed.and(crate::sys::set_inheritable(fd, false));
    }
    drop(outcome_w);
    if let (Ok(child), Err(e)) = (&mut spawned, closed) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    spawned
}

/// A warm sandbox's supervisor (`run --warm-fd`), started before anyone
/// asked: its walls are being built, or are, and it waits for one request.
pub struct Warm {
    /// Until it took its request.
    started: Option<Started>,
    control: std::os::unix::net::UnixStream,
    answers: LineReader,
    /// The profile its walls were built from, once it said it is ready.
    pub profile_sha256: Option<String>,
}

/// Most bytes of a line a warm supervisor says.
const WARM_LINE_MAX: usize = 64 << 10;

impl Warm {
    /// Starts the supervisor of a warm sandbox of `profile`.
    pub fn start(
        profile: &Path,
        audit_log: &AuditLog,
        cgroups: Option<&std::sync::Arc<CgroupPool>>,
    ) -> std::io::Result<Warm> {
        let (outcome_r, outcome_w) = crate::sys::pipe_cloexec()?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let lease = cgroups.and_then(CgroupPool::lend);
        let mut cmd = supervisor_command(profile, audit_log, &outcome_w, lease.as_ref());
        cmd.arg("--warm-fd").arg(theirs.as_raw_fd().to_string());
        let child = match spawn_supervisor(&mut cmd, audit_log, outcome_w, &[theirs.as_raw_fd()]) {
            Ok(child) => child,
            Err(e) => {
                give_back_if(true, lease);
                return Err(e);
            }
        };
        drop(theirs);
        let answers = LineReader::new(ours.try_clone()?);
        Ok(Warm {
            started: Some(Started {
                handle: i32::try_from(child.id())
                    .ok()
                    .and_then(|pid| crate::sys::ProcessHandle::open(pid).ok()),
                child,
                lease,
                outcome: Some(std::fs::File::from(outcome_r)),
                cap: 0,
                writer: None,
            }),
            control: ours,
            answers,
            profile_sha256: None,
        })
    }

    /// The supervisor's next line, within `within`.
    fn says(&mut self, within: std::time::Duration) -> Result<WarmSays, String> {
        match self.answers.next_line(WARM_LINE_MAX, Some(within)) {
            NextLine::Line(line) => {
                serde_json::from_slice(&line).map_err(|e| format!("said what is not understood: {e}"))
            }
            NextLine::End | NextLine::Truncated => Err("ended before saying how it is".into()),
            other => Err(format!("said nothing in time ({other:?})")),
        }
    }

    /// Waits until its walls are built: `Err` says why they could not be
    /// (the supervisor is then ended).
    pub fn ready(&mut self, within: std::time::Duration) -> Result<(), String> {
        match self.says(within) {
            Ok(WarmSays::Ready { profile_sha256, .. }) => {
                self.profile_sha256 = Some(profile_sha256);
                Ok(())
            }
            Ok(WarmSays::Failed { error }) => Err(error),
            Ok(other) => Err(format!("said {other:?} before it was ready")),
            Err(e) => Err(e),
        }
    }

    /// Gives it the request; once it took it, the running execution, as a
    /// cold start's. `Err`: it did not take it (its profile changed since,
    /// or it is gone) and ran nothing; the caller starts one cold.
    pub fn take(
        mut self,
        request: &WarmRequest,
        workspace: Option<std::os::fd::BorrowedFd<'_>>,
        stdin: &[u8],
        cap: u64,
    ) -> Result<Started, String> {
        let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let fd = workspace.map_or(-1, |w| w.as_raw_fd());
        let socket = self.control.as_raw_fd();
        crate::sys::send_with_fd(socket, &line, fd)
            .and_then(|n| crate::sys::write_all(socket, line.get(n..).unwrap_or_default()))
            .map_err(|e| format!("cannot give it the request: {}", std::io::Error::from_raw_os_error(e)))?;
        match self.says(std::time::Duration::from_secs(10)) {
            Ok(WarmSays::Taken) => {}
            Ok(WarmSays::Stale { error }) => return Err(error),
            Ok(other) => return Err(format!("answered {other:?}")),
            Err(e) => return Err(e),
        }
        let Some(mut started) = self.started.take() else {
            return Err("it was already taken".into());
        };
        started.cap = cap;
        started.writer = started.child.stdin.take().map(|mut w| {
            let input = stdin.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&input);
            })
        });
        Ok(started)
    }
}

impl Drop for Warm {
    /// A warm sandbox nobody took: its supervisor sees its control socket
    /// close, tears the sandbox down without recording anything, and is
    /// reaped here.
    fn drop(&mut self) {
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        if let Some(mut started) = self.started.take() {
            started.reap_now();
        }
    }
}

impl Started {
    /// Waits for the supervisor, then gives its cgroup back.
    fn reap_now(&mut self) {
        let reaped = self.child.wait().is_ok();
        give_back_if(reaped, self.lease.take());
    }

    /// A handle to signal the supervisor by (never a process that reused its pid).
    pub fn handle(&self) -> Option<crate::sys::ProcessHandle> {
        self.handle.clone()
    }

    /// Waits for the supervisor and builds the answer, with at most `cap`
    /// bytes of each stream (the rest is read and dropped, so the supervisor
    /// is never held up by us).
    pub fn finish(mut self) -> WireResponse {
        let cap = self.cap;
        let readers: Vec<_> = [
            self.child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            self.child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| std::thread::spawn(move || read_capped(stream, cap)))
        .collect();
        let mut outputs = readers.into_iter().map(|h| h.join().unwrap_or_default());
        let (stdout, stdout_cut) = outputs.next().unwrap_or_default();
        let (stderr, stderr_cut) = outputs.next().unwrap_or_default();
        let mut answer = self.end();
        if answer.exec.is_some() {
            answer.stdout = Some(String::from_utf8_lossy(&stdout).into_owned());
            answer.stderr = Some(String::from_utf8_lossy(&stderr).into_owned());
            for (name, cut) in [("stdout", stdout_cut), ("stderr", stderr_cut)] {
                if cut {
                    answer.messages.push(format!(
                        "{name} cut after {cap} bytes in this answer; ask with \"v\": 2 to have all of it streamed"
                    ));
                }
            }
        }
        answer
    }

    /// Once its output is all read: the supervisor's outcome, as an answer
    /// without the output.
    fn end(&mut self) -> WireResponse {
        let mut text = Vec::new();
        let read = match self.outcome.take() {
            Some(outcome) => outcome.take(1 << 20).read_to_end(&mut text),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        };
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let outcome: Option<OutcomeLine> = read.ok().and_then(|_| serde_json::from_slice(&text).ok());
        if outcome.is_some() {
            // Its outcome came before it reaped its sandbox's remains: the
            // answer does not wait for that.
            reap_later(&mut self.child, self.lease.take());
        }
        let Some(o) = outcome else {
            let status = self.child.wait();
            give_back_if(status.is_ok(), self.lease.take());
            return WireResponse::refused(format!(
                "the supervisor ended without an outcome ({})",
                match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                }
            ));
        };
        WireResponse {
            ok: o.exec.is_some(),
            error: match o.exec {
                Some(_) => None,
                None => Some(o.messages.join("; ")),
            },
            exec: o.exec,
            exit_code: Some(o.exit_code),
            limit: o.limit,
            stdout: None,
            stderr: None,
            messages: o.messages,
            v: None,
            record: None,
        }
    }

    /// Passes the output on to `client` as it comes, in frames (protocol
    /// 2): a byte saying which stream (`o` stdout, `e` stderr), its length
    /// (4 bytes, big-endian) and that many bytes, raw. At most one frame is
    /// held: while the client has not taken it, the supervisor's pipes are
    /// not read, so a client that does not read stalls its own execution
    /// (which the supervisor still ends at its wall limit), never our
    /// memory. A client that hangs up lets the supervisor go (it then ends
    /// the run, recorded as cancelled). `draining` is asked now and then: a
    /// client that has not taken a frame for a second while it says yes is
    /// treated as gone.
    pub fn stream(mut self, client: &std::os::unix::net::UnixStream, draining: &dyn Fn() -> bool) -> Streamed {
        use std::os::fd::OwnedFd;
        let mut pipes: [Option<OwnedFd>; 2] = [
            self.child.stdout.take().map(OwnedFd::from),
            self.child.stderr.take().map(OwnedFd::from),
        ];
        let mut frame: Vec<u8> = Vec::with_capacity(FRAME_DATA + 5);
        let mut sent = 0;
        let mut chunk = vec![0u8; FRAME_DATA];
        let mut stalled_since: Option<std::time::Instant> = None;
        let gone = loop {
            if pipes.iter().all(Option::is_none) && sent == frame.len() {
                break false;
            }
            let pending = sent < frame.len();
            let mut fds: Vec<libc::pollfd> = vec![libc::pollfd {
                fd: client.as_raw_fd(),
                // Asked to write only with a frame to send; a hang-up is
                // reported either way.
                events: if pending { libc::POLLOUT } else { 0 },
                revents: 0,
            }];
            if !pending {
                fds.extend(pipes.iter().flatten().map(|p| libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }));
            }
            if crate::sys::poll_readable(&mut fds, 200).is_err() {
                break true;
            }
            let client_ready = fds.first().map_or(0, |p| p.revents);
            if client_ready & (libc::POLLHUP | libc::POLLERR) != 0 {
                break true;
            }
            if pending {
                if client_ready & libc::POLLOUT != 0 {
                    match crate::sys::send_nowait(client.as_raw_fd(), frame.get(sent..).unwrap_or_default()) {
                        Ok(n) => {
                            sent += n;
                            stalled_since = None;
                        }
                        Err(libc::EAGAIN) => {}
                        Err(_) => break true,
                    }
                }
                let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
                if sent < frame.len() && draining() && since.elapsed() > std::time::Duration::from_secs(1) {
                    break true;
                }
                continue;
            }
            for (i, kind) in [(0, b'o'), (1, b'e')] {
                let Some(fd) = pipes.get(i).and_then(Option::as_ref).map(AsRawFd::as_raw_fd) else {
                    continue;
                };
                let readable = fds
                    .iter()
                    .skip(1)
                    .any(|p| p.fd == fd && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0);
                if !readable || sent < frame.len() {
                    continue;
                }
                match crate::sys::read_once(fd, &mut chunk) {
                    Ok(0) | Err(_) => {
                        if let Some(p) = pipes.get_mut(i) {
                            *p = None;
                        }
                    }
                    Ok(n) => {
                        frame.clear();
                        sent = 0;
                        frame.push(kind);
                        frame.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
                        frame.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    }
                }
            }
        };
        if gone {
            // The supervisor's requester is gone: it sees its outcome pipe
            // and output pipes closed, ends the run and records it.
            drop(pipes);
            self.outcome.take();
            self.reap_now();
            return Streamed::ClientGone;
        }
        Streamed::Ended(self.end())
    }
}

/// Most bytes of output one frame carries.
const FRAME_DATA: usize = 64 * 1024;

/// Reads request lines from a stream, each bounded in size and, optionally,
/// in the time it may take to arrive whole (a per-read timeout alone would let
/// a client trickle one byte at a time forever).
pub struct LineReader {
    stream: std::os::unix::net::UnixStream,
    pending: Vec<u8>,
}

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum NextLine {
    /// A whole line, newline included.
    Line(Vec<u8>),
    /// The peer closed the stream between lines.
    End,
    /// The deadline passed within a line.
    Incomplete,
    /// The peer closed the stream within a line.
    Truncated,
    /// Nothing arrived before the deadline.
    Idle,
    /// The line is longer than the limit.
    TooLong,
}

impl LineReader {
    /// A reader over `stream`.
    pub fn new(stream: std::os::unix::net::UnixStream) -> Self {
        LineReader {
            stream,
            pending: Vec::new(),
        }
    }

    /// The next line, of at most `max` bytes, arriving within `within`.
    pub fn next_line(&mut self, max: usize, within: Option<std::time::Duration>) -> NextLine {
        let deadline = within.map(|d| std::time::Instant::now() + d);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                if i >= max {
                    return NextLine::TooLong;
                }
                let rest = self.pending.split_off(i + 1);
                return NextLine::Line(std::mem::replace(&mut self.pending, rest));
            }
            if self.pending.len() > max {
                return NextLine::TooLong;
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                    return self.cut_short(NextLine::Idle);
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) if self.pending.is_empty() => return NextLine::End,
                Ok(0) => return NextLine::Truncated,
                Ok(n) => self.pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return self.cut_short(NextLine::Idle)
                }
                Err(_) => return self.cut_short(NextLine::End),
            }
        }
    }

    /// A timeout or error: `between_lines` if no partial line is pending.
    fn cut_short(&self, between_lines: NextLine) -> NextLine {
        if self.pending.is_empty() {
            between_lines
        } else {
            NextLine::Incomplete
        }
    }
}

/// Gives a lent cgroup back once its supervisor is known reaped; if it is
/// not, the lease is dropped and the cgroup never lent again.
fn give_back_if(reaped: bool, lease: Option<Lease>) {
    if let (true, Some(lease)) = (reaped, lease) {
        lease.give_back();
    }
}

/// Reaps `child` now if it has exited, else on a thread that reaps such
/// supervisors one after another (each exits within milliseconds of its
/// outcome), and then gives its cgroup back. Without that thread, here and
/// now.
fn reap_later(child: &mut std::process::Child, lease: Option<Lease>) {
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};
    type Reaped = (i32, Option<Lease>);
    static REAPER: OnceLock<Option<Mutex<Sender<Reaped>>>> = OnceLock::new();
    if matches!(child.try_wait(), Ok(Some(_))) {
        give_back_if(true, lease);
        return;
    }
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = channel::<Reaped>();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                for (pid, lease) in rx {
                    let reaped = crate::sys::waitpid(pid, 0).is_ok();
                    give_back_if(reaped, lease);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some((pid, tx)) = i32::try_from(child.id()).ok().zip(reaper.as_ref()) else {
        let reaped = child.wait().is_ok();
        give_back_if(reaped, lease);
        return;
    };
    let unsent = tx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((pid, lease));
    if let Err(std::sync::mpsc::SendError((_, lease))) = unsent {
        let reaped = child.wait().is_ok();
        give_back_if(reaped, lease);
    }
}

fn read_capped(stream: impl Read, cap: u64) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut limited = stream.take(cap);
    let _ = limited.read_to_end(&mut kept);
    // Drain the rest so the writer is never blocked by us.
    let dropped = std::io::copy(&mut limited.into_inner(), &mut std::io::sink()).unwrap_or(0);
    (kept, dropped > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length_and_refuses_what_is_not_base64() {
        let data: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x80]).collect();
        for n in 0..data.len() {
            let text = encode_base64(&data[..n]);
            assert_eq!(decode_base64(&text).as_deref(), Some(&data[..n]), "{n}: {text}");
        }
        assert_eq!(encode_base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        assert_eq!(decode_base64("YW55IGNhcm5hbCBwbGVhcw==").unwrap(), b"any carnal pleas");
        for bad in ["YW5", "YW5=IGNh", "YW55IGNhcm5hbCBwbGVhc===", "YW5-", "Y W5", "===="] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }
}

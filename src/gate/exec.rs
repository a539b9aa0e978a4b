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
    /// The MBU's standard input (UTF-8 text).
    #[serde(default)]
    pub stdin: String,
    /// A host directory to use as the workspace (daemon only).
    #[serde(default)]
    pub workspace: Option<PathBuf>,
}

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

    /// The response as one line, newline included.
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the answer"}"#.to_string());
        s.push('\n');
        s
    }
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

/// The running supervisor of an [`Execution`]; [`Started::finish`] collects it.
pub struct Started {
    child: std::process::Child,
    handle: Option<crate::sys::ProcessHandle>,
    outcome: std::fs::File,
    readers: Vec<std::thread::JoinHandle<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Execution<'_> {
    /// Starts the supervisor process.
    pub fn start(&self) -> std::io::Result<Started> {
        let lineage = serde_json::to_string(self.lineage).map_err(std::io::Error::other)?;
        let (outcome_r, outcome_w) = crate::sys::pipe_cloexec()?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("run")
            .arg("--profile")
            .arg(self.profile)
            .arg("--audit-log-fd")
            .arg(self.audit_log.raw_fd().to_string())
            .arg("--outcome-fd")
            .arg(outcome_w.as_raw_fd().to_string())
            .arg("--lineage")
            .arg(lineage);
        if let Some(ws) = self.workspace {
            cmd.arg("--workspace")
                .arg(ws.path)
                .arg("--workspace-fd")
                .arg(ws.fd.as_raw_fd().to_string());
        }
        cmd.arg("--").args(self.args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_clear();
        // No code runs in the child before exec (no pre_exec), so the standard
        // library spawns with posix_spawn (vfork): a fork of this process,
        // threads and all, and the exec that throws that copy away cost about
        // as much as the sandbox's own set-up. The supervisor arms its own
        // parent-death signal (`run --outcome-fd`).
        let mut child = {
            let _only_spawn = SPAWNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            crate::sys::set_inheritable(outcome_w.as_raw_fd(), true)?;
            // The log and the workspace stay open here: inheritable only for
            // this one spawn.
            let shared: Vec<RawFd> = std::iter::once(self.audit_log.raw_fd())
                .chain(self.workspace.map(|ws| ws.fd.as_raw_fd()))
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
            spawned?
        };
        let cap = self.output_cap;
        let mut readers = Vec::new();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            readers.push(std::thread::spawn(move || read_capped(stream, cap)));
        }
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
            outcome: std::fs::File::from(outcome_r),
            readers,
            writer,
        })
    }
}

impl Started {
    /// A handle to signal the supervisor by (never a process that reused its pid).
    pub fn handle(&self) -> Option<crate::sys::ProcessHandle> {
        self.handle.clone()
    }

    /// Waits for the supervisor and builds the answer.
    pub fn finish(mut self) -> WireResponse {
        let mut text = Vec::new();
        let read = (&mut self.outcome).take(1 << 20).read_to_end(&mut text);
        let mut outputs = self.readers.into_iter().map(|h| h.join().unwrap_or_default());
        let stdout = outputs.next().unwrap_or_default();
        let stderr = outputs.next().unwrap_or_default();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let status = self.child.wait();
        let outcome: Option<OutcomeLine> = read.ok().and_then(|_| serde_json::from_slice(&text).ok());
        let Some(o) = outcome else {
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
            stdout: Some(String::from_utf8_lossy(&stdout).into_owned()),
            stderr: Some(String::from_utf8_lossy(&stderr).into_owned()),
            messages: o.messages,
        }
    }
}

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

fn read_capped(stream: impl Read, cap: u64) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut limited = stream.take(cap);
    let _ = limited.read_to_end(&mut kept);
    // Drain the rest so the writer is never blocked by us.
    let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
    kept
}

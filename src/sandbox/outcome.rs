//! How an execution ended, why, and what it used.
//!
//! Wall 9 says which limit ended it; provenance records all of it.

use std::fmt;

use super::report::Step;
use crate::exit;

/// How the MBU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The MBU exited with this code.
    Exited(i32),
    /// The MBU was killed by this signal.
    Signaled(i32),
    /// A wall could not be built, or the program could not be executed; the MBU
    /// never ran.
    SetupFailed(SetupFailure),
}

/// The resource limit that ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// `wall_seconds` passed; the supervisor killed the sandbox.
    Timeout,
    /// The kernel killed a process at the cgroup's memory limit.
    Oom,
    /// `cpu_seconds` was used up.
    Cpu,
    /// A fork failed at the `pids` limit and the run did not succeed.
    Pids,
    /// A write went past `file_size` (`SIGXFSZ`).
    FileSize,
    /// More than `output` bytes were written; the rest was cut.
    Output,
    /// Whoever asked for the execution (a daemon's client, a delegating
    /// parent) went away: it was ended (SIGTERM, SIGKILL after a grace).
    Cancelled,
    /// Its file records reached `provenance.max_records` under
    /// `on_overflow = "kill"`.
    Records,
    /// What it added to its host workspace came to `limits.disk`: the
    /// kernel refused the writes past it (`EDQUOT`).
    Disk,
}

impl Limit {
    /// The profile's setting that this limit is, with its value:
    /// `limits.wall_seconds = 30`.
    pub fn setting(self, l: &crate::policy::Limits) -> String {
        use crate::policy::units::format_size;
        match self {
            Limit::Timeout => format!("limits.wall_seconds = {}", l.wall_seconds),
            Limit::Oom => format!("limits.memory = {}", format_size(l.memory)),
            Limit::Cpu => format!("limits.cpu_seconds = {}", l.cpu_seconds),
            Limit::Pids => format!("limits.pids = {}", l.pids),
            Limit::FileSize => format!("limits.file_size = {}", format_size(l.file_size)),
            Limit::Output => format!("limits.output = {}", format_size(l.output)),
            Limit::Cancelled => "its requester went away".to_string(),
            Limit::Records => "provenance.max_records, on_overflow = \"kill\"".to_string(),
            Limit::Disk => format!("limits.disk = {}", l.disk.map_or_else(|| "?".into(), format_size)),
        }
    }

    /// Its name, as in a profile's `[limits]` and in the outcome.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Timeout => "timeout",
            Limit::Oom => "oom",
            Limit::Cpu => "cpu",
            Limit::Pids => "pids",
            Limit::FileSize => "file_size",
            Limit::Output => "output",
            Limit::Cancelled => "cancelled",
            Limit::Records => "records",
            Limit::Disk => "disk",
        }
    }
}

/// What an execution used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Wall-clock milliseconds from spawn to the end.
    pub wall_ms: u64,
    /// CPU milliseconds: the cgroup's, or the MBU process tree's as init reaped it.
    pub cpu_ms: Option<u64>,
    /// Peak memory in bytes: the cgroup's, or the MBU process's largest RSS.
    pub peak_memory: Option<u64>,
    /// Bytes of stdout and stderr passed on.
    pub output_bytes: u64,
    /// Whether output beyond the limit was cut.
    pub output_truncated: bool,
    /// CPU milliseconds the supervisor's listener spent on this execution's
    /// notifications (recording its file accesses): counted against its
    /// `cpu_seconds` with `cpu_ms`.
    pub recorder_cpu_ms: u64,
}

/// How an execution ended, why, and what it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How the MBU ended.
    pub end: End,
    /// The limit that ended it, if one did.
    pub limit: Option<Limit>,
    /// What it used.
    pub usage: Usage,
    /// How wall 9 was built: the cgroup, or why there was none.
    pub resources: String,
    /// Syscalls the filter refused, by name, with how often (under `errno`;
    /// under `kill` the first refusal ends the run with `SIGSYS`).
    pub refused: Vec<(String, u64)>,
    /// What the interpreter guard (wall 2) refused, as it reported it, in
    /// order: at most [`GUARD_REPORTS_KEPT`]; `guard_refused_total` counts
    /// them all.
    pub guard_refused: Vec<GuardRefusal>,
    /// Every refusal the guard reported, kept or not.
    pub guard_refused_total: u64,
    /// The guard's pipe carried more than the guard ever writes and was
    /// closed (user code with `os` wrote to it).
    pub guard_cut: bool,
    /// Wall 6's proxy: every connection the sandbox asked for, with
    /// `net.mode = "proxy"`.
    pub net: Option<super::proxy::NetReport>,
    /// Wall 9: what it added to a host workspace bounded by `limits.disk`.
    pub disk: Option<super::disk::DiskUse>,
}

/// How many of the guard's refusals an execution's records keep.
pub const GUARD_REPORTS_KEPT: usize = 100;

/// One refusal of the interpreter guard, as its report line said. It comes
/// from inside the sandbox: what the guard saw, bounded, not a kernel fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRefusal {
    /// When the supervisor read it (since the epoch).
    pub at: std::time::Duration,
    /// What was refused: "import of 'os'", "attribute '__class__'", ...
    pub what: String,
    /// The line of the user's code, when the guard knew it.
    pub line: Option<u64>,
}

impl GuardRefusal {
    /// Parses one report line (`{"what": "...", "line": N}`); `None` for
    /// anything else, which is then not recorded.
    pub fn parse(line: &[u8], at: std::time::Duration) -> Option<GuardRefusal> {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        let what = v.get("what")?.as_str()?;
        let what: String = what.chars().take(300).collect();
        Some(GuardRefusal {
            at,
            what,
            line: v.get("line").and_then(serde_json::Value::as_u64),
        })
    }
}

impl Outcome {
    /// The exit code `ninewall run` returns for this outcome (shared/DESIGN.md).
    pub fn exit_code(&self) -> i32 {
        match (self.limit, &self.end) {
            (Some(Limit::Timeout), _) => return exit::TIMEOUT,
            // The supervisor cut the output, or the CPU time ran out, and killed
            // the sandbox; the MBU may have exited on its own a moment before the
            // kill landed. Either way its result is not whole: killed, not success.
            (Some(Limit::Output | Limit::Cpu), End::Exited(_)) => return exit::SIGNALED + libc::SIGKILL,
            _ => {}
        }
        match &self.end {
            End::Exited(code) => *code,
            End::Signaled(sig) => exit::SIGNALED + sig,
            End::SetupFailed(f) if f.step == Step::Exec => {
                if f.errno == libc::ENOENT {
                    exit::NOT_FOUND
                } else {
                    exit::NOT_EXECUTABLE
                }
            }
            End::SetupFailed(_) => exit::SANDBOX,
        }
    }
}

/// A failed setup step, with enough to say which wall and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupFailure {
    /// The step.
    pub step: Step,
    /// What exactly failed (for filesystem steps, the operation).
    pub what: String,
    /// The errno.
    pub errno: i32,
}

impl fmt::Display for SetupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let err = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{}: {}: {err}", self.step.wall(), self.what)?;
        if let Some(hint) = hint(self.step, self.errno) {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

fn hint(step: Step, errno: i32) -> Option<&'static str> {
    match (step, errno) {
        (Step::Unshare, libc::EPERM | libc::ENOSPC | libc::EINVAL) => Some(
            "user namespaces are unavailable to this user: see /proc/sys/user/max_user_namespaces, \
             kernel.unprivileged_userns_clone and kernel.apparmor_restrict_unprivileged_userns",
        ),
        (Step::JoinNetwork, libc::ENOTEMPTY) => Some(
            "it has an interface besides lo, or lo is up: it was changed outside ninewall; \
             unmount it and the next run makes a new one",
        ),
        (Step::Exec, libc::ENOENT) => Some("the program or its ELF interpreter is not in the sandbox's view"),
        (Step::Exec, libc::EACCES) => Some("the program is not executable in the sandbox's view"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(end: End, limit: Option<Limit>) -> Outcome {
        Outcome {
            end,
            limit,
            usage: Usage::default(),
            resources: String::new(),
            refused: Vec::new(),
            guard_refused: Vec::new(),
            guard_refused_total: 0,
            guard_cut: false,
            net: None,
            disk: None,
        }
    }

    #[test]
    fn a_run_cut_by_the_supervisor_never_reports_success() {
        // The MBU may finish its last write and exit 0 just before the kill lands.
        assert_eq!(outcome(End::Exited(0), Some(Limit::Output)).exit_code(), 137);
        assert_eq!(outcome(End::Exited(0), Some(Limit::Cpu)).exit_code(), 137);
        assert_eq!(outcome(End::Signaled(9), Some(Limit::Output)).exit_code(), 137);
        assert_eq!(outcome(End::Signaled(24), Some(Limit::Cpu)).exit_code(), 152);
        assert_eq!(outcome(End::Exited(0), Some(Limit::Timeout)).exit_code(), 124);
        assert_eq!(outcome(End::Exited(3), Some(Limit::Pids)).exit_code(), 3);
        assert_eq!(outcome(End::Exited(0), None).exit_code(), 0);
    }
}

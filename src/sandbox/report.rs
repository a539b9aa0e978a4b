//! The typed messages the sandbox's processes send the supervisor over one
//! close-on-exec pipe.
//!
//! Walls 3 to 9: each step that builds one is named in a report when it fails.
//!
//! Each message is one 16-byte record, written with a single `write` (atomic on
//! a pipe), so the three writers (the outer child, init, the MBU before exec)
//! never interleave. Declaration order of [`Step`] is the order setup runs in.

/// A step of the sandbox's setup, as reported when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Outer child: joining the shared empty network namespace, and checking
    /// that it is empty.
    JoinNetwork = 1,
    /// Outer child: `unshare` of the user, mount, pid, ipc, uts and net namespaces.
    Unshare,
    /// Outer child: parent-death signal, not dumpable.
    Lifeline,
    /// Outer child: waiting for the supervisor to write the id maps.
    WaitForIdMaps,
    /// Outer child: dropping supplementary groups.
    ClearGroups,
    /// Outer child: switching to the inside gid.
    SetGid,
    /// Outer child: switching to the inside uid.
    SetUid,
    /// Outer child: `unshare` of the time namespace.
    UnshareTime,
    /// Outer child: clock offsets of the time namespace.
    TimeOffsets,
    /// Outer child: the hostname.
    Hostname,
    /// Outer child: bringing `lo` up.
    Loopback,
    /// Outer child: forking init.
    ForkInit,
    /// Init: parent-death signal, not dumpable.
    InitLifeline,
    /// Init: one filesystem operation; `index` says which.
    Filesystem,
    /// Init: creating the Landlock ruleset.
    LandlockRuleset,
    /// Init: one Landlock rule; `index` says which.
    LandlockRule,
    /// Init: signal forwarding.
    InitSignals,
    /// Init: waiting for the supervisor's word that the sandbox is in its
    /// cgroup (or has none).
    WaitForCgroup,
    /// Init: `unshare` of the cgroup namespace.
    UnshareCgroup,
    /// Init: forking the MBU.
    ForkMbu,
    /// Init: taking the MBU's seccomp listener and passing it on.
    SeccompHandoff,
    /// MBU: a new session.
    Setsid,
    /// MBU: signal mask and dispositions.
    ResetSignals,
    /// MBU: close-on-exec of inherited descriptors.
    CloseFds,
    /// MBU: working directory.
    Chdir,
    /// MBU: capability bounding set.
    DropBounding,
    /// MBU: ambient capabilities.
    DropAmbient,
    /// MBU: effective, permitted, inheritable capabilities.
    DropCapabilities,
    /// MBU: `no_new_privs`.
    NoNewPrivs,
    /// MBU: resource limits.
    Rlimits,
    /// MBU: waiting for the supervisor's word that the start record is on disk.
    WaitForRecord,
    /// MBU: enforcing the Landlock ruleset.
    LandlockRestrict,
    /// MBU: installing the seccomp filter.
    Seccomp,
    /// MBU: `execve` of the program.
    Exec,
    /// Outer child: becoming the execution's own host uid and gid, so that
    /// the user namespace it makes next is theirs.
    BecomeIdentity,
    /// Outer child: one of the user namespace's limits; `index` says which.
    UserLimits,
    /// Outer child: the proxy's listener on the sandbox's loopback, passed
    /// to the supervisor.
    ProxyListener,
    /// Init of a warm sandbox: reading the request (program, arguments,
    /// environment, workspace) the supervisor sends once a caller asks.
    WaitForRequest,
    /// Init of a warm sandbox: mounting the request's workspace.
    Workspace,
}

impl Step {
    const ALL: [Step; 39] = [
        Step::JoinNetwork,
        Step::Unshare,
        Step::Lifeline,
        Step::WaitForIdMaps,
        Step::ClearGroups,
        Step::SetGid,
        Step::SetUid,
        Step::UnshareTime,
        Step::TimeOffsets,
        Step::Hostname,
        Step::Loopback,
        Step::ForkInit,
        Step::InitLifeline,
        Step::Filesystem,
        Step::LandlockRuleset,
        Step::LandlockRule,
        Step::InitSignals,
        Step::WaitForCgroup,
        Step::UnshareCgroup,
        Step::ForkMbu,
        Step::SeccompHandoff,
        Step::Setsid,
        Step::ResetSignals,
        Step::CloseFds,
        Step::Chdir,
        Step::DropBounding,
        Step::DropAmbient,
        Step::DropCapabilities,
        Step::NoNewPrivs,
        Step::Rlimits,
        Step::WaitForRecord,
        Step::LandlockRestrict,
        Step::Seccomp,
        Step::Exec,
        Step::BecomeIdentity,
        Step::UserLimits,
        Step::ProxyListener,
        Step::WaitForRequest,
        Step::Workspace,
    ];

    fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == n)
    }

    /// The wall of shared/DESIGN.md this step builds.
    pub fn wall(self) -> &'static str {
        match self {
            Step::Unshare | Step::UnshareTime | Step::UnshareCgroup | Step::TimeOffsets | Step::Hostname => {
                "wall 5 (process isolation: namespaces)"
            }
            Step::Lifeline | Step::InitLifeline | Step::ForkInit | Step::InitSignals | Step::ForkMbu | Step::Setsid => {
                "wall 5 (process isolation)"
            }
            Step::WaitForIdMaps | Step::ClearGroups | Step::SetGid | Step::SetUid | Step::BecomeIdentity => {
                "wall 3 (credentials: user namespace)"
            }
            Step::DropBounding
            | Step::DropAmbient
            | Step::DropCapabilities
            | Step::NoNewPrivs
            | Step::ResetSignals
            | Step::CloseFds => "wall 3 (credentials)",
            Step::Loopback | Step::JoinNetwork | Step::ProxyListener => "wall 6 (network)",
            Step::LandlockRuleset | Step::LandlockRule | Step::LandlockRestrict => "wall 7 (Landlock)",
            Step::Filesystem | Step::Chdir | Step::Workspace => "wall 4 (filesystem view)",
            Step::Seccomp | Step::SeccompHandoff => "wall 8 (seccomp)",
            Step::Rlimits | Step::WaitForCgroup | Step::UserLimits => "wall 9 (resources)",
            Step::WaitForRecord => "provenance",
            Step::WaitForRequest => "warm sandbox",
            Step::Exec => "exec",
        }
    }

    /// What the step does, for a message.
    pub fn describe(self) -> &'static str {
        match self {
            Step::JoinNetwork => "joining the shared empty network namespace",
            Step::Unshare => "unshare(user, mount, pid, ipc, uts, net namespaces)",
            Step::Lifeline => "arming the parent-death signal",
            Step::WaitForIdMaps => "waiting for the uid/gid maps",
            Step::ClearGroups => "setgroups([])",
            Step::SetGid => "setresgid to the sandbox gid",
            Step::SetUid => "setresuid to the sandbox uid",
            Step::UnshareTime => "unshare(time namespace)",
            Step::UnshareCgroup => "unshare(cgroup namespace)",
            Step::WaitForCgroup => "waiting for the sandbox's cgroup",
            Step::TimeOffsets => "writing the time namespace's clock offsets",
            Step::Hostname => "sethostname",
            Step::Loopback => "bringing the loopback interface up",
            Step::ProxyListener => "listening on 127.0.0.1:3128 for the supervisor's proxy",
            Step::ForkInit => "forking the sandbox's init",
            Step::InitLifeline => "arming init's parent-death signal",
            Step::Filesystem => "building the filesystem view",
            Step::LandlockRuleset => "creating the ruleset",
            Step::LandlockRule => "adding a rule",
            Step::LandlockRestrict => "landlock_restrict_self",
            Step::Seccomp => "installing the syscall filter",
            Step::SeccompHandoff => "passing the filter's notification listener to the supervisor",
            Step::Rlimits => "setting rlimits",
            Step::UserLimits => "setting the user namespace's limits (/proc/sys/user)",
            Step::WaitForRecord => "waiting for the start record to be on disk",
            Step::InitSignals => "installing init's signal forwarding",
            Step::ForkMbu => "forking the MBU process",
            Step::Setsid => "setsid",
            Step::ResetSignals => "resetting signal dispositions",
            Step::CloseFds => "closing inherited descriptors",
            Step::Chdir => "chdir to the working directory",
            Step::DropBounding => "dropping the capability bounding set",
            Step::DropAmbient => "clearing ambient capabilities",
            Step::DropCapabilities => "clearing all capability sets",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::BecomeIdentity => "becoming the execution's own host uid and gid",
            Step::Exec => "execve",
            Step::WaitForRequest => "reading the request",
            Step::Workspace => "mounting the workspace",
        }
    }
}

/// One message from the sandbox's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The outer child has its namespaces and lifeline: write the id maps now.
    NamespacesMade,
    /// The outer child forked init; `pid` is init's pid on the host.
    InitStarted {
        /// Host pid of init.
        pid: i32,
    },
    /// A setup step failed; nothing of the MBU ran.
    Failed {
        /// Which step.
        step: Step,
        /// For [`Step::Filesystem`], the index of the operation.
        index: u32,
        /// The errno.
        errno: i32,
    },
    /// The MBU process exited with `code`.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The MBU process was killed by `signal`.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// What the MBU process (and the children it reaped) used, as `wait4` saw it.
    Usage {
        /// User plus system CPU milliseconds.
        cpu_ms: u32,
        /// Largest resident set, in KiB.
        maxrss_kb: u32,
    },
    /// Init killed and reaped everything the MBU left: no process of the
    /// sandbox's pid namespace but init is left. Init's exit and the outer
    /// child's (which tear the namespaces down) follow.
    Emptied,
    /// A warm sandbox's walls that do not depend on the request are built,
    /// it is in its cgroup, and init waits for the request.
    Warm,
}

/// Size of one record on the pipe.
pub const RECORD: usize = 16;

impl Report {
    /// The record's bytes (child-safe: no allocation).
    pub fn encode(self) -> [u8; RECORD] {
        let (kind, a, b, c): (u32, u32, u32, i32) = match self {
            Report::NamespacesMade => (1, 0, 0, 0),
            Report::InitStarted { pid } => (2, 0, 0, pid),
            Report::Failed { step, index, errno } => (3, step as u32, index, errno),
            Report::Exited { code } => (4, 0, 0, code),
            Report::Signaled { signal } => (5, 0, 0, signal),
            Report::Usage { cpu_ms, maxrss_kb } => (6, cpu_ms, maxrss_kb, 0),
            Report::Emptied => (7, 0, 0, 0),
            Report::Warm => (8, 0, 0, 0),
        };
        let mut out = [0u8; RECORD];
        out[0..4].copy_from_slice(&kind.to_ne_bytes());
        out[4..8].copy_from_slice(&a.to_ne_bytes());
        out[8..12].copy_from_slice(&b.to_ne_bytes());
        out[12..16].copy_from_slice(&c.to_ne_bytes());
        out
    }

    /// Parses a record; `None` for anything malformed.
    pub fn decode(bytes: &[u8; RECORD]) -> Option<Report> {
        let word = |i: usize| -> u32 {
            let mut w = [0u8; 4];
            w.copy_from_slice(bytes.get(i..i + 4).unwrap_or(&[0; 4]));
            u32::from_ne_bytes(w)
        };
        let c = word(12).cast_signed();
        Some(match word(0) {
            1 => Report::NamespacesMade,
            2 => Report::InitStarted { pid: c },
            3 => Report::Failed {
                step: Step::from_u32(word(4))?,
                index: word(8),
                errno: c,
            },
            4 => Report::Exited { code: c },
            5 => Report::Signaled { signal: c },
            6 => Report::Usage {
                cpu_ms: word(4),
                maxrss_kb: word(8),
            },
            7 => Report::Emptied,
            8 => Report::Warm,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_round_trips() {
        let mut all = vec![
            Report::NamespacesMade,
            Report::Emptied,
            Report::Warm,
            Report::InitStarted { pid: 4242 },
            Report::Exited { code: 3 },
            Report::Signaled { signal: 9 },
            Report::Usage {
                cpu_ms: 1234,
                maxrss_kb: 56789,
            },
        ];
        for step in Step::ALL {
            all.push(Report::Failed {
                step,
                index: 7,
                errno: libc::EPERM,
            });
        }
        for r in all {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Report::decode(&[0xff; RECORD]), None);
        let mut bad_step = Report::Failed {
            step: Step::Exec,
            index: 0,
            errno: 1,
        }
        .encode();
        bad_step[4] = 200;
        assert_eq!(Report::decode(&bad_step), None);
    }
}

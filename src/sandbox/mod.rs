//! The only code that forks, execs or calls into the kernel for the walls.
//!
//! [`spawn`] prepares a [`ChildSpec`] from a [`SetupPlan`], forks the outer
//! child, and writes the user namespace's id maps when it asks; [`Running::wait`]
//! reads the children's typed reports and turns them into an [`Outcome`].

pub mod child;
pub mod mounts;
pub mod report;
pub mod sys;

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::plan::{IdMap, SetupPlan};
use child::{ChildFds, ChildSpec, LandlockProgram};
use report::{Report, Step, RECORD};

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The MBU exited with this code.
    Exited(i32),
    /// The MBU was killed by this signal.
    Signaled(i32),
    /// A wall could not be built, or the program could not be executed; the MBU
    /// never ran.
    SetupFailed(SetupFailure),
}

impl Outcome {
    /// The exit code `ninewall run` returns for this outcome (shared/DESIGN.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Signaled(sig) => 128 + sig,
            Outcome::SetupFailed(f) if f.step == Step::Exec => {
                if f.errno == libc::ENOENT {
                    127
                } else {
                    126
                }
            }
            Outcome::SetupFailed(_) => child::SETUP_FAILED,
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
        (Step::Unshare, libc::EPERM) | (Step::Unshare, libc::ENOSPC) | (Step::Unshare, libc::EINVAL) => Some(
            "user namespaces are unavailable to this user: see /proc/sys/user/max_user_namespaces, \
             kernel.unprivileged_userns_clone and kernel.apparmor_restrict_unprivileged_userns",
        ),
        (Step::Exec, libc::ENOENT) => Some("the program or its ELF interpreter is not in the sandbox's view"),
        (Step::Exec, libc::EACCES) => Some("the program is not executable in the sandbox's view"),
        _ => None,
    }
}

/// Failures of the supervisor itself (as opposed to a step inside the sandbox).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A pipe or fork of the supervisor failed.
    #[error("wall 5 (process isolation): {what}: {source}")]
    Spawn {
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the user namespace's id maps failed.
    #[error("wall 3 (credentials: user namespace): writing {file}: {source}")]
    IdMap {
        /// The /proc file.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox's processes ended without saying how the MBU ended.
    #[error("the sandbox ended without a report (outer child status {status:#x}); nothing is known of the MBU")]
    Lost {
        /// Raw wait status of the outer child.
        status: i32,
    },
    /// Reading the children's reports failed.
    #[error("reading the sandbox's reports: {0}")]
    Report(#[source] std::io::Error),
}

/// A sandbox that is being set up or running.
pub struct Running {
    outer: i32,
    report: OwnedFd,
    sync: Option<OwnedFd>,
    ids: IdMap,
    init: Option<i32>,
    fs_describe: Vec<String>,
    landlock_describe: Vec<String>,
    failure: Option<SetupFailure>,
    end: Option<Outcome>,
    interrupted: Option<i32>,
}

fn cstring(bytes: &[u8]) -> CString {
    // Arguments and environment were checked for NUL bytes by the policy and
    // the plan; a NUL here would be a bug, and an empty string is harmless.
    CString::new(bytes).unwrap_or_default()
}

/// The Landlock program for the child, and a description of each rule.
fn prepare_landlock(plan: &SetupPlan) -> (Option<LandlockProgram>, Vec<String>) {
    let Some(ll) = &plan.landlock else {
        return (None, Vec::new());
    };
    let mut describe = Vec::new();
    let paths = ll
        .paths
        .iter()
        .map(|r| {
            describe.push(format!(
                "rule {} beneath {}",
                crate::landlock::fs_names(r.access).join(","),
                r.path.display()
            ));
            (cstring(r.path.as_os_str().as_bytes()), r.access)
        })
        .collect();
    let ports = ll
        .ports
        .iter()
        .map(|r| {
            describe.push(format!(
                "rule {} on TCP port {}",
                crate::landlock::net_names(r.access).join(","),
                r.port
            ));
            (r.port, r.access)
        })
        .collect();
    let program = LandlockProgram {
        handled_fs: ll.handled_fs,
        handled_net: ll.handled_net,
        scoped: ll.scoped,
        paths,
        ports,
    };
    (Some(program), describe)
}

fn prepare(plan: &SetupPlan) -> (ChildSpec, Vec<String>) {
    let (landlock, landlock_describe) = prepare_landlock(plan);
    let argv_store: Vec<CString> = plan.argv.iter().map(|a| cstring(a.as_bytes())).collect();
    let env_store: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect();
    let argv = argv_store
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp = env_store
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let spec = ChildSpec {
        supervisor_pid: sys::getpid(),
        ids: plan.ids,
        hostname: plan.hostname.as_bytes().to_vec(),
        net: plan.net,
        fs: mounts::compile(&plan.mounts),
        workdir: cstring(plan.workdir.as_os_str().as_bytes()),
        program: cstring(plan.program.as_os_str().as_bytes()),
        argv_store,
        argv,
        env_store,
        envp,
        landlock,
        seccomp: plan
            .seccomp
            .program
            .iter()
            .map(|&(code, jt, jf, k)| crate::seccomp::Insn { code, jt, jf, k })
            .collect(),
    };
    (spec, landlock_describe)
}

/// Forks the sandbox for `plan`. The caller's stdin, stdout and stderr become
/// the MBU's. Signals in [`child::FORWARDED_SIGNALS`] should be blocked by the
/// caller first (see [`SignalForwarder`]) so that none is lost during setup.
///
/// The sandbox dies with the calling *thread* (`PR_SET_PDEATHSIG`): call this
/// from a thread that outlives the execution.
pub fn spawn(plan: &SetupPlan) -> Result<Running, SandboxError> {
    let (spec, landlock_describe) = prepare(plan);
    let spawn_err = |what| move |source| SandboxError::Spawn { what, source };
    let (report_r, report_w) = sys::pipe_cloexec().map_err(spawn_err("creating the report pipe"))?;
    let (sync_r, sync_w) = sys::pipe_cloexec().map_err(spawn_err("creating the sync pipe"))?;
    let pid = sys::fork().map_err(|e| SandboxError::Spawn {
        what: "fork",
        source: std::io::Error::from_raw_os_error(e),
    })?;
    if pid == 0 {
        let fds = ChildFds {
            report: report_w.as_raw_fd(),
            sync: sync_r.as_raw_fd(),
        };
        child::outer(&spec, fds);
    }
    drop(report_w);
    drop(sync_r);
    Ok(Running {
        outer: pid,
        report: report_r,
        sync: Some(sync_w),
        ids: plan.ids,
        init: None,
        fs_describe: spec.fs.describe,
        landlock_describe,
        failure: None,
        end: None,
        interrupted: None,
    })
}

fn write_proc(pid: i32, name: &str, content: &str) -> Result<(), SandboxError> {
    let file = format!("/proc/{pid}/{name}");
    std::fs::write(&file, content).map_err(|source| SandboxError::IdMap { file, source })
}

/// Receives the signals a supervisor forwards to its sandbox.
pub struct SignalForwarder {
    fd: OwnedFd,
}

impl SignalForwarder {
    /// Blocks [`child::FORWARDED_SIGNALS`] in the calling thread and receives
    /// them through a signalfd instead. Call before [`spawn`], from the thread
    /// that waits.
    pub fn install() -> std::io::Result<SignalForwarder> {
        sys::block_signals(&child::FORWARDED_SIGNALS)?;
        let fd = sys::signalfd(&child::FORWARDED_SIGNALS)?;
        Ok(SignalForwarder { fd })
    }
}

impl Running {
    /// Host pid of the sandbox's init, once started.
    pub fn init_pid(&self) -> Option<i32> {
        self.init
    }

    fn handle(&mut self, r: Report) -> Result<(), SandboxError> {
        match r {
            Report::Armed => {
                let pid = self.outer;
                let ids = self.ids;
                if !ids.clear_groups {
                    write_proc(pid, "setgroups", "deny")?;
                }
                write_proc(pid, "uid_map", &format!("{} {} 1\n", ids.inside_uid, ids.host_uid))?;
                write_proc(pid, "gid_map", &format!("{} {} 1\n", ids.inside_gid, ids.host_gid))?;
                if let Some(sync) = self.sync.take() {
                    sys::write_all(sync.as_raw_fd(), &[1]).map_err(|e| SandboxError::IdMap {
                        file: "the sync pipe".into(),
                        source: std::io::Error::from_raw_os_error(e),
                    })?;
                }
            }
            Report::InitStarted { pid } => self.init = Some(pid),
            Report::Failed { step, index, errno } => {
                if self.failure.is_none() {
                    let list = match step {
                        Step::Filesystem => Some(&self.fs_describe),
                        Step::LandlockRule => Some(&self.landlock_describe),
                        _ => None,
                    };
                    let what = match list {
                        Some(l) => l
                            .get(index as usize)
                            .cloned()
                            .unwrap_or_else(|| format!("operation {index}")),
                        None => step.describe().to_string(),
                    };
                    self.failure = Some(SetupFailure { step, what, errno });
                }
            }
            Report::Exited { code } => self.end = Some(Outcome::Exited(code)),
            Report::Signaled { signal } => self.end = Some(Outcome::Signaled(signal)),
        }
        Ok(())
    }

    fn forward(&mut self, sig: i32) {
        match self.init {
            Some(init) => {
                let _ = sys::kill(init, sig);
            }
            None => {
                // Not running yet: nothing to deliver it to. Stop the setup.
                self.interrupted = Some(sig);
                let _ = sys::kill(self.outer, libc::SIGKILL);
            }
        }
    }

    /// Waits for the end of the execution, forwarding signals from `signals`.
    pub fn wait(mut self, signals: Option<&SignalForwarder>) -> Result<Outcome, SandboxError> {
        let result = self.pump(signals);
        if result.is_err() {
            let _ = sys::kill(self.outer, libc::SIGKILL);
        }
        // The outer child exits right after init, and init only after the
        // whole pid namespace is gone.
        self.sync.take();
        let status = match sys::waitpid(self.outer, 0) {
            Ok((_, status)) => status,
            Err(e) => return Err(SandboxError::Report(std::io::Error::from_raw_os_error(e))),
        };
        result?;
        if let Some(f) = self.failure {
            return Ok(Outcome::SetupFailed(f));
        }
        if let Some(end) = self.end {
            return Ok(end);
        }
        if let Some(sig) = self.interrupted {
            return Ok(Outcome::Signaled(sig));
        }
        Err(SandboxError::Lost { status })
    }

    fn pump(&mut self, signals: Option<&SignalForwarder>) -> Result<(), SandboxError> {
        let report_fd = self.report.as_raw_fd();
        let mut buf = [0u8; RECORD];
        let mut filled = 0usize;
        loop {
            let mut fds = vec![libc::pollfd {
                fd: report_fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Some(s) = signals {
                fds.push(libc::pollfd {
                    fd: s.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            sys::poll_readable(&mut fds, -1).map_err(SandboxError::Report)?;
            if let (Some(s), Some(p)) = (signals, fds.get(1)) {
                if p.revents & libc::POLLIN != 0 {
                    while let Some(sig) = sys::read_signal(s.fd.as_raw_fd()) {
                        self.forward(sig);
                    }
                }
            }
            let ready = fds.first().map_or(0, |p| p.revents);
            if ready & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            let n = sys::read_once(report_fd, buf.get_mut(filled..).unwrap_or_default())
                .map_err(|e| SandboxError::Report(std::io::Error::from_raw_os_error(e)))?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
            if filled == RECORD {
                filled = 0;
                if let Some(r) = Report::decode(&buf) {
                    self.handle(r)?;
                }
            }
        }
    }
}

/// Runs `plan` to completion with the caller's stdio, forwarding signals.
pub fn run(plan: &SetupPlan, signals: Option<&SignalForwarder>) -> Result<Outcome, SandboxError> {
    spawn(plan)?.wait(signals)
}

/// A short description of the walls a plan builds, for `-v`.
pub fn describe_walls(plan: &SetupPlan) -> Vec<String> {
    let mut out = vec![
        format!(
            "wall 3 credentials: user namespace, uid {} gid {} inside = {} {} on the host{}; every capability dropped; no_new_privs",
            plan.ids.inside_uid,
            plan.ids.inside_gid,
            plan.ids.host_uid,
            plan.ids.host_gid,
            if plan.ids.clear_groups { "; supplementary groups cleared" } else { "; setgroups denied" }
        ),
        "wall 4 filesystem view: mount namespace, new tmpfs root, pivot_root, old root detached".to_string(),
    ];
    for line in mounts::compile(&plan.mounts).describe {
        if line.starts_with("bind") || line.starts_with("symlink") || line.starts_with("mount a") {
            out.push(format!("  {line}"));
        }
    }
    out.push(format!(
        "wall 5 process isolation: pid, ipc, uts (hostname {:?}), cgroup, time namespaces; new session; dies with the supervisor",
        plan.hostname
    ));
    out.push(format!(
        "wall 6 network: network namespace, {}",
        match plan.net {
            crate::policy::NetMode::None => "no interface up",
            crate::policy::NetMode::Loopback => "loopback only",
        }
    ));
    match &plan.landlock {
        None => out.push("wall 7 Landlock: not available on this kernel, and not required by the profile".into()),
        Some(ll) => {
            out.push(format!(
                "wall 7 Landlock: ABI {}; handles fs {}; net {}; scoped {}",
                ll.abi,
                crate::landlock::fs_names(ll.handled_fs).join(","),
                crate::landlock::net_names(ll.handled_net).join(","),
                crate::landlock::scope_names(ll.scoped).join(",")
            ));
            for r in &ll.paths {
                out.push(format!(
                    "  {} beneath {}",
                    crate::landlock::fs_names(r.access).join(","),
                    r.path.display()
                ));
            }
            for r in &ll.ports {
                out.push(format!(
                    "  {} on TCP port {}",
                    crate::landlock::net_names(r.access).join(","),
                    r.port
                ));
            }
        }
    }
    out.push(format!(
        "exec: {} in {}",
        Path::new(&plan.program).display(),
        plan.workdir.display()
    ));
    out
}

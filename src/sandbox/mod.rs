//! The only code that forks, execs or calls into the kernel for the walls.
//!
//! Walls 3 to 9, as `plan::SetupPlan` says; the supervisor's half of wall 9
//! (cgroup, timeouts, output cap) and of provenance (file events) too.
//!
//! [`spawn`] prepares a [`ChildSpec`] from a [`SetupPlan`], forks the outer
//! child, and writes the user namespace's id maps when it asks; [`Running::wait`]
//! reads the children's typed reports and turns them into an [`Outcome`].

pub mod cgroup;
pub mod child;
mod describe;
pub mod disk;
pub mod mounts;
pub mod netns;
mod notify;
mod outcome;
pub mod proxy;
pub mod report;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use crate::host::Cgroups;
use crate::plan::{IdMap, Resource, Rlimit, SetupPlan};
use crate::policy::{CgroupMode, Limits};
use crate::sys;
use cgroup::Cgroup;
use child::{ChildFds, ChildSpec, LandlockProgram};
pub use describe::wall_lines;
pub use notify::FileEvent;
pub use outcome::{End, GuardRefusal, Limit, Outcome, SetupFailure, Usage, GUARD_REPORTS_KEPT};
use report::{Report, Step, RECORD};

/// What the supervisor's loop hands its caller while the sandbox runs, for
/// the records written during the run.
#[derive(Debug)]
pub enum Event {
    /// A recorded file access (the seccomp listener's).
    File(FileEvent),
    /// Connections wall 6's proxy has ended.
    Connections(Vec<proxy::Connection>),
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
    /// The shared empty network namespace is there but is not one ninewall made.
    #[error(transparent)]
    Network(#[from] netns::NetnsError),
    /// The supervisor could not take over the signals it forwards.
    #[error("wall 5 (process isolation): cannot set up signal forwarding: {0}")]
    Signals(#[source] std::io::Error),
    /// The socket to the delegation service could not be made.
    #[error("wall 1 (policy gate): cannot make the delegation socket: {0}")]
    Delegation(#[source] std::io::Error),
    /// Reading the children's reports failed.
    #[error("reading the sandbox's reports: {0}")]
    Report(#[source] std::io::Error),
    /// The profile requires cgroups (`limits.cgroups = "strict"`) and none
    /// could be made.
    #[error(
        "wall 9 (resources): the profile requires cgroups (limits.cgroups = \"strict\") and none could be made: {0}"
    )]
    CgroupRequired(#[source] cgroup::CgroupError),
    /// The sandbox could not be put in its cgroup.
    #[error("wall 9 (resources): {0}")]
    Cgroup(#[source] cgroup::CgroupError),
    /// `limits.disk` cannot be enforced on this workspace.
    #[error("wall 9 (resources): limits.disk cannot be enforced, so nothing runs: {0}")]
    Disk(String),
    /// A warm sandbox could not be built, or not be given its request.
    #[error("warm sandbox: {0}")]
    Warm(String),
    /// The execution's identity could not name its sandbox as its holder.
    #[error("wall 3 (credentials): cannot name the sandbox in its identity's lock file: {0}")]
    Identity(#[source] std::io::Error),
}

/// Most bytes the supervisor reads from the interpreter guard's report
/// pipe in one execution: 1,000 reports of at most ~350 bytes fit.
pub const GUARD_BYTES_MAX: u64 = 1 << 20;

/// A sandbox that is being set up or running.
pub struct Running {
    outer: i32,
    report: OwnedFd,
    sync: Option<OwnedFd>,
    /// Sync word 1 (id maps written) was sent.
    maps_written: bool,
    /// Sync word 2 (in the cgroup, or none) was sent.
    cgroup_word_sent: bool,
    /// The caller let the MBU go: sync word 3 is sent once sync word 2 is.
    released: bool,
    /// Init reaped everything but itself: nothing of the MBU runs any more.
    emptied: bool,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// The seccomp listener's thread, until it has ended.
    notifications: Option<notify::Notifications>,
    /// The refusals it counted, once it has.
    refused: std::collections::BTreeMap<i32, u64>,
    /// Where the shared empty network namespace the sandbox joined is
    /// mounted; `None`: it has a network namespace of its own.
    shared_net: Option<std::path::PathBuf>,
    ids: IdMap,
    init: Option<i32>,
    fs_describe: Vec<String>,
    landlock_describe: Vec<String>,
    user_limits_describe: Vec<String>,
    failure: Option<SetupFailure>,
    end: Option<End>,
    interrupted: Option<i32>,
    limits: Limits,
    /// Where the plan says the cgroup is made.
    cgroups: Cgroups,
    started: Instant,
    cgroup: Option<Cgroup>,
    resources: String,
    limit: Option<Limit>,
    output_bytes: u64,
    truncated: bool,
    /// Output read from the sandbox and not yet passed on (stdout, stderr),
    /// each at most one read: while one is not empty, that stream of the
    /// sandbox is not read (back pressure reaches the MBU, never our memory).
    unsent: [Vec<u8>; 2],
    /// Whoever asked for this execution, as the write end of a pipe it
    /// reads: when it is gone (the read end closed), the run is ended.
    requester: Option<RawFd>,
    /// When a cancelled run that ignored SIGTERM is killed.
    cancel_kill_at: Option<Instant>,
    /// CPU time the listener thread has spent on this execution so far.
    recorder_cpu_ns: u64,
    /// Read end of the interpreter guard's report pipe, with a guard.
    guard: Option<OwnedFd>,
    /// What of it has been read and is not a whole line yet.
    guard_pending: Vec<u8>,
    guard_refused: Vec<GuardRefusal>,
    guard_refused_total: u64,
    /// Bytes read from the guard's pipe so far.
    guard_bytes: u64,
    /// More than [`GUARD_BYTES_MAX`] came: the pipe was closed.
    guard_cut: bool,
    /// Wall 6's proxy, with `net.mode = "proxy"`.
    proxy: Option<proxy::Proxy>,
    rusage: Option<(u32, u32)>,
    /// A warm sandbox's request socket, until the request is sent.
    request: Option<OwnedFd>,
    /// Environment the supervisor adds to the plan's (the delegation and
    /// guard descriptors' numbers), for a warm sandbox's request.
    extra_env: Vec<String>,
    /// Init said the warm sandbox waits for its request.
    warm: bool,
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

/// The plan's rlimits as `setrlimit` takes them: (resource, soft, hard).
fn rlimits(list: &[Rlimit]) -> Vec<(libc::__rlimit_resource_t, u64, u64)> {
    list.iter()
        .map(|l| {
            let resource = match l.resource {
                Resource::Data => libc::RLIMIT_DATA,
                Resource::Nproc => libc::RLIMIT_NPROC,
                Resource::Cpu => libc::RLIMIT_CPU,
                Resource::Fsize => libc::RLIMIT_FSIZE,
                Resource::Nofile => libc::RLIMIT_NOFILE,
                Resource::Core => libc::RLIMIT_CORE,
            };
            (resource, l.soft, l.hard)
        })
        .collect()
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
        shared_net: -1,
        fs: mounts::compile(&plan.mounts),
        workdir: cstring(plan.workdir.as_os_str().as_bytes()),
        program: cstring(plan.program.as_os_str().as_bytes()),
        argv_store,
        argv,
        env_store,
        envp,
        landlock,
        rlimits: [rlimits(&plan.rlimits.alone), rlimits(&plan.rlimits.in_cgroup)],
        user_limits: plan
            .user_limits
            .iter()
            .map(|l| {
                (
                    cstring(format!("/proc/sys/user/{}", l.name).as_bytes()),
                    l.value.to_string().into_bytes(),
                )
            })
            .collect(),
        warm: None,
        seccomp_notify: plan.seccomp.has_listener(),
        seccomp_allows_futex: plan.seccomp.allow.iter().any(|n| n == "futex")
            && !plan.seccomp.recorded.iter().any(|(n, _)| n == "futex"),
        seccomp: plan
            .seccomp
            .program
            .iter()
            .map(|&(code, jt, jf, k)| crate::seccomp::Insn { code, jt, jf, k })
            .collect(),
    };
    (spec, landlock_describe)
}

pub use crate::policy::DELEGATE_ENV;

/// Forks the sandbox for `plan`. The caller's stdin becomes the MBU's; its
/// stdout and stderr go through the supervisor, which passes them on up to the
/// output limit. Signals in [`child::FORWARDED_SIGNALS`] should be blocked by
/// the caller first (see [`SignalForwarder`]) so that none is lost during setup.
///
/// The sandbox dies with the calling *thread* (`PR_SET_PDEATHSIG`): call this
/// How long a cancelled MBU has, after SIGTERM, before it is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// from a thread that outlives the execution.
pub fn spawn(plan: &SetupPlan) -> Result<Running, SandboxError> {
    spawn_with(plan, Inherit::default())
}

/// Descriptors the sandbox's processes inherit besides their pipes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inherit<'a> {
    /// A socket to the supervisor's delegation service: the MBU's, its
    /// number in `NINEWALL_DELEGATE_FD`.
    pub delegate: Option<RawFd>,
    /// The lock on the execution's own identity (`crate::identity`): the
    /// outer child's and init's, so that it is held until they are gone.
    pub identity: Option<RawFd>,
    /// The prepared (idmapped) workspace tree the plan's
    /// `Mount::Workspace` attaches: init's.
    pub workspace: Option<RawFd>,
    /// Build a warm sandbox: without its workspace (the mount at this path
    /// is left to the request), waiting for [`Running::begin`].
    pub warm: Option<&'a std::path::Path>,
}

/// Most bytes of a warm sandbox's request (program, workspace, argv, envp):
/// what `execve` itself takes at most on this kernel's default stack limit.
pub const WARM_REQUEST_BYTES: usize = 2 << 20;
/// Most argv and envp strings in a warm sandbox's request.
pub const WARM_REQUEST_STRINGS: usize = 1 << 16;

/// [`spawn`], with `inherit`'s descriptors passed on.
pub fn spawn_with(plan: &SetupPlan, inherit: Inherit<'_>) -> Result<Running, SandboxError> {
    let delegate = inherit.delegate;
    let started = Instant::now();
    let (mut spec, landlock_describe) = match inherit.warm {
        Some(workspace) => prepare_warm(plan, workspace),
        None => prepare(plan),
    };
    let spawn_err = |what| move |source| SandboxError::Spawn { what, source };
    // Wall 2's report pipe: the guard's refusals, one JSON line each.
    let guard = plan
        .has_guard()
        .then(sys::pipe_cloexec)
        .transpose()
        .map_err(spawn_err("creating the interpreter guard's report pipe"))?;
    let mut extra_env = Vec::new();
    if let Some(fd) = delegate {
        extra_env.push(format!("{DELEGATE_ENV}={fd}"));
    }
    if let Some((_, w)) = &guard {
        extra_env.push(format!("{}={}", crate::interpreter::GUARD_FD_ENV, w.as_raw_fd()));
    }
    if !extra_env.is_empty() {
        spec.env_store.extend(extra_env.iter().map(|e| cstring(e.as_bytes())));
        spec.envp = spec
            .env_store
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
    }
    // Kept open until the outer child has joined it (it is forked below).
    let shared_net = netns::shared_for(plan).map_err(SandboxError::Network)?;
    if let Some((fd, _)) = &shared_net {
        spec.shared_net = fd.as_raw_fd();
    }
    let (report_r, report_w) = sys::pipe_cloexec().map_err(spawn_err("creating the report pipe"))?;
    let (sync_r, sync_w) = sys::pipe_cloexec().map_err(spawn_err("creating the sync pipe"))?;
    let (out_r, out_w) = sys::pipe_cloexec().map_err(spawn_err("creating the stdout pipe"))?;
    let (err_r, err_w) = sys::pipe_cloexec().map_err(spawn_err("creating the stderr pipe"))?;
    let (notify_r, notify_w) = sys::socketpair().map_err(spawn_err("creating the seccomp listener socket"))?;
    // The listener's thread starts before the fork, so that the MBU's first
    // recorded access does not wait for it; nothing runs if it cannot start.
    let notifications = notify::Notifier::for_plan(plan)
        .map(|n| n.start(notify_r))
        .transpose()
        .map_err(spawn_err("starting the seccomp listener's thread"))?;
    // Wall 6's proxy: its thread waits for the listener the outer child
    // makes on the sandbox's loopback.
    let proxy_pair = (plan.net == crate::policy::NetMode::Proxy)
        .then(sys::socketpair)
        .transpose()
        .map_err(spawn_err("creating the proxy's handoff socket"))?;
    let (proxy_ours, proxy_theirs) = match proxy_pair {
        Some((ours, theirs)) => (Some(ours), Some(theirs)),
        None => (None, None),
    };
    let proxy = proxy_ours
        .map(|ours| proxy::Proxy::start(ours, plan.proxy.clone(), plan.limits))
        .transpose()
        .map_err(spawn_err("starting the proxy's thread"))?;
    let (request, request_theirs) = match spec.warm {
        Some(_) => {
            // A stream: the request is longer than one read takes.
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(spawn_err("creating the warm sandbox's request socket"))?;
            (Some(OwnedFd::from(ours)), Some(OwnedFd::from(theirs)))
        }
        None => (None, None),
    };
    let pid = sys::fork().map_err(|e| SandboxError::Spawn {
        what: "fork",
        source: std::io::Error::from_raw_os_error(e),
    })?;
    if pid == 0 {
        let fds = ChildFds {
            report: report_w.as_raw_fd(),
            sync: sync_r.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            notify: notify_w.as_raw_fd(),
            delegate: delegate.unwrap_or(-1),
            identity: inherit.identity.unwrap_or(-1),
            workspace: inherit.workspace.unwrap_or(-1),
            guard: guard.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            proxy: proxy_theirs.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            request: request_theirs.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        };
        child::outer(&mut spec, fds);
    }
    drop((report_w, sync_r, out_w, err_w, notify_w, proxy_theirs, request_theirs));
    let guard = guard.map(|(r, _w)| r);
    let shared_net = shared_net.map(|(_, path)| path);
    Ok(Running {
        outer: pid,
        report: report_r,
        sync: Some(sync_w),
        maps_written: false,
        cgroup_word_sent: false,
        released: false,
        emptied: false,
        stdout: Some(out_r),
        stderr: Some(err_r),
        notifications,
        refused: std::collections::BTreeMap::new(),
        shared_net,
        ids: plan.ids,
        init: None,
        fs_describe: spec.fs.describe,
        landlock_describe,
        user_limits_describe: plan
            .user_limits
            .iter()
            .map(|l| format!("writing {} to /proc/sys/user/{}", l.value, l.name))
            .collect(),
        guard,
        guard_pending: Vec::new(),
        guard_refused: Vec::new(),
        guard_refused_total: 0,
        guard_bytes: 0,
        guard_cut: false,
        proxy,
        failure: None,
        end: None,
        interrupted: None,
        limits: plan.limits,
        cgroups: plan.cgroups.clone(),
        started,
        cgroup: None,
        resources: String::new(),
        limit: None,
        output_bytes: 0,
        truncated: false,
        unsent: [Vec::new(), Vec::new()],
        requester: None,
        cancel_kill_at: None,
        recorder_cpu_ns: 0,
        rusage: None,
        request,
        extra_env,
        warm: false,
    })
}

/// [`prepare`] for a warm sandbox: the mount at `workspace` only as a mount
/// point (the request says what goes there), and room for the request.
fn prepare_warm(plan: &SetupPlan, workspace: &std::path::Path) -> (ChildSpec, Vec<String>) {
    let mut without = plan.clone();
    without.mounts.retain(|m| m.inside() != workspace);
    without.mounts.push(crate::plan::Mount::Dir {
        target: workspace.to_path_buf(),
    });
    let (mut spec, describe) = prepare(&without);
    spec.warm = Some(child::WarmSpec {
        bytes: vec![0; WARM_REQUEST_BYTES],
        pointers: vec![std::ptr::null(); WARM_REQUEST_STRINGS],
        layout: (0, 0, 0),
    });
    (spec, describe)
}

fn write_proc(pid: i32, name: &str, content: &str) -> Result<(), SandboxError> {
    let file = format!("/proc/{pid}/{name}");
    std::fs::write(&file, content).map_err(|source| SandboxError::IdMap { file, source })
}

/// What is left of a sandbox whose end is known: init and the outer child,
/// exiting and freeing the namespaces (nothing of the MBU runs: its pid
/// namespace holds init alone), and its cgroup. Dropping it reaps the one and
/// then removes the other; a caller keeps it while it records the end, so
/// that the kernel's teardown overlaps with the disk.
pub struct Remains {
    outer: Option<i32>,
    cgroup: Option<Cgroup>,
    unsent: Unsent,
}

/// Output the sandbox wrote that was not passed on by the time it ended
/// (the reader was slow): at most one read per stream.
#[derive(Debug, Default)]
pub struct Unsent([Vec<u8>; 2]);

impl Unsent {
    /// Passes it on, waiting for the reader as long as it takes; called once
    /// the end is recorded, so that a reader that never reads delays nothing
    /// but itself. A reader that is gone gets nothing.
    pub fn pass_on(self) {
        for (fd, data) in [1, 2].into_iter().zip(self.0) {
            let _ = sys::write_all(fd, &data);
        }
    }
}

impl Remains {
    /// Waits for the outer child; its wait status.
    fn reap(&mut self) -> sys::SysResult<i32> {
        match self.outer.take() {
            Some(pid) => sys::waitpid(pid, 0).map(|(_, status)| status),
            None => Ok(0),
        }
    }
}

impl Drop for Remains {
    fn drop(&mut self) {
        let _ = self.reap();
        // The cgroup can be removed only once the outer child has left it.
        self.cgroup.take();
    }
}

impl Remains {
    /// The output not yet passed on.
    pub fn take_unsent(&mut self) -> Unsent {
        std::mem::take(&mut self.unsent)
    }

    /// Reaps and removes them on a thread of their own, so that the caller's
    /// end record goes to disk meanwhile; the guard waits for that thread
    /// when dropped, so nothing outlives the caller. (If no thread can be
    /// made, they are reaped and removed here and now.)
    pub fn release(self) -> Released {
        Released(std::thread::Builder::new().spawn(move || drop(self)).ok())
    }
}

/// [`Remains::release`]'s guard: dropping it waits until they are gone.
pub struct Released(Option<std::thread::JoinHandle<()>>);

impl Drop for Released {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
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

impl AsRawFd for SignalForwarder {
    /// The signalfd: readable when a forwarded signal is pending.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Running {
    /// Host pid of the sandbox's outer child (which holds the identity's
    /// lock with the supervisor).
    pub fn outer_pid(&self) -> i32 {
        self.outer
    }

    /// Host pid of the sandbox's init, once started.
    pub fn init_pid(&self) -> Option<i32> {
        self.init
    }

    fn handle(&mut self, r: Report) -> Result<(), SandboxError> {
        match r {
            Report::NamespacesMade => {
                let pid = self.outer;
                let ids = self.ids;
                if !ids.clear_groups {
                    write_proc(pid, "setgroups", "deny")?;
                }
                write_proc(pid, "uid_map", &format!("{} {} 1\n", ids.inside_uid, ids.host_uid))?;
                write_proc(pid, "gid_map", &format!("{} {} 1\n", ids.inside_gid, ids.host_gid))?;
                self.send_word(child::WORD_MAPS_WRITTEN)?;
                self.maps_written = true;
            }
            Report::InitStarted { pid } => self.init = Some(pid),
            Report::Failed { step, index, errno } => {
                if self.failure.is_none() {
                    let list = match step {
                        Step::Filesystem => Some(&self.fs_describe),
                        Step::LandlockRule => Some(&self.landlock_describe),
                        Step::UserLimits => Some(&self.user_limits_describe),
                        _ => None,
                    };
                    let what = match (list, &self.shared_net) {
                        (Some(l), _) => l
                            .get(index as usize)
                            .cloned()
                            .unwrap_or_else(|| format!("operation {index}")),
                        (None, Some(path)) if step == Step::JoinNetwork => {
                            format!("{} {}", step.describe(), path.display())
                        }
                        (None, _) => step.describe().to_string(),
                    };
                    self.failure = Some(SetupFailure { step, what, errno });
                }
            }
            Report::Exited { code } => self.end = Some(End::Exited(code)),
            Report::Signaled { signal } => self.end = Some(End::Signaled(signal)),
            Report::Usage { cpu_ms, maxrss_kb } => self.rusage = Some((cpu_ms, maxrss_kb)),
            Report::Emptied => self.emptied = true,
            Report::Warm => self.warm = true,
        }
        Ok(())
    }

    fn send_word(&self, word: u8) -> Result<(), SandboxError> {
        match &self.sync {
            Some(sync) => sys::write_all(sync.as_raw_fd(), &[word]).map_err(|e| SandboxError::IdMap {
                file: "the sync pipe".into(),
                source: std::io::Error::from_raw_os_error(e),
            }),
            None => Ok(()),
        }
    }

    /// Reads and handles one report; `false` when the sandbox's processes are
    /// gone (`wait` finds out why).
    fn next_report(&mut self) -> Result<bool, SandboxError> {
        // Reports are whole records written atomically; reading exactly one
        // at a time leaves `pump` aligned.
        let mut record = [0u8; RECORD];
        match sys::read_full(self.report.as_raw_fd(), &mut record) {
            Ok(RECORD) => {
                if let Some(r) = Report::decode(&record) {
                    self.handle(r)?;
                }
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => Err(SandboxError::Report(std::io::Error::from_raw_os_error(e))),
        }
    }

    /// Lets the sandbox build its walls up to the MBU's own code: waits for the
    /// outer child's namespaces and writes the id maps; makes the cgroup while
    /// the outer child switches ids and init builds the filesystem view (a
    /// cgroup costs ~0.5 ms to make on cgroup v1); then moves the outer child
    /// and init into it before init forks the MBU, which is born there. The
    /// MBU then waits for [`Running::wait`], so a caller can make its start
    /// record durable meanwhile. A setup failure is kept for `wait` to report.
    pub fn enter_cgroup(&mut self) -> Result<(), SandboxError> {
        // A warm sandbox is in its cgroup already.
        if self.cgroup_word_sent {
            return Ok(());
        }
        while !self.maps_written && self.failure.is_none() {
            if !self.next_report()? {
                return Ok(());
            }
        }
        if self.failure.is_some() {
            return Ok(());
        }
        let mut unfit = None;
        let made = match self.cgroups.lent.as_deref() {
            Some(name) => Cgroup::adopt(&self.cgroups, name, &self.limits).or_else(|why| {
                unfit = Some(why);
                Cgroup::create(&self.cgroups, &self.limits)
            }),
            None => Cgroup::create(&self.cgroups, &self.limits),
        };
        match made {
            Ok(cg) => {
                self.resources = format!("{} (memory, pids, cpu time) and rlimits", cg.describe());
                if let Some(why) = unfit {
                    self.resources.push_str(&format!("; made, not lent: {why}"));
                }
                self.cgroup = Some(cg);
            }
            Err(why) if self.limits.cgroups == CgroupMode::Strict => {
                // Nothing of the MBU exists: init waits for the word below.
                return Err(SandboxError::CgroupRequired(why));
            }
            Err(why) => self.resources = format!("rlimits only: no cgroup could be made ({why})"),
        }
        while self.init.is_none() && self.failure.is_none() {
            if !self.next_report()? {
                return Ok(());
            }
        }
        let word = match (&self.cgroup, self.init) {
            (Some(cg), Some(init)) => {
                cg.add(self.outer).map_err(SandboxError::Cgroup)?;
                cg.add(init).map_err(SandboxError::Cgroup)?;
                child::WORD_IN_CGROUP
            }
            (None, Some(_)) => child::WORD_NO_CGROUP,
            // A setup step failed: `wait` reports it.
            (_, None) => return Ok(()),
        };
        self.send_word(word)?;
        self.cgroup_word_sent = true;
        if self.released {
            self.send_recorded();
        }
        Ok(())
    }

    /// Builds a warm sandbox up to its request: the namespaces, the id maps,
    /// the filesystem view without the workspace, the cgroup (the outer
    /// child and init are moved into it now, not while a caller waits).
    /// `Err` says which wall could not be built; the sandbox is then
    /// abandoned by the caller.
    pub fn warm_up(&mut self) -> Result<(), SandboxError> {
        self.enter_cgroup()?;
        while !self.warm && self.failure.is_none() {
            if !self.next_report()? {
                break;
            }
        }
        match (&self.failure, self.warm) {
            (Some(f), _) => Err(SandboxError::Warm(f.to_string())),
            (None, true) => Ok(()),
            (None, false) => Err(SandboxError::Warm("its processes ended before it was built".into())),
        }
    }

    /// Gives a warm sandbox its request: the program, argv and the plan's
    /// environment, and what goes at `workspace` (the plan's mount there: a
    /// tmpfs, or `tree`, the detached workspace). The execution's clock starts
    /// now. The sandbox goes on as a cold one does from sync word 2: its MBU
    /// waits for [`Running::wait`].
    pub fn begin(
        &mut self,
        plan: &SetupPlan,
        workspace: &std::path::Path,
        tree: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), SandboxError> {
        use crate::plan::Mount;
        let unusable = |why: &str| SandboxError::Warm(why.to_string());
        let (kind, options) = match (plan.mounts.iter().find(|m| m.inside() == workspace), tree) {
            (Some(Mount::Tmpfs { size, mode, .. }), None) => {
                (child::WORKSPACE_TMPFS, format!("mode={mode:o},size={size}"))
            }
            (Some(Mount::Workspace { .. }), Some(_)) => (child::WORKSPACE_TREE, String::new()),
            _ => return Err(unusable("its workspace can only be bound before the sandbox is built")),
        };
        let env: Vec<String> = plan
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.extra_env.iter().cloned())
            .collect();
        let mut body = Vec::new();
        for s in [
            plan.program.as_os_str().as_bytes(),
            workspace.as_os_str().as_bytes(),
            options.as_bytes(),
        ]
        .into_iter()
        .chain(plan.argv.iter().map(String::as_bytes))
        .chain(env.iter().map(String::as_bytes))
        {
            if s.contains(&0) {
                return Err(unusable("a string of the request contains a NUL byte"));
            }
            body.extend_from_slice(s);
            body.push(0);
        }
        if body.len() > WARM_REQUEST_BYTES || plan.argv.len() + env.len() + 2 > WARM_REQUEST_STRINGS {
            return Err(unusable("the request's arguments and environment are too large"));
        }
        let mut message = Vec::with_capacity(child::REQUEST_HEADER + body.len());
        for n in [body.len(), plan.argv.len(), env.len(), kind as usize] {
            message.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_ne_bytes());
        }
        message.extend_from_slice(&body);
        let socket = self
            .request
            .take()
            .ok_or_else(|| unusable("it was already given a request"))?;
        let fd = tree.map_or(-1, |t| t.as_raw_fd());
        let sent = sys::send_with_fd(socket.as_raw_fd(), &message, fd)
            .and_then(|n| sys::write_all(socket.as_raw_fd(), message.get(n..).unwrap_or_default()));
        if let Err(e) = sent {
            return Err(SandboxError::Warm(format!(
                "sending it the request: {}",
                std::io::Error::from_raw_os_error(e)
            )));
        }
        self.started = Instant::now();
        Ok(())
    }

    /// Lets the MBU exec: the caller has made its start record durable.
    fn release(&mut self) {
        self.released = true;
        if self.cgroup_word_sent {
            self.send_recorded();
        }
    }

    /// Sync word 3. Nobody may be left to read it: a setup step of the MBU
    /// failed meanwhile (`EPIPE`), and its report says which; that is the
    /// error to tell, so this one is not.
    fn send_recorded(&mut self) {
        let _ = self.send_word(child::WORD_RECORDED);
        self.sync.take();
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

    /// Kills every process of the sandbox: init's death takes its pid
    /// namespace with it; before init exists, the outer child's death takes
    /// init (parent-death signal).
    fn kill_all(&mut self, limit: Limit) {
        if self.limit.is_none() {
            self.limit = Some(limit);
        }
        let _ = sys::kill(self.init.unwrap_or(self.outer), libc::SIGKILL);
    }

    /// Gives the sandbox up before it was told to go: it exits without
    /// running anything (its sync pipe closes), and is reaped; the cgroup is
    /// removed.
    pub fn abandon(mut self) {
        self.sync.take();
        let _ = sys::kill(self.outer, libc::SIGKILL);
        let _ = sys::waitpid(self.outer, 0);
    }

    /// Where the shared empty network namespace this sandbox joined is
    /// mounted; `None` when it has one of its own (see [`netns`]).
    pub fn shared_network(&self) -> Option<&std::path::Path> {
        self.shared_net.as_deref()
    }

    /// How wall 9 is built for this run: the cgroup, or why only rlimits.
    pub fn resources(&self) -> &str {
        &self.resources
    }

    /// Lets the MBU exec, then waits for the end of the execution, passing
    /// output on and forwarding signals from `signals`, and enforcing the
    /// wall-clock, CPU and output limits.
    pub fn wait(
        mut self,
        signals: Option<&SignalForwarder>,
        on_event: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(Outcome, Remains), SandboxError> {
        if !self.maps_written {
            self.enter_cgroup()?;
        }
        self.release();
        let result = self.pump(signals, on_event);
        self.drain_guard();
        // Nothing of the sandbox runs any more (or it is being killed): its
        // connections end with it.
        let net = self.proxy.take().map(|p| {
            let (rest, report) = p.finish();
            if !rest.is_empty() {
                on_event(Event::Connections(rest));
            }
            report
        });
        if result.is_err() {
            let _ = sys::kill(self.outer, libc::SIGKILL);
        }
        self.sync.take();
        // Init says when it has killed and reaped everything but itself; its
        // exit and the outer child's, which free the namespaces, are left to
        // `Remains`. Otherwise (a failure, a report missing) the outer child,
        // which exits only after init and so after the whole pid namespace,
        // is reaped here.
        let mut remains = Remains {
            outer: Some(self.outer),
            cgroup: None,
            unsent: Unsent(std::mem::take(&mut self.unsent)),
        };
        let status = match (self.emptied, &result) {
            (true, Ok(())) => None,
            _ => match remains.reap() {
                Ok(status) => Some(status),
                Err(e) => return Err(SandboxError::Report(std::io::Error::from_raw_os_error(e))),
            },
        };
        result?;
        let stats = self.cgroup.as_ref().map(Cgroup::stats).unwrap_or_default();
        remains.cgroup = self.cgroup.take();
        let end = if let Some(f) = self.failure.take() {
            End::SetupFailed(f)
        } else if let Some(end) = self.end.take() {
            end
        } else if let Some(sig) = self.interrupted.or(self.limit.map(|_| libc::SIGKILL)) {
            End::Signaled(sig)
        } else {
            let status = match status {
                Some(s) => s,
                None => remains.reap().unwrap_or(0),
            };
            return Err(SandboxError::Lost { status });
        };
        let usage = Usage {
            wall_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cpu_ms: stats
                .cpu_ns
                .map(|ns| ns / 1_000_000)
                .or(self.rusage.map(|(cpu, _)| u64::from(cpu))),
            peak_memory: stats.peak_memory.or(self.rusage.map(|(_, kb)| u64::from(kb) * 1024)),
            output_bytes: self.output_bytes,
            output_truncated: self.truncated,
            recorder_cpu_ms: self.recorder_cpu_ns / 1_000_000,
        };
        let limit = self.limit.or_else(|| match &end {
            End::Signaled(libc::SIGXCPU) => Some(Limit::Cpu),
            End::Signaled(libc::SIGXFSZ) => Some(Limit::FileSize),
            End::Signaled(libc::SIGKILL) if stats.oom_kills > 0 => Some(Limit::Oom),
            End::Signaled(libc::SIGKILL) if usage.cpu_ms.is_some_and(|ms| ms >= self.limits.cpu_seconds * 1000) => {
                Some(Limit::Cpu)
            }
            End::Exited(0) => None,
            _ if stats.oom_kills > 0 => Some(Limit::Oom),
            _ if stats.pids_max_hits > 0 => Some(Limit::Pids),
            _ => None,
        });
        let mut refused: Vec<(String, u64)> = self
            .refused
            .iter()
            .map(|(nr, n)| (crate::seccomp::syscall_name(*nr), *n))
            .collect();
        refused.sort();
        Ok((
            Outcome {
                end,
                limit,
                usage,
                resources: self.resources,
                refused,
                guard_refused: self.guard_refused,
                guard_refused_total: self.guard_refused_total,
                guard_cut: self.guard_cut,
                net,
                disk: None,
            },
            remains,
        ))
    }

    /// Reads what the interpreter guard reported: whole lines become
    /// refusals, at most [`GUARD_REPORTS_KEPT`] kept, all counted. A line
    /// longer than 4 KiB is no report (the guard writes far less) and is
    /// dropped, so the buffer stays bounded whatever the sandbox writes.
    fn read_guard(&mut self, chunk: &mut [u8]) {
        let Some(fd) = self.guard.as_ref().map(std::os::fd::AsRawFd::as_raw_fd) else {
            return;
        };
        let n = match sys::read_once(fd, chunk) {
            Ok(0) | Err(_) => {
                self.guard = None;
                return;
            }
            Ok(n) => n,
        };
        // The guard writes at most 1,000 short lines; more is user code
        // (with `os` allowed) writing to the descriptor: read no further.
        self.guard_bytes += n as u64;
        if self.guard_bytes > GUARD_BYTES_MAX {
            self.guard = None;
            self.guard_cut = true;
            self.guard_pending.clear();
            return;
        }
        self.guard_pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        while let Some(end) = self.guard_pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.guard_pending.drain(..=end).collect();
            if let Some(r) = GuardRefusal::parse(&line, at) {
                self.guard_refused_total += 1;
                if self.guard_refused.len() < GUARD_REPORTS_KEPT {
                    self.guard_refused.push(r);
                }
            }
        }
        if self.guard_pending.len() > 4096 {
            self.guard_pending.clear();
        }
    }

    /// What the guard wrote and the loop has not read yet (its pipe is held
    /// open by init until the very end, so it never reads as closed).
    fn drain_guard(&mut self) {
        let mut chunk = [0u8; 4096];
        while let Some(fd) = self.guard.as_ref().map(std::os::fd::AsRawFd::as_raw_fd) {
            let mut fds = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            if sys::poll_readable(&mut fds, 0).is_err() || fds[0].revents & libc::POLLIN == 0 {
                break;
            }
            self.read_guard(&mut chunk);
        }
    }

    /// Passes a chunk of the MBU's output on, up to the output limit.
    /// Passes on what our stream `to` (1 or 2), which poll found writable,
    /// takes without blocking: at most `PIPE_BUF` bytes, which a writable
    /// pipe takes whole. A reader that is gone gets nothing more (the bytes
    /// still counted against the limit).
    fn send_some(&mut self, to: i32) {
        let Some(unsent) = self.unsent.get_mut(if to == 1 { 0 } else { 1 }) else {
            return;
        };
        let piece = unsent.get(..unsent.len().min(libc::PIPE_BUF)).unwrap_or_default();
        match sys::write_once(to, piece) {
            Ok(n) => {
                unsent.drain(..n.min(unsent.len()));
            }
            Err(libc::EAGAIN) => {}
            Err(_) => unsent.clear(),
        }
    }

    /// Whoever asked for the run is gone: the MBU gets SIGTERM (through
    /// init), and SIGKILL after [`CANCEL_GRACE`] if it is still there.
    fn cancel(&mut self) {
        self.requester = None;
        if self.limit.is_none() {
            self.limit = Some(Limit::Cancelled);
        }
        self.forward(libc::SIGTERM);
        self.cancel_kill_at = Some(Instant::now() + CANCEL_GRACE);
    }

    /// Ends the run when whoever asked for it is gone: `requester` is the
    /// write end of a pipe it reads (the outcome pipe of `run
    /// --outcome-fd`), which reports an error once nobody can read it.
    pub fn cancel_when_gone(&mut self, requester: RawFd) {
        self.requester = Some(requester);
    }

    /// Takes one read of the sandbox's stream `to` (1 or 2) to pass on, as
    /// much of it as the output limit allows.
    fn pass_output(&mut self, to: i32, data: &[u8]) {
        let allowance = self.limits.output.saturating_sub(self.output_bytes);
        let n = data.len().min(usize::try_from(allowance).unwrap_or(usize::MAX));
        if let Some(unsent) = self.unsent.get_mut(if to == 1 { 0 } else { 1 }) {
            unsent.extend_from_slice(data.get(..n).unwrap_or_default());
        }
        self.output_bytes += n as u64;
        if n < data.len() {
            self.truncated = true;
            self.kill_all(Limit::Output);
        }
    }

    fn pump(
        &mut self,
        signals: Option<&SignalForwarder>,
        on_event: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), SandboxError> {
        let deadline = self.started + Duration::from_secs(self.limits.wall_seconds);
        let cpu_budget_ns = self.limits.cpu_seconds.saturating_mul(1_000_000_000);
        let report_fd = self.report.as_raw_fd();
        let mut report_open = true;
        let mut buf = [0u8; RECORD * 16];
        let mut pending: Vec<u8> = Vec::with_capacity(RECORD * 16);
        let mut chunk = vec![0u8; 64 * 1024];
        // The cgroup's CPU time is read every 100 ms, not on every wake-up: a
        // busy MBU wakes this loop once per recorded file access.
        let mut next_cpu_check = Instant::now();
        // Once the sandbox is gone, the listener's thread ends within
        // microseconds (the filter has no users left); this long is a fault.
        let mut gone_since: Option<Instant> = None;
        loop {
            let out_fd = self.stdout.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
            let err_fd = self.stderr.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
            let wake_fd = self.notifications.as_ref().map(|n| n.wake.as_raw_fd());
            let now = Instant::now();
            if (!report_open || self.emptied) && out_fd.is_none() && err_fd.is_none() {
                if wake_fd.is_none() {
                    return Ok(());
                }
                if now.duration_since(*gone_since.get_or_insert(now)) > Duration::from_secs(2) {
                    // Its accesses and refusals are not known; the thread is
                    // left behind (it ends with the process).
                    self.notifications.take();
                    return Err(SandboxError::Report(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the seccomp listener's thread did not end with the sandbox",
                    )));
                }
            }
            if now >= deadline && self.limit.is_none() {
                self.kill_all(Limit::Timeout);
            }
            if self.cancel_kill_at.is_some_and(|at| now >= at) {
                self.cancel_kill_at = None;
                let _ = sys::kill(self.init.unwrap_or(self.outer), libc::SIGKILL);
            }
            if let Some(n) = &self.notifications {
                self.recorder_cpu_ns = n.cpu_ns.load(std::sync::atomic::Ordering::Relaxed);
            }
            if self.limit.is_none() && now >= next_cpu_check {
                next_cpu_check = now + Duration::from_millis(100);
                // The sandbox's CPU and what recording it cost the supervisor.
                // The sandbox's CPU and what recording it and relaying its
                // connections cost the supervisor.
                let sandbox = self.cgroup.as_ref().and_then(Cgroup::cpu_ns);
                let charged = self.recorder_cpu_ns + self.proxy.as_ref().map_or(0, proxy::Proxy::cpu_ns);
                if sandbox.unwrap_or(0) + charged > cpu_budget_ns && (sandbox.is_some() || charged > 0) {
                    self.kill_all(Limit::Cpu);
                }
            }
            let mut timeout = deadline.saturating_duration_since(now);
            if self.cgroup.is_some() {
                timeout = timeout.min(Duration::from_millis(100));
            }
            if self.limit.is_some() || gone_since.is_some() {
                // Killed, or gone: just drain until everything has closed.
                timeout = Duration::from_millis(100);
            }
            // A stream of the sandbox is read only once what was read of it
            // has been passed on; meanwhile our reader is waited for. Once
            // the sandbox is gone, what is left in its pipes (no more than
            // a pipe holds) is read all the same, to see them end.
            let gone = !report_open || self.emptied;
            let [unsent_out, unsent_err] = [0, 1].map(|i| self.unsent.get(i).is_some_and(|u| !u.is_empty()));
            let [read_out, read_err] = [unsent_out, unsent_err].map(|unsent| !unsent || gone);
            let watch = [
                (Some(report_fd).filter(|_| report_open), libc::POLLIN),
                (signals.map(|s| s.fd.as_raw_fd()), libc::POLLIN),
                (out_fd.filter(|_| read_out), libc::POLLIN),
                (err_fd.filter(|_| read_err), libc::POLLIN),
                (wake_fd, libc::POLLIN),
                (Some(1).filter(|_| unsent_out), libc::POLLOUT),
                (Some(2).filter(|_| unsent_err), libc::POLLOUT),
                // Only POLLERR/POLLHUP: the requester's read end closed.
                (self.requester, 0),
                (self.guard.as_ref().map(std::os::fd::AsRawFd::as_raw_fd), libc::POLLIN),
                (self.proxy.as_ref().map(proxy::Proxy::wake_fd), libc::POLLIN),
            ];
            let mut fds: Vec<libc::pollfd> = watch
                .iter()
                .filter_map(|&(fd, events)| fd.map(|fd| libc::pollfd { fd, events, revents: 0 }))
                .collect();
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX).max(1);
            sys::poll_readable(&mut fds, ms).map_err(SandboxError::Report)?;
            let ready = |fd: Option<i32>| {
                fd.and_then(|fd| fds.iter().find(|p| p.fd == fd))
                    .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLOUT | libc::POLLHUP | libc::POLLERR) != 0)
            };
            if ready(self.requester) {
                self.cancel();
            }
            if ready(self.guard.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)) {
                self.read_guard(&mut chunk);
            }
            if let Some(p) = self.proxy.as_ref().filter(|p| ready(Some(p.wake_fd()))) {
                let ended = p.take();
                if !ended.is_empty() {
                    on_event(Event::Connections(ended));
                }
            }
            if unsent_out && ready(Some(1)) {
                self.send_some(1);
            }
            if unsent_err && ready(Some(2)) {
                self.send_some(2);
            }
            // Reports first: a signal or a line of output that arrived with
            // them must see their effect (init's pid, above all).
            if report_open && ready(Some(report_fd)) {
                let n = sys::read_once(report_fd, &mut buf)
                    .map_err(|e| SandboxError::Report(std::io::Error::from_raw_os_error(e)))?;
                if n == 0 {
                    report_open = false;
                }
                pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                while pending.len() >= RECORD {
                    let mut record = [0u8; RECORD];
                    record.copy_from_slice(pending.get(..RECORD).unwrap_or(&[0; RECORD]));
                    pending.drain(..RECORD);
                    if let Some(r) = Report::decode(&record) {
                        self.handle(r)?;
                    }
                }
            }
            if let Some(s) = signals.filter(|s| ready(Some(s.fd.as_raw_fd()))) {
                while let Some(sig) = sys::read_signal(s.fd.as_raw_fd()) {
                    self.forward(sig);
                }
            }
            if let Some(fd) = wake_fd.filter(|&fd| ready(Some(fd))) {
                // One byte per batch; end of file when the thread has ended,
                // after its last batch. (A failed read cannot say that it
                // has: waiting for it then could wait for the whole run.)
                let read = sys::read_once(fd, &mut buf);
                if let Some(n) = &self.notifications {
                    // `false`: the recorder's budget is spent and the profile
                    // says to end the run then.
                    let mut go_on = true;
                    for e in n.take() {
                        go_on &= on_event(Event::File(e));
                    }
                    if !go_on {
                        self.kill_all(Limit::Records);
                    }
                }
                match read {
                    Ok(0) => {
                        if let Some(n) = self.notifications.take() {
                            let cpu_ns = std::sync::Arc::clone(&n.cpu_ns);
                            self.refused = n.finish();
                            self.recorder_cpu_ns = cpu_ns.load(std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(SandboxError::Report(std::io::Error::from_raw_os_error(e))),
                }
            }
            for (fd, to) in [(out_fd.filter(|_| read_out), 1), (err_fd.filter(|_| read_err), 2)] {
                if !ready(fd) {
                    continue;
                }
                let Some(fd) = fd else { continue };
                match sys::read_once(fd, &mut chunk) {
                    Ok(0) | Err(_) => {
                        if to == 1 {
                            self.stdout.take();
                        } else {
                            self.stderr.take();
                        }
                    }
                    Ok(n) => {
                        let data = chunk.get(..n).unwrap_or_default().to_vec();
                        self.pass_output(to, &data);
                    }
                }
            }
        }
    }
}

/// Runs `plan` to completion with the caller's stdio, forwarding signals;
/// file events are dropped.
pub fn run(plan: &SetupPlan, signals: Option<&SignalForwarder>) -> Result<Outcome, SandboxError> {
    spawn(plan)?
        .wait(signals, &mut |_: Event| true)
        .map(|(outcome, mut remains)| {
            remains.take_unsent().pass_on();
            outcome
        })
}

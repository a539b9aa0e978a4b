//! The three processes of a sandbox, from fork to exec.
//!
//! Walls 3 to 9 are built here, in this order: 6 (network namespace), 3 (user
//! namespace, ids, capabilities, `no_new_privs`), 5 (pid, ipc, uts, cgroup,
//! time namespaces), 4 (the filesystem view), 9 (rlimits), 7 (Landlock),
//! 8 (seccomp, last).
//!
//! ```text
//! supervisor ── fork ──▶ outer child (host pid namespace)
//!                          (join the shared empty net namespace, see netns)
//!                          unshare user+mount+pid+ipc+uts(+net)
//!                          ─▶ NamespacesMade
//!                          (supervisor writes the id maps, then sync word 1,
//!                          then makes the cgroup while the rest goes on)
//!                          unshare time; clock offsets; groups, gid, uid;
//!                          hostname; lo up
//!                          ── fork ──▶ init (pid 1 of the new pid namespace)
//!                                        filesystem view, pivot_root,
//!                                        Landlock ruleset and rules
//!                                        (supervisor moves the outer child and
//!                                        init into the cgroup: sync word 2)
//!                                        unshare cgroup
//!                                        ── fork ──▶ MBU (pid 2)
//!                                                      setsid, signals, fds, chdir,
//!                                                      capabilities, no_new_privs,
//!                                                      rlimits; sync word 3 (the
//!                                                      start record is on disk);
//!                                                      Landlock enforced, seccomp
//!                                                      installed, execve
//!                                        reaps; reports the MBU's status; exits,
//!                                        and the kernel kills the whole namespace
//! ```
//!
//! A **warm** sandbox (`ninewall serve` builds them before anyone asks) is
//! the same up to sync word 2, without its workspace and without Landlock's
//! rules; then init says [`Report::Warm`] and waits on its request socket.
//! The request brings the program, arguments and environment (into memory
//! allocated before fork) and the workspace (a tmpfs to mount, or the
//! detached tree to attach, its descriptor passed with the request); init
//! mounts it, builds the Landlock ruleset on the finished view, and goes on
//! as above. A warm sandbox takes one request: init execs one MBU, once.
//!
//! Invariant: everything here runs between `fork` and `execve` of a possibly
//! multi-threaded supervisor, so it only reads the prepared [`ChildSpec`] and
//! calls the child-safe wrappers of [`sys`]: no allocation, no locks, no panic.
//! A failure is reported as [`Report::Failed`] and ends the process with 125.
//! The outer child and init die with their parent (`PR_SET_PDEATHSIG`), so
//! killing the supervisor, even with SIGKILL, takes the whole sandbox down.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use libc::c_char;

use crate::exit;
use crate::plan::IdMap;
use crate::policy::NetMode;
use crate::sandbox::mounts::FsProgram;
use crate::sandbox::report::{Report, Step};
use crate::sys;

/// Exit code of a sandbox process whose setup failed.
const SETUP_FAILED: i32 = crate::exit::SANDBOX;

/// Signals the supervisor forwards to init and init forwards to the MBU.
pub const FORWARDED_SIGNALS: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Everything the sandbox's processes need, prepared before fork.
pub struct ChildSpec {
    /// Supervisor pid, to detect a parent that died before the lifeline was armed.
    pub supervisor_pid: i32,
    /// The id maps (the supervisor writes them; the child switches to the ids).
    pub ids: IdMap,
    /// Hostname bytes.
    pub hostname: Vec<u8>,
    /// Network mode.
    pub net: NetMode,
    /// The shared empty network namespace to join instead of making one
    /// (see `netns`), or -1.
    pub shared_net: RawFd,
    /// Init's filesystem operations.
    pub fs: FsProgram,
    /// Working directory of the MBU.
    pub workdir: CString,
    /// The program.
    pub program: CString,
    /// Owns the argv strings.
    pub argv_store: Vec<CString>,
    /// Null-terminated pointers into `argv_store`.
    pub argv: Vec<*const c_char>,
    /// Owns the environment strings.
    pub env_store: Vec<CString>,
    /// Null-terminated pointers into `env_store`.
    pub envp: Vec<*const c_char>,
    /// Wall 7: the ruleset init creates and the MBU enforces.
    pub landlock: Option<LandlockProgram>,
    /// Wall 8: the BPF program the MBU installs last.
    pub seccomp: Vec<crate::seccomp::Insn>,
    /// Whether its refusals are notifications for the supervisor.
    pub seccomp_notify: bool,
    /// Whether the filter allows `futex`, so that the MBU can sleep while
    /// init takes its listener (else it spins).
    pub seccomp_allows_futex: bool,
    /// Wall 9: rlimits of the MBU, (resource, soft, hard), lowered to the
    /// current hard limit where that is lower: `[without a cgroup, with one]`
    /// (the supervisor makes the cgroup while the filesystem view is built,
    /// and says with sync word 2 which applies).
    pub rlimits: [Vec<(libc::__rlimit_resource_t, u64, u64)>; 2],
    /// Wall 9: the user namespace's limits, (`/proc/sys/user/…` file, value
    /// as decimal text), written by the outer child while it holds the
    /// namespace's capabilities.
    pub user_limits: Vec<(CString, Vec<u8>)>,
    /// For a warm sandbox: room for its request (see [`WarmSpec`]).
    pub warm: Option<WarmSpec>,
}

/// Room for a warm sandbox's request, allocated before fork: init reads
/// the request into `bytes` and points `pointers` into it.
pub struct WarmSpec {
    /// The request's strings (its length is the most accepted).
    pub bytes: Vec<u8>,
    /// argv, a null, envp, a null (its length is the most accepted).
    pub pointers: Vec<*const c_char>,
    /// Where the request put the program in `bytes`, and how many argv and
    /// envp pointers it filled.
    pub layout: (usize, usize, usize),
}

/// A warm sandbox's request header: body length, argc, envc, workspace
/// kind, each a native-endian `u32`. The body: program, workspace target,
/// tmpfs options, then argc and envc strings, each NUL-terminated.
pub const REQUEST_HEADER: usize = 16;
/// Workspace kind: a tmpfs of the request's options.
pub const WORKSPACE_TMPFS: u32 = 1;
/// Workspace kind: the detached tree whose descriptor came with the request.
pub const WORKSPACE_TREE: u32 = 2;

/// What the MBU executes.
struct Exec<'a> {
    program: &'a CStr,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
}

// The sync pipe carries three words from the supervisor, in this order; each
// value is distinct, so that a word read at the wrong step is an error, not
// a misunderstanding.

/// Sync word 1 (the outer child reads it): the id maps are written.
pub const WORD_MAPS_WRITTEN: u8 = 1;
/// Sync word 2 (init reads it, before it forks the MBU): the outer child and
/// init are in the sandbox's cgroup, so the MBU is born in it.
pub const WORD_IN_CGROUP: u8 = 2;
/// Sync word 2, the other answer: there is no cgroup (rlimits alone).
pub const WORD_NO_CGROUP: u8 = 3;
/// Sync word 3 (the MBU reads it, just before its own code): the start record
/// is on disk.
pub const WORD_RECORDED: u8 = 4;

/// Whether the sandbox is in a cgroup, as sync word 2 said: set by init
/// before it forks the MBU, read by the MBU (this memory is copied at fork,
/// never shared).
static IN_CGROUP: AtomicBool = AtomicBool::new(false);

/// The Landlock ruleset, ready for the child.
pub struct LandlockProgram {
    /// Filesystem rights handled.
    pub handled_fs: u64,
    /// Network rights handled.
    pub handled_net: u64,
    /// Scopes.
    pub scoped: u64,
    /// Paths inside the sandbox and the rights beneath them.
    pub paths: Vec<(CString, u64)>,
    /// TCP ports and their rights (numbered after `paths` in reports).
    pub ports: Vec<(u16, u64)>,
}

/// Init: creates the ruleset and adds every rule; returns the ruleset fd.
fn build_ruleset(ll: &LandlockProgram, fds: ChildFds) -> RawFd {
    let ruleset = must(
        fds,
        Step::LandlockRuleset,
        sys::landlock_create_ruleset(ll.handled_fs, ll.handled_net, ll.scoped),
    );
    for (i, (path, access)) in ll.paths.iter().enumerate() {
        if let Err(e) = sys::landlock_add_path(ruleset, path, *access) {
            fail(fds, Step::LandlockRule, i as u32, e);
        }
    }
    for (i, (port, access)) in ll.ports.iter().enumerate() {
        if let Err(e) = sys::landlock_add_port(ruleset, *port, *access) {
            fail(fds, Step::LandlockRule, (ll.paths.len() + i) as u32, e);
        }
    }
    ruleset
}

/// The pipe ends a child holds.
#[derive(Clone, Copy)]
pub struct ChildFds {
    /// Write end of the report pipe.
    pub report: RawFd,
    /// Read end of the sync pipe, one byte per word, in this order: the id
    /// maps are written (the outer child reads it); the sandbox is in its
    /// cgroup, or has none (init reads it, before it forks the MBU); the start
    /// record is on disk (the MBU reads it, just before it restricts itself
    /// and execs).
    pub sync: RawFd,
    /// Write end of the stdout pipe (the MBU's fd 1).
    pub stdout: RawFd,
    /// Write end of the stderr pipe (the MBU's fd 2).
    pub stderr: RawFd,
    /// Socket to pass the seccomp listener to the supervisor on.
    pub notify: RawFd,
    /// The delegation socket the MBU inherits, or -1.
    pub delegate: RawFd,
    /// The lock on the execution's identity (`crate::identity`), or -1: the
    /// outer child keeps it open until it has reaped init, so the identity
    /// is free again only once the sandbox is gone. Close-on-exec: the MBU
    /// never has it.
    pub identity: RawFd,
    /// The prepared workspace tree init attaches, or -1.
    pub workspace: RawFd,
    /// Write end of the interpreter guard's report pipe (the MBU's, its
    /// number in `NINEWALL_GUARD_FD`), or -1.
    pub guard: RawFd,
    /// Socket to pass the proxy's listener to the supervisor on, or -1.
    pub proxy: RawFd,
    /// A warm sandbox's request socket (init reads it), or -1.
    pub request: RawFd,
}

fn send(fds: ChildFds, r: Report) {
    // A failed write means the supervisor is gone; the lifeline ends us then.
    let _ = sys::write_all(fds.report, &r.encode());
}

fn fail(fds: ChildFds, step: Step, index: u32, errno: i32) -> ! {
    send(fds, Report::Failed { step, index, errno });
    sys::exit_now(SETUP_FAILED)
}

/// `r?` for child steps: report and exit on error.
fn must<T>(fds: ChildFds, step: Step, r: sys::SysResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => fail(fds, step, 0, e),
    }
}

/// Init's host pid, once the outer child has forked it; read by the outer
/// child's parent-death handler.
static OUTER_INIT_PID: AtomicI32 = AtomicI32::new(0);

/// The outer child's parent-death signal: not `SIGKILL`, so that when the
/// supervisor dies the outer child kills init and then reaps it, and exits
/// only once init's pid namespace, and so everything of the sandbox, is
/// gone. Until then it holds the identity's lock (`crate::identity`), which
/// must not be free while a process of the identity is left. Outside the
/// forwarded signals, and not one glibc keeps for itself.
fn outer_lifeline_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

extern "C" fn supervisor_died(_sig: libc::c_int) {
    match OUTER_INIT_PID.load(Ordering::Relaxed) {
        // Init is running: end it; the wait below reaps it, then we exit.
        init if init > 0 => {
            let _ = sys::kill(init, libc::SIGKILL);
        }
        // Nothing of the sandbox runs yet.
        _ => sys::exit_now(SETUP_FAILED),
    }
}

/// Arms the outer child's parent-death signal (again: a change of uid or gid
/// clears it), then checks that the supervisor is still its parent: if it
/// died before the signal was armed, nothing would ever say so.
fn lifeline(spec: &ChildSpec, fds: ChildFds) {
    must(
        fds,
        Step::Lifeline,
        sys::set_parent_death_signal(outer_lifeline_signal()),
    );
    if sys::getppid() != spec.supervisor_pid {
        sys::exit_now(SETUP_FAILED);
    }
}

/// The outer child: namespaces, identity, then init. Never returns.
pub fn outer(spec: &mut ChildSpec, fds: ChildFds) -> ! {
    // Lifeline: end with the supervisor; if it is already gone, stop now.
    must(
        fds,
        Step::Lifeline,
        sys::set_handler(&[outer_lifeline_signal()], supervisor_died),
    );
    lifeline(spec, fds);
    // Wall 6, shared: join the empty namespace while we are still the
    // supervisor's uid in the host's user namespace (the only one with
    // CAP_SYS_ADMIN over it), and refuse it unless it is still empty.
    if spec.shared_net >= 0 {
        must(fds, Step::JoinNetwork, sys::join_net_namespace(spec.shared_net));
        if !must(fds, Step::JoinNetwork, sys::net_namespace_is_empty()) {
            fail(fds, Step::JoinNetwork, 0, libc::ENOTEMPTY);
        }
    }
    // Only stdio and our two pipe ends are kept: nothing else of the
    // supervisor's (sockets, logs, the shared namespace's file) reaches the
    // sandbox.
    must(
        fds,
        Step::Lifeline,
        sys::close_all_except(&[
            0,
            1,
            2,
            fds.report,
            fds.sync,
            fds.stdout,
            fds.stderr,
            fds.notify,
            fds.delegate,
            fds.identity,
            fds.workspace,
            fds.guard,
            fds.proxy,
            fds.request,
        ]),
    );
    // Wall 3: an identity of the execution's own (as root) makes the user
    // namespace, so that it is that identity's and so are the kernel's
    // per-user counts of what the sandbox uses. After the switch we are no
    // longer dumpable, which the time namespace's offsets need (below): made
    // dumpable again until the inside switch makes us not.
    if spec.ids.own_namespace {
        must(fds, Step::BecomeIdentity, sys::clear_groups());
        must(fds, Step::BecomeIdentity, sys::set_gid(spec.ids.host_gid));
        must(fds, Step::BecomeIdentity, sys::set_uid(spec.ids.host_uid));
        must(fds, Step::BecomeIdentity, sys::set_dumpable());
        lifeline(spec, fds);
    }

    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    let net = if spec.shared_net >= 0 { 0 } else { libc::CLONE_NEWNET };
    must(fds, Step::Unshare, sys::unshare(flags | net));
    send(fds, Report::NamespacesMade);

    if read_word(fds, Step::WaitForIdMaps) != WORD_MAPS_WRITTEN {
        sys::exit_now(SETUP_FAILED);
    }

    // Wall 5: the time namespace. It applies to our children; its offsets
    // make the sandbox's monotonic and boot clocks start near zero, so host
    // uptime does not show through. This comes before the id switch:
    // /proc/self/timens_offsets is writable only while we are dumpable, which
    // a uid change ends. (The cgroup namespace is init's, made once init is
    // in the sandbox's cgroup.)
    must(fds, Step::UnshareTime, sys::unshare(libc::CLONE_NEWTIME));
    let mut buf = [0u8; 96];
    let len = must(fds, Step::TimeOffsets, time_offsets(&mut buf));
    must(
        fds,
        Step::TimeOffsets,
        sys::write_file(c"/proc/self/timens_offsets", buf.get(..len).unwrap_or_default()),
    );
    // Wall 3: become the mapped, unprivileged id. Capabilities in the new user
    // namespace survive this (the namespace has no uid 0 for the kernel's
    // setuid fix-up to compare with); the MBU drops them all before exec.
    if spec.ids.clear_groups {
        must(fds, Step::ClearGroups, sys::clear_groups());
    }
    must(fds, Step::SetGid, sys::set_gid(spec.ids.inside_gid));
    must(fds, Step::SetUid, sys::set_uid(spec.ids.inside_uid));
    must(fds, Step::SetUid, sys::set_not_dumpable());
    // A change of effective uid or gid clears the parent-death signal (as root,
    // the switch above is one): arm it again.
    lifeline(spec, fds);

    must(fds, Step::Hostname, sys::set_hostname(&spec.hostname));
    // Wall 9: the namespace's own limits. Written from inside it (the kernel
    // picks the namespace of the writer) with its CAP_SYS_RESOURCE, before
    // init and the MBU exist.
    for (i, (file, value)) in spec.user_limits.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        if let Err(e) = sys::write_file(file, value) {
            fail(fds, Step::UserLimits, index, e);
        }
    }
    if spec.net != NetMode::None {
        must(fds, Step::Loopback, sys::loopback_up());
    }
    if spec.net == NetMode::Proxy {
        // The proxy's port on the sandbox's own loopback: the socket stays
        // in this namespace, its connections are accepted by the supervisor.
        let listener = must(
            fds,
            Step::ProxyListener,
            sys::listen_loopback(crate::policy::egress::PROXY_PORT),
        );
        must(fds, Step::ProxyListener, sys::send_fd(fds.proxy, listener));
        sys::close(listener);
    }

    // Init's lifeline to us: it sees the write end close if we die early.
    let (life_r, life_w) = must(fds, Step::ForkInit, sys::pipe_raw());
    let pid = must(fds, Step::ForkInit, sys::fork());
    if pid == 0 {
        sys::close(life_w);
        init(spec, fds, life_r);
    }
    OUTER_INIT_PID.store(pid, Ordering::Relaxed);
    sys::close(life_r);
    send(fds, Report::InitStarted { pid });
    // We keep only the report pipe, init's lifeline and the identity's lock.
    must(
        fds,
        Step::ForkInit,
        sys::close_all_except(&[fds.report, life_w, fds.identity]),
    );
    loop {
        match sys::waitpid(pid, 0) {
            Ok((p, _)) if p == pid => sys::exit_now(0),
            Ok(_) => {}
            Err(_) => sys::exit_now(SETUP_FAILED),
        }
    }
}

/// Reads the supervisor's next word on the sync pipe (one byte: a pipe keeps
/// the outer child's and the MBU's words apart); stops quietly if the
/// supervisor gave up and closed the pipe.
fn read_word(fds: ChildFds, step: Step) -> u8 {
    let mut byte = [0u8; 1];
    match sys::read_full(fds.sync, &mut byte) {
        Ok(1) => byte[0],
        Ok(_) => sys::exit_now(SETUP_FAILED),
        Err(e) => fail(fds, step, 0, e),
    }
}

/// Formats "monotonic -S 0\nboottime -S 0\n" for the current clocks.
fn time_offsets(buf: &mut [u8; 96]) -> sys::SysResult<usize> {
    let mono = sys::clock_seconds(libc::CLOCK_MONOTONIC)?;
    let boot = sys::clock_seconds(libc::CLOCK_BOOTTIME)?;
    let mut w = Writer { buf, len: 0 };
    w.put(b"monotonic -");
    w.num(mono);
    w.put(b" 0\nboottime -");
    w.num(boot);
    w.put(b" 0\n");
    Ok(w.len)
}

/// A formatter into a fixed buffer: child-safe.
struct Writer<'a> {
    buf: &'a mut [u8; 96],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn num(&mut self, n: i64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        let tail = digits.get(i..).unwrap_or_default();
        let mut copy = [0u8; 20];
        let n = tail.len();
        copy.get_mut(..n).unwrap_or_default().copy_from_slice(tail);
        self.put(copy.get(..n).unwrap_or_default());
    }
}

/// Host-side pid of the MBU as init sees it (pid 2 in the namespace); read by
/// the forwarding handler.
static MBU_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = MBU_PID.load(Ordering::Relaxed);
    if pid > 0 {
        let _ = sys::kill(pid, sig);
    }
}

/// Init: pid 1 of the sandbox. Builds the filesystem view, starts the MBU,
/// reaps every orphan, reports the MBU's end and exits, which makes the
/// kernel kill whatever is left in the namespace. Never returns.
fn init(spec: &mut ChildSpec, fds: ChildFds, lifeline: RawFd) -> ! {
    must(fds, Step::InitLifeline, sys::set_parent_death_signal(libc::SIGKILL));
    if sys::pipe_hung_up(lifeline) {
        sys::exit_now(SETUP_FAILED);
    }
    must(fds, Step::InitLifeline, sys::set_not_dumpable());

    for (i, op) in spec.fs.ops.iter().enumerate() {
        if let Err(e) = op.run(fds.workspace) {
            fail(fds, Step::Filesystem, i as u32, e);
        }
    }
    // Wall 7: the rules name paths of the finished view, so they come after
    // pivot_root (and, warm, after the request's workspace); the MBU
    // enforces the ruleset just before exec.
    let mut ruleset = match spec.warm {
        None => spec.landlock.as_ref().map(|ll| build_ruleset(ll, fds)),
        Some(_) => None,
    };

    must(
        fds,
        Step::InitSignals,
        sys::set_handler(&FORWARDED_SIGNALS, forward_signal),
    );
    let handoff = match spec.seccomp_notify {
        true => Some(must(fds, Step::SeccompHandoff, sys::Handoff::new())),
        false => None,
    };
    // Wall 9: the supervisor made the cgroup while we built the view, and has
    // moved the outer child and us into it; the MBU is born there. Then the
    // cgroup namespace, rooted at that cgroup, so the sandbox sees it as "/".
    match read_word(fds, Step::WaitForCgroup) {
        WORD_IN_CGROUP => IN_CGROUP.store(true, Ordering::Relaxed),
        WORD_NO_CGROUP => {}
        _ => sys::exit_now(SETUP_FAILED),
    }
    if spec.warm.is_some() {
        send(fds, Report::Warm);
        take_request(spec, fds);
        ruleset = spec.landlock.as_ref().map(|ll| build_ruleset(ll, fds));
    }
    let spec: &ChildSpec = spec;
    let exec = match &spec.warm {
        Some(warm) => requested_exec(warm, fds),
        None => Exec {
            program: &spec.program,
            argv: &spec.argv,
            envp: &spec.envp,
        },
    };
    must(fds, Step::UnshareCgroup, sys::unshare(libc::CLONE_NEWCGROUP));
    let pid = must(fds, Step::ForkMbu, sys::fork());
    if pid == 0 {
        mbu(spec, fds, ruleset, handoff.as_ref(), &exec);
    }
    MBU_PID.store(pid, Ordering::Relaxed);
    if let Some(h) = &handoff {
        // The MBU publishes its listener fd and spins; we copy it out of the
        // MBU, pass it to the supervisor, and let the MBU exec.
        loop {
            if let Some(fd) = h.published() {
                let mine = must(fds, Step::SeccompHandoff, sys::take_fd(pid, fd));
                must(fds, Step::SeccompHandoff, sys::send_fd(fds.notify, mine));
                sys::close(mine);
                h.taken();
                break;
            }
            if h.is_empty() && sys::has_exited(pid) {
                break;
            }
            if spec.seccomp_allows_futex {
                // The MBU wakes us when it publishes; the timeout is for an
                // MBU that dies first.
                h.wait_published(10_000);
            } else {
                // Sleep, do not yield: the MBU spins (it may make no syscall),
                // and on the same CPU a runnable init would wait for the
                // scheduler's tick to preempt it; a sleeping init that wakes
                // preempts it at once.
                sys::nap(20);
            }
        }
    }
    must(fds, Step::InitSignals, sys::close_all_except(&[fds.report]));
    must(fds, Step::InitSignals, sys::set_signal_mask(&sys::sigset(&[])));
    loop {
        match sys::wait_any() {
            Ok((p, status, cpu_ms, maxrss_kb)) if p == pid => {
                send(fds, Report::Usage { cpu_ms, maxrss_kb });
                let r = if libc::WIFSIGNALED(status) {
                    Report::Signaled {
                        signal: libc::WTERMSIG(status),
                    }
                } else {
                    Report::Exited {
                        code: libc::WEXITSTATUS(status),
                    }
                };
                send(fds, r);
                // What the MBU left behind dies now, and is reaped: when init
                // has no child left, its pid namespace holds init alone (every
                // process in it descends from init). The supervisor need not
                // wait for init's exit and the namespaces' teardown to know.
                let _ = sys::kill(-1, libc::SIGKILL);
                loop {
                    match sys::wait_any() {
                        Ok(_) => {}
                        Err(libc::ECHILD) => {
                            send(fds, Report::Emptied);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                sys::exit_now(0);
            }
            Ok(_) => {}
            Err(_) => sys::exit_now(SETUP_FAILED),
        }
    }
}

/// A warm sandbox's init: reads the request into the room allocated before
/// fork (its socket closing first means nobody will ask: a quiet exit),
/// and mounts its workspace.
fn take_request(spec: &mut ChildSpec, fds: ChildFds) {
    let Some(warm) = spec.warm.as_mut() else {
        return;
    };
    let mut header = [0u8; REQUEST_HEADER];
    let (n, tree) = must(fds, Step::WaitForRequest, sys::recv_with_fd(fds.request, &mut header));
    if n == 0 {
        sys::exit_now(SETUP_FAILED);
    }
    let rest = must(
        fds,
        Step::WaitForRequest,
        sys::read_full(fds.request, header.get_mut(n..).unwrap_or_default()),
    );
    if n + rest != REQUEST_HEADER {
        sys::exit_now(SETUP_FAILED);
    }
    let word = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(header.get(i * 4..i * 4 + 4).unwrap_or(&[0; 4]));
        u32::from_ne_bytes(w) as usize
    };
    let (len, kind) = (word(0), word(3));
    let Some(body) = warm.bytes.get_mut(..len) else {
        fail(fds, Step::WaitForRequest, 0, libc::E2BIG);
    };
    if must(fds, Step::WaitForRequest, sys::read_full(fds.request, body)) != len {
        sys::exit_now(SETUP_FAILED);
    }
    sys::close(fds.request);
    // The program, then where and how the workspace is mounted, then argv
    // and envp, each list ended by a null pointer.
    let mut at = 0;
    let program_at = at;
    let bad = |i: u32| -> ! { fail(fds, Step::WaitForRequest, i, libc::EINVAL) };
    next_str(body, &mut at).unwrap_or_else(|| bad(0));
    let target = next_str(body, &mut at).unwrap_or_else(|| bad(1));
    let options = next_str(body, &mut at).unwrap_or_else(|| bad(2));
    let (argc, envc) = (word(1), word(2));
    if argc + envc + 2 > warm.pointers.len() {
        fail(fds, Step::WaitForRequest, 3, libc::E2BIG);
    }
    let mut slot = 0;
    for list in [argc, envc] {
        for _ in 0..list {
            let s = next_str(body, &mut at).unwrap_or_else(|| bad(4));
            if let Some(p) = warm.pointers.get_mut(slot) {
                *p = s.as_ptr();
            }
            slot += 1;
        }
        if let Some(p) = warm.pointers.get_mut(slot) {
            *p = std::ptr::null();
        }
        slot += 1;
    }
    warm.layout = (program_at, argc, envc);
    let mounted = match kind as u32 {
        WORKSPACE_TREE if tree >= 0 => sys::attach_tree(tree, target),
        WORKSPACE_TMPFS if tree < 0 => sys::mount(
            Some(c"tmpfs"),
            target,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(options),
        ),
        _ => Err(libc::EINVAL),
    };
    if tree >= 0 {
        sys::close(tree);
    }
    must(fds, Step::Workspace, mounted);
}

/// The next NUL-terminated string of `body` from `*at` (child-safe).
fn next_str<'a>(body: &'a [u8], at: &mut usize) -> Option<&'a CStr> {
    let rest = body.get(*at..)?;
    let s = CStr::from_bytes_until_nul(rest).ok()?;
    *at += s.to_bytes_with_nul().len();
    Some(s)
}

/// The program, argv and envp of a warm sandbox's request, as
/// [`take_request`] laid them out in its room.
fn requested_exec(warm: &WarmSpec, fds: ChildFds) -> Exec<'_> {
    let (program_at, argc, envc) = warm.layout;
    let program = warm
        .bytes
        .get(program_at..)
        .and_then(|b| CStr::from_bytes_until_nul(b).ok())
        .unwrap_or_else(|| fail(fds, Step::WaitForRequest, 0, libc::EINVAL));
    let (Some(argv), Some(envp)) = (warm.pointers.get(..=argc), warm.pointers.get(argc + 1..argc + envc + 2)) else {
        fail(fds, Step::WaitForRequest, 0, libc::E2BIG);
    };
    Exec { program, argv, envp }
}

/// The MBU process: drops everything, then `execve`. Never returns.
fn mbu(spec: &ChildSpec, fds: ChildFds, ruleset: Option<RawFd>, handoff: Option<&sys::Handoff>, exec: &Exec<'_>) -> ! {
    must(fds, Step::Setsid, sys::setsid());
    // stdout and stderr go to the supervisor, which enforces the output limit.
    must(fds, Step::CloseFds, sys::dup2(fds.stdout, 1));
    must(fds, Step::CloseFds, sys::dup2(fds.stderr, 2));
    sys::reset_signal_dispositions();
    must(fds, Step::ResetSignals, sys::set_signal_mask(&sys::sigset(&[])));
    must(fds, Step::CloseFds, sys::cloexec_from(3));
    for fd in [fds.delegate, fds.guard] {
        if fd >= 0 {
            must(fds, Step::CloseFds, sys::clear_cloexec(fd));
        }
    }
    must(fds, Step::Chdir, sys::chdir(&spec.workdir));
    must(fds, Step::DropBounding, sys::drop_bounding_set());
    must(fds, Step::DropAmbient, sys::clear_ambient());
    must(fds, Step::DropCapabilities, sys::clear_capabilities());
    must(fds, Step::NoNewPrivs, sys::set_no_new_privs());
    let [alone, in_cgroup] = &spec.rlimits;
    let rlimits = if IN_CGROUP.load(Ordering::Relaxed) {
        in_cgroup
    } else {
        alone
    };
    for &(resource, soft, hard) in rlimits {
        must(fds, Step::Rlimits, sys::lower_rlimit(resource, soft, hard));
    }
    // Provenance before the MBU's own code: everything so far was ninewall's
    // (the walls were built while the start record went to disk); from here
    // on, the program's.
    if read_word(fds, Step::WaitForRecord) != WORD_RECORDED {
        sys::exit_now(SETUP_FAILED);
    }
    if let Some(fd) = ruleset {
        must(fds, Step::LandlockRestrict, sys::landlock_restrict_self(fd));
    }
    // Wall 8, last: from here on only the allowed syscalls work, execve among
    // them. With a listener, nothing but memory is touched until execve: init
    // takes the listener out of this process while it spins.
    match handoff {
        Some(h) => {
            // Init copies the listener out with pidfd_getfd, a ptrace-class
            // access: this process must be dumpable for that (as it will be
            // after execve anyway); init stays not dumpable.
            must(fds, Step::Seccomp, sys::set_dumpable());
            let fd = must(fds, Step::Seccomp, sys::seccomp_install_listener(&spec.seccomp));
            h.publish(fd, spec.seccomp_allows_futex);
            h.wait_taken(spec.seccomp_allows_futex);
        }
        None => must(fds, Step::Seccomp, sys::seccomp_install(&spec.seccomp)),
    }
    // SAFETY: `argv` and `envp` point into `argv_store` and `env_store`, or
    // into a warm sandbox's request bytes, all owned by `spec`, which lives
    // until this process execs or exits.
    let errno = unsafe { sys::execve(exec.program, exec.argv, exec.envp) };
    send(
        fds,
        Report::Failed {
            step: Step::Exec,
            index: 0,
            errno,
        },
    );
    sys::exit_now(if errno == libc::ENOENT {
        exit::NOT_FOUND
    } else {
        exit::NOT_EXECUTABLE
    })
}

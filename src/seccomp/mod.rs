//! Wall 8, as data: the syscall groups a profile allows from, the syscalls no
//! profile may allow, and the compiled BPF allowlist.
//!
//! The program, compiled in the supervisor before fork (the MBU only installs
//! it, as its last step before `execve`):
//!
//! 1. a foreign architecture (i386 via `int 0x80`, anything not native) kills
//!    the process; on x86_64, an x32 syscall number kills the process;
//! 2. `clone3` returns `ENOSYS` (its flags sit in memory a filter cannot read),
//!    so the C library falls back to `clone`;
//! 3. the allowlist, as a binary search over syscall numbers (see `tree`; the
//!    few syscalls whose arguments are checked, and architectures without a
//!    syscall table here, are compiled by seccompiler): a syscall the profile
//!    allows passes (`clone` only without namespace flags, `ioctl` never with
//!    `TIOCSTI` or `TIOCLINUX`, `personality` only to query or keep the default
//!    persona, `memfd_create` only with `MFD_NOEXEC_SEAL`); a recorded one
//!    becomes a user notification; anything else gets the profile's
//!    `on_denied`: `EPERM`, or the whole process killed.

use std::collections::BTreeSet;

use serde::Serialize;

pub mod files;
pub mod guard;
pub mod names_x86_64;
mod tree;

pub use guard::Family;

/// The number of syscall `name` on this architecture, where ninewall has a
/// table for it (x86_64).
pub fn syscall_number(name: &str) -> Option<u32> {
    if Arch::native() != Some(Arch::X86_64) {
        return None;
    }
    names_x86_64::NAMES.iter().find(|(_, n)| *n == name).map(|(nr, _)| *nr)
}

/// The name of syscall `nr` of the native architecture, or `syscall N`.
pub fn syscall_name(nr: i32) -> String {
    if Arch::native() == Some(Arch::X86_64) {
        if let Ok(n) = names_x86_64::NAMES.binary_search_by_key(&u32::try_from(nr).unwrap_or(u32::MAX), |(n, _)| *n) {
            if let Some((_, name)) = names_x86_64::NAMES.get(n) {
                return (*name).to_string();
            }
        }
    }
    format!("syscall {nr}")
}

const RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// Makes every refusal with `EPERM` a user notification instead, so that the
/// supervisor sees each refused syscall (and answers `EPERM` itself). The
/// program's only `EPERM` returns are its refusals; `clone3`'s `ENOSYS` and the
/// kills stay as they are.
pub fn notify_instead_of_errno(prog: &mut [Insn]) {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    for insn in prog.iter_mut().filter(|i| i.code == RET_K && i.k == eperm) {
        insn.k = RET_USER_NOTIF;
    }
}

/// What a refused syscall gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDenied {
    /// Fails with `EPERM`.
    Errno,
    /// The whole process is killed (`SIGSYS`).
    Kill,
}

/// A named group of syscalls. `x86_64_only` members do not exist on aarch64
/// (their `*at` or generic successors are in `members`).
pub struct Group {
    /// `@name`.
    pub name: &'static str,
    /// One line: what it is for.
    pub doc: &'static str,
    /// Syscalls (and `@groups`) on every architecture.
    pub members: &'static [&'static str],
    /// Legacy syscalls that only x86_64 has.
    pub x86_64_only: &'static [&'static str],
}

/// Every group, modelled on systemd's `SystemCallFilter=` sets.
pub const GROUPS: &[Group] = &[
    Group {
        name: "@basic-io",
        doc: "read, write, seek and close file descriptors",
        members: &[
            "close",
            "close_range",
            "dup",
            "dup3",
            "lseek",
            "pread64",
            "preadv",
            "preadv2",
            "pwrite64",
            "pwritev",
            "pwritev2",
            "read",
            "readv",
            "write",
            "writev",
        ],
        x86_64_only: &["dup2"],
    },
    Group {
        name: "@file-system",
        doc: "open, stat, list, create, rename and remove files (the walls 4 and 7 decide where)",
        members: &[
            "chdir",
            "faccessat",
            "faccessat2",
            "fadvise64",
            "fallocate",
            "fchdir",
            "fchmod",
            "fchmodat",
            "fcntl",
            "fgetxattr",
            "flistxattr",
            "flock",
            "fstat",
            "fstatfs",
            "ftruncate",
            "getcwd",
            "getdents64",
            "getxattr",
            "inotify_add_watch",
            "inotify_init1",
            "inotify_rm_watch",
            "lgetxattr",
            "linkat",
            "listxattr",
            "llistxattr",
            "mkdirat",
            "mknodat",
            "newfstatat",
            "openat",
            "openat2",
            "readlinkat",
            "renameat",
            "renameat2",
            "statfs",
            "statx",
            "symlinkat",
            "truncate",
            "umask",
            "unlinkat",
            "utimensat",
        ],
        x86_64_only: &[
            "access",
            "chmod",
            "creat",
            "futimesat",
            "getdents",
            "inotify_init",
            "link",
            "lstat",
            "mkdir",
            "mknod",
            "open",
            "readlink",
            "rename",
            "rmdir",
            "stat",
            "symlink",
            "unlink",
            "utime",
            "utimes",
        ],
    },
    Group {
        name: "@chown",
        doc: "change file owners",
        members: &["fchown", "fchownat"],
        x86_64_only: &["chown", "lchown"],
    },
    Group {
        name: "@io-event",
        doc: "wait for events on file descriptors",
        members: &[
            "epoll_create1",
            "epoll_ctl",
            "epoll_pwait",
            "epoll_pwait2",
            "eventfd2",
            "ppoll",
            "pselect6",
        ],
        x86_64_only: &["epoll_create", "epoll_wait", "eventfd", "poll", "select"],
    },
    Group {
        name: "@ipc",
        doc: "pipes, System V and POSIX IPC, non-executable memfds",
        members: &[
            "pipe2",
            "memfd_create",
            "mq_getsetattr",
            "mq_notify",
            "mq_open",
            "mq_timedreceive",
            "mq_timedsend",
            "mq_unlink",
            "msgctl",
            "msgget",
            "msgrcv",
            "msgsnd",
            "semctl",
            "semget",
            "semop",
            "semtimedop",
            "shmat",
            "shmctl",
            "shmdt",
            "shmget",
        ],
        x86_64_only: &["pipe"],
    },
    Group {
        name: "@memory",
        doc: "map, protect and advise memory",
        members: &[
            "brk",
            "get_mempolicy",
            "madvise",
            "mbind",
            "membarrier",
            "mincore",
            "mlock",
            "mlock2",
            "mmap",
            "mprotect",
            "mremap",
            "msync",
            "munlock",
            "munmap",
            "pkey_alloc",
            "pkey_free",
            "pkey_mprotect",
            "set_mempolicy",
        ],
        x86_64_only: &[],
    },
    Group {
        name: "@process",
        doc: "create, run, wait for and signal processes (clone without namespace flags)",
        members: &[
            "capget",
            "clone",
            "execve",
            "execveat",
            "exit",
            "exit_group",
            "getpgid",
            "getrusage",
            "gettid",
            "kill",
            "personality",
            "pidfd_open",
            "pidfd_send_signal",
            "prctl",
            "rt_sigqueueinfo",
            "rt_tgsigqueueinfo",
            "setpgid",
            "setsid",
            "tgkill",
            "tkill",
            "wait4",
            "waitid",
        ],
        x86_64_only: &["arch_prctl", "fork", "getpgrp", "vfork"],
    },
    Group {
        name: "@signal",
        doc: "handle, mask and wait for signals",
        members: &[
            "rt_sigaction",
            "rt_sigpending",
            "rt_sigprocmask",
            "rt_sigreturn",
            "rt_sigsuspend",
            "rt_sigtimedwait",
            "sigaltstack",
            "signalfd4",
        ],
        x86_64_only: &["signalfd"],
    },
    Group {
        name: "@timer",
        doc: "timers and alarms",
        members: &[
            "getitimer",
            "setitimer",
            "timer_create",
            "timer_delete",
            "timer_getoverrun",
            "timer_gettime",
            "timer_settime",
            "timerfd_create",
            "timerfd_gettime",
            "timerfd_settime",
            "times",
        ],
        x86_64_only: &["alarm"],
    },
    Group {
        name: "@sync",
        doc: "flush files to storage",
        members: &["fdatasync", "fsync", "sync_file_range", "syncfs"],
        x86_64_only: &[],
    },
    Group {
        name: "@network-io",
        doc: "sockets: create, connect, listen, send, receive (the walls 6 and 7 decide where)",
        members: &[
            "accept",
            "accept4",
            "bind",
            "connect",
            "getpeername",
            "getsockname",
            "getsockopt",
            "listen",
            "recvfrom",
            "recvmmsg",
            "recvmsg",
            "sendmmsg",
            "sendmsg",
            "sendto",
            "setsockopt",
            "shutdown",
            "socket",
            "socketpair",
        ],
        x86_64_only: &[],
    },
    Group {
        name: "@system-info",
        doc: "uname, sysinfo, resource limits and scheduling queries",
        members: &[
            "getcpu",
            "getpriority",
            "getrlimit",
            "prlimit64",
            "sched_get_priority_max",
            "sched_get_priority_min",
            "sched_getaffinity",
            "sched_getattr",
            "sched_getparam",
            "sched_getscheduler",
            "sched_rr_get_interval",
            "sched_yield",
            "setrlimit",
            "sysinfo",
            "uname",
        ],
        x86_64_only: &[],
    },
    Group {
        name: "@interpreter",
        doc: "one process running an interpreter: @default without creating processes or threads",
        members: &[
            "@basic-io",
            "@file-system",
            "@io-event",
            "@memory",
            "execve",
            "exit",
            "exit_group",
            "getpgid",
            "getrusage",
            "gettid",
            "kill",
            "prctl",
            "tgkill",
            "tkill",
            "personality",
            "@signal",
            "@timer",
            "@sync",
            "@system-info",
            "pipe2",
            "clock_getres",
            "clock_gettime",
            "clock_nanosleep",
            "futex",
            "futex_waitv",
            "get_robust_list",
            "getegid",
            "geteuid",
            "getgid",
            "getgroups",
            "getpid",
            "getppid",
            "getrandom",
            "getresgid",
            "getresuid",
            "getsid",
            "gettimeofday",
            "getuid",
            "ioctl",
            "nanosleep",
            "restart_syscall",
            "rseq",
            "set_robust_list",
            "set_tid_address",
        ],
        x86_64_only: &[
            "arch_prctl",
            "getpgrp",
            "pipe",
            "pause",
            "time",
            "get_thread_area",
            "set_thread_area",
        ],
    },
    Group {
        name: "@default",
        doc: "what a typical interpreter needs: @interpreter and @process (no sockets, no System V IPC, no chown)",
        members: &["@interpreter", "@process"],
        x86_64_only: &[],
    },
];

/// Syscalls no profile may allow, with why.
pub const NEVER: &[(&str, &str)] = &[
    ("io_uring_setup", "io_uring performs syscalls no filter sees"),
    ("io_uring_enter", "io_uring performs syscalls no filter sees"),
    ("io_uring_register", "io_uring performs syscalls no filter sees"),
    ("ptrace", "it reads and writes other processes"),
    ("process_vm_readv", "it reads other processes' memory"),
    ("process_vm_writev", "it writes other processes' memory"),
    ("bpf", "kernel attack surface"),
    ("perf_event_open", "kernel attack surface and side channels"),
    ("userfaultfd", "it makes kernel races reliable"),
    ("kexec_load", "it replaces the kernel"),
    ("kexec_file_load", "it replaces the kernel"),
    ("init_module", "it loads kernel code"),
    ("finit_module", "it loads kernel code"),
    ("delete_module", "it unloads kernel code"),
    ("mount", "the mount view is ninewall's"),
    ("umount2", "the mount view is ninewall's"),
    ("pivot_root", "the mount view is ninewall's"),
    ("move_mount", "the mount view is ninewall's"),
    ("open_tree", "the mount view is ninewall's"),
    ("fsopen", "the mount view is ninewall's"),
    ("fsconfig", "the mount view is ninewall's"),
    ("fsmount", "the mount view is ninewall's"),
    ("fspick", "the mount view is ninewall's"),
    ("mount_setattr", "the mount view is ninewall's"),
    ("chroot", "the mount view is ninewall's"),
    ("unshare", "new namespaces are kernel attack surface"),
    ("setns", "it joins other namespaces"),
    ("keyctl", "the kernel keyring is shared and attack surface"),
    ("add_key", "the kernel keyring is shared and attack surface"),
    ("request_key", "the kernel keyring is shared and attack surface"),
    ("open_by_handle_at", "it opens files by handle, around the mount view"),
    ("name_to_handle_at", "file handles go around the mount view"),
    (
        "clone3",
        "it always returns ENOSYS (its flags cannot be inspected); clone is filtered instead",
    ),
    ("swapon", "host administration"),
    ("swapoff", "host administration"),
    ("reboot", "host administration"),
    ("acct", "host administration"),
    ("quotactl", "host administration"),
    ("syslog", "the kernel log"),
    ("settimeofday", "host administration"),
    ("clock_settime", "host administration"),
    ("clock_adjtime", "host administration"),
    ("adjtimex", "host administration"),
    ("vhangup", "host administration"),
];

/// x86_64-only syscalls that are never allowable.
pub const NEVER_X86_64: &[(&str, &str)] = &[
    ("iopl", "raw port I/O"),
    ("ioperm", "raw port I/O"),
    ("modify_ldt", "kernel attack surface"),
    ("uselib", "obsolete library loading"),
];

/// The architectures a filter can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64.
    X86_64,
    /// aarch64.
    Aarch64,
}

impl Arch {
    /// The architecture ninewall was built for.
    pub fn native() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    fn target(self) -> seccompiler::TargetArch {
        match self {
            Arch::X86_64 => seccompiler::TargetArch::x86_64,
            Arch::Aarch64 => seccompiler::TargetArch::aarch64,
        }
    }

    fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => 0xC000_003E,  // AUDIT_ARCH_X86_64
            Arch::Aarch64 => 0xC000_00B7, // AUDIT_ARCH_AARCH64
        }
    }
}

/// The group named `@name`.
pub fn group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name == name)
}

/// Why a name is never allowable, if it is.
pub fn never(name: &str) -> Option<&'static str> {
    NEVER
        .iter()
        .chain(NEVER_X86_64.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// Why an allowlist cannot become a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// A `@group` that does not exist.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// A syscall on the never-allowed list.
    #[error("{name:?} is never allowed ({why})")]
    NeverAllowed {
        /// The syscall.
        name: String,
        /// Why it is never allowed.
        why: &'static str,
    },
    /// A name that is no syscall of the architecture.
    #[error("{name:?} is not a syscall on {arch:?}")]
    NotASyscall {
        /// The name.
        name: String,
        /// The architecture.
        arch: Arch,
    },
    /// The program is longer than the kernel takes.
    #[error("the filter has {0} instructions; the kernel takes at most 4096")]
    TooLong(usize),
    /// No syscall table for the machine ninewall runs on.
    #[error("no syscall table for {0}")]
    NoTable(&'static str),
    /// seccompiler refused the rules, as it said it.
    #[error("seccompiler: {0}")]
    Compiler(String),
}

/// Expands groups into syscall names for `arch`. Unknown groups are errors;
/// plain names are kept as they are (compiling checks them).
pub fn expand(allow: &[String], arch: Arch) -> Result<BTreeSet<String>, SeccompError> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<String> = allow.to_vec();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if name.starts_with('@') {
            let g = group(&name).ok_or_else(|| SeccompError::UnknownGroup(name.clone()))?;
            stack.extend(g.members.iter().map(std::string::ToString::to_string));
            if arch == Arch::X86_64 {
                stack.extend(g.x86_64_only.iter().map(std::string::ToString::to_string));
            }
        } else {
            out.insert(name);
        }
    }
    Ok(out)
}

const CLONE_NAMESPACES: u64 = 0x7E02_0000; // NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const PER_LINUX: u64 = 0;
const PERSONALITY_QUERY: u64 = 0xFFFF_FFFF;
const MFD_EXEC_BITS: u64 = 0x18; // MFD_NOEXEC_SEAL | MFD_EXEC
const MFD_NOEXEC_SEAL: u64 = 0x08;

/// The seccompiler rules (JSON form) for one allowed syscall.
/// The syscalls [`rules_for`] allows only with certain arguments (besides
/// the mode guards of [`guard::GUARDED`]).
const ARGUMENT_RULES: [&str; 6] = ["clone", "ioctl", "personality", "memfd_create", "socket", "socketpair"];

fn rules_for(name: &str, families: &[Family]) -> Vec<serde_json::Value> {
    use serde_json::json;
    if let Some(guard) = guard::guard_of(name) {
        return guard.rules(name);
    }
    let cond = |index: u8, ty: &str, op: serde_json::Value, val: u64| json!({"index": index, "type": ty, "op": op, "val": val});
    match name {
        "clone" => {
            vec![json!({"syscall": "clone", "args": [cond(0, "qword", json!({"masked_eq": CLONE_NAMESPACES}), 0)]})]
        }
        "ioctl" => vec![
            json!({"syscall": "ioctl", "args": [cond(1, "dword", json!("ne"), TIOCSTI), cond(1, "dword", json!("ne"), TIOCLINUX)]}),
        ],
        "personality" => vec![
            json!({"syscall": "personality", "args": [cond(0, "dword", json!("eq"), PER_LINUX)]}),
            json!({"syscall": "personality", "args": [cond(0, "dword", json!("eq"), PERSONALITY_QUERY)]}),
        ],
        "memfd_create" => {
            vec![
                json!({"syscall": "memfd_create", "args": [cond(1, "dword", json!({"masked_eq": MFD_EXEC_BITS}), MFD_NOEXEC_SEAL)]}),
            ]
        }
        "socket" | "socketpair" => guard::socket_rules(name, families),
        _ => vec![json!({"syscall": name})],
    }
}

/// One BPF instruction.
pub type Insn = seccompiler::sock_filter;

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const NR_CLONE3: u32 = 435;
/// The same on every architecture (asm-generic), as `clone3`'s number is.
const NR_OPENAT2: u32 = 437;

/// Compiles the allowlist for `arch`. Every name must be a syscall of `arch`
/// and none may be never-allowable; the message names the offender.
pub fn compile(names: &BTreeSet<String>, on_denied: OnDenied, arch: Arch) -> Result<Vec<Insn>, SeccompError> {
    compile_recording(names, on_denied, arch, &[], &[Family::Unix])
}

/// [`compile`], and the syscalls numbered in `recorded` (allowed ones only)
/// become user notifications, for the supervisor to record before letting
/// them continue; `socket` creates sockets of `families` only.
pub fn compile_recording(
    names: &BTreeSet<String>,
    on_denied: OnDenied,
    arch: Arch,
    recorded: &[u32],
    families: &[Family],
) -> Result<Vec<Insn>, SeccompError> {
    if let Some((n, why)) = names.iter().find_map(|n| never(n).map(|w| (n, w))) {
        return Err(SeccompError::NeverAllowed { name: n.clone(), why });
    }
    let mut prog = prefix(arch);
    match searched(names, on_denied, arch, recorded, families)? {
        Some(tree) => prog.extend(tree),
        None => {
            for &nr in recorded {
                prog.push(jump(JEQ_K, nr, 0, 1));
                prog.push(stmt(RET_K, RET_USER_NOTIF));
            }
            prog.extend(linear(names, on_denied, arch, families)?);
        }
    }
    if prog.len() > 4096 {
        return Err(SeccompError::TooLong(prog.len()));
    }
    Ok(prog)
}

/// The profile's refusal as a return value.
fn deny_return(on_denied: OnDenied) -> u32 {
    match on_denied {
        OnDenied::Errno => RET_ERRNO | libc::EPERM as u32,
        OnDenied::Kill => RET_KILL_PROCESS,
    }
}

/// The allowlist as a binary search over syscall numbers (see [`tree`]), where
/// ninewall has a syscall table for `arch` (x86_64); `None` elsewhere.
fn searched(
    names: &BTreeSet<String>,
    on_denied: OnDenied,
    arch: Arch,
    recorded: &[u32],
    families: &[Family],
) -> Result<Option<Vec<Insn>>, SeccompError> {
    if arch != Arch::X86_64 {
        return Ok(None);
    }
    // One pass over the table (the allowlist is a few hundred names of ~460).
    let mut allowed = BTreeSet::new();
    let mut with_arguments = BTreeSet::new();
    let mut argument_nrs = BTreeSet::new();
    let mut guarded = std::collections::BTreeMap::new();
    let mut found = 0;
    for &(nr, name) in names_x86_64::NAMES {
        if names.contains(name) {
            found += 1;
            if let Some(guard) = guard::guard_of(name) {
                guarded.insert(nr, guard);
            } else if ARGUMENT_RULES.contains(&name) {
                with_arguments.insert(name.to_string());
                argument_nrs.insert(nr);
            } else {
                allowed.insert(nr);
            }
        }
    }
    if found != names.len() {
        // A name not in the table: let seccompiler name it (or know it).
        return Ok(None);
    }
    let arguments = if with_arguments.is_empty() {
        Vec::new()
    } else {
        linear(&with_arguments, on_denied, arch, families)?
    };
    let last = names_x86_64::NAMES.last().map_or(0, |(nr, _)| *nr);
    Ok(Some(tree::compile(
        |nr| {
            if let Some(&guard) = guarded.get(&nr) {
                tree::Answer::Guarded(guard, recorded.contains(&nr))
            } else if recorded.contains(&nr) {
                tree::Answer::Notify
            } else if allowed.contains(&nr) {
                tree::Answer::Allow
            } else if argument_nrs.contains(&nr) {
                tree::Answer::Arguments
            } else {
                tree::Answer::Deny
            }
        },
        last,
        deny_return(on_denied),
        RET_USER_NOTIF,
        &arguments,
    )))
}

/// seccompiler's program for `names`: one block per syscall, in order, ending
/// in the profile's refusal. It starts by checking the architecture and
/// loading the syscall number itself.
fn linear(
    names: &BTreeSet<String>,
    on_denied: OnDenied,
    arch: Arch,
    families: &[Family],
) -> Result<Vec<Insn>, SeccompError> {
    let mismatch = match on_denied {
        OnDenied::Errno => serde_json::json!({"errno": libc::EPERM}),
        OnDenied::Kill => serde_json::json!("kill_process"),
    };
    let rules: Vec<serde_json::Value> = names.iter().flat_map(|n| rules_for(n, families)).collect();
    let doc = serde_json::json!({"main": {"mismatch_action": mismatch, "match_action": "allow", "filter": rules}});
    let text = doc.to_string();
    let mut map = seccompiler::compile_from_json(text.as_bytes(), arch.target()).map_err(|e| {
        // seccompiler says "invalid syscall name"; find which one, for the message.
        let unknown = names.iter().find(|n| {
            let one = serde_json::json!({"main": {"mismatch_action": "allow", "match_action": "allow", "filter": [{"syscall": n}]}});
            seccompiler::compile_from_json(one.to_string().as_bytes(), arch.target()).is_err()
        });
        match unknown {
            Some(n) => SeccompError::NotASyscall { name: n.clone(), arch },
            None => SeccompError::Compiler(e.to_string()),
        }
    })?;
    map.remove("main")
        .ok_or_else(|| SeccompError::Compiler("it returned no filter".to_string()))
}

/// Steps 1 and 2: foreign architectures and x32 killed, `clone3` and
/// `openat2` answered `ENOSYS`; the syscall number loaded.
fn prefix(arch: Arch) -> Vec<Insn> {
    let mut prog = vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JEQ_K, arch.audit(), 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
    ];
    if arch == Arch::X86_64 {
        prog.push(jump(JGE_K, X32_SYSCALL_BIT, 0, 1));
        prog.push(stmt(RET_K, RET_KILL_PROCESS));
    }
    // clone3's flags and openat2's mode are in memory, where the filter
    // cannot look: ENOSYS, and libc falls back to clone and openat, whose
    // arguments it can.
    for nr in [NR_CLONE3, NR_OPENAT2] {
        prog.push(jump(JEQ_K, nr, 0, 1));
        prog.push(stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    }
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, arch: Arch) -> Result<Vec<Insn>, SeccompError> {
        compile(&BTreeSet::from([name.to_string()]), OnDenied::Errno, arch)
    }

    #[test]
    fn argument_rules_names_exactly_the_syscalls_with_argument_conditions() {
        for &(_, name) in names_x86_64::NAMES {
            let plain = rules_for(name, &[Family::Unix]) == [serde_json::json!({ "syscall": name })];
            let checked = ARGUMENT_RULES.contains(&name) || guard::guard_of(name).is_some();
            assert_eq!(!plain, checked, "{name}");
        }
    }

    #[test]
    fn every_group_member_resolves_on_x86_64_and_aarch64() {
        for g in GROUPS {
            for m in g.members.iter().filter(|m| !m.starts_with('@')) {
                for arch in [Arch::X86_64, Arch::Aarch64] {
                    assert!(
                        one(m, arch).is_ok(),
                        "{}: {m} does not resolve on {arch:?}: {:?}",
                        g.name,
                        one(m, arch)
                    );
                }
            }
            for m in g.x86_64_only {
                assert!(one(m, Arch::X86_64).is_ok(), "{}: {m} on x86_64", g.name);
                assert!(
                    one(m, Arch::Aarch64).is_err(),
                    "{}: {m} exists on aarch64 too: move it to members",
                    g.name
                );
            }
        }
    }

    #[test]
    fn no_group_contains_a_never_allowable_syscall() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let all: Vec<String> = GROUPS.iter().map(|g| g.name.to_string()).collect();
            let names = expand(&all, arch).unwrap();
            for n in &names {
                assert!(never(n).is_none(), "{n} is in a group and never allowable");
            }
            assert!(compile(&names, OnDenied::Kill, arch).is_ok(), "{arch:?}");
        }
    }

    #[test]
    fn never_allowable_syscalls_are_refused_by_name() {
        for (n, _) in NEVER {
            let e = one(n, Arch::X86_64).unwrap_err();
            assert!(e.to_string().contains("is never allowed"), "{n}: {e}");
        }
        assert!(one("no_such_syscall", Arch::X86_64)
            .unwrap_err()
            .to_string()
            .contains("is not a syscall on X86_64"));
        assert!(expand(&["@nonsense".into()], Arch::X86_64).is_err());
    }

    #[test]
    fn refusals_become_notifications_and_nothing_else_does() {
        let mut prog = compile(
            &BTreeSet::from(["getpid".to_string(), "execve".to_string()]),
            OnDenied::Errno,
            Arch::X86_64,
        )
        .unwrap();
        let before = prog.clone();
        notify_instead_of_errno(&mut prog);
        let changed: Vec<usize> = (0..prog.len()).filter(|&i| prog[i] != before[i]).collect();
        assert!(!changed.is_empty());
        for i in changed {
            assert_eq!((before[i].code, before[i].k), (RET_K, RET_ERRNO | 1));
            assert_eq!(prog[i].k, RET_USER_NOTIF);
        }
        assert_eq!(prog[7].k, RET_ERRNO | 38, "clone3 still ENOSYS");
        assert_eq!(
            syscall_name(41),
            if cfg!(target_arch = "x86_64") {
                "socket"
            } else {
                "syscall 41"
            }
        );
        assert_eq!(syscall_name(100_000), "syscall 100000");
    }

    #[test]
    fn setid_modes_foreign_socket_families_and_openat2_are_refused() {
        let x86 = Arch::X86_64.audit();
        let names = expand(&["@default".to_string(), "@network-io".to_string()], Arch::X86_64).unwrap();
        let nr = |n: &str| syscall_number(n).unwrap();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let creat = u64::try_from(libc::O_CREAT | libc::O_WRONLY).unwrap();
        for recorded in [vec![], vec![nr("openat"), nr("fchmodat"), nr("mkdirat")]] {
            let prog = compile_recording(&names, OnDenied::Errno, Arch::X86_64, &recorded, &[Family::Unix]).unwrap();
            let run = |name: &str, args: [u64; 6]| tree::bpf::run(&prog, x86, nr(name), args);
            let passes = |name: &str| {
                if recorded.contains(&nr(name)) {
                    RET_USER_NOTIF
                } else {
                    0x7fff_0000
                }
            };
            assert_eq!(run("fchmodat", [0, 0, 0o4755, 0, 0, 0]), eperm);
            assert_eq!(run("fchmodat", [0, 0, 0o755, 0, 0, 0]), passes("fchmodat"));
            assert_eq!(run("fchmod", [3, 0o2750, 0, 0, 0, 0]), eperm);
            assert_eq!(run("openat", [0, 0, creat, 0o6755, 0, 0]), eperm);
            assert_eq!(run("openat", [0, 0, creat, 0o644, 0, 0]), passes("openat"));
            assert_eq!(run("openat", [0, 0, 0, 0o6755, 0, 0]), passes("openat"));
            assert_eq!(run("mkdirat", [0, 0, 0o2775, 0, 0, 0]), eperm);
            assert_eq!(run("openat2", [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
            assert_eq!(run("socket", [1, 1, 0, 0, 0, 0]), 0x7fff_0000, "AF_UNIX");
            for family in [2u64, 10, 16, 17, 40] {
                assert_eq!(run("socket", [family, 1, 0, 0, 0, 0]), eperm, "family {family}");
            }
            assert_eq!(run("socketpair", [1, 1, 0, 0, 0, 0]), 0x7fff_0000);
            assert_eq!(run("socketpair", [2, 1, 0, 0, 0, 0]), eperm);
        }
    }

    /// The program as it was compiled before the search tree: the recorded
    /// syscalls one by one (a guarded one checked first), then seccompiler's
    /// blocks.
    fn reference(names: &BTreeSet<String>, on_denied: OnDenied, recorded: &[u32], families: &[Family]) -> Vec<Insn> {
        let mut prog = prefix(Arch::X86_64);
        for &nr in recorded {
            let name = syscall_name(nr.cast_signed());
            let block = match guard::guard_of(&name) {
                Some(g) => g.bpf(RET_USER_NOTIF, deny_return(on_denied)),
                None => vec![stmt(RET_K, RET_USER_NOTIF)],
            };
            prog.push(jump(JEQ_K, nr, 0, u8::try_from(block.len()).unwrap()));
            prog.extend(block);
        }
        prog.extend(linear(names, on_denied, Arch::X86_64, families).unwrap());
        prog
    }

    #[test]
    fn the_search_tree_answers_every_syscall_as_the_linear_program_does() {
        let x86 = Arch::X86_64.audit();
        let creat = u64::try_from(libc::O_CREAT | libc::O_WRONLY).unwrap();
        let argument_cases: [[u64; 6]; 14] = [
            [0; 6],
            // socket(AF_UNIX), socket(AF_INET6), socket(AF_VSOCK), socket(AF_NETLINK)
            [1, 1, 0, 0, 0, 0],
            [10, 1, 0, 0, 0, 0],
            [40, 1, 0, 0, 0, 0],
            [16, 3, 0, 0, 0, 0],
            // modes with setid bits in each guarded position, creating or not
            [0, 0o4755, creat, 0o2755, 0, 0],
            [0, creat, 0o6755, 0o755, 0, 0],
            [CLONE_NAMESPACES, 0, 0, 0, 0, 0],
            [0x1_0000_0000 | libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            [0, TIOCSTI, 0, 0, 0, 0],
            [0, TIOCLINUX, 0, 0, 0, 0],
            [PER_LINUX, MFD_NOEXEC_SEAL, 0, 0, 0, 0],
            [PERSONALITY_QUERY, MFD_EXEC_BITS, 0, 0, 0, 0],
            [7, 0x5401, u64::MAX, 1, 2, 3],
        ];
        let recorded: Vec<u32> = files::FILE_SYSCALLS
            .iter()
            .filter_map(|(n, _)| names_x86_64::NAMES.iter().find(|(_, m)| m == n).map(|(nr, _)| *nr))
            .collect();
        let all: Vec<String> = GROUPS.iter().map(|g| g.name.to_string()).collect();
        let mut numbers: Vec<u32> = (0..=600).collect();
        numbers.extend([0x3fff_ffff, 0x4000_0000, 0x4000_0001, 0xffff_fffe, u32::MAX]);
        for allow in [vec!["@default".to_string()], vec!["@interpreter".to_string()], all] {
            let names = expand(&allow, Arch::X86_64).unwrap();
            for on_denied in [OnDenied::Errno, OnDenied::Kill] {
                for rec in [&recorded[..], &[]] {
                    let rec: Vec<u32> = rec
                        .iter()
                        .copied()
                        .filter(|nr| names.iter().any(|n| syscall_number(n) == Some(*nr)))
                        .collect();
                    let families = [Family::Unix, Family::Inet6];
                    let fast = compile_recording(&names, on_denied, Arch::X86_64, &rec, &families).unwrap();
                    let slow = reference(&names, on_denied, &rec, &families);
                    assert!(
                        fast.len() * 2 < slow.len(),
                        "{} vs {} instructions",
                        fast.len(),
                        slow.len()
                    );
                    for &nr in &numbers {
                        for args in argument_cases {
                            assert_eq!(
                                tree::bpf::run(&fast, x86, nr, args),
                                tree::bpf::run(&slow, x86, nr, args),
                                "{allow:?} {on_denied:?}: syscall {nr} ({}) with {args:x?}",
                                syscall_name(nr.cast_signed())
                            );
                        }
                    }
                    // A foreign architecture is killed whatever the number.
                    assert_eq!(tree::bpf::run(&fast, 0x4000_0003, 0, [0; 6]), RET_KILL_PROCESS);
                }
            }
        }
    }

    #[test]
    fn the_prefix_kills_foreign_abis_and_answers_clone3_with_enosys() {
        let prog = one("getpid", Arch::X86_64).unwrap();
        assert_eq!((prog[0].code, prog[0].k), (LD_W_ABS, 4));
        assert_eq!((prog[1].code, prog[1].k), (JEQ_K, 0xC000_003E));
        assert_eq!((prog[2].code, prog[2].k), (RET_K, RET_KILL_PROCESS));
        assert_eq!((prog[4].code, prog[4].k), (JGE_K, X32_SYSCALL_BIT));
        assert_eq!((prog[5].code, prog[5].k), (RET_K, RET_KILL_PROCESS));
        assert_eq!((prog[6].code, prog[6].k), (JEQ_K, NR_CLONE3));
        assert_eq!((prog[7].code, prog[7].k), (RET_K, RET_ERRNO | 38));
        let arm = one("getpid", Arch::Aarch64).unwrap();
        assert_eq!(arm[1].k, 0xC000_00B7);
        assert_eq!((arm[4].code, arm[4].k), (JEQ_K, NR_CLONE3), "no x32 check on aarch64");
    }
}

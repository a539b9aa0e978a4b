//! Benchmark support, not part of the sandbox: the floor under ninewall's cost per recorded file access, for
//! `scripts/bench.sh`: a program run under a seccomp filter that sends the
//! calls ninewall records (`seccomp::files::FILE_SYSCALLS`) to a listener,
//! which answers each one with as little as ninewall's listener could do,
//! built from ninewall's own syscall layer.
//!
//! No wall: a measuring instrument.
//!
//! ```text
//! notify_floor MODE PROGRAM [ARGS...]
//!   none     the filter notifies nothing (the baseline: same fork, same exec)
//!   read     receive, read the path from the caller, check the notification
//!            is still valid, let the call continue
//!   resolve  the same, and look the path up beneath the caller's root
//!            (openat2 with RESOLVE_IN_ROOT), as ninewall does for every
//!            access it records, to say whether the path exists and which
//!            path the kernel reaches
//! ```
//!
//! There is no sandbox, no record and no verdict here: a recorded access in
//! `ninewall run` costs at least what `read` costs, and as long as each
//! record says whether its path exists, at least what `resolve` costs. The
//! number of notifications answered is printed on stderr.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use crate::seccomp::files::{Layout, FILE_SYSCALLS};
use crate::seccomp::syscall_number;
use crate::sys;
use seccompiler::sock_filter;

/// What the listener does for each notification.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Read,
    Resolve,
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The recorded syscalls of x86_64: number, and the argument of each path.
fn recorded() -> Vec<(u32, Vec<usize>)> {
    FILE_SYSCALLS
        .iter()
        .filter_map(|(name, layout)| {
            let nr = syscall_number(name)?;
            let paths = match *layout {
                Layout::Open(_, p, _) | Layout::One(_, p, _) => vec![p],
                Layout::Openat2 | Layout::Unlinkat => vec![1],
                Layout::Two(_, p1, _, _, p2) => vec![p1, p2],
            };
            Some((nr, paths))
        })
        .collect()
}

/// Every syscall allowed; the recorded ones notified (unless `mode` is
/// `None`); any architecture but x86_64 killed.
fn filter(mode: Mode, recorded: &[(u32, Vec<usize>)]) -> Vec<sock_filter> {
    let action = if mode == Mode::None {
        libc::SECCOMP_RET_ALLOW
    } else {
        libc::SECCOMP_RET_USER_NOTIF
    };
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    for (nr, _) in recorded {
        prog.push(insn(JEQ_K, 0, 1, *nr));
        prog.push(insn(RET_K, 0, 0, action));
    }
    prog.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    prog
}

/// `notify_floor MODE PROGRAM [ARGS...]` (the arguments after the program
/// name): runs PROGRAM under the floor listener; its exit code.
pub fn notify_floor(args: &[String]) -> ExitCode {
    let (mode, program) = match args.split_first() {
        Some((m, rest)) if !rest.is_empty() => match m.as_str() {
            "none" => (Mode::None, rest),
            "read" => (Mode::Read, rest),
            "resolve" => (Mode::Resolve, rest),
            _ => return usage(),
        },
        _ => return usage(),
    };
    match run(mode, program) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("notify_floor: {e}");
            ExitCode::from(125)
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: notify_floor none|read|resolve PROGRAM [ARGS...]");
    ExitCode::from(2)
}

fn run(mode: Mode, program: &[String]) -> Result<ExitCode, String> {
    let (parent_end, child_end) = sys::socketpair().map_err(|e| format!("socketpair: {e}"))?;
    let recorded = recorded();
    let prog = filter(mode, &recorded);
    let (cmd, cmd_args) = program.split_first().ok_or("no program")?;
    let pid = sys::fork().map_err(|e| format!("fork: errno {e}"))?;
    if pid == 0 {
        drop(parent_end);
        let listener = sys::set_no_new_privs().and_then(|()| sys::seccomp_install_listener(&prog));
        // The listener goes to the parent; the program gets none of it.
        match listener.and_then(|fd| {
            let sent = sys::send_fd(child_end.as_raw_fd(), fd);
            sys::close(fd);
            sent
        }) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("notify_floor: seccomp: errno {e}");
                sys::exit_now(125);
            }
        }
        drop(child_end);
        let e = std::process::Command::new(cmd).args(cmd_args).exec();
        eprintln!("notify_floor: {cmd}: {e}");
        sys::exit_now(127);
    }
    drop(child_end);
    let listener = sys::recv_fd(parent_end.as_raw_fd())
        .map_err(|e| format!("receiving the listener: {e}"))?
        .ok_or("the child sent no listener")?;
    let answered = listen(mode, &listener, &recorded);
    drop(listener);
    let (_, status) = sys::waitpid(pid, 0).map_err(|e| format!("waitpid: errno {e}"))?;
    eprintln!("notify_floor: {answered} notifications answered");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX)))
}

/// Answers notifications until no process uses the filter; how many.
fn listen(mode: Mode, listener: &OwnedFd, recorded: &[(u32, Vec<usize>)]) -> u64 {
    let fd = listener.as_raw_fd();
    sys::notif_sync_wakeup(fd);
    let mut root: Option<OwnedFd> = None;
    let mut answered = 0;
    loop {
        let n = match sys::notif_recv(fd) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !sys::pipe_hung_up(fd) => continue,
            Err(_) => return answered,
        };
        let args = recorded
            .iter()
            .find(|(nr, _)| i32::try_from(*nr) == Ok(n.nr))
            .map_or(&[][..], |(_, a)| a);
        for &arg in args {
            let path = sys::read_remote_cstr(n.pid, n.args.get(arg).copied().unwrap_or(0));
            if mode == Mode::Resolve {
                if root.is_none() {
                    root = sys::open_root_of(n.pid);
                }
                if let (Some(r), Ok(p)) = (&root, &path) {
                    // Relative paths (rare in what this is measured with) are
                    // looked up from the root: the same work as from a cwd.
                    let absolute = if p.starts_with(b"/") {
                        p.clone()
                    } else {
                        [b"/".as_slice(), p].concat()
                    };
                    std::hint::black_box(sys::resolve_in_root(r.as_raw_fd(), &absolute, false));
                }
            }
        }
        if sys::notif_valid(fd, n.id) {
            let _ = sys::notif_continue(fd, n.id);
            answered += 1;
        }
    }
}

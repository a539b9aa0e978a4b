//! Identity and process: ids, fork, namespaces by `unshare`, credentials,
//! `wait`, `kill`, `execve`.
//!
//! Walls 3 and 5.

use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::ptr;

use libc::{c_char, c_int, c_ulong};

use super::{check, errno, retry, Errno, SysResult};

/// Effective uid and gid of this process.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// This process's pid (child-safe).
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// This process's parent pid, as seen from its pid namespace (child-safe).
pub fn getppid() -> i32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// `fork()`. Returns 0 in the child (child-safe).
pub fn fork() -> SysResult<i32> {
    // SAFETY: fork has no memory preconditions. The callers run only child-safe
    // code in the child until execve or _exit.
    check(unsafe { libc::fork() })
}

/// `unshare(flags)` (child-safe).
pub fn unshare(flags: c_int) -> SysResult<()> {
    // SAFETY: unshare takes only an integer.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Kill this process with `sig` when the thread that forked it exits (child-safe).
pub fn set_parent_death_signal(sig: c_int) -> SysResult<()> {
    // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, c_ulong::from(sig.cast_unsigned()), 0, 0, 0) }).map(drop)
}

/// `PR_SET_DUMPABLE 0`: no core dumps, no ptrace, `/proc/PID` owned by root
/// (child-safe).
pub fn set_not_dumpable() -> SysResult<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(drop)
}

/// `PR_SET_DUMPABLE 1` (child-safe).
pub fn set_dumpable() -> SysResult<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) }).map(drop)
}

/// Drops every supplementary group (child-safe).
pub fn clear_groups() -> SysResult<()> {
    // SAFETY: a zero-length list; the pointer is not read.
    check(unsafe { libc::setgroups(0, ptr::null()) }).map(drop)
}

/// `setresgid(g, g, g)` (child-safe).
pub fn set_gid(gid: u32) -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::setresgid(gid, gid, gid) }).map(drop)
}

/// `setresuid(u, u, u)` (child-safe).
pub fn set_uid(uid: u32) -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// A user namespace whose only purpose is its id mapping (for an idmapped
/// mount): uid `from_uid` and gid `from_gid` map to `to`.
///
/// A child is born in the new namespace (`clone` with `CLONE_NEWUSER`), and
/// exits at once; it shares our memory and we sleep until it has exited
/// (`CLONE_VM | CLONE_VFORK`), so there is no copy of this process and no
/// pipe. Its maps are written, and its namespace opened, while it is a
/// zombie (its credentials, and so its namespace, live until it is reaped);
/// then it is reaped and the namespace lives on through the returned
/// descriptor. The maps are written by root (`CAP_SETUID`, `CAP_SETGID`
/// over the parent namespace), which needs no `setgroups` "deny".
pub fn idmap_userns(from_uid: u32, from_gid: u32, to: u32) -> std::io::Result<OwnedFd> {
    extern "C" fn born(_: *mut libc::c_void) -> c_int {
        0
    }
    const STACK: usize = 16 * 1024;
    let mut stack = vec![0u8; STACK];
    // The stack grows down: its top, 16-byte aligned.
    let top = stack.as_mut_ptr().wrapping_add(STACK);
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: `born` touches nothing but its own frame on `stack`, which
    // outlives the child (CLONE_VFORK: we resume only once it has exited).
    let pid = unsafe {
        libc::clone(
            born,
            top.cast(),
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let result = (|| {
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("{from_uid} {to} 1\n"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("{from_gid} {to} 1\n"))?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    let _ = waitpid(pid, 0);
    drop(stack);
    result
}

/// `sethostname` (child-safe).
pub fn set_hostname(name: &[u8]) -> SysResult<()> {
    // SAFETY: the pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Seconds of a clock (child-safe).
pub fn clock_seconds(clock: libc::clockid_t) -> SysResult<i64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    check(unsafe { libc::clock_gettime(clock, &raw mut ts) })?;
    Ok(ts.tv_sec)
}

/// `setsid()` (child-safe).
pub fn setsid() -> SysResult<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// `waitpid` with `EINTR` retried (child-safe). Returns (pid, status).
pub fn waitpid(pid: i32, flags: c_int) -> SysResult<(i32, c_int)> {
    retry(|| {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid, writable int.
        let r = check(unsafe { libc::waitpid(pid, &raw mut status, flags) })?;
        Ok((r, status))
    })
}

/// `kill(pid, sig)` (child-safe).
pub fn kill(pid: i32, sig: c_int) -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `_exit(code)`: no destructors, no atexit handlers (child-safe).
pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit never returns and needs no cleanup from us.
    unsafe { libc::_exit(code) }
}

/// `execve`; returns only on failure (child-safe). An array whose last
/// pointer is not null is refused with `EINVAL`.
///
/// # Safety
///
/// Every pointer in `argv` and `envp` but the last must point to a
/// NUL-terminated string that stays alive and unchanged for the call (the
/// kernel reads them; nothing here can check that).
pub unsafe fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno {
    if argv.last() != Some(&ptr::null()) || envp.last() != Some(&ptr::null()) {
        return libc::EINVAL;
    }
    // SAFETY: both arrays are null-terminated (checked above); the caller
    // promises that their strings are alive for the duration of the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno()
}

/// Whether child `pid` has already ended (child-safe; does not reap).
pub fn has_exited(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain data, filled by waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid and writable; WNOWAIT leaves the child waitable.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid.cast_unsigned(),
            &raw mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is valid to read after a successful waitid.
    r == 0 && unsafe { info.si_pid() } == pid
}

/// Whether this process's parent runs the same program file as this one
/// (`/proc/PID/exe` of both: one inode). Reading the parent's needs the
/// right to look at it (the same user, or root).
pub fn parent_runs_this_program() -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/exe")?;
    let parent = std::fs::metadata(format!("/proc/{}/exe", getppid()))?;
    Ok((own.dev(), own.ino()) == (parent.dev(), parent.ino()))
}

/// `buf` filled from the kernel's random source (`getrandom`, blocking until
/// it is seeded).
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = buf.get_mut(done..).unwrap_or_default();
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n.cast_unsigned();
    }
    Ok(())
}

/// CPU time the calling thread has used, in nanoseconds
/// (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if r != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

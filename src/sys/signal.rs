//! Signal masks, dispositions and the supervisor's `signalfd`.
//!
//! Wall 5 (signals forwarded to the sandbox, none lost).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::c_int;

use super::{check, SysResult};

/// A signal set holding `signals`.
pub fn sigset(signals: &[c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&raw mut set) };
    for &s in signals {
        // SAFETY: `set` is a valid sigset_t; invalid numbers are rejected by the call.
        unsafe { libc::sigaddset(&raw mut set, s) };
    }
    set
}

/// Replaces the calling thread's signal mask (child-safe).
pub fn set_signal_mask(set: &libc::sigset_t) -> SysResult<()> {
    // SAFETY: `set` is a valid sigset_t; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, set, ptr::null_mut()) };
    if r != 0 {
        Err(r)
    } else {
        Ok(())
    }
}

/// Adds `signals` to the calling thread's mask.
pub fn block_signals(signals: &[c_int]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is a valid sigset_t.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// A signalfd receiving `signals` (which must be blocked).
pub fn signalfd(signals: &[c_int]) -> io::Result<OwnedFd> {
    let set = sigset(signals);
    // SAFETY: `set` is a valid sigset_t; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &raw const set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd, if any.
pub fn read_signal(fd: RawFd) -> Option<c_int> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe { libc::read(fd, (&raw mut info).cast(), size) };
    (usize::try_from(n) == Ok(size)).then_some(info.ssi_signo.cast_signed())
}

/// Sets every signal's disposition to the default (child-safe). Ignored signals
/// would otherwise stay ignored across execve.
pub fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is a valid disposition; numbers the C library reserves
        // are refused with EINVAL, which is harmless here.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Installs `handler` for each of `signals`, with `SA_RESTART` (child-safe).
pub fn set_handler(signals: &[c_int], handler: extern "C" fn(c_int)) -> SysResult<()> {
    for &sig in signals {
        // SAFETY: sigaction is plain data; all fields are set below.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = handler as usize;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: `act` is a valid sigaction whose handler only calls kill(2).
        check(unsafe { libc::sigaction(sig, &raw const act, ptr::null_mut()) })?;
    }
    Ok(())
}

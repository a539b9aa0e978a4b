//! Process handles that cannot reach a process that reused the pid.
//!
//! Wall 5 and the daemon.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::c_int;

/// A process handle that stays valid after the process is reaped (a pidfd), so
/// a signal sent through it can never reach a process that reused the pid.
#[derive(Debug, Clone)]
pub struct ProcessHandle(std::sync::Arc<OwnedFd>);

impl ProcessHandle {
    /// A handle of child `pid`, which must not have been reaped yet.
    pub fn open(pid: i32) -> io::Result<ProcessHandle> {
        // SAFETY: integers only.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pidfd_open returned a fresh descriptor that we now own.
        Ok(ProcessHandle(std::sync::Arc::new(unsafe {
            OwnedFd::from_raw_fd(fd as RawFd)
        })))
    }

    /// Sends `sig`; an ended process is not an error worth reporting.
    pub fn signal(&self, sig: c_int) {
        // SAFETY: a pidfd we own, a signal number, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
    }
}

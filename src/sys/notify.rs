//! The seccomp user-notification listener: receive, answer, and the hand-over
//! between the listener's thread and the supervisor.
//!
//! Wall 8 and provenance.

use std::io;
use std::os::fd::RawFd;
use std::ptr;

use super::fd::close;
use super::seccomp::seccomp_filter;
use super::{check_long, errno, SysResult};

/// Installs a seccomp filter and returns its notification listener fd
/// (child-safe; needs `no_new_privs`).
pub fn seccomp_install_listener(program: &[seccompiler::sock_filter]) -> SysResult<RawFd> {
    seccomp_filter(program, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER).map(|fd| fd as RawFd)
}

/// A page shared between init and the MBU across fork, for handing over the
/// seccomp listener. The MBU's filter is installed by then: it sleeps in
/// `futex` only if the filter allows that, and otherwise spins without a
/// syscall.
pub struct Handoff {
    words: *const std::sync::atomic::AtomicI32,
}

const HANDOFF_EMPTY: i32 = 0;
const HANDOFF_READY: i32 = 1;
const HANDOFF_TAKEN: i32 = 2;

impl Handoff {
    /// Maps the shared page (child-safe).
    pub fn new() -> SysResult<Handoff> {
        // SAFETY: an anonymous shared mapping; no file, no fixed address.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Handoff { words: p.cast() })
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicI32 {
        // SAFETY: the mapping is 4096 bytes, zero-filled, page-aligned and never
        // unmapped (it dies with the process); i is 0 or 1.
        unsafe { &*self.words.add(i.min(1)) }
    }

    /// MBU: publishes the listener fd; with `futex`, wakes init (the only
    /// syscall, and only if the MBU's filter allows it).
    pub fn publish(&self, fd: RawFd, futex: bool) {
        use std::sync::atomic::Ordering;
        self.word(1).store(fd, Ordering::Relaxed);
        self.word(0).store(HANDOFF_READY, Ordering::Release);
        if futex {
            futex_wake(self.word(0));
        }
    }

    /// MBU: waits until init has taken the fd, asleep in `futex` if the
    /// filter allows it, else spinning (no syscall at all).
    pub fn wait_taken(&self, futex: bool) {
        use std::sync::atomic::Ordering;
        loop {
            let state = self.word(0).load(Ordering::Acquire);
            if state == HANDOFF_TAKEN {
                return;
            }
            if futex {
                futex_wait(self.word(0), state, None);
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Init: sleeps until the MBU publishes or wakes it, or `us` pass.
    pub fn wait_published(&self, us: i64) {
        let ts = libc::timespec {
            tv_sec: us / 1_000_000,
            tv_nsec: us % 1_000_000 * 1000,
        };
        futex_wait(self.word(0), HANDOFF_EMPTY, Some(&ts));
    }

    /// Init: the published fd, if any yet.
    pub fn published(&self) -> Option<RawFd> {
        use std::sync::atomic::Ordering;
        (self.word(0).load(Ordering::Acquire) == HANDOFF_READY).then(|| self.word(1).load(Ordering::Relaxed))
    }

    /// Init: lets the MBU go on (and wakes it, if it sleeps).
    pub fn taken(&self) {
        self.word(0).store(HANDOFF_TAKEN, std::sync::atomic::Ordering::Release);
        futex_wake(self.word(0));
    }

    /// Whether nothing was published yet.
    pub fn is_empty(&self) -> bool {
        self.word(0).load(std::sync::atomic::Ordering::Acquire) == HANDOFF_EMPTY
    }
}

/// `FUTEX_WAIT` on `word` while it holds `expected` (child-safe). Not
/// private: the word is in a mapping shared by two processes.
fn futex_wait(word: &std::sync::atomic::AtomicI32, expected: i32, timeout: Option<&libc::timespec>) {
    // SAFETY: `word` is a valid, aligned 32-bit word for the duration of the
    // call; `timeout` is a valid timespec or null. Spurious returns (EAGAIN,
    // EINTR, ETIMEDOUT) are handled by the callers' loops.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            timeout.map_or(ptr::null(), std::ptr::from_ref::<libc::timespec>),
        )
    };
}

/// `FUTEX_WAKE` of every waiter on `word` (child-safe).
fn futex_wake(word: &std::sync::atomic::AtomicI32) {
    // SAFETY: `word` is a valid, aligned 32-bit word; no other argument is read.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Sleeps `us` microseconds (child-safe).
pub fn nap(us: i64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: us * 1000,
    };
    // SAFETY: `ts` is a valid timespec; no remainder is asked for.
    unsafe { libc::nanosleep(&raw const ts, ptr::null_mut()) };
}

/// Copies descriptor `fd` of process `pid` into this process (child-safe).
pub fn take_fd(pid: i32, fd: RawFd) -> SysResult<RawFd> {
    // SAFETY: integers only.
    let pidfd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })? as RawFd;
    // SAFETY: integers only; pidfd is the descriptor just opened.
    let r = check_long(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0u32) });
    close(pidfd);
    Ok(r? as RawFd)
}

/// One seccomp notification: a syscall waiting for the supervisor.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    /// Its id, for the answer.
    pub id: u64,
    /// The calling thread, in the supervisor's pid namespace.
    pub pid: i32,
    /// The syscall number.
    pub nr: i32,
    /// Its arguments.
    pub args: [u64; 6],
}

/// Receives one pending seccomp notification.
pub fn notif_recv(listener: RawFd) -> io::Result<Notification> {
    // The kernel's structure may be larger than libc's: ask once, use the larger.
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let len = *SIZE.get_or_init(|| {
        let kernel = notif_sizes().map_or(0, |s| usize::from(s.seccomp_notif));
        kernel.max(std::mem::size_of::<libc::seccomp_notif>())
    });
    let mut buf = vec![0u64; len.div_ceil(8)];
    // SAFETY: `buf` is zeroed (as the kernel requires) and at least as large
    // as the kernel's seccomp_notif.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, buf.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the buffer now holds a seccomp_notif, aligned for u64.
    let notif = unsafe { &*(buf.as_ptr().cast::<libc::seccomp_notif>()) };
    Ok(Notification {
        id: notif.id,
        pid: notif.pid.cast_signed(),
        nr: notif.data.nr,
        args: notif.data.args,
    })
}

/// Whether notification `id` is still pending (its caller still waiting): a
/// read of the caller's memory before this check might have read a reused pid.
pub fn notif_valid(listener: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: `id` is a valid u64 for the ioctl to read.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &raw mut id) == 0 }
}

/// Lets notification `id`'s syscall run as if no filter had stopped it (the
/// other walls still apply).
pub fn notif_continue(listener: RawFd, id: u64) -> io::Result<()> {
    notif_send(listener, id, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
}

fn notif_send(listener: RawFd, id: u64, error: i32, flags: u32) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error,
        flags,
    };
    // SAFETY: `resp` is a valid seccomp_notif_resp.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &raw mut resp) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Answers notification `id`: the syscall fails with `errno`.
pub fn notif_refuse(listener: RawFd, id: u64, errno: i32) -> io::Result<()> {
    notif_send(listener, id, -errno, 0)
}

/// Asks the kernel to wake the supervisor on the CPU of the notifying thread
/// and to hand back to it synchronously (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`,
/// Linux 6.6): a notification round trip then costs microseconds, not tens.
/// Older kernels refuse it, which only makes recording slower.
pub fn notif_sync_wakeup(listener: RawFd) -> bool {
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
    // SAFETY: the flags are passed by value.
    unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        ) == 0
    }
}

/// The kernel's seccomp notification structure sizes; `None` when it has no
/// user notification.
fn notif_sizes() -> Option<libc::seccomp_notif_sizes> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: `sizes` is a valid, writable seccomp_notif_sizes.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_NOTIF_SIZES, 0u32, &raw mut sizes) };
    (r == 0).then_some(sizes)
}

/// Whether the kernel supports seccomp user notification.
pub fn seccomp_notify_supported() -> bool {
    notif_sizes().is_some()
}

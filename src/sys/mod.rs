//! The OS layer: every `unsafe` block of ninewall, each a thin wrapper over one
//! system call, with a `// SAFETY:` comment that says why the call is sound.
//!
//! Nothing outside this module calls `libc` functions that need `unsafe`; the
//! rest of the crate sees safe functions with typed results, except where the
//! caller must promise something the types cannot say (`execve`'s pointer
//! arrays), which is then an `unsafe fn` with a `# Safety` section.
//!
//! Invariant: the functions marked *child-safe* may be called between `fork` and
//! `execve`: they do not allocate, lock or panic, and report failure as the raw
//! errno. Everything else here is for the supervisor.
//!
//! One file per kind of call: [`process`] (ids, fork, wait, exec), [`fd`]
//! (descriptors and their I/O), [`mount`] (wall 4), [`net`] (wall 6), [`caps`]
//! (wall 3), [`signal`], [`landlock`] (wall 7), [`seccomp`] (wall 8),
//! [`resources`] (wall 9), [`notify`] and [`remote`] (the seccomp listener and
//! what provenance reads of a sandboxed process), [`peer`] (wall 1's view of a
//! client), [`pidfd`].

use std::ffi::CStr;
use std::io;
use std::ptr;

use libc::{c_char, c_int};

pub(crate) mod btrfs;
pub(crate) mod caps;
pub(crate) mod fd;
pub(crate) mod landlock;
pub(crate) mod mount;
pub(crate) mod net;
pub(crate) mod notify;
pub(crate) mod peer;
pub(crate) mod pidfd;
pub(crate) mod process;
pub(crate) mod remote;
pub(crate) mod resources;
pub(crate) mod seccomp;
pub(crate) mod signal;

pub(crate) use caps::*;
pub(crate) use fd::*;
pub(crate) use landlock::*;
pub(crate) use mount::*;
pub(crate) use net::*;
pub(crate) use notify::*;
pub(crate) use peer::*;
pub(crate) use pidfd::*;
pub(crate) use process::*;
pub(crate) use remote::*;
pub(crate) use resources::*;
pub(crate) use seccomp::*;
pub(crate) use signal::*;

/// A raw errno value from a failed system call.
pub type Errno = i32;
/// Result of a child-safe wrapper.
pub type SysResult<T> = Result<T, Errno>;

fn errno() -> Errno {
    // `last_os_error` reads errno and builds an `Os(code)` value: no allocation.
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn check(ret: c_int) -> SysResult<c_int> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> SysResult<libc::c_long> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// Retries a call that failed with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> SysResult<T>) -> SysResult<T> {
    loop {
        match f() {
            Err(libc::EINTR) => {}
            other => return other,
        }
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

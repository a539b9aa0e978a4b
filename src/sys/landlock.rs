//! Wall 7: the Landlock system calls.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::ptr;

use super::fd::close;
use super::mount::open_path_no_symlinks;
use super::{check_long, SysResult};

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
const LANDLOCK_RULE_NET_PORT: libc::c_int = 2;

/// The kernel's Landlock ABI version, 0 when Landlock is unavailable.
pub fn landlock_abi() -> u32 {
    // SAFETY: a null attribute with size 0 and the VERSION flag only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(r).unwrap_or(0)
}

/// A new ruleset handling these rights; returns its (close-on-exec) fd
/// (child-safe).
pub fn landlock_create_ruleset(fs: u64, net: u64, scoped: u64) -> SysResult<RawFd> {
    let attr = RulesetAttr {
        handled_access_fs: fs,
        handled_access_net: net,
        scoped,
    };
    // SAFETY: `attr` is a valid ruleset attribute of the size passed; unknown
    // trailing fields are zero, which older kernels accept.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const attr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    })?;
    Ok(fd as RawFd)
}

/// Grants `access` beneath `path` (opened without following symlinks)
/// (child-safe).
pub fn landlock_add_path(ruleset: RawFd, path: &CStr, access: u64) -> SysResult<()> {
    let fd = open_path_no_symlinks(path)?;
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: fd,
    };
    // SAFETY: `attr` is a valid, packed path_beneath attribute; `fd` is open.
    let r = check_long(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &raw const attr,
            0u32,
        )
    });
    close(fd);
    r.map(drop)
}

/// Grants `access` on a TCP port (child-safe).
pub fn landlock_add_port(ruleset: RawFd, port: u16, access: u64) -> SysResult<()> {
    let attr = NetPortAttr {
        allowed_access: access,
        port: u64::from(port),
    };
    // SAFETY: `attr` is a valid net_port attribute.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_NET_PORT,
            &raw const attr,
            0u32,
        )
    })
    .map(drop)
}

/// Enforces the ruleset on this process and its future children (child-safe;
/// needs `no_new_privs`).
pub fn landlock_restrict_self(ruleset: RawFd) -> SysResult<()> {
    // SAFETY: integers only.
    check_long(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) }).map(drop)
}

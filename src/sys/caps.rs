//! Wall 3: the capability sets and `no_new_privs`.

use libc::{c_int, c_ulong};

use super::{check, check_long, errno, SysResult};

/// Removes every capability from the bounding set, up to the last one this
/// kernel knows (child-safe).
pub fn drop_bounding_set() -> SysResult<()> {
    for cap in 0..=63u64 {
        // SAFETY: integers only.
        let known = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as c_ulong, 0, 0, 0) };
        if known < 0 {
            // EINVAL: past the last capability of this kernel.
            return if errno() == libc::EINVAL { Ok(()) } else { Err(errno()) };
        }
        // SAFETY: integers only.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) })?;
    }
    Ok(())
}

/// Clears the ambient set (child-safe).
pub fn clear_ambient() -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong, 0, 0, 0) }).map(drop)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the effective, permitted and inheritable sets (child-safe).
pub fn clear_capabilities() -> SysResult<()> {
    let mut header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: version 3 takes two CapData entries, which `data` holds.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) }).map(drop)
}

/// `PR_SET_NO_NEW_PRIVS` (child-safe).
pub fn set_no_new_privs() -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

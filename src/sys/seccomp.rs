//! Wall 8: installing a seccomp filter.

use super::{check_long, SysResult};

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Installs a seccomp filter on this thread (child-safe; needs `no_new_privs`).
pub fn seccomp_install(program: &[seccompiler::sock_filter]) -> SysResult<()> {
    seccomp_filter(program, 0).map(drop)
}

pub(super) fn seccomp_filter(program: &[seccompiler::sock_filter], flags: libc::c_ulong) -> SysResult<libc::c_long> {
    let Ok(len) = libc::c_ushort::try_from(program.len()) else {
        return Err(libc::E2BIG);
    };
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points to `len` valid BPF instructions that outlive the
    // call; the kernel copies them.
    check_long(unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &raw const prog) })
}

//! Who is on the other end of a socket (wall 1: the policy gate), and this
//! process's own groups.

use std::io;
use std::os::fd::RawFd;
use std::ptr;

/// The uid, gid and pid the kernel recorded for the peer of a connected unix
/// socket when it connected (`SO_PEERCRED`): not what the peer says it is.
pub fn peer_credentials(sock: RawFd) -> io::Result<(u32, u32, i32)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` describe a buffer of exactly a ucred.
    let r = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, cred.gid, cred.pid))
}

/// The peer's supplementary groups at connect time (`SO_PEERGROUPS`).
pub fn peer_groups(sock: RawFd) -> io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                sock,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: `len` now says how much is needed.
        if e.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65536 {
            groups.resize(
                (len as usize / std::mem::size_of::<libc::gid_t>()).max(groups.len() * 2),
                0,
            );
            continue;
        }
        return Err(e);
    }
}

/// This process's supplementary groups.
pub fn own_groups() -> Vec<u32> {
    // SAFETY: a zero size asks for the count only.
    let n = unsafe { libc::getgroups(0, ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut groups = vec![0 as libc::gid_t; n.unsigned_abs() as usize];
    // SAFETY: `groups` has room for `n` entries.
    let m = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(m.max(0).unsigned_abs() as usize);
    groups
}

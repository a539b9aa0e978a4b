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

/// The thread's file-system ids and supplementary groups (`setfsuid`,
/// `setfsgid`, `setgroups` as raw system calls: in the kernel each acts on
/// the calling thread alone; glibc's `setgroups` would change every thread).
struct ThreadIds {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
}

impl ThreadIds {
    fn current() -> io::Result<ThreadIds> {
        let mut groups = vec![0 as libc::gid_t; 65536];
        // SAFETY: `groups` has room for the kernel's maximum of 65536 entries.
        let n = unsafe { libc::syscall(libc::SYS_getgroups, groups.len(), groups.as_mut_ptr()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(usize::try_from(n).unwrap_or(0));
        Ok(ThreadIds {
            // An invalid id (-1) changes nothing and returns the current one.
            fsuid: set_fsuid(u32::MAX),
            fsgid: set_fsgid(u32::MAX),
            groups,
        })
    }

    /// Makes these the thread's ids; `Err` if the kernel kept others.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: `groups` holds `len` valid gids.
        let r = unsafe { libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        set_fsgid(self.fsgid);
        set_fsuid(self.fsuid);
        if set_fsgid(u32::MAX) != self.fsgid || set_fsuid(u32::MAX) != self.fsuid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}

fn set_fsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes an id and returns the previous one; no memory.
    let previous = unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    u32::try_from(previous).unwrap_or(u32::MAX)
}

fn set_fsgid(gid: u32) -> u32 {
    // SAFETY: setfsgid takes an id and returns the previous one; no memory.
    let previous = unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    u32::try_from(previous).unwrap_or(u32::MAX)
}

/// Whose permissions an open is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// The supplementary groups.
    pub groups: &'a [u32],
}

/// Opens the directory `path`, following no symlink or magic link in any
/// component; with `as_person`, as that user would: every permission check on
/// the way is made against their ids (root's file capabilities are not in
/// effect while they are). Only the calling thread borrows the ids, for this
/// one `openat2`, and has its own back before this returns.
///
/// Borrowing ids needs `CAP_SETUID` and `CAP_SETGID`; without them the
/// switch fails (`EPERM`) and nothing is opened. A thread that could not get
/// its own ids back aborts the process: it must not go on acting as someone
/// else.
pub fn open_dir(path: &std::ffi::CStr, as_person: Option<Person<'_>>) -> io::Result<std::os::fd::OwnedFd> {
    let Some(person) = as_person else {
        return open_dir_no_symlinks(path);
    };
    let own = ThreadIds::current()?;
    let theirs = ThreadIds {
        fsuid: person.uid,
        fsgid: person.gid,
        groups: person.groups.to_vec(),
    };
    let opened = theirs.enter().and_then(|()| open_dir_no_symlinks(path));
    if own.enter().is_err() {
        eprintln!(
            "ninewall: a thread could not take back its own ids after acting as uid {}; stopping",
            person.uid
        );
        std::process::abort();
    }
    opened
}

fn open_dir_no_symlinks(path: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let how = super::mount::OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is NUL-terminated; `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &raw const how,
            std::mem::size_of_val(&how),
        )
    };
    match RawFd::try_from(fd) {
        // SAFETY: openat2 just returned this descriptor; nothing else owns it.
        Ok(fd) if fd >= 0 => Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Takes descriptor `fd`, which socket activation passed this process to
/// own, as the listening unix stream socket it must be (close-on-exec from
/// now on); an error if it is anything else.
pub fn take_activated_listener(fd: RawFd) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::FromRawFd;
    if !is_listening_unix_socket(fd) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a listening unix stream socket"),
        ));
    }
    super::fd::set_inheritable(fd, false)?;
    // SAFETY: `fd` is open (checked above: a listening socket) and was passed
    // to this process to own; nothing else here has taken it.
    Ok(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
}

/// Whether `fd` is a listening unix stream socket.
fn is_listening_unix_socket(fd: RawFd) -> bool {
    let get = |option: libc::c_int| {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` describe a buffer of exactly one int.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&raw mut value).cast(), &raw mut len) };
        (r == 0).then_some(value)
    };
    get(libc::SO_ACCEPTCONN) == Some(1)
        && get(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && get(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

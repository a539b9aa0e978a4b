//! Every `unsafe` block of ninewall, each a thin wrapper over one system call.
//!
//! Invariant: the functions marked *child-safe* may be called between `fork` and
//! `execve`: they do not allocate, lock or panic, and report failure as the raw
//! errno. Everything else here is for the supervisor.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::{c_char, c_int, c_ulong, c_void};

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
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

// --- identity and process ------------------------------------------------------

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
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as c_ulong, 0, 0, 0) }).map(drop)
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

/// `sethostname` (child-safe).
pub fn set_hostname(name: &[u8]) -> SysResult<()> {
    // SAFETY: the pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Seconds of a clock (child-safe).
pub fn clock_seconds(clock: libc::clockid_t) -> SysResult<i64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    check(unsafe { libc::clock_gettime(clock, &mut ts) })?;
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
        let r = check(unsafe { libc::waitpid(pid, &mut status, flags) })?;
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

/// `execve`; returns only on failure (child-safe). `argv` and `envp` are
/// null-terminated arrays of pointers to NUL-terminated strings that outlive the
/// call.
pub fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno {
    if argv.last() != Some(&ptr::null()) || envp.last() != Some(&ptr::null()) {
        return libc::EINVAL;
    }
    // SAFETY: both arrays are null-terminated (checked above) and their strings
    // are owned by the caller's plan, alive for the duration of the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno()
}

// --- file descriptors ----------------------------------------------------------

/// A pipe with both ends close-on-exec.
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `close(fd)`, errors ignored: the descriptor is gone either way (child-safe).
pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns; callers pass fds they no
    // longer use.
    unsafe { libc::close(fd) };
}

/// Marks every descriptor from `first` up close-on-exec (child-safe).
pub fn cloexec_from(first: u32) -> SysResult<()> {
    // SAFETY: integers only; CLOSE_RANGE_CLOEXEC closes nothing now.
    check(unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int) }).map(drop)
}

/// Closes every descriptor except those in `keep` (at most 8; child-safe, for
/// processes that never exec).
pub fn close_all_except(keep: &[RawFd]) -> SysResult<()> {
    let mut next: u32 = 0;
    let mut sorted = [i32::MAX; 16];
    for (slot, fd) in sorted.iter_mut().zip(keep.iter()) {
        *slot = *fd;
    }
    sorted.sort_unstable();
    for &fd in sorted.iter().filter(|&&fd| fd >= 0 && fd != i32::MAX) {
        let fd = fd as u32;
        if fd > next {
            // SAFETY: integers only.
            check(unsafe { libc::close_range(next, fd - 1, 0) })?;
        }
        next = fd + 1;
    }
    // SAFETY: integers only.
    check(unsafe { libc::close_range(next, u32::MAX, 0) }).map(drop)
}

/// Writes all of `buf` (child-safe).
pub fn write_all(fd: RawFd, buf: &[u8]) -> SysResult<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = buf.get(done..).unwrap_or_default();
        // SAFETY: the pointer and length describe the unwritten part of `buf`.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Reads into `buf` until it is full or end of file; returns the bytes read
/// (child-safe).
pub fn read_full(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = read_once(fd, buf.get_mut(done..).unwrap_or_default())?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// True when the write side of the pipe `fd` reads from has been closed by every
/// holder (child-safe).
pub fn pipe_hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && (p.revents & libc::POLLHUP) != 0
}

/// Opens `path` write-only, writes `data`, closes (child-safe).
pub fn write_file(path: &CStr, data: &[u8]) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) })?;
    let r = write_all(fd, data);
    close(fd);
    r
}

// --- mounts ----------------------------------------------------------------------

/// `mount(2)` (child-safe).
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
    check(unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast::<c_void>(),
        )
    })
    .map(drop)
}

/// `umount2(target, MNT_DETACH)` (child-safe).
pub fn detach(target: &CStr) -> SysResult<()> {
    // SAFETY: `target` is NUL-terminated.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// `mkdir`, where an existing entry is success (child-safe).
pub fn mkdir(path: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Ok(_) | Err(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates an empty file to bind a file onto; an existing entry is success
/// (child-safe). `O_EXCL` makes an existing file answer `EEXIST` before any
/// permission check.
pub fn create_file(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o444 as libc::c_uint,
        )
    };
    match check(fd) {
        Ok(fd) => {
            close(fd);
            Ok(())
        }
        Err(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `symlink(target, link)` (child-safe).
pub fn symlink(target: &CStr, link: &CStr) -> SysResult<()> {
    // SAFETY: both are NUL-terminated.
    check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
}

/// `chdir` (child-safe).
pub fn chdir(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `pivot_root(new_root, put_old)` (child-safe).
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult<()> {
    // SAFETY: both are NUL-terminated; pivot_root has no glibc wrapper.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }).map(drop)
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: c_int = 1;
const AT_RECURSIVE: c_int = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: c_int = 4;
/// `MOUNT_ATTR_RDONLY`.
pub const ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub const ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub const ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_NOEXEC`.
pub const ATTR_NOEXEC: u64 = 0x8;

/// Opens `path` as an `O_PATH` descriptor without following any symlink or
/// magic link on the way (child-safe).
pub fn open_path_no_symlinks(path: &CStr) -> SysResult<RawFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is NUL-terminated; `how` is a valid open_how of the size passed.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })? as RawFd;
    Ok(fd)
}

/// Opens `path` without following any symlink on the way, and clones the mount
/// tree there into a detached tree; returns the tree's fd (child-safe).
pub fn clone_tree(path: &CStr) -> SysResult<RawFd> {
    let fd = open_path_no_symlinks(path)?;
    let empty = c"";
    // SAFETY: `fd` is the O_PATH descriptor just opened; the path is "".
    let tree = check_long(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd,
            empty.as_ptr(),
            (OPEN_TREE_CLONE | libc::O_CLOEXEC | AT_RECURSIVE | libc::AT_EMPTY_PATH) as c_ulong,
        )
    });
    close(fd);
    Ok(tree? as RawFd)
}

fn mount_setattr(dirfd: RawFd, path: &CStr, flags: c_int, set: u64) -> SysResult<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated; `attr` is a valid mount_attr of the size passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Sets mount attributes on every mount of a detached tree (child-safe). Only
/// sets: a flag the host locked on a mount stays as it is.
pub fn set_tree_attrs(tree: RawFd, set: u64) -> SysResult<()> {
    mount_setattr(tree, c"", libc::AT_EMPTY_PATH | AT_RECURSIVE, set)
}

/// Sets mount attributes on the one mount at `path` (child-safe).
pub fn set_mount_attrs(path: &CStr, set: u64) -> SysResult<()> {
    mount_setattr(libc::AT_FDCWD, path, 0, set)
}

/// Attaches a detached tree at `target` (child-safe).
pub fn attach_tree(tree: RawFd, target: &CStr) -> SysResult<()> {
    // SAFETY: `tree` is a mount fd from clone_tree; both paths are NUL-terminated.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    })
    .map(drop)
}

// --- network -----------------------------------------------------------------------

/// `struct ifreq`, with only the flags member of its union.
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Runs `f` with the flags of `lo` (`SIOCGIFFLAGS`) and a datagram socket
/// of the caller's network namespace, closed afterwards (child-safe).
fn with_loopback<T>(f: impl FnOnce(RawFd, IfreqFlags) -> SysResult<T>) -> SysResult<T> {
    // SAFETY: integers only.
    let sock = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    let mut req = IfreqFlags {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: `req` is a valid ifreq-sized buffer with a NUL-terminated name.
    let r =
        check(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req as *mut IfreqFlags) }).and_then(|_| f(sock, req));
    close(sock);
    r
}

/// Brings the loopback interface up (child-safe).
pub fn loopback_up() -> SysResult<()> {
    with_loopback(|sock, mut req| {
        req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: `req` is a valid ifreq-sized buffer with a NUL-terminated name.
        check(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req as *const IfreqFlags) }).map(drop)
    })
}

/// `setns(fd, CLONE_NEWNET)`: joins the network namespace `fd` refers to
/// (child-safe).
pub fn join_net_namespace(fd: RawFd) -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }).map(drop)
}

/// Whether the caller's network namespace holds nothing but a loopback
/// interface that is down, as a new one does (child-safe): `/proc/self/net/dev`
/// lists exactly `lo`, and `SIOCGIFFLAGS` says it is not up.
pub fn net_namespace_is_empty() -> SysResult<bool> {
    let mut buf = [0u8; 1024];
    // SAFETY: the path is NUL-terminated.
    let fd = check(unsafe { libc::open(c"/proc/self/net/dev".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    let len = read_full(fd, &mut buf);
    close(fd);
    let len = len?;
    if len == buf.len() {
        // More than a kilobyte: far more than one interface's line.
        return Ok(false);
    }
    // Two header lines, then one line per interface.
    let data = buf.get(..len).unwrap_or_default();
    let mut interfaces = data.split(|&b| b == b'\n').skip(2).filter(|l| !l.is_empty());
    let only_lo = interfaces
        .next()
        .is_some_and(|l| l.trim_ascii_start().starts_with(b"lo:"))
        && interfaces.next().is_none();
    if !only_lo {
        return Ok(false);
    }
    with_loopback(|_, req| Ok(req.flags & libc::IFF_UP as libc::c_short == 0))
}

/// The namespace type (`CLONE_NEW*`) of a namespace file, and the device and
/// inode of the user namespace that owns it; `None` if `fd` is no namespace
/// file (not on nsfs).
pub fn namespace_of(fd: RawFd) -> io::Result<Option<(c_int, (u64, u64))>> {
    const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
    const NS_GET_USERNS: c_ulong = 0xb701;
    const NS_GET_NSTYPE: c_ulong = 0xb703;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a valid, writable statfs.
    if unsafe { libc::fstatfs(fd, &mut fs) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if fs.f_type as libc::c_long != NSFS_MAGIC {
        return Ok(None);
    }
    // SAFETY: integers only.
    let kind = unsafe { libc::ioctl(fd, NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: integers only; a non-negative result is a new descriptor.
    let owner = unsafe { libc::ioctl(fd, NS_GET_USERNS) };
    if owner < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we now own.
    let owner = unsafe { OwnedFd::from_raw_fd(owner) };
    let meta = std::fs::File::from(owner).metadata()?;
    use std::os::unix::fs::MetadataExt;
    Ok(Some((kind, (meta.dev(), meta.ino()))))
}

/// Makes a new network namespace on the calling *thread* and bind-mounts it
/// on `target`, where it outlives the thread; the caller runs this on a
/// thread of its own, which ends in that namespace.
pub fn new_net_namespace_at(target: &CStr) -> SysResult<()> {
    unshare(libc::CLONE_NEWNET)?;
    mount(Some(c"/proc/thread-self/ns/net"), target, None, libc::MS_BIND, None)
}

// --- capabilities --------------------------------------------------------------------

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
    check_long(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) }).map(drop)
}

/// `PR_SET_NO_NEW_PRIVS` (child-safe).
pub fn set_no_new_privs() -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

// --- signals ---------------------------------------------------------------------------

/// A signal set holding `signals`.
pub fn sigset(signals: &[c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` is a valid sigset_t; invalid numbers are rejected by the call.
        unsafe { libc::sigaddset(&mut set, s) };
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

/// The calling thread's signal mask.
pub fn signal_mask() -> libc::sigset_t {
    // SAFETY: plain data, filled by pthread_sigmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new set only reads the mask into `old`.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, ptr::null(), &mut old) };
    old
}

/// Adds `signals` to the calling thread's mask.
pub fn block_signals(signals: &[c_int]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is a valid sigset_t.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// A signalfd receiving `signals` (which must be blocked).
pub fn signalfd(signals: &[c_int]) -> io::Result<OwnedFd> {
    let set = sigset(signals);
    // SAFETY: `set` is a valid sigset_t; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
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
    let n = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    (n == size as isize).then_some(info.ssi_signo as c_int)
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
        check(unsafe { libc::sigaction(sig, &act, ptr::null_mut()) })?;
    }
    Ok(())
}

/// `poll` on several descriptors, `EINTR` retried; returns their `revents`.
pub fn poll_readable(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<()> {
    loop {
        // SAFETY: `fds` is a valid, writable slice of pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A close-on-exec pipe as raw descriptors (child-safe).
pub fn pipe_raw() -> SysResult<(RawFd, RawFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// One `read`, `EINTR` retried; 0 means end of file.
pub fn read_once(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    retry(|| {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    })
}

// --- Landlock ------------------------------------------------------------------------

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
            &attr as *const RulesetAttr,
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
            &attr as *const PathBeneathAttr,
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
            &attr as *const NetPortAttr,
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

// --- seccomp ---------------------------------------------------------------------------

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const crate::seccomp::Insn,
}

/// Installs a seccomp filter on this thread (child-safe; needs `no_new_privs`).
pub fn seccomp_install(program: &[crate::seccomp::Insn]) -> SysResult<()> {
    seccomp_filter(program, 0).map(drop)
}

fn seccomp_filter(program: &[crate::seccomp::Insn], flags: libc::c_ulong) -> SysResult<libc::c_long> {
    let Ok(len) = libc::c_ushort::try_from(program.len()) else {
        return Err(libc::E2BIG);
    };
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points to `len` valid BPF instructions that outlive the
    // call; the kernel copies them.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const SockFprog,
        )
    })
}

// --- resources -------------------------------------------------------------------------

/// `dup2(from, to)` (child-safe).
pub fn dup2(from: RawFd, to: RawFd) -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Sets a resource limit to (soft, hard), each lowered to the current hard
/// limit if that is lower: a limit is only ever tightened (child-safe).
pub fn lower_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> SysResult<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit.
    check(unsafe { libc::getrlimit(resource, &mut cur) })?;
    let hard = hard.min(cur.rlim_max);
    let new = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid rlimit.
    check(unsafe { libc::setrlimit(resource, &new) }).map(drop)
}

/// Waits for any child, `EINTR` retried; returns (pid, status, CPU ms, max
/// RSS KiB) (child-safe).
pub fn wait_any() -> SysResult<(i32, c_int, u32, u32)> {
    retry(|| {
        let mut status: c_int = 0;
        // SAFETY: rusage is plain data, filled by wait4.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `ru` are valid and writable.
        let pid = check(unsafe { libc::wait4(-1, &mut status, 0, &mut ru) })?;
        let ms = |t: libc::timeval| (t.tv_sec as u64) * 1000 + (t.tv_usec as u64) / 1000;
        let cpu = ms(ru.ru_utime) + ms(ru.ru_stime);
        Ok((
            pid,
            status,
            u32::try_from(cpu).unwrap_or(u32::MAX),
            u32::try_from(ru.ru_maxrss).unwrap_or(u32::MAX),
        ))
    })
}

/// Creates a new file (mode 0444) holding `data` (child-safe).
pub fn write_new_file(path: &CStr, data: &[u8]) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    let fd = check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o444 as libc::c_uint,
        )
    })?;
    let r = write_all(fd, data);
    close(fd);
    r
}

// --- seccomp notification ----------------------------------------------------------------

/// Installs a seccomp filter and returns its notification listener fd
/// (child-safe; needs `no_new_privs`).
pub fn seccomp_install_listener(program: &[crate::seccomp::Insn]) -> SysResult<RawFd> {
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
            timeout.map_or(ptr::null(), |t| t as *const libc::timespec),
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
    unsafe { libc::nanosleep(&ts, ptr::null_mut()) };
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

/// Whether child `pid` has already ended (child-safe; does not reap).
pub fn has_exited(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain data, filled by waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid and writable; WNOWAIT leaves the child waitable.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is valid to read after a successful waitid.
    r == 0 && unsafe { info.si_pid() } == pid
}

/// A connected pair of close-on-exec unix sockets, for passing descriptors.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[repr(C)]
union CmsgSpace {
    buf: [u8; 64],
    _align: libc::cmsghdr,
}

/// Sends descriptor `fd` over unix socket `sock` (child-safe).
pub fn send_fd(sock: RawFd, fd: RawFd) -> SysResult<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = CmsgSpace { buf: [0; 64] };
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space_len = unsafe { libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) } as usize;
    // SAFETY: reading the union's bytes as a pointer target; 64 bytes is more
    // than CMSG_SPACE(4).
    msg.msg_control = unsafe { space.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = space_len;
    // SAFETY: msg_control points to space_len valid bytes, so the first header fits.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: `cmsg` points into `space`, with room for a header and one int.
    unsafe {
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as usize;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
    }
    // SAFETY: `msg` and everything it points to are valid for the call.
    retry(|| check_long(unsafe { libc::sendmsg(sock, &msg, 0) } as libc::c_long)).map(drop)
}

/// Receives one descriptor sent with [`send_fd`]; `None` at end of stream.
pub fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = CmsgSpace { buf: [0; 64] };
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: as in send_fd.
    msg.msg_control = unsafe { space.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = 64;
    // SAFETY: `msg` points to valid buffers.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR checks the length.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null header from the kernel, of SCM_RIGHTS with one int.
    unsafe {
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Ok(None);
        }
        let fd = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
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
        pid: notif.pid as i32,
        nr: notif.data.nr,
        args: notif.data.args,
    })
}

/// Whether notification `id` is still pending (its caller still waiting): a
/// read of the caller's memory before this check might have read a reused pid.
pub fn notif_valid(listener: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: `id` is a valid u64 for the ioctl to read.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id as *mut u64) == 0 }
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
    if unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a NUL-terminated string (at most 4096 bytes) from process `pid`'s
/// memory at `addr`.
pub fn read_remote_cstr(pid: i32, addr: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut addr = addr;
    while out.len() < 4096 {
        // Never read across a page boundary in one go: the next page may be unmapped.
        let to_page_end = 4096 - (addr % 4096) as usize;
        let mut chunk = vec![0u8; to_page_end.min(256)];
        let local = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut c_void,
            iov_len: chunk.len(),
        };
        // SAFETY: `local` describes `chunk`; the kernel checks `remote`.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return Err(io::Error::last_os_error());
        }
        let got = chunk.get(..n as usize).unwrap_or_default();
        if let Some(end) = got.iter().position(|&b| b == 0) {
            out.extend_from_slice(got.get(..end).unwrap_or_default());
            return Ok(out);
        }
        out.extend_from_slice(got);
        addr += n as u64;
    }
    Ok(out)
}

/// Reads `N` bytes from process `pid`'s memory at `addr`.
pub fn read_remote<const N: usize>(pid: i32, addr: u64) -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: N,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: N,
    };
    // SAFETY: `local` describes `buf`; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n != N as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

/// Opens the root directory of process `pid` (its `/proc/PID/root`).
pub fn open_root_of(pid: i32) -> Option<OwnedFd> {
    let root = std::ffi::CString::new(format!("/proc/{pid}/root")).ok()?;
    // SAFETY: `root` is NUL-terminated.
    let fd = unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY) };
    // SAFETY: a fresh descriptor we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Looks `path` up beneath `rootfd` (a sandbox's root), symlinks resolved
/// inside that root and never out of it: the path the kernel would reach, and
/// (if `want_dir`; else `false`) whether it is a directory; `None` if it does
/// not exist.
pub fn resolve_in_root(rootfd: RawFd, path: &[u8], want_dir: bool) -> Option<(String, bool)> {
    let rel = relative(path)?;
    let dir_of = |fd| if want_dir { is_dir_fd(fd) } else { Some(false) };
    // Most paths hold no symlink: then the path the kernel reaches is the
    // lexical one, and one openat2 that refuses symlinks says so without
    // asking /proc for the name. A symlink (ELOOP), or anything unexpected,
    // takes the general way below.
    match open_in_root(rootfd, &rel, libc::RESOLVE_NO_SYMLINKS) {
        Ok(fd) => {
            let dir = dir_of(fd);
            close(fd);
            return Some((lexical(path), dir?));
        }
        Err(libc::ENOENT) => return None,
        Err(_) => {}
    }
    let fd = open_in_root(rootfd, &rel, 0).ok()?;
    let dir = dir_of(fd);
    // The object's path in the sandbox's own mount tree (which this process's
    // root does not reach, so the kernel names it from that tree's root).
    let real = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.display().to_string());
    close(fd);
    Some((real?, dir?))
}

/// Whether `path` names something beneath `rootfd` (symlinks followed inside
/// it): one `openat2` for a path without symlinks.
pub fn exists_in_root(rootfd: RawFd, path: &[u8]) -> bool {
    let Some(rel) = relative(path) else {
        return false;
    };
    let fd = match open_in_root(rootfd, &rel, libc::RESOLVE_NO_SYMLINKS) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return false,
        Err(_) => match open_in_root(rootfd, &rel, 0) {
            Ok(fd) => fd,
            Err(_) => return false,
        },
    };
    close(fd);
    true
}

/// An absolute sandbox path as `openat2` beneath a root takes it.
fn relative(path: &[u8]) -> Option<CString> {
    let rel: Vec<u8> = path.iter().copied().skip_while(|&b| b == b'/').collect();
    CString::new(if rel.is_empty() { b".".to_vec() } else { rel }).ok()
}

/// `path` made normal without the file system: `.` and empty components
/// dropped, `..` taking one back (never above `/`).
fn lexical(path: &[u8]) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `fd` is a directory; `None` if it cannot be asked.
fn is_dir_fd(fd: RawFd) -> Option<bool> {
    // SAFETY: stat is plain data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is valid and writable.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// An `O_PATH` descriptor of `rel` beneath `rootfd`, resolved as if `rootfd`
/// were `/`, magic links refused, and `extra` resolve flags.
fn open_in_root(rootfd: RawFd, rel: &CStr, extra: u64) -> SysResult<RawFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | extra,
    };
    retry(|| {
        // SAFETY: `rel` is NUL-terminated; `how` is a valid open_how of the size passed.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                rootfd,
                rel.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        })
    })
    .map(|fd| fd as RawFd)
}

/// Answers notification `id`: the syscall fails with `errno`.
pub fn notif_refuse(listener: RawFd, id: u64, errno: i32) -> io::Result<()> {
    notif_send(listener, id, -errno, 0)
}

/// `flock(fd, op)`, `EINTR` retried.
pub fn flock(fd: RawFd, op: c_int) -> io::Result<()> {
    loop {
        // SAFETY: integers only.
        if unsafe { libc::flock(fd, op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
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

/// This process's own peak resident set size, in KiB (not its children's).
pub fn own_peak_rss_kib() -> i64 {
    // SAFETY: rusage is plain data, filled by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss
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
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0u32,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    (r == 0).then_some(sizes)
}

/// Whether the kernel supports seccomp user notification.
pub fn seccomp_notify_supported() -> bool {
    notif_sizes().is_some()
}

// --- the policy gate -------------------------------------------------------------

/// Clears close-on-exec on `fd`, so the MBU inherits it (child-safe).
pub fn clear_cloexec(fd: RawFd) -> SysResult<()> {
    // SAFETY: F_SETFD with 0 only changes the descriptor's flags.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

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
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
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
                &mut len,
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
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` has room for `n` entries.
    let m = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(m.max(0) as usize);
    groups
}

/// Sets or clears close-on-exec on `fd`.
pub fn set_inheritable(fd: RawFd, inheritable: bool) -> io::Result<()> {
    let flags = if inheritable { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: F_SETFD only changes the descriptor's flags; EBADF if not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the pipe whose write end is `fd` has no reader left (`POLLERR`):
/// for a descriptor that is not a pipe's write end, false.
pub fn pipe_unread(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && (p.revents & libc::POLLERR) != 0
}

/// Takes ownership of a descriptor this process was started with (the caller
/// vouches that nothing else owns it), marking it close-on-exec so that no
/// child inherits it.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a descriptor above stderr",
        ));
    }
    set_inheritable(fd, false)?;
    // SAFETY: `fd` is open (checked above) and, by the caller's word, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Keeps a long-lived, multi-threaded process's memory flat under glibc: one
/// malloc arena for all threads (not one per thread, each keeping its own free
/// memory), and large buffers (captured output) always in their own mappings,
/// returned to the kernel when freed (a fixed threshold also stops glibc from
/// raising it after the first large free).
pub fn keep_heap_flat() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread
    // of ours exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

#[cfg(test)]
mod lexical_tests {
    #[test]
    fn lexical_paths_are_normal_and_never_above_the_root() {
        for (raw, normal) in [
            ("/usr/lib/python3.11/os.py", "/usr/lib/python3.11/os.py"),
            ("/work/sub/../in1.txt", "/work/in1.txt"),
            ("//work/./a//b/", "/work/a/b"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/", "/"),
            ("/..", "/"),
        ] {
            assert_eq!(super::lexical(raw.as_bytes()), normal, "{raw}");
        }
    }
}

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
        use std::os::fd::AsRawFd;
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

//! Wall 6: network namespaces and the loopback interface.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

use libc::{c_int, c_ulong};

use super::fd::{close, read_full};
use super::mount::mount;
use super::process::unshare;
use super::{check, SysResult};

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
    let r = check(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &raw mut req) }).and_then(|_| f(sock, req));
    close(sock);
    r
}

/// Brings the loopback interface up (child-safe).
pub fn loopback_up() -> SysResult<()> {
    with_loopback(|sock, mut req| {
        req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: `req` is a valid ifreq-sized buffer with a NUL-terminated name.
        check(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &raw const req) }).map(drop)
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
    if unsafe { libc::fstatfs(fd, &raw mut fs) } < 0 {
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
    Ok(Some((kind, (meta.dev(), meta.ino()))))
}

/// Makes a new network namespace on the calling *thread* and bind-mounts it
/// on `target`, where it outlives the thread; the caller runs this on a
/// thread of its own, which ends in that namespace.
pub fn new_net_namespace_at(target: &CStr) -> SysResult<()> {
    unshare(libc::CLONE_NEWNET)?;
    mount(Some(c"/proc/thread-self/ns/net"), target, None, libc::MS_BIND, None)
}

/// A TCP socket listening on `127.0.0.1:port` of the caller's network
/// namespace, close-on-exec (child-safe). The socket belongs to that
/// namespace for its whole life, whichever process holds it later: the
/// supervisor's proxy accepts the sandbox's connections on it.
pub fn listen_loopback(port: u16) -> SysResult<RawFd> {
    // SAFETY: integers only.
    let sock = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_in of `len` bytes.
    let bound = check(unsafe { libc::bind(sock, (&raw const addr).cast(), len) });
    // SAFETY: integers only.
    let listening = bound.and_then(|_| check(unsafe { libc::listen(sock, 128) }));
    match listening {
        Ok(_) => Ok(sock),
        Err(e) => {
            close(sock);
            Err(e)
        }
    }
}

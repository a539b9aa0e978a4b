//! File descriptors: pipes, socket pairs, descriptor passing, reads and
//! writes that retry, `poll`, `flock`.
//!
//! No wall by itself: the plumbing of all of them.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::c_int;

use super::{check, check_long, errno, retry, SysResult};

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
    check(unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC.cast_signed()) }).map(drop)
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
        let fd = fd.cast_unsigned();
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
        done += n.cast_unsigned();
    }
    Ok(())
}

/// One `send` on a connected socket that neither blocks nor raises SIGPIPE
/// (`MSG_DONTWAIT | MSG_NOSIGNAL`): how many bytes of `buf` it took; `EAGAIN`
/// when it would have blocked.
pub fn send_nowait(sock: RawFd, buf: &[u8]) -> SysResult<usize> {
    retry(|| {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe {
            libc::send(
                sock,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n.cast_unsigned())
        }
    })
}

/// One `write`, `EINTR` retried: how many bytes of `buf` it took.
pub fn write_once(fd: RawFd, buf: &[u8]) -> SysResult<usize> {
    retry(|| {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n.cast_unsigned())
        }
    })
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
    let r = unsafe { libc::poll(&raw mut p, 1, 0) };
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
            Ok(n.cast_unsigned())
        }
    })
}

/// `dup2(from, to)` (child-safe).
pub fn dup2(from: RawFd, to: RawFd) -> SysResult<()> {
    // SAFETY: integers only.
    check(unsafe { libc::dup2(from, to) }).map(drop)
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
    send_with_fd(sock, &[0], fd).map(drop)
}

/// Sends `data` over unix stream socket `sock`, and with its first byte
/// descriptor `fd` unless it is -1 (child-safe). Returns how much of `data`
/// was taken: the caller sends the rest with [`write_all`]. `MSG_NOSIGNAL`:
/// a peer that is gone is `EPIPE`, not a signal.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> SysResult<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut space = CmsgSpace { buf: [0; 64] };
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if fd >= 0 {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space_len = unsafe { libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) } as usize;
        // SAFETY: reading the union's bytes as a pointer target; 64 bytes is
        // more than CMSG_SPACE(4).
        msg.msg_control = unsafe { space.buf.as_mut_ptr() }.cast();
        msg.msg_controllen = space_len;
        // SAFETY: msg_control points to space_len valid bytes, so the first header fits.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
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
    }
    // SAFETY: `msg` and everything it points to (`data`, `space`) are valid
    // for the call; the kernel only reads them.
    retry(|| check_long(unsafe { libc::sendmsg(sock, &raw const msg, libc::MSG_NOSIGNAL) } as libc::c_long))
        .map(|n| n.cast_unsigned() as usize)
}

/// Receives into `buf` from unix socket `sock`, and the descriptor that came
/// with these bytes, close-on-exec, or -1 (child-safe). Returns the bytes
/// read (0 at end of stream). A second descriptor in the same message is
/// closed, never leaked.
pub fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> SysResult<(usize, RawFd)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut space = CmsgSpace { buf: [0; 64] };
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: as in send_with_fd.
    msg.msg_control = unsafe { space.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = 64;
    // SAFETY: `msg` points to valid, writable buffers of the sizes given.
    let n = retry(|| check_long(unsafe { libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC) } as libc::c_long))?;
    let mut got = -1;
    // SAFETY: the kernel filled msg_control and msg_controllen; CMSG_FIRSTHDR
    // and CMSG_NXTHDR check every header against that length.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header within msg_control, from the kernel.
        let (level, kind, len) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure size computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(header) / std::mem::size_of::<c_int>();
            for i in 0..count {
                // SAFETY: the kernel wrote `count` ints after the header.
                let fd = unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>().add(i)) };
                if got < 0 {
                    got = fd;
                } else {
                    close(fd);
                }
            }
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
    Ok((n.cast_unsigned() as usize, got))
}

/// Receives one descriptor sent with [`send_fd`]; `None` at end of stream.
pub fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    match recv_with_fd(sock, &mut byte).map_err(io::Error::from_raw_os_error)? {
        (_, fd) if fd < 0 => Ok(None),
        // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
        (_, fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
    }
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

/// Clears close-on-exec on `fd`, so the MBU inherits it (child-safe).
pub fn clear_cloexec(fd: RawFd) -> SysResult<()> {
    // SAFETY: F_SETFD with 0 only changes the descriptor's flags.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
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
    let r = unsafe { libc::poll(&raw mut p, 1, 0) };
    r > 0 && (p.revents & libc::POLLERR) != 0
}

/// Takes ownership of `fd`, a descriptor a wrapper here just opened.
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the callers pass a descriptor they opened and own alone.
    unsafe { OwnedFd::from_raw_fd(fd) }
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

/// The directory `fd` names (an `O_PATH` descriptor, such as a detached
/// mount's), opened for reading: ioctls need a descriptor that is open.
pub fn reopen_dir(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path relative to a descriptor we were given.
    let r = unsafe { libc::openat(fd, c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

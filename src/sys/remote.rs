//! Reading a sandboxed process's memory and resolving paths beneath its root,
//! for the file records of provenance.
//!
//! Provenance.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use libc::c_void;

use super::fd::close;
use super::mount::OpenHow;
use super::{check_long, retry, SysResult};

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
        let n = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
        if n <= 0 {
            return Err(io::Error::last_os_error());
        }
        let got = chunk.get(..n.unsigned_abs()).unwrap_or_default();
        if let Some(end) = got.iter().position(|&b| b == 0) {
            out.extend_from_slice(got.get(..end).unwrap_or_default());
            return Ok(out);
        }
        out.extend_from_slice(got);
        addr += n.unsigned_abs() as u64;
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
    let n = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    if usize::try_from(n) != Ok(N) {
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

/// The target of `path` beneath `rootfd` if its last component is a
/// symlink (its parent looked up inside the root, symlinks followed there);
/// `None` if it is anything else or nothing.
pub fn readlink_in_root(rootfd: RawFd, path: &[u8]) -> Option<Vec<u8>> {
    let split = path.iter().rposition(|&b| b == b'/')?;
    let (parent, name) = (path.get(..split)?, path.get(split + 1..)?);
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    let dir = open_in_root(rootfd, &relative(parent)?, 0).ok()?;
    let name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `dir` is an open descriptor, `name` NUL-terminated, `buf` has
    // room for `buf.len()` bytes.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    close(dir);
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
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
    (unsafe { libc::fstat(fd, &raw mut st) } == 0).then_some(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
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
                &raw const how,
                std::mem::size_of::<OpenHow>(),
            )
        })
    })
    .map(|fd| fd as RawFd)
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

//! Wall 4's mount calls: `mount`, `pivot_root`, and the new mount API
//! (`open_tree`, `mount_setattr`, `move_mount`).

use std::ffi::CStr;
use std::os::fd::RawFd;

use libc::{c_int, c_ulong, c_void};

use super::fd::close;
use super::{check, check_long, opt_ptr, SysResult};

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
pub(super) struct OpenHow {
    pub(super) flags: u64,
    pub(super) mode: u64,
    pub(super) resolve: u64,
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
            &raw const how,
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
            flags.cast_unsigned(),
            &raw const attr,
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

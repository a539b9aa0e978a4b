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

/// `MOUNT_ATTR_IDMAP`: the mount shows its files' owners through the id
/// mapping of a user namespace.
const ATTR_IDMAP: u64 = 0x0010_0000;

/// A detached clone of the one mount `dir` (an `O_PATH` directory
/// descriptor) is on, from `dir` down, without its submounts, with `set` and
/// the id mapping of the user namespace `userns`: an owner the mapping names
/// shows as its mapped id, and what that id creates is stored as the owner.
/// Fails with `EINVAL` (or `EPERM`) where the filesystem cannot be idmapped.
pub fn idmapped_tree(dir: RawFd, userns: RawFd, set: u64) -> SysResult<RawFd> {
    // SAFETY: `dir` is an open descriptor; the path is "".
    let tree = check_long(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir,
            c"".as_ptr(),
            (OPEN_TREE_CLONE | libc::O_CLOEXEC | libc::AT_EMPTY_PATH).cast_unsigned() as c_ulong,
        )
    })? as RawFd;
    let attr = MountAttr {
        attr_set: set | ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::from(userns.cast_unsigned()),
    };
    // SAFETY: `tree` was just opened; `attr` is a valid mount_attr of the size passed.
    let set = check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH.cast_unsigned(),
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    });
    match set {
        Ok(_) => Ok(tree),
        Err(e) => {
            close(tree);
            Err(e)
        }
    }
}

/// The type of the filesystem `fd` is on, by name where it is a common one
/// (for messages).
pub fn filesystem_name(fd: RawFd) -> String {
    // SAFETY: plain data, filled by fstatfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statfs.
    if unsafe { libc::fstatfs(fd, &raw mut st) } != 0 {
        return "an unknown filesystem".into();
    }
    let magic = st.f_type.unsigned_abs();
    let name = match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        0x4D44 => "vfat",
        0x2FC1_2FC1 => "zfs",
        _ => return format!("a filesystem of type {magic:#x}"),
    };
    name.into()
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

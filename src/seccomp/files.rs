//! The path-taking syscalls whose calls the supervisor records (provenance),
//! and where each keeps its paths.
//!
//! Provenance, on wall 8's listener.
//!
//! The filter sends these to the supervisor as user notifications *before* they
//! run; the supervisor reads the path from the caller's memory, records it, and
//! lets the call continue, so the kernel walls decide as always. What it reads
//! is what the path was at that moment: a thread that rewrites the string after
//! the read can make the log differ from what the kernel then resolved. That is
//! a gap in the log, not in the sandbox: the mount view and Landlock enforce on
//! the path the kernel resolves.

/// What a call does with a path, for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Reads a file or lists a directory.
    Read,
    /// Writes (or truncates) a file.
    Write,
    /// Executes a file.
    Exec,
    /// Creates a file, directory, link or node.
    Create,
    /// Removes or renames away an entry.
    Delete,
    /// Looks at or changes metadata only (stat, access, chmod, chown, times).
    Meta,
}

/// Where a call's path arguments are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `open`/`openat`: (dirfd arg or none, path arg, flags arg); access from flags.
    Open(Option<usize>, usize, usize),
    /// `openat2`: dirfd 0, path 1, flags in the `open_how` at arg 2.
    Openat2,
    /// One path, with a fixed access.
    One(Option<usize>, usize, Access),
    /// `unlinkat`: dirfd 0, path 1, flags 2 (`AT_REMOVEDIR`).
    Unlinkat,
    /// Two paths: the first removed or linked from, the second created.
    Two(Option<usize>, usize, Access, Option<usize>, usize),
}

/// The syscalls recorded, by name, with their layout. Names that this
/// architecture lacks are skipped when the filter is built.
pub const FILE_SYSCALLS: &[(&str, Layout)] = &[
    ("open", Layout::Open(None, 0, 1)),
    ("creat", Layout::One(None, 0, Access::Create)),
    ("openat", Layout::Open(Some(0), 1, 2)),
    ("openat2", Layout::Openat2),
    ("execve", Layout::One(None, 0, Access::Exec)),
    ("execveat", Layout::One(Some(0), 1, Access::Exec)),
    ("stat", Layout::One(None, 0, Access::Meta)),
    ("lstat", Layout::One(None, 0, Access::Meta)),
    ("newfstatat", Layout::One(Some(0), 1, Access::Meta)),
    ("statx", Layout::One(Some(0), 1, Access::Meta)),
    ("access", Layout::One(None, 0, Access::Meta)),
    ("faccessat", Layout::One(Some(0), 1, Access::Meta)),
    ("faccessat2", Layout::One(Some(0), 1, Access::Meta)),
    ("readlink", Layout::One(None, 0, Access::Meta)),
    ("readlinkat", Layout::One(Some(0), 1, Access::Meta)),
    ("chdir", Layout::One(None, 0, Access::Meta)),
    ("mkdir", Layout::One(None, 0, Access::Create)),
    ("mkdirat", Layout::One(Some(0), 1, Access::Create)),
    ("mknod", Layout::One(None, 0, Access::Create)),
    ("mknodat", Layout::One(Some(0), 1, Access::Create)),
    ("rmdir", Layout::One(None, 0, Access::Delete)),
    ("unlink", Layout::One(None, 0, Access::Delete)),
    ("unlinkat", Layout::Unlinkat),
    ("rename", Layout::Two(None, 0, Access::Delete, None, 1)),
    ("renameat", Layout::Two(Some(0), 1, Access::Delete, Some(2), 3)),
    ("renameat2", Layout::Two(Some(0), 1, Access::Delete, Some(2), 3)),
    ("link", Layout::Two(None, 0, Access::Read, None, 1)),
    ("linkat", Layout::Two(Some(0), 1, Access::Read, Some(2), 3)),
    ("symlink", Layout::One(None, 1, Access::Create)),
    ("symlinkat", Layout::One(Some(1), 2, Access::Create)),
    ("chmod", Layout::One(None, 0, Access::Meta)),
    ("fchmodat", Layout::One(Some(0), 1, Access::Meta)),
    ("chown", Layout::One(None, 0, Access::Meta)),
    ("lchown", Layout::One(None, 0, Access::Meta)),
    ("fchownat", Layout::One(Some(0), 1, Access::Meta)),
    ("truncate", Layout::One(None, 0, Access::Write)),
    ("utimensat", Layout::One(Some(0), 1, Access::Meta)),
    ("utime", Layout::One(None, 0, Access::Meta)),
    ("utimes", Layout::One(None, 0, Access::Meta)),
    ("futimesat", Layout::One(Some(0), 1, Access::Meta)),
    ("statfs", Layout::One(None, 0, Access::Meta)),
    ("getxattr", Layout::One(None, 0, Access::Meta)),
    ("lgetxattr", Layout::One(None, 0, Access::Meta)),
    ("listxattr", Layout::One(None, 0, Access::Meta)),
    ("llistxattr", Layout::One(None, 0, Access::Meta)),
    ("setxattr", Layout::One(None, 0, Access::Meta)),
    ("lsetxattr", Layout::One(None, 0, Access::Meta)),
    ("removexattr", Layout::One(None, 0, Access::Meta)),
    ("lremovexattr", Layout::One(None, 0, Access::Meta)),
    ("inotify_add_watch", Layout::One(None, 1, Access::Meta)),
    // The path may be NULL (the mark is then on the descriptor): nothing
    // to read, no record.
    ("fanotify_mark", Layout::One(Some(3), 4, Access::Meta)),
];

/// Every syscall of the x86_64 table that takes a file path (a `const char
/// __user *` filename, pathname, oldname or newname in the kernel's
/// definition), by name. Syscalls newer than the table (`fchmodat2`,
/// `*xattrat`, `file_getattr`, …) cannot be named in a filter and so are
/// never allowed. Sockets' addresses (`bind`, `connect` of `AF_UNIX`) and
/// names outside the file tree (`mq_open`, `memfd_create`) are not paths.
pub const PATH_TAKING: &[&str] = &[
    "open",
    "creat",
    "openat",
    "openat2",
    "execve",
    "execveat",
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "chdir",
    "chroot",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmodat",
    "chown",
    "lchown",
    "fchownat",
    "truncate",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "statfs",
    "getxattr",
    "lgetxattr",
    "setxattr",
    "lsetxattr",
    "listxattr",
    "llistxattr",
    "removexattr",
    "lremovexattr",
    "inotify_add_watch",
    "fanotify_mark",
    "name_to_handle_at",
    "mount",
    "umount2",
    "pivot_root",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "uselib",
    "open_tree",
    "move_mount",
    "fspick",
    "fsconfig",
];

/// Whether a call with this layout only looks (stat, access, readlink, chdir):
/// not recorded under `files = "writes"`.
pub fn only_looks(layout: Layout) -> bool {
    matches!(layout, Layout::One(_, _, Access::Meta))
}

/// The access of an `open` with these flags.
pub fn open_access(flags: u64) -> Access {
    let flags = flags as i32;
    if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
        if flags & libc::O_CREAT != 0 {
            Access::Create
        } else {
            Access::Write
        }
    } else {
        Access::Read
    }
}

/// Landlock's name for what an access needs, beneath its path (create and
/// delete: beneath the parent directory), given whether the target is a directory.
pub fn landlock_rights(access: Access, dir: bool, truncate: bool) -> u64 {
    use crate::landlock::access::{
        EXECUTE, MAKE_DIR, MAKE_REG, READ_DIR, READ_FILE, REMOVE_DIR, REMOVE_FILE, TRUNCATE, WRITE_FILE,
    };
    match access {
        Access::Read if dir => READ_DIR,
        Access::Read => READ_FILE,
        Access::Write => WRITE_FILE | if truncate { TRUNCATE } else { 0 },
        Access::Exec => EXECUTE,
        Access::Create if dir => MAKE_DIR,
        Access::Create => MAKE_REG,
        Access::Delete if dir => REMOVE_DIR,
        Access::Delete => REMOVE_FILE,
        Access::Meta => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_give_the_access() {
        assert_eq!(open_access(libc::O_RDONLY as u64), Access::Read);
        assert_eq!(open_access(libc::O_WRONLY as u64), Access::Write);
        assert_eq!(open_access((libc::O_RDWR | libc::O_CREAT) as u64), Access::Create);
        assert_eq!(open_access((libc::O_RDONLY | libc::O_TRUNC) as u64), Access::Write);
    }

    /// Coverage: a syscall that takes a path is recorded, or can never be
    /// allowed by any profile (wall 8's never-allowable list).
    #[test]
    fn every_path_taking_syscall_is_recorded_or_never_allowed() {
        let recorded: std::collections::BTreeSet<&str> = FILE_SYSCALLS.iter().map(|(n, _)| *n).collect();
        let table: std::collections::BTreeSet<&str> =
            super::super::names_x86_64::NAMES.iter().map(|(_, n)| *n).collect();
        for name in PATH_TAKING {
            assert!(table.contains(name), "{name} is not in the x86_64 table");
            assert!(
                recorded.contains(name) || super::super::never(name).is_some(),
                "{name} takes a path, may be allowed, and is not recorded"
            );
        }
        for name in &recorded {
            assert!(
                PATH_TAKING.contains(name),
                "{name} is recorded but not listed as taking a path"
            );
        }
    }

    #[test]
    fn every_recorded_syscall_exists_on_x86_64() {
        let names: std::collections::BTreeSet<String> = FILE_SYSCALLS.iter().map(|(n, _)| n.to_string()).collect();
        for n in &names {
            let one = std::collections::BTreeSet::from([n.clone()]);
            assert!(
                super::super::compile(&one, super::super::OnDenied::Errno, super::super::Arch::X86_64).is_ok(),
                "{n}"
            );
        }
    }
}

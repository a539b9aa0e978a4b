//! Wall 6 for sandboxes that cannot make a socket: one shared, empty network
//! namespace instead of a new one each.
//!
//! A network namespace is the dearest namespace to make (about 0.5 ms here,
//! ten times the others together) and to tear down: the kernel frees it later,
//! in a worker, which slows launches running side by side. A sandbox whose
//! syscall filter allows neither `socket` nor `socketpair` has no use for one
//! of its own. What a network namespace holds (interfaces, addresses, routes,
//! ports, abstract unix socket names, the sockets `/proc/net` lists) is reached
//! only through a socket, and `io_uring`, which could make one unseen, is never
//! allowed. So, when ninewall runs as root, such sandboxes all join one empty
//! namespace, kept alive by a bind mount in the runtime directory, as
//! `ip netns add` keeps its own. It belongs to the host's user namespace, so no
//! sandbox has a capability over it (each sandbox's own user namespace is made
//! after it joins). Whoever joins it checks first that it still holds nothing
//! but a loopback interface that is down (`child::outer`); if anything changed
//! it, nothing runs.
//!
//! Every other sandbox (net = "loopback", a filter allowing sockets, ninewall
//! not root, or no runtime directory to be had) gets a network namespace of
//! its own, as before.

use std::ffi::CString;
use std::fs::{DirBuilder, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::host::SHARED_NETNS_NAME;
use crate::plan::SetupPlan;
use crate::sys;

/// What is mounted where the shared namespace should be, when it is not one
/// ninewall made.
#[derive(Debug)]
pub enum Foreign {
    /// A namespace of another kind (its `CLONE_NEW*` type).
    Kind(i32),
    /// A network namespace owned by another user namespace.
    Owner,
    /// Something that is not a namespace at all.
    Unreadable(std::io::Error),
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Foreign::Kind(kind) => write!(f, "a namespace of another kind ({kind:#x})"),
            Foreign::Owner => f.write_str("a network namespace of another user namespace"),
            Foreign::Unreadable(e) => write!(f, "unreadable as a namespace ({e})"),
        }
    }
}

/// Why the shared namespace cannot be used or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// Something ninewall did not make is mounted there: nothing may run
    /// until someone looks at it.
    #[error(
        "wall 6 (network): {} is {what}, not the empty network namespace ninewall makes; \
         unmount it (umount {}) and the next run makes a new one",
        path.display(),
        path.display()
    )]
    Foreign {
        /// The mount point.
        path: PathBuf,
        /// What is there.
        what: Foreign,
    },
    /// A file of the runtime directory or of this process could not be used.
    #[error("wall 6 (network): {op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime directory or the lock file is not what ninewall makes.
    #[error("wall 6 (network): {} is not {expected}", path.display())]
    Unexpected {
        /// The path.
        path: PathBuf,
        /// What it should be.
        expected: &'static str,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetnsError {
    let path = path.to_path_buf();
    move |source| NetnsError::Io { op, path, source }
}

/// The shared namespace's file, opened (made first if there is none), where
/// the plan says the sandbox joins it. `Ok(None)`: the sandbox makes its own
/// (the plan says so, or the runtime directory cannot be used). `Err`: a
/// namespace is mounted there that ninewall did not make (another kind of
/// namespace, or another owner); nothing may run until someone looks at it.
pub fn shared_for(plan: &SetupPlan) -> Result<Option<(OwnedFd, PathBuf)>, NetnsError> {
    let Some(path) = plan.shared_netns.clone() else {
        return Ok(None);
    };
    if let Some(fd) = open_checked(&path)? {
        return Ok(Some((fd, path)));
    }
    // A runtime directory that cannot be had costs only speed: the sandbox
    // makes a namespace of its own, which isolates at least as well.
    match make(&path) {
        Ok(()) => Ok(open_checked(&path)?.map(|fd| (fd, path))),
        Err(_) => Ok(None),
    }
}

/// Opens `path` if a network namespace is mounted there: `Ok(None)` if there
/// is none (no file, or the empty file a mount leaves when it is unmounted).
fn open_checked(path: &Path) -> Result<Option<OwnedFd>, NetnsError> {
    // Not a symlink followed, nor a FIFO waited on: whatever else is there is
    // looked at below.
    // Missing, or unreadable to us: a namespace of its own then.
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    else {
        return Ok(None);
    };
    let fd = OwnedFd::from(file);
    let refuse = |what: Foreign| {
        Err(NetnsError::Foreign {
            path: path.to_path_buf(),
            what,
        })
    };
    match sys::namespace_of(fd.as_raw_fd()) {
        Ok(None) => Ok(None),
        Ok(Some((kind, _))) if kind != libc::CLONE_NEWNET => refuse(Foreign::Kind(kind)),
        Ok(Some((_, owner))) => {
            let own = Path::new("/proc/self/ns/user");
            let ours = std::fs::metadata(own).map_err(io_error("reading", own))?;
            if owner != (ours.dev(), ours.ino()) {
                return refuse(Foreign::Owner);
            }
            Ok(Some(fd))
        }
        Err(e) => refuse(Foreign::Unreadable(e)),
    }
}

/// Opens `path` for writing, made (0600) if missing; anything there but a
/// regular file (a FIFO say) is refused, not waited on or followed.
fn regular_file(path: &Path) -> Result<std::fs::File, NetnsError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_error("opening", path))?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        Ok(_) => Err(NetnsError::Unexpected {
            path: path.to_path_buf(),
            expected: "a regular file",
        }),
        Err(e) => Err(io_error("reading", path)(e)),
    }
}

/// Makes the runtime directory (root's alone), and under its lock mounts a
/// new network namespace on `path` unless another run just did.
fn make(path: &Path) -> Result<(), NetnsError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("creating", dir))?;
    let meta = std::fs::symlink_metadata(dir).map_err(io_error("reading", dir))?;
    if !meta.is_dir() || meta.uid() != sys::effective_ids().0 || meta.mode() & 0o022 != 0 {
        return Err(NetnsError::Unexpected {
            path: dir.to_path_buf(),
            expected: "a directory of ours that only we can write",
        });
    }
    let lock_path = dir.join(format!("{SHARED_NETNS_NAME}.lock"));
    let lock = regular_file(&lock_path)?;
    sys::flock(lock.as_raw_fd(), libc::LOCK_EX).map_err(io_error("locking", &lock_path))?;
    if open_checked(path)?.is_some() {
        return Ok(());
    }
    // The mount point: an empty file, made now or left by an earlier unmount.
    drop(regular_file(path)?);
    let mounting = "making and mounting a network namespace on";
    let target = CString::new(path.as_os_str().as_bytes()).map_err(|e| io_error(mounting, path)(e.into()))?;
    // A thread of its own: unshare(CLONE_NEWNET) moves only the calling
    // thread, which ends in the new namespace; the mount keeps it. (A
    // panic in it is an error of that thread, not a reason to unwind here.)
    std::thread::scope(|s| s.spawn(|| sys::new_net_namespace_at(&target)).join())
        .unwrap_or(Err(libc::EIO))
        .map_err(|e| io_error(mounting, path)(std::io::Error::from_raw_os_error(e)))?;
    drop(lock);
    Ok(())
}

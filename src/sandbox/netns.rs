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

use crate::plan::SetupPlan;
use crate::sys;

/// The environment variable naming ninewall's runtime directory.
pub const RUNTIME_DIR_ENV: &str = "NINEWALL_RUNTIME_DIR";
/// The runtime directory when [`RUNTIME_DIR_ENV`] is not set.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/ninewall";
/// The file in the runtime directory the shared namespace is mounted on.
pub const SHARED_NAME: &str = "net-none";

/// Where the shared empty network namespace is (or would be) mounted: in
/// [`RUNTIME_DIR_ENV`] if that is an absolute path, else in
/// [`DEFAULT_RUNTIME_DIR`].
pub fn shared_path() -> PathBuf {
    let dir = std::env::var_os(RUNTIME_DIR_ENV)
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR));
    dir.join(SHARED_NAME)
}

/// Whether `plan` would join the shared namespace, when ninewall runs as
/// root: no network, and a filter that refuses every way to make a socket.
pub fn eligible(plan: &SetupPlan) -> bool {
    plan.net == crate::policy::NetMode::None && !plan.seccomp.allow.iter().any(|n| n == "socket" || n == "socketpair")
}

/// Whether this process may join and make the shared namespace at all.
pub fn supervisor_may_share() -> bool {
    sys::effective_ids().0 == 0
}

/// The shared namespace's file, opened (made first if there is none), for a
/// sandbox of `plan`. `Ok(None)`: the sandbox makes its own (not eligible, not
/// root, or the runtime directory cannot be used). `Err`: a namespace is
/// mounted there that ninewall did not make (another kind of namespace, or
/// another owner); nothing may run until someone looks at it.
pub fn shared_for(plan: &SetupPlan) -> Result<Option<(OwnedFd, PathBuf)>, String> {
    if !eligible(plan) || !supervisor_may_share() {
        return Ok(None);
    }
    let path = shared_path();
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
fn open_checked(path: &Path) -> Result<Option<OwnedFd>, String> {
    // Not a symlink followed, nor a FIFO waited on: whatever else is there is
    // looked at below.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        // Missing, or unreadable to us (a sandbox of our own then).
        Err(_) => return Ok(None),
    };
    let fd = OwnedFd::from(file);
    let refuse = |what: String| {
        Err(format!(
            "wall 6 (network): {} is {what}, not the empty network namespace ninewall makes; \
             unmount it (umount {}) and the next run makes a new one",
            path.display(),
            path.display()
        ))
    };
    match sys::namespace_of(fd.as_raw_fd()) {
        Ok(None) => Ok(None),
        Ok(Some((kind, _))) if kind != libc::CLONE_NEWNET => refuse(format!("a namespace of another kind ({kind:#x})")),
        Ok(Some((_, owner))) => {
            let ours = std::fs::metadata("/proc/self/ns/user").map_err(|e| format!("wall 6 (network): {e}"))?;
            if owner != (ours.dev(), ours.ino()) {
                return refuse("a network namespace of another user namespace".into());
            }
            Ok(Some(fd))
        }
        Err(e) => refuse(format!("unreadable as a namespace ({e})")),
    }
}

/// Opens `path` for writing, made (0600) if missing; anything there but a
/// regular file (a FIFO say) is refused, not waited on or followed.
fn regular_file(path: &Path) -> Result<std::fs::File, String> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        Ok(_) => Err(format!("{} is not a regular file", path.display())),
        Err(e) => Err(e.to_string()),
    }
}

/// Makes the runtime directory (root's alone), and under its lock mounts a
/// new network namespace on `path` unless another run just did.
fn make(path: &Path) -> Result<(), String> {
    let dir = path.parent().ok_or("the path has no directory")?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() || meta.uid() != sys::effective_ids().0 || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not a directory of ours that only we can write",
            dir.display()
        ));
    }
    let lock = regular_file(&dir.join(format!("{SHARED_NAME}.lock")))?;
    sys::flock(lock.as_raw_fd(), libc::LOCK_EX).map_err(|e| format!("locking: {e}"))?;
    if open_checked(path)?.is_some() {
        return Ok(());
    }
    // The mount point: an empty file, made now or left by an earlier unmount.
    drop(regular_file(path)?);
    let target = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // A thread of its own: unshare(CLONE_NEWNET) moves only the calling
    // thread, which ends in the new namespace; the mount keeps it.
    std::thread::scope(|s| s.spawn(|| sys::new_net_namespace_at(&target)).join())
        .map_err(|_| "the thread making the namespace panicked".to_string())?
        .map_err(|e| format!("making and mounting it: {}", std::io::Error::from_raw_os_error(e)))?;
    drop(lock);
    Ok(())
}

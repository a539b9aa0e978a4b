//! Wall 9, `limits.disk`: the bytes one execution may add to its host
//! workspace, bounded by the kernel.
//!
//! The one mechanism this host's kernel has for a byte total on a
//! directory tree is a btrfs qgroup: the workspace must be the root of a
//! btrfs subvolume on a filesystem with quotas enabled (`btrfs quota
//! enable`, an admin's decision ninewall does not take). Before the run its
//! qgroup's referenced-bytes limit becomes what it references now plus
//! `limits.disk`; the kernel refuses writes past it (`EDQUOT`); after the
//! run the previous limit is put back and what was used is recorded.
//! Anywhere else (another filesystem, a directory that is not a
//! subvolume's root, quotas off, not root) nothing runs: a bound the profile
//! asks for and the host cannot give is a wall not built.
//!
//! One execution at a time per workspace: the bound holds an exclusive
//! `flock` on the workspace's root for the run, and a second execution with
//! `limits.disk` in the same workspace is refused while it is held (two
//! would share one qgroup, and each would put back the other's limit). A
//! supervisor killed with SIGKILL leaves its limit in place (the workspace
//! stays bounded; the next run sets it anew).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::sys::btrfs;

/// A workspace whose qgroup limit is set for this execution.
#[derive(Debug)]
pub struct DiskBound {
    fd: OwnedFd,
    subvolume: u64,
    before: btrfs::QgroupLimit,
    /// Bytes it referenced when the run began.
    pub base: u64,
    /// Bytes the run may add.
    pub allowed: u64,
    restored: bool,
}

impl Drop for DiskBound {
    /// A run that never started (a later step failed) leaves the
    /// workspace's limit as it found it.
    fn drop(&mut self) {
        self.restore();
    }
}

/// What an execution added to its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUse {
    /// `limits.disk`.
    pub allowed: u64,
    /// Bytes added (referenced after minus before; 0 if it shrank).
    pub added: u64,
    /// Whether it came to the limit: within a tenth of it, or 1 MiB
    /// (a write that would pass it fails whole, so the last one leaves a
    /// gap the size of that write).
    pub reached: bool,
}

impl DiskBound {
    /// Bounds the workspace `dir` (a descriptor of its root) to what it
    /// holds plus `allowed` bytes; the reason when it cannot be bounded.
    pub fn set(dir: BorrowedFd<'_>, allowed: u64) -> Result<DiskBound, String> {
        let fd = crate::sys::reopen_dir(dir.as_raw_fd()).map_err(|e| format!("cannot open the workspace: {e}"))?;
        let raw = fd.as_raw_fd();
        // Released when `fd` is closed, after the limit is put back.
        crate::sys::flock(raw, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| {
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                "another execution with limits.disk is running in this workspace (one at a time: they would share its qgroup)"
                    .to_string()
            } else {
                format!("locking the workspace: {e}")
            }
        })?;
        let subvolume = match btrfs::subvolume_root(raw) {
            Ok(Ok(id)) => id,
            Ok(Err(what)) => {
                return Err(format!(
                    "the workspace is {what}; only the root of a btrfs subvolume with quotas on can be bounded here"
                ))
            }
            Err(e) => return Err(format!("cannot tell the workspace's filesystem: {e}")),
        };
        // Current numbers: what the qgroup references is updated when the
        // filesystem commits.
        btrfs::syncfs(raw).map_err(|e| format!("syncfs of the workspace: {e}"))?;
        let base = btrfs::referenced(raw, subvolume).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                "quotas are not enabled on the workspace's btrfs (an admin enables them: btrfs quota enable MOUNTPOINT)"
                    .to_string()
            } else {
                format!("reading the workspace's qgroup: {e}")
            }
        })?;
        let before = btrfs::limit(raw, subvolume).map_err(|e| format!("reading the workspace's qgroup limit: {e}"))?;
        let mut lim = before;
        lim.flags |= btrfs::LIMIT_MAX_RFER;
        lim.max_rfer = base.saturating_add(allowed);
        // An existing, lower limit stays: the run never gets more than the
        // admin gave the subvolume.
        if before.flags & btrfs::LIMIT_MAX_RFER != 0 && before.max_rfer < lim.max_rfer {
            lim.max_rfer = before.max_rfer;
        }
        btrfs::set_limit(raw, subvolume, lim).map_err(|e| format!("setting the workspace's qgroup limit: {e}"))?;
        Ok(DiskBound {
            fd,
            subvolume,
            before,
            base,
            allowed,
            restored: false,
        })
    }

    /// Puts the limit that was there before back (once).
    fn restore(&mut self) {
        if self.restored {
            return;
        }
        self.restored = true;
        let mut back = self.before;
        if back.flags & btrfs::LIMIT_MAX_RFER == 0 {
            back.flags |= btrfs::LIMIT_MAX_RFER;
            back.max_rfer = btrfs::CLEAR;
        }
        let _ = btrfs::set_limit(self.fd.as_raw_fd(), self.subvolume, back);
    }

    /// After the run: what it added, and the limit that was there before
    /// put back.
    pub fn finish(mut self) -> DiskUse {
        let raw = self.fd.as_raw_fd();
        let _ = btrfs::syncfs(raw);
        let now = btrfs::referenced(raw, self.subvolume).unwrap_or(self.base);
        self.restore();
        let added = now.saturating_sub(self.base);
        let slack = (self.allowed / 10).min(1 << 20);
        DiskUse {
            allowed: self.allowed,
            added,
            reached: added.saturating_add(slack) >= self.allowed,
        }
    }
}

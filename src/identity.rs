//! Wall 3: a host uid and gid of its own for each execution run as root, the
//! way systemd's `DynamicUser=` gives a service one.
//!
//! With one id per execution, a sandbox is no other sandbox's and no host
//! process's user: none can signal, ptrace or read another's processes or
//! files, and a host `nobody` process cannot touch any of them. The id is
//! taken from a range (default [`DEFAULT_RANGE`], `NINEWALL_ID_RANGE=FIRST-LAST`
//! moves it) and never one the host names in `/etc/passwd`, `/etc/group`,
//! `/etc/subuid` or `/etc/subgid`. uid and gid are the same number.
//!
//! Allocation is a lock: `/run/ninewall/ids/ID` (in the runtime directory,
//! root's alone), held with `flock` for as long as the execution lasts. The
//! supervisor holds it, and so does the sandbox's outer child, which
//! inherits it (one open file description, so one lock) and exits only
//! after it has reaped init, that is once the sandbox's whole pid namespace
//! is gone, whether the supervisor ended or was killed with `SIGKILL`
//! (`sandbox::child`'s lifeline). Concurrent supervisors cannot take the same id; the
//! files stay (removing a lock file under a lock is a race), one per id ever
//! used.
//!
//! The outer child runs as the id itself, and a process closes its
//! descriptors (so frees the lock) before it tears down its namespaces and
//! becomes a zombie: for that moment the id is unlocked while a process of
//! it still exists. So the lock file also names its last holder (the outer
//! child's pid and start time, [`Identity::held_by`]), and an id whose last
//! holder still exists, other than as a zombie, is not taken even when its
//! lock is free: no two executions' processes ever share an id.

use std::fs::{DirBuilder, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// The ids handed out when nothing else is configured: 65,536 from
/// 0x70000000, which systemd's map of the uid space leaves unused (above
/// the container range, below the foreign range).
pub const DEFAULT_RANGE: IdRange = IdRange {
    first: 0x7000_0000,
    last: 0x7000_ffff,
};
/// The environment variable that moves the range: `FIRST-LAST`.
pub const RANGE_ENV: &str = "NINEWALL_ID_RANGE";

/// An inclusive range of host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IdRange {
    /// The first id.
    pub first: u32,
    /// The last id.
    pub last: u32,
}

impl IdRange {
    /// [`RANGE_ENV`] if it is set, else [`DEFAULT_RANGE`].
    pub fn configured() -> Result<IdRange, IdentityError> {
        match std::env::var(RANGE_ENV) {
            Ok(text) => IdRange::parse(&text).ok_or(IdentityError::BadRange(text)),
            Err(_) => Ok(DEFAULT_RANGE),
        }
    }

    /// `FIRST-LAST`, both above 65535 (no system or ordinary user), at most
    /// 2^31 - 2 (where 32-bit tools stay correct), FIRST <= LAST.
    pub fn parse(text: &str) -> Option<IdRange> {
        let (first, last) = text.split_once('-')?;
        let (first, last): (u32, u32) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
        (65_536 <= first && first <= last && last <= 0x7fff_fffe).then_some(IdRange { first, last })
    }
}

/// Why no identity could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// [`RANGE_ENV`] is not a valid range.
    #[error("wall 3 (credentials): {RANGE_ENV}={0:?} is not a range; valid: FIRST-LAST, 65536 <= FIRST <= LAST <= 2147483646")]
    BadRange(String),
    /// The lock directory cannot be used.
    #[error("wall 3 (credentials): {}: {source}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The lock directory is not root's alone.
    #[error("wall 3 (credentials): {} is not a directory only root can write", .0.display())]
    NotPrivate(PathBuf),
    /// Every id of the range is in use (or named by the host).
    #[error("wall 3 (credentials): every id of {first}-{last} is in use by a running execution")]
    Exhausted {
        /// The range's first id.
        first: u32,
        /// Its last.
        last: u32,
    },
}

/// The id of one execution, held until it is dropped (and until the
/// sandbox's processes that inherited [`Identity::lock_fd`] are gone).
#[derive(Debug)]
pub struct Identity {
    id: u32,
    lock: OwnedFd,
}

impl Identity {
    /// The host uid and gid.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The lock's descriptor, for the sandbox's outer child to inherit (it
    /// is close-on-exec: the MBU never has it).
    pub fn lock_fd(&self) -> RawFd {
        self.lock.as_raw_fd()
    }

    /// Names `pid` (the sandbox's outer child, which holds the lock too) in
    /// the lock file as its last holder: until that process is gone, the id
    /// is not taken again even once the lock is free.
    pub fn held_by(&self, pid: i32) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (_, started) = state_and_start(pid)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no process {pid}")))?;
        let file = std::fs::File::from(self.lock.try_clone()?);
        let line = format!("{pid} {started}\n");
        file.set_len(0)?;
        file.write_all_at(line.as_bytes(), 0)
    }

    /// Takes a free id of `range`, with its lock files in `dir` (made, 0700,
    /// if missing). Starts at a place that depends on the process and the
    /// time, so concurrent supervisors rarely try the same ids.
    pub fn allocate(range: IdRange, dir: &Path) -> Result<Identity, IdentityError> {
        let dir_error = |source| IdentityError::Directory {
            path: dir.to_path_buf(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_error)?;
        let meta = std::fs::symlink_metadata(dir).map_err(dir_error)?;
        if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(IdentityError::NotPrivate(dir.to_path_buf()));
        }
        let named = host_named_ids();
        let size = u64::from(range.last - range.first) + 1;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id().rotate_left(16);
        for i in 0..size {
            let offset = (u64::from(seed) + i) % size;
            let id = range.first + u32::try_from(offset).unwrap_or(0);
            if named.iter().any(|&(lo, hi)| lo <= id && id <= hi) {
                continue;
            }
            let path = dir.join(id.to_string());
            if let Some(lock) = try_lock(&path).map_err(dir_error)? {
                if last_holder_exists(&path) {
                    // Still exiting; it lets go of the lock when dropped.
                    continue;
                }
                return Ok(Identity { id, lock });
            }
        }
        Err(IdentityError::Exhausted {
            first: range.first,
            last: range.last,
        })
    }
}

/// The lock on `path`, if nobody holds it; made 0600 if missing, never
/// followed if a symlink.
fn try_lock(path: &Path) -> std::io::Result<Option<OwnedFd>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    match sys::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Some(OwnedFd::from(file))),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The state of process `pid` and its start time (fields 3 and 22 of its
/// stat; the start time in clock ticks since boot: with the pid, it names
/// one process for all time).
fn state_and_start(pid: i32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name's ")": state is field 3, start time field 22.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// Whether the process a lock file names as its last holder still exists
/// other than as a zombie (one that has torn everything down and only waits
/// to be reaped). A file naming none (new, or written by an older ninewall)
/// names nobody.
fn last_holder_exists(lock_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(lock_file) else {
        return false;
    };
    let mut fields = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(started))) = (
        fields.next().map(str::parse::<i32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    state_and_start(pid).is_some_and(|(state, start)| start == started && !matches!(state.as_str(), "Z" | "X"))
}

/// Every id or id range the host's databases name: users and groups, and
/// the subordinate ranges handed to users.
fn host_named_ids() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for db in ["/etc/passwd", "/etc/group"] {
        for line in std::fs::read_to_string(db).unwrap_or_default().lines() {
            if let Some(id) = line.split(':').nth(2).and_then(|f| f.parse::<u32>().ok()) {
                out.push((id, id));
            }
        }
    }
    for db in ["/etc/subuid", "/etc/subgid"] {
        for line in std::fs::read_to_string(db).unwrap_or_default().lines() {
            let mut f = line.split(':').skip(1);
            if let (Some(Ok(start)), Some(Ok(count))) =
                (f.next().map(str::parse::<u32>), f.next().map(str::parse::<u32>))
            {
                out.push((start, start.saturating_add(count.saturating_sub(1))));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_strictly() {
        assert_eq!(
            IdRange::parse("1879048192-1879113727"),
            Some(IdRange {
                first: 0x7000_0000,
                last: 0x7000_ffff
            })
        );
        for bad in [
            "",
            "5-10",
            "100000",
            "200000-100000",
            "100000-4294967295",
            "a-b",
            "65536-",
        ] {
            assert_eq!(IdRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_id_is_taken_once_until_its_lock_is_released() {
        let dir = std::env::temp_dir().join(format!("ninewall-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if is_root() {
            let range = IdRange {
                first: 0x7000_0000,
                last: 0x7000_0001,
            };
            let a = Identity::allocate(range, &dir).unwrap();
            let b = Identity::allocate(range, &dir).unwrap();
            assert_ne!(a.id(), b.id());
            assert!(matches!(
                Identity::allocate(range, &dir),
                Err(IdentityError::Exhausted { .. })
            ));
            let freed = a.id();
            drop(a);
            assert_eq!(Identity::allocate(range, &dir).unwrap().id(), freed);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// An id whose lock is free is still not taken while the process its
    /// lock file names exists: running, or stopped, or anything but a
    /// zombie. Once that process is a zombie or gone, it is.
    #[test]
    fn an_id_is_not_taken_while_its_last_holder_exists() {
        if !is_root() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("ninewall-ids-holder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let range = IdRange {
            first: 0x7000_0000,
            last: 0x7000_0000,
        };
        let mut holder = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = i32::try_from(holder.id()).unwrap();
        let id = Identity::allocate(range, &dir).unwrap();
        id.held_by(pid).unwrap();
        drop(id);
        assert!(
            matches!(Identity::allocate(range, &dir), Err(IdentityError::Exhausted { .. })),
            "taken while its last holder {pid} runs"
        );
        sys::kill(pid, libc::SIGSTOP).unwrap();
        assert!(
            matches!(Identity::allocate(range, &dir), Err(IdentityError::Exhausted { .. })),
            "taken while its last holder {pid} is stopped"
        );
        // Killed and not yet reaped: a zombie, which holds nothing.
        sys::kill(pid, libc::SIGKILL).unwrap();
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let again = Identity::allocate(range, &dir).unwrap();
        assert_eq!(again.id(), range.first);
        drop(again);
        holder.wait().unwrap();
        assert_eq!(Identity::allocate(range, &dir).unwrap().id(), range.first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The lock directory must be root's: only a root test can make one.
    fn is_root() -> bool {
        sys::effective_ids().0 == 0
    }
}

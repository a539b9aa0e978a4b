//! The supervisor's side of the seccomp listener, on a thread of its own:
//! each notification is a refused syscall (counted, answered `EPERM`) or a
//! recorded file access (decoded, judged as Landlock would, then continued).
//!
//! Provenance (every file access) and wall 8 (every refusal it counts).
//!
//! The thread does nothing else, so that a recorded access costs the MBU one
//! round trip to it and no more: it blocks in `SECCOMP_IOCTL_NOTIF_RECV`
//! (no poll), and hands the accesses it saw to the supervisor's main thread
//! in batches; that thread records them (serialising, hashing, writing) on the
//! other CPU while the MBU goes on. With `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`
//! the MBU and this thread take turns on one CPU.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::seccomp::{files, guard};
use crate::sys;

/// Accesses handed over at once: one wake-up of the main thread per batch.
const BATCH: usize = 64;
/// Batches in flight before the thread (and so the MBU) waits for the main
/// thread to catch up: bounds what the supervisor holds.
const BATCHES_IN_FLIGHT: usize = 4;

/// What the listener thread needs to answer notifications.
pub(super) struct Notifier {
    /// The recorded syscalls, by number.
    recorded: HashMap<i32, (&'static str, files::Layout)>,
    /// The Landlock rights handled and the rules, to judge accesses by.
    landlock_rules: Option<(u64, Vec<(PathBuf, u64)>)>,
    /// The root directory's own symlinks, followed here before the kernel
    /// is asked about the rest of a path (see `plan::fixed_root_links`).
    fixed_links: Vec<(PathBuf, PathBuf)>,
    nspids: HashMap<i32, i32>,
    root: Option<OwnedFd>,
    refused: BTreeMap<i32, u64>,
    batch: Vec<FileEvent>,
}

/// The main thread's end of the listener thread.
pub(super) struct Notifications {
    /// Readable when a batch is waiting; end of file when the thread is done.
    pub wake: OwnedFd,
    /// The CPU time the listener thread has used so far (nanoseconds, as of
    /// its last batch): the execution's recording, charged to it.
    pub cpu_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    events: mpsc::Receiver<Vec<FileEvent>>,
    thread: std::thread::JoinHandle<BTreeMap<i32, u64>>,
}

impl Notifications {
    /// The batches handed over so far, in order.
    pub(super) fn take(&self) -> impl Iterator<Item = FileEvent> + '_ {
        self.events.try_iter().flatten()
    }

    /// Waits for the thread, which has ended (its wake pipe reached end of
    /// file): the refusals it counted.
    pub(super) fn finish(self) -> BTreeMap<i32, u64> {
        self.thread.join().unwrap_or_default()
    }
}

impl Notifier {
    /// What the listener needs for `plan`; `None` when its filter sends
    /// nothing to the supervisor (no refusal counted, no access recorded).
    pub(super) fn for_plan(plan: &crate::plan::SetupPlan) -> Option<Notifier> {
        if !plan.seccomp.has_listener() {
            return None;
        }
        Some(Notifier {
            recorded: plan
                .seccomp
                .recorded
                .iter()
                .filter_map(|(name, nr)| {
                    let &(name, layout) = files::FILE_SYSCALLS.iter().find(|(n, _)| n == name)?;
                    Some((i32::try_from(*nr).ok()?, (name, layout)))
                })
                .collect(),
            landlock_rules: plan.landlock.as_ref().map(|ll| {
                (
                    ll.handled_fs,
                    ll.paths.iter().map(|r| (r.path.clone(), r.access)).collect(),
                )
            }),
            fixed_links: crate::plan::fixed_root_links(&plan.mounts),
            nspids: HashMap::new(),
            root: None,
            refused: BTreeMap::new(),
            batch: Vec::with_capacity(BATCH),
        })
    }

    /// Starts the thread: it waits for the listener on `notify` (init sends
    /// it), answers notifications until no process uses the filter any more,
    /// and returns the refusals it counted. Without a listener (the sandbox
    /// ended before one was sent), it ends when `notify` reaches end of file.
    pub(super) fn start(self, notify: OwnedFd) -> std::io::Result<Notifications> {
        let (wake_r, wake_w) = sys::pipe_cloexec()?;
        let (tx, events) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let cpu_ns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let used = std::sync::Arc::clone(&cpu_ns);
        let thread = std::thread::Builder::new()
            .name("seccomp-listener".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let refused = self.serve(&notify, &tx, &wake_w, &used);
                used.store(sys::thread_cpu_ns(), std::sync::atomic::Ordering::Relaxed);
                refused
            })?;
        Ok(Notifications {
            wake: wake_r,
            cpu_ns,
            events,
            thread,
        })
    }

    fn serve(
        mut self,
        notify: &OwnedFd,
        tx: &mpsc::SyncSender<Vec<FileEvent>>,
        wake: &OwnedFd,
        cpu_ns: &std::sync::atomic::AtomicU64,
    ) -> BTreeMap<i32, u64> {
        let Ok(Some(listener)) = sys::recv_fd(notify.as_raw_fd()) else {
            return self.refused;
        };
        sys::notif_sync_wakeup(listener.as_raw_fd());
        while self.answer(listener.as_raw_fd()) {
            if self.batch.len() >= BATCH {
                cpu_ns.store(sys::thread_cpu_ns(), std::sync::atomic::Ordering::Relaxed);
                if !self.hand_over(tx, wake) {
                    break;
                }
            }
        }
        self.hand_over(tx, wake);
        // Dropping `wake` on return tells the main thread that we are done.
        self.refused
    }

    /// Sends the batch to the main thread and wakes it; false if it is gone.
    fn hand_over(&mut self, tx: &mpsc::SyncSender<Vec<FileEvent>>, wake: &OwnedFd) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if tx.send(batch).is_err() {
            return false;
        }
        // One byte per batch sent; the main thread reads them all whenever it
        // takes the batches, of which at most BATCHES_IN_FLIGHT wait: the
        // pipe never fills.
        let _ = sys::write_all(wake.as_raw_fd(), &[1]);
        true
    }

    /// Waits for and answers one notification: a recorded file access
    /// (decoded, then let continue) or a refused syscall (counted, answered
    /// `EPERM`). False when no process uses the filter any more.
    fn answer(&mut self, listener: std::os::fd::RawFd) -> bool {
        let n = match sys::notif_recv(listener) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return true,
            // The caller died before we took its notification, or every
            // process that used the filter has exited (the listener hangs up).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return !sys::pipe_hung_up(listener),
            Err(_) => return false,
        };
        // The access's time: when the kernel stopped the call (the record
        // is written later, in a batch).
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // A recorded call whose arguments wall 8's guard refuses (a setid
        // mode) reached us only because the filter refuses with a
        // notification under `errno`: it is a refusal, never continued. The
        // arguments are the registers the kernel snapshotted: the filter saw
        // the same.
        let recorded = self
            .recorded
            .get(&n.nr)
            .copied()
            .filter(|(name, _)| !guard::guard_of(name).is_some_and(|g| g.refuses(&n.args)));
        match recorded {
            Some((name, layout)) => {
                let known = (self.root.is_some(), self.nspids.contains_key(&n.pid));
                let events = self.file_events(&n, name, layout, at);
                // Only what was read while the caller was still waiting is real.
                let valid = sys::notif_valid(listener, n.id);
                // The caller goes on; what it records was read and resolved
                // above, before the call could run. The caller may be gone
                // already (ENOENT): nothing to answer.
                let _ = sys::notif_continue(listener, n.id);
                if valid {
                    self.batch.extend(events);
                } else {
                    // Its pid may name another process by now: what was
                    // learnt from it here (the root, the pid inside) is
                    // forgotten, not kept for the next notification.
                    if !known.0 {
                        self.root = None;
                    }
                    if !known.1 {
                        self.nspids.remove(&n.pid);
                    }
                }
            }
            None => {
                *self.refused.entry(n.nr).or_insert(0) += 1;
                let _ = sys::notif_refuse(listener, n.id, libc::EPERM);
            }
        }
        true
    }

    /// The sandbox pid of host pid `pid` (the last `NSpid` field), cached.
    fn inside_pid(&mut self, pid: i32) -> i32 {
        if let Some(p) = self.nspids.get(&pid) {
            return *p;
        }
        let inside = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("NSpid:"))
                    .and_then(|l| l.split_whitespace().last()?.parse().ok())
            })
            .unwrap_or(0);
        if self.nspids.len() < 4096 {
            self.nspids.insert(pid, inside);
        }
        inside
    }

    /// Decodes the paths of a recorded call and judges each as Landlock would.
    fn file_events(
        &mut self,
        n: &sys::Notification,
        name: &str,
        layout: files::Layout,
        at: std::time::Duration,
    ) -> Vec<FileEvent> {
        use files::{Access, Layout};
        let arg = |i: usize| n.args.get(i).copied().unwrap_or(0);
        let mut paths: Vec<(Option<usize>, usize, Access, bool)> = Vec::new();
        match layout {
            Layout::Open(dirfd, path, flags) => {
                let f = arg(flags);
                paths.push((dirfd, path, files::open_access(f), f & libc::O_TRUNC as u64 != 0));
            }
            Layout::Openat2 => {
                let flags = sys::read_remote::<8>(n.pid, arg(2)).map_or(0, u64::from_ne_bytes);
                paths.push((Some(0), 1, files::open_access(flags), flags & libc::O_TRUNC as u64 != 0));
            }
            Layout::One(dirfd, path, access) => paths.push((dirfd, path, access, access == Access::Write)),
            Layout::Unlinkat => paths.push((Some(0), 1, Access::Delete, false)),
            Layout::Two(d1, p1, a1, d2, p2) => {
                paths.push((d1, p1, a1, false));
                paths.push((d2, p2, Access::Create, false));
            }
        }
        let pid = self.inside_pid(n.pid);
        let mut out = Vec::new();
        for (dirfd, path_arg, access, truncate) in paths {
            let Ok(raw) = sys::read_remote_cstr(n.pid, arg(path_arg)) else {
                continue;
            };
            let dirfd = dirfd.map_or(libc::AT_FDCWD, |i| arg(i) as i32);
            let path = absolute(n.pid, dirfd, &raw);
            if self.root.is_none() {
                // Every process of the sandbox has the same root (chroot and
                // pivot_root are never allowed): open it once.
                self.root = sys::open_root_of(n.pid);
            }
            let rootfd = self.root.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd);
            // What the kernel resolves: the path with the root's fixed
            // symlinks followed (one openat2 instead of two and a readlink).
            // With `..` in it, the path the process gave is not where it
            // leads: the record names where the kernel goes, and what was
            // asked beside it.
            let mut unresolved_after = None;
            let (path, asked) = if path.split('/').any(|c| c == "..") {
                let lookup = follow_fixed(&self.fixed_links, &path).into_owned();
                let reached = match sys::resolve_in_root(rootfd, lookup.as_bytes(), false) {
                    Some((real, _)) => real,
                    None => {
                        let (at, missing) = would_be(rootfd, &lookup);
                        unresolved_after = missing;
                        at
                    }
                };
                (reached, Some(path))
            } else {
                (path, None)
            };
            let lookup = follow_fixed(&self.fixed_links, &path);
            if access == Access::Meta {
                // Landlock does not govern stat, access, readlink or chdir:
                // no verdict to reach, only whether the path exists. An
                // empty path with a descriptor (glibc's fstat) is the open
                // file itself, named above from the descriptor.
                let exists =
                    (raw.is_empty() && dirfd != libc::AT_FDCWD) || sys::exists_in_root(rootfd, lookup.as_bytes());
                out.push(FileEvent {
                    pid,
                    syscall: name.to_string(),
                    verdict: "allowed",
                    path,
                    access,
                    exists,
                    asked,
                    at,
                    unresolved_after,
                });
                continue;
            }
            // Judged on the path the kernel reaches (symlinks such as /lib
            // resolved inside the sandbox); a missing path where it would be.
            let resolved = sys::resolve_in_root(rootfd, lookup.as_bytes(), false);
            let exists = resolved.is_some();
            let real = match resolved {
                Some((real, _)) => real,
                None => {
                    let (at, missing) = would_be(rootfd, &lookup);
                    unresolved_after = unresolved_after.or(missing);
                    at
                }
            };
            // Through a symlink other than the root's fixed ones (or a
            // dangling one a create follows), the call reaches another path
            // than the one given: the record names that one (below).
            let through_link = asked.is_none() && real != *lookup;
            let makes_or_removes_dir = (name == "unlinkat" && arg(2) & libc::AT_REMOVEDIR as u64 != 0)
                || matches!(name, "mkdir" | "mkdirat" | "rmdir");
            let access = if access == Access::Write && !exists && name.starts_with("open") {
                Access::Create
            } else {
                access
            };
            let truncate = truncate && exists;
            let verdict = if makes_or_removes_dir || !exists {
                self.judge(&real, access, makes_or_removes_dir, truncate)
            } else {
                // Whether it is a directory matters only where the rules
                // tell files from directories apart (rarely): ask then.
                let (as_file, as_dir) = (
                    self.judge(&real, access, false, truncate),
                    self.judge(&real, access, true, truncate),
                );
                if as_file == as_dir || !sys::resolve_in_root(rootfd, lookup.as_bytes(), true).is_some_and(|(_, d)| d) {
                    as_file
                } else {
                    as_dir
                }
            };
            let (path, asked) = if through_link {
                (real, Some(path))
            } else {
                (path, asked)
            };
            out.push(FileEvent {
                pid,
                syscall: name.to_string(),
                verdict,
                path,
                access,
                exists,
                asked,
                at,
                unresolved_after,
            });
        }
        out
    }

    /// "allowed" or "refused", as Landlock would decide (and the mount view:
    /// a path no rule covers is refused).
    fn judge(&self, path: &str, access: files::Access, dir: bool, truncate: bool) -> &'static str {
        let Some((handled, rules)) = &self.landlock_rules else {
            return "allowed";
        };
        let needed = files::landlock_rights(access, dir, truncate) & handled;
        if needed == 0 {
            return "allowed";
        }
        let target = Path::new(path);
        let at = match access {
            files::Access::Create | files::Access::Delete => target.parent().unwrap_or(target),
            _ => target,
        };
        let granted = rules
            .iter()
            .filter(|(p, _)| beneath(at, p))
            .fold(0, |acc, (_, a)| acc | a);
        if granted & needed == needed {
            "allowed"
        } else {
            "refused"
        }
    }
}

/// `path` with a leading fixed root symlink (`/lib` of `/lib/x`) replaced by
/// its target, as the kernel's walk would; otherwise `path` itself.
fn follow_fixed<'a>(links: &[(PathBuf, PathBuf)], path: &'a str) -> Cow<'a, str> {
    for (link, target) in links {
        let link = link.as_os_str().as_encoded_bytes();
        if let Some(rest) = path.as_bytes().strip_prefix(link) {
            if rest.is_empty() || rest.first() == Some(&b'/') {
                let mut out = target.display().to_string();
                out.push_str(&String::from_utf8_lossy(rest));
                return Cow::Owned(out);
            }
        }
    }
    Cow::Borrowed(path)
}

/// Where `path`, which does not exist beneath `rootfd`, would be: its nearest
/// existing ancestor as the kernel reaches it (symlinks resolved inside the
/// root), the missing rest appended. Its parent alone is not enough: a probe
/// of `/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v4/libc.so.6`, whose parent
/// is missing too, would be judged on `/lib` unresolved, which no rule names.
///
/// Also returns, when more than the last component is missing, the deepest
/// ancestor that exists (as reached): below it there is nothing for the
/// kernel to resolve (the call fails with ENOENT), and the rest is only what
/// was asked.
fn would_be(rootfd: std::os::fd::RawFd, path: &str) -> (String, Option<String>) {
    would_be_within(rootfd, path, 8)
}

/// [`would_be`], following at most `links` dangling symlinks: a create
/// through a symlink to a missing file makes the file it points to.
fn would_be_within(rootfd: std::os::fd::RawFd, path: &str, links: u32) -> (String, Option<String>) {
    if links > 0 {
        if let Some(target) = sys::readlink_in_root(rootfd, path.as_bytes()) {
            let target = String::from_utf8_lossy(&target);
            let next = if target.starts_with('/') {
                target.into_owned()
            } else {
                let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
                parent.join(target.as_ref()).display().to_string()
            };
            return match sys::resolve_in_root(rootfd, next.as_bytes(), false) {
                Some((real, _)) => (real, None),
                None => would_be_within(rootfd, &next, links - 1),
            };
        }
    }
    let p = Path::new(path);
    for (depth, dir) in p.ancestors().skip(1).enumerate() {
        if let Some((real, _)) = sys::resolve_in_root(rootfd, dir.as_os_str().as_encoded_bytes(), false) {
            let rest = p.strip_prefix(dir).unwrap_or(p);
            let at = Path::new(&real).join(rest).display().to_string();
            return (at, (depth > 0).then_some(real));
        }
    }
    (path.to_string(), Some("/".to_string()))
}

/// Whether `path` is `dir` or beneath it: `Path::starts_with` by bytes, for
/// normal absolute paths (no `.`, `..`, repeated or trailing `/`), which both
/// are here (the kernel's or lexically folded; the policy's are checked).
fn beneath(path: &Path, dir: &Path) -> bool {
    let (p, d) = (path.as_os_str().as_encoded_bytes(), dir.as_os_str().as_encoded_bytes());
    d == b"/" || (p.starts_with(d) && matches!(p.get(d.len()), None | Some(b'/')))
}

/// One file access the supervisor saw before the kernel ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// The process, by its pid inside the sandbox.
    pub pid: i32,
    /// The syscall.
    pub syscall: String,
    /// The path as the process sees it, made absolute against its cwd or dirfd.
    pub path: String,
    /// What it does with it.
    pub access: files::Access,
    /// "allowed" or "refused", as Landlock and the mount view decide.
    pub verdict: &'static str,
    /// Whether the path existed at that moment.
    pub exists: bool,
    /// When the call was stopped for the supervisor (since the Unix epoch).
    pub at: std::time::Duration,
    /// The path as the process gave it, made absolute, when `..` in it made
    /// `path` (where the kernel goes: `..` taken after the symlink before
    /// it, as the kernel takes it) differ from it.
    pub asked: Option<String>,
    /// When more than the last component of the path is missing: the
    /// deepest ancestor that exists. `path` below it is only what was asked
    /// (there is nothing there for the kernel to resolve; the call fails).
    pub unresolved_after: Option<String>,
}

/// `raw` made absolute against process `pid`'s cwd or its descriptor `dirfd`,
/// with `.` and empty components dropped. `..` is kept: what it leads to
/// depends on the symlinks before it, which only a lookup can follow
/// (`a/l/../x` with `l -> /tmp/d` is `/tmp/x`, never `a/x`).
fn absolute(pid: i32, dirfd: i32, raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).into_owned();
    let joined = if text.starts_with('/') {
        text
    } else {
        let base = if dirfd == libc::AT_FDCWD {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
        } else {
            std::fs::read_link(format!("/proc/{pid}/fd/{dirfd}"))
        }
        .map_or_else(|_| "?".to_string(), |p| p.display().to_string());
        if text.is_empty() {
            base
        } else {
            format!("{}/{text}", base.trim_end_matches('/'))
        }
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_links_are_followed_at_the_start_of_a_path_only() {
        let links = [
            (PathBuf::from("/lib"), PathBuf::from("/usr/lib")),
            (PathBuf::from("/lib64"), PathBuf::from("/usr/lib64")),
        ];
        for (path, lookup) in [
            ("/lib", "/usr/lib"),
            ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            ("/lib64/ld-linux-x86-64.so.2", "/usr/lib64/ld-linux-x86-64.so.2"),
            ("/libx/a", "/libx/a"),
            ("/usr/lib/a", "/usr/lib/a"),
            ("/", "/"),
        ] {
            assert_eq!(follow_fixed(&links, path), lookup, "{path}");
        }
    }

    #[test]
    fn beneath_agrees_with_path_starts_with_on_normal_paths() {
        let paths = [
            "/",
            "/usr",
            "/usr/lib",
            "/usr/lib64",
            "/usr/libx",
            "/usr/lib/python3.11",
            "/usr/lib/python3.11/os.py",
            "/work",
            "/workspace",
            "/work/a",
            "/w",
            "/tmp",
            "/tmp/x/y",
        ];
        for p in paths {
            for d in paths {
                assert_eq!(
                    beneath(Path::new(p), Path::new(d)),
                    Path::new(p).starts_with(d),
                    "{p} beneath {d}"
                );
            }
        }
    }
}

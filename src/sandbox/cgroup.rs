//! Wall 9's cgroup half: one cgroup per execution, beneath the supervisor's own
//! cgroup, with memory (no swap) and pids limits and CPU accounting, removed at
//! the end.
//!
//! Which hierarchy is the plan's (`host::Cgroups`, probed before the fork):
//! cgroup v2 where the supervisor's v2 cgroup can delegate the memory and pids
//! controllers to a child; otherwise the v1 hierarchies of memory, pids and
//! cpuacct, each beneath the supervisor's cgroup in that hierarchy. Making it
//! (mkdir, limits) happens here, after the fork, while the sandbox builds its
//! walls.
//! When neither can be made (typically: ninewall runs unprivileged without a
//! delegated cgroup), the caller falls back to rlimits alone, or refuses when
//! the profile says `cgroups = "strict"`.
//!
//! A daemon on cgroup v1 lends its supervisors cgroups from a
//! [`CgroupPool`] instead: made once, reused by one execution after another
//! (never two at once), which spares each execution three mkdirs, three
//! rmdirs and a memory cgroup that lingers, dying, as long as page cache
//! charged to it does. A lent cgroup is taken only empty of processes and
//! with no anonymous, shared or unevictable memory charged to it; its limits
//! are written afresh and its counters read as differences from what they
//! were when it was taken ([`Cgroup::adopt`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::host::{Cgroups, Unusable};
use crate::plan::HELPERS;
use crate::policy::Limits;
use crate::sys;

/// Why no cgroup could be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// A cgroup file or directory could not be read, made or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done: "reading", "creating".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be written to a cgroup file.
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The plan found this version unusable on this host.
    #[error(transparent)]
    Unusable(#[from] Unusable),
    /// A cgroup lent by the daemon is not fit to be used again.
    #[error("the daemon's cgroup {name}: {why}")]
    NotClean {
        /// Its name.
        name: String,
        /// What is left in it.
        why: String,
    },
    /// Neither version could be used; why, for each.
    #[error("cgroup v2: {v2}; cgroup v1: {v1}")]
    Neither {
        /// Why not v2.
        v2: Box<CgroupError>,
        /// Why not v1.
        v1: Box<CgroupError>,
    },
}

/// A per-execution cgroup. Dropping it removes its directories, unless it
/// was lent by a daemon's [`CgroupPool`] (the daemon takes it back).
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    /// Lent by the daemon: not removed here.
    lent: bool,
    /// The counters when it was taken; what the execution used is the
    /// difference (zero for a cgroup made for it).
    baseline: Baseline,
}

/// Counters of a lent cgroup when it was taken.
#[derive(Debug, Clone, Copy, Default)]
struct Baseline {
    memory: u64,
    oom_kills: u64,
    pids_max_hits: u64,
    cpu_ns: u64,
}

#[derive(Debug)]
enum Version {
    V1 { dirs: Vec<(&'static str, PathBuf)> },
    V2 { dir: PathBuf },
}

/// What the cgroup saw, read at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Peak memory in bytes.
    pub peak_memory: Option<u64>,
    /// Processes the kernel OOM-killed in it.
    pub oom_kills: u64,
    /// Times a fork failed at the pids limit.
    pub pids_max_hits: u64,
    /// CPU time in nanoseconds.
    pub cpu_ns: Option<u64>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir(dir).map_err(|source| CgroupError::Io {
        op: "creating",
        path: dir.to_path_buf(),
        source,
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`oom_kill 3`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    keyed_in(&std::fs::read_to_string(path).ok()?, key)
}

/// The value of `key` in the text of a flat-keyed file.
fn keyed_in(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next()?.parse().ok())?
    })
}

/// `ninewall-PID-SEQ-NANOS`: the time, because a supervisor killed with
/// SIGKILL cannot remove its cgroup, and a later process with the same pid
/// must not find the name taken.
fn unique_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "ninewall-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// How old an abandoned cgroup must be before [`sweep`] removes it: far
/// longer than a supervisor takes from making its cgroup to moving its
/// sandbox in.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes what supervisors killed with SIGKILL left in `parent`: their
/// `ninewall-PID-SEQ-NANOS` cgroups, once made more than a minute ago by a
/// pid that no longer exists; and the pooled cgroups of daemons that no
/// longer exist (`ninewall-pool-PID-SEQ`). Only an empty cgroup can be removed (the kernel
/// refuses one that holds a process), so a running sandbox's never is.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for entry in entries.flatten() {
        let name = entry.file_name();
        // A pooled cgroup of a daemon that is gone: nobody lends it again
        // (one its supervisor still uses holds a process, and stays).
        if let Some(pid) = name
            .to_str()
            .filter(|n| is_pool_name(n))
            .and_then(|n| n.strip_prefix(POOL_PREFIX)?.split('-').next()?.parse::<i32>().ok())
        {
            if pid > 0 && sys::kill(pid, 0) == Err(libc::ESRCH) {
                let _ = std::fs::remove_dir(entry.path());
            }
            continue;
        }
        let Some(fields) = name.to_str().and_then(|n| n.strip_prefix("ninewall-")) else {
            continue;
        };
        let mut fields = fields.split('-');
        let (Some(pid), Some(_seq), Some(made), None) = (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(pid), Ok(made)) = (pid.parse::<i32>(), made.parse::<u128>()) else {
            continue;
        };
        let old = now.saturating_sub(made) > ABANDONED_AFTER.as_nanos();
        if old && pid > 0 && sys::kill(pid, 0) == Err(libc::ESRCH) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// How long moving a process into a fresh cgroup takes on this host when
/// no migration happened just before: what a launch spaced apart from the
/// last one waits at the cgroup step (wall 9). The median of three, each
/// after 150 ms of quiet (of ours). The kernel's threadgroup lock makes the
/// first writer after a quiet spell wait for an RCU grace period (~10-20
/// ms) unless the host runs with `favordynmods` (then ~0.1 ms).
pub fn migration_cost(cgroups: &crate::host::Cgroups) -> Result<std::time::Duration, String> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let cg = Cgroup::create(cgroups, &Limits::default()).map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting sleep(1) to move: {e}"))?;
        std::thread::sleep(std::time::Duration::from_millis(150));
        let pid = i32::try_from(child.id()).unwrap_or(0);
        let started = std::time::Instant::now();
        let moved = cg.add(pid);
        times.push(started.elapsed());
        let _ = child.kill();
        let _ = child.wait();
        drop(cg);
        moved.map_err(|e| e.to_string())?;
    }
    times.sort();
    Ok(times.get(1).copied().unwrap_or_default())
}

impl Cgroup {
    /// Makes the cgroup the plan names (v2 if it can, else v1) and sets its
    /// limits. The error says why neither version could be used.
    pub fn create(cgroups: &Cgroups, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let v2 = match &cgroups.v2 {
            Ok(parent) => Cgroup::create_v2(parent, limits),
            Err(why) => Err(why.clone().into()),
        };
        let v2 = match v2 {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        let v1 = match &cgroups.v1 {
            Ok(parents) => Cgroup::create_v1(parents, limits),
            Err(why) => Err(why.clone().into()),
        };
        v1.map_err(|v1| CgroupError::Neither {
            v2: Box::new(v2),
            v1: Box::new(v1),
        })
    }

    fn create_v2(parent: &Path, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let available = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
        for needed in ["memory", "pids", "cpu"] {
            if available.split_whitespace().any(|c| c == needed) && !enabled.split_whitespace().any(|c| c == needed) {
                write(&parent.join("cgroup.subtree_control"), &format!("+{needed}"))?;
            }
        }
        let dir = parent.join(unique_name());
        create_dir(&dir)?;
        sweep(parent);
        let cg = Cgroup {
            version: Version::V2 { dir: dir.clone() },
            lent: false,
            baseline: Baseline::default(),
        };
        write(&dir.join("memory.max"), &limits.memory.to_string())?;
        if dir.join("memory.swap.max").exists() {
            write(&dir.join("memory.swap.max"), "0")?;
        }
        write(&dir.join("pids.max"), &(limits.pids + HELPERS).to_string())?;
        Ok(cg)
    }

    fn create_v1(parents: &[(&'static str, PathBuf)], limits: &Limits) -> Result<Cgroup, CgroupError> {
        let name = unique_name();
        let mut cg = Cgroup {
            version: Version::V1 { dirs: Vec::new() },
            lent: false,
            baseline: Baseline::default(),
        };
        for (controller, parent) in parents {
            let dir = parent.join(&name);
            create_dir(&dir)?;
            sweep(parent);
            if let Version::V1 { dirs } = &mut cg.version {
                dirs.push((controller, dir.clone()));
            }
            set_v1_limits(controller, &dir, limits)?;
        }
        Ok(cg)
    }

    /// Takes the cgroup `name` a daemon's [`CgroupPool`] made and lends this
    /// execution, after checking it is fit: empty of processes in every
    /// hierarchy, no anonymous, shared or unevictable memory charged to it
    /// (page cache a previous execution left may stay: it is reclaimed under
    /// this execution's limit like any cache, and not counted as its use).
    /// Its limits are written afresh, its peak and CPU counters reset, and
    /// the counters that cannot be reset are read as differences from now.
    /// `Err`: not fit, or not this host's kind (lent cgroups are v1 only);
    /// the caller makes a fresh one instead, and the daemon keeps this one
    /// only if its own check finds it fit when it comes back.
    pub fn adopt(cgroups: &Cgroups, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let not_clean = |why: String| CgroupError::NotClean {
            name: name.to_string(),
            why,
        };
        if !is_pool_name(name) {
            return Err(not_clean("not a name the daemon gives its cgroups".into()));
        }
        if cgroups.v2.is_ok() {
            return Err(not_clean("lent cgroups are cgroup v1's, and this host uses v2".into()));
        }
        let parents = cgroups.v1.as_ref().map_err(|why| CgroupError::Unusable(why.clone()))?;
        let dirs: Vec<(&'static str, PathBuf)> = parents.iter().map(|(c, p)| (*c, p.join(name))).collect();
        if let Some(why) = unfit(&dirs) {
            return Err(not_clean(why));
        }
        let mut cg = Cgroup {
            version: Version::V1 { dirs: dirs.clone() },
            lent: true,
            baseline: Baseline::default(),
        };
        for (controller, dir) in &dirs {
            set_v1_limits(controller, dir, limits)?;
            match *controller {
                "memory" => {
                    write(&dir.join("memory.max_usage_in_bytes"), "0")?;
                    if dir.join("memory.memsw.max_usage_in_bytes").exists() {
                        write(&dir.join("memory.memsw.max_usage_in_bytes"), "0")?;
                    }
                    write(&dir.join("memory.failcnt"), "0")?;
                }
                "cpuacct" => write(&dir.join("cpuacct.usage"), "0")?,
                _ => {}
            }
        }
        let now = cg.raw_stats();
        cg.baseline = Baseline {
            memory: cg
                .dir("memory")
                .and_then(|d| read_u64(&d.join("memory.usage_in_bytes")))
                .unwrap_or(0),
            oom_kills: now.oom_kills,
            pids_max_hits: now.pids_max_hits,
            cpu_ns: now.cpu_ns.unwrap_or(0),
        };
        Ok(cg)
    }

    /// Moves `pid` (and so everything it forks later) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        match &self.version {
            Version::V1 { dirs } => {
                for (_, d) in dirs {
                    write(&d.join("cgroup.procs"), &pid.to_string())?;
                }
                Ok(())
            }
            Version::V2 { dir } => write(&dir.join("cgroup.procs"), &pid.to_string()),
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        match &self.version {
            Version::V1 { dirs } => dirs.iter().find(|(c, _)| *c == controller).map(|(_, d)| d.as_path()),
            Version::V2 { dir } => Some(dir),
        }
    }

    /// CPU time used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        self.raw_cpu_ns().map(|ns| ns.saturating_sub(self.baseline.cpu_ns))
    }

    fn raw_cpu_ns(&self) -> Option<u64> {
        match &self.version {
            Version::V1 { .. } => read_u64(&self.dir("cpuacct")?.join("cpuacct.usage")),
            Version::V2 { dir } => keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
        }
    }

    /// What the cgroup recorded for this execution: for a lent one, what
    /// it added since it was taken.
    pub fn stats(&self) -> CgroupStats {
        let raw = self.raw_stats();
        let base = &self.baseline;
        CgroupStats {
            peak_memory: raw.peak_memory.map(|p| p.saturating_sub(base.memory)),
            oom_kills: raw.oom_kills.saturating_sub(base.oom_kills),
            pids_max_hits: raw.pids_max_hits.saturating_sub(base.pids_max_hits),
            cpu_ns: raw.cpu_ns.map(|ns| ns.saturating_sub(base.cpu_ns)),
        }
    }

    /// The counters as the kernel has them.
    fn raw_stats(&self) -> CgroupStats {
        match &self.version {
            Version::V1 { .. } => CgroupStats {
                peak_memory: self
                    .dir("memory")
                    .and_then(|d| read_u64(&d.join("memory.max_usage_in_bytes"))),
                oom_kills: self
                    .dir("memory")
                    .and_then(|d| keyed(&d.join("memory.oom_control"), "oom_kill"))
                    .unwrap_or(0),
                pids_max_hits: self
                    .dir("pids")
                    .and_then(|d| keyed(&d.join("pids.events"), "max"))
                    .unwrap_or(0),
                cpu_ns: self.raw_cpu_ns(),
            },
            Version::V2 { dir } => CgroupStats {
                peak_memory: read_u64(&dir.join("memory.peak")),
                oom_kills: keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
                pids_max_hits: keyed(&dir.join("pids.events"), "max").unwrap_or(0),
                cpu_ns: self.raw_cpu_ns(),
            },
        }
    }

    /// "v1 memory,pids,cpuacct at …" / "v2 at …", for -v.
    pub fn describe(&self) -> String {
        match &self.version {
            Version::V1 { dirs } => {
                let names: Vec<&str> = dirs.iter().map(|(c, _)| *c).collect();
                let first = dirs.first().map(|(_, d)| d.display().to_string()).unwrap_or_default();
                let lent = if self.lent { ", lent by the daemon" } else { "" };
                format!("cgroup v1 ({}{lent}), e.g. {first}", names.join(", "))
            }
            Version::V2 { dir } => format!("cgroup v2 at {}", dir.display()),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.lent {
            return;
        }
        let dirs: Vec<PathBuf> = match &self.version {
            Version::V1 { dirs } => dirs.iter().map(|(_, d)| d.clone()).collect(),
            Version::V2 { dir } => vec![dir.clone()],
        };
        // Every process of the sandbox is gone by now (init's exit tears the
        // pid namespace down, and the outer child was reaped); the kernel
        // may still be finishing the last exit, so retry briefly.
        remove_dirs(dirs.iter().map(PathBuf::as_path));
    }
}

/// Sets `limits` in the v1 hierarchy of `controller`, at `dir`.
fn set_v1_limits(controller: &str, dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    match controller {
        "memory" => {
            write(&dir.join("memory.limit_in_bytes"), &limits.memory.to_string())?;
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                write(&dir.join("memory.memsw.limit_in_bytes"), &limits.memory.to_string())?;
            }
            // Best effort: without swap accounting, no swapping at all.
            let _ = std::fs::write(dir.join("memory.swappiness"), "0");
            Ok(())
        }
        "pids" => write(&dir.join("pids.max"), &(limits.pids + HELPERS).to_string()),
        _ => Ok(()),
    }
}

/// Removes each directory, retrying briefly while the kernel finishes the
/// exit of its last process (up to ~0.2 s each).
fn remove_dirs<'a>(dirs: impl Iterator<Item = &'a Path>) {
    for d in dirs {
        let mut pause = std::time::Duration::from_micros(50);
        for _ in 0..20 {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}

/// The prefix of a pooled cgroup's name: `ninewall-pool-PID-SEQ`, PID the
/// daemon's.
const POOL_PREFIX: &str = "ninewall-pool-";

/// The name of this process's pooled cgroup number `seq`.
fn pool_name(seq: u64) -> String {
    format!("{POOL_PREFIX}{}-{seq}", std::process::id())
}

/// Whether `name` is one a [`CgroupPool`] gives: one path component,
/// nothing but the prefix, digits and one dash between them.
fn is_pool_name(name: &str) -> bool {
    name.strip_prefix(POOL_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, seq)| {
            [pid, seq]
                .iter()
                .all(|f| !f.is_empty() && f.len() <= 20 && f.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// What makes the v1 cgroup at `dirs` unfit for another execution: a
/// process in it (read from `cgroup.procs`, which is empty only when no
/// process is in it), or memory that a process could still own charged to
/// it. `None`: fit. Read into a buffer on the stack: the daemon asks this
/// after every execution, and growing a string for each file fragmented
/// its one heap arena (in a trial its heap kept growing, 556 to 612 KiB
/// over 9,000 executions; read this way it stays flat).
fn unfit(dirs: &[(&'static str, PathBuf)]) -> Option<String> {
    let mut buf = [0u8; 8192];
    for (controller, dir) in dirs {
        let procs = dir.join("cgroup.procs");
        match read_small(&procs, &mut buf) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(_) => return Some(format!("a process is still in its {controller} cgroup")),
            Err(e) => return Some(format!("reading {}: {e}", procs.display())),
        }
        if *controller == "memory" {
            let stat = dir.join("memory.stat");
            let text = match read_small(&stat, &mut buf) {
                Ok(text) => text,
                Err(e) => return Some(format!("reading {}: {e}", stat.display())),
            };
            for key in ["rss", "shmem", "unevictable"] {
                match keyed_in(text, key) {
                    Some(0) => {}
                    Some(bytes) => return Some(format!("{bytes} bytes of {key} memory are still charged to it")),
                    None => return Some(format!("{} has no {key}", stat.display())),
                }
            }
        }
    }
    None
}

/// The whole of a small text file, read into `buf`; a file that does not
/// fit, or is not text, is an error.
fn read_small<'b>(path: &Path, buf: &'b mut [u8]) -> std::io::Result<&'b str> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut len = 0;
    loop {
        let Some(room) = buf.get_mut(len..).filter(|r| !r.is_empty()) else {
            return Err(std::io::Error::other("longer than expected"));
        };
        match file.read(room)? {
            0 => break,
            n => len += n,
        }
    }
    std::str::from_utf8(buf.get(..len).unwrap_or_default()).map_err(std::io::Error::other)
}

/// A daemon's cgroups for its executions' sandboxes, made beneath its own
/// cgroup (some when it starts, more while all are lent, up to a bound) and
/// lent to one supervisor at a time (by name, `run --cgroup`): cgroup v1
/// only. A cgroup comes back only through [`Lease::give_back`], called once
/// the supervisor it was lent to has been reaped (nothing but that
/// supervisor moves processes into it, so nothing enters it after), and is
/// kept only if it is fit ([`Cgroup::adopt`]'s test); otherwise it is
/// removed.
#[derive(Debug)]
pub struct CgroupPool {
    parents: Vec<(&'static str, PathBuf)>,
    /// The most that exist at once: past it, a supervisor makes its own.
    most: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Each cgroup by its number (its name is [`pool_name`]'s): numbers,
    /// in vectors with room for all from the start, so that the daemon's
    /// heap is not pinned by names allocated at a busy moment.
    free: Vec<u64>,
    /// Lent and never given back (their supervisor was not known to be
    /// reaped), or given back with a process still in them: never lent
    /// again, removed when the pool is.
    retired: Vec<u64>,
    /// Removed ([`CgroupPool::remove_all`]): nothing is lent, kept or made.
    closed: bool,
    /// How many exist: free, lent or retired.
    made: usize,
}

/// A cgroup of a [`CgroupPool`], lent to one supervisor. Dropped without
/// [`Lease::give_back`], it is never lent again.
#[derive(Debug)]
pub struct Lease {
    seq: u64,
    pool: Arc<CgroupPool>,
    returned: bool,
}

impl CgroupPool {
    /// A pool beneath this process's own cgroup in each v1 hierarchy, with
    /// `first` cgroups made now and at most `most` ever at once; first of
    /// all, the pooled cgroups of daemons no longer running are removed.
    /// `None` where the host's cgroups are v2 (made per execution there) or
    /// v1 cannot be used.
    pub fn new(cgroups: &Cgroups, first: usize, most: usize) -> Option<Arc<CgroupPool>> {
        if cgroups.v2.is_ok() {
            return None;
        }
        let parents = cgroups.v1.as_ref().ok()?.clone();
        for (_, parent) in &parents {
            sweep(parent);
        }
        let pool = Arc::new(CgroupPool {
            parents,
            most,
            state: Mutex::new(PoolState {
                free: Vec::with_capacity(most),
                retired: Vec::with_capacity(most),
                ..PoolState::default()
            }),
        });
        for _ in 0..first.min(most) {
            match pool.make() {
                Ok(Some(seq)) => pool.lock().free.push(seq),
                Ok(None) | Err(_) => {
                    // Not ours to make here: supervisors make their own.
                    pool.remove_all();
                    return None;
                }
            }
        }
        Some(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes one more, with no limits yet (the execution's are written
    /// when it is taken); its number, or `None` if as many as it may have
    /// exist.
    fn make(&self) -> Result<Option<u64>, CgroupError> {
        // Unique in this process, whatever pools it has.
        static MADE: AtomicU64 = AtomicU64::new(0);
        {
            let mut state = self.lock();
            if state.closed || state.made >= self.most {
                return Ok(None);
            }
            state.made += 1;
        }
        let seq = MADE.fetch_add(1, Ordering::Relaxed) + 1;
        let name = pool_name(seq);
        for (i, (_, parent)) in self.parents.iter().enumerate() {
            if let Err(e) = create_dir(&parent.join(&name)) {
                let made: Vec<PathBuf> = self.parents.iter().take(i).map(|(_, p)| p.join(&name)).collect();
                remove_dirs(made.iter().map(PathBuf::as_path));
                let mut state = self.lock();
                state.made = state.made.saturating_sub(1);
                return Err(e);
            }
        }
        Ok(Some(seq))
    }

    /// A cgroup to lend: a free one, else one made now while fewer than
    /// the bound exist; `None` past it (the supervisor then makes its own,
    /// as `ninewall run` does).
    pub fn lend(self: &Arc<Self>) -> Option<Lease> {
        let free = {
            let mut state = self.lock();
            if state.closed {
                return None;
            }
            state.free.pop()
        };
        let seq = match free {
            Some(seq) => seq,
            None => self.make().ok()??,
        };
        Some(Lease {
            seq,
            pool: Arc::clone(self),
            returned: false,
        })
    }

    fn dirs(&self, seq: u64) -> Vec<(&'static str, PathBuf)> {
        let name = pool_name(seq);
        self.parents.iter().map(|(c, p)| (*c, p.join(&name))).collect()
    }

    /// Removes every cgroup of the pool: free, retired, and lent ones given
    /// back from now on (one still in use stays, and is removed by the next
    /// daemon to start).
    pub fn remove_all(&self) {
        let seqs: Vec<u64> = {
            let mut state = self.lock();
            state.closed = true;
            state.free.iter().chain(&state.retired).copied().collect()
        };
        for seq in seqs {
            remove_dirs(self.dirs(seq).iter().map(|(_, d)| d.as_path()));
        }
        for (_, parent) in &self.parents {
            let ours = format!("{POOL_PREFIX}{}-", std::process::id());
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_str().is_some_and(|n| n.starts_with(&ours)) {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
        let mut state = self.lock();
        state.free.clear();
        state.retired.clear();
    }
}

impl Lease {
    /// The cgroup's name, for `run --cgroup`.
    pub fn name(&self) -> String {
        pool_name(self.seq)
    }

    /// Gives it back, once the supervisor it was lent to has been reaped:
    /// kept if fit (its processes' exits may still be finishing: it is
    /// looked at for up to ~0.2 s), else removed.
    pub fn give_back(mut self) {
        self.returned = true;
        let pool = Arc::clone(&self.pool);
        let dirs = pool.dirs(self.seq);
        let mut pause = std::time::Duration::from_micros(100);
        let mut fit = false;
        for _ in 0..12 {
            if unfit(&dirs).is_none() {
                fit = true;
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
        {
            let mut state = pool.lock();
            if fit && !state.closed {
                state.free.push(self.seq);
                return;
            }
        }
        remove_dirs(dirs.iter().map(|(_, d)| d.as_path()));
        let mut state = pool.lock();
        if dirs.iter().any(|(_, d)| d.exists()) {
            // A process is still in it: removed with the pool, or by the
            // next daemon.
            state.retired.push(self.seq);
        } else {
            state.made = state.made.saturating_sub(1);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.returned {
            self.pool.lock().retired.push(self.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_pool_gives_are_taken_as_lent() {
        assert!(is_pool_name("ninewall-pool-123-4"));
        for bad in [
            "ninewall-pool-",
            "ninewall-pool-123",
            "ninewall-pool-123-",
            "ninewall-pool--4",
            "ninewall-pool-1-2-3",
            "ninewall-pool-1/../x-2",
            "ninewall-pool-../../4",
            "ninewall-123-4-5",
            "/sys/fs/cgroup/memory",
        ] {
            assert!(!is_pool_name(bad), "{bad}");
        }
    }

    /// Root on a cgroup v1 host: the pool makes cgroups up to its bound; a
    /// lent cgroup with a process in it is neither adopted by an execution
    /// nor lent again (and still counts against the bound while it cannot
    /// be removed); the pool removes all it made when it is removed.
    #[test]
    fn a_lent_cgroup_with_a_process_in_it_is_not_used_again() {
        let cgroups = Cgroups::probe();
        if sys::effective_ids().0 != 0 || cgroups.v2.is_ok() || cgroups.v1.is_err() {
            return;
        }
        let pool = CgroupPool::new(&cgroups, 1, 2).expect("a pool as root on cgroup v1");
        let lease = pool.lend().expect("one free");
        let second = pool.lend().expect("one more made, up to the bound");
        assert!(pool.lend().is_none(), "no more than the bound");
        second.give_back();
        let name = lease.name();
        let dirs = pool.dirs(lease.seq);
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        for (_, d) in &dirs {
            std::fs::write(d.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        }
        let adopted = Cgroup::adopt(&cgroups, &name, &Limits::default());
        assert!(
            matches!(adopted, Err(CgroupError::NotClean { .. })),
            "adopted with a process in it: {adopted:?}"
        );
        lease.give_back();
        let next = pool.lend().expect("the other one");
        assert_ne!(next.name(), name, "the cgroup with a process in it was lent again");
        assert!(pool.lend().is_none(), "the one with a process in it still counts");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        // Fit now, and adopted: counters read from the moment it was taken.
        let fresh = Cgroup::adopt(&cgroups, &next.name(), &Limits::default()).unwrap();
        assert_eq!(fresh.stats().cpu_ns, Some(0));
        drop(fresh);
        let next_dirs = pool.dirs(next.seq);
        next.give_back();
        pool.remove_all();
        for (_, d) in dirs.iter().chain(&next_dirs) {
            assert!(!d.exists(), "{} left behind", d.display());
        }
    }
}

//! Wall 9's cgroup half: one cgroup per execution, beneath the supervisor's own
//! cgroup, with memory (no swap) and pids limits and CPU accounting, removed at
//! the end.
//!
//! cgroup v2 is used where the supervisor's v2 cgroup can delegate the memory
//! and pids controllers to a child; otherwise the v1 hierarchies of memory,
//! pids and cpuacct, each beneath the supervisor's cgroup in that hierarchy.
//! When neither can be made (typically: ninewall runs unprivileged without a
//! delegated cgroup), the caller falls back to rlimits alone, or refuses when
//! the profile says `cgroups = "strict"`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::Limits;
use crate::sys;

/// Controllers used under cgroup v1 (the cpu *time* budget is enforced by
/// reading cpuacct, not by a bandwidth limit).
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpuacct"];

/// A per-execution cgroup. Dropping it removes its directories.
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
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

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`oom_kill 3`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
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
/// pid that no longer exists. Only an empty cgroup can be removed (the kernel
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

/// This process's cgroup paths: (hierarchy id 0 → v2; controllers → v1).
fn own_cgroups() -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect())
}

/// cgroup mounts: (fstype, super options, root, mount point).
fn cgroup_mounts() -> Result<Vec<(String, String, String, PathBuf)>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("reading mountinfo: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mnt), Some(fstype), Some(opts)) = (pre.get(3), pre.get(4), post.first(), post.get(2))
        else {
            continue;
        };
        if *fstype == "cgroup" || *fstype == "cgroup2" {
            out.push((
                fstype.to_string(),
                opts.to_string(),
                root.to_string(),
                PathBuf::from(mnt),
            ));
        }
    }
    Ok(out)
}

/// The directory of cgroup `path` under a mount whose root is `root`.
fn dir_of(mount: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path).strip_prefix(root).ok()?;
    Some(mount.join(rel))
}

impl Cgroup {
    /// Makes the cgroup and sets its limits. The error says why neither
    /// version could be used.
    pub fn create(limits: &Limits) -> Result<Cgroup, String> {
        let own = own_cgroups()?;
        let mounts = cgroup_mounts()?;
        let v2 = match Cgroup::create_v2(limits, &own, &mounts) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        match Cgroup::create_v1(limits, &own, &mounts) {
            Ok(c) => Ok(c),
            Err(v1) => Err(format!("cgroup v2: {v2}; cgroup v1: {v1}")),
        }
    }

    fn create_v2(
        limits: &Limits,
        own: &[(String, String)],
        mounts: &[(String, String, String, PathBuf)],
    ) -> Result<Cgroup, String> {
        let path = own
            .iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| p.clone())
            .ok_or("no v2 cgroup")?;
        let (_, _, root, mnt) = mounts.iter().find(|m| m.0 == "cgroup2").ok_or("no cgroup2 mount")?;
        let parent = dir_of(mnt, root, &path).ok_or("own cgroup is outside the cgroup2 mount")?;
        let available = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        for needed in ["memory", "pids"] {
            if !available.split_whitespace().any(|c| c == needed) {
                return Err(format!(
                    "the {needed} controller is not available in {}",
                    parent.display()
                ));
            }
        }
        let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
        for needed in ["memory", "pids", "cpu"] {
            if available.split_whitespace().any(|c| c == needed) && !enabled.split_whitespace().any(|c| c == needed) {
                write(&parent.join("cgroup.subtree_control"), &format!("+{needed}"))?;
            }
        }
        let dir = parent.join(unique_name());
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        sweep(&parent);
        let cg = Cgroup {
            version: Version::V2 { dir: dir.clone() },
        };
        write(&dir.join("memory.max"), &limits.memory.to_string())?;
        if dir.join("memory.swap.max").exists() {
            write(&dir.join("memory.swap.max"), "0")?;
        }
        write(&dir.join("pids.max"), &(limits.pids + HELPERS).to_string())?;
        Ok(cg)
    }

    fn create_v1(
        limits: &Limits,
        own: &[(String, String)],
        mounts: &[(String, String, String, PathBuf)],
    ) -> Result<Cgroup, String> {
        let name = unique_name();
        let mut cg = Cgroup {
            version: Version::V1 { dirs: Vec::new() },
        };
        for controller in V1_CONTROLLERS {
            let has = |list: &str| list.split(',').any(|c| c == controller);
            let path = own
                .iter()
                .find(|(list, _)| has(list))
                .map(|(_, p)| p.clone())
                .ok_or_else(|| format!("no v1 {controller} hierarchy"))?;
            let (_, _, root, mnt) = mounts
                .iter()
                .find(|m| m.0 == "cgroup" && has(&m.1))
                .ok_or_else(|| format!("the v1 {controller} hierarchy is not mounted"))?;
            let parent =
                dir_of(mnt, root, &path).ok_or_else(|| format!("own {controller} cgroup is outside its mount"))?;
            let dir = parent.join(&name);
            std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            sweep(&parent);
            if let Version::V1 { dirs } = &mut cg.version {
                dirs.push((controller, dir.clone()));
            }
            match controller {
                "memory" => {
                    write(&dir.join("memory.limit_in_bytes"), &limits.memory.to_string())?;
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        write(&dir.join("memory.memsw.limit_in_bytes"), &limits.memory.to_string())?;
                    }
                    // Best effort: without swap accounting, no swapping at all.
                    let _ = std::fs::write(dir.join("memory.swappiness"), "0");
                }
                "pids" => write(&dir.join("pids.max"), &(limits.pids + HELPERS).to_string())?,
                _ => {}
            }
        }
        Ok(cg)
    }

    /// Moves `pid` (and so everything it forks later) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), String> {
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
        match &self.version {
            Version::V1 { .. } => read_u64(&self.dir("cpuacct")?.join("cpuacct.usage")),
            Version::V2 { dir } => keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
        }
    }

    /// What the cgroup recorded.
    pub fn stats(&self) -> CgroupStats {
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
                cpu_ns: self.cpu_ns(),
            },
            Version::V2 { dir } => CgroupStats {
                peak_memory: read_u64(&dir.join("memory.peak")),
                oom_kills: keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
                pids_max_hits: keyed(&dir.join("pids.events"), "max").unwrap_or(0),
                cpu_ns: self.cpu_ns(),
            },
        }
    }

    /// "v1 memory,pids,cpuacct at …" / "v2 at …", for -v.
    pub fn describe(&self) -> String {
        match &self.version {
            Version::V1 { dirs } => {
                let names: Vec<&str> = dirs.iter().map(|(c, _)| *c).collect();
                let first = dirs.first().map(|(_, d)| d.display().to_string()).unwrap_or_default();
                format!("cgroup v1 ({}), e.g. {first}", names.join(", "))
            }
            Version::V2 { dir } => format!("cgroup v2 at {}", dir.display()),
        }
    }
}

/// ninewall's own processes in the cgroup besides the MBU's: the outer child
/// and init.
pub const HELPERS: u64 = 2;

impl Drop for Cgroup {
    fn drop(&mut self) {
        let dirs: Vec<PathBuf> = match &self.version {
            Version::V1 { dirs } => dirs.iter().map(|(_, d)| d.clone()).collect(),
            Version::V2 { dir } => vec![dir.clone()],
        };
        for d in dirs {
            // Every process of the sandbox is gone by now (init's exit tears the
            // pid namespace down, and the outer child was reaped); the kernel
            // may still be finishing the last exit, so retry briefly.
            let mut pause = std::time::Duration::from_micros(50);
            for _ in 0..20 {
                match std::fs::remove_dir(&d) {
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
}

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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Neither version could be used; why, for each.
    #[error("cgroup v2: {v2}; cgroup v1: {v1}")]
    Neither {
        /// Why not v2.
        v2: Box<CgroupError>,
        /// Why not v1.
        v1: Box<CgroupError>,
    },
}

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
        };
        for (controller, parent) in parents {
            let dir = parent.join(&name);
            create_dir(&dir)?;
            sweep(parent);
            if let Version::V1 { dirs } = &mut cg.version {
                dirs.push((controller, dir.clone()));
            }
            match *controller {
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

//! The facts of this host that a plan depends on, asked once per run: the
//! kernel's features, who ninewall runs as, where an execution's cgroup can be
//! made, and where the shared empty network namespace lives.
//!
//! Host facts for walls 3, 6, 7 and 9.
//!
//! [`Host::probe`] is the only I/O before the plan. [`crate::plan::SetupPlan::build`]
//! takes its value, so every decision the plan makes (id maps, mounts, rlimits,
//! which cgroup hierarchy, whether to join the shared network namespace) is a
//! pure function of the policy, the request and this value, and is covered by
//! the golden tests; `sandbox/` carries the plan out and decides nothing.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::kernel::Kernel;
use crate::sys;

/// The identity ninewall runs as, which decides the id mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
}

impl Caller {
    /// The identity of this process.
    pub fn current() -> Caller {
        let (uid, gid) = sys::effective_ids();
        Caller { uid, gid }
    }
}

/// Why a cgroup version cannot be used beneath this supervisor's own cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unusable {
    /// A file of `/proc/self` could not be read.
    #[error("reading {path}: {error}")]
    Unreadable {
        /// The file.
        path: &'static str,
        /// The OS error, as the OS said it.
        error: String,
    },
    /// This process is in no v2 cgroup.
    #[error("no v2 cgroup")]
    NoV2,
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup2 mount")]
    NoV2Mount,
    /// This process's v2 cgroup is not below the cgroup2 mount.
    #[error("own cgroup is outside the cgroup2 mount")]
    OutsideV2Mount,
    /// A v2 controller ninewall needs is not available to children.
    #[error("the {controller} controller is not available in {}", parent.display())]
    NoController {
        /// The controller.
        controller: &'static str,
        /// This process's cgroup.
        parent: PathBuf,
    },
    /// This process is in no v1 hierarchy of the controller.
    #[error("no v1 {controller} hierarchy")]
    NoV1 {
        /// The controller.
        controller: &'static str,
    },
    /// The v1 hierarchy of the controller is not mounted.
    #[error("the v1 {controller} hierarchy is not mounted")]
    V1NotMounted {
        /// The controller.
        controller: &'static str,
    },
    /// This process's v1 cgroup is not below its hierarchy's mount.
    #[error("own {controller} cgroup is outside its mount")]
    OutsideV1Mount {
        /// The controller.
        controller: &'static str,
    },
}

/// Controllers used under cgroup v1 (the cpu *time* budget is enforced by
/// reading cpuacct, not by a bandwidth limit).
pub const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpuacct"];

/// Where an execution's cgroup can be made: beneath this supervisor's own
/// cgroup, in each version (v2 is tried first), or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cgroups {
    /// The supervisor's v2 cgroup directory, whose children can have the
    /// memory and pids controllers.
    pub v2: Result<PathBuf, Unusable>,
    /// The supervisor's cgroup directory in the v1 hierarchy of each of
    /// [`V1_CONTROLLERS`].
    pub v1: Result<Vec<(&'static str, PathBuf)>, Unusable>,
    /// The v1 cgroup a daemon lent this execution (`run --cgroup`, see
    /// `sandbox::cgroup::CgroupPool`): not a probe but a loan, set by the
    /// pipeline; used instead of a fresh cgroup if it is fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lent: Option<String>,
}

impl Cgroups {
    /// Reads `/proc/self/cgroup`, `/proc/self/mountinfo` and the v2
    /// cgroup's `cgroup.controllers`. Nothing is made or written here.
    pub fn probe() -> Cgroups {
        let own = match read("/proc/self/cgroup") {
            Ok(text) => own_cgroups(&text),
            Err(e) => return Cgroups::unusable(e),
        };
        let mounts = match read("/proc/self/mountinfo") {
            Ok(text) => cgroup_mounts(&text),
            Err(e) => return Cgroups::unusable(e),
        };
        let v2 = v2_parent(&own, &mounts).and_then(|parent| {
            let available = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            match ["memory", "pids"]
                .into_iter()
                .find(|needed| !available.split_whitespace().any(|c| c == *needed))
            {
                Some(controller) => Err(Unusable::NoController { controller, parent }),
                None => Ok(parent),
            }
        });
        let v1 = V1_CONTROLLERS
            .into_iter()
            .map(|controller| v1_parent(controller, &own, &mounts).map(|dir| (controller, dir)))
            .collect();
        Cgroups { v2, v1, lent: None }
    }

    /// Neither version, for the same reason.
    fn unusable(why: Unusable) -> Cgroups {
        Cgroups {
            v2: Err(why.clone()),
            v1: Err(why),
            lent: None,
        }
    }
}

fn read(path: &'static str) -> Result<String, Unusable> {
    std::fs::read_to_string(path).map_err(|e| Unusable::Unreadable {
        path,
        error: e.to_string(),
    })
}

/// This process's cgroup paths: (controllers, path); empty controllers is v2.
fn own_cgroups(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// A cgroup mount of mountinfo.
struct CgroupMount {
    /// "cgroup" or "cgroup2".
    fstype: String,
    /// Its super options (the v1 controllers).
    options: String,
    /// The root of the hierarchy that is mounted.
    root: String,
    /// Where.
    at: PathBuf,
}

fn cgroup_mounts(text: &str) -> Vec<CgroupMount> {
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
            out.push(CgroupMount {
                fstype: (*fstype).to_string(),
                options: (*opts).to_string(),
                root: (*root).to_string(),
                at: PathBuf::from(mnt),
            });
        }
    }
    out
}

/// The directory of cgroup `path` under a mount whose root is `root`.
fn dir_of(mount: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path).strip_prefix(root).ok()?;
    Some(mount.join(rel))
}

fn v2_parent(own: &[(String, String)], mounts: &[CgroupMount]) -> Result<PathBuf, Unusable> {
    let path = own
        .iter()
        .find(|(c, _)| c.is_empty())
        .map(|(_, p)| p.as_str())
        .ok_or(Unusable::NoV2)?;
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or(Unusable::NoV2Mount)?;
    dir_of(&mount.at, &mount.root, path).ok_or(Unusable::OutsideV2Mount)
}

fn v1_parent(controller: &'static str, own: &[(String, String)], mounts: &[CgroupMount]) -> Result<PathBuf, Unusable> {
    let has = |list: &str| list.split(',').any(|c| c == controller);
    let path = own
        .iter()
        .find(|(list, _)| has(list))
        .map(|(_, p)| p.as_str())
        .ok_or(Unusable::NoV1 { controller })?;
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && has(&m.options))
        .ok_or(Unusable::V1NotMounted { controller })?;
    dir_of(&mount.at, &mount.root, path).ok_or(Unusable::OutsideV1Mount { controller })
}

/// The environment variable naming ninewall's runtime directory.
pub const RUNTIME_DIR_ENV: &str = "NINEWALL_RUNTIME_DIR";
/// The runtime directory when [`RUNTIME_DIR_ENV`] is not set.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/ninewall";
/// The file in the runtime directory the shared namespace is mounted on.
pub const SHARED_NETNS_NAME: &str = "net-none";

/// ninewall's runtime directory: [`RUNTIME_DIR_ENV`] if that is an absolute
/// path, else [`DEFAULT_RUNTIME_DIR`].
pub fn runtime_dir() -> PathBuf {
    std::env::var_os(RUNTIME_DIR_ENV)
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR))
}

/// Where the shared empty network namespace is (or would be) mounted, in the
/// runtime directory.
pub fn shared_netns_path() -> PathBuf {
    runtime_dir().join(SHARED_NETNS_NAME)
}

/// Everything about this host that a plan depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// What the kernel offers.
    pub kernel: Kernel,
    /// Who ninewall runs as.
    pub caller: Caller,
    /// Where an execution's cgroup can be made.
    pub cgroups: Cgroups,
    /// Where the shared empty network namespace lives, when this
    /// supervisor may join and make it (as root); `None` otherwise
    /// (`sandbox::netns` says why only root).
    pub shared_netns: Option<PathBuf>,
    /// The host uid and gid allocated to this execution alone, when ninewall
    /// runs as root (`crate::identity`); not a probe but an allocation, set
    /// by the pipeline before the plan.
    pub identity: Option<u32>,
}

impl Host {
    /// Asks the kernel and `/proc/self`.
    pub fn probe() -> Host {
        let caller = Caller::current();
        Host {
            kernel: Kernel::probe(),
            caller,
            cgroups: Cgroups::probe(),
            shared_netns: (caller.uid == 0).then(shared_netns_path),
            identity: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 1 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 1 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 1 0:28 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
33 1 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn the_supervisors_own_cgroup_is_found_in_each_hierarchy() {
        let own = own_cgroups("0::/user.slice\n5:memory:/m/a\n4:pids:/p\n3:cpu,cpuacct:/c\n");
        let mounts = cgroup_mounts(MOUNTINFO);
        assert_eq!(
            v2_parent(&own, &mounts),
            Ok(PathBuf::from("/sys/fs/cgroup/unified/user.slice"))
        );
        assert_eq!(
            v1_parent("memory", &own, &mounts),
            Ok(PathBuf::from("/sys/fs/cgroup/memory/m/a"))
        );
        assert_eq!(
            v1_parent("cpuacct", &own, &mounts),
            Ok(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c"))
        );
        let no_pids = own_cgroups("5:memory:/m\n");
        assert_eq!(
            v1_parent("pids", &no_pids, &mounts),
            Err(Unusable::NoV1 { controller: "pids" })
        );
        assert_eq!(v2_parent(&no_pids, &mounts), Err(Unusable::NoV2));
    }
}

//! What the running kernel offers, asked once per run: the plan is built for
//! this kernel, and a profile that needs more than it offers is refused.
//!
//! Host facts for walls 7 and 8 (the plan); `ninewall probe` for all nine.

use serde::Serialize;

use crate::landlock;
use crate::sys;

/// The features of the running kernel that change the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Landlock ABI version; 0 when Landlock is unavailable.
    pub landlock_abi: u32,
}

impl Kernel {
    /// Asks the kernel.
    pub fn probe() -> Kernel {
        Kernel {
            landlock_abi: sys::landlock_abi(),
        }
    }

    /// What this host offers each wall, with a verdict per wall, for
    /// `ninewall probe` (text) and `ninewall probe --json`.
    pub fn report(&self) -> serde_json::Value {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).ok();
        let abi = self.landlock_abi;
        let namespaces: Vec<String> = ["user", "mnt", "pid", "ipc", "uts", "net", "cgroup", "time"]
            .iter()
            .filter(|n| std::path::Path::new(&format!("/proc/self/ns/{n}")).exists())
            .map(std::string::ToString::to_string)
            .collect();
        let max_userns = read("/proc/sys/user/max_user_namespaces")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let unpriv_clone = read("/proc/sys/kernel/unprivileged_userns_clone");
        let apparmor = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
        let userns_unprivileged =
            max_userns > 0 && unpriv_clone.as_deref() != Some("0") && apparmor.as_deref() != Some("1");
        let seccomp = read("/proc/self/status").is_some_and(|s| s.contains("Seccomp:"));
        let notify = sys::seccomp_notify_supported();
        let io_uring = read("/proc/sys/kernel/io_uring_disabled");
        let tiocsti = read("/proc/sys/dev/tty/legacy_tiocsti");
        let cgroup_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let v1: Vec<&str> = ["memory", "pids", "cpuacct"]
            .into_iter()
            .filter(|c| {
                cgroup_mounts.lines().any(|l| {
                    l.contains(" - cgroup ") && l.split(',').any(|o| o.trim() == *c || o.ends_with(&format!(" {c}")))
                })
            })
            .collect();
        let v2 = cgroup_mounts.lines().any(|l| l.contains(" - cgroup2 "));
        let verdict = |ok: bool, degraded: bool| {
            if ok {
                "ok"
            } else if degraded {
                "degraded"
            } else {
                "missing"
            }
        };
        serde_json::json!({
            "landlock": {"abi": abi, "fs": landlock::fs_names(landlock::fs_rights(abi)), "net": landlock::net_names(landlock::net_rights(abi)),
                         "scopes": landlock::scope_names(landlock::scopes(abi)),
                         "verdict": verdict(abi >= 6, abi >= 1)},
            "seccomp": {"filters": seccomp, "user_notification": notify, "verdict": verdict(seccomp && notify, seccomp)},
            "namespaces": {"kinds": namespaces, "verdict": verdict(namespaces.len() == 8, namespaces.len() >= 6)},
            "user_namespaces": {"max": max_userns, "unprivileged": userns_unprivileged, "verdict": verdict(userns_unprivileged, max_userns > 0)},
            "cgroups": {"v1": v1, "v2_mounted": v2, "verdict": verdict(v1.len() == 3 || v2, false)},
            "io_uring_disabled": io_uring, "legacy_tiocsti": tiocsti,
            "notes": {
                "io_uring": "refused by every seccomp filter whatever this setting",
                "tiocsti": "refused by every seccomp filter whatever this setting",
            },
        })
    }

    /// The [`Kernel::report`] as text.
    pub fn describe(&self) -> String {
        let r = self.report();
        let f = |p: &str| r.pointer(p).cloned().unwrap_or(serde_json::Value::Null);
        let list = |p: &str| {
            f(p).as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "(none)".into())
        };
        let mut s = String::new();
        s.push_str(&format!(
            "landlock     {:<9} ABI {}\n",
            f("/landlock/verdict").as_str().unwrap_or("?"),
            self.landlock_abi
        ));
        s.push_str(&format!(
            "  fs         {}\n  net        {}\n  scopes     {}\n",
            list("/landlock/fs"),
            list("/landlock/net"),
            list("/landlock/scopes")
        ));
        s.push_str(&format!(
            "seccomp      {:<9} filters {}, user notification {}\n",
            f("/seccomp/verdict").as_str().unwrap_or("?"),
            f("/seccomp/filters"),
            f("/seccomp/user_notification")
        ));
        s.push_str(&format!(
            "namespaces   {:<9} {}\n",
            f("/namespaces/verdict").as_str().unwrap_or("?"),
            list("/namespaces/kinds")
        ));
        s.push_str(&format!(
            "userns       {:<9} max {}, unprivileged {}\n",
            f("/user_namespaces/verdict").as_str().unwrap_or("?"),
            f("/user_namespaces/max"),
            f("/user_namespaces/unprivileged")
        ));
        s.push_str(&format!(
            "cgroups      {:<9} v1 {}, v2 mounted {} (delegation is decided per run; -v says what was built)\n",
            f("/cgroups/verdict").as_str().unwrap_or("?"),
            list("/cgroups/v1"),
            f("/cgroups/v2_mounted")
        ));
        let setting = |p: &str| f(p).as_str().map_or_else(|| "absent".to_string(), str::to_string);
        s.push_str(&format!(
            "io_uring     sysctl io_uring_disabled={}, legacy_tiocsti={} (io_uring and TIOCSTI are refused by seccomp whatever these say)",
            setting("/io_uring_disabled"),
            setting("/legacy_tiocsti")
        ));
        s
    }
}

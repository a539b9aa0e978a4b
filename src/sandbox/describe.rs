//! What `ninewall run -v` says about the walls a plan builds.
//!
//! Walls 3 to 9, as `-v` prints them.

use std::path::Path;

use super::mounts;
use crate::plan::SetupPlan;

/// A short description of the walls a plan builds, for `-v`.
pub fn wall_lines(plan: &SetupPlan) -> Vec<String> {
    let mut out = vec![
        format!(
            "wall 3 credentials: user namespace, uid {} gid {} inside = {} {} on the host{}{}; every capability dropped; no_new_privs",
            plan.ids.inside_uid,
            plan.ids.inside_gid,
            plan.ids.host_uid,
            plan.ids.host_gid,
            if plan.ids.own_namespace { " (this execution's own, which owns the namespace)" } else { "" },
            if plan.ids.clear_groups { "; supplementary groups cleared" } else { "; setgroups denied" }
        ),
        "wall 4 filesystem view: mount namespace, new tmpfs root, pivot_root, old root detached".to_string(),
    ];
    if let Some(guard) = plan
        .argv
        .iter()
        .find(|a| *a == crate::interpreter::GUARD_PATH || *a == crate::interpreter::GUARD_CODE_PATH)
    {
        out.insert(
            0,
            format!(
                "wall 2 interpreter guard: {guard} checks and rewrites the user's code before it runs (a language restriction: imports, names, attributes), an audit hook behind it{}",
                if guard == crate::interpreter::GUARD_CODE_PATH {
                    " (compiled once by the profile's interpreter)"
                } else {
                    ""
                }
            ),
        );
    }
    for line in mounts::compile(&plan.mounts).describe {
        if line.starts_with("bind") || line.starts_with("symlink") || line.starts_with("mount a") {
            out.push(format!("  {line}"));
        }
    }
    out.push(format!(
        "wall 5 process isolation: pid, ipc, uts (hostname {:?}), cgroup, time namespaces; new session; dies with the supervisor",
        plan.hostname
    ));
    out.push(match (plan.net, &plan.shared_netns) {
        // Said once the sandbox has joined it (`say_resources`).
        (crate::policy::NetMode::None, Some(_)) => {
            "wall 6 network: no network namespace of its own: the shared empty one (no interface, no socket)"
                .to_string()
        }
        (crate::policy::NetMode::None, None) => "wall 6 network: network namespace, no interface up".to_string(),
        (crate::policy::NetMode::Loopback, _) => "wall 6 network: network namespace, loopback only".to_string(),
        (crate::policy::NetMode::Proxy, _) => format!(
            "wall 6 network: network namespace, loopback only; the supervisor's proxy on 127.0.0.1:{} connects to: {}",
            crate::policy::egress::PROXY_PORT,
            plan.proxy.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
        ),
    });
    match &plan.landlock {
        None => out.push("wall 7 Landlock: not available on this kernel, and not required by the profile".into()),
        Some(ll) => {
            out.push(format!(
                "wall 7 Landlock: ABI {}; handles fs {}; net {}; scoped {}",
                ll.abi,
                crate::landlock::fs_names(ll.handled_fs).join(","),
                crate::landlock::net_names(ll.handled_net).join(","),
                crate::landlock::scope_names(ll.scoped).join(",")
            ));
            for r in &ll.paths {
                out.push(format!(
                    "  {} beneath {}",
                    crate::landlock::fs_names(r.access).join(","),
                    r.path.display()
                ));
            }
            for r in &ll.ports {
                out.push(format!(
                    "  {} on TCP port {}",
                    crate::landlock::net_names(r.access).join(","),
                    r.port
                ));
            }
        }
    }
    out.push(format!(
        "exec: {} in {}",
        Path::new(&plan.program).display(),
        plan.workdir.display()
    ));
    out
}

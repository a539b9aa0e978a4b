//! No leak: hundreds of runs through the library, ending normally, with an
//! error, or killed at a limit, leave no cgroup, mount, zombie or file
//! descriptor behind. A test binary of its own, so that no other
//! test's processes or descriptors come and go while it counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use ninewall::host::Host;
use ninewall::plan::{Request, SetupPlan};
use ninewall::sandbox::{End, Limit};
use ninewall::{Policy, Profile};

use support::profile;

/// The host mount table's lines that could be ninewall's: the only mount
/// ninewall makes in the host's namespace is the shared empty network
/// namespace (/run/ninewall/net-*, kept on purpose); a sandbox's are in its
/// own namespace.
/// Compared alone, so that a mount anything else on the host makes
/// meanwhile is no failure of ours.
fn our_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        // The shared empty network namespace is made once and kept: not a leak.
        .filter(|l| l.contains("ninewall") && !l.contains("/run/ninewall/net-"))
        .map(str::to_string)
        .collect()
}

fn own_cgroup_children() -> Vec<String> {
    let mut out = Vec::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let dir = if ctl.is_empty() {
                format!("{base}{path}")
            } else {
                format!("{base}/{}{path}", ctl.split(',').next().unwrap_or(""))
            };
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&format!("ninewall-{}-", std::process::id())) {
                        out.push(format!("{dir}/{name}"));
                    }
                }
            }
        }
    }
    out
}

fn zombie_children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            let f: Vec<&str> = after.split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
        })
        .count()
}

#[test]
fn two_hundred_runs_leave_no_cgroup_mount_process_or_descriptor_behind() {
    let policy = Policy::from_profile(&Profile::load(&profile("reason")).unwrap()).unwrap();
    let plan = |code: &str| {
        let request = Request {
            args: vec!["-c".into(), code.into()],
            workspace_dir: None,
            ..Request::default()
        };
        SetupPlan::build(&policy, &request, &Host::probe()).unwrap()
    };
    let normal = plan("pass");
    let failing = plan("raise SystemExit(7)");
    let fds_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let mounts_before = our_mounts();
    for i in 0..200 {
        let p = if i % 2 == 0 { &normal } else { &failing };
        let outcome = ninewall::sandbox::run(p, None).unwrap();
        let expected = if i % 2 == 0 { End::Exited(0) } else { End::Exited(7) };
        assert_eq!(outcome.end, expected, "run {i}");
    }
    // Runs that end by a limit: the supervisor kills them, or the kernel does.
    let mut timeout = plan("import time; time.sleep(60)");
    timeout.limits.wall_seconds = 1;
    let mut oom = plan("x = []\nwhile True: x.append(bytearray(4 << 20))");
    oom.limits.memory = 32 << 20;
    let mut loud = plan("import os\nwhile True: os.write(2, b'x' * 4096)");
    loud.limits.output = 256;
    for (p, limit) in [(&timeout, Limit::Timeout), (&oom, Limit::Oom), (&loud, Limit::Output)] {
        for _ in 0..2 {
            let outcome = ninewall::sandbox::run(p, None).unwrap();
            if limit != Limit::Oom || outcome.resources.starts_with("cgroup") {
                assert_eq!(outcome.limit, Some(limit), "{outcome:?}");
            }
        }
    }
    let left = own_cgroup_children();
    assert!(
        left.is_empty(),
        "{} cgroups left behind, e.g. {:?}",
        left.len(),
        left.first()
    );
    assert_eq!(zombie_children(), 0);
    assert_eq!(
        std::fs::read_dir("/proc/self/fd").unwrap().count(),
        fds_before,
        "descriptors leaked"
    );
    assert_eq!(our_mounts(), mounts_before, "mounts left behind");
}

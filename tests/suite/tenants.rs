//! Wall 3 between tenants: each execution run as root is a host user of its
//! own, owns its user namespace, frees its identity only once it is gone,
//! and gets a workspace that stays its owner's.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Prints the sandbox's host uid (from its own uid map), then sleeps.
const SLEEPER: &str =
    "import sys, time\nprint(open('/proc/self/uid_map').read().split()[1], flush=True)\ntime.sleep(30)";

/// A root `ninewall run` of the reason profile running [`SLEEPER`]; its
/// host uid once it has printed it.
fn start_sleeper() -> (Child, u32) {
    let (child, line) = spawn_until_line(
        ninewall(Who::Root)
            .args(["run", "--profile"])
            .arg(profile("reason"))
            .args(["--", "-c", SLEEPER])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    let uid = line.parse().unwrap_or_else(|_| panic!("no host uid: {line:?}"));
    (child, uid)
}

/// Host pids of the processes whose real uid is `uid`, with their state.
fn pids_of_uid(uid: u32) -> Vec<(i32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            };
            if field("Uid:")?.parse::<u32>().ok()? != uid {
                return None;
            }
            Some((pid, field("State:")?.chars().next()?))
        })
        .collect()
}

/// The processes of `uid` that can still run code: not zombies (a dead
/// process whose parent, here a killed supervisor, is gone waits for the
/// host's pid 1 to reap it; it runs and holds nothing) and not exiting.
/// A process that has begun to exit (`PF_EXITING`, set before it closes
/// its descriptors) never returns to user space; the sandbox's outer child,
/// which runs as the execution's uid and holds the identity's lock, closes
/// it and then tears down its namespaces before it is a zombie (the lock
/// file names it, and the id is not taken again until it is one: the unit
/// test `an_id_is_not_taken_while_its_last_holder_exists`).
fn live_pids_of_uid(uid: u32) -> Vec<i32> {
    const PF_EXITING: u64 = 0x4;
    pids_of_uid(uid)
        .into_iter()
        .filter(|&(_, state)| state != 'Z')
        .filter(|&(pid, _)| {
            // Field 9 of stat, the task's flags; after the ")" of the name it
            // is the 7th. Unreadable: the process is gone.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let flags = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok());
                flags.is_some_and(|f| f & PF_EXITING == 0)
            })
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// `kill -0 pid` from a host process running as `uid`: whether it may signal.
fn may_signal_as(uid: u32, pid: i32) -> bool {
    std::process::Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .args(["kill", "-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Whether the identity lock of `uid` is free (taken and released at once).
fn identity_free(uid: u32) -> bool {
    let path = Path::new("/run/ninewall/ids").join(uid.to_string());
    let Ok(file) = std::fs::File::open(&path) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The uid that owns the user namespace of `pid` (`NS_GET_OWNER_UID`).
fn userns_owner(pid: i32) -> u32 {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
    let mut uid: libc::uid_t = u32::MAX;
    // SAFETY: NS_GET_OWNER_UID (_IO(0xb7, 0x4)) writes one uid_t.
    let r = unsafe { libc::ioctl(ns.as_raw_fd(), 0xb704, &raw mut uid) };
    assert_eq!(r, 0, "NS_GET_OWNER_UID");
    uid
}

fn root_only() -> bool {
    identities().contains(&Who::Root)
}

#[test]
fn executions_at_once_are_host_users_of_their_own_that_no_other_sandbox_or_nobody_can_signal() {
    if !root_only() {
        return;
    }
    let (mut a, uid_a) = start_sleeper();
    let (mut b, uid_b) = start_sleeper();
    assert_ne!(uid_a, uid_b, "two executions share a host uid");
    for uid in [uid_a, uid_b] {
        assert!(
            Who::Root.is_sandbox_host_id(uid, uid),
            "{uid} is not from the identity range"
        );
        assert!(!identity_free(uid), "{uid} is free while its execution runs");
    }
    let in_a = live_pids_of_uid(uid_a);
    let in_b = live_pids_of_uid(uid_b);
    assert!(!in_a.is_empty() && !in_b.is_empty(), "{in_a:?} {in_b:?}");
    for &pid in &in_b {
        // The user namespace is the execution's own: its per-user counts are its.
        assert_eq!(userns_owner(pid), uid_b, "pid {pid}");
        assert!(!may_signal_as(uid_a, pid), "sandbox A's uid may signal B's pid {pid}");
        assert!(!may_signal_as(65534, pid), "nobody may signal B's pid {pid}");
    }
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        child.wait().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(identity_free(uid_a) && identity_free(uid_b)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        identity_free(uid_a) && identity_free(uid_b),
        "an identity outlived its execution"
    );
    assert!(live_pids_of_uid(uid_a).is_empty() && live_pids_of_uid(uid_b).is_empty());
}

#[test]
fn an_identity_is_free_again_only_once_its_sandbox_is_gone_even_after_sigkill() {
    if !root_only() {
        return;
    }
    let (mut run, uid) = start_sleeper();
    assert!(!live_pids_of_uid(uid).is_empty());
    // SIGKILL: the supervisor removes nothing; the sandbox dies with it, and
    // the identity is free only once no process of it is left.
    run.kill().unwrap();
    run.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let free = identity_free(uid);
        let left = live_pids_of_uid(uid);
        assert!(!free || left.is_empty(), "identity {uid} free while {left:?} run as it");
        if free || Instant::now() > deadline {
            assert!(free, "identity {uid} still taken: {left:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_private_workspace_of_another_user_works_and_what_the_sandbox_makes_there_is_theirs() {
    let Some(Who::User { uid, gid }) = identities().into_iter().find(|w| *w != Who::Root) else {
        return;
    };
    if !root_only() {
        return;
    }
    let dir = scratch_dir("private-ws");
    std::fs::write(dir.join("input.txt"), "the owner's data").unwrap();
    for p in [dir.clone(), dir.join("input.txt")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.join("input.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(
        Who::Root,
        &profile("document_generation"),
        &["--workspace", dir.to_str().unwrap()],
        &[
            "-c",
            "import os; d = open('/work/input.txt').read(); os.mkdir('/work/out'); open('/work/out/report.txt', 'w').write(d.upper()); print(os.stat('/work').st_uid)",
        ],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "1000", "inside, the workspace is the sandbox's own");
    let report = dir.join("out/report.txt");
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "THE OWNER'S DATA");
    for made in [dir.join("out"), report] {
        let meta = std::fs::metadata(&made).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{made:?} on the host");
        assert_eq!(meta.mode() & 0o6000, 0);
    }
}

#[test]
fn a_workspace_path_through_a_symlink_is_refused_not_followed() {
    if !root_only() {
        return;
    }
    let real = scratch_dir("real-ws");
    let link = real.with_file_name(format!("link-ws-{}", unique()));
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let r = run(
        Who::Root,
        &profile("document_generation"),
        &["--workspace", link.to_str().unwrap()],
        &["-c", "open('/work/ran', 'w')"],
        None,
    );
    r.assert_code(2);
    assert!(r.stderr.contains("is a symlink; name the real path"), "{r:#?}");
    assert!(!real.join("ran").exists());
}

/// The test helper under a profile that allows inotify, with `limits`.
fn inotify_profile(name: &str, limits: &str) -> Option<std::path::PathBuf> {
    let bin = super::enforce_seccomp::helper()?;
    Some(write_profile(
        name,
        &format!(
            "[mbu]\nname = {name:?}\n[exec]\nexecutables = [{b:?}]\ncommand = [{b:?}]\n\
             [syscalls]\nallow = [\"@default\", \"inotify_init1\", \"inotify_add_watch\"]\non_denied = \"errno\"\n\
             [limits]\n{limits}\n",
            b = bin.to_str().unwrap()
        ),
    ))
}

/// Starts `inotify_instances N` (or `_watches`) in a sandbox; returns it,
/// holding what it got until its stdin closes, and its report line.
fn start_inotify_holder(who: Who, profile: &Path, what: &str, n: u32) -> (Child, String) {
    spawn_until_line(
        ninewall(who)
            .args(["run", "--profile"])
            .arg(profile)
            .args(["--", what, &n.to_string()])
            .stdin(Stdio::piped())
            .stderr(Stdio::null()),
    )
}

fn inotify_count(who: Who, profile: &Path, what: &str, n: u32) -> String {
    let (mut child, line) = start_inotify_holder(who, profile, what, n);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "{what}: {line}");
    line
}

/// A sandbox's inotify instances and watches are bounded by its own user
/// namespace's limits, set from `[limits]` (and their defaults).
#[test]
fn a_sandboxes_inotify_instances_and_watches_are_its_namespaces_limits() {
    let Some(set) = inotify_profile("ino-set", "inotify_instances = 5\ninotify_watches = 7") else {
        return;
    };
    let Some(default) = inotify_profile("ino-default", "") else {
        return;
    };
    for who in identities() {
        assert_eq!(
            inotify_count(who, &set, "inotify_instances", 50),
            "inotify_instances 5 EMFILE",
            "{who:?}"
        );
        assert_eq!(
            inotify_count(who, &set, "inotify_watches", 50),
            "inotify_watches 7 ENOSPC",
            "{who:?}"
        );
        assert_eq!(
            inotify_count(who, &default, "inotify_instances", 50),
            "inotify_instances 16 EMFILE",
            "{who:?}: the default"
        );
    }
}

fn host_inotify_works() -> bool {
    // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` was just opened here.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

/// What a root-run sandbox holds of the kernel's per-user inotify count is
/// its own identity's, not host root's: a sandbox that takes every instance
/// the host allows one user leaves root and another sandbox theirs.
#[test]
fn a_sandbox_holding_every_inotify_instance_it_can_leaves_root_and_other_sandboxes_theirs() {
    if !root_only() {
        return;
    }
    let Some(greedy) = inotify_profile("ino-greedy", "inotify_instances = 65536") else {
        return;
    };
    let Some(modest) = inotify_profile("ino-modest", "") else {
        return;
    };
    assert!(
        host_inotify_works(),
        "host root has no inotify instance to spare before the test"
    );
    let per_user: u32 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (mut holder, line) = start_inotify_holder(Who::Root, &greedy, "inotify_instances", per_user + 10);
    assert_eq!(
        line,
        format!("inotify_instances {per_user} EMFILE"),
        "the sandbox's identity has the host's per-user count to itself"
    );
    let root_can = host_inotify_works();
    let other = inotify_count(Who::Root, &modest, "inotify_instances", 3);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(
        root_can,
        "host root could not open an inotify instance while a sandbox held its count"
    );
    assert_eq!(other, "inotify_instances 3 all", "another sandbox got its own");
}

/// 200 executions from a range of two identities, one supervisor in ten
/// killed with SIGKILL while its sandbox runs: every execution gets an
/// identity (a leaked one would leave one id, a second leak none), and at the
/// end both are free and no process runs as either.
#[test]
fn two_hundred_executions_with_supervisors_killed_leak_no_identity() {
    if !root_only() {
        return;
    }
    let Some(p) = inotify_profile("ids-leak", "") else {
        return;
    };
    let first = 0x7100_0000 + (std::process::id() % 100_000) * 2;
    let range = format!("{first}-{}", first + 1);
    let start = |args: &[&str], stdin: Stdio| {
        ninewall(Who::Root)
            .env("NINEWALL_ID_RANGE", &range)
            .args(["run", "--profile"])
            .arg(&p)
            .arg("--")
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for i in 0..200 {
        if i % 10 == 9 {
            let mut held = start(&["inotify_instances", "1"], Stdio::piped());
            let mut line = String::new();
            BufReader::new(held.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "inotify_instances 1 all", "run {i}");
            held.kill().unwrap();
            held.wait().unwrap();
            continue;
        }
        let out = start(&["getpid"], Stdio::null()).wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "getpid ok",
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for uid in [first, first + 1] {
        // An id never handed out has no lock file yet: free all the same.
        let free = || !Path::new("/run/ninewall/ids").join(uid.to_string()).exists() || identity_free(uid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !free() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(free(), "identity {uid} still taken after all ran");
        assert_eq!(live_pids_of_uid(uid), Vec::<i32>::new(), "processes of {uid} left");
    }
}

//! Wall 9 with real hogs: each limit ends the run, the outcome names it, and
//! nothing of the sandbox is left behind.

use crate::support::*;

const LIMITS: &str = r#"
extends = "base/python"
[mbu]
name = "hog"
[exec]
command = ["/usr/bin/python3.11", "-I", "-S", "-B"]
[limits]
memory = "64M"
pids = 8
cpu_seconds = 1
wall_seconds = 3
file_size = "1M"
output = "1K"
"#;

fn hog_profile() -> std::path::PathBuf {
    write_profile("hog", LIMITS)
}

/// Whether this identity's runs get a cgroup (from -v). As root in CI they
/// must: a missing cgroup there is a missing wall.
fn has_cgroup(who: Who) -> bool {
    let r = run(who, &hog_profile(), &["-v"], &["-c", "pass"], None);
    r.assert_code(0);
    let cg = r.stderr.contains("wall 9 resources: cgroup v");
    assert!(cg || r.stderr.contains("wall 9 resources: rlimits only"), "{r:#?}");
    assert!(
        !(who == Who::Root && !cg && in_ci()),
        "CI runs as root on a host with cgroups, and no cgroup was made: {}",
        r.stderr
    );
    cg
}

#[test]
fn a_memory_bomb_ends_at_the_memory_limit() {
    for who in identities() {
        let cg = has_cgroup(who);
        let r = run(
            who,
            &hog_profile(),
            &["-v"],
            &["-c", "x = []\nwhile True: x.append(bytearray(4 << 20))"],
            None,
        );
        if cg {
            r.assert_code(128 + 9);
            assert!(
                r.stderr.contains("ended by limit: oom (limits.memory = 64M)"),
                "{who:?}: {r:#?}"
            );
            let peak = r.stderr.lines().find(|l| l.contains("usage:")).unwrap_or_default();
            assert!(
                peak.contains("peak memory 64M") || peak.contains("peak memory 63"),
                "{who:?}: {peak}"
            );
        } else {
            // Without a cgroup, RLIMIT_DATA refuses the allocation instead.
            r.assert_code(1);
            assert!(r.stderr.contains("MemoryError"), "{who:?}: {r:#?}");
        }
    }
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit_and_the_run_still_ends() {
    for who in identities() {
        let cg = has_cgroup(who);
        let r = python(
            who,
            &hog_profile(),
            "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, e.errno); raise SystemExit(3)",
        );
        r.assert_code(3);
        // 8 processes of the MBU: itself and 7 children; the 8th fork fails.
        assert_eq!(r.stdout.trim(), "7 11", "{who:?}: {r:#?}");
        if cg {
            assert!(
                r.stderr.contains("ended by limit: pids (limits.pids = 8)"),
                "{who:?}: {r:#?}"
            );
        }
    }
}

#[test]
fn a_cpu_spinner_ends_at_cpu_seconds() {
    for who in identities() {
        let r = python(who, &hog_profile(), "while True: pass");
        // RLIMIT_CPU's SIGXCPU, or the supervisor's kill from the cgroup's count.
        assert!(r.code == 128 + 24 || r.code == 128 + 9, "{who:?}: {r:#?}");
        assert!(
            r.stderr.contains("ended by limit: cpu (limits.cpu_seconds = 1)"),
            "{who:?}: {r:#?}"
        );
    }
}

#[test]
fn a_sleeper_and_its_daemon_end_at_wall_seconds_with_124() {
    for who in identities() {
        let marker = format!("ninewall-sleeper-{}-{}", std::process::id(), unique());
        let r = run(
            who,
            &hog_profile(),
            &[],
            &[
                "-c",
                "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv('/usr/bin/python3.11', ['python3.11', '-c', 'import time; time.sleep(60)', sys.argv[1]])\n    os._exit(0)\ntime.sleep(60)",
                &marker,
            ],
            None,
        );
        r.assert_code(124);
        assert!(
            r.stderr.contains("ended by limit: timeout (limits.wall_seconds = 3)"),
            "{who:?}: {r:#?}"
        );
        assert_eq!(
            host_processes_with(&marker),
            Vec::<i32>::new(),
            "{who:?}: the daemon outlived the timeout"
        );
    }
}

#[test]
fn a_huge_write_ends_at_file_size_and_a_huge_print_at_output() {
    for who in identities() {
        let r = python(
            who,
            &hog_profile(),
            "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_DFL)\nopen('/work/big', 'wb').write(b'x' * (2 << 20))",
        );
        r.assert_code(128 + 25);
        assert!(
            r.stderr.contains("ended by limit: file_size (limits.file_size = 1M)"),
            "{who:?}: {r:#?}"
        );
        // Python ignores SIGXFSZ by default: then the write fails with EFBIG.
        let r = python(who, &hog_profile(), "open('/work/big', 'wb').write(b'x' * (2 << 20))");
        r.assert_code(1);
        assert!(r.stderr.contains("File too large"), "{who:?}: {r:#?}");

        let r = python(
            who,
            &hog_profile(),
            "import sys\nsys.stdout.write('x' * 100000)\nsys.stdout.flush()\nprint('never')",
        );
        r.assert_code(128 + 9);
        assert_eq!(r.stdout, "x".repeat(1024), "{who:?}: exactly the limit passes");
        assert!(
            r.stderr.contains("ended by limit: output (limits.output = 1K)"),
            "{who:?}: {r:#?}"
        );
        assert!(r.stderr.contains("output cut after 1024 bytes"), "{who:?}: {r:#?}");
    }
}

#[test]
fn a_profile_without_limits_is_not_unlimited() {
    let r = check_profile(&profile("reason"), false);
    r.assert_code(0);
    assert!(
        r.stdout.contains(
            "memory 256M, pids 64, cpu 30 s, wall 60 s, file size 64M, open files 256, output 8M, inotify 16 instances / 4096 watches; cgroups best-effort"
        ),
        "{}",
        r.stdout
    );
    for who in identities() {
        let r = python(
            who,
            &profile("reason"),
            "import resource as r\nprint(*[r.getrlimit(x)[1] for x in (r.RLIMIT_CPU, r.RLIMIT_FSIZE, r.RLIMIT_NOFILE, r.RLIMIT_CORE, r.RLIMIT_DATA)])",
        );
        r.assert_code(0);
        // With a cgroup, which counts what is really used, RLIMIT_DATA is a
        // backstop at twice the memory limit; without one, it is the limit.
        let data: u64 = if has_cgroup(who) { 2 * (256 << 20) } else { 256 << 20 };
        assert_eq!(r.stdout.trim(), format!("31 {} 256 0 {data}", 64 << 20), "{who:?}");
    }
}

#[test]
fn strict_cgroups_refuse_to_run_on_rlimits_alone() {
    let p = write_profile("strict", &format!("{LIMITS}cgroups = \"strict\"\n"));
    for who in identities() {
        let dir = scratch_dir("strict");
        std::os::unix::fs::chown(&dir, Some(who.workspace_owner().0), Some(who.workspace_owner().1)).unwrap();
        let r = run(
            who,
            &p,
            &["--workspace", dir.to_str().unwrap()],
            &["-c", "open('/work/ran', 'w')"],
            None,
        );
        if has_cgroup(who) {
            r.assert_code(0);
        } else {
            r.assert_code(125);
            assert!(
                r.stderr
                    .contains("wall 9 (resources): the profile requires cgroups (limits.cgroups = \"strict\")"),
                "{who:?}: {r:#?}"
            );
            assert!(!dir.join("ran").exists());
        }
    }
}

#[test]
fn a_runs_cgroup_is_gone_when_it_returns() {
    // Removed by the supervisor before it exits (on a thread of its own,
    // while the end record is synced): not left for a later run's sweep.
    for who in identities() {
        if !has_cgroup(who) {
            continue;
        }
        let cgroup = cgroup_of_a_run(who);
        assert!(!cgroup.exists(), "{who:?}: {} is still there", cgroup.display());
    }
}

/// One of the cgroup directories of a finished run (as `-v` names it).
fn cgroup_of_a_run(who: Who) -> std::path::PathBuf {
    let r = run(who, &hog_profile(), &["-v"], &["-c", "pass"], None);
    r.assert_code(0);
    r.stderr
        .lines()
        .find_map(|l| l.split(" e.g. ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .map_or_else(|| panic!("no cgroup path in -v: {r:#?}"), std::path::PathBuf::from)
}

#[test]
fn cgroups_left_by_killed_supervisors_are_removed_by_a_later_run() {
    // A supervisor killed with SIGKILL cannot remove its cgroup. A later run
    // removes such leftovers beside its own: empty, made over a minute ago,
    // by a pid that is gone. Not one made by a live pid, not a recent one.
    // As root only: the test makes cgroups of its own.
    let who = Who::Root;
    if !identities().contains(&who) || !has_cgroup(who) {
        return;
    }
    let parent = cgroup_of_a_run(who).parent().unwrap().to_path_buf();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let old = now - 120_000_000_000;
    // A pid that is gone: a child that has been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let abandoned = parent.join(format!("ninewall-{dead}-0-{old}"));
    let live = parent.join(format!("ninewall-{}-0-{old}", std::process::id()));
    let recent = parent.join(format!("ninewall-{dead}-1-{now}"));
    for d in [&abandoned, &live, &recent] {
        std::fs::create_dir(d).unwrap();
    }
    run(who, &hog_profile(), &[], &["-c", "pass"], None).assert_code(0);
    let exists = [abandoned.exists(), live.exists(), recent.exists()];
    for d in [&live, &recent] {
        let _ = std::fs::remove_dir(d);
    }
    assert_eq!(exists, [false, true, true], "abandoned, live, recent");
}

/// A reader that never reads holds up only itself: the MBU blocks on its
/// output, the wall limit still ends it, and the end is on disk while the
/// reader has still read nothing; what was left is passed on once it reads.
#[test]
fn a_reader_that_never_reads_stops_neither_the_wall_limit_nor_the_end_record() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};
    let p = write_profile(
        "stalled",
        "extends = \"base/python\"\n[mbu]\nname = \"stalled\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\", \"-S\", \"-B\"]\n\
         [limits]\nwall_seconds = 2\noutput = \"64M\"\n",
    );
    for who in identities() {
        let dir = scratch_dir("stalled");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let log = dir.join("audit.jsonl");
        let started = Instant::now();
        let child = ninewall(who)
            .args(["run", "--profile"])
            .arg(&p)
            .arg("--audit-log")
            .arg(&log)
            .args(["--", "-c", "while True: print('x' * 4096)"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let ended = loop {
            // Whole lines only: the end may be half written when read.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let whole = text.rsplit_once('\n').map_or("", |(done, _)| done);
            if let Some(line) = whole.lines().find(|l| l.contains("\"kind\":\"exec.end\"")) {
                break line.to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{who:?}: no end recorded while the reader does not read"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(ended.contains("\"reason\":\"timeout\""), "{who:?}: {ended}");
        let r = Run::from_output(child.wait_with_output().unwrap());
        r.assert_code(124);
        assert!(r.stdout.len() > 64 * 1024, "{who:?}: what was held back is passed on");
    }
}

/// A btrfs filesystem of the test's own (a loop-mounted image, quotas on),
/// unmounted when dropped.
struct Btrfs {
    mount: std::path::PathBuf,
}

impl Btrfs {
    fn make() -> Option<Btrfs> {
        let dir = exec_dir().join(format!("btrfs-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("image");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::File::create(&image).unwrap().set_len(300 << 20).unwrap();
        let ok = |cmd: &mut std::process::Command| cmd.output().is_ok_and(|o| o.status.success());
        if !ok(std::process::Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image)) {
            return None;
        }
        assert!(
            ok(std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount)),
            "mounting a btrfs image (a loop device) failed"
        );
        let fs = Btrfs { mount };
        assert!(ok(std::process::Command::new("btrfs")
            .args(["quota", "enable"])
            .arg(&fs.mount)));
        Some(fs)
    }

    /// A subvolume, world-traversable, owned by root.
    fn subvolume(&self, name: &str) -> std::path::PathBuf {
        let p = self.mount.join(name);
        let out = std::process::Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        p
    }

    /// `btrfs qgroup show` for the subvolume: (referenced, max_rfer as shown).
    fn qgroup(&self, subvolume: &std::path::Path) -> String {
        let _ = std::process::Command::new("sync").status();
        let out = std::process::Command::new("btrfs")
            .args(["qgroup", "show", "-re", "--raw"])
            .arg(&self.mount)
            .output()
            .unwrap();
        let name = subvolume.file_name().unwrap().to_str().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
    }
}

const WRITE_4M: &str = "import errno\nn = 0\ntry:\n    with open('/work/big', 'wb') as f:\n        for i in range(64):\n            f.write(b'x' * 65536)\n            f.flush()\n            n += 65536\nexcept OSError as e:\n    print(errno.errorcode[e.errno], n)\nelse:\n    print('wrote', n)";

fn last_end(log: &std::path::Path) -> serde_json::Value {
    log_records(log)
        .into_iter()
        .rev()
        .find(|v| v["kind"] == "exec.end")
        .unwrap()
}

#[test]
fn a_host_workspace_is_bounded_in_bytes_by_the_kernel_or_nothing_runs() {
    let p = write_profile(
        "disk-bounded",
        "extends = \"base/python\"\n[mbu]\nname = \"disk-bounded\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\", \"-S\", \"-B\"]\n[limits]\ndisk = \"1M\"\n",
    );
    let dir = scratch_dir("disk-log");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let log = dir.join("audit.jsonl");
    let log_s = log.to_str().unwrap();
    // Anywhere but a btrfs subvolume with quotas, and unprivileged, nothing
    // runs and the message names the filesystem.
    for who in identities() {
        let ws = exec_dir().join(format!("disk-ext-{}", unique()));
        std::fs::create_dir_all(&ws).unwrap();
        let (uid, gid) = who.workspace_owner();
        std::os::unix::fs::chown(&ws, Some(uid), Some(gid)).unwrap();
        let r = run(
            who,
            &p,
            &["--workspace", ws.to_str().unwrap()],
            &["-c", "print('ran')"],
            None,
        );
        r.assert_code(125);
        assert!(!r.stdout.contains("ran"), "{r:#?}");
        assert!(r.stderr.contains("limits.disk cannot be enforced"), "{r:#?}");
        let why = if who == Who::Root {
            "not btrfs"
        } else {
            "only root can set"
        };
        assert!(r.stderr.contains(why), "{who:?}: {r:#?}");
    }
    if !identities().contains(&Who::Root) {
        // Only root makes the loop-mounted btrfs below; the root half of
        // the suite runs it.
        return;
    }
    let Some(fs) = Btrfs::make() else {
        assert!(!in_ci(), "mkfs.btrfs is missing (.ci/run installs btrfs-progs)");
        skip("mkfs.btrfs is missing");
        return;
    };
    let ws = fs.subvolume("ws");
    let before = fs.qgroup(&ws);
    assert!(
        before.ends_with("none none ws") || before.contains(" none "),
        "{before}"
    );
    // 4 MiB written, 1 MiB allowed: the kernel refuses the rest, the run
    // is recorded as ended by limits.disk, and the limit that was there
    // (none) is back.
    let r = run(
        Who::Root,
        &p,
        &["--workspace", ws.to_str().unwrap(), "--audit-log", log_s],
        &["-c", WRITE_4M],
        None,
    );
    r.assert_code(0);
    assert!(r.stdout.starts_with("EDQUOT "), "{r:#?}");
    let written = std::fs::metadata(ws.join("big")).unwrap().len();
    assert!(written <= 1 << 20, "{written} bytes landed on the host");
    assert!(r.stderr.contains("limits.disk = 1M"), "{r:#?}");
    let end = last_end(&log);
    assert_eq!(end["reason"], "disk", "{end}");
    assert_eq!(end["disk"]["reached"], true, "{end}");
    assert!(end["disk"]["added"].as_u64().unwrap() <= 1 << 20, "{end}");
    let after = fs.qgroup(&ws);
    let max_rfer = after.split_whitespace().nth(3).unwrap_or("");
    assert_eq!(max_rfer, "none", "the workspace's limit is not back: {after}");
    // The bound is on what a run adds: a second run adds 100 KiB to the
    // 1 MiB already there, within its own limit.
    let r = run(
        Who::Root,
        &p,
        &["--workspace", ws.to_str().unwrap(), "--audit-log", log_s],
        &["-c", "open('/work/more', 'wb').write(b'y' * 102400)"],
        None,
    );
    r.assert_code(0);
    let end = last_end(&log);
    assert_eq!(end["reason"], "exited", "{end}");
    assert_eq!(end["disk"]["reached"], false, "{end}");
    // One execution at a time per bounded workspace: a second, while the
    // first runs, is refused; the first's limit is put back all the same.
    let (mut first, up) = spawn_until_line(
        ninewall(Who::Root)
            .args(["run", "--profile"])
            .arg(&p)
            .args([
                "--workspace",
                ws.to_str().unwrap(),
                "--",
                "-c",
                "import time\nprint('up', flush=True)\ntime.sleep(3)",
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    assert_eq!(up, "up");
    let second = run(
        Who::Root,
        &p,
        &["--workspace", ws.to_str().unwrap()],
        &["-c", "print('ran')"],
        None,
    );
    second.assert_code(125);
    assert!(
        second
            .stderr
            .contains("another execution with limits.disk is running in this workspace"),
        "{second:#?}"
    );
    assert!(first.wait().unwrap().success());
    let after = fs.qgroup(&ws);
    assert_eq!(after.split_whitespace().nth(3), Some("none"), "{after}");
    // A directory inside the subvolume is not its root: refused.
    let inner = ws.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    let r = run(
        Who::Root,
        &p,
        &["--workspace", inner.to_str().unwrap()],
        &["-c", "print('ran')"],
        None,
    );
    r.assert_code(125);
    assert!(r.stderr.contains("not a subvolume's root"), "{r:#?}");
}

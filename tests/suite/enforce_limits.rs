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
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("\"kind\":\"exec.end\"")) {
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

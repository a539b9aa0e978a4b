//! The command line: exit codes of shared/DESIGN.md, and messages that name the
//! wall or the rule.

use std::os::unix::process::CommandExt;

use crate::support::*;

const NO_COMMAND: &str = r#"
extends = "base/python"
[mbu]
name = "pick-your-program"
"#;

const NO_LIBRARIES: &str = r#"
[mbu]
name = "no-libraries"
[exec]
executables = ["/usr/bin/python3.11"]
command = ["/usr/bin/python3.11", "-c", "print('ran')"]
"#;

#[test]
fn bad_command_lines_exit_2() {
    for args in [
        vec![],
        vec!["run"],
        vec!["run", "--profile"],
        vec!["frobnicate"],
        vec!["check"],
    ] {
        let r = Run::from_output(ninewall(Who::Root).args(&args).output().unwrap());
        r.assert_code(2);
        assert!(
            r.stderr.contains("Usage") || r.stderr.contains("error"),
            "{args:?}: {r:#?}"
        );
    }
}

#[test]
fn a_program_outside_the_executables_is_refused_with_126() {
    let p = write_profile("pick-your-program", NO_COMMAND);
    for who in identities() {
        let r = run(who, &p, &[], &["/bin/sh", "-c", "id"], None);
        r.assert_code(126);
        assert!(
            r.stderr.contains(
                "\"/bin/sh\" may not be executed under profile \"pick-your-program\"; allowed: /usr/bin/python3.11"
            ),
            "{r:#?}"
        );
        assert!(r.stdout.is_empty());
        // By file name, when only one executable has it.
        let ok = run(who, &p, &[], &["python3.11", "-c", "print('by name')"], None);
        ok.assert_code(0);
        assert_eq!(ok.stdout, "by name\n");
        let none = run(who, &p, &[], &[], None);
        none.assert_code(2);
        assert!(
            none.stderr.contains("has no exec.command: name the program after `--`"),
            "{none:#?}"
        );
    }
}

#[test]
fn a_program_whose_interpreter_is_not_visible_is_refused_before_it_runs() {
    let p = write_profile("no-libraries", NO_LIBRARIES);
    for who in identities() {
        let r = run(who, &p, &[], &[], None);
        r.assert_code(2);
        assert!(
            r.stderr.contains("exec.executables[0] = \"/usr/bin/python3.11\": needs the ELF interpreter \"/lib64/ld-linux-x86-64.so.2\"")
                && r.stderr.contains("which is not visible: add it or its directory to fs.libraries"),
            "{r:#?}"
        );
        assert!(!r.stdout.contains("ran"));
    }
}

#[test]
fn a_wall_that_cannot_be_built_stops_the_run_with_125_naming_it() {
    let Some(who) = identities().into_iter().find(|w| *w != Who::Root) else {
        return;
    };
    let dir = scratch_dir("nproc");
    let marker = dir.join("ran");
    std::os::unix::fs::chown(&dir, Some(who.workspace_owner().0), None).unwrap();
    let mut cmd = ninewall(who);
    cmd.args(["run", "--profile"])
        .arg(profile("document_generation"))
        .args([
            "--workspace",
            dir.to_str().unwrap(),
            "--",
            "-c",
            "open('/work/ran', 'w')",
        ]);
    // SAFETY: setrlimit in the forked child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1,
                rlim_max: 1,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &raw const lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = Run::from_output(cmd.output().unwrap());
    r.assert_code(125);
    assert!(
        r.stderr.contains("wall 5 (process isolation)") && r.stderr.contains("Resource temporarily unavailable"),
        "{r:#?}"
    );
    assert!(!marker.exists(), "the MBU ran although a wall failed");
}

#[test]
fn verbose_lists_the_walls_it_builds() {
    for who in identities() {
        let r = run(who, &profile("reason"), &["-v"], &["-c", "pass"], None);
        r.assert_code(0);
        let credentials = r
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("ninewall: wall 3 credentials: user namespace, uid 1000 gid 1000 inside = "))
            .unwrap_or_else(|| panic!("no wall 3 line in {}", r.stderr));
        let ids: Vec<u32> = credentials.split(' ').take(2).map(|n| n.parse().unwrap()).collect();
        assert!(who.is_sandbox_host_id(ids[0], ids[1]), "{who:?}: {credentials}");
        if who == Who::Root {
            assert!(credentials.contains("(this execution's own, which owns the namespace)"));
        }
        let lines: [String; 4] = [
            "wall 4 filesystem view: mount namespace, new tmpfs root, pivot_root, old root detached".into(),
            "bind /usr/lib/python3.11 at /usr/lib/python3.11 (read-only, noexec)".into(),
            "wall 5 process isolation: pid, ipc, uts (hostname \"reason\"), cgroup, time namespaces".into(),
            "wall 6 network: network namespace, no interface up".into(),
        ];
        for line in lines {
            assert!(r.stderr.contains(&line), "missing {line:?} in {}", r.stderr);
        }
    }
}

#[test]
fn check_prints_the_resolved_policy_as_text_and_json() {
    let r = check_profile(&profile("reason"), false);
    r.assert_code(0);
    assert!(r.stdout.contains("mbu          reason"), "{}", r.stdout);
    assert!(r.stdout.contains("/lib64 -> usr/lib64"), "{}", r.stdout);
    let j = check_profile(&profile("reason"), true);
    j.assert_code(0);
    let v = j.json();
    assert_eq!(v["name"], "reason");
    assert_eq!(v["net"], "none");
    assert_eq!(v["workspace"]["size"], 32 << 20);
    assert_eq!(v["executables"], serde_json::json!(["/usr/bin/python3.11"]));
    assert_eq!(
        v["read"][1],
        serde_json::json!({"path": "/lib", "kind": {"type": "symlink", "target": "usr/lib"}})
    );
}

#[test]
fn probe_measures_what_a_spaced_launch_waits_for_its_cgroup() {
    for who in identities() {
        let r = Run::from_output(ninewall(who).args(["probe", "--json"]).output().unwrap());
        r.assert_code(0);
        let m = r.json()["cgroup_migration"].clone();
        match who {
            // Only a privileged supervisor makes cgroups: measured.
            Who::Root => assert!(m["ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{m}"),
            Who::User { .. } => {
                assert!(m["ms"].is_null(), "{m}");
                assert!(m["note"].as_str().unwrap_or("").starts_with("not measured: "), "{m}");
            }
        }
        let text = Run::from_output(ninewall(who).arg("probe").output().unwrap());
        text.assert_code(0);
        assert!(text.stdout.contains("\ncgroup move  "), "{}", text.stdout);
        assert!(!text.stdout.contains(" , "), "{}", text.stdout);
    }
}

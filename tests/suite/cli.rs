//! The command line: exit codes of shared/DESIGN.md, and messages that name the
//! wall or the rule.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

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
                && r.stderr.contains("which is not visible: add \"/usr/lib/x86_64-linux-gnu\" to fs.libraries"),
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
        let lines: [String; 3] = [
            "wall 4 filesystem view: mount namespace, new tmpfs root, pivot_root, old root detached".into(),
            "bind /usr/lib/python3.11 at /usr/lib/python3.11 (read-only, noexec)".into(),
            "wall 5 process isolation: pid, ipc, uts (hostname \"reason\"), cgroup, time namespaces".into(),
        ];
        for line in lines {
            assert!(r.stderr.contains(&line), "missing {line:?} in {}", r.stderr);
        }
        // One network story: a namespace of its own, or the shared empty one.
        let own = r.stderr.contains("wall 6 network: network namespace, no interface up");
        let shared = r
            .stderr
            .contains("wall 6 network: no network namespace of its own: the shared empty one")
            && r.stderr.contains("joined the shared empty network namespace");
        assert!(own != shared, "{}", r.stderr);
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

#[test]
fn a_profile_is_found_by_name_and_never_in_a_directory_others_can_write() {
    let who = identities()[0];
    let by_name = |args: &[&str]| {
        Run::from_output(
            ninewall(who)
                .env("NINEWALL_PROFILES", &stage().profiles)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let r = by_name(&["check", "reason"]);
    r.assert_code(0);
    assert!(r.stdout.contains("mbu          reason"), "{r:#?}");
    let r = by_name(&["run", "--profile", "reason", "--", "-c", "print(7)"]);
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "7");
    let r = Run::from_output(ninewall(who).args(["check", "no_such_profile"]).output().unwrap());
    r.assert_code(2);
    assert!(
        r.stderr.contains(
            "no profile named \"no_such_profile\": looked for no_such_profile.toml in /etc/ninewall/profiles, profiles"
        ),
        "{r:#?}"
    );
    // A profiles/ that another user could have made, in a shared current
    // directory, is passed over; made private, it is used.
    let shared = scratch_dir("shared-cwd");
    let dir = shared.join("profiles");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("planted.toml"),
        "[mbu]\nname = \"planted\"\n[exec]\ncommand = [\"/usr/bin/true\"]\nexecutables = [\"/usr/bin/true\"]\n[fs]\nread = [\"/lib\", \"/lib64\"]\nlibraries = [\"/usr/lib/x86_64-linux-gnu\", \"/usr/lib64\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(dir.join("planted.toml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = || {
        Run::from_output(
            ninewall(who)
                .current_dir(&shared)
                .args(["check", "planted"])
                .output()
                .unwrap(),
        )
    };
    let r = planted();
    r.assert_code(2);
    assert!(r.stderr.contains("no profile named \"planted\""), "{r:#?}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = planted();
    r.assert_code(0);
    assert!(r.stdout.contains("mbu          planted"), "{r:#?}");
}

#[test]
fn check_takes_several_profiles_and_says_every_problem_as_json_too() {
    let bad = write_profile(
        "check-bad",
        "[mbu]\nname = \"bad\"\n[exec]\ncommand = [\"/usr/bin/true\"]\nexecutables = [\"/usr/bin/true\"]\n[limits]\nmemory = \"1M\"\npids = 0\n",
    );
    let good = profile("reason");
    let r = check_profile(&bad, true);
    r.assert_code(2);
    let v = r.json();
    assert_eq!(v["ok"], false, "{v:#}");
    let problems = v["problems"].as_array().unwrap();
    let keys: Vec<&str> = problems.iter().filter_map(|p| p["key"].as_str()).collect();
    assert!(
        keys.contains(&"limits.memory") && keys.contains(&"limits.pids"),
        "{v:#}"
    );
    assert!(
        problems
            .iter()
            .all(|p| p["line"].as_u64().is_some() && p["message"].is_string()),
        "{v:#}"
    );
    let both = Run::from_output(
        ninewall(Who::Root)
            .args(["check", "--json"])
            .arg(&good)
            .arg(&bad)
            .output()
            .unwrap(),
    );
    both.assert_code(2);
    let a = both.json();
    assert_eq!(a[0]["ok"], true);
    assert_eq!(a[0]["policy"]["name"], "reason");
    assert_eq!(a[1]["ok"], false);
    let text = Run::from_output(ninewall(Who::Root).arg("check").arg(&good).arg(&bad).output().unwrap());
    text.assert_code(2);
    assert!(text.stdout.contains("mbu          reason"), "{text:#?}");
    assert!(
        text.stderr.contains("limits.memory = \"1M\": out of range"),
        "{text:#?}"
    );
}

#[test]
fn audit_show_of_a_file_that_is_no_log_says_so() {
    let dir = scratch_dir("not-a-log");
    let file = dir.join("notes.txt");
    std::fs::write(&file, "hello\nworld\n").unwrap();
    let r = Run::from_output(ninewall(Who::Root).args(["audit", "show"]).arg(&file).output().unwrap());
    r.assert_code(1);
    assert!(r.stderr.contains("is not a ninewall provenance log"), "{r:#?}");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let r = Run::from_output(
        ninewall(Who::Root)
            .args(["audit", "show"])
            .arg(&empty)
            .output()
            .unwrap(),
    );
    r.assert_code(1);
    assert!(r.stderr.contains("the log holds no execution"), "{r:#?}");
}

#[test]
fn why_names_the_wall_and_the_change_that_allows_it_and_the_change_works() {
    let who = identities()[0];
    let dir = scratch_dir("why");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let log = dir.join("audit.jsonl");
    let code = "import socket\ntry:\n    print(open('/etc/hostname').read() != '')\nexcept OSError as e:\n    print(type(e).__name__)\ntry:\n    socket.socket()\nexcept OSError as e:\n    print(e.errno)";
    let r = run(
        who,
        &profile("reason"),
        &["--audit-log", log.to_str().unwrap()],
        &["-c", code],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout, "FileNotFoundError\n1\n");
    let exec = exec_ids(&log).remove(0);
    let why = Run::from_output(ninewall(who).args(["why", &exec, "--log"]).arg(&log).output().unwrap());
    why.assert_code(0);
    assert!(
        why.stdout.contains(
            "wall 4 (filesystem view) x1: \"read /etc/hostname\"\n    allow with: fs.read += [\"/etc/hostname\"]"
        ),
        "{why:#?}"
    );
    assert!(
        why.stdout.contains("wall 8 (seccomp) x1: \"the syscall socket\"\n    allow with: syscalls.allow += [\"socket\"] (or a group that has it: @network-io)"),
        "{why:#?}"
    );
    let only = Run::from_output(
        ninewall(who)
            .args(["why", &exec, "--path", "/etc/hostname", "--json", "--log"])
            .arg(&log)
            .output()
            .unwrap(),
    );
    only.assert_code(0);
    let advice = only.json();
    assert_eq!(advice.as_array().map(Vec::len), Some(1), "{advice:#}");
    assert_eq!(advice[0]["fix"], "fs.read += [\"/etc/hostname\"]");
    // Against a named profile: would the profile with the fix still be
    // within it, as `diff` would say?
    let roomy = write_profile(
        "why-roomy",
        "extends = \"reason\"\n[mbu]\nname = \"why-roomy\"\n[fs]\nread = [\"/etc\"]\n[syscalls]\nallow = [\"socket\"]\n",
    );
    let against = |named: &std::path::Path| {
        let r = Run::from_output(
            ninewall(who)
                .args(["why", &exec, "--path", "/etc/hostname", "--json", "--against"])
                .arg(named)
                .arg("--log")
                .arg(&log)
                .output()
                .unwrap(),
        );
        r.assert_code(0);
        assert_schema("why", &r.json());
        r.json()[0]["against"].clone()
    };
    let within = against(&roomy);
    assert_eq!(within["within"], true, "{within:#}");
    assert_eq!(within["profile"], "why-roomy");
    let beyond = against(&profile("reason"));
    assert_eq!(beyond["within"], false, "{beyond:#}");
    assert_eq!(
        beyond["gained"],
        serde_json::json!(["fs.read: may read /etc/hostname"]),
        "{beyond:#}"
    );
    // The change, made: the same code reads the file; the socket, allowed
    // as a syscall, is still refused for its family under net.mode "none",
    // and `why` then says what allows it.
    let wider = write_profile(
        "why-wider",
        "extends = \"reason\"\n[mbu]\nname = \"why-wider\"\n[fs]\nread = [\"/etc/hostname\"]\n[syscalls]\nallow = [\"socket\"]\n",
    );
    let log2 = dir.join("audit2.jsonl");
    let r = run(
        who,
        &wider,
        &["--audit-log", log2.to_str().unwrap()],
        &["-c", code],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout, "True\n1\n", "{r:#?}");
    let exec = exec_ids(&log2).remove(0);
    let why = Run::from_output(ninewall(who).args(["why", &exec, "--log"]).arg(&log2).output().unwrap());
    assert!(
        why.stdout.contains("wall 8 (seccomp, socket families)")
            && why.stdout.contains("allow with: net.mode = \"loopback\""),
        "{why:#?}"
    );
    let loopback = write_profile(
        "why-loopback",
        "extends = \"why-wider\"\n[mbu]\nname = \"why-loopback\"\n[net]\nmode = \"loopback\"\n",
    );
    let r = run(
        who,
        &loopback,
        &["--audit-log", log2.to_str().unwrap()],
        &["-c", code],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout, "True\n", "the socket is made now: {r:#?}");
}

#[test]
fn policy_diff_and_audit_verify_speak_json() {
    let json_of = |args: &[&str], paths: &[&std::path::Path]| {
        let mut cmd = ninewall(Who::Root);
        cmd.args(args);
        for p in paths {
            cmd.arg(p);
        }
        Run::from_output(cmd.output().unwrap())
    };
    let r = json_of(
        &["diff", "--json"],
        &[&profile("code_generate_new"), &profile("reason")],
    );
    r.assert_code(1);
    let v = r.json();
    assert_eq!(v["subset"], false);
    assert!(
        v["gained"]
            .as_array()
            .is_some_and(|g| !g.is_empty() && g.iter().all(|e| e["key"].is_string())),
        "{v:#}"
    );
    let r = json_of(&["diff", "--json"], &[&profile("reason"), &profile("reason")]);
    r.assert_code(0);
    assert_eq!(r.json()["subset"], true);
    let policy = scratch_dir("policy-json").join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "profiles = {:?}\n[roles.coder]\nmbus = [\"code_generate_new\"]\n[workers.boss]\nuser = \"root\"\nroles = [\"coder\"]\n",
            stage().profiles.display().to_string()
        ),
    )
    .unwrap();
    let r = json_of(&["policy", "--json"], &[&policy]);
    r.assert_code(0);
    let v = r.json();
    assert_eq!(v["roles"]["coder"], serde_json::json!(["code_generate_new"]));
    assert_eq!(v["workers"][0]["may_run"], serde_json::json!(["code_generate_new"]));
    let dir = scratch_dir("verify-json");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let log = dir.join("audit.jsonl");
    run(
        Who::Root,
        &profile("reason"),
        &["--audit-log", log.to_str().unwrap()],
        &["-c", "pass"],
        None,
    )
    .assert_code(0);
    let r = json_of(&["audit", "verify", "--json"], &[&log]);
    r.assert_code(0);
    let v = r.json();
    assert_eq!(v["ok"], true);
    assert!(v["records"].as_u64().is_some_and(|n| n >= 2), "{v:#}");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(
        &log,
        text.replacen("\"kind\":\"exec.start\"", "\"kind\":\"exec.Start\"", 1),
    )
    .unwrap();
    let r = json_of(&["audit", "verify", "--json"], &[&log]);
    r.assert_code(1);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v:#}");
}

#[test]
fn install_puts_each_part_in_its_place_and_never_overwrites_configuration() {
    let root = scratch_dir("install-root");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let install = || {
        Run::from_output(
            Command::new("bash")
                .arg(&script)
                .env("DESTDIR", &root)
                .env("NINEWALL_BIN", &stage().bin)
                .output()
                .unwrap(),
        )
    };
    install().assert_code(0);
    for (file, mode) in [
        ("usr/local/bin/ninewall", 0o755),
        ("etc/ninewall/profiles/reason.toml", 0o644),
        ("etc/ninewall/profiles/base/python.toml", 0o644),
        ("etc/ninewall/policy.toml", 0o644),
        ("etc/systemd/system/ninewall.service", 0o644),
        ("etc/systemd/system/ninewall.socket", 0o644),
        ("usr/local/lib/ninewall/python/ninewall/__init__.py", 0o644),
        ("usr/local/share/man/man1/ninewall.1", 0o644),
        ("usr/local/share/bash-completion/completions/ninewall", 0o644),
        ("usr/local/share/zsh/site-functions/_ninewall", 0o644),
    ] {
        let m = std::fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{file}");
    }
    let man = std::fs::read_to_string(root.join("usr/local/share/man/man1/ninewall.1")).unwrap();
    assert!(man.starts_with(".ie") || man.contains(".TH ninewall"), "{man}");
    assert!(
        man.contains("learn") && man.contains("why") && man.contains("call"),
        "every subcommand: {man}"
    );
    let bash = std::fs::read_to_string(root.join("usr/local/share/bash-completion/completions/ninewall")).unwrap();
    assert!(bash.contains("complete") && bash.contains("--profile"), "{bash}");
    let policy = std::fs::read_to_string(root.join("etc/ninewall/policy.toml")).unwrap();
    assert!(policy.contains("profiles = \"/etc/ninewall/profiles\""), "{policy}");
    // The installed binary finds the installed profiles by name.
    let r = Run::from_output(
        Command::new(root.join("usr/local/bin/ninewall"))
            .args(["check", "reason"])
            .env("NINEWALL_PROFILES", root.join("etc/ninewall/profiles"))
            .output()
            .unwrap(),
    );
    r.assert_code(0);
    // An admin's edit survives a second install; the shipped copy lands beside it.
    let mine = root.join("etc/ninewall/profiles/reason.toml");
    let edited = format!("{}\n# edited by the admin\n", std::fs::read_to_string(&mine).unwrap());
    std::fs::write(&mine, &edited).unwrap();
    let again = install();
    again.assert_code(0);
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), edited);
    assert!(root.join("etc/ninewall/profiles/reason.toml.new").is_file());
    assert!(again.stderr.contains("kept"), "{again:#?}");
}

#[test]
fn a_program_named_by_a_symlink_or_on_path_runs_as_the_listed_executable() {
    let p = write_profile(
        "aliases",
        "[mbu]\nname = \"aliases\"\n[exec]\nexecutables = [\"/usr/bin/true\", \"/usr/bin/python3.11\"]\n[fs]\nread = [\"/lib\", \"/lib64\", \"/usr/lib/python3.11\"]\nlibraries = [\"/usr/lib/x86_64-linux-gnu\", \"/usr/lib64\", \"/usr/lib/python3.11/lib-dynload\"]\n",
    );
    for who in identities() {
        // /bin/true is /usr/bin/true on a merged-/usr host.
        if std::fs::canonicalize("/bin/true").ok() == std::fs::canonicalize("/usr/bin/true").ok() {
            run(who, &p, &[], &["/bin/true"], None).assert_code(0);
        }
        // python3 is a symlink to python3.11 in PATH.
        if std::fs::canonicalize("/usr/bin/python3").ok() == Some(std::path::PathBuf::from("/usr/bin/python3.11")) {
            let r = run(who, &p, &[], &["python3", "-I", "-S", "-c", "print(6 * 7)"], None);
            r.assert_code(0);
            assert_eq!(r.stdout.trim(), "42");
        }
        // Anything that is not one of them stays refused.
        let r = run(who, &p, &[], &["/bin/sh", "-c", "true"], None);
        r.assert_code(126);
    }
}

#[test]
fn learn_writes_a_profile_that_checks_and_runs_the_command_again() {
    for who in identities() {
        let dir = scratch_dir("learn");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let out = dir.join("learned.toml");
        let code = "import json\nprint(open('/etc/hostname').read() != '', json.dumps([1]))";
        let r = Run::from_output(
            ninewall(who)
                .args(["learn", "--out"])
                .arg(&out)
                .args(["--", "python3", "-I", "-S", "-c", code])
                .output()
                .unwrap(),
        );
        r.assert_code(0);
        assert_eq!(r.stdout, "True [1]\n", "the observed run's output: {r:#?}");
        assert!(
            r.stderr.contains("the command exits 0 under it, as it did observed"),
            "{r:#?}"
        );
        let learned = std::fs::read_to_string(&out).unwrap();
        for line in [
            "\"/usr/bin/python3.11\",  # the program run",
            "\"/etc/hostname\",  # read",
            "\"/usr/lib/python3.11/lib-dynload\",  # shared libraries",
            "allow = [\"@default\"]",
        ] {
            assert!(learned.contains(line), "{who:?}: {line:?} in\n{learned}");
        }
        assert!(
            !learned.contains("\"/etc\","),
            "only what was read, not /etc: {learned}"
        );
        check_profile(&out, false).assert_code(0);
        let again = run(who, &out, &[], &["/usr/bin/python3.11", "-I", "-S", "-c", code], None);
        again.assert_code(0);
        assert_eq!(again.stdout, "True [1]\n");
        // What it did not do stays refused.
        let other = run(
            who,
            &out,
            &[],
            &[
                "/usr/bin/python3.11",
                "-I",
                "-S",
                "-c",
                "open('/etc/os-release').read()",
            ],
            None,
        );
        assert_eq!(other.code, 1, "{other:#?}");
        assert!(other.stderr.contains("FileNotFoundError"), "{other:#?}");
        // From a log instead of a run.
        let log = dir.join("audit.jsonl");
        run(
            who,
            &profile("reason"),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", "print(1)"],
            None,
        )
        .assert_code(0);
        let exec = exec_ids(&log).remove(0);
        let out2 = dir.join("from-log.toml");
        let r = Run::from_output(
            ninewall(who)
                .args(["learn", "--from-exec", &exec, "--log"])
                .arg(&log)
                .arg("--out")
                .arg(&out2)
                .output()
                .unwrap(),
        );
        r.assert_code(0);
        check_profile(&out2, false).assert_code(0);
    }
}

#[test]
fn check_lists_every_parse_level_problem_of_a_file_each_with_its_fix() {
    let p = write_profile(
        "many-problems",
        "[mbu]\nname = \"x\"\nbogus = 1\n[exec]\ncommand = [\"/usr/bin/true\"]\nexecutables = \"notalist\"\nalso_bogus = 2\n[nope]\nk = 1\n[limits]\nmemory = \"64M\"\nfoo = 3\n",
    );
    let r = check_profile(&p, false);
    r.assert_code(2);
    let file = p.display().to_string();
    for (line, says) in [
        (
            3,
            "unknown field `bogus`, expected one of `name`, `description`, `delegate`",
        ),
        (
            6,
            "invalid type: string \"notalist\", expected a sequence; valid: a list in brackets",
        ),
        (7, "unknown field `also_bogus`"),
        (8, "unknown field `nope`"),
        (12, "unknown field `foo`"),
    ] {
        assert!(r.stderr.contains(&format!("{file}:{line}:")), "line {line}: {r:#?}");
        assert!(r.stderr.contains(says), "{says}: {r:#?}");
    }
    // `k = 1` under the unknown table is not reported as a key of [exec].
    assert!(!r.stderr.contains("unknown field `k`"), "{r:#?}");
    let j = check_profile(&p, true);
    j.assert_code(2);
    let lines: Vec<u64> = j.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["line"].as_u64())
        .collect();
    assert_eq!(lines, vec![3, 6, 7, 8, 12]);
}

#[test]
fn run_json_puts_the_outcome_on_the_last_line_of_stderr() {
    let who = identities()[0];
    let r = run(
        who,
        &profile("reason"),
        &["--json"],
        &[
            "-c",
            "import socket, sys\nprint('out')\ntry:\n    socket.socket()\nexcept OSError:\n    pass\nsys.exit(4)",
        ],
        None,
    );
    r.assert_code(4);
    assert_eq!(r.stdout, "out\n");
    let last = r.stderr.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {r:#?}"));
    assert_eq!(v["exit_code"], 4);
    assert!(v["exec"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        v["messages"],
        serde_json::json!(["refused syscalls (wall 8): socket x1"])
    );
    assert!(!r.stderr.contains("ninewall: "), "no free-text messages: {r:#?}");
    let bad = run(
        who,
        &profile("reason"),
        &["--json", "--workspace", "/no/such/dir"],
        &["-c", "pass"],
        None,
    );
    assert_ne!(bad.code, 0);
    let v: serde_json::Value = serde_json::from_str(bad.stderr.lines().last().unwrap_or("")).unwrap();
    assert!(
        v["exec"].is_null() && !v["messages"].as_array().unwrap().is_empty(),
        "{v}"
    );
}

/// A script that reads a data directory it is given and writes a report: the
/// learned profile runs it again, reads no more than the data it read, and is
/// a subset of a hand-written permissive profile for the same job.
#[test]
fn learn_a_shell_script_that_reads_data_and_writes_a_report() {
    let who = identities()[0];
    let dir = exec_dir().join(format!("learn-script-{}", unique()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (name, text) in [("a.csv", "1\n2\n"), ("b.csv", "3\n")] {
        std::fs::write(data.join(name), text).unwrap();
    }
    let script = dir.join("report.sh");
    // The report goes to the workspace and, as a copy, to a host directory
    // outside it: a write the observation refuses and the learned profile allows.
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::set_permissions(&reports, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat \"$1\"/*.csv > /work/all.txt\ncat /work/all.txt > {}/all.txt\nwc -l < /work/all.txt\n",
            reports.display()
        ),
    )
    .unwrap();
    for p in [&dir, &data] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["a.csv", "b.csv"] {
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = scratch_dir("learn-script-out");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let learned = out.join("report.toml");
    let r = Run::from_output(
        ninewall(who)
            .args(["learn", "--out"])
            .arg(&learned)
            .arg("--")
            .arg(&script)
            .arg(&data)
            .output()
            .unwrap(),
    );
    // Observed, the copy outside the workspace was refused (the script went
    // on); under the learned profile it is made.
    assert!(r.stderr.contains("exits 0 under it"), "{r:#?}");
    let text = std::fs::read_to_string(&learned).unwrap();
    check_profile(&learned, false).assert_code(0);
    assert!(
        text.contains(&format!("{:?},  # create", reports.display().to_string())),
        "{text}"
    );
    assert!(
        reports.join("all.txt").is_file(),
        "the re-run under the learned profile wrote the copy"
    );
    std::fs::remove_file(reports.join("all.txt")).unwrap();
    // The script's interpreter and what it ran are executables; the data is read.
    assert!(text.contains("# the interpreter of the script, /bin/sh"), "{text}");
    assert!(
        text.contains("/usr/bin/cat\",  # executed") && text.contains("/usr/bin/wc\",  # executed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{:?},", data.display().to_string()))
            || text.contains(&format!("{:?},", data.join("a.csv").display().to_string())),
        "{text}"
    );
    let again = run(
        who,
        &learned,
        &[],
        &[script.to_str().unwrap(), data.to_str().unwrap()],
        None,
    );
    again.assert_code(0);
    assert_eq!(again.stdout.trim(), "3");
    // Within a hand-written permissive profile for the same job.
    let permissive = write_profile(
        "report-permissive",
        &format!(
            "[mbu]\nname = \"report-permissive\"\n[exec]\nexecutables = [{s:?}, \"/usr/bin/dash\", \"/usr/bin/cat\", \"/usr/bin/wc\"]\n[fs]\nread = [\"/usr\", \"/etc\", \"/lib\", \"/lib64\", \"/bin\", {d:?}]\nlibraries = [\"/usr/lib\", \"/usr/lib64\"]\nwrite = [{w:?}]\n[syscalls]\nallow = [\"@default\", \"@network-io\"]\n[limits]\nmemory = \"1G\"\ncpu_seconds = 60\nwall_seconds = 60\noutput = \"64M\"\n",
            s = script.to_str().unwrap(),
            d = dir.to_str().unwrap(),
            w = reports.to_str().unwrap()
        ),
    );
    assert_within(who, &learned, &permissive);
}

/// `ninewall diff LEARNED PERMISSIVE` says the learned profile asks for
/// nothing the permissive one does not give.
fn assert_within(who: Who, learned: &Path, permissive: &Path) {
    let diff = Run::from_output(ninewall(who).arg("diff").arg(learned).arg(permissive).output().unwrap());
    assert_eq!(
        diff.code,
        0,
        "{}: the learned profile asks for more than the permissive one: {diff:#?}",
        learned.display()
    );
}

/// `learn` on what each shipped profile is for, and on a compiler run
/// (gcc starts cc1, as, collect2 and ld, found by PATH and by `access`):
/// each learned profile checks, runs its workload again with the same
/// result, and is a `diff`-subset of a hand-written permissive profile.
#[test]
fn learn_the_shipped_workloads_and_a_compiler_run() {
    if !Path::new("/usr/bin/gcc").exists() && skip("gcc is not installed (.ci/run installs it)") {
        return;
    }
    if !Path::new("/srv/knowledge/README.txt").exists() && skip("/srv/knowledge/README.txt is missing") {
        return;
    }
    let src = exec_dir().join(format!("learn-cc-{}", unique()));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hello = src.join("hello.c");
    std::fs::write(
        &hello,
        "#include <stdio.h>\nint main(void) { puts(\"compiled\"); return 0; }\n",
    )
    .unwrap();
    std::fs::set_permissions(&hello, std::fs::Permissions::from_mode(0o644)).unwrap();
    let py = |code: &str| {
        vec![
            "/usr/bin/python3.11".to_string(),
            "-I".into(),
            "-S".into(),
            "-B".into(),
            "-c".into(),
            code.into(),
        ]
    };
    let workloads: Vec<(&str, Vec<String>, &str)> = vec![
        ("reason", py("import json, statistics\nprint(json.dumps(statistics.mean([1, 2, 3, 4])))"), "2.5"),
        ("knowledge", py("print(open('/srv/knowledge/README.txt').read().split()[0])"), "ninewall"),
        (
            "document_generation",
            py("import csv\nwith open('/work/r.csv', 'w', newline='') as f:\n    csv.writer(f).writerow(['q', 1])\nprint(open('/work/r.csv').read().strip())"),
            "q,1",
        ),
        ("code_generate_new", py("import math, re\nprint(len(re.findall('a', 'banana')), math.factorial(5))"), "3 120"),
        // Compiled and linked into the sandbox's own /tmp (noexec there:
        // it is not run); exit 0 means cc1, as, collect2 and ld all ran.
        (
            "compiler",
            vec!["/usr/bin/gcc".into(), "-o".into(), "/tmp/hello".into(), hello.display().to_string()],
            "",
        ),
    ];
    let gcc_dir = "/usr/lib/gcc/x86_64-linux-gnu";
    let permissive = write_profile(
        "learn-permissive",
        &format!(
            "[mbu]\nname = \"learn-permissive\"\n[exec]\nexecutables = [\"/usr/bin/python3.11\", \"/usr/bin/dash\", {exes}]\n\
             [fs]\nread = [\"/usr\", \"/etc\", \"/srv\", \"/lib\", \"/lib64\", \"/bin\", {src:?}]\nlibraries = [\"/usr/lib\", \"/usr/lib64\"]\n\
             [syscalls]\nallow = [\"@default\", \"@network-io\", \"@ipc\", \"@system-info\"]\n\
             [limits]\nmemory = \"4G\"\npids = 512\ncpu_seconds = 600\nwall_seconds = 600\noutput = \"64M\"\n",
            exes = [
                "/usr/bin/x86_64-linux-gnu-gcc-12",
                "/usr/bin/x86_64-linux-gnu-as",
                "/usr/bin/x86_64-linux-gnu-ld.bfd",
                &format!("{gcc_dir}/12/cc1"),
                &format!("{gcc_dir}/12/collect2"),
                &format!("{gcc_dir}/12/lto-wrapper"),
            ]
            .iter()
            .filter(|p| Path::new(p).exists())
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", "),
            src = src.to_str().unwrap(),
        ),
    );
    check_profile(&permissive, false).assert_code(0);
    for who in identities() {
        for (name, command, expect) in &workloads {
            let out = scratch_dir("learn-shipped");
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
            let learned = out.join(format!("{name}.toml"));
            let r = Run::from_output(
                ninewall(who)
                    .args(["learn", "--name", name, "--out"])
                    .arg(&learned)
                    .arg("--")
                    .args(command)
                    .output()
                    .unwrap(),
            );
            r.assert_code(0);
            assert_eq!(r.stdout.trim(), *expect, "{name}, observed: {r:#?}");
            assert!(
                r.stderr.contains("the command exits 0 under it, as it did observed"),
                "{name} ({who:?}): {r:#?}"
            );
            check_profile(&learned, false).assert_code(0);
            // Its workload, again, by hand.
            let again = run(
                who,
                &learned,
                &[],
                command.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
                None,
            );
            again.assert_code(0);
            assert_eq!(
                again.stdout.trim(),
                *expect,
                "{name} under the learned profile: {again:#?}"
            );
            assert_within(who, &learned, &permissive);
        }
    }
}

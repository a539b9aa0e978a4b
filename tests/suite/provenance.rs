//! Provenance through the real binary: what a run records, that the chain
//! catches tampering, holds under concurrent supervisors and a killed one, and
//! that a log that cannot be written means nothing runs.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::*;

/// reason, with file events off: a run writes exactly its start and end.
fn quiet_profile() -> std::path::PathBuf {
    write_profile("reason-quiet", "extends = \"reason\"\n[provenance]\nfiles = \"none\"\n")
}

fn fresh_log(name: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    dir.join("audit.jsonl")
}

/// A fresh, empty log that `who` may write, locked (`flock -x`, as ninewall
/// locks it to append) by a process that holds the lock while `hold` runs;
/// returns once the lock is held.
fn locked_log(name: &str, who: Who, hold: &[&str]) -> (std::path::PathBuf, std::process::Child) {
    let log = fresh_log(name);
    std::fs::write(&log, "").unwrap();
    if let Who::User { uid, gid } = who {
        std::os::unix::fs::chown(&log, Some(uid), Some(gid)).unwrap();
    }
    let holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&log)
        .args(hold)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let free = || {
        std::process::Command::new("flock")
            .args(["-n", "-x"])
            .arg(&log)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    while free() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (log, holder)
}

fn verify(log: &std::path::Path) -> Run {
    Run::from_output(ninewall(Who::Root).args(["audit", "verify"]).arg(log).output().unwrap())
}

#[test]
fn a_run_records_its_start_its_refusals_and_its_end() {
    for who in identities() {
        let log = fresh_log("prov");
        let r = run(
            who,
            &profile("reason"),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", "import socket\nfor _ in range(2):\n    try: socket.socket()\n    except OSError: pass\nraise SystemExit(4)"],
            None,
        );
        r.assert_code(4);
        let recs = log_records(&log);
        let kinds: Vec<&str> = recs
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .filter(|k| !k.starts_with("file"))
            .collect();
        assert_eq!(kinds, vec!["exec.start", "syscall.denied", "exec.end"], "{who:?}");
        let id = recs[0]["exec"].as_str().unwrap();
        assert!(recs.iter().all(|r| r["exec"] == id));
        assert_eq!(recs[0]["mbu"], "reason");
        assert_eq!(recs[0]["prev"], "0".repeat(64));
        assert!(recs[0]["walls"]["landlock"]["abi"].as_u64().is_some());
        assert_eq!(recs[0]["profile"]["sha256"].as_str().unwrap().len(), 64);
        let denied = recs.iter().find(|r| r["kind"] == "syscall.denied").unwrap();
        assert_eq!(
            (denied["name"].as_str(), denied["count"].as_u64()),
            (Some("socket"), Some(2))
        );
        let end = recs.last().unwrap();
        assert_eq!(end["kind"], "exec.end");
        assert_eq!(end["reason"], "exited");
        assert_eq!(end["code"], 4);
        verify(&log).assert_code(0);
        let show = Run::from_output(ninewall(Who::Root).args(["audit", "show"]).arg(&log).output().unwrap());
        show.assert_code(0);
        assert!(
            show.stdout.contains("refused  syscall socket x2") && show.stdout.contains("ended    exited code 4"),
            "{show:#?}"
        );
    }
}

#[test]
fn tampering_is_found_at_the_line_it_breaks() {
    let log = fresh_log("tamper");
    for code in ["1", "2", "3"] {
        run(
            Who::Root,
            &quiet_profile(),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", &format!("raise SystemExit({code})")],
            None,
        );
    }
    verify(&log).assert_code(0);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    let write = |ls: Vec<String>| {
        let bad = log.with_extension(format!("bad{}", unique()));
        std::fs::write(&bad, ls.join("\n") + "\n").unwrap();
        bad
    };
    let own = |v: &[&str]| v.iter().map(std::string::ToString::to_string).collect::<Vec<_>>();
    // One byte changed in line 4 (the second run's end: exit code 2 becomes 7):
    // line 5 no longer matches.
    let mut flipped = own(&lines);
    flipped[3] = flipped[3].replacen("\"code\":2", "\"code\":7", 1);
    assert!(flipped[3] != lines[3], "the edit did not apply");
    let r = verify(&write(flipped));
    r.assert_code(1);
    assert!(r.stderr.contains(":5: prev does not match line 4"), "{r:#?}");
    // Line 2 deleted.
    let mut deleted = own(&lines);
    deleted.remove(1);
    let r = verify(&write(deleted));
    r.assert_code(1);
    assert!(r.stderr.contains(":2: prev does not match line 1"), "{r:#?}");
    // Lines 4 and 5 swapped.
    let mut swapped = own(&lines);
    swapped.swap(3, 4);
    let r = verify(&write(swapped));
    r.assert_code(1);
    assert!(r.stderr.contains(":4: prev does not match line 3"), "{r:#?}");
}

#[test]
fn eight_concurrent_supervisors_keep_one_chain() {
    let log = fresh_log("concurrent");
    let quiet = quiet_profile();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut cmd = ninewall(Who::Root);
            cmd.args(["run", "--audit-log", log.to_str().unwrap(), "--profile"])
                .arg(&quiet)
                .args([
                    "--",
                    "-c",
                    &format!("import time; time.sleep(0.05); raise SystemExit({i})"),
                ]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
        })
        .collect();
    for mut c in children {
        c.wait().unwrap();
    }
    let r = verify(&log);
    r.assert_code(0);
    assert!(r.stdout.contains("16 records, chain intact"), "{r:#?}");
    let recs = log_records(&log);
    let mut codes: Vec<i64> = recs
        .iter()
        .filter(|r| r["kind"] == "exec.end")
        .map(|r| r["code"].as_i64().unwrap())
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, (0..8).collect::<Vec<i64>>());
}

#[test]
fn a_supervisor_killed_mid_run_leaves_a_log_that_verifies_showing_the_run_incomplete() {
    let log = fresh_log("killed");
    let mut cmd = ninewall(Who::Root);
    cmd.args(["run", "--audit-log", log.to_str().unwrap(), "--profile"])
        .arg(profile("reason"))
        .args(["--", "-c", "import time\nprint('ready', flush=True)\ntime.sleep(60)"]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child.kill().unwrap();
    child.wait().unwrap();
    verify(&log).assert_code(0);
    let show = Run::from_output(ninewall(Who::Root).args(["audit", "show"]).arg(&log).output().unwrap());
    assert!(show.stdout.contains("incomplete: no end record"), "{show:#?}");
    // The next run chains on.
    run(
        Who::Root,
        &profile("reason"),
        &["--audit-log", log.to_str().unwrap()],
        &["-c", "pass"],
        None,
    )
    .assert_code(0);
    verify(&log).assert_code(0);
}

#[test]
fn a_log_that_cannot_be_written_means_nothing_runs() {
    for who in identities() {
        let dir = scratch_dir("unwritable");
        let marker = dir.join("ran");
        std::os::unix::fs::chown(&dir, Some(who.workspace_owner().0), Some(who.workspace_owner().1)).unwrap();
        for bad in ["/proc/ninewall/audit.jsonl", "/sys/kernel/audit.jsonl"] {
            let r = run(
                who,
                &profile("document_generation"),
                &["--audit-log", bad, "--workspace", dir.to_str().unwrap()],
                &["-c", "open('/work/ran', 'w')"],
                None,
            );
            r.assert_code(125);
            assert!(
                r.stderr.contains("provenance:") && r.stderr.contains("nothing ran"),
                "{who:?}: {r:#?}"
            );
            assert!(!marker.exists());
        }
    }
}

#[test]
fn file_accesses_are_recorded_with_their_kind_and_verdict() {
    for who in identities() {
        let log = fresh_log("files");
        let ws = scratch_dir("files-ws");
        std::fs::write(ws.join("in1.txt"), "one").unwrap();
        std::fs::write(ws.join("in2.txt"), "two").unwrap();
        let (uid, gid) = who.workspace_owner();
        for p in [ws.clone(), ws.join("in1.txt"), ws.join("in2.txt")] {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        }
        let r = run(
            who,
            &profile("document_generation"),
            &["--audit-log", log.to_str().unwrap(), "--workspace", ws.to_str().unwrap()],
            &[
                "-c",
                "import os\nos.mkdir('sub')\nos.chdir('sub')\nopen('../in1.txt').read()\nopen('/work/in2.txt').read()\nopen('out.txt', 'w').write('x')\ntry: open('/srv/knowledge/README.txt').read()\nexcept OSError: pass\ntry: os.stat('missing.txt')\nexcept OSError: pass\nos.stat('/work/sub/../in1.txt')\nos.stat('/lib64/ld-linux-x86-64.so.2')\nos.listdir('/dev')\ntry: open('/lib/x86_64-linux-gnu/no-such-dir/x')\nexcept OSError: pass",
            ],
            None,
        );
        r.assert_code(0);
        verify(&log).assert_code(0);
        let events: Vec<(String, String, String, bool)> = log_records(&log)
            .iter()
            .filter(|r| {
                r["kind"] == "file"
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| ["/work", "/srv", "/lib", "/dev"].iter().any(|s| p.starts_with(s)))
            })
            .map(|r| {
                (
                    r["path"].as_str().unwrap().to_string(),
                    r["access"].as_str().unwrap().to_string(),
                    r["verdict"].as_str().unwrap().to_string(),
                    r["exists"].as_bool().unwrap(),
                )
            })
            .collect();
        let has = |path: &str, access: &str, verdict: &str, exists: bool| {
            events
                .iter()
                .any(|e| e == &(path.to_string(), access.to_string(), verdict.to_string(), exists))
        };
        assert!(has("/work/sub", "create", "allowed", false), "{who:?}: {events:#?}");
        assert!(
            has("/work/in1.txt", "read", "allowed", true),
            "relative to the cwd: {events:#?}"
        );
        assert!(has("/work/in2.txt", "read", "allowed", true), "{events:#?}");
        assert!(has("/work/sub/out.txt", "create", "allowed", false), "{events:#?}");
        assert!(
            has("/srv/knowledge/README.txt", "read", "refused", false),
            "{events:#?}"
        );
        assert!(has("/work/sub/missing.txt", "meta", "allowed", false), "{events:#?}");
        // A missing path is judged where it would be: beneath a readable
        // directory reached through a symlink (/lib), even when its parent
        // is missing too.
        assert!(
            has("/lib/x86_64-linux-gnu/no-such-dir/x", "read", "allowed", false),
            "{events:#?}"
        );
        // A stat names the path as given, made absolute; through a symlink
        // (/lib64) it exists all the same; an open file's fstat names the file.
        assert!(has("/work/in1.txt", "meta", "allowed", true), "{events:#?}");
        // Listing /dev is allowed (read_dir there) where reading it as a file
        // would not be: the verdict asks whether it is a directory.
        assert!(has("/dev", "read", "allowed", true), "{events:#?}");
        assert!(
            has("/lib64/ld-linux-x86-64.so.2", "meta", "allowed", true),
            "{events:#?}"
        );
        assert!(
            log_records(&log)
                .iter()
                .any(|r| r["syscall"] == "newfstatat" && r["path"] == "/work/in2.txt" && r["exists"] == true),
            "{events:#?}"
        );
        // Every record of the run belongs to it, numbered in order.
        let seqs: Vec<u64> = log_records(&log)
            .iter()
            .filter(|r| r["kind"] == "file")
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        // files = "none" records none.
        let quiet = fresh_log("files-none");
        run(
            who,
            &quiet_profile(),
            &["--audit-log", quiet.to_str().unwrap()],
            &["-c", "open('/work/x', 'w')"],
            None,
        )
        .assert_code(0);
        assert!(log_records(&quiet).iter().all(|r| r["kind"] != "file"));
    }
}

#[test]
fn every_access_of_a_busy_run_is_recorded_in_order_before_its_end() {
    // The listener's thread hands accesses over in batches, a bounded number
    // in flight: a run with many more than fit must lose none, the last
    // partial batch included, and count its refusals all the same.
    for who in identities() {
        let log = fresh_log("busy");
        let r = run(
            who,
            &profile("reason"),
            &["--audit-log", log.to_str().unwrap()],
            &[
                "-c",
                "import os, socket\nfor i in range(1000): os.close(os.open('/work/x%d' % i, os.O_WRONLY | os.O_CREAT))\nfor _ in range(3):\n    try: socket.socket()\n    except OSError: pass",
            ],
            None,
        );
        r.assert_code(0);
        verify(&log).assert_code(0);
        let recs = log_records(&log);
        // 1000 different files: 1000 records (identical accesses in a row
        // would be one and a count).
        let creates = recs
            .iter()
            .filter(|r| {
                r["kind"] == "file"
                    && r["access"] == "create"
                    && r["path"].as_str().is_some_and(|p| p.starts_with("/work/x"))
            })
            .count();
        assert_eq!(creates, 1000, "{who:?}");
        let seqs: Vec<u64> = recs
            .iter()
            .filter(|r| r["kind"] == "file")
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{who:?}");
        assert_eq!(recs.last().unwrap()["kind"], "exec.end", "{who:?}");
        let denied = recs.iter().find(|r| r["kind"] == "syscall.denied").unwrap();
        assert_eq!(
            (denied["name"].as_str(), denied["count"].as_u64()),
            (Some("socket"), Some(3)),
            "{who:?}"
        );
    }
}

#[test]
fn the_program_waits_until_its_start_record_is_written() {
    // The sandbox builds its walls while the start record goes to disk; the
    // program itself must not start before. A lock held on the log stops the
    // supervisor before it can write the record: the program must wait. File
    // events off: with them on, the program's execve would wait for the
    // supervisor anyway.
    let unrecorded = write_profile(
        "docgen-no-files",
        "extends = \"document_generation\"\n[mbu]\nname = \"docgen-no-files\"\n[provenance]\nfiles = \"none\"\n",
    );
    for who in identities() {
        let dir = scratch_dir("start-first-ws");
        let marker = dir.join("ran");
        let (uid, gid) = who.workspace_owner();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        // Held until the holder's stdin closes.
        let (log, mut holder) = locked_log("start-first", who, &["cat"]);
        let mut child = ninewall(who)
            .arg("run")
            .arg("--profile")
            .arg(&unrecorded)
            .args([
                "--audit-log",
                log.to_str().unwrap(),
                "--workspace",
                dir.to_str().unwrap(),
            ])
            .args(["--", "-c", "open('/work/ran', 'w')"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(child.try_wait().unwrap().is_none(), "{who:?}: ninewall ended early");
        assert!(
            !marker.exists(),
            "{who:?}: the program ran before its start record was written"
        );
        drop(holder.stdin.take());
        holder.wait().unwrap();
        let out = Run::from_output(child.wait_with_output().unwrap());
        out.assert_code(0);
        assert!(marker.exists(), "{who:?}: {out:#?}");
        let kinds: Vec<String> = log_records(&log)
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds.first().map(String::as_str), Some("exec.start"), "{kinds:?}");
        assert_eq!(kinds.last().map(String::as_str), Some("exec.end"), "{kinds:?}");
    }
}

#[test]
fn a_setup_failure_while_the_start_record_is_written_is_reported_as_itself() {
    // The MBU fails (its working directory does not exist) while the
    // supervisor still waits for the log: the failure must be the one told,
    // not the closed pipe the supervisor then finds.
    let broken = write_profile(
        "reason-bad-workdir",
        "extends = \"reason\"\n[mbu]\nname = \"reason-bad-workdir\"\n[exec]\nworkdir = \"/work/missing\"\n",
    );
    for who in identities() {
        let (log, mut holder) = locked_log("start-late", who, &["sleep", "1"]);
        let r = run(
            who,
            &broken,
            &["--audit-log", log.to_str().unwrap()],
            &["-c", "pass"],
            None,
        );
        holder.wait().unwrap();
        r.assert_code(125);
        assert!(
            r.stderr
                .contains("sandbox not built, nothing ran: wall 4 (filesystem view): chdir to the working directory"),
            "{who:?}: {r:#?}"
        );
    }
}

/// A path with `..` after a symlink leads where the kernel takes it, not
/// where folding the string would: the record names the file the kernel
/// made (and what was asked beside it), never another one.
#[test]
fn a_dotdot_after_a_symlink_is_recorded_where_the_kernel_goes() {
    for who in identities() {
        let log = fresh_log("dotdot");
        let r = run(
            who,
            &profile("document_generation"),
            &["--audit-log", log.to_str().unwrap()],
            &[
                "-c",
                "import os\nos.mkdir('/tmp/d')\nos.symlink('/tmp/d', '/work/l')\nopen('/work/l/../exfil.txt', 'w').write('x')\nos.stat('/work/l/../exfil.txt')\nprint(os.path.exists('/tmp/exfil.txt'), os.path.exists('/work/exfil.txt'))",
            ],
            None,
        );
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "True False", "{who:?}: {r:#?}");
        let files: Vec<serde_json::Value> = log_records(&log).into_iter().filter(|r| r["kind"] == "file").collect();
        let made: Vec<&serde_json::Value> = files.iter().filter(|r| r["asked"] == "/work/l/../exfil.txt").collect();
        assert_eq!(made.len(), 2, "{who:?}: {files:#?}");
        assert_eq!(made[0]["path"], "/tmp/exfil.txt", "{:#}", made[0]);
        assert_eq!(made[0]["access"], "create");
        assert_eq!(made[0]["exists"], false);
        assert_eq!(made[1]["path"], "/tmp/exfil.txt", "{:#}", made[1]);
        assert_eq!(made[1]["access"], "meta");
        assert_eq!(made[1]["exists"], true);
        // (The test's own os.path.exists('/work/exfil.txt') is a stat of
        // that path, which exists=false records truly.)
        assert!(
            files
                .iter()
                .all(|r| r["path"] != "/work/exfil.txt" || (r["access"] == "meta" && r["exists"] == false)),
            "{who:?}: a record names a file that was never made: {files:#?}"
        );
    }
}

/// A file name the sandbox chooses cannot draw on the admin's screen:
/// `audit show` writes it with its newlines, escape sequences and
/// reordering characters escaped, one line per record.
#[test]
fn audit_show_escapes_what_the_sandbox_chose() {
    let who = identities()[0];
    let log = fresh_log("escapes");
    let r = run(
        who,
        &profile("document_generation"),
        &["--audit-log", log.to_str().unwrap()],
        &[
            "-c",
            "name = 'evil\\n  2026-01-01T00:00:00Z ended    exited code 0\\x1b[2J\\u202e'\nopen('/work/' + name, 'w').write('x')",
        ],
        None,
    );
    r.assert_code(0);
    let recorded = log_records(&log).iter().any(|r| {
        r["path"]
            .as_str()
            .is_some_and(|p| p.contains('\u{1b}') && p.contains('\n'))
    });
    assert!(recorded, "the record keeps the name as it was");
    let shown = Run::from_output(ninewall(Who::Root).args(["audit", "show"]).arg(&log).output().unwrap());
    shown.assert_code(0);
    assert!(!shown.stdout.contains('\u{1b}'), "{}", shown.stdout);
    assert!(!shown.stdout.contains('\u{202e}'), "{}", shown.stdout);
    assert!(
        !shown
            .stdout
            .lines()
            .any(|l| l.starts_with("  2026-01-01T00:00:00Z ended")),
        "a fake line: {}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("file     create \"/work/evil\\u{a}  2026-01-01T00:00:00Z ended    exited code 0\\u{1b}[2J\\u{202e}\" allowed"),
        "{}",
        shown.stdout
    );
}

/// A line cut short (the disk filled, the machine stopped mid-write) is cut
/// off by the next append, which records the cut: the chain goes on and the
/// log verifies, instead of failing there forever after.
#[test]
fn a_torn_last_line_is_cut_off_and_recorded_and_the_chain_goes_on() {
    let who = identities()[0];
    let log = fresh_log("torn");
    let once = || {
        run(
            who,
            &quiet_profile(),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", "pass"],
            None,
        )
        .assert_code(0);
    };
    once();
    let torn = "{\"kind\":\"exec.start\",\"exec\":\"cut-sh";
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, torn.as_bytes()).unwrap();
    drop(f);
    let torn_now = verify(&log);
    torn_now.assert_code(1);
    assert!(torn_now.stderr.contains("the last line is torn"), "{torn_now:#?}");
    once();
    let after = verify(&log);
    after.assert_code(0);
    assert!(
        after
            .stdout
            .contains("1 torn line(s) of cut-short writes set aside and recorded"),
        "{after:#?}"
    );
    let recs = log_records(&log);
    let repaired: Vec<&serde_json::Value> = recs.iter().filter(|r| r["kind"] == "log.recovered").collect();
    assert_eq!(repaired.len(), 1, "{recs:#?}");
    assert_eq!(repaired[0]["cut_bytes"], torn.len());
    assert_eq!(recs.iter().filter(|r| r["kind"] == "exec.end").count(), 2);
}

/// A full disk: the run that cannot record its start does not run, and
/// leaves no partial line; once there is room again, runs are recorded and
/// the log verifies.
#[test]
fn a_full_disk_refuses_the_run_and_leaves_the_log_whole() {
    if !identities().contains(&Who::Root) {
        return;
    }
    let dir = scratch_dir("fulldisk");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=1777", "ninewall-test-full"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a small tmpfs");
    let log = dir.join("audit.jsonl");
    let once = |marker: &str| {
        run(
            Who::Root,
            &quiet_profile(),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", &format!("print('{marker}')")],
            None,
        )
    };
    once("first").assert_code(0);
    // Fill the rest of the filesystem, but for a few hundred bytes: less
    // than a start record.
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 512];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    let r = once("must-not-run");
    let ran = r.stdout.contains("must-not-run");
    let text = std::fs::read(&log).unwrap();
    std::fs::remove_file(&filler).unwrap();
    let whole = text.ends_with(b"\n");
    let after = once("after").code;
    let verified = verify(&log);
    let _ = std::process::Command::new("umount").arg(&dir).status();
    assert!(!ran, "a run whose start could not be recorded ran: {r:#?}");
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(whole, "a partial line was left: {:?}", String::from_utf8_lossy(&text));
    assert_eq!(after, 0);
    verified.assert_code(0);
}

/// Seconds since midnight of an RFC 3339 time as ninewall writes it.
fn day_seconds(t: &str) -> f64 {
    let clock = &t[11..t.len() - 1];
    let mut parts = clock.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

/// A file record's time is when the access happened, not when its batch
/// was written: two accesses 1.5 s apart are recorded 1.5 s apart, and the
/// first well before the end.
#[test]
fn a_file_record_says_when_the_access_happened() {
    let who = identities()[0];
    let log = fresh_log("access-time");
    run(
        who,
        &profile("document_generation"),
        &["--audit-log", log.to_str().unwrap()],
        &[
            "-c",
            "import time\nopen('/work/a', 'w')\ntime.sleep(1.5)\nopen('/work/b', 'w')",
        ],
        None,
    )
    .assert_code(0);
    let recs = log_records(&log);
    let time_of = |path: &str| {
        let r = recs
            .iter()
            .find(|r| r["kind"] == "file" && r["path"] == path && r["access"] == "create")
            .unwrap_or_else(|| panic!("no create of {path}: {recs:#?}"));
        day_seconds(r["time"].as_str().unwrap())
    };
    let end = day_seconds(
        recs.iter().find(|r| r["kind"] == "exec.end").unwrap()["time"]
            .as_str()
            .unwrap(),
    );
    let (a, b) = (time_of("/work/a"), time_of("/work/b"));
    let apart = (b - a).rem_euclid(86400.0);
    assert!((1.4..3.0).contains(&apart), "recorded {apart} s apart");
    assert!(
        (end - a).rem_euclid(86400.0) >= 1.4,
        "the first access is recorded at the end"
    );
}

/// The path-taking calls beyond open and stat are recorded too: statfs and
/// the extended attributes (set, get, list, remove).
#[test]
fn statfs_and_extended_attribute_calls_are_recorded() {
    let who = identities()[0];
    let log = fresh_log("xattr");
    let p = write_profile(
        "xattrs",
        "extends = \"document_generation\"\n[syscalls]\nallow = [\"statfs\", \"setxattr\", \"getxattr\", \"listxattr\", \"removexattr\"]\n",
    );
    let r = run(
        who,
        &p,
        &["--audit-log", log.to_str().unwrap()],
        &[
            "-c",
            "import os\nopen('/work/f', 'w').write('x')\nos.statvfs('/work/f')\nos.setxattr('/work/f', 'user.k', b'v')\nprint(os.getxattr('/work/f', 'user.k'), os.listxattr('/work/f'))\nos.removexattr('/work/f', 'user.k')",
        ],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "b'v' ['user.k']", "{r:#?}");
    let recs = log_records(&log);
    for call in ["statfs", "setxattr", "getxattr", "listxattr", "removexattr"] {
        assert!(
            recs.iter().any(|r| r["kind"] == "file"
                && r["syscall"] == call
                && r["path"] == "/work/f"
                && r["access"] == "meta"),
            "no {call} record: {recs:#?}"
        );
    }
}

/// A stat loop cannot fill the disk: identical accesses in a row are one
/// record and a count; many different ones stop being recorded one by one
/// at `provenance.max_records` (counted per syscall), or end the run under
/// `on_overflow = "kill"`.
#[test]
fn a_flood_of_accesses_is_bounded_by_repeats_and_the_record_budget() {
    let who = identities()[0];
    // 20,000 stats of one long path: one record and one count.
    let log = fresh_log("flood");
    let long = format!("/work/{}", "a".repeat(3000));
    run(
        who,
        &profile("document_generation"),
        &["--audit-log", log.to_str().unwrap()],
        &[
            "-c",
            &format!("import os\nfor _ in range(20000):\n    try: os.stat({long:?})\n    except OSError: pass"),
        ],
        None,
    )
    .assert_code(0);
    let recs = log_records(&log);
    let of_long: Vec<&serde_json::Value> = recs.iter().filter(|r| r["path"] == long.as_str()).collect();
    assert_eq!(of_long.len(), 1, "one record of the path");
    let repeated: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["kind"] == "file.repeated" && r["seq"] == of_long[0]["seq"])
        .collect();
    assert_eq!(repeated.len(), 1, "{repeated:#?}");
    assert_eq!(repeated[0]["count"], 19_999);
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size < 256 << 10, "the log of 20,000 stats is {size} bytes");
    // What recording them cost the supervisor is the execution's, beside
    // its own CPU time (and counted against its cpu_seconds).
    let end = recs.iter().find(|r| r["kind"] == "exec.end").unwrap();
    assert!(end["recorder_cpu_ms"].as_u64().unwrap() > 0, "{end:#}");
    verify(&log).assert_code(0);

    // 2,000 different paths against a budget of 200.
    let budget = |mode: &str| {
        write_profile(
            &format!("budget-{mode}"),
            &format!("extends = \"document_generation\"\n[provenance]\nmax_records = 200\non_overflow = \"{mode}\"\n"),
        )
    };
    let code = "import os\nfor i in range(2000):\n    try: os.stat('/work/missing-%d' % i)\n    except OSError: pass\nprint('done')";
    let log = fresh_log("budget");
    let r = run(
        who,
        &budget("summarize"),
        &["--audit-log", log.to_str().unwrap()],
        &["-c", code],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "done");
    let recs = log_records(&log);
    let files = recs.iter().filter(|r| r["kind"] == "file").count();
    assert!(files <= 200, "{files} file records past a budget of 200");
    let dropped = recs
        .iter()
        .find(|r| r["kind"] == "file.dropped")
        .expect("a file.dropped record");
    let counted: u64 = dropped["by_syscall"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(counted >= 1800, "{dropped:#}");
    verify(&log).assert_code(0);

    let log = fresh_log("budget-kill");
    let r = run(
        who,
        &budget("kill"),
        &["--audit-log", log.to_str().unwrap()],
        &["-c", code],
        None,
    );
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(!r.stdout.contains("done"), "{r:#?}");
    let end = log_records(&log).into_iter().find(|r| r["kind"] == "exec.end").unwrap();
    assert_eq!(end["reason"], "records", "{end:#}");
}

/// The lines of a log with every `prev` recomputed: what someone who may
/// write the log can do after editing it.
fn rechain(lines: Vec<serde_json::Value>) -> String {
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    for mut v in lines {
        v["prev"] = serde_json::Value::String(prev.clone());
        let line = v.to_string();
        prev = ninewall::provenance::sha256_hex(line.as_bytes());
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Forward-secure sealing: with the verification key kept elsewhere, a
/// rewritten-and-rechained log, a deleted seal and a seal forged with the
/// key file as it is now are each caught; an untouched log passes and says
/// up to when it is sealed.
#[test]
fn seals_catch_a_rechained_rewrite_a_deleted_seal_and_a_seal_forged_with_the_current_key() {
    let who = identities()[0];
    let log = fresh_log("sealed");
    let setup = Run::from_output(
        ninewall(who)
            .args(["audit", "setup-keys"])
            .arg(&log)
            .args(["--interval", "1"])
            .output()
            .unwrap(),
    );
    setup.assert_code(0);
    let vk = setup.stdout.lines().last().unwrap().to_string();
    assert!(vk.starts_with("nwseal1:"), "{setup:#?}");
    let once = || {
        run(
            who,
            &quiet_profile(),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", "pass"],
            None,
        )
        .assert_code(0);
    };
    once();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    once();
    let check = |text: &str| {
        let path = log.with_extension("check.jsonl");
        std::fs::write(&path, text).unwrap();
        let plain = verify(&path);
        let keyed = Run::from_output(
            ninewall(Who::Root)
                .args(["audit", "verify", "--key", &vk])
                .arg(&path)
                .output()
                .unwrap(),
        );
        (plain.code, keyed)
    };
    let original = std::fs::read_to_string(&log).unwrap();
    let (plain, keyed) = check(&original);
    assert_eq!(plain, 0);
    keyed.assert_code(0);
    assert!(keyed.stdout.contains("4 seals verified; sealed up to "), "{keyed:#?}");
    let lines: Vec<serde_json::Value> = original.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[1]["kind"], "seal");
    assert!(
        lines.last().unwrap()["epoch"].as_u64().unwrap() >= 2,
        "the key moved on"
    );

    // A record rewritten and the chain recomputed: the chain holds, a seal does not.
    let mut edited = lines.clone();
    edited[0]["mbu"] = "forged".into();
    let (plain, keyed) = check(&rechain(edited));
    assert_eq!(plain, 0, "a rechained log passes without the key");
    assert_eq!(keyed.code, 1, "{keyed:#?}");
    assert!(keyed.stderr.contains(":2: the seal does not match"), "{keyed:#?}");

    // A seal removed, and the chain recomputed.
    let mut without: Vec<serde_json::Value> = lines.clone();
    without.remove(1);
    let (_, keyed) = check(&rechain(without));
    assert_eq!(keyed.code, 1, "{keyed:#?}");

    // A seal of the first epoch forged with the key file as it is now.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.seal", log.display())).unwrap()).unwrap();
    let now_key: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&state["key"].as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect();
    let mut forged = lines.clone();
    forged[0]["mbu"] = "forged".into();
    let head = ninewall::provenance::sha256_hex(forged[0].to_string().as_bytes());
    forged[1]["hmac"] = ninewall::provenance::seal::hmac(&now_key, head.as_bytes()).into();
    let (_, keyed) = check(&rechain(forged));
    assert_eq!(keyed.code, 1, "{keyed:#?}");

    // The tail dropped after a seal: still verifies, sealed up to earlier.
    let (_, keyed) = check(&rechain(lines[..4].to_vec()));
    keyed.assert_code(0);
    assert!(keyed.stdout.contains("2 seals verified"), "{keyed:#?}");
}

/// Each seal's chain head goes to the system log as well (here a socket
/// the test reads, through NINEWALL_WITNESS): a log cut after a witnessed
/// seal no longer holds that head, and `audit verify --witness` says so.
#[test]
fn a_witness_of_the_seals_catches_a_cut_tail() {
    let who = identities()[0];
    let log = fresh_log("witnessed");
    let dir = log.parent().unwrap().to_path_buf();
    let sock_path = dir.join("witness.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    std::fs::set_permissions(&sock_path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    Run::from_output(ninewall(who).args(["audit", "setup-keys"]).arg(&log).output().unwrap()).assert_code(0);
    for _ in 0..2 {
        let out = ninewall(who)
            .env("NINEWALL_WITNESS", &sock_path)
            .args(["run", "--profile"])
            .arg(quiet_profile())
            .arg("--audit-log")
            .arg(&log)
            .args(["--", "-c", "pass"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut witnessed = String::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = sock.recv(&mut buf) {
        witnessed.push_str(&String::from_utf8_lossy(&buf[..n]));
        witnessed.push('\n');
    }
    assert_eq!(witnessed.matches("ninewall seal: ").count(), 4, "{witnessed}");
    let file = dir.join("syslog.txt");
    std::fs::write(&file, &witnessed).unwrap();
    let check = |log: &std::path::Path| {
        Run::from_output(
            ninewall(Who::Root)
                .args(["audit", "verify", "--witness"])
                .arg(&file)
                .arg(log)
                .output()
                .unwrap(),
        )
    };
    let whole = check(&log);
    whole.assert_code(0);
    assert!(whole.stdout.contains("all 4 witnessed heads in it"), "{whole:#?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let cut: Vec<&str> = text.lines().collect();
    let cut_log = dir.join("cut.jsonl");
    std::fs::write(&cut_log, cut[..cut.len() - 2].join("\n") + "\n").unwrap();
    verify(&cut_log).assert_code(0);
    let cut = check(&cut_log);
    cut.assert_code(1);
    assert!(cut.stderr.contains("witnessed head 4 of 4"), "{cut:#?}");
}

/// Five more path shapes, each recorded where the kernel went, checked
/// against the file that appeared on the host: a path relative to a
/// directory descriptor, a symlink in the middle, `..` past the root, a
/// cwd entered through a symlink and then `..`, and a create through a
/// dangling symlink (which makes the file the link points to).
#[test]
fn five_path_shapes_are_recorded_where_the_kernel_went() {
    for who in identities() {
        let log = fresh_log("shapes");
        let ws = scratch_dir("shapes-ws");
        let (uid, gid) = who.workspace_owner();
        std::os::unix::fs::chown(&ws, Some(uid), Some(gid)).unwrap();
        let code = "import os\n\
            os.mkdir('/work/d'); os.mkdir('/work/e')\n\
            os.symlink('/work/e', '/work/d/to_e')\n\
            fd = os.open('/work/d', os.O_RDONLY)\n\
            os.close(os.open('x1', os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n\
            open('/work/d/to_e/x2', 'w').close()\n\
            open('/../../work/x3', 'w').close()\n\
            os.chdir('/work/d/to_e'); open('../x4', 'w').close()\n\
            os.symlink('/work/e/x5', '/work/dangling'); open('/work/dangling', 'w').close()";
        let r = run(
            who,
            &profile("document_generation"),
            &[
                "--audit-log",
                log.to_str().unwrap(),
                "--workspace",
                ws.to_str().unwrap(),
            ],
            &["-c", code],
            None,
        );
        r.assert_code(0);
        // The files the opens made (os.symlink and os.mkdir make theirs too).
        let creates: Vec<String> = log_records(&log)
            .iter()
            .filter(|r| {
                r["kind"] == "file"
                    && r["access"] == "create"
                    && r["syscall"].as_str().is_some_and(|s| s.starts_with("open"))
            })
            .filter_map(|r| r["path"].as_str().map(str::to_string))
            .collect();
        for (made, on_host) in [
            ("/work/d/x1", "d/x1"),
            ("/work/e/x2", "e/x2"),
            ("/work/x3", "x3"),
            ("/work/x4", "x4"),
            ("/work/e/x5", "e/x5"),
        ] {
            assert!(ws.join(on_host).exists(), "{who:?}: the kernel made {on_host}");
            assert!(
                creates.iter().any(|c| c == made),
                "{who:?}: no create of {made}: {creates:#?}"
            );
        }
        for never in ["/work/d/to_e/x2", "/work/dangling", "/work/e/x4"] {
            assert!(
                !creates.iter().any(|c| c == never),
                "{who:?}: a create of {never}: {creates:#?}"
            );
        }
    }
}

/// Where a path cannot be known, the record says so: below a missing
/// directory there is nothing for the kernel to resolve; and the start
/// record says that a path is what the caller's memory held when read.
#[test]
fn a_record_says_where_its_path_cannot_be_known() {
    let who = identities()[0];
    let log = fresh_log("unknowable");
    let r = run(
        who,
        &profile("document_generation"),
        &["--audit-log", log.to_str().unwrap()],
        &[
            "-c",
            "open('/work/made.txt', 'w').write('x')\n\
             try:\n    open('/work/no/such/dir/f.txt', 'w')\nexcept FileNotFoundError:\n    print('ENOENT')",
        ],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "ENOENT");
    let recs = log_records(&log);
    let file = |path: &str| {
        recs.iter()
            .find(|v| v["kind"] == "file" && v["path"] == path)
            .unwrap_or_else(|| panic!("no record of {path}: {recs:#?}"))
            .clone()
    };
    let made = file("/work/made.txt");
    assert!(made.get("unresolved_after").is_none(), "{made}");
    let missing = file("/work/no/such/dir/f.txt");
    assert_eq!(missing["exists"], false);
    assert_eq!(missing["unresolved_after"], "/work", "{missing}");
    let shown = Run::from_output(ninewall(Who::Root).args(["audit", "show"]).arg(&log).output().unwrap());
    assert!(
        shown
            .stdout
            .contains("\"/work/no/such/dir/f.txt\" refused (openat, missing, nothing to resolve below \"/work\")")
            || shown
                .stdout
                .contains("\"/work/no/such/dir/f.txt\" allowed (openat, missing, nothing to resolve below \"/work\")"),
        "{}",
        shown.stdout
    );

    // What no check in the supervisor can know (a thread of the caller can
    // change the path after it is read) is said once, in the start record.
    let start = recs.iter().find(|v| v["kind"] == "exec.start").unwrap();
    assert_eq!(
        start["walls"]["seccomp"]["file_paths"],
        "read from the caller's memory before the call ran: another thread of the caller can change it after",
        "{start}"
    );
}

/// `kill -9` of the supervisor while it appends a flood of file records,
/// at ten different moments: each time the log is whole or its last line is
/// torn (and said to be), never anything else, and the next run repairs it
/// and chains on.
#[test]
fn a_supervisor_killed_while_appending_leaves_a_log_the_next_run_repairs() {
    let who = identities()[0];
    let log = fresh_log("kill-appending");
    let flood = "import os\nprint('ready', flush=True)\nfor i in range(10**6):\n    try:\n        os.stat('/work/%d' % i)\n    except OSError:\n        pass\n";
    for round in 0..10u64 {
        let mut cmd = ninewall(who);
        cmd.args(["run", "--audit-log", log.to_str().unwrap(), "--profile"])
            .arg(profile("document_generation"))
            .args(["--", "-c", flood]);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        std::thread::sleep(std::time::Duration::from_millis(20 + round * 37));
        child.kill().unwrap();
        child.wait().unwrap();
        let after_kill = verify(&log);
        assert!(
            after_kill.code == 0 || (after_kill.code == 1 && after_kill.stderr.contains("the last line is torn")),
            "round {round}: {after_kill:#?}"
        );
        run(
            who,
            &quiet_profile(),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", "pass"],
            None,
        )
        .assert_code(0);
        verify(&log).assert_code(0);
    }
    let recs = log_records(&log);
    let killed = recs
        .iter()
        .filter(|r| r["kind"] == "exec.start" && r["mbu"] == "document_generation")
        .count();
    assert_eq!(killed, 10);
    let file_records = recs.iter().filter(|r| r["kind"] == "file").count();
    assert!(
        file_records > 100,
        "the kills landed while records were appended: {file_records}"
    );
}

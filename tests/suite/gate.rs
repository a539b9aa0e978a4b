//! Wall 1 through the real binary: the role policy on the command line and in
//! the daemon (clients identified by the kernel), delegation that can only
//! narrow, and `ninewall diff`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// The unprivileged identity: the test user when running as root, else self.
fn agent() -> Who {
    identities()
        .into_iter()
        .find(|w| matches!(w, Who::User { .. }))
        .unwrap_or_else(|| panic!("no unprivileged identity"))
}

fn uid_of(who: Who) -> u32 {
    match who {
        Who::Root => 0,
        Who::User { uid, .. } => uid,
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    dir
}

/// A policy file whose profiles are the staged ones.
fn write_policy(name: &str, body: &str) -> PathBuf {
    let path = fresh_dir(name).join("policy.toml");
    let text = format!("profiles = {:?}\n{body}", stage().profiles.display().to_string());
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    path
}

/// The default three roles for the agent.
fn analyst_policy(name: &str, worker: Who) -> PathBuf {
    write_policy(
        name,
        &format!(
            "[roles.analyst]\nmbus = [\"knowledge\", \"reason\", \"document_generation\"]\n\
             [roles.coder]\nmbus = [\"code_generate_new\"]\n\
             [workers.agent]\nuser = \"{}\"\nroles = [\"analyst\"]\n",
            uid_of(worker)
        ),
    )
}

fn verify(log: &Path) {
    let out = Run::from_output(ninewall(Who::Root).args(["audit", "verify"]).arg(log).output().unwrap());
    assert_eq!(out.code, 0, "the log does not verify: {out:#?}");
}

fn start_of<'a>(recs: &'a [Value], exec: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["kind"] == "exec.start" && r["exec"] == exec)
        .unwrap_or_else(|| panic!("no exec.start for {exec}"))
}

// --- the policy file ------------------------------------------------------------

#[test]
fn a_bad_policy_is_refused_naming_file_line_and_key() {
    let path = write_policy(
        "bad-policy",
        "[roles.analyst]\nmbus = [\"reason\", \"no-such-mbu\", \"../etc/passwd\"]\n\
         [workers.a]\nuser = \"no-such-user-xyz\"\nroles = [\"analyst\", \"no-role\"]\n\
         [workers.b]\nroles = [\"analyst\"]\n\
         [workers.c]\ngroup = \"no-such-group-xyz\"\nroles = []\n\
         [warm]\nknowledge = 1\nreason = 17\n",
    );
    let out = Run::from_output(ninewall(Who::Root).arg("policy").arg(&path).output().unwrap());
    out.assert_code(2);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:3: roles.analyst.mbus[1] = \"no-such-mbu\": its profile does not load"),
        format!("{file}:3: roles.analyst.mbus[2] = \"../etc/passwd\": not an MBU name"),
        format!("{file}:5: workers.a.user = \"no-such-user-xyz\": no such user on this host"),
        format!("{file}:6: workers.a.roles[1] = \"no-role\": no such role; valid: one of [\"analyst\"]"),
        format!("{file}:7: workers.b: needs exactly one of user = \"NAME\" or group = \"NAME\""),
        format!("{file}:10: workers.c.group = \"no-such-group-xyz\": no such group on this host"),
        format!("{file}:13: warm.knowledge = \"knowledge\": no role grants this MBU; valid: one of [\"reason\"]"),
        format!("{file}:14: warm.reason: 17 is not a count of warm sandboxes; valid: 0 (every request builds its own) to 16"),
    ] {
        assert!(
            out.stderr.contains(&expected),
            "missing {expected:?} in:\n{}",
            out.stderr
        );
    }

    let unknown = write_policy("unknown-key", "[roles.analyst]\nmbus = []\nmembers = [\"x\"]\n");
    let out = Run::from_output(ninewall(Who::Root).arg("policy").arg(&unknown).output().unwrap());
    out.assert_code(2);
    assert!(
        out.stderr
            .contains(&format!("{}:4:1: unknown field `members`", unknown.display())),
        "{out:#?}"
    );
}

#[test]
fn the_shipped_policy_loads_and_says_who_may_run_what() {
    // scripts/test.sh names a readable copy for its unprivileged pass.
    let shipped = std::env::var_os("NINEWALL_TEST_POLICY").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.toml"),
        PathBuf::from,
    );
    // Staged beside the staged profiles so that an unprivileged pass can read it.
    let copy = stage().dir.join("policy.toml");
    std::fs::copy(&shipped, &copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = Run::from_output(ninewall(Who::Root).arg("policy").arg(&copy).output().unwrap());
    out.assert_code(0);
    assert!(
        out.stdout.contains(
            "worker       research-agent (uid 65534): roles analyst; may run document_generation knowledge reason"
        ),
        "{out:#?}"
    );
}

#[test]
fn workers_are_named_by_user_or_group_name_from_the_host_files() {
    // The ids the host's own files give, read here independently.
    let id_of = |file: &str, name: &str| -> u32 {
        let text = std::fs::read_to_string(file).unwrap();
        let line = text.lines().find(|l| l.split(':').next() == Some(name)).unwrap();
        line.split(':').nth(2).unwrap().parse().unwrap()
    };
    let path = write_policy(
        "named-workers",
        "[roles.analyst]\nmbus = [\"reason\"]\n\
         [workers.by-user]\nuser = \"root\"\nroles = [\"analyst\"]\n\
         [workers.by-group]\ngroup = \"nogroup\"\nroles = [\"analyst\"]\n",
    );
    let out = Run::from_output(ninewall(Who::Root).arg("policy").arg(&path).output().unwrap());
    out.assert_code(0);
    for line in [
        format!(
            "worker       by-user (uid {}): roles analyst",
            id_of("/etc/passwd", "root")
        ),
        format!(
            "worker       by-group (gid {}): roles analyst",
            id_of("/etc/group", "nogroup")
        ),
    ] {
        assert!(out.stdout.contains(&line), "{line:?} in {out:#?}");
    }
}

// --- the gate on the command line -------------------------------------------------

#[test]
fn run_with_a_policy_runs_what_the_roles_grant_and_nothing_else() {
    let who = agent();
    let policy = analyst_policy("cli-gate", who);
    let log = fresh_dir("cli-gate-log").join("audit.jsonl");
    let gate_run = |mbu: &str, extra: &[&str]| {
        let mut cmd = ninewall(who);
        cmd.arg("run")
            .arg("--policy")
            .arg(&policy)
            .arg("--mbu")
            .arg(mbu)
            .arg("--audit-log")
            .arg(&log)
            .args(extra)
            .args(["--", "-c", "print('ran')"]);
        Run::from_output(cmd.stdin(Stdio::null()).output().unwrap())
    };
    for mbu in ["reason", "knowledge", "document_generation"] {
        let out = gate_run(mbu, &[]);
        out.assert_code(0);
        assert_eq!(out.stdout, "ran\n", "{mbu}: {out:#?}");
    }
    for mbu in ["code_generate_new", "made-up-mbu", "../reason"] {
        let out = gate_run(mbu, &[]);
        out.assert_code(125);
        assert!(
            out.stderr
                .contains(&format!("wall 1 (policy gate): no such capability: {mbu}; nothing ran")),
            "{out:#?}"
        );
        assert!(out.stdout.is_empty());
    }
    // Naming another worker does not make this process that worker.
    let other = write_policy(
        "cli-gate-other",
        "[roles.coder]\nmbus = [\"code_generate_new\"]\n[workers.boss]\nuser = \"root\"\nroles = [\"coder\"]\n",
    );
    let mut cmd = ninewall(who);
    cmd.args(["run", "--policy"])
        .arg(&other)
        .args(["--mbu", "code_generate_new", "--worker", "boss", "--audit-log"])
        .arg(&log)
        .args(["--", "-c", "print('ran')"]);
    let out = Run::from_output(cmd.output().unwrap());
    out.assert_code(125);
    assert!(
        out.stderr.contains("worker boss: this process (uid ") && out.stderr.contains("is not that worker"),
        "{out:#?}"
    );
    // The granted runs say who and which role in their start records.
    let recs = log_records(&log);
    let starts: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "exec.start").collect();
    assert_eq!(starts.len(), 3, "{recs:#?}");
    for s in starts {
        assert_eq!(s["worker"]["name"], "agent");
        assert_eq!(s["role"], "analyst");
        assert_eq!(s["worker"]["client_uid"], uid_of(who));
    }
    verify(&log);
}

#[test]
fn a_profile_changed_after_the_gate_checked_it_does_not_run() {
    // The digest the gate checked travels with the request; the supervisor
    // compares it with the files it loads.
    let admission = ninewall::pipeline::Admission {
        profile: profile("reason"),
        lineage: ninewall::provenance::Lineage {
            expect_profile: Some("0000".into()),
            depth: 1,
            parent: Some("x".into()),
            ..Default::default()
        },
    };
    let err = ninewall::pipeline::load(&admission).unwrap_err();
    assert_eq!(err.exit_code(), 125);
    let text = err.to_string();
    assert!(
        text.contains("wall 1 (policy gate): ") && text.contains("changed after the gate checked it"),
        "{text}"
    );
}

/// Who asked (worker, role, parent) is taken only from ninewall itself: not
/// from argv (`--lineage` is gone), and not from a descriptor a caller
/// hands a `run` it started itself. Nothing runs, nothing is recorded.
#[test]
fn a_forged_lineage_is_refused_and_nothing_runs() {
    use std::os::fd::AsRawFd;
    let who = agent();
    let dir = fresh_dir("forged-lineage");
    let log = dir.join("audit.jsonl");
    let gone = run(
        who,
        &profile("reason"),
        &[
            "--audit-log",
            log.to_str().unwrap(),
            "--lineage",
            "{\"worker\": \"boss\"}",
        ],
        &["-c", "print('ran')"],
        None,
    );
    gone.assert_code(2);
    assert!(gone.stderr.contains("--lineage"), "{gone:#?}");
    let forged = dir.join("lineage.json");
    std::fs::write(
        &forged,
        json!({"worker": "boss", "role": "admin", "client_uid": 0}).to_string(),
    )
    .unwrap();
    let file = std::fs::File::open(&forged).unwrap();
    let fd = file.as_raw_fd();
    let mut cmd = ninewall(who);
    cmd.args(["run", "--profile"])
        .arg(profile("reason"))
        .arg("--audit-log")
        .arg(&log)
        .args(["--lineage-fd", "3", "--", "-c", "print('ran')"])
        .stdin(Stdio::null());
    on_fd3(&mut cmd, fd);
    let out = Run::from_output(cmd.output().unwrap());
    out.assert_code(2);
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.contains("taken only from ninewall itself"), "{out:#?}");
    let recorded = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!recorded.contains("exec.start"), "{recorded}");
}

/// The cgroup a daemon lends a supervisor (`run --cgroup`) is taken only
/// from ninewall itself: a caller who names one (another execution's, say)
/// is refused before anything is built, and nothing runs or is recorded.
#[test]
fn a_cgroup_named_by_anyone_but_the_daemon_is_refused_and_nothing_runs() {
    use std::os::fd::AsRawFd;
    let who = agent();
    let dir = fresh_dir("forged-cgroup");
    let log = dir.join("audit.jsonl");
    let outcome = std::fs::File::create(dir.join("outcome")).unwrap();
    let mut cmd = ninewall(who);
    cmd.args(["run", "--profile"])
        .arg(profile("reason"))
        .arg("--audit-log")
        .arg(&log)
        .args([
            "--outcome-fd",
            "3",
            "--cgroup",
            "ninewall-pool-1-1",
            "--",
            "-c",
            "print('ran')",
        ])
        .stdin(Stdio::null());
    on_fd3(&mut cmd, outcome.as_raw_fd());
    let out = Run::from_output(cmd.output().unwrap());
    out.assert_code(2);
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(
        out.stderr.contains("--cgroup") && out.stderr.contains("taken only from ninewall itself"),
        "{out:#?}"
    );
    let recorded = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!recorded.contains("exec.start"), "{recorded}");
}

/// A warm supervisor takes its request, and with it who asked, only from
/// ninewall itself: started by anyone else with a control socket and a
/// forged request already on it, it refuses before building anything, and
/// nothing runs or is recorded.
#[test]
fn a_forged_warm_request_is_refused_and_nothing_runs() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let who = agent();
    let dir = fresh_dir("forged-warm");
    let log = dir.join("audit.jsonl");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let (mut outcome_r, outcome_w) = std::io::pipe().unwrap();
    let request = json!({"args": ["-c", "print('ran')"], "workspace": null, "lineage": {"worker": "boss", "role": "admin", "client_uid": 0}});
    (&ours).write_all(format!("{request}\n").as_bytes()).unwrap();
    let (control, outcome) = (theirs.as_raw_fd(), outcome_w.as_raw_fd());
    let mut cmd = ninewall(who);
    cmd.args(["run", "--profile"])
        .arg(profile("reason"))
        .arg("--audit-log")
        .arg(&log)
        .args(["--warm-fd", "3", "--outcome-fd", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe and touches only the child's
    // descriptors (each target is above both sources' reach: 3 and 4 are
    // free in the child until these calls).
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(control, 30), (outcome, 31), (30, 3), (31, 4)] {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop((theirs, outcome_w));
    wait_until("the forged warm supervisor ends", || {
        child.try_wait().unwrap().is_some()
    });
    let out = Run::from_output(child.wait_with_output().unwrap());
    out.assert_code(2);
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.contains("taken only from ninewall itself"), "{out:#?}");
    let mut said = String::new();
    outcome_r.read_to_string(&mut said).unwrap();
    assert!(!said.contains("exec"), "{said}");
    let recorded = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!recorded.contains("exec.start"), "{recorded}");
}

// --- diff -----------------------------------------------------------------------

#[test]
fn diff_names_every_permission_a_has_that_b_lacks() {
    let narrow = write_profile(
        "diff-narrow",
        "extends = \"reason\"\n[mbu]\nname = \"diff-narrow\"\n[limits]\nmemory = \"64M\"\n",
    );
    let wide = write_profile(
        "diff-wide",
        "extends = \"reason\"\n[mbu]\nname = \"diff-wide\"\ndelegate = [\"reason\"]\n[fs]\nread = [\"/etc/hostname\"]\n\
         [net]\nmode = \"loopback\"\nconnect = [8080]\n[syscalls]\nallow = [\"@network-io\"]\n[limits]\nmemory = \"1G\"\n",
    );
    let diff = |a: &Path, b: &Path| Run::from_output(ninewall(Who::Root).arg("diff").arg(a).arg(b).output().unwrap());
    let out = diff(&narrow, &wide);
    out.assert_code(0);
    assert!(out.stdout.starts_with("diff-narrow ⊆ diff-wide"), "{out:#?}");
    let out = diff(&wide, &narrow);
    out.assert_code(1);
    for line in [
        "  fs.read: may read /etc/hostname",
        "  net.mode: loopback (an interface that is up) > none",
        "  net.connect: may connect to TCP port 8080",
        "  syscalls.allow: may call socket",
        "  syscalls.allow: may call connect",
        "  limits.memory: 1G > 64M",
        "  mbu.delegate: may delegate to reason",
    ] {
        assert!(out.stdout.contains(&format!("{line}\n")), "missing {line:?}: {out:#?}");
    }
    let out = diff(&wide, &wide);
    out.assert_code(0);
    let out = diff(&narrow, Path::new("/nonexistent.toml"));
    out.assert_code(2);
}

// --- delegation -------------------------------------------------------------------

/// Python that talks to the delegation socket: `ask(request)` -> answer.
const DELEGATE_PY: &str = r#"
import os, json, sys
fd = int(os.environ["NINEWALL_DELEGATE_FD"])
def ask(req):
    os.write(fd, (json.dumps(req) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            raise SystemExit("delegation socket closed")
        buf += chunk
    return json.loads(buf)
"#;

fn delegation_profiles() -> PathBuf {
    let quiet = "[provenance]\nfiles = \"none\"\n";
    write_profile(
        "dg-narrow",
        &format!("extends = \"reason\"\n[mbu]\nname = \"dg-narrow\"\n[limits]\nmemory = \"64M\"\n{quiet}"),
    );
    write_profile(
        "dg-wide",
        &format!(
            "extends = \"reason\"\n[mbu]\nname = \"dg-wide\"\n[fs]\nread = [\"/etc/hostname\"]\n[limits]\nmemory = \"1G\"\n{quiet}"
        ),
    );
    write_profile(
        "dg-middle",
        &format!(
            "extends = \"reason\"\n[mbu]\nname = \"dg-middle\"\ndelegate = [\"dg-narrow\", \"dg-wide\"]\n[limits]\nmemory = \"128M\"\n{quiet}"
        ),
    );
    write_profile(
        "dg-parent",
        &format!(
            "extends = \"reason\"\n[mbu]\nname = \"dg-parent\"\ndelegate = [\"dg-narrow\", \"dg-wide\", \"dg-middle\"]\n{quiet}"
        ),
    )
}

/// Runs `code` (after DELEGATE_PY) under `profile`; stdout lines as JSON.
fn delegating_run(who: Who, profile: &Path, log: &Path, code: &str) -> (Run, Vec<Value>) {
    let script = format!("{DELEGATE_PY}\n{code}");
    let out = run(
        who,
        profile,
        &["--audit-log", &log.display().to_string()],
        &["-c", &script],
        None,
    );
    out.assert_code(0);
    let answers = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out, answers)
}

#[test]
fn delegation_to_a_narrower_profile_runs_and_to_a_wider_one_is_refused_naming_the_excess() {
    let parent = delegation_profiles();
    for who in identities() {
        let log = fresh_dir("dg-log").join("audit.jsonl");
        let (_, a) = delegating_run(
            who,
            &parent,
            &log,
            r#"
for req in [
    {"mbu": "dg-narrow", "args": ["-c", "import sys; print(sys.stdin.read()[::-1])"], "stdin": "olleh"},
    {"mbu": "dg-wide", "args": ["-c", "print(open('/etc/hostname').read())"]},
    {"mbu": "code_generate_new"},
    {"mbu": "dg-narrow", "parent": "forged"},
    {"mbu": "dg-narrow", "workspace": "/"},
]:
    print(json.dumps(ask(req)))
"#,
        );
        assert_eq!(a[0]["ok"], true, "{a:#?}");
        assert_eq!(a[0]["stdout"], "hello\n");
        assert_eq!(a[0]["exit_code"], 0);
        assert_eq!(
            a[1]["error"],
            "refused: dg-wide is not a subset of dg-parent; it would gain: fs.read: may read /etc/hostname; limits.memory: 1G > 256M",
            "{who:?}"
        );
        assert!(a[1].get("stdout").is_none(), "nothing ran: {a:#?}");
        assert_eq!(a[2]["error"], "no such capability: code_generate_new");
        assert!(
            a[3]["error"].as_str().unwrap().contains("unknown field `parent`"),
            "{a:#?}"
        );
        assert_eq!(
            a[4]["error"],
            "workspace: a delegated execution gets a fresh workspace of its own"
        );

        // Provenance links the child to its parent, and records the refusals.
        let recs = log_records(&log);
        let child = a[0]["exec"].as_str().unwrap();
        let start = start_of(&recs, child);
        let parent_exec = start["parent"].as_str().unwrap();
        assert_eq!(start["mbu"], "dg-narrow");
        assert_eq!(start["depth"], 1);
        assert_eq!(start_of(&recs, parent_exec)["mbu"], "dg-parent");
        let refused: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "delegate.refused").collect();
        assert_eq!(refused.len(), 2, "{refused:#?}");
        assert!(refused.iter().all(|r| r["exec"] == parent_exec));
        assert_eq!(refused[0]["mbu"], "dg-wide");
        assert_eq!(
            recs.iter().filter(|r| r["kind"] == "exec.start").count(),
            2,
            "only the parent and the narrow child ran"
        );
        verify(&log);
    }
}

#[test]
fn grandchildren_are_held_to_their_parent_not_to_the_grandparent() {
    let parent = delegation_profiles();
    let who = agent();
    let log = fresh_dir("dg-grand-log").join("audit.jsonl");
    // dg-middle (128M) asks for dg-narrow (64M: a subset) and dg-wide (1G:
    // more than dg-middle and more than dg-parent).
    let inner = format!(
        "{DELEGATE_PY}\nfor m in ['dg-narrow', 'dg-wide']:\n    print(json.dumps(ask({{'mbu': m, 'args': ['-c', 'print(7)']}})))\n"
    );
    let code = format!(
        "a = ask({{'mbu': 'dg-middle', 'args': ['-c', {inner:?}]}})\nprint(json.dumps(a))\nfor l in a['stdout'].splitlines():\n    print(l)\n"
    );
    let (_, a) = delegating_run(who, &parent, &log, &code);
    assert_eq!(a[0]["ok"], true, "{a:#?}");
    assert_eq!(a[1]["ok"], true, "{a:#?}");
    assert_eq!(a[1]["stdout"], "7\n");
    assert_eq!(
        a[2]["error"],
        "refused: dg-wide is not a subset of dg-middle; it would gain: fs.read: may read /etc/hostname; limits.memory: 1G > 128M"
    );
    let recs = log_records(&log);
    let middle = a[0]["exec"].as_str().unwrap();
    let grandchild = start_of(&recs, a[1]["exec"].as_str().unwrap());
    assert_eq!(grandchild["parent"], middle);
    assert_eq!(grandchild["depth"], 2);
    verify(&log);
}

#[test]
fn a_chain_of_delegations_stops_at_the_depth_limit() {
    write_profile(
        "dg-loop",
        "extends = \"reason\"\n[mbu]\nname = \"dg-loop\"\ndelegate = [\"dg-loop\"]\n[provenance]\nfiles = \"none\"\n",
    );
    let who = agent();
    let log = fresh_dir("dg-loop-log").join("audit.jsonl");
    // Each level asks for itself again and prints what the level below said.
    let body = "a = ask({'mbu': 'dg-loop', 'args': ['-c', sys.argv[1], sys.argv[1]]})\nprint(a['stdout'].strip() if a['ok'] else a['error'])\n";
    let script = format!("{DELEGATE_PY}\n{body}");
    let out = run(
        who,
        &stage().profiles.join("dg-loop.toml"),
        &["--audit-log", &log.display().to_string()],
        &["-c", &script, &script],
        None,
    );
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), "delegation deeper than 8 levels", "{out:#?}");
    let starts = log_records(&log)
        .into_iter()
        .filter(|r| r["kind"] == "exec.start")
        .count();
    assert_eq!(starts, 9, "the top and eight delegated levels");
    verify(&log);
}

// --- the daemon -------------------------------------------------------------------

struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    /// Its stderr, read as it comes (a line per request: unread, the pipe
    /// would fill and stop the daemon).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Daemon {
    /// `ninewall serve` as root when the tests are root, else as ourselves.
    fn start(policy: &Path, extra: &[&str]) -> Daemon {
        // Only the daemon's user may write here: the daemon refuses a socket
        // where another user could have put one.
        let dir = scratch_dir("daemon");
        let socket = dir.join("ninewall.sock");
        let log = dir.join("audit.jsonl");
        let who = if identities().contains(&Who::Root) {
            Who::Root
        } else {
            agent()
        };
        let mut child = ninewall(who)
            .arg("serve")
            .arg("--policy")
            .arg(policy)
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-log")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
            text
        });
        wait_until("the daemon listens", || socket.exists());
        Daemon {
            child: Some(child),
            socket,
            log,
            stderr: Some(stderr),
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| i32::try_from(c.id()).unwrap())
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// SIGTERM, then wait; returns the daemon's exit code and stderr.
    fn stop(&mut self) -> Run {
        let child = self.child.take().unwrap();
        // SAFETY: kill with a pid we started.
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
        let mut out = child.wait_with_output().unwrap();
        if let Some(t) = self.stderr.take() {
            out.stderr = t.join().unwrap().into_bytes();
        }
        Run::from_output(out)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Makes `fd` the child's descriptor 3, inheritable (as socket activation
/// passes a socket, and a parent its pipes).
fn on_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: dup2 and fcntl are async-signal-safe, and touch only the
    // child's descriptors.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            match r {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
}

/// A client process as `who`: sends `input` (raw bytes), prints every answer
/// line; `hold` keeps the connection open that many seconds after sending.
const CLIENT_PY: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
data = sys.stdin.buffer.read()
trickle = float(sys.argv[3]) if len(sys.argv) > 3 else 0
try:
    if trickle:
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(trickle)
    else:
        s.sendall(data)
    time.sleep(float(sys.argv[2]))
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass  # the daemon ended this connection; its answer is still to be read
f = s.makefile("rb")
for line in f:
    sys.stdout.write(line.decode())
"#;

fn client_cmd(who: Who, socket: &Path, hold: f64) -> Command {
    trickling_client(who, socket, hold, 0.0)
}

/// A client that sends one byte every `trickle` seconds.
fn trickling_client(who: Who, socket: &Path, hold: f64, trickle: f64) -> Command {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-I", "-S", "-c", CLIENT_PY])
        .arg(socket)
        .arg(hold.to_string())
        .arg(trickle.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Who::User { uid, gid } = who {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A client that has sent one request and waits for its answer.
fn client_sending(who: Who, socket: &Path, req: &Value) -> Child {
    let mut client = client_cmd(who, socket, 0.0).spawn().unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(format!("{req}\n").as_bytes()).unwrap();
    client
}

/// Whether an MBU whose command line has `marker` runs: a process with it
/// that is not ninewall's own (a cold supervisor has the request's
/// arguments in its argv too, and its sandbox's processes are its copies).
fn mbu_runs(marker: &str) -> bool {
    host_processes_with(marker)
        .into_iter()
        .any(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.starts_with(b"/proc/self/exe\0")))
}

/// Polls `done` every 20 ms, failing after 20 s with what was awaited.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ask_raw(who: Who, socket: &Path, input: &[u8], hold: f64) -> Vec<Value> {
    answers(client_cmd(who, socket, hold), input)
}

fn answers(mut cmd: Command, input: &[u8]) -> Vec<Value> {
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {l}")))
        .collect()
}

fn ask(who: Who, socket: &Path, requests: &[Value]) -> Vec<Value> {
    let mut input = Vec::new();
    for r in requests {
        input.extend_from_slice(r.to_string().as_bytes());
        input.push(b'\n');
    }
    ask_raw(who, socket, &input, 0.0)
}

#[test]
fn the_daemon_runs_what_a_workers_roles_grant_and_nothing_else() {
    let who = agent();
    let policy = analyst_policy("daemon-gate", who);
    let mut d = Daemon::start(&policy, &[]);
    let a = ask(
        who,
        &d.socket,
        &[
            json!({"mbu": "reason", "args": ["-c", "import sys; print(sum(map(int, sys.stdin.read().split())))"], "stdin": "1 2 3"}),
            json!({"mbu": "knowledge", "args": ["-c", "print('k')"]}),
            json!({"mbu": "document_generation", "args": ["-c", "print('d')"]}),
            json!({"mbu": "code_generate_new", "args": ["-c", "print('should not run')"]}),
            json!({"mbu": "made-up", "args": []}),
            json!({"mbu": "reason", "args": ["-c", "import sys; sys.exit(3)"]}),
            json!({"mbu": "reason", "workspace": "/etc"}),
        ],
    );
    assert_eq!(a.len(), 7, "{a:#?}");
    assert_eq!(a[0]["ok"], true, "{a:#?}");
    assert_eq!(a[0]["stdout"], "6\n");
    assert_eq!(a[1]["stdout"], "k\n");
    assert_eq!(a[2]["stdout"], "d\n");
    assert_eq!(
        a[3],
        json!({"ok": false, "error": "no such capability: code_generate_new"})
    );
    assert_eq!(a[4], json!({"ok": false, "error": "no such capability: made-up"}));
    assert_eq!(a[5]["exit_code"], 3);
    assert_eq!(
        a[6]["error"], "workspace: /etc: not a directory of yours that you can open",
        "{a:#?}"
    );

    // A forged worker name is not part of a request: refused, nothing ran.
    let forged = ask(
        who,
        &d.socket,
        &[json!({"mbu": "code_generate_new", "worker": "root", "args": ["-c", "print(1)"]})],
    );
    assert!(
        forged[0]["error"].as_str().unwrap().contains("unknown field `worker`"),
        "{forged:#?}"
    );

    let stopped = d.stop();
    assert_eq!(stopped.code, 0, "{stopped:#?}");
    // One line per request on stderr (the journal, under systemd).
    let lines = |what: &str| stopped.stderr.lines().filter(|l| l.contains(what)).count();
    assert_eq!(lines("INFO ninewall::gate::serve: ran uid="), 4, "{}", stopped.stderr);
    assert_eq!(
        lines("INFO ninewall::gate::serve: refused uid="),
        3,
        "{}",
        stopped.stderr
    );
    assert_eq!(lines("mbu=made-up"), 1, "{}", stopped.stderr);
    let recs = log_records(&d.log);
    let starts: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "exec.start").collect();
    assert_eq!(starts.len(), 4, "reason, knowledge, document_generation, reason");
    for s in &starts {
        assert_eq!(s["worker"]["name"], "agent");
        assert_eq!(s["worker"]["client_uid"], uid_of(who));
        assert_eq!(s["role"], "analyst");
    }
    let refused: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "gate.refused").collect();
    assert_eq!(refused.len(), 3, "{refused:#?}");
    assert_eq!(refused[0]["mbu"], "code_generate_new");
    assert_eq!(refused[0]["client"]["uid"], uid_of(who));
    verify(&d.log);
    let shown = Run::from_output(
        ninewall(Who::Root)
            .args(["audit", "show"])
            .arg(&d.log)
            .output()
            .unwrap(),
    );
    shown.assert_code(0);
    assert!(shown.stdout.contains("refused by the policy gate\n"), "{shown:#?}");
    assert!(
        shown.stdout.contains(&format!(
            "refused  uid {} (worker agent) asked for \"made-up\": no such capability: made-up",
            uid_of(who)
        )),
        "{shown:#?}"
    );
    assert!(shown.stdout.contains("gate     worker agent (client uid"), "{shown:#?}");
}

#[test]
fn a_client_that_is_no_worker_is_refused_and_recorded() {
    let who = agent();
    // The only worker is root; the agent connects.
    let policy = write_policy(
        "daemon-stranger",
        "[roles.analyst]\nmbus = [\"reason\"]\n[workers.boss]\nuser = \"root\"\nroles = [\"analyst\"]\n",
    );
    let mut d = Daemon::start(&policy, &[]);
    let a = ask(who, &d.socket, &[json!({"mbu": "reason", "args": ["-c", "print(1)"]})]);
    let uid = uid_of(who);
    assert_eq!(
        a[0]["error"].as_str().unwrap(),
        format!(
            "not a worker: uid {uid} gid {} is not named in the policy",
            who.workspace_owner().1
        )
    );
    d.stop();
    let recs = log_records(&d.log);
    assert!(recs.iter().all(|r| r["kind"] != "exec.start"), "nothing ran");
    assert_eq!(recs.iter().filter(|r| r["kind"] == "gate.refused").count(), 1);
    verify(&d.log);
}

#[test]
fn bad_requests_are_refused_while_a_good_client_is_served() {
    let who = agent();
    let policy = analyst_policy("daemon-bad", who);
    let d = Daemon::start(&policy, &["--request-timeout", "2"]);
    let good = json!({"mbu": "reason", "args": ["-c", "print('good')"]});
    std::thread::scope(|s| {
        // Half a line, then silence for longer than the request timeout.
        let slow = s.spawn(|| ask_raw(who, &d.socket, b"{\"mbu\": \"rea", 4.0));
        // A line that trickles in a byte at a time, each in time for a
        // per-read timeout but never whole within the request timeout.
        let trickle = s.spawn(|| answers(trickling_client(who, &d.socket, 0.0, 0.5), b"{\"mbu\": \"reason\"}\n"));
        // Half a line, and then the client hangs up.
        let cut = s.spawn(|| ask_raw(who, &d.socket, b"{\"mbu\": \"rea", 0.0));
        // Ten megabytes without a newline.
        let huge = s.spawn(|| {
            let mut line = vec![b'x'; 10 << 20];
            line.push(b'\n');
            ask_raw(who, &d.socket, &line, 0.0)
        });
        let mixed = s.spawn(|| {
            ask_raw(
                who,
                &d.socket,
                format!("not json\n{{\"mbu\": \"reason\", \"argv\": []}}\n{{\"mbu\": 7}}\n{good}\n").as_bytes(),
                0.0,
            )
        });
        // Meanwhile a good client is answered.
        for _ in 0..3 {
            let a = ask(who, &d.socket, std::slice::from_ref(&good));
            assert_eq!(a[0]["stdout"], "good\n", "{a:#?}");
        }
        for (client, error) in [
            (slow, "request incomplete after 2 s"),
            (trickle, "request incomplete after 2 s"),
            (cut, "request incomplete: the connection ended within a line"),
            (huge, "request longer than 1048576 bytes"),
        ] {
            assert_eq!(client.join().unwrap(), vec![json!({"ok": false, "error": error})]);
        }
        // A line that is not a request ends its connection, answered once:
        // what followed it on that connection is never read.
        let mixed = mixed.join().unwrap();
        assert_eq!(mixed.len(), 1, "{mixed:#?}");
        assert!(
            mixed[0]["error"]
                .as_str()
                .unwrap()
                .starts_with("not a request: expected"),
            "{mixed:#?}"
        );
        for (line, error) in [
            ("{\"mbu\": \"reason\", \"argv\": []}", "unknown field `argv`"),
            ("{\"mbu\": 7}", "invalid type"),
        ] {
            let a = ask_raw(who, &d.socket, format!("{line}\n{good}\n").as_bytes(), 0.0);
            assert_eq!(a.len(), 1, "{a:#?}");
            assert!(a[0]["error"].as_str().unwrap().contains(error), "{a:#?}");
        }
    });
}

#[test]
fn eight_clients_times_fifty_requests_are_all_answered_with_flat_memory() {
    let who = agent();
    let policy = analyst_policy("daemon-load", who);
    let mut d = Daemon::start(&policy, &[]);
    let round = |n: usize| {
        std::thread::scope(|s| {
            let clients: Vec<_> = (0..8)
                .map(|c| {
                    let socket = d.socket.clone();
                    s.spawn(move || {
                        let reqs: Vec<Value> = (0..n)
                            .map(|i| json!({"mbu": "reason", "args": ["-c", format!("print({c} * 1000 + {i})")]}))
                            .collect();
                        let answers = ask(who, &socket, &reqs);
                        assert_eq!(answers.len(), n);
                        for (i, a) in answers.iter().enumerate() {
                            assert_eq!(
                                a["stdout"],
                                format!("{}\n", c * 1000 + i),
                                "client {c} request {i}: {a:#?}"
                            );
                        }
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
        });
    };
    round(5);
    let early = d.rss_kib();
    round(50);
    let late = d.rss_kib();
    eprintln!("daemon RSS: {early} KiB after 40 executions, {late} KiB after 440");
    let stopped = d.stop();
    assert_eq!(stopped.code, 0, "{stopped:#?}");
    // Flat: the 400 later executions left no more than 10% (and 1 MiB of
    // allocator slack) behind.
    assert!(
        late <= early + early / 10 + 1024,
        "daemon RSS grew from {early} KiB to {late} KiB over 400 executions"
    );
    let starts = log_records(&d.log)
        .into_iter()
        .filter(|r| r["kind"] == "exec.start")
        .count();
    assert_eq!(starts, 8 * 55);
    verify(&d.log);
}

#[test]
fn a_supervisor_whose_requester_is_gone_runs_nothing() {
    // The outcome pipe's read end is closed before the supervisor starts:
    // whoever asked will never read the answer.
    let mut fds = [0; 2];
    // SAFETY: a two-int array for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let [read_end, write_end] = fds;
    // SAFETY: closing our own read end; clearing close-on-exec on our write end.
    unsafe {
        libc::close(read_end);
        assert_eq!(libc::fcntl(write_end, libc::F_SETFD, 0), 0);
    }
    let log = fresh_dir("requester-gone").join("audit.jsonl");
    let out = Run::from_output(
        ninewall(Who::Root)
            .args(["run", "--profile"])
            .arg(profile("reason"))
            .args([
                "--audit-log",
                log.to_str().unwrap(),
                "--outcome-fd",
                &write_end.to_string(),
            ])
            .args(["--", "-c", "print('ran')"])
            .output()
            .unwrap(),
    );
    // SAFETY: our write end, no longer needed.
    unsafe { libc::close(write_end) };
    out.assert_code(125);
    assert!(out.stderr.contains("the requester is gone; nothing ran"), "{out:#?}");
    assert!(!out.stdout.contains("ran"), "{out:#?}");
    assert!(log_records(&log).iter().all(|r| r["kind"] != "exec.start"), "{out:#?}");
}

#[test]
fn a_daemon_killed_mid_execution_takes_its_executions_down_and_leaves_a_log_that_verifies() {
    let who = agent();
    let policy = analyst_policy("daemon-kill9", who);
    let mut d = Daemon::start(&policy, &[]);
    let marker = format!("kill9-marker-{}", unique());
    let req = json!({"mbu": "reason", "args": ["-c", format!("import time; time.sleep(60)  # {marker}")]});
    let mut client = client_sending(who, &d.socket, &req);
    // The MBU itself (a cold supervisor has the marker in its argv too) and
    // the start record: a supervisor whose requester is gone before it
    // starts runs nothing and records nothing.
    wait_until("the execution starts", || {
        mbu_runs(&marker) && log_records_so_far(&d.log).iter().any(|r| r["kind"] == "exec.start")
    });
    let mut daemon = d.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // Its supervisors get SIGTERM, end their sandboxes and record the end.
    wait_until("the execution ends with its daemon", || {
        host_processes_with(&marker).is_empty() && log_records_so_far(&d.log).iter().any(|r| r["kind"] == "exec.end")
    });
    let _ = client.wait();
    verify(&d.log);
}

#[test]
fn sigterm_drains_running_executions_and_kills_them_past_the_grace_period() {
    let who = agent();
    let policy = analyst_policy("daemon-drain", who);
    for (grace, sleep, finished) in [("10", "1", true), ("1", "30", false)] {
        let mut d = Daemon::start(&policy, &["--grace", grace]);
        let req = json!({"mbu": "reason", "args": ["-c", format!("import time; time.sleep({sleep}); print('done')")]});
        let client = client_sending(who, &d.socket, &req);
        // Wait until the execution has started, then ask the daemon to stop.
        wait_until("the execution starts", || {
            log_records_so_far(&d.log).iter().any(|r| r["kind"] == "exec.start")
        });
        let stopped = d.stop();
        assert_eq!(stopped.code, 0, "{stopped:#?}");
        let out = client.wait_with_output().unwrap();
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        if finished {
            assert_eq!(answer["stdout"], "done\n", "{answer:#?}");
            assert_eq!(answer["exit_code"], 0);
        } else {
            assert_ne!(answer["exit_code"], 0, "{answer:#?}");
            assert!(
                stopped.stderr.contains("grace period over: ending 1 executions"),
                "{stopped:#?}"
            );
        }
        let recs = log_records(&d.log);
        assert_eq!(recs.iter().filter(|r| r["kind"] == "exec.end").count(), 1, "{recs:#?}");
        verify(&d.log);
        assert!(!d.socket.exists(), "the socket is removed");
    }
}

/// The workspace race: while a client's requests name its own directory, that
/// path is swapped again and again (`renameat2(RENAME_EXCHANGE)`) with a
/// symlink to a directory only root can open. The daemon opens the path once,
/// as the client, following no symlink, and the supervisor binds that
/// descriptor: no request may ever see the other directory.
#[test]
fn a_workspace_swapped_for_a_symlink_while_requests_run_never_binds_what_the_client_cannot_open() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    if !identities().contains(&Who::Root) {
        return;
    }
    let who = agent();
    let Who::User { uid, gid } = who else { return };
    let victim = fresh_dir("race-victim");
    std::fs::write(victim.join("secret.txt"), "root's secret").unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let base = fresh_dir("race-base");
    let ws = base.join("ws");
    let link = base.join("link");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for p in [&base, &ws] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    let policy = analyst_policy("daemon-race", who);
    let mut d = Daemon::start(&policy, &[]);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swaps = std::sync::Arc::new(AtomicU64::new(0));
    let racer = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let a = std::ffi::CString::new(ws.to_str().unwrap()).unwrap();
        let b = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: two NUL-terminated paths; renameat2 touches nothing else.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "RENAME_EXCHANGE: {}", std::io::Error::last_os_error());
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let code = "import os\nfor n in os.listdir('/work'):\n    print(n, open('/work/' + n).read())\nprint('listed')";
    let requests: Vec<Value> = (0..60)
        .map(|_| json!({"mbu": "reason", "workspace": ws, "args": ["-c", code]}))
        .collect();
    let answers = ask(who, &d.socket, &requests);
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    d.stop();
    assert_eq!(answers.len(), 60, "{answers:#?}");
    assert!(swaps.load(Ordering::Relaxed) > 1000, "the racer barely ran");
    let mut ran = 0;
    for a in &answers {
        let text = a.to_string();
        assert!(!text.contains("root's secret") && !text.contains("secret.txt"), "{a:#}");
        if a["stdout"] == "listed\n" {
            ran += 1;
        } else {
            assert!(
                a["ok"] == false || a["exit_code"] != 0,
                "neither ran nor refused: {a:#}"
            );
        }
    }
    eprintln!(
        "{ran} of 60 requests ran in the client's own directory, {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    let left: Vec<_> = std::fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("secret.txt")],
        "the victim directory changed"
    );
}

/// A workspace the client may not use gets one answer whatever it is:
/// missing, someone else's, not a directory, or below a directory the
/// client may not search (even when that one is the client's own: nothing
/// the client could not open itself is bound). Nothing runs.
#[test]
fn a_workspace_the_client_may_not_use_gets_one_answer_whatever_it_is() {
    if !identities().contains(&Who::Root) {
        return;
    }
    let who = agent();
    let Who::User { uid, gid } = who else { return };
    let private = fresh_dir("ws-private");
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let inner = private.join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::os::unix::fs::chown(&inner, Some(uid), Some(gid)).unwrap();
    let open = fresh_dir("ws-open");
    let foreign = open.join("roots");
    std::fs::create_dir(&foreign).unwrap();
    let file = open.join("file");
    std::fs::write(&file, "x").unwrap();
    std::os::unix::fs::chown(&file, Some(uid), Some(gid)).unwrap();
    let cases = [
        inner.clone(),
        private.join("missing"),
        open.join("missing"),
        foreign,
        file,
    ];
    let policy = analyst_policy("daemon-ws-private", who);
    let mut d = Daemon::start(&policy, &[]);
    let code = "open('/work/ran', 'w').write('x')";
    let mut requests: Vec<Value> = cases
        .iter()
        .map(|ws| json!({"mbu": "reason", "workspace": ws, "args": ["-c", code]}))
        .collect();
    requests.push(json!({"mbu": "reason", "workspace": "relative/dir", "args": ["-c", code]}));
    let a = ask(who, &d.socket, &requests);
    d.stop();
    assert_eq!(a.len(), cases.len() + 1, "{a:#?}");
    for (answer, path) in a.iter().zip(&cases) {
        assert_eq!(
            answer["error"]
                .as_str()
                .unwrap()
                .replace(path.to_str().unwrap(), "PATH"),
            "workspace: PATH: not a directory of yours that you can open",
            "{path:?}: {answer:#}"
        );
    }
    assert!(
        a[cases.len()]["error"]
            .as_str()
            .unwrap()
            .contains("name it by its absolute path"),
        "{a:#?}"
    );
    assert!(!inner.join("ran").exists());
    let recs = log_records(&d.log);
    assert!(recs.iter().all(|r| r["kind"] != "exec.start"), "nothing ran");
    assert_eq!(
        recs.iter().filter(|r| r["kind"] == "gate.refused").count(),
        cases.len() + 1
    );
}

/// Through the daemon as through `run`: a client's mode-0700 directory works
/// as its workspace, and what the sandbox makes there is the client's.
#[test]
fn a_clients_private_workspace_works_through_the_daemon_and_stays_the_clients() {
    use std::os::unix::fs::MetadataExt;
    if !identities().contains(&Who::Root) {
        return;
    }
    let who = agent();
    let Who::User { uid, gid } = who else { return };
    let ws = fresh_dir("ws-own").join("mine");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&ws, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let policy = analyst_policy("daemon-ws-own", who);
    let mut d = Daemon::start(&policy, &[]);
    let a = ask(
        who,
        &d.socket,
        &[
            json!({"mbu": "document_generation", "workspace": ws, "args": ["-c", "open('/work/made.txt', 'w').write('made'); print('ok')"]}),
        ],
    );
    d.stop();
    assert_eq!(a[0]["stdout"], "ok\n", "{a:#?}");
    let made = ws.join("made.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "made");
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owned by the client on the host");
    let recs = log_records(&d.log);
    let start = recs.iter().find(|r| r["kind"] == "exec.start").unwrap();
    assert!(start.to_string().contains(ws.to_str().unwrap()), "{start:#}");
}

/// Holds `n` connections to `socket` as `who` and prints, for each, the
/// first line the daemon said within a moment ("-" for nothing), then waits
/// for its stdin to close.
const HOARDER_PY: &str = r#"
import socket, sys
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    conns.append(s)
for s in conns:
    s.settimeout(0.2)
    try:
        print(s.recv(4096).decode().strip() or "-")
    except socket.timeout:
        print("-")
sys.stdout.flush()
sys.stdin.read()
"#;

/// 200 idle connections from one uid take only that uid's share of the
/// daemon: the rest are answered "busy" and closed at once, and another
/// worker is served meanwhile.
#[test]
fn two_hundred_idle_connections_from_one_uid_do_not_stop_another_worker() {
    if !identities().contains(&Who::Root) {
        return;
    }
    let hoarder_who = agent();
    let policy = write_policy(
        "daemon-hoard",
        &format!(
            "[roles.analyst]\nmbus = [\"reason\"]\n[workers.agent]\nuser = \"{}\"\nroles = [\"analyst\"]\n\
             [workers.boss]\nuser = \"root\"\nroles = [\"analyst\"]\n",
            uid_of(hoarder_who)
        ),
    );
    let mut d = Daemon::start(&policy, &["--max-clients-per-uid", "4", "--request-timeout", "30"]);
    let mut hoarder = Command::new("/usr/bin/python3");
    hoarder
        .args(["-I", "-S", "-c", HOARDER_PY])
        .arg(&d.socket)
        .arg("200")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Who::User { uid, gid } = hoarder_who {
        hoarder.uid(uid).gid(gid);
    }
    let mut hoarder = hoarder.spawn().unwrap();
    let mut lines = std::io::BufReader::new(hoarder.stdout.take().unwrap());
    let mut said = Vec::new();
    for _ in 0..200 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        said.push(line.trim().to_string());
    }
    let idle = said.iter().filter(|l| *l == "-").count();
    let busy = said
        .iter()
        .filter(|l| l.contains("already has 4 connections open (--max-clients-per-uid)"))
        .count();
    assert_eq!((idle, busy), (4, 196), "{said:?}");
    // Meanwhile, another worker.
    let a = ask(
        Who::Root,
        &d.socket,
        &[json!({"mbu": "reason", "args": ["-c", "print('served')"]})],
    );
    assert_eq!(a[0]["stdout"], "served\n", "{a:#?}");
    drop(hoarder.stdin.take());
    hoarder.wait().unwrap();
    d.stop();
}

/// A listener of `who` at `path`: prints "listening", then, when its stdin
/// closes, how many connections it accepted.
const SQUATTER_PY: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(16)
s.setblocking(False)
print("listening", flush=True)
sys.stdin.read()
n = 0
while True:
    try:
        s.accept()
        n += 1
    except BlockingIOError:
        break
print(n)
"#;

/// No socket where another user could have put one first: a directory
/// others can write is refused (unless --socket-in-shared-dir), a socket
/// someone else made is never used (nor connected to), and without
/// XDG_RUNTIME_DIR an unprivileged daemon has no default to guess.
#[test]
fn the_daemon_refuses_a_socket_another_user_could_have_taken() {
    let who = agent();
    let policy = analyst_policy("daemon-squat", who);
    let daemon_who = if identities().contains(&Who::Root) {
        Who::Root
    } else {
        who
    };
    let shared = fresh_dir("squat");
    let serve = |socket: &Path, extra: &[&str]| {
        let out = ninewall(daemon_who)
            .arg("serve")
            .arg("--policy")
            .arg(&policy)
            .arg("--socket")
            .arg(socket)
            .args(["--audit-log", shared.join("audit.jsonl").to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run::from_output(out)
    };
    let r = serve(&shared.join("d.sock"), &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("can be written by others"), "{r:#?}");
    assert!(r.stderr.contains("--socket-in-shared-dir"), "{r:#?}");
    assert!(!shared.join("d.sock").exists());

    if daemon_who == Who::Root {
        // Another user's listener already there: not used, never connected to.
        let path = shared.join("taken.sock");
        let mut squatter = Command::new("/usr/bin/python3");
        squatter
            .args(["-I", "-S", "-c", SQUATTER_PY])
            .arg(&path)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Who::User { uid, gid } = who {
            squatter.uid(uid).gid(gid);
        }
        let mut squatter = squatter.spawn().unwrap();
        let mut out = std::io::BufReader::new(squatter.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        let r = serve(&path, &["--socket-in-shared-dir"]);
        assert_ne!(r.code, 0);
        assert!(
            r.stderr
                .contains(&format!("belongs to uid {}, not to this daemon", uid_of(who))),
            "{r:#?}"
        );
        drop(squatter.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        squatter.wait().unwrap();
        assert_eq!(rest.trim(), "0", "the daemon connected to the squatter");
    }

    // Unprivileged, no XDG_RUNTIME_DIR, no --socket: no guess.
    let r = Run::from_output(
        ninewall(who)
            .args(["serve", "--policy"])
            .arg(&policy)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("XDG_RUNTIME_DIR is not set"), "{r:#?}");
}

/// A protocol-2 client: sends one request line, then, by its mode,
/// - `read`: reads the first line, the frames and the end line, and prints
///   them as one JSON object (the streams hex-encoded);
/// - `stall`: prints "sent" and reads nothing until its stdin closes;
/// - `hangup`: reads the first line, prints it and closes the connection.
const V2_CLIENT_PY: &str = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
mode = sys.argv[2]
s.sendall(sys.stdin.buffer.readline())
if mode == "stall":
    print("sent", flush=True)
    sys.stdin.read()
    sys.exit(0)
f = s.makefile("rb")
first = json.loads(f.readline())
if mode == "hangup" or not first.get("ok"):
    print(json.dumps({"first": first}), flush=True)
    s.close()
    sys.stdin.read()
    sys.exit(0)
streams = {b"o": b"", b"e": b""}
frames = 0
while True:
    kind = f.read(1)
    if kind == b"{":
        end = json.loads(b"{" + f.readline())
        break
    (n,) = struct.unpack(">I", f.read(4))
    streams[kind] += f.read(n)
    frames += 1
print(json.dumps({"first": first, "stdout": streams[b"o"].hex(), "stderr": streams[b"e"].hex(), "frames": frames, "end": end}))
"#;

fn v2_client(who: Who, socket: &Path, mode: &str, request: &Value) -> Child {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-I", "-S", "-c", V2_CLIENT_PY])
        .arg(socket)
        .arg(mode)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Who::User { uid, gid } = who {
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(format!("{request}\n").as_bytes())
        .unwrap();
    child
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.as_mut().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    line
}

/// Protocol 2: output streamed in frames arrives byte for byte, every byte
/// value on both streams, then the end line with the outcome.
#[test]
fn streamed_output_arrives_byte_for_byte() {
    let who = agent();
    let policy = analyst_policy("daemon-v2-bytes", who);
    let mut d = Daemon::start(&policy, &[]);
    let code = "import sys\nb = bytes(range(256))\nfor _ in range(300): sys.stdout.buffer.write(b); sys.stdout.flush()\nsys.stderr.buffer.write(b[::-1])\nsys.exit(3)";
    let mut c = v2_client(
        who,
        &d.socket,
        "read",
        &json!({"v": 2, "mbu": "reason", "args": ["-c", code]}),
    );
    drop(c.stdin.take());
    let got: Value = serde_json::from_str(&first_line(&mut c)).unwrap();
    c.wait().unwrap();
    d.stop();
    assert_eq!(got["first"], json!({"ok": true, "v": 2}), "{got:#}");
    let all: Vec<u8> = (0..=255u8).collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(got["stdout"], hex(&all.repeat(300)), "stdout, {} frames", got["frames"]);
    let reversed: Vec<u8> = all.iter().rev().copied().collect();
    assert_eq!(got["stderr"], hex(&reversed));
    assert_eq!(got["end"]["exit_code"], 3, "{got:#}");
    assert_eq!(got["end"]["v"], 2);
    assert!(got["end"]["exec"].is_string());
    verify(&d.log);
}

/// A client that hangs up mid-run cancels its execution: nothing of it is
/// left running, and the log, which verifies, records the end as cancelled.
#[test]
fn a_client_that_hangs_up_cancels_its_execution_and_the_log_says_so() {
    let who = agent();
    let policy = analyst_policy("daemon-v2-hangup", who);
    let mut d = Daemon::start(&policy, &[]);
    let marker = format!("hangup-marker-{}", unique());
    let code = format!("import time\n# {marker}\nprint('started', flush=True)\ntime.sleep(60)");
    let mut c = v2_client(
        who,
        &d.socket,
        "hangup",
        &json!({"v": 2, "mbu": "reason", "args": ["-c", code]}),
    );
    let first: Value = serde_json::from_str(&first_line(&mut c)).unwrap();
    assert_eq!(first["first"]["ok"], true, "{first:#}");
    // The MBU, and the start record (a client gone before the start is
    // answered "nothing ran", and nothing is recorded).
    wait_until("the MBU runs", || {
        mbu_runs(&marker) && log_records_so_far(&d.log).iter().any(|r| r["kind"] == "exec.start")
    });
    drop(c.stdin.take());
    c.wait().unwrap();
    wait_until("the execution ends", || {
        log_records_so_far(&d.log).iter().any(|r| r["kind"] == "exec.end")
    });
    wait_until("nothing of it is left", || host_processes_with(&marker).is_empty());
    d.stop();
    let recs = log_records(&d.log);
    let end = recs.iter().find(|r| r["kind"] == "exec.end").unwrap();
    assert_eq!(end["reason"], "cancelled", "{end:#}");
    verify(&d.log);
}

/// 16 clients that ask for 8 MiB of output each (control bytes, which cost
/// 6 bytes each in a JSON string) and never read it hold no more than one
/// frame each in the daemon: its RSS stays under 64 MiB, and another client
/// is served meanwhile. When they hang up, their executions are cancelled.
#[test]
fn clients_that_never_read_their_output_do_not_swell_the_daemon() {
    let who = agent();
    let policy = analyst_policy("daemon-v2-stall", who);
    let mut d = Daemon::start(&policy, &["--max-clients-per-uid", "32"]);
    let code = "import sys\nb = bytes(1 << 20)\nfor _ in range(8): sys.stdout.buffer.write(b)";
    let mut stalled: Vec<Child> = (0..16)
        .map(|_| {
            v2_client(
                who,
                &d.socket,
                "stall",
                &json!({"v": 2, "mbu": "reason", "args": ["-c", code]}),
            )
        })
        .collect();
    for c in &mut stalled {
        assert_eq!(first_line(c).trim(), "sent");
    }
    wait_until("16 executions run", || {
        log_records_so_far(&d.log)
            .iter()
            .filter(|r| r["kind"] == "exec.start")
            .count()
            >= 16
    });
    // Let them fill every pipe and buffer they can.
    std::thread::sleep(Duration::from_secs(2));
    let rss_kib = || -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", d.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let rss = rss_kib();
    eprintln!("daemon RSS with 16 stalled clients: {rss} KiB");
    let a = ask(
        who,
        &d.socket,
        &[json!({"mbu": "reason", "args": ["-c", "print('served')"]})],
    );
    assert_eq!(a[0]["stdout"], "served\n", "{a:#?}");
    assert!(
        rss < 64 * 1024,
        "daemon RSS {rss} KiB with 16 stalled clients of 8 MiB each"
    );
    for mut c in stalled {
        drop(c.stdin.take());
        c.wait().unwrap();
    }
    wait_until("the stalled executions end", || {
        log_records_so_far(&d.log)
            .iter()
            .filter(|r| r["kind"] == "exec.end")
            .count()
            >= 17
    });
    d.stop();
    let recs = log_records(&d.log);
    let cancelled = recs
        .iter()
        .filter(|r| r["kind"] == "exec.end" && r["reason"] == "cancelled")
        .count();
    assert_eq!(cancelled, 16, "{recs:#?}");
    verify(&d.log);
}

/// What a client chooses reaches the log bounded: a refused 1000 KiB MBU
/// name costs a few hundred bytes, a flood of refusals is counted rather
/// than written one by one, and a huge argv is recorded by prefix, count and
/// hash. The log still verifies and the counts add up.
#[test]
fn huge_names_and_floods_of_refusals_cost_the_log_a_few_hundred_bytes_each() {
    let who = agent();
    let policy = analyst_policy("daemon-flood", who);
    let mut d = Daemon::start(&policy, &[]);
    let name = "n".repeat(1000 << 10);
    let mut requests: Vec<Value> = (0..20).map(|_| json!({"mbu": name})).collect();
    let mut args = vec!["-c".to_string(), "pass".to_string(), "y".repeat(100_000)];
    args.extend((0..100).map(|i| format!("a{i}")));
    requests.push(json!({"mbu": "reason", "args": args}));
    let a = ask(who, &d.socket, &requests);
    assert_eq!(a.len(), 21);
    assert_eq!(a[20]["exit_code"], 0, "{:#}", a[20]);
    d.stop();
    let size = std::fs::metadata(&d.log).unwrap().len();
    let recs = log_records(&d.log);
    let refused: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "gate.refused").collect();
    let counted: u64 = refused
        .iter()
        .map(|r| r["suppressed"].as_u64().unwrap_or(1) + r["suppressed_before"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, 20, "every refusal is recorded or counted: {refused:#?}");
    assert!(
        refused.len() < 20,
        "a flood is not written one by one: {}",
        refused.len()
    );
    let one = refused.first().unwrap();
    assert_eq!(one["mbu"]["bytes"], 1000 << 10);
    assert_eq!(one["mbu"]["sha256"].as_str().unwrap().len(), 64, "{one:#}");
    let start = recs.iter().find(|r| r["kind"] == "exec.start").unwrap();
    // The profile's command (4 words), then the request's 103 arguments.
    assert_eq!(start["argv"]["more"], 4 + 103 - 64, "{:#}", start["argv"]);
    assert_eq!(start["argv"]["first"][6]["bytes"], 100_000);
    let start_bytes = start.to_string().len();
    assert!(start_bytes < 16 << 10, "exec.start is {start_bytes} bytes");
    assert!(
        size < 40 << 10,
        "20 refusals of a 1000 KiB name and one huge argv made {size} bytes of log"
    );
    verify(&d.log);
}

/// Socket activation as systemd does it: the listening socket on
/// descriptor 3, LISTEN_PID and LISTEN_FDS=1, and NOTIFY_SOCKET, to which
/// the daemon says READY=1 once it serves and STOPPING=1 when it drains.
/// The socket's path is the service manager's: left in place.
#[test]
fn socket_activation_serves_the_passed_socket_and_says_when_it_is_ready() {
    use std::os::fd::AsRawFd;
    let who = agent();
    let daemon_who = if identities().contains(&Who::Root) {
        Who::Root
    } else {
        who
    };
    let policy = analyst_policy("daemon-activated", who);
    let dir = scratch_dir("activated");
    let socket = dir.join("ninewall.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let notify_path = dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    if let Who::User { uid, gid } = daemon_who {
        std::os::unix::fs::chown(&notify_path, Some(uid), Some(gid)).unwrap();
    }
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let log = dir.join("audit.jsonl");
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" serve --policy \"$1\" --audit-log \"$2\"",
    ])
    .arg(&stage().bin)
    .arg(&policy)
    .arg(&log)
    .env_clear()
    .env("NOTIFY_SOCKET", &notify_path)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Who::User { uid, gid } = daemon_who {
        cmd.uid(uid).gid(gid);
    }
    on_fd3(&mut cmd, fd);
    if let Who::User { uid, gid } = daemon_who {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    let mut daemon = cmd.spawn().unwrap();
    drop(listener);
    let mut said = [0u8; 64];
    let Ok(n) = notify.recv(&mut said) else {
        let _ = daemon.kill();
        let out = daemon.wait_with_output().unwrap();
        panic!("no READY=1: {}", String::from_utf8_lossy(&out.stderr));
    };
    assert_eq!(&said[..n], b"READY=1");
    let a = ask(
        who,
        &socket,
        &[json!({"mbu": "reason", "args": ["-c", "print('activated')"]})],
    );
    assert_eq!(a[0]["stdout"], "activated\n", "{a:#?}");
    // SAFETY: a signal to the daemon we started.
    unsafe { libc::kill(i32::try_from(daemon.id()).unwrap(), libc::SIGTERM) };
    let n = notify.recv(&mut said).unwrap();
    assert_eq!(&said[..n], b"STOPPING=1");
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(socket.exists(), "an activated socket's path is the service manager's");
    verify(&log);
}

/// The agent's own records: a worker appends the model call that led to a
/// run, names it in the run request, and `audit show --story` tells the
/// whole story, from the model call to the exit. Records are checked and
/// bounded; a run cannot name a cause that is not a record id.
#[test]
fn a_model_call_and_the_execution_it_caused_are_one_story() {
    let who = agent();
    let policy = analyst_policy("daemon-story", who);
    let mut d = Daemon::start(&policy, &[]);
    let sha = "ab".repeat(32);
    let call = json!({"record": {"kind": "llm.call", "model": "a-model", "purpose": "plan the report",
        "prompt_sha256": sha, "response_sha256": sha, "prompt_bytes": 1200, "response_bytes": 300,
        "tokens_in": 400, "tokens_out": 90, "latency_ms": 850}});
    let a = ask(who, &d.socket, &[call]);
    assert_eq!(a[0]["ok"], true, "{a:#?}");
    let id = a[0]["record"].as_str().unwrap().to_string();
    let b = ask(
        who,
        &d.socket,
        &[
            json!({"mbu": "reason", "caused_by": id, "args": ["-c", "print(6 * 7)"]}),
            json!({"mbu": "reason", "caused_by": "not an id\n", "args": ["-c", "print(1)"]}),
            json!({"record": {"kind": "agent.note", "text": "done\u{1b}[2J"}}),
        ],
    );
    assert_eq!(b[0]["stdout"], "42\n", "{b:#?}");
    assert!(b[1]["error"].as_str().unwrap().starts_with("caused_by: "), "{b:#?}");
    assert_eq!(b[2]["ok"], true, "{b:#?}");
    let bad = ask(
        who,
        &d.socket,
        &[json!({"record": {"kind": "llm.call", "model": "m", "prompt": "the whole prompt"}})],
    );
    assert!(
        bad[0]["error"].as_str().unwrap().starts_with("not a record: "),
        "{bad:#?}"
    );
    d.stop();
    verify(&d.log);
    let exec = b[0]["exec"].as_str().unwrap();
    let recs = log_records(&d.log);
    let start = recs.iter().find(|r| r["kind"] == "exec.start").unwrap();
    assert_eq!(start["caused_by"], id.as_str());
    let llm = recs.iter().find(|r| r["kind"] == "llm.call").unwrap();
    assert_eq!(llm["worker"], "agent");
    assert_eq!(llm["client"]["uid"], uid_of(who));
    let shown = Run::from_output(
        ninewall(Who::Root)
            .args(["audit", "show", "--story", exec])
            .arg(&d.log)
            .output()
            .unwrap(),
    );
    shown.assert_code(0);
    let lines: Vec<&str> = shown.stdout.lines().collect();
    assert!(
        lines[0].contains(&format!("llm.call {id} by worker agent")),
        "{}",
        shown.stdout
    );
    assert!(
        lines[0].contains("model \"a-model\", purpose \"plan the report\""),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains(&format!("caused by \"{id}\"")),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("ended"), "{}", shown.stdout);
    assert!(!shown.stdout.contains('\u{1b}'));
}

// --- the worker's clients ----------------------------------------------------------

/// `ninewall call` as `who`, with `stdin`; returns once it has ended.
fn call(who: Who, socket: &Path, mbu: &str, args: &[&str], stdin: &str) -> Run {
    let mut child = ninewall(who)
        .args(["call", mbu, "--socket"])
        .arg(socket)
        .arg("--")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    Run::from_output(child.wait_with_output().unwrap())
}

#[test]
fn a_worker_calls_with_ninewall_call_streams_and_cancels() {
    let worker = agent();
    let policy = analyst_policy("call", worker);
    let d = Daemon::start(&policy, &[]);
    let r = call(
        worker,
        &d.socket,
        "reason",
        &[
            "-c",
            "import sys\nprint('to stdout', flush=True)\nprint('to stderr', file=sys.stderr)\nsys.exit(3)",
        ],
        "",
    );
    assert_eq!(r.code, 3, "the MBU's exit code is the call's: {r:#?}");
    assert_eq!(r.stdout, "to stdout\n");
    assert!(r.stderr.contains("to stderr"), "{r:#?}");
    // Standard input is the MBU's.
    let r = call(worker, &d.socket, "reason", &["-"], "print(6 * 7)\n");
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "42");
    // Bytes that are not UTF-8 go in and come out as they are.
    let sent: Vec<u8> = (0..=255u8).rev().chain([0xff, 0xfe, 0x00, 0x80]).collect();
    let mut child = ninewall(worker)
        .args(["call", "reason", "--socket"])
        .arg(&d.socket)
        .args([
            "--",
            "-c",
            "import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&sent).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let back: Vec<u8> = sent.iter().rev().copied().collect();
    assert_eq!(out.stdout, back, "binary stdin did not round-trip");
    // Refused by the gate: 125 and why.
    let r = call(worker, &d.socket, "code_generate_new", &["-c", "print(1)"], "");
    r.assert_code(125);
    assert!(
        r.stderr.contains("refused: ") && r.stderr.contains("code_generate_new"),
        "{r:#?}"
    );
    // --json: the end on the last line of stderr.
    let r = Run::from_output(
        ninewall(worker)
            .args(["call", "reason", "--json", "--socket"])
            .arg(&d.socket)
            .args(["--", "-c", "raise SystemExit(6)"])
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 6);
    let v: Value =
        serde_json::from_str(r.stderr.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {r:#?}"));
    assert_schema("call", &v);
    assert_eq!(v["exit_code"], 6);
    assert_eq!(v["ok"], true);
    assert!(v["exec"].is_string());
    let r = Run::from_output(
        ninewall(worker)
            .args(["call", "code_generate_new", "--json", "--socket"])
            .arg(&d.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 125);
    let v: Value = serde_json::from_str(r.stderr.lines().last().unwrap_or("")).unwrap();
    assert_schema("call", &v);
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("code_generate_new")),
        "{v}"
    );
    // Nobody there: 125 and where it looked.
    let r = call(worker, &d.socket.with_extension("nowhere"), "reason", &[], "");
    r.assert_code(125);
    assert!(r.stderr.contains("cannot reach the daemon at"), "{r:#?}");
    // Ctrl-C: the client goes, the daemon ends the run and records why.
    let (mut child, ready) = spawn_until_line(
        ninewall(worker)
            .args(["call", "reason", "--socket"])
            .arg(&d.socket)
            .args(["--", "-c", "import time\nprint('ready', flush=True)\ntime.sleep(60)"])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert_eq!(ready, "ready");
    // SAFETY: kill with a pid we started.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) };
    child.wait().unwrap();
    wait_until("the cancelled run is recorded", || {
        log_records_so_far(&d.log)
            .iter()
            .any(|r| r["kind"] == "exec.end" && r["reason"] == "cancelled")
    });
}

#[test]
fn the_python_client_calls_records_and_reads_refusals() {
    let worker = agent();
    let policy = analyst_policy("python-client", worker);
    let d = Daemon::start(&policy, &[]);
    // The client as an agent runtime would install it: a copy it can read.
    let lib = scratch_dir("pyclient");
    std::fs::create_dir_all(lib.join("ninewall")).unwrap();
    std::fs::write(
        lib.join("ninewall/__init__.py"),
        include_str!("../../clients/python/ninewall/__init__.py"),
    )
    .unwrap();
    std::fs::set_permissions(
        lib.join("ninewall"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let code = format!(
        "import sys\n\
         sys.path.insert(0, {lib:?})\n\
         import ninewall\n\
         S = {socket:?}\n\
         r = ninewall.call('reason', ['-c', 'print(1 + 1)'], socket_path=S)\n\
         print('call', r.exit_code, r.stdout, r.exec_id is not None)\n\
         rec = ninewall.llm_call(model='m', prompt='p', response='r', purpose='test', socket_path=S)\n\
         got = []\n\
         r = ninewall.call('reason', ['-c', 'print(5)\\nraise SystemExit(5)'], caused_by=rec, socket_path=S, on_stdout=got.append)\n\
         print('code', r.code(), got, r.stdout)\n\
         try:\n    ninewall.call('code_generate_new', socket_path=S)\nexcept ninewall.Refused as e:\n    print('refused', 'code_generate_new' in str(e))\n\
         print('enum', int(ninewall.ExitCode.SANDBOX), ninewall.ExitCode(124).name)\n\
         r = ninewall.call('reason', ['-c', 'import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])'], stdin=bytes(range(256)), socket_path=S)\n\
         print('bytes', r.stdout == bytes(range(256))[::-1])",
        socket = d.socket.to_str().unwrap(),
        lib = lib.to_str().unwrap()
    );
    let mut cmd = Command::new("/usr/bin/python3.11");
    cmd.args(["-I", "-c", &code]).current_dir("/").env_clear();
    if let Who::User { uid, gid } = worker {
        cmd.uid(uid).gid(gid);
    }
    let out = Run::from_output(cmd.output().unwrap());
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        out.stdout, "call 0 b'2\\n' True\ncode 5 [b'5\\n'] b''\nrefused True\nenum 125 TIMEOUT\nbytes True\n",
        "{out:#?}"
    );
    // The model call and the execution it caused are linked in the log.
    let recs = log_records(&d.log);
    let llm = recs.iter().find(|r| r["kind"] == "llm.call").unwrap();
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "exec.start" && r["caused_by"] == llm["id"]),
        "{recs:#?}"
    );
}

/// A delegating execution with the egress proxy may hand its children the
/// hosts it has, or fewer; a child that asks for another is refused naming
/// the entry, and the child's connections are its own records.
#[test]
fn delegation_narrows_net_allow_and_each_child_has_its_own_proxy() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let _ = std::io::Read::read(&mut conn, &mut buf);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nchild");
            });
        }
    });
    let net = |allow: &str| {
        format!("[net]\nmode = \"proxy\"\nallow = [{allow}]\n[syscalls]\nallow = [\"@default\", \"@network-io\"]\n")
    };
    write_profile(
        "eg-child",
        &format!(
            "extends = \"reason\"\n[mbu]\nname = \"eg-child\"\n{}",
            net(&format!("\"localhost:{port}\""))
        ),
    );
    write_profile(
        "eg-child-wide",
        &format!(
            "extends = \"reason\"\n[mbu]\nname = \"eg-child-wide\"\n{}",
            net(&format!("\"localhost:{port}\", \"api.elsewhere.example:443\""))
        ),
    );
    let parent = write_profile(
        "eg-parent",
        &format!(
            "extends = \"reason\"\n[mbu]\nname = \"eg-parent\"\ndelegate = [\"eg-child\", \"eg-child-wide\"]\n{}",
            net(&format!("\"localhost:{port}\", \"*.corp.example:443\""))
        ),
    );
    for who in identities() {
        let log = fresh_dir("eg-log").join("audit.jsonl");
        let (_, a) = delegating_run(
            who,
            &parent,
            &log,
            &format!(
                r#"
fetch = "import urllib.request\nprint(urllib.request.urlopen('http://localhost:{port}/', timeout=10).read().decode())"
for req in [{{"mbu": "eg-child", "args": ["-c", fetch]}}, {{"mbu": "eg-child-wide", "args": ["-c", fetch]}}]:
    print(json.dumps(ask(req)))
"#
            ),
        );
        assert_eq!(a[0]["ok"], true, "{a:#?}");
        assert_eq!(a[0]["stdout"], "child\n", "{a:#?}");
        assert!(
            a[1]["error"]
                .as_str()
                .is_some_and(|e| e.contains("net.allow: may connect through the proxy to api.elsewhere.example:443")),
            "{a:#?}"
        );
        let recs = log_records(&log);
        let child = a[0]["exec"].as_str().unwrap();
        let connects: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "net.connect").collect();
        assert_eq!(connects.len(), 1, "{connects:#?}");
        assert_eq!(connects[0]["exec"], child);
        assert_eq!(connects[0]["allowed"], true);
        verify(&log);
    }
}

// --- warm sandboxes -----------------------------------------------------------------

/// The daemon's warm supervisors (`run --warm-fd`, its children) and, for
/// each, whether its sandbox is there (the outer child and init, forked
/// copies with the same command line).
fn warm_supervisors(daemon: i32) -> Vec<(i32, String, bool)> {
    let mut found = Vec::new();
    for pid in host_processes_with("--warm-fd") {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ppid: i32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid != daemon {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let built = host_processes_with("--warm-fd").into_iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok())
            }) == Some(pid)
        });
        found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " "), built));
    }
    found
}

/// Waits until the daemon has `n` built warm sandboxes of `mbu`; their
/// supervisors' pids.
fn wait_for_warm(d: &Daemon, mbu: &str, n: usize) -> Vec<i32> {
    let profile = format!("/{mbu}.toml");
    let mut pids = Vec::new();
    wait_until(&format!("{n} warm sandboxes of {mbu}"), || {
        pids = warm_supervisors(d.pid())
            .into_iter()
            .filter(|(_, cmd, built)| *built && cmd.contains(&profile))
            .map(|(pid, _, _)| pid)
            .collect();
        pids.len() >= n
    });
    // Built is not yet said ready: the supervisor says so once init waits
    // for the request, a moment after init exists.
    std::thread::sleep(Duration::from_millis(300));
    pids
}

/// A policy that grants the staged profile `name` to `who`.
fn one_mbu_policy(name: &str, who: Who) -> PathBuf {
    write_policy(
        name,
        &format!(
            "[roles.r]\nmbus = [\"{name}\"]\n[workers.agent]\nuser = \"{}\"\nroles = [\"r\"]\n",
            uid_of(who)
        ),
    )
}

/// A daemon with one warm sandbox of the staged profile `name`, which its
/// policy grants to `who`, ready.
fn one_mbu_daemon(name: &str, who: Who) -> Daemon {
    let d = Daemon::start(&one_mbu_policy(name, who), &["--warm", "1"]);
    wait_for_warm(&d, name, 1);
    d
}

/// Stages a Python MBU (`base/python`, the program's code given as
/// arguments) named PREFIX-N with these `[limits]` lines; its name.
fn python_mbu(prefix: &str, limits: &str) -> String {
    let name = format!("{prefix}-{}", unique());
    write_profile(
        &name,
        &format!(
            "extends = \"base/python\"\n[mbu]\nname = \"{name}\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\", \"-S\"]\n[limits]\n{limits}"
        ),
    );
    name
}

/// The supervisor's pid in an execution id (`TIME-PID-N`).
fn supervisor_of(exec: &str) -> i32 {
    exec.rsplit('-').nth(1).and_then(|p| p.parse().ok()).unwrap()
}

/// A warm sandbox is built before the request (its supervisor exists
/// before the request is sent), runs exactly one request, and is never
/// given another: every execution has a supervisor of its own, finds the
/// sandbox's /tmp as nothing before it left it, and gets its arguments
/// exactly (an empty one, one with a space). Its start record says when
/// and from which profile digest its walls were built.
#[test]
fn a_warm_sandbox_is_built_before_the_request_and_runs_exactly_one() {
    let who = agent();
    let policy = analyst_policy("warm-once", who);
    let mut d = Daemon::start(&policy, &["--warm", "1"]);
    let code = "import os, sys\nprint(os.path.exists('/tmp/used'), sys.argv[1:])\nopen('/tmp/used', 'w').close()";
    let mut warm_before = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..4 {
        warm_before.push(wait_for_warm(&d, "reason", 1));
        let a = ask(
            who,
            &d.socket,
            &[json!({"mbu": "reason", "args": ["-c", code, "", "x y"]})],
        );
        answers.push(a[0].clone());
    }
    d.stop();
    for a in &answers {
        assert_eq!(a["stdout"], "False ['', 'x y']\n", "{answers:#?}");
        assert_eq!(a["exit_code"], 0, "{answers:#?}");
    }
    let recs = log_records(&d.log);
    let starts: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "exec.start").collect();
    assert_eq!(starts.len(), 4, "{recs:#?}");
    let mut supervisors = std::collections::BTreeSet::new();
    for (start, before) in starts.iter().zip(&warm_before) {
        let exec = start["exec"].as_str().unwrap();
        let pid = supervisor_of(exec);
        assert!(
            before.contains(&pid),
            "execution {exec} ran in a sandbox built before its request (warm then: {before:?})"
        );
        assert!(supervisors.insert(pid), "supervisor {pid} ran two executions");
        assert_schema("record", start);
        let warm = &start["warm"];
        assert_eq!(warm["profile_sha256"], start["profile"]["sha256"], "{start:#}");
        assert!(
            warm["built_at"].as_str().unwrap() < start["time"].as_str().unwrap(),
            "built before it started: {start:#}"
        );
        let argv = start["argv"].as_array().unwrap();
        assert_eq!(argv[argv.len() - 2..], [json!(""), json!("x y")], "{start:#}");
    }
    verify(&d.log);
}

/// The policy's `[warm]` table sets the count per MBU, over `--warm`: the
/// daemon keeps two of the MBU it names 2, none of the one it names 0 (a
/// request for it starts cold), and `--warm`'s one of the MBU it does not
/// name; a taken sandbox of the first is replaced up to two again.
#[test]
fn the_policy_sets_how_many_warm_sandboxes_each_mbu_keeps() {
    let who = agent();
    let policy = write_policy(
        "warm-counts",
        &format!(
            "[roles.analyst]\nmbus = [\"knowledge\", \"reason\", \"document_generation\"]\n\
             [workers.agent]\nuser = \"{}\"\nroles = [\"analyst\"]\n\
             [warm]\nreason = 2\nknowledge = 0\n",
            uid_of(who)
        ),
    );
    let shown = Run::from_output(ninewall(Who::Root).arg("policy").arg(&policy).output().unwrap());
    shown.assert_code(0);
    assert!(
        shown
            .stdout
            .contains("warm         knowledge 0, reason 2 (serve --warm N for the others)"),
        "{shown:#?}"
    );
    let typo = Run::from_output(
        ninewall(Who::Root)
            .args(["serve", "--warm", "200", "--policy"])
            .arg(&policy)
            .output()
            .unwrap(),
    );
    typo.assert_code(2);
    assert!(
        typo.stderr
            .contains("not a count of warm sandboxes; valid: 0 (every request builds its own) to 16"),
        "{typo:#?}"
    );
    let mut d = Daemon::start(&policy, &["--warm", "1"]);
    let reason = wait_for_warm(&d, "reason", 2);
    wait_for_warm(&d, "document_generation", 1);
    // The refilling thread has built what it keeps and waits: nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    let of = |mbu: &str| {
        let profile = format!("/{mbu}.toml");
        warm_supervisors(d.pid())
            .into_iter()
            .filter(|(_, cmd, _)| cmd.contains(&profile))
            .count()
    };
    assert_eq!(
        (of("reason"), of("document_generation"), of("knowledge")),
        (2, 1, 0),
        "warm supervisors: {:#?}",
        warm_supervisors(d.pid())
    );
    let a = ask(who, &d.socket, &[json!({"mbu": "reason", "args": ["-c", "print(1)"]})]);
    assert_eq!(a[0]["stdout"], "1\n", "{a:#?}");
    let k = ask(
        who,
        &d.socket,
        &[json!({"mbu": "knowledge", "args": ["-c", "print(2)"]})],
    );
    assert_eq!(k[0]["exit_code"], 0, "{k:#?}");
    let replaced = wait_for_warm(&d, "reason", 2);
    d.stop();
    let recs = log_records(&d.log);
    let warm_of = |mbu: &str| -> Vec<bool> {
        recs.iter()
            .filter(|r| r["kind"] == "exec.start" && r["mbu"] == mbu)
            .map(|r| !r["warm"].is_null())
            .collect()
    };
    assert_eq!(warm_of("reason"), [true], "{recs:#?}");
    assert_eq!(warm_of("knowledge"), [false], "{recs:#?}");
    let taken = supervisor_of(
        recs.iter()
            .find(|r| r["kind"] == "exec.start" && r["mbu"] == "reason")
            .and_then(|r| r["exec"].as_str())
            .unwrap(),
    );
    assert!(reason.contains(&taken), "{taken} was not one of {reason:?}");
    assert!(!replaced.contains(&taken), "{taken} is warm again: {replaced:?}");
    verify(&d.log);
}

/// Two clients' requests on warm sandboxes, at once, each with its own
/// workspace: each sees only its own directory, and what it makes lands
/// there and nowhere else.
#[test]
fn two_requests_on_warm_sandboxes_see_only_their_own_workspaces() {
    if !identities().contains(&Who::Root) {
        return;
    }
    let who = agent();
    let Who::User { uid, gid } = who else { return };
    let base = fresh_dir("warm-ws");
    let dirs: Vec<PathBuf> = ["one", "two"]
        .iter()
        .map(|name| {
            let dir = base.join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.txt")), name).unwrap();
            std::os::unix::fs::chown(dir.join(format!("{name}.txt")), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            dir
        })
        .collect();
    let policy = analyst_policy("warm-ws", who);
    let mut d = Daemon::start(&policy, &["--warm", "2"]);
    wait_for_warm(&d, "document_generation", 2);
    let code =
        "import os; print(sorted(os.listdir('/work'))); open('/work/made.txt', 'w').write(os.environ.get('X', 'made'))";
    let clients: Vec<Child> = dirs
        .iter()
        .map(|dir| {
            client_sending(
                who,
                &d.socket,
                &json!({"mbu": "document_generation", "workspace": dir, "args": ["-c", code]}),
            )
        })
        .collect();
    let outs: Vec<String> = clients
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned())
        .collect();
    d.stop();
    for (out, name) in outs.iter().zip(["one", "two"]) {
        let a: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(a["stdout"], format!("['{name}.txt']\n"), "{a:#?}");
    }
    for dir in &dirs {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{}: {names:?}", dir.display());
        assert!(names.contains(&"made.txt".to_string()), "{names:?}");
    }
    let recs = log_records(&d.log);
    let starts: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "exec.start").collect();
    assert_eq!(starts.len(), 2);
    assert!(
        starts.iter().all(|s| !s["warm"].is_null()),
        "both ran warm: {starts:#?}"
    );
}

/// A profile edited while its warm sandboxes wait takes effect on the very
/// next request: the sandboxes built from the old file are not used, and
/// the start record's digest is the new file's (as a cold `run` of it
/// records it).
#[test]
fn a_profile_edited_while_warm_sandboxes_wait_takes_effect_on_the_next_request() {
    let who = agent();
    let name = format!("warm-edit-{}", unique());
    let text = |word: &str| {
        format!(
            "extends = \"base/python\"\n[mbu]\nname = \"{name}\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\", \"-S\", \"-c\", \"print('{word}')\"]\n"
        )
    };
    let profile = write_profile(&name, &text("one"));
    let mut d = one_mbu_daemon(&name, who);
    let first = ask(who, &d.socket, &[json!({"mbu": name})]);
    wait_for_warm(&d, &name, 1);
    write_profile(&name, &text("two"));
    let second = ask(who, &d.socket, &[json!({"mbu": name})]);
    d.stop();
    assert_eq!(first[0]["stdout"], "one\n", "{first:#?}");
    assert_eq!(second[0]["stdout"], "two\n", "{second:#?}");
    let recs = log_records(&d.log);
    let starts: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "exec.start").collect();
    assert_eq!(starts.len(), 2, "{recs:#?}");
    assert!(!starts[0]["warm"].is_null(), "the first ran warm: {:#}", starts[0]);
    // The digest of the file as it is now, as a cold run records it.
    let log = fresh_dir("warm-edit-cold").join("audit.jsonl");
    run(who, &profile, &["--audit-log", log.to_str().unwrap()], &[], None).assert_code(0);
    let cold = log_records(&log);
    let now = &cold.iter().find(|r| r["kind"] == "exec.start").unwrap()["profile"]["sha256"];
    assert_eq!(&starts[1]["profile"]["sha256"], now, "{:#}", starts[1]);
    assert_ne!(starts[0]["profile"]["sha256"], starts[1]["profile"]["sha256"]);
    if !starts[1]["warm"].is_null() {
        assert_eq!(&starts[1]["warm"]["profile_sha256"], now, "{:#}", starts[1]);
    }
}

/// Every process below `root`.
fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// A warm sandbox's clock starts with its request, not with its build: one
/// built well over its wall-time limit ago runs a request that takes most
/// of that limit to the end, and one that takes longer is still ended by it.
#[test]
fn a_warm_sandboxs_wall_time_limit_counts_from_the_request() {
    let who = agent();
    let name = python_mbu("warm-clock", "wall_seconds = 2\n");
    let mut d = one_mbu_daemon(&name, who);
    std::thread::sleep(Duration::from_secs(3));
    let within = ask(
        who,
        &d.socket,
        &[json!({"mbu": name, "args": ["-c", "import time; time.sleep(1); print('done')"]})],
    );
    wait_for_warm(&d, &name, 1);
    let over = ask(
        who,
        &d.socket,
        &[json!({"mbu": name, "args": ["-c", "import time; time.sleep(30)"]})],
    );
    d.stop();
    assert_eq!(within[0]["stdout"], "done\n", "{within:#?}");
    assert_eq!(within[0]["exit_code"], 0, "{within:#?}");
    assert_eq!(over[0]["limit"], "timeout", "{over:#?}");
    let recs = log_records(&d.log);
    let starts: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "exec.start").collect();
    assert!(
        starts.iter().all(|s| !s["warm"].is_null()),
        "both ran warm: {starts:#?}"
    );
}

/// The host cgroup directories a process is in that ninewall made.
fn ninewall_cgroups(pid: i32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if !path.contains("/ninewall-") {
                return None;
            }
            let mount = match controllers {
                "" => "unified".to_string(),
                c => c.split(',').find(|c| !c.starts_with("name="))?.to_string(),
            };
            let candidates = [
                Path::new("/sys/fs/cgroup").join(&mount),
                PathBuf::from("/sys/fs/cgroup"),
            ];
            candidates
                .iter()
                .map(|m| m.join(path.trim_start_matches('/')))
                .find(|p| p.exists())
        })
        .collect()
}

/// `kill -9` of the daemon takes its warm sandboxes down with it: no
/// supervisor, sandbox process or cgroup of them is left, nothing was
/// recorded (nothing ran), and the next daemon starts and serves.
#[test]
fn a_daemon_killed_with_sigkill_leaves_no_warm_sandbox_behind() {
    let who = agent();
    let policy = analyst_policy("warm-kill9", who);
    let mut d = Daemon::start(&policy, &["--warm", "2"]);
    // Every MBU a worker holds (code_generate_new's role is nobody's).
    for mbu in ["reason", "knowledge", "document_generation"] {
        wait_for_warm(&d, mbu, 2);
    }
    let supervisors: Vec<(i32, String, bool)> = warm_supervisors(d.pid());
    assert_eq!(supervisors.len(), 6, "{supervisors:?}");
    assert!(
        !supervisors
            .iter()
            .any(|(_, cmd, _)| cmd.contains("/code_generate_new.toml")),
        "{supervisors:?}"
    );
    // Every process of theirs: the supervisors and their sandboxes (other
    // tests' daemons have warm sandboxes too).
    let theirs: Vec<i32> = descendants(d.pid())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--warm-fd"))
        })
        .collect();
    assert!(
        theirs.len() >= 6 * 3,
        "each supervisor and its sandbox's two processes: {theirs:?}"
    );
    let cgroups: Vec<PathBuf> = theirs.iter().flat_map(|&pid| ninewall_cgroups(pid)).collect();
    if identities().contains(&Who::Root) {
        assert!(
            !cgroups.is_empty(),
            "as root the warm sandboxes are in cgroups of their own"
        );
    }
    let daemon_pid = d.pid();
    let mut daemon = d.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let alive = |pid: &i32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("--warm-fd"))
    };
    wait_until("every warm sandbox's process is gone", || !theirs.iter().any(alive));
    assert!(
        log_records(&d.log).iter().all(|r| r["kind"] != "exec.start"),
        "a warm sandbox nobody used ran nothing"
    );
    // On cgroup v1 the daemon's cgroups are its pool's (lent to the warm
    // supervisors, or free): nobody is left to remove them until the next
    // daemon starts; then none is left.
    let pooled = pool_cgroups(daemon_pid);
    assert!(
        cgroups.iter().all(|c| !c.exists() || pooled.contains(c)),
        "a warm sandbox's cgroup outside the pool outlived it: {cgroups:?}"
    );
    let mut again = Daemon::start(&policy, &["--warm", "1"]);
    wait_until("the killed daemon's cgroups are gone after the next start", || {
        !cgroups.iter().chain(&pooled).any(|c| c.exists())
    });
    let a = ask(
        who,
        &again.socket,
        &[json!({"mbu": "reason", "args": ["-c", "print('again')"]})],
    );
    again.stop();
    assert_eq!(a[0]["stdout"], "again\n", "{a:#?}");
    assert!(!theirs.iter().any(alive) && !cgroups.iter().any(|c| c.exists()));
}

// --- lent cgroups ---------------------------------------------------------------

/// The cgroup directories of daemon `pid`'s pool (`ninewall-pool-PID-N`),
/// in every hierarchy.
fn pool_cgroups(pid: i32) -> Vec<PathBuf> {
    let prefix = format!("ninewall-pool-{pid}-");
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup")];
    // Beneath the daemon's own cgroup, which may be a few levels down.
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                found.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with("ninewall-") {
                dirs.push(path);
            }
        }
    }
    found
}

/// The `ninewall-pool-PID-N` name in an end record's `resources`.
fn lent_cgroup(end: &Value) -> Option<String> {
    let text = end["resources"].as_str()?;
    let at = text.find("ninewall-pool-")?;
    let name: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    text.contains("lent by the daemon").then_some(name)
}

/// On cgroup v1, as root, the daemon lends its supervisors cgroups it made
/// ahead and takes them back: one execution after another runs in the same
/// cgroup, and the next starts from nothing the last one left. An
/// execution that burned CPU, ran into its pids limit and held 64 MiB is
/// followed in its cgroup by one that does almost nothing but fail, whose
/// record says no limit (the pids limit hit stays the first's), little memory and
/// little CPU; and no process of the first is in it.
/// The pool's cgroups are there while the daemon runs and gone when it has
/// stopped.
#[test]
fn a_lent_cgroup_carries_nothing_of_one_execution_into_the_next() {
    if !identities().contains(&Who::Root) {
        return;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if !own.lines().any(|l| l.split(':').nth(1) == Some("memory")) && skip("no cgroup v1 memory hierarchy") {
        return;
    }
    let who = agent();
    let name = python_mbu("lend", "memory = \"96M\"\npids = 8\n");
    let mut d = Daemon::start(&one_mbu_policy(&name, who), &["--warm", "0"]);
    let hog = "import os, time\n\
               t = time.process_time()\n\
               while time.process_time() - t < 0.6: pass\n\
               kids = []\n\
               try:\n\
               \x20   while True:\n\
               \x20       pid = os.fork()\n\
               \x20       if pid == 0:\n\
               \x20           time.sleep(30); os._exit(0)\n\
               \x20       kids.append(pid)\n\
               except OSError:\n\
               \x20   pass\n\
               b = b'x' * (64 << 20)\n\
               print(len(kids), flush=True)\n\
               raise SystemExit(3)\n";
    let first = ask(who, &d.socket, &[json!({"mbu": name, "args": ["-c", hog]})]);
    assert_eq!(first[0]["limit"], "pids", "{first:#?}");
    let end = |exec: &Value| recs_end(&log_records(&d.log), exec.as_str().unwrap());
    let hog_end = end(&first[0]["exec"]);
    let hog_cgroup = lent_cgroup(&hog_end).unwrap_or_else(|| panic!("not in a lent cgroup: {hog_end:#}"));
    assert!(hog_end["cpu_ms"].as_u64().unwrap() >= 500, "{hog_end:#}");
    assert!(hog_end["peak_memory"].as_u64().unwrap() >= 64 << 20, "{hog_end:#}");
    // Given back once its supervisor is reaped; the pool lends the last
    // given back first. A request that came first gets another, clean one.
    let mut reused = None;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        // A failure: the limit an end is put down to is looked for only
        // then.
        let next = ask(
            who,
            &d.socket,
            &[json!({"mbu": name, "args": ["-c", "raise SystemExit(1)"]})],
        );
        assert_eq!(next[0]["exit_code"], 1, "{next:#?}");
        assert!(
            next[0]["limit"].is_null(),
            "the last execution's limits came along: {next:#?}"
        );
        let next_end = end(&next[0]["exec"]);
        assert!(next_end["cpu_ms"].as_u64().unwrap() < 300, "{next_end:#}");
        assert!(next_end["peak_memory"].as_u64().unwrap() < 32 << 20, "{next_end:#}");
        if lent_cgroup(&next_end).as_deref() == Some(hog_cgroup.as_str()) {
            reused = Some(next_end);
            break;
        }
    }
    assert!(reused.is_some(), "no later execution ran in {hog_cgroup}");
    let pooled = pool_cgroups(d.pid());
    assert!(
        pooled.iter().any(|p| p.ends_with(&hog_cgroup)),
        "{hog_cgroup} not among {pooled:?}"
    );
    for dir in &pooled {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.trim().is_empty(), "{} holds {procs}", dir.display());
    }
    d.stop();
    assert!(!pooled.iter().any(|p| p.exists()), "the stopped daemon left {pooled:?}");
}

/// The end record of execution `exec`.
fn recs_end(recs: &[Value], exec: &str) -> Value {
    recs.iter()
        .find(|r| r["kind"] == "exec.end" && r["exec"] == exec)
        .cloned()
        .unwrap_or_else(|| panic!("no end record of {exec}"))
}

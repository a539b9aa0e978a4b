//! Walls 5 and 6 through the real binary: processes, hostname, environment,
//! network, exit status, and that nothing outlives an execution.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ninewall::host::Host;
use ninewall::plan::{Request, SetupPlan};
use ninewall::sandbox::End;
use ninewall::seccomp::Family;
use ninewall::{Policy, Profile};

use crate::support::*;

fn loopback_profile(host_port: u16) -> String {
    format!(
        r#"
extends = "base/python"
[mbu]
name = "loopback-test"
[exec]
command = ["/usr/bin/python3.11", "-I", "-S", "-B"]
[net]
mode = "loopback"
bind = [47001]
connect = [47001, {host_port}]
[syscalls]
allow = ["@default", "@network-io"]
"#
    )
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_sandbox_sees_only_its_own_processes_hostname_and_environment() {
    for who in identities() {
        let r = python(
            who,
            &profile("reason"),
            r#"
import json, os, socket
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "pids": pids, "sid": os.getsid(0),
  "hostname": socket.gethostname(), "env": dict(os.environ), "uptime": float(open("/proc/uptime").read().split()[0]),
  "init_visible": os.path.exists("/proc/1"), "cgroup": open("/proc/self/cgroup").read().splitlines()}))
"#,
        );
        r.assert_code(0);
        let v = r.json();
        assert_eq!(v["pid"], 2, "{who:?}: the MBU is pid 2 under ninewall's init: {v}");
        assert_eq!(v["pids"], serde_json::json!([2]), "{who:?}: only its own pid: {v}");
        assert_eq!(v["init_visible"], false, "init is hidden (hidepid=invisible)");
        assert_eq!(v["sid"], 2, "a new session led by the MBU");
        assert_eq!(v["hostname"], "reason");
        assert_ne!(host_hostname(), "reason");
        assert_eq!(
            v["env"],
            serde_json::json!({"HOME": "/work", "LANG": "C.UTF-8", "PATH": "/usr/bin", "PYTHONDONTWRITEBYTECODE": "1"}),
            "{who:?}: exactly the profile's environment"
        );
        assert!(
            v["uptime"].as_f64().unwrap() < 60.0,
            "the time namespace hides host uptime: {v}"
        );
        // The cgroup namespace is rooted where the MBU is: at its own cgroup
        // when it has one, so no host cgroup path shows.
        for line in v["cgroup"].as_array().unwrap() {
            assert!(line.as_str().unwrap().ends_with(":/"), "{who:?}: {v}");
        }
        // The host's own pid is invisible inside, and the canary variable never arrived.
        assert!(!r.stdout.contains("host-secret-environment"));
    }
}

/// Wall 6 on its own: under `net = "none"` wall 8 refuses `AF_INET` and
/// `AF_INET6` sockets, so this plan's filter is widened to let them through,
/// and the sandbox runs through the library as this test's own identity
/// (scripts/test.sh runs the tests as root and as the unprivileged user).
#[test]
fn no_network_means_no_interface_and_no_route_to_the_host() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let ws = scratch_dir("net-none");
    let ids = ninewall::plan::id_map(ninewall::host::Caller::current(), None);
    std::os::unix::fs::chown(&ws, Some(ids.host_uid), Some(ids.host_gid)).unwrap();
    let code = format!(
        r#"
import json, socket, errno, fcntl, struct
def err(f):
    try:
        f(); return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
def connect(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    return err(lambda: s.connect((host, port)))
def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return err(lambda: s.sendto(b"escape", (host, port)))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]
open("/work/result.json", "w").write(json.dumps({{
  "ifaces": [l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:]],
  "lo_up": bool(flags & 1),
  "tcp": connect("127.0.0.1", {port}), "v6": connect("::1", {port}, socket.AF_INET6), "dns": connect("8.8.8.8", 53),
  "udp": udp("127.0.0.1", {udp_port}), "udp_dns": udp("8.8.8.8", 53)}}))
"#
    );
    let policy = Policy::from_profile(&Profile::load(&net_profile()).unwrap()).unwrap();
    let request = Request {
        args: vec!["-c".into(), code],
        workspace_dir: Some(ws.clone()),
        ..Request::default()
    };
    let mut setup = SetupPlan::build(&policy, &request, &Host::probe()).unwrap();
    assert_eq!(
        setup.seccomp.socket_families,
        [Family::Unix],
        "wall 8 alone would refuse AF_INET"
    );
    allow_socket_families(&mut setup, &[Family::Unix, Family::Inet, Family::Inet6]);
    let outcome = ninewall::sandbox::run(&setup, None).unwrap();
    assert_eq!(outcome.end, End::Exited(0), "{outcome:?}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ws.join("result.json")).unwrap()).unwrap();
    assert_eq!(v["ifaces"], serde_json::json!(["lo"]), "{v}");
    assert_eq!(v["lo_up"], false, "{v}");
    // Wall 6: no interface is up, so nothing routes (UDP is not Landlock's).
    assert_eq!(v["udp"], "ENETUNREACH", "{v}");
    assert_eq!(v["udp_dns"], "ENETUNREACH", "{v}");
    // Wall 7 refuses TCP connect to any unlisted port before routing is asked.
    for k in ["tcp", "v6", "dns"] {
        assert_eq!(v[k], "EACCES", "{k}: {v}");
    }
    assert!(listener.accept().is_err(), "the host listener was reached");
    let mut buf = [0u8; 16];
    assert!(udp.recv(&mut buf).is_err(), "the host UDP socket received a datagram");
}

/// Recompiles `setup`'s filter with `socket` allowed for `families`, as it
/// is otherwise (recorded syscalls, refusals sent to the supervisor).
fn allow_socket_families(setup: &mut SetupPlan, families: &[Family]) {
    let names: std::collections::BTreeSet<String> = setup.seccomp.allow.iter().cloned().collect();
    let recorded: Vec<u32> = setup.seccomp.recorded.iter().map(|(_, nr)| *nr).collect();
    let arch = ninewall::seccomp::Arch::native().unwrap();
    let mut bpf =
        ninewall::seccomp::compile_recording(&names, setup.seccomp.on_denied, arch, &recorded, families).unwrap();
    if setup.seccomp.notify {
        ninewall::seccomp::notify_instead_of_errno(&mut bpf);
    }
    setup.seccomp.program = bpf.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
    setup.seccomp.socket_families = families.to_vec();
}

#[test]
fn loopback_mode_has_only_its_own_lo_and_only_the_listed_ports() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = write_profile(&format!("loopback-test-{port}"), &loopback_profile(port));
    for who in identities() {
        let r = python(
            who,
            &p,
            &format!(
                r#"
import json, socket, errno
def err(f):
    try:
        f(); return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("127.0.0.1", 47001)); srv.listen(1)
c = socket.create_connection(("127.0.0.1", 47001), timeout=3); a, _ = srv.accept(); c.sendall(b"ping")
own = a.recv(4).decode()
print(json.dumps({{"own": own,
  "host": err(lambda: socket.socket().connect(("127.0.0.1", {port}))),
  "bind_unlisted": err(lambda: socket.socket().bind(("127.0.0.1", 47002))),
  "connect_unlisted": err(lambda: socket.socket().connect(("127.0.0.1", 47002))),
  "ifaces": [n for _, n in socket.if_nameindex()]}}))
"#
            ),
        );
        r.assert_code(0);
        let v = r.json();
        assert_eq!(v["own"], "ping", "{who:?}: {v}");
        // Listed, so Landlock lets it through, and it is refused: the host's
        // 127.0.0.1 is another network.
        assert_eq!(v["host"], "ECONNREFUSED", "{who:?}: {v}");
        assert_eq!(v["bind_unlisted"], "EACCES", "{who:?}: {v}");
        assert_eq!(v["connect_unlisted"], "EACCES", "{who:?}: {v}");
        assert_eq!(v["ifaces"], serde_json::json!(["lo"]));
    }
    assert!(listener.accept().is_err(), "the host listener was reached");
}

#[test]
fn exit_codes_and_signals_pass_through() {
    for who in identities() {
        python(who, &profile("reason"), "import sys; sys.exit(7)").assert_code(7);
        python(who, &profile("reason"), "pass").assert_code(0);
        python(
            who,
            &profile("reason"),
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        )
        .assert_code(128 + 9);
        python(
            who,
            &profile("reason"),
            "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
        )
        .assert_code(128 + 15);
        let r = python(who, &profile("reason"), "raise SystemExit('bad input')");
        r.assert_code(1);
        assert!(r.stderr.contains("bad input"), "stderr passes through: {r:#?}");
    }
}

#[test]
fn stdin_and_stdout_pass_through() {
    for who in identities() {
        let r = run(
            who,
            &profile("reason"),
            &[],
            &["-c", "import sys; print(sys.stdin.read().upper())"],
            Some("from the worker"),
        );
        r.assert_code(0);
        assert_eq!(r.stdout, "FROM THE WORKER\n");
    }
}

const DAEMON: &str = r#"
import os, sys, time
marker = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/usr/bin/python3.11", ["/usr/bin/python3.11", "-I", "-S", "-c", "import time; time.sleep(120)", marker])
    os._exit(0)
time.sleep(0.3)
print("ready", flush=True)
if len(sys.argv) > 2:
    time.sleep(120)
"#;

#[test]
fn a_double_forked_daemon_is_gone_when_the_run_ends() {
    for who in identities() {
        let marker = format!("ninewall-daemon-marker-{}-{}", std::process::id(), unique());
        let r = run(who, &profile("reason"), &[], &["-c", DAEMON, &marker], None);
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "ready");
        // Init kills and reaps what the MBU left, and ninewall reaps init's
        // parent (which outlives init) before it returns.
        assert_eq!(
            host_processes_with(&marker),
            Vec::<i32>::new(),
            "{who:?}: the daemon survived"
        );
    }
}

#[test]
fn killing_the_supervisor_with_sigkill_kills_the_whole_sandbox() {
    for who in identities() {
        let marker = format!("ninewall-orphan-marker-{}-{}", std::process::id(), unique());
        let mut cmd = ninewall(who);
        cmd.args(["run", "--profile"])
            .arg(profile("reason"))
            .args(["--", "-c", DAEMON, &marker, "stay"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        // The supervisor and its two helpers carry the marker in their argv too;
        // the MBU and its setsid daemon are the two that run Python.
        let alive = host_processes_with(&marker);
        let pythons = alive
            .iter()
            .filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("python3.11")))
            .count();
        assert!(
            alive.len() >= 4 && pythons == 2 || who != Who::Root,
            "{who:?}: expected the MBU and its daemon: {alive:?}"
        );
        assert!(alive.len() >= 2, "{who:?}: {alive:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        // The kernel delivers the parent-death signals asynchronously; allow it
        // a bounded moment, then demand that nothing is left.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !host_processes_with(&marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            host_processes_with(&marker),
            Vec::<i32>::new(),
            "{who:?}: processes outlived the supervisor"
        );
    }
}

#[test]
fn sigterm_to_the_supervisor_reaches_the_mbu() {
    for who in identities() {
        let mut cmd = ninewall(who);
        cmd.args(["run", "--profile"]).arg(profile("reason")).args([
            "--",
            "-c",
            // The handler only takes note: printing from it could land inside
            // the print of "ready" still flushing, and CPython refuses that
            // reentrant write (RuntimeError) — the cause of this test's old,
            // rare failures.
            "import signal, sys, time\ngot = []\nsignal.signal(signal.SIGTERM, lambda *a: got.append(1))\nprint('ready', flush=True)\nend = time.monotonic() + 60\nwhile not got and time.monotonic() < end:\n    time.sleep(0.01)\nprint('got SIGTERM' if got else 'no signal', flush=True)\nsys.exit(3)",
        ]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: plain kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let mut rest = String::new();
        out.read_line(&mut rest).unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(rest.trim(), "got SIGTERM", "{who:?}: {status:?}: {err}");
        assert_eq!(status.code(), Some(3), "{who:?}: {err}");
    }
}

#[test]
fn there_is_no_controlling_terminal_and_no_tty_device() {
    for who in identities() {
        let r = python(
            who,
            &profile("reason"),
            r#"
import os, json, errno
try:
    os.open("/dev/tty", os.O_RDWR); tty = "ok"
except OSError as e:
    tty = errno.errorcode[e.errno]
print(json.dumps({"tty": tty, "pgrp": os.getpgrp(), "sid": os.getsid(0)}))
"#,
        );
        r.assert_code(0);
        let v = r.json();
        assert_eq!(v["tty"], "ENOENT");
        assert_eq!(v["sid"], v["pgrp"]);
    }
}

/// What a probe prints about its network namespace: its id, its interfaces,
/// and what making a socket gets.
const NETNS_PROBE: &str = r#"
import socket
print(json.dumps({"ns": os.readlink("/proc/self/ns/net"),
  "ifaces": [l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:]],
  "socket": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
  "unix": attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
  "pair": attempt(lambda: socket.socketpair())}))
"#;

/// The `exec.start` record of the only run logged in `log`.
fn only_start(log: &std::path::Path) -> serde_json::Value {
    let starts: Vec<serde_json::Value> = log_records(log)
        .into_iter()
        .filter(|r| r["kind"] == "exec.start")
        .collect();
    assert_eq!(starts.len(), 1, "{starts:#?}");
    starts.into_iter().next().unwrap()
}

/// Runs the namespace probe under `profile` with a log of its own; returns
/// what the probe printed and the start record.
fn probe_netns(who: Who, profile: &std::path::Path) -> (serde_json::Value, serde_json::Value) {
    let log = audit_log(who).with_file_name(format!("netns-{}.jsonl", unique()));
    let log_arg = log.to_str().unwrap();
    let code = format!("{ATTEMPT_PY}{NETNS_PROBE}");
    let r = run(who, profile, &["--audit-log", log_arg], &["-c", &code], None);
    r.assert_code(0);
    (r.json(), only_start(&log))
}

#[test]
fn sandboxes_that_cannot_make_sockets_share_one_empty_network_namespace_as_root() {
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let shared = std::path::Path::new("/run/ninewall/net-none");
    for who in identities() {
        let (a, start_a) = probe_netns(who, &profile("reason"));
        let (b, start_b) = probe_netns(who, &profile("reason"));
        for v in [&a, &b] {
            // Wall 8 refuses every way to make a socket; wall 6 is empty.
            for k in ["socket", "unix", "pair"] {
                assert_eq!(v[k], "EPERM", "{who:?}: {k}: {v}");
            }
            assert_eq!(v["ifaces"], serde_json::json!(["lo"]), "{who:?}: {v}");
            assert_ne!(
                v["ns"],
                host_ns.to_str().unwrap(),
                "{who:?}: the host's network namespace"
            );
        }
        if who == Who::Root {
            // One namespace for both, the one mounted in the runtime directory,
            // and the record says so.
            use std::os::unix::fs::MetadataExt;
            let ino = std::fs::metadata(shared).unwrap().ino();
            assert_eq!(a["ns"], format!("net:[{ino}]"), "{a}");
            assert_eq!(b["ns"], a["ns"]);
            for s in [&start_a, &start_b] {
                assert_eq!(s["walls"]["shared_net_namespace"], shared.to_str().unwrap(), "{s}");
            }
        } else {
            // Not root: a namespace of its own each time.
            assert_ne!(a["ns"], b["ns"], "{who:?}");
            assert_eq!(start_a["walls"]["shared_net_namespace"], serde_json::Value::Null);
        }
    }
}

#[test]
fn a_sandbox_allowed_sockets_gets_a_network_namespace_of_its_own() {
    for who in identities() {
        let (a, start) = probe_netns(who, &net_profile());
        let (b, _) = probe_netns(who, &net_profile());
        // Sockets, but only of the families its network needs: AF_UNIX
        // (wall 8 refuses AF_INET under net = "none").
        assert_eq!(a["unix"], "ok", "{who:?}: {a}");
        assert_eq!(a["socket"], "EPERM", "{who:?}: {a}");
        assert_ne!(
            a["ns"], b["ns"],
            "{who:?}: two sandboxes with sockets share a network namespace"
        );
        assert_eq!(
            start["walls"]["shared_net_namespace"],
            serde_json::Value::Null,
            "{start}"
        );
        assert_ne!(
            a["ns"],
            std::fs::read_link("/proc/self/ns/net").unwrap().to_str().unwrap()
        );
        if who == Who::Root {
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = std::fs::metadata("/run/ninewall/net-none") {
                assert_ne!(
                    a["ns"],
                    format!("net:[{}]", m.ino()),
                    "a socket sandbox joined the shared one"
                );
            }
        }
    }
}

/// Unmounts (lazily) what a test mounted, whatever the test's outcome.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_shared_network_namespace_changed_outside_ninewall_stops_the_run() {
    if !identities().contains(&Who::Root) {
        return;
    }
    let dir = scratch_dir("runtime");
    let shared = dir.join("net-none");
    let marker = "ran-in-a-changed-namespace";
    let attempt = |expect: &str| {
        let r = ninewall(Who::Root)
            .env("NINEWALL_RUNTIME_DIR", &dir)
            .args(["run", "--profile"])
            .arg(profile("reason"))
            .args(["--", "-c", &format!("print('{marker}')")])
            .output()
            .unwrap();
        let r = Run::from_output(r);
        r.assert_code(125);
        assert!(r.stderr.contains(expect), "{r:#?}");
        assert!(!r.stdout.contains(marker), "the MBU ran: {r:#?}");
    };
    // The host's own network namespace mounted where the empty one belongs:
    // the outer child joins it, sees eth0 and the rest, and stops.
    std::fs::write(&shared, b"").unwrap();
    let bind = |ns: &str| {
        let mounted = std::process::Command::new("mount")
            .arg("--bind")
            .arg(ns)
            .arg(&shared)
            .status()
            .unwrap();
        assert!(mounted.success());
        Unmount(shared.clone())
    };
    let unmount = bind("/proc/self/ns/net");
    // (Its lo at least is up, whatever else it has.)
    attempt(&format!(
        "wall 6 (network): joining the shared empty network namespace {}: Directory not empty",
        shared.display()
    ));
    drop(unmount);
    // Another kind of namespace there: refused before anything is forked.
    let unmount = bind("/proc/self/ns/uts");
    attempt("is a namespace of another kind");
    drop(unmount);
    // Unmounted again, the next run makes a new, empty one and runs.
    let r = ninewall(Who::Root)
        .env("NINEWALL_RUNTIME_DIR", &dir)
        .args(["run", "--profile"])
        .arg(profile("reason"))
        .args(["--", "-c", "import os; print(os.readlink('/proc/self/ns/net'))"])
        .output()
        .unwrap();
    let r = Run::from_output(r);
    r.assert_code(0);
    let _cleanup = Unmount(shared.clone());
    assert_eq!(
        r.stdout.trim(),
        format!("net:[{}]", std::fs::metadata(&shared).unwrap().ino())
    );
}

#[test]
fn a_fifo_where_the_shared_network_namespace_belongs_is_not_waited_on() {
    if !identities().contains(&Who::Root) {
        return;
    }
    // Opening a FIFO blocks until someone opens its other end; the run must
    // neither hang there nor use it: it makes a namespace of its own.
    let dir = scratch_dir("runtime-fifo");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fifo = dir.join("net-none");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = ninewall(Who::Root)
        .env("NINEWALL_RUNTIME_DIR", &dir)
        .args(["run", "--profile"])
        .arg(profile("reason"))
        .args(["--", "-c", "import os; print(os.readlink('/proc/self/ns/net'))"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ninewall waited on the FIFO for 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = Run::from_output(child.wait_with_output().unwrap());
    r.assert_code(0);
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(r.stdout.starts_with("net:["), "{r:#?}");
    assert_ne!(r.stdout.trim(), host.to_str().unwrap());
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

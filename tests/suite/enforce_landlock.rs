//! Wall 7 through the real kernel: what Landlock refuses even where the mount
//! view would allow it, and what only the listed executables may do.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ninewall::host::Host;
use ninewall::plan::{self, Mount, Request, SetupPlan};
use ninewall::sandbox::End;
use ninewall::{Policy, Profile};

use crate::support::*;

/// Besides [`ATTEMPT_PY`]: exec attempts run in a child.
const RUN_CHILD_PY: &str = r#"
def run_child(f):
    """Runs f in a child (for exec attempts): its errno, or its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            f()
        except OSError as e:
            os._exit(200 + e.errno)
        os._exit(199)
    st = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(st)
    return E.errorcode.get(code - 200, "exit %d" % code) if code >= 200 else "exit %d" % code
"#;

/// The reason profile's policy, loaded through the library.
fn reason_policy() -> Policy {
    let profile = Profile::load(&profile("reason")).unwrap();
    Policy::from_profile(&profile).unwrap()
}

fn owned_scratch(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let ids = plan::id_map(ninewall::host::Caller::current(), None);
    std::os::unix::fs::chown(&dir, Some(ids.host_uid), Some(ids.host_gid)).unwrap();
    dir
}

#[test]
fn a_path_in_the_mount_view_without_landlock_rights_refuses_every_access() {
    // A plan whose mount view is wider than its rights: the extra directory is
    // bound read-write and gets no Landlock rule. Each refusal below comes from
    // Landlock alone (the mount and the file modes would allow it).
    let extra = owned_scratch("ll-extra");
    std::fs::write(extra.join("secret.txt"), "host secret").unwrap();
    std::fs::set_permissions(extra.join("secret.txt"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let ws = owned_scratch("ll-ws");
    let code = format!(
        r#"{ATTEMPT_PY}{RUN_CHILD_PY}
x = "/srv/extra"
r = {{
  "stat": attempt(lambda: os.stat(x + "/secret.txt")),
  "read": attempt(lambda: open(x + "/secret.txt").read()),
  "list": attempt(lambda: os.listdir(x)),
  "write": attempt(lambda: open(x + "/secret.txt", "a").write("changed")),
  "truncate": attempt(lambda: os.truncate(x + "/secret.txt", 0)),
  "create": attempt(lambda: open(x + "/new.txt", "w")),
  "mkdir": attempt(lambda: os.mkdir(x + "/d")),
  "rename": attempt(lambda: os.rename(x + "/secret.txt", x + "/moved.txt")),
  "link": attempt(lambda: os.link(x + "/secret.txt", x + "/linked.txt")),
  "unlink": attempt(lambda: os.unlink(x + "/secret.txt")),
  "symlink": attempt(lambda: os.symlink("/work", x + "/sym")),
}}
open("/work/result.json", "w").write(json.dumps(r))
"#
    );
    let request = Request {
        args: vec!["-c".into(), code],
        workspace_dir: Some(ws.clone()),
        ..Request::default()
    };
    let mut setup = SetupPlan::build(&reason_policy(), &request, &Host::probe()).unwrap();
    assert!(setup.landlock.is_some(), "this test needs Landlock");
    setup.mounts.insert(
        0,
        Mount::Bind {
            source: extra.clone(),
            target: PathBuf::from("/srv/extra"),
            dir: true,
            writable: true,
            exec: false,
        },
    );
    let outcome = ninewall::sandbox::run(&setup, None).unwrap();
    assert_eq!(outcome.end, End::Exited(0));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ws.join("result.json")).unwrap()).unwrap();
    assert_eq!(v["stat"], "ok", "the path is in the view: {v}");
    for k in [
        "read", "list", "write", "truncate", "create", "mkdir", "rename", "link", "unlink", "symlink",
    ] {
        assert_eq!(v[k], "EACCES", "{k}: {v}");
    }
    assert_eq!(
        std::fs::read_to_string(extra.join("secret.txt")).unwrap(),
        "host secret"
    );
    let left: Vec<_> = std::fs::read_dir(&extra)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("secret.txt")]);
}

#[test]
fn only_the_listed_executables_and_their_interpreter_can_be_executed() {
    let helper = Path::new("/usr/lib/x86_64-linux-gnu/gettext/hostname");
    for who in identities() {
        let r = python(
            who,
            &profile("reason"),
            &format!(
                r#"{ATTEMPT_PY}{RUN_CHILD_PY}
import shutil
shutil.copyfile("/usr/bin/python3.11", "/work/py"); os.chmod("/work/py", 0o755)
wfd = os.open("/work/py", os.O_RDONLY)
print(json.dumps({{
  "libc_visible": attempt(lambda: os.stat("/usr/lib/x86_64-linux-gnu/libc.so.6")),
  "libc": run_child(lambda: os.execv("/usr/lib/x86_64-linux-gnu/libc.so.6", ["libc"])),
  "helper": run_child(lambda: os.execv({helper:?}, ["h"])) if os.path.exists({helper:?}) else "absent",
  "written": run_child(lambda: os.execv("/work/py", ["py", "-c", "print('escaped')"])),
  "execveat_written": run_child(lambda: os.execve(wfd, ["py", "-c", "print('escaped')"], {{}})),
  "ld_so_written": run_child(lambda: os.execv("/lib64/ld-linux-x86-64.so.2", ["ld.so", "/work/py", "-c", "print('escaped')"])),
  "python": run_child(lambda: os.execv("/usr/bin/python3.11", ["python3.11", "-c", "pass"])),
  "memfd": attempt(lambda: os.memfd_create("payload")),
}}))
"#
            ),
        );
        r.assert_code(0);
        assert!(
            !r.stdout.contains("escaped") && !r.stderr.contains("escaped"),
            "{who:?}: {r:#?}"
        );
        let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(v["libc_visible"], "ok");
        assert_eq!(
            v["libc"], "EACCES",
            "{who:?}: visible, exec-mountable, mode 755, and still refused: {v}"
        );
        assert!(v["helper"] == "EACCES" || v["helper"] == "absent", "{who:?}: {v}");
        assert_eq!(v["written"], "EACCES", "{who:?}: {v}");
        assert_eq!(v["execveat_written"], "EACCES", "{who:?}: {v}");
        // ld.so runs (it is the interpreter) but cannot map a written file: the
        // workspace is noexec. It exits 127 with its own message.
        assert_eq!(v["ld_so_written"], "exit 127", "{who:?}: {v}");
        assert!(r.stderr.contains("failed to map segment from shared object"), "{r:#?}");
        assert_eq!(v["python"], "exit 0", "{who:?}: {v}");
        // A memfd would be executable (Landlock does not see it); wall 8 only
        // lets memfd_create through with MFD_NOEXEC_SEAL.
        assert_eq!(v["memfd"], "EPERM", "{who:?}: {v}");
    }
}

#[test]
fn signals_to_processes_outside_the_sandbox_domain_are_refused() {
    for who in identities() {
        let r = python(
            who,
            &profile("reason"),
            &format!(
                r#"{ATTEMPT_PY}{RUN_CHILD_PY}
import signal, time
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
own = attempt(lambda: os.kill(child, signal.SIGTERM))
os.waitpid(child, 0)
print(json.dumps({{"init_usr1": attempt(lambda: os.kill(1, signal.SIGUSR1)), "init_probe": attempt(lambda: os.kill(1, 0)),
  "own_child": own, "alive": True}}))
"#
            ),
        );
        r.assert_code(0);
        let v = r.json();
        // pid 1 is ninewall's init: same uid, same pid namespace, but outside
        // the MBU's Landlock domain. Without the scope, SIGUSR1 would reach it.
        assert_eq!(v["init_usr1"], "EPERM", "{who:?}: {v}");
        assert_eq!(v["init_probe"], "EPERM", "{who:?}: {v}");
        assert_eq!(v["own_child"], "ok", "{who:?}: {v}");
    }
}

#[test]
fn abstract_unix_sockets_outside_the_sandbox_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("ninewall-test-{}-{}", std::process::id(), unique());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    for who in identities() {
        let r = python(
            who,
            &net_profile(),
            &format!(
                r#"{ATTEMPT_PY}{RUN_CHILD_PY}
import socket
def connect(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + name)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind("\0own-{name}"); srv.listen(1)
print(json.dumps({{"host": attempt(lambda: connect({name:?})), "own": attempt(lambda: connect("own-{name}"))}}))
"#
            ),
        );
        r.assert_code(0);
        let v = r.json();
        assert_eq!(
            v["host"], "ECONNREFUSED",
            "{who:?}: the host's abstract socket is in another network namespace: {v}"
        );
        assert_eq!(v["own"], "ok", "{who:?}: {v}");
    }
    assert!(listener.accept().is_err(), "the host's abstract socket was reached");
}

#[test]
fn a_script_runs_only_when_its_interpreter_is_listed() {
    // Outside /tmp (ninewall's own inside a sandbox); removed with the stage.
    let dir = exec_dir().join(format!("scripts-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.join("hello.py");
    std::fs::write(&script, "#!/usr/bin/python3.11 -I\nprint('script ran')\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let listed = write_profile(
        &format!("script-listed-{}", unique()),
        &format!(
            "extends = \"base/python\"\n[mbu]\nname = \"script\"\n[exec]\nexecutables = [{s:?}]\ncommand = [{s:?}]\n[fs]\nread = [{d:?}]\n",
            s = script.to_str().unwrap(),
            d = dir.to_str().unwrap()
        ),
    );
    let unlisted = write_profile(
        &format!("script-unlisted-{}", unique()),
        &format!(
            "[mbu]\nname = \"script\"\n[exec]\nexecutables = [{s:?}]\ncommand = [{s:?}]\n",
            s = script.to_str().unwrap()
        ),
    );
    for who in identities() {
        let r = run(who, &listed, &[], &[], None);
        r.assert_code(0);
        assert_eq!(r.stdout, "script ran\n");
        let r = run(who, &unlisted, &[], &[], None);
        r.assert_code(2);
        assert!(
            r.stderr
                .contains("is a script for \"/usr/bin/python3.11\", which is not in exec.executables"),
            "{r:#?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_profile_can_ask_for_the_landlock_features_it_needs() {
    let p = write_profile(
        &format!("ll-require-{}", unique()),
        "extends = \"base/python\"\n[mbu]\nname = \"req\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-S\"]\n[landlock]\nrequire = [\"fs\", \"tcp\"]\n",
    );
    let r = check_profile(&p, false);
    r.assert_code(0);
    assert!(
        r.stdout.contains("requires fs (Landlock ABI 1), tcp (Landlock ABI 4)"),
        "{}",
        r.stdout
    );
    let probe = Run::from_output(ninewall(Who::Root).args(["probe", "--json"]).output().unwrap());
    probe.assert_code(0);
    let k = probe.json();
    let abi = k["landlock"]["abi"].as_u64().unwrap();
    if abi < 6
        && skip(&format!(
            "this kernel's Landlock ABI is {abi}; the default profile needs 6"
        ))
    {
        return;
    }
    assert_eq!(
        k["landlock"]["scopes"],
        serde_json::json!(["abstract_unix_socket", "signal"])
    );
    assert!(k["landlock"]["fs"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("truncate")));
    for wall in ["landlock", "seccomp", "namespaces", "user_namespaces", "cgroups"] {
        let v = k[wall]["verdict"].as_str().unwrap();
        assert!(["ok", "degraded", "missing"].contains(&v), "{wall}: {v}");
        if in_ci() {
            assert_eq!(v, "ok", "CI's host offers every wall: {wall}");
        }
    }
}

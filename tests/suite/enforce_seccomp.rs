//! Wall 8 through the real kernel: a small static C program makes each call
//! from inside a sandbox. Every call it makes succeeds (or fails harmlessly
//! for other reasons) outside a sandbox; inside, the filter decides.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use ninewall::seccomp::{GROUPS, NEVER, NEVER_X86_64};

use crate::support::*;

const SIGSYS_EXIT: i32 = 128 + 31;

/// The helper, built once per test process into a world-readable directory
/// outside /tmp (which is ninewall's own inside a sandbox).
pub(crate) fn helper() -> Option<PathBuf> {
    static HELPER: OnceLock<Option<PathBuf>> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            let dir = exec_dir();
            let src = dir.join("try_syscall.c");
            std::fs::write(&src, include_str!("../support/try_syscall.c")).unwrap();
            let bin = dir.join("try-syscall");
            let built = Command::new("cc")
                .args(["-static", "-O1", "-o"])
                .arg(&bin)
                .arg(&src)
                .status();
            match built {
                Ok(s) if s.success() => {
                    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
                    Some(bin)
                }
                other => {
                    skip(&format!(
                        "cannot build the static test helper with cc ({other:?}); install gcc and libc6-dev"
                    ));
                    None
                }
            }
        })
        .clone()
}

fn helper_profile(name: &str, allow: &[&str], on_denied: &str) -> Option<PathBuf> {
    let bin = helper()?;
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    Some(write_profile(
        name,
        &format!(
            "[mbu]\nname = {name:?}\n[exec]\nexecutables = [{b:?}]\ncommand = [{b:?}]\n[syscalls]\nallow = [{}]\non_denied = {on_denied:?}\n",
            allow.join(", "),
            b = bin.to_str().unwrap()
        ),
    ))
}

fn every_group() -> Vec<&'static str> {
    GROUPS.iter().map(|g| g.name).collect()
}

#[test]
fn an_allowed_call_works_and_anything_else_gets_eperm() {
    let Some(p) = helper_profile("sc-errno", &["@default"], "errno") else {
        return;
    };
    for who in identities() {
        for (call, expect) in [
            ("getpid", "getpid ok"),
            ("socket", "socket EPERM"),
            ("tcgets", "tcgets ENOTTY"),
        ] {
            let r = run(who, &p, &[], &[call], None);
            r.assert_code(0);
            assert_eq!(r.stdout.trim(), expect, "{who:?}: {r:#?}");
        }
    }
}

#[test]
fn refused_syscalls_are_named_and_counted() {
    for who in identities() {
        let r = python(
            who,
            &profile("reason"),
            "import socket, os\nfor _ in range(3):\n    try: socket.socket()\n    except OSError as e: print(e.errno)\ntry: os.setuid(0)\nexcept OSError as e: print(e.errno)",
        );
        r.assert_code(0);
        assert_eq!(r.stdout, "1\n1\n1\n1\n", "{who:?}: every refusal is EPERM");
        assert!(
            r.stderr.contains("refused syscalls (wall 8): setuid x1, socket x3"),
            "{who:?}: {r:#?}"
        );
        let quiet = python(who, &profile("reason"), "print('nothing refused')");
        quiet.assert_code(0);
        assert!(!quiet.stderr.contains("refused syscalls"), "{who:?}: {quiet:#?}");
    }
}

#[test]
fn under_kill_a_refused_call_kills_the_process() {
    let Some(p) = helper_profile("sc-kill", &["@default"], "kill") else {
        return;
    };
    for who in identities() {
        let r = run(who, &p, &[], &["socket"], None);
        r.assert_code(SIGSYS_EXIT);
        assert_eq!(r.stdout, "", "{who:?}: the call returned: {r:#?}");
        let ok = run(who, &p, &[], &["getpid"], None);
        ok.assert_code(0);
    }
}

#[test]
fn never_allowable_syscalls_fail_even_when_every_group_is_allowed() {
    let Some(p) = helper_profile("sc-everything", &every_group(), "kill") else {
        return;
    };
    let mut names: Vec<&str> = NEVER.iter().map(|(n, _)| *n).filter(|n| *n != "clone3").collect();
    if cfg!(target_arch = "x86_64") {
        names.extend(NEVER_X86_64.iter().map(|(n, _)| *n));
    }
    for who in identities() {
        for name in &names {
            let r = run(who, &p, &[], &["raw", name], None);
            assert_eq!(
                r.code, SIGSYS_EXIT,
                "{who:?}: {name} was not killed by the filter: {r:#?}"
            );
            assert_eq!(r.stdout, "", "{who:?}: {name} returned to the caller: {r:#?}");
        }
    }
}

#[test]
fn foreign_syscall_abis_kill_the_process() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let Some(p) = helper_profile("sc-abi", &["@default"], "errno") else {
        return;
    };
    for who in identities() {
        for call in ["int80", "x32"] {
            let r = run(who, &p, &[], &[call], None);
            assert_eq!(r.code, SIGSYS_EXIT, "{who:?}: {call}: {r:#?}");
            assert_eq!(r.stdout, "", "{who:?}: {call} returned: {r:#?}");
        }
    }
}

#[test]
fn clone3_is_enosys_and_clone_into_new_namespaces_is_refused() {
    let Some(p) = helper_profile("sc-clone", &["@default"], "errno") else {
        return;
    };
    for who in identities() {
        for (call, expect) in [
            ("clone3", "clone3 ENOSYS"),
            ("clone", "clone ok"),
            ("clone_newuser", "clone_newuser EPERM"),
            ("clone_newnet", "clone_newnet EPERM"),
        ] {
            let r = run(who, &p, &[], &[call], None);
            r.assert_code(0);
            assert_eq!(r.stdout.trim(), expect, "{who:?}: {r:#?}");
        }
    }
}

#[test]
fn terminal_injection_personality_and_executable_memfds_are_refused() {
    let Some(p) = helper_profile("sc-misc", &every_group(), "errno") else {
        return;
    };
    for who in identities() {
        for (call, expect) in [
            ("tiocsti", "tiocsti EPERM"),
            ("tioclinux", "tioclinux EPERM"),
            ("tcgets", "tcgets ENOTTY"),
            ("personality_query", "personality_query ok"),
            ("personality_linux", "personality_linux ok"),
            ("personality_exec", "personality_exec EPERM"),
            ("memfd", "memfd EPERM"),
            ("memfd_exec", "memfd_exec EPERM"),
            ("memfd_noexec", "memfd_noexec ok"),
        ] {
            let r = run(who, &p, &[], &[call], None);
            r.assert_code(0);
            assert_eq!(r.stdout.trim(), expect, "{who:?}: {r:#?}");
        }
    }
}

#[test]
fn check_prints_the_final_syscall_list() {
    let r = check_profile(&profile("reason"), false);
    r.assert_code(0);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("syscalls"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("@default") && line.contains("on_denied errno"),
        "{}",
        r.stdout
    );
    let j = check_profile(&profile("reason"), true);
    let v = j.json();
    let names: Vec<&str> = v["syscalls"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for must in ["execve", "openat", "read", "mmap", "exit_group", "clone", "ioctl"] {
        assert!(names.contains(&must), "{must} missing from {names:?}");
    }
    for never in [
        "socket",
        "mount",
        "ptrace",
        "io_uring_setup",
        "clone3",
        "memfd_create",
        "setuid",
    ] {
        assert!(!names.contains(&never), "{never} in {names:?}");
    }
}

#[test]
fn the_listener_reaches_the_supervisor_when_the_filter_refuses_futex() {
    // With files recorded, the MBU hands its listener to init after its filter
    // is installed. It sleeps in futex when the filter allows futex; here it
    // does not, and a refusal kills: the MBU must wait without any syscall.
    let allow = [
        "execve",
        "exit",
        "exit_group",
        "brk",
        "arch_prctl",
        "set_tid_address",
        "set_robust_list",
        "rseq",
        "prlimit64",
        "mprotect",
        "getrandom",
        "write",
        "getpid",
        "readlink",
        "readlinkat",
        "uname",
        "newfstatat",
    ];
    let Some(p) = helper_profile("sc-no-futex", &allow, "kill") else {
        return;
    };
    for who in identities() {
        let dir = scratch_dir("no-futex");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let log = dir.join("audit.jsonl");
        let r = run(who, &p, &["--audit-log", log.to_str().unwrap()], &["getpid"], None);
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "getpid ok", "{who:?}: {r:#?}");
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains(r#""kind":"file""#) && l.contains(r#""syscall":"execve""#)),
            "{who:?}: the execve was not recorded: {log}"
        );
    }
}

/// Every bit of a file's mode under `dir`, recursively, with its path.
fn modes_under(dir: &std::path::Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        out.push((entry.path(), meta.permissions().mode()));
        if meta.is_dir() {
            out.extend(modes_under(&entry.path()));
        }
    }
    out
}

#[test]
fn no_call_may_set_a_setuid_or_setgid_bit_and_no_host_file_ever_has_one() {
    let Some(p) = helper_profile("sc-setid", &["@default"], "errno") else {
        return;
    };
    for who in identities() {
        let ws = scratch_dir("setid");
        let (uid, gid) = who.workspace_owner();
        std::os::unix::fs::chown(&ws, Some(uid), Some(gid)).unwrap();
        let workspace = ["--workspace", ws.to_str().unwrap()];
        let mut n = 0;
        let mut attempt = |call: &str, mode: &str, expect: &str| {
            n += 1;
            let path = format!("/work/{call}-{mode}-{n}");
            let r = run(who, &p, &workspace, &[call, &path, mode], None);
            r.assert_code(0);
            assert_eq!(
                r.stdout.trim(),
                format!("{call} {expect}"),
                "{who:?} {call} {mode}: {r:#?}"
            );
        };
        for mode in ["4755", "2755", "6777", "4000"] {
            for call in ["chmod", "fchmod", "fchmodat", "open_creat", "mkdir", "mknod"] {
                attempt(call, mode, "EPERM");
            }
        }
        // The same calls without the bits work: the guard is about the bits.
        for call in ["chmod", "fchmod", "fchmodat", "open_creat", "mkdir", "mknod"] {
            attempt(call, "1755", "ok");
        }
        // openat2 hides its mode in memory: ENOSYS, as for clone3.
        let r = run(who, &p, &workspace, &["openat2", "/work/openat2"], None);
        assert_eq!(r.stdout.trim(), "openat2 ENOSYS", "{who:?}: {r:#?}");
        let modes = modes_under(&ws);
        assert!(
            modes.len() >= 6,
            "{who:?}: the allowed calls made their files: {modes:?}"
        );
        let setid: Vec<_> = modes.iter().filter(|(_, m)| m & 0o6000 != 0).collect();
        assert!(setid.is_empty(), "{who:?}: setid files on the host: {setid:?}");
    }
}

/// The helper under `[syscalls] allow` with sockets, and `net` as given.
fn socket_profile(name: &str, net: &str) -> Option<PathBuf> {
    let bin = helper()?;
    Some(write_profile(
        name,
        &format!(
            "[mbu]\nname = {name:?}\n[exec]\nexecutables = [{b:?}]\ncommand = [{b:?}]\n[net]\nmode = {net:?}\n\
             [syscalls]\nallow = [\"@default\", \"@network-io\"]\non_denied = \"errno\"\n",
            b = bin.to_str().unwrap()
        ),
    ))
}

#[test]
fn sockets_are_only_of_the_families_the_network_needs_never_vsock_packet_or_other_netlink() {
    let (Some(none), Some(lo)) = (
        socket_profile("sc-sock-none", "none"),
        socket_profile("sc-sock-lo", "loopback"),
    ) else {
        return;
    };
    // (family, type, protocol, name): AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
    // with NETLINK_ROUTE and with NETLINK_KOBJECT_UEVENT, AF_PACKET, AF_VSOCK.
    let families = [
        ("1", "1", "0", "unix"),
        ("2", "1", "0", "inet"),
        ("10", "1", "0", "inet6"),
        ("16", "3", "0", "netlink-route"),
        ("16", "3", "15", "netlink-uevent"),
        ("17", "3", "0", "packet"),
        ("40", "1", "0", "vsock"),
    ];
    for who in identities() {
        let with_network = ["unix", "inet", "inet6", "netlink-route"];
        for (profile, allowed) in [(&none, &["unix"][..]), (&lo, &with_network[..])] {
            for (family, ty, protocol, name) in families {
                let r = run(who, profile, &[], &["socket_family", family, ty, protocol], None);
                r.assert_code(0);
                let expect = if allowed.contains(&name) { "ok" } else { "EPERM" };
                assert_eq!(
                    r.stdout.trim(),
                    format!("socket_family {expect}"),
                    "{who:?} {profile:?} {name}: {r:#?}"
                );
            }
            for (family, expect) in [("1", "ok"), ("2", "EPERM"), ("40", "EPERM")] {
                let r = run(who, profile, &[], &["socketpair_family", family], None);
                assert_eq!(
                    r.stdout.trim(),
                    format!("socketpair_family {expect}"),
                    "{who:?}: {r:#?}"
                );
            }
        }
    }
}

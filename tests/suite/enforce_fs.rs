//! Wall 3 and wall 4 through the real binary: who the sandbox is, what it sees,
//! and that what it may not change stays unchanged on the host.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::*;

fn probe(who: Who, profile: &std::path::Path, body: &str) -> serde_json::Value {
    let r = python(who, profile, &format!("{ATTEMPT_PY}\n{body}"));
    r.assert_code(0);
    r.json()
}

#[test]
fn the_sandbox_is_an_unprivileged_id_inside_and_outside() {
    for who in identities() {
        let v = probe(
            who,
            &profile("reason"),
            r#"
st = open("/proc/self/status").read()
caps = {l.split(":")[0]: l.split(":")[1].strip() for l in st.splitlines() if l.startswith(("Cap", "NoNewPrivs"))}
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
  "uid_map": open("/proc/self/uid_map").read().split(), "gid_map": open("/proc/self/gid_map").read().split(),
  "caps": caps, "setuid0": attempt(lambda: os.setuid(0)), "setuid_host": attempt(lambda: os.setuid(1001))}))
"#,
        );
        let host_uid: u32 = v["uid_map"][1].as_str().unwrap().parse().unwrap();
        let host_gid: u32 = v["gid_map"][1].as_str().unwrap().parse().unwrap();
        assert!(who.is_sandbox_host_id(host_uid, host_gid), "{who:?}: {v}");
        assert_eq!(v["uid"], 1000, "{who:?}: {v}");
        assert_eq!(v["euid"], 1000);
        assert_eq!(v["gid"], 1000);
        assert_eq!(
            v["uid_map"],
            serde_json::json!(["1000", host_uid.to_string(), "1"]),
            "{who:?}"
        );
        assert_eq!(
            v["gid_map"],
            serde_json::json!(["1000", host_gid.to_string(), "1"]),
            "{who:?}"
        );
        if who == Who::Root {
            // Root's supplementary groups (gid 0 among them) are cleared.
            assert_eq!(v["groups"], serde_json::json!([]), "{v}");
        }
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(v["caps"][set], "0000000000000000", "{who:?}: {set} not empty: {v}");
        }
        assert_eq!(v["caps"]["NoNewPrivs"], "1");
        assert_eq!(v["setuid_host"], "EPERM", "{v}");
        // setuid is not in @default: wall 8 refuses it before wall 3 would
        // (uid 0 does not exist in the sandbox's user namespace).
        assert_eq!(v["setuid0"], "EPERM");
    }
}

#[test]
fn only_the_profiles_paths_exist() {
    let secret_dir = scratch_dir("secret");
    let secret = secret_dir.join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    for who in identities() {
        let v = probe(
            who,
            &profile("reason"),
            &format!(
                r#"
def ls(p):
    try: return sorted(os.listdir(p))
    except OSError as e: return E.errorcode[e.errno]
def exists(p):
    try:
        os.stat(p); return True
    except OSError: return False
mounts = sorted(line.split()[4] for line in open("/proc/self/mountinfo"))
print(json.dumps({{"mounts": mounts, "root": ls("/"), "present": [p for p in ["/dev", "/lib", "/lib64", "/proc", "/tmp", "/usr", "/work", "/usr/bin", "/usr/lib", "/usr/lib64"] if exists(p)],
  "etc": ls("/etc"), "home": ls("/home"), "sys": ls("/sys"), "secret": attempt(lambda: open({secret:?}).read()),
  "secret_dir": ls({dir:?}), "passwd": attempt(lambda: open("/etc/passwd").read()),
  "sh": attempt(lambda: os.stat("/bin/sh")), "dev": ls("/dev"), "tmp": ls("/tmp"), "usr_bin": attempt(lambda: os.stat("/usr/bin/env")),
  "lib64": os.readlink("/lib64"), "ld": attempt(lambda: open("/lib64/ld-linux-x86-64.so.2", "rb").read(4))}}))
"#,
                secret = secret.to_str().unwrap(),
                dir = secret_dir.to_str().unwrap()
            ),
        );
        // The view is exactly these mounts (the symlinks /lib and /lib64
        // aside), and the loader's cache where `check` says the sandbox gets it…
        let cache = check_profile(&profile("reason"), true).json()["library_cache"].clone();
        let mut mounts = v["mounts"].as_array().unwrap().clone();
        if cache == "/etc/ld.so.cache" {
            assert_eq!(mounts.get(7), Some(&cache), "{who:?}: {v}");
            mounts.remove(7);
        }
        assert_eq!(
            serde_json::Value::Array(mounts),
            serde_json::json!([
                "/",
                "/dev",
                "/dev/full",
                "/dev/null",
                "/dev/random",
                "/dev/urandom",
                "/dev/zero",
                "/proc",
                "/tmp",
                "/usr/bin/python3.11",
                "/usr/lib/python3.11",
                "/usr/lib/python3.11/lib-dynload",
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib64",
                "/work"
            ]),
            "{who:?}: {v}"
        );
        assert_eq!(
            v["present"],
            serde_json::json!([
                "/dev",
                "/lib",
                "/lib64",
                "/proc",
                "/tmp",
                "/usr",
                "/work",
                "/usr/bin",
                "/usr/lib",
                "/usr/lib64"
            ])
        );
        // …and its root cannot even be listed: Landlock grants no read_dir there.
        assert_eq!(v["root"], "EACCES", "{who:?}: {v}");
        for gone in ["home", "sys", "secret_dir", "secret", "passwd", "sh", "usr_bin"] {
            assert_eq!(v[gone], "ENOENT", "{who:?}: {gone} visible: {v}");
        }
        // /etc is there only to hold the cache, and cannot be listed.
        let etc = if cache.is_null() { "ENOENT" } else { "EACCES" };
        assert_eq!(v["etc"], etc, "{who:?}: {v}");
        assert_eq!(
            v["dev"],
            serde_json::json!(["fd", "full", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"])
        );
        assert_eq!(v["tmp"], serde_json::json!([]));
        assert_eq!(v["lib64"], "usr/lib64");
        assert_eq!(
            v["ld"], "ok",
            "the ELF interpreter is reachable through the recreated symlink"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
}

#[test]
fn read_only_binds_refuse_writes_with_erofs_and_the_host_is_unchanged() {
    let knowledge = std::path::Path::new("/srv/knowledge/README.txt");
    if !knowledge.exists() && skip("/srv/knowledge/README.txt is missing (.ci/run creates it)") {
        return;
    }
    let before = std::fs::read(knowledge).unwrap();
    for who in identities() {
        let v = probe(
            who,
            &profile("knowledge"),
            r#"
def write(p):
    with open(p, "w") as f: f.write("changed")
print(json.dumps({
  "lib": attempt(lambda: write("/usr/lib/python3.11/os.py")),
  "lib_new": attempt(lambda: write("/usr/lib/python3.11/new.py")),
  "kb": attempt(lambda: write("/srv/knowledge/README.txt")),
  "kb_new": attempt(lambda: write("/srv/knowledge/new.txt")),
  "kb_rm": attempt(lambda: os.unlink("/srv/knowledge/README.txt")),
  "kb_chmod": attempt(lambda: os.chmod("/srv/knowledge/README.txt", 0o777)),
  "root_new": attempt(lambda: write("/new-file")),
  "root_mkdir": attempt(lambda: os.mkdir("/new-dir")),
  "dev_new": attempt(lambda: write("/dev/new")),
  "python": attempt(lambda: write("/usr/bin/python3.11")),
  "kb_read": open("/srv/knowledge/README.txt").read(),
  "devnull": attempt(lambda: write("/dev/null")),
  "work": attempt(lambda: write("/work/out.txt")),
}))
"#,
        );
        for key in [
            "lib",
            "lib_new",
            "kb",
            "kb_new",
            "kb_rm",
            "kb_chmod",
            "root_new",
            "root_mkdir",
            "dev_new",
        ] {
            assert_eq!(v[key], "EROFS", "{who:?}: {key}: {v}");
        }
        // The interpreter is a read-only bind too; writing an executable file
        // that is in use is refused as well.
        assert!(v["python"] == "EROFS" || v["python"] == "ETXTBSY", "{v}");
        assert_eq!(v["kb_read"], std::str::from_utf8(&before).unwrap());
        assert_eq!(v["devnull"], "ok");
        assert_eq!(v["work"], "ok");
    }
    assert_eq!(
        std::fs::read(knowledge).unwrap(),
        before,
        "the knowledge file changed on the host"
    );
    assert!(!std::path::Path::new("/srv/knowledge/new.txt").exists());
}

#[test]
fn files_written_in_the_sandbox_cannot_be_executed() {
    for who in identities() {
        let v = probe(
            who,
            &profile("reason"),
            r##"
import shutil
def exec_it(p):
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(p, [p])
        except OSError as e:
            os._exit(e.errno)
    return os.waitpid(pid, 0)[1] >> 8
out = {}
for d in ["/work", "/tmp"]:
    script = d + "/script"
    with open(script, "w") as f: f.write("#!/usr/bin/python3.11\nprint('escaped')\n")
    os.chmod(script, 0o755)
    elf = d + "/python-copy"
    shutil.copyfile("/usr/bin/python3.11", elf)
    os.chmod(elf, 0o755)
    out[d + "/script"] = E.errorcode.get(exec_it(script))
    out[d + "/elf"] = E.errorcode.get(exec_it(elf))
    out[d + "/setuid"] = attempt(lambda: os.chmod(elf, 0o4755))
    out[d + "/setuid_bit_kept"] = bool(os.stat(elf).st_mode & 0o4000)
print(json.dumps(out))
"##,
        );
        for d in ["/work", "/tmp"] {
            assert_eq!(v[format!("{d}/script")], "EACCES", "{who:?}: {v}");
            assert_eq!(v[format!("{d}/elf")], "EACCES", "{who:?}: {v}");
        }
    }
}

#[test]
fn writable_mounts_are_nosuid_nodev_noexec() {
    for who in identities() {
        let v = probe(
            who,
            &profile("reason"),
            r#"
m = {}
for line in open("/proc/self/mountinfo"):
    f = line.split()
    m[f[4]] = f[5].split(",")
print(json.dumps(m))
"#,
        );
        let opts = |p: &str| -> Vec<String> {
            v[p].as_array()
                .unwrap_or_else(|| panic!("{p} not mounted: {v}"))
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        for p in ["/work", "/tmp"] {
            let o = opts(p);
            for flag in ["rw", "nosuid", "nodev", "noexec"] {
                assert!(o.contains(&flag.to_string()), "{who:?}: {p} lacks {flag}: {o:?}");
            }
        }
        for p in [
            "/",
            "/usr/lib/python3.11",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/bin/python3.11",
            "/dev",
        ] {
            let o = opts(p);
            assert!(o.contains(&"ro".to_string()), "{who:?}: {p} not read-only: {o:?}");
            assert!(o.contains(&"nosuid".to_string()), "{who:?}: {p} not nosuid: {o:?}");
        }
        assert!(
            opts("/usr/lib/python3.11").contains(&"noexec".to_string()),
            "fs.read is data: noexec"
        );
        // Nothing of the host's root remains mounted: every mount is one we made.
        let mounts: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(
            mounts.iter().all(|m| !m.starts_with("/old") && !m.starts_with("/new")),
            "{mounts:?}"
        );
    }
}

#[test]
fn a_host_workspace_is_read_write_and_what_the_sandbox_makes_there_is_the_callers() {
    for who in identities() {
        let dir = scratch_dir("workspace");
        let (uid, gid) = who.workspace_owner();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        let r = run(
            who,
            &profile("document_generation"),
            &["--workspace", dir.to_str().unwrap()],
            &["-c", "import os; open('/work/report.txt','w').write('quarterly'); os.chmod('/work/report.txt', 0o755); print(os.getcwd())"],
            None,
        );
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "/work");
        let written = dir.join("report.txt");
        assert_eq!(std::fs::read_to_string(&written).unwrap(), "quarterly");
        let meta = std::fs::metadata(&written).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{who:?}: owner on the host");
    }
}

#[test]
fn a_workspace_the_sandbox_cannot_write_is_refused_before_anything_runs() {
    let identities = identities();
    if !identities.contains(&Who::Root) {
        return;
    }
    // Its owner may not write it: neither may the sandbox, which acts as
    // the owner (the workspace is mounted idmapped).
    let dir = scratch_dir("read-only-owner");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let marker = dir.join("ran");
    let r = run(
        Who::Root,
        &profile("document_generation"),
        &["--workspace", dir.to_str().unwrap()],
        &["-c", "open('/work/ran','w')"],
        None,
    );
    r.assert_code(2);
    assert!(r.stderr.contains("its owner 0 may not write it (mode 555)"), "{r:#?}");
    assert!(!marker.exists());
}

/// The directories of the libraries the host's loader cache lists that the
/// reason profile does not show (on Debian, none without multilib; with
/// `libc6-i386`, `/usr/lib32`).
fn cache_dirs_beyond_reason() -> Vec<String> {
    let out = std::process::Command::new("/sbin/ldconfig").arg("-p").output().unwrap();
    let shown = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib/python3.11/lib-dynload",
    ];
    let mut dirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(" => ")
                .map(|(_, path)| std::path::PathBuf::from(path.trim()))
        })
        .filter_map(|lib| std::fs::canonicalize(lib.parent()?).ok())
        .filter(|dir| !shown.iter().any(|s| dir.starts_with(s)))
        .map(|dir| dir.display().to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

#[test]
fn the_loader_gets_the_hosts_cache_read_only_when_it_shows_nothing_new() {
    // The reason profile binds /usr/lib/x86_64-linux-gnu, where every library
    // of a Debian host's cache is (with what a multilib host lists elsewhere
    // added): the sandbox gets the cache, read-only, and nothing else of /etc.
    let Ok(host) = std::fs::read("/etc/ld.so.cache") else {
        skip("this host has no /etc/ld.so.cache");
        return;
    };
    let reason = std::fs::read_to_string(profile("reason"))
        .unwrap()
        .replace("name = \"reason\"", "name = \"ldcache-reason\"")
        .replace(
            "[fs]\n",
            &format!("[fs]\nlibraries = {:?}\n", cache_dirs_beyond_reason()),
        );
    let shows_the_cache = write_profile("ldcache-reason", &reason);
    let host_sha = {
        let out = std::process::Command::new("sha256sum")
            .arg("/etc/ld.so.cache")
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    for who in identities() {
        let log = audit_log(who).with_file_name(format!("ldcache-{}.jsonl", unique()));
        let code = format!(
            r#"{ATTEMPT_PY}
import hashlib
print(json.dumps({{"sha": hashlib.sha256(open("/etc/ld.so.cache", "rb").read()).hexdigest(),
  "list": attempt(lambda: os.listdir("/etc")), "append": attempt(lambda: open("/etc/ld.so.cache", "ab")),
  "unlink": attempt(lambda: os.unlink("/etc/ld.so.cache")), "passwd": attempt(lambda: open("/etc/passwd"))}}))
"#
        );
        let r = run(
            who,
            &shows_the_cache,
            &["--audit-log", log.to_str().unwrap()],
            &["-c", &code],
            None,
        );
        r.assert_code(0);
        let v = r.json();
        assert_eq!(v["sha"], host_sha.as_str(), "{who:?}: {v}");
        assert_eq!(v["list"], "EACCES", "{who:?}: {v}");
        assert_eq!(v["append"], "EACCES", "{who:?}: {v}");
        assert_eq!(v["unlink"], "EROFS", "{who:?}: {v}");
        assert_eq!(v["passwd"], "ENOENT", "{who:?}: {v}");
        // The loader opened the cache and went straight to each library: no
        // probe of the glibc-hwcaps directories is left in the record.
        let events: Vec<serde_json::Value> = log_records(&log).into_iter().filter(|r| r["kind"] == "file").collect();
        assert!(events
            .iter()
            .any(|e| e["path"] == "/etc/ld.so.cache" && e["access"] == "read"));
        let probes: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["path"].as_str().unwrap().contains("glibc-hwcaps"))
            .collect();
        assert!(probes.is_empty(), "{who:?}: {probes:#?}");
    }
    assert_eq!(
        std::fs::read("/etc/ld.so.cache").unwrap(),
        host,
        "the host's cache changed"
    );
}

//! Every malformed profile is refused with exit 2, before anything runs, by a
//! message that names the file, the line and the key and says what is valid.

use crate::support::*;

const OK_HEAD: &str = "[mbu]\nname = \"t\"\n[exec]\nexecutables = [\"/usr/bin/python3.11\"]\n";

struct Case {
    name: &'static str,
    text: String,
    line: usize,
    says: &'static str,
}

fn case(name: &'static str, text: impl Into<String>, line: usize, says: &'static str) -> Case {
    Case {
        name,
        text: text.into(),
        line,
        says,
    }
}

fn with_head(extra: &str) -> String {
    format!("{OK_HEAD}{extra}")
}

fn cases() -> Vec<Case> {
    vec![
        case("syntax", "[mbu\nname = \"t\"\n", 1, "unclosed table, expected `]`"),
        case(
            "port-range",
            with_head("[net]\nmode = \"loopback\"\nconnect = [70000]\n"),
            7,
            "net.connect[0] = \"70000\": is not a TCP port; valid: 0 to 65535",
        ),
        case(
            "negative-port",
            with_head("[net]\nmode = \"loopback\"\nbind = [-1]\n"),
            7,
            "is not a TCP port",
        ),
        case(
            "port-without-network",
            with_head("[net]\nconnect = [443]\n"),
            6,
            "is useless with net.mode = \"none\"",
        ),
        case(
            "port-as-string",
            with_head("[net]\nmode = \"loopback\"\nbind = [\"http\"]\n"),
            7,
            "expected i64",
        ),
        case(
            "unknown-landlock-feature",
            with_head("[landlock]\nrequire = [\"fs\", \"magic\"]\n"),
            6,
            "landlock.require[1] = \"magic\": unknown Landlock feature; valid: \"fs\", \"refer\"",
        ),
        case("python-bad-module", with_head("command = [\"/usr/bin/python3.11\"]\n[fs]\nread = [\"/usr/lib/python3.11\"]\n[python]\nmodules = [\"json\", \"os path\"]\n"), 9, "python.modules[1] = \"os path\": is not a module name"),
        case("python-internal-module", with_head("command = [\"/usr/bin/python3.11\"]\n[fs]\nread = [\"/usr/lib/python3.11\"]\n[python]\nmodules = [\"json\", \"gc\"]\n"), 9, "python.modules[1] = \"gc\": reaches past the interpreter guard: every live object"),
        case("python-private-module", with_head("command = [\"/usr/bin/python3.11\"]\n[fs]\nread = [\"/usr/lib/python3.11\"]\n[python]\nmodules = [\"_io\"]\n"), 9, "python.modules[0] = \"_io\": reaches past the interpreter guard: a private module"),
        case("python-missing-package", with_head("command = [\"/usr/bin/python3.11\"]\n[fs]\nread = [\"/usr/lib/python3.11\"]\n[python]\npackages = [\"no_such_package_here\"]\n"), 9, "is not in any of the site-packages directories"),
        case("python-without-command", with_head("[python]\nmodules = [\"json\"]\n"), 1, "exec.command: is required with [python]"),
        case("interpreter-on-noexec", with_head("[fs]\nread = [\"/usr\", \"/lib64\"]\n"), 4, "which is only under fs.read, mounted noexec: the kernel could not map it and the execve would fail; add \"/usr/lib/x86_64-linux-gnu\" to fs.libraries"),
        case("python-dynload-not-mappable", with_head("command = [\"/usr/bin/python3.11\"]\n[fs]\nread = [\"/usr/lib/python3.11\", \"/lib64\"]\nlibraries = [\"/usr/lib/x86_64-linux-gnu\"]\n[python]\nmodules = [\"json\"]\n"), 1, "fs.libraries: must include \"/usr/lib/python3.11/lib-dynload\" for [python]"),
        case("python-without-stdlib", with_head("command = [\"/usr/bin/python3.11\"]\n[python]\nmodules = [\"json\"]\n"), 1, "fs.read: must include the interpreter's standard library \"/usr/lib/python3.11\""),
        case("memory-too-small", with_head("[limits]\nmemory = \"1M\"\n"), 6, "limits.memory = \"1M\": out of range; valid: from 8M to 1T"),
        case("memory-bad-unit", with_head("[limits]\nmemory = \"lots\"\n"), 6, "is not a size; valid:"),
        case("pids-zero", with_head("[limits]\npids = 0\n"), 6, "limits.pids = \"0\": out of range; valid: from 1 to 32768"),
        case("pids-text", with_head("[limits]\npids = \"many\"\n"), 6, "is not a number; valid: a whole number"),
        case("wall-negative", with_head("[limits]\nwall_seconds = -5\n"), 6, "is negative"),
        case("cpu-bad-unit", with_head("[limits]\ncpu_seconds = \"3 fortnights\"\n"), 6, "has an unknown unit"),
        case("cgroups-mode", with_head("[limits]\ncgroups = \"always\"\n"), 6, "unknown mode; valid: \"strict\""),
        case("limits-unknown-key", with_head("[limits]\nswap = \"1G\"\n"), 6, "unknown field `swap`, expected one of `memory`"),
        case("limits-bool", with_head("[limits]\npids = true\n"), 6, "expected a number or a string"),
        case("provenance-files-mode", with_head("[provenance]\nfiles = \"some\"\n"), 6, "provenance.files = \"some\": unknown mode; valid: \"all\", \"writes\" or \"none\""),
        case(
            "never-allowed-syscall",
            with_head("[syscalls]\nallow = [\"@default\", \"mount\"]\n"),
            6,
            "syscalls.allow[1] = \"mount\": is never allowed (the mount view is ninewall's)",
        ),
        case(
            "io-uring",
            with_head("[syscalls]\nallow = [\"@default\", \"io_uring_setup\"]\n"),
            6,
            "is never allowed (io_uring performs syscalls no filter sees)",
        ),
        case(
            "unknown-group",
            with_head("[syscalls]\nallow = [\"@everything\"]\n"),
            6,
            "unknown group; valid: @basic-io, @file-system",
        ),
        case(
            "unknown-syscall",
            with_head("[syscalls]\nallow = [\"@default\", \"frobnicate\"]\n"),
            6,
            "\"frobnicate\" is not a syscall on ",
        ),
        case(
            "bad-on-denied",
            with_head("[syscalls]\non_denied = \"shrug\"\n"),
            6,
            "unknown action; valid: \"errno\" (EPERM) or \"kill\"",
        ),
        case(
            "no-execve",
            with_head("[syscalls]\nallow = [\"@basic-io\"]\n"),
            1,
            "syscalls.allow: does not allow execve, exit, exit_group",
        ),
        case(
            "unknown-landlock-key",
            with_head("[landlock]\nabi = 3\n"),
            6,
            "unknown field `abi`, expected `require`",
        ),
        case(
            "unknown-section",
            with_head("[daemon]\nsocket = \"/run/x\"\n"),
            5,
            "unknown field `daemon`, expected one of `extends`, `mbu`, `exec`, `fs`, `net`, `landlock`, `syscalls`, `limits`, `python`, `provenance`",
        ),
        case(
            "unknown-key",
            "[mbu]\nnmae = \"t\"\n",
            2,
            "unknown field `nmae`, expected one of `name`, `description`, `delegate`",
        ),
        case(
            "delegate-path",
            "[mbu]\nname = \"t\"\ndelegate = [\"reason\", \"../etc/passwd\"]\n[exec]\nexecutables = [\"/usr/bin/python3.11\"]\n",
            3,
            "mbu.delegate[1] = \"../etc/passwd\": not an MBU name",
        ),
        case(
            "duplicate-key",
            "[mbu]\nname = \"a\"\nname = \"b\"\n",
            3,
            "duplicate key",
        ),
        case(
            "wrong-type",
            "[mbu]\nname = 5\n",
            2,
            "invalid type: integer `5`, expected a string",
        ),
        case("array-for-string", "[mbu]\nname = [\"a\"]\n", 2, "expected a string"),
        case(
            "missing-name",
            "[exec]\nexecutables = [\"/usr/bin/python3.11\"]\n",
            1,
            "mbu.name: is required",
        ),
        case(
            "bad-name",
            "[mbu]\nname = \"has space\"\n[exec]\nexecutables = [\"/usr/bin/python3.11\"]\n",
            2,
            "not a valid MBU name",
        ),
        case(
            "long-name",
            format!(
                "[mbu]\nname = \"{}\"\n[exec]\nexecutables = [\"/usr/bin/python3.11\"]\n",
                "a".repeat(64)
            ),
            2,
            "1 to 63",
        ),
        case(
            "no-executables",
            "[mbu]\nname = \"t\"\n",
            1,
            "exec.executables: is required",
        ),
        case(
            "relative-executable",
            "[mbu]\nname = \"t\"\n[exec]\nexecutables = [\"python3\"]\n",
            4,
            "exec.executables[0] = \"python3\": \"python3\" is not absolute",
        ),
        case(
            "missing-executable",
            "[mbu]\nname = \"t\"\n[exec]\nexecutables = [\"/usr/bin/no-such-program\"]\n",
            4,
            "does not exist on this host",
        ),
        case(
            "symlink-executable",
            "[mbu]\nname = \"t\"\n[exec]\nexecutables = [\"/usr/bin/python3\"]\n",
            4,
            "is a symlink (to \"python3.11\"); name the real path \"/usr/bin/python3.11\"",
        ),
        case(
            "not-executable",
            "[mbu]\nname = \"t\"\n[exec]\nexecutables = [\"/etc/passwd\"]\n",
            4,
            "has no execute permission",
        ),
        case(
            "directory-executable",
            "[mbu]\nname = \"t\"\n[exec]\nexecutables = [\"/usr/bin\"]\n",
            4,
            "is not a regular file",
        ),
        case(
            "command-not-listed",
            with_head("command = [\"/usr/bin/perl\"]\n"),
            5,
            "is not listed in exec.executables",
        ),
        case(
            "empty-command",
            with_head("command = []\n"),
            1,
            "exec.command: is empty",
        ),
        case(
            "relative-read",
            with_head("[fs]\nread = [\"usr/lib\"]\n"),
            6,
            "fs.read[0] = \"usr/lib\": \"usr/lib\" is not absolute",
        ),
        case(
            "dotdot-read",
            with_head("[fs]\nread = [\"/usr/../etc\"]\n"),
            6,
            "contains '..'",
        ),
        case(
            "trailing-slash",
            with_head("[fs]\nread = [\"/usr/lib/\"]\n"),
            6,
            "ends with '/'",
        ),
        case(
            "missing-read",
            with_head("[fs]\nread = [\"/no/such/dir\"]\n"),
            6,
            "does not exist on this host",
        ),
        case(
            "reserved-read",
            with_head("[fs]\nread = [\"/proc/self\"]\n"),
            6,
            "collides with /proc, which ninewall provides itself",
        ),
        case("root-read", with_head("[fs]\nread = [\"/\"]\n"), 6, "collides with /"),
        case(
            "symlink-parent",
            with_head("[fs]\nread = [\"/lib/x86_64-linux-gnu\"]\n"),
            6,
            "a directory above it is a symlink on this host; name the real path \"/usr/lib/x86_64-linux-gnu\"",
        ),
        case(
            "symlink-write",
            with_head("[fs]\nwrite = [\"/lib\"]\n"),
            6,
            "is a symlink (to \"usr/lib\")",
        ),
        case(
            "read-and-write",
            with_head("[fs]\nread = [\"/usr/share\"]\nwrite = [\"/usr/share\"]\n"),
            7,
            "is named twice (first at",
        ),
        case(
            "writable-executable",
            with_head("[fs]\nwrite = [\"/usr/bin\"]\n"),
            4,
            "is below the writable path \"/usr/bin\": a file may be writable or executable, never both",
        ),
        case(
            "relative-workspace",
            with_head("[fs]\nworkspace = { path = \"work\" }\n"),
            6,
            "fs.workspace.path = \"work\"",
        ),
        case(
            "reserved-workspace",
            with_head("[fs]\nworkspace = { path = \"/tmp/work\" }\n"),
            6,
            "collides with /tmp",
        ),
        case(
            "read-over-workspace",
            with_head("[fs]\nread = [\"/usr/lib/python3.11\"]\nworkspace = { path = \"/usr/lib/python3.11/ws\" }\n"),
            6,
            "overlaps the workspace",
        ),
        case(
            "bad-size-unit",
            with_head("[fs]\nworkspace = { size = \"64 parsecs\" }\n"),
            6,
            "unknown unit",
        ),
        case(
            "size-too-small",
            with_head("[fs]\ntmp = { size = \"1K\" }\n"),
            6,
            "out of range; valid: from 64K to 64G",
        ),
        case(
            "size-as-number",
            with_head("[fs]\ntmp = { size = 65536 }\n"),
            6,
            "expected a string",
        ),
        case(
            "bad-net",
            with_head("[net]\nmode = \"internet\"\n"),
            6,
            "unknown network mode; valid: \"none\", \"loopback\" or \"proxy\" (with net.allow)",
        ),
        case(
            "allow-without-proxy",
            with_head("[net]\nmode = \"loopback\"\nallow = [\"api.example:443\"]\n"),
            7,
            "net.allow[0] = \"api.example:443\": needs the proxy; valid: set net.mode = \"proxy\"",
        ),
        case(
            "allow-without-port",
            with_head("[net]\nmode = \"proxy\"\nallow = [\"api.example\"]\n"),
            7,
            "net.allow[0] = \"api.example\": has no port; valid: \"HOST:PORT\"",
        ),
        case(
            "allow-too-wide",
            with_head("[net]\nmode = \"proxy\"\nallow = [\"*.com:443\"]\n"),
            7,
            "would match every name under a top-level domain",
        ),
        case(
            "allow-network-bits",
            with_head("[net]\nmode = \"proxy\"\nallow = [\"10.1.2.3/16:5432\"]\n"),
            7,
            "has bits set past the prefix; valid: 10.1.0.0/16",
        ),
        case(
            "proxy-env",
            with_head("env = { HTTPS_PROXY = \"http://elsewhere:3128\" }\n[net]\nmode = \"proxy\"\nallow = [\"api.example:443\"]\n"),
            5,
            "is set by the proxy",
        ),
        case(
            "disk-and-fs-write",
            with_head("[fs]\nwrite = [\"/var/tmp\"]\n[limits]\ndisk = \"1G\"\n"),
            8,
            "limits.disk = \"1G\": bounds the host workspace only",
        ),
        case(
            "disk-too-small",
            with_head("[limits]\ndisk = \"4K\"\n"),
            6,
            "limits.disk = \"4K\": out of range; valid: from 1M",
        ),
        case(
            "proxy-bind",
            with_head("[net]\nmode = \"proxy\"\nallow = [\"api.example:443\"]\nbind = [3128]\n"),
            8,
            "is the proxy's port",
        ),
        case(
            "bad-env-name",
            with_head("env = { \"1ABC\" = \"x\" }\n"),
            5,
            "is not a valid variable name",
        ),
        case(
            "workdir-invisible",
            with_head("workdir = \"/etc\"\n"),
            5,
            "is not a directory the sandbox can see",
        ),
        case(
            "control-in-description",
            "[mbu]\nname = \"t\"\ndescription = \"a\\u0007b\"\n[exec]\nexecutables = [\"/usr/bin/python3.11\"]\n",
            3,
            "without control characters",
        ),
        case(
            "extends-missing",
            format!("extends = \"no-such-base\"\n{OK_HEAD}"),
            1,
            "cannot read base profile",
        ),
        case(
            "extends-absolute",
            format!("extends = \"/etc/base\"\n{OK_HEAD}"),
            1,
            "is not a profile name",
        ),
        case(
            "extends-self",
            format!("extends = \"extends-self\"\n{OK_HEAD}"),
            1,
            "is already in this extends chain (a cycle)",
        ),
    ]
}

#[test]
fn every_malformed_profile_is_refused_with_its_own_message() {
    let dir = scratch_dir("invalid");
    let all = cases();
    assert!(all.len() >= 25);
    let mut failures = Vec::new();
    for c in &all {
        let path = dir.join(format!("{}.toml", c.name));
        std::fs::write(&path, &c.text).unwrap();
        let out = ninewall(Who::Root).arg("check").arg(&path).output();
        let r = Run::from_output(out.unwrap());
        let location = format!("{}:{}", path.display(), c.line);
        if r.code != 2 || !r.stderr.contains(&location) || !r.stderr.contains(c.says) || r.stderr.contains("panicked") {
            failures.push(format!(
                "{}: exit {}, wanted {location} and {:?}; got:\n{}",
                c.name, r.code, c.says, r.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_malformed_profile_never_runs_anything() {
    let dir = scratch_dir("invalid-run");
    let marker = dir.join("ran");
    // Valid in everything except one key; the command would create the marker.
    let text = format!(
        "{OK_HEAD}command = [\"/usr/bin/python3.11\", \"-c\", \"open('{}', 'w')\"]\n[fs]\nwrite = [\"{}\"]\n[net]\nmode = \"wifi\"\n",
        marker.display(),
        dir.display()
    );
    let path = dir.join("almost.toml");
    std::fs::write(&path, text).unwrap();
    let r = Run::from_output(
        ninewall(Who::Root)
            .args(["run", "--profile"])
            .arg(&path)
            .output()
            .unwrap(),
    );
    r.assert_code(2);
    assert!(r.stderr.contains("net.mode = \"wifi\""), "{r:#?}");
    assert!(!marker.exists());
}

#[test]
fn a_profile_that_extends_a_missing_base_from_a_chain_names_the_chain_link() {
    let dir = scratch_dir("chain");
    std::fs::write(dir.join("a.toml"), format!("extends = \"b\"\n{OK_HEAD}")).unwrap();
    std::fs::write(dir.join("b.toml"), "extends = \"a\"\n").unwrap();
    let r = check_profile(&dir.join("a.toml"), false);
    r.assert_code(2);
    assert!(r.stderr.contains("b.toml:1: extends"), "{r:#?}");
    assert!(r.stderr.contains("a cycle"), "{r:#?}");
}

#[test]
fn oversized_and_binary_profiles_are_refused() {
    let dir = scratch_dir("odd");
    let big = dir.join("big.toml");
    std::fs::write(&big, format!("{OK_HEAD}# {}\n", "x".repeat(300 * 1024))).unwrap();
    let r = check_profile(&big, false);
    r.assert_code(2);
    assert!(r.stderr.contains("at most 262144 bytes are accepted"), "{r:#?}");
    let bin = dir.join("binary.toml");
    std::fs::write(&bin, b"[mbu]\nname = \"\xff\xfe\"\n").unwrap();
    let r = check_profile(&bin, false);
    r.assert_code(2);
    assert!(
        r.stderr.contains(":2:") && r.stderr.contains("not valid UTF-8"),
        "{r:#?}"
    );
    let missing = check_profile(&dir.join("none.toml"), false);
    missing.assert_code(2);
    assert!(missing.stderr.contains("cannot read profile"), "{missing:#?}");
}

//! Test support: running the real `ninewall` binary as root and as an
//! unprivileged user, and skipping honestly.
//!
//! When the tests run as root they run every sandbox twice: as root, and as the
//! unprivileged user named by `NINEWALL_TEST_USER` (CI creates one). When they
//! run as an ordinary user, only that user's run is possible. With `CI=true`
//! nothing may be skipped: a missing prerequisite fails the test instead.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Who runs `ninewall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// uid 0.
    Root,
    /// An ordinary user.
    User { uid: u32, gid: u32 },
}

impl Who {
    /// The owner a host workspace of this caller's has, and what the
    /// sandbox makes in it belongs to: the caller itself (as root, the
    /// workspace is mounted idmapped onto the execution's own identity).
    pub fn workspace_owner(self) -> (u32, u32) {
        match self {
            Who::Root => (0, 0),
            Who::User { uid, gid } => (uid, gid),
        }
    }

    /// Whether `(uid, gid)` are the host ids a sandbox of this caller may
    /// run as: the caller's own unprivileged; as root, an identity of the
    /// execution's own from ninewall's default range, never `nobody`.
    pub fn is_sandbox_host_id(self, uid: u32, gid: u32) -> bool {
        match self {
            Who::Root => uid == gid && (0x7000_0000..=0x7000_ffff).contains(&uid),
            Who::User { uid: u, gid: g } => (uid, gid) == (u, g),
        }
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns true) outside CI; fails in CI.
pub fn skip(why: &str) -> bool {
    assert!(!in_ci(), "CI=true refuses to skip: {why}");
    eprintln!("SKIPPED: {why}");
    true
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn egid() -> u32 {
    // SAFETY: getegid cannot fail.
    unsafe { libc::getegid() }
}

/// The uid and gid of a user from /etc/passwd.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// Every identity these tests can run `ninewall` as, on this host.
pub fn identities() -> Vec<Who> {
    if euid() != 0 {
        // scripts/test.sh runs the root half in its own pass.
        if std::env::var_os("NINEWALL_TEST_UNPRIVILEGED_PASS").is_none() {
            skip("not running as root: the root half of the tests does not run");
        }
        return vec![Who::User {
            uid: euid(),
            gid: egid(),
        }];
    }
    let mut out = vec![Who::Root];
    match std::env::var("NINEWALL_TEST_USER").ok().and_then(|n| lookup_user(&n)) {
        Some((uid, gid)) if uid != 0 => out.push(Who::User { uid, gid }),
        _ => {
            skip("NINEWALL_TEST_USER names no unprivileged user: the unprivileged half does not run");
        }
    }
    out
}

/// A world-readable copy of the binary and the profiles, so an unprivileged
/// user can run them whatever the checkout's permissions are.
pub struct Stage {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub profiles: PathBuf,
}

pub fn stage() -> &'static Stage {
    static STAGE: OnceLock<Stage> = OnceLock::new();
    STAGE.get_or_init(|| {
        remove_stale_stages();
        let dir = std::env::temp_dir().join(format!("ninewall-tests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("ninewall");
        std::fs::copy(env!("CARGO_BIN_EXE_ninewall"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let profiles = dir.join("profiles");
        copy_tree(&source_profiles(), &profiles);
        Stage { dir, bin, profiles }
    })
}

/// Removes the stages of earlier test processes that are gone (best effort).
fn remove_stale_stages() {
    for base in [std::env::temp_dir(), exec_base()] {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("ninewall-tests-").and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Where tests put files a sandbox must be able to *execute*: not under /tmp
/// (ninewall's own inside a sandbox). `NINEWALL_TEST_EXEC_DIR`, or /var/tmp.
pub fn exec_base() -> PathBuf {
    std::env::var_os("NINEWALL_TEST_EXEC_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

/// This test process's directory under [`exec_base`], world-readable.
pub fn exec_dir() -> PathBuf {
    let dir = exec_base().join(format!("ninewall-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The shipped profiles: the checkout's, or a readable copy named by
/// `NINEWALL_TEST_PROFILES` (scripts/test.sh, for its unprivileged pass).
pub fn source_profiles() -> PathBuf {
    std::env::var_os("NINEWALL_TEST_PROFILES")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"), PathBuf::from)
}

/// A shipped profile, staged.
pub fn profile(name: &str) -> PathBuf {
    stage().profiles.join(format!("{name}.toml"))
}

/// Writes a test profile into the staged profiles directory (so that
/// `extends = "base/python"` works) and returns its path.
pub fn write_profile(name: &str, text: &str) -> PathBuf {
    // Written aside and renamed into place: tests run in parallel, and one may
    // be reading this profile while another writes it again.
    let path = stage().profiles.join(format!("{name}.toml"));
    let tmp = stage().profiles.join(format!(".{name}.{}.tmp", unique()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A fresh directory, world-accessible, under the stage.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = stage().dir.join(format!("{name}-{}", unique()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A `ninewall` command as `who`, with a clean environment plus a canary
/// variable that must never reach a sandbox.
pub fn ninewall(who: Who) -> Command {
    let mut cmd = Command::new(&stage().bin);
    cmd.env_clear();
    cmd.env("PATH", "/usr/bin:/bin");
    cmd.env("NINEWALL_HOST_CANARY", "host-secret-environment");
    cmd.current_dir(&stage().dir);
    cmd.env("NINEWALL_AUDIT_LOG", audit_log(who));
    if let Who::User { uid, gid } = who {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// The provenance log the tests' runs append to, one per identity (a log is
/// private to the user who writes it).
pub fn audit_log(who: Who) -> PathBuf {
    let dir = stage().dir.join("audit");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let name = match who {
        Who::Root => "root".to_string(),
        Who::User { uid, .. } => uid.to_string(),
    };
    dir.join(format!("{name}.jsonl"))
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(o: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let code = o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        Run {
            code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// stdout parsed as JSON (the probes print one object).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        assert!(!self.stderr.contains("panicked"), "ninewall panicked: {self:#?}");
        self
    }
}

/// `ninewall run --profile P [extra…] -- args…` with optional stdin.
pub fn run(who: Who, profile: &Path, extra: &[&str], args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = ninewall(who);
    cmd.arg("run")
        .arg("--profile")
        .arg(profile)
        .args(extra)
        .arg("--")
        .args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        si.write_all(input.as_bytes()).unwrap();
    }
    Run::from_output(child.wait_with_output().unwrap())
}

/// Python prelude for probes: `attempt(f)` is "ok" or the errno name of the
/// refusal, so a test asserts the concrete refusal and not just "it failed".
pub const ATTEMPT_PY: &str = r#"
import json, os, errno as E
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return E.errorcode.get(e.errno, str(e.errno))
"#;

/// Runs Python `code` under `profile` (whose command is the interpreter).
pub fn python(who: Who, profile: &Path, code: &str) -> Run {
    run(who, profile, &[], &["-c", code], None)
}

/// Host processes whose command line contains `marker`.
pub fn host_processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == i32::try_from(std::process::id()).unwrap() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

/// A Python profile like reason's that may also use sockets (`@network-io`),
/// in a network namespace with no interface up.
pub fn net_profile() -> PathBuf {
    write_profile(
        "net-none",
        "extends = \"base/python\"\n[mbu]\nname = \"net-none\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\", \"-S\", \"-B\"]\n[syscalls]\nallow = [\"@default\", \"@network-io\"]\n",
    )
}

/// Every record of a provenance log, in order; none when there is no log
/// yet. A line that is not JSON fails the test (ninewall writes whole
/// lines only).
pub fn log_records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not a record ({e}): {l}", log.display())))
        .collect()
}

/// The records of a log that ninewall may be appending to: every whole
/// line. A reader can see an append half done (a write to a file is not
/// atomic to a concurrent read), so a last line without its newline is not
/// a record yet; [`log_records`] is for logs no one writes any more.
pub fn log_records_so_far(log: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let whole = text.rsplit_once('\n').map_or("", |(done, _)| done);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not a record ({e}): {l}", log.display())))
        .collect()
}

/// The ids of the executions started in a log, in order.
pub fn exec_ids(log: &Path) -> Vec<String> {
    log_records(log)
        .iter()
        .filter(|r| r["kind"] == "exec.start")
        .filter_map(|r| r["exec"].as_str().map(str::to_string))
        .collect()
}

/// Spawns `cmd` with its stdout piped and reads its first line (the
/// sandboxed program saying it is up, or what it found); the child, still
/// running, and that line, trimmed.
pub fn spawn_until_line(cmd: &mut Command) -> (std::process::Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    (child, line.trim().to_string())
}

/// `ninewall check [--json] PROFILE`, as the caller of the tests.
pub fn check_profile(profile: &Path, json: bool) -> Run {
    let mut cmd = ninewall(Who::Root);
    cmd.arg("check");
    if json {
        cmd.arg("--json");
    }
    Run::from_output(cmd.arg(profile).output().unwrap())
}

/// Checks `value` against `clients/schema/NAME.json`, the published shape
/// of a `--json` output, with the part of JSON Schema those files use
/// (`type`, `const`, `enum`, `properties`, `required`,
/// `additionalProperties`, `items`, `anyOf`, `$ref` to a sibling file).
pub fn assert_schema(name: &str, value: &serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/schema");
    let load = |file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
    };
    let schema = load(&format!("{name}.json"));
    if let Err(e) = conforms(&schema, value, "$", &load) {
        panic!("{name}.json: {e}\nvalue: {value:#}");
    }
}

fn conforms(
    schema: &serde_json::Value,
    v: &serde_json::Value,
    at: &str,
    load: &dyn Fn(&str) -> serde_json::Value,
) -> Result<(), String> {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return conforms(&load(r), v, at, load);
    }
    if let Some(alts) = schema.get("anyOf").and_then(Value::as_array) {
        let errors: Vec<String> = alts.iter().filter_map(|a| conforms(a, v, at, load).err()).collect();
        if errors.len() == alts.len() {
            return Err(format!("{at}: matches none of anyOf: {}", errors.join(" | ")));
        }
    }
    if let Some(t) = schema.get("type") {
        let kinds: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => vec![],
        };
        let is = |k: &str| match k {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "null" => v.is_null(),
            _ => false,
        };
        if !kinds.iter().any(|k| is(k)) {
            return Err(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            return Err(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let key = key.as_str().unwrap_or("");
            if !o.contains_key(key) {
                return Err(format!("{at}: no {key:?}"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(s, x, &format!("{at}.{k}"), load)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => return Err(format!("{at}: unexpected {k:?}")),
                    Some(s @ Value::Object(_)) => conforms(s, x, &format!("{at}.{k}"), load)?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            conforms(items, x, &format!("{at}[{i}]"), load)?;
        }
    }
    Ok(())
}

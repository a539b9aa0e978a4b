//! The validated policy: what one MBU's sandbox may do, with every invariant of
//! the profile format checked.
//!
//! The input of walls 2 to 9; wall 1 compares policies (`subset`).
//!
//! `Policy::from_profile` is the only way to get a [`Policy`]; it checks every
//! value against the format's rules and against this host (paths that must exist
//! do, executables are executable files), and reports *all* problems at once,
//! each naming its file, line and key and saying what would be valid.

pub mod egress;
pub mod elf;
pub mod fs;
pub mod ldcache;
pub mod subset;
mod summary;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::landlock::Feature;
use crate::profile::{At, Origin, Profile};
use crate::seccomp::{self, OnDenied};
pub use fs::{EntryKind, FsEntry};

/// The environment variable that tells an MBU whose profile may delegate
/// (`mbu.delegate`) the descriptor of its socket to the delegation service.
pub const DELEGATE_ENV: &str = "NINEWALL_DELEGATE_FD";

/// Default workspace mount point inside the sandbox.
pub const DEFAULT_WORKSPACE: &str = "/work";
/// Default size of the workspace tmpfs.
pub const DEFAULT_WORKSPACE_SIZE: u64 = 64 << 20;
/// Default size of the private `/tmp`.
pub const DEFAULT_TMP_SIZE: u64 = 16 << 20;
const MIN_TMPFS: u64 = 64 << 10;
const MAX_TMPFS: u64 = 64 << 30;
const MAX_ENV: usize = 256;
const MAX_ARGS: usize = 4096;

/// The network a sandbox has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// A network namespace with no usable interface (`lo` stays down).
    None,
    /// A network namespace with only `lo`, up.
    Loopback,
    /// As `Loopback`, and on it the supervisor's proxy (`egress`), which
    /// connects to the destinations of `net.allow` from the host's network.
    Proxy,
}

impl NetMode {
    /// How much network a mode gives, for comparing two profiles.
    pub fn rank(self) -> u8 {
        match self {
            NetMode::None => 0,
            NetMode::Loopback => 1,
            NetMode::Proxy => 2,
        }
    }

    /// The profile's word for it.
    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Loopback => "loopback",
            NetMode::Proxy => "proxy",
        }
    }
}

/// The sandbox's scratch space: a tmpfs by default, or a host directory given at
/// run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workspace {
    /// Mount point inside the sandbox.
    pub path: PathBuf,
    /// Size of the tmpfs when no host directory is given.
    pub size: u64,
}

/// One MBU's validated policy. Paths are absolute and normal, sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `mbu.name`; also the sandbox's hostname.
    pub name: String,
    /// `mbu.description`.
    pub description: String,
    /// The profile files this policy was built from, base first.
    pub sources: Vec<PathBuf>,
    /// The fixed command line, if the profile sets one.
    pub command: Option<Vec<String>>,
    /// The only files the sandbox may execute.
    pub executables: Vec<PathBuf>,
    /// The complete environment of the sandboxed program.
    pub env: BTreeMap<String, String>,
    /// The working directory inside the sandbox.
    pub workdir: PathBuf,
    /// Read-only, `noexec` binds: data.
    pub read: Vec<FsEntry>,
    /// Read-only binds whose files may be mapped executable: shared libraries and
    /// extension modules. Which files may be `execve`d is `executables`' business.
    pub libraries: Vec<FsEntry>,
    /// Read-write (and `noexec`) binds.
    pub write: Vec<FsEntry>,
    /// The host's `/etc/ld.so.cache`, shown read-only when every library it
    /// lists is in a directory of `read` or `libraries` (see [`ldcache`]).
    pub library_cache: Option<PathBuf>,
    /// The workspace.
    pub workspace: Workspace,
    /// Size of the private `/tmp`.
    pub tmp_size: u64,
    /// The network.
    pub net: NetMode,
    /// TCP ports the sandbox may connect to (Landlock).
    pub net_connect: Vec<u16>,
    /// TCP ports the sandbox may bind (Landlock).
    pub net_bind: Vec<u16>,
    /// `net.allow`: where the proxy may connect (only with `NetMode::Proxy`).
    pub net_allow: Vec<egress::Rule>,
    /// The ELF interpreters of the executables, by their real path on this
    /// host: the kernel executes them too, so Landlock must allow it.
    pub interpreters: Vec<PathBuf>,
    /// The Landlock features this profile will not run without.
    pub landlock_require: Vec<Feature>,
    /// Wall 8: the syscall allowlist.
    pub syscalls: Syscalls,
    /// Wall 9: resource limits.
    pub limits: Limits,
    /// Wall 2: the interpreter guard, when the profile has `[python]`.
    pub python: Option<crate::interpreter::PythonPolicy>,
    /// Which file accesses provenance records.
    pub record_files: RecordFiles,
    /// How many file records one execution may write.
    pub records: RecordBudget,
    /// The MBUs an execution may ask its supervisor to run as children
    /// (wall 1: each child must be a subset of this policy).
    pub delegate: Vec<String>,
}

/// How many file records one execution may write, and what happens past
/// that: identical accesses in a row are one record and a count anyway, so
/// the budget is reached by many different accesses, not by a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordBudget {
    /// `provenance.max_records` (default 100,000).
    pub max: u64,
    /// `provenance.on_overflow`.
    pub on_overflow: Overflow,
}

impl Default for RecordBudget {
    fn default() -> RecordBudget {
        RecordBudget {
            max: 100_000,
            on_overflow: Overflow::Summarize,
        }
    }
}

/// Past the record budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// The run goes on; further accesses are counted per syscall
    /// (`file.dropped`) instead of recorded one by one.
    Summarize,
    /// The run is ended (limit `records`).
    Kill,
}

/// Which file accesses the provenance log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFiles {
    /// Every path-taking syscall.
    All,
    /// Only those that may change something (open, create, delete, rename,
    /// link, chmod, truncate…): not stat, access, readlink, chdir.
    Writes,
    /// None.
    None,
}

/// Whether a run may fall back to rlimits when no cgroup can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupMode {
    /// Use cgroups when the host allows, rlimits alone otherwise (and say so).
    BestEffort,
    /// Refuse to run without cgroups (exit 125).
    Strict,
}

/// Resource limits. A profile that says nothing still gets these defaults:
/// no sandbox is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Memory in bytes (cgroup memory limit without swap; `RLIMIT_DATA`).
    pub memory: u64,
    /// Processes and threads (cgroup pids limit; `RLIMIT_NPROC`).
    pub pids: u64,
    /// CPU time in seconds, for the whole sandbox (cgroup accounting) and per
    /// process (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Wall-clock seconds, enforced by the supervisor.
    pub wall_seconds: u64,
    /// Largest file the sandbox may write (`RLIMIT_FSIZE`).
    pub file_size: u64,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Bytes of stdout and stderr passed on, together.
    pub output: u64,
    /// inotify instances the sandbox may hold, all its processes together
    /// (its user namespace's `max_inotify_instances`).
    pub inotify_instances: u64,
    /// inotify watches the sandbox may hold, all its processes together
    /// (its user namespace's `max_inotify_watches`).
    pub inotify_watches: u64,
    /// Connections the proxy makes for one execution, refused ones
    /// included (`net.mode = "proxy"`).
    pub connections: u64,
    /// Bytes one proxied connection may carry, both ways together.
    pub connection_bytes: u64,
    /// Seconds one proxied connection may last.
    pub connection_seconds: u64,
    /// Bytes an execution may add to its host workspace (`--workspace`);
    /// `None`: not bounded beyond the filesystem. Enforced by a btrfs
    /// qgroup on the workspace's subvolume; where that cannot be had,
    /// nothing runs.
    pub disk: Option<u64>,
    /// Whether cgroups are required.
    pub cgroups: CgroupMode,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: 256 << 20,
            pids: 64,
            cpu_seconds: 30,
            wall_seconds: 60,
            file_size: 64 << 20,
            open_files: 256,
            output: 8 << 20,
            inotify_instances: 16,
            inotify_watches: 4096,
            connections: 256,
            connection_bytes: 64 << 20,
            connection_seconds: 60,
            disk: None,
            cgroups: CgroupMode::BestEffort,
        }
    }
}

/// The syscall allowlist of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Syscalls {
    /// Groups and names as the profile wrote them.
    pub allow: Vec<String>,
    /// The syscalls they expand to on this architecture.
    pub names: Vec<String>,
    /// What a refused syscall gets.
    pub on_denied: OnDenied,
}

/// Syscalls the sandbox cannot start or end without.
const REQUIRED_SYSCALLS: [&str; 3] = ["execve", "exit", "exit_group"];

/// One reason a profile is not a valid policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending value is; for a missing key, the file and the key.
    pub origin: Origin,
    /// The offending value, when there is one.
    pub value: Option<String>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {v:?}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Every problem found in a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The problems, in the order of the checks.
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in &self.problems {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Collects problems while validating.
struct Checker {
    problems: Vec<Problem>,
    top: Origin,
}

impl Checker {
    fn bad<T: AsRef<str>>(&mut self, at: &At<T>, message: impl Into<String>) {
        self.problems.push(Problem {
            origin: at.origin.clone(),
            value: Some(at.value.as_ref().to_string()),
            message: message.into(),
        });
    }

    fn missing(&mut self, key: &str, message: impl Into<String>) {
        let mut origin = self.top.clone();
        origin.key = key.to_string();
        self.problems.push(Problem {
            origin,
            value: None,
            message: message.into(),
        });
    }

    fn path(&mut self, at: &At<String>) -> Option<PathBuf> {
        match fs::check_syntax(&at.value) {
            Ok(p) => Some(p),
            Err(m) => {
                self.bad(at, m.to_string());
                None
            }
        }
    }

    fn size(&mut self, at: Option<&At<String>>, default: u64) -> u64 {
        let Some(at) = at else { return default };
        match units::parse_size(&at.value) {
            Ok(n) if (MIN_TMPFS..=MAX_TMPFS).contains(&n) => n,
            Ok(_) => {
                self.bad(at, "out of range; valid: from 64K to 64G");
                default
            }
            Err(m) => {
                self.bad(at, m);
                default
            }
        }
    }
}

impl Policy {
    /// Wall 8: the address families `socket` may create, from the network
    /// the profile has: `AF_UNIX` always; with loopback `AF_INET`,
    /// `AF_INET6` and `NETLINK_ROUTE` netlink. Nothing else, ever (vsock,
    /// packet, other netlink protocols, …).
    pub fn socket_families(&self) -> Vec<crate::seccomp::Family> {
        use crate::seccomp::Family;
        match self.net {
            NetMode::None => vec![Family::Unix],
            NetMode::Loopback | NetMode::Proxy => {
                vec![Family::Unix, Family::Inet, Family::Inet6, Family::NetlinkRoute]
            }
        }
    }
}

impl Policy {
    /// Validates a merged profile against the format's rules and this host.
    pub fn from_profile(profile: &Profile) -> Result<Policy, PolicyError> {
        let top_file = profile
            .files
            .last()
            .map_or_else(|| PathBuf::from("<profile>"), |(p, _)| p.clone());
        let mut c = Checker {
            problems: Vec::new(),
            top: Origin {
                file: top_file.as_path().into(),
                line: 1,
                key: String::new(),
            },
        };

        let name = check_name(&mut c, profile.name.as_ref());
        let mut delegate: Vec<String> = Vec::new();
        for at in &profile.delegate {
            if !is_mbu_name(&at.value) {
                c.bad(
                    at,
                    "not an MBU name; valid: the name of a profile beside this one, such as \"reason\"",
                );
            } else if !delegate.contains(&at.value) {
                delegate.push(at.value.clone());
            }
        }
        let description = match &profile.description {
            Some(d) if d.value.len() > 1024 || d.value.chars().any(char::is_control) => {
                c.bad(d, "must be at most 1024 characters, without control characters");
                String::new()
            }
            Some(d) => d.value.clone(),
            None => String::new(),
        };

        // Workspace first: the fs checks below refer to it.
        let ws_path = match &profile.workspace_path {
            Some(at) => c.path(at).filter(|p| {
                if let Some(r) = fs::reserved_collision(p) {
                    c.bad(
                        at,
                        format!("collides with {r}, which ninewall provides itself; valid: a path such as \"/work\""),
                    );
                    false
                } else {
                    true
                }
            }),
            None => Some(PathBuf::from(DEFAULT_WORKSPACE)),
        };
        let workspace = Workspace {
            path: ws_path.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_WORKSPACE)),
            size: c.size(profile.workspace_size.as_ref(), DEFAULT_WORKSPACE_SIZE),
        };
        let tmp_size = c.size(profile.tmp_size.as_ref(), DEFAULT_TMP_SIZE);

        let read = check_binds(&mut c, &profile.read, true, ws_path.as_deref());
        let libraries = check_binds(&mut c, &profile.libraries, true, ws_path.as_deref());
        let write = check_binds(&mut c, &profile.write, false, ws_path.as_deref());
        check_overlaps(&mut c, &[&read, &libraries, &write]);

        let writable: Vec<PathBuf> = write
            .iter()
            .map(|(_, e)| e.path.clone())
            .chain(ws_path.iter().cloned())
            .chain(std::iter::once(PathBuf::from("/tmp")))
            .collect();
        let executables = check_executables(&mut c, &profile.executables, &writable);
        let command = check_command(&mut c, profile.command.as_ref(), &executables);
        let env = check_env(&mut c, &profile.env);
        let workdir = check_workdir(
            &mut c,
            profile.workdir.as_ref(),
            &workspace,
            &[&read, &libraries, &write],
        );

        let net = match &profile.net_mode {
            None => NetMode::None,
            Some(at) => match at.value.as_str() {
                "none" => NetMode::None,
                "loopback" => NetMode::Loopback,
                "proxy" => NetMode::Proxy,
                _ => {
                    c.bad(
                        at,
                        "unknown network mode; valid: \"none\", \"loopback\" or \"proxy\" (with net.allow)",
                    );
                    NetMode::None
                }
            },
        };

        let net_connect = check_ports(&mut c, &profile.net_connect, net);
        let net_bind = check_ports(&mut c, &profile.net_bind, net);
        let net_allow = check_allow(&mut c, profile, net);
        let mut env = env;
        if net == NetMode::Proxy {
            env.extend(proxy_env().into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        let mappable: Vec<&FsEntry> = libraries.iter().map(|(_, e)| e).collect();
        let data: Vec<&FsEntry> = read.iter().map(|(_, e)| e).collect();
        let interpreters = check_interpreters(&mut c, &profile.executables, &executables, &mappable, &data);
        let landlock_require = match &profile.landlock_require {
            None => Feature::ALL.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for at in &list.value {
                    match Feature::parse(&at.value) {
                        Some(f) if !out.contains(&f) => out.push(f),
                        Some(_) => {}
                        None => c.bad(at, "unknown Landlock feature; valid: \"fs\", \"refer\", \"truncate\", \"tcp\", \"ioctl_dev\", \"scope\""),
                    }
                }
                out
            }
        };

        let syscalls = check_syscalls(&mut c, profile);
        let limits = check_limits(&mut c, profile);
        if let (Some(at), false) = (profile.limits.get("disk"), profile.write.is_empty()) {
            c.problems.push(Problem {
                origin: at.origin.clone(),
                value: Some(at.value.to_string()),
                message: "bounds the host workspace only, and this profile also writes fs.write paths, which it would leave unbounded; valid: remove limits.disk or the fs.write entries".into(),
            });
        }
        let record_files = match &profile.provenance_files {
            None => RecordFiles::All,
            Some(at) => match at.value.as_str() {
                "all" => RecordFiles::All,
                "writes" => RecordFiles::Writes,
                "none" => RecordFiles::None,
                _ => {
                    c.bad(at, "unknown mode; valid: \"all\", \"writes\" or \"none\"");
                    RecordFiles::All
                }
            },
        };
        let records = check_record_budget(&mut c, profile);
        let python = check_python(&mut c, profile, command.as_deref(), &[&read, &libraries]);

        if !c.problems.is_empty() {
            return Err(PolicyError { problems: c.problems });
        }
        let others: Vec<&FsEntry> = write.iter().map(|(_, e)| e).collect();
        let binds: Vec<&FsEntry> = read.iter().chain(libraries.iter()).map(|(_, e)| e).collect();
        let library_cache = ldcache::for_sandbox(&binds, &others);
        Ok(Policy {
            name,
            description,
            sources: profile.files.iter().map(|(p, _)| p.clone()).collect(),
            command,
            executables,
            env,
            workdir,
            read: read.into_iter().map(|(_, e)| e).collect(),
            libraries: libraries.into_iter().map(|(_, e)| e).collect(),
            write: write.into_iter().map(|(_, e)| e).collect(),
            library_cache,
            workspace,
            tmp_size,
            net,
            net_connect,
            net_bind,
            net_allow,
            interpreters,
            landlock_require,
            syscalls,
            limits,
            python,
            record_files,
            records,
            delegate,
        })
    }
}

fn check_python(
    c: &mut Checker,
    profile: &Profile,
    command: Option<&[String]>,
    views: &[&Vec<Located<'_>>],
) -> Option<crate::interpreter::PythonPolicy> {
    use crate::interpreter::{self as interp, PythonPolicy};
    if !profile.python {
        return None;
    }
    let Some(interpreter) = command.and_then(|c| c.first()) else {
        c.missing("exec.command", "is required with [python]: the interpreter the guard runs on, e.g. [\"/usr/bin/python3.11\", \"-I\", \"-S\", \"-B\"]");
        return None;
    };
    let Some(stdlib) = interp::stdlib_of(Path::new(interpreter)) else {
        c.missing("exec.command", format!("{interpreter:?} is not named like a Python 3 interpreter (python3.N), so its standard library is unknown"));
        return None;
    };
    let visible = views
        .iter()
        .flat_map(|l| l.iter())
        .any(|(_, e)| e.kind == EntryKind::Dir && fs::is_within(&stdlib, &e.path));
    if !visible {
        c.missing(
            "fs.read",
            format!("must include the interpreter's standard library {stdlib:?} for [python]"),
        );
    }
    // Extension modules (json's _json, math, ...) are mapped executable: under
    // fs.read alone (noexec) they fail at import with "failed to map segment".
    let dynload = stdlib.join("lib-dynload");
    let mappable = views.get(1).is_some_and(|libs| {
        libs.iter()
            .any(|(_, e)| e.kind == EntryKind::Dir && fs::is_within(&dynload, &e.path))
    });
    if dynload.is_dir() && !mappable {
        c.missing(
            "fs.libraries",
            format!("must include {dynload:?} for [python]: its extension modules are mapped executable, which a noexec fs.read mount refuses (imports would fail with \"failed to map segment\")"),
        );
    }
    let mut modules = Vec::new();
    for at in &profile.python_modules {
        if !interp::is_module_name(&at.value) {
            c.bad(
                at,
                "is not a module name; valid: a dotted Python name such as \"json\" or \"xml.dom\"",
            );
        } else if let Some(why) = interp::internal_module(&at.value) {
            c.bad(
                at,
                format!(
                    "reaches past the interpreter guard: {why}; valid: modules of ordinary computation (json, re, math, collections, ...)"
                ),
            );
        } else if !modules.contains(&at.value) {
            modules.push(at.value.clone());
        }
    }
    let mut site: Vec<PathBuf> = Vec::new();
    if profile.python_site_packages.is_empty() {
        site.extend(
            interp::DEFAULT_SITE_PACKAGES
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.is_dir()),
        );
    }
    for at in &profile.python_site_packages {
        let Some(path) = c.path(at) else { continue };
        match fs::resolve_on_host(&path, false) {
            Ok(EntryKind::Dir) => site.push(path),
            Ok(_) => c.bad(at, "is not a directory"),
            Err(m) => c.bad(at, m.to_string()),
        }
    }
    let mut packages: Vec<interp::Package> = Vec::new();
    for at in &profile.python_packages {
        if !interp::is_module_name(&at.value) || at.value.contains('.') {
            c.bad(
                at,
                "is not a package name; valid: a top-level import name such as \"requests\"",
            );
            continue;
        }
        if packages.iter().any(|p| p.name == at.value) {
            continue;
        }
        match interp::find_package(&at.value, &site) {
            Some(p) => packages.push(p),
            None => c.bad(at, format!("is not in any of the site-packages directories {site:?}; valid: a package installed there (python.site_packages names others)")),
        }
    }
    Some(PythonPolicy {
        modules,
        packages,
        stdlib,
    })
}

fn check_record_budget(c: &mut Checker, profile: &Profile) -> RecordBudget {
    use crate::profile::Scalar;
    let mut budget = RecordBudget::default();
    if let Some(at) = &profile.provenance_max_records {
        match &at.value {
            Scalar::Int(n) if (100..=10_000_000).contains(n) => budget.max = n.unsigned_abs(),
            _ => c.problems.push(Problem {
                origin: at.origin.clone(),
                value: Some(at.value.to_string()),
                message: "out of range; valid: a whole number from 100 to 10000000".into(),
            }),
        }
    }
    if let Some(at) = &profile.provenance_on_overflow {
        match at.value.as_str() {
            "summarize" => {}
            "kill" => budget.on_overflow = Overflow::Kill,
            _ => c.bad(
                at,
                "unknown mode; valid: \"summarize\" (go on, count the rest) or \"kill\" (end the run)",
            ),
        }
    }
    budget
}

fn check_limits(c: &mut Checker, profile: &Profile) -> Limits {
    use crate::profile::Scalar;
    let mut limits = Limits::default();
    for (key, at) in &profile.limits {
        let bad = |c: &mut Checker, message: String| {
            c.problems.push(Problem {
                origin: at.origin.clone(),
                value: Some(at.value.to_string()),
                message,
            });
        };
        let size = |min: u64, max: u64| -> Result<u64, String> {
            let n = match &at.value {
                Scalar::Int(n) => u64::try_from(*n).map_err(|_| "is negative".to_string())?,
                Scalar::Text(t) => units::parse_size(t)?,
            };
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "out of range; valid: from {} to {}",
                    units::format_size(min),
                    units::format_size(max)
                ))
            }
        };
        let seconds = |max: u64| -> Result<u64, String> {
            let n = match &at.value {
                Scalar::Int(n) => u64::try_from(*n).map_err(|_| "is negative".to_string())?,
                Scalar::Text(t) => units::parse_seconds(t)?,
            };
            if (1..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("out of range; valid: from 1 second to {max} seconds"))
            }
        };
        let count = |min: u64, max: u64| -> Result<u64, String> {
            match &at.value {
                Scalar::Int(n) if u64::try_from(*n).is_ok_and(|n| (min..=max).contains(&n)) => Ok(n.unsigned_abs()),
                Scalar::Int(_) => Err(format!("out of range; valid: from {min} to {max}")),
                Scalar::Text(_) => Err(format!("is not a number; valid: a whole number from {min} to {max}")),
            }
        };
        let result = match *key {
            "memory" => size(8 << 20, 1 << 40).map(|n| limits.memory = n),
            "pids" => count(1, 32768).map(|n| limits.pids = n),
            "cpu_seconds" => seconds(7 * 86400).map(|n| limits.cpu_seconds = n),
            "wall_seconds" => seconds(7 * 86400).map(|n| limits.wall_seconds = n),
            "file_size" => size(0, 1 << 40).map(|n| limits.file_size = n),
            "open_files" => count(16, 1 << 20).map(|n| limits.open_files = n),
            "output" => size(0, 1 << 40).map(|n| limits.output = n),
            "inotify_instances" => count(0, 1 << 16).map(|n| limits.inotify_instances = n),
            "inotify_watches" => count(0, 1 << 20).map(|n| limits.inotify_watches = n),
            "connections" => count(1, 1 << 20).map(|n| limits.connections = n),
            "connection_bytes" => size(1 << 10, 1 << 40).map(|n| limits.connection_bytes = n),
            "connection_seconds" => seconds(7 * 86400).map(|n| limits.connection_seconds = n),
            "disk" => size(1 << 20, 1 << 50).map(|n| limits.disk = Some(n)),
            "cgroups" => match &at.value {
                Scalar::Text(t) if t == "strict" => {
                    limits.cgroups = CgroupMode::Strict;
                    Ok(())
                }
                Scalar::Text(t) if t == "best-effort" => Ok(()),
                _ => Err(
                    "unknown mode; valid: \"strict\" (refuse to run without cgroups) or \"best-effort\"".to_string(),
                ),
            },
            _ => Ok(()),
        };
        if let Err(m) = result {
            bad(c, m);
        }
    }
    limits
}

fn check_syscalls(c: &mut Checker, profile: &Profile) -> Syscalls {
    let on_denied = match &profile.syscalls_on_denied {
        None => OnDenied::Errno,
        Some(at) => match at.value.as_str() {
            "errno" => OnDenied::Errno,
            "kill" => OnDenied::Kill,
            _ => {
                c.bad(
                    at,
                    "unknown action; valid: \"errno\" (EPERM) or \"kill\" (the whole process)",
                );
                OnDenied::Errno
            }
        },
    };
    let default = vec!["@default".to_string()];
    let allow: Vec<String> = if profile.syscalls_allow.is_empty() {
        default
    } else {
        profile.syscalls_allow.iter().map(|a| a.value.clone()).collect()
    };
    let Some(arch) = seccomp::Arch::native() else {
        c.missing(
            "syscalls",
            "wall 8 (seccomp) has no syscall table for this architecture (x86_64 and aarch64 only)",
        );
        return Syscalls {
            allow,
            names: vec![],
            on_denied,
        };
    };
    let groups: Vec<&str> = seccomp::GROUPS.iter().map(|g| g.name).collect();
    let before = c.problems.len();
    for at in &profile.syscalls_allow {
        let v = at.value.as_str();
        if v.starts_with('@') {
            if seccomp::group(v).is_none() {
                c.bad(at, format!("unknown group; valid: {}", groups.join(", ")));
            }
        } else if let Some(why) = seccomp::never(v) {
            c.bad(at, format!("is never allowed ({why})"));
        } else if let Err(m) = seccomp::compile(&std::collections::BTreeSet::from([v.to_string()]), on_denied, arch) {
            c.bad(
                at,
                format!("{m}; valid: a syscall name or one of {}", groups.join(", ")),
            );
        }
    }
    let names = seccomp::expand(&allow, arch).unwrap_or_default();
    let missing: Vec<&str> = REQUIRED_SYSCALLS
        .iter()
        .copied()
        .filter(|r| !names.contains(*r))
        .collect();
    if !missing.is_empty() && c.problems.len() == before {
        c.missing(
            "syscalls.allow",
            format!("does not allow {}, without which no program starts or ends; valid: add them (they are in @process and @default)", missing.join(", ")),
        );
    }
    Syscalls {
        allow,
        names: names.into_iter().collect(),
        on_denied,
    }
}

/// The environment a proxied sandbox gets, so that ordinary clients use the
/// proxy without being told: curl, pip, requests and urllib read the
/// `*_PROXY` variables (some only the lower-case ones); `ALL_PROXY` is
/// SOCKS5 with names resolved by the proxy (`socks5h`); `NINEWALL_PROXY`
/// is the plain address for clients that take one.
pub fn proxy_env() -> Vec<(&'static str, String)> {
    let http = format!("http://127.0.0.1:{}", egress::PROXY_PORT);
    let socks = format!("socks5h://127.0.0.1:{}", egress::PROXY_PORT);
    vec![
        ("HTTP_PROXY", http.clone()),
        ("HTTPS_PROXY", http.clone()),
        ("ALL_PROXY", socks.clone()),
        ("http_proxy", http.clone()),
        ("https_proxy", http),
        ("all_proxy", socks),
        ("NO_PROXY", String::new()),
        ("no_proxy", String::new()),
        ("NINEWALL_PROXY", format!("127.0.0.1:{}", egress::PROXY_PORT)),
    ]
}

fn check_allow(c: &mut Checker, profile: &Profile, net: NetMode) -> Vec<egress::Rule> {
    let mut out: Vec<egress::Rule> = Vec::new();
    for at in &profile.net_allow {
        let problem = match egress::Rule::parse(&at.value) {
            Err(m) => Some(m),
            Ok(_) if net != NetMode::Proxy => Some(format!(
                "needs the proxy; valid: set net.mode = \"proxy\" (it is \"{}\") or remove the entry",
                net.name()
            )),
            Ok(r) if out.contains(&r) => Some("is named twice".to_string()),
            Ok(r) => {
                out.push(r);
                None
            }
        };
        if let Some(m) = problem {
            c.bad(at, m);
        }
    }
    if net == NetMode::Proxy && profile.net_allow.is_empty() {
        c.missing(
            "net.allow",
            "is empty: a proxy that may connect nowhere; valid: list HOST:PORT entries (api.example:443) or set net.mode = \"loopback\"",
        );
    }
    if out.len() > egress::MAX_RULES {
        c.missing(
            "net.allow",
            format!("has {} entries; at most {} are accepted", out.len(), egress::MAX_RULES),
        );
    }
    if net == NetMode::Proxy {
        for at in &profile.net_bind {
            if at.value == i64::from(egress::PROXY_PORT) {
                c.problems.push(Problem {
                    origin: at.origin.clone(),
                    value: Some(at.value.to_string()),
                    message: "is the proxy's port with net.mode = \"proxy\"; valid: another port".into(),
                });
            }
        }
        for (name, _) in proxy_env() {
            if let Some(at) = profile.env.get(name) {
                c.bad(
                    at,
                    "is set by the proxy with net.mode = \"proxy\"; valid: remove it from exec.env",
                );
            }
        }
    }
    out
}

fn check_ports(c: &mut Checker, list: &[At<i64>], net: NetMode) -> Vec<u16> {
    let mut out = Vec::new();
    for at in list {
        let problem = match u16::try_from(at.value) {
            Err(_) => Some("is not a TCP port; valid: 0 to 65535".to_string()),
            Ok(_) if net == NetMode::None => Some(
                "is useless with net.mode = \"none\" (no interface is up); valid: set net.mode = \"loopback\" or \"proxy\", or remove the port"
                    .to_string(),
            ),
            Ok(p) if out.contains(&p) => Some("is named twice".to_string()),
            Ok(p) => {
                out.push(p);
                None
            }
        };
        if let Some(message) = problem {
            c.problems.push(Problem {
                origin: at.origin.clone(),
                value: Some(at.value.to_string()),
                message,
            });
        }
    }
    out
}

/// Finds what the kernel executes besides each executable: its ELF interpreter
/// (which the kernel maps executable, so it must be beneath fs.libraries or
/// be one of the executables: under fs.read, mounted noexec, the execve
/// fails) or, for a `#!` script, its interpreter (which must itself be one
/// of the executables).
fn check_interpreters(
    c: &mut Checker,
    list: &[At<String>],
    executables: &[PathBuf],
    mappable: &[&FsEntry],
    data: &[&FsEntry],
) -> Vec<PathBuf> {
    let within = |binds: &[&FsEntry], real: &Path| {
        binds.iter().any(|b| match b.kind {
            EntryKind::Dir => fs::is_within(real, &b.path),
            EntryKind::File => real == b.path,
            EntryKind::Symlink { .. } => false,
        })
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for exe in executables {
        let Some(at) = list.iter().find(|a| a.value.as_str() == exe.as_os_str()) else {
            continue;
        };
        match elf::loader_of(exe) {
            Ok(elf::Loader::Static) => {}
            Ok(elf::Loader::Script(interp)) => {
                // Listed by its own name, or by the file it is on this host
                // (`#!/bin/sh` with /usr/bin/dash listed).
                let real = std::fs::canonicalize(&interp).ok();
                let listed = executables.contains(&interp)
                    || real.is_some_and(|r| {
                        executables
                            .iter()
                            .any(|e| std::fs::canonicalize(e).is_ok_and(|c| c == r))
                    });
                if !listed {
                    c.bad(at, format!("is a script for {interp:?}, which is not in exec.executables; a script runs only when its interpreter is listed"));
                }
            }
            Ok(elf::Loader::Elf(interp)) => {
                let real = match std::fs::canonicalize(&interp) {
                    Ok(r) => r,
                    Err(e) => {
                        c.bad(
                            at,
                            format!("needs the ELF interpreter {interp:?}, which does not exist on this host ({e})"),
                        );
                        continue;
                    }
                };
                let dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
                if within(mappable, &real) || executables.contains(&real) {
                    if !out.contains(&real) {
                        out.push(real);
                    }
                } else if within(data, &real) {
                    c.bad(at, format!("needs the ELF interpreter {interp:?} (the file {real:?}), which is only under fs.read, mounted noexec: the kernel could not map it and the execve would fail; add {dir:?} to fs.libraries"));
                } else {
                    c.bad(at, format!("needs the ELF interpreter {interp:?} (the file {real:?}), which is not visible: add {dir:?} to fs.libraries"));
                }
            }
            Err(m) => c.bad(at, m.to_string()),
        }
    }
    out
}

/// An MBU name: 1 to 63 of letters, digits, '_', '-', '.', starting with a
/// letter or digit. It is also a file name (`NAME.toml`) and a hostname.
pub fn is_mbu_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
        && v.chars().next().is_some_and(|ch| ch.is_ascii_alphanumeric())
}

fn check_name(c: &mut Checker, name: Option<&At<String>>) -> String {
    let Some(at) = name else {
        c.missing(
            "mbu.name",
            "is required; valid: a name such as \"reason\" (letters, digits, '_', '-', '.'; at most 63)",
        );
        return String::new();
    };
    let v = &at.value;
    if !is_mbu_name(v) {
        c.bad(at, "not a valid MBU name; valid: 1 to 63 of letters, digits, '_', '-', '.', starting with a letter or digit (it becomes the sandbox's hostname)");
    }
    v.clone()
}

fn check_binds<'a>(
    c: &mut Checker,
    list: &'a [At<String>],
    read_only: bool,
    workspace: Option<&Path>,
) -> Vec<Located<'a>> {
    let mut out = Vec::new();
    for at in list {
        let Some(path) = c.path(at) else { continue };
        if let Some(r) = fs::reserved_collision(&path) {
            c.bad(at, format!("collides with {r}, which ninewall provides itself (a fresh /proc, a minimal /dev, a private /tmp); valid: a path outside them"));
            continue;
        }
        if let Some(ws) = workspace {
            if fs::is_within(&path, ws) || fs::is_within(ws, &path) {
                c.bad(
                    at,
                    format!("overlaps the workspace {ws:?}; valid: a path neither above nor below it"),
                );
                continue;
            }
        }
        match fs::resolve_on_host(&path, read_only) {
            Ok(kind) => out.push((at, FsEntry { path, kind })),
            Err(m) => c.bad(at, m.to_string()),
        }
    }
    out
}

type Located<'a> = (&'a At<String>, FsEntry);

fn check_overlaps(c: &mut Checker, lists: &[&Vec<Located<'_>>]) {
    let all: Vec<&Located<'_>> = lists.iter().flat_map(|l| l.iter()).collect();
    for (i, (at, entry)) in all.iter().enumerate() {
        if let Some((first, _)) = all.iter().take(i).find(|(_, e)| e.path == entry.path) {
            c.bad(
                at,
                format!(
                    "is named twice (first at {}); name each path once, in one of fs.read, fs.libraries, fs.write",
                    first.origin
                ),
            );
        }
    }
}

fn check_executables(c: &mut Checker, list: &[At<String>], writable: &[PathBuf]) -> Vec<PathBuf> {
    if list.is_empty() {
        c.missing(
            "exec.executables",
            "is required: the files the sandbox may execute; valid: e.g. [\"/usr/bin/python3.11\"]",
        );
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for at in list {
        let Some(path) = c.path(at) else { continue };
        if out.contains(&path) {
            c.bad(at, "is named twice");
            continue;
        }
        if let Some(w) = writable.iter().find(|w| fs::is_within(&path, w)) {
            c.bad(
                at,
                format!("is below the writable path {w:?}: a file may be writable or executable, never both"),
            );
            continue;
        }
        if let Some(r) = fs::reserved_collision(&path) {
            c.bad(
                at,
                format!("is below {r}, which ninewall provides itself; valid: an executable file of the host"),
            );
            continue;
        }
        match fs::resolve_on_host(&path, false) {
            Ok(EntryKind::File) => {
                let mode = std::fs::metadata(&path).map_or(0, |m| m.permissions().mode());
                if mode & 0o111 == 0 {
                    c.bad(at, "has no execute permission on this host");
                    continue;
                }
                if mode & 0o6000 != 0 {
                    c.bad(
                        at,
                        "is setuid or setgid on this host; such files are never executable in a sandbox",
                    );
                    continue;
                }
                out.push(path);
            }
            Ok(_) => c.bad(
                at,
                "is not a regular file; valid: an executable file such as \"/usr/bin/python3.11\"",
            ),
            Err(m) => c.bad(at, m.to_string()),
        }
    }
    out
}

fn check_command(
    c: &mut Checker,
    command: Option<&At<Vec<At<String>>>>,
    executables: &[PathBuf],
) -> Option<Vec<String>> {
    let cmd = command?;
    let Some(program) = cmd.value.first() else {
        c.missing("exec.command", "is empty; valid: the program and its fixed arguments, e.g. [\"/usr/bin/python3.11\", \"-I\"], or leave it out");
        return None;
    };
    if cmd.value.len() > MAX_ARGS {
        c.bad(program, format!("exec.command has more than {MAX_ARGS} elements"));
    }
    if !executables.iter().any(|e| e.as_os_str() == program.value.as_str()) {
        c.bad(
            program,
            "is not listed in exec.executables; the command must be one of them, named the same way",
        );
    }
    for arg in &cmd.value {
        if arg.value.contains('\0') {
            c.bad(arg, "contains a NUL byte");
        }
    }
    Some(cmd.value.iter().map(|a| a.value.clone()).collect())
}

fn check_env(c: &mut Checker, env: &BTreeMap<String, At<String>>) -> BTreeMap<String, String> {
    if env.len() > MAX_ENV {
        c.missing(
            "exec.env",
            format!("has {} variables; at most {MAX_ENV} are accepted", env.len()),
        );
    }
    let mut out = BTreeMap::new();
    for (k, at) in env {
        let ok_key = k.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !ok_key {
            c.bad(
                at,
                format!(
                    "{k:?} is not a valid variable name; valid: letters, digits and '_', not starting with a digit"
                ),
            );
        } else if at.value.contains('\0') {
            c.bad(at, "contains a NUL byte");
        } else {
            out.insert(k.clone(), at.value.clone());
        }
    }
    out
}

fn check_workdir(
    c: &mut Checker,
    workdir: Option<&At<String>>,
    workspace: &Workspace,
    binds: &[&Vec<Located<'_>>],
) -> PathBuf {
    let Some(at) = workdir else {
        return workspace.path.clone();
    };
    let Some(path) = c.path(at) else {
        return workspace.path.clone();
    };
    if fs::is_within(&path, &workspace.path) || fs::is_within(&path, Path::new("/tmp")) {
        return path;
    }
    let bound_dir = binds
        .iter()
        .flat_map(|l| l.iter())
        .any(|(_, e)| e.kind == EntryKind::Dir && fs::is_within(&path, &e.path));
    if bound_dir && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
        return path;
    }
    c.bad(at, format!(
        "is not a directory the sandbox can see; valid: the workspace {:?} or a directory in it, /tmp, or a directory below a bound fs.read, fs.libraries or fs.write directory",
        workspace.path
    ));
    path
}

//! The setup plan: everything the sandbox's processes will do, computed before
//! anything forks.
//!
//! `SetupPlan::build` is pure: a [`Policy`], a [`Request`] and the [`Host`]'s
//! facts in, plain data out, so every decision (id maps, mounts, Landlock
//! rules, the seccomp program, rlimits, which cgroup hierarchy, whether to join
//! the shared network namespace) can be tested without privileges. The
//! processes of `sandbox/` only carry the plan out.
//!
//! Mount order inside the new root (a tmpfs), as [`SetupPlan::mounts`] lists it:
//! 1. the profile's binds and symlinks, sorted by path so that a parent is
//!    mounted before anything below it: `fs.read` (read-only, `noexec`),
//!    `fs.libraries` (read-only), the ld.so cache, `exec.executables`
//!    (read-only, one file each), `fs.write` (read-write, `noexec`);
//! 2. with a `[python]` section, wall 2's interpreter guard: the guard script
//!    (a read-only file ninewall writes), its site directory, and the
//!    whitelisted packages bound into it;
//! 3. a fresh `/proc` (`hidepid=invisible`), a minimal `/dev`, a private `/tmp`;
//! 4. the workspace (tmpfs, or the `--workspace` host directory).
//!
//! `sandbox::mounts` compiles this list into init's operations, and then
//! makes the root itself read-only before `pivot_root`. Every mount is
//! `nosuid,nodev`, except the five device nodes bound into `/dev`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::host::Caller;
use crate::host::{Cgroups, Host};
use crate::landlock::{self, Grant, LandlockPlan, Place};
use crate::policy::{EntryKind, NetMode, Policy};

/// The id the sandbox sees itself as, inside its user namespace.
pub const INSIDE_ID: u32 = 1000;
/// The host id a sandbox runs as when ninewall runs as root and no identity
/// of its own was allocated (a library caller that allocates none): `nobody`.
pub const ROOT_SANDBOX_HOST_ID: u32 = 65534;
/// Size of the root tmpfs (it holds only mount points and symlinks).
pub const ROOT_TMPFS_SIZE: u64 = 1 << 20;
/// Device nodes bound into the sandbox's `/dev`.
pub const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// What a worker asks for on top of the profile.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Arguments after `--`: appended to the profile's command, or the program and
    /// its arguments when the profile has no command.
    pub args: Vec<String>,
    /// A host directory to use as the workspace instead of a tmpfs.
    pub workspace_dir: Option<PathBuf>,
    /// The owner (uid, gid) of `workspace_dir` when the supervisor bound it
    /// from a descriptor as an idmapped mount (root): the owner's files show
    /// as the sandbox's, what the sandbox makes is the owner's. `None`: bound
    /// by its path, as the caller's own id sees it (unprivileged).
    pub workspace_owner: Option<(u32, u32)>,
    /// The interpreter guard compiled for the profile's interpreter, bound
    /// read-only and started instead of its source (`None`: the source is;
    /// see `interpreter::compiled_guard`).
    pub guard_code: Option<PathBuf>,
    /// The listed executable that the program named first in `args` is on
    /// this host (`/bin/true` for `/usr/bin/true`, `python3` for
    /// `/usr/bin/python3.11`: symlinks and `PATH` followed by
    /// `pipeline::program_alias`), when it is not named as listed. It is
    /// what is executed; `argv[0]` stays as given.
    pub program: Option<PathBuf>,
}

/// ninewall's own processes in the sandbox's cgroup and pid count besides
/// the MBU's: the outer child and init.
pub const HELPERS: u64 = 2;

/// The user namespace's one-line id maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdMap {
    /// uid inside.
    pub inside_uid: u32,
    /// gid inside.
    pub inside_gid: u32,
    /// The host uid behind it.
    pub host_uid: u32,
    /// The host gid behind it.
    pub host_gid: u32,
    /// Whether the supplementary groups can be (and are) cleared. Only a
    /// privileged caller can write a gid map that leaves `setgroups` allowed; an
    /// unprivileged caller must deny it, and the sandbox keeps the caller's groups.
    pub clear_groups: bool,
    /// Whether the outer child becomes the host ids before it makes the user
    /// namespace, so that the namespace is theirs and the kernel's per-user
    /// counters (inotify instances, pending signals, …) are charged to them,
    /// not to root: when ninewall runs as root with an identity of the
    /// execution's own.
    pub own_namespace: bool,
}

/// One mount-namespace operation, in sandbox paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Mount {
    /// Bind a host path (its whole tree) at `target`.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path inside.
        target: PathBuf,
        /// A directory (true) or a single file.
        dir: bool,
        /// Read-write instead of read-only.
        writable: bool,
        /// Whether files may be executed or mapped executable from it.
        exec: bool,
    },
    /// A symlink at `link` pointing to `target`.
    Symlink {
        /// Path inside.
        link: PathBuf,
        /// Link content.
        target: PathBuf,
    },
    /// A new procfs of the sandbox's pid namespace.
    Proc {
        /// Path inside.
        target: PathBuf,
    },
    /// A read-only tmpfs holding the device nodes of [`DEVICES`] and the
    /// `fd`, `stdin`, `stdout`, `stderr` symlinks.
    Dev {
        /// Path inside.
        target: PathBuf,
    },
    /// A read-only file that ninewall writes (the interpreter guard).
    File {
        /// Path inside.
        target: PathBuf,
        /// Its contents.
        contents: String,
    },
    /// An empty directory in the root tmpfs.
    Dir {
        /// Path inside.
        target: PathBuf,
    },
    /// The host workspace, attached from the detached mount the supervisor
    /// made from its descriptor (no path is resolved again), idmapped so that
    /// `owner`'s files are the sandbox's: read-write, `nosuid,nodev,noexec`.
    Workspace {
        /// The host directory, for messages.
        source: PathBuf,
        /// Path inside.
        target: PathBuf,
        /// Its owner's (uid, gid) on the host, mapped to the sandbox's ids.
        owner: (u32, u32),
    },
    /// A writable, `noexec` tmpfs.
    Tmpfs {
        /// Path inside.
        target: PathBuf,
        /// Size in bytes.
        size: u64,
        /// Mode of its root directory.
        mode: u32,
    },
}

impl Mount {
    /// The path inside that this operation makes or covers.
    pub fn inside(&self) -> &Path {
        match self {
            Mount::Bind { target, .. }
            | Mount::Proc { target }
            | Mount::Dev { target }
            | Mount::File { target, .. }
            | Mount::Dir { target }
            | Mount::Workspace { target, .. }
            | Mount::Tmpfs { target, .. } => target,
            Mount::Symlink { link, .. } => link,
        }
    }
}

/// The symlinks of the sandbox's root directory itself (`/lib -> usr/lib`
/// on a merged-/usr host), as (link, absolute target) pairs: those that
/// nothing is mounted at or beneath. They stay what they are for the whole
/// execution (the root tmpfs is made read-only before pivot_root; mount,
/// unshare and clone's namespace flags are never allowed), so the
/// supervisor may follow them by itself before asking the kernel about the
/// rest of a path. A target with `..` is left to the kernel.
pub fn fixed_root_links(mounts: &[Mount]) -> Vec<(PathBuf, PathBuf)> {
    mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            Mount::Symlink { link, target } => Some((i, link, target)),
            _ => None,
        })
        .filter(|(i, link, target)| {
            link.parent() == Some(Path::new("/"))
                && !target.components().any(|c| c == std::path::Component::ParentDir)
                && mounts
                    .iter()
                    .enumerate()
                    .all(|(j, m)| j == *i || !m.inside().starts_with(link))
        })
        .map(|(_, link, target)| (link.clone(), Path::new("/").join(target).components().collect()))
        .collect()
}

/// The whole plan for one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupPlan {
    /// The MBU's name: the sandbox's hostname.
    pub hostname: String,
    /// Identity mapping.
    pub ids: IdMap,
    /// Network.
    pub net: NetMode,
    /// Wall 6: where the shared empty network namespace the sandbox joins
    /// instead of making its own is mounted; `None`: a namespace of its own
    /// (see `sandbox::netns` for when a sandbox may share).
    pub shared_netns: Option<PathBuf>,
    /// Wall 6 with `net.mode = "proxy"`: where the supervisor's proxy may
    /// connect the sandbox to (`net.allow`); empty otherwise.
    pub proxy: Vec<crate::policy::egress::Rule>,
    /// Mounts, in order.
    pub mounts: Vec<Mount>,
    /// Working directory inside.
    pub workdir: PathBuf,
    /// The program `execve`d: always one of the profile's executables.
    pub program: PathBuf,
    /// Its argv, `argv[0]` included.
    pub argv: Vec<String>,
    /// Its complete environment.
    pub env: Vec<(String, String)>,
    /// The Landlock ruleset; `None` only when the kernel has no Landlock and
    /// the profile does not require it.
    pub landlock: Option<LandlockPlan>,
    /// Wall 8: the syscall filter.
    pub seccomp: SeccompPlan,
    /// Wall 9: resource limits.
    pub limits: crate::policy::Limits,
    /// Wall 9: where the execution's cgroup is made (v2 tried first).
    pub cgroups: Cgroups,
    /// Wall 9's second layer: the MBU's rlimits, always applied.
    pub rlimits: Rlimits,
    /// Wall 9: the sandbox's own user namespace's limits, written to its
    /// `/proc/sys/user/` before anything of the MBU runs. They bound the
    /// sandbox; what it holds is also counted, one level up, against the
    /// host uid that owns the namespace (as root: the execution's own).
    pub user_limits: Vec<UserLimit>,
}

/// One limit of a user namespace: `/proc/sys/user/{name}` = `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UserLimit {
    /// The file under `/proc/sys/user/`.
    pub name: &'static str,
    /// Its value.
    pub value: u64,
}

impl UserLimit {
    fn for_limits(l: &crate::policy::Limits) -> Vec<UserLimit> {
        vec![
            UserLimit {
                name: "max_inotify_instances",
                value: l.inotify_instances,
            },
            UserLimit {
                name: "max_inotify_watches",
                value: l.inotify_watches,
            },
        ]
    }
}

/// A resource limited by `setrlimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resource {
    /// `RLIMIT_DATA`: the data segment and anonymous mappings.
    Data,
    /// `RLIMIT_NPROC`: processes of the sandbox's user.
    Nproc,
    /// `RLIMIT_CPU`: seconds of CPU (`SIGXCPU` at the soft limit).
    Cpu,
    /// `RLIMIT_FSIZE`: the largest file written (`SIGXFSZ`).
    Fsize,
    /// `RLIMIT_NOFILE`: open descriptors.
    Nofile,
    /// `RLIMIT_CORE`: core dumps.
    Core,
}

/// One rlimit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rlimit {
    /// Which.
    pub resource: Resource,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The MBU's rlimits, for each way wall 9 may end up built: the cgroup is
/// made after the fork, and may fail where the profile allows that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rlimits {
    /// Without a cgroup: they are the limits themselves.
    pub alone: Vec<Rlimit>,
    /// With a cgroup: the data and process limits are twice the memory and
    /// pids limits, so that the cgroup (which counts what is really used,
    /// and says so) is the one that normally fires and the rlimits only
    /// catch what it cannot see.
    pub in_cgroup: Vec<Rlimit>,
}

impl Rlimits {
    fn for_limits(l: &crate::policy::Limits) -> Rlimits {
        let set = |factor: u64| {
            let data = l.memory.saturating_mul(factor);
            let nproc = l.pids.saturating_mul(factor) + HELPERS;
            let limit = |resource, soft, hard| Rlimit { resource, soft, hard };
            vec![
                limit(Resource::Data, data, data),
                limit(Resource::Nproc, nproc, nproc),
                // SIGXCPU at the limit, SIGKILL a second later.
                limit(Resource::Cpu, l.cpu_seconds, l.cpu_seconds + 1),
                limit(Resource::Fsize, l.file_size, l.file_size),
                limit(Resource::Nofile, l.open_files, l.open_files),
                limit(Resource::Core, 0, 0),
            ]
        };
        Rlimits {
            alone: set(1),
            in_cgroup: set(2),
        }
    }
}

/// The syscall filter of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompPlan {
    /// The allowed syscalls, by name.
    pub allow: Vec<String>,
    /// What anything else gets.
    pub on_denied: crate::seccomp::OnDenied,
    /// Whether refusals go to the supervisor (which records and refuses them)
    /// instead of failing in the kernel: under `errno`.
    pub notify: bool,
    /// The path-taking syscalls the supervisor records (provenance), by name
    /// and number; they go to the supervisor and then continue.
    pub recorded: Vec<(String, u32)>,
    /// The families `socket` may create, when the allowlist has `socket`
    /// (`socketpair`: `unix` only); empty when it has not.
    pub socket_families: Vec<crate::seccomp::Family>,
    /// The BPF program as (code, jt, jf, k), compiled for this architecture.
    #[serde(skip)]
    pub program: Vec<(u16, u8, u8, u32)>,
}

impl SeccompPlan {
    /// Whether the filter sends anything to the supervisor (a refusal to
    /// count, an access to record), so that the MBU needs a listener.
    pub fn has_listener(&self) -> bool {
        self.notify || !self.recorded.is_empty()
    }
}

/// Why no plan can be made: the request does not fit the profile, or the
/// kernel cannot build a wall the profile requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The kernel lacks a Landlock feature the profile requires.
    #[error(transparent)]
    Landlock(#[from] crate::landlock::Missing),
    /// The syscall filter cannot be compiled for this machine.
    #[error("wall 8 (seccomp): {0}")]
    Seccomp(#[source] crate::seccomp::SeccompError),
    /// The profile has no command and none was given.
    #[error("profile {profile:?} has no exec.command: name the program after `--` (one of: {allowed})")]
    NoProgram {
        /// MBU name.
        profile: String,
        /// The executables, comma-separated.
        allowed: String,
    },
    /// The program named after `--` is not one of the profile's executables.
    #[error("{program:?} may not be executed under profile {profile:?}; allowed: {allowed}")]
    NotExecutable {
        /// What was asked for.
        program: String,
        /// MBU name.
        profile: String,
        /// The executables, comma-separated.
        allowed: String,
    },
    /// An argument contains a NUL byte.
    #[error("argument {index} contains a NUL byte")]
    NulInArgument {
        /// Index after `--`.
        index: usize,
    },
    /// The `--workspace` directory is unusable.
    #[error("--workspace {path:?}: {reason}")]
    Workspace {
        /// As given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl PlanError {
    /// True when the request was refused because of what it asked to execute.
    pub fn is_exec_refusal(&self) -> bool {
        matches!(self, PlanError::NotExecutable { .. })
    }

    /// True when a wall cannot be built on this kernel.
    pub fn is_wall_refusal(&self) -> bool {
        matches!(self, PlanError::Landlock(_) | PlanError::Seccomp(_))
    }
}

impl SetupPlan {
    /// Whether wall 2's interpreter guard runs (a `[python]` section).
    pub fn has_guard(&self) -> bool {
        self.mounts
            .iter()
            .any(|m| matches!(m, Mount::File { target, .. } if target == Path::new(crate::interpreter::GUARD_PATH)))
    }

    /// Builds the plan from the policy, the request and the host's facts; no
    /// I/O. A `request.workspace_dir` must already have been checked on the
    /// host (`pipeline::workspace_dir`).
    pub fn build(policy: &Policy, request: &Request, host: &Host) -> Result<SetupPlan, PlanError> {
        let ids = id_map(host.caller, host.identity);
        let (program, argv) = program_and_argv(policy, request)?;
        let mut mounts = profile_binds(policy);
        mounts.extend(guard_mounts(policy, request));
        mounts.extend(fixed_mounts(policy, request));
        // With the proxy, the only way out is its port on the sandbox's own
        // loopback; Landlock lets nothing connect elsewhere but the
        // profile's own ports.
        let mut connect = policy.net_connect.clone();
        if policy.net == NetMode::Proxy && !connect.contains(&crate::policy::egress::PROXY_PORT) {
            connect.push(crate::policy::egress::PROXY_PORT);
        }
        let landlock = landlock::plan(
            host.kernel.landlock_abi,
            &policy.landlock_require,
            &places(policy),
            &connect,
            &policy.net_bind,
        )?;

        let seccomp = seccomp_plan(policy)?;
        // A sandbox that can make no socket has no use for a network
        // namespace of its own: it joins the shared empty one where there is.
        let no_sockets = !policy.syscalls.names.iter().any(|n| n == "socket" || n == "socketpair");
        let shared_netns = host
            .shared_netns
            .clone()
            .filter(|_| policy.net == NetMode::None && no_sockets);
        Ok(SetupPlan {
            hostname: policy.name.clone(),
            ids,
            net: policy.net,
            shared_netns,
            proxy: if policy.net == NetMode::Proxy {
                policy.net_allow.clone()
            } else {
                Vec::new()
            },
            mounts,
            workdir: policy.workdir.clone(),
            program,
            argv,
            env: policy.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            landlock,
            seccomp,
            limits: policy.limits,
            cgroups: host.cgroups.clone(),
            rlimits: Rlimits::for_limits(&policy.limits),
            user_limits: UserLimit::for_limits(&policy.limits),
        })
    }
}

impl SetupPlan {
    /// This plan, built for a warm sandbox with no request, for `request`:
    /// the program, its arguments and what is mounted at the workspace are
    /// the request's, which is all a request may change of a sandbox built
    /// before it (the daemon's warm sandboxes). `request.guard_code` must be
    /// what the plan was built with.
    pub fn for_request(&self, policy: &Policy, request: &Request) -> Result<SetupPlan, PlanError> {
        let (program, argv) = program_and_argv(policy, request)?;
        let [.., workspace] = fixed_mounts(policy, request);
        let mut plan = self.clone();
        plan.program = program;
        plan.argv = argv;
        for m in &mut plan.mounts {
            if m.inside() == policy.workspace.path {
                *m = workspace.clone();
            }
        }
        Ok(plan)
    }
}

/// The program a request runs and its argv: the profile's command and the
/// request's arguments (or the program the arguments name, where the
/// profile lists executables), with the interpreter guard's path inserted
/// where the profile has `[python]`.
fn program_and_argv(policy: &Policy, request: &Request) -> Result<(PathBuf, Vec<String>), PlanError> {
    let (program, mut argv) = match &request.program {
        Some(p) if policy.command.is_none() && policy.executables.contains(p) => (p.clone(), request.args.clone()),
        _ => resolve_program(policy, &request.args)?,
    };
    if policy.python.is_some() {
        // The guard runs first and then the user's code: python [flags]
        // /.ninewall/guard.py ARGS.
        let flags = policy.command.as_ref().map_or(1, Vec::len);
        let guard = if request.guard_code.is_some() {
            crate::interpreter::GUARD_CODE_PATH
        } else {
            crate::interpreter::GUARD_PATH
        };
        argv.insert(flags.min(argv.len()), guard.to_string());
    }
    if let Some(index) = request.args.iter().position(|a| a.contains('\0')) {
        return Err(PlanError::NulInArgument { index });
    }
    Ok((program, argv))
}

/// Wall 4, step 1: the profile's binds and symlinks, parents first.
fn profile_binds(policy: &Policy) -> Vec<Mount> {
    let mut binds: Vec<Mount> = Vec::new();
    let mut add_entries = |entries: &[crate::policy::FsEntry], writable: bool, exec: bool| {
        for e in entries {
            binds.push(match &e.kind {
                EntryKind::Symlink { target } => Mount::Symlink {
                    link: e.path.clone(),
                    target: target.clone(),
                },
                kind => Mount::Bind {
                    source: e.path.clone(),
                    target: e.path.clone(),
                    dir: *kind == EntryKind::Dir,
                    writable,
                    exec,
                },
            });
        }
    };
    add_entries(&policy.read, false, false);
    add_entries(&policy.libraries, false, true);
    add_entries(&policy.write, true, false);
    if let Some(cache) = &policy.library_cache {
        binds.push(Mount::Bind {
            source: cache.clone(),
            target: cache.clone(),
            dir: false,
            writable: false,
            exec: false,
        });
    }
    for exe in &policy.executables {
        binds.push(Mount::Bind {
            source: exe.clone(),
            target: exe.clone(),
            dir: false,
            writable: false,
            exec: true,
        });
    }
    // Parents first. Path's order is component-wise, so "/usr" < "/usr/lib".
    // The sort is stable: for one path, a directory comes before a file bind.
    binds.sort_by(|a, b| mount_target(a).cmp(mount_target(b)));
    // A symlink inside a bound directory is already there (same host tree).
    let dirs: Vec<PathBuf> = binds
        .iter()
        .filter_map(|m| match m {
            Mount::Bind { target, dir: true, .. } => Some(target.clone()),
            _ => None,
        })
        .collect();
    binds.retain(|m| match m {
        Mount::Symlink { link, .. } => !dirs.iter().any(|d| link.starts_with(d) && link != d),
        _ => true,
    });

    binds
}

/// Wall 2's mounts, with a `[python]` section: the guard, its site
/// directory, the whitelisted packages in it.
fn guard_mounts(policy: &Policy, request: &Request) -> Vec<Mount> {
    let mut mounts = Vec::new();
    if let Some(py) = &policy.python {
        let mut writable: Vec<PathBuf> = vec![policy.workspace.path.clone(), PathBuf::from("/tmp")];
        writable.extend(policy.write.iter().map(|e| e.path.clone()));
        mounts.push(Mount::File {
            target: PathBuf::from(crate::interpreter::GUARD_PATH),
            contents: crate::interpreter::GUARD_SOURCE.to_string(),
        });
        mounts.push(Mount::File {
            target: PathBuf::from(crate::interpreter::GUARD_CONFIG_PATH),
            contents: crate::interpreter::guard_config(&policy.name, py, &writable, &policy.workspace.path),
        });
        if let Some(code) = &request.guard_code {
            mounts.push(Mount::Bind {
                source: code.clone(),
                target: PathBuf::from(crate::interpreter::GUARD_CODE_PATH),
                dir: false,
                writable: false,
                exec: false,
            });
        }
        mounts.push(Mount::Dir {
            target: PathBuf::from(crate::interpreter::SITE_DIR),
        });
        for pkg in &py.packages {
            let name = pkg.source.file_name().map(PathBuf::from).unwrap_or_default();
            mounts.push(Mount::Bind {
                source: pkg.source.clone(),
                target: Path::new(crate::interpreter::SITE_DIR).join(name),
                dir: pkg.dir,
                writable: false,
                exec: true,
            });
        }
    }
    mounts
}

/// Wall 4, steps 3 and 4: `/proc`, `/dev`, `/tmp` and the workspace.
fn fixed_mounts(policy: &Policy, request: &Request) -> [Mount; 4] {
    let workspace = match (&request.workspace_dir, request.workspace_owner) {
        (Some(dir), Some(owner)) => Mount::Workspace {
            source: dir.clone(),
            target: policy.workspace.path.clone(),
            owner,
        },
        (Some(dir), None) => Mount::Bind {
            source: dir.clone(),
            target: policy.workspace.path.clone(),
            dir: true,
            writable: true,
            exec: false,
        },
        (None, _) => Mount::Tmpfs {
            target: policy.workspace.path.clone(),
            size: policy.workspace.size,
            mode: 0o755,
        },
    };
    [
        Mount::Proc {
            target: PathBuf::from("/proc"),
        },
        Mount::Dev {
            target: PathBuf::from("/dev"),
        },
        Mount::Tmpfs {
            target: PathBuf::from("/tmp"),
            size: policy.tmp_size,
            mode: 0o1777,
        },
        workspace,
    ]
}

/// Wall 8: the allowlist compiled for this machine, the recorded syscalls
/// sent to the listener, and refusals too under `on_denied = "errno"`.
fn seccomp_plan(policy: &Policy) -> Result<SeccompPlan, PlanError> {
    let arch = crate::seccomp::Arch::native().ok_or(PlanError::Seccomp(crate::seccomp::SeccompError::NoTable(
        std::env::consts::ARCH,
    )))?;
    let names: std::collections::BTreeSet<String> = policy.syscalls.names.iter().cloned().collect();
    let recorded: Vec<(String, u32)> = crate::seccomp::files::FILE_SYSCALLS
        .iter()
        .filter(|(name, layout)| {
            names.contains(*name as &str)
                && match policy.record_files {
                    crate::policy::RecordFiles::All => true,
                    crate::policy::RecordFiles::Writes => !crate::seccomp::files::only_looks(*layout),
                    crate::policy::RecordFiles::None => false,
                }
        })
        .filter_map(|(name, _)| crate::seccomp::syscall_number(name).map(|nr| (name.to_string(), nr)))
        .collect();
    let nrs: Vec<u32> = recorded.iter().map(|(_, nr)| *nr).collect();
    let socket_families = if names.contains("socket") {
        policy.socket_families()
    } else {
        Vec::new()
    };
    let mut bpf = crate::seccomp::compile_recording(&names, policy.syscalls.on_denied, arch, &nrs, &socket_families)
        .map_err(PlanError::Seccomp)?;
    let notify = policy.syscalls.on_denied == crate::seccomp::OnDenied::Errno;
    if notify {
        crate::seccomp::notify_instead_of_errno(&mut bpf);
    }
    let seccomp = SeccompPlan {
        allow: policy.syscalls.names.clone(),
        on_denied: policy.syscalls.on_denied,
        notify,
        recorded,
        socket_families,
        program: bpf.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect(),
    };

    Ok(seccomp)
}

/// Every place the sandbox may use, with what it may do there (wall 7).
fn places(policy: &Policy) -> Vec<Place> {
    let mut out = Vec::new();
    let mut add = |path: &Path, dir: bool, grant: Grant| {
        out.push(Place {
            path: path.to_path_buf(),
            dir,
            grant,
        });
    };
    for (entries, grant) in [
        (&policy.read, Grant::Read),
        (&policy.libraries, Grant::Read),
        (&policy.write, Grant::Write),
    ] {
        for e in entries {
            match e.kind {
                EntryKind::Dir => add(&e.path, true, grant),
                EntryKind::File => add(&e.path, false, grant),
                EntryKind::Symlink { .. } => {}
            }
        }
    }
    if let Some(cache) = &policy.library_cache {
        add(cache, false, Grant::Read);
    }
    for exe in policy.executables.iter().chain(policy.interpreters.iter()) {
        add(exe, false, Grant::Execute);
    }
    add(&policy.workspace.path, true, Grant::Write);
    add(Path::new("/tmp"), true, Grant::Write);
    add(Path::new("/proc"), true, Grant::Read);
    add(Path::new("/dev"), true, Grant::List);
    if policy.python.is_some() {
        add(Path::new(crate::interpreter::GUARD_DIR), true, Grant::Read);
    }
    for dev in DEVICES {
        add(&Path::new("/dev").join(dev), false, Grant::Device);
    }
    out
}

fn mount_target(m: &Mount) -> &Path {
    match m {
        Mount::Bind { target, .. }
        | Mount::Proc { target }
        | Mount::Dev { target }
        | Mount::Tmpfs { target, .. }
        | Mount::File { target, .. }
        | Mount::Workspace { target, .. }
        | Mount::Dir { target } => target,
        Mount::Symlink { link, .. } => link,
    }
}

/// The id mapping for a caller: the sandbox always sees [`INSIDE_ID`]; behind it
/// is the caller itself, or, when the caller is root (a sandbox never runs as
/// host root), the `identity` allocated for this execution alone
/// (`crate::identity`), else `nobody`.
pub fn id_map(caller: Caller, identity: Option<u32>) -> IdMap {
    if caller.uid == 0 {
        let host = identity.unwrap_or(ROOT_SANDBOX_HOST_ID);
        IdMap {
            inside_uid: INSIDE_ID,
            inside_gid: INSIDE_ID,
            host_uid: host,
            host_gid: host,
            clear_groups: true,
            own_namespace: identity.is_some(),
        }
    } else {
        IdMap {
            inside_uid: INSIDE_ID,
            inside_gid: INSIDE_ID,
            host_uid: caller.uid,
            host_gid: caller.gid,
            clear_groups: false,
            own_namespace: false,
        }
    }
}

fn allowed_list(policy: &Policy) -> String {
    policy
        .executables
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The program and argv: the profile's command plus the request's arguments, or
/// the request's first argument when it names one of the executables (by its
/// full path, or by a file name that only one of them has).
fn resolve_program(policy: &Policy, args: &[String]) -> Result<(PathBuf, Vec<String>), PlanError> {
    if let Some(cmd) = &policy.command {
        let program = PathBuf::from(cmd.first().cloned().unwrap_or_default());
        let argv = cmd.iter().chain(args.iter()).cloned().collect();
        return Ok((program, argv));
    }
    let Some(first) = args.first() else {
        return Err(PlanError::NoProgram {
            profile: policy.name.clone(),
            allowed: allowed_list(policy),
        });
    };
    let by_path = policy.executables.iter().find(|e| e.as_os_str() == first.as_str());
    let by_name: Vec<&PathBuf> = policy
        .executables
        .iter()
        .filter(|e| !first.contains('/') && e.file_name() == Some(OsStr::new(first)))
        .collect();
    let program = match (by_path, by_name.as_slice()) {
        (Some(p), _) => p.clone(),
        (None, [p]) => (*p).clone(),
        _ => {
            return Err(PlanError::NotExecutable {
                program: first.clone(),
                profile: policy.name.clone(),
                allowed: allowed_list(policy),
            })
        }
    };
    Ok((program, args.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::{fixed_root_links, Mount};
    use std::path::PathBuf;

    fn link(link: &str, target: &str) -> Mount {
        Mount::Symlink {
            link: link.into(),
            target: target.into(),
        }
    }

    fn dir(target: &str) -> Mount {
        Mount::Dir { target: target.into() }
    }

    #[test]
    fn only_the_root_directorys_own_uncovered_symlinks_are_fixed() {
        let mounts = [
            link("/lib", "usr/lib"),
            link("/lib64", "/usr/lib64"),
            link("/bin", "./usr/bin"),
            link("/sbin", "../usr/sbin"),
            link("/etc/alternatives", "/usr/share"),
            link("/covered", "usr/share"),
            dir("/covered/inside"),
            dir("/usr/lib"),
        ];
        let fixed: Vec<(String, String)> = fixed_root_links(&mounts)
            .into_iter()
            .map(|(l, t)| (l.display().to_string(), t.display().to_string()))
            .collect();
        assert_eq!(
            fixed,
            [("/lib", "/usr/lib"), ("/lib64", "/usr/lib64"), ("/bin", "/usr/bin")]
                .map(|(l, t)| (l.to_string(), t.to_string()))
        );
        assert!(fixed_root_links(&[link("/lib", "usr/lib"), dir("/lib")]).is_empty());
        assert_eq!(
            fixed_root_links(&[link("/lib", "usr/lib")]),
            [(PathBuf::from("/lib"), PathBuf::from("/usr/lib"))]
        );
    }
}

//! One execution, from request to recorded end: the data flow of
//! shared/DESIGN.md, one function per arrow, each taking and returning typed
//! values.
//!
//! Every wall, in order: wall 1 in `admit`, walls 2 to 9 planned in `plan`,
//! built by `sandbox` in `spawn`; provenance in `record_start`, `supervise`
//! and `record_end`.
//!
//! ```text
//! Invocation ──admit──▶ Admission        wall 1: which profile, on whose behalf
//!            ──load───▶ Loaded           profile → policy, its digest checked
//!            ──plan───▶ Planned          policy × request × Host → SetupPlan
//!            ──spawn──▶ Launch           the sandbox forks and builds its walls
//!            ──record_start──▶ Running   exec.start on disk before the MBU runs
//!            ──supervise──▶ Supervised   wait, output, limits, file events
//!            ──record_end──▶ Finished    exec.end on disk before the caller hears
//! ```
//!
//! Everything up to `record_start` fails with an [`Error`] and nothing runs;
//! from there on the execution has an id in the log, and every way it ends
//! is recorded. [`Messages`] carries what ninewall says to the person or
//! program that asked.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::exit;
use crate::gate::delegate::{Current, Delegation};
use crate::gate::exec::{WarmRequest, WarmSays};
use crate::gate::{Gate, Peer};
use crate::host::Host;
use crate::identity::{IdRange, Identity};
use crate::plan::{IdMap, PlanError, Request, SetupPlan};
use crate::policy::units::format_size;
use crate::policy::{Overflow, Policy, RecordBudget};
use crate::profile::Profile;
use crate::provenance::{self, AuditLog, Lineage};
use crate::sandbox::{self, End, Event, Limit, Outcome, Remains, Running, SandboxError, SignalForwarder};
use crate::sys;

/// What `ninewall run` was asked to do, its arguments parsed.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The profile, given directly.
    pub profile: Option<PathBuf>,
    /// Or the role policy and the MBU it must grant.
    pub policy: Option<PathBuf>,
    /// The MBU's name, with `policy`.
    pub mbu: Option<String>,
    /// The worker to act as, with `policy`.
    pub worker: Option<String>,
    /// Who asked, when a daemon or a delegating sandbox did.
    pub lineage: Lineage,
    /// A host directory for the workspace.
    pub workspace: Option<PathBuf>,
    /// That directory, inherited open from the daemon that checked it for
    /// its client: bound from this descriptor, its path not resolved again.
    pub workspace_fd: Option<i32>,
    /// The provenance log; default: [`provenance::default_log_path`].
    pub audit_log: Option<LogSource>,
    /// Arguments after `--`.
    pub args: Vec<String>,
    /// Say which walls are built and what the run used.
    pub verbose: bool,
    /// The cgroup a daemon lends this execution (`run --cgroup`), by name.
    pub cgroup: Option<String>,
    /// Whoever asked for the run, when someone did (`run --outcome-fd`):
    /// the write end of the pipe it reads the outcome from. The run is
    /// ended (limit `cancelled`) once nobody can read it.
    pub requester: Option<std::os::fd::RawFd>,
}

/// Where the provenance log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// Opened (made if missing) at this path.
    Path(PathBuf),
    /// Inherited open, on this descriptor, from the process that started us.
    Inherited(i32),
}

impl LogSource {
    /// The log, open: the one provenance handle of this process.
    fn open(&self) -> Result<AuditLog, Error> {
        Ok(match self {
            LogSource::Path(path) => AuditLog::open(path)?,
            LogSource::Inherited(fd) => AuditLog::inherited(*fd)?,
        })
    }
}

/// How an execution ended, for the caller: the exit code, and for a recorded
/// execution its id and the limit that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// What `ninewall run` exits with.
    pub code: i32,
    /// The execution's id in the log, once its start was recorded.
    pub exec: Option<String>,
    /// The resource limit that ended it.
    pub limit: Option<Limit>,
}

/// Where ninewall's own lines go: stderr (`ninewall: …`), or kept, for an
/// outcome line that a daemon or a delegating supervisor reads.
#[derive(Default)]
pub struct Messages {
    kept: Option<Vec<String>>,
    /// Told the outcome as soon as the end is recorded and the output passed
    /// on, with the lines kept, before the sandbox's remains are reaped and
    /// its cgroup removed: whoever waits for it need not wait for that.
    on_end: Option<OnEnd>,
}

/// What [`Messages::kept_until_end`] calls with the outcome and the lines.
pub type OnEnd = Box<dyn FnOnce(&Finished, Vec<String>)>;

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("kept", &self.kept)
            .field("on_end", &self.on_end.is_some())
            .finish()
    }
}

impl Messages {
    /// Lines go to stderr.
    pub fn to_stderr() -> Messages {
        Messages {
            kept: None,
            on_end: None,
        }
    }

    /// Lines are kept for [`Messages::take`].
    pub fn kept() -> Messages {
        Messages {
            kept: Some(Vec::new()),
            on_end: None,
        }
    }

    /// Lines are kept, and given to `on_end` with the outcome of a recorded
    /// execution as soon as its end is on disk; what is said after that
    /// (nothing, when all goes well) is kept for [`Messages::take`].
    pub fn kept_until_end(on_end: OnEnd) -> Messages {
        Messages {
            kept: Some(Vec::new()),
            on_end: Some(on_end),
        }
    }

    /// Whether the outcome was already given to the `on_end` of
    /// [`Messages::kept_until_end`].
    pub fn ended(&self) -> bool {
        self.kept.is_some() && self.on_end.is_none()
    }

    fn end(&mut self, finished: &Finished) {
        if let Some(on_end) = self.on_end.take() {
            let lines = self.take();
            self.kept = Some(Vec::new());
            on_end(finished, lines);
        }
    }

    /// Says `message`, a line at a time.
    pub fn say(&mut self, message: impl std::fmt::Display) {
        let text = message.to_string();
        match &mut self.kept {
            Some(lines) => lines.extend(text.lines().map(str::to_string)),
            None => {
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                for line in text.lines() {
                    let _ = writeln!(err, "ninewall: {line}");
                }
            }
        }
    }

    /// The lines kept so far.
    pub fn take(&mut self) -> Vec<String> {
        self.kept.take().unwrap_or_default()
    }
}

/// Runs one execution to its recorded end; every failure is said and
/// becomes the exit code.
pub fn execute(invocation: &Invocation, messages: &mut Messages) -> Finished {
    let result = try_execute(invocation, messages);
    finished_or_said(result, messages)
}

/// The execution's end, or the error that ended it before its start was
/// recorded, said and made the exit code.
fn finished_or_said(result: Result<Finished, Error>, messages: &mut Messages) -> Finished {
    result.unwrap_or_else(|e| {
        messages.say(&e);
        Finished {
            code: e.exit_code(),
            exec: None,
            limit: None,
        }
    })
}

fn try_execute(invocation: &Invocation, messages: &mut Messages) -> Result<Finished, Error> {
    let mut host = Host::probe();
    let admission = admit(invocation, &host)?;
    // Wall 3: held until the end of this function, and until the sandbox's
    // processes are gone.
    let identity = identity_for(&host)?;
    host.identity = identity.as_ref().map(Identity::id);
    host.cgroups.lent.clone_from(&invocation.cgroup);
    let loaded = load(&admission)?;
    let workspace = prepare_workspace(invocation, &host, &admission.lineage)?;
    let disk = bound_disk(&loaded.policy, workspace.as_ref())?;
    let planned = plan(&loaded, invocation, workspace, &host)?;
    say_walls(invocation, &planned, messages);
    let signals = SignalForwarder::install().map_err(SandboxError::Signals)?;
    let log_source = log_source(invocation, &host)?;
    let launch = spawn(&planned, &loaded.policy, identity.as_ref(), None);
    let run = Run {
        invocation,
        caller: host.caller.uid,
        lineage: &admission.lineage,
        loaded: &loaded,
        planned: &planned,
        signals: &signals,
        warm: None,
    };
    run_launched(&run, launch, &log_source, disk, messages)
}

fn say_walls(invocation: &Invocation, planned: &Planned, messages: &mut Messages) {
    if invocation.verbose {
        for line in sandbox::wall_lines(&planned.setup) {
            messages.say(line);
        }
    }
}

/// Where the provenance log is: the one given, or the caller's default.
fn log_source(invocation: &Invocation, host: &Host) -> Result<LogSource, Error> {
    invocation
        .audit_log
        .clone()
        .or_else(|| provenance::default_log_path(host.caller.uid).map(LogSource::Path))
        .ok_or(Error::NoLog)
}

/// An execution whose sandbox is forked (or could not be), as the rest of
/// the pipeline needs it.
struct Run<'a> {
    invocation: &'a Invocation,
    /// The uid ninewall runs as.
    caller: u32,
    lineage: &'a Lineage,
    loaded: &'a Loaded,
    planned: &'a Planned,
    signals: &'a SignalForwarder,
    /// For a warm sandbox: when and from which profile its walls were built.
    warm: Option<&'a WarmBuilt>,
}

/// From the fork on: the start record, the run, the end record.
fn run_launched(
    run: &Run<'_>,
    launch: Launch,
    log_source: &LogSource,
    disk: Option<sandbox::disk::DiskBound>,
    messages: &mut Messages,
) -> Result<Finished, Error> {
    let (mut log, delegation_log) = match open_log(log_source, launch.delegation.is_some()) {
        Ok(opened) => opened,
        Err(e) => {
            launch.abandon();
            return Err(e);
        }
    };
    let exec_id = provenance::new_exec_id();
    let start = provenance::start_record(
        &exec_id,
        &run.loaded.policy,
        &run.planned.setup,
        provenance::StartContext {
            uid: run.caller,
            workspace: run.planned.workspace.as_deref(),
            profile_sha256: &run.loaded.digest,
            lineage: run.lineage,
            shared_network: launch.shared_network(),
            warm: run.warm.map(|w| provenance::WarmStart {
                built_at: &w.built_at,
                profile_sha256: &w.profile_sha256,
            }),
        },
    );
    let started = record_start(&mut log, launch, start)?;
    if run.invocation.verbose {
        messages.say(format!("provenance: execution {exec_id} in {}", log.path().display()));
    }
    let (mut running, delegation) = match started {
        (Ok(running), delegation) => (running, delegation),
        (Err(e), _) => {
            messages.say(format!("sandbox not built, nothing ran: {e}"));
            record_end(&mut log, &exec_id, Vec::new(), &Err(e.to_string()), messages);
            return Ok(Finished::recorded(exit::SANDBOX, &exec_id, None));
        }
    };
    let service = delegation.zip(delegation_log).map(|(socket, log)| {
        let parent = Parent {
            loaded: run.loaded,
            exec_id: &exec_id,
            lineage: run.lineage,
        };
        serve_delegation(socket, &parent, log)
    });
    if let Some(fd) = run.invocation.requester {
        running.cancel_when_gone(fd);
    }
    if run.invocation.verbose {
        say_resources(&running, &run.planned.setup, messages);
    }
    let records = run.loaded.policy.records;
    let mut supervised = supervise(running, run.signals, &mut log, &exec_id, records, service);
    account_disk(disk, &mut supervised);
    let verbose = run.invocation.verbose;
    Ok(finish(
        supervised,
        &mut log,
        &exec_id,
        &run.planned.setup,
        verbose,
        messages,
    ))
}

/// Wall 9, `limits.disk`, after the run: what it added to its workspace
/// (the limit named when it came to it), and the workspace's own limit
/// put back.
fn account_disk(disk: Option<sandbox::disk::DiskBound>, supervised: &mut Supervised) {
    if let (Some(bound), Ok((outcome, _))) = (disk, supervised.waited.as_mut()) {
        let used = bound.finish();
        if used.reached {
            outcome.limit.get_or_insert(Limit::Disk);
        }
        outcome.disk = Some(used);
    }
}

/// Wall 9, `limits.disk`: the host workspace bounded by its btrfs qgroup,
/// or why it cannot be (then nothing runs). Done before the plan takes the
/// workspace's tree; the bound puts the previous limit back when dropped,
/// on every way out. Only as root, where the workspace is a tree mounted
/// from one descriptor.
fn bound_disk(policy: &Policy, workspace: Option<&Workspace>) -> Result<Option<sandbox::disk::DiskBound>, Error> {
    let (Some(allowed), Some(ws)) = (policy.limits.disk, workspace) else {
        return Ok(None);
    };
    let Some(tree) = ws.tree.as_ref() else {
        return Err(SandboxError::Disk(
            "a host workspace is bounded by a btrfs qgroup, which only root can set; run as root (or the daemon), or without --workspace (the tmpfs workspace is bounded by its size)".into(),
        )
        .into());
    };
    sandbox::disk::DiskBound::set(std::os::fd::AsFd::as_fd(tree), allowed)
        .map(Some)
        .map_err(|why| SandboxError::Disk(format!("{}: {why}", ws.path.display())).into())
}

/// Wall 3: as root, an identity of this execution's own
/// (`crate::identity`); unprivileged, none (the sandbox maps onto the
/// caller).
fn identity_for(host: &Host) -> Result<Option<Identity>, Error> {
    if host.caller.uid != 0 {
        return Ok(None);
    }
    let dir = crate::host::runtime_dir().join("ids");
    Ok(Some(Identity::allocate(IdRange::configured()?, &dir)?))
}

/// The log, and a second handle on it for the delegation service when
/// there is one. Both are had before the start is recorded: after it,
/// nothing may fail without an end record.
fn open_log(source: &LogSource, delegates: bool) -> Result<(AuditLog, Option<AuditLog>), Error> {
    let log = source.open()?;
    let for_delegation = match delegates {
        true => Some(log.try_clone()?),
        false => None,
    };
    Ok((log, for_delegation))
}

/// Which profile runs, and on whose behalf.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The profile to load.
    pub profile: PathBuf,
    /// Who asked: recorded in `exec.start`.
    pub lineage: Lineage,
}

/// Wall 1: the profile given, or the MBU the role policy grants to the
/// worker this process is.
pub fn admit(invocation: &Invocation, host: &Host) -> Result<Admission, Error> {
    let (Some(policy), Some(mbu)) = (&invocation.policy, &invocation.mbu) else {
        let profile = invocation
            .profile
            .clone()
            .ok_or_else(|| Error::Usage("give --profile PROFILE, or --policy POLICY and --mbu NAME".into()))?;
        return Ok(Admission {
            profile,
            lineage: invocation.lineage.clone(),
        });
    };
    let gate = Gate::load(policy)?;
    let peer = Peer {
        uid: host.caller.uid,
        gid: host.caller.gid,
        groups: sys::own_groups(),
    };
    let worker = match &invocation.worker {
        Some(name) => gate.named_worker(name, &peer),
        None => gate.worker_for(&peer),
    }?;
    let grant = gate.grant(worker, mbu)?;
    Ok(Admission {
        profile: grant.profile,
        lineage: Lineage {
            worker: Some(grant.worker),
            role: Some(grant.role),
            client_uid: Some(host.caller.uid),
            ..invocation.lineage.clone()
        },
    })
}

/// A profile, loaded and validated.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// As written (with the files it `extends`).
    pub profile: Profile,
    /// As validated against the format and this host.
    pub policy: Policy,
    /// [`provenance::profile_digest`] of its files.
    pub digest: String,
}

/// Profile → policy. The files must still be the ones the gate checked,
/// when it said which (`Lineage::expect_profile`).
pub fn load(admission: &Admission) -> Result<Loaded, Error> {
    let (profile, policy) = load_policy(&admission.profile)?;
    let digest = provenance::profile_digest(&profile.files);
    if admission
        .lineage
        .expect_profile
        .as_ref()
        .is_some_and(|expected| *expected != digest)
    {
        return Err(Error::ProfileChanged(admission.profile.clone()));
    }
    Ok(Loaded {
        path: admission.profile.clone(),
        profile,
        policy,
        digest,
    })
}

/// Loads and validates the profile at `path` (`check`, `diff` and `run`).
pub fn load_policy(path: &Path) -> Result<(Profile, Policy), Error> {
    let found = find_profile(path);
    let profile = Profile::load(found.as_deref().unwrap_or(path)).map_err(|e| match &found {
        // A bare name found nowhere: say where it was looked for.
        None if is_profile_name(path) => Error::Usage(format!(
            "no profile named {:?}: looked for {}.toml in {} (a path to a file works too)",
            path.display().to_string(),
            path.display(),
            profile_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => e.into(),
    })?;
    let policy = Policy::from_profile(&profile)?;
    Ok((profile, policy))
}

/// The listed executable that `given` is on this host, when it is not
/// named as listed: a path whose symlinks lead to one (`/bin/true` on a
/// merged-/usr host), or a bare name that a standard `PATH` directory has
/// and that leads to one (`python3` -> `/usr/bin/python3.11`). Never a
/// file that is not one of `executables` itself.
pub fn program_alias(executables: &[PathBuf], given: &str) -> Option<PathBuf> {
    if executables.iter().any(|e| e.as_os_str() == given)
        || (!given.contains('/')
            && executables
                .iter()
                .filter(|e| e.file_name() == Some(std::ffi::OsStr::new(given)))
                .count()
                == 1)
    {
        return None;
    }
    let real = on_host(given)?;
    executables
        .iter()
        .find(|e| std::fs::canonicalize(e).is_ok_and(|r| r == real))
        .cloned()
}

/// A program named by path, or by a name in a standard `PATH` directory
/// (`/usr/local/sbin` … `/bin`, never the caller's `PATH`), as the host has
/// it: symlinks followed.
pub fn on_host(given: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if given.contains('/') {
        vec![PathBuf::from(given)]
    } else {
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .iter()
        .map(|d| Path::new(d).join(given))
        .collect()
    };
    candidates.iter().find_map(|c| std::fs::canonicalize(c).ok())
}

/// Where a profile given by name (`--profile reason`) is looked for, in
/// order: each directory of `$NINEWALL_PROFILES` (colon-separated), then
/// `/etc/ninewall/profiles` (where an installed ninewall keeps them), then
/// `profiles/` in the current directory (a checkout).
pub fn profile_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("NINEWALL_PROFILES")
        .map(|v| std::env::split_paths(&v).filter(|p| p.is_absolute()).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/etc/ninewall/profiles"));
    dirs.push(PathBuf::from("profiles"));
    dirs
}

/// A bare profile name: no directory, no extension (`reason`, not
/// `reason.toml` or `./reason`).
fn is_profile_name(given: &Path) -> bool {
    let text = given.to_string_lossy();
    !text.is_empty() && !text.contains('/') && !text.contains('.')
}

/// The file a `--profile` value names: itself if it is a file, else for a
/// bare name the first `NAME.toml` in [`profile_dirs`] that nobody but its
/// reader and root could have put there: the directory and the file owned
/// by this user or root and writable by no one else (a `profiles/` that
/// another user made in a shared current directory is passed over).
pub fn find_profile(given: &Path) -> Option<PathBuf> {
    if given.is_file() || !is_profile_name(given) {
        return None;
    }
    let trusted = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p)
            .is_ok_and(|m| (m.uid() == 0 || m.uid() == crate::sys::effective_ids().0) && m.mode() & 0o022 == 0)
    };
    profile_dirs()
        .into_iter()
        .filter(|d| trusted(d))
        .map(|d| d.join(format!("{}.toml", given.display())))
        .find(|p| p.is_file() && trusted(p))
}

/// The host workspace, checked; as root, also mounted (detached, idmapped).
#[derive(Debug)]
pub struct Workspace {
    /// The directory, resolved.
    path: PathBuf,
    /// As root: its owner, whose files are the sandbox's inside.
    owner: Option<(u32, u32)>,
    /// As root: the detached, idmapped mount init attaches.
    tree: Option<OwnedFd>,
}

/// Checks the `--workspace` directory on the host (as root: opens it once,
/// or takes the daemon's descriptor of it, checks it and mounts it from that
/// descriptor).
fn prepare_workspace(invocation: &Invocation, host: &Host, lineage: &Lineage) -> Result<Option<Workspace>, Error> {
    let Some(dir) = invocation.workspace.as_deref() else {
        return Ok(None);
    };
    let ids = crate::plan::id_map(host.caller, host.identity);
    let opened = invocation
        .workspace_fd
        .map(|fd| {
            sys::take_inherited_fd(fd).map_err(|e| PlanError::Workspace {
                path: dir.to_path_buf(),
                reason: format!("--workspace-fd {fd}: {e}"),
            })
        })
        .transpose()?;
    if ids.own_namespace {
        let prepared = idmapped_workspace(dir, opened, ids.host_uid, lineage.client_uid)?;
        return Ok(Some(Workspace {
            path: prepared.path,
            owner: Some(prepared.owner),
            tree: Some(prepared.tree),
        }));
    }
    Ok(Some(Workspace {
        path: workspace_dir(dir, opened.as_ref(), &ids)?,
        owner: None,
        tree: None,
    }))
}

/// The plan, and the host workspace it binds.
#[derive(Debug)]
pub struct Planned {
    /// Everything the sandbox will do.
    pub setup: SetupPlan,
    /// The `--workspace` directory, resolved, if one was given.
    pub workspace: Option<PathBuf>,
    /// As root: the workspace as a detached, idmapped mount, made from the
    /// one descriptor it was checked on; init attaches it.
    workspace_tree: Option<OwnedFd>,
}

/// Policy × request × host → plan. The plan itself does no I/O; the
/// workspace was checked on the host before ([`prepare_workspace`]).
pub fn plan(
    loaded: &Loaded,
    invocation: &Invocation,
    workspace: Option<Workspace>,
    host: &Host,
) -> Result<Planned, Error> {
    let (request, tree) = request_for(loaded, invocation, workspace);
    let setup = SetupPlan::build(&loaded.policy, &request, host)?;
    Ok(Planned {
        setup,
        workspace: request.workspace_dir,
        workspace_tree: tree,
    })
}

/// What the invocation asks of the profile, and the workspace's detached
/// tree (as root) that init attaches.
fn request_for(loaded: &Loaded, invocation: &Invocation, workspace: Option<Workspace>) -> (Request, Option<OwnedFd>) {
    let (path, owner, tree) = match workspace {
        Some(w) => (Some(w.path), w.owner, w.tree),
        None => (None, None, None),
    };
    // Wall 2: the guard compiled by the profile's interpreter (found in the
    // cache, or made there once), if it can be had.
    let guard_code = match (
        &loaded.policy.python,
        loaded.policy.command.as_ref().and_then(|c| c.first()),
    ) {
        (Some(_), Some(interpreter)) => crate::interpreter::compiled_guard(Path::new(interpreter)),
        _ => None,
    };
    let program = match (&loaded.policy.command, invocation.args.first()) {
        (None, Some(first)) => program_alias(&loaded.policy.executables, first),
        _ => None,
    };
    let request = Request {
        args: invocation.args.clone(),
        workspace_dir: path,
        workspace_owner: owner,
        guard_code,
        program,
    };
    (request, tree)
}

/// A root run's workspace, ready to attach.
struct IdmappedWorkspace {
    path: PathBuf,
    owner: (u32, u32),
    tree: OwnedFd,
}

/// Opens `dir` once, following no symlink in any component (or takes it as
/// `opened`, the daemon's descriptor of it, opened as its client), checks on that
/// descriptor that it is a directory its owner may write (and, for a
/// request made on a client's behalf, that the owner is that client), and
/// makes a detached mount of it, `nosuid,nodev,noexec`, idmapped so that the
/// owner's files are the sandbox's (`sandbox_id`) and what the sandbox makes
/// is the owner's. No path is resolved again: init attaches this mount.
fn idmapped_workspace(
    dir: &Path,
    opened: Option<OwnedFd>,
    sandbox_id: u32,
    client: Option<u32>,
) -> Result<IdmappedWorkspace, Error> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let err = |reason: String| PlanError::Workspace {
        path: dir.to_path_buf(),
        reason,
    };
    let path = std::path::absolute(dir).map_err(|e| err(format!("cannot be resolved: {e}")))?;
    if let Some(why) = never_a_workspace(&path) {
        return Err(err(why.into()).into());
    }
    let fd = match opened {
        Some(fd) => fd,
        None => {
            let c_path =
                std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| err("contains a NUL byte".into()))?;
            let fd = sys::open_path_no_symlinks(&c_path).map_err(|e| {
                err(match e {
                    libc::ELOOP => "a component of it is a symlink; name the real path".into(),
                    e => format!("cannot be opened: {}", std::io::Error::from_raw_os_error(e)),
                })
            })?;
            sys::own_fd(fd)
        }
    };
    let meta = std::fs::File::from(fd.try_clone().map_err(|e| err(format!("cannot be read: {e}")))?)
        .metadata()
        .map_err(|e| err(format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Err(err("is not a directory".into()).into());
    }
    if client.is_some_and(|c| c != meta.uid()) {
        return Err(err("is not the requester's own directory".into()).into());
    }
    if meta.mode() & 0o200 == 0 {
        return Err(err(format!(
            "its owner {} may not write it (mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        ))
        .into());
    }
    let owner = (meta.uid(), meta.gid());
    let unsupported = |errno: i32| Error::Idmap {
        path: path.clone(),
        filesystem: sys::filesystem_name(fd.as_raw_fd()),
        source: std::io::Error::from_raw_os_error(errno),
    };
    let userns = sys::idmap_userns(owner.0, owner.1, sandbox_id)
        .map_err(|e| unsupported(e.raw_os_error().unwrap_or(libc::EPERM)))?;
    let tree = sys::idmapped_tree(
        fd.as_raw_fd(),
        userns.as_raw_fd(),
        sys::ATTR_NOSUID | sys::ATTR_NODEV | sys::ATTR_NOEXEC,
    )
    .map_err(unsupported)?;
    Ok(IdmappedWorkspace {
        path,
        owner,
        tree: sys::own_fd(tree),
    })
}

/// Why `path` (absolute) can never be a workspace, if it cannot: the
/// host's root, or a directory of the kernel's (`/proc`, `/sys`, `/dev`).
fn never_a_workspace(path: &Path) -> Option<&'static str> {
    if path.as_os_str() == "/" {
        return Some("the host's root directory cannot be a workspace");
    }
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|p| path.starts_with(p))
        .then_some("a directory below /proc, /sys or /dev cannot be a workspace")
}

/// Checks a `--workspace` host directory: it must be a real directory (no
/// symlink anywhere on its path) that the sandbox's host uid can write, and not
/// the host's root; and, when the daemon `opened` it for its client, still the
/// directory it opened. Returns its canonical path.
pub fn workspace_dir(dir: &Path, opened: Option<&OwnedFd>, ids: &IdMap) -> Result<PathBuf, PlanError> {
    use std::os::unix::fs::MetadataExt;
    let err = |reason: String| PlanError::Workspace {
        path: dir.to_path_buf(),
        reason,
    };
    let real = std::fs::canonicalize(dir).map_err(|e| err(format!("cannot be resolved: {e}")))?;
    if let Some(why) = never_a_workspace(&real) {
        return Err(err(why.into()));
    }
    let meta = std::fs::metadata(&real).map_err(|e| err(format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Err(err("is not a directory".into()));
    }
    if let Some(fd) = opened {
        let was = std::fs::File::from(fd.try_clone().map_err(|e| err(format!("cannot be read: {e}")))?)
            .metadata()
            .map_err(|e| err(format!("cannot be read: {e}")))?;
        if (was.dev(), was.ino()) != (meta.dev(), meta.ino()) {
            return Err(err("is no longer the directory the daemon opened".into()));
        }
    }
    let mode = meta.mode();
    let writable = (meta.uid() == ids.host_uid && mode & 0o200 != 0)
        || (meta.gid() == ids.host_gid && mode & 0o020 != 0)
        || mode & 0o002 != 0;
    if !writable {
        return Err(err(format!(
            "is not writable by the sandbox's host identity {}:{} (owner {}:{}, mode {:o}); make it owned by that uid",
            ids.host_uid,
            ids.host_gid,
            meta.uid(),
            meta.gid(),
            mode & 0o7777
        )));
    }
    Ok(real)
}

// --- warm sandboxes ---------------------------------------------------------

/// When and from which profile a warm sandbox's walls were built: said in
/// its execution's start record.
#[derive(Debug, Clone)]
pub struct WarmBuilt {
    /// When its walls were built (RFC 3339).
    pub built_at: String,
    /// [`provenance::profile_digest`] of the profile they were built from.
    pub profile_sha256: String,
}

/// A warm sandbox's supervisor (`ninewall run --warm-fd`, started by the
/// daemon before anyone asks): builds the sandbox's walls that do not depend
/// on the request, says so on `control`, waits there for one request, and
/// runs it as [`execute`] would have. Nothing is recorded until the request
/// came: a warm sandbox nobody used (the daemon stopped, or dropped it) ran
/// nothing.
pub fn execute_warm(control: &UnixStream, invocation: &Invocation, messages: &mut Messages) -> Finished {
    let result = try_execute_warm(control, invocation, messages);
    finished_or_said(result, messages)
}

fn try_execute_warm(control: &UnixStream, invocation: &Invocation, messages: &mut Messages) -> Result<Finished, Error> {
    let mut host = Host::probe();
    let admission = admit(invocation, &host)?;
    let identity = identity_for(&host)?;
    host.identity = identity.as_ref().map(Identity::id);
    host.cgroups.lent.clone_from(&invocation.cgroup);
    let loaded = load(&admission)?;
    let signals = SignalForwarder::install().map_err(SandboxError::Signals)?;
    let log_source = log_source(invocation, &host)?;
    let workspace_at = loaded.policy.workspace.path.clone();
    let warm_plan = plan(&loaded, invocation, None, &host)?;
    let mut launch = spawn(&warm_plan, &loaded.policy, identity.as_ref(), Some(&workspace_at));
    let built = WarmBuilt {
        built_at: provenance::now_rfc3339(),
        profile_sha256: loaded.digest.clone(),
    };
    if let Err(e) = launch.warm_up() {
        launch.abandon();
        tell(control, &WarmSays::Failed { error: e.to_string() });
        return Err(e.into());
    }
    tell(
        control,
        &WarmSays::Ready {
            profile_sha256: built.profile_sha256.clone(),
            built_at: built.built_at.clone(),
        },
    );
    let Some((request, workspace_fd)) = wait_for_request(control, &signals) else {
        launch.abandon();
        return Err(SandboxError::Warm("no request came; nothing ran".into()).into());
    };
    if let Some(why) = changed_since(&loaded) {
        launch.abandon();
        tell(control, &WarmSays::Stale { error: why.clone() });
        return Err(SandboxError::Warm(why).into());
    }
    tell(control, &WarmSays::Taken);
    // The descriptor is the workspace's only with a workspace named.
    let workspace_fd = workspace_fd.filter(|_| request.workspace.is_some());
    let invocation = Invocation {
        args: request.args,
        workspace: request.workspace,
        workspace_fd: workspace_fd.map(std::os::fd::IntoRawFd::into_raw_fd),
        lineage: request.lineage,
        ..invocation.clone()
    };
    let (planned, disk) = match plan_request(&loaded, &invocation, &host, &warm_plan.setup) {
        Ok(p) => p,
        Err(e) => {
            launch.abandon();
            return Err(e);
        }
    };
    launch.begin(&planned, &workspace_at);
    say_walls(&invocation, &planned, messages);
    let run = Run {
        invocation: &invocation,
        caller: host.caller.uid,
        lineage: &invocation.lineage,
        loaded: &loaded,
        planned: &planned,
        signals: &signals,
        warm: Some(&built),
    };
    run_launched(&run, launch, &log_source, disk, messages)
}

/// The warm sandbox's plan for the request (only the program, its
/// arguments and what is at the workspace are the request's: the rest was
/// built), and its disk bound.
fn plan_request(
    loaded: &Loaded,
    invocation: &Invocation,
    host: &Host,
    warm: &SetupPlan,
) -> Result<(Planned, Option<sandbox::disk::DiskBound>), Error> {
    let workspace = prepare_workspace(invocation, host, &invocation.lineage)?;
    let disk = bound_disk(&loaded.policy, workspace.as_ref())?;
    let (request, tree) = request_for(loaded, invocation, workspace);
    let planned = Planned {
        setup: warm.for_request(&loaded.policy, &request)?,
        workspace: request.workspace_dir,
        workspace_tree: tree,
    };
    Ok((planned, disk))
}

/// Why the profile's files are no longer the ones loaded, if they are not.
fn changed_since(loaded: &Loaded) -> Option<String> {
    loaded.profile.files.iter().find_map(|(path, bytes)| {
        (std::fs::read(path).ok().as_ref() != Some(bytes))
            .then(|| format!("{} changed since the warm sandbox was built from it", path.display()))
    })
}

/// One line to the daemon; a daemon that is gone hears nothing.
fn tell(control: &UnixStream, says: &WarmSays) {
    use std::io::Write;
    let mut line = serde_json::to_vec(says).unwrap_or_default();
    line.push(b'\n');
    let _ = (&*control).write_all(&line);
}

/// Most bytes of a request line from the daemon.
const WARM_REQUEST_LINE_MAX: usize = 4 << 20;

/// Waits for the daemon's request: one JSON line, and the workspace's
/// descriptor with its first bytes. `None`: the daemon closed the socket, a
/// signal came, or the line is not a request.
fn wait_for_request(control: &UnixStream, signals: &SignalForwarder) -> Option<(WarmRequest, Option<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fd: Option<OwnedFd> = None;
    let mut chunk = vec![0u8; 64 << 10];
    while !line.contains(&b'\n') && line.len() <= WARM_REQUEST_LINE_MAX {
        let mut fds = [
            libc::pollfd {
                fd: control.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        sys::poll_readable(&mut fds, -1).ok()?;
        if fds[1].revents != 0 {
            return None;
        }
        let (n, got) = sys::recv_with_fd(control.as_raw_fd(), &mut chunk).ok()?;
        if got >= 0 {
            let owned = sys::own_fd(got);
            fd.get_or_insert(owned);
        }
        if n == 0 {
            return None;
        }
        line.extend_from_slice(chunk.get(..n)?);
    }
    let end = line.iter().position(|&b| b == b'\n')?;
    let request = serde_json::from_slice(line.get(..end)?).ok()?;
    Some((request, fd))
}

/// A sandbox forked and building its walls, and the supervisor's end of the
/// delegation socket when the profile may delegate.
pub struct Launch {
    sandbox: Result<Running, SandboxError>,
    delegation: Option<UnixStream>,
}

impl Launch {
    /// Where the shared empty network namespace the sandbox joined is.
    fn shared_network(&self) -> Option<&Path> {
        self.sandbox.as_ref().ok().and_then(Running::shared_network)
    }

    /// Gives the sandbox up before its start is recorded: nothing ran.
    fn abandon(self) {
        if let Ok(running) = self.sandbox {
            running.abandon();
        }
    }

    /// A warm sandbox's walls, built up to its request.
    fn warm_up(&mut self) -> Result<(), SandboxError> {
        match &mut self.sandbox {
            Ok(running) => running.warm_up(),
            Err(e) => Err(SandboxError::Warm(e.to_string())),
        }
    }

    /// Gives a warm sandbox its request; a failure is kept, to be recorded
    /// as the sandbox's (the request is an execution from here on).
    fn begin(&mut self, planned: &Planned, workspace: &Path) {
        if let Ok(running) = &mut self.sandbox {
            let tree = planned.workspace_tree.as_ref().map(std::os::fd::AsFd::as_fd);
            if let Err(e) = running.begin(&planned.setup, workspace, tree) {
                self.sandbox = Err(e);
            }
        }
    }
}

/// Forks the sandbox. It builds its walls while the start record is written;
/// its MBU waits, just before Landlock, seccomp and exec, for
/// [`Running::wait`], which is called only once that record is on disk. A
/// failure is kept in the [`Launch`]: a sandbox that was not built is an
/// execution all the same, recorded with its failure.
pub fn spawn(planned: &Planned, policy: &Policy, identity: Option<&Identity>, warm: Option<&Path>) -> Launch {
    // Wall 1 for children: a socket to the delegation service, and nothing more.
    let pair = match policy.delegate.is_empty() {
        true => Ok(None),
        false => UnixStream::pair().map(Some).map_err(SandboxError::Delegation),
    };
    match pair {
        Ok(pair) => {
            let inherit = sandbox::Inherit {
                delegate: pair.as_ref().map(|(_, inside)| inside.as_raw_fd()),
                identity: identity.map(Identity::lock_fd),
                workspace: planned.workspace_tree.as_ref().map(AsRawFd::as_raw_fd),
                warm,
            };
            let sandbox = sandbox::spawn_with(&planned.setup, inherit).and_then(|running| {
                // The id is not handed out again while this process exists.
                match identity.map_or(Ok(()), |id| id.held_by(running.outer_pid())) {
                    Ok(()) => Ok(running),
                    Err(e) => {
                        running.abandon();
                        Err(SandboxError::Identity(e))
                    }
                }
            });
            Launch {
                sandbox,
                delegation: pair.map(|(ours, _inside)| ours),
            }
        }
        Err(e) => Launch {
            sandbox: Err(e),
            delegation: None,
        },
    }
}

/// Appends `exec.start` while the sandbox gets its cgroup; nothing of the
/// MBU's runs before the record is on disk. `Err`: it could not be recorded
/// (nothing ran). `Ok` with a sandbox error: recorded, but not built.
pub fn record_start(
    log: &mut AuditLog,
    launch: Launch,
    start: serde_json::Value,
) -> Result<(Result<Running, SandboxError>, Option<UnixStream>), Error> {
    let Launch { sandbox, delegation } = launch;
    // The cgroup is made while the record is written and goes to disk.
    let sandbox = sandbox.and_then(|mut running| match running.enter_cgroup() {
        Ok(()) => Ok(running),
        Err(e) => {
            running.abandon();
            Err(e)
        }
    });
    if let Err(e) = log.append(start) {
        if let Ok(running) = sandbox {
            running.abandon();
        }
        return Err(e.into());
    }
    Ok((sandbox, delegation))
}

/// The delegating execution, as its delegation service needs it.
struct Parent<'a> {
    loaded: &'a Loaded,
    exec_id: &'a str,
    lineage: &'a Lineage,
}

/// The delegation service's thread and the child it is running, if any.
struct DelegationService {
    thread: std::thread::JoinHandle<()>,
    current: Current,
}

fn serve_delegation(socket: UnixStream, parent: &Parent<'_>, log: AuditLog) -> DelegationService {
    let service = Delegation {
        profiles: parent
            .loaded
            .path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .to_path_buf(),
        parent: parent.loaded.policy.clone(),
        parent_exec: parent.exec_id.to_string(),
        lineage: parent.lineage.clone(),
        log,
    };
    let current = Current::default();
    let watched = std::sync::Arc::clone(&current);
    let thread = std::thread::spawn(move || service.serve(socket, &watched));
    DelegationService { thread, current }
}

/// What supervising the sandbox left: how it ended (or why that is not
/// known), the file events not yet written, and how many could not be.
pub struct Supervised {
    waited: Result<(Outcome, Remains), SandboxError>,
    tail: Vec<serde_json::Value>,
    lost: u64,
}

/// File events go to the log in batches (one lock and write per batch); the
/// batch is bounded, and its rest goes to disk with the end record. 64
/// records (~100 KiB as JSON values) keep the supervisor under 4 MiB; 256
/// cost ~400 KiB more and no measurable time.
const FILE_BATCH: usize = 64;

/// Lets the MBU run and waits for its end, passing output on, forwarding
/// signals, enforcing the limits, and writing its file events as they come.
/// A delegated child still running when the parent ends is ended too.
fn supervise(
    running: Running,
    signals: &SignalForwarder,
    log: &mut AuditLog,
    exec_id: &str,
    records: RecordBudget,
    delegation: Option<DelegationService>,
) -> Supervised {
    let mut lost: u64 = 0;
    let mut recorder = provenance::FileRecorder::new(exec_id, records.max);
    let mut batch: Vec<provenance::FileLine> = Vec::with_capacity(FILE_BATCH);
    let mut flush = |log: &mut AuditLog, batch: &mut Vec<provenance::FileLine>| {
        let n = batch.len() as u64;
        if n > 0 && log.append_batch(std::mem::take(batch)).is_err() {
            lost += n;
        }
    };
    let mut net_lost: u64 = 0;
    let waited = running.wait(Some(signals), &mut |event: Event| match event {
        Event::File(e) => {
            let within = recorder.event(e, &mut batch);
            if batch.len() >= FILE_BATCH {
                flush(log, &mut batch);
            }
            within || records.on_overflow == Overflow::Summarize
        }
        Event::Connections(ended) => {
            // Wall 6's connections, as they end; `exec.end` makes them durable.
            for chunk in ended.chunks(FILE_BATCH) {
                if log.append_batch(provenance::net_records(exec_id, chunk)).is_err() {
                    net_lost += chunk.len() as u64;
                }
            }
            true
        }
    });
    lost += net_lost;
    let mut tail: Vec<serde_json::Value> = batch.drain(..).filter_map(|r| serde_json::to_value(r).ok()).collect();
    tail.extend(recorder.finish());
    if let Some(service) = delegation {
        // A child does not outlive its parent: end the one still running.
        if let Some(child) = service.current.lock().ok().and_then(|c| c.clone()) {
            child.signal(libc::SIGTERM);
        }
        let _ = service.thread.join();
    }
    Supervised { waited, tail, lost }
}

/// Records the end (the sandbox's remains are reaped and its cgroup removed
/// meanwhile) and says how it went: the outcome the caller gets.
fn finish(
    supervised: Supervised,
    log: &mut AuditLog,
    exec_id: &str,
    setup: &SetupPlan,
    verbose: bool,
    messages: &mut Messages,
) -> Finished {
    let Supervised { waited, tail, lost } = supervised;
    if lost > 0 {
        messages.say(format!(
            "provenance: {lost} file or connection records could not be written to {}",
            log.path().display()
        ));
    }
    let (outcome, unsent, _released) = match waited {
        Ok((outcome, mut remains)) => (outcome, remains.take_unsent(), remains.release()),
        Err(e) => {
            messages.say(format!("sandbox failed: {e}"));
            record_end(log, exec_id, tail, &Err(e.to_string()), messages);
            return Finished::recorded(exit::SANDBOX, exec_id, None);
        }
    };
    let result = Ok(outcome);
    // The end is on disk before the caller learns anything, and before
    // waiting for a slow reader to take the last of the output.
    let recorded = record_end(log, exec_id, tail, &result, messages);
    unsent.pass_on();
    if !recorded {
        return Finished::recorded(exit::SANDBOX, exec_id, None);
    }
    let Ok(outcome) = result else {
        return Finished::recorded(exit::SANDBOX, exec_id, None);
    };
    say_outcome(&outcome, setup, verbose, messages);
    let finished = Finished::recorded(outcome.exit_code(), exec_id, outcome.limit);
    // The remains are reaped and the cgroup removed after this.
    messages.end(&finished);
    finished
}

/// Appends the run's last file events and its end records (one write, one
/// sync); says so and returns false if it cannot.
fn record_end(
    log: &mut AuditLog,
    exec_id: &str,
    mut files: Vec<serde_json::Value>,
    result: &Result<Outcome, String>,
    messages: &mut Messages,
) -> bool {
    files.extend(provenance::end_records(exec_id, result));
    if let Err(e) = log.append_synced(files) {
        messages.say(format!("{e}: the end of execution {exec_id} is not recorded"));
        return false;
    }
    true
}

fn say_resources(running: &Running, setup: &SetupPlan, messages: &mut Messages) {
    if let Some(path) = running.shared_network() {
        messages.say(format!(
            "wall 6 network: joined the shared empty network namespace {} (the MBU can make no socket)",
            path.display()
        ));
    }
    messages.say(format!("wall 9 resources: {}", running.resources()));
    messages.say(format!("  {}", setup.limits.summary()));
}

fn say_outcome(outcome: &Outcome, setup: &SetupPlan, verbose: bool, messages: &mut Messages) {
    if let End::SetupFailed(f) = &outcome.end {
        messages.say(format!("sandbox not built, nothing ran: {f}"));
    }
    if let Some(limit) = outcome.limit {
        messages.say(format!(
            "ended by limit: {} ({})",
            limit.name(),
            limit.setting(&setup.limits)
        ));
    }
    if !outcome.refused.is_empty() {
        let list: Vec<String> = outcome.refused.iter().map(|(name, n)| format!("{name} x{n}")).collect();
        messages.say(format!("refused syscalls (wall 8): {}", list.join(", ")));
    }
    if outcome.usage.output_truncated {
        messages.say(format!(
            "output cut after {} bytes (limits.output)",
            outcome.usage.output_bytes
        ));
    }
    if verbose {
        let u = &outcome.usage;
        messages.say(format!(
            "usage: wall {} ms, cpu {} (+ {} ms recording its file accesses), peak memory {}, output {} bytes; supervisor peak RSS {} KiB",
            u.wall_ms,
            u.cpu_ms.map_or("unknown".into(), |ms| format!("{ms} ms")),
            u.recorder_cpu_ms,
            u.peak_memory.map_or("unknown".into(), format_size),
            u.output_bytes,
            sys::own_peak_rss_kib()
        ));
    }
}

impl Finished {
    fn recorded(code: i32, exec_id: &str, limit: Option<Limit>) -> Finished {
        Finished {
            code,
            exec: Some(exec_id.to_string()),
            limit,
        }
    }
}

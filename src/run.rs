//! The subcommands, as functions from parsed arguments to an exit code. Every
//! message goes to stderr prefixed `ninewall:`; nothing here panics on input.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::cli::{AuditAction, Cli, Command, RunArgs, ServeArgs};
use crate::gate::delegate::Delegation;
use crate::gate::exec::{Lineage, OutcomeLine};
use crate::gate::{Gate, Peer};
use crate::kernel::Kernel;
use crate::plan::{self, Caller, Request, SetupPlan};
use crate::policy::units::format_size;
use crate::policy::{EntryKind, FsEntry, NetMode, Policy};
use crate::profile::Profile;
use crate::provenance;
use crate::sandbox::{self, End, Limit, SignalForwarder};

/// Exit code for bad command-line or profile input.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the sandbox could not be built or the request was refused.
pub const EXIT_SANDBOX: i32 = 125;
/// Exit code when the program may not be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// Where `say` puts lines when the outcome goes to a descriptor (`--outcome-fd`):
/// then stderr is the MBU's alone.
static CAPTURED: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

fn say(message: impl std::fmt::Display) {
    let text = message.to_string();
    if let Ok(mut captured) = CAPTURED.lock() {
        if let Some(lines) = captured.as_mut() {
            lines.extend(text.lines().map(str::to_string));
            return;
        }
    }
    let mut err = std::io::stderr().lock();
    for line in text.lines() {
        let _ = writeln!(err, "ninewall: {line}");
    }
}

/// Loads and validates a profile, printing every problem.
pub fn load_policy(path: &Path) -> Result<Policy, i32> {
    load_profile(path).map(|(_, policy)| policy)
}

fn load_profile(path: &Path) -> Result<(Profile, Policy), i32> {
    let profile = Profile::load(path).map_err(|e| {
        say(e);
        EXIT_USAGE
    })?;
    let policy = Policy::from_profile(&profile).map_err(|e| {
        say(e);
        EXIT_USAGE
    })?;
    Ok((profile, policy))
}

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Check { profile, json } => check(&profile, json),
        Command::Run(args) => run_command(args),
        Command::Serve(args) => serve(args),
        Command::Policy { policy } => show_gate(&policy),
        Command::Diff { a, b } => diff(&a, &b),
        Command::Audit { action } => audit(action),
        Command::Probe { json } => probe(json),
    }
}

/// How a run ended, for `--outcome-fd`.
struct Ran {
    code: i32,
    exec: Option<String>,
    limit: Option<Limit>,
}

impl From<i32> for Ran {
    fn from(code: i32) -> Ran {
        Ran {
            code,
            exec: None,
            limit: None,
        }
    }
}

fn run_command(a: RunArgs) -> i32 {
    let Some(fd) = a.outcome_fd else { return run(a).code };
    let out = match crate::sys::take_inherited_fd(fd) {
        Ok(f) => std::fs::File::from(f),
        Err(e) => {
            say(format!("--outcome-fd {fd}: {e}"));
            return EXIT_USAGE;
        }
    };
    // Started for someone (a daemon's client, a delegating sandbox): end, and
    // record the end, when the thread that started us ends. Armed here, after
    // exec, so that the spawn needs no code in the child; a requester already
    // gone shows as an outcome pipe nobody reads.
    if crate::sys::set_parent_death_signal(libc::SIGTERM).is_err() || crate::sys::pipe_unread(fd) {
        say(format!("--outcome-fd {fd}: the requester is gone; nothing ran"));
        return EXIT_SANDBOX;
    }
    if let Ok(mut c) = CAPTURED.lock() {
        *c = Some(Vec::new());
    }
    let ran = run(a);
    let messages = CAPTURED.lock().ok().and_then(|mut c| c.take()).unwrap_or_default();
    let line = OutcomeLine {
        exec: ran.exec,
        exit_code: ran.code,
        limit: ran.limit.map(|l| l.name().to_string()),
        messages,
    };
    let mut out = out;
    if serde_json::to_writer(&mut out, &line).is_err() || out.write_all(b"\n").is_err() {
        return EXIT_SANDBOX;
    }
    ran.code
}

/// Decides which profile runs and on whose behalf: the profile given, or the
/// MBU the policy's roles grant to the worker this process is.
fn gate(a: &RunArgs) -> Result<(PathBuf, Lineage), i32> {
    let lineage: Lineage = match &a.lineage {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            say(format!("--lineage: {e}"));
            EXIT_USAGE
        })?,
        None => Lineage::default(),
    };
    let (Some(policy), Some(mbu)) = (&a.policy, &a.mbu) else {
        return a.profile.clone().map(|p| (p, lineage)).ok_or(EXIT_USAGE);
    };
    let gate = Gate::load(policy).map_err(|e| {
        say(e);
        EXIT_USAGE
    })?;
    let (uid, gid) = crate::sys::effective_ids();
    let peer = Peer {
        uid,
        gid,
        groups: crate::sys::own_groups(),
    };
    let refused = |r: crate::gate::Refusal| {
        say(format!("wall 1 (policy gate): {r}; nothing ran"));
        EXIT_SANDBOX
    };
    let worker = match &a.worker {
        Some(name) => gate.named_worker(name, &peer),
        None => gate.worker_for(&peer),
    }
    .map_err(refused)?;
    let grant = gate.grant(worker, mbu).map_err(refused)?;
    Ok((
        grant.profile,
        Lineage {
            worker: Some(grant.worker),
            role: Some(grant.role),
            client_uid: Some(uid),
            ..lineage
        },
    ))
}

fn run(a: RunArgs) -> Ran {
    let (profile_path, lineage) = match gate(&a) {
        Ok(g) => g,
        Err(code) => return code.into(),
    };
    let RunArgs {
        workspace,
        verbose,
        audit_log,
        args,
        ..
    } = a;
    let workspace = workspace.as_deref();
    let (profile, policy) = match load_profile(&profile_path) {
        Ok(p) => p,
        Err(code) => return code.into(),
    };
    let profile_sha256 = provenance::profile_digest(&profile.files);
    if lineage.expect_profile.as_ref().is_some_and(|d| *d != profile_sha256) {
        say(format!(
            "wall 1 (policy gate): {} changed after the gate checked it; nothing ran",
            profile_path.display()
        ));
        return EXIT_SANDBOX.into();
    }
    let caller = Caller::current();
    let ids = plan::id_map(caller);
    let workspace_dir = match workspace.map(|d| plan::check_workspace_dir(d, &ids)).transpose() {
        Ok(d) => d,
        Err(e) => {
            say(e);
            return EXIT_USAGE.into();
        }
    };
    let request = Request {
        args,
        workspace_dir: workspace_dir.clone(),
    };
    let setup = match SetupPlan::build(&policy, &request, caller, Kernel::probe()) {
        Ok(p) => p,
        Err(e) => {
            say(&e);
            return if e.is_exec_refusal() {
                EXIT_NOT_EXECUTABLE
            } else {
                EXIT_USAGE
            }
            .into();
        }
    };
    if verbose {
        for line in sandbox::describe_walls(&setup) {
            say(line);
        }
    }
    let signals = match SignalForwarder::install() {
        Ok(s) => s,
        Err(e) => {
            say(format!(
                "wall 5 (process isolation): cannot set up signal forwarding: {e}"
            ));
            return EXIT_SANDBOX.into();
        }
    };
    // Provenance first: if the start cannot be recorded, nothing runs. The
    // sandbox is forked first all the same, so that it builds its walls while
    // the start record is written and synced: its MBU waits, just before
    // Landlock, seccomp and exec, for a word that only `wait` below gives,
    // after the record is on disk.
    let Some(log_path) = audit_log.or_else(|| provenance::default_log_path(caller.uid)) else {
        say("provenance: no log: give --audit-log LOG or set NINEWALL_AUDIT_LOG (HOME is not set); nothing ran");
        return EXIT_SANDBOX.into();
    };
    let exec_id = provenance::new_exec_id();
    // Wall 1 for children: a socket to the delegation service, and nothing more.
    let delegation = match policy.delegate.is_empty() {
        true => Ok(None),
        false => std::os::unix::net::UnixStream::pair()
            .map(Some)
            .map_err(|e| format!("wall 1 (policy gate): cannot make the delegation socket: {e}")),
    };
    let spawned = match &delegation {
        Ok(d) => {
            sandbox::spawn_with(&setup, d.as_ref().map(|(_, inside)| inside.as_raw_fd())).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.clone()),
    };
    let abandon = |spawned: Result<sandbox::Running, String>| {
        if let Ok(r) = spawned {
            r.abandon();
        }
    };
    let mut log = match provenance::AuditLog::open(&log_path) {
        Ok(l) => l,
        Err(e) => {
            abandon(spawned);
            say(format!("{e}; nothing ran"));
            return EXIT_SANDBOX.into();
        }
    };
    let start = provenance::start_record(
        &exec_id,
        &policy,
        &setup,
        provenance::StartContext {
            uid: caller.uid,
            workspace: workspace_dir.as_deref(),
            profile_sha256: &profile_sha256,
            lineage: &lineage,
            shared_network: spawned.as_ref().ok().and_then(|r| r.shared_network()),
        },
    );
    // The walls are built while the record is written and goes to disk; the
    // MBU's own code waits for `wait` below.
    let spawned = spawned.and_then(|mut r| match r.arm() {
        Ok(()) => Ok(r),
        Err(e) => {
            r.abandon();
            Err(e.to_string())
        }
    });
    if let Err(e) = log.append(start) {
        abandon(spawned);
        say(format!("{e}; nothing ran"));
        return EXIT_SANDBOX.into();
    }
    if verbose {
        say(format!("provenance: execution {exec_id} in {}", log.path().display()));
    }
    let running = match spawned {
        Ok(r) => r,
        Err(e) => {
            say(format!("sandbox not built, nothing ran: {e}"));
            record_end(&mut log, &exec_id, Vec::new(), &Err(e));
            return ran(EXIT_SANDBOX, &exec_id, None);
        }
    };
    let delegate_service = delegation.ok().flatten().map(|(ours, inside)| {
        drop(inside);
        let service = Delegation {
            profiles: profile_path.parent().unwrap_or_else(|| Path::new(".")).to_path_buf(),
            parent: policy.clone(),
            parent_exec: exec_id.clone(),
            lineage: lineage.clone(),
            audit_log: log.path().to_path_buf(),
        };
        let current = crate::gate::delegate::Current::default();
        let watched = std::sync::Arc::clone(&current);
        let thread = std::thread::spawn(move || service.serve(ours, &watched));
        (thread, current)
    });
    if verbose {
        if let Some(path) = running.shared_network() {
            say(format!(
                "wall 6 network: joined the shared empty network namespace {} (the MBU can make no socket)",
                path.display()
            ));
        }
        say(format!("wall 9 resources: {}", running.resources()));
        say(format!("  {}", describe_limits(&setup.limits)));
    }
    // File events go to the log in batches (one lock and write per batch);
    // the batch is bounded, and flushed before the end record. 64 records
    // (~100 KiB as JSON values) keep the supervisor under 4 MiB; 256 cost
    // ~400 KiB more and no measurable time.
    const BATCH: usize = 64;
    let mut seq: u64 = 0;
    let mut lost: u64 = 0;
    let mut batch: Vec<provenance::FileRecord> = Vec::with_capacity(BATCH);
    let flush = |log: &mut provenance::AuditLog, batch: &mut Vec<provenance::FileRecord>, lost: &mut u64| {
        let n = batch.len() as u64;
        if n > 0 && log.append_batch(std::mem::take(batch)).is_err() {
            *lost += n;
        }
    };
    let waited = running.wait(Some(&signals), &mut |e: sandbox::FileEvent| {
        seq += 1;
        batch.push(provenance::file_record(&exec_id, seq, e));
        if batch.len() >= BATCH {
            flush(&mut log, &mut batch, &mut lost);
        }
    });
    // The last file events go to disk with the end, in its write and sync.
    let tail: Vec<serde_json::Value> = batch.drain(..).filter_map(|r| serde_json::to_value(r).ok()).collect();
    if let Some((thread, current)) = delegate_service {
        // A child does not outlive its parent: end the one still running.
        if let Some(child) = current.lock().ok().and_then(|c| c.clone()) {
            child.signal(libc::SIGTERM);
        }
        let _ = thread.join();
    }
    if lost > 0 {
        say(format!(
            "provenance: {lost} file events could not be written to {}",
            log.path().display()
        ));
    }
    // The sandbox's namespaces are freed, init and the outer child reaped and
    // the cgroup removed while the end is recorded; all done before we return.
    let (outcome, _released) = match waited {
        Ok((o, remains)) => (o, remains.release()),
        Err(e) => {
            say(format!("sandbox failed: {e}"));
            record_end(&mut log, &exec_id, tail, &Err(e.to_string()));
            return ran(EXIT_SANDBOX, &exec_id, None);
        }
    };
    let result = Ok(outcome);
    // The end is on disk before the caller learns anything.
    if !record_end(&mut log, &exec_id, tail, &result) {
        return ran(EXIT_SANDBOX, &exec_id, None);
    }
    let Ok(outcome) = result else {
        return ran(EXIT_SANDBOX, &exec_id, None);
    };
    if let End::SetupFailed(f) = &outcome.end {
        say(format!("sandbox not built, nothing ran: {f}"));
    }
    if let Some(limit) = outcome.limit {
        say(format!(
            "ended by limit: {} ({})",
            limit.name(),
            limit_setting(limit, &setup.limits)
        ));
    }
    if !outcome.refused.is_empty() {
        let list: Vec<String> = outcome.refused.iter().map(|(name, n)| format!("{name} x{n}")).collect();
        say(format!("refused syscalls (wall 8): {}", list.join(", ")));
    }
    if outcome.usage.output_truncated {
        say(format!(
            "output cut after {} bytes (limits.output)",
            outcome.usage.output_bytes
        ));
    }
    if verbose {
        let u = &outcome.usage;
        say(format!(
            "usage: wall {} ms, cpu {}, peak memory {}, output {} bytes; supervisor peak RSS {} KiB",
            u.wall_ms,
            u.cpu_ms.map_or("unknown".into(), |ms| format!("{ms} ms")),
            u.peak_memory.map_or("unknown".into(), format_size),
            u.output_bytes,
            crate::sys::own_peak_rss_kib()
        ));
    }
    ran(outcome.exit_code(), &exec_id, outcome.limit)
}

fn ran(code: i32, exec: &str, limit: Option<Limit>) -> Ran {
    Ran {
        code,
        exec: Some(exec.to_string()),
        limit,
    }
}

/// Appends the run's last file events and its end records (one write, one
/// sync); says so and returns false if it cannot.
fn record_end(
    log: &mut provenance::AuditLog,
    id: &str,
    mut files: Vec<serde_json::Value>,
    result: &Result<sandbox::Outcome, String>,
) -> bool {
    files.extend(provenance::end_records(id, result));
    if let Err(e) = log.append_synced(files) {
        say(format!("{e}: the end of execution {id} is not recorded"));
        return false;
    }
    true
}

fn audit(action: AuditAction) -> i32 {
    let (AuditAction::Verify { log } | AuditAction::Show { log, .. }) = &action;
    let text = match std::fs::read(log) {
        Ok(t) => t,
        Err(e) => {
            say(format!("{}: cannot read: {e}", log.display()));
            return EXIT_USAGE;
        }
    };
    match action {
        AuditAction::Verify { log } => match provenance::verify(&text) {
            Ok(n) => {
                println!("{}: {n} records, chain intact", log.display());
                0
            }
            Err(b) => {
                say(format!("{}:{b}", log.display()));
                1
            }
        },
        AuditAction::Show { exec, json, .. } => {
            let execs = provenance::executions(&text, exec.as_deref());
            // Without --exec, the gate's refusals too: they belong to no execution.
            let refusals = match exec {
                None => provenance::gate_refusals(&text),
                Some(_) => Vec::new(),
            };
            if execs.is_empty() && refusals.is_empty() {
                say(match exec {
                    Some(id) => format!("no execution {id} in the log"),
                    None => "the log holds no execution".to_string(),
                });
                return 1;
            }
            let mut out = std::io::stdout().lock();
            for (id, records) in &execs {
                let text = if json {
                    serde_json::to_string_pretty(records).unwrap_or_default()
                } else {
                    provenance::describe(id, records)
                };
                if writeln!(out, "{text}").is_err() {
                    return EXIT_SANDBOX;
                }
            }
            if !refusals.is_empty() {
                let text = if json {
                    serde_json::to_string_pretty(&refusals).unwrap_or_default()
                } else {
                    let lines: Vec<String> = refusals.iter().map(provenance::describe_refusal).collect();
                    format!("refused by the policy gate\n  {}", lines.join("\n  "))
                };
                if writeln!(out, "{text}").is_err() {
                    return EXIT_SANDBOX;
                }
            }
            0
        }
    }
}

fn describe_limits(l: &crate::policy::Limits) -> String {
    format!(
        "memory {}, pids {}, cpu {} s, wall {} s, file size {}, open files {}, output {}",
        format_size(l.memory),
        l.pids,
        l.cpu_seconds,
        l.wall_seconds,
        format_size(l.file_size),
        l.open_files,
        format_size(l.output)
    )
}

fn limit_setting(limit: Limit, l: &crate::policy::Limits) -> String {
    match limit {
        Limit::Timeout => format!("limits.wall_seconds = {}", l.wall_seconds),
        Limit::Oom => format!("limits.memory = {}", format_size(l.memory)),
        Limit::Cpu => format!("limits.cpu_seconds = {}", l.cpu_seconds),
        Limit::Pids => format!("limits.pids = {}", l.pids),
        Limit::FileSize => format!("limits.file_size = {}", format_size(l.file_size)),
        Limit::Output => format!("limits.output = {}", format_size(l.output)),
    }
}

fn probe(json: bool) -> i32 {
    let kernel = Kernel::probe();
    let text = if json {
        kernel.report().to_string()
    } else {
        kernel.describe()
    };
    if writeln!(std::io::stdout().lock(), "{text}").is_err() {
        return EXIT_SANDBOX;
    }
    0
}

fn check(path: &Path, json: bool) -> i32 {
    let policy = match load_policy(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    let text = if json {
        match serde_json::to_string_pretty(&policy) {
            Ok(s) => s,
            Err(e) => {
                say(format!("cannot encode the policy as JSON: {e}"));
                return EXIT_SANDBOX;
            }
        }
    } else {
        describe(&policy)
    };
    if writeln!(out, "{text}").is_err() {
        return EXIT_SANDBOX;
    }
    0
}

fn entry_line(e: &FsEntry) -> String {
    match &e.kind {
        EntryKind::Dir => format!("{}/", e.path.display()),
        EntryKind::File => e.path.display().to_string(),
        EntryKind::Symlink { target } => format!("{} -> {}", e.path.display(), target.display()),
    }
}

/// The human-readable form of a policy, as `ninewall check` prints it.
pub fn describe(p: &Policy) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<13}{v}\n"));
    line("mbu", p.name.clone());
    if !p.description.is_empty() {
        line("description", p.description.clone());
    }
    let sources: Vec<String> = p.sources.iter().map(|s| s.display().to_string()).collect();
    line("profile", sources.join(" <- "));
    line(
        "delegate",
        if p.delegate.is_empty() {
            "(none)".into()
        } else {
            format!(
                "{} (each must be a subset of this policy; socket in ${})",
                p.delegate.join(" "),
                sandbox::DELEGATE_ENV
            )
        },
    );
    line(
        "command",
        match &p.command {
            Some(c) => format!("{c:?} + arguments"),
            None => "none: the program is named after --".into(),
        },
    );
    for (i, e) in p.executables.iter().enumerate() {
        line(if i == 0 { "executables" } else { "" }, e.display().to_string());
    }
    for (k, v) in &p.env {
        line("env", format!("{k}={v}"));
    }
    if p.env.is_empty() {
        line("env", "(empty)".into());
    }
    line("workdir", p.workdir.display().to_string());
    for (name, list, how) in [
        ("read", &p.read, "read-only, noexec"),
        ("libraries", &p.libraries, "read-only, may be mapped executable"),
        ("write", &p.write, "read-write, noexec"),
    ] {
        if list.is_empty() {
            line(name, "(none)".into());
        }
        for (i, e) in list.iter().enumerate() {
            line(if i == 0 { name } else { "" }, format!("{}  [{how}]", entry_line(e)));
        }
    }
    if let Some(cache) = &p.library_cache {
        line(
            "ld.so cache",
            format!(
                "{}  [read-only, noexec: every library it lists is readable above]",
                cache.display()
            ),
        );
    }
    line(
        "workspace",
        format!(
            "{} (tmpfs of {}, or --workspace DIR; read-write, noexec)",
            p.workspace.path.display(),
            format_size(p.workspace.size)
        ),
    );
    line("tmp", format!("/tmp (tmpfs of {}, noexec)", format_size(p.tmp_size)));
    line(
        "limits",
        format!(
            "{}; cgroups {}",
            describe_limits(&p.limits),
            match p.limits.cgroups {
                crate::policy::CgroupMode::Strict => "strict",
                crate::policy::CgroupMode::BestEffort => "best-effort",
            }
        ),
    );
    line(
        "proc, dev",
        "a new /proc of the sandbox's pids; /dev with null zero full random urandom".into(),
    );
    line(
        "net",
        match p.net {
            NetMode::None => "none (network namespace, no interface up)".into(),
            NetMode::Loopback => "loopback (network namespace, only lo up)".into(),
        },
    );
    let ports = |l: &[u16]| {
        if l.is_empty() {
            "(none)".to_string()
        } else {
            l.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ")
        }
    };
    line("tcp connect", ports(&p.net_connect));
    line("tcp bind", ports(&p.net_bind));
    for (i, e) in p.interpreters.iter().enumerate() {
        line(
            if i == 0 { "interpreters" } else { "" },
            format!("{}  [execute: ELF interpreter]", e.display()),
        );
    }
    line(
        "syscalls",
        format!(
            "{} -> {} syscalls; on_denied {}",
            p.syscalls.allow.join(" "),
            p.syscalls.names.len(),
            match p.syscalls.on_denied {
                crate::seccomp::OnDenied::Errno => "errno",
                crate::seccomp::OnDenied::Kill => "kill",
            }
        ),
    );
    for chunk in p.syscalls.names.chunks(8) {
        line("", chunk.join(" "));
    }
    let req: Vec<String> = p.landlock_require.iter().map(|f| f.to_string()).collect();
    line(
        "landlock",
        format!(
            "requires {}",
            if req.is_empty() {
                "nothing".into()
            } else {
                req.join(", ")
            }
        ),
    );
    s.trim_end().to_string()
}

fn serve(a: ServeArgs) -> i32 {
    let gate = match Gate::load(&a.policy) {
        Ok(g) => g,
        Err(e) => {
            say(e);
            return EXIT_USAGE;
        }
    };
    let Ok(socket_mode) =
        u32::from_str_radix(&a.socket_mode, 8)
            .map_err(drop)
            .and_then(|m| if m <= 0o777 { Ok(m) } else { Err(()) })
    else {
        say(format!(
            "--socket-mode {:?}: not a mode; valid: octal such as 660",
            a.socket_mode
        ));
        return EXIT_USAGE;
    };
    let caller = Caller::current();
    let Some(socket) = a.socket.or_else(|| default_socket(caller.uid)) else {
        say("no socket: give --socket PATH");
        return EXIT_USAGE;
    };
    let Some(audit_log) = a.audit_log.or_else(|| provenance::default_log_path(caller.uid)) else {
        say("provenance: no log: give --audit-log LOG or set NINEWALL_AUDIT_LOG (HOME is not set)");
        return EXIT_SANDBOX;
    };
    if a.max_clients == 0 || a.request_timeout == 0 {
        say("--max-clients and --request-timeout must be at least 1");
        return EXIT_USAGE;
    }
    crate::gate::serve::serve(
        gate,
        crate::gate::serve::ServeConfig {
            socket,
            socket_mode,
            audit_log,
            grace: std::time::Duration::from_secs(a.grace),
            request_timeout: std::time::Duration::from_secs(a.request_timeout),
            max_clients: a.max_clients,
        },
    )
}

/// /run/ninewall/ninewall.sock for root; $XDG_RUNTIME_DIR/ninewall.sock, else
/// /tmp/ninewall-UID.sock, for anyone else.
fn default_socket(uid: u32) -> Option<PathBuf> {
    if uid == 0 {
        let dir = Path::new("/run/ninewall");
        std::fs::create_dir_all(dir).ok()?;
        return Some(dir.join("ninewall.sock"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Some(PathBuf::from(d).join("ninewall.sock")),
        None => Some(PathBuf::from(format!("/tmp/ninewall-{uid}.sock"))),
    }
}

fn show_gate(path: &Path) -> i32 {
    let gate = match Gate::load(path) {
        Ok(g) => g,
        Err(e) => {
            say(e);
            return EXIT_USAGE;
        }
    };
    let mut s = format!(
        "policy       {}\nprofiles     {}\n",
        path.display(),
        gate.profiles.display()
    );
    for (role, mbus) in &gate.roles {
        s.push_str(&format!("role         {role}: {}\n", mbus.join(" ")));
    }
    for w in &gate.workers {
        s.push_str(&format!(
            "worker       {} ({}): roles {}; may run {}\n",
            w.name,
            w.identity,
            w.roles.join(" "),
            gate.capabilities(w).join(" ")
        ));
    }
    if writeln!(std::io::stdout().lock(), "{}", s.trim_end()).is_err() {
        return EXIT_SANDBOX;
    }
    0
}

fn diff(a: &Path, b: &Path) -> i32 {
    let (Ok(pa), Ok(pb)) = (load_policy(a), load_policy(b)) else {
        return EXIT_USAGE;
    };
    let gained = crate::policy::subset::excess(&pa, &pb);
    let mut out = std::io::stdout().lock();
    let mut text = if gained.is_empty() {
        format!(
            "{} ⊆ {}: {} has no permission {} lacks\n",
            pa.name, pb.name, pa.name, pb.name
        )
    } else {
        format!(
            "{} ⊄ {}: {} permissions of {} are not in {}\n",
            pa.name,
            pb.name,
            gained.len(),
            pa.name,
            pb.name
        )
    };
    for e in &gained {
        text.push_str(&format!("  {e}\n"));
    }
    if out.write_all(text.as_bytes()).is_err() {
        return EXIT_SANDBOX;
    }
    i32::from(!gained.is_empty())
}

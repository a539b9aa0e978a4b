//! The subcommands, as functions from parsed arguments to an exit code. Every
//! message goes to stderr prefixed `ninewall:`; nothing here panics on input.

use std::io::Write;
use std::path::Path;

use crate::cli::{AuditAction, Cli, Command};
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

fn say(message: impl std::fmt::Display) {
    let text = message.to_string();
    let mut err = std::io::stderr().lock();
    for line in text.lines() {
        let _ = writeln!(err, "ninewall: {line}");
    }
}

/// Loads and validates a profile, printing every problem.
pub fn load_policy(path: &Path) -> Result<Policy, i32> {
    let profile = Profile::load(path).map_err(|e| {
        say(e);
        EXIT_USAGE
    })?;
    Policy::from_profile(&profile).map_err(|e| {
        say(e);
        EXIT_USAGE
    })
}

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Check { profile, json } => check(&profile, json),
        Command::Run {
            profile,
            workspace,
            verbose,
            audit_log,
            args,
        } => run(&profile, workspace.as_deref(), verbose, audit_log, args),
        Command::Audit { action } => audit(action),
        Command::Probe { json } => probe(json),
    }
}

fn run(
    profile: &Path,
    workspace: Option<&Path>,
    verbose: bool,
    audit_log: Option<std::path::PathBuf>,
    args: Vec<String>,
) -> i32 {
    let policy = match load_policy(profile) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let caller = Caller::current();
    let ids = plan::id_map(caller);
    let workspace_dir = match workspace.map(|d| plan::check_workspace_dir(d, &ids)).transpose() {
        Ok(d) => d,
        Err(e) => {
            say(e);
            return EXIT_USAGE;
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
            };
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
            return EXIT_SANDBOX;
        }
    };
    // Provenance first: if the start cannot be recorded, nothing runs.
    let Some(log_path) = audit_log.or_else(|| provenance::default_log_path(caller.uid)) else {
        say("provenance: no log: give --audit-log LOG or set NINEWALL_AUDIT_LOG (HOME is not set); nothing ran");
        return EXIT_SANDBOX;
    };
    let mut log = match provenance::AuditLog::open(&log_path) {
        Ok(l) => l,
        Err(e) => {
            say(format!("{e}; nothing ran"));
            return EXIT_SANDBOX;
        }
    };
    let exec_id = provenance::new_exec_id();
    let start = provenance::start_record(&exec_id, &policy, &setup, caller.uid, workspace_dir.as_deref());
    if let Err(e) = log.append(start) {
        say(format!("{e}; nothing ran"));
        return EXIT_SANDBOX;
    }
    if verbose {
        say(format!("provenance: execution {exec_id} in {}", log.path().display()));
    }
    let running = match sandbox::spawn(&setup) {
        Ok(r) => r,
        Err(e) => {
            say(format!("sandbox not built, nothing ran: {e}"));
            record_end(&mut log, &exec_id, &Err(e.to_string()));
            return EXIT_SANDBOX;
        }
    };
    if verbose {
        say(format!("wall 9 resources: {}", running.resources()));
        say(format!("  {}", describe_limits(&setup.limits)));
    }
    // File events go to the log in batches (one lock and write per batch);
    // the batch is bounded, and flushed before the end record.
    const BATCH: usize = 256;
    let mut seq: u64 = 0;
    let mut lost: u64 = 0;
    let mut batch: Vec<serde_json::Value> = Vec::with_capacity(BATCH);
    let flush = |log: &mut provenance::AuditLog, batch: &mut Vec<serde_json::Value>, lost: &mut u64| {
        let n = batch.len() as u64;
        if n > 0 && log.append_batch(std::mem::take(batch)).is_err() {
            *lost += n;
        }
    };
    let waited = running.wait(Some(&signals), &mut |e: sandbox::FileEvent| {
        seq += 1;
        batch.push(provenance::file_record(&exec_id, seq, &e));
        if batch.len() >= BATCH {
            flush(&mut log, &mut batch, &mut lost);
        }
    });
    flush(&mut log, &mut batch, &mut lost);
    if lost > 0 {
        say(format!(
            "provenance: {lost} file events could not be written to {}",
            log.path().display()
        ));
    }
    let outcome = match waited {
        Ok(o) => o,
        Err(e) => {
            say(format!("sandbox failed: {e}"));
            record_end(&mut log, &exec_id, &Err(e.to_string()));
            return EXIT_SANDBOX;
        }
    };
    let result = Ok(outcome);
    // The end is on disk before the caller learns anything.
    if !record_end(&mut log, &exec_id, &result) {
        return EXIT_SANDBOX;
    }
    let Ok(outcome) = result else { return EXIT_SANDBOX };
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
            sandbox::sys::own_peak_rss_kib()
        ));
    }
    outcome.exit_code()
}

/// Appends the end records; says so and returns false if it cannot.
fn record_end(log: &mut provenance::AuditLog, id: &str, result: &Result<sandbox::Outcome, String>) -> bool {
    for record in provenance::end_records(id, result) {
        if let Err(e) = log.append(record) {
            say(format!("{e}: the end of execution {id} is not recorded"));
            return false;
        }
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
            if execs.is_empty() {
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

//! The subcommands, as functions from parsed arguments to an exit code: each
//! turns its arguments into the library's typed values, calls the library,
//! and prints the result. `run` is [`crate::pipeline`]'s; every message goes
//! to stderr prefixed `ninewall:`; nothing here panics on input.
//!
//! No wall: argument handling.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{AuditAction, Cli, Command, RunArgs, ServeArgs};
use crate::exit::{SANDBOX as EXIT_SANDBOX, USAGE as EXIT_USAGE};
use crate::gate::exec::OutcomeLine;
use crate::gate::Gate;
use crate::host::Caller;
use crate::kernel::Kernel;
use crate::pipeline::{self, Invocation, LogSource, Messages};
use crate::policy::Policy;
use crate::provenance::{self, Lineage};
use crate::sys;

/// Says `message` on stderr, for the subcommands other than `run`.
fn say(message: impl std::fmt::Display) {
    Messages::to_stderr().say(message);
}

/// Loads and validates a profile, saying every problem; the exit code if it
/// does not load.
fn load_policy(path: &Path) -> Result<Policy, i32> {
    pipeline::load_policy(path).map(|(_, policy)| policy).map_err(|e| {
        say(&e);
        e.exit_code()
    })
}

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    // The daemon says a line per request (to the journal, under systemd);
    // the rest say nothing beyond their own messages unless asked.
    let quiet = match cli.command {
        Command::Serve(_) => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    init_logging(quiet);
    match cli.command {
        Command::Check { profiles, json } => check(&profiles, json),
        Command::Run(args) => run(args),
        Command::Serve(args) => serve(args),
        Command::Call(args) => crate::gate::call::call(
            &crate::gate::call::Call {
                mbu: args.mbu,
                args: args.args,
                workspace: args.workspace,
                caused_by: args.caused_by,
                socket: crate::gate::call::socket_path(args.socket),
                json: args.json,
            },
            &|m| say(m),
        ),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ninewall", &mut std::io::stdout());
            0
        }
        Command::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(_) => EXIT_SANDBOX,
            }
        }
        Command::Learn(args) => crate::learn::main(&args, &|m| say(m)),
        Command::Why {
            exec,
            path,
            log,
            against,
            json,
        } => why(&exec, path.as_deref(), log, against.as_deref(), json),
        Command::Policy { policy, json } => show_gate(&policy, json),
        Command::Diff { a, b, json } => diff(&a, &b, json),
        Command::Audit { action } => audit(action),
        Command::Probe { json } => probe(json),
    }
}

/// The `tracing` subscriber: events on stderr, one line each, filtered by
/// `RUST_LOG` (`info`, `debug`, `ninewall::gate=debug,warn`: targets and
/// levels), else at `default` and above. A `RUST_LOG` that does not parse is
/// said and the default used.
fn init_logging(default: tracing::Level) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.is_empty() => text.parse::<Targets>().unwrap_or_else(|e| {
            say(format!("RUST_LOG={text:?}: {e}; logging at {default}"));
            Targets::new().with_default(default)
        }),
        _ => Targets::new().with_default(default),
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}

/// Who asked, read from descriptor `fd`: only from a parent that is this
/// very program (a daemon or a delegating supervisor), never from a caller
/// who could write anything there. (A parent that dies first leaves us to
/// a reaper, which is not this program.)
fn lineage_from(fd: i32) -> Result<Lineage, String> {
    use std::io::Read;
    started_by_ninewall()?;
    let file = std::fs::File::from(sys::take_inherited_fd(fd).map_err(|e| e.to_string())?);
    let mut text = Vec::new();
    file.take(64 << 10).read_to_end(&mut text).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

/// Whether the process that started this one runs this very program: who
/// asked, a warm sandbox's requests and a lent cgroup are taken from
/// nothing else.
fn started_by_ninewall() -> Result<(), String> {
    let not_ninewall = "this is taken only from ninewall itself (a daemon or a delegating supervisor), \
                        and the process that started this one is not ninewall";
    match sys::parent_runs_this_program() {
        Ok(true) => Ok(()),
        // A parent we may not even look at is not the daemon or supervisor
        // that starts us as its own user.
        Ok(false) => Err(not_ninewall.into()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Err(not_ninewall.into()),
        Err(e) => Err(format!("cannot tell what started this process: {e}")),
    }
}

/// The control socket of a warm sandbox's supervisor (`--warm-fd`).
fn warm_control(fd: i32) -> Result<std::os::unix::net::UnixStream, String> {
    started_by_ninewall()?;
    let owned = sys::take_inherited_fd(fd).map_err(|e| e.to_string())?;
    Ok(std::os::unix::net::UnixStream::from(owned))
}

/// `ninewall run`: the arguments as an [`Invocation`], and for a run started
/// on someone's behalf (`--outcome-fd`), the outcome as one JSON line.
fn run(args: RunArgs) -> i32 {
    let lineage = match args.lineage_fd.map(lineage_from).transpose() {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => {
            say(format!("--lineage-fd: {e}"));
            return EXIT_USAGE;
        }
    };
    let warm = match args.warm_fd.map(warm_control).transpose() {
        Ok(w) => w,
        Err(e) => {
            say(format!("--warm-fd: {e}"));
            return EXIT_USAGE;
        }
    };
    if args.cgroup.is_some() {
        if let Err(e) = started_by_ninewall() {
            say(format!("--cgroup: {e}"));
            return EXIT_USAGE;
        }
    }
    let outcome_fd = args.outcome_fd;
    let json = args.json;
    let invocation = Invocation {
        profile: args.profile,
        policy: args.policy,
        mbu: args.mbu,
        worker: args.worker,
        lineage,
        workspace: args.workspace,
        workspace_fd: args.workspace_fd,
        audit_log: match (args.audit_log, args.audit_log_fd) {
            (Some(path), _) => Some(LogSource::Path(path)),
            (None, Some(fd)) => Some(LogSource::Inherited(fd)),
            (None, None) => None,
        },
        args: args.args,
        verbose: args.verbose,
        cgroup: args.cgroup,
        requester: None,
    };
    let Some(fd) = outcome_fd else {
        if json {
            let (code, line) = execute_kept(&invocation);
            let text = serde_json::to_string(&line).unwrap_or_default();
            let _ = writeln!(std::io::stderr().lock(), "\n{text}");
            return code;
        }
        return pipeline::execute(&invocation, &mut Messages::to_stderr()).code;
    };
    let out = match sys::take_inherited_fd(fd) {
        Ok(f) => std::fs::File::from(f),
        Err(e) => {
            say(format!("--outcome-fd {fd}: {e}"));
            return EXIT_USAGE;
        }
    };
    // Started for someone (a daemon's client, a delegating sandbox): end, and
    // record the end, when the thread that started us ends. Set here, after
    // exec, so that the spawn needs no code in the child; a requester already
    // gone shows as an outcome pipe nobody reads.
    if sys::set_parent_death_signal(libc::SIGTERM).is_err() || sys::pipe_unread(fd) {
        say(format!("--outcome-fd {fd}: the requester is gone; nothing ran"));
        return EXIT_SANDBOX;
    }
    let invocation = Invocation {
        requester: Some(std::os::fd::AsRawFd::as_raw_fd(&out)),
        ..invocation
    };
    // The outcome goes out as soon as the end is recorded and the output
    // passed on (stdout and stderr are then closed, so the requester's
    // reads end too); the sandbox's remains are reaped after that.
    let out = std::rc::Rc::new(std::cell::RefCell::new(Some(out)));
    let early = std::rc::Rc::clone(&out);
    let mut messages = Messages::kept_until_end(Box::new(move |finished, lines| {
        if let Some(mut file) = early.borrow_mut().take() {
            let _ = write_outcome(&mut file, &outcome_line(finished, lines));
        }
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = sys::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
            let _ = sys::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 2);
        }
    }));
    let finished = match &warm {
        Some(control) => pipeline::execute_warm(control, &invocation, &mut messages),
        None => pipeline::execute(&invocation, &mut messages),
    };
    let late = out.borrow_mut().take();
    if let Some(mut file) = late {
        if write_outcome(&mut file, &outcome_line(&finished, messages.take())).is_err() {
            return EXIT_SANDBOX;
        }
    }
    finished.code
}

/// The outcome line, and its newline.
fn write_outcome(out: &mut std::fs::File, line: &OutcomeLine) -> std::io::Result<()> {
    // One write: the reader wakes once, not once per JSON token.
    let mut text = serde_json::to_vec(line)?;
    text.push(b'\n');
    out.write_all(&text)
}

fn outcome_line(finished: &pipeline::Finished, messages: Vec<String>) -> OutcomeLine {
    OutcomeLine {
        exec: finished.exec.clone(),
        exit_code: finished.code,
        limit: finished.limit.map(|l| l.name().to_string()),
        messages,
    }
}

/// Runs the invocation with ninewall's own messages kept, not said: the
/// exit code, and the outcome as one line (`run --json`).
fn execute_kept(invocation: &Invocation) -> (i32, OutcomeLine) {
    let mut messages = Messages::kept();
    let finished = pipeline::execute(invocation, &mut messages);
    (finished.code, outcome_line(&finished, messages.take()))
}

/// What a chain alone cannot show, said of a log with no seal.
const UNSEALED: &str = "not sealed: the chain shows an edit of any record but the last, and neither an edit of the last nor records cut from the end (seal the log: audit setup-keys)";

fn audit(action: AuditAction) -> i32 {
    if let AuditAction::SetupKeys { log, interval } = &action {
        return setup_keys(log, *interval);
    }
    let (AuditAction::Verify { log, .. } | AuditAction::Show { log, .. } | AuditAction::SetupKeys { log, .. }) =
        &action;
    let log = log.clone();
    let log = log.as_path();
    let text = match std::fs::read(log) {
        Ok(t) => t,
        Err(e) => {
            say(format!("{}: cannot read: {e}", log.display()));
            return EXIT_USAGE;
        }
    };
    match action {
        AuditAction::SetupKeys { .. } => EXIT_USAGE,
        AuditAction::Verify { log, json: true, .. } => {
            let value = match provenance::verify(&text) {
                Ok(n) => serde_json::json!({
                    "log": log, "ok": true, "records": n,
                    "seals": text.split(|&b| b == b'\n').filter(|l| l.starts_with(b"{") && l.windows(15).any(|w| w == b"\"kind\":\"seal\"")).count(),
                    "unsealed": (!text.windows(15).any(|w| w == b"\"kind\":\"seal\"")).then_some(UNSEALED),
                    "recovered": provenance::recoveries(&text).iter().map(|(line, bytes)| serde_json::json!({"line": line, "cut_bytes": bytes})).collect::<Vec<_>>(),
                }),
                Err(b) => serde_json::json!({"log": log, "ok": false, "error": b.to_string()}),
            };
            let ok = value.get("ok") == Some(&serde_json::Value::Bool(true));
            if writeln!(std::io::stdout().lock(), "{value}").is_err() {
                return EXIT_SANDBOX;
            }
            i32::from(!ok)
        }
        AuditAction::Verify { log, key, witness, .. } => match provenance::verify(&text) {
            Ok(n) if witness.is_some() => verify_witness(&log, &text, n, witness.as_deref().unwrap_or(Path::new(""))),
            Ok(n) if key.is_some() => verify_seals(&log, &text, n, key.as_deref().unwrap_or_default()),
            Ok(n) => {
                let recovered: Vec<String> = provenance::recoveries(&text)
                    .iter()
                    .map(|(line, bytes)| format!("line {line}: {bytes} bytes cut"))
                    .collect();
                let seals = text
                    .split(|&b| b == b'\n')
                    .filter(|l| l.starts_with(b"{") && l.windows(15).any(|w| w == b"\"kind\":\"seal\""))
                    .count();
                let sealed = if seals > 0 {
                    format!("; {seals} seals (check them with --key)")
                } else {
                    format!("; {UNSEALED}")
                };
                if recovered.is_empty() {
                    println!("{}: {n} records, chain intact{sealed}", log.display());
                } else {
                    println!(
                        "{}: {n} records, chain intact; {} torn line(s) of cut-short writes set aside and recorded ({}){sealed}",
                        log.display(),
                        recovered.len(),
                        recovered.join(", ")
                    );
                }
                0
            }
            Err(b) => {
                say(format!("{}:{b}", log.display()));
                1
            }
        },
        AuditAction::Show { exec, story, json, .. } => {
            let exec = exec.or(story.clone());
            let execs = provenance::executions(&text, exec.as_deref());
            // Without --exec, the gate's refusals too: they belong to no execution.
            let refusals = match exec {
                None => provenance::gate_refusals(&text),
                Some(_) => Vec::new(),
            };
            if execs.is_empty() && refusals.is_empty() {
                say(match exec {
                    Some(id) => format!("no execution {id} in the log"),
                    None if provenance::is_log(&text) => "the log holds no execution".to_string(),
                    None => format!(
                        "{} is not a ninewall provenance log (its first line is no chained record)",
                        log.display()
                    ),
                });
                return 1;
            }
            let mut out = std::io::stdout().lock();
            if story.is_some() {
                let causes = execs.values().flat_map(|records| provenance::causes(&text, records));
                for cause in causes {
                    let line = if json {
                        serde_json::to_string_pretty(&cause).unwrap_or_default()
                    } else {
                        provenance::describe_agent_record(&cause)
                    };
                    if writeln!(out, "{line}").is_err() {
                        return EXIT_SANDBOX;
                    }
                }
            }
            for (id, records) in &execs {
                let text = if json {
                    serde_json::to_string_pretty(records).unwrap_or_default()
                } else {
                    provenance::execution_story(id, records)
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

/// `audit setup-keys`: the key file beside the log, the verification key
/// printed once.
fn setup_keys(log: &Path, interval: u64) -> i32 {
    if interval == 0 {
        say("--interval must be at least 1 second");
        return EXIT_USAGE;
    }
    match provenance::seal::setup(log, interval) {
        Ok(vk) => {
            println!(
                "sealing key: {} (evolves every {interval} s; whoever can read it can seal from its epoch on)",
                provenance::seal::key_path(log).display()
            );
            println!("verification key (keep it somewhere else; `ninewall audit verify --key` needs it):");
            println!("{vk}");
            0
        }
        Err(e) => {
            say(format!("{}: {e}", provenance::seal::key_path(log).display()));
            EXIT_SANDBOX
        }
    }
}

/// `audit verify --witness`: the chain holds (`n` records); now every
/// head the witness saw.
fn verify_witness(log: &Path, text: &[u8], n: usize, witness: &Path) -> i32 {
    let lines = match std::fs::read_to_string(witness) {
        Ok(t) => t,
        Err(e) => {
            say(format!("{}: cannot read: {e}", witness.display()));
            return EXIT_USAGE;
        }
    };
    let heads = provenance::seal::witnessed_heads(&lines);
    if heads.is_empty() {
        say(format!(
            "{}: no witnessed seal (no 'ninewall seal:' line)",
            witness.display()
        ));
        return 1;
    }
    match provenance::seal::check_witness(text, &heads) {
        Ok(k) => {
            println!(
                "{}: {n} records, chain intact, all {k} witnessed heads in it",
                log.display()
            );
            0
        }
        Err(why) => {
            say(format!("{}: {why}", log.display()));
            1
        }
    }
}

/// `audit verify --key`: the chain holds (`n` records); now every seal.
fn verify_seals(log: &Path, text: &[u8], n: usize, key: &str) -> i32 {
    let Some(vk) = provenance::seal::VerificationKey::parse(key) else {
        say("--key: not a verification key (nwseal1:KEY:START:INTERVAL, as audit setup-keys printed it)");
        return EXIT_USAGE;
    };
    match provenance::seal::check(text, &vk) {
        Ok(s) if s.seals == 0 => {
            say(format!(
                "{}: {n} records, chain intact, but no seal: nothing vouches for it",
                log.display()
            ));
            1
        }
        Ok(s) => {
            println!(
                "{}: {n} records, chain intact, {} seals verified; sealed up to {}{}",
                log.display(),
                s.seals,
                s.last_seal.as_deref().unwrap_or("?"),
                if s.unsealed_after > 0 {
                    format!("; {} records after the last seal are not sealed", s.unsealed_after)
                } else {
                    String::new()
                }
            );
            0
        }
        Err((line, why)) => {
            say(format!("{}:{line}: {why}", log.display()));
            1
        }
    }
}

fn probe(json: bool) -> i32 {
    let kernel = Kernel::probe();
    // Wall 9's cost at the pace agents call: measured, as root (only a
    // privileged supervisor makes cgroups).
    let migration = crate::sandbox::cgroup::migration_cost(&crate::host::Cgroups::probe());
    let (ms, note) = match &migration {
        Ok(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            let note = if ms < 1.0 {
                "no grace-period wait: the host favours migrations (favordynmods)"
            } else {
                "each launch spaced from the last waits this long for its cgroup; README, 'Launch pace': favordynmods"
            };
            (Some((ms * 100.0).round() / 100.0), note.to_string())
        }
        Err(e) => (None, format!("not measured: {e}")),
    };
    let text = if json {
        let mut r = kernel.report();
        if let Some(o) = r.as_object_mut() {
            o.insert("cgroup_migration".into(), serde_json::json!({"ms": ms, "note": note}));
        }
        r.to_string()
    } else {
        format!(
            "{}
cgroup move  {} {note}",
            kernel.describe(),
            ms.map_or("-".to_string(), |m| format!("{m:.2} ms,"))
        )
    };
    if writeln!(std::io::stdout().lock(), "{text}").is_err() {
        return EXIT_SANDBOX;
    }
    0
}

fn why(exec: &str, only: Option<&str>, log: Option<PathBuf>, against: Option<&Path>, json: bool) -> i32 {
    let Some(log) = log.or_else(|| provenance::default_log_path(sys::effective_ids().0)) else {
        say("no log: give --log LOG or set NINEWALL_AUDIT_LOG");
        return EXIT_USAGE;
    };
    let text = match std::fs::read(&log) {
        Ok(t) => t,
        Err(e) => {
            say(format!("{}: cannot read: {e}", log.display()));
            return EXIT_USAGE;
        }
    };
    let execs = provenance::executions(&text, Some(exec));
    let Some(records) = execs.get(exec) else {
        say(format!("no execution {exec} in {}", log.display()));
        return 1;
    };
    let mut advice = crate::why::explain(records, only);
    if let Some(named) = against {
        // The execution's profile as its start record names it, now.
        let Some(top) = records
            .iter()
            .find(|r| r.get("kind").and_then(serde_json::Value::as_str) == Some("exec.start"))
            .and_then(|r| r.pointer("/profile/files"))
            .and_then(serde_json::Value::as_array)
            .and_then(|files| files.last())
            .and_then(serde_json::Value::as_str)
        else {
            say(format!("execution {exec}: its start record names no profile file"));
            return 1;
        };
        let (Ok(own), Ok(other)) = (load_policy(Path::new(top)), load_policy(named)) else {
            return EXIT_USAGE;
        };
        crate::why::compare(&mut advice, &own, &other, &other.name);
    }
    let mut out = std::io::stdout().lock();
    let written = if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&advice).unwrap_or_default())
    } else if advice.is_empty() {
        writeln!(
            out,
            "execution {exec}: nothing was refused{}",
            only.map_or(String::new(), |p| format!(" at {p}"))
        )
    } else {
        let mut s = format!("execution {exec}: {} kind(s) of refusal\n", advice.len());
        for a in &advice {
            s.push_str(&format!(
                "  {} x{}: {}\n    {}: {}\n",
                a.wall,
                a.count,
                provenance::chosen(&a.what),
                if a.allowable { "allow with" } else { "allow" },
                a.fix
            ));
            if let Some(c) = &a.against {
                if c.within {
                    s.push_str(&format!("    and stay within {}\n", c.profile));
                } else if c.gained.is_empty() {
                    s.push_str(&format!(
                        "    which adds nothing beyond {} (the profile already is wider: {})\n",
                        c.profile,
                        c.already.join("; ")
                    ));
                } else {
                    let already = if c.already.is_empty() {
                        String::new()
                    } else {
                        format!(" (and already: {})", c.already.join("; "))
                    };
                    s.push_str(&format!(
                        "    which is wider than {}: {}{already}\n",
                        c.profile,
                        c.gained.join("; ")
                    ));
                }
            }
        }
        s.push_str("A change widens the profile: `ninewall diff NEW OLD` lists what it would gain.");
        writeln!(out, "{s}")
    };
    if written.is_err() {
        return EXIT_SANDBOX;
    }
    0
}

fn check(paths: &[PathBuf], json: bool) -> i32 {
    let results: Vec<(&PathBuf, Result<Policy, crate::error::Error>)> = paths
        .iter()
        .map(|p| (p, pipeline::load_policy(p).map(|(_, policy)| policy)))
        .collect();
    let failed = results.iter().any(|(_, r)| r.is_err());
    let mut out = std::io::stdout().lock();
    let written = if json {
        let one = |path: &PathBuf, r: &Result<Policy, crate::error::Error>| match r {
            Ok(policy) => serde_json::json!({"profile": path, "ok": true, "policy": policy}),
            Err(e) => serde_json::json!({"profile": path, "ok": false, "problems": problems_of(e)}),
        };
        let value = match results.as_slice() {
            [(_, Ok(policy))] => serde_json::to_value(policy).unwrap_or_default(),
            [(path, r)] => one(path, r),
            _ => serde_json::Value::Array(results.iter().map(|(p, r)| one(p, r)).collect()),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&value).unwrap_or_default())
    } else {
        let mut text = String::new();
        for (_, r) in &results {
            match r {
                Ok(policy) => {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&policy.summary());
                }
                Err(e) => say(e),
            }
        }
        if text.is_empty() {
            Ok(())
        } else {
            writeln!(out, "{text}")
        }
    };
    if written.is_err() {
        return EXIT_SANDBOX;
    }
    if failed {
        crate::exit::USAGE
    } else {
        0
    }
}

/// A profile's problems, each with where it is, for `check --json`.
fn problems_of(e: &crate::error::Error) -> Vec<serde_json::Value> {
    use crate::profile::LoadError;
    match e {
        crate::error::Error::Policy(p) => p
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({"file": p.origin.file.display().to_string(), "line": p.origin.line, "key": p.origin.key,
                                   "value": p.value, "message": p.message})
            })
            .collect(),
        crate::error::Error::Profile(LoadError::Syntax {
            file,
            line,
            column,
            message,
        }) => vec![serde_json::json!({"file": file, "line": line, "column": column, "message": message})],
        crate::error::Error::Profile(LoadError::Several(all)) => all
            .iter()
            .map(|e| match e {
                LoadError::Syntax {
                    file,
                    line,
                    column,
                    message,
                } => serde_json::json!({"file": file, "line": line, "column": column, "message": message}),
                other => serde_json::json!({"message": other.to_string()}),
            })
            .collect(),
        other => vec![serde_json::json!({"message": other.to_string()})],
    }
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
    let activated = match crate::gate::serve::activated_listener() {
        Ok(l) => l,
        Err(e) => {
            say(e);
            return EXIT_USAGE;
        }
    };
    let named = activated
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let socket = match a.socket.or(named).map_or_else(|| default_socket(caller.uid), Ok) {
        Ok(s) => s,
        Err(e) => {
            say(e);
            return EXIT_USAGE;
        }
    };
    let Some(audit_log) = a.audit_log.or_else(|| provenance::default_log_path(caller.uid)) else {
        say("provenance: no log: give --audit-log LOG or set NINEWALL_AUDIT_LOG (HOME is not set)");
        return EXIT_SANDBOX;
    };
    if a.max_clients == 0 || a.request_timeout == 0 || a.max_clients_per_uid == 0 {
        say("--max-clients, --max-clients-per-uid and --request-timeout must be at least 1");
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
            max_clients_per_uid: a.max_clients_per_uid,
            socket_in_shared_dir: a.socket_in_shared_dir,
            warm: a.warm,
        },
        activated,
    )
}

/// /run/ninewall/ninewall.sock for root (made 0755, root's); for anyone
/// else $XDG_RUNTIME_DIR/ninewall.sock, a directory the session manager made
/// for that user alone. Without one, there is no default: a socket path that
/// is guessed (`/tmp/…`) is one another user can take first.
fn default_socket(uid: u32) -> Result<PathBuf, String> {
    if uid == 0 {
        let dir = Path::new("/run/ninewall");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        return Ok(dir.join("ninewall.sock"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Ok(PathBuf::from(d).join("ninewall.sock")),
        None => {
            Err("no socket: XDG_RUNTIME_DIR is not set; give --socket PATH in a directory only you can write".into())
        }
    }
}

fn show_gate(path: &Path, json: bool) -> i32 {
    let gate = match Gate::load(path) {
        Ok(g) => g,
        Err(e) => {
            say(e);
            return EXIT_USAGE;
        }
    };
    if json {
        let value = serde_json::json!({
            "policy": path,
            "profiles": gate.profiles,
            "roles": gate.roles.iter().map(|(r, m)| (r.clone(), serde_json::json!(m))).collect::<serde_json::Map<_, _>>(),
            "workers": gate.workers.iter().map(|w| serde_json::json!({
                "name": w.name, "identity": w.identity.to_string(), "roles": w.roles, "may_run": gate.capabilities(w),
            })).collect::<Vec<_>>(),
            "warm": gate.warm,
        });
        return match writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ) {
            Ok(()) => 0,
            Err(_) => EXIT_SANDBOX,
        };
    }
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
    if !gate.warm.is_empty() {
        let counts: Vec<String> = gate.warm.iter().map(|(mbu, n)| format!("{mbu} {n}")).collect();
        s.push_str(&format!(
            "warm         {} (serve --warm N for the others)\n",
            counts.join(", ")
        ));
    }
    if writeln!(std::io::stdout().lock(), "{}", s.trim_end()).is_err() {
        return EXIT_SANDBOX;
    }
    0
}

fn diff(a: &Path, b: &Path, json: bool) -> i32 {
    let (Ok(pa), Ok(pb)) = (load_policy(a), load_policy(b)) else {
        return EXIT_USAGE;
    };
    let gained = crate::policy::subset::excess(&pa, &pb);
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({
            "a": pa.name, "b": pb.name, "subset": gained.is_empty(),
            "gained": gained.iter().map(|e| serde_json::json!({"key": e.key, "what": e.what})).collect::<Vec<_>>(),
        });
        if writeln!(out, "{}", serde_json::to_string_pretty(&value).unwrap_or_default()).is_err() {
            return EXIT_SANDBOX;
        }
        return i32::from(!gained.is_empty());
    }
    let mut text = if gained.is_empty() {
        format!(
            "{} ⊆ {}: {} has no permission {} lacks\n",
            pa.name, pb.name, pa.name, pb.name
        )
    } else {
        format!(
            "{} ⊄ {}: {} permission{} of {} {} not in {}\n",
            pa.name,
            pb.name,
            gained.len(),
            if gained.len() == 1 { "" } else { "s" },
            pa.name,
            if gained.len() == 1 { "is" } else { "are" },
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

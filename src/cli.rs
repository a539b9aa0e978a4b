//! The command line: clap types only.
//!
//! No wall: the user's words, parsed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run agent capability units in a sandbox built from a TOML profile.
#[derive(Debug, Parser)]
#[command(name = "ninewall", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the profile's command (or the program after `--`) in a new sandbox.
    ///
    /// Exit status: the program's own; 125 the sandbox could not be built or
    /// the policy gate refused; 126 the program may not be executed; 127 not
    /// found; 128+N killed by signal N; 2 bad command line or profile.
    Run(RunArgs),
    /// Read a provenance log.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Show what this kernel offers the walls (Landlock ABI and rights).
    Probe {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the policy gate on a unix socket: workers send JSON requests, the
    /// kernel says who they are, their roles say what they may run.
    Serve(ServeArgs),
    /// Ask the daemon (`ninewall serve`) to run an MBU, as the worker this
    /// user is: its output streams here, its exit code is this command's,
    /// standard input (when not a terminal) is its input, Ctrl-C cancels.
    ///
    /// Exit status: the MBU's own, as `ninewall run`'s; 125 the daemon is
    /// unreachable or refused; 2 bad command line.
    Call(CallArgs),
    /// Print shell completions for ninewall (bash, zsh, fish, elvish,
    /// powershell).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print ninewall's man page (roff), made from this command line.
    Man,
    /// Write the narrowest profile that lets a command do what it did: run it
    /// under an observation profile (every access recorded), or read an
    /// execution from a log; the result is checked and the command run
    /// again under it.
    Learn(LearnArgs),
    /// For each refusal an execution met (a file, a syscall, an import),
    /// which wall refused it and the smallest profile change that would
    /// allow it.
    Why {
        /// The execution's id (as `audit show` prints it).
        #[arg(value_name = "EXEC")]
        exec: String,
        /// Only file refusals of this path or beneath it.
        #[arg(long, value_name = "PATH")]
        path: Option<String>,
        /// The provenance log. Default: as for `run`.
        #[arg(long, value_name = "LOG")]
        log: Option<PathBuf>,
        /// For each fix: would the execution's profile with it still be
        /// within this profile (a name or a path), as `diff` would say?
        #[arg(long, value_name = "PROFILE")]
        against: Option<PathBuf>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a role policy and print who may run what.
    Policy {
        /// The role policy (TOML).
        #[arg(value_name = "POLICY")]
        policy: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Whether profile A is a subset of profile B; if not, every permission A
    /// has that B lacks. Exit 0 if A ⊆ B, 1 if not.
    Diff {
        /// The profile that would be delegated to.
        #[arg(value_name = "A")]
        a: PathBuf,
        /// The profile it must stay within.
        #[arg(value_name = "B")]
        b: PathBuf,
        /// Print as JSON: `{"a", "b", "subset", "gained": [{key, what}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Validate a profile and print the resolved policy.
    ///
    /// Exit status: 0 if every profile is valid, 2 if any is not.
    Check {
        /// The MBU profiles (TOML files, or names looked up as for `run`).
        #[arg(value_name = "PROFILE", required = true)]
        profiles: Vec<PathBuf>,
        /// Print as JSON: for one profile the policy, or `{"ok": false,
        /// "profile", "problems": [{file, line, column, key, value,
        /// message}]}`; for several, an array of `{"profile", "ok",
        /// "policy" | "problems"}`.
        #[arg(long)]
        json: bool,
    },
}

/// `ninewall learn …`.
#[derive(Debug, Args)]
pub struct LearnArgs {
    /// Write the profile here. Default: standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The MBU name in the profile. Default: the program's file name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A directory whose files, any of them read, are allowed as the whole
    /// directory (repeat the option for more).
    #[arg(long, value_name = "DIR")]
    pub collapse: Vec<PathBuf>,
    /// How many files read in one directory make the directory the entry.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub fan: usize,
    /// Learn from this execution of the log (`--log`) instead of running
    /// the command; with a command too, it is run again under the result.
    #[arg(long, value_name = "EXEC")]
    pub from_exec: Option<String>,
    /// The log for --from-exec. Default: as for `run`.
    #[arg(long, value_name = "LOG")]
    pub log: Option<PathBuf>,
    /// The command (program and arguments), after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `ninewall call …`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The MBU to run (a name the daemon's policy gives this worker).
    #[arg(value_name = "MBU")]
    pub mbu: String,
    /// The daemon's socket. Default: $NINEWALL_SOCKET, else
    /// /run/ninewall/ninewall.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// A directory of this user's to be the MBU's workspace (the daemon opens
    /// it as this user).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// The id of the agent record (`llm.call`, `agent.note`) that led to
    /// this call: recorded in the execution's start.
    #[arg(long, value_name = "ID")]
    pub caused_by: Option<String>,
    /// The end as one JSON object on the last line of stderr (`{"ok",
    /// "exec", "exit_code", "limit", "messages", "error"}`), after a newline,
    /// instead of `ninewall: ...` lines.
    #[arg(long)]
    pub json: bool,
    /// Arguments for the MBU's command, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// `ninewall audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the whole hash chain; name the first bad line. Exit 0 if it holds, 1 if not.
    Verify {
        /// The log.
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// The verification key `audit setup-keys` printed: check every seal
        /// too, and say up to when the log is sealed.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Syslog lines that witnessed the seals (`ninewall seal: ... head=`):
        /// every witnessed head must be in the log.
        #[arg(long, value_name = "FILE", conflicts_with = "key")]
        witness: Option<PathBuf>,
        /// Print the chain's verdict as JSON (`{"log", "ok", "records",
        /// "seals", "recovered"}` or `{"log", "ok": false, "error"}`);
        /// not with --key or --witness.
        #[arg(long, conflicts_with_all = ["key", "witness"])]
        json: bool,
    },
    /// Set up forward-secure sealing for a log: a key file beside it
    /// (LOG.seal) that evolves every epoch, and a verification key, printed
    /// once, to keep somewhere else.
    SetupKeys {
        /// The log.
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// Seconds per epoch: how long the key to forge a seal stays the same.
        #[arg(long, value_name = "SECONDS", default_value_t = 900)]
        interval: u64,
    },
    /// Print each execution's story: who ran what, what was refused, how it ended.
    Show {
        /// The log.
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// Only this execution.
        #[arg(long, value_name = "ID", conflicts_with = "story")]
        exec: Option<String>,
        /// This execution, after the agent's record that led to it (its
        /// `caused_by`: the model call or note a worker appended): the whole
        /// story from the model call to the exit.
        #[arg(long, value_name = "ID")]
        story: Option<String>,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ninewall run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The MBU profile (TOML).
    #[arg(
        long,
        short = 'p',
        value_name = "PROFILE",
        required_unless_present = "mbu",
        conflicts_with = "mbu"
    )]
    pub profile: Option<PathBuf>,
    /// With --policy: the MBU to run, by name; the policy's roles must grant
    /// it to the worker this process is.
    #[arg(long, value_name = "NAME", requires = "policy")]
    pub mbu: Option<String>,
    /// The role policy (TOML) that decides which MBUs this worker may run.
    #[arg(long, value_name = "POLICY", requires = "mbu")]
    pub policy: Option<PathBuf>,
    /// With --policy: act as this worker (it must be this process's user or
    /// group; root may name any). Default: the worker this process's ids are.
    #[arg(long, value_name = "NAME", requires = "policy")]
    pub worker: Option<String>,
    /// Report the outcome as one JSON line on this descriptor, and ninewall's
    /// own messages there instead of on stderr (used by `serve` and delegation).
    #[arg(long, value_name = "FD", hide = true)]
    pub outcome_fd: Option<i32>,
    /// Who asked, as JSON read from this descriptor (used by `serve` and
    /// delegation). Taken only from ninewall itself: the process that
    /// started this one must be running this very program.
    #[arg(long, value_name = "FD", hide = true)]
    pub lineage_fd: Option<i32>,
    /// Build a warm sandbox and take its request (who asked, arguments,
    /// workspace) on this socket (used by `serve`; only from ninewall
    /// itself, as --lineage-fd).
    #[arg(long, value_name = "FD", hide = true, requires = "outcome_fd", conflicts_with_all = ["lineage_fd", "workspace", "args"])]
    pub warm_fd: Option<i32>,
    /// Run in this cgroup the daemon made and lends for the execution,
    /// instead of making one (used by `serve` on cgroup v1; only from
    /// ninewall itself, as --lineage-fd).
    #[arg(long, value_name = "NAME", hide = true, requires = "outcome_fd")]
    pub cgroup: Option<String>,
    /// A host directory to use as the workspace (read-write, noexec) instead
    /// of a fresh tmpfs.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// The --workspace directory, already opened and checked by the daemon
    /// on its client's behalf, on this descriptor (used by `serve`).
    #[arg(long, value_name = "FD", hide = true, requires = "workspace")]
    pub workspace_fd: Option<i32>,
    /// Print the walls being built to stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// ninewall's own messages and the outcome as one JSON object on the
    /// last line of stderr (`{"exec", "exit_code", "limit", "messages"}`),
    /// after a newline, instead of `ninewall: ...` lines; the MBU's output is
    /// untouched.
    #[arg(long)]
    pub json: bool,
    /// The provenance log to append to. Default: $NINEWALL_AUDIT_LOG, else
    /// /var/log/ninewall/audit.jsonl for root and
    /// ~/.local/state/ninewall/audit.jsonl for anyone else.
    #[arg(long, value_name = "LOG")]
    pub audit_log: Option<PathBuf>,
    /// The provenance log, open on this descriptor (used by `serve` and
    /// delegation, whose log the supervisor inherits).
    #[arg(long, value_name = "FD", hide = true, conflicts_with = "audit_log")]
    pub audit_log_fd: Option<i32>,
    /// Arguments appended to the profile's command; or the program and its
    /// arguments when the profile has no command.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// `ninewall serve`'s arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The role policy (TOML).
    #[arg(long, value_name = "POLICY")]
    pub policy: PathBuf,
    /// The socket. Default: /run/ninewall/ninewall.sock for root,
    /// $XDG_RUNTIME_DIR/ninewall.sock for anyone else (without
    /// XDG_RUNTIME_DIR there is no default). Its directory must be writable
    /// by this user (and root) alone.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The socket's mode, octal. Anyone who can connect reaches the gate,
    /// which refuses (and records) clients that are no worker.
    #[arg(long, value_name = "MODE", default_value = "666")]
    pub socket_mode: String,
    /// The provenance log (default as for `run`).
    #[arg(long, value_name = "LOG")]
    pub audit_log: Option<PathBuf>,
    /// Seconds running executions may take to finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub grace: u64,
    /// Seconds a request may take to arrive whole (and a client may idle).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub request_timeout: u64,
    /// Clients served at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_clients: usize,
    /// Connections one client uid may hold at once (so that no user can
    /// take every slot).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_clients_per_uid: usize,
    /// Use a --socket path in a directory that users other than this one
    /// (and root) can write, where another user could have put something
    /// first. Refused without this.
    #[arg(long)]
    pub socket_in_shared_dir: bool,
    /// Warm sandboxes kept per MBU a worker holds: built before anyone asks
    /// (namespaces, identity, filesystem view, cgroup, network), each used
    /// by one request, replaced while the daemon is not busy. 0: every
    /// request builds its own. The policy's `[warm]` table sets it per MBU;
    /// this is for the MBUs it does not name.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = warm_count)]
    pub warm: usize,
}

/// Most warm sandboxes of one MBU, for `serve --warm` and the policy's
/// `[warm]` table: each holds an identity, a cgroup, a supervisor and an
/// init while it waits, so a typo of `200` is refused rather than built.
pub const MAX_WARM: usize = 16;

/// `--warm N`: a count from 0 to [`MAX_WARM`].
fn warm_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_WARM => Ok(n),
        _ => Err(format!(
            "not a count of warm sandboxes; valid: 0 (every request builds its own) to {MAX_WARM}"
        )),
    }
}

//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Exit status: the program's own; 125 the sandbox could not be built; 126
    /// the program may not be executed; 127 not found; 128+N killed by signal N;
    /// 2 bad command line or profile.
    Run {
        /// The MBU profile (TOML).
        #[arg(long, short = 'p', value_name = "PROFILE")]
        profile: PathBuf,
        /// A host directory to use as the workspace (read-write, noexec) instead
        /// of a fresh tmpfs.
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Print the walls being built to stderr.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// The provenance log to append to. Default: $NINEWALL_AUDIT_LOG, else
        /// /var/log/ninewall/audit.jsonl for root and
        /// ~/.local/state/ninewall/audit.jsonl for anyone else.
        #[arg(long, value_name = "LOG")]
        audit_log: Option<PathBuf>,
        /// Arguments appended to the profile's command; or the program and its
        /// arguments when the profile has no command.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
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
    /// Validate a profile and print the resolved policy.
    Check {
        /// The MBU profile (TOML).
        #[arg(value_name = "PROFILE")]
        profile: PathBuf,
        /// Print the policy as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ninewall audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the whole hash chain; name the first bad line. Exit 0 if it holds, 1 if not.
    Verify {
        /// The log.
        #[arg(value_name = "LOG")]
        log: PathBuf,
    },
    /// Print each execution's story: who ran what, what was refused, how it ended.
    Show {
        /// The log.
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// Only this execution.
        #[arg(long, value_name = "ID")]
        exec: Option<String>,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
    },
}

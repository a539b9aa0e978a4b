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
        /// Arguments appended to the profile's command; or the program and its
        /// arguments when the profile has no command.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
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

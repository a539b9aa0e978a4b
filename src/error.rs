//! The one error type of an execution, and the one mapping from errors to
//! exit codes.
//!
//! Every wall: each variant names the one that refused.
//!
//! Each layer keeps its own error enum (a profile that does not load, a
//! request the gate refuses, a plan that cannot be made, a sandbox that
//! cannot be built, a log that cannot be written); [`Error`] has one variant
//! per layer, chained with `#[source]`, and [`Error::exit_code`] maps each to
//! the exit code shared/DESIGN.md gives it. The codes themselves are
//! [`crate::exit`]'s, which the lowest layers use too (the child between fork
//! and exec has no `Error` to return).

use std::path::PathBuf;

use crate::exit;

/// Why an execution did not run, or did not run to a recorded end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The profile could not be read or parsed.
    #[error(transparent)]
    Profile(#[from] crate::profile::LoadError),
    /// The profile is not valid (every problem, located).
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The role policy is not valid.
    #[error(transparent)]
    Gate(#[from] crate::gate::GateError),
    /// Wall 1 refused the request.
    #[error("wall 1 (policy gate): {0}; nothing ran")]
    Refused(#[from] crate::gate::Refusal),
    /// The profile's files changed between the gate's check and the load.
    #[error("wall 1 (policy gate): {} changed after the gate checked it; nothing ran", .0.display())]
    ProfileChanged(PathBuf),
    /// No plan fits the request, or a wall the profile requires is missing.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// The supervisor could not build or watch the sandbox.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The provenance log could not be used: nothing runs unrecorded.
    #[error("{0}; nothing ran")]
    Provenance(#[from] crate::provenance::ProvenanceError),
    /// No identity of its own could be had for the execution.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The workspace's filesystem cannot be idmapped: refused, never bound
    /// weaker.
    #[error("wall 3 (credentials): the workspace {} is on {filesystem}, which cannot be mounted idmapped here ({source}); nothing ran", path.display())]
    Idmap {
        /// The workspace.
        path: PathBuf,
        /// Its filesystem, by name.
        filesystem: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// No provenance log was named and none can be defaulted.
    #[error("provenance: no log: give --audit-log LOG or set NINEWALL_AUDIT_LOG (HOME is not set); nothing ran")]
    NoLog,
}

impl Error {
    /// The exit code of `ninewall` for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Plan(e) if e.is_exec_refusal() => exit::NOT_EXECUTABLE,
            // The profile requires a wall this kernel cannot build.
            Error::Plan(e) if e.is_wall_refusal() => exit::SANDBOX,
            Error::Usage(_) | Error::Profile(_) | Error::Policy(_) | Error::Gate(_) | Error::Plan(_) => exit::USAGE,
            Error::Refused(_)
            | Error::ProfileChanged(_)
            | Error::Sandbox(_)
            | Error::Provenance(_)
            | Error::Identity(_)
            | Error::Idmap { .. }
            | Error::NoLog => exit::SANDBOX,
        }
    }
}

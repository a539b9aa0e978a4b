//! ninewall: run an agent capability unit (MBU) as a process that can do nothing
//! except what a human-written TOML profile grants, and record what it did.
//!
//! Data flow, one function per arrow ([`pipeline`] runs them in order):
//!
//! ```text
//! profile.toml ──Profile::load──▶ Profile ──Policy::from_profile──▶ Policy
//! Invocation ──pipeline::admit (wall 1)──▶ Admission ──pipeline::load──▶ Loaded
//! Policy × Request × Host::probe() ──SetupPlan::build──▶ SetupPlan   (pure data)
//! SetupPlan ──sandbox::spawn──▶ outer child ─▶ init (pid 1) ─▶ MBU ─execve─▶
//! Running ──wait──▶ Outcome ──Error/Outcome::exit_code──▶ the caller
//!             └──▶ provenance: exec.start, file, syscall.denied, exec.end
//! ```
//!
//! The nine walls (shared/DESIGN.md) and where each lives:
//! 1 policy gate: [`gate`] (roles, the daemon, delegation), [`policy::subset`];
//! 2 interpreter guard: [`interpreter`];
//! 3 credentials: user namespace and id maps, capabilities, `no_new_privs`
//!   ([`plan`] decides, `sandbox::child` applies);
//! 4 filesystem view: [`plan`]'s mount list, `sandbox::mounts`;
//! 5 process isolation: pid, ipc, uts, cgroup and time namespaces, the
//!   sandbox dying with its supervisor (`sandbox::child`);
//! 6 network: a network namespace with nothing, or only loopback
//!   (`sandbox::netns` for the shared empty one);
//! 7 Landlock: [`landlock`] (the rules, as data);
//! 8 seccomp: [`seccomp`] (the allowlist, compiled to BPF);
//! 9 resources: cgroups (`sandbox::cgroup`), rlimits, timeouts, output cap.
//!
//! Over all of them: [`provenance`]. Every `unsafe` block is in the
//! crate-private OS layer `sys`. See ARCHITECTURE.md for the layering.

#![deny(missing_docs)]

#[doc(hidden)]
pub mod bench;
pub mod cli;
pub mod error;
pub mod exit;
pub mod gate;
pub mod host;
pub mod identity;
pub mod interpreter;
pub mod kernel;
pub mod landlock;
pub mod learn;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod profile;
pub mod provenance;
pub mod run;
pub mod sandbox;
pub mod seccomp;
pub(crate) mod sys;
pub mod why;

pub use plan::{Caller, Request, SetupPlan};
pub use policy::Policy;
pub use profile::Profile;
pub use sandbox::Outcome;

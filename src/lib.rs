//! ninewall: run an agent capability unit (MBU) as a process that can do nothing
//! except what a human-written TOML profile grants.
//!
//! Data flow, one function per arrow:
//!
//! ```text
//! profile.toml ──Profile::load──▶ Profile ──Policy::from_profile──▶ Policy
//!   (serde, unknown keys refused,     (every value      (validated against the
//!    `extends` followed)               located)          format and this host)
//! Policy + Request + Caller ──SetupPlan::build──▶ SetupPlan   (pure data)
//! SetupPlan ──sandbox::spawn──▶ outer child ─▶ init (pid 1) ─▶ MBU ─execve─▶
//! Running ──wait──▶ Outcome ──exit_code──▶ the caller
//! ```
//!
//! The walls built here (numbers of shared/DESIGN.md): 3 credentials (user
//! namespace onto an unprivileged id, capabilities dropped, `no_new_privs`),
//! 4 filesystem view (fresh tmpfs root, read-only binds of the profile's paths,
//! `pivot_root`), 5 process isolation (pid, ipc, uts, cgroup, time namespaces; the
//! sandbox dies with its supervisor), 6 network (a network namespace with no
//! interface, or loopback only) and 7 Landlock (file rights per path, execute
//! only on the listed executables, TCP ports, signal and socket scopes).

#![deny(missing_docs)]

#[doc(hidden)]
pub mod bench;
pub mod cli;
pub mod error;
pub mod gate;
pub mod host;
pub mod interpreter;
pub mod kernel;
pub mod landlock;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod profile;
pub mod provenance;
pub mod run;
pub mod sandbox;
pub mod seccomp;
pub(crate) mod sys;

pub use plan::{Caller, Request, SetupPlan};
pub use policy::Policy;
pub use profile::Profile;
pub use sandbox::Outcome;

//! Wall 1, the policy gate: which worker may run which MBU at all.
//!
//! A policy file maps roles to the MBUs (profiles) they may run, and workers to
//! roles; a worker is a unix user or group, identified by the kernel
//! (`SO_PEERCRED` on the daemon's socket, the process's own ids on the command
//! line), never by a name it claims. For a worker, an MBU its roles do not name
//! does not exist: the answer is the same "no such capability" as for a name
//! that is nowhere.
//!
//! ```toml
//! profiles = "profiles"            # MBU NAME is profiles/NAME.toml, beside this file
//!
//! [roles.analyst]
//! mbus = ["knowledge", "reason", "document_generation"]
//!
//! [workers.research-agent]
//! user = "agent"                   # a user name or a uid; or group = "…"
//! roles = ["analyst"]
//!
//! [warm]                           # optional: sandboxes `serve` keeps built per MBU
//! reason = 2                       # (`serve --warm N` for the MBUs not named)
//! document_generation = 0
//! ```
//!
//! Loading validates everything (unknown keys, unknown roles, users and groups
//! that do not exist, every profile a role names loads and is a valid policy)
//! and reports every problem at once, each with file, line and key.

pub mod call;
pub mod delegate;
pub mod exec;
pub mod serve;
pub mod warm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{is_mbu_name, Problem};
use crate::profile::{At, LoadError, Origin, Source};

/// The validated policy file.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The file it was read from.
    pub file: PathBuf,
    /// Where `NAME.toml` of each MBU is.
    pub profiles: PathBuf,
    /// Role name → the MBUs it grants, in file order.
    pub roles: BTreeMap<String, Vec<String>>,
    /// The workers, in file order.
    pub workers: Vec<Worker>,
    /// Each granted MBU's `limits.output`, as validated at load.
    pub output_limits: BTreeMap<String, u64>,
    /// MBU → how many warm sandboxes `serve` keeps of it, where the policy
    /// says (an admin knows which MBUs are called often and which are rare;
    /// each warm sandbox holds an identity, a cgroup and two processes).
    pub warm: BTreeMap<String, usize>,
}

pub use crate::cli::MAX_WARM;

/// One worker: who it is to the kernel, and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Its name in the policy (for logs and `--worker`).
    pub name: String,
    /// Who it is.
    pub identity: Identity,
    /// Its roles.
    pub roles: Vec<String>,
}

/// How the kernel recognises a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// A process running as this uid.
    User(u32),
    /// A process whose gid or one of whose supplementary groups is this gid.
    Group(u32),
}

impl Identity {
    /// Whether the kernel's word on a client says it is this identity.
    fn is(self, peer: &Peer) -> bool {
        match self {
            Identity::User(u) => u == peer.uid,
            Identity::Group(g) => g == peer.gid || peer.groups.contains(&g),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::User(u) => write!(f, "uid {u}"),
            Identity::Group(g) => write!(f, "gid {g}"),
        }
    }
}

/// The kernel's word on a client: its uid, gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Why a request does not pass the gate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The peer is no worker of the policy.
    #[error("not a worker: {0} is not named in the policy")]
    NotAWorker(String),
    /// Two group workers match and none by user: refuse rather than guess.
    #[error("ambiguous: workers {0} and {1} both match this client's groups; give the user its own worker")]
    Ambiguous(String, String),
    /// `--worker NAME` names a worker the caller is not.
    #[error("worker {name}: this process ({peer}) is not that worker")]
    NotThatWorker {
        /// The name asked for.
        name: String,
        /// Who the caller is.
        peer: String,
    },
    /// The worker's roles do not grant this MBU (or it exists nowhere).
    #[error("no such capability: {0}")]
    NoSuchCapability(String),
}

/// A request that passed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The worker.
    pub worker: String,
    /// The role that grants the MBU.
    pub role: String,
    /// The profile to run.
    pub profile: PathBuf,
    /// Its `limits.output` when the policy was loaded: how much output the
    /// requester holds at most (the supervisor enforces the profile's own).
    pub output_limit: u64,
}

/// Why the policy file is not valid.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// It could not be read or parsed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Every problem found.
    #[error("{}", .0.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    profiles: Option<Spanned<String>>,
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, RawRole>,
    #[serde(default)]
    workers: BTreeMap<Spanned<String>, RawWorker>,
    #[serde(default)]
    warm: BTreeMap<Spanned<String>, Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    mbus: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    roles: Spanned<Vec<Spanned<String>>>,
}

struct Problems<'a> {
    list: Vec<Problem>,
    file: &'a Source<'a>,
}

impl Problems<'_> {
    fn bad(&mut self, at: &At<String>, message: impl Into<String>) {
        self.list.push(Problem {
            origin: at.origin.clone(),
            value: Some(at.value.clone()),
            message: message.into(),
        });
    }
    fn bad_at(&mut self, origin: Origin, message: impl Into<String>) {
        self.list.push(Problem {
            origin,
            value: None,
            message: message.into(),
        });
    }
    fn at(&self, v: &Spanned<String>, key: &str) -> At<String> {
        self.file.at(v.clone(), key)
    }
}

impl Gate {
    /// Reads and validates a policy file, and every profile it names.
    pub fn load(path: &Path) -> Result<Gate, GateError> {
        let text = crate::profile::read_limited(path)?;
        let raw: RawGate = crate::profile::parse_toml(path, &text)?;
        let source = Source::new(path, &text);
        let mut p = Problems {
            list: Vec::new(),
            file: &source,
        };
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let profiles = match &raw.profiles {
            None => dir.to_path_buf(),
            Some(v) => {
                let at = p.at(v, "profiles");
                let d = dir.join(&at.value);
                if !d.is_dir() {
                    p.bad(&at, format!("{} is not a directory; valid: the directory of the MBU profiles, relative to this file (\"profiles\") or absolute", d.display()));
                }
                d
            }
        };

        let mut roles = BTreeMap::new();
        // MBU name -> its output limit, or None if its profile is not valid.
        let mut checked: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for (name, role) in &raw.roles {
            let key = format!("roles.{}", name.get_ref());
            let name_at = p.at(name, &key);
            // Role and worker names follow the MBU name rule.
            if !is_mbu_name(&name_at.value) {
                p.bad(&name_at, "not a valid role name; valid: letters, digits, '_', '-', '.'");
            }
            let mut mbus = Vec::new();
            for (i, m) in role.mbus.get_ref().iter().enumerate() {
                let at = p.at(m, &format!("{key}.mbus[{i}]"));
                if !is_mbu_name(&at.value) {
                    p.bad(
                        &at,
                        "not an MBU name; valid: the name of a profile in the profiles directory, such as \"reason\"",
                    );
                    continue;
                }
                let ok = checked
                    .entry(at.value.clone())
                    .or_insert_with(|| match check_profile(&profiles, &at.value) {
                        Ok(output) => Some(output),
                        Err(why) => {
                            p.bad(&at, why);
                            None
                        }
                    })
                    .is_some();
                if ok && !mbus.contains(&at.value) {
                    mbus.push(at.value);
                }
            }
            roles.insert(name_at.value, mbus);
        }

        let mut workers: Vec<Worker> = Vec::new();
        for (name, w) in &raw.workers {
            let key = format!("workers.{}", name.get_ref());
            let name_at = p.at(name, &key);
            // Role and worker names follow the MBU name rule.
            if !is_mbu_name(&name_at.value) {
                p.bad(
                    &name_at,
                    "not a valid worker name; valid: letters, digits, '_', '-', '.'",
                );
            }
            let named = match (&w.user, &w.group) {
                (Some(u), None) => Some((&USER, u)),
                (None, Some(g)) => Some((&GROUP, g)),
                _ => None,
            };
            let identity = match named {
                Some((kind, value)) => {
                    let at = p.at(value, &format!("{key}.{}", kind.key));
                    match lookup(&at.value, kind) {
                        Some(n) => Some((kind.identity)(n)),
                        None => {
                            p.bad(
                                &at,
                                format!(
                                    "no such {0} on this host; valid: a {0} name or a numeric {1}",
                                    kind.key, kind.id
                                ),
                            );
                            None
                        }
                    }
                }
                None => {
                    p.bad_at(
                        p.file.origin(name.span(), &key),
                        "needs exactly one of user = \"NAME\" or group = \"NAME\": the identity the kernel reports for the worker's processes",
                    );
                    None
                }
            };
            let mut wroles = Vec::new();
            for (i, r) in w.roles.get_ref().iter().enumerate() {
                let at = p.at(r, &format!("{key}.roles[{i}]"));
                if roles.contains_key(&at.value) {
                    wroles.push(at.value);
                } else {
                    let known: Vec<&String> = roles.keys().collect();
                    p.bad(&at, format!("no such role; valid: one of {known:?}"));
                }
            }
            if let Some(identity) = identity {
                if let Some(other) = workers.iter().find(|o| o.identity == identity) {
                    p.bad(
                        &name_at,
                        format!("{identity} is already worker {}; one identity, one worker", other.name),
                    );
                }
                workers.push(Worker {
                    name: name_at.value,
                    identity,
                    roles: wroles,
                });
            }
        }
        let warm = warm_counts(&raw.warm, &roles, &mut p);
        if !p.list.is_empty() {
            return Err(GateError::Invalid(p.list));
        }
        Ok(Gate {
            output_limits: checked.into_iter().filter_map(|(m, o)| Some((m, o?))).collect(),
            file: path.to_path_buf(),
            profiles,
            roles,
            workers,
            warm,
        })
    }

    /// The worker a peer is: by uid first, else by exactly one of its groups.
    pub fn worker_for(&self, peer: &Peer) -> Result<&Worker, Refusal> {
        if let Some(w) = self.workers.iter().find(|w| w.identity == Identity::User(peer.uid)) {
            return Ok(w);
        }
        let mut by_group = self
            .workers
            .iter()
            .filter(|w| matches!(w.identity, Identity::Group(_)) && w.identity.is(peer));
        match (by_group.next(), by_group.next()) {
            (Some(w), None) => Ok(w),
            (Some(a), Some(b)) => Err(Refusal::Ambiguous(a.name.clone(), b.name.clone())),
            _ => Err(Refusal::NotAWorker(format!("uid {} gid {}", peer.uid, peer.gid))),
        }
    }

    /// The worker called `name`, if `peer` is it (root may act as any worker).
    pub fn named_worker(&self, name: &str, peer: &Peer) -> Result<&Worker, Refusal> {
        let not = || Refusal::NotThatWorker {
            name: name.to_string(),
            peer: format!("uid {} gid {}", peer.uid, peer.gid),
        };
        let w = self.workers.iter().find(|w| w.name == name).ok_or_else(not)?;
        if w.identity.is(peer) || peer.uid == 0 {
            Ok(w)
        } else {
            Err(not())
        }
    }

    /// Whether `worker` may run `mbu`; the profile to run if so.
    pub fn grant(&self, worker: &Worker, mbu: &str) -> Result<Grant, Refusal> {
        let role = worker
            .roles
            .iter()
            .find(|r| self.roles.get(*r).is_some_and(|m| m.iter().any(|x| x == mbu)))
            .ok_or_else(|| Refusal::NoSuchCapability(mbu.to_string()))?;
        Ok(Grant {
            worker: worker.name.clone(),
            role: role.clone(),
            profile: profile_path(&self.profiles, mbu),
            output_limit: self
                .output_limits
                .get(mbu)
                .copied()
                .unwrap_or(crate::policy::Limits::default().output),
        })
    }

    /// The MBUs a worker may run, sorted.
    pub fn capabilities(&self, worker: &Worker) -> Vec<String> {
        let mut all: Vec<String> = worker
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// The `[warm]` table: a count from 0 to [`MAX_WARM`] for an MBU a role
/// grants (a name no role grants is a typo: nothing would ever be warmed).
fn warm_counts(
    raw: &BTreeMap<Spanned<String>, Spanned<i64>>,
    roles: &BTreeMap<String, Vec<String>>,
    p: &mut Problems<'_>,
) -> BTreeMap<String, usize> {
    let granted: Vec<&String> = {
        let mut all: Vec<&String> = roles.values().flatten().collect();
        all.sort();
        all.dedup();
        all
    };
    let mut warm = BTreeMap::new();
    for (mbu, count) in raw {
        let key = format!("warm.{}", mbu.get_ref());
        let at = p.at(mbu, &key);
        if !granted.contains(&&at.value) {
            p.bad(&at, format!("no role grants this MBU; valid: one of {granted:?}"));
            continue;
        }
        match usize::try_from(*count.get_ref()) {
            Ok(n) if n <= MAX_WARM => {
                warm.insert(at.value, n);
            }
            _ => {
                p.bad_at(
                    p.file.origin(count.span(), &key),
                    format!(
                        "{} is not a count of warm sandboxes; valid: 0 (every request builds its own) to {MAX_WARM}",
                        count.get_ref()
                    ),
                );
            }
        }
    }
    warm
}

/// `DIR/NAME.toml`. Callers check `name` with [`is_mbu_name`] first, so it
/// cannot leave `dir`.
pub fn profile_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.toml"))
}

/// Loads and validates MBU `name`'s profile; its output limit.
fn check_profile(dir: &Path, name: &str) -> Result<u64, String> {
    let path = profile_path(dir, name);
    let profile = crate::Profile::load(&path).map_err(|e| format!("its profile does not load: {e}"))?;
    let policy = crate::Policy::from_profile(&profile).map_err(|e| format!("its profile is not valid: {e}"))?;
    if policy.name != name {
        return Err(format!(
            "{} names itself {:?}; the file name and mbu.name must agree",
            path.display(),
            policy.name
        ));
    }
    Ok(policy.limits.output)
}

/// How a worker's `user` or `group` becomes an [`Identity`].
struct IdentityKind {
    key: &'static str,
    id: &'static str,
    /// Where names are looked up.
    database: &'static str,
    identity: fn(u32) -> Identity,
}

const USER: IdentityKind = IdentityKind {
    key: "user",
    id: "uid",
    database: "/etc/passwd",
    identity: Identity::User,
};

const GROUP: IdentityKind = IdentityKind {
    key: "group",
    id: "gid",
    database: "/etc/group",
    identity: Identity::Group,
};

/// A numeric id as it is, or a name looked up in the host's local database.
///
/// Names are read from /etc/passwd and /etc/group themselves, not through
/// glibc's NSS: ninewall is linked statically (.cargo/config.toml), and a
/// static glibc that loads an NSS module (`systemd`, `ldap`) loads a second
/// libc and crashes. A user or group known only to such a source is named by
/// its number. It also keeps the gate's answer independent of a directory
/// service being reachable.
fn lookup(v: &str, kind: &IdentityKind) -> Option<u32> {
    match v.parse::<u32>() {
        Ok(n) => Some(n),
        Err(_) => id_in_database(&std::fs::read_to_string(kind.database).ok()?, v),
    }
}

/// The id of `name` in the text of a colon-separated database (passwd:
/// `name:password:uid:...`, group: `name:password:gid:...`); the first entry
/// wins, as in glibc's `files` source. Lines that are not entries (comments,
/// NIS `+`/`-` markers) never match a valid name.
fn id_in_database(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::id_in_database;

    #[test]
    fn names_are_found_by_their_first_field_and_read_from_the_third() {
        let passwd = "# comment\n+nisuser::::::\nroot:x:0:0:root:/root:/bin/bash\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      nobody:x:7:7::/:/bin/sh\nbroken:x:notanumber:0::/:\n";
        assert_eq!(id_in_database(passwd, "root"), Some(0));
        assert_eq!(id_in_database(passwd, "nobody"), Some(65534), "the first entry wins");
        assert_eq!(id_in_database(passwd, "broken"), None);
        assert_eq!(id_in_database(passwd, "roo"), None, "whole names only");
        assert_eq!(id_in_database(passwd, "+nisuser"), None);
        assert_eq!(id_in_database("staff:x:50:alice,bob\n", "staff"), Some(50));
        assert_eq!(id_in_database("", "root"), None);
    }
}

//! Wall 7, as data: which Landlock rights a sandbox's ruleset handles and which
//! it grants where, for a given kernel ABI.
//!
//! The ruleset handles every access right the running kernel supports (so
//! anything not granted is denied) and grants, by path inside the sandbox:
//!
//! | where | rights |
//! |---|---|
//! | `fs.read`, `fs.libraries` | read files (and list directories) |
//! | `exec.executables` and their ELF / `#!` interpreters | read, execute |
//! | workspace, `fs.write`, `/tmp` | read, write, create, remove, truncate, refer |
//! | `/proc` | read |
//! | `/dev` | list; the five devices: read, write |
//!
//! Never granted: `EXECUTE` anywhere else, `MAKE_CHAR`/`MAKE_BLOCK`, `IOCTL_DEV`.
//! TCP `bind`/`connect` only on `net.bind`/`net.connect` ports. Signals and
//! abstract unix sockets are scoped to the sandbox's domain.
//!
//! Compatibility is decided per feature ([`Feature`]): a profile requires a set
//! of features (by default all of them); a kernel that lacks one is a refusal,
//! never a silently weaker sandbox.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// `LANDLOCK_ACCESS_FS_*` and `LANDLOCK_ACCESS_NET_*`, `LANDLOCK_SCOPE_*`.
pub mod access {
    /// Execute a file.
    pub const EXECUTE: u64 = 1 << 0;
    /// Open a file with write access.
    pub const WRITE_FILE: u64 = 1 << 1;
    /// Open a file with read access.
    pub const READ_FILE: u64 = 1 << 2;
    /// List a directory.
    pub const READ_DIR: u64 = 1 << 3;
    /// Remove an empty directory or rename one.
    pub const REMOVE_DIR: u64 = 1 << 4;
    /// Unlink or rename a file.
    pub const REMOVE_FILE: u64 = 1 << 5;
    /// Create a character device.
    pub const MAKE_CHAR: u64 = 1 << 6;
    /// Create a directory.
    pub const MAKE_DIR: u64 = 1 << 7;
    /// Create a regular file.
    pub const MAKE_REG: u64 = 1 << 8;
    /// Create a unix socket.
    pub const MAKE_SOCK: u64 = 1 << 9;
    /// Create a named pipe.
    pub const MAKE_FIFO: u64 = 1 << 10;
    /// Create a block device.
    pub const MAKE_BLOCK: u64 = 1 << 11;
    /// Create a symbolic link.
    pub const MAKE_SYM: u64 = 1 << 12;
    /// Link or rename a file across directories (ABI 2).
    pub const REFER: u64 = 1 << 13;
    /// Truncate a file (ABI 3).
    pub const TRUNCATE: u64 = 1 << 14;
    /// ioctl on a device file (ABI 5).
    pub const IOCTL_DEV: u64 = 1 << 15;
    /// Bind a TCP socket to a port (ABI 4).
    pub const BIND_TCP: u64 = 1 << 0;
    /// Connect a TCP socket to a port (ABI 4).
    pub const CONNECT_TCP: u64 = 1 << 1;
    /// Scope: abstract unix sockets of other domains (ABI 6).
    pub const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
    /// Scope: signals to other domains (ABI 6).
    pub const SCOPE_SIGNAL: u64 = 1 << 1;

    /// Rights that apply to a file (the kernel refuses the others on a file rule).
    pub const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;
}

use access::{
    BIND_TCP, CONNECT_TCP, EXECUTE, FILE_RIGHTS, IOCTL_DEV, MAKE_BLOCK, MAKE_CHAR, MAKE_DIR, MAKE_FIFO, MAKE_REG,
    MAKE_SOCK, MAKE_SYM, READ_DIR, READ_FILE, REFER, REMOVE_DIR, REMOVE_FILE, SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL,
    TRUNCATE, WRITE_FILE,
};

const FS_NAMES: [(u64, &str); 16] = [
    (EXECUTE, "execute"),
    (WRITE_FILE, "write_file"),
    (READ_FILE, "read_file"),
    (READ_DIR, "read_dir"),
    (REMOVE_DIR, "remove_dir"),
    (REMOVE_FILE, "remove_file"),
    (MAKE_CHAR, "make_char"),
    (MAKE_DIR, "make_dir"),
    (MAKE_REG, "make_reg"),
    (MAKE_SOCK, "make_sock"),
    (MAKE_FIFO, "make_fifo"),
    (MAKE_BLOCK, "make_block"),
    (MAKE_SYM, "make_sym"),
    (REFER, "refer"),
    (TRUNCATE, "truncate"),
    (IOCTL_DEV, "ioctl_dev"),
];
const NET_NAMES: [(u64, &str); 2] = [(BIND_TCP, "bind_tcp"), (CONNECT_TCP, "connect_tcp")];
const SCOPE_NAMES: [(u64, &str); 2] = [
    (SCOPE_ABSTRACT_UNIX_SOCKET, "abstract_unix_socket"),
    (SCOPE_SIGNAL, "signal"),
];

fn names(bits: u64, table: &[(u64, &'static str)]) -> Vec<&'static str> {
    table.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
}

/// Names of filesystem rights.
pub fn fs_names(bits: u64) -> Vec<&'static str> {
    names(bits, &FS_NAMES)
}

/// Names of network rights.
pub fn net_names(bits: u64) -> Vec<&'static str> {
    names(bits, &NET_NAMES)
}

/// Names of scopes.
pub fn scope_names(bits: u64) -> Vec<&'static str> {
    names(bits, &SCOPE_NAMES)
}

/// Filesystem rights a kernel of Landlock ABI `abi` can handle.
pub fn fs_rights(abi: u32) -> u64 {
    match abi {
        0 => 0,
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    }
}

/// Network rights a kernel of ABI `abi` can handle.
pub fn net_rights(abi: u32) -> u64 {
    if abi >= 4 {
        BIND_TCP | CONNECT_TCP
    } else {
        0
    }
}

/// Scopes a kernel of ABI `abi` can apply.
pub fn scopes(abi: u32) -> u64 {
    if abi >= 6 {
        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    } else {
        0
    }
}

/// A Landlock feature a profile can require, with the ABI that brought it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// File access rights (ABI 1).
    Fs,
    /// Renames and links across directories (ABI 2).
    Refer,
    /// Truncation (ABI 3).
    Truncate,
    /// TCP bind and connect ports (ABI 4).
    Tcp,
    /// ioctl on devices (ABI 5).
    IoctlDev,
    /// Signal and abstract unix socket scoping (ABI 6).
    Scope,
}

impl Feature {
    /// Every feature, oldest first.
    pub const ALL: [Feature; 6] = [
        Feature::Fs,
        Feature::Refer,
        Feature::Truncate,
        Feature::Tcp,
        Feature::IoctlDev,
        Feature::Scope,
    ];

    /// The Landlock ABI that brought it.
    pub fn abi(self) -> u32 {
        match self {
            Feature::Fs => 1,
            Feature::Refer => 2,
            Feature::Truncate => 3,
            Feature::Tcp => 4,
            Feature::IoctlDev => 5,
            Feature::Scope => 6,
        }
    }

    /// Its name in a profile.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Fs => "fs",
            Feature::Refer => "refer",
            Feature::Truncate => "truncate",
            Feature::Tcp => "tcp",
            Feature::IoctlDev => "ioctl_dev",
            Feature::Scope => "scope",
        }
    }

    /// Parses a profile name.
    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (Landlock ABI {})", self.name(), self.abi())
    }
}

/// A rule on a path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathRule {
    /// Path inside the sandbox (after `pivot_root`).
    pub path: PathBuf,
    /// Rights granted beneath it, already limited to what the kernel handles.
    pub access: u64,
}

/// A rule on a TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRule {
    /// The port.
    pub port: u16,
    /// `BIND_TCP` and/or `CONNECT_TCP`.
    pub access: u64,
}

/// The ruleset of one sandbox, for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockPlan {
    /// The kernel's Landlock ABI.
    pub abi: u32,
    /// Filesystem rights handled (denied unless granted).
    pub handled_fs: u64,
    /// Network rights handled.
    pub handled_net: u64,
    /// Scopes applied.
    pub scoped: u64,
    /// Path rules, in order.
    pub paths: Vec<PathRule>,
    /// Port rules.
    pub ports: Vec<PortRule>,
}

/// A feature the profile requires and the kernel lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wall 7 (Landlock): the profile requires {feature}, and this kernel's Landlock ABI is {abi}{hint}")]
pub struct Missing {
    /// The first missing feature.
    pub feature: Feature,
    /// The kernel's ABI (0: Landlock unavailable).
    pub abi: u32,
    /// How to accept less, if the admin wants to.
    pub hint: &'static str,
}

/// What a path grants, before the kernel mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Read files, list directories.
    Read,
    /// Read and execute a file.
    Execute,
    /// Read, write, create, remove, truncate, refer.
    Write,
    /// Read and write a device.
    Device,
    /// List a directory.
    List,
}

impl Grant {
    fn rights(self, dir: bool) -> u64 {
        let bits = match self {
            Grant::Read => READ_FILE | READ_DIR,
            Grant::Execute => READ_FILE | EXECUTE,
            Grant::Write => {
                READ_FILE
                    | READ_DIR
                    | WRITE_FILE
                    | TRUNCATE
                    | REMOVE_FILE
                    | REMOVE_DIR
                    | MAKE_REG
                    | MAKE_DIR
                    | MAKE_SYM
                    | MAKE_FIFO
                    | MAKE_SOCK
                    | REFER
            }
            Grant::Device => READ_FILE | WRITE_FILE | TRUNCATE,
            Grant::List => READ_DIR,
        };
        if dir {
            bits
        } else {
            bits & FILE_RIGHTS
        }
    }
}

/// One place the sandbox may use, as the plan knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Path inside the sandbox.
    pub path: PathBuf,
    /// A directory (true) or a file.
    pub dir: bool,
    /// What it grants.
    pub grant: Grant,
}

/// Builds the ruleset for a kernel of Landlock ABI `abi`; `None` when the
/// profile requires nothing and the kernel has no Landlock.
pub fn plan(
    abi: u32,
    required: &[Feature],
    places: &[Place],
    connect: &[u16],
    bind: &[u16],
) -> Result<Option<LandlockPlan>, Missing> {
    if let Some(feature) = required.iter().copied().filter(|f| f.abi() > abi).min() {
        return Err(Missing {
            feature,
            abi,
            hint: "; a profile can accept less with landlock.require (the walls actually built are listed by -v)",
        });
    }
    if abi == 0 {
        return Ok(None);
    }
    let handled_fs = fs_rights(abi);
    let handled_net = net_rights(abi);
    let mut paths: Vec<PathRule> = Vec::new();
    for p in places {
        let access = p.grant.rights(p.dir) & handled_fs;
        match paths.iter_mut().find(|r| r.path == p.path) {
            Some(r) => r.access |= access,
            None => paths.push(PathRule {
                path: p.path.clone(),
                access,
            }),
        }
    }
    let mut ports: Vec<PortRule> = Vec::new();
    if handled_net != 0 {
        for (list, right) in [(connect, CONNECT_TCP), (bind, BIND_TCP)] {
            for &port in list {
                match ports.iter_mut().find(|r| r.port == port) {
                    Some(r) => r.access |= right,
                    None => ports.push(PortRule { port, access: right }),
                }
            }
        }
        ports.sort_by_key(|r| r.port);
    }
    Ok(Some(LandlockPlan {
        abi,
        handled_fs,
        handled_net,
        scoped: scopes(abi),
        paths,
        ports,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(path: &str, dir: bool, grant: Grant) -> Place {
        Place {
            path: path.into(),
            dir,
            grant,
        }
    }

    fn places() -> Vec<Place> {
        vec![
            place("/usr/lib/python3.11", true, Grant::Read),
            place("/usr/bin/python3.11", false, Grant::Execute),
            place("/work", true, Grant::Write),
            place("/dev/null", false, Grant::Device),
        ]
    }

    #[test]
    fn each_abi_handles_what_it_has_and_nothing_more() {
        let expected_fs = [0, 13, 14, 15, 15, 16, 16, 16];
        for abi in 1..=7u32 {
            let p = plan(abi, &[], &places(), &[443], &[8080]).unwrap().unwrap();
            assert_eq!(p.handled_fs.count_ones(), expected_fs[abi as usize], "ABI {abi}");
            assert_eq!(p.handled_net != 0, abi >= 4, "ABI {abi}");
            assert_eq!(p.scoped, if abi >= 6 { 3 } else { 0 }, "ABI {abi}");
            // Granted rights never exceed handled rights, and execute is granted
            // only on the executable.
            for r in &p.paths {
                assert_eq!(r.access & !p.handled_fs, 0);
                assert_eq!(
                    r.access & EXECUTE != 0,
                    r.path.ends_with("python3.11") && r.path.starts_with("/usr/bin")
                );
                assert_eq!(r.access & (MAKE_CHAR | MAKE_BLOCK | IOCTL_DEV), 0);
            }
            let work = p.paths.iter().find(|r| r.path.ends_with("work")).unwrap();
            assert_eq!(work.access & TRUNCATE != 0, abi >= 3);
            assert_eq!(work.access & REFER != 0, abi >= 2);
            if abi >= 4 {
                assert_eq!(
                    p.ports,
                    vec![
                        PortRule {
                            port: 443,
                            access: CONNECT_TCP
                        },
                        PortRule {
                            port: 8080,
                            access: BIND_TCP
                        }
                    ]
                );
            } else {
                assert!(p.ports.is_empty());
            }
        }
    }

    #[test]
    fn a_file_rule_carries_only_file_rights() {
        let p = plan(7, &[], &places(), &[], &[]).unwrap().unwrap();
        let exe = p.paths.iter().find(|r| r.path.ends_with("bin/python3.11")).unwrap();
        assert_eq!(exe.access, READ_FILE | EXECUTE);
        let null = p.paths.iter().find(|r| r.path.ends_with("null")).unwrap();
        assert_eq!(null.access, READ_FILE | WRITE_FILE | TRUNCATE);
    }

    #[test]
    fn a_missing_required_feature_is_refused_naming_it_and_the_abi() {
        for abi in 0..=7u32 {
            let r = plan(abi, &Feature::ALL, &places(), &[], &[]);
            if abi >= 6 {
                assert!(r.unwrap().is_some());
            } else {
                let m = r.unwrap_err();
                assert_eq!(m.abi, abi);
                assert_eq!(m.feature.abi(), abi + 1, "the oldest missing feature is named");
                assert!(m.to_string().contains(&format!("Landlock ABI {}", abi + 1)));
            }
        }
        assert_eq!(plan(0, &[], &places(), &[], &[]), Ok(None));
        assert!(plan(3, &[Feature::Fs, Feature::Truncate], &places(), &[], &[]).is_ok());
        let tcp = plan(3, &[Feature::Tcp], &places(), &[], &[]).unwrap_err();
        assert_eq!(tcp.feature, Feature::Tcp);
    }
}

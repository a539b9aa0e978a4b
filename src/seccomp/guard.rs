//! Wall 8's argument guards: what the filter checks in a syscall's register
//! arguments besides its number.
//!
//! - **No setuid or setgid bit, ever** (as systemd's `RestrictSUIDSGID=`): a
//!   mode that carries `S_ISUID` or `S_ISGID` is refused to `chmod`, `fchmod`,
//!   `fchmodat`, `fchmodat2`, `mkdir`, `mkdirat`, `mknod`, `mknodat`, `creat`,
//!   and to `open`/`openat` when they create (`O_CREAT`, `O_TMPFILE`).
//!   `openat2` carries its mode in memory, where a filter cannot look and a
//!   supervisor could only read it racily: it is answered `ENOSYS` (libc
//!   falls back to `openat`), as `clone3` is. Besides `nosuid` on every
//!   writable mount, this keeps a sandbox from leaving a setuid or setgid
//!   file in a host directory (a workspace, `fs.write`) for someone to run on
//!   the host.
//! - **Socket families by allowlist**: `socket` only with the families the
//!   profile's network needs ([`Family`]), `socketpair` only with `AF_UNIX`;
//!   never `AF_VSOCK`, `AF_PACKET`, `AF_NETLINK`, … (the network namespace
//!   does not cover them all: vsock reaches the hypervisor).
//!
//! The same predicates are applied by the supervisor to a recorded call
//! before it lets it continue ([`Guard::refuses`]): the arguments are the
//! registers the kernel snapshotted for the notification, so the two cannot
//! disagree.

use serde::Serialize;

use super::Insn;

/// The bits a sandbox may never set on a file.
pub const SETID_BITS: u32 = 0o6000;

/// The `open` flags that create a file: `O_CREAT`, and `O_TMPFILE`'s own bit
/// (`O_TMPFILE` is that bit with `O_DIRECTORY`).
const CREATING: u32 = (libc::O_CREAT | (libc::O_TMPFILE & !libc::O_DIRECTORY)).cast_unsigned();

/// A check on a syscall's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// `args[arg]` is a mode: refused if it has [`SETID_BITS`].
    Mode {
        /// The argument's index.
        arg: u8,
    },
    /// A call that creates only with some flags: refused if `args[flags]`
    /// has one of the creating flags and `args[mode]` has [`SETID_BITS`].
    CreateMode {
        /// The flags' index.
        flags: u8,
        /// The mode's index.
        mode: u8,
    },
}

/// The guarded syscalls, by name.
pub const GUARDED: [(&str, Guard); 11] = [
    ("chmod", Guard::Mode { arg: 1 }),
    ("fchmod", Guard::Mode { arg: 1 }),
    ("fchmodat", Guard::Mode { arg: 2 }),
    ("fchmodat2", Guard::Mode { arg: 2 }),
    ("creat", Guard::Mode { arg: 1 }),
    ("mkdir", Guard::Mode { arg: 1 }),
    ("mkdirat", Guard::Mode { arg: 2 }),
    ("mknod", Guard::Mode { arg: 1 }),
    ("mknodat", Guard::Mode { arg: 2 }),
    ("open", Guard::CreateMode { flags: 1, mode: 2 }),
    ("openat", Guard::CreateMode { flags: 2, mode: 3 }),
];

/// The guard of syscall `name`, if it has one.
pub fn guard_of(name: &str) -> Option<Guard> {
    GUARDED.iter().find(|(n, _)| *n == name).map(|&(_, g)| g)
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Offset in `struct seccomp_data` of the low 32 bits of `args[i]` (the
/// whole of an `int` or `mode_t` argument; little-endian layout).
fn low_word(i: u8) -> u32 {
    16 + 8 * u32::from(i)
}

impl Guard {
    /// Whether the call with these arguments is refused.
    pub fn refuses(self, args: &[u64; 6]) -> bool {
        let low = |i: u8| args.get(usize::from(i)).map_or(0, |&v| v & 0xffff_ffff);
        match self {
            Guard::Mode { arg } => low(arg) & u64::from(SETID_BITS) != 0,
            Guard::CreateMode { flags, mode } => {
                low(flags) & u64::from(CREATING) != 0 && low(mode) & u64::from(SETID_BITS) != 0
            }
        }
    }

    /// The BPF for this guard: returns `deny` if it refuses, else `then`.
    /// Leaves the accumulator changed (it ends in a return on every path).
    pub fn bpf(self, then: u32, deny: u32) -> Vec<Insn> {
        let insn = |code, jt, jf, k| Insn { code, jt, jf, k };
        match self {
            Guard::Mode { arg } => vec![
                insn(LD_W_ABS, 0, 0, low_word(arg)),
                insn(JSET_K, 0, 1, SETID_BITS),
                insn(RET_K, 0, 0, deny),
                insn(RET_K, 0, 0, then),
            ],
            Guard::CreateMode { flags, mode } => vec![
                insn(LD_W_ABS, 0, 0, low_word(flags)),
                insn(JSET_K, 0, 3, CREATING),
                insn(LD_W_ABS, 0, 0, low_word(mode)),
                insn(JSET_K, 0, 1, SETID_BITS),
                insn(RET_K, 0, 0, deny),
                insn(RET_K, 0, 0, then),
            ],
        }
    }

    /// The same check as seccompiler rules (JSON), for the architectures
    /// compiled without the search tree: rules are alternatives, each one's
    /// conditions all hold.
    pub fn rules(self, name: &str) -> Vec<serde_json::Value> {
        use serde_json::json;
        let clear =
            |index: u8, mask: u32| json!({"index": index, "type": "dword", "op": {"masked_eq": mask}, "val": 0});
        match self {
            Guard::Mode { arg } => vec![json!({"syscall": name, "args": [clear(arg, SETID_BITS)]})],
            Guard::CreateMode { flags, mode } => vec![
                json!({"syscall": name, "args": [clear(flags, CREATING)]}),
                json!({"syscall": name, "args": [clear(mode, SETID_BITS)]}),
            ],
        }
    }
}

/// A socket address family a profile may create sockets of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `AF_UNIX`: always, when sockets are allowed at all.
    Unix,
    /// `AF_INET`: with a network (loopback).
    Inet,
    /// `AF_INET6`: with a network (loopback).
    Inet6,
    /// `AF_NETLINK` with protocol `NETLINK_ROUTE` only: with a network, so
    /// that libc can list the interfaces (`if_nameindex`, `getaddrinfo`'s
    /// `AI_ADDRCONFIG`). Without capabilities it can read its own network
    /// namespace's routes and addresses, not change them.
    NetlinkRoute,
}

impl Family {
    /// Its `AF_*` number.
    pub fn number(self) -> u32 {
        match self {
            Family::Unix => libc::AF_UNIX,
            Family::Inet => libc::AF_INET,
            Family::Inet6 => libc::AF_INET6,
            Family::NetlinkRoute => libc::AF_NETLINK,
        }
        .cast_unsigned()
    }

    /// Its name, as `check` and the start record show it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Unix => "unix",
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
            Family::NetlinkRoute => "netlink-route",
        }
    }
}

/// The seccompiler rules for `socket` (one of `families`) and `socketpair`
/// (`AF_UNIX` only).
pub fn socket_rules(name: &str, families: &[Family]) -> Vec<serde_json::Value> {
    use serde_json::json;
    let allowed: Vec<Family> = match name {
        "socketpair" => vec![Family::Unix],
        _ => families.to_vec(),
    };
    let eq = |index: u8, val: u32| json!({"index": index, "type": "dword", "op": "eq", "val": val});
    allowed
        .iter()
        .map(|f| match f {
            // The protocol too: NETLINK_ROUTE is 0.
            Family::NetlinkRoute => json!({"syscall": name, "args": [eq(0, f.number()), eq(2, 0)]}),
            _ => json!({"syscall": name, "args": [eq(0, f.number())]}),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mode_with_a_setid_bit_is_refused_and_only_when_creating() {
        let chmod = guard_of("chmod").unwrap();
        assert!(chmod.refuses(&[0, 0o4755, 0, 0, 0, 0]));
        assert!(chmod.refuses(&[0, 0o2755, 0, 0, 0, 0]));
        assert!(!chmod.refuses(&[0, 0o1777, 0, 0, 0, 0]), "sticky is fine");
        assert!(
            !chmod.refuses(&[0, 0o755 | (0o4000 << 32), 0, 0, 0, 0]),
            "the kernel reads 32 bits"
        );
        let openat = guard_of("openat").unwrap();
        let creat = u64::try_from(libc::O_CREAT | libc::O_WRONLY).unwrap();
        let tmpfile = u64::try_from(libc::O_TMPFILE | libc::O_RDWR).unwrap();
        assert!(openat.refuses(&[0, 0, creat, 0o6755, 0, 0]));
        assert!(openat.refuses(&[0, 0, tmpfile, 0o4700, 0, 0]));
        assert!(!openat.refuses(&[0, 0, creat, 0o755, 0, 0]));
        assert!(
            !openat.refuses(&[0, 0, 0, 0o6755, 0, 0]),
            "no O_CREAT: the mode is unused"
        );
    }
}

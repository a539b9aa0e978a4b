//! Wall 9's byte bound on a host workspace: btrfs qgroups, the one quota
//! this host's kernel has (it has no `CONFIG_QFMT_V2`, so no ext4 project
//! quota; no XFS or tmpfs quota). A subvolume's level-0 qgroup limits the
//! bytes it references; the kernel refuses writes past it with `EDQUOT`.

use std::io;
use std::os::fd::RawFd;

const MAGIC: libc::c_ulong = 0x94;
const fn iowr(nr: libc::c_ulong, size: libc::c_ulong) -> libc::c_ulong {
    (3 << 30) | (size << 16) | (MAGIC << 8) | nr
}
const fn ior(nr: libc::c_ulong, size: libc::c_ulong) -> libc::c_ulong {
    (2 << 30) | (size << 16) | (MAGIC << 8) | nr
}
/// `BTRFS_IOC_TREE_SEARCH`.
const TREE_SEARCH: libc::c_ulong = iowr(17, 4096);
/// `BTRFS_IOC_INO_LOOKUP`.
const INO_LOOKUP: libc::c_ulong = iowr(18, 4096);
/// `BTRFS_IOC_QGROUP_LIMIT` (declared `_IOR` in the kernel's header).
const QGROUP_LIMIT: libc::c_ulong = ior(43, 48);
const SUPER_MAGIC: i64 = 0x9123_683e;
/// The inode number of a subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;
const QUOTA_TREE: u64 = 8;
const QGROUP_INFO_KEY: u32 = 242;
const QGROUP_LIMIT_KEY: u32 = 244;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`.
pub const LIMIT_MAX_RFER: u64 = 1;
/// A limit value that clears the limit.
pub const CLEAR: u64 = u64::MAX;

/// A qgroup's limit item: which limits are set, and their values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct QgroupLimit {
    /// `BTRFS_QGROUP_LIMIT_*` bits.
    pub flags: u64,
    /// Bytes referenced at most.
    pub max_rfer: u64,
    /// Bytes exclusive at most.
    pub max_excl: u64,
    /// Reserved referenced bytes.
    pub rsv_rfer: u64,
    /// Reserved exclusive bytes.
    pub rsv_excl: u64,
}

#[repr(C)]
struct LimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; 4096 - 104],
}

/// The subvolume whose root directory `fd` is, on btrfs; `None` when `fd`
/// is on another filesystem (its magic given) or not a subvolume's root.
pub fn subvolume_root(fd: RawFd) -> io::Result<Result<u64, String>> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a valid, writable statfs.
    if unsafe { libc::fstatfs(fd, &raw mut fs) } < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = fs.f_type as i64;
    if magic != SUPER_MAGIC {
        let name = match magic {
            0xef53 => "ext4 (or ext2, ext3)",
            0x5846_5342 => "xfs",
            0x0102_1994 => "tmpfs",
            0x794c_7630 => "overlayfs",
            0x6969 => "nfs",
            _ => "another filesystem",
        };
        return Ok(Err(format!("on {name} (magic {magic:#x}), not btrfs")));
    }
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat.
    if unsafe { libc::fstat(fd, &raw mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_ino != FIRST_FREE_OBJECTID {
        return Ok(Err("a btrfs directory that is not a subvolume's root".into()));
    }
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    // SAFETY: `args` is the ioctl's argument struct, of the size its number says.
    if unsafe { libc::ioctl(fd, INO_LOOKUP, &raw mut args) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Ok(args.treeid))
}

/// One item of the quota tree for qgroup `id` (level 0): its raw bytes.
fn quota_item(fd: RawFd, id: u64, key_type: u32) -> io::Result<Option<Vec<u8>>> {
    let mut args = SearchArgs {
        key: SearchKey {
            tree_id: QUOTA_TREE,
            min_objectid: 0,
            max_objectid: 0,
            min_offset: id,
            max_offset: id,
            min_transid: 0,
            max_transid: u64::MAX,
            min_type: key_type,
            max_type: key_type,
            nr_items: 1,
            unused: 0,
            unused1: 0,
            unused2: 0,
            unused3: 0,
            unused4: 0,
        },
        buf: [0; 4096 - 104],
    };
    // SAFETY: `args` is the ioctl's argument struct, of the size its number says.
    if unsafe { libc::ioctl(fd, TREE_SEARCH, &raw mut args) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if args.key.nr_items == 0 {
        return Ok(None);
    }
    // A search header (transid, objectid, offset: u64; type, len: u32),
    // then the item.
    let len = args
        .buf
        .get(28..32)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes) as usize;
    Ok(args.buf.get(32..32 + len).map(<[u8]>::to_vec))
}

fn le(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The bytes subvolume `id`'s qgroup references, as of the last commit;
/// `Err(ENOENT)` when quotas are not enabled on the filesystem.
pub fn referenced(fd: RawFd, id: u64) -> io::Result<u64> {
    match quota_item(fd, id, QGROUP_INFO_KEY)? {
        // generation, rfer, rfer_cmpr, excl, excl_cmpr.
        Some(item) => Ok(le(&item, 8)),
        None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
    }
}

/// Subvolume `id`'s qgroup limit (all zero when none was ever set).
pub fn limit(fd: RawFd, id: u64) -> io::Result<QgroupLimit> {
    Ok(match quota_item(fd, id, QGROUP_LIMIT_KEY)? {
        Some(item) => QgroupLimit {
            flags: le(&item, 0),
            max_rfer: le(&item, 8),
            max_excl: le(&item, 16),
            rsv_rfer: le(&item, 24),
            rsv_excl: le(&item, 32),
        },
        None => QgroupLimit::default(),
    })
}

/// Sets subvolume `id`'s qgroup limit (needs `CAP_SYS_ADMIN`). A value
/// of [`CLEAR`] under its flag clears that limit.
pub fn set_limit(fd: RawFd, id: u64, lim: QgroupLimit) -> io::Result<()> {
    let mut args = LimitArgs { qgroupid: id, lim };
    // SAFETY: `args` is the ioctl's argument struct, of the size its number says.
    if unsafe { libc::ioctl(fd, QGROUP_LIMIT, &raw mut args) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `syncfs`: commits the filesystem, so that qgroup numbers are current.
pub fn syncfs(fd: RawFd) -> io::Result<()> {
    // SAFETY: integers only.
    if unsafe { libc::syncfs(fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<SearchKey>(), 104);
        assert_eq!(std::mem::size_of::<SearchArgs>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<LimitArgs>(), 48);
        assert_eq!(TREE_SEARCH, 0xd000_9411);
        assert_eq!(INO_LOOKUP, 0xd000_9412);
        assert_eq!(QGROUP_LIMIT, 0x8030_942b);
    }
}

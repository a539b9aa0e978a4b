//! The host's dynamic loader cache, shown to a sandbox that can see every
//! library it names anyway.
//!
//! Wall 4.
//!
//! Without `/etc/ld.so.cache` the loader looks for each library in every
//! directory it knows, and in each one's `glibc-hwcaps` subdirectories: 25
//! opens for `/bin/true` where the cache makes it 6, every one a seccomp
//! notification and a recorded file event. The cache is a list of library
//! paths, so a sandbox gets it only when each path it lists is in a directory
//! the profile makes readable already (`fs.read` or `fs.libraries`): it then
//! tells the sandbox nothing it could not list for itself. A profile that
//! shows `/etc` (or the cache) itself needs none of this.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::fs::{is_within, EntryKind, FsEntry};

/// Where glibc's loader reads its cache.
pub const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// Largest cache read: a host with every Debian library has about 300 KiB.
const MAX_SIZE: u64 = 4 << 20;

/// `/etc/ld.so.cache`, if a sandbox whose readable directories are `shown`
/// (and nothing of `others` above the cache) may be given it.
pub fn for_sandbox(shown: &[&FsEntry], others: &[&FsEntry]) -> Option<PathBuf> {
    let cache = Path::new(LD_SO_CACHE);
    if shown
        .iter()
        .chain(others)
        .any(|e| is_within(cache, &e.path) || is_within(&e.path, cache))
    {
        return None;
    }
    let meta = std::fs::symlink_metadata(cache).ok()?;
    if !meta.is_file() || meta.len() > MAX_SIZE {
        return None;
    }
    let dirs = library_dirs(&std::fs::read(cache).ok()?)?;
    let visible = |dir: &Path| {
        let Ok(real) = std::fs::canonicalize(dir) else {
            return false;
        };
        shown
            .iter()
            .any(|e| e.kind == EntryKind::Dir && is_within(&real, &e.path))
    };
    dirs.iter().all(|d| visible(d)).then(|| cache.to_path_buf())
}

/// The directories of every library a cache lists; `None` if it is not a
/// cache in the format glibc 2.32 and later writes, or is malformed.
///
/// ```text
/// "glibc-ld.so.cache" "1.1"  nlibs:u32  len_strings:u32  flags:u8  pad[3]
/// extension_offset:u32  unused[3]:u32             (48 bytes)
/// nlibs × { flags:i32  key:u32  value:u32  osversion:u32  hwcap:u64 }
/// strings; key and value are offsets from the start of the file
/// ```
pub fn library_dirs(bytes: &[u8]) -> Option<BTreeSet<PathBuf>> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    const HEADER: usize = 48;
    const ENTRY: usize = 24;
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?) as usize)
    };
    let count = word(20)?;
    // Hundreds of libraries in a handful of directories: compared as bytes,
    // each directory allocated once.
    let mut dirs: Vec<&[u8]> = Vec::new();
    for i in 0..count {
        let value = word(HEADER.checked_add(i.checked_mul(ENTRY)?)?.checked_add(8)?)?;
        let rest = bytes.get(value..)?;
        let path = rest.get(..rest.iter().position(|&b| b == 0)?)?;
        let slash = path.iter().rposition(|&b| b == b'/')?;
        if path.first() != Some(&b'/') || slash + 1 == path.len() {
            return None;
        }
        let dir = path.get(..slash.max(1))?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.into_iter()
        .map(|d| std::str::from_utf8(d).ok().map(PathBuf::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache in glibc's format listing `paths` (each under a soname key).
    fn cache(paths: &[&str]) -> Vec<u8> {
        let mut strings = Vec::new();
        let base = 48 + 24 * paths.len();
        let mut entries = Vec::new();
        for p in paths {
            let key = base + strings.len();
            strings.extend_from_slice(Path::new(p).file_name().unwrap().as_encoded_bytes());
            strings.push(0);
            let value = base + strings.len();
            strings.extend_from_slice(p.as_bytes());
            strings.push(0);
            entries.extend_from_slice(&1i32.to_ne_bytes());
            entries.extend_from_slice(&(key as u32).to_ne_bytes());
            entries.extend_from_slice(&(value as u32).to_ne_bytes());
            entries.extend_from_slice(&[0u8; 12]);
        }
        let mut out = b"glibc-ld.so.cache1.1".to_vec();
        out.extend_from_slice(&(paths.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend(entries);
        out.extend(strings);
        out
    }

    #[test]
    fn the_directories_of_every_listed_library() {
        let dirs = library_dirs(&cache(&[
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/local/lib/libsecret.so.1",
            "/lib/x86_64-linux-gnu/libm.so.6",
        ]))
        .unwrap();
        let want: BTreeSet<PathBuf> = ["/lib/x86_64-linux-gnu", "/usr/local/lib"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, want);
    }

    #[test]
    fn anything_else_is_no_cache() {
        assert_eq!(library_dirs(b""), None);
        assert_eq!(library_dirs(b"ld.so-1.7.0\0\0\0\0"), None);
        let mut truncated = cache(&["/lib/libc.so.6"]);
        truncated.truncate(60);
        assert_eq!(library_dirs(&truncated), None);
        let mut unterminated = cache(&["/lib/libc.so.6"]);
        unterminated.pop();
        assert_eq!(library_dirs(&unterminated), None);
        let mut relative = cache(&["/lib/libc.so.6"]);
        let at = relative.len() - "/lib/libc.so.6".len() - 1;
        relative[at] = b'x';
        assert_eq!(library_dirs(&relative), None);
        // A count far beyond the file.
        let mut huge = cache(&["/lib/libc.so.6"]);
        huge[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(library_dirs(&huge), None);
    }

    fn dir(p: &str) -> FsEntry {
        FsEntry {
            path: PathBuf::from(p),
            kind: EntryKind::Dir,
        }
    }

    #[test]
    fn given_only_when_every_listed_directory_is_shown_and_etc_is_not() {
        let Ok(bytes) = std::fs::read(LD_SO_CACHE) else {
            return;
        };
        let dirs = library_dirs(&bytes).unwrap();
        let real: Vec<PathBuf> = dirs.iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect();
        if real.is_empty() {
            return;
        }
        // Every directory the cache names, shown: the cache is given.
        let all: Vec<FsEntry> = real.iter().map(|d| dir(d.to_str().unwrap())).collect();
        let all_refs: Vec<&FsEntry> = all.iter().collect();
        assert_eq!(for_sandbox(&all_refs, &[]), Some(PathBuf::from(LD_SO_CACHE)));
        // Not shown, or only some of them: not given.
        let unrelated = dir("/usr/share/doc");
        assert_eq!(for_sandbox(&[&unrelated], &[]), None);
        for d in &real {
            let one = dir(d.to_str().unwrap());
            let covers_all = real.iter().all(|r| is_within(r, d));
            assert_eq!(for_sandbox(&[&one], &[]).is_some(), covers_all, "{d:?} of {real:?}");
        }
        // A profile that binds /etc (or the cache) decides for itself.
        let etc = dir("/etc");
        assert_eq!(for_sandbox(&all_refs, &[&etc]), None);
        let mut with_etc = all_refs.clone();
        with_etc.push(&etc);
        assert_eq!(for_sandbox(&with_etc, &[]), None);
    }

    #[test]
    fn this_hosts_cache_if_it_has_one_parses() {
        if let Ok(bytes) = std::fs::read(LD_SO_CACHE) {
            if bytes.starts_with(b"glibc-ld.so.cache1.1") {
                assert!(library_dirs(&bytes).is_some_and(|d| !d.is_empty()));
            }
        }
    }
}

//! Paths in a profile: their syntax, and what they are on this host.
//!
//! A profile path is absolute and already normal: no `.` or `..` component, no
//! repeated or trailing `/`. Every directory above it is a real directory on the
//! host (no symlink): the sandbox sees the path where the profile says, and a
//! later swap of a parent for a symlink is refused by the mount step
//! (`RESOLVE_NO_SYMLINKS`) rather than followed.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// Paths ninewall itself provides inside every sandbox; a profile may not bind
/// anything at or below them.
pub const RESERVED: [&str; 3] = ["/proc", "/dev", "/tmp"];

/// What a bound path is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EntryKind {
    /// A directory: bound with everything below it.
    Dir,
    /// A single file.
    File,
    /// A symbolic link, recreated inside with the same target. It grants nothing
    /// by itself: its target must be bound too to be reachable.
    Symlink {
        /// The link's target, as stored in the link.
        target: PathBuf,
    },
}

/// One `fs.read` or `fs.write` entry, resolved on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsEntry {
    /// The path, the same on the host and inside the sandbox.
    pub path: PathBuf,
    /// What it is on the host.
    pub kind: EntryKind,
}

/// Checks the syntax of a profile path; the message says what is valid.
pub fn check_syntax(text: &str) -> Result<PathBuf, String> {
    let valid = "an absolute, normal path such as \"/usr/lib/python3.11\"";
    if text.contains('\0') {
        return Err(format!("contains a NUL byte; valid: {valid}"));
    }
    if text.len() > 4095 {
        return Err(format!("is longer than 4095 bytes; valid: {valid}"));
    }
    if !text.starts_with('/') {
        return Err(format!("{text:?} is not absolute; valid: {valid}"));
    }
    if text.len() > 1 && text.ends_with('/') {
        return Err(format!("{text:?} ends with '/'; valid: {valid}"));
    }
    if text.contains("//") {
        return Err(format!("{text:?} has an empty component; valid: {valid}"));
    }
    let path = PathBuf::from(text);
    for c in path.components() {
        match c {
            Component::RootDir | Component::Normal(_) => {}
            Component::ParentDir => return Err(format!("{text:?} contains '..'; valid: {valid}")),
            Component::CurDir | Component::Prefix(_) => return Err(format!("{text:?} contains '.'; valid: {valid}")),
        }
    }
    // `Path::components` folds "a/./b" silently; compare with the text to catch it.
    if text.split('/').any(|part| part == ".") {
        return Err(format!("{text:?} contains '.'; valid: {valid}"));
    }
    Ok(path)
}

/// True when `path` is `base` or below it.
pub fn is_within(path: &Path, base: &Path) -> bool {
    path.starts_with(base)
}

/// The reserved path `path` collides with, if any.
pub fn reserved_collision(path: &Path) -> Option<&'static str> {
    if path == Path::new("/") {
        return Some("/");
    }
    RESERVED.into_iter().find(|r| is_within(path, Path::new(r)))
}

/// Looks `path` up on the host: it must exist, and no directory above it may be
/// a symlink. `allow_symlink` says whether the path itself may be one.
pub fn resolve_on_host(path: &Path, allow_symlink: bool) -> Result<EntryKind, String> {
    if let Some(parent) = path.parent() {
        match std::fs::canonicalize(parent) {
            Ok(real) if real == parent => {}
            Ok(real) => {
                let name = path.file_name().map(PathBuf::from).unwrap_or_default();
                return Err(format!(
                    "a directory above it is a symlink on this host; name the real path {:?}",
                    real.join(name)
                ));
            }
            Err(e) => return Err(format!("does not exist on this host ({e})")),
        }
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("does not exist on this host ({e})"))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| format!("cannot read symlink: {e}"))?;
        if !allow_symlink {
            let real = std::fs::canonicalize(path).unwrap_or_else(|_| target.clone());
            return Err(format!("is a symlink (to {target:?}); name the real path {real:?}"));
        }
        return Ok(EntryKind::Symlink { target });
    }
    if ft.is_dir() {
        Ok(EntryKind::Dir)
    } else if ft.is_file() {
        Ok(EntryKind::File)
    } else {
        Err("is neither a directory nor a regular file (devices, sockets and fifos cannot be bound)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_accepts_normal_absolute_paths() {
        for ok in ["/", "/usr", "/usr/lib/python3.11", "/a b/c"] {
            assert_eq!(check_syntax(ok).unwrap(), PathBuf::from(ok));
        }
    }

    #[test]
    fn syntax_rejects_everything_else() {
        for bad in [
            "",
            "usr",
            "./usr",
            "/usr/",
            "/usr//lib",
            "/usr/../etc",
            "/usr/./lib",
            "/a\0b",
        ] {
            assert!(check_syntax(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reserved_paths_are_found() {
        assert_eq!(reserved_collision(Path::new("/proc")), Some("/proc"));
        assert_eq!(reserved_collision(Path::new("/dev/shm")), Some("/dev"));
        assert_eq!(reserved_collision(Path::new("/")), Some("/"));
        assert_eq!(reserved_collision(Path::new("/tmpfoo")), None);
        assert_eq!(reserved_collision(Path::new("/usr")), None);
    }
}

//! Paths in a profile: their syntax, and what they are on this host.
//!
//! Walls 4 and 7 (the paths they grant).
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

/// What is wrong with a profile path's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathSyntax {
    /// A NUL byte.
    #[error("contains a NUL byte; valid: {VALID_PATH}")]
    Nul,
    /// Longer than `PATH_MAX - 1`.
    #[error("is longer than 4095 bytes; valid: {VALID_PATH}")]
    TooLong,
    /// Relative.
    #[error("{0:?} is not absolute; valid: {VALID_PATH}")]
    Relative(String),
    /// A trailing slash.
    #[error("{0:?} ends with '/'; valid: {VALID_PATH}")]
    TrailingSlash(String),
    /// `//`.
    #[error("{0:?} has an empty component; valid: {VALID_PATH}")]
    EmptyComponent(String),
    /// A `..` component.
    #[error("{0:?} contains '..'; valid: {VALID_PATH}")]
    Parent(String),
    /// A `.` component.
    #[error("{0:?} contains '.'; valid: {VALID_PATH}")]
    Current(String),
}

/// What a valid profile path looks like, for [`PathSyntax`]'s messages.
const VALID_PATH: &str = "an absolute, normal path such as \"/usr/lib/python3.11\"";

/// Checks the syntax of a profile path; the error says what is valid.
pub fn check_syntax(text: &str) -> Result<PathBuf, PathSyntax> {
    if text.contains('\0') {
        return Err(PathSyntax::Nul);
    }
    if text.len() > 4095 {
        return Err(PathSyntax::TooLong);
    }
    let quoted = || text.to_string();
    if !text.starts_with('/') {
        return Err(PathSyntax::Relative(quoted()));
    }
    if text.len() > 1 && text.ends_with('/') {
        return Err(PathSyntax::TrailingSlash(quoted()));
    }
    if text.contains("//") {
        return Err(PathSyntax::EmptyComponent(quoted()));
    }
    let path = PathBuf::from(text);
    for c in path.components() {
        match c {
            Component::RootDir | Component::Normal(_) => {}
            Component::ParentDir => return Err(PathSyntax::Parent(quoted())),
            Component::CurDir | Component::Prefix(_) => return Err(PathSyntax::Current(quoted())),
        }
    }
    // `Path::components` folds "a/./b" silently; compare with the text to catch it.
    if text.split('/').any(|part| part == ".") {
        return Err(PathSyntax::Current(quoted()));
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

/// Why a profile path cannot be used on this host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostPath {
    /// A directory above it resolves elsewhere.
    #[error("a directory above it is a symlink on this host; name the real path {0:?}")]
    SymlinkAbove(PathBuf),
    /// Nothing there.
    #[error("does not exist on this host ({0})")]
    Missing(#[source] std::io::Error),
    /// A symlink that cannot be read.
    #[error("cannot read symlink: {0}")]
    Unreadable(#[source] std::io::Error),
    /// A symlink where none may be.
    #[error("is a symlink (to {target:?}); name the real path {real:?}")]
    Symlink {
        /// Its content.
        target: PathBuf,
        /// Where it leads.
        real: PathBuf,
    },
    /// A device, socket or FIFO.
    #[error("is neither a directory nor a regular file (devices, sockets and fifos cannot be bound)")]
    NotBindable,
}

/// Looks `path` up on the host: it must exist, and no directory above it may be
/// a symlink. `allow_symlink` says whether the path itself may be one.
pub fn resolve_on_host(path: &Path, allow_symlink: bool) -> Result<EntryKind, HostPath> {
    if let Some(parent) = path.parent() {
        match std::fs::canonicalize(parent) {
            Ok(real) if real == parent => {}
            Ok(real) => {
                let name = path.file_name().map(PathBuf::from).unwrap_or_default();
                return Err(HostPath::SymlinkAbove(real.join(name)));
            }
            Err(e) => return Err(HostPath::Missing(e)),
        }
    }
    let meta = std::fs::symlink_metadata(path).map_err(HostPath::Missing)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(HostPath::Unreadable)?;
        if !allow_symlink {
            let real = std::fs::canonicalize(path).unwrap_or_else(|_| target.clone());
            return Err(HostPath::Symlink { target, real });
        }
        return Ok(EntryKind::Symlink { target });
    }
    if ft.is_dir() {
        Ok(EntryKind::Dir)
    } else if ft.is_file() {
        Ok(EntryKind::File)
    } else {
        Err(HostPath::NotBindable)
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

//! Turns the plan's [`Mount`] list into the exact filesystem operations init
//! runs, in order, with the strings prepared before fork.
//!
//! Wall 4.
//!
//! Layout while building (bubblewrap's scheme): a small staging tmpfs is
//! mounted on the host's `/tmp` path and made the root with `pivot_root`, so the
//! host's root is reachable at `/old` (host `/tmp` included, since the staging
//! mount moved away from it) and the sandbox's root is built at `/new`. The last
//! operations pivot into `/new` and detach everything else: nothing of the host
//! stays reachable except what was bound.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::plan::{Mount, DEVICES, ROOT_TMPFS_SIZE};
use crate::sys::{self, ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY};

/// One filesystem operation of init.
#[derive(Debug)]
pub enum FsOp {
    /// `mount --make-rprivate /`: nothing propagates to or from the host.
    MakePrivate,
    /// A tmpfs at `target`.
    Tmpfs {
        /// Where.
        target: CString,
        /// `MS_*` flags.
        flags: libc::c_ulong,
        /// Options: mode and size.
        data: CString,
    },
    /// `mkdir`, existing is fine.
    Mkdir(CString),
    /// An empty file as a bind target, existing is fine.
    CreateFile(CString),
    /// A symlink.
    Symlink {
        /// Link content.
        target: CString,
        /// Link path.
        link: CString,
    },
    /// Clone the tree at `source` (no symlinks followed), set `attrs` on every
    /// mount of it, attach it at `target`.
    Bind {
        /// Host path under `/old`.
        source: CString,
        /// Path under `/new`.
        target: CString,
        /// `MOUNT_ATTR_*` to set.
        attrs: u64,
    },
    /// Attach the detached tree the supervisor prepared (the idmapped
    /// workspace), inherited as descriptor `ChildFds::workspace`, at `target`.
    AttachWorkspace {
        /// Path under `/new`.
        target: CString,
    },
    /// A new read-only file with these contents.
    WriteFile {
        /// Path under `/new`.
        path: CString,
        /// Contents.
        data: Vec<u8>,
    },
    /// A procfs of the sandbox's pid namespace.
    Proc(CString),
    /// Make the one mount at the path read-only.
    ReadOnly(CString),
    /// `chdir`.
    Chdir(CString),
    /// `pivot_root(new, put_old)`.
    PivotRoot {
        /// New root.
        new_root: CString,
        /// Where the old root goes.
        put_old: CString,
    },
    /// `umount2(path, MNT_DETACH)`.
    Detach(CString),
}

impl FsOp {
    /// Carries the operation out (child-safe); `workspace` is the prepared
    /// tree's descriptor, or -1.
    pub fn run(&self, workspace: std::os::fd::RawFd) -> sys::SysResult<()> {
        match self {
            FsOp::MakePrivate => sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
            FsOp::Tmpfs { target, flags, data } => {
                sys::mount(Some(c"tmpfs"), target, Some(c"tmpfs"), *flags, Some(data))
            }
            FsOp::Mkdir(p) => sys::mkdir(p, 0o755),
            FsOp::CreateFile(p) => sys::create_file(p),
            FsOp::WriteFile { path, data } => sys::write_new_file(path, data),
            FsOp::Symlink { target, link } => sys::symlink(target, link),
            FsOp::Bind { source, target, attrs } => {
                let tree = sys::clone_tree(source)?;
                let r = sys::set_tree_attrs(tree, *attrs).and_then(|()| sys::attach_tree(tree, target));
                sys::close(tree);
                r
            }
            FsOp::AttachWorkspace { target } if workspace >= 0 => sys::attach_tree(workspace, target),
            FsOp::AttachWorkspace { .. } => Err(libc::EBADF),
            FsOp::Proc(target) => sys::mount(
                Some(c"proc"),
                target,
                Some(c"proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"hidepid=invisible"),
            ),
            FsOp::ReadOnly(p) => sys::set_mount_attrs(p, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV),
            FsOp::Chdir(p) => sys::chdir(p),
            FsOp::PivotRoot { new_root, put_old } => sys::pivot_root(new_root, put_old),
            FsOp::Detach(p) => sys::detach(p),
        }
    }
}

/// The operations, and for each a line saying what it is (for error messages).
#[derive(Debug, Default)]
pub struct FsProgram {
    /// Operations in order.
    pub ops: Vec<FsOp>,
    /// `describe[i]` says what `ops[i]` does, in sandbox terms.
    pub describe: Vec<String>,
}

/// A path string that cannot contain NUL: every path here comes from a
/// validated policy or from this module.
fn c(path: impl AsRef<Path>) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_ref().as_os_str().as_bytes()).unwrap_or_default()
}

fn under(prefix: &str, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    Path::new(prefix).join(rel)
}

impl FsProgram {
    fn push(&mut self, op: FsOp, what: String) {
        self.ops.push(op);
        self.describe.push(what);
    }

    /// Every directory above `path` (inside `/new`), outermost first.
    fn parents(&mut self, path: &Path) {
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).filter(|a| *a != Path::new("/")).collect();
        ancestors.reverse();
        for a in ancestors {
            self.push(FsOp::Mkdir(c(under("/new", a))), format!("mkdir {}", a.display()));
        }
    }

    fn tmpfs(&mut self, target: &Path, flags: libc::c_ulong, mode: u32, size: u64, what: String) {
        self.push(
            FsOp::Tmpfs {
                target: c(target),
                flags,
                data: CString::new(format!("mode={mode:o},size={size}")).unwrap_or_default(),
            },
            what,
        );
    }

    fn bind(&mut self, source: &Path, target: &Path, dir: bool, attrs: u64, what: String) {
        self.parents(target);
        let t = under("/new", target);
        if dir {
            self.push(FsOp::Mkdir(c(&t)), format!("mkdir {}", target.display()));
        } else {
            self.push(
                FsOp::CreateFile(c(&t)),
                format!("create mount point {}", target.display()),
            );
        }
        self.push(
            FsOp::Bind {
                source: c(under("/old", source)),
                target: c(t),
                attrs,
            },
            what,
        );
    }
}

/// Compiles the mount list.
pub fn compile(mounts: &[Mount]) -> FsProgram {
    let mut p = FsProgram::default();
    let staging = "/tmp";
    p.push(FsOp::MakePrivate, "make every mount private".into());
    p.tmpfs(
        Path::new(staging),
        libc::MS_NOSUID | libc::MS_NODEV,
        0o755,
        64 << 10,
        "mount the staging tmpfs".into(),
    );
    p.push(FsOp::Mkdir(c("/tmp/new")), "mkdir staging/new".into());
    p.push(FsOp::Mkdir(c("/tmp/old")), "mkdir staging/old".into());
    p.push(
        FsOp::PivotRoot {
            new_root: c(staging),
            put_old: c("/tmp/old"),
        },
        "pivot_root into the staging tmpfs".into(),
    );
    p.push(FsOp::Chdir(c("/")), "chdir /".into());
    p.tmpfs(
        Path::new("/new"),
        libc::MS_NOSUID | libc::MS_NODEV,
        0o755,
        ROOT_TMPFS_SIZE,
        "mount the new root tmpfs".into(),
    );

    for m in mounts {
        match m {
            Mount::Bind {
                source,
                target,
                dir,
                writable,
                exec,
            } => {
                let mut attrs = ATTR_NOSUID | ATTR_NODEV;
                if !writable {
                    attrs |= ATTR_RDONLY;
                }
                if !exec {
                    attrs |= ATTR_NOEXEC;
                }
                let what = format!(
                    "bind {} at {} ({}{})",
                    source.display(),
                    target.display(),
                    if *writable { "read-write" } else { "read-only" },
                    if *exec { "" } else { ", noexec" }
                );
                p.bind(source, target, *dir, attrs, what);
            }
            Mount::Symlink { link, target } => {
                p.parents(link);
                p.push(
                    FsOp::Symlink {
                        target: c(target),
                        link: c(under("/new", link)),
                    },
                    format!("symlink {} -> {}", link.display(), target.display()),
                );
            }
            Mount::File { target, contents } => {
                p.parents(target);
                p.push(
                    FsOp::WriteFile {
                        path: c(under("/new", target)),
                        data: contents.as_bytes().to_vec(),
                    },
                    format!("write {} ({} bytes)", target.display(), contents.len()),
                );
            }
            Mount::Dir { target } => {
                p.parents(target);
                p.push(
                    FsOp::Mkdir(c(under("/new", target))),
                    format!("mkdir {}", target.display()),
                );
            }
            Mount::Proc { target } => {
                p.parents(target);
                let t = under("/new", target);
                p.push(FsOp::Mkdir(c(&t)), format!("mkdir {}", target.display()));
                p.push(FsOp::Proc(c(t)), format!("mount a new procfs at {}", target.display()));
            }
            Mount::Dev { target } => {
                p.parents(target);
                let t = under("/new", target);
                p.push(FsOp::Mkdir(c(&t)), format!("mkdir {}", target.display()));
                p.tmpfs(
                    &t,
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    0o755,
                    64 << 10,
                    format!("mount a tmpfs at {}", target.display()),
                );
                for dev in DEVICES {
                    let inside = target.join(dev);
                    p.bind(
                        &Path::new("/dev").join(dev),
                        &inside,
                        false,
                        ATTR_NOSUID | ATTR_NOEXEC,
                        format!("bind the device {}", inside.display()),
                    );
                }
                for (name, to) in [
                    ("fd", "/proc/self/fd"),
                    ("stdin", "/proc/self/fd/0"),
                    ("stdout", "/proc/self/fd/1"),
                    ("stderr", "/proc/self/fd/2"),
                ] {
                    let link = target.join(name);
                    p.push(
                        FsOp::Symlink {
                            target: c(to),
                            link: c(under("/new", &link)),
                        },
                        format!("symlink {} -> {to}", link.display()),
                    );
                }
                p.push(FsOp::ReadOnly(c(&t)), format!("make {} read-only", target.display()));
            }
            Mount::Workspace { source, target, owner } => {
                p.parents(target);
                let t = under("/new", target);
                p.push(FsOp::Mkdir(c(&t)), format!("mkdir {}", target.display()));
                p.push(
                    FsOp::AttachWorkspace { target: c(t) },
                    format!(
                        "attach {} at {} (read-write, noexec, idmapped: {}:{} on the host)",
                        source.display(),
                        target.display(),
                        owner.0,
                        owner.1
                    ),
                );
            }
            Mount::Tmpfs { target, size, mode } => {
                p.parents(target);
                let t = under("/new", target);
                p.push(FsOp::Mkdir(c(&t)), format!("mkdir {}", target.display()));
                p.tmpfs(
                    &t,
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    *mode,
                    *size,
                    format!(
                        "mount a tmpfs of {} at {} (noexec)",
                        crate::policy::units::format_size(*size),
                        target.display()
                    ),
                );
            }
        }
    }

    p.push(FsOp::ReadOnly(c("/new")), "make the new root read-only".into());
    p.push(FsOp::Chdir(c("/new")), "chdir to the new root".into());
    p.push(
        FsOp::PivotRoot {
            new_root: c("."),
            put_old: c("."),
        },
        "pivot_root into the new root".into(),
    );
    p.push(FsOp::Detach(c(".")), "detach the old root".into());
    p.push(FsOp::Chdir(c("/")), "chdir /".into());
    p
}

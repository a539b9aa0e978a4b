//! Wall 2: the interpreter guard for model-written Python.
//!
//! A `[python]` section makes ninewall start the profile's interpreter on a
//! small guard script (`guard.py`, compiled into this binary and written
//! read-only into the sandbox at [`GUARD_PATH`]) that runs the user's code with
//! an import whitelist and an audit hook. Third-party packages exist for the
//! sandbox only if the profile lists them: each is bound, alone, into
//! [`SITE_DIR`], so a package that is not listed is not even in the view, and
//! Landlock grants read only beneath `/.ninewall`.
//!
//! The guard is a convenience that fails early with a clear message; the
//! kernel walls below it hold whatever user code does to the guard.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where the guard is written inside the sandbox.
pub const GUARD_PATH: &str = "/.ninewall/guard.py";
/// Where the listed packages are bound inside the sandbox.
pub const SITE_DIR: &str = "/.ninewall/site";
/// The guard compiled for the profile's interpreter, when there is one.
pub const GUARD_CODE_PATH: &str = "/.ninewall/guard.pyc";
/// The profile's settings for the guard, a Python literal.
pub const GUARD_CONFIG_PATH: &str = "/.ninewall/config";
/// Everything of the guard's inside the sandbox.
pub const GUARD_DIR: &str = "/.ninewall";
/// The environment variable that tells the guard which descriptor its
/// refusals go to (the guard removes it before user code runs).
pub const GUARD_FD_ENV: &str = "NINEWALL_GUARD_FD";

/// The guard's code: the same for every profile (its settings are in
/// [`GUARD_CONFIG_PATH`]), so that it can be compiled once per interpreter.
pub const GUARD_SOURCE: &str = include_str!("guard.py");

/// Site-packages directories searched when a profile names none.
pub const DEFAULT_SITE_PACKAGES: [&str; 2] = [
    "/usr/lib/python3/dist-packages",
    "/usr/local/lib/python3.11/dist-packages",
];

/// Modules refused at import even when an allowed module asks for them, unless
/// the profile allows them itself: they reach processes, sockets, memory and
/// second interpreters.
pub const DENIED_MODULES: [&str; 16] = [
    "ctypes",
    "_ctypes",
    "subprocess",
    "_posixsubprocess",
    "socket",
    "_socket",
    "pty",
    "multiprocessing",
    "_multiprocessing",
    "mmap",
    "_xxsubinterpreters",
    "_xxinterpchannels",
    "_interpreters",
    "_interpchannels",
    "pdb",
    "code",
];

/// Modules a profile may not list in `python.modules`: each hands user code
/// the interpreter's internals (frames, code objects, the real builtins, a
/// second interpreter, or attribute walks the guard does not see), which
/// would make the guard's language restriction a suggestion. The kernel
/// walls would still hold; the profile would promise more than it keeps.
pub const INTERNAL_MODULES: [(&str, &str); 28] = [
    ("sys", "the interpreter's own state (sys.modules, frames)"),
    ("builtins", "the unrestricted builtins (eval, exec, __import__)"),
    ("gc", "every live object (gc.get_objects, get_referrers)"),
    ("inspect", "frames and code objects"),
    ("types", "code and function constructors"),
    ("traceback", "frames (traceback.walk_stack)"),
    ("importlib", "imports past the whitelist"),
    ("pkgutil", "imports past the whitelist (pkgutil.resolve_name)"),
    ("runpy", "code run past the guard"),
    ("zipimport", "imports past the whitelist"),
    ("marshal", "code objects from bytes"),
    ("pickle", "calls of any importable function while loading"),
    ("_pickle", "calls of any importable function while loading"),
    ("copyreg", "pickle's constructor registry"),
    ("shelve", "pickle underneath"),
    ("dis", "code objects"),
    ("code", "a second interpreter loop (code.interact)"),
    ("codeop", "compiles code past the guard"),
    ("pdb", "a debugger: frames and code run past the guard"),
    ("bdb", "a debugger: frames"),
    ("timeit", "compiles code from strings past the guard"),
    ("doctest", "runs code from strings past the guard"),
    ("cProfile", "compiles code from strings past the guard"),
    ("profile", "compiles code from strings past the guard"),
    ("trace", "frames and code run past the guard"),
    ("logging", "format strings that walk attributes past the guard"),
    ("ctypes", "raw memory"),
    ("_xxsubinterpreters", "a second interpreter without the guard"),
];

/// Why `module` may not be in `python.modules`, if it may not.
pub fn internal_module(module: &str) -> Option<&'static str> {
    let top = module.split('.').next().unwrap_or(module);
    if top.starts_with('_') && !INTERNAL_MODULES.iter().any(|(m, _)| *m == top) {
        return Some("a private module of the interpreter or of a package (its name begins with '_')");
    }
    INTERNAL_MODULES.iter().find(|(m, _)| *m == top).map(|(_, why)| *why)
}

/// A third-party package the sandbox may import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// Import name.
    pub name: String,
    /// Its directory (or single module file) on the host.
    pub source: PathBuf,
    /// A directory (true) or a `.py` file.
    pub dir: bool,
}

/// The `[python]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonPolicy {
    /// Modules user code may import.
    pub modules: Vec<String>,
    /// Packages that exist in the sandbox.
    pub packages: Vec<Package>,
    /// The interpreter's standard library directory (first on `sys.path`).
    pub stdlib: PathBuf,
}

/// True for a dotted Python identifier.
pub fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Finds a package in the site-packages directories: `NAME/` or `NAME.py`.
pub fn find_package(name: &str, site: &[PathBuf]) -> Option<Package> {
    site.iter().find_map(|sp| {
        let dir = sp.join(name);
        let file = sp.join(format!("{name}.py"));
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            Some(Package {
                name: name.to_string(),
                source: dir,
                dir: true,
            })
        } else if std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
            Some(Package {
                name: name.to_string(),
                source: file,
                dir: false,
            })
        } else {
            None
        }
    })
}

/// The standard library of an interpreter named like `/usr/bin/python3.11`:
/// `/usr/lib/python3.11`.
pub fn stdlib_of(interpreter: &Path) -> Option<PathBuf> {
    let name = interpreter.file_name()?.to_str()?;
    if !name.starts_with("python3.") {
        return None;
    }
    let prefix = interpreter.parent()?.parent()?;
    Some(prefix.join("lib").join(name))
}

#[derive(Serialize)]
struct GuardConfig<'a> {
    profile: &'a str,
    modules: &'a [String],
    trusted: Vec<String>,
    writable: Vec<String>,
    path: Vec<String>,
    workspace: String,
    denied_modules: Vec<&'static str>,
}

/// The guard's settings for a profile, as a Python literal (JSON of strings
/// and lists is one as it is).
pub fn guard_config(profile: &str, py: &PythonPolicy, writable: &[PathBuf], workspace: &Path) -> String {
    let stdlib = py.stdlib.display().to_string();
    let config = GuardConfig {
        profile,
        modules: &py.modules,
        trusted: vec![stdlib.clone(), GUARD_DIR.to_string()],
        writable: writable.iter().map(|p| p.display().to_string()).collect(),
        path: vec![stdlib.clone(), format!("{stdlib}/lib-dynload"), SITE_DIR.to_string()],
        workspace: workspace.display().to_string(),
        denied_modules: DENIED_MODULES.to_vec(),
    };
    serde_json::to_string(&config).unwrap_or_else(|_| "None".into())
}

/// The guard compiled by `interpreter`, from the cache, made there first if
/// it is not: Python compiles the guard's ~900 lines in ~7 ms at every start,
/// and loads the compiled code in ~0.2 ms. `None` (the sandbox then runs the
/// source, which is as safe, only slower) when there is no cache directory
/// of our own or the interpreter cannot compile it.
///
/// The compiled file is made by the interpreter itself, on the host, from
/// this binary's own source and nothing else (`-I -S -B`, an empty
/// environment, the source on stdin), and kept in a directory only this
/// user can write; its name is a hash of the source and of the interpreter
/// file's identity, so an upgraded interpreter or guard makes a new one. The
/// sandbox gets it read-only, like the source.
pub fn compiled_guard(interpreter: &Path) -> Option<PathBuf> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let dir = cache_dir()?;
    let meta = std::fs::metadata(interpreter).ok()?;
    let mut h = sha2::Sha256::new();
    h.update(GUARD_SOURCE.as_bytes());
    h.update(interpreter.as_os_str().as_encoded_bytes());
    for n in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime().unsigned_abs(),
        meta.ctime().unsigned_abs(),
    ] {
        h.update(n.to_le_bytes());
    }
    let key: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("guard-{key}.pyc"));
    if ours_and_private(&path, false) {
        return Some(path);
    }
    let code = compile_guard(interpreter)?;
    let tmp = dir.join(format!(".guard-{key}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &code))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return None;
    }
    Some(path)
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

/// Runs `interpreter` on the host to compile the guard: the compiled file's
/// bytes (a .pyc: the interpreter's magic number, a zero header, the code).
fn compile_guard(interpreter: &Path) -> Option<Vec<u8>> {
    const COMPILE: &str = "import sys, marshal, importlib.util as u\n\
        code = compile(sys.stdin.buffer.read(), '/.ninewall/guard.py', 'exec', dont_inherit=True)\n\
        sys.stdout.buffer.write(u.MAGIC_NUMBER + bytes(12) + marshal.dumps(code))\n";
    let mut child = std::process::Command::new(interpreter)
        .args(["-I", "-S", "-B", "-c", COMPILE])
        .env_clear()
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let fed = std::io::Write::write_all(&mut stdin, GUARD_SOURCE.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().ok()?;
    (fed.is_ok() && out.status.success() && out.stdout.len() > 16).then_some(out.stdout)
}

/// Where compiled guards are kept: `/var/cache/ninewall` as root,
/// `$XDG_CACHE_HOME/ninewall` (or `~/.cache/ninewall`) otherwise; made if
/// missing, used only if it is ours and nobody else can write it.
fn cache_dir() -> Option<PathBuf> {
    let euid = crate::sys::effective_ids().0;
    let dir = if euid == 0 {
        PathBuf::from("/var/cache/ninewall")
    } else {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        base.join("ninewall")
    };
    if !dir.exists() {
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&dir);
    }
    ours_and_private(&dir, true).then_some(dir)
}

/// Whether `path` (not followed if a symlink) is a directory or file (as
/// `dir` says) of this user's that no one else may write.
fn ours_and_private(path: &Path, dir: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        (if dir { m.is_dir() } else { m.is_file() })
            && m.uid() == crate::sys::effective_ids().0
            && m.mode() & 0o022 == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_dotted_identifiers() {
        for ok in ["json", "os.path", "_csv", "xml.dom.minidom"] {
            assert!(is_module_name(ok), "{ok}");
        }
        for bad in ["", "1x", "a..b", "a-b", "../x", "a.", "os path"] {
            assert!(!is_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_stdlib_follows_the_interpreter_name() {
        assert_eq!(
            stdlib_of(Path::new("/usr/bin/python3.11")),
            Some(PathBuf::from("/usr/lib/python3.11"))
        );
        assert_eq!(
            stdlib_of(Path::new("/opt/py/bin/python3.12")),
            Some(PathBuf::from("/opt/py/lib/python3.12"))
        );
        assert_eq!(stdlib_of(Path::new("/usr/bin/perl")), None);
    }

    #[test]
    fn the_config_is_a_python_literal_and_the_guard_reads_it() {
        let py = PythonPolicy {
            modules: vec!["json".into(), "re".into()],
            packages: vec![],
            stdlib: "/usr/lib/python3.11".into(),
        };
        let config = guard_config("t\"x", &py, &[PathBuf::from("/work")], Path::new("/work"));
        assert!(config.contains(r#""profile":"t\"x""#), "{config}");
        assert!(
            config.contains(r#""path":["/usr/lib/python3.11","/usr/lib/python3.11/lib-dynload","/.ninewall/site"]"#)
        );
        assert!(GUARD_SOURCE.contains(&format!("CONFIG_PATH = {GUARD_CONFIG_PATH:?}")));
    }

    #[test]
    fn private_and_interpreter_modules_may_not_be_whitelisted() {
        for m in [
            "sys",
            "gc",
            "inspect",
            "pickle",
            "_io",
            "importlib.util",
            "logging.config",
        ] {
            assert!(internal_module(m).is_some(), "{m}");
        }
        for m in ["json", "re", "collections.abc", "os", "xml.dom"] {
            assert!(internal_module(m).is_none(), "{m}");
        }
    }
}

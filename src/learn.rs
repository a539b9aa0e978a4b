//! `ninewall learn`: a profile from what a command did.
//!
//! The command runs under an observation profile (every wall built, wide
//! read-only views of the host's system directories, the usual syscall
//! groups, every file access recorded); from its records this writes the
//! narrowest profile that lets exactly that happen: the files it read (a
//! directory where many of its files were read, or where the user asks),
//! the directories it wrote in outside its own workspace and /tmp, its
//! executables with their loaders and the directories of the libraries it
//! mapped, syscall groups, and limits from the peaks it reached with
//! headroom; each line with a comment saying where it came from. The result
//! is checked and the command is run again under it; a syscall refused
//! there adds the group that has it, and the run is tried again (three
//! times at most). Or it reads an execution already in a log.
//!
//! No wall of its own: it drives `ninewall run` (this binary) like a user.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What the learned profile allows, and why each entry is there.
#[derive(Debug, Default, Clone)]
pub struct Learned {
    /// The MBU name.
    pub name: String,
    /// Executables, with why.
    pub executables: BTreeMap<String, String>,
    /// Read-only data, with why.
    pub read: BTreeMap<String, String>,
    /// Directories of code that is mapped executable, with why.
    pub libraries: BTreeMap<String, String>,
    /// Writable directories outside the workspace and /tmp, with why.
    pub write: BTreeMap<String, String>,
    /// Syscall groups and names.
    pub syscalls: BTreeSet<String>,
    /// `net.mode`.
    pub net: &'static str,
    /// `limits` keys, with why.
    pub limits: Vec<(&'static str, String, String)>,
}

/// The program search path of the observation and of the learned profile:
/// programs find what they run by it (a shell, `collect2` its `ld`).
const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How many times a command is observed at most, each time with the
/// programs it started the time before.
const OBSERVATIONS: usize = 8;

/// Directories where a run's own files are: never profile entries.
const OWN: [&str; 4] = ["/proc", "/dev", "/tmp", "/work"];

/// The observation profile for `program` (resolved on the host), the
/// other executables it needs (a script's interpreter) and the host paths
/// its arguments name (a data directory given to it): those are in its view
/// too, read-only.
pub fn observation_profile(executables: &[PathBuf], arg_paths: &[PathBuf]) -> String {
    let exists = |p: &str| Path::new(p).exists();
    let mut read: Vec<&str> = [
        "/usr", "/etc", "/opt", "/srv", "/var/lib", "/lib", "/lib64", "/bin", "/sbin",
    ]
    .into_iter()
    .filter(|p| exists(p))
    .collect();
    let named: Vec<String> = arg_paths
        .iter()
        .filter(|p| !read.iter().any(|r| p.starts_with(r)))
        .map(|p| p.display().to_string())
        .collect();
    read.extend(named.iter().map(String::as_str));
    let libraries: Vec<&str> = ["/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/libexec"]
        .into_iter()
        .filter(|p| exists(p))
        .collect();
    let list = |v: &[&str]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let exes: Vec<String> = executables
        .iter()
        .map(|e| format!("{:?}", e.display().to_string()))
        .collect();
    format!(
        "# ninewall learn: the observation run (wide views, every access recorded)\n\
         [mbu]\nname = \"learn\"\n\
         [exec]\nexecutables = [{}]\nenv = {{ PATH = {SEARCH_PATH:?}, LANG = \"C.UTF-8\" }}\n\
         [fs]\nread = [{}]\nlibraries = [{}]\n\
         [net]\nmode = \"loopback\"\n\
         [syscalls]\nallow = [\"@default\", \"@network-io\", \"@ipc\", \"@chown\", \"@system-info\"]\non_denied = \"errno\"\n\
         [provenance]\nfiles = \"all\"\nmax_records = 10000000\n\
         [limits]\nmemory = \"4G\"\npids = 512\ncpu_seconds = 600\nwall_seconds = 600\noutput = \"64M\"\n",
        exes.join(", "),
        list(&read),
        list(&libraries)
    )
}

/// A shared object by its name: `NAME.so` or `NAME.so.1.2` (not
/// `ld.so.cache`).
fn is_library(path: &str) -> bool {
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.ends_with(".so")
        || name
            .split_once(".so.")
            .is_some_and(|(_, v)| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

fn own(path: &str) -> bool {
    OWN.iter().any(|d| path == *d || path.starts_with(&format!("{d}/")))
}

fn parent(path: &str) -> String {
    Path::new(path)
        .parent()
        .map_or("/".to_string(), |p| p.display().to_string())
}

/// The symlinks a path goes through on the host (symlinked directories
/// above it, and the file itself if it is one, repeatedly), and the real
/// file at the end.
fn links_on_the_way(path: &Path) -> (Vec<PathBuf>, Option<PathBuf>) {
    let mut links = Vec::new();
    let mut p = path.to_path_buf();
    for _ in 0..8 {
        for dir in p.ancestors().skip(1) {
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink())
                && !links.iter().any(|l| l == dir)
            {
                links.push(dir.to_path_buf());
            }
        }
        let (Some(dir), Some(file)) = (p.parent(), p.file_name()) else {
            return (links, None);
        };
        let Ok(real_dir) = std::fs::canonicalize(dir) else {
            return (links, None);
        };
        let here = real_dir.join(file);
        match std::fs::read_link(&here) {
            Ok(target) => {
                links.push(here);
                p = real_dir.join(target);
            }
            Err(_) => return (links, here.exists().then_some(here)),
        }
    }
    (links, None)
}

/// An executable's ELF interpreter: the kernel opens it by the path written
/// in the program and follows each symlink on the way (/lib64 -> usr/lib64,
/// then ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...): every symlinked
/// directory must be in the view, and every directory a link or the file is
/// in, mappable.
fn loader_chain(l: &mut Learned, exe: &Path) {
    let Ok(crate::policy::elf::Loader::Elf(interp)) = crate::policy::elf::loader_of(exe) else {
        return;
    };
    let why = format!("on the way to the ELF interpreter {}", interp.display());
    let (links, real) = links_on_the_way(&interp);
    for link in links {
        let is_dir = std::fs::metadata(&link).is_ok_and(|m| m.is_dir());
        if is_dir {
            l.read.insert(link.display().to_string(), why.clone());
        } else {
            l.libraries.insert(parent(&link.display().to_string()), why.clone());
        }
    }
    if let Some(real) = real {
        l.libraries.insert(parent(&real.display().to_string()), why);
    }
}

/// The profile from an execution's records. `collapse`: directories whose
/// files are read as the whole directory; `fan`: how many files read in one
/// directory make the directory the entry.
pub fn learn(records: &[Value], name: &str, collapse: &[PathBuf], fan: usize) -> Learned {
    let mut l = Learned {
        name: name.to_string(),
        net: "none",
        ..Learned::default()
    };
    l.syscalls.insert("@default".into());
    let start = records
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some("exec.start"));
    if let Some(program) = start.and_then(|s| s.get("program")).and_then(Value::as_str) {
        l.executables.insert(program.to_string(), "the program run".into());
        let program = Path::new(program);
        loader_chain(&mut l, program);
        if let Ok(crate::policy::elf::Loader::Script(interp)) = crate::policy::elf::loader_of(program) {
            // The kernel runs the script's interpreter by the path on its #!
            // line: each symlink on the way, then the file, an executable.
            let why = format!("the interpreter of the script, {}", interp.display());
            let (links, real) = links_on_the_way(&interp);
            for link in links {
                l.read.insert(link.display().to_string(), why.clone());
            }
            if let Some(real) = real {
                l.executables.insert(real.display().to_string(), why);
                loader_chain(&mut l, &real);
            }
        }
    }
    let mut reads: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if text("kind") != "file" {
            continue;
        }
        let path = text("path");
        if text("verdict") != "allowed" {
            // The observation lets no write outside the workspace and /tmp
            // through; one it refused, into a directory the host has, is
            // what the command wanted: allowed by the learned profile (and
            // done for real when the command runs again under it).
            let writing = matches!(text("access").as_str(), "write" | "create" | "delete");
            // The narrowest entry: an existing file written is itself; an
            // entry made or removed is its directory.
            let target = if text("access") == "write" && Path::new(&path).is_file() {
                path.clone()
            } else {
                parent(&path)
            };
            if writing && !own(&path) && Path::new(&target).exists() {
                let real = std::fs::canonicalize(&target).map_or(target, |d| d.display().to_string());
                l.write.entry(real).or_insert_with(|| {
                    format!(
                        "{} {path} (refused while observing: writes outside the workspace and /tmp are)",
                        text("access")
                    )
                });
            }
            continue;
        }
        let exists = r.get("exists").and_then(Value::as_bool).unwrap_or(false);
        if own(&path) || path.is_empty() {
            continue;
        }
        // As the host has it: a profile names real paths, not the ones
        // through the sandbox's /lib -> usr/lib symlinks.
        let path = if exists {
            std::fs::canonicalize(&path).map_or(path, |p| p.display().to_string())
        } else {
            path
        };
        match text("access").as_str() {
            "exec" => {
                l.executables.entry(path.clone()).or_insert_with(|| "executed".into());
                // Started by another name, found on PATH: each symlink of
                // that name's chain must be there too, or the name finds
                // nothing next time (/usr/bin/ld -> x86_64-linux-gnu-ld ->
                // x86_64-linux-gnu-ld.bfd), each named by its real
                // directory (/bin/ld is /usr/bin/ld on a merged-/usr host).
                let mut link = PathBuf::from(text("asked"));
                for _ in 0..8 {
                    let (Some(dir), Some(name)) = (link.parent(), link.file_name()) else {
                        break;
                    };
                    let Ok(real_dir) = std::fs::canonicalize(dir) else {
                        break;
                    };
                    let here = real_dir.join(name);
                    let Ok(next) = std::fs::read_link(&here) else { break };
                    let shown = here.display().to_string();
                    if own(&shown) {
                        break;
                    }
                    l.read
                        .entry(shown)
                        .or_insert_with(|| format!("a name {path} was started by (a symlink)"));
                    link = real_dir.join(next);
                }
            }
            "read" if exists && is_library(&path) => {
                l.libraries
                    .entry(parent(&path))
                    .or_insert_with(|| format!("shared libraries, e.g. {path}"));
            }
            "read" if exists => {
                reads.entry(parent(&path)).or_default().push(path);
            }
            "write" | "create" | "delete" => {
                let dir = if text("access") == "write" && exists {
                    path.clone()
                } else {
                    parent(&path)
                };
                l.write
                    .entry(dir)
                    .or_insert_with(|| format!("{} {path}", text("access")));
            }
            _ => {}
        }
    }
    // Reads: a directory asked for, or one with many of its files read, is
    // the entry; else each file.
    for (dir, files) in reads {
        let asked = collapse.iter().find(|c| Path::new(&dir).starts_with(c));
        let under_library = l.libraries.keys().any(|lib| Path::new(&dir).starts_with(lib));
        if under_library {
            continue;
        }
        if let Some(c) = asked {
            l.read.entry(c.display().to_string()).or_insert_with(|| {
                format!(
                    "asked for (--collapse), e.g. {}",
                    files.first().cloned().unwrap_or_default()
                )
            });
        } else if files.len() >= fan {
            l.read.insert(
                dir.clone(),
                format!(
                    "{} files read in it, e.g. {}",
                    files.len(),
                    files.first().cloned().unwrap_or_default()
                ),
            );
        } else {
            for f in files {
                l.read.entry(f.clone()).or_insert_with(|| "read".into());
            }
        }
    }
    // An entry beneath another is the other's.
    let dirs: Vec<String> = l.read.keys().cloned().collect();
    l.read
        .retain(|k, _| !dirs.iter().any(|d| d != k && Path::new(k).starts_with(d)));
    if let Some(end) = records
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some("exec.end"))
    {
        let num = |k: &str| end.get(k).and_then(Value::as_u64);
        if let Some(peak) = num("peak_memory") {
            let mib = (peak * 2).div_ceil(1 << 20).max(64).next_power_of_two();
            l.limits.push((
                "memory",
                format!("\"{mib}M\""),
                format!("peak {} KiB, twice that", peak / 1024),
            ));
        }
        if let Some(cpu) = num("cpu_ms") {
            let s = (cpu * 3).div_ceil(1000).max(5);
            l.limits
                .push(("cpu_seconds", s.to_string(), format!("{cpu} ms used, three times that")));
        }
        if let Some(wall) = num("wall_ms") {
            let s = (wall * 3).div_ceil(1000).max(10);
            l.limits.push((
                "wall_seconds",
                s.to_string(),
                format!("{wall} ms taken, three times that"),
            ));
        }
        if let Some(out) = num("output_bytes") {
            let mib = (out * 4).div_ceil(1 << 20).max(1);
            l.limits.push((
                "output",
                format!("\"{mib}M\""),
                format!("{out} bytes written, four times that"),
            ));
        }
    }
    l
}

impl Learned {
    /// Adds what a re-run under the profile was refused that a group allows:
    /// the group (and, for sockets, the loopback network). Returns whether
    /// anything was added.
    pub fn widen_for(&mut self, records: &[Value]) -> bool {
        let mut added = false;
        for r in records {
            if r.get("kind").and_then(Value::as_str) != Some("syscall.denied") {
                continue;
            }
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            if let Some(g) = crate::seccomp::GROUPS
                .iter()
                .find(|g| g.members.contains(&name) || g.x86_64_only.contains(&name))
            {
                added |= self.syscalls.insert(g.name.to_string());
                if g.name == "@network-io" && self.net != "loopback" {
                    self.net = "loopback";
                    added = true;
                }
            }
        }
        added
    }

    /// The profile, as TOML with a comment on every line that says why.
    pub fn to_toml(&self, source: &str) -> String {
        // A comment is one line whatever the paths in it hold: control
        // characters escaped, so no file name can start a line of TOML.
        let note = |text: &str| crate::provenance::printable(text);
        let list = |m: &BTreeMap<String, String>| -> String {
            m.iter()
                .map(|(k, why)| format!("    {k:?},  # {}\n", note(why)))
                .collect()
        };
        let mut s = format!(
            "# Learned by `ninewall learn` from {}.\n# Every entry says why it is here; remove what you do not want to allow.\n\
             [mbu]\nname = {:?}\n\n[exec]\nexecutables = [\n{}]\nenv = {{ PATH = {SEARCH_PATH:?}, LANG = \"C.UTF-8\" }}  # the search path learn observes with\n\n[fs]\n",
            note(source),
            self.name,
            list(&self.executables)
        );
        s.push_str(&format!("read = [\n{}]\n", list(&self.read)));
        s.push_str(&format!("libraries = [\n{}]\n", list(&self.libraries)));
        if !self.write.is_empty() {
            s.push_str(&format!("write = [\n{}]\n", list(&self.write)));
        }
        s.push_str(&format!(
            "\n[net]\nmode = {:?}\n\n[syscalls]\nallow = [{}]\n",
            self.net,
            self.syscalls
                .iter()
                .map(|g| format!("{g:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if !self.limits.is_empty() {
            s.push_str("\n[limits]\n");
            for (k, v, why) in &self.limits {
                s.push_str(&format!("{k} = {v}  # {}\n", note(why)));
            }
        }
        s
    }
}

/// `ninewall learn`: observe (or read), learn, check, re-run; returns the
/// exit code.
pub fn main(args: &crate::cli::LearnArgs, say: &dyn Fn(String)) -> i32 {
    use crate::exit;
    let work = std::env::temp_dir().join(format!("ninewall-learn-{}", std::process::id()));
    if let Err(e) = std::fs::DirBuilder::new().mode(0o755).create(&work) {
        say(format!("learn: cannot make {}: {e}", work.display()));
        return exit::SANDBOX;
    }
    let result = learn_in(args, &work, say);
    let _ = std::fs::remove_dir_all(&work);
    result
}

use std::os::unix::fs::DirBuilderExt;

fn learn_in(args: &crate::cli::LearnArgs, work: &Path, say: &dyn Fn(String)) -> i32 {
    use crate::exit;
    let Ok(me) = std::env::current_exe() else {
        say("learn: cannot find this program to run it".into());
        return exit::SANDBOX;
    };
    // The program, as the host has it: the observation lists it by that name.
    let command: Vec<String> = match args.command.split_first() {
        Some((first, rest)) => match crate::pipeline::on_host(first).filter(|p| p.is_file()) {
            Some(p) => std::iter::once(p.display().to_string())
                .chain(rest.iter().cloned())
                .collect(),
            None => {
                say(format!("learn: {first:?} is no program on this host (a path, or a name in /usr/local/bin, /usr/bin, /bin, ...)"));
                return exit::NOT_FOUND;
            }
        },
        None => Vec::new(),
    };
    let (records, source, observed) = if let Some(exec) = &args.from_exec {
        let Some(log) = args
            .log
            .clone()
            .or_else(|| crate::provenance::default_log_path(crate::sys::effective_ids().0))
        else {
            say("learn: no log: give --log LOG".into());
            return exit::USAGE;
        };
        let text = match std::fs::read(&log) {
            Ok(t) => t,
            Err(e) => {
                say(format!("learn: {}: {e}", log.display()));
                return exit::USAGE;
            }
        };
        let mut execs = crate::provenance::executions(&text, Some(exec));
        let Some(records) = execs.remove(exec) else {
            say(format!("learn: no execution {exec} in {}", log.display()));
            return exit::USAGE;
        };
        let code = records
            .iter()
            .find(|r| r.get("kind").and_then(Value::as_str) == Some("exec.end"))
            .and_then(|r| r.get("exit_code"))
            .and_then(Value::as_i64);
        (records, format!("execution {exec} of {}", log.display()), code)
    } else {
        let Some(program) = command.first() else {
            say("learn: give the command after --, or --from-exec EXEC".into());
            return exit::USAGE;
        };
        let mut exes = vec![PathBuf::from(program)];
        if let Ok(crate::policy::elf::Loader::Script(interp)) = crate::policy::elf::loader_of(Path::new(program)) {
            // Listed as the host has it: /bin/sh is /usr/bin/dash here.
            exes.push(std::fs::canonicalize(&interp).unwrap_or(interp));
        }
        // Host paths in the arguments (absolute, existing, as the host has them).
        let arg_paths: Vec<PathBuf> = command
            .iter()
            .skip(1)
            .filter(|a| a.starts_with('/'))
            .filter_map(|a| std::fs::canonicalize(a).ok())
            .filter(|p| !exes.contains(p))
            .collect();
        // Observed until it executes nothing more than it may: a program it
        // starts (cat, wc) that the observation did not list is refused there,
        // then listed, and the command observed again (a compiler driver
        // takes five: cc1, as, collect2, ld; OBSERVATIONS at most).
        let profile = work.join("observe.toml");
        let mut observed = None;
        for round in 0..OBSERVATIONS {
            if std::fs::write(&profile, observation_profile(&exes, &arg_paths)).is_err() {
                say("learn: cannot write the observation profile".into());
                return exit::SANDBOX;
            }
            let log = work.join(format!("observe-{round}.jsonl"));
            say(format!(
                "learn: observing {} (every file access recorded)",
                command.join(" ")
            ));
            let status = std::process::Command::new(&me)
                .arg("run")
                .arg("--profile")
                .arg(&profile)
                .arg("--audit-log")
                .arg(&log)
                .arg("--")
                .args(&command)
                .status();
            let code = status.ok().and_then(|s| s.code()).map(i64::from);
            let text = std::fs::read(&log).unwrap_or_default();
            let records = crate::provenance::executions(&text, None)
                .into_values()
                .next()
                .unwrap_or_default();
            let more = refused_executables(&records, &exes);
            observed = Some((records, code));
            if more.is_empty() {
                break;
            }
            if round + 1 == OBSERVATIONS {
                say(format!(
                    "learn: after {OBSERVATIONS} observations it still started programs not listed ({}): the profile leaves them out",
                    more.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                ));
                break;
            }
            say(format!(
                "learn: it started {}, which the observation did not list: observing again with them",
                more.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            exes.extend(more);
        }
        let Some((records, code)) = observed else {
            return exit::SANDBOX;
        };
        if records.is_empty() {
            say("learn: the observation run left no records: nothing to learn".into());
            return exit::SANDBOX;
        }
        (records, format!("a run of `{}`", command.join(" ")), code)
    };
    let name = args.name.clone().unwrap_or_else(|| {
        let from = command
            .first()
            .cloned()
            .or_else(|| {
                records
                    .iter()
                    .find_map(|r| r.get("program").and_then(Value::as_str).map(str::to_string))
            })
            .unwrap_or_default();
        let base = Path::new(&from)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let clean: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if clean.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
            clean
        } else {
            "learned".into()
        }
    });
    let mut learned = learn(&records, &name, &args.collapse, args.fan.max(1));
    let path = work.join(format!("{name}.toml"));
    let mut rerun = None;
    for round in 0..3 {
        let toml = learned.to_toml(&source);
        if std::fs::write(&path, &toml).is_err() {
            say("learn: cannot write the learned profile".into());
            return exit::SANDBOX;
        }
        if let Err(e) = crate::pipeline::load_policy(&path) {
            say(format!(
                "learn: the learned profile does not check (a fault of learn's):\n{e}"
            ));
            return exit::SANDBOX;
        }
        if command.is_empty() {
            break;
        }
        let log = work.join(format!("rerun-{round}.jsonl"));
        let status = std::process::Command::new(&me)
            .arg("run")
            .arg("--profile")
            .arg(&path)
            .arg("--audit-log")
            .arg(&log)
            .arg("--")
            .args(&command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        rerun = status.ok().and_then(|s| s.code()).map(i64::from);
        let text = std::fs::read(&log).unwrap_or_default();
        let records = crate::provenance::executions(&text, None)
            .into_values()
            .next()
            .unwrap_or_default();
        if !learned.widen_for(&records) {
            break;
        }
    }
    let toml = learned.to_toml(&source);
    let written = match &args.out {
        Some(out) => std::fs::write(out, &toml).map(|()| say(format!("learn: wrote {}", out.display()))),
        None => std::io::Write::write_all(&mut std::io::stdout(), toml.as_bytes()),
    };
    if let Err(e) = written {
        say(format!("learn: cannot write the profile: {e}"));
        return exit::SANDBOX;
    }
    match (rerun, observed) {
        (Some(again), Some(before)) if again == before => {
            say(format!(
                "learn: the profile checks, and the command exits {again} under it, as it did observed"
            ));
            0
        }
        (Some(again), before) => {
            say(format!(
                "learn: the profile checks, but the command exits {again} under it (observed: {}); `ninewall why` on a run under it says what was refused",
                before.map_or("unknown".to_string(), |b| b.to_string())
            ));
            1
        }
        (None, _) => {
            say("learn: the profile checks (no command given: not run again)".into());
            0
        }
    }
}

/// Programs an observation run tried to execute and was refused, or probed
/// with `access` (a compiler driver finds `ld` that way before it runs
/// it), that are executable files on the host and not listed yet.
fn refused_executables(records: &[Value], listed: &[PathBuf]) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut out: Vec<PathBuf> = Vec::new();
    for r in records {
        let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        let refused_exec = text("access") == "exec" && text("verdict") == "refused";
        // `access(X_OK)` fails on the observation's noexec views of /usr:
        // a program that probes before it runs (collect2 and `ld`, a shell
        // and PATH) asked for it.
        let probed = text("access") == "meta" && matches!(text("syscall"), "access" | "faccessat" | "faccessat2");
        if text("kind") != "file" || !(refused_exec || probed) {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(text("path")) else {
            continue;
        };
        let runnable = std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if runnable && !listed.contains(&real) && !out.contains(&real) {
            out.push(real);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_become_the_narrowest_entries_with_their_reasons() {
        let mut recs = vec![json!({"kind": "exec.start", "program": "/usr/bin/true"})];
        let file = |path: &str, access: &str| json!({"kind": "file", "verdict": "allowed", "path": path, "access": access, "exists": true});
        recs.push(file("/etc/hostname", "read"));
        for i in 0..5 {
            recs.push(file(&format!("/usr/share/zoneinfo/Zone{i}"), "read"));
        }
        recs.push(file("/usr/lib/x86_64-linux-gnu/libc.so.6", "read"));
        recs.push(file("/proc/self/status", "read"));
        recs.push(file("/work/out.txt", "write"));
        recs.push(json!({"kind": "file", "verdict": "allowed", "path": "/var/tmp/x/new.txt", "access": "create", "exists": false}));
        recs.push(
            json!({"kind": "exec.end", "peak_memory": 10 << 20, "cpu_ms": 120, "wall_ms": 300, "output_bytes": 10}),
        );
        let l = learn(&recs, "t", &[], 4);
        assert!(l.executables.contains_key("/usr/bin/true"));
        assert!(l.read.contains_key("/etc/hostname"));
        assert!(l.read.contains_key("/usr/share/zoneinfo"), "{:?}", l.read);
        assert!(!l.read.keys().any(|k| k.starts_with("/proc")));
        assert!(l.libraries.contains_key("/usr/lib/x86_64-linux-gnu"));
        assert_eq!(l.write.keys().collect::<Vec<_>>(), vec!["/var/tmp/x"]);
        assert!(l.limits.iter().any(|(k, v, _)| *k == "memory" && v == "\"64M\""));
        let toml = l.to_toml("a test");
        assert!(toml.contains("\"/etc/hostname\",  # read"), "{toml}");
        // A path the sandbox chose cannot write a line of the profile.
        let evil = "/usr/lib/x86_64-linux-gnu/libevil.so.1\n[fs]\nwrite = [\"/\"]";
        let mut with_evil = recs.clone();
        with_evil.push(file(evil, "read"));
        let toml = learn(&with_evil, "t", &[], 4).to_toml("a run of `x\n[exec]`");
        let parsed: toml::Value = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert!(
            parsed.get("fs").and_then(|f| f.get("write")).is_some(),
            "the learned /var/tmp/x: {toml}"
        );
        assert_eq!(parsed["fs"]["write"].as_array().map(Vec::len), Some(1), "{toml}");
        assert!(parsed.get("exec").and_then(|e| e.get("command")).is_none());
        let mut widened = l.clone();
        assert!(widened.widen_for(&[json!({"kind": "syscall.denied", "name": "socket"})]));
        assert!(widened.syscalls.contains("@network-io") && widened.net == "loopback");
    }
}

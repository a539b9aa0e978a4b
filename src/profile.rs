//! The profile's TOML wire format, and loading it with `extends`.
//!
//! The input of every wall: nothing here is enforced, only read and located.
//!
//! Invariant: nothing in this module decides what a sandbox may do. It reads the
//! files an admin wrote, rejects anything that is not part of the format (unknown
//! keys, duplicate keys, wrong types), follows `extends` to the base profiles and
//! merges them, and remembers for every value which file and line it came from,
//! so that [`crate::policy`] can name them when it refuses a value.
//!
//! Merge rule for `extends` (base first, then the profile that extends it):
//! - `fs.read`, `fs.libraries`, `fs.write`, `exec.executables`, `net.connect`,
//!   `net.bind`, `syscalls.allow` and the `python` lists are unions (base entries first);
//! - `exec.env` merges key by key, the extending profile winning;
//! - every other value set in the extending profile replaces the base's.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

/// Largest profile file accepted; a profile is a page of TOML, not a data set.
pub const MAX_PROFILE_BYTES: u64 = 256 * 1024;
/// How many `extends` may be chained; a longer chain is almost certainly a mistake.
pub const MAX_EXTENDS_DEPTH: usize = 8;

/// Where a value came from: file, line, and the key as a user would write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The profile file (as given or as found through `extends`).
    pub file: Arc<Path>,
    /// 1-based line of the value.
    pub line: usize,
    /// Dotted key, with an index for array elements: `fs.read[2]`.
    pub key: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.key)
    }
}

/// A value together with its [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    /// The value as written.
    pub value: T,
    /// Where it was written.
    pub origin: Origin,
}

/// Why a profile could not be loaded. Each variant names the file, and the line
/// where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read at all.
    #[error("{file}: cannot read profile: {source}")]
    Read {
        /// The profile file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_PROFILE_BYTES`].
    #[error("{file}: profile is {size} bytes; at most {max} bytes are accepted")]
    TooLarge {
        /// The profile file.
        file: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Not valid UTF-8 TOML, or not the profile format (unknown key, wrong type,
    /// duplicate key).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The profile file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the TOML parser said, including what would be valid.
        message: String,
    },
    /// Several of those in one file: each, in the order of the file.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<LoadError>),
    /// `extends` names something that is not a profile, or forms a cycle, or the
    /// chain is too deep.
    #[error("{origin}: {message}")]
    Extends {
        /// Where the `extends` was written.
        origin: Origin,
        /// What is wrong with it.
        message: String,
    },
}

// ---------------------------------------------------------------------------
// The wire format. Every struct rejects unknown keys; the TOML parser itself
// rejects duplicate keys.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    extends: Option<Spanned<String>>,
    mbu: Option<RawMbu>,
    exec: Option<RawExec>,
    fs: Option<RawFs>,
    net: Option<RawNet>,
    landlock: Option<RawLandlock>,
    syscalls: Option<RawSyscalls>,
    limits: Option<RawLimits>,
    python: Option<RawPython>,
    provenance: Option<RawProvenance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMbu {
    name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    delegate: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: Option<Spanned<Vec<Spanned<String>>>>,
    executables: Option<Vec<Spanned<String>>>,
    env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    workdir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFs {
    read: Option<Vec<Spanned<String>>>,
    libraries: Option<Vec<Spanned<String>>>,
    write: Option<Vec<Spanned<String>>>,
    workspace: Option<RawWorkspace>,
    tmp: Option<RawTmp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    path: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTmp {
    size: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    mode: Option<Spanned<String>>,
    connect: Option<Vec<Spanned<i64>>>,
    bind: Option<Vec<Spanned<i64>>>,
    allow: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvenance {
    files: Option<Spanned<String>>,
    max_records: Option<Spanned<Scalar>>,
    on_overflow: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPython {
    modules: Option<Vec<Spanned<String>>>,
    packages: Option<Vec<Spanned<String>>>,
    site_packages: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Spanned<Scalar>>,
    pids: Option<Spanned<Scalar>>,
    cpu_seconds: Option<Spanned<Scalar>>,
    wall_seconds: Option<Spanned<Scalar>>,
    file_size: Option<Spanned<Scalar>>,
    open_files: Option<Spanned<Scalar>>,
    output: Option<Spanned<Scalar>>,
    inotify_instances: Option<Spanned<Scalar>>,
    inotify_watches: Option<Spanned<Scalar>>,
    connections: Option<Spanned<Scalar>>,
    connection_bytes: Option<Spanned<Scalar>>,
    connection_seconds: Option<Spanned<Scalar>>,
    disk: Option<Spanned<Scalar>>,
    cgroups: Option<Spanned<Scalar>>,
}

/// A value written as a number or as text (`pids = 32`, `memory = "256M"`,
/// `wall_seconds = "2m"`); the policy decides what each key accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Text(t) => write!(f, "{t}"),
        }
    }
}

impl AsRef<str> for Scalar {
    fn as_ref(&self) -> &str {
        match self {
            Scalar::Int(_) => "",
            Scalar::Text(t) => t,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string such as \"64M\" or \"30s\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyscalls {
    allow: Option<Vec<Spanned<String>>>,
    on_denied: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLandlock {
    require: Option<Spanned<Vec<Spanned<String>>>>,
}

// ---------------------------------------------------------------------------
// The merged profile, every value located.

/// One profile after `extends` was followed and merged: still unvalidated text,
/// but every value knows its [`Origin`].
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The files that make up this profile, base first, with their bytes (the
    /// provenance hash covers exactly these).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// `mbu.name`.
    pub name: Option<At<String>>,
    /// `mbu.description`.
    pub description: Option<At<String>>,
    /// `mbu.delegate`: the MBUs an execution may ask for, union over the chain.
    pub delegate: Vec<At<String>>,
    /// `exec.command`, each element located.
    pub command: Option<At<Vec<At<String>>>>,
    /// `exec.executables`, union over the chain.
    pub executables: Vec<At<String>>,
    /// `exec.env`, merged key by key.
    pub env: BTreeMap<String, At<String>>,
    /// `exec.workdir`.
    pub workdir: Option<At<String>>,
    /// `fs.read`, union over the chain.
    pub read: Vec<At<String>>,
    /// `fs.libraries`, union over the chain.
    pub libraries: Vec<At<String>>,
    /// `fs.write`, union over the chain.
    pub write: Vec<At<String>>,
    /// `fs.workspace.path`.
    pub workspace_path: Option<At<String>>,
    /// `fs.workspace.size`.
    pub workspace_size: Option<At<String>>,
    /// `fs.tmp.size`.
    pub tmp_size: Option<At<String>>,
    /// `net.mode`.
    pub net_mode: Option<At<String>>,
    /// `net.connect`: TCP ports, union over the chain.
    pub net_connect: Vec<At<i64>>,
    /// `net.bind`: TCP ports, union over the chain.
    pub net_bind: Vec<At<i64>>,
    /// `net.allow`: the proxy's destinations, union over the chain.
    pub net_allow: Vec<At<String>>,
    /// `landlock.require`: the Landlock features the profile will not run
    /// without. `None` means the default (every feature ninewall knows).
    pub landlock_require: Option<At<Vec<At<String>>>>,
    /// `syscalls.allow`: groups and names, union over the chain.
    pub syscalls_allow: Vec<At<String>>,
    /// `syscalls.on_denied`.
    pub syscalls_on_denied: Option<At<String>>,
    /// `[limits]`, key by key (`memory`, `pids`, …), each replacing the base's.
    pub limits: BTreeMap<&'static str, At<Scalar>>,
    /// `provenance.files`.
    pub provenance_files: Option<At<String>>,
    /// `provenance.max_records`.
    pub provenance_max_records: Option<At<Scalar>>,
    /// `provenance.on_overflow`.
    pub provenance_on_overflow: Option<At<String>>,
    /// Whether any file of the chain has a `[python]` section.
    pub python: bool,
    /// `python.modules`, union over the chain.
    pub python_modules: Vec<At<String>>,
    /// `python.packages`, union over the chain.
    pub python_packages: Vec<At<String>>,
    /// `python.site_packages`, union over the chain.
    pub python_site_packages: Vec<At<String>>,
}

impl Profile {
    /// Reads `path`, follows `extends`, and merges the chain.
    pub fn load(path: &Path) -> Result<Profile, LoadError> {
        let mut chain: Vec<PathBuf> = Vec::new();
        load_chain(path, None, &mut chain)
    }

    /// Parses one profile from text that has no `extends` (used by tests and by
    /// callers that hold a profile in memory).
    pub fn from_str_named(name: &Path, text: &str) -> Result<Profile, LoadError> {
        let raw = parse(name, text)?;
        let file = Source::new(name, text);
        if let Some(ext) = &raw.extends {
            return Err(LoadError::Extends {
                origin: file.origin(ext.span(), "extends"),
                message: "extends is only available for profiles loaded from a file".into(),
            });
        }
        let mut profile = Profile {
            files: vec![(name.to_path_buf(), text.as_bytes().to_vec())],
            ..Profile::default()
        };
        profile.overlay(raw, &file);
        Ok(profile)
    }

    /// Lays `raw` (the extending profile) over `self` (its merged base).
    fn overlay(&mut self, raw: RawProfile, file: &Source) {
        if let Some(mbu) = raw.mbu {
            set(&mut self.name, mbu.name, file, "mbu.name");
            set(&mut self.description, mbu.description, file, "mbu.description");
            append(&mut self.delegate, mbu.delegate, file, "mbu.delegate");
        }
        if let Some(exec) = raw.exec {
            if let Some(cmd) = exec.command {
                let span = cmd.span();
                let items = located_list(cmd.into_inner(), file, "exec.command");
                self.command = Some(At {
                    value: items,
                    origin: file.origin(span, "exec.command"),
                });
            }
            append(&mut self.executables, exec.executables, file, "exec.executables");
            for (key, value) in exec.env.unwrap_or_default() {
                let name = key.into_inner();
                let located = file.at(value, &format!("exec.env.{name}"));
                self.env.insert(name, located);
            }
            set(&mut self.workdir, exec.workdir, file, "exec.workdir");
        }
        if let Some(fs) = raw.fs {
            append(&mut self.read, fs.read, file, "fs.read");
            append(&mut self.libraries, fs.libraries, file, "fs.libraries");
            append(&mut self.write, fs.write, file, "fs.write");
            if let Some(ws) = fs.workspace {
                set(&mut self.workspace_path, ws.path, file, "fs.workspace.path");
                set(&mut self.workspace_size, ws.size, file, "fs.workspace.size");
            }
            if let Some(tmp) = fs.tmp {
                set(&mut self.tmp_size, tmp.size, file, "fs.tmp.size");
            }
        }
        if let Some(net) = raw.net {
            set(&mut self.net_mode, net.mode, file, "net.mode");
            append(&mut self.net_allow, net.allow, file, "net.allow");
            for (key, list, more) in [
                ("net.connect", &mut self.net_connect, net.connect),
                ("net.bind", &mut self.net_bind, net.bind),
            ] {
                // The index within this file's list: the file is named too.
                for (i, v) in more.unwrap_or_default().into_iter().enumerate() {
                    let origin = file.origin(v.span(), &format!("{key}[{i}]"));
                    list.push(At {
                        value: v.into_inner(),
                        origin,
                    });
                }
            }
        }
        if let Some(pv) = raw.provenance {
            set(&mut self.provenance_files, pv.files, file, "provenance.files");
            set(
                &mut self.provenance_on_overflow,
                pv.on_overflow,
                file,
                "provenance.on_overflow",
            );
            if let Some(v) = pv.max_records {
                let origin = file.origin(v.span(), "provenance.max_records");
                self.provenance_max_records = Some(At {
                    value: v.into_inner(),
                    origin,
                });
            }
        }
        if let Some(py) = raw.python {
            self.python = true;
            append(&mut self.python_modules, py.modules, file, "python.modules");
            append(&mut self.python_packages, py.packages, file, "python.packages");
            append(
                &mut self.python_site_packages,
                py.site_packages,
                file,
                "python.site_packages",
            );
        }
        if let Some(l) = raw.limits {
            for (key, value) in [
                ("memory", l.memory),
                ("pids", l.pids),
                ("cpu_seconds", l.cpu_seconds),
                ("wall_seconds", l.wall_seconds),
                ("file_size", l.file_size),
                ("open_files", l.open_files),
                ("output", l.output),
                ("inotify_instances", l.inotify_instances),
                ("inotify_watches", l.inotify_watches),
                ("connections", l.connections),
                ("connection_bytes", l.connection_bytes),
                ("connection_seconds", l.connection_seconds),
                ("disk", l.disk),
                ("cgroups", l.cgroups),
            ] {
                if let Some(v) = value {
                    let origin = file.origin(v.span(), &format!("limits.{key}"));
                    self.limits.insert(
                        key,
                        At {
                            value: v.into_inner(),
                            origin,
                        },
                    );
                }
            }
        }
        if let Some(sc) = raw.syscalls {
            append(&mut self.syscalls_allow, sc.allow, file, "syscalls.allow");
            set(&mut self.syscalls_on_denied, sc.on_denied, file, "syscalls.on_denied");
        }
        if let Some(ll) = raw.landlock {
            if let Some(req) = ll.require {
                let span = req.span();
                let items = located_list(req.into_inner(), file, "landlock.require");
                self.landlock_require = Some(At {
                    value: items,
                    origin: file.origin(span, "landlock.require"),
                });
            }
        }
    }
}

fn set(slot: &mut Option<At<String>>, value: Option<Spanned<String>>, file: &Source, key: &str) {
    if let Some(v) = value {
        *slot = Some(file.at(v, key));
    }
}

/// Appends a file's list to the merged one; each element's key has its
/// index within that file (the origin names the file), not the merged list.
fn append(list: &mut Vec<At<String>>, more: Option<Vec<Spanned<String>>>, file: &Source, key: &str) {
    for (i, v) in more.unwrap_or_default().into_iter().enumerate() {
        list.push(file.at(v, &format!("{key}[{i}]")));
    }
}

fn located_list(items: Vec<Spanned<String>>, file: &Source, key: &str) -> Vec<At<String>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| file.at(v, &format!("{key}[{i}]")))
        .collect()
}

/// One file's text, for turning byte spans into line numbers.
pub(crate) struct Source<'a> {
    path: Arc<Path>,
    text: &'a str,
}

impl<'a> Source<'a> {
    pub(crate) fn new(path: &Path, text: &'a str) -> Self {
        Source {
            path: Arc::from(path),
            text,
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes().iter().take(end).filter(|&&b| b == b'\n').count() + 1
    }

    pub(crate) fn origin(&self, span: std::ops::Range<usize>, key: &str) -> Origin {
        Origin {
            file: Arc::clone(&self.path),
            line: self.line_of(span.start),
            key: key.to_string(),
        }
    }

    pub(crate) fn at(&self, value: Spanned<String>, key: &str) -> At<String> {
        let origin = self.origin(value.span(), key);
        At {
            value: value.into_inner(),
            origin,
        }
    }
}

fn parse(path: &Path, text: &str) -> Result<RawProfile, LoadError> {
    parse_toml(path, text)
}

/// Parses TOML text into `T`, turning the parser's error into a located one.
///
/// Every such error of the file is found, not only the first: the lines of
/// the one found are blanked (a table's header with its keys) and the text
/// parsed again, at most 20 times, so that one `check` lists them all, each
/// at its own line.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, LoadError> {
    let first = match parse_once::<T>(path, text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut errors = vec![first.0];
    let mut text = text.to_string();
    let mut span = first.1;
    for _ in 0..20 {
        let Some(s) = span else { break };
        let blanked = blank_lines(&text, s);
        if blanked == text {
            break;
        }
        text = blanked;
        match parse_once::<T>(path, &text) {
            Ok(_) => break,
            Err((e, next)) => {
                if errors.iter().any(|seen| same_place(seen, &e)) {
                    break;
                }
                errors.push(e);
                span = next;
            }
        }
    }
    if errors.len() == 1 {
        Err(errors.remove(0))
    } else {
        errors.sort_by_key(|e| match e {
            LoadError::Syntax { line, .. } => *line,
            _ => 0,
        });
        Err(LoadError::Several(errors))
    }
}

fn same_place(a: &LoadError, b: &LoadError) -> bool {
    matches!((a, b), (LoadError::Syntax { line: l1, .. }, LoadError::Syntax { line: l2, .. }) if l1 == l2)
}

/// `text` with the lines `span` touches turned to spaces (their newlines
/// kept, so every other line keeps its number); a table header's keys go
/// with it, so that they are not read as the table's before it.
fn blank_lines(text: &str, span: std::ops::Range<usize>) -> String {
    let start = text.get(..span.start).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    let mut end = text
        .get(span.end..)
        .and_then(|t| t.find('\n'))
        .map_or(text.len(), |i| span.end + i);
    if text.get(start..).is_some_and(|l| l.trim_start().starts_with('[')) {
        // Up to the next header.
        let mut pos = end;
        while let Some(rest) = text.get(pos..) {
            let line_start = pos + usize::from(rest.starts_with('\n'));
            let line = text.get(line_start..).unwrap_or("");
            if line.is_empty() || line.trim_start().starts_with('[') {
                break;
            }
            pos = line_start + line.find('\n').unwrap_or(line.len());
            end = pos;
        }
    }
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        out.push(if (start..end).contains(&i) && c != '\n' { ' ' } else { c });
    }
    out
}

fn parse_once<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, (LoadError, Option<std::ops::Range<usize>>)> {
    toml::from_str::<T>(text).map_err(|e| {
        let span = e.span();
        let (line, column) = match e.span() {
            Some(span) => line_col(text, span.start),
            None => (1, 1),
        };
        // The parser's message says what is wrong and what would be valid;
        // the line itself shows the key.
        let mut message = e.message().trim().to_string();
        // A wrong type: what would be right.
        if message.starts_with("invalid type:") {
            let valid = if message.contains("expected a sequence") {
                Some("a list in brackets, such as [\"/usr/lib\"]")
            } else if message.contains("expected a string") {
                Some("a string in double quotes")
            } else if message.contains("expected i64") || message.contains("integer") {
                Some("a whole number without quotes")
            } else if message.contains("expected a map") || message.contains("struct") {
                Some("a table: [section] or { key = value }")
            } else {
                None
            };
            if let Some(v) = valid {
                message.push_str(&format!("; valid: {v}"));
            }
        }
        if let Some(src) = text.lines().nth(line.saturating_sub(1)).map(str::trim) {
            if !src.is_empty() && src.chars().count() <= 120 {
                message.push_str(&format!(" (in `{src}`)"));
            }
        }
        (
            LoadError::Syntax {
                file: path.to_path_buf(),
                line,
                column,
                message,
            },
            span,
        )
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads a TOML file of at most [`MAX_PROFILE_BYTES`] that must be UTF-8.
pub(crate) fn read_limited(path: &Path) -> Result<String, LoadError> {
    let read_err = |source| LoadError::Read {
        file: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(LoadError::TooLarge {
            file: path.to_path_buf(),
            size: meta.len(),
            max: MAX_PROFILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    String::from_utf8(bytes).map_err(|e| {
        let (line, column) = {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(e.as_bytes().get(..valid).unwrap_or_default()).into_owned();
            line_col(&prefix, prefix.len())
        };
        LoadError::Syntax {
            file: path.to_path_buf(),
            line,
            column,
            message: "profile is not valid UTF-8".into(),
        }
    })
}

/// Resolves `extends = "NAME"`: `NAME.toml` relative to the directory of the
/// profile that names it (`"base/python"` is `base/python.toml` beside it); a
/// name that already ends in `.toml` is used as it is. Absolute names are
/// refused, so a profile tree can be moved as a whole.
fn extends_path(from: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\0') || name.starts_with('/') {
        return None;
    }
    let dir = from.parent().unwrap_or_else(|| Path::new("."));
    if name.ends_with(".toml") {
        Some(dir.join(name))
    } else {
        Some(dir.join(format!("{name}.toml")))
    }
}

fn load_chain(path: &Path, by: Option<&Origin>, chain: &mut Vec<PathBuf>) -> Result<Profile, LoadError> {
    let text = read_limited(path).map_err(|e| match (by, e) {
        (Some(origin), LoadError::Read { source, .. }) => LoadError::Extends {
            origin: origin.clone(),
            message: format!("cannot read base profile {}: {source}", path.display()),
        },
        (_, e) => e,
    })?;
    let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    chain.push(identity);
    let raw = parse(path, &text)?;
    let file = Source::new(path, &text);
    let mut merged = match &raw.extends {
        None => Profile::default(),
        Some(ext) => {
            let origin = file.origin(ext.span(), "extends");
            let base = extends_path(path, ext.get_ref()).ok_or_else(|| LoadError::Extends {
                origin: origin.clone(),
                message: format!(
                    "{:?} is not a profile name; valid: a relative name such as \"base/python\" (base/python.toml beside this file)",
                    ext.get_ref()
                ),
            })?;
            let base_identity = std::fs::canonicalize(&base).unwrap_or_else(|_| base.clone());
            if chain.contains(&base_identity) {
                return Err(LoadError::Extends {
                    origin,
                    message: format!("{} is already in this extends chain (a cycle)", base.display()),
                });
            }
            if chain.len() >= MAX_EXTENDS_DEPTH {
                return Err(LoadError::Extends {
                    origin,
                    message: format!("extends chain is deeper than {MAX_EXTENDS_DEPTH} profiles"),
                });
            }
            load_chain(&base, Some(&origin), chain)?
        }
    };
    merged.files.push((path.to_path_buf(), text.as_bytes().to_vec()));
    merged.overlay(raw, &file);
    Ok(merged)
}

//! The subset relation between policies: wall 1's rule that nothing can gain a
//! permission by delegating. One function, [`excess`], decides it; delegation
//! and `ninewall diff` both call it.
//!
//! A permission is what a wall enforces: a path and the right on it, an
//! executable, the network, a TCP port, a syscall, a Python module or package,
//! a resource limit, a delegate. A policy also carries configuration that no
//! wall enforces (the command line, the environment, the working directory, the
//! description): that is not compared, and [`intersect`] takes it from its
//! first argument.
//!
//! Obligations count the other way: a child must record at least as many file
//! accesses, require at least the same Landlock features and, when the parent
//! requires cgroups, require them too.

use std::fmt;
use std::path::Path;

use super::units::format_size;
use super::{CgroupMode, FsEntry, Limits, NetMode, Policy, RecordFiles};
use crate::interpreter::PythonPolicy;

/// One permission that `a` has and `b` lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excess {
    /// The profile key it belongs to: `fs.write`, `limits.memory`, …
    pub key: &'static str,
    /// What exactly is gained, as a user would write it.
    pub what: String,
}

impl fmt::Display for Excess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.what)
    }
}

/// Every permission `a` has that `b` lacks; empty exactly when `a ⊆ b`.
pub fn excess(a: &Policy, b: &Policy) -> Vec<Excess> {
    let mut out = Vec::new();
    let mut gained = |key: &'static str, what: String| out.push(Excess { key, what });

    for e in &a.executables {
        if !b.executables.contains(e) {
            gained("exec.executables", format!("may execute {}", e.display()));
        }
    }
    for e in &a.interpreters {
        if !b.interpreters.contains(e) {
            gained(
                "exec.executables",
                format!("may execute the ELF interpreter {}", e.display()),
            );
        }
    }
    let b_readable: Vec<&FsEntry> = b.read.iter().chain(&b.libraries).chain(&b.write).collect();
    for e in &a.read {
        if !covered(&e.path, &b_readable) {
            gained("fs.read", format!("may read {}", e.path.display()));
        }
    }
    let b_libraries: Vec<&FsEntry> = b.libraries.iter().collect();
    for e in &a.libraries {
        if !covered(&e.path, &b_libraries) {
            gained("fs.libraries", format!("may map {} executable", e.path.display()));
        }
    }
    let b_writable: Vec<&FsEntry> = b.write.iter().collect();
    for e in &a.write {
        if !covered(&e.path, &b_writable) {
            gained("fs.write", format!("may write {}", e.path.display()));
        }
    }
    if a.workspace.size > b.workspace.size {
        gained(
            "fs.workspace.size",
            format!("{} > {}", format_size(a.workspace.size), format_size(b.workspace.size)),
        );
    }
    if a.tmp_size > b.tmp_size {
        gained(
            "fs.tmp.size",
            format!("{} > {}", format_size(a.tmp_size), format_size(b.tmp_size)),
        );
    }
    if a.net.rank() > b.net.rank() {
        gained("net.mode", format!("{} > {}", net_words(a.net), net_words(b.net)));
    }
    for r in a.net_allow.iter().filter(|_| a.net == NetMode::Proxy) {
        if b.net != NetMode::Proxy || !b.net_allow.iter().any(|q| q.covers(r)) {
            gained("net.allow", format!("may connect through the proxy to {r}"));
        }
    }
    for p in &a.net_connect {
        if !b.net_connect.contains(p) {
            gained("net.connect", format!("may connect to TCP port {p}"));
        }
    }
    for p in &a.net_bind {
        if !b.net_bind.contains(p) {
            gained("net.bind", format!("may bind TCP port {p}"));
        }
    }
    for s in &a.syscalls.names {
        if !b.syscalls.names.contains(s) {
            gained("syscalls.allow", format!("may call {s}"));
        }
    }
    limit_excess(&a.limits, &b.limits, &mut gained);
    python_excess(a.python.as_ref(), b.python.as_ref(), &mut gained);
    for f in &b.landlock_require {
        if !a.landlock_require.contains(f) {
            gained("landlock.require", format!("would run without Landlock {f}"));
        }
    }
    if rank(a.record_files) < rank(b.record_files) {
        gained(
            "provenance.files",
            format!(
                "records {} file accesses, fewer than {}",
                name(a.record_files),
                name(b.record_files)
            ),
        );
    }
    if a.records.max > b.records.max {
        gained(
            "provenance.max_records",
            format!("may write {} file records > {}", a.records.max, b.records.max),
        );
    }
    if a.records.on_overflow == super::Overflow::Summarize && b.records.on_overflow == super::Overflow::Kill {
        gained(
            "provenance.on_overflow",
            "goes on past its record budget (summarize) > kill".into(),
        );
    }
    for d in &a.delegate {
        if !b.delegate.contains(d) {
            gained("mbu.delegate", format!("may delegate to {d}"));
        }
    }
    out
}

/// True when `path` is one of `entries` or lies beneath one of its directories.
fn covered(path: &Path, entries: &[&FsEntry]) -> bool {
    entries
        .iter()
        .any(|e| e.path == path || (matches!(e.kind, super::EntryKind::Dir) && path.starts_with(&e.path)))
}

fn limit_excess(a: &Limits, b: &Limits, gained: &mut impl FnMut(&'static str, String)) {
    let size = |n: u64| format_size(n);
    let count = |n: u64| n.to_string();
    for (key, x, y, show) in [
        ("limits.memory", a.memory, b.memory, &size as &dyn Fn(u64) -> String),
        ("limits.pids", a.pids, b.pids, &count),
        ("limits.cpu_seconds", a.cpu_seconds, b.cpu_seconds, &count),
        ("limits.wall_seconds", a.wall_seconds, b.wall_seconds, &count),
        ("limits.file_size", a.file_size, b.file_size, &size),
        ("limits.open_files", a.open_files, b.open_files, &count),
        ("limits.output", a.output, b.output, &size),
        (
            "limits.inotify_instances",
            a.inotify_instances,
            b.inotify_instances,
            &count,
        ),
        ("limits.inotify_watches", a.inotify_watches, b.inotify_watches, &count),
        ("limits.connections", a.connections, b.connections, &count),
        ("limits.connection_bytes", a.connection_bytes, b.connection_bytes, &size),
        (
            "limits.connection_seconds",
            a.connection_seconds,
            b.connection_seconds,
            &count,
        ),
    ] {
        if x > y {
            gained(key, format!("{} > {}", show(x), show(y)));
        }
    }
    match (a.disk, b.disk) {
        (None, Some(y)) => gained("limits.disk", format!("unbounded > {}", size(y))),
        (Some(x), Some(y)) if x > y => gained("limits.disk", format!("{} > {}", size(x), size(y))),
        _ => {}
    }
    if b.cgroups == CgroupMode::Strict && a.cgroups != CgroupMode::Strict {
        gained(
            "limits.cgroups",
            "would run on rlimits alone (best-effort) > strict".into(),
        );
    }
}

fn python_excess(a: Option<&PythonPolicy>, b: Option<&PythonPolicy>, gained: &mut impl FnMut(&'static str, String)) {
    // No [python] means no interpreter guard: every import is allowed.
    let Some(b) = b else { return };
    let Some(a) = a else {
        gained("python", "no interpreter guard: may import any module".into());
        return;
    };
    for m in &a.modules {
        if !b.modules.contains(m) {
            gained("python.modules", format!("may import {m}"));
        }
    }
    for p in &a.packages {
        if !b.packages.iter().any(|q| q.name == p.name && q.source == p.source) {
            gained(
                "python.packages",
                format!("may import {} from {}", p.name, p.source.display()),
            );
        }
    }
}

fn net_words(n: NetMode) -> &'static str {
    match n {
        NetMode::None => "none",
        NetMode::Loopback => "loopback (an interface that is up)",
        NetMode::Proxy => "proxy (connections to net.allow)",
    }
}

fn rank(r: RecordFiles) -> u8 {
    match r {
        RecordFiles::None => 0,
        RecordFiles::Writes => 1,
        RecordFiles::All => 2,
    }
}

fn name(r: RecordFiles) -> &'static str {
    match r {
        RecordFiles::None => "no",
        RecordFiles::Writes => "only writing",
        RecordFiles::All => "all",
    }
}

/// The policy that has exactly the permissions both `a` and `b` have, with
/// `a`'s configuration (command, environment, working directory, name). It is a
/// subset of both; when `a ⊆ b` it grants what `a` grants.
pub fn intersect(a: &Policy, b: &Policy) -> Policy {
    let both = |x: &[std::path::PathBuf], y: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        x.iter().filter(|p| y.contains(p)).cloned().collect()
    };
    let a_readable: Vec<&FsEntry> = a.read.iter().chain(&a.libraries).chain(&a.write).collect();
    let b_readable: Vec<&FsEntry> = b.read.iter().chain(&b.libraries).chain(&b.write).collect();
    let paths = |xs: &[FsEntry], x_cover: &[&FsEntry], ys: &[FsEntry], y_cover: &[&FsEntry]| -> Vec<FsEntry> {
        let mut out: Vec<FsEntry> = Vec::new();
        for e in xs.iter().filter(|e| covered(&e.path, y_cover)) {
            out.push(e.clone());
        }
        for e in ys.iter().filter(|e| covered(&e.path, x_cover)) {
            if !out.iter().any(|o| o.path == e.path) {
                out.push(e.clone());
            }
        }
        out
    };
    let a_lib: Vec<&FsEntry> = a.libraries.iter().collect();
    let b_lib: Vec<&FsEntry> = b.libraries.iter().collect();
    let a_wr: Vec<&FsEntry> = a.write.iter().collect();
    let b_wr: Vec<&FsEntry> = b.write.iter().collect();
    let mut p = a.clone();
    p.executables = both(&a.executables, &b.executables);
    p.interpreters = both(&a.interpreters, &b.interpreters);
    p.read = paths(&a.read, &a_readable, &b.read, &b_readable);
    p.libraries = paths(&a.libraries, &a_lib, &b.libraries, &b_lib);
    p.write = paths(&a.write, &a_wr, &b.write, &b_wr);
    let shown: Vec<&FsEntry> = p.read.iter().chain(&p.libraries).collect();
    let others: Vec<&FsEntry> = p.write.iter().collect();
    p.library_cache = super::ldcache::for_sandbox(&shown, &others);
    p.workspace.size = a.workspace.size.min(b.workspace.size);
    p.tmp_size = a.tmp_size.min(b.tmp_size);
    p.net = if a.net.rank() <= b.net.rank() { a.net } else { b.net };
    p.net_allow = if p.net == NetMode::Proxy {
        let mut allow: Vec<super::egress::Rule> = a
            .net_allow
            .iter()
            .filter(|r| b.net_allow.iter().any(|q| q.covers(r)))
            .cloned()
            .collect();
        for r in &b.net_allow {
            if a.net_allow.iter().any(|q| q.covers(r)) && !allow.contains(r) {
                allow.push(r.clone());
            }
        }
        allow
    } else {
        p.env
            .retain(|k, _| !super::proxy_env().iter().any(|(name, _)| name == k));
        Vec::new()
    };
    p.net_connect.retain(|x| b.net_connect.contains(x));
    p.net_bind.retain(|x| b.net_bind.contains(x));
    p.syscalls.names.retain(|s| b.syscalls.names.contains(s));
    p.limits = Limits {
        memory: a.limits.memory.min(b.limits.memory),
        pids: a.limits.pids.min(b.limits.pids),
        cpu_seconds: a.limits.cpu_seconds.min(b.limits.cpu_seconds),
        wall_seconds: a.limits.wall_seconds.min(b.limits.wall_seconds),
        file_size: a.limits.file_size.min(b.limits.file_size),
        open_files: a.limits.open_files.min(b.limits.open_files),
        output: a.limits.output.min(b.limits.output),
        inotify_instances: a.limits.inotify_instances.min(b.limits.inotify_instances),
        inotify_watches: a.limits.inotify_watches.min(b.limits.inotify_watches),
        connections: a.limits.connections.min(b.limits.connections),
        connection_bytes: a.limits.connection_bytes.min(b.limits.connection_bytes),
        connection_seconds: a.limits.connection_seconds.min(b.limits.connection_seconds),
        disk: match (a.limits.disk, b.limits.disk) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
        cgroups: if a.limits.cgroups == CgroupMode::Strict || b.limits.cgroups == CgroupMode::Strict {
            CgroupMode::Strict
        } else {
            CgroupMode::BestEffort
        },
    };
    p.python = match (&a.python, &b.python) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (Some(x), Some(y)) => {
            let mut g = x.clone();
            g.modules.retain(|m| y.modules.contains(m));
            g.packages
                .retain(|pk| y.packages.iter().any(|q| q.name == pk.name && q.source == pk.source));
            Some(g)
        }
    };
    for f in &b.landlock_require {
        if !p.landlock_require.contains(f) {
            p.landlock_require.push(*f);
        }
    }
    p.landlock_require.sort();
    p.record_files = if rank(a.record_files) >= rank(b.record_files) {
        a.record_files
    } else {
        b.record_files
    };
    p.records = super::RecordBudget {
        max: a.records.max.min(b.records.max),
        on_overflow: if a.records.on_overflow == super::Overflow::Kill || b.records.on_overflow == super::Overflow::Kill
        {
            super::Overflow::Kill
        } else {
            super::Overflow::Summarize
        },
    };
    p.delegate.retain(|d| b.delegate.contains(d));
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    //! Property tests of the relation on generated policies: a small
    //! deterministic generator, so a failure names the seed that shows it.

    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::interpreter::Package;
    use crate::landlock::Feature;
    use crate::policy::{EntryKind, Syscalls, Workspace};
    use crate::seccomp::OnDenied;

    /// xorshift64*: enough randomness to explore, and reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn chance(&mut self, one_in: u64) -> bool {
            self.next().is_multiple_of(one_in)
        }
        fn some<T: Clone>(&mut self, pool: &[T]) -> Vec<T> {
            pool.iter().filter(|_| self.chance(2)).cloned().collect()
        }
        fn pick<T: Copy>(&mut self, pool: &[T]) -> T {
            pool[(self.next() % pool.len() as u64) as usize]
        }
    }

    const PATHS: [(&str, bool); 8] = [
        ("/usr", true),
        ("/usr/lib", true),
        ("/usr/lib/python3.11", true),
        ("/usr/lib/python3.11/json/__init__.py", false),
        ("/etc", true),
        ("/etc/hostname", false),
        ("/srv/kb", true),
        ("/srv/out", true),
    ];
    const SYSCALLS: [&str; 8] = ["read", "write", "openat", "clone", "socket", "connect", "mmap", "wait4"];
    const MODULES: [&str; 5] = ["json", "math", "re", "os", "socket"];
    const MBUS: [&str; 3] = ["reason", "knowledge", "wide"];

    fn entries(rng: &mut Rng) -> Vec<FsEntry> {
        rng.some(&PATHS)
            .into_iter()
            .map(|(p, dir)| FsEntry {
                path: PathBuf::from(p),
                kind: if dir { EntryKind::Dir } else { EntryKind::File },
            })
            .collect()
    }

    fn strings(rng: &mut Rng, pool: &[&str]) -> Vec<String> {
        rng.some(pool).into_iter().map(str::to_string).collect()
    }

    fn policy(rng: &mut Rng) -> Policy {
        let sizes = [1u64 << 20, 64 << 20, 256 << 20, 1 << 30];
        let counts = [1u64, 4, 64, 256];
        let mut p = Policy {
            name: "generated".into(),
            description: String::new(),
            sources: vec![],
            command: None,
            executables: rng.some(&[PathBuf::from("/usr/bin/python3.11"), PathBuf::from("/bin/true")]),
            env: BTreeMap::new(),
            workdir: PathBuf::from("/work"),
            read: entries(rng),
            libraries: entries(rng),
            write: entries(rng),
            library_cache: None,
            workspace: Workspace {
                path: PathBuf::from("/work"),
                size: rng.pick(&sizes),
            },
            tmp_size: rng.pick(&sizes),
            net: match rng.next() % 3 {
                0 => NetMode::None,
                1 => NetMode::Loopback,
                _ => NetMode::Proxy,
            },
            net_allow: rng
                .some(&[
                    "*.corp.example:443",
                    "api.corp.example:443",
                    "10.0.0.0/8:80",
                    "10.1.2.3:80",
                    "db.example:5432",
                ])
                .iter()
                .map(|t| crate::policy::egress::Rule::parse(t).unwrap())
                .collect(),
            net_connect: rng.some(&[80u16, 443, 8080]),
            net_bind: rng.some(&[8000u16, 9000]),
            interpreters: rng.some(&[PathBuf::from("/usr/lib64/ld-linux-x86-64.so.2")]),
            landlock_require: rng.some(&[Feature::Fs, Feature::Tcp, Feature::Scope]),
            syscalls: Syscalls {
                allow: vec![],
                names: strings(rng, &SYSCALLS),
                on_denied: OnDenied::Errno,
            },
            limits: Limits {
                memory: rng.pick(&sizes),
                pids: rng.pick(&counts),
                cpu_seconds: rng.pick(&counts),
                wall_seconds: rng.pick(&counts),
                file_size: rng.pick(&sizes),
                open_files: rng.pick(&counts),
                output: rng.pick(&sizes),
                inotify_instances: rng.pick(&counts),
                inotify_watches: rng.pick(&counts),
                connections: rng.pick(&counts),
                connection_bytes: rng.pick(&sizes),
                connection_seconds: rng.pick(&counts),
                disk: if rng.chance(2) { None } else { Some(rng.pick(&sizes)) },
                cgroups: if rng.chance(2) {
                    CgroupMode::Strict
                } else {
                    CgroupMode::BestEffort
                },
            },
            python: (!rng.chance(3)).then(|| PythonPolicy {
                modules: strings(rng, &MODULES),
                packages: rng
                    .some(&["numpy", "yaml"])
                    .into_iter()
                    .map(|n| Package {
                        name: n.to_string(),
                        source: PathBuf::from(format!("/usr/lib/python3/dist-packages/{n}")),
                        dir: true,
                    })
                    .collect(),
                stdlib: PathBuf::from("/usr/lib/python3.11"),
            }),
            record_files: rng.pick(&[RecordFiles::None, RecordFiles::Writes, RecordFiles::All]),
            records: crate::policy::RecordBudget {
                max: rng.pick(&[100u64, 1000, 100_000]),
                on_overflow: if rng.chance(2) {
                    crate::policy::Overflow::Kill
                } else {
                    crate::policy::Overflow::Summarize
                },
            },
            delegate: strings(rng, &MBUS),
        };
        if p.net != NetMode::Proxy {
            p.net_allow.clear();
        }
        p
    }

    /// A random narrowing of `p`: drops permissions, lowers limits, adds
    /// obligations. Always a subset by construction.
    fn narrow(rng: &mut Rng, p: &Policy) -> Policy {
        let mut n = p.clone();
        n.executables.retain(|_| rng.chance(3));
        n.read.retain(|_| !rng.chance(3));
        n.libraries.retain(|_| !rng.chance(3));
        n.write.retain(|_| !rng.chance(3));
        n.net_connect.retain(|_| !rng.chance(3));
        n.net_allow.retain(|_| !rng.chance(3));
        n.syscalls.names.retain(|_| !rng.chance(3));
        n.limits.memory /= 1 + rng.next() % 3;
        n.limits.pids = n.limits.pids.saturating_sub(rng.next() % 2);
        if rng.chance(2) {
            n.net = NetMode::None;
        }
        if rng.chance(2) {
            n.limits.cgroups = CgroupMode::Strict;
        }
        if rng.chance(2) {
            n.record_files = RecordFiles::All;
        }
        if let Some(py) = n.python.as_mut() {
            py.modules.retain(|_| !rng.chance(3));
        } else if rng.chance(2) {
            n.python = Some(PythonPolicy {
                modules: vec!["json".into()],
                packages: vec![],
                stdlib: PathBuf::from("/usr/lib/python3.11"),
            });
        }
        n.landlock_require.push(Feature::Fs);
        n.landlock_require.sort();
        n.landlock_require.dedup();
        n.delegate.retain(|_| !rng.chance(3));
        // A file beneath a directory the parent may write is a subset of it.
        if let Some(dir) = p.write.iter().find(|e| matches!(e.kind, EntryKind::Dir)) {
            n.write.push(FsEntry {
                path: dir.path.join("sub/file"),
                kind: EntryKind::File,
            });
        }
        n
    }

    /// Perhaps (one time in two) one permission more.
    fn perturb(rng: &mut Rng, p: &Policy) -> Policy {
        let mut q = p.clone();
        match rng.next() % 8 {
            0 => q.syscalls.names.push(SYSCALLS[(rng.next() % 8) as usize].to_string()),
            1 => q.limits.memory = q.limits.memory.saturating_mul(2),
            2 => q.read.extend(entries(rng)),
            3 => q.net = NetMode::Loopback,
            4 => {
                q.net = NetMode::Proxy;
                q.net_allow
                    .push(crate::policy::egress::Rule::parse("*.other.example:443").unwrap());
            }
            _ => {}
        }
        q
    }

    const CASES: u64 = 2000;

    #[test]
    fn every_policy_is_a_subset_of_itself() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for seed in 0..CASES {
            let a = policy(&mut rng);
            assert_eq!(excess(&a, &a), vec![], "case {seed}: {a:#?}");
        }
    }

    #[test]
    fn a_narrowing_is_a_subset_and_the_relation_is_transitive() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for seed in 0..CASES {
            let c = policy(&mut rng);
            let b = narrow(&mut rng, &c);
            let a = narrow(&mut rng, &b);
            assert_eq!(excess(&b, &c), vec![], "case {seed}");
            assert_eq!(excess(&a, &b), vec![], "case {seed}");
            assert_eq!(excess(&a, &c), vec![], "case {seed}: transitivity");
        }
        // And on triples that may or may not be chains (each step narrowed,
        // then perhaps given one permission back): whenever a ⊆ b and b ⊆ c
        // hold, a ⊆ c; whenever b gained something c lacks and a kept it,
        // a ⊄ c.
        let (mut chains, mut broken) = (0, 0);
        for seed in 0..CASES {
            let c = policy(&mut rng);
            let nb = narrow(&mut rng, &c);
            let b = perturb(&mut rng, &nb);
            let na = narrow(&mut rng, &b);
            let a = perturb(&mut rng, &na);
            if excess(&a, &b).is_empty() && excess(&b, &c).is_empty() {
                chains += 1;
                assert_eq!(excess(&a, &c), vec![], "triple {seed}");
            } else {
                broken += 1;
            }
        }
        assert!(
            chains > CASES / 10 && broken > CASES / 10,
            "{chains} chains, {broken} not"
        );
    }

    #[test]
    fn an_intersection_is_a_subset_of_both() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for seed in 0..CASES {
            let (a, b) = (policy(&mut rng), policy(&mut rng));
            let both = intersect(&a, &b);
            assert_eq!(excess(&both, &a), vec![], "case {seed}: ∩ ⊆ a");
            assert_eq!(excess(&both, &b), vec![], "case {seed}: ∩ ⊆ b");
            // When a ⊆ b already, the intersection grants exactly what a does.
            if excess(&a, &b).is_empty() {
                assert_eq!(excess(&a, &both), vec![], "case {seed}: a ⊆ a ∩ b");
            }
        }
    }

    #[test]
    fn a_wider_policy_is_named_permission_by_permission() {
        let mut rng = Rng(7);
        let mut base = policy(&mut rng);
        base.python = None;
        base.write = vec![];
        base.net = NetMode::None;
        base.delegate = vec![];
        base.limits.memory = 64 << 20;
        base.record_files = RecordFiles::All;
        let mut wide = base.clone();
        wide.write.push(FsEntry {
            path: PathBuf::from("/srv/out"),
            kind: EntryKind::Dir,
        });
        wide.net = NetMode::Loopback;
        wide.syscalls.names.push("ptrace".into());
        wide.limits.memory = 1 << 30;
        wide.delegate.push("wide".into());
        wide.record_files = RecordFiles::Writes;
        let got: Vec<String> = excess(&wide, &base).iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "fs.write: may write /srv/out",
                "net.mode: loopback (an interface that is up) > none",
                "syscalls.allow: may call ptrace",
                "limits.memory: 1G > 64M",
                "provenance.files: records only writing file accesses, fewer than all",
                "mbu.delegate: may delegate to wide",
            ]
        );
    }
}

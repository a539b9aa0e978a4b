//! The human-readable form of a validated policy (`ninewall check`): every
//! wall's settings, one line each, as the sandbox will build them.

use super::units::format_size;
use super::{CgroupMode, EntryKind, FsEntry, Limits, NetMode, Policy, DELEGATE_ENV};

impl Limits {
    /// One line: every limit with its unit.
    pub fn summary(&self) -> String {
        format!(
            "memory {}, pids {}, cpu {} s, wall {} s, file size {}, open files {}, output {}, inotify {} instances / {} watches",
            format_size(self.memory),
            self.pids,
            self.cpu_seconds,
            self.wall_seconds,
            format_size(self.file_size),
            self.open_files,
            format_size(self.output),
            self.inotify_instances,
            self.inotify_watches
        )
    }
}

fn entry_line(e: &FsEntry) -> String {
    match &e.kind {
        EntryKind::Dir => format!("{}/", e.path.display()),
        EntryKind::File => e.path.display().to_string(),
        EntryKind::Symlink { target } => format!("{} -> {}", e.path.display(), target.display()),
    }
}

impl Policy {
    /// The human-readable form of a policy, as `ninewall check` prints it.
    pub fn summary(&self) -> String {
        summary(self)
    }
}

fn summary(p: &Policy) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<13}{v}\n"));
    line("mbu", p.name.clone());
    if !p.description.is_empty() {
        line("description", p.description.clone());
    }
    let sources: Vec<String> = p.sources.iter().map(|s| s.display().to_string()).collect();
    line("profile", sources.join(" <- "));
    line(
        "delegate",
        if p.delegate.is_empty() {
            "(none)".into()
        } else {
            format!(
                "{} (each must be a subset of this policy; socket in ${})",
                p.delegate.join(" "),
                DELEGATE_ENV
            )
        },
    );
    line(
        "command",
        match &p.command {
            Some(c) => format!("{c:?} + arguments"),
            None => "none: the program is named after --".into(),
        },
    );
    for (i, e) in p.executables.iter().enumerate() {
        line(if i == 0 { "executables" } else { "" }, e.display().to_string());
    }
    for (k, v) in &p.env {
        line("env", format!("{k}={v}"));
    }
    if p.env.is_empty() {
        line("env", "(empty)".into());
    }
    line("workdir", p.workdir.display().to_string());
    for (name, list, how) in [
        ("read", &p.read, "read-only, noexec"),
        ("libraries", &p.libraries, "read-only, may be mapped executable"),
        ("write", &p.write, "read-write, noexec"),
    ] {
        if list.is_empty() {
            line(name, "(none)".into());
        }
        for (i, e) in list.iter().enumerate() {
            line(if i == 0 { name } else { "" }, format!("{}  [{how}]", entry_line(e)));
        }
    }
    if let Some(cache) = &p.library_cache {
        line(
            "ld.so cache",
            format!(
                "{}  [read-only, noexec: every library it lists is readable above]",
                cache.display()
            ),
        );
    }
    line(
        "workspace",
        format!(
            "{} (tmpfs of {}, or --workspace DIR; read-write, noexec)",
            p.workspace.path.display(),
            format_size(p.workspace.size)
        ),
    );
    line("tmp", format!("/tmp (tmpfs of {}, noexec)", format_size(p.tmp_size)));
    line(
        "limits",
        format!(
            "{}; cgroups {}",
            p.limits.summary(),
            match p.limits.cgroups {
                CgroupMode::Strict => "strict",
                CgroupMode::BestEffort => "best-effort",
            }
        ),
    );
    if let Some(disk) = p.limits.disk {
        line(
            "disk",
            format!(
                "at most {} added to a host workspace (--workspace: a btrfs subvolume with quotas on, bounded by its qgroup; anywhere else nothing runs); the tmpfs workspace is bounded by its size",
                super::units::format_size(disk)
            ),
        );
    }
    line(
        "proc, dev",
        "a new /proc of the sandbox's pids; /dev with null zero full random urandom".into(),
    );
    line(
        "net",
        match p.net {
            NetMode::None => "none (network namespace, no interface up)".into(),
            NetMode::Loopback => "loopback (network namespace, only lo up)".into(),
            NetMode::Proxy => format!(
                "proxy (network namespace, only lo up; the supervisor's proxy on 127.0.0.1:{}: HTTP CONNECT, HTTP, SOCKS5; names resolved outside)",
                super::egress::PROXY_PORT
            ),
        },
    );
    for (i, r) in p.net_allow.iter().enumerate() {
        let what = match &r.target {
            super::egress::Target::Name(_) => "this name, any address it resolves to",
            super::egress::Target::Suffix(_) => "names beneath, public addresses only unless listed",
            super::egress::Target::Address(_) => "this address",
            super::egress::Target::Network(..) => "addresses of this network",
        };
        line(if i == 0 { "net allow" } else { "" }, format!("{r}  [{what}]"));
    }
    if p.net == NetMode::Proxy {
        line(
            "connections",
            format!(
                "at most {}; each at most {} both ways and {} s",
                p.limits.connections,
                super::units::format_size(p.limits.connection_bytes),
                p.limits.connection_seconds
            ),
        );
    }
    let ports = |l: &[u16]| {
        if l.is_empty() {
            "(none)".to_string()
        } else {
            l.iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let mut connect = ports(&p.net_connect);
    if p.net == NetMode::Proxy {
        connect = format!("{} (the proxy), {connect}", super::egress::PROXY_PORT).replace(", (none)", "");
    }
    line("tcp connect", connect);
    line("tcp bind", ports(&p.net_bind));
    for (i, e) in p.interpreters.iter().enumerate() {
        line(
            if i == 0 { "interpreters" } else { "" },
            format!("{}  [execute: ELF interpreter]", e.display()),
        );
    }
    line(
        "syscalls",
        format!(
            "{} -> {} syscalls; on_denied {}",
            p.syscalls.allow.join(" "),
            p.syscalls.names.len(),
            match p.syscalls.on_denied {
                crate::seccomp::OnDenied::Errno => "errno",
                crate::seccomp::OnDenied::Kill => "kill",
            }
        ),
    );
    for chunk in p.syscalls.names.chunks(8) {
        line("", chunk.join(" "));
    }
    if p.syscalls.names.iter().any(|n| n == "socket" || n == "socketpair") {
        let families: Vec<&str> = p.socket_families().iter().map(|f| f.name()).collect();
        line(
            "sockets",
            format!(
                "socket: {} only; socketpair: unix only (no vsock, packet, other netlink, ...)",
                families.join(", ")
            ),
        );
    }
    line(
        "setid",
        "no setuid/setgid mode: chmod, mkdir, mknod, creat, open(O_CREAT) with one refused; openat2 ENOSYS".into(),
    );
    line(
        "provenance",
        format!(
            "file accesses: {}; at most {} records per run (repeats in a row are one record and a count), then {}",
            match p.record_files {
                super::RecordFiles::All => "all",
                super::RecordFiles::Writes => "writes",
                super::RecordFiles::None => "none",
            },
            p.records.max,
            match p.records.on_overflow {
                super::Overflow::Summarize => "counted per syscall (on_overflow summarize)",
                super::Overflow::Kill => "the run ends (on_overflow kill)",
            }
        ),
    );
    let req: Vec<String> = p
        .landlock_require
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    line(
        "landlock",
        format!(
            "requires {}",
            if req.is_empty() {
                "nothing".into()
            } else {
                req.join(", ")
            }
        ),
    );
    s.trim_end().to_string()
}

//! `ninewall serve`: the policy gate as a daemon on a unix socket.
//!
//! Each connection is one client, identified by the kernel when it connected
//! (`SO_PEERCRED`, `SO_PEERGROUPS`), and served by its own thread; each
//! request it sends is one JSON line, answered by one JSON line. A request for
//! an MBU the client's worker has no role for is answered "no such
//! capability" and recorded (`gate.refused`). Granted requests run as their own
//! `ninewall run` process (see [`super::exec`]), so executions share nothing
//! and the daemon holds only the requests in flight.
//!
//! Bad input costs only the connection that sent it: a line that is not a
//! request is answered with an error; a line longer than
//! [`MAX_REQUEST_BYTES`], or one that does not arrive whole within the request
//! timeout, ends that connection. At most `max_clients` connections are
//! served at once; others are told so and closed.
//!
//! SIGTERM or SIGINT: stop accepting, let running executions finish for the
//! grace period, then SIGTERM their supervisors (which end their sandboxes and
//! record the end), and exit once every answer is written.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::exec::{Execution, LineReader, NextLine, WireRequest, WireResponse, Workspace, MAX_REQUEST_BYTES};
use super::{Gate, Peer, Worker};
use crate::provenance::Lineage;
use crate::provenance::{self, AuditLog};
use crate::sys;

/// How the daemon is run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The socket path.
    pub socket: PathBuf,
    /// Its mode (the gate, not the mode, decides who may run what).
    pub socket_mode: u32,
    /// The provenance log.
    pub audit_log: PathBuf,
    /// How long running executions may take to finish after SIGTERM.
    pub grace: Duration,
    /// How long a request line may take to arrive, and a client may stay idle.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_clients: usize,
}

struct Shared {
    gate: Gate,
    cfg: ServeConfig,
    log: Mutex<AuditLog>,
    /// The same log, as the executions' supervisors inherit it.
    children_log: AuditLog,
    draining: AtomicBool,
    /// The supervisors of running executions.
    running: Mutex<HashMap<u64, sys::ProcessHandle>>,
    /// Open connections, to end their reads when draining.
    clients: Mutex<HashMap<u64, UnixStream>>,
    next: AtomicU64,
}

fn say(m: impl std::fmt::Display) {
    eprintln!("ninewall serve: {m}");
}

/// Runs the daemon until SIGTERM or SIGINT; returns the exit code.
pub fn serve(gate: Gate, cfg: ServeConfig) -> i32 {
    sys::keep_heap_flat();
    // Signals first, before any thread exists, so every thread inherits the
    // mask and only the signalfd sees them.
    let signals = [libc::SIGTERM, libc::SIGINT];
    let sigfd = match sys::block_signals(&signals).and_then(|()| sys::signalfd(&signals)) {
        Ok(fd) => fd,
        Err(e) => {
            say(format!("cannot take SIGTERM and SIGINT: {e}"));
            return crate::exit::SANDBOX;
        }
    };
    let log = match AuditLog::open(&cfg.audit_log) {
        Ok(l) => l,
        Err(e) => {
            say(format!("{e}; not serving"));
            return crate::exit::SANDBOX;
        }
    };
    let children_log = match log.try_clone() {
        Ok(l) => l,
        Err(e) => {
            say(format!("{e}; not serving"));
            return crate::exit::SANDBOX;
        }
    };
    let listener = match bind(&cfg.socket, cfg.socket_mode) {
        Ok(l) => l,
        Err(e) => {
            say(format!("{}: {e}", cfg.socket.display()));
            return crate::exit::SANDBOX;
        }
    };
    say(format!(
        "serving {} workers on {} (log {})",
        gate.workers.len(),
        cfg.socket.display(),
        cfg.audit_log.display()
    ));
    let shared = Arc::new(Shared {
        gate,
        cfg,
        log: Mutex::new(log),
        children_log,
        draining: AtomicBool::new(false),
        running: Mutex::new(HashMap::new()),
        clients: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
    });
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if let Err(e) = sys::poll_readable(&mut fds, 1000) {
            say(format!("poll: {e}"));
            break;
        }
        threads.retain(|t| !t.is_finished());
        if fds[1].revents != 0 && sys::read_signal(sigfd.as_raw_fd()).is_some() {
            break;
        }
        if fds[0].revents == 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else { continue };
        if threads.len() >= shared.cfg.max_clients {
            let mut s = stream;
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = s.write_all(
                WireResponse::refused("busy: too many clients; try again")
                    .line()
                    .as_bytes(),
            );
            continue;
        }
        let shared = Arc::clone(&shared);
        match std::thread::Builder::new().spawn(move || client(&shared, stream)) {
            Ok(t) => threads.push(t),
            Err(e) => say(format!("cannot start a client thread: {e}")),
        }
    }
    drain(&shared, listener, threads);
    0
}

fn drain(shared: &Shared, listener: UnixListener, threads: Vec<std::thread::JoinHandle<()>>) {
    shared.draining.store(true, Ordering::SeqCst);
    // No more connections: the socket goes, and what the kernel queued with it.
    drop(listener);
    let _ = std::fs::remove_file(&shared.cfg.socket);
    if let Ok(clients) = shared.clients.lock() {
        for s in clients.values() {
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
    }
    let running = || {
        shared
            .running
            .lock()
            .map(|r| r.values().cloned().collect::<Vec<sys::ProcessHandle>>())
            .unwrap_or_default()
    };
    say(format!("draining: {} executions running", running().len()));
    let deadline = Instant::now() + shared.cfg.grace;
    while !running().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = running();
    if !left.is_empty() {
        say(format!("grace period over: ending {} executions", left.len()));
        for supervisor in &left {
            supervisor.signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !running().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for supervisor in running() {
            supervisor.signal(libc::SIGKILL);
        }
    }
    for t in threads {
        let _ = t.join();
    }
    say("stopped");
}

/// Binds the socket, replacing a stale one (a socket nobody listens on) and
/// refusing to replace anything else.
fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; not replacing it",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon is listening on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn client(shared: &Shared, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let id = shared.next.fetch_add(1, Ordering::Relaxed);
    let fd = stream.as_raw_fd();
    let peer = match sys::peer_credentials(fd) {
        Ok((uid, gid, _pid)) => Peer {
            uid,
            gid,
            groups: sys::peer_groups(fd).unwrap_or_default(),
        },
        Err(_) => return,
    };
    let _ = stream.set_write_timeout(Some(shared.cfg.request_timeout));
    let Ok(mut writer) = stream.try_clone() else { return };
    if let (Ok(mut clients), Ok(c)) = (shared.clients.lock(), stream.try_clone()) {
        clients.insert(id, c);
    }
    let worker = shared.gate.worker_for(&peer).cloned();
    let mut reader = LineReader::new(stream);
    loop {
        if shared.draining.load(Ordering::SeqCst) {
            break;
        }
        let (answer, close) = match reader.next_line(MAX_REQUEST_BYTES, Some(shared.cfg.request_timeout)) {
            NextLine::Line(line) => (request(shared, &peer, worker.as_ref(), &line), false),
            NextLine::TooLong => (
                WireResponse::refused(format!("request longer than {MAX_REQUEST_BYTES} bytes")),
                true,
            ),
            NextLine::Incomplete => (
                WireResponse::refused(format!(
                    "request incomplete after {} s",
                    shared.cfg.request_timeout.as_secs()
                )),
                true,
            ),
            NextLine::Truncated => (
                WireResponse::refused("request incomplete: the connection ended within a line"),
                true,
            ),
            NextLine::End | NextLine::Idle => break,
        };
        if writer.write_all(answer.line().as_bytes()).is_err() || close {
            break;
        }
    }
    if let Ok(mut clients) = shared.clients.lock() {
        clients.remove(&id);
    }
}

fn request(shared: &Shared, peer: &Peer, worker: Result<&Worker, &super::Refusal>, line: &[u8]) -> WireResponse {
    let req: WireRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return WireResponse::refused(format!("not a request: {e}")),
    };
    let refuse = |why: String, worker: Option<&str>| {
        record_refusal(shared, peer, worker, &req.mbu, &why);
        WireResponse::refused(why)
    };
    let worker = match worker {
        Ok(w) => w,
        Err(r) => return refuse(r.to_string(), None),
    };
    let grant = match shared.gate.grant(worker, &req.mbu) {
        Ok(g) => g,
        Err(r) => return refuse(r.to_string(), Some(&worker.name)),
    };
    // Opened here, once, as the client: the supervisor gets this descriptor
    // and resolves no path again.
    let workspace = match req.workspace.as_deref().map(|ws| open_workspace(ws, peer)).transpose() {
        Ok(w) => w,
        Err(why) => return refuse(format!("workspace: {why}"), Some(&worker.name)),
    };
    // The profile itself is loaded and validated once, by the supervisor:
    // the gate decided by role, not by its contents.
    let lineage = Lineage {
        parent: None,
        worker: Some(grant.worker.clone()),
        role: Some(grant.role.clone()),
        client_uid: Some(peer.uid),
        depth: 0,
        expect_profile: None,
    };
    let exec = Execution {
        profile: &grant.profile,
        args: &req.args,
        stdin: req.stdin.as_bytes(),
        workspace: workspace.as_ref().map(|(path, fd)| Workspace { path, fd: fd.as_fd() }),
        audit_log: &shared.children_log,
        lineage: &lineage,
        output_cap: grant.output_limit,
    };
    let started = match exec.start() {
        Ok(s) => s,
        Err(e) => return WireResponse::refused(format!("cannot start the supervisor: {e}")),
    };
    let key = shared.next.fetch_add(1, Ordering::Relaxed);
    if let (Ok(mut r), Some(h)) = (shared.running.lock(), started.handle()) {
        r.insert(key, h);
    }
    let answer = started.finish();
    if let Ok(mut r) = shared.running.lock() {
        r.remove(&key);
    }
    answer
}

/// Opens the workspace a client names, as that client: with its uid, gid
/// and groups, following no symlink in any component. So a directory the
/// client could not open itself is refused with the error the client would
/// get itself (a path below a directory it may not search is "Permission
/// denied" whether or not it exists), and what the daemon's root could see
/// beyond that is never told. It must then be the client's own directory.
fn open_workspace(dir: &Path, peer: &Peer) -> Result<(PathBuf, OwnedFd), String> {
    use std::os::unix::ffi::OsStrExt;
    if !dir.is_absolute() {
        return Err(format!("{}: name it by its absolute path", dir.display()));
    }
    if dir.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("{}: name it without '..'", dir.display()));
    }
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{}: contains a NUL byte", dir.display()))?;
    let (euid, _) = sys::effective_ids();
    let opened = if euid == 0 {
        sys::open_dir(
            &c_dir,
            Some(sys::Person {
                uid: peer.uid,
                gid: peer.gid,
                groups: &peer.groups,
            }),
        )
    } else if euid == peer.uid {
        sys::open_dir(&c_dir, None)
    } else {
        return Err("this daemon does not run as root: it opens workspaces for its own user only".into());
    };
    let fd = opened.map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => format!("{}: a component of it is a symlink; name the real path", dir.display()),
        Some(libc::ENOTDIR) => format!("{}: is not a directory", dir.display()),
        _ => format!("{}: cannot be opened: {e}", dir.display()),
    })?;
    let meta = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| format!("{}: cannot be read: {e}", dir.display()))?;
    if meta.uid() != peer.uid {
        return Err(format!(
            "{} is owned by uid {}, not by the client (uid {})",
            dir.display(),
            meta.uid(),
            peer.uid
        ));
    }
    Ok((dir.to_path_buf(), fd))
}

fn record_refusal(shared: &Shared, peer: &Peer, worker: Option<&str>, mbu: &str, why: &str) {
    let record = json!({
        "kind": "gate.refused",
        "time": provenance::now_rfc3339(),
        "client": {"uid": peer.uid, "gid": peer.gid},
        "worker": worker,
        "mbu": mbu,
        "reason": why,
    });
    let written = shared.log.lock().map(|mut l| l.append(record));
    if !matches!(written, Ok(Ok(()))) {
        say(format!(
            "the refusal of {mbu} for uid {} could not be recorded",
            peer.uid
        ));
    }
}

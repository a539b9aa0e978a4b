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

use super::exec::{
    Execution, LineReader, NextLine, Started, Streamed, WarmRequest, WireRequest, WireResponse, Workspace,
    MAX_REQUEST_BYTES, V1_OUTPUT_CAP,
};
use super::warm::Pool;
use super::{Gate, Peer, Worker};
use crate::provenance::Lineage;
use crate::provenance::{self, AuditLog};
use crate::sandbox::cgroup::CgroupPool;
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
    /// Connections of one client uid served at once.
    pub max_clients_per_uid: usize,
    /// Whether the socket may be in a directory others can write.
    pub socket_in_shared_dir: bool,
    /// Warm sandboxes kept per MBU the policy's `[warm]` table does not
    /// name (see [`super::warm`]).
    pub warm: usize,
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
    /// Open connections per client uid.
    per_uid: Mutex<HashMap<u32, usize>>,
    /// How many refusals each client uid may still have recorded one by one.
    refusals: Mutex<HashMap<u32, RefusalBudget>>,
    /// How many records of its own each client uid may still append.
    agent_records: Mutex<HashMap<u32, RefusalBudget>>,
    next: AtomicU64,
    /// Whether the daemon made its socket (and so removes it), rather than
    /// being handed it by socket activation.
    bound_here: bool,
    /// The warm sandboxes.
    pool: Pool,
    /// The cgroups lent to supervisors (cgroup v1 only; `None`: each
    /// supervisor makes its own).
    cgroups: Option<Arc<CgroupPool>>,
}

/// The most cgroups the daemon keeps to lend (cgroup v1): past it, a
/// supervisor makes its own. Each idle one costs the kernel a memory
/// cgroup's per-CPU state.
const MOST_CGROUPS: usize = 64;

fn say(m: impl std::fmt::Display) {
    eprintln!("ninewall serve: {m}");
}

/// The listening socket systemd passed, when the daemon was started by
/// socket activation (`LISTEN_PID` is this process, `LISTEN_FDS=1`: the
/// socket is descriptor 3); `None` when it was not.
pub fn activated_listener() -> Result<Option<UnixListener>, String> {
    const FIRST: i32 = 3;
    let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<i32>().ok()) == Some(sys::getpid());
    let Some(count) = std::env::var("LISTEN_FDS").ok().filter(|_| ours) else {
        return Ok(None);
    };
    if count != "1" {
        return Err(format!(
            "socket activation passed LISTEN_FDS={count}; give the daemon exactly one socket"
        ));
    }
    sys::take_activated_listener(FIRST)
        .map(Some)
        .map_err(|e| format!("socket activation: {e}"))
}

/// Tells the service manager how the daemon is (`sd_notify`): `READY=1`
/// once it serves, `STOPPING=1` when it drains. Nothing without
/// `NOTIFY_SOCKET`.
fn notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr)),
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        say(format!("NOTIFY_SOCKET: {e}"));
    }
}

/// Runs the daemon until SIGTERM or SIGINT; returns the exit code. With
/// `activated`, it serves that socket (socket activation) and leaves its
/// path alone; else it binds `cfg.socket`.
pub fn serve(gate: Gate, cfg: ServeConfig, activated: Option<UnixListener>) -> i32 {
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
    let bound_here = activated.is_none();
    let listener = match activated {
        Some(l) => match l.set_nonblocking(true) {
            Ok(()) => l,
            Err(e) => {
                say(format!("the activated socket: {e}"));
                return crate::exit::SANDBOX;
            }
        },
        None => match bind(&cfg.socket, cfg.socket_mode, cfg.socket_in_shared_dir) {
            Ok(l) => l,
            Err(e) => {
                say(format!("{}: {e}", cfg.socket.display()));
                return crate::exit::SANDBOX;
            }
        },
    };
    say(format!(
        "serving {} workers on {} (log {})",
        gate.workers.len(),
        cfg.socket.display(),
        cfg.audit_log.display()
    ));
    let pool = Pool::new(&gate, cfg.warm);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // As many as run at once, usually: more are made while all are lent.
    let cgroups = CgroupPool::new(&crate::host::Cgroups::probe(), (4 * cpus).clamp(8, 32), MOST_CGROUPS);
    let shared = Arc::new(Shared {
        gate,
        cfg,
        log: Mutex::new(log),
        children_log,
        draining: AtomicBool::new(false),
        running: Mutex::new(HashMap::new()),
        clients: Mutex::new(HashMap::new()),
        per_uid: Mutex::new(HashMap::new()),
        refusals: Mutex::new(HashMap::new()),
        agent_records: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        bound_here,
        pool,
        cgroups,
    });
    let warmer = start_warmer(&shared);
    notify("READY=1");
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
        // Who it is, as the kernel recorded when it connected.
        let fd = stream.as_raw_fd();
        let Ok((uid, gid, _pid)) = sys::peer_credentials(fd) else {
            continue;
        };
        let peer = Peer {
            uid,
            gid,
            groups: sys::peer_groups(fd).unwrap_or_default(),
        };
        if threads.len() >= shared.cfg.max_clients {
            refuse_connection(stream, "busy: too many clients; try again");
            continue;
        }
        let Some(slot) = Slot::take(&shared, uid) else {
            refuse_connection(
                stream,
                &format!(
                    "busy: uid {uid} already has {} connections open (--max-clients-per-uid); close one",
                    shared.cfg.max_clients_per_uid
                ),
            );
            continue;
        };
        let shared = Arc::clone(&shared);
        match std::thread::Builder::new().spawn(move || client(&shared, stream, &peer, slot)) {
            Ok(t) => threads.push(t),
            Err(e) => say(format!("cannot start a client thread: {e}")),
        }
    }
    drain(&shared, listener, threads, warmer);
    0
}

/// The thread that keeps the warm sandboxes ready (none if no MBU keeps
/// any). The machine is busy while as many executions run as it has CPUs.
fn start_warmer(shared: &Arc<Shared>) -> Option<std::thread::JoinHandle<()>> {
    if shared.pool.is_empty() {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new().name("warm".into()).spawn(move || {
        let busy = || shared.running.lock().map_or(true, |r| r.len() >= cpus);
        shared
            .pool
            .keep_filled(&shared.children_log, shared.cgroups.as_ref(), &busy, &|m| say(m));
    });
    match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            say(format!(
                "cannot start the warm sandboxes' thread ({e}); every request starts cold"
            ));
            None
        }
    }
}

fn drain(
    shared: &Shared,
    listener: UnixListener,
    threads: Vec<std::thread::JoinHandle<()>>,
    warmer: Option<std::thread::JoinHandle<()>>,
) {
    shared.draining.store(true, Ordering::SeqCst);
    notify("STOPPING=1");
    // No more connections: the socket goes, and what the kernel queued with
    // it (an activated socket's path is the service manager's).
    drop(listener);
    if shared.bound_here {
        let _ = std::fs::remove_file(&shared.cfg.socket);
    }
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
    // Last: the warm supervisors are its children, and so were the ones
    // taken for requests, which end with it.
    shared.pool.stop();
    if let Some(t) = warmer {
        let _ = t.join();
    }
    if let Some(cgroups) = &shared.cgroups {
        cgroups.remove_all();
    }
    record_suppressed(shared);
    say("stopped");
}

/// Binds the socket, replacing a stale one of ours (a socket nobody listens
/// on) and refusing to replace anything else. Its directory must be one that
/// only we (and root) can write, unless `shared_dir_ok`: in any other,
/// another user could have put a listener there first, or could replace ours
/// after, and clients would talk to it.
fn bind(path: &Path, mode: u32, shared_dir_ok: bool) -> std::io::Result<UnixListener> {
    let refuse = |kind, why: String| Err(std::io::Error::new(kind, why));
    let (me, _) = sys::effective_ids();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_meta = std::fs::metadata(dir)?;
    if !shared_dir_ok && ((dir_meta.uid() != me && dir_meta.uid() != 0) || dir_meta.mode() & 0o022 != 0) {
        return refuse(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "its directory {} can be written by others (owner uid {}, mode {:o}), who could take the socket's place; \
                 use a directory only you can write, or --socket-in-shared-dir",
                dir.display(),
                dir_meta.uid(),
                dir_meta.mode() & 0o7777
            ),
        );
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return refuse(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; not replacing it".into(),
            );
        }
        if meta.uid() != me {
            return refuse(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "exists and belongs to uid {}, not to this daemon; not using it",
                    meta.uid()
                ),
            );
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

/// Answers a connection that is not served once, without waiting for the
/// client (a fresh socket's buffer takes one line), and closes it.
fn refuse_connection(mut stream: UnixStream, why: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(WireResponse::refused(why).line().as_bytes());
}

/// One of a client uid's connections, given back when dropped.
struct Slot {
    shared: Arc<Shared>,
    uid: u32,
}

impl Slot {
    /// A slot for `uid`, if it holds fewer than its share.
    fn take(shared: &Arc<Shared>, uid: u32) -> Option<Slot> {
        let mut per_uid = shared.per_uid.lock().ok()?;
        let held = per_uid.entry(uid).or_insert(0);
        if *held >= shared.cfg.max_clients_per_uid {
            return None;
        }
        *held += 1;
        Some(Slot {
            shared: Arc::clone(shared),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut per_uid) = self.shared.per_uid.lock() {
            if let Some(held) = per_uid.get_mut(&self.uid) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    per_uid.remove(&self.uid);
                }
            }
        }
    }
}

/// Serves one connection: its requests one after another, until it ends,
/// idles past the request timeout, or is refused. A connection that is no
/// worker's, or that sends what is not a request, is answered once and
/// closed; a request the gate refuses is answered, and the next may follow.
fn client(shared: &Shared, stream: UnixStream, peer: &Peer, slot: Slot) {
    let _slot = slot;
    let _ = stream.set_nonblocking(false);
    let id = shared.next.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_write_timeout(Some(shared.cfg.request_timeout));
    let Ok(mut writer) = stream.try_clone() else { return };
    if let (Ok(mut clients), Ok(c)) = (shared.clients.lock(), stream.try_clone()) {
        clients.insert(id, c);
    }
    let worker = match shared.gate.worker_for(peer) {
        Ok(w) => w.clone(),
        Err(refusal) => {
            // Refused as soon as it connects: nothing it sends matters.
            let why = refusal.to_string();
            record_refusal(shared, peer, None, None, &why);
            let _ = writer.write_all(WireResponse::refused(why).line().as_bytes());
            close_after_answer(&writer);
            forget(shared, id);
            return;
        }
    };
    let mut reader = LineReader::new(stream);
    loop {
        if shared.draining.load(Ordering::SeqCst) {
            break;
        }
        let (answer, close) = match reader.next_line(MAX_REQUEST_BYTES, Some(shared.cfg.request_timeout)) {
            NextLine::Line(line) => match request(shared, peer, &worker, &line, &writer) {
                (Some(answer), close) => (answer, close),
                // Answered as it ran (protocol 2).
                (None, false) => continue,
                (None, true) => break,
            },
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
        if answer.write_to(&writer).is_err() {
            break;
        }
        if close {
            close_after_answer(&writer);
            break;
        }
    }
    forget(shared, id);
}

/// Ends a connection whose last answer is written: the client sees the end
/// after it, and what it still sends is read and dropped for a moment
/// (bounded in bytes and time), so that closing does not turn that answer
/// into a reset (a unix socket closed with unread data resets its peer).
fn close_after_answer(stream: &UnixStream) {
    use std::io::Read;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = MAX_REQUEST_BYTES;
    let mut buf = [0u8; 16 * 1024];
    let mut reader = stream;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || reader.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// The connection `id` is closed: draining need not end its reads.
fn forget(shared: &Shared, id: u64) {
    if let Ok(mut clients) = shared.clients.lock() {
        clients.remove(&id);
    }
}

/// One request line: its answer (`None` when it was answered as it ran,
/// protocol 2), and whether the connection ends with it (a line that is not
/// a request, a client that hung up).
fn request(
    shared: &Shared,
    peer: &Peer,
    worker: &Worker,
    line: &[u8],
    client: &UnixStream,
) -> (Option<WireResponse>, bool) {
    if is_agent_record(line) {
        return match serde_json::from_slice::<AgentRecordRequest>(line) {
            Ok(r) => (Some(append_agent_record(shared, peer, worker, r.record)), false),
            Err(e) => (Some(WireResponse::refused(format!("not a record: {e}"))), true),
        };
    }
    let req: WireRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return (Some(WireResponse::refused(format!("not a request: {e}"))), true),
    };
    if let Some(why) = req.caused_by.as_deref().and_then(bad_record_id) {
        return (Some(WireResponse::refused(format!("caused_by: {why}"))), false);
    }
    if !matches!(req.v, None | Some(1 | 2)) {
        let why = format!("protocol version {} is not served; valid: 1, 2", req.v.unwrap_or(0));
        return (Some(WireResponse::refused(why)), true);
    }
    let answered = answer(shared, peer, worker, &req, client);
    let mbu = provenance::bounded_text(&provenance::bounded(&req.mbu));
    match &answered {
        (Some(a), _) if a.exec.is_some() || a.exit_code.is_some() => tracing::info!(
            uid = peer.uid,
            worker = %worker.name,
            mbu = %mbu,
            exec = a.exec.as_deref().unwrap_or("-"),
            exit_code = a.exit_code.unwrap_or(-1),
            limit = a.limit.as_deref().unwrap_or("-"),
            "ran"
        ),
        (Some(a), _) => tracing::info!(
            uid = peer.uid,
            worker = %worker.name,
            mbu = %mbu,
            error = a.error.as_deref().unwrap_or("-"),
            "refused"
        ),
        (None, _) => tracing::info!(uid = peer.uid, worker = %worker.name, mbu = %mbu, "cancelled: the client hung up"),
    }
    answered
}

fn answer(
    shared: &Shared,
    peer: &Peer,
    worker: &Worker,
    req: &WireRequest,
    client: &UnixStream,
) -> (Option<WireResponse>, bool) {
    let flight = match start(shared, peer, worker, req) {
        Ok(f) => f,
        Err(refusal) => return (Some(WireResponse::refused(refusal)), false),
    };
    if req.v != Some(2) {
        return (Some(flight.finish()), false);
    }
    // Protocol 2: a first line that says it runs, its output in frames,
    // then the end line (the caller writes it).
    if WireResponse::started().write_to(client).is_err() {
        return (None, true);
    }
    match flight.stream(client, &|| shared.draining.load(Ordering::SeqCst)) {
        Streamed::Ended(mut end) => {
            end.v = Some(2);
            (Some(end), false)
        }
        Streamed::ClientGone => (None, true),
    }
}

/// An execution started for a client: known to the daemon (to end it when
/// draining) until it is collected.
struct InFlight<'a> {
    shared: &'a Shared,
    key: u64,
    started: Option<Started>,
}

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared, started: Started) -> InFlight<'a> {
        let key = shared.next.fetch_add(1, Ordering::Relaxed);
        if let (Ok(mut r), Some(h)) = (shared.running.lock(), started.handle()) {
            r.insert(key, h);
        }
        InFlight {
            shared,
            key,
            started: Some(started),
        }
    }

    /// Protocol 1: the whole answer at the end.
    fn finish(mut self) -> WireResponse {
        self.started
            .take()
            .map_or_else(|| WireResponse::refused("no execution"), Started::finish)
    }

    /// Protocol 2: the output as it comes.
    fn stream(mut self, client: &UnixStream, draining: &dyn Fn() -> bool) -> Streamed {
        match self.started.take() {
            Some(s) => s.stream(client, draining),
            None => Streamed::ClientGone,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.shared.running.lock() {
            r.remove(&self.key);
        }
        self.shared.pool.nudge();
    }
}

/// Checks a request with the gate and starts its supervisor; or why not
/// (a refusal is recorded).
fn start<'a>(shared: &'a Shared, peer: &Peer, worker: &Worker, req: &WireRequest) -> Result<InFlight<'a>, String> {
    let refuse = |why: String, worker: Option<&str>| {
        record_refusal(shared, peer, worker, Some(&req.mbu), &why);
        // What the client chose comes back bounded too.
        if why.len() > provenance::RECORDED_STRING_MAX * 4 {
            provenance::bounded_text(&provenance::bounded(&why))
        } else {
            why
        }
    };
    let grant = match shared.gate.grant(worker, &req.mbu) {
        Ok(g) => g,
        Err(r) => return Err(refuse(r.to_string(), Some(&worker.name))),
    };
    let stdin = match req.stdin_bytes() {
        Ok(b) => b,
        Err(why) => return Err(refuse(why, Some(&worker.name))),
    };
    // Opened here, once, as the client: the supervisor gets this descriptor
    // and resolves no path again.
    let workspace = match req.workspace.as_deref().map(|ws| open_workspace(ws, peer)).transpose() {
        Ok(w) => w,
        Err(why) => return Err(refuse(format!("workspace: {why}"), Some(&worker.name))),
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
        caused_by: req.caused_by.clone(),
    };
    let cap = grant.output_limit.min(V1_OUTPUT_CAP);
    if let Some(started) = start_warm(shared, req, workspace.as_ref(), &lineage, &stdin, cap) {
        return Ok(InFlight::new(shared, started));
    }
    let exec = Execution {
        profile: &grant.profile,
        args: &req.args,
        stdin: &stdin,
        workspace: workspace.as_ref().map(|(path, fd)| Workspace { path, fd: fd.as_fd() }),
        audit_log: &shared.children_log,
        lineage: &lineage,
        // Protocol 1 holds the output for its one answer line: bounded.
        output_cap: cap,
        cgroups: shared.cgroups.as_ref(),
    };
    match exec.start() {
        Ok(started) => Ok(InFlight::new(shared, started)),
        Err(e) => Err(format!("cannot start the supervisor: {e}")),
    }
}

/// The request, given to a warm sandbox of its MBU if one is ready and
/// can take it; `None`: it starts cold. A daemon not running as root binds
/// a client's workspace by its path, which only a sandbox not yet built can.
fn start_warm(
    shared: &Shared,
    req: &WireRequest,
    workspace: Option<&(PathBuf, OwnedFd)>,
    lineage: &Lineage,
    stdin: &[u8],
    cap: u64,
) -> Option<Started> {
    if workspace.is_some() && sys::effective_ids().0 != 0 {
        return None;
    }
    let warm = shared.pool.take(&req.mbu)?;
    let request = WarmRequest {
        args: req.args.clone(),
        workspace: workspace.map(|(path, _)| path.clone()),
        lineage: lineage.clone(),
    };
    match warm.take(&request, workspace.map(|(_, fd)| fd.as_fd()), stdin, cap) {
        Ok(started) => Some(started),
        Err(why) => {
            say(format!(
                "a warm sandbox of {} did not take a request ({why}); it starts cold",
                req.mbu
            ));
            None
        }
    }
}

/// Opens the workspace a client names, as that client: with its uid, gid
/// and groups, following no symlink in any component, so that nothing the
/// client could not open itself is ever opened for it. It must then be the
/// client's own directory. Missing, someone else's, not a directory, or
/// below a directory the client may not search: one answer for all, so the
/// answer tells nothing about a path beyond "not yours to use".
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
    let not_yours = || format!("{}: not a directory of yours that you can open", dir.display());
    let fd = opened.map_err(|e| match e.raw_os_error() {
        // Reached only through components the client may search: it can
        // see the symlink itself.
        Some(libc::ELOOP) => format!("{}: a component of it is a symlink; name the real path", dir.display()),
        Some(libc::ENOENT | libc::EACCES | libc::EPERM | libc::ENOTDIR) => not_yours(),
        _ => format!("{}: cannot be opened: {e}", dir.display()),
    })?;
    let meta = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| format!("{}: cannot be read: {e}", dir.display()))?;
    if meta.uid() != peer.uid {
        return Err(not_yours());
    }
    Ok((dir.to_path_buf(), fd))
}

/// Whether a line is an agent record (`{"record": …}`) rather than a run
/// request.
fn is_agent_record(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).is_ok_and(|m| m.contains_key("record"))
}

/// `{"record": …}`: the agent's own event, for the chain.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentRecordRequest {
    record: AgentRecord,
}

/// What a worker may add to the log about itself: its model calls and
/// notes. Hashes and sizes, never the prompt or response themselves.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
enum AgentRecord {
    /// One call to a model.
    #[serde(rename = "llm.call")]
    LlmCall {
        model: String,
        #[serde(default)]
        purpose: Option<String>,
        prompt_sha256: String,
        response_sha256: String,
        prompt_bytes: u64,
        response_bytes: u64,
        #[serde(default)]
        tokens_in: Option<u64>,
        #[serde(default)]
        tokens_out: Option<u64>,
        #[serde(default)]
        latency_ms: Option<u64>,
    },
    /// Anything else the agent wants on the record.
    #[serde(rename = "agent.note")]
    Note { text: String },
}

/// Why `id` cannot be a record id (`rec-…`, as the daemon hands them out).
fn bad_record_id(id: &str) -> Option<&'static str> {
    let ok = id.len() <= 96
        && id.starts_with("rec-")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    (!ok).then_some("not a record id the daemon gave (rec-…)")
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Appends a worker's record to the chain (who sent it, as the kernel says,
/// and what it chose, bounded), within its uid's budget; answers its id.
fn append_agent_record(shared: &Shared, peer: &Peer, worker: &Worker, record: AgentRecord) -> WireResponse {
    let allowed = shared.agent_records.lock().map_or(true, |mut budgets| {
        budgets
            .entry(peer.uid)
            .or_insert_with(|| RefusalBudget {
                tokens: AGENT_RECORD_BURST,
                refilled: Instant::now(),
                suppressed: 0,
            })
            .spend_at(AGENT_RECORD_BURST, AGENT_RECORDS_PER_SECOND)
            .is_some()
    });
    if !allowed {
        return WireResponse::refused(format!(
            "too many records: at most {AGENT_RECORDS_PER_SECOND} a second after a burst of {AGENT_RECORD_BURST}"
        ));
    }
    let id = format!("rec-{}", provenance::new_exec_id());
    let mut value = match record {
        AgentRecord::LlmCall {
            model,
            purpose,
            prompt_sha256,
            response_sha256,
            prompt_bytes,
            response_bytes,
            tokens_in,
            tokens_out,
            latency_ms,
        } => {
            if !is_sha256(&prompt_sha256) || !is_sha256(&response_sha256) {
                return WireResponse::refused("prompt_sha256 and response_sha256: 64 hex digits each");
            }
            json!({
                "kind": "llm.call",
                "model": provenance::bounded(&model),
                "purpose": purpose.as_deref().map(provenance::bounded),
                "prompt_sha256": prompt_sha256.to_ascii_lowercase(),
                "response_sha256": response_sha256.to_ascii_lowercase(),
                "prompt_bytes": prompt_bytes,
                "response_bytes": response_bytes,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "latency_ms": latency_ms,
            })
        }
        AgentRecord::Note { text } => json!({"kind": "agent.note", "text": provenance::bounded(&text)}),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), json!(id));
        map.insert("time".into(), json!(provenance::now_rfc3339()));
        map.insert("client".into(), json!({"uid": peer.uid, "gid": peer.gid}));
        map.insert("worker".into(), json!(worker.name));
    }
    match shared.log.lock().map(|mut l| l.append(value)) {
        Ok(Ok(())) => WireResponse {
            ok: true,
            record: Some(id),
            ..WireResponse::default()
        },
        _ => WireResponse::refused("the record could not be written to the log"),
    }
}

/// Agent records of one client uid: a burst, then a steady rate.
const AGENT_RECORD_BURST: f64 = 1000.0;
const AGENT_RECORDS_PER_SECOND: f64 = 100.0;

/// Refusals of one client uid recorded one by one: a burst of
/// [`REFUSAL_BURST`], then one a second; the others are counted, and the
/// count goes into the next record (or a record of its own when the daemon
/// stops).
struct RefusalBudget {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

const REFUSAL_BURST: f64 = 10.0;

impl RefusalBudget {
    /// Whether this refusal is recorded; if so, how many were not since.
    fn spend(&mut self) -> Option<u64> {
        self.spend_at(REFUSAL_BURST, 1.0)
    }

    /// As [`RefusalBudget::spend`], for a budget of `burst` refilled at
    /// `rate` a second.
    fn spend_at(&mut self, burst: f64, rate: f64) -> Option<u64> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Records a refusal (`gate.refused`), what the client chose in it bounded
/// ([`provenance::bounded`]), within the client's [`RefusalBudget`].
fn record_refusal(shared: &Shared, peer: &Peer, worker: Option<&str>, mbu: Option<&str>, why: &str) {
    let suppressed = match shared.refusals.lock() {
        Ok(mut budgets) => budgets
            .entry(peer.uid)
            .or_insert_with(|| RefusalBudget {
                tokens: REFUSAL_BURST,
                refilled: Instant::now(),
                suppressed: 0,
            })
            .spend(),
        Err(_) => Some(0),
    };
    let Some(suppressed) = suppressed else { return };
    let record = json!({
        "kind": "gate.refused",
        "time": provenance::now_rfc3339(),
        "client": {"uid": peer.uid, "gid": peer.gid},
        "worker": worker,
        "mbu": mbu.map(provenance::bounded),
        "reason": provenance::bounded(why),
        "suppressed_before": (suppressed > 0).then_some(suppressed),
    });
    append_refusal(shared, record, peer.uid);
}

/// When the daemon stops: the refusals not recorded one by one since each
/// client's last record, as one record per client.
fn record_suppressed(shared: &Shared) {
    let pending: Vec<(u32, u64)> = match shared.refusals.lock() {
        Ok(mut budgets) => budgets
            .iter_mut()
            .filter(|(_, b)| b.suppressed > 0)
            .map(|(uid, b)| (*uid, std::mem::take(&mut b.suppressed)))
            .collect(),
        Err(_) => Vec::new(),
    };
    for (uid, n) in pending {
        let record = json!({
            "kind": "gate.refused",
            "time": provenance::now_rfc3339(),
            "client": {"uid": uid},
            "suppressed": n,
            "reason": format!("{n} more refusals of this client, past one a second, not recorded one by one"),
        });
        append_refusal(shared, record, uid);
    }
}

fn append_refusal(shared: &Shared, record: serde_json::Value, uid: u32) {
    let written = shared.log.lock().map(|mut l| l.append(record));
    if !matches!(written, Ok(Ok(()))) {
        say(format!("a refusal of uid {uid} could not be recorded"));
    }
}

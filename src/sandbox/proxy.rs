//! Wall 6, `net.mode = "proxy"`: the supervisor's egress proxy.
//!
//! The sandbox has a network namespace of its own with only `lo`; its outer
//! child listens on `127.0.0.1:3128` there and passes the listening socket
//! here. This side, in the host's network, accepts the sandbox's
//! connections, speaks HTTP (`CONNECT` and absolute-form requests) and
//! SOCKS5 (names resolved here, never inside), decides each destination by
//! `net.allow` (`policy::egress`), connects from the host's network, and
//! relays bytes, bounded per connection in bytes and time. Every connection,
//! allowed or refused, becomes a [`Connection`], handed to the supervisor's
//! loop as it ends (its wake pipe): the `net.connect` records, written while
//! the sandbox runs. Past `limits.connections`, the first refusal is a
//! record and the rest are counted.
//!
//! One thread accepts; each connection has a thread of its own (small
//! stack), at most [`MAX_ACTIVE`] at once; more wait in the listen backlog.
//! All of them poll a stop pipe whose write end the supervisor closes when
//! the sandbox has ended: nothing here outlives the execution.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::policy::egress::{self, Admitted, Host, Refusal, Rule};
use crate::policy::Limits;
use crate::sys;

/// Connections relayed at once; the rest wait to be accepted.
pub const MAX_ACTIVE: usize = 64;
/// Longest HTTP request head or SOCKS5 request read before deciding.
const MAX_HEAD: usize = 16 << 10;
/// How long a client has to say where it wants to go.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// How long one upstream connect may take.
const CONNECT_TIME: Duration = Duration::from_secs(10);
const RELAY_BUFFER: usize = 16 << 10;
/// Each thread's stack: room for glibc's resolver (getaddrinfo) with margin.
const THREAD_STACK: usize = 256 << 10;

/// One connection the sandbox asked the proxy for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// When it was accepted (since the epoch).
    pub at: Duration,
    /// How it was asked for: `connect`, `http` or `socks5`; `-` when the
    /// request was never read.
    pub protocol: &'static str,
    /// The host asked for, as the client named it (bounded); empty when
    /// none was read.
    pub host: String,
    /// The port asked for.
    pub port: u16,
    /// The address connected to, when one was.
    pub address: Option<SocketAddr>,
    /// Why it was refused; `None`: allowed and relayed.
    pub refused: Option<Refusal>,
    /// Bytes from the sandbox to the server.
    pub bytes_out: u64,
    /// Bytes from the server to the sandbox.
    pub bytes_in: u64,
    /// How long it lasted.
    pub duration_ms: u64,
    /// What ended an allowed connection: `closed`, a limit's key, or
    /// `sandbox ended`.
    pub ended: &'static str,
}

/// What the proxy did for one execution, all connections counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetReport {
    /// Every connection the sandbox opened to the proxy.
    pub total: u64,
    /// Of those, refused.
    pub refused: u64,
    /// Bytes from the sandbox, all connections.
    pub bytes_out: u64,
    /// Bytes to the sandbox, all connections.
    pub bytes_in: u64,
    /// Connections counted and not recorded one by one: refusals past
    /// `limits.connections` after the first (a flood of them is a count).
    pub unrecorded: u64,
    /// CPU time the proxy's threads spent for this execution (charged to
    /// its `cpu_seconds`, as the file recorder's is).
    pub cpu_ns: u64,
}

/// The connections ended and not yet taken by the supervisor's loop, and
/// the counts.
#[derive(Default)]
struct Ledger {
    report: NetReport,
    pending: Vec<Connection>,
    limit_recorded: bool,
}

impl Ledger {
    /// Counts `c` and keeps it for its record; true if it is the first
    /// waiting to be taken (the loop is to be woken).
    fn add(&mut self, c: Connection) -> bool {
        let r = &mut self.report;
        r.total += 1;
        r.refused += u64::from(c.refused.is_some());
        r.bytes_out += c.bytes_out;
        r.bytes_in += c.bytes_in;
        if c.refused == Some(Refusal::ConnectionLimit) {
            if self.limit_recorded {
                r.unrecorded += 1;
                return false;
            }
            self.limit_recorded = true;
        }
        self.pending.push(c);
        self.pending.len() == 1
    }
}

/// The running proxy of one execution.
pub struct Proxy {
    /// Closed to stop everything.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    ledger: Arc<Mutex<Ledger>>,
    /// Readable when connections wait to be taken.
    wake: OwnedFd,
    cpu_ns: Arc<AtomicU64>,
}

/// What every connection's thread shares.
struct Shared {
    rules: Vec<Rule>,
    limits: Limits,
    stop: OwnedFd,
    ledger: Arc<Mutex<Ledger>>,
    wake: OwnedFd,
    cpu_ns: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts the accepting thread; it waits on `handoff` for the listener
    /// the sandbox's outer child sends, and ends if none comes.
    pub fn start(handoff: OwnedFd, rules: Vec<Rule>, limits: Limits) -> std::io::Result<Proxy> {
        let (stop_r, stop_w) = sys::pipe_cloexec()?;
        let (wake_r, wake_w) = sys::pipe_cloexec()?;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            rules,
            limits,
            stop: stop_r,
            ledger: Arc::clone(&ledger),
            wake: wake_w,
            cpu_ns: Arc::clone(&cpu_ns),
        });
        let thread = std::thread::Builder::new()
            .name("nw-proxy".into())
            .stack_size(THREAD_STACK)
            .spawn(move || accept_loop(&handoff, &shared))?;
        Ok(Proxy {
            stop: Some(stop_w),
            thread: Some(thread),
            ledger,
            wake: wake_r,
            cpu_ns,
        })
    }

    /// Closes the stop pipe (every thread sees it) and waits for the
    /// accepting thread, which waits for the connections' threads.
    fn stop_and_join(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// CPU time its threads have spent so far.
    pub fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Ordering::Relaxed)
    }

    /// Readable when ended connections wait for [`Proxy::take`].
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The connections that ended since the last call, for their records.
    pub fn take(&self) -> Vec<Connection> {
        let mut buf = [0u8; 64];
        let _ = sys::read_once(self.wake.as_raw_fd(), &mut buf);
        self.ledger
            .lock()
            .map(|mut l| std::mem::take(&mut l.pending))
            .unwrap_or_default()
    }

    /// Stops accepting, ends every connection still open (the sandbox is
    /// gone), waits for them; the connections not yet taken, and the counts.
    pub fn finish(mut self) -> (Vec<Connection>, NetReport) {
        self.stop_and_join();
        let cpu_ns = self.cpu_ns();
        self.ledger
            .lock()
            .map(|mut l| (std::mem::take(&mut l.pending), NetReport { cpu_ns, ..l.report }))
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A `poll` entry waiting for `fd` to be readable (-1: ignored).
fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Milliseconds from now until `deadline`, for `poll`.
fn ms_until(deadline: Instant) -> i32 {
    i32::try_from(deadline.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(i32::MAX)
}

fn stopped(stop: RawFd) -> bool {
    let mut p = [readable(stop)];
    sys::poll_readable(&mut p, 0).is_ok() && p[0].revents != 0
}

/// Waits until `fd` is readable (true), the stop pipe closes or `deadline`
/// (if any) passes (false).
fn wait_readable(fd: RawFd, stop: RawFd, deadline: Option<Instant>) -> bool {
    let mut p = [readable(fd), readable(stop)];
    let ms = deadline.map_or(-1, ms_until);
    sys::poll_readable(&mut p, ms).is_ok() && p[1].revents == 0 && p[0].revents != 0
}

fn accept_loop(handoff: &OwnedFd, shared: &Arc<Shared>) {
    let stop = shared.stop.as_raw_fd();
    if !wait_readable(handoff.as_raw_fd(), stop, None) {
        return;
    }
    let Ok(Some(fd)) = sys::recv_fd(handoff.as_raw_fd()) else {
        return;
    };
    let listener = TcpListener::from(fd);
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let mut accepted: u64 = 0;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        workers.retain(|w| !w.is_finished());
        if workers.len() >= MAX_ACTIVE {
            // Full: the next connection waits in the backlog while a
            // connection's thread ends (or the sandbox does).
            let mut p = [readable(stop)];
            if sys::poll_readable(&mut p, 20).is_err() || p[0].revents != 0 {
                break;
            }
            continue;
        }
        if !wait_readable(listener.as_raw_fd(), stop, None) {
            if stopped(stop) {
                break;
            }
            continue;
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        let at = since_epoch();
        accepted += 1;
        if accepted > shared.limits.connections {
            drop(client);
            record(shared, refused_before_reading(at, Refusal::ConnectionLimit));
            continue;
        }
        let s = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("nw-proxy-conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let mut meter = CpuMeter::new(&s.cpu_ns);
                let c = serve(client, &s, at, &mut meter);
                meter.tick();
                record(&s, c);
            });
        match spawned {
            Ok(w) => workers.push(w),
            Err(_) => record(shared, refused_before_reading(at, Refusal::BadRequest)),
        }
    }
    for w in workers {
        let _ = w.join();
    }
    CpuMeter::new(&shared.cpu_ns).tick();
}

/// Charges a thread's CPU time to the execution, as it goes.
struct CpuMeter<'a> {
    total: &'a AtomicU64,
    charged: u64,
}

impl<'a> CpuMeter<'a> {
    fn new(total: &'a AtomicU64) -> CpuMeter<'a> {
        CpuMeter { total, charged: 0 }
    }

    /// Adds what this thread has spent since the last tick.
    fn tick(&mut self) {
        let now = sys::thread_cpu_ns();
        self.total
            .fetch_add(now.saturating_sub(self.charged), Ordering::Relaxed);
        self.charged = now;
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

fn refused_before_reading(at: Duration, why: Refusal) -> Connection {
    Connection {
        at,
        protocol: "-",
        host: String::new(),
        port: 0,
        address: None,
        refused: Some(why),
        bytes_out: 0,
        bytes_in: 0,
        duration_ms: 0,
        ended: "refused",
    }
}

fn record(shared: &Shared, c: Connection) {
    let first = shared.ledger.lock().is_ok_and(|mut l| l.add(c));
    if first {
        // One byte per wake-up: the loop takes everything that waits.
        let _ = sys::write_all(shared.wake.as_raw_fd(), &[1]);
    }
}

/// A request read from the client: where to, and how to answer.
struct Request {
    protocol: &'static str,
    host: String,
    port: u16,
    /// Bytes to send upstream first (a rewritten HTTP request head).
    forward: Vec<u8>,
    /// Bytes of the client's already read past the request.
    rest: Vec<u8>,
}

fn serve(mut client: TcpStream, shared: &Shared, at: Duration, meter: &mut CpuMeter<'_>) -> Connection {
    let started = Instant::now();
    let stop = shared.stop.as_raw_fd();
    let mut c = refused_before_reading(at, Refusal::BadRequest);
    let deadline = started + REQUEST_TIME;
    let _ = client.set_write_timeout(Some(REQUEST_TIME));
    let mut head = Vec::new();
    let request = read_request(&mut client, stop, deadline, &mut head);
    let Some(request) = request else {
        c.duration_ms = elapsed_ms(started);
        return c;
    };
    c.protocol = request.protocol;
    c.host = request.host.chars().take(255).collect();
    c.port = request.port;
    let decided = decide(&shared.rules, &request.host, request.port);
    let upstream = decided.and_then(|addrs| connect_first(&addrs, stop));
    let mut upstream = match upstream {
        Ok(s) => s,
        Err(why) => {
            refuse(&mut client, request.protocol, why);
            c.refused = Some(why);
            c.duration_ms = elapsed_ms(started);
            return c;
        }
    };
    c.refused = None;
    c.address = upstream.peer_addr().ok();
    if accept_answer(&mut client, request.protocol).is_err() {
        c.ended = "closed";
        c.duration_ms = elapsed_ms(started);
        return c;
    }
    // A tunnel's first bytes from the client, if they are a TLS hello,
    // must name the host that was allowed.
    let mut first = request.rest;
    if request.protocol != "http" {
        match check_tls_name(
            &mut client,
            upstream.as_raw_fd(),
            stop,
            deadline,
            &request.host,
            &mut first,
        ) {
            Ok(()) => {}
            Err(why) => {
                c.refused = Some(why);
                c.duration_ms = elapsed_ms(started);
                let _ = upstream.shutdown(Shutdown::Both);
                return c;
            }
        }
    }
    let end = started + Duration::from_secs(shared.limits.connection_seconds);
    let mut pending = request.forward;
    pending.extend_from_slice(&first);
    let (out, inn, ended) = relay(
        (&mut client, &mut upstream),
        &pending,
        stop,
        end,
        shared.limits.connection_bytes,
        meter,
    );
    c.bytes_out = out;
    c.bytes_in = inn;
    c.ended = ended;
    c.duration_ms = elapsed_ms(started);
    c
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads more of the client into `buf` (at most `MAX_HEAD` in all);
/// false at end of stream, stop, deadline or a full buffer.
fn read_more(client: &mut TcpStream, stop: RawFd, deadline: Instant, buf: &mut Vec<u8>) -> bool {
    if buf.len() >= MAX_HEAD || !wait_readable(client.as_raw_fd(), stop, Some(deadline)) {
        return false;
    }
    let mut chunk = [0u8; 4096];
    let room = (MAX_HEAD - buf.len()).min(chunk.len());
    let Some(window) = chunk.get_mut(..room) else {
        return false;
    };
    match client.read(window) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(window.get(..n).unwrap_or_default());
            true
        }
    }
}

/// Reads until `buf` has `n` bytes.
fn read_to(client: &mut TcpStream, stop: RawFd, deadline: Instant, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        if !read_more(client, stop, deadline, buf) {
            return false;
        }
    }
    true
}

fn read_request(client: &mut TcpStream, stop: RawFd, deadline: Instant, buf: &mut Vec<u8>) -> Option<Request> {
    if !read_to(client, stop, deadline, buf, 1) {
        return None;
    }
    if buf.first() == Some(&5) {
        read_socks(client, stop, deadline, buf)
    } else {
        read_http(client, stop, deadline, buf)
    }
}

/// SOCKS5 (RFC 1928), no authentication, `CONNECT` only.
fn read_socks(client: &mut TcpStream, stop: RawFd, deadline: Instant, buf: &mut Vec<u8>) -> Option<Request> {
    if !read_to(client, stop, deadline, buf, 2) {
        return None;
    }
    let methods = usize::from(*buf.get(1)?);
    if !read_to(client, stop, deadline, buf, 2 + methods) {
        return None;
    }
    if !buf.get(2..2 + methods)?.contains(&0) {
        let _ = client.write_all(&[5, 0xff]);
        return None;
    }
    client.write_all(&[5, 0]).ok()?;
    let mut req: Vec<u8> = buf.split_off(2 + methods);
    if !read_to(client, stop, deadline, &mut req, 5) {
        return None;
    }
    let (ver, cmd, atyp) = (*req.first()?, *req.get(1)?, *req.get(3)?);
    if ver != 5 {
        return None;
    }
    let (host, at) = match atyp {
        1 => {
            read_to(client, stop, deadline, &mut req, 4 + 4 + 2).then_some(())?;
            let o: [u8; 4] = req.get(4..8)?.try_into().ok()?;
            (IpAddr::from(o).to_string(), 8)
        }
        4 => {
            read_to(client, stop, deadline, &mut req, 4 + 16 + 2).then_some(())?;
            let o: [u8; 16] = req.get(4..20)?.try_into().ok()?;
            (IpAddr::from(o).to_string(), 20)
        }
        3 => {
            let len = usize::from(*req.get(4)?);
            read_to(client, stop, deadline, &mut req, 5 + len + 2).then_some(())?;
            (String::from_utf8_lossy(req.get(5..5 + len)?).into_owned(), 5 + len)
        }
        _ => {
            let _ = client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
            return None;
        }
    };
    if cmd != 1 {
        // Only CONNECT: no BIND, no UDP ASSOCIATE (no datagrams leave).
        let _ = client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
        return None;
    }
    let port = u16::from_be_bytes([*req.get(at)?, *req.get(at + 1)?]);
    Some(Request {
        protocol: "socks5",
        host,
        port,
        forward: Vec::new(),
        rest: req.split_off(at + 2),
    })
}

/// HTTP/1: `CONNECT host:port` or an absolute-form (or origin-form with a
/// `Host`) plain `http://` request.
fn read_http(client: &mut TcpStream, stop: RawFd, deadline: Instant, buf: &mut Vec<u8>) -> Option<Request> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(client, stop, deadline, buf) {
            let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            return None;
        }
    };
    let rest = buf.split_off(end);
    let head = std::str::from_utf8(buf).ok()?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let headers: Vec<(&str, &str)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let host_header = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| *v);
    if method == "CONNECT" {
        let (host, port) = split_authority(target, None)?;
        return Some(Request {
            protocol: "connect",
            host,
            port,
            forward: Vec::new(),
            rest,
        });
    }
    let (authority, path) = match target.strip_prefix("http://") {
        Some(t) => match t.find('/') {
            Some(i) => (t.get(..i)?, t.get(i..)?),
            None => (t, "/"),
        },
        None if target.starts_with('/') => (host_header?, target),
        // https:// by plain request, or anything else: not ours to guess.
        None => return None,
    };
    let (host, port) = split_authority(authority, Some(80))?;
    if let Some(h) = host_header {
        // The server routes by Host: it must be where the proxy connects.
        let (hh, hp) = split_authority(h, Some(80))?;
        if !hh.eq_ignore_ascii_case(&host) || hp != port {
            return None;
        }
    }
    // Origin-form to the server, one request per connection, no proxy
    // headers passed on.
    let mut forward = format!("{method} {path} {version}\r\n").into_bytes();
    for (k, v) in &headers {
        let lower = k.to_ascii_lowercase();
        if lower.starts_with("proxy-") || lower == "connection" || lower == "keep-alive" {
            continue;
        }
        forward.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if host_header.is_none() {
        forward.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    }
    forward.extend_from_slice(b"Connection: close\r\n\r\n");
    Some(Request {
        protocol: "http",
        host,
        port,
        forward,
        rest,
    })
}

/// `host:port`, `[v6]:port`, or `host` with the default port.
fn split_authority(text: &str, default: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
        None => default?,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// `net.allow`'s decision, then the addresses to try.
fn decide(rules: &[Rule], host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
    let parsed = Host::parse(host).ok_or(Refusal::BadRequest)?;
    let admitted = egress::admit(rules, &parsed, port)?;
    let addrs: Vec<IpAddr> = match (&parsed, admitted) {
        (Host::Address(a), _) => vec![*a],
        (Host::Name(n), _) => (n.as_str(), port)
            .to_socket_addrs()
            .map_err(|_| Refusal::Unresolved)?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolved);
    }
    let usable = match admitted {
        Admitted::Address => addrs,
        _ => egress::usable(rules, admitted, port, &addrs),
    };
    if usable.is_empty() {
        return Err(Refusal::InternalAddress);
    }
    Ok(usable.into_iter().map(|a| SocketAddr::new(a, port)).collect())
}

fn connect_first(addrs: &[SocketAddr], stop: RawFd) -> Result<TcpStream, Refusal> {
    for a in addrs {
        if stopped(stop) {
            break;
        }
        if let Ok(s) = TcpStream::connect_timeout(a, CONNECT_TIME) {
            return Ok(s);
        }
    }
    Err(Refusal::Unreachable)
}

fn refuse(client: &mut TcpStream, protocol: &str, why: Refusal) {
    let _ = match protocol {
        "socks5" => {
            let code = match why {
                Refusal::Unresolved => 4,
                Refusal::Unreachable => 5,
                _ => 2,
            };
            client.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0])
        }
        _ => {
            let (status, text) = match why {
                Refusal::Unresolved | Refusal::Unreachable => ("502 Bad Gateway", why.describe()),
                Refusal::BadRequest => ("400 Bad Request", why.describe()),
                _ => ("403 Forbidden", why.describe()),
            };
            let body = format!("ninewall proxy: {text}\n");
            client.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        }
    };
}

fn accept_answer(client: &mut TcpStream, protocol: &str) -> std::io::Result<()> {
    match protocol {
        "socks5" => client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        "connect" => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n"),
        _ => Ok(()),
    }
}

/// If the client's first bytes through a tunnel are a TLS ClientHello, its
/// server name (when it has one) must be the host asked for; a hello that
/// cannot be read is refused too (fail closed). Anything else passes, and
/// so does a tunnel whose server speaks first (SSH, SMTP: not TLS, which the
/// client begins).
fn check_tls_name(
    client: &mut TcpStream,
    upstream: RawFd,
    stop: RawFd,
    deadline: Instant,
    host: &str,
    first: &mut Vec<u8>,
) -> Result<(), Refusal> {
    if first.is_empty() {
        let mut p = [readable(client.as_raw_fd()), readable(upstream)];
        let ms = ms_until(deadline);
        if sys::poll_readable(&mut p, ms).is_err() || p[0].revents == 0 {
            return Ok(());
        }
        if !read_more(client, stop, deadline, first) {
            return Ok(());
        }
    }
    if first.first() != Some(&0x16) {
        return Ok(());
    }
    let need = |b: &[u8]| match (b.get(3), b.get(4)) {
        (Some(&hi), Some(&lo)) => 5 + usize::from(u16::from_be_bytes([hi, lo])),
        _ => 5,
    };
    while first.len() < need(first) {
        if !read_more(client, stop, deadline, first) {
            return Err(Refusal::SniMismatch);
        }
    }
    let wanted = host.strip_suffix('.').unwrap_or(host);
    match client_hello_name(first.get(..need(first)).unwrap_or_default()) {
        Some(None) => Ok(()),
        Some(Some(name)) if name.eq_ignore_ascii_case(wanted) => Ok(()),
        _ => Err(Refusal::SniMismatch),
    }
}

/// The `server_name` of a TLS ClientHello in one record: `Some(None)`
/// without one, `None` when it is not a readable ClientHello.
pub fn client_hello_name(record: &[u8]) -> Option<Option<String>> {
    let mut r = Cursor(record);
    if r.u8()? != 0x16 {
        return None;
    }
    r.take(2)?;
    let len = r.u16()?;
    let mut hs = Cursor(r.take(usize::from(len))?);
    if hs.u8()? != 1 {
        return None;
    }
    let hlen = hs.u24()?;
    let mut hello = Cursor(hs.take(hlen)?);
    hello.take(2 + 32)?;
    let sid = usize::from(hello.u8()?);
    hello.take(sid)?;
    let suites = usize::from(hello.u16()?);
    hello.take(suites)?;
    let comp = usize::from(hello.u8()?);
    hello.take(comp)?;
    if hello.0.is_empty() {
        return Some(None);
    }
    let ext_len = usize::from(hello.u16()?);
    let mut exts = Cursor(hello.take(ext_len)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let mut data = Cursor(exts.take(len)?);
        if kind == 0 {
            let list = usize::from(data.u16()?);
            let mut names = Cursor(data.take(list)?);
            while !names.0.is_empty() {
                let t = names.u8()?;
                let n = usize::from(names.u16()?);
                let name = names.take(n)?;
                if t == 0 {
                    return Some(Some(String::from_utf8(name.to_vec()).ok()?));
                }
            }
            return None;
        }
    }
    Some(None)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some((usize::from(*b.first()?) << 16) | (usize::from(*b.get(1)?) << 8) | usize::from(*b.get(2)?))
    }
}

/// One read of `from` passed on whole to `to`: how many bytes; `None` at
/// its end (then `to` is told no more comes); `Err` when `to` did not take
/// them all.
fn pass_once(from: &mut TcpStream, to: &mut TcpStream, chunk: &mut [u8]) -> Result<Option<usize>, ()> {
    match from.read(chunk) {
        Ok(0) | Err(_) => {
            let _ = to.shutdown(Shutdown::Write);
            Ok(None)
        }
        Ok(n) => to
            .write_all(chunk.get(..n).unwrap_or_default())
            .map(|()| Some(n))
            .map_err(drop),
    }
}

/// Copies both ways until both sides have closed, the stop pipe closes, the
/// time is up or the bytes are spent; (out, in, what ended it).
fn relay(
    (client, upstream): (&mut TcpStream, &mut TcpStream),
    first: &[u8],
    stop: RawFd,
    end: Instant,
    budget: u64,
    meter: &mut CpuMeter<'_>,
) -> (u64, u64, &'static str) {
    let mut out = 0u64;
    let mut inn = 0u64;
    let left = |now: Instant| end.saturating_duration_since(now).max(Duration::from_millis(1));
    let _ = upstream.set_write_timeout(Some(left(Instant::now())));
    let _ = client.set_write_timeout(Some(left(Instant::now())));
    if !first.is_empty() {
        if upstream.write_all(first).is_err() {
            return (0, 0, "closed");
        }
        out += first.len() as u64;
    }
    let mut buf = vec![0u8; RELAY_BUFFER];
    let (mut client_open, mut upstream_open) = (true, true);
    let mut rounds: u32 = 0;
    let ended = loop {
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(64) {
            meter.tick();
        }
        if !client_open && !upstream_open {
            break "closed";
        }
        if out + inn >= budget {
            break "limits.connection_bytes";
        }
        let now = Instant::now();
        if now >= end {
            break "limits.connection_seconds";
        }
        let ms = ms_until(end);
        let mut p = [
            readable(if client_open { client.as_raw_fd() } else { -1 }),
            readable(if upstream_open { upstream.as_raw_fd() } else { -1 }),
            readable(stop),
        ];
        if sys::poll_readable(&mut p, ms).is_err() {
            break "closed";
        }
        if p[2].revents != 0 {
            break "sandbox ended";
        }
        let room = usize::try_from(budget - out - inn).unwrap_or(usize::MAX).min(buf.len());
        let Some(chunk) = buf.get_mut(..room) else {
            break "closed";
        };
        if p[0].revents != 0 {
            match pass_once(client, upstream, chunk) {
                Ok(Some(n)) => out += n as u64,
                Ok(None) => client_open = false,
                Err(()) => break "closed",
            }
            continue;
        }
        if p[1].revents != 0 {
            match pass_once(upstream, client, chunk) {
                Ok(Some(n)) => inn += n as u64,
                Ok(None) => upstream_open = false,
                Err(()) => break "closed",
            }
        }
    };
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
    (out, inn, ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as Python's ssl module sends it for "api.example"
    /// (trimmed to the fields the parser walks).
    fn hello(name: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(n) = name {
            let mut sni = Vec::new();
            sni.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
            sni.push(0);
            sni.extend_from_slice(&(n.len() as u16).to_be_bytes());
            sni.extend_from_slice(n.as_bytes());
            exts.extend_from_slice(&[0, 0]);
            exts.extend_from_slice(&(sni.len() as u16).to_be_bytes());
            exts.extend_from_slice(&sni);
        }
        exts.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn the_server_name_of_a_client_hello_is_read_and_a_broken_one_is_not_guessed() {
        assert_eq!(
            client_hello_name(&hello(Some("api.example"))),
            Some(Some("api.example".into()))
        );
        assert_eq!(client_hello_name(&hello(None)), Some(None));
        let h = hello(Some("api.example"));
        for cut in [1, 5, 9, 40, h.len() - 3] {
            assert_eq!(client_hello_name(&h[..cut]), None, "cut at {cut}");
        }
        assert_eq!(client_hello_name(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn authorities_are_split_with_their_ports() {
        assert_eq!(
            split_authority("api.example:443", None),
            Some(("api.example".into(), 443))
        );
        assert_eq!(split_authority("[::1]:8080", None), Some(("::1".into(), 8080)));
        assert_eq!(
            split_authority("api.example", Some(80)),
            Some(("api.example".into(), 80))
        );
        assert_eq!(split_authority("api.example", None), None);
        assert_eq!(split_authority("api.example:0", None), None);
        assert_eq!(split_authority(":80", None), None);
    }
}

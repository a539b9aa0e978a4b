//! Wall 6, `net.mode = "proxy"`: the sandbox reaches the servers of
//! `net.allow` through the supervisor's proxy and nothing else, and every
//! connection is a record. Every server here is one the test starts on this
//! host's loopback; nothing leaves the machine.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::support::*;

/// A plain HTTP server on 127.0.0.1 that answers every request with
/// `body` and counts the connections it accepted.
struct HttpServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl HttpServer {
    fn start(body: &'static str) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        HttpServer { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A TLS server (Python's ssl module, a self-signed certificate for
/// `localhost` made by openssl), killed when dropped.
struct TlsServer {
    port: u16,
    cert: PathBuf,
    child: Child,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_SERVER_PY: &str = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
def serve(c):
    try:
        c.settimeout(5)
        s = ctx.wrap_socket(c, server_side=True)
        s.recv(4096)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nover-tls-hello")
        s.close()
    except Exception:
        c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

impl TlsServer {
    fn start() -> TlsServer {
        let dir = scratch_dir("egress-tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args([
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl (the CI installs it)");
        assert!(made.success(), "openssl req failed");
        std::fs::set_permissions(&cert, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let mut child = Command::new("/usr/bin/python3.11")
            .args(["-c", TLS_SERVER_PY])
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        TlsServer {
            port: line.trim().parse().unwrap(),
            cert,
            child,
        }
    }
}

fn proxy_profile(name: &str, allow: &[String], extra: &str) -> PathBuf {
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    write_profile(
        name,
        &format!(
            "extends = \"base/python\"\n[mbu]\nname = \"{name}\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\", \"-S\", \"-B\"]\n\
             [net]\nmode = \"proxy\"\nallow = [{}]\n[syscalls]\nallow = [\"@default\", \"@network-io\"]\n{extra}",
            allow.join(", ")
        ),
    )
}

/// Runs `code` and returns the run and its records (a log of its own).
fn run_recorded(who: Who, profile: &Path, code: &str) -> (Run, Vec<Value>) {
    let dir = scratch_dir("egress-log");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let log = dir.join("audit.jsonl");
    let r = run(
        who,
        profile,
        &["--audit-log", log.to_str().unwrap()],
        &["-c", code],
        None,
    );
    let exec = exec_ids(&log).pop().unwrap_or_else(|| panic!("no exec.start: {r:#?}"));
    let records = log_records(&log)
        .into_iter()
        .filter(|v| v["exec"] == exec.as_str())
        .collect();
    (r, records)
}

fn connects(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|v| v["kind"] == "net.connect").collect()
}

const SOCKS_PY: &str = r#"
import socket, struct
def socks(host, port, payload):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    h = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + struct.pack(">H", port))
    reply = s.recv(10)
    if reply[1] != 0:
        return "socks-refused-%d" % reply[1]
    s.sendall(payload)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
"#;

#[test]
fn an_allowed_name_is_reached_over_http_connect_and_socks5_and_each_connection_is_recorded() {
    let http = HttpServer::start("plain-hello");
    let tls = TlsServer::start();
    // The certificate goes in as code: the sandbox reads no host file for it.
    let cert = std::fs::read_to_string(&tls.cert).unwrap();
    let p = proxy_profile(
        &format!("egress-ok-{}", http.port),
        &[format!("localhost:{}", http.port), format!("localhost:{}", tls.port)],
        "",
    );
    for who in identities() {
        let before = http.accepted();
        let code = format!(
            r#"{SOCKS_PY}
import json, os, ssl, urllib.request
out = {{}}
out["env"] = [os.environ.get(k) for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NINEWALL_PROXY")]
out["http"] = urllib.request.urlopen("http://localhost:{hp}/x", timeout=10).read().decode()
ctx = ssl.create_default_context(cadata={cert:?})
out["https"] = urllib.request.urlopen("https://localhost:{tp}/", context=ctx, timeout=10).read().decode()
out["socks5"] = socks("localhost", {hp}, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").split("\r\n")[-1]
print(json.dumps(out))
"#,
            hp = http.port,
            tp = tls.port,
            cert = cert,
        );
        let (r, records) = run_recorded(who, &p, &code);
        r.assert_code(0);
        let out = r.json();
        assert_eq!(
            out["env"],
            serde_json::json!([
                "http://127.0.0.1:3128",
                "http://127.0.0.1:3128",
                "socks5h://127.0.0.1:3128",
                "127.0.0.1:3128"
            ])
        );
        assert_eq!(out["http"], "plain-hello", "{r:#?}");
        assert_eq!(out["https"], "over-tls-hello", "{r:#?}");
        assert_eq!(out["socks5"], "plain-hello", "{r:#?}");
        assert_eq!(
            http.accepted() - before,
            2,
            "the plain server saw the HTTP and the SOCKS5 connection"
        );
        let c = connects(&records);
        let seen: Vec<(String, String, u64)> = c
            .iter()
            .map(|v| {
                (
                    v["protocol"].as_str().unwrap().to_string(),
                    v["address"].as_str().unwrap_or("-").to_string(),
                    v["port"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("http".into(), "127.0.0.1".into(), u64::from(http.port)),
                ("connect".into(), "127.0.0.1".into(), u64::from(tls.port)),
                ("socks5".into(), "127.0.0.1".into(), u64::from(http.port)),
            ],
            "{records:#?}"
        );
        for v in &c {
            assert_eq!(v["allowed"], true, "{v}");
            assert_eq!(v["host"], "localhost");
            assert!(
                v["bytes_out"].as_u64().unwrap() > 0 && v["bytes_in"].as_u64().unwrap() > 0,
                "{v}"
            );
        }
        let end = records.iter().find(|v| v["kind"] == "exec.end").unwrap();
        assert_eq!(end["net"]["connections"], 3, "{end}");
        assert_eq!(end["net"]["refused"], 0, "{end}");
        let start = records.iter().find(|v| v["kind"] == "exec.start").unwrap();
        assert_eq!(start["walls"]["network"], "proxy");
        assert_eq!(start["walls"]["egress"]["proxy"], "127.0.0.1:3128");
    }
}

#[test]
fn what_net_allow_does_not_name_is_refused_recorded_and_never_reaches_a_server() {
    let allowed = HttpServer::start("allowed");
    let other = HttpServer::start("other-port");
    let tls = TlsServer::start();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let p = proxy_profile(
        &format!("egress-refused-{}", allowed.port),
        &[format!("localhost:{}", allowed.port), format!("localhost:{}", tls.port)],
        "",
    );
    for who in identities() {
        let (a0, o0) = (allowed.accepted(), other.accepted());
        let code = format!(
            r#"{SOCKS_PY}
import json, socket, ssl, errno
def connect_status(target):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    return s.recv(4096).split(b"\r\n")[0].decode()
def attempt(f):
    try:
        return "ok: %r" % (f(),)
    except OSError as e:
        return errno.errorcode.get(e.errno, type(e).__name__)
def sni_mismatch():
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(b"CONNECT localhost:{tp} HTTP/1.1\r\nHost: localhost:{tp}\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(s, server_hostname="elsewhere.example")
    t.sendall(b"GET / HTTP/1.1\r\n\r\n")
    return t.recv(100)
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"dns?", ("127.0.0.1", {up}))
    return u.sendto(b"dns?", ("192.0.2.53", 53))
out = {{
  "name": connect_status("not-allowed.example:{ap}"),
  "port": connect_status("localhost:{op}"),
  "ip": connect_status("127.0.0.1:{ap}"),
  "socks_port": socks("localhost", {op}, b""),
  "sni": attempt(sni_mismatch),
  "direct": attempt(lambda: socket.create_connection(("127.0.0.1", {ap}), timeout=3)),
  "direct_other": attempt(lambda: socket.create_connection(("192.0.2.1", 80), timeout=3)),
  "udp": attempt(udp),
  "resolve": attempt(lambda: socket.getaddrinfo("localhost", 80)),
}}
print(json.dumps(out))
"#,
            ap = allowed.port,
            op = other.port,
            tp = tls.port,
            up = udp_port,
        );
        let (r, records) = run_recorded(who, &p, &code);
        r.assert_code(0);
        let out = r.json();
        assert_eq!(out["name"], "HTTP/1.1 403 Forbidden", "{out}");
        assert_eq!(out["port"], "HTTP/1.1 403 Forbidden", "{out}");
        assert_eq!(out["ip"], "HTTP/1.1 403 Forbidden", "{out}");
        assert_eq!(out["socks_port"], "socks-refused-2", "{out}");
        // The proxy closes the tunnel when the hello names another host.
        assert!(!out["sni"].as_str().unwrap().starts_with("ok"), "{out}");
        // Past the proxy there is nothing: the sandbox's own loopback (the
        // port is not Landlock's to connect to) and no route elsewhere.
        assert!(
            matches!(out["direct"].as_str().unwrap(), "EACCES" | "ECONNREFUSED"),
            "{out}"
        );
        assert!(
            matches!(out["direct_other"].as_str().unwrap(), "EACCES" | "ENETUNREACH"),
            "{out}"
        );
        assert_eq!(out["udp"], "ENETUNREACH", "{out}");
        assert!(!out["resolve"].as_str().unwrap().starts_with("ok"), "{out}");
        assert_eq!(
            allowed.accepted(),
            a0,
            "a refused or direct connection reached the allowed server"
        );
        assert_eq!(other.accepted(), o0, "the server on a port not allowed was reached");
        let mut buf = [0u8; 16];
        assert!(
            udp.recv_from(&mut buf).is_err(),
            "a datagram from the sandbox reached the host"
        );
        let refused: Vec<(String, String)> = connects(&records)
            .iter()
            .map(|v| {
                (
                    format!("{}:{}", v["host"].as_str().unwrap(), v["port"]),
                    v["refused"].as_str().unwrap_or("allowed").to_string(),
                )
            })
            .collect();
        assert_eq!(
            refused,
            vec![
                (
                    format!("not-allowed.example:{}", allowed.port),
                    "not in net.allow".into()
                ),
                (format!("localhost:{}", other.port), "not in net.allow".into()),
                (format!("127.0.0.1:{}", allowed.port), "not in net.allow".into()),
                (format!("localhost:{}", other.port), "not in net.allow".into()),
                (
                    format!("localhost:{}", tls.port),
                    "the TLS server name is not the host of the CONNECT".into()
                ),
            ],
            "{records:#?}"
        );
        let end = records.iter().find(|v| v["kind"] == "exec.end").unwrap();
        assert_eq!(end["net"]["connections"], 5, "{end}");
        assert_eq!(end["net"]["refused"], 5, "{end}");
    }
}

/// As root, in a mount namespace of the test's own whose /etc/hosts names
/// two hosts under one wildcard on 127.0.0.1: a wildcard never reaches an
/// internal address unless the address is listed itself.
#[test]
fn a_wildcard_name_that_resolves_to_loopback_is_refused_unless_the_address_is_listed() {
    if !identities().contains(&Who::Root) {
        // Only root can give the supervisor another /etc/hosts; the root
        // half of the suite runs this.
        return;
    }
    let server = HttpServer::start("rebound");
    let dir = scratch_dir("egress-hosts");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.1 api.nw-test.example\n").unwrap();
    let code = format!(
        "import urllib.request\ntry:\n    print(urllib.request.urlopen('http://api.nw-test.example:{}/', timeout=10).read().decode())\nexcept Exception as e:\n    print('refused', e)\n",
        server.port
    );
    for (name, allow, expect) in [
        (
            "wild",
            vec![format!("*.nw-test.example:{}", server.port)],
            "refused HTTP Error 403",
        ),
        (
            "wild-and-address",
            vec![
                format!("*.nw-test.example:{}", server.port),
                format!("127.0.0.1:{}", server.port),
            ],
            "rebound",
        ),
    ] {
        let p = proxy_profile(&format!("egress-{name}-{}", server.port), &allow, "");
        let log = dir.join(format!("{name}.jsonl"));
        let bin = ninewall(Who::Root).get_program().to_owned();
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(&hosts)
            .arg(bin)
            .args(["run", "--audit-log"])
            .arg(&log)
            .arg("--profile")
            .arg(&p)
            .args(["--", "-c", &code])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let r = Run::from_output(out);
        r.assert_code(0);
        assert!(r.stdout.starts_with(expect), "{name}: {r:#?}");
        let rec: Value = log_records(&log)
            .into_iter()
            .find(|v| v["kind"] == "net.connect")
            .unwrap();
        assert_eq!(rec["host"], "api.nw-test.example");
        if expect == "rebound" {
            assert_eq!(rec["allowed"], true, "{rec}");
        } else {
            assert_eq!(
                rec["refused"],
                "resolved to an internal address (loopback, private, link-local) that net.allow does not list",
                "{rec}"
            );
        }
    }
    assert_eq!(
        server.accepted(),
        1,
        "only the run that lists the address reached the server"
    );
}

/// Runs `code`, sampling the supervisor's peak resident memory until it
/// ends; the run, the peak in KiB, and the log it wrote.
fn run_sampling_peak(who: Who, profile: &Path, code: &str) -> (Run, u64, PathBuf) {
    let dir = scratch_dir("egress-peak");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let log = dir.join("audit.jsonl");
    let mut cmd = ninewall(who);
    cmd.args(["run", "--audit-log"])
        .arg(&log)
        .arg("--profile")
        .arg(profile)
        .args(["--", "-c", code])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let status = format!("/proc/{}/status", child.id());
    let peak = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&peak);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let sampler = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(s) = std::fs::read_to_string(&status) {
                if let Some(kb) = s
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    seen.fetch_max(kb, Ordering::SeqCst);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    (Run::from_output(out), peak.load(Ordering::SeqCst) as u64, log)
}

#[test]
fn a_thousand_connections_stay_within_the_limit_and_the_supervisors_memory_stays_flat() {
    let server = HttpServer::start("x");
    let p = proxy_profile(
        &format!("egress-many-{}", server.port),
        &[format!("localhost:{}", server.port)],
        "[limits]\nconnections = 200\n",
    );
    let code = |n: usize| {
        format!(
            r#"
import socket, time
ok = refused = 0
for i in range({n}):
    data = b""
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
        s.sendall(b"GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
        while True:
            c = s.recv(4096)
            if not c:
                break
            data += c
        s.close()
    except OSError:
        pass
    if data.endswith(b"\r\n\r\nx"):
        ok += 1
    else:
        refused += 1
print(ok, refused)
time.sleep(0.3)
"#,
            port = server.port
        )
    };
    for who in identities() {
        let before = server.accepted();
        let (few, few_peak, _) = run_sampling_peak(who, &p, &code(10));
        few.assert_code(0);
        assert_eq!(few.stdout.trim(), "10 0");
        let (many, many_peak, log) = run_sampling_peak(who, &p, &code(1000));
        many.assert_code(0);
        assert_eq!(many.stdout.trim(), "200 800", "{many:#?}");
        assert_eq!(
            server.accepted() - before,
            210,
            "past the limit nothing reaches the server"
        );
        // Every connection within the limit is a record, and the first
        // refusal past it; the rest are counted.
        let records = log_records(&log);
        let c = connects(&records);
        assert_eq!(c.iter().filter(|v| v["allowed"] == true).count(), 200);
        let past: Vec<&&Value> = c.iter().filter(|v| v["allowed"] == false).collect();
        assert_eq!(past.len(), 1, "{past:?}");
        assert_eq!(past[0]["refused"], "limits.connections reached");
        let end = records.iter().find(|v| v["kind"] == "exec.end").unwrap();
        assert_eq!(end["net"]["connections"], 1000, "{end}");
        assert_eq!(end["net"]["refused"], 800, "{end}");
        assert_eq!(end["net"]["unrecorded"], 799, "{end}");
        eprintln!("supervisor peak: {few_peak} KiB for 10 connections, {many_peak} KiB for 1000");
        assert!(few_peak > 0 && many_peak > 0, "the supervisor's memory was not sampled");
        assert!(
            many_peak < few_peak + 1536,
            "the supervisor's peak grew from {few_peak} KiB (10 connections) to {many_peak} KiB (1000)"
        );
    }
}

/// The knowledge profile's commented example is a working profile: with
/// its lines uncommented, the sandbox reaches the named service (here a
/// test server standing in for it, by the name `localhost`) and nothing else.
#[test]
fn the_knowledge_profiles_commented_retrieval_example_is_a_valid_proxy_profile() {
    let server = HttpServer::start("retrieved");
    let text = std::fs::read_to_string(source_profiles().join("knowledge.toml")).unwrap();
    assert!(
        text.contains("# allow = [\"retrieval.internal.example:443\"]"),
        "the example moved"
    );
    let text = text
        .replace("# [net]", "[net]")
        .replace("# mode = \"proxy\"", "mode = \"proxy\"")
        .replace(
            "# allow = [\"retrieval.internal.example:443\"]",
            &format!("allow = [\"localhost:{}\"]", server.port),
        )
        .replace("allow = [\"@default\"]", "allow = [\"@default\", \"@network-io\"]");
    let p = write_profile(&format!("knowledge-proxy-{}", server.port), &text);
    let check = check_profile(&p, false);
    check.assert_code(0);
    assert!(
        check
            .stdout
            .contains(&format!("net allow    localhost:{}", server.port)),
        "{check:#?}"
    );
    for who in identities() {
        let r = run(
            who,
            &p,
            &[],
            &[
                "-c",
                &format!(
                    "import urllib.request\nprint(urllib.request.urlopen('http://localhost:{}/', timeout=10).read().decode())",
                    server.port
                ),
            ],
            None,
        );
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "retrieved");
    }
}

/// `diff` names each `net.allow` entry a profile has beyond another's; an
/// entry inside a wildcard of the other (same port) is no gain.
#[test]
fn diff_treats_each_net_allow_entry_as_a_permission() {
    let wide = proxy_profile(
        "egress-diff-wide",
        &["*.corp.example:443".into(), "10.0.0.0/8:5432".into()],
        "",
    );
    let narrow = proxy_profile(
        "egress-diff-narrow",
        &["api.corp.example:443".into(), "10.1.2.3:5432".into()],
        "",
    );
    let diff = |a: &Path, b: &Path| {
        Run::from_output(
            ninewall(Who::Root)
                .args(["diff", "--json"])
                .arg(a)
                .arg(b)
                .output()
                .unwrap(),
        )
    };
    let r = diff(&narrow, &wide);
    r.assert_code(0);
    assert_eq!(r.json()["subset"], true, "{r:#?}");
    let r = diff(&wide, &narrow);
    r.assert_code(1);
    let gained: Vec<String> = r.json()["gained"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["key"] == "net.allow")
        .map(|g| g["what"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        gained,
        vec![
            "may connect through the proxy to *.corp.example:443",
            "may connect through the proxy to 10.0.0.0/8:5432"
        ],
        "{r:#?}"
    );
}

/// A server that sends `bytes` to every connection (0: sends nothing and
/// holds the connection open for a minute).
fn raw_server(bytes: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                if bytes == 0 {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                } else {
                    let chunk = vec![b'x'; 64 << 10];
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if conn.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        left -= n;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_connection_is_cut_at_its_byte_and_time_limits_and_the_record_names_the_limit() {
    let big = raw_server(8 << 20);
    let silent = raw_server(0);
    let banner = raw_server(16);
    let p = proxy_profile(
        &format!("egress-limits-{big}"),
        &[
            format!("localhost:{big}"),
            format!("localhost:{silent}"),
            format!("localhost:{banner}"),
        ],
        "[limits]\nconnection_bytes = \"1M\"\nconnection_seconds = 2\n",
    );
    let code = format!(
        r#"
import json, socket, time
def tunnel(port):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=30)
    s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % port)
    head = s.recv(39)
    n = 0
    t = time.monotonic()
    s.sendall(b"plain bytes, not TLS")
    while True:
        c = s.recv(65536)
        if not c:
            break
        n += len(c)
    return n, round(time.monotonic() - t, 1)
def server_first(port):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=30)
    s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % port)
    head = s.recv(39)
    t = time.monotonic()
    got = s.recv(100)
    return len(got), round(time.monotonic() - t, 1)
print(json.dumps({{"big": tunnel({big}), "silent": tunnel({silent}), "banner": server_first({banner})}}))
"#
    );
    for who in identities() {
        let (r, records) = run_recorded(who, &p, &code);
        r.assert_code(0);
        let out = r.json();
        let got = out["big"][0].as_u64().unwrap();
        assert!(got > 0 && got <= 1 << 20, "{out}");
        let waited = out["silent"][1].as_f64().unwrap();
        assert!((1.5..20.0).contains(&waited), "{out}");
        // A server that speaks first is heard without the client speaking.
        assert_eq!(out["banner"][0], 16, "{out}");
        assert!(out["banner"][1].as_f64().unwrap() < 5.0, "{out}");
        let ended: Vec<(u64, String, u64)> = connects(&records)
            .iter()
            .map(|v| {
                (
                    v["port"].as_u64().unwrap(),
                    v["ended"].as_str().unwrap().to_string(),
                    v["bytes_in"].as_u64().unwrap() + v["bytes_out"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ended.len(), 3, "{records:#?}");
        assert_eq!(ended[0].0, u64::from(big));
        assert_eq!(ended[0].1, "limits.connection_bytes");
        assert!(ended[0].2 <= 1 << 20, "{ended:?}");
        assert_eq!(ended[1].0, u64::from(silent));
        assert_eq!(ended[1].1, "limits.connection_seconds");
    }
}

/// A connection's record is on the log when the connection ends, not when
/// the run does: a run still going (and later killed) has it already.
#[test]
fn a_connections_record_is_written_while_the_run_goes_on() {
    let server = HttpServer::start("early");
    let p = proxy_profile(
        &format!("egress-early-{}", server.port),
        &[format!("localhost:{}", server.port)],
        "",
    );
    for who in identities() {
        let dir = scratch_dir("egress-early");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let log = dir.join("audit.jsonl");
        let code = format!(
            "import time, urllib.request\nurllib.request.urlopen('http://localhost:{}/', timeout=10).read()\nprint('fetched', flush=True)\ntime.sleep(30)\n",
            server.port
        );
        let mut child = ninewall(who)
            .args(["run", "--audit-log"])
            .arg(&log)
            .arg("--profile")
            .arg(&p)
            .args(["--", "-c", &code])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let mut seen = None;
        while started.elapsed() < std::time::Duration::from_secs(20) && seen.is_none() {
            seen = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["kind"] == "net.connect");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let still_running = child.try_wait().unwrap().is_none();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
        let _ = child.wait();
        let rec = seen.unwrap_or_else(|| panic!("no net.connect record while the run went on"));
        assert!(still_running, "the run had ended: the record proves nothing");
        assert_eq!(rec["allowed"], true, "{rec}");
        assert_eq!(rec["ended"], "closed", "{rec}");
    }
}

/// What the proxy's threads spend relaying is the execution's: counted in
/// `exec.end.net.cpu_ms` and charged to `limits.cpu_seconds` with the
/// sandbox's own CPU.
#[test]
fn the_proxys_cpu_is_charged_to_the_execution() {
    let big = raw_server(256 << 20);
    let p = proxy_profile(
        &format!("egress-cpu-{big}"),
        &[format!("localhost:{big}")],
        "[limits]\nconnection_bytes = \"1G\"\n",
    );
    let code = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', 3128))\ns.sendall(b'CONNECT localhost:{big} HTTP/1.1\\r\\n\\r\\n')\nn = 0\nwhile True:\n    c = s.recv(1 << 20)\n    if not c:\n        break\n    n += len(c)\nprint(n > (255 << 20))"
    );
    for who in identities() {
        let (r, records) = run_recorded(who, &p, &code);
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "True", "{r:#?}");
        let end = records.iter().find(|v| v["kind"] == "exec.end").unwrap();
        assert!(end["net"]["cpu_ms"].as_u64().unwrap() >= 1, "{end}");
    }
}

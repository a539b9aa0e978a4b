//! `ninewall call`: the worker's client of the daemon (`ninewall serve`).
//!
//! One request (protocol 2) on the daemon's socket: the MBU, its arguments,
//! the workspace, and this process's standard input (text, read whole before
//! the request: the protocol carries it in the request line). The answer's
//! frames go to our stdout and stderr as they come; the exit code is the
//! MBU's, as `ninewall run` would have exited. Closing the connection is the
//! cancel: Ctrl-C ends this process, the daemon sees the hang-up and ends the
//! run (recorded as `cancelled`).
//!
//! No wall: the daemon decides and records; this only speaks its protocol.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::exec::{WireResponse, MAX_REQUEST_BYTES};
use crate::exit;

/// Where the daemon listens when neither `--socket` nor `NINEWALL_SOCKET`
/// says: the system daemon's socket (systemd/ninewall.socket).
pub const SYSTEM_SOCKET: &str = "/run/ninewall/ninewall.sock";

/// What to ask for.
#[derive(Debug, Clone)]
pub struct Call {
    /// The MBU.
    pub mbu: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// A host directory of ours for its workspace.
    pub workspace: Option<PathBuf>,
    /// The agent record that led to this call.
    pub caused_by: Option<String>,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The end as a JSON line on stderr instead of messages.
    pub json: bool,
}

/// The socket to use: `--socket`, `NINEWALL_SOCKET`, or [`SYSTEM_SOCKET`].
pub fn socket_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            std::env::var_os("NINEWALL_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET))
}

/// Makes the call; returns the exit code (the MBU's, or 125 with a message
/// when it did not run, 2 for bad input).
pub fn call(c: &Call, say: &dyn Fn(String)) -> i32 {
    if !c.json {
        return call_with(c, say, &mut None);
    }
    // Machines: every message and the end in one JSON line, last on stderr.
    let said = std::cell::RefCell::new(Vec::new());
    let mut end: Option<WireResponse> = None;
    let code = call_with(c, &|m| said.borrow_mut().push(m), &mut end);
    let end = end.unwrap_or_default();
    let line = serde_json::json!({
        "ok": end.exec.is_some(),
        "exec": end.exec,
        "exit_code": code,
        "limit": end.limit,
        "messages": said.into_inner(),
        "error": end.error,
    });
    let _ = writeln!(std::io::stderr().lock(), "\n{line}");
    code
}

fn call_with(c: &Call, say: &dyn Fn(String), end: &mut Option<WireResponse>) -> i32 {
    let stdin = match read_stdin() {
        Ok(s) => s,
        Err(e) => {
            say(e);
            return exit::USAGE;
        }
    };
    let workspace = match &c.workspace {
        Some(w) => match std::path::absolute(w) {
            Ok(p) => Some(p),
            Err(e) => {
                say(format!("--workspace {}: {e}", w.display()));
                return exit::USAGE;
            }
        },
        None => None,
    };
    // Text as text; other bytes as base64, which the protocol carries too.
    let mut request = serde_json::json!({
        "v": 2,
        "mbu": c.mbu,
        "args": c.args,
        "workspace": workspace,
        "caused_by": c.caused_by,
    });
    if let Some(fields) = request.as_object_mut() {
        match String::from_utf8(stdin) {
            Ok(text) => fields.insert("stdin".into(), text.into()),
            Err(e) => fields.insert(
                "stdin_base64".into(),
                crate::gate::exec::encode_base64(e.as_bytes()).into(),
            ),
        };
    }
    let mut line = request.to_string();
    line.push('\n');
    if line.len() > MAX_REQUEST_BYTES {
        say(format!(
            "the request is {} bytes, over the daemon's {MAX_REQUEST_BYTES}: standard input too large",
            line.len()
        ));
        return exit::USAGE;
    }
    let stream = match UnixStream::connect(&c.socket) {
        Ok(s) => s,
        Err(e) => {
            say(format!(
                "cannot reach the daemon at {}: {e} (is `ninewall serve` running? --socket or NINEWALL_SOCKET name another socket)",
                c.socket.display()
            ));
            return exit::SANDBOX;
        }
    };
    if let Err(e) = (&stream).write_all(line.as_bytes()) {
        say(format!("sending the request to {}: {e}", c.socket.display()));
        return exit::SANDBOX;
    }
    receive(&stream, &c.socket, say, end)
}

/// Standard input, when it is not a terminal: the MBU's, whole.
fn read_stdin() -> Result<Vec<u8>, String> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::new();
    (&mut stdin)
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading standard input: {e}"))?;
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "standard input is over {MAX_REQUEST_BYTES} bytes, more than one request carries"
        ));
    }
    Ok(bytes)
}

/// Reads the answer: the first line, the frames, the end line.
fn receive(stream: &UnixStream, socket: &Path, say: &dyn Fn(String), end_out: &mut Option<WireResponse>) -> i32 {
    let mut r = BufReader::new(stream);
    let mut first = String::new();
    match r.read_line(&mut first) {
        Ok(n) if n > 0 => {}
        _ => {
            say(format!(
                "the daemon at {} closed the connection without an answer",
                socket.display()
            ));
            return exit::SANDBOX;
        }
    }
    let started: WireResponse = match serde_json::from_str(&first) {
        Ok(a) => a,
        Err(e) => {
            say(format!("the daemon's answer is not one this client reads ({e})"));
            return exit::SANDBOX;
        }
    };
    if !started.ok {
        say(format!(
            "refused: {}",
            started.error.clone().unwrap_or_else(|| "no reason given".into())
        ));
        *end_out = Some(started);
        return exit::SANDBOX;
    }
    if started.v != Some(2) {
        // A protocol 1 answer (an older daemon): the whole of it is here.
        return finish(started, say, end_out);
    }
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    loop {
        let mut kind = [0u8; 1];
        if r.read_exact(&mut kind).is_err() {
            say("the daemon closed the connection before the end of the run".into());
            return exit::SANDBOX;
        }
        match kind[0] {
            b'o' | b'e' => {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).is_err() {
                    say("the daemon closed the connection in the middle of a frame".into());
                    return exit::SANDBOX;
                }
                let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
                if r.read_exact(&mut data).is_err() {
                    say("the daemon closed the connection in the middle of a frame".into());
                    return exit::SANDBOX;
                }
                // A reader of ours that is gone is the caller's business;
                // the run goes on and its end is still waited for.
                let _ = if kind[0] == b'o' {
                    out.write_all(&data).and_then(|()| out.flush())
                } else {
                    err.write_all(&data).and_then(|()| err.flush())
                };
            }
            b'{' => {
                let mut rest = String::new();
                let _ = r.read_line(&mut rest);
                return match serde_json::from_str::<WireResponse>(&format!("{{{rest}")) {
                    Ok(end) => finish(end, say, end_out),
                    Err(e) => {
                        say(format!("the daemon's last line is not one this client reads ({e})"));
                        exit::SANDBOX
                    }
                };
            }
            other => {
                say(format!("the daemon sent a frame of unknown kind {other:#04x}"));
                return exit::SANDBOX;
            }
        }
    }
}

/// The end: what the daemon said, and the exit code.
fn finish(end: WireResponse, say: &dyn Fn(String), end_out: &mut Option<WireResponse>) -> i32 {
    if let Some(s) = &end.stdout {
        let _ = std::io::stdout().write_all(s.as_bytes());
    }
    if let Some(s) = &end.stderr {
        let _ = std::io::stderr().write_all(s.as_bytes());
    }
    for m in &end.messages {
        say(m.clone());
    }
    if !end.ok {
        say(format!("not run: {}", end.error.clone().unwrap_or_default()));
        *end_out = Some(end);
        return exit::SANDBOX;
    }
    if let Some(id) = &end.exec {
        tracing::info!(exec = %id, "recorded");
    }
    let code = end.exit_code.unwrap_or(exit::SANDBOX);
    *end_out = Some(end);
    code
}

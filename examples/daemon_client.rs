//! A daemon client for `scripts/bench.sh`: CLIENTS connections to the
//! socket at once, each sending EACH requests for MBU one after another and
//! reading each answer (protocol 1) before the next; prints executions per
//! second. Compiled, so that what is measured is the daemon, not the client.
//!
//! Usage: daemon_client SOCKET MBU CLIENTS EACH
//!
//! Or, as agents call: `daemon_client spaced N GAP_MS MBU SOCKET... [--
//! CMD ARGS...]`: one request to each socket in turn (a connection each,
//! held), and one launch of CMD, GAP_MS apart, N rounds; prints the median
//! time from request to answer (or of the launch), in milliseconds, one
//! per target, in the order given.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Instant;

fn client(socket: &str, mbu: &str, each: usize) -> Result<(), String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let request = format!("{{\"mbu\": {mbu:?}}}\n");
    let mut answer = String::new();
    for _ in 0..each {
        writer.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        answer.clear();
        reader.read_line(&mut answer).map_err(|e| e.to_string())?;
        if !answer.contains("\"ok\":true") || !answer.contains("\"exit_code\":0") {
            return Err(format!("not a successful execution: {}", answer.trim()));
        }
    }
    Ok(())
}

/// One daemon connection, for requests one at a time.
struct Connection {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Connection {
    fn open(socket: &str) -> Result<Connection, String> {
        let stream = UnixStream::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
        Ok(Connection {
            writer: stream.try_clone().map_err(|e| e.to_string())?,
            reader: BufReader::new(stream),
        })
    }

    /// One request; how long until its answer, in milliseconds.
    fn time(&mut self, request: &str) -> Result<f64, String> {
        let mut answer = String::new();
        let start = Instant::now();
        self.writer.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        self.reader.read_line(&mut answer).map_err(|e| e.to_string())?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if !answer.contains("\"ok\":true") || !answer.contains("\"exit_code\":0") {
            return Err(format!("not a successful execution: {}", answer.trim()));
        }
        Ok(ms)
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `spaced N GAP_MS MBU SOCKET... [-- CMD...]`: the medians, in order.
fn spaced(args: &[String]) -> Result<Vec<f64>, String> {
    let usage = || "usage: daemon_client spaced N GAP_MS MBU SOCKET... [-- CMD ARGS...]".to_string();
    let n: usize = args.first().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let gap = std::time::Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).ok_or_else(usage)?);
    let mbu = args.get(2).ok_or_else(usage)?;
    let rest = args.get(3..).unwrap_or_default();
    let (sockets, command) = match rest.iter().position(|a| a == "--") {
        Some(i) => (rest.get(..i).unwrap_or_default(), rest.get(i + 1..).unwrap_or_default()),
        None => (rest, &[][..]),
    };
    let request = format!("{{\"mbu\": {mbu:?}}}\n");
    let mut connections = sockets
        .iter()
        .map(|s| Connection::open(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(n); connections.len() + usize::from(!command.is_empty())];
    for _ in 0..n {
        for (c, t) in connections.iter_mut().zip(times.iter_mut()) {
            std::thread::sleep(gap);
            t.push(c.time(&request)?);
        }
        if let (Some((program, args)), Some(t)) = (command.split_first(), times.last_mut()) {
            std::thread::sleep(gap);
            let start = Instant::now();
            let status = std::process::Command::new(program)
                .args(args)
                .status()
                .map_err(|e| format!("{program}: {e}"))?;
            t.push(start.elapsed().as_secs_f64() * 1000.0);
            if !status.success() {
                return Err(format!("{program}: {status}"));
            }
        }
    }
    Ok(times.into_iter().map(median).collect())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("spaced") {
        return match spaced(args.get(1..).unwrap_or_default()) {
            Ok(medians) => {
                let text: Vec<String> = medians.iter().map(|m| format!("{m:.2}")).collect();
                println!("{}", text.join(" "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("daemon_client: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (Some(socket), Some(mbu), Some(clients), Some(each)) = (
        args.first(),
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
        args.get(3).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: daemon_client SOCKET MBU CLIENTS EACH");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients).map(|_| s.spawn(|| client(socket, mbu, each))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a client thread panicked".into())))
            .collect()
    });
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("daemon_client: {e}");
        return ExitCode::FAILURE;
    }
    let rate = (clients * each) as f64 / start.elapsed().as_secs_f64();
    println!("{rate:.1}");
    ExitCode::SUCCESS
}

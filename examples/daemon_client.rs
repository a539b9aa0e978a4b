//! A daemon client for `scripts/bench.sh`: CLIENTS connections to the
//! socket at once, each sending EACH requests for MBU one after another and
//! reading each answer (protocol 1) before the next; prints executions per
//! second. Compiled, so that what is measured is the daemon, not the client.
//!
//! Usage: daemon_client SOCKET MBU CLIENTS EACH

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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

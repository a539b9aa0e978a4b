//! Fuzzing the parsers that read what others wrote: a request line from a
//! daemon client, a profile, a role policy, the provenance log (which
//! `audit verify` and `audit show` read, and which anyone who could write to
//! it may have shaped), and what the egress proxy reads from a sandbox (a
//! TLS ClientHello, host names) with `net.allow` entries. Each target gets valid inputs mutated at random
//! (bytes flipped, inserted, cut, duplicated, tokens of the format spliced
//! in) and raw random bytes; the property is that nothing panics and every
//! answer is an `Ok` or a clear error.
//!
//! Property tests, not coverage-guided fuzzing (which needs a nightly
//! toolchain this project does not use). The run is bounded and
//! reproducible: `NINEWALL_FUZZ_ITERS` (default 10,000 per target) and
//! `NINEWALL_FUZZ_SEED` (default fixed; CI runs the default, so a failure
//! is the same failure everywhere). A failure prints the input that caused
//! it; each one found becomes a case in `regressions` below.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// xorshift64*: small, seedable, and enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("NINEWALL_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x005e_ed0f_9a11);
        Rng((seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }
}

fn iterations() -> usize {
    std::env::var("NINEWALL_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

/// One to four random edits of `input`, using `tokens` of its format.
fn mutate(rng: &mut Rng, input: &[u8], tokens: &[&str]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, u8::try_from(rng.below(256)).unwrap()),
            2 if at < out.len() => {
                let end = (at + 1 + rng.below(32)).min(out.len());
                out.drain(at..end);
            }
            3 if at < out.len() => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let piece = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            4 => out.truncate(at),
            _ => {
                let t = tokens[rng.below(tokens.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
        }
    }
    out
}

/// Runs `check` on mutations of each seed and on random bytes; a panic
/// fails the test with the input that caused it.
fn fuzz(name: &str, salt: u64, seeds: &[Vec<u8>], tokens: &[&str], mut check: impl FnMut(&[u8])) {
    let mut rng = Rng::new(salt);
    for i in 0..iterations() {
        let input = if i % 10 == 9 {
            (0..rng.below(512))
                .map(|_| u8::try_from(rng.below(256)).unwrap())
                .collect()
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed, tokens)
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        assert!(
            outcome.is_ok(),
            "{name}: panicked at iteration {i} on input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

const TOML_TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\n",
    "#",
    ",",
    "{",
    "}",
    ".",
    "..",
    "/",
    "*",
    "-1",
    "0",
    "18446744073709551616",
    "1e400",
    "\"64M\"",
    "\"9999999999T\"",
    "true",
    "\u{202e}",
    "\\u0000",
    "\"\"\"",
    "extends = \"/etc/passwd\"\n",
    "[limits]\n",
    "[fs]\n",
    "[syscalls]\nallow = [\"@all\"]\n",
    "[net]\nmode = \"host\"\n",
    "[python]\n",
    "[mbu]\nname = \"x\"\n",
    "read = [\"/\"]\n",
    "[roles.r]\nmbus = [\"reason\"]\n",
    "[workers.w]\nuser = \"root\"\nroles = [\"r\"]\n",
    "group = \"0\"\n",
];

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "-0",
    "1e999",
    "18446744073709551616",
    "\"kind\":\"exec.start\"",
    "\"kind\":\"exec.end\"",
    "\"kind\":\"gate.refused\"",
    "\"kind\":\"file\"",
    "\"prev\":\"",
    "\"exec\":\"",
    "\n",
    "\u{1b}[2J",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ninewall-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn request_lines_from_clients() {
    use ninewall::gate::exec::{LineReader, NextLine, WireRequest, MAX_REQUEST_BYTES};
    let seeds: Vec<Vec<u8>> = [
        r#"{"mbu": "reason", "args": ["-c", "print(1)"], "stdin": "1 2 3"}"#,
        r#"{"v": 2, "mbu": "reason", "workspace": "/home/agent/ws"}"#,
        r#"{"mbu": "code_generate_new", "args": []}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("WireRequest", 1, &seeds, JSON_TOKENS, |input| {
        let _ = serde_json::from_slice::<WireRequest>(input);
    });
    // The line reader over a real socket: never a line longer than asked,
    // never a panic, whatever arrives in whatever pieces.
    fuzz("LineReader", 2, &seeds, JSON_TOKENS, |input| {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut a, input).unwrap();
        drop(a);
        let mut reader = LineReader::new(b);
        let max = 64;
        for _ in 0..input.len() + 2 {
            match reader.next_line(max, Some(std::time::Duration::from_millis(50))) {
                NextLine::Line(l) => assert!(l.len() <= max + 1, "a line of {} bytes", l.len()),
                _ => break,
            }
        }
    });
    let _ = MAX_REQUEST_BYTES;
}

#[test]
fn profiles() {
    use ninewall::policy::Policy;
    use ninewall::profile::Profile;
    let dir = repo().join("profiles");
    let seeds: Vec<Vec<u8>> = ["reason", "knowledge", "document_generation", "code_generate_new"]
        .iter()
        .map(|n| std::fs::read(dir.join(format!("{n}.toml"))).unwrap())
        .chain(std::iter::once(std::fs::read(dir.join("base/python.toml")).unwrap()))
        .collect();
    let name = Path::new("fuzzed.toml");
    fuzz("Profile", 3, &seeds, TOML_TOKENS, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(profile) = Profile::from_str_named(name, &text) {
            let _ = Policy::from_profile(&profile).map(|p| p.summary());
        }
    });
}

#[test]
fn role_policies() {
    use ninewall::gate::Gate;
    let dir = scratch("policy");
    copy_dir(&repo().join("profiles"), &dir.join("profiles"));
    let seeds = vec![std::fs::read(repo().join("policy.toml")).unwrap()];
    let path = dir.join("policy.toml");
    fuzz("Gate", 4, &seeds, TOML_TOKENS, |input| {
        std::fs::write(&path, input).unwrap();
        let _ = Gate::load(&path);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log made by the real binary, then mutated: `audit verify` and `audit
/// show` read it through these functions.
#[test]
fn provenance_logs() {
    use ninewall::provenance;
    let log = sample_log();
    let seeds = vec![
        log.clone(),
        log.split(|&b| b == b'\n').take(2).collect::<Vec<_>>().join(&b'\n'),
    ];
    fuzz("audit", 5, &seeds, JSON_TOKENS, |input| {
        let _ = provenance::verify(input);
        for (id, records) in provenance::executions(input, None) {
            let _ = provenance::execution_story(&id, &records);
        }
        for r in provenance::gate_refusals(input) {
            let _ = provenance::describe_refusal(&r);
        }
    });
}

/// A few records in the shape the binary writes them, chained.
fn sample_log() -> Vec<u8> {
    use ninewall::provenance::AuditLog;
    use serde_json::json;
    let dir = scratch("log");
    let path = dir.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    let id = "2026-12-06T00:00:00Z-1-0";
    for record in [
        json!({"kind": "exec.start", "exec": id, "time": "2026-12-06T00:00:00Z", "mbu": "reason",
               "worker": {"uid": 0, "name": "agent", "client_uid": 1000}, "argv": ["/usr/bin/python3.11", "-c", "1"],
               "profile": {"files": ["/p/reason.toml"], "sha256": "00"}}),
        json!({"kind": "file", "exec": id, "seq": 1, "time": "2026-12-06T00:00:00Z", "access": "read",
               "path": "/usr/lib/python3.11/os.py", "verdict": "allowed", "syscall": "openat", "exists": true}),
        json!({"kind": "gate.refused", "time": "2026-12-06T00:00:00Z", "client": {"uid": 1000, "gid": 1000},
               "worker": "agent", "mbu": {"prefix": "n", "bytes": 9, "sha256": "00"}, "reason": "no such capability: n"}),
        json!({"kind": "exec.end", "exec": id, "time": "2026-12-06T00:00:01Z", "exit_code": 0, "reason": null}),
    ] {
        log.append(record).unwrap();
    }
    drop(log);
    let text = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ninewall::provenance::verify(&text).is_ok());
    text
}

/// What the egress proxy reads from a sandbox (a TLS ClientHello, a host
/// name) and what a profile says (`net.allow` entries), and the daemon's
/// base64 standard input: never a panic.
#[test]
fn egress_inputs() {
    use ninewall::policy::egress::{admit, usable, Host, Rule};
    // A ClientHello for "api.example" with a supported_versions extension.
    let mut hello = vec![0x16, 3, 1, 0, 0, 1, 0, 0, 0, 3, 3];
    hello.extend_from_slice(&[7; 32]);
    hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    let sni = b"api.example";
    let mut ext = vec![
        0,
        0,
        0,
        (sni.len() + 5) as u8,
        0,
        (sni.len() + 3) as u8,
        0,
        0,
        sni.len() as u8,
    ];
    ext.extend_from_slice(sni);
    ext.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let body = (hello.len() - 9) as u32;
    hello[6..9].copy_from_slice(&body.to_be_bytes()[1..]);
    let record = (hello.len() - 5) as u16;
    hello[3..5].copy_from_slice(&record.to_be_bytes());
    assert_eq!(
        ninewall::sandbox::proxy::client_hello_name(&hello),
        Some(Some("api.example".to_string()))
    );
    fuzz(
        "ClientHello",
        11,
        &[hello],
        &["\u{16}\u{3}\u{1}", "\0\0", "\u{ff}"],
        |input| {
            let _ = ninewall::sandbox::proxy::client_hello_name(input);
        },
    );
    let rules: Vec<Rule> = [
        "api.example:443",
        "*.docs.example:443",
        "10.0.0.0/8:80",
        "[fd00::/64]:443",
    ]
    .iter()
    .map(|r| Rule::parse(r).unwrap())
    .collect();
    let seeds: Vec<Vec<u8>> = [
        "api.example:443",
        "*.docs.example:443",
        "[fd00::1]:443",
        "10.1.0.0/16:5432",
        "127.0.0.1:80",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz(
        "net.allow",
        12,
        &seeds,
        &["*.", ":", "[", "]", "/", "::", "."],
        |input| {
            let text = String::from_utf8_lossy(input);
            if let Ok(r) = Rule::parse(&text) {
                let _ = r.to_string();
                let _ = rules.iter().any(|q| q.covers(&r) || r.covers(q));
            }
            let host = text.rsplit_once(':').map_or(text.as_ref(), |(h, _)| h);
            if let Some(h) = Host::parse(host) {
                if let Ok(a) = admit(&rules, &h, 443) {
                    let _ = usable(&rules, a, 443, &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]);
                }
            }
        },
    );
    fuzz(
        "stdin_base64",
        13,
        &[b"aGVsbG8=".to_vec(), b"AAEC/w==".to_vec()],
        &["=", "+", "/"],
        |input| {
            if let Some(bytes) = ninewall::gate::exec::decode_base64(&String::from_utf8_lossy(input)) {
                assert_eq!(
                    ninewall::gate::exec::decode_base64(&ninewall::gate::exec::encode_base64(&bytes)),
                    Some(bytes)
                );
            }
        },
    );
}

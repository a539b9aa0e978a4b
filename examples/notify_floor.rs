//! The floor under ninewall's cost per recorded file access, for
//! `scripts/bench.sh`; the code is `ninewall::bench` (it is built from the
//! crate's own syscall layer, which is not public).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ninewall::bench::notify_floor(&args)
}

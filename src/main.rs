//! The `ninewall` binary: parse the command line, run, exit with the code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match ninewall::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap's own exit code for --help/--version is 0; for errors 2.
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let code = ninewall::run::main(cli);
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

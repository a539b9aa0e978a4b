//! The exit codes of `ninewall` (shared/DESIGN.md, "Exit codes"): the only
//! place they are defined. No wall: [`crate::error::Error::exit_code`] and
//! [`crate::sandbox::Outcome::exit_code`] choose among them, and the
//! sandbox's own processes exit with them.

/// Bad command-line or profile input; nothing ran.
pub const USAGE: i32 = 2;
/// The wall-clock limit ended the execution.
pub const TIMEOUT: i32 = 124;
/// The sandbox could not be built, or the request was refused.
pub const SANDBOX: i32 = 125;
/// The program may not be executed.
pub const NOT_EXECUTABLE: i32 = 126;
/// The program was not found.
pub const NOT_FOUND: i32 = 127;
/// Killed by signal N: this plus N.
pub const SIGNALED: i32 = 128;

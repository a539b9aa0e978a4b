//! All integration tests, one binary: they run the real `ninewall` binary
//! against the real kernel. See tests/support for how identities are chosen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod suite;
mod support;

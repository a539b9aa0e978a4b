#!/usr/bin/env bash
# The escape-attempt suite: every attempt in scripts/escape/attempts.py runs once
# outside any sandbox (to prove it works on this host) and then inside each
# shipped profile. Prints a table and "escape: N blocked, M escaped, K errors of
# T"; exits non-zero on any ESCAPED or ERROR. Builds ninewall first.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" # .cargo/config.toml applies to builds started here
cargo build --release --quiet
exec /usr/bin/python3.11 "$repo/scripts/escape/harness.py" \
    "${CARGO_TARGET_DIR:-$repo/target}/$(rustc --print host-tuple)/release/ninewall" "$repo/profiles"

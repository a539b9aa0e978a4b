#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and the integration tests that run the
# real ninewall binary against the real kernel.
#
# As root it runs the suite twice, and then the escape attempts twice:
#   1. as root, where every sandbox test runs once as root and once as an
#      unprivileged user (NINEWALL_TEST_USER, created here: ninewall-test);
#   2. entirely as that unprivileged user (the test binaries themselves);
#   3. and 4. scripts/escape-check.sh's attempts, as root and as that user.
# As an ordinary user it runs the unprivileged half only, and says so.
#
# With CI=true no test may skip: a missing prerequisite is a failure.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ "$(id -u)" != 0 ]; then
    echo "test.sh: not root: running the unprivileged half only" >&2
    exec cargo test
fi

user=${NINEWALL_TEST_USER:-ninewall-test}
if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi
export NINEWALL_TEST_USER=$user

# The knowledge profile reads /srv/knowledge; give it something to read.
if [ ! -e /srv/knowledge/README.txt ]; then
    mkdir -p /srv/knowledge
    printf 'ninewall test knowledge: the box holds.\n' >/srv/knowledge/README.txt
fi
chmod -R a+rX /srv/knowledge

# A target directory the unprivileged user can read, so pass 2 can run the
# very binaries pass 1 built; one per checkout, so that two checkouts on one
# host never build over each other.
checkout=$(printf '%s' "$repo" | sha256sum | cut -c1-12)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/ninewall-test-target-$checkout}
mkdir -p "$CARGO_TARGET_DIR"
chmod 755 "$CARGO_TARGET_DIR"
# Executables the tests make must live outside /tmp (a sandbox's own) in a
# directory both users can write: this host's /var/tmp may not be.
export NINEWALL_TEST_EXEC_DIR=$CARGO_TARGET_DIR/exec
mkdir -p "$NINEWALL_TEST_EXEC_DIR"
chmod 1777 "$NINEWALL_TEST_EXEC_DIR"

echo "== pass 1: as root (each sandbox also as $user)"
cargo test

echo "== pass 2: the test binaries as $user"
profiles=$(mktemp -d /var/tmp/ninewall-test-profiles.XXXXXX)
policy=$(mktemp /var/tmp/ninewall-test-policy.XXXXXX)
trap 'rm -rf "$profiles" "$policy"' EXIT
cp -r profiles/. "$profiles/"
cp policy.toml "$policy"
chmod 644 "$policy"
chmod -R a+rX "$profiles"
chmod 755 "$profiles"
mapfile -t bins < <(cargo test --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')
[ "${#bins[@]}" -gt 0 ] || { echo "test.sh: no test binaries found" >&2; exit 1; }
for bin in "${bins[@]}"; do
    (cd / && runuser -u "$user" -- env NINEWALL_TEST_UNPRIVILEGED_PASS=1 NINEWALL_TEST_PROFILES="$profiles" \
        NINEWALL_TEST_POLICY="$policy" \
        NINEWALL_TEST_EXEC_DIR="$NINEWALL_TEST_EXEC_DIR" ${CI:+CI="$CI"} "$bin")
done

echo "== pass 3: the escape attempts as root"
scripts/escape-check.sh

echo "== pass 4: the escape attempts as $user"
cp -r scripts/escape "$profiles/.escape"
chmod -R a+rX "$profiles/.escape"
(cd / && runuser -u "$user" -- env NINEWALL_TEST_EXEC_DIR="$NINEWALL_TEST_EXEC_DIR" \
    /usr/bin/python3.11 "$profiles/.escape/harness.py" "$CARGO_TARGET_DIR/$(rustc --print host-tuple)/release/ninewall" "$profiles")

echo "== pass 5: a fresh cargo install into a temporary root, run from /"
# What an admin who installs with cargo gets: the static binary, and the
# shipped profiles found by name (NINEWALL_PROFILES; scripts/install.sh puts
# them in /etc/ninewall/profiles).
install_root=$(mktemp -d /var/tmp/ninewall-test-install.XXXXXX)
trap 'rm -rf "$profiles" "$policy" "$install_root"' EXIT
cargo install --quiet --locked --path . --root "$install_root"
# Static: no PT_INTERP program header (no dynamic loader to run it).
python3 - "$install_root/bin/ninewall" <<'PY' || { echo "test.sh: cargo install did not give a static binary" >&2; exit 1; }
import struct, sys
elf = open(sys.argv[1], "rb").read()
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
sys.exit(3 in types)
PY
answer=$(cd / && NINEWALL_PROFILES="$profiles" "$install_root/bin/ninewall" run --profile reason -- -c 'print(6 * 7)')
[ "$answer" = 42 ] || { echo "test.sh: the installed ninewall answered '$answer', not 42" >&2; exit 1; }
echo "installed ninewall ran the reason profile from /"

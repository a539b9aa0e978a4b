#!/usr/bin/env bash
# Installs ninewall like a system tool: the binary, the shipped profiles,
# the example role policy, the systemd units, the Python client and the
# README, each in its FHS place. Existing configuration (profiles, policy) is
# never overwritten: a newer shipped copy lands beside it as *.new.
#
#   scripts/install.sh            build (release) and install under /usr/local, /etc
#   DESTDIR=/tmp/root scripts/install.sh   the same tree under a staging root
#   NINEWALL_BIN=path scripts/install.sh   install that binary, build nothing
#
# Then: `ninewall run --profile reason -- -c 'print(6*7)'` finds the profile by
# name in /etc/ninewall/profiles; `systemctl enable --now ninewall.socket`
# starts the daemon on its first connection.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
dest=${DESTDIR:-}
prefix=${PREFIX:-/usr/local}

bin=${NINEWALL_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=${CARGO_TARGET_DIR:-$repo/target}/$(rustc --print host-tuple)/release/ninewall
fi
[ -x "$bin" ] || { echo "install.sh: no binary at $bin" >&2; exit 1; }

# A file of configuration: installed if absent, else beside it as .new.
config() { # mode source target
    if [ -e "$3" ] && ! cmp -s "$2" "$3"; then
        install -m "$1" "$2" "$3.new"
        echo "install.sh: kept $3 (yours); the shipped one is $3.new" >&2
    else
        install -m "$1" "$2" "$3"
    fi
}

install -d -m 755 "$dest$prefix/bin" "$dest/etc/ninewall/profiles/base" "$dest/etc/systemd/system" \
    "$dest$prefix/share/doc/ninewall" "$dest$prefix/lib/ninewall/python/ninewall" "$dest/var/log/ninewall"
chmod 700 "$dest/var/log/ninewall"
install -m 755 "$bin" "$dest$prefix/bin/ninewall"
for p in profiles/*.toml; do
    config 644 "$p" "$dest/etc/ninewall/profiles/$(basename "$p")"
done
for p in profiles/base/*.toml; do
    config 644 "$p" "$dest/etc/ninewall/profiles/base/$(basename "$p")"
done
# The example policy names profiles by directory: the installed one.
sed "s|^profiles = .*|profiles = \"/etc/ninewall/profiles\"|" policy.toml >"$dest/etc/ninewall/policy.toml.shipped"
config 644 "$dest/etc/ninewall/policy.toml.shipped" "$dest/etc/ninewall/policy.toml"
rm -f "$dest/etc/ninewall/policy.toml.shipped"
sed "s|/usr/local/bin/ninewall|$prefix/bin/ninewall|" systemd/ninewall.service >"$dest/etc/systemd/system/ninewall.service"
chmod 644 "$dest/etc/systemd/system/ninewall.service"
install -m 644 systemd/ninewall.socket "$dest/etc/systemd/system/ninewall.socket"
install -m 644 clients/python/ninewall/__init__.py "$dest$prefix/lib/ninewall/python/ninewall/__init__.py"
install -m 644 README.md "$dest$prefix/share/doc/ninewall/README.md"
# The man page and completions, made by the binary from its own command line.
install -d -m 755 "$dest$prefix/share/man/man1" "$dest$prefix/share/bash-completion/completions" \
    "$dest$prefix/share/zsh/site-functions" "$dest$prefix/share/fish/vendor_completions.d"
"$bin" man >"$dest$prefix/share/man/man1/ninewall.1"
"$bin" completions bash >"$dest$prefix/share/bash-completion/completions/ninewall"
"$bin" completions zsh >"$dest$prefix/share/zsh/site-functions/_ninewall"
"$bin" completions fish >"$dest$prefix/share/fish/vendor_completions.d/ninewall.fish"
chmod 644 "$dest$prefix/share/man/man1/ninewall.1" "$dest$prefix/share/bash-completion/completions/ninewall" \
    "$dest$prefix/share/zsh/site-functions/_ninewall" "$dest$prefix/share/fish/vendor_completions.d/ninewall.fish"
echo "installed: $dest$prefix/bin/ninewall, profiles in $dest/etc/ninewall/profiles, policy $dest/etc/ninewall/policy.toml, units in $dest/etc/systemd/system, the Python client in $dest$prefix/lib/ninewall/python (add it to PYTHONPATH)"

#!/usr/bin/env bash
# Benchmarks ninewall against bubblewrap and strace, side by side in one run,
# and writes bench/RESULTS.md (also printed). Timings are medians with min-max
# from hyperfine; every ratio is against a baseline measured in the same run,
# because these machines are shared and noisy. Run as root (it installs
# bubblewrap, hyperfine and strace from Debian's packages if missing).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v strace >/dev/null || missing+=(strace)
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --quiet
cargo build --release --quiet --example notify_floor
cargo build --release --quiet --example daemon_client
bin=${CARGO_TARGET_DIR:-$repo/target}/$(rustc --print host-tuple)/release/ninewall
# The floor under a recorded access: the same syscalls notified, answered by
# a bare listener (no sandbox, no record); see examples/notify_floor.rs.
floor=${CARGO_TARGET_DIR:-$repo/target}/$(rustc --print host-tuple)/release/examples/notify_floor
# A compiled daemon client (examples/daemon_client.rs), so that the daemon's
# rate is the daemon's.
client=${CARGO_TARGET_DIR:-$repo/target}/$(rustc --print host-tuple)/release/examples/daemon_client
work=$(mktemp -d /var/tmp/ninewall-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r profiles "$work/profiles"
# A host workspace of the caller's, private (as root it is idmapped).
mkdir -m 0700 "$work/ws"
export NINEWALL_AUDIT_LOG=$work/audit.jsonl

# Every wall: namespaces, Landlock, seccomp, cgroup (as root) and rlimits,
# provenance with file events.
cat >"$work/profiles/true.toml" <<'TOML'
[mbu]
name = "bench-true"
[exec]
command = ["/usr/bin/true"]
executables = ["/usr/bin/true"]
[fs]
read = ["/lib", "/lib64"]
libraries = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64"]
TOML
for mode in all writes none; do
    cat >"$work/profiles/py-$mode.toml" <<TOML
extends = "base/python"
[mbu]
name = "bench-python"
[exec]
command = ["/usr/bin/python3.11", "-I", "-S"]
[syscalls]
allow = ["@default"]
[provenance]
files = "$mode"
TOML
done

bwrap_args=(--unshare-all --die-with-parent --new-session --ro-bind /usr /usr --ro-bind /lib /lib --ro-bind /lib64 /lib64 --ro-bind /bin /bin)
json=$work/json
mkdir -p "$json"
# Each comparison runs in ROUNDS rounds that take turns (bare, peer, ninewall,
# bare, ...), so that a shared machine's load, which drifts over seconds,
# falls on all of them alike; the summary pools the rounds' times.
ROUNDS=8
round=0
hf() { # name runs-per-round command...
    local name=$1 runs=$2
    shift 2
    hyperfine --style none --warmup "${WARMUP:-3}" --runs "$runs" -N --export-json "$json/$name.$round.json" "$@" >/dev/null 2>&1
}
hf_shell() { # name runs-per-round "shell command"
    local name=$1 runs=$2
    shift 2
    hyperfine --style none --warmup 1 --runs "$runs" --export-json "$json/$name.$round.json" "$@" >/dev/null 2>&1
}

# A sealed log (audit setup-keys): a seal after every execution's end.
"$bin" audit setup-keys "$work/sealed.jsonl" >/dev/null
echo "measuring launch of /bin/true ..." >&2
for round in $(seq $ROUNDS); do
    hf true-bare 10 "/usr/bin/true"
    hf true-bwrap 10 "bwrap ${bwrap_args[*]} /usr/bin/true"
    hf true-ninewall 10 "$bin run --profile $work/profiles/true.toml"
    hf true-ninewall-ws 10 "$bin run --profile $work/profiles/true.toml --workspace $work/ws"
    hf true-ninewall-sealed 10 "$bin run --profile $work/profiles/true.toml --audit-log $work/sealed.jsonl"
    for n in 2 8; do
        hf_shell "true-bare-x$n" 1 "seq 200 | xargs -P $n -I{} /usr/bin/true"
        hf_shell "true-bwrap-x$n" 1 "seq 200 | xargs -P $n -I{} bwrap ${bwrap_args[*]} /usr/bin/true"
        hf_shell "true-ninewall-x$n" 1 "seq 200 | xargs -P $n -I{} $bin run --profile $work/profiles/true.toml"
    done
done

# CPU per launch: the machine's busy time (/proc/stat, every CPU, kernel
# workers included) during 200 sequential launches of each, in blocks of 25
# that take turns. Not the launchers' rusage: bwrap exits without waiting
# for its sandbox's pid 1, whose CPU then shows in none of bwrap's. This,
# not latency, is what 8 launches in flight on 2 cores are bound by.
echo "measuring CPU per launch ..." >&2
cpu=$(python3 - "$bin" "$work/profiles/true.toml" "${bwrap_args[@]}" <<'PY'
import os, subprocess, sys
bin, profile, bwrap_args = sys.argv[1], sys.argv[2], sys.argv[3:]
cmds = {"bwrap": ["bwrap", *bwrap_args, "/usr/bin/true"], "ninewall": [bin, "run", "--profile", profile]}
def busy_ticks():
    # user, nice, system, irq, softirq (not idle, iowait, steal, or guest,
    # which user already counts)
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[0] + f[1] + f[2] + f[5] + f[6]
used = {k: 0 for k in cmds}
for _ in range(8):
    for k, c in cmds.items():
        before = busy_ticks()
        for _ in range(25):
            subprocess.run(c, stdout=subprocess.DEVNULL, check=True)
        used[k] += busy_ticks() - before
hz = os.sysconf("SC_CLK_TCK")
print(used["ninewall"] * 1000 / hz / 200, used["bwrap"] * 1000 / hz / 200)
PY
)
read -r cpu_ninewall cpu_bwrap <<<"$cpu"

# As agents call: one launch every 0.2 s, the three taking turns. A launch
# after a quiet spell pays what back-to-back ones do not (the first cgroup
# migration after one waits for an RCU grace period unless the host has
# favordynmods); `ninewall probe` measures that wait on its own.
echo "measuring launches spaced 0.2 s apart ..." >&2
spaced=$(python3 - "$bin" "$work/profiles/true.toml" "${bwrap_args[@]}" <<'PY'
import statistics, subprocess, sys, time
b, prof, bw = sys.argv[1], sys.argv[2], sys.argv[3:]
cmds = {"bare": ["/usr/bin/true"], "bwrap": ["bwrap", *bw, "/usr/bin/true"], "ninewall": [b, "run", "--profile", prof]}
t = {k: [] for k in cmds}
for _ in range(40):
    for k, c in cmds.items():
        time.sleep(0.2)
        s = time.perf_counter()
        subprocess.run(c, check=True)
        t[k].append((time.perf_counter() - s) * 1000)
print(" ".join("%.2f" % statistics.median(t[k]) for k in cmds))
PY
)
read -r spaced_bare spaced_bwrap spaced_ninewall <<<"$spaced"
migration=$("$bin" probe --json | python3 -c 'import json, sys; m = json.load(sys.stdin)["cgroup_migration"]; print(m["ms"], "|", m["note"])')

echo "measuring Python start ..." >&2
for round in $(seq $ROUNDS); do
    hf py-bare 6 "/usr/bin/python3.11 -I -S -c pass"
    hf py-bwrap 6 "bwrap ${bwrap_args[*]} /usr/bin/python3.11 -I -S -c pass"
    hf py-ninewall 6 "$bin run --profile $work/profiles/py-all.toml -- -c pass"
done

# Wall 2: the shipped code_generate_new, and the same profile without its
# [python] section (the same interpreter, flags and kernel walls, no guard).
sed -e '/^\[python\]/,/^\[/{/^\[python\]/d;/^\[/!d}' -e 's/name = "code_generate_new"/name = "code_generate_new_unguarded"/' \
    profiles/code_generate_new.toml >"$work/profiles/unguarded.toml"
grep -q '^\[python\]' "$work/profiles/unguarded.toml" && { echo "bench: the unguarded profile still has [python]" >&2; exit 1; }
# Everyday model code that reads many attributes (each one through the guard).
snippet="import json, statistics
from dataclasses import dataclass
@dataclass
class Row:
    name: str
    value: float
    def scaled(self, k):
        return Row(self.name.upper(), self.value * k)
rows = [Row('r%d' % i, i * 0.5) for i in range(3000)]
out = [r.scaled(2) for r in rows if r.value % 3 != 1]
print(json.dumps({'n': len(out), 'mean': statistics.mean(r.value for r in out), 'names': sorted(r.name for r in out)[:3]}))"
echo "measuring the interpreter guard ..." >&2
for round in $(seq $ROUNDS); do
    hf guard-start-off 6 "$bin run --profile $work/profiles/unguarded.toml -- -c pass"
    hf guard-start-on 6 "$bin run --profile $work/profiles/code_generate_new.toml -- -c pass"
    hf guard-code-off 4 "$bin run --profile $work/profiles/unguarded.toml -- -c \"$snippet\""
    hf guard-code-on 4 "$bin run --profile $work/profiles/code_generate_new.toml -- -c \"$snippet\""
done

echo "measuring file-access recording ..." >&2
imports="import json, email, http.client, xml.dom.minidom, asyncio, unittest"
loop="import os
for i in range(20000): os.close(os.open('/usr/lib/python3.11/os.py', os.O_RDONLY))"
for round in $(seq $ROUNDS); do
    WARMUP=1 hf imp-bare 4 "/usr/bin/python3.11 -I -S -c '$imports'"
    WARMUP=1 hf imp-strace 4 "strace -f -qq -e trace=%file -o $work/strace.out /usr/bin/python3.11 -I -S -c '$imports'"
    for mode in none writes all; do
        WARMUP=1 hf "imp-ninewall-$mode" 4 "$bin run --profile $work/profiles/py-$mode.toml -- -c '$imports'"
    done
    for mode in none read resolve; do
        WARMUP=1 hf "imp-floor-$mode" 4 "$floor $mode /usr/bin/python3.11 -I -S -c '$imports'"
    done
    WARMUP=0 hf loop-bare 1 "/usr/bin/python3.11 -I -S -c \"$loop\""
    WARMUP=0 hf loop-strace 1 "strace -f -qq -e trace=%file -o $work/strace.out /usr/bin/python3.11 -I -S -c \"$loop\""
    for mode in none all; do
        WARMUP=0 hf "loop-ninewall-$mode" 1 "$bin run --profile $work/profiles/py-$mode.toml -- -c \"$loop\""
    done
    for mode in none read resolve; do
        WARMUP=0 hf "loop-floor-$mode" 1 "$floor $mode /usr/bin/python3.11 -I -S -c \"$loop\""
    done
done
# The imports as agents call: one run every 0.2 s, bare and under ninewall
# (files = "none" and "all") taking turns; medians of 20.
echo "measuring the imports spaced 0.2 s apart ..." >&2
spaced_py=$(python3 - "$bin" "$work/profiles" "$imports" <<'PY'
import statistics, subprocess, sys, time
b, profiles, code = sys.argv[1], sys.argv[2], sys.argv[3]
cmds = {
    "bare": ["/usr/bin/python3.11", "-I", "-S", "-c", code],
    "none": [b, "run", "--profile", f"{profiles}/py-none.toml", "--", "-c", code],
    "all": [b, "run", "--profile", f"{profiles}/py-all.toml", "--", "-c", code],
}
t = {k: [] for k in cmds}
for _ in range(20):
    for k, c in cmds.items():
        time.sleep(0.2)
        s = time.perf_counter()
        subprocess.run(c, check=True, stdout=subprocess.DEVNULL)
        t[k].append((time.perf_counter() - s) * 1000)
print(" ".join("%.2f" % statistics.median(t[k]) for k in cmds))
PY
)
# How many accesses a run records, from the log itself.
: >"$work/count.jsonl"
NINEWALL_AUDIT_LOG=$work/count.jsonl "$bin" run --profile "$work/profiles/py-all.toml" -- -c "$imports"
# Accesses recorded: one per file record, and the count each
# file.repeated stands for (identical accesses in a row).
accesses() {
    python3 -c 'import json, sys
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    n += 1 if r["kind"] == "file" else r.get("count", 0) if r["kind"] == "file.repeated" else 0
print(n)' "$1"
}
imp_events=$(accesses "$work/count.jsonl")
: >"$work/count.jsonl"
NINEWALL_AUDIT_LOG=$work/count.jsonl "$bin" run --profile "$work/profiles/py-all.toml" -- -c "$loop"
loop_events=$(accesses "$work/count.jsonl")
floor_loop_n=$("$floor" read /usr/bin/python3.11 -I -S -c "$loop" 2>&1 >/dev/null | sed -n 's/.*: \([0-9]*\) notifications answered/\1/p')

echo "measuring the daemon ..." >&2
# The same every-wall /bin/true, granted by a policy to whoever runs this.
cp "$work/profiles/true.toml" "$work/profiles/bench-true.toml"
# And an MBU that writes 8 MiB, for clients that never read it.
cat >"$work/profiles/bench-flood.toml" <<'TOML'
extends = "base/python"
[mbu]
name = "bench-flood"
[exec]
command = ["/usr/bin/python3.11", "-I", "-S", "-c", "import sys\nb = bytes(1 << 20)\nfor _ in range(8): sys.stdout.buffer.write(b)"]
[limits]
output = "16M"
TOML
cat >"$work/policy.toml" <<TOML
profiles = "profiles"
[roles.bench]
mbus = ["bench-true", "bench-flood"]
[workers.bench]
user = "$(id -u)"
roles = ["bench"]
TOML
"$bin" serve --policy "$work/policy.toml" --socket "$work/ninewall.sock" --audit-log "$work/daemon.jsonl" 2>/dev/null &
daemon=$!
while [ ! -S "$work/ninewall.sock" ]; do sleep 0.05; done
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$daemon/status"; }
# As agents call the daemon: one request every 0.2 s to it (warm sandboxes,
# the default), to a daemon without them (--warm 0), and a bwrap launch,
# taking turns; medians of 40 each, timed by the compiled client.
"$bin" serve --warm 0 --policy "$work/policy.toml" --socket "$work/cold.sock" --audit-log "$work/daemon-cold.jsonl" 2>/dev/null &
cold_daemon=$!
while [ ! -S "$work/cold.sock" ]; do sleep 0.05; done
sleep 2 # the warm sandboxes are built
read -r daemon_spaced_warm daemon_spaced_cold daemon_spaced_bwrap < <("$client" spaced 40 200 bench-true \
    "$work/ninewall.sock" "$work/cold.sock" -- bwrap "${bwrap_args[@]}" /usr/bin/true)
kill -TERM "$cold_daemon"
wait "$cold_daemon" || true
# The first 10 executions come from 10 clients at once, so that the
# comparison is of executions, not of how many threads have existed.
"$client" "$work/ninewall.sock" bench-true 10 1 >/dev/null
daemon_rss_10=$(rss)
daemon_rate_1=$("$client" "$work/ninewall.sock" bench-true 1 200)
daemon_rate_8=$("$client" "$work/ninewall.sock" bench-true 8 225)
daemon_rss_2010=$(rss) # after 2,010
# 16 clients ask for 8 MiB each (protocol 2) and read none of it; they hang
# up after 6 s, which cancels their executions.
stalled=()
for _ in $(seq 16); do
    python3 -I -S -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"{\"v\": 2, \"mbu\": \"bench-flood\"}\n"); time.sleep(6)' "$work/ninewall.sock" &
    stalled+=($!)
done
sleep 4
daemon_rss_stalled=$(rss)
wait "${stalled[@]}"
kill -TERM "$daemon"
wait "$daemon" || true

echo "measuring the egress proxy ..." >&2
# Wall 6's proxy: a server on the host's loopback; the same client measures
# 300 small requests one connection each and one 256 MiB download, once on
# the host straight to the server (the baseline) and once in a proxy-mode
# sandbox through the supervisor's proxy. Times are the client's own, so
# the sandbox's launch is not in them.
cat >"$work/proxy-server.py" <<'PY'
import socket, sys, threading
big = b"x" * (1 << 20)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(128)
print(srv.getsockname()[1], flush=True)
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = c.recv(4096)
        if not chunk:
            return c.close()
        head += chunk
    if b" /big " in head or b"/big HTTP" in head:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (256 << 20))
        for _ in range(256):
            c.sendall(big)
    else:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
cat >"$work/proxy-client.py" <<'PY'
import socket, sys, time
how, port = sys.argv[1], int(sys.argv[2])
def get(path):
    if how == "proxy":
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(b"GET http://localhost:%d%s HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (port, path, port))
    else:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (path, port))
    n = 0
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        n += len(chunk)
    s.close()
    return n
get(b"/small")
t = time.perf_counter()
for _ in range(300):
    get(b"/small")
per = (time.perf_counter() - t) / 300 * 1e6
t = time.perf_counter()
n = get(b"/big")
mbs = n / (time.perf_counter() - t) / (1 << 20)
print("%.1f %.1f" % (per, mbs))
PY
coproc PROXY_SERVER { exec /usr/bin/python3.11 "$work/proxy-server.py"; }
read -r proxy_port <&"${PROXY_SERVER[0]}"
cat >"$work/profiles/bench-proxy.toml" <<TOML
extends = "base/python"
[mbu]
name = "bench-proxy"
[exec]
command = ["/usr/bin/python3.11", "-I", "-S"]
[net]
mode = "proxy"
allow = ["localhost:$proxy_port"]
[syscalls]
allow = ["@default", "@network-io"]
[limits]
connections = 1000
connection_bytes = "1G"
[provenance]
files = "none"
TOML
proxy_direct=""
proxy_through=""
for _ in 1 2 3; do
    proxy_direct+="$(/usr/bin/python3.11 "$work/proxy-client.py" direct "$proxy_port");"
    proxy_through+="$("$bin" run --profile "$work/profiles/bench-proxy.toml" -- - proxy "$proxy_port" <"$work/proxy-client.py");"
done
kill "$PROXY_SERVER_PID" 2>/dev/null || true

echo "measuring the supervisor's peak RSS ..." >&2
# The supervisor's own (RUSAGE_SELF), as -v reports it: GNU time's %M would
# be the largest process of the tree, which is Python.
rss_kb=$("$bin" run -v --profile "$work/profiles/py-all.toml" -- -c "$imports" 2>&1 >/dev/null | sed -n 's/.*supervisor peak RSS \([0-9]*\) KiB.*/\1/p')

python3 - "$json" "$imp_events" "$loop_events" "$rss_kb" "$daemon_rate_1" "$daemon_rate_8" "$daemon_rss_10" "$daemon_rss_2010" "$cpu_ninewall" "$cpu_bwrap" "$floor_loop_n" "$daemon_rss_stalled" "$spaced_bare $spaced_bwrap $spaced_ninewall" "$migration" "$proxy_direct" "$proxy_through" "$daemon_spaced_warm $daemon_spaced_cold $daemon_spaced_bwrap" "$spaced_py" >bench/RESULTS.md <<'PY'
import json, os, platform, subprocess, sys, datetime
rss_stalled = int(sys.argv[12])
spaced_bare, spaced_bwrap, spaced_ninewall = (float(x) for x in sys.argv[13].split())
migration_ms, _, migration_note = sys.argv[14].partition(" | ")
def trio(text):
    # Three runs of "µs-per-connection MiB/s": the median of each.
    runs = [tuple(float(x) for x in r.split()) for r in text.split(";") if r.strip()]
    return sorted(r[0] for r in runs)[len(runs) // 2], sorted(r[1] for r in runs)[len(runs) // 2]
proxy_direct, proxy_through = trio(sys.argv[15]), trio(sys.argv[16])
daemon_warm, daemon_cold, daemon_bwrap = (float(x) for x in sys.argv[17].split())
py_spaced_bare, py_spaced_none, py_spaced_all = (float(x) for x in sys.argv[18].split())
d, imp_events, loop_events, rss_kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rate_1, rate_8, rss_10, rss_2010 = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
cpu_ninewall, cpu_bwrap = float(sys.argv[9]), float(sys.argv[10])
floor_loop_n = int(sys.argv[11])
def t(name):
    # Every round's times, pooled.
    times = sorted(
        x
        for f in os.listdir(d)
        if f.startswith(name + ".") and f[len(name) + 1 : -len(".json")].isdigit()
        for x in json.load(open(os.path.join(d, f)))["results"][0]["times"]
    )
    n = len(times)
    median = (times[n // 2] + times[(n - 1) // 2]) / 2
    return median * 1000, times[0] * 1000, times[-1] * 1000
def rounds(name):
    # Each round's median, by round number.
    out = {}
    for f in os.listdir(d):
        r = f[len(name) + 1 : -len(".json")]
        if f.startswith(name + ".") and r.isdigit():
            times = sorted(json.load(open(os.path.join(d, f)))["results"][0]["times"])
            n = len(times)
            out[int(r)] = (times[n // 2] + times[(n - 1) // 2]) / 2
    return out
def row(label, name, base):
    m, lo, hi = t(name)
    ratio = f"{m / t(base)[0]:.2f}x"
    if name != base:
        # The same ratio within each round (the two measured seconds apart):
        # how much of it is the machine's noise.
        a, b = rounds(name), rounds(base)
        per = sorted(a[r] / b[r] for r in a if r in b and b[r] > 0)
        if per:
            ratio += f" ({per[0]:.2f}-{per[-1]:.2f})"
    return f"| {label} | {m:.2f} | {lo:.2f}-{hi:.2f} | {ratio} |"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = [
    "# ninewall benchmark",
    "",
    f"Run `scripts/bench.sh` on {datetime.date.today()}: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}, as uid {os.getuid()}.",
    "Times in milliseconds (median, min-max over all runs); each comparison ran in 8 rounds that took turns, and ratios are against the row named as baseline, measured in the same rounds: the median's ratio, then in brackets the lowest and highest of the rounds' own ratios.",
    "",
    "## Launch of /bin/true (baseline: bwrap)",
    "",
    "| what | median ms | min-max | vs bwrap |",
    "|---|---|---|---|",
    row("bare exec", "true-bare", "true-bwrap"),
    row("bwrap --unshare-all, ro binds of /usr /lib /lib64 /bin", "true-bwrap", "true-bwrap"),
    row("ninewall, every wall (+ provenance, file events)", "true-ninewall", "true-bwrap"),
]
for n in (2, 8):
    out += [row(f"200 launches, {n} in flight: bare", f"true-bare-x{n}", f"true-bwrap-x{n}"),
            row(f"200 launches, {n} in flight: bwrap", f"true-bwrap-x{n}", f"true-bwrap-x{n}"),
            row(f"200 launches, {n} in flight: ninewall", f"true-ninewall-x{n}", f"true-bwrap-x{n}")]
ws_m, ws_base = t("true-ninewall-ws")[0], t("true-ninewall")[0]
seal_m = t("true-ninewall-sealed")[0]
out += ["", f"With a host workspace (`--workspace`, a mode-0700 directory; as root opened once and bound as an idmapped mount, wall 3): {ws_m:.2f} ms, {ws_m - ws_base:+.2f} ms ({ws_m / ws_base:.2f}x) against the same launch without one, in the same rounds."]
out += ["", f"With a sealed log (`audit setup-keys`: an HMAC seal, key ratchet and witness line after each execution's end): {seal_m:.2f} ms, {seal_m - ws_base:+.2f} ms ({seal_m / ws_base:.2f}x) against the same launch with an unsealed log, in the same rounds."]
out += ["", f"CPU per launch, the machine's busy time (/proc/stat, kernel workers included) over 200 sequential launches each, in blocks of 25 that took turns: ninewall {cpu_ninewall:.2f} ms, bwrap {cpu_bwrap:.2f} ms ({cpu_ninewall / cpu_bwrap:.2f}x)."]
out += ["", "## Launches spaced 0.2 s apart, as agents call (baseline: bwrap; 40 each, taking turns)", "",
        "| what | median ms | vs bwrap |", "|---|---|---|",
        f"| bare exec | {spaced_bare:.2f} | {spaced_bare / spaced_bwrap:.2f}x |",
        f"| bwrap --unshare-all | {spaced_bwrap:.2f} | 1.00x |",
        f"| ninewall, every wall | {spaced_ninewall:.2f} | {spaced_ninewall / spaced_bwrap:.2f}x |",
        "", f"Moving a process into a fresh cgroup after 150 ms of quiet (`ninewall probe`), during this run: {migration_ms} ms ({migration_note})."]
out += ["", "## Python start, `python3 -I -S -c pass` (baseline: bwrap)", "",
        "| what | median ms | min-max | vs bwrap |", "|---|---|---|---|",
        row("bare", "py-bare", "py-bwrap"), row("bwrap", "py-bwrap", "py-bwrap"),
        row("ninewall, every wall", "py-ninewall", "py-bwrap")]
out += ["", "## Interpreter guard (wall 2; baseline: the same profile without `[python]`, in the same rounds)", "",
        "| what | median ms | min-max | vs no guard |", "|---|---|---|---|",
        row("code_generate_new without [python]: `-c pass`", "guard-start-off", "guard-start-off"),
        row("code_generate_new, guarded: `-c pass`", "guard-start-on", "guard-start-off"),
        row("without [python]: dataclasses, 3,000 objects, json, statistics", "guard-code-off", "guard-code-off"),
        row("guarded: the same code (every attribute read checked)", "guard-code-on", "guard-code-off")]
out += ["", f"## Recording file accesses (baseline: bare; ninewall records {imp_events} accesses for the imports, {loop_events} for the loop)", "",
        "| what | median ms | min-max | vs bare |", "|---|---|---|---|",
        row("imports: bare", "imp-bare", "imp-bare"),
        row("imports: strace -f -e trace=%file", "imp-strace", "imp-bare"),
        row("imports: ninewall files = none", "imp-ninewall-none", "imp-bare"),
        row("imports: ninewall files = writes", "imp-ninewall-writes", "imp-bare"),
        row("imports: ninewall files = all", "imp-ninewall-all", "imp-bare"),
        row("imports: floor, nothing notified (fork, filter, exec)", "imp-floor-none", "imp-bare"),
        row("imports: floor, notified: read the path, continue", "imp-floor-read", "imp-bare"),
        row("imports: floor, notified: read, resolve beneath the root, continue", "imp-floor-resolve", "imp-bare"),
        row("20,000 open/close: bare", "loop-bare", "loop-bare"),
        row("20,000 open/close: strace", "loop-strace", "loop-bare"),
        row("20,000 open/close: ninewall files = none", "loop-ninewall-none", "loop-bare"),
        row("20,000 open/close: ninewall files = all", "loop-ninewall-all", "loop-bare"),
        row("20,000 open/close: floor, nothing notified", "loop-floor-none", "loop-bare"),
        row("20,000 open/close: floor, read, continue", "loop-floor-read", "loop-bare"),
        row("20,000 open/close: floor, read, resolve, continue", "loop-floor-resolve", "loop-bare")]
out += ["", "The imports spaced 0.2 s apart, as agents call (bare and ninewall taking turns, 20 each):", "",
        "| what | median ms | vs bare |", "|---|---|---|",
        f"| bare | {py_spaced_bare:.2f} | 1.00x |",
        f"| ninewall files = none | {py_spaced_none:.2f} | {py_spaced_none / py_spaced_bare:.2f}x |",
        f"| ninewall files = all | {py_spaced_all:.2f} | {py_spaced_all / py_spaced_bare:.2f}x |"]
per_ninewall = (t("loop-ninewall-all")[0] - t("loop-ninewall-none")[0]) * 1000 / max(loop_events, 1)
per_strace = (t("loop-strace")[0] - t("loop-bare")[0]) * 1000 / 20000
per_floor_read = (t("loop-floor-read")[0] - t("loop-floor-none")[0]) * 1000 / max(floor_loop_n, 1)
per_floor_resolve = (t("loop-floor-resolve")[0] - t("loop-floor-none")[0]) * 1000 / max(floor_loop_n, 1)
out += ["", f"Per recorded access: ninewall {per_ninewall:.1f} µs (files = all minus none, over {loop_events} recorded accesses); strace {per_strace:.1f} µs.",
        "", "The floor (`examples/notify_floor.rs`: the syscalls ninewall records sent to a bare listener built from ninewall's own syscall layer, no sandbox, nothing recorded, `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` as in ninewall) "
        f"costs {per_floor_read:.1f} µs per access to receive a notification, read its path, check it is still valid and let it continue, and {per_floor_resolve:.1f} µs when the path is also looked up beneath the root "
        f"(which every ninewall record needs, to say whether the path exists and which path the kernel reaches); over {floor_loop_n} notifications, minus the floor with nothing notified.",
        "", "## Egress proxy (`net.mode = \"proxy\"`, baseline: the same client on the host, straight to the server)", "",
        "| what | on the host, direct | in the sandbox, through the proxy | ratio |", "|---|---|---|---|",
        f"| one small HTTP request, one connection each (300, µs per request) | {proxy_direct[0]:.0f} | {proxy_through[0]:.0f} | {proxy_through[0] / proxy_direct[0]:.2f}x (+{proxy_through[0] - proxy_direct[0]:.0f} µs) |",
        f"| one 256 MiB download (MiB/s) | {proxy_direct[1]:.0f} | {proxy_through[1]:.0f} | {proxy_through[1] / proxy_direct[1]:.2f}x |",
        "", "Medians of three runs each. The proxy's added time per connection includes resolving the name (`localhost`, from /etc/hosts), a thread, and the connect from the host's side.",
        "", "## Supervisor", "", f"Peak RSS of the supervisor itself (`ninewall run -v`, the import run, files = all): {rss_kb} KiB.",
        "", "## Daemon (`ninewall serve`, the every-wall /bin/true, baseline: `ninewall run` in the same run)", "",
        "| what | executions/s | vs `ninewall run` |", "|---|---|---|",
        f"| 1 client, 200 requests one after another | {rate_1:.1f} | {rate_1 / (1000 / t('true-ninewall')[0]):.2f}x (sequential runs: {1000 / t('true-ninewall')[0]:.1f}/s) |",
        f"| 8 clients, 225 requests each | {rate_8:.1f} | {rate_8 / (200000 / t('true-ninewall-x8')[0]):.2f}x (8 runs in flight: {200000 / t('true-ninewall-x8')[0]:.1f}/s) |",
        "", "Spaced 0.2 s apart, as agents call (one request to each daemon and one bwrap launch in turn, 40 each; request to answer, as the compiled client sees it):", "",
        "| what | median ms | vs bwrap |", "|---|---|---|",
        f"| bwrap --unshare-all, launched directly | {daemon_bwrap:.2f} | 1.00x |",
        f"| daemon with warm sandboxes (`--warm 1`, the default) | {daemon_warm:.2f} | {daemon_warm / daemon_bwrap:.2f}x |",
        f"| daemon without (`--warm 0`) | {daemon_cold:.2f} | {daemon_cold / daemon_bwrap:.2f}x |",
        "", f"Daemon RSS: {rss_10} KiB after 10 executions (10 clients at once), {rss_2010} KiB after 2,010 ({(rss_2010 - rss_10) * 100 / rss_10:+.1f}%; target: within 10%); {rss_stalled} KiB while 16 clients that asked for 8 MiB of output each (protocol 2) read none of it. Rates measured by a compiled client (`examples/daemon_client.rs`)."]
print("\n".join(out))
PY
cat bench/RESULTS.md

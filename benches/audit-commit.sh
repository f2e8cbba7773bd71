#!/usr/bin/env bash
# The cost of group commit: ztgate with [audit] respond_after = "queued" (default) and "durable",
# in interleaved rounds, the same load each time (HTTP/1.1 keep-alive mTLS, benches/loadgen.rs).
# Prints one line per run (req/s, p50/p99 latency, ztgate CPU µs per request from /proc) and the
# medians per mode. The audit file lives under target/ (a real disk: fdatasync on tmpfs is free).
#   benches/audit-commit.sh [-r ROUNDS] [-d SECONDS] [-c CONNECTIONS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS=3 DUR=5 CONC=64
while getopts "r:d:c:" o; do
  case $o in r) ROUNDS=$OPTARG ;; d) DUR=$OPTARG ;; c) CONC=$OPTARG ;; *) exit 2 ;; esac
done
cargo build --release --bin ztgate -q
cargo bench --bench loadgen --no-run -q 2>/dev/null
LOADGEN=$(ls -t $(find target/release/deps -maxdepth 1 -type f -perm -u+x -name 'loadgen-*') | head -1)
ZTGATE=target/release/ztgate
WORK=$(mktemp -d "$PWD/target/audit-commit.XXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
"$ZTGATE" certs dev --out "$WORK/pki" >/dev/null
UP=127.0.0.1:19580 PROXY=127.0.0.1:19543
"$LOADGEN" upstream --listen "$UP" & PIDS+=($!)
config() { # $1 = respond_after
  cat <<EOF
[listener]
address = "$PROXY"
[tls]
cert = "$WORK/pki/server.pem"
key = "$WORK/pki/server-key.pem"
client_ca = "$WORK/pki/ca.pem"
[policy]
file = "$PWD/config/policy.toml"
[[upstream]]
name = "app"
url = "http://$UP"
[[route]]
name = "default"
path_prefix = "/"
upstream = "app"
[audit]
file = "$WORK/audit-$1.log"
respond_after = "$1"
[log]
level = "warn"
EOF
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
RESULTS="$WORK/results"
for round in $(seq "$ROUNDS"); do
  for mode in queued durable; do
    config "$mode" >"$WORK/$mode.toml"
    "$ZTGATE" run --config "$WORK/$mode.toml" 2>>"$WORK/ztgate.log" & pid=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19543) 2>/dev/null && break; sleep 0.05; done
    before=$(ticks $pid)
    out=$("$LOADGEN" load --url "https://localhost:19543/" --ca "$WORK/pki/ca.pem" \
      --cert "$WORK/pki/client.pem" --key "$WORK/pki/client-key.pem" -c "$CONC" -d "$DUR")
    after=$(ticks $pid)
    kill -TERM $pid; wait $pid || true
    python3 - "$mode" "$round" "$out" "$before" "$after" "$HZ" >>"$RESULTS" <<'PY'
import json, sys
mode, rnd, out, before, after, hz = sys.argv[1:]
r = json.loads(out)
n = r["requests"]
cpu_us = (int(after) - int(before)) * 1e6 / int(hz) / max(n, 1)
print(json.dumps({"mode": mode, "round": int(rnd), "rps": r["rps"], "requests": n,
                  "errors": r.get("errors", 0), "p50_us": r.get("p50_us"), "p99_us": r.get("p99_us"),
                  "cpu_us_per_req": round(cpu_us, 1)}))
PY
    tail -1 "$RESULTS"
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| respond_after | runs | req/s (median) | p50 µs | p99 µs | ztgate CPU µs/req |")
print("|---|---|---|---|---|---|")
for mode in ("queued", "durable"):
    rs = [r for r in rows if r["mode"] == mode]
    med = lambda k: statistics.median(r[k] for r in rs if r[k] is not None)
    print(f"| {mode} | {len(rs)} | {med('rps'):.0f} | {med('p50_us'):.0f} | {med('p99_us'):.0f} | {med('cpu_us_per_req'):.1f} |")
PY

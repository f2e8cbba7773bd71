#!/usr/bin/env bash
# Instructions per request, free of wall-clock noise: runs ztgate under callgrind while curl sends
# N requests over one keep-alive mTLS connection, for N = 200 and N = 2200, and prints
# (Ir(2200) - Ir(200)) / 2000, i.e. the per-request cost without start-up and shutdown.
#   benches/callgrind.sh CONFIG PORT CA CERT KEY
# e.g. with the shared harness's PKI and `benches/compare.py --peer-config /tmp/zt`:
#   benches/callgrind.sh /tmp/zt/peer-full.toml 19443 /tmp/bench/pki/ca.crt \
#       /tmp/bench/pki/client.crt /tmp/bench/pki/client.key
# Needs valgrind and curl. Note: valgrind does not emulate SHA-NI, so sha2's software rounds show
# up (the audit hash chain); subtract `sha2::sha256::soft` when comparing with real CPUs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cfg=$1 port=$2 ca=$3 cert=$4 key=$5
zt=${ZTGATE:-target/release/ztgate}
out=$(mktemp -d)
if ss -ltn "sport = :$port" | grep -q LISTEN; then
    echo "something already listens on :$port; stop it first" >&2
    exit 1
fi
total() {
    local n=$1
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" "$zt" run --config "$cfg" >"$out/log.$n" 2>&1 &
    local pid=$!
    for _ in $(seq 240); do ss -ltn "sport = :$port" | grep -q LISTEN && break; sleep 0.5; done
    local codes
    codes=$(curl -s --cacert "$ca" --cert "$cert" --key "$key" "https://localhost:$port/r[1-$n]" \
        -o /dev/null -w '%{http_code}\n' | sort | uniq -c | tr -s ' ')
    kill -TERM "$pid"
    wait "$pid" || true
    if [ "$codes" != " $n 200" ]; then
        echo "expected $n responses with status 200, got:$codes (is the upstream up?)" >&2
        exit 1
    fi
    grep -E '^summary:' "$out/cg.$n" | awk '{print $2}'
}
a=$(total 200)
b=$(total 2200)
echo "instructions per request: $(( (b - a) / 2000 ))  (N=200: $a, N=2200: $b; profiles in $out)"

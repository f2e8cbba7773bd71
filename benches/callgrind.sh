#!/usr/bin/env bash
# User-space instructions per request, free of wall-clock noise: runs ztgate under callgrind while the
# load generator (benches/loadgen.rs, COUNTED mode) sends exactly N requests over ONE HTTP/1.1 keep-alive
# mTLS connection, for N = N1 and N = N2, and prints (Ir(N2) - Ir(N1)) / (N2 - N1): start-up, the
# handshake and shutdown cancel out. The same binary and config give the same figure whatever else the
# machine is doing, so a change of a few hundred instructions per request shows.
#
#   benches/callgrind.sh [CONFIG...]        CONFIG: bare, full (default: both), from benches/configs/
#
# bare: allow-all policy, no audit. full: 1,000-rule policy, device posture, audit log (fsync per batch),
# anomaly detection, rate limit (benches/configs/full.toml says what exactly).
# sha256/req is reported apart and subtracted: valgrind does not emulate SHA-NI, so the audit hash chain
# runs sha2's software rounds under callgrind (~40k instructions per request) that a real CPU does not.
# quanta's start-up clock calibration (a fixed wall-time spin) is subtracted from every total: it
# varies with valgrind's speed, by up to ±2k instructions per request once divided by N2 - N1.
# Env: ZTGATE (a binary to measure; default: target/release/ztgate, built first), N1 (200), N2 (2200),
#      PORT_BASE (23500: upstream +80, ztgate +43, admin +90), WORK (scratch dir; profiles are kept there).
# Needs valgrind (apt-get install -y valgrind).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N1=${N1:-200} N2=${N2:-2200}
PORT_BASE=${PORT_BASE:-23500}
UP_PORT=$((PORT_BASE + 80)) ZT_PORT=$((PORT_BASE + 43)) ADMIN_PORT=$((PORT_BASE + 90))
WORK=${WORK:-$(mktemp -d /tmp/ztgate-callgrind.XXXXXX)}
mkdir -p "$WORK"
# shellcheck source=benches/common.sh
source benches/common.sh
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install -y valgrind" >&2; exit 2; }
CONFIG_NAMES=("$@")
((${#CONFIG_NAMES[@]})) || CONFIG_NAMES=(bare full)

build_bins
ensure_pki
need_free_port "$ZT_PORT"
need_free_port "$ADMIN_PORT"
start_upstream "$UP_PORT"
trap 'stop_pid "$UPSTREAM_PID"' EXIT

# One callgrind run of `ztgate run` serving N requests; prints "TOTAL SHA256" instructions. Runs in a
# command substitution, so it stops its own ztgate on every path.
total() { # CONFIG_FILE N OUT
    local cfg=$1 n=$2 f=$3
    valgrind --tool=callgrind --callgrind-out-file="$f" "$ZTGATE" run --config "$cfg" >"$f.log" 2>&1 &
    local pid=$!
    if ! wait_port "$ZT_PORT" "$pid" 1500; then
        stop_pid "$pid"
        echo "ztgate did not start under valgrind (log: $f.log)" >&2
        exit 1
    fi
    local res
    res=$("$LOADGEN" load --url "https://localhost:$ZT_PORT/" --ca "$WORK/pki/ca.pem" \
        --cert "$WORK/pki/client.pem" --key "$WORK/pki/client-key.pem" -c 1 --count "$n" 2>&1 | tail -1)
    stop_pid "$pid"
    case $res in
        *"\"requests\":$n,"*'"errors":0}') ;;
        *) echo "run of $n requests failed: ${res:-no result} (ztgate log: $f.log)" >&2; exit 1 ;;
    esac
    local all sha
    all=$(grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}')
    # Self cost of every function whose name says SHA-256 (sha2's soft rounds, ring's nohw block function).
    sha=$(callgrind_annotate --threshold=100 "$f" 2>/dev/null | grep -iE 'sha2|sha256' |
        awk '{gsub(",", "", $1); s += $1} END {print s + 0}')
    # quanta's clock calibration (governor's clock) spins for a fixed wall time at start-up: its
    # instruction count depends on how fast valgrind runs, not on N, so it is taken out.
    local calib
    calib=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
        grep -E '^ *[0-9,]+ .*quanta::Clock::new ' | head -1 | awk '{gsub(",", "", $1); print $1 + 0}')
    echo "$((all - ${calib:-0})) $sha"
}

for name in "${CONFIG_NAMES[@]}"; do
    cfg=$(render_config "$name" "$ZT_PORT" "$ADMIN_PORT" "$UP_PORT")
    log "$name: N=$N1 under callgrind"
    r=$(total "$cfg" "$N1" "$WORK/callgrind.$name.$N1")
    read -r a sa <<<"$r"
    log "$name: N=$N2 under callgrind"
    r=$(total "$cfg" "$N2" "$WORK/callgrind.$name.$N2")
    read -r b sb <<<"$r"
    per=$(((b - a) / (N2 - N1))) sha=$(((sb - sa) / (N2 - N1)))
    printf '%-5s instructions/req: %d  sha256/req: %d  without sha256: %d  (N=%d: %d, N=%d: %d)\n' \
        "$name" "$per" "$sha" "$((per - sha))" "$N1" "$a" "$N2" "$b"
done
echo "profiles: $WORK/callgrind.<config>.<N> (read with callgrind_annotate)"

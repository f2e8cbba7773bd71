#!/usr/bin/env bash
# Instructions per full mTLS handshake on the server's side, free of clock noise: runs the
# in-memory handshake bench (benches/handshake.rs, `count` mode) under callgrind for N = 50 and
# N = 250 handshakes and prints (Ir(250) - Ir(50)) / 200 for the server's rustls states (and
# ServerConnection::new), for ztgate's client certificate verifier, and for the profile alone.
#   benches/handshake-callgrind.sh [direct|one_intermediate]
# Needs valgrind. Builds the bench first (cargo bench --no-run), or runs the bench binary named by
# HANDSHAKE_BENCH (a copy kept from another commit, for before/after).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
chain=${1:-direct}
bin=${HANDSHAKE_BENCH:-$(cargo bench --locked --bench handshake --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*handshake-[^"]*"' | tail -1 | cut -d'"' -f4)}
out=$(mktemp -d)
count() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" "$bin" count "$1" "$chain" >/dev/null 2>&1
    callgrind_annotate --inclusive=yes --threshold=100 "$out/cg.$1" 2>/dev/null | awk '
        { gsub(",", "", $1) }
        /ServerConnectionData>>::handle|ServerConnection::new \[/ { server += $1 }
        /ztgate::tls::verifier::[A-Za-z]+ as .*verify_client_cert/ { if ($1 > verify) verify = $1 }
        /ztgate::tls::profile::check_chain/ { if ($1 > profile) profile = $1 }
        END { printf "%d %d %d\n", server, verify, profile }'
}
read -r s1 v1 p1 < <(count 50)
read -r s2 v2 p2 < <(count 250)
echo "$chain: per handshake, server $(( (s2 - s1) / 200 )) instructions, client certificate verifier $(( (v2 - v1) / 200 )), profile $(( (p2 - p1) / 200 )) (profiles in $out)"

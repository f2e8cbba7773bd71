#!/usr/bin/env bash
# Side-by-side load benchmark of the upstream alone, ztgate "bare" and ztgate with the full stack,
# in one run (see benches/compare.py for what each means and what is measured).
#   benches/compare.sh [-d SECONDS] [-r RUNS] [--tests ka-h1,ka-h2,newconn,idle] [--idle-conns N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n 20000 2>/dev/null || true
exec python3 benches/compare.py "$@"

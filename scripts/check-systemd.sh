#!/usr/bin/env bash
# Checks deploy/systemd/ztgate.service offline: `systemd-analyze verify` (syntax, directives,
# the ExecStart binary) and `systemd-analyze security --offline` (sandboxing exposure score, must
# stay at or below 2.0 "OK"). Skips, saying so, where systemd-analyze is not installed.
# Usage: scripts/check-systemd.sh [path/to/ztgate-binary]   (default: target/debug/ztgate)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=$(realpath "${1:-target/debug/ztgate}")
if ! command -v systemd-analyze >/dev/null; then
  echo "check-systemd: SKIP (no systemd-analyze on this machine)"
  exit 0
fi
[ -x "$bin" ] || { echo "check-systemd: $bin is not built" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The unit names the installed path; verify it against the binary built here.
sed "s#/usr/local/bin/ztgate#$bin#g" deploy/systemd/ztgate.service > "$tmp/ztgate.service"
out=$(systemd-analyze verify "$tmp/ztgate.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "check-systemd: systemd-analyze verify warned:" >&2
  echo "$out" >&2
  exit 1
fi
score=$(systemd-analyze security --offline=yes --threshold=20 "$tmp/ztgate.service" 2>&1 | sed -n 's/.*Overall exposure level for ztgate.service: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
  echo "check-systemd: could not read the exposure score" >&2
  exit 1
fi
if ! awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
  echo "check-systemd: exposure $score > 2.0; see systemd-analyze security --offline=yes" >&2
  exit 1
fi
echo "check-systemd: OK (verify clean, exposure $score)"

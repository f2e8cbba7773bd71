#!/usr/bin/env bash
# ztgate side by side with nginx and haproxy doing the same mTLS job (client certificate required and
# verified against one CA; HTTP/1.1 and h2 from the client; keep-alive to one shared plain-HTTP upstream),
# under the same load from benches/loadgen.rs, in one run: the targets take turns within each round (the
# order rotates every round), so a noisy machine spreads its noise over all of them.
#
#   benches/peers/run.sh [-d SECS] [-r ROUNDS] [--tests ka-h1,ka-h2,newconn] [--targets LIST]
#                        [--zt NAME=CONFIG[:BINARY]]...
#
# Targets: nginx, haproxy (nginx.conf, haproxy.cfg here; installed with apt-get when missing), bare and
# full (ztgate with benches/configs/bare.toml / full.toml), and any --zt NAME=CONFIG[:BINARY] (e.g.
# --zt full-glibc=full:/tmp/ztgate-glibc to compare builds). Default: nginx,haproxy,bare,full;
# --targets '' runs only the --zt ones.
# Tests: ka-h1 (64 HTTP/1.1 keep-alive connections), ka-h2 (8 h2 connections x 8 streams), newconn (32
# loops of TCP connect + full TLS 1.3 handshake, no resumption + 1 request + close).
# Per target and test, medians over the rounds: req/s, p50/p99 latency, CPU µs per request of the proxy's
# processes (utime+stime from /proc, all of nginx's), RSS (summed over the processes; peak is VmHWM).
# Env: PORT_BASE (default 23400: upstream +80, nginx +45, haproxy +46, ztgate targets +43, +44, +47...,
#      their admin ports +90...), CONNS (64), NEWCONN_C (32), ZTGATE (a binary; default: the release build, built first),
#      WORK (scratch dir: PKI, rendered configs, logs, raw results).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DUR=8 ROUNDS=3 TESTS=ka-h1,ka-h2,newconn TARGETS=nginx,haproxy,bare,full
declare -A T_KIND T_CFG T_BIN T_PORT T_PID
EXTRA=()
while (($#)); do
    case $1 in
        -d) DUR=$2; shift ;;
        -r) ROUNDS=$2; shift ;;
        --tests) TESTS=$2; shift ;;
        --targets) TARGETS=$2; shift ;;
        --zt) EXTRA+=("$2"); shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PORT_BASE=${PORT_BASE:-23400}
UP_PORT=$((PORT_BASE + 80))
CONNS=${CONNS:-64} NEWCONN_C=${NEWCONN_C:-32}
WORK=${WORK:-/tmp/ztgate-peers}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# shellcheck source=benches/common.sh
source benches/common.sh
TICK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ targets ---

NAMES=()
zt_port=$((PORT_BASE + 43)) zt_admin=$((PORT_BASE + 90))
add_zt() { # NAME CONFIG BINARY
    T_KIND[$1]=zt T_CFG[$1]=$2 T_BIN[$1]=$3 T_PORT[$1]=$zt_port
    [[ -f benches/configs/$2.toml ]] || { echo "no config benches/configs/$2.toml" >&2; exit 2; }
    T_CFG[$1]=$(render_config "$2" "$zt_port" "$zt_admin" "$UP_PORT")
    zt_port=$((zt_port == PORT_BASE + 44 ? PORT_BASE + 47 : zt_port + 1)) zt_admin=$((zt_admin + 1))
    NAMES+=("$1")
}
build_bins
ensure_pki
for n in ${TARGETS//,/ }; do
    case $n in
        nginx) T_KIND[$n]=nginx T_PORT[$n]=$((PORT_BASE + 45)); NAMES+=("$n") ;;
        haproxy) T_KIND[$n]=haproxy T_PORT[$n]=$((PORT_BASE + 46)); NAMES+=("$n") ;;
        bare|full) add_zt "$n" "$n" "$ZTGATE" ;;
        *) echo "unknown target $n (nginx, haproxy, bare, full; others with --zt)" >&2; exit 2 ;;
    esac
done
for e in "${EXTRA[@]}"; do
    [[ $e == *=* ]] || { echo "--zt wants NAME=CONFIG[:BINARY]" >&2; exit 2; }
    spec=${e#*=}
    bin=$ZTGATE
    [[ $spec == *:* ]] && bin=${spec#*:}
    add_zt "${e%%=*}" "${spec%%:*}" "$bin"
done
((${#NAMES[@]})) || { echo "nothing to measure" >&2; exit 2; }

for n in "${NAMES[@]}"; do
    case ${T_KIND[$n]} in
        nginx|haproxy)
            if ! command -v "${T_KIND[$n]}" >/dev/null && ! [[ -x /usr/sbin/${T_KIND[$n]} ]]; then
                log "installing ${T_KIND[$n]} from Debian"
                apt-get install -y "${T_KIND[$n]}" >&2
            fi ;;
    esac
done
export PATH=$PATH:/usr/sbin

render_peer() { # KIND FILE
    mkdir -p "$WORK/$1"
    sed -e "s|@WORK@|$WORK|g" -e "s|@PORT@|${T_PORT[$1]}|g" -e "s|@UPSTREAM_PORT@|$UP_PORT|g" \
        "benches/peers/$2" > "$WORK/$1/$2"
}

start_target() { # NAME
    local n=$1
    need_free_port "${T_PORT[$n]}"
    case ${T_KIND[$n]} in
        nginx)
            render_peer nginx nginx.conf
            nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' \
                >"$WORK/nginx/stdout.log" 2>&1 &
            ;;
        haproxy)
            render_peer haproxy haproxy.cfg
            haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/stdout.log" 2>&1 &
            ;;
        zt) "${T_BIN[$n]}" run --config "${T_CFG[$n]}" >"$WORK/$n.log" 2>&1 & ;;
    esac
    T_PID[$n]=$!
    wait_port "${T_PORT[$n]}" "${T_PID[$n]}" || { echo "$n did not start; logs in $WORK" >&2; exit 1; }
    log "started $n (pid ${T_PID[$n]}) on 127.0.0.1:${T_PORT[$n]}"
}

stop_all() {
    local n
    for n in "${NAMES[@]}"; do stop_pid "${T_PID[$n]:-}"; done
    stop_pid "${UPSTREAM_PID:-}"
}
trap stop_all EXIT INT TERM

# ------------------------------------------------------- process accounting ---

pids_of() { # NAME: the process we started and its children (nginx's workers)
    local p=${T_PID[$1]}
    echo "$p"
    pgrep -P "$p" 2>/dev/null || true
}

cpu_ticks() { # PIDS... -> utime + stime, summed
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || continue
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

mem_kib() { # PIDS... -> "rss hwm pss" summed (KiB)
    local p r=0 h=0 q=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) && r=$((r + ${v:-0}))
        v=$(awk '/^VmHWM:/{print $2}' "/proc/$p/status" 2>/dev/null) && h=$((h + ${v:-0}))
        v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) && q=$((q + ${v:-0}))
    done
    echo "$r $h $q"
}

tls_args() { echo --ca "$WORK/pki/ca.pem" --cert "$WORK/pki/client.pem" --key "$WORK/pki/client-key.pem"; }

shape() { # TEST -> load generator arguments
    case $1 in
        ka-h1) echo -c "$CONNS" ;;
        ka-h2) echo --h2 -c 8 --streams 8 ;;
        newconn) echo --new-conn -c "$NEWCONN_C" ;;
        *) echo "unknown test $1" >&2; exit 2 ;;
    esac
}

# ---------------------------------------------------------------------- run ---

start_upstream "$UP_PORT"
for n in "${NAMES[@]}"; do start_target "$n"; done
sleep 1
RAW=$WORK/raw-$(date +%Y%m%d-%H%M%S).txt
: >"$RAW"
for n in "${NAMES[@]}"; do
    mapfile -t pids < <(pids_of "$n")
    echo "idle target=$n procs=${#pids[@]} mem=$(mem_kib "${pids[@]}" | tr ' ' ,)" >>"$RAW"
done

# The same job: a request with the client certificate gets the upstream's 200 over h1 and h2, one
# without a certificate gets nothing.
for n in "${NAMES[@]}"; do
    url=https://localhost:${T_PORT[$n]}/
    # shellcheck disable=SC2046
    for proto in "" "--h2 --streams 1"; do
        r=$("$LOADGEN" load --url "$url" $(tls_args) -c 1 --count 1 $proto | tail -1)
        [[ $r == *'"requests":1,'* ]] || { echo "$n: a request with the client certificate failed ($proto): $r" >&2; exit 1; }
    done
    r=$("$LOADGEN" load --url "$url" --ca "$WORK/pki/ca.pem" -c 1 --count 1 | tail -1)
    [[ $r == *'"requests":0,'* ]] || { echo "$n: a request without a client certificate got through: $r" >&2; exit 1; }
done
log "all targets answer with a client certificate and refuse without one"

for ((round = 1; round <= ROUNDS; round++)); do
    for t in ${TESTS//,/ }; do
        k=${#NAMES[@]}
        for ((i = 0; i < k; i++)); do
            n=${NAMES[$(((i + round - 1) % k))]}
            mapfile -t pids < <(pids_of "$n")
            before=$(cpu_ticks "${pids[@]}")
            # shellcheck disable=SC2046
            out=$("$LOADGEN" load --url "https://localhost:${T_PORT[$n]}/" $(tls_args) -d "$DUR" $(shape "$t") | tail -1)
            after=$(cpu_ticks "${pids[@]}")
            echo "run round=$round test=$t target=$n ticks=$((after - before)) mem=$(mem_kib "${pids[@]}" | tr ' ' ,) $out" >>"$RAW"
            log "round $round $t $n: $out"
            sleep 1
        done
    done
done

python3 - "$RAW" "$TICK" "$DUR" "$ROUNDS" <<'EOF'
import json, statistics, sys, time
raw, tick, dur, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs, idle, order_t, order_x = {}, {}, [], []
for line in open(raw):
    kind, rest = line.split(" ", 1)
    kv = dict(p.split("=", 1) for p in rest.split() if "=" in p and not p.startswith("{"))
    mem = [int(x) for x in kv["mem"].split(",")]
    if kind == "idle":
        idle[kv["target"]] = mem + [kv["procs"]]
        continue
    j = json.loads(rest[rest.index("{"):])
    j["cpu_us"] = int(kv["ticks"]) * 1e6 / tick / max(j["requests"], 1)
    j["rss"], j["hwm"], j["pss"] = mem
    t, x = kv["target"], kv["test"]
    order_t += [t] if t not in order_t else []
    order_x += [x] if x not in order_x else []
    runs.setdefault((x, t), []).append(j)
print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, {rounds} interleaved rounds x {dur} s, medians "
      f"(raw: {raw})\n")
print("| test | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | RSS MiB (peak) | errors | req/s per round |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|")
for x in order_x:
    for t in order_t:
        r = runs.get((x, t))
        if not r:
            continue
        m = lambda k: statistics.median(e[k] for e in r)
        print(f"| {x} | {t} | {m('rps'):,.0f} | {m('p50_us') / 1000:.2f} | {m('p99_us') / 1000:.2f} | "
              f"{m('cpu_us'):.1f} | {m('rss') / 1024:.1f} ({max(e['hwm'] for e in r) / 1024:.1f}) | "
              f"{sum(e['errors'] for e in r)} | {', '.join('%.0f' % e['rps'] for e in r)} |")
print("\nidle at start: " + "; ".join(
    f"{t} RSS {m[0] / 1024:.1f} MiB, PSS {m[2] / 1024:.1f} MiB ({m[3]} processes)" for t, m in idle.items()))
EOF

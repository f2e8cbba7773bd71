# Shared by benches/callgrind.sh and benches/peers/run.sh (sourced, not run): the binaries, the PKI,
# the upstream and the ztgate configs of benches/configs/, so that both benches measure the same thing.
# The caller sets WORK (a scratch directory) and runs from the repository root.

# ZTGATE names a binary to measure as it is; unset, the tree's release build, brought up to date.
if [[ -z ${ZTGATE:-} ]]; then
    ZTGATE=target/release/ztgate BUILD_ZTGATE=1
fi
CONFIGS=$PWD/benches/configs

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# Refuses to start when a port is taken: a stray server from another run would be measured instead.
need_free_port() {
    if port_busy "$1"; then
        echo "something already listens on :$1; stop it or choose other ports (see the script's header)" >&2
        ss -Hltnp "sport = :$1" >&2 || true
        exit 2
    fi
}

wait_port() { # PORT PID [TRIES of 0.2 s]
    local i
    for ((i = 0; i < ${3:-150}; i++)); do
        port_busy "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# The release binary and the load generator (benches/loadgen.rs), built once and reused.
build_bins() {
    if [[ -n ${BUILD_ZTGATE:-} ]]; then
        cargo build --release --locked --bin ztgate >&2
    fi
    [[ -x $ZTGATE ]] || { echo "no ztgate binary at $ZTGATE" >&2; exit 2; }
    LOADGEN=${LOADGEN:-$(cargo bench --locked --bench loadgen --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    j = json.loads(l)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and "loadgen" in j["executable"]:
        print(j["executable"])')}
    [[ -x $LOADGEN ]] || { echo "cannot build the load generator (cargo bench --bench loadgen --no-run)" >&2; exit 2; }
}

# The dev PKI (`ztgate certs dev`: ECDSA P-256, server for localhost/127.0.0.1, client with the SPIFFE ID
# the configs' policies name), minted once into WORK/pki and reused; haproxy wants cert + key in one file.
ensure_pki() {
    if [[ ! -s $WORK/pki/client-key.pem ]]; then
        "$ZTGATE" certs dev --out "$WORK/pki" >/dev/null
    fi
    cat "$WORK/pki/server.pem" "$WORK/pki/server-key.pem" > "$WORK/pki/server-bundle.pem"
}

# benches/configs/NAME.toml with the placeholders filled in, written to WORK/NAME-PORT.toml.
render_config() { # NAME PORT ADMIN_PORT UPSTREAM_PORT
    local out=$WORK/$1-$2.toml
    mkdir -p "$WORK/audit-$2"
    sed -e "s|@WORK@|$WORK|g" -e "s|@CONFIGS@|$CONFIGS|g" -e "s|@PORT@|$2|g" \
        -e "s|@ADMIN_PORT@|$3|g" -e "s|@UPSTREAM_PORT@|$4|g" "$CONFIGS/$1.toml" > "$out"
    echo "$out"
}

# The shared plain-HTTP upstream: benches/loadgen.rs `upstream` (hyper, 200 with a 13-byte body).
start_upstream() { # PORT; sets UPSTREAM_PID
    need_free_port "$1"
    "$LOADGEN" upstream --listen "127.0.0.1:$1" 2>/dev/null &
    UPSTREAM_PID=$!
    wait_port "$1" "$UPSTREAM_PID" || { echo "the upstream did not start on :$1" >&2; exit 1; }
}

# Stops a process this script started, by its PID, and waits for it.
stop_pid() {
    [[ -n ${1:-} ]] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

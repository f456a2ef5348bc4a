#!/usr/bin/env bash
# The chain as three separate processes, so the experiment can stop shipment alone and start it
# again (`saga up` runs all three in one process). Used by the Chaos Toolkit experiment's
# actions and by experiments/run.sh.
#
#   experiments/stack.sh up before|after   start shipment, payment, order on free ports
#   experiments/stack.sh stop NAME         SIGKILL one service (a crash, not a shutdown)
#   experiments/stack.sh start NAME        start it again with the same port and environment
#   experiments/stack.sh down              stop all three
#   experiments/stack.sh urls              print ORDER_URL=…, PAYMENT_URL=…, SHIPMENT_URL=…
#   experiments/stack.sh orders N          POST N orders to order, print each status code
#
# `before`: breakers and graceful degradation off (BREAKER_ENABLED=false FALLBACK=false), the
# way the original ran without its breaker. `after`: the defaults.
#
# Environment:
#   STACK_DIR     where pids, ports, environments and logs live (default target/chaos-stack)
#   SAGA_TARGET   where the service binaries are (default target/debug)
#   MONGODB_URI   store records in this MongoDB (a fresh database per `up`); unset: the
#                 embedded store in STACK_DIR
#   STACK_ENV     more VAR=value words for all three services (e.g. the advice of saga advise)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

STACK_DIR=${STACK_DIR:-$ROOT/target/chaos-stack}
SAGA_TARGET=${SAGA_TARGET:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}
SERVICES=(shipment payment order)

port_of() { cat "$STACK_DIR/$1.port"; }

# start NAME: the binary with the environment `up` wrote for it, detached from this shell (the
# Chaos Toolkit runs each action in a process of its own, which ends before the service does).
start() {
    local name=$1 bin=$SAGA_TARGET/$1
    [[ -x $bin ]] || die "$bin not built (cargo build --workspace --bins)"
    [[ -s $STACK_DIR/$name.env ]] || die "no environment for $name: run '$0 up' first"
    if [[ -s $STACK_DIR/$name.pid ]] && alive "$(cat "$STACK_DIR/$name.pid")"; then
        log "$name already running"
        return 0
    fi
    local -a vars
    mapfile -t vars <"$STACK_DIR/$name.env"
    setsid env -i PATH="$PATH" HOME="$HOME" "${vars[@]}" "$bin" \
        >>"$STACK_DIR/$name.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$STACK_DIR/$name.pid"
    wait_for_http "http://127.0.0.1:$(port_of "$name")/ready" 60 "$pid" "$name"
    log "$name up (pid $pid, port $(port_of "$name"))"
}

# stop NAME: SIGKILL, then wait until the port refuses connections.
stop() {
    local name=$1 pid
    [[ -s $STACK_DIR/$name.pid ]] || die "$name was not started here"
    pid=$(cat "$STACK_DIR/$name.pid")
    kill -s KILL "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while alive "$pid" || (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$name")") 2>/dev/null; do
        ((SECONDS < deadline)) || die "$name (pid $pid) still there 10 s after SIGKILL"
        sleep 0.1
    done
    rm -f "$STACK_DIR/$name.pid"
    log "$name killed (pid $pid)"
}

up() {
    local mode=${1:-}
    local -a common=(RUST_LOG=info NO_COLOR=1 LOG_FORMAT=json HOST=127.0.0.1)
    case $mode in
    before) common+=(BREAKER_ENABLED=false FALLBACK=false) ;;
    after) ;;
    *) die "usage: $0 up before|after" ;;
    esac
    local -a extra
    read -r -a extra <<<"${STACK_ENV:-}"
    common+=("${extra[@]}")
    [[ -d $STACK_DIR ]] && down
    rm -rf "$STACK_DIR"
    mkdir -p "$STACK_DIR"
    if [[ -n ${MONGODB_URI:-} ]]; then
        common+=("MONGO_URL=$MONGODB_URI" "MONGO_DB=chaos_${mode}_$(date +%s)_$RANDOM")
    fi
    local -a ports
    mapfile -t ports < <(free_ports 3)
    local i next=""
    for i in 0 1 2; do
        local name=${SERVICES[i]} port=${ports[i]}
        echo "$port" >"$STACK_DIR/$name.port"
        {
            printf '%s\n' "${common[@]}" "ID=$name" "PORT=$port"
            [[ -n ${MONGODB_URI:-} ]] || printf 'DATA_DIR=%s\n' "$STACK_DIR/data-$name"
            [[ -z $next ]] || printf 'CHAIN_SVC=%s\n' "$next"
        } >"$STACK_DIR/$name.env"
        next=http://127.0.0.1:$port/create
    done
    echo "$mode" >"$STACK_DIR/mode"
    for name in "${SERVICES[@]}"; do start "$name"; done
}

down() {
    local name pid
    for name in order payment shipment; do
        [[ -s $STACK_DIR/$name.pid ]] || continue
        pid=$(cat "$STACK_DIR/$name.pid")
        kill -s TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        alive "$pid" && kill -s KILL "$pid" 2>/dev/null
        rm -f "$STACK_DIR/$name.pid"
    done
}

urls() {
    local name
    for name in order payment shipment; do
        printf '%s_URL=http://127.0.0.1:%s\n' "${name^^}" "$(port_of "$name")"
    done
}

# orders N: N orders, one after the other, as the .http files post them; prints one status code
# per line (000: no answer within 5 s).
orders() {
    local n=$1 i body='{"id":"1","items":[],"payment":{"amount":0,"id":"1","shipment":{"id":"1","directions":"home"}}}'
    for ((i = 0; i < n; i++)); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 -H 'Content-Type: application/json' \
            -d "$body" "http://127.0.0.1:$(port_of order)/create" || true
    done
}

case ${1:-} in
up) up "${2:-}" ;;
start | stop) "$1" "${2:?service name}" ;;
down) down ;;
urls) urls ;;
orders) orders "${2:?number of orders}" ;;
*) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' && exit 2 ;;
esac

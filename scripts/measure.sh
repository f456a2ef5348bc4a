#!/usr/bin/env bash
# scripts/measure.sh: the README's end-to-end numbers. The three release binaries run as
# processes on this machine and are measured from outside, with standard tools.
#
#   bash scripts/measure.sh [mongo-pg|mongo-sqlite|mongo|embedded] [--node DIR] [RATE...]
#
#   mongo-pg      FerretDB on a throw-away PostgreSQL cluster, both started here
#   mongo-sqlite  FerretDB on SQLite, started here (`mongo` is the same)
#   embedded      the embedded store (redb), no database server (the default)
#   RATE...       open-loop rates in requests per second (default 40 100)
#
# For each target, one table:
#   ready         time from starting the three services to all three answering /ready (GET /
#                 for the Node original, which listens once MongoDB is connected)
#   closed loop   hey -z DURATION -c C (C = 1, 4, 16): requests/s, p50, p99, answers
#   open loop     saga load --rate R (each request due at start + i/R, timed from then)
#   commands      database commands per order: the delta of FerretDB's
#                 ferretdb_client_requests_total over the closed-loop run at C connections,
#                 by command, divided by the orders answered 2xx (the services' background
#                 work during the run is counted too: it is part of what an order costs)
#   RSS           per service, idle (before any request) and after the runs
#   fail-fast     payment's breaker open (shipment hangs), 100 req/s on payment
# Each target gets a fresh database (MONGO_DB unique) on the one server started here, and its
# services are stopped before the next target starts, so they never share the counters.
#
# Environment:
#   DURATION=15        seconds per closed- and open-loop run (DURATION=3 for a quick check)
#   CLIENTS="1 4 16"   closed-loop connection counts
#   BIN_DIR=DIR[:DIR]  measure these builds (each holding order, payment, shipment, saga) one
#                      after the other, without building; e.g. BIN_DIR=/tmp/before:target/release
#                      measures an old build and a new one in one run. Default: target/release,
#                      built first. The first directory's `saga load` drives every target.
#   COMPARE=node       also measure the Node original (express, mongoose, opossum) on the same
#                      FerretDB, in its own database: `--node DIR` does the same. It is not part
#                      of the services: it lives in bench/node-original (NODE_DIR or --node DIR
#                      for another copy); its node_modules are installed with `npm ci` when missing.
#   FAILFAST=0         skip the fail-fast run (it waits 11 s for the breaker window to empty)
#
# Logs go to target/measure-logs/. Don't measure next to a build: on a small machine the
# numbers are the build's.
set -euo pipefail
SAGA_LOG_DIR=${SAGA_LOG_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/measure-logs}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SAGA_ROOT"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

mode="" rates=()
compare=${COMPARE:-}
node_dir=${NODE_DIR:-$SAGA_ROOT/bench/node-original}
while (($# > 0)); do
    case $1 in
    --node) compare=node node_dir=${2:?--node needs a directory}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) if [[ -z $mode ]]; then mode=$1; else rates+=("$1"); fi; shift ;;
    esac
done
mode=${mode:-embedded}
((${#rates[@]} > 0)) || rates=(40 100)
duration=${DURATION:-15}
read -r -a clients <<<"${CLIENTS:-1 4 16}"

case $mode in
mongo | mongo-sqlite) backend=sqlite ;;
mongo-pg) backend=postgresql ;;
embedded) backend="" ;;
*)
    log "ERROR: unknown mode '$mode': mongo-pg, mongo-sqlite, mongo or embedded (see --help)"
    exit 2
    ;;
esac
case $compare in
"") ;;
node)
    [[ -n $backend ]] || die "COMPARE=node needs a MongoDB mode (mongo-pg or mongo-sqlite): the Node original stores in MongoDB"
    [[ -f $node_dir/app.js ]] ||
        die "COMPARE=node: no Node original in $node_dir (app.js); set NODE_DIR (or --node DIR)"
    if [[ ! -d $node_dir/node_modules ]]; then
        log "installing the Node original's packages (npm ci in $node_dir)"
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) ||
            die "npm ci failed in $node_dir"
    fi
    command -v node >/dev/null || die "COMPARE=node: node is not installed"
    ;;
*) die "COMPARE must be node or unset (got '$compare')" ;;
esac

# ---------------------------------------------------------------------------------------------
# Tools and binaries

command -v curl >/dev/null || apt_install curl
command -v hey >/dev/null || apt_install hey || die "hey (Debian package \`hey\`) is needed for the closed-loop runs"

bin_dirs=()
if [[ -n ${BIN_DIR:-} ]]; then
    IFS=: read -r -a bin_dirs <<<"$BIN_DIR"
else
    log "cargo build --release (order, payment, shipment, saga)"
    cargo build --release -q -p order -p payment -p shipment -p saga
    bin_dirs=("${CARGO_TARGET_DIR:-$SAGA_ROOT/target}/release")
fi
for i in "${!bin_dirs[@]}"; do
    [[ -d ${bin_dirs[i]} ]] || die "BIN_DIR: no directory ${bin_dirs[i]}"
    bin_dirs[i]=$(cd "${bin_dirs[i]}" && pwd)
    for b in order payment shipment saga; do
        [[ -x ${bin_dirs[i]}/$b ]] || die "BIN_DIR: ${bin_dirs[i]}/$b is missing or not executable"
    done
done
load_bin=${bin_dirs[0]}/saga

trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$SAGA_LOG_DIR"
make_temp_dir saga-measure
work=$TEMP_DIR
body=$work/order.json
printf '%s\n' '{"id":"1","items":[],"payment":{"amount":0,"id":"1","shipment":{"id":"1","directions":"home"}}}' >"$body"
payment_body=$work/payment.json
printf '%s\n' '{"amount":0,"id":"1","shipment":{"id":"1","directions":"home"}}' >"$payment_body"

server="embedded store"
if [[ -n $backend ]]; then
    start_ferretdb --backend "$backend"
    server="FerretDB $FERRETDB_VERSION on $backend"
fi

# ---------------------------------------------------------------------------------------------
# Reading the tools' output

# summarize WHAT ARGS...: one line of numbers from a tool's output (python3: the parsing is
# easier to read there than in awk).
#   hey FILE                  req/s p50_ms p99_ms answers_2xx other_answers errors
#   load FILE                 achieved_rps p50_ms p99_ms outcomes
#   per-order BEFORE AFTER N  commands per order: total, then the largest by command
summarize() {
    python3 - "$@" <<'PY'
import json, re, sys

what, args = sys.argv[1], sys.argv[2:]
if what == "hey":
    text = open(args[0]).read()
    def num(pattern):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+\S", text.split("Error distribution:")[1], re.M)) \
        if "Error distribution:" in text else 0
    ok = sum(n for c, n in codes.items() if 200 <= c < 300)
    # hey prints a percentile only when enough answers reach it (p99: at least 100).
    ms = lambda p: "%.2f" % (1000 * num(p)) if re.search(p, text) else "-"
    print("%.1f %s %s %d %d %d" % (num(r"Requests/sec:\s+([\d.]+)"), ms(r"50% in ([\d.]+) secs"),
          ms(r"99% in ([\d.]+) secs"), ok, sum(codes.values()) - ok, errors))
elif what == "load":
    r = json.load(open(args[0]))
    lat = r["latency_ms"]
    outcomes = " ".join("%s=%d" % kv for kv in sorted(r["outcomes"].items()))
    print("%.1f %.2f %.2f %s" % (r["achieved_rps"], lat["p50"], lat["p99"], outcomes or "-"))
elif what == "per-order":
    def counters(path):
        by_command = {}
        for line in open(path):
            m = re.match(r'ferretdb_client_requests_total\{(.*)\}\s+(\S+)', line)
            if m:
                command = re.search(r'command="([^"]*)"', m.group(1))
                key = command.group(1) if command else "?"
                by_command[key] = by_command.get(key, 0.0) + float(m.group(2))
        return by_command
    before, after, orders = counters(args[0]), counters(args[1]), int(args[2])
    if orders == 0:
        print("- (no order answered)")
        sys.exit()
    delta = {c: (n - before.get(c, 0.0)) / orders for c, n in after.items()}
    delta = {c: d for c, d in delta.items() if d >= 0.005}
    parts = ["%s %.2f" % (c, d) for c, d in sorted(delta.items(), key=lambda kv: -kv[1])]
    print("%6.2f   %s" % (sum(delta.values()), "  ".join(parts)))
PY
}

# metrics FILE: FerretDB's request counters now (nothing without FerretDB).
metrics() {
    if [[ -n ${FERRETDB_METRICS_URL:-} ]]; then
        curl -fsS --max-time 5 "$FERRETDB_METRICS_URL" | grep '^ferretdb_client_requests_total' >"$1" || true
    else
        : >"$1"
    fi
}

# rss PID...: each process's resident memory, "name 12.3 … MB".
rss() {
    local pid out=""
    for pid in "$@"; do
        out+=$(ps -o rss= -p "$pid" | awk -v name="${names[$pid]}" '{ printf "%s %.1f  ", name, $1 / 1024 }')
    done
    printf '%sMB' "$out"
}

# ---------------------------------------------------------------------------------------------
# One target: start its three services, measure, stop them

declare -A names
target_no=0

# start_services KIND DIR PORTS...: KIND rust (DIR holds the binaries) or node (DIR holds app.js).
# Sets pids (shipment, payment, order), ready_path and db_name (a fresh database).
start_services() {
    local kind=$1 dir=$2 op=$3 pp=$4 sp=$5 logs=$SAGA_LOG_DIR/target-$target_no svc
    local -a common=(env -i "PATH=$PATH")
    db_name=${kind/rust/measure}_$(date +%s)_$target_no
    if [[ $kind == rust ]]; then
        make_temp_dir saga-measure-data
        common+=(HOST=127.0.0.1 "DATA_DIR=$TEMP_DIR" LOG_FORMAT=json RUST_LOG=warn CHAOS_ENABLED=true)
        [[ -z $backend ]] || common+=("MONGO_URL=$MONGODB_URI" "MONGO_DB=$db_name")
        ready_path=/ready
    else
        common+=(NODE_ENV=production "MONGO_URL=$MONGODB_URI$db_name")
        ready_path=/
    fi
    local -a cmd
    pids=()
    for svc in shipment payment order; do
        if [[ $kind == rust ]]; then cmd=("$dir/$svc"); else cmd=(node "$dir/app.js"); fi
        local -a env_svc=("ID=$svc")
        case $svc in
        shipment) env_svc+=("PORT=$sp") ;;
        payment) env_svc+=("PORT=$pp" "CHAIN_SVC=http://127.0.0.1:$sp/create") ;;
        order) env_svc+=("PORT=$op" "CHAIN_SVC=http://127.0.0.1:$pp/create") ;;
        esac
        start_process "$svc" "$logs/$svc.log" TERM "${common[@]}" "${env_svc[@]}" "${cmd[@]}"
        pids+=("$STARTED_PID")
        names[$STARTED_PID]=$svc
    done
}

# wait_ready PORT PID: until GET ready_path answers 2xx, polling every 5 ms.
wait_ready() {
    local deadline=$((SECONDS + 90))
    until curl -fs -o /dev/null "http://127.0.0.1:$1$ready_path"; do
        alive "$2" || die "${names[$2]} exited before it was ready (log: $SAGA_LOG_DIR/target-$target_no/${names[$2]}.log)"
        ((SECONDS < deadline)) || die "${names[$2]} not ready after 90 s"
        sleep 0.005
    done
}

# fail_fast PAYMENT_PORT SHIPMENT_PORT: the table's fail-fast line.
fail_fast() {
    local pp=$1 sp=$2 state=closed
    log "fail-fast: waiting 11 s for the breaker window to forget the runs above"
    sleep 11
    curl -fsS -X PUT "127.0.0.1:$sp/chaos" -H 'content-type: application/json' -d '{"hang":true}' >/dev/null
    local -a jobs_started=()
    for _ in $(seq 1 60); do
        curl -s -o /dev/null --max-time 5 -H 'content-type: application/json' -d @"$payment_body" \
            "http://127.0.0.1:$pp/create?count=1" &
        jobs_started+=($!)
        sleep 0.05
        state=$(curl -s "127.0.0.1:$pp/breaker" | python3 -c 'import json,sys; print(json.load(sys.stdin)["breaker"]["state"])' || echo "?")
        [[ $state == open ]] && break
    done
    wait "${jobs_started[@]}" 2>/dev/null || true
    if [[ $state != open ]]; then
        printf 'fail-fast    payment'"'"'s breaker did not open (state %s)\n' "$state"
    else
        "$load_bin" load --url "http://127.0.0.1:$pp/create?count=1" --body "$payment_body" \
            --rate 100 --duration 5 --json >"$work/failfast.json" 2>/dev/null
        read -r achieved p50 p99 outcomes < <(summarize load "$work/failfast.json")
        printf 'fail-fast    breaker open, 100/s on payment: p50 %s ms  p99 %s ms  %s (%s/s)\n' \
            "$p50" "$p99" "$outcomes" "$achieved"
    fi
    curl -fsS -X DELETE "127.0.0.1:$sp/chaos" >/dev/null || true
}

# measure KIND DIR LABEL: the whole table for one target, printed when it is complete.
measure() {
    local kind=$1 dir=$2 label=$3 op pp sp start ready_ms
    target_no=$((target_no + 1))
    { read -r op && read -r pp && read -r sp; } < <(free_ports 3)
    log "target $target_no: $label"
    start=$(date +%s%N)
    start_services "$kind" "$dir" "$op" "$pp" "$sp"
    wait_ready "$sp" "${pids[0]}"
    wait_ready "$pp" "${pids[1]}"
    wait_ready "$op" "${pids[2]}"
    ready_ms=$((($(date +%s%N) - start) / 1000000))
    local db=""
    [[ -z $backend ]] || db=", database $db_name"
    local -a table=("== $label · $server$db ==")
    table+=("$(printf 'ready        %d ms' "$ready_ms")")
    sleep 1
    table+=("RSS idle     $(rss "${pids[@]}")")

    local url=http://127.0.0.1:$op/create
    log "warm-up: 2 s at 4 connections"
    hey -z 2s -c 4 -m POST -T application/json -D "$body" "$url" >/dev/null

    local c conns rps p50 p99 ok other errors per_order=()
    table+=("$(printf 'closed loop  %-16s %8s %8s %8s %7s %7s %7s' "hey -z ${duration}s" 'req/s' 'p50 ms' 'p99 ms' '2xx' 'other' 'errors')")
    for c in "${clients[@]}"; do
        conns="$c conns"
        ((c != 1)) || conns="1 conn"
        log "closed loop: $conns for $duration s"
        metrics "$work/before"
        hey -z "${duration}s" -c "$c" -m POST -T application/json -D "$body" "$url" >"$work/hey-$c.txt"
        sleep 0.3 # answers hey gave up on at the deadline finish their writes
        metrics "$work/after"
        read -r rps p50 p99 ok other errors < <(summarize hey "$work/hey-$c.txt")
        table+=("$(printf '  %-26s %8s %8s %8s %7s %7s %7s' "$conns" "$rps" "$p50" "$p99" "$ok" "$other" "$errors")")
        if [[ -n $backend ]]; then
            per_order+=("$(printf '  %-10s %s' "$conns" "$(summarize per-order "$work/before" "$work/after" "$ok")")")
        fi
    done

    local rate achieved outcomes
    table+=("$(printf 'open loop    %-16s %8s %8s %8s  %s' "saga load ${duration}s" 'achieved' 'p50 ms' 'p99 ms' 'outcomes')")
    for rate in "${rates[@]}"; do
        log "open loop: $rate req/s for $duration s"
        "$load_bin" load --url "$url" --rate "$rate" --duration "$duration" --json >"$work/load.json" 2>/dev/null
        read -r achieved p50 p99 outcomes < <(summarize load "$work/load.json")
        table+=("$(printf '  %-26s %8s %8s %8s  %s' "$rate/s" "$achieved" "$p50" "$p99" "$outcomes")")
    done
    if [[ -n $backend ]]; then
        table+=("db commands per order answered (FerretDB counters ÷ 2xx), total then by command")
        table+=("${per_order[@]}")
    fi
    table+=("RSS after    $(rss "${pids[@]}")")

    if [[ $kind == node ]]; then
        table+=("fail-fast    not measured: the Node original has no fault injection to hang shipment")
    elif [[ ${FAILFAST:-1} != 0 ]]; then
        table+=("$(fail_fast "$pp" "$sp")")
    fi

    local pid
    for pid in "${pids[@]}"; do
        stop_pid "$pid" TERM 15 || true
        forget_pid "$pid"
    done
    printf '%s\n' "${table[@]}" ""
}

for dir in "${bin_dirs[@]}"; do
    measure rust "$dir" "saga-breaker ${dir/#"$SAGA_ROOT"\//}"
done
if [[ $compare == node ]]; then
    measure node "$node_dir" "Node original $node_dir (node $(node --version))"
fi

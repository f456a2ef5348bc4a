#!/usr/bin/env bash
# scripts/overload.sh: ten times the sustainable rate for a minute, and what it costs. Not in CI.
#
#   bash scripts/overload.sh [embedded|mongo|both]
#
# Starts order, payment and shipment as three processes (the stack `saga up` runs, one process
# per service so each one's memory is its own) on the embedded store or on FerretDB/SQLite
# started here, drives POST /create on order with `saga load` at RATE requests per second
# (open loop: each request is due at start + i/RATE, whatever the answers) for DURATION
# seconds, and reports:
#   answers    saga load's outcomes (ok, degraded, http_503, http_429, timeout, …) and latency
#              percentiles; "over 1 s" counts answers slower than a second
#   RSS        per service from /proc/<pid>/status: idle, and the peak sampled every 0.5 s
#   verdict    PASS when every answer was 200, 503 or 429 within 1 s and every peak RSS is under
#              64 MB, else FAIL with the reason
#
# Environment:
#   RATE=N           requests per second for both stores; by default 10 × what the README
#                    measures each one sustains: 2500 embedded (~250), 5300 on FerretDB (~530)
#   DURATION=60      seconds
#   BIN_DIR=DIR      the binaries (order, payment, shipment, saga); default target/release,
#                    built first
#   TIMEOUT_MS=3000  saga load's per-request timeout (above 1 s, so slow answers are seen as
#                    slow rather than as timeouts)
# Logs go to target/overload-logs/. Run it on an otherwise idle machine.
set -euo pipefail
SAGA_LOG_DIR=${SAGA_LOG_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/overload-logs}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SAGA_ROOT"

mode=${1:-both}
case $mode in
embedded | mongo | both) ;;
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*) die "mode must be embedded, mongo or both (got '$mode')" ;;
esac
duration=${DURATION:-60}
timeout_ms=${TIMEOUT_MS:-3000}
bin_dir=${BIN_DIR:-}
if [[ -z $bin_dir ]]; then
    log "building release binaries"
    cargo build --release -p order -p payment -p shipment -p saga >&2
    bin_dir=target/release
fi
for b in order payment shipment saga; do
    [[ -x $bin_dir/$b ]] || die "$bin_dir/$b is missing"
done
trap stop_started EXIT

# rss_kib PID: VmRSS in KiB (0 when the process is gone).
rss_kib() { awk '/^VmRSS:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# run KIND: one stack, one load, one report block on stdout.
run() {
    local kind=$1 logs=$SAGA_LOG_DIR/$1 op pp sp svc rate
    if [[ $kind == mongo ]]; then rate=${RATE:-5300}; else rate=${RATE:-2500}; fi
    local -a ports
    mapfile -t ports < <(free_ports 3)
    op=${ports[0]} pp=${ports[1]} sp=${ports[2]}
    make_temp_dir saga-overload
    local -a common=(env -i "PATH=$PATH" HOST=127.0.0.1 "DATA_DIR=$TEMP_DIR" LOG_FORMAT=json RUST_LOG=warn)
    if [[ $kind == mongo ]]; then
        [[ -n ${MONGODB_URI:-} ]] || start_ferretdb "" ""
        common+=("MONGO_URL=$MONGODB_URI" "MONGO_DB=overload_$(date +%s)")
    fi
    local -A pid_of=()
    for svc in shipment payment order; do
        local -a env_svc=("ID=$svc")
        case $svc in
        shipment) env_svc+=("PORT=$sp") ;;
        payment) env_svc+=("PORT=$pp" "CHAIN_SVC=http://127.0.0.1:$sp/create") ;;
        order) env_svc+=("PORT=$op" "CHAIN_SVC=http://127.0.0.1:$pp/create") ;;
        esac
        start_process "$svc ($kind)" "$logs/$svc.log" TERM "${common[@]}" "${env_svc[@]}" "$bin_dir/$svc"
        pid_of[$svc]=$STARTED_PID
    done
    for svc in shipment payment order; do
        local port
        case $svc in shipment) port=$sp ;; payment) port=$pp ;; order) port=$op ;; esac
        wait_for_http "http://127.0.0.1:$port/ready" 60 "${pid_of[$svc]}" "$svc" || die "$svc not ready"
    done
    sleep 1
    local -A idle=() peak=()
    for svc in shipment payment order; do
        idle[$svc]=$(rss_kib "${pid_of[$svc]}")
        peak[$svc]=${idle[$svc]}
    done

    log "$kind: $rate req/s for $duration s"
    "$bin_dir/saga" load --url "http://127.0.0.1:$op/create" --rate "$rate" --duration "$duration" \
        --timeout-ms "$timeout_ms" --concurrency-limit 20000 --json >"$logs/load.json" 2>"$logs/load.err" &
    local load_pid=$!
    while alive "$load_pid"; do
        for svc in shipment payment order; do
            local now
            now=$(rss_kib "${pid_of[$svc]}")
            ((now > peak[$svc])) && peak[$svc]=$now
        done
        sleep 0.5
    done
    wait "$load_pid" || die "saga load failed: $(cat "$logs/load.err")"

    echo "== overload · $kind store · $rate req/s for $duration s =="
    python3 - "$logs/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_ms"]
print(f"answers      scheduled {r['scheduled']}, completed {r['completed']}, achieved {r['achieved_rps']:.0f} req/s")
print("outcomes     " + ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())))
print(f"latency ms   p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  p99.9 {lat['p999']:.1f}  max {lat['max']:.1f}")
PY
    local verdict=PASS reasons=()
    for svc in shipment payment order; do
        awk -v s="$svc" -v i="${idle[$svc]}" -v p="${peak[$svc]}" \
            'BEGIN { printf "RSS %-9s idle %5d KiB, peak %6d KiB (%.1f MB)\n", s, i, p, p / 1024 }'
        if ((peak[$svc] >= 64 * 1024)); then
            verdict=FAIL reasons+=("$svc peaked at ${peak[$svc]} KiB")
        fi
    done
    local bad
    bad=$(python3 - "$logs/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = {"ok", "degraded", "http_503", "http_429"}
bad = {k: v for k, v in r["outcomes"].items() if k not in ok and v}
slow = r["latency_ms"]["max"] > 1000
parts = [f"{k} {v}" for k, v in sorted(bad.items())]
if slow:
    parts.append(f"max latency {r['latency_ms']['max']:.0f} ms")
print("; ".join(parts))
PY
)
    if [[ -n $bad ]]; then verdict=FAIL reasons+=("$bad"); fi
    echo "verdict      $verdict${reasons[*]:+: ${reasons[*]}}"
    for svc in order payment shipment; do
        stop_pid "${pid_of[$svc]}" TERM 30 || true
        forget_pid "${pid_of[$svc]}"
    done
}

case $mode in
embedded) run embedded ;;
mongo) run mongo ;;
both)
    run embedded
    run mongo
    ;;
esac

#!/usr/bin/env bash
# scripts/soak.sh: the long run. Not part of CI: it takes half an hour by default.
#
#   bash scripts/soak.sh [MINUTES]
#
# Starts the three services as processes (on the embedded store, or on FerretDB with
# STORE=mongo), sends a steady load to order
# with `saga load` for MINUTES minutes (default 30), and every minute changes the fault in force
# through `/chaos` (payment or shipment failing, slow, hanging, or nothing), so the breakers
# open and close and the re-drivers have work all along. Every SAMPLE_S seconds it records each
# service's resident memory. When the load is over it clears the faults, waits until the
# re-drivers have had nothing to do for IDLE_S seconds (saga_redrives_total unchanged), stops the
# services (the embedded store is opened by one process at a time) and runs `saga verify`.
#
# It prints one line per minute (the fault in force, RSS per service) and a summary: RSS first
# and last minute, max, the load's outcomes, `saga verify`'s counts and violations. Exit status
# 1 when verify finds a violation or records are still open.
#
# Environment:
#   RATE=20             requests per second to order
#   SAMPLE_S=10         seconds between RSS samples
#   IDLE_S=20           re-driver idle time that counts as quiet (at most QUIET_S=300 s of waiting)
#   STORE=embedded      or `mongo`: FerretDB on SQLite, started here. On a small shared machine
#                       FerretDB/SQLite falls behind a long run (it filters nothing but _id in
#                       SQL, so every re-driver scan reads whole collections), hence the default.
#   BIN_DIR=DIR         the binaries (order, payment, shipment, saga); default target/release,
#                       built first
#   HOP_SECRET=...      when set, the hops are signed (passed to all three services)
#   MONGO_PORT=PORT     FerretDB's port (default: a free one)
# Logs and the RSS samples (rss.csv) go to target/soak-logs/.
set -euo pipefail
SAGA_LOG_DIR=${SAGA_LOG_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/soak-logs}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SAGA_ROOT"

case ${1:-} in -h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac
minutes=${1:-30}
[[ $minutes =~ ^[1-9][0-9]*$ ]] || die "MINUTES must be a whole number of minutes (got '$minutes')"
rate=${RATE:-20}
sample_s=${SAMPLE_S:-10}
quiet_s=${QUIET_S:-300}
idle_s=${IDLE_S:-20}
store=${STORE:-embedded}
[[ $store == embedded || $store == mongo ]] || die "STORE must be embedded or mongo (got '$store')"

if [[ -z ${BIN_DIR:-} ]]; then
    cargo build --release --bins
    BIN_DIR=$SAGA_ROOT/target/release
fi
for b in order payment shipment saga; do
    [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b is missing"
done

trap stop_started EXIT
mkdir -p "$SAGA_LOG_DIR"
db=soak_$(date +%s)
if [[ $store == mongo ]]; then
    start_ferretdb "${MONGO_PORT:-}"
    store_env=(MONGO_URL="$MONGODB_URI" MONGO_DB="$db")
    verify_store=(--mongo-url "$MONGODB_URI" --mongo-db "$db")
else
    make_temp_dir saga-soak
    store_env=(DATA_DIR="$TEMP_DIR")
    verify_store=(--data-dir "$TEMP_DIR")
fi
{ read -r op && read -r pp && read -r sp; } < <(free_ports 3)
ports=("$op" "$pp" "$sp")
names=(order payment shipment)
pids=()
for i in 0 1 2; do
    env_svc=(ID="${names[i]}" HOST=127.0.0.1 PORT="${ports[i]}" "${store_env[@]}"
        CHAOS_ENABLED=true LOG_FORMAT=json RUST_LOG=warn
        SAGA_BACKOFF_BASE_MS=500 SAGA_BACKOFF_CAP_MS=10000 SAGA_MAX_ATTEMPTS=12)
    if ((i < 2)); then env_svc+=(CHAIN_SVC="http://127.0.0.1:${ports[i + 1]}/create"); fi
    if [[ -n ${HOP_SECRET:-} ]]; then env_svc+=(HOP_SECRET="$HOP_SECRET"); fi
    start_process "${names[i]}" "$SAGA_LOG_DIR/${names[i]}.log" TERM env "${env_svc[@]}" "$BIN_DIR/${names[i]}"
    pids+=("$STARTED_PID")
done
for i in 2 1 0; do
    wait_for_http "http://127.0.0.1:${ports[i]}/ready" 60 "${pids[i]}" "${names[i]}" || die "${names[i]} not ready"
done

# rss_now: "order_kb payment_kb shipment_kb".
rss_now() {
    local pid out=()
    for pid in "${pids[@]}"; do
        alive "$pid" || die "a service died (pid $pid); see $SAGA_LOG_DIR"
        out+=("$(ps -o rss= -p "$pid" | tr -d ' ')")
    done
    echo "${out[*]}"
}

# The faults, in turn, one a minute: [service index]=JSON. An empty JSON clears everything.
faults=(
    '2 {"error_rate":0.5}'
    '2 {"latency_ms":200,"latency_max_ms":600}'
    '-'
    '1 {"error_rate":1.0}'
    '2 {"hang":true}'
    '-'
    '1 {"latency_ms":100,"latency_max_ms":400,"error_rate":0.2}'
)
chaos() {
    local i
    for i in 1 2; do curl -fsS -o /dev/null -X DELETE "127.0.0.1:${ports[i]}/chaos"; done
    [[ $1 == - ]] && return 0
    curl -fsS -o /dev/null -X PUT "127.0.0.1:${ports[$1]}/chaos" -H 'content-type: application/json' -d "$2"
}

mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

csv=$SAGA_LOG_DIR/rss.csv
echo "t_s,order_kb,payment_kb,shipment_kb,fault" >"$csv"
log "soak: $minutes min at $rate req/s, $store store, logs in ${SAGA_LOG_DIR#"$SAGA_ROOT"/}"
"$BIN_DIR/saga" load --url "http://127.0.0.1:$op/create" --rate "$rate" --duration $((minutes * 60)) \
    --timeout-ms 5000 --json >"$SAGA_LOG_DIR/load.json" 2>"$SAGA_LOG_DIR/load.log" &
load_pid=$!
started=$SECONDS
for ((m = 0; m < minutes; m++)); do
    f=${faults[m % ${#faults[@]}]}
    if [[ $f == - ]]; then chaos -; else chaos "${f%% *}" "${f#* }"; fi
    label=${f/#1 /payment }
    label=${label/#2 /shipment }
    [[ $label == - ]] && label=none
    while ((SECONDS - started < (m + 1) * 60)); do
        echo "$((SECONDS - started)),$(rss_now | tr ' ' ','),\"$label\"" >>"$csv"
        sleep "$sample_s"
    done
    read -r o p s < <(rss_now)
    printf 'minute %3d  fault %-58s RSS MB order %.1f payment %.1f shipment %.1f\n' \
        $((m + 1)) "$label" "$(mb "$o")" "$(mb "$p")" "$(mb "$s")"
done
chaos -
wait "$load_pid" || warn "saga load exited with $?"

log "load over; waiting for the re-drivers to be idle for $idle_s s (at most $quiet_s s)"
# redrives: the sum of saga_redrives_total over the three services.
redrives() {
    local port total=0 n
    for port in "${ports[@]}"; do
        n=$(curl -fsS --max-time 5 "127.0.0.1:$port/metrics" |
            awk '/^saga_redrives_total/ { s += $NF } END { printf "%d", s }') || n=0
        total=$((total + n))
    done
    echo "$total"
}
quiet_from=$SECONDS
last=$(redrives) idle_from=$SECONDS
while ((SECONDS - idle_from < idle_s && SECONDS - quiet_from < quiet_s)); do
    sleep 2
    now=$(redrives)
    if [[ $now != "$last" ]]; then last=$now idle_from=$SECONDS; fi
done
quiet=$((SECONDS - quiet_from))
read -r o p s < <(rss_now)
echo "$((SECONDS - started)),$o,$p,$s,\"after the load\"" >>"$csv"
for i in 0 1 2; do
    stop_pid "${pids[i]}" TERM 15 || warn "${names[i]} exited with $?"
    forget_pid "${pids[i]}"
done
"$BIN_DIR/saga" verify "${verify_store[@]}" --stuck-after "$quiet_s" --json \
    >"$SAGA_LOG_DIR/verify.json" 2>"$SAGA_LOG_DIR/verify.log" || true
open=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(sum(n for c in r["counts"].values() for s, n in c.items() if s in ("pending", "degraded", "compensating")))
' "$SAGA_LOG_DIR/verify.json" 2>/dev/null || echo "?")

python3 - "$csv" "$SAGA_LOG_DIR/load.json" "$SAGA_LOG_DIR/verify.json" "$minutes" "$rate" "$quiet" "$open" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
load = json.load(open(sys.argv[2]))
verify = json.load(open(sys.argv[3]))
minutes, rate, quiet, still_open = sys.argv[4:8]
print(f"== soak: {minutes} min at {rate} req/s ==")
for svc in ("order", "payment", "shipment"):
    kb = [int(r[f"{svc}_kb"]) for r in rows]
    first = [int(r[f"{svc}_kb"]) for r in rows if float(r["t_s"]) < 60] or kb[:1]
    last = [int(r[f"{svc}_kb"]) for r in rows if float(r["t_s"]) >= float(rows[-1]["t_s"]) - 60]
    print(f"RSS {svc:9s} first minute {max(first)/1024:6.1f} MB  last minute {max(last)/1024:6.1f} MB  "
          f"max {max(kb)/1024:6.1f} MB  ({len(kb)} samples)")
print(f"load: {load['completed']} of {load['scheduled']} answered, {load['achieved_rps']:.1f}/s, "
      f"outcomes {load['outcomes']}, fallbacks {load['fallbacks']}")
print(f"quiet: re-drivers idle {quiet} s after the load; records still open: {still_open}")
print(f"verify: counts {verify['counts']}")
print(f"verify: violations {verify['violations'] or 'none'}")
PY
[[ $open == 0 ]] || exit 1
python3 -c 'import json,sys; sys.exit(1 if json.load(open(sys.argv[1]))["violations"] else 0)' "$SAGA_LOG_DIR/verify.json"

#!/usr/bin/env bash
# The README's end-to-end numbers: the three release binaries as processes, driven by `saga load`.
#
#   bash scripts/measure.sh [embedded|mongo] [RATE...]
#
# Prints time to ready, RSS idle and after each rate, latency per rate (10 s each), and the
# fail-fast latency while payment's breaker is open (shipment hanging). `mongo` starts FerretDB
# through scripts/start-mongo.sh. Ports 4300-4302 must be free. Don't run it next to a build:
# on a small machine the numbers are the build's.
set -euo pipefail
mode=${1:-embedded}
shift || true
rates=("${@:-150 250 350}")
read -r -a rates <<< "${rates[*]}"
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p order -p payment -p shipment -p saga
bin=$here/target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

env_common=(env -i "PATH=$PATH" HOST=127.0.0.1 "DATA_DIR=$work/data" LOG_FORMAT=json RUST_LOG=warn CHAOS_ENABLED=true)
if [[ $mode == mongo ]]; then
  eval "$(bash scripts/start-mongo.sh --background --data "$work/ferretdb")"
  env_common+=("MONGO_URL=$MONGODB_URI" MONGO_DB=measure)
elif [[ $mode != embedded ]]; then
  echo "usage: $0 [embedded|mongo] [RATE...]" >&2
  exit 2
fi

start=$(date +%s%N)
"${env_common[@]}" PORT=4302 "$bin/shipment" > "$work/shipment.log" 2>&1 & pids+=($!)
"${env_common[@]}" PORT=4301 CHAIN_SVC=http://127.0.0.1:4302/create "$bin/payment" > "$work/payment.log" 2>&1 & pids+=($!)
"${env_common[@]}" PORT=4300 CHAIN_SVC=http://127.0.0.1:4301/create "$bin/order" > "$work/order.log" 2>&1 & pids+=($!)
for port in 4300 4301 4302; do
  until curl -sf "localhost:$port/ready" > /dev/null; do sleep 0.005; done
done
echo "time to ready ($mode): $(( ($(date +%s%N) - start) / 1000000 )) ms"

rss() {
  for p in "${pids[@]}"; do printf '%s %s KB  ' "$(ps -o comm= -p "$p")" "$(ps -o rss= -p "$p")"; done
  echo
}
sleep 1
echo -n "RSS idle: "; rss

load() { # URL BODY-FILE RATE SECONDS LABEL
  local body=()
  [[ -n $2 ]] && body=(--body "$2")
  "$bin/saga" load --url "$1" "${body[@]}" --rate "$3" --duration "$4" --json 2> /dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin); l = r["latency_ms"]
print("%-34s achieved %4.0f/s  p50 %7.2f  p90 %7.2f  p99 %7.2f  max %7.1f ms  %s" % (
    sys.argv[1], r["achieved_rps"], l["p50"], l["p90"], l["p99"], l["max"], r.get("outcomes")))' "$5"
}

for rate in "${rates[@]}"; do
  load http://127.0.0.1:4300/create "" "$rate" 10 "chain at $rate/s"
  echo -n "  RSS after: "; rss
done

# Fail-fast: shipment hangs; requests to payment until its breaker opens; then payment under load.
# First let the successes above leave payment's breaker window (BREAKER_WINDOW_MS, 10 s).
sleep 11
pay=$work/payment.json
echo '{"amount":0,"id":"1","shipment":{"id":"1","directions":"home"}}' > "$pay"
curl -sf -X PUT localhost:4302/chaos -H 'content-type: application/json' -d '{"hang":true}' > /dev/null
state=closed
for _ in $(seq 1 60); do
  curl -s -o /dev/null -H 'content-type: application/json' -d @"$pay" 'http://127.0.0.1:4301/create?count=1' &
  sleep 0.05
  state=$(curl -s localhost:4301/breaker | python3 -c 'import json,sys; print(json.load(sys.stdin)["breaker"]["state"])')
  [[ $state == open ]] && break
done
wait_for_jobs() { for j in $(jobs -p); do [[ " ${pids[*]} " == *" $j "* ]] || wait "$j" 2> /dev/null || true; done; }
wait_for_jobs
echo "payment's breaker: $state"
load 'http://127.0.0.1:4301/create?count=1' "$pay" 100 5 "fail-fast (breaker open) at 100/s"
curl -sf -X DELETE localhost:4302/chaos > /dev/null

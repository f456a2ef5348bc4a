#!/usr/bin/env bash
# Runs the Chaos Toolkit experiment experiments/shipment-down.json against a fresh stack:
#
#   experiments/run.sh before   breakers and graceful degradation off: the hypothesis deviates
#   experiments/run.sh after    the defaults: it holds
#
# Starts the three services (experiments/stack.sh), runs `chaos run` with their URLs, stops
# them, and prints the journal's verdict as one line: `before: status=failed deviated=true`.
# The journal is kept in $CHAOS_OUT/journal-<mode>.json (default target/chaos). Exits 0 when
# the experiment ran, whatever its verdict; judging the verdict is the caller's (CI's) job.
#
# Environment: CHAOS_BIN (default: `chaos` on PATH), ORDER_SLA_SECONDS (default 1), and
# experiments/stack.sh's STACK_DIR, SAGA_TARGET and MONGODB_URI.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
mode=${1:-}
[[ $mode == before || $mode == after ]] || {
    echo "usage: $0 before|after" >&2
    exit 2
}
CHAOS_BIN=${CHAOS_BIN:-chaos}
out=${CHAOS_OUT:-$ROOT/target/chaos}
mkdir -p "$out"
journal=$out/journal-$mode.json
rm -f "$journal"

trap 'experiments/stack.sh down' EXIT
experiments/stack.sh up "$mode"
set -a
# shellcheck disable=SC1090 # ORDER_URL=…, PAYMENT_URL=…, SHIPMENT_URL=…
source <(experiments/stack.sh urls)
set +a

rc=0
"$CHAOS_BIN" --log-file "$out/chaostoolkit-$mode.log" run --journal-path "$journal" \
    experiments/shipment-down.json || rc=$?
[[ -s $journal ]] || {
    echo "chaos run exited with status $rc and wrote no journal" >&2
    exit 1
}
python3 - "$mode" "$journal" <<'PY'
import json, sys
mode, path = sys.argv[1], sys.argv[2]
j = json.load(open(path))
print(f"{mode}: status={j['status']} deviated={str(j['deviated']).lower()}")
PY

# shellcheck shell=bash
# Step `chaos`: the Chaos Toolkit experiment experiments/shipment-down.json, run twice with the
# real `chaos` CLI against the three services as separate processes (experiments/run.sh):
# `before` (breakers and fallback off) must deviate, `after` (the defaults) must hold.
# experiments/verdicts.py asserts both journals. Sourced by scripts/test.sh; needs the service
# binaries (step build) and uses MONGODB_URI when set.

step_chaos_experiment() {
    ensure_chaostoolkit
    local out=$SAGA_LOG_DIR/chaos mode
    mkdir -p "$out"
    for mode in before after; do
        CHAOS_BIN=$CHAOS_BIN CHAOS_OUT=$out STACK_DIR=$out/stack-$mode \
            "$SAGA_ROOT/experiments/run.sh" "$mode"
    done
    python3 "$SAGA_ROOT/experiments/verdicts.py" "$out/journal-before.json" \
        "$out/journal-after.json" | tee "$out/verdicts.totals"
}

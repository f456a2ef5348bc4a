# shellcheck shell=bash
# scripts/steps/h12-trust.sh: the CI step for signed hops, sourced by test.sh.
#
# step_signed_http: a stack started with HOP_SECRET, then
#   - an unsigned POST to payment's and shipment's /create must get 401 `signature_required`;
#   - http-tests/payment.http and shipment.http, signed by http-tests/sign-hop.js (the httpyac
#     variable `hop_secret`), must pass as they do unsigned against a stack without a secret;
#   - order (the public entry) must still take a client's unsigned order, and complete it.
# About 20 s: one `saga up` on the embedded store, two files of httpyac.

step_signed_http() {
    _started_pids=() _started_names=() _started_signals=() _cleanup_dirs=()
    trap stop_started EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ensure_httpyac
    local saga_bin=${SAGA_BIN:-${CARGO_TARGET_DIR:-$SAGA_ROOT/target}/debug/saga} op pp sp port
    [[ -x $saga_bin ]] || die "$saga_bin not built"
    { read -r op && read -r pp && read -r sp; } < <(free_ports 3)
    local secret
    secret=ci-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    make_temp_dir saga-signed-http
    start_process "saga up (signed hops)" "$SAGA_LOG_DIR/signed-stack.log" INT \
        env -u ID -u PORT -u CHAIN_SVC -u JUMPS -u MONGO_URL -u MONGO_DB -u BREAKER_BACKEND \
        -u CHAOS_ENABLED INJECT_ERR=0 "DATA_DIR=$TEMP_DIR" "HOP_SECRET=$secret" HOP_KEY_ID=ci \
        "$saga_bin" up --order-port "$op" --payment-port "$pp" --shipment-port "$sp"
    for port in "$op" "$pp" "$sp"; do
        wait_for_http "http://127.0.0.1:$port/ready" 90 "$STARTED_PID" "saga up"
    done

    local code
    for port in "$pp" "$sp"; do
        code=$(curl -s -o "$TEMP_DIR/refused.json" -w '%{http_code}' -H 'content-type: application/json' \
            -d '{"amount":0,"id":"1","shipment":{"id":"1","directions":"home"}}' \
            "http://127.0.0.1:$port/create")
        if [[ $code != 401 ]] || ! grep -q '"signature_required"' "$TEMP_DIR/refused.json"; then
            die "an unsigned call to :$port/create got $code: $(cat "$TEMP_DIR/refused.json")"
        fi
    done
    code=$(curl -s -o "$TEMP_DIR/order.json" -w '%{http_code}' -H 'content-type: application/json' \
        -d '{"id":"1","items":[],"payment":{"amount":0,"id":"1","shipment":{"id":"1","directions":"home"}}}' \
        "http://127.0.0.1:$op/create")
    if [[ $code != 200 ]] || ! grep -q '"status":"completed"' "$TEMP_DIR/order.json"; then
        die "order over signed hops answered $code: $(cat "$TEMP_DIR/order.json")"
    fi

    local -a color=()
    [[ -t 1 ]] || color=(--no-color)
    "$HTTPYAC_BIN" send http-tests/payment.http http-tests/shipment.http --all --timeout 15000 \
        --output short --output-failed exchange "${color[@]}" \
        --var "payment=http://127.0.0.1:$pp" "shipment=http://127.0.0.1:$sp" inject_err=0 \
        store=embedded "hop_secret=$secret" hop_key_id=ci
}

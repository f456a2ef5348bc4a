# shellcheck shell=bash
# scripts/steps/h14-watch.sh: watching the stack work, with the real tools a user would use.
# Sourced by scripts/test.sh (it needs scripts/lib.sh); its step is `watch`:
#
#   1. the Grafana dashboard (deploy/grafana/dashboards/saga-breaker.json): a real Prometheus
#      (Debian's package) scrapes a `saga up` stack once a second while `saga load` runs and
#      shipment fails every call for a while (/chaos); then every query of the dashboard must
#      return data, and the breaker-state query must show payment->shipment open
#      (scripts/check-dashboard.py);
#   2. the live page (GET /live): headless Chromium (Debian's package), driven by playwright-core
#      from npm, watches payment's page open and close as the fault goes on and off
#      (scripts/browser/live-page.mjs). Screenshots go to target/test-logs/live-page/.
#
# One stack serves both parts. `saga up` runs the three services in one process, which has one
# metrics registry, so Prometheus scrapes order's port only (every service's series are there,
# labelled by service or breaker); in docker-compose each service is scraped on its own.

PLAYWRIGHT_CORE_VERSION=${PLAYWRIGHT_CORE_VERSION:-1.65.1}

# ensure_prometheus: sets PROMETHEUS_BIN, installing Debian's prometheus when it is missing.
ensure_prometheus() {
    PROMETHEUS_BIN=$(command -v prometheus || true)
    if [[ -z $PROMETHEUS_BIN ]]; then
        apt_install prometheus || return 1
        PROMETHEUS_BIN=$(command -v prometheus) || return 1
    fi
}

# ensure_chromium: sets CHROMIUM_BIN, installing Debian's chromium when it is missing.
ensure_chromium() {
    CHROMIUM_BIN=$(command -v chromium || true)
    if [[ -z $CHROMIUM_BIN ]]; then
        apt_install chromium || return 1
        CHROMIUM_BIN=$(command -v chromium) || return 1
    fi
}

# ensure_playwright_core: sets PLAYWRIGHT_CORE (the package folder), installing the pinned
# playwright-core into the cache the first time. It drives the system's Chromium, so it
# downloads no browser.
ensure_playwright_core() {
    local prefix=$SAGA_CACHE/npm/playwright-core-$PLAYWRIGHT_CORE_VERSION
    PLAYWRIGHT_CORE=$prefix/node_modules/playwright-core
    [[ -f $PLAYWRIGHT_CORE/index.mjs ]] && return 0
    command -v npm >/dev/null || {
        warn "npm is needed to install playwright-core"
        return 1
    }
    mkdir -p "$prefix"
    log "npm install playwright-core@$PLAYWRIGHT_CORE_VERSION into ${prefix/#"$HOME"/\~}"
    npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error \
        "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2 || return 1
    [[ -f $PLAYWRIGHT_CORE/index.mjs ]]
}

# _watch_chaos METHOD [JSON]: PUT or DELETE the watch stack's shipment /chaos.
_watch_chaos() {
    curl -fsS -X "$1" -H 'content-type: application/json' ${2:+--data "$2"} \
        "http://127.0.0.1:$_watch_sp/chaos" >/dev/null
}

step_watch() {
    _started_pids=() _started_names=() _started_signals=() _cleanup_dirs=()
    trap stop_started EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ensure_prometheus || die "prometheus is needed"
    ensure_chromium || die "chromium is needed"
    ensure_playwright_core || die "playwright-core is needed"
    local saga_bin=${SAGA_BIN:-${CARGO_TARGET_DIR:-$SAGA_ROOT/target}/debug/saga} op pp prom
    [[ -x $saga_bin ]] || die "$saga_bin not built"
    { read -r op && read -r pp && read -r _watch_sp && read -r prom; } < <(free_ports 4)
    local out=$SAGA_LOG_DIR/watch
    mkdir -p "$out"

    # The stack: compose's breaker settings except a 3 s reset, so the open shows in a short
    # run and the page's test closes it quickly, and a 2 s call timeout, so the injected fault
    # is what opens the breaker, not a slow database on a busy machine; /chaos on.
    local -a stack_env=(INJECT_ERR=0 CHAOS_ENABLED=true BREAKER_RESET_MS=3000
        BREAKER_TIMEOUT_MS=2000 RUST_LOG=warn NO_COLOR=1)
    if [[ -n ${MONGODB_URI:-} ]]; then
        stack_env+=("MONGO_URL=$MONGODB_URI" "MONGO_DB=watch_$(date +%s)_$RANDOM")
    else
        make_temp_dir saga-watch-data
        stack_env+=("DATA_DIR=$TEMP_DIR")
    fi
    start_process "saga up (watch)" "$out/stack.log" INT \
        env -u ID -u PORT -u CHAIN_SVC -u JUMPS -u ERR_RATE -u MONGO_URL -u MONGO_DB \
        -u BREAKER_BACKEND -u CHAOS_TOKEN "${stack_env[@]}" \
        "$saga_bin" up --order-port "$op" --payment-port "$pp" --shipment-port "$_watch_sp"
    local stack_pid=$STARTED_PID port
    for port in "$op" "$pp" "$_watch_sp"; do
        wait_for_http "http://127.0.0.1:$port/ready" 90 "$stack_pid" "saga up" || return 1
    done

    make_temp_dir saga-prometheus
    local pdir=$TEMP_DIR
    cat >"$pdir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: saga-breaker
    static_configs:
      - targets: ["127.0.0.1:$op"]
EOF
    start_process prometheus "$out/prometheus.log" TERM \
        "$PROMETHEUS_BIN" --config.file="$pdir/prometheus.yml" --storage.tsdb.path="$pdir/data" \
        --web.listen-address="127.0.0.1:$prom"
    wait_for_http "http://127.0.0.1:$prom/-/ready" 60 "$STARTED_PID" prometheus || return 1

    # Load with a fault in the middle: 15 orders/s for 20 s, shipment failing from 4 s to 11 s.
    # (Enough for every rate and quantile over a 1 m window; little enough that FerretDB on a
    # busy 2-core machine is not left with a backlog the page test then waits on.)
    local start rc=0
    start=$(date +%s)
    "$saga_bin" load --url "http://127.0.0.1:$op/create" --rate 15 --duration 20 \
        >"$out/load.txt" 2>&1 &
    local load_pid=$!
    sleep 4
    _watch_chaos PUT '{"error_rate": 1, "status": 502}' || rc=1
    sleep 7
    _watch_chaos DELETE || rc=1
    wait "$load_pid" || rc=1
    sleep 3 # two more scrapes after the last order
    ((rc == 0)) || {
        warn "load or /chaos failed: see $out/load.txt"
        return 1
    }
    log "dashboard queries against Prometheus (scraped every second since $(date -d "@$start" +%T))"
    local dash_rc=0 page_rc=0
    python3 "$SAGA_ROOT/scripts/check-dashboard.py" \
        "$SAGA_ROOT/deploy/grafana/dashboards/saga-breaker.json" "http://127.0.0.1:$prom" \
        "$start" "payment->shipment" >"$out/dashboard.txt" 2>&1 || dash_rc=$?
    cat "$out/dashboard.txt"

    log "live page in headless Chromium ($("$CHROMIUM_BIN" --version 2>/dev/null | head -n 1))"
    PLAYWRIGHT_CORE=$PLAYWRIGHT_CORE CHROMIUM_BIN=$CHROMIUM_BIN OUT_DIR=$out/live-page \
        ORDER="http://127.0.0.1:$op" PAYMENT="http://127.0.0.1:$pp" \
        SHIPMENT="http://127.0.0.1:$_watch_sp" \
        timeout 180 node "$SAGA_ROOT/scripts/browser/live-page.mjs" >"$out/live-page.txt" 2>&1 ||
        page_rc=$?
    cat "$out/live-page.txt"
    ((dash_rc == 0)) || warn "dashboard check failed: see $out/dashboard.txt"
    ((page_rc == 0)) || warn "live page test failed: see $out/live-page.txt and $out/live-page/"
    ((dash_rc == 0 && page_rc == 0))
}

#!/usr/bin/env bash
# scripts/test.sh: the project's test command (the README's, and what .ci/run runs).
#
#   scripts/test.sh                  everything, in order (below)
#   scripts/test.sh -p shared        extra arguments go to `cargo test`
#   SAGA_SKIP=clippy,http scripts/test.sh    skip steps while iterating (refused when CI=true)
#
# Steps: 1 tools (install what is missing, build FerretDB once) · 2 fmt, clippy · 3 databases
# (FerretDB on SQLite and on PostgreSQL + Redis, or testcontainers where Docker works) · 4 build,
# cargo test (on FerretDB/SQLite), the MongoDB-path suites again on FerretDB/PostgreSQL · 5 httpyac
# against a live `saga up` stack · 6 docker-compose config · 7 watch (scripts/steps/h14-watch.sh:
# the Grafana dashboard on a real Prometheus, the live page in headless Chromium). Servers' logs go to
# target/test-logs/; on failure their last lines are printed. Everything started is stopped on
# exit, and the exit status is non-zero if any step failed.
#
# Environment:
#   MONGODB_URI   use this MongoDB instead of starting one
#   SAGA_MONGO    auto (default: testcontainers if `docker info` works, else FerretDB) | ferretdb | docker
#   SAGA_CACHE    tool cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/saga-breaker)
#   SAGA_BIN      the `saga` binary for the live stack (default target/debug/saga)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SAGA_ROOT"

case ${1:-} in
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac

# ---------------------------------------------------------------------------------------------
# Step bookkeeping: every step ends up in RESULTS as "name status seconds".

RESULTS=()
CURRENT_STEP=""
STEP_START=$SECONDS
FAILED=0
TESTS_LINE=""
HTTP_LINE=""
RUN_START=$SECONDS

IFS=, read -r -a SKIPS <<<"${SAGA_SKIP:-}"
if is_ci && ((${#SKIPS[@]} > 0)); then
    warn "CI=true: SAGA_SKIP=${SAGA_SKIP} is ignored, every step runs"
    SKIPS=()
fi

skipped() {
    local s
    for s in "${SKIPS[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

begin_step() {
    CURRENT_STEP=$1
    STEP_START=$SECONDS
    printf '\n==== [%s] %s: %s ====\n' "$(date +%H:%M:%S)" "$1" "$2" >&2
}

end_step() {
    RESULTS+=("$CURRENT_STEP $1 $((SECONDS - STEP_START))s")
    [[ $1 == FAILED ]] && FAILED=1
    CURRENT_STEP=""
}

# hard NAME TITLE CMD...: a step the rest depends on. A failure ends the run (errexit; the EXIT
# trap records it).
hard() {
    local name=$1 title=$2
    shift 2
    if skipped "$name"; then
        RESULTS+=("$name skipped -")
        return 0
    fi
    begin_step "$name" "$title"
    "$@"
    end_step ok
}

# soft NAME TITLE CMD...: a step whose failure is recorded, and the run goes on, so one CI run
# reports every problem. CMD runs in a subshell with errexit on.
soft() {
    local name=$1 title=$2 rc
    shift 2
    if skipped "$name"; then
        RESULTS+=("$name skipped -")
        return 0
    fi
    begin_step "$name" "$title"
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    if ((rc == 0)); then end_step ok; else
        warn "step $name failed (exit $rc)"
        end_step FAILED
    fi
}

summary() {
    local r line="" name status secs
    for r in "${RESULTS[@]}"; do
        read -r name status secs <<<"$r"
        line+="${line:+, }$name $status${secs:+ $secs}"
        line=${line% -}
    done
    local total=$((SECONDS - RUN_START)) verdict=PASS
    ((FAILED == 0)) || verdict=FAIL
    printf '\n' >&2
    [[ -n $HTTP_LINE ]] && printf 'httpyac: %s\n' "$HTTP_LINE"
    [[ -s $SAGA_LOG_DIR/schemathesis.totals ]] &&
        printf 'schemathesis: %s\n' "$(paste -sd ' ' "$SAGA_LOG_DIR/schemathesis.totals")"
    printf 'summary: %s in %dm%02ds: %s\n' "$verdict" $((total / 60)) $((total % 60)) "$line"
    # The closing line CI tools read: cargo test's totals over the whole workspace.
    [[ -n $TESTS_LINE ]] && printf 'tests: %s\n' "$TESTS_LINE"
    return 0
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n $CURRENT_STEP ]]; then
        warn "step $CURRENT_STEP failed (exit $rc)"
        end_step FAILED
    fi
    if ((FAILED != 0 || rc != 0)); then
        tail_log "$SAGA_LOG_DIR/ferretdb.log" 20
        tail_log "$SAGA_LOG_DIR/ferretdb-postgresql.log" 20
        tail_log "$SAGA_LOG_DIR/postgres.log" 10
        tail_log "$SAGA_LOG_DIR/redis.log" 10
        tail_log "$SAGA_LOG_DIR/stack.log" 60
    fi
    stop_started
    summary
    ((rc != 0)) && exit "$rc"
    ((FAILED == 0)) || exit 1
    exit 0
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$SAGA_LOG_DIR"
rm -f "$SAGA_LOG_DIR"/*.log "$SAGA_LOG_DIR"/*.totals

# ---------------------------------------------------------------------------------------------
# Steps
# shellcheck source=scripts/steps/h14-watch.sh
source "$SAGA_ROOT/scripts/steps/h14-watch.sh"

# shellcheck source=scripts/steps/h13-chaos.sh
source "$SAGA_ROOT/scripts/steps/h13-chaos.sh"

# shellcheck source=scripts/steps/h14-story.sh
source "$SAGA_ROOT/scripts/steps/h14-story.sh"

# shellcheck source=scripts/steps/h12-trust.sh
source "$SAGA_ROOT/scripts/steps/h12-trust.sh"

MONGO_MODE=""
# Test-name filters (cargo test's) of the suites that also run on FerretDB/PostgreSQL.
PG_SUITES=(store_contract:: mongo_path:: chain::)

step_tools() {
    ensure_apt_tools
    decide_mongo_mode
    if [[ $MONGO_MODE == ferretdb ]]; then
        ensure_ferretdb
        ensure_postgres
    fi
    ensure_httpyac
    ensure_schemathesis
    log "tools: cargo $(cargo --version | cut -d' ' -f2), go $(go version 2>/dev/null | cut -d' ' -f3 || echo -)," \
        "node $(node --version), redis $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p'), httpyac $("$HTTPYAC_BIN" --version)," \
        "docker-compose $(docker-compose version --short 2>/dev/null || echo ?), mongo: $MONGO_MODE"
}

decide_mongo_mode() {
    if [[ -n ${MONGODB_URI:-} ]]; then
        MONGO_MODE=external
        return
    fi
    case ${SAGA_MONGO:-auto} in
    ferretdb) MONGO_MODE=ferretdb ;;
    docker) MONGO_MODE=docker ;;
    auto) if docker_works; then MONGO_MODE=docker; else MONGO_MODE=ferretdb; fi ;;
    *) die "SAGA_MONGO must be auto, ferretdb or docker (got '$SAGA_MONGO')" ;;
    esac
}

# shellcheck disable=SC2119 # start_ferretdb/start_redis take optional arguments; none here
step_databases() {
    case $MONGO_MODE in
    external) log "using MONGODB_URI from the environment: $MONGODB_URI" ;;
    docker) log "Docker works and MONGODB_URI is unset: the Rust tests start MongoDB with testcontainers" ;;
    ferretdb)
        # FerretDB on PostgreSQL first, SQLite second: MONGODB_URI (what every test reads)
        # ends up on SQLite, the stricter of the two (it filters only `_id` in SQL), and the
        # MongoDB-path suites run once more on PostgreSQL (step test-pg).
        start_ferretdb --backend postgresql
        export MONGODB_URI_PG=$MONGODB_URI
        start_ferretdb
        ;;
    esac
    start_redis
}

step_cargo_test() {
    local log_file=$SAGA_LOG_DIR/cargo-test.log rc=0
    cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log_file" || rc=$?
    TESTS_LINE=$(awk '
        /^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i+1) ~ /^passed/) p += $i
                if ($(i+1) ~ /^failed/) f += $i
                if ($(i+1) ~ /^ignored/) s += $i
            }
            n++
        }
        END { if (n) printf "%d passed, %d failed, %d skipped", p, f, s }' "$log_file")
    printf '%s\n' "$TESTS_LINE" >"$SAGA_LOG_DIR/cargo-test.totals"
    return "$rc"
}

# The MongoDB path's suites (the store contract, the round-trip counts, the chain) once more,
# on FerretDB over PostgreSQL: it pushes equality filters down to SQL where SQLite does not, so
# the same code takes other paths in the server.
step_cargo_test_pg() {
    [[ -n ${MONGODB_URI_PG:-} ]] || {
        log "no second server (MONGODB_URI given, or Docker): nothing to do"
        return 0
    }
    local log_file=$SAGA_LOG_DIR/cargo-test-pg.log rc=0
    MONGODB_URI=$MONGODB_URI_PG cargo test -p testkit --test it --no-fail-fast -- \
        "${PG_SUITES[@]}" 2>&1 | tee "$log_file" || rc=$?
    return "$rc"
}

# The start of a step that runs the .http files on a stack of its own, in soft's subshell: its
# own list of started processes and its own EXIT trap (so the stack is stopped however the step
# ends, and the parent's servers are left to the parent), and HTTP_FILES, the files to run.
own_stack_for_http_files() {
    _started_pids=() _started_names=() _started_signals=() _cleanup_dirs=()
    trap stop_started EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    shopt -s nullglob
    HTTP_FILES=(http-tests/*.http)
    shopt -u nullglob
    ((${#HTTP_FILES[@]} > 0)) || die "no http-tests/*.http files"
}

# The stack the .http files talk to: `saga up` with all three services on free ports, a fresh
# database, and no injected errors, so every assertion is strict (inject_err=0). The same files
# run again on docker-compose.yaml's environment in step http-compose (scripts/steps/h14-story.sh).
# Runs in soft's subshell (see own_stack_for_http_files).
step_http_tests() {
    own_stack_for_http_files

    local saga_bin=${SAGA_BIN:-${CARGO_TARGET_DIR:-$SAGA_ROOT/target}/debug/saga} op pp sp
    [[ -x $saga_bin ]] || die "$saga_bin not built"
    { read -r op && read -r pp && read -r sp; } < <(free_ports 3)

    # CHAOS_ENABLED: http-tests/breaker.http drives the breaker through shipment's /chaos.
    local -a stack_env=(INJECT_ERR=0 CHAOS_ENABLED=true "RUST_LOG=${RUST_LOG:-info}" NO_COLOR=1)
    local store=mongo
    if [[ -n ${MONGODB_URI:-} ]]; then
        stack_env+=("MONGO_URL=$MONGODB_URI" "MONGO_DB=httpyac_$(date +%s)_$RANDOM")
    else
        make_temp_dir saga-http-data # Docker mode: the embedded store
        stack_env+=("DATA_DIR=$TEMP_DIR")
        store=embedded
    fi
    # A background job of a script starts with SIGINT ignored; undo that where env can, so the
    # SIGINT below is the Ctrl-C a user would send.
    local -a env_cmd=(env)
    if env --default-signal=INT true 2>/dev/null; then env_cmd+=(--default-signal=INT); fi
    local stack_log=$SAGA_LOG_DIR/stack.log
    start_process "saga up" "$stack_log" INT \
        "${env_cmd[@]}" -u ID -u PORT -u CHAIN_SVC -u JUMPS -u ERR_RATE -u MONGO_URL -u MONGO_DB \
        -u BREAKER_BACKEND -u CHAOS_ENABLED "${stack_env[@]}" \
        "$saga_bin" up --order-port "$op" --payment-port "$pp" --shipment-port "$sp"
    local stack_pid=$STARTED_PID

    local port
    for port in "$op" "$pp" "$sp"; do
        wait_for_http "http://127.0.0.1:$port/ready" 90 "$stack_pid" "saga up"
    done
    log "stack ready: order :$op, payment :$pp, shipment :$sp"

    local rc=0 out=$SAGA_LOG_DIR/httpyac.log
    local -a color=()
    [[ -t 1 ]] || color=(--no-color)
    "$HTTPYAC_BIN" send "${HTTP_FILES[@]}" --all --timeout 15000 \
        --output short --output-failed exchange "${color[@]}" \
        --var "order=http://127.0.0.1:$op" "payment=http://127.0.0.1:$pp" \
        "shipment=http://127.0.0.1:$sp" inject_err=0 "store=$store" 2>&1 | tee "$out" || rc=$?
    grep -Eo '[0-9]+ requests processed.*' "$out" | tail -n 1 >"$SAGA_LOG_DIR/httpyac.totals" || true

    # Schemathesis: requests generated from each service's /openapi.json; no 5xx, no answer
    # that violates the schema, no schema-valid request refused.
    local st_rc=0 st_out=$SAGA_LOG_DIR/schemathesis.log
    : >"$st_out"
    for port in "$op" "$pp" "$sp"; do
        "$SCHEMATHESIS_BIN" run "http://127.0.0.1:$port/openapi.json" --max-examples 60 \
            --seed 1 --no-color 2>&1 | tee -a "$st_out" || st_rc=$?
    done
    grep -Eo '[0-9]+ generated.*' "$st_out" >"$SAGA_LOG_DIR/schemathesis.totals" || true
    if ((st_rc != 0)); then
        warn "schemathesis found failures (exit status $st_rc): see $st_out"
        rc=$st_rc
    fi

    log "stopping saga up (SIGINT)"
    local stop_rc=0
    stop_pid "$stack_pid" INT 20 || stop_rc=$?
    forget_pid "$stack_pid"
    if ((rc != 0)); then
        warn "httpyac exited with status $rc (10: a request errored, 20: an assertion failed)"
        return "$rc"
    fi
    if ((stop_rc != 0)); then
        warn "saga up did not stop cleanly on SIGINT (exit status $stop_rc)"
    fi
    return "$stop_rc"
}

step_compose() {
    docker-compose -f docker-compose.yaml config -q
    docker-compose -f docker-compose.yaml --profile redis config -q
    docker-compose -f docker-compose.yaml -f docker-compose.watch.yaml config -q
    log "docker-compose.yaml is valid (services: $(docker-compose -f docker-compose.yaml config --services | tr '\n' ' '))"
}

# Collect the soft steps' totals, written from their subshells.
read_totals() {
    [[ -s $SAGA_LOG_DIR/cargo-test.totals ]] && TESTS_LINE=$(<"$SAGA_LOG_DIR/cargo-test.totals")
    [[ -s $SAGA_LOG_DIR/httpyac.totals ]] && HTTP_LINE=$(<"$SAGA_LOG_DIR/httpyac.totals")
    return 0
}

log "saga-breaker tests in $SAGA_ROOT (CI=${CI:-false}, cache ${SAGA_CACHE/#"$HOME"/\~})"
hard tools "install missing tools" step_tools
soft fmt "cargo fmt --check" cargo fmt --all -- --check
soft clippy "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
hard databases "start MongoDB-wire server and Redis" step_databases
hard build "cargo build --bins" cargo build --workspace --bins
soft test "cargo test" step_cargo_test "$@"
read_totals
soft test-pg "MongoDB-path suites on FerretDB/PostgreSQL" step_cargo_test_pg
soft http "httpyac and schemathesis against a live stack" step_http_tests
soft signed-http "httpyac over signed hops (HOP_SECRET)" step_signed_http
read_totals
soft compose "docker-compose config" step_compose
soft chaos "Chaos Toolkit: shipment down, before and after" step_chaos_experiment
soft watch "Grafana dashboard on a real Prometheus, live page in headless Chromium" step_watch
soft http-compose "httpyac on docker-compose.yaml's environment (injection on)" step_compose_http_tests

# shellcheck shell=bash
# scripts/steps/h14-story.sh: the http-tests against the stack docker-compose.yaml describes.
#
# Sourced by scripts/test.sh. The `http` step runs every http-tests/*.http strictly, on a clean
# `saga up` with no injected errors; this step runs them again on the three service binaries
# started with exactly the environment docker-compose.yaml gives each one (INJECT_ERR=1 on
# shipment, payment's breaker settings, CHAOS_ENABLED on shipment), read through
# `docker-compose config` so the two cannot drift. Only what can't exist outside Docker is
# swapped: the compose network's host names become 127.0.0.1, the ports free ones, and the
# database this run's (or the embedded store where the tests use testcontainers).

# compose_env SERVICE: the service's environment in docker-compose.yaml as KEY=VALUE lines,
# after docker-compose's own interpolation and validation.
compose_env() {
    docker-compose -f "$SAGA_ROOT/docker-compose.yaml" config |
        python3 -c '
import sys, yaml
env = yaml.safe_load(sys.stdin)["services"][sys.argv[1]].get("environment") or {}
for key, value in env.items():
    print(f"{key}={value}")
' "$1"
}

step_compose_http_tests() {
    own_stack_for_http_files
    local bin_dir=${CARGO_TARGET_DIR:-$SAGA_ROOT/target}/debug

    local -A port
    { read -r 'port[order]' && read -r 'port[payment]' && read -r 'port[shipment]'; } < <(free_ports 3)
    local store=mongo db data_dir=""
    db="compose_http_$(date +%s)_$RANDOM"
    if [[ -z ${MONGODB_URI:-} ]]; then
        make_temp_dir saga-compose-data
        data_dir=$TEMP_DIR
        store=embedded
    fi

    local svc line key value other
    local -a env_vars
    local -A compose_port
    for svc in order payment shipment; do
        compose_port[$svc]=$(compose_env "$svc" | sed -n 's/^PORT=//p')
    done
    # Last hop first, as docker-compose's depends_on orders them.
    for svc in shipment payment order; do
        env_vars=(HOST=127.0.0.1 NO_COLOR=1 "RUST_LOG=${RUST_LOG:-info}")
        while IFS= read -r line; do
            key=${line%%=*} value=${line#*=}
            case $key in
            PORT) value=${port[$svc]} ;;
            CHAIN_SVC)
                for other in order payment shipment; do
                    value=${value//"//$other:${compose_port[$other]}"/"//127.0.0.1:${port[$other]}"}
                done
                ;;
            MONGO_URL | MONGO_DB)
                [[ -n $data_dir ]] && continue
                [[ $key == MONGO_URL ]] && value=$MONGODB_URI || value=$db
                ;;
            esac
            env_vars+=("$key=$value")
        done < <(compose_env "$svc")
        [[ -n $data_dir ]] && env_vars+=("DATA_DIR=$data_dir")
        [[ -x $bin_dir/$svc ]] || die "$bin_dir/$svc not built"
        start_process "$svc (compose env)" "$SAGA_LOG_DIR/compose-$svc.log" TERM \
            env -i "PATH=$PATH" "${env_vars[@]}" "$bin_dir/$svc"
        wait_for_http "http://127.0.0.1:${port[$svc]}/ready" 60 "$STARTED_PID" "$svc"
        log "$svc: ${env_vars[*]}"
    done

    local rc=0 out=$SAGA_LOG_DIR/httpyac-compose.log
    local -a color=()
    [[ -t 1 ]] || color=(--no-color)
    "$HTTPYAC_BIN" send "${HTTP_FILES[@]}" --all --timeout 15000 \
        --output short --output-failed exchange "${color[@]}" \
        --var "order=http://127.0.0.1:${port[order]}" "payment=http://127.0.0.1:${port[payment]}" \
        "shipment=http://127.0.0.1:${port[shipment]}" inject_err=1 "store=$store" \
        "hop_secret=$(compose_env payment | sed -n 's/^HOP_SECRET=//p')" 2>&1 |
        tee "$out" || rc=$?
    grep -Eo '[0-9]+ requests processed.*' "$out" | tail -n 1 >"$SAGA_LOG_DIR/httpyac-compose.totals" || true
    if ((rc != 0)); then
        tail_log "$SAGA_LOG_DIR/compose-payment.log" 40
        warn "httpyac on the compose environment exited with status $rc"
    fi
    return "$rc"
}

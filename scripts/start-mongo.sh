#!/usr/bin/env bash
# scripts/start-mongo.sh: a MongoDB-wire server for development: FerretDB (built into the cache
# on first use; see scripts/lib.sh) on SQLite or on PostgreSQL.
#
#   scripts/start-mongo.sh [--backend sqlite|postgresql] [--port N] [--data DIR]
#       runs in the foreground until Ctrl-C; prints the MONGODB_URI to use.
#   eval "$(scripts/start-mongo.sh --background [--backend …] [--port N] [--data DIR])"
#       starts it detached and prints `export MONGODB_URI=… FERRETDB_PID=… FERRETDB_METRICS_URL=…`
#       (on PostgreSQL also `POSTGRES_PID=… POSTGRES_URL=…`) for eval; stop it later with
#       `kill $FERRETDB_PID` (and `$POSTGRES_PID`).
#
# --backend sqlite (the default) keeps SQLite files in DIR, by default .data/ferretdb in the
# repository. --backend postgresql starts PostgreSQL (Debian's `postgresql`, installed when
# missing; no system service) on a free port as an unprivileged user, its cluster in
# DIR/postgres, by default .data/ferretdb-postgresql/postgres. Both are kept between runs.
# FerretDB's Prometheus metrics are served on a free port (FERRETDB_METRICS_URL).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port="" data="" backend=sqlite background=""
while (($# > 0)); do
    case $1 in
    --backend) backend=${2:?--backend needs sqlite or postgresql}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --data) data=${2:?--data needs a value}; shift 2 ;;
    --background) background=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case $backend in
sqlite) data=${data:-$SAGA_ROOT/.data/ferretdb} ;;
postgresql) data=${data:-$SAGA_ROOT/.data/ferretdb-postgresql} ;;
*) die "--backend must be sqlite or postgresql (got '$backend')" ;;
esac

ensure_ferretdb
[[ -n $port ]] || port=$(free_ports 1)
mkdir -p "$data" "$SAGA_LOG_DIR"

if [[ -n $background ]]; then
    # Logs of this server in their own directory, so two of them (or a test run) never share one.
    SAGA_LOG_DIR=$SAGA_LOG_DIR/mongo-$port
    START_NOHUP=1
    trap stop_started EXIT # only if starting fails: on success the servers are left running
    start_ferretdb --backend "$backend" "$port" "$data"
    trap - EXIT
    log "FerretDB running (pid $FERRETDB_PID, logs in ${SAGA_LOG_DIR#"$SAGA_ROOT"/})"
    printf 'export MONGODB_URI=%q FERRETDB_PID=%q FERRETDB_METRICS_URL=%q\n' \
        "$MONGODB_URI" "$FERRETDB_PID" "$FERRETDB_METRICS_URL"
    if [[ $backend == postgresql ]]; then
        printf 'export POSTGRES_PID=%q POSTGRES_URL=%q\n' "$POSTGRES_PID" "$POSTGRES_URL"
    fi
    exit 0
fi

metrics_addr=127.0.0.1:$(free_ports 1)
uri=mongodb://127.0.0.1:$port/
if [[ $backend == sqlite ]]; then
    ferretdb_args "$port" "$data" "" "$metrics_addr"
    log "FerretDB $FERRETDB_VERSION on SQLite: MONGODB_URI=$uri (data in $data," \
        "metrics at http://$metrics_addr/debug/metrics); Ctrl-C stops it"
    exec "$FERRETDB_BIN" "${FERRETDB_ARGS[@]}"
fi

# PostgreSQL runs beside FerretDB and is stopped with it, however this script ends. FerretDB
# runs as a job (its output on this terminal) so that `wait` gives way to a signal at once.
ferretdb_pid=""
trap '[[ -z $ferretdb_pid ]] || stop_pid "$ferretdb_pid" TERM 15; stop_started' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_postgres "" "$data/postgres"
ferretdb_args "$port" "$data" "$POSTGRES_URL" "$metrics_addr"
log "FerretDB $FERRETDB_VERSION on PostgreSQL: MONGODB_URI=$uri (metrics at" \
    "http://$metrics_addr/debug/metrics); Ctrl-C stops both"
"$FERRETDB_BIN" "${FERRETDB_ARGS[@]}" </dev/null &
ferretdb_pid=$!
wait "$ferretdb_pid"

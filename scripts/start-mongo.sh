#!/usr/bin/env bash
# scripts/start-mongo.sh: a MongoDB-wire server for development, FerretDB on SQLite
# (built into the cache on first use; see scripts/lib.sh).
#
#   scripts/start-mongo.sh [--port N] [--data DIR]
#       runs in the foreground until Ctrl-C; prints the MONGODB_URI to use.
#   eval "$(scripts/start-mongo.sh --background [--port N] [--data DIR])"
#       starts it detached and prints `export MONGODB_URI=… FERRETDB_PID=…` for eval;
#       stop it later with `kill $FERRETDB_PID`.
#
# The data directory defaults to .data/ferretdb in the repository (kept between runs).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port="" data=$SAGA_ROOT/.data/ferretdb background=""
while (($# > 0)); do
    case $1 in
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --data) data=${2:?--data needs a value}; shift 2 ;;
    --background) background=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

ensure_ferretdb
[[ -n $port ]] || port=$(free_ports 1)
mkdir -p "$data" "$SAGA_LOG_DIR"
ferretdb_args "$port" "$data"
args=("${FERRETDB_ARGS[@]}")

if [[ -z $background ]]; then
    log "FerretDB $FERRETDB_VERSION on MONGODB_URI=mongodb://127.0.0.1:$port/ (data in $data); Ctrl-C stops it"
    exec "$FERRETDB_BIN" "${args[@]}"
fi

logfile=$SAGA_LOG_DIR/ferretdb-$port.log
nohup "$FERRETDB_BIN" "${args[@]}" >"$logfile" 2>&1 </dev/null &
pid=$!
wait_for_port 127.0.0.1 "$port" 60 "$pid" ferretdb || {
    tail_log "$logfile"
    exit 1
}
log "FerretDB running (pid $pid, log ${logfile#"$SAGA_ROOT"/})"
printf 'export MONGODB_URI=%q FERRETDB_PID=%q\n' "mongodb://127.0.0.1:$port/" "$pid"

#!/usr/bin/env bash
# scripts/start-redis.sh: a Redis for development and for BREAKER_BACKEND=redis (installs
# redis-server with apt when it is missing). No persistence.
#
#   scripts/start-redis.sh [--port N]
#       runs in the foreground until Ctrl-C; prints the REDIS_URL to use.
#   eval "$(scripts/start-redis.sh --background [--port N])"
#       starts it detached and prints `export REDIS_URL=… REDIS_PID=…` for eval;
#       stop it later with `kill $REDIS_PID`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port="" background=""
while (($# > 0)); do
    case $1 in
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --background) background=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

command -v redis-server >/dev/null || apt_install redis-server
[[ -n $port ]] || port=$(free_ports 1)
redis_args "$port"
args=("${REDIS_ARGS[@]}")

if [[ -z $background ]]; then
    log "Redis on REDIS_URL=redis://127.0.0.1:$port/; Ctrl-C stops it"
    exec redis-server "${args[@]}"
fi

mkdir -p "$SAGA_LOG_DIR"
logfile=$SAGA_LOG_DIR/redis-$port.log
nohup redis-server "${args[@]}" --dir "${TMPDIR:-/tmp}" >"$logfile" 2>&1 </dev/null &
pid=$!
wait_for_port 127.0.0.1 "$port" 30 "$pid" redis || {
    tail_log "$logfile"
    exit 1
}
log "Redis running (pid $pid, log ${logfile#"$SAGA_ROOT"/})"
printf 'export REDIS_URL=%q REDIS_PID=%q\n' "redis://127.0.0.1:$port/" "$pid"

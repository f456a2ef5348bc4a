# shellcheck shell=bash
# scripts/lib.sh: what test.sh, install-tools.sh, start-mongo.sh, start-redis.sh and measure.sh
# share. Source it, don't run it.
#
# Tools that are not in the repository are installed on first use and cached under
# $SAGA_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/saga-breaker), so a second run starts
# in seconds:
#   ferretdb   built from the Go module proxy (the MongoDB-wire server the tests talk to)
#   httpyac    npm package installed into its own prefix (runs http-tests/*.http)
#   chaostoolkit  PyPI package in its own virtualenv (runs experiments/*.json)
#   redis-server, docker-compose, curl, postgresql   Debian packages, installed only when missing
#
# FerretDB runs on SQLite (files in a directory) or on PostgreSQL (a throw-away cluster this
# file starts on a free port as an unprivileged user: no system service is used or needed).
#
# Servers started through this file (start_ferretdb, start_postgres, start_redis,
# start_process) are recorded, and stop_started stops them, newest first. Callers put
# stop_started in an EXIT trap.
#
# Messages go to stderr, so a script's stdout can carry machine-readable lines
# (start-mongo.sh --background prints `export MONGODB_URI=...` for eval).

SAGA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SAGA_CACHE=${SAGA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/saga-breaker}
SAGA_LOG_DIR=${SAGA_LOG_DIR:-$SAGA_ROOT/target/test-logs}
FERRETDB_VERSION=${FERRETDB_VERSION:-v1.24.2}
HTTPYAC_VERSION=${HTTPYAC_VERSION:-6.16.7}

# Toolchains a fresh machine has but a minimal PATH may miss.
for _dir in /usr/local/go/bin "$HOME/go/bin" "$HOME/.cargo/bin"; do
    [[ -d $_dir && ":$PATH:" != *":$_dir:"* ]] && PATH=$PATH:$_dir
done
unset _dir
export PATH

# ---------------------------------------------------------------------------------------------
# Output

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { log "WARN: $*"; }
die() {
    log "ERROR: $*"
    exit 1
}
is_ci() { [[ ${CI:-} == true || ${CI:-} == 1 ]]; }

# tail_log FILE [LINES]: show the end of a server's log, framed, on stderr.
tail_log() {
    local file=$1 lines=${2:-40}
    [[ -s $file ]] || return 0
    printf -- '----- last %s lines of %s -----\n' "$lines" "${file#"$SAGA_ROOT"/}" >&2
    tail -n "$lines" "$file" >&2
    printf -- '----- end of %s -----\n' "${file#"$SAGA_ROOT"/}" >&2
}

# ---------------------------------------------------------------------------------------------
# Installing

_apt_updated=""

# apt_install PKG...: install Debian packages (as root, or through passwordless sudo).
apt_install() {
    command -v apt-get >/dev/null || {
        warn "apt-get not found: install $* with your package manager"
        return 1
    }
    local -a sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || {
            warn "not root and no sudo: install $* yourself"
            return 1
        }
        sudo=(sudo -n)
    fi
    if [[ -z $_apt_updated ]]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get update -qq || return 1
        _apt_updated=1
    fi
    log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
        apt-get install -y -qq --no-install-recommends "$@" >&2 || return 1
}

# ensure_apt_tools: the Debian packages the test run needs, installed only when missing.
ensure_apt_tools() {
    local -a missing=()
    command -v curl >/dev/null || missing+=(curl)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v npm >/dev/null || missing+=(nodejs npm)
    ((${#missing[@]} == 0)) && return 0
    apt_install "${missing[@]}"
}

# ensure_ferretdb: sets FERRETDB_BIN, building FerretDB into the cache the first time.
#
# `go install …/cmd/ferretdb@v1.24.2` does not work through the module proxy here (its @v/list
# lookup is refused), so the binary is built from a scratch module that requires FerretDB. The
# module zip lacks build/version/version.txt, which FerretDB's init() insists on when it is the
# main module, so the source is copied next to the scratch module, the file written, and the
# copy used through a `replace`.
ensure_ferretdb() {
    if [[ -n ${FERRETDB_BIN:-} && -x ${FERRETDB_BIN} ]]; then
        return 0
    fi
    local bin=$SAGA_CACHE/bin/ferretdb-$FERRETDB_VERSION
    if [[ -x $bin ]] && "$bin" --version >/dev/null 2>&1; then
        FERRETDB_BIN=$bin
        return 0
    fi
    command -v go >/dev/null || {
        warn "Go is needed to build FerretDB (https://go.dev/dl), or set MONGODB_URI"
        return 1
    }
    mkdir -p "$SAGA_CACHE/bin" "$SAGA_LOG_DIR"
    local work build_log=$SAGA_LOG_DIR/ferretdb-build.log start=$SECONDS
    work=$(mktemp -d "$SAGA_CACHE/ferretdb-build.XXXXXX")
    log "building FerretDB $FERRETDB_VERSION with $(go version | cut -d' ' -f3) (cold: about 4 min on 2 cores; log: ${build_log#"$SAGA_ROOT"/})"
    if ! (
        set -euo pipefail
        export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -modcacherw"
        cd "$work"
        go mod init fdbbuild
        printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/FerretDB/FerretDB/cmd/ferretdb"\n' >tools.go
        go get "github.com/FerretDB/FerretDB/cmd/ferretdb@$FERRETDB_VERSION"
        src=$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)
        cp -R "$src" ferretdb-src
        chmod -R u+w ferretdb-src
        printf '%s\n' "$FERRETDB_VERSION" >ferretdb-src/build/version/version.txt
        go mod edit -replace github.com/FerretDB/FerretDB=./ferretdb-src
        go build -o "$work/ferretdb" github.com/FerretDB/FerretDB/cmd/ferretdb
        "$work/ferretdb" --version
    ) >"$build_log" 2>&1; then
        tail_log "$build_log"
        rm -rf "$work"
        warn "FerretDB build failed"
        return 1
    fi
    mv -f "$work/ferretdb" "$bin" # atomic: a concurrent run sees the old file or the new one
    rm -rf "$work"
    log "FerretDB built in $((SECONDS - start)) s: $bin"
    FERRETDB_BIN=$bin
}

# ensure_httpyac: sets HTTPYAC_BIN, installing the pinned httpyac into the cache the first time.
ensure_httpyac() {
    local prefix=$SAGA_CACHE/npm/httpyac-$HTTPYAC_VERSION
    HTTPYAC_BIN=$prefix/node_modules/.bin/httpyac
    if [[ -x $HTTPYAC_BIN ]] && "$HTTPYAC_BIN" --version >/dev/null 2>&1; then
        return 0
    fi
    command -v npm >/dev/null || {
        warn "npm is needed to install httpyac"
        return 1
    }
    mkdir -p "$prefix"
    log "npm install httpyac@$HTTPYAC_VERSION into ${prefix/#"$HOME"/\~}"
    npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error \
        "httpyac@$HTTPYAC_VERSION" >&2 || return 1
    "$HTTPYAC_BIN" --version >/dev/null
}

# pip_tool PACKAGE VERSION PROGRAM: sets PIP_TOOL to PROGRAM in a cached virtualenv that holds
# PACKAGE==VERSION, installing it there the first time.
pip_tool() {
    local package=$1 version=$2 program=$3
    local venv=$SAGA_CACHE/venv/$package-$version
    PIP_TOOL=$venv/bin/$program
    if [[ -x $PIP_TOOL ]] && "$PIP_TOOL" --version >/dev/null 2>&1; then
        return 0
    fi
    if ! python3 -m venv "$venv" >&2; then
        apt_install python3-venv || return 1
        python3 -m venv "$venv" >&2 || return 1
    fi
    log "pip install $package==$version into ${venv/#"$HOME"/\~}"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "$package==$version" >&2 || return 1
    "$PIP_TOOL" --version >/dev/null
}

# ensure_schemathesis: sets SCHEMATHESIS_BIN, installing the pinned schemathesis into a cached
# virtualenv the first time.
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
ensure_schemathesis() {
    pip_tool schemathesis "$SCHEMATHESIS_VERSION" st || return 1
    # shellcheck disable=SC2034 # read by the scripts that source this file
    SCHEMATHESIS_BIN=$PIP_TOOL
}

# ensure_chaostoolkit: sets CHAOS_BIN, installing the pinned Chaos Toolkit (the `chaos` CLI from
# PyPI) into a cached virtualenv the first time.
CHAOSTOOLKIT_VERSION=${CHAOSTOOLKIT_VERSION:-1.19.0}
ensure_chaostoolkit() {
    pip_tool chaostoolkit "$CHAOSTOOLKIT_VERSION" chaos || return 1
    # shellcheck disable=SC2034 # read by the scripts that source this file
    CHAOS_BIN=$PIP_TOOL
}

# ensure_postgres: sets POSTGRES_BIN_DIR to the newest /usr/lib/postgresql/*/bin (Debian's
# `postgresql`, installed when missing). Only the programs are used: clusters are started by
# start_postgres, never through the package's system service.
ensure_postgres() {
    [[ -n ${POSTGRES_BIN_DIR:-} && -x $POSTGRES_BIN_DIR/postgres ]] && return 0
    local newest
    newest=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)
    if [[ -z $newest ]]; then
        apt_install postgresql || return 1
        newest=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)
    fi
    [[ -n $newest ]] || {
        warn "PostgreSQL's programs (initdb, postgres) not found under /usr/lib/postgresql/*/bin"
        return 1
    }
    POSTGRES_BIN_DIR=$(dirname "$newest")
}

# postgres_user: sets POSTGRES_AS, the prefix that runs PostgreSQL's programs, and POSTGRES_USER.
# initdb and postgres refuse to run as root, so as root they run as `postgres` (the user
# Debian's package creates), or as a system user `saga-pg` created here when that is missing.
# As anyone else they run as that user.
postgres_user() {
    POSTGRES_AS=()
    POSTGRES_USER=$(id -un)
    [[ $(id -u) -eq 0 ]] || return 0
    if id postgres >/dev/null 2>&1; then
        POSTGRES_USER=postgres
    else
        POSTGRES_USER=saga-pg
        id "$POSTGRES_USER" >/dev/null 2>&1 ||
            useradd --system --no-create-home --shell /usr/sbin/nologin "$POSTGRES_USER" || return 1
    fi
    command -v setpriv >/dev/null || {
        warn "setpriv (util-linux) is needed to run PostgreSQL as $POSTGRES_USER"
        return 1
    }
    # setpriv execs the program in place, so the pid start_process records is postgres's own.
    POSTGRES_AS=(setpriv "--reuid=$POSTGRES_USER" "--regid=$(id -g "$POSTGRES_USER")" --init-groups --)
}

# ---------------------------------------------------------------------------------------------
# Ports and readiness

# free_ports N: N distinct free TCP ports on 127.0.0.1, one per line. They are held open
# together while chosen, so the N are distinct; another process could still take one before
# we bind it, which the readiness waits below turn into a clear failure.
free_ports() {
    python3 - "${1:-1}" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

# alive PID: the process exists and is not a zombie.
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $state && $state != Z* ]]
}

# wait_for_port HOST PORT TIMEOUT_S PID NAME: until a TCP connect succeeds; fails early if PID dies.
wait_for_port() {
    local host=$1 port=$2 timeout=$3 pid=$4 name=$5 deadline=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        alive "$pid" || {
            warn "$name exited before listening on $host:$port"
            return 1
        }
        ((SECONDS < deadline)) || {
            warn "$name not listening on $host:$port after $timeout s"
            return 1
        }
        sleep 0.2
    done
}

# wait_for_http URL TIMEOUT_S PID NAME: until URL answers 2xx; fails early if PID dies.
wait_for_http() {
    local url=$1 timeout=$2 pid=$3 name=$4 deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        alive "$pid" || {
            warn "$name exited before $url answered"
            return 1
        }
        ((SECONDS < deadline)) || {
            warn "$url did not answer 2xx within $timeout s"
            curl -sS --max-time 2 -i "$url" >&2 || true
            return 1
        }
        sleep 0.3
    done
}

# ---------------------------------------------------------------------------------------------
# Processes this shell started

_started_pids=()
_started_names=()
_started_signals=()
_cleanup_dirs=()

# start_process NAME LOGFILE STOP_SIGNAL CMD...: run CMD in the background, output to LOGFILE,
# and remember it for stop_started. Sets STARTED_PID. With START_NOHUP=1 (start-mongo.sh
# --background) CMD ignores SIGHUP, to outlive the terminal of the shell that started it.
start_process() {
    local name=$1 logfile=$2 signal=$3
    shift 3
    mkdir -p "$(dirname "$logfile")"
    [[ -n ${START_NOHUP:-} ]] && set -- nohup "$@"
    "$@" >"$logfile" 2>&1 </dev/null &
    STARTED_PID=$!
    _started_pids+=("$STARTED_PID")
    _started_names+=("$name")
    _started_signals+=("$signal")
    log "started $name (pid $STARTED_PID, log ${logfile#"$SAGA_ROOT"/})"
}

# stop_pid PID SIGNAL GRACE_S: signal, wait up to GRACE_S, then SIGKILL. Returns the exit status
# when PID is this shell's child (0 when it was already gone).
stop_pid() {
    local pid=$1 signal=$2 grace=$3 deadline=$((SECONDS + $3)) rc=0
    if alive "$pid"; then
        kill -s "$signal" "$pid" 2>/dev/null || true
        while alive "$pid"; do
            if ((SECONDS >= deadline)); then
                warn "pid $pid still running $grace s after SIG$signal: SIGKILL"
                kill -s KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

# forget_pid PID: drop PID from the list stop_started works through (after stopping it by hand).
forget_pid() {
    local i
    for i in "${!_started_pids[@]}"; do
        [[ ${_started_pids[i]} == "$1" ]] && _started_pids[i]=""
    done
    return 0
}

# stop_started: stop every process start_process started, newest first, and remove temp dirs.
stop_started() {
    local i pid
    for ((i = ${#_started_pids[@]} - 1; i >= 0; i--)); do
        pid=${_started_pids[i]}
        [[ -n $pid ]] || continue
        if alive "$pid"; then
            log "stopping ${_started_names[i]} (pid $pid)"
        fi
        stop_pid "$pid" "${_started_signals[i]}" 15 || true
        _started_pids[i]=""
    done
    for i in "${!_cleanup_dirs[@]}"; do
        rm -rf "${_cleanup_dirs[i]}"
    done
    _cleanup_dirs=()
}

# make_temp_dir PREFIX: sets TEMP_DIR to a fresh directory that stop_started removes.
# (Not a $(…) function: the list of directories to remove must live in this shell.)
make_temp_dir() {
    TEMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    _cleanup_dirs+=("$TEMP_DIR")
}

# ---------------------------------------------------------------------------------------------
# Servers

# docker_works: a Docker engine answers (testcontainers can start MongoDB itself).
docker_works() {
    command -v docker >/dev/null && timeout 15 docker info >/dev/null 2>&1
}

# ferretdb_args PORT DATA [POSTGRES_URL] [DEBUG_ADDR]: FERRETDB_ARGS, the one way we run
# FerretDB (also scripts/start-mongo.sh). Without POSTGRES_URL it stores in SQLite files under
# DATA; with it, in that PostgreSQL database, and DATA only holds FerretDB's state file.
# DEBUG_ADDR (host:port) serves Prometheus metrics at /debug/metrics; the default `-` turns the
# debug server off, so two instances never fight over its default port 8088.
ferretdb_args() {
    local port=$1 data=$2 postgres_url=${3:-} debug_addr=${4:--}
    if [[ -n $postgres_url ]]; then
        FERRETDB_ARGS=(--handler=postgresql "--postgresql-url=$postgres_url")
    else
        FERRETDB_ARGS=(--handler=sqlite "--sqlite-url=file:$data/")
    fi
    FERRETDB_ARGS+=("--state-dir=$data" "--listen-addr=127.0.0.1:$port" "--debug-addr=$debug_addr"
        --telemetry=disable --log-level=warn)
}

# redis_args PORT: REDIS_ARGS, a throw-away Redis on loopback (also scripts/start-redis.sh).
redis_args() {
    REDIS_ARGS=(--bind 127.0.0.1 --port "$1" --save '' --appendonly no --daemonize no)
}

# start_postgres [PORT] [DIR]: a PostgreSQL cluster on 127.0.0.1 for FerretDB, run as an
# unprivileged user (postgres_user), with a database `ferretdb` owned by the superuser
# `ferretdb` (trust authentication: loopback only, throw-away data). The cluster lives in
# DIR/data, initialised there unless DIR already holds one; without DIR it is a temporary
# directory that stop_started removes. Settings are the defaults (fsync on), so what is measured
# on it is what a real server does; only its log says more: statements and autovacuum runs that
# take over a second (what to look for when a run stalls). Exports POSTGRES_URL; sets POSTGRES_PID.
start_postgres() {
    ensure_postgres || return 1
    postgres_user || return 1
    local port=${1:-} dir=${2:-}
    [[ -n $port ]] || port=$(free_ports 1)
    if [[ -z $dir ]]; then
        make_temp_dir saga-postgres
        dir=$TEMP_DIR
    fi
    mkdir -p "$dir" "$SAGA_LOG_DIR"
    chown "$POSTGRES_USER:" "$dir" 2>/dev/null || true
    "${POSTGRES_AS[@]}" test -w "$dir" -a -x "$dir" || {
        warn "$POSTGRES_USER cannot write $dir (or reach it through its parents): choose a directory it can"
        return 1
    }
    local pg=$POSTGRES_BIN_DIR logfile=$SAGA_LOG_DIR/postgres.log
    if [[ ! -s $dir/data/PG_VERSION ]]; then
        # --no-sync only skips initdb's own final flush of the new cluster; the server below
        # runs with fsync on.
        "${POSTGRES_AS[@]}" "$pg/initdb" -D "$dir/data" -U ferretdb --auth=trust -E UTF8 \
            --locale=C --no-sync >"$SAGA_LOG_DIR/postgres-initdb.log" 2>&1 || {
            tail_log "$SAGA_LOG_DIR/postgres-initdb.log"
            return 1
        }
    fi
    start_process postgres "$logfile" INT "${POSTGRES_AS[@]}" "$pg/postgres" -D "$dir/data" \
        -c listen_addresses=127.0.0.1 -p "$port" -k "$dir" \
        -c log_min_duration_statement=1000 -c log_autovacuum_min_duration=1000
    POSTGRES_PID=$STARTED_PID
    local deadline=$((SECONDS + 60))
    until "$pg/pg_isready" -q -h 127.0.0.1 -p "$port" -U ferretdb -d postgres; do
        if ! alive "$POSTGRES_PID" || ((SECONDS >= deadline)); then
            warn "PostgreSQL not accepting connections on 127.0.0.1:$port"
            tail_log "$logfile"
            return 1
        fi
        sleep 0.2
    done
    local -a psql=("$pg/psql" -X -q -h 127.0.0.1 -p "$port" -U ferretdb)
    if [[ -z $("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'") ]]; then
        "${psql[@]}" -d postgres -c 'CREATE DATABASE ferretdb' || return 1
    fi
    export POSTGRES_URL="postgres://ferretdb@127.0.0.1:$port/ferretdb"
    log "PostgreSQL $("$pg/postgres" --version | awk '{print $3}') ready: $POSTGRES_URL (cluster in $dir/data)"
}

# start_ferretdb [--backend sqlite|postgresql] [PORT] [DATA_DIR]: FerretDB on 127.0.0.1, on
# SQLite (the default) or on a PostgreSQL cluster started here (its cluster in DATA_DIR/postgres
# when DATA_DIR is given). Without DATA_DIR everything is in temporary directories that
# stop_started removes. Exports MONGODB_URI, FERRETDB_BIN (for tests that start a database of
# their own) and FERRETDB_METRICS_URL (Prometheus text: ferretdb_client_requests_total by
# command); sets FERRETDB_PID and FERRETDB_BACKEND.
start_ferretdb() {
    FERRETDB_BACKEND=sqlite
    if [[ ${1:-} == --backend ]]; then
        FERRETDB_BACKEND=${2:?--backend needs sqlite or postgresql}
        shift 2
    fi
    case $FERRETDB_BACKEND in
    sqlite | postgresql) ;;
    *) die "FerretDB backend must be sqlite or postgresql (got '$FERRETDB_BACKEND')" ;;
    esac
    ensure_ferretdb || return 1
    local port=${1:-} data=${2:-} debug_port postgres_url="" logfile=$SAGA_LOG_DIR/ferretdb.log
    [[ -n $port ]] || port=$(free_ports 1)
    debug_port=$(free_ports 1)
    local postgres_dir=""
    if [[ -z $data ]]; then
        make_temp_dir saga-ferretdb
        data=$TEMP_DIR
    else
        postgres_dir=$data/postgres
    fi
    mkdir -p "$data"
    if [[ $FERRETDB_BACKEND == postgresql ]]; then
        start_postgres "" "$postgres_dir" || return 1
        postgres_url=$POSTGRES_URL
        logfile=$SAGA_LOG_DIR/ferretdb-postgresql.log
    fi
    ferretdb_args "$port" "$data" "$postgres_url" "127.0.0.1:$debug_port"
    start_process "ferretdb ($FERRETDB_BACKEND)" "$logfile" TERM "$FERRETDB_BIN" "${FERRETDB_ARGS[@]}"
    FERRETDB_PID=$STARTED_PID
    wait_for_port 127.0.0.1 "$port" 60 "$FERRETDB_PID" ferretdb || {
        tail_log "$logfile"
        return 1
    }
    export MONGODB_URI="mongodb://127.0.0.1:$port/"
    export FERRETDB_METRICS_URL="http://127.0.0.1:$debug_port/debug/metrics"
    export FERRETDB_BIN
    log "FerretDB $FERRETDB_VERSION on $FERRETDB_BACKEND ready: MONGODB_URI=$MONGODB_URI" \
        "(data in $data, metrics at $FERRETDB_METRICS_URL)"
}

# start_redis [PORT]: redis-server on 127.0.0.1 without persistence. Exports REDIS_URL and
# REDIS_SERVER_BIN; sets REDIS_PID.
start_redis() {
    local port=${1:-}
    if ! command -v redis-server >/dev/null; then
        apt_install redis-server || return 1
    fi
    [[ -n $port ]] || port=$(free_ports 1)
    local dir logfile=$SAGA_LOG_DIR/redis.log
    make_temp_dir saga-redis
    dir=$TEMP_DIR
    redis_args "$port"
    start_process redis "$logfile" TERM redis-server "${REDIS_ARGS[@]}" --dir "$dir"
    REDIS_PID=$STARTED_PID
    wait_for_port 127.0.0.1 "$port" 30 "$REDIS_PID" redis || {
        tail_log "$logfile"
        return 1
    }
    export REDIS_URL="redis://127.0.0.1:$port/"
    REDIS_SERVER_BIN=$(command -v redis-server)
    export REDIS_SERVER_BIN
    log "Redis ready: REDIS_URL=$REDIS_URL"
}

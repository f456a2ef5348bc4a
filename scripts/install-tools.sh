#!/usr/bin/env bash
# scripts/install-tools.sh: install (or find in the cache) every tool scripts/test.sh uses,
# and print where each one is. test.sh does the same itself; this is for a first setup, or
# for warming the cache ahead of time.
#
#   scripts/install-tools.sh            Debian packages, FerretDB, httpyac
#   scripts/install-tools.sh ferretdb   only FerretDB (likewise: apt, httpyac)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

what=("$@")
((${#what[@]} > 0)) || what=(apt ferretdb httpyac)
for tool in "${what[@]}"; do
    case $tool in
    apt) ensure_apt_tools ;;
    ferretdb) ensure_ferretdb && printf 'ferretdb       %s\n' "$FERRETDB_BIN" ;;
    httpyac) ensure_httpyac && printf 'httpyac        %s\n' "$HTTPYAC_BIN" ;;
    *) die "unknown tool '$tool' (apt, ferretdb, httpyac)" ;;
    esac
done
if [[ " ${what[*]} " == *" apt "* ]]; then
    printf 'redis-server   %s\n' "$(command -v redis-server)"
    printf 'docker-compose %s\n' "$(command -v docker-compose)"
    printf 'curl           %s\n' "$(command -v curl)"
fi

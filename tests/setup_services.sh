#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: the load generators that the
# benchmark tools drive (wrk, h2load) and PostgreSQL, whose server the SQL endpoint tests
# start privately (tests/pg.py). Debian packages; root or sudo. Quick when all is there.
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null

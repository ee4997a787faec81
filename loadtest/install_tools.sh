#!/usr/bin/env bash
# The C load generators make bench takes its figures with: openloop (loadtest/openloop.c, built
# here with gcc into build/tools/openloop, again whenever the source is newer), and wrk (HTTP)
# and h2load (gRPC), installed when missing. Without them the suite still runs; their rows say
# "failed". `install_tools.sh --openloop-only` only builds openloop (OPENLOOP_OUT: where to).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/loadtest/openloop.c"
OUT="${OPENLOOP_OUT:-$ROOT/build/tools/openloop}"
if [ ! -x "$OUT" ] || [ "$SRC" -nt "$OUT" ]; then
    if command -v gcc >/dev/null; then
        mkdir -p "$(dirname "$OUT")"
        gcc -O2 -Wall -Wextra -o "$OUT.tmp" "$SRC" -lm && mv "$OUT.tmp" "$OUT"
    else
        echo "warning: gcc not found; openloop not built, the open-loop rows will say failed" >&2
    fi
fi
[ "${1:-}" = "--openloop-only" ] && exit 0
if command -v wrk >/dev/null && command -v h2load >/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq || true
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nghttp2-client || echo "warning: wrk/h2load not installed; their reference rows will be missing"

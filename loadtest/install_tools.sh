#!/usr/bin/env bash
# Installs the Debian load generators make bench cross-checks with (wrk, h2load) when missing.
set -euo pipefail
if command -v wrk >/dev/null && command -v h2load >/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq || true
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nghttp2-client || echo "warning: wrk/h2load not installed; the wrk cross-check is skipped"

#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: the load generators that the
# benchmark tools drive (wrk, h2load). Debian packages; root or sudo.
set -euo pipefail
if command -v wrk >/dev/null && command -v h2load >/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nghttp2-client >/dev/null

#!/usr/bin/env bash
# Installs the C load generators make bench takes its reference figures with (wrk for HTTP,
# h2load for gRPC) when missing. Without them the suite still runs; their rows say "failed".
set -euo pipefail
if command -v wrk >/dev/null && command -v h2load >/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq || true
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nghttp2-client || echo "warning: wrk/h2load not installed; their reference rows will be missing"

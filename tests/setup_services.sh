#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: the load generators that the
# benchmark tools drive (wrk, h2load), PostgreSQL, whose server the SQL endpoint tests
# start privately (tests/pg.py), and the two libraries Triton's perf_analyzer (shipped in
# the tritonclient wheel) links, which tests/node/test_oip_perf_analyzer.py runs: libb64
# from Debian (libcudart.so.12, which it needs even without a GPU, comes from PyPI with the
# dev extra: Debian has no CUDA 12 runtime). Debian packages; root or sudo. Quick when all is there.
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
compgen -G "/usr/lib/*/libb64.so.0d" >/dev/null || missing+=(libb64-0d)
command -v curl >/dev/null || missing+=(curl)   # tests/readme runs the README's curl calls
command -v chromium >/dev/null || missing+=(chromium)   # tests/node/test_docs_page.py opens the docs page
command -v chromedriver >/dev/null || missing+=(chromium-driver)   # ... driven by selenium
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null

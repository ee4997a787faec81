#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: the load generators that the
# benchmark tools drive (wrk, h2load), nginx, which serves the HTTP package repository of
# tests/repository (tests/nginx.py, its WebDAV module taking PUT), PostgreSQL, whose server the SQL endpoint tests
# start privately (tests/pg.py), and the two libraries Triton's perf_analyzer (shipped in
# the tritonclient wheel) links, which tests/node/test_oip_perf_analyzer.py runs: libb64
# from Debian (libcudart.so.12, which it needs even without a GPU, comes from PyPI with the
# dev extra: Debian has no CUDA 12 runtime). Debian packages; root or sudo. Quick when all is there.
#
# The container image test (tests/image/) needs podman, run with runc (the runtime these
# machines need), debootstrap for its base image, and a containers.conf whose default ulimits
# the machine allows (podman's defaults exceed the hard limits here: "error setting rlimit").
# The base image and the image take minutes to build the first time on a machine (about 3 + 5
# here): their build starts here, in the background, while the rest of the suite runs; the test
# waits for it.
set -euo pipefail
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
compgen -G "/usr/lib/*/libb64.so.0d" >/dev/null || missing+=(libb64-0d)
[ -x /usr/sbin/nginx ] || missing+=(nginx)   # tests/nginx.py: an HTTP package repository (WebDAV PUT)
command -v openssl >/dev/null || missing+=(openssl)   # tests/nginx.py: its Basic auth password file
command -v curl >/dev/null || missing+=(curl)   # tests/readme runs the README's curl calls
command -v chromium >/dev/null || missing+=(chromium)   # tests/node/test_docs_page.py opens the docs page
command -v chromedriver >/dev/null || missing+=(chromium-driver)   # ... driven by selenium
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# podman: runc, and ulimits within the machine's hard limits (nproc at most pid_max).
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ] || grep -q "apinode's tests/setup_services.sh" "$conf"; then
    nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
    nproc=$(ulimit -Hu); pid_max=$(cat /proc/sys/kernel/pid_max)
    { [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; } && nproc=$pid_max
    $SUDO mkdir -p /etc/containers
    printf '%s\n' "# Written by apinode's tests/setup_services.sh" '[containers]' \
        "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]" \
        '[engine]' 'runtime = "runc"' | $SUDO tee "$conf.tmp" >/dev/null
    $SUDO mv "$conf.tmp" "$conf"
fi

# The image test's base image and image, in the background (quick when up to date).
mkdir -p build
$SUDO nohup bash tests/image/build.sh >build/image-build.log 2>&1 </dev/null &

#!/usr/bin/env bash
# Builds the container base image that the image test passes to the Dockerfile as BASE_IMAGE:
# no container registry is reachable here, so instead of python:3.11-slim it is made from
# Debian 12 with debootstrap (its python3 is 3.11), with python3-venv as the Dockerfile needs,
# and imported into podman. The CA certificates this machine adds (its HTTPS egress goes through
# a proxy with its own CA) go into the base too, so that pip in the build reaches PyPI.
#
# Built once per machine: the image carries a label with the hash of this script and of those
# certificates, and is rebuilt only when that changes. A lock makes concurrent callers (the
# background start in tests/setup_services.sh and the test itself) wait for one build.
# Usage: tests/image/base.sh [IMAGE]   (root; needs podman and debootstrap)
set -euo pipefail
IMAGE=${1:-localhost/apinode-base:py311}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${APINODE_BASE_CACHE:-/var/cache/apinode-base}
shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
key=$(cat "$0" "${cas[@]}" | sha256sum | cut -c1-16)

mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9
have=$(podman image inspect --format '{{index .Labels "apinode.base.key"}}' "$IMAGE" 2>/dev/null || true)
if [ "$have" = "$key" ]; then
    echo "base image $IMAGE is up to date ($key)"
    exit 0
fi

start=$SECONDS
rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
if [ ${#cas[@]} -gt 0 ]; then
    cp "${cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
fi
# What python:3.11-slim also leaves out: apt's lists and caches, documentation.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
tar -C "$rootfs" -c . | podman import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' --change "LABEL apinode.base.key=$key" \
    - "$IMAGE" >/dev/null 2>&1
echo "built base image $IMAGE ($key) in $((SECONDS - start)) s"

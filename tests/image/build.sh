#!/usr/bin/env bash
# Builds the image the test runs: the base (tests/image/base.sh, once per machine), then
# `make image` from this tree with that base. tests/setup_services.sh starts it in the
# background early in `make test`; the test runs it again, which waits for that run (a lock)
# and then finds every layer cached. The images this replaces are removed, so repeated runs do
# not fill the disk.
# Usage: tests/image/build.sh [IMAGE]   (root; run from anywhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
# One tag per checkout (its path's hash), so that runs from two checkouts never swap images.
IMAGE=${1:-localhost/apinode:test-$(pwd -P | sha256sum | cut -c1-12)}
BASE=localhost/apinode-base:py311
bash tests/image/base.sh "$BASE"
CACHE=${APINODE_BASE_CACHE:-/var/cache/apinode-base}
exec 9>"$CACHE/build.lock"
flock 9
# The build stage is tagged too (IMAGE-build): untagged, its layers would be dangling, and the
# next build would download every dependency again instead of reusing them.
tags=("$IMAGE-build" "$IMAGE")
olds=()
for tag in "${tags[@]}"; do olds+=("$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"); done
start=$SECONDS
{ podman build --target build --build-arg BASE_IMAGE="$BASE" -t "$IMAGE-build" . \
    && make --no-print-directory image CONTAINER=podman BASE_IMAGE="$BASE" IMAGE="$IMAGE"; } >"$CACHE/build.log" 2>&1 \
    || { tail -40 "$CACHE/build.log" >&2; exit 1; }
# What the new build replaced goes (with its layers no other image uses).
for i in "${!tags[@]}"; do
    new=$(podman image inspect --format '{{.Id}}' "${tags[$i]}")
    if [ -n "${olds[$i]}" ] && [ "${olds[$i]}" != "$new" ]; then
        podman rmi "${olds[$i]}" >/dev/null 2>&1 || true
    fi
done
echo "built $IMAGE in $((SECONDS - start)) s"

#!/usr/bin/env bash
# Builds the image the test runs: the base (tests/image/base.sh, once per machine), then
# `make image` from this tree with that base. tests/setup_services.sh starts it in the
# background early in `make test`; the test runs it again, which waits for that run (a lock)
# and then finds every layer cached. The image this replaces is removed, with the dangling
# layers of earlier builds from the same base, so repeated runs do not fill the disk.
# Usage: tests/image/build.sh [IMAGE]   (root; run from anywhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${1:-localhost/apinode:test}
BASE=localhost/apinode-base:py311
bash tests/image/base.sh "$BASE"
CACHE=${APINODE_BASE_CACHE:-/var/cache/apinode-base}
exec 9>"$CACHE/build.lock"
flock 9
old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
start=$SECONDS
make --no-print-directory image CONTAINER=podman BASE_IMAGE="$BASE" IMAGE="$IMAGE" >"$CACHE/build.log" 2>&1 \
    || { tail -40 "$CACHE/build.log" >&2; exit 1; }
new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
fi
podman image prune -f --filter "label=apinode.base.key" >/dev/null 2>&1 || true
echo "built $IMAGE in $((SECONDS - start)) s"

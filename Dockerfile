# The apinode image: `make image` builds it with podman or docker (see README, "Running on
# Kubernetes"). Multi-stage: the first stage builds apinode's wheel and its dependencies' wheels
# and installs them into a virtualenv; the final stage copies that virtualenv alone onto a clean
# base, so no compiler, pip cache or build tree ends up in the image. Only the runtime
# dependencies go in: no dev/test extras, no `plot` extra (matplotlib), no `boosters`.
#
# BASE_IMAGE must be a Python 3.11 image with `python3 -m venv` (the official slim image, or
# an equivalent: the tests build one from Debian 12 with debootstrap, tests/image/base.sh).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The dependencies' wheels first, from pyproject.toml alone: this layer stays cached while
# only apinode's sources change.
COPY pyproject.toml ./
RUN python3 -m venv /opt/build \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
    >requirements.txt \
 && /opt/build/bin/pip wheel --wheel-dir /wheels -r requirements.txt
COPY README.md ./
COPY apz apz
COPY node node
COPY compiler compiler
COPY deployer deployer
COPY loadtest loadtest
# apinode's own wheel, then a virtualenv from the wheels alone (--no-index: what was resolved
# above is what gets installed). The third-party packages' own test suites (~120 MB) and pip go.
RUN /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && python3 -m venv /opt/apinode \
 && /opt/apinode/bin/pip install --no-index --find-links /wheels apinode \
 && /opt/apinode/bin/pip uninstall -y pip \
 && find /opt/apinode/lib/python3.11/site-packages -mindepth 2 -type d -name tests -prune -exec rm -rf {} + \
 && /opt/apinode/bin/apinode --help >/dev/null

FROM ${BASE_IMAGE}
# A fixed numeric uid, so Kubernetes can check runAsNonRoot without a runAsUser.
RUN useradd --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin apinode \
 && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/apinode /opt/apinode
ENV PATH=/opt/apinode/bin:$PATH \
    APINODE_DATA_DIR=/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_ENABLE_FORK_SUPPORT=false
WORKDIR /data
USER 10001:10001
# 12000 JSON HTTP (the Dataiku API node's protocol, /metrics, /isAlive/, /ready), 12001 gRPC.
EXPOSE 12000 12001
# No HEALTHCHECK: the OCI image format that podman builds by default drops it, and Kubernetes
# uses its own probes (kubernetes/base/deployment.yaml) on /isAlive/ and /ready.
# Packages and options are appended: `podman run IMAGE /pkgs/fraud.apz`, or `--repository ...`.
ENTRYPOINT ["apinode", "serve", "--host", "0.0.0.0"]

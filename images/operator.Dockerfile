# syntax=docker/dockerfile:1
# The operator image, xmr-escrow/operator:0.1.0. One entrypoint, two programs:
#   escrow-operator run ...   the operator (the chart's Deployment)
#   escrow-operator walletfs  the file sidecar of every WalletPool pod (the operator's StatefulSet)
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t xmr-escrow/operator:0.1.0 .
#   docker build -f images/operator.Dockerfile --target debian -t ... .   (with a shell, for debugging)
#
# The virtualenv is built with Debian bookworm's own Python 3.11 (/usr/bin/python3.11), the same
# interpreter the distroless final stage ships, so the venv's interpreter symlink and the console
# script's shebang resolve there unchanged. The final image has no shell and no package manager,
# runs as UID/GID 10001 and writes nothing to its root filesystem (bytecode is compiled at build
# time; HOME and temp files go to /tmp, an emptyDir in the chart), so it runs with
# readOnlyRootFilesystem under the restricted Pod Security Standard.
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG DISTROLESS_IMAGE=gcr.io/distroless/python3-debian12:nonroot

FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN /usr/bin/python3.11 -m venv /opt/escrow-operator
# Dependencies first (a layer that survives source edits), then the package itself.
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/escrow-operator/bin/pip install /src \
 && /opt/escrow-operator/bin/pip uninstall -y pip \
 && /opt/escrow-operator/bin/python -m compileall -q -j 0 /opt/escrow-operator/lib \
 && /opt/escrow-operator/bin/escrow-operator crds > /dev/null \
 && /opt/escrow-operator/bin/escrow-operator walletfs --help > /dev/null

# A Debian runtime with a shell (docker build --target debian): same interpreter path, same venv.
FROM ${DEBIAN_IMAGE} AS debian
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/escrow-operator /opt/escrow-operator
ENV PATH=/opt/escrow-operator/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["/opt/escrow-operator/bin/escrow-operator"]
CMD ["run"]

# The default target: distroless (no shell, no package manager).
FROM ${DISTROLESS_IMAGE} AS distroless
COPY --from=build /opt/escrow-operator /opt/escrow-operator
ENV PATH=/opt/escrow-operator/bin:/usr/bin:/bin \
    HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 8081 8090
ENTRYPOINT ["/opt/escrow-operator/bin/escrow-operator"]
CMD ["run"]
LABEL org.opencontainers.image.title="xmr-escrow-operator" \
      org.opencontainers.image.description="Monero multisig escrow operator and walletfs sidecar" \
      org.opencontainers.image.licenses="Apache-2.0"

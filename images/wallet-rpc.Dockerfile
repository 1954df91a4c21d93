# syntax=docker/dockerfile:1
# xmr-escrow/wallet-rpc:<monero version>: Debian's monero-wallet-rpc, the Debian package version pinned.
# Two images are built (hack/images.sh), both supported:
#   0.18.4.0  Debian trixie, package monero 0.18.4.0+~0+20200826-1 (the defaults below): the CRD's
#             default image
#   0.18.0.0  Debian bookworm, package monero 0.18.0.0+~0+20200826-1+deb12u1: the default before it;
#             a pool on it may move to 0.18.4.0, never back (docs/install.md)
#   docker build -f images/wallet-rpc.Dockerfile -t xmr-escrow/wallet-rpc:0.18.4.0 .
#   docker build -f images/wallet-rpc.Dockerfile -t xmr-escrow/wallet-rpc:0.18.0.0 \
#     --build-arg DEBIAN_IMAGE=debian:bookworm-slim --build-arg MONERO_VERSION=0.18.0.0 \
#     --build-arg MONERO_DEB_VERSION=0.18.0.0+~0+20200826-1+deb12u1 .
# The build fails when the suite no longer has that exact package version (apt: version not found)
# or when the binary reports another version than MONERO_VERSION.
#
# Runs as UID/GID 10001. The only writable paths are /wallets (the pool's shared ReadWriteMany
# claim: --wallet-dir) and /home/wallet (an emptyDir per pod: HOME, --shared-ringdb-dir,
# --log-file), both volumes, so the container runs with readOnlyRootFilesystem under the
# restricted Pod Security Standard. The operator passes every flag (pool_resources.py).
ARG DEBIAN_IMAGE=debian:trixie-slim
FROM ${DEBIAN_IMAGE}
ARG DEBIAN_IMAGE
# The upstream version the binary must report (monero-wallet-rpc --version: "(v0.18.4.0-...").
ARG MONERO_VERSION=0.18.4.0
# The exact Debian version of the monero package (apt-get install monero=VERSION).
ARG MONERO_DEB_VERSION=0.18.4.0+~0+20200826-1
# Only wallet-rpc is kept: the daemon and the other tools of the package are dropped (~76 MB).
RUN : "${MONERO_VERSION:?}" "${MONERO_DEB_VERSION:?}" \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "monero=${MONERO_DEB_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && monero-wallet-rpc --version | grep -qF "(v${MONERO_VERSION}-" \
 && find /usr/bin -name 'monero*' ! -name monero-wallet-rpc -delete \
 && install -d -m 0770 -o 10001 -g 10001 /wallets /home/wallet
ENV HOME=/home/wallet
WORKDIR /home/wallet
VOLUME ["/wallets", "/home/wallet"]
USER 10001:10001
EXPOSE 18083
ENTRYPOINT ["monero-wallet-rpc"]
CMD ["--help"]
LABEL org.opencontainers.image.title="xmr-escrow wallet-rpc" \
      org.opencontainers.image.description="Debian's monero-wallet-rpc ${MONERO_VERSION} for xmr-escrow-operator WalletPools" \
      org.opencontainers.image.base.name="${DEBIAN_IMAGE}" \
      dev.xmrescrow.monero.version="${MONERO_VERSION}" \
      dev.xmrescrow.monero.deb-version="${MONERO_DEB_VERSION}"

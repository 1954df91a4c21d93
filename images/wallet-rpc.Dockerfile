# syntax=docker/dockerfile:1
# xmr-escrow/wallet-rpc:0.18.0.0: Debian bookworm's monero-wallet-rpc (package monero
# 0.18.0.0+~0+20200826-1+deb12u1), the binary the operator's wallet-rpc facts were measured with.
#   docker build -f images/wallet-rpc.Dockerfile -t xmr-escrow/wallet-rpc:0.18.0.0 .
#
# Runs as UID/GID 10001. The only writable paths are /wallets (the pool's shared ReadWriteMany
# claim: --wallet-dir) and /home/wallet (an emptyDir per pod: HOME, --shared-ringdb-dir,
# --log-file), both volumes, so the container runs with readOnlyRootFilesystem under the
# restricted Pod Security Standard. The operator passes every flag (pool_resources.py).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
# Empty: bookworm's current monero package; or an exact Debian version to pin it.
ARG MONERO_DEB_VERSION=""
# Only wallet-rpc is kept: the daemon and the other tools of the package are dropped (~76 MB).
RUN apt-get update \
 && apt-get install -y --no-install-recommends "monero${MONERO_DEB_VERSION:+=${MONERO_DEB_VERSION}}" \
 && rm -rf /var/lib/apt/lists/* \
 && monero-wallet-rpc --version | grep -q 'v0\.18\.0\.0' \
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
      org.opencontainers.image.description="Debian bookworm monero-wallet-rpc for xmr-escrow-operator WalletPools"

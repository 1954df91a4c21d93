#!/usr/bin/env bash
# Installs the Debian packages the project needs (monero-wallet-rpc) and checks Go. Safe to run twice.
set -euo pipefail
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: run as root or install sudo to install Debian packages" >&2; exit 1; }
  SUDO=sudo
fi
missing=()
command -v monero-wallet-rpc >/dev/null || missing+=(monero)
command -v openssl >/dev/null || missing+=(openssl)
if (( ${#missing[@]} )); then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "error: Go is needed to build the control plane: apt-get install golang-go (>= 1.24)" >&2; exit 1; }
